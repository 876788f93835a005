//! Test support shared by the workspace's integration tests (and xtask).
//!
//! - [`kernels`]: real Debian kernels (amd64 cloud, arm64), downloaded once
//!   into a cache with `apt-get download` + `dpkg-deb -x`, never touching
//!   the machine's dpkg state or apt sources;
//! - [`qemu`]: QEMU under TCG with the serial console captured line by line,
//!   `wait_for(pattern, timeout)` instead of sleeps, killed on drop, console
//!   log saved to a file that every failure names;
//! - [`guestnet`]: a QEMU user network restricted to one loopback server,
//!   and the guest-side interface set-up;
//! - [`http`]: nginx on a free loopback port with a parsed access log, and
//!   a fault-injecting HTTP server (404, redirect loop, truncation, stall…);
//! - [`init`]: tiny static `/init` programs built with plain `rustc`;
//! - [`tls`]: a private CA and server certificates made with openssl;
//! - [`tools`]: "is this host tool here?" with a clear skip message.
//!
//! This is test code: it may print progress to stderr, which cargo shows
//! only for failing tests.

pub mod ddi;
pub mod guestnet;
pub mod http;
pub mod init;
pub mod kernels;
pub mod machine;
pub mod program;
pub mod qemu;
pub mod rootfs;
pub mod tls;
pub mod tools;

use std::path::PathBuf;

/// Errors from test support. Messages are written for a human reading a
/// failed test's output.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command could not be run or failed.
    #[error("{command}: {message}")]
    Command { command: String, message: String },
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Something about the environment or the downloaded artifacts is off.
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

/// The workspace root (where the top-level `Cargo.toml` lives).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or(here)
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Download/build cache: `$FWPACK_CACHE` or `<target>/fwpack-cache`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("FWPACK_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => target_dir().join("fwpack-cache"),
    }
}

/// Where console logs and other test evidence are kept.
pub fn log_dir() -> PathBuf {
    target_dir().join("fwpack-test-logs")
}

/// Holds an exclusive `flock` on a file in the cache until dropped, so
/// parallel tests (threads or processes) do not download the same thing twice.
pub struct CacheLock {
    _file: std::fs::File,
}

impl CacheLock {
    pub fn acquire(name: &str) -> Result<Self> {
        let dir = cache_dir();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(format!(".{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            Error::Io {
                path,
                source: e.into(),
            }
        })?;
        Ok(CacheLock { _file: file })
    }
}

/// Runs a command, returning stdout; a failure carries stderr.
pub(crate) fn run(cmd: &mut std::process::Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| Error::Command {
        command: shown.clone(),
        message: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: shown,
            message: format!(
                "{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Stable 64-bit FNV-1a, for cache keys that must not change between runs
/// or Rust versions (std's hasher makes no such promise).
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
