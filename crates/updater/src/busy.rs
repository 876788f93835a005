//! Is a block device in use? Mounted (by device number, from
//! /proc/self/mountinfo, never by name), held by another block device
//! (`holders/` in sysfs: device-mapper, md, …), active swap, opened
//! exclusively by someone else, or the backing store of a loop device
//! (`/sys/block/loopN/loop/backing_file` + `offset`, over the target or
//! one of its partitions: a loop device does not show up in `holders/`,
//! and a root mounted through one would otherwise look unused).
//!
//! Also the boot record the PID-1 updater leaves for the booted system
//! ([`read_boot_record`]): which slot of which disk is running.
//!
//! Partitions count only where they overlap the byte ranges an apply will
//! write: a running system updating its own disk has its active root
//! partition mounted, and that must not stop it writing the other slot.

use std::fs;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::layout::Slot;
use crate::running::BootedSlot;
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
    let mut any_use = false;
    if sys.exists() {
        nodes.extend(partitions(&sys));
        let loops = loops_backed_by(Path::new("/sys/block"), |m| {
            if !m.file_type().is_block_device() {
                return None;
            }
            let d = dev_num(m.rdev());
            // The target itself, or one of its partitions (offsets are
            // then relative to the partition's start).
            nodes
                .iter()
                .find(|n| n.dev == d)
                .map(|n| n.range.as_ref().map_or(0, |r| r.start))
        });
        any_use |= !loops.is_empty();
        loop_uses(&loops, ranges, &mut out);
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
            out.notes.push(
                "exclusive open refused (EBUSY) because of the partition(s) or loop device(s) in use"
                    .into(),
            );
        } else {
            out.reasons
                .push("opened exclusively by another process (O_EXCL open: EBUSY)".into());
        }
    }
    Ok(out)
}

/// A regular file used as a disk: only loop devices over it can be
/// told (a file has no partitions, mounts or holders of its own).
pub fn check_file(dev: u64, ino: u64, ranges: &[Range<u64>]) -> io::Result<BusyCheck> {
    let loops = loops_backed_by(Path::new("/sys/block"), |m| {
        (m.file_type().is_file() && m.dev() == dev && m.ino() == ino).then_some(0)
    });
    let mut out = BusyCheck::default();
    loop_uses(&loops, ranges, &mut out);
    Ok(out)
}

/// A loop device whose backing store is (part of) the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopUse {
    pub name: String,
    pub backing: String,
    /// Bytes of the target it maps.
    pub range: Range<u64>,
}

/// Loop devices under `sys_block` (normally /sys/block) whose backing
/// file `base_of` recognises: it returns the target offset at which that
/// backing file starts (0 for the target itself, a partition's start).
/// A loop device's range is `loop/offset` .. + its `size` (sectors of
/// 512 bytes, already limited by `sizelimit`).
pub fn loops_backed_by(
    sys_block: &Path,
    base_of: impl Fn(&fs::Metadata) -> Option<u64>,
) -> Vec<LoopUse> {
    let mut out = Vec::new();
    for name in list_dir(sys_block) {
        if !name.starts_with("loop") {
            continue;
        }
        let d = sys_block.join(&name);
        // Unbound loop devices have no backing_file.
        let Some(backing) = read_trim(&d.join("loop/backing_file")) else {
            continue;
        };
        // A deleted backing file cannot be the target we just opened.
        if backing.ends_with("(deleted)") {
            continue;
        }
        let Some(base) = fs::metadata(&backing).ok().as_ref().and_then(&base_of) else {
            continue;
        };
        let num = |f: &str| read_trim(&d.join(f)).and_then(|s| s.parse::<u64>().ok());
        let (Some(offset), Some(sectors)) = (num("loop/offset"), num("size")) else {
            continue;
        };
        let start = base.saturating_add(offset);
        out.push(LoopUse {
            name,
            backing,
            range: start..start.saturating_add(sectors.saturating_mul(512)),
        });
    }
    out
}

/// A loop device over written bytes is a reason to refuse (whatever maps
/// it, mounted or not, would see the slot change under it); elsewhere on
/// the disk it is a note.
fn loop_uses(loops: &[LoopUse], ranges: &[Range<u64>], out: &mut BusyCheck) {
    for l in loops {
        let r = &l.range;
        let overlaps = r.start < r.end && ranges.iter().any(|w| w.start < r.end && r.start < w.end);
        let what = format!(
            "loop device {} maps bytes {}..{} of the target (backing file {})",
            l.name, r.start, r.end, l.backing
        );
        if overlaps {
            out.reasons
                .push(format!("{what}, which overlaps what would be written"));
        } else {
            out.notes
                .push(format!("{what}, outside the ranges being written"));
        }
    }
}

/// Where the PID-1 updater leaves its boot record, unless
/// `FWPACK_BOOT_RECORD` names another file (tests; an empty value turns
/// the check off).
pub const BOOT_RECORD: &str = "/run/fwpack/boot.conf";

/// The fields of a boot record the library needs (format in
/// docs/FORMAT.md, "Boot record for the booted system").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootRecord {
    pub target: PathBuf,
    pub slot: Slot,
    pub trial: bool,
}

pub fn parse_boot_record(text: &str) -> Result<BootRecord, String> {
    let (mut target, mut slot, mut trial) = (None, None, false);
    // The one parser of the syntax: a repeated key is an error.
    for p in crate::keyvalue::parse(text).strict()? {
        let v = p.value;
        match p.key {
            "target" => target = Some(PathBuf::from(v)),
            "slot" => slot = Some(v.parse::<Slot>().map_err(|e| e.to_string())?),
            "trial" => trial = v == "yes",
            _ => {}
        }
    }
    Ok(BootRecord {
        target: target.ok_or("no target")?,
        slot: slot.ok_or("no slot")?,
        trial,
    })
}

/// Reads the boot record at `path` and says whether it names the target
/// `is_target` recognises (by device number or inode, never by name).
/// No file: `Ok(None)`. A file that does not parse: an error (the caller
/// cannot tell which slot runs). A target that no longer exists cannot be
/// this one: `Ok(None)`.
pub fn read_boot_record(
    path: &Path,
    is_target: impl Fn(&fs::Metadata) -> bool,
) -> io::Result<Option<BootedSlot>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let r = parse_boot_record(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    match fs::metadata(&r.target) {
        Ok(m) if is_target(&m) => Ok(Some(BootedSlot {
            slot: r.slot,
            trial: r.trial,
            source: format!(
                "{} says the system booted slot {}{} of {}",
                path.display(),
                r.slot,
                if r.trial { " on trial" } else { "" },
                r.target.display()
            ),
        })),
        _ => Ok(None),
    }
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
    fn boot_record_parsing() {
        let r = parse_boot_record(
            "# comment\ntarget = /dev/nvme0n1\nstate_offset = 524288\nslot = B\ntrial = yes\nfuture = x\n",
        )
        .unwrap();
        assert_eq!(r.target, Path::new("/dev/nvme0n1"));
        assert_eq!((r.slot, r.trial), (Slot::B, true));
        assert!(parse_boot_record("target = /dev/x\n").is_err());
        assert!(parse_boot_record("slot = C\ntarget = /dev/x\n").is_err());
        assert!(parse_boot_record("garbage\n").is_err());
    }

    #[test]
    fn boot_record_names_the_target_by_inode() {
        let dir = std::env::temp_dir().join(format!("fwpack-bootrec-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("disk.img");
        fs::write(&disk, b"x").unwrap();
        let other = dir.join("other.img");
        fs::write(&other, b"y").unwrap();
        let rec = dir.join("boot.conf");
        let m = fs::metadata(&disk).unwrap();
        let is_disk = |x: &fs::Metadata| x.dev() == m.dev() && x.ino() == m.ino();
        assert_eq!(read_boot_record(&rec, is_disk).unwrap(), None, "no file");
        fs::write(
            &rec,
            format!("target = {}\nslot = B\ntrial = yes\n", disk.display()),
        )
        .unwrap();
        let b = read_boot_record(&rec, is_disk).unwrap().unwrap();
        assert_eq!((b.slot, b.trial), (Slot::B, true));
        fs::write(&rec, format!("target = {}\nslot = B\n", other.display())).unwrap();
        assert_eq!(
            read_boot_record(&rec, is_disk).unwrap(),
            None,
            "another disk"
        );
        fs::write(&rec, "target = \n").unwrap();
        assert!(read_boot_record(&rec, is_disk).is_err(), "unparsable");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loop_devices_from_a_sysfs_tree() {
        // A fake /sys/block: loop0 over the disk at 8 MiB (4 MiB long),
        // loop1 over something else, loop2 unbound, loop3 deleted.
        let dir = std::env::temp_dir().join(format!("fwpack-sysloop-{}", std::process::id()));
        let disk = dir.join("disk.img");
        fs::create_dir_all(&dir).unwrap();
        fs::write(&disk, b"d").unwrap();
        let mk = |name: &str, backing: Option<&str>, offset: u64, sectors: u64| {
            let d = dir.join("block").join(name);
            fs::create_dir_all(d.join("loop")).unwrap();
            fs::write(d.join("size"), format!("{sectors}\n")).unwrap();
            if let Some(b) = backing {
                fs::write(d.join("loop/backing_file"), format!("{b}\n")).unwrap();
                fs::write(d.join("loop/offset"), format!("{offset}\n")).unwrap();
            }
        };
        let disk_s = disk.display().to_string();
        mk("loop0", Some(&disk_s), 8 << 20, 8192);
        mk("loop1", Some("/etc/hostname"), 0, 8);
        mk("loop2", None, 0, 0);
        mk("loop3", Some(&format!("{disk_s} (deleted)")), 0, 8);
        mk("sda", Some(&disk_s), 0, 8);
        let m = fs::metadata(&disk).unwrap();
        let loops = loops_backed_by(&dir.join("block"), |x| {
            (x.dev() == m.dev() && x.ino() == m.ino()).then_some(0)
        });
        assert_eq!(
            loops,
            vec![LoopUse {
                name: "loop0".into(),
                backing: disk_s.clone(),
                range: (8 << 20)..(12 << 20),
            }]
        );
        let mut out = BusyCheck::default();
        let written = std::slice::from_ref(&((11 << 20)..(13 << 20)));
        loop_uses(&loops, written, &mut out);
        assert_eq!(out.reasons.len(), 1, "{out:?}");
        let mut out = BusyCheck::default();
        let written = std::slice::from_ref(&((12 << 20)..(13 << 20)));
        loop_uses(&loops, written, &mut out);
        assert!(out.reasons.is_empty() && out.notes.len() == 1, "{out:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_this_machines_mountinfo() {
        // Whatever the machine, the root mount must be found.
        if let Ok(t) = fs::read_to_string("/proc/self/mountinfo") {
            assert!(parse_mountinfo(&t).iter().any(|m| m.mount_point == "/"));
        }
    }
}
