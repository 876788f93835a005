//! Reading a partition table back, for `fwpack disk --inspect`. The
//! parsing is the `parttable` crate's (bounds-checked, allocation-capped,
//! shared with the device's PARTUUID lookup); this maps its table to the
//! report `write_image` gives, with the FAT label of each partition.

use crate::error::Error;
use crate::layout::{TableKind, SECTOR_SIZE};
use crate::report::{Extent, FsReport, ImageReport, PartitionReport};
use parttable::fs::{self, FsKind};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Reads the partition table (MBR, or GPT behind a protective MBR) of the
/// image at `path`, and the label of every FAT file system in it.
pub fn inspect(path: &Path) -> Result<ImageReport, Error> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    inspect_reader(&mut f, path)
}

/// As [`inspect`], on any seekable reader; `name` is used in messages.
pub fn inspect_reader<R: Read + Seek>(r: &mut R, name: &Path) -> Result<ImageReport, Error> {
    let t = parttable::read(r, SECTOR_SIZE).map_err(|e| match e {
        parttable::Error::Io(e) => Error::io(format!("reading {}", name.display()), e),
        other => Error::BadImage {
            path: name.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    let mut partitions = Vec::with_capacity(t.partitions.len());
    for p in &t.partitions {
        let offset_bytes = p.start_lba.saturating_mul(SECTOR_SIZE);
        partitions.push(PartitionReport {
            number: p.number,
            name: p.name.clone(),
            start_lba: p.start_lba,
            sectors: p.sectors,
            offset_bytes,
            size_bytes: p.sectors.saturating_mul(SECTOR_SIZE),
            type_id: p.kind.to_string(),
            bootable: p.bootable,
            partuuid: p.partuuid.clone(),
            // A partition whose start cannot be read has no file system to
            // report; that is not an error of the table.
            filesystem: probe_fat(r, offset_bytes).ok().flatten(),
            content_bytes: None,
        });
    }
    Ok(ImageReport {
        table: match t.kind {
            parttable::TableKind::Mbr => TableKind::Mbr,
            parttable::TableKind::Gpt => TableKind::Gpt,
        },
        sector_size: t.sector_size,
        size_bytes: t.size_bytes,
        disk_id: t.disk_id,
        extended: t.extended.map(|e| Extent {
            start_lba: e.start_lba,
            sectors: e.sectors,
        }),
        partitions,
        warnings: t.warnings.iter().map(ToString::to_string).collect(),
        written: Vec::new(),
    })
}

/// The FAT label and volume ID of the file system at `offset`, if it is
/// FAT (the only kind `write_image` creates, so the only kind reported).
fn probe_fat<R: Read + Seek>(r: &mut R, offset: u64) -> std::io::Result<Option<FsReport>> {
    let mut head = Vec::with_capacity(fs::PROBE_BYTES);
    r.seek(SeekFrom::Start(offset))?;
    r.take(fs::PROBE_BYTES as u64).read_to_end(&mut head)?;
    Ok(fs::probe(&head).and_then(|f| {
        let kind = match f.kind {
            FsKind::Fat12 => "fat12",
            FsKind::Fat16 => "fat16",
            FsKind::Fat32 => "fat32",
            FsKind::Ext => return None,
        };
        Some(FsReport {
            kind: kind.into(),
            label: f.label,
            volume_id: crate::fat::format_volume_id(f.volume_id.unwrap_or(0)),
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn inspect_bytes(b: Vec<u8>) -> Result<ImageReport, Error> {
        inspect_reader(&mut Cursor::new(b), Path::new("t.img"))
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        assert!(inspect_bytes(vec![]).is_err());
        assert!(inspect_bytes(vec![0; 512]).is_err());
        // Deterministic pseudo-random sectors (the parser's own hostile
        // input tests live in parttable; this covers the mapping).
        let mut x = 0x1234_5678u32;
        for round in 0..500 {
            let mut b = vec![0u8; 512 * 8];
            for v in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *v = x as u8;
            }
            b[510] = 0x55;
            b[511] = 0xaa;
            b[446 + 4] = [0xee, 0x05, 0x0f, 0x0c][round % 4];
            if round % 3 == 0 {
                b[512..520].copy_from_slice(b"EFI PART");
            }
            let _ = inspect_bytes(b);
        }
    }
}
