//! Finding block devices without blkid: walk /sys/class/block, read
//! partition tables (GPT, MBR with logical partitions) for PARTUUID and
//! PARTLABEL, and filesystem superblocks (ext2/3/4, FAT) for LABEL. The
//! parsing is the `parttable` crate's, the same `fwpack disk --inspect`
//! uses; a disk it refuses is simply not a match.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::config::DeviceSpec;

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

/// The partitions of the disk at `node`, `None` if it has no readable table.
fn partitions(node: &Path, sector: u64) -> Option<Vec<parttable::Partition>> {
    let mut f = File::open(node).ok()?;
    parttable::read(&mut f, sector).ok().map(|t| t.partitions)
}

/// The filesystem label at the start of `node`, if it has one.
fn fs_label(node: &Path) -> Option<String> {
    let mut head = Vec::with_capacity(parttable::fs::PROBE_BYTES);
    File::open(node)
        .ok()?
        .take(parttable::fs::PROBE_BYTES as u64)
        .read_to_end(&mut head)
        .ok()?;
    parttable::fs::probe(&head)
        .map(|f| f.label)
        .filter(|l| !l.is_empty())
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
                let Some(parts) = partitions(&disk.node(), logical_sector(&disk.name)) else {
                    continue;
                };
                let hit = parts.iter().find(|p| {
                    if by_uuid {
                        p.partuuid.eq_ignore_ascii_case(want)
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
        DeviceSpec::Label(want) => block_devices()
            .iter()
            .map(BlockDev::node)
            .find(|n| fs_label(n).as_deref() == Some(want.as_str())),
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
