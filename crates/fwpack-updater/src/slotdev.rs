//! A slot is a byte range of the target disk. To mount it, it needs a
//! block device of its own: the partition covering exactly that range
//! when the disk's partition table has one, otherwise a read-only loop
//! device with an offset and a size limit over the disk.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::blkid;
use crate::config::SlotDevice;
use crate::sys;

/// How the slot was made mountable.
#[derive(Debug)]
pub enum Attached {
    Partition(PathBuf),
    /// `/dev/loopN`; auto-clears when its last user goes away, so the
    /// descriptor is held until the mount has its own reference.
    Loop {
        node: PathBuf,
        _hold: OwnedFd,
    },
}

impl Attached {
    pub fn node(&self) -> &Path {
        match self {
            Attached::Partition(p) | Attached::Loop { node: p, .. } => p,
        }
    }
}

impl std::fmt::Display for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attached::Partition(p) => write!(f, "partition {}", p.display()),
            Attached::Loop { node: p, .. } => write!(f, "loop device {}", p.display()),
        }
    }
}

pub fn attach(disk: &Path, offset: u64, size: u64, how: SlotDevice) -> Result<Attached, String> {
    if how != SlotDevice::Loop {
        if let Some(p) = blkid::partition_for_range(disk, offset, size) {
            return Ok(Attached::Partition(p));
        }
        if how == SlotDevice::Partition {
            return Err(format!(
                "no partition of {} covers exactly bytes {offset}..{} (slot_device = partition)",
                disk.display(),
                offset.saturating_add(size)
            ));
        }
    }
    attach_loop(disk, offset, size).map(|(node, fd)| Attached::Loop { node, _hold: fd })
}

fn attach_loop(backing: &Path, offset: u64, size: u64) -> Result<(PathBuf, OwnedFd), String> {
    let control = rustix::fs::open("/dev/loop-control", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
        format!("/dev/loop-control: {e} (the kernel needs loop devices: CONFIG_BLK_DEV_LOOP, or `loop` in the module list)")
    })?;
    let backing_fd = rustix::fs::open(backing, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| format!("opening {}: {e}", backing.display()))?;
    let info = sys::LoopInfo64::new(
        offset,
        size,
        sys::LO_FLAGS_READ_ONLY | sys::LO_FLAGS_AUTOCLEAR,
    );
    // Another process may grab the free device between GET_FREE and the
    // configure call (EBUSY): ask again.
    let mut last = String::new();
    for _ in 0..8 {
        let n =
            sys::loop_get_free(control.as_fd()).map_err(|e| format!("LOOP_CTL_GET_FREE: {e}"))?;
        let node = PathBuf::from(format!("/dev/loop{n}"));
        let dev = rustix::fs::open(&node, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| format!("opening {}: {e}", node.display()))?;
        let r = match sys::loop_configure(dev.as_fd(), backing_fd.as_fd(), &info) {
            // Kernels before 5.8 have no LOOP_CONFIGURE.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTTY)) => {
                sys::loop_set_fd_and_status(dev.as_fd(), backing_fd.as_fd(), &info)
            }
            r => r,
        };
        match r {
            Ok(()) => return Ok((node, dev)),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e.to_string(),
            Err(e) => {
                return Err(format!(
                    "attaching {} to {}: {e}",
                    backing.display(),
                    node.display()
                ))
            }
        }
    }
    Err(format!("no free loop device stayed free: {last}"))
}
