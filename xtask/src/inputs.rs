//! `cargo xtask inputs [--board B]`: the real board inputs from Debian's
//! archive, fetched once into the cache (`target/fwpack-cache`, or
//! `$FWPACK_CACHE`) with a private apt configuration — the machine's apt
//! sources and dpkg database are never touched (see `testkit::kernels`):
//!
//! - rpi-zero2w, qemu-aarch64: `linux-image-*-arm64` (Image, modules, and
//!   the DTBs, among them `broadcom/bcm2837-rpi-zero-2-w.dtb`);
//! - rpi-zero2w: `raspi-firmware` (component non-free-firmware):
//!   `bootcode.bin`, `start.elf`, `fixup.dat`;
//! - qemu-x86_64: `linux-image-*-cloud-amd64` (NVMe and ext4 built in);
//! - visionfive2, qemu-riscv64: Debian trixie's `linux-image-6.12.*-riscv64`
//!   through `linux-image-riscv64` (`APT::Architecture=riscv64`, `trixie
//!   main`): the Image, the modules (decompressed from `.ko.xz` in the
//!   cache) and the DTBs, among them
//!   `starfive/jh7110-starfive-visionfive-2-v1.{2a,3b}.dtb`.
//!
//! Also the pieces every `fwpack build` here needs besides inputs: the
//! `fwpack` binary and a development signing key under `target/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use testkit::kernels::{self, Kernel};

/// Boards this repository ships configs for.
pub const BOARDS: &[&str] = &[
    "rpi-zero2w",
    "qemu-aarch64",
    "qemu-x86_64",
    "visionfive2",
    "qemu-riscv64",
];

/// What `fwpack build --board <board>` needs from outside.
pub struct BoardInputs {
    pub board: String,
    pub kernel: Option<Kernel>,
    pub firmware_dir: Option<PathBuf>,
    /// The board config lists DTBs (pass `--dtb-dir`).
    pub wants_dtbs: bool,
    /// The board loads kernel modules (pass `--modules-dir`).
    pub wants_modules: bool,
}

impl BoardInputs {
    /// `--kernel … [--dtb-dir …] [--modules-dir …] [--firmware-dir …]`.
    pub fn build_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        let s = |p: &Path| p.display().to_string();
        if let Some(k) = &self.kernel {
            a.extend(["--kernel".into(), s(&k.vmlinuz)]);
            if self.wants_dtbs {
                a.extend(["--dtb-dir".into(), s(&k.dtbs_dir)]);
            }
            if self.wants_modules {
                a.extend(["--modules-dir".into(), s(&k.modules_dir)]);
            }
        }
        if let Some(f) = &self.firmware_dir {
            a.extend(["--firmware-dir".into(), s(f)]);
        }
        a
    }
}

/// Fetches (or finds in the cache) the inputs of one board.
pub fn fetch(board: &str) -> Result<BoardInputs> {
    let arm64 = || kernels::arm64().context("Debian arm64 kernel (linux-image-arm64)");
    let riscv64 =
        || kernels::riscv64().context("Debian trixie riscv64 kernel (linux-image-riscv64)");
    let (kernel, firmware_dir, wants_dtbs, wants_modules) = match board {
        "rpi-zero2w" => (
            Some(arm64()?),
            Some(
                kernels::raspi_firmware()
                    .context("Raspberry Pi GPU firmware (raspi-firmware, non-free-firmware)")?,
            ),
            true,
            true,
        ),
        "qemu-aarch64" => (Some(arm64()?), None, false, true),
        "qemu-x86_64" => (
            Some(kernels::amd64_cloud().context("Debian cloud kernel (linux-image-cloud-amd64)")?),
            None,
            false,
            false,
        ),
        "visionfive2" => (Some(riscv64()?), None, true, true),
        "qemu-riscv64" => (Some(riscv64()?), None, false, true),
        other => bail!("unknown board `{other}` (boards: {})", BOARDS.join(", ")),
    };
    Ok(BoardInputs {
        board: board.into(),
        kernel,
        firmware_dir,
        wants_dtbs,
        wants_modules,
    })
}

/// `cargo xtask inputs [--board B]`.
pub fn run(args: &[String]) -> Result<()> {
    let boards: Vec<String> = match args {
        [] => BOARDS.iter().map(|b| b.to_string()).collect(),
        [flag, b] if flag == "--board" => vec![b.clone()],
        _ => bail!("usage: cargo xtask inputs [--board BOARD]"),
    };
    for b in &boards {
        let i = fetch(b)?;
        println!("{b}:");
        match &i.kernel {
            Some(k) => {
                println!("  package       {}", k.package);
                println!("  kernel        {}", k.vmlinuz.display());
                if i.wants_dtbs {
                    println!("  dtb-dir       {}", k.dtbs_dir.display());
                }
                if i.wants_modules {
                    println!("  modules-dir   {}", k.modules_dir.display());
                }
            }
            None => println!(
                "  (no Debian inputs: build its kernel and DTB with Buildroot, see buildroot-external/)"
            ),
        }
        if let Some(f) = &i.firmware_dir {
            println!("  firmware-dir  {}", f.display());
        }
        if i.kernel.is_some() {
            println!(
                "  fwpack build --build-updater --board {b} {}",
                i.build_args().join(" ")
            );
        }
    }
    Ok(())
}

/// The host `fwpack` binary, built now (a no-op when up to date).
pub fn fwpack_binary() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "-q", "-p", "fwpack", "--bin", "fwpack"])
        .current_dir(testkit::workspace_root())
        .status()
        .context("running cargo build -p fwpack")?;
    if !st.success() {
        bail!("cargo build -p fwpack failed ({st})");
    }
    let bin = testkit::target_dir().join("debug/fwpack");
    if !bin.is_file() {
        bail!("{} missing after the build", bin.display());
    }
    Ok(bin)
}

/// The development signing key `target/fwpack-dev-key.pem` (made with
/// `fwpack keygen` on first use, reused afterwards). Never a release key.
pub fn dev_key(fwpack: &Path) -> Result<PathBuf> {
    let key = testkit::target_dir().join("fwpack-dev-key.pem");
    if key.is_file() {
        return Ok(key);
    }
    std::fs::create_dir_all(testkit::target_dir())?;
    let out = Command::new(fwpack)
        .args(["keygen", "--force", "-o"])
        .arg(&key)
        .output()
        .context("fwpack keygen")?;
    if !out.status.success() {
        bail!(
            "fwpack keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(key)
}

/// One `fwpack build` invocation.
pub struct Build<'a> {
    pub fwpack: &'a Path,
    pub inputs: &'a BoardInputs,
    pub key: &'a Path,
    pub out: PathBuf,
    pub rootfs: Option<PathBuf>,
    pub include_images: Vec<PathBuf>,
    pub version: u64,
    pub label: String,
}

impl Build<'_> {
    pub fn command(&self) -> Command {
        let mut c = Command::new(self.fwpack);
        // The updater of this checkout, built by cargo (not a shipped one).
        c.args(["build", "--build-updater", "--board", &self.inputs.board])
            .arg("--out")
            .arg(&self.out)
            .args(self.inputs.build_args());
        if let Some(r) = &self.rootfs {
            c.arg("--rootfs").arg(r);
        }
        for i in &self.include_images {
            c.arg("--include-image").arg(i);
        }
        c.args([
            "--version",
            &self.version.to_string(),
            "--label",
            &self.label,
        ])
        .arg("--key")
        .arg(self.key);
        c
    }

    /// Runs the build with its progress on the terminal.
    pub fn run_visible(&self) -> Result<()> {
        let st = self.command().status().context("running fwpack build")?;
        if !st.success() {
            bail!("fwpack build for {} failed ({st})", self.inputs.board);
        }
        Ok(())
    }

    /// Runs the build quietly; its output is shown only when it fails.
    pub fn run_quiet(&self) -> Result<()> {
        let out = self.command().output().context("running fwpack build")?;
        if !out.status.success() {
            bail!(
                "fwpack build for {} failed ({}):\n{}{}",
                self.inputs.board,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}
