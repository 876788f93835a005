//! Shared by the `fwpack build` tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const EPOCH: &str = "1700000000";

pub fn fwpack(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .args(args)
        .current_dir(dir)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .expect("run fwpack")
}

pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `dir/rootfs.img`: a real 8 MiB ext4 root filesystem whose `/sbin/init`
/// prints `marker` and powers off, so a boot test can see the built image
/// run all the way into its slot.
pub fn ext4_rootfs(dir: &Path, arch: testkit::kernels::Arch, marker: &str) -> PathBuf {
    ext4_rootfs_with(dir, arch, &testkit::init::InitProgram::new(marker), "8M")
}

/// [`ext4_rootfs`] with another init program and of `size` (mkfs.ext4's
/// notation): a kexec board's build writes the slot kernel and its initrd
/// into it.
pub fn ext4_rootfs_with(
    dir: &Path,
    arch: testkit::kernels::Arch,
    init: &testkit::init::InitProgram,
    size: &str,
) -> PathBuf {
    let init = init.build(arch).expect("static test init");
    let tree = dir.join("rootfs");
    std::fs::create_dir_all(tree.join("sbin")).unwrap();
    std::fs::copy(&init, tree.join("sbin/init")).unwrap();
    for d in ["dev", "proc", "sys", "run"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    let img = dir.join("rootfs.img");
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&img)
        .arg(size)
        .output()
        .expect("mkfs.ext4 (e2fsprogs)");
    assert!(mkfs.status.success(), "{}", show(&mkfs));
    img
}

/// Waits for each console line in turn; on failure names the saved log.
pub fn expect_lines(c: &mut testkit::qemu::Console, lines: &[&str], secs: u64) {
    for line in lines {
        if let Err(e) = c.wait_for(line, std::time::Duration::from_secs(secs)) {
            panic!(
                "waiting for `{line}`: {e}; console log: {}",
                c.log_path().display()
            );
        }
    }
}
