//! Writing images (host side). One pass over each input; the head is
//! written last, once the CRC table and hashes are known, by seeking back.

use std::io::{self, Read, Seek, SeekFrom, Write};

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::layout::{
    align_up, blocks_for, validate_name, Compression, Header, Segment, SigSlot, BOARD_LEN,
    COMPAT_REPRODUCIBLE, FORMAT_VERSION, HEADER_LEN, INCOMPAT_COMPRESSED, LABEL_LEN, MAX_SIG_SLOTS,
    SEGMENT_ENTRY_LEN, SIG_SLOT_LEN,
};
use crate::read::read_full;
use crate::{CrcChain, Error, ImageHead, KeyId, Result, BLOCK_SIZE};

const IO_CHUNK: usize = 1 << 20;

/// What goes into one segment.
#[derive(Clone, Debug)]
pub struct SegmentSpec {
    pub name: String,
    pub target: String,
    pub target_offset: u64,
    pub compression: Compression,
    /// Compression level (gzip 0–9, zstd 1–19); `None` for the default.
    pub level: Option<i32>,
}

struct Pending<'a> {
    spec: SegmentSpec,
    raw_len: u64,
    input: Box<dyn Read + 'a>,
}

/// Builds an unsigned image; sign it afterwards with [`insert_signature`].
pub struct ImageBuilder<'a> {
    board: String,
    payload_version: u64,
    version_label: String,
    created: u64,
    reproducible: bool,
    sig_slots: u32,
    segments: Vec<Pending<'a>>,
}

/// What [`ImageBuilder::write`] produced.
#[derive(Clone, Debug)]
pub struct WriteSummary {
    pub image_len: u64,
    pub signed_len: u64,
    pub segments: Vec<Segment>,
}

impl<'a> ImageBuilder<'a> {
    /// `created` is taken from `SOURCE_DATE_EPOCH` when set (and the image
    /// is flagged reproducible), otherwise from the clock.
    pub fn new(board: &str, payload_version: u64) -> Result<Self> {
        check_text("board", board, BOARD_LEN)?;
        let (created, reproducible) = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(s) => (
                s.trim().parse::<u64>().map_err(|_| Error::InvalidInput {
                    what: "SOURCE_DATE_EPOCH",
                    value: s.clone(),
                    reason: "not a non-negative integer".into(),
                })?,
                true,
            ),
            Err(_) => (
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                false,
            ),
        };
        Ok(Self {
            board: board.to_string(),
            payload_version,
            version_label: String::new(),
            created,
            reproducible,
            sig_slots: 2,
            segments: Vec::new(),
        })
    }

    pub fn version_label(mut self, label: &str) -> Result<Self> {
        check_text("version label", label, LABEL_LEN)?;
        self.version_label = label.to_string();
        Ok(self)
    }

    /// Number of signature slots to reserve (1–8; default 2 so an image can
    /// carry the old and the new key during a rotation).
    pub fn signature_slots(mut self, n: u32) -> Result<Self> {
        if n == 0 || n > MAX_SIG_SLOTS {
            return Err(Error::InvalidInput {
                what: "signature slot count",
                value: n.to_string(),
                reason: format!("must be 1..={MAX_SIG_SLOTS}"),
            });
        }
        self.sig_slots = n;
        Ok(self)
    }

    /// Adds a segment whose raw content is the next `raw_len` bytes of
    /// `input`. The input is read exactly once, during [`Self::write`].
    pub fn add_segment(
        &mut self,
        spec: SegmentSpec,
        raw_len: u64,
        input: impl Read + 'a,
    ) -> Result<()> {
        validate_name("segment name", &spec.name)?;
        validate_name("segment target", &spec.target)?;
        let bad = |reason: &str| Error::InvalidInput {
            what: "segment",
            value: spec.name.clone(),
            reason: reason.to_string(),
        };
        if raw_len == 0 {
            return Err(bad("payload is empty"));
        }
        if !spec.target_offset.is_multiple_of(512) {
            return Err(bad("target offset must be a multiple of 512"));
        }
        if spec.target_offset.checked_add(raw_len).is_none() {
            return Err(bad("target offset + length overflows"));
        }
        if blocks_for(raw_len) > u64::from(u32::MAX) {
            return Err(bad("payload too large"));
        }
        if self.segments.iter().any(|p| p.spec.name == spec.name) {
            return Err(Error::DuplicateSegment(spec.name));
        }
        if let Some(o) = self.segments.iter().find(|p| {
            p.spec.target == spec.target
                && p.spec.target_offset < spec.target_offset + raw_len
                && spec.target_offset < p.spec.target_offset + p.raw_len
        }) {
            return Err(Error::TargetOverlap {
                a: o.spec.name.clone(),
                b: spec.name,
                target: o.spec.target.clone(),
            });
        }
        self.segments.push(Pending {
            spec,
            raw_len,
            input: Box::new(input),
        });
        Ok(())
    }

    /// Streams every segment into `out` and writes the head last.
    /// `progress` receives raw bytes consumed.
    pub fn write<W: Write + Seek>(
        self,
        mut out: W,
        progress: &mut dyn FnMut(u64),
    ) -> Result<WriteSummary> {
        if self.segments.is_empty() {
            return Err(Error::InvalidInput {
                what: "image",
                value: String::new(),
                reason: "no segments".into(),
            });
        }
        let crc_count: u64 = self.segments.iter().map(|p| blocks_for(p.raw_len)).sum();
        if crc_count > u64::from(u32::MAX) {
            return Err(Error::InvalidInput {
                what: "image",
                value: String::new(),
                reason: "too many blocks".into(),
            });
        }
        let mut header = Header {
            format_version: FORMAT_VERSION,
            compat_flags: if self.reproducible {
                COMPAT_REPRODUCIBLE
            } else {
                0
            },
            incompat_flags: 0,
            payload_version: self.payload_version,
            created: self.created,
            segment_count: self.segments.len() as u32,
            crc_count,
            sig_slot_count: self.sig_slots,
            data_offset: 0,
            image_len: 0,
            board: self.board,
            version_label: self.version_label,
        };
        header.data_offset = align_up(header.sig_end());
        if self
            .segments
            .iter()
            .any(|p| p.spec.compression != Compression::None)
        {
            header.incompat_flags |= INCOMPAT_COMPRESSED;
        }

        let mut crc_table: Vec<u32> = Vec::with_capacity(crc_count as usize);
        let mut chain = CrcChain::default();
        let mut segments = Vec::with_capacity(self.segments.len());
        let mut pos = header.data_offset;
        out.seek(SeekFrom::Start(pos))?;
        for p in self.segments {
            let aligned = align_up(pos);
            out.write_all(&vec![0u8; (aligned - pos) as usize])?;
            pos = aligned;
            let first_crc = crc_table.len() as u32;
            let mut counting = HashingWriter {
                inner: &mut out,
                sha: Sha256::new(),
                written: 0,
            };
            let Pending {
                spec,
                raw_len,
                input,
            } = p;
            write_segment(
                &spec,
                raw_len,
                input,
                &mut counting,
                &mut chain,
                &mut crc_table,
                progress,
            )?;
            let (sha256, stored_len) = (counting.sha.finalize().into(), counting.written);
            segments.push(Segment {
                name: spec.name,
                target: spec.target,
                target_offset: spec.target_offset,
                data_offset: pos,
                stored_len,
                raw_len,
                first_crc,
                crc_blocks: blocks_for(raw_len) as u32,
                compression: spec.compression,
                flags: 0,
                sha256,
            });
            pos += stored_len;
        }
        header.image_len = pos;

        let mut head = Vec::with_capacity(header.data_offset as usize);
        head.extend_from_slice(&header.encode());
        for s in &segments {
            head.extend_from_slice(&s.encode());
        }
        for c in &crc_table {
            head.extend_from_slice(&c.to_le_bytes());
        }
        for _ in 0..header.sig_slot_count {
            head.extend_from_slice(&SigSlot::encode(None));
        }
        head.resize(header.data_offset as usize, 0);
        debug_assert_eq!(
            head.len(),
            HEADER_LEN
                + segments.len() * SEGMENT_ENTRY_LEN
                + crc_table.len() * 4
                + header.sig_slot_count as usize * SIG_SLOT_LEN
                + (header.data_offset - header.sig_end()) as usize
        );
        out.seek(SeekFrom::Start(0))?;
        out.write_all(&head)?;
        out.flush()?;
        Ok(WriteSummary {
            image_len: header.image_len,
            signed_len: header.sig_offset(),
            segments,
        })
    }
}

fn write_segment(
    spec: &SegmentSpec,
    raw_len: u64,
    input: Box<dyn Read + '_>,
    out: &mut dyn Write,
    chain: &mut CrcChain,
    crc_table: &mut Vec<u32>,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut input = input;
    let mut enc: Box<dyn WriteFinish + '_> = match spec.compression {
        Compression::None => Box::new(Plain(out)),
        Compression::Gzip => Box::new(flate2::GzBuilder::new().write(
            out,
            flate2::Compression::new(spec.level.unwrap_or(6).clamp(0, 9) as u32),
        )),
        Compression::Zstd => {
            let mut e = zstd::stream::write::Encoder::new(out, spec.level.unwrap_or(3))?;
            // Bounds the device-side decoder's window (and so its RAM) to
            // 1 MiB regardless of level: the Zero 2 W has 512 MB for
            // everything.
            e.window_log(20)?;
            e.include_checksum(false)?;
            e.include_contentsize(true)?;
            e.set_pledged_src_size(Some(raw_len))?;
            Box::new(e)
        }
    };
    let mut page = crate::crc::PageBuf::new(IO_CHUNK);
    let buf = page.as_mut();
    let mut left = raw_len;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let got = read_full(&mut input, &mut buf[..want])?;
        if got < want {
            return Err(Error::InputChanged {
                segment: spec.name.clone(),
                expected: raw_len,
                actual: raw_len - left + got as u64,
            });
        }
        for block in buf[..got].chunks(BLOCK_SIZE) {
            crc_table.push(chain.push(block));
        }
        enc.write_all(&buf[..got])?;
        left -= got as u64;
        progress(got as u64);
    }
    // An input that grew while being read would silently lose its tail.
    if read_full(&mut input, &mut buf[..1])? != 0 {
        return Err(Error::InputChanged {
            segment: spec.name.clone(),
            expected: raw_len,
            actual: raw_len + 1,
        });
    }
    enc.finish_stream()?;
    Ok(())
}

trait WriteFinish: Write {
    fn finish_stream(self: Box<Self>) -> io::Result<()>;
}

struct Plain<W>(W);
impl<W: Write> Write for Plain<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write(b)
    }
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        self.0.write_all(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
impl<W: Write> WriteFinish for Plain<W> {
    fn finish_stream(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}
impl<W: Write> WriteFinish for flate2::write::GzEncoder<W> {
    fn finish_stream(self: Box<Self>) -> io::Result<()> {
        (*self).finish().map(drop)
    }
}
impl<W: Write> WriteFinish for zstd::stream::write::Encoder<'_, W> {
    fn finish_stream(self: Box<Self>) -> io::Result<()> {
        (*self).finish().map(drop)
    }
}

struct HashingWriter<W> {
    inner: W,
    sha: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.sha.update(&b[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn check_text(what: &'static str, s: &str, max: usize) -> Result<()> {
    let reason = if s.len() > max {
        Some(format!("longer than {max} bytes"))
    } else if s.contains('\0') || s.chars().any(char::is_control) {
        Some("contains control characters".into())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidInput {
            what,
            value: s.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Anything that can produce an Ed25519 signature: a key in memory, or an
/// external program (HSM, PKCS#11, KMS) driven by the CLI.
pub trait Signer {
    fn public_key(&self) -> VerifyingKey;
    fn sign(&self, message: &[u8]) -> Result<[u8; 64]>;
}

impl Signer for ed25519_dalek::SigningKey {
    fn public_key(&self) -> VerifyingKey {
        self.verifying_key()
    }
    fn sign(&self, message: &[u8]) -> Result<[u8; 64]> {
        Ok(ed25519_dalek::Signer::sign(self, message).to_bytes())
    }
}

/// The bytes a signer must sign for the image in `src`
/// ([`ImageHead::signing_message`]).
pub fn signed_message<R: Read>(src: R, file_len: u64) -> Result<Vec<u8>> {
    Ok(ImageHead::read(src, file_len)?.signing_message().to_vec())
}

/// Signs the image in `file` in place: the signature goes into the slot that
/// already holds this key's signature, or the first empty one. The signature
/// is checked against the public key before it is written, so a
/// misbehaving external signer cannot produce an image that fails later.
pub fn insert_signature<F: Read + Write + Seek>(
    file: &mut F,
    signer: &dyn Signer,
) -> Result<KeyId> {
    let len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    let head = ImageHead::read(&mut *file, len)?;
    let key = signer.public_key();
    let key_id = KeyId::of(&key);
    let message = head.signing_message();
    let sig = signer.sign(&message)?;
    key.verify_strict(&message, &Signature::from_bytes(&sig))
        .map_err(|_| {
            Error::Signer(format!(
                "returned a signature that does not verify with key {key_id}"
            ))
        })?;
    let slot = head
        .slots
        .iter()
        .position(|s| s.as_ref().is_some_and(|s| s.key_id == key_id.0))
        .or_else(|| head.slots.iter().position(Option::is_none))
        .ok_or(Error::NoFreeSlot(head.slots.len()))?;
    let at = head.header.sig_offset() + (slot * SIG_SLOT_LEN) as u64;
    file.seek(SeekFrom::Start(at))?;
    file.write_all(&SigSlot::encode(Some(&SigSlot {
        key_id: key_id.0,
        signature: sig,
    })))?;
    file.flush()?;
    Ok(key_id)
}
