//! UEFI A/B of the bootstrap itself (`efi_boot_entries` in updater.conf;
//! board qemu-x86_64-efi). Each slot has its own bootstrap partition
//! (EFI-stub kernel + this initramfs) in the layout's `bootstrap` slot
//! group, and a `Boot####` entry the build created for it. An image
//! writes the inactive slot's bootstrap like any other segment; the
//! bootstrap *side* is therefore always the slot side, and the boot
//! state's pending slot is the pending bootstrap try (no new state-area
//! field: bootstraps from before this read the same record).
//!
//! - The running bootstrap finds slot P pending while the firmware booted
//!   the other entry: it counts the try (`boot_attempt`), sets `BootNext`
//!   to P's entry and reboots. The firmware consumes `BootNext` as it
//!   boots, so any later reset (a panic with `panic=N`, a watchdog)
//!   returns to `BootOrder`, the old bootstrap.
//! - Bootstrap P comes up, reads `BootCurrent` = its own entry while
//!   `BootOrder` still starts with the other: it was started by the try.
//!   It confirms itself by rewriting `BootOrder` (P first) and boots slot
//!   P as the trial the other bootstrap already counted.
//! - The old bootstrap finds the try's tries used up: the usual fallback
//!   (slot P *fell back*); `BootOrder` still starting with its own entry
//!   says the new bootstrap never came up, which it logs as the reason.
//! - With nothing pending, `BootOrder` starts with the active slot's
//!   entry (repaired when a power cut or a fallback left it otherwise;
//!   the other bootstrap then reboots into it rather than booting the
//!   active slot under a bootstrap from another image).
//!
//! efivarfs files are 4 bytes of attributes, then the data; reads are
//! bounded, and anything malformed reads as absent.

use std::io::{Read, Write};

use updater::{BootDecision, FileStorage, Slot, StateArea};

pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
const NV_BS_RT: u32 = 7;
/// More than any `BootOrder` we meet (u16 each, so 1024 entries).
const MAX_VAR: u64 = 4 + 2048;

/// What the firmware says about this boot.
pub struct Efi {
    /// `Boot####` numbers of slot A's and slot B's bootstrap.
    entries: [u16; 2],
    current: Option<u16>,
    order: Vec<u16>,
}

/// The data of an efivarfs file (attributes stripped); `None` if the file
/// is absent, unreadable or malformed.
fn read_var(name: &str) -> Option<Vec<u8>> {
    let f = std::fs::File::open(format!("{EFIVARS}/{name}-{GLOBAL}")).ok()?;
    let mut b = Vec::new();
    f.take(MAX_VAR + 1).read_to_end(&mut b).ok()?;
    if b.len() as u64 > MAX_VAR {
        return None;
    }
    b.get(4..).map(<[u8]>::to_vec)
}

/// One write of attributes + data, as efivarfs requires.
fn write_var(name: &str, data: &[u8]) -> Result<(), String> {
    let path = format!("{EFIVARS}/{name}-{GLOBAL}");
    let mut buf = NV_BS_RT.to_le_bytes().to_vec();
    buf.extend_from_slice(data);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .and_then(|mut f| f.write_all(&buf))
        .map_err(|e| format!("writing EFI variable {name}: {e}"))
}

/// Little-endian u16s; `None` for an odd length.
pub fn u16_list(data: &[u8]) -> Option<Vec<u16>> {
    if !data.len().is_multiple_of(2) {
        return None;
    }
    Some(
        data.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect(),
    )
}

fn u16_var(data: &[u8]) -> Option<u16> {
    match u16_list(data)?.as_slice() {
        [n] => Some(*n),
        _ => None,
    }
}

/// `order` with `first` then `second` in front and every other entry
/// after them in its old order.
pub fn reorder(order: &[u16], first: u16, second: u16) -> Vec<u16> {
    let mut v = vec![first, second];
    v.extend(order.iter().filter(|e| **e != first && **e != second));
    v
}

impl Efi {
    /// Mounts efivarfs (its module must be loaded) and reads
    /// `BootCurrent` and `BootOrder`.
    pub fn start(entries: [u16; 2]) -> Result<Efi, String> {
        crate::pid1::mount_fs("efivarfs", EFIVARS, "efivarfs")?;
        let efi = Efi {
            entries,
            current: read_var("BootCurrent").and_then(|d| u16_var(&d)),
            order: read_var("BootOrder")
                .and_then(|d| u16_list(&d))
                .unwrap_or_default(),
        };
        log!(
            "UEFI: booted {} ({}), BootOrder {}",
            efi.current
                .map_or("an unknown entry".into(), |c| format!("Boot{c:04X}")),
            efi.side(efi.current)
                .map_or("not a bootstrap entry".into(), |s| format!("bootstrap {s}")),
            efi.order
                .iter()
                .map(|e| format!("{e:04X}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        Ok(efi)
    }

    fn side(&self, entry: Option<u16>) -> Option<Slot> {
        let e = entry?;
        [Slot::A, Slot::B]
            .into_iter()
            .find(|s| self.entries[s.index()] == e)
    }

    fn entry(&self, s: Slot) -> u16 {
        self.entries[s.index()]
    }

    /// Puts slot `s`'s bootstrap first in `BootOrder` (and the other second).
    fn make_first(&mut self, s: Slot, why: &str) -> Result<(), String> {
        if self.order.first() == Some(&self.entry(s)) {
            return Ok(());
        }
        let order = reorder(&self.order, self.entry(s), self.entry(s.other()));
        let data: Vec<u8> = order.iter().flat_map(|e| e.to_le_bytes()).collect();
        write_var("BootOrder", &data)?;
        log!(
            "UEFI: BootOrder now starts with Boot{:04X} (bootstrap {s}): {why}",
            self.entry(s)
        );
        self.order = order;
        Ok(())
    }
}

/// What this bootstrap does next.
pub enum Next {
    Boot(BootDecision),
    /// Reboot: `BootNext` names the bootstrap to try, or `BootOrder` now
    /// starts with the active slot's.
    Reboot,
}

/// The slot choice on an EFI A/B board (module docs).
pub fn decide(
    efi: &mut Efi,
    area: &mut StateArea,
    storage: &mut FileStorage,
) -> Result<Next, String> {
    let err = |e: updater::Error| e.to_string();
    let current = efi.side(efi.current);
    let first = efi.side(efi.order.first().copied());
    if let Some(p) = area.boot().pending.filter(|p| current == Some(*p)) {
        if first != Some(p) {
            // Started by BootNext: the other bootstrap counted this try.
            efi.make_first(p, "it came up from its one-shot try")?;
            return Ok(Next::Boot(BootDecision {
                slot: p,
                trial: true,
                fell_back_from: None,
            }));
        }
    }
    let pending = area.boot().pending;
    let d = area.boot_attempt(storage).map_err(err)?;
    if d.trial && current != Some(d.slot) {
        write_var("BootNext", &efi.entry(d.slot).to_le_bytes())?;
        log!(
            "trying bootstrap {} once: BootNext = Boot{:04X}",
            d.slot,
            efi.entry(d.slot)
        );
        log!("rebooting into bootstrap {} once", d.slot);
        return Ok(Next::Reboot);
    }
    if let Some(from) = d.fell_back_from.filter(|f| pending == Some(*f)) {
        if first != Some(from) {
            log!(
                "bootstrap {from} (Boot{:04X}) was tried and never came up: the firmware booted {} instead",
                efi.entry(from),
                efi.current
                    .map_or("an unknown entry".into(), |c| format!("Boot{c:04X}"))
            );
        }
    }
    if !d.trial {
        let active = area.boot().active;
        let was_first = first == Some(active);
        efi.make_first(active, "the active slot's bootstrap")?;
        // The other bootstrap runs (its slot fell back after it had
        // confirmed itself): boot the active slot under its own bootstrap,
        // unless the firmware already fell through from that one to us.
        if current.is_some_and(|c| c != active) && !was_first {
            log!("rebooting into bootstrap {active}, the active slot's");
            return Ok(Next::Reboot);
        }
    }
    Ok(Next::Boot(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u16_lists_are_bounded_and_total() {
        assert_eq!(u16_list(&[1, 0, 2, 0]), Some(vec![1, 2]));
        assert_eq!(u16_list(&[1]), None);
        assert_eq!(u16_var(&[0x0a, 0]), Some(0x0a));
        assert_eq!(u16_var(&[]), None);
        assert_eq!(u16_var(&[1, 0, 2, 0]), None);
    }

    #[test]
    fn reorder_keeps_other_entries() {
        assert_eq!(reorder(&[0xa, 0xb, 1, 2], 0xb, 0xa), vec![0xb, 0xa, 1, 2]);
        assert_eq!(reorder(&[1], 0xa, 0xb), vec![0xa, 0xb, 1]);
        assert_eq!(reorder(&[], 0xa, 0xb), vec![0xa, 0xb]);
    }
}
