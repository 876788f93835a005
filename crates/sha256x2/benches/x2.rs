//! `cargo bench -p sha256x2`: bytes hashed per second, one thread, by two
//! `sha2` digests in a row and by `digest2`, for 256 KiB chunk pairs (the
//! apply's batch of two) and a few other shapes. Best of 7 runs of
//! about 128 MiB each. Without `--bench` (`cargo test --all-targets`
//! runs it too, unoptimized) one run of 1 MiB per shape.

use std::hint::black_box;
use std::time::Instant;

use sha2::{Digest, Sha256};

fn gbps(runs: usize, total: usize, f: &mut dyn FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    total as f64 / best / 1e9
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (runs, per_shape) = if bench { (7, 128 << 20) } else { (1, 1 << 20) };
    let mut data = vec![0u8; 2 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in &mut data {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    println!("sha256x2: GB/s of input hashed, one thread (best of {runs})");
    println!(
        "{:>22} {:>10} {:>10} {:>10}",
        "lengths", "sha2 x2", "digest2", "speedup"
    );
    for (la, lb) in [
        (256 << 10, 256 << 10),
        (256 << 10, 100 << 10),
        (90 << 10, 70 << 10),
        (4096, 4096),
        (1000, 1000),
    ] {
        let (a, b) = (&data[1..1 + la], &data[(1 << 20) + 3..(1 << 20) + 3 + lb]);
        assert_eq!(
            sha256x2::digest2(a, b),
            [
                <[u8; 32]>::from(Sha256::digest(a)),
                Sha256::digest(b).into()
            ]
        );
        let reps = (per_shape / (la + lb)).max(1);
        let total = reps * (la + lb);
        let seq = gbps(runs, total, &mut || {
            for _ in 0..reps {
                black_box(Sha256::digest(black_box(a)));
                black_box(Sha256::digest(black_box(b)));
            }
        });
        let x2 = gbps(runs, total, &mut || {
            for _ in 0..reps {
                black_box(sha256x2::digest2(black_box(a), black_box(b)));
            }
        });
        println!(
            "{:>22} {seq:>10.3} {x2:>10.3} {:>9.2}x",
            format!("{la} + {lb}"),
            x2 / seq
        );
    }
}
