//! Board configurations: what `fwpack build --board NAME` needs to know
//! about a board. One YAML file per board in `configs/`, compiled into the
//! binary ([`Configs::Shipped`]); unknown fields are errors, and every
//! error names the file and line.
//!
//! Invariant: a [`Board`] returned by [`Board::load`] has passed
//! [`Board::validate`], so the build pipeline can rely on its numbers
//! (sizes non-zero and aligned, slots fitting the disk, names sane).

mod shipped;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use shipped::{Configs, SHIPPED};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("unknown board `{name}` (known: {})", .known.join(", "))]
    UnknownBoard { name: String, known: Vec<String> },
}

/// A board, as described by `configs/<name>.yaml`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// Short name; must match the file name.
    pub name: String,
    pub description: String,
    /// Compatible string written into images; devices refuse other boards'.
    /// Defaults to `name`.
    #[serde(default)]
    pub compatible: Option<String>,
    pub updater: UpdaterBuild,
    pub kernel: Kernel,
    #[serde(default)]
    pub boot_files: BootFiles,
    pub console: Console,
    pub ram: Ram,
    pub disk: Disk,
    /// How the updater starts the chosen slot (updater.conf `boot`).
    #[serde(default)]
    pub boot: SlotBoot,
    /// When the active slot cannot be booted and the other slot is below
    /// the rollback floor: `refuse` (recovery: wait for a signed image)
    /// or `allow` (boot it; `status` then says so). updater.conf
    /// `fallback_below_floor`.
    #[serde(default)]
    pub fallback_below_floor: FallbackBelowFloor,
    /// The hardware watchdog armed for trial boots; none if absent.
    #[serde(default)]
    pub watchdog: Option<Watchdog>,
    /// With `boot: kexec` on arm64: the device tree the slot kernel gets
    /// (updater.conf `kexec_dtb`): `firmware` (the live tree, /chosen
    /// rewritten) or `slot` (the slot's own DTB with the live memory
    /// nodes carried over).
    #[serde(default)]
    pub kexec_dtb: KexecDtb,
}

/// See [`Board::kexec_dtb`].
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KexecDtb {
    #[default]
    Firmware,
    Slot,
}

impl KexecDtb {
    /// The updater.conf value.
    pub fn name(self) -> &'static str {
        match self {
            KexecDtb::Firmware => "firmware",
            KexecDtb::Slot => "slot",
        }
    }
}

/// See [`Board::fallback_below_floor`].
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FallbackBelowFloor {
    #[default]
    Refuse,
    Allow,
}

impl FallbackBelowFloor {
    /// The updater.conf value.
    pub fn name(self) -> &'static str {
        match self {
            FallbackBelowFloor::Refuse => "refuse",
            FallbackBelowFloor::Allow => "allow",
        }
    }
}

/// The hardware watchdog PID 1 arms while it applies and before a trial
/// boot (docs/FORMAT.md, "Watchdog").
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Watchdog {
    /// Its driver: loaded by the initramfs with `kernel.modules` (a
    /// built-in driver is fine).
    pub module: String,
    #[serde(default = "default_watchdog_device")]
    pub device: String,
    /// Seconds without a ping before the board resets: long enough for
    /// the slot to boot until its init pings.
    #[serde(default = "default_watchdog_timeout")]
    pub timeout_s: u32,
}

fn default_watchdog_device() -> String {
    "/dev/watchdog0".into()
}
fn default_watchdog_timeout() -> u32 {
    60
}

/// How the updater (PID 1 of the bootstrap initramfs) starts the slot it
/// chose.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SlotBoot {
    /// Mount the slot and run its init under the bootstrap kernel.
    #[default]
    SwitchRoot,
    /// Load the slot's own kernel from its `/boot/fwpack/` and kexec into
    /// it (the slot image carries kernel, command line, optional initrd
    /// and DTB; see docs/FORMAT.md, "Slot kernels").
    Kexec,
}

impl SlotBoot {
    /// The updater.conf value.
    pub fn name(self) -> &'static str {
        match self {
            SlotBoot::SwitchRoot => "switch_root",
            SlotBoot::Kexec => "kexec",
        }
    }
}

/// How the device-side updater is compiled and which ELF policy applies.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpdaterBuild {
    /// Rust target triple, e.g. `aarch64-unknown-linux-musl`.
    pub rust_target: String,
    /// Linker for that target (`rust-lld`, `riscv64-linux-gnu-gcc`).
    #[serde(default)]
    pub linker: Option<String>,
    /// Extra rustflags (`-C target-feature=+crt-static` is always added).
    #[serde(default)]
    pub rustflags: Vec<String>,
    /// ELF machine every device binary must have: aarch64, x86_64, riscv64, arm.
    pub machine: String,
    /// Size budget for the updater binary, bytes.
    pub size_budget: u64,
    #[serde(default = "yes")]
    pub require_stripped: bool,
    /// Protected updater.conf keys the kernel command line may override
    /// (`cmdline_overrides`; none by default: keys, target, images and init
    /// come from the signed initramfs only).
    #[serde(default)]
    pub cmdline_overrides: Vec<String>,
    /// Build the updater with HTTPS (rustls with ring: `fwpack-updater`'s
    /// `tls` feature), so devices can fetch `https://` updates. ring
    /// compiles C, so this build needs a C compiler for the target
    /// (`CC_<triple>`; aarch64 musl defaults to Debian's
    /// `aarch64-linux-gnu-gcc`); the plain build stays C-free. The binary
    /// grows by about 0.7 MiB: give `size_budget` room (2 MiB).
    #[serde(default)]
    pub tls: bool,
    /// Give the bootstrap's updater (`/init`, and its copy in /run/fwpack)
    /// the network client too (and TLS with `tls`). Off: the bootstrap
    /// reads only local images and the slot's `/usr/bin/fwpack-updater`
    /// does the network (docs/ARCHITECTURE.md, "The immutable core"). For
    /// systems whose root filesystem has no updater of its own and run
    /// `/run/fwpack/fwpack-updater apply URL`.
    #[serde(default)]
    pub bootstrap_net: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// File name of the kernel on the boot partition.
    pub image_name: String,
    /// How the kernel is started.
    pub boot: KernelBoot,
    /// Kernel command line (without `console=`, which comes from `console`).
    #[serde(default)]
    pub cmdline: String,
    /// DTBs to copy to the boot partition, relative to `--dtb-dir`; the
    /// first one that exists of each alternative list is taken.
    #[serde(default)]
    pub dtbs: Vec<Vec<String>>,
    /// Kernel modules the initramfs loads before looking for the disk.
    #[serde(default)]
    pub modules: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KernelBoot {
    /// Raspberry Pi GPU firmware reads config.txt and loads kernel +
    /// initramfs from the FAT partition.
    RpiFirmware,
    /// QEMU `-kernel`/`-initrd` (or a bootloader configured elsewhere):
    /// the boot partition carries the files, the harness passes them.
    Direct,
    /// EFI/U-Boot style boards with their own loader (files on FAT).
    Bootloader,
    /// U-Boot distro boot: `extlinux/extlinux.conf` on the boot partition
    /// names the kernel, the DTB directory (`fdtdir /dtbs`: U-Boot picks
    /// `$fdtfile` from it, i.e. the DTB for the board revision it runs
    /// on), the initramfs and the command line. Every DTB listed in
    /// `kernel.dtbs` is copied under `dtbs/` with its relative path.
    Extlinux,
    /// UEFI with an A/B bootstrap: two bootstrap partitions (GPT, EFI
    /// system partition type) each hold the EFI-stub kernel and the
    /// initramfs, are the `bootstrap` slot group of the layout, and have
    /// a `Boot####` entry each (`000A` for A, `000B` for B; the initrd
    /// and command line are the entry's load options). Images carry the
    /// bootstrap, and the updater tries a new one once through `BootNext`
    /// (docs/FORMAT.md, "UEFI (qemu-x86_64-efi)").
    EfiAb,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BootFiles {
    /// Generate config.txt (Raspberry Pi).
    #[serde(default)]
    pub config_txt: bool,
    /// Extra lines appended to config.txt.
    #[serde(default)]
    pub config_txt_extra: Vec<String>,
    /// Generate cmdline.txt (Raspberry Pi).
    #[serde(default)]
    pub cmdline_txt: bool,
    /// Use the Pi firmware's tryboot A/B (`autoboot.txt`, two boot partitions).
    #[serde(default)]
    pub tryboot: bool,
    /// Copy the GPU firmware files from `--firmware-dir`.
    #[serde(default)]
    pub firmware: Vec<String>,
    /// `kernel.boot: efi-ab`: a blank UEFI variable store (OVMF's
    /// `OVMF_VARS_4M.fd`) the build copies to `OVMF_VARS.fd` with both
    /// bootstraps' `Boot####` entries and `BootOrder` in it. Absent: the
    /// entries are created on the device (efibootmgr).
    #[serde(default)]
    pub efi_vars_template: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// Kernel console device, e.g. `ttyAMA0`, `ttyS0`, `serial0`.
    pub device: String,
    pub baud: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ram {
    /// Physical RAM, MiB.
    pub total_mib: u64,
    /// Most the initramfs plus images it carries may take, MiB (the kernel
    /// unpacks the archive into RAM and the updater streams from it).
    pub initramfs_budget_mib: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Partition table: `mbr` or `gpt`.
    pub table: String,
    /// Device node of this disk on the running board (the updater's target).
    pub device: String,
    /// FAT boot partition size, MiB (two of them with tryboot).
    pub boot_mib: u64,
    /// Size of each root slot (A and B), MiB.
    pub slot_mib: u64,
    /// Byte offset of the updater's state area (its first copy).
    #[serde(default = "default_state_offset")]
    pub state_offset: u64,
    /// Distance from the state area's first copy to its second: at least
    /// the medium's erase block, so one erase cannot take both (SD cards
    /// erase 4 MiB allocation units). Partitions start after the second.
    #[serde(default = "default_state_copy_distance")]
    pub state_copy_distance: u64,
    /// Boot attempts a new slot gets before falling back.
    #[serde(default = "default_tries")]
    pub tries: u8,
}

fn yes() -> bool {
    true
}
fn default_state_offset() -> u64 {
    512 * 1024
}
fn default_state_copy_distance() -> u64 {
    4 * MIB
}
fn default_tries() -> u8 {
    3
}

const MIB: u64 = 1024 * 1024;

impl Board {
    /// Kernel modules the initramfs loads: `kernel.modules`, then the
    /// watchdog's driver.
    pub fn initramfs_modules(&self) -> Vec<String> {
        let mut m = self.kernel.modules.clone();
        if let Some(w) = &self.watchdog {
            if !m.contains(&w.module) {
                m.push(w.module.clone());
            }
        }
        m
    }

    /// Loads and validates a board file.
    pub fn load(path: &Path) -> Result<Board, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Board, Error> {
        let board: Board = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            Error::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: e.to_string(),
            }
        })?;
        board.validate().map_err(|message| Error::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
            if stem != board.name {
                return Err(Error::Invalid {
                    path: path.to_path_buf(),
                    message: format!("board name `{}` does not match the file name", board.name),
                });
            }
        }
        Ok(board)
    }

    /// Finds `configs/<name>.yaml` under `configs_dir`.
    pub fn find(configs_dir: &Path, name: &str) -> Result<Board, Error> {
        let known = list(configs_dir)?;
        if !known.iter().any(|k| k == name) {
            return Err(Error::UnknownBoard {
                name: name.to_string(),
                known,
            });
        }
        Self::load(&configs_dir.join(format!("{name}.yaml")))
    }

    pub fn compatible(&self) -> &str {
        self.compatible.as_deref().unwrap_or(&self.name)
    }

    /// Semantic checks serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 32
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        };
        if !name_ok(&self.name) {
            return Err(format!("name `{}`: use 1-32 of [A-Za-z0-9._-]", self.name));
        }
        if !name_ok(self.compatible()) {
            return Err(format!(
                "compatible `{}`: use 1-32 of [A-Za-z0-9._-]",
                self.compatible()
            ));
        }
        if !matches!(
            self.updater.machine.as_str(),
            "aarch64" | "x86_64" | "riscv64" | "arm"
        ) {
            return Err(format!(
                "updater.machine `{}`: expected aarch64, x86_64, riscv64 or arm",
                self.updater.machine
            ));
        }
        if self.updater.rust_target.split('-').count() < 3 {
            return Err(format!(
                "updater.rust_target `{}` is not a target triple",
                self.updater.rust_target
            ));
        }
        if self.updater.size_budget == 0 {
            return Err("updater.size_budget must be > 0".into());
        }
        if self.kernel.image_name.is_empty() || self.kernel.image_name.contains('/') {
            return Err("kernel.image_name must be a plain file name".into());
        }
        for alt in &self.kernel.dtbs {
            if alt.is_empty() {
                return Err("kernel.dtbs: empty alternative list".into());
            }
            for d in alt {
                if d.starts_with('/') || d.split('/').any(|c| c == "..") {
                    return Err(format!("kernel.dtbs: `{d}` must be relative, without `..`"));
                }
            }
        }
        if !matches!(self.disk.table.as_str(), "mbr" | "gpt") {
            return Err(format!(
                "disk.table `{}`: expected mbr or gpt",
                self.disk.table
            ));
        }
        if self.disk.boot_mib < 16 || self.disk.slot_mib < 8 {
            return Err("disk.boot_mib must be >= 16 and disk.slot_mib >= 8".into());
        }
        if !self.disk.state_offset.is_multiple_of(4096)
            || self.disk.state_offset < 64 * 1024
            || self.disk.state_offset > 64 * MIB
        {
            return Err(
                "disk.state_offset must be 4096-aligned, at least 64 KiB (after the partition table) and at most 64 MiB".into(),
            );
        }
        if !self.disk.state_copy_distance.is_multiple_of(4096)
            || self.disk.state_copy_distance < MIB
            || self.disk.state_copy_distance > 64 * MIB
        {
            return Err(
                "disk.state_copy_distance must be 4096-aligned and 1..=64 MiB (at least the medium's erase block; SD cards need 4 MiB, the default)".into(),
            );
        }
        if self.disk.tries == 0 {
            return Err("disk.tries must be >= 1".into());
        }
        if self.ram.initramfs_budget_mib == 0 || self.ram.initramfs_budget_mib >= self.ram.total_mib
        {
            return Err("ram.initramfs_budget_mib must be > 0 and below ram.total_mib".into());
        }
        if let Some(w) = &self.watchdog {
            // The device updater takes no other name (fwpack-updater's
            // config.rs): refused here, not as a safe-mode boot.
            let wd_name = w
                .device
                .strip_prefix("/dev/watchdog")
                .is_some_and(|n| n.bytes().all(|c| c.is_ascii_digit()));
            if w.module.is_empty() || !wd_name || !(1..=3600).contains(&w.timeout_s) {
                return Err("watchdog: module must be named, device must be /dev/watchdog or /dev/watchdogN, timeout_s must be 1..=3600".into());
            }
        }
        if self.kernel.boot == KernelBoot::EfiAb && self.disk.table != "gpt" {
            return Err("kernel.boot: efi-ab needs disk.table: gpt".into());
        }
        if self.boot_files.efi_vars_template.is_some() && self.kernel.boot != KernelBoot::EfiAb {
            return Err("boot_files.efi_vars_template needs kernel.boot: efi-ab".into());
        }
        if self.boot_files.tryboot && self.kernel.boot != KernelBoot::RpiFirmware {
            return Err("boot_files.tryboot needs kernel.boot: rpi-firmware".into());
        }
        Ok(())
    }
}

/// Names of the boards in `configs_dir`, sorted.
pub fn list(configs_dir: &Path) -> Result<Vec<String>, Error> {
    let rd = std::fs::read_dir(configs_dir).map_err(|source| Error::Read {
        path: configs_dir.to_path_buf(),
        source,
    })?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            (p.extension().and_then(|x| x.to_str()) == Some("yaml"))
                .then(|| p.file_stem().and_then(|s| s.to_str()).map(str::to_owned))
                .flatten()
        })
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
    }

    #[test]
    fn shipped_boards_load() {
        let names = list(&configs()).unwrap();
        assert_eq!(
            names,
            [
                "qemu-aarch64",
                "qemu-riscv64",
                "qemu-x86_64",
                "qemu-x86_64-efi",
                "rpi-zero2w",
                "visionfive2"
            ]
        );
        for n in names {
            let b = Board::find(&configs(), &n).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(b.name, n);
        }
        let pi = Board::find(&configs(), "rpi-zero2w").unwrap();
        assert_eq!(pi.ram.total_mib, 512);
        assert_eq!(pi.updater.rust_target, "aarch64-unknown-linux-musl");
    }

    #[test]
    fn slot_boot_key() {
        let text = std::fs::read_to_string(configs().join("qemu-x86_64.yaml")).unwrap();
        let b = Board::parse(&text, Path::new("qemu-x86_64.yaml")).unwrap();
        assert_eq!(b.boot, SlotBoot::SwitchRoot);
        let t = format!("{}\nboot: kexec\n", text.trim_end());
        let t = t.replace("\nboot: switch_root\n", "\n");
        let b = Board::parse(&t, Path::new("qemu-x86_64.yaml")).unwrap();
        assert_eq!((b.boot, b.boot.name()), (SlotBoot::Kexec, "kexec"));
        let t = t.replace("boot: kexec", "boot: chainload");
        assert!(Board::parse(&t, Path::new("qemu-x86_64.yaml")).is_err());
    }

    #[test]
    fn updater_tls_option() {
        let text = std::fs::read_to_string(configs().join("qemu-aarch64.yaml")).unwrap();
        let b = Board::parse(&text, Path::new("qemu-aarch64.yaml")).unwrap();
        assert!(!b.updater.tls, "shipped boards build the C-free updater");
        let t = text.replace("  tls: false", "  tls: true");
        let b = Board::parse(&t, Path::new("qemu-aarch64.yaml")).unwrap();
        assert!(b.updater.tls);
        // Absent: off.
        let x86 = std::fs::read_to_string(configs().join("qemu-x86_64.yaml")).unwrap();
        assert!(!x86.contains("tls:"));
        assert!(
            !Board::parse(&x86, Path::new("qemu-x86_64.yaml"))
                .unwrap()
                .updater
                .tls
        );
        let t = text.replace("  tls: false", "  tls: maybe");
        assert!(Board::parse(&t, Path::new("qemu-aarch64.yaml")).is_err());
    }

    #[test]
    fn unknown_field_is_an_error_with_file_and_line() {
        let text = std::fs::read_to_string(configs().join("qemu-x86_64.yaml"))
            .unwrap()
            .replace("  baud: 115200", "  baud: 115200\n  bauds: 9600");
        let err = Board::parse(&text, Path::new("configs/qemu-x86_64.yaml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("configs/qemu-x86_64.yaml:"), "{msg}");
        assert!(msg.contains("unknown field `bauds`"), "{msg}");
        assert!(matches!(err, Error::Parse { line, .. } if line > 1));
    }

    #[test]
    fn state_area_keys() {
        let text = std::fs::read_to_string(configs().join("qemu-x86_64.yaml")).unwrap();
        let b = Board::parse(&text, Path::new("qemu-x86_64.yaml")).unwrap();
        assert_eq!(
            (b.disk.state_offset, b.disk.state_copy_distance),
            (512 << 10, 4 << 20)
        );
        for (key, bad) in [
            ("state_copy_distance", "65536"),
            ("state_copy_distance", "4194305"),
            ("state_offset", "4096"),
        ] {
            let t = text.replace("  table: mbr", &format!("  table: mbr\n  {key}: {bad}"));
            let err = Board::parse(&t, Path::new("qemu-x86_64.yaml")).unwrap_err();
            assert!(
                err.to_string().contains(&format!("disk.{key}")),
                "{key}={bad}: {err}"
            );
        }
        let t = text.replace(
            "  table: mbr",
            "  table: mbr\n  state_copy_distance: 8388608",
        );
        let b = Board::parse(&t, Path::new("qemu-x86_64.yaml")).unwrap();
        assert_eq!(b.disk.state_copy_distance, 8 << 20);
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let text = std::fs::read_to_string(configs().join("qemu-x86_64.yaml"))
            .unwrap()
            .replace("machine: x86_64", "machine: sparc");
        let err = Board::parse(&text, Path::new("qemu-x86_64.yaml")).unwrap_err();
        assert!(err.to_string().contains("updater.machine `sparc`"), "{err}");
        let base = std::fs::read_to_string(configs().join("qemu-x86_64.yaml")).unwrap();
        for (dev, ok) in [
            ("/dev/watchdog1", true),
            ("/dev/vda", false),
            ("/dev/watchdog/x", false),
        ] {
            let t = format!("{base}\nwatchdog:\n  module: i6300esb\n  device: {dev}\n");
            let r = Board::parse(&t, Path::new("qemu-x86_64.yaml"));
            assert_eq!(r.is_ok(), ok, "{dev}: {:?}", r.err().map(|e| e.to_string()));
        }
        let err = Board::find(&configs(), "rpi-zero3").unwrap_err();
        assert!(
            err.to_string().contains("unknown board `rpi-zero3`"),
            "{err}"
        );
    }
}
