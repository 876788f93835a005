use std::io;

/// What kind of failure an [`Error`] is, so callers (the CLI's exit codes,
/// the updater's log) can react by class without matching every variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Reading or writing failed.
    Io,
    /// The bytes are not a well-formed image of a version we understand.
    Format,
    /// No valid signature by a trusted key.
    Signature,
    /// Content differs from what was signed.
    Integrity,
    /// The caller asked for something impossible (bad name, too many
    /// segments, signer misbehaved).
    Usage,
}

/// Everything that can go wrong reading, writing or verifying an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    #[error("not a fwpack image (bad magic)")]
    BadMagic,
    #[error("image truncated: {what} needs {needed} bytes but only {available} are there")]
    Truncated {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("image has {extra} bytes after its declared end")]
    TrailingData { extra: u64 },
    #[error("{}", unsupported_version(*.0))]
    UnsupportedVersion(u16),
    #[error(
        "image requires features this reader does not understand (must-understand flags {0:#010x})"
    )]
    UnknownRequiredFlags(u32),
    #[error("segment `{segment}` uses flags this reader does not understand ({flags:#010x})")]
    UnknownSegmentFlags { segment: String, flags: u32 },
    #[error("unknown {what} algorithm id {id}")]
    UnknownAlgorithm { what: &'static str, id: u8 },
    #[error("header checksum mismatch (header is corrupt)")]
    HeaderChecksum,
    #[error("invalid header field `{field}`: {reason}")]
    BadField { field: &'static str, reason: String },
    #[error("invalid segment entry {index}: {reason}")]
    BadSegment { index: usize, reason: String },
    #[error("segments `{a}` and `{b}` overlap in the file")]
    SegmentOverlap { a: String, b: String },
    #[error("segments `{a}` and `{b}` write overlapping ranges of target `{target}`")]
    TargetOverlap {
        a: String,
        b: String,
        target: String,
    },
    #[error("duplicate segment name `{0}`")]
    DuplicateSegment(String),
    #[error("non-zero bytes in {0}, which must be zero")]
    NonZeroPadding(&'static str),
    #[error("invalid chunk entry {index}: {reason}")]
    BadChunk { index: u64, reason: String },

    #[error("image is not signed")]
    Unsigned,
    #[error("image is signed only by untrusted keys ({})", .key_ids.join(", "))]
    UntrustedKey { key_ids: Vec<String> },
    #[error("signature by key {key_id} does not verify (image head was modified or signed with another key)")]
    BadSignature { key_id: String },

    #[error("segment `{segment}`: CRC mismatch in block {block} (data corrupt)")]
    CrcMismatch { segment: String, block: u64 },
    #[error(
        "index page {page}: SHA-256 does not match the signed head (index corrupt or tampered)"
    )]
    IndexPageMismatch { page: u64 },
    #[error("segment `{segment}` chunk {chunk}: SHA-256 of the stored bytes does not match the signed index (data corrupt or tampered)")]
    ChunkHashMismatch { segment: String, chunk: u64 },
    #[error("segment `{segment}` chunk {chunk}: SHA-256 of the decompressed bytes does not match the signed index (the signer's index is inconsistent)")]
    RawHashMismatch { segment: String, chunk: u64 },
    #[error("segment `{segment}`: decompressed to {actual} bytes, expected {expected}")]
    LengthMismatch {
        segment: String,
        expected: u64,
        actual: u64,
    },
    #[error("segment `{segment}` chunk {chunk}: decompression failed: {reason}")]
    Decompress {
        segment: String,
        chunk: u64,
        /// Not a `#[source]`: the message already says it (and the
        /// device updater is smaller without; see `DecodeError`'s Debug).
        reason: crate::DecodeError,
    },

    #[error("invalid {what} `{value}`: {reason}")]
    InvalidInput {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("input for segment `{segment}` changed while reading: expected {expected} bytes, got {actual}")]
    InputChanged {
        segment: String,
        expected: u64,
        actual: u64,
    },
    #[error("key error: {0}")]
    Key(String),
    #[error("signer failed: {0}")]
    Signer(String),
    #[error("all {0} signature slots are in use")]
    NoFreeSlot(usize),
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        use Error::*;
        match self {
            Io(_) => ErrorClass::Io,
            BadMagic
            | Truncated { .. }
            | TrailingData { .. }
            | UnsupportedVersion(_)
            | UnknownRequiredFlags(_)
            | UnknownSegmentFlags { .. }
            | UnknownAlgorithm { .. }
            | HeaderChecksum
            | BadField { .. }
            | BadSegment { .. }
            | SegmentOverlap { .. }
            | TargetOverlap { .. }
            | DuplicateSegment(_)
            | NonZeroPadding(_)
            | BadChunk { .. } => ErrorClass::Format,
            Unsigned | UntrustedKey { .. } | BadSignature { .. } | Signer(_) => {
                ErrorClass::Signature
            }
            CrcMismatch { .. }
            | IndexPageMismatch { .. }
            | ChunkHashMismatch { .. }
            | RawHashMismatch { .. }
            | LengthMismatch { .. }
            | Decompress { .. } => ErrorClass::Integrity,
            InvalidInput { .. } | InputChanged { .. } | Key(_) | NoFreeSlot(_) => ErrorClass::Usage,
        }
    }
}

fn unsupported_version(v: u16) -> String {
    if v == 1 {
        "format version 1 is no longer supported: re-stamp the payload with this fwpack (format 2 authenticates every chunk before it is written)".into()
    } else {
        format!("format version {v} is not supported (this reader knows version 2)")
    }
}
