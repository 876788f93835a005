//! `fwpack keygen`: Ed25519 keys in the PEM encodings openssl uses
//! (PKCS#8 private, SubjectPublicKeyInfo public).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::SigningKey;
use fwimage::KeyId;

use crate::exit::{refuse, USAGE};

#[derive(Args)]
pub struct KeygenArgs {
    /// Private key output (PKCS#8 PEM, mode 0600). The public key goes next
    /// to it as `<name>.pub.pem` unless --pub-out is given.
    #[arg(short, long)]
    out: PathBuf,
    /// Public key output (SubjectPublicKeyInfo PEM).
    #[arg(long)]
    pub_out: Option<PathBuf>,
    /// Overwrite existing key files.
    #[arg(long)]
    force: bool,
}

pub fn keygen(args: KeygenArgs) -> Result<()> {
    let pub_out = args.pub_out.unwrap_or_else(|| public_path_for(&args.out));
    for p in [&args.out, &pub_out] {
        if p.exists() && !args.force {
            bail!(
                "{} exists; refusing to overwrite a key (use --force)",
                p.display()
            );
        }
    }
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).context("reading the system random generator")?;
    let key = SigningKey::from_bytes(&seed);
    // PKCS#8 v1 (seed only): OpenSSL 3.0 rejects the v2 form that embeds
    // the public key, and openssl interop is the point of PEM here.
    let private = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .context("encoding private key")?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .context("encoding public key")?;
    write_private(&args.out, private.as_bytes())?;
    crate::cmd::write_atomic(&pub_out, public.as_bytes())?;
    println!(
        "key id {}\nprivate key: {}\npublic key:  {}",
        KeyId::of(&key.verifying_key()).short(),
        args.out.display(),
        pub_out.display()
    );
    Ok(())
}

fn public_path_for(private: &Path) -> PathBuf {
    let stem = private
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".into());
    private.with_file_name(format!("{stem}.pub.pem"))
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Created 0600 from the start: never world-readable, not even briefly.
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Loads a private key from PKCS#8 PEM (ours or `openssl genpkey -algorithm ed25519`).
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let data = crate::cmd::read_input(path)?;
    if pem_label(&data).is_some_and(|l| l.contains("PUBLIC KEY")) {
        return Err(refuse(
            USAGE,
            format!(
                "{} is a public key; signing needs the private key (the file given to keygen -o)",
                path.display()
            ),
        ));
    }
    let text = String::from_utf8_lossy(&data);
    SigningKey::from_pkcs8_pem(text.trim())
        .map_err(|e| fwimage::Error::Key(format!("{}: {e}", path.display())).into())
}

pub fn load_public_key(path: &Path) -> Result<ed25519_dalek::VerifyingKey> {
    let data = crate::cmd::read_input(path)?;
    // A private key where a public one belongs is a usage mistake, not a
    // malformed key: say which file is needed instead of an ASN.1 error.
    if pem_label(&data).is_some_and(|l| l.contains("PRIVATE KEY")) {
        return Err(refuse(
            USAGE,
            format!(
                "{} is a private key; a public key is needed here (keygen wrote it next to \
                 the private key as <name>.pub.pem; `openssl pkey -in KEY -pubout` derives it)",
                path.display()
            ),
        ));
    }
    fwimage::parse_public_key(&data).with_context(|| format!("public key {}", path.display()))
}

/// The label of the first PEM block (`PRIVATE KEY`, `PUBLIC KEY`,
/// `OPENSSH PRIVATE KEY`, ...), if the data is PEM.
fn pem_label(data: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(data).ok()?;
    let rest = &text[text.find("-----BEGIN ")? + "-----BEGIN ".len()..];
    rest.get(..rest.find("-----")?)
}
