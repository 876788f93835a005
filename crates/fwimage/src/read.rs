//! Parsing the image head: header, segment table, page-hash table and
//! signature slots. Everything here is bounded by the real file length and
//! by [`MAX_SIGNED_HEAD`](crate::layout::MAX_SIGNED_HEAD).

use std::io::Read;

use crate::layout::{self, Header, Segment, SigSlot, HEADER_LEN};
use crate::{Error, HeadExtension, Result, SEGMENT_ENTRY_LEN, SIG_SLOT_LEN};

/// The parsed, structurally valid head of an image. Holding one does not
/// mean the image is authentic: call [`ImageHead::verify_signature`].
#[derive(Clone, Debug)]
pub struct ImageHead {
    pub header: Header,
    pub segments: Vec<Segment>,
    pub slots: Vec<Option<SigSlot>>,
    /// The head extension's records (signed; empty when there is none).
    pub extension: HeadExtension,
    /// Bytes `[0, sig_offset)`: the signed head (header, segment table,
    /// page hashes). Small: 32 bytes per 4 KiB of index.
    signed: Vec<u8>,
}

/// Domain tag that starts every signing message, so an fwpack signature
/// can never be mistaken for one over some other 40-byte message (nor a
/// format-1 head, whose tag was `FWPKSIG1`).
pub const SIGNING_DOMAIN: &[u8; 8] = b"FWPKSIG2";
pub const SIGNING_MESSAGE_LEN: usize = 40;

impl ImageHead {
    /// Reads the head — everything before `index_offset` — from the start
    /// of `r`. `file_len` is the image's real length; every count is
    /// checked against it and against the head limit before anything is
    /// allocated.
    pub fn read<R: Read>(mut r: R, file_len: u64) -> Result<Self> {
        let mut hbuf = [0u8; HEADER_LEN];
        let got = read_full(&mut r, &mut hbuf)?;
        let header = Header::decode(&hbuf[..got], file_len)?;
        // `decode` bounded index_offset by MAX_SIGNED_HEAD + slots + a page.
        let head_len = header.index_offset as usize;
        let mut head = vec![0u8; head_len];
        head[..HEADER_LEN].copy_from_slice(&hbuf);
        let got = read_full(&mut r, &mut head[HEADER_LEN..])?;
        if got < head_len - HEADER_LEN {
            return Err(Error::Truncated {
                what: "image head",
                needed: header.index_offset,
                available: (HEADER_LEN + got) as u64,
            });
        }
        Self::from_head_bytes(header, head)
    }

    /// Reads the head through positioned reads (what the device engine
    /// uses, so that the head, like everything else, is read exactly once).
    pub fn read_from<S: crate::ImageSource + ?Sized>(src: &mut S, file_len: u64) -> Result<Self> {
        let mut hbuf = [0u8; HEADER_LEN];
        let n = (HEADER_LEN as u64).min(file_len) as usize;
        src.read_at(0, &mut hbuf[..n])?;
        let header = Header::decode(&hbuf[..n], file_len)?;
        let mut head = vec![0u8; header.index_offset as usize];
        head[..HEADER_LEN].copy_from_slice(&hbuf);
        src.read_at(HEADER_LEN as u64, &mut head[HEADER_LEN..])?;
        Self::from_head_bytes(header, head)
    }

    /// Parses the head of an image held entirely in memory (tests, fuzzing).
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
            segments.push(Segment::decode(entry, i, header.chunk_size())?);
        }
        check_segments(&header, &segments)?;

        let sig_at = header.sig_offset() as usize;
        let ext_at = header.ext_offset() as usize;
        let extension = match head.get(ext_at..sig_at) {
            Some(b) => HeadExtension::decode(b)?,
            None => {
                return Err(Error::Truncated {
                    what: "head extension",
                    needed: sig_at as u64,
                    available: head.len() as u64,
                })
            }
        };
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
            extension,
            signed: head,
        })
    }

    /// The signed head `[0, sig_offset)`.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed
    }

    /// The message an Ed25519 signature signs: a domain tag and the
    /// SHA-256 of the signed head (FORMAT.md, "Signature slots"). Fixed
    /// size, so any HSM or KMS can sign it whatever the image size.
    pub fn signing_message(&self) -> [u8; SIGNING_MESSAGE_LEN] {
        use sha2::{Digest, Sha256};
        let mut m = [0u8; SIGNING_MESSAGE_LEN];
        m[..8].copy_from_slice(SIGNING_DOMAIN);
        m[8..].copy_from_slice(&Sha256::digest(&self.signed));
        m
    }

    /// The signed SHA-256 of index page `page`.
    pub fn page_hash(&self, page: u64) -> Option<[u8; 32]> {
        let at = usize::try_from(self.header.page_hash_offset() + page.checked_mul(32)?).ok()?;
        let b = self.signed.get(at..at.checked_add(32)?)?;
        let mut h = [0u8; 32];
        h.copy_from_slice(b);
        Some(h)
    }

    pub fn segment_index(&self, name: &str) -> Option<usize> {
        self.segments.iter().position(|s| s.name == name)
    }

    /// The segment holding global chunk `k`.
    pub fn segment_of_chunk(&self, k: u64) -> Option<usize> {
        // Segments are few (≤ 256) and ordered by first_chunk.
        self.segments.iter().position(|s| {
            k >= u64::from(s.first_chunk) && k < u64::from(s.first_chunk) + u64::from(s.chunks)
        })
    }
}

/// Table-level rules: contiguous CRC and chunk ranges, data inside the
/// file and in table order, no overlaps in the file or on a target,
/// unique names. O(n log n) in the number of segments.
fn check_segments(h: &Header, segs: &[Segment]) -> Result<()> {
    let mut next_crc: u64 = 0;
    let mut next_chunk: u64 = 0;
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
        if u64::from(s.first_chunk) != next_chunk {
            return Err(Error::BadSegment {
                index: i,
                reason: format!(
                    "first_chunk {} but the previous segment ended at {next_chunk}",
                    s.first_chunk
                ),
            });
        }
        next_crc += u64::from(s.crc_blocks);
        next_chunk += u64::from(s.chunks);
        // Every stored chunk has at least one byte; only zero chunks have
        // none.
        if !s.may_store_empty(h) && s.stored_len < u64::from(s.chunks) {
            return Err(Error::BadSegment {
                index: i,
                reason: "stored length shorter than one byte per chunk".into(),
            });
        }
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
    }
    if next_crc != h.crc_count {
        return Err(Error::BadField {
            field: "crc_count",
            reason: format!("{} but segments cover {next_crc} blocks", h.crc_count),
        });
    }
    if next_chunk != h.chunk_count {
        return Err(Error::BadField {
            field: "chunk_count",
            reason: format!("{} but segments have {next_chunk} chunks", h.chunk_count),
        });
    }
    let mut names: Vec<&str> = segs.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::DuplicateSegment(w[0].to_string()));
    }
    // Data must be laid out in table order so a reader can stream the file
    // front to back; this also makes overlap a neighbour check.
    for pair in segs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.data_end().is_none_or(|end| end > b.data_offset) {
            return Err(Error::SegmentOverlap {
                a: a.name.clone(),
                b: b.name.clone(),
            });
        }
    }
    if let Some(last) = segs.last() {
        if last.data_end() != Some(h.image_len) {
            return Err(Error::BadField {
                field: "image_len",
                reason: "the last segment does not end at the end of the image".into(),
            });
        }
    }
    // Target overlap: sort by (target, offset), then neighbours.
    let mut by_target: Vec<&Segment> = segs.iter().collect();
    by_target.sort_unstable_by(|a, b| {
        (a.target.as_str(), a.target_offset).cmp(&(b.target.as_str(), b.target_offset))
    });
    for pair in by_target.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.target == b.target && b.target_offset < a.target_offset + a.raw_len {
            return Err(Error::TargetOverlap {
                a: a.name.clone(),
                b: b.name.clone(),
                target: a.target.clone(),
            });
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
