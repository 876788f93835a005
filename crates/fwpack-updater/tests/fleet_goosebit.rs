//! `fwpack-updater fleet` against goosebit, a real DDI server from PyPI,
//! with the update published and rolled out through goosebit's own
//! management API (`fwpack publish`). The device registers (configData),
//! gets the deployment, downloads and applies it, "reboots" (the boot
//! decision taken on the disk file), confirms, and goosebit's own API then
//! shows the update finished with the new version and the rollout's
//! success; a trial that falls back shows as an error with the reason in
//! the device's log. Set-up in goosebit_support.

mod goosebit_support;
mod qemu_support;

use goosebit_support::*;
use qemu_support::BOARD;
use updater::Slot;

#[test]
fn fleet_goosebit_update_finishes_and_a_failed_trial_shows_as_error() {
    let Some(venv) = venv() else {
        panic!("no goosebit venv: run `cargo xtask deps`");
    };
    let work = tempfile::tempdir().unwrap();
    let gb = Goosebit::start(&venv, work.path());
    let ok = Device::new(work.path(), "dev-ok", &gb.url(), 3);
    let bad = Device::new(work.path(), "dev-bad", &gb.url(), 1);

    // Registration: goosebit asks for configData first; it learns the
    // board (its "hardware") that rollouts are matched by.
    ok.once();
    bad.once();
    let d = gb.device("dev-ok");
    assert_eq!(d["sw_version"], "1.0.1", "{d}");

    // Both devices run the same image: published once, rolled out on
    // goosebit's default feed.
    let p = gb.publish(
        &ok.dir.join("update.fwi"),
        &ok.dir.join("key.pem"),
        &["--rollout", "default"],
    );
    assert_eq!(p["board"], BOARD, "{p}");
    assert_eq!(p["version"], "1.0.2", "{p}");
    // The same version for the same board again: goosebit refuses it
    // (409), publish says so with exit 7 (policy).
    let again = gb.publish_output(&ok.dir.join("update.fwi"), &ok.dir.join("key.pem"), &[]);
    assert_eq!(
        again.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already has version 1.0.2"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let software = gb.api("/api/v1/software");
    assert!(
        software["software"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["version"] == "1.0.2")),
        "{software}"
    );

    // The deployment: downloaded, applied, reported as running.
    let log = ok.once();
    assert!(
        log.contains(&format!("action {}", p["software_id"])),
        "{log}"
    );
    let d = gb.device("dev-ok");
    assert_eq!(lower(&d["last_state"]).as_deref(), Some("running"), "{d}");
    assert_eq!(ok.boot(), Slot::B);
    ok.mark_good(Slot::B);
    ok.once();
    let d = gb.device("dev-ok");
    assert_eq!(lower(&d["last_state"]).as_deref(), Some("finished"), "{d}");
    assert_eq!(d["sw_version"], "1.0.2", "{d}");
    let log = gb.log("dev-ok");
    assert!(log.contains("confirmed"), "{log}");
    eprintln!("goosebit after the update: {d}; log: {log}");

    bad.once();
    assert_eq!(bad.boot(), Slot::B);
    assert_eq!(bad.boot(), Slot::A);
    bad.once();
    let d = gb.device("dev-bad");
    assert_eq!(lower(&d["last_state"]).as_deref(), Some("error"), "{d}");
    let log = gb.log("dev-bad");
    assert!(log.contains("fell back to slot A"), "{log}");
    eprintln!("goosebit after the failed trial: {d}; log: {log}");

    // The rollout counts one success and one failure.
    let r = gb.api("/api/v1/rollouts");
    let r = &r["rollouts"][0];
    assert_eq!(r["success_count"], 1, "{r}");
    assert_eq!(r["failure_count"], 1, "{r}");
}
