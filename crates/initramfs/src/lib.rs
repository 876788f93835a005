//! Reproducible newc ("070701") initramfs archives.
//!
//! - [`Builder`] collects entries (files, trees, symlinks, hard links,
//!   device nodes, fifos) and writes them in one canonical order with fixed
//!   metadata, so the same inputs always give the same bytes.
//! - [`newc::Writer`] is the record-level writer underneath (checked sizes,
//!   names and byte counts); [`Reader`] lists archives, gzip/zstd or plain.
//! - [`Recipe`] is the YAML description of what goes in (`recipes/*.yaml`).
//! - [`modules`] resolves kernel modules and their dependencies.
//!
//! The library never prints and never exits; every failure is an [`Error`]
//! naming the entry it concerns.

mod builder;
pub mod compress;
mod error;
pub mod modules;
pub mod newc;
mod path;
pub mod pgzip;
pub mod reader;
pub mod recipe;

pub use builder::{default_jobs, parse_epoch, Builder, DeviceKind, Meta, Options, Summary};
pub use compress::{Codec, Compression};
pub use error::{Error, ErrorClass};
pub use path::{ArchivePath, NAME_MAX, PATH_MAX};
pub use reader::{Entry, Reader};
pub use recipe::{Recipe, Vars};

/// Lists every entry of an archive file (plain, gzip or zstd).
pub fn list_file(path: &std::path::Path) -> Result<Vec<Entry>, Error> {
    let f = std::fs::File::open(path).map_err(|e| Error::Read {
        path: path.into(),
        source: e,
    })?;
    Reader::new(f)?.entries()
}
