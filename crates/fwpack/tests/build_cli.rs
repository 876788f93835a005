//! `fwpack build` end to end on the qemu-x86_64 board with Debian's real
//! kernel, checked by the real peers (sfdisk, fsck.vfat, mtools, GNU cpio).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

mod build_common;
#[path = "release_common.rs"]
mod release_common;

use build_common::{expect_lines, ext4_rootfs, fwpack, show};

const ROOTFS_MARKER: &str = "FWPACK-BUILD-TEST slot A init";

struct Inputs {
    dir: PathBuf,
    kernel: PathBuf,
    /// Built by the first `fwpack build` (which compiles it for the board);
    /// later builds reuse it through `--updater` to keep the suite fast.
    updater: PathBuf,
}

fn inputs() -> &'static Inputs {
    static INPUTS: OnceLock<Inputs> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let dir = testkit::target_dir().join("build-cli-inputs");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let kernel = testkit::kernels::amd64_cloud()
            .expect("Debian cloud kernel")
            .vmlinuz;
        ext4_rootfs(&dir, testkit::kernels::Arch::X86_64, ROOTFS_MARKER);
        let out = fwpack(&["keygen", "-o", "release.pem"], &dir);
        assert!(out.status.success(), "{}", show(&out));
        let out = build(&dir, &kernel, "first", &["--build-updater"]);
        assert!(out.status.success(), "first build: {}", show(&out));
        // The bootstrap flavor (/init), copied out of cargo's output path.
        let updater =
            testkit::target_dir().join("x86_64-unknown-linux-musl/device/fwpack-updater-bootstrap");
        assert!(
            updater.is_file(),
            "the build compiled {}",
            updater.display()
        );
        Inputs {
            dir,
            kernel,
            updater,
        }
    })
}

fn build(dir: &Path, kernel: &Path, out: &str, extra: &[&str]) -> Output {
    let kernel = kernel.to_string_lossy();
    let mut args = vec![
        "build",
        "--board",
        "qemu-x86_64",
        "--out",
        out,
        "--kernel",
        &kernel,
        "--rootfs",
        "rootfs.img",
        "--key",
        "release.pem",
        "--version",
        "3",
    ];
    args.extend_from_slice(extra);
    fwpack(&args, dir)
}

fn build_with_updater(out: &str, extra: &[&str]) -> Output {
    let i = inputs();
    let updater = i.updater.to_string_lossy().into_owned();
    let mut args = vec!["--updater", updater.as_str()];
    args.extend_from_slice(extra);
    build(&i.dir, &i.kernel, out, &args)
}

#[test]
fn two_builds_are_byte_identical() {
    let i = inputs();
    // Built again like the first (manifest.json names the updater's source).
    let out = build(&i.dir, &i.kernel, "again", &["--build-updater"]);
    assert!(out.status.success(), "{}", show(&out));
    for f in [
        "sdcard.img",
        "boot/initramfs.cpio.gz",
        "manifest.json",
        "update.fwi",
        "sdcard.img.bmap",
        "sdcard.img.zst",
        "sbom.spdx.json",
    ] {
        let a = std::fs::read(i.dir.join("first").join(f)).unwrap();
        let b = std::fs::read(i.dir.join("again").join(f)).unwrap();
        assert!(a == b, "{f} differs between two builds");
    }
}

#[test]
fn bmaptool_flashes_sdcard_img_and_its_zst_through_the_block_map() {
    let i = inputs();
    let out = i.dir.join("first");
    let image = std::fs::read(out.join("sdcard.img")).unwrap();
    let map = std::fs::read_to_string(out.join("sdcard.img.bmap")).unwrap();
    let field = |tag: &str| -> u64 {
        let open = format!("<{tag}>");
        let at = map.find(&open).unwrap() + open.len();
        map[at..].split('<').next().unwrap().trim().parse().unwrap()
    };
    // Most of the card is empty slot B and unused slot A.
    assert!(
        field("MappedBlocksCount") * 2 < field("BlocksCount"),
        "{map}"
    );
    for source in ["sdcard.img", "sdcard.img.zst"] {
        let copy = i.dir.join(format!("flashed-from-{source}"));
        let o = Command::new("bmaptool")
            .arg("copy")
            .arg("--bmap")
            .arg(out.join("sdcard.img.bmap"))
            .arg(out.join(source))
            .arg(&copy)
            .output()
            .expect("bmaptool (bmap-tools; cargo xtask deps installs it)");
        assert!(o.status.success(), "bmaptool copy {source}: {}", show(&o));
        let flashed = std::fs::read(&copy).unwrap();
        assert!(
            flashed == image,
            "bmaptool's copy of {source} equals sdcard.img"
        );
        std::fs::remove_file(&copy).unwrap();
    }
}

#[test]
fn published_outputs_are_readable_under_umask_022() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let i = inputs();
    let updater = i.updater.to_string_lossy().into_owned();
    let kernel = i.kernel.to_string_lossy().into_owned();
    let mut c = Command::new(env!("CARGO_BIN_EXE_fwpack"));
    c.args([
        "build",
        "--board",
        "qemu-x86_64",
        "--out",
        "modes",
        "--kernel",
        &kernel,
        "--rootfs",
        "rootfs.img",
        "--key",
        "release.pem",
        "--updater",
        &updater,
    ])
    .current_dir(&i.dir)
    .env("SOURCE_DATE_EPOCH", build_common::EPOCH);
    // SAFETY: umask is async-signal-safe and touches only the child.
    unsafe {
        c.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let mode = |p: &str| {
        std::fs::metadata(i.dir.join("modes").join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o755, "the output directory");
    for f in [
        "update.fwi",
        "sdcard.img",
        "sdcard.img.bmap",
        "sdcard.img.zst",
        "manifest.json",
        "boot/initramfs.cpio.gz",
    ] {
        assert_eq!(mode(f), 0o644, "{f}");
    }
}

#[test]
fn peers_read_the_disk_image_we_meant() {
    let i = inputs();
    let out_dir = i.dir.join("first");
    let img = out_dir.join("sdcard.img");
    let json = Command::new("sfdisk")
        .arg("--json")
        .arg(&img)
        .output()
        .unwrap();
    assert!(json.status.success(), "{}", show(&json));
    let table: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let parts = table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(table["partitiontable"]["label"], "dos");
    assert_eq!(parts.len(), 3, "boot, rootfs-a, rootfs-b");
    let sector = 512u64;
    let start = |p: &serde_json::Value| p["start"].as_u64().unwrap() * sector;
    let size = |p: &serde_json::Value| p["size"].as_u64().unwrap() * sector;
    // 32 MiB FAT boot partition first, then two 64 MiB slots (configs/qemu-x86_64.yaml);
    // the first starts after the updater's state area (copies at 512 KiB
    // and 4.5 MiB).
    assert_eq!(start(&parts[0]), 5 << 20);
    assert_eq!(size(&parts[0]), 32 << 20);
    assert_eq!(parts[0]["bootable"], true);
    assert_eq!(size(&parts[1]), 64 << 20);
    assert_eq!(size(&parts[2]), 64 << 20);
    // `sfdisk -d` (the dump a user would diff) agrees.
    let dump = Command::new("sfdisk").arg("-d").arg(&img).output().unwrap();
    assert!(String::from_utf8_lossy(&dump.stdout).contains("label: dos"));

    // fsck.vfat on the boot partition, extracted byte for byte.
    let data = std::fs::read(&img).unwrap();
    let boot = &data[start(&parts[0]) as usize..(start(&parts[0]) + size(&parts[0])) as usize];
    let fat = i.dir.join("boot.vfat");
    std::fs::write(&fat, boot).unwrap();
    let fsck = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&fat)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "fsck.vfat: {}", show(&fsck));

    // mtools lists and extracts every boot file byte-equal to what we generated.
    let spec = format!("{}@@{}", img.display(), start(&parts[0]));
    let mdir = Command::new("mdir")
        .args(["-i", &spec, "-b", "::"])
        .output()
        .unwrap();
    assert!(mdir.status.success(), "{}", show(&mdir));
    let listing = String::from_utf8_lossy(&mdir.stdout);
    for name in ["vmlinuz", "initramfs.cpio.gz"] {
        assert!(listing.to_lowercase().contains(name), "{name} in {listing}");
        let dst = i.dir.join(format!("mcopy-{name}"));
        let cp = Command::new("mcopy")
            .args(["-n", "-i", &spec, &format!("::{name}")])
            .arg(&dst)
            .output()
            .unwrap();
        assert!(cp.status.success(), "{}", show(&cp));
        assert!(
            std::fs::read(&dst).unwrap() == std::fs::read(out_dir.join("boot").join(name)).unwrap(),
            "{name} differs"
        );
    }

    // Slot A holds the root filesystem, byte for byte.
    let rootfs = std::fs::read(i.dir.join("rootfs.img")).unwrap();
    let a = start(&parts[1]) as usize;
    assert!(data[a..a + rootfs.len()] == rootfs[..]);

    // GNU cpio reads the initramfs: /init is our updater, config and key present.
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc {} | cpio -it --quiet",
            out_dir.join("boot/initramfs.cpio.gz").display()
        ))
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    for want in [
        "init",
        "etc/fwpack/updater.conf",
        "etc/fwpack/keys/release.pub.pem",
        "dev/console",
    ] {
        assert!(
            names.lines().any(|l| l == want),
            "{want} missing from initramfs:\n{names}"
        );
    }

    // The manifest lists every artifact with its real size and hash.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("manifest.json")).unwrap()).unwrap();
    let arts = manifest["artifacts"].as_array().unwrap();
    assert!(arts.len() >= 4);
    // ... and the updater that went in: built here, its hash and version.
    let u = &manifest["updater"];
    assert_eq!(u["source"], "built", "{u}");
    assert_eq!(
        std::fs::canonicalize(u["path"].as_str().unwrap()).unwrap(),
        std::fs::canonicalize(&i.updater).unwrap()
    );
    {
        use sha2::Digest;
        let bytes = std::fs::read(&i.updater).unwrap();
        assert_eq!(u["sha256"], hex::encode(sha2::Sha256::digest(&bytes)));
    }
    assert_eq!(u["version"], env!("CARGO_PKG_VERSION"), "{u}");
    for a in arts {
        let p = out_dir.join(a["path"].as_str().unwrap());
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(a["size"].as_u64().unwrap(), bytes.len() as u64);
        use sha2::Digest;
        assert_eq!(
            a["sha256"].as_str().unwrap(),
            hex::encode(sha2::Sha256::digest(&bytes))
        );
    }

    // update.fwi verifies with the key the build signed with.
    let v = fwpack(
        &[
            "verify",
            "first/update.fwi",
            "-k",
            "release.pub.pem",
            "--board",
            "qemu-x86_64",
        ],
        &i.dir,
    );
    assert!(v.status.success(), "{}", show(&v));
}

fn assert_refused(out: &Output, code: i32, needle: &str, out_dir: &Path) {
    assert_eq!(out.status.code(), Some(code), "{}", show(out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "expected `{needle}` in:\n{err}");
    assert!(
        !out_dir.exists(),
        "{} left behind after a failed build",
        out_dir.display()
    );
    // Each refusal test builds into its own parent directory, so a staging
    // directory there can only be this build's.
    let parent = out_dir.parent().unwrap();
    let stray: Vec<_> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".fwpack-build-")
        })
        .collect();
    assert!(
        stray.is_empty(),
        "staging directories left behind: {stray:?}"
    );
}

#[test]
fn bad_board_config_is_refused_with_file_and_line() {
    let i = inputs();
    let text = std::fs::read_to_string(testkit::workspace_root().join("configs/qemu-x86_64.yaml"))
        .unwrap()
        .replace("  baud: 115200", "  baud: 115200\n  parity: none");
    std::fs::write(i.dir.join("qemu-x86_64.yaml"), text).unwrap();
    let updater = i.updater.to_string_lossy();
    let kernel = i.kernel.to_string_lossy();
    let out = fwpack(
        &[
            "build",
            "--config",
            "qemu-x86_64.yaml",
            "--out",
            "bad-config/out",
            "--kernel",
            &kernel,
            "--key",
            "release.pem",
            "--updater",
            &updater,
        ],
        &i.dir,
    );
    assert_refused(&out, 4, "qemu-x86_64.yaml:", &i.dir.join("bad-config/out"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `parity`"));
}

#[test]
fn missing_kernel_is_refused() {
    let i = inputs();
    let out = fwpack(
        &[
            "build",
            "--build-updater",
            "--board",
            "qemu-x86_64",
            "--out",
            "no-kernel/out",
            "--kernel",
            "nope/vmlinuz",
            "--key",
            "release.pem",
        ],
        &i.dir,
    );
    assert_refused(
        &out,
        3,
        "kernel nope/vmlinuz does not exist",
        &i.dir.join("no-kernel/out"),
    );
}

/// A recipe that adds one extra file to the shipped one.
fn recipe_with(i: &Inputs, name: &str, src: &Path, dst: &str) -> PathBuf {
    let base =
        std::fs::read_to_string(testkit::workspace_root().join("recipes/updater-initramfs.yaml"))
            .unwrap();
    let extra = format!(
        "  - src: \"{}\"\n    dst: {dst}\n    mode: \"0755\"\n",
        src.display()
    );
    let text = base.replacen("files:\n", &format!("files:\n{extra}"), 1);
    let p = i.dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn dynamic_binary_in_the_recipe_is_refused() {
    let i = inputs();
    // The host's own tools are dynamically linked against glibc.
    let recipe = recipe_with(i, "dyn.yaml", Path::new("/usr/bin/env"), "/bin/env");
    let out = build_with_updater("dyn/out", &["--recipe", recipe.to_str().unwrap()]);
    assert_refused(
        &out,
        7,
        "failed the ELF policy: /bin/env: dynamically linked",
        &i.dir.join("dyn/out"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("interpreter") || err.contains("needed"),
        "{err}"
    );
}

#[test]
fn initramfs_over_the_ram_budget_is_refused() {
    let i = inputs();
    let big: Vec<u8> = (0..3u32 << 20)
        .map(|x| (x.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(i.dir.join("big.bin"), big).unwrap();
    let recipe = recipe_with(i, "big.yaml", &i.dir.join("big.bin"), "/big.bin");
    let text = std::fs::read_to_string(testkit::workspace_root().join("configs/qemu-x86_64.yaml"))
        .unwrap()
        .replace("initramfs_budget_mib: 384", "initramfs_budget_mib: 2");
    std::fs::create_dir_all(i.dir.join("small")).unwrap();
    std::fs::write(i.dir.join("small/qemu-x86_64.yaml"), text).unwrap();
    let updater = i.updater.to_string_lossy();
    let kernel = i.kernel.to_string_lossy();
    let out = fwpack(
        &[
            "build",
            "--config",
            "small/qemu-x86_64.yaml",
            "--out",
            "big/out",
            "--kernel",
            &kernel,
            "--key",
            "release.pem",
            "--updater",
            &updater,
            "--recipe",
            recipe.to_str().unwrap(),
        ],
        &i.dir,
    );
    assert_refused(
        &out,
        7,
        "over the board's RAM budget",
        &i.dir.join("big/out"),
    );
}

/// The built sdcard.img boots under QEMU: our kernel + initramfs from the
/// boot partition, the updater as PID 1 finds the NVMe disk, reads the
/// state area the build wrote, and switches root into slot A.
#[test]
fn built_image_boots_into_the_updater_and_slot_a() {
    if !testkit::tools::require("qemu-system-x86_64") {
        return;
    }
    let i = inputs();
    let out = i.dir.join("first");
    let mut q = testkit::qemu::Qemu::new(testkit::kernels::Arch::X86_64, out.join("boot/vmlinuz"))
        .initrd(out.join("boot/initramfs.cpio.gz"))
        .memory(512)
        .name("build-x86_64-boot");
    // A copy, so the boot (which counts attempts) leaves the artifact alone.
    let disk = i.dir.join("boot-test.img");
    std::fs::copy(out.join("sdcard.img"), &disk).unwrap();
    q.extra_args = vec![
        "-drive".into(),
        format!("if=none,id=d,file={},format=raw", disk.display()),
        "-device".into(),
        "nvme,drive=d,serial=fwpack".into(),
    ];
    let mut c = q.spawn().expect("qemu");
    expect_lines(
        &mut c,
        &[
            "fwpack-updater: fwpack-updater",
            "found /dev/nvme0n1",
            "switching root to slot A",
            ROOTFS_MARKER,
        ],
        120,
    );
}

/// A `boot: kexec` board: `fwpack build` puts the kernel, its command line
/// and the fwpack initramfs (as the slot kernel's initrd) into slot A's
/// root filesystem; the built disk boots the bootstrap, which kexecs slot
/// A's kernel, whose initramfs (slot stage) switches root into slot A.
#[test]
fn kexec_board_build_boots_the_slot_kernel() {
    if !testkit::tools::require("qemu-system-x86_64") {
        return;
    }
    let i = inputs();
    let dir = i.dir.join("kexec");
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(testkit::workspace_root().join("configs/qemu-x86_64.yaml"))
        .unwrap()
        .replace("\nboot: switch_root\n", "\nboot: kexec\n");
    assert!(text.contains("\nboot: kexec\n"));
    std::fs::write(dir.join("qemu-x86_64.yaml"), text).unwrap();
    // Room for the 14 MB bzImage and the initrd next to the test init.
    let img = dir.join("rootfs.img");
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(i.dir.join("rootfs"))
        .arg(&img)
        .arg("40M")
        .output()
        .expect("mkfs.ext4 (e2fsprogs)");
    assert!(mkfs.status.success(), "{}", show(&mkfs));
    std::fs::copy(i.dir.join("release.pem"), dir.join("release.pem")).unwrap();
    let updater = i.updater.to_string_lossy();
    let kernel = i.kernel.to_string_lossy();
    let out = fwpack(
        &[
            "build",
            "--config",
            "qemu-x86_64.yaml",
            "--out",
            "out",
            "--kernel",
            &kernel,
            "--rootfs",
            "rootfs.img",
            "--key",
            "release.pem",
            "--updater",
            &updater,
        ],
        &dir,
    );
    assert!(out.status.success(), "kexec build: {}", show(&out));
    let out = dir.join("out");
    let mut q = testkit::qemu::Qemu::new(testkit::kernels::Arch::X86_64, out.join("boot/vmlinuz"))
        .initrd(out.join("boot/initramfs.cpio.gz"))
        .memory(512)
        .name("build-x86_64-kexec");
    let disk = dir.join("boot-test.img");
    std::fs::copy(out.join("sdcard.img"), &disk).unwrap();
    q.extra_args = vec![
        "-drive".into(),
        format!("if=none,id=d,file={},format=raw", disk.display()),
        "-device".into(),
        "nvme,drive=d,serial=fwpack".into(),
    ];
    let mut c = q.spawn().expect("qemu");
    expect_lines(
        &mut c,
        &[
            "fwpack-updater: fwpack-updater",
            "booting slot A",
            "slot A kernel loaded (kexec_file_load)",
            "kexec into slot A's kernel",
            "fwpack.slot=A",
            "slot stage: this kernel was booted by kexec for slot A",
            "switching root to slot A",
            ROOTFS_MARKER,
        ],
        120,
    );
}

fn json_file(p: &Path) -> serde_json::Value {
    let text = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn sha256_hex(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

#[test]
fn the_sbom_validates_and_its_hash_is_in_the_signed_head() {
    let out = build_with_updater("sbom", &[]);
    assert!(out.status.success(), "{}", show(&out));
    let i = inputs();
    let dir = i.dir.join("sbom");
    let sbom = dir.join("sbom.spdx.json");

    // A real validator from PyPI (pinned in requirements.txt).
    let venv = release_common::venv().expect("python3 for the test venv");
    let v = release_common::run(
        Command::new(venv.join("bin/pyspdxtools"))
            .arg("-i")
            .arg(&sbom),
    );
    assert!(
        v.status.success(),
        "pyspdxtools refused the SBOM: {}",
        show(&v)
    );

    // The signed head names exactly this file, and inspect shows it.
    let want = sha256_hex(&sbom);
    let manifest = json_file(&dir.join("manifest.json"));
    assert_eq!(manifest["sbom"], "sbom.spdx.json");
    assert_eq!(manifest["sbom_sha256"].as_str(), Some(want.as_str()));
    let js = fwpack(&["inspect", "--json", "sbom/update.fwi"], &i.dir);
    assert!(js.status.success(), "{}", show(&js));
    let head: serde_json::Value = serde_json::from_slice(&js.stdout).unwrap();
    assert_eq!(head["sbom_sha256"].as_str(), Some(want.as_str()));
    let txt = fwpack(&["inspect", "sbom/update.fwi"], &i.dir);
    assert!(
        String::from_utf8_lossy(&txt.stdout).contains(&format!("sbom         sha256 {want}")),
        "{}",
        show(&txt)
    );
    // verify --sbom: the file after the signature; another file is exit 6.
    let pubkey = "release.pub.pem";
    let ok = fwpack(
        &[
            "verify",
            "sbom/update.fwi",
            "-k",
            pubkey,
            "--sbom",
            "sbom/sbom.spdx.json",
        ],
        &i.dir,
    );
    assert!(ok.status.success(), "{}", show(&ok));
    assert!(show(&ok).contains(&want), "{}", show(&ok));
    let other = i.dir.join("other.spdx.json");
    let mut changed = std::fs::read(&sbom).unwrap();
    changed.extend_from_slice(b" ");
    std::fs::write(&other, changed).unwrap();
    let bad = fwpack(
        &[
            "verify",
            "sbom/update.fwi",
            "-k",
            pubkey,
            "--sbom",
            "other.spdx.json",
        ],
        &i.dir,
    );
    assert_eq!(bad.status.code(), Some(6), "{}", show(&bad));

    // What it describes: every boot file and the initramfs's /init (the
    // updater) with the hashes the build wrote, the kernel's release, the
    // updater's crates.
    let doc = json_file(&sbom);
    let files = doc["files"].as_array().expect("files");
    let sha_of = |name: &str| {
        files
            .iter()
            .find(|f| f["fileName"] == name)
            .and_then(|f| {
                f["checksums"]
                    .as_array()?
                    .iter()
                    .find(|c| c["algorithm"] == "SHA256")
            })
            .and_then(|c| c["checksumValue"].as_str())
            .map(str::to_string)
    };
    for a in manifest["artifacts"].as_array().unwrap() {
        let path = a["path"].as_str().unwrap();
        if path.starts_with("boot/") {
            assert_eq!(
                sha_of(&format!("./{path}")).as_deref(),
                a["sha256"].as_str(),
                "{path}"
            );
        }
    }
    assert_eq!(
        sha_of("./init").as_deref(),
        manifest["updater"]["sha256"].as_str(),
        "/init is the updater"
    );
    assert!(sha_of("./etc/fwpack/updater.conf").is_some());
    let packages = doc["packages"].as_array().unwrap();
    let pkg = |name: &str| packages.iter().find(|p| p["name"] == name);
    let kernel = pkg("linux").expect("kernel package");
    let release = kernel["versionInfo"].as_str().expect("kernel release");
    assert!(release.contains("amd64"), "{release}");
    assert_eq!(
        kernel["checksums"][0]["checksumValue"].as_str(),
        Some(sha256_hex(&i.kernel).as_str())
    );
    assert!(pkg("rootfs").is_some());
    let sha2 = pkg("sha2").expect("sha2 crate in the updater");
    assert!(sha2["externalRefs"][0]["referenceLocator"]
        .as_str()
        .is_some_and(|l| l.starts_with("pkg:cargo/sha2@")));
    assert!(
        pkg("syn").is_none(),
        "proc-macro crates are not on the device"
    );
    assert!(
        !String::from_utf8_lossy(&std::fs::read(&sbom).unwrap())
            .contains(&*i.dir.to_string_lossy()),
        "no build-machine paths in the SBOM"
    );
}

/// `--no-sbom-record`, for fleets whose updaters predate the head
/// extension: the SBOM is still written, but update.fwi keeps the old
/// layout (no extension, so no must-understand flag those updaters refuse).
#[test]
fn no_sbom_record_keeps_update_fwi_in_the_old_layout() {
    let out = build_with_updater("sbom-legacy", &["--no-sbom-record"]);
    assert!(out.status.success(), "{}", show(&out));
    let i = inputs();
    let dir = i.dir.join("sbom-legacy");
    let manifest = json_file(&dir.join("manifest.json"));
    assert_eq!(
        manifest["sbom_sha256"].as_str(),
        Some(sha256_hex(&dir.join("sbom.spdx.json")).as_str())
    );
    let js = fwpack(&["inspect", "--json", "sbom-legacy/update.fwi"], &i.dir);
    assert!(js.status.success(), "{}", show(&js));
    let head: serde_json::Value = serde_json::from_slice(&js.stdout).unwrap();
    assert!(head["sbom_sha256"].is_null(), "{head}");
    // ext_len (header offset 232, docs/FORMAT.md) is zero: the old layout.
    let fwi = std::fs::read(dir.join("update.fwi")).unwrap();
    assert_eq!(fwi[232..236], [0, 0, 0, 0]);
    let v = fwpack(
        &[
            "verify",
            "sbom-legacy/update.fwi",
            "-k",
            "release.pub.pem",
            "--sbom",
            "sbom-legacy/sbom.spdx.json",
        ],
        &i.dir,
    );
    assert_eq!(v.status.code(), Some(7), "{}", show(&v));
}

/// Zero chunks (docs/FORMAT.md, "Zero chunks"): by default the ext4
/// rootfs's all-zero chunks are stored empty in update.fwi (incompat bit
/// 2); `--no-zero-chunks`, for a fleet whose updaters predate the bit,
/// stores them all and leaves the bit clear. Both verify.
#[test]
fn no_zero_chunks_keeps_update_fwi_readable_by_older_updaters() {
    let i = inputs();
    let out = build_with_updater("zero-legacy", &["--no-zero-chunks"]);
    assert!(out.status.success(), "{}", show(&out));
    for (dir, zero) in [("first", true), ("zero-legacy", false)] {
        let fwi = format!("{dir}/update.fwi");
        let js = fwpack(&["inspect", "--json", &fwi], &i.dir);
        assert!(js.status.success(), "{}", show(&js));
        let head: serde_json::Value = serde_json::from_slice(&js.stdout).unwrap();
        let flags = head["incompat_flags"].as_u64().unwrap();
        assert_eq!(flags & 4 != 0, zero, "{dir}: {head}");
        let empty: u64 = head["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["zero_chunks"].as_u64().unwrap())
            .sum();
        assert_eq!(empty > 0, zero, "{dir}: {head}");
        let v = fwpack(&["verify", &fwi, "-k", "release.pub.pem"], &i.dir);
        assert!(v.status.success(), "{dir}: {}", show(&v));
    }
}

/// Board qemu-x86_64-efi: `fwpack build` writes a GPT disk with two
/// bootstrap partitions (A filled, B empty), an update.fwi carrying the
/// bootstrap as its own segment group, and OVMF_VARS.fd with Boot000A /
/// Boot000B; OVMF then starts bootstrap A by its entry, which boots slot A.
/// (The A/B try itself: crates/fwpack-updater/tests/bootstrap_ab_efi.rs.)
#[test]
fn efi_board_build_boots_bootstrap_a_under_ovmf() {
    let code = Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd");
    if !testkit::tools::require("qemu-system-x86_64") || !code.exists() {
        eprintln!("skipped: needs QEMU and Debian's ovmf package");
        return;
    }
    let i = inputs();
    let k = testkit::kernels::amd64_cloud().expect("Debian cloud kernel");
    let modules = k.modules_dir.to_string_lossy().into_owned();
    let kernel = i.kernel.to_string_lossy();
    let updater = i.updater.to_string_lossy();
    let out = fwpack(
        &[
            "build",
            "--board",
            "qemu-x86_64-efi",
            "--out",
            "efi",
            "--kernel",
            &kernel,
            "--rootfs",
            "rootfs.img",
            "--key",
            "release.pem",
            "--version",
            "3",
            "--updater",
            &updater,
            "--modules-dir",
            &modules,
        ],
        &i.dir,
    );
    assert!(out.status.success(), "efi build: {}", show(&out));
    let out = i.dir.join("efi");
    let inspect = fwpack(&["inspect", "--json", "efi/update.fwi"], &i.dir);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains("\"target\":\"bootstrap\"") && text.contains("\"target\":\"system\""),
        "{text}"
    );
    let vars = std::fs::read(out.join("OVMF_VARS.fd")).unwrap();
    let name: Vec<u8> = "Boot000B"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    assert!(vars.windows(name.len()).any(|w| w == name.as_slice()));

    let disk = i.dir.join("efi-boot-test.img");
    let vars = i.dir.join("efi-boot-test-vars.fd");
    std::fs::copy(out.join("sdcard.img"), &disk).unwrap();
    std::fs::copy(out.join("OVMF_VARS.fd"), &vars).unwrap();
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-m", "512", "-M", "q35"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,readonly=on,file={}",
            code.display()
        ))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-drive")
        .arg(format!("if=none,id=d,file={},format=raw", disk.display()))
        .args(["-device", "nvme,drive=d,serial=fwpack"]);
    let mut c = testkit::qemu::Console::spawn(c, "build-x86_64-efi").expect("qemu");
    expect_lines(
        &mut c,
        &[
            "starting Boot000A \"fwpack bootstrap A\"",
            "fwpack-updater: fwpack-updater",
            "UEFI: booted Boot000A (bootstrap A), BootOrder 000A,000B",
            "switching root to slot A",
            ROOTFS_MARKER,
        ],
        240,
    );
}
