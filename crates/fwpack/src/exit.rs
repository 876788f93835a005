//! Exit codes: one per failure class, so scripts can tell "your image is
//! corrupt" from "your key is wrong" from "the disk is busy" without parsing
//! messages. Documented in `fwpack --help` and README.

/// Everything went as asked.
pub const OK: u8 = 0;
/// Something unexpected: a bug, or an error without a better class.
pub const FAILURE: u8 = 1;
/// Bad command line (clap uses 2 as well).
pub const USAGE: u8 = 2;
/// Reading or writing a file or device failed.
pub const IO: u8 = 3;
/// Input is malformed: not our format, truncated, out-of-bounds fields,
/// unknown must-understand flags, bad config or recipe.
pub const FORMAT: u8 = 4;
/// No valid signature from a trusted key (or signing failed).
pub const SIGNATURE: u8 = 5;
/// Content does not match what was signed (CRC chain, SHA-256).
pub const INTEGRITY: u8 = 6;
/// Valid image refused by policy: wrong board, rollback, too big, ELF policy.
pub const POLICY: u8 = 7;
/// Target device busy (mounted, held, or opened exclusively elsewhere).
pub const BUSY: u8 = 8;
/// The image source failed: HTTP error status, connection or timeout after
/// the retries, truncated body, wrong length, the file replaced on the
/// server mid-run, a pipe that ended early.
pub const SOURCE: u8 = 9;

pub const TABLE: &str = "\
Exit status:
  0  success
  1  unexpected failure
  2  usage error
  3  I/O error (file or device)
  4  malformed input (image, config, recipe, ELF)
  5  signature missing, untrusted or invalid
  6  integrity failure (CRC chain or SHA-256 mismatch)
  7  refused by policy (board, version rollback, size, ELF checks)
  8  target busy (mounted, held, or in use)
  9  image source failed (HTTP status, network, timeout, truncated or replaced download)";

/// The error and its causes, each said once. Many error types put their
/// source into their own message (`"reading {path}: {source}"`) and also
/// return it from `source()`; printing every link would repeat it.
pub fn render(err: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut previous = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if !message.is_empty() && !previous.contains(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
        previous = message;
    }
    text
}

/// Picks the exit code for an error by looking for a typed library error
/// anywhere in its chain; the most specific (first) one wins.
pub fn classify(err: &anyhow::Error) -> u8 {
    // A failing source hides inside the I/O error of the reader that hit
    // it: look for it first.
    match err.chain().find_map(imagesource::find_source_error) {
        Some(e) if e.is_source_failure() => return SOURCE,
        // More than the image on standard input: malformed, not a failing source.
        Some(imagesource::Error::Trailing { .. }) => return FORMAT,
        _ => {}
    }
    err.chain().find_map(code_of).unwrap_or(FAILURE)
}

/// The exit code for one error in a chain, if its type is one we know.
fn code_of(cause: &(dyn std::error::Error + 'static)) -> Option<u8> {
    if let Some(e) = cause.downcast_ref::<Classified>() {
        return Some(e.code);
    }
    if let Some(e) = cause.downcast_ref::<pipeline::Error>() {
        // `#[error(transparent)]` hides the wrapped error from `source()`,
        // so wrapped library errors are classified here explicitly.
        return match e {
            pipeline::Error::MissingInput(_) | pipeline::Error::Io { .. } => Some(IO),
            pipeline::Error::OverBudget { .. } => Some(POLICY),
            pipeline::Error::Tool { .. } => Some(FAILURE),
            pipeline::Error::Elf(e) => code_of(e),
            pipeline::Error::Image(e) => code_of(e),
            pipeline::Error::Initramfs(e) => code_of(e),
            pipeline::Error::Disk(e) => code_of(e),
            pipeline::Error::State(e) => code_of(e),
        };
    }
    if let Some(e) = cause.downcast_ref::<board::Error>() {
        return Some(match e {
            board::Error::Read { .. } => IO,
            _ => FORMAT,
        });
    }
    if let Some(e) = cause.downcast_ref::<fwimage::Error>() {
        return Some(match e.class() {
            fwimage::ErrorClass::Io => IO,
            fwimage::ErrorClass::Format => FORMAT,
            fwimage::ErrorClass::Signature => SIGNATURE,
            fwimage::ErrorClass::Integrity => INTEGRITY,
            fwimage::ErrorClass::Usage => FAILURE,
        });
    }
    if let Some(e) = cause.downcast_ref::<elfcheck::Error>() {
        return Some(match e {
            // Not a regular file: refused instead of read; a directory
            // was already an I/O error (EISDIR) before the check existed.
            elfcheck::Error::Io { .. } | elfcheck::Error::NotRegular { .. } => IO,
            elfcheck::Error::Malformed { .. } => FORMAT,
            elfcheck::Error::Rejected { .. } => POLICY,
        });
    }
    if let Some(e) = cause.downcast_ref::<initramfs::Error>() {
        return Some(match e.class() {
            initramfs::ErrorClass::Io => IO,
            initramfs::ErrorClass::Input => FORMAT,
        });
    }
    if let Some(e) = cause.downcast_ref::<diskimage::Error>() {
        return Some(match e.class() {
            diskimage::ErrorClass::Io => IO,
            diskimage::ErrorClass::Format => FORMAT,
        });
    }
    if let Some(e) = cause.downcast_ref::<updater::Error>() {
        return Some(updater_code(e));
    }
    if cause.downcast_ref::<std::io::Error>().is_some() {
        return Some(IO);
    }
    None
}

/// An error whose class is decided in the CLI itself (e.g. a policy
/// refusal), where no typed library error carries one.
#[derive(Debug)]
pub struct Classified {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Classified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Classified {}

/// Shorthand: an error with exit code `code` and this message.
pub fn refuse(code: u8, message: impl Into<String>) -> anyhow::Error {
    Classified {
        code,
        message: message.into(),
    }
    .into()
}

fn updater_code(e: &updater::Error) -> u8 {
    match e.class() {
        updater::ErrorClass::Io => IO,
        updater::ErrorClass::Format => FORMAT,
        updater::ErrorClass::Signature => SIGNATURE,
        updater::ErrorClass::Integrity => INTEGRITY,
        updater::ErrorClass::Policy => POLICY,
        updater::ErrorClass::Busy => BUSY,
        updater::ErrorClass::Usage => USAGE,
    }
}
