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
    crc_table: Vec<u32>,
    /// Bytes `[0, sig_offset)`: exactly what the signature covers.
    signed: Vec<u8>,
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
        let crc_bytes = head.get(crc_at..sig_at).ok_or(Error::Truncated {
            what: "CRC table",
            needed: sig_at as u64,
            available: head.len() as u64,
        })?;
        let crc_table: Vec<u32> = crc_bytes
            .chunks_exact(4)
            .map(|c| get_u32_le(c, 0))
            .collect();

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
            crc_table,
            signed: head,
        })
    }

    /// The exact bytes the signature covers (`[0, sig_offset)`).
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed
    }

    pub fn crc_table(&self) -> &[u32] {
        &self.crc_table
    }

    /// The chain value preceding segment `idx`'s first block (0 at the very
    /// start of the chain).
    pub fn crc_seed(&self, idx: usize) -> u32 {
        self.segments
            .get(idx)
            .and_then(|s| s.first_crc.checked_sub(1))
            .and_then(|i| self.crc_table.get(i as usize).copied())
            .unwrap_or(0)
    }

    /// CRC entries of segment `idx`, one per 4 KiB block of raw data.
    pub fn segment_crcs(&self, idx: usize) -> &[u32] {
        self.segments
            .get(idx)
            .and_then(|s| {
                let start = s.first_crc as usize;
                self.crc_table.get(start..start + s.crc_blocks as usize)
            })
            .unwrap_or(&[])
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
