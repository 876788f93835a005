//! Slots for `boot = kexec` tests (qemu_x86_64_kexec, qemu_aarch64_kexec):
//! a root filesystem carrying its own kernel in `/boot/fwpack/`, an init
//! that reports which kernel booted it, and kernels that panic or that
//! the loader refuses.

use std::path::Path;

use testkit::kernels::{Arch, Kernel};

use super::{image, rootfs_with, updater_binary};

/// `/sbin/init` of a slot booted by its own kernel: when no initramfs ran
/// in this kernel nothing is mounted yet, so it mounts /proc and /dev
/// (harmless failures after a slot stage moved them), prints the kernel's
/// release and command line, then confirms the slot (named by the
/// `fwpack.slot=` marker) with the updater in the root filesystem, or
/// exits to make the kernel panic when asked to. `@TARGET@` is the disk.
const SLOT_INIT: &str = r#"
use std::io::Write;
use std::process::Command;

extern "C" {
    fn reboot(cmd: i32) -> i32;
    fn sync();
    fn mount(src: *const std::ffi::c_char, dst: *const std::ffi::c_char, fstype: *const std::ffi::c_char, flags: u64, data: *const u8) -> i32;
}
const RB_POWER_OFF: i32 = 0x4321fedc;

fn main() {
    unsafe {
        mount(c"proc".as_ptr(), c"/proc".as_ptr(), c"proc".as_ptr(), 0, std::ptr::null());
        mount(c"devtmpfs".as_ptr(), c"/dev".as_ptr(), c"devtmpfs".as_ptr(), 0, std::ptr::null());
    }
    let mut out = std::io::stdout();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = std::fs::read_to_string("/etc/fwpack-test/version").unwrap_or_default();
    // Under its own kernel the marker names the slot; under the bootstrap
    // kernel (switch_root) the updater's boot record does.
    let run = std::fs::read_to_string("/run/fwpack/boot.conf").unwrap_or_default();
    let slot = cmdline.split_whitespace().find_map(|w| w.strip_prefix("fwpack.slot="))
        .or_else(|| run.lines().find_map(|l| l.strip_prefix("slot = ")))
        .unwrap_or("?").to_string();
    let _ = writeln!(out, "FWPACK-TEST slot kernel {} cmdline: {}", release.trim(), cmdline.trim());
    let banner = std::fs::read_to_string("/proc/version").unwrap_or_default();
    let _ = writeln!(out, "FWPACK-TEST running kernel: {}", banner.trim());
    let _ = writeln!(out, "FWPACK-TEST booted slot {} version {} pid {}", slot, version.trim(), std::process::id());
    if std::path::Path::new("/etc/fwpack-test/panic").exists() {
        let _ = writeln!(out, "FWPACK-TEST init exits: the slot kernel panics");
        let _ = out.flush();
        std::process::exit(1);
    }
    if std::path::Path::new("/etc/fwpack-test/mark-good").exists() {
        let st = Command::new("/usr/bin/fwpack-updater")
            .args(["mark-good", "--target", "@TARGET@", "--slot", &slot])
            .status();
        let _ = writeln!(out, "FWPACK-TEST mark-good: {:?}", st.map(|s| s.code()));
    } else {
        let _ = writeln!(out, "FWPACK-TEST not confirming this slot");
    }
    match Command::new("/usr/bin/fwpack-updater").args(["status", "--json", "--target", "@TARGET@"]).output() {
        Ok(o) => { let _ = writeln!(out, "FWPACK-TEST status {}", String::from_utf8_lossy(&o.stdout).trim()); }
        Err(e) => { let _ = writeln!(out, "FWPACK-TEST status failed: {}", e); }
    }
    let _ = out.flush();
    unsafe { sync(); reboot(RB_POWER_OFF); }
    loop { std::thread::park(); }
}
"#;

/// What a slot's kernel is in a test.
pub enum SlotKernel {
    /// The kernel as given, with `test.marker=<marker>` in the slot's
    /// cmdline.
    Good(&'static str),
    /// The kernel as given, and the slot's init exits (the kernel panics).
    Panics,
    /// A kernel file the bootstrap's kexec refuses, a failed try of the
    /// slot: on x86_64 Debian's bzImage with XLF_CAN_BE_LOADED_ABOVE_4G
    /// cleared (our header check passes, the running kernel's bzImage64
    /// loader says ENOEXEC); on arm64 the Image gzip-compressed, as
    /// distributions ship it, which kexec_load cannot take (the loader
    /// says BadImage before the syscall).
    Refused,
}

/// How the slots of one test are made.
pub struct Slots<'a> {
    pub arch: Arch,
    /// The disk as the guest names it, for the slot init's mark-good.
    pub target: &'a str,
    /// Size of each slot's ext4 image.
    pub rootfs_size: u64,
}

impl Slots<'_> {
    /// A signed image of a slot root filesystem carrying `kernel` and,
    /// when given, an initrd for it.
    pub fn image(
        &self,
        work: &Path,
        kernel: &Kernel,
        name: &str,
        version: u64,
        k: SlotKernel,
        initrd: Option<&[u8]>,
    ) -> Vec<u8> {
        let source = SLOT_INIT.replace("@TARGET@", self.target);
        let init = testkit::program::build_static("fwpack-kexec-slot-init", &source, self.arch)
            .expect("building the slot init");
        let mut kbytes = std::fs::read(&kernel.vmlinuz).unwrap();
        let updater = std::fs::read(updater_binary(self.arch)).unwrap();
        let marker = match k {
            SlotKernel::Good(m) => m,
            SlotKernel::Panics => "panics",
            SlotKernel::Refused => "refused",
        };
        if let SlotKernel::Refused = k {
            kbytes = refused_kernel(self.arch, kbytes);
        }
        if let (SlotKernel::Good(m), Arch::Aarch64) = (&k, self.arch) {
            kbytes = stamped_kernel(kbytes, m);
        }
        let cmdline = format!("# slot {name}\ntest.marker={marker}\n");
        let mut extra: Vec<(&str, &[u8], u32)> = vec![
            ("boot/fwpack/kernel", &kbytes, 0o644),
            ("boot/fwpack/cmdline", cmdline.as_bytes(), 0o644),
            ("usr/bin/fwpack-updater", &updater, 0o755),
        ];
        if let SlotKernel::Panics = k {
            extra.push(("etc/fwpack-test/panic", b"", 0o644));
        }
        if let Some(i) = initrd {
            extra.push(("boot/fwpack/initrd", i, 0o644));
        }
        let fs = rootfs_with(work, name, version, true, &init, &extra, self.rootfs_size);
        image(&fs, version)
    }
}

/// What Debian's kernels name as their builder in the version banner.
pub const DEBIAN_BUILDER: &str = "debian-kernel@lists.debian.org";

/// The builder each [`SlotKernel::Good`] kernel names in its banner on
/// arm64: `marker` padded to the length of [`DEBIAN_BUILDER`].
pub fn slot_builder(marker: &str) -> String {
    let mut s = format!("{marker}@fwpack-slot-kernel-test");
    s.truncate(DEBIAN_BUILDER.len());
    s
}

/// The arm64 Image with its builder in the version banners
/// (`linux_banner`, `/proc/version`) replaced by [`slot_builder`]: the two
/// slots then carry different kernel files, and what /proc/version says
/// proves which file runs (a command-line marker only proves whose
/// command line it got). Plain string data; nothing checks the Image.
fn stamped_kernel(mut k: Vec<u8>, marker: &str) -> Vec<u8> {
    let from = DEBIAN_BUILDER.as_bytes();
    let to = slot_builder(marker);
    assert!(marker.len() <= 12 && to.len() == from.len(), "{to}");
    let mut n = 0;
    let mut i = 0;
    while let Some(at) = k[i..].windows(from.len()).position(|w| w == from) {
        k[i + at..i + at + from.len()].copy_from_slice(to.as_bytes());
        i += at + from.len();
        n += 1;
    }
    assert!(n > 0, "no `{DEBIAN_BUILDER}` banner in the arm64 Image");
    k
}

fn refused_kernel(arch: Arch, mut k: Vec<u8>) -> Vec<u8> {
    match arch {
        Arch::X86_64 => {
            assert_eq!(
                k[0x236] & 3,
                3,
                "Debian's bzImage has a 64-bit entry above 4G"
            );
            k[0x236] &= !2;
            k
        }
        Arch::Aarch64 => {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&k).unwrap();
            gz.finish().unwrap()
        }
        Arch::Riscv64 => unimplemented!("no riscv64 kexec test"),
    }
}
