//! Host prerequisites, installed only when missing.
//!
//! A fresh Debian machine has rustup and cargo and nothing else we need.
//! Every tool the tests talk to for real (GNU cpio, openssl, QEMU, cross
//! linkers, mtools…) is listed here with the Debian package that provides
//! it, so a green run on a developer machine cannot hide a missing step.

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// (command looked up on PATH, Debian package that provides it)
pub const TOOLS: &[(&str, &str)] = &[
    ("cc", "gcc"),
    ("openssl", "openssl"),
    ("cpio", "cpio"),
    ("bsdtar", "libarchive-tools"),
    ("readelf", "binutils"),
    ("file", "file"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("qemu-system-riscv64", "qemu-system-misc"),
    ("qemu-riscv64-static", "qemu-user-static"),
    // The aarch64 release binary is run under it (`cargo xtask release`).
    ("qemu-aarch64-static", "qemu-user-static"),
    // ring's C code for the x86_64 musl release binary of fwpack.
    ("musl-gcc", "musl-tools"),
    // Checks the mark-good unit (tests/release_mark_good.rs); Debian
    // ships systemd-analyze in systemd itself.
    ("systemd-analyze", "systemd"),
    ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    ("riscv64-linux-gnu-gcc", "gcc-riscv64-linux-gnu"),
    ("arm-linux-gnueabihf-as", "binutils-arm-linux-gnueabihf"),
    ("strip", "binutils"),
    ("sfdisk", "fdisk"),
    ("mdir", "mtools"),
    ("partx", "util-linux"),
    ("fsck.vfat", "dosfstools"),
    ("mkfs.vfat", "dosfstools"),
    ("losetup", "mount"),
    ("mkfs.ext4", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("dumpe2fs", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("cmp", "diffutils"),
    ("time", "time"),
    ("softhsm2-util", "softhsm2"),
    ("pkcs11-tool", "opensc"),
    ("shellcheck", "shellcheck"),
    ("git", "git"),
    ("python3", "python3"),
    ("depmod", "kmod"),
    ("zstd", "zstd"),
    // The image-source tests and `xtask bench http` serve images with a
    // real server (testkit::http::Nginx) and compare against curl. (In
    // bookworm nginx-light is only a transitional package for nginx.)
    ("nginx", "nginx"),
    ("curl", "curl"),
    // Debian trixie's riscv64 modules are .ko.xz; the kernel cache
    // decompresses them once.
    ("xz", "xz-utils"),
    // `fwpack build` writes sdcard.img.bmap; the tests flash through it
    // with Debian's bmaptool.
    ("bmaptool", "bmap-tools"),
    // goosebit's web UI, opened by fleet_goosebit_ui_* through WebDriver.
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
    // Installs the npm packages of the UI's CDN files (ensure_goosebit_ui).
    ("npm", "npm"),
];

/// Packages that provide files rather than commands: the C headers and
/// libraries the tests compile and link against. A cross gcc only
/// Recommends its libc, and we install with --no-install-recommends, so
/// each libc is named here (`aarch64-linux-gnu-gcc hello.c` needs the
/// arm64 headers; rustc's host `cc` link needs the host crt files).
const FILES: &[(&str, &str)] = &[
    ("/usr/include/stdio.h", "libc6-dev"),
    ("/usr/lib/x86_64-linux-gnu/crt1.o", "libc6-dev"),
    (
        "/usr/aarch64-linux-gnu/include/stdio.h",
        "libc6-dev-arm64-cross",
    ),
    (
        "/usr/aarch64-linux-gnu/lib/libc.so",
        "libc6-dev-arm64-cross",
    ),
    (
        "/usr/riscv64-linux-gnu/include/stdio.h",
        "libc6-dev-riscv64-cross",
    ),
    (
        "/usr/riscv64-linux-gnu/lib/libc.a",
        "libc6-dev-riscv64-cross",
    ),
    // OpenSBI for qemu-riscv64 (testkit::qemu::OPENSBI_FW_DYNAMIC).
    (
        "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin",
        "opensbi",
    ),
    // UEFI firmware for qemu-x86_64-efi (bootstrap A/B with BootNext):
    // the code and a blank variable store each test copies.
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf"),
    ("/usr/share/OVMF/OVMF_VARS_4M.fd", "ovmf"),
];

pub const RUST_TARGETS: &[&str] = &[
    "aarch64-unknown-linux-musl",
    "x86_64-unknown-linux-musl",
    "riscv64gc-unknown-linux-gnu",
];

pub fn ensure(sh: &Shell) -> Result<()> {
    ensure_rust_targets(sh)?;
    ensure_debian_packages(sh)?;
    ensure_python_venv(
        sh,
        "buildroot-external/utils/requirements.txt",
        "venv",
        None,
    )?;
    // goosebit, a DDI server, and our plugin for it (the fleet_goosebit test).
    ensure_python_venv(
        sh,
        "python/goosebit-requirements.txt",
        "goosebit-venv",
        Some("python/fwpack-goosebit"),
    )?;
    ensure_goosebit_ui(sh)
}

/// The files goosebit's web UI loads from CDNs, as pinned npm packages
/// (python/goosebit-ui, lock file without download addresses) in
/// `<cache>/goosebit-ui-npm`, for fleet_goosebit_ui_*. Redone only when
/// the pins change.
fn ensure_goosebit_ui(sh: &Shell) -> Result<()> {
    let mut pins = String::new();
    for f in ["package.json", "package-lock.json"] {
        let path = format!("python/goosebit-ui/{f}");
        pins.push_str(&sh.read_file(&path).context(path)?);
    }
    let dir = cache_dir(sh).join("goosebit-ui-npm");
    let stamp = dir.join(".fwpack-pins");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(pins.as_str()) {
        return Ok(());
    }
    sh.create_dir(&dir)?;
    for f in ["package.json", "package-lock.json"] {
        sh.copy_file(format!("python/goosebit-ui/{f}"), dir.join(f))?;
    }
    let _cd = sh.push_dir(&dir);
    cmd!(sh, "npm ci --ignore-scripts --no-audit --no-fund")
        .run()
        .context("npm ci of goosebit's UI files")?;
    sh.write_file(&stamp, pins)?;
    Ok(())
}

/// `$FWPACK_CACHE`, else `<target>/fwpack-cache`.
fn cache_dir(sh: &Shell) -> std::path::PathBuf {
    match std::env::var_os("FWPACK_CACHE") {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => std::env::var_os("CARGO_TARGET_DIR")
            .filter(|d| !d.is_empty())
            .map_or_else(|| sh.current_dir().join("target"), std::path::PathBuf::from)
            .join("fwpack-cache"),
    }
}

/// Pinned PyPI packages (PyKCS11 for the PKCS#11 signer, flake8 and
/// oelint-adv for the Buildroot/Yocto trees) in `<cache>/venv`; the
/// release_* tests use them from there. Redone only when the pins change.
fn ensure_python_venv(
    sh: &Shell,
    requirements: &str,
    name: &str,
    local: Option<&str>,
) -> Result<()> {
    let mut pins = sh
        .read_file(requirements)
        .with_context(|| requirements.to_string())?;
    if let Some(dir) = local {
        // A change to the local package reinstalls it too.
        for f in ["pyproject.toml", "fwpack_goosebit/__init__.py"] {
            let path = format!("{dir}/{f}");
            pins.push_str(&sh.read_file(&path).context(path)?);
        }
    }
    let venv = cache_dir(sh).join(name);
    let stamp = venv.join(".fwpack-requirements");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(pins.as_str()) {
        return Ok(());
    }
    // Debian's python3 has no venv/ensurepip without python3-venv.
    if cmd!(sh, "python3 -m venv --clear {venv}").run().is_err() && on_path("apt-get") {
        let (prog, apt): (&str, &[&str]) = if is_root() {
            ("apt-get", &[])
        } else {
            ("sudo", &["-n", "apt-get"])
        };
        cmd!(
            sh,
            "{prog} {apt...} -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends python3-venv"
        )
        .run()?;
        cmd!(sh, "python3 -m venv --clear {venv}").run()?;
    }
    let pip = venv.join("bin/pip");
    cmd!(
        sh,
        "{pip} install -q --disable-pip-version-check --only-binary :all: -r {requirements}"
    )
    .run()
    .context("pip install into the test venv")?;
    if let Some(dir) = local {
        // Built by pip with setuptools from PyPI; it has no dependencies
        // of its own beyond the pinned ones.
        cmd!(
            sh,
            "{pip} install -q --disable-pip-version-check --no-deps {dir}"
        )
        .run()
        .context("pip install of the goosebit plugin")?;
    }
    sh.write_file(&stamp, pins)?;
    Ok(())
}

fn ensure_rust_targets(sh: &Shell) -> Result<()> {
    let installed = cmd!(sh, "rustup target list --installed").read()?;
    let missing: Vec<&str> = RUST_TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if !missing.is_empty() {
        cmd!(sh, "rustup target add {missing...}").run()?;
    }
    let components = cmd!(sh, "rustup component list --installed").read()?;
    for c in ["rustfmt", "clippy"] {
        if !components.lines().any(|l| l.starts_with(c)) {
            cmd!(sh, "rustup component add {c}").run()?;
        }
    }
    Ok(())
}

fn ensure_debian_packages(sh: &Shell) -> Result<()> {
    let mut missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(tool, _)| !on_path(tool))
        .map(|(_, pkg)| *pkg)
        .chain(
            FILES
                .iter()
                .filter(|(f, _)| !std::path::Path::new(f).exists())
                .map(|(_, pkg)| *pkg),
        )
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !on_path("apt-get") {
        bail!(
            "missing host tools ({}) and no apt-get to install them",
            missing.join(" ")
        );
    }
    // xshell cannot splat the program name, so sudo (when needed) is the
    // program and apt-get its first argument.
    let (prog, apt): (&str, &[&str]) = if is_root() {
        ("apt-get", &[])
    } else {
        ("sudo", &["-n", "apt-get"])
    };
    let all: &[&str] = &missing;
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    let _env = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    cmd!(sh, "{prog} {apt...} -o DPkg::Lock::Timeout=600 update -qq")
        .run()
        .context("apt-get update")?;
    // One transaction first; if the resolver balks at the combination
    // (seen with qemu-user-static next to backported qemu-utils), install
    // package by package so one conflict does not block the rest.
    if cmd!(
        sh,
        "{prog} {apt...} -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends {all...}"
    )
    .run()
    .is_err()
    {
        for pkg in &missing {
            cmd!(
                sh,
                "{prog} {apt...} -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends {pkg}"
            )
            .run()
            .with_context(|| format!("apt-get install {pkg}"))?;
        }
    }
    Ok(())
}

pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
