//! GPT: header at LBA 1 (backup at the last LBA), CRC-checked header and
//! entry array.

use crate::{
    check_extents, crc32, guid_from_disk, guid_text, le16, le32, le64, Disk, Error, PartType,
    Partition, Table, TableKind, Warning, MAX_GPT_ARRAY,
};
use std::fmt;
use std::io::{Read, Seek};

/// Why one copy of the GPT cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GptProblem {
    PastEnd(u64),
    NoSignature(u64),
    HeaderSize(u32),
    HeaderCrc(u64),
    Misplaced(u64),
    EntrySize(u64),
    ArrayTooLarge(u64),
    ArrayOffset,
    ArrayPastEnd,
    ArrayCrc,
}

impl fmt::Display for GptProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GptProblem::PastEnd(lba) => write!(f, "sector {lba} is past the end of the image"),
            GptProblem::NoSignature(lba) => write!(f, "no GPT header signature at sector {lba}"),
            GptProblem::HeaderSize(s) => write!(f, "GPT header size {s} out of range"),
            GptProblem::HeaderCrc(lba) => write!(f, "GPT header at sector {lba} fails its CRC"),
            GptProblem::Misplaced(lba) => {
                write!(f, "GPT header at sector {lba} claims to be elsewhere")
            }
            GptProblem::EntrySize(s) => write!(f, "GPT entry size {s} invalid"),
            GptProblem::ArrayTooLarge(n) => {
                write!(f, "GPT entry array of {n} entries is too large")
            }
            GptProblem::ArrayOffset => f.write_str("GPT entry array offset overflows"),
            GptProblem::ArrayPastEnd => f.write_str("GPT entry array is past the end of the image"),
            GptProblem::ArrayCrc => f.write_str("GPT entry array fails its CRC"),
        }
    }
}

struct Header {
    alternate: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: [u8; 16],
    entries_lba: u64,
    count: u64,
    entry_size: u64,
    entries_crc: u32,
}

fn header<R: Read + Seek>(
    disk: &mut Disk<R>,
    lba: u64,
) -> Result<Result<Header, GptProblem>, Error> {
    let Some(s) = disk.sector(lba)? else {
        return Ok(Err(GptProblem::PastEnd(lba)));
    };
    if s.get(0..8) != Some(&b"EFI PART"[..]) {
        return Ok(Err(GptProblem::NoSignature(lba)));
    }
    let size = le32(&s, 12);
    let Some(h) = s.get(..size as usize).filter(|_| size >= 92) else {
        return Ok(Err(GptProblem::HeaderSize(size)));
    };
    let mut h = h.to_vec();
    let stored = le32(&h, 16);
    if let Some(c) = h.get_mut(16..20) {
        c.fill(0);
    }
    if crc32(&h) != stored {
        return Ok(Err(GptProblem::HeaderCrc(lba)));
    }
    if le64(&s, 24) != lba {
        return Ok(Err(GptProblem::Misplaced(lba)));
    }
    let mut guid = [0u8; 16];
    if let Some(g) = s.get(56..72) {
        guid.copy_from_slice(g);
    }
    let hdr = Header {
        alternate: le64(&s, 32),
        first_usable: le64(&s, 40),
        last_usable: le64(&s, 48),
        disk_guid: guid_from_disk(guid),
        entries_lba: le64(&s, 72),
        count: u64::from(le32(&s, 80)),
        entry_size: u64::from(le32(&s, 84)),
        entries_crc: le32(&s, 88),
    };
    if hdr.entry_size < 128 || !hdr.entry_size.is_multiple_of(8) || hdr.entry_size > 4096 {
        return Ok(Err(GptProblem::EntrySize(hdr.entry_size)));
    }
    // count < 2^32 and entry_size <= 4096: the product cannot overflow.
    if hdr.count * hdr.entry_size > MAX_GPT_ARRAY {
        return Ok(Err(GptProblem::ArrayTooLarge(hdr.count)));
    }
    Ok(Ok(hdr))
}

fn entries<R: Read + Seek>(
    disk: &mut Disk<R>,
    h: &Header,
) -> Result<Result<Vec<u8>, GptProblem>, Error> {
    let Some(off) = h.entries_lba.checked_mul(disk.sector_size) else {
        return Ok(Err(GptProblem::ArrayOffset));
    };
    let Some(a) = disk.bytes(off, h.count * h.entry_size)? else {
        return Ok(Err(GptProblem::ArrayPastEnd));
    };
    if crc32(&a) != h.entries_crc {
        return Ok(Err(GptProblem::ArrayCrc));
    }
    Ok(Ok(a))
}

fn copy<R: Read + Seek>(
    disk: &mut Disk<R>,
    lba: u64,
) -> Result<Result<(Header, Vec<u8>), GptProblem>, Error> {
    Ok(match header(disk, lba)? {
        Ok(h) => entries(disk, &h)?.map(|a| (h, a)),
        Err(e) => Err(e),
    })
}

pub(crate) fn read<R: Read + Seek>(disk: &mut Disk<R>) -> Result<Table, Error> {
    let mut warnings = Vec::new();
    let last = disk.sectors().saturating_sub(1);
    let (hdr, array) = match copy(disk, 1)? {
        Ok(c) => c,
        Err(primary) => {
            // Like the kernel, fall back to the backup at the last sector.
            let c = copy(disk, last)?.map_err(|backup| Error::Gpt {
                primary: primary.clone(),
                backup,
            })?;
            warnings.push(Warning::PrimaryGptUnusable(primary));
            c
        }
    };
    if hdr.alternate != last && hdr.alternate != 1 {
        warnings.push(Warning::AlternateMisplaced {
            claimed: hdr.alternate,
            last,
        });
    } else if hdr.alternate == last {
        match copy(disk, last)? {
            Ok((_, ba)) if ba == array => {}
            Ok(_) => warnings.push(Warning::BackupEntriesDiffer),
            Err(e) => warnings.push(Warning::Backup(e)),
        }
    }
    let mut parts = Vec::new();
    let size = hdr.entry_size as usize;
    for (i, e) in array.chunks_exact(size).enumerate() {
        let number = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(1);
        let mut t = [0u8; 16];
        let mut u = [0u8; 16];
        if let (Some(tb), Some(ub)) = (e.get(0..16), e.get(16..32)) {
            t.copy_from_slice(tb);
            u.copy_from_slice(ub);
        }
        if t == [0; 16] {
            continue;
        }
        let (first, last_lba) = (le64(e, 32), le64(e, 40));
        if last_lba < first {
            warnings.push(Warning::EndsBeforeStart(number));
            continue;
        }
        let units: Vec<u16> = (0..36)
            .map(|k| le16(e, 56 + 2 * k))
            .take_while(|&c| c != 0)
            .collect();
        if first < hdr.first_usable || last_lba > hdr.last_usable {
            warnings.push(Warning::OutsideUsable(number));
        }
        parts.push(Partition {
            number,
            kind: PartType::Gpt(guid_from_disk(t)),
            start_lba: first,
            // last >= first, so this is at most 2^64 - 1 + 1 only when
            // first is 0 and last is u64::MAX: saturate.
            sectors: (last_lba - first).saturating_add(1),
            bootable: le64(e, 48) & (1 << 2) != 0,
            partuuid: guid_text(&guid_from_disk(u)),
            name: String::from_utf16_lossy(&units),
        });
    }
    check_extents(&parts, disk.sectors(), &mut warnings);
    Ok(Table {
        kind: TableKind::Gpt,
        sector_size: disk.sector_size,
        size_bytes: disk.len,
        disk_id: guid_text(&hdr.disk_guid),
        extended: None,
        partitions: parts,
        warnings,
    })
}
