//! Transactions: several signed images into the same inactive slot, each
//! covering its own slot groups, switching together in one state-area
//! commit — a multi-chunk fleet deployment with a `.fwi` per chunk.
//!
//! The state area holds one image id per slot and commits one slot at a
//! time; the slot letter switches every group at once. So a transaction
//! needs no new state, only an order:
//!
//! 1. Check every part before any write: signature (same keys as a
//!    single image), board, version (all parts carry the same payload
//!    version, the slot's), every segment's group known (and one the
//!    part is for, when the caller names them), no group in two
//!    parts, and, without `allow_partial`, every group of the layout
//!    covered by some part (as for a single image).
//! 2. Apply the parts in order, each with the engine and
//!    [`ApplyOptions::leave_updating`]: the slot is marked `updating`
//!    with that part's image id and stays so when the part ends. It is
//!    never complete (so never pending, and never taken by a fallback)
//!    before step 4. Every part's chunks are authenticated before they
//!    are written, as in any apply.
//! 3. Prove: every part's segments are read back from the slot and
//!    matched against that image's signed chunk hashes. A part that does
//!    not match is written again (once), then everything is proven again.
//! 4. Commit in ONE state-record write: the slot complete with the
//!    transaction's id ([`transaction_id`]), version and label (part 1's),
//!    pending with `tries`, journal idle.
//!
//! A power cut anywhere before 4 leaves the slot `updating` (not
//! bootable) and the active slot untouched. A re-run with the same parts
//! continues at the part the slot is marked with: parts before it are
//! not fetched again (step 3 proves them), that part resumes from its
//! journal checkpoint (reading back what is before it), and a part that
//! had finished resumes at its end, fetching nothing. A slot already
//! complete with the transaction's id is proven and (re)activated.
//!
//! Sources must be re-readable (files, HTTP): each is read for its head
//! in 1, written from in 2, and its head and index read again in 3.

use fwimage::{ImageHead, ImageSource, TrustedKeys};
use sha2::{Digest, Sha256};

use crate::apply::{
    apply, check_busy, image_id, probe, target_and_seed, ApplyOptions, ApplyReport, Probe,
};
use crate::event::{Event, Phase};
use crate::state::{Slot, SlotState, StateArea, StateLocation, MAX_GROUPS};
use crate::storage::Storage;
use crate::{Error, Result};

/// One image of a transaction.
pub struct Part<S> {
    pub image: S,
    pub len: u64,
    /// Path or URL, kept in the journal while the part is written
    /// ([`ApplyOptions::source`]).
    pub source: String,
    /// When not empty, the slot groups this part is for (a fleet chunk's
    /// `part`): a segment for any other group refuses the transaction.
    pub groups: Vec<String>,
}

/// What a transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnReport {
    pub slot: Slot,
    /// [`transaction_id`] of the parts: the slot's image id once committed.
    pub id: [u8; 32],
    /// Each part's image id, in order.
    pub part_ids: Vec<[u8; 32]>,
    pub version: u64,
    pub label: String,
    /// Raw bytes over all parts.
    pub raw_bytes: u64,
    /// The parts applied by this run (index, report), repairs included;
    /// parts an interrupted run had written are only proven.
    pub applied: Vec<(usize, ApplyReport)>,
    /// Parts written again because the proof found them not as signed.
    pub repaired: Vec<usize>,
    /// Bytes read back by the proof (step 3).
    pub bytes_proven: u64,
    /// The slot already held this transaction, complete.
    pub already_complete: bool,
    pub pending: bool,
}

/// The id a slot committed by a transaction carries: SHA-256 over a
/// domain tag, the part count and the parts' image ids in order. It is
/// never an image's own id, so a single apply of one part never takes
/// the slot for complete.
pub fn transaction_id(ids: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"fwpack transaction\0");
    h.update((ids.len() as u32).to_le_bytes());
    for id in ids {
        h.update(id);
    }
    h.finalize().into()
}

/// Applies `parts` into one slot as a transaction (module documentation).
/// `opts` as for [`apply`]; `allow_partial` is about the union of the
/// parts, `source` is taken from each part.
pub fn apply_parts<S: ImageSource + Send>(
    parts: &mut [Part<S>],
    storage: &mut dyn Storage,
    trusted: &TrustedKeys,
    opts: &ApplyOptions,
    events: &mut dyn FnMut(&Event),
) -> Result<TxnReport> {
    let n = parts.len();
    if n == 0 || n > MAX_GROUPS {
        return Err(Error::InvalidInput {
            what: "part count",
            value: n.to_string(),
            reason: format!("a transaction has 1 to {MAX_GROUPS} images (one per slot group)"),
        });
    }
    if opts.activate && opts.tries == 0 {
        return Err(Error::InvalidInput {
            what: "tries",
            value: "0".into(),
            reason: "a pending slot needs at least one try".into(),
        });
    }
    let loc = StateLocation::new(opts.state_offset, opts.state_copy_distance);
    let area = StateArea::read(storage, loc)?;
    let layout = area.layout().clone();
    let boot = area.boot().clone();
    let active = boot.active;
    let (slot, seed) = target_and_seed(&area, opts)?;

    // 1. Every part, before anything is written.
    let mut ids = Vec::with_capacity(n);
    let mut owner: Vec<(String, usize)> = Vec::new();
    let mut raw_of = Vec::with_capacity(n);
    let (mut version, mut label) = (0, String::new());
    for (i, p) in parts.iter_mut().enumerate() {
        let head = ImageHead::read_from(&mut p.image, p.len)?;
        head.authenticate(trusted)?;
        let h = &head.header;
        if h.board != layout.board {
            return Err(Error::WrongBoard {
                image: h.board.clone(),
                target: layout.board.clone(),
            });
        }
        if i == 0 {
            (version, label) = (h.payload_version, h.version_label.clone());
        } else if h.payload_version != version {
            return Err(Error::PartVersion {
                part: i + 1,
                version: h.payload_version,
                first: version,
            });
        }
        let mut raw = 0;
        for s in &head.segments {
            if !p.groups.is_empty() && !p.groups.contains(&s.target) {
                return Err(Error::PartGroup {
                    part: i + 1,
                    segment: s.name.clone(),
                    target: s.target.clone(),
                    groups: p.groups.clone(),
                });
            }
            if layout.group(&s.target).is_none() {
                return Err(Error::UnknownTarget {
                    segment: s.name.clone(),
                    target: s.target.clone(),
                    groups: layout.groups.iter().map(|g| g.name.clone()).collect(),
                });
            }
            match owner.iter().find(|(g, _)| *g == s.target) {
                Some((_, j)) if *j != i => {
                    return Err(Error::PartsOverlap {
                        group: s.target.clone(),
                        first: j + 1,
                        second: i + 1,
                    })
                }
                Some(_) => {}
                None => owner.push((s.target.clone(), i)),
            }
            raw += s.raw_len;
        }
        raw_of.push(raw);
        ids.push(image_id(&head));
    }
    let a = boot.slot(active);
    if a.state == SlotState::Complete && version < a.version {
        return Err(Error::Rollback {
            image: version,
            floor: a.version,
            what: "version of the active slot",
        });
    }
    if version < boot.rollback_floor {
        return Err(Error::Rollback {
            image: version,
            floor: boot.rollback_floor,
            what: "device's rollback floor",
        });
    }
    if !opts.allow_partial {
        if let Some(g) = layout
            .groups
            .iter()
            .find(|g| !owner.iter().any(|(o, _)| *o == g.name))
        {
            return Err(Error::PartialImage {
                group: g.name.clone(),
                slot: slot.letter(),
            });
        }
    }
    // What the parts will write, and the state area, must not be in use
    // (each part's apply checks its own groups again; this also covers a
    // run that only commits).
    let mut ranges: Vec<_> = layout
        .groups
        .iter()
        .filter(|g| owner.iter().any(|(o, _)| *o == g.name))
        .map(|g| g.slot(slot).range())
        .collect();
    ranges.push(layout.state_range());
    check_busy(storage, &ranges, opts.force, true, events)?;
    let id = transaction_id(&ids);
    let raw_bytes: u64 = raw_of.iter().sum();
    let raw_before: Vec<u64> = raw_of
        .iter()
        .scan(0, |acc, r| {
            let b = *acc;
            *acc += r;
            Some(b)
        })
        .collect();
    events(&Event::TransactionAccepted {
        parts: n,
        version,
        slot,
        raw_bytes,
    });

    // Where an interrupted run of this transaction stopped: the part the
    // slot is marked `updating` with (each part is marked only after the
    // one before it returned). The proof checks the parts before it.
    let info = boot.slot(slot);
    let mut already = info.state == SlotState::Complete && info.image_id == id;
    let start = if already {
        n
    } else if info.state == SlotState::Updating {
        ids.iter().position(|x| *x == info.image_id).unwrap_or(0)
    } else {
        0
    };
    let mut report = TxnReport {
        slot,
        id,
        part_ids: ids,
        version,
        label: label.clone(),
        raw_bytes,
        applied: Vec::new(),
        repaired: Vec::new(),
        bytes_proven: 0,
        already_complete: false,
        pending: false,
    };

    // The plan of every part still to write, before the first chunk is
    // fetched: a caller with a download limit stops here (its source
    // fails the next read) with only heads and indexes fetched.
    if let Some(sd) = seed.filter(|_| start < n) {
        // The part an interrupted run was writing is planned from its
        // journal's position: an estimate (the apply reads back what is
        // before it), so a resumed download is not held against the
        // limit for what it already fetched.
        let resume_at = area
            .journal()
            .filter(|j| j.slot == slot && j.image_id == report.part_ids[start])
            .map_or((0, 0), |j| (j.segment, j.offset));
        let (mut chunks, mut from_seed, mut fetch_bytes) = (0, 0, 0);
        for (i, p) in parts.iter_mut().enumerate().skip(start) {
            let from = if i == start { resume_at } else { (0, 0) };
            probe(
                &mut p.image,
                p.len,
                storage,
                trusted,
                (&layout, slot),
                Probe::Plan(sd, from),
                &mut |e| {
                    if let Event::DeltaPlan {
                        chunks: c,
                        from_seed: f,
                        fetch_bytes: b,
                        ..
                    } = e
                    {
                        chunks += c;
                        from_seed += f;
                        fetch_bytes += b;
                    }
                },
            )?;
        }
        events(&Event::TransactionPlan {
            seed: sd,
            chunks,
            from_seed,
            fetch_bytes,
        });
    }

    // 2. The parts, each left `updating`.
    for i in start..n {
        let r = apply_part(
            &mut parts[i],
            (i, n, raw_before[i]),
            slot,
            storage,
            trusted,
            opts,
            events,
        )?;
        report.applied.push((i, r));
    }

    // 3. Every part read back against its own signed hashes.
    events(&Event::Phase(Phase::Verify));
    for round in 0..2 {
        let mut bad = Vec::new();
        for (i, p) in parts.iter_mut().enumerate() {
            events(&Event::Part {
                index: i,
                count: n,
                raw_before: raw_before[i],
                proving: true,
            });
            let found = probe(
                &mut p.image,
                p.len,
                storage,
                trusted,
                (&layout, slot),
                Probe::Prove,
                events,
            )?;
            if let Some(b) = found {
                bad.push((i, b));
            } else {
                report.bytes_proven += raw_of[i];
            }
        }
        let Some((_, (segment, block, offset))) = bad.first().cloned() else {
            break;
        };
        if round == 1 {
            return Err(Error::ReadBack {
                segment,
                block,
                offset,
            });
        }
        for (i, (segment, block, _)) in bad {
            events(&Event::Restart {
                reason: format!(
                    "part {} segment `{segment}` chunk {block} does not read back as signed; writing the part again",
                    i + 1
                ),
            });
            let r = apply_part(
                &mut parts[i],
                (i, n, raw_before[i]),
                slot,
                storage,
                trusted,
                opts,
                events,
            )?;
            report.applied.push((i, r));
            report.repaired.push(i);
        }
        already = false;
    }

    // 4. One state write.
    events(&Event::Phase(Phase::Commit));
    let mut area = StateArea::read(storage, loc)?;
    area.commit_as(
        storage,
        slot,
        version,
        id,
        &label,
        opts.activate,
        opts.tries,
    )?;
    report.already_complete = already;
    if !already {
        events(&Event::SlotState {
            slot,
            state: SlotState::Complete,
        });
    }
    if opts.activate {
        report.pending = true;
        events(&Event::Pending {
            slot,
            tries: opts.tries,
        });
    }
    Ok(report)
}

/// Part `i` of `n` through the engine, left `updating` in `slot`.
fn apply_part<S: ImageSource + Send>(
    p: &mut Part<S>,
    (index, count, raw_before): (usize, usize, u64),
    slot: Slot,
    storage: &mut dyn Storage,
    trusted: &TrustedKeys,
    opts: &ApplyOptions,
    events: &mut dyn FnMut(&Event),
) -> Result<ApplyReport> {
    events(&Event::Part {
        index,
        count,
        raw_before,
        proving: false,
    });
    let o = ApplyOptions {
        slot: Some(slot),
        allow_partial: true,
        leave_updating: true,
        activate: false,
        source: p.source.clone(),
        ..opts.clone()
    };
    apply(&mut p.image, p.len, storage, trusted, &o, events)
}
