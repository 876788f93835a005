//! Byte layout of the image head. See docs/FORMAT.md; field offsets here
//! and there must agree (the FORMAT.md tables were written from this file).

use crate::{Error, Result, BLOCK_SIZE};

pub const MAGIC: [u8; 8] = *b"FWPKIMG\0";
pub const FORMAT_VERSION: u16 = 2;
pub const HEADER_LEN: usize = 256;
pub const SEGMENT_ENTRY_LEN: usize = 160;
pub const SIG_SLOT_LEN: usize = 128;
pub const NAME_LEN: usize = 32;
pub const BOARD_LEN: usize = 64;
pub const LABEL_LEN: usize = 64;
pub const MAX_SIG_SLOTS: u32 = 8;
/// Segments per image: enough for every partition of any board, small
/// enough that the table checks are trivially cheap.
pub const MAX_SEGMENTS: u32 = 256;
/// Upper bound of the signed head a reader holds in memory.
pub const MAX_SIGNED_HEAD: u64 = 1 << 20;

/// Index pages are this long; each one's SHA-256 is in the signed head.
pub const PAGE_LEN: usize = 4096;
pub const CHUNK_ENTRY_LEN: usize = 80;
/// Chunk entries per index page (51 × 80 = 4080; 16 bytes of zero).
pub const ENTRIES_PER_PAGE: u64 = 51;
/// CRC entries per index page.
pub const CRCS_PER_PAGE: u64 = 1024;
pub const MIN_CHUNK_SHIFT: u8 = 16;
pub const MAX_CHUNK_SHIFT: u8 = 20;
/// 256 KiB: see docs/BENCHMARKS.md ("chunk size") for the measurement.
pub const DEFAULT_CHUNK_SHIFT: u8 = 18;

pub const HASH_SHA256: u8 = 1;
pub const CRC_CRC32C_CHAIN: u8 = 1;
pub const SIG_ED25519: u8 = 1;
pub const BLOCK_SHIFT: u8 = 12;

/// May-ignore flag: `created` came from SOURCE_DATE_EPOCH.
pub const COMPAT_REPRODUCIBLE: u32 = 1 << 0;
/// Must-understand flag: at least one segment is stored compressed. A reader
/// without decompressors must refuse rather than write compressed bytes raw.
pub const INCOMPAT_COMPRESSED: u32 = 1 << 0;
/// Must-understand flag: the signed head has an extension area
/// (`ext_len` bytes of records after the page-hash table, crate::ext).
/// It moves the signature slots, so a reader that does not know it must
/// refuse rather than look for them in the wrong place.
pub const INCOMPAT_HEAD_EXT: u32 = 1 << 1;
/// Must-understand flag: a chunk of a compressed segment may be stored
/// empty, meaning its raw bytes are all zero (FORMAT.md, "Zero chunks").
/// A reader that does not know it would refuse such a chunk half-way
/// through an apply; with the flag it refuses the image up front.
pub const INCOMPAT_ZERO_CHUNKS: u32 = 1 << 2;
pub const KNOWN_INCOMPAT: u32 = INCOMPAT_COMPRESSED | INCOMPAT_HEAD_EXT | INCOMPAT_ZERO_CHUNKS;

/// SHA-256 of the empty string: the `stored_sha256` of a zero chunk.
pub const EMPTY_SHA256: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

const HEADER_CRC_OFFSET: usize = HEADER_LEN - 4;
/// `ext_len` sits in what were the first reserved bytes after the label.
const EXT_LEN_OFFSET: usize = 232;

/// How a segment's bytes are stored in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Zstd => 2,
        }
    }

    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" | "zst" => Ok(Compression::Zstd),
            _ => Err(format!("unknown compression `{s}` (none, gzip, zstd)")),
        }
    }
}

/// The fixed image header (first 256 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub format_version: u16,
    pub compat_flags: u32,
    pub incompat_flags: u32,
    pub payload_version: u64,
    pub created: u64,
    pub segment_count: u32,
    pub chunk_shift: u8,
    pub sig_slot_count: u32,
    pub chunk_count: u64,
    pub crc_count: u64,
    pub page_count: u64,
    /// Length of the head extension (0 without [`INCOMPAT_HEAD_EXT`]).
    pub ext_len: u32,
    pub index_offset: u64,
    pub data_offset: u64,
    pub image_len: u64,
    pub board: String,
    pub version_label: String,
}

impl Header {
    pub fn chunk_size(&self) -> u64 {
        1u64 << self.chunk_shift
    }
    pub fn table_offset(&self) -> u64 {
        HEADER_LEN as u64
    }
    pub fn page_hash_offset(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.segment_count) * SEGMENT_ENTRY_LEN as u64
    }
    /// Start of the head extension, right after the page-hash table.
    pub fn ext_offset(&self) -> u64 {
        self.page_hash_offset() + self.page_count * 32
    }
    /// End of the signed head: everything before the signature slots.
    pub fn sig_offset(&self) -> u64 {
        self.ext_offset() + u64::from(self.ext_len)
    }
    pub fn sig_end(&self) -> u64 {
        self.sig_offset() + u64::from(self.sig_slot_count) * SIG_SLOT_LEN as u64
    }
    /// Incompat bit 2: compressed segments may store chunks empty.
    pub fn has_zero_chunks(&self) -> bool {
        self.incompat_flags & INCOMPAT_ZERO_CHUNKS != 0
    }
    /// Index pages holding chunk entries; the CRC pages follow them.
    pub fn chunk_pages(&self) -> u64 {
        self.chunk_count.div_ceil(ENTRIES_PER_PAGE)
    }
    pub fn crc_pages(&self) -> u64 {
        self.crc_count.div_ceil(CRCS_PER_PAGE)
    }
    pub fn page_offset(&self, page: u64) -> u64 {
        self.index_offset + page * PAGE_LEN as u64
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        put16(&mut b, 8, self.format_version);
        put16(&mut b, 10, HEADER_LEN as u16);
        put32(&mut b, 12, self.compat_flags);
        put32(&mut b, 16, self.incompat_flags);
        b[20] = HASH_SHA256;
        b[21] = CRC_CRC32C_CHAIN;
        b[22] = SIG_ED25519;
        b[23] = BLOCK_SHIFT;
        put64(&mut b, 24, self.payload_version);
        put64(&mut b, 32, self.created);
        put32(&mut b, 40, self.segment_count);
        put32(&mut b, 44, SEGMENT_ENTRY_LEN as u32);
        b[48] = self.chunk_shift;
        put32(&mut b, 52, self.sig_slot_count);
        put64(&mut b, 56, self.chunk_count);
        put64(&mut b, 64, self.crc_count);
        put64(&mut b, 72, self.index_offset);
        put64(&mut b, 80, self.page_count);
        put64(&mut b, 88, self.data_offset);
        put64(&mut b, 96, self.image_len);
        put_str(&mut b[104..104 + BOARD_LEN], &self.board);
        put_str(&mut b[168..168 + LABEL_LEN], &self.version_label);
        put32(&mut b, EXT_LEN_OFFSET, self.ext_len);
        let crc = crc32c::crc32c(&b[..HEADER_CRC_OFFSET]);
        put32(&mut b, HEADER_CRC_OFFSET, crc);
        b
    }

    /// Decodes and validates a header. `file_len` is the real length of the
    /// image so every count can be bounded before anything is allocated.
    pub fn decode(b: &[u8], file_len: u64) -> Result<Self> {
        if b.len() < 8 || file_len < 8 {
            return Err(truncated("header", HEADER_LEN as u64, file_len));
        }
        if b[0..8] != MAGIC {
            return Err(Error::BadMagic);
        }
        if b.len() < HEADER_LEN || file_len < HEADER_LEN as u64 {
            return Err(truncated("header", HEADER_LEN as u64, file_len));
        }
        let format_version = get16(b, 8);
        if format_version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion(format_version));
        }
        // The checksum comes before any other field is believed: a flipped
        // bit in a length should read as "corrupt header", not as a
        // plausible but wrong layout.
        if get32(b, HEADER_CRC_OFFSET) != crc32c::crc32c(&b[..HEADER_CRC_OFFSET]) {
            return Err(Error::HeaderChecksum);
        }
        expect_eq("header_len", u64::from(get16(b, 10)), HEADER_LEN as u64)?;
        let incompat_flags = get32(b, 16);
        if incompat_flags & !KNOWN_INCOMPAT != 0 {
            return Err(Error::UnknownRequiredFlags(
                incompat_flags & !KNOWN_INCOMPAT,
            ));
        }
        for (what, at, want) in [
            ("hash", 20, HASH_SHA256),
            ("crc", 21, CRC_CRC32C_CHAIN),
            ("signature", 22, SIG_ED25519),
        ] {
            if b[at] != want {
                return Err(Error::UnknownAlgorithm { what, id: b[at] });
            }
        }
        expect_eq("block_shift", u64::from(b[23]), u64::from(BLOCK_SHIFT))?;
        expect_eq(
            "segment_entry_len",
            u64::from(get32(b, 44)),
            SEGMENT_ENTRY_LEN as u64,
        )?;
        if b[49..52].iter().any(|&x| x != 0)
            || b[EXT_LEN_OFFSET + 4..HEADER_CRC_OFFSET]
                .iter()
                .any(|&x| x != 0)
        {
            return Err(Error::NonZeroPadding("header reserved bytes"));
        }

        let h = Header {
            format_version,
            compat_flags: get32(b, 12),
            incompat_flags,
            payload_version: get64(b, 24),
            created: get64(b, 32),
            segment_count: get32(b, 40),
            chunk_shift: b[48],
            sig_slot_count: get32(b, 52),
            chunk_count: get64(b, 56),
            crc_count: get64(b, 64),
            index_offset: get64(b, 72),
            page_count: get64(b, 80),
            ext_len: get32(b, EXT_LEN_OFFSET),
            data_offset: get64(b, 88),
            image_len: get64(b, 96),
            board: get_str(&b[104..104 + BOARD_LEN], "board")?,
            version_label: get_str(&b[168..168 + LABEL_LEN], "version_label")?,
        };
        if h.board.is_empty() {
            return Err(bad("board", "empty"));
        }
        if !(MIN_CHUNK_SHIFT..=MAX_CHUNK_SHIFT).contains(&h.chunk_shift) {
            return Err(bad(
                "chunk_shift",
                format!(
                    "{} (must be {MIN_CHUNK_SHIFT}..={MAX_CHUNK_SHIFT})",
                    h.chunk_shift
                ),
            ));
        }
        if h.segment_count == 0 || h.segment_count > MAX_SEGMENTS {
            return Err(bad(
                "segment_count",
                format!("{} (must be 1..={MAX_SEGMENTS})", h.segment_count),
            ));
        }
        if h.sig_slot_count == 0 || h.sig_slot_count > MAX_SIG_SLOTS {
            return Err(bad(
                "sig_slot_count",
                format!("{} (must be 1..={MAX_SIG_SLOTS})", h.sig_slot_count),
            ));
        }
        // Bound every count by the file before computing offsets from them,
        // so the arithmetic below cannot overflow and nothing we later
        // allocate exceeds the file.
        if h.image_len != file_len {
            return Err(if h.image_len > file_len {
                truncated("image", h.image_len, file_len)
            } else {
                Error::TrailingData {
                    extra: file_len - h.image_len,
                }
            });
        }
        // Their entries are in the file, so the file bounds the counts.
        if h.chunk_count > file_len / CHUNK_ENTRY_LEN as u64 {
            return Err(bad(
                "chunk_count",
                format!("{} is impossible in a {file_len} byte image", h.chunk_count),
            ));
        }
        if h.crc_count > file_len / 4 {
            return Err(bad(
                "crc_count",
                format!("{} is impossible in a {file_len} byte image", h.crc_count),
            ));
        }
        expect_eq("page_count", h.page_count, h.chunk_pages() + h.crc_pages())?;
        let has_ext = h.incompat_flags & INCOMPAT_HEAD_EXT != 0;
        if has_ext != (h.ext_len != 0) || h.ext_len > crate::ext::MAX_EXT_LEN {
            return Err(bad(
                "ext_len",
                format!(
                    "{} with the head-extension flag {} (must be 1..={} with it, 0 without)",
                    h.ext_len,
                    if has_ext { "set" } else { "clear" },
                    crate::ext::MAX_EXT_LEN
                ),
            ));
        }
        if h.sig_offset() > MAX_SIGNED_HEAD {
            return Err(bad(
                "page_count",
                format!(
                    "the signed head would be {} bytes (at most {MAX_SIGNED_HEAD})",
                    h.sig_offset()
                ),
            ));
        }
        expect_eq("index_offset", h.index_offset, align_up(h.sig_end()))?;
        expect_eq(
            "data_offset",
            h.data_offset,
            h.index_offset + h.page_count * PAGE_LEN as u64,
        )?;
        if h.data_offset > file_len {
            return Err(truncated("image head", h.data_offset, file_len));
        }
        Ok(h)
    }
}

/// One entry of the segment table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub name: String,
    /// Where the segment goes on the device: a slot or partition name.
    pub target: String,
    /// Byte offset inside the target at which the raw bytes land.
    pub target_offset: u64,
    /// Absolute file offset of the first stored chunk (multiple of 4096).
    pub data_offset: u64,
    pub stored_len: u64,
    /// Length after decompression: what lands on the device.
    pub raw_len: u64,
    /// Index of this segment's first block in the CRC table.
    pub first_crc: u32,
    pub crc_blocks: u32,
    pub compression: Compression,
    pub flags: u32,
    /// Index of this segment's first chunk entry.
    pub first_chunk: u32,
    pub chunks: u32,
}

impl Segment {
    /// Whether a chunk of this segment may be stored empty (a zero chunk,
    /// FORMAT.md): only in a compressed segment of an image with bit 2.
    pub fn may_store_empty(&self, h: &Header) -> bool {
        self.compression != Compression::None && h.has_zero_chunks()
    }

    pub fn encode(&self) -> [u8; SEGMENT_ENTRY_LEN] {
        let mut b = [0u8; SEGMENT_ENTRY_LEN];
        put_str(&mut b[0..32], &self.name);
        put_str(&mut b[32..64], &self.target);
        put64(&mut b, 64, self.data_offset);
        put64(&mut b, 72, self.stored_len);
        put64(&mut b, 80, self.raw_len);
        put64(&mut b, 88, self.target_offset);
        put32(&mut b, 96, self.first_crc);
        put32(&mut b, 100, self.crc_blocks);
        b[104] = self.compression.id();
        put32(&mut b, 108, self.flags);
        put32(&mut b, 112, self.first_chunk);
        put32(&mut b, 116, self.chunks);
        b
    }

    /// Decodes one entry; `chunk_size` comes from the (checked) header.
    pub fn decode(b: &[u8], index: usize, chunk_size: u64) -> Result<Self> {
        let bad = |reason: String| Error::BadSegment { index, reason };
        if b.len() < SEGMENT_ENTRY_LEN {
            return Err(bad("entry truncated".into()));
        }
        let name = get_str(&b[0..32], "segment name")?;
        let target = get_str(&b[32..64], "segment target")?;
        let compression = Compression::from_id(b[104]).ok_or(Error::UnknownAlgorithm {
            what: "compression",
            id: b[104],
        })?;
        if b[105..108].iter().any(|&x| x != 0) || b[120..160].iter().any(|&x| x != 0) {
            return Err(Error::NonZeroPadding("segment entry reserved bytes"));
        }
        let seg = Segment {
            name,
            target,
            data_offset: get64(b, 64),
            stored_len: get64(b, 72),
            raw_len: get64(b, 80),
            target_offset: get64(b, 88),
            first_crc: get32(b, 96),
            crc_blocks: get32(b, 100),
            compression,
            flags: get32(b, 108),
            first_chunk: get32(b, 112),
            chunks: get32(b, 116),
        };
        validate_name("segment name", &seg.name).map_err(|e| bad(e.to_string()))?;
        validate_name("segment target", &seg.target).map_err(|e| bad(e.to_string()))?;
        if seg.flags != 0 {
            return Err(Error::UnknownSegmentFlags {
                segment: seg.name,
                flags: seg.flags,
            });
        }
        if seg.raw_len == 0 {
            return Err(bad("empty segment".into()));
        }
        if u64::from(seg.crc_blocks) != blocks_for(seg.raw_len) {
            return Err(bad(format!(
                "crc_blocks {} does not match raw length {}",
                seg.crc_blocks, seg.raw_len
            )));
        }
        if u64::from(seg.chunks) != seg.raw_len.div_ceil(chunk_size) {
            return Err(bad(format!(
                "chunks {} does not match raw length {}",
                seg.chunks, seg.raw_len
            )));
        }
        if seg.compression == Compression::None && seg.stored_len != seg.raw_len {
            return Err(bad("uncompressed segment with stored != raw length".into()));
        }
        if !seg.data_offset.is_multiple_of(BLOCK_SIZE as u64) {
            return Err(bad("data offset not 4096-aligned".into()));
        }
        if !seg.target_offset.is_multiple_of(512) {
            return Err(bad("target offset not 512-aligned".into()));
        }
        if seg.target_offset.checked_add(seg.raw_len).is_none() {
            return Err(bad("target range overflows".into()));
        }
        Ok(seg)
    }

    pub fn data_end(&self) -> Option<u64> {
        self.data_offset.checked_add(self.stored_len)
    }

    /// Raw length of chunk `i` of this segment.
    pub fn chunk_raw_len(&self, i: u64, chunk_size: u64) -> u64 {
        self.raw_len
            .saturating_sub(i.saturating_mul(chunk_size))
            .min(chunk_size)
    }
}

/// Largest stored length a chunk of `raw` bytes may have: what zstd or
/// deflate need for incompressible input, with room to spare.
pub fn max_stored_len(raw: u64) -> u64 {
    raw + raw / 64 + 1024
}

/// One chunk's entry in the index (80 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    pub stored_sha256: [u8; 32],
    pub raw_sha256: [u8; 32],
    pub stored_offset: u64,
    pub stored_len: u32,
}

impl ChunkEntry {
    pub fn encode(&self) -> [u8; CHUNK_ENTRY_LEN] {
        let mut b = [0u8; CHUNK_ENTRY_LEN];
        b[0..32].copy_from_slice(&self.stored_sha256);
        b[32..64].copy_from_slice(&self.raw_sha256);
        put64(&mut b, 64, self.stored_offset);
        put32(&mut b, 72, self.stored_len);
        b
    }

    /// Decodes an entry of an authenticated index page. Field rules that
    /// need the segment are checked by the caller.
    pub fn decode(b: &[u8], index: u64) -> Result<Self> {
        if b.len() < CHUNK_ENTRY_LEN {
            return Err(Error::BadChunk {
                index,
                reason: "entry truncated".into(),
            });
        }
        if b[76..80].iter().any(|&x| x != 0) {
            return Err(Error::NonZeroPadding("chunk entry reserved bytes"));
        }
        let mut stored_sha256 = [0u8; 32];
        stored_sha256.copy_from_slice(&b[0..32]);
        let mut raw_sha256 = [0u8; 32];
        raw_sha256.copy_from_slice(&b[32..64]);
        Ok(ChunkEntry {
            stored_sha256,
            raw_sha256,
            stored_offset: get64(b, 64),
            stored_len: get32(b, 72),
        })
    }
}

/// One signature slot. Empty slots are all zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigSlot {
    pub key_id: [u8; 32],
    pub signature: [u8; 64],
}

impl SigSlot {
    pub fn encode(slot: Option<&SigSlot>) -> [u8; SIG_SLOT_LEN] {
        let mut b = [0u8; SIG_SLOT_LEN];
        if let Some(s) = slot {
            b[0] = SIG_ED25519;
            b[8..40].copy_from_slice(&s.key_id);
            b[40..104].copy_from_slice(&s.signature);
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Option<SigSlot>> {
        if b.len() < SIG_SLOT_LEN {
            return Err(truncated(
                "signature slot",
                SIG_SLOT_LEN as u64,
                b.len() as u64,
            ));
        }
        match b[0] {
            0 => {
                if b.iter().any(|&x| x != 0) {
                    return Err(Error::NonZeroPadding("empty signature slot"));
                }
                Ok(None)
            }
            SIG_ED25519 => {
                if b[1..8].iter().any(|&x| x != 0) || b[104..128].iter().any(|&x| x != 0) {
                    return Err(Error::NonZeroPadding("signature slot reserved bytes"));
                }
                // An all-zero key id names no key (no SHA-256 preimage is
                // known); it is how a flipped alg byte in an empty slot looks.
                if b[8..40].iter().all(|&x| x == 0) {
                    return Err(bad("signature slot", "null key id"));
                }
                let mut key_id = [0u8; 32];
                key_id.copy_from_slice(&b[8..40]);
                let mut signature = [0u8; 64];
                signature.copy_from_slice(&b[40..104]);
                Ok(Some(SigSlot { key_id, signature }))
            }
            id => Err(Error::UnknownAlgorithm {
                what: "signature slot",
                id,
            }),
        }
    }
}

/// Names and targets: short, printable, unambiguous in logs and paths.
pub fn validate_name(what: &'static str, s: &str) -> Result<()> {
    let reason = if s.is_empty() {
        Some("empty".to_string())
    } else if s.len() > NAME_LEN {
        Some(format!("longer than {NAME_LEN} bytes"))
    } else if !s
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'+'))
    {
        Some("only ASCII letters, digits and - _ . + are allowed".to_string())
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

pub fn blocks_for(len: u64) -> u64 {
    len.div_ceil(BLOCK_SIZE as u64)
}

pub fn align_up(x: u64) -> u64 {
    x.div_ceil(BLOCK_SIZE as u64) * BLOCK_SIZE as u64
}

fn truncated(what: &'static str, needed: u64, available: u64) -> Error {
    Error::Truncated {
        what,
        needed,
        available,
    }
}

fn bad(field: &'static str, reason: impl Into<String>) -> Error {
    Error::BadField {
        field,
        reason: reason.into(),
    }
}

fn expect_eq(field: &'static str, got: u64, want: u64) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(bad(field, format!("{got}, expected {want}")))
    }
}

// Callers pass slices at least `at + N` long (fixed-size records checked
// above), so these cannot go out of bounds.
fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn get32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn get64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Strings are UTF-8, NUL-padded, and the padding must be all NUL so every
/// byte of the field is meaningful.
fn get_str(field: &[u8], what: &'static str) -> Result<String> {
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    if field[end..].iter().any(|&c| c != 0) {
        return Err(Error::NonZeroPadding("string padding"));
    }
    let s = std::str::from_utf8(&field[..end]).map_err(|_| bad(what, "not UTF-8"))?;
    // Strings end up on consoles and in logs: refuse what could drive a
    // terminal rather than print it.
    if s.chars().any(char::is_control) {
        return Err(bad(what, "contains control characters"));
    }
    Ok(s.to_owned())
}

/// Callers validate lengths first; a longer string would be truncated here.
fn put_str(field: &mut [u8], s: &str) {
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

pub(crate) fn get_u32_le(b: &[u8], at: usize) -> u32 {
    get32(b, at)
}
