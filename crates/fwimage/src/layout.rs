//! Byte layout of the image head. See docs/FORMAT.md; field offsets here
//! and there must agree (the FORMAT.md tables were written from this file).

use crate::{Error, Result, BLOCK_SIZE};

pub const MAGIC: [u8; 8] = *b"FWPKIMG\0";
pub const FORMAT_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 256;
pub const SEGMENT_ENTRY_LEN: usize = 160;
pub const SIG_SLOT_LEN: usize = 128;
pub const NAME_LEN: usize = 32;
pub const BOARD_LEN: usize = 64;
pub const LABEL_LEN: usize = 64;
pub const MAX_SIG_SLOTS: u32 = 8;

pub const HASH_SHA256: u8 = 1;
pub const CRC_CRC32C_CHAIN: u8 = 1;
pub const SIG_ED25519: u8 = 1;
pub const BLOCK_SHIFT: u8 = 12;

/// May-ignore flag: `created` came from SOURCE_DATE_EPOCH.
pub const COMPAT_REPRODUCIBLE: u32 = 1 << 0;
/// Must-understand flag: at least one segment is stored compressed. A reader
/// without decompressors must refuse rather than write compressed bytes raw.
pub const INCOMPAT_COMPRESSED: u32 = 1 << 0;
pub const KNOWN_INCOMPAT: u32 = INCOMPAT_COMPRESSED;

const HEADER_CRC_OFFSET: usize = HEADER_LEN - 4;

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
    pub crc_count: u64,
    pub sig_slot_count: u32,
    pub data_offset: u64,
    pub image_len: u64,
    pub board: String,
    pub version_label: String,
}

impl Header {
    pub fn table_offset(&self) -> u64 {
        HEADER_LEN as u64
    }
    pub fn crc_offset(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.segment_count) * SEGMENT_ENTRY_LEN as u64
    }
    /// End of the signed range: everything before the signature slots.
    pub fn sig_offset(&self) -> u64 {
        self.crc_offset() + self.crc_count * 4
    }
    pub fn sig_end(&self) -> u64 {
        self.sig_offset() + u64::from(self.sig_slot_count) * SIG_SLOT_LEN as u64
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
        put64(&mut b, 48, self.crc_offset());
        put64(&mut b, 56, self.crc_count);
        put64(&mut b, 64, self.sig_offset());
        put32(&mut b, 72, self.sig_slot_count);
        put32(&mut b, 76, SIG_SLOT_LEN as u32);
        put64(&mut b, 80, self.data_offset);
        put64(&mut b, 88, self.image_len);
        put_str(&mut b[96..96 + BOARD_LEN], &self.board);
        put_str(&mut b[160..160 + LABEL_LEN], &self.version_label);
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
        expect_eq("sig_slot_len", u64::from(get32(b, 76)), SIG_SLOT_LEN as u64)?;
        if b[224..HEADER_CRC_OFFSET].iter().any(|&x| x != 0) {
            return Err(Error::NonZeroPadding("header reserved bytes"));
        }

        let h = Header {
            format_version,
            compat_flags: get32(b, 12),
            incompat_flags,
            payload_version: get64(b, 24),
            created: get64(b, 32),
            segment_count: get32(b, 40),
            crc_count: get64(b, 56),
            sig_slot_count: get32(b, 72),
            data_offset: get64(b, 80),
            image_len: get64(b, 88),
            board: get_str(&b[96..96 + BOARD_LEN], "board")?,
            version_label: get_str(&b[160..160 + LABEL_LEN], "version_label")?,
        };
        if h.board.is_empty() {
            return Err(bad("board", "empty"));
        }
        if h.segment_count == 0 {
            return Err(bad("segment_count", "image has no segments"));
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
        if u64::from(h.segment_count) > file_len / SEGMENT_ENTRY_LEN as u64 {
            return Err(truncated(
                "segment table",
                u64::from(h.segment_count).saturating_mul(SEGMENT_ENTRY_LEN as u64),
                file_len,
            ));
        }
        if h.crc_count > file_len / 4 {
            return Err(truncated(
                "CRC table",
                h.crc_count.saturating_mul(4),
                file_len,
            ));
        }
        expect_eq("crc_offset", get64(b, 48), h.crc_offset())?;
        expect_eq("sig_offset", get64(b, 64), h.sig_offset())?;
        expect_eq("data_offset", h.data_offset, align_up(h.sig_end()))?;
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
    /// Absolute file offset of the stored bytes (multiple of 4096).
    pub data_offset: u64,
    pub stored_len: u64,
    /// Length after decompression: what lands on the device.
    pub raw_len: u64,
    /// Index of this segment's first block in the CRC table.
    pub first_crc: u32,
    pub crc_blocks: u32,
    pub compression: Compression,
    pub flags: u32,
    /// SHA-256 of the stored bytes.
    pub sha256: [u8; 32],
}

impl Segment {
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
        b[112..144].copy_from_slice(&self.sha256);
        b
    }

    pub fn decode(b: &[u8], index: usize) -> Result<Self> {
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
        if b[105..108].iter().any(|&x| x != 0) || b[144..160].iter().any(|&x| x != 0) {
            return Err(Error::NonZeroPadding("segment entry reserved bytes"));
        }
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&b[112..144]);
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
            sha256,
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
    std::str::from_utf8(&field[..end])
        .map(str::to_owned)
        .map_err(|_| bad(what, "not UTF-8"))
}

/// Callers validate lengths first; a longer string would be truncated here.
fn put_str(field: &mut [u8], s: &str) {
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

pub(crate) fn get_u32_le(b: &[u8], at: usize) -> u32 {
    get32(b, at)
}
