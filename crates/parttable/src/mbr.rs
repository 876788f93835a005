//! MBR: four primary entries, and logical partitions in a chain of EBRs
//! inside one extended partition.

use crate::{
    check_extents, le32, Disk, Error, Extent, PartType, Partition, Table, TableKind, Warning,
    MAX_LOGICAL,
};
use std::io::{Read, Seek};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub boot: u8,
    pub sys: u8,
    pub start: u64,
    pub sectors: u64,
}

impl Entry {
    /// `None` for an unused slot (system id 0) or bytes too short.
    pub(crate) fn parse(sector: &[u8], at: usize) -> Option<Entry> {
        let e = sector.get(at..at.checked_add(16)?)?;
        let sys = *e.get(4)?;
        if sys == 0 {
            return None;
        }
        Some(Entry {
            boot: *e.first()?,
            sys,
            start: u64::from(le32(e, 8)),
            sectors: u64::from(le32(e, 12)),
        })
    }
}

fn is_extended(sys: u8) -> bool {
    matches!(sys, 0x05 | 0x0f | 0x85)
}

pub(crate) fn read<R: Read + Seek>(disk: &mut Disk<R>, mbr: &[u8]) -> Result<Table, Error> {
    let sig = le32(mbr, 440);
    let mut warnings = Vec::new();
    let mut found: Vec<(u32, Entry)> = Vec::new();
    let mut extended = None;
    for i in 0..4u32 {
        let Some(e) = Entry::parse(mbr, 446 + 16 * i as usize) else {
            continue;
        };
        if is_extended(e.sys) {
            if extended.is_some() {
                return Err(Error::MultipleExtended);
            }
            extended = Some(e);
        } else {
            found.push((i + 1, e));
        }
    }
    if let Some(ext) = extended {
        // Each EBR: entry 1 is the logical partition (start relative to
        // the EBR), entry 2 links to the next EBR (start relative to the
        // extended partition). Links must move strictly forward, so the
        // walk ends; the step limit bounds it.
        let ext_end = ext.start.saturating_add(ext.sectors);
        let mut ebr = ext.start;
        let mut number = 5u32;
        for step in 0.. {
            if step >= MAX_LOGICAL {
                return Err(Error::TooManyLogical);
            }
            let Some(sector) = disk.sector(ebr)? else {
                return Err(Error::EbrPastEnd(ebr));
            };
            if sector.get(510..512) != Some(&[0x55, 0xaa][..]) {
                if step == 0 {
                    break; // an empty extended partition needs no EBR
                }
                return Err(Error::EbrSignature(ebr));
            }
            if let Some(mut l) = Entry::parse(&sector, 446) {
                l.start = l.start.checked_add(ebr).ok_or(Error::LogicalOverflow)?;
                found.push((number, l));
                number += 1;
            }
            match Entry::parse(&sector, 446 + 16) {
                Some(link) if link.sectors > 0 || link.start > 0 => {
                    let next = ext.start.saturating_add(link.start);
                    if next <= ebr || next >= ext_end {
                        return Err(Error::EbrLink {
                            from: ebr,
                            to: next,
                        });
                    }
                    ebr = next;
                }
                _ => break,
            }
        }
    }
    let parts: Vec<Partition> = found
        .into_iter()
        .map(|(number, e)| {
            if e.boot != 0 && e.boot != 0x80 {
                warnings.push(Warning::BootFlag {
                    number,
                    flag: e.boot,
                });
            }
            Partition {
                number,
                kind: PartType::Mbr(e.sys),
                start_lba: e.start,
                sectors: e.sectors,
                bootable: e.boot == 0x80,
                partuuid: format!("{sig:08x}-{number:02x}"),
                name: String::new(),
            }
        })
        .collect();
    check_extents(&parts, disk.sectors(), &mut warnings);
    Ok(Table {
        kind: TableKind::Mbr,
        sector_size: disk.sector_size,
        size_bytes: disk.len,
        disk_id: format!("0x{sig:08x}"),
        extended: extended.map(|e| Extent {
            start_lba: e.start,
            sectors: e.sectors,
        }),
        partitions: parts,
        warnings,
    })
}
