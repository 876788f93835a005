//! `fwpack disk` end to end: a layout file in, an image out that sfdisk,
//! fsck.vfat and mtools read as meant; `--inspect`; exit codes and no
//! leftovers on bad input.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const MIB: u64 = 1 << 20;

fn fwpack(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .args(args)
        .current_dir(dir)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("run fwpack")
}

fn tool(name: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(name)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e} (cargo xtask test installs it)"));
    assert!(
        out.status.success(),
        "{name} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const LAYOUT: &str = "\
table: mbr
seed: test/fwpack-disk
partitions:
  - name: boot
    kind: fat
    size: 64MiB
    bootable: true
    label: boot
    files:
      - { dest: config.txt, source: in/config.txt }
      - { dest: overlays/my-overlay.dtbo, source: in/overlay.dtbo }
    tree: in/firmware
  - { name: rootfs-a, kind: raw, size: 2MiB, source: in/rootfs.img }
  - { name: rootfs-b, kind: empty, size: 2MiB }
  - { name: state, kind: empty, size: 1MiB }
";

fn setup(dir: &Path) {
    std::fs::create_dir_all(dir.join("in/firmware/broadcom")).unwrap();
    std::fs::write(dir.join("in/config.txt"), "arm_64bit=1\nenable_uart=1\n").unwrap();
    std::fs::write(dir.join("in/overlay.dtbo"), vec![0xd0; 777]).unwrap();
    std::fs::write(dir.join("in/firmware/start.elf"), vec![0x5a; 100_000]).unwrap();
    std::fs::write(dir.join("in/firmware/broadcom/board.dtb"), b"dtb").unwrap();
    let rootfs: Vec<u8> = (0..MIB as u32 + 5).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("in/rootfs.img"), rootfs).unwrap();
    std::fs::write(dir.join("layout.yaml"), LAYOUT).unwrap();
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn disk_builds_an_image_peers_read_and_inspect_shows_it() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    setup(d);
    let o = fwpack(
        &[
            "disk",
            "--layout",
            "layout.yaml",
            "-o",
            "sdcard.img",
            "--json",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let parts = report["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4);

    // sfdisk agrees with the report.
    let sf: Value = serde_json::from_str(&tool("sfdisk", &["--json", "sdcard.img"], d)).unwrap();
    let sp = sf["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(sf["partitiontable"]["id"], report["disk_id"]);
    for (a, b) in sp.iter().zip(parts) {
        assert_eq!(a["start"], b["start_lba"]);
        assert_eq!(a["size"], b["sectors"]);
    }
    assert_eq!(sp[0]["type"], "c");
    assert_eq!(sp[0]["bootable"], true);

    // The FAT partition: files from `files` and `tree`, byte-equal.
    let off = parts[0]["offset_bytes"].as_u64().unwrap();
    let at = format!("sdcard.img@@{off}");
    let listing = tool("mdir", &["-i", &at, "-b", "-/", "::"], d);
    for f in [
        "::/config.txt",
        "::/overlays/my-overlay.dtbo",
        "::/start.elf",
        "::/broadcom/board.dtb",
    ] {
        assert!(listing.lines().any(|l| l == f), "{f} missing:\n{listing}");
    }
    tool(
        "mcopy",
        &["-n", "-i", &at, "::/broadcom/board.dtb", "out.dtb"],
        d,
    );
    assert_eq!(std::fs::read(d.join("out.dtb")).unwrap(), b"dtb");
    tool("mcopy", &["-n", "-i", &at, "::/start.elf", "out.elf"], d);
    assert_eq!(
        std::fs::read(d.join("out.elf")).unwrap(),
        std::fs::read(d.join("in/firmware/start.elf")).unwrap()
    );
    // SOURCE_DATE_EPOCH=1700000000 is 2023-11-14 22:13:20 UTC.
    let root = tool("mdir", &["-i", &at, "::/"], d);
    assert!(root.contains("2023-11-14  22:13"), "{root}");
    assert!(root.contains("Volume in drive : is BOOT"), "{root}");

    // Rebuild: byte-identical.
    let o = fwpack(&["disk", "--layout", "layout.yaml", "-o", "again.img"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read(d.join("sdcard.img")).unwrap() == std::fs::read(d.join("again.img")).unwrap()
    );

    // --inspect, human and JSON.
    let o = fwpack(&["disk", "--inspect", "sdcard.img"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let uuid = parts[0]["partuuid"].as_str().unwrap();
    assert!(text.contains(uuid) && text.contains("fat32 BOOT"), "{text}");
    let o = fwpack(&["disk", "--inspect", "sdcard.img", "--json"], d);
    let back: Value = serde_json::from_slice(&o.stdout).unwrap();
    for (a, b) in back["partitions"].as_array().unwrap().iter().zip(parts) {
        for k in [
            "number",
            "start_lba",
            "sectors",
            "type_id",
            "bootable",
            "partuuid",
        ] {
            assert_eq!(a[k], b[k], "{k}");
        }
    }

    // --dry-run writes nothing and predicts the same identifiers.
    let o = fwpack(
        &["disk", "--layout", "layout.yaml", "--dry-run", "--json"],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["partitions"][0]["partuuid"], parts[0]["partuuid"]);
}

fn refused(layout: &str, code: i32, message: &str) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    setup(d);
    std::fs::write(d.join("layout.yaml"), layout).unwrap();
    let before: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let o = fwpack(&["disk", "--layout", "layout.yaml", "-o", "sdcard.img"], d);
    assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(message),
        "expected {message:?} in: {}",
        stderr(&o)
    );
    let after: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before, after, "files left behind");
}

#[test]
fn bad_layouts_exit_with_format_or_io_and_leave_nothing() {
    // Unknown field: FORMAT (4), with file:line:column.
    refused(
        &LAYOUT.replace("bootable: true", "bootabel: true"),
        4,
        "layout.yaml:7:5: partitions[0]: unknown field `bootabel`",
    );
    // Field that only applies to another kind: points at the partition.
    refused(
        &LAYOUT.replace(
            "kind: empty, size: 2MiB }",
            "kind: empty, size: 2MiB, label: X }",
        ),
        4,
        "layout.yaml:14: partitions[2] (\"rootfs-b\"): `label` only applies",
    );
    // Source larger than its partition.
    refused(
        &LAYOUT.replace("size: 2MiB, source", "size: 1MiB, source"),
        4,
        "larger than the partition",
    );
    // Bad FAT name.
    refused(
        &LAYOUT.replace("dest: config.txt", "dest: \"con:fig.txt\""),
        4,
        "not allowed in FAT names",
    );
    // Missing source: I/O (3).
    refused(
        &LAYOUT.replace("in/rootfs.img", "in/nope.img"),
        3,
        "nope.img",
    );
}

#[test]
fn inspect_refuses_what_is_not_a_disk_image() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("junk.img"), vec![0x42; 4096]).unwrap();
    let o = fwpack(&["disk", "--inspect", "junk.img"], t.path());
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("55 AA"), "{}", stderr(&o));
    let o = fwpack(&["disk", "--inspect", "missing.img"], t.path());
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

/// `bmaptool copy` through `<image>.bmap` into a new file; the copy must
/// equal the image byte for byte. Returns (mapped, total) blocks.
fn bmaptool_copy_equals(image: &str, bmap: &str, source: &str, dir: &Path) -> (u64, u64) {
    let map = std::fs::read_to_string(dir.join(bmap)).unwrap();
    let field = |tag: &str| -> u64 {
        let open = format!("<{tag}>");
        let at = map.find(&open).unwrap_or_else(|| panic!("{tag} in {map}")) + open.len();
        map[at..].split('<').next().unwrap().trim().parse().unwrap()
    };
    let copy = format!("{source}.flashed");
    tool("bmaptool", &["copy", "--bmap", bmap, source, &copy], dir);
    let a = std::fs::read(dir.join(image)).unwrap();
    let b = std::fs::read(dir.join(&copy)).unwrap();
    assert_eq!(a.len(), b.len(), "{copy} has the image's length");
    assert!(a == b, "{copy} equals {image}");
    std::fs::remove_file(dir.join(&copy)).unwrap();
    (field("MappedBlocksCount"), field("BlocksCount"))
}

#[test]
fn bmaptool_flashes_the_image_through_its_block_map() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    setup(d);
    let o = fwpack(&["disk", "--layout", "layout.yaml", "-o", "sdcard.img"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let (mapped, blocks) = bmaptool_copy_equals("sdcard.img", "sdcard.img.bmap", "sdcard.img", d);
    // The map holds what was written, not the whole (mostly empty) disk:
    // the 1 MiB + 5 bytes of rootfs at least, far less than all of it.
    assert!(mapped >= 257 && mapped * 4 < blocks, "{mapped} of {blocks}");
    // bmaptool checks every range's SHA-256: a flipped byte in a mapped
    // block is refused.
    let mut img = std::fs::read(d.join("sdcard.img")).unwrap();
    img[0x1fe] ^= 0xff;
    std::fs::write(d.join("corrupt.img"), &img).unwrap();
    let o = Command::new("bmaptool")
        .args([
            "copy",
            "--bmap",
            "sdcard.img.bmap",
            "corrupt.img",
            "out.img",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!o.status.success(), "a corrupt image is refused");
    assert!(stderr(&o).contains("checksum mismatch"), "{}", stderr(&o));
}
