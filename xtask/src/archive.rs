//! The release archive: what a user downloads, unpacks anywhere and runs
//! without our source tree or a Rust toolchain (docs/RELEASE.md, "What the
//! archive holds"). One per host arch:
//!
//! ```text
//! fwpack-VERSION-TRIPLE/
//!   bin/fwpack                               static musl
//!   lib/fwpack/<board triple>/fwpack-updater static, one per board target
//!     (the slot's build), and fwpack-updater-bootstrap beside it (/init)
//!   share/man/man1/fwpack*.1
//!   share/bash-completion/completions/fwpack
//!   share/zsh/site-functions/_fwpack
//!   share/fish/vendor_completions.d/fwpack.fish
//!   LICENSE-APACHE LICENSE-MIT README.md
//!   SHA256SUMS [SHA256SUMS.sig]              every file above
//! ```
//!
//! `fwpack build` finds `lib/fwpack/<triple>/fwpack-updater` relative to
//! its own path (crates/fwpack/src/installed.rs): the layout is the
//! contract between the two.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::fsx;

/// A host fwpack runs on.
#[derive(Debug)]
pub struct Host {
    pub triple: &'static str,
    pub arch: &'static str,
}

pub static HOSTS: [Host; 2] = [
    Host {
        triple: "x86_64-unknown-linux-musl",
        arch: "x86_64",
    },
    Host {
        triple: "aarch64-unknown-linux-musl",
        arch: "aarch64",
    },
];

/// A shipped updater: one binary per Rust target, checked against the
/// policy of every board that uses it.
pub struct Updater {
    pub triple: String,
    /// The slot's build (network client), shipped as `fwpack-updater`.
    pub path: PathBuf,
    /// The bootstrap's build (no network client), shipped beside it as
    /// `fwpack-updater-bootstrap`; `fwpack build` puts it in /init.
    pub bootstrap: PathBuf,
    pub boards: Vec<board::Board>,
}

/// How SHA256SUMS get signed (docs/RELEASE.md "Signing").
pub struct Signing {
    pub key: Option<PathBuf>,
    pub signer_cmd: Option<String>,
    pub pubkey: Option<PathBuf>,
}

/// A fwpack binary that runs on this machine, natively or under
/// qemu-user.
pub struct Runner {
    pub bin: PathBuf,
}

/// The static fwpack for `host`, built with the release profile.
pub fn build_fwpack(sh: &Shell, host: &Host) -> Result<PathBuf> {
    let triple = host.triple;
    let mut build = cmd!(
        sh,
        "cargo build --release --locked -p fwpack --bin fwpack --target {triple}"
    )
    .env("RUSTFLAGS", "-C target-feature=+crt-static");
    if host.arch == "x86_64" {
        // ring's and zstd's C code, against musl's headers (Debian: musl-tools).
        if cmd!(sh, "which musl-gcc").quiet().read().is_err() {
            bail!("musl-gcc not found: install musl-tools (ring's and zstd's C code is built for musl with it)");
        }
        build = build.env("CC_x86_64_unknown_linux_musl", "musl-gcc");
    }
    if host.arch == "aarch64" {
        // No aarch64 musl C toolchain is needed: Rust's own linker links
        // the static binary, and ring's and zstd's C code is compiled by
        // the aarch64 glibc cross gcc: it only includes freestanding
        // headers and string.h, which agree with musl's.
        build = build
            .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld")
            .env("CC_aarch64_unknown_linux_musl", "aarch64-linux-gnu-gcc")
            .env("AR_aarch64_unknown_linux_musl", "aarch64-linux-gnu-ar");
    }
    build.run()?;
    let bin = crate::target_dir().join(triple).join("release/fwpack");
    if !bin.is_file() {
        bail!(
            "cargo built fwpack for {triple}, but {} is missing",
            bin.display()
        );
    }
    Ok(bin)
}

/// The updater of every target a board in `configs/` names, built exactly
/// as `fwpack build --build-updater` builds it (one command, shared with
/// the pipeline, so cargo's cache serves both).
pub fn build_updaters(root: &Path) -> Result<Vec<Updater>> {
    let configs = board::Configs::Dir(root.join("configs"));
    let mut out: Vec<Updater> = Vec::new();
    for name in configs.list()? {
        let b = configs.find(&name)?;
        match out.iter_mut().find(|u| u.triple == b.updater.rust_target) {
            Some(u) => {
                let first = &u.boards[0].updater;
                if (first.linker.as_ref(), &first.rustflags, first.tls)
                    != (
                        b.updater.linker.as_ref(),
                        &b.updater.rustflags,
                        b.updater.tls,
                    )
                {
                    bail!(
                        "boards {} and {} build the {} updater differently (linker, rustflags, tls): one shipped binary cannot serve both",
                        u.boards[0].name,
                        b.name,
                        u.triple
                    );
                }
                u.boards.push(b);
            }
            None => out.push(Updater {
                triple: b.updater.rust_target.clone(),
                path: PathBuf::new(),
                bootstrap: PathBuf::new(),
                boards: vec![b],
            }),
        }
    }
    for u in &mut out {
        // The bootstrap first: both flavors leave cargo's one output path,
        // so each is copied away before the next build.
        for flavor in [pipeline::Flavor::Bootstrap, pipeline::Flavor::Slot] {
            let (mut command, bin, _) = pipeline::updater_cargo_command(&u.boards[0], root, flavor);
            let st = command
                .status()
                .with_context(|| format!("running cargo to build the {} updater", u.triple))?;
            if !st.success() {
                bail!(
                    "building fwpack-updater ({}) for {} failed ({st}); is the target installed (`cargo xtask deps`)?",
                    flavor.name(),
                    u.triple
                );
            }
            if !bin.is_file() {
                bail!(
                    "cargo built the {} updater, but {} is missing",
                    u.triple,
                    bin.display()
                );
            }
            let copy = bin.with_file_name(format!("fwpack-updater-{}", flavor.name()));
            fsx::copy(&bin, &copy)?;
            match flavor {
                pipeline::Flavor::Bootstrap => u.bootstrap = copy,
                pipeline::Flavor::Slot => u.path = copy,
            }
        }
    }
    Ok(out)
}

/// `fwpack check-elf` with the policy of each board using the updater,
/// the same checks `fwpack build` makes.
pub fn check_updater(sh: &Shell, runner: &Runner, u: &Updater) -> Result<()> {
    let host = &runner.bin;
    for file in [&u.path, &u.bootstrap] {
        check_file(sh, host, u, file)?;
    }
    Ok(())
}

fn check_file(sh: &Shell, host: &Path, u: &Updater, file: &Path) -> Result<()> {
    for b in &u.boards {
        let machine = &b.updater.machine;
        let budget = b.updater.size_budget.to_string();
        let mut args = vec!["--machine", machine, "--budget", &budget];
        if b.updater.require_stripped {
            args.push("--require-stripped");
        }
        let said = cmd!(sh, "{host} check-elf {args...} {file}")
            .read()
            .with_context(|| format!("the {} updater fails board {}'s policy", u.triple, b.name))?;
        println!("  {} updater, board {}: {}", u.triple, b.name, said.trim());
    }
    Ok(())
}

/// (program, leading arguments) that run `bin` of `arch` here.
pub fn run_as(bin: &Path, arch: &str) -> Result<(PathBuf, Vec<PathBuf>)> {
    if arch == std::env::consts::ARCH {
        return Ok((bin.to_path_buf(), Vec::new()));
    }
    let qemu = format!("qemu-{arch}-static");
    if which(&qemu).is_none() {
        bail!("{qemu} not found: install qemu-user-static to run the {arch} binary");
    }
    Ok((qemu.into(), vec![bin.to_path_buf()]))
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(prog))
            .find(|c| c.is_file())
    })
}

/// A built fwpack for this machine's arch.
pub fn runner(built: &[(&Host, PathBuf)]) -> Result<Runner> {
    built
        .iter()
        .find(|(h, _)| h.arch == std::env::consts::ARCH)
        .map(|(_, b)| Runner { bin: b.clone() })
        .with_context(|| {
            format!(
                "none of the built fwpack binaries runs on this {} machine: include --arch {}",
                std::env::consts::ARCH,
                std::env::consts::ARCH
            )
        })
}

/// The directory name inside the archive and the archive's stem.
pub fn stem(version: &str, host: &Host) -> String {
    format!("fwpack-{version}-{}", host.triple)
}

/// Writes `dir/fwpack-VERSION-TRIPLE.tar.gz` and returns its path.
#[allow(clippy::too_many_arguments)]
pub fn assemble(
    sh: &Shell,
    root: &Path,
    version: &str,
    host: &Host,
    fwpack: &Path,
    runner: &Runner,
    updaters: &[Updater],
    signing: &Signing,
    dir: &Path,
) -> Result<PathBuf> {
    let stem = stem(version, host);
    let staging = crate::target_dir().join("fwpack-release/staging");
    let _ = std::fs::remove_dir_all(&staging);
    let top = staging.join(&stem);
    let install = |from: &Path, rel: &str, mode: u32| -> Result<()> {
        let to = top.join(rel);
        if let Some(parent) = to.parent() {
            fsx::create_dir_all(parent)?;
        }
        fsx::copy(from, &to)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", to.display()))
    };
    install(fwpack, "bin/fwpack", 0o755)?;
    for u in updaters {
        install(
            &u.path,
            &format!("lib/fwpack/{}/fwpack-updater", u.triple),
            0o755,
        )?;
        install(
            &u.bootstrap,
            &format!("lib/fwpack/{}/{}", u.triple, pipeline::SHIPPED_BOOTSTRAP),
            0o755,
        )?;
    }
    for f in ["LICENSE-APACHE", "LICENSE-MIT", "README.md"] {
        install(&root.join(f), f, 0o644)?;
    }
    let host_bin = &runner.bin;
    let man = top.join("share/man/man1");
    cmd!(sh, "{host_bin} man -o {man}").quiet().run()?;
    for (shell, rel) in [
        ("bash", "share/bash-completion/completions/fwpack"),
        ("zsh", "share/zsh/site-functions/_fwpack"),
        ("fish", "share/fish/vendor_completions.d/fwpack.fish"),
    ] {
        let text = cmd!(sh, "{host_bin} completions {shell}").quiet().read()?;
        let to = top.join(rel);
        if let Some(parent) = to.parent() {
            fsx::create_dir_all(parent)?;
        }
        fsx::write(&to, text + "\n")?;
    }
    // SHA256SUMS of every file, relative to the top directory.
    let mut files: Vec<String> = walk(&top)?
        .into_iter()
        .filter_map(|p| p.strip_prefix(&top).ok().map(|r| r.display().to_string()))
        .collect();
    files.sort();
    let sums = {
        let _cd = sh.push_dir(&top);
        cmd!(sh, "sha256sum {files...}").quiet().read()? + "\n"
    };
    let sums_path = top.join("SHA256SUMS");
    fsx::write(&sums_path, sums)?;
    sign(sh, &sums_path, signing)?;
    // Reproducible: sorted names, no owners, one timestamp (the commit's,
    // or SOURCE_DATE_EPOCH), gzip without a name or time.
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(e) if !e.is_empty() => e,
        _ => cmd!(sh, "git log -1 --format=%ct")
            .quiet()
            .read()
            .unwrap_or_else(|_| "0".into()),
    };
    let mtime = format!("--mtime=@{epoch}");
    let tar_path = dir.join(format!("{stem}.tar"));
    cmd!(
        sh,
        "tar --sort=name --owner=0 --group=0 --numeric-owner {mtime} --format=gnu -cf {tar_path} -C {staging} {stem}"
    )
    .run()?;
    let _ = std::fs::remove_file(dir.join(format!("{stem}.tar.gz")));
    cmd!(sh, "gzip -9n {tar_path}").run()?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(dir.join(format!("{stem}.tar.gz")))
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for e in rd {
        let p = e
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

/// Signs `sums` into `sums.sig` (64 raw bytes, Ed25519) and checks the
/// signature as a user will; returns the public key it was checked with,
/// or `None` when no signing was asked for.
pub fn sign(sh: &Shell, sums: &Path, s: &Signing) -> Result<Option<PathBuf>> {
    let sig = sums.with_extension("sig");
    let pubkey = match (&s.key, &s.signer_cmd) {
        (Some(key), None) => {
            cmd!(
                sh,
                "openssl pkeyutl -sign -rawin -inkey {key} -in {sums} -out {sig}"
            )
            .quiet()
            .run()?;
            match &s.pubkey {
                Some(p) => p.clone(),
                None => {
                    let derived = crate::target_dir().join("fwpack-release/release.pub.pem");
                    if let Some(parent) = derived.parent() {
                        fsx::create_dir_all(parent)?;
                    }
                    cmd!(sh, "openssl pkey -in {key} -pubout -out {derived}")
                        .quiet()
                        .run()?;
                    derived
                }
            }
        }
        (None, Some(signer)) => {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(signer)
                .env("FWPACK_SIGN_INPUT", sums)
                .stdin(fsx::open(sums)?)
                .output()
                .context("running --signer-cmd")?;
            if !out.status.success() {
                bail!(
                    "--signer-cmd failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let raw = if out.stdout.len() == 64 {
                out.stdout
            } else {
                crate::release::hex_decode(String::from_utf8_lossy(&out.stdout).trim())
                    .context("the signer printed neither 64 raw bytes nor 128 hex digits")?
            };
            fsx::write(&sig, raw)?;
            s.pubkey
                .clone()
                .context("--signer-cmd needs --release-pubkey")?
        }
        _ => return Ok(None),
    };
    cmd!(
        sh,
        "openssl pkeyutl -verify -pubin -inkey {pubkey} -rawin -in {sums} -sigfile {sig}"
    )
    .quiet()
    .run()
    .with_context(|| {
        format!(
            "the signature of {} does not verify with {}",
            sums.display(),
            pubkey.display()
        )
    })?;
    Ok(Some(pubkey))
}
