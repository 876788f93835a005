//! Tables written by sfdisk and filesystems made by mkfs, read back here
//! and cross-checked against sfdisk's own reading; damaged and hostile
//! tables give typed errors, never panics.

use parttable::{fs, read, Error, PartType, TableKind, Warning};
use std::fs::File;
use std::io::{Cursor, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use testkit::tools::require;

fn sfdisk(img: &Path, script: &str) {
    let mut c = Command::new(testkit::tools::find("sfdisk").unwrap())
        .arg("-q")
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success());
}

fn sfdisk_dump(img: &Path) -> String {
    let out = Command::new(testkit::tools::find("sfdisk").unwrap())
        .arg("-d")
        .arg(img)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().to_lowercase()
}

fn image(dir: &Path, name: &str, mib: u64, script: &str) -> Vec<u8> {
    let img = dir.join(name);
    File::create(&img).unwrap().set_len(mib << 20).unwrap();
    sfdisk(&img, script);
    std::fs::read(&img).unwrap()
}

fn parse(b: &[u8]) -> Result<parttable::Table, Error> {
    read(&mut Cursor::new(b), 512)
}

#[test]
fn gpt_matches_sfdisk_and_falls_back_to_the_backup() {
    if !require("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bytes = image(
        dir.path(),
        "gpt.img",
        8,
        "label: gpt\n\
         label-id: 11223344-5566-7788-99AA-BBCCDDEEFF00\n\
         start=2048, size=4096, name=bootA, uuid=0FC63DAF-8483-4772-8E79-3D69D8477DE4, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
         start=6144, size=4096, name=\"root B\", uuid=A2A0D0EB-E5B9-3344-87C0-68B6B72699C7\n",
    );
    let t = parse(&bytes).unwrap();
    assert_eq!(t.kind, TableKind::Gpt);
    assert_eq!(t.disk_id, "11223344-5566-7788-99aa-bbccddeeff00");
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let p = &t.partitions;
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].partuuid, "0fc63daf-8483-4772-8e79-3d69d8477de4");
    assert_eq!(
        p[0].kind.to_string(),
        "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
    );
    assert_eq!(
        (p[0].name.as_str(), p[0].start_lba, p[0].sectors),
        ("bootA", 2048, 4096)
    );
    assert_eq!((p[1].number, p[1].name.as_str()), (2, "root B"));
    let dump = sfdisk_dump(&dir.path().join("gpt.img"));
    for q in p {
        assert!(dump.contains(&format!("uuid={}", q.partuuid)), "{dump}");
    }

    // A damaged primary header: the backup is read, with a warning.
    let mut primary_bad = bytes.clone();
    primary_bad[512 + 40] ^= 1;
    let t2 = parse(&primary_bad).unwrap();
    assert_eq!(t2.partitions, t.partitions);
    assert!(matches!(t2.warnings[0], Warning::PrimaryGptUnusable(_)));

    // Both copies damaged: a typed error, never a guess.
    let last = bytes.len() - 512;
    let mut both_bad = primary_bad;
    both_bad[last + 40] ^= 1;
    assert!(matches!(parse(&both_bad), Err(Error::Gpt { .. })));
}

#[test]
fn mbr_primary_and_logical_partitions_match_sfdisk() {
    if !require("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bytes = image(
        dir.path(),
        "mbr.img",
        16,
        "label: dos\nlabel-id: 0x1234abcd\n\
         start=2048, size=2048, type=c, bootable\n\
         start=4096, size=4096, type=83\n\
         start=8192, size=20480, type=5\n\
         start=10240, size=2048, type=83\n\
         start=14336, size=4096, type=82\n",
    );
    let t = parse(&bytes).unwrap();
    assert_eq!(t.kind, TableKind::Mbr);
    assert_eq!(t.disk_id, "0x1234abcd");
    assert_eq!(
        t.extended.map(|e| (e.start_lba, e.sectors)),
        Some((8192, 20480))
    );
    let got: Vec<_> = t
        .partitions
        .iter()
        .map(|p| {
            (
                p.number,
                p.partuuid.as_str(),
                p.start_lba,
                p.sectors,
                p.kind,
                p.bootable,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "1234abcd-01", 2048, 2048, PartType::Mbr(0x0c), true),
            (2, "1234abcd-02", 4096, 4096, PartType::Mbr(0x83), false),
            (5, "1234abcd-05", 10240, 2048, PartType::Mbr(0x83), false),
            (6, "1234abcd-06", 14336, 4096, PartType::Mbr(0x82), false),
        ]
    );
    // sfdisk names the same partitions at the same starts.
    let dump = sfdisk_dump(&dir.path().join("mbr.img"));
    let sfdisk_starts: Vec<(u32, u64)> = dump
        .lines()
        .filter_map(|l| {
            let (dev, rest) = l.split_once(" : start=")?;
            let n = dev.rsplit_once("mbr.img")?.1.parse().ok()?;
            let start = rest.split(',').next()?.trim().parse().ok()?;
            Some((n, start))
        })
        .filter(|&(n, _)| n != 3) // the extended container itself
        .collect();
    let ours: Vec<(u32, u64)> = t
        .partitions
        .iter()
        .map(|p| (p.number, p.start_lba))
        .collect();
    assert_eq!(ours, sfdisk_starts, "{dump}");

    // An EBR linking backwards ends the walk with an error (no loop).
    let mut looped = bytes.clone();
    let ebr2 = 12288 * 512; // second EBR: sfdisk puts it before partition 6
    assert_eq!(looped[ebr2 + 510..ebr2 + 512], [0x55, 0xaa]);
    let link = ebr2 + 446 + 16;
    looped[link + 4] = 0x05;
    looped[link + 8..link + 12].copy_from_slice(&0u32.to_le_bytes());
    looped[link + 12..link + 16].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(parse(&looped), Err(Error::EbrLink { .. })));
}

#[test]
fn labels_from_mkfs() {
    let dir = tempfile::tempdir().unwrap();
    if require("mkfs.ext4") {
        let img = dir.path().join("ext4.img");
        File::create(&img).unwrap().set_len(4 << 20).unwrap();
        assert!(Command::new(testkit::tools::find("mkfs.ext4").unwrap())
            .args(["-q", "-F", "-L", "rootfs-a"])
            .arg(&img)
            .status()
            .unwrap()
            .success());
        let head = std::fs::read(&img).unwrap();
        let f = fs::probe(&head[..fs::PROBE_BYTES]).unwrap();
        assert_eq!((f.kind, f.label.as_str()), (fs::FsKind::Ext, "rootfs-a"));
    }
    if require("mkfs.vfat") {
        for (bits, label, kind) in [
            ("12", "SMALL", fs::FsKind::Fat12),
            ("16", "BOOTA", fs::FsKind::Fat16),
            ("32", "AUTOBOOT", fs::FsKind::Fat32),
        ] {
            let img = dir.path().join(format!("fat{bits}.img"));
            let mib = match bits {
                "12" => 4,
                "16" => 16,
                _ => 40,
            };
            File::create(&img).unwrap().set_len(mib << 20).unwrap();
            let ok = Command::new(testkit::tools::find("mkfs.vfat").unwrap())
                .args(["-F", bits, "-n", label, "-i", "1a2b3c4d"])
                .arg(&img)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(ok.success());
            let head = std::fs::read(&img).unwrap();
            let f = fs::probe(&head[..fs::PROBE_BYTES]).unwrap();
            assert_eq!((f.kind, f.label.as_str()), (kind, label), "FAT{bits}");
            assert_eq!(f.volume_id, Some(0x1a2b_3c4d), "FAT{bits}");
        }
    }
    assert_eq!(fs::probe(&[0u8; 2048]), None);
    assert_eq!(fs::probe(&[0u8; 10]), None);
}

#[test]
fn sector_sizes_other_than_512_and_short_input() {
    assert!(matches!(parse(&[]), Err(Error::TooShort)));
    assert!(matches!(parse(&[0; 512]), Err(Error::NoSignature)));
    assert!(matches!(
        read(&mut Cursor::new(vec![0u8; 4096]), 1000),
        Err(Error::SectorSize(1000))
    ));
}

/// Deterministic pseudo-random sectors with a valid signature and a
/// protective or extended entry: errors or tables, never panics.
#[test]
fn garbage_never_panics() {
    let mut x = 0x1234_5678u32;
    for round in 0..3000 {
        let mut b = vec![0u8; 512 * 8];
        for v in b.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *v = x as u8;
        }
        b[510] = 0x55;
        b[511] = 0xaa;
        b[446 + 4] = [0xee, 0x05, 0x0f, 0x0c][round % 4];
        if round % 3 == 0 {
            b[512..520].copy_from_slice(b"EFI PART");
        }
        for s in 1..8 {
            b[s * 512 + 510] = 0x55;
            b[s * 512 + 511] = 0xaa;
        }
        let _ = parse(&b);
        let _ = read(&mut Cursor::new(&b), 4096);
        let _ = fs::probe(&b);
    }
}
