//! Mounting the slot the boot state chose, and what happens when it
//! cannot be booted (its filesystem does not mount, or its init is
//! missing):
//!
//! - a trial slot falls back to the active slot in the same boot;
//! - the active slot gives way to the other slot if that one is
//!   complete and not below the rollback floor (AVB's rule; the board's
//!   `fallback_below_floor = allow` lifts it; below it, the bootstrap goes
//!   into recovery, recovery.rs): checked by mounting it first, then recorded in the boot
//!   state (`abandon_active`) with the reason on the console, so the
//!   next boots go there directly and an update may rewrite the bad slot;
//! - otherwise (or if the other slot does not boot either, or the
//!   configuration is in safe mode, which never writes the boot state)
//!   the error is returned and the caller takes the failure action.
//!
//! The boot state changes only when the slot it then names has just been
//! mounted, so a problem that affects both slots (a missing filesystem
//! driver, a wrong `root_fstype`) leaves it as it was.

use std::path::Path;

use updater::{FallbackBelowFloor, Slot, SlotGroup, SlotState, StateArea};

use crate::config::Config;
use crate::slotmount::{mount_slot, open_disk};

/// What [`mount_chosen`] did.
pub enum Chosen {
    /// This slot is mounted on the new root; `true`: a trial boot.
    Mounted(Slot, bool),
    /// Nothing may be booted: the active slot cannot be, and the other is
    /// below the rollback floor. The reason, for the console.
    Recovery(String),
}

/// Mounts `slot` (chosen by the boot state; `trial` if it is the pending
/// slot on trial) or the slot to fall back to, and returns which one is
/// mounted and whether that is a trial.
pub fn mount_chosen(
    cfg: &Config,
    disk: &Path,
    group: &SlotGroup,
    area: &mut StateArea,
    slot: Slot,
    trial: bool,
) -> Result<Chosen, String> {
    let Err(e) = mount_slot(cfg, disk, group, slot) else {
        return Ok(Chosen::Mounted(slot, trial));
    };
    log!("{e}");
    if trial {
        log!(
            "slot {slot} cannot be booted; falling back to slot {}",
            slot.other()
        );
        let mut storage = open_disk(disk)?;
        area.fallback(&mut storage).map_err(|e| e.to_string())?;
        drop(storage);
        let active = area.boot().active;
        // The other slot is the one that just failed: nothing else to try.
        mount_slot(cfg, disk, group, active)?;
        return Ok(Chosen::Mounted(active, false));
    }
    if cfg.safe_mode {
        return Err(format!(
            "the active slot {slot} cannot be booted (safe mode: the boot state is not changed, the other slot is not tried)"
        ));
    }
    let other = slot.other();
    let info = area.boot().slot(other).clone();
    if info.state != SlotState::Complete {
        return Err(format!(
            "the active slot {slot} cannot be booted, and slot {other} is {}: nothing else to boot",
            info.state.name()
        ));
    }
    let floor = area.boot().rollback_floor;
    if info.version < floor {
        if cfg.fallback_below_floor == FallbackBelowFloor::Refuse {
            return Ok(Chosen::Recovery(format!(
                "the active slot {slot} cannot be booted ({e}), and slot {other} holds version {} {}, below the rollback floor {floor}: it is not booted (fallback_below_floor = refuse)",
                info.version, info.label
            )));
        }
        log!(
            "slot {other} (version {}) is below the rollback floor {floor}; fallback_below_floor = allow: booting it anyway",
            info.version
        );
    }
    log!(
        "the active slot {slot} cannot be booted; slot {other} is complete (version {} {}), trying it",
        info.version,
        info.label
    );
    mount_slot(cfg, disk, group, other)
        .map_err(|e2| format!("neither slot can be booted: {e2}"))?;
    // It mounts and has its init: make it the active slot. The disk cannot
    // be opened for writing while a slot of it is mounted.
    crate::switchroot::unmount_root();
    let mut storage = open_disk(disk)?;
    area.abandon_active(&mut storage, cfg.fallback_below_floor)
        .map_err(|e| format!("recording slot {other} as active: {e}"))?;
    drop(storage);
    log!(
        "slot {other} is now the active slot (not yet confirmed); slot {slot} is marked empty: {e}"
    );
    mount_slot(cfg, disk, group, other)?;
    Ok(Chosen::Mounted(other, false))
}
