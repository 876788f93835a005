//! Images checked by the tools that will actually read them: sfdisk and
//! partx (util-linux) for the partition table and PARTUUIDs, fsck.vfat
//! for the file system, mtools for its contents.

use anyhow::{bail, ensure, Context, Result};
use diskimage::{
    gpt_types, write_image, DiskLayout, Error, FatFile, FatKind, FatSpec, PartKind, PartitionSpec,
    Source, TableKind,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed; `cargo xtask test` installs it (xtask/src/deps.rs)"
    );
    Command::new(name)
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// Deterministic pseudo-random bytes with zero runs (to exercise holes).
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    if len > 64 * 1024 {
        v[8192..40960].fill(0);
    }
    v
}

struct Inputs {
    dir: tempfile::TempDir,
    files: BTreeMap<String, Vec<u8>>,
}

impl Inputs {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        files.insert("config.txt".into(), b"arm_64bit=1\nkernel=Image\ninitramfs initramfs.cpio.zst followkernel\nenable_uart=1\n".to_vec());
        files.insert(
            "cmdline.txt".into(),
            b"console=serial0,115200 rdinit=/init\n".to_vec(),
        );
        files.insert("Image".into(), noise(3 * MIB as usize + 123, 7));
        files.insert(
            "broadcom/bcm2837-rpi-zero-2-w.dtb".into(),
            noise(30_000, 11),
        );
        files.insert("overlays/disable-bt.dtbo".into(), noise(1500, 13));
        files.insert("overlays/README".into(), b"overlays go here\n".to_vec());
        files.insert("empty.txt".into(), Vec::new());
        for (name, data) in &files {
            let p = dir.path().join("src").join(name.replace('/', "_"));
            std::fs::create_dir_all(p.parent().unwrap())?;
            std::fs::write(&p, data)?;
        }
        std::fs::write(
            dir.path().join("rootfs.img"),
            noise(5 * MIB as usize / 2 + 512, 17),
        )?;
        Ok(Inputs { dir, files })
    }

    fn src(&self, name: &str) -> PathBuf {
        self.dir.path().join("src").join(name.replace('/', "_"))
    }

    fn fat(&self, label: &str, kind: FatKind) -> FatSpec {
        FatSpec {
            label: label.into(),
            fat_type: kind,
            // Deliberately not sorted: the writer sorts.
            files: self
                .files
                .keys()
                .rev()
                .map(|n| FatFile {
                    dest: n.clone(),
                    // One from memory, the rest from files.
                    source: if n == "cmdline.txt" {
                        Source::Bytes(self.files[n].clone())
                    } else {
                        Source::Path(self.src(n))
                    },
                })
                .collect(),
            dirs: vec!["empty-dir".into()],
        }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs.img")
    }
}

fn rpi_layout(inp: &Inputs) -> DiskLayout {
    let mut boot = PartitionSpec::new(
        "boot",
        64 * MIB,
        PartKind::Fat(inp.fat("boot", FatKind::Auto)),
    );
    boot.bootable = true;
    DiskLayout {
        table: TableKind::Mbr,
        seed: "test/rpi-zero2w".into(),
        size_bytes: None,
        fat_timestamp: Some(1_700_000_000), // 2023-11-14 22:13:20 UTC
        reserved: Vec::new(),
        partitions: vec![
            boot,
            PartitionSpec::new(
                "rootfs-a",
                4 * MIB,
                PartKind::Raw(Source::Path(inp.rootfs())),
            ),
            PartitionSpec::new("rootfs-b", 4 * MIB, PartKind::Empty),
            PartitionSpec::new(
                "state",
                MIB,
                PartKind::Raw(Source::Bytes(b"FWSTATE\0".to_vec())),
            ),
        ],
    }
}

fn sfdisk_json(img: &Path) -> Result<Value> {
    let out = run(tool("sfdisk").arg("--json").arg(img))?;
    let v: Value = serde_json::from_str(&out)?;
    Ok(v["partitiontable"].clone())
}

/// Copies a byte range of the image into its own file (no dd).
fn extract(img: &Path, offset: u64, len: u64) -> Result<tempfile::NamedTempFile> {
    let mut f = std::fs::File::open(img)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut out = tempfile::NamedTempFile::new()?;
    std::io::copy(&mut (&mut f).take(len), &mut out)?;
    out.flush()?;
    Ok(out)
}

fn read_range(img: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(img)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// fsck.vfat in check-only mode: exit 0 and nothing it would change.
fn fsck_clean(part: &Path) -> Result<String> {
    let out = tool("fsck.vfat").args(["-n", "-v"]).arg(part).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "fsck.vfat -n failed:\n{text}");
    for bad in [
        "differ",
        "Leaving file system unchanged",
        "Perform changes",
        "Fix",
        "Free cluster summary wrong",
        "invalid",
        "Dirty bit",
    ] {
        ensure!(!text.contains(bad), "fsck.vfat reported {bad:?}:\n{text}");
    }
    Ok(text)
}

/// Lists and extracts every file with mtools and compares with the inputs.
fn mtools_match(img: &Path, offset: u64, inp: &Inputs, label: &str) -> Result<()> {
    let at = format!("{}@@{offset}", img.display());
    let listing = run(tool("mdir").args(["-i", &at, "-b", "-/", "::"]))?;
    let mut listed: Vec<String> = listing
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(|l| l.trim_start_matches("::/").to_string())
        .collect();
    listed.sort();
    let expected: Vec<String> = inp.files.keys().cloned().collect();
    ensure!(
        listed == expected,
        "mdir lists {listed:?}, expected {expected:?}"
    );
    ensure!(
        listing.lines().any(|l| l == "::/empty-dir/"),
        "empty directory missing:\n{listing}"
    );
    let head = run(tool("mdir").args(["-i", &at, "::/"]))?;
    ensure!(
        head.contains(&format!("Volume in drive : is {label}")),
        "label not {label}:\n{head}"
    );
    // Timestamps from fat_timestamp, not the clock.
    ensure!(head.contains("2023-11-14  22:13"), "timestamps:\n{head}");
    let out = tempfile::tempdir()?;
    for (name, data) in &inp.files {
        let dst = out.path().join(name.replace('/', "_"));
        run(tool("mcopy")
            .args(["-n", "-i", &at])
            .arg(format!("::/{name}"))
            .arg(&dst))?;
        let got = std::fs::read(&dst)?;
        ensure!(
            &got == data,
            "{name}: mcopy gives {} bytes, differs from input ({} bytes)",
            got.len(),
            data.len()
        );
    }
    Ok(())
}

#[test]
fn mbr_image_is_read_as_meant_by_sfdisk_partx_fsck_and_mtools() -> Result<()> {
    let inp = Inputs::new()?;
    let out = tempfile::tempdir()?;
    let img = out.path().join("sdcard.img");
    let layout = rpi_layout(&inp);
    let report = write_image(&layout, &img)?;

    // Placement the brief asks for, computed by hand: 1 MiB-aligned, in order.
    let starts: Vec<u64> = report.partitions.iter().map(|p| p.start_lba).collect();
    assert_eq!(
        starts,
        [
            2048,
            2048 + 131072,
            2048 + 131072 + 8192,
            2048 + 131072 + 16384
        ]
    );
    assert_eq!(report.size_bytes, (1 + 64 + 4 + 4 + 1) * MIB);
    assert_eq!(std::fs::metadata(&img)?.len(), report.size_bytes);

    // sfdisk reads exactly that table.
    let t = sfdisk_json(&img)?;
    assert_eq!(t["label"], "dos");
    assert_eq!(t["id"].as_str().unwrap(), report.disk_id);
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4);
    let expect = [("c", true), ("83", false), ("83", false), ("83", false)];
    for ((p, r), (ty, boot)) in parts.iter().zip(&report.partitions).zip(expect) {
        assert_eq!(p["start"].as_u64().unwrap(), r.start_lba);
        assert_eq!(p["size"].as_u64().unwrap(), r.sectors);
        assert_eq!(p["type"], ty);
        assert_eq!(p["bootable"].as_bool().unwrap_or(false), boot);
    }
    assert_eq!(parts[1]["size"].as_u64().unwrap(), 4 * MIB / 512);
    // sfdisk's consistency check (CHS, overlaps, alignment).
    let v = run(tool("sfdisk").arg("-V").arg(&img))?;
    assert!(v.contains("No errors detected"), "{v}");

    // partx computes PARTUUIDs the way the kernel does.
    let px = run(tool("partx")
        .args(["--show", "-g", "-o", "NR,UUID"])
        .arg(&img))?;
    let uuids: Vec<String> = px
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        .collect();
    let ours: Vec<String> = report
        .partitions
        .iter()
        .map(|p| p.partuuid.clone())
        .collect();
    assert_eq!(uuids, ours);
    assert!(ours[0].ends_with("-01"), "{ours:?}");

    // The FAT partition: clean, FAT32 (≥ 64 MiB), files byte-equal.
    let boot = &report.partitions[0];
    assert_eq!(boot.filesystem.as_ref().unwrap().kind, "fat32");
    let part = extract(&img, boot.offset_bytes, boot.size_bytes)?;
    let fsck = fsck_clean(part.path())?;
    assert!(fsck.contains("32 bit entries"), "{fsck}");
    mtools_match(&img, boot.offset_bytes, &inp, "BOOT")?;
    let info = run(tool("minfo").args([
        "-i",
        &format!("{}@@{}", img.display(), boot.offset_bytes),
        "::",
    ]))?;
    assert!(
        info.contains("hidden sectors: 2048"),
        "BPB hidden sectors:\n{info}"
    );
    let vid = boot.filesystem.as_ref().unwrap().volume_id.replace('-', "");
    assert!(
        info.to_lowercase()
            .contains(&format!("serial number: {}", vid.to_lowercase())),
        "volume id {vid}:\n{info}"
    );

    // The raw slot holds the source, then zeros; the empty slot is zeros.
    let a = &report.partitions[1];
    let src = std::fs::read(inp.rootfs())?;
    assert_eq!(a.content_bytes, Some(src.len() as u64));
    let got = read_range(&img, a.offset_bytes, a.size_bytes as usize)?;
    assert_eq!(&got[..src.len()], &src[..]);
    assert!(got[src.len()..].iter().all(|&b| b == 0));
    let b = &report.partitions[2];
    assert!(read_range(&img, b.offset_bytes, b.size_bytes as usize)?
        .iter()
        .all(|&x| x == 0));
    let s = &report.partitions[3];
    assert_eq!(read_range(&img, s.offset_bytes, 8)?, b"FWSTATE\0");

    // Sparse: far less allocated than the 74 MiB apparent size.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let allocated = std::fs::metadata(&img)?.blocks() * 512;
        assert!(
            allocated < 16 * MIB,
            "image not sparse: {allocated} bytes allocated"
        );
    }

    // inspect reads back the same table.
    let back = diskimage::inspect(&img)?;
    assert_eq!(back.disk_id, report.disk_id);
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
    for (x, y) in back.partitions.iter().zip(&report.partitions) {
        assert_eq!(
            (
                x.number,
                x.start_lba,
                x.sectors,
                &x.type_id,
                x.bootable,
                &x.partuuid
            ),
            (
                y.number,
                y.start_lba,
                y.sectors,
                &y.type_id,
                y.bootable,
                &y.partuuid
            )
        );
    }
    assert_eq!(
        back.partitions[0].filesystem,
        report.partitions[0].filesystem
    );
    Ok(())
}

#[test]
fn gpt_image_with_fat16_is_read_by_sfdisk_and_fsck() -> Result<()> {
    let inp = Inputs::new()?;
    let out = tempfile::tempdir()?;
    let img = out.path().join("disk.img");
    let mut esp = PartitionSpec::new(
        "ESP",
        16 * MIB,
        PartKind::Fat(inp.fat("efi", FatKind::Fat16)),
    );
    esp.gpt_type = Some(gpt_types::EFI_SYSTEM);
    esp.bootable = true;
    let mut root = PartitionSpec::new("root-a", 4 * MIB, PartKind::Raw(Source::Path(inp.rootfs())));
    root.gpt_type = Some(gpt_types::LINUX_ROOT_ARM64);
    let layout = DiskLayout {
        table: TableKind::Gpt,
        seed: "test/qemu-aarch64".into(),
        size_bytes: Some(32 * MIB),
        fat_timestamp: Some(1_700_000_000),
        reserved: Vec::new(),
        partitions: vec![
            esp,
            root,
            PartitionSpec {
                start_bytes: Some(24 * MIB),
                size_bytes: None, // to the end
                ..PartitionSpec::new("state", 0, PartKind::Empty)
            },
        ],
    };
    let report = write_image(&layout, &img)?;
    assert_eq!(std::fs::metadata(&img)?.len(), 32 * MIB);

    let t = sfdisk_json(&img)?;
    assert_eq!(t["label"], "gpt");
    assert_eq!(t["id"].as_str().unwrap().to_lowercase(), report.disk_id);
    assert_eq!(t["firstlba"].as_u64(), Some(34));
    assert_eq!(t["lastlba"].as_u64(), Some(32 * MIB / 512 - 34));
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    let types = [
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    ];
    for ((p, r), ty) in parts.iter().zip(&report.partitions).zip(types) {
        assert_eq!(p["start"].as_u64().unwrap(), r.start_lba);
        assert_eq!(p["size"].as_u64().unwrap(), r.sectors);
        assert_eq!(p["type"], ty);
        assert_eq!(p["uuid"].as_str().unwrap().to_lowercase(), r.partuuid);
        assert_eq!(p["name"].as_str().unwrap(), r.name);
    }
    assert_eq!(parts[0]["attrs"], "LegacyBIOSBootable");
    assert_eq!(parts[2]["start"].as_u64(), Some(24 * MIB / 512));
    assert_eq!(parts[2]["size"].as_u64(), Some(8 * MIB / 512 - 33));
    let v = run(tool("sfdisk").arg("-V").arg(&img))?;
    assert!(v.contains("No errors detected"), "{v}");

    let esp = &report.partitions[0];
    assert_eq!(esp.filesystem.as_ref().unwrap().kind, "fat16");
    let part = extract(&img, esp.offset_bytes, esp.size_bytes)?;
    let fsck = fsck_clean(part.path())?;
    assert!(fsck.contains("16 bit entries"), "{fsck}");
    mtools_match(&img, esp.offset_bytes, &inp, "EFI")?;

    let back = diskimage::inspect(&img)?;
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
    assert_eq!(back.disk_id, report.disk_id);
    let names: Vec<&str> = back.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["ESP", "root-a", "state"]);
    Ok(())
}

#[test]
fn more_than_four_mbr_partitions_use_logical_partitions() -> Result<()> {
    let inp = Inputs::new()?;
    let out = tempfile::tempdir()?;
    let img = out.path().join("ab.img");
    let mut parts = vec![
        PartitionSpec::new(
            "autoboot",
            4 * MIB,
            PartKind::Fat(FatSpec {
                label: "AUTOBOOT".into(),
                ..Default::default()
            }),
        ),
        PartitionSpec::new(
            "boot-a",
            8 * MIB,
            PartKind::Fat(inp.fat("BOOT-A", FatKind::Auto)),
        ),
        PartitionSpec::new(
            "boot-b",
            8 * MIB,
            PartKind::Fat(inp.fat("BOOT-B", FatKind::Auto)),
        ),
        PartitionSpec::new(
            "rootfs-a",
            3 * MIB,
            PartKind::Raw(Source::Path(inp.rootfs())),
        ),
        PartitionSpec::new("rootfs-b", 3 * MIB, PartKind::Empty),
        PartitionSpec::new("state", MIB, PartKind::Empty),
    ];
    parts[1].bootable = true;
    let layout = DiskLayout {
        table: TableKind::Mbr,
        seed: "test/tryboot".into(),
        size_bytes: None,
        fat_timestamp: Some(1_700_000_000),
        reserved: Vec::new(),
        partitions: parts,
    };
    let report = write_image(&layout, &img)?;
    let numbers: Vec<u32> = report.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 2, 3, 5, 6, 7]);

    let t = sfdisk_json(&img)?;
    let sp = t["partitions"].as_array().unwrap();
    // 3 primaries, the extended container, 3 logicals.
    assert_eq!(sp.len(), 7);
    assert_eq!(sp[3]["type"], "f");
    let logical: Vec<&Value> = sp.iter().skip(4).collect();
    for (p, r) in logical.iter().zip(report.partitions.iter().skip(3)) {
        assert_eq!(p["start"].as_u64().unwrap(), r.start_lba);
        assert_eq!(p["size"].as_u64().unwrap(), r.sectors);
        assert_eq!(p["type"], "83");
        assert!(p["node"].as_str().unwrap().ends_with(&r.number.to_string()));
    }
    let v = run(tool("sfdisk").arg("-V").arg(&img))?;
    assert!(v.contains("No errors detected"), "{v}");
    let px = run(tool("partx")
        .args(["--show", "-g", "-o", "NR,UUID"])
        .arg(&img))?;
    for r in &report.partitions {
        assert!(
            px.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [r.number.to_string().as_str(), r.partuuid.as_str()]),
            "partition {} {} not in partx output:\n{px}",
            r.number,
            r.partuuid
        );
    }
    for p in report.partitions.iter().take(3) {
        let part = extract(&img, p.offset_bytes, p.size_bytes)?;
        fsck_clean(part.path())?;
    }
    mtools_match(&img, report.partitions[2].offset_bytes, &inp, "BOOT-B")?;
    let r = &report.partitions[3];
    let src = std::fs::read(inp.rootfs())?;
    assert_eq!(read_range(&img, r.offset_bytes, src.len())?, src);

    let back = diskimage::inspect(&img)?;
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
    let got: Vec<(u32, u64, String)> = back
        .partitions
        .iter()
        .map(|p| (p.number, p.start_lba, p.partuuid.clone()))
        .collect();
    let want: Vec<(u32, u64, String)> = report
        .partitions
        .iter()
        .map(|p| (p.number, p.start_lba, p.partuuid.clone()))
        .collect();
    assert_eq!(got, want);
    Ok(())
}

#[test]
fn two_builds_are_byte_identical_and_seed_changes_ids() -> Result<()> {
    let inp = Inputs::new()?;
    let out = tempfile::tempdir()?;
    let a = out.path().join("a.img");
    let b = out.path().join("b").join("b.img");
    std::fs::create_dir_all(b.parent().unwrap())?;
    let layout = rpi_layout(&inp);
    let ra = write_image(&layout, &a)?;
    // Same inputs listed in a different order give the same bytes.
    let mut shuffled = layout.clone();
    if let PartKind::Fat(f) = &mut shuffled.partitions[0].kind {
        f.files.reverse();
    }
    let rb = write_image(&shuffled, &b)?;
    assert_eq!(ra, rb);
    assert!(std::fs::read(&a)? == std::fs::read(&b)?, "images differ");

    let mut other = layout.clone();
    other.seed = "test/other-board".into();
    let c = out.path().join("c.img");
    let rc = write_image(&other, &c)?;
    assert_ne!(rc.disk_id, ra.disk_id);
    assert_ne!(rc.partitions[0].filesystem, ra.partitions[0].filesystem);

    // plan() predicts the report without writing.
    assert_eq!(
        diskimage::plan(&layout)?.partitions[0].partuuid,
        ra.partitions[0].partuuid
    );
    Ok(())
}

/// Runs `write_image`, expects an error, and checks that nothing (not even
/// a temporary file) is left in the output directory.
fn refused(layout: &DiskLayout) -> Error {
    let out = tempfile::tempdir().unwrap();
    let img = out.path().join("sdcard.img");
    let err = write_image(layout, &img).expect_err("bad layout accepted");
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert!(left.is_empty(), "{err}: left {left:?}");
    err
}

#[test]
fn bad_layouts_give_typed_errors_and_no_file() -> Result<()> {
    let inp = Inputs::new()?;
    let base = rpi_layout(&inp);
    let with = |f: &dyn Fn(&mut DiskLayout)| {
        let mut l = base.clone();
        f(&mut l);
        refused(&l)
    };
    fn fat(l: &mut DiskLayout) -> &mut FatSpec {
        match &mut l.partitions[0].kind {
            PartKind::Fat(f) => f,
            _ => unreachable!(),
        }
    }

    assert!(matches!(
        with(&|l| l.partitions.clear()),
        Error::NoPartitions
    ));
    assert!(matches!(
        with(&|l| l.partitions[1].name = "boot".into()),
        Error::DuplicatePartitionName(_)
    ));
    assert!(matches!(
        with(&|l| l.partitions[1].name = "x".repeat(37)),
        Error::InvalidPartitionName { .. }
    ));
    assert!(matches!(
        with(&|l| l.size_bytes = Some(40 * MIB)),
        Error::TooBigForDisk { .. }
    ));
    assert!(matches!(
        with(&|l| l.partitions[2].size_bytes = Some(1000)),
        Error::Misaligned { .. }
    ));
    assert!(matches!(
        with(&|l| l.partitions[2].size_bytes = Some(0)),
        Error::ZeroSize { .. }
    ));
    assert!(matches!(
        with(&|l| l.partitions[1].size_bytes = None),
        Error::CannotFill { .. }
    ));
    assert!(matches!(
        with(&|l| l.partitions[2].start_bytes = Some(MIB)),
        Error::Overlap { .. }
    ));
    assert!(matches!(
        with(&|l| l.partitions[2].mbr_type = Some(0x05)),
        Error::InvalidType { .. }
    ));
    assert!(matches!(with(&|l| l.seed.clear()), Error::InvalidSeed(_)));
    assert!(matches!(
        with(&|l| l.partitions[1].kind = PartKind::Raw(Source::Bytes(vec![1; 5 * MIB as usize]))),
        Error::SourceTooLarge { .. }
    ));
    assert!(matches!(
        with(&|l| l.partitions[1].size_bytes = Some(2 * MIB)),
        Error::SourceTooLarge { .. }
    ));
    let missing = with(&|l| {
        l.partitions[1].kind = PartKind::Raw(Source::Path("/nonexistent/rootfs.img".into()))
    });
    assert!(matches!(missing, Error::MissingSource { .. }));
    assert_eq!(missing.class(), diskimage::ErrorClass::Io);
    assert!(matches!(
        with(&|l| fat(l).files[0].source = Source::Path("/nonexistent/x".into())),
        Error::MissingSource { .. }
    ));
    assert!(matches!(
        with(&|l| fat(l).files[0].source = Source::Path("/".into())),
        Error::NotAFile { .. }
    ));
    assert!(matches!(
        with(&|l| fat(l).label = "much too long".into()),
        Error::InvalidLabel { .. }
    ));
    assert!(matches!(
        with(&|l| fat(l).files[0].dest = "bad:name".into()),
        Error::InvalidFatPath { .. }
    ));
    assert!(matches!(
        with(&|l| fat(l).files[0].dest = "CONFIG.TXT".into()),
        Error::DuplicateFatPath { .. }
    ));
    let geo = with(&|l| {
        l.partitions[0].size_bytes = Some(16 * MIB);
        fat(l).fat_type = FatKind::Fat32;
    });
    assert!(matches!(geo, Error::FatGeometry { .. }), "{geo}");
    let full = with(&|l| {
        l.partitions[0].size_bytes = Some(4 * MIB);
        fat(l).files.push(FatFile {
            dest: "big.bin".into(),
            source: Source::Bytes(vec![7; 5 * MIB as usize]),
        });
    });
    assert!(matches!(full, Error::FatFull { .. }), "{full}");
    assert_eq!(full.class(), diskimage::ErrorClass::Format);
    // Sizes whose byte offsets overflow 64 bits.
    let huge = with(&|l| {
        l.table = TableKind::Gpt;
        l.partitions[1].size_bytes = Some(1 << 63);
        l.partitions[2].size_bytes = Some(1 << 63);
    });
    assert!(matches!(huge, Error::TooBigForDisk { .. }), "{huge}");
    // MBR cannot address more than 2 TiB.
    let big = with(&|l| l.size_bytes = Some(3 << 40));
    assert!(matches!(big, Error::TooLargeForMbr { .. }), "{big}");
    Ok(())
}

#[test]
fn failed_build_leaves_an_existing_image_untouched() -> Result<()> {
    let inp = Inputs::new()?;
    let out = tempfile::tempdir()?;
    let img = out.path().join("sdcard.img");
    std::fs::write(&img, b"previous")?;
    let mut l = rpi_layout(&inp);
    l.partitions[1].kind = PartKind::Raw(Source::Path("/nonexistent".into()));
    assert!(write_image(&l, &img).is_err());
    assert_eq!(std::fs::read(&img)?, b"previous");
    assert_eq!(std::fs::read_dir(out.path())?.count(), 1);
    Ok(())
}

#[test]
fn directories_spanning_many_clusters_stay_clean() -> Result<()> {
    // 1 KiB clusters on this FAT16: "many/" needs ~20 clusters of entries,
    // nested directories exercise "." and ".." fix-ups at every depth.
    let files: Vec<FatFile> = (0..300)
        .map(|i| FatFile {
            dest: format!("many/a-long-file-name-{i:03}.txt"),
            source: Source::Bytes(format!("file {i}\n").into_bytes()),
        })
        .chain((0..5).map(|d| FatFile {
            dest: format!("d{d}/e/f/g/leaf.bin"),
            source: Source::Bytes(vec![d as u8; 3000]),
        }))
        .collect();
    let layout = DiskLayout {
        table: TableKind::Mbr,
        seed: "test/many".into(),
        size_bytes: None,
        fat_timestamp: None,
        reserved: Vec::new(),
        partitions: vec![PartitionSpec::new(
            "boot",
            8 * MIB,
            PartKind::Fat(FatSpec {
                label: "MANY".into(),
                files,
                ..Default::default()
            }),
        )],
    };
    let out = tempfile::tempdir()?;
    let img = out.path().join("many.img");
    let r = write_image(&layout, &img)?;
    let p = &r.partitions[0];
    assert_eq!(p.filesystem.as_ref().unwrap().kind, "fat16");
    let part = extract(&img, p.offset_bytes, p.size_bytes)?;
    let fsck = fsck_clean(part.path())?;
    assert!(fsck.contains("1024 bytes per cluster"), "{fsck}");
    let at = format!("{}@@{}", img.display(), p.offset_bytes);
    let listing = run(tool("mdir").args(["-i", &at, "-b", "-/", "::"]))?;
    let n = listing
        .lines()
        .filter(|l| l.starts_with("::/many/a-long-file-name-"))
        .count();
    assert_eq!(n, 300, "{listing}");
    let dst = out.path().join("leaf");
    run(tool("mcopy")
        .args(["-n", "-i", &at, "::/d3/e/f/g/leaf.bin"])
        .arg(&dst))?;
    assert_eq!(std::fs::read(&dst)?, vec![3u8; 3000]);
    let dst = out.path().join("f299");
    run(tool("mcopy")
        .args(["-n", "-i", &at, "::/many/a-long-file-name-299.txt"])
        .arg(&dst))?;
    assert_eq!(std::fs::read(&dst)?, b"file 299\n");
    Ok(())
}
