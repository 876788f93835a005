//! The rpi-zero2w artifacts of `fwpack build` booting on QEMU's `-M
//! raspi3b` (BCM2837, the Zero 2 W's SoC family): the boot partition's
//! kernel8.img, Zero 2 W device tree and initramfs, sdcard.img on the SD
//! controller. The updater loads the SD host modules from the initramfs,
//! finds /dev/mmcblk0 and boots slot A.
//!
//! QEMU differences from the board, and why they do not matter here:
//! QEMU loads kernel, DTB and initramfs itself (the GPU firmware files on
//! the card are not run), the SD card must be a power of two in size (the
//! copy is grown to 1 GiB; the partitions stay where they are), and the
//! board has no power-off, so the test stops QEMU once slot A's init ran.

use std::path::Path;
use std::process::Command;

mod build_common;

use build_common::{expect_lines, ext4_rootfs_with, fwpack, show};
use testkit::init::InitProgram;

const MARKER: &str = "FWPACK-BUILD-TEST raspi3b slot A init";

/// `fwpack build` for rpi-zero2w as `cargo xtask demo` does it (`board`:
/// `--board rpi-zero2w` or `--config FILE`); returns the output directory.
/// The root filesystem's init is `init` and its size `rootfs_size` (a
/// kexec build adds the 33 MB kernel and its initrd to it).
fn build(
    dir: &Path,
    kernel: &testkit::kernels::Kernel,
    board: &[&str],
    init: &InitProgram,
    rootfs_size: &str,
) -> std::path::PathBuf {
    let firmware = testkit::kernels::raspi_firmware().expect("Debian's raspi-firmware");
    ext4_rootfs_with(dir, testkit::kernels::Arch::Aarch64, init, rootfs_size);
    assert!(fwpack(&["keygen", "-o", "k.pem"], dir).status.success());
    let mut args = vec!["build", "--build-updater"];
    args.extend_from_slice(board);
    args.extend_from_slice(&[
        "--out",
        "out",
        "--kernel",
        kernel.vmlinuz.to_str().unwrap(),
        "--modules-dir",
        kernel.modules_dir.to_str().unwrap(),
        "--dtb-dir",
        kernel.dtbs_dir.to_str().unwrap(),
        "--firmware-dir",
        firmware.to_str().unwrap(),
        "--rootfs",
        "rootfs.img",
        "--key",
        "k.pem",
    ]);
    let out = fwpack(&args, dir);
    assert!(out.status.success(), "{}", show(&out));
    dir.join("out")
}

/// The QEMU command for the built artifacts; `sd` is the (grown) card,
/// `initrd` replaces the built initramfs when given, `append` goes after
/// cmdline.txt.
pub fn raspi3b_command(out: &Path, sd: &Path, initrd: Option<&Path>, append: &str) -> Command {
    let boot = out.join("boot");
    let cmdline = std::fs::read_to_string(boot.join("cmdline.txt")).unwrap();
    let cmdline = format!("{} {append}", cmdline.trim());
    let initrd = initrd.map_or_else(|| boot.join("initramfs.cpio.gz"), Path::to_path_buf);
    let mut c = Command::new("qemu-system-aarch64");
    c.args(["-accel", "tcg", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .args(["-M", "raspi3b", "-m", "1G"])
        // UART0 (PL011, Bluetooth on the Zero 2 W) first, the mini UART
        // (ttyS1, the board's console) second.
        .args(["-serial", "null", "-serial", "stdio"])
        .arg("-kernel")
        .arg(boot.join("kernel8.img"))
        .arg("-dtb")
        .arg(boot.join("bcm2837-rpi-zero-2-w.dtb"))
        .arg("-initrd")
        .arg(initrd)
        .arg("-drive")
        .arg(format!("if=sd,format=raw,file={}", sd.display()))
        .arg("-append")
        .arg(cmdline.trim());
    c
}

/// A copy of sdcard.img grown to 1 GiB (QEMU's SD card model takes only
/// power-of-two sizes).
fn sd_copy(out: &Path, dir: &Path) -> std::path::PathBuf {
    let sd = dir.join("sd-1g.img");
    std::fs::copy(out.join("sdcard.img"), &sd).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&sd).unwrap();
    assert!(f.metadata().unwrap().len() <= 1 << 30);
    f.set_len(1 << 30).unwrap();
    sd
}

#[test]
fn rpi_zero2w_artifacts_boot_slot_a_on_raspi3b() {
    if !testkit::tools::require("qemu-system-aarch64") || !testkit::tools::require("mkfs.ext4") {
        return;
    }
    let kernel = testkit::kernels::arm64().expect("Debian arm64 kernel");
    let work = tempfile::tempdir().unwrap();
    // The board option for kernels without kexec (the default is kexec).
    let yaml = std::fs::read_to_string(testkit::workspace_root().join("configs/rpi-zero2w.yaml"))
        .unwrap()
        .replace("\nboot: kexec\n", "\nboot: switch_root\n");
    assert!(yaml.contains("\nboot: switch_root\n"));
    let cfg = work.path().join("rpi-zero2w.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let out = build(
        work.path(),
        &kernel,
        &["--config", cfg.to_str().unwrap()],
        &InitProgram::new(MARKER),
        "8M",
    );
    let sd = sd_copy(&out, work.path());
    let t = std::time::Instant::now();
    let mut c =
        testkit::qemu::Console::spawn(raspi3b_command(&out, &sd, None, ""), "raspi3b-zero2w")
            .expect("starting QEMU");
    expect_lines(&mut c, &["fwpack-updater: fwpack-updater"], 400);
    let updater = t.elapsed();
    expect_lines(
        &mut c,
        &["found /dev/mmcblk0", "switching root to slot A", MARKER],
        400,
    );
    // The switch_root figure next to the kexec build's (docs/BENCHMARKS.md).
    eprintln!(
        "raspi3b (rpi-zero2w, boot: switch_root): updater start {:.1} s, slot A init {:.1} s (updater -> slot init {:.1} s)",
        updater.as_secs_f64(),
        t.elapsed().as_secs_f64(),
        (t.elapsed() - updater).as_secs_f64()
    );
}

/// The kexec test init (crates/kexec/src/bin/kexec-test-init.rs), static
/// aarch64, built now.
fn kexec_test_init() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = "aarch64-unknown-linux-musl";
    let out = Command::new(cargo)
        .args(["build", "-p", "kexec", "--bin", "kexec-test-init"])
        .args(["--features", "test-init", "--release", "--target", target])
        .current_dir(testkit::workspace_root())
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    testkit::target_dir()
        .join(target)
        .join("release/kexec-test-init")
}

/// An initramfs whose /init kexecs `kernel` (with the init alone as the
/// second kernel's initramfs).
fn kexec_initramfs(dir: &Path, kernel: &Path) -> std::path::PathBuf {
    use initramfs::{Builder, DeviceKind, Meta, Options};
    let init = kexec_test_init();
    let base = || {
        let mut b = Builder::new(Options::default());
        b.add_file("/init", &init, Some(Meta::mode(0o755))).unwrap();
        b.add_device("/dev/console", DeviceKind::Char, 5, 1, Meta::mode(0o600))
            .unwrap();
        for d in ["/proc", "/sys", "/dev"] {
            b.add_dir(d, Meta::mode(0o755)).unwrap();
        }
        b
    };
    let inner = dir.join("inner.cpio");
    base()
        .write_file(&inner, initramfs::Compression::None)
        .unwrap();
    let mut b = base();
    b.add_dir("/kexec", Meta::mode(0o755)).unwrap();
    b.add_file("/kexec/kernel", kernel, Some(Meta::mode(0o644)))
        .unwrap();
    b.add_file("/kexec/initrd", &inner, Some(Meta::mode(0o644)))
        .unwrap();
    let out = dir.join("kexec.cpio");
    b.write_file(&out, initramfs::Compression::None).unwrap();
    out
}

/// With `boot: kexec` the generated cmdline.txt carries
/// nr_cpus=1, and with exactly those boot files (kernel8.img, the Zero 2 W
/// tree, cmdline.txt) kexec of kernel8.img works on raspi3b and the
/// kexec'd kernel brings up all four CPUs. The initramfs is the kexec test
/// init's, not the updater's: this proves what the board files must give
/// the updater's kexec boot.
#[test]
fn rpi_zero2w_kexec_boot_files_let_kexec_work_on_raspi3b() {
    if !testkit::tools::require("qemu-system-aarch64") || !testkit::tools::require("mkfs.ext4") {
        return;
    }
    let kernel = testkit::kernels::arm64().expect("Debian arm64 kernel");
    let work = tempfile::tempdir().unwrap();
    let configs = testkit::workspace_root().join("configs");
    let yaml = std::fs::read_to_string(configs.join("rpi-zero2w.yaml")).unwrap();
    // The board's default.
    assert!(yaml.contains("\nboot: kexec\n"));
    let cfg = work.path().join("rpi-zero2w.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let out = build(
        work.path(),
        &kernel,
        &["--config", cfg.to_str().unwrap()],
        &InitProgram::new(MARKER),
        // The kexec build writes the 33 MB kernel into the slot.
        "64M",
    );
    let cmdline = std::fs::read_to_string(out.join("boot/cmdline.txt")).unwrap();
    assert!(cmdline.trim_end().ends_with(" nr_cpus=1"), "{cmdline}");

    let sd = sd_copy(&out, work.path());
    let initrd = kexec_initramfs(work.path(), &out.join("boot/kernel8.img"));
    let mut c = testkit::qemu::Console::spawn(
        raspi3b_command(&out, &sd, Some(&initrd), "kexec-test=again"),
        "raspi3b-zero2w-kexec",
    )
    .expect("starting QEMU");
    let t = std::time::Instant::now();
    expect_lines(&mut c, &["KEXEC-TEST init up: cpus online 0;"], 400);
    let first = t.elapsed();
    expect_lines(
        &mut c,
        &[
            "KEXEC-TEST loaded (Load); executing",
            "KEXEC-TEST init up: cpus online 0-3;",
            "KEXEC-TEST second kernel reached init",
        ],
        400,
    );
    eprintln!(
        "raspi3b (rpi-zero2w boot files): bootstrap start -> first init {:.1} s, -> second kernel's init {:.1} s",
        first.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
}

/// The rpi-zero2w build with `boot: kexec`, as built: the updater chooses
/// slot A, kexec_loads slot A's own kernel8.img (written into the slot by
/// `fwpack build`, with its cmdline, the Zero 2 W tree and the fwpack
/// initramfs as its initrd) and jumps; the slot kernel's initramfs sees
/// `fwpack.slot=A` (its slot stage) and switches root into slot A.
#[test]
fn rpi_zero2w_kexec_build_boots_slot_a_by_kexec_on_raspi3b() {
    if !testkit::tools::require("qemu-system-aarch64")
        || !testkit::tools::require("mkfs.ext4")
        || !testkit::tools::require("debugfs")
    {
        return;
    }
    let kernel = testkit::kernels::arm64().expect("Debian arm64 kernel");
    let work = tempfile::tempdir().unwrap();
    let yaml =
        std::fs::read_to_string(testkit::workspace_root().join("configs/rpi-zero2w.yaml")).unwrap();
    // The board's default.
    assert!(yaml.contains("\nboot: kexec\n"));
    let cfg = work.path().join("rpi-zero2w.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let out = build(
        work.path(),
        &kernel,
        &["--config", cfg.to_str().unwrap()],
        // The slot's init says whether its kernel has the fourth CPU
        // (with the bootstrap's nr_cpus=1 there would be no cpu3).
        &InitProgram::new(MARKER)
            .mount("sysfs", "/sys")
            .probe("/sys/devices/system/cpu/cpu3"),
        "64M",
    );
    let sd = sd_copy(&out, work.path());
    let t = std::time::Instant::now();
    let mut c = testkit::qemu::Console::spawn(
        raspi3b_command(&out, &sd, None, ""),
        "raspi3b-zero2w-updater-kexec",
    )
    .expect("starting QEMU");
    expect_lines(&mut c, &["fwpack-updater: fwpack-updater"], 400);
    let updater = t.elapsed();
    expect_lines(&mut c, &["found /dev/mmcblk0", "booting slot A"], 400);
    // nr_cpus=1 is the bootstrap's (cmdline.txt), not the slot kernel's.
    let slot_cmdline = c
        .wait_for(
            "slot A kernel command line:",
            std::time::Duration::from_secs(400),
        )
        .unwrap();
    assert!(
        slot_cmdline.contains("fwpack.slot=A") && !slot_cmdline.contains("nr_cpus"),
        "{slot_cmdline}"
    );
    expect_lines(
        &mut c,
        &[
            "slot A kernel loaded (kexec_load)",
            "kexec into slot A's kernel",
        ],
        400,
    );
    let jump = t.elapsed();
    expect_lines(
        &mut c,
        &[
            // Only the slot kernel's command line has fwpack.slot=A.
            "slot stage: this kernel was booted by kexec for slot A",
            "switching root to slot A",
            MARKER,
            "probe /sys/devices/system/cpu/cpu3 d",
        ],
        400,
    );
    eprintln!(
        "raspi3b (rpi-zero2w, boot: kexec): updater start {:.1} s, kexec {:.1} s, slot A init {:.1} s (updater -> slot init {:.1} s)",
        updater.as_secs_f64(),
        jump.as_secs_f64(),
        t.elapsed().as_secs_f64(),
        (t.elapsed() - updater).as_secs_f64()
    );
}

/// A property added to the device tree QEMU hands the bootstrap kernel —
/// standing in for a fixup the Pi firmware makes (memory size, the
/// VideoCore reservation, overlays, serial number, MAC) — is in the
/// kexec'd slot kernel's /proc/device-tree: the slot kernel gets the live
/// tree with /chosen rewritten (`kexec_dtb: firmware`, the default), not
/// the static DTB `fwpack build` put into the slot.
#[test]
fn hostile_firmware_fixup_reaches_the_kexec_slot_kernel_on_raspi3b() {
    if !testkit::tools::require("qemu-system-aarch64")
        || !testkit::tools::require("mkfs.ext4")
        || !testkit::tools::require("debugfs")
    {
        return;
    }
    const FIXUP: &str = "/proc/device-tree/fwpack,firmware-fixup";
    let kernel = testkit::kernels::arm64().expect("Debian arm64 kernel");
    let work = tempfile::tempdir().unwrap();
    let yaml =
        std::fs::read_to_string(testkit::workspace_root().join("configs/rpi-zero2w.yaml")).unwrap();
    // The board's default.
    assert!(yaml.contains("\nboot: kexec\n"));
    let cfg = work.path().join("rpi-zero2w.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let out = build(
        work.path(),
        &kernel,
        &["--config", cfg.to_str().unwrap()],
        &InitProgram::new(MARKER)
            .mount("proc", "/proc")
            .probe(FIXUP)
            .probe("/proc/device-tree/model"),
        "64M",
    );
    assert!(
        std::fs::read_to_string(out.join("boot/cmdline.txt")).is_ok(),
        "the build has a boot partition"
    );
    // The "firmware": what QEMU loads with -dtb (the copy on the card and
    // the one in the slot stay as built).
    let dtb_path = out.join("boot/bcm2837-rpi-zero-2-w.dtb");
    let mut fdt = kexec::fdt::Fdt::parse(&std::fs::read(&dtb_path).unwrap()).unwrap();
    assert!(fdt.root.prop("fwpack,firmware-fixup").is_none());
    fdt.root
        .set_prop("fwpack,firmware-fixup", b"hostile-test\0".to_vec());
    std::fs::write(&dtb_path, fdt.to_bytes()).unwrap();
    let sd = sd_copy(&out, work.path());
    let mut c = testkit::qemu::Console::spawn(
        raspi3b_command(&out, &sd, None, ""),
        "raspi3b-zero2w-firmware-fixup",
    )
    .expect("starting QEMU");
    let wait = std::time::Duration::from_secs(400);
    let mut line = |p: &str| {
        c.wait_for(p, wait)
            .unwrap_or_else(|e| panic!("waiting for `{p}`: {e}"))
    };
    line("fwpack-updater: fwpack-updater");
    line("found /dev/mmcblk0");
    line("booting slot A");
    line("its /boot/fwpack/dtb is not used (kexec_dtb = firmware)");
    let cmdline = line("slot A kernel command line:");
    assert!(cmdline.contains("root=PARTUUID="), "{cmdline}");
    line("kexec into slot A's kernel");
    line("slot stage: this kernel was booted by kexec for slot A");
    line(MARKER);
    // A file of 13 bytes: "hostile-test" and its NUL.
    let probe = line(&format!("probe {FIXUP} "));
    assert!(probe.trim_end().ends_with(" 13"), "{probe}");
}

/// Debian's kernels name their builder in the version banner
/// (`linux_banner`, `/proc/version`).
const DEBIAN_BUILDER: &[u8] = b"debian-kernel@lists.debian.org";

/// `kernel` with its builder replaced by `marker` (padded to the same
/// length): the two releases then ship different kernel files, and what
/// /proc/version says proves which file runs. Plain string data; nothing
/// checks the Image.
fn stamped_kernel(kernel: &Path, marker: &str, out: &Path) -> String {
    let mut k = std::fs::read(kernel).unwrap();
    let mut to = format!("{marker}@fwpack-raspi3b-kernel-test").into_bytes();
    to.truncate(DEBIAN_BUILDER.len());
    let mut n = 0;
    let mut i = 0;
    while let Some(at) = k[i..]
        .windows(DEBIAN_BUILDER.len())
        .position(|w| w == DEBIAN_BUILDER)
    {
        k[i + at..i + at + to.len()].copy_from_slice(&to);
        i += at + to.len();
        n += 1;
    }
    assert!(
        n > 0,
        "no Debian builder in the banner of {}",
        kernel.display()
    );
    std::fs::write(out, &k).unwrap();
    String::from_utf8(to).unwrap()
}

/// The slot's init: the kernel it runs under, then it confirms the slot
/// with the slot's own updater (/usr/bin/fwpack-updater, the network
/// build `fwpack build` wrote) and parks (raspi3b has no power-off).
const VERSION_INIT: &str = r#"
use std::io::Write;
fn main() {
    let mut out = std::io::stdout();
    let version = std::fs::read_to_string("/proc/version").unwrap_or_default();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(out, "FWPACK-RASPI uname -r {} /proc/version: {}", release.trim(), version.trim());
    let st = std::process::Command::new("/usr/bin/fwpack-updater").arg("mark-good").status();
    let _ = writeln!(out, "FWPACK-RASPI mark-good: {:?}", st.map(|s| s.code()));
    let _ = out.flush();
    loop { std::thread::park(); }
}
"#;

/// One rpi-zero2w release in `dir`: root filesystem (64 MiB: the kexec
/// build adds the 33 MB kernel, its initrd and the slot's updater), then
/// `fwpack build` with `kernel`, version `version` and `extra` arguments.
fn release(
    dir: &Path,
    cfg: &Path,
    kernel: &Path,
    deb: &testkit::kernels::Kernel,
    version: u64,
    extra: &[&str],
) -> std::path::PathBuf {
    let firmware = testkit::kernels::raspi_firmware().expect("Debian's raspi-firmware");
    let init = testkit::program::build_static(
        "fwpack-raspi-version-init",
        VERSION_INIT,
        testkit::kernels::Arch::Aarch64,
    )
    .expect("building the slot init");
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sbin")).unwrap();
    std::fs::copy(&init, tree.join("sbin/init")).unwrap();
    for d in ["dev", "proc", "sys", "run"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    let st = Command::new(testkit::tools::find("mkfs.ext4").unwrap())
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(dir.join("rootfs.img"))
        .arg("64M")
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.ext4");
    let version = version.to_string();
    let label = format!("v{version}");
    let mut args = vec![
        "build",
        "--build-updater",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        "out",
        "--kernel",
        kernel.to_str().unwrap(),
        "--modules-dir",
        deb.modules_dir.to_str().unwrap(),
        "--dtb-dir",
        deb.dtbs_dir.to_str().unwrap(),
        "--firmware-dir",
        firmware.to_str().unwrap(),
        "--rootfs",
        "rootfs.img",
        "--key",
        "../k.pem",
        "--version",
        &version,
        "--label",
        &label,
    ];
    args.extend_from_slice(extra);
    let out = fwpack(&args, dir);
    assert!(out.status.success(), "{}", show(&out));
    dir.join("out")
}

/// With the board's default `boot: kexec`, an update changes the kernel
/// that runs: v1's kernel8.img (the bootstrap's, and slot A's) and v2's
/// (slot B's) differ in their banner's builder; v1's initramfs carries
/// v2's update.fwi, the updater writes it to slot B and reboots; the next
/// boot kexecs slot B's own kernel, whose /proc/version names v2's
/// builder, and B confirms itself with its own updater. Two raspi3b TCG
/// boots (~2-5 minutes with both builds on a loaded 2-core machine).
#[test]
fn rpi_zero2w_update_changes_the_running_kernel_on_raspi3b() {
    if !testkit::tools::require("qemu-system-aarch64")
        || !testkit::tools::require("mkfs.ext4")
        || !testkit::tools::require("debugfs")
    {
        return;
    }
    let deb = testkit::kernels::arm64().expect("Debian arm64 kernel");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let yaml =
        std::fs::read_to_string(testkit::workspace_root().join("configs/rpi-zero2w.yaml")).unwrap();
    assert!(yaml.contains("\nboot: kexec\n"), "the board's default");
    // v1's boot partition also holds v2's update.fwi in the initramfs.
    assert!(yaml.contains("\n  boot_mib: 64\n"));
    // QEMU's raspi3b resets the machine as soon as the updater opens the
    // bcm2835 watchdog (observed: the apply's console ends there and QEMU
    // exits under -no-reboot), so this run goes without it; the watchdog
    // paths have their own tests on qemu-aarch64 (i6300esb).
    let wdt = "\nwatchdog:\n  module: bcm2835_wdt\n  timeout_s: 60\n";
    assert!(yaml.contains(wdt));
    let cfg = w.join("rpi-zero2w.yaml");
    std::fs::write(
        &cfg,
        yaml.replace("\n  boot_mib: 64\n", "\n  boot_mib: 160\n")
            .replace(wdt, "\n"),
    )
    .unwrap();
    assert!(fwpack(&["keygen", "-o", "k.pem"], w).status.success());
    let (d1, d2) = (w.join("v1"), w.join("v2"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let b1 = stamped_kernel(&deb.vmlinuz, "kernel-v1", &w.join("kernel-v1"));
    let b2 = stamped_kernel(&deb.vmlinuz, "kernel-v2", &w.join("kernel-v2"));
    let out2 = release(&d2, &cfg, &w.join("kernel-v2"), &deb, 2, &[]);
    let fwi = out2.join("update.fwi");
    let out1 = release(
        &d1,
        &cfg,
        &w.join("kernel-v1"),
        &deb,
        1,
        &["--include-image", fwi.to_str().unwrap()],
    );
    let sd = sd_copy(&out1, w);
    let wait = 600;

    let t = std::time::Instant::now();
    let mut c = testkit::qemu::Console::spawn(
        raspi3b_command(&out1, &sd, None, ""),
        "raspi3b-zero2w-update-1",
    )
    .expect("starting QEMU");
    expect_lines(
        &mut c,
        &[
            "found /dev/mmcblk0",
            "(version 2 v2) to slot B",
            "slot B is pending",
            "rebooting into it",
        ],
        wait,
    );
    // -no-reboot: QEMU exits where the board would reset.
    c.wait_exit(std::time::Duration::from_secs(120))
        .expect("QEMU exits at the reboot");
    let applied = t.elapsed();

    let mut c = testkit::qemu::Console::spawn(
        raspi3b_command(&out1, &sd, None, ""),
        "raspi3b-zero2w-update-2",
    )
    .expect("starting QEMU");
    expect_lines(
        &mut c,
        &[
            "booting slot B (version 2 v2), trial",
            "kexec into slot B's kernel",
            "slot stage: this kernel was booted by kexec for slot B",
            "switching root to slot B",
        ],
        wait,
    );
    let running = c
        .wait_for(
            "FWPACK-RASPI uname -r",
            std::time::Duration::from_secs(wait),
        )
        .unwrap();
    assert!(
        running.contains(&b2) && !running.contains(&b1),
        "slot B runs v2's kernel file, not the bootstrap's ({b1}): {running}"
    );
    expect_lines(&mut c, &["FWPACK-RASPI mark-good: Ok(Some(0))"], wait);
    eprintln!(
        "raspi3b (rpi-zero2w, boot: kexec) update: apply boot {:.1} s, slot B confirmed {:.1} s later",
        applied.as_secs_f64(),
        (t.elapsed() - applied).as_secs_f64()
    );
}
