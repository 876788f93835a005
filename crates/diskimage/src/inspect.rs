//! Reading a partition table back. Written from scratch rather than with
//! mbrman/gptman: an image handed to `inspect` may be anything, and those
//! crates trust header fields for allocation sizes and arithmetic. Here
//! every field is bounds-checked, allocations are capped, and the EBR
//! chain is walked with a step limit.

use crate::error::Error;
use crate::guid::Guid;
use crate::layout::{TableKind, SECTOR_SIZE};
use crate::report::{Extent, FsReport, ImageReport, PartitionReport};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const MAX_LOGICAL: usize = 128;
/// GPT entry arrays larger than this are refused (the standard one is 16 KiB).
const MAX_GPT_ARRAY: u64 = 1 << 20;

/// Reads the partition table (MBR, or GPT behind a protective MBR) of the
/// image at `path`, and the label of every FAT file system in it.
pub fn inspect(path: &Path) -> Result<ImageReport, Error> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    inspect_reader(&mut f, path)
}

/// As [`inspect`], on any seekable reader; `name` is used in messages.
pub fn inspect_reader<R: Read + Seek>(r: &mut R, name: &Path) -> Result<ImageReport, Error> {
    let mut img = Image { r, len: 0, name };
    img.len = img
        .r
        .seek(SeekFrom::End(0))
        .map_err(|e| Error::io(format!("reading {}", name.display()), e))?;
    let mbr = img
        .sector(0)?
        .ok_or_else(|| img.bad("shorter than one sector"))?;
    if mbr.get(510..512) != Some(&[0x55, 0xaa][..]) {
        return Err(img.bad("no partition table (sector 0 lacks the 55 AA signature)"));
    }
    let protective =
        (0..4).any(|i| MbrEntry::parse(&mbr, 446 + 16 * i).is_some_and(|e| e.sys == 0xee));
    if protective {
        read_gpt(&mut img)
    } else {
        read_mbr(&mut img, &mbr)
    }
}

struct Image<'a, R> {
    r: &'a mut R,
    len: u64,
    name: &'a Path,
}

impl<R: Read + Seek> Image<'_, R> {
    fn bad(&self, reason: impl Into<String>) -> Error {
        Error::BadImage {
            path: self.name.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// `n` bytes at `off`, or `None` if the file ends before that.
    fn bytes(&mut self, off: u64, n: u64) -> Result<Option<Vec<u8>>, Error> {
        match off.checked_add(n) {
            Some(end) if end <= self.len => {}
            _ => return Ok(None),
        }
        let mut buf = vec![0u8; n as usize];
        self.r
            .seek(SeekFrom::Start(off))
            .and_then(|_| self.r.read_exact(&mut buf))
            .map_err(|e| Error::io(format!("reading {}", self.name.display()), e))?;
        Ok(Some(buf))
    }

    fn sector(&mut self, lba: u64) -> Result<Option<Vec<u8>>, Error> {
        match lba.checked_mul(SECTOR_SIZE) {
            Some(off) => self.bytes(off, SECTOR_SIZE),
            None => Ok(None),
        }
    }

    fn sectors(&self) -> u64 {
        self.len / SECTOR_SIZE
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}
fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

#[derive(Debug, Clone, Copy)]
struct MbrEntry {
    boot: u8,
    sys: u8,
    start: u64,
    sectors: u64,
}

impl MbrEntry {
    /// `None` for an unused slot.
    fn parse(sector: &[u8], at: usize) -> Option<MbrEntry> {
        let e = sector.get(at..at + 16)?;
        let sys = e[4];
        if sys == 0 {
            return None;
        }
        Some(MbrEntry {
            boot: e[0],
            sys,
            start: u64::from(le32(e, 8)),
            sectors: u64::from(le32(e, 12)),
        })
    }
}

fn is_extended(sys: u8) -> bool {
    matches!(sys, 0x05 | 0x0f | 0x85)
}

fn read_mbr<R: Read + Seek>(img: &mut Image<R>, mbr: &[u8]) -> Result<ImageReport, Error> {
    let sig = le32(mbr, 440);
    let mut warnings = Vec::new();
    let mut found: Vec<(u32, MbrEntry)> = Vec::new();
    let mut extended = None;
    for i in 0..4 {
        let Some(e) = MbrEntry::parse(mbr, 446 + 16 * i) else {
            continue;
        };
        if is_extended(e.sys) {
            if extended.is_some() {
                return Err(img.bad("more than one extended partition"));
            }
            extended = Some(e);
        } else {
            found.push((i as u32 + 1, e));
        }
    }
    if let Some(ext) = extended {
        // Each EBR: entry 1 is the logical partition (start relative to
        // the EBR), entry 2 links to the next EBR (start relative to the
        // extended partition). Links must move strictly forward.
        let mut ebr = ext.start;
        let mut number = 5u32;
        for step in 0.. {
            if step >= MAX_LOGICAL {
                return Err(img.bad(format!("more than {MAX_LOGICAL} logical partitions")));
            }
            let Some(sector) = img.sector(ebr)? else {
                return Err(img.bad(format!("EBR at sector {ebr} is past the end of the image")));
            };
            if sector.get(510..512) != Some(&[0x55, 0xaa][..]) {
                if step == 0 {
                    break; // an empty extended partition needs no EBR
                }
                return Err(img.bad(format!("EBR at sector {ebr} lacks the 55 AA signature")));
            }
            if let Some(mut l) = MbrEntry::parse(&sector, 446) {
                l.start = l
                    .start
                    .checked_add(ebr)
                    .ok_or_else(|| img.bad("logical partition start overflows"))?;
                found.push((number, l));
                number += 1;
            }
            match MbrEntry::parse(&sector, 446 + 16) {
                Some(link) if link.sectors > 0 || link.start > 0 => {
                    let next = ext
                        .start
                        .checked_add(link.start)
                        .ok_or_else(|| img.bad("EBR link overflows"))?;
                    if next <= ebr || next >= ext.start + ext.sectors {
                        return Err(img.bad(format!(
                            "EBR at sector {ebr} links to sector {next}, outside the extended partition or backwards"
                        )));
                    }
                    ebr = next;
                }
                _ => break,
            }
        }
    }
    let disk_sectors = img.sectors();
    let parts = found
        .into_iter()
        .map(|(number, e)| {
            if e.boot != 0 && e.boot != 0x80 {
                warnings.push(format!(
                    "partition {number}: invalid boot flag 0x{:02x}",
                    e.boot
                ));
            }
            let mut p = PartitionReport {
                number,
                name: String::new(),
                start_lba: e.start,
                sectors: e.sectors,
                offset_bytes: e.start * SECTOR_SIZE,
                size_bytes: e.sectors * SECTOR_SIZE,
                type_id: format!("{:02x}", e.sys),
                bootable: e.boot == 0x80,
                partuuid: format!("{sig:08x}-{number:02x}"),
                filesystem: None,
                content_bytes: None,
            };
            p.filesystem = probe_fat(img, &p).ok().flatten();
            p
        })
        .collect::<Vec<_>>();
    check_extents(&parts, disk_sectors, &mut warnings);
    Ok(ImageReport {
        table: TableKind::Mbr,
        sector_size: SECTOR_SIZE,
        size_bytes: img.len,
        disk_id: format!("0x{sig:08x}"),
        extended: extended.map(|e| Extent {
            start_lba: e.start,
            sectors: e.sectors,
        }),
        partitions: parts,
        warnings,
    })
}

struct GptHeader {
    alternate: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries_lba: u64,
    count: u64,
    entry_size: u64,
    entries_crc: u32,
}

fn parse_gpt_header<R: Read + Seek>(
    img: &mut Image<R>,
    lba: u64,
) -> Result<Result<GptHeader, String>, Error> {
    let Some(s) = img.sector(lba)? else {
        return Ok(Err(format!("sector {lba} is past the end of the image")));
    };
    if s.get(0..8) != Some(&b"EFI PART"[..]) {
        return Ok(Err(format!("no GPT header signature at sector {lba}")));
    }
    let size = le32(&s, 12) as usize;
    if !(92..=s.len()).contains(&size) {
        return Ok(Err(format!("GPT header size {size} out of range")));
    }
    let mut h = s.get(..size).unwrap_or_default().to_vec();
    let stored = le32(&h, 16);
    if let Some(c) = h.get_mut(16..20) {
        c.fill(0);
    }
    if crc32fast::hash(&h) != stored {
        return Ok(Err(format!("GPT header at sector {lba} fails its CRC")));
    }
    if le64(&s, 24) != lba {
        return Ok(Err(format!(
            "GPT header at sector {lba} claims to be elsewhere"
        )));
    }
    let mut guid = [0u8; 16];
    guid.copy_from_slice(s.get(56..72).unwrap_or(&[0; 16]));
    let hdr = GptHeader {
        alternate: le64(&s, 32),
        first_usable: le64(&s, 40),
        last_usable: le64(&s, 48),
        disk_guid: Guid::from_disk(guid),
        entries_lba: le64(&s, 72),
        count: u64::from(le32(&s, 80)),
        entry_size: u64::from(le32(&s, 84)),
        entries_crc: le32(&s, 88),
    };
    if hdr.entry_size < 128 || !hdr.entry_size.is_multiple_of(8) || hdr.entry_size > 4096 {
        return Ok(Err(format!("GPT entry size {} invalid", hdr.entry_size)));
    }
    if hdr.count * hdr.entry_size > MAX_GPT_ARRAY {
        return Ok(Err(format!(
            "GPT entry array of {} entries is too large",
            hdr.count
        )));
    }
    Ok(Ok(hdr))
}

fn read_gpt_entries<R: Read + Seek>(
    img: &mut Image<R>,
    h: &GptHeader,
) -> Result<Result<Vec<u8>, String>, Error> {
    let len = h.count * h.entry_size;
    let Some(off) = h.entries_lba.checked_mul(SECTOR_SIZE) else {
        return Ok(Err("GPT entry array offset overflows".into()));
    };
    let Some(a) = img.bytes(off, len)? else {
        return Ok(Err("GPT entry array is past the end of the image".into()));
    };
    if crc32fast::hash(&a) != h.entries_crc {
        return Ok(Err("GPT entry array fails its CRC".into()));
    }
    Ok(Ok(a))
}

fn read_gpt<R: Read + Seek>(img: &mut Image<R>) -> Result<ImageReport, Error> {
    let mut warnings = Vec::new();
    let last = img.sectors().saturating_sub(1);
    let (hdr, array) = match parse_gpt_header(img, 1)? {
        Ok(h) => match read_gpt_entries(img, &h)? {
            Ok(a) => (h, a),
            Err(e) => return Err(img.bad(e)),
        },
        Err(e) => {
            // Like the kernel, fall back to the backup at the last sector.
            let h =
                parse_gpt_header(img, last)?.map_err(|e2| img.bad(format!("{e}; backup: {e2}")))?;
            let a =
                read_gpt_entries(img, &h)?.map_err(|e2| img.bad(format!("{e}; backup: {e2}")))?;
            warnings.push(format!("primary GPT unusable ({e}); read the backup"));
            (h, a)
        }
    };
    if hdr.alternate != last && hdr.alternate != 1 {
        warnings.push(format!(
            "GPT says its other copy is at sector {}, but the image's last sector is {last}",
            hdr.alternate
        ));
    } else if hdr.alternate == last {
        match parse_gpt_header(img, last)? {
            Ok(b) => match read_gpt_entries(img, &b)? {
                Ok(ba) if ba == array => {}
                Ok(_) => warnings.push("backup GPT entries differ from the primary".into()),
                Err(e) => warnings.push(format!("backup GPT: {e}")),
            },
            Err(e) => warnings.push(format!("backup GPT: {e}")),
        }
    }
    let mut parts = Vec::new();
    for i in 0..hdr.count {
        let at = (i * hdr.entry_size) as usize;
        let Some(e) = array.get(at..at + 128) else {
            break;
        };
        let mut t = [0u8; 16];
        t.copy_from_slice(&e[0..16]);
        if t == [0; 16] {
            continue;
        }
        let mut u = [0u8; 16];
        u.copy_from_slice(&e[16..32]);
        let first = le64(e, 32);
        let last_lba = le64(e, 40);
        if last_lba < first {
            warnings.push(format!("partition {}: ends before it starts", i + 1));
            continue;
        }
        let units: Vec<u16> = (0..36)
            .map(|k| le16(e, 56 + 2 * k))
            .take_while(|&c| c != 0)
            .collect();
        let sectors = last_lba - first + 1;
        let mut p = PartitionReport {
            number: i as u32 + 1,
            name: String::from_utf16_lossy(&units),
            start_lba: first,
            sectors,
            offset_bytes: first.saturating_mul(SECTOR_SIZE),
            size_bytes: sectors.saturating_mul(SECTOR_SIZE),
            type_id: Guid::from_disk(t).to_string(),
            bootable: le64(e, 48) & (1 << 2) != 0,
            partuuid: Guid::from_disk(u).to_string(),
            filesystem: None,
            content_bytes: None,
        };
        p.filesystem = probe_fat(img, &p).ok().flatten();
        if first < hdr.first_usable || last_lba > hdr.last_usable {
            warnings.push(format!("partition {}: outside the usable area", p.number));
        }
        parts.push(p);
    }
    check_extents(&parts, img.sectors(), &mut warnings);
    Ok(ImageReport {
        table: TableKind::Gpt,
        sector_size: SECTOR_SIZE,
        size_bytes: img.len,
        disk_id: hdr.disk_guid.to_string(),
        extended: None,
        partitions: parts,
        warnings,
    })
}

fn check_extents(parts: &[PartitionReport], disk_sectors: u64, warnings: &mut Vec<String>) {
    let mut sorted: Vec<&PartitionReport> = parts.iter().collect();
    sorted.sort_by_key(|p| p.start_lba);
    for p in &sorted {
        if p.start_lba.saturating_add(p.sectors) > disk_sectors {
            warnings.push(format!(
                "partition {}: extends past the end of the image",
                p.number
            ));
        }
    }
    for w in sorted.windows(2) {
        if let [a, b] = w {
            if a.start_lba.saturating_add(a.sectors) > b.start_lba {
                warnings.push(format!("partitions {} and {} overlap", a.number, b.number));
            }
        }
    }
}

/// The FAT boot sector's label and volume ID, if the partition holds one.
fn probe_fat<R: Read + Seek>(
    img: &mut Image<R>,
    p: &PartitionReport,
) -> Result<Option<FsReport>, Error> {
    let Some(bs) = img.sector(p.start_lba)? else {
        return Ok(None);
    };
    if bs.get(510..512) != Some(&[0x55, 0xaa][..]) {
        return Ok(None);
    }
    let bps = le16(&bs, 11);
    let spc = bs.get(13).copied().unwrap_or(0);
    if !(bps.is_power_of_two() && (512..=4096).contains(&bps) && spc.is_power_of_two()) {
        return Ok(None);
    }
    let (kind, id_at, label_at) = match (bs.get(54..62), bs.get(82..90)) {
        (_, Some(b"FAT32   ")) => ("fat32", 67, 71),
        (Some(b"FAT16   "), _) => ("fat16", 39, 43),
        (Some(b"FAT12   "), _) => ("fat12", 39, 43),
        _ => return Ok(None),
    };
    let label = bs
        .get(label_at..label_at + 11)
        .map(|l| String::from_utf8_lossy(l).trim_end().to_string())
        .unwrap_or_default();
    let id = le32(&bs, id_at);
    Ok(Some(FsReport {
        kind: kind.into(),
        label: if label == "NO NAME" {
            String::new()
        } else {
            label
        },
        volume_id: crate::fat::format_volume_id(id),
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
        // Deterministic pseudo-random sectors with a valid signature and a
        // protective or extended entry: errors or reports, never panics.
        let mut x = 0x1234_5678u32;
        for round in 0..2000 {
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
            for s in 1..8 {
                b[s * 512 + 510] = 0x55;
                b[s * 512 + 511] = 0xaa;
            }
            let _ = inspect_bytes(b);
        }
    }
}
