//! Typed errors. Every failure names the partition, file or path involved,
//! and falls in one of two classes (bad description vs. I/O) so the CLI can
//! map it to an exit code without parsing messages.

use std::path::PathBuf;

/// Broad failure class, for exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Reading or writing a file failed.
    Io,
    /// The layout (or an image being inspected) is malformed or cannot be
    /// satisfied: bad names, overlaps, sizes, content that does not fit.
    Format,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("layout has no partitions")]
    NoPartitions,
    #[error("{table} supports at most {max} partitions, layout has {count}")]
    TooManyPartitions {
        table: &'static str,
        max: usize,
        count: usize,
    },
    #[error("invalid partition name {name:?}: {reason}")]
    InvalidPartitionName { name: String, reason: String },
    #[error("partition name {0:?} is used twice")]
    DuplicatePartitionName(String),
    #[error("invalid seed: {0}")]
    InvalidSeed(String),
    #[error("{what} ({value} bytes) is not a multiple of {multiple} bytes")]
    Misaligned {
        what: String,
        value: u64,
        multiple: u64,
    },
    #[error(
        "partition {partition:?} (bytes {start}..{end}) overlaps the reserved range {reserved:?} \
         (bytes {reserved_start}..{reserved_end})"
    )]
    ReservedOverlap {
        partition: String,
        start: u64,
        end: u64,
        reserved: String,
        reserved_start: u64,
        reserved_end: u64,
    },
    #[error("reserved range {name:?}: {reason}")]
    InvalidReserved { name: String, reason: String },
    #[error("partition {partition:?} has size 0")]
    ZeroSize { partition: String },
    #[error(
        "partition {partition:?} has no size: only the last partition may fill the disk, \
         and only when the disk size is given"
    )]
    CannotFill { partition: String },
    #[error(
        "partition {partition:?} starts at byte {start}, inside the space used before it \
         (up to byte {previous_end})"
    )]
    Overlap {
        partition: String,
        start: u64,
        previous_end: u64,
    },
    #[error(
        "partition {partition:?} ends at byte {end}, past the end of the disk ({disk_size} bytes)"
    )]
    TooBigForDisk {
        partition: String,
        end: u64,
        disk_size: u64,
    },
    #[error("disk of {size} bytes is too large for an MBR partition table (limit 2 TiB); use GPT")]
    TooLargeForMbr { size: u64 },
    #[error("partition {partition:?}: invalid partition type: {reason}")]
    InvalidType { partition: String, reason: String },
    #[error("partition {partition:?}: invalid FAT volume label {label:?}: {reason}")]
    InvalidLabel {
        partition: String,
        label: String,
        reason: String,
    },
    #[error("partition {partition:?}: invalid FAT path {path:?}: {reason}")]
    InvalidFatPath {
        partition: String,
        path: String,
        reason: String,
    },
    #[error("partition {partition:?}: FAT path {path:?} is given twice or clashes with another entry (FAT names ignore case)")]
    DuplicateFatPath { partition: String, path: String },
    #[error("partition {partition:?}: cannot make a {fat} file system in {size} bytes")]
    FatGeometry {
        partition: String,
        fat: String,
        size: u64,
    },
    #[error(
        "partition {partition:?}: {path:?} ({needed} bytes) does not fit in the FAT file system \
         ({free} bytes free)"
    )]
    FatFull {
        partition: String,
        path: String,
        needed: u64,
        free: u64,
    },
    #[error(
        "partition {partition:?}: {path:?} is {size} bytes; a FAT file holds at most 4 GiB - 1"
    )]
    FatFileTooLarge {
        partition: String,
        path: String,
        size: u64,
    },
    #[error(
        "partition {partition:?}: no room for {path:?} in the root directory (FAT12/16 roots \
         hold 512 entries, long names take two or more); use a subdirectory or FAT32"
    )]
    FatRootFull { partition: String, path: String },
    /// fatfs refused an operation. The volume is in memory, so this is a
    /// limit of the file system or a bug, never an I/O failure.
    #[error("partition {partition:?}: FAT file system: {context}")]
    Fat {
        partition: String,
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read source {}", path.display())]
    MissingSource {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("source {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("partition {partition:?}: source {source_name} ({size} bytes) is larger than the partition ({capacity} bytes)")]
    SourceTooLarge {
        partition: String,
        source_name: String,
        size: u64,
        capacity: u64,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the MBR partition table")]
    Mbr(#[source] mbrman::Error),
    #[error("writing the GPT partition table")]
    Gpt(#[source] gptman::Error),
    #[error("{}: not a usable disk image: {reason}", path.display())]
    BadImage { path: PathBuf, reason: String },
    #[error("{}{}: {message}", file.display(), location(*line, *column))]
    Config {
        file: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    #[error("SOURCE_DATE_EPOCH={0:?} is not a number of seconds")]
    BadSourceDateEpoch(String),
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

impl Error {
    /// Which exit class the failure belongs to.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Io { .. } | Error::MissingSource { .. } => ErrorClass::Io,
            Error::Mbr(mbrman::Error::Io(_)) | Error::Gpt(gptman::Error::Io(_)) => ErrorClass::Io,
            _ => ErrorClass::Format,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
