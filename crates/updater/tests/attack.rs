//! The attacks format 2 exists to stop: a source that changes what it
//! serves, CRC-preserving forged blocks, and an interrupted apply re-run
//! against a tampered slot. Nothing unsigned may reach a slot, and nothing
//! unsigned may ever be committed.

mod common;

use std::io::Cursor;

use common::*;
use fwimage::{ImageBuilder, ImageHead, ImageSource, SegmentSpec};
use updater::state::{Slot, SlotState, StateArea};
use updater::{apply, ApplyOptions, ErrorClass, MemStorage};

const CHUNK: u64 = 64 * 1024;

/// Flips bits in `block[0..4]` and solves for `block[4..8]` so the block's
/// CRC32C is unchanged (CRC is affine over GF(2)): what an attacker does to
/// get past a CRC check.
fn forge_same_crc(block: &mut [u8]) {
    let base = crc32c::crc32c(block);
    for b in &mut block[0..4] {
        *b ^= 0xa5;
    }
    let target = crc32c::crc32c(block) ^ base;
    let now = crc32c::crc32c(block);
    let cols: Vec<u32> = (0..32)
        .map(|j| {
            let mut t = block.to_vec();
            t[4 + j / 8] ^= 1 << (j % 8);
            crc32c::crc32c(&t) ^ now
        })
        .collect();
    // Gaussian elimination: find x with XOR of cols[j] for x_j = 1 == target.
    let mut rows: Vec<(u32, u32)> = cols
        .iter()
        .enumerate()
        .map(|(j, &c)| (c, 1u32 << j))
        .collect();
    let mut basis: Vec<(u32, u32)> = Vec::new();
    for (mut v, mut m) in rows.drain(..) {
        for &(bv, bm) in &basis {
            if v ^ bv < v {
                v ^= bv;
                m ^= bm;
            }
        }
        if v != 0 {
            basis.push((v, m));
            basis.sort_by_key(|b| std::cmp::Reverse(b.0));
        }
    }
    let (mut v, mut m) = (target, 0u32);
    for &(bv, bm) in &basis {
        if v ^ bv < v {
            v ^= bv;
            m ^= bm;
        }
    }
    assert_eq!(v, 0, "CRC forgery has no solution");
    for j in 0..32 {
        if m & (1 << j) != 0 {
            block[4 + j / 8] ^= 1 << (j % 8);
        }
    }
    assert_eq!(crc32c::crc32c(block), base, "forged block keeps its CRC");
}

fn image_64k(k: &ed25519_dalek::SigningKey) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut rng = Rng(11);
    let sys = rng.bytes(700 * 1024 + 123);
    let boot = rng.bytes(100 * 1024);
    let mut b = ImageBuilder::new(BOARD, 2)
        .unwrap()
        .chunk_size(CHUNK)
        .unwrap();
    for (name, target, data) in [("rootfs", "system", &sys), ("kernel", "boot", &boot)] {
        b.add_segment(
            SegmentSpec {
                name: name.into(),
                target: target.into(),
                target_offset: 0,
                compression: fwimage::Compression::None,
                level: None,
            },
            data.len() as u64,
            Cursor::new(data.clone()),
        )
        .unwrap();
    }
    let mut out = Cursor::new(Vec::new());
    b.write(&mut out, &mut |_| {}).unwrap();
    fwimage::insert_signature(&mut out, k).unwrap();
    (out.into_inner(), sys, boot)
}

/// Serves `first` on the first read of each byte and `later` on every
/// read after that; remembers whether any byte was read twice.
struct TwoFaced {
    first: Vec<u8>,
    later: Vec<u8>,
    seen: Vec<bool>,
    reread: bool,
    fail_after: Option<u64>,
    served: u64,
}

impl TwoFaced {
    fn new(first: Vec<u8>, later: Vec<u8>) -> Self {
        let n = first.len();
        TwoFaced {
            first,
            later,
            seen: vec![false; n],
            reread: false,
            fail_after: None,
            served: 0,
        }
    }
}

impl ImageSource for TwoFaced {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if self.fail_after.is_some_and(|n| self.served >= n) {
            return Err(std::io::Error::other("injected I/O error"));
        }
        let at = offset as usize;
        let end = at + buf.len();
        if end > self.first.len() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let p = at + i;
            *b = if self.seen[p] {
                self.reread = true;
                self.later[p]
            } else {
                self.first[p]
            };
            self.seen[p] = true;
        }
        self.served += buf.len() as u64;
        Ok(())
    }
}

/// A copy of `img` with one data block of segment 0 forged (CRC kept).
fn forged(img: &[u8], block_in_seg: u64) -> (Vec<u8>, usize) {
    let head = ImageHead::parse(img).unwrap();
    let at = (head.segments[0].data_offset + block_in_seg * 4096) as usize;
    let mut bad = img.to_vec();
    forge_same_crc(&mut bad[at..at + 4096]);
    (bad, at)
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        chunk_size: CHUNK as usize,
        checkpoint_interval: CHUNK,
        ..ApplyOptions::default()
    }
}

/// Applies `img`, served by `src`, to `m` with `o`.
fn run(
    src: impl ImageSource + Send,
    img: &[u8],
    m: &mut MemStorage,
    k: &ed25519_dalek::SigningKey,
    o: &ApplyOptions,
) -> updater::Result<updater::ApplyReport> {
    apply(src, img.len() as u64, m, &trusted(k), o, &mut |_| {})
}

fn slot_b_system(m: &MemStorage) -> &[u8] {
    let r = layout().group("system").unwrap().slot(Slot::B);
    &m.data[r.offset as usize..(r.offset + r.size) as usize]
}

#[test]
fn a_source_that_changes_on_a_second_read_gains_nothing() {
    let k = key(1);
    let (img, sys, _) = image_64k(&k);
    let (bad, _) = forged(&img, 37);
    let mut src = TwoFaced::new(img.clone(), bad);
    let mut m = MemStorage::new(disk());
    let r = run(&mut src, &img, &mut m, &k, &opts()).unwrap();
    assert!(!src.reread, "the engine read some image byte twice");
    assert_eq!(
        r.image_bytes_read,
        img.len() as u64,
        "one pass over the image"
    );
    assert_eq!(&slot_b_system(&m)[..sys.len()], &sys[..]);
    let area = StateArea::read(&mut m, LOC).unwrap();
    assert_eq!(area.boot().pending, Some(Slot::B));
}

#[test]
fn a_crc_preserving_forged_block_never_reaches_the_slot_nor_a_commit() {
    let k = key(1);
    let (img, sys, _) = image_64k(&k);
    // Block 37 sits in chunk 2 (64 KiB chunks = 16 blocks).
    let (bad, at) = forged(&img, 37);
    let head = ImageHead::parse(&img).unwrap();
    let in_slot = at - head.segments[0].data_offset as usize;
    let mut m = MemStorage::new(disk());
    let mut src = TwoFaced::new(bad.clone(), bad.clone());
    let err = run(&mut src, &img, &mut m, &k, &opts()).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Integrity, "{err}");
    assert!(err.to_string().contains("chunk 2"), "{err}");
    let slot = slot_b_system(&m);
    assert_ne!(
        &slot[in_slot..in_slot + 4096],
        &bad[at..at + 4096],
        "the forged block reached the slot"
    );
    // Chunks before the forged one are written; nothing from chunk 2 on.
    assert_eq!(&slot[..2 * CHUNK as usize], &sys[..2 * CHUNK as usize]);
    assert_ne!(
        &slot[2 * CHUNK as usize..3 * CHUNK as usize],
        &sys[2 * CHUNK as usize..3 * CHUNK as usize]
    );
    let area = StateArea::read(&mut m, LOC).unwrap();
    assert_eq!(area.boot().slot(Slot::B).state, SlotState::Updating);
    assert_eq!(area.boot().pending, None);
    let j = area.journal().expect("journal before the failed chunk");
    assert_eq!((j.segment, j.offset), (0, 2 * CHUNK));

    // Re-run with the genuine image: resumes after proving chunks 0-1 by
    // their signed hashes, and commits genuine bytes only.
    let r = run(Cursor::new(&img), &img, &mut m, &k, &opts()).unwrap();
    assert_eq!(r.resumed_from, Some((0, 2 * CHUNK)));
    assert_eq!(&slot_b_system(&m)[..sys.len()], &sys[..]);
    let area = StateArea::read(&mut m, LOC).unwrap();
    assert_eq!(area.boot().pending, Some(Slot::B));
}

#[test]
fn resume_after_an_io_error_proves_the_prefix_by_hash_not_crc() {
    let k = key(1);
    let (img, sys, _) = image_64k(&k);
    let mut m = MemStorage::new(disk());
    let mut src = TwoFaced::new(img.clone(), img.clone());
    // Fail well into segment 0, after several checkpoints.
    let head = ImageHead::parse(&img).unwrap();
    src.fail_after = Some(head.header.data_offset + 5 * CHUNK + 100);
    let err = run(&mut src, &img, &mut m, &k, &opts()).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Io, "{err}");
    let area = StateArea::read(&mut m, LOC).unwrap();
    let j = area.journal().expect("journal after checkpoints").clone();
    assert!(j.offset >= 3 * CHUNK, "journal at {}", j.offset);
    assert_eq!(area.boot().slot(Slot::B).state, SlotState::Updating);

    // What the old design let through: a block on the slot, inside the
    // journaled prefix, replaced by one with the same CRC32C.
    let r = layout().group("system").unwrap().slot(Slot::B);
    let at = r.offset as usize + CHUNK as usize + 3 * 4096;
    forge_same_crc(&mut m.data[at..at + 4096]);

    let rep = run(Cursor::new(&img), &img, &mut m, &k, &opts()).unwrap();
    // Chunk 0 proved, chunk 1 does not match its hash: writing resumes there.
    assert_eq!(rep.resumed_from, Some((0, CHUNK)));
    assert_eq!(
        &slot_b_system(&m)[..sys.len()],
        &sys[..],
        "slot holds only signed bytes"
    );
    let area = StateArea::read(&mut m, LOC).unwrap();
    assert_eq!(area.boot().pending, Some(Slot::B));
}

#[test]
fn verify_writes_catches_a_device_that_stores_other_bytes() {
    let k = key(1);
    let (img, _, _) = image_64k(&k);
    let verify = ApplyOptions {
        verify_writes: true,
        ..opts()
    };
    let mut m = MemStorage::new(disk());
    let r = run(Cursor::new(&img), &img, &mut m, &k, &verify).unwrap();
    assert!(r.bytes_read_back >= r.raw_bytes);
    // A complete slot with a CRC-preserving change is found by its hash
    // and rewritten when asked to verify.
    let at = layout().group("system").unwrap().slot(Slot::B).offset as usize + 4 * 4096;
    forge_same_crc(&mut m.data[at..at + 4096]);
    let r = run(Cursor::new(&img), &img, &mut m, &k, &verify).unwrap();
    assert!(!r.already_complete);
    let (_, sys, _) = image_64k(&k);
    assert_eq!(&slot_b_system(&m)[..sys.len()], &sys[..]);
}

#[test]
fn batched_reads_hashed_on_two_threads_refuse_the_forged_block_too() {
    let k = key(1);
    let (img, sys, _) = image_64k(&k);
    let (bad, at) = forged(&img, 37);
    let head = ImageHead::parse(&img).unwrap();
    let in_slot = at - head.segments[0].data_offset as usize;
    let big = ApplyOptions {
        chunk_size: 1 << 20,
        ..ApplyOptions::default()
    };
    let mut m = MemStorage::new(disk());
    let mut src = TwoFaced::new(bad.clone(), img.clone());
    let err = run(&mut src, &img, &mut m, &k, &big).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Integrity, "{err}");
    assert!(!src.reread, "the engine read some image byte twice");
    let slot = slot_b_system(&m);
    assert_ne!(&slot[in_slot..in_slot + 4096], &bad[at..at + 4096]);
    let area = StateArea::read(&mut m, LOC).unwrap();
    assert_eq!(area.boot().slot(Slot::B).state, SlotState::Updating);
    assert_eq!(area.boot().pending, None);
    // And the genuine image through the same batched path.
    let r = run(Cursor::new(&img), &img, &mut m, &k, &big).unwrap();
    assert_eq!(r.image_bytes_read, img.len() as u64);
    assert_eq!(&slot_b_system(&m)[..sys.len()], &sys[..]);
}
