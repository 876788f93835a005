//! kexec on arm64 for real: Debian's arm64 kernel boots under QEMU (TCG)
//! with an initramfs whose /init (src/bin/kexec-test-init.rs, a static
//! aarch64 build of this crate) calls `kexec::load` + `kexec::execute` on
//! the same kernel with another command-line marker; the second kernel's
//! init prints its command line.
//!
//! - `-M virt -cpu cortex-a53`: CPUs come and go through PSCI, so kexec
//!   works with every CPU online (`-smp 2` proves the second kernel brings
//!   the secondary back).
//! - `-M raspi3b` with the Zero 2 W device tree: the secondaries are
//!   parked in a spin table and can never be taken offline, so arm64
//!   refuses kexec unless the bootstrap kernel runs with `nr_cpus=1`; the
//!   second kernel (no nr_cpus) brings up all four.
//!
//! Boot times are printed (bootstrap start -> first init, -> second init),
//! not asserted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use initramfs::{Builder, DeviceKind, Meta, Options};
use testkit::kernels::{Arch, Kernel};
use testkit::qemu::{Console, Qemu};

const WAIT: Duration = Duration::from_secs(300);

fn tools() -> bool {
    ["apt-get", "dpkg-deb", "qemu-system-aarch64"]
        .iter()
        .all(|t| testkit::tools::require(t))
}

/// The example built now for aarch64 (static musl, rust-lld), so a test
/// never boots a stale init.
fn test_init() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = "aarch64-unknown-linux-musl";
    let out = Command::new(cargo)
        .args(["build", "-p", "kexec", "--bin", "kexec-test-init"])
        .args(["--features", "test-init"])
        .args(["--release", "--target", target])
        .current_dir(testkit::workspace_root())
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "building kexec-test-init failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = testkit::target_dir()
        .join(target)
        .join("release/kexec-test-init");
    assert!(bin.is_file(), "{} missing", bin.display());
    bin
}

fn base(init: &Path) -> Builder {
    let mut b = Builder::new(Options::default());
    b.add_file("/init", init, Some(Meta::mode(0o755))).unwrap();
    b.add_device("/dev/console", DeviceKind::Char, 5, 1, Meta::mode(0o600))
        .unwrap();
    for d in ["/proc", "/sys", "/dev"] {
        b.add_dir(d, Meta::mode(0o755)).unwrap();
    }
    b
}

/// The bootstrap initramfs: the init plus, under /kexec, the kernel to
/// kexec and the second kernel's initramfs (the init alone).
fn initramfs(work: &Path, kernel: &Kernel) -> PathBuf {
    let init = test_init();
    let inner = work.join("inner.cpio.gz");
    base(&init)
        .write_file(&inner, initramfs::Compression::Gzip { level: 1 })
        .unwrap();
    let mut b = base(&init);
    b.add_dir("/kexec", Meta::mode(0o755)).unwrap();
    b.add_file("/kexec/kernel", &kernel.vmlinuz, Some(Meta::mode(0o644)))
        .unwrap();
    b.add_file("/kexec/initrd", &inner, Some(Meta::mode(0o644)))
        .unwrap();
    let out = work.join("bootstrap.cpio.gz");
    // No compression: the kernel would only shrink by a third and TCG
    // pays for every byte gunzipped twice (bootstrap and inner).
    b.write_file(&out, initramfs::Compression::None).unwrap();
    out
}

struct Times {
    first_init: Duration,
    second_init: Duration,
}

/// Waits for the bootstrap init, the load, and the second kernel's init;
/// returns the second init's line and the times.
fn run(c: &mut Console, second_cpus: &str) -> Times {
    let t = Instant::now();
    let wait = |c: &mut Console, p: &str| match c.wait_for(p, WAIT) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let first = wait(c, "KEXEC-TEST init up");
    assert!(first.contains("kexec-test=again"), "{first}");
    let first_init = t.elapsed();
    wait(c, "KEXEC-TEST loaded (Load); executing");
    let second = wait(c, "KEXEC-TEST init up");
    let second_init = t.elapsed();
    assert!(
        second.contains("kexec-test=second") && !second.contains("kexec-test=again"),
        "{second}"
    );
    assert!(
        second.contains(&format!("cpus online {second_cpus};")),
        "{second}"
    );
    wait(c, "KEXEC-TEST second kernel reached init");
    Times {
        first_init,
        second_init,
    }
}

fn report(board: &str, t: &Times) {
    eprintln!(
        "{board}: bootstrap start -> first init {:.1} s, -> second kernel's init {:.1} s (kexec adds {:.1} s)",
        t.first_init.as_secs_f64(),
        t.second_init.as_secs_f64(),
        (t.second_init - t.first_init).as_secs_f64()
    );
}

#[test]
fn virt_kexecs_the_same_kernel_with_a_new_command_line() {
    if !tools() {
        return;
    }
    let kernel = testkit::kernels::arm64().expect("Debian arm64 kernel");
    let work = tempfile::tempdir().unwrap();
    let initrd = initramfs(work.path(), &kernel);
    let mut q = Qemu::new(Arch::Aarch64, &kernel.vmlinuz)
        .initrd(&initrd)
        .memory(512)
        .append("kexec-test=again")
        .name("kexec-virt");
    q.smp = 2;
    let mut c = q.spawn().expect("starting QEMU");
    let t = run(&mut c, "0-1");
    report("virt", &t);
    if let Err(e) = c.wait_exit(WAIT) {
        panic!("{e}");
    }
}

/// `-M raspi3b` as the rpi-zero2w board boots there: Debian's kernel and
/// Zero 2 W device tree, console on the mini UART (the second `-serial`,
/// ttyS1). The board has no power-off, so the harness stops QEMU.
fn raspi3b(kernel: &Kernel, initrd: &Path, append: &str, name: &str) -> Console {
    let dtb = kernel.dtbs_dir.join("broadcom/bcm2837-rpi-zero-2-w.dtb");
    let mut c = Command::new("qemu-system-aarch64");
    c.args(["-accel", "tcg", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .args(["-M", "raspi3b", "-m", "1G"])
        .args(["-serial", "null", "-serial", "stdio"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-dtb")
        .arg(dtb)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console=ttyS1,115200 {append}"));
    Console::spawn(c, name).expect("starting QEMU")
}

#[test]
fn raspi3b_kexecs_with_nr_cpus_1_and_the_second_kernel_brings_up_four() {
    if !tools() {
        return;
    }
    let kernel = testkit::kernels::arm64().expect("Debian arm64 kernel");
    let work = tempfile::tempdir().unwrap();
    let initrd = initramfs(work.path(), &kernel);
    let mut c = raspi3b(
        &kernel,
        &initrd,
        "nr_cpus=1 kexec-test=again",
        "kexec-raspi3b",
    );
    let t = run(&mut c, "0-3");
    report("raspi3b", &t);
}

/// Why the bootstrap needs nr_cpus=1 there: without it the load is
/// refused, and the error says so.
#[test]
fn raspi3b_without_nr_cpus_1_refuses_kexec_and_says_why() {
    if !tools() {
        return;
    }
    let kernel = testkit::kernels::arm64().expect("Debian arm64 kernel");
    let work = tempfile::tempdir().unwrap();
    let initrd = initramfs(work.path(), &kernel);
    let mut c = raspi3b(&kernel, &initrd, "kexec-test=again", "kexec-raspi3b-smp");
    let line = match c.wait_for("KEXEC-TEST load failed", WAIT) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    assert!(line.contains("nr_cpus=1"), "{line}");
}
