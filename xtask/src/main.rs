//! `cargo xtask …`: the project's automation, in Rust instead of shell.
//!
//! `cargo xtask test` is the README's test command and what `.ci/run` calls:
//! it installs what the tests need on a fresh Debian machine (only when
//! missing), then runs format, lint and the whole test suite.

mod archive;
mod bench_apply;
mod bench_compare;
mod bench_fwimage;
mod bench_http;
mod bench_initramfs;
mod demo;
mod deps;
mod e2e;
mod fresh;
mod fsx;
mod inputs;
mod release;

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  deps        install the host tools and rustup targets the tests need (idempotent)
  test        deps + cargo fmt --check + clippy -D warnings + cargo test --workspace
  bench <what> benchmarks against the reference tools (what: compare, fwimage, initramfs, apply, kexec, http)
  inputs [--board B]  fetch the boards' kernels, DTBs, modules, Pi firmware from Debian into the cache
  demo        the main job on rpi-zero2w, then an A/B update of the same updater in QEMU aarch64
  e2e [--full] update, fallback and power cuts in QEMU (--full: all three qemu boards, >= 20 cuts)
  fresh [--rev REV] [--only demo|test] [--keep]
              the README's two commands in a new minimal Debian chroot (root; slow, not in test)
  release VERSION --buildroot DIR... [options]  move the Buildroot/Yocto pins to a commit, test, tag (--help)
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match args.first().map(String::as_str) {
        Some("deps") => deps::ensure(&sh),
        Some("test") => test(&sh),
        Some("bench") => bench(&sh, args.get(1).map(String::as_str)),
        Some("inputs") => inputs::run(args.get(1..).unwrap_or_default()),
        Some("demo") => demo::run(&sh),
        Some("e2e") => e2e::run(&sh, args.get(1..).unwrap_or_default()),
        Some("fresh") => fresh::run(&sh, &project_root(), args.get(1..).unwrap_or_default()),
        Some("release") => release::run(&sh, &project_root(), args.get(1..).unwrap_or_default()),
        Some("help" | "--help" | "-h") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown xtask command `{other}`\n\n{USAGE}"),
    }
}

const BENCH_USAGE: &str = "\
usage: cargo xtask bench <what> [options]   (an unknown option prints that benchmark's usage)

  compare    the goals' table in one interleaved run: apply and --verify-writes vs dd, zstd/gzip
             apply vs fwup -a, HTTP vs curl, initramfs vs find|cpio|gzip, stamp vs fwup -c / rauc /
             casync, verify vs fwup -V, apply time and RSS vs image size; JSON + SVG plot
  apply      apply 256 MiB / 1 GiB with and without --verify-writes vs dd; --minimize-writes; RSS
  http       HTTP/HTTPS apply from nginx vs curl and dd; delta traffic; RSS while streaming
  fwimage    CRC32C chain, stamp + sign and verify of 256 MiB (random, ext4; none/gzip/zstd) vs fwup -c
  initramfs  the initramfs packer (default --jobs and 1) vs find|cpio|gzip -9 (and pigz), byte-identical
  kexec      boot time added by kexec in QEMU (x86_64, aarch64, raspi3b)
";

/// `cargo xtask bench <what>`: one arm per benchmark module.
fn bench(sh: &Shell, what: Option<&str>) -> Result<()> {
    match what {
        Some("initramfs") => bench_initramfs::run(sh),
        Some("apply") => {
            let rest: Vec<String> = std::env::args().skip(3).collect();
            bench_apply::run(sh, &rest)
        }
        Some("http") => {
            let rest: Vec<String> = std::env::args().skip(3).collect();
            bench_http::run(sh, &rest)
        }
        Some("compare") => {
            let rest: Vec<String> = std::env::args().skip(3).collect();
            bench_compare::run(sh, &rest)
        }
        Some("fwimage") => {
            let rest: Vec<String> = std::env::args().skip(3).collect();
            bench_fwimage::run(sh, &project_root(), &rest)
        }
        // Boot time added by kexec under TCG: a measurement kept out of
        // the test runs (#[ignore]), printed by the test itself.
        Some("kexec") => {
            cmd!(
                sh,
                "cargo test -p fwpack-updater --test qemu_x86_64_kexec -- --ignored --nocapture kexec_boot_time"
            )
            .run()?;
            cmd!(
                sh,
                "cargo test -p fwpack-updater --test qemu_aarch64_kexec -- --ignored --nocapture kexec_boot_time"
            )
            .run()?;
            // raspi3b: the rpi-zero2w boot tests (switch_root and kexec
            // builds) print their figures; they are tests too, so not
            // ignored.
            cmd!(
                sh,
                "cargo test -p fwpack --test raspi3b -- --nocapture --test-threads=1 rpi_zero2w_"
            )
            .run()?;
            Ok(())
        }
        Some("help" | "--help" | "-h") => {
            print!("{BENCH_USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown benchmark `{other}`\n\n{BENCH_USAGE}"),
        None => bail!("which benchmark?\n\n{BENCH_USAGE}"),
    }
}

fn test(sh: &Shell) -> Result<()> {
    deps::ensure(sh)?;
    cmd!(sh, "cargo fmt --all -- --check").run()?;
    // `fleet` (the DDI client) is off in the device build's defaults.
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --features fwpack-updater/fleet -- -D warnings"
    )
    .run()?;
    cmd!(
        sh,
        "cargo test --workspace --all-targets --features fwpack-updater/fleet --no-fail-fast"
    )
    .run()?;
    cmd!(sh, "cargo test --workspace --doc").run()?;
    // The short end-to-end run: qemu-x86_64, update + fallback + 3 power cuts.
    e2e::run(sh, &[])?;
    Ok(())
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the
/// workspace) when set, as cargo itself does, else `target/`.
pub fn target_dir() -> std::path::PathBuf {
    testkit::target_dir()
}

fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| ".".into())
}
