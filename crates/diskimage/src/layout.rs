//! What a disk should look like, and the placement computed from it.

use crate::error::Error;
use crate::fat::{self, FatGeometry};
use crate::guid::{derive_u32, gpt_types, Guid};
use crate::report::{FsReport, ImageReport, PartitionReport};
use std::path::PathBuf;

/// Bytes per logical sector. Everything here (and every SD card and
/// virtio disk we target) uses 512.
pub const SECTOR_SIZE: u64 = 512;
/// Partition starts are rounded up to this: erase blocks of SD cards and
/// the 4 KiB pages of everything else both divide it.
pub const ALIGNMENT: u64 = 1 << 20;

const SECTORS_PER_ALIGN: u64 = ALIGNMENT / SECTOR_SIZE;
/// GPT: protective MBR + header + 128 entries of 128 bytes.
const GPT_FIRST_USABLE_LBA: u64 = 34;
/// GPT: backup entries (32 sectors) + backup header at the end of the disk.
const GPT_BACKUP_SECTORS: u64 = 33;
const GPT_MAX_PARTITIONS: usize = 128;
/// MBR: 4 primaries, or 3 primaries + an extended partition of logicals;
/// the kernel numbers logical partitions from 5 and stops caring long
/// before this.
const MBR_MAX_PARTITIONS: usize = 3 + 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Mbr,
    Gpt,
}

impl TableKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Mbr => "mbr",
            TableKind::Gpt => "gpt",
        }
    }
}

/// A whole disk.
#[derive(Debug, Clone)]
pub struct DiskLayout {
    pub table: TableKind,
    /// Every identifier (MBR disk signature, GPT disk and partition GUIDs,
    /// FAT volume IDs) is derived from this string and the partition name;
    /// use something that names the board and product, e.g.
    /// `"acme-gateway/rpi-zero2w"`. Never random, so rebuilds are
    /// byte-identical.
    pub seed: String,
    /// Total image size. `None`: just large enough for the partitions,
    /// rounded up to [`ALIGNMENT`].
    pub size_bytes: Option<u64>,
    /// Timestamp for every FAT directory entry, in seconds since the Unix
    /// epoch (UTC), usually `SOURCE_DATE_EPOCH`. `None`: 1980-01-01 00:00,
    /// the FAT epoch. Clamped to the range FAT can store (1980..=2107).
    pub fat_timestamp: Option<u64>,
    /// In table order: the first is partition 1.
    pub partitions: Vec<PartitionSpec>,
    /// Byte ranges no partition (nor an MBR's EBR) may overlap, e.g. the
    /// fwpack updater's state area. Partitions placed automatically skip
    /// past them; fixed starts inside one are errors. They are left as
    /// zeros, for the caller to fill after the image is written.
    pub reserved: Vec<Reserved>,
}

/// A byte range of the disk kept free of partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// For messages.
    pub name: String,
    /// A multiple of [`SECTOR_SIZE`].
    pub start_bytes: u64,
    /// A non-zero multiple of [`SECTOR_SIZE`].
    pub size_bytes: u64,
}

/// One partition.
#[derive(Debug, Clone)]
pub struct PartitionSpec {
    /// Unique within the layout. Written as the GPT partition name (so at
    /// most 36 UTF-16 units) and used to derive the partition's identifiers.
    pub name: String,
    /// Fixed start, a multiple of [`SECTOR_SIZE`]. `None`: right after the
    /// previous partition, rounded up to [`ALIGNMENT`].
    pub start_bytes: Option<u64>,
    /// A multiple of [`SECTOR_SIZE`]. `None`: fill the rest of the disk
    /// (only the last partition, and only with `DiskLayout::size_bytes`).
    pub size_bytes: Option<u64>,
    pub kind: PartKind,
    /// MBR: active flag (0x80). GPT: "legacy BIOS bootable" attribute.
    pub bootable: bool,
    /// `None`: 0x0C/0x0E/0x01 for FAT32/16/12, 0x83 (Linux) otherwise.
    pub mbr_type: Option<u8>,
    /// `None`: Microsoft basic data for FAT, Linux filesystem otherwise.
    pub gpt_type: Option<Guid>,
}

impl PartitionSpec {
    /// A partition of `size_bytes` placed after the previous one, with
    /// default type and no boot flag.
    pub fn new(name: impl Into<String>, size_bytes: u64, kind: PartKind) -> Self {
        PartitionSpec {
            name: name.into(),
            start_bytes: None,
            size_bytes: Some(size_bytes),
            kind,
            bootable: false,
            mbr_type: None,
            gpt_type: None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum PartKind {
    /// A FAT file system holding the given files.
    Fat(FatSpec),
    /// The partition's bytes are the source's bytes, then zeros.
    Raw(Source),
    /// Left zeroed (and not even written: the image stays sparse).
    Empty,
}

#[derive(Debug, Clone, Default)]
pub struct FatSpec {
    /// Volume label, up to 11 characters; stored upper-case.
    pub label: String,
    pub fat_type: FatKind,
    /// Written in order of `dest`, whatever the order here.
    pub files: Vec<FatFile>,
    /// Directories to create even if no file lands in them (parents of
    /// files are created anyway).
    pub dirs: Vec<String>,
}

impl FatSpec {
    /// Adds every regular file under `dir` (recursively, following
    /// symlinks) below `prefix` in the FAT ("" for the root). Empty
    /// subdirectories are kept.
    pub fn add_tree(&mut self, dir: &std::path::Path, prefix: &str) -> Result<(), Error> {
        fat::add_tree(self, dir, prefix)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FatKind {
    /// FAT32 from 64 MiB, FAT16 from 4 MiB, FAT12 below.
    #[default]
    Auto,
    Fat16,
    Fat32,
}

#[derive(Debug, Clone)]
pub struct FatFile {
    /// Path inside the file system, `/`-separated, e.g. `overlays/disable-bt.dtbo`.
    pub dest: String,
    pub source: Source,
}

#[derive(Clone)]
pub enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Path(p) => write!(f, "Path({})", p.display()),
            Source::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
        }
    }
}

impl Source {
    /// For messages: the path, or "<N bytes in memory>".
    pub fn describe(&self) -> String {
        match self {
            Source::Path(p) => p.display().to_string(),
            Source::Bytes(b) => format!("<{} bytes in memory>", b.len()),
        }
    }

    /// Length in bytes (stat for paths).
    pub(crate) fn len(&self) -> Result<u64, Error> {
        match self {
            Source::Bytes(b) => Ok(b.len() as u64),
            Source::Path(p) => {
                let md = std::fs::metadata(p).map_err(|e| Error::MissingSource {
                    path: p.clone(),
                    source: e,
                })?;
                if !md.is_file() {
                    return Err(Error::NotAFile { path: p.clone() });
                }
                Ok(md.len())
            }
        }
    }
}

/// Where everything goes; computed once, used by both `plan` and `write`.
#[derive(Debug)]
pub(crate) struct Plan {
    pub disk_sectors: u64,
    pub mbr_signature: u32,
    pub disk_guid: Guid,
    /// MBR extended partition (start LBA, sectors), when there are more
    /// than four partitions.
    pub extended: Option<(u64, u64)>,
    pub parts: Vec<Placed>,
}

#[derive(Debug)]
pub(crate) struct Placed {
    pub index: usize,
    /// As the kernel numbers it (MBR logicals start at 5).
    pub number: u32,
    pub start: u64,
    pub sectors: u64,
    /// MBR logical partitions: the sector holding this partition's EBR.
    pub ebr: Option<u64>,
    pub mbr_type: u8,
    pub gpt_type: Guid,
    pub guid: Guid,
    pub fat: Option<FatGeometry>,
}

pub(crate) fn make_plan(layout: &DiskLayout) -> Result<Plan, Error> {
    validate_names(layout)?;
    let parts = &layout.partitions;
    let (max, table) = match layout.table {
        TableKind::Mbr => (MBR_MAX_PARTITIONS, "MBR"),
        TableKind::Gpt => (GPT_MAX_PARTITIONS, "GPT"),
    };
    if parts.len() > max {
        return Err(Error::TooManyPartitions {
            table,
            max,
            count: parts.len(),
        });
    }
    let disk_sectors_given = match layout.size_bytes {
        Some(s) => Some(sectors_of(s, "disk size")?),
        None => None,
    };
    let tail_reserved = match layout.table {
        TableKind::Gpt => GPT_BACKUP_SECTORS,
        TableKind::Mbr => 0,
    };
    let first_usable = match layout.table {
        TableKind::Gpt => GPT_FIRST_USABLE_LBA,
        TableKind::Mbr => 1,
    };
    let use_extended = layout.table == TableKind::Mbr && parts.len() > 4;
    let reserved = reserved_sectors(layout, first_usable)?;
    // Sector range overlapping [s, e)?
    let hit = |s: u64, e: u64| reserved.iter().find(|r| s < r.2 && r.1 < e);

    let mut placed = Vec::with_capacity(parts.len());
    let mut next_free = first_usable; // first sector not yet used
    let mut extended_start = None;
    for (index, spec) in parts.iter().enumerate() {
        let logical = use_extended && index >= 3;
        // A logical partition needs its EBR one alignment unit before it.
        let gap = if logical { SECTORS_PER_ALIGN } else { 0 };
        let start = match spec.start_bytes {
            Some(b) => {
                let s = sectors_of(b, &format!("start of partition {:?}", spec.name))?;
                if s < next_free.saturating_add(gap) {
                    return Err(Error::Overlap {
                        partition: spec.name.clone(),
                        start: b,
                        previous_end: next_free.saturating_add(gap).saturating_mul(SECTOR_SIZE),
                    });
                }
                s
            }
            None => {
                let mut s = align_up(next_free, SECTORS_PER_ALIGN)
                    .and_then(|s| s.checked_add(gap))
                    .ok_or_else(|| too_big(spec, u64::MAX, layout.size_bytes))?;
                // Skip reserved ranges: one that would overlap the partition
                // (or its EBR) moves it past its end. A filling partition
                // (no size) goes past every reserved range.
                let len = match spec.size_bytes {
                    Some(b) => b / SECTOR_SIZE,
                    None => u64::MAX,
                };
                while let Some(r) = hit(s - gap, s.saturating_add(len)) {
                    s = align_up(r.2, SECTORS_PER_ALIGN)
                        .and_then(|x| x.checked_add(gap))
                        .ok_or_else(|| too_big(spec, u64::MAX, layout.size_bytes))?;
                }
                s
            }
        };
        let ebr = logical.then(|| start - SECTORS_PER_ALIGN);
        if logical && extended_start.is_none() {
            extended_start = ebr;
        }
        let sectors = match spec.size_bytes {
            Some(0) => {
                return Err(Error::ZeroSize {
                    partition: spec.name.clone(),
                })
            }
            Some(b) => sectors_of(b, &format!("size of partition {:?}", spec.name))?,
            None => {
                let Some(disk) = disk_sectors_given.filter(|_| index + 1 == parts.len()) else {
                    return Err(Error::CannotFill {
                        partition: spec.name.clone(),
                    });
                };
                let end = disk.saturating_sub(tail_reserved);
                if end <= start {
                    return Err(too_big(
                        spec,
                        start.saturating_add(1).saturating_mul(SECTOR_SIZE),
                        layout.size_bytes,
                    ));
                }
                end - start
            }
        };
        let end = start
            .checked_add(sectors)
            .ok_or_else(|| too_big(spec, u64::MAX, layout.size_bytes))?;
        // Fixed starts (and filled sizes) are checked, not moved.
        let first = if logical {
            start - SECTORS_PER_ALIGN
        } else {
            start
        };
        if let Some(r) = hit(first, end) {
            return Err(Error::ReservedOverlap {
                partition: spec.name.clone(),
                start: start * SECTOR_SIZE,
                end: end * SECTOR_SIZE,
                reserved: r.0.clone(),
                reserved_start: r.1 * SECTOR_SIZE,
                reserved_end: r.2 * SECTOR_SIZE,
            });
        }
        if let Some(disk) = disk_sectors_given {
            if end > disk.saturating_sub(tail_reserved) {
                return Err(too_big(
                    spec,
                    end.saturating_mul(SECTOR_SIZE),
                    layout.size_bytes,
                ));
            }
        }
        next_free = end;

        let fat = match &spec.kind {
            PartKind::Fat(f) => Some(fat::geometry(&spec.name, sectors, f.fat_type)?),
            _ => None,
        };
        let mbr_type = match spec.mbr_type {
            Some(t) => {
                check_mbr_type(spec, t)?;
                t
            }
            None => match &fat {
                Some(g) => g.default_mbr_type(),
                None => 0x83,
            },
        };
        let gpt_type = match spec.gpt_type {
            Some(g) if g.is_nil() => {
                return Err(Error::InvalidType {
                    partition: spec.name.clone(),
                    reason: "the nil GUID marks an unused entry".into(),
                })
            }
            Some(g) => g,
            None if fat.is_some() => gpt_types::BASIC_DATA,
            None => gpt_types::LINUX_FS,
        };
        let number = if logical {
            5 + (index as u32 - 3)
        } else {
            index as u32 + 1
        };
        placed.push(Placed {
            index,
            number,
            start,
            sectors,
            ebr,
            mbr_type,
            gpt_type,
            guid: Guid::derive(&layout.seed, &format!("gpt-partition:{}", spec.name)),
            fat,
        });
    }

    let overflow = || Error::TooBigForDisk {
        partition: parts.last().map(|p| p.name.clone()).unwrap_or_default(),
        end: u64::MAX,
        disk_size: u64::MAX,
    };
    // The disk holds every reserved range too.
    let used = reserved.iter().map(|r| r.2).fold(next_free, u64::max);
    let needed = used.checked_add(tail_reserved).ok_or_else(overflow)?;
    if let Some(d) = disk_sectors_given {
        if let Some(r) = reserved
            .iter()
            .find(|r| r.2 > d.saturating_sub(tail_reserved))
        {
            return Err(Error::InvalidReserved {
                name: r.0.clone(),
                reason: format!(
                    "ends at byte {}, past the usable end of the {}-byte disk",
                    r.2 * SECTOR_SIZE,
                    d * SECTOR_SIZE
                ),
            });
        }
    }
    let disk_sectors = match disk_sectors_given {
        Some(d) => d,
        None => align_up(needed, SECTORS_PER_ALIGN).ok_or_else(overflow)?,
    };
    // Byte offsets are computed from sectors everywhere after this.
    if disk_sectors > u64::MAX / SECTOR_SIZE {
        return Err(overflow());
    }
    if layout.table == TableKind::Mbr && disk_sectors > u64::from(u32::MAX) {
        return Err(Error::TooLargeForMbr {
            size: disk_sectors.saturating_mul(SECTOR_SIZE),
        });
    }
    let extended = extended_start.map(|s| {
        // The container ends where the last logical partition does, rounded
        // up to the alignment when the disk leaves room for that.
        let end = align_up(next_free, SECTORS_PER_ALIGN)
            .unwrap_or(next_free)
            .min(disk_sectors);
        (s, end - s)
    });

    Ok(Plan {
        disk_sectors,
        mbr_signature: derive_u32(&layout.seed, "mbr-disk-signature"),
        disk_guid: Guid::derive(&layout.seed, "gpt-disk"),
        extended,
        parts: placed,
    })
}

/// Reserved ranges as `(name, first sector, end sector)`: aligned,
/// non-empty, clear of the partition table at the start of the disk.
fn reserved_sectors(
    layout: &DiskLayout,
    first_usable: u64,
) -> Result<Vec<(String, u64, u64)>, Error> {
    let mut out = Vec::with_capacity(layout.reserved.len());
    for r in &layout.reserved {
        let bad = |reason: String| Error::InvalidReserved {
            name: r.name.clone(),
            reason,
        };
        let what = format!("reserved range {:?}", r.name);
        let s = sectors_of(r.start_bytes, &what)?;
        let n = sectors_of(r.size_bytes, &what)?;
        if n == 0 {
            return Err(bad("size 0".into()));
        }
        let e = s
            .checked_add(n)
            .ok_or_else(|| bad("start + size overflows".into()))?;
        if s < first_usable {
            return Err(bad(format!(
                "starts at byte {}, inside the partition table (which ends at byte {})",
                r.start_bytes,
                first_usable * SECTOR_SIZE
            )));
        }
        out.push((r.name.clone(), s, e));
    }
    Ok(out)
}

fn too_big(spec: &PartitionSpec, end: u64, disk: Option<u64>) -> Error {
    Error::TooBigForDisk {
        partition: spec.name.clone(),
        end,
        disk_size: disk.unwrap_or(u64::MAX),
    }
}

fn check_mbr_type(spec: &PartitionSpec, t: u8) -> Result<(), Error> {
    let reason = match t {
        0 => "type 0x00 marks an unused entry",
        0x05 | 0x0f | 0x85 => "extended-partition types are managed by the table writer",
        0xee => "type 0xEE is the GPT protective entry; use table: gpt",
        _ => return Ok(()),
    };
    Err(Error::InvalidType {
        partition: spec.name.clone(),
        reason: reason.into(),
    })
}

fn validate_names(layout: &DiskLayout) -> Result<(), Error> {
    if layout.seed.trim().is_empty() {
        return Err(Error::InvalidSeed("the seed must not be empty".into()));
    }
    if layout.partitions.is_empty() {
        return Err(Error::NoPartitions);
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &layout.partitions {
        let bad = |reason: &str| Error::InvalidPartitionName {
            name: p.name.clone(),
            reason: reason.into(),
        };
        if p.name.is_empty() {
            return Err(bad("empty"));
        }
        if p.name.encode_utf16().count() > 36 {
            return Err(bad("longer than the 36 UTF-16 units a GPT entry holds"));
        }
        if p.name.chars().any(char::is_control) {
            return Err(bad("contains control characters"));
        }
        if !seen.insert(p.name.as_str()) {
            return Err(Error::DuplicatePartitionName(p.name.clone()));
        }
    }
    Ok(())
}

fn sectors_of(bytes: u64, what: &str) -> Result<u64, Error> {
    if !bytes.is_multiple_of(SECTOR_SIZE) {
        return Err(Error::Misaligned {
            what: what.to_string(),
            value: bytes,
            multiple: SECTOR_SIZE,
        });
    }
    Ok(bytes / SECTOR_SIZE)
}

fn align_up(v: u64, to: u64) -> Option<u64> {
    v.checked_add(to - 1).map(|x| x / to * to)
}

impl Plan {
    pub(crate) fn disk_id(&self, table: TableKind) -> String {
        match table {
            TableKind::Mbr => format!("0x{:08x}", self.mbr_signature),
            TableKind::Gpt => self.disk_guid.to_string(),
        }
    }

    pub(crate) fn partuuid(&self, table: TableKind, p: &Placed) -> String {
        match table {
            // What the kernel prints and accepts in root=PARTUUID=.
            TableKind::Mbr => format!("{:08x}-{:02x}", self.mbr_signature, p.number),
            TableKind::Gpt => p.guid.to_string(),
        }
    }

    pub(crate) fn report(&self, layout: &DiskLayout) -> ImageReport {
        let partitions = self
            .parts
            .iter()
            .filter_map(|p| {
                let spec = layout.partitions.get(p.index)?;
                Some(PartitionReport {
                    number: p.number,
                    name: spec.name.clone(),
                    start_lba: p.start,
                    sectors: p.sectors,
                    offset_bytes: p.start * SECTOR_SIZE,
                    size_bytes: p.sectors * SECTOR_SIZE,
                    type_id: match layout.table {
                        TableKind::Mbr => format!("{:02x}", p.mbr_type),
                        TableKind::Gpt => p.gpt_type.to_string(),
                    },
                    bootable: spec.bootable,
                    partuuid: self.partuuid(layout.table, p),
                    filesystem: match (&spec.kind, &p.fat) {
                        (PartKind::Fat(f), Some(g)) => Some(FsReport {
                            kind: g.kind_name().to_string(),
                            label: fat::normalized_label(&f.label),
                            volume_id: fat::format_volume_id(fat::volume_id(layout, &spec.name)),
                        }),
                        _ => None,
                    },
                    content_bytes: None,
                })
            })
            .collect();
        ImageReport {
            table: layout.table,
            sector_size: SECTOR_SIZE,
            size_bytes: self.disk_sectors * SECTOR_SIZE,
            disk_id: self.disk_id(layout.table),
            extended: self.extended.map(|(s, n)| crate::report::Extent {
                start_lba: s,
                sectors: n,
            }),
            partitions,
            warnings: Vec::new(),
            written: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn layout(table: TableKind, parts: Vec<PartitionSpec>, reserved: Vec<Reserved>) -> DiskLayout {
        DiskLayout {
            table,
            seed: "test".into(),
            size_bytes: None,
            fat_timestamp: None,
            partitions: parts,
            reserved,
        }
    }

    /// The fwpack state area with its defaults: 512 KiB .. 4.5 MiB + 16 KiB.
    fn state() -> Reserved {
        Reserved {
            name: "state".into(),
            start_bytes: 512 * 1024,
            size_bytes: 4 * MIB + 16 * 1024,
        }
    }

    fn starts(l: &DiskLayout) -> Result<Vec<u64>, Error> {
        Ok(make_plan(l)?
            .parts
            .iter()
            .map(|p| p.start * SECTOR_SIZE)
            .collect())
    }

    #[test]
    fn automatic_starts_skip_reserved_ranges() {
        for table in [TableKind::Mbr, TableKind::Gpt] {
            let p = |n: &str, mib: u64| PartitionSpec::new(n, mib * MIB, PartKind::Empty);
            let l = layout(table, vec![p("a", 2), p("b", 2)], vec![state()]);
            // "a" would fit in the gap at 1 MiB, but the whole area is reserved.
            assert_eq!(starts(&l).unwrap(), vec![5 * MIB, 7 * MIB], "{table:?}");
            // Without reservations: the old 1 MiB start.
            let l = layout(table, vec![p("a", 2)], vec![]);
            assert_eq!(starts(&l).unwrap(), vec![MIB]);
            // A reserved range between partitions pushes only the later one.
            let late = Reserved {
                name: "late".into(),
                start_bytes: 8 * MIB,
                size_bytes: 4096,
            };
            let l = layout(table, vec![p("a", 2), p("b", 2)], vec![state(), late]);
            assert_eq!(starts(&l).unwrap(), vec![5 * MIB, 9 * MIB]);
        }
        // MBR logical partitions: their EBR (1 MiB before) stays clear too.
        let parts: Vec<_> = (0..5)
            .map(|i| PartitionSpec::new(format!("p{i}"), MIB, PartKind::Empty))
            .collect();
        let l = layout(TableKind::Mbr, parts, vec![state()]);
        let plan = make_plan(&l).unwrap();
        for p in &plan.parts {
            assert!(p.start * SECTOR_SIZE >= 5 * MIB);
            if let Some(e) = p.ebr {
                assert!(e * SECTOR_SIZE >= state().start_bytes + state().size_bytes);
            }
        }
    }

    #[test]
    fn fixed_starts_in_a_reserved_range_are_refused() {
        let mut a = PartitionSpec::new("a", 2 * MIB, PartKind::Empty);
        a.start_bytes = Some(MIB);
        let l = layout(TableKind::Gpt, vec![a], vec![state()]);
        assert!(matches!(starts(&l), Err(Error::ReservedOverlap { .. })));
        // Reserved ranges must be aligned, non-empty, after the table and
        // inside a given disk size.
        for r in [
            Reserved {
                name: "x".into(),
                start_bytes: 1000,
                size_bytes: 512,
            },
            Reserved {
                name: "x".into(),
                start_bytes: MIB,
                size_bytes: 0,
            },
            Reserved {
                name: "x".into(),
                start_bytes: 512,
                size_bytes: 512,
            },
        ] {
            let l = layout(
                TableKind::Gpt,
                vec![PartitionSpec::new("a", MIB, PartKind::Empty)],
                vec![r.clone()],
            );
            assert!(starts(&l).is_err(), "{r:?}");
        }
        let mut l = layout(
            TableKind::Mbr,
            vec![PartitionSpec::new("a", MIB, PartKind::Empty)],
            vec![Reserved {
                name: "far".into(),
                start_bytes: 60 * MIB,
                size_bytes: MIB,
            }],
        );
        l.size_bytes = Some(32 * MIB);
        assert!(matches!(starts(&l), Err(Error::InvalidReserved { .. })));
        // Without a size, the disk grows to hold the reserved range.
        l.size_bytes = None;
        assert_eq!(make_plan(&l).unwrap().disk_sectors * SECTOR_SIZE, 61 * MIB);
    }
}
