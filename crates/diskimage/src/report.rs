//! What was written (or found by `inspect`): enough to put
//! `root=PARTUUID=…` on a kernel command line and to check the image with
//! other tools.

use crate::layout::TableKind;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageReport {
    pub table: TableKind,
    pub sector_size: u64,
    pub size_bytes: u64,
    /// MBR: the disk signature as `0x%08x` (sfdisk's `label-id`).
    /// GPT: the disk GUID.
    pub disk_id: String,
    /// MBR only: the extended partition holding partitions 5 and up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extended: Option<Extent>,
    pub partitions: Vec<PartitionReport>,
    /// `inspect` only: things that are readable but not right (a
    /// partition past the end of the file, a damaged backup GPT, overlaps).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// `write_image` only: the byte ranges `[start, end)` written, sorted
    /// and merged; everything else in the image is a hole (zero). What
    /// [`crate::bmap::write`] maps.
    #[serde(skip)]
    pub written: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    pub start_lba: u64,
    pub sectors: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    /// As Linux numbers it: `/dev/mmcblk0p<number>`.
    pub number: u32,
    /// The layout's name (GPT: also the partition name on disk; `inspect`
    /// of an MBR disk has none to show).
    pub name: String,
    pub start_lba: u64,
    pub sectors: u64,
    pub offset_bytes: u64,
    pub size_bytes: u64,
    /// MBR: two hex digits (`0c`). GPT: the type GUID.
    pub type_id: String,
    pub bootable: bool,
    /// What the kernel accepts in `root=PARTUUID=`: `<disk signature>-<NN>`
    /// on MBR, the partition GUID on GPT.
    pub partuuid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FsReport>,
    /// Raw partitions: how many bytes came from the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsReport {
    /// `fat12`, `fat16` or `fat32`.
    pub kind: String,
    /// As stored (upper case, no padding); empty for none.
    pub label: String,
    /// As blkid shows it: `XXXX-XXXX`.
    pub volume_id: String,
}
