//! The fixed description of a target disk: where the state area is
//! ([`StateLocation`]), the slot groups and their A/B slots ([`Layout`]),
//! and the layout section of the state record.

use std::ops::Range;

use crate::codec::{get_str, get_u32, get_u64, put_str};
use crate::record::RECORD_LEN;
use crate::{Error, Result};

/// Where the state area lives unless configured otherwise: after an MBR
/// or a GPT (which ends at 17 KiB).
pub const DEFAULT_STATE_OFFSET: u64 = 512 * 1024;
/// Distance from copy 0 to copy 1 unless configured otherwise: 4 MiB, the
/// allocation unit of SD cards (and more than eMMC erase groups).
pub const DEFAULT_STATE_COPY_DISTANCE: u64 = 4 << 20;
/// Bytes reserved for each half (one 4 KiB record + 3 reserved blocks).
pub const STATE_HALF_LEN: u64 = 4 * RECORD_LEN as u64;
/// Maximum number of slot groups in a layout.
pub const MAX_GROUPS: usize = 16;
pub const BOARD_LEN: usize = 64;
pub const GROUP_NAME_LEN: usize = 32;
pub const LABEL_LEN: usize = 64;
/// Slot offsets and sizes must be multiples of this (4 KiB: every sector
/// size and the CRC block size divide it).
pub const SLOT_ALIGN: u64 = 4096;

/// Where a state area is: copy 0 at `offset`, copy 1 at `offset +
/// copy_distance`. Both are configured, never discovered (a reader that
/// lost copy 0 must still find copy 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StateLocation {
    pub offset: u64,
    pub copy_distance: u64,
}

impl Default for StateLocation {
    fn default() -> Self {
        StateLocation {
            offset: DEFAULT_STATE_OFFSET,
            copy_distance: DEFAULT_STATE_COPY_DISTANCE,
        }
    }
}

impl StateLocation {
    pub fn new(offset: u64, copy_distance: u64) -> StateLocation {
        StateLocation {
            offset,
            copy_distance,
        }
    }

    /// Byte offset of copy `copy` (0 or 1).
    pub fn copy_offset(&self, copy: usize) -> u64 {
        if copy == 0 {
            self.offset
        } else {
            self.offset.saturating_add(self.copy_distance)
        }
    }

    /// The two halves.
    pub fn halves(&self) -> [Range<u64>; 2] {
        [0, 1].map(|c| {
            let o = self.copy_offset(c);
            o..o.saturating_add(STATE_HALF_LEN)
        })
    }

    /// Everything from the start of copy 0 to the end of copy 1: what no
    /// slot or partition may overlap (the gap between the halves is part
    /// of the area, so a busy check of this one range covers both).
    pub fn span(&self) -> Range<u64> {
        self.offset..self.copy_offset(1).saturating_add(STATE_HALF_LEN)
    }

    /// Alignment, non-overlapping halves, no overflow.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| {
            Err(Error::InvalidInput {
                what: "state area location",
                value: format!(
                    "offset {} copy distance {}",
                    self.offset, self.copy_distance
                ),
                reason: m,
            })
        };
        if !self.offset.is_multiple_of(SLOT_ALIGN) || !self.copy_distance.is_multiple_of(SLOT_ALIGN)
        {
            return bad(format!(
                "offset and copy distance must be multiples of {SLOT_ALIGN}"
            ));
        }
        if self.copy_distance < STATE_HALF_LEN {
            return bad(format!(
                "the copy distance must be at least {STATE_HALF_LEN} (one half); use the medium's erase-block size or more (SD cards: 4 MiB)"
            ));
        }
        if self
            .offset
            .checked_add(self.copy_distance)
            .and_then(|o| o.checked_add(STATE_HALF_LEN))
            .is_none()
        {
            return bad("offset + copy distance overflows".into());
        }
        Ok(())
    }
}

/// One half of an A/B pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }

    pub fn letter(self) -> char {
        match self {
            Slot::A => 'A',
            Slot::B => 'B',
        }
    }

    pub(crate) fn to_byte(self) -> u8 {
        self.letter() as u8
    }

    pub(crate) fn from_byte(b: u8) -> Option<Slot> {
        match b {
            b'A' => Some(Slot::A),
            b'B' => Some(Slot::B),
            _ => None,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.letter())
    }
}

impl std::str::FromStr for Slot {
    type Err = Error;
    fn from_str(s: &str) -> Result<Slot> {
        match s {
            "A" | "a" => Ok(Slot::A),
            "B" | "b" => Ok(Slot::B),
            _ => Err(Error::InvalidInput {
                what: "slot",
                value: s.to_string(),
                reason: "expected A or B".into(),
            }),
        }
    }
}

/// A byte range of the target disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRange {
    pub offset: u64,
    pub size: u64,
}

impl SlotRange {
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.size)
    }

    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset.saturating_add(self.size)
    }
}

/// A named pair of slots ("system", "boot"): image segments name a group
/// as their target and land in the group's inactive slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotGroup {
    pub name: String,
    /// Indexed by [`Slot::index`].
    pub slots: [SlotRange; 2],
}

impl SlotGroup {
    pub fn slot(&self, s: Slot) -> SlotRange {
        self.slots[s.index()]
    }
}

/// The fixed description of a target disk: board, where the state area
/// is, and the slot groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub board: String,
    pub state_offset: u64,
    pub copy_distance: u64,
    pub groups: Vec<SlotGroup>,
}

/// Layout section of the state payload: 88 bytes + 64 per group.
pub(crate) const LAYOUT_FIXED_LEN: usize = 88;

impl Layout {
    /// Builds and validates a layout.
    pub fn new(board: &str, loc: StateLocation, groups: Vec<SlotGroup>) -> Result<Layout> {
        let l = Layout {
            board: board.to_string(),
            state_offset: loc.offset,
            copy_distance: loc.copy_distance,
            groups,
        };
        l.validate()?;
        Ok(l)
    }

    pub fn group(&self, name: &str) -> Option<&SlotGroup> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn location(&self) -> StateLocation {
        StateLocation::new(self.state_offset, self.copy_distance)
    }

    /// The whole state area, both halves and the gap between them
    /// ([`StateLocation::span`]).
    pub fn state_range(&self) -> Range<u64> {
        self.location().span()
    }

    /// The smallest disk that holds the state area and every slot.
    pub fn min_disk_size(&self) -> u64 {
        self.groups
            .iter()
            .flat_map(|g| g.slots.iter())
            .filter_map(SlotRange::end)
            .chain([self.state_range().end])
            .max()
            .unwrap_or(0)
    }

    /// Rules: a board name; a valid state location; 1–16 uniquely named
    /// groups; 4 KiB-aligned, non-empty slots; nothing overlaps anything
    /// (the state area counts from its first half to the end of its
    /// second).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BadLayout(m));
        if self.board.is_empty() || self.board.len() > BOARD_LEN || self.board.contains('\0') {
            return bad(format!(
                "board name must be 1..={BOARD_LEN} bytes without NUL, got {:?}",
                self.board
            ));
        }
        if let Err(e) = self.location().validate() {
            return bad(e.to_string());
        }
        if self.groups.is_empty() || self.groups.len() > MAX_GROUPS {
            return bad(format!(
                "need 1..={MAX_GROUPS} slot groups, got {}",
                self.groups.len()
            ));
        }
        let mut ranges: Vec<(String, Range<u64>)> = vec![("state area".into(), self.state_range())];
        for (i, g) in self.groups.iter().enumerate() {
            check_name(&g.name)?;
            if self.groups[..i].iter().any(|o| o.name == g.name) {
                return bad(format!("slot group `{}` defined twice", g.name));
            }
            for s in [Slot::A, Slot::B] {
                let r = g.slot(s);
                let what = format!("slot {}/{s}", g.name);
                if r.size == 0 || r.offset % SLOT_ALIGN != 0 || r.size % SLOT_ALIGN != 0 {
                    return bad(format!(
                        "{what}: offset {} and size {} must be non-zero multiples of {SLOT_ALIGN}",
                        r.offset, r.size
                    ));
                }
                if r.end().is_none() {
                    return bad(format!("{what}: offset + size overflows"));
                }
                ranges.push((what, r.range()));
            }
        }
        // At most 33 ranges: sorting is not worth it.
        for (i, (a, ra)) in ranges.iter().enumerate() {
            for (b, rb) in &ranges[..i] {
                if ra.start < rb.end && rb.start < ra.end {
                    return bad(format!(
                        "{a} (bytes {}..{}) overlaps {b} (bytes {}..{})",
                        ra.start, ra.end, rb.start, rb.end
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn encoded_len(&self) -> usize {
        LAYOUT_FIXED_LEN + 64 * self.groups.len()
    }

    pub(crate) fn encode(&self, p: &mut [u8]) {
        put_str(&mut p[0..BOARD_LEN], &self.board);
        p[64..72].copy_from_slice(&self.state_offset.to_le_bytes());
        p[72..80].copy_from_slice(&self.copy_distance.to_le_bytes());
        p[80..84].copy_from_slice(&(self.groups.len() as u32).to_le_bytes());
        for (i, g) in self.groups.iter().enumerate() {
            let at = LAYOUT_FIXED_LEN + 64 * i;
            let e = &mut p[at..at + 64];
            put_str(&mut e[0..GROUP_NAME_LEN], &g.name);
            e[32..40].copy_from_slice(&g.slots[0].offset.to_le_bytes());
            e[40..48].copy_from_slice(&g.slots[0].size.to_le_bytes());
            e[48..56].copy_from_slice(&g.slots[1].offset.to_le_bytes());
            e[56..64].copy_from_slice(&g.slots[1].size.to_le_bytes());
        }
    }

    pub(crate) fn decode(p: &[u8]) -> Result<Layout> {
        let bad = |m: &str| Error::BadStateArea(format!("layout: {m}"));
        let count = get_u32(p, 80).ok_or_else(|| bad("too short"))? as usize;
        if count > MAX_GROUPS {
            return Err(bad("too many slot groups"));
        }
        if p.len() != LAYOUT_FIXED_LEN + 64 * count {
            return Err(bad("length does not match its group count"));
        }
        let mut groups = Vec::with_capacity(count);
        for i in 0..count {
            let at = LAYOUT_FIXED_LEN + 64 * i;
            let e = &p[at..at + 64];
            let at = |o: usize| get_u64(e, o).unwrap_or(0);
            groups.push(SlotGroup {
                name: get_str(&e[0..GROUP_NAME_LEN]).ok_or_else(|| bad("group name"))?,
                slots: [
                    SlotRange {
                        offset: at(32),
                        size: at(40),
                    },
                    SlotRange {
                        offset: at(48),
                        size: at(56),
                    },
                ],
            });
        }
        let layout = Layout {
            board: get_str(&p[0..BOARD_LEN]).ok_or_else(|| bad("board name"))?,
            state_offset: get_u64(p, 64).unwrap_or(0),
            copy_distance: get_u64(p, 72).unwrap_or(0),
            groups,
        };
        if p[84..88].iter().any(|&b| b != 0) {
            return Err(bad("non-zero reserved bytes"));
        }
        layout
            .validate()
            .map_err(|e| Error::BadStateArea(format!("layout: {e}")))?;
        Ok(layout)
    }
}

pub(crate) fn check_name(s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= GROUP_NAME_LEN
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadLayout(format!(
            "slot group name {s:?}: 1..={GROUP_NAME_LEN} of ASCII letters, digits, - _ . +"
        )))
    }
}
