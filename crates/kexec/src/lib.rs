//! Boots another kernel from a running one: the slot kernel chosen by
//! the PID-1 updater. `load` stages the kernel (kexec_file_load where the
//! running kernel has it, else kexec_load with segments we lay out
//! ourselves); `execute` jumps into it and never returns on success.
//!
//! Library rules: no printing, no exiting; typed errors whose message
//! says what the kernel refused and why.

use std::path::PathBuf;

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
    #[error("the running kernel refused the kexec load ({syscall}): {source}")]
    Refused {
        syscall: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("kexec is not supported here: {0}")]
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, Error>;

// Each architecture's loader lives in its own module; pure parts (image
// headers, device-tree rewriting, segment layout) compile and are tested
// on every host, only the syscalls are per target.
pub mod arm64;
/// Device-tree read/rewrite for the arm64 loader (pure, any host).
pub mod fdt;
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

/// Boots the staged kernel (reboot(LINUX_REBOOT_CMD_KEXEC)). Returns only
/// on failure.
pub fn execute() -> Error {
    #[cfg(target_arch = "aarch64")]
    return arm64::execute();
    #[allow(unreachable_code)]
    Error::Unsupported("not implemented yet".into())
}
