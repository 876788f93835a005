//! `fwpack --version` names the commit it was built from: "0.1.0 (commit
//! 0123456789ab)". Without git (a source archive, as Buildroot and Yocto
//! build from), FWPACK_GIT_COMMIT may give the commit; otherwise the
//! version is the bare package version.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=FWPACK_GIT_COMMIT");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let commit = match std::env::var("FWPACK_GIT_COMMIT") {
        Ok(c) if !c.is_empty() => Some(c),
        _ => {
            // Rebuild when HEAD moves: HEAD itself and the branch it names.
            for path in [
                git(&["rev-parse", "--git-path", "HEAD"]),
                git(&["symbolic-ref", "-q", "HEAD"])
                    .and_then(|r| git(&["rev-parse", "--git-path", &r])),
            ]
            .into_iter()
            .flatten()
            {
                let abs =
                    std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
                        .join(&path);
                println!("cargo:rerun-if-changed={}", abs.display());
            }
            git(&["rev-parse", "HEAD"])
        }
    };
    let full = match commit {
        Some(c) if c.len() >= 12 && c.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("{version} (commit {})", &c[..12])
        }
        _ => version,
    };
    println!("cargo:rustc-env=FWPACK_VERSION={full}");
    relr();
}

/// Packed relative relocations (DT_RELR, glibc >= 2.36): the dynamic
/// loader reads 190 KiB of `.rela.dyn` at every start of this PIE, and
/// those pages stay in its RSS; packed, they are a few KiB. Only for a
/// dynamically linked glibc binary built for this machine whose own glibc
/// is 2.36 or newer: the linker adds a GLIBC_ABI_DT_RELR version need,
/// which an older glibc's loader refuses, so on Ubuntu 22.04 (glibc 2.35,
/// binutils 2.38) the option would make a binary its own machine cannot
/// run. The release archives are static musl builds and do not get it.
fn relr() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let glibc_dynamic = var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && !var("CARGO_CFG_TARGET_FEATURE")
            .split(',')
            .any(|f| f == "crt-static");
    if glibc_dynamic && var("HOST") == var("TARGET") && host_glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// `getconf GNU_LIBC_VERSION` ("glibc 2.36") of the build machine.
fn host_glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = text
        .trim()
        .strip_prefix("glibc ")
        .unwrap_or_default()
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let have = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    out.status.success() && have >= (major, minor)
}
