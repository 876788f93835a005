//! The redundant record: one 4 KiB block holding a typed, sequenced,
//! CRC-protected payload. The record exists in two copies, far apart on
//! the disk; readers take the newest valid copy, writers overwrite the
//! other one (never the copy in use) and sync. A torn or lost write
//! therefore damages at most the copy being written and leaves the
//! previous state readable. Layout in docs/FORMAT.md ("Boot state,
//! journal and state area").
//!
//! Sequence numbers compare with wrap-around (RFC 1982 style): the copies
//! of one record are at most a few writes apart, so "newer" is "ahead by
//! less than 2^63", and a counter at `u64::MAX` simply continues at 0.
//!
//! Compatibility: the header names the oldest format a reader must know
//! (*compatible since*) and the format the writer used (*version*). The
//! bootstrap's updater never changes in the field while the slot's one
//! does, so a newer writer may add to the record but never change what is
//! there; a reader refuses only records whose compatible-since it does not
//! know. A writer that adds nothing writes version 0 ("the same as
//! compatible since"), which is byte for byte what fwpack wrote before
//! the field existed, so those older bootstraps read it too.

pub const RECORD_LEN: usize = 4096;
pub const RECORD_MAGIC: [u8; 8] = *b"FWPKSTAT";
/// Format 2: one combined state record (layout + boot state + journal) in
/// two halves `copy_distance` apart. Format 1 had three records in six
/// adjacent blocks. This is the newest format this reader knows, both as
/// a record's *compatible since* (bytes 10..12, the field every format-2
/// reader compares with 2) and as its *version* (bytes 24..26).
pub const RECORD_VERSION: u16 = 2;
/// The oldest compatible-since this reader accepts: format 1 was a
/// different layout on the disk.
pub const OLDEST_COMPATIBLE: u16 = 2;
pub const RECORD_HEADER_LEN: usize = 32;
const CRC_AT: usize = RECORD_LEN - 4;
pub const MAX_PAYLOAD: usize = CRC_AT - RECORD_HEADER_LEN;

/// What a record holds. The kind is stored in the record so a block
/// copied to the wrong place is not mistaken for another record. Kinds
/// 1–3 (layout, boot state, journal) were format 1's separate records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Layout, boot state and journal in one record (format 2).
    State = 4,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::State => "state",
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
    // Version stays 0 ("as compatible since"): this writer adds nothing
    // to format 2, and readers from before the field need zero here.
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
    /// The format the writer used (at least [`OLDEST_COMPATIBLE`]). Above
    /// [`RECORD_VERSION`], the payload may carry additions this reader
    /// skips (docs/FORMAT.md, "Compatibility").
    pub version: u16,
}

/// Why a copy is not valid (for `status` diagnostics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// All zero: never written.
    Blank,
    BadMagic,
    WrongKind(u16),
    /// Compatible-since of a format this reader does not know (newer), or
    /// format 1.
    UnknownVersion(u16),
    /// A version field below the record's compatible-since.
    BadVersion(u16),
    BadLength(u32),
    BadCrc,
    NonZeroPadding,
    /// Envelope valid (CRC and all) but the payload does not decode: the
    /// reader used the other copy.
    BadPayload,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Blank => f.write_str("blank"),
            Invalid::BadMagic => f.write_str("no record magic"),
            Invalid::WrongKind(k) => write!(f, "holds record kind {k}"),
            Invalid::UnknownVersion(v) => write!(f, "record version {v} unknown"),
            Invalid::BadVersion(v) => write!(f, "version {v} below its compatible-since"),
            Invalid::BadLength(l) => write!(f, "payload length {l} out of range"),
            Invalid::BadCrc => f.write_str("CRC mismatch (torn or corrupt)"),
            Invalid::NonZeroPadding => f.write_str("non-zero reserved bytes"),
            Invalid::BadPayload => f.write_str("CRC valid but the payload does not decode"),
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
    // Compatible-since before kind: a format-1 block (kinds 1-3) reads
    // as "version 1", which is what the caller needs to explain.
    let since = u16_at(b, 10);
    if !(OLDEST_COMPATIBLE..=RECORD_VERSION).contains(&since) {
        return Err(Invalid::UnknownVersion(since));
    }
    let version = match u16_at(b, 24) {
        0 => since,
        v if v < since => return Err(Invalid::BadVersion(v)),
        v => v,
    };
    let k = u16_at(b, 8);
    if k != kind as u16 {
        return Err(Invalid::WrongKind(k));
    }
    let len = u32_at(b, 12);
    if len as usize > MAX_PAYLOAD {
        return Err(Invalid::BadLength(len));
    }
    let end = RECORD_HEADER_LEN + len as usize;
    // A newer version may have given the reserved header bytes a
    // meaning; this reader's own versions keep them zero.
    let reserved_ok = version > RECORD_VERSION || b[26..RECORD_HEADER_LEN].iter().all(|&x| x == 0);
    if !reserved_ok || b[end..CRC_AT].iter().any(|&x| x != 0) {
        return Err(Invalid::NonZeroPadding);
    }
    Ok(Copy {
        seq: u64_at(b, 16),
        payload: &b[RECORD_HEADER_LEN..end],
        version,
    })
}

/// Is sequence number `a` newer than `b`? With wrap-around: `a` is ahead
/// of `b` by 1..2^63 (mod 2^64). Equal, or exactly 2^63 apart: no.
pub fn seq_newer(a: u64, b: u64) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 1 << 63
}

/// Picks the newest valid copy of two: `(index, copy)`. On equal sequence
/// numbers (`format_state_area` writes both copies with 1) copy 0 wins,
/// deterministically; so does copy 0 when the two are exactly 2^63 apart
/// (never written by fwpack).
pub fn newest<'a>(copies: [&Result<Copy<'a>, Invalid>; 2]) -> Option<(usize, Copy<'a>)> {
    match (copies[0], copies[1]) {
        (Ok(a), Ok(b)) => Some(if seq_newer(b.seq, a.seq) {
            (1, *b)
        } else {
            (0, *a)
        }),
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
        let b = block(Kind::State, 7, b"hello");
        let c = decode(&b, Kind::State).unwrap();
        assert_eq!((c.seq, c.payload), (7, &b"hello"[..]));
        let mut other = b.clone();
        other[8] = 9;
        let crc = crc32c::crc32c(&other[..CRC_AT]);
        other[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&other, Kind::State), Err(Invalid::WrongKind(9)));
        // A format-1 block: kind 1, version 1, valid CRC.
        let mut v1 = b.clone();
        v1[8..12].copy_from_slice(&[1, 0, 1, 0]);
        let crc = crc32c::crc32c(&v1[..CRC_AT]);
        v1[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&v1, Kind::State), Err(Invalid::UnknownVersion(1)));
        assert_eq!(
            decode(&vec![0; RECORD_LEN], Kind::State),
            Err(Invalid::Blank)
        );
        assert!(encode(
            Kind::State,
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
        let old = block(Kind::State, 1, &[0xAA; 100]);
        let new = block(Kind::State, 2, &[0x55; 100]);
        for cut in (512..RECORD_LEN).step_by(512) {
            let mut torn = new[..cut].to_vec();
            torn.extend_from_slice(&old[cut..]);
            assert_eq!(
                decode(&torn, Kind::State),
                Err(Invalid::BadCrc),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let b = block(Kind::State, 3, b"layout payload");
        for bit in 0..RECORD_LEN * 8 {
            let mut x = b.clone();
            x[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&x, Kind::State).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn newest_valid_copy_wins() {
        let a = block(Kind::State, 4, b"a");
        let b = block(Kind::State, 5, b"b");
        let da = decode(&a, Kind::State);
        let db = decode(&b, Kind::State);
        assert_eq!(newest([&da, &db]).unwrap().0, 1);
        assert_eq!(newest([&db, &da]).unwrap().0, 0);
        let bad = decode(&[1u8; RECORD_LEN], Kind::State);
        assert_eq!(newest([&bad, &da]).unwrap().1.seq, 4);
        assert!(newest([&bad, &bad]).is_none());
    }

    #[test]
    fn sequence_wraps_instead_of_running_out() {
        assert!(seq_newer(0, u64::MAX));
        assert!(!seq_newer(u64::MAX, 0));
        assert!(seq_newer(u64::MAX, u64::MAX - 1));
        assert!(!seq_newer(7, 7));
        assert!(!seq_newer(1 << 63, 0) && !seq_newer(0, 1 << 63));
        let max = block(Kind::State, u64::MAX, b"old");
        let zero = block(Kind::State, 0, b"new");
        let (dm, dz) = (decode(&max, Kind::State), decode(&zero, Kind::State));
        assert_eq!(newest([&dm, &dz]).unwrap().1.payload, b"new");
        assert_eq!(newest([&dz, &dm]).unwrap().1.payload, b"new");
    }
}
