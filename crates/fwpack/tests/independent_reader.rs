//! Container format 2 against an independent reader and writer:
//! crates/fwimage/reference/fwi_{verify,write,cases}.py, written from
//! docs/FORMAT.md alone (standard-library Python, openssl, zstd). If our
//! reader and a reader written from the spec disagree, either the code or
//! the spec is wrong; these tests catch both.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn reference(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fwimage/reference")
        .join(script)
}

fn python(script: &str, args: &[&str], dir: &Path) -> Output {
    Command::new("python3")
        .arg(reference(script))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("python3 is installed by `cargo xtask deps`")
}

fn fwpack(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .args(args)
        .current_dir(dir)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("run fwpack")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(what: &str, out: Output) -> Output {
    assert!(out.status.success(), "{what} failed: {}", text(&out));
    out
}

/// Payloads (one incompressible, one constant, one text) and a key pair
/// made by `fwpack keygen`; a second pair made by openssl.
fn fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let rootfs: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("rootfs.img"), rootfs).unwrap();
    std::fs::write(dir.join("boot.img"), vec![7u8; 100_000]).unwrap();
    let log: String = (0..12_000)
        .map(|i| format!("line {i} of a compressible log\n"))
        .collect();
    std::fs::write(dir.join("log.img"), log).unwrap();
    // Zero chunks (FORMAT.md "Zero chunks"): at 64 KiB chunks, chunks 0, 2
    // and the short last one are all zero, and zero.img is all zero.
    let mut sparse: Vec<u8> = (0..5 * 65536 + 700u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 15) as u8)
        .collect();
    sparse[..65536].fill(0);
    sparse[2 * 65536..3 * 65536].fill(0);
    sparse[5 * 65536..].fill(0);
    std::fs::write(dir.join("sparse.img"), sparse).unwrap();
    std::fs::write(dir.join("zero.img"), vec![0u8; 3 * 65536 + 5]).unwrap();
    ok("keygen", fwpack(&["keygen", "-o", "release.pem"], &dir));
    for args in [
        &["genpkey", "-algorithm", "ed25519", "-out", "other.pem"][..],
        &[
            "pkey",
            "-in",
            "other.pem",
            "-pubout",
            "-out",
            "other.pub.pem",
        ][..],
    ] {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl is installed by `cargo xtask deps`");
        assert!(out.status.success(), "openssl: {}", text(&out));
    }
    (tmp, dir)
}

fn u32_at(b: &[u8], off: usize) -> usize {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) as usize
}

fn u64_at(b: &[u8], off: usize) -> usize {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap()) as usize
}

/// The regions of a format-2 image, located from FORMAT.md's offsets.
struct Layout {
    segments: Vec<(usize, usize)>, // (data_offset, stored_len)
    slots: usize,
    pages: usize,
    chunk_pages: usize,
    index_offset: usize,
    sig_offset: usize,
}

fn layout(img: &[u8]) -> Layout {
    assert_eq!(&img[..8], b"FWPKIMG\0");
    assert_eq!(u16::from_le_bytes([img[8], img[9]]), 2, "format 2");
    let nseg = u32_at(img, 40);
    let pages = u64_at(img, 80);
    Layout {
        segments: (0..nseg)
            .map(|i| {
                let e = 256 + 160 * i;
                (u64_at(img, e + 64), u64_at(img, e + 72))
            })
            .collect(),
        slots: u32_at(img, 52),
        pages,
        chunk_pages: u64_at(img, 56).div_ceil(51),
        index_offset: u64_at(img, 72),
        // The head extension (ext_len at 232) ends the signed head.
        sig_offset: 256 + 160 * nseg + 32 * pages + u32_at(img, 232),
    }
}

/// Does `fwpack stamp` take a chunk size? (Small chunks give several
/// chunks and chunk pages from small payloads.)
fn chunk_size_flag(dir: &Path) -> Option<&'static str> {
    let help = text(&fwpack(&["stamp", "--help"], dir));
    ["--chunk-size", "--chunk-shift"]
        .into_iter()
        .find(|f| help.contains(f))
}

fn stamp_and_sign(dir: &Path, out: &str, segments: &[&str], small_chunks: bool) {
    let mut args = vec![
        "stamp",
        "--board",
        "rpi-zero2w",
        "--version",
        "5",
        "--label",
        "2026.11",
    ];
    for s in segments {
        args.extend(["-s", s]);
    }
    let flag = chunk_size_flag(dir);
    if small_chunks {
        match flag {
            Some("--chunk-size") => args.extend(["--chunk-size", "65536"]),
            Some(_) => args.extend(["--chunk-shift", "16"]),
            None => {}
        }
    }
    args.extend(["-o", out]);
    ok("stamp", fwpack(&args, dir));
    ok("sign", fwpack(&["sign", out, "--key", "release.pem"], dir));
}

/// A refusal with one of the README's classes: 4 malformed, 5 signature,
/// 6 integrity (not 1 "unexpected", nor a panic).
fn refused_by_class(out: &Output) -> bool {
    matches!(out.status.code(), Some(4..=6))
}

fn py_verify(dir: &Path, image: &str, extra: &[&str]) -> Output {
    let mut args = vec![image, "--pubkey", "release.pub.pem"];
    args.extend_from_slice(extra);
    python("fwi_verify.py", &args, dir)
}

#[test]
fn the_reference_reader_and_writer_agree_on_every_case() {
    // Needs no fwpack: the self-test of the two scripts, every rule case
    // signed by an openssl key.
    let (_tmp, dir) = fixture();
    let out = python(
        "fwi_cases.py",
        &[
            "cases",
            "--key",
            "other.pem",
            "--other",
            "release.pem",
            "--check",
            "other.pub.pem",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("FAIL"), "{}", text(&out));
}

#[test]
fn images_fwpack_stamped_and_signed_verify_with_the_independent_reader() {
    let (_tmp, dir) = fixture();
    let variants: [(&str, &[&str], bool); 7] = [
        ("plain.fwi", &["rootfs=rootfs.img,target=system"], false),
        ("zstd.fwi", &["log=log.img,compress=zstd"], false),
        ("gzip.fwi", &["log=log.img,compress=gzip"], false),
        (
            "three.fwi",
            &[
                "rootfs=rootfs.img,target=system",
                "boot=boot.img,compress=gzip",
                "log=log.img,compress=zstd,target=system,offset=1048576",
            ],
            false,
        ),
        (
            "small.fwi",
            &[
                "rootfs=rootfs.img,target=system",
                "boot=boot.img,compress=gzip",
                "log=log.img,compress=zstd",
            ],
            true,
        ),
        // Zero chunks stored empty (stamp's default): in a segment with
        // data, an all-zero segment between and one last.
        (
            "zero.fwi",
            &[
                "sparse=sparse.img,compress=gzip",
                "zero=zero.img,compress=zstd",
                "raw=boot.img",
                "sparse2=sparse.img,compress=zstd",
                "zero2=zero.img,compress=gzip",
            ],
            true,
        ),
        // More than 51 chunks and 1024 CRC blocks: two chunk pages and two
        // CRC pages.
        (
            "pages.fwi",
            &["big=big.img,target=system", "log=log.img,compress=zstd"],
            true,
        ),
    ];
    let big: Vec<u8> = (0..4_300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(dir.join("big.img"), big).unwrap();
    for (image, segments, small) in variants {
        stamp_and_sign(&dir, image, segments, small);
        let out = py_verify(&dir, image, &["--board", "rpi-zero2w"]);
        assert!(out.status.success(), "{image}: {}", text(&out));
        let summary = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(summary.starts_with("OK "), "{summary}");
        assert!(
            summary.contains(&format!("segments={} ", segments.len())),
            "{summary}"
        );
        // FORMAT.md documents `inspect --json`'s signed_range as the
        // signed head [0, sig_offset).
        let img = std::fs::read(dir.join(image)).unwrap();
        let l = layout(&img);
        let inspect = ok("inspect", fwpack(&["inspect", "--json", image], &dir));
        let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        assert_eq!(
            v["signed_range"][1].as_u64(),
            Some(l.sig_offset as u64),
            "{image}"
        );
        if small && chunk_size_flag(&dir).is_some() {
            assert!(summary.contains("chunk_size=65536"), "{summary}");
        }
        // Both readers count the same chunks and index pages.
        assert!(
            summary.contains(&format!("chunks={} ", v["chunks"])),
            "{summary} vs {v}"
        );
        assert_eq!(v["index_pages"].as_u64(), Some(l.pages as u64));
        if image == "zero.fwi" && chunk_size_flag(&dir).is_some() {
            // incompat bit 2 (zero chunks) at header offset 16.
            assert_eq!(u32_at(&img, 16) & 4, 4, "{v}");
            assert_eq!(v["segments"][1]["stored_len"], 0, "{v}");
            assert_eq!(v["segments"][1]["zero_chunks"], v["segments"][1]["chunks"]);
            // sparse.img: chunks 0, 2 and the short last one.
            assert_eq!(v["segments"][0]["zero_chunks"], 3, "{v}");
        }
        if image == "pages.fwi" {
            assert!(l.chunk_pages >= 2 && l.pages - l.chunk_pages >= 2, "{v}");
        }
        // Wrong board and an untrusted key are refused, by name.
        let out = py_verify(&dir, image, &["--board", "visionfive2"]);
        assert!(text(&out).contains("REFUSED: board"), "{}", text(&out));
        let out = python("fwi_verify.py", &[image, "--pubkey", "other.pub.pem"], &dir);
        assert!(
            text(&out).contains("REFUSED: signature: no slot"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn the_sbom_record_reads_the_same_in_both_readers_and_is_signed() {
    let (_tmp, dir) = fixture();
    let sbom = b"{\"spdxVersion\": \"SPDX-2.3\"}\n";
    std::fs::write(dir.join("sbom.json"), sbom).unwrap();
    let want = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(sbom))
    };
    let args = [
        "stamp",
        "--board",
        "rpi-zero2w",
        "--version",
        "5",
        "-s",
        "rootfs=rootfs.img,target=system",
        "--sbom",
        "sbom.json",
        "--key",
        "release.pem",
        "-o",
        "sbom.fwi",
    ];
    ok("stamp --sbom", fwpack(&args, &dir));
    let out = py_verify(&dir, "sbom.fwi", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("sbom={want}")),
        "{}",
        text(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(
        &ok("inspect", fwpack(&["inspect", "--json", "sbom.fwi"], &dir)).stdout,
    )
    .unwrap();
    assert_eq!(v["sbom_sha256"].as_str(), Some(want.as_str()));
    let img = std::fs::read(dir.join("sbom.fwi")).unwrap();
    let l = layout(&img);
    assert_eq!(v["signed_range"][1].as_u64(), Some(l.sig_offset as u64));
    // The record's last hash byte is inside the signed head.
    let mut bad = img.clone();
    bad[l.sig_offset - 1] ^= 1;
    std::fs::write(dir.join("bad.fwi"), &bad).unwrap();
    let py = py_verify(&dir, "bad.fwi", &[]);
    assert!(text(&py).contains("REFUSED: signature"), "{}", text(&py));
    let rs = fwpack(&["verify", "bad.fwi", "-k", "release.pub.pem"], &dir);
    assert_eq!(rs.status.code(), Some(5), "{}", text(&rs));
}

#[test]
fn a_single_byte_changed_in_any_region_is_refused_by_both_readers() {
    let (_tmp, dir) = fixture();
    stamp_and_sign(
        &dir,
        "img.fwi",
        &[
            "rootfs=rootfs.img,target=system",
            "boot=boot.img,compress=gzip",
            "log=log.img,compress=zstd",
        ],
        true,
    );
    let img = std::fs::read(dir.join("img.fwi")).unwrap();
    let l = layout(&img);
    let (seg0, seg1, seg2) = (l.segments[0], l.segments[1], l.segments[2]);
    let mut regions: Vec<(&str, usize, &[&str])> = vec![
        ("header image_len", 100, &["header"]),
        ("header board", 104, &["header"]),
        (
            "segment 0 raw_len",
            256 + 80,
            &["segment table", "signature"],
        ),
        ("segment 1 name", 256 + 160, &["segment table", "signature"]),
        ("segment 2 target_offset", 256 + 320 + 90, &["signature"]),
        ("page-hash table", l.sig_offset - 32, &["signature"]),
        ("signature slot 0", l.sig_offset + 40 + 31, &["signature"]),
        ("slot 0 key_id", l.sig_offset + 8, &["signature"]),
        ("chunk page 0", l.index_offset + 64, &["page hash 0"]),
        (
            "CRC page",
            l.index_offset + 4096 * l.chunk_pages + 4,
            &["page hash"],
        ),
        ("uncompressed chunk data", seg0.0 + 1000, &["stored hash"]),
        ("gzip chunk data", seg1.0 + 20, &["stored hash"]),
        ("zstd chunk data", seg2.0 + 5, &["stored hash"]),
        ("last byte", img.len() - 1, &["stored hash"]),
    ];
    if l.sig_offset + 128 * l.slots < l.index_offset {
        regions.push(("padding after the slots", l.index_offset - 1, &["padding"]));
    }
    if seg0.0 + seg0.1 < seg1.0 {
        regions.push(("padding between segments", seg1.0 - 1, &["padding"]));
    }
    if l.slots > 1 {
        // An empty slot is all zero; a reader refuses anything else there.
        regions.push(("empty slot 1", l.sig_offset + 128 + 50, &["signature"]));
    }
    assert!(l.pages > l.chunk_pages, "a CRC page exists");
    let mut failures = Vec::new();
    for (what, off, expected) in &regions {
        let mut bad = img.clone();
        bad[*off] ^= 0x01;
        std::fs::write(dir.join("bad.fwi"), &bad).unwrap();
        let py = py_verify(&dir, "bad.fwi", &[]);
        let msg = text(&py);
        if py.status.success() || !expected.iter().any(|e| msg.contains(e)) {
            failures.push(format!(
                "{what} (offset {off}): fwi_verify.py said {msg:?}, expected one of {expected:?}"
            ));
        }
        let rs = fwpack(&["verify", "bad.fwi", "-k", "release.pub.pem"], &dir);
        if !refused_by_class(&rs) {
            failures.push(format!(
                "{what} (offset {off}): fwpack verify exit {:?}: {}",
                rs.status.code(),
                text(&rs).trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fwpack_accepts_images_the_independent_writer_made() {
    let (_tmp, dir) = fixture();
    let writes: [(&str, &[&str]); 4] = [
        ("w-plain.fwi", &["-s", "rootfs=rootfs.img,target=system"]),
        (
            "w-three.fwi",
            &[
                "-s",
                "rootfs=rootfs.img,target=system",
                "-s",
                "boot=boot.img,compress=gzip",
                "-s",
                "log=log.img,compress=zstd,target=system,offset=1048576",
                "--chunk-shift",
                "16",
            ],
        ),
        (
            "w-zero.fwi",
            &[
                "-s",
                "sparse=sparse.img,compress=gzip",
                "-s",
                "zero=zero.img,compress=zstd",
                "-s",
                "log=log.img,compress=zstd",
                "--chunk-shift",
                "16",
                "--zero-chunks",
            ],
        ),
        (
            "w-two-keys.fwi",
            &[
                "-s",
                "log=log.img,compress=gzip",
                "--key",
                "other.pem",
                "--chunk-shift",
                "20",
            ],
        ),
    ];
    for (image, extra) in writes {
        let mut args = vec![
            "--board",
            "rpi-zero2w",
            "--version",
            "9",
            "--label",
            "py-1",
            "--key",
            "release.pem",
            "-o",
            image,
        ];
        args.extend_from_slice(extra);
        ok("fwi_write.py", python("fwi_write.py", &args, &dir));
        ok(
            "fwpack verify",
            fwpack(
                &[
                    "verify",
                    image,
                    "-k",
                    "release.pub.pem",
                    "--board",
                    "rpi-zero2w",
                ],
                &dir,
            ),
        );
        let inspect = ok("fwpack inspect", fwpack(&["inspect", image], &dir));
        let shown = text(&inspect);
        assert!(
            shown.contains("rpi-zero2w") && shown.contains("py-1"),
            "{shown}"
        );
        let json = ok(
            "inspect --json",
            fwpack(&["inspect", "--json", image], &dir),
        );
        let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        let img = std::fs::read(dir.join(image)).unwrap();
        let l = layout(&img);
        assert_eq!(v["signed_range"][1].as_u64(), Some(l.sig_offset as u64));
        assert_eq!(v["index_range"][0].as_u64(), Some(l.index_offset as u64));
        assert_eq!(v["index_pages"].as_u64(), Some(l.pages as u64));
        assert_eq!(v["label"].as_str(), Some("py-1"));
        let names: Vec<&str> = v["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = extra
            .windows(2)
            .filter(|w| w[0] == "-s")
            .map(|w| w[1].split('=').next().unwrap())
            .collect();
        assert_eq!(names, want, "{v}");
        // A byte changed in the last stored chunk is refused by fwpack too.
        let mut bad = img.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        std::fs::write(dir.join("bad.fwi"), bad).unwrap();
        let out = fwpack(&["verify", "bad.fwi", "-k", "release.pub.pem"], &dir);
        assert!(refused_by_class(&out), "{image}: {}", text(&out));
    }
}

#[test]
fn fwpack_verify_refuses_what_the_spec_refuses_and_accepts_the_rest() {
    // Every case breaks one FORMAT.md rule in an otherwise correctly signed
    // image (zstd windows, trailing bytes, checksums, table rules, ...).
    let (_tmp, dir) = fixture();
    ok(
        "fwi_cases.py",
        python(
            "fwi_cases.py",
            &["cases", "--key", "release.pem", "--other", "other.pem"],
            &dir,
        ),
    );
    let list = std::fs::read_to_string(dir.join("cases/cases.tsv")).unwrap();
    let mut disagreements = Vec::new();
    let mut n = 0;
    for line in list.lines() {
        let mut cols = line.split('\t');
        let (file, expected) = (cols.next().unwrap(), cols.next().unwrap());
        // A third column names the key to trust (e.g. a small-order point).
        let key = cols
            .next()
            .map_or("release.pub.pem".to_string(), |k| format!("cases/{k}"));
        let path = format!("cases/{file}");
        let out = fwpack(&["verify", &path, "-k", &key], &dir);
        let accepted = out.status.success();
        if accepted != (expected == "ok") || !(accepted || refused_by_class(&out)) {
            disagreements.push(format!(
                "{file}: spec says {expected:?}, fwpack verify {} (exit {:?}): {}",
                if accepted {
                    "accepted it"
                } else {
                    "refused it"
                },
                out.status.code(),
                text(&out).trim()
            ));
        }
        n += 1;
    }
    assert!(n > 60, "only {n} cases");
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}
