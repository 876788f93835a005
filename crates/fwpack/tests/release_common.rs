//! Shared by the release_* tests (included with `#[path]`); as a test
//! target of its own it holds no tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn workspace() -> PathBuf {
    testkit::workspace_root()
}

pub fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

pub fn ok(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The test virtualenv of `cargo xtask deps` (pinned PyPI packages from
/// buildroot-external/utils/requirements.txt), made here too when a
/// developer runs `cargo test` without it. `None` (with the reason
/// printed) only when this machine has no python3 at all.
pub fn venv() -> Option<PathBuf> {
    let requirements = workspace().join("buildroot-external/utils/requirements.txt");
    let pins = std::fs::read_to_string(&requirements).expect("requirements.txt");
    let venv = testkit::cache_dir().join("venv");
    let stamp = venv.join(".fwpack-requirements");
    let _lock = testkit::CacheLock::acquire("venv").expect("cache lock");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(pins.as_str()) {
        return Some(venv);
    }
    if !testkit::tools::require("python3") {
        return None;
    }
    ok(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv));
    ok(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(["--only-binary", ":all:", "-r"])
        .arg(&requirements));
    std::fs::write(&stamp, pins).expect("write venv stamp");
    Some(venv)
}

pub fn fwpack(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fwpack"));
    cmd.current_dir(dir).env("SOURCE_DATE_EPOCH", "1700000000");
    cmd
}
