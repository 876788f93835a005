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

use build_common::{expect_lines, ext4_rootfs, fwpack, show};

const MARKER: &str = "FWPACK-BUILD-TEST raspi3b slot A init";

/// `fwpack build` for rpi-zero2w as `cargo xtask demo` does it; returns
/// the output directory.
fn build(dir: &Path, kernel: &testkit::kernels::Kernel, extra: &[&str]) -> std::path::PathBuf {
    let firmware = testkit::kernels::raspi_firmware().expect("Debian's raspi-firmware");
    ext4_rootfs(dir, testkit::kernels::Arch::Aarch64, MARKER);
    assert!(fwpack(&["keygen", "-o", "k.pem"], dir).status.success());
    let mut args = vec![
        "build",
        "--board",
        "rpi-zero2w",
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
    ];
    args.extend_from_slice(extra);
    let out = fwpack(&args, dir);
    assert!(out.status.success(), "{}", show(&out));
    dir.join("out")
}

/// The QEMU command for the built artifacts; `sd` is the (grown) card.
pub fn raspi3b_command(out: &Path, sd: &Path) -> Command {
    let boot = out.join("boot");
    let cmdline = std::fs::read_to_string(boot.join("cmdline.txt")).unwrap();
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
        .arg(boot.join("initramfs.cpio.gz"))
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
    let out = build(work.path(), &kernel, &[]);
    let sd = sd_copy(&out, work.path());
    let mut c = testkit::qemu::Console::spawn(raspi3b_command(&out, &sd), "raspi3b-zero2w")
        .expect("starting QEMU");
    expect_lines(
        &mut c,
        &[
            "fwpack-updater: fwpack-updater",
            "found /dev/mmcblk0",
            "switching root to slot A",
            MARKER,
        ],
        400,
    );
}
