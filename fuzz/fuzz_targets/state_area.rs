//! Any bytes as the two copies of a state area: `StateArea::read` (record
//! envelope, version / compatible-since, every payload section, a newer
//! version's additions) returns a state or an error, never panics. The
//! first byte says which copies get a valid CRC, since the fuzzer cannot
//! forge CRC32C and the decoders behind it are the interesting part.

#![no_main]

use libfuzzer_sys::fuzz_target;
use updater::record::RECORD_LEN;
use updater::{MemStorage, StateArea, StateLocation};

const LOC: StateLocation = StateLocation {
    offset: 4096,
    copy_distance: 16384,
};

fuzz_target!(|data: &[u8]| {
    let (knob, rest) = match data.split_first() {
        Some((&k, rest)) => (k, rest),
        None => (0, data),
    };
    let mut disk = vec![0u8; (LOC.span().end) as usize];
    for copy in 0..2 {
        let src = rest.get(copy * RECORD_LEN..).unwrap_or(&[]);
        let src = &src[..src.len().min(RECORD_LEN)];
        let at = LOC.copy_offset(copy) as usize;
        let block = &mut disk[at..at + RECORD_LEN];
        block[..src.len()].copy_from_slice(src);
        if knob & (1 << copy) != 0 {
            let crc = crc32c::crc32c(&block[..RECORD_LEN - 4]);
            block[RECORD_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let mut m = MemStorage::new(disk);
    if let Ok(area) = StateArea::read(&mut m, LOC) {
        let _ = area.layout().validate();
        let _ = area.journal();
    }
});
