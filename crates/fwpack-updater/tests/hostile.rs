//! PID 1 against hostile slots and command lines, on qemu-aarch64 (TCG,
//! `-M virt`, Debian's arm64 kernel, `boot = kexec`). Slot A holds a
//! plain root filesystem without a kernel of its own, so the active slot
//! boots with switch_root under the bootstrap kernel (the fallback path
//! `kexecboot::boot` takes for an active slot): one kernel boot per case.
//!
//! - `hostile_console_and_environment`: `fwpack.console=/dev/vda` (the
//!   disk) is refused with a line on the console and the disk's SHA-256 is
//!   unchanged by the boot; `FWPACK_BOOT_RECORD=/x` on the command line
//!   reaches neither PID 1 nor the init it starts (whose `status`, which
//!   reads that variable, still finds the real boot record).
//! - `hostile_slot_kernels_fail_their_try`: a pending slot B whose kexec
//!   the slot itself makes impossible — a command line of 2048 bytes or
//!   more, an `Image` whose `image_size` fits in no RAM, a 2 MiB DTB built
//!   to make a copying parser ask for 85 GiB, a FIFO as its kernel — is a
//!   failed try each time: counted, fallen back from, slot A booted in
//!   the same boot by a PID 1 that neither died nor hung.

mod qemu_support;

use std::time::Duration;

use qemu_support::*;
use sha2::{Digest, Sha256};
use testkit::kernels::{self, Arch};

const ARCH: Arch = Arch::Aarch64;
const WAIT: Duration = Duration::from_secs(300);
const MODULES: &[&str] = &["virtio_pci", "virtio_blk", "ext4", "crc32c_generic"];

const CONFIG: &str = "target = /dev/vda\n\
    modules = /etc/fwpack/modules.load\n\
    keys = /etc/fwpack/keys\n\
    device_timeout = 60\n\
    on_failure = poweroff\n\
    slot_device = partition\n\
    boot = kexec\n\
    kexec_dtb = slot\n\
    kexec_panic = 1\n";

struct Setup {
    work: tempfile::TempDir,
    kernel: kernels::Kernel,
    disk: std::path::PathBuf,
    initrd: std::path::PathBuf,
}

fn setup() -> Option<Setup> {
    if !tools_present(ARCH) {
        return None;
    }
    let kernel = kernels::arm64().expect("Debian arm64 kernel");
    let work = tempfile::tempdir().unwrap();
    let a = image(&rootfs(work.path(), ARCH, "root-a", 1, false), 1);
    let disk = disk(work.path(), true, &a);
    let initrd = initramfs(work.path(), ARCH, CONFIG, &[], Some((&kernel, MODULES)));
    Some(Setup {
        work,
        kernel,
        disk,
        initrd,
    })
}

fn sha256(p: &std::path::Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(p).unwrap()))
}

#[test]
fn hostile_console_and_environment() {
    let Some(s) = setup() else {
        return;
    };
    let before = sha256(&s.disk);
    let mut c = boot_appending(
        ARCH,
        &s.kernel,
        &s.initrd,
        &s.disk,
        "hostile-console-env",
        "fwpack.console=/dev/vda FWPACK_BOOT_RECORD=/x",
    );
    let lines = expect(
        &mut c,
        &[
            "kernel command line overrides console=/dev/vda",
            "console refused: /dev/vda is not a character device; staying on /dev/console",
            "booting slot A (version 1 v1)",
            "FWPACK-TEST booted slot A version 1 pid 1",
            "FWPACK-TEST env:",
            "FWPACK-TEST status",
        ],
        WAIT,
    );
    // The init's environment is the one PID 1 built: nothing from the
    // command line.
    let env = lines[4]
        .split("FWPACK-TEST env:")
        .nth(1)
        .unwrap_or_default();
    let mut vars: Vec<&str> = env.split_whitespace().collect();
    vars.sort_unstable();
    assert_eq!(vars, ["HOME=/", "TERM=linux"], "{}", lines[4]);
    // `status` (which honours FWPACK_BOOT_RECORD) found /run/fwpack/boot.conf.
    assert!(
        lines[5].contains("\"active\":\"A\"") && lines[5].contains("\"running\":{\"slot\":\"A\""),
        "{}",
        lines[5]
    );
    expect_exit(&mut c, WAIT);
    let log = std::fs::read_to_string(c.log_path()).unwrap_or_default();
    assert!(
        !log.contains("console: /dev/vda"),
        "the disk became the console"
    );
    assert_eq!(
        sha256(&s.disk),
        before,
        "the boot changed the disk (a log written over it?)"
    );
}

/// A 4 KiB file with an arm64 `Image` header that says `image_size`:
/// enough for the loader's checks, which refuse these slots before any
/// syscall.
fn fake_image(image_size: u64) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    b[16..24].copy_from_slice(&image_size.to_le_bytes());
    b[24..32].copy_from_slice(&2u64.to_le_bytes());
    b[56..60].copy_from_slice(b"ARM\x64");
    b
}

#[test]
fn hostile_slot_kernels_fail_their_try() {
    let Some(s) = setup() else {
        return;
    };
    let key = s.work.path().join("key.pem");
    std::fs::write(&key, public_pem()).unwrap();
    let small = fake_image(2 << 20);
    let huge = fake_image(1 << 40);
    let long_cmdline = format!("test.pad={}\n", "x".repeat(2100));
    let dtb = ::kexec::fdt::many_props_one_long_name(::kexec::fdt::MAX_LEN);
    const FIFO: u32 = 0o010644;
    // Name, the slot's extra files (path, contents, mode), why it fails.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a [u8], u32)>, &'a str);
    let cases: [Case; 4] = [
        (
            "cmdline",
            vec![
                ("boot/fwpack/kernel", &small, 0o644),
                ("boot/fwpack/cmdline", long_cmdline.as_bytes(), 0o644),
            ],
            "the command line: 2",
        ),
        (
            "image-size",
            vec![("boot/fwpack/kernel", &huge, 0o644)],
            "no room for the kernel (1099511627776 bytes)",
        ),
        (
            "dtb",
            vec![
                ("boot/fwpack/kernel", &small, 0o644),
                ("boot/fwpack/dtb", &dtb, 0o644),
            ],
            "the tree would take more than 8 times the blob's size",
        ),
        (
            "fifo",
            vec![("boot/fwpack/kernel", b"", FIFO)],
            "/boot/fwpack/kernel in the slot is not a regular file",
        ),
    ];
    for (i, (name, files, why)) in cases.iter().enumerate() {
        let version = i as u64 + 2;
        let fs = rootfs_with(
            s.work.path(),
            &format!("root-b-{name}"),
            version,
            true,
            &test_init(ARCH),
            files,
            ROOTFS_SIZE,
        );
        let img = s.work.path().join(format!("b-{name}.fwi"));
        std::fs::write(&img, image(&fs, version)).unwrap();
        let out = std::process::Command::new(host_updater())
            .arg("apply")
            .arg(&img)
            .arg("--target")
            .arg(&s.disk)
            .args(["--tries", "3", "--key"])
            .arg(&key)
            .env("FWPACK_BOOT_RECORD", "")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut c = boot(
            ARCH,
            &s.kernel,
            &s.initrd,
            &s.disk,
            &format!("hostile-{name}"),
        );
        let lines = expect(
            &mut c,
            &[
                &format!("booting slot B (version {version} v{version}), trial: 2 tries left"),
                why,
                "slot B cannot be booted; counting the failed try and falling back to slot A",
                "switching root to slot A",
                "FWPACK-TEST booted slot A version 1 pid 1",
            ],
            WAIT,
        );
        assert!(lines[1].contains("slot B"), "{name}: {}", lines[1]);
        expect_exit(&mut c, WAIT);
        let st = status_json(&s.disk);
        assert!(
            st.contains("\"active\":\"A\"") && st.contains("\"pending\":null"),
            "{name}: {st}"
        );
    }
}
