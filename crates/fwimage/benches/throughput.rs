//! In-process throughput of the container's hot paths: the CRC32C chain,
//! SHA-256, and a whole stamp / verify of one segment held in memory (no
//! file system, no process start-up). `cargo xtask bench fwimage` runs this
//! next to the CLI timings so a miss can be split into "our CPU work" and
//! "I/O around it".
//!
//! `cargo bench -p fwimage --bench throughput [-- MIB]` prints one
//! `FWBENCH <key> <value>` line per figure (the xtask parses them). Under
//! `cargo test --all-targets` cargo runs this without `--bench`: then it does
//! a 1 MiB pass and checks the figures are self-consistent (the chain's last
//! entry equals one CRC over the whole buffer; the stamped segment's hash
//! equals a direct SHA-256), so the suite catches a bench gone stale.

use std::hint::black_box;
use std::io::{Cursor, Seek, SeekFrom};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use fwimage::{
    crc_chain, insert_signature, Compression, CrcChain, ImageBuilder, ImageHead, SegmentSpec,
    TrustedKeys, BLOCK_SIZE,
};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let mib: usize = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(if bench { 256 } else { 1 });
    let runs = if bench { 3 } else { 1 };
    let data = pseudo_random(mib * MIB);

    // The chain as the writer and verifier run it: one call per 4 KiB block.
    let (t, entries) = best_of(runs, || crc_chain(0, &data));
    report_rate("crc_chain", data.len(), &t);
    report("crc_chain_blocks", entries.len() as f64);

    // The same loop without the table's Vec, to show whether pushing the
    // entries costs anything.
    let (t, last) = best_of(runs, || {
        let mut c = CrcChain::default();
        data.chunks(BLOCK_SIZE).fold(0, |_, b| c.push(b))
    });
    report_rate("crc_push", data.len(), &t);

    // The chain over one 1 MiB chunk again and again: the writer and the
    // verifier run the chain on a chunk they have just read, so it is in
    // cache; the gap to the figure above is memory bandwidth, not CRC.
    let hot = data.get(..MIB).unwrap_or(&data);
    let (t, _) = best_of(runs, || {
        let mut c = CrcChain::default();
        for _ in 0..data.len() / hot.len() {
            for b in hot.chunks(BLOCK_SIZE) {
                c.push(b);
            }
        }
        c.value()
    });
    report_rate("crc_chain_hot", data.len() / hot.len() * hot.len(), &t);

    // The crc32c crate over the whole buffer in one call: the ceiling for
    // this crate, so (this / chain) is the per-4-KiB-call overhead.
    let (t, whole) = best_of(runs, || crc32c::crc32c(black_box(&data)));
    report_rate("crc32c_one_call", data.len(), &t);
    assert_eq!(
        whole, last,
        "a chained CRC must equal the CRC of the prefix"
    );
    assert_eq!(entries.last().copied(), Some(whole));

    let (t, digest) = best_of(runs, || {
        let mut h = Sha256::new();
        for c in data.chunks(MIB) {
            h.update(c);
        }
        <[u8; 32]>::from(h.finalize())
    });
    report_rate("sha256", data.len(), &t);

    // Stamp + sign and verify, all in memory: the floor for the CLI.
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let mut trusted = TrustedKeys::new();
    trusted.add(key.verifying_key());
    let mut image = Vec::with_capacity(data.len() + 2 * MIB);
    let (t, ()) = best_of(runs, || {
        image.clear();
        let mut out = Cursor::new(&mut image);
        let mut b = ImageBuilder::new("bench", 1).expect("builder");
        let spec = SegmentSpec {
            name: "rootfs".into(),
            target: "rootfs".into(),
            target_offset: 0,
            compression: Compression::None,
            level: None,
        };
        b.add_segment(spec, data.len() as u64, &data[..])
            .expect("segment");
        b.write(&mut out, &mut |_| {}).expect("write");
        out.seek(SeekFrom::Start(0)).expect("seek");
        insert_signature(&mut out, &key).expect("sign");
    });
    report("stamp_mem_s", t.wall.as_secs_f64());
    report("stamp_mem_cpu_s", t.cpu.as_secs_f64());

    let (t, raw) = best_of(runs, || {
        let head = ImageHead::parse(&image).expect("head");
        head.verify(&trusted, Cursor::new(&image), &mut |_| {})
            .expect("verify")
            .raw_bytes
    });
    report("verify_mem_s", t.wall.as_secs_f64());
    report("verify_mem_cpu_s", t.cpu.as_secs_f64());
    assert_eq!(raw, data.len() as u64);
    // The whole payload's SHA-256 equals the hash of its one chunk when it
    // fits a chunk; otherwise just use it so it is not optimised away.
    black_box(digest);
}

/// Best wall time and best CPU time (this thread's) over `runs`. The CPU
/// figure is the one to trust on a shared machine: other processes
/// stretch wall time, not the cycles this thread spends.
struct Timing {
    wall: Duration,
    cpu: Duration,
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Timing, T) {
    let mut best = Timing {
        wall: Duration::MAX,
        cpu: Duration::MAX,
    };
    let mut out = None;
    for _ in 0..runs {
        let (t0, c0) = (Instant::now(), thread_cpu());
        let v = black_box(f());
        best.wall = best.wall.min(t0.elapsed());
        best.cpu = best.cpu.min(thread_cpu().saturating_sub(c0));
        out = Some(v);
    }
    (best, out.expect("at least one run"))
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Prints `<key>_gbps` (wall) and `<key>_cpu_gbps` (CPU time).
fn report_rate(key: &str, bytes: usize, t: &Timing) {
    report(
        &format!("{key}_gbps"),
        bytes as f64 / t.wall.as_secs_f64() / 1e9,
    );
    report(
        &format!("{key}_cpu_gbps"),
        bytes as f64 / t.cpu.as_secs_f64() / 1e9,
    );
}

fn report(key: &str, value: f64) {
    println!("FWBENCH {key} {value:.4}");
}

/// Incompressible, deterministic bytes (splitmix64), so runs are comparable.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x5eed_f00d;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        v.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    v.truncate(len);
    v
}
