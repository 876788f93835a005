//! The mark-good services that the Buildroot package and the Yocto layer
//! install (BusyBox/SysV init script + helper; the systemd unit runs the
//! same helper), run against a file-backed disk: a slot left pending by
//! `fwpack apply` stays on trial while the health check fails, and is
//! confirmed (active, rollback floor raised) once it passes. `fwpack`
//! stands in for `fwpack-updater`: both take `mark-good --target DISK`.
//! shellcheck is run on the scripts by release_conventions.

#[path = "release_common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{fwpack, ok, run, workspace};

const BOARD: &str = "acme-board";

fn status(dir: &Path) -> serde_json::Value {
    let out = ok(fwpack(dir).args(["status", "--target", "disk.img", "--json"]));
    serde_json::from_slice(&out.stdout).expect("status --json")
}

/// A disk whose slot B holds a freshly applied image, pending (on trial).
fn pending_disk(dir: &Path) {
    ok(fwpack(dir).args([
        "state",
        "init",
        "--target",
        "disk.img",
        "--size",
        "14MiB",
        "--board",
        BOARD,
        "-g",
        "system:A=5MiB+4MiB,B=9MiB+4MiB",
        "--active-version",
        "3",
    ]));
    std::fs::write(dir.join("rootfs.img"), vec![0x5a; 1 << 20]).unwrap();
    ok(fwpack(dir).args(["keygen", "-o", "k.pem"]));
    ok(fwpack(dir).args([
        "stamp",
        "--board",
        BOARD,
        "--version",
        "4",
        "-s",
        "rootfs=rootfs.img,target=system",
        "--key",
        "k.pem",
        "-o",
        "v4.fwi",
    ]));
    ok(fwpack(dir).args([
        "apply",
        "v4.fwi",
        "--target",
        "disk.img",
        "--key",
        "k.pub.pem",
    ]));
    let st = status(dir);
    assert_eq!(
        (st["active"].as_str(), st["pending"].as_str()),
        (Some("A"), Some("B"))
    );
}

/// Run an init script as `init` would (`SCRIPT start`), with its helper
/// and settings pointed at the test's disk and tools.
fn start(script: &Path, helper: &Path, defaults: &Path, dir: &Path) -> Output {
    run(Command::new("sh")
        .arg(script)
        .arg("start")
        .current_dir(dir)
        .env("FWPACK_MARK_GOOD", helper)
        .env("FWPACK_MARK_GOOD_DEFAULTS", defaults)
        .env("SOURCE_DATE_EPOCH", "1700000000"))
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check_service(init_script: PathBuf, helper: PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    pending_disk(d);
    // /etc/default/fwpack-mark-good as the packages write it, plus where
    // this test's updater and disk are.
    let defaults = d.join("fwpack-mark-good.default");
    std::fs::write(
        &defaults,
        format!(
            "FWPACK_HEALTH_CHECK='test -e healthy && grep -q '\\''^ok$'\\'' healthy'\n\
             FWPACK_UPDATER='{}'\n\
             FWPACK_MARK_GOOD_ARGS='--target disk.img'\n",
            env!("CARGO_BIN_EXE_fwpack")
        ),
    )
    .unwrap();

    // Unhealthy: init reports FAIL, the slot stays on trial.
    let out = start(&init_script, &helper, &defaults, d);
    assert!(!out.status.success(), "{}", show(&out));
    let text = show(&out);
    assert!(
        text.contains("FAIL") && text.contains("health check failed"),
        "{text}"
    );
    let st = status(d);
    assert_eq!(
        (st["active"].as_str(), st["pending"].as_str()),
        (Some("A"), Some("B")),
        "{text}"
    );

    // Healthy: confirmed; B is the active slot, the floor is its version.
    std::fs::write(d.join("healthy"), "ok\n").unwrap();
    let out = start(&init_script, &helper, &defaults, d);
    assert!(out.status.success(), "{}", show(&out));
    assert!(show(&out).contains("OK"), "{}", show(&out));
    let st = status(d);
    assert_eq!(st["active"].as_str(), Some("B"), "{st}");
    assert!(st["pending"].is_null(), "{st}");
    assert_eq!(st["rollback_floor"].as_u64(), Some(4), "{st}");

    // Run again on the next boot: nothing pending, still fine.
    let out = start(&init_script, &helper, &defaults, d);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(status(d)["active"].as_str(), Some("B"));
}

#[test]
fn buildroot_init_script_confirms_a_pending_slot_after_the_health_check() {
    let pkg = workspace().join("buildroot-external/package/fwpack");
    check_service(
        pkg.join("S99fwpack-mark-good"),
        pkg.join("fwpack-mark-good"),
    );
}

#[test]
fn yocto_init_script_confirms_a_pending_slot_after_the_health_check() {
    let files = workspace().join("meta-fwpack/recipes-core/fwpack-mark-good/files");
    check_service(
        files.join("fwpack-mark-good.init"),
        files.join("fwpack-mark-good"),
    );
}

#[test]
fn both_trees_ship_the_same_helper_and_unit() {
    let pkg = workspace().join("buildroot-external/package/fwpack");
    let files = workspace().join("meta-fwpack/recipes-core/fwpack-mark-good/files");
    for f in ["fwpack-mark-good", "fwpack-mark-good.service"] {
        assert_eq!(
            std::fs::read(pkg.join(f)).unwrap(),
            std::fs::read(files.join(f)).unwrap(),
            "{f}: the Buildroot and Yocto copies differ"
        );
    }
}

#[test]
fn systemd_unit_passes_systemd_analyze() {
    // No skip: `cargo xtask deps` installs systemd (xtask/src/deps.rs).
    let analyze = testkit::tools::must("systemd-analyze");
    // Against this host's systemd units (boot-complete.target, ...), with
    // ExecStart pointing at the helper where it is here: verify checks
    // that the program exists.
    let tmp = tempfile::tempdir().unwrap();
    let pkg = workspace().join("buildroot-external/package/fwpack");
    let helper = pkg.join("fwpack-mark-good");
    let unit = std::fs::read_to_string(pkg.join("fwpack-mark-good.service")).unwrap();
    let want = "ExecStart=/usr/sbin/fwpack-mark-good\n";
    assert!(unit.contains(want), "{unit}");
    let unit = unit.replace(want, &format!("ExecStart={}\n", helper.display()));
    let path = tmp.path().join("fwpack-mark-good.service");
    std::fs::write(&path, unit).unwrap();
    let out = run(Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path));
    let text = show(&out);
    assert!(
        out.status.success() && !text.contains("fwpack-mark-good.service:"),
        "systemd-analyze verify: {text}"
    );
}
