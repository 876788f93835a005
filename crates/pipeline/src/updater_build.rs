//! Cross-compiling the device updater for a board.

use std::path::{Path, PathBuf};
use std::process::Command;

use board::Board;

use crate::{Error, Event};

/// The cargo command that builds `fwpack-updater` for the board's target
/// from the workspace at `workspace`, and the binary it leaves. `cargo
/// xtask release` builds the shipped updaters with this same command, so
/// the two share cargo's cache.
pub fn cargo_command(board: &Board, workspace: &Path) -> (Command, PathBuf) {
    let triple = &board.updater.rust_target;
    let env_triple = triple.to_uppercase().replace('-', "_");
    let mut flags = vec!["-C".to_string(), "target-feature=+crt-static".to_string()];
    flags.extend(board.updater.rustflags.iter().cloned());
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "--locked",
            "--profile",
            "device",
            "-p",
            "fwpack-updater",
        ])
        .args(["--bin", "fwpack-updater", "--target", triple])
        .env(
            format!("CARGO_TARGET_{env_triple}_RUSTFLAGS"),
            flags.join(" "),
        );
    if let Some(linker) = &board.updater.linker {
        cmd.env(format!("CARGO_TARGET_{env_triple}_LINKER"), linker);
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let bin = target_dir
        .join(triple)
        .join("device")
        .join("fwpack-updater");
    (cmd, bin)
}

/// Builds `fwpack-updater` for the board's target from the workspace at
/// `workspace` and returns the path of the stripped static binary.
pub fn build(board: &Board, workspace: &Path, on: &mut dyn FnMut(Event)) -> Result<PathBuf, Error> {
    let triple = &board.updater.rust_target;
    ensure_rust_target(triple, on)?;
    let (mut cmd, bin) = cargo_command(board, workspace);
    on(Event::Step {
        step: "updater",
        detail: format!("cargo build --profile device --target {triple}"),
    });
    run(&mut cmd, "cargo build (updater)")?;
    if !bin.is_file() {
        return Err(Error::Tool {
            tool: "cargo build (updater)".into(),
            message: format!("expected {} after a successful build", bin.display()),
        });
    }
    Ok(bin)
}

fn ensure_rust_target(triple: &str, on: &mut dyn FnMut(Event)) -> Result<(), Error> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| Error::Tool {
            tool: "rustup".into(),
            message: e.to_string(),
        })?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == triple)
    {
        return Ok(());
    }
    on(Event::Step {
        step: "updater",
        detail: format!("rustup target add {triple}"),
    });
    run(
        Command::new("rustup").args(["target", "add", triple]),
        "rustup target add",
    )
}

pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<(), Error> {
    let out = cmd.output().map_err(|e| Error::Tool {
        tool: what.into(),
        message: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
    Err(Error::Tool {
        tool: what.into(),
        message: format!(
            "{}:\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ),
    })
}
