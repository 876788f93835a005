//! The release archive works anywhere: built by `cargo xtask release
//! --artifacts-only` for this host's arch, checked as a user checks a
//! download (signature, SHA256SUMS), unpacked in an empty directory and
//! run in a mount namespace where the source checkout (and the target
//! directory, cargo and rustup) are empty tmpfs mounts and PATH has no
//! cargo or rustc. There, `fwpack boards` lists every board and `fwpack
//! build` makes the rpi-zero2w and qemu-aarch64 images with the shipped
//! updater, whose bytes are the initramfs's /init; the qemu-aarch64 image
//! then boots into slot A.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MARKER: &str = "FWPACK-RELEASE-ARCHIVE aarch64 slot A init";
const EPOCH: &str = "1700000000";
/// The system's directories only: no ~/.cargo/bin.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}:\n{}", show(&out));
    out
}

/// Directories a user of the archive does not have: the checkout, the
/// target directory (if elsewhere), cargo's and rustup's homes.
fn hidden_dirs() -> Vec<PathBuf> {
    let root = std::fs::canonicalize(testkit::workspace_root()).unwrap();
    let mut dirs = vec![root.clone()];
    let target = std::fs::canonicalize(testkit::target_dir()).unwrap();
    if !target.starts_with(&root) {
        dirs.push(target);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    for d in [
        std::env::var_os("CARGO_HOME").map(PathBuf::from),
        std::env::var_os("RUSTUP_HOME").map(PathBuf::from),
        home.as_ref().map(|h| h.join(".cargo")),
        home.as_ref().map(|h| h.join(".rustup")),
    ]
    .into_iter()
    .flatten()
    {
        if let Ok(d) = std::fs::canonicalize(d) {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    dirs
}

/// Runs `args` in a new mount namespace where the input cache is bound at
/// `<tmp>/inputs` and then every [`hidden_dirs`] entry is an empty tmpfs,
/// with a PATH of the system directories only, from `<tmp>/home`. The
/// script first proves the point: no cargo, no rustc, an empty checkout.
fn hidden(tmp: &Path, cache: &Path, args: &[&str]) -> Output {
    let script = r#"
set -e
cache=$1 tmp=$2 checkout=$3; shift 3
mkdir -p "$tmp/inputs"
mount --bind "$cache" "$tmp/inputs"
while [ "$1" != "--" ]; do mount -t tmpfs -o ro,size=4k fwpack-hidden "$1"; shift; done
shift
if command -v cargo >/dev/null || command -v rustc >/dev/null; then
    echo "HIDDEN-CHECK: cargo or rustc is on PATH" >&2; exit 99
fi
if [ -n "$(ls -A "$checkout")" ]; then
    echo "HIDDEN-CHECK: the checkout $checkout is visible" >&2; exit 99
fi
cd "$tmp/home"
exec "$@"
"#;
    let dirs = hidden_dirs();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(cache)
    .arg(tmp)
    .arg(&dirs[0])
    .args(&dirs)
    .arg("--")
    .arg(tmp.join("home/bin/fwpack"))
    .args(args)
    .env_clear()
    .env("PATH", SYSTEM_PATH)
    .env("SOURCE_DATE_EPOCH", EPOCH)
    .env("HOME", tmp.join("home"));
    let out = cmd.output().expect("unshare (util-linux)");
    assert_ne!(out.status.code(), Some(99), "{}", show(&out));
    out
}

/// `rel` (a path in the input cache) as the hidden run sees it.
fn inside(cache: &Path, tmp: &Path, p: &Path) -> String {
    let p = std::fs::canonicalize(p).unwrap();
    let rel = p
        .strip_prefix(cache)
        .unwrap_or_else(|_| panic!("{} is not in the cache {}", p.display(), cache.display()));
    tmp.join("inputs").join(rel).display().to_string()
}

#[test]
fn release_archive_builds_and_boots_without_the_source_tree() {
    for tool in [
        "unshare",
        "mount",
        "openssl",
        "sha256sum",
        "tar",
        "cpio",
        "mkfs.ext4",
        "qemu-system-aarch64",
    ] {
        if !testkit::tools::require(tool) {
            return;
        }
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "this test hides the checkout with mount namespaces: run it as root"
    );
    let root = testkit::workspace_root();
    let tmp_dir = tempfile::Builder::new()
        .prefix("fwpack-release-archive-")
        .tempdir()
        .unwrap();
    let tmp = std::fs::canonicalize(tmp_dir.path()).unwrap();
    for d in hidden_dirs() {
        assert!(
            !tmp.starts_with(&d),
            "TMPDIR {} is inside {}",
            tmp.display(),
            d.display()
        );
    }

    // The maintainer: cut the archive, signed. FWPACK_TEST_RELEASE_DIR
    // names the output of an earlier `cargo xtask release --artifacts-only
    // --artifacts DIR` to check instead (CI that builds it once).
    let version = env!("CARGO_PKG_VERSION");
    let arch = std::env::consts::ARCH;
    let dl = match std::env::var_os("FWPACK_TEST_RELEASE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let dl = tmp.join("download");
            std::fs::create_dir_all(&dl).unwrap();
            let key = tmp.join("release-key.pem");
            ok(Command::new("openssl")
                .args(["genpkey", "-algorithm", "ed25519", "-out"])
                .arg(&key));
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let started = std::time::Instant::now();
            ok(Command::new(cargo)
                .current_dir(&root)
                .args(["run", "-q", "-p", "xtask", "--", "release", version])
                .arg("--artifacts")
                .arg(&dl)
                .args(["--artifacts-only", "--arch", arch, "--release-key"])
                .arg(&key));
            eprintln!(
                "release archive built in {:.0} s",
                started.elapsed().as_secs_f64()
            );
            dl
        }
    };

    // The user: verify the download as docs/RELEASE.md says, unpack.
    let triple = format!("{arch}-unknown-linux-musl");
    let name = format!("fwpack-{version}-{triple}.tar.gz");
    ok(Command::new("openssl")
        .args([
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            "release.pub.pem",
            "-rawin",
        ])
        .args(["-in", "SHA256SUMS", "-sigfile", "SHA256SUMS.sig"])
        .current_dir(&dl));
    ok(Command::new("sha256sum")
        .args(["-c", "--ignore-missing", "SHA256SUMS"])
        .current_dir(&dl));
    let home = tmp.join("home");
    std::fs::create_dir_all(&home).unwrap();
    ok(Command::new("tar")
        .args(["-xzf"])
        .arg(dl.join(&name))
        .args(["--strip-components=1", "-C"])
        .arg(&home));
    ok(Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(dl.join("release.pub.pem"))
        .args(["-rawin", "-in", "SHA256SUMS", "-sigfile", "SHA256SUMS.sig"])
        .current_dir(&home));
    ok(Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&home));
    for f in [
        "bin/fwpack",
        "lib/fwpack/aarch64-unknown-linux-musl/fwpack-updater",
        "lib/fwpack/x86_64-unknown-linux-musl/fwpack-updater",
        "lib/fwpack/riscv64gc-unknown-linux-gnu/fwpack-updater",
        "lib/fwpack/aarch64-unknown-linux-musl/fwpack-updater-bootstrap",
        "lib/fwpack/x86_64-unknown-linux-musl/fwpack-updater-bootstrap",
        "lib/fwpack/riscv64gc-unknown-linux-gnu/fwpack-updater-bootstrap",
        "share/man/man1/fwpack.1",
        "share/man/man1/fwpack-build.1",
        "share/bash-completion/completions/fwpack",
        "LICENSE-APACHE",
        "LICENSE-MIT",
    ] {
        assert!(home.join(f).is_file(), "{f} is not in {name}");
    }

    // Inputs, prepared with the checkout still visible (the test init is
    // built with cargo): kernel, DTBs, modules, Pi firmware, a rootfs.
    let cache = std::fs::canonicalize(testkit::cache_dir()).unwrap();
    let kernel = testkit::kernels::arm64().expect("Debian arm64 kernel");
    let firmware = testkit::kernels::raspi_firmware().expect("Debian's raspi-firmware");
    let init = testkit::init::InitProgram::new(MARKER)
        .build(testkit::kernels::Arch::Aarch64)
        .expect("static test init");
    let tree = home.join("rootfs");
    std::fs::create_dir_all(tree.join("sbin")).unwrap();
    std::fs::copy(&init, tree.join("sbin/init")).unwrap();
    for d in ["dev", "proc", "sys", "run"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    ok(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(home.join("rootfs.img"))
        // rpi-zero2w boots by kexec: its build writes the 33 MB kernel and
        // its initrd and the slot's updater into the slot (so does
        // qemu-aarch64's build, whose slots are 128 MiB).
        .arg("64M"));
    let vmlinuz = inside(&cache, &tmp, &kernel.vmlinuz);
    let modules = inside(&cache, &tmp, &kernel.modules_dir);
    let dtbs = inside(&cache, &tmp, &kernel.dtbs_dir);
    let firmware = inside(&cache, &tmp, &firmware);

    // Now without the checkout.
    let boards = hidden(&tmp, &cache, &["boards"]);
    assert!(boards.status.success(), "{}", show(&boards));
    let listed: Vec<String> = String::from_utf8_lossy(&boards.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    let mut shipped: Vec<String> = std::fs::read_dir(root.join("configs"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "yaml")
                .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    shipped.sort();
    assert_eq!(listed, shipped, "{}", show(&boards));

    let keygen = hidden(&tmp, &cache, &["keygen", "-o", "k.pem"]);
    assert!(keygen.status.success(), "{}", show(&keygen));
    // The slot's updater (network client) and the bootstrap's beside it.
    let lib = home.join("lib/fwpack/aarch64-unknown-linux-musl");
    let slot_updater = std::fs::read(lib.join("fwpack-updater")).unwrap();
    let updater = std::fs::read(lib.join("fwpack-updater-bootstrap")).unwrap();
    // The plain updaters' size budget (DESIGN.md): a size, not a timing,
    // so it is a test.
    for (what, bin) in [
        ("fwpack-updater", &slot_updater),
        ("fwpack-updater-bootstrap", &updater),
    ] {
        assert!(
            bin.len() <= 1 << 20,
            "the shipped aarch64 {what} is {} bytes, over its 1,048,576-byte budget",
            bin.len()
        );
    }
    assert!(
        updater.len() < slot_updater.len(),
        "the bootstrap build has no network client, so it is the smaller"
    );
    for (board, out) in [("rpi-zero2w", "pi"), ("qemu-aarch64", "qemu")] {
        let mut args = vec![
            "build",
            "--board",
            board,
            "--out",
            out,
            "--kernel",
            vmlinuz.as_str(),
            "--modules-dir",
            modules.as_str(),
            "--rootfs",
            "rootfs.img",
            "--key",
            "k.pem",
        ];
        if board == "rpi-zero2w" {
            args.extend([
                "--dtb-dir",
                dtbs.as_str(),
                "--firmware-dir",
                firmware.as_str(),
            ]);
        }
        let built = hidden(&tmp, &cache, &args);
        assert!(built.status.success(), "{board}: {}", show(&built));
        let report = String::from_utf8_lossy(&built.stderr);
        assert!(
            report.contains("updater: shipped "),
            "{board}: {}",
            show(&built)
        );
        // /init is the shipped updater, byte for byte (GNU cpio reads it).
        let init = ok(Command::new("sh").arg("-c").arg(format!(
            "gzip -dc {} | cpio -i --quiet --to-stdout init",
            home.join(out).join("boot/initramfs.cpio.gz").display()
        )));
        assert!(
            init.stdout == updater,
            "{board}: /init differs from the shipped updater"
        );
        let manifest = std::fs::read_to_string(home.join(out).join("manifest.json")).unwrap();
        let sha = |name: &str| {
            let o = ok(Command::new("sha256sum").arg(lib.join(name)));
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned()
        };
        // Both boards boot by kexec: /init and the slot's updater.
        for want in [
            "\"source\": \"shipped\"".to_string(),
            format!("\"sha256\": \"{}\"", sha("fwpack-updater-bootstrap")),
            format!("\"sha256\": \"{}\"", sha("fwpack-updater")),
            format!("\"version\": \"{version}\""),
        ] {
            assert!(
                manifest.contains(&want),
                "{board}: manifest lacks {want}:\n{manifest}"
            );
        }
    }

    // The qemu-aarch64 artifacts boot as the other build tests boot theirs.
    let out = home.join("qemu");
    let mut c = testkit::qemu::Qemu::new(testkit::kernels::Arch::Aarch64, out.join("boot/Image"))
        .initrd(out.join("boot/initramfs.cpio.gz"))
        .memory(512)
        .drive(out.join("sdcard.img"))
        .name("release-archive-aarch64")
        .spawn()
        .expect("qemu");
    for line in [
        "fwpack-updater: fwpack-updater",
        "kernel modules ready",
        "kexec into slot A's kernel",
        "switching root to slot A",
        MARKER,
    ] {
        if let Err(e) = c.wait_for(line, std::time::Duration::from_secs(180)) {
            panic!(
                "waiting for `{line}`: {e}; console log: {}",
                c.log_path().display()
            );
        }
    }
}
