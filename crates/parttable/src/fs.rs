//! Filesystem identity from a partition's first bytes: what `LABEL=`
//! matches and what `inspect` reports. ext2/3/4 and FAT only, the two
//! kinds fwpack puts on disks.

use crate::{le16, le32};

/// Read this many bytes from the start of a partition for [`probe`]
/// (the ext superblock ends at 2048).
pub const PROBE_BYTES: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// ext2, ext3 or ext4 (one superblock format).
    Ext,
    Fat12,
    Fat16,
    Fat32,
}

impl FsKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FsKind::Ext => "ext",
            FsKind::Fat12 => "fat12",
            FsKind::Fat16 => "fat16",
            FsKind::Fat32 => "fat32",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    pub kind: FsKind,
    /// As stored, trailing spaces trimmed; empty for none (FAT's
    /// `NO NAME` placeholder is none too).
    pub label: String,
    /// FAT only: the volume serial number (blkid's `UUID=XXXX-XXXX`).
    pub volume_id: Option<u32>,
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or_default())
        .trim_end()
        .to_string()
}

/// The filesystem whose superblock starts `head` (the first
/// [`PROBE_BYTES`] of a partition; shorter input only finds FAT).
pub fn probe(head: &[u8]) -> Option<Filesystem> {
    // ext2/3/4: superblock at 1024, magic 0xEF53 at +56, name at +120.
    if head.len() >= 1024 + 136 && le16(head, 1024 + 56) == 0xEF53 {
        return Some(Filesystem {
            kind: FsKind::Ext,
            label: text(head.get(1024 + 120..1024 + 136)?),
            volume_id: None,
        });
    }
    if head.get(510..512)? != [0x55, 0xaa] {
        return None;
    }
    let bps = le16(head, 11);
    let spc = *head.get(13)?;
    if !(bps.is_power_of_two() && (512..=4096).contains(&bps) && spc.is_power_of_two()) {
        return None;
    }
    // The filesystem-type string says which BPB layout follows: FAT32's
    // extended BPB sits 28 bytes later than FAT12/16's.
    let (kind, sig_at, id_at, label_at) = match (head.get(54..62), head.get(82..90)) {
        (_, Some(b"FAT32   ")) => (FsKind::Fat32, 0x42, 67, 71),
        (Some(b"FAT16   "), _) => (FsKind::Fat16, 0x26, 39, 43),
        (Some(b"FAT12   "), _) => (FsKind::Fat12, 0x26, 39, 43),
        _ => return None,
    };
    // Signature 0x29: volume id and label present; 0x28: id only.
    let sig = *head.get(sig_at)?;
    let label = if sig == 0x29 {
        text(head.get(label_at..label_at + 11)?)
    } else {
        String::new()
    };
    Some(Filesystem {
        kind,
        label: if label == "NO NAME" {
            String::new()
        } else {
            label
        },
        volume_id: matches!(sig, 0x28 | 0x29).then(|| le32(head, id_at)),
    })
}
