//! Mounting the chosen slot and handing the machine to its init, the way
//! busybox `switch_root` does: move /dev, /proc, /sys and /run into the
//! new root, empty the initramfs (its RAM would otherwise stay used until
//! power-off, update images included), move the new root onto `/`,
//! chroot, exec init.

use std::convert::Infallible;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::{MountFlags, UnmountFlags};

use crate::sys;

/// Where the new root is mounted inside the initramfs.
pub const NEW_ROOT: &str = "/newroot";

const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Mounts `dev` read-only on [`NEW_ROOT`], and `nodev,nosuid,noexec`:
/// while PID 1 inspects a slot (its init, its kernel files) nothing in it
/// is a device, runs or gains privileges. [`switch_root`] lifts the three
/// for the slot's own system.
pub fn mount_root(dev: &Path, fstype: &str, data: &str) -> Result<(), String> {
    let _ = rustix::fs::mkdir(NEW_ROOT, Mode::from_raw_mode(0o755));
    let data = std::ffi::CString::new(data).map_err(|_| "root_flags contains NUL".to_string())?;
    let flags = MountFlags::RDONLY | MountFlags::NODEV | MountFlags::NOSUID | MountFlags::NOEXEC;
    rustix::mount::mount(dev, NEW_ROOT, fstype, flags, data.as_c_str()).map_err(|e| {
        let hint = match e {
            rustix::io::Errno::NODEV => format!(" (the kernel has no {fstype} driver: add its module to the module list)"),
            rustix::io::Errno::ROFS | rustix::io::Errno::INVAL => {
                " (not a clean filesystem of that type? a journal needing recovery cannot be replayed read-only: root_flags = noload)".to_string()
            }
            _ => String::new(),
        };
        format!("mounting {} ({fstype}, read-only) on {NEW_ROOT}: {e}{hint}", dev.display())
    })
}

pub fn unmount_root() {
    let _ = rustix::mount::unmount(NEW_ROOT, UnmountFlags::DETACH);
}

/// Whether `init` exists and is an executable file inside the new root,
/// resolving symlinks (often absolute, e.g. to /lib/systemd/systemd)
/// relative to the new root, not to the initramfs.
pub fn check_init(init: &str) -> Result<(), String> {
    let root = rustix::fs::open(
        NEW_ROOT,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{NEW_ROOT}: {e}"))?;
    let rel = init.trim_start_matches('/');
    let fd = match rustix::fs::openat2(
        &root,
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    ) {
        Ok(fd) => fd,
        // Before Linux 5.6 there is no openat2: the exec will tell.
        Err(rustix::io::Errno::NOSYS) => return Ok(()),
        Err(e) => return Err(format!("{init} in the new root: {e}")),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("{init}: {e}"))?;
    let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if ft != rustix::fs::FileType::RegularFile || st.st_mode & 0o111 == 0 {
        return Err(format!("{init} in the new root is not an executable file"));
    }
    Ok(())
}

/// Removes everything on the initramfs (the filesystem of `dir`),
/// without crossing into other mounts.
fn delete_tree(dir: &Path, dev: u64) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.dev() != dev {
            continue;
        }
        if m.is_dir() {
            delete_tree(&p, dev);
            let _ = std::fs::remove_dir(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// What the slot's init is started with: the kernel's extra arguments
/// and the environment PID 1 built ([`crate::pid1::init_env`]).
pub struct InitArgs {
    pub args: Vec<std::ffi::OsString>,
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

/// Switches to the new root and executes `init` with `with`. Returns only
/// on failure; by then the initramfs may be gone, so the caller can only
/// log and reboot.
pub fn switch_root(init: &str, with: &InitArgs) -> Result<Infallible, String> {
    let root_dev = std::fs::metadata("/").map_err(|e| format!("/: {e}"))?.dev();
    let new_dev = std::fs::metadata(NEW_ROOT)
        .map_err(|e| format!("{NEW_ROOT}: {e}"))?
        .dev();
    if root_dev == new_dev {
        return Err(format!("nothing is mounted on {NEW_ROOT}"));
    }
    // `f_type`'s integer type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    let fs_type = rustix::fs::statfs("/")
        .map(|s| s.f_type as i64)
        .unwrap_or(0);
    let is_initramfs = fs_type == RAMFS_MAGIC || fs_type == TMPFS_MAGIC;

    // The slot becomes the system's root: its setuid programs and device
    // nodes work as on any root (a bind remount changes only these flags).
    rustix::mount::mount_remount(NEW_ROOT, MountFlags::BIND | MountFlags::RDONLY, c"")
        .map_err(|e| format!("remounting {NEW_ROOT} for its init: {e}"))?;
    for m in ["/dev", "/proc", "/sys", "/run"] {
        let dst = format!("{NEW_ROOT}{m}");
        if let Err(e) = rustix::mount::mount_move(m, dst.as_str()) {
            // A read-only root cannot get the missing directory created.
            crate::log!("cannot move {m} into the new root ({e}); detaching it instead");
            let _ = rustix::mount::unmount(m, UnmountFlags::DETACH);
        }
    }
    rustix::process::chdir(NEW_ROOT).map_err(|e| format!("chdir {NEW_ROOT}: {e}"))?;
    // Only ever empty an initramfs, never a real disk we were started on.
    if is_initramfs {
        delete_tree(Path::new("/"), root_dev);
    }
    rustix::mount::mount_move(".", "/").map_err(|e| format!("moving {NEW_ROOT} to /: {e}"))?;
    rustix::process::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    rustix::process::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    sys::unblock_all();
    // PID 1 wrote its console non-blocking (pid1.rs); its init reads and
    // writes it as any program does. fds 0-2 share the one description.
    if let Ok(fl) = rustix::fs::fcntl_getfl(rustix::stdio::stdin()) {
        let _ = rustix::fs::fcntl_setfl(rustix::stdio::stdin(), fl - OFlags::NONBLOCK);
    }
    // PID 1 is the only thread: setting the environment the exec passes
    // on is sound here, and smaller than Command's own environment map.
    for (k, _) in std::env::vars_os() {
        std::env::remove_var(k);
    }
    for (k, v) in &with.env {
        std::env::set_var(k, v);
    }
    let err = std::process::Command::new(init)
        .arg0(init)
        .args(&with.args)
        .exec();
    Err(format!("executing {init}: {err}"))
}
