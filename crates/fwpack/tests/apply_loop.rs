//! `fwpack apply` on real loop devices (root only): a device whose
//! filesystem is mounted, or that another process holds with O_EXCL, is
//! refused as busy (exit 8); a partitioned disk whose *active* partition is
//! mounted can still be updated in its other slot, but not once the target
//! slot's partition is mounted; an unmounted device is written, read back
//! and verified. The slot the running system booted from (the PID-1
//! updater's boot record) is refused even with --force, and a loop device
//! mapping the slot being written is busy. Loop devices are detached and
//! mounts undone on every path, including failures (RAII guards).

#[path = "apply_common.rs"]
mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const BOARD: &str = "loop-board";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// None (with the reason printed) where loop devices cannot be used.
fn can_use_loop() -> bool {
    if !is_root() {
        eprintln!("SKIP: loop-device tests need root (losetup, mount); running as uid != 0");
        return false;
    }
    if !Path::new("/dev/loop-control").exists() {
        eprintln!("SKIP: this kernel/container has no /dev/loop-control");
        return false;
    }
    true
}

fn sh(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{shown}: {e} (installed by `cargo xtask deps`)"));
    assert!(out.status.success(), "{shown}: {}", show(&out));
    stdout(&out).trim().to_string()
}

/// An attached loop device; detached (after its mounts are undone) on drop.
struct Loop {
    dev: String,
    mounts: Vec<PathBuf>,
}

impl Loop {
    fn attach(file: &Path, partitions: bool) -> Loop {
        Loop::attach_range(file, partitions, None)
    }

    /// With `range` = (offset, size): a loop device over those bytes only.
    fn attach_range(file: &Path, partitions: bool, range: Option<(u64, u64)>) -> Loop {
        let mut c = Command::new("losetup");
        c.arg("-f").arg("--show");
        if partitions {
            c.arg("-P");
        }
        if let Some((o, n)) = range {
            c.arg("-o")
                .arg(o.to_string())
                .arg("--sizelimit")
                .arg(n.to_string());
        }
        let dev = sh(c.arg(file));
        Loop {
            dev,
            mounts: Vec::new(),
        }
    }

    fn part(&self, n: u32) -> String {
        let p = format!("{}p{n}", self.dev);
        // devtmpfs creates partition nodes asynchronously after the scan.
        // Kernels built without the MBR parser scan nothing: then the
        // partitions are added from user space, as partx does.
        let t = Instant::now();
        let mut asked = false;
        while !Path::new(&p).exists() {
            if !asked && t.elapsed() > Duration::from_secs(1) {
                sh(Command::new("partx").arg("-a").arg(&self.dev));
                asked = true;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "{p} never appeared");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    fn mount(&mut self, dev: &str, at: &Path) {
        std::fs::create_dir_all(at).unwrap();
        sh(Command::new("mount").arg(dev).arg(at));
        self.mounts.push(at.to_path_buf());
    }

    fn umount_all(&mut self) {
        while let Some(m) = self.mounts.pop() {
            let _ = Command::new("umount").arg(&m).status();
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.umount_all();
        let _ = Command::new("partx")
            .arg("-d")
            .arg(&self.dev)
            .stderr(std::process::Stdio::null())
            .status();
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn mkfs(dev: &str) {
    sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(dev));
}

fn sparse(path: &Path, len: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
}

fn apply(d: &Path, image: &str, dev: &str) -> std::process::Output {
    fwpack(
        &[
            "apply",
            image,
            "--target",
            dev,
            "--key",
            "k.pub.pem",
            "--json",
        ],
        d,
    )
}

#[test]
fn mounted_device_is_refused() {
    if !can_use_loop() {
        return;
    }
    let tmp = workdir("apply-loop");
    let d = tmp.path();
    std::fs::write(d.join("rootfs.img"), payload(1, MIB as usize)).unwrap();
    stamp(d, "v2.fwi", BOARD, 2, &["rootfs=rootfs.img,target=system"]);
    sparse(&d.join("fs.img"), 32 * MIB);
    mkfs(path_str(&d.join("fs.img")));
    let mut lo = Loop::attach(&d.join("fs.img"), false);
    let dev = lo.dev.clone();
    lo.mount(&dev, &d.join("mnt"));
    let out = apply(d, "v2.fwi", &dev);
    assert_eq!(code(&out), 8, "{}", show(&out));
    let msg = stderr(&out);
    assert!(msg.contains("mounted at") && msg.contains("mnt"), "{msg}");
    // Busy is decided before anything else is read: the message is about
    // the mount, not about the missing state area.
    assert!(!msg.contains("state area"), "{msg}");
}

#[test]
fn unmounted_device_is_written_and_verified_unless_held() {
    if !can_use_loop() {
        return;
    }
    let tmp = workdir("apply-loop");
    let d = tmp.path();
    let rootfs = payload(2, 3 * MIB as usize + 4321);
    std::fs::write(d.join("rootfs.img"), &rootfs).unwrap();
    stamp(d, "v2.fwi", BOARD, 2, &["rootfs=rootfs.img,target=system"]);
    stamp(d, "v3.fwi", BOARD, 3, &["rootfs=rootfs.img,target=system"]);
    ok(fwpack(
        &[
            "state",
            "init",
            "--target",
            "disk.img",
            "--size",
            "16MiB",
            "--board",
            BOARD,
            "-g",
            "system:A=5MiB+5MiB,B=10MiB+5MiB",
            "--active-version",
            "1",
        ],
        d,
    ));
    {
        let lo = Loop::attach(&d.join("disk.img"), false);
        let out = fwpack(
            &[
                "apply",
                "v2.fwi",
                "--target",
                &lo.dev,
                "--key",
                "k.pub.pem",
                "--json",
                "--verify-writes",
            ],
            d,
        );
        assert!(out.status.success(), "{}", show(&out));
        let lines = json_lines(&out);
        let target = lines.iter().find(|l| l["event"] == "target").unwrap();
        let desc = target["description"].as_str().unwrap();
        assert!(
            desc.contains("block device") && desc.contains("exclusive"),
            "{desc}"
        );
        let r = result_of(&out);
        assert_eq!(r["direct_io"], true);
        assert_eq!(r["slot"], "B");
        assert!(r["bytes_read_back"].as_u64().unwrap() >= rootfs.len() as u64);
        let st: serde_json::Value = serde_json::from_slice(
            &ok(fwpack(&["status", "--target", &lo.dev, "--json"], d)).stdout,
        )
        .unwrap();
        assert_eq!(st["pending"], "B");

        // Someone else holds the device exclusively: refused, named so.
        let held = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(&lo.dev)
            .unwrap();
        let out = apply(d, "v3.fwi", &lo.dev);
        assert_eq!(code(&out), 8, "{}", show(&out));
        assert!(stderr(&out).contains("exclusively"), "{}", show(&out));
        drop(held);
        let r = result_of(&ok(apply(d, "v3.fwi", &lo.dev)));
        assert_eq!(r["slot"], "B");
    }
    // Detached: the backing file holds the payload where slot B is.
    assert!(cmp_range(
        &d.join("rootfs.img"),
        0,
        &d.join("disk.img"),
        10 * MIB,
        rootfs.len() as u64
    ));
}

#[test]
fn partitions_count_only_where_they_overlap_the_target_slot() {
    if !can_use_loop() {
        return;
    }
    let tmp = workdir("apply-loop");
    let d = tmp.path();
    std::fs::write(d.join("rootfs.img"), payload(3, 2 * MIB as usize)).unwrap();
    stamp(d, "v2.fwi", BOARD, 2, &["rootfs=rootfs.img,target=system"]);
    stamp(d, "v3.fwi", BOARD, 3, &["rootfs=rootfs.img,target=system"]);
    let disk = d.join("disk.img");
    sparse(&disk, 40 * MIB);
    // Two partitions that are exactly the slots: A at 5 MiB, B at 21 MiB
    // (after the state area's two copies at 512 KiB and 4.5 MiB).
    let mut sf = Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "--quiet"])
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (fdisk) is installed by `cargo xtask deps`");
    use std::io::Write;
    sf.stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\n10240,32768,L\n43008,32768,L\n")
        .unwrap();
    assert!(sf.wait().unwrap().success());
    ok(fwpack(
        &[
            "state",
            "init",
            "--target",
            "disk.img",
            "--board",
            BOARD,
            "-g",
            "system:A=5MiB+16MiB,B=21MiB+16MiB",
            "--active-version",
            "1",
        ],
        d,
    ));
    let mut lo = Loop::attach(&disk, true);
    let (p1, p2) = (lo.part(1), lo.part(2));
    mkfs(&p1);
    lo.mount(&p1, &d.join("slot-a"));

    // The running system's slot A is mounted: writing B is fine, and said.
    let out = ok(apply(d, "v2.fwi", &lo.dev));
    let warnings: Vec<String> = json_lines(&out)
        .iter()
        .filter(|l| l["event"] == "warning")
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("p1") && w.contains("outside")),
        "{warnings:?}"
    );
    assert_eq!(result_of(&out)["slot"], "B");

    // Slot B's partition mounted: refused.
    mkfs(&p2);
    lo.mount(&p2, &d.join("slot-b"));
    let out = apply(d, "v3.fwi", &lo.dev);
    assert_eq!(code(&out), 8, "{}", show(&out));
    let msg = stderr(&out);
    assert!(msg.contains("p2") && msg.contains("overlaps"), "{msg}");
}

/// A disk with A active (version 1) and B holding version 2, pending: the
/// device after an apply, before its reboot. Slots A at 8 MiB, B at 16 MiB.
fn pending_b_disk(d: &Path) -> PathBuf {
    std::fs::write(d.join("rootfs.img"), payload(5, 2 * MIB as usize)).unwrap();
    stamp(d, "v2.fwi", BOARD, 2, &["rootfs=rootfs.img,target=system"]);
    stamp(d, "v3.fwi", BOARD, 3, &["rootfs=rootfs.img,target=system"]);
    ok(fwpack(
        &[
            "state",
            "init",
            "--target",
            "disk.img",
            "--size",
            "24MiB",
            "--board",
            BOARD,
            "-g",
            "system:A=8MiB+8MiB,B=16MiB+8MiB",
            "--active-version",
            "1",
        ],
        d,
    ));
    d.join("disk.img")
}

fn sha(path: &Path) -> String {
    sh(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn the_running_slot_is_refused_on_a_loop_device() {
    if !can_use_loop() {
        return;
    }
    let tmp = workdir("apply-loop");
    let d = tmp.path();
    let disk = pending_b_disk(d);
    let lo = Loop::attach(&disk, false);
    let record = d.join("boot.conf");
    let apply_env = |image: &str, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fwpack"));
        c.args(["apply", image, "--target", &lo.dev, "--key", "k.pub.pem"])
            .args(extra)
            .env("FWPACK_BOOT_RECORD", &record)
            .current_dir(d);
        c.output().unwrap()
    };
    ok(apply_env("v2.fwi", &[]));
    // The PID-1 updater booted B on trial (A is still the active slot) and
    // left its boot record naming this loop device.
    std::fs::write(
        &record,
        format!(
            "target = {}\nstate_offset = 524288\nstate_copy_distance = 4194304\nslot = B\ntrial = yes\n",
            lo.dev
        ),
    )
    .unwrap();
    sh(&mut Command::new("sync"));
    let before = sha(&disk);
    for extra in [&[][..], &["--slot", "B"], &["--force"]] {
        let out = apply_env("v3.fwi", extra);
        assert_eq!(code(&out), 8, "{extra:?}: {}", show(&out));
        let msg = stderr(&out);
        assert!(msg.contains("slot B is the running system"), "{msg}");
        assert!(msg.contains("boot.conf"), "{msg}");
    }
    // Not a byte written (through the device, to its backing file).
    sh(&mut Command::new("sync"));
    assert_eq!(sha(&disk), before, "a refused apply changed the disk");
    // The status command says what runs.
    let out = Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .args(["status", "--json", "--target", &lo.dev])
        .env("FWPACK_BOOT_RECORD", &record)
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&ok(out).stdout).unwrap();
    assert_eq!(st["running"]["slot"], "B");
    // After mark-good B is active; the update then goes to A.
    ok(fwpack(
        &["mark-good", "--target", &lo.dev, "--slot", "B"],
        d,
    ));
    let out = ok(apply_env("v3.fwi", &["--json"]));
    assert_eq!(result_of(&out)["slot"], "A");
}

#[test]
fn a_loop_device_over_the_target_slot_is_busy() {
    if !can_use_loop() {
        return;
    }
    let tmp = workdir("apply-loop");
    let d = tmp.path();
    let disk = pending_b_disk(d);
    let lo = Loop::attach(&disk, false);
    // A read-only view of slot B (16 MiB + 8 MiB), as the PID-1 updater's
    // slot_device = loop makes one: its backing file is the disk device.
    let b = Loop::attach_range(Path::new(&lo.dev), false, Some((16 * MIB, 8 * MIB)));
    let before = sha(&disk);
    let out = apply(d, "v2.fwi", &lo.dev);
    assert_eq!(code(&out), 8, "{}", show(&out));
    let msg = stderr(&out);
    let name = b.dev.trim_start_matches("/dev/");
    assert!(
        msg.contains(&format!("loop device {name} maps bytes 16777216..25165824")),
        "{msg}"
    );
    assert!(msg.contains("overlaps"), "{msg}");
    sh(&mut Command::new("sync"));
    assert_eq!(sha(&disk), before);
    drop(b);
    // Over slot A (the active one, not written): a note, and B is written.
    let a = Loop::attach_range(Path::new(&lo.dev), false, Some((8 * MIB, 8 * MIB)));
    let out = ok(apply(d, "v2.fwi", &lo.dev));
    let name = a.dev.trim_start_matches("/dev/");
    let warned = json_lines(&out).iter().any(|l| {
        l["event"] == "warning"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains(name) && m.contains("outside"))
    });
    assert!(warned, "{}", show(&out));
    assert_eq!(result_of(&out)["slot"], "B");
    // A loop device over the disk *file* (not the device) counts too.
    drop(a);
    drop(lo);
    let f = Loop::attach_range(&disk, false, Some((16 * MIB, 4096 * 16)));
    let out = apply(d, "v3.fwi", path_str(&disk));
    assert_eq!(code(&out), 8, "{}", show(&out));
    assert!(
        stderr(&out).contains(f.dev.trim_start_matches("/dev/")),
        "{}",
        show(&out)
    );
}
