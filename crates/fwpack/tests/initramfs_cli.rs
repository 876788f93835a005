//! `fwpack initramfs` end to end with the shipped recipe: what GNU cpio sees,
//! `--list` (human and JSON), reproducibility, and exit codes on bad input.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fwpack(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fwpack"));
    c.args(args).env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "fwpack failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn recipe() -> String {
    testkit::workspace_root()
        .join("recipes/updater-initramfs.yaml")
        .display()
        .to_string()
}

/// A stand-in updater: any file; the recipe makes it 0755.
fn fake_updater(dir: &Path) -> PathBuf {
    let p = dir.join("updater");
    fs::write(&p, b"\x7fELF not really, but /init all the same").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    p
}

#[test]
fn shipped_recipe_builds_lists_and_reproduces() {
    if !testkit::tools::require("cpio") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let upd = fake_updater(d.path());
    let out = d.path().join("initramfs.cpio.gz");
    let var = format!("UPDATER={}", upd.display());
    let args = [
        "initramfs",
        "--recipe",
        &recipe(),
        "-o",
        out.to_str().unwrap(),
        "--var",
        &var,
    ];
    let summary = ok(&fwpack(&args, &[("SOURCE_DATE_EPOCH", "1000000000")]));
    assert!(
        summary.contains("entries") && summary.contains("gzip -9"),
        "{summary}"
    );
    let first = fs::read(&out).unwrap();
    ok(&fwpack(&args, &[("SOURCE_DATE_EPOCH", "1000000000")]));
    assert_eq!(
        fs::read(&out).unwrap(),
        first,
        "rebuild must be byte-identical"
    );

    // GNU cpio's view of the archive.
    let listing = Command::new("sh")
        // cpio prints local time; the expected date below is UTC.
        .env("TZ", "UTC")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' | cpio -itv --numeric-uid-gid --quiet",
            out.display()
        ))
        .output()
        .unwrap();
    let listing = ok(&listing);
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{name} missing from:\n{listing}"))
            .to_string()
    };
    assert!(line("init").starts_with("-rwxr-xr-x"), "{listing}");
    let console: Vec<String> = line("dev/console")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(
        &console[..6],
        ["crw-------", "1", "0", "0", "5,", "1"],
        "{listing}"
    );
    let null: Vec<String> = line("dev/null")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(
        &null[..6],
        ["crw-rw-rw-", "1", "0", "0", "1,", "3"],
        "{listing}"
    );
    for dir in ["proc", "sys", "dev", "run", "mnt", "etc/fwpack"] {
        assert!(line(dir).starts_with("drwxr-xr-x"), "{dir}: {listing}");
    }
    assert!(
        listing.lines().all(|l| l.contains("Sep  9  2001")),
        "SOURCE_DATE_EPOCH: {listing}"
    );
    // No modules requested: no module files, no load list.
    assert!(
        !listing.contains("lib/modules") && !listing.contains("modules.load"),
        "{listing}"
    );

    // Our own lister agrees, in both formats.
    let ours = ok(&fwpack(
        &["initramfs", "--list", out.to_str().unwrap()],
        &[],
    ));
    assert!(
        ours.lines().any(|l| l.starts_with("crw-------")
            && l.contains("5, 1")
            && l.ends_with("/dev/console")),
        "{ours}"
    );
    let json = ok(&fwpack(
        &["initramfs", "--list", out.to_str().unwrap(), "--json"],
        &[],
    ));
    let entries: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), listing.lines().count());
    let init = entries.iter().find(|e| e["name"] == "/init").unwrap();
    assert_eq!(
        (init["type"].as_str(), init["mode"].as_str()),
        (Some("file"), Some("0755"))
    );
    let con = entries
        .iter()
        .find(|e| e["name"] == "/dev/console")
        .unwrap();
    assert_eq!(con["rdev"], serde_json::json!([5, 1]));
}

#[test]
fn zstd_and_none_round_trip_through_list() {
    let d = tempfile::tempdir().unwrap();
    let upd = fake_updater(d.path());
    let var = format!("UPDATER={}", upd.display());
    let mut listings = Vec::new();
    for (codec, magic) in [
        ("none", &b"070701"[..]),
        ("zstd", &[0x28, 0xb5, 0x2f, 0xfd][..]),
    ] {
        let out = d.path().join(format!("i.{codec}"));
        ok(&fwpack(
            &[
                "initramfs",
                "-r",
                &recipe(),
                "-o",
                out.to_str().unwrap(),
                "--var",
                &var,
                "--compression",
                codec,
            ],
            &[],
        ));
        assert!(fs::read(&out).unwrap().starts_with(magic), "{codec}");
        listings.push(ok(&fwpack(
            &["initramfs", "--list", out.to_str().unwrap()],
            &[],
        )));
    }
    assert_eq!(listings[0], listings[1]);
}

#[test]
fn bad_input_exit_codes_and_messages() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x.cpio.gz");
    let o = out.to_str().unwrap();
    let r = recipe();

    // Undefined variable: malformed recipe input (4), pointing at the line.
    let e = fwpack(&["initramfs", "-r", &r, "-o", o], &[]);
    assert_eq!(e.status.code(), Some(4));
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(
        msg.contains("updater-initramfs.yaml:") && msg.contains("${UPDATER}"),
        "{msg}"
    );

    // Missing updater binary: I/O (3), naming /init and the file.
    let e = fwpack(
        &[
            "initramfs",
            "-r",
            &r,
            "-o",
            o,
            "--var",
            "UPDATER=/no/such/updater",
        ],
        &[],
    );
    assert_eq!(e.status.code(), Some(3));
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(
        msg.contains("/init") && msg.contains("/no/such/updater"),
        "{msg}"
    );

    // Modules requested without a module tree.
    let upd = fake_updater(d.path());
    let var = format!("UPDATER={}", upd.display());
    let e = fwpack(
        &[
            "initramfs",
            "-r",
            &r,
            "-o",
            o,
            "--var",
            &var,
            "--var",
            "MODULES=virtio_blk",
        ],
        &[],
    );
    assert_eq!(
        e.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&e.stderr)
    );

    // Usage errors: 2.
    for args in [
        vec!["initramfs", "-r", &r, "-o", o, "--var", "no-equals-sign"],
        vec![
            "initramfs",
            "-r",
            &r,
            "-o",
            o,
            "--var",
            &var,
            "--level",
            "10",
        ],
        vec!["initramfs", "-r", &r],
    ] {
        assert_eq!(fwpack(&args, &[]).status.code(), Some(2), "{args:?}");
    }
    // Bad SOURCE_DATE_EPOCH is refused rather than silently ignored.
    let e = fwpack(
        &["initramfs", "-r", &r, "-o", o, "--var", &var],
        &[("SOURCE_DATE_EPOCH", "yesterday")],
    );
    assert_eq!(e.status.code(), Some(4));

    assert!(!out.exists(), "no output after failures");
    assert_eq!(
        fs::read_dir(d.path()).unwrap().count(),
        1,
        "only the fake updater remains"
    );

    // Listing something that is not an archive: 4.
    let junk = d.path().join("junk");
    fs::write(&junk, "not an archive").unwrap();
    assert_eq!(
        fwpack(&["initramfs", "--list", junk.to_str().unwrap()], &[])
            .status
            .code(),
        Some(4)
    );
    assert_eq!(
        fwpack(&["initramfs", "--list", "/no/such/file"], &[])
            .status
            .code(),
        Some(3)
    );
}
