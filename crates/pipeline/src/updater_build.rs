//! Cross-compiling the device updater for a board.

use std::path::{Path, PathBuf};
use std::process::Command;

use board::Board;

use crate::{Error, Event};

/// Which of the two device updaters a build makes (docs/ARCHITECTURE.md,
/// "The immutable core").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `/init` of the initramfs (the bootstrap, and a kexec slot's initrd):
    /// without the network client unless the board sets
    /// `updater.bootstrap_net`.
    Bootstrap,
    /// The slot's `/usr/bin/fwpack-updater`: the network client, TLS as
    /// the board says.
    Slot,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Bootstrap => "bootstrap",
            Flavor::Slot => "slot",
        }
    }

    /// Whether this flavor has fwpack-updater's `net` feature on `board`.
    pub fn net(self, board: &Board) -> bool {
        self == Flavor::Slot || board.updater.bootstrap_net
    }
}

/// The cargo command that builds `fwpack-updater` of `flavor` for the
/// board's target from the workspace at `workspace`, the binary it leaves,
/// and a one-line description for the build report. `cargo xtask release`
/// builds the shipped updaters with this same command, so the two share
/// cargo's cache. Both flavors leave the same path: copy it before
/// building the other ([`build`] does, under a lock).
pub fn cargo_command(
    board: &Board,
    workspace: &Path,
    flavor: Flavor,
) -> (Command, PathBuf, String) {
    let net = flavor.net(board);
    let tls = net && board.updater.tls;
    let triple = &board.updater.rust_target;
    let env_triple = triple.to_uppercase().replace('-', "_");
    let mut flags = vec!["-C".to_string(), "target-feature=+crt-static".to_string()];
    flags.extend(board.updater.rustflags.iter().cloned());
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    // The TLS build has its own target directory, so switching a board
    // between the two never rebuilds (or overwrites) the other.
    let target_dir = if tls {
        target_dir.join("tls")
    } else {
        target_dir
    };
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
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            format!("CARGO_TARGET_{env_triple}_RUSTFLAGS"),
            flags.join(" "),
        );
    if let Some(linker) = &board.updater.linker {
        cmd.env(format!("CARGO_TARGET_{env_triple}_LINKER"), linker);
    }
    let mut detail = format!("cargo build --profile device --target {triple}");
    if !net {
        cmd.arg("--no-default-features");
        detail.push_str(" --no-default-features");
    }
    if tls {
        cmd.args(["--features", "tls"]);
        detail.push_str(" --features tls");
        let cc_var = format!("CC_{}", triple.replace('-', "_"));
        if let (None, Some(cc)) = (std::env::var_os(&cc_var), tls_cc(triple)) {
            cmd.env(&cc_var, cc);
            detail.push_str(&format!(" ({cc_var}={cc})"));
        }
    }
    let bin = target_dir
        .join(triple)
        .join("device")
        .join("fwpack-updater");
    (cmd, bin, detail)
}

/// Builds `fwpack-updater` of `flavor` for the board's target from the
/// workspace at `workspace` and returns the path of the stripped static
/// binary: cargo's output copied to `fwpack-updater-<flavor>` beside it,
/// under a lock on the directory, so concurrent builds of the two flavors
/// (parallel `fwpack build`s) never hand out each other's binary.
pub fn build(
    board: &Board,
    workspace: &Path,
    flavor: Flavor,
    on: &mut dyn FnMut(Event),
) -> Result<PathBuf, Error> {
    ensure_rust_target(&board.updater.rust_target, on)?;
    let (mut cmd, bin, detail) = cargo_command(board, workspace, flavor);
    on(Event::Step {
        step: "updater",
        detail,
    });
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let dir = bin.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let lock_path = dir.join(".fwpack-updater.lock");
    let lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    run(&mut cmd, "cargo build (updater)")?;
    if !bin.is_file() {
        return Err(Error::Tool {
            tool: "cargo build (updater)".into(),
            message: format!("expected {} after a successful build", bin.display()),
        });
    }
    let copy = dir.join(format!("fwpack-updater-{}", flavor.name()));
    std::fs::copy(&bin, &copy).map_err(io(&copy))?;
    Ok(copy)
}

/// The C compiler ring is built with for a TLS updater, where the `cc`
/// crate's own guess is not what Debian ships (it would look for
/// `aarch64-linux-musl-gcc`). ring's C needs no libc headers, so the glibc
/// cross gcc builds it for musl. Other targets keep the `cc` default (the
/// `*-linux-gnu-gcc` of a gnu target).
fn tls_cc(triple: &str) -> Option<&'static str> {
    match triple {
        "aarch64-unknown-linux-musl" => Some("aarch64-linux-gnu-gcc"),
        "x86_64-unknown-linux-musl" => Some("musl-gcc"),
        _ => None,
    }
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
