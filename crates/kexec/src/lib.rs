//! Boots another kernel from a running one: the slot kernel chosen by
//! the PID-1 updater. `load` stages the kernel (kexec_file_load where the
//! running kernel has it, else kexec_load with segments we lay out
//! ourselves); `execute` jumps into it and never returns on success.
//!
//! Library rules: no printing, no exiting; typed errors whose message
//! says what the kernel refused and why.

use std::path::{Path, PathBuf};

/// What to boot.
#[derive(Clone, Debug, Default)]
pub struct BootSpec {
    /// Kernel image (x86_64 bzImage, arm64 `Image`; compressed forms are
    /// the implementation's choice to accept or refuse).
    pub kernel: PathBuf,
    /// Optional initrd.
    pub initrd: Option<PathBuf>,
    /// Device tree for arm64 (None: the running kernel's
    /// /sys/firmware/fdt, with /chosen rewritten).
    pub dtb: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
}

/// How a kernel was staged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    FileLoad,
    Load,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is not a kernel this loader understands: {reason}")]
    BadImage { what: String, reason: String },
    /// A file that is not a bounded regular file, a command line or a
    /// device tree this loader or the next kernel cannot take.
    #[error("{what}: {reason}")]
    BadInput { what: String, reason: String },
    #[error("the running kernel refused the kexec load ({syscall}): {source}")]
    Refused {
        syscall: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The load syscall failed; `meaning` says what that errno means for
    /// a kexec load (see [`rejected`]).
    #[error("the running kernel refused the kexec load ({syscall}: {source}): {meaning}")]
    Rejected {
        syscall: &'static str,
        #[source]
        source: std::io::Error,
        meaning: &'static str,
    },
    /// The slot asks for more room than this machine has: a kernel whose
    /// `image_size` fits in no free RAM range, an initrd outside the
    /// window the kernel can reach.
    #[error("no room for the {what} ({size} bytes) in this machine's free memory")]
    NoRoom { what: String, size: u64 },
    #[error("kexec is not supported here: {0}")]
    Unsupported(String),
}

impl Error {
    /// Whether the kernel, initrd, DTB or command line being loaded is to
    /// blame (so trying another slot's kernel may work), rather than the
    /// running kernel lacking kexec or us lacking the privilege. A caller
    /// choosing between slots counts the first kind as a failed try.
    ///
    /// By cause: reading a slot file ([`Error::Io`]), a kernel, file,
    /// command line or device tree this loader or the kernel refuses
    /// ([`Error::BadImage`], [`Error::BadInput`], and
    /// the load syscall's errors other than ENOSYS, EPERM and EBUSY),
    /// sizes that fit nowhere ([`Error::NoRoom`]) are the slot's fault;
    /// no loader, no readable /proc/iomem or live device tree, no
    /// permission, a load in progress ([`Error::Unsupported`], those three
    /// errnos) are the running system's.
    pub fn slot_at_fault(&self) -> bool {
        match self {
            Error::Io { .. }
            | Error::BadImage { .. }
            | Error::BadInput { .. }
            | Error::NoRoom { .. } => true,
            Error::Refused { source, .. } | Error::Rejected { source, .. } => !matches!(
                source.raw_os_error(),
                Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::EBUSY)
            ),
            Error::Unsupported(_) => false,
        }
    }
}

/// What an errno from kexec_load / kexec_file_load means (kernel/kexec*.c).
pub fn errno_meaning(errno: i32) -> &'static str {
    match errno {
        libc::ENOEXEC => "not a kernel image this kernel can load (wrong architecture or format, or a corrupt file)",
        libc::EKEYREJECTED | libc::EKEYREVOKED | libc::ENOKEY => {
            "the kernel requires signed kexec images (KEXEC_SIG, lockdown or Secure Boot) and this one's signature is missing or untrusted"
        }
        libc::EPERM => "not permitted: CAP_SYS_BOOT is missing, kexec is disabled (kernel.kexec_load_disabled) or the kernel is locked down",
        libc::ENOSYS => "the running kernel was built without this kexec interface",
        libc::EBUSY => "another kexec load or execution is in progress",
        libc::EINVAL => "the kernel rejected the arguments or segments (bad flags, command line or image layout)",
        libc::ENOMEM | libc::EADDRNOTAVAIL => "no room for the image in memory (too large, or memory is fragmented)",
        libc::EFBIG => "a file is larger than the kernel accepts",
        _ => "unexpected error",
    }
}

/// The error for a failed load syscall, with what its errno means.
pub fn rejected(syscall: &'static str, source: std::io::Error) -> Error {
    let meaning = errno_meaning(source.raw_os_error().unwrap_or(0));
    Error::Rejected {
        syscall,
        source,
        meaning,
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Largest kernel image read (an arm64 `Image` is read into memory).
pub const MAX_KERNEL: u64 = 256 << 20;
/// Largest initrd read.
pub const MAX_INITRD: u64 = 1 << 30;

/// Opens `path` for reading only if it is a regular file of at most `max`
/// bytes, without blocking: `O_NONBLOCK` makes a FIFO or a device that
/// waits for a peer return at once, and `fstat` refuses it before any
/// read. The caller's path may be `/proc/self/fd/N` of an `O_PATH`
/// descriptor; that reopens the very inode it names.
pub fn open_regular(path: &Path, what: &str, max: u64) -> Result<(std::fs::File, u64)> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let io = |source| Error::Io {
        what: format!("{what} {}", path.display()),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let m = f.metadata().map_err(io)?;
    let ft = m.file_type();
    if !ft.is_file() {
        let kind = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(Error::BadInput {
            what: format!("{what} {}", path.display()),
            reason: format!("{kind}, not a regular file"),
        });
    }
    if m.len() > max {
        return Err(Error::BadInput {
            what: format!("{what} {}", path.display()),
            reason: format!("{} bytes, more than the {max} accepted", m.len()),
        });
    }
    Ok((f, m.len()))
}

/// [`open_regular`], then reads it whole: never more than `max` bytes,
/// whatever the size said (a file that grows is cut off and refused).
pub fn read_regular(path: &Path, what: &str, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let (f, len) = open_regular(path, what, max)?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|source| Error::Io {
            what: format!("{what} {}", path.display()),
            source,
        })?;
    if buf.len() as u64 > max {
        return Err(Error::BadInput {
            what: format!("{what} {}", path.display()),
            reason: format!("grew past the {max} bytes accepted while read"),
        });
    }
    Ok(buf)
}

// Each architecture's loader lives in its own module; pure parts (image
// headers, device-tree rewriting, segment layout) compile and are tested
// on every host, only the syscalls are per target.
pub mod arm64;
/// Device-tree read/rewrite for the arm64 loader (pure, any host).
pub mod fdt;
pub mod livefdt;
pub mod x86_64;

/// Stages `spec` so that [`execute`] boots it.
pub fn load(spec: &BootSpec) -> Result<Method> {
    #[cfg(target_arch = "x86_64")]
    return x86_64::load(spec);
    #[cfg(target_arch = "aarch64")]
    return arm64::load(spec);
    #[allow(unreachable_code)]
    {
        let _ = spec;
        Err(Error::Unsupported(format!(
            "no kexec loader for {}",
            std::env::consts::ARCH
        )))
    }
}

/// Boots the staged kernel: sync, then reboot(LINUX_REBOOT_CMD_KEXEC).
/// Returns only on failure. Filesystems are not unmounted (the caller
/// unmounts what it mounted; read-only mounts need nothing).
pub fn execute() -> Error {
    rustix::fs::sync();
    match rustix::system::reboot(rustix::system::RebootCommand::Kexec) {
        // reboot(KEXEC) returns only if nothing is loaded.
        Ok(()) => Error::Unsupported("reboot(KEXEC) returned: no kernel is staged".into()),
        Err(e) => match e {
            rustix::io::Errno::INVAL => {
                Error::Unsupported("no kernel is staged (load first)".into())
            }
            e => rejected("reboot(LINUX_REBOOT_CMD_KEXEC)", e.into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_the_errno_means() {
        let e = rejected(
            "kexec_file_load",
            std::io::Error::from_raw_os_error(libc::ENOEXEC),
        );
        assert!(e.to_string().contains("not a kernel image"), "{e}");
        assert!(e.slot_at_fault());
        let e = rejected(
            "kexec_file_load",
            std::io::Error::from_raw_os_error(libc::EKEYREJECTED),
        );
        assert!(e.to_string().contains("signed"), "{e}");
        assert!(e.slot_at_fault());
        for errno in [libc::EPERM, libc::ENOSYS] {
            let e = rejected("kexec_file_load", std::io::Error::from_raw_os_error(errno));
            assert!(!e.slot_at_fault(), "{e}");
        }
        assert!(!Error::Unsupported("x".into()).slot_at_fault());
        let e = Error::NoRoom {
            what: "kernel".into(),
            size: 1,
        };
        assert!(e.slot_at_fault());
    }

    /// A FIFO, a device or a file over the limit is refused after fstat,
    /// without blocking and without reading (a FIFO with no writer would
    /// block an `O_RDONLY` open forever).
    #[test]
    fn only_bounded_regular_files_are_read() {
        let dir = std::env::temp_dir().join(format!("kexec-open-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("kernel");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_regular(&fifo, "kernel", 1 << 20).unwrap_err();
        assert!(e.to_string().contains("FIFO") && e.slot_at_fault(), "{e}");
        let e = read_regular(Path::new("/dev/null"), "initrd", 1 << 20).unwrap_err();
        assert!(e.to_string().contains("device") && e.slot_at_fault(), "{e}");
        let f = dir.join("dtb");
        std::fs::write(&f, [7u8; 100]).unwrap();
        assert_eq!(read_regular(&f, "device tree", 100).unwrap(), [7u8; 100]);
        let e = read_regular(&f, "device tree", 99).unwrap_err();
        assert!(e.to_string().contains("more than the 99"), "{e}");
        let e = read_regular(&dir.join("none"), "kernel", 9).unwrap_err();
        assert!(matches!(e, Error::Io { .. }) && e.slot_at_fault(), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
