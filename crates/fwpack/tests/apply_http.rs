//! `fwpack apply URL` and `fwpack apply -` against real sources: Debian's
//! nginx on a loopback port (full apply, a transfer cut by killing the
//! server and resumed with a `Range` request from the checkpoint, the
//! image replaced on the server between two runs, a delta fetch of a 1 %
//! changed rootfs measured from nginx's access log) and a fault-injecting
//! server for what nginx never does (truncated body, lying
//! Content-Length, redirect loop, stall) — each a clear exit 9 with the
//! slot left unbootable.

#[path = "apply_common.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;
use testkit::http::{Fault, FaultServer, Nginx, Served};

const BOARD: &str = "acme-board";
// State area copies at 512 KiB and 4.5 MiB; system A at 9 MiB, B at
// 25 MiB (16 MiB each); boot A at 41 MiB, B at 42 MiB.
const SYS_A: u64 = 9 * MIB;
const SYS_B: u64 = 25 * MIB;
const BOOT_B: u64 = 42 * MIB;
/// Image chunk size: fine enough that a 1 % change is a few chunks.
const CHUNK: u64 = 64 * 1024;
const ROOTFS_LEN: usize = 12 * MIB as usize;
const KERNEL_LEN: usize = 300_000;
/// What a client may fetch for the head (header + index) before the data:
/// one read window.
const HEAD_WINDOW: u64 = 64 * 1024;

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// What nginx serves.
    www: PathBuf,
}

fn init_disk(dir: &Path) {
    ok(fwpack(
        &[
            "state",
            "init",
            "--target",
            "disk.img",
            "--size",
            "43MiB",
            "--board",
            BOARD,
            "-g",
            "system:A=9MiB+16MiB,B=25MiB+16MiB",
            "-g",
            "boot:A=41MiB+1MiB,B=42MiB+1MiB",
            "--active-version",
            "10",
            "--active-label",
            "factory",
        ],
        dir,
    ));
}

/// A signed, uncompressed image (so chunk i of a segment is stored at
/// `data_offset + i * CHUNK`, and the access log's byte counts can be
/// checked against the chunks).
fn stamp64k(dir: &Path, out: &str, version: u64, rootfs: &str, kernel: &str) {
    stamp64k_with(dir, out, version, (rootfs, kernel), &[]);
}

/// [`stamp64k`] with more `fwpack stamp` arguments.
fn stamp64k_with(
    dir: &Path,
    out: &str,
    version: u64,
    (rootfs, kernel): (&str, &str),
    extra: &[&str],
) {
    if !dir.join("k.pem").exists() {
        ok(fwpack(&["keygen", "-o", "k.pem"], dir));
    }
    let v = version.to_string();
    let r = format!("rootfs={rootfs},target=system");
    let k = format!("kernel={kernel},target=boot");
    let mut args = vec![
        "stamp",
        "--board",
        BOARD,
        "--version",
        &v,
        "--chunk-size",
        "64K",
        "--key",
        "k.pem",
        "-o",
        out,
        "-s",
        &r,
        "-s",
        &k,
    ];
    args.extend_from_slice(extra);
    ok(fwpack(&args, dir));
}

fn setup(name: &str) -> Option<Setup> {
    if !testkit::tools::require("nginx") {
        return None;
    }
    let tmp = workdir(name);
    let dir = tmp.path().to_path_buf();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(dir.join("rootfs.img"), payload(1, ROOTFS_LEN)).unwrap();
    std::fs::write(dir.join("kernel.img"), payload(2, KERNEL_LEN)).unwrap();
    stamp64k(&dir, "v11.fwi", 11, "rootfs.img", "kernel.img");
    init_disk(&dir);
    Some(Setup {
        _tmp: tmp,
        dir,
        www,
    })
}

fn publish(s: &Setup, image: &str, as_name: &str) {
    // Write-then-rename, as a real publisher would: nginx never serves a
    // half-written file.
    let tmp = s.www.join(format!(".{as_name}.tmp"));
    std::fs::copy(s.dir.join(image), &tmp).unwrap();
    std::fs::rename(&tmp, s.www.join(as_name)).unwrap();
}

fn apply_args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "apply",
        url,
        "--target",
        "disk.img",
        "--key",
        "k.pub.pem",
        "--json",
    ];
    v.extend_from_slice(extra);
    v
}

fn status(d: &Path) -> Value {
    serde_json::from_slice(&ok(fwpack(&["status", "--target", "disk.img", "--json"], d)).stdout)
        .unwrap()
}

/// After a failed apply: slot B is neither complete nor pending, A still
/// boots.
fn assert_not_bootable(d: &Path, what: &str) {
    let st = status(d);
    assert!(st["pending"].is_null(), "{what}: B became pending: {st}");
    assert_ne!(
        st["slots"]["B"]["state"], "complete",
        "{what}: B became complete: {st}"
    );
    assert_eq!(st["active"], "A", "{what}: {st}");
}

fn inspect(d: &Path, image: &str) -> Value {
    serde_json::from_slice(&ok(fwpack(&["inspect", "--json", image], d)).stdout).unwrap()
}

/// Stored offset of raw byte `offset` of segment `seg` in an uncompressed
/// image (the start of the chunk a resume must ask for).
fn stored_offset(info: &Value, seg: u64, offset: u64) -> u64 {
    let segs = info["segments"].as_array().unwrap();
    let s = &segs[seg as usize];
    if offset >= s["raw_len"].as_u64().unwrap() && (seg as usize) + 1 < segs.len() {
        return segs[seg as usize + 1]["data_offset"].as_u64().unwrap();
    }
    s["data_offset"].as_u64().unwrap() + offset
}

fn slot_b_holds(d: &Path, rootfs: &str) {
    slot_holds(d, (SYS_B, BOOT_B), rootfs, "kernel.img");
}

/// The disk's system slot at `sys` holds `rootfs`, its boot slot at
/// `boot` holds `kernel`.
fn slot_holds(d: &Path, (sys, boot): (u64, u64), rootfs: &str, kernel: &str) {
    assert!(
        cmp_range(
            &d.join(rootfs),
            0,
            &d.join("disk.img"),
            sys,
            ROOTFS_LEN as u64
        ),
        "the system slot at {sys} does not hold {rootfs}"
    );
    assert!(
        cmp_range(
            &d.join(kernel),
            0,
            &d.join("disk.img"),
            boot,
            KERNEL_LEN as u64
        ),
        "the boot slot at {boot} does not hold {kernel}"
    );
}

/// Runs `fwpack apply` and calls `at_checkpoint(n)` for the n-th
/// checkpoint event on its stdout until it returns true; then waits for
/// the exit. Returns (exit code, stdout lines).
fn apply_watching(
    d: &Path,
    args: &[&str],
    mut at_checkpoint: impl FnMut(usize) -> bool,
) -> (i32, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .args(args)
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut seen = 0;
    let mut done = false;
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if !done && line.contains("\"checkpoint\"") {
            seen += 1;
            done = at_checkpoint(seen);
        }
        lines.push(line);
    }
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), lines)
}

#[test]
fn full_apply_over_http_from_nginx() {
    let Some(s) = setup("apply-http-full") else {
        return;
    };
    let d = &s.dir;
    publish(&s, "v11.fwi", "u.fwi");
    let nginx = Nginx::start(&s.www).unwrap();
    let url = nginx.url("u.fwi");
    let out = ok(fwpack(&apply_args(&url, &["--seed", "none"]), d));
    let lines = json_lines(&out);
    let fetches: Vec<&Value> = lines.iter().filter(|l| l["event"] == "fetch").collect();
    assert!(!fetches.is_empty(), "no fetch events: {}", show(&out));
    assert!(fetches
        .iter()
        .all(|f| f["status"] == 200 || f["status"] == 206));
    let r = result_of(&out);
    assert_eq!(
        (r["slot"].as_str(), r["pending"].as_bool()),
        (Some("B"), Some(true))
    );
    let image_len = std::fs::metadata(d.join("v11.fwi")).unwrap().len();
    let read = r["image_bytes_read"].as_u64().unwrap();
    assert!(read <= image_len, "{read} > {image_len}");
    assert!(read >= ROOTFS_LEN as u64 + KERNEL_LEN as u64, "{read}");
    assert_eq!(r["bytes_from_seed"], 0);
    assert!(r["resumed_from"].is_null());
    // What the client says it read is what nginx says it sent, give or
    // take the head window it reads first (up to 64 KiB, overlapping the
    // data request).
    let sent = nginx.body_bytes_for("/u.fwi");
    assert!(
        sent >= read && sent <= read + HEAD_WINDOW,
        "client read {read}, nginx sent {sent}: {:?}",
        nginx.access_log()
    );
    slot_b_holds(d, "rootfs.img");
    let st = status(d);
    assert_eq!(st["pending"], "B");
    assert_eq!(st["slots"]["B"]["version"], 11);
}

/// `fwpack apply -` with `image` piped to its stdin.
fn apply_stdin(d: &Path, image: &str, extra: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .args(apply_args("-", extra))
        .current_dir(d)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let image = std::fs::read(d.join(image)).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A pipe, not a file: the writer is a thread so a full pipe cannot
    // deadlock against our reading of stdout.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&image);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn stdin_apply() {
    let Some(s) = setup("apply-http-stdin") else {
        return;
    };
    let d = &s.dir;
    let out = apply_stdin(d, "v11.fwi", &[]);
    assert!(out.status.success(), "{}", show(&out));
    let r = result_of(&out);
    assert_eq!(
        (r["slot"].as_str(), r["pending"].as_bool()),
        (Some("B"), Some(true))
    );
    slot_b_holds(d, "rootfs.img");
}

#[test]
fn server_killed_mid_transfer_then_rerun_resumes_with_range_from_checkpoint() {
    let Some(s) = setup("apply-http-resume") else {
        return;
    };
    let d = &s.dir;
    publish(&s, "v11.fwi", "u.fwi");
    // ~6 s for the whole image: long enough to kill nginx mid-body.
    let mut nginx = Nginx::start_limited(&s.www, Some(2 * MIB)).unwrap();
    let url = nginx.url("u.fwi");
    let args = apply_args(
        &url,
        &[
            "--seed",
            "none",
            "--retries",
            "1",
            "--timeout",
            "5",
            "--chunk-size",
            "256KiB",
            "--checkpoint-interval",
            "256KiB",
        ],
    );
    let (exit, lines) = apply_watching(d, &args, |n| {
        if n == 8 {
            nginx.stop();
            return true;
        }
        false
    });
    assert_eq!(exit, 9, "the source failed: {lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("\"error\"")),
        "no JSON error line: {lines:?}"
    );
    assert_not_bootable(d, "server killed");
    let st = status(d);
    let j = &st["journal"];
    let (seg, off) = (
        j["segment"].as_u64().unwrap(),
        j["offset"].as_u64().unwrap(),
    );
    assert!(j["done_bytes"].as_u64().unwrap() >= 8 * 256 * 1024, "{st}");
    let info = inspect(d, "v11.fwi");
    let x = stored_offset(&info, seg, off);

    nginx.set_limit_rate(None);
    nginx.restart().unwrap();
    let before = nginx.access_log().len();
    let out = ok(fwpack(&args, d));
    let r = result_of(&out);
    assert_eq!(
        r["resumed_from"],
        serde_json::json!({"segment": seg, "offset": off}),
        "{}",
        show(&out)
    );
    let log = nginx.access_log();
    let rerun = &log[before..];
    assert!(
        rerun
            .iter()
            .any(|e| e.status == 206 && e.range_starts() == [x]),
        "no 206 for Range: bytes={x}- in the re-run's requests: {rerun:?}"
    );
    // Nothing before the checkpoint was fetched again, except the head
    // (header + index) that proves it is the same image.
    let head_end = info["index_range"][1].as_u64().unwrap();
    let image_len = info["image_len"].as_u64().unwrap();
    let sent: u64 = rerun.iter().map(|e| e.body_bytes_sent).sum();
    assert!(
        sent <= image_len - x + head_end.max(HEAD_WINDOW),
        "re-run fetched {sent} bytes, more than the {} after the checkpoint + the head",
        image_len - x
    );
    let read = r["image_bytes_read"].as_u64().unwrap();
    assert!(read <= sent && sent <= read + HEAD_WINDOW, "{read} {sent}");
    slot_b_holds(d, "rootfs.img");
    assert_eq!(status(d)["pending"], "B");
}

#[test]
fn image_replaced_on_server_between_runs_is_never_mixed() {
    let Some(s) = setup("apply-http-replaced") else {
        return;
    };
    let d = &s.dir;
    // v12: a different rootfs, same size (so only the content and the
    // mtime, hence nginx's ETag, differ).
    std::fs::write(d.join("rootfs12.img"), payload(7, ROOTFS_LEN)).unwrap();
    stamp64k(d, "v12.fwi", 12, "rootfs12.img", "kernel.img");
    publish(&s, "v11.fwi", "u.fwi");
    let mut nginx = Nginx::start_limited(&s.www, Some(2 * MIB)).unwrap();
    let url = nginx.url("u.fwi");
    let args = apply_args(
        &url,
        &[
            "--seed",
            "none",
            "--retries",
            "1",
            "--timeout",
            "5",
            "--chunk-size",
            "256KiB",
            "--checkpoint-interval",
            "256KiB",
        ],
    );
    let (exit, _) = apply_watching(d, &args, |n| {
        if n == 8 {
            nginx.stop();
            return true;
        }
        false
    });
    assert_eq!(exit, 9);
    assert_not_bootable(d, "server killed");
    publish(&s, "v12.fwi", "u.fwi");
    nginx.set_limit_rate(None);
    nginx.restart().unwrap();
    let out = fwpack(&args, d);
    match code(&out) {
        // Restarted cleanly: all of v12, none of v11.
        0 => {
            let r = result_of(&out);
            assert!(r["resumed_from"].is_null(), "{}", show(&out));
            assert!(
                cmp_range(
                    &d.join("rootfs12.img"),
                    0,
                    &d.join("disk.img"),
                    SYS_B,
                    ROOTFS_LEN as u64
                ),
                "slot B is not exactly v12's rootfs"
            );
            let st = status(d);
            assert_eq!(st["slots"]["B"]["version"], 12);
            assert_eq!(st["pending"], "B");
        }
        // Refused: nothing committed.
        9 => assert_not_bootable(d, "replaced image refused"),
        c => panic!("exit {c}: {}", show(&out)),
    }
}

#[test]
fn image_replaced_mid_run_with_the_same_etag_is_never_committed() {
    // A server that swaps the file under a transfer and keeps the ETag
    // (If-Range cannot tell): the client must notice from the content.
    let tmp = workdir("apply-http-same-etag");
    let d = tmp.path();
    std::fs::write(d.join("rootfs.img"), payload(1, ROOTFS_LEN)).unwrap();
    std::fs::write(d.join("rootfs12.img"), payload(7, ROOTFS_LEN)).unwrap();
    std::fs::write(d.join("kernel.img"), payload(2, KERNEL_LEN)).unwrap();
    stamp64k(d, "v11.fwi", 11, "rootfs.img", "kernel.img");
    stamp64k(d, "v12.fwi", 12, "rootfs12.img", "kernel.img");
    init_disk(d);
    let a = std::fs::read(d.join("v11.fwi")).unwrap();
    let b = std::fs::read(d.join("v12.fwi")).unwrap();
    let server = FaultServer::start(Fault::Sequence(vec![
        Served {
            cut_after: Some(4 * MIB),
            ..Served::new(a, "same")
        },
        Served::new(b, "same"),
    ]))
    .unwrap();
    let url = server.url("u.fwi");
    let out = fwpack(&apply_args(&url, &["--seed", "none", "--timeout", "5"]), d);
    let c = code(&out);
    assert!(
        c == 9 || c == 6,
        "expected the source (9) or integrity (6) error, got {c}: {}",
        show(&out)
    );
    assert_not_bootable(d, "image swapped under one ETag");
    assert!(server.requests().len() >= 2, "{:?}", server.requests());
}

#[test]
fn delta_fetches_only_the_changed_chunks() {
    let Some(s) = setup("apply-http-delta") else {
        return;
    };
    let d = &s.dir;
    // v11 into B, confirmed: B is the active, complete seed.
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
    ok(fwpack(&["mark-good", "--target", "disk.img"], d));
    // v12: about 1 % of the rootfs's chunks changed (2 of 192), one byte
    // each, far apart so no request can cover both.
    let mut rootfs = std::fs::read(d.join("rootfs.img")).unwrap();
    let changed = [37u64, 150];
    for c in changed {
        rootfs[(c * CHUNK + 1234) as usize] ^= 0x5a;
    }
    std::fs::write(d.join("rootfs12.img"), &rootfs).unwrap();
    stamp64k(d, "v12.fwi", 12, "rootfs12.img", "kernel.img");
    publish(&s, "v12.fwi", "u.fwi");
    let nginx = Nginx::start(&s.www).unwrap();
    let url = nginx.url("u.fwi");
    // Default seed: the active slot (B); the update goes to A.
    let out = ok(fwpack(&apply_args(&url, &[]), d));
    let r = result_of(&out);
    assert_eq!(r["slot"], "A", "{}", show(&out));
    let info = inspect(d, "v12.fwi");
    let head_end = info["index_range"][1].as_u64().unwrap();
    let changed_bytes = changed.len() as u64 * CHUNK;
    let sent = nginx.body_bytes_for("/u.fwi");
    let log = nginx.access_log();
    // Each byte at most once, by nginx's account: no window over bytes a
    // chunk stream fetched, no stream over a window's.
    let mut ranges: Vec<(u64, u64)> = log
        .iter()
        .map(|e| {
            let start = e.range_starts().first().copied().unwrap_or(0);
            (start, start + e.body_bytes_sent)
        })
        .collect();
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "bytes fetched twice: {ranges:?}");
    }
    let read = r["image_bytes_read"].as_u64().unwrap();
    assert!(
        read <= sent && sent <= read + HEAD_WINDOW,
        "{read} {sent}: {log:?}"
    );
    // At least the changed chunks, at most those, the head window and a
    // little slack (coalescing, part headers).
    assert!(sent >= changed_bytes, "fetched {sent} < {changed_bytes}");
    assert!(
        sent <= changed_bytes + head_end.max(HEAD_WINDOW) + 16 * 1024,
        "fetched {sent} bytes for {changed_bytes} changed (head {head_end}): {log:?}"
    );
    // Coalesced into few requests, not one per chunk.
    assert!(log.len() <= 4, "{log:?}");
    let raw = (ROOTFS_LEN + KERNEL_LEN) as u64;
    let from_seed = r["bytes_from_seed"].as_u64().unwrap();
    assert!(from_seed >= raw - changed_bytes - CHUNK, "{from_seed}");
    assert!(cmp_range(
        &d.join("rootfs12.img"),
        0,
        &d.join("disk.img"),
        SYS_A,
        ROOTFS_LEN as u64
    ));
    let st = status(d);
    assert_eq!(st["pending"], "A");
    assert_eq!(st["slots"]["A"]["version"], 12);
}

/// `fwpack` that must end by itself within a minute (all these runs
/// have --timeout 2 and at most one retry): a client that loops forever
/// on a broken server fails the test instead of hanging it.
fn fwpack_bounded(args: &[&str], dir: &Path, what: &str) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if rx.recv_timeout(std::time::Duration::from_secs(60)).is_err() {
            // Still running: SIGKILL it, by pid (ours, a direct child).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            return true;
        }
        false
    });
    let out = child.wait_with_output().unwrap();
    let _ = tx.send(());
    let killed = watchdog.join().unwrap();
    assert!(
        !killed,
        "{what}: fwpack did not give up within 60 s (--retries 1 --timeout 2): {}",
        show(&out)
    );
    out
}

/// Each fault: exit 9, a message naming the problem, slot B never
/// bootable. `--retries 1 --timeout 2` keeps the stalls short.
#[test]
fn broken_servers_give_clear_errors_and_no_bootable_slot() {
    broken_servers(false);
}

/// Kept apart so that a client looping forever on it (found: it retries
/// without end) does not hide the other faults' results.
#[test]
fn truncating_server_without_range_support_gives_up() {
    broken_servers(true);
}

fn broken_servers(no_ranges: bool) {
    let tmp = workdir("apply-http-faults");
    let d = tmp.path();
    std::fs::write(d.join("rootfs.img"), payload(1, ROOTFS_LEN)).unwrap();
    std::fs::write(d.join("kernel.img"), payload(2, KERNEL_LEN)).unwrap();
    stamp64k(d, "v11.fwi", 11, "rootfs.img", "kernel.img");
    init_disk(d);
    let image = std::fs::read(d.join("v11.fwi")).unwrap();
    let len = image.len();
    let no_range_case: Vec<(&str, Fault, &[&str])> = vec![(
        "truncated body, no range support",
        Fault::TruncatedNoRanges {
            body: image.clone(),
            send: len / 2,
        },
        &[
            "truncated",
            "short",
            "closed",
            "disconnected",
            "range",
            "end",
        ],
    )];
    let cases: Vec<(&str, Fault, &[&str])> = vec![
        ("404", Fault::NotFound, &["404"]),
        ("redirect loop", Fault::RedirectLoop, &["redirect"]),
        (
            "truncated body",
            Fault::Truncated {
                body: image.clone(),
                send: len / 2,
            },
            &[
                "truncated",
                "short",
                "closed",
                "disconnected",
                "header says",
                "end",
            ],
        ),
        (
            "Content-Length too small",
            Fault::WrongLength {
                body: image.clone(),
                declared: (len / 2) as u64,
            },
            &[
                "length",
                "truncated",
                "short",
                "disconnected",
                "header says",
                "end",
            ],
        ),
        (
            "Content-Length too large",
            Fault::WrongLength {
                body: image.clone(),
                declared: len as u64 + 4096,
            },
            &[
                "length",
                "truncated",
                "short",
                "closed",
                "disconnected",
                "header says",
                "end",
            ],
        ),
        (
            "stall after headers",
            Fault::StallAfterHeaders {
                body: image.clone(),
            },
            &["timed out", "timeout"],
        ),
        ("silent", Fault::Silent, &["timed out", "timeout"]),
    ];
    let cases = if no_ranges { no_range_case } else { cases };
    let pristine = std::fs::read(d.join("disk.img")).unwrap();
    for (what, fault, says) in cases {
        eprintln!("fault: {what}");
        std::fs::write(d.join("disk.img"), &pristine).unwrap();
        let server = FaultServer::start(fault).unwrap();
        let url = server.url("u.fwi");
        let out = fwpack_bounded(
            &[
                "apply",
                &url,
                "--target",
                "disk.img",
                "--key",
                "k.pub.pem",
                "--seed",
                "none",
                "--retries",
                "1",
                "--timeout",
                "2",
            ],
            d,
            what,
        );
        assert_eq!(code(&out), 9, "{what}: {}", show(&out));
        let err = stderr(&out).to_lowercase();
        assert!(
            says.iter().any(|w| err.contains(w)),
            "{what}: the message names none of {says:?}: {}",
            show(&out)
        );
        assert_not_bootable(d, what);
        // The --json error line carries the same exit code.
        let out = fwpack_bounded(
            &apply_args(
                &url,
                &["--seed", "none", "--retries", "0", "--timeout", "2"],
            ),
            d,
            what,
        );
        let last = json_lines(&out).pop().unwrap();
        assert_eq!(
            (last["event"].as_str(), last["exit_code"].as_i64()),
            (Some("error"), Some(9)),
            "{what}: {}",
            show(&out)
        );
        assert_not_bootable(d, what);
    }
    if no_ranges {
        return;
    }
    // Nothing listening at all (a port that was just free).
    let port = testkit::http::free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}/u.fwi");
    let out = fwpack(&apply_args(&url, &["--retries", "1", "--timeout", "2"]), d);
    assert_eq!(code(&out), 9, "connection refused: {}", show(&out));
    assert_not_bootable(d, "connection refused");
}

/// A sparse rootfs (zero chunks first, between and last) and an all-zero
/// kernel whose last chunk is short, in `d`.
fn sparse_payloads(d: &Path) -> Vec<u8> {
    let c = CHUNK as usize;
    let mut rootfs = payload(3, ROOTFS_LEN);
    rootfs[..3 * c].fill(0);
    rootfs[40 * c..100 * c].fill(0);
    rootfs[ROOTFS_LEN - 2 * c..].fill(0);
    std::fs::write(d.join("sparse.img"), &rootfs).unwrap();
    std::fs::write(d.join("zero-kernel.img"), vec![0u8; KERNEL_LEN]).unwrap();
    rootfs
}

/// Raw bytes of [`sparse_payloads`] in zero chunks.
const SPARSE_ZERO_BYTES: u64 = 65 * CHUNK + KERNEL_LEN as u64;

fn stamp_sparse(d: &Path, out: &str, version: u64, comp: &str, rootfs: &str, extra: &[&str]) {
    let mut args = vec!["--compress", comp];
    args.extend_from_slice(extra);
    stamp64k_with(d, out, version, (rootfs, "zero-kernel.img"), &args);
}

fn scribble(d: &Path, at: u64, len: usize) {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(d.join("disk.img"))
        .unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&vec![0xa5u8; len]).unwrap();
}

/// Zero chunks (docs/FORMAT.md, "Zero chunks"), gzip and zstd: stored
/// empty by default and never fetched; over HTTP with `--verify-writes`,
/// from stdin with `--minimize-writes --verify-writes` over a complete
/// slot whose zero regions were overwritten, and as a delta whose zero chunks are neither fetched nor
/// copied from the seed. `--no-zero-chunks` leaves incompat bit 2 clear.
#[test]
fn zero_chunk_images_apply_over_http_from_stdin_and_as_delta() {
    let Some(s) = setup("apply-http-zero") else {
        return;
    };
    let d = &s.dir;
    let mut rootfs = sparse_payloads(d);
    let nginx = Nginx::start(&s.www).unwrap();
    let url = nginx.url("u.fwi");
    for (n, comp) in ["gzip", "zstd"].into_iter().enumerate() {
        let v = 20 + n as u64;
        let name = format!("z{v}.fwi");
        stamp_sparse(d, &name, v, comp, "sparse.img", &[]);
        let info = inspect(d, &name);
        assert_eq!(info["incompat_flags"].as_u64().unwrap() & 4, 4, "{info}");
        assert_eq!(info["segments"][1]["stored_len"], 0, "{info}");
        assert_eq!(info["segments"][0]["zero_chunks"], 65, "{info}");
        assert_eq!(info["segments"][1]["zero_chunks"], 5, "{info}");
        let image_len = info["image_len"].as_u64().unwrap();
        assert_eq!(info["segments"][1]["data_offset"], image_len, "{info}");
        let old = format!("old{v}.fwi");
        stamp_sparse(d, &old, v, comp, "sparse.img", &["--no-zero-chunks"]);
        let o = inspect(d, &old);
        assert_eq!(o["incompat_flags"].as_u64().unwrap() & 4, 0, "{o}");
        assert_eq!(o["segments"][0]["zero_chunks"], 0, "{o}");
        assert!(o["image_len"].as_u64().unwrap() > image_len, "{o}");

        publish(&s, &name, "u.fwi");
        let before = nginx.access_log();
        let out = ok(fwpack(
            &apply_args(&url, &["--seed", "none", "--verify-writes"]),
            d,
        ));
        let r = result_of(&out);
        assert_eq!(r["slot"], "B", "{comp}: {}", show(&out));
        let sent =
            nginx.body_bytes_for("/u.fwi") - before.iter().map(|e| e.body_bytes_sent).sum::<u64>();
        let read = r["image_bytes_read"].as_u64().unwrap();
        assert!(read <= image_len, "{comp}: read {read} of {image_len}");
        assert!(sent <= image_len + HEAD_WINDOW, "{comp}: sent {sent}");
        slot_holds(d, (SYS_B, BOOT_B), "sparse.img", "zero-kernel.img");

        // Zero regions of the complete slot overwritten: --verify-writes
        // finds the first bad chunk and rewrites from there, and
        // --minimize-writes (which compares, then writes) leaves zeros.
        scribble(d, SYS_B + 50 * CHUNK + 100, 3000);
        scribble(d, BOOT_B + KERNEL_LEN as u64 - 10, 10);
        let out = apply_stdin(
            d,
            &name,
            &["--minimize-writes", "--verify-writes", "--seed", "none"],
        );
        assert!(out.status.success(), "{comp}: {}", show(&out));
        assert_eq!(result_of(&out)["slot"], "B");
        slot_holds(d, (SYS_B, BOOT_B), "sparse.img", "zero-kernel.img");
    }

    // B confirmed; then a delta to A: one changed chunk with data and one
    // zero chunk that now has data. Zero chunks are written as zeros:
    // never fetched, never copied from the seed.
    ok(fwpack(&["mark-good", "--target", "disk.img"], d));
    rootfs[(10 * CHUNK + 7) as usize] ^= 0x5a;
    rootfs[(60 * CHUNK + 9) as usize] = 1;
    std::fs::write(d.join("sparse2.img"), &rootfs).unwrap();
    stamp_sparse(d, "z30.fwi", 30, "zstd", "sparse2.img", &[]);
    publish(&s, "z30.fwi", "u.fwi");
    let before: u64 = nginx.access_log().iter().map(|e| e.body_bytes_sent).sum();
    let out = ok(fwpack(&apply_args(&url, &[]), d));
    let r = result_of(&out);
    assert_eq!(r["slot"], "A", "{}", show(&out));
    let sent = nginx.body_bytes_for("/u.fwi") - before;
    let head_end = inspect(d, "z30.fwi")["index_range"][1].as_u64().unwrap();
    assert!(
        sent <= 2 * CHUNK + head_end.max(HEAD_WINDOW) + 16 * 1024,
        "fetched {sent} bytes for 2 changed chunks"
    );
    let raw = (ROOTFS_LEN + KERNEL_LEN) as u64;
    let from_seed = r["bytes_from_seed"].as_u64().unwrap();
    let zero = SPARSE_ZERO_BYTES - CHUNK;
    assert!(from_seed <= raw - zero, "{from_seed}: zero chunks copied");
    assert!(from_seed >= raw - zero - 2 * CHUNK, "{from_seed}");
    slot_holds(d, (SYS_A, 41 * MIB), "sparse2.img", "zero-kernel.img");
}
