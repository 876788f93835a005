//! The device side of fwpack: applying a signed image to the inactive A/B
//! slot of a disk (a block device, or a plain file on a build host) so that
//! a power cut at any moment leaves the device bootable, and the A/B boot
//! state that decides which slot boots.
//!
//! - [`apply()`]: the engine (checks, full verification, streaming writes
//!   with checkpoints, commit); progress through [`Event`]s.
//! - [`state`]: the state area (layout, boot state and journal in one
//!   record, two copies far apart, sequence numbers and CRC32C) and the
//!   persisted boot-state operations a PID-1 updater calls
//!   (`boot_attempt`, `confirm`, …). Its sections are modules of their
//!   own: [`layout`] (state location, slot groups), [`bootstate`] (A/B
//!   state and its decisions), [`journal`] (apply progress); [`running`]
//!   is which slot the running system booted from, as a [`Storage`]
//!   reports it.
//! - [`txn`]: several signed images, each for its own slot groups, into
//!   one slot as one transaction: written `updating`, proven, then
//!   committed in one state write ([`apply_parts()`]).
//! - [`status`]: what `status` shows (human lines and JSON), shared by
//!   the host CLI and the device binary.
//! - [`Storage`]: the I/O boundary. [`FileStorage`] is a block device or
//!   file with O_DIRECT, sector sizes from the kernel, busy detection and
//!   an exclusive open; [`MemStorage`] is a disk in memory.
//!
//! Invariants:
//! - Nothing is written to the target before the image's signature,
//!   board, version, fit and every CRC block and SHA-256 have been checked.
//! - The active slot is never written; a slot is never pending unless it is
//!   complete; it is marked complete only after its data is durable.
//! - Memory use is constant in image size (two I/O chunks plus one for
//!   read-back), and the library neither prints nor exits.

pub mod apply;
pub mod bootstate;
pub mod busy;
mod codec;
pub mod device;
mod error;
pub mod event;
pub mod journal;
pub mod keyvalue;
pub mod layout;
pub mod record;
pub mod running;
pub mod state;
pub mod status;
pub mod storage;
pub mod txn;

pub use apply::{apply, image_id, ApplyOptions, ApplyReport, Seed};
pub use device::{Access, FileStorage};
pub use error::{Error, ErrorClass};
pub use event::{error_json, Event, Phase};
pub use state::{
    format_state_area, init_state_area, BootDecision, BootState, BootedSlot, FallbackBelowFloor,
    Journal, Layout, Running, Slot, SlotGroup, SlotInfo, SlotRange, SlotState, StateArea,
    StateLocation, DEFAULT_STATE_COPY_DISTANCE, DEFAULT_STATE_OFFSET, STATE_HALF_LEN,
};
pub use storage::{AlignedBuf, BusyCheck, Geometry, MemStorage, SharedIo, Storage};
pub use txn::{apply_parts, transaction_id, Part, TxnReport};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
