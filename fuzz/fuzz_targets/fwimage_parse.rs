//! Parses arbitrary bytes as an image and, when the head parses, runs the
//! signature check and a full verification pass: none of it may panic or
//! allocate beyond the input.
//!
//! Random bytes almost never pass the header checksum, which would keep
//! the fuzzer in front of the first check; so each input is also tried
//! with magic, version and checksum patched in, to reach the table, slot
//! and segment-data code.
#![no_main]

use libfuzzer_sys::fuzz_target;

const HEADER_LEN: usize = 256;

fn exercise(data: &[u8]) {
    let Ok(head) = fwimage::ImageHead::parse(data) else {
        return;
    };
    let mut keys = fwimage::TrustedKeys::new();
    // Any valid point works; the fuzzer will not forge a signature, but
    // the verifier must walk the slots without panicking.
    let _ = keys.add_encoded(&[
        0x3d, 0x40, 0x17, 0xc3, 0xe8, 0x43, 0x89, 0x5a, 0x92, 0xb7, 0x0a, 0xa7, 0x4d, 0x1b, 0x7e,
        0xbc, 0x9c, 0x98, 0x2c, 0xcf, 0x2e, 0xc4, 0x96, 0x8c, 0xc0, 0xcd, 0x55, 0xf1, 0x2a, 0xf4,
        0x66, 0x0c,
    ]);
    let _ = head.verify_signature(&keys);
    let _ = head.verify(&keys, std::io::Cursor::new(data), &mut |_| {});
    for idx in 0..head.segments.len() {
        if let Ok(mut rd) = fwimage::SegmentReader::new(&head, idx, std::io::Cursor::new(data)) {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = rd.next_chunk(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    exercise(data);
    if data.len() >= HEADER_LEN {
        let mut fixed = data.to_vec();
        fixed[..8].copy_from_slice(&fwimage::MAGIC);
        fixed[8..10].copy_from_slice(&1u16.to_le_bytes());
        let crc = crc32c::crc32c(&fixed[..HEADER_LEN - 4]);
        fixed[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        exercise(&fixed);
    }
});
