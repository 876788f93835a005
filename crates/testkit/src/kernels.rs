//! Real Debian kernels for boot tests, fetched once into the cache.
//!
//! The current package is found through the metapackage
//! (`linux-image-cloud-amd64`, `linux-image-arm64`), because old versions
//! leave the archive. Packages are fetched with `apt-get download` and
//! unpacked with `dpkg-deb -x` into `<cache>/kernels/<package>/`; nothing
//! is installed and the machine's dpkg database is never touched.
//!
//! arm64 packages are resolved with a private apt configuration (its own
//! sources list, lists and cache directories under `<cache>/apt-arm64`,
//! `APT::Architecture=arm64`), so there is no `dpkg --add-architecture`
//! and no change to the machine's apt sources.
//!
//! riscv64 comes from Debian trixie (the first release with riscv64 as an
//! official architecture, and the first whose kernel ships the JH7110 /
//! VisionFive 2 device trees): its private configuration points at
//! `trixie main` whatever the host runs.
//!
//! A resolution is remembered for six hours (reading apt's lists takes
//! seconds). Offline: if resolving fails but a kernel of that flavour is
//! already unpacked in the cache, the newest one is used.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cache_dir, io_err, run, CacheLock, Error, Result};

// The Raspberry Pi GPU firmware comes through the same private arm64 apt
// configuration (component non-free-firmware).
mod firmware;
pub use firmware::raspi_firmware;

/// Architecture of a kernel (and of the QEMU that boots it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
    Riscv64,
}

/// An unpacked kernel package.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub arch: Arch,
    /// Debian package name, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// Where the package was unpacked.
    pub root: PathBuf,
    /// `boot/vmlinuz-<release>` (bzImage on amd64, a plain `Image` on arm64),
    /// `boot/vmlinux-<release>` on riscv64 (also a plain `Image`).
    pub vmlinuz: PathBuf,
    /// `boot/config-<release>`.
    pub config: PathBuf,
    /// `lib/modules/<release>` (`usr/lib/modules/<release>` from trixie on,
    /// merged /usr). Debian ships no `modules.dep` (depmod runs
    /// at install time); `initramfs::modules` reads `.modinfo` instead.
    pub modules_dir: PathBuf,
    /// `usr/lib/linux-image-<release>` (device trees; arm64 and riscv64).
    pub dtbs_dir: PathBuf,
}

impl Kernel {
    /// Whether the kernel config has `CONFIG_<name>=y` (`=m` returns false).
    pub fn config_builtin(&self, name: &str) -> Result<bool> {
        let text = fs::read_to_string(&self.config).map_err(io_err(&self.config))?;
        let want = format!("CONFIG_{name}=y");
        Ok(text.lines().any(|l| l.trim() == want))
    }
}

/// Debian's amd64 cloud kernel (virtio and NVMe built in, boots fast).
pub fn amd64_cloud() -> Result<Kernel> {
    fetch(Flavour {
        arch: Arch::X86_64,
        meta: "linux-image-cloud-amd64",
        suffix: "-cloud-amd64",
        apt: AptConfig::Host,
    })
}

/// Debian's generic amd64 kernel (NVMe, virtio and most drivers as
/// modules): a second, different x86_64 kernel, e.g. for a slot whose
/// kernel is not the bootstrap's.
pub fn amd64_generic() -> Result<Kernel> {
    fetch(Flavour {
        arch: Arch::X86_64,
        meta: "linux-image-amd64",
        suffix: "-amd64",
        apt: AptConfig::Host,
    })
}

/// Debian's generic arm64 kernel (`virtio_blk` and MMC drivers are modules;
/// ships `broadcom/bcm2837-rpi-zero-2-w.dtb`).
pub fn arm64() -> Result<Kernel> {
    let dir = cache_dir().join("apt-arm64");
    fetch(Flavour {
        arch: Arch::Aarch64,
        meta: "linux-image-arm64",
        suffix: "-arm64",
        apt: AptConfig::Private {
            dir,
            arch: "arm64",
            suite: None,
        },
    })
}

/// Debian trixie's riscv64 kernel (6.12: ships
/// `starfive/jh7110-starfive-visionfive-2-v1.{2a,3b}.dtb`; virtio, MMC and
/// ext4 drivers as the config says), resolved through `linux-image-riscv64`.
pub fn riscv64() -> Result<Kernel> {
    let dir = cache_dir().join("apt-riscv64-trixie");
    fetch(Flavour {
        arch: Arch::Riscv64,
        meta: "linux-image-riscv64",
        suffix: "-riscv64",
        apt: AptConfig::Private {
            dir,
            arch: "riscv64",
            suite: Some(RISCV64_SUITE),
        },
    })
}

/// The Debian release riscv64 packages come from.
pub const RISCV64_SUITE: &str = "trixie";

struct Flavour {
    arch: Arch,
    meta: &'static str,
    /// Package names end in this (`linux-image-<abi><suffix>`).
    suffix: &'static str,
    apt: AptConfig,
}

enum AptConfig {
    /// The machine's own apt configuration (the host architecture).
    Host,
    /// A private configuration rooted at `dir` for a foreign architecture,
    /// on `suite` (None: the host's release).
    Private {
        dir: PathBuf,
        arch: &'static str,
        suite: Option<&'static str>,
    },
}

impl AptConfig {
    fn options(&self) -> Vec<String> {
        match self {
            AptConfig::Host => Vec::new(),
            AptConfig::Private { dir, arch, .. } => {
                let d = |p: &str| dir.join(p).display().to_string();
                vec![
                    format!("APT::Architecture={arch}"),
                    format!("APT::Architectures={arch}"),
                    format!("Dir::State::Lists={}", d("lists")),
                    format!("Dir::State::status={}", d("status")),
                    format!("Dir::Cache={}", d("cache")),
                    format!("Dir::Etc::SourceList={}", d("sources.list")),
                    format!("Dir::Etc::SourceParts={}", d("sources.list.d")),
                    format!("Dir::Etc::Preferences={}", d("preferences")),
                    format!("Dir::Etc::PreferencesParts={}", d("preferences.d")),
                    "Acquire::Languages=none".into(),
                ]
                .into_iter()
                .flat_map(|o| ["-o".to_string(), o])
                .collect()
            }
        }
    }

    fn prepare(&self) -> Result<()> {
        let AptConfig::Private { dir, suite, .. } = self else {
            return Ok(());
        };
        for sub in [
            "lists/partial",
            "cache/archives/partial",
            "sources.list.d",
            "preferences.d",
        ] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let status = dir.join("status");
        if !status.exists() {
            fs::write(&status, "").map_err(io_err(&status))?;
        }
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let sources = match suite {
            // Only `main`: the kernel is all a foreign release is used for.
            Some(suite) => {
                format!("deb [signed-by={keyring}] http://deb.debian.org/debian {suite} main\n")
            }
            None => {
                let suite = host_codename().unwrap_or_else(|| "bookworm".into());
                format!(
            "deb [signed-by={keyring}] http://deb.debian.org/debian {suite} main non-free-firmware\n\
             deb [signed-by={keyring}] http://deb.debian.org/debian-security {suite}-security main\n"
                )
            }
        };
        let list = dir.join("sources.list");
        if fs::read_to_string(&list).ok().as_deref() != Some(sources.as_str()) {
            fs::write(&list, sources).map_err(io_err(&list))?;
        }
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.args(self.options());
        c
    }

    fn update(&self) -> Result<()> {
        eprintln!("testkit: apt-get update (package lists missing or stale)");
        run(self.command("apt-get").args(["update", "-qq"]))?;
        Ok(())
    }
}

fn host_codename() -> Option<String> {
    let text = fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

fn fetch(f: Flavour) -> Result<Kernel> {
    let _lock = CacheLock::acquire("kernels")?;
    let kernels = cache_dir().join("kernels");
    fs::create_dir_all(&kernels).map_err(io_err(&kernels))?;
    // Resolving reads apt's package lists (seconds for the arm64 ones);
    // within a few hours the answer is the same, so remember it.
    let memo = kernels.join(format!("{}.resolved", f.meta));
    let fresh = fs::metadata(&memo)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < std::time::Duration::from_secs(6 * 3600));
    let remembered = fs::read_to_string(&memo)
        .ok()
        .map(|p| p.trim().to_owned())
        .filter(|p| fresh && kernels.join(p).join(".complete").exists());
    if let Some(p) = remembered {
        let root = kernels.join(&p);
        if f.arch == Arch::Riscv64 {
            plain_modules(&root)?;
        }
        return describe(f.arch, &p, &root);
    }
    let package = match resolve(&f) {
        Ok(p) => {
            let _ = fs::write(&memo, &p);
            p
        }
        Err(e) => match newest_cached(&kernels, f.suffix) {
            Some(p) => {
                eprintln!("testkit: cannot resolve {} ({e}); using cached {p}", f.meta);
                p
            }
            None => return Err(e),
        },
    };
    let root = kernels.join(&package);
    if !root.join(".complete").exists() {
        download_and_unpack(&f, &package, &kernels, &root)?;
    }
    if f.arch == Arch::Riscv64 {
        plain_modules(&root)?;
    }
    describe(f.arch, &package, &root)
}

/// trixie's kernels ship `.ko.xz` modules. The initramfs builder takes
/// `.ko`, `.ko.gz` and `.ko.zst`, and the updater loads plain files with
/// `finit_module(…, 0)`, so the cached tree is decompressed once, in place
/// (`xz -d`, package xz-utils), and marked done.
fn plain_modules(root: &Path) -> Result<()> {
    let done = root.join(".modules-decompressed");
    if done.exists() {
        return Ok(());
    }
    let mut xz = Vec::new();
    collect_suffix(root, ".ko.xz", &mut xz)?;
    eprintln!(
        "testkit: decompressing {} .ko.xz modules in {}",
        xz.len(),
        root.display()
    );
    for chunk in xz.chunks(256) {
        run(Command::new("xz").args(["-d", "-f", "-q"]).args(chunk))?;
    }
    fs::write(&done, "").map_err(io_err(&done))?;
    Ok(())
}

fn collect_suffix(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
        let p = e.path();
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            collect_suffix(&p, suffix, out)?;
        } else if t.is_file() && p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    Ok(())
}

/// `linux-image-6.1.0-NN<suffix>` (trixie: `linux-image-6.12.NN+deb13<suffix>`)
/// from the metapackage's dependencies.
fn resolve(f: &Flavour) -> Result<String> {
    f.apt.prepare()?;
    let lists_empty = match &f.apt {
        AptConfig::Private { dir, .. } => fs::read_dir(dir.join("lists"))
            .map(|rd| {
                !rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
            })
            .unwrap_or(true),
        AptConfig::Host => false,
    };
    if lists_empty {
        f.apt.update()?;
    }
    let query = || -> Result<Option<String>> {
        let out = match run(f.apt.command("apt-cache").args(["depends", f.meta])) {
            Ok(o) => o,
            // apt-cache fails on unknown packages; treat like "not found".
            Err(_) => return Ok(None),
        };
        Ok(out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends:"))
            .map(str::trim)
            .find(|d| d.starts_with("linux-image-") && d.ends_with(f.suffix))
            .map(str::to_owned))
    };
    if let Some(p) = query()? {
        return Ok(p);
    }
    f.apt.update()?;
    query()?
        .ok_or_else(|| Error::Other(format!("apt knows no {} even after apt-get update", f.meta)))
}

fn newest_cached(kernels: &Path, suffix: &str) -> Option<String> {
    let mut found: Vec<(Vec<u64>, String)> = fs::read_dir(kernels)
        .ok()?
        .flatten()
        .filter(|e| e.path().join(".complete").exists())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with("linux-image-") && n.ends_with(suffix))
        .filter(|n| {
            // "-arm64" must not pick up "-cloud-arm64" and the like.
            let abi = n
                .trim_start_matches("linux-image-")
                .trim_end_matches(suffix);
            abi.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'd' | 'e' | 'b'))
        })
        .map(|n| {
            let key = n
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|p| p.parse().ok())
                .collect();
            (key, n)
        })
        .collect();
    found.sort();
    found.pop().map(|(_, n)| n)
}

fn download_and_unpack(f: &Flavour, package: &str, kernels: &Path, root: &Path) -> Result<()> {
    let dl = kernels.join("downloads");
    fs::create_dir_all(&dl).map_err(io_err(&dl))?;
    eprintln!("testkit: downloading {package}");
    let attempt = |dl: &Path| {
        run(f
            .apt
            .command("apt-get")
            .args(["download", "-qq", package])
            .current_dir(dl))
    };
    if attempt(&dl).is_err() {
        // The index may be stale (the archive moved on); refresh once.
        f.apt.update()?;
        attempt(&dl)?;
    }
    let deb = fs::read_dir(&dl)
        .map_err(io_err(&dl))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
        .ok_or_else(|| {
            Error::Other(format!(
                "apt-get download left no {package}_*.deb in {}",
                dl.display()
            ))
        })?;
    let tmp = kernels.join(format!(".{package}.partial"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    if root.exists() {
        fs::remove_dir_all(root).map_err(io_err(root))?;
    }
    fs::rename(&tmp, root).map_err(io_err(root))?;
    fs::write(root.join(".complete"), package).map_err(io_err(root))?;
    // The unpacked tree is what we keep; the .deb is just transport.
    let _ = fs::remove_file(&deb);
    Ok(())
}

fn describe(arch: Arch, package: &str, root: &Path) -> Result<Kernel> {
    // trixie's packages are merged-/usr (usr/lib/modules); bookworm's not.
    let mods = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| root.join("lib/modules"));
    let release = fs::read_dir(&mods)
        .map_err(io_err(&mods))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .find(|r| package.ends_with(r.as_str()))
        .ok_or_else(|| {
            Error::Other(format!(
                "{}: no lib/modules/<release> matching {package}",
                root.display()
            ))
        })?;
    // Debian installs riscv64's (uncompressed) Image as vmlinux-*.
    let image = match arch {
        Arch::Riscv64 => "vmlinux",
        Arch::X86_64 | Arch::Aarch64 => "vmlinuz",
    };
    let k = Kernel {
        arch,
        package: package.to_owned(),
        vmlinuz: root.join(format!("boot/{image}-{release}")),
        config: root.join(format!("boot/config-{release}")),
        modules_dir: mods.join(&release),
        dtbs_dir: root.join(format!("usr/lib/linux-image-{release}")),
        root: root.to_owned(),
        release,
    };
    if !k.vmlinuz.is_file() {
        return Err(Error::Other(format!("{} is missing", k.vmlinuz.display())));
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_cached_picks_highest_abi_of_the_flavour() {
        let t = std::env::temp_dir().join(format!("testkit-cache-{}", std::process::id()));
        for n in [
            "linux-image-6.1.0-9-arm64",
            "linux-image-6.1.0-56-arm64",
            "linux-image-6.1.0-60-cloud-arm64",
            "linux-image-6.1.0-70-arm64",
        ] {
            fs::create_dir_all(t.join(n)).unwrap();
            if n != "linux-image-6.1.0-70-arm64" {
                fs::write(t.join(n).join(".complete"), n).unwrap();
            }
        }
        assert_eq!(
            newest_cached(&t, "-arm64").as_deref(),
            Some("linux-image-6.1.0-56-arm64")
        );
        assert_eq!(newest_cached(&t, "-cloud-amd64"), None);
        fs::remove_dir_all(&t).unwrap();
    }
}
