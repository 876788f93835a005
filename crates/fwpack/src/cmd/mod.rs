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
pub mod publish;

/// Renders bytes taken from a file (archive names, image strings, ELF
/// section names) safely for a terminal, reversibly; see its docs for the
/// escapes. It lives in the initramfs crate (`initramfs::reader`) so
/// libraries can use it too.
pub use ::initramfs::reader::escape_display;

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// Opens an input file the command reads from. Anything but a regular file
/// is refused by its kind before it is read: a FIFO blocks or ends early
/// (which the parsers would call "truncated"), a device never ends. Exit
/// code 3, as for every input that cannot be read.
pub fn open_input(path: &Path) -> Result<File> {
    open_checked(path, false)
}

/// As [`open_input`], also taking a block device (a disk whose partition
/// table is inspected).
pub fn open_input_or_disk(path: &Path) -> Result<File> {
    open_checked(path, true)
}

fn open_checked(path: &Path, block_ok: bool) -> Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let check = |meta: std::fs::Metadata| -> Result<()> {
        let t = meta.file_type();
        let kind = if t.is_file() || (block_ok && t.is_block_device()) {
            return Ok(());
        } else if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else {
            "not a file"
        };
        Err(crate::exit::refuse(
            crate::exit::IO,
            format!("{} is {kind}, not a regular file", path.display()),
        ))
    };
    // stat before open: a FIFO need not be opened at all, and opening a
    // socket fails with a baffling ENXIO.
    check(std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?)?;
    // Non-blocking, so a path swapped for a FIFO after the stat cannot
    // block the open (fstat below then refuses it); a regular file reads
    // the same either way.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    check(
        file.metadata()
            .with_context(|| format!("reading {}", path.display()))?,
    )?;
    Ok(file)
}

/// The whole content of an input file (small ones: keys, signatures).
pub fn read_input(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut data = Vec::new();
    open_input(path)?
        .read_to_end(&mut data)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(data)
}

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
