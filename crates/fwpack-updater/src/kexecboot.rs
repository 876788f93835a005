//! `boot = kexec`: the chosen slot carries its own kernel in
//! `/boot/fwpack/` (format in docs/FORMAT.md, "Slot kernels"); PID 1
//! loads it with the slot mounted read-only, unmounts the slot and jumps
//! into it. The slot kernel mounts the slot itself (`root=` its
//! partition) or through its own initrd.
//!
//! A slot kernel that the running kernel refuses to load is a failed try
//! of a trial slot: it is recorded (the state library's fallback) and the
//! active slot is booted in the same boot; the active slot's own refused
//! kernel, or a bootstrap that cannot kexec, ends in switch_root under
//! the bootstrap kernel. A kernel that loads but panics reboots
//! (`panic=N`) and the next boot counts the try as for any slot that
//! never confirms.
//!
//! The slot stage ([`slot_stage`]) is the other end: this same initramfs
//! as the slot kernel's initrd, told by `fwpack.slot=` which slot to
//! mount.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use updater::{FileStorage, Slot, SlotGroup, StateArea};

use crate::config::{Config, KexecDtb};
use crate::runinfo::RunInfo;
use crate::switchroot::{self, NEW_ROOT};
use crate::{blkid, slotmount};

/// Where the slot's boot files are, relative to its root.
pub const BOOT_DIR: &str = "boot/fwpack";
/// Size limits (a slot's files are data from outside).
const MAX_KERNEL: u64 = kexec::MAX_KERNEL;
const MAX_INITRD: u64 = kexec::MAX_INITRD;
const MAX_DTB: u64 = kexec::fdt::MAX_LEN as u64;
const MAX_CMDLINE_FILE: u64 = 4096;

/// A slot's boot files, opened `O_PATH` inside the mounted slot. The
/// descriptors keep the files readable by path (`/proc/self/fd/N`, which
/// reopens the very inode) for the loader, which reads each only after
/// its own `fstat` (`kexec::open_regular`).
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
/// regular file of at most `max` bytes. `None`: it does not exist. The
/// open is `O_PATH`: no driver or FIFO open runs before `fstat` has seen
/// a regular file (a FIFO opened for reading would wait for a writer
/// forever).
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
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
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
            let text = kexec::read_regular(&fd_path(&fd), "cmdline", MAX_CMDLINE_FILE)
                .map_err(|e| format!("/{BOOT_DIR}/cmdline in the slot: {e}"))?;
            String::from_utf8(text)
                .map_err(|_| "is not UTF-8")
                .and_then(|t| parse_cmdline_file(&t))
                .map_err(|e| format!("/{BOOT_DIR}/cmdline in the slot {e}"))?
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
/// Refused: what would make the kernel's parser swallow the words
/// [`slot_cmdline`] appends (`panic=N`, the root, `ro`, the marker) — an
/// unbalanced `"` (the rest of the line becomes one value) or a `--`
/// word (the rest goes to init as arguments).
pub fn parse_cmdline_file(text: &str) -> Result<String, &'static str> {
    let words: Vec<&str> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(str::split_whitespace)
        .collect();
    let quotes = words.iter().flat_map(|w| w.bytes()).filter(|&b| b == b'"');
    if words.contains(&"--") || quotes.count() % 2 == 1 {
        return Err("has `--` or an odd `\"`, which hide the words fwpack appends");
    }
    Ok(words.join(" "))
}

/// How the slot kernel finds its root filesystem.
pub enum Root<'a> {
    /// A partition that is exactly the slot: `root=` it (`PARTUUID=…`
    /// when the table gives one, else the bootstrap's device path).
    Partition(&'a str),
    /// A byte range of the disk: only the slot's own initrd can mount it
    /// (the fwpack initramfs does, in its slot stage: see [`slot_stage`]).
    Range,
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
                // A quoted value was split at its spaces by our parser:
                // half of it would swallow the words below.
                .filter(|x| {
                    (x.starts_with("console=") || x.starts_with("earlycon")) && !x.contains('"')
                })
                .map(str::to_string),
        );
    }
    if let Root::Partition(p) = root {
        w.push(format!("root={p}"));
        w.push(format!("rootfstype={}", cfg.root_fstype));
        if !cfg.root_flags.is_empty() {
            w.push(format!("rootflags={}", cfg.root_flags));
        }
        if !w.iter().any(|x| x == "rootwait") {
            w.push("rootwait".into());
        }
    }
    w.push("ro".into());
    w.push(format!("panic={}", cfg.kexec_panic));
    w.push(format!("{MARKER}{slot}"));
    w.join(" ")
}

/// The command-line word telling a slot kernel (and its fwpack initramfs)
/// which slot it was booted for.
pub const MARKER: &str = "fwpack.slot=";

/// Why staging a slot's kernel failed.
enum StageError {
    /// The slot (its files or its kernel) is to blame: a failed try.
    Slot(String),
    /// The bootstrap cannot kexec at all; switch_root still works.
    NoKexec(String),
}

/// Where a merged slot DTB is written for the loader (tmpfs).
const MERGED_DTB: &str = "/run/fwpack/slot.dtb";

/// The device tree the slot kernel gets (arm64; x86_64 ignores it).
/// `kexec_dtb = firmware` (default): none from the slot, so the loader
/// takes the live /sys/firmware/fdt with /chosen rewritten, keeping the
/// firmware's fixups (memory size, reservations, overlays, serial number,
/// MAC), as kexec-tools does. `slot`: the slot's own DTB if it has one,
/// with the live tree's memory nodes and reservations carried over
/// (`kexec::livefdt`).
fn slot_dtb(
    cfg: &Config,
    own: Option<&OwnedFd>,
    slot: Slot,
) -> Result<Option<std::path::PathBuf>, StageError> {
    let Some(own) = own else {
        return Ok(None);
    };
    if cfg.kexec_dtb == KexecDtb::Firmware {
        log!("slot {slot}: its /{BOOT_DIR}/dtb is not used (kexec_dtb = firmware): the live device tree is");
        return Ok(None);
    }
    let max = kexec::fdt::MAX_LEN as u64;
    let stage = |e: kexec::Error| {
        if e.slot_at_fault() {
            StageError::Slot(format!("slot {slot}'s kernel: {e}"))
        } else {
            StageError::NoKexec(e.to_string())
        }
    };
    let blob = kexec::read_regular(&fd_path(own), "device tree", max).map_err(stage)?;
    let live = kexec::read_regular(Path::new("/sys/firmware/fdt"), "device tree", max)
        .map_err(|e| StageError::NoKexec(format!("the running kernel's {e}")))?;
    let merged = kexec::livefdt::merge(&blob, &live).map_err(stage)?;
    std::fs::write(MERGED_DTB, merged)
        .map_err(|e| StageError::NoKexec(format!("{MERGED_DTB}: {e}")))?;
    Ok(Some(MERGED_DTB.into()))
}

/// Loads the kernel of `slot`, which is mounted on [`NEW_ROOT`].
fn load_mounted(
    cfg: &Config,
    disk: &Path,
    group: &SlotGroup,
    slot: Slot,
) -> Result<(), StageError> {
    let files = read_slot_files().map_err(|e| StageError::Slot(format!("slot {slot}: {e}")))?;
    let range = group.slot(slot);
    // Whatever slot_device says about how we mount it, the slot kernel
    // can mount a partition by name, and a byte range only in an initrd.
    let part = blkid::partuuid_for_range(disk, range.offset, range.size)
        .map(|u| format!("PARTUUID={u}"))
        .or_else(|| {
            blkid::partition_for_range(disk, range.offset, range.size)
                .map(|p| p.display().to_string())
        });
    let root = match &part {
        Some(p) => Root::Partition(p),
        None if files.initrd.is_some() => Root::Range,
        None => {
            return Err(StageError::Slot(format!(
                "slot {slot} is a byte range of {} without a partition of its own: its kernel can mount it only through its own /{BOOT_DIR}/initrd",
                disk.display()
            )))
        }
    };
    let bootstrap = crate::config::kernel_cmdline();
    let spec = kexec::BootSpec {
        kernel: fd_path(&files.kernel),
        initrd: files.initrd.as_ref().map(fd_path),
        dtb: slot_dtb(cfg, files.dtb.as_ref(), slot)?,
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

/// Boots `slot` (mounted on [`NEW_ROOT`]) by kexec, falling back to the
/// other (active) slot in the same boot when a trial slot's kernel cannot
/// be loaded. Returns only when the bootstrap cannot kexec at all, or the
/// active slot's own kernel cannot be loaded: then the returned slot is
/// mounted for switch_root, with whether it is a trial.
pub fn boot(
    cfg: &Config,
    disk: &Path,
    group: &SlotGroup,
    area: &mut StateArea,
    mut slot: Slot,
    mut trial: bool,
) -> Result<(Slot, bool), String> {
    loop {
        match load_mounted(cfg, disk, group, slot) {
            Ok(()) => {
                // The kernel has read the files; nothing of the slot stays
                // mounted across the jump.
                switchroot::unmount_root();
                log!("kexec into slot {slot}'s kernel");
                // The console UART still holds our last lines: the next
                // kernel resets it (seen on raspi3b cutting lines short).
                // Not tcdrain, which waits without end while output is
                // stopped (XOFF, flow control): up to 1 s for the queue
                // (TIOCOUTQ) and the UART's transmitter (TIOCSERGETLSR,
                // serial ports only) to empty.
                for _ in 0..50 {
                    let (mut queued, mut lsr): (libc::c_int, libc::c_uint) = (0, 1);
                    // SAFETY: each ioctl writes one int to its pointer; a
                    // failing one leaves the default (empty).
                    unsafe {
                        libc::ioctl(2, libc::TIOCOUTQ, &mut queued);
                        libc::ioctl(2, libc::TIOCSERGETLSR, &mut lsr);
                    }
                    // TIOCSER_TEMT
                    if queued <= 0 && lsr & 1 != 0 {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                let e = kexec::execute();
                return Err(format!("executing slot {slot}'s kernel: {e}"));
            }
            Err(StageError::NoKexec(why)) => {
                log!("{why}; booting slot {slot} with switch_root under the bootstrap kernel instead");
                return Ok((slot, trial));
            }
            Err(StageError::Slot(why)) if trial => {
                switchroot::unmount_root();
                log!("{why}");
                log!(
                    "slot {slot} cannot be booted; counting the failed try and falling back to slot {}",
                    slot.other()
                );
                let mut storage = slotmount::open_disk(disk)?;
                area.fallback(&mut storage).map_err(|e| e.to_string())?;
                drop(storage);
                slot = area.boot().active;
                trial = false;
                slotmount::mount_slot(cfg, disk, group, slot)?;
            }
            // The active slot's root is known good; a reboot would only
            // meet the same kernel again.
            Err(StageError::Slot(why)) => {
                log!("{why}");
                log!("slot {slot} is the active slot: booting it with switch_root under the bootstrap kernel instead");
                return Ok((slot, trial));
            }
        }
    }
}

/// The slot this kernel was kexec'd for (`fwpack.slot=` on its command
/// line), if any: then the fwpack initramfs is the slot kernel's own
/// initrd, and only mounts that slot and switches root into it.
pub fn staged_slot(cmdline: &str) -> Option<Result<Slot, String>> {
    // The last word wins, as in the kernel's own parser: the generated
    // marker comes after a slot's cmdline file.
    let v = cmdline
        .split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix(MARKER))?;
    Some(match v {
        "A" => Ok(Slot::A),
        "B" => Ok(Slot::B),
        _ => Err(format!(
            "kernel command line: `{MARKER}{v}`: expected A or B"
        )),
    })
}

/// Whoever can edit a command line could write `fwpack.slot=` too: the
/// slot stage boots only what the bootstrap could have chosen, the active
/// slot or the pending one (never a slot being written or fallen back).
pub fn stage_allowed(boot: &updater::BootState, slot: Slot) -> Result<(), String> {
    if boot.active == slot || boot.pending == Some(slot) {
        return Ok(());
    }
    Err(format!(
        "kernel command line: {MARKER}{slot}, but slot {slot} is neither the active slot ({}) nor pending: not booting it",
        boot.active
    ))
}

/// The slot stage: the bootstrap already applied updates and counted the
/// try, so this neither applies nor changes the boot state. It mounts the
/// slot it was booted for and switches root into it; a slot that cannot
/// be mounted ends in `on_failure` (normally a reboot: the next boot's
/// bootstrap counts the try and falls back when the tries run out).
pub fn slot_stage(
    cfg: &Config,
    disk: &Path,
    slot: Slot,
    init: &switchroot::InitArgs,
) -> Result<std::convert::Infallible, String> {
    log!("slot stage: this kernel was booted by kexec for slot {slot}");
    let mut storage =
        FileStorage::open(disk, updater::Access::ReadOnly).map_err(|e| e.to_string())?;
    let area = StateArea::read(&mut storage, cfg.state_location())
        .map_err(|e| format!("state area of {}: {e}", disk.display()))?;
    drop(storage);
    stage_allowed(area.boot(), slot)?;
    let group = area
        .layout()
        .group(&cfg.root_group)
        .ok_or_else(|| {
            format!(
                "the layout has no slot group `{}` (root_group)",
                cfg.root_group
            )
        })?
        .clone();
    slotmount::mount_slot(cfg, disk, &group, slot)?;
    let info = RunInfo {
        target: disk.to_path_buf(),
        state_offset: cfg.state_offset,
        state_copy_distance: cfg.state_copy_distance,
        slot,
        trial: area.boot().pending == Some(slot),
        tryboot: None,
        max_rate: cfg.max_rate,
    };
    if let Err(e) = info.save(&cfg.keys, cfg.ca.as_deref()) {
        log!("{e} (`fwpack-updater mark-good` will need --target and --slot)");
    }
    log!("switching root to slot {slot}, running {}", cfg.init);
    switchroot::switch_root(&cfg.init, init)
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
            parse_cmdline_file("# slot kernel\nconsole=ttyS0  quiet\n\nmarker=v2 # why\n").unwrap(),
            "console=ttyS0 quiet marker=v2"
        );
        // Balanced quotes pass; what would hide the generated words does not.
        assert_eq!(
            parse_cmdline_file("dyndbg=\"file a.c +p\"\n").unwrap(),
            "dyndbg=\"file a.c +p\""
        );
        assert_eq!(parse_cmdline_file("quiet # \"x\n").unwrap(), "quiet");
        for bad in [
            "quiet x=\"a\n",
            "quiet -- single",
            "a=\"b\" c=\"",
            "x\n--\n",
        ] {
            assert!(parse_cmdline_file(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_words_come_last() {
        let p = "PARTUUID=0f3a7e57-02";
        let c = slot_cmdline(
            &cfg(),
            "quiet root=/dev/sda1",
            "console=ttyS0,115200 fwpack.tries=1",
            &Root::Partition(p),
            Slot::B,
        );
        assert_eq!(
            c,
            "quiet root=/dev/sda1 console=ttyS0,115200 root=PARTUUID=0f3a7e57-02 rootfstype=ext4 rootwait ro panic=7 fwpack.slot=B"
        );
        // Half of a quoted bootstrap word is not copied.
        let c = slot_cmdline(
            &cfg(),
            "",
            "console=\"ttyS0 x\" earlycon",
            &Root::Range,
            Slot::A,
        );
        assert_eq!(c, "earlycon ro panic=7 fwpack.slot=A");
        // The slot's own console wins over the bootstrap's.
        let c = slot_cmdline(
            &cfg(),
            "console=hvc0",
            "console=ttyS0",
            &Root::Partition(p),
            Slot::A,
        );
        assert!(!c.contains("ttyS0") && c.contains("console=hvc0"), "{c}");
        let c = slot_cmdline(&cfg(), "", "", &Root::Range, Slot::A);
        assert_eq!(c, "ro panic=7 fwpack.slot=A");
    }

    #[test]
    fn the_slot_stage_boots_only_what_the_bootstrap_could_choose() {
        let mut b = updater::BootState::initial(Slot::A, 1, "v1").unwrap();
        assert!(stage_allowed(&b, Slot::A).is_ok());
        let e = stage_allowed(&b, Slot::B).unwrap_err();
        assert!(e.contains("neither the active slot"), "{e}");
        b.pending = Some(Slot::B);
        assert!(stage_allowed(&b, Slot::B).is_ok());
    }

    #[test]
    fn the_marker_selects_the_slot_stage() {
        assert!(staged_slot("console=ttyS0 panic=-1").is_none());
        assert_eq!(
            staged_slot("root=/dev/x fwpack.slot=B ro").unwrap(),
            Ok(Slot::B)
        );
        assert!(staged_slot("fwpack.slot=C").unwrap().is_err());
        assert_eq!(
            staged_slot("fwpack.slot=A fwpack.slot=B").unwrap(),
            Ok(Slot::B)
        );
        // The marker is not a setting: the config override parser skips it.
        let (mut c, _) = Config::parse("target = /dev/vda\n").unwrap();
        assert_eq!(
            c.apply_cmdline("fwpack.slot=A fwpack.tries=2").unwrap(),
            vec!["tries=2"]
        );
    }
}
