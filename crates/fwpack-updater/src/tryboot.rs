//! Raspberry Pi firmware A/B: `autoboot.txt` on a small FAT partition
//! names the default boot partition (`[all] boot_partition=N`) and the one
//! to try once (`[tryboot] boot_partition=M`, with `tryboot_a_b=1` so the
//! tried partition's normal `config.txt` is used). `reboot "0 tryboot"`
//! sets the one-shot flag; the firmware clears it as it boots, so any
//! later reset returns to the default. The booted system learns what
//! happened from /proc/device-tree/chosen/bootloader/{tryboot,partition};
//! committing rewrites autoboot.txt with the two numbers swapped.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use updater::{BootState, Slot};

/// The firmware reads at most this many bytes of autoboot.txt.
pub const AUTOBOOT_MAX: usize = 512;

const DT_BOOTLOADER: &str = "/proc/device-tree/chosen/bootloader";

/// What autoboot.txt says, as the firmware evaluates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Autoboot {
    /// `boot_partition` on a normal boot (sections `[all]`, or before any section).
    pub default: Option<u32>,
    /// `boot_partition` when the tryboot flag is set (`[all]` and `[tryboot]`).
    pub tryboot: Option<u32>,
    pub tryboot_a_b: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    All,
    Tryboot,
    /// `[none]` and model filters we cannot evaluate: ignored, kept as written.
    Other,
}

fn section(line: &str) -> Option<Section> {
    let name = line.strip_prefix('[')?.strip_suffix(']')?.trim();
    Some(match name {
        "all" => Section::All,
        "tryboot" => Section::Tryboot,
        _ => Section::Other,
    })
}

/// A line of the firmware's config.txt syntax (sections, the firmware's
/// own rules for repeats), read as the firmware reads it: not one of
/// fwpack's `key = value` files, which `updater::keyvalue` reads.
fn key_value(line: &str) -> Option<(&str, &str)> {
    let (k, v) = line.split_once('=')?;
    Some((k.trim(), v.trim()))
}

pub fn parse(text: &str) -> Autoboot {
    let mut a = Autoboot {
        default: None,
        tryboot: None,
        tryboot_a_b: false,
    };
    let mut sec = Section::All;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = section(line) {
            sec = s;
            continue;
        }
        let Some((k, v)) = key_value(line) else {
            continue;
        };
        match (sec, k) {
            (Section::All, "boot_partition") => {
                let n = v.parse().ok();
                a.default = n;
                a.tryboot = n;
            }
            (Section::Tryboot, "boot_partition") => a.tryboot = v.parse().ok(),
            (Section::All, "tryboot_a_b") => a.tryboot_a_b = v == "1",
            _ => {}
        }
    }
    a
}

/// Autoboot.txt text that boots `default` normally and `try_next` on a
/// tryboot, keeping every other line (comments, other settings and
/// filters) as it was.
pub fn rewrite(text: &str, default: u32, try_next: u32) -> Result<String, String> {
    let mut out = String::new();
    let mut sec = Section::All;
    let (mut saw_tryboot_value, mut saw_ab) = (false, false);
    for raw in text.lines() {
        let line = raw.trim();
        if let Some(s) = section(line) {
            sec = s;
        } else if let Some((k, _)) = key_value(line).filter(|_| !line.starts_with('#')) {
            match (sec, k) {
                (Section::All, "boot_partition") => {
                    out.push_str(&format!("boot_partition={default}\n"));
                    continue;
                }
                (Section::Tryboot, "boot_partition") => {
                    out.push_str(&format!("boot_partition={try_next}\n"));
                    saw_tryboot_value = true;
                    continue;
                }
                (Section::All, "tryboot_a_b") => {
                    out.push_str("tryboot_a_b=1\n");
                    saw_ab = true;
                    continue;
                }
                _ => {}
            }
        }
        out.push_str(raw);
        out.push('\n');
    }
    // Missing pieces go in their own sections at the end, where nothing
    // later can override them.
    if !saw_ab || parse(&out).default != Some(default) {
        out.push_str(&format!("[all]\ntryboot_a_b=1\nboot_partition={default}\n"));
    }
    if !saw_tryboot_value || parse(&out).tryboot != Some(try_next) {
        out.push_str(&format!("[tryboot]\nboot_partition={try_next}\n"));
    }
    let check = parse(&out);
    if check.default != Some(default) || check.tryboot != Some(try_next) || !check.tryboot_a_b {
        return Err("autoboot.txt could not be rewritten to a consistent state".into());
    }
    if out.len() > AUTOBOOT_MAX {
        return Err(format!(
            "the new autoboot.txt would be {} bytes; the firmware reads only {AUTOBOOT_MAX}",
            out.len()
        ));
    }
    Ok(out)
}

/// `dir/autoboot.txt` as the firmware reads it: empty when it is missing
/// or not text. Never read whole: any running slot can write the boot
/// partition, and a file longer than the firmware's [`AUTOBOOT_MAX`]
/// means something other than what we would parse, so it is an error and
/// nothing is rewritten.
pub fn read(dir: &Path) -> Result<String, String> {
    let path = dir.join("autoboot.txt");
    let mut b = Vec::new();
    match File::open(&path) {
        Ok(f) => f
            .take(AUTOBOOT_MAX as u64 + 1)
            .read_to_end(&mut b)
            .map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if b.len() > AUTOBOOT_MAX {
        return Err(format!(
            "{} is longer than the {AUTOBOOT_MAX} bytes the firmware reads; not changed",
            path.display()
        ));
    }
    Ok(String::from_utf8(b).unwrap_or_default())
}

/// Replaces `dir/autoboot.txt` so that a power cut leaves either the old
/// or the new file: write a temporary file, fsync it, rename it over the
/// old one, fsync the directory. (FAT has no journal: the rename is one
/// directory-entry update, the best FAT offers; a torn FAT itself is
/// outside what any file-level scheme can prevent.)
pub fn write_atomically(dir: &Path, text: &str) -> Result<(), String> {
    let tmp = dir.join("autoboot.tmp");
    let dst = dir.join("autoboot.txt");
    let err = |what: &str, e: std::io::Error| format!("{what} {}: {e}", tmp.display());
    {
        let mut f = File::create(&tmp).map_err(|e| err("creating", e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| err("writing", e))?;
        f.sync_all().map_err(|e| err("syncing", e))?;
    }
    fs::rename(&tmp, &dst)
        .map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), dst.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing directory {}: {e}", dir.display()))
}

/// What the firmware told the kernel about this boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareBoot {
    /// The boot partition the firmware loaded kernel and initramfs from.
    pub partition: u32,
    pub tryboot: bool,
    /// Bootloader capability bits (EEPROM bootloaders only).
    pub capabilities: Option<u32>,
}

fn be32(path: &Path) -> Option<u32> {
    let mut b = Vec::new();
    File::open(path).ok()?.take(4).read_to_end(&mut b).ok()?;
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// Reads /proc/device-tree/chosen/bootloader (`None` when the firmware
/// passed no such node: not a Raspberry Pi, or firmware too old).
pub fn firmware_boot() -> Option<FirmwareBoot> {
    firmware_boot_at(Path::new(DT_BOOTLOADER))
}

pub fn firmware_boot_at(dir: &Path) -> Option<FirmwareBoot> {
    Some(FirmwareBoot {
        partition: be32(&dir.join("partition"))?,
        tryboot: be32(&dir.join("tryboot")).unwrap_or(0) == 1,
        capabilities: be32(&dir.join("capabilities")),
    })
}

/// Capability bit 2 of the EEPROM bootloader: TRYBOOT_A_B.
pub fn supports_tryboot_a_b(caps: Option<u32>) -> Option<bool> {
    caps.map(|c| c & (1 << 2) != 0)
}

/// What to do with the boot state given what the firmware booted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Boot `slot`; nothing special.
    Boot(Slot),
    /// The tryboot of the pending slot: count the attempt and boot it.
    Trial(Slot),
    /// The firmware went back to the default partition while a slot was
    /// pending: that try failed. Fall back, boot the active slot.
    FellBack { from: Slot, boot: Slot },
    /// autoboot.txt already names the pending slot as default (a commit
    /// was cut short before the boot state was updated): confirm it now.
    FinishCommit(Slot),
    /// The firmware booted a partition of a slot that is not bootable.
    Refuse(String),
}

pub fn decide(state: &BootState, booted: Slot, tryboot: bool) -> Decision {
    let info = state.slot(booted);
    if info.state != updater::SlotState::Complete {
        return Decision::Refuse(format!(
            "the firmware booted slot {booted}'s partition, but slot {booted} is {}",
            info.state.name()
        ));
    }
    match state.pending {
        Some(p) if p == booted && tryboot => Decision::Trial(p),
        Some(p) if p == booted => Decision::FinishCommit(p),
        Some(p) => Decision::FellBack {
            from: p,
            boot: booted,
        },
        None => Decision::Boot(booted),
    }
}

/// The slot whose boot partition is `partition`.
pub fn slot_of(partitions: [u32; 2], partition: u32) -> Option<Slot> {
    if partitions[0] == partition {
        Some(Slot::A)
    } else if partitions[1] == partition {
        Some(Slot::B)
    } else {
        None
    }
}

/// Where the autoboot.txt partition is mounted while it is read or changed.
const AUTOBOOT_MNT: &str = "/mnt/autoboot";

/// Runs `f` on the mounted autoboot.txt partition.
pub fn with_autoboot<T>(
    dev: &Path,
    fstype: &str,
    f: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<T, String> {
    let mnt = Path::new(if Path::new("/mnt").is_dir() {
        AUTOBOOT_MNT
    } else {
        "/run/fwpack/autoboot"
    });
    std::fs::create_dir_all(mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
    rustix::mount::mount(dev, mnt, fstype, rustix::mount::MountFlags::NOATIME, c"")
        .map_err(|e| format!("mounting {} ({fstype}): {e}", dev.display()))?;
    let r = f(mnt);
    rustix::fs::sync();
    if let Err(e) = rustix::mount::unmount(mnt, rustix::mount::UnmountFlags::empty()) {
        log!("unmounting {}: {e}", mnt.display());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_EXAMPLE: &str =
        "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n";

    #[test]
    fn parses_the_documented_example() {
        assert_eq!(
            parse(DOC_EXAMPLE),
            Autoboot {
                default: Some(2),
                tryboot: Some(3),
                tryboot_a_b: true
            }
        );
        // No [tryboot] value: a tryboot boots the default partition.
        assert_eq!(parse("boot_partition=2\n").tryboot, Some(2));
        // [all] after [tryboot] applies to both; other filters are ignored.
        let t = "[tryboot]\nboot_partition=3\n[pi4]\nboot_partition=9\n[all]\nboot_partition=2\n";
        assert_eq!((parse(t).default, parse(t).tryboot), (Some(2), Some(2)));
    }

    #[test]
    fn read_is_bounded_by_what_the_firmware_reads() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), "");
        let p = dir.path().join("autoboot.txt");
        fs::write(&p, DOC_EXAMPLE).unwrap();
        assert_eq!(read(dir.path()).unwrap(), DOC_EXAMPLE);
        fs::write(&p, vec![b'#'; AUTOBOOT_MAX]).unwrap();
        assert_eq!(read(dir.path()).unwrap().len(), AUTOBOOT_MAX);
        // A sparse 1 GiB file: refused after reading 513 bytes of it.
        File::create(&p).unwrap().set_len(1 << 30).unwrap();
        let e = read(dir.path()).unwrap_err();
        assert!(e.contains("longer than the 512 bytes"), "{e}");
        fs::write(&p, [0xff, 0xfe, b'\n']).unwrap();
        assert_eq!(read(dir.path()).unwrap(), "");
    }

    #[test]
    fn commit_swaps_and_keeps_the_rest() {
        let src = "# A/B\n[all]\ntryboot_a_b=1\nboot_partition=2\n[pi5]\nfoo=bar\n[tryboot]\nboot_partition=3\n";
        let out = rewrite(src, 3, 2).unwrap();
        assert_eq!(out, "# A/B\n[all]\ntryboot_a_b=1\nboot_partition=3\n[pi5]\nfoo=bar\n[tryboot]\nboot_partition=2\n");
        let p = parse(&out);
        assert_eq!(
            (p.default, p.tryboot, p.tryboot_a_b),
            (Some(3), Some(2), true)
        );
        // And back.
        assert_eq!(rewrite(&out, 2, 3).unwrap(), src);
    }

    #[test]
    fn rewrite_completes_a_partial_file() {
        for src in [
            "",
            "boot_partition=2\n",
            "[tryboot]\nboot_partition=7\n",
            "[all]\n[tryboot]\n",
        ] {
            let out = rewrite(src, 2, 3).unwrap();
            let p = parse(&out);
            assert_eq!(
                (p.default, p.tryboot, p.tryboot_a_b),
                (Some(2), Some(3), true),
                "{src:?} -> {out:?}"
            );
        }
    }

    #[test]
    fn refuses_what_the_firmware_would_not_read() {
        let big = format!("# {}\n", "x".repeat(600));
        assert!(rewrite(&big, 2, 3).unwrap_err().contains("512"));
    }

    #[test]
    fn atomic_replace_on_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("autoboot.txt"), DOC_EXAMPLE).unwrap();
        let new = rewrite(DOC_EXAMPLE, 3, 2).unwrap();
        write_atomically(dir.path(), &new).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("autoboot.txt")).unwrap(),
            new
        );
        assert!(!dir.path().join("autoboot.tmp").exists());
        // A leftover temporary from an interrupted commit is simply replaced.
        fs::write(dir.path().join("autoboot.tmp"), "junk").unwrap();
        write_atomically(dir.path(), DOC_EXAMPLE).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("autoboot.txt")).unwrap(),
            DOC_EXAMPLE
        );
    }

    #[test]
    fn device_tree_properties() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(firmware_boot_at(dir.path()), None);
        fs::write(dir.path().join("partition"), 3u32.to_be_bytes()).unwrap();
        fs::write(dir.path().join("tryboot"), 1u32.to_be_bytes()).unwrap();
        fs::write(dir.path().join("capabilities"), 0x7fu32.to_be_bytes()).unwrap();
        let fw = firmware_boot_at(dir.path()).unwrap();
        assert_eq!((fw.partition, fw.tryboot), (3, true));
        assert_eq!(supports_tryboot_a_b(fw.capabilities), Some(true));
        assert_eq!(supports_tryboot_a_b(Some(0b1011)), Some(false));
        fs::write(dir.path().join("tryboot"), [0u8; 2]).unwrap();
        assert!(!firmware_boot_at(dir.path()).unwrap().tryboot);
    }

    #[test]
    fn decisions() {
        let mut st = BootState::initial(Slot::A, 1, "v1").unwrap();
        assert_eq!(decide(&st, Slot::A, false), Decision::Boot(Slot::A));
        assert!(matches!(decide(&st, Slot::B, true), Decision::Refuse(_)));
        st.mark_updating(Slot::B, 2, [7; 32], "v2");
        st.slot_mut(Slot::B).state = updater::SlotState::Complete;
        st.set_pending(Slot::B, 1).unwrap();
        assert_eq!(decide(&st, Slot::B, true), Decision::Trial(Slot::B));
        assert_eq!(
            decide(&st, Slot::A, false),
            Decision::FellBack {
                from: Slot::B,
                boot: Slot::A
            }
        );
        assert_eq!(decide(&st, Slot::B, false), Decision::FinishCommit(Slot::B));
        assert_eq!(slot_of([2, 3], 3), Some(Slot::B));
        assert_eq!(slot_of([2, 3], 1), None);
    }
}
