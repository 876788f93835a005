//! Bootable disk images written in-process: no root, no loop devices, no
//! mkfs or mtools at build time.
//!
//! A [`DiskLayout`] lists partitions in table order (MBR via mbrman, GPT
//! via gptman); each is a FAT file system built with fatfs from given
//! files, a raw copy of a source image, or left empty. [`write_image`]
//! produces the image; [`plan`] computes the same report without writing,
//! so callers can learn PARTUUIDs before generating boot files;
//! [`inspect`] reads a table back.
//!
//! Invariants:
//! - Deterministic: same layout and inputs give byte-identical images.
//!   Identifiers derive from [`DiskLayout::seed`] and partition names;
//!   FAT timestamps come from [`DiskLayout::fat_timestamp`]; files are
//!   written in sorted order.
//! - Sparse: untouched and all-zero regions are never written.
//! - Atomic: the image is built in a temporary file beside the output and
//!   renamed into place only after everything is written and synced.
//! - Partitions start on 1 MiB boundaries unless given an explicit start.
//! - No panics on bad input: every problem is an [`Error`].

pub mod bmap;
mod config;
pub mod efivars;
mod error;
mod fat;
mod guid;
mod inspect;
mod layout;
mod memvol;
mod report;
mod write;

pub use config::{
    source_date_epoch, ByteSize, FatChoice, FileConfig, KindConfig, LayoutConfig, MbrType,
    PartitionConfig,
};
pub use error::{Error, ErrorClass};
pub use guid::{gpt_types, Guid};
pub use inspect::{inspect, inspect_reader};
pub use layout::{
    DiskLayout, FatFile, FatKind, FatSpec, PartKind, PartitionSpec, Reserved, Source, TableKind,
    ALIGNMENT, SECTOR_SIZE,
};
pub use report::{Extent, FsReport, ImageReport, PartitionReport};
pub use write::{plan, write_image};
