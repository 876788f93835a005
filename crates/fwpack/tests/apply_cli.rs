//! `fwpack state init | apply | status | mark-good` on a disk image file:
//! refusals (exit codes, not a byte changed), an A/B round trip checked
//! with GNU cmp, a real interruption (SIGKILL) and its resume, and
//! minimized re-flashes.

#[path = "apply_common.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

const BOARD: &str = "acme-board";
// After the state area (copies at 512 KiB and 4.5 MiB):
// system: A at 9 MiB, B at 17 MiB (8 MiB each); boot: A at 25 MiB, B at 26 MiB.
const SYS_A: u64 = 9 * MIB;
const SYS_B: u64 = 17 * MIB;
const BOOT_A: u64 = 25 * MIB;
const BOOT_B: u64 = 26 * MIB;

fn init_disk(dir: &Path, name: &str) {
    ok(fwpack(
        &[
            "state",
            "init",
            "--target",
            name,
            "--size",
            "28MiB",
            "--board",
            BOARD,
            "-g",
            "system:A=9MiB+8MiB,B=17MiB+8MiB",
            "-g",
            "boot:A=25MiB+1MiB,B=26MiB+1MiB",
            "--active-version",
            "10",
            "--active-label",
            "factory",
        ],
        dir,
    ));
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
}

/// Payloads, a key pair, images v11 (good) and the disk.
fn setup() -> Setup {
    let tmp = workdir("apply-cli");
    let dir = tmp.path().to_path_buf();
    std::fs::write(dir.join("rootfs.img"), payload(1, 3 * MIB as usize + 777)).unwrap();
    std::fs::write(dir.join("kernel.img"), payload(2, 200_000)).unwrap();
    let segs = [
        "rootfs=rootfs.img,target=system",
        "kernel=kernel.img,target=boot,compress=zstd",
    ];
    stamp(&dir, "v11.fwi", BOARD, 11, &segs);
    init_disk(&dir, "disk.img");
    Setup { _tmp: tmp, dir }
}

#[test]
fn refusals_leave_the_disk_untouched() {
    let s = setup();
    let d = &s.dir;
    let segs = [
        "rootfs=rootfs.img,target=system",
        "kernel=kernel.img,target=boot",
    ];
    stamp(d, "other-board.fwi", "other-board", 11, &segs);
    stamp(d, "old.fwi", BOARD, 9, &segs);
    ok(fwpack(&["keygen", "-o", "stranger.pem"], d));

    // Corrupt payload: flip a byte near the end of the last segment.
    let mut img = std::fs::read(d.join("v11.fwi")).unwrap();
    let inspect: serde_json::Value =
        serde_json::from_slice(&ok(fwpack(&["inspect", "--json", "v11.fwi"], d)).stdout).unwrap();
    let last = inspect["segments"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let end = last["data_offset"].as_u64().unwrap() + last["stored_len"].as_u64().unwrap();
    img[end as usize - 2] ^= 0x40;
    std::fs::write(d.join("corrupt.fwi"), img).unwrap();

    let before = std::fs::read(d.join("disk.img")).unwrap();
    for (image, key, exit, says) in [
        ("v11.fwi", "stranger.pub.pem", 5, "untrusted"),
        ("corrupt.fwi", "k.pub.pem", 6, "SHA-256"),
        ("other-board.fwi", "k.pub.pem", 7, "other-board"),
        ("old.fwi", "k.pub.pem", 7, "rollback"),
    ] {
        let out = fwpack(&["apply", image, "--target", "disk.img", "--key", key], d);
        assert_eq!(code(&out), exit, "{image}: {}", show(&out));
        assert!(stderr(&out).contains(says), "{image}: {}", show(&out));
        if image == "corrupt.fwi" {
            // Found mid-stream (one pass): chunks before the bad one were
            // written to slot B, which stays `updating`, never pending.
            let st = ok(fwpack(&["status", "--target", "disk.img", "--json"], d));
            let text = String::from_utf8_lossy(&st.stdout).to_string();
            assert!(text.contains("updating"), "{text}");
            std::fs::write(d.join("disk.img"), &before).unwrap();
            continue;
        }
        assert!(
            std::fs::read(d.join("disk.img")).unwrap() == before,
            "{image}: the disk changed"
        );
        // --json adds a machine-readable error line with the same code.
        let out = fwpack(
            &[
                "apply", image, "--target", "disk.img", "--key", key, "--json",
            ],
            d,
        );
        let last = json_lines(&out).pop().unwrap();
        assert_eq!(last["event"], "error");
        assert_eq!(last["exit_code"], exit);
    }
    // The active slot is never a target.
    let out = fwpack(
        &[
            "apply",
            "v11.fwi",
            "--target",
            "disk.img",
            "--key",
            "k.pub.pem",
            "--slot",
            "A",
        ],
        d,
    );
    assert_eq!(code(&out), 7, "{}", show(&out));
    // Not a disk with a state area: a format error.
    std::fs::write(d.join("blank.img"), vec![0u8; 20 * MIB as usize]).unwrap();
    let out = fwpack(
        &[
            "apply",
            "v11.fwi",
            "--target",
            "blank.img",
            "--key",
            "k.pub.pem",
        ],
        d,
    );
    assert_eq!(code(&out), 4, "{}", show(&out));
    assert!(std::fs::read(d.join("disk.img")).unwrap() == before);
    // state init refuses to overwrite a live state area.
    let out = fwpack(
        &[
            "state",
            "init",
            "--target",
            "disk.img",
            "--board",
            BOARD,
            "-g",
            "system:A=9MiB+8MiB,B=17MiB+8MiB",
        ],
        d,
    );
    assert!(!out.status.success() && stderr(&out).contains("already has a state area"));
}

/// Usage errors are found before any state change: with slot B complete
/// and pending, each of them exits 2 and leaves the whole disk (state area
/// and slots) byte-identical; B stays pending.
#[test]
fn field_usage_errors_leave_the_disk_byte_identical() {
    let s = setup();
    let d = &s.dir;
    let base = [
        "apply",
        "v11.fwi",
        "--target",
        "disk.img",
        "--key",
        "k.pub.pem",
    ];
    ok(fwpack(&base, d));
    let before = std::fs::read(d.join("disk.img")).unwrap();
    for extra in [
        // The seed is the slot being written (the default target, B).
        &["--seed", "B"][..],
        &["--slot", "B", "--seed", "b"],
        &["--seed", "C"],
        &["--slot", "C"],
        &["--slot", "B", "--slot", "B"],
        &["--tries", "0"],
        &["--no-activate", "--tries", "5"],
        &["--chunk-size", "1000"],
        &["--checkpoint-interval", "0"],
        &["--bogus"],
    ] {
        let args = [&base[..], extra].concat();
        let out = fwpack(&args, d);
        assert_eq!(code(&out), 2, "{extra:?}: {}", show(&out));
        assert!(
            std::fs::read(d.join("disk.img")).unwrap() == before,
            "{extra:?}: the disk changed"
        );
    }
    let st: serde_json::Value = serde_json::from_slice(
        &ok(fwpack(&["status", "--target", "disk.img", "--json"], d)).stdout,
    )
    .unwrap();
    assert_eq!(st["pending"], "B", "{st}");
}

#[test]
fn ab_round_trip() {
    let s = setup();
    let d = &s.dir;
    let disk = d.join("disk.img");
    let out = ok(fwpack(
        &[
            "apply",
            "v11.fwi",
            "--target",
            "disk.img",
            "--key",
            "k.pub.pem",
            "--verify-writes",
            "--json",
        ],
        d,
    ));
    let lines = json_lines(&out);
    // One pass: no separate verification phase; each checkpoint's range
    // was read back against the signed chunk hashes.
    assert!(!lines
        .iter()
        .any(|l| l["event"] == "phase" && l["phase"] == "verify"));
    assert!(lines
        .iter()
        .any(|l| l["event"] == "checkpoint" && l["verified"] == true));
    let r = result_of(&out);
    assert_eq!(r["slot"], "B");
    assert_eq!(r["pending"], true);
    assert_eq!(
        r["direct_io"], true,
        "the target dir is on a disk filesystem"
    );
    assert!(r["bytes_read_back"].as_u64().unwrap() >= r["raw_bytes"].as_u64().unwrap());
    // The slot holds the payloads, per GNU cmp; slot A is untouched.
    let rootfs_len = std::fs::metadata(d.join("rootfs.img")).unwrap().len();
    assert!(cmp_range(
        &d.join("rootfs.img"),
        0,
        &disk,
        SYS_B,
        rootfs_len
    ));
    assert!(cmp_range(&d.join("kernel.img"), 0, &disk, BOOT_B, 200_000));
    assert!(!cmp_range(
        &d.join("rootfs.img"),
        0,
        &disk,
        SYS_A,
        rootfs_len
    ));

    let st: serde_json::Value = serde_json::from_slice(
        &ok(fwpack(&["status", "--target", "disk.img", "--json"], d)).stdout,
    )
    .unwrap();
    assert_eq!(st["active"], "A");
    assert_eq!(st["pending"], "B");
    assert_eq!(st["tries_left"], 3);
    assert_eq!(st["slots"]["B"]["state"], "complete");
    assert_eq!(st["slots"]["B"]["version"], 11);
    assert_eq!(st["slots"]["A"]["label"], "factory");
    assert!(st["journal"].is_null());
    let human = stdout(&ok(fwpack(&["status", "--target", "disk.img"], d)));
    assert!(human.contains("pending      B (3 tries left)"), "{human}");

    // The new system confirms itself; B becomes active, the floor rises.
    let out = ok(fwpack(&["mark-good", "--target", "disk.img"], d));
    assert!(stdout(&out).contains("active slot is B"), "{}", show(&out));
    let st: serde_json::Value = serde_json::from_slice(
        &ok(fwpack(&["status", "--target", "disk.img", "--json"], d)).stdout,
    )
    .unwrap();
    assert_eq!(
        (st["active"].as_str(), st["rollback_floor"].as_u64()),
        (Some("B"), Some(11))
    );

    // The next update goes to A; B (now running) is left alone.
    std::fs::write(d.join("rootfs2.img"), payload(3, 2 * MIB as usize)).unwrap();
    stamp(
        d,
        "v12.fwi",
        BOARD,
        12,
        &[
            "rootfs=rootfs2.img,target=system",
            "kernel=kernel.img,target=boot",
        ],
    );
    let r = result_of(&ok(fwpack(
        &[
            "apply",
            "v12.fwi",
            "--target",
            "disk.img",
            "--key",
            "k.pub.pem",
            "--json",
        ],
        d,
    )));
    assert_eq!(r["slot"], "A");
    assert!(cmp_range(&d.join("rootfs2.img"), 0, &disk, SYS_A, 2 * MIB));
    assert!(cmp_range(&d.join("kernel.img"), 0, &disk, BOOT_A, 200_000));
    assert!(cmp_range(
        &d.join("rootfs.img"),
        0,
        &disk,
        SYS_B,
        rootfs_len
    ));
}

#[test]
fn killed_apply_resumes_from_its_checkpoint() {
    let s = setup();
    let d = &s.dir;
    std::fs::write(d.join("big.img"), payload(4, 8 * MIB as usize)).unwrap();
    stamp(
        d,
        "big.fwi",
        BOARD,
        11,
        &[
            "rootfs=big.img,target=system",
            "kernel=kernel.img,target=boot",
        ],
    );
    let args = [
        "apply",
        "big.fwi",
        "--target",
        "disk.img",
        "--key",
        "k.pub.pem",
        "--json",
        "--chunk-size",
        "64KiB",
        "--checkpoint-interval",
        "64KiB",
    ];
    // A real interruption: SIGKILL once a few checkpoints are durable.
    let mut child = Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .args(args)
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if line.unwrap().contains("\"checkpoint\"") {
            seen += 1;
            if seen == 20 {
                child.kill().unwrap();
                break;
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the apply finished before it could be killed"
    );
    let st: serde_json::Value = serde_json::from_slice(
        &ok(fwpack(&["status", "--target", "disk.img", "--json"], d)).stdout,
    )
    .unwrap();
    assert_eq!(st["slots"]["B"]["state"], "updating");
    assert!(
        st["pending"].is_null(),
        "an interrupted slot must not be pending"
    );
    let journal_at = st["journal"]["done_bytes"].as_u64().expect("a journal");
    assert!(journal_at >= 20 * 65536);

    let out = ok(fwpack(&args, d));
    let lines = json_lines(&out);
    let resume = lines
        .iter()
        .find(|l| l["event"] == "resume")
        .expect("resumed");
    let r = result_of(&out);
    let skipped = r["skipped_resume"].as_u64().unwrap();
    assert_eq!(resume["skipped"].as_u64(), Some(skipped));
    assert!(skipped >= journal_at, "{skipped} < {journal_at}");
    let raw = r["raw_bytes"].as_u64().unwrap();
    assert!(r["bytes_written"].as_u64().unwrap() <= raw - skipped + 512);
    assert!(cmp_range(
        &d.join("big.img"),
        0,
        &d.join("disk.img"),
        SYS_B,
        8 * MIB
    ));
    assert!(cmp_range(
        &d.join("kernel.img"),
        0,
        &d.join("disk.img"),
        BOOT_B,
        200_000
    ));
}

#[test]
fn minimized_reflash_writes_only_changes() {
    let s = setup();
    let d = &s.dir;
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
    // v12: the same rootfs with one 4 KiB block changed.
    let mut rootfs = std::fs::read(d.join("rootfs.img")).unwrap();
    rootfs[1_000_000] ^= 1;
    std::fs::write(d.join("rootfs12.img"), &rootfs).unwrap();
    stamp(
        d,
        "v12.fwi",
        BOARD,
        12,
        &[
            "rootfs=rootfs12.img,target=system",
            "kernel=kernel.img,target=boot",
        ],
    );
    let r = result_of(&ok(fwpack(
        &[
            "apply",
            "v12.fwi",
            "--target",
            "disk.img",
            "--key",
            "k.pub.pem",
            "--minimize-writes",
            "--json",
        ],
        d,
    )));
    assert_eq!(r["slot"], "B");
    assert_eq!(r["bytes_written"], 4096);
    assert_eq!(
        r["skipped_unchanged"].as_u64().unwrap(),
        r["raw_bytes"].as_u64().unwrap() - 4096
    );
    assert!(cmp_range(
        &d.join("rootfs12.img"),
        0,
        &d.join("disk.img"),
        SYS_B,
        rootfs.len() as u64
    ));
    // The same image once more: already there, nothing written.
    let r = result_of(&ok(fwpack(
        &[
            "apply",
            "v12.fwi",
            "--target",
            "disk.img",
            "--key",
            "k.pub.pem",
            "--json",
        ],
        d,
    )));
    assert_eq!(r["already_complete"], true);
    assert_eq!(r["bytes_written"], 0);
    let _ = path_str(d);
}

/// `fwpack apply SYSTEM.fwi BOOT.fwi`: two images, one per slot group,
/// written into slot B and switched in one commit; overlapping images are
/// refused before anything is written.
#[test]
fn apply_two_images_as_one_transaction() {
    let s = setup();
    let d = &s.dir;
    let disk = d.join("disk.img");
    stamp(
        d,
        "sys.fwi",
        BOARD,
        11,
        &["rootfs=rootfs.img,target=system"],
    );
    stamp(
        d,
        "boot.fwi",
        BOARD,
        11,
        &["kernel=kernel.img,target=boot,compress=zstd"],
    );
    let before = std::fs::read(&disk).unwrap();
    let out = fwpack(
        &[
            "apply",
            "v11.fwi",
            "boot.fwi",
            "--target",
            "disk.img",
            "--key",
            "k.pub.pem",
        ],
        d,
    );
    assert_eq!(code(&out), 7, "{}", show(&out));
    assert!(stderr(&out).contains("slot group `boot`"), "{}", show(&out));
    assert!(std::fs::read(&disk).unwrap() == before, "refusal wrote");

    let out = ok(fwpack(
        &[
            "apply",
            "sys.fwi",
            "boot.fwi",
            "--target",
            "disk.img",
            "--key",
            "k.pub.pem",
            "--json",
        ],
        d,
    ));
    let lines = json_lines(&out);
    assert!(lines.iter().any(|l| l["event"] == "transaction"));
    let r = result_of(&out);
    assert_eq!(r["transaction"], true, "{r}");
    assert_eq!((&r["slot"], &r["pending"]), (&"B".into(), &true.into()));
    assert_eq!(r["applied"], serde_json::json!([0, 1]));
    let rootfs_len = std::fs::metadata(d.join("rootfs.img")).unwrap().len();
    let kernel_len = std::fs::metadata(d.join("kernel.img")).unwrap().len();
    assert!(cmp_range(
        &d.join("rootfs.img"),
        0,
        &disk,
        SYS_B,
        rootfs_len
    ));
    assert!(cmp_range(
        &d.join("kernel.img"),
        0,
        &disk,
        BOOT_B,
        kernel_len
    ));
    // The slot carries the transaction's id, pending with version 11.
    let st: serde_json::Value = serde_json::from_slice(
        &ok(fwpack(&["status", "--target", "disk.img", "--json"], d)).stdout,
    )
    .unwrap();
    let text = st.to_string();
    assert!(
        text.contains(r["image_id"].as_str().unwrap()),
        "status does not show the transaction id: {text}"
    );
    // Again: already complete, nothing written.
    let out = ok(fwpack(
        &[
            "apply",
            "sys.fwi",
            "boot.fwi",
            "--target",
            "disk.img",
            "--key",
            "k.pub.pem",
            "--json",
        ],
        d,
    ));
    let r = result_of(&out);
    assert_eq!(r["already_complete"], true, "{r}");
    assert_eq!(r["bytes_written"], 0);
}
