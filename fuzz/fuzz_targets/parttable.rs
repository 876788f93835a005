//! Any bytes as a disk, at any sector size: `parttable::read` returns a
//! table or an error, never panics, never loops, and never allocates
//! beyond its caps (libFuzzer's -malloc_limit_mb catches the latter).

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the sector size, so 4 KiB-sector GPTs are reachable.
    let (knob, disk) = match data.split_first() {
        Some((&k, rest)) => (k, rest),
        None => (0, data),
    };
    let sector = 512u64 << (knob % 4);
    if let Ok(t) = parttable::read(&mut Cursor::new(disk), sector) {
        // Invariants that hold for every table.
        assert_eq!(t.size_bytes, disk.len() as u64);
        assert!(t.partitions.len() <= 4 + parttable::MAX_LOGICAL || t.kind == parttable::TableKind::Gpt);
        for p in &t.partitions {
            assert!(p.number >= 1);
            let _ = p.kind.to_string();
        }
        for w in &t.warnings {
            let _ = w.to_string();
        }
    }
    let _ = parttable::fs::probe(disk);
});
