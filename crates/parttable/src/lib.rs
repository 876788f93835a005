//! Partition tables read back from bytes that may be anything: an image
//! handed to `fwpack disk --inspect`, or a disk the device finds at boot.
//!
//! Written from scratch rather than with mbrman/gptman because those trust
//! header fields for allocation sizes and arithmetic. Here every field is
//! bounds-checked, every allocation is capped (one sector, or a GPT entry
//! array of at most [`MAX_GPT_ARRAY`] bytes), and the EBR chain is walked
//! with a step limit. Any input gives a [`Table`] or an [`Error`], never a
//! panic.
//!
//! [`fs::probe`] reads the filesystem label (ext2/3/4, FAT) from the first
//! bytes of a partition, for `LABEL=` lookups and `inspect`.

mod crc;
pub mod fs;
mod gpt;
mod mbr;

use std::fmt;
use std::io::{Read, Seek, SeekFrom};

pub use gpt::GptProblem;

/// At most this many logical partitions are followed in an EBR chain.
pub const MAX_LOGICAL: usize = 128;
/// GPT entry arrays larger than this are refused (the standard one is 16 KiB).
pub const MAX_GPT_ARRAY: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Mbr,
    Gpt,
}

/// The partition type as the table stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartType {
    /// The MBR system id byte (`0x83`, `0x0c`, ...).
    Mbr(u8),
    /// The GPT type GUID, in textual byte order.
    Gpt([u8; 16]),
}

impl fmt::Display for PartType {
    /// MBR: two hex digits (`0c`, as sfdisk's `type=`). GPT: the GUID.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartType::Mbr(b) => write!(f, "{b:02x}"),
            PartType::Gpt(g) => f.write_str(&guid_text(g)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub start_lba: u64,
    pub sectors: u64,
}

/// One partition as the table describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// As Linux numbers it: 1-4 primary (MBR) or entry index + 1 (GPT),
    /// 5 and up for MBR logical partitions in chain order.
    pub number: u32,
    pub kind: PartType,
    pub start_lba: u64,
    pub sectors: u64,
    /// MBR: boot flag 0x80. GPT: attribute bit 2 (legacy BIOS bootable).
    pub bootable: bool,
    /// What the kernel matches `root=PARTUUID=` against, lower case:
    /// `<disk signature>-<NN>` on MBR, the partition GUID on GPT.
    pub partuuid: String,
    /// GPT partition name (PARTLABEL); empty on MBR.
    pub name: String,
}

/// A partition table that could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub kind: TableKind,
    pub sector_size: u64,
    /// Length of the disk or image in bytes.
    pub size_bytes: u64,
    /// MBR: the disk signature as `0x%08x` (sfdisk's `label-id`).
    /// GPT: the disk GUID.
    pub disk_id: String,
    /// MBR only: the extended partition holding partitions 5 and up.
    pub extended: Option<Extent>,
    pub partitions: Vec<Partition>,
    /// Things that are readable but not right.
    pub warnings: Vec<Warning>,
}

/// Readable but not right: reported, not fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    BootFlag {
        number: u32,
        flag: u8,
    },
    /// The primary GPT could not be used; the backup was read.
    PrimaryGptUnusable(GptProblem),
    AlternateMisplaced {
        claimed: u64,
        last: u64,
    },
    BackupEntriesDiffer,
    Backup(GptProblem),
    EndsBeforeStart(u32),
    OutsideUsable(u32),
    PastEnd(u32),
    Overlap(u32, u32),
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::BootFlag { number, flag } => {
                write!(f, "partition {number}: invalid boot flag 0x{flag:02x}")
            }
            Warning::PrimaryGptUnusable(p) => write!(f, "primary GPT unusable ({p}); read the backup"),
            Warning::AlternateMisplaced { claimed, last } => write!(
                f,
                "GPT says its other copy is at sector {claimed}, but the image's last sector is {last}"
            ),
            Warning::BackupEntriesDiffer => f.write_str("backup GPT entries differ from the primary"),
            Warning::Backup(p) => write!(f, "backup GPT: {p}"),
            Warning::EndsBeforeStart(n) => write!(f, "partition {n}: ends before it starts"),
            Warning::OutsideUsable(n) => write!(f, "partition {n}: outside the usable area"),
            Warning::PastEnd(n) => write!(f, "partition {n}: extends past the end of the image"),
            Warning::Overlap(a, b) => write!(f, "partitions {a} and {b} overlap"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("reading the disk: {0}")]
    Io(#[from] std::io::Error),
    #[error("sector size {0} is not a power of two between 512 and 4096")]
    SectorSize(u64),
    #[error("shorter than one sector")]
    TooShort,
    #[error("no partition table (sector 0 lacks the 55 AA signature)")]
    NoSignature,
    #[error("more than one extended partition")]
    MultipleExtended,
    #[error("more than {MAX_LOGICAL} logical partitions")]
    TooManyLogical,
    #[error("EBR at sector {0} is past the end of the image")]
    EbrPastEnd(u64),
    #[error("EBR at sector {0} lacks the 55 AA signature")]
    EbrSignature(u64),
    #[error(
        "EBR at sector {from} links to sector {to}, outside the extended partition or backwards"
    )]
    EbrLink { from: u64, to: u64 },
    #[error("logical partition start overflows")]
    LogicalOverflow,
    /// Neither GPT copy is usable.
    #[error("{primary}; backup: {backup}")]
    Gpt {
        primary: GptProblem,
        backup: GptProblem,
    },
}

/// Reads the partition table of a disk or image: GPT when the MBR has a
/// protective (0xEE) entry, falling back to the backup GPT at the last
/// sector as the kernel does; else the MBR with its logical partitions.
/// `sector_size` is the logical block size (512 for images).
pub fn read<R: Read + Seek>(r: &mut R, sector_size: u64) -> Result<Table, Error> {
    if !(sector_size.is_power_of_two() && (512..=4096).contains(&sector_size)) {
        return Err(Error::SectorSize(sector_size));
    }
    let len = r.seek(SeekFrom::End(0))?;
    let mut disk = Disk {
        r,
        len,
        sector_size,
    };
    let mbr = disk.sector(0)?.ok_or(Error::TooShort)?;
    if mbr.get(510..512) != Some(&[0x55, 0xaa][..]) {
        return Err(Error::NoSignature);
    }
    let protective =
        (0..4).any(|i| mbr::Entry::parse(&mbr, 446 + 16 * i).is_some_and(|e| e.sys == 0xee));
    if protective {
        gpt::read(&mut disk)
    } else {
        mbr::read(&mut disk, &mbr)
    }
}

/// Bounded reads from the disk: never past its end, never more than the
/// caller's cap.
pub(crate) struct Disk<'a, R> {
    r: &'a mut R,
    len: u64,
    sector_size: u64,
}

impl<R: Read + Seek> Disk<'_, R> {
    /// `n` bytes at `off`, or `None` if the disk ends before that.
    pub(crate) fn bytes(&mut self, off: u64, n: u64) -> Result<Option<Vec<u8>>, Error> {
        match off.checked_add(n) {
            Some(end) if end <= self.len => {}
            _ => return Ok(None),
        }
        let Ok(n) = usize::try_from(n) else {
            return Ok(None);
        };
        let mut buf = vec![0u8; n];
        self.r.seek(SeekFrom::Start(off))?;
        self.r.read_exact(&mut buf)?;
        Ok(Some(buf))
    }

    pub(crate) fn sector(&mut self, lba: u64) -> Result<Option<Vec<u8>>, Error> {
        match lba.checked_mul(self.sector_size) {
            Some(off) => self.bytes(off, self.sector_size),
            None => Ok(None),
        }
    }

    pub(crate) fn sectors(&self) -> u64 {
        self.len / self.sector_size
    }
}

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at.saturating_add(2)) {
        Some(&[x, y]) => u16::from_le_bytes([x, y]),
        _ => 0,
    }
}
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at.saturating_add(4)) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    match b.get(at..at.saturating_add(8)) {
        Some(s) => {
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        }
        None => 0,
    }
}

/// GPT stores the first three GUID fields little-endian ("mixed endian");
/// this swaps between that and textual order (its own inverse).
pub fn guid_from_disk(d: [u8; 16]) -> [u8; 16] {
    [
        d[3], d[2], d[1], d[0], d[5], d[4], d[7], d[6], d[8], d[9], d[10], d[11], d[12], d[13],
        d[14], d[15],
    ]
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower case, from textual order.
pub fn guid_text(g: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in g.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Partitions past the end of the disk, and overlaps.
pub(crate) fn check_extents(parts: &[Partition], disk_sectors: u64, warnings: &mut Vec<Warning>) {
    let mut sorted: Vec<&Partition> = parts.iter().collect();
    sorted.sort_by_key(|p| p.start_lba);
    for p in &sorted {
        if p.start_lba.saturating_add(p.sectors) > disk_sectors {
            warnings.push(Warning::PastEnd(p.number));
        }
    }
    for w in sorted.windows(2) {
        if let [a, b] = w {
            if a.start_lba.saturating_add(a.sectors) > b.start_lba {
                warnings.push(Warning::Overlap(a.number, b.number));
            }
        }
    }
}

pub use crc::crc32;
