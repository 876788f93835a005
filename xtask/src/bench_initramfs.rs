//! `cargo xtask bench initramfs`: our packer against
//! `find . | cpio -o -H newc | gzip -9` on the same generated tree, in one run.
//!
//! The tree is generated deterministically (same bytes on every machine):
//! thousands of small text-like files, hundreds of medium semi-structured
//! ones and a few large incompressible blobs, ~70 MB in all, so both the
//! per-file overhead and the compressor's throughput show. Each packer runs
//! once to warm the page cache, then `RUNS` timed runs, interleaved; the
//! best and the median of each are printed (the best is the least disturbed
//! by other load on the machine). Ours runs with its default `--jobs` (the
//! cores available) and once with `--jobs 1`; every output is checked to be
//! byte-identical. `find | cpio | pigz -9` is timed too when Debian's pigz is
//! installed: the parallel peer.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

const RUNS: usize = 3;

pub fn run(sh: &Shell) -> Result<()> {
    for tool in ["cpio", "gzip", "find", "sh"] {
        if !crate::deps::on_path(tool) {
            bail!("`{tool}` is needed for the comparison; run `cargo xtask deps`");
        }
    }
    cmd!(sh, "cargo build --release --quiet -p fwpack").run()?;
    let fwpack = crate::target_dir().join("release/fwpack");
    let work = crate::target_dir().join("bench-initramfs");
    let tree = work.join("tree");
    let (files, bytes) = generate(&tree)?;
    let recipe = work.join("bench.yaml");
    fs::write(
        &recipe,
        "require_init: false\ntrees:\n  - {src: tree, dst: /}\n",
    )?;
    println!(
        "tree: {files} files, {:.1} MB in {}",
        bytes as f64 / 1e6,
        tree.display()
    );

    let ours_out = work.join("ours.cpio.gz");
    let ref_out = work.join("reference.cpio.gz");
    let ours_jobs =
        |out: &Path, codec: &str, level: &str, jobs: Option<usize>| -> Result<Duration> {
            let t = Instant::now();
            let mut c = Command::new(&fwpack);
            c.args(["initramfs", "--recipe"])
                .arg(&recipe)
                .arg("-o")
                .arg(out)
                .args(["--compression", codec, "--level", level]);
            if let Some(j) = jobs {
                c.arg("--jobs").arg(j.to_string());
            }
            let status = c
                .env("SOURCE_DATE_EPOCH", "0")
                .stdout(std::process::Stdio::null())
                .status()?;
            let elapsed = t.elapsed();
            if !status.success() {
                bail!("fwpack initramfs failed: {status}");
            }
            Ok(elapsed)
        };
    let ours = |out: &Path, codec: &str, level: &str| ours_jobs(out, codec, level, None);
    let pigz = crate::deps::on_path("pigz");
    let pigz_out = work.join("reference-pigz.cpio.gz");
    let reference_with = |gzip: &str, out: &Path| -> Result<Duration> {
        let script = format!(
            "cd '{}' && find . | cpio -o -H newc --quiet | {gzip} -9 > '{}'",
            tree.display(),
            out.display()
        );
        let t = Instant::now();
        let status = Command::new("sh").arg("-c").arg(script).status()?;
        let elapsed = t.elapsed();
        if !status.success() {
            bail!("reference pipeline failed: {status}");
        }
        Ok(elapsed)
    };
    let reference = || reference_with("gzip", &ref_out);

    // Warm the page cache for both, then alternate timed runs so that any
    // background load hits both sides alike.
    ours(&ours_out, "gzip", "9")?;
    let first = fs::read(&ours_out)?;
    reference()?;
    if pigz {
        reference_with("pigz", &pigz_out)?;
    }
    let mut t_ours = Vec::new();
    let mut t_ref = Vec::new();
    let mut t_pigz = Vec::new();
    for _ in 0..RUNS {
        t_ours.push(ours(&ours_out, "gzip", "9")?);
        if fs::read(&ours_out)? != first {
            bail!("our output changed between runs: not reproducible");
        }
        t_ref.push(reference()?);
        if pigz {
            t_pigz.push(reference_with("pigz", &pigz_out)?);
        }
    }
    let serial_out = work.join("ours-jobs1.cpio.gz");
    let t_serial = ours_jobs(&serial_out, "gzip", "9", Some(1))?;
    if fs::read(&serial_out)? != first {
        bail!("--jobs 1 output differs from the default --jobs output");
    }
    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let (to, tr) = (best(&t_ours), best(&t_ref));
    let (so, sr) = (
        fs::metadata(&ours_out)?.len(),
        fs::metadata(&ref_out)?.len(),
    );
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();

    println!(
        "runs: {RUNS} timed after one warm-up each, interleaved; best and median; {cores} cores, loadavg {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let row = |name: &str, v: &[Duration], size: u64| {
        println!(
            "{name:<34}: best {:>7.3} s  median {:>7.3} s  {:>11} bytes  runs {:?}",
            best(v).as_secs_f64(),
            median(v).as_secs_f64(),
            size,
            secs(v)
        );
    };
    row(
        &format!("fwpack initramfs gzip -9 ({cores} jobs)"),
        &t_ours,
        so,
    );
    row("fwpack initramfs gzip -9 --jobs 1", &[t_serial], so);
    row("find | cpio -H newc | gzip -9", &t_ref, sr);
    if pigz {
        row(
            "find | cpio -H newc | pigz -9",
            &t_pigz,
            fs::metadata(&pigz_out)?.len(),
        );
    }
    println!(
        "speed: {:.2}x gzip -9 (best ref / best ours), {:.2}x by medians; size: {:.4}x (ours/ref)",
        tr.as_secs_f64() / to.as_secs_f64().max(1e-9),
        median(&t_ref).as_secs_f64() / median(&t_ours).as_secs_f64().max(1e-9),
        so as f64 / sr.max(1) as f64
    );
    println!(
        "reproducible: {} identical outputs ({RUNS} + warm-up at {cores} jobs, 1 at --jobs 1)",
        RUNS + 2
    );

    // For reference: the other settings a user might pick.
    for (codec, level) in [("gzip", "6"), ("zstd", "19"), ("none", "")] {
        let out = work.join(format!("ours-{codec}{level}.img"));
        let t = if level.is_empty() {
            let t = Instant::now();
            let st = Command::new(&fwpack)
                .args(["initramfs", "--recipe"])
                .arg(&recipe)
                .arg("-o")
                .arg(&out)
                .args(["--compression", codec])
                .stdout(std::process::Stdio::null())
                .status()?;
            if !st.success() {
                bail!("fwpack initramfs --compression {codec} failed");
            }
            t.elapsed()
        } else {
            ours(&out, codec, level)?
        };
        println!(
            "fwpack initramfs ({codec} {level:>2})      : {:>8.3} s  {:>12} bytes",
            t.as_secs_f64(),
            fs::metadata(&out)?.len()
        );
    }
    Ok(())
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn secs(v: &[Duration]) -> Vec<String> {
    v.iter()
        .map(|d| format!("{:.3}", d.as_secs_f64()))
        .collect()
}

/// xorshift32: a fixed, dependency-free stream of pseudo-random numbers.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u32) -> u32 {
        self.next() % n.max(1)
    }
}

const WORDS: &[&str] = &[
    "firmware",
    "update",
    "slot",
    "kernel",
    "module",
    "device",
    "block",
    "verify",
    "signature",
    "image",
    "partition",
    "boot",
    "config",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "with",
    "on",
    "error",
    "return",
    "struct",
    "static",
    "const",
    "void",
    "int",
    "char",
    "if",
    "else",
    "while",
    "0x1f",
    "0",
    "1",
    "{",
    "}",
    "(",
    ")",
    ";",
    "=",
    "->",
    "#include",
    "<linux/init.h>",
];

/// Writes the tree (idempotent: regenerated only when the marker is
/// missing). Returns (file count, total bytes).
pub(crate) fn generate(tree: &Path) -> Result<(usize, u64)> {
    let marker = tree.with_file_name(".tree-generated-v1");
    let mut rng = Rng(0x2545_f491);
    let mut plan: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for i in 0..3000u32 {
        let dir = format!("usr/share/d{:02}/s{:02}", i % 40, (i / 40) % 10);
        let n = 1024 + rng.below(7 * 1024) as usize;
        let mut text = String::with_capacity(n + 16);
        while text.len() < n {
            text.push_str(WORDS[rng.below(WORDS.len() as u32) as usize]);
            text.push(if rng.below(12) == 0 { '\n' } else { ' ' });
        }
        plan.push((
            PathBuf::from(format!("{dir}/f{i:05}.txt")),
            text.into_bytes(),
        ));
    }
    for i in 0..400u32 {
        // Semi-structured: records with counters and short random runs,
        // like tables or object code.
        let n = 16 * 1024 + rng.below(112 * 1024) as usize;
        let mut data = Vec::with_capacity(n + 64);
        let mut k = 0u32;
        while data.len() < n {
            data.extend_from_slice(&k.to_le_bytes());
            data.extend_from_slice(b"\0\0\x10\x00REC:");
            for _ in 0..(rng.below(12)) {
                data.push(rng.below(256) as u8);
            }
            k = k.wrapping_add(1 + rng.below(3));
        }
        plan.push((
            PathBuf::from(format!("usr/lib/m{:02}/lib{i:04}.so", i % 16)),
            data,
        ));
    }
    for i in 0..20u32 {
        let n = (1 << 20) + rng.below(1 << 20) as usize;
        let data: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        plan.push((PathBuf::from(format!("opt/blobs/blob{i:02}.bin")), data));
    }
    let count = plan.len();
    let bytes = plan.iter().map(|(_, d)| d.len() as u64).sum();
    if marker.exists() {
        return Ok((count, bytes));
    }
    if tree.exists() {
        fs::remove_dir_all(tree).with_context(|| format!("clearing {}", tree.display()))?;
    }
    for (rel, data) in &plan {
        let p = tree.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
    }
    fs::write(marker, "")?;
    Ok((count, bytes))
}
