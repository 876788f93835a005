//! "No allocation larger than the file": a counting allocator records the
//! largest single allocation while malformed heads are parsed, and while
//! hostile compressed chunks are decoded (bounded by the chunk size, never
//! by what a frame header declares).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use fwimage::{BatchDecoder, Compression, ImageHead};

struct Counting;
static MAX: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        MAX.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        MAX.fetch_max(new, Ordering::Relaxed);
        System.realloc(ptr, layout, new)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// MAX is global: the tests take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn parsing_never_allocates_more_than_the_input() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (img, _) = small_image(&key(1));
    for field in [40usize, 52, 56, 64, 72, 80, 88, 96] {
        for value in [u64::MAX, u64::MAX / 2, 1 << 40, 1 << 33, 1 << 20, 200, 4096] {
            let mut bad = img.clone();
            let width = if field == 40 || field == 52 { 4 } else { 8 };
            bad[field..field + width].copy_from_slice(&value.to_le_bytes()[..width]);
            let crc = crc32c::crc32c(&bad[..252]);
            bad[252..256].copy_from_slice(&crc.to_le_bytes());
            MAX.store(0, Ordering::Relaxed);
            let _ = ImageHead::parse(&bad);
            let max = MAX.load(Ordering::Relaxed);
            assert!(
                max <= bad.len(),
                "field {field} = {value}: allocated {max} bytes for a {} byte file",
                bad.len()
            );
        }
    }
}

/// A zstd frame header: magic, descriptor, then `rest` (window
/// descriptor, content size), then `blocks` RLE blocks of 128 KiB each
/// (4 bytes each: 500 MiB of output for 4000) and a checksum.
fn zstd_rle_bomb(descriptor: u8, rest: &[u8], blocks: usize) -> Vec<u8> {
    let mut f = vec![0x28, 0xB5, 0x2F, 0xFD, descriptor];
    f.extend_from_slice(rest);
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let h = last | (1 << 1) | ((128u32 << 10) << 3);
        f.extend_from_slice(&h.to_le_bytes()[..3]);
        f.push(b'x');
    }
    f.extend_from_slice(&[0; 4]);
    f
}

#[test]
fn decoding_hostile_chunks_allocates_by_the_chunk_size_not_the_header() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const CHUNK: u64 = 64 << 10;
    let raw_len = 1000usize;
    let fcs = (raw_len as u32).to_le_bytes();
    let window = |exp: u8| [(exp - 10) << 3];
    let cases = [
        // Single segment (window = content size), 500 MiB of RLE output.
        zstd_rle_bomb(0x20 | 0x04 | (2 << 6), &fcs, 4000),
        // A 64 KiB window (the chunk), the same output.
        zstd_rle_bomb(0x04 | (2 << 6), &[&window(16)[..], &fcs].concat(), 4000),
        // A 64 MiB window: under ruzstd's own limit, so only our rule
        // stops it being allocated.
        zstd_rle_bomb(0x04 | (2 << 6), &[&window(26)[..], &fcs].concat(), 4),
    ];
    // A gzip member of 64 MiB of zeros (65 kB stored): far more output
    // than the chunk.
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            e.write_all(&zeros).unwrap();
        }
        e.finish().unwrap()
    };
    // A valid chunk first, as in an image: a decoder that has decoded a
    // frame sizes its buffers from the next frame's header (ruzstd
    // reserves the declared window on reset).
    let valid = {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.include_checksum(true).unwrap();
        c.include_contentsize(true).unwrap();
        c.compress(&[7u8; 1000]).unwrap()
    };
    let warm = |make_decoder: fn() -> BatchDecoder| {
        let mut d = make_decoder();
        let mut out = vec![0u8; raw_len];
        d.decode_chunk(Compression::Zstd, &valid, &mut out, CHUNK)
            .unwrap();
        d
    };
    for make_decoder in [
        BatchDecoder::portable as fn() -> BatchDecoder,
        BatchDecoder::default,
    ] {
        for (i, c) in cases.iter().enumerate() {
            let mut d = warm(make_decoder);
            let mut out = vec![0u8; raw_len];
            MAX.store(0, Ordering::Relaxed);
            let r = d.decode_chunk(Compression::Zstd, c, &mut out, CHUNK);
            let max = MAX.load(Ordering::Relaxed);
            assert!(r.is_err(), "case {i} accepted");
            assert!(max <= 1 << 20, "case {i}: allocated {max} bytes");
        }
        let mut out = vec![0u8; raw_len];
        MAX.store(0, Ordering::Relaxed);
        let r = make_decoder().decode_chunk(Compression::Gzip, &gz, &mut out, CHUNK);
        let max = MAX.load(Ordering::Relaxed);
        assert!(r.is_err());
        assert!(max <= 1 << 20, "gzip: allocated {max} bytes");
    }
}
