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
//!
//! The sections live in their own modules ([`crate::layout`],
//! [`crate::bootstate`], [`crate::journal`]); this one puts them into the
//! record and reads and writes it. They are re-exported here so
//! `updater::state::*` names everything about the state area.

pub use crate::bootstate::{BootDecision, BootState, FallbackBelowFloor, SlotInfo, SlotState};
pub use crate::journal::{Journal, MAX_JOURNAL_SOURCE};
pub use crate::layout::{
    Layout, Slot, SlotGroup, SlotRange, StateLocation, BOARD_LEN, DEFAULT_STATE_COPY_DISTANCE,
    DEFAULT_STATE_OFFSET, GROUP_NAME_LEN, LABEL_LEN, MAX_GROUPS, SLOT_ALIGN, STATE_HALF_LEN,
};
pub use crate::running::{BootedSlot, Running};

use crate::bootstate::{check_label, BOOT_PAYLOAD_LEN};
use crate::codec::get_u32;
use crate::journal::{decode_source, JOURNAL_PAYLOAD_LEN};
use crate::layout::LAYOUT_FIXED_LEN;
use crate::record::{self, Invalid, Kind, RECORD_LEN, RECORD_VERSION};
use crate::storage::{AlignedBuf, Storage};
use crate::{Error, Result};

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
/// `version` is the record's: above [`RECORD_VERSION`] the payload may
/// end in additions this reader skips.
fn decode_state(p: &[u8], version: u16, lenient: bool) -> Result<Decoded> {
    if p.len() < LAYOUT_AT + LAYOUT_FIXED_LEN {
        return Err(Error::BadStateArea("state payload too short".into()));
    }
    let groups = get_u32(p, LAYOUT_AT + 80).unwrap_or(0) as usize;
    let layout_end = LAYOUT_AT + LAYOUT_FIXED_LEN + 64 * groups.min(MAX_GROUPS + 1);
    let layout = Layout::decode(p.get(LAYOUT_AT..layout_end).unwrap_or(&p[LAYOUT_AT..]))?;
    let boot = BootState::decode(&p[BOOT_AT..JOURNAL_AT])?;
    let source = decode_source(&p[layout_end.min(p.len())..], version > RECORD_VERSION);
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

/// Health of the state record's two copies, for `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHealth {
    pub kind: Kind,
    /// Per copy: its sequence number, or why it is not valid.
    pub copies: [std::result::Result<u64, Invalid>; 2],
    /// Which copy is in use.
    pub newest: Option<usize>,
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
                "a copy is compatible only with record format {v} readers, written by a newer fwpack; this one reads format {RECORD_VERSION} (and later versions compatible with it)"
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
                match decode_state(c.payload, c.version, lenient)
                    .and_then(|st| check_location(st, loc))
                {
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

    /// The end of a transaction ([`crate::txn`]): `slot`, written by its
    /// parts and still `updating`, takes the transaction's version, id
    /// and label and is committed as [`Self::commit`] does, journal
    /// cleared, all in one record write. A slot already complete with
    /// this id is only (re)activated.
    #[allow(clippy::too_many_arguments)]
    pub fn commit_as(
        &mut self,
        storage: &mut dyn Storage,
        slot: Slot,
        version: u64,
        image_id: [u8; 32],
        label: &str,
        activate: bool,
        tries: u8,
    ) -> Result<()> {
        let mut b = self.boot.clone();
        let info = b.slot(slot);
        let done = info.state == SlotState::Complete && info.image_id == image_id;
        if !done && info.state != SlotState::Updating {
            return Err(Error::BadStateArea(format!(
                "slot {slot} is {}, not `updating` with the parts of this transaction",
                info.state.name()
            )));
        }
        if !done {
            b.mark_updating(slot, version, image_id, label);
        }
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
    pub fn abandon_active(
        &mut self,
        storage: &mut dyn Storage,
        below_floor: FallbackBelowFloor,
    ) -> Result<Slot> {
        self.update_boot(storage, |b| b.abandon_active(below_floor))
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
    fn abandon_active_persists() {
        let mut m = disk();
        let mut area = StateArea::read(&mut m, LOC).unwrap();
        area.update_boot(&mut m, |b| {
            complete(b, Slot::B, 8);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            area.abandon_active(&mut m, FallbackBelowFloor::Refuse)
                .unwrap(),
            Slot::B
        );
        let back = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(back.boot().active, Slot::B);
        assert_eq!(back.boot().slot(Slot::A).state, SlotState::Empty);
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
            let _ = decode_state(&p, RECORD_VERSION, false);
            let _ = decode_state(&p, RECORD_VERSION, true);
            let _ = decode_state(&p, RECORD_VERSION + 1, false);
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
        assert_eq!(
            decode_state(&st, RECORD_VERSION, false).unwrap().2,
            Some(j.clone())
        );
        // With a source: it round-trips; a torn or stray source section
        // makes the copy undecodable (strict) or is dropped (lenient).
        let js = Journal {
            source: "http://10.0.2.100:8080/u.fwi".into(),
            ..j.clone()
        };
        let st = encode_state(&layout(), &boot, Some(&js));
        assert_eq!(
            decode_state(&st, RECORD_VERSION, false).unwrap().2,
            Some(js.clone())
        );
        let mut torn = st.clone();
        torn.pop();
        assert!(decode_state(&torn, RECORD_VERSION, false).is_err());
        assert_eq!(
            decode_state(&torn, RECORD_VERSION, true).unwrap().2,
            Some(j.clone())
        );
        let mut stray = encode_state(&layout(), &boot, None);
        stray.extend_from_slice(&[1, 0, b'x']);
        assert!(decode_state(&stray, RECORD_VERSION, false).is_err());
        let too_long = Journal {
            source: "x".repeat(MAX_JOURNAL_SOURCE + 1),
            ..j
        };
        let st = encode_state(&layout(), &boot, Some(&too_long));
        assert_eq!(
            decode_state(&st, RECORD_VERSION, false)
                .unwrap()
                .2
                .unwrap()
                .source,
            ""
        );
        let mut p = vec![0u8; JOURNAL_PAYLOAD_LEN];
        Journal::encode(None, &mut p);
        assert_eq!(Journal::decode(&p).unwrap(), None);
    }

    /// Both copies of a state area as fwpack wrote it before the record
    /// had a version field (commit 3f3f8b5): copy 0 initial (sequence 1),
    /// copy 1 with an apply of slot B in progress from a recorded source.
    const FORMAT2_BEFORE_VERSION_FIELD: &[u8; 2 * RECORD_LEN] =
        include_bytes!("testdata/state-format2.bin");

    fn fixture_disk() -> MemStorage {
        let mut m = MemStorage::new(vec![0; 13 * MIB as usize]);
        m.data[COPY0..COPY0 + RECORD_LEN]
            .copy_from_slice(&FORMAT2_BEFORE_VERSION_FIELD[..RECORD_LEN]);
        m.data[COPY1..COPY1 + RECORD_LEN]
            .copy_from_slice(&FORMAT2_BEFORE_VERSION_FIELD[RECORD_LEN..]);
        m
    }

    fn fixture_journal() -> Journal {
        Journal {
            image_id: [0x5a; 32],
            slot: Slot::B,
            segment: 1,
            offset: 8192,
            verified: true,
            done_bytes: 12288,
            source: "/data/update-v8.fwi".into(),
        }
    }

    #[test]
    fn compat_areas_from_before_the_version_field_read_and_are_rewritten_identically() {
        let mut m = fixture_disk();
        let area = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(area.health().copies, [Ok(1), Ok(2)]);
        assert_eq!(area.layout(), &layout());
        assert_eq!(area.boot(), &BootState::initial(Slot::A, 7, "v7").unwrap());
        assert_eq!(area.journal(), Some(&fixture_journal()));
        // This writer adds nothing, so what it writes is what the older
        // bootstrap wrote and reads: the same state gives the same bytes.
        let mut fresh = disk();
        let mut a = StateArea::read(&mut fresh, LOC).unwrap();
        a.write_journal(&mut fresh, Some(fixture_journal()))
            .unwrap();
        assert_eq!(
            &fresh.data[COPY0..COPY0 + RECORD_LEN],
            &FORMAT2_BEFORE_VERSION_FIELD[..RECORD_LEN]
        );
        assert_eq!(
            &fresh.data[COPY1..COPY1 + RECORD_LEN],
            &FORMAT2_BEFORE_VERSION_FIELD[RECORD_LEN..]
        );
    }

    /// Sets copy `at`'s compatible-since and version and re-seals it.
    fn set_versions(m: &mut MemStorage, at: usize, since: u16, version: u16) {
        let blk = &mut m.data[at..at + RECORD_LEN];
        blk[10..12].copy_from_slice(&since.to_le_bytes());
        blk[24..26].copy_from_slice(&version.to_le_bytes());
        reseal(blk);
    }

    /// Appends `extra` to copy `at`'s payload (a newer version's
    /// addition) and re-seals it.
    fn add_to_payload(m: &mut MemStorage, at: usize, extra: &[u8]) {
        let blk = &mut m.data[at..at + RECORD_LEN];
        let len = u32::from_le_bytes(blk[12..16].try_into().unwrap()) as usize;
        let end = record::RECORD_HEADER_LEN + len;
        blk[end..end + extra.len()].copy_from_slice(extra);
        blk[12..16].copy_from_slice(&((len + extra.len()) as u32).to_le_bytes());
        reseal(blk);
    }

    #[test]
    fn compat_a_newer_version_compatible_since_an_old_one_is_read() {
        // Copy 1 as a future fwpack might write it: version 9, compatible
        // since 2, a header field and an added section after the journal
        // source. This reader takes what it knows and skips the rest.
        let mut m = fixture_disk();
        set_versions(&mut m, COPY1, RECORD_VERSION, 9);
        m.data[COPY1 + 28] = 0x77;
        add_to_payload(&mut m, COPY1, b"\x01\x02added by version 9");
        let area = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(area.health().newest, Some(1));
        assert_eq!(area.journal(), Some(&fixture_journal()));
        // Without a source, a newer version still names the source length
        // (0) so that its additions can follow.
        let mut m = disk();
        let mut a = StateArea::read(&mut m, LOC).unwrap();
        a.write_boot(&mut m, BootState::initial(Slot::A, 8, "v8").unwrap())
            .unwrap();
        set_versions(&mut m, COPY1, RECORD_VERSION, 3);
        add_to_payload(&mut m, COPY1, &[0, 0, 0xAB, 0xCD]);
        let mut area = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(area.boot().slot(Slot::A).version, 8);
        assert!(area.journal().is_none());
        // Writing it back writes this reader's own form (version 0): the
        // additions are dropped, which is why FORMAT.md allows only
        // additions whose loss an older writer may cause.
        let b = area.boot().clone();
        area.write_boot(&mut m, b).unwrap();
        assert_eq!(&m.data[COPY0 + 24..COPY0 + 26], &[0, 0]);
        assert_eq!(
            StateArea::read(&mut m, LOC).unwrap().health().newest,
            Some(0)
        );
        // The same additions under this reader's own version are not
        // fwpack's: that copy is refused and the other one used.
        let mut m = fixture_disk();
        add_to_payload(&mut m, COPY1, &[0, 0, 1]);
        let area = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(area.health().copies[1], Err(Invalid::BadPayload));
        assert!(area.journal().is_none());
    }

    #[test]
    fn compat_a_newer_compatible_since_is_refused() {
        // Compatible since 3: the writer changed something format-2
        // readers would misread. Refused, even though copy 0 reads (it
        // may be stale), and whatever the version field says.
        for version in [0, 3, 9] {
            let mut m = fixture_disk();
            set_versions(&mut m, COPY1, 3, version);
            let e = StateArea::read(&mut m, LOC).unwrap_err().to_string();
            assert!(e.contains("newer fwpack") && e.contains("format 3"), "{e}");
        }
        // A version below its own compatible-since is not a record fwpack
        // writes: that copy is invalid, the other one is used.
        let mut m = fixture_disk();
        set_versions(&mut m, COPY1, RECORD_VERSION, 1);
        let area = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(area.health().copies[1], Err(Invalid::BadVersion(1)));
        assert!(area.journal().is_none());
        // This reader's own version keeps the reserved header bytes zero.
        let mut m = fixture_disk();
        m.data[COPY1 + 28] = 1;
        reseal(&mut m.data[COPY1..COPY1 + RECORD_LEN]);
        let area = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(area.health().copies[1], Err(Invalid::NonZeroPadding));
    }
}
