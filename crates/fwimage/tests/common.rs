//! Shared fixtures for the fwimage tests.
#![allow(dead_code)]

use std::io::Cursor;

use ed25519_dalek::SigningKey;
use fwimage::{Compression, ImageBuilder, SegmentSpec};

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// Deterministic pseudo-random bytes (xorshift), so fixtures don't need a
/// random crate and failures reproduce.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn spec(name: &str, target: &str, compression: Compression) -> SegmentSpec {
    SegmentSpec {
        name: name.into(),
        target: target.into(),
        target_offset: 0,
        compression,
        level: None,
    }
}

/// Builds a signed image in memory from (spec, payload) pairs.
pub fn build(segments: &[(SegmentSpec, Vec<u8>)], signer: Option<&SigningKey>) -> Vec<u8> {
    build_chunked(segments, signer, None)
}

/// [`build`] with `chunk_size` raw bytes per chunk instead of the default.
pub fn build_chunked(
    segments: &[(SegmentSpec, Vec<u8>)],
    signer: Option<&SigningKey>,
    chunk_size: Option<u64>,
) -> Vec<u8> {
    let mut b = ImageBuilder::new("test-board", 7)
        .and_then(|b| b.version_label("1.2.3"))
        .and_then(|b| match chunk_size {
            Some(cs) => b.chunk_size(cs),
            None => Ok(b),
        })
        .expect("builder");
    for (s, data) in segments {
        b.add_segment(s.clone(), data.len() as u64, Cursor::new(data.clone()))
            .expect("add segment");
    }
    let mut out = Cursor::new(Vec::new());
    b.write(&mut out, &mut |_| {}).expect("write");
    if let Some(k) = signer {
        fwimage::insert_signature(&mut out, k).expect("sign");
    }
    out.into_inner()
}

/// A small image with an uncompressed, a gzip and a zstd segment.
pub fn small_image(signer: &SigningKey) -> (Vec<u8>, Vec<Vec<u8>>) {
    let a = noise(9000, 1);
    let mut b = noise(6000, 2);
    b.extend(std::iter::repeat_n(0u8, 6000));
    let mut c = noise(3000, 5);
    c.extend(std::iter::repeat_n(7u8, 5000));
    let img = build(
        &[
            (spec("rootfs", "system", Compression::None), a.clone()),
            (spec("boot", "boot", Compression::Gzip), b.clone()),
            (spec("extra", "data", Compression::Zstd), c.clone()),
        ],
        Some(signer),
    );
    (img, vec![a, b, c])
}

/// Every segment's raw bytes, through the one-pass reader.
pub fn read_all(img: &[u8], trusted: &fwimage::TrustedKeys) -> fwimage::Result<Vec<Vec<u8>>> {
    let head = fwimage::ImageHead::parse(img)?;
    let v = head.authenticate(trusted)?;
    let mut rd = fwimage::ChunkReader::new(&v, fwimage::MemSource(img))?;
    let mut out = vec![Vec::new(); head.segments.len()];
    let mut buf = vec![0u8; head.header.chunk_size() as usize];
    while let Some(c) = rd.next_chunk(&mut buf)? {
        assert_eq!(out[c.segment].len() as u64, c.raw_offset);
        out[c.segment].extend_from_slice(&buf[..c.raw_len]);
    }
    Ok(out)
}
