//! The riscv64 boards, built from Debian trixie's riscv64 kernel (fetched
//! through testkit's cached-inputs mechanism, like the arm64 tests):
//!
//! - the updater is static (no musl std for riscv64 reaches this
//!   toolchain, so glibc + crt-static, linked by Debian's riscv64 gcc):
//!   elfcheck, readelf and file agree, and it runs under qemu-riscv64-static;
//! - `fwpack build --board visionfive2` twice gives a byte-identical
//!   `sdcard.img`, whose FAT boot partition, read back with mtools, holds
//!   `extlinux/extlinux.conf` and, at the paths it names, the kernel, both
//!   board revisions' DTBs and the initramfs; every ELF in that initramfs
//!   passes the riscv64 policy;
//! - the qemu-riscv64 image boots under QEMU (TCG, `virt`, Debian's
//!   OpenSBI) through the updater into slot A.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::kernels::{self, Arch, Kernel};

const MARKER: &str = "FWPACK-BUILD-TEST riscv64 slot A init";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn board(name: &str) -> board::Board {
    board::Board::find(&root().join("configs"), name).unwrap_or_else(|e| panic!("{e}"))
}

fn updater(b: &board::Board) -> PathBuf {
    pipeline::checked_updater(
        b,
        &pipeline::Updater::Build { workspace: root() },
        pipeline::Flavor::Bootstrap,
        &mut |_| {},
    )
    .map(|(bin, _)| bin)
    .unwrap_or_else(|e| panic!("riscv64 updater: {e}"))
}

/// An 8 MiB ext4 root filesystem whose `/sbin/init` prints [`MARKER`].
fn rootfs(dir: &Path) -> PathBuf {
    let init = testkit::init::InitProgram::new(MARKER)
        .build(Arch::Riscv64)
        .expect("static riscv64 test init");
    let tree = dir.join("rootfs");
    std::fs::create_dir_all(tree.join("sbin")).unwrap();
    std::fs::copy(&init, tree.join("sbin/init")).unwrap();
    for d in ["dev", "proc", "sys", "run"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    let img = dir.join("rootfs.img");
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&img)
        .arg("8M")
        .status()
        .expect("mkfs.ext4 (e2fsprogs)");
    assert!(st.success());
    img
}

fn build(b: &board::Board, k: &Kernel, updater: &Path, rootfs: &Path, out: &Path) {
    let inputs = pipeline::Inputs {
        out_dir: out.to_path_buf(),
        recipe: Some(root().join("recipes/updater-initramfs.yaml")),
        kernel: k.vmlinuz.clone(),
        dtb_dir: (!b.kernel.dtbs.is_empty()).then(|| k.dtbs_dir.clone()),
        firmware_dir: None,
        modules_dir: Some(k.modules_dir.clone()),
        rootfs: Some(rootfs.to_path_buf()),
        updater: pipeline::Updater::File(updater.to_path_buf()),
        signer: Box::new(ed25519_dalek::SigningKey::from_bytes(&[7; 32])),
        include_images: Vec::new(),
        payload_version: 1,
        version_label: "v1".into(),
        jobs: 2,
        sbom_record: true,
        zero_chunks: true,
    };
    pipeline::build(b, &inputs, &mut |_| {}).unwrap_or_else(|e| panic!("build {}: {e}", b.name));
}

fn riscv64_kernel() -> Option<Kernel> {
    if !testkit::tools::require("apt-get") || !testkit::tools::require("dpkg-deb") {
        return None;
    }
    Some(kernels::riscv64().expect("Debian trixie riscv64 kernel (linux-image-riscv64)"))
}

#[test]
fn riscv64_updater_is_static_and_runs() {
    let bin = updater(&board("visionfive2"));
    let report = elfcheck::check_file(&bin, &elfcheck::Policy::default()).unwrap();
    let facts = report.facts.as_ref().unwrap();
    assert_eq!(facts.machine, elfcheck::Machine::Riscv64);
    assert!(
        matches!(
            facts.linkage,
            elfcheck::Linkage::Static | elfcheck::Linkage::StaticPie
        ),
        "{:?}",
        facts.linkage
    );
    // readelf agrees: no interpreter, no needed libraries.
    let readelf = Command::new("readelf")
        .args(["-l", "-d"])
        .arg(&bin)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&readelf.stdout);
    assert!(
        !text.contains("INTERP") && !text.contains("(NEEDED)"),
        "{text}"
    );
    let file = Command::new("file").arg("-b").arg(&bin).output().unwrap();
    let file = String::from_utf8_lossy(&file.stdout);
    assert!(
        file.contains("RISC-V") && file.contains("statically linked"),
        "{file}"
    );
    eprintln!(
        "riscv64 updater: {} bytes",
        std::fs::metadata(&bin).unwrap().len()
    );

    let out = Command::new("qemu-riscv64-static")
        .arg(&bin)
        .arg("--version")
        .output()
        .expect("qemu-riscv64-static (qemu-user-static)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
}

/// Byte offset of partition 1 per sfdisk (the peer tool, not our reader).
fn first_partition_offset(img: &Path) -> u64 {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(img)
        .output()
        .expect("sfdisk (fdisk)");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let table = &v["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    table["partitions"][0]["start"].as_u64().unwrap() * sector
}

/// A file from the FAT partition at `offset`, read with mtools.
fn mcopy(img: &Path, offset: u64, path: &str) -> Vec<u8> {
    let out = Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@{offset}", img.display()))
        .arg(format!("::{path}"))
        .arg("-")
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .expect("mcopy (mtools)");
    assert!(
        out.status.success(),
        "mcopy ::{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn visionfive2_sdcard_is_reproducible_and_boots_through_extlinux() {
    let Some(k) = riscv64_kernel() else { return };
    if !testkit::tools::require("mcopy") || !testkit::tools::require("sfdisk") {
        return;
    }
    let b = board("visionfive2");
    let bin = updater(&b);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let rootfs = rootfs(dir);
    build(&b, &k, &bin, &rootfs, &dir.join("one"));
    build(&b, &k, &bin, &rootfs, &dir.join("two"));
    let img = dir.join("one/sdcard.img");
    let (a, c) = (
        std::fs::read(&img).unwrap(),
        std::fs::read(dir.join("two/sdcard.img")).unwrap(),
    );
    assert!(a == c, "two builds of sdcard.img differ");
    drop((a, c));

    // The boot partition as U-Boot's distro boot sees it.
    let off = first_partition_offset(&img);
    let conf = String::from_utf8(mcopy(&img, off, "/extlinux/extlinux.conf")).unwrap();
    let key = |k: &str| {
        conf.lines()
            .find_map(|l| l.trim().strip_prefix(k).map(str::trim))
            .unwrap_or_else(|| panic!("extlinux.conf has no `{k}` line:\n{conf}"))
            .to_owned()
    };
    let (linux, initrd, fdtdir, append) = (
        key("linux "),
        key("initrd "),
        key("fdtdir "),
        key("append "),
    );
    assert_eq!(key("default "), "fwpack", "{conf}");
    assert!(conf.lines().any(|l| l.trim() == "label fwpack"), "{conf}");
    assert_eq!(
        mcopy(&img, off, &linux),
        std::fs::read(&k.vmlinuz).unwrap(),
        "{linux} is Debian's riscv64 Image"
    );
    let initramfs = mcopy(&img, off, &initrd);
    assert_eq!(
        initramfs,
        std::fs::read(dir.join("one/boot").join(initrd.trim_start_matches('/'))).unwrap()
    );
    for rev in ["v1.2a", "v1.3b"] {
        let rel = format!("starfive/jh7110-starfive-visionfive-2-{rev}.dtb");
        assert_eq!(
            mcopy(
                &img,
                off,
                &format!("{}/{rel}", fdtdir.trim_end_matches('/'))
            ),
            std::fs::read(k.dtbs_dir.join(&rel)).unwrap(),
            "{rel} under fdtdir {fdtdir}"
        );
    }
    assert!(
        append.starts_with("console=ttyS0,115200") && append.contains("rootwait"),
        "{append}"
    );

    // Every executable ELF in the initramfs passes the riscv64 policy,
    // the updater as /init among them; the SD host and ext4 modules and
    // their load order are there.
    let policy = elfcheck::Policy {
        machine: Some(elfcheck::Machine::Riscv64),
        size_budget: Some(b.updater.size_budget),
        require_stripped: true,
        require_static: true,
    };
    let mut reader = initramfs::Reader::new(std::io::Cursor::new(initramfs)).unwrap();
    let (mut elves, mut names) = (Vec::new(), Vec::new());
    while let Some(e) = reader.next_entry().unwrap() {
        names.push(e.name.clone());
        if !e.is_file() {
            continue;
        }
        let mut data = Vec::new();
        reader.read_data(&mut data).unwrap();
        if data.len() > 18 && data[..4] == *b"\x7fELF" && data[16] != 1 {
            let r = elfcheck::check_bytes(&data, &policy);
            assert!(r.passed(), "{}: {:?}", e.name, r.findings);
            elves.push(e.name.clone());
        }
        if e.name.ends_with("etc/fwpack/modules.load") {
            let list = String::from_utf8(data).unwrap();
            for m in ["dw_mmc-starfive.ko", "mmc_block.ko", "ext4.ko"] {
                assert!(list.contains(m), "modules.load lacks {m}:\n{list}");
            }
        }
    }
    assert!(
        elves.iter().any(|n| n.trim_start_matches('/') == "init"),
        "no /init ELF among {elves:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with("etc/fwpack/modules.load")),
        "{names:?}"
    );
}

#[test]
fn qemu_riscv64_image_boots_into_slot_a() {
    let Some(k) = riscv64_kernel() else { return };
    if !testkit::tools::require("qemu-system-riscv64") {
        return;
    }
    let b = board("qemu-riscv64");
    let bin = updater(&b);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let rootfs = rootfs(dir);
    let out = dir.join("out");
    build(&b, &k, &bin, &rootfs, &out);
    let mut m = testkit::machine::Machine::new(
        Arch::Riscv64,
        out.join("boot/Image"),
        out.join("boot/initramfs.cpio.gz"),
        out.join("sdcard.img"),
    );
    m.name = "build-riscv64-boot".into();
    let mut c = m.spawn().expect("qemu-system-riscv64");
    for line in [
        "fwpack-updater: fwpack-updater",
        "kernel modules ready",
        "found /dev/vda",
        "switching root to slot A",
        MARKER,
    ] {
        if let Err(e) = c.wait_for(line, Duration::from_secs(300)) {
            panic!("waiting for `{line}`: {e}");
        }
    }
}
