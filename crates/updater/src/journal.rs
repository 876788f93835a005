//! The apply journal: how far an interrupted apply got, so it can be
//! continued rather than restarted.

use crate::codec::{get_u32, get_u64};
use crate::layout::Slot;
use crate::{Error, Result};

/// Progress of an apply, durable at checkpoints. Everything before
/// (`segment`, `offset`) of image `image_id` is on slot `slot`, synced
/// (and read back when `verified`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Journal {
    pub image_id: [u8; 32],
    pub slot: Slot,
    /// Segments before this one are complete.
    pub segment: u32,
    /// Raw bytes of `segment` that are done (a multiple of the chunk size,
    /// or the segment's length).
    pub offset: u64,
    pub verified: bool,
    /// Raw bytes done over all segments (for progress reports).
    pub done_bytes: u64,
    /// Where the image came from (a path or URL; empty when not given),
    /// so an interrupted apply can be continued without naming it again.
    /// A hint like the rest: the image id decides whether it is the same
    /// image.
    pub source: String,
}

pub(crate) const JOURNAL_PAYLOAD_LEN: usize = 56;
/// Longest journal source kept; longer ones are not recorded.
pub const MAX_JOURNAL_SOURCE: usize = 1024;

impl Journal {
    pub(crate) fn encode(j: Option<&Journal>, p: &mut [u8]) {
        if let Some(j) = j {
            p[0] = 1;
            p[1] = j.slot.to_byte();
            p[2] = u8::from(j.verified);
            p[4..8].copy_from_slice(&j.segment.to_le_bytes());
            p[8..16].copy_from_slice(&j.offset.to_le_bytes());
            p[16..48].copy_from_slice(&j.image_id);
            p[48..56].copy_from_slice(&j.done_bytes.to_le_bytes());
        }
    }

    pub(crate) fn decode(p: &[u8]) -> Result<Option<Journal>> {
        let bad = |m: &str| Error::BadStateArea(format!("journal: {m}"));
        if p.len() != JOURNAL_PAYLOAD_LEN {
            return Err(bad("wrong length"));
        }
        match p[0] {
            0 if p.iter().all(|&b| b == 0) => Ok(None),
            1 if p[2] <= 1 && p[3] == 0 => Ok(Some(Journal {
                slot: Slot::from_byte(p[1]).ok_or_else(|| bad("bad slot"))?,
                verified: p[2] == 1,
                segment: get_u32(p, 4).unwrap_or(0),
                offset: get_u64(p, 8).unwrap_or(0),
                image_id: p[16..48].try_into().map_err(|_| bad("image id"))?,
                done_bytes: get_u64(p, 48).unwrap_or(0),
                source: String::new(),
            })),
            _ => Err(bad("bad state or reserved bytes")),
        }
    }
}

/// The optional journal-source section after the layout: u16 length,
/// then that many bytes of UTF-8, nothing after. In a record of a newer
/// version than this reader knows (`newer`), the length is always there
/// (0: no source) and what follows the source is additions this reader
/// skips.
pub(crate) fn decode_source(p: &[u8], newer: bool) -> Result<Option<String>> {
    let bad = |m: &str| Error::BadStateArea(format!("journal source: {m}"));
    if p.is_empty() {
        return Ok(None);
    }
    let n = p
        .get(..2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        .ok_or_else(|| bad("truncated length"))?;
    if newer && n == 0 {
        return Ok(None);
    }
    let fits = if newer {
        p.len() >= 2 + n
    } else {
        p.len() == 2 + n
    };
    if n == 0 || n > MAX_JOURNAL_SOURCE || !fits {
        return Err(bad("length does not match"));
    }
    String::from_utf8(p[2..2 + n].to_vec())
        .map(Some)
        .map_err(|_| bad("not UTF-8"))
}
