//! [`Storage`] on a block device or a plain file: O_DIRECT where the
//! kernel allows it (falling back to buffered I/O with a warning),
//! `fdatasync` for durability, sector sizes from BLKSSZGET/BLKPBSZGET, and
//! an exclusive open (`O_EXCL`) of block devices held for the whole apply.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::OFlags;

use crate::running::BootedSlot;
use crate::storage::{BusyCheck, Geometry, SharedIo, Storage};
use crate::{busy, Error, Result};

/// How to open a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// For `status`: no exclusive claim, nothing written.
    ReadOnly,
    /// For apply and state changes.
    ReadWrite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TargetKind {
    BlockDevice { rdev: u64 },
    File { dev: u64, ino: u64 },
}

/// A block device or a regular file used as a disk.
pub struct FileStorage {
    fd: Arc<Fd>,
    path: PathBuf,
    kind: TargetKind,
    geometry: Geometry,
    /// Block devices opened for writing: whether `O_EXCL` succeeded.
    exclusive: Option<bool>,
    /// Where to learn which slot the running system booted from.
    boot_record: Option<PathBuf>,
}

/// The open target: positional I/O through `&self`, so the engine's
/// writer threads share one descriptor ([`Storage::shared_io`]) and keep
/// more than one O_DIRECT write in flight.
struct Fd {
    file: File,
    path: PathBuf,
    size: u64,
    /// O_DIRECT is on (cleared once, by whichever thread hits a refusal).
    direct: AtomicBool,
    warning: Mutex<Option<String>>,
}

/// `$FWPACK_BOOT_RECORD` if set (empty: none), else the PID-1 updater's.
fn default_boot_record() -> Option<PathBuf> {
    match std::env::var_os("FWPACK_BOOT_RECORD") {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(PathBuf::from(p)),
        None => Some(PathBuf::from(busy::BOOT_RECORD)),
    }
}

fn errno(e: &io::Error) -> Option<rustix::io::Errno> {
    e.raw_os_error().map(rustix::io::Errno::from_raw_os_error)
}

impl FileStorage {
    pub fn open(path: &Path, access: Access) -> Result<FileStorage> {
        let what = || format!("opening {}", path.display());
        let meta = std::fs::metadata(path).map_err(Error::io(what()))?;
        let ft = meta.file_type();
        let kind = if ft.is_block_device() {
            TargetKind::BlockDevice { rdev: meta.rdev() }
        } else if ft.is_file() {
            TargetKind::File {
                dev: meta.dev(),
                ino: meta.ino(),
            }
        } else {
            return Err(Error::InvalidInput {
                what: "target",
                value: path.display().to_string(),
                reason: "neither a block device nor a regular file".into(),
            });
        };
        let want_excl =
            access == Access::ReadWrite && matches!(kind, TargetKind::BlockDevice { .. });
        let mut warning = None;
        let mut direct = true;
        let mut exclusive = want_excl.then_some(true);
        let file = loop {
            let mut flags = OFlags::empty();
            if direct {
                flags |= OFlags::DIRECT;
            }
            if exclusive == Some(true) {
                flags |= OFlags::EXCL;
            }
            let mut o = OpenOptions::new();
            o.read(true)
                .write(access == Access::ReadWrite)
                .custom_flags(flags.bits() as i32);
            match o.open(path) {
                Ok(f) => break f,
                Err(e) if direct && errno(&e) == Some(rustix::io::Errno::INVAL) => {
                    direct = false;
                    warning = Some(format!(
                        "{} refuses O_DIRECT; using buffered I/O with fdatasync (read-back may be served from the page cache)",
                        path.display()
                    ));
                }
                Err(e) if exclusive == Some(true) && errno(&e) == Some(rustix::io::Errno::BUSY) => {
                    // Someone holds it; the busy check says who and decides.
                    exclusive = Some(false);
                }
                Err(e) => return Err(Error::io(what())(e)),
            }
        };
        let (size, geometry) = match kind {
            TargetKind::BlockDevice { .. } => {
                let logical = rustix::fs::ioctl_blksszget(&file)
                    .map_err(|e| Error::io(format!("BLKSSZGET on {}", path.display()))(e.into()))?;
                let physical = rustix::fs::ioctl_blkpbszget(&file).unwrap_or(logical);
                let size = (&file)
                    .seek(SeekFrom::End(0))
                    .map_err(Error::io(format!("size of {}", path.display())))?;
                (size, Geometry { logical, physical })
            }
            // A file has no sectors of its own: 512 is what every
            // filesystem's O_DIRECT accepts at worst; a refusal falls back.
            TargetKind::File { .. } => (
                meta.len(),
                Geometry {
                    logical: 512,
                    physical: 4096,
                },
            ),
        };
        if !geometry.logical.is_power_of_two() || !geometry.physical.is_power_of_two() {
            return Err(Error::InvalidInput {
                what: "sector size",
                value: format!("{}/{}", geometry.logical, geometry.physical),
                reason: "not a power of two".into(),
            });
        }
        Ok(FileStorage {
            fd: Arc::new(Fd {
                file,
                path: path.to_path_buf(),
                size,
                direct: AtomicBool::new(direct),
                warning: Mutex::new(warning),
            }),
            path: path.to_path_buf(),
            kind,
            geometry,
            exclusive,
            boot_record: default_boot_record(),
        })
    }

    /// Which boot record says what runs (default: [`busy::BOOT_RECORD`],
    /// or `$FWPACK_BOOT_RECORD`); `None` turns the running-slot check off.
    pub fn set_boot_record(&mut self, path: Option<PathBuf>) {
        self.boot_record = path;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_block_device(&self) -> bool {
        matches!(self.kind, TargetKind::BlockDevice { .. })
    }
}

impl Fd {
    /// Drops O_DIRECT on the open descriptor after the kernel refused an
    /// aligned request with EINVAL (some filesystems accept the flag at
    /// open and refuse at the first I/O). True: try the request again
    /// (also when another thread dropped the flag meanwhile).
    fn fall_back(&self, e: &io::Error) -> bool {
        if errno(e) != Some(rustix::io::Errno::INVAL) {
            return false;
        }
        let Ok(flags) = rustix::fs::fcntl_getfl(&self.file) else {
            return false;
        };
        if !flags.contains(OFlags::DIRECT) {
            // Cleared by another thread after this request was issued.
            return !self.direct.load(Ordering::Acquire);
        }
        if rustix::fs::fcntl_setfl(&self.file, flags - OFlags::DIRECT).is_err() {
            return false;
        }
        if self.direct.swap(false, Ordering::AcqRel) {
            let w = format!(
                "{} refused an O_DIRECT request ({e}); continuing with buffered I/O and fdatasync",
                self.path.display()
            );
            *self.warning.lock().unwrap_or_else(|p| p.into_inner()) = Some(w);
        }
        true
    }
}

impl SharedIo for Fd {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self.file.read_exact_at(buf, offset) {
            Err(e) if self.fall_back(&e) => self.file.read_exact_at(buf, offset),
            r => r,
        }
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        // Plain files grow on write; a disk does not. Keep them alike so a
        // test on a file cannot pass where a device would fail.
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "write of {} bytes at {offset} beyond the target's {} bytes",
                    buf.len(),
                    self.size
                ),
            ));
        }
        match self.file.write_all_at(buf, offset) {
            Err(e) if self.fall_back(&e) => self.file.write_all_at(buf, offset),
            r => r,
        }
    }
}

impl Storage for FileStorage {
    fn size(&self) -> u64 {
        self.fd.size
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.fd.read_at(offset, buf)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.fd.write_at(offset, buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.fd.file.sync_data()
    }

    fn shared_io(&self) -> Option<Arc<dyn SharedIo>> {
        Some(self.fd.clone())
    }

    fn busy(&mut self, ranges: &[Range<u64>]) -> io::Result<BusyCheck> {
        match self.kind {
            TargetKind::BlockDevice { rdev } => {
                busy::check(rdev, ranges, self.exclusive == Some(false))
            }
            TargetKind::File { dev, ino } => busy::check_file(dev, ino, ranges),
        }
    }

    fn booted_slot(&mut self) -> io::Result<Option<BootedSlot>> {
        let Some(rec) = &self.boot_record else {
            return Ok(None);
        };
        let kind = self.kind;
        busy::read_boot_record(rec, |m| match kind {
            TargetKind::BlockDevice { rdev } => m.file_type().is_block_device() && m.rdev() == rdev,
            TargetKind::File { dev, ino } => m.is_file() && m.dev() == dev && m.ino() == ino,
        })
    }

    fn take_warning(&mut self) -> Option<String> {
        self.fd
            .warning
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn direct_io(&self) -> bool {
        self.fd.direct.load(Ordering::Acquire)
    }

    fn describe(&self) -> String {
        let io = if self.direct_io() {
            "O_DIRECT"
        } else {
            "buffered"
        };
        match self.kind {
            TargetKind::BlockDevice { rdev } => {
                let (ma, mi) = busy::dev_num(rdev);
                format!(
                    "block device {} ({ma}:{mi}), {} bytes, {}/{}-byte sectors, {io}{}",
                    self.path.display(),
                    self.fd.size,
                    self.geometry.logical,
                    self.geometry.physical,
                    if self.exclusive == Some(true) {
                        ", exclusive"
                    } else {
                        ""
                    }
                )
            }
            TargetKind::File { .. } => {
                format!("file {}, {} bytes, {io}", self.path.display(), self.fd.size)
            }
        }
    }
}
