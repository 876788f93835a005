//! The redundant record: one 4 KiB block holding a typed, sequenced,
//! CRC-protected payload. Every record exists in two copies in separate
//! blocks; readers take the newest valid copy, writers overwrite the other
//! one (never the only valid copy) and sync. A torn or lost write therefore
//! damages at most the copy being written and leaves the previous state
//! readable. Layout in docs/FORMAT.md ("Boot state, journal and state
//! area").

pub const RECORD_LEN: usize = 4096;
pub const RECORD_MAGIC: [u8; 8] = *b"FWPKSTAT";
pub const RECORD_VERSION: u16 = 1;
pub const RECORD_HEADER_LEN: usize = 32;
const CRC_AT: usize = RECORD_LEN - 4;
pub const MAX_PAYLOAD: usize = CRC_AT - RECORD_HEADER_LEN;

/// What a record holds. The kind is stored in the record so a block
/// copied to the wrong place is not mistaken for another record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Layout = 1,
    Boot = 2,
    Journal = 3,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Layout => "layout",
            Kind::Boot => "boot state",
            Kind::Journal => "journal",
        }
    }
}

/// Encodes a record into a full block. `payload.len()` must be at most
/// [`MAX_PAYLOAD`]; callers encode fixed-size payloads well below it.
pub fn encode(kind: Kind, seq: u64, payload: &[u8], out: &mut [u8]) -> Result<(), String> {
    if payload.len() > MAX_PAYLOAD {
        return Err(format!(
            "{} payload of {} bytes exceeds {MAX_PAYLOAD}",
            kind.name(),
            payload.len()
        ));
    }
    let out = out
        .get_mut(..RECORD_LEN)
        .ok_or_else(|| "record buffer shorter than a block".to_string())?;
    out.fill(0);
    out[0..8].copy_from_slice(&RECORD_MAGIC);
    out[8..10].copy_from_slice(&(kind as u16).to_le_bytes());
    out[10..12].copy_from_slice(&RECORD_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out[16..24].copy_from_slice(&seq.to_le_bytes());
    out[RECORD_HEADER_LEN..RECORD_HEADER_LEN + payload.len()].copy_from_slice(payload);
    let crc = crc32c::crc32c(&out[..CRC_AT]);
    out[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A valid copy: its sequence number and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copy<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
}

/// Why a copy is not valid (for `status` diagnostics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// All zero: never written.
    Blank,
    BadMagic,
    WrongKind(u16),
    UnknownVersion(u16),
    BadLength(u32),
    BadCrc,
    NonZeroPadding,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Blank => f.write_str("blank"),
            Invalid::BadMagic => f.write_str("no record magic"),
            Invalid::WrongKind(k) => write!(f, "holds record kind {k}"),
            Invalid::UnknownVersion(v) => write!(f, "record version {v} unknown"),
            Invalid::BadLength(l) => write!(f, "payload length {l} out of range"),
            Invalid::BadCrc => f.write_str("CRC mismatch (torn or corrupt)"),
            Invalid::NonZeroPadding => f.write_str("non-zero reserved bytes"),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut x = [0u8; 2];
    x.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(x)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Decodes one copy. Total: any block content gives `Ok` or `Invalid`.
pub fn decode(block: &[u8], kind: Kind) -> Result<Copy<'_>, Invalid> {
    let Some(b) = block.get(..RECORD_LEN) else {
        return Err(Invalid::BadLength(block.len() as u32));
    };
    if b.iter().all(|&x| x == 0) {
        return Err(Invalid::Blank);
    }
    if b[0..8] != RECORD_MAGIC {
        return Err(Invalid::BadMagic);
    }
    // CRC before any field is believed: a torn copy must read as torn.
    if u32_at(b, CRC_AT) != crc32c::crc32c(&b[..CRC_AT]) {
        return Err(Invalid::BadCrc);
    }
    let k = u16_at(b, 8);
    if k != kind as u16 {
        return Err(Invalid::WrongKind(k));
    }
    let v = u16_at(b, 10);
    if v != RECORD_VERSION {
        return Err(Invalid::UnknownVersion(v));
    }
    let len = u32_at(b, 12);
    if len as usize > MAX_PAYLOAD {
        return Err(Invalid::BadLength(len));
    }
    let end = RECORD_HEADER_LEN + len as usize;
    if b[24..RECORD_HEADER_LEN].iter().any(|&x| x != 0) || b[end..CRC_AT].iter().any(|&x| x != 0) {
        return Err(Invalid::NonZeroPadding);
    }
    Ok(Copy {
        seq: u64_at(b, 16),
        payload: &b[RECORD_HEADER_LEN..end],
    })
}

/// Picks the newest valid copy of two: `(index, copy)`. On equal sequence
/// numbers (only possible if something other than fwpack wrote them) copy
/// 0 wins, deterministically.
pub fn newest<'a>(copies: [&Result<Copy<'a>, Invalid>; 2]) -> Option<(usize, Copy<'a>)> {
    match (copies[0], copies[1]) {
        (Ok(a), Ok(b)) => Some(if b.seq > a.seq { (1, *b) } else { (0, *a) }),
        (Ok(a), Err(_)) => Some((0, *a)),
        (Err(_), Ok(b)) => Some((1, *b)),
        (Err(_), Err(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(kind: Kind, seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; RECORD_LEN];
        encode(kind, seq, payload, &mut b).unwrap();
        b
    }

    #[test]
    fn roundtrip_and_kind_check() {
        let b = block(Kind::Boot, 7, b"hello");
        let c = decode(&b, Kind::Boot).unwrap();
        assert_eq!((c.seq, c.payload), (7, &b"hello"[..]));
        assert_eq!(decode(&b, Kind::Journal), Err(Invalid::WrongKind(2)));
        assert_eq!(
            decode(&vec![0; RECORD_LEN], Kind::Boot),
            Err(Invalid::Blank)
        );
        assert!(encode(
            Kind::Boot,
            1,
            &[0; MAX_PAYLOAD + 1],
            &mut vec![0; RECORD_LEN]
        )
        .is_err());
    }

    #[test]
    fn every_torn_prefix_is_detected() {
        // A write torn at any 512-byte sector leaves old bytes behind the
        // tear: old and new copy differ, so the CRC must catch every mix.
        let old = block(Kind::Journal, 1, &[0xAA; 100]);
        let new = block(Kind::Journal, 2, &[0x55; 100]);
        for cut in (512..RECORD_LEN).step_by(512) {
            let mut torn = new[..cut].to_vec();
            torn.extend_from_slice(&old[cut..]);
            assert_eq!(
                decode(&torn, Kind::Journal),
                Err(Invalid::BadCrc),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let b = block(Kind::Layout, 3, b"layout payload");
        for bit in 0..RECORD_LEN * 8 {
            let mut x = b.clone();
            x[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&x, Kind::Layout).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn newest_valid_copy_wins() {
        let a = block(Kind::Boot, 4, b"a");
        let b = block(Kind::Boot, 5, b"b");
        let da = decode(&a, Kind::Boot);
        let db = decode(&b, Kind::Boot);
        assert_eq!(newest([&da, &db]).unwrap().0, 1);
        assert_eq!(newest([&db, &da]).unwrap().0, 0);
        let bad = decode(&[1u8; RECORD_LEN], Kind::Boot);
        assert_eq!(newest([&bad, &da]).unwrap().1.seq, 4);
        assert!(newest([&bad, &bad]).is_none());
    }
}
