//! The e2e root filesystems, read by e2fsprogs rather than by us: e2fsck
//! finds them clean, the label is what we asked for, debugfs reads the
//! version and the blob back, and the blob's fold is the one the guest
//! init must print.

use std::process::Command;

use testkit::kernels::Arch;
use testkit::rootfs::{self, Spec};

fn tool(name: &str) -> Option<std::path::PathBuf> {
    if testkit::tools::require(name) {
        testkit::tools::find(name)
    } else {
        None
    }
}

#[test]
fn rootfs_is_clean_ext4_with_the_promised_contents() {
    let (Some(e2fsck), Some(debugfs), Some(dumpe2fs)) =
        (tool("e2fsck"), tool("debugfs"), tool("dumpe2fs"))
    else {
        return;
    };
    if !testkit::tools::require("mkfs.ext4") {
        return;
    }
    let dir = tempfile_dir();
    let r = rootfs::build(
        &Spec {
            name: "t-v7".into(),
            version: 7,
            confirm: true,
            blob_bytes: 3 << 20,
            seed: 99,
            greeting: Some("hi".into()),
            room_mib: 0,
        },
        Arch::X86_64,
        &dir,
    )
    .unwrap();
    let fsck = Command::new(e2fsck)
        .arg("-fn")
        .arg(&r.path)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let head = Command::new(dumpe2fs)
        .arg("-h")
        .arg(&r.path)
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout);
    assert!(
        head.lines()
            .any(|l| l.starts_with("Filesystem volume name:") && l.ends_with("t-v7")),
        "{head}"
    );
    let cat = |p: &str| {
        let o = Command::new(&debugfs)
            .arg("-R")
            .arg(format!("cat {p}"))
            .arg(&r.path)
            .output()
            .unwrap();
        o.stdout
    };
    assert_eq!(cat("/etc/fwpack-system/version"), b"7\n");
    assert_eq!(cat("/etc/fwpack-system/greeting"), b"hi\n");
    assert!(cat("/etc/fwpack-system/mark-good").is_empty());
    let init = cat("/sbin/init");
    assert_eq!(init.get(..4), Some(&b"\x7fELF"[..]));
    let blob = cat("/data/blob");
    assert_eq!(blob.len(), 3 << 20);
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for w in blob.chunks(8) {
        let mut b = [0u8; 8];
        b[..w.len()].copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    assert_eq!(
        r.blob_line().unwrap(),
        format!("FWPACK-SYSTEM blob {} fold {h:016x}", 3 << 20)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn data_disk_carries_the_files_under_its_label() {
    let (Some(debugfs), Some(dumpe2fs)) = (tool("debugfs"), tool("dumpe2fs")) else {
        return;
    };
    if !testkit::tools::require("mkfs.ext4") {
        return;
    }
    let dir = tempfile_dir();
    let src = dir.join("u.fwi");
    std::fs::write(&src, b"not really an image").unwrap();
    let img = rootfs::data_disk("FWUPTEST", &[("updates/u.fwi", &src)], &dir, 8).unwrap();
    let head = Command::new(dumpe2fs).arg("-h").arg(&img).output().unwrap();
    assert!(String::from_utf8_lossy(&head.stdout).contains("FWUPTEST"));
    let o = Command::new(debugfs)
        .arg("-R")
        .arg("cat /updates/u.fwi")
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(o.stdout, b"not really an image");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let d = testkit::target_dir().join("tmp").join(format!(
        "testkit-rootfs-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
