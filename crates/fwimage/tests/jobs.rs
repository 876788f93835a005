//! Stamping hashes and compresses chunks on several threads; the image's
//! bytes must not depend on how many.

mod common;

use std::io::Cursor;

use common::{key, noise, read_all, spec};
use fwimage::{Compression, ImageBuilder, SegmentSpec, TrustedKeys};

fn payloads() -> Vec<(SegmentSpec, Vec<u8>)> {
    // Half noise, half runs, so compressed chunks differ in size and finish
    // out of order on the threads; lengths not multiples of the chunk.
    let mixed = |len: usize, seed: u64| -> Vec<u8> {
        noise(len, seed)
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (i / 4096) % 2 == 0 {
                    *b
                } else {
                    (i / 9000) as u8
                }
            })
            .collect()
    };
    let mut gz = spec("boot", "boot", Compression::Gzip);
    gz.level = Some(9);
    // The default gzip level (libdeflate's near-optimal parser), with a
    // run of zeros two chunks long: those chunks take the level-9 path.
    let mut log = mixed(300_000, 4);
    log[70_000..250_000].fill(0);
    vec![
        (
            spec("rootfs", "system", Compression::None),
            mixed(700_001, 1),
        ),
        (gz, mixed(1_000_000, 2)),
        (spec("data", "data", Compression::Zstd), mixed(650_000, 3)),
        (spec("log", "log", Compression::Gzip), log),
    ]
}

fn stamp(segments: &[(SegmentSpec, Vec<u8>)], jobs: usize) -> (Vec<u8>, u64) {
    let mut b = ImageBuilder::new("test-board", 7)
        .and_then(|b| b.chunk_size(64 << 10))
        .unwrap()
        .jobs(jobs);
    for (s, data) in segments {
        b.add_segment(s.clone(), data.len() as u64, Cursor::new(data.clone()))
            .unwrap();
    }
    let mut out = Cursor::new(Vec::new());
    let mut progressed = 0;
    b.write(&mut out, &mut |n| progressed += n).unwrap();
    fwimage::insert_signature(&mut out, &key(4)).unwrap();
    (out.into_inner(), progressed)
}

#[test]
fn stamp_is_byte_identical_for_any_jobs() {
    // Process-global; this binary's only test, so nothing else races it.
    std::env::set_var("SOURCE_DATE_EPOCH", "1700000000");
    let segments = payloads();
    let total: u64 = segments.iter().map(|(_, d)| d.len() as u64).sum();
    let (one, progressed) = stamp(&segments, 1);
    assert_eq!(progressed, total);
    for jobs in [2, 3, 8] {
        let (many, progressed) = stamp(&segments, jobs);
        assert_eq!(progressed, total);
        assert!(many == one, "--jobs {jobs} differs from --jobs 1");
    }
    let mut trusted = TrustedKeys::new();
    trusted.add(key(4).verifying_key());
    let back = read_all(&one, &trusted).unwrap();
    let want: Vec<Vec<u8>> = segments.into_iter().map(|(_, d)| d).collect();
    assert!(back == want, "payloads did not round-trip");
}
