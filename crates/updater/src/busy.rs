//! Is a block device in use? Mounted (by device number, from
//! /proc/self/mountinfo, never by name), held by another block device
//! (`holders/` in sysfs: device-mapper, md, …), active swap, or opened
//! exclusively by someone else.
//!
//! Partitions count only where they overlap the byte ranges an apply will
//! write: a running system updating its own disk has its active root
//! partition mounted, and that must not stop it writing the other slot.

use std::fs;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::storage::BusyCheck;

/// A device number as `(major, minor)`.
pub type DevNum = (u32, u32);

pub fn dev_num(rdev: u64) -> DevNum {
    (rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

/// One mount from mountinfo: the device number it reports, its source
/// (e.g. `/dev/sda2`) and where it is mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub dev: DevNum,
    pub source: String,
    pub mount_point: String,
}

/// Parses /proc/self/mountinfo. Malformed lines are skipped: a line we
/// cannot read cannot name our device either.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mount_line).collect()
}

fn parse_mount_line(line: &str) -> Option<Mount> {
    // id parent maj:min root mount-point options [optional...] - fstype source super-options
    let (pre, post) = line.split_once(" - ")?;
    let mut f = pre.split(' ');
    let _id = f.next()?;
    let _parent = f.next()?;
    let (maj, min) = f.next()?.split_once(':')?;
    let _root = f.next()?;
    let mount_point = unescape(f.next()?);
    let mut p = post.split(' ');
    let _fstype = p.next()?;
    let source = unescape(p.next().unwrap_or(""));
    Some(Mount {
        dev: (maj.parse().ok()?, min.parse().ok()?),
        source,
        mount_point,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A block device and how it is used.
#[derive(Clone, Debug)]
struct Node {
    name: String,
    dev: DevNum,
    /// Byte range within the target (partitions), `None` for the target.
    range: Option<Range<u64>>,
    uses: Vec<String>,
}

/// Checks the device `rdev` and its partitions. `exclusive_failed`: our
/// `O_EXCL` open was refused with EBUSY.
pub fn check(rdev: u64, ranges: &[Range<u64>], exclusive_failed: bool) -> io::Result<BusyCheck> {
    let dev = dev_num(rdev);
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default();
    let swaps = read_swaps();
    let sys = PathBuf::from(format!("/sys/dev/block/{}:{}", dev.0, dev.1));
    let mut nodes = vec![Node {
        name: sys_name(&sys).unwrap_or_else(|| format!("{}:{}", dev.0, dev.1)),
        dev,
        range: None,
        uses: Vec::new(),
    }];
    let mut out = BusyCheck::default();
    if sys.exists() {
        nodes.extend(partitions(&sys));
    } else {
        out.notes.push(format!(
            "{} has no sysfs entry; partitions and holders not checked",
            sys.display()
        ));
    }
    for n in &mut nodes {
        for m in &mounts {
            if m.dev == n.dev || source_is(&m.source, n.dev) {
                n.uses.push(format!("mounted at {}", m.mount_point));
            }
        }
        if swaps.contains(&n.dev) {
            n.uses.push("in use as swap".into());
        }
        let holders = list_dir(&node_dir(&sys, n).join("holders"));
        if !holders.is_empty() {
            n.uses.push(format!("held by {}", holders.join(", ")));
        }
    }
    let mut any_use = false;
    for n in &nodes {
        if n.uses.is_empty() {
            continue;
        }
        any_use = true;
        let uses = n.uses.join(", ");
        match &n.range {
            None => out.reasons.push(format!("{} is {uses}", n.name)),
            Some(r) if ranges.iter().any(|w| w.start < r.end && r.start < w.end) => {
                out.reasons.push(format!(
                    "partition {} (bytes {}..{}) is {uses} and overlaps what would be written",
                    n.name, r.start, r.end
                ))
            }
            Some(r) => out.notes.push(format!(
                "partition {} (bytes {}..{}) is {uses}, outside the ranges being written",
                n.name, r.start, r.end
            )),
        }
    }
    if exclusive_failed {
        if any_use {
            out.notes
                .push("exclusive open refused (EBUSY) because of the partition(s) in use".into());
        } else {
            out.reasons
                .push("opened exclusively by another process (O_EXCL open: EBUSY)".into());
        }
    }
    Ok(out)
}

/// btrfs and some others report an anonymous device number in mountinfo;
/// their source path still names the real device.
fn source_is(source: &str, dev: DevNum) -> bool {
    if !source.starts_with("/dev/") {
        return false;
    }
    match fs::metadata(source) {
        Ok(m) if m.file_type().is_block_device() => dev_num(m.rdev()) == dev,
        _ => false,
    }
}

fn read_swaps() -> Vec<DevNum> {
    let Ok(text) = fs::read_to_string("/proc/swaps") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| fs::metadata(unescape(p)).ok())
        .filter(|m| m.file_type().is_block_device())
        .map(|m| dev_num(m.rdev()))
        .collect()
}

fn sys_name(sys: &Path) -> Option<String> {
    fs::canonicalize(sys)
        .ok()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

fn node_dir(sys: &Path, n: &Node) -> PathBuf {
    if n.range.is_some() {
        sys.join(&n.name)
    } else {
        sys.to_path_buf()
    }
}

fn list_dir(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// Partitions of the whole disk at `sys`: subdirectories with a
/// `partition` file; `start` and `size` are in 512-byte sectors whatever
/// the device's sector size.
fn partitions(sys: &Path) -> Vec<Node> {
    let mut out = Vec::new();
    for name in list_dir(sys) {
        let d = sys.join(&name);
        if !d.join("partition").exists() {
            continue;
        }
        let dev = read_trim(&d.join("dev")).and_then(|s| {
            let (a, b) = s.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        });
        let sectors = |f: &str| read_trim(&d.join(f)).and_then(|s| s.parse::<u64>().ok());
        let (Some(dev), Some(start), Some(size)) = (dev, sectors("start"), sectors("size")) else {
            continue;
        };
        let start = start.saturating_mul(512);
        out.push(Node {
            name,
            dev,
            range: Some(start..start.saturating_add(size.saturating_mul(512))),
            uses: Vec::new(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let text = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/mapper/root rw
36 22 7:0 / /mnt/with\\040space rw - ext4 /dev/loop0 rw,errors=remount-ro
37 22 259:3 /sub /srv/x rw shared:5 master:2 - btrfs /dev/nvme0n1p3 rw
garbage line
38 22 x:y / /bad rw - ext4 /dev/sdz rw
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].dev, (253, 1));
        assert_eq!(m[1].mount_point, "/mnt/with space");
        assert_eq!(m[1].source, "/dev/loop0");
        assert_eq!(m[2].dev, (259, 3));
        assert_eq!(m[2].mount_point, "/srv/x");
    }

    #[test]
    fn unescape_keeps_odd_backslashes() {
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("a\\9"), "a\\9");
        assert_eq!(unescape("end\\"), "end\\");
    }

    #[test]
    fn parses_this_machines_mountinfo() {
        // Whatever the machine, the root mount must be found.
        if let Ok(t) = fs::read_to_string("/proc/self/mountinfo") {
            assert!(parse_mountinfo(&t).iter().any(|m| m.mount_point == "/"));
        }
    }
}
