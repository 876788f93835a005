//! Parsing the image head: header, segment table, CRC table and signature
//! slots. Everything here is bounded by the real file length.

use std::io::Read;

use crate::layout::{self, get_u32_le, Header, Segment, SigSlot, HEADER_LEN};
use crate::{Error, Result, SEGMENT_ENTRY_LEN, SIG_SLOT_LEN};

/// The parsed, structurally valid head of an image. Holding one does not
/// mean the image is authentic: call [`ImageHead::verify_signature`].
#[derive(Clone, Debug)]
pub struct ImageHead {
    pub header: Header,
    pub segments: Vec<Segment>,
    pub slots: Vec<Option<SigSlot>>,
    /// Bytes `[0, sig_offset)`: the image head, which the signature covers through its SHA-256. The CRC
    /// table is read from here rather than copied, so the head costs one
    /// byte of memory per byte of head (the table is 1/1024 of the image).
    signed: Vec<u8>,
}

/// Domain tag that starts every signing message, so an fwpack signature
/// can never be mistaken for one over some other 40-byte message.
pub const SIGNING_DOMAIN: &[u8; 8] = b"FWPKSIG1";
pub const SIGNING_MESSAGE_LEN: usize = 40;

/// A run of CRC chain entries, read in place from the signed head bytes.
#[derive(Clone, Copy, Debug)]
pub struct Crcs<'a>(&'a [u8]);

impl<'a> Crcs<'a> {
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<u32> {
        let at = i.checked_mul(4)?;
        self.0.get(at..at + 4).map(|b| get_u32_le(b, 0))
    }

    pub fn last(&self) -> Option<u32> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.0.chunks_exact(4).map(|c| get_u32_le(c, 0))
    }
}

impl ImageHead {
    /// Reads the head from the start of `r`. `file_len` is the image's
    /// real length (from metadata); every count is checked against it
    /// before anything is allocated.
    pub fn read<R: Read>(mut r: R, file_len: u64) -> Result<Self> {
        let mut hbuf = [0u8; HEADER_LEN];
        let got = read_full(&mut r, &mut hbuf)?;
        let header = Header::decode(&hbuf[..got], file_len)?;
        // `decode` bounded data_offset by file_len, so this allocation is
        // no larger than the file.
        let head_len = usize::try_from(header.data_offset).map_err(|_| Error::BadField {
            field: "data_offset",
            reason: "too large for this platform".into(),
        })?;
        let mut head = vec![0u8; head_len];
        head[..HEADER_LEN].copy_from_slice(&hbuf);
        let got = read_full(&mut r, &mut head[HEADER_LEN..])?;
        if got < head_len - HEADER_LEN {
            return Err(Error::Truncated {
                what: "image head",
                needed: header.data_offset,
                available: (HEADER_LEN + got) as u64,
            });
        }
        Self::from_head_bytes(header, head)
    }

    /// Parses an image held entirely in memory (tests, fuzzing).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        Self::read(bytes, bytes.len() as u64)
    }

    fn from_head_bytes(header: Header, mut head: Vec<u8>) -> Result<Self> {
        let n = header.segment_count as usize;
        let mut segments = Vec::with_capacity(n);
        for i in 0..n {
            let at = HEADER_LEN + i * SEGMENT_ENTRY_LEN;
            let entry = head
                .get(at..at + SEGMENT_ENTRY_LEN)
                .ok_or(Error::Truncated {
                    what: "segment table",
                    needed: (at + SEGMENT_ENTRY_LEN) as u64,
                    available: head.len() as u64,
                })?;
            segments.push(Segment::decode(entry, i)?);
        }
        check_segments(&header, &segments)?;

        let crc_at = header.crc_offset() as usize;
        let sig_at = header.sig_offset() as usize;
        if head.len() < sig_at || crc_at > sig_at {
            return Err(Error::Truncated {
                what: "CRC table",
                needed: sig_at as u64,
                available: head.len() as u64,
            });
        }

        let mut slots = Vec::with_capacity(header.sig_slot_count as usize);
        for i in 0..header.sig_slot_count as usize {
            let at = sig_at + i * SIG_SLOT_LEN;
            let b = head.get(at..at + SIG_SLOT_LEN).ok_or(Error::Truncated {
                what: "signature slots",
                needed: (at + SIG_SLOT_LEN) as u64,
                available: head.len() as u64,
            })?;
            slots.push(SigSlot::decode(b)?);
        }
        let sig_end = header.sig_end() as usize;
        if head
            .get(sig_end..)
            .is_some_and(|p| p.iter().any(|&x| x != 0))
        {
            return Err(Error::NonZeroPadding("padding after signature slots"));
        }
        head.truncate(sig_at);
        Ok(ImageHead {
            header,
            segments,
            slots,
            signed: head,
        })
    }

    /// The image head `[0, sig_offset)`: header, segment table, CRC table.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed
    }

    /// The message an Ed25519 signature signs: a domain tag and the
    /// SHA-256 of the head (FORMAT.md, "Signature slots"). Fixed-size, so
    /// any HSM or KMS can sign it whatever the image size (AWS KMS caps raw
    /// messages at 4 KiB, OpenSC's pkcs11-tool cannot sign pure Ed25519 in
    /// parts), while every head byte stays covered.
    pub fn signing_message(&self) -> [u8; SIGNING_MESSAGE_LEN] {
        use sha2::{Digest, Sha256};
        let mut m = [0u8; SIGNING_MESSAGE_LEN];
        m[..8].copy_from_slice(SIGNING_DOMAIN);
        m[8..].copy_from_slice(&Sha256::digest(&self.signed));
        m
    }

    /// The whole CRC table.
    pub fn crc_table(&self) -> Crcs<'_> {
        let from = self.header.crc_offset() as usize;
        Crcs(self.signed.get(from..).unwrap_or(&[]))
    }

    /// The chain value preceding segment `idx`'s first block (0 at the very
    /// start of the chain).
    pub fn crc_seed(&self, idx: usize) -> u32 {
        self.segments
            .get(idx)
            .and_then(|s| s.first_crc.checked_sub(1))
            .and_then(|i| self.crc_table().get(i as usize))
            .unwrap_or(0)
    }

    /// CRC entries of segment `idx`, one per 4 KiB block of raw data.
    pub fn segment_crcs(&self, idx: usize) -> Crcs<'_> {
        let table = self.crc_table().0;
        let bytes = self.segments.get(idx).and_then(|s| {
            let start = s.first_crc as usize * 4;
            table.get(start..start + s.crc_blocks as usize * 4)
        });
        Crcs(bytes.unwrap_or(&[]))
    }

    pub fn segment_index(&self, name: &str) -> Option<usize> {
        self.segments.iter().position(|s| s.name == name)
    }
}

/// Table-level rules: contiguous CRC ranges, data inside the file, no
/// overlaps in the file or on a target, unique names.
fn check_segments(h: &Header, segs: &[Segment]) -> Result<()> {
    let mut next_crc: u64 = 0;
    for (i, s) in segs.iter().enumerate() {
        if u64::from(s.first_crc) != next_crc {
            return Err(Error::BadSegment {
                index: i,
                reason: format!(
                    "first_crc {} but the previous segment ended at {next_crc}",
                    s.first_crc
                ),
            });
        }
        next_crc += u64::from(s.crc_blocks);
        if s.data_offset < h.data_offset {
            return Err(Error::BadSegment {
                index: i,
                reason: "data starts inside the image head".into(),
            });
        }
        match s.data_end() {
            Some(end) if end <= h.image_len => {}
            _ => {
                return Err(Error::Truncated {
                    what: "segment data",
                    needed: s.data_offset.saturating_add(s.stored_len),
                    available: h.image_len,
                })
            }
        }
        if segs[..i].iter().any(|o| o.name == s.name) {
            return Err(Error::DuplicateSegment(s.name.clone()));
        }
    }
    if next_crc != h.crc_count {
        return Err(Error::BadField {
            field: "crc_count",
            reason: format!("{} but segments cover {next_crc} blocks", h.crc_count),
        });
    }
    // Data must be laid out in table order so a verifier can stream the
    // file front to back; this also makes overlap a neighbour check.
    for pair in segs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.data_end().is_none_or(|end| end > b.data_offset) {
            return Err(Error::SegmentOverlap {
                a: a.name.clone(),
                b: b.name.clone(),
            });
        }
    }
    for (i, a) in segs.iter().enumerate() {
        for b in &segs[..i] {
            if a.target == b.target
                && a.target_offset < b.target_offset + b.raw_len
                && b.target_offset < a.target_offset + a.raw_len
            {
                return Err(Error::TargetOverlap {
                    a: b.name.clone(),
                    b: a.name.clone(),
                    target: a.target.clone(),
                });
            }
        }
    }
    let needs_decompress = segs
        .iter()
        .any(|s| s.compression != layout::Compression::None);
    if needs_decompress && h.incompat_flags & layout::INCOMPAT_COMPRESSED == 0 {
        return Err(Error::BadField {
            field: "incompat_flags",
            reason: "compressed segments without the COMPRESSED flag".into(),
        });
    }
    Ok(())
}

/// Reads until `buf` is full or EOF; returns how much was read.
pub(crate) fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
