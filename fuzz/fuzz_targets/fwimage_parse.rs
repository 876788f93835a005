//! Parses arbitrary bytes as an image head and, when that succeeds, runs
//! the signature check and a full verification pass with a fixed key: none
//! of it may panic or allocate beyond the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
