//! Every malformed input gets a typed error of the right class, never a
//! panic. These are exhaustive on a small image rather than sampled.

mod common;

use common::*;
use fwimage::{Error, ErrorClass, ImageHead, TrustedKeys};

fn verify(img: &[u8], trusted: &TrustedKeys) -> fwimage::Result<()> {
    let head = ImageHead::parse(img)?;
    head.verify(trusted, fwimage::MemSource(img), &mut |_| {})?;
    Ok(())
}

fn trusted_for(k: &ed25519_dalek::SigningKey) -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add(k.verifying_key());
    t
}

#[test]
fn every_single_bit_flip_is_caught_with_the_right_class() {
    let k = key(1);
    let t = trusted_for(&k);
    let (mut img, _) = small_image(&k);
    verify(&img, &t).expect("pristine image verifies");
    let head = ImageHead::parse(&img).unwrap();
    let header_end = fwimage::HEADER_LEN as u64;
    let sig_offset = head.header.sig_offset();
    let sig_end = sig_offset + u64::from(head.header.sig_slot_count) * fwimage::SIG_SLOT_LEN as u64;
    let (index_offset, data_offset) = (head.header.index_offset, head.header.data_offset);
    let in_data = |pos: u64| {
        head.segments
            .iter()
            .any(|s| pos >= s.data_offset && pos < s.data_offset + s.stored_len)
    };
    assert!(
        (16 * 1024..=64 * 1024).contains(&img.len()),
        "fixture is {} bytes",
        img.len()
    );

    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for pos in 0..img.len() {
        for bit in 0..8 {
            img[pos] ^= 1 << bit;
            let Err(err) = verify(&img, &t) else {
                panic!("flip at byte {pos} bit {bit} still verifies");
            };
            img[pos] ^= 1 << bit;
            let p = pos as u64;
            let (region, allowed): (&str, &[ErrorClass]) = if p < header_end {
                // Header: its own checksum (or magic/version) trips first.
                ("header", &[ErrorClass::Format])
            } else if p < sig_offset {
                // Table and CRC table: structural checks, else the signature.
                ("table", &[ErrorClass::Format, ErrorClass::Signature])
            } else if p < sig_end {
                (
                    "signature slots",
                    &[ErrorClass::Format, ErrorClass::Signature],
                )
            } else if p < index_offset {
                ("head padding", &[ErrorClass::Format])
            } else if p < data_offset {
                // Chunk entries and CRC table: the page hash trips.
                ("index", &[ErrorClass::Integrity])
            } else if in_data(p) {
                ("data", &[ErrorClass::Integrity])
            } else {
                ("padding", &[ErrorClass::Format])
            };
            assert!(
                allowed.contains(&err.class()),
                "flip at byte {pos} bit {bit} ({region}) gave {:?}: {err}",
                err.class()
            );
            *counts.entry(region).or_default() += 1;
        }
    }
    eprintln!("bit flips per region: {counts:?}");
    assert!(counts.len() == 7, "every region was exercised: {counts:?}");
}

#[test]
fn every_512_byte_truncation_is_caught() {
    let k = key(1);
    let t = trusted_for(&k);
    let (img, _) = small_image(&k);
    for cut in (0..img.len()).step_by(512) {
        let err = verify(&img[..cut], &t).expect_err("truncated image must not verify");
        assert!(
            matches!(err, Error::Truncated { .. } | Error::BadMagic),
            "cut at {cut}: {err}"
        );
        assert_eq!(err.class(), ErrorClass::Format);
    }
    // And appended bytes are not silently ignored.
    let mut longer = img.clone();
    longer.extend_from_slice(&[0; 512]);
    assert!(matches!(
        verify(&longer, &t),
        Err(Error::TrailingData { extra: 512 })
    ));
}

/// Rewrites header fields and fixes the header checksum, as an attacker or
/// a newer writer would, so the check under test is the one that fires.
fn patch_header(img: &mut [u8], f: impl FnOnce(&mut [u8])) {
    f(&mut img[..fwimage::HEADER_LEN]);
    let crc = crc32c::crc32c(&img[..fwimage::HEADER_LEN - 4]);
    img[fwimage::HEADER_LEN - 4..fwimage::HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn unknown_must_understand_flag_is_refused_but_may_ignore_is_not() {
    let k = key(1);
    let (img, _) = small_image(&k);
    let mut bad = img.clone();
    patch_header(&mut bad, |h| {
        h[16..20].copy_from_slice(&(1u32 << 7).to_le_bytes())
    });
    assert!(matches!(
        ImageHead::parse(&bad),
        Err(Error::UnknownRequiredFlags(0x80))
    ));
    // An unknown may-ignore flag parses (the signature then fails, because
    // the header is signed, which is the right outcome for a modified image).
    let mut ok = img.clone();
    patch_header(&mut ok, |h| {
        h[12..16].copy_from_slice(&(1u32 << 9).to_le_bytes())
    });
    let head = ImageHead::parse(&ok).expect("unknown compat flag is ignored by the parser");
    assert!(matches!(
        head.verify_signature(&trusted_for(&k)),
        Err(Error::BadSignature { .. })
    ));
}

#[test]
fn newer_format_version_is_refused() {
    let (mut img, _) = small_image(&key(1));
    let mut v1 = img.clone();
    patch_header(&mut img, |h| h[8..10].copy_from_slice(&3u16.to_le_bytes()));
    assert!(matches!(
        ImageHead::parse(&img),
        Err(Error::UnsupportedVersion(3))
    ));
    // Format 1 is refused with a message that says what to do.
    patch_header(&mut v1, |h| h[8..10].copy_from_slice(&1u16.to_le_bytes()));
    let err = ImageHead::parse(&v1).unwrap_err();
    assert!(err.to_string().contains("re-stamp"), "{err}");
}

#[test]
fn absurd_counts_and_lengths_are_bounded_by_the_file() {
    let (img, _) = small_image(&key(1));
    // (field, offset, width, value)
    let cases = [
        ("segment_count", 40, 4, u64::from(u32::MAX)),
        ("segment_count", 40, 4, 257),
        ("chunk_shift", 48, 1, 30),
        ("chunk_count", 56, 8, u64::MAX / 3),
        ("crc_count", 64, 8, u64::MAX / 3),
        ("index_offset", 72, 8, u64::MAX - 4095),
        ("page_count", 80, 8, 1 << 40),
        ("data_offset", 88, 8, u64::MAX - 4095),
        ("image_len", 96, 8, u64::MAX),
        ("sig_slot_count", 52, 4, u64::from(u32::MAX)),
    ];
    for (what, at, width, value) in cases {
        let mut bad = img.clone();
        patch_header(&mut bad, |h| {
            h[at..at + width].copy_from_slice(&value.to_le_bytes()[..width])
        });
        let err = ImageHead::parse(&bad).expect_err(what);
        assert_eq!(err.class(), ErrorClass::Format, "{what}: {err}");
    }
}

/// Segment-table entries are not covered by the header checksum, so a
/// crafted table reaches the table checks (before any signature check).
#[test]
fn overlapping_and_out_of_file_segments_are_refused() {
    let (img, _) = small_image(&key(1));
    let entry = |i: usize| fwimage::HEADER_LEN + i * fwimage::SEGMENT_ENTRY_LEN;
    let head = ImageHead::parse(&img).unwrap();

    // Second segment's data moved onto the first's.
    let mut bad = img.clone();
    put64(&mut bad, entry(1) + 64, head.segments[0].data_offset);
    assert!(matches!(
        ImageHead::parse(&bad),
        Err(Error::SegmentOverlap { .. })
    ));

    // Stored length reaching past the end of the file.
    let mut bad = img.clone();
    put64(&mut bad, entry(1) + 72, u64::MAX - 10);
    let err = ImageHead::parse(&bad).unwrap_err();
    assert!(matches!(err, Error::Truncated { .. }), "{err}");

    // Huge raw length: crc_blocks no longer matches.
    let mut bad = img.clone();
    put64(&mut bad, entry(0) + 80, u64::MAX);
    assert!(matches!(
        ImageHead::parse(&bad),
        Err(Error::BadSegment { index: 0, .. })
    ));

    // Two segments writing the same target range.
    let mut bad = img.clone();
    let target0 = bad[entry(0) + 32..entry(0) + 64].to_vec();
    bad[entry(1) + 32..entry(1) + 64].copy_from_slice(&target0);
    assert!(matches!(
        ImageHead::parse(&bad),
        Err(Error::TargetOverlap { .. })
    ));

    // Data inside the image head.
    let mut bad = img.clone();
    put64(&mut bad, entry(0) + 64, 0);
    assert!(matches!(
        ImageHead::parse(&bad),
        Err(Error::BadSegment { index: 0, .. })
    ));

    // A name that could escape a path in logs or file names.
    let mut bad = img.clone();
    bad[entry(0)..entry(0) + 6].copy_from_slice(b"../x\0\0");
    assert!(matches!(
        ImageHead::parse(&bad),
        Err(Error::BadSegment { index: 0, .. })
    ));
}

#[test]
fn garbage_never_panics() {
    let (img, _) = small_image(&key(1));
    for seed in 0..2000u64 {
        let mut g = noise(64 + (seed as usize * 37) % 9000, seed + 100);
        if seed % 2 == 0 {
            // Keep a valid-looking prefix so parsing goes deeper.
            let n = g.len().min(img.len()).min(4096);
            g[..n].copy_from_slice(&img[..n]);
            let at = (seed as usize * 131) % n;
            g[at] ^= 0x40;
        }
        let _ = ImageHead::parse(&g);
    }
}
