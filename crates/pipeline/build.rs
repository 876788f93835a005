//! Records which crates each shipped updater target compiles in, for the
//! SBOM `fwpack build` writes: a release binary has no Cargo.lock next to
//! it, so the list is taken from the lock file now and compiled in.
//!
//! `cargo tree` resolves features for fwpack-updater alone (the default
//! build, and the `tls` one), follows normal edges only and skips
//! proc-macros: what is linked into the binary, not what builds it. When
//! cargo cannot answer (no lock file, an offline vendored tree without the
//! index) the list is empty and the SBOM says the crates are unknown.

use std::process::Command;

const TARGETS: &[&str] = &[
    "aarch64-unknown-linux-musl",
    "x86_64-unknown-linux-musl",
    "riscv64gc-unknown-linux-gnu",
];

fn main() {
    let dir = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let workspace = dir.join("../..");
    println!("cargo:rerun-if-changed=../../Cargo.lock");
    println!("cargo:rerun-if-changed=../fwpack-updater/Cargo.toml");
    println!("cargo:rerun-if-changed=build.rs");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut out = String::new();
    'all: for target in TARGETS {
        for tls in [false, true] {
            let mut cmd = Command::new(&cargo);
            cmd.current_dir(&workspace).args([
                "tree",
                "--offline",
                "--locked",
                "-p",
                "fwpack-updater",
                "--target",
                target,
                "-e",
                "normal,no-proc-macro",
                "--prefix",
                "none",
                "--format",
                "{p}\t{l}",
            ]);
            if tls {
                cmd.args(["--features", "tls"]);
            }
            let text = match cmd.output() {
                Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
                Ok(o) => {
                    let err = String::from_utf8_lossy(&o.stderr);
                    println!(
                        "cargo:warning=updater crate list unavailable for the SBOM: cargo tree: {}",
                        err.lines().next().unwrap_or("failed")
                    );
                    out.clear();
                    break 'all;
                }
                Err(e) => {
                    println!("cargo:warning=updater crate list unavailable for the SBOM: {e}");
                    out.clear();
                    break 'all;
                }
            };
            let mut rows: Vec<String> = text.lines().filter_map(|l| row(target, tls, l)).collect();
            rows.sort();
            rows.dedup();
            for r in rows {
                out.push_str(&r);
                out.push('\n');
            }
        }
    }
    let path = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default())
        .join("updater-crates.tsv");
    if let Err(e) = std::fs::write(&path, out) {
        panic!("writing {}: {e}", path.display());
    }
}

/// `name vX.Y.Z [(path or registry)] [(*)]\tlicence` -> one TSV row:
/// target, tls, name, version, licence, origin. Paths are never kept: the
/// list must not depend on where the checkout was.
fn row(target: &str, tls: bool, line: &str) -> Option<String> {
    let (pkg, licence) = line.split_once('\t')?;
    let mut words = pkg.split_whitespace();
    let name = words.next()?;
    let version = words.next()?.strip_prefix('v')?;
    let rest: Vec<&str> = words.collect();
    let origin = if rest.iter().any(|w| w.starts_with("(/")) {
        "workspace"
    } else if rest
        .iter()
        .any(|w| w.starts_with("(registry") || w.starts_with("(git"))
    {
        "other"
    } else {
        "crates.io"
    };
    let licence = licence.trim().trim_end_matches("(*)").trim();
    Some(format!(
        "{target}\t{}\t{name}\t{version}\t{licence}\t{origin}",
        u8::from(tls)
    ))
}
