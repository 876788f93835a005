mod common;

use std::io::Cursor;

use common::*;
use fwimage::{Compression, Error, ImageHead, Index, MemSource, TrustedKeys};

fn trusted(keys: &[&ed25519_dalek::SigningKey]) -> TrustedKeys {
    let mut t = TrustedKeys::new();
    for k in keys {
        t.add(k.verifying_key());
    }
    t
}

#[test]
fn every_compression_round_trips() {
    let k = key(1);
    let payloads = [
        noise(3 * 4096, 3),
        vec![0x5a; 100_000],
        [noise(5000, 4), vec![0; 70_001]].concat(),
    ];
    let img = build(
        &[
            (spec("plain", "a", Compression::None), payloads[0].clone()),
            (spec("gz", "b", Compression::Gzip), payloads[1].clone()),
            (spec("zst", "c", Compression::Zstd), payloads[2].clone()),
        ],
        Some(&k),
    );
    let head = ImageHead::parse(&img).unwrap();
    assert_eq!(head.header.board, "test-board");
    assert_eq!(head.header.payload_version, 7);
    assert_eq!(head.header.version_label, "1.2.3");
    let t = trusted(&[&k]);
    let report = head.verify(&t, MemSource(&img), &mut |_| {}).unwrap();
    assert_eq!(report.segments, 3);
    // One pass: every byte of the file read exactly once.
    assert_eq!(report.bytes_read, img.len() as u64);
    let got = read_all(&img, &t).unwrap();
    let v = head.authenticate(&t).unwrap();
    let mut index = Index::new(&v);
    let mut src = MemSource(&img);
    for (i, p) in payloads.iter().enumerate() {
        assert_eq!(&got[i], p, "segment {i}");
        let s = &head.segments[i];
        let seed = index.crc_before(&mut src, i, 0).unwrap();
        let crcs: Vec<u32> = (0..u64::from(s.crc_blocks))
            .map(|b| index.crc(&mut src, u64::from(s.first_crc) + b).unwrap())
            .collect();
        assert_eq!(crcs, fwimage::crc_chain(seed, p));
    }
    // Compression actually happened.
    assert!(head.segments[1].stored_len < 1000);
    assert!(head.segments[2].stored_len < 10_000);
    // Data is 4 KiB aligned in the file.
    assert!(head.segments.iter().all(|s| s.data_offset % 4096 == 0));
}

#[test]
fn crc_chain_runs_across_segments() {
    let k = key(1);
    let a = noise(5000, 9);
    let b = noise(5000, 10);
    let img = build(
        &[
            (spec("a", "x", Compression::None), a.clone()),
            (spec("b", "y", Compression::None), b.clone()),
        ],
        Some(&k),
    );
    let head = ImageHead::parse(&img).unwrap();
    // Entry for the last block equals the CRC32C of both payloads' blocks
    // concatenated: the chain is global, so segments can't be swapped.
    let all = [a, b].concat();
    let t = trusted(&[&k]);
    let v = head.authenticate(&t).unwrap();
    let last = head.header.crc_count - 1;
    let got = Index::new(&v).crc(&mut MemSource(&img), last).unwrap();
    assert_eq!(got, crc32c::crc32c(&all));
}

#[test]
fn untrusted_and_unsigned_images_are_refused() {
    let k = key(1);
    let other = key(2);
    let (img, _) = small_image(&k);
    let head = ImageHead::parse(&img).unwrap();
    assert!(matches!(
        head.verify_signature(&trusted(&[&other])),
        Err(Error::UntrustedKey { .. })
    ));
    // Several trusted keys: the one that signed is found by its key id.
    assert!(head.verify_signature(&trusted(&[&other, &k])).is_ok());

    let unsigned = build(&[(spec("a", "a", Compression::None), noise(100, 1))], None);
    let head = ImageHead::parse(&unsigned).unwrap();
    assert!(matches!(
        head.verify_signature(&trusted(&[&k])),
        Err(Error::Unsigned)
    ));
}

#[test]
fn two_signatures_for_key_rotation() {
    let old = key(1);
    let new = key(2);
    let (img, _) = small_image(&old);
    let mut c = Cursor::new(img);
    fwimage::insert_signature(&mut c, &new).unwrap();
    let img = c.into_inner();
    let head = ImageHead::parse(&img).unwrap();
    assert_eq!(head.slots.iter().flatten().count(), 2);
    assert!(head.verify_signature(&trusted(&[&old])).is_ok());
    assert!(head.verify_signature(&trusted(&[&new])).is_ok());
    // Re-signing with the same key replaces its slot rather than filling
    // the next one.
    let mut c = Cursor::new(img);
    fwimage::insert_signature(&mut c, &new).unwrap();
    let head = ImageHead::parse(c.get_ref()).unwrap();
    assert_eq!(head.slots.iter().flatten().count(), 2);
}

#[test]
fn compressed_segment_is_hashed_before_decompression() {
    let k = key(1);
    let (mut img, _) = small_image(&k);
    let head = ImageHead::parse(&img).unwrap();
    let gz = &head.segments[1];
    // Corrupt the gzip stream: a decompressor would choke, but the reader
    // must report the hash mismatch first and never decompress.
    let at = (gz.data_offset + gz.stored_len / 2) as usize;
    img[at] ^= 0xff;
    match read_all(&img, &trusted(&[&k])) {
        Err(Error::ChunkHashMismatch { segment, chunk }) => {
            assert_eq!((segment.as_str(), chunk), ("boot", 0))
        }
        other => panic!("expected ChunkHashMismatch, got {:?}", other.err()),
    }
}

#[test]
fn builder_rejects_bad_segments() {
    let mut b = fwimage::ImageBuilder::new("b", 1).unwrap();
    let data = vec![1u8; 10];
    assert!(b
        .add_segment(
            spec("../evil", "x", Compression::None),
            10,
            Cursor::new(data.clone())
        )
        .is_err());
    assert!(b
        .add_segment(
            spec("a", "x", Compression::None),
            0,
            Cursor::new(Vec::new())
        )
        .is_err());
    b.add_segment(
        spec("a", "x", Compression::None),
        10,
        Cursor::new(data.clone()),
    )
    .unwrap();
    assert!(matches!(
        b.add_segment(
            spec("a", "y", Compression::None),
            10,
            Cursor::new(data.clone())
        ),
        Err(Error::DuplicateSegment(_))
    ));
    assert!(matches!(
        b.add_segment(
            spec("b", "x", Compression::None),
            10,
            Cursor::new(data.clone())
        ),
        Err(Error::TargetOverlap { .. })
    ));
    // An input shorter than declared is caught, not padded.
    b.add_segment(spec("c", "z", Compression::None), 100, Cursor::new(data))
        .unwrap();
    let err = b.write(Cursor::new(Vec::new()), &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::InputChanged { .. }), "{err}");
}

#[test]
fn same_inputs_give_identical_bytes() {
    // SOURCE_DATE_EPOCH is process-global; this is the only test in this
    // binary that sets it, and builders in other tests don't compare bytes.
    std::env::set_var("SOURCE_DATE_EPOCH", "1700000000");
    let k = key(3);
    let a = small_image(&k).0;
    let b = small_image(&k).0;
    std::env::remove_var("SOURCE_DATE_EPOCH");
    assert_eq!(a, b);
    let head = ImageHead::parse(&a).unwrap();
    assert_eq!(head.header.created, 1_700_000_000);
    assert_ne!(head.header.compat_flags & fwimage::COMPAT_REPRODUCIBLE, 0);
}

/// `verify` checks batches on several threads; with two bad chunks in
/// different batches it must name the first in file order every time, and
/// a good multi-batch compressed image must count every chunk once.
#[test]
fn parallel_verify_counts_every_chunk_and_reports_the_first_bad_one() {
    let k = key(3);
    let t = trusted(&[&k]);
    let payload = noise(6 << 20, 9);
    let mut b = fwimage::ImageBuilder::new("test-board", 7)
        .and_then(|b| b.chunk_size(64 << 10))
        .unwrap();
    b.add_segment(
        spec("rootfs", "system", Compression::Zstd),
        payload.len() as u64,
        std::io::Cursor::new(payload.clone()),
    )
    .unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    b.write(&mut out, &mut |_| {}).unwrap();
    fwimage::insert_signature(&mut out, &k).unwrap();
    let mut img = out.into_inner();
    let head = ImageHead::parse(&img).unwrap();
    let mut progress = 0;
    let report = head
        .verify(&t, fwimage::MemSource(&img), &mut |n| progress += n)
        .unwrap();
    assert_eq!(report.chunks, 96);
    assert_eq!((report.raw_bytes, progress), (6 << 20, 6 << 20));
    assert_eq!(report.bytes_read, img.len() as u64);

    let s = &head.segments[0];
    let (first, last) = (
        s.data_offset as usize + 100,
        (s.data_offset + s.stored_len) as usize - 100,
    );
    img[first] ^= 1;
    img[last] ^= 1;
    for _ in 0..20 {
        match head.verify(&t, fwimage::MemSource(&img), &mut |_| {}) {
            Err(Error::ChunkHashMismatch { chunk, .. }) => assert_eq!(chunk, 0),
            other => panic!("expected ChunkHashMismatch for chunk 0, got {other:?}"),
        }
    }
}
