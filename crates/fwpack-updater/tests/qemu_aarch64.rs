//! fwpack-updater as PID 1 under QEMU (TCG, `-M virt -cpu cortex-a53`)
//! with Debian's arm64 kernel: virtio_blk, ext4 and their dependencies are
//! modules loaded from the initramfs. The disk has an MBR whose two
//! partitions are exactly the slots, so the slots are mounted through
//! their partitions (the x86_64 test covers loop devices).
//!
//! The update in the initramfs is applied to slot B, the guest reboots,
//! B boots and confirms itself.

mod qemu_support;

use std::time::{Duration, Instant};

use qemu_support::*;
use testkit::kernels::{self, Arch};

const ARCH: Arch = Arch::Aarch64;
const WAIT: Duration = Duration::from_secs(240);

const CONFIG: &str = "\
# fwpack-updater test configuration (arm64)
target = /dev/vda
modules = /etc/fwpack/modules.load
keys = /etc/fwpack/keys
images = /images
device_timeout = 60
on_failure = poweroff
root_fstype = ext4
slot_device = partition
tries = 2
";

#[test]
fn update_is_applied_then_slot_b_boots_from_its_partition() {
    if !tools_present(ARCH) {
        return;
    }
    let kernel = kernels::arm64().expect("Debian arm64 kernel");
    let work = tempfile::tempdir().unwrap();
    let a = image(&rootfs(work.path(), ARCH, "root-a", 1, true), 1);
    let b = image(&rootfs(work.path(), ARCH, "root-b", 2, true), 2);
    let disk = disk(work.path(), true, &a);
    // ext4 asks the crypto API for "crc32c" when it mounts; with no
    // modprobe in the initramfs, its provider is loaded up front.
    let initrd = initramfs(
        work.path(),
        ARCH,
        CONFIG,
        &[("update-v2.fwi", &b)],
        Some((
            &kernel,
            &["virtio_pci", "virtio_blk", "ext4", "crc32c_generic"],
        )),
    );

    let t = Instant::now();
    let mut c = boot(ARCH, &kernel, &initrd, &disk, "arm64-update-1");
    expect(
        &mut c,
        &[
            "fwpack-updater: fwpack-updater",
            "virtio_blk.ko loaded",
            "found /dev/vda",
            "applying update /images/update-v2.fwi (version 2 v2) to slot B",
            "signature ok; writing",
            "slot B is pending with 2 tries",
            "rebooting into it",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let first = t.elapsed();

    let mut c = boot(ARCH, &kernel, &initrd, &disk, "arm64-update-2");
    expect(
        &mut c,
        &[
            "booting slot B (version 2 v2), trial: 1 tries left",
            "is partition /dev/vda2",
            "switching root to slot B",
            "FWPACK-TEST booted slot B version 2 pid 1",
            "slot B (version 2) confirmed: it is now the active slot",
            "FWPACK-TEST mark-good: Ok(Some(0))",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    eprintln!(
        "aarch64: apply boot {:.1} s, boot into B {:.1} s",
        first.as_secs_f64(),
        (t.elapsed() - first).as_secs_f64()
    );
    let st = status_json(&disk);
    assert!(
        st.contains("\"active\":\"B\"") && st.contains("\"confirmed\":true"),
        "{st}"
    );
}
