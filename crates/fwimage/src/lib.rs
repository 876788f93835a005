//! The fwpack firmware container (`.fwi`): writing, parsing, signing and
//! verifying. Pure: no device I/O, no printing. The byte layout is specified
//! in `docs/FORMAT.md`; this crate is its reference implementation.
//!
//! Invariants this crate upholds:
//! - Parsing is total: any input gives `Ok` or a typed [`Error`], never a
//!   panic, and never allocates more than the input's length.
//! - Nothing in a segment is trusted before the signature over the image
//!   head (header + segment table + CRC table) has been checked, and no
//!   compressed byte reaches a decompressor before its segment's SHA-256
//!   matched the signed table.
//! - Every byte of a valid image is covered: header, table and CRC table by
//!   the signature; data by the CRC chain and SHA-256; padding and reserved
//!   fields must be zero.

mod crc;
mod error;
mod keys;
mod layout;
mod read;
mod verify;
#[cfg(feature = "write")]
mod write;

pub use crc::{crc_chain, CrcChain, BLOCK_SIZE};
pub use error::{Error, ErrorClass};
pub use keys::{parse_public_key, KeyId, TrustedKeys};
pub use layout::{
    Compression, Header, Segment, SigSlot, COMPAT_REPRODUCIBLE, FORMAT_VERSION, HEADER_LEN,
    INCOMPAT_COMPRESSED, MAGIC, MAX_SIG_SLOTS, NAME_LEN, SEGMENT_ENTRY_LEN, SIG_SLOT_LEN,
};
pub use read::{Crcs, ImageHead, SIGNING_DOMAIN, SIGNING_MESSAGE_LEN};
pub use verify::{SegmentReader, VerifyReport};
#[cfg(feature = "write")]
pub use write::{
    insert_signature, signed_message, ImageBuilder, SegmentSpec, Signer, WriteSummary,
};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
