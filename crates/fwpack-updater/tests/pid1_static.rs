//! The device builds of fwpack-updater (the bootstrap's and the slot's)
//! are static executables for their machines, within budget, stripped,
//! and contain no C: `file`, `readelf` and our own elfcheck must all agree.

mod qemu_support;

use std::process::Command;

use elfcheck::{Linkage, Machine, Policy};
use qemu_support::{slot_updater_binary, triple, updater_binary};
use testkit::kernels::Arch;

fn run(cmd: &str, args: &[&str], path: &std::path::Path) -> String {
    let out = Command::new(cmd).args(args).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check(arch: Arch, machine: Machine, budget: u64, file_says: &str) {
    let core = updater_binary(arch);
    let slot = slot_updater_binary(arch);
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    // The network client is what the bootstrap leaves out.
    assert!(size(&core) < size(&slot), "bootstrap build not smaller");
    for bin in [core, slot] {
        check_one(&bin, machine, budget, file_says);
        eprintln!(
            "{} {}: {} bytes ({:.0} KiB)",
            triple(arch),
            bin.display(),
            size(&bin),
            size(&bin) as f64 / 1024.0
        );
    }
}

fn check_one(bin: &std::path::Path, machine: Machine, budget: u64, file_says: &str) {
    let bin = bin.to_path_buf();

    let policy = Policy {
        machine: Some(machine),
        size_budget: Some(budget),
        require_stripped: true,
        require_static: true,
    };
    let report = elfcheck::check_file(&bin, &policy).unwrap();
    assert!(report.passed(), "elfcheck: {:?}", report.findings);
    let facts = report.facts.unwrap();
    assert!(facts.linkage.is_static(), "{:?}", facts.linkage);
    assert!(facts.interpreter.is_none() && facts.needed.is_empty());

    if testkit::tools::require("file") {
        let f = run("file", &["-b"], &bin);
        assert!(f.contains(file_says), "file: {f}");
        assert!(
            f.contains("statically linked") || f.contains("static-pie linked"),
            "file: {f}"
        );
        assert!(
            f.contains("stripped") && !f.contains("not stripped"),
            "file: {f}"
        );
        // file and elfcheck agree on the kind of static binary.
        assert_eq!(
            f.contains("static-pie"),
            facts.linkage == Linkage::StaticPie,
            "file: {f}, elfcheck: {:?}",
            facts.linkage
        );
    }
    if testkit::tools::require("readelf") {
        let h = run("readelf", &["-hW"], &bin);
        let m = h
            .lines()
            .find(|l| l.trim_start().starts_with("Machine:"))
            .unwrap_or_default();
        assert!(m.to_lowercase().contains(file_says), "readelf: {m}");
        let l = run("readelf", &["-lW"], &bin);
        assert!(
            !l.contains("INTERP"),
            "readelf -l shows an interpreter:\n{l}"
        );
        let d = run("readelf", &["-dW"], &bin);
        assert!(
            !d.contains("(NEEDED)"),
            "readelf -d shows needed libraries:\n{d}"
        );
    }
}

#[test]
fn aarch64_binary_is_static_and_within_budget() {
    check(Arch::Aarch64, Machine::Aarch64, 1 << 20, "aarch64");
}

#[test]
fn x86_64_binary_is_static_and_within_budget() {
    // The qemu-x86_64 board allows 1.5 MiB.
    check(Arch::X86_64, Machine::X86_64, 3 << 19, "x86-64");
}

/// Nothing in the device build's dependency graph compiles C: no `cc`,
/// no `*-sys` crate (linux-raw-sys is Rust: syscall numbers and types).
#[test]
fn device_build_has_no_c_dependencies() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "fwpack-updater",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--target",
            triple(Arch::Aarch64),
        ])
        .current_dir(testkit::workspace_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let c: Vec<&str> = tree
        .lines()
        .filter(|l| {
            l.starts_with("cc ") || (l.contains("-sys ") && !l.starts_with("linux-raw-sys "))
        })
        .collect();
    assert!(c.is_empty(), "C in the device build: {c:?}");
    assert!(
        tree.lines().any(|l| l.starts_with("ruzstd ")),
        "the pure-Rust zstd decoder is expected"
    );
}
