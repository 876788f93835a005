//! The gzip chunks stamp writes (libdeflate, every level): each is one
//! RFC 1952 member with the header docs/FORMAT.md "compressed chunks"
//! promises, which the device's decoder (miniz_oxide), the host's
//! (zlib-rs, through flate2 here, with no fallback behind it) and, where
//! installed, `gzip -t` all accept and decode to the chunk's raw bytes.

mod common;

use std::io::{Cursor, Read};

use common::{build_chunked, key, noise, spec};
use fwimage::{BatchDecoder, Compression, ImageBuilder, ImageHead, Index, MemSource, TrustedKeys};

const CHUNK: usize = 64 << 10;

/// Text-like lines (compressible, with matches far apart), a noise chunk
/// (stored blocks), a zero chunk and an erased-flash chunk (one repeated
/// byte: the level-9 path for levels 10-12) and a short last chunk.
fn payload() -> Vec<u8> {
    let mut p = Vec::new();
    let words = ["kernel", "rootfs", "module", "init", "firmware", "board"];
    let mut i = 0usize;
    while p.len() < 2 * CHUNK + 1000 {
        let w = words[i % words.len()];
        p.extend_from_slice(format!("{w} {i} {}\n", i * 7919 % 1013).as_bytes());
        i += 1;
    }
    p.truncate(2 * CHUNK + 1000);
    p.extend(noise(CHUNK, 9));
    let at = p.len().next_multiple_of(CHUNK);
    p.resize(at + CHUNK, 0);
    p.resize(at + 2 * CHUNK, 0xff);
    p.extend_from_slice(&noise(777, 3));
    p
}

/// Every chunk's stored bytes and raw bytes, for a gzip image at `level`.
fn chunks(level: Option<i32>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let data = payload();
    let mut s = spec("rootfs", "system", Compression::Gzip);
    s.level = level;
    let img = build_chunked(&[(s, data.clone())], Some(&key(3)), Some(CHUNK as u64));
    let head = ImageHead::parse(&img).unwrap();
    let mut trusted = TrustedKeys::new();
    trusted.add(key(3).verifying_key());
    let v = head.authenticate(&trusted).unwrap();
    let mut index = Index::new(&v);
    let mut src = MemSource(&img[..]);
    let seg = &head.segments[0];
    (0..u64::from(seg.chunks))
        .map(|k| {
            let e = index
                .chunk(&mut src, u64::from(seg.first_chunk) + k)
                .unwrap();
            let at = e.stored_offset as usize;
            let stored = img[at..at + e.stored_len as usize].to_vec();
            let from = k as usize * CHUNK;
            let raw = data[from..(from + CHUNK).min(data.len())].to_vec();
            (stored, raw)
        })
        .collect()
}

#[test]
fn every_level_writes_members_both_decoders_and_gzip_accept() {
    let gzip_t = std::process::Command::new("gzip")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    for level in [
        None,
        Some(0),
        Some(1),
        Some(6),
        Some(9),
        Some(10),
        Some(11),
        Some(12),
    ] {
        let cs = chunks(level);
        for (k, (stored, raw)) in cs.iter().enumerate() {
            let at = format!("level {level:?}, chunk {k}");
            // ID1 ID2 CM, FLG = 0, MTIME = 0 (FORMAT.md); XFL and OS are
            // the encoder's and ignored by readers.
            assert_eq!(stored[..8], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0], "{at}");
            let mut out = vec![0u8; raw.len()];
            BatchDecoder::portable()
                .decode_chunk(Compression::Gzip, stored, &mut out, CHUNK as u64)
                .unwrap_or_else(|e| panic!("{at}: miniz_oxide: {e}"));
            assert!(out == *raw, "{at}: miniz_oxide decoded other bytes");
            // zlib-rs directly: fwimage's host decoder would fall back to
            // miniz_oxide on a failure, which would hide one.
            let mut z = flate2::read::GzDecoder::new(&stored[..]);
            let mut back = Vec::new();
            z.read_to_end(&mut back)
                .unwrap_or_else(|e| panic!("{at}: zlib-rs: {e}"));
            assert!(back == *raw, "{at}: zlib-rs decoded other bytes");
            assert!(z.into_inner().is_empty(), "{at}: bytes after the member");
        }
        if gzip_t && level.is_none() {
            // One extracted chunk as a file, as a user would check it.
            let dir = tempfile::tempdir().unwrap();
            for (k, (stored, _)) in cs.iter().enumerate() {
                let f = dir.path().join(format!("chunk{k}.gz"));
                std::fs::write(&f, stored).unwrap();
                let st = std::process::Command::new("gzip")
                    .arg("-t")
                    .arg(&f)
                    .status()
                    .unwrap();
                assert!(st.success(), "gzip -t refused chunk {k}");
            }
        }
    }
}

#[test]
fn stronger_levels_are_smaller() {
    let (c9, c12) = (chunks(Some(9)), chunks(Some(12)));
    let total = |c: &[(Vec<u8>, Vec<u8>)]| -> usize { c.iter().map(|(s, _)| s.len()).sum() };
    // Near-optimal parsing (10-12) is what the default buys over zlib -9's
    // lazy parsing.
    assert!(total(&c12) < total(&c9), "level 12 is not smaller than 9");
    assert_eq!(chunks(None), chunks(Some(fwimage::GZIP_DEFAULT_LEVEL)));
    // A chunk of one repeated byte is deflated at level 9 whatever the
    // level above it (unit test `runs_take_level_9` in src/write.rs): it
    // costs no size there.
    for k in [4, 5] {
        assert!(
            c9[k].1.iter().all(|b| *b == c9[k].1[0]),
            "chunk {k} is a run"
        );
        assert!(c12[k].0.len() <= c9[k].0.len(), "chunk {k}");
    }
}

#[test]
fn gzip_levels_above_12_are_refused() {
    let mut b = ImageBuilder::new("b", 1).unwrap();
    let mut s = spec("a", "x", Compression::Gzip);
    s.level = Some(13);
    assert!(b
        .add_segment(s.clone(), 10, Cursor::new(vec![1u8; 10]))
        .is_err());
    s.level = Some(-1);
    assert!(b.add_segment(s, 10, Cursor::new(vec![1u8; 10])).is_err());
}
