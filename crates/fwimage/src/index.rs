//! The index region: chunk entries and the CRC table, in 4 KiB pages each
//! authenticated by a SHA-256 in the signed head. Pages are read on
//! demand and checked on every read, so memory stays constant in the image
//! size and a source that changes under us is caught.

use sha2::{Digest, Sha256};

use crate::layout::{
    get_u32_le, ChunkEntry, CHUNK_ENTRY_LEN, CRCS_PER_PAGE, ENTRIES_PER_PAGE, PAGE_LEN,
};
use crate::{Error, ImageHead, ImageSource, KeyId, Result};

/// Proof that a head's signature was checked: the index and chunk readers
/// only start from one, so nothing below the head is used unauthenticated.
#[derive(Clone, Copy, Debug)]
pub struct Verified<'h> {
    pub head: &'h ImageHead,
    pub key_id: KeyId,
}

impl ImageHead {
    /// Checks the signature ([`ImageHead::verify_signature`]) and returns
    /// the token the readers need.
    pub fn authenticate(&self, trusted: &crate::TrustedKeys) -> Result<Verified<'_>> {
        let key_id = self.verify_signature(trusted)?;
        Ok(Verified { head: self, key_id })
    }
}

struct Page {
    no: u64,
    bytes: Box<[u8; PAGE_LEN]>,
}

/// On-demand, authenticated access to the index. Keeps one chunk page and
/// one CRC page.
pub struct Index<'h> {
    head: &'h ImageHead,
    chunk_page: Option<Page>,
    crc_page: Option<Page>,
    /// Index bytes read from the source (every page load).
    pub bytes_read: u64,
}

impl<'h> Index<'h> {
    pub fn new(v: &Verified<'h>) -> Self {
        Index {
            head: v.head,
            chunk_page: None,
            crc_page: None,
            bytes_read: 0,
        }
    }

    pub fn head(&self) -> &'h ImageHead {
        self.head
    }

    /// Entry of global chunk `k` (not yet checked against its segment: see
    /// [`check_entry`]).
    pub fn chunk(&mut self, src: &mut dyn ImageSource, k: u64) -> Result<ChunkEntry> {
        let h = &self.head.header;
        if k >= h.chunk_count {
            return Err(Error::BadChunk {
                index: k,
                reason: "no such chunk".into(),
            });
        }
        let page = k / ENTRIES_PER_PAGE;
        let at = (k % ENTRIES_PER_PAGE) as usize * CHUNK_ENTRY_LEN;
        let bytes = load(
            self.head,
            &mut self.chunk_page,
            &mut self.bytes_read,
            src,
            page,
        )?;
        ChunkEntry::decode(&bytes[at..at + CHUNK_ENTRY_LEN], k)
    }

    /// CRC table entry `i`.
    pub fn crc(&mut self, src: &mut dyn ImageSource, i: u64) -> Result<u32> {
        let h = &self.head.header;
        if i >= h.crc_count {
            return Err(Error::BadField {
                field: "crc index",
                reason: format!("{i} is past the CRC table"),
            });
        }
        let page = h.chunk_pages() + i / CRCS_PER_PAGE;
        let at = (i % CRCS_PER_PAGE) as usize * 4;
        let bytes = load(
            self.head,
            &mut self.crc_page,
            &mut self.bytes_read,
            src,
            page,
        )?;
        Ok(get_u32_le(&bytes[..], at))
    }

    /// The chain value before raw block `block` of segment `seg` (0 at the
    /// start of the image).
    pub fn crc_before(&mut self, src: &mut dyn ImageSource, seg: usize, block: u64) -> Result<u32> {
        let first = self
            .head
            .segments
            .get(seg)
            .map_or(0, |s| u64::from(s.first_crc));
        match (first + block).checked_sub(1) {
            Some(i) => self.crc(src, i),
            None => Ok(0),
        }
    }
}

/// Returns the cached page `no`, reading and authenticating it first when
/// it is not the cached one.
fn load<'p>(
    head: &ImageHead,
    cache: &'p mut Option<Page>,
    counter: &mut u64,
    src: &mut dyn ImageSource,
    no: u64,
) -> Result<&'p [u8; PAGE_LEN]> {
    if cache.as_ref().is_none_or(|p| p.no != no) {
        let want = head.page_hash(no).ok_or(Error::BadField {
            field: "index page",
            reason: format!("page {no} is past the page-hash table"),
        })?;
        let mut bytes = cache
            .take()
            .map_or_else(|| Box::new([0u8; PAGE_LEN]), |p| p.bytes);
        src.read_at(head.header.page_offset(no), &mut bytes[..])?;
        *counter += PAGE_LEN as u64;
        if <[u8; 32]>::from(Sha256::digest(&bytes[..])) != want {
            return Err(Error::IndexPageMismatch { page: no });
        }
        check_page_padding(head, no, &bytes[..])?;
        *cache = Some(Page { no, bytes });
    }
    match cache {
        Some(p) => Ok(&p.bytes),
        None => Err(Error::IndexPageMismatch { page: no }),
    }
}

/// Unused entries and the tail of a chunk page are zero, so every byte of
/// the index means something (and a bit flip anywhere is refused).
fn check_page_padding(head: &ImageHead, no: u64, b: &[u8]) -> Result<()> {
    let h = &head.header;
    let used = if no < h.chunk_pages() {
        let entries = h
            .chunk_count
            .saturating_sub(no * ENTRIES_PER_PAGE)
            .min(ENTRIES_PER_PAGE);
        entries as usize * CHUNK_ENTRY_LEN
    } else {
        let first = (no - h.chunk_pages()) * CRCS_PER_PAGE;
        h.crc_count.saturating_sub(first).min(CRCS_PER_PAGE) as usize * 4
    };
    if b[used.min(PAGE_LEN)..].iter().any(|&x| x != 0) {
        return Err(Error::NonZeroPadding("index page padding"));
    }
    Ok(())
}

/// The rules an entry must satisfy for chunk `i` of segment `seg`, given
/// where the previous chunk ended (`expected_offset`, `None` when reading
/// out of order).
pub fn check_entry(
    head: &ImageHead,
    seg: usize,
    i: u64,
    e: &ChunkEntry,
    expected_offset: Option<u64>,
) -> Result<()> {
    let s = &head.segments[seg];
    let k = u64::from(s.first_chunk) + i;
    let bad = |reason: String| Err(Error::BadChunk { index: k, reason });
    let raw = s.chunk_raw_len(i, head.header.chunk_size());
    let len = u64::from(e.stored_len);
    if len == 0 && !s.may_store_empty(&head.header) {
        return bad(if s.compression == crate::Compression::None {
            "empty chunk in an uncompressed segment".into()
        } else {
            "empty chunk without the zero-chunks flag".into()
        });
    }
    if len > crate::layout::max_stored_len(raw) {
        return bad(format!("stored length {len} for {raw} raw bytes"));
    }
    if s.compression == crate::Compression::None {
        if len != raw {
            return bad("uncompressed chunk with stored != raw length".into());
        }
        if e.raw_sha256 != e.stored_sha256 {
            return bad("uncompressed chunk with raw hash != stored hash".into());
        }
    }
    if let Some(want) = expected_offset {
        if e.stored_offset != want {
            return bad(format!(
                "stored at {} but the previous chunk ended at {want}",
                e.stored_offset
            ));
        }
    }
    let end = e.stored_offset.checked_add(len);
    let seg_end = s.data_offset + s.stored_len;
    if e.stored_offset < s.data_offset || end.is_none_or(|x| x > seg_end) {
        return bad("stored bytes outside the segment".into());
    }
    if i + 1 == u64::from(s.chunks) && end != Some(seg_end) {
        return bad("the last chunk does not end at the end of the segment".into());
    }
    Ok(())
}
