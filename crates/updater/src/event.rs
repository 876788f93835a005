//! What the engine reports while it works. The library never prints: the
//! CLI turns events into human lines or JSON, the PID-1 updater into its
//! console log.

use fwimage::KeyId;

use crate::state::{Slot, SlotState};

/// Stages of an apply, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Image head, signature, board, version, layout, busy check.
    Check,
    /// Full pass over the image: every CRC block and SHA-256. Announced
    /// a second time when a slot that already holds the image is read back
    /// (`verify_writes`); progress restarts from zero then.
    Verify,
    /// Streaming the data into the slot.
    Write,
    /// Marking the slot complete and pending.
    Commit,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Check => "check",
            Phase::Verify => "verify",
            Phase::Write => "write",
            Phase::Commit => "commit",
        }
    }
}

/// One report from the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The target as opened.
    Target {
        description: String,
    },
    Phase(Phase),
    /// The image passed the signature, board and version checks and fits.
    ImageAccepted {
        board: String,
        version: u64,
        label: String,
        key_id: KeyId,
        segments: usize,
        raw_bytes: u64,
        slot: Slot,
    },
    /// `done` of `total` raw bytes through `phase`.
    Progress {
        phase: Phase,
        done: u64,
        total: u64,
    },
    /// Something degraded or overridden, never silently.
    Warning(String),
    /// Continuing an interrupted apply: raw bytes before (`segment`,
    /// `offset`) are already on the slot.
    /// A delta plan: of `chunks` chunks still to write, `from_seed` are
    /// copied from the seed slot (their signed raw hashes matched it) and
    /// the rest, `fetch_bytes` stored bytes in `runs` ranges, are read
    /// from the image.
    DeltaPlan {
        seed: Slot,
        chunks: u64,
        from_seed: u64,
        fetch_bytes: u64,
        runs: usize,
    },
    Resume {
        segment: u32,
        offset: u64,
        skipped: u64,
    },
    /// A journal was found but could not be used; starting from zero.
    Restart {
        reason: String,
    },
    /// The slot already holds this image, complete.
    AlreadyComplete {
        slot: Slot,
    },
    /// Data up to (`segment`, `offset`) is durable (and read back when
    /// `verified`), and the journal says so.
    Checkpoint {
        segment: u32,
        offset: u64,
        done: u64,
        verified: bool,
    },
    SlotState {
        slot: Slot,
        state: SlotState,
    },
    Pending {
        slot: Slot,
        tries: u8,
    },
}
