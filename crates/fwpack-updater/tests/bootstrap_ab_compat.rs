//! The state area's compatibility rule end to end (docs/FORMAT.md,
//! "Compatibility: version and compatible since"): the bootstrap's
//! updater is not updated in the field, the slot's one is, so what an
//! updater from this tree writes must boot under the bootstrap of an
//! earlier release.
//!
//! The earlier bootstrap is built at test time from the source of a
//! pinned commit (`git archive`, its own target directory, cached there):
//! [`OLD_COMMIT`], the last commit before the state record had a version
//! field. QEMU x86_64 (TCG), the disk and init of tests/qemu_x86_64.rs.
//!
//! Updater N applies v2 to slot B (the host build, as the running system
//! would) and, as slot B's own /usr/bin/fwpack-updater, confirms it; the
//! old bootstrap boots B on trial, then B as the confirmed active slot.

mod qemu_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qemu_support::*;
use testkit::kernels::{self, Arch};

const ARCH: Arch = Arch::X86_64;
const WAIT: Duration = Duration::from_secs(120);
/// fwpack before the state record's version / compatible-since fields.
const OLD_COMMIT: &str = "3f3f8b5";

fn config() -> String {
    "target = /dev/nvme0n1\n\
     modules = /etc/fwpack/modules.load\n\
     keys = /etc/fwpack/keys\n\
     images = /images\n\
     device_timeout = 30\n\
     on_failure = poweroff\n\
     root_group = system\n\
     root_fstype = ext4\n\
     tries = 2\n"
        .into()
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The device build of fwpack-updater at [`OLD_COMMIT`], built once into
/// `target/compat/`. `None` (with the reason printed) when this is not a
/// git checkout that has the commit, e.g. a source tarball.
fn old_bootstrap_updater() -> Option<PathBuf> {
    let root = testkit::workspace_root();
    let has = Command::new("git")
        .args(["cat-file", "-e", &format!("{OLD_COMMIT}^{{commit}}")])
        .current_dir(&root)
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        eprintln!(
            "skipping: no git checkout with commit {OLD_COMMIT} to build the old bootstrap from"
        );
        return None;
    }
    let base = testkit::target_dir().join("compat");
    let src = base.join(format!("src-{OLD_COMMIT}"));
    let target_dir = base.join(format!("target-{OLD_COMMIT}"));
    if !src.join("Cargo.toml").is_file() {
        std::fs::create_dir_all(&src).unwrap();
        let mut archive = Command::new("git")
            .args(["archive", "--format=tar", OLD_COMMIT])
            .current_dir(&root)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let tar = archive.stdout.take().unwrap();
        run(Command::new("tar").arg("-x").arg("-C").arg(&src).stdin(tar)).unwrap();
        assert!(
            archive.wait().unwrap().success(),
            "git archive {OLD_COMMIT}"
        );
    }
    let triple = triple(ARCH);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        // Offline and locked: the pin's crates are those of Cargo.lock,
        // which the workspace build has fetched (as in release_pin.rs).
        .args([
            "build",
            "--offline",
            "--locked",
            "-p",
            "fwpack-updater",
            "--bin",
        ])
        .args(["fwpack-updater", "--profile", "device", "--target", triple])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&src)
        .env_remove("RUSTC_WRAPPER"))
    .unwrap();
    Some(target_dir.join(triple).join("device/fwpack-updater"))
}

fn sha256(p: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

#[test]
fn bootstrap_ab_compat_old_bootstrap_boots_what_updater_n_applied_and_confirmed() {
    if !tools_present(ARCH) {
        return;
    }
    let Some(old) = old_bootstrap_updater() else {
        return;
    };
    let new = updater_binary(ARCH);
    assert_ne!(sha256(&old), sha256(&new), "the two updaters are one build");
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let a = image(&rootfs(w, ARCH, "root-a", 1, true), 1);
    let slot_updater = std::fs::read(&new).unwrap();
    let b = image(
        &rootfs_with(
            w,
            "root-b",
            2,
            true,
            &test_init(ARCH),
            &[(SLOT_UPDATER, &slot_updater, 0o755)],
            ROOTFS_SIZE,
        ),
        2,
    );
    // Slot A installed and confirmed, then v2 applied to B: both by
    // updater N on the disk file.
    let disk = disk(w, false, &a);
    std::fs::write(w.join("b.fwi"), &b).unwrap();
    run(Command::new(host_updater())
        .arg("apply")
        .arg(w.join("b.fwi"))
        .arg("--target")
        .arg(&disk)
        .args(["--tries", "2", "--key"])
        .arg(w.join("key.pem")))
    .unwrap();
    let st = status_json(&disk);
    assert!(st.contains("\"pending\":\"B\""), "{st}");

    let initrd = initramfs_with_updater(w, &old, &config(), &[], Some((&kernel, &["loop"])));
    let mut c = boot(ARCH, &kernel, &initrd, &disk, "compat-1");
    expect(
        &mut c,
        &[
            "booting slot B (version 2 v2), trial",
            "FWPACK-TEST booted slot B version 2 pid 1",
            &format!("FWPACK-TEST updater {SLOT_UPDATER}"),
            "slot B (version 2) confirmed: it is now the active slot",
            "FWPACK-TEST mark-good: Ok(Some(0))",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let mut c = boot(ARCH, &kernel, &initrd, &disk, "compat-2");
    let lines = expect(
        &mut c,
        &[
            "booting slot B (version 2 v2)",
            "FWPACK-TEST booted slot B version 2 pid 1",
        ],
        WAIT,
    );
    assert!(!lines[0].contains("trial"), "{}", lines[0]);
    expect_exit(&mut c, WAIT);
    let st = status_json(&disk);
    assert!(
        st.contains("\"active\":\"B\"") && st.contains("\"confirmed\":true"),
        "{st}"
    );
}
