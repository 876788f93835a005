//! The fwpack firmware container (`.fwi`): writing, parsing, signing and
//! verifying. Pure: no device I/O, no printing. The byte layout is specified
//! in `docs/FORMAT.md`; this crate is its reference implementation.
//!
//! Invariants this crate upholds:
//! - Parsing is total: any input gives `Ok` or a typed [`Error`], never a
//!   panic, and never allocates more than the input's length.
//! - Nothing below the head is used before the signature over it was
//!   checked ([`Verified`] is the proof the readers take); every index page
//!   is checked against its signed SHA-256 each time it is read, and every
//!   stored chunk against its entry's SHA-256 before it is decompressed or
//!   handed out.
//! - Nothing is read from a source twice: a chunk is read once into our own
//!   buffer, authenticated, then used from there ([`ChunkReader`]).
//! - Every byte of a valid image is covered: the head by the signature, the
//!   index by the page hashes, data by the chunk hashes (and the CRC chain);
//!   padding and reserved fields must be zero.
//! - Memory is constant in the image size: the signed head (≤ 1 MiB, about
//!   1/128 of the index), one index page of each kind, one chunk.

mod crc;
mod decode;
mod error;
mod ext;
mod index;
mod keys;
mod layout;
mod read;
mod source;
mod stream;
mod verify;
#[cfg(feature = "write")]
mod write;

pub use crc::{crc_chain, CrcChain, BLOCK_SIZE};
pub use decode::{Codec, DecodeError};
pub use error::{Error, ErrorClass};
pub use ext::{HeadExtension, EXT_MAY_IGNORE, EXT_SBOM_SHA256, MAX_EXT_LEN};
pub use index::{check_entry, Index, Verified};
pub use keys::{parse_public_key, KeyId, TrustedKeys};
pub use layout::{
    max_stored_len, ChunkEntry, Compression, Header, Segment, SigSlot, CHUNK_ENTRY_LEN,
    COMPAT_REPRODUCIBLE, CRCS_PER_PAGE, DEFAULT_CHUNK_SHIFT, EMPTY_SHA256, ENTRIES_PER_PAGE,
    FORMAT_VERSION, HEADER_LEN, INCOMPAT_COMPRESSED, INCOMPAT_HEAD_EXT, INCOMPAT_ZERO_CHUNKS,
    MAGIC, MAX_CHUNK_SHIFT, MAX_SEGMENTS, MAX_SIGNED_HEAD, MAX_SIG_SLOTS, MIN_CHUNK_SHIFT,
    NAME_LEN, PAGE_LEN, SEGMENT_ENTRY_LEN, SIG_SLOT_LEN,
};
pub use read::{ImageHead, SIGNING_DOMAIN, SIGNING_MESSAGE_LEN};
pub use source::{CountingSource, ImageSource, MemSource, SeekSource};
pub use stream::{BatchDecoder, ChunkInfo, ChunkReader, PendingBatch};
pub use verify::VerifyReport;
#[cfg(feature = "write")]
pub use write::{
    default_jobs, insert_signature, signed_message, ImageBuilder, SegmentSpec, Signer,
    WriteSummary, GZIP_DEFAULT_LEVEL, GZIP_MAX_LEVEL,
};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
