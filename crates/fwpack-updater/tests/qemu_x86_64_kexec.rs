//! `boot = kexec` on qemu-x86_64 (TCG): the bootstrap (Debian's
//! cloud-amd64 kernel + the fwpack initramfs) chooses the slot and
//! kexec_file_loads the slot's own kernel from its `/boot/fwpack/`; the
//! slot kernel mounts the slot's partition as root itself.
//!
//! - v1 in slot A boots by kexec: the slot kernel's own command line
//!   (its `Command line:` banner and /proc/cmdline) carries A's marker,
//!   which the bootstrap's does not; then v2, whose kernel is another one
//!   (Debian's generic amd64 kernel, with its modular NVMe and ext4 in its
//!   own fwpack initrd), is applied to B, boots B's kernel and confirms;
//! - a v3 whose kernel panics reboots (panic=N) and falls back to A after
//!   its tries, with the reason on the console;
//! - a v3 whose kernel the running kernel refuses (ENOEXEC) counts as a
//!   failed try and A boots in the same boot.
//!
//! `kexec_boot_time` (ignored; `cargo xtask bench kexec`) prints the time
//! from QEMU start to the slot's init, by kexec and by switch_root.

mod qemu_support;

use std::time::{Duration, Instant};

use qemu_support::kexec::{SlotKernel, Slots};
use qemu_support::*;
use testkit::kernels::{self, Arch};
use updater::SlotRange;

const ARCH: Arch = Arch::X86_64;
const WAIT: Duration = Duration::from_secs(120);
/// Slots large enough for a 14 MB bzImage, the test init and the updater
/// (for mark-good) in each root filesystem.
const SLOTS: [SlotRange; 2] = [
    SlotRange {
        offset: 8 * MIB,
        size: 24 * MIB,
    },
    SlotRange {
        offset: 32 * MIB,
        size: 24 * MIB,
    },
];
const DISK: u64 = 57 * MIB;
const ROOTFS: u64 = 22 * MIB;

fn config(tries: u8, boot: &str) -> String {
    format!(
        "target = /dev/nvme0n1\n\
         keys = /etc/fwpack/keys\n\
         images = /images\n\
         device_timeout = 30\n\
         on_failure = poweroff\n\
         root_group = system\n\
         root_fstype = ext4\n\
         slot_device = partition\n\
         tries = {tries}\n\
         boot = {boot}\n\
         kexec_panic = 1\n"
    )
}

/// The slots: each carries the updater (for mark-good) and its kernel.
const SLOT_FILES: Slots = Slots {
    arch: ARCH,
    target: "/dev/nvme0n1",
    rootfs_size: ROOTFS,
};

/// A signed image of a slot root filesystem carrying a kernel.
fn slot_image(
    work: &std::path::Path,
    kernel: &kernels::Kernel,
    name: &str,
    version: u64,
    k: SlotKernel,
) -> Vec<u8> {
    SLOT_FILES.image(work, kernel, name, version, k, None)
}

struct Setup {
    work: tempfile::TempDir,
    kernel: kernels::Kernel,
    disk: std::path::PathBuf,
}

fn setup() -> Option<Setup> {
    if !tools_present(ARCH) {
        return None;
    }
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    assert!(kernel.config_builtin("KEXEC_FILE").unwrap());
    // The slot kernel mounts its root with no initrd of its own.
    assert!(
        kernel.config_builtin("EXT4_FS").unwrap() && kernel.config_builtin("BLK_DEV_NVME").unwrap()
    );
    let work = tempfile::tempdir().unwrap();
    let a = slot_image(
        work.path(),
        &kernel,
        "root-a",
        1,
        SlotKernel::Good("kernel-v1"),
    );
    let disk = disk_with(work.path(), true, &a, SLOTS, DISK);
    Some(Setup { work, kernel, disk })
}

impl Setup {
    fn initrd(&self, tries: u8, boot: &str, images: &[(&str, &[u8])]) -> std::path::PathBuf {
        let dir = self.work.path().join(format!("initrd-{}", images.len()));
        std::fs::create_dir_all(&dir).unwrap();
        initramfs(&dir, ARCH, &config(tries, boot), images, None)
    }
}

#[test]
fn v1_boots_by_kexec_then_v2_kernel_boots_from_b() {
    let Some(s) = setup() else {
        return;
    };
    let plain = s.initrd(3, "kexec", &[]);
    let mut c = boot(ARCH, &s.kernel, &plain, &s.disk, "x86-kexec-v1");
    let lines = expect(
        &mut c,
        &[
            "Command line:",
            "fwpack-updater: fwpack-updater",
            "booting slot A (version 1 v1)",
            "slot A kernel command line:",
            "slot A kernel loaded (kexec_file_load)",
            "kexec into slot A's kernel",
            "Command line:",
            "FWPACK-TEST slot kernel",
            "FWPACK-TEST booted slot A version 1 pid 1",
        ],
        WAIT,
    );
    assert!(
        !lines[0].contains("test.marker="),
        "bootstrap: {}",
        lines[0]
    );
    for l in [&lines[6], &lines[7]] {
        assert!(
            l.contains("test.marker=kernel-v1")
                && l.contains("fwpack.slot=A")
                && l.contains("root=PARTUUID=0f3a7e57-01")
                && l.contains("panic=1"),
            "the slot kernel's own command line: {l}"
        );
    }
    expect_exit(&mut c, WAIT);

    // v2 carries another kernel: Debian's generic amd64 one, whose NVMe
    // and ext4 drivers are modules, so its initrd is the fwpack initramfs
    // (slot stage) with those modules.
    let generic = kernels::amd64_generic().expect("Debian generic amd64 kernel");
    assert!(!generic.config_builtin("BLK_DEV_NVME").unwrap());
    let conf = config(3, "kexec") + "modules = /etc/fwpack/modules.load\n";
    let stage_dir = s.work.path().join("v2-initrd");
    std::fs::create_dir_all(&stage_dir).unwrap();
    let v2_initrd = std::fs::read(initramfs(
        &stage_dir,
        ARCH,
        &conf,
        &[],
        Some((&generic, &["nvme", "ext4", "crc32c_generic"])),
    ))
    .unwrap();
    let b = SLOT_FILES.image(
        s.work.path(),
        &generic,
        "root-b",
        2,
        SlotKernel::Good("kernel-v2"),
        Some(&v2_initrd),
    );
    let with_v2 = s.initrd(3, "kexec", &[("update-v2.fwi", &b)]);
    let mut c = boot(ARCH, &s.kernel, &with_v2, &s.disk, "x86-kexec-v2-apply");
    expect(
        &mut c,
        &["slot B is pending with 3 tries", "rebooting into it"],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let mut c = boot(ARCH, &s.kernel, &with_v2, &s.disk, "x86-kexec-v2-boot");
    let lines = expect(
        &mut c,
        &[
            "booting slot B (version 2 v2), trial: 2 tries left",
            "kexec into slot B's kernel",
            "Linux version 6",
            "slot stage: this kernel was booted by kexec for slot B",
            "switching root to slot B",
            "FWPACK-TEST slot kernel",
            "FWPACK-TEST booted slot B version 2 pid 1",
            "FWPACK-TEST mark-good: Ok(Some(0))",
            "FWPACK-TEST status",
        ],
        WAIT,
    );
    // B's own kernel: another release string than the bootstrap's.
    assert!(
        lines[2].contains(&format!("Linux version {} ", generic.release))
            && generic.release != s.kernel.release,
        "{}",
        lines[2]
    );
    assert!(
        lines[5].contains(&format!("slot kernel {} ", generic.release))
            && lines[5].contains("test.marker=kernel-v2")
            && lines[5].contains("fwpack.slot=B"),
        "{}",
        lines[5]
    );
    assert!(lines[8].contains("\"active\":\"B\""), "{}", lines[8]);
    expect_exit(&mut c, WAIT);
    let st = status_json(&s.disk);
    assert!(
        st.contains("\"active\":\"B\"") && st.contains("\"confirmed\":true"),
        "{st}"
    );
}

#[test]
fn v3_kernel_that_panics_falls_back_after_its_tries() {
    let Some(s) = setup() else {
        return;
    };
    let v3 = slot_image(s.work.path(), &s.kernel, "root-b", 3, SlotKernel::Panics);
    let initrd = s.initrd(2, "kexec", &[("update-v3.fwi", &v3)]);
    let mut c = boot(ARCH, &s.kernel, &initrd, &s.disk, "x86-kexec-panic-apply");
    expect(
        &mut c,
        &["slot B is pending with 2 tries", "rebooting into it"],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    for (n, left) in [(1, 1), (2, 0)] {
        let mut c = boot(
            ARCH,
            &s.kernel,
            &initrd,
            &s.disk,
            &format!("x86-kexec-panic-{n}"),
        );
        expect(
            &mut c,
            &[
                &format!("booting slot B (version 3 v3), trial: {left} tries left"),
                "kexec into slot B's kernel",
                "FWPACK-TEST booted slot B version 3",
                "Kernel panic",
            ],
            WAIT,
        );
        // panic=1: the slot kernel reboots, and QEMU (-no-reboot) exits.
        expect_exit(&mut c, WAIT);
    }
    let mut c = boot(ARCH, &s.kernel, &initrd, &s.disk, "x86-kexec-panic-back");
    expect(
        &mut c,
        &[
            "slot B was tried and never confirmed; falling back to slot A",
            "booting slot A (version 1 v1)",
            "kexec into slot A's kernel",
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

#[test]
fn v3_kernel_that_kexec_refuses_falls_back_in_the_same_boot() {
    let Some(s) = setup() else {
        return;
    };
    let v3 = slot_image(s.work.path(), &s.kernel, "root-b", 3, SlotKernel::Refused);
    let initrd = s.initrd(3, "kexec", &[("update-v3.fwi", &v3)]);
    let mut c = boot(ARCH, &s.kernel, &initrd, &s.disk, "x86-kexec-refused-apply");
    expect(
        &mut c,
        &["slot B is pending with 3 tries", "rebooting into it"],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let mut c = boot(ARCH, &s.kernel, &initrd, &s.disk, "x86-kexec-refused");
    let lines = expect(
        &mut c,
        &[
            "booting slot B (version 3 v3), trial: 2 tries left",
            "slot B's kernel: the running kernel refused the kexec load (kexec_file_load",
            "slot B cannot be booted; counting the failed try and falling back to slot A",
            "kexec into slot A's kernel",
            "FWPACK-TEST booted slot A version 1",
        ],
        WAIT,
    );
    assert!(lines[1].contains("not a kernel image"), "{}", lines[1]);
    expect_exit(&mut c, WAIT);
    let st = status_json(&s.disk);
    assert!(
        st.contains("\"active\":\"A\"") && st.contains("\"pending\":null"),
        "{st}"
    );
    // The next boot does not try B again.
    let mut c = boot(ARCH, &s.kernel, &initrd, &s.disk, "x86-kexec-refused-again");
    expect(
        &mut c,
        &[
            "did not confirm; not applying it again",
            "booting slot A (version 1 v1)",
            "FWPACK-TEST booted slot A version 1",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
}

/// The active slot's kernel refused: nothing to fall back to, and a reboot
/// would meet the same kernel, so the slot's root boots under the
/// bootstrap kernel (switch_root) and the console says why.
#[test]
fn active_slot_kernel_refused_boots_it_by_switch_root() {
    if !tools_present(ARCH) {
        return;
    }
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    let work = tempfile::tempdir().unwrap();
    let a = slot_image(work.path(), &kernel, "root-a", 1, SlotKernel::Refused);
    let disk = disk_with(work.path(), true, &a, SLOTS, DISK);
    let initrd = initramfs(work.path(), ARCH, &config(3, "kexec"), &[], None);
    let mut c = boot(ARCH, &kernel, &initrd, &disk, "x86-kexec-active-refused");
    let lines = expect(
        &mut c,
        &[
            "booting slot A (version 1 v1)",
            "slot A's kernel: the running kernel refused the kexec load",
            "slot A is the active slot: booting it with switch_root under the bootstrap kernel instead",
            "switching root to slot A",
            "FWPACK-TEST slot kernel",
            "FWPACK-TEST booted slot A version 1 pid 1",
        ],
        WAIT,
    );
    assert!(
        !lines[4].contains("fwpack.slot="),
        "the bootstrap kernel: {}",
        lines[4]
    );
    expect_exit(&mut c, WAIT);
}

/// Slots that are byte ranges of an unpartitioned disk: the slot kernel
/// cannot name its root, so the slot carries the fwpack initramfs as its
/// initrd; seeing `fwpack.slot=A` it only mounts slot A (a loop device)
/// and switches root, without applying or counting anything.
#[test]
fn byte_range_slot_boots_through_its_own_fwpack_initramfs() {
    if !tools_present(ARCH) {
        return;
    }
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    let work = tempfile::tempdir().unwrap();
    let conf = config(3, "kexec").replace(
        "slot_device = partition\n",
        "modules = /etc/fwpack/modules.load\n",
    );
    let stage_dir = work.path().join("slot-initrd");
    std::fs::create_dir_all(&stage_dir).unwrap();
    let slot_initrd = std::fs::read(initramfs(
        &stage_dir,
        ARCH,
        &conf,
        &[],
        Some((&kernel, &["loop"])),
    ))
    .unwrap();
    let a = SLOT_FILES.image(
        work.path(),
        &kernel,
        "root-a",
        1,
        SlotKernel::Good("kernel-v1"),
        Some(&slot_initrd),
    );
    let disk = disk_with(work.path(), false, &a, SLOTS, DISK);
    let boot_dir = work.path().join("bootstrap");
    std::fs::create_dir_all(&boot_dir).unwrap();
    let bootstrap = initramfs(&boot_dir, ARCH, &conf, &[], Some((&kernel, &["loop"])));
    let mut c = boot(ARCH, &kernel, &bootstrap, &disk, "x86-kexec-range");
    let lines = expect(
        &mut c,
        &[
            "booting slot A (version 1 v1)",
            "is loop device /dev/loop",
            "slot A kernel command line:",
            "kexec into slot A's kernel",
            "Command line:",
            "fwpack-updater: fwpack-updater",
            "slot stage: this kernel was booted by kexec for slot A",
            "is loop device /dev/loop",
            "switching root to slot A",
            "FWPACK-TEST booted slot A version 1 pid 1",
            "FWPACK-TEST mark-good: Ok(Some(0))",
        ],
        WAIT,
    );
    assert!(!lines[2].contains("root="), "{}", lines[2]);
    expect_exit(&mut c, WAIT);
}

/// QEMU start -> the slot's init, booting slot A by kexec and by
/// switch_root (the same disk and initramfs apart from `boot`). Prints
/// the figures; TCG timings vary with the host's load, so nothing is
/// asserted about them. A measurement, not a test: `cargo xtask bench
/// kexec` runs it.
#[test]
#[ignore = "a measurement: cargo xtask bench kexec"]
fn kexec_boot_time() {
    let Some(s) = setup() else {
        return;
    };
    let mut figures = Vec::new();
    for mode in ["switch_root", "kexec", "switch_root", "kexec"] {
        let initrd = s.initrd(3, mode, &[]);
        let t = Instant::now();
        let mut c = boot(
            ARCH,
            &s.kernel,
            &initrd,
            &s.disk,
            &format!("x86-time-{mode}"),
        );
        let marker = "FWPACK-TEST booted slot A version 1 pid 1";
        expect(&mut c, &["fwpack-updater: fwpack-updater"], WAIT);
        let updater_start = t.elapsed();
        expect(&mut c, &[marker], WAIT);
        let init = t.elapsed();
        expect_exit(&mut c, WAIT);
        figures.push((mode, updater_start, init));
    }
    for (mode, u, i) in figures {
        eprintln!(
            "x86_64 TCG {mode:11}: updater start {:.1} s, slot init {:.1} s (updater -> slot init {:.1} s)",
            u.as_secs_f64(),
            i.as_secs_f64(),
            (i - u).as_secs_f64()
        );
    }
}
