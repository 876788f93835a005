//! `PendingBatch::verify` hashes chunks two at a time where it can
//! (sha256x2 on x86_64). These check that it still hands out the same
//! bytes and, with several bad chunks, names the first in order, for every
//! position in a pair, every batch size and each compression.

mod common;

use common::*;
use fwimage::{BatchDecoder, ChunkReader, Compression, Error, ImageHead, TrustedKeys};

const CS: usize = 64 << 10;
/// Seven and a half chunks: pairs, an odd one out, a short last chunk.
const LEN: usize = 7 * CS + CS / 2;

fn image(c: Compression) -> (Vec<u8>, Vec<u8>, TrustedKeys) {
    let k = key(3);
    // Half noise, half runs: the compressed chunks differ in length.
    let mut data = noise(LEN, 9);
    for (i, b) in data.iter_mut().enumerate() {
        if (i / 5000) % 2 == 1 {
            *b = (i / 5000) as u8;
        }
    }
    let img = build_chunked(
        &[(spec("rootfs", "system", c), data.clone())],
        Some(&k),
        Some(CS as u64),
    );
    let mut t = TrustedKeys::new();
    t.add(k.verifying_key());
    (img, data, t)
}

/// Reads the image in batches of `per` chunks; the raw bytes, or the
/// first error.
fn read(img: &[u8], t: &TrustedKeys, per: usize) -> fwimage::Result<Vec<u8>> {
    let head = ImageHead::parse(img)?;
    let v = head.authenticate(t)?;
    let mut rd = ChunkReader::new(&v, fwimage::MemSource(img))?;
    let mut buf = vec![0u8; per * CS];
    let mut dec = BatchDecoder::default();
    let mut got = Vec::new();
    while let Some(b) = rd.read_batch(&mut buf)? {
        let n = b.raw_len();
        let infos = b.verify(&mut buf, &mut dec)?;
        let mut at = 0;
        for c in &infos {
            assert_eq!(c.raw_offset, got.len() as u64 + at as u64);
            at += c.raw_len;
        }
        assert_eq!(at, n);
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got)
}

/// File offset of a byte in the middle of chunk `k`'s stored bytes.
fn inside(img: &[u8], t: &TrustedKeys, k: u64) -> usize {
    let head = ImageHead::parse(img).unwrap();
    let v = head.authenticate(t).unwrap();
    let mut rd = ChunkReader::new(&v, fwimage::MemSource(img)).unwrap();
    let e = rd.entry(0, k).unwrap();
    (e.stored_offset + u64::from(e.stored_len) / 2) as usize
}

#[test]
fn batches_of_every_size_give_the_payload() {
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let (img, data, t) = image(c);
        for per in 1..=9 {
            assert!(
                read(&img, &t, per).unwrap() == data,
                "{c:?}, {per} per batch"
            );
        }
    }
}

#[test]
fn the_first_bad_chunk_in_order_is_named() {
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let (img, _, t) = image(c);
        let at: Vec<usize> = (0..8).map(|k| inside(&img, &t, k)).collect();
        // One bad chunk at each position, and each pair of bad chunks.
        for bad0 in 0..8 {
            for bad1 in bad0..8 {
                let mut img = img.clone();
                img[at[bad0]] ^= 0x40;
                if bad1 != bad0 {
                    img[at[bad1]] ^= 0x40;
                }
                for per in [2, 3, 4, 8] {
                    match read(&img, &t, per) {
                        Err(Error::ChunkHashMismatch { chunk, .. }) => {
                            assert_eq!(
                                chunk, bad0 as u64,
                                "{c:?}, bad {bad0} {bad1}, {per} per batch"
                            )
                        }
                        other => panic!("{c:?}, bad {bad0} {bad1}: {:?}", other.err()),
                    }
                }
            }
        }
    }
}

#[test]
fn stored_bytes_that_decode_to_the_signed_raw_bytes_are_still_refused() {
    // A gzip header's OS byte (offset 9) changes the stored bytes but
    // not what they decode to: only the stored hash catches it, not the
    // raw hash or the CRCs, in either place of a pair.
    let (img, _, t) = image(Compression::Gzip);
    let head = ImageHead::parse(&img).unwrap();
    let v = head.authenticate(&t).unwrap();
    let mut rd = ChunkReader::new(&v, fwimage::MemSource(&img)).unwrap();
    for k in 0..8u64 {
        let os = rd.entry(0, k).unwrap().stored_offset as usize + 9;
        let mut img = img.clone();
        img[os] ^= 0x01;
        for per in [2, 3, 8] {
            match read(&img, &t, per) {
                Err(Error::ChunkHashMismatch { chunk, .. }) => assert_eq!(chunk, k),
                other => panic!("chunk {k}, {per} per batch: {:?}", other.err()),
            }
        }
    }
}
