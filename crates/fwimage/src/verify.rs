//! Streaming verification of segment data: CRC chain per 4 KiB block and
//! SHA-256 per segment, in constant memory.

use std::io::{self, Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use crate::layout::Compression;
use crate::read::read_full;
use crate::{CrcChain, Error, ImageHead, KeyId, Result, TrustedKeys, BLOCK_SIZE};

const IO_CHUNK: usize = 1 << 20;

/// Reads one segment's raw (device-bound) bytes, checking each 4 KiB block
/// against the signed CRC chain before handing it out, and the segment's
/// SHA-256 before handing out its last chunk. So a caller that writes each
/// chunk as it arrives never writes a block that failed its CRC, and learns
/// of a SHA-256 mismatch before the segment is complete on the device.
///
/// Compressed segments are hashed in a first pass before any byte reaches
/// the decompressor, then hashed again while decompressing so a file that
/// changed between the passes is still caught.
pub struct SegmentReader<'h, R: Read> {
    head: &'h ImageHead,
    idx: usize,
    inner: Source<R>,
    chain: CrcChain,
    block: u64,
    raw_pos: u64,
    done: bool,
}

enum Source<R: Read> {
    Plain(HashingTake<R>),
    Gzip(flate2::read::GzDecoder<HashingTake<R>>),
    Zstd(Box<ruzstd::decoding::StreamingDecoder<HashingTake<R>, ruzstd::decoding::FrameDecoder>>),
}

/// `Take` that also hashes everything it passes through.
struct HashingTake<R> {
    inner: R,
    left: u64,
    sha: Sha256,
}

impl<R: Read> Read for HashingTake<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..max])?;
        self.sha.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

impl<R: Read> HashingTake<R> {
    /// Hashes whatever the decoder left unread, so the digest always
    /// covers exactly `stored_len` bytes.
    fn drain(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        while self.read(&mut buf)? > 0 {}
        Ok(())
    }
}

impl<'h, R: Read + Seek> SegmentReader<'h, R> {
    /// Positions `src` at segment `idx` and prepares to stream it.
    pub fn new(head: &'h ImageHead, idx: usize, mut src: R) -> Result<Self> {
        let seg = head.segments.get(idx).ok_or_else(|| Error::InvalidInput {
            what: "segment index",
            value: idx.to_string(),
            reason: "no such segment".into(),
        })?;
        if seg.compression != Compression::None {
            src.seek(SeekFrom::Start(seg.data_offset))?;
            let mut take = HashingTake {
                inner: &mut src,
                left: seg.stored_len,
                sha: Sha256::new(),
            };
            take.drain()?;
            if take.left != 0 {
                return Err(Error::Truncated {
                    what: "segment data",
                    needed: seg.stored_len,
                    available: seg.stored_len - take.left,
                });
            }
            if <[u8; 32]>::from(take.sha.finalize()) != seg.sha256 {
                return Err(Error::HashMismatch {
                    segment: seg.name.clone(),
                });
            }
        }
        src.seek(SeekFrom::Start(seg.data_offset))?;
        let take = HashingTake {
            inner: src,
            left: seg.stored_len,
            sha: Sha256::new(),
        };
        let inner = match seg.compression {
            Compression::None => Source::Plain(take),
            Compression::Gzip => Source::Gzip(flate2::read::GzDecoder::new(take)),
            Compression::Zstd => Source::Zstd(Box::new(
                ruzstd::decoding::StreamingDecoder::new(take).map_err(|e| Error::Decompress {
                    segment: seg.name.clone(),
                    reason: e.to_string(),
                })?,
            )),
        };
        Ok(SegmentReader {
            head,
            idx,
            inner,
            chain: CrcChain::resume(head.crc_seed(idx)),
            block: 0,
            raw_pos: 0,
            done: false,
        })
    }

    /// Raw offset of the next byte `next_chunk` will return.
    pub fn position(&self) -> u64 {
        self.raw_pos
    }

    /// Fills `buf` (whose length must be a multiple of 4096) with the next
    /// verified raw bytes. Returns the number of bytes, or 0 once the
    /// segment is complete and its SHA-256 has matched.
    pub fn next_chunk(&mut self, buf: &mut [u8]) -> Result<usize> {
        if !buf.len().is_multiple_of(BLOCK_SIZE) || buf.is_empty() {
            return Err(Error::InvalidInput {
                what: "buffer length",
                value: buf.len().to_string(),
                reason: "must be a non-zero multiple of 4096".into(),
            });
        }
        if self.done {
            return Ok(0);
        }
        let seg = &self.head.segments[self.idx];
        let left = seg.raw_len - self.raw_pos;
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let got = self.read_raw(&mut buf[..want])?;
        if got < want {
            return Err(Error::LengthMismatch {
                segment: seg.name.clone(),
                expected: seg.raw_len,
                actual: self.raw_pos + got as u64,
            });
        }
        let crcs = self.head.segment_crcs(self.idx);
        for block in buf[..got].chunks(BLOCK_SIZE) {
            let expected = crcs.get(self.block as usize);
            if Some(self.chain.push(block)) != expected {
                return Err(Error::CrcMismatch {
                    segment: seg.name.clone(),
                    block: self.block,
                });
            }
            self.block += 1;
        }
        self.raw_pos += got as u64;
        if self.raw_pos == seg.raw_len {
            self.finish()?;
        }
        Ok(got)
    }

    fn read_raw(&mut self, buf: &mut [u8]) -> Result<usize> {
        let name = &self.head.segments[self.idx].name;
        let r: &mut dyn Read = match &mut self.inner {
            Source::Plain(t) => t,
            Source::Gzip(d) => d,
            Source::Zstd(d) => d.as_mut(),
        };
        read_full(r, buf).map_err(|e| self.decode_error(name, e))
    }

    fn decode_error(&self, name: &str, e: io::Error) -> Error {
        match &self.inner {
            Source::Plain(_) => Error::Io(e),
            _ => Error::Decompress {
                segment: name.to_string(),
                reason: e.to_string(),
            },
        }
    }

    /// Runs once the last raw byte was read: the stream must end here and
    /// the stored bytes must hash to the signed value.
    fn finish(&mut self) -> Result<()> {
        let seg = &self.head.segments[self.idx];
        let mut probe = [0u8; 1];
        let extra = match &mut self.inner {
            Source::Plain(_) => 0,
            Source::Gzip(d) => read_full(d, &mut probe).map_err(|e| Error::Decompress {
                segment: seg.name.clone(),
                reason: e.to_string(),
            })?,
            Source::Zstd(d) => {
                read_full(d.as_mut(), &mut probe).map_err(|e| Error::Decompress {
                    segment: seg.name.clone(),
                    reason: e.to_string(),
                })?
            }
        };
        if extra != 0 {
            return Err(Error::LengthMismatch {
                segment: seg.name.clone(),
                expected: seg.raw_len,
                actual: seg.raw_len + 1,
            });
        }
        let take = match &mut self.inner {
            Source::Plain(t) => t,
            Source::Gzip(d) => d.get_mut(),
            Source::Zstd(d) => d.get_mut(),
        };
        take.drain()?;
        if take.left != 0 {
            return Err(Error::Truncated {
                what: "segment data",
                needed: seg.stored_len,
                available: seg.stored_len - take.left,
            });
        }
        let digest: [u8; 32] = std::mem::take(&mut take.sha).finalize().into();
        if digest != seg.sha256 {
            return Err(Error::HashMismatch {
                segment: seg.name.clone(),
            });
        }
        self.done = true;
        Ok(())
    }
}

/// What a full verification established.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub key_id: KeyId,
    pub segments: usize,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
}

impl ImageHead {
    /// The full check a device does before committing: signature first,
    /// then every segment's CRC chain and SHA-256, and that every byte
    /// between segments is zero padding. `progress` gets stored bytes read.
    pub fn verify<R: Read + Seek>(
        &self,
        trusted: &TrustedKeys,
        mut src: R,
        progress: &mut dyn FnMut(u64),
    ) -> Result<VerifyReport> {
        let key_id = self.verify_signature(trusted)?;
        self.check_padding(&mut src)?;
        let mut page = crate::crc::PageBuf::new(IO_CHUNK);
        let buf = page.as_mut();
        let mut raw_bytes = 0;
        for idx in 0..self.segments.len() {
            let mut rd = SegmentReader::new(self, idx, &mut src)?;
            loop {
                let n = rd.next_chunk(buf)?;
                if n == 0 {
                    break;
                }
                raw_bytes += n as u64;
                progress(n as u64);
            }
        }
        Ok(VerifyReport {
            key_id,
            segments: self.segments.len(),
            raw_bytes,
            stored_bytes: self.segments.iter().map(|s| s.stored_len).sum(),
        })
    }

    /// Bytes between the head and the first segment, between segments, and
    /// after the last one are alignment padding and must be zero, so that
    /// no byte of the file escapes verification.
    fn check_padding<R: Read + Seek>(&self, src: &mut R) -> Result<()> {
        let mut pos = self.header.data_offset;
        let mut buf = vec![0u8; BLOCK_SIZE];
        let mut gaps: Vec<(u64, u64)> = Vec::with_capacity(self.segments.len() + 1);
        for s in &self.segments {
            gaps.push((pos, s.data_offset));
            pos = s.data_offset + s.stored_len;
        }
        gaps.push((pos, self.header.image_len));
        for (start, end) in gaps {
            if end <= start {
                continue;
            }
            src.seek(SeekFrom::Start(start))?;
            let mut left = end - start;
            while left > 0 {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                src.read_exact(&mut buf[..n])?;
                if buf[..n].iter().any(|&b| b != 0) {
                    return Err(Error::NonZeroPadding("padding between segments"));
                }
                left -= n as u64;
            }
        }
        Ok(())
    }
}
