//! Module closures on real Debian kernel trees, checked against kmod's
//! `depmod`: Debian ships no `modules.dep`, so we resolve from `.modinfo`;
//! depmod (run on a hard-linked copy) computes dependencies from symbols.
//! Both must pick the same modules, and our load order must satisfy
//! every dependency depmod lists.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::process::Command;

use initramfs::modules::{self, canonical_name};
use initramfs::{Builder, Options};
use testkit::kernels::{self, Kernel};

fn tools() -> bool {
    ["depmod", "apt-get", "dpkg-deb"]
        .iter()
        .all(|t| testkit::tools::require(t))
}

/// Copies `k`'s module tree as hard links (cheap) under a temp base dir and
/// runs `depmod -b` on it. Returns the temp dir and the new modules dir.
fn depmod_copy(k: &Kernel) -> (tempfile::TempDir, std::path::PathBuf) {
    let base = tempfile::tempdir_in(testkit::target_dir()).unwrap();
    let dst = base.path().join("lib/modules").join(&k.release);
    for e in walkdir::WalkDir::new(&k.modules_dir) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(&k.modules_dir).unwrap();
        let to = dst.join(rel);
        if e.file_type().is_dir() {
            fs::create_dir_all(&to).unwrap();
        } else if e.file_type().is_file() {
            fs::hard_link(e.path(), &to).unwrap();
        }
    }
    let out = Command::new(testkit::tools::find("depmod").unwrap())
        .arg("-b")
        .arg(base.path())
        .arg(&k.release)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "depmod: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dst.join("modules.dep").is_file());
    (base, dst)
}

/// depmod's modules.dep as name -> dependency names.
fn depmod_deps(dir: &Path) -> HashMap<String, Vec<String>> {
    let stem = |p: &str| {
        let f = p.rsplit('/').next().unwrap();
        canonical_name(f.split(".ko").next().unwrap())
    };
    fs::read_to_string(dir.join("modules.dep"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, deps)| (stem(m), deps.split_whitespace().map(stem).collect()))
        .collect()
}

fn check(k: &Kernel, names: &[&str], want_builtin: &[&str]) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    assert!(
        !k.modules_dir.join("modules.dep").exists(),
        "Debian packages ship no modules.dep; this test wants the .modinfo path"
    );
    let ours = modules::resolve(&k.modules_dir, None, &names).unwrap();
    assert_eq!(ours.release, k.release);
    assert_eq!(ours.builtin, want_builtin);

    let (_keep, dep_dir) = depmod_copy(k);
    let via_dep = modules::resolve(&dep_dir, Some(&k.release), &names).unwrap();
    let set = |s: &modules::ModuleSet| {
        s.modules
            .iter()
            .map(|m| m.name.clone())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        set(&ours),
        set(&via_dep),
        "modinfo closure vs modules.dep closure"
    );

    // depmod's own view: our load order has every dependency first, and
    // nothing depmod says is needed is missing.
    let deps = depmod_deps(&dep_dir);
    let order: Vec<&str> = ours.modules.iter().map(|m| m.name.as_str()).collect();
    for (i, m) in order.iter().enumerate() {
        for d in deps
            .get(*m)
            .unwrap_or_else(|| panic!("depmod does not know {m}"))
        {
            let pos = order.iter().position(|o| o == d);
            assert!(
                matches!(pos, Some(p) if p < i),
                "{m} needs {d} loaded first; our order: {order:?}"
            );
        }
    }

    // What goes into the archive: the files, a modules.dep, the load list.
    let mut b = Builder::new(Options::default());
    ours.add_to(&mut b).unwrap();
    let (bytes, _) = b.write_newc(Vec::new()).unwrap();
    let mut r = initramfs::Reader::new(&bytes[..]).unwrap();
    let mut load = String::new();
    let mut files = BTreeSet::new();
    while let Some(e) = r.next_entry().unwrap() {
        if e.name == "etc/fwpack/modules.load" {
            let mut v = Vec::new();
            r.read_data(&mut v).unwrap();
            load = String::from_utf8(v).unwrap();
        } else if e.is_file() {
            files.insert(format!("/{}", e.name));
        }
    }
    let listed: Vec<&str> = load.lines().collect();
    assert_eq!(listed.len(), order.len());
    for (path, m) in listed.iter().zip(&ours.modules) {
        assert!(
            files.contains(*path),
            "{path} listed but not in the archive"
        );
        assert!(
            path.starts_with(&format!("/lib/modules/{}/kernel/", k.release)),
            "{path}"
        );
        assert_eq!(
            canonical_name(path.rsplit('/').next().unwrap().trim_end_matches(".ko")),
            m.name
        );
    }
    assert!(files.contains(&format!("/lib/modules/{}/modules.dep", k.release)));
}

#[test]
fn amd64_cloud_modules_match_depmod() {
    if !tools() {
        return;
    }
    let k = kernels::amd64_cloud().unwrap();
    // nvme and ext4 are built into the cloud kernel; dm-verity is spelled
    // with a dash on disk.
    check(
        &k,
        &[
            "virtio_blk",
            "virtio-pci",
            "virtio_net",
            "btrfs",
            "xfs",
            "overlay",
            "nvme",
            "ext4",
            "vfat",
            "dm_verity",
        ],
        &["nvme", "ext4"],
    );
}

#[test]
fn arm64_modules_match_depmod() {
    if !tools() {
        return;
    }
    let k = kernels::arm64().unwrap();
    // What a Zero 2 W / qemu virt initramfs needs before the disk shows up;
    // mmc_block is built in.
    check(
        &k,
        &[
            "virtio_blk",
            "virtio_pci",
            "virtio_mmio",
            "sdhci_iproc",
            "bcm2835",
            "mmc_block",
        ],
        &["mmc_block"],
    );
}

/// Compressed modules (as other distributions ship them) are read through
/// for `.modinfo` and stored decompressed; `.ko.xz` is refused by name.
#[test]
fn compressed_modules_are_stored_decompressed() {
    if !tools() || !testkit::tools::require("zstd") || !testkit::tools::require("gzip") {
        return;
    }
    let k = kernels::amd64_cloud().unwrap();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join(&k.release);
    let src = |m: &str| k.modules_dir.join(format!("kernel/drivers/{m}.ko"));
    let put = |m: &str, tool: Option<(&str, &str)>| {
        let to = dir.join(format!("kernel/drivers/{m}.ko"));
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(src(m), &to).unwrap();
        if let Some((cmd, ext)) = tool {
            let st = Command::new(cmd).arg("-q").arg(&to).status().unwrap();
            assert!(st.success());
            assert!(to.with_extension(format!("ko.{ext}")).is_file());
        }
    };
    put("block/virtio_blk", Some(("zstd", "zst")));
    put("virtio/virtio", Some(("gzip", "gz")));
    put("virtio/virtio_ring", None);
    // zstd keeps the input; remove it so only the compressed file is there.
    let _ = fs::remove_file(dir.join("kernel/drivers/block/virtio_blk.ko"));

    let set = modules::resolve(&dir, None, &["virtio_blk".to_string()]).unwrap();
    let names: Vec<&str> = set.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["virtio_ring", "virtio", "virtio_blk"]);
    let mut b = Builder::new(Options::default());
    set.add_to(&mut b).unwrap();
    let (bytes, _) = b.write_newc(Vec::new()).unwrap();
    let mut r = initramfs::Reader::new(&bytes[..]).unwrap();
    let mut seen = 0;
    while let Some(e) = r.next_entry().unwrap() {
        for m in ["block/virtio_blk", "virtio/virtio", "virtio/virtio_ring"] {
            if e.name.ends_with(&format!("kernel/drivers/{m}.ko")) {
                let mut data = Vec::new();
                r.read_data(&mut data).unwrap();
                assert!(
                    data == fs::read(src(m)).unwrap(),
                    "{m}: stored bytes differ from the original .ko"
                );
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 3);

    fs::write(dir.join("kernel/drivers/virtio/virtio_ring.ko.xz"), "xz").unwrap();
    fs::remove_file(dir.join("kernel/drivers/virtio/virtio_ring.ko")).unwrap();
    let e = modules::resolve(&dir, None, &["virtio_blk".to_string()]).unwrap_err();
    assert!(e.to_string().contains("xz"), "{e}");
}
