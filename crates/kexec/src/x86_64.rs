//! x86_64: kexec_file_load of a bzImage. The running kernel parses the
//! image, lays out the segments and supplies its own purgatory, so all we
//! do is check the header (for an error that names the file rather than
//! an errno) and hand over file descriptors.
//!
//! There is no kexec_load fallback here: it would need our own x86
//! purgatory and boot_params setup, and every x86_64 kernel that fwpack
//! boots as a bootstrap (Debian's, 5.x and later) has CONFIG_KEXEC_FILE.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::{BootSpec, Error, Method, Result};

/// x86's COMMAND_LINE_SIZE (including the terminating NUL).
pub const MAX_CMDLINE: usize = 2048;

/// `KEXEC_FILE_NO_INITRAMFS` (include/uapi/linux/kexec.h).
const KEXEC_FILE_NO_INITRAMFS: libc::c_ulong = 0x4;

/// The parts of the bzImage setup header we check
/// (Documentation/arch/x86/boot.rst).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BzImage {
    /// Boot protocol version, e.g. 0x020f.
    pub protocol: u16,
    /// `xloadflags` bit 0: the kernel has a 64-bit entry point.
    pub has_64bit_entry: bool,
}

/// Checks the first bytes (at least 0x238) of a kernel file: the x86
/// setup header of a bzImage with a 64-bit entry point, which is what
/// the kernel's kexec_file_load bzImage64 loader accepts.
pub fn parse_header(head: &[u8]) -> std::result::Result<BzImage, String> {
    let u16_at = |o: usize| head.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    if u16_at(0x1fe) != Some(0xaa55) {
        return Err("no x86 boot sector signature (0xAA55 at 0x1FE)".into());
    }
    if head.get(0x202..0x206) != Some(b"HdrS") {
        return Err("no x86 setup header (\"HdrS\" at 0x202)".into());
    }
    let protocol = u16_at(0x206).ok_or("setup header truncated")?;
    if protocol < 0x020c {
        return Err(format!(
            "boot protocol {}.{:02} is older than 2.12 (no 64-bit entry information)",
            protocol >> 8,
            protocol & 0xff
        ));
    }
    let xloadflags = u16_at(0x236).ok_or("setup header truncated")?;
    let has_64bit_entry = xloadflags & 1 != 0;
    if !has_64bit_entry {
        return Err("the kernel has no 64-bit entry point (xloadflags bit 0)".into());
    }
    Ok(BzImage {
        protocol,
        has_64bit_entry,
    })
}

/// The command line as the syscall wants it: NUL-terminated, within
/// x86's limit.
pub fn cmdline_cstring(cmdline: &str) -> Result<CString> {
    let c = CString::new(cmdline).map_err(|_| Error::BadInput {
        what: "the command line".into(),
        reason: "it contains a NUL byte".into(),
    })?;
    if c.as_bytes_with_nul().len() > MAX_CMDLINE {
        return Err(Error::BadInput {
            what: "the command line".into(),
            reason: format!(
                "{} bytes, x86 kernels take at most {}",
                cmdline.len(),
                MAX_CMDLINE - 1
            ),
        });
    }
    Ok(c)
}

fn open(path: &Path, what: &str, max: u64) -> Result<File> {
    crate::open_regular(path, what, max).map(|(f, _)| f)
}

/// Reads and checks the kernel's setup header; the file position does not
/// matter to kexec_file_load (it reads the whole file itself).
fn check_kernel(f: &mut File, path: &Path) -> Result<()> {
    let mut head = Vec::with_capacity(0x240);
    f.by_ref()
        .take(0x240)
        .read_to_end(&mut head)
        .map_err(|source| Error::Io {
            what: format!("kernel {}", path.display()),
            source,
        })?;
    parse_header(&head).map_err(|reason| Error::BadImage {
        what: format!("kernel {}", path.display()),
        reason,
    })?;
    Ok(())
}

pub fn load(spec: &BootSpec) -> Result<Method> {
    let mut kernel = open(&spec.kernel, "kernel", crate::MAX_KERNEL)?;
    check_kernel(&mut kernel, &spec.kernel)?;
    let initrd = match &spec.initrd {
        Some(p) => Some(open(p, "initrd", crate::MAX_INITRD)?),
        None => None,
    };
    let cmdline = cmdline_cstring(&spec.cmdline)?;
    file_load(&kernel, initrd.as_ref(), &cmdline)?;
    Ok(Method::FileLoad)
}

#[cfg(target_arch = "x86_64")]
fn file_load(kernel: &File, initrd: Option<&File>, cmdline: &CString) -> Result<()> {
    use std::os::fd::AsRawFd;
    let (initrd_fd, flags) = match initrd {
        Some(f) => (f.as_raw_fd(), 0),
        None => (-1, KEXEC_FILE_NO_INITRAMFS),
    };
    let len = cmdline.as_bytes_with_nul().len();
    // SAFETY: kexec_file_load(kernel_fd, initrd_fd, cmdline_len, cmdline,
    // flags) only reads the two descriptors (open for the whole call) and
    // `len` bytes of the NUL-terminated command line we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel.as_raw_fd(),
            initrd_fd,
            len as libc::c_ulong,
            cmdline.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        return Ok(());
    }
    Err(crate::rejected(
        "kexec_file_load",
        std::io::Error::last_os_error(),
    ))
}

#[cfg(not(target_arch = "x86_64"))]
fn file_load(_kernel: &File, _initrd: Option<&File>, _cmdline: &CString) -> Result<()> {
    let _ = KEXEC_FILE_NO_INITRAMFS;
    Err(Error::Unsupported(
        "the x86_64 loader runs on x86_64 kernels only".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(protocol: u16, xloadflags: u16) -> Vec<u8> {
        let mut h = vec![0u8; 0x240];
        h[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        h[0x202..0x206].copy_from_slice(b"HdrS");
        h[0x206..0x208].copy_from_slice(&protocol.to_le_bytes());
        h[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        h
    }

    #[test]
    fn accepts_a_64bit_bzimage_header() {
        assert_eq!(
            parse_header(&header(0x020f, 0x7f)),
            Ok(BzImage {
                protocol: 0x020f,
                has_64bit_entry: true
            })
        );
    }

    #[test]
    fn refuses_what_the_kernel_would_refuse() {
        assert!(parse_header(b"garbage").unwrap_err().contains("0xAA55"));
        let mut h = header(0x020f, 1);
        h[0x202] = b'X';
        assert!(parse_header(&h).unwrap_err().contains("HdrS"));
        assert!(parse_header(&header(0x020a, 1))
            .unwrap_err()
            .contains("2.10"));
        assert!(parse_header(&header(0x020f, 0))
            .unwrap_err()
            .contains("64-bit"));
        // A truncated header is an error, never a panic.
        let h = header(0x020f, 1);
        assert!(parse_header(&h[..0x210]).is_err());
    }

    #[test]
    fn command_line_limits() {
        assert!(cmdline_cstring("console=ttyS0").is_ok());
        assert!(cmdline_cstring("a\0b").is_err());
        assert!(cmdline_cstring(&"x".repeat(MAX_CMDLINE - 1)).is_ok());
        assert!(cmdline_cstring(&"x".repeat(MAX_CMDLINE)).is_err());
    }

    /// The real loader refuses a garbage kernel before any syscall, with
    /// the file's name in the message.
    #[test]
    fn garbage_kernel_is_a_bad_image() {
        let dir = std::env::temp_dir().join(format!("kexec-x86-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = dir.join("kernel");
        std::fs::write(&k, vec![0x5a; 4096]).unwrap();
        let e = load(&BootSpec {
            kernel: k.clone(),
            cmdline: "console=ttyS0".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, Error::BadImage { .. }), "{e}");
        assert!(e.to_string().contains("kernel"), "{e}");
        assert!(e.slot_at_fault());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
