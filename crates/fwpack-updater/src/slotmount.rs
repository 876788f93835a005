//! Mounting a slot: the lowest layer the boot flow (flow.rs) and its
//! helpers (bootslot.rs, kexecboot.rs) share. It decides nothing about
//! which slot to boot; it only opens the disk and mounts what it is told.

use std::path::Path;

use updater::{Access, FileStorage, Slot, SlotGroup};

use crate::config::Config;
use crate::{slotdev, switchroot};

/// The target disk, for reading or changing the state area. It must not
/// be held open while a slot of it is mounted.
pub fn open_disk(disk: &Path) -> Result<FileStorage, String> {
    FileStorage::open(disk, Access::ReadWrite).map_err(|e| e.to_string())
}

/// Mounts `slot` read-only on the new root after checking its init.
pub fn mount_slot(cfg: &Config, disk: &Path, group: &SlotGroup, slot: Slot) -> Result<(), String> {
    let r = group.slot(slot);
    let dev = slotdev::attach(disk, r.offset, r.size, cfg.slot_device)?;
    log!("slot {slot} ({} bytes at {}) is {dev}", r.size, r.offset);
    switchroot::mount_root(dev.node(), &cfg.root_fstype, &cfg.root_flags)?;
    drop(dev);
    if let Err(e) = switchroot::check_init(&cfg.init) {
        switchroot::unmount_root();
        return Err(format!("slot {slot}: {e}"));
    }
    Ok(())
}
