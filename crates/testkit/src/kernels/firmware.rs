//! The Raspberry Pi GPU firmware (`bootcode.bin`, `start.elf`,
//! `fixup.dat`) from Debian's `raspi-firmware` package (component
//! `non-free-firmware`, architecture `all`), fetched with the same private
//! arm64 apt configuration as the arm64 kernel and unpacked into
//! `<cache>/firmware/raspi-firmware_<version>/`. Like the kernels: the
//! resolved version is remembered for six hours, and offline the newest
//! unpacked copy is used.

use std::fs;
use std::path::{Path, PathBuf};

use super::{download_and_unpack, AptConfig, Arch, Flavour};
use crate::{cache_dir, io_err, run, CacheLock, Error, Result};

const PACKAGE: &str = "raspi-firmware";
/// Where the package puts the files (Debian copies them to /boot/firmware
/// from its postinst; we only unpack).
const SUBDIR: &str = "usr/lib/raspi-firmware";
/// What a BCM2837/BCM2710 board's boot partition needs.
const FILES: &[&str] = &["bootcode.bin", "start.elf", "fixup.dat"];

/// The directory holding `bootcode.bin`, `start.elf` and `fixup.dat` (and
/// the other `start*.elf`/`fixup*.dat` variants), downloaded on first use.
pub fn raspi_firmware() -> Result<PathBuf> {
    let _lock = CacheLock::acquire("kernels")?;
    let base = cache_dir().join("firmware");
    fs::create_dir_all(&base).map_err(io_err(&base))?;
    let f = Flavour {
        arch: Arch::Aarch64,
        meta: PACKAGE,
        suffix: "",
        apt: AptConfig::Private {
            dir: cache_dir().join("apt-arm64"),
            arch: "arm64",
            suite: None,
        },
    };
    let memo = base.join(format!("{PACKAGE}.resolved"));
    let fresh = fs::metadata(&memo)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < std::time::Duration::from_secs(6 * 3600));
    let remembered = fs::read_to_string(&memo)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| fresh && base.join(dir_name(v)).join(".complete").exists());
    let version = match remembered {
        Some(v) => v,
        None => match resolve(&f) {
            Ok(v) => {
                let _ = fs::write(&memo, &v);
                v
            }
            Err(e) => match newest_cached(&base) {
                Some(v) => {
                    eprintln!("testkit: cannot resolve {PACKAGE} ({e}); using cached {v}");
                    v
                }
                None => return Err(e),
            },
        },
    };
    let root = base.join(dir_name(&version));
    if !root.join(".complete").exists() {
        download_and_unpack(&f, PACKAGE, &base, &root)?;
    }
    let dir = root.join(SUBDIR);
    for name in FILES {
        if !dir.join(name).is_file() {
            return Err(Error::Other(format!(
                "{PACKAGE} {version}: {} is missing",
                dir.join(name).display()
            )));
        }
    }
    Ok(dir)
}

fn dir_name(version: &str) -> String {
    // An epoch's ':' is legal in a path but awkward in a shell.
    format!("{PACKAGE}_{}", version.replace(':', "_"))
}

/// The candidate version in the private arm64 lists.
fn resolve(f: &Flavour) -> Result<String> {
    f.apt.prepare()?;
    let AptConfig::Private { dir, .. } = &f.apt else {
        return Err(Error::Other(
            "raspi-firmware needs the private apt config".into(),
        ));
    };
    // Lists fetched before the component was added lack it.
    let has_component = fs::read_dir(dir.join("lists"))
        .map(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.contains("non-free-firmware") && n.ends_with("_Packages")
            })
        })
        .unwrap_or(false);
    if !has_component {
        f.apt.update()?;
    }
    let query = || -> Option<String> {
        let out = run(f
            .apt
            .command("apt-cache")
            .args(["show", "--no-all-versions", PACKAGE]))
        .ok()?;
        out.lines()
            .find_map(|l| l.strip_prefix("Version:"))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if let Some(v) = query() {
        return Ok(v);
    }
    f.apt.update()?;
    query().ok_or_else(|| {
        Error::Other(format!(
            "apt knows no {PACKAGE} (component non-free-firmware) even after apt-get update"
        ))
    })
}

fn newest_cached(base: &Path) -> Option<String> {
    let prefix = format!("{PACKAGE}_");
    fs::read_dir(base)
        .ok()?
        .flatten()
        .filter(|e| e.path().join(".complete").exists())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .map(str::to_owned)
        })
        .max()
}
