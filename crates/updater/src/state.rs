//! The state area: a small region of the target disk outside every
//! partition holding one redundant record (format 2): the slot layout,
//! the A/B boot state and the apply journal together, in two copies
//! `copy_distance` bytes apart (default 4 MiB: an SD card's allocation
//! unit, so one erase block never holds both). Byte layout in
//! docs/FORMAT.md.
//!
//! Every change is one whole-record write to the copy not in use,
//! followed by a sync, so after a power cut the state reads either as
//! before or as after the change. Because layout, boot state and journal
//! share the record, a write can never damage the newest copy of another
//! record (with separate records in one erase block, a journal write torn
//! by the card could revert the boot state), and a commit (complete +
//! pending + tries + journal idle) is a single write.

use std::ops::Range;

use crate::record::{self, Invalid, Kind, RECORD_LEN, RECORD_VERSION};
use crate::storage::{AlignedBuf, Storage};
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
const LAYOUT_FIXED_LEN: usize = 88;

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

    fn encoded_len(&self) -> usize {
        LAYOUT_FIXED_LEN + 64 * self.groups.len()
    }

    fn encode(&self, p: &mut [u8]) {
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

    fn decode(p: &[u8]) -> Result<Layout> {
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
    /// This image was tried (pending) and the device fell back from it
    /// (tries ran out, or the trial was abandoned). Set by fallback,
    /// cleared when the slot is written again, committed, scheduled or
    /// confirmed: the PID-1 updater never re-applies such an image (no
    /// reboot loop), but does finish an apply that only lacks its commit.
    pub fell_back: bool,
}

/// Slot-info flag bit: [`SlotInfo::fell_back`].
const FLAG_FELL_BACK: u8 = 1;

impl SlotInfo {
    pub fn empty() -> SlotInfo {
        SlotInfo {
            state: SlotState::Empty,
            version: 0,
            image_id: [0; 32],
            label: String::new(),
            fell_back: false,
        }
    }

    fn encode(&self, e: &mut [u8]) {
        e[0] = match self.state {
            SlotState::Empty => 0,
            SlotState::Updating => 1,
            SlotState::Complete => 2,
        };
        e[1] = if self.fell_back { FLAG_FELL_BACK } else { 0 };
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
        let flags = *e.get(1)?;
        if flags & !FLAG_FELL_BACK != 0
            || e.get(2..8)?.iter().chain(e.get(112..128)?).any(|&b| b != 0)
        {
            return None;
        }
        Some(SlotInfo {
            state,
            version: get_u64(e, 8)?,
            image_id: e.get(16..48)?.try_into().ok()?,
            label: get_str(e.get(48..48 + LABEL_LEN)?)?,
            fell_back: flags & FLAG_FELL_BACK != 0,
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
            fell_back: false,
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
            fell_back: false,
        };
    }

    /// The end of an apply, as one change: `slot` (its data durable) is
    /// complete, no longer marked as fallen back, and with `activate`
    /// pending with `tries` trial boots. Persisted by
    /// [`StateArea::commit`] in a single record write together with the
    /// idle journal, so no power cut can leave a complete slot that lost
    /// its activation.
    pub fn commit(&mut self, slot: Slot, activate: bool, tries: u8) -> Result<()> {
        if slot == self.active {
            return Err(Error::ActiveSlot(slot.letter()));
        }
        let info = self.slot_mut(slot);
        info.state = SlotState::Complete;
        info.fell_back = false;
        if activate {
            self.set_pending(slot, tries)?;
        }
        Ok(())
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
        self.slot_mut(slot).fell_back = false;
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
                    self.slot_mut(p).fell_back = true;
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
                self.slot_mut(p).fell_back = true;
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
        self.slot_mut(booted).fell_back = false;
        self.confirmed = true;
        self.rollback_floor = self.rollback_floor.max(self.slot(booted).version);
        Ok(())
    }

    /// Abandons the pending slot (e.g. its health check failed, or it
    /// could not be mounted): the active slot boots next, and the slot is
    /// marked as fallen back.
    pub fn fallback(&mut self) {
        if let Some(p) = self.pending.take() {
            self.slot_mut(p).fell_back = true;
        }
        self.tries_left = 0;
    }

    /// The active slot cannot be booted (its filesystem does not mount,
    /// its init is missing) and the other slot is complete: the other slot
    /// becomes active, not yet confirmed, and anything pending is dropped.
    /// The abandoned slot is marked empty (its contents are not to be
    /// trusted, so it is never booted again and an update may rewrite it,
    /// even with the image it held) and fallen back; its version, label
    /// and image id stay for `status`. The rollback floor is kept, never
    /// lowered: it governs what may be installed, and the slot booted now
    /// is already on the disk. Returns the new active slot.
    pub fn abandon_active(&mut self) -> Result<Slot> {
        let other = self.active.other();
        let st = self.slot(other).state;
        if st != SlotState::Complete {
            return Err(Error::NotComplete {
                slot: other.letter(),
                state: st.name(),
            });
        }
        let old = self.active;
        let info = self.slot_mut(old);
        info.state = SlotState::Empty;
        info.fell_back = true;
        self.active = other;
        self.pending = None;
        self.tries_left = 0;
        self.confirmed = false;
        Ok(other)
    }

    fn encode(&self, p: &mut [u8]) {
        p[0] = self.active.to_byte();
        p[1] = self.pending.map_or(0, Slot::to_byte);
        p[2] = self.tries_left;
        p[3] = u8::from(self.confirmed);
        p[8..16].copy_from_slice(&self.rollback_floor.to_le_bytes());
        self.slots[0].encode(&mut p[16..144]);
        self.slots[1].encode(&mut p[144..272]);
    }

    fn decode(p: &[u8]) -> Result<BootState> {
        let bad = |m: &str| Error::BadStateArea(format!("boot state: {m}"));
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
    /// Where the image came from (a path or URL; empty when not given),
    /// so an interrupted apply can be continued without naming it again.
    /// A hint like the rest: the image id decides whether it is the same
    /// image.
    pub source: String,
}

const JOURNAL_PAYLOAD_LEN: usize = 56;
/// Longest journal source kept; longer ones are not recorded.
pub const MAX_JOURNAL_SOURCE: usize = 1024;

impl Journal {
    fn encode(j: Option<&Journal>, p: &mut [u8]) {
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

    fn decode(p: &[u8]) -> Result<Option<Journal>> {
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

/// Offsets of the three sections in the state payload.
const BOOT_AT: usize = 0;
const JOURNAL_AT: usize = BOOT_PAYLOAD_LEN;
const LAYOUT_AT: usize = JOURNAL_AT + JOURNAL_PAYLOAD_LEN;

fn encode_state(layout: &Layout, boot: &BootState, journal: Option<&Journal>) -> Vec<u8> {
    let source = journal
        .map(|j| j.source.as_bytes())
        .filter(|s| !s.is_empty() && s.len() <= MAX_JOURNAL_SOURCE);
    let layout_end = LAYOUT_AT + layout.encoded_len();
    let mut p = vec![0u8; layout_end + source.map_or(0, |s| 2 + s.len())];
    boot.encode(&mut p[BOOT_AT..JOURNAL_AT]);
    Journal::encode(journal, &mut p[JOURNAL_AT..LAYOUT_AT]);
    layout.encode(&mut p[LAYOUT_AT..layout_end]);
    if let Some(s) = source {
        p[layout_end..layout_end + 2].copy_from_slice(&(s.len() as u16).to_le_bytes());
        p[layout_end + 2..].copy_from_slice(s);
    }
    p
}

type Decoded = (Layout, BootState, Option<Journal>);

/// With `lenient`, a journal that does not decode reads as idle.
fn decode_state(p: &[u8], lenient: bool) -> Result<Decoded> {
    if p.len() < LAYOUT_AT + LAYOUT_FIXED_LEN {
        return Err(Error::BadStateArea("state payload too short".into()));
    }
    let groups = get_u32(p, LAYOUT_AT + 80).unwrap_or(0) as usize;
    let layout_end = LAYOUT_AT + LAYOUT_FIXED_LEN + 64 * groups.min(MAX_GROUPS + 1);
    let layout = Layout::decode(p.get(LAYOUT_AT..layout_end).unwrap_or(&p[LAYOUT_AT..]))?;
    let boot = BootState::decode(&p[BOOT_AT..JOURNAL_AT])?;
    let source = decode_source(&p[layout_end.min(p.len())..]);
    // Inside one CRC-valid record, a journal that does not decode means
    // the record is not what fwpack wrote: the copy is refused and the
    // other one used. Only when no copy decodes whole is such a journal
    // taken as idle (lost progress, never a reason not to boot).
    let journal = match Journal::decode(&p[JOURNAL_AT..LAYOUT_AT]) {
        Err(_) if lenient => None,
        j => j?,
    };
    let journal = match (journal, source) {
        (j, Ok(None)) => j,
        (Some(mut j), Ok(Some(s))) => {
            j.source = s;
            Some(j)
        }
        (None, Ok(Some(_))) if lenient => None,
        (None, Ok(Some(_))) => {
            return Err(Error::BadStateArea(
                "journal source without a journal".into(),
            ))
        }
        (j, Err(_)) if lenient => j,
        (_, Err(e)) => return Err(e),
    };
    Ok((layout, boot, journal))
}

/// The optional journal-source section after the layout: u16 length,
/// then that many bytes of UTF-8, nothing after.
fn decode_source(p: &[u8]) -> Result<Option<String>> {
    let bad = |m: &str| Error::BadStateArea(format!("journal source: {m}"));
    if p.is_empty() {
        return Ok(None);
    }
    let n = p
        .get(..2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        .ok_or_else(|| bad("truncated length"))?;
    if n == 0 || n > MAX_JOURNAL_SOURCE || p.len() != 2 + n {
        return Err(bad("length does not match"));
    }
    String::from_utf8(p[2..].to_vec())
        .map(Some)
        .map_err(|_| bad("not UTF-8"))
}

/// Health of the state record's two copies, for `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHealth {
    pub kind: Kind,
    /// Per copy: its sequence number, or why it is not valid.
    pub copies: [std::result::Result<u64, Invalid>; 2],
    /// Which copy is in use.
    pub newest: Option<usize>,
}

/// The running system, as far as this target is concerned: which slot it
/// booted from (`/run/fwpack/boot.conf`, see [`Storage::booted_slot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Running {
    /// Not booted from this disk by fwpack (or not a device at all).
    Elsewhere,
    /// Booted from `slot` of this disk; `source` names the evidence.
    Slot { slot: Slot, source: String },
    /// A boot record exists but cannot be read or understood: no slot may
    /// be marked for writing, since it might be the running one.
    Unknown(String),
}

/// The system booted from a slot of this disk, as a [`Storage`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootedSlot {
    pub slot: Slot,
    /// A trial boot of a pending slot.
    pub trial: bool,
    /// For messages: where this was learned (the boot record's path).
    pub source: String,
}

/// The state area of one target, read into memory. Changes go through
/// methods that write the copy not in use and sync before returning.
#[derive(Clone, Debug)]
pub struct StateArea {
    loc: StateLocation,
    layout: Layout,
    boot: BootState,
    journal: Option<Journal>,
    /// Sequence number of the copy in use.
    seq: u64,
    /// The copy in use (the one the state was read from or last written).
    in_use: usize,
    health: RecordHealth,
    running: Running,
}

fn check_area_fits(storage: &dyn Storage, loc: StateLocation) -> Result<()> {
    let g = storage.geometry();
    if u64::from(g.logical) > RECORD_LEN as u64 {
        return Err(Error::InvalidInput {
            what: "target sector size",
            value: g.logical.to_string(),
            reason: "sectors larger than 4096 bytes are not supported".into(),
        });
    }
    loc.validate()?;
    if loc.span().end > storage.size() {
        return Err(Error::NoStateArea { offset: loc.offset });
    }
    Ok(())
}

type Blocks = [AlignedBuf; 2];

fn read_blocks(storage: &mut dyn Storage, loc: StateLocation) -> Result<Blocks> {
    check_area_fits(storage, loc)?;
    let align = storage.geometry().mem_align();
    let mut out = [
        AlignedBuf::new(RECORD_LEN, align),
        AlignedBuf::new(RECORD_LEN, align),
    ];
    for (c, buf) in out.iter_mut().enumerate() {
        storage
            .read_at(loc.copy_offset(c), buf.as_mut_slice())
            .map_err(Error::io(format!("reading state area copy {c}")))?;
    }
    Ok(out)
}

fn health_of(blocks: &Blocks) -> RecordHealth {
    let d = [0, 1].map(|c| record::decode(blocks[c].as_slice(), Kind::State));
    RecordHealth {
        kind: Kind::State,
        copies: [d[0].map(|c| c.seq), d[1].map(|c| c.seq)],
        newest: record::newest([&d[0], &d[1]]).map(|(i, _)| i),
    }
}

impl StateArea {
    /// Reads the area at `loc`. Takes the newest valid copy whose payload
    /// decodes and matches `loc`, else the other one; fails if neither
    /// does. Also asks the storage which slot, if any, the running system
    /// booted from.
    pub fn read(storage: &mut dyn Storage, loc: StateLocation) -> Result<StateArea> {
        let blocks = read_blocks(storage, loc)?;
        let mut health = health_of(&blocks);
        if let Some(v) = health.copies.iter().find_map(|c| match c {
            Err(Invalid::UnknownVersion(v)) if *v > RECORD_VERSION => Some(*v),
            _ => None,
        }) {
            // Never fall back past a newer writer's copy to stale state.
            return Err(Error::BadStateArea(format!(
                "a copy has record format {v}, written by a newer fwpack; this one reads format {RECORD_VERSION}"
            )));
        }
        let d = [0, 1].map(|c| record::decode(blocks[c].as_slice(), Kind::State));
        let order = match health.newest {
            Some(i) => [i, 1 - i],
            None => [0, 1],
        };
        let mut why = Vec::new();
        let mut found = None;
        'passes: for lenient in [false, true] {
            for i in order {
                let Ok(c) = &d[i] else { continue };
                match decode_state(c.payload, lenient).and_then(|st| check_location(st, loc)) {
                    Ok(st) => {
                        found = Some((i, c.seq, st));
                        break 'passes;
                    }
                    Err(e) => {
                        health.copies[i] = Err(Invalid::BadPayload);
                        if !lenient {
                            why.push(format!("copy {i}: {e}"));
                        }
                    }
                }
            }
        }
        let Some((in_use, seq, (layout, boot, journal))) = found else {
            return Err(no_valid_copy(&health, loc, why));
        };
        health.newest = Some(in_use);
        let running = match storage.booted_slot() {
            Ok(None) => Running::Elsewhere,
            Ok(Some(b)) => Running::Slot {
                slot: b.slot,
                source: b.source,
            },
            Err(e) => Running::Unknown(e.to_string()),
        };
        Ok(StateArea {
            loc,
            layout,
            boot,
            journal,
            seq,
            in_use,
            health,
            running,
        })
    }

    /// Health of the two copies, even when [`Self::read`] would fail.
    pub fn diagnose(storage: &mut dyn Storage, loc: StateLocation) -> Result<RecordHealth> {
        Ok(health_of(&read_blocks(storage, loc)?))
    }

    pub fn location(&self) -> StateLocation {
        self.loc
    }

    pub fn offset(&self) -> u64 {
        self.loc.offset
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

    /// The slot the running system booted from, as learned at read time.
    pub fn running(&self) -> &Running {
        &self.running
    }

    /// Health as found by the last [`Self::read`] (and kept up to date by
    /// writes).
    pub fn health(&self) -> &RecordHealth {
        &self.health
    }

    /// Replaces the boot state (durable when this returns).
    pub fn write_boot(&mut self, storage: &mut dyn Storage, boot: BootState) -> Result<()> {
        let j = self.journal.clone();
        self.write_state(storage, boot, j)
    }

    /// Replaces the journal; `None` clears it (durable when this returns).
    pub fn write_journal(&mut self, storage: &mut dyn Storage, j: Option<Journal>) -> Result<()> {
        let b = self.boot.clone();
        self.write_state(storage, b, j)
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

    /// Persisted [`BootState::commit`], with the journal cleared in the
    /// same write: complete, pending and tries change together or not at
    /// all. Nothing is written if nothing changes.
    pub fn commit(
        &mut self,
        storage: &mut dyn Storage,
        slot: Slot,
        activate: bool,
        tries: u8,
    ) -> Result<()> {
        let mut b = self.boot.clone();
        b.commit(slot, activate, tries)?;
        if b != self.boot || self.journal.is_some() {
            self.write_state(storage, b, None)?;
        }
        Ok(())
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

    /// Persisted [`BootState::abandon_active`].
    pub fn abandon_active(&mut self, storage: &mut dyn Storage) -> Result<Slot> {
        self.update_boot(storage, |b| b.abandon_active())
    }

    /// Persisted [`BootState::set_pending`].
    pub fn set_pending(&mut self, storage: &mut dyn Storage, slot: Slot, tries: u8) -> Result<()> {
        self.update_boot(storage, |b| b.set_pending(slot, tries))
    }

    /// A slot is about to be written exactly when it becomes (or is newly)
    /// *updating*: refuse that for the slot the system runs from, and for
    /// any slot when that cannot be told.
    fn check_running(&self, new: &BootState) -> Result<()> {
        for s in [Slot::A, Slot::B] {
            let n = new.slot(s);
            if n.state != SlotState::Updating || n == self.boot.slot(s) {
                continue;
            }
            match &self.running {
                Running::Slot { slot, source } if *slot == s => {
                    return Err(Error::RunningSlot {
                        slot: s.letter(),
                        evidence: source.clone(),
                    })
                }
                Running::Unknown(why) => return Err(Error::RunningUnknown(why.clone())),
                _ => {}
            }
        }
        Ok(())
    }

    fn write_state(
        &mut self,
        storage: &mut dyn Storage,
        boot: BootState,
        journal: Option<Journal>,
    ) -> Result<()> {
        for s in &boot.slots {
            check_label(&s.label)?;
        }
        self.check_running(&boot)?;
        let payload = encode_state(&self.layout, &boot, journal.as_ref());
        // Never the copy in use: if this write is torn or lost, the state
        // it replaces is still there, in another erase block.
        let copy = 1 - self.in_use;
        // Wraps at u64::MAX (readers compare with wrap-around).
        let seq = self.seq.wrapping_add(1);
        let mut buf = AlignedBuf::new(RECORD_LEN, storage.geometry().mem_align());
        record::encode(Kind::State, seq, &payload, buf.as_mut_slice())
            .map_err(Error::BadStateArea)?;
        let what = format!("writing state area copy {copy}");
        storage
            .write_at(self.loc.copy_offset(copy), buf.as_slice())
            .map_err(Error::io(what.clone()))?;
        storage.sync().map_err(Error::io(what))?;
        self.seq = seq;
        self.in_use = copy;
        self.boot = boot;
        self.journal = journal;
        self.health.copies[copy] = Ok(seq);
        self.health.newest = Some(copy);
        Ok(())
    }
}

fn check_location(st: Decoded, loc: StateLocation) -> Result<Decoded> {
    if st.0.location() != loc {
        return Err(Error::BadStateArea(format!(
            "the record says the area is at {} with copies {} apart, but it was read at {} with {}",
            st.0.state_offset, st.0.copy_distance, loc.offset, loc.copy_distance
        )));
    }
    Ok(st)
}

fn no_valid_copy(h: &RecordHealth, loc: StateLocation, why: Vec<String>) -> Error {
    if h.copies.iter().all(|c| *c == Err(Invalid::Blank)) {
        return Error::NoStateArea { offset: loc.offset };
    }
    if h.copies.contains(&Err(Invalid::UnknownVersion(1))) {
        return Error::BadStateArea(format!(
            "the area at {} is in record format 1 (an older fwpack: both copies in one erase block); re-initialise it with `fwpack state init --force` (the boot state is lost) or rebuild the disk image",
            loc.offset
        ));
    }
    let per_copy: Vec<String> = h
        .copies
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.err().map(|e| format!("copy {i}: {e}")))
        .chain(why)
        .collect();
    Error::BadStateArea(format!("no usable copy ({})", per_copy.join("; ")))
}

/// The two halves of a freshly initialised state area, as `(disk offset,
/// bytes)` ([`STATE_HALF_LEN`] each), to be placed into a disk image. Both
/// copies are written (sequence 1), so a single bad sector on a new card
/// is already survivable. The gap between the halves is not written.
pub fn format_state_area(layout: &Layout, boot: &BootState) -> Result<[(u64, Vec<u8>); 2]> {
    layout.validate()?;
    for s in &boot.slots {
        check_label(&s.label)?;
    }
    let payload = encode_state(layout, boot, None);
    let loc = layout.location();
    let mut half = vec![0u8; STATE_HALF_LEN as usize];
    record::encode(Kind::State, 1, &payload, &mut half[..RECORD_LEN])
        .map_err(Error::BadStateArea)?;
    Ok([
        (loc.copy_offset(0), half.clone()),
        (loc.copy_offset(1), half),
    ])
}

/// Writes a fresh state area onto `storage` (at `layout`'s location) and
/// syncs. Refuses a target too small for the layout.
pub fn init_state_area(storage: &mut dyn Storage, layout: &Layout, boot: &BootState) -> Result<()> {
    let halves = format_state_area(layout, boot)?;
    check_area_fits(storage, layout.location())?;
    let need = layout.min_disk_size();
    if need > storage.size() {
        return Err(Error::BadLayout(format!(
            "layout needs a target of at least {need} bytes, this one has {}",
            storage.size()
        )));
    }
    let mut buf = AlignedBuf::new(STATE_HALF_LEN as usize, storage.geometry().mem_align());
    for (at, bytes) in halves {
        buf.as_mut_slice().copy_from_slice(&bytes);
        storage
            .write_at(at, buf.as_slice())
            .map_err(Error::io("writing the state area"))?;
        // One half durable before the other is touched.
        storage
            .sync()
            .map_err(Error::io("syncing the state area"))?;
    }
    Ok(())
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
    use crate::storage::{Geometry, MemStorage};

    const MIB: u64 = 1 << 20;
    const LOC: StateLocation = StateLocation {
        offset: DEFAULT_STATE_OFFSET,
        copy_distance: DEFAULT_STATE_COPY_DISTANCE,
    };
    /// Copy 1's block on the test disk.
    const COPY1: usize = (DEFAULT_STATE_OFFSET + DEFAULT_STATE_COPY_DISTANCE) as usize;
    const COPY0: usize = DEFAULT_STATE_OFFSET as usize;

    fn layout() -> Layout {
        Layout::new(
            "test-board",
            LOC,
            vec![SlotGroup {
                name: "system".into(),
                slots: [
                    SlotRange {
                        offset: 5 * MIB,
                        size: 4 * MIB,
                    },
                    SlotRange {
                        offset: 9 * MIB,
                        size: 4 * MIB,
                    },
                ],
            }],
        )
        .unwrap()
    }

    fn disk() -> MemStorage {
        let mut m = MemStorage::new(vec![0; 13 * MIB as usize]);
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
            fell_back: false,
        };
    }

    /// A MemStorage that counts writes and says which slot is running.
    struct Booted {
        m: MemStorage,
        writes: usize,
        booted: std::io::Result<Option<BootedSlot>>,
    }

    impl Storage for Booted {
        fn size(&self) -> u64 {
            self.m.size()
        }
        fn geometry(&self) -> Geometry {
            self.m.geometry()
        }
        fn read_at(&mut self, o: u64, b: &mut [u8]) -> std::io::Result<()> {
            self.m.read_at(o, b)
        }
        fn write_at(&mut self, o: u64, b: &[u8]) -> std::io::Result<()> {
            self.writes += 1;
            self.m.write_at(o, b)
        }
        fn sync(&mut self) -> std::io::Result<()> {
            self.m.sync()
        }
        fn booted_slot(&mut self) -> std::io::Result<Option<BootedSlot>> {
            match &self.booted {
                Ok(b) => Ok(b.clone()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            }
        }
        fn describe(&self) -> String {
            "test".into()
        }
    }

    fn booted(slot: Option<Slot>) -> Booted {
        Booted {
            m: disk(),
            writes: 0,
            booted: Ok(slot.map(|slot| BootedSlot {
                slot,
                trial: true,
                source: "test boot record".into(),
            })),
        }
    }

    /// Re-signs (re-CRCs) a record block after editing it.
    fn reseal(block: &mut [u8]) {
        let crc = crc32c::crc32c(&block[..RECORD_LEN - 4]);
        block[RECORD_LEN - 4..RECORD_LEN].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn layout_rules() {
        let mut l = layout();
        assert_eq!(l.min_disk_size(), 13 * MIB);
        assert_eq!(
            l.state_range(),
            LOC.offset..LOC.offset + LOC.copy_distance + STATE_HALF_LEN
        );
        l.groups[0].slots[1].offset = 7 * MIB;
        assert!(matches!(l.validate(), Err(Error::BadLayout(m)) if m.contains("overlaps")));
        // Over either half, or in the gap between them.
        for at in [DEFAULT_STATE_OFFSET, 2 * MIB, COPY1 as u64] {
            let mut l = layout();
            l.groups[0].slots[0].offset = at;
            l.groups[0].slots[0].size = 4096;
            assert!(l.validate().is_err(), "slot at {at}");
        }
        let mut l = layout();
        l.groups[0].slots[0].size = 1000;
        assert!(l.validate().is_err(), "unaligned size");
        let mut l = layout();
        l.groups.push(l.groups[0].clone());
        assert!(l.validate().is_err(), "duplicate group");
        let mut l = layout();
        l.groups[0].name = "bad name".into();
        assert!(l.validate().is_err());
        for d in [0, 4096, 12288, 4 * MIB + 1] {
            let mut l = layout();
            l.copy_distance = d;
            assert!(l.validate().is_err(), "distance {d}");
        }
        let mut l = layout();
        l.state_offset = u64::MAX - 4095;
        assert!(l.validate().is_err(), "overflow");
    }

    #[test]
    fn state_area_roundtrip_and_copy_alternation() {
        let mut m = disk();
        // Both halves written, 4 MiB apart; nothing in between.
        assert_eq!(&m.data[COPY0..COPY0 + 8], b"FWPKSTAT");
        assert_eq!(&m.data[COPY1..COPY1 + 8], b"FWPKSTAT");
        assert!(m.data[COPY0 + STATE_HALF_LEN as usize..COPY1]
            .iter()
            .all(|&b| b == 0));
        let mut area = StateArea::read(&mut m, LOC).unwrap();
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
            assert_eq!(area.health().newest, Some(expect_copy));
            let again = StateArea::read(&mut m, LOC).unwrap();
            assert_eq!(again.boot().tries_left, i);
        }
        // Read at another distance: refused, not misread.
        assert!(StateArea::read(&mut m, StateLocation::new(LOC.offset, 2 * MIB)).is_err());
    }

    #[test]
    fn a_damaged_copy_falls_back_to_the_other() {
        let mut m = disk();
        let mut area = StateArea::read(&mut m, LOC).unwrap();
        let mut b = area.boot().clone();
        b.rollback_floor = 9;
        area.write_boot(&mut m, b).unwrap(); // copy 1, seq 2
                                             // Tear copy 1: the previous state (copy 0, seq 1) comes back.
        m.data[COPY1 + 1024..COPY1 + 1536].fill(0xEE);
        let again = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(again.boot().rollback_floor, 7);
        assert_eq!(again.health().copies[1], Err(Invalid::BadCrc));
        // Both copies gone: a clear error, not a guess.
        m.data[COPY0 + 100] ^= 1;
        assert!(matches!(
            StateArea::read(&mut m, LOC),
            Err(Error::BadStateArea(_))
        ));
        let blank = &mut MemStorage::new(vec![0; 6 * MIB as usize]);
        assert!(matches!(
            StateArea::read(blank, LOC),
            Err(Error::NoStateArea { .. })
        ));
    }

    #[test]
    fn a_crc_valid_copy_that_does_not_decode_falls_back() {
        let mut m = disk();
        let mut area = StateArea::read(&mut m, LOC).unwrap();
        let mut b = area.boot().clone();
        b.rollback_floor = 9;
        area.write_boot(&mut m, b).unwrap(); // copy 1, seq 2: newest
                                             // Make copy 1's boot state nonsense (active slot 'Z') and reseal
                                             // its CRC: the envelope is valid, the payload is not.
        let at = COPY1 + record::RECORD_HEADER_LEN;
        m.data[at] = b'Z';
        reseal(&mut m.data[COPY1..COPY1 + RECORD_LEN]);
        let mut again = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(again.boot().rollback_floor, 7, "copy 0 used");
        assert_eq!(again.health().copies[1], Err(Invalid::BadPayload));
        assert_eq!(again.health().newest, Some(0));
        // The next write replaces the bad copy, never the good one.
        let mut b = again.boot().clone();
        b.tries_left = 5;
        again.write_boot(&mut m, b).unwrap();
        assert_eq!(again.health().newest, Some(1));
        let third = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(third.boot().tries_left, 5);
        assert_eq!(third.health().copies, [Ok(1), Ok(2)]);
        // A copy whose layout names another location: also refused.
        let at = COPY1 + record::RECORD_HEADER_LEN + LAYOUT_AT + 64;
        m.data[at..at + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
        reseal(&mut m.data[COPY1..COPY1 + RECORD_LEN]);
        let a = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(a.health().newest, Some(0));
        // Journals that do not decode in both copies: the newest copy is
        // used with an idle journal (lost progress, still bootable).
        let mut m2 = MemStorage::new(m.data.clone());
        for at in [COPY0, COPY1] {
            let j = at + record::RECORD_HEADER_LEN + JOURNAL_AT;
            m2.data[j] = 7;
            reseal(&mut m2.data[at..at + RECORD_LEN]);
        }
        let a = StateArea::read(&mut m2, LOC).unwrap();
        assert!(a.journal().is_none());
        assert_eq!(a.health().newest, Some(0));
        // Both undecodable: an error naming both.
        m.data[COPY0 + record::RECORD_HEADER_LEN] = b'Z';
        reseal(&mut m.data[COPY0..COPY0 + RECORD_LEN]);
        let e = StateArea::read(&mut m, LOC).unwrap_err().to_string();
        assert!(e.contains("copy 0") && e.contains("copy 1"), "{e}");
    }

    #[test]
    fn sequence_exhaustion_wraps_and_keeps_working() {
        let mut m = disk();
        // Both copies at the end of the counter (as a buggy or hostile
        // writer might leave them), valid otherwise.
        for (at, seq) in [(COPY0, u64::MAX - 1), (COPY1, u64::MAX)] {
            m.data[at + 16..at + 24].copy_from_slice(&seq.to_le_bytes());
            reseal(&mut m.data[at..at + RECORD_LEN]);
        }
        let mut area = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(area.health().newest, Some(1));
        for i in 0..5u8 {
            let mut b = area.boot().clone();
            b.tries_left = i;
            area.write_boot(&mut m, b).unwrap();
            let again = StateArea::read(&mut m, LOC).unwrap();
            assert_eq!(again.boot().tries_left, i, "write {i} after the wrap");
        }
        // MAX (copy 1) → 0 (copy 0) → 1 → 2 → 3 → 4 (copy 0).
        assert_eq!(
            StateArea::read(&mut m, LOC).unwrap().health().copies,
            [Ok(4), Ok(3)]
        );
    }

    #[test]
    fn other_record_formats_are_named_not_misread() {
        // A format-1 area (kind 1, version 1 in block 0): what older fwpack wrote.
        let mut m = MemStorage::new(vec![0; 13 * MIB as usize]);
        let blk = &mut m.data[COPY0..COPY0 + RECORD_LEN];
        record::encode(Kind::State, 1, b"x", blk).unwrap();
        blk[8..12].copy_from_slice(&[1, 0, 1, 0]);
        reseal(blk);
        let e = StateArea::read(&mut m, LOC).unwrap_err().to_string();
        assert!(e.contains("record format 1"), "{e}");
        // A newer format in either copy: refused, even if the other copy
        // would read (it may be stale).
        let mut m = disk();
        m.data[COPY1 + 10] = 3;
        reseal(&mut m.data[COPY1..COPY1 + RECORD_LEN]);
        let e = StateArea::read(&mut m, LOC).unwrap_err().to_string();
        assert!(e.contains("newer fwpack"), "{e}");
    }

    #[test]
    fn commit_is_one_write_with_the_journal_cleared() {
        let mut st = booted(None);
        let mut area = StateArea::read(&mut st, LOC).unwrap();
        area.update_boot(&mut st, |b| {
            b.mark_updating(Slot::B, 8, [4; 32], "v8");
            Ok(())
        })
        .unwrap();
        let j = Journal {
            image_id: [4; 32],
            slot: Slot::B,
            segment: 0,
            offset: 4096,
            verified: false,
            done_bytes: 4096,
            source: "http://example.invalid/u.fwi".into(),
        };
        area.write_journal(&mut st, Some(j)).unwrap();
        let before = st.writes;
        area.commit(&mut st, Slot::B, true, 2).unwrap();
        assert_eq!(st.writes - before, 1, "one record write");
        let again = StateArea::read(&mut st, LOC).unwrap();
        let b = again.boot();
        assert_eq!(b.slot(Slot::B).state, SlotState::Complete);
        assert_eq!((b.pending, b.tries_left), (Some(Slot::B), 2));
        assert!(again.journal().is_none());
        // Again: nothing changes, nothing is written.
        area.commit(&mut st, Slot::B, true, 2).unwrap();
        assert_eq!(st.writes - before, 1);
        // Never the active slot; never zero tries.
        assert!(matches!(
            area.commit(&mut st, Slot::A, true, 1),
            Err(Error::ActiveSlot('A'))
        ));
        assert!(area.commit(&mut st, Slot::B, true, 0).is_err());
        // Without activation: complete only.
        let mut st = booted(None);
        let mut area = StateArea::read(&mut st, LOC).unwrap();
        area.update_boot(&mut st, |b| {
            b.mark_updating(Slot::B, 8, [4; 32], "v8");
            Ok(())
        })
        .unwrap();
        area.commit(&mut st, Slot::B, false, 3).unwrap();
        assert_eq!(area.boot().pending, None);
        assert_eq!(area.boot().slot(Slot::B).state, SlotState::Complete);
    }

    #[test]
    fn fell_back_is_explicit() {
        let mut b = BootState::initial(Slot::A, 1, "").unwrap();
        b.mark_updating(Slot::B, 2, [2; 32], "");
        b.commit(Slot::B, true, 1).unwrap();
        assert!(!b.slot(Slot::B).fell_back);
        assert!(b.boot_attempt().trial);
        assert!(!b.slot(Slot::B).fell_back, "still trying");
        let d = b.boot_attempt();
        assert_eq!(d.fell_back_from, Some(Slot::B));
        assert!(b.slot(Slot::B).fell_back);
        // Survives an encode/decode, and is not inferred from state alone:
        // complete + not pending + flag clear means "commit not done".
        let mut p = vec![0u8; BOOT_PAYLOAD_LEN];
        b.encode(&mut p);
        assert_eq!(BootState::decode(&p).unwrap(), b);
        // A fresh apply of the slot clears it; so does a commit.
        b.mark_updating(Slot::B, 3, [3; 32], "");
        assert!(!b.slot(Slot::B).fell_back);
        b.commit(Slot::B, true, 1).unwrap();
        b.fallback();
        assert!(b.slot(Slot::B).fell_back && b.pending.is_none());
        b.set_pending(Slot::B, 1).unwrap();
        assert!(!b.slot(Slot::B).fell_back, "scheduled again by hand");
        // Unknown flag bits are refused.
        let mut p = vec![0u8; BOOT_PAYLOAD_LEN];
        b.encode(&mut p);
        p[16 + 1] = 2;
        assert!(BootState::decode(&p).is_err());
    }

    #[test]
    fn the_running_slot_is_never_marked_for_writing() {
        // Trial boot of B: B runs, A is active; B must not be rewritten.
        let mut st = booted(Some(Slot::B));
        let mut area = StateArea::read(&mut st, LOC).unwrap();
        assert!(matches!(
            area.running(),
            Running::Slot { slot: Slot::B, .. }
        ));
        let before = st.writes;
        let e = area
            .update_boot(&mut st, |b| {
                b.mark_updating(Slot::B, 9, [9; 32], "v9");
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(e, Error::RunningSlot { slot: 'B', .. }), "{e}");
        assert_eq!(e.class(), crate::ErrorClass::Busy);
        assert_eq!(st.writes, before, "nothing written");
        // The slot that is not running may be marked (the engine refuses
        // the active slot on its own), and boot-state changes go on.
        area.update_boot(&mut st, |b| {
            b.mark_updating(Slot::A, 9, [9; 32], "v9");
            Ok(())
        })
        .unwrap();
        area.fallback(&mut st).unwrap();
        // An unreadable boot record: no slot may be marked.
        let mut st = booted(None);
        st.booted = Err(std::io::Error::other("boot record: no slot"));
        let mut area = StateArea::read(&mut st, LOC).unwrap();
        for s in [Slot::A, Slot::B] {
            let e = area
                .update_boot(&mut st, |b| {
                    b.mark_updating(s, 9, [9; 32], "v9");
                    Ok(())
                })
                .unwrap_err();
            assert!(matches!(e, Error::RunningUnknown(_)), "{e}");
        }
        area.confirm(&mut st, Slot::A).unwrap();
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
    fn an_unbootable_active_slot_is_abandoned_for_a_complete_other() {
        let mut b = BootState::initial(Slot::A, 7, "factory").unwrap();
        // Nothing to go to: refused, nothing changes.
        let before = b.clone();
        assert!(matches!(
            b.abandon_active(),
            Err(Error::NotComplete { slot: 'B', .. })
        ));
        b.mark_updating(Slot::B, 8, [8; 32], "");
        assert!(b.abandon_active().is_err());
        assert_eq!(b.slot(Slot::A), before.slot(Slot::A));
        // B complete and even pending: B becomes active, unconfirmed.
        complete(&mut b, Slot::B, 5);
        b.set_pending(Slot::B, 2).unwrap();
        assert_eq!(b.abandon_active().unwrap(), Slot::B);
        assert_eq!(
            (
                b.active,
                b.pending,
                b.tries_left,
                b.confirmed,
                b.rollback_floor
            ),
            (Slot::B, None, 0, false, 7)
        );
        let a = b.slot(Slot::A);
        assert_eq!(
            (a.state, a.fell_back, a.version),
            (SlotState::Empty, true, 7)
        );
        // A is never booted again and cannot be made pending; B boots.
        assert!(b.set_pending(Slot::A, 1).is_err());
        assert_eq!(b.boot_attempt().slot, Slot::B);
        b.confirm(Slot::B).unwrap();
        assert!(b.confirmed);
    }

    #[test]
    fn abandon_active_persists() {
        let mut m = disk();
        let mut area = StateArea::read(&mut m, LOC).unwrap();
        area.update_boot(&mut m, |b| {
            complete(b, Slot::B, 8);
            Ok(())
        })
        .unwrap();
        assert_eq!(area.abandon_active(&mut m).unwrap(), Slot::B);
        let back = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(back.boot().active, Slot::B);
        assert_eq!(back.boot().slot(Slot::A).state, SlotState::Empty);
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
        let mut area = StateArea::read(&mut m, LOC).unwrap();
        area.update_boot(&mut m, |b| {
            complete(b, Slot::B, 8);
            Ok(())
        })
        .unwrap();
        area.set_pending(&mut m, Slot::B, 1).unwrap();
        assert_eq!(area.boot_attempt(&mut m).unwrap().slot, Slot::B);
        let mut again = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(again.boot().tries_left, 0);
        again.confirm(&mut m, Slot::B).unwrap();
        let again = StateArea::read(&mut m, LOC).unwrap();
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
            let _ = decode_state(&p, false);
            let _ = decode_state(&p, true);
        }
        let j = Journal {
            image_id: [3; 32],
            slot: Slot::B,
            segment: 2,
            offset: 4096,
            verified: true,
            done_bytes: 99,
            source: String::new(),
        };
        let mut p = vec![0u8; JOURNAL_PAYLOAD_LEN];
        Journal::encode(Some(&j), &mut p);
        assert_eq!(Journal::decode(&p).unwrap(), Some(j.clone()));
        let boot = BootState::initial(Slot::A, 1, "").unwrap();
        let st = encode_state(&layout(), &boot, Some(&j));
        assert_eq!(decode_state(&st, false).unwrap().2, Some(j.clone()));
        // With a source: it round-trips; a torn or stray source section
        // makes the copy undecodable (strict) or is dropped (lenient).
        let js = Journal {
            source: "http://10.0.2.100:8080/u.fwi".into(),
            ..j.clone()
        };
        let st = encode_state(&layout(), &boot, Some(&js));
        assert_eq!(decode_state(&st, false).unwrap().2, Some(js.clone()));
        let mut torn = st.clone();
        torn.pop();
        assert!(decode_state(&torn, false).is_err());
        assert_eq!(decode_state(&torn, true).unwrap().2, Some(j.clone()));
        let mut stray = encode_state(&layout(), &boot, None);
        stray.extend_from_slice(&[1, 0, b'x']);
        assert!(decode_state(&stray, false).is_err());
        let too_long = Journal {
            source: "x".repeat(MAX_JOURNAL_SOURCE + 1),
            ..j
        };
        let st = encode_state(&layout(), &boot, Some(&too_long));
        assert_eq!(decode_state(&st, false).unwrap().2.unwrap().source, "");
        let mut p = vec![0u8; JOURNAL_PAYLOAD_LEN];
        Journal::encode(None, &mut p);
        assert_eq!(Journal::decode(&p).unwrap(), None);
    }
}
