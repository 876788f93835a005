//! Finding block devices without blkid: walk /sys/class/block, read
//! partition tables (GPT, MBR primary partitions) for PARTUUID and
//! PARTLABEL, and filesystem superblocks (ext2/3/4, FAT) for LABEL.
//! Parsers are total over any bytes: short or foreign data gives `None`.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::config::DeviceSpec;

/// One partition as a partition table describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// 1-based, as the kernel numbers it (`/sys/class/block/*/partition`).
    pub number: u32,
    /// Lower-case: a GUID for GPT, `dddddddd-nn` for MBR.
    pub uuid: String,
    /// GPT partition name (empty for MBR).
    pub name: String,
    pub start_lba: u64,
    pub sectors: u64,
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// CRC-32 (IEEE, reflected), as GPT uses; bitwise, since it runs on a
/// few KiB once per boot.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (0u32.wrapping_sub(crc & 1)));
        }
    }
    !crc
}

/// Mixed-endian GUID text (the first three fields are little-endian).
fn guid_text(g: &[u8]) -> Option<String> {
    let g: &[u8; 16] = g.try_into().ok()?;
    Some(format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        g[8],
        g[9],
        g[10],
        g[11],
        g[12],
        g[13],
        g[14],
        g[15]
    ))
}

/// Reads the partition table of a disk through `read(offset, len)`.
/// GPT when the MBR is protective (type 0xEE) and the primary header's
/// CRC holds; else the MBR's primary partitions.
pub fn partitions(
    read: &mut dyn FnMut(u64, usize) -> Option<Vec<u8>>,
    sector: u64,
) -> Option<Vec<Part>> {
    let mbr = read(0, 512)?;
    if mbr.get(510..512)? != [0x55, 0xAA] {
        return None;
    }
    let entry = |i: usize| mbr.get(446 + 16 * i..446 + 16 * (i + 1));
    if (0..4).any(|i| entry(i).and_then(|e| e.get(4)) == Some(&0xEE)) {
        return gpt(read, sector);
    }
    let sig = le32(&mbr, 440)?;
    let mut out = Vec::new();
    for i in 0..4 {
        let e = entry(i)?;
        let kind = *e.get(4)?;
        let (start, count) = (le32(e, 8)?, le32(e, 12)?);
        // Empty slots and extended containers are not filesystems.
        if kind == 0 || count == 0 || matches!(kind, 0x05 | 0x0f | 0x85) {
            continue;
        }
        out.push(Part {
            number: i as u32 + 1,
            uuid: format!("{sig:08x}-{:02x}", i + 1),
            name: String::new(),
            start_lba: u64::from(start),
            sectors: u64::from(count),
        });
    }
    Some(out)
}

fn gpt(read: &mut dyn FnMut(u64, usize) -> Option<Vec<u8>>, sector: u64) -> Option<Vec<Part>> {
    let hdr = read(sector, sector as usize)?;
    if hdr.get(0..8)? != b"EFI PART" {
        return None;
    }
    let hdr_len = le32(&hdr, 12)? as usize;
    if !(92..=hdr.len()).contains(&hdr_len) {
        return None;
    }
    let mut h = hdr.get(..hdr_len)?.to_vec();
    h.get_mut(16..20)?.fill(0);
    if crc32(&h) != le32(&hdr, 16)? {
        return None;
    }
    let (entries_lba, count, size) = (
        le64(&hdr, 72)?,
        le32(&hdr, 80)? as usize,
        le32(&hdr, 84)? as usize,
    );
    if !(128..=4096).contains(&size) || count > 1024 {
        return None;
    }
    let table = read(entries_lba.checked_mul(sector)?, count.checked_mul(size)?)?;
    if crc32(&table) != le32(&hdr, 88)? {
        return None;
    }
    let mut out = Vec::new();
    for i in 0..count {
        let e = table.get(i * size..(i + 1) * size)?;
        if e.get(0..16)?.iter().all(|&b| b == 0) {
            continue;
        }
        let (first, last) = (le64(e, 32)?, le64(e, 40)?);
        let name: Vec<u16> = e
            .get(56..128)?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        out.push(Part {
            number: i as u32 + 1,
            uuid: guid_text(e.get(16..32)?)?,
            name: String::from_utf16_lossy(&name),
            start_lba: first,
            sectors: last.checked_sub(first)?.checked_add(1)?,
        });
    }
    Some(out)
}

/// The filesystem label in the first 2 KiB of a device, if it has one.
pub fn fs_label(head: &[u8]) -> Option<String> {
    let text = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        let s = String::from_utf8_lossy(&b[..end]).trim_end().to_string();
        (!s.is_empty()).then_some(s)
    };
    // ext2/3/4: superblock at 1024, magic 0xEF53 at +56, name at +120.
    if le16(head, 1024 + 56) == Some(0xEF53) {
        return text(head.get(1024 + 120..1024 + 136)?);
    }
    // FAT: boot signature, then the extended BPB of FAT32 or FAT12/16.
    if head.get(510..512)? == [0x55, 0xAA] && matches!(head.first()?, 0xEB | 0xE9) {
        let fat32 = le16(head, 22)? == 0;
        let (sig_at, label_at) = if fat32 { (0x42, 0x47) } else { (0x26, 0x2B) };
        if *head.get(sig_at)? == 0x29 {
            return text(head.get(label_at..label_at + 11)?).filter(|l| l != "NO NAME");
        }
    }
    None
}

/// A block device as sysfs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDev {
    pub name: String,
    /// `Some(n)` for partition `n` of `parent`.
    pub partition: Option<u32>,
    pub parent: Option<String>,
}

impl BlockDev {
    pub fn node(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Every block device in /sys/class/block.
pub fn block_devices() -> Vec<BlockDev> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/sys/class/block") else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dir = e.path();
        let partition = read_trim(&dir.join("partition")).and_then(|s| s.parse().ok());
        // A partition's sysfs directory sits inside its disk's.
        let parent = partition.and(std::fs::canonicalize(&dir).ok().and_then(|p| {
            p.parent()
                .and_then(|q| q.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        }));
        out.push(BlockDev {
            name,
            partition,
            parent,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn reader(node: &Path) -> Option<impl FnMut(u64, usize) -> Option<Vec<u8>>> {
    let f = File::open(node).ok()?;
    Some(move |off: u64, len: usize| {
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, off).ok().map(|_| b)
    })
}

fn logical_sector(disk: &str) -> u64 {
    read_trim(
        &Path::new("/sys/class/block")
            .join(disk)
            .join("queue/logical_block_size"),
    )
    .and_then(|s| s.parse().ok())
    .filter(|&s: &u64| s.is_power_of_two() && (512..=4096).contains(&s))
    .unwrap_or(512)
}

/// Resolves a device spec against the devices present now. `Ok(None)`:
/// not (yet) there.
pub fn resolve(spec: &DeviceSpec) -> Option<PathBuf> {
    match spec {
        DeviceSpec::Path(p) => {
            let name = p.strip_prefix("/dev").ok()?;
            // A whole disk or partition the kernel knows about, with its node.
            let known = Path::new("/sys/class/block").join(name).exists();
            (known && p.exists()).then(|| p.clone())
        }
        DeviceSpec::PartUuid(want) | DeviceSpec::PartLabel(want) => {
            let by_uuid = matches!(spec, DeviceSpec::PartUuid(_));
            let devs = block_devices();
            for disk in devs.iter().filter(|d| d.partition.is_none()) {
                let Some(mut read) = reader(&disk.node()) else {
                    continue;
                };
                let Some(parts) = partitions(&mut read, logical_sector(&disk.name)) else {
                    continue;
                };
                let hit = parts.iter().find(|p| {
                    if by_uuid {
                        p.uuid.eq_ignore_ascii_case(want)
                    } else {
                        &p.name == want
                    }
                });
                if let Some(p) = hit {
                    return devs
                        .iter()
                        .find(|d| {
                            d.parent.as_deref() == Some(&disk.name) && d.partition == Some(p.number)
                        })
                        .map(BlockDev::node)
                        .filter(|n| n.exists());
                }
            }
            None
        }
        DeviceSpec::Label(want) => block_devices().iter().find_map(|d| {
            let mut head = vec![0u8; 2048];
            let mut f = File::open(d.node()).ok()?;
            f.read_exact(&mut head).ok()?;
            (fs_label(&head).as_deref() == Some(want.as_str())).then(|| d.node())
        }),
    }
}

/// The partition of `disk` covering exactly bytes `offset..offset+size`.
pub fn partition_for_range(disk: &Path, offset: u64, size: u64) -> Option<PathBuf> {
    let disk_name = disk.file_name()?.to_str()?;
    let dir = Path::new("/sys/class/block").join(disk_name);
    for e in std::fs::read_dir(&dir).ok()?.flatten() {
        let p = e.path();
        let (Some(start), Some(len)) = (read_trim(&p.join("start")), read_trim(&p.join("size")))
        else {
            continue;
        };
        // sysfs counts in 512-byte units whatever the sector size.
        let (Ok(start), Ok(len)) = (start.parse::<u64>(), len.parse::<u64>()) else {
            continue;
        };
        if start.checked_mul(512) == Some(offset) && len.checked_mul(512) == Some(size) {
            let node = Path::new("/dev").join(e.file_name());
            if node.exists() {
                return Some(node);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn tool(name: &str) -> bool {
        let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(name).exists());
        if !found {
            eprintln!("SKIPPED: {name} is not installed (`cargo xtask deps` installs it)");
        }
        found
    }

    fn mem_reader(img: Vec<u8>) -> impl FnMut(u64, usize) -> Option<Vec<u8>> {
        move |off, len| {
            let s = usize::try_from(off).ok()?;
            img.get(s..s.checked_add(len)?).map(<[u8]>::to_vec)
        }
    }

    fn sfdisk(img: &Path, script: &str) {
        let mut c = Command::new("sfdisk")
            .arg("-q")
            .arg(img)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(c.wait().unwrap().success());
    }

    #[test]
    fn gpt_matches_sfdisk() {
        if !tool("sfdisk") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("gpt.img");
        File::create(&img).unwrap().set_len(8 << 20).unwrap();
        sfdisk(
            &img,
            "label: gpt\n\
             start=2048, size=4096, name=bootA, uuid=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n\
             start=6144, size=4096, name=\"root B\", uuid=A2A0D0EB-E5B9-3344-87C0-68B6B72699C7\n",
        );
        let mut read = mem_reader(std::fs::read(&img).unwrap());
        let parts = partitions(&mut read, 512).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].uuid, "0fc63daf-8483-4772-8e79-3d69d8477de4");
        assert_eq!(
            (parts[0].name.as_str(), parts[0].start_lba, parts[0].sectors),
            ("bootA", 2048, 4096)
        );
        assert_eq!((parts[1].number, parts[1].name.as_str()), (2, "root B"));
        // Cross-check against sfdisk's own reading of the table.
        let dump = String::from_utf8(
            Command::new("sfdisk")
                .arg("-d")
                .arg(&img)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        for p in &parts {
            assert!(
                dump.to_lowercase().contains(&format!("uuid={}", p.uuid)),
                "{dump}"
            );
        }
        // A damaged header CRC means "no GPT", never a guess.
        let mut bytes = std::fs::read(&img).unwrap();
        bytes[512 + 40] ^= 1;
        assert_eq!(partitions(&mut mem_reader(bytes), 512), None);
    }

    #[test]
    fn mbr_partuuid_is_signature_and_number() {
        if !tool("sfdisk") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("mbr.img");
        File::create(&img).unwrap().set_len(8 << 20).unwrap();
        sfdisk(&img, "label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=2048, type=c\nstart=4096, size=4096, type=83\n");
        let parts = partitions(&mut mem_reader(std::fs::read(&img).unwrap()), 512).unwrap();
        assert_eq!(
            parts
                .iter()
                .map(|p| (p.number, p.uuid.as_str(), p.start_lba))
                .collect::<Vec<_>>(),
            vec![(1, "1234abcd-01", 2048), (2, "1234abcd-02", 4096)]
        );
    }

    #[test]
    fn labels_from_mkfs() {
        let dir = tempfile::tempdir().unwrap();
        if tool("mkfs.ext4") {
            let img = dir.path().join("ext4.img");
            File::create(&img).unwrap().set_len(4 << 20).unwrap();
            assert!(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", "rootfs-a"])
                .arg(&img)
                .status()
                .unwrap()
                .success());
            let head = std::fs::read(&img).unwrap();
            assert_eq!(fs_label(&head[..2048]).as_deref(), Some("rootfs-a"));
        }
        if tool("mkfs.vfat") {
            for (bits, label) in [("16", "BOOTA"), ("32", "AUTOBOOT")] {
                let img = dir.path().join(format!("fat{bits}.img"));
                File::create(&img).unwrap().set_len(40 << 20).unwrap();
                let ok = Command::new("mkfs.vfat")
                    .args(["-F", bits, "-n", label])
                    .arg(&img)
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(ok.success());
                let head = std::fs::read(&img).unwrap();
                assert_eq!(fs_label(&head[..2048]).as_deref(), Some(label), "FAT{bits}");
            }
        }
        assert_eq!(fs_label(&[0u8; 2048]), None);
        assert_eq!(fs_label(&[0u8; 10]), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200 {
            let mut img = vec![0u8; 64 * 1024];
            for b in img.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            img[510] = 0x55;
            img[511] = 0xAA;
            img[446 + 4] = if x & 1 == 0 { 0xEE } else { 0x83 };
            img[512..520].copy_from_slice(b"EFI PART");
            let _ = partitions(&mut mem_reader(img.clone()), 512);
            let _ = fs_label(&img);
        }
    }

    #[test]
    fn guid_format() {
        let g = [
            0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47,
            0x7D, 0xE4,
        ];
        assert_eq!(
            guid_text(&g).unwrap(),
            "0fc63daf-8483-4772-8e79-3d69d8477de4"
        );
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
