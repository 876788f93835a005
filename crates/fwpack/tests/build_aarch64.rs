//! `fwpack build` for the arm64 boards with Debian's arm64 kernel: the
//! qemu-aarch64 image boots (virtio and ext4 loaded from the initramfs as
//! modules) into slot A by kexec (its default), with the slot's own
//! updater (the network build) in the slot, and the rpi-zero2w boot partition carries what the
//! Pi firmware needs.

use std::process::Command;

mod build_common;

use build_common::{expect_lines, fwpack, show};

const MARKER: &str = "FWPACK-BUILD-TEST aarch64 slot A init";

/// qemu-aarch64 boots by kexec: the build writes the 33 MB kernel, its
/// initrd and the slot's updater into the slot.
fn rootfs(dir: &std::path::Path) {
    build_common::ext4_rootfs_with(
        dir,
        testkit::kernels::Arch::Aarch64,
        &testkit::init::InitProgram::new(MARKER),
        "64M",
    );
}

#[test]
fn qemu_aarch64_image_boots_into_slot_a() {
    if !testkit::tools::require("qemu-system-aarch64") {
        return;
    }
    let kernel = testkit::kernels::arm64().expect("Debian arm64 kernel");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    rootfs(dir);
    assert!(fwpack(&["keygen", "-o", "k.pem"], dir).status.success());
    let out = fwpack(
        &[
            "build",
            "--build-updater",
            "--board",
            "qemu-aarch64",
            "--out",
            "out",
            "--kernel",
            kernel.vmlinuz.to_str().unwrap(),
            "--modules-dir",
            kernel.modules_dir.to_str().unwrap(),
            "--rootfs",
            "rootfs.img",
            "--key",
            "k.pem",
        ],
        dir,
    );
    assert!(out.status.success(), "{}", show(&out));
    let out_dir = dir.join("out");
    // Two builds of the updater: /init without the network client, the
    // slot's /usr/bin/fwpack-updater with it.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("manifest.json")).unwrap()).unwrap();
    let (init, slot) = (
        &manifest["updater"]["sha256"],
        &manifest["slot_updater"]["sha256"],
    );
    assert!(
        init.is_string() && slot.is_string() && init != slot,
        "manifest.json: {manifest}"
    );
    let mut c =
        testkit::qemu::Qemu::new(testkit::kernels::Arch::Aarch64, out_dir.join("boot/Image"))
            .initrd(out_dir.join("boot/initramfs.cpio.gz"))
            .memory(512)
            .drive(out_dir.join("sdcard.img"))
            .name("build-aarch64-boot")
            .spawn()
            .expect("qemu");
    expect_lines(
        &mut c,
        &[
            "fwpack-updater: fwpack-updater",
            "kernel modules ready",
            "found /dev/vda",
            "kexec into slot A's kernel",
            "slot stage: this kernel was booted by kexec for slot A",
            "switching root to slot A",
            MARKER,
        ],
        240,
    );
}

#[test]
fn rpi_zero2w_boot_partition_has_what_the_firmware_needs() {
    let kernel = testkit::kernels::arm64().expect("Debian arm64 kernel");
    let Ok(firmware) = testkit::kernels::raspi_firmware() else {
        panic!("Raspberry Pi firmware from Debian's raspi-firmware package");
    };
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    // rpi-zero2w boots by kexec: the build writes the 33 MB kernel and
    // its initrd into the slot.
    build_common::ext4_rootfs_with(
        dir,
        testkit::kernels::Arch::Aarch64,
        &testkit::init::InitProgram::new(MARKER),
        "64M",
    );
    assert!(fwpack(&["keygen", "-o", "k.pem"], dir).status.success());
    let out = fwpack(
        &[
            "build",
            "--build-updater",
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
        ],
        dir,
    );
    assert!(
        out.status.success(),
        "default board is rpi-zero2w: {}",
        show(&out)
    );
    let boot = dir.join("out/boot");
    let config = std::fs::read_to_string(boot.join("config.txt")).unwrap();
    for line in [
        "arm_64bit=1",
        "kernel=kernel8.img",
        "initramfs initramfs.cpio.gz followkernel",
        "enable_uart=1",
        "device_tree=bcm2837-rpi-zero-2-w.dtb",
    ] {
        assert!(
            config.lines().any(|l| l == line),
            "config.txt lacks `{line}`:\n{config}"
        );
    }
    let cmdline = std::fs::read_to_string(boot.join("cmdline.txt")).unwrap();
    assert!(cmdline.starts_with("console=ttyS1,115200 "), "{cmdline}");
    for f in [
        "kernel8.img",
        "bcm2837-rpi-zero-2-w.dtb",
        "bootcode.bin",
        "start.elf",
        "fixup.dat",
    ] {
        assert!(
            boot.join(f).is_file(),
            "{f} missing from the boot partition"
        );
    }
    // The DTB is Debian's Zero 2 W tree, byte for byte.
    assert_eq!(
        std::fs::read(boot.join("bcm2837-rpi-zero-2-w.dtb")).unwrap(),
        std::fs::read(kernel.dtbs_dir.join("broadcom/bcm2837-rpi-zero-2-w.dtb")).unwrap()
    );
    // The updater inside is the aarch64 build and passed the 1 MiB budget.
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc {} | cpio -itv --quiet init",
            boot.join("initramfs.cpio.gz").display()
        ))
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&listing.stdout).to_string();
    let size: u64 = line
        .split_whitespace()
        .nth(4)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(size > 0 && size <= 1 << 20, "{line}");
}
