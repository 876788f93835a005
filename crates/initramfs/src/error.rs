//! One error type for the crate. Every variant that concerns an entry names
//! it (archive path and, where there is one, the source file), because "file
//! too big" without saying which file is useless in a 2 000-entry recipe.

use std::io;
use std::path::PathBuf;

/// Errors from building, writing or reading an initramfs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A destination path is malformed (empty, NUL byte, the root itself…).
    #[error("destination `{dst}` {reason}")]
    InvalidPath { dst: String, reason: &'static str },

    /// A destination climbs above the archive root with `..`.
    #[error("destination `{dst}` escapes the archive root")]
    EscapesRoot { dst: String },

    /// A path or path component is longer than the kernel accepts.
    #[error("`{path}`: {what} is {len} bytes, the limit is {max}")]
    NameTooLong {
        path: String,
        len: usize,
        max: usize,
        what: &'static str,
    },

    /// A symlink target is empty, holds a NUL, or is too long for the kernel.
    #[error("symlink `{path}`: invalid target: {reason}")]
    InvalidLinkTarget { path: String, reason: &'static str },

    /// A regular file is larger than newc's 32-bit size field.
    #[error("`{path}` (from {}): {size} bytes does not fit newc's 32-bit size field (max 4 GiB - 1)", .src.display())]
    FileTooLarge {
        path: String,
        src: PathBuf,
        size: u64,
    },

    /// The same destination was given twice with different content or metadata.
    #[error("`{path}` is added twice with different {what}")]
    Duplicate { path: String, what: &'static str },

    /// Something other than a directory sits where an entry needs a parent.
    #[error("`{path}`: parent `{parent}` is not a directory")]
    ParentNotDirectory { path: String, parent: String },

    /// A hard link points at something that is not a regular file in the archive.
    #[error("hard link `{path}` -> `{target}`: target is not a regular file in the archive")]
    BadHardLink { path: String, target: String },

    /// A mode has bits outside `0o7777`.
    #[error("`{path}`: mode {mode:#o} has bits outside 0o7777")]
    BadMode { path: String, mode: u32 },

    /// A source file or directory named by the caller does not exist.
    #[error("`{path}`: source {} does not exist", .src.display())]
    MissingSource { path: String, src: PathBuf },

    /// A source is a socket or something else newc/initramfs cannot carry.
    #[error("`{path}`: source {} is a {kind}, which an initramfs cannot carry", .src.display())]
    UnsupportedFileType {
        path: String,
        src: PathBuf,
        kind: &'static str,
    },

    /// A source file's size changed between planning and packing.
    #[error("`{path}`: source {} changed size while packing (expected {expected} bytes)", .src.display())]
    SourceChanged {
        path: String,
        src: PathBuf,
        expected: u64,
    },

    /// Reading a source (file, directory, link) failed.
    #[error("reading {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Writing the archive (or its compressed stream, or the output file) failed.
    #[error("writing archive: {0}")]
    Write(#[source] io::Error),

    /// `SOURCE_DATE_EPOCH` is set but is not a timestamp newc can hold.
    #[error("SOURCE_DATE_EPOCH={value:?} is not a decimal timestamp between 0 and 4294967295")]
    BadEpoch { value: String },

    /// The archive being read is malformed.
    #[error("archive offset {offset}: {reason}")]
    Format { offset: u64, reason: String },

    /// The recipe cannot be parsed or has a semantic problem.
    #[error("{}{}: {message}", .file.display(), location(*.line, *.column))]
    Recipe {
        file: PathBuf,
        /// 1-based, when the YAML parser knows it.
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },

    /// A kernel module cannot be found or its dependencies cannot be resolved.
    #[error("kernel modules in {}: {message}", .dir.display())]
    Module { dir: PathBuf, message: String },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// Broad class of an [`Error`], for callers that map errors to exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Reading sources or writing the output failed at the OS level.
    Io,
    /// The input (recipe, destination, archive, module tree) is wrong.
    Input,
}

impl Error {
    /// Which class of failure this is.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Read { .. } | Error::Write(_) | Error::MissingSource { .. } => ErrorClass::Io,
            _ => ErrorClass::Input,
        }
    }
}
