//! fwpack-updater as an ordinary command (`apply`, `status`, `mark-good`)
//! on disk files: exit codes per failure class, valid `--json`, refusals
//! that leave the disk untouched.

mod qemu_support;

use std::path::Path;
use std::process::{Command, Output};

use qemu_support::*;

fn updater(args: &[&str], disk: &Path) -> Output {
    Command::new(host_updater())
        .args(args)
        .arg("--target")
        .arg(disk)
        .output()
        .unwrap()
}

fn noise_rootfs(dir: &Path, name: &str, seed: u8) -> std::path::PathBuf {
    let p = dir.join(name);
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect();
    std::fs::write(&p, data).unwrap();
    p
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn status_json_is_valid_and_tracks_apply_and_confirm() {
    let work = tempfile::tempdir().unwrap();
    let a = image(&noise_rootfs(work.path(), "a.bin", 1), 1);
    let disk = disk(work.path(), false, &a);
    let st = json(&updater(&["status", "--json"], &disk));
    assert_eq!(st["board"], BOARD);
    assert_eq!(st["active"], "A");
    assert_eq!(st["confirmed"], true);
    assert_eq!(st["pending"], serde_json::Value::Null);
    assert_eq!(st["slots"]["A"]["version"], 1);
    assert_eq!(st["slots"]["B"]["state"], "empty");

    let b = work.path().join("b.fwi");
    std::fs::write(&b, image(&noise_rootfs(work.path(), "b.bin", 2), 2)).unwrap();
    let key = work.path().join("key.pem");
    let out = Command::new(host_updater())
        .arg("apply")
        .arg(&b)
        .arg("--target")
        .arg(&disk)
        .args(["--tries", "2", "--json", "--key"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One JSON object per line, the last one the result.
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["event"] == "pending" && l["slot"] == "B" && l["tries"] == 2));
    let last = lines.last().unwrap();
    assert_eq!(
        (
            last["result"].as_str(),
            last["slot"].as_str(),
            last["pending"].as_bool()
        ),
        (Some("ok"), Some("B"), Some(true))
    );

    let st = json(&updater(&["status", "--json"], &disk));
    assert_eq!(
        (st["pending"].as_str(), st["tries_left"].as_u64()),
        (Some("B"), Some(2))
    );
    // Confirming the pending slot makes it active and raises the floor.
    let mark = |slot: &str| {
        Command::new(host_updater())
            .args(["mark-good", "--slot", slot, "--target"])
            .arg(&disk)
            .output()
            .unwrap()
    };
    let out = mark("B");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = json(&updater(&["status", "--json"], &disk));
    assert_eq!(
        (st["active"].as_str(), st["rollback_floor"].as_u64()),
        (Some("B"), Some(2))
    );
    // A slot that is neither active nor pending cannot be confirmed: policy (7).
    assert_eq!(mark("A").status.code(), Some(7));
}

#[test]
fn refusals_have_their_exit_codes_and_leave_the_disk_alone() {
    let work = tempfile::tempdir().unwrap();
    let a = image(&noise_rootfs(work.path(), "a.bin", 1), 1);
    let disk = disk(work.path(), false, &a);
    let before = std::fs::read(&disk).unwrap();
    let key = work.path().join("key.pem");
    let b = work.path().join("b.fwi");
    std::fs::write(&b, image(&noise_rootfs(work.path(), "b.bin", 2), 2)).unwrap();

    // A key we do not trust: signature class (5).
    let other = work.path().join("other.pem");
    let k = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    std::fs::write(
        &other,
        ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_pem(
            &k.verifying_key(),
            Default::default(),
        )
        .unwrap(),
    )
    .unwrap();
    let code = |args: &[&std::ffi::OsStr]| {
        Command::new(host_updater())
            .args(args)
            .output()
            .unwrap()
            .status
            .code()
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let apply = |img: &Path, k: &Path, extra: &[&str]| {
        let mut v = vec![
            os("apply"),
            img.into(),
            os("--target"),
            disk.clone().into(),
            os("--key"),
            k.into(),
        ];
        v.extend(extra.iter().map(|s| os(s)));
        let refs: Vec<&std::ffi::OsStr> = v.iter().map(|s| s.as_os_str()).collect();
        code(&refs)
    };
    assert_eq!(apply(&b, &other, &[]), Some(5));
    // Corrupt payload: integrity class (6).
    let mut bad = std::fs::read(&b).unwrap();
    let at = bad.len() - 10;
    bad[at] ^= 1;
    let badp = work.path().join("bad.fwi");
    std::fs::write(&badp, bad).unwrap();
    assert_eq!(apply(&badp, &key, &[]), Some(6));
    // One pass: the chunks before the corrupt one reached slot B, which
    // stays `updating` (never bootable); the other refusals write nothing.
    let after = std::fs::read(&disk).unwrap();
    assert!(
        after != before,
        "chunks before the corrupt one were written"
    );
    std::fs::write(&disk, &before).unwrap();
    // Writing the active slot: policy (7).
    assert_eq!(apply(&b, &key, &["--slot", "A"]), Some(7));
    // An older version than the running one: policy (7).
    let old = work.path().join("old.fwi");
    std::fs::write(&old, image(&noise_rootfs(work.path(), "old.bin", 3), 0)).unwrap();
    assert_eq!(apply(&old, &key, &[]), Some(7));
    assert!(
        std::fs::read(&disk).unwrap() == before,
        "a refused apply changed the disk"
    );

    // Usage errors (2).
    assert_eq!(code(&[&os("frobnicate")]), Some(2));
    assert_eq!(code(&[&os("apply"), &os("x.fwi")]), Some(2));
    assert_eq!(code(&[&os("status"), &os("--bogus")]), Some(2));
    if !Path::new("/run/fwpack/boot.conf").exists() {
        assert_eq!(code(&[&os("mark-good")]), Some(2));
    }
}

/// A trial boot of B (the boot record the PID-1 updater leaves says so):
/// an apply must not write B, which the running system is using, even
/// with --force; it exits "busy" (8) and leaves the disk byte-identical.
/// After the trial falls back, status says so explicitly.
#[test]
fn the_running_slot_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let a = image(&noise_rootfs(work.path(), "a.bin", 1), 1);
    let disk = disk(work.path(), false, &a);
    let key = work.path().join("key.pem");
    let b = work.path().join("b.fwi");
    std::fs::write(&b, image(&noise_rootfs(work.path(), "b.bin", 2), 2)).unwrap();
    let c = work.path().join("c.fwi");
    std::fs::write(&c, image(&noise_rootfs(work.path(), "c.bin", 3), 3)).unwrap();
    let record = work.path().join("boot.conf");
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(host_updater())
            .args(args)
            .env("FWPACK_BOOT_RECORD", &record)
            .output()
            .unwrap()
    };
    let apply = |img: &Path, extra: &[&str]| {
        let mut v: Vec<std::ffi::OsString> = vec![
            "apply".into(),
            img.into(),
            "--target".into(),
            disk.clone().into(),
            "--key".into(),
            key.clone().into(),
        ];
        v.extend(extra.iter().map(|s| (*s).into()));
        let refs: Vec<&std::ffi::OsStr> = v.iter().map(|s| s.as_os_str()).collect();
        run(&refs)
    };
    let out = apply(&b, &["--tries", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The PID-1 updater booted B on trial.
    std::fs::write(
        &record,
        format!(
            "target = {}\nstate_offset = 524288\nstate_copy_distance = 4194304\nslot = B\ntrial = yes\n",
            disk.display()
        ),
    )
    .unwrap();
    let before = std::fs::read(&disk).unwrap();
    for extra in [&[][..], &["--slot", "B"], &["--force"]] {
        let out = apply(&c, extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(8), "{extra:?}: {err}");
        assert!(err.contains("slot B is the running system"), "{err}");
        assert!(
            std::fs::read(&disk).unwrap() == before,
            "{extra:?}: disk changed"
        );
    }
    // A boot record that names another disk does not apply here.
    let elsewhere = work.path().join("other-disk.img");
    std::fs::write(&elsewhere, b"x").unwrap();
    std::fs::write(
        &record,
        format!(
            "target = {}\nstate_offset = 524288\nslot = B\n",
            elsewhere.display()
        ),
    )
    .unwrap();
    let out = apply(&c, &["--no-activate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An unreadable record: neither slot may be written.
    std::fs::write(&record, "garbage\n").unwrap();
    let out = apply(&b, &[]);
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&record).unwrap();

    // The fell-back flag, explicit in status: B pending with 1 try is
    // booted once and then falls back (simulated with the library).
    let out = apply(&b, &["--tries", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    {
        let mut st = updater::FileStorage::open(&disk, updater::Access::ReadWrite).unwrap();
        let mut area =
            updater::StateArea::read(&mut st, updater::StateLocation::default()).unwrap();
        assert!(area.boot_attempt(&mut st).unwrap().trial);
        assert_eq!(
            area.boot_attempt(&mut st).unwrap().fell_back_from,
            Some(updater::Slot::B)
        );
    }
    let st = json(&updater(&["status", "--json"], &disk));
    assert_eq!(st["slots"]["B"]["state"], "complete");
    assert_eq!(st["slots"]["B"]["fell_back"], true);
    assert_eq!(st["pending"], serde_json::Value::Null);
}

/// Usage errors are found before any state change, as in `fwpack apply`:
/// with slot B complete and pending, each exits 2 and leaves the whole
/// disk byte-identical; B stays pending.
#[test]
fn field_usage_errors_leave_the_disk_byte_identical() {
    let work = tempfile::tempdir().unwrap();
    let a = image(&noise_rootfs(work.path(), "a.bin", 1), 1);
    let disk = disk(work.path(), false, &a);
    let key = work.path().join("key.pem");
    let b = work.path().join("b.fwi");
    std::fs::write(&b, image(&noise_rootfs(work.path(), "b.bin", 2), 2)).unwrap();
    let apply = |extra: &[&str]| {
        Command::new(host_updater())
            .arg("apply")
            .arg(&b)
            .arg("--key")
            .arg(&key)
            .args(extra)
            .arg("--target")
            .arg(&disk)
            .output()
            .unwrap()
    };
    let out = apply(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = std::fs::read(&disk).unwrap();
    for extra in [
        // The seed is the slot being written (the default target, B).
        &["--seed", "B"][..],
        &["--slot", "B", "--seed", "b"],
        &["--seed", "C"],
        &["--slot", "C"],
        &["--slot", "B", "--slot", "B"],
        &["--tries", "0"],
        &["--no-activate", "--tries", "5"],
        &["--timeout", "0"],
        &["--bogus"],
        &["second-source.fwi"],
    ] {
        let out = apply(extra);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::read(&disk).unwrap() == before,
            "{extra:?}: the disk changed"
        );
    }
    let st = json(&updater(&["status", "--json"], &disk));
    assert_eq!(st["pending"], "B", "{st}");
}
