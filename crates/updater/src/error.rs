use std::io;

/// What kind of failure an [`Error`] is: the CLI maps classes to exit
/// codes, the PID-1 updater to its log and recovery action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Reading or writing the image or the target failed.
    Io,
    /// Malformed input: the image, or the target's state area.
    Format,
    /// No valid signature by a trusted key.
    Signature,
    /// Content differs from what was signed (image data or read-back).
    Integrity,
    /// A valid image refused by policy: board, rollback, size, slot choice.
    Policy,
    /// The target is mounted, held or opened exclusively elsewhere.
    Busy,
    /// The caller asked for something impossible.
    Usage,
}

/// Everything that can go wrong applying an image or touching the state
/// area.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The image itself: format, signature or integrity (its class is kept).
    #[error(transparent)]
    Image(#[from] fwimage::Error),

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("no fwpack state area at offset {offset} of the target (run `fwpack state init` or build the disk with fwpack)")]
    NoStateArea { offset: u64 },
    #[error("state area: {0}")]
    BadStateArea(String),
    #[error("invalid layout: {0}")]
    BadLayout(String),

    #[error("target is busy: {}", .reasons.join("; "))]
    Busy { reasons: Vec<String> },

    #[error("image is for board `{image}`, this target is `{target}`")]
    WrongBoard { image: String, target: String },
    #[error("image version {image} is older than {floor} (the {what}); rollback refused")]
    Rollback {
        image: u64,
        floor: u64,
        what: &'static str,
    },
    #[error("segment `{segment}` targets `{target}`, which is not a slot group of this device (groups: {})", .groups.join(", "))]
    UnknownTarget {
        segment: String,
        target: String,
        groups: Vec<String>,
    },
    #[error("segment `{segment}` needs {needed} bytes of slot {slot} of `{group}`, which has {available}")]
    TooBig {
        segment: String,
        group: String,
        slot: char,
        needed: u64,
        available: u64,
    },
    #[error("image has no segment for slot group `{group}`, so slot {slot} would mix old and new content (use --allow-partial if that is intended)")]
    PartialImage { group: String, slot: char },
    #[error("slot {0} is the active slot; an update must go to the other one")]
    ActiveSlot(char),
    #[error("slot {slot} is the running system ({evidence}); an update must go to the other slot (confirm it with mark-good first, or reboot into the active slot)")]
    RunningSlot { slot: char, evidence: String },
    #[error(
        "cannot tell which slot the running system booted from ({0}); refusing to write either"
    )]
    RunningUnknown(String),
    #[error("segment `{segment}` lands at byte {offset}, not a multiple of the target's {align}-byte sector")]
    Unaligned {
        segment: String,
        offset: u64,
        align: u64,
    },
    #[error("slot {slot} cannot become pending: it is {state}, not complete")]
    NotComplete { slot: char, state: &'static str },
    #[error("slot {0} is neither the active nor the pending slot")]
    NotBooted(char),
    #[error("slot {slot} holds version {version}, below the rollback floor {floor}: it is not booted by fallback")]
    BelowFloor {
        slot: char,
        version: u64,
        floor: u64,
    },

    #[error("read-back of segment `{segment}` differs from the signed image at chunk {block} (device offset {offset}): the target did not store what was written")]
    ReadBack {
        segment: String,
        block: u64,
        offset: u64,
    },

    #[error("seed slot {slot} changed while it was copied (segment `{segment}` chunk {chunk} no longer matches its signed hash); run again: the new plan fetches it")]
    SeedChanged {
        slot: char,
        segment: String,
        chunk: u64,
    },

    #[error("the seed must be the other slot, not slot {0}, which is being written")]
    SeedIsTarget(char),

    #[error("parts {first} and {second} of the transaction both write slot group `{group}`")]
    PartsOverlap {
        group: String,
        first: usize,
        second: usize,
    },
    #[error("part {part} of the transaction has version {version}, part 1 has {first}: the parts of one slot carry one version")]
    PartVersion {
        part: usize,
        version: u64,
        first: u64,
    },
    #[error("part {part} of the transaction is for slot group {} but its segment `{segment}` targets `{target}`", .groups.join(", "))]
    PartGroup {
        part: usize,
        segment: String,
        target: String,
        groups: Vec<String>,
    },

    #[error("invalid {what} `{value}`: {reason}")]
    InvalidInput {
        what: &'static str,
        value: String,
        reason: String,
    },
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        use Error::*;
        match self {
            Image(e) => match e.class() {
                fwimage::ErrorClass::Io => ErrorClass::Io,
                fwimage::ErrorClass::Format => ErrorClass::Format,
                fwimage::ErrorClass::Signature => ErrorClass::Signature,
                fwimage::ErrorClass::Integrity => ErrorClass::Integrity,
                fwimage::ErrorClass::Usage => ErrorClass::Usage,
            },
            Io { .. } => ErrorClass::Io,
            NoStateArea { .. } | BadStateArea(_) | BadLayout(_) => ErrorClass::Format,
            Busy { .. } | RunningSlot { .. } | RunningUnknown(_) => ErrorClass::Busy,
            WrongBoard { .. }
            | Rollback { .. }
            | UnknownTarget { .. }
            | TooBig { .. }
            | PartialImage { .. }
            | ActiveSlot(_)
            | Unaligned { .. }
            | NotComplete { .. }
            | NotBooted(_)
            | BelowFloor { .. }
            | PartsOverlap { .. }
            | PartVersion { .. }
            | PartGroup { .. } => ErrorClass::Policy,
            ReadBack { .. } | SeedChanged { .. } => ErrorClass::Integrity,
            SeedIsTarget(_) => ErrorClass::Usage,
            InvalidInput { .. } => ErrorClass::Usage,
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
