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

/// The PARTUUID of the partition of `disk` covering exactly bytes
/// `offset..offset+size`, from its partition table: what a kexec'd slot
/// kernel gets as `root=PARTUUID=…` (kernel device names may differ
/// between the bootstrap kernel and the slot's).
pub fn partuuid_for_range(disk: &Path, offset: u64, size: u64) -> Option<String> {
    let sector = logical_sector(disk.file_name()?.to_str()?);
    partitions(disk, sector)?
        .into_iter()
        .find(|p| {
            p.start_lba.checked_mul(sector) == Some(offset)
                && p.sectors.checked_mul(sector) == Some(size)
        })
        .map(|p| p.partuuid)
        .filter(|u| !u.is_empty())
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
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// A loop device with a partition table (`losetup -P`), as root.
    struct Loop(String);
    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = Command::new(testkit::tools::find("losetup").unwrap())
                .args(["-d", &self.0])
                .status();
        }
    }

    fn attach(img: &Path) -> Option<Loop> {
        let out = Command::new(testkit::tools::find("losetup")?)
            .args(["-f", "-P", "--show"])
            .arg(img)
            .output()
            .ok()?;
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !dev.is_empty()).then_some(Loop(dev))
    }

    /// Whether the kernel made partition `node` (devtmpfs; udev may not
    /// run here). Some kernels and containers do not scan loop devices.
    fn appears(node: &Path) -> bool {
        for _ in 0..50 {
            if node.exists() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!(
            "SKIPPED: the kernel made no partition devices for the loop device (no {})",
            node.display()
        );
        false
    }

    fn table(img: &Path, script: &str) {
        File::create(img).unwrap().set_len(16 << 20).unwrap();
        let mut c = Command::new(testkit::tools::find("sfdisk").unwrap())
            .arg("-q")
            .arg(img)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(c.wait().unwrap().success());
    }

    /// The kernel's partitions of a real (loop) disk are found by the
    /// PARTUUID and PARTLABEL parttable reads, including an MBR logical
    /// partition, and by the filesystem LABEL. Needs root and loop devices
    /// (CI runs as root); skips otherwise.
    #[test]
    fn resolves_specs_on_a_partitioned_loop_device() {
        if !rustix::process::geteuid().is_root()
            || !Path::new("/dev/loop-control").exists()
            || !["losetup", "sfdisk", "mkfs.ext4"]
                .iter()
                .all(|t| testkit::tools::require(t))
        {
            eprintln!("SKIPPED: needs root and /dev/loop-control");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tag = std::process::id() % 0xffff;

        let mbr = dir.path().join("mbr.img");
        let sig = format!("5eed{tag:04x}");
        table(
            &mbr,
            &format!(
                "label: dos\nlabel-id: 0x{sig}\nstart=2048, size=4096, type=83\n\
                 start=8192, size=20480, type=5\nstart=10240, size=4096, type=83\n"
            ),
        );
        let Some(lo) = attach(&mbr) else {
            eprintln!("SKIPPED: losetup could not attach a loop device here");
            return;
        };
        let want5 = PathBuf::from(format!("{}p5", lo.0));
        if !appears(&want5) {
            return;
        }
        let got = resolve(&DeviceSpec::PartUuid(format!("{sig}-05")));
        assert_eq!(got, Some(want5.clone()), "logical partition by PARTUUID");
        let got = resolve(&DeviceSpec::PartUuid(format!("{sig}-01")));
        assert_eq!(got, Some(PathBuf::from(format!("{}p1", lo.0))));
        assert!(Command::new(testkit::tools::find("mkfs.ext4").unwrap())
            .args(["-q", "-F", "-L", &format!("fwpk-l{tag:04x}")])
            .arg(&want5)
            .status()
            .unwrap()
            .success());
        let got = resolve(&DeviceSpec::Label(format!("fwpk-l{tag:04x}")));
        assert_eq!(got, Some(want5), "filesystem label");
        drop(lo);

        let gpt = dir.path().join("gpt.img");
        let uuid = format!("0fc63daf-8483-4772-8e79-3d69d847{tag:04x}");
        table(
            &gpt,
            &format!(
                "label: gpt\nstart=2048, size=4096, name=one\n\
                 start=6144, size=4096, name=fwpk-{tag:04x}, uuid={uuid}\n"
            ),
        );
        let Some(lo) = attach(&gpt) else {
            return;
        };
        let want2 = PathBuf::from(format!("{}p2", lo.0));
        if !appears(&want2) {
            return;
        }
        assert_eq!(
            resolve(&DeviceSpec::PartUuid(uuid.to_ascii_lowercase())),
            Some(want2.clone())
        );
        assert_eq!(
            resolve(&DeviceSpec::PartLabel(format!("fwpk-{tag:04x}"))),
            Some(want2)
        );
    }
}
