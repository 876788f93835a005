//! The bootstrap against a broken slot, under QEMU (issue 24):
//!
//! - a confirmed v2 whose filesystem is destroyed, with v1 in the other
//!   slot below the rollback floor: v1 is not booted; PID 1 goes into
//!   recovery, says why, and applies the next signed image at or above
//!   the floor it finds (here the one in the initramfs) to the other
//!   slot, which then boots (x86_64);
//! - the same with `fallback_below_floor = allow`: v1 boots, and `status`
//!   (the device binary in the slot and the host binary) says the device
//!   runs below its floor (x86_64);
//! - a trial slot whose init hangs: the i6300esb watchdog PID 1 armed
//!   resets the machine, the next boot counts the try and falls back to
//!   the old slot (aarch64: Debian's arm64 kernel has i6300esb, the
//!   cloud-amd64 kernel has no watchdog QEMU emulates).

mod qemu_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qemu_support::*;
use testkit::kernels::{self, Arch};

const WAIT: Duration = Duration::from_secs(120);

fn x86_config(extra: &str) -> String {
    format!(
        "target = /dev/nvme0n1\n\
         modules = /etc/fwpack/modules.load\n\
         keys = /etc/fwpack/keys\n\
         images = /images\n\
         device_timeout = 30\n\
         on_failure = poweroff\n\
         root_fstype = ext4\n\
         tries = 2\n\
         {extra}"
    )
}

fn host(args: &[&str], disk: &Path, work: &Path) {
    let out = Command::new(host_updater())
        .args(args)
        .arg("--target")
        .arg(disk)
        .args(if args[0] == "apply" {
            vec![
                "--key".to_string(),
                work.join("key.pem").display().to_string(),
            ]
        } else {
            vec![]
        })
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Slot A v1, slot B v2 confirmed (the rollback floor is 2), then B's
/// filesystem overwritten with noise. Returns the disk and v2's image.
fn broken_v2_over_v1(work: &Path, arch: Arch) -> (PathBuf, Vec<u8>) {
    let a = image(&rootfs(work, arch, "root-a", 1, true), 1);
    let b = image(&rootfs(work, arch, "root-b", 2, true), 2);
    let disk = disk(work, false, &a);
    let b_path = work.join("slot-b.fwi");
    std::fs::write(&b_path, &b).unwrap();
    host(&["apply", b_path.to_str().unwrap()], &disk, work);
    host(&["mark-good", "--slot", "B"], &disk, work);
    let st: serde_json::Value = serde_json::from_str(&status_json(&disk)).unwrap();
    assert_eq!(
        (st["active"].as_str(), st["rollback_floor"].as_u64()),
        (Some("B"), Some(2)),
        "{st}"
    );
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    let noise: Vec<u8> = (0..MIB as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    f.write_all_at(&noise, SLOT_B.offset).unwrap();
    (disk, b)
}

#[test]
fn hostile_broken_slot_with_old_slot_below_floor_enters_recovery() {
    const ARCH: Arch = Arch::X86_64;
    if !tools_present(ARCH) {
        return;
    }
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    let work = tempfile::tempdir().unwrap();
    let (disk, b) = broken_v2_over_v1(work.path(), ARCH);
    // The image B held, as a technician would provide it again: not an
    // update while B counts as running, the way out in recovery.
    let initrd = initramfs(
        work.path(),
        ARCH,
        &x86_config(""),
        &[("reinstall-v2.fwi", &b)],
        Some((&kernel, &["loop"])),
    );
    let mut c = boot(ARCH, &kernel, &initrd, &disk, "hostile-floor-refuse");
    expect(
        &mut c,
        &[
            "is not newer than the running slot B",
            "booting slot B (version 2 v2)",
            "RECOVERY: the active slot B cannot be booted",
            "recovery: waiting for a signed image at or above the rollback floor in /images",
            "applying update /images/reinstall-v2.fwi (version 2 v2) to slot A",
            "slot A is pending",
            "rebooting into it",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let log = std::fs::read_to_string(c.log_path()).unwrap();
    let why = log
        .lines()
        .find(|l| l.contains("RECOVERY:"))
        .unwrap_or_default();
    assert!(
        why.contains("slot A holds version 1 v1, below the rollback floor 2")
            && why.contains("fallback_below_floor = refuse"),
        "{why}"
    );
    assert!(
        !log.contains("switching root") && !log.contains("FWPACK-TEST booted"),
        "nothing may be booted in recovery: {}",
        c.log_path().display()
    );

    let mut c = boot(ARCH, &kernel, &initrd, &disk, "hostile-floor-recovered");
    expect(
        &mut c,
        &[
            "booting slot A (version 2 v2), trial",
            "FWPACK-TEST booted slot A version 2 pid 1",
            "FWPACK-TEST mark-good: Ok(Some(0))",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let st: serde_json::Value = serde_json::from_str(&status_json(&disk)).unwrap();
    assert_eq!(
        (
            st["active"].as_str(),
            st["rollback_floor"].as_u64(),
            st["below_floor"].as_bool()
        ),
        (Some("A"), Some(2), Some(false)),
        "{st}"
    );
}

#[test]
fn hostile_broken_slot_with_old_slot_below_floor_boots_it_when_allowed() {
    const ARCH: Arch = Arch::X86_64;
    if !tools_present(ARCH) {
        return;
    }
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    let work = tempfile::tempdir().unwrap();
    let (disk, _) = broken_v2_over_v1(work.path(), ARCH);
    let initrd = initramfs(
        work.path(),
        ARCH,
        &x86_config("fallback_below_floor = allow\n"),
        &[],
        Some((&kernel, &["loop"])),
    );
    let mut c = boot(ARCH, &kernel, &initrd, &disk, "hostile-floor-allow");
    let lines = expect(
        &mut c,
        &[
            "slot A (version 1) is below the rollback floor 2; fallback_below_floor = allow: booting it anyway",
            "slot A is now the active slot (not yet confirmed); slot B is marked empty",
            "FWPACK-TEST booted slot A version 1 pid 1",
            "FWPACK-TEST mark-good: Ok(Some(0))",
            "FWPACK-TEST status ",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    // The device binary, in the booted slot.
    assert!(lines[4].contains("\"below_floor\":true"), "{}", lines[4]);
    // The host binary.
    let st: serde_json::Value = serde_json::from_str(&status_json(&disk)).unwrap();
    assert_eq!(
        (
            st["active"].as_str(),
            st["rollback_floor"].as_u64(),
            st["below_floor"].as_bool()
        ),
        (Some("A"), Some(2), Some(true)),
        "{st}"
    );
    let text = Command::new(host_updater())
        .args(["status", "--target"])
        .arg(&disk)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("below floor  the active slot A (version 1) is below the rollback floor"),
        "{text}"
    );
}

/// `/sbin/init` of a slot that hangs before it could ever ping a watchdog.
const HANG_INIT: &str = r#"
fn main() {
    println!("FWPACK-TEST hanging in the slot's init, pid {}", std::process::id());
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
"#;

#[test]
fn hostile_hung_trial_slot_is_reset_by_the_watchdog_and_falls_back() {
    const ARCH: Arch = Arch::Aarch64;
    const WAIT: Duration = Duration::from_secs(300);
    if !tools_present(ARCH) {
        return;
    }
    let kernel = kernels::arm64().expect("Debian arm64 kernel");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let hang = testkit::program::build_static("fwpack-test-hang-init", HANG_INIT, ARCH)
        .expect("building the hanging init");
    let a = image(&rootfs(w, ARCH, "root-a", 1, true), 1);
    let b = image(
        &rootfs_with(w, "root-b", 2, false, &hang, &[], ROOTFS_SIZE),
        2,
    );
    let disk = disk(w, true, &a);
    let b_path = w.join("slot-b.fwi");
    std::fs::write(&b_path, &b).unwrap();
    host(
        &["apply", b_path.to_str().unwrap(), "--tries", "1"],
        &disk,
        w,
    );
    let config = "target = /dev/vda\n\
                  modules = /etc/fwpack/modules.load\n\
                  keys = /etc/fwpack/keys\n\
                  device_timeout = 60\n\
                  on_failure = poweroff\n\
                  root_fstype = ext4\n\
                  slot_device = partition\n\
                  watchdog = /dev/watchdog0\n\
                  watchdog_timeout = 20\n";
    let initrd = initramfs(
        w,
        ARCH,
        config,
        &[],
        Some((
            &kernel,
            &[
                "virtio_pci",
                "virtio_blk",
                "ext4",
                "crc32c_generic",
                "i6300esb",
            ],
        )),
    );
    let spawn = |name: &str| {
        let mut q = testkit::qemu::Qemu::new(ARCH, &kernel.vmlinuz)
            .initrd(&initrd)
            .memory(512)
            .name(name)
            .drive(&disk);
        q.extra_args
            .extend(["-device", "i6300esb", "-watchdog-action", "reset"].map(String::from));
        q.spawn().expect("starting QEMU")
    };
    let mut c = spawn("hostile-watchdog-hang");
    expect(
        &mut c,
        &[
            "booting slot B (version 2 v2), trial: 0 tries left after this one",
            "watchdog /dev/watchdog0 armed (20 s) for the trial of slot B",
            "switching root to slot B",
            "FWPACK-TEST hanging in the slot's init, pid 1",
        ],
        WAIT,
    );
    // Only the watchdog ends this boot (`-no-reboot`: its reset exits QEMU).
    expect_exit(&mut c, Duration::from_secs(120));
    let mut c = spawn("hostile-watchdog-after");
    expect(
        &mut c,
        &[
            "slot B was tried and never confirmed; falling back to slot A",
            "booting slot A (version 1 v1)",
            "FWPACK-TEST booted slot A version 1 pid 1",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let st: serde_json::Value = serde_json::from_str(&status_json(&disk)).unwrap();
    assert_eq!(
        (
            st["active"].as_str(),
            st["pending"].is_null(),
            st["slots"]["B"]["fell_back"].as_bool()
        ),
        (Some("A"), true, Some(true)),
        "{st}"
    );
}
