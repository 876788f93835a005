//! `boot = kexec`: the chosen slot carries its own kernel in
//! `/boot/fwpack/` (format in docs/FORMAT.md, "Slot kernels"); PID 1
//! loads it with the slot mounted read-only, unmounts the slot and jumps
//! into it. The slot kernel mounts the slot itself (`root=` its
//! partition) or through its own initrd.
//!
//! A slot kernel that the running kernel refuses to load is a failed try
//! of a trial slot: it is recorded (the state library's fallback) and the
//! active slot is booted in the same boot. A kernel that loads but panics
//! reboots (`panic=N`) and the next boot counts the try as for any slot
//! that never confirms.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use updater::{FileStorage, Slot, SlotGroup, StateArea};

use crate::config::Config;
use crate::slotdev::Attached;
use crate::switchroot::{self, NEW_ROOT};

/// Where the slot's boot files are, relative to its root.
pub const BOOT_DIR: &str = "boot/fwpack";
/// Size limits (a slot's files are data from outside).
const MAX_KERNEL: u64 = 256 << 20;
const MAX_INITRD: u64 = 1 << 30;
const MAX_DTB: u64 = 2 << 20;
const MAX_CMDLINE_FILE: u64 = 4096;

/// A slot's boot files, opened inside the mounted slot. The descriptors
/// keep the files readable by path (`/proc/self/fd/N`) for the loader.
struct SlotFiles {
    kernel: OwnedFd,
    initrd: Option<OwnedFd>,
    dtb: Option<OwnedFd>,
    cmdline: String,
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Opens `BOOT_DIR/name` inside the new root, resolving symlinks inside
/// it (a slot's absolute symlink must not reach the initramfs), as a
/// regular file of at most `max` bytes. `None`: it does not exist.
fn open_in_slot(name: &str, max: u64) -> Result<Option<OwnedFd>, String> {
    let root = rustix::fs::open(
        NEW_ROOT,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{NEW_ROOT}: {e}"))?;
    let rel = format!("{BOOT_DIR}/{name}");
    let fd = match rustix::fs::openat2(
        &root,
        rel.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::NOSYS) => {
            return Err(
                "the bootstrap kernel has no openat2 (Linux 5.6+ is needed for boot = kexec)"
                    .into(),
            )
        }
        Err(e) => return Err(format!("/{rel} in the slot: {e}")),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("/{rel}: {e}"))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(format!("/{rel} in the slot is not a regular file"));
    }
    let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
    if size > max {
        return Err(format!(
            "/{rel} in the slot is {size} bytes, more than the {max} allowed"
        ));
    }
    Ok(Some(fd))
}

fn read_slot_files() -> Result<SlotFiles, String> {
    let kernel = open_in_slot("kernel", MAX_KERNEL)?
        .ok_or_else(|| format!("the slot has no /{BOOT_DIR}/kernel (boot = kexec)"))?;
    let initrd = open_in_slot("initrd", MAX_INITRD)?;
    let dtb = open_in_slot("dtb", MAX_DTB)?;
    let cmdline = match open_in_slot("cmdline", MAX_CMDLINE_FILE)? {
        None => String::new(),
        Some(fd) => {
            let text = std::fs::read(fd_path(&fd))
                .map_err(|e| format!("/{BOOT_DIR}/cmdline in the slot: {e}"))?;
            let text = String::from_utf8(text)
                .map_err(|_| format!("/{BOOT_DIR}/cmdline in the slot is not UTF-8"))?;
            parse_cmdline_file(&text)
        }
    };
    Ok(SlotFiles {
        kernel,
        initrd,
        dtb,
        cmdline,
    })
}

/// The `cmdline` file: words over any number of lines, `#` comments.
pub fn parse_cmdline_file(text: &str) -> String {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ")
}

/// How the slot kernel finds its root filesystem.
pub enum Root<'a> {
    /// A partition that is exactly the slot: `root=` it.
    Partition(&'a Path),
    /// A byte range of the disk: only the slot's own initrd can mount it
    /// (it is told the disk, offset and size).
    Range {
        disk: &'a Path,
        offset: u64,
        size: u64,
    },
}

/// The slot kernel's command line: the slot's own words, then what fwpack
/// generates (later words win in the kernel's parser): the root, `ro`,
/// `panic=N` so a panicking slot kernel reboots and its try is counted,
/// and `fwpack.slot=X` (the marker a slot's init or initrd reads).
/// `console=` words of the bootstrap's command line are kept when the
/// slot names no console of its own.
pub fn slot_cmdline(cfg: &Config, own: &str, bootstrap: &str, root: &Root, slot: Slot) -> String {
    let mut w: Vec<String> = own.split_whitespace().map(str::to_string).collect();
    if !w.iter().any(|x| x.starts_with("console=")) {
        w.extend(
            bootstrap
                .split_whitespace()
                .filter(|x| x.starts_with("console=") || x.starts_with("earlycon"))
                .map(str::to_string),
        );
    }
    match root {
        Root::Partition(p) => {
            w.push(format!("root={}", p.display()));
            w.push(format!("rootfstype={}", cfg.root_fstype));
            if !cfg.root_flags.is_empty() {
                w.push(format!("rootflags={}", cfg.root_flags));
            }
            w.push("rootwait".into());
        }
        Root::Range { disk, offset, size } => {
            w.push(format!("fwpack.slot_disk={}", disk.display()));
            w.push(format!("fwpack.slot_offset={offset}"));
            w.push(format!("fwpack.slot_size={size}"));
        }
    }
    w.push("ro".into());
    w.push(format!("panic={}", cfg.kexec_panic));
    w.push(format!("fwpack.slot={slot}"));
    w.join(" ")
}

/// Why staging a slot's kernel failed.
enum StageError {
    /// The slot (its files or its kernel) is to blame: a failed try.
    Slot(String),
    /// The bootstrap cannot kexec at all; switch_root still works.
    NoKexec(String),
}

/// Mounts `slot`, loads its kernel, unmounts it.
fn stage(cfg: &Config, disk: &Path, group: &SlotGroup, slot: Slot) -> Result<(), StageError> {
    let dev = crate::flow::mount_slot(cfg, disk, group, slot).map_err(StageError::Slot)?;
    let r = load_mounted(cfg, disk, group, slot, &dev);
    switchroot::unmount_root();
    drop(dev);
    r
}

fn load_mounted(
    cfg: &Config,
    disk: &Path,
    group: &SlotGroup,
    slot: Slot,
    dev: &Attached,
) -> Result<(), StageError> {
    let files = read_slot_files().map_err(|e| StageError::Slot(format!("slot {slot}: {e}")))?;
    let range = group.slot(slot);
    let root = match dev {
        Attached::Partition(p) => Root::Partition(p),
        Attached::Loop { .. } if files.initrd.is_some() => Root::Range {
            disk,
            offset: range.offset,
            size: range.size,
        },
        Attached::Loop { .. } => {
            return Err(StageError::Slot(format!(
                "slot {slot} is a byte range of {} without a partition of its own: its kernel can mount it only through its own /{BOOT_DIR}/initrd",
                disk.display()
            )))
        }
    };
    let bootstrap = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let spec = kexec::BootSpec {
        kernel: fd_path(&files.kernel),
        initrd: files.initrd.as_ref().map(fd_path),
        dtb: files.dtb.as_ref().map(fd_path),
        cmdline: slot_cmdline(cfg, &files.cmdline, &bootstrap, &root, slot),
    };
    log!("slot {slot} kernel command line: {}", spec.cmdline);
    match kexec::load(&spec) {
        Ok(m) => {
            log!(
                "slot {slot} kernel loaded ({})",
                match m {
                    kexec::Method::FileLoad => "kexec_file_load",
                    kexec::Method::Load => "kexec_load",
                }
            );
            Ok(())
        }
        Err(e) if e.slot_at_fault() => Err(StageError::Slot(format!("slot {slot}'s kernel: {e}"))),
        Err(e) => Err(StageError::NoKexec(e.to_string())),
    }
}

/// Boots `slot` by kexec, falling back to the other (active) slot in the
/// same boot when a trial slot's kernel cannot be loaded. Returns only
/// when the bootstrap cannot kexec at all: then the returned slot is
/// mounted on [`NEW_ROOT`] for switch_root, with whether it is a trial.
pub fn boot(
    cfg: &Config,
    disk: &Path,
    group: &SlotGroup,
    area: &mut StateArea,
    mut slot: Slot,
    mut trial: bool,
) -> Result<(Slot, bool), String> {
    loop {
        match stage(cfg, disk, group, slot) {
            Ok(()) => {
                log!("kexec into slot {slot}'s kernel");
                let e = kexec::execute();
                return Err(format!("executing slot {slot}'s kernel: {e}"));
            }
            Err(StageError::NoKexec(why)) => {
                log!("{why}; booting slot {slot} with switch_root under the bootstrap kernel instead");
                crate::flow::mount_slot(cfg, disk, group, slot)?;
                return Ok((slot, trial));
            }
            Err(StageError::Slot(why)) if trial => {
                log!("{why}");
                log!(
                    "slot {slot} cannot be booted; counting the failed try and falling back to slot {}",
                    slot.other()
                );
                let mut storage = FileStorage::open(disk, updater::Access::ReadWrite)
                    .map_err(|e| e.to_string())?;
                area.fallback(&mut storage).map_err(|e| e.to_string())?;
                drop(storage);
                slot = area.boot().active;
                trial = false;
            }
            Err(StageError::Slot(why)) => return Err(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::parse("target = /dev/nvme0n1\nboot = kexec\nkexec_panic = 7\n")
            .unwrap()
            .0
    }

    #[test]
    fn cmdline_file_words_and_comments() {
        assert_eq!(
            parse_cmdline_file("# slot kernel\nconsole=ttyS0  quiet\n\nmarker=v2 # why\n"),
            "console=ttyS0 quiet marker=v2"
        );
    }

    #[test]
    fn generated_words_come_last() {
        let p = PathBuf::from("/dev/nvme0n1p2");
        let c = slot_cmdline(
            &cfg(),
            "quiet root=/dev/sda1",
            "console=ttyS0,115200 fwpack.tries=1",
            &Root::Partition(&p),
            Slot::B,
        );
        assert_eq!(
            c,
            "quiet root=/dev/sda1 console=ttyS0,115200 root=/dev/nvme0n1p2 rootfstype=ext4 rootwait ro panic=7 fwpack.slot=B"
        );
        // The slot's own console wins over the bootstrap's.
        let c = slot_cmdline(
            &cfg(),
            "console=hvc0",
            "console=ttyS0",
            &Root::Partition(&p),
            Slot::A,
        );
        assert!(!c.contains("ttyS0") && c.contains("console=hvc0"), "{c}");
        let d = PathBuf::from("/dev/nvme0n1");
        let c = slot_cmdline(
            &cfg(),
            "",
            "",
            &Root::Range {
                disk: &d,
                offset: 8 << 20,
                size: 16 << 20,
            },
            Slot::A,
        );
        assert_eq!(
            c,
            "fwpack.slot_disk=/dev/nvme0n1 fwpack.slot_offset=8388608 fwpack.slot_size=16777216 ro panic=7 fwpack.slot=A"
        );
    }
}
