//! buildroot-external's post-image script run the way Buildroot runs it
//! (`sh post-image.sh $BINARIES_DIR <BR2_ROOTFS_POST_SCRIPT_ARGS>` with
//! BINARIES_DIR, TARGET_DIR, HOST_DIR, BASE_DIR in the environment) on an
//! output tree laid out like Buildroot's for the Zero 2 W: `Image`, a flat
//! `bcm2710-rpi-zero-2-w.dtb`, `rpi-firmware/`, `rootfs.ext4`, the static
//! updater in `target/usr/bin`, fwpack and its data in `host/`. The kernel,
//! DTB and modules are Debian's real ones; the GPU firmware files are
//! stand-ins with Buildroot's names (fwpack copies them, never reads them).

#[path = "release_common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ok, run, workspace};

/// The aarch64 updater, built exactly as `fwpack build` builds it (same
/// flags, so cargo reuses the artifact the other build tests made).
fn aarch64_updater() -> PathBuf {
    let triple = "aarch64-unknown-linux-musl";
    ok(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(workspace())
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
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS",
                "-C target-feature=+crt-static",
            )
            .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld"),
    );
    testkit::target_dir()
        .join(triple)
        .join("device/fwpack-updater")
}

struct Output {
    _tmp: tempfile::TempDir,
    base: PathBuf,
}

impl Output {
    fn binaries(&self) -> PathBuf {
        self.base.join("images")
    }

    fn post_image(&self, env: &[(&str, &Path)], args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("sh");
        cmd.arg(workspace().join("buildroot-external/board/rpi-zero2w/post-image.sh"))
            .arg(self.binaries())
            .args(args)
            .current_dir(&self.base)
            .env("BINARIES_DIR", self.binaries())
            .env("TARGET_DIR", self.base.join("target"))
            .env("HOST_DIR", self.base.join("host"))
            .env("BASE_DIR", &self.base)
            .env("BUILD_DIR", self.base.join("build"))
            .env(
                "BR2_EXTERNAL_FWPACK_PATH",
                workspace().join("buildroot-external"),
            )
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove("FWPACK_KEY")
            .env_remove("FWPACK_SIGNER_CMD")
            .env_remove("FWPACK_PUBKEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(&mut cmd)
    }
}

fn symlink(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(src, dst).unwrap();
}

/// Buildroot's output/ for fwpack_rpizero2w_defconfig, after the rootfs
/// images and before post-image.
fn buildroot_output() -> Output {
    let kernel = testkit::kernels::arm64().expect("Debian arm64 kernel");
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    let images = base.join("images");
    std::fs::create_dir_all(&images).unwrap();

    std::fs::copy(&kernel.vmlinuz, images.join("Image")).unwrap();
    // Buildroot installs the in-tree DTB flat, under the RPi kernel's name.
    std::fs::copy(
        kernel.dtbs_dir.join("broadcom/bcm2837-rpi-zero-2-w.dtb"),
        images.join("bcm2710-rpi-zero-2-w.dtb"),
    )
    .unwrap();
    // What BR2_PACKAGE_RPI_FIRMWARE installs for the 64-bit Zero 2 W.
    let fw = images.join("rpi-firmware");
    std::fs::create_dir_all(fw.join("overlays")).unwrap();
    for (name, fill) in [("bootcode.bin", 1u8), ("start.elf", 2), ("fixup.dat", 3)] {
        std::fs::write(fw.join(name), vec![fill; 4096 * usize::from(fill)]).unwrap();
    }
    std::fs::write(fw.join("config.txt"), "kernel=Image\narm_64bit=1\n").unwrap();
    std::fs::write(fw.join("cmdline.txt"), "root=/dev/mmcblk0p2 rootwait\n").unwrap();
    symlink(
        &kernel.modules_dir,
        &base.join("target/lib/modules").join(&kernel.release),
    );
    let updater = base.join("target/usr/bin/fwpack-updater");
    std::fs::create_dir_all(updater.parent().unwrap()).unwrap();
    std::fs::copy(aarch64_updater(), &updater).unwrap();

    let tree = base.join("target-rootfs");
    for d in ["sbin", "dev", "proc", "sys"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::write(tree.join("etc-issue"), "fwpack post-image test\n").unwrap();
    ok(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(images.join("rootfs.ext4"))
        // rpi-zero2w boots by kexec: the build writes the kernel and its
        // initrd into the slot.
        .arg("64M"));

    // What host-fwpack installs: the tool, and its data (the .mk's
    // HOST_FWPACK_INSTALL_DATA hook).
    symlink(
        Path::new(env!("CARGO_BIN_EXE_fwpack")),
        &base.join("host/bin/fwpack"),
    );
    for d in ["configs", "recipes"] {
        let to = base.join("host/share/fwpack").join(d);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(workspace().join(d)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    Output { _tmp: tmp, base }
}

fn verify(o: &Output, pubkey: &Path) {
    let out = o.binaries().join("fwpack");
    for f in [
        "sdcard.img",
        "update.fwi",
        "boot/initramfs.cpio.gz",
        "manifest.json",
        "boot/config.txt",
        "boot/cmdline.txt",
        "boot/kernel8.img",
        "boot/bootcode.bin",
        "boot/start.elf",
    ] {
        assert!(out.join(f).is_file(), "{f} missing from {}", out.display());
    }
    ok(Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .arg("verify")
        .arg(out.join("update.fwi"))
        .arg("-k")
        .arg(pubkey)
        .args(["--board", "rpi-zero2w", "--min-version", "7"]));
    // The GPU firmware on the boot partition is Buildroot's.
    assert_eq!(
        std::fs::read(out.join("boot/start.elf")).unwrap(),
        std::fs::read(o.binaries().join("rpi-firmware/start.elf")).unwrap()
    );
    // The updater in the initramfs is the one Buildroot built, byte for byte.
    let list = ok(Command::new("bsdtar")
        .arg("-tvf")
        .arg(out.join("boot/initramfs.cpio.gz")));
    assert!(String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l.ends_with(" init")));
    let x = tempfile::tempdir().unwrap();
    ok(Command::new("bsdtar")
        .arg("-xf")
        .arg(out.join("boot/initramfs.cpio.gz"))
        .arg("-C")
        .arg(x.path())
        .arg("init"));
    assert_eq!(
        std::fs::read(x.path().join("init")).unwrap(),
        std::fs::read(o.base.join("target/usr/bin/fwpack-updater")).unwrap()
    );
}

#[test]
fn post_image_builds_signed_outputs_from_buildroot_outputs() {
    for tool in ["mkfs.ext4", "bsdtar"] {
        if !testkit::tools::require(tool) {
            return;
        }
    }
    let o = buildroot_output();

    // No key configured: a development key is made once, with a warning.
    let first = o.post_image(&[], &["--version", "7", "--label", "br-test"]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "post-image failed:\n{stderr}");
    assert!(
        stderr.contains("WARNING: signing with the development key"),
        "{stderr}"
    );
    verify(&o, &o.base.join("fwpack-dev-key.pub.pem"));

    // A release key from the environment; the output directory is rebuilt.
    ok(Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .current_dir(&o.base)
        .args(["keygen", "-o", "release.pem"]));
    let release = o.base.join("release.pem");
    let second = o.post_image(&[("FWPACK_KEY", &release)], &["--version", "7"]);
    assert!(
        second.status.success(),
        "post-image failed:\n{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(!String::from_utf8_lossy(&second.stderr).contains("WARNING"));
    verify(&o, &o.base.join("release.pub.pem"));
    let stale = run(Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .arg("verify")
        .arg(o.binaries().join("fwpack/update.fwi"))
        .arg("-k")
        .arg(o.base.join("fwpack-dev-key.pub.pem")));
    assert!(
        !stale.status.success(),
        "the release image must not carry the dev key's signature"
    );

    // Missing inputs are refused with Buildroot-level advice.
    std::fs::remove_file(o.base.join("target/usr/bin/fwpack-updater")).unwrap();
    let refused = o.post_image(&[("FWPACK_KEY", &release)], &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("enable BR2_PACKAGE_FWPACK"));
}
