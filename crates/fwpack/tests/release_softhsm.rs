//! Release signing with a real PKCS#11 token: SoftHSM 2 generates an
//! Ed25519 key that never leaves it, `fwpack sign --signer-cmd` has the
//! token sign, and both fwpack (public key only) and openssl verify.
//!
//! Two signers, because `pkcs11-tool --sign` (OpenSC 0.23 and still in
//! 0.26) reads 1 KiB and switches to multi-part C_SignUpdate for anything
//! longer, which pure EdDSA tokens refuse. So pkcs11-tool is proven on an
//! image whose signed range fits in 1 KiB, and
//! buildroot-external/utils/pkcs11-ed25519-sign.py (one C_Sign through
//! PyKCS11) on a realistically sized image.

#[path = "release_common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fwpack, ok, run};

const PIN: &str = "5678";
const TOKEN: &str = "fwpack-release";
const KEY_ID: &str = "01";
const EXIT_SIGNATURE: i32 = 5;

struct Token {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    conf: PathBuf,
    module: PathBuf,
}

impl Token {
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.dir)
            .env("SOFTHSM2_CONF", &self.conf)
            .env("PKCS11_PIN", PIN);
        c
    }

    fn fwpack(&self) -> Command {
        let mut c = fwpack(&self.dir);
        c.env("SOFTHSM2_CONF", &self.conf).env("PKCS11_PIN", PIN);
        c
    }

    /// The signer command as a release pipeline would write it: the PIN
    /// comes from the environment, the message from $FWPACK_SIGN_INPUT.
    fn pkcs11_tool_signer(&self) -> String {
        format!(
            "pkcs11-tool --module {} --token-label {TOKEN} --login --pin \"$PKCS11_PIN\" \
             --sign --mechanism EDDSA --id {KEY_ID} --input-file \"$FWPACK_SIGN_INPUT\"",
            self.module.display()
        )
    }

    fn pykcs11_signer(&self, venv: &Path) -> String {
        format!(
            "{} {} --module {} --token {TOKEN} --key-label release",
            venv.join("bin/python3").display(),
            common::workspace()
                .join("buildroot-external/utils/pkcs11-ed25519-sign.py")
                .display(),
            self.module.display()
        )
    }
}

/// A fresh token in a temp dir with an Ed25519 key pair generated on it,
/// and its public key exported to `release.pub.pem`.
fn token() -> Option<Token> {
    if !testkit::tools::require("softhsm2-util") || !testkit::tools::require("pkcs11-tool") {
        return None;
    }
    let module = [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("softhsm2 is installed but libsofthsm2.so is not where Debian puts it");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    std::fs::create_dir(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    let t = Token {
        _tmp: tmp,
        dir,
        conf,
        module,
    };
    ok(t.cmd("softhsm2-util").args([
        "--init-token",
        "--free",
        "--label",
        TOKEN,
        "--so-pin",
        "1234",
        "--pin",
        PIN,
    ]));
    let m = t.module.clone();
    ok(t.cmd("pkcs11-tool").arg("--module").arg(&m).args([
        "--token-label",
        TOKEN,
        "--login",
        "--pin",
        PIN,
        "--keypairgen",
        "--key-type",
        "EC:edwards25519",
        "--label",
        "release",
        "--id",
        KEY_ID,
    ]));
    // The private key must be unexportable: that is the point of a token.
    let objects = ok(t.cmd("pkcs11-tool").arg("--module").arg(&m).args([
        "--token-label",
        TOKEN,
        "--login",
        "--pin",
        PIN,
        "--list-objects",
        "--type",
        "privkey",
    ]));
    let listing = String::from_utf8_lossy(&objects.stdout);
    assert!(listing.contains("EC_EDWARDS"), "{listing}");
    assert!(listing.contains("never extractable"), "{listing}");
    // OpenSC 0.23 writes an EdDSA public key as PEM; older ones wrote DER.
    ok(t.cmd("pkcs11-tool").arg("--module").arg(&m).args([
        "--token-label",
        TOKEN,
        "--read-object",
        "--type",
        "pubkey",
        "--id",
        KEY_ID,
        "--output-file",
        "release.pub.out",
    ]));
    let exported = std::fs::read(t.dir.join("release.pub.out")).unwrap();
    if exported.starts_with(b"-----BEGIN PUBLIC KEY-----") {
        std::fs::write(t.dir.join("release.pub.pem"), &exported).unwrap();
    } else {
        ok(t.cmd("openssl").args([
            "pkey",
            "-pubin",
            "-inform",
            "DER",
            "-in",
            "release.pub.out",
            "-out",
            "release.pub.pem",
        ]));
    }
    let text = ok(t.cmd("openssl").args([
        "pkey",
        "-pubin",
        "-in",
        "release.pub.pem",
        "-noout",
        "-text",
    ]));
    assert!(String::from_utf8_lossy(&text.stdout).contains("ED25519"));
    Some(t)
}

fn payload(t: &Token, name: &str, len: usize) {
    let data: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(t.dir.join(name), data).unwrap();
}

fn stamp_unsigned(t: &Token, payload: &str, image: &str) {
    ok(t.fwpack().args([
        "stamp",
        "--board",
        "rpi-zero2w",
        "--version",
        "9",
        "-s",
        &format!("rootfs={payload}"),
        "-o",
        image,
    ]));
}

fn signed_len(t: &Token, image: &str) -> usize {
    let out = ok(t.fwpack().args(["inspect", "--json", image]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["signed_range"][1].as_u64().unwrap() as usize
}

/// The 40-byte signing message built from the documented range with
/// openssl alone: "FWPKSIG2" || SHA-256(bytes [0, sig_offset)).
fn documented_message(t: &Token, image: &str) -> Vec<u8> {
    let bytes = std::fs::read(t.dir.join(image)).unwrap();
    let end = signed_len(t, image);
    std::fs::write(t.dir.join("head.bin"), &bytes[..end]).unwrap();
    let digest = ok(t
        .cmd("openssl")
        .args(["dgst", "-sha256", "-binary", "head.bin"]))
    .stdout;
    [b"FWPKSIG2".as_slice(), &digest].concat()
}

/// openssl's verdict on the first signature slot, checked independently of
/// fwpack: the documented message, signature at slot offset 40.
fn openssl_verifies(t: &Token, image: &str) {
    let bytes = std::fs::read(t.dir.join(image)).unwrap();
    let end = signed_len(t, image);
    assert_eq!(bytes[end], 1, "first slot holds an Ed25519 signature");
    std::fs::write(t.dir.join("message.bin"), documented_message(t, image)).unwrap();
    std::fs::write(t.dir.join("sig.bin"), &bytes[end + 40..end + 104]).unwrap();
    let out = ok(t.cmd("openssl").args([
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        "release.pub.pem",
        "-rawin",
        "-in",
        "message.bin",
        "-sigfile",
        "sig.bin",
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Signature Verified Successfully"));
}

fn verify(t: &Token, image: &str, key: &str) -> Command {
    let mut c = t.fwpack();
    c.args([
        "verify",
        image,
        "-k",
        key,
        "--board",
        "rpi-zero2w",
        "--min-version",
        "9",
    ]);
    c
}

#[test]
fn pkcs11_tool_signs_through_signer_cmd() {
    let Some(t) = token() else { return };
    payload(&t, "rootfs.img", 100_000);
    stamp_unsigned(&t, "rootfs.img", "update.fwi");
    let len = signed_len(&t, "update.fwi");
    assert!(
        len <= 1024,
        "pkcs11-tool signs single-part only up to 1 KiB; signed range is {len}"
    );
    assert_eq!(
        run(&mut verify(&t, "update.fwi", "release.pub.pem"))
            .status
            .code(),
        Some(EXIT_SIGNATURE)
    );

    ok(t.fwpack()
        .args([
            "sign",
            "update.fwi",
            "--pubkey",
            "release.pub.pem",
            "--signer-cmd",
        ])
        .arg(t.pkcs11_tool_signer()));
    ok(&mut verify(&t, "update.fwi", "release.pub.pem"));
    openssl_verifies(&t, "update.fwi");

    // Public key only on the verifying side: another key is refused, and so
    // is any change to a signed byte.
    ok(t.fwpack().args(["keygen", "-o", "other.pem"]));
    assert_eq!(
        run(&mut verify(&t, "update.fwi", "other.pub.pem"))
            .status
            .code(),
        Some(EXIT_SIGNATURE)
    );
    let mut bytes = std::fs::read(t.dir.join("update.fwi")).unwrap();
    bytes[len - 1] ^= 0x40;
    std::fs::write(t.dir.join("tampered.fwi"), bytes).unwrap();
    assert!(!run(&mut verify(&t, "tampered.fwi", "release.pub.pem"))
        .status
        .success());
}

#[test]
fn pykcs11_signs_a_real_sized_image_and_stamp_signs_in_one_step() {
    let Some(t) = token() else { return };
    let Some(venv) = common::venv() else { return };
    // 8 MiB: 2048 CRC blocks, 32 chunks, 3 index pages; whatever the
    // head's size, the signer sees only the 40-byte message.
    payload(&t, "rootfs.img", 8 << 20);
    stamp_unsigned(&t, "rootfs.img", "update.fwi");
    assert!(signed_len(&t, "update.fwi") > 256);

    // pkcs11-tool splits inputs over 1 KiB into a multi-part sign that
    // pure EdDSA cannot do; fwpack's fixed 40-byte message (FORMAT.md) is
    // what lets it sign an image of this size at all.
    let before = std::fs::read(t.dir.join("update.fwi")).unwrap();
    ok(t.fwpack()
        .args([
            "sign",
            "update.fwi",
            "--pubkey",
            "release.pub.pem",
            "--signer-cmd",
        ])
        .arg(t.pkcs11_tool_signer()));
    ok(&mut verify(&t, "update.fwi", "release.pub.pem"));
    openssl_verifies(&t, "update.fwi");
    std::fs::write(t.dir.join("update.fwi"), &before).unwrap();

    ok(t.fwpack()
        .args([
            "sign",
            "update.fwi",
            "--pubkey",
            "release.pub.pem",
            "--signer-cmd",
        ])
        .arg(t.pykcs11_signer(&venv)));
    ok(&mut verify(&t, "update.fwi", "release.pub.pem"));
    openssl_verifies(&t, "update.fwi");

    // Stamping and signing in one command gives the same signed bytes
    // (Ed25519 is deterministic, SOURCE_DATE_EPOCH fixes the header).
    ok(t.fwpack()
        .args([
            "stamp",
            "--board",
            "rpi-zero2w",
            "--version",
            "9",
            "-s",
            "rootfs=rootfs.img",
            "-o",
            "stamped.fwi",
            "--pubkey",
            "release.pub.pem",
            "--signer-cmd",
        ])
        .arg(t.pykcs11_signer(&venv)));
    ok(&mut verify(&t, "stamped.fwi", "release.pub.pem"));
    assert_eq!(
        std::fs::read(t.dir.join("stamped.fwi")).unwrap(),
        std::fs::read(t.dir.join("update.fwi")).unwrap()
    );
}

#[test]
fn offline_flow_export_message_then_signature_file() {
    let Some(t) = token() else { return };
    let Some(venv) = common::venv() else { return };
    payload(&t, "rootfs.img", 1 << 20);
    stamp_unsigned(&t, "rootfs.img", "update.fwi");
    // The air-gapped flow: only the message travels to the signing host,
    // only 64 bytes travel back.
    ok(t.fwpack()
        .args(["sign", "update.fwi", "--export-message", "to-sign.bin"]));
    let message = std::fs::read(t.dir.join("to-sign.bin")).unwrap();
    assert_eq!(message, documented_message(&t, "update.fwi"));
    let sig = ok(t.cmd("sh").arg("-c").arg(format!(
        "{} < to-sign.bin > detached.sig",
        t.pykcs11_signer(&venv)
    )));
    drop(sig);
    assert_eq!(
        std::fs::metadata(t.dir.join("detached.sig")).unwrap().len(),
        64
    );
    ok(t.cmd("openssl").args([
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        "release.pub.pem",
        "-rawin",
        "-in",
        "to-sign.bin",
        "-sigfile",
        "detached.sig",
    ]));
    ok(t.fwpack().args([
        "sign",
        "update.fwi",
        "--signature-file",
        "detached.sig",
        "--pubkey",
        "release.pub.pem",
    ]));
    ok(&mut verify(&t, "update.fwi", "release.pub.pem"));
    openssl_verifies(&t, "update.fwi");
}
