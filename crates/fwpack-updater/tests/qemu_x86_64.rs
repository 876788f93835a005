//! fwpack-updater as PID 1 under QEMU (TCG) with Debian's cloud-amd64
//! kernel and an NVMe disk (driver built in; `loop` loaded from the
//! initramfs, since the slots are byte ranges of an unpartitioned disk).
//!
//! - an update in the initramfs is applied to slot B, the guest reboots,
//!   B boots, confirms itself, and becomes the active slot;
//! - a corrupted update is refused before slot B is touched, the console
//!   says why, slot A boots;
//! - a new slot that never confirms boots once (tries = 1), then slot A
//!   boots again and the update is not re-applied in a loop;
//! - a pending slot that does not mount falls back to A in the same boot;
//! - an active slot that does not mount gives way to the complete other
//!   slot, which becomes active;
//! - an updater.conf with an error, or a refused `fwpack.*` override,
//!   boots slot A in safe mode (no update);
//!   one without a usable target halts instead of rebooting.

mod qemu_support;

use std::time::{Duration, Instant};

use qemu_support::*;
use testkit::kernels::{self, Arch};

const ARCH: Arch = Arch::X86_64;
const WAIT: Duration = Duration::from_secs(90);

fn config(tries: u8) -> String {
    format!(
        "# fwpack-updater test configuration\n\
         target = /dev/nvme0n1\n\
         modules = /etc/fwpack/modules.load\n\
         keys = /etc/fwpack/keys\n\
         images = /images\n\
         device_timeout = 30\n\
         on_failure = poweroff\n\
         root_group = system\n\
         root_fstype = ext4\n\
         tries = {tries}\n\
         verify_writes = yes\n"
    )
}

struct Setup {
    work: tempfile::TempDir,
    kernel: kernels::Kernel,
    disk: std::path::PathBuf,
    initrd: std::path::PathBuf,
}

fn setup(b_image: impl FnOnce(&[u8]) -> Vec<u8>, b_confirms: bool, tries: u8) -> Option<Setup> {
    if !tools_present(ARCH) {
        return None;
    }
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    let work = tempfile::tempdir().unwrap();
    let a = image(&rootfs(work.path(), ARCH, "root-a", 1, true), 1);
    let b = b_image(&image(
        &rootfs(work.path(), ARCH, "root-b", 2, b_confirms),
        2,
    ));
    let disk = disk(work.path(), false, &a);
    let initrd = initramfs(
        work.path(),
        ARCH,
        &config(tries),
        &[("update-v2.fwi", &b)],
        Some((&kernel, &["loop"])),
    );
    Some(Setup {
        work,
        kernel,
        disk,
        initrd,
    })
}

#[test]
fn update_is_applied_then_slot_b_boots_and_confirms() {
    let Some(s) = setup(|b| b.to_vec(), true, 3) else {
        return;
    };
    let t = Instant::now();
    let mut c = boot(ARCH, &s.kernel, &s.initrd, &s.disk, "x86-update-1");
    expect(
        &mut c,
        &[
            "fwpack-updater: fwpack-updater",
            "module /lib/modules/",
            "found /dev/nvme0n1",
            "applying update /images/update-v2.fwi (version 2 v2) to slot B",
            "signature ok; writing",
            "slot B is now complete",
            "slot B is pending with 3 tries",
            "applied /images/update-v2.fwi to slot B",
            "rebooting into it",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let first = t.elapsed();
    let mut c = boot(ARCH, &s.kernel, &s.initrd, &s.disk, "x86-update-2");
    let lines = expect(
        &mut c,
        &[
            "is already in slot B, pending",
            "booting slot B (version 2 v2), trial: 2 tries left",
            "is loop device /dev/loop",
            "switching root to slot B",
            "FWPACK-TEST booted slot B version 2 pid 1",
            "FWPACK-TEST root mount:",
            "slot B (version 2) confirmed: it is now the active slot",
            "FWPACK-TEST mark-good: Ok(Some(0))",
            "FWPACK-TEST status",
        ],
        WAIT,
    );
    assert!(
        lines[5].contains(" ro"),
        "root must be mounted read-only: {}",
        lines[5]
    );
    assert!(
        lines[8].contains("\"active\":\"B\"") && lines[8].contains("\"pending\":null"),
        "{}",
        lines[8]
    );
    expect_exit(&mut c, WAIT);
    eprintln!(
        "x86_64: apply boot {:.1} s, boot into B {:.1} s",
        first.as_secs_f64(),
        (t.elapsed() - first).as_secs_f64()
    );
    // The host reads the same state back from the disk file.
    let st = status_json(&s.disk);
    assert!(
        st.contains("\"active\":\"B\"") && st.contains("\"confirmed\":true"),
        "{st}"
    );
    assert!(st.contains("\"rollback_floor\":2"), "{st}");
    drop(s.work);
}

#[test]
fn corrupted_update_is_refused_and_slot_a_boots() {
    // Flip one byte in the last (compressed rootfs) bytes: the head and
    // signature stay valid, the last chunk's SHA-256 does not.
    let corrupt = |b: &[u8]| {
        let mut v = b.to_vec();
        let at = v.len() - 100;
        v[at] ^= 0x40;
        v
    };
    let Some(s) = setup(corrupt, true, 3) else {
        return;
    };
    let mut c = boot(ARCH, &s.kernel, &s.initrd, &s.disk, "x86-corrupt");
    let lines = expect(
        &mut c,
        &[
            "applying update /images/update-v2.fwi",
            "update /images/update-v2.fwi refused:",
            "booting slot A (version 1 v1)",
            "FWPACK-TEST booted slot A version 1",
        ],
        WAIT,
    );
    let why = &lines[1];
    assert!(
        why.contains("SHA-256")
            || why.contains("CRC")
            || why.contains("integrity")
            || why.contains("mismatch"),
        "the console must say why: {why}"
    );
    expect_exit(&mut c, WAIT);
    let st = status_json(&s.disk);
    // Found mid-stream (one pass): chunks before the bad one may be on slot
    // B, which stays `updating` — never bootable — and nothing is pending.
    assert!(
        st.contains("\"active\":\"A\"") && st.contains("\"pending\":null"),
        "{st}"
    );
    assert!(st.contains("\"B\":{\"state\":\"updating\""), "{st}");
}

#[test]
fn unconfirmed_slot_falls_back_to_a() {
    let Some(s) = setup(|b| b.to_vec(), false, 1) else {
        return;
    };
    let mut c = boot(ARCH, &s.kernel, &s.initrd, &s.disk, "x86-noconfirm-1");
    expect(
        &mut c,
        &["slot B is pending with 1 tries", "rebooting into it"],
        WAIT,
    );
    expect_exit(&mut c, WAIT);

    let mut c = boot(ARCH, &s.kernel, &s.initrd, &s.disk, "x86-noconfirm-2");
    expect(
        &mut c,
        &[
            "booting slot B (version 2 v2), trial: 0 tries left",
            "FWPACK-TEST booted slot B version 2",
            "FWPACK-TEST not confirming this slot",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);

    let mut c = boot(ARCH, &s.kernel, &s.initrd, &s.disk, "x86-noconfirm-3");
    expect(
        &mut c,
        &[
            "was already installed in slot B and did not confirm; not applying it again",
            "slot B was tried and never confirmed; falling back to slot A",
            "booting slot A (version 1 v1)",
            "FWPACK-TEST booted slot A version 1",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let st = status_json(&s.disk);
    assert!(
        st.contains("\"active\":\"A\"") && st.contains("\"pending\":null"),
        "{st}"
    );
}

/// PID 1 never exits: with no disk it logs why and does what
/// `on_failure` says (here: power off), and the kernel never panics.
#[test]
fn missing_disk_ends_in_the_configured_action() {
    if !tools_present(ARCH) {
        return;
    }
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    let work = tempfile::tempdir().unwrap();
    let conf = "target = PARTUUID=0f3a7e57-02\ndevice_timeout = 2\non_failure = poweroff\n";
    let initrd = initramfs(work.path(), ARCH, conf, &[], None);
    let mut c = testkit::qemu::Qemu::new(ARCH, &kernel.vmlinuz)
        .initrd(&initrd)
        .memory(256)
        .name("x86-no-disk")
        .spawn()
        .unwrap();
    let lines = expect(
        &mut c,
        &[
            "PARTUUID=0f3a7e57-02 did not appear within 2 s",
            "cannot continue; on_failure = poweroff",
            "fwpack-updater: poweroff",
        ],
        WAIT,
    );
    assert!(
        lines[0].contains("is its driver in the module list?"),
        "{}",
        lines[0]
    );
    expect_exit(&mut c, WAIT);
    let log = std::fs::read_to_string(c.log_path()).unwrap();
    assert!(
        !log.contains("Kernel panic"),
        "console log: {}",
        c.log_path().display()
    );
}

/// A disk (with an MBR whose partitions are the slots if `partitions`)
/// with slot A (v1, active) and slot B (v2) applied by the host updater
/// with `apply_args`, then 1 MiB at `garbage_at` overwritten.
fn two_slot_disk(
    work: &std::path::Path,
    partitions: bool,
    apply_args: &[&str],
    garbage_at: u64,
) -> std::path::PathBuf {
    let a = image(&rootfs(work, ARCH, "root-a", 1, true), 1);
    let b = image(&rootfs(work, ARCH, "root-b", 2, true), 2);
    let disk = disk(work, partitions, &a);
    let b_path = work.join("slot-b.fwi");
    std::fs::write(&b_path, &b).unwrap();
    let out = std::process::Command::new(host_updater())
        .arg("apply")
        .arg(&b_path)
        .arg("--target")
        .arg(&disk)
        .arg("--key")
        .arg(work.join("key.pem"))
        .args(apply_args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    let noise: Vec<u8> = (0..MIB as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    f.write_all_at(&noise, garbage_at).unwrap();
    disk
}

/// A pending slot B whose filesystem is garbage: its trial falls back to
/// slot A in the same boot.
#[test]
fn unmountable_trial_slot_falls_back_in_the_same_boot() {
    if !tools_present(ARCH) {
        return;
    }
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    let work = tempfile::tempdir().unwrap();
    let disk = two_slot_disk(work.path(), false, &["--tries", "2"], SLOT_B.offset);
    let initrd = initramfs(
        work.path(),
        ARCH,
        &config(3),
        &[],
        Some((&kernel, &["loop"])),
    );
    let mut c = boot(ARCH, &kernel, &initrd, &disk, "x86-trial-garbage");
    expect(
        &mut c,
        &[
            "booting slot B (version 2 v2), trial: 1 tries left",
            "slot B cannot be booted; falling back to slot A",
            "switching root to slot A",
            "FWPACK-TEST booted slot A version 1 pid 1",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let st: serde_json::Value = serde_json::from_str(&status_json(&disk)).unwrap();
    assert_eq!(
        (st["active"].as_str(), st["pending"].is_null()),
        (Some("A"), true),
        "{st}"
    );
    assert_eq!(st["slots"]["B"]["fell_back"], true, "{st}");
}

/// The active slot A is garbage (its ext4 superblock overwritten) while
/// slot B is complete (applied without activation): B boots in the same
/// boot, is recorded as the active slot with the reason on the console,
/// and confirms itself; A is marked empty, so it is never booted again.
/// Slots as loop devices over the disk, and as its partitions (the disk
/// is reopened for the state write right after B was test-mounted).
fn rescue(partitions: bool) {
    if !tools_present(ARCH) {
        return;
    }
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    let work = tempfile::tempdir().unwrap();
    let disk = two_slot_disk(work.path(), partitions, &["--no-activate"], SLOT_A.offset);
    let initrd = initramfs(
        work.path(),
        ARCH,
        &config(3),
        &[],
        Some((&kernel, &["loop"])),
    );
    let name = if partitions {
        "x86-rescue-part"
    } else {
        "x86-rescue"
    };
    let dev = if partitions {
        "partition /dev/nvme0n1p2"
    } else {
        "loop device /dev/loop"
    };
    let mut c = boot(ARCH, &kernel, &initrd, &disk, name);
    expect(
        &mut c,
        &[
            "booting slot A (version 1 v1)",
            "the active slot A cannot be booted; slot B is complete (version 2 v2), trying it",
            dev,
            "slot B is now the active slot (not yet confirmed); slot A is marked empty",
            "switching root to slot B",
            "FWPACK-TEST booted slot B version 2 pid 1",
            "FWPACK-TEST mark-good: Ok(Some(0))",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let st: serde_json::Value = serde_json::from_str(&status_json(&disk)).unwrap();
    assert_eq!(
        (
            st["active"].as_str(),
            st["confirmed"].as_bool(),
            st["pending"].is_null()
        ),
        (Some("B"), Some(true), true),
        "{st}"
    );
    assert_eq!(st["slots"]["A"]["state"], "empty", "{st}");
    assert_eq!(st["slots"]["A"]["fell_back"], true, "{st}");
}

#[test]
fn unbootable_active_slot_gives_way_to_the_complete_other() {
    rescue(false);
}

#[test]
fn unbootable_active_partition_gives_way_to_the_complete_other() {
    rescue(true);
}

/// An updater.conf with an error (a line that is not `key = value`) and an
/// update in the initramfs: the active slot A boots with the lines that
/// parse, the error is on the console, the update is not applied and the
/// boot state is not changed.
#[test]
fn broken_config_boots_the_active_slot_in_safe_mode() {
    let Some(s) = setup(|b| b.to_vec(), true, 3) else {
        return;
    };
    let before = status_json(&s.disk);
    let conf = format!("{}this line is not a setting\n", config(3));
    let initrd = initramfs(
        s.work.path(),
        ARCH,
        &conf,
        &[(
            "update-v2.fwi",
            &image(&rootfs(s.work.path(), ARCH, "root-b", 2, true), 2),
        )],
        Some((&s.kernel, &["loop"])),
    );
    let mut c = boot(ARCH, &s.kernel, &initrd, &s.disk, "x86-safe-mode");
    let lines = expect(
        &mut c,
        &[
            "updater.conf: line 12: expected `key = value`",
            "safe mode: booting the active slot; no update is applied",
            "booting slot A (version 1 v1)",
            "switching root to slot A",
            "FWPACK-TEST booted slot A version 1 pid 1",
        ],
        WAIT,
    );
    assert!(!lines.is_empty());
    expect_exit(&mut c, WAIT);
    let log = std::fs::read_to_string(c.log_path()).unwrap();
    assert!(!log.contains("applying update"), "{log}");
    // Nothing but mark-good of the booted A (already confirmed) touched
    // the boot state: slot B is still empty.
    let after: serde_json::Value = serde_json::from_str(&status_json(&s.disk)).unwrap();
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    assert_eq!(after["slots"], before["slots"]);
    assert_eq!(after["slots"]["B"]["state"], "empty");
}

/// A refused `fwpack.*` override on the kernel command line: the file as
/// built, in safe mode (the update in the initramfs is not applied).
#[test]
fn refused_cmdline_override_boots_the_active_slot_in_safe_mode() {
    let Some(s) = setup(|b| b.to_vec(), true, 3) else {
        return;
    };
    let mut c = boot_appending(
        ARCH,
        &s.kernel,
        &s.initrd,
        &s.disk,
        "x86-bad-override",
        "fwpack.tries=banana",
    );
    expect(
        &mut c,
        &[
            "kernel command line: fwpack.tries: `banana`",
            "no update is applied, the boot state is not changed, a failure halts; no fwpack.* override is used",
            "booting slot A (version 1 v1)",
            "FWPACK-TEST booted slot A version 1 pid 1",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let log = std::fs::read_to_string(c.log_path()).unwrap();
    assert!(!log.contains("applying update"), "{log}");
    let st: serde_json::Value = serde_json::from_str(&status_json(&s.disk)).unwrap();
    assert_eq!(st["slots"]["B"]["state"], "empty", "{st}");
}

/// No usable target: PID 1 says why and halts (a reboot would meet the
/// same configuration again, forever).
#[test]
fn config_without_a_target_halts_instead_of_rebooting() {
    if !tools_present(ARCH) {
        return;
    }
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    let work = tempfile::tempdir().unwrap();
    let initrd = initramfs(
        work.path(),
        ARCH,
        "target = nvme0n1\non_failure = reboot\n",
        &[],
        None,
    );
    let mut c = testkit::qemu::Qemu::new(ARCH, &kernel.vmlinuz)
        .initrd(&initrd)
        .memory(256)
        .name("x86-no-target")
        .spawn()
        .unwrap();
    expect(
        &mut c,
        &[
            "is not a device",
            "without a usable `target` there is nothing to boot; halting",
            "fwpack-updater: halt",
            "reboot: System halted",
        ],
        WAIT,
    );
}

/// Device-side partition tables on a real kernel: `images` on the MBR
/// partition `PARTUUID=0f3a7e57-02` (slot B, still empty) is found as
/// the kernel's /dev/nvme0n1p2 by the updater's own parser; the partition
/// holds no filesystem, so the update check fails and slot A boots.
#[test]
fn partuuid_is_resolved_to_the_kernels_partition() {
    if !tools_present(ARCH) {
        return;
    }
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    let work = tempfile::tempdir().unwrap();
    let a = image(&rootfs(work.path(), ARCH, "root-a", 1, true), 1);
    let disk = disk(work.path(), true, &a);
    let conf = config(3).replace(
        "images = /images",
        "images = partition:PARTUUID=0F3A7E57-02:/updates:ext4",
    );
    let initrd = initramfs(work.path(), ARCH, &conf, &[], Some((&kernel, &["loop"])));
    let mut c = boot(ARCH, &kernel, &initrd, &disk, "x86-partuuid");
    expect(
        &mut c,
        &[
            "found PARTUUID=0f3a7e57-02 at /dev/nvme0n1p2",
            "for update images",
            "booting slot A (version 1 v1)",
            "slot A (16777216 bytes at 8388608) is partition /dev/nvme0n1p1",
            "FWPACK-TEST booted slot A version 1 pid 1",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
}
