//! The state area: a small region of the target disk (by default at
//! 512 KiB, between the partition table and the first partition) holding
//! three redundant records: the slot layout, the A/B boot state and the
//! apply journal. Byte layout in docs/FORMAT.md.
//!
//! Every change is a whole-record write to the copy that does not hold
//! the newest valid version, followed by a sync, so after a power cut the
//! record reads either as before or as after the change.

use std::ops::Range;

use crate::record::{self, Invalid, Kind, RECORD_LEN};
use crate::storage::{AlignedBuf, Storage};
use crate::{Error, Result};

/// Where the state area lives unless configured otherwise: after an MBR
/// or a GPT (which ends at 17 KiB) and before the first partition at 1 MiB.
pub const DEFAULT_STATE_OFFSET: u64 = 512 * 1024;
/// Bytes reserved for the state area (8 blocks; 6 used).
pub const STATE_AREA_LEN: u64 = 8 * RECORD_LEN as u64;
/// Maximum number of slot groups in a layout.
pub const MAX_GROUPS: usize = 16;
pub const BOARD_LEN: usize = 64;
pub const GROUP_NAME_LEN: usize = 32;
pub const LABEL_LEN: usize = 64;
/// Slot offsets and sizes must be multiples of this (4 KiB: every sector
/// size and the CRC block size divide it).
pub const SLOT_ALIGN: u64 = 4096;

const RECORDS_USED: usize = 6;

/// Block index (within the area) of copy `copy` of record `kind`.
fn block_of(kind: Kind, copy: usize) -> u64 {
    let base = match kind {
        Kind::Layout => 0,
        Kind::Boot => 2,
        Kind::Journal => 4,
    };
    base + copy as u64
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

    fn to_byte(self) -> u8 {
        self.letter() as u8
    }

    fn from_byte(b: u8) -> Option<Slot> {
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

/// The fixed description of a target disk: board and slot groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub board: String,
    pub state_offset: u64,
    pub groups: Vec<SlotGroup>,
}

impl Layout {
    /// Builds and validates a layout.
    pub fn new(board: &str, state_offset: u64, groups: Vec<SlotGroup>) -> Result<Layout> {
        let l = Layout {
            board: board.to_string(),
            state_offset,
            groups,
        };
        l.validate()?;
        Ok(l)
    }

    pub fn group(&self, name: &str) -> Option<&SlotGroup> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn state_range(&self) -> Range<u64> {
        self.state_offset..self.state_offset.saturating_add(STATE_AREA_LEN)
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

    /// Rules: a board name; an aligned state area; 1–16 uniquely named
    /// groups; 4 KiB-aligned, non-empty slots; nothing overlaps anything.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BadLayout(m));
        if self.board.is_empty() || self.board.len() > BOARD_LEN || self.board.contains('\0') {
            return bad(format!(
                "board name must be 1..={BOARD_LEN} bytes without NUL, got {:?}",
                self.board
            ));
        }
        if !self.state_offset.is_multiple_of(SLOT_ALIGN)
            || self.state_offset.checked_add(STATE_AREA_LEN).is_none()
        {
            return bad(format!(
                "state area offset {} is not a multiple of {SLOT_ALIGN}",
                self.state_offset
            ));
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
        for (i, (a, ra)) in ranges.iter().enumerate() {
            for (b, rb) in &ranges[..i] {
                if ra.start < rb.end && rb.start < ra.end {
                    return bad(format!("{a} overlaps {b}"));
                }
            }
        }
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        let mut p = vec![0u8; 80 + 64 * self.groups.len()];
        put_str(&mut p[0..BOARD_LEN], &self.board);
        p[64..72].copy_from_slice(&self.state_offset.to_le_bytes());
        p[72..76].copy_from_slice(&(self.groups.len() as u32).to_le_bytes());
        for (i, g) in self.groups.iter().enumerate() {
            let e = &mut p[80 + 64 * i..80 + 64 * (i + 1)];
            put_str(&mut e[0..GROUP_NAME_LEN], &g.name);
            e[32..40].copy_from_slice(&g.slots[0].offset.to_le_bytes());
            e[40..48].copy_from_slice(&g.slots[0].size.to_le_bytes());
            e[48..56].copy_from_slice(&g.slots[1].offset.to_le_bytes());
            e[56..64].copy_from_slice(&g.slots[1].size.to_le_bytes());
        }
        p
    }

    fn decode(p: &[u8]) -> Result<Layout> {
        let bad = |m: &str| Error::BadStateArea(format!("layout record: {m}"));
        let count = get_u32(p, 72).ok_or_else(|| bad("too short"))? as usize;
        if count > MAX_GROUPS {
            return Err(bad("too many slot groups"));
        }
        if p.len() != 80 + 64 * count {
            return Err(bad("length does not match its group count"));
        }
        let mut groups = Vec::with_capacity(count);
        for i in 0..count {
            let e = &p[80 + 64 * i..80 + 64 * (i + 1)];
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
            groups,
        };
        if p[76..80].iter().any(|&b| b != 0) {
            return Err(bad("non-zero reserved bytes"));
        }
        layout
            .validate()
            .map_err(|e| Error::BadStateArea(format!("layout record: {e}")))?;
        Ok(layout)
    }
}

fn check_name(s: &str) -> Result<()> {
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

/// Life cycle of a slot's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Nothing known to be there.
    Empty,
    /// Being written (or a write was interrupted): never bootable.
    Updating,
    /// Written, synced and verified: may be made pending or active.
    Complete,
}

impl SlotState {
    pub fn name(self) -> &'static str {
        match self {
            SlotState::Empty => "empty",
            SlotState::Updating => "updating",
            SlotState::Complete => "complete",
        }
    }
}

/// What the boot state knows about one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    pub state: SlotState,
    /// Payload version of the image in (or going into) the slot.
    pub version: u64,
    /// SHA-256 of that image's signed head (all zero: unknown, e.g. the
    /// factory image).
    pub image_id: [u8; 32],
    pub label: String,
}

impl SlotInfo {
    pub fn empty() -> SlotInfo {
        SlotInfo {
            state: SlotState::Empty,
            version: 0,
            image_id: [0; 32],
            label: String::new(),
        }
    }

    fn encode(&self, e: &mut [u8]) {
        e[0] = match self.state {
            SlotState::Empty => 0,
            SlotState::Updating => 1,
            SlotState::Complete => 2,
        };
        e[8..16].copy_from_slice(&self.version.to_le_bytes());
        e[16..48].copy_from_slice(&self.image_id);
        put_str(&mut e[48..48 + LABEL_LEN], &self.label);
    }

    fn decode(e: &[u8]) -> Option<SlotInfo> {
        let state = match e.first()? {
            0 => SlotState::Empty,
            1 => SlotState::Updating,
            2 => SlotState::Complete,
            _ => return None,
        };
        if e.get(1..8)?.iter().chain(e.get(112..128)?).any(|&b| b != 0) {
            return None;
        }
        Some(SlotInfo {
            state,
            version: get_u64(e, 8)?,
            image_id: e.get(16..48)?.try_into().ok()?,
            label: get_str(e.get(48..48 + LABEL_LEN)?)?,
        })
    }
}

/// The A/B boot state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootState {
    /// The slot that boots when nothing is being tried.
    pub active: Slot,
    /// A complete slot to try on the next boots.
    pub pending: Option<Slot>,
    /// Boots of the pending slot left before falling back.
    pub tries_left: u8,
    /// The active slot was confirmed good since it became active.
    pub confirmed: bool,
    /// Lowest payload version this device accepts (raised on confirm).
    pub rollback_floor: u64,
    /// Indexed by [`Slot::index`].
    pub slots: [SlotInfo; 2],
}

/// What [`BootState::boot_attempt`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootDecision {
    pub slot: Slot,
    /// This is a trial boot of the pending slot.
    pub trial: bool,
    /// A pending slot whose tries ran out (or that was not complete) was
    /// dropped, and the active slot boots instead.
    pub fell_back_from: Option<Slot>,
}

const BOOT_PAYLOAD_LEN: usize = 16 + 2 * 128;

impl BootState {
    /// A fresh device: `active` holds a trusted, confirmed factory image of
    /// `version`; the other slot is empty.
    pub fn initial(active: Slot, version: u64, label: &str) -> Result<BootState> {
        check_label(label)?;
        let mut slots = [SlotInfo::empty(), SlotInfo::empty()];
        slots[active.index()] = SlotInfo {
            state: SlotState::Complete,
            version,
            image_id: [0; 32],
            label: label.to_string(),
        };
        Ok(BootState {
            active,
            pending: None,
            tries_left: 0,
            confirmed: true,
            rollback_floor: version,
            slots,
        })
    }

    pub fn slot(&self, s: Slot) -> &SlotInfo {
        &self.slots[s.index()]
    }

    pub fn slot_mut(&mut self, s: Slot) -> &mut SlotInfo {
        &mut self.slots[s.index()]
    }

    /// The slot an apply writes when none is named.
    pub fn inactive(&self) -> Slot {
        self.active.other()
    }

    /// Marks `slot` as being written with `info`'s image. The slot stops
    /// being pending: a slot is never bootable while it is written.
    pub fn mark_updating(&mut self, slot: Slot, version: u64, image_id: [u8; 32], label: &str) {
        if self.pending == Some(slot) {
            self.pending = None;
            self.tries_left = 0;
        }
        *self.slot_mut(slot) = SlotInfo {
            state: SlotState::Updating,
            version,
            image_id,
            label: label.to_string(),
        };
    }

    /// Schedules trial boots of `slot`, which must be complete and not the
    /// active slot.
    pub fn set_pending(&mut self, slot: Slot, tries: u8) -> Result<()> {
        let st = self.slot(slot).state;
        if st != SlotState::Complete {
            return Err(Error::NotComplete {
                slot: slot.letter(),
                state: st.name(),
            });
        }
        if slot == self.active {
            return Err(Error::ActiveSlot(slot.letter()));
        }
        if tries == 0 {
            return Err(Error::InvalidInput {
                what: "tries",
                value: "0".into(),
                reason: "a pending slot needs at least one try".into(),
            });
        }
        self.pending = Some(slot);
        self.tries_left = tries;
        Ok(())
    }

    /// Called once per boot, before choosing the root: spends one try of
    /// the pending slot, or drops it when none are left. The caller must
    /// persist the result before booting (see [`StateArea::boot_attempt`]).
    pub fn boot_attempt(&mut self) -> BootDecision {
        let active = self.active;
        match self.pending {
            Some(p) if p != active && self.slot(p).state == SlotState::Complete => {
                if self.tries_left > 0 {
                    self.tries_left -= 1;
                    BootDecision {
                        slot: p,
                        trial: true,
                        fell_back_from: None,
                    }
                } else {
                    self.pending = None;
                    BootDecision {
                        slot: active,
                        trial: false,
                        fell_back_from: Some(p),
                    }
                }
            }
            Some(p) => {
                // Defensive: a pending slot that is not complete is never
                // booted, whatever wrote this record.
                self.pending = None;
                self.tries_left = 0;
                BootDecision {
                    slot: active,
                    trial: false,
                    fell_back_from: Some(p),
                }
            }
            None => BootDecision {
                slot: active,
                trial: false,
                fell_back_from: None,
            },
        }
    }

    /// The running system (booted from `booted`) declares itself good. If
    /// it is the pending slot, it becomes active; the rollback floor rises
    /// to its version.
    pub fn confirm(&mut self, booted: Slot) -> Result<()> {
        if self.pending == Some(booted) && self.slot(booted).state == SlotState::Complete {
            self.active = booted;
            self.pending = None;
            self.tries_left = 0;
        } else if self.active != booted {
            return Err(Error::NotBooted(booted.letter()));
        }
        self.confirmed = true;
        self.rollback_floor = self.rollback_floor.max(self.slot(booted).version);
        Ok(())
    }

    /// Abandons the pending slot (e.g. its health check failed): the
    /// active slot boots next.
    pub fn fallback(&mut self) {
        self.pending = None;
        self.tries_left = 0;
    }

    fn encode(&self) -> Vec<u8> {
        let mut p = vec![0u8; BOOT_PAYLOAD_LEN];
        p[0] = self.active.to_byte();
        p[1] = self.pending.map_or(0, Slot::to_byte);
        p[2] = self.tries_left;
        p[3] = u8::from(self.confirmed);
        p[8..16].copy_from_slice(&self.rollback_floor.to_le_bytes());
        self.slots[0].encode(&mut p[16..144]);
        self.slots[1].encode(&mut p[144..272]);
        p
    }

    fn decode(p: &[u8]) -> Result<BootState> {
        let bad = |m: &str| Error::BadStateArea(format!("boot-state record: {m}"));
        if p.len() != BOOT_PAYLOAD_LEN {
            return Err(bad("wrong length"));
        }
        let pending = match p[1] {
            0 => None,
            b => Some(Slot::from_byte(b).ok_or_else(|| bad("bad pending slot"))?),
        };
        if p[3] > 1 || p[4..8].iter().any(|&b| b != 0) {
            return Err(bad("bad flags or reserved bytes"));
        }
        let slot = |r: Range<usize>| SlotInfo::decode(&p[r]).ok_or_else(|| bad("bad slot entry"));
        Ok(BootState {
            active: Slot::from_byte(p[0]).ok_or_else(|| bad("bad active slot"))?,
            pending,
            tries_left: p[2],
            confirmed: p[3] == 1,
            rollback_floor: get_u64(p, 8).unwrap_or(0),
            slots: [slot(16..144)?, slot(144..272)?],
        })
    }
}

fn check_label(label: &str) -> Result<()> {
    if label.len() > LABEL_LEN || label.contains('\0') {
        return Err(Error::InvalidInput {
            what: "version label",
            value: label.to_string(),
            reason: format!("at most {LABEL_LEN} bytes, no NUL"),
        });
    }
    Ok(())
}

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
}

const JOURNAL_PAYLOAD_LEN: usize = 56;

impl Journal {
    fn encode(j: Option<&Journal>) -> Vec<u8> {
        let mut p = vec![0u8; JOURNAL_PAYLOAD_LEN];
        if let Some(j) = j {
            p[0] = 1;
            p[1] = j.slot.to_byte();
            p[2] = u8::from(j.verified);
            p[4..8].copy_from_slice(&j.segment.to_le_bytes());
            p[8..16].copy_from_slice(&j.offset.to_le_bytes());
            p[16..48].copy_from_slice(&j.image_id);
            p[48..56].copy_from_slice(&j.done_bytes.to_le_bytes());
        }
        p
    }

    fn decode(p: &[u8]) -> Result<Option<Journal>> {
        let bad = |m: &str| Error::BadStateArea(format!("journal record: {m}"));
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
            })),
            _ => Err(bad("bad state or reserved bytes")),
        }
    }
}

/// Health of one record's two copies, for `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHealth {
    pub kind: Kind,
    /// Per copy: its sequence number, or why it is not valid.
    pub copies: [std::result::Result<u64, Invalid>; 2],
    /// Which copy is in use.
    pub newest: Option<usize>,
}

/// Bookkeeping for one record: the copy holding the newest valid version.
#[derive(Clone, Copy, Debug)]
struct Tracked {
    seq: u64,
    newest: Option<usize>,
}

/// The state area of one target, read into memory. Changes go through
/// methods that write the other copy and sync before returning.
#[derive(Clone, Debug)]
pub struct StateArea {
    offset: u64,
    layout: Layout,
    boot: BootState,
    journal: Option<Journal>,
    tracked: [Tracked; 3],
    health: [RecordHealth; 3],
}

fn kind_index(k: Kind) -> usize {
    match k {
        Kind::Layout => 0,
        Kind::Boot => 1,
        Kind::Journal => 2,
    }
}

fn check_area_fits(storage: &dyn Storage, offset: u64) -> Result<()> {
    let g = storage.geometry();
    if u64::from(g.logical) > RECORD_LEN as u64 {
        return Err(Error::InvalidInput {
            what: "target sector size",
            value: g.logical.to_string(),
            reason: "sectors larger than 4096 bytes are not supported".into(),
        });
    }
    if !offset.is_multiple_of(SLOT_ALIGN) {
        return Err(Error::InvalidInput {
            what: "state area offset",
            value: offset.to_string(),
            reason: format!("must be a multiple of {SLOT_ALIGN}"),
        });
    }
    match offset.checked_add(STATE_AREA_LEN) {
        Some(end) if end <= storage.size() => Ok(()),
        _ => Err(Error::NoStateArea { offset }),
    }
}

impl StateArea {
    /// Reads the area at `offset`. Fails if the layout or the boot state
    /// has no valid copy; a missing journal just means "no apply running".
    pub fn read(storage: &mut dyn Storage, offset: u64) -> Result<StateArea> {
        let (blocks, health) = read_blocks(storage, offset)?;
        let copy = |k: Kind, c: usize| {
            &blocks.as_slice()[(block_of(k, c) as usize) * RECORD_LEN..][..RECORD_LEN]
        };
        let mut tracked = [Tracked {
            seq: 0,
            newest: None,
        }; 3];
        let mut payloads: [Option<&[u8]>; 3] = [None; 3];
        for k in [Kind::Layout, Kind::Boot, Kind::Journal] {
            let d = [record::decode(copy(k, 0), k), record::decode(copy(k, 1), k)];
            if let Some((i, c)) = record::newest([&d[0], &d[1]]) {
                tracked[kind_index(k)] = Tracked {
                    seq: c.seq,
                    newest: Some(i),
                };
                payloads[kind_index(k)] = Some(c.payload);
            }
        }
        let layout = match payloads[0] {
            Some(p) => Layout::decode(p)?,
            None if health[0].copies.iter().all(|c| *c == Err(Invalid::Blank)) => {
                return Err(Error::NoStateArea { offset })
            }
            None => {
                return Err(Error::BadStateArea(format!(
                    "no valid layout record copy ({}; {})",
                    health[0].copies[0]
                        .err()
                        .map_or(String::new(), |e| e.to_string()),
                    health[0].copies[1]
                        .err()
                        .map_or(String::new(), |e| e.to_string()),
                )))
            }
        };
        if layout.state_offset != offset {
            return Err(Error::BadStateArea(format!(
                "layout record says the area is at {}, but it was read at {offset}",
                layout.state_offset
            )));
        }
        let boot = match payloads[1] {
            Some(p) => BootState::decode(p)?,
            None => {
                return Err(Error::BadStateArea(
                    "no valid boot-state record copy".into(),
                ))
            }
        };
        // A journal that does not decode is only lost progress: the next
        // apply starts from zero. Never a reason to refuse to boot.
        let journal = payloads[2].and_then(|p| Journal::decode(p).ok()).flatten();
        Ok(StateArea {
            offset,
            layout,
            boot,
            journal,
            tracked,
            health,
        })
    }

    /// Per-copy health of the three records, even when [`Self::read`]
    /// would fail.
    pub fn diagnose(storage: &mut dyn Storage, offset: u64) -> Result<[RecordHealth; 3]> {
        Ok(read_blocks(storage, offset)?.1)
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn boot(&self) -> &BootState {
        &self.boot
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// Health as found by the last [`Self::read`].
    pub fn health(&self) -> &[RecordHealth; 3] {
        &self.health
    }

    /// Replaces the boot state (durable when this returns).
    pub fn write_boot(&mut self, storage: &mut dyn Storage, boot: BootState) -> Result<()> {
        for s in &boot.slots {
            check_label(&s.label)?;
        }
        self.write_record(storage, Kind::Boot, &boot.encode())?;
        self.boot = boot;
        Ok(())
    }

    /// Replaces the journal; `None` clears it (durable when this returns).
    pub fn write_journal(&mut self, storage: &mut dyn Storage, j: Option<Journal>) -> Result<()> {
        self.write_record(storage, Kind::Journal, &Journal::encode(j.as_ref()))?;
        self.journal = j;
        Ok(())
    }

    /// Changes the boot state with `f` and persists it if it changed.
    pub fn update_boot<T>(
        &mut self,
        storage: &mut dyn Storage,
        f: impl FnOnce(&mut BootState) -> Result<T>,
    ) -> Result<T> {
        let mut b = self.boot.clone();
        let out = f(&mut b)?;
        if b != self.boot {
            self.write_boot(storage, b)?;
        }
        Ok(out)
    }

    /// Persisted [`BootState::boot_attempt`]: durable before it returns,
    /// so a crash during the boot it decides still counts the try.
    pub fn boot_attempt(&mut self, storage: &mut dyn Storage) -> Result<BootDecision> {
        self.update_boot(storage, |b| Ok(b.boot_attempt()))
    }

    /// Persisted [`BootState::confirm`].
    pub fn confirm(&mut self, storage: &mut dyn Storage, booted: Slot) -> Result<()> {
        self.update_boot(storage, |b| b.confirm(booted))
    }

    /// Persisted [`BootState::fallback`].
    pub fn fallback(&mut self, storage: &mut dyn Storage) -> Result<()> {
        self.update_boot(storage, |b| {
            b.fallback();
            Ok(())
        })
    }

    /// Persisted [`BootState::set_pending`].
    pub fn set_pending(&mut self, storage: &mut dyn Storage, slot: Slot, tries: u8) -> Result<()> {
        self.update_boot(storage, |b| b.set_pending(slot, tries))
    }

    fn write_record(
        &mut self,
        storage: &mut dyn Storage,
        kind: Kind,
        payload: &[u8],
    ) -> Result<()> {
        let t = self.tracked[kind_index(kind)];
        // Never the copy holding the newest valid version: if this write
        // is torn or lost, that version is still there.
        let copy = t.newest.map_or(0, |i| 1 - i);
        let seq = t.seq.checked_add(1).ok_or_else(|| {
            Error::BadStateArea(format!("{} sequence number exhausted", kind.name()))
        })?;
        let mut buf = AlignedBuf::new(RECORD_LEN, storage.geometry().mem_align());
        record::encode(kind, seq, payload, buf.as_mut_slice()).map_err(Error::BadStateArea)?;
        let at = self.offset + block_of(kind, copy) * RECORD_LEN as u64;
        let what = format!("writing {} record copy {copy}", kind.name());
        storage
            .write_at(at, buf.as_slice())
            .map_err(Error::io(what.clone()))?;
        storage.sync().map_err(Error::io(what))?;
        self.tracked[kind_index(kind)] = Tracked {
            seq,
            newest: Some(copy),
        };
        let h = &mut self.health[kind_index(kind)];
        h.copies[copy] = Ok(seq);
        h.newest = Some(copy);
        Ok(())
    }
}

type Blocks = (AlignedBuf, [RecordHealth; 3]);

fn read_blocks(storage: &mut dyn Storage, offset: u64) -> Result<Blocks> {
    check_area_fits(storage, offset)?;
    let len = RECORDS_USED * RECORD_LEN;
    let mut buf = AlignedBuf::new(len, storage.geometry().mem_align());
    storage
        .read_at(offset, buf.as_mut_slice())
        .map_err(Error::io("reading the state area"))?;
    let health = [Kind::Layout, Kind::Boot, Kind::Journal].map(|k| {
        let d = [0, 1].map(|c| {
            let at = block_of(k, c) as usize * RECORD_LEN;
            record::decode(&buf.as_slice()[at..at + RECORD_LEN], k)
        });
        RecordHealth {
            kind: k,
            copies: [d[0].map(|c| c.seq), d[1].map(|c| c.seq)],
            newest: record::newest([&d[0], &d[1]]).map(|(i, _)| i),
        }
    });
    Ok((buf, health))
}

/// The bytes of a freshly initialised state area ([`STATE_AREA_LEN`]
/// long), to be placed at `layout.state_offset` of a disk image. Both
/// copies of the layout and boot state are written (sequence 1), so a
/// single bad sector on a new card is already survivable.
pub fn format_state_area(layout: &Layout, boot: &BootState) -> Result<Vec<u8>> {
    layout.validate()?;
    for s in &boot.slots {
        check_label(&s.label)?;
    }
    let mut area = vec![0u8; STATE_AREA_LEN as usize];
    for (kind, payload) in [(Kind::Layout, layout.encode()), (Kind::Boot, boot.encode())] {
        for copy in 0..2 {
            let at = block_of(kind, copy) as usize * RECORD_LEN;
            record::encode(kind, 1, &payload, &mut area[at..at + RECORD_LEN])
                .map_err(Error::BadStateArea)?;
        }
    }
    Ok(area)
}

/// Writes a fresh state area onto `storage` (at `layout.state_offset`) and
/// syncs. Refuses a target too small for the layout.
pub fn init_state_area(storage: &mut dyn Storage, layout: &Layout, boot: &BootState) -> Result<()> {
    let area = format_state_area(layout, boot)?;
    check_area_fits(storage, layout.state_offset)?;
    let need = layout.min_disk_size();
    if need > storage.size() {
        return Err(Error::BadLayout(format!(
            "layout needs a target of at least {need} bytes, this one has {}",
            storage.size()
        )));
    }
    let mut buf = AlignedBuf::new(area.len(), storage.geometry().mem_align());
    buf.as_mut_slice().copy_from_slice(&area);
    storage
        .write_at(layout.state_offset, buf.as_slice())
        .map_err(Error::io("writing the state area"))?;
    storage.sync().map_err(Error::io("syncing the state area"))
}

fn put_str(field: &mut [u8], s: &str) {
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

fn get_str(field: &[u8]) -> Option<String> {
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    if field[end..].iter().any(|&c| c != 0) {
        return None;
    }
    std::str::from_utf8(&field[..end]).ok().map(str::to_owned)
}

fn get_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn get_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    const MIB: u64 = 1 << 20;

    fn layout() -> Layout {
        Layout::new(
            "test-board",
            DEFAULT_STATE_OFFSET,
            vec![SlotGroup {
                name: "system".into(),
                slots: [
                    SlotRange {
                        offset: MIB,
                        size: 4 * MIB,
                    },
                    SlotRange {
                        offset: 5 * MIB,
                        size: 4 * MIB,
                    },
                ],
            }],
        )
        .unwrap()
    }

    fn disk() -> MemStorage {
        let mut m = MemStorage::new(vec![0; 9 * MIB as usize]);
        init_state_area(
            &mut m,
            &layout(),
            &BootState::initial(Slot::A, 7, "v7").unwrap(),
        )
        .unwrap();
        m
    }

    fn complete(b: &mut BootState, s: Slot, version: u64) {
        *b.slot_mut(s) = SlotInfo {
            state: SlotState::Complete,
            version,
            image_id: [1; 32],
            label: String::new(),
        };
    }

    #[test]
    fn layout_rules() {
        let mut l = layout();
        assert_eq!(l.min_disk_size(), 9 * MIB);
        l.groups[0].slots[1].offset = 3 * MIB;
        assert!(matches!(l.validate(), Err(Error::BadLayout(m)) if m.contains("overlaps")));
        let mut l = layout();
        l.groups[0].slots[0].offset = DEFAULT_STATE_OFFSET + 4096;
        assert!(l.validate().is_err(), "slot over the state area");
        let mut l = layout();
        l.groups[0].slots[0].size = 1000;
        assert!(l.validate().is_err(), "unaligned size");
        let mut l = layout();
        l.groups.push(l.groups[0].clone());
        assert!(l.validate().is_err(), "duplicate group");
        let mut l = layout();
        l.groups[0].name = "bad name".into();
        assert!(l.validate().is_err());
    }

    #[test]
    fn state_area_roundtrip_and_copy_alternation() {
        let mut m = disk();
        let mut area = StateArea::read(&mut m, DEFAULT_STATE_OFFSET).unwrap();
        assert_eq!(area.layout(), &layout());
        assert_eq!(area.boot().active, Slot::A);
        assert_eq!(area.boot().slot(Slot::A).version, 7);
        assert!(area.journal().is_none());
        // Both copies written at init (seq 1); copy 0 wins the tie, so the
        // first change goes to copy 1, the next to copy 0.
        for (i, expect_copy) in [(0u8, 1usize), (1, 0), (2, 1)] {
            let mut b = area.boot().clone();
            b.tries_left = i;
            area.write_boot(&mut m, b).unwrap();
            assert_eq!(area.health()[1].newest, Some(expect_copy));
            let again = StateArea::read(&mut m, DEFAULT_STATE_OFFSET).unwrap();
            assert_eq!(again.boot().tries_left, i);
        }
    }

    #[test]
    fn a_damaged_copy_falls_back_to_the_other() {
        let mut m = disk();
        let mut area = StateArea::read(&mut m, DEFAULT_STATE_OFFSET).unwrap();
        let mut b = area.boot().clone();
        b.rollback_floor = 9;
        area.write_boot(&mut m, b).unwrap(); // copy 1, seq 2
                                             // Tear copy 1: the previous state (copy 0, seq 1) comes back.
        let at = (DEFAULT_STATE_OFFSET + 3 * 4096 + 1024) as usize;
        m.data[at..at + 512].fill(0xEE);
        let again = StateArea::read(&mut m, DEFAULT_STATE_OFFSET).unwrap();
        assert_eq!(again.boot().rollback_floor, 7);
        assert_eq!(again.health()[1].copies[1], Err(Invalid::BadCrc));
        // Both layout copies gone: a clear error, not a guess.
        for blk in 0..2 {
            let at = (DEFAULT_STATE_OFFSET + blk * 4096 + 100) as usize;
            m.data[at] ^= 1;
        }
        assert!(matches!(
            StateArea::read(&mut m, DEFAULT_STATE_OFFSET),
            Err(Error::BadStateArea(_))
        ));
        let blank = &mut MemStorage::new(vec![0; 2 * MIB as usize]);
        assert!(matches!(
            StateArea::read(blank, DEFAULT_STATE_OFFSET),
            Err(Error::NoStateArea { .. })
        ));
    }

    #[test]
    fn pending_slot_boots_its_tries_then_falls_back() {
        let mut b = BootState::initial(Slot::A, 1, "").unwrap();
        assert!(matches!(
            b.set_pending(Slot::B, 2),
            Err(Error::NotComplete { .. })
        ));
        complete(&mut b, Slot::B, 2);
        assert!(matches!(
            b.set_pending(Slot::A, 2),
            Err(Error::ActiveSlot('A'))
        ));
        b.set_pending(Slot::B, 2).unwrap();
        let d1 = b.boot_attempt();
        let d2 = b.boot_attempt();
        let d3 = b.boot_attempt();
        assert_eq!((d1.slot, d1.trial), (Slot::B, true));
        assert_eq!((d2.slot, d2.trial), (Slot::B, true));
        assert_eq!(d3.slot, Slot::A);
        assert_eq!(d3.fell_back_from, Some(Slot::B));
        assert_eq!(b.pending, None);
        assert_eq!(b.boot_attempt().slot, Slot::A);
        assert_eq!(b.active, Slot::A);
    }

    #[test]
    fn confirm_promotes_the_pending_slot_and_raises_the_floor() {
        let mut b = BootState::initial(Slot::A, 1, "").unwrap();
        complete(&mut b, Slot::B, 5);
        b.set_pending(Slot::B, 3).unwrap();
        assert_eq!(b.boot_attempt().slot, Slot::B);
        b.confirm(Slot::B).unwrap();
        assert_eq!((b.active, b.pending, b.rollback_floor), (Slot::B, None, 5));
        assert_eq!(b.boot_attempt().slot, Slot::B);
        // A slot that is neither active nor pending cannot confirm.
        assert!(matches!(b.confirm(Slot::A), Err(Error::NotBooted('A'))));
    }

    #[test]
    fn updating_slot_is_never_booted() {
        let mut b = BootState::initial(Slot::A, 1, "").unwrap();
        complete(&mut b, Slot::B, 2);
        b.set_pending(Slot::B, 3).unwrap();
        b.mark_updating(Slot::B, 3, [2; 32], "");
        assert_eq!(b.pending, None);
        // Even a record claiming otherwise (written by something else).
        b.pending = Some(Slot::B);
        b.tries_left = 3;
        let d = b.boot_attempt();
        assert_eq!((d.slot, d.fell_back_from), (Slot::A, Some(Slot::B)));
    }

    #[test]
    fn boot_ops_persist() {
        let mut m = disk();
        let mut area = StateArea::read(&mut m, DEFAULT_STATE_OFFSET).unwrap();
        area.update_boot(&mut m, |b| {
            complete(b, Slot::B, 8);
            Ok(())
        })
        .unwrap();
        area.set_pending(&mut m, Slot::B, 1).unwrap();
        assert_eq!(area.boot_attempt(&mut m).unwrap().slot, Slot::B);
        let mut again = StateArea::read(&mut m, DEFAULT_STATE_OFFSET).unwrap();
        assert_eq!(again.boot().tries_left, 0);
        again.confirm(&mut m, Slot::B).unwrap();
        let again = StateArea::read(&mut m, DEFAULT_STATE_OFFSET).unwrap();
        assert_eq!(again.boot().active, Slot::B);
        assert_eq!(again.boot().rollback_floor, 8);
    }

    #[test]
    fn decoders_are_total() {
        // Random payloads behind a valid record envelope never panic.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..400 {
            let p: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            let _ = Layout::decode(&p);
            let _ = BootState::decode(&p);
            let _ = Journal::decode(&p);
        }
        let j = Journal {
            image_id: [3; 32],
            slot: Slot::B,
            segment: 2,
            offset: 4096,
            verified: true,
            done_bytes: 99,
        };
        assert_eq!(
            Journal::decode(&Journal::encode(Some(&j))).unwrap(),
            Some(j)
        );
        assert_eq!(Journal::decode(&Journal::encode(None)).unwrap(), None);
    }
}
