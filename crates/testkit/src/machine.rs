//! The QEMU machines of the shipped `qemu-*` boards, booting what
//! `fwpack build` produced: kernel + initramfs from the boot directory and
//! `sdcard.img` as the board's target disk.
//!
//! - qemu-x86_64: one NVMe controller (built into Debian's cloud kernel);
//!   `sdcard.img` is namespace 1 (`/dev/nvme0n1`, the board's target), an
//!   extra disk is namespace 2 (`/dev/nvme0n2`). Namespaces of one
//!   controller are numbered by `nsid`, so the target's name never
//!   depends on probe order (two controllers could swap).
//! - qemu-aarch64, qemu-riscv64: virtio-blk disks (`/dev/vda` first, then
//!   `/dev/vdb`); riscv64 boots through Debian's OpenSBI (`-bios`).
//!
//! Disks use `cache=none` (O_DIRECT on the host file): a write QEMU reports
//! complete to the guest is in the host file, not in a QEMU-side buffer,
//! and the host reads between boots see exactly what the next boot sees.
//! A SIGKILL of QEMU then loses precisely what a power cut loses on a
//! device: the guest's RAM (page cache, queued requests, the updater's
//! buffers), never data the guest was told was written.

use std::path::PathBuf;

use crate::kernels::Arch;
use crate::qemu::{Console, Qemu};

/// One boot of a board's artifacts.
#[derive(Clone, Debug)]
pub struct Machine {
    pub arch: Arch,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The board's target disk (`sdcard.img` or a copy of it).
    pub disk: PathBuf,
    /// A second disk, e.g. a file system carrying update images.
    pub extra_disk: Option<PathBuf>,
    /// Appended to the kernel command line (e.g. `fwpack.tries=1`).
    pub append: String,
    pub memory_mib: u32,
    /// Console log file name prefix.
    pub name: String,
}

impl Machine {
    pub fn new(arch: Arch, kernel: PathBuf, initrd: PathBuf, disk: PathBuf) -> Machine {
        Machine {
            arch,
            kernel,
            initrd,
            disk,
            extra_disk: None,
            append: String::new(),
            memory_mib: 512,
            name: "machine".into(),
        }
    }

    /// The QEMU invocation (printed by harnesses for manual reproduction).
    pub fn qemu(&self) -> Qemu {
        let mut q = Qemu::new(self.arch, &self.kernel)
            .initrd(&self.initrd)
            .memory(self.memory_mib)
            .name(&self.name);
        if !self.append.is_empty() {
            q = q.append(&self.append);
        }
        let disks: Vec<&PathBuf> = std::iter::once(&self.disk)
            .chain(self.extra_disk.as_ref())
            .collect();
        let mut args: Vec<String> = Vec::new();
        match self.arch {
            Arch::X86_64 => {
                args.extend(["-device".into(), "nvme,id=nvme0,serial=fwpack".into()]);
                for (i, d) in disks.iter().enumerate() {
                    args.push("-drive".into());
                    args.push(format!(
                        "if=none,id=disk{i},file={},format=raw,cache=none",
                        d.display()
                    ));
                    args.push("-device".into());
                    args.push(format!("nvme-ns,drive=disk{i},bus=nvme0,nsid={}", i + 1));
                }
            }
            Arch::Aarch64 | Arch::Riscv64 => {
                for d in disks {
                    args.push("-drive".into());
                    args.push(format!(
                        "file={},format=raw,if=virtio,cache=none",
                        d.display()
                    ));
                }
            }
        }
        q.extra_args = args;
        q
    }

    pub fn spawn(&self) -> crate::Result<Console> {
        self.qemu().spawn()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(m: &Machine) -> String {
        m.qemu()
            .command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn x86_disks_are_namespaces_of_one_controller() {
        let mut m = Machine::new(Arch::X86_64, "/k".into(), "/i".into(), "/sd.img".into());
        m.extra_disk = Some("/up.img".into());
        let a = args(&m);
        assert_eq!(a.matches("-device nvme,").count(), 1, "{a}");
        assert!(
            a.contains(
                "file=/sd.img,format=raw,cache=none -device nvme-ns,drive=disk0,bus=nvme0,nsid=1"
            ),
            "{a}"
        );
        assert!(a.contains("drive=disk1,bus=nvme0,nsid=2"), "{a}");
    }

    #[test]
    fn riscv64_is_virt_with_opensbi_and_virtio_disks() {
        let mut m = Machine::new(Arch::Riscv64, "/k".into(), "/i".into(), "/sd.img".into());
        m.extra_disk = Some("/up.img".into());
        let a = args(&m);
        assert!(a.starts_with("-accel tcg"), "{a}");
        assert!(a.contains("-M virt"), "{a}");
        assert!(!a.contains("-cpu"), "{a}");
        assert!(
            a.contains(&format!(
                "-bios {}",
                crate::qemu::opensbi_firmware().display()
            )),
            "{a}"
        );
        assert!(a.contains("console=ttyS0 panic=-1"), "{a}");
        let first = a.find("file=/sd.img,format=raw,if=virtio").unwrap();
        assert!(first < a.find("file=/up.img").unwrap(), "{a}");
    }

    #[test]
    fn aarch64_disks_are_virtio_in_order() {
        let mut m = Machine::new(Arch::Aarch64, "/k".into(), "/i".into(), "/sd.img".into());
        m.extra_disk = Some("/up.img".into());
        m.append = "fwpack.tries=1".into();
        let a = args(&m);
        let first = a.find("file=/sd.img").unwrap();
        let second = a.find("file=/up.img").unwrap();
        assert!(first < second, "{a}");
        assert!(a.contains("if=virtio,cache=none"), "{a}");
        assert!(a.contains("panic=-1 fwpack.tries=1"), "{a}");
    }
}
