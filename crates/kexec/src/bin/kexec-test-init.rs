//! `/init` of the kexec boot tests (crates/kexec/tests/qemu_arm64.rs and
//! the raspi3b test): a static program, not a library, so it prints.
//! Built only with `--features test-init`.
//!
//! First kernel (`kexec-test=again` on its command line): stages
//! `/kexec/kernel` with `/kexec/initrd` (an initramfs holding this same
//! program) and the command line with the marker turned into
//! `kexec-test=second`, then boots it. Second kernel: prints its command
//! line and how many CPUs came up, and powers off.

use std::io::Write;

fn say(msg: &str) {
    let mut o = std::io::stdout();
    let _ = writeln!(o, "KEXEC-TEST {msg}");
    let _ = o.flush();
}

/// Lets the console UART send what we wrote before the kernel's own
/// shutdown messages go out: otherwise printk cuts into our lines
/// mid-way (seen on raspi3b's mini UART) and the harness misses them.
fn drain() {
    let _ = rustix::termios::tcdrain(std::io::stdout());
}

fn off() -> ! {
    drain();
    rustix::fs::sync();
    let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
    // Boards without a power-off (raspi3b) halt here; the harness stops QEMU.
    loop {
        std::thread::park();
    }
}

fn main() {
    use rustix::mount::{mount, MountFlags};
    let _ = mount("proc", "/proc", "proc", MountFlags::empty(), None);
    let _ = mount("sysfs", "/sys", "sysfs", MountFlags::empty(), None);
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let cmdline = cmdline.trim();
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    say(&format!(
        "init up: cpus online {}; cmdline: {cmdline}",
        cpus.trim()
    ));
    if !cmdline.split(' ').any(|w| w == "kexec-test=again") {
        say("second kernel reached init");
        off();
    }
    let mut next = cmdline.replace("kexec-test=again", "kexec-test=second");
    // The second kernel gets all CPUs back (the bootstrap's nr_cpus=1 is
    // only there so kexec is allowed on spin-table boards).
    next = next
        .split(' ')
        .filter(|w| !w.starts_with("nr_cpus="))
        .collect::<Vec<_>>()
        .join(" ");
    let spec = kexec::BootSpec {
        kernel: "/kexec/kernel".into(),
        initrd: Some("/kexec/initrd".into()),
        dtb: None,
        cmdline: next,
    };
    match kexec::load(&spec) {
        Ok(m) => say(&format!("loaded ({m:?}); executing")),
        Err(e) => {
            say(&format!("load failed: {e}"));
            off();
        }
    }
    drain();
    let e = kexec::execute();
    say(&format!("execute failed: {e}"));
    off();
}
