//! Shared by the apply_* tests (included with `#[path]`); as a test target
//! of its own it holds no tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const MIB: u64 = 1 << 20;

pub fn fwpack(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run fwpack")
}

pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn ok(out: Output) -> Output {
    assert!(out.status.success(), "fwpack failed: {}", show(&out));
    out
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON lines of an `--json` run.
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub fn result_of(out: &Output) -> serde_json::Value {
    json_lines(out)
        .into_iter()
        .find(|v| v["event"] == "result")
        .unwrap_or_else(|| panic!("no result line: {}", show(out)))
}

/// Deterministic payload bytes.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A work directory on the target directory's filesystem (a real disk
/// filesystem, so O_DIRECT is exercised; /tmp may be tmpfs elsewhere).
pub fn workdir(name: &str) -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// `fwpack keygen` + a stamped, signed image of `segs` (`NAME=FILE,target=T`).
pub fn stamp(dir: &Path, out: &str, board: &str, version: u64, segs: &[&str]) {
    if !dir.join("k.pem").exists() {
        ok(fwpack(&["keygen", "-o", "k.pem"], dir));
    }
    let v = version.to_string();
    let mut args = vec![
        "stamp",
        "--board",
        board,
        "--version",
        &v,
        "-o",
        out,
        "--key",
        "k.pem",
    ];
    for s in segs {
        args.push("-s");
        args.push(s);
    }
    ok(fwpack(&args, dir));
}

/// GNU cmp: do `len` bytes of `a` at `a_off` equal those of `b` at `b_off`?
pub fn cmp_range(a: &Path, a_off: u64, b: &Path, b_off: u64, len: u64) -> bool {
    let out = Command::new("cmp")
        .arg(format!("--ignore-initial={a_off}:{b_off}"))
        .arg(format!("--bytes={len}"))
        .arg(a)
        .arg(b)
        .output()
        .expect("cmp (diffutils) is installed by `cargo xtask deps`");
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("cmp failed: {}", show(&out)),
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test paths")
}

pub fn file_bytes(p: &PathBuf) -> Vec<u8> {
    std::fs::read(p).unwrap()
}
