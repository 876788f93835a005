//! A real kernel boots what `fwpack initramfs` builds from the shipped
//! recipe: Debian's amd64 cloud kernel under qemu-system-x86_64 (TCG) runs
//! our static test `/init`, which loads the recipe's modules in the order
//! of `/etc/fwpack/modules.load`, mounts sysfs, reports what it sees and
//! powers off. The test reads the serial console line by line.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::init::InitProgram;
use testkit::kernels::{self, Arch, Kernel};
use testkit::qemu::Qemu;

const BOOT: Duration = Duration::from_secs(60);

fn available() -> bool {
    ["qemu-system-x86_64", "apt-get", "dpkg-deb"]
        .iter()
        .all(|t| testkit::tools::require(t))
}

fn pack(out: &Path, init: &Path, k: &Kernel, modules: &str, compression: &str, jobs: u32) {
    let recipe = testkit::workspace_root().join("recipes/updater-initramfs.yaml");
    let o = Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .arg("initramfs")
        .arg("--recipe")
        .arg(recipe)
        .arg("-o")
        .arg(out)
        .arg("--compression")
        .arg(compression)
        .arg("--var")
        .arg(format!("UPDATER={}", init.display()))
        .arg("--var")
        .arg(format!("KERNEL_MODULES={}", k.modules_dir.display()))
        .arg("--var")
        .arg(format!("MODULES={modules}"))
        .arg("--jobs")
        .arg(jobs.to_string())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fwpack initramfs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn debian_amd64_kernel_boots_our_initramfs_and_loads_its_modules() {
    if !available() {
        return;
    }
    let k = kernels::amd64_cloud().unwrap();
    assert!(
        !k.config_builtin("VIRTIO_BLK").unwrap(),
        "virtio_blk must be a module for this test to prove anything"
    );
    let marker = "FWPACK-INITRAMFS-BOOT-OK";
    let init = InitProgram::new(marker)
        .load_modules("/etc/fwpack/modules.load")
        .mount("sysfs", "/sys")
        .probe("/dev/console")
        .probe("/dev/null")
        .probe("/init")
        .probe("/sys/block/vda")
        .build(Arch::X86_64)
        .unwrap();
    let d = tempfile::tempdir().unwrap();
    let initrd = d.path().join("initramfs.cpio.gz");
    // virtio_blk needs virtio + virtio_ring; virtio_pci (the transport) needs
    // those and its own helpers: the closure and order come from .modinfo.
    // Deflated on three threads in primed blocks: the kernel's inflate must
    // take the joined stream, and it must equal the one-thread archive.
    pack(&initrd, &init, &k, "virtio_blk virtio_pci", "gzip", 3);
    let serial = d.path().join("serial.cpio.gz");
    pack(&serial, &init, &k, "virtio_blk virtio_pci", "gzip", 1);
    assert!(
        std::fs::read(&serial).unwrap() == std::fs::read(&initrd).unwrap(),
        "--jobs 3 and --jobs 1 archives differ"
    );
    let disk = d.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();

    let mut vm = Qemu::new(Arch::X86_64, &k.vmlinuz)
        .initrd(&initrd)
        .drive(&disk)
        .name("initramfs-boot-amd64")
        .spawn()
        .unwrap();
    vm.wait_for(marker, BOOT).unwrap();

    let list = initramfs::list_file(&initrd).unwrap();
    assert!(list.iter().any(|e| e.name == "etc/fwpack/modules.load"));
    let raw: u64 = list.iter().map(|e| u64::from(e.size)).sum();
    assert!(
        raw > 3 * initramfs::pgzip::BLOCK as u64,
        "only {raw} bytes: too few deflate blocks to test the parallel joins"
    );
    // Every module of the load list loads, in order.
    for m in ["virtio_ring", "virtio", "virtio_blk"] {
        let line = vm.wait_for(&format!("/{m}.ko "), BOOT).unwrap();
        assert!(
            line.ends_with("loaded"),
            "{line}\nlog: {}",
            vm.log_path().display()
        );
    }
    let line = vm.wait_for("/virtio_pci.ko ", BOOT).unwrap();
    assert!(line.ends_with("loaded"), "{line}");
    assert_eq!(vm.wait_for("mount /sys", BOOT).unwrap(), "mount /sys ok");
    // The device nodes exist as written (the kernel created them from our
    // headers), /init is executable, and the disk appeared once the
    // modules were in: the load order worked on a real kernel.
    assert_eq!(
        vm.wait_for("probe /dev/console", BOOT).unwrap(),
        "probe /dev/console c 600 5:1"
    );
    assert_eq!(
        vm.wait_for("probe /dev/null", BOOT).unwrap(),
        "probe /dev/null c 666 1:3"
    );
    let size = std::fs::metadata(&init).unwrap().len();
    assert_eq!(
        vm.wait_for("probe /init", BOOT).unwrap(),
        format!("probe /init f 755 {size}")
    );
    let vda = vm.wait_for("probe /sys/block/vda", BOOT).unwrap();
    assert!(
        vda.starts_with("probe /sys/block/vda l "),
        "{vda}\nlog: {}",
        vm.log_path().display()
    );
    // Powered off cleanly (-no-reboot turns the power-off into QEMU exiting).
    vm.wait_for("reboot: Power down", BOOT).unwrap();
    let status = vm.wait_exit(BOOT).unwrap();
    assert!(status.success(), "qemu: {status}");
}

#[test]
fn zstd_compressed_initramfs_boots_too() {
    if !available() {
        return;
    }
    let k = kernels::amd64_cloud().unwrap();
    assert!(k.config_builtin("RD_ZSTD").unwrap());
    let marker = "FWPACK-ZSTD-INITRAMFS-OK";
    let init = InitProgram::new(marker)
        .probe("/dev/console")
        .build(Arch::X86_64)
        .unwrap();
    let d = tempfile::tempdir().unwrap();
    let initrd = d.path().join("initramfs.cpio.zst");
    pack(&initrd, &init, &k, "", "zstd", 2);
    let mut vm = Qemu::new(Arch::X86_64, &k.vmlinuz)
        .initrd(&initrd)
        .name("initramfs-boot-amd64-zstd")
        .spawn()
        .unwrap();
    vm.wait_for(marker, BOOT).unwrap();
    assert_eq!(
        vm.wait_for("probe /dev/console", BOOT).unwrap(),
        "probe /dev/console c 600 5:1"
    );
    assert!(vm.wait_exit(BOOT).unwrap().success());
}
