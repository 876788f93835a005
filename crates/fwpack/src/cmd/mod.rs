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
    let shown = total >= 32 << 20 && std::io::stderr().is_terminal();
    ProgressBar {
        what: what.to_string(),
        total,
        done: 0,
        started: std::time::Instant::now(),
        drawn: None,
        shown,
    }
}

/// `what [=====>    ] done/total rate eta`, redrawn in place at most ten
/// times a second. Our own rather than indicatif's: that one brings libm
/// (for one `pow`) and more code, and the mapped pages of both count in
/// `fwpack apply`'s peak RSS (docs/BENCHMARKS.md). Integer arithmetic
/// only, for the same reason.
pub struct ProgressBar {
    what: String,
    total: u64,
    done: u64,
    started: std::time::Instant,
    /// When the line was last drawn (`None`: not on screen).
    drawn: Option<std::time::Instant>,
    shown: bool,
}

impl ProgressBar {
    pub fn inc(&mut self, n: u64) {
        self.set_position(self.done.saturating_add(n));
    }

    pub fn set_position(&mut self, done: u64) {
        self.done = done.min(self.total);
        let due = self
            .drawn
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(100));
        if self.shown && due {
            self.draw();
        }
    }

    fn draw(&mut self) {
        const WIDTH: u64 = 40;
        let total = self.total.max(1);
        let fill = (self.done.saturating_mul(WIDTH) / total) as usize;
        let mut bar = "=".repeat(fill);
        if fill < WIDTH as usize {
            bar.push('>');
        }
        let ms = self.started.elapsed().as_millis().max(1) as u64;
        let rate = self.done.saturating_mul(1000) / ms;
        let eta = (self.total - self.done).checked_div(rate).unwrap_or(0);
        eprint!(
            "\r{:>10} [{bar:<40}] {}/{} {}/s eta {}s\x1b[K",
            self.what,
            bytes(self.done),
            bytes(self.total),
            bytes(rate),
            eta
        );
        self.drawn = Some(std::time::Instant::now());
    }

    pub fn finish_and_clear(&mut self) {
        if self.drawn.take().is_some() {
            eprint!("\r\x1b[K");
        }
    }

    /// Runs `f` (which prints a line) with the bar off the screen.
    pub fn suspend(&mut self, f: impl FnOnce()) {
        let was = self.drawn.is_some();
        self.finish_and_clear();
        f();
        if was {
            self.draw();
        }
    }
}

impl Drop for ProgressBar {
    fn drop(&mut self) {
        self.finish_and_clear();
    }
}

/// `n` bytes in binary units with one decimal, e.g. `12.5 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut unit, mut scale) = (0, 1u64);
    while unit + 1 < UNITS.len() && n / scale >= 1024 {
        unit += 1;
        scale *= 1024;
    }
    if unit == 0 {
        return format!("{n} B");
    }
    let tenths = (u128::from(n) * 10 / u128::from(scale)) as u64;
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
}
