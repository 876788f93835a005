//! The head extension (FORMAT.md, "Head extension"): the SBOM hash is
//! carried in the signed head, images without it are laid out as before,
//! and no byte of the extension can change without the image being refused.

mod common;

use std::io::Cursor;

use common::*;
use fwimage::{Compression, ErrorClass, ImageBuilder, ImageHead, TrustedKeys, INCOMPAT_HEAD_EXT};

fn image(sbom: Option<[u8; 32]>) -> Vec<u8> {
    let data = noise(70_000, 3);
    let mut b = ImageBuilder::new("test-board", 7).expect("builder");
    if let Some(h) = sbom {
        b = b.sbom_sha256(h);
    }
    b.add_segment(
        spec("rootfs", "system", Compression::Zstd),
        data.len() as u64,
        Cursor::new(data),
    )
    .expect("segment");
    let mut out = Cursor::new(Vec::new());
    b.write(&mut out, &mut |_| {}).expect("write");
    fwimage::insert_signature(&mut out, &key(1)).expect("sign");
    out.into_inner()
}

fn verify(img: &[u8]) -> fwimage::Result<ImageHead> {
    let mut t = TrustedKeys::new();
    t.add(key(1).verifying_key());
    let head = ImageHead::parse(img)?;
    head.verify(&t, fwimage::MemSource(img), &mut |_| {})?;
    Ok(head)
}

#[test]
fn the_sbom_hash_is_in_the_signed_head() {
    let sbom = [0x5a; 32];
    let img = image(Some(sbom));
    let head = verify(&img).expect("image with an SBOM hash verifies");
    let h = &head.header;
    assert_eq!(head.extension.sbom_sha256, Some(sbom));
    assert_ne!(h.incompat_flags & INCOMPAT_HEAD_EXT, 0);
    assert_eq!(h.ext_len, 40, "one record: 8-byte header + 32-byte hash");
    // Inside [0, sig_offset): the signed range ends after the extension.
    let ext = h.ext_offset() as usize..h.sig_offset() as usize;
    assert_eq!(&img[ext.start + 8..ext.end], &sbom);
    assert_eq!(head.signed_bytes().len(), ext.end);
}

#[test]
fn images_without_an_sbom_keep_the_old_layout() {
    let img = image(None);
    let head = verify(&img).expect("verifies");
    assert_eq!(head.extension.sbom_sha256, None);
    assert_eq!(head.header.incompat_flags & INCOMPAT_HEAD_EXT, 0);
    assert_eq!(head.header.ext_len, 0);
    assert!(
        img[232..252].iter().all(|&b| b == 0),
        "reserved bytes stay zero"
    );
    // Adding the record moves only what follows the page hashes.
    let with = image(Some([1; 32]));
    let ext_at = head.header.ext_offset() as usize;
    assert_eq!(img[256..ext_at], with[256..ext_at]);
}

#[test]
fn every_changed_extension_byte_is_refused() {
    let img = image(Some([0x33; 32]));
    let head = ImageHead::parse(&img).expect("parses");
    let (from, to) = (head.header.ext_offset(), head.header.sig_offset());
    for pos in from..to {
        for bit in [0x01u8, 0x80] {
            let mut bad = img.clone();
            bad[pos as usize] ^= bit;
            let err = verify(&bad).err().unwrap_or_else(|| {
                panic!("flipping bit {bit:#x} of extension byte {pos} was accepted")
            });
            assert!(
                matches!(err.class(), ErrorClass::Signature | ErrorClass::Format),
                "byte {pos}: {err} ({:?})",
                err.class()
            );
        }
    }
    // The header's length and flag must agree, whatever the CRC says.
    for (at, value) in [(16usize, 1u32), (232, 0), (232, 41), (232, 5000)] {
        let mut bad = img.clone();
        bad[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let crc = crc32c::crc32c(&bad[..252]);
        bad[252..256].copy_from_slice(&crc.to_le_bytes());
        let err = ImageHead::parse(&bad).err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.class() == ErrorClass::Format),
            "header word {at} = {value}: {err:?}"
        );
    }
}
