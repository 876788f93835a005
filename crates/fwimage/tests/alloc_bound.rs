//! "No allocation larger than the file": a counting allocator records the
//! largest single allocation while malformed heads are parsed.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use fwimage::ImageHead;

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

#[test]
fn parsing_never_allocates_more_than_the_input() {
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
