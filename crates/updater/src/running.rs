//! Which slot the running system booted from: what a [`Storage`]
//! reports and what the state area refuses to overwrite.
//!
//! [`Storage`]: crate::Storage

use crate::layout::Slot;

/// The running system, as far as this target is concerned: which slot it
/// booted from (`/run/fwpack/boot.conf`, see [`Storage::booted_slot`](crate::Storage::booted_slot)).
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

/// The system booted from a slot of this disk, as a [`Storage`](crate::Storage) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootedSlot {
    pub slot: Slot,
    /// A trial boot of a pending slot.
    pub trial: bool,
    /// For messages: where this was learned (the boot record's path).
    pub source: String,
}
