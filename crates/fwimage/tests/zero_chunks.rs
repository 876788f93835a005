//! Zero chunks (FORMAT.md, "Zero chunks", incompat bit 2): an all-zero
//! chunk of a compressed segment stored empty. Round trips, the table
//! rules for a segment that is all zero, and what a hostile signer can
//! and cannot do with an empty chunk.

mod common;

use std::io::Cursor;

use common::{key, noise, read_all, spec};
use fwimage::{
    check_entry, Compression, Error, ErrorClass, ImageBuilder, ImageHead, MemSource, SegmentSpec,
    TrustedKeys, EMPTY_SHA256, INCOMPAT_ZERO_CHUNKS,
};
use sha2::{Digest, Sha256};

const CS: usize = 64 << 10;

fn trusted() -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add(key(3).verifying_key());
    t
}

fn stamp(segments: &[(SegmentSpec, Vec<u8>)], zero: bool, jobs: usize) -> Vec<u8> {
    let mut b = ImageBuilder::new("test-board", 7)
        .and_then(|b| b.chunk_size(CS as u64))
        .unwrap()
        .zero_chunks(zero)
        .jobs(jobs);
    for (s, data) in segments {
        b.add_segment(s.clone(), data.len() as u64, Cursor::new(data.clone()))
            .unwrap();
    }
    let mut out = Cursor::new(Vec::new());
    b.write(&mut out, &mut |_| {}).unwrap();
    fwimage::insert_signature(&mut out, &key(3)).unwrap();
    out.into_inner()
}

/// Zero chunks first, between and last (a short last chunk that is zero),
/// a chunk that is zero but for one byte, and segments that are all zero:
/// the first, one in the middle, and the last (so the image ends with the
/// padding after the segment before it).
fn payloads(comp: Compression) -> Vec<(SegmentSpec, Vec<u8>)> {
    let mut mixed = vec![0u8; 6 * CS + 1000];
    mixed[CS..2 * CS].copy_from_slice(&noise(CS, 1));
    mixed[3 * CS..4 * CS].copy_from_slice(&noise(CS, 2));
    mixed[5 * CS + 77] = 1; // not a zero chunk
    vec![
        (spec("head0", "t0", comp), vec![0u8; 2 * CS + 5]),
        (spec("mixed", "t1", comp), mixed),
        (spec("raw", "t2", Compression::None), vec![0u8; CS + 3]),
        (spec("mid0", "t3", comp), vec![0u8; 3 * CS]),
        (spec("noise", "t4", comp), noise(CS + 10, 3)),
        (spec("tail0", "t5", comp), vec![0u8; 100]),
    ]
}

#[test]
fn zero_chunks_round_trip_and_keep_every_table_rule() {
    for comp in [Compression::Gzip, Compression::Zstd] {
        let segs = payloads(comp);
        let img = stamp(&segs, true, 2);
        let head = ImageHead::parse(&img).unwrap();
        assert_ne!(head.header.incompat_flags & INCOMPAT_ZERO_CHUNKS, 0);
        let want: Vec<Vec<u8>> = segs.iter().map(|(_, d)| d.clone()).collect();
        assert!(read_all(&img, &trusted()).unwrap() == want, "{comp:?}");
        let r = head
            .verify(&trusted(), MemSource(&img), &mut |_| {})
            .unwrap();
        assert_eq!(
            r.raw_bytes,
            want.iter().map(|d| d.len() as u64).sum::<u64>()
        );
        let s = &head.segments;
        // All-zero segments take no bytes of the file and share their
        // (aligned) data_offset with the next segment; the last one sits
        // at image_len.
        for i in [0, 3, 5] {
            assert_eq!(s[i].stored_len, 0, "{comp:?} segment {i}");
            assert_eq!(s[i].data_offset % 4096, 0);
        }
        assert_eq!(s[0].data_offset, head.header.data_offset);
        assert_eq!(s[0].data_offset, s[1].data_offset);
        assert_eq!(s[3].data_offset, s[4].data_offset);
        assert_eq!(s[5].data_offset, head.header.image_len);
        assert_eq!(img.len() as u64 % 4096, 0);
        // The uncompressed segment's zeros are stored as they are.
        assert_eq!(s[2].stored_len, s[2].raw_len);
        // Chunks 0, 2, 4 and the short last one of `mixed` are empty.
        let v = head.authenticate(&trusted()).unwrap();
        let mut rd = fwimage::ChunkReader::new(&v, MemSource(&img)).unwrap();
        let empty: Vec<u64> = (0..u64::from(s[1].chunks))
            .filter(|&i| rd.entry(1, i).unwrap().stored_len == 0)
            .collect();
        assert_eq!(empty, [0, 2, 4, 6], "{comp:?}");
        let e = rd.entry(1, 6).unwrap();
        assert_eq!(e.stored_sha256, EMPTY_SHA256);
        assert_eq!(e.raw_sha256, <[u8; 32]>::from(Sha256::digest([0u8; 1000])));
        // Reading from a chunk boundary after zero chunks (resume).
        let mut rd = fwimage::ChunkReader::start_at(&v, MemSource(&img), 1, 3 * CS as u64).unwrap();
        let mut buf = vec![0u8; CS];
        let c = rd.next_chunk(&mut buf).unwrap().unwrap();
        assert_eq!((c.segment, c.chunk), (1, 3));
        assert_eq!(&buf[..c.raw_len], &want[1][3 * CS..4 * CS]);
        let c = rd.next_chunk(&mut buf).unwrap().unwrap();
        assert_eq!((c.segment, c.chunk), (1, 4));
        assert!(buf[..c.raw_len].iter().all(|&b| b == 0));
    }
}

#[test]
fn zero_chunk_stamp_is_byte_identical_for_any_jobs() {
    std::env::set_var("SOURCE_DATE_EPOCH", "1700000000");
    let segs = payloads(Compression::Gzip);
    let one = stamp(&segs, true, 1);
    for jobs in [2, 3, 8] {
        assert!(stamp(&segs, true, jobs) == one, "jobs {jobs}");
    }
}

#[test]
fn without_zero_chunks_the_image_is_what_it_was() {
    std::env::set_var("SOURCE_DATE_EPOCH", "1700000000");
    let segs = payloads(Compression::Zstd);
    let off = stamp(&segs, false, 2);
    let head = ImageHead::parse(&off).unwrap();
    assert_eq!(head.header.incompat_flags & INCOMPAT_ZERO_CHUNKS, 0);
    assert!(head
        .segments
        .iter()
        .all(|s| s.stored_len >= u64::from(s.chunks)));
    // The builder's default is off: the bytes every version-2 reader knows.
    let mut b = ImageBuilder::new("test-board", 7)
        .and_then(|b| b.chunk_size(CS as u64))
        .unwrap();
    for (s, data) in &segs {
        b.add_segment(s.clone(), data.len() as u64, Cursor::new(data.clone()))
            .unwrap();
    }
    let mut out = Cursor::new(Vec::new());
    b.write(&mut out, &mut |_| {}).unwrap();
    fwimage::insert_signature(&mut out, &key(3)).unwrap();
    assert!(out.into_inner() == off);
    // With nothing all zero, zero_chunks(true) changes nothing either.
    let dense = vec![(spec("a", "t", Compression::Gzip), noise(3 * CS, 9))];
    assert!(stamp(&dense, true, 2) == stamp(&dense, false, 2));
}

/// Rewrites the entry of global chunk `k` with `f`, re-hashes its index
/// page, re-seals the header with `flags` (the CRC) and signs again: what
/// only a signer can make.
fn forge(img: &[u8], k: u64, flags: Option<u32>, f: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let head = ImageHead::parse(img).unwrap();
    let h = &head.header;
    let page = k / fwimage::ENTRIES_PER_PAGE;
    let p = h.page_offset(page) as usize;
    let at = p + (k % fwimage::ENTRIES_PER_PAGE) as usize * fwimage::CHUNK_ENTRY_LEN;
    let mut bad = img.to_vec();
    f(&mut bad[at..at + fwimage::CHUNK_ENTRY_LEN]);
    let ph = Sha256::digest(&bad[p..p + fwimage::PAGE_LEN]);
    let hp = (h.page_hash_offset() + 32 * page) as usize;
    bad[hp..hp + 32].copy_from_slice(&ph);
    if let Some(flags) = flags {
        bad[16..20].copy_from_slice(&flags.to_le_bytes());
        let crc = crc32c::crc32c(&bad[..252]);
        bad[252..256].copy_from_slice(&crc.to_le_bytes());
    }
    let mut c = Cursor::new(bad);
    fwimage::insert_signature(&mut c, &key(3)).unwrap();
    c.into_inner()
}

fn verify(img: &[u8]) -> fwimage::Result<()> {
    let head = ImageHead::parse(img)?;
    head.verify(&trusted(), MemSource(img), &mut |_| {})
        .map(|_| ())
}

/// Global chunk of `mixed`'s chunk 2 (empty) in [`payloads`].
fn mixed_chunk(img: &[u8], i: u64) -> u64 {
    u64::from(ImageHead::parse(img).unwrap().segments[1].first_chunk) + i
}

#[test]
fn a_zero_chunk_whose_raw_hash_is_not_of_zeros_is_refused_by_the_raw_hash_check() {
    for comp in [Compression::Gzip, Compression::Zstd] {
        let img = stamp(&payloads(comp), true, 2);
        let k = mixed_chunk(&img, 2);
        let bad = forge(&img, k, None, |e| e[40] ^= 1);
        let err = verify(&bad).unwrap_err();
        assert!(
            matches!(err, Error::RawHashMismatch { chunk: 2, .. }),
            "{comp:?}: {err}"
        );
        assert_eq!(err.class(), ErrorClass::Integrity);
    }
}

#[test]
fn a_zero_chunk_whose_stored_hash_is_not_the_empty_hash_is_refused() {
    let img = stamp(&payloads(Compression::Gzip), true, 2);
    let k = mixed_chunk(&img, 4);
    let bad = forge(&img, k, None, |e| e[0] ^= 1);
    let err = verify(&bad).unwrap_err();
    assert!(
        matches!(err, Error::ChunkHashMismatch { chunk: 4, .. }),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Integrity);
}

#[test]
fn an_empty_chunk_without_bit_2_is_malformed() {
    let img = stamp(&payloads(Compression::Zstd), true, 2);
    let flags = ImageHead::parse(&img).unwrap().header.incompat_flags;
    // Only `mixed` and `noise`: segments with one byte per chunk at least,
    // so that the table itself still passes and the entry rule decides.
    let segs: Vec<_> = payloads(Compression::Zstd)
        .into_iter()
        .filter(|(s, _)| s.name == "mixed" || s.name == "noise")
        .collect();
    let img2 = stamp(&segs, true, 2);
    let flags2 = ImageHead::parse(&img2).unwrap().header.incompat_flags;
    assert_eq!(flags, flags2);
    let bad = forge(&img2, 0, Some(flags2 & !INCOMPAT_ZERO_CHUNKS), |_| {});
    let err = verify(&bad).unwrap_err();
    assert!(matches!(err, Error::BadChunk { index: 0, .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Format);
    // An all-zero segment without the bit fails the table rule first,
    // before the signature (so there is no point in signing it).
    let mut bad = img.clone();
    bad[16..20].copy_from_slice(&(flags & !INCOMPAT_ZERO_CHUNKS).to_le_bytes());
    let crc = crc32c::crc32c(&bad[..252]);
    bad[252..256].copy_from_slice(&crc.to_le_bytes());
    let err = ImageHead::parse(&bad).unwrap_err();
    assert!(matches!(err, Error::BadSegment { index: 0, .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Format);
}

#[test]
fn an_empty_chunk_in_an_uncompressed_segment_is_malformed() {
    let img = stamp(&payloads(Compression::Gzip), true, 2);
    let head = ImageHead::parse(&img).unwrap();
    let s = &head.segments[2];
    assert_eq!(s.compression, Compression::None);
    // The entry rule, on the chunk that ends the segment.
    let e = fwimage::ChunkEntry {
        stored_sha256: EMPTY_SHA256,
        raw_sha256: EMPTY_SHA256,
        stored_offset: s.data_offset + s.stored_len,
        stored_len: 0,
    };
    let err = check_entry(&head, 2, 1, &e, None).unwrap_err();
    assert!(matches!(err, Error::BadChunk { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Format);
    // The same entry in a compressed segment of this (bit 2) image passes.
    let z = &head.segments[1];
    let e = fwimage::ChunkEntry {
        stored_offset: z.data_offset + z.stored_len,
        ..e
    };
    check_entry(&head, 1, 6, &e, None).unwrap();
}

#[test]
fn bit_2_set_without_empty_chunks_is_accepted() {
    let segs = vec![(spec("a", "t", Compression::Gzip), noise(2 * CS, 5))];
    let img = stamp(&segs, false, 1);
    let flags = ImageHead::parse(&img).unwrap().header.incompat_flags;
    let img = forge(&img, 0, Some(flags | INCOMPAT_ZERO_CHUNKS), |_| {});
    verify(&img).unwrap();
}
