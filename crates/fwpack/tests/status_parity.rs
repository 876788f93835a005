//! `fwpack status` (host) and `fwpack-updater status` (device binary, run
//! here as the static x86_64 build) render a state area through the same
//! library code: on the same disk they print byte-identical JSON and
//! identical human text, for a fresh disk, a pending update and a disk
//! without a state area.

#[path = "apply_common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// The device binary, built the way the QEMU tests build it (shared cache).
fn device_updater() -> PathBuf {
    let target = "x86_64-unknown-linux-musl";
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "-p", "fwpack-updater", "--bin", "fwpack-updater"])
        .args(["--profile", "device", "--target", target])
        .current_dir(testkit::workspace_root())
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "building fwpack-updater: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = testkit::target_dir()
        .join(target)
        .join("device")
        .join("fwpack-updater");
    assert!(bin.is_file(), "{} missing", bin.display());
    bin
}

fn both(updater: &Path, dir: &Path, args: &[&str]) -> (Output, Output) {
    let host = fwpack(&[&["status"], args].concat(), dir);
    let device = Command::new(updater)
        .arg("status")
        .args(args)
        .current_dir(dir)
        // No boot record of this machine may leak into either.
        .env("FWPACK_BOOT_RECORD", dir.join("no-boot-record"))
        .output()
        .unwrap();
    (host, device)
}

fn same_status(updater: &Path, dir: &Path, disk: &str) -> serde_json::Value {
    let (h, d) = both(updater, dir, &["--target", disk, "--json"]);
    let (h, d) = (ok(h), ok(d));
    assert_eq!(stdout(&h), stdout(&d), "JSON differs");
    let v: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    let (h, d) = both(updater, dir, &["--target", disk]);
    let (h, d) = (ok(h), ok(d));
    assert_eq!(stdout(&h), stdout(&d), "human text differs");
    assert!(
        stdout(&h).contains("board        parity-board"),
        "{}",
        stdout(&h)
    );
    v
}

#[test]
fn host_and_device_status_are_identical() {
    let updater = device_updater();
    let tmp = workdir("status-parity");
    let d = tmp.path();
    ok(fwpack(
        &[
            "state",
            "init",
            "--target",
            "disk.img",
            "--size",
            "20MiB",
            "--board",
            "parity-board",
            "-g",
            "system:A=9MiB+4MiB,B=13MiB+4MiB",
            "--active-version",
            "10",
            // Escaping goes through the shared writer too.
            "--active-label",
            "fac\"tory\\1",
        ],
        d,
    ));
    let v = same_status(&updater, d, "disk.img");
    assert_eq!(v["active"], "A");
    assert_eq!(v["slots"]["A"]["label"], "fac\"tory\\1");
    assert_eq!(v["slots"]["B"]["state"], "empty");
    assert!(v["running"].is_null() && v["journal"].is_null());

    // A pending update.
    std::fs::write(d.join("rootfs.img"), payload(3, 1_000_000)).unwrap();
    stamp(
        d,
        "v11.fwi",
        "parity-board",
        11,
        &["rootfs=rootfs.img,target=system"],
    );
    ok(fwpack(
        &[
            "apply",
            "v11.fwi",
            "--target",
            "disk.img",
            "--key",
            "k.pub.pem",
        ],
        d,
    ));
    let v = same_status(&updater, d, "disk.img");
    assert_eq!(
        (v["pending"].as_str(), v["slots"]["B"]["version"].as_u64()),
        (Some("B"), Some(11))
    );

    // No state area: both fail with the same diagnosis.
    std::fs::write(d.join("blank.img"), vec![0u8; 12 << 20]).unwrap();
    let (h, dv) = both(&updater, d, &["--target", "blank.img", "--json"]);
    assert!(!h.status.success() && !dv.status.success());
    assert_eq!(code(&h), code(&dv), "{}\n{}", show(&h), show(&dv));
    assert_eq!(stdout(&h), stdout(&dv));
    let diag: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    assert_eq!(diag["records"][0]["copies"][0]["valid"], false);
}
