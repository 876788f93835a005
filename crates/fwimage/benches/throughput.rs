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
    crc_chain, insert_signature, BatchDecoder, Compression, CrcChain, ImageBuilder, ImageHead,
    SegmentSpec, TrustedKeys, BLOCK_SIZE,
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

    decode_rates(runs, mib * MIB);
    // The whole payload's SHA-256 equals the hash of its one chunk when it
    // fits a chunk; otherwise just use it so it is not optimised away.
    black_box(digest);
}

/// Decoding a compressible payload chunk by chunk (256 KiB, the default
/// chunk; zstd -3 and gzip -6, stamp's defaults) on one thread, as a
/// checker thread of verify or apply does: the device's pure-Rust
/// decoders (ruzstd, miniz_oxide) against the host's (libzstd, zlib-rs).
/// Rates are of decoded bytes.
fn decode_rates(runs: usize, len: usize) {
    use std::io::Write;
    const CHUNK: usize = 256 << 10;
    let text = compressible(len);
    for (name, compression) in [("zstd", Compression::Zstd), ("gzip", Compression::Gzip)] {
        let mut zc = zstd::bulk::Compressor::new(3).expect("zstd");
        zc.include_checksum(true).expect("zstd");
        zc.include_contentsize(true).expect("zstd");
        let chunks: Vec<(Vec<u8>, usize)> = text
            .chunks(CHUNK)
            .map(|raw| {
                let stored = match compression {
                    Compression::Zstd => zc.compress(raw).expect("zstd"),
                    _ => {
                        let mut e =
                            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                        e.write_all(raw).expect("gzip");
                        e.finish().expect("gzip")
                    }
                };
                (stored, raw.len())
            })
            .collect();
        let stored: usize = chunks.iter().map(|(c, _)| c.len()).sum();
        report(&format!("{name}_ratio"), stored as f64 / text.len() as f64);
        let mut out = vec![0u8; CHUNK];
        type Make = fn() -> BatchDecoder;
        let decoders: [(&str, Make); 2] = [
            ("portable", BatchDecoder::portable),
            ("host", BatchDecoder::default),
        ];
        for (which, make) in decoders {
            // Once untimed, checking the bytes.
            let mut d = make();
            for ((c, n), raw) in chunks.iter().zip(text.chunks(CHUNK)) {
                d.decode_chunk(compression, c, &mut out[..*n], CHUNK as u64)
                    .expect("decode");
                assert!(out[..*n] == *raw, "{name} {which}: decoded bytes differ");
            }
            let (t, ()) = best_of(runs, || {
                let mut d = make();
                for (c, n) in &chunks {
                    d.decode_chunk(compression, c, &mut out[..*n], CHUNK as u64)
                        .expect("decode");
                }
            });
            report_rate(&format!("{name}_decode_{which}"), text.len(), &t);
        }
    }
}

/// Deterministic bytes that compress somewhat like a root file system
/// (to about 25 % with zstd -3 or gzip -6; the bench's ext4 image goes to
/// 37 %): per 4 KiB block, zeros, word-like text, or random bytes.
fn compressible(len: usize) -> Vec<u8> {
    const WORDS: [&[u8]; 16] = [
        b"the ",
        b"firmware ",
        b"0x7f3a, ",
        b"return ",
        b"struct ",
        b"\n",
        b"usr/lib/",
        b"int ",
        b"error: ",
        b"device ",
        b"{\"id\": ",
        b"}, ",
        b"; ",
        b"config_",
        b"= 1\n",
        b"ELF",
    ];
    let noise = pseudo_random(len);
    let mut state: u64 = 0x0dd_5eed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut v = Vec::with_capacity(len + 64);
    while v.len() < len {
        let block_end = (v.len() + 4096).min(len);
        match next() % 8 {
            0 | 1 => v.resize(block_end, 0),
            2 => v.extend_from_slice(&noise[v.len()..block_end]),
            _ => {
                while v.len() < block_end {
                    v.extend_from_slice(WORDS[(next() % 16) as usize]);
                }
            }
        }
    }
    v.truncate(len);
    v
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
