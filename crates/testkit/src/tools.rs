//! Host tools the tests talk to.

use std::path::PathBuf;

/// Full path of `tool` if it is on `PATH` (or in `/usr/sbin`, `/sbin`,
/// which a non-root `PATH` often lacks).
pub fn find(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Whether `tool` exists. When it does not, prints why the calling test is
/// skipping, so a skipped check is never mistaken for a passed one. CI
/// installs every tool (see `xtask/src/deps.rs`), so there this is always true.
pub fn require(tool: &str) -> bool {
    if find(tool).is_some() {
        return true;
    }
    eprintln!(
        "SKIPPED: `{tool}` is not installed on this machine; `cargo xtask deps` installs it (CI always does)"
    );
    false
}

/// Full path of `tool`, for a test that must not skip: CI installs it
/// (`cargo xtask deps`), so its absence is a broken machine, not a reason
/// to pass quietly.
pub fn must(tool: &str) -> PathBuf {
    find(tool).unwrap_or_else(|| {
        panic!("`{tool}` is not installed on this machine; `cargo xtask deps` installs it")
    })
}
