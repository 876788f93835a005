//! One module per group of subcommands.

pub mod apply;
pub mod boards;
pub mod build;
pub mod disk;
pub mod docs;
pub mod elf;
pub mod image;
pub mod initramfs;
pub mod keys;

/// Renders bytes taken from a file (archive names, image strings, ELF
/// section names) safely for a terminal, reversibly; see its docs for the
/// escapes. It lives in the initramfs crate (`initramfs::reader`) so
/// libraries can use it too.
pub use ::initramfs::reader::escape_display;

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// Writes `data` to `path` via a temporary file in the same directory and a
/// rename, so a failure never leaves a partial file at `path`. The file is
/// created 0666 minus the umask (0644 under 022), as `cp` would make it:
/// images, manifests and public keys are published, and tempfile's own
/// 0600 made a web server answer 403. Private keys never come here.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    write_atomic_with(path, |f| Ok(f.write_all(data)?))
}

/// Like [`write_atomic`], with the content produced by `fill`.
pub fn write_atomic_with<T>(path: &Path, fill: impl FnOnce(&mut File) -> Result<T>) -> Result<T> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".fwpack-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let value = fill(tmp.as_file_mut()).with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    Ok(value)
}

/// A progress bar on stderr for inputs large enough to be worth one, and
/// only when stderr is a terminal (pipelines get clean logs).
pub fn progress_bar(total: u64, what: &str) -> ProgressBar {
    use std::io::IsTerminal;
    if total < 32 << 20 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}
