//! `cargo xtask release VERSION`: move every pin of the build-system
//! packages to one commit together, check them, build the static host
//! binaries, and tag. See docs/RELEASE.md ("Cutting a release").
//!
//! The pins are:
//! - Buildroot: `FWPACK_VERSION` in buildroot-external/package/fwpack/fwpack.mk
//!   and every line of fwpack.hash: the licence files, and one source
//!   archive per Buildroot release series given with `--buildroot`. Each
//!   archive hash is computed by that Buildroot itself (`make
//!   fwpack-source`: its git download backend and cargo vendoring
//!   post-process), with a cargo whose vendoring matches the Rust that
//!   Buildroot ships, so the hash is the one its users' downloads produce.
//! - Yocto: `SRCREV`, `PV` and `LIC_FILES_CHKSUM` in
//!   meta-fwpack/recipes-devtools/fwpack/fwpack_git.bb, and fwpack-crates.inc.
//!
//! The pinned commit cannot contain its own hash, so the pins go into a
//! new commit on top of it ("release vX: pin ..."), which is what gets
//! tagged: the tag's code is the pinned commit's code plus pin files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::{archive, fsx};

const HELP: &str = "\
usage: cargo xtask release VERSION [options]

Moves FWPACK_VERSION, fwpack.hash, SRCREV, PV, LIC_FILES_CHKSUM and
fwpack-crates.inc to COMMIT, runs the pin tests, commits the pins and tags
the result vVERSION. VERSION must equal the workspace version in
Cargo.toml at COMMIT (e.g. 0.1.0 or v0.1.0). Needs crates.io (vendoring).

options:
  --commit REV        commit to pin (default HEAD; must be in this repository)
  --buildroot DIR     a Buildroot source tree whose archive hash to add to
                      fwpack.hash; repeat for each supported release series
  --cargo PATH        a cargo to consider for Buildroot's vendoring step
                      (repeatable); rustup toolchains and `cargo` on PATH
                      are considered too
  --tar PATH          GNU tar 1.35 or later for Buildroot (its archives are
                      tar 1.35's; Debian 12 ships 1.34, and Buildroot would
                      otherwise build host-tar, downloading it from GNU)
  --artifacts DIR     also write the release archives into DIR, one per
                      host arch: fwpack-VERSION-TRIPLE.tar.gz holding the
                      static fwpack, the static fwpack-updater of every
                      board target (checked with check-elf against each
                      board's policy), man pages, completions, licences
                      and a SHA256SUMS (signed with the options below);
                      DIR/SHA256SUMS lists the archives. The fwpack
                      binaries are checked: static (file, readelf,
                      check-elf), run (--version, keygen/stamp/verify;
                      aarch64 under qemu-aarch64-static)
  --arch ARCH         with --artifacts: only this host arch's archive
                      (x86_64 or aarch64; repeatable; default both)
  --artifacts-only    with --artifacts: build and check the binaries of
                      the work tree only; no pins, no --buildroot, no
                      commit, no tag
  --release-key PEM   sign SHA256SUMS with this Ed25519 key (openssl)
  --signer-cmd CMD    ... or with this command (SHA256SUMS on stdin and in
                      $FWPACK_SIGN_INPUT, raw or hex signature on stdout)
  --release-pubkey PEM  check the SHA256SUMS signature with it (needed with
                      --signer-cmd; default: derived from --release-key)
  --no-test           skip `cargo test -p fwpack --test release_conventions
                      --test release_pin`
  --no-commit         write the pin files, commit and tag nothing
  --no-tag            commit the pins but do not tag
";

struct Opts {
    version: String,
    commit: String,
    buildroots: Vec<PathBuf>,
    cargos: Vec<PathBuf>,
    tar: Option<PathBuf>,
    artifacts: Option<PathBuf>,
    artifacts_only: bool,
    arches: Vec<String>,
    release_key: Option<PathBuf>,
    signer_cmd: Option<String>,
    release_pubkey: Option<PathBuf>,
    test: bool,
    commit_pins: bool,
    tag: bool,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        version: String::new(),
        commit: "HEAD".into(),
        buildroots: Vec::new(),
        cargos: Vec::new(),
        tar: None,
        artifacts: None,
        artifacts_only: false,
        arches: Vec::new(),
        release_key: None,
        signer_cmd: None,
        release_pubkey: None,
        test: true,
        commit_pins: true,
        tag: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value\n\n{HELP}"))
        };
        match a.as_str() {
            "--commit" => o.commit = value()?,
            "--buildroot" => o.buildroots.push(value()?.into()),
            "--cargo" => o.cargos.push(value()?.into()),
            "--tar" => o.tar = Some(value()?.into()),
            "--artifacts" => o.artifacts = Some(value()?.into()),
            "--arch" => o.arches.push(value()?),
            "--release-key" => o.release_key = Some(value()?.into()),
            "--signer-cmd" => o.signer_cmd = Some(value()?),
            "--release-pubkey" => o.release_pubkey = Some(value()?.into()),
            "--artifacts-only" => o.artifacts_only = true,
            "--no-test" => o.test = false,
            "--no-commit" => {
                o.commit_pins = false;
                o.tag = false
            }
            "--no-tag" => o.tag = false,
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            s if s.starts_with('-') => bail!("unknown option {s}\n\n{HELP}"),
            s if o.version.is_empty() => o.version = s.trim_start_matches('v').to_string(),
            s => bail!("unexpected argument {s}\n\n{HELP}"),
        }
    }
    if o.version.is_empty() {
        bail!("which version?\n\n{HELP}");
    }
    if o.artifacts_only && o.artifacts.is_none() {
        bail!("--artifacts-only needs --artifacts DIR\n\n{HELP}");
    }
    if o.buildroots.is_empty() && !o.artifacts_only {
        bail!("give at least one --buildroot DIR: the hashes in fwpack.hash are computed by Buildroot itself\n\n{HELP}");
    }
    if o.release_key.is_some() && o.signer_cmd.is_some() {
        bail!("--release-key and --signer-cmd exclude each other");
    }
    if o.signer_cmd.is_some() && o.release_pubkey.is_none() {
        bail!("--signer-cmd needs --release-pubkey");
    }
    Ok(o)
}

pub const MK: &str = "buildroot-external/package/fwpack/fwpack.mk";
pub const HASH: &str = "buildroot-external/package/fwpack/fwpack.hash";
pub const RECIPE: &str = "meta-fwpack/recipes-devtools/fwpack/fwpack_git.bb";
pub const CRATES_INC: &str = "meta-fwpack/recipes-devtools/fwpack/fwpack-crates.inc";
const LICENSES: [&str; 2] = ["LICENSE-APACHE", "LICENSE-MIT"];

pub fn run(sh: &Shell, root: &Path, args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let started = Instant::now();
    if let (true, Some(dir)) = (o.artifacts_only, &o.artifacts) {
        build_artifacts(sh, root, dir, &o)?;
        println!("done in {:.0} s", started.elapsed().as_secs_f64());
        return Ok(());
    }
    let rev = format!("{}^{{commit}}", o.commit);
    let commit = cmd!(sh, "git rev-parse --verify {rev}")
        .read()
        .with_context(|| format!("{} is not a commit of this repository", o.commit))?;
    let tag = format!("v{}", o.version);
    if o.tag
        && cmd!(sh, "git rev-parse -q --verify refs/tags/{tag}")
            .read()
            .is_ok()
    {
        bail!("tag {tag} exists already");
    }
    if o.commit_pins {
        let dirty = cmd!(sh, "git status --porcelain --untracked-files=no").read()?;
        if !dirty.is_empty() {
            bail!("the work tree has uncommitted changes; commit or stash them first:\n{dirty}");
        }
    }
    let cargo_toml = cmd!(sh, "git show {commit}:Cargo.toml").read()?;
    let declared = workspace_version(&cargo_toml)?;
    if declared != o.version {
        bail!(
            "Cargo.toml at {commit} says version {declared}, not {}: bump it (and Cargo.lock) in a commit first",
            o.version
        );
    }
    println!("release {tag}: pinning {commit}");

    // Which crate builds the device binary at the commit: Buildroot's
    // FWPACK_SUBDIR and Yocto's CARGO_SRC_DIR name it, and Buildroot's
    // download reads FWPACK_SUBDIR, so this goes in before the archives.
    let device = device_crate(sh, &commit)?;
    let mk_path = root.join(MK);
    let mk = fsx::read_to_string(&mk_path)?;
    fsx::write(&mk_path, set_assignment(&mk, "FWPACK_SUBDIR = ", device)?)?;
    let recipe_path = root.join(RECIPE);
    let recipe = fsx::read_to_string(&recipe_path)?;
    fsx::write(
        &recipe_path,
        set_assignment(&recipe, "CARGO_SRC_DIR = ", &format!("\"{device}\""))?,
    )?;
    println!("  device binary crate: {device}");

    // Buildroot's archive hashes, one per release series.
    let mut archives: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for br in &o.buildroots {
        let t = Instant::now();
        let (file, digest, series) = buildroot_archive_hash(sh, root, br, &commit, &o)?;
        println!(
            "  {series}: {file} {digest} ({:.0} s)",
            t.elapsed().as_secs_f64()
        );
        match archives.get_mut(&file) {
            Some((d, list)) if *d == digest => list.push(series),
            Some((d, list)) => bail!(
                "{series} and {} disagree on {file}: {digest} vs {d}",
                list.join(", ")
            ),
            None => {
                archives.insert(file, (digest, vec![series]));
            }
        }
    }

    // Licence files at the commit: sha256 for Buildroot, md5 for Yocto.
    let mut lic_sha = Vec::new();
    let mut lic_md5 = Vec::new();
    for f in LICENSES {
        let bytes = git_blob(sh, &commit, f)?;
        lic_sha.push((f, hex_digest(sh, "sha256sum", &bytes)?));
        lic_md5.push((f, hex_digest(sh, "md5sum", &bytes)?));
    }

    // fwpack.mk and fwpack.hash.
    let mk = fsx::read_to_string(&mk_path)?;
    fsx::write(&mk_path, set_assignment(&mk, "FWPACK_VERSION = ", &commit)?)?;
    let mut hash = String::from(
        "# Written by `cargo xtask release` (docs/RELEASE.md): each source archive\n\
         # hash was computed by the Buildroot release named above it, running\n\
         # its own download and cargo vendoring on FWPACK_VERSION.\n",
    );
    for (f, d) in &lic_sha {
        hash.push_str(&format!("sha256  {d}  {f}\n"));
    }
    for (file, (digest, series)) in &archives {
        hash.push_str(&format!("# Buildroot {}\n", series.join(", ")));
        hash.push_str(&format!("sha256  {digest}  {file}\n"));
    }
    fsx::write(&root.join(HASH), hash)?;

    // The Yocto recipe and its crates.
    let mut recipe = fsx::read_to_string(&recipe_path)?;
    recipe = set_assignment(&recipe, "SRCREV = ", &format!("\"{commit}\""))?;
    recipe = set_assignment(&recipe, "PV = ", &format!("\"{}+git\"", o.version))?;
    let lic = lic_md5
        .iter()
        .map(|(f, m)| format!("file://{f};md5={m}"))
        .collect::<Vec<_>>()
        .join(" \\\n                    ");
    recipe = set_assignment(&recipe, "LIC_FILES_CHKSUM = ", &format!("\"{lic}\""))?;
    fsx::write(&recipe_path, recipe)?;
    let script = root.join("meta-fwpack/scripts/fwpack-crates-inc.py");
    let inc = cmd!(sh, "python3 {script} {root} {commit}").read()?;
    fsx::write(&root.join(CRATES_INC), inc + "\n")?;
    println!("  wrote {MK}, {HASH}, {RECIPE}, {CRATES_INC}");
    check_recipes(
        sh,
        &commit,
        &fsx::read_to_string(&mk_path)?,
        &fsx::read_to_string(&recipe_path)?,
    )?;

    if o.test {
        // The pin tests: the hash of this machine's cargo layout against a
        // rebuilt archive, the Yocto checksums, and the pinned commit's
        // fwpack against the work tree's in both directions.
        cmd!(
            sh,
            "cargo test -p fwpack --test release_conventions --test release_pin"
        )
        .run()?;
    }

    if let Some(dir) = &o.artifacts {
        build_artifacts(sh, root, dir, &o)?;
    }

    if o.commit_pins {
        let files = [MK, HASH, RECIPE, CRATES_INC];
        cmd!(sh, "git add {files...}").run()?;
        let short = &commit[..12];
        let msg = format!(
            "release {tag}: pin Buildroot and Yocto to {short}\n\n\
             FWPACK_VERSION, fwpack.hash ({}), SRCREV, PV, LIC_FILES_CHKSUM and\n\
             fwpack-crates.inc, written by `cargo xtask release`.",
            archives
                .values()
                .flat_map(|(_, s)| s.iter().cloned())
                .collect::<Vec<_>>()
                .join(", ")
        );
        cmd!(sh, "git commit -q -m {msg}").run()?;
        if o.tag {
            let msg = format!("fwpack {tag}\n\nBuildroot and Yocto pins: {commit}");
            cmd!(sh, "git tag -a {tag} -m {msg}").run()?;
            println!("tagged {tag}; push it with: git push origin {tag}");
        }
    }
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The crate of the `fwpack-updater` binary at `commit`: its own crate
/// since the PID-1 program left the apply library (after v0.1.0), the
/// library crate before.
fn device_crate(sh: &Shell, commit: &str) -> Result<&'static str> {
    for dir in ["crates/fwpack-updater", "crates/updater"] {
        let Ok(toml) = git_blob(sh, commit, &format!("{dir}/Cargo.toml")) else {
            continue;
        };
        if String::from_utf8_lossy(&toml).contains("fwpack-updater") {
            return Ok(dir);
        }
    }
    bail!("no crate at {commit} builds fwpack-updater (looked in crates/fwpack-updater and crates/updater)")
}

/// The value of `VAR = value` (first line only) in a make or BitBake file.
fn assignment<'a>(text: &'a str, var: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(var)?.trim_start();
        Some(rest.strip_prefix('=')?.trim().trim_matches('"'))
    })
}

/// Keys `CARGO_PROFILE_RELEASE_<KEY>` that cargo reads from the
/// environment (its profile settings).
const PROFILE_KEYS: [&str; 10] = [
    "OPT_LEVEL",
    "DEBUG",
    "SPLIT_DEBUGINFO",
    "STRIP",
    "DEBUG_ASSERTIONS",
    "OVERFLOW_CHECKS",
    "LTO",
    "PANIC",
    "INCREMENTAL",
    "CODEGEN_UNITS",
];

/// What the Buildroot package and the Yocto recipe tell cargo exists at
/// `commit`: the device crate's directory with a `[[bin]]` of the name
/// they build, the host crate with `fwpack`, profile settings cargo knows,
/// and +crt-static for the device binary (a glibc toolchain would link it
/// dynamically otherwise). A pin to a commit where any of this is missing
/// would break the packages' builds.
fn check_recipes(sh: &Shell, commit: &str, mk: &str, bb: &str) -> Result<()> {
    let declares_bin = |dir: &str, bin: &str| -> Result<()> {
        let toml = git_blob(sh, commit, &format!("{dir}/Cargo.toml"))?;
        let toml = String::from_utf8_lossy(&toml);
        let mut in_bin = false;
        for line in toml.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin && line == format!("name = \"{bin}\"") {
                return Ok(());
            }
        }
        bail!("{dir}/Cargo.toml at {commit} has no [[bin]] named {bin}")
    };
    let bin_of = |opts: &str, what: &str| -> Result<String> {
        let mut words = opts.split_whitespace();
        while let Some(w) = words.next() {
            if w == "--bin" {
                return words
                    .next()
                    .map(str::to_owned)
                    .context(format!("{what}: --bin without a name"));
            }
        }
        bail!("{what} names no --bin")
    };
    let mk_subdir = assignment(mk, "FWPACK_SUBDIR").context("fwpack.mk: no FWPACK_SUBDIR")?;
    let mk_bin = bin_of(
        assignment(mk, "FWPACK_CARGO_BUILD_OPTS").unwrap_or_default(),
        "FWPACK_CARGO_BUILD_OPTS",
    )?;
    declares_bin(mk_subdir, &mk_bin)
        .context("fwpack.mk FWPACK_SUBDIR / FWPACK_CARGO_BUILD_OPTS")?;
    let host_subdir =
        assignment(mk, "HOST_FWPACK_SUBDIR").context("fwpack.mk: no HOST_FWPACK_SUBDIR")?;
    declares_bin(host_subdir, "fwpack").context("fwpack.mk HOST_FWPACK_SUBDIR")?;
    // FWPACK_CARGO_ENV: a backslash-continued list of NAME=value.
    let env: Vec<&str> = mk
        .split("FWPACK_CARGO_ENV = \\\n")
        .nth(1)
        .context("fwpack.mk: no FWPACK_CARGO_ENV list")?
        .lines()
        .map_while(|l| {
            let l = l.trim();
            (!l.is_empty()).then(|| l.trim_end_matches('\\').trim())
        })
        .collect();
    let mut crt_static = false;
    for e in &env {
        let (name, value) = e
            .split_once('=')
            .context(format!("FWPACK_CARGO_ENV: {e}"))?;
        if let Some(key) = name.strip_prefix("CARGO_PROFILE_RELEASE_") {
            if !PROFILE_KEYS.contains(&key) {
                bail!("FWPACK_CARGO_ENV: cargo has no profile setting {name}");
            }
        } else if name == "RUSTFLAGS" {
            crt_static = value.contains("target-feature=+crt-static");
        }
    }
    if !crt_static {
        bail!("FWPACK_CARGO_ENV does not pass -C target-feature=+crt-static: a glibc toolchain would link fwpack-updater dynamically");
    }
    let bb_subdir = assignment(bb, "CARGO_SRC_DIR").context("fwpack_git.bb: no CARGO_SRC_DIR")?;
    let bb_bin = bin_of(
        assignment(bb, "CARGO_BUILD_FLAGS:append:class-target").unwrap_or_default(),
        "CARGO_BUILD_FLAGS:append:class-target",
    )?;
    declares_bin(bb_subdir, &bb_bin).context("fwpack_git.bb CARGO_SRC_DIR / CARGO_BUILD_FLAGS")?;
    let native = assignment(bb, "CARGO_SRC_DIR:class-native")
        .context("fwpack_git.bb: no native CARGO_SRC_DIR")?;
    declares_bin(native, "fwpack").context("fwpack_git.bb CARGO_SRC_DIR:class-native")?;
    if !assignment(bb, "RUSTFLAGS:append:class-target")
        .unwrap_or_default()
        .contains("target-feature=+crt-static")
    {
        bail!("fwpack_git.bb: RUSTFLAGS:append:class-target lacks +crt-static");
    }
    for line in bb.lines() {
        if let Some(key) = line
            .strip_prefix("export CARGO_PROFILE_RELEASE_")
            .and_then(|r| r.split_whitespace().next())
        {
            if !PROFILE_KEYS.contains(&key) {
                bail!("fwpack_git.bb: cargo has no profile setting CARGO_PROFILE_RELEASE_{key}");
            }
        }
    }
    Ok(())
}

fn workspace_version(cargo_toml: &str) -> Result<String> {
    let mut in_pkg = false;
    for line in cargo_toml.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_pkg = l == "[workspace.package]";
            continue;
        }
        if in_pkg {
            if let Some(v) = l.strip_prefix("version = \"") {
                return Ok(v.trim_end_matches('"').to_string());
            }
        }
    }
    bail!("no version in [workspace.package] of Cargo.toml")
}

/// Replace the value of the one line starting with `prefix` (and its
/// backslash-continued lines).
fn set_assignment(text: &str, prefix: &str, value: &str) -> Result<String> {
    let mut out = String::new();
    let mut found = 0;
    let mut skipping = false;
    for line in text.split_inclusive('\n') {
        if skipping {
            skipping = line.trim_end().ends_with('\\');
            continue;
        }
        if line.starts_with(prefix) {
            found += 1;
            out.push_str(prefix);
            out.push_str(value);
            out.push('\n');
            skipping = line.trim_end().ends_with('\\');
        } else {
            out.push_str(line);
        }
    }
    if found != 1 {
        bail!("expected exactly one `{prefix}...` line, found {found}");
    }
    Ok(out)
}

fn git_blob(sh: &Shell, commit: &str, path: &str) -> Result<Vec<u8>> {
    let out = std::process::Command::new("git")
        .current_dir(sh.current_dir())
        .args(["show", &format!("{commit}:{path}")])
        .output()?;
    if !out.status.success() {
        bail!("{path} is not in {commit}");
    }
    Ok(out.stdout)
}

fn hex_digest(sh: &Shell, tool: &str, bytes: &[u8]) -> Result<String> {
    let out = cmd!(sh, "{tool}").stdin(bytes).read()?;
    Ok(out
        .split_whitespace()
        .next()
        .context("no digest")?
        .to_string())
}

/// `make VAR` values we need from a Buildroot tree, read from its files.
fn mk_var(file: &Path, var: &str) -> Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: not a Buildroot tree?", file.display()))?;
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(var)?.trim_start();
            let value = ["=", ":=", "?="]
                .iter()
                .find_map(|op| rest.strip_prefix(op))?;
            Some(value.trim().to_string())
        })
        .with_context(|| format!("no {var} in {}", file.display()))
}

/// Cargo versions whose `cargo vendor` output is known to equal that of
/// the Rust Buildroot ships with each archive format (from Buildroot's
/// commits that bumped the suffix: cargo4 from Rust 1.86, vendoring
/// changed in 1.89; cargo5 for 1.94-1.96; cargo6 from 1.97). Any other
/// format needs the exact minor version Buildroot ships.
fn compatible(format: &str, shipped: (u32, u32), cargo: (u32, u32)) -> bool {
    cargo == shipped
        || match format {
            "-cargo4" => {
                ((1, 86)..=(1, 88)).contains(&cargo) && ((1, 86)..=(1, 88)).contains(&shipped)
            }
            "-cargo5" => {
                ((1, 94)..=(1, 96)).contains(&cargo) && ((1, 94)..=(1, 96)).contains(&shipped)
            }
            _ => false,
        }
}

/// (major, minor) of `cargo 1.95.0 (...)` or of a bare `1.95.0`.
fn minor_of(version: &str) -> Option<(u32, u32)> {
    let v = if version.starts_with(|c: char| c.is_ascii_digit()) {
        version
    } else {
        version.split_whitespace().nth(1)?
    };
    minor_of_plain(v)
}

fn minor_of_plain(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split(['.', '-', ' ']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// A way to run a given cargo: (description, PATH entry or rustup toolchain).
struct Cargo {
    label: String,
    version: (u32, u32),
    /// Directory holding a `cargo` to put first on PATH.
    dir: PathBuf,
    toolchain: Option<String>,
}

fn candidate_cargos(sh: &Shell, extra: &[PathBuf], scratch: &Path) -> Vec<Cargo> {
    let mut out = Vec::new();
    for (i, path) in extra.iter().enumerate() {
        let Ok(v) = cmd!(sh, "{path} --version").quiet().read() else {
            eprintln!("warning: --cargo {} does not run", path.display());
            continue;
        };
        let Some(version) = minor_of(&v) else {
            continue;
        };
        // Buildroot finds cargo on PATH: give this one its own directory.
        let dir = scratch.join(format!("cargo-{i}"));
        let _ = std::fs::create_dir_all(&dir);
        let link = dir.join("cargo");
        let _ = std::fs::remove_file(&link);
        let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        if std::os::unix::fs::symlink(&target, &link).is_ok() {
            out.push(Cargo {
                label: format!("{} ({v})", path.display()),
                version,
                dir,
                toolchain: None,
            });
        }
    }
    let path_cargo = cmd!(sh, "which cargo")
        .quiet()
        .read()
        .ok()
        .map(PathBuf::from);
    if let Ok(list) = cmd!(sh, "rustup toolchain list").quiet().read() {
        for tc in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let Ok(v) = cmd!(sh, "rustup run {tc} cargo --version").quiet().read() else {
                continue;
            };
            let (Some(version), Some(pc)) = (minor_of(&v), &path_cargo) else {
                continue;
            };
            out.push(Cargo {
                label: format!("rustup toolchain {tc} ({v})"),
                version,
                dir: pc.parent().map(Path::to_path_buf).unwrap_or_default(),
                toolchain: Some(tc.to_string()),
            });
        }
    }
    if let (Some(pc), Ok(v)) = (&path_cargo, cmd!(sh, "cargo --version").quiet().read()) {
        if let Some(version) = minor_of(&v) {
            out.push(Cargo {
                label: format!("{} ({v})", pc.display()),
                version,
                dir: pc.parent().map(Path::to_path_buf).unwrap_or_default(),
                toolchain: None,
            });
        }
    }
    out
}

/// Run Buildroot's own download of the fwpack package for `commit`:
/// `make fwpack-source` in a scratch output directory with a scratch
/// download directory, so its git backend clones this repository and its
/// cargo post-process vendors the crates, exactly as for a user. Returns
/// (archive name, sha256, "Buildroot YYYY.MM.x").
fn buildroot_archive_hash(
    sh: &Shell,
    root: &Path,
    br: &Path,
    commit: &str,
    o: &Opts,
) -> Result<(String, String, String)> {
    let tar = o.tar.clone().unwrap_or_else(|| "tar".into());
    let tar_version = cmd!(sh, "{tar} --version").quiet().read()?;
    let tar_ok = tar_version
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("tar (GNU tar) "))
        .and_then(minor_of_plain)
        .is_some_and(|v| v >= (1, 35));
    if !tar_ok {
        bail!(
            "{} is not GNU tar 1.35 or later ({}): Buildroot's archives are tar 1.35's; pass --tar PATH",
            tar.display(),
            tar_version.lines().next().unwrap_or_default()
        );
    }
    let tar_arg = format!(
        "TAR={}",
        fsx::canonicalize(Path::new(&cmd!(sh, "which {tar}").quiet().read()?))?.display()
    );
    let br = std::fs::canonicalize(br).with_context(|| format!("--buildroot {}", br.display()))?;
    let format = mk_var(&br.join("package/pkg-download.mk"), "BR_FMT_VERSION_cargo")?;
    let rust = mk_var(&br.join("package/rust-bin/rust-bin.mk"), "RUST_BIN_VERSION")?;
    let shipped = minor_of(&rust).context("RUST_BIN_VERSION")?;
    let br_version = mk_var(&br.join("Makefile"), "export BR2_VERSION")?;
    // 2026.05.1 and 2026.08-rc1 -> 2026.05.x and 2026.08.x
    let series = {
        let mut parts = br_version.split(['.', '-']);
        format!(
            "{}.{}.x",
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default()
        )
    };
    if shipped < (1, 87) {
        bail!("Buildroot {br_version} ships Rust {rust}; fwpack's crates need 1.87 or later");
    }
    let scratch = crate::target_dir().join("fwpack-release").join(&br_version);
    let _ = std::fs::remove_dir_all(&scratch);
    fsx::create_dir_all(&scratch)?;
    let cargos = candidate_cargos(sh, &o.cargos, &scratch);
    let Some(cargo) = cargos.iter().find(|c| c.version == shipped).or_else(|| {
        cargos
            .iter()
            .find(|c| compatible(&format, shipped, c.version))
    }) else {
        bail!(
            "Buildroot {br_version} vendors with Rust {rust} ({format}); none of these cargos vendors the same way:\n  {}\n\
             install that toolchain (`rustup toolchain install {rust}`) or pass --cargo PATH",
            cargos.iter().map(|c| c.label.as_str()).collect::<Vec<_>>().join("\n  ")
        );
    };
    println!(
        "  Buildroot {br_version} ({format}, Rust {rust}): vendoring with {}",
        cargo.label
    );

    let out = scratch.join("output");
    let dl = scratch.join("dl");
    let external = root.join("buildroot-external");
    let path = format!(
        "{}:{}",
        cargo.dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut env: Vec<(&str, String)> =
        vec![("PATH", path), ("BR2_DL_DIR", dl.display().to_string())];
    if let Some(tc) = &cargo.toolchain {
        env.push(("RUSTUP_TOOLCHAIN", tc.clone()));
    }
    let archive = format!("fwpack-{commit}-git4{format}.tar.gz");
    // A plain default configuration: only the download matters, and
    // without BR2_DOWNLOAD_FORCE_CHECK_HASHES Buildroot accepts the
    // not-yet-listed archive named in BR_NO_CHECK_HASH_FOR.
    let o_arg = format!("O={}", out.display());
    let ext_arg = format!("BR2_EXTERNAL={}", external.display());
    let mut defconfig = cmd!(sh, "make -C {br} {o_arg} {ext_arg} {tar_arg} defconfig").quiet();
    for (k, v) in &env {
        defconfig = defconfig.env(k, v);
    }
    defconfig.run()?;
    let version_arg = format!("FWPACK_VERSION={commit}");
    let no_check = format!("BR_NO_CHECK_HASH_FOR={archive}");
    // host-rustc is a download dependency of every cargo package; the
    // download itself only needs cargo, which PATH provides.
    let mut source = cmd!(
        sh,
        "make -C {br} {o_arg} {tar_arg} {version_arg} FWPACK_DOWNLOAD_DEPENDENCIES= {no_check} fwpack-source"
    );
    for (k, v) in &env {
        source = source.env(k, v);
    }
    source.run()?;
    let file = dl.join("fwpack").join(&archive);
    let bytes = std::fs::read(&file)
        .with_context(|| format!("Buildroot {br_version} did not produce {}", file.display()))?;
    let digest = hex_digest(sh, "sha256sum", &bytes)?;
    Ok((archive, digest, format!("{series} ({format}, Rust {rust})")))
}

/// The release archives of the work tree (which equals the pinned
/// commit's code plus pin files), one per host arch, their SHA256SUMS and
/// its signature. See crate::archive for what an archive holds.
fn build_artifacts(sh: &Shell, root: &Path, dir: &Path, o: &Opts) -> Result<()> {
    fsx::create_dir_all(dir)?;
    let dir = fsx::canonicalize(dir)?;
    let hosts: Vec<&archive::Host> = archive::HOSTS
        .iter()
        .filter(|h| o.arches.is_empty() || o.arches.iter().any(|a| a == h.arch))
        .collect();
    if hosts.is_empty() {
        bail!(
            "--arch {}: no such host arch (known: {})",
            o.arches.join(", "),
            archive::HOSTS
                .iter()
                .map(|h| h.arch)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let signing = archive::Signing {
        key: o.release_key.clone(),
        signer_cmd: o.signer_cmd.clone(),
        pubkey: o.release_pubkey.clone(),
    };
    let t = Instant::now();
    let updaters = archive::build_updaters(root)?;
    println!(
        "  updaters for {} ({:.0} s)",
        updaters
            .iter()
            .map(|u| u.triple.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        t.elapsed().as_secs_f64()
    );
    let mut built = Vec::new();
    for host in &hosts {
        let t = Instant::now();
        let bin = archive::build_fwpack(sh, host)?;
        let desc = cmd!(sh, "file -b {bin}").read()?;
        if !desc.contains("statically linked") && !desc.contains("static-pie linked") {
            bail!("{} is not static: {desc}", bin.display());
        }
        println!(
            "  fwpack for {}: {desc} ({:.0} s)",
            host.triple,
            t.elapsed().as_secs_f64()
        );
        built.push((*host, bin));
    }
    // A binary that runs here checks the others and writes the man pages
    // and completions (they come from the same sources on every arch).
    let runner = archive::runner(&built)?;
    for (host, bin) in &built {
        check_artifact(sh, &runner, bin, host.arch, &o.version)?;
    }
    for u in &updaters {
        archive::check_updater(sh, &runner, u)?;
    }
    let mut names = Vec::new();
    for (host, bin) in &built {
        let path = archive::assemble(
            sh, root, &o.version, host, bin, &runner, &updaters, &signing, &dir,
        )?;
        let size = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        println!("  {} ({size} bytes)", path.display());
        names.push(
            path.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        );
    }
    let sums = {
        let _cd = sh.push_dir(&dir);
        cmd!(sh, "sha256sum {names...}").read()? + "\n"
    };
    let sums_path = dir.join("SHA256SUMS");
    fsx::write(&sums_path, &sums)?;
    match archive::sign(sh, &sums_path, &signing)? {
        Some(pubkey) => {
            let copy = dir.join("release.pub.pem");
            if pubkey != copy {
                fsx::copy(&pubkey, &copy)?;
            }
            println!(
                "  SHA256SUMS signed; signature checked with {}",
                copy.display()
            );
        }
        None => println!("  SHA256SUMS not signed (no --release-key / --signer-cmd)"),
    }
    Ok(())
}

/// What a user will rely on: no interpreter and no shared libraries
/// (readelf, and fwpack's own check-elf), and a working program: its
/// version, and a keygen/stamp/verify round trip, the aarch64 one under
/// qemu-user.
fn check_artifact(
    sh: &Shell,
    runner: &archive::Runner,
    bin: &Path,
    arch: &str,
    version: &str,
) -> Result<()> {
    let name = bin.display().to_string();
    let headers = cmd!(sh, "readelf -lW {bin}").quiet().read()?;
    if headers.contains("INTERP") {
        bail!("{name} asks for a program interpreter:\n{headers}");
    }
    let dynamic = cmd!(sh, "readelf -dW {bin}").quiet().read()?;
    if dynamic.contains("(NEEDED)") {
        bail!("{name} needs shared libraries:\n{dynamic}");
    }
    let host = &runner.bin;
    let elf = cmd!(sh, "{host} check-elf --machine {arch} {bin}").read()?;
    // (program, its first arguments): the binary itself, or qemu-user
    // running it.
    let (prog, pre_args) = archive::run_as(bin, arch)?;
    let pre = &pre_args;
    let said = cmd!(sh, "{prog} {pre...} --version").read()?;
    // "fwpack 0.1.0 (commit 0123456789ab)"
    let want = format!("fwpack {version}");
    if said.trim() != want && !said.starts_with(&format!("{want} (")) {
        bail!("{name} --version says {said:?}, not {want}");
    }
    let tmp = sh.create_temp_dir()?;
    let _cd = sh.push_dir(tmp.path());
    sh.write_file("payload.bin", b"fwpack release check\n".repeat(4096))?;
    cmd!(sh, "{prog} {pre...} keygen -o k.pem").quiet().run()?;
    cmd!(
        sh,
        "{prog} {pre...} stamp --board release-check --version 1 -s rootfs=payload.bin,compress=zstd -o i.fwi --key k.pem"
    )
    .quiet()
    .run()?;
    cmd!(sh, "{prog} {pre...} verify i.fwi --key k.pub.pem")
        .quiet()
        .run()?;
    println!(
        "  {name}: {}; {}; runs, stamps and verifies",
        said.trim(),
        elf.trim()
    );
    Ok(())
}

pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() != 128 {
        return None;
    }
    (0..64)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (Shell, PathBuf) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf();
        let sh = Shell::new().unwrap();
        sh.change_dir(&root);
        (sh, root)
    }

    #[test]
    fn device_crate_follows_the_move_out_of_the_apply_library() {
        let (sh, _) = repo();
        // v0.1.0's pin (fwpack.mk at the time of writing): the binary was
        // in the updater library crate.
        assert_eq!(
            device_crate(&sh, "418c8c7c5c0b1514102c7285fd2828ae59f0ba63").unwrap(),
            "crates/updater"
        );
        assert_eq!(device_crate(&sh, "HEAD").unwrap(), "crates/fwpack-updater");
    }

    /// The packages as they are (at their pin) and as the release command
    /// rewrites them for HEAD name a crate, binary and cargo options that
    /// exist; a recipe naming the wrong crate fails.
    #[test]
    fn recipes_build_what_exists_at_the_pin_and_at_head() {
        let (sh, root) = repo();
        let mk = std::fs::read_to_string(root.join(MK)).unwrap();
        let bb = std::fs::read_to_string(root.join(RECIPE)).unwrap();
        let pin = assignment(&mk, "FWPACK_VERSION").unwrap().to_string();
        let rev = format!("{pin}^{{commit}}");
        if cmd!(sh, "git cat-file -e {rev}").quiet().run().is_ok() {
            check_recipes(&sh, &pin, &mk, &bb)
                .unwrap_or_else(|e| panic!("at the pin {pin}: {e:#}"));
        } else {
            eprintln!("skipping the pin {pin}: not in this clone");
        }
        let device = device_crate(&sh, "HEAD").unwrap();
        let head_mk = set_assignment(&mk, "FWPACK_SUBDIR = ", device).unwrap();
        let head_bb = set_assignment(&bb, "CARGO_SRC_DIR = ", &format!("\"{device}\"")).unwrap();
        check_recipes(&sh, "HEAD", &head_mk, &head_bb)
            .unwrap_or_else(|e| panic!("at HEAD after the pin bump: {e:#}"));
        // What the check catches: the crate that lost the binary, a
        // binary name nobody declares, a profile key cargo does not know,
        // and a glibc-dynamic updater.
        let stale = set_assignment(&mk, "FWPACK_SUBDIR = ", "crates/updater").unwrap();
        let err = format!(
            "{:#}",
            check_recipes(&sh, "HEAD", &stale, &head_bb).unwrap_err()
        );
        assert!(
            err.contains("crates/updater/Cargo.toml at HEAD has no [[bin]] named fwpack-updater"),
            "{err}"
        );
        let renamed = head_mk.replace("--bin fwpack-updater", "--bin fwpack-update");
        assert!(check_recipes(&sh, "HEAD", &renamed, &head_bb).is_err());
        let typo = head_mk.replace(
            "CARGO_PROFILE_RELEASE_LTO=",
            "CARGO_PROFILE_RELEASE_LTO_MODE=",
        );
        assert!(check_recipes(&sh, "HEAD", &typo, &head_bb).is_err());
        let dynamic = head_mk.replace(" \\\n\tRUSTFLAGS=\"-C target-feature=+crt-static\"", "");
        assert_ne!(dynamic, head_mk);
        let err = format!(
            "{:#}",
            check_recipes(&sh, "HEAD", &dynamic, &head_bb).unwrap_err()
        );
        assert!(err.contains("+crt-static"), "{err}");
    }

    #[test]
    fn subdir_pins_are_single_assignments_in_the_real_files() {
        let (_, root) = repo();
        let mk = std::fs::read_to_string(root.join(MK)).unwrap();
        let mk = set_assignment(&mk, "FWPACK_SUBDIR = ", "crates/fwpack-updater").unwrap();
        assert!(mk.contains("\nFWPACK_SUBDIR = crates/fwpack-updater\n"));
        // The host package keeps building the CLI.
        assert!(mk.contains("\nHOST_FWPACK_SUBDIR = crates/fwpack\n"));
        let bb = std::fs::read_to_string(root.join(RECIPE)).unwrap();
        let bb = set_assignment(&bb, "CARGO_SRC_DIR = ", "\"crates/fwpack-updater\"").unwrap();
        assert!(bb.contains("\nCARGO_SRC_DIR = \"crates/fwpack-updater\"\n"));
        assert!(bb.contains("\nCARGO_SRC_DIR:class-native = \"crates/fwpack\"\n"));
    }
}
