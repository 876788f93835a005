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
  --artifacts DIR     also build the static host binaries (x86_64 and
                      aarch64 musl) into DIR with SHA256SUMS, and check
                      them: static (file, readelf, fwpack check-elf), run
                      (--version, keygen/stamp/verify; aarch64 under
                      qemu-aarch64-static)
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
    let mk = std::fs::read_to_string(&mk_path)?;
    std::fs::write(&mk_path, set_assignment(&mk, "FWPACK_SUBDIR = ", device)?)?;
    let recipe_path = root.join(RECIPE);
    let recipe = std::fs::read_to_string(&recipe_path)?;
    std::fs::write(
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
    let mk = std::fs::read_to_string(&mk_path)?;
    std::fs::write(&mk_path, set_assignment(&mk, "FWPACK_VERSION = ", &commit)?)?;
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
    std::fs::write(root.join(HASH), hash)?;

    // The Yocto recipe and its crates.
    let mut recipe = std::fs::read_to_string(&recipe_path)?;
    recipe = set_assignment(&recipe, "SRCREV = ", &format!("\"{commit}\""))?;
    recipe = set_assignment(&recipe, "PV = ", &format!("\"{}+git\"", o.version))?;
    let lic = lic_md5
        .iter()
        .map(|(f, m)| format!("file://{f};md5={m}"))
        .collect::<Vec<_>>()
        .join(" \\\n                    ");
    recipe = set_assignment(&recipe, "LIC_FILES_CHKSUM = ", &format!("\"{lic}\""))?;
    std::fs::write(&recipe_path, recipe)?;
    let script = root.join("meta-fwpack/scripts/fwpack-crates-inc.py");
    let inc = cmd!(sh, "python3 {script} {root} {commit}").read()?;
    std::fs::write(root.join(CRATES_INC), inc + "\n")?;
    println!("  wrote {MK}, {HASH}, {RECIPE}, {CRATES_INC}");

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
        std::fs::canonicalize(cmd!(sh, "which {tar}").quiet().read()?)?.display()
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
    let scratch = root.join("target/fwpack-release").join(&br_version);
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
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

/// Static musl host binaries of the work tree (which equals the pinned
/// commit's code plus pin files), their SHA256SUMS and its signature.
fn build_artifacts(sh: &Shell, root: &Path, dir: &Path, o: &Opts) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let dir = std::fs::canonicalize(dir)?;
    let mut names = Vec::new();
    for (triple, arch) in [
        ("x86_64-unknown-linux-musl", "x86_64"),
        ("aarch64-unknown-linux-musl", "aarch64"),
    ] {
        let t = Instant::now();
        let mut build = cmd!(
            sh,
            "cargo build --release --locked -p fwpack --bin fwpack --target {triple}"
        )
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
        if arch == "x86_64" {
            // ring's and zstd's C code, against musl's headers (Debian: musl-tools).
            if cmd!(sh, "which musl-gcc").quiet().read().is_err() {
                bail!("musl-gcc not found: install musl-tools (ring's and zstd's C code is built for musl with it)");
            }
            build = build.env("CC_x86_64_unknown_linux_musl", "musl-gcc");
        }
        if arch == "aarch64" {
            // No aarch64 musl C toolchain is needed: Rust's own linker
            // links the static binary, and ring's and zstd's C code is
            // compiled by the aarch64 glibc cross gcc: it only includes
            // freestanding headers and string.h, which agree with musl's.
            build = build
                .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld")
                .env("CC_aarch64_unknown_linux_musl", "aarch64-linux-gnu-gcc")
                .env("AR_aarch64_unknown_linux_musl", "aarch64-linux-gnu-ar");
        }
        build.run()?;
        let name = format!("fwpack-v{}-{arch}-linux-musl", o.version);
        let bin = root.join("target").join(triple).join("release/fwpack");
        std::fs::copy(&bin, dir.join(&name))?;
        let file = dir.join(&name);
        let desc = cmd!(sh, "file -b {file}").read()?;
        if !desc.contains("statically linked") && !desc.contains("static-pie linked") {
            bail!("{name} is not static: {desc}");
        }
        println!("  {name}: {desc} ({:.0} s)", t.elapsed().as_secs_f64());
        names.push((name, arch));
    }
    // The x86_64 binary runs here, so it checks both with its own check-elf.
    let host = dir.join(&names[0].0);
    for (name, arch) in &names {
        check_artifact(sh, &host, &dir.join(name), arch, &o.version)?;
    }
    let names: Vec<String> = names.into_iter().map(|(n, _)| n).collect();
    let sums = {
        let _cd = sh.push_dir(&dir);
        cmd!(sh, "sha256sum {names...}").read()? + "\n"
    };
    let sums_path = dir.join("SHA256SUMS");
    std::fs::write(&sums_path, &sums)?;
    let sig = dir.join("SHA256SUMS.sig");
    let pubkey = match (&o.release_key, &o.signer_cmd) {
        (Some(key), None) => {
            cmd!(
                sh,
                "openssl pkeyutl -sign -rawin -inkey {key} -in {sums_path} -out {sig}"
            )
            .run()?;
            let derived = dir.join("release.pub.pem");
            match &o.release_pubkey {
                Some(p) => std::fs::copy(p, &derived).map(|_| ())?,
                None => cmd!(sh, "openssl pkey -in {key} -pubout -out {derived}").run()?,
            }
            Some(derived)
        }
        (None, Some(signer)) => {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(signer)
                .env("FWPACK_SIGN_INPUT", &sums_path)
                .stdin(std::fs::File::open(&sums_path)?)
                .output()?;
            if !out.status.success() {
                bail!(
                    "--signer-cmd failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let raw = if out.stdout.len() == 64 {
                out.stdout
            } else {
                hex_decode(String::from_utf8_lossy(&out.stdout).trim())
                    .context("the signer printed neither 64 raw bytes nor 128 hex digits")?
            };
            std::fs::write(&sig, raw)?;
            let derived = dir.join("release.pub.pem");
            if let Some(p) = &o.release_pubkey {
                std::fs::copy(p, &derived)?;
            }
            Some(derived)
        }
        _ => None,
    };
    if let Some(pubkey) = pubkey {
        // Check as a user will (docs/RELEASE.md "Verifying a release").
        cmd!(
            sh,
            "openssl pkeyutl -verify -pubin -inkey {pubkey} -rawin -in {sums_path} -sigfile {sig}"
        )
        .run()?;
        println!(
            "  SHA256SUMS signed; signature checked with {}",
            pubkey.display()
        );
    } else {
        println!("  SHA256SUMS not signed (no --release-key / --signer-cmd)");
    }
    Ok(())
}

/// What a user will rely on: no interpreter and no shared libraries
/// (readelf, and fwpack's own check-elf), and a working program: its
/// version, and a keygen/stamp/verify round trip, the aarch64 one under
/// qemu-user.
fn check_artifact(sh: &Shell, host: &Path, bin: &Path, arch: &str, version: &str) -> Result<()> {
    let name = bin
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let headers = cmd!(sh, "readelf -lW {bin}").quiet().read()?;
    if headers.contains("INTERP") {
        bail!("{name} asks for a program interpreter:\n{headers}");
    }
    let dynamic = cmd!(sh, "readelf -dW {bin}").quiet().read()?;
    if dynamic.contains("(NEEDED)") {
        bail!("{name} needs shared libraries:\n{dynamic}");
    }
    let elf = cmd!(sh, "{host} check-elf --machine {arch} {bin}").read()?;
    // (program, its first arguments): the binary itself, or qemu-user
    // running it.
    let (prog, pre_args): (PathBuf, Vec<PathBuf>) = if arch == "x86_64" {
        (bin.to_path_buf(), Vec::new())
    } else {
        let qemu = format!("qemu-{arch}-static");
        if cmd!(sh, "which {qemu}").quiet().read().is_err() {
            bail!("{qemu} not found: install qemu-user-static to run the {arch} binary");
        }
        (qemu.into(), vec![bin.to_path_buf()])
    };
    let pre = &pre_args;
    let said = cmd!(sh, "{prog} {pre...} --version").read()?;
    if said.trim() != format!("fwpack {version}") {
        bail!("{name} --version says {said:?}, not fwpack {version}");
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
    println!("  {name}: {}; runs, stamps and verifies", elf.trim());
    Ok(())
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
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
