//! One pass over the chunks of an authenticated image: each stored chunk
//! is read once into our own buffer, checked against its signed hash, and
//! only then decoded and handed out. This is what a device writes from.

use sha2::{Digest, Sha256};

use crate::decode::ChunkDecoder;
use crate::index::{check_entry, Index, Verified};
use crate::layout::Compression;
use crate::{CrcChain, Error, ImageHead, ImageSource, Result, BLOCK_SIZE};

/// Where one chunk handed out by [`ChunkReader::next_chunk`] belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkInfo {
    pub segment: usize,
    /// Chunk number inside the segment.
    pub chunk: u64,
    /// Offset of its first raw byte inside the segment.
    pub raw_offset: u64,
    pub raw_len: usize,
    /// The signed SHA-256 of its raw bytes (for read-back checks).
    pub raw_sha256: [u8; 32],
}

/// Streams authenticated raw chunks in file order.
pub struct ChunkReader<'h, S> {
    head: &'h ImageHead,
    src: S,
    index: Index<'h>,
    seg: usize,
    chunk: u64,
    /// Where the next chunk's stored bytes must start.
    stored_pos: u64,
    /// End of the bytes already checked in file order, when reading
    /// sequentially from a segment start (for the zero-padding rule).
    file_pos: Option<u64>,
    chain: CrcChain,
    decoder: BatchDecoder,
    /// Stored and padding bytes read from the source.
    pub data_bytes_read: u64,
}

impl<'h, S: ImageSource> ChunkReader<'h, S> {
    /// A reader from the first chunk of the image.
    pub fn new(v: &Verified<'h>, src: S) -> Result<Self> {
        Self::start_at(v, src, 0, 0)
    }

    /// A reader starting at raw offset `raw_offset` of segment `seg`, which
    /// must be a chunk boundary (or the segment's end).
    pub fn start_at(v: &Verified<'h>, src: S, seg: usize, raw_offset: u64) -> Result<Self> {
        let head = v.head;
        let mut r = ChunkReader {
            head,
            src,
            index: Index::new(v),
            seg: 0,
            chunk: 0,
            stored_pos: 0,
            file_pos: None,
            chain: CrcChain::default(),
            decoder: BatchDecoder::default(),
            data_bytes_read: 0,
        };
        r.seek(seg, raw_offset)?;
        Ok(r)
    }

    /// Continues at raw offset `raw_offset` of segment `seg` (a chunk
    /// boundary, or the segment's end), forward or back. Chunks in between
    /// are not read: a delta apply skips those it has. The CRC chain
    /// resumes from the signed CRC of the block before.
    pub fn seek(&mut self, seg: usize, raw_offset: u64) -> Result<()> {
        let head = self.head;
        let cs = head.header.chunk_size();
        let (mut seg, mut chunk) = (seg, raw_offset / cs);
        let bad_start = || Error::InvalidInput {
            what: "start position",
            value: format!("segment {seg}, offset {raw_offset}"),
            reason: "not a chunk boundary of the image".into(),
        };
        let s = head.segments.get(seg).ok_or_else(bad_start)?;
        if raw_offset > s.raw_len || (!raw_offset.is_multiple_of(cs) && raw_offset != s.raw_len) {
            return Err(bad_start());
        }
        if raw_offset == s.raw_len {
            seg += 1;
            chunk = 0;
        }
        let (stored_pos, file_pos, chain) = match head.segments.get(seg) {
            None => (head.header.image_len, None, CrcChain::default()),
            Some(s) if chunk == 0 && seg == 0 => (
                s.data_offset,
                Some(head.header.data_offset),
                CrcChain::default(),
            ),
            Some(s) => {
                let pos = if chunk == 0 {
                    s.data_offset
                } else {
                    let k = u64::from(s.first_chunk) + chunk;
                    let e = self.index.chunk(&mut self.src, k)?;
                    check_entry(head, seg, chunk, &e, None)?;
                    e.stored_offset
                };
                let seed =
                    self.index
                        .crc_before(&mut self.src, seg, chunk * cs / BLOCK_SIZE as u64)?;
                (pos, None, CrcChain::resume(seed))
            }
        };
        (self.seg, self.chunk) = (seg, chunk);
        (self.stored_pos, self.file_pos, self.chain) = (stored_pos, file_pos, chain);
        Ok(())
    }

    /// The signed index entry of chunk `chunk` of segment `seg` (read
    /// through this reader's page cache).
    pub fn entry(&mut self, seg: usize, chunk: u64) -> Result<crate::ChunkEntry> {
        let s = self.head.segments.get(seg).ok_or(Error::InvalidInput {
            what: "segment",
            value: seg.to_string(),
            reason: "no such segment".into(),
        })?;
        let e = self
            .index
            .chunk(&mut self.src, u64::from(s.first_chunk) + chunk)?;
        check_entry(self.head, seg, chunk, &e, None)?;
        Ok(e)
    }

    /// Index bytes read so far.
    pub fn index_bytes_read(&self) -> u64 {
        self.index.bytes_read
    }

    /// The next chunk to be handed out: (segment, chunk in segment); the
    /// segment is past the last one at the end.
    pub fn position(&self) -> (usize, u64) {
        (self.seg, self.chunk)
    }

    pub fn source_mut(&mut self) -> &mut S {
        &mut self.src
    }

    /// Authenticates and decodes the next chunk into `out[..raw_len]`
    /// (`out` must hold a whole chunk): its stored bytes against
    /// `stored_sha256`, then, for a compressed chunk, the decoded bytes
    /// against `raw_sha256` and the CRC chain. `None` once every chunk was handed
    /// out and the padding after the last was checked.
    pub fn next_chunk(&mut self, out: &mut [u8]) -> Result<Option<ChunkInfo>> {
        let n = (self.head.header.chunk_size() as usize).min(out.len());
        let out = &mut out[..n];
        let Some(batch) = self.read_batch(out)? else {
            return Ok(None);
        };
        Ok(batch.verify(out, &mut self.decoder)?.pop())
    }

    /// Reads the stored bytes of as many whole chunks of the current
    /// segment as fit in `out` (at least one must fit), without checking
    /// them: the check is [`PendingBatch::verify`], which needs neither the
    /// reader nor the source, so it can run on another thread while this
    /// reader fetches the next batch. Uncompressed bytes land in `out`
    /// itself; compressed ones in the batch, to be decoded into `out`.
    /// Nothing here may be used before `verify` succeeds. `None` at the
    /// end (after the padding behind the last segment was checked).
    pub fn read_batch(&mut self, out: &mut [u8]) -> Result<Option<PendingBatch>> {
        let head = self.head;
        let cs = head.header.chunk_size();
        let Some(s) = head.segments.get(self.seg) else {
            return Ok(None);
        };
        let fit = (out.len() as u64 / cs).min(u64::from(s.chunks) - self.chunk);
        if fit == 0 {
            return Err(Error::InvalidInput {
                what: "buffer length",
                value: out.len().to_string(),
                reason: format!("must hold a whole chunk ({cs} bytes)"),
            });
        }
        let (entries, pos) = self.next_entries(fit)?;
        let raw_total: usize = (0..fit)
            .map(|j| s.chunk_raw_len(self.chunk + j, cs) as usize)
            .sum();
        // Stored lengths are bounded by `check_entry` (at most
        // `max_stored_len` each), so this is at most `fit` chunks' worth.
        let stored_total = (pos - self.stored_pos) as usize;
        // A batch of only zero chunks has nothing to read: no request
        // (an HTTP range) is made for it.
        let stored = if stored_total == 0 {
            Vec::new()
        } else if s.compression == Compression::None {
            self.src
                .read_at(self.stored_pos, &mut out[..stored_total])?;
            Vec::new()
        } else {
            let mut v = vec![0u8; stored_total];
            self.src.read_at(self.stored_pos, &mut v)?;
            v
        };
        self.data_bytes_read += stored_total as u64;
        let first_block = self.chunk * cs / BLOCK_SIZE as u64;
        let blocks = raw_total.div_ceil(BLOCK_SIZE) as u64;
        let mut crcs = Vec::with_capacity(blocks as usize);
        for b in 0..blocks {
            let idx = u64::from(s.first_crc) + first_block + b;
            crcs.push(self.index.crc(&mut self.src, idx)?);
        }
        let crc_seed = self.chain.value();
        // The batch is checked against exactly these signed entries, so
        // the chain after it is the last of them (or the batch fails and
        // nothing after it is used).
        if let Some(&last) = crcs.last() {
            self.chain = CrcChain::resume(last);
        }
        let batch = PendingBatch {
            segment: self.seg,
            seg_name: s.name.clone(),
            compression: s.compression,
            chunk_size: cs,
            first: self.chunk,
            seg_raw_len: s.raw_len,
            entries,
            raw_total,
            stored,
            crc_seed,
            crcs,
        };
        self.advance(pos, fit);
        Ok(Some(batch))
    }

    /// The signed index entries of the next `fit` chunks of the current
    /// segment, each checked to lie where the previous one ended (after
    /// the padding before the segment was checked), and the file offset
    /// after the last.
    fn next_entries(&mut self, fit: u64) -> Result<(Vec<crate::ChunkEntry>, u64)> {
        let head = self.head;
        let s = &head.segments[self.seg];
        if self.chunk == 0 {
            self.check_gap(s.data_offset)?;
        }
        let mut entries = Vec::with_capacity(fit as usize);
        let mut pos = self.stored_pos;
        for j in 0..fit {
            let i = self.chunk + j;
            let e = self
                .index
                .chunk(&mut self.src, u64::from(s.first_chunk) + i)?;
            check_entry(head, self.seg, i, &e, Some(pos))?;
            pos += u64::from(e.stored_len);
            entries.push(e);
        }
        Ok((entries, pos))
    }

    /// `n` chunks handed out, the last ending at file offset `end`; moves
    /// to the next segment after the last chunk.
    fn advance(&mut self, end: u64, n: u64) {
        let head = self.head;
        self.stored_pos = end;
        self.chunk += n;
        if self.chunk == u64::from(head.segments[self.seg].chunks) {
            self.seg += 1;
            self.chunk = 0;
            self.file_pos = Some(end);
            if let Some(next) = head.segments.get(self.seg) {
                self.stored_pos = next.data_offset;
            }
        }
    }

    /// Bytes between what was checked and `to` must be zero padding.
    fn check_gap(&mut self, to: u64) -> Result<()> {
        let Some(from) = self.file_pos else {
            return Ok(());
        };
        if to > from {
            let mut buf = [0u8; BLOCK_SIZE];
            let mut at = from;
            while at < to {
                let n = ((to - at) as usize).min(BLOCK_SIZE);
                self.src.read_at(at, &mut buf[..n])?;
                self.data_bytes_read += n as u64;
                if buf[..n].iter().any(|&b| b != 0) {
                    return Err(Error::NonZeroPadding("padding between segments"));
                }
                at += n as u64;
            }
        }
        self.file_pos = Some(to);
        Ok(())
    }
}

/// Stored bytes of whole chunks of one segment, read by
/// [`ChunkReader::read_batch`] and not yet authenticated.
pub struct PendingBatch {
    segment: usize,
    seg_name: String,
    compression: Compression,
    chunk_size: u64,
    /// First chunk (in the segment).
    first: u64,
    seg_raw_len: u64,
    entries: Vec<crate::ChunkEntry>,
    raw_total: usize,
    /// Compressed chunks' stored bytes, back to back (empty when
    /// uncompressed: those are in the caller's buffer).
    stored: Vec<u8>,
    /// The CRC chain before the first block, and the signed entries of
    /// every block of the batch.
    crc_seed: u32,
    crcs: Vec<u32>,
}

/// Per-thread state for [`PendingBatch::verify`]: the decoders, made on
/// first use. `default()` has the fastest this build has (with the
/// `host-codecs` feature libzstd and zlib-rs, else the device's pure-Rust
/// ones); both accept and refuse exactly the same chunks.
#[derive(Default)]
pub struct BatchDecoder(ChunkDecoder);

impl BatchDecoder {
    /// The device's pure-Rust decoders (ruzstd, miniz_oxide) whatever the
    /// build: to compare the two in tests, fuzzing and benchmarks.
    pub fn portable() -> Self {
        BatchDecoder(ChunkDecoder::portable())
    }

    /// Decodes one chunk's stored bytes into `out` (exactly its raw
    /// length) under the format's rules for `compression`, with windows
    /// bounded by `chunk_size`. No hash is checked here: callers
    /// authenticate `stored` first and the raw bytes after, as
    /// [`PendingBatch::verify`] does. Public for the fuzz target and the
    /// benchmark, which compare the two decoder sets.
    #[doc(hidden)]
    pub fn decode_chunk(
        &mut self,
        compression: Compression,
        stored: &[u8],
        out: &mut [u8],
        chunk_size: u64,
    ) -> std::result::Result<(), crate::DecodeError> {
        self.0.decode(compression, stored, out, chunk_size)
    }
}

impl PendingBatch {
    pub fn segment(&self) -> usize {
        self.segment
    }

    /// Raw offset of the batch's first byte in its segment.
    pub fn raw_offset(&self) -> u64 {
        self.first * self.chunk_size
    }

    /// Raw bytes the batch decodes to (what [`Self::verify`] fills).
    pub fn raw_len(&self) -> usize {
        self.raw_total
    }

    /// Authenticates the batch chunk by chunk, in order, exactly as
    /// [`ChunkReader::next_chunk`] does: the stored bytes against
    /// `stored_sha256`, for a compressed chunk the decoded bytes against
    /// `raw_sha256`, then the CRC chain. `out` must be the buffer given to
    /// `read_batch`; on success its first [`Self::raw_len`] bytes are the
    /// authenticated raw bytes.
    pub fn verify(&self, out: &mut [u8], dec: &mut BatchDecoder) -> Result<Vec<ChunkInfo>> {
        if out.len() < self.raw_total {
            return Err(Error::InvalidInput {
                what: "buffer length",
                value: out.len().to_string(),
                reason: "shorter than the batch it was read into".into(),
            });
        }
        let mut at = Cursor {
            chain: CrcChain::resume(self.crc_seed),
            raw: 0,
            stored: 0,
            block: 0,
        };
        let mut infos = Vec::with_capacity(self.entries.len());
        let mut j = 0;
        while j < self.entries.len() {
            // Two chunks' hashes at once where the CPU can (sha256x2).
            // Only a pair that passes every check is taken; on any
            // failure the chunks are checked again one by one below, so
            // the error is the one the first failing chunk gives.
            #[cfg(target_arch = "x86_64")]
            if let Some(two) = self.verify_pair(j, out, &mut at, dec) {
                infos.extend(two);
                j += 2;
                continue;
            }
            infos.push(self.verify_one(j, out, &mut at, dec)?);
            j += 1;
        }
        Ok(infos)
    }

    /// Checks chunk `j` of the batch, which starts at `at`, and moves
    /// `at` past it.
    fn verify_one(
        &self,
        j: usize,
        out: &mut [u8],
        at: &mut Cursor,
        dec: &mut BatchDecoder,
    ) -> Result<ChunkInfo> {
        let cs = self.chunk_size;
        let e = &self.entries[j];
        let i = self.first + j as u64;
        let raw_len = self.raw_len_of(j);
        let raw = &mut out[at.raw..at.raw + raw_len];
        let stored_len = e.stored_len as usize;
        let mismatch = || Error::ChunkHashMismatch {
            segment: self.seg_name.clone(),
            chunk: i,
        };
        if self.compression == Compression::None {
            if <[u8; 32]>::from(Sha256::digest(&*raw)) != e.stored_sha256 {
                return Err(mismatch());
            }
        } else {
            let stored = self.stored_of(at.stored, stored_len)?;
            if <[u8; 32]>::from(Sha256::digest(stored)) != e.stored_sha256 {
                return Err(mismatch());
            }
            dec.0
                .decode(self.compression, stored, raw, cs)
                .map_err(|reason| Error::Decompress {
                    segment: self.seg_name.clone(),
                    chunk: i,
                    reason,
                })?;
            // As in `next_chunk`: what is written must be what
            // `raw_sha256` says.
            if <[u8; 32]>::from(Sha256::digest(&*raw)) != e.raw_sha256 {
                return Err(Error::RawHashMismatch {
                    segment: self.seg_name.clone(),
                    chunk: i,
                });
            }
        }
        if let Err(b) = self.check_crcs(raw, &mut at.chain, &mut at.block) {
            return Err(Error::CrcMismatch {
                segment: self.seg_name.clone(),
                block: i * cs / BLOCK_SIZE as u64 + b,
            });
        }
        at.raw += raw_len;
        at.stored += stored_len;
        Ok(self.info(j))
    }

    /// Chunks `j` and `j + 1` checked as [`Self::verify_one`] checks each,
    /// with their SHA-256s computed two at a time: both stored hashes
    /// before either chunk is decoded, both raw hashes after both were.
    /// `None`, with `at` unchanged, if there is no chunk `j + 1` or any
    /// check fails (the caller then checks one by one, for the error).
    #[cfg(target_arch = "x86_64")]
    fn verify_pair(
        &self,
        j: usize,
        out: &mut [u8],
        at: &mut Cursor,
        dec: &mut BatchDecoder,
    ) -> Option<[ChunkInfo; 2]> {
        let (e0, e1) = (self.entries.get(j)?, self.entries.get(j + 1)?);
        let (len0, len1) = (self.raw_len_of(j), self.raw_len_of(j + 1));
        let (raw0, rest) = out
            .get_mut(at.raw..at.raw + len0 + len1)?
            .split_at_mut(len0);
        let raw1 = rest;
        let (slen0, slen1) = (e0.stored_len as usize, e1.stored_len as usize);
        if self.compression == Compression::None {
            let [h0, h1] = sha256x2::digest2(raw0, raw1);
            if h0 != e0.stored_sha256 || h1 != e1.stored_sha256 {
                return None;
            }
        } else {
            let stored0 = self.stored_of(at.stored, slen0).ok()?;
            let stored1 = self.stored_of(at.stored + slen0, slen1).ok()?;
            let [h0, h1] = sha256x2::digest2(stored0, stored1);
            if h0 != e0.stored_sha256 || h1 != e1.stored_sha256 {
                return None;
            }
            let cs = self.chunk_size;
            dec.0.decode(self.compression, stored0, raw0, cs).ok()?;
            dec.0.decode(self.compression, stored1, raw1, cs).ok()?;
            let [h0, h1] = sha256x2::digest2(raw0, raw1);
            if h0 != e0.raw_sha256 || h1 != e1.raw_sha256 {
                return None;
            }
        }
        let (mut chain, mut block) = (at.chain, at.block);
        self.check_crcs(raw0, &mut chain, &mut block).ok()?;
        self.check_crcs(raw1, &mut chain, &mut block).ok()?;
        *at = Cursor {
            chain,
            raw: at.raw + len0 + len1,
            stored: at.stored + slen0 + slen1,
            block,
        };
        Some([self.info(j), self.info(j + 1)])
    }

    /// Raw length of chunk `j` of the batch.
    fn raw_len_of(&self, j: usize) -> usize {
        let i = self.first + j as u64;
        (self.seg_raw_len - i * self.chunk_size).min(self.chunk_size) as usize
    }

    /// A compressed chunk's stored bytes.
    fn stored_of(&self, from: usize, len: usize) -> Result<&[u8]> {
        self.stored
            .get(from..from + len)
            .ok_or(Error::InvalidInput {
                what: "batch",
                value: from.to_string(),
                reason: "stored bytes shorter than the entries".into(),
            })
    }

    /// Pushes `raw`'s blocks through the chain, each against its signed
    /// entry (`block` counts the batch's blocks); `Err` is the failing
    /// block's number inside `raw`.
    fn check_crcs(
        &self,
        raw: &[u8],
        chain: &mut CrcChain,
        block: &mut usize,
    ) -> std::result::Result<(), u64> {
        for (b, blk) in raw.chunks(BLOCK_SIZE).enumerate() {
            if Some(&chain.push(blk)) != self.crcs.get(*block) {
                return Err(b as u64);
            }
            *block += 1;
        }
        Ok(())
    }

    fn info(&self, j: usize) -> ChunkInfo {
        let i = self.first + j as u64;
        ChunkInfo {
            segment: self.segment,
            chunk: i,
            raw_offset: i * self.chunk_size,
            raw_len: self.raw_len_of(j),
            raw_sha256: self.entries[j].raw_sha256,
        }
    }
}

/// Where [`PendingBatch::verify`] is: the CRC chain, and the offsets of
/// the next chunk's raw bytes in `out`, its stored bytes in the batch,
/// and its first block among the batch's CRC entries.
#[derive(Clone, Copy)]
struct Cursor {
    chain: CrcChain,
    raw: usize,
    stored: usize,
    block: usize,
}
