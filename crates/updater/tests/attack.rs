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

/// A signed image whose segment 0 is compressed (`comp`), 700 KiB + 123
/// of random bytes (11 chunks of 64 KiB), and a second, uncompressed one.
fn compressed_image(
    k: &ed25519_dalek::SigningKey,
    comp: fwimage::Compression,
) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng(23);
    let sys = rng.bytes(700 * 1024 + 123);
    let boot = rng.bytes(100 * 1024);
    let img = image(
        BOARD,
        2,
        &[
            Seg {
                compression: comp,
                ..seg("rootfs", "system", &sys)
            },
            seg("kernel", "boot", &boot),
        ],
        k,
    );
    (img, sys)
}

/// `img` with the `raw_sha256` of chunk `chunk` of segment 0 changed, its
/// index page hash updated and the head signed again by `k`: what only a
/// signer (a buggy tool, a stolen key's careless user) can make. The stored
/// bytes still match `stored_sha256` and decode, and what they decode to
/// still matches the CRC chain; only the raw hash disagrees.
fn wrong_raw_hash(img: &[u8], chunk: u64, k: &ed25519_dalek::SigningKey) -> Vec<u8> {
    use sha2::Digest;
    let head = ImageHead::parse(img).unwrap();
    let h = &head.header;
    let kk = u64::from(head.segments[0].first_chunk) + chunk;
    let page = kk / fwimage::ENTRIES_PER_PAGE;
    let entry = h.page_offset(page) as usize
        + (kk % fwimage::ENTRIES_PER_PAGE) as usize * fwimage::CHUNK_ENTRY_LEN;
    let mut bad = img.to_vec();
    bad[entry + 32] ^= 0x01;
    let p = h.page_offset(page) as usize;
    let page_hash = sha2::Sha256::digest(&bad[p..p + fwimage::PAGE_LEN]);
    let at = (h.page_hash_offset() + 32 * page) as usize;
    bad[at..at + 32].copy_from_slice(&page_hash);
    let mut c = Cursor::new(bad);
    fwimage::insert_signature(&mut c, k).unwrap();
    let bad = c.into_inner();
    // The head verifies, the whole-image check refuses it.
    let head = ImageHead::parse(&bad).unwrap();
    let e = head
        .verify(&trusted(k), fwimage::MemSource(&bad[..]), &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(e, fwimage::Error::RawHashMismatch { chunk: c, .. } if c == chunk),
        "{e}"
    );
    bad
}

const COMPRESSIONS: [fwimage::Compression; 2] =
    [fwimage::Compression::Zstd, fwimage::Compression::Gzip];

/// What a refused image leaves: slot B `updating` (never bootable), not
/// pending, the journal at or before `bad_chunk` of segment 0, and the
/// slot's bytes from that chunk on not the image's.
fn assert_not_committed(m: &mut MemStorage, sys: &[u8], bad_chunk: u64) {
    let area = StateArea::read(m, LOC).unwrap();
    assert_eq!(area.boot().slot(Slot::B).state, SlotState::Updating);
    assert_eq!(area.boot().pending, None);
    assert_eq!(area.boot().active, Slot::A);
    if let Some(j) = area.journal() {
        assert_eq!(j.segment, 0);
        assert!(j.offset <= bad_chunk * CHUNK, "journal at {}", j.offset);
    }
    let from = (bad_chunk * CHUNK) as usize;
    let to = from + CHUNK as usize;
    assert_ne!(
        &slot_b_system(m)[from..to],
        &sys[from..to],
        "the chunk whose raw hash does not match reached the slot"
    );
}

#[test]
fn field_decoded_chunk_must_match_its_raw_hash_before_it_is_written() {
    let k = key(1);
    for comp in COMPRESSIONS {
        let (img, sys) = compressed_image(&k, comp);
        let bad = wrong_raw_hash(&img, 4, &k);
        let mut m = MemStorage::new(disk());
        let err = run(Cursor::new(&bad), &bad, &mut m, &k, &opts()).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Integrity, "{comp:?}: {err}");
        assert!(
            err.to_string().contains("decompressed") && err.to_string().contains("chunk 4"),
            "{comp:?}: {err}"
        );
        assert_not_committed(&mut m, &sys, 4);
        // Chunks before it were written and are what the image signs.
        assert_eq!(
            &slot_b_system(&m)[..4 * CHUNK as usize],
            &sys[..4 * CHUNK as usize]
        );
        // A second run resumes and stops at the same chunk: still nothing
        // committed.
        let err = run(Cursor::new(&bad), &bad, &mut m, &k, &opts()).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Integrity, "{comp:?}: {err}");
        assert_not_committed(&mut m, &sys, 4);
    }
}

#[test]
fn field_resume_checks_decoded_chunks_against_their_raw_hash() {
    let k = key(1);
    for comp in COMPRESSIONS {
        let (img, sys) = compressed_image(&k, comp);
        let bad = wrong_raw_hash(&img, 7, &k);
        let head = ImageHead::parse(&bad).unwrap();
        // Interrupted by an I/O error while chunk 3 is read (stored
        // chunks of random data are a few bytes longer than 64 KiB):
        // chunks 0-2 are journaled.
        let e3 = head.header.data_offset + 3 * CHUNK + 1000;
        let mut m = MemStorage::new(disk());
        let mut src = TwoFaced::new(bad.clone(), bad.clone());
        src.fail_after = Some(e3);
        let err = run(&mut src, &bad, &mut m, &k, &opts()).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Io, "{comp:?}: {err}");
        let j = StateArea::read(&mut m, LOC).unwrap().journal().cloned();
        let j = j.expect("journal after checkpoints");
        assert!(j.offset >= CHUNK && j.offset < 7 * CHUNK, "{}", j.offset);

        let mut events = Vec::new();
        let err = apply(
            Cursor::new(&bad),
            bad.len() as u64,
            &mut m,
            &trusted(&k),
            &opts(),
            &mut |e| events.push(e.json()),
        )
        .unwrap_err();
        assert!(
            events.iter().any(|e| e.contains("\"resume\"")),
            "{comp:?}: the second run did not resume: {events:?}"
        );
        assert_eq!(err.class(), ErrorClass::Integrity, "{comp:?}: {err}");
        assert!(err.to_string().contains("chunk 7"), "{comp:?}: {err}");
        assert_not_committed(&mut m, &sys, 7);
        assert_eq!(
            &slot_b_system(&m)[..7 * CHUNK as usize],
            &sys[..7 * CHUNK as usize]
        );
    }
}

#[test]
fn field_seed_copy_and_fetched_chunks_are_checked_against_their_raw_hash() {
    let k = key(1);
    for comp in COMPRESSIONS {
        let (img, sys) = compressed_image(&k, comp);
        let bad = wrong_raw_hash(&img, 5, &k);
        // Slot A (active, complete) holds the new rootfs: every chunk but
        // the crafted one is copied from it; chunk 5's signed raw hash
        // names bytes the seed does not have, so it is fetched, decoded,
        // and refused.
        let mut d = disk();
        let a = layout().group("system").unwrap().slot(Slot::A).offset as usize;
        d[a..a + sys.len()].copy_from_slice(&sys);
        let mut m = MemStorage::new(d);
        let o = ApplyOptions {
            seed: updater::Seed::Active,
            ..opts()
        };
        let mut events = Vec::new();
        let err = apply(
            Cursor::new(&bad),
            bad.len() as u64,
            &mut m,
            &trusted(&k),
            &o,
            &mut |e| events.push(e.clone()),
        )
        .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Integrity, "{comp:?}: {err}");
        assert!(err.to_string().contains("chunk 5"), "{comp:?}: {err}");
        let plan = events.iter().find_map(|e| match e {
            updater::Event::DeltaPlan {
                chunks, from_seed, ..
            } => Some((*chunks, *from_seed)),
            _ => None,
        });
        // 11 rootfs chunks, 10 in the seed; the kernel's 2 are not.
        assert_eq!(plan, Some((13, 10)), "{comp:?}");
        assert_not_committed(&mut m, &sys, 5);

        // A seed chunk that stops matching its signed raw hash between
        // the plan and the copy is refused too (SeedChanged, exit 6):
        // a seed storage that returns other bytes on its second read.
        let mut m = SeedFlipper {
            inner: MemStorage::new({
                let mut d = disk();
                d[a..a + sys.len()].copy_from_slice(&sys);
                d
            }),
            at: a as u64 + 2 * CHUNK,
            reads: 0,
        };
        let err = apply(
            Cursor::new(&img),
            img.len() as u64,
            &mut m,
            &trusted(&k),
            &o,
            &mut |_| {},
        )
        .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Integrity, "{comp:?}: {err}");
        assert!(err.to_string().contains("seed"), "{comp:?}: {err}");
        assert_not_committed(&mut m.inner, &sys, 2);
    }
}

/// A disk that, from the `reads`-th read covering byte `at` on, returns
/// that byte flipped: a seed slot that changes between the delta plan and
/// the copy (a running system writing its own root).
struct SeedFlipper {
    inner: MemStorage,
    at: u64,
    reads: u32,
}

impl updater::Storage for SeedFlipper {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn geometry(&self) -> updater::Geometry {
        self.inner.geometry()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_at(offset, buf)?;
        if (offset..offset + buf.len() as u64).contains(&self.at) {
            self.reads += 1;
            if self.reads > 1 {
                buf[(self.at - offset) as usize] ^= 0x80;
            }
        }
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_at(offset, buf)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.inner.sync()
    }
    fn describe(&self) -> String {
        "seed flipper".into()
    }
}

/// A disk that stores the byte at `at` flipped whenever a write covers
/// it: a card that acknowledges a write it did not keep.
struct Liar {
    inner: MemStorage,
    at: u64,
}

impl updater::Storage for Liar {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn geometry(&self) -> updater::Geometry {
        self.inner.geometry()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_at(offset, buf)?;
        if (offset..offset + buf.len() as u64).contains(&self.at) {
            self.inner.data[self.at as usize] ^= 0x01;
        }
        Ok(())
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.inner.sync()
    }
    fn describe(&self) -> String {
        "liar".into()
    }
}

/// `--verify-writes` reads each batch back on its writer thread right
/// after writing it, while the other writer goes on with the next: a
/// chunk the device did not keep stops the apply with the read-back
/// error, and the journal never claims it nor anything after it,
/// although later batches may already be written when the read-back
/// finds it (a checkpoint waits for every write and read-back before it).
/// Batches of one chunk, then of several, with the bad chunk first and
/// then second of a pair the read-back hashes together (sha256x2 on
/// x86_64).
#[test]
fn verify_writes_never_claims_a_checkpoint_before_its_read_back() {
    for (bad_chunk, mem) in [(5, CHUNK), (4, 8 * CHUNK), (5, 8 * CHUNK)] {
        verify_writes_stops_at(bad_chunk, mem as usize);
    }
}

fn verify_writes_stops_at(bad_chunk: u64, mem: usize) {
    let k = key(1);
    let (img, sys, _) = image_64k(&k);
    let at = layout().group("system").unwrap().slot(Slot::B).offset + bad_chunk * CHUNK + 100;
    let verify = ApplyOptions {
        verify_writes: true,
        chunk_size: mem,
        ..opts()
    };
    let mut liar = Liar {
        inner: MemStorage::new(disk()),
        at,
    };
    let mut claims = Vec::new();
    let err = apply(
        Cursor::new(&img),
        img.len() as u64,
        &mut liar,
        &trusted(&k),
        &verify,
        &mut |e| {
            if let updater::Event::Checkpoint { offset, .. } = e {
                claims.push(*offset);
            }
        },
    )
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Integrity, "{err}");
    assert!(
        matches!(err, updater::Error::ReadBack { block, .. } if block == bad_chunk),
        "{err}"
    );
    assert!(
        claims.iter().all(|&o| o <= bad_chunk * CHUNK),
        "checkpoints claimed {claims:?}"
    );
    let area = StateArea::read(&mut liar.inner, LOC).unwrap();
    assert_eq!(area.boot().slot(Slot::B).state, SlotState::Updating);
    // Checkpoints before the bad chunk were claimed, none from it on.
    let j = area.journal().expect("checkpoints before the bad chunk");
    assert_eq!(j.segment, 0);
    assert!(
        j.offset > 0 && j.offset <= bad_chunk * CHUNK,
        "{}",
        j.offset
    );
    assert_eq!(&slot_b_system(&liar.inner)[..100], &sys[..100]);
}

/// Segment 0 of [`compressed_image`] with zero chunks: 0, 3-5 and the short
/// last one (10) all zero, stored empty (docs/FORMAT.md, "Zero chunks").
fn zero_chunk_image(
    k: &ed25519_dalek::SigningKey,
    comp: fwimage::Compression,
) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng(29);
    let c = CHUNK as usize;
    let mut sys = rng.bytes(700 * 1024 + 123);
    sys[..c].fill(0);
    sys[3 * c..6 * c].fill(0);
    sys[10 * c..].fill(0);
    let boot = vec![0u8; 100 * 1024];
    let img = image_with(
        BOARD,
        2,
        &[
            Seg {
                compression: comp,
                ..seg("rootfs", "system", &sys)
            },
            Seg {
                compression: comp,
                ..seg("kernel", "boot", &boot)
            },
        ],
        k,
        true,
    );
    let head = ImageHead::parse(&img).unwrap();
    assert_ne!(
        head.header.incompat_flags & fwimage::INCOMPAT_ZERO_CHUNKS,
        0
    );
    assert_eq!(head.segments[1].stored_len, 0);
    (img, sys)
}

#[test]
fn zero_chunk_images_apply_resume_and_verify_writes() {
    let k = key(1);
    for comp in COMPRESSIONS {
        let (img, sys) = zero_chunk_image(&k, comp);
        let head = ImageHead::parse(&img).unwrap();
        // Cut while chunk 7 is read (chunks 0 and 3-5 take no bytes).
        let cut = head.header.data_offset + 4 * CHUNK + 1000;
        let mut m = MemStorage::new(disk());
        let mut src = TwoFaced::new(img.clone(), img.clone());
        src.fail_after = Some(cut);
        let err = run(&mut src, &img, &mut m, &k, &opts()).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Io, "{comp:?}: {err}");
        let j = StateArea::read(&mut m, LOC).unwrap().journal().cloned();
        assert!(j.expect("journal").offset >= 3 * CHUNK, "{comp:?}");
        let mut events = Vec::new();
        let o = ApplyOptions {
            verify_writes: true,
            ..opts()
        };
        apply(
            Cursor::new(&img),
            img.len() as u64,
            &mut m,
            &trusted(&k),
            &o,
            &mut |e| events.push(e.json()),
        )
        .unwrap();
        assert!(events.iter().any(|e| e.contains("\"resume\"")), "{comp:?}");
        assert_eq!(&slot_b_system(&m)[..sys.len()], &sys[..], "{comp:?}");
        let b = layout().group("boot").unwrap().slot(Slot::B).offset as usize;
        assert!(m.data[b..b + 100 * 1024].iter().all(|&x| x == 0));
        let area = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(area.boot().pending, Some(Slot::B));
    }
}

#[test]
fn field_a_zero_chunk_whose_raw_hash_is_not_of_zeros_never_commits() {
    let k = key(1);
    for comp in COMPRESSIONS {
        let (img, sys) = zero_chunk_image(&k, comp);
        // Chunk 4 is stored empty: only its raw hash can refuse it.
        let bad = wrong_raw_hash(&img, 4, &k);
        let mut m = MemStorage::new(disk());
        let err = run(Cursor::new(&bad), &bad, &mut m, &k, &opts()).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Integrity, "{comp:?}: {err}");
        assert!(err.to_string().contains("chunk 4"), "{comp:?}: {err}");
        assert_not_committed(&mut m, &sys, 4);
    }
}

#[test]
fn a_delta_never_copies_nor_fetches_zero_chunks() {
    let k = key(1);
    let (img, sys) = zero_chunk_image(&k, fwimage::Compression::Zstd);
    // The seed (slot A) holds the new rootfs already: the chunks with
    // data are copied, the zero chunks written as zeros.
    let mut d = disk();
    let a = layout().group("system").unwrap().slot(Slot::A).offset as usize;
    d[a..a + sys.len()].copy_from_slice(&sys);
    let mut m = MemStorage::new(d);
    let o = ApplyOptions {
        seed: updater::Seed::Active,
        ..opts()
    };
    let mut plan = None;
    let r = apply(
        Cursor::new(&img),
        img.len() as u64,
        &mut m,
        &trusted(&k),
        &o,
        &mut |e| {
            if let updater::Event::DeltaPlan {
                chunks,
                from_seed,
                fetch_bytes,
                ..
            } = e
            {
                plan = Some((*chunks, *from_seed, *fetch_bytes));
            }
        },
    )
    .unwrap();
    // 11 rootfs chunks (5 zero) and 2 zero kernel chunks.
    assert_eq!(plan, Some((13, 6, 0)));
    assert_eq!(r.bytes_from_seed, 6 * CHUNK);
    assert_eq!(&slot_b_system(&m)[..sys.len()], &sys[..]);
}
