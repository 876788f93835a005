//! Any small static test program (not only the generated [`crate::init`]
//! one) built from Rust source with plain `rustc` for a guest
//! architecture, cached by a hash of source, target and compiler version.
//! Used where a test needs its own guest-side logic, e.g. the root
//! filesystem init of the fwpack-updater QEMU tests.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::kernels::Arch;
use crate::{cache_dir, fnv1a, io_err, run, CacheLock, Error, Result};

/// Compiles `source` (a complete `main.rs` using only `std` and libc
/// symbols musl and glibc share) into a static, stripped binary for `arch`.
pub fn build_static(name: &str, source: &str, arch: Arch) -> Result<PathBuf> {
    let target = match arch {
        Arch::X86_64 => "x86_64-unknown-linux-musl",
        Arch::Aarch64 => "aarch64-unknown-linux-musl",
        // No riscv64 musl std reaches this machine: glibc, linked static.
        Arch::Riscv64 => "riscv64gc-unknown-linux-gnu",
    };
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = run(Command::new(&rustc).arg("-V")).unwrap_or_default();
    let key = fnv1a(&[
        name.as_bytes(),
        source.as_bytes(),
        target.as_bytes(),
        version.as_bytes(),
    ]);
    let dir = cache_dir()
        .join("programs")
        .join(format!("{name}-{target}-{key:016x}"));
    let bin = dir.join(name);
    if bin.is_file() {
        return Ok(bin);
    }
    let _lock = CacheLock::acquire("programs")?;
    if bin.is_file() {
        return Ok(bin);
    }
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let src = dir.join("main.rs");
    fs::write(&src, source).map_err(io_err(&src))?;
    let tmp = dir.join(format!("{name}.partial"));
    let mut cmd = Command::new(&rustc);
    cmd.args(["--edition", "2021", "-O", "--target", target])
        .args([
            "-C",
            "target-feature=+crt-static",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .arg("-o")
        .arg(&tmp)
        .arg(&src);
    match arch {
        // No cross gcc needed: rust-lld links musl's self-contained objects.
        Arch::Aarch64 => {
            cmd.args(["-C", "linker=rust-lld"]);
        }
        // glibc's static libc.a and crt files come with Debian's cross gcc.
        Arch::Riscv64 => {
            cmd.args(["-C", "linker=riscv64-linux-gnu-gcc"]);
        }
        Arch::X86_64 => {}
    }
    run(&mut cmd).map_err(|e| match e {
        Error::Command { command, message } => Error::Command {
            command,
            message: format!(
                "{message}\n(is the rustup target {target} installed? `cargo xtask deps` adds it)"
            ),
        },
        other => other,
    })?;
    fs::rename(&tmp, &bin).map_err(io_err(&bin))?;
    Ok(bin)
}
