//! ELF policy checks for the binaries that will run on a device.
//!
//! One pass over a file gives [`ElfFacts`] (what it is: machine, class,
//! linkage, segments, strip state) and a list of typed [`Finding`]s (what
//! is wrong with it under a [`Policy`]). A file passes when no finding is
//! an error. Any input — a shell script, a truncated copy, random bytes —
//! yields findings, never a panic: header counts and offsets are checked
//! against the file before anything is read through them.
//!
//! ```no_run
//! use elfcheck::{check_files, require_pass, Machine, Policy};
//!
//! let policy = Policy {
//!     machine: Some(Machine::Aarch64),
//!     size_budget: Some(1 << 20),
//!     require_stripped: true,
//!     ..Policy::default()
//! };
//! let reports = check_files(["target/updater"], &policy)?;
//! require_pass(&reports)?; // Err(Error::Rejected | Error::Malformed) lists the failures
//! # Ok::<(), elfcheck::Error>(())
//! ```

mod facts;
mod finding;
mod inspect;
mod machine;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use facts::{flags_string, ElfFacts, Linkage, Segment, StackPolicy};
pub use finding::{Finding, FindingKind, Severity};
pub use machine::{Class, ElfType, Endianness, Machine, ParseMachineError};

/// What a device binary must satisfy. The defaults are the rules that hold
/// for every board (static, W^X, entry in code); a board config adds its
/// machine, its size budget and whether symbols are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Required `e_machine`; also fixes the class and byte order. `None`
    /// accepts any machine.
    pub machine: Option<Machine>,
    /// Largest acceptable file size in bytes.
    pub size_budget: Option<u64>,
    /// Symbol tables or debug sections are an error rather than a warning.
    pub require_stripped: bool,
    /// An interpreter or needed libraries are an error. On by default:
    /// the device has no loader and no libraries.
    pub require_static: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            machine: None,
            size_budget: None,
            require_stripped: false,
            require_static: true,
        }
    }
}

/// The outcome of checking one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The file checked; `None` for [`check_bytes`].
    pub path: Option<PathBuf>,
    /// In the order found; errors and warnings mixed.
    pub findings: Vec<Finding>,
    /// `None` when not even the ELF header could be read.
    pub facts: Option<ElfFacts>,
}

/// How a report ended, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No errors (warnings allowed).
    Pass,
    /// A well-formed ELF that the policy refuses.
    Rejected,
    /// Not an ELF, or one we could not parse completely.
    Malformed,
}

impl Report {
    /// No finding is an error.
    pub fn passed(&self) -> bool {
        self.verdict() == Verdict::Pass
    }

    /// Malformed wins over Rejected: a policy verdict on a file we could
    /// not fully read would rest on partial facts.
    pub fn verdict(&self) -> Verdict {
        let mut verdict = Verdict::Pass;
        for f in self.errors() {
            if f.kind.is_format() {
                return Verdict::Malformed;
            }
            verdict = Verdict::Rejected;
        }
        verdict
    }

    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
    }

    /// The path for messages, or `<bytes>` for in-memory input.
    pub fn display_name(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "<bytes>".to_string(), |p| p.display().to_string())
    }
}

impl Serialize for Report {
    /// Adds the derived `verdict` and `passed`, so JSON consumers need not
    /// re-derive them from the findings.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            path: Option<&'a Path>,
            passed: bool,
            verdict: Verdict,
            findings: &'a [Finding],
            facts: Option<&'a ElfFacts>,
        }
        View {
            path: self.path.as_deref(),
            passed: self.passed(),
            verdict: self.verdict(),
            findings: &self.findings,
            facts: self.facts.as_ref(),
        }
        .serialize(s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a regular file (a directory, FIFO, socket or device): refused
    /// before reading, since a FIFO can block forever and a device such as
    /// /dev/zero never ends.
    #[error("{} is {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    /// At least one file is not a parseable ELF.
    #[error("{} of {total} file(s) are not valid ELF executables: {}", failed.len(), summary(failed))]
    Malformed {
        failed: Vec<(String, String)>,
        total: usize,
    },
    /// All files parsed, and the policy refused at least one.
    #[error("{} of {total} file(s) failed the ELF policy: {}", failed.len(), summary(failed))]
    Rejected {
        /// (file, first error message) per failed file.
        failed: Vec<(String, String)>,
        total: usize,
    },
}

fn summary(failed: &[(String, String)]) -> String {
    failed
        .iter()
        .map(|(file, why)| format!("{file}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks an in-memory file.
pub fn check_bytes(bytes: &[u8], policy: &Policy) -> Report {
    let (findings, facts) = inspect::inspect(&bytes, policy);
    Report {
        path: None,
        findings,
        facts,
    }
}

/// A regular file that reports length 0 (procfs, sysfs) is read whole
/// up to this many bytes (its length is the only thing that says where
/// its headers can be).
pub const READ_LIMIT: u64 = 1 << 30;

/// Reads and checks one regular file. Only reading can fail (including
/// [`Error::NotRegular`]); everything about the contents is in the report.
///
/// Only what the ELF headers point at is read (the headers, `PT_INTERP`,
/// `PT_DYNAMIC` and its string table, the section-name table), each
/// bounded, so memory and reads do not grow with the file. A file larger
/// than the size budget gets a single [`FindingKind::OverBudget`] error
/// and is not parsed, so its report has no facts.
pub fn check_file(path: impl AsRef<Path>, policy: &Policy) -> Result<Report, Error> {
    check_file_counted(path.as_ref(), policy).map(|(report, _)| report)
}

/// [`check_file`], and how many bytes it read through the ELF headers
/// (tests hold it to the headers' size, whatever the file's).
pub(crate) fn check_file_counted(path: &Path, policy: &Policy) -> Result<(Report, u64), Error> {
    let file = open_regular(path)?;
    let len = file.metadata().map_err(|e| io_error(path, e))?.len();
    let report = |findings, facts| Report {
        path: Some(path.to_path_buf()),
        findings,
        facts,
    };
    if let Some(budget) = policy.size_budget.filter(|&b| len > b) {
        return Ok((report(vec![inspect::over_budget(len, budget)], None), 0));
    }
    if len > 0 {
        let input = FileInput {
            file,
            len,
            error: std::cell::RefCell::new(None),
            read: std::cell::Cell::new(0),
        };
        let (findings, facts) = inspect::inspect(&input, policy);
        if let Some(source) = input.error.into_inner() {
            return Err(io_error(path, source));
        }
        return Ok((report(findings, facts), input.read.get()));
    }
    // A length of 0 may be a lie (procfs): read it whole, bounded.
    let limit = policy.size_budget.unwrap_or(READ_LIMIT);
    match read_bounded(file, limit).map_err(|e| io_error(path, e))? {
        Ok(bytes) => {
            let (findings, facts) = inspect::inspect(&bytes.as_slice(), policy);
            Ok((report(findings, facts), bytes.len() as u64))
        }
        Err(size) => {
            let mut finding = inspect::over_budget(size, limit);
            if policy.size_budget.is_none() {
                finding.message =
                    format!("{size} bytes, more than the {READ_LIMIT} bytes an ELF check reads");
            }
            Ok((report(vec![finding], None), size))
        }
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens `path` for reading if it is a regular file.
fn open_regular(path: &Path) -> Result<std::fs::File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    // stat first: opening a socket fails with a baffling ENXIO, and a FIFO
    // or device need not be opened at all.
    require_regular(
        path,
        &std::fs::metadata(path).map_err(|e| io_error(path, e))?,
    )?;
    // Non-blocking, so a path swapped for a FIFO after the stat cannot
    // block the open; the fstat below then refuses it. For a regular file
    // O_NONBLOCK changes nothing.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    require_regular(path, &file.metadata().map_err(|e| io_error(path, e))?)?;
    Ok(file)
}

/// Positioned reads of an open file; the first I/O error is kept for
/// [`check_file`] to return (inspection sees it as "not in the file").
struct FileInput {
    file: std::fs::File,
    len: u64,
    error: std::cell::RefCell<Option<std::io::Error>>,
    read: std::cell::Cell<u64>,
}

impl inspect::Input for FileInput {
    fn size(&self) -> u64 {
        self.len
    }
    fn read(&self, offset: u64, size: u64) -> Option<std::borrow::Cow<'_, [u8]>> {
        use std::os::unix::fs::FileExt;
        if offset.checked_add(size)? > self.len {
            return None;
        }
        // Inspection caps every table at inspect::MAX_TABLE, so `size` is
        // small; a file shorter than its stat length (it shrank) is an
        // error, not a truncated ELF.
        let mut buf = vec![0u8; usize::try_from(size).ok()?];
        self.read.set(self.read.get().saturating_add(size));
        match self.file.read_exact_at(&mut buf, offset) {
            Ok(()) => Some(std::borrow::Cow::Owned(buf)),
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                None
            }
        }
    }
}

/// The whole file if it has at most `limit` bytes, else `Err(size)`: what
/// was read, `limit + 1`.
fn read_bounded(file: std::fs::File, limit: u64) -> std::io::Result<Result<Vec<u8>, u64>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Ok(Err(bytes.len() as u64));
    }
    Ok(Ok(bytes))
}

fn require_regular(path: &Path, meta: &std::fs::Metadata) -> Result<(), Error> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        return Ok(());
    }
    let kind = if t.is_dir() {
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
    Err(Error::NotRegular {
        path: path.to_path_buf(),
        kind,
    })
}

/// Checks every file, so one run shows every problem rather than the first.
/// Stops only when a file cannot be read or is not a regular file.
pub fn check_files<I, P>(paths: I, policy: &Policy) -> Result<Vec<Report>, Error>
where
    I: IntoIterator<Item = P>,
    P: AsRef<Path>,
{
    paths.into_iter().map(|p| check_file(p, policy)).collect()
}

/// Turns a batch into one error when any file failed: [`Error::Malformed`]
/// if any file is not a parseable ELF (listing only those), otherwise
/// [`Error::Rejected`].
pub fn require_pass(reports: &[Report]) -> Result<(), Error> {
    let failed = |v: Verdict| -> Vec<(String, String)> {
        reports
            .iter()
            .filter(|r| r.verdict() == v)
            .map(|r| {
                let why = r
                    .errors()
                    .next()
                    .map_or_else(String::new, |f| f.message.clone());
                (r.display_name(), why)
            })
            .collect()
    };
    let total = reports.len();
    let malformed = failed(Verdict::Malformed);
    if !malformed.is_empty() {
        return Err(Error::Malformed {
            failed: malformed,
            total,
        });
    }
    let rejected = failed(Verdict::Rejected);
    if !rejected.is_empty() {
        return Err(Error::Rejected {
            failed: rejected,
            total,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
