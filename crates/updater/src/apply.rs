//! The apply engine: a signed image onto the inactive slot of a target,
//! in an order that survives a power cut at any point.
//!
//! 1. Check, before any write: signature, board, anti-rollback version,
//!    every segment fits its slot, nothing in use (busy), then a full
//!    verification pass over the image (every CRC block, every SHA-256).
//! 2. Mark the slot `updating` (it stops being pending) — sync.
//! 3. Stream the data (re-verified as it is read, so an image that changes
//!    after step 1 is still caught), with checkpoints: fdatasync the data,
//!    optionally read it back against the CRC chain, then record the
//!    position in the journal — sync.
//! 4. Commit in one state-record write: the slot `complete`, pending
//!    with N tries, the journal idle — sync.
//!
//! The active slot is never written. A cut anywhere leaves it active and
//! intact, and the new slot either complete (and pending, or one re-run
//! away from it) or `updating`, which is never booted. A re-run with the
//! same image continues from the last checkpoint.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::mpsc;

use fwimage::{CrcChain, ImageHead, KeyId, SegmentReader, TrustedKeys, BLOCK_SIZE};
use sha2::{Digest, Sha256};

use crate::event::{Event, Phase};
use crate::state::{
    Journal, Slot, SlotState, StateArea, StateLocation, DEFAULT_STATE_COPY_DISTANCE,
    DEFAULT_STATE_OFFSET,
};
use crate::storage::{AlignedBuf, Storage};
use crate::{Error, Result};

const BLOCK: u64 = BLOCK_SIZE as u64;
/// Read-back and compare granularity: smaller than a write chunk, since
/// it only costs a few more (sequential) reads and keeps memory down.
const READBACK_LEN: usize = 256 << 10;

/// How to apply.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Slot to write; default: the inactive one.
    pub slot: Option<Slot>,
    /// Where the state area is on the target.
    pub state_offset: u64,
    /// Distance from its copy 0 to its copy 1.
    pub state_copy_distance: u64,
    /// Read every written range back and check it against the CRC chain
    /// before the journal records it.
    pub verify_writes: bool,
    /// Read the target first and write only blocks that differ.
    pub minimize_writes: bool,
    /// Apply even if the target is in use.
    pub force: bool,
    /// Accept an image that leaves some slot group of the slot unwritten.
    pub allow_partial: bool,
    /// Make the slot pending when done (else it is only marked complete).
    pub activate: bool,
    /// Trial boots of the new slot before falling back.
    pub tries: u8,
    /// Bytes per device write; a multiple of 4096.
    pub chunk_size: usize,
    /// Raw bytes between journal checkpoints (rounded up to chunks).
    pub checkpoint_interval: u64,
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
            tries: 3,
            chunk_size: 1 << 20,
            checkpoint_interval: 32 << 20,
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
    pub checkpoints: u64,
    /// Where an interrupted run was continued from.
    pub resumed_from: Option<(u32, u64)>,
    /// The slot already held this image, complete; no data was written.
    pub already_complete: bool,
    /// The slot is pending (boots next, on trial).
    pub pending: bool,
    pub direct_io: bool,
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
pub fn apply<R: Read + Seek + Send>(
    mut image: R,
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
    image
        .seek(SeekFrom::Start(0))
        .map_err(Error::io("reading the image"))?;
    let head = ImageHead::read(&mut image, image_len)?;
    let key_id = head.verify_signature(trusted)?;
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
    let slot = opts.slot.unwrap_or(boot.inactive());
    if slot == active {
        return Err(Error::ActiveSlot(slot.letter()));
    }
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

    events(&Event::Phase(Phase::Verify));
    let mut verified = 0u64;
    head.verify(trusted, &mut image, &mut |n| {
        verified += n;
        events(&Event::Progress {
            phase: Phase::Verify,
            done: verified,
            total: raw_total,
        });
    })?;

    let id = image_id(&head);
    let mut e = Engine {
        storage,
        head: &head,
        plans: &plans,
        opts,
        io_align,
        mem_align,
        readback: None,
        report: ApplyReport {
            slot,
            image_id: id,
            board: h.board.clone(),
            version: h.payload_version,
            label: h.version_label.clone(),
            key_id,
            segments: plans.len(),
            raw_bytes: raw_total,
            bytes_written: 0,
            skipped_resume: 0,
            skipped_unchanged: 0,
            bytes_read_back: 0,
            checkpoints: 0,
            resumed_from: None,
            already_complete: false,
            pending: false,
            direct_io: false,
        },
    };

    let info = boot.slot(slot);
    let mut start = None;
    if info.state == SlotState::Complete && info.image_id == id {
        match e.check_complete_slot(events) {
            Ok(()) => {
                e.report.already_complete = true;
                events(&Event::AlreadyComplete { slot });
            }
            Err(Error::ReadBack { segment, block, .. }) => events(&Event::Restart {
                reason: format!(
                    "slot {slot} was marked complete with this image but segment `{segment}` block {block} reads back wrong; rewriting it"
                ),
            }),
            Err(other) => return Err(other),
        }
    } else if info.state == SlotState::Updating && info.image_id == id {
        start = e.resume_point(area.journal(), slot, events)?;
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
        let (seg, off, prefix_verified) = match start {
            Some(s) => s,
            None => {
                if area.journal().is_some() {
                    area.write_journal(e.storage, None)?;
                }
                (0, 0, true)
            }
        };
        if start.is_some() {
            e.report.resumed_from = Some((seg, off));
        }
        e.write_data(&mut image, &mut area, seg, off, prefix_verified, events)?;
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
    Ok(e.report)
}

/// Refuses a busy target unless forced. With `notes`, also reports what
/// is in use but no reason to refuse.
fn check_busy(
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
    if opts.activate && opts.tries == 0 {
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

/// A chunk of verified raw bytes on its way from the reader thread.
enum Msg {
    Chunk {
        seg: usize,
        pos: u64,
        len: usize,
        buf: AlignedBuf,
    },
    Failed(fwimage::Error),
}

struct Engine<'a> {
    storage: &'a mut dyn Storage,
    head: &'a ImageHead,
    plans: &'a [SegPlan],
    opts: &'a ApplyOptions,
    io_align: u64,
    mem_align: usize,
    /// Only allocated when something is read back.
    readback: Option<AlignedBuf>,
    report: ApplyReport,
}

impl Engine<'_> {
    fn readback_buf(&mut self) -> AlignedBuf {
        let len = READBACK_LEN.min(self.opts.chunk_size);
        self.readback
            .take()
            .unwrap_or_else(|| AlignedBuf::new(len, self.mem_align))
    }

    /// Reads raw bytes `[from, to)` of segment `seg` back from the device
    /// and checks them against the signed CRC chain. `from` is a multiple
    /// of 4096.
    fn verify_range(&mut self, seg: usize, from: u64, to: u64) -> Result<()> {
        let plan = &self.plans[seg];
        let crcs = self.head.segment_crcs(seg);
        let first = from / BLOCK;
        let mut chain = CrcChain::resume(match first.checked_sub(1) {
            None => self.head.crc_seed(seg),
            Some(i) => crcs.get(i as usize).unwrap_or(0),
        });
        let mut buf = self.readback_buf();
        let mut pos = from;
        let res = (|| {
            while pos < to {
                let n = (to - pos).min(buf.len() as u64);
                let dev_len = round_up(n, self.io_align) as usize;
                let dev_off = plan.base + pos;
                let b = &mut buf.as_mut_slice()[..dev_len];
                self.storage
                    .read_at(dev_off, b)
                    .map_err(Error::io(format!("reading back segment `{}`", plan.name)))?;
                self.report.bytes_read_back += dev_len as u64;
                for (i, block) in b[..n as usize].chunks(BLOCK_SIZE).enumerate() {
                    let idx = pos / BLOCK + i as u64;
                    if Some(chain.push(block)) != crcs.get(idx as usize) {
                        return Err(Error::ReadBack {
                            segment: plan.name.clone(),
                            block: idx,
                            offset: plan.base + idx * BLOCK,
                        });
                    }
                }
                pos += n;
            }
            Ok(())
        })();
        self.readback = Some(buf);
        res
    }

    /// The slot claims to hold this image. With `verify_writes`, prove it.
    fn check_complete_slot(&mut self, events: &mut dyn FnMut(&Event)) -> Result<()> {
        if !self.opts.verify_writes {
            return Ok(());
        }
        // A second verification pass, over the device this time.
        events(&Event::Phase(Phase::Verify));
        let mut done = 0;
        for seg in 0..self.plans.len() {
            let len = self.plans[seg].raw_len;
            self.verify_range(seg, 0, len)?;
            done += len;
            events(&Event::Progress {
                phase: Phase::Verify,
                done,
                total: self.report.raw_bytes,
            });
        }
        Ok(())
    }

    /// Decides where an interrupted apply of this image continues:
    /// `(segment, offset, prefix_verified)`, or `None` for from scratch.
    fn resume_point(
        &mut self,
        journal: Option<&Journal>,
        slot: Slot,
        events: &mut dyn FnMut(&Event),
    ) -> Result<Option<(u32, u64, bool)>> {
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
        let (mut seg, mut off) = (j.segment as usize, j.offset);
        let Some(plan) = self.plans.get(seg) else {
            return restart(format!(
                "journal names segment {seg}, the image has {}",
                self.plans.len()
            ));
        };
        if off > plan.raw_len
            || (off < plan.raw_len && (off % BLOCK != 0 || off % self.io_align != 0))
        {
            return restart(format!(
                "journal offset {off} is not a block boundary of segment {seg}"
            ));
        }
        if off == plan.raw_len {
            seg += 1;
            off = 0;
        }
        // The block just before the checkpoint must read back as the image
        // says: a device that lost or reordered "durable" writes, or that
        // someone else wrote to, is caught here instead of trusted.
        let boundary = if off > 0 {
            Some((seg, off - BLOCK, off))
        } else if seg > 0 {
            let len = self.plans[seg - 1].raw_len;
            let last = len.saturating_sub(1) / BLOCK * BLOCK;
            Some((seg - 1, last, len))
        } else {
            None
        };
        let mut prefix_verified = j.verified;
        let check = if self.opts.verify_writes && !j.verified {
            // Asked to verify, but the interrupted run did not read its
            // writes back: check the whole prefix now (read only).
            let mut ranges: Vec<(usize, u64, u64)> =
                (0..seg).map(|s| (s, 0, self.plans[s].raw_len)).collect();
            if off > 0 {
                ranges.push((seg, 0, off));
            }
            prefix_verified = true;
            ranges
        } else {
            boundary.into_iter().collect()
        };
        for (bs, from, to) in check {
            match self.verify_range(bs, from, to) {
                Ok(()) => {}
                Err(Error::ReadBack { segment, block, .. }) => {
                    return restart(format!(
                        "segment `{segment}` block {block}, before the checkpoint, does not read back as the image"
                    ))
                }
                Err(other) => return Err(other),
            }
        }
        let skipped = self.plans[..seg].iter().map(|p| p.raw_len).sum::<u64>() + off;
        events(&Event::Resume {
            segment: seg as u32,
            offset: off,
            skipped,
        });
        Ok(Some((seg as u32, off, prefix_verified)))
    }

    /// Streams segments from (`start_seg`, `start_off`) into the slot.
    fn write_data<R: Read + Seek + Send>(
        &mut self,
        image: &mut R,
        area: &mut StateArea,
        start_seg: u32,
        start_off: u64,
        prefix_verified: bool,
        events: &mut dyn FnMut(&Event),
    ) -> Result<()> {
        let start_seg = start_seg as usize;
        let head = self.head;
        let chunk = self.opts.chunk_size;
        let mem_align = self.mem_align;
        let done_before: u64 = self.plans[..start_seg.min(self.plans.len())]
            .iter()
            .map(|p| p.raw_len)
            .sum();
        self.report.skipped_resume = done_before + start_off;
        if start_seg >= self.plans.len() {
            return Ok(());
        }
        std::thread::scope(|scope| {
            // Two buffers: one being filled (read, CRC, SHA-256) while the
            // other is written. Memory stays constant in image size.
            let (full_tx, full_rx) = mpsc::sync_channel::<Msg>(1);
            let (free_tx, free_rx) = mpsc::channel::<AlignedBuf>();
            for _ in 0..2 {
                let _ = free_tx.send(AlignedBuf::new(chunk, mem_align));
            }
            let reader = std::thread::Builder::new()
                .name("fwpack-read".into())
                .spawn_scoped(scope, move || {
                    produce(head, image, start_seg, free_rx, full_tx)
                })
                .map_err(Error::io("starting the image reader thread"))?;
            let res = self.consume(
                area,
                full_rx,
                free_tx,
                (start_seg, start_off),
                prefix_verified,
                done_before,
                events,
            );
            // Dropping the channels (inside consume) unblocks the reader.
            let _ = reader.join();
            res
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn consume(
        &mut self,
        area: &mut StateArea,
        full_rx: mpsc::Receiver<Msg>,
        free_tx: mpsc::Sender<AlignedBuf>,
        (start_seg, start_off): (usize, u64),
        prefix_verified: bool,
        done_before: u64,
        events: &mut dyn FnMut(&Event),
    ) -> Result<()> {
        let slot = self.report.slot;
        let interval = round_up(self.opts.checkpoint_interval, self.opts.chunk_size as u64);
        // What the journal may claim: every byte before its position was
        // read back (now, or by the interrupted run).
        let verified = prefix_verified && self.opts.verify_writes;
        let mut done = done_before;
        let mut last_ckpt = start_off;
        let mut dirty = false;
        let mut cur_seg = start_seg;
        while let Ok(msg) = full_rx.recv() {
            let (seg, pos, len, mut buf) = match msg {
                Msg::Chunk { seg, pos, len, buf } => (seg, pos, len, buf),
                Msg::Failed(e) => return Err(e.into()),
            };
            if seg != cur_seg {
                cur_seg = seg;
                last_ckpt = 0;
            }
            let plan = &self.plans[seg];
            let skip_to = if seg == start_seg { start_off } else { 0 };
            let end = pos + len as u64;
            if end > skip_to {
                // Zero the sector padding after a segment's last byte: it
                // is written whole (no read-modify-write), never stale.
                let dev_len = round_up(len as u64, self.io_align) as usize;
                buf.as_mut_slice()[len..dev_len].fill(0);
                let from = skip_to.saturating_sub(pos) as usize;
                let data = &buf.as_slice()[from..dev_len];
                let dev_off = plan.base + pos + from as u64;
                if self.opts.minimize_writes {
                    self.write_changed(dev_off, data, len - from)?;
                } else {
                    self.storage
                        .write_at(dev_off, data)
                        .map_err(Error::io(format!("writing segment `{}`", plan.name)))?;
                    self.report.bytes_written += data.len() as u64;
                }
                dirty = true;
            }
            done += len as u64;
            let _ = free_tx.send(buf);
            events(&Event::Progress {
                phase: Phase::Write,
                done,
                total: self.report.raw_bytes,
            });
            if dirty && (end - last_ckpt >= interval || end == plan.raw_len) {
                // Data durable first, then (optionally) proven, and only
                // then claimed by the journal.
                self.storage
                    .sync()
                    .map_err(Error::io("syncing the target"))?;
                if self.opts.verify_writes {
                    self.verify_range(seg, last_ckpt, end)?;
                }
                area.write_journal(
                    self.storage,
                    Some(Journal {
                        image_id: self.report.image_id,
                        slot,
                        segment: seg as u32,
                        offset: end,
                        verified,
                        done_bytes: done,
                    }),
                )?;
                self.report.checkpoints += 1;
                events(&Event::Checkpoint {
                    segment: seg as u32,
                    offset: end,
                    done,
                    verified,
                });
                if let Some(w) = self.storage.take_warning() {
                    events(&Event::Warning(w));
                }
                last_ckpt = end;
                dirty = false;
            }
        }
        drop(free_tx);
        if done != self.report.raw_bytes {
            return Err(Error::Io {
                what: "reading the image".into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the image reader stopped before the end",
                ),
            });
        }
        Ok(())
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
                self.storage
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
                        self.storage
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

/// The reader thread: verified raw chunks of every segment from
/// `start_seg` on. Stops quietly when the consumer hangs up.
fn produce<R: Read + Seek>(
    head: &ImageHead,
    image: &mut R,
    start_seg: usize,
    free: mpsc::Receiver<AlignedBuf>,
    full: mpsc::SyncSender<Msg>,
) {
    let mut spare: Option<AlignedBuf> = None;
    for seg in start_seg..head.segments.len() {
        let mut rd = match SegmentReader::new(head, seg, &mut *image) {
            Ok(r) => r,
            Err(e) => {
                let _ = full.send(Msg::Failed(e));
                return;
            }
        };
        loop {
            let mut buf = match spare.take() {
                Some(b) => b,
                None => match free.recv() {
                    Ok(b) => b,
                    Err(_) => return,
                },
            };
            let pos = rd.position();
            match rd.next_chunk(buf.as_mut_slice()) {
                Ok(0) => {
                    spare = Some(buf);
                    break;
                }
                Ok(len) => {
                    if full.send(Msg::Chunk { seg, pos, len, buf }).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = full.send(Msg::Failed(e));
                    return;
                }
            }
        }
    }
}
