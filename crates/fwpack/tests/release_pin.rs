//! The commit the Buildroot and Yocto packages pin (FWPACK_VERSION and
//! SRCREV) must make images that this tree's fwpack accepts, and accept
//! this tree's images: a device built from the pin has to verify what
//! the release pipeline signs with the current tool, and the reverse.
//! The pinned commit's fwpack is built here once per commit (from `git
//! archive` of it, offline, cached under `<cache>/pinned-fwpack/`), then
//! both tools stamp, sign and verify the same payloads with the same key.
//! A stale pin fails here; `cargo xtask release` moves it (docs/RELEASE.md).

#[path = "release_common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{ok, run, workspace};

fn value_after<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line"))
        .trim()
        .trim_matches('"')
}

/// FWPACK_VERSION and SRCREV, which must agree.
fn pinned_commit() -> String {
    let mk =
        std::fs::read_to_string(workspace().join("buildroot-external/package/fwpack/fwpack.mk"))
            .unwrap();
    let bb = std::fs::read_to_string(
        workspace().join("meta-fwpack/recipes-devtools/fwpack/fwpack_git.bb"),
    )
    .unwrap();
    let version = value_after(&mk, "FWPACK_VERSION = ").to_string();
    let srcrev = value_after(&bb, "SRCREV = ").to_string();
    assert_eq!(version, srcrev, "Buildroot and Yocto pin different commits");
    assert!(
        version.len() == 40 && version.bytes().all(|b| b.is_ascii_hexdigit()),
        "FWPACK_VERSION must be a full commit id: {version}"
    );
    version
}

/// Whether this clone has the commit; only a shallow clone may lack it.
fn have_commit(commit: &str) -> bool {
    let root = workspace();
    let spec = format!("{commit}^{{commit}}");
    if run(Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["cat-file", "-e", &spec]))
    .status
    .success()
    {
        return true;
    }
    let shallow = run(Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["rev-parse", "--is-shallow-repository"]));
    assert!(
        String::from_utf8_lossy(&shallow.stdout).trim() == "true",
        "the pinned commit {commit} is not in this repository"
    );
    eprintln!("SKIPPED: {commit} is not in this shallow clone; fetch the history to check it");
    false
}

/// The pinned commit's `fwpack`, built once and cached by commit id.
fn pinned_fwpack(commit: &str) -> PathBuf {
    let cache = testkit::cache_dir().join("pinned-fwpack");
    let bin = cache.join(commit).join("fwpack");
    std::fs::create_dir_all(&cache).unwrap();
    let _lock = testkit::CacheLock::acquire("pinned-fwpack").expect("cache lock");
    if bin.is_file() {
        return bin;
    }
    // A source directory per commit: cargo keys the workspace crates'
    // builds by their path, and would otherwise take one commit's sources
    // for another's (git archive keeps the commit's old mtimes, which
    // look older than the previous build).
    let src = cache.join(format!("src-{commit}"));
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).unwrap();
    // The commit's tracked files only, as Buildroot and bitbake fetch them.
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(workspace())
        .args(["archive", "--format=tar", commit])
        .stdout(Stdio::piped())
        .spawn()
        .expect("git archive");
    let untar = Command::new("tar")
        // -m: files dated now, so no stale build artifact looks newer.
        .arg("-xm")
        .arg("-C")
        .arg(&src)
        .stdin(archive.stdout.take().unwrap())
        .status()
        .expect("tar");
    assert!(archive.wait().unwrap().success() && untar.success());
    // One target dir for every pin, so a new pin rebuilds only our crates;
    // offline and locked: the pin's crates are those of Cargo.lock, which
    // the workspace build has already fetched.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building fwpack at the pinned commit {commit} (once; cached)");
    ok(Command::new(cargo)
        .args([
            "build",
            "--offline",
            "--locked",
            "-p",
            "fwpack",
            "--bin",
            "fwpack",
        ])
        .arg("--manifest-path")
        .arg(src.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", cache.join("target"))
        .env_remove("RUSTC_WRAPPER"));
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    let tmp = bin.with_extension("tmp");
    std::fs::copy(cache.join("target/debug/fwpack"), &tmp).unwrap();
    std::fs::rename(&tmp, &bin).unwrap();
    let _ = std::fs::remove_dir_all(&src);
    bin
}

fn tool(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    run(Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("SOURCE_DATE_EPOCH", "1700000000"))
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn pinned_fwpack_and_head_accept_each_others_images() {
    let commit = pinned_commit();
    if !have_commit(&commit) {
        return;
    }
    let pin = pinned_fwpack(&commit);
    let head = PathBuf::from(env!("CARGO_BIN_EXE_fwpack"));
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    // Payloads: incompressible data over several CRC blocks, and a
    // compressible one, so both stored and compressed segments are read.
    let mut x: u64 = 0x5eed;
    let random: Vec<u8> = (0..(3 << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(d.join("rootfs.img"), &random).unwrap();
    std::fs::write(d.join("kernel.img"), b"kernel ".repeat(40_000)).unwrap();
    ok(Command::new(&head)
        .args(["keygen", "-o", "k.pem"])
        .current_dir(d));

    let stale = format!(
        "the pinned commit {commit} (FWPACK_VERSION/SRCREV) and this tree's fwpack disagree: \
         a device built by Buildroot or Yocto would refuse this release's images. Move the \
         pins with `cargo xtask release` (docs/RELEASE.md)"
    );
    let mut images = Vec::new();
    for (who, signer, verifier) in [("pin", &pin, &head), ("head", &head, &pin)] {
        let img = format!("{who}.fwi");
        let out = tool(
            signer,
            d,
            &[
                "stamp",
                "--board",
                "rpi-zero2w",
                "--version",
                "7",
                "--label",
                "pin-check",
                "-s",
                "rootfs=rootfs.img,target=system",
                "-s",
                "kernel=kernel.img,target=boot,compress=zstd",
                "--key",
                "k.pem",
                "-o",
                &img,
            ],
        );
        assert!(out.status.success(), "{who} stamp failed: {}", show(&out));
        let out = tool(
            verifier,
            d,
            &["verify", &img, "-k", "k.pub.pem", "--board", "rpi-zero2w"],
        );
        assert!(
            out.status.success(),
            "{stale}.\nimage stamped and signed by the {who} fwpack, verified by the other: {}",
            show(&out)
        );
        images.push(img);
    }

    // What an external signer (HSM, KMS) is handed must be the same
    // message from both tools for the same image.
    let out = tool(
        &head,
        d,
        &[
            "stamp",
            "--board",
            "rpi-zero2w",
            "--version",
            "7",
            "-s",
            "rootfs=rootfs.img,target=system",
            "-o",
            "unsigned.fwi",
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    let mut messages = Vec::new();
    for (who, bin) in [("pin", &pin), ("head", &head)] {
        let m = format!("{who}.msg");
        let out = tool(bin, d, &["sign", "unsigned.fwi", "--export-message", &m]);
        assert!(out.status.success(), "{who}: {}", show(&out));
        messages.push(std::fs::read(d.join(&m)).unwrap());
    }
    assert_eq!(
        messages[0],
        messages[1],
        "{stale}.\nthe signing messages differ ({} vs {} bytes)",
        messages[0].len(),
        messages[1].len()
    );
    eprintln!(
        "pin {commit} and HEAD: images verify both ways, signing message {} bytes in both",
        messages[1].len()
    );
}
