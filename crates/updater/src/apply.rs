//! The apply engine: a signed image onto the inactive slot of a target,
//! in one pass, in an order that survives a power cut at any point.
//!
//! 1. Check, before any write: signature, board, anti-rollback version,
//!    every segment fits its slot, nothing in use (busy).
//! 2. Mark the slot `updating` (it stops being pending) — sync.
//! 3. Stream the chunks: each is read from the image once, checked against
//!    its signed SHA-256, only then decompressed and written. Checkpoints:
//!    fdatasync the data, optionally read it back against the chunk
//!    hashes, then record the position in the journal — sync. A chunk that
//!    fails stops the apply with the slot `updating`.
//! 4. Commit in one state-record write: the slot `complete`, pending
//!    with N tries, the journal idle — sync.
//!
//! The active slot is never written. A cut anywhere leaves it active and
//! intact, and the new slot either complete (and pending, or one re-run
//! away from it) or `updating`, which is never booted. A re-run with the
//! same image continues from the last checkpoint, after every chunk before
//! it was read back from the slot and matched its signed raw SHA-256: the
//! journal is a hint, never proof, and a CRC never stands in for a hash.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use fwimage::{
    ChunkInfo, ChunkReader, ImageHead, ImageSource, Index, KeyId, TrustedKeys, Verified, BLOCK_SIZE,
};
use sha2::{Digest, Sha256};

use crate::event::{Event, Phase};
use crate::state::{
    Journal, Running, Slot, SlotState, StateArea, StateLocation, DEFAULT_STATE_COPY_DISTANCE,
    DEFAULT_STATE_OFFSET,
};
use crate::storage::{AlignedBuf, SharedIo, Storage};
use crate::{Error, Result};

/// How to apply.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Slot to write; default: the inactive one.
    pub slot: Option<Slot>,
    /// Where the state area is on the target.
    pub state_offset: u64,
    /// Distance from its copy 0 to its copy 1.
    pub state_copy_distance: u64,
    /// Read every written range back and check it against the signed
    /// chunk hashes before the journal records it.
    pub verify_writes: bool,
    /// Read the target first and write only blocks that differ.
    pub minimize_writes: bool,
    /// Apply even if the target is in use.
    pub force: bool,
    /// Accept an image that leaves some slot group of the slot unwritten.
    pub allow_partial: bool,
    /// Make the slot pending when done (else it is only marked complete).
    pub activate: bool,
    /// End with the slot still `updating` (never bootable) and the journal
    /// at the last checkpoint, instead of committing: one part of a
    /// transaction ([`crate::txn`]), which commits every part at once.
    /// `activate` is then ignored.
    pub leave_updating: bool,
    /// Trial boots of the new slot before falling back.
    pub tries: u8,
    /// Sets the memory of the write pipeline: one buffer per checker
    /// thread plus one, each 2 × this / (checkers + 2) rounded down to
    /// whole chunks of the image (at least one): the bytes per device
    /// write. A multiple of 4096.
    pub chunk_size: usize,
    /// Raw bytes between journal checkpoints (rounded up to chunks).
    pub checkpoint_interval: u64,
    /// Copy chunks the seed slot already holds (by signed raw hash)
    /// instead of reading them from the image: a delta fetch from a
    /// network source, with no delta file.
    pub seed: Seed,
    /// Where the image comes from (path or URL), kept in the journal so
    /// an interrupted apply can be continued without naming it again.
    pub source: String,
}

/// Where a delta apply copies unchanged chunks from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Seed {
    /// Read every chunk from the image.
    #[default]
    None,
    /// The active slot, when it is complete.
    Active,
    Slot(Slot),
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            slot: None,
            state_offset: DEFAULT_STATE_OFFSET,
            state_copy_distance: DEFAULT_STATE_COPY_DISTANCE,
            verify_writes: false,
            minimize_writes: false,
            force: false,
            allow_partial: false,
            activate: true,
            leave_updating: false,
            tries: 3,
            chunk_size: 1 << 20,
            checkpoint_interval: 32 << 20,
            seed: Seed::None,
            source: String::new(),
        }
    }
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyReport {
    pub slot: Slot,
    /// SHA-256 of the image's signed head: its identity in the journal and
    /// the boot state.
    pub image_id: [u8; 32],
    pub board: String,
    pub version: u64,
    pub label: String,
    pub key_id: KeyId,
    pub segments: usize,
    /// Raw (device-bound) bytes in the image.
    pub raw_bytes: u64,
    /// Bytes written to the slot (including sector padding of segment
    /// tails).
    pub bytes_written: u64,
    /// Raw bytes not written because an interrupted run had them durable.
    pub skipped_resume: u64,
    /// Raw bytes not written because the target already held them
    /// (`minimize_writes`).
    pub skipped_unchanged: u64,
    /// Bytes read back from the target and checked.
    pub bytes_read_back: u64,
    /// Bytes read from the image (each at most once).
    pub image_bytes_read: u64,
    /// Raw bytes copied from the seed slot instead of read from the image.
    pub bytes_from_seed: u64,
    pub checkpoints: u64,
    /// Where an interrupted run was continued from.
    pub resumed_from: Option<(u32, u64)>,
    /// The slot already held this image, complete; no data was written.
    pub already_complete: bool,
    /// The slot is pending (boots next, on trial).
    pub pending: bool,
    pub direct_io: bool,
}

impl ApplyReport {
    /// Before anything is done: what the image is and where it goes.
    /// (Inlined: the bootstrap build has one caller and 8 KiB to spare.)
    #[inline(always)]
    fn start(
        head: &ImageHead,
        image_id: [u8; 32],
        slot: Slot,
        key_id: KeyId,
        plans: &[SegPlan],
    ) -> ApplyReport {
        let h = &head.header;
        ApplyReport {
            slot,
            image_id,
            board: h.board.clone(),
            version: h.payload_version,
            label: h.version_label.clone(),
            key_id,
            segments: plans.len(),
            raw_bytes: plans.iter().map(|p| p.raw_len).sum(),
            bytes_written: 0,
            skipped_resume: 0,
            skipped_unchanged: 0,
            bytes_read_back: 0,
            image_bytes_read: h.index_offset,
            bytes_from_seed: 0,
            checkpoints: 0,
            resumed_from: None,
            already_complete: false,
            pending: false,
            direct_io: false,
        }
    }
}

/// SHA-256 of the signed head: names an image in the state area.
pub fn image_id(head: &ImageHead) -> [u8; 32] {
    Sha256::digest(head.signed_bytes()).into()
}

/// Where one segment goes on the device.
struct SegPlan {
    name: String,
    /// Device offset of raw byte 0.
    base: u64,
    raw_len: u64,
}

/// Applies the image read from `image` (`image_len` bytes) to `storage`.
/// See the module documentation for the order of operations.
pub fn apply<S: ImageSource + Send>(
    mut image: S,
    image_len: u64,
    storage: &mut dyn Storage,
    trusted: &TrustedKeys,
    opts: &ApplyOptions,
    events: &mut dyn FnMut(&Event),
) -> Result<ApplyReport> {
    events(&Event::Target {
        description: storage.describe(),
    });
    if let Some(w) = storage.take_warning() {
        events(&Event::Warning(w));
    }
    let geo = storage.geometry();
    let io_align = geo.io_align();
    let mem_align = geo.mem_align();
    check_options(opts, mem_align)?;

    events(&Event::Phase(Phase::Check));
    // First the whole device (before even reading the state area, which a
    // mounted filesystem may not have); partitions once the written
    // ranges are known.
    check_busy(storage, &[], opts.force, false, events)?;
    let head = ImageHead::read_from(&mut image, image_len)?;
    let v = head.authenticate(trusted)?;
    let key_id = v.key_id;
    let mut area = StateArea::read(
        storage,
        StateLocation::new(opts.state_offset, opts.state_copy_distance),
    )?;
    let layout = area.layout().clone();
    let boot = area.boot().clone();
    let h = &head.header;
    if h.board != layout.board {
        return Err(Error::WrongBoard {
            image: h.board.clone(),
            target: layout.board.clone(),
        });
    }
    let active = boot.active;
    let active_info = boot.slot(active);
    if active_info.state == SlotState::Complete && h.payload_version < active_info.version {
        return Err(Error::Rollback {
            image: h.payload_version,
            floor: active_info.version,
            what: "version of the active slot",
        });
    }
    if h.payload_version < boot.rollback_floor {
        return Err(Error::Rollback {
            image: h.payload_version,
            floor: boot.rollback_floor,
            what: "device's rollback floor",
        });
    }
    let (slot, seed) = target_and_seed(&area, opts)?;
    if layout.min_disk_size() > storage.size() {
        return Err(Error::BadLayout(format!(
            "the layout needs {} bytes but the target has {}",
            layout.min_disk_size(),
            storage.size()
        )));
    }
    let plans = plan_segments(&head, &layout, slot, io_align, opts.allow_partial)?;
    let raw_total: u64 = plans.iter().map(|p| p.raw_len).sum();
    events(&Event::ImageAccepted {
        board: h.board.clone(),
        version: h.payload_version,
        label: h.version_label.clone(),
        key_id,
        segments: plans.len(),
        raw_bytes: raw_total,
        slot,
    });

    let mut ranges: Vec<Range<u64>> = layout
        .groups
        .iter()
        .filter(|g| head.segments.iter().any(|s| s.target == g.name))
        .map(|g| g.slot(slot).range())
        .collect();
    ranges.push(layout.state_range());
    check_busy(storage, &ranges, opts.force, true, events)?;

    let id = image_id(&head);
    let mut e = Engine {
        storage,
        v: &v,
        index: Index::new(&v),
        plans: &plans,
        opts,
        io_align,
        mem_align,
        readback: None,
        seed_letter: '-',
        report: ApplyReport::start(&head, id, slot, key_id, &plans),
    };

    let info = boot.slot(slot);
    let mut start = None;
    if info.state == SlotState::Complete && info.image_id == id {
        match e.check_complete_slot(&mut image, events)? {
            None => {
                e.report.already_complete = true;
                events(&Event::AlreadyComplete { slot });
            }
            Some((seg, chunk)) => events(&Event::Restart {
                reason: format!(
                    "slot {slot} was marked complete with this image but segment `{}` chunk {chunk} does not read back as signed; rewriting it",
                    plans[seg].name
                ),
            }),
        }
    } else if info.state == SlotState::Updating && info.image_id == id {
        start = e.resume_point(&mut image, area.journal(), slot, events)?;
    }

    if !e.report.already_complete {
        events(&Event::Phase(Phase::Write));
        if !(info.state == SlotState::Updating && info.image_id == id) {
            let label = h.version_label.clone();
            let version = h.payload_version;
            area.update_boot(e.storage, |b| {
                b.mark_updating(slot, version, id, &label);
                Ok(())
            })?;
            events(&Event::SlotState {
                slot,
                state: SlotState::Updating,
            });
        }
        let (seg, off) = match start {
            Some(s) => s,
            None => {
                if area.journal().is_some() {
                    area.write_journal(e.storage, None)?;
                }
                (0, 0)
            }
        };
        if start.is_some() {
            e.report.resumed_from = Some((seg, off));
        }
        let copy = match seed {
            Some(sd) => Some(e.plan_delta(&mut image, &layout, sd, (seg, off), events)?),
            None => None,
        };
        e.write_data(&mut image, &mut area, seg, off, copy.as_deref(), events)?;
    }
    if opts.leave_updating {
        // A transaction's part: the data is durable (the last checkpoint
        // synced it), the commit is the transaction's. A slot that held
        // this image complete goes back to `updating`, since the other
        // parts are yet to be written into it. The journal stays at the
        // part's end, so a re-run of this part reads it back instead of
        // fetching it again.
        if e.report.already_complete {
            let label = h.version_label.clone();
            let version = h.payload_version;
            area.update_boot(e.storage, |b| {
                b.mark_updating(slot, version, id, &label);
                Ok(())
            })?;
        }
        if let Some(w) = e.storage.take_warning() {
            events(&Event::Warning(w));
        }
        e.report.direct_io = e.storage.direct_io();
        e.report.image_bytes_read += e.index.bytes_read;
        return Ok(e.report);
    }
    events(&Event::Phase(Phase::Commit));
    // One state-record write: complete, pending + tries, journal idle.
    area.commit(e.storage, slot, opts.activate, opts.tries)?;
    if !e.report.already_complete {
        events(&Event::SlotState {
            slot,
            state: SlotState::Complete,
        });
    }
    if opts.activate {
        e.report.pending = true;
        events(&Event::Pending {
            slot,
            tries: opts.tries,
        });
    }
    if area.journal().is_some() {
        area.write_journal(e.storage, None)?;
    }
    if let Some(w) = e.storage.take_warning() {
        events(&Event::Warning(w));
    }
    e.report.direct_io = e.storage.direct_io();
    e.report.image_bytes_read += e.index.bytes_read;
    Ok(e.report)
}

/// What one image of a transaction ([`crate::txn`]) does in `slot`,
/// found by the two read-only passes below.
pub(crate) enum Probe {
    /// Read every chunk back from the slot: the first segment and chunk
    /// that does not match its signed raw SHA-256, if any.
    Prove,
    /// The delta plan against the seed slot of the chunks from
    /// (segment, raw offset) on, as [`Event::DeltaPlan`] reports it (the
    /// event is passed on).
    Plan(Slot, (u32, u64)),
}

/// Authenticates the image's head with `trusted`, places its segments in
/// `slot` of `layout` (any subset of the groups) and runs `probe`.
/// Writes nothing. Returns the first chunk that does not read back as
/// signed (segment name, chunk, device offset) for [`Probe::Prove`];
/// `None` otherwise.
pub(crate) fn probe<S: ImageSource>(
    image: &mut S,
    image_len: u64,
    storage: &mut dyn Storage,
    trusted: &TrustedKeys,
    (layout, slot): (&crate::state::Layout, Slot),
    probe: Probe,
    events: &mut dyn FnMut(&Event),
) -> Result<Option<(String, u64, u64)>> {
    let geo = storage.geometry();
    let head = ImageHead::read_from(image, image_len)?;
    let v = head.authenticate(trusted)?;
    let plans = plan_segments(&head, layout, slot, geo.io_align(), true)?;
    let opts = ApplyOptions::default();
    let cs = head.header.chunk_size();
    let mut e = Engine {
        storage,
        v: &v,
        index: Index::new(&v),
        plans: &plans,
        opts: &opts,
        io_align: geo.io_align(),
        mem_align: geo.mem_align(),
        readback: None,
        seed_letter: '-',
        report: ApplyReport::start(&head, image_id(&head), slot, v.key_id, &plans),
    };
    match probe {
        Probe::Prove => {
            Ok(e.first_bad_chunk(image, (plans.len(), 0), events)?
                .map(|(seg, chunk)| {
                    let at = plans[seg].base + chunk * cs;
                    (plans[seg].name.clone(), chunk, at)
                }))
        }
        Probe::Plan(seed, from) => {
            e.plan_delta(image, layout, seed, from, events)?;
            Ok(None)
        }
    }
}

/// The slot `opts` writes and the slot it copies unchanged chunks from.
/// Usage errors (the active slot, the running one, a seed that is the
/// target) are found here, before anything is written: marking the slot
/// updating first would lose a complete or pending slot to a typo.
pub(crate) fn target_and_seed(
    area: &StateArea,
    opts: &ApplyOptions,
) -> Result<(Slot, Option<Slot>)> {
    let boot = area.boot();
    let active = boot.active;
    let slot = opts.slot.unwrap_or(boot.inactive());
    if slot == active {
        return Err(Error::ActiveSlot(slot.letter()));
    }
    let seed = match opts.seed {
        Seed::None => None,
        Seed::Active => (boot.slot(active).state == SlotState::Complete).then_some(active),
        Seed::Slot(s) if s == slot => return Err(Error::SeedIsTarget(s.letter())),
        Seed::Slot(s) => Some(s),
    };
    // The running slot (a trial boot before mark-good) is refused here,
    // before any read-back, as well as by the state area when it would be
    // marked updating.
    match area.running() {
        Running::Slot { slot: s, source } if *s == slot => Err(Error::RunningSlot {
            slot: slot.letter(),
            evidence: source.clone(),
        }),
        Running::Unknown(why) => Err(Error::RunningUnknown(why.clone())),
        _ => Ok((slot, seed)),
    }
}

/// Refuses a busy target unless forced. With `notes`, also reports what
/// is in use but no reason to refuse.
pub(crate) fn check_busy(
    storage: &mut dyn Storage,
    ranges: &[Range<u64>],
    force: bool,
    notes: bool,
    events: &mut dyn FnMut(&Event),
) -> Result<()> {
    let busy = storage
        .busy(ranges)
        .map_err(Error::io("checking whether the target is in use"))?;
    if notes {
        for n in busy.notes {
            events(&Event::Warning(n));
        }
    }
    if busy.reasons.is_empty() {
        return Ok(());
    }
    if !force {
        return Err(Error::Busy {
            reasons: busy.reasons,
        });
    }
    if notes {
        for r in busy.reasons {
            events(&Event::Warning(format!(
                "--force: ignoring that the target is busy: {r}"
            )));
        }
    }
    Ok(())
}

fn check_options(opts: &ApplyOptions, mem_align: usize) -> Result<()> {
    let bad = |what, value: String, reason: &str| {
        Err(Error::InvalidInput {
            what,
            value,
            reason: reason.into(),
        })
    };
    let c = opts.chunk_size;
    if c == 0 || !c.is_multiple_of(BLOCK_SIZE) || !c.is_multiple_of(mem_align) || c > 256 << 20 {
        return bad(
            "chunk size",
            c.to_string(),
            "must be a multiple of 4096 and of the sector size, at most 256 MiB",
        );
    }
    if opts.checkpoint_interval == 0 {
        return bad("checkpoint interval", "0".into(), "must be positive");
    }
    if opts.activate && !opts.leave_updating && opts.tries == 0 {
        return bad("tries", "0".into(), "a pending slot needs at least one try");
    }
    Ok(())
}

fn plan_segments(
    head: &ImageHead,
    layout: &crate::state::Layout,
    slot: Slot,
    io_align: u64,
    allow_partial: bool,
) -> Result<Vec<SegPlan>> {
    let mut plans = Vec::with_capacity(head.segments.len());
    for s in &head.segments {
        let group = layout
            .group(&s.target)
            .ok_or_else(|| Error::UnknownTarget {
                segment: s.name.clone(),
                target: s.target.clone(),
                groups: layout.groups.iter().map(|g| g.name.clone()).collect(),
            })?;
        let r = group.slot(slot);
        let need = s.target_offset.checked_add(s.raw_len);
        if need.is_none_or(|n| n > r.size) {
            return Err(Error::TooBig {
                segment: s.name.clone(),
                group: group.name.clone(),
                slot: slot.letter(),
                needed: need.unwrap_or(u64::MAX),
                available: r.size,
            });
        }
        // Slots are 4 KiB-aligned (layout rule) and sectors at most 4 KiB,
        // so the padded tail of a segment stays inside its slot, and before
        // any later segment, which starts on a sector boundary too.
        let base = r.offset + s.target_offset;
        if base % io_align != 0 {
            return Err(Error::Unaligned {
                segment: s.name.clone(),
                offset: base,
                align: io_align,
            });
        }
        plans.push(SegPlan {
            name: s.name.clone(),
            base,
            raw_len: s.raw_len,
        });
    }
    if !allow_partial {
        if let Some(g) = layout
            .groups
            .iter()
            .find(|g| !head.segments.iter().any(|s| s.target == g.name))
        {
            return Err(Error::PartialImage {
                group: g.name.clone(),
                slot: slot.letter(),
            });
        }
    }
    Ok(plans)
}

fn round_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Planned fetches closer than this are one request: reading a small gap
/// costs less than another round trip.
const MAX_RUN_GAP: u64 = 64 << 10;

/// Where the writer is.
struct Progress {
    /// Raw bytes done over all segments.
    done: u64,
    /// Raw offset of the last checkpoint in the current segment.
    last_ckpt: u64,
    seg: usize,
}

/// A run of authenticated raw chunks of one segment on its way from the
/// reader thread to the device.
enum Msg {
    Batch {
        seg: usize,
        /// Raw offset of the first byte in the segment.
        pos: u64,
        len: usize,
        buf: AlignedBuf,
        chunks: Vec<ChunkInfo>,
    },
    /// Chunks to copy from the seed slot (device offset each): their
    /// signed raw hashes matched it when the delta was planned.
    Seed {
        seg: usize,
        chunks: Vec<(ChunkInfo, u64)>,
    },
    Failed(fwimage::Error),
    /// Image bytes the reader read (sent once, at the end).
    Done {
        bytes_read: u64,
    },
}

struct Engine<'a> {
    storage: &'a mut dyn Storage,
    v: &'a Verified<'a>,
    /// Index pages for read-back checks outside the stream (resume,
    /// already-complete slots).
    index: Index<'a>,
    plans: &'a [SegPlan],
    opts: &'a ApplyOptions,
    io_align: u64,
    mem_align: usize,
    /// Only allocated when something is read back.
    readback: Option<AlignedBuf>,
    /// The delta's seed slot, for messages.
    seed_letter: char,
    report: ApplyReport,
}

impl Engine<'_> {
    fn head(&self) -> &ImageHead {
        self.v.head
    }

    fn chunk_size(&self) -> u64 {
        self.head().header.chunk_size()
    }

    fn readback_buf(&mut self) -> AlignedBuf {
        let len = round_up(self.chunk_size(), self.io_align.max(self.mem_align as u64)) as usize;
        self.readback
            .take()
            .unwrap_or_else(|| AlignedBuf::new(len, self.mem_align))
    }

    /// Reads one chunk back from the slot and compares it with its signed
    /// raw SHA-256.
    fn chunk_on_device(
        &mut self,
        seg: usize,
        raw_offset: u64,
        len: u64,
        want: &[u8; 32],
    ) -> Result<bool> {
        let mut buf = self.readback_buf();
        let st = &mut *self.storage;
        let plan = &self.plans[seg];
        let res = read_back(
            &mut |o, b| st.read_at(o, b),
            plan,
            self.io_align,
            &mut buf,
            (raw_offset, len as usize),
            want,
        );
        self.readback = Some(buf);
        self.report.bytes_read_back += round_up(len, self.io_align);
        res
    }

    /// Checks chunks of the slot in order, from the start up to (but not
    /// including) chunk `upto` of segment `seg`, against the signed index.
    /// Returns the first that does not match.
    fn first_bad_chunk(
        &mut self,
        src: &mut dyn ImageSource,
        (end_seg, end_chunk): (usize, u64),
        events: &mut dyn FnMut(&Event),
    ) -> Result<Option<(usize, u64)>> {
        let head = self.v.head;
        let cs = self.chunk_size();
        let total: u64 = (0..end_seg.min(self.plans.len()))
            .map(|s| self.plans[s].raw_len)
            .sum::<u64>()
            + end_chunk * cs;
        let mut done = 0;
        for seg in 0..=end_seg.min(self.plans.len().saturating_sub(1)) {
            let s = &head.segments[seg];
            let chunks = if seg == end_seg {
                end_chunk
            } else {
                u64::from(s.chunks)
            };
            for i in 0..chunks {
                let e = self.index.chunk(src, u64::from(s.first_chunk) + i)?;
                let len = s.chunk_raw_len(i, cs);
                if !self.chunk_on_device(seg, i * cs, len, &e.raw_sha256)? {
                    return Ok(Some((seg, i)));
                }
                done += len;
                events(&Event::Progress {
                    phase: Phase::Verify,
                    done: done.min(total),
                    total,
                });
            }
        }
        Ok(None)
    }

    /// The slot claims to hold this image. With `verify_writes`, prove it;
    /// returns the first chunk that does not match.
    fn check_complete_slot(
        &mut self,
        src: &mut dyn ImageSource,
        events: &mut dyn FnMut(&Event),
    ) -> Result<Option<(usize, u64)>> {
        if !self.opts.verify_writes {
            return Ok(None);
        }
        events(&Event::Phase(Phase::Verify));
        self.first_bad_chunk(src, (self.plans.len(), 0), events)
    }

    /// Decides where an interrupted apply of this image continues:
    /// `(segment, raw offset)`, or `None` for from scratch. Every chunk
    /// before that point is read back from the slot and must match its
    /// signed raw hash; the first that does not is where writing resumes.
    fn resume_point(
        &mut self,
        src: &mut dyn ImageSource,
        journal: Option<&Journal>,
        slot: Slot,
        events: &mut dyn FnMut(&Event),
    ) -> Result<Option<(u32, u64)>> {
        let Some(j) = journal else {
            return Ok(None);
        };
        let mut restart = |reason: String| {
            events(&Event::Restart { reason });
            Ok(None)
        };
        if j.image_id != self.report.image_id || j.slot != slot {
            return restart("the journal belongs to another image or slot".into());
        }
        let cs = self.chunk_size();
        let (mut seg, mut off) = (j.segment as usize, j.offset);
        let Some(plan) = self.plans.get(seg) else {
            return restart(format!(
                "journal names segment {seg}, the image has {}",
                self.plans.len()
            ));
        };
        if off > plan.raw_len || (off < plan.raw_len && off % cs != 0) {
            return restart(format!(
                "journal offset {off} is not a chunk boundary of segment {seg}"
            ));
        }
        if off == plan.raw_len {
            seg += 1;
            off = 0;
        }
        events(&Event::Phase(Phase::Verify));
        if let Some((bs, bc)) = self.first_bad_chunk(src, (seg, off / cs), events)? {
            events(&Event::Restart {
                reason: format!(
                    "segment `{}` chunk {bc}, before the checkpoint, does not read back as signed; writing from there",
                    self.plans[bs].name
                ),
            });
            (seg, off) = (bs, bc * cs);
            if (seg, off) == (0, 0) {
                return Ok(None);
            }
        }
        let skipped = self.plans[..seg].iter().map(|p| p.raw_len).sum::<u64>() + off;
        events(&Event::Resume {
            segment: seg as u32,
            offset: off,
            skipped,
        });
        Ok(Some((seg as u32, off)))
    }

    /// Streams segments from (`start_seg`, `start_off`) into the slot.
    fn write_data<S: ImageSource + Send>(
        &mut self,
        image: &mut S,
        area: &mut StateArea,
        start_seg: u32,
        start_off: u64,
        copy: Option<&[Option<u64>]>,
        events: &mut dyn FnMut(&Event),
    ) -> Result<()> {
        let start_seg = start_seg as usize;
        let v = self.v;
        let cs = self.chunk_size();
        let workers = checkers();
        // Fixed memory, whatever the core count: `workers + 1` buffers of
        // 2 × chunk_size / (workers + 2) each, whole chunks each: 1.5 MiB
        // at the default 1 MiB on two cores. A fourth buffer (one being
        // read while both checkers and the writer hold one) cost 0.5 MiB
        // of peak RSS, over the 8 MiB goal, for a reader that only waits
        // on a page-cache copy or the socket (docs/BENCHMARKS.md).
        let bufs = workers + 1;
        let share = 2 * self.opts.chunk_size as u64 / (workers as u64 + 2);
        let batch = (share / cs).max(1) as usize * cs as usize;
        let mem_align = self.mem_align;
        let io_align = self.io_align;
        let done_before: u64 = self.plans[..start_seg.min(self.plans.len())]
            .iter()
            .map(|p| p.raw_len)
            .sum();
        self.report.skipped_resume = done_before + start_off;
        if start_seg >= self.plans.len() {
            return Ok(());
        }
        let (plans, opts, seed_letter) = (self.plans, self.opts, self.seed_letter);
        let target = Target {
            shared: self.storage.shared_io(),
            storage: Mutex::new(&mut *self.storage),
        };
        let stages = Stages {
            target: &target,
            plans,
            stop: AtomicBool::new(false),
        };
        let report = &mut self.report;
        std::thread::scope(|scope| {
            // A pipeline of long-lived threads: the reader fetches stored
            // bytes, `workers` threads authenticate (and decode) whole
            // batches in parallel, this thread puts them back in order and
            // hands them to WRITERS writer threads (more than one O_DIRECT
            // write in flight), which with `verify_writes` read each batch
            // back into its own buffer once written while the other
            // writer's I/O goes on. The buffers circulate (reader →
            // checker → writer → reader), so memory is fixed: one per
            // checker and one more.
            let (job_tx, job_rx) = queue();
            let (ev_tx, ev_rx) = mpsc::channel::<Ev>();
            let (free_tx, free_rx) = queue();
            let (write_tx, write_rx) = queue();
            for _ in 0..bufs {
                let _ = free_tx.send((0, Job::Free(AlignedBuf::new(batch, mem_align))));
            }
            // Each pool shares its queue; the checkers' is dropped with
            // the last of them, which unblocks a reader waiting to hand
            // over a job. Only writers hand buffers back: a checker
            // holding a `free` sender would keep a stopped reader waiting.
            let (job_rx, write_rx) = (Arc::new(Mutex::new(job_rx)), Arc::new(Mutex::new(write_rx)));
            let pools = [
                ("fwpack-check", &job_rx, workers, false),
                ("fwpack-write", &write_rx, WRITERS, true),
            ];
            for (name, rx, n, gives_back) in pools {
                for _ in 0..n {
                    let (st, rx, out) = (&stages, rx.clone(), ev_tx.clone());
                    let free = gives_back.then(|| free_tx.clone());
                    std::thread::Builder::new()
                        .name(name.into())
                        .spawn_scoped(scope, move || stage(st, &rx, free.as_ref(), &out))
                        .map_err(Error::io("starting a pipeline thread"))?;
                }
            }
            drop((job_rx, write_rx, ev_tx));
            let reader = std::thread::Builder::new()
                .name("fwpack-read".into())
                .spawn_scoped(scope, move || {
                    produce(
                        v,
                        image,
                        (start_seg, start_off),
                        batch,
                        copy,
                        free_rx,
                        job_tx,
                    )
                })
                .map_err(Error::io("starting the image reader thread"))?;
            let mut pipe = Pipe {
                target: &target,
                plans,
                opts,
                io_align,
                mem_align,
                cs,
                seed_letter,
                report,
                readback: None,
                writes: write_tx,
                free: free_tx,
                events: ev_rx,
                waiting: Vec::new(),
                in_flight: 0,
            };
            let res = pipe.run(area, (start_seg, start_off), done_before, events);
            // After a failure, batches still queued are not written.
            // Dropping the channels unblocks the reader, the checkers and
            // the writers; the scope then waits for them, so no write is
            // under way when apply returns.
            stages.stop.store(true, Ordering::Release);
            drop(pipe);
            let _ = reader.join();
            res
        })
    }

    /// Hashes the seed slot chunk by chunk (at the image's chunk
    /// boundaries) and decides, for every chunk from `start` on, whether
    /// the seed holds its signed raw bytes somewhere; tells the source
    /// which stored ranges will be read. Returns, per chunk of the image,
    /// the seed's device offset to copy from.
    fn plan_delta(
        &mut self,
        src: &mut dyn ImageSource,
        layout: &crate::state::Layout,
        seed: Slot,
        (start_seg, start_off): (u32, u64),
        events: &mut dyn FnMut(&Event),
    ) -> Result<Vec<Option<u64>>> {
        let head = self.v.head;
        let cs = self.chunk_size();
        self.seed_letter = seed.letter();
        events(&Event::Phase(Phase::Verify));
        let mut have: HashMap<[u8; 32], u64> = HashMap::new();
        let total: u64 = head.segments.iter().map(|s| s.raw_len).sum();
        let mut hashed = 0;
        for s in &head.segments {
            let Some(g) = layout.group(&s.target) else {
                continue;
            };
            let r = g.slot(seed);
            let base = r.offset + s.target_offset;
            let avail = r.size.saturating_sub(s.target_offset);
            for i in 0..u64::from(s.chunks) {
                let len = s.chunk_raw_len(i, cs);
                if i * cs + len > avail {
                    break;
                }
                let dev_len = round_up(len, self.io_align) as usize;
                let mut buf = self.readback_buf();
                let got = self
                    .storage
                    .read_at(base + i * cs, &mut buf.as_mut_slice()[..dev_len]);
                let h =
                    got.map(|()| <[u8; 32]>::from(Sha256::digest(&buf.as_slice()[..len as usize])));
                self.readback = Some(buf);
                have.entry(h.map_err(Error::io("reading the seed slot"))?)
                    .or_insert(base + i * cs);
                hashed += len;
                events(&Event::Progress {
                    phase: Phase::Verify,
                    done: hashed,
                    total,
                });
            }
        }
        let mut copy = vec![None; head.header.chunk_count as usize];
        let mut runs: Vec<Range<u64>> = Vec::new();
        let (mut chunks, mut from_seed, mut fetch_bytes) = (0u64, 0u64, 0u64);
        for (si, s) in head.segments.iter().enumerate().skip(start_seg as usize) {
            let first = if si == start_seg as usize {
                start_off / cs
            } else {
                0
            };
            for i in first..u64::from(s.chunks) {
                let k = u64::from(s.first_chunk) + i;
                let e = self.index.chunk(src, k)?;
                chunks += 1;
                // A zero chunk (stored empty, docs/FORMAT.md) costs
                // nothing to fetch and is written as zeros: not worth a
                // read of the seed, nor a range.
                if e.stored_len == 0 {
                    continue;
                }
                if let Some(&at) = have.get(&e.raw_sha256) {
                    if let Some(c) = copy.get_mut(k as usize) {
                        *c = Some(at);
                        from_seed += 1;
                        continue;
                    }
                }
                let r = e.stored_offset..e.stored_offset + u64::from(e.stored_len);
                fetch_bytes += r.end - r.start;
                match runs.last_mut() {
                    Some(last) if r.start >= last.end && r.start - last.end <= MAX_RUN_GAP => {
                        last.end = r.end
                    }
                    _ => runs.push(r),
                }
            }
        }
        src.plan_reads(&runs);
        events(&Event::DeltaPlan {
            seed,
            chunks,
            from_seed,
            fetch_bytes,
            runs: runs.len(),
        });
        Ok(copy)
    }
}

/// Writer threads: two keep a write in flight while the other's batch
/// is handed over and its buffer goes back to the reader (one and three
/// measured within the noise of two on the host's disk;
/// docs/BENCHMARKS.md).
const WRITERS: usize = 2;

/// The sending end of a job queue.
type JobTx = mpsc::SyncSender<(u64, Job)>;

/// A job queue of the pipeline. All three (checkers, writers, free
/// buffers) carry one type and are made in one place with one constant
/// bound: one set of channel code in the device binary (a bound the
/// compiler cannot see would also keep the rendezvous flavour's). Batches
/// in flight are bounded by the buffers; 8 is more than the buffers (at
/// most 5), so a full queue does not hold the caller up in practice, and
/// the reader runs ahead only by messages that hold no buffer.
#[inline(never)]
fn queue() -> (JobTx, mpsc::Receiver<(u64, Job)>) {
    mpsc::sync_channel(8)
}

/// The target as the pipeline's threads see it: positional I/O through
/// the backend's shared handle where it has one (several writes in
/// flight on one descriptor), else through the lock, one call at a time.
/// Syncs and state-area writes always take the lock, on the caller's
/// thread.
struct Target<'s> {
    storage: Mutex<&'s mut dyn Storage>,
    shared: Option<Arc<dyn SharedIo>>,
}

impl<'s> Target<'s> {
    fn lock(&self) -> MutexGuard<'_, &'s mut dyn Storage> {
        // A poisoned lock means another pipeline thread panicked; the
        // storage itself holds no invariant a panic could break.
        self.storage.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match &self.shared {
            Some(h) => h.read_at(offset, buf),
            None => self.lock().read_at(offset, buf),
        }
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        match &self.shared {
            Some(h) => h.write_at(offset, buf),
            None => self.lock().write_at(offset, buf),
        }
    }
}

/// What the pipeline's stages tell the caller's thread.
enum Ev {
    /// A checker's result, numbered in the reader's order.
    Checked(u64, Msg),
    /// A writer finished one batch: bytes written and read back, or why
    /// not (the write's I/O error, the read-back's, or a mismatch).
    Wrote(Result<(u64, u64)>),
}

/// What the checkers and writers share.
struct Stages<'p, 's> {
    target: &'p Target<'s>,
    plans: &'p [SegPlan],
    /// The caller has stopped (done or failed): queued writes are
    /// dropped, not done.
    stop: AtomicBool,
}

/// A pipeline thread: runs the jobs of its queue until the reader or
/// the caller hangs up. One function for both pools (checkers, writers):
/// one thread body in the device binary. A writer hands the buffer back
/// (`free`) before it reports, so the next read overlaps the caller's
/// booking.
fn stage(
    st: &Stages<'_, '_>,
    jobs: &Mutex<mpsc::Receiver<(u64, Job)>>,
    free: Option<&JobTx>,
    out: &mpsc::Sender<Ev>,
) {
    let mut dec = fwimage::BatchDecoder::default();
    loop {
        // The lock is held only while waiting for the next job.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, job)) = job else {
            return;
        };
        let ev = match job {
            Job::Pass(m) => Ev::Checked(seq, m),
            Job::Check { batch, mut buf } => Ev::Checked(
                seq,
                match batch.verify(buf.as_mut_slice(), &mut dec) {
                    Ok(chunks) => Msg::Batch {
                        seg: batch.segment(),
                        pos: batch.raw_offset(),
                        len: batch.raw_len(),
                        buf,
                        chunks,
                    },
                    Err(e) => Msg::Failed(e),
                },
            ),
            Job::Write {
                seg,
                dev_off,
                len,
                mut buf,
                prove,
            } => {
                let res = if st.stop.load(Ordering::Acquire) {
                    Err(stopped())
                } else {
                    let plan = &st.plans[seg];
                    write_and_prove(
                        st.target,
                        plan,
                        dev_off,
                        &mut buf.as_mut_slice()[..len],
                        &prove,
                    )
                };
                if let Some(f) = free {
                    let _ = f.send((0, Job::Free(buf)));
                }
                Ev::Wrote(res)
            }
            // Only the reader takes buffers.
            Job::Free(_) => continue,
        };
        if out.send(ev).is_err() {
            return;
        }
    }
}

/// A writer's job: `data` (a batch, sector-padded) at `dev_off` of
/// segment `plan`; then, with `verify_writes` (`prove` not empty), the same
/// range read back into the same buffer in one request and every chunk
/// of it compared with its signed raw SHA-256. Returns the bytes written
/// and read back.
///
/// Reading back here, before the checkpoint's sync, checks what reading
/// after it would: the read goes where the write went (with O_DIRECT the
/// device, not the page cache; without it the page cache either way, as
/// a sync does not drop it), and a device answers a read after a cache
/// flush from the same cache it answered before. What the journal may
/// claim does not change: a checkpoint is claimed only once every write
/// before it and its read-back completed and matched (the caller waits
/// for all of them) and then the sync returned. Reading into the batch's
/// own buffer costs no memory, and one read of the whole batch (512 KiB
/// at the defaults) instead of 128 KiB pieces took 1.3–2× less time per
/// byte from one thread on the host's disk (docs/BENCHMARKS.md).
fn write_and_prove(
    target: &Target<'_>,
    plan: &SegPlan,
    dev_off: u64,
    data: &mut [u8],
    prove: &[ChunkInfo],
) -> Result<(u64, u64)> {
    target
        .write_at(dev_off, data)
        .map_err(Error::io(format!("writing segment `{}`", plan.name)))?;
    let written = data.len() as u64;
    if prove.is_empty() {
        return Ok((written, 0));
    }
    // `read_at` fills all of `data` or fails (the `Storage` and
    // `SharedIo` contract: short reads are errors), so no written byte is
    // left in the buffer to pass for a read one. Not zeroed first: that
    // memset was 6 % of a verify apply's CPU (perf).
    target
        .read_at(dev_off, data)
        .map_err(Error::io(format!("reading back segment `{}`", plan.name)))?;
    // On x86_64 two chunks' hashes at once (sha256x2: SHA-NI rounds of
    // both interleaved), still compared in order, so the error names the
    // first chunk that does not match. Other targets keep the loop below
    // as it was (the aarch64 device build does not change).
    #[cfg(target_arch = "x86_64")]
    prove_pairs(plan, dev_off, data, prove)?;
    #[cfg(not(target_arch = "x86_64"))]
    for c in prove {
        let at = (plan.base + c.raw_offset).checked_sub(dev_off);
        let raw = at.and_then(|a| data.get(a as usize..a as usize + c.raw_len));
        if raw.is_none_or(|r| <[u8; 32]>::from(Sha256::digest(r)) != c.raw_sha256) {
            return Err(Error::ReadBack {
                segment: plan.name.clone(),
                block: c.chunk,
                offset: plan.base + c.raw_offset,
            });
        }
    }
    Ok((written, written))
}

/// [`write_and_prove`]'s check on x86_64: every chunk of `prove` in
/// `data` (read back from `dev_off`) against its signed raw SHA-256, two
/// hashed at a time, compared in order.
#[cfg(target_arch = "x86_64")]
fn prove_pairs(plan: &SegPlan, dev_off: u64, data: &[u8], prove: &[ChunkInfo]) -> Result<()> {
    let raw_of = |c: &ChunkInfo| {
        let at = (plan.base + c.raw_offset).checked_sub(dev_off);
        at.and_then(|a| data.get(a as usize..a as usize + c.raw_len))
    };
    let bad = |c: &ChunkInfo| Error::ReadBack {
        segment: plan.name.clone(),
        block: c.chunk,
        offset: plan.base + c.raw_offset,
    };
    for pair in prove.chunks(2) {
        if let [c0, c1] = pair {
            if let (Some(r0), Some(r1)) = (raw_of(c0), raw_of(c1)) {
                let [h0, h1] = sha256x2::digest2(r0, r1);
                if h0 != c0.raw_sha256 {
                    return Err(bad(c0));
                }
                if h1 != c1.raw_sha256 {
                    return Err(bad(c1));
                }
                continue;
            }
        }
        for c in pair {
            if raw_of(c).is_none_or(|r| <[u8; 32]>::from(Sha256::digest(r)) != c.raw_sha256) {
                return Err(bad(c));
            }
        }
    }
    Ok(())
}

/// Reads `len` raw bytes at `raw_offset` of a segment back from the
/// target with `read` (sector-padded, in pieces of `buf`'s length, a
/// multiple of the sector size) and compares them with their signed raw
/// SHA-256.
fn read_back(
    read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
    plan: &SegPlan,
    io_align: u64,
    buf: &mut AlignedBuf,
    (raw_offset, len): (u64, usize),
    want: &[u8; 32],
) -> Result<bool> {
    let what = || format!("reading back segment `{}`", plan.name);
    let dev_len = round_up(len as u64, io_align) as usize;
    let piece = buf.len();
    if piece == 0 || !(piece as u64).is_multiple_of(io_align) {
        return Err(Error::io(what())(io::Error::other(
            "read-back buffer not a whole number of sectors",
        )));
    }
    let mut h = Sha256::new();
    let mut at = 0;
    while at < dev_len {
        let n = piece.min(dev_len - at);
        let b = &mut buf.as_mut_slice()[..n];
        read(plan.base + raw_offset + at as u64, b).map_err(Error::io(what()))?;
        h.update(&b[..n.min(len.saturating_sub(at))]);
        at += n;
    }
    Ok(<[u8; 32]>::from(h.finalize()) == *want)
}

/// The caller's thread in the pipeline: restores the reader's order,
/// hands batches to the writers, and decides checkpoints — every write
/// before one completed (and, with `verify_writes`, was read back and
/// matched), then sync, and only then the journal.
struct Pipe<'p, 's> {
    target: &'p Target<'s>,
    plans: &'p [SegPlan],
    opts: &'p ApplyOptions,
    io_align: u64,
    mem_align: usize,
    cs: u64,
    seed_letter: char,
    report: &'p mut ApplyReport,
    /// Seed copies and `minimize_writes` (done on this thread).
    readback: Option<AlignedBuf>,
    writes: JobTx,
    free: JobTx,
    events: mpsc::Receiver<Ev>,
    /// Checked batches ahead of the next in order (at most one per buffer).
    waiting: Vec<(u64, Msg)>,
    /// Batches handed to the writers and not yet reported.
    in_flight: usize,
}

impl Pipe<'_, '_> {
    fn run(
        &mut self,
        area: &mut StateArea,
        (start_seg, start_off): (usize, u64),
        done_before: u64,
        events: &mut dyn FnMut(&Event),
    ) -> Result<()> {
        let mut p = Progress {
            done: done_before + start_off,
            last_ckpt: start_off,
            seg: start_seg,
        };
        let mut next = 0u64;
        loop {
            let Some(i) = self.waiting.iter().position(|(seq, _)| *seq == next) else {
                self.pump()?;
                continue;
            };
            let msg = self.waiting.swap_remove(i).1;
            next += 1;
            match msg {
                Msg::Batch {
                    seg,
                    pos,
                    len,
                    mut buf,
                    chunks,
                } => {
                    // Zero the sector padding after a segment's last byte:
                    // it is written whole (no read-modify-write), never stale.
                    let dev_len = round_up(len as u64, self.io_align) as usize;
                    buf.as_mut_slice()[len..dev_len].fill(0);
                    let dev_off = self.plans[seg].base + pos;
                    let raw: u64 = chunks.iter().map(|c| c.raw_len as u64).sum();
                    if self.opts.minimize_writes {
                        let res = self.write_changed(dev_off, &buf.as_slice()[..dev_len], len);
                        let _ = self.free.send((0, Job::Free(buf)));
                        res?;
                        for c in &chunks {
                            self.prove_here(seg, c)?;
                        }
                    } else {
                        let prove = if self.opts.verify_writes {
                            chunks
                        } else {
                            Vec::new()
                        };
                        let job = Job::Write {
                            seg,
                            dev_off,
                            len: dev_len,
                            buf,
                            prove,
                        };
                        self.writes.send((0, job)).map_err(|_| stopped())?;
                        self.in_flight += 1;
                    }
                    self.wrote(area, &mut p, seg, pos + len as u64, raw, events)?;
                }
                Msg::Seed { seg, chunks } => {
                    for (c, from) in chunks {
                        self.copy_from_seed(seg, &c, from)?;
                        self.prove_here(seg, &c)?;
                        let end = c.raw_offset + c.raw_len as u64;
                        self.wrote(area, &mut p, seg, end, c.raw_len as u64, events)?;
                    }
                }
                Msg::Failed(e) => return Err(e.into()),
                Msg::Done { bytes_read } => {
                    self.report.image_bytes_read += bytes_read;
                    break;
                }
            }
        }
        // The last checkpoint waited for its writes (and read-backs).
        while self.in_flight > 0 {
            self.pump()?;
        }
        if p.done != self.report.raw_bytes {
            return Err(Error::Io {
                what: "reading the image".into(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the image reader stopped before the end",
                ),
            });
        }
        Ok(())
    }

    /// Takes one report from the stages: a checked batch is kept for its
    /// turn, a write (and read-back) result is booked; a failure stops the
    /// apply with nothing more claimed.
    fn pump(&mut self) -> Result<()> {
        match self.events.recv().map_err(|_| stopped())? {
            Ev::Checked(seq, msg) => self.waiting.push((seq, msg)),
            Ev::Wrote(res) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                let (written, read) = res?;
                self.report.bytes_written += written;
                self.report.bytes_read_back += read;
            }
        }
        Ok(())
    }

    /// Books `len` raw bytes of `seg` up to `end` as handed to the
    /// writers; checkpoints every interval and at a segment's end: every
    /// write before it completed (and, with `verify_writes`, was read back
    /// and matched its signed hash), then sync, and only then claimed by
    /// the journal.
    fn wrote(
        &mut self,
        area: &mut StateArea,
        p: &mut Progress,
        seg: usize,
        end: u64,
        len: u64,
        events: &mut dyn FnMut(&Event),
    ) -> Result<()> {
        if seg != p.seg {
            p.seg = seg;
            p.last_ckpt = 0;
        }
        p.done += len;
        events(&Event::Progress {
            phase: Phase::Write,
            done: p.done,
            total: self.report.raw_bytes,
        });
        let interval = round_up(self.opts.checkpoint_interval, self.cs);
        if end - p.last_ckpt < interval && end != self.plans[seg].raw_len {
            return Ok(());
        }
        // Durable means written: wait for every write before this point
        // and its read-back (later batches are not handed out until this
        // returns); a failed one stops the apply here, unclaimed.
        while self.in_flight > 0 {
            self.pump()?;
        }
        self.target
            .lock()
            .sync()
            .map_err(Error::io("syncing the target"))?;
        let j = Journal {
            image_id: self.report.image_id,
            slot: self.report.slot,
            segment: seg as u32,
            offset: end,
            verified: self.opts.verify_writes,
            done_bytes: p.done,
            source: self.opts.source.clone(),
        };
        p.last_ckpt = end;
        self.claim(area, j, events)
    }

    /// The journal claims a checkpoint (synced, and proven if asked).
    fn claim(
        &mut self,
        area: &mut StateArea,
        j: Journal,
        events: &mut dyn FnMut(&Event),
    ) -> Result<()> {
        let (segment, offset, done) = (j.segment, j.offset, j.done_bytes);
        let mut st = self.target.lock();
        area.write_journal(&mut **st, Some(j))?;
        self.report.checkpoints += 1;
        events(&Event::Checkpoint {
            segment,
            offset,
            done,
            verified: self.opts.verify_writes,
        });
        if let Some(w) = st.take_warning() {
            events(&Event::Warning(w));
        }
        Ok(())
    }

    fn readback_buf(&mut self) -> AlignedBuf {
        let len = round_up(self.cs, self.io_align.max(self.mem_align as u64)) as usize;
        self.readback
            .take()
            .unwrap_or_else(|| AlignedBuf::new(len, self.mem_align))
    }

    /// `verify_writes` for what this thread wrote itself (seed copies,
    /// `minimize_writes`): reads chunk `c` back now and compares it with
    /// its signed raw hash, before the next checkpoint's sync (see
    /// [`write_and_prove`] for why that checks the same).
    fn prove_here(&mut self, seg: usize, c: &ChunkInfo) -> Result<()> {
        if !self.opts.verify_writes {
            return Ok(());
        }
        let mut buf = self.readback_buf();
        let plan = &self.plans[seg];
        let target = self.target;
        let res = read_back(
            &mut |o, b| target.read_at(o, b),
            plan,
            self.io_align,
            &mut buf,
            (c.raw_offset, c.raw_len),
            &c.raw_sha256,
        );
        self.readback = Some(buf);
        if !res? {
            return Err(Error::ReadBack {
                segment: plan.name.clone(),
                block: c.chunk,
                offset: plan.base + c.raw_offset,
            });
        }
        self.report.bytes_read_back += round_up(c.raw_len as u64, self.io_align);
        Ok(())
    }

    /// One chunk from the seed slot, checked against its signed raw hash
    /// again (the seed may have changed since the plan), then written on
    /// this thread (the next checkpoint waits for it like for any write).
    fn copy_from_seed(&mut self, seg: usize, c: &ChunkInfo, from: u64) -> Result<()> {
        let dev_len = round_up(c.raw_len as u64, self.io_align) as usize;
        let mut buf = self.readback_buf();
        let res = (|| {
            let b = &mut buf.as_mut_slice()[..dev_len];
            self.target
                .read_at(from, b)
                .map_err(Error::io("reading the seed slot"))?;
            if <[u8; 32]>::from(Sha256::digest(&b[..c.raw_len])) != c.raw_sha256 {
                return Err(Error::SeedChanged {
                    slot: self.seed_letter,
                    segment: self.plans[seg].name.clone(),
                    chunk: c.chunk,
                });
            }
            b[c.raw_len..].fill(0);
            let dev_off = self.plans[seg].base + c.raw_offset;
            let data = &buf.as_slice()[..dev_len];
            if self.opts.minimize_writes {
                self.write_changed(dev_off, data, c.raw_len)
            } else {
                self.target
                    .write_at(dev_off, data)
                    .map_err(Error::io(format!(
                        "writing segment `{}`",
                        self.plans[seg].name
                    )))?;
                self.report.bytes_written += dev_len as u64;
                Ok(())
            }
        })();
        self.readback = Some(buf);
        self.report.bytes_from_seed += c.raw_len as u64;
        res
    }

    /// `minimize_writes`: reads the target range and writes only the 4 KiB
    /// blocks whose first `raw` bytes differ (the rest is sector padding).
    fn write_changed(&mut self, dev_off: u64, data: &[u8], raw: usize) -> Result<()> {
        let mut rb = self.readback_buf();
        let res = (|| {
            let mut p = 0;
            while p < data.len() {
                let end = (p + rb.len()).min(data.len());
                let (d, cur) = (&data[p..end], &mut rb.as_mut_slice()[..end - p]);
                let raw_here = raw.saturating_sub(p).min(d.len());
                let at = dev_off + p as u64;
                self.target
                    .read_at(at, cur)
                    .map_err(Error::io("reading the target (minimize writes)"))?;
                self.report.bytes_read_back += d.len() as u64;
                let blocks = d.len().div_ceil(BLOCK_SIZE);
                let mut run: Option<usize> = None;
                for b in 0..=blocks {
                    let o = (b * BLOCK_SIZE).min(d.len());
                    let raw_end = (o + BLOCK_SIZE).min(raw_here);
                    let differs = b < blocks && o < raw_end && d[o..raw_end] != cur[o..raw_end];
                    if differs {
                        run.get_or_insert(o);
                        continue;
                    }
                    if b < blocks {
                        self.report.skipped_unchanged += raw_end.saturating_sub(o) as u64;
                    }
                    if let Some(s) = run.take() {
                        self.target
                            .write_at(at + s as u64, &d[s..o])
                            .map_err(Error::io("writing the target"))?;
                        self.report.bytes_written += (o - s) as u64;
                    }
                }
                p = end;
            }
            Ok(())
        })();
        self.readback = Some(rb);
        res
    }
}

/// A pipeline stage hung up before the end (it can only have panicked).
fn stopped() -> Error {
    Error::Io {
        what: "applying the image".into(),
        source: io::Error::other("a pipeline thread stopped"),
    }
}

/// How many threads authenticate batches: every core (the reader and
/// the writer mostly wait on I/O), at most 4. Asked once per apply.
fn checkers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4))
}

/// A job for a pipeline thread ([`stage`]).
enum Job {
    /// Stored bytes of a batch, not yet authenticated, in `buf`.
    Check {
        batch: fwimage::PendingBatch,
        buf: AlignedBuf,
    },
    /// Passed on to the writer as is.
    Pass(Msg),
    /// For a writer thread: `len` bytes of `buf` at device offset
    /// `dev_off` (segment `seg`, for messages); with `verify_writes`, the
    /// chunks in it, read back into `buf` once written ([`write_and_prove`]).
    Write {
        seg: usize,
        dev_off: u64,
        len: usize,
        buf: AlignedBuf,
        prove: Vec<ChunkInfo>,
    },
    /// For the reader: an empty buffer to fill (the buffers circulate in
    /// a queue of this type too: no channel code of its own).
    Free(AlignedBuf),
}

/// The reader thread: stored bytes of every segment from `start` on,
/// batched per segment, for the checkers; chunks in `copy` are passed on
/// as seed copies without reading them. Stops quietly when the consumer
/// hangs up. Every message is numbered: the writer restores this order.
fn produce<S: ImageSource>(
    v: &Verified<'_>,
    image: &mut S,
    (seg, off): (usize, u64),
    batch: usize,
    copy: Option<&[Option<u64>]>,
    free: mpsc::Receiver<(u64, Job)>,
    jobs: JobTx,
) {
    let mut seq = 0u64;
    let mut send = |job: Job| {
        seq += 1;
        jobs.send((seq - 1, job)).is_ok()
    };
    let mut rd = match ChunkReader::start_at(v, &mut *image, seg, off) {
        Ok(r) => r,
        Err(e) => {
            send(Job::Pass(Msg::Failed(e)));
            return;
        }
    };
    let cs = v.head.header.chunk_size();
    let seed_of = |k: u64| copy.and_then(|c| c.get(k as usize).copied().flatten());
    loop {
        let (seg, chunk) = rd.position();
        let Some(s) = v.head.segments.get(seg) else {
            break;
        };
        let first = u64::from(s.first_chunk);
        let left = u64::from(s.chunks) - chunk;
        let per_batch = (batch as u64 / cs).max(1);
        // The run of chunks of one kind (copied or read) that starts here.
        let copied = seed_of(first + chunk).is_some();
        let n = (0..left.min(per_batch))
            .take_while(|&j| seed_of(first + chunk + j).is_some() == copied)
            .count() as u64;
        let job = if copied {
            let chunks: fwimage::Result<Vec<_>> = (chunk..chunk + n)
                .map(|i| {
                    let e = rd.entry(seg, i)?;
                    let c = ChunkInfo {
                        segment: seg,
                        chunk: i,
                        raw_offset: i * cs,
                        raw_len: s.chunk_raw_len(i, cs) as usize,
                        raw_sha256: e.raw_sha256,
                    };
                    Ok((c, seed_of(first + i).unwrap_or(0)))
                })
                .collect();
            let moved = chunks.and_then(|c| {
                rd.seek(seg, ((chunk + n) * cs).min(s.raw_len))?;
                Ok(c)
            });
            Job::Pass(match moved {
                Ok(chunks) => Msg::Seed { seg, chunks },
                Err(e) => Msg::Failed(e),
            })
        } else {
            let Ok((_, Job::Free(mut buf))) = free.recv() else {
                return;
            };
            let limit = ((n * cs) as usize).min(batch);
            match rd.read_batch(&mut buf.as_mut_slice()[..limit]) {
                Ok(Some(batch)) => Job::Check { batch, buf },
                Ok(None) => break,
                Err(e) => Job::Pass(Msg::Failed(e)),
            }
        };
        let failed = matches!(job, Job::Pass(Msg::Failed(_)));
        if !send(job) || failed {
            return;
        }
    }
    let bytes_read = rd.index_bytes_read() + rd.data_bytes_read;
    send(Job::Pass(Msg::Done { bytes_read }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk read back in pieces smaller than itself (the read-back
    /// threads' buffers), with a padded tail, hashes as a whole; a byte
    /// changed in any piece, and only the raw bytes (not the padding),
    /// make it differ.
    #[test]
    fn read_back_in_pieces_hashes_the_whole_chunk() {
        let len = 3 * 4096 + 700;
        let disk: Vec<u8> = (0..8 * 4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let plan = SegPlan {
            name: "rootfs".into(),
            base: 4096,
            raw_len: len as u64,
        };
        let want: [u8; 32] = Sha256::digest(&disk[4096..4096 + len]).into();
        let check = |disk: &[u8], piece: usize| {
            let mut buf = AlignedBuf::new(piece, 4096);
            let mut reads = 0;
            let mut read = |o: u64, b: &mut [u8]| {
                reads += 1;
                b.copy_from_slice(&disk[o as usize..o as usize + b.len()]);
                Ok(())
            };
            let same = read_back(&mut read, &plan, 512, &mut buf, (0, len), &want).unwrap();
            (same, reads)
        };
        assert_eq!(check(&disk, 16 * 1024), (true, 1));
        assert_eq!(check(&disk, 4096), (true, 4));
        let mut padding_changed = disk.clone();
        padding_changed[4096 + len + 1] ^= 1;
        assert_eq!(check(&padding_changed, 4096), (true, 4));
        for at in [0, 4096, 3 * 4096 + 699] {
            let mut d = disk.clone();
            d[4096 + at] ^= 1;
            assert_eq!(check(&d, 4096), (false, 4), "byte {at}");
        }
        let mut odd = AlignedBuf::new(1000, 4096);
        let mut read = |_: u64, _: &mut [u8]| Ok(());
        assert!(read_back(&mut read, &plan, 512, &mut odd, (0, len), &want).is_err());
    }
}
