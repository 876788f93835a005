//! Public keys, key ids and signature checking.
//!
//! A key id is the SHA-256 of the raw 32-byte Ed25519 public key. Images
//! carry it next to each signature so a device holding several trusted keys
//! (rotation, per-product keys) knows which one to try.

use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::{Error, ImageHead, Result};

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    pub fn of(key: &VerifyingKey) -> Self {
        KeyId(Sha256::digest(key.as_bytes()).into())
    }

    /// Short form for humans: the first 8 bytes in hex.
    pub fn short(&self) -> String {
        hex(&self.0[..8])
    }

    pub fn full(&self) -> String {
        hex(&self.0)
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({})", self.short())
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.short())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The set of public keys a verifier accepts.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    keys: Vec<VerifyingKey>,
}

impl TrustedKeys {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, key: VerifyingKey) {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    /// Adds a key from SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`,
    /// what `openssl pkey -pubout` writes) or from 32 raw bytes.
    pub fn add_encoded(&mut self, data: &[u8]) -> Result<KeyId> {
        let key = parse_public_key(data)?;
        self.add(key);
        Ok(KeyId::of(&key))
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(KeyId::of)
    }

    fn find(&self, id: &[u8; 32]) -> Option<&VerifyingKey> {
        self.keys.iter().find(|k| KeyId::of(k).0 == *id)
    }
}

pub fn parse_public_key(data: &[u8]) -> Result<VerifyingKey> {
    if let Ok(raw) = <[u8; 32]>::try_from(data) {
        return VerifyingKey::from_bytes(&raw).map_err(|e| Error::Key(e.to_string()));
    }
    let text = std::str::from_utf8(data)
        .map_err(|_| Error::Key("public key is neither PEM nor 32 raw bytes".into()))?;
    VerifyingKey::from_public_key_pem(text.trim())
        .map_err(|e| Error::Key(format!("not an Ed25519 public key PEM: {e}")))
}

impl ImageHead {
    /// Checks that at least one signature slot holds a valid signature by a
    /// trusted key over [`ImageHead::signing_message`]. Returns that key's id.
    ///
    /// A slot whose key is trusted but whose signature is wrong fails the
    /// whole check even if another slot would pass: a head that no longer
    /// matches one of its signatures has been modified.
    pub fn verify_signature(&self, trusted: &TrustedKeys) -> Result<KeyId> {
        let present: Vec<_> = self.slots.iter().flatten().collect();
        if present.is_empty() {
            return Err(Error::Unsigned);
        }
        let mut accepted = None;
        for slot in &present {
            let Some(key) = trusted.find(&slot.key_id) else {
                continue;
            };
            let sig = Signature::from_bytes(&slot.signature);
            key.verify_strict(&self.signing_message(), &sig)
                .map_err(|_| Error::BadSignature {
                    key_id: KeyId(slot.key_id).short(),
                })?;
            accepted.get_or_insert(KeyId(slot.key_id));
        }
        accepted.ok_or_else(|| Error::UntrustedKey {
            key_ids: present.iter().map(|s| KeyId(s.key_id).short()).collect(),
        })
    }
}
