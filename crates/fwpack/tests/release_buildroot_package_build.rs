//! The Buildroot package's cargo command against this tree, run the way
//! Buildroot's cargo infrastructure runs it (`cargo build --release
//! --manifest-path Cargo.toml --locked` in the device crate, with
//! fwpack.mk's FWPACK_CARGO_ENV and FWPACK_CARGO_BUILD_OPTS, and the
//! toolchain's gcc as the linker): the updater must link with GNU ld, be
//! static, and fit rpi-zero2w's budget. Our own builds link aarch64 with
//! rust-lld, so they cannot see what a gcc link does: a bare `--icf=all`
//! once failed every gcc-linked aarch64 musl build, and the release
//! profile's per-package opt-levels put it 70 KB over the budget.
//!
//! Debian's aarch64 glibc cross gcc stands in for a Buildroot musl
//! toolchain's (Rust's musl target brings its own crt objects and libc).
//! The mk's FWPACK_SUBDIR names the pinned commit's crate; this tree's is
//! crates/fwpack-updater, which `cargo xtask release` writes there when it
//! moves the pin.

#[path = "release_common.rs"]
mod common;

use std::process::Command;

use common::{ok, workspace};

/// The words of a backslash-continued make assignment `NAME = …`.
fn mk_list(mk: &str, name: &str) -> String {
    let start = mk
        .find(&format!("\n{name} = "))
        .unwrap_or_else(|| panic!("fwpack.mk has no {name}"));
    let mut words = Vec::new();
    for line in mk[start + name.len() + 4..].lines() {
        let more = line.trim_end().ends_with('\\');
        words.push(line.trim().trim_end_matches('\\').trim().to_string());
        if !more {
            break;
        }
    }
    let value = words.join(" ");
    assert!(
        !value.contains("$("),
        "{name} uses a make variable this test does not expand: {value}"
    );
    value
}

#[test]
fn buildroot_package_links_a_static_updater_within_budget_with_gcc() {
    if !testkit::tools::require("aarch64-linux-gnu-gcc") {
        return;
    }
    let mk =
        std::fs::read_to_string(workspace().join("buildroot-external/package/fwpack/fwpack.mk"))
            .unwrap();
    let env = mk_list(&mk, "FWPACK_CARGO_ENV");
    let opts = mk_list(&mk, "FWPACK_CARGO_BUILD_OPTS");
    let triple = "aarch64-unknown-linux-musl";
    let target_dir = testkit::target_dir().join("buildroot-package");
    // The shell reads the words as Buildroot's recipe shell does (quotes
    // in the mk are shell quotes).
    let script = format!(
        "cd crates/fwpack-updater && {env} \
         CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
         cargo build --quiet --release --manifest-path Cargo.toml --locked \
         --target {triple} --target-dir '{}' {opts}",
        target_dir.display()
    );
    ok(Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(workspace())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS"));
    let bin = target_dir.join(triple).join("release/fwpack-updater");
    let board = std::fs::read_to_string(workspace().join("configs/rpi-zero2w.yaml")).unwrap();
    let budget = board
        .lines()
        .find_map(|l| l.trim().strip_prefix("size_budget:"))
        .expect("rpi-zero2w.yaml has an updater size_budget")
        .trim();
    let out = ok(Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .args(["check-elf", "--machine", "aarch64", "--budget", budget])
        .arg(&bin));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("static"), "{said}");
}
