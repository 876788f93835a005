//! The container commands end to end, against the real openssl.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fwpack(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .args(args)
        .current_dir(dir)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("run fwpack")
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "fwpack failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn openssl(args: &[&str], dir: &Path) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed by `cargo xtask deps`")
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

/// Two payloads (one compressible) and a key pair made by `fwpack keygen`.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let rootfs: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("rootfs.img"), rootfs).unwrap();
    std::fs::write(dir.join("boot.img"), vec![7u8; 100_000]).unwrap();
    ok(fwpack(&["keygen", "-o", "release.pem"], &dir));
    Fixture { _tmp: tmp, dir }
}

fn stamp(dir: &Path, out: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "stamp",
        "--board",
        "rpi-zero2w",
        "--version",
        "5",
        "--label",
        "2026.11",
        "-s",
        "rootfs=rootfs.img,target=system",
        "-s",
        "boot=boot.img,compress=zstd",
        "-o",
        out,
    ];
    args.extend_from_slice(extra);
    fwpack(&args, dir)
}

fn signed_len(dir: &Path, image: &str) -> usize {
    let out = ok(fwpack(&["inspect", "--json", image], dir));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["signed_range"][1].as_u64().unwrap() as usize
}

#[test]
fn openssl_verifies_our_signature_over_the_documented_range() {
    let f = fixture();
    ok(stamp(&f.dir, "img.fwi", &["--key", "release.pem"]));
    let img = std::fs::read(f.dir.join("img.fwi")).unwrap();
    let n = signed_len(&f.dir, "img.fwi");
    // FORMAT.md: the signed message is "FWPKSIG2" followed by the SHA-256
    // of bytes [0, sig_offset); slot 0 holds alg(1), 7 reserved bytes, key
    // id (32) and the signature (64). The message is built with openssl
    // from the documented range, not by us.
    std::fs::write(f.dir.join("head.bin"), &img[..n]).unwrap();
    let digest = openssl(&["dgst", "-sha256", "-binary", "head.bin"], &f.dir).stdout;
    assert_eq!(digest.len(), 32);
    let msg = [b"FWPKSIG2".as_slice(), &digest].concat();
    std::fs::write(f.dir.join("msg.bin"), &msg).unwrap();
    assert_eq!(img[n], 1, "slot 0 is an Ed25519 signature");
    std::fs::write(f.dir.join("sig.bin"), &img[n + 40..n + 104]).unwrap();
    let out = openssl(
        &[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            "release.pub.pem",
            "-rawin",
            "-in",
            "msg.bin",
            "-sigfile",
            "sig.bin",
        ],
        &f.dir,
    );
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Signature Verified Successfully"));

    // The key id is SHA-256 of the raw public key as openssl sees it.
    let der = openssl(
        &[
            "pkey",
            "-pubin",
            "-in",
            "release.pub.pem",
            "-outform",
            "DER",
        ],
        &f.dir,
    )
    .stdout;
    use sha2::Digest;
    let raw = &der[der.len() - 32..];
    assert_eq!(&img[n + 8..n + 40], sha2::Sha256::digest(raw).as_slice());
}

#[test]
fn we_accept_a_signature_openssl_made_with_our_key_and_an_openssl_key() {
    let f = fixture();
    ok(stamp(&f.dir, "img.fwi", &[]));
    // Unsigned images do not verify.
    let out = fwpack(&["verify", "img.fwi", "-k", "release.pub.pem"], &f.dir);
    assert_eq!(code(&out), 5, "{}", String::from_utf8_lossy(&out.stderr));

    ok(fwpack(
        &["sign", "img.fwi", "--export-message", "msg.bin"],
        &f.dir,
    ));
    let out = openssl(
        &[
            "pkeyutl",
            "-sign",
            "-inkey",
            "release.pem",
            "-rawin",
            "-in",
            "msg.bin",
            "-out",
            "sig.bin",
        ],
        &f.dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(fwpack(
        &[
            "sign",
            "img.fwi",
            "--signature-file",
            "sig.bin",
            "--pubkey",
            "release.pub.pem",
        ],
        &f.dir,
    ));
    ok(fwpack(
        &["verify", "img.fwi", "-k", "release.pub.pem"],
        &f.dir,
    ));

    // A key pair made by openssl works as signing key and trusted key.
    assert!(openssl(
        &["genpkey", "-algorithm", "ed25519", "-out", "ossl.pem"],
        &f.dir
    )
    .status
    .success());
    assert!(openssl(
        &["pkey", "-in", "ossl.pem", "-pubout", "-out", "ossl.pub.pem"],
        &f.dir
    )
    .status
    .success());
    ok(fwpack(&["sign", "img.fwi", "--key", "ossl.pem"], &f.dir));
    ok(fwpack(&["verify", "img.fwi", "-k", "ossl.pub.pem"], &f.dir));
    // Both signatures are there (rotation): either key alone is enough.
    ok(fwpack(
        &["verify", "img.fwi", "-k", "release.pub.pem"],
        &f.dir,
    ));
}

#[test]
fn external_signer_command_signs_without_the_key_in_fwpack() {
    let f = fixture();
    ok(stamp(&f.dir, "img.fwi", &[]));
    // Stands in for an HSM/KMS client: reads the message file, prints the
    // raw signature.
    let cmd = "openssl pkeyutl -sign -inkey release.pem -rawin -in \"$FWPACK_SIGN_INPUT\"";
    ok(fwpack(
        &[
            "sign",
            "img.fwi",
            "--signer-cmd",
            cmd,
            "--pubkey",
            "release.pub.pem",
        ],
        &f.dir,
    ));
    ok(fwpack(
        &["verify", "img.fwi", "-k", "release.pub.pem"],
        &f.dir,
    ));

    // A signer that returns garbage or a signature by another key is
    // refused before anything is written to the image.
    let before = std::fs::read(f.dir.join("img.fwi")).unwrap();
    ok(fwpack(&["keygen", "-o", "other.pem"], &f.dir));
    let wrong = "openssl pkeyutl -sign -inkey other.pem -rawin -in \"$FWPACK_SIGN_INPUT\"";
    let out = fwpack(
        &[
            "sign",
            "img.fwi",
            "--signer-cmd",
            wrong,
            "--pubkey",
            "release.pub.pem",
        ],
        &f.dir,
    );
    assert!(!out.status.success());
    let out = fwpack(
        &[
            "sign",
            "img.fwi",
            "--signer-cmd",
            "echo nope",
            "--pubkey",
            "release.pub.pem",
        ],
        &f.dir,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("64-byte"));
    assert_eq!(before, std::fs::read(f.dir.join("img.fwi")).unwrap());
}

#[test]
fn exit_codes_name_the_failure_class() {
    let f = fixture();
    ok(stamp(&f.dir, "img.fwi", &["--key", "release.pem"]));
    ok(fwpack(&["keygen", "-o", "other.pem"], &f.dir));
    let verify = |img: &str, extra: &[&str]| {
        let mut a = vec!["verify", img, "-k", "release.pub.pem"];
        a.extend_from_slice(extra);
        fwpack(&a, &f.dir)
    };
    assert_eq!(code(&verify("img.fwi", &[])), 0);
    assert_eq!(code(&verify("img.fwi", &["--board", "visionfive2"])), 7);
    assert_eq!(code(&verify("img.fwi", &["--min-version", "6"])), 7);
    assert_eq!(code(&verify("img.fwi", &["--min-version", "5"])), 0);
    assert_eq!(
        code(&fwpack(
            &["verify", "img.fwi", "-k", "other.pub.pem"],
            &f.dir
        )),
        5
    );
    assert_eq!(code(&verify("missing.fwi", &[])), 3);

    let img = std::fs::read(f.dir.join("img.fwi")).unwrap();
    let mut data_flip = img.clone();
    let last = data_flip.len() - 10;
    data_flip[last] ^= 1;
    std::fs::write(f.dir.join("data.fwi"), data_flip).unwrap();
    let out = verify("data.fwi", &[]);
    assert_eq!(code(&out), 6, "{}", String::from_utf8_lossy(&out.stderr));

    std::fs::write(f.dir.join("short.fwi"), &img[..img.len() / 2]).unwrap();
    let out = verify("short.fwi", &[]);
    assert_eq!(code(&out), 4);
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));

    std::fs::write(f.dir.join("junk.fwi"), b"#!/bin/sh\necho hi\n").unwrap();
    let out = verify("junk.fwi", &[]);
    assert_eq!(code(&out), 4);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a fwpack image"));
}

#[test]
fn stamping_is_reproducible_and_leaves_nothing_on_failure() {
    let f = fixture();
    ok(stamp(&f.dir, "a.fwi", &["--key", "release.pem"]));
    ok(stamp(&f.dir, "b.fwi", &["--key", "release.pem"]));
    assert_eq!(
        std::fs::read(f.dir.join("a.fwi")).unwrap(),
        std::fs::read(f.dir.join("b.fwi")).unwrap()
    );
    // A missing payload fails before an output appears.
    let out = fwpack(
        &[
            "stamp",
            "--board",
            "b",
            "--version",
            "1",
            "-s",
            "x=nope.img",
            "-o",
            "c.fwi",
        ],
        &f.dir,
    );
    assert_eq!(code(&out), 3);
    assert!(!f.dir.join("c.fwi").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&f.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".fwpack-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    let f = fixture();
    let out = ok(fwpack(&["completions", "bash"], &f.dir));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stamp"));
    ok(fwpack(&["man", "-o", "man"], &f.dir));
    assert!(f.dir.join("man/fwpack.1").exists());
    assert!(f.dir.join("man/fwpack-verify.1").exists());
}

/// The field names docs/FORMAT.md gives for `inspect --json` are exactly
/// the ones printed (top level and per segment), so a reader that follows
/// the spec finds every field, and a renamed field fails here.
#[test]
fn inspect_json_has_the_documented_fields() {
    let f = fixture();
    ok(stamp(&f.dir, "u.fwi", &["--key", "release.pem"]));
    let out = ok(fwpack(&["inspect", "--json", "u.fwi"], &f.dir));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut printed: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    let seg = &v["segments"][0];
    let mut seg_printed: Vec<String> = seg.as_object().unwrap().keys().cloned().collect();

    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/FORMAT.md"))
            .unwrap();
    let section = spec
        .split("### `fwpack inspect --json`")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .expect("FORMAT.md has an `inspect --json` section");
    let ticked = |s: &str| -> Vec<String> {
        s.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let mut documented = Vec::new();
    let mut seg_documented = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').collect();
        documented.extend(ticked(cells[1]));
        if cells[1].contains("`segments`") {
            // The per-segment names are the ticked words before the dash.
            let names = cells[2].split('—').next().unwrap();
            seg_documented.extend(ticked(names).into_iter().filter(|n| !n.starts_with('"')));
        }
    }
    for v in [
        &mut printed,
        &mut documented,
        &mut seg_printed,
        &mut seg_documented,
    ] {
        v.sort();
    }
    assert_eq!(printed, documented, "top-level fields");
    assert_eq!(seg_printed, seg_documented, "segment fields");
    assert!(seg["compression"] == "none" || seg["compression"] == "zstd");
}
