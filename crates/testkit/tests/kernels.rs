//! Fetches the real Debian kernels (cached after the first run) and checks
//! the pieces later tests rely on are where `Kernel` says they are.

use testkit::kernels::{self, Arch};

#[test]
fn amd64_cloud_kernel() {
    if !testkit::tools::require("apt-get") || !testkit::tools::require("dpkg-deb") {
        return;
    }
    let k = kernels::amd64_cloud().unwrap();
    assert_eq!(k.arch, Arch::X86_64);
    assert!(k.release.ends_with("-cloud-amd64"), "{}", k.release);
    assert_eq!(k.package, format!("linux-image-{}", k.release));
    let head = std::fs::read(&k.vmlinuz).unwrap();
    // bzImage: "HdrS" setup header magic at 0x202.
    assert_eq!(
        head.get(0x202..0x206),
        Some(&b"HdrS"[..]),
        "{}",
        k.vmlinuz.display()
    );
    assert!(k.config_builtin("BLK_DEV_INITRD").unwrap());
    assert!(k.config_builtin("RD_GZIP").unwrap());
    assert!(k.modules_dir.join("kernel").is_dir());
    // Idempotent: a second call finds the same unpacked tree.
    assert_eq!(kernels::amd64_cloud().unwrap().root, k.root);
}

#[test]
fn arm64_kernel() {
    if !testkit::tools::require("apt-get") || !testkit::tools::require("dpkg-deb") {
        return;
    }
    let k = kernels::arm64().unwrap();
    assert_eq!(k.arch, Arch::Aarch64);
    assert!(k.release.ends_with("-arm64"), "{}", k.release);
    let head = std::fs::read(&k.vmlinuz).unwrap();
    // arm64 Image header: "ARM\x64" magic at offset 56.
    assert_eq!(head.get(56..60), Some(&b"ARM\x64"[..]));
    assert!(k
        .dtbs_dir
        .join("broadcom/bcm2837-rpi-zero-2-w.dtb")
        .is_file());
    assert!(k
        .modules_dir
        .join("kernel/drivers/block/virtio_blk.ko")
        .is_file());
    assert!(
        !k.config_builtin("VIRTIO_BLK").unwrap(),
        "virtio_blk is expected to be a module"
    );
}

#[test]
fn riscv64_trixie_kernel() {
    if !testkit::tools::require("apt-get") || !testkit::tools::require("dpkg-deb") {
        return;
    }
    let k = kernels::riscv64().unwrap();
    assert_eq!(k.arch, Arch::Riscv64);
    assert!(k.release.starts_with("6.12."), "{}", k.release);
    assert!(k.release.ends_with("-riscv64"), "{}", k.release);
    let head = std::fs::read(&k.vmlinuz).unwrap();
    // RISC-V Image header: "RISCV\0\0\0" at 48, "RSC\x05" at 56.
    assert_eq!(
        head.get(48..53),
        Some(&b"RISCV"[..]),
        "{}",
        k.vmlinuz.display()
    );
    assert_eq!(head.get(56..60), Some(&b"RSC\x05"[..]));
    for board in ["v1.2a", "v1.3b"] {
        let dtb = k
            .dtbs_dir
            .join(format!("starfive/jh7110-starfive-visionfive-2-{board}.dtb"));
        assert!(dtb.is_file(), "{}", dtb.display());
    }
    // Modules are plain .ko in the cache (the package ships .ko.xz).
    for m in [
        "kernel/drivers/block/virtio_blk.ko",
        "kernel/drivers/mmc/host/dw_mmc-starfive.ko",
        "kernel/fs/ext4/ext4.ko",
    ] {
        assert!(k.modules_dir.join(m).is_file(), "{m}");
    }
    assert!(!k.config_builtin("VIRTIO_BLK").unwrap());
}
