//! Arbitrary bytes as an image: parsing, the signature check and the full
//! one-pass verification must never panic nor allocate beyond the input.
//!
//! Random bytes almost never pass the header checksum, nor any signature,
//! which would keep the fuzzer in front of the first checks. So each input
//! is also tried *made authentic*: magic, version and header CRC patched
//! in, every chunk entry's stored hash and every index page hash
//! recomputed from the (mutated) bytes, and the head signed with a key the
//! target trusts. That is a hostile signer's image, and reaches the chunk
//! rules, the CRC chain and the zstd/gzip decoders with their limits. An
//! empty chunk (a zero chunk when incompat bit 2 is set, FORMAT.md "Zero
//! chunks") also gets the raw hash of its zeros, so the fuzzer reaches the
//! CRC chain behind it too.
//!
//! The head extension's record parser is also fed the raw input directly:
//! a valid header rarely points at an extension the fuzzer controls, and
//! the parser must be total on its own.
#![no_main]

use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const HEADER_LEN: usize = 256;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn exercise(data: &[u8]) {
    let Ok(head) = fwimage::ImageHead::parse(data) else {
        return;
    };
    let mut keys = fwimage::TrustedKeys::new();
    keys.add(key().verifying_key());
    let _ = head.verify(&keys, fwimage::MemSource(data), &mut |_| {});
}

fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// Makes `img` authentic where its structure allows; returns None when
/// the head does not parse (then there is nothing to sign).
fn make_authentic(mut img: Vec<u8>) -> Option<Vec<u8>> {
    img[..8].copy_from_slice(&fwimage::MAGIC);
    img[8..10].copy_from_slice(&2u16.to_le_bytes());
    let crc = crc32c::crc32c(&img[..HEADER_LEN - 4]);
    img[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    let head = fwimage::ImageHead::parse(&img).ok()?;
    let h = &head.header;
    // Chunk entries: stored hash of whatever bytes they point at.
    for k in 0..h.chunk_count {
        let page = k / fwimage::ENTRIES_PER_PAGE;
        let at = (h.page_offset(page) as usize)
            + (k % fwimage::ENTRIES_PER_PAGE) as usize * fwimage::CHUNK_ENTRY_LEN;
        let Some(e) = img.get(at..at + fwimage::CHUNK_ENTRY_LEN) else { break };
        let off = get64(e, 64) as usize;
        let len = u32::from_le_bytes(e[72..76].try_into().ok()?) as usize;
        if let Some(stored) = off.checked_add(len).and_then(|end| img.get(off..end)) {
            let d: [u8; 32] = Sha256::digest(stored).into();
            img[at..at + 32].copy_from_slice(&d);
        }
        if len == 0 {
            let raw = head.segment_of_chunk(k).map_or(0, |s| {
                let s = &head.segments[s];
                s.chunk_raw_len(k - u64::from(s.first_chunk), h.chunk_size())
            });
            // At most 1 MiB (the largest chunk size).
            let d: [u8; 32] = Sha256::digest(vec![0u8; raw as usize]).into();
            img[at + 32..at + 64].copy_from_slice(&d);
        }
    }
    for p in 0..h.page_count {
        let at = h.page_offset(p) as usize;
        let d: [u8; 32] = Sha256::digest(img.get(at..at + fwimage::PAGE_LEN)?).into();
        let ph = (h.page_hash_offset() + 32 * p) as usize;
        img[ph..ph + 32].copy_from_slice(&d);
    }
    let sig_at = h.sig_offset() as usize;
    let mut msg = Vec::with_capacity(40);
    msg.extend_from_slice(fwimage::SIGNING_DOMAIN);
    msg.extend_from_slice(&Sha256::digest(&img[..sig_at]));
    let k = key();
    let slot = &mut img[sig_at..sig_at + fwimage::SIG_SLOT_LEN];
    slot.fill(0);
    slot[0] = 1;
    slot[8..40].copy_from_slice(&Sha256::digest(k.verifying_key().as_bytes()));
    slot[40..104].copy_from_slice(&k.sign(&msg).to_bytes());
    Some(img)
}

fuzz_target!(|data: &[u8]| {
    let _ = fwimage::HeadExtension::decode(&data[..data.len().min(fwimage::MAX_EXT_LEN as usize)]);
    exercise(data);
    if data.len() >= HEADER_LEN {
        if let Some(img) = make_authentic(data.to_vec()) {
            exercise(&img);
        }
    }
});
