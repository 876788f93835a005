//! `cargo xtask bench initramfs`: our packer against
//! `find . | cpio -o -H newc | gzip -9` on the same generated tree, in one run.
//!
//! The tree is generated deterministically (same bytes on every machine):
//! thousands of small text-like files, hundreds of medium semi-structured
//! ones and a few large incompressible blobs, ~70 MB in all, so both the
//! per-file overhead and the compressor's throughput show. Each packer runs
//! once to warm the page cache, then `RUNS` timed runs; the best time of
//! each is compared (the least disturbed by other load on the machine).
//! Our output is also checked to be byte-identical across runs.

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
    let ours = |out: &Path, codec: &str, level: &str| -> Result<Duration> {
        let t = Instant::now();
        let status = Command::new(&fwpack)
            .args(["initramfs", "--recipe"])
            .arg(&recipe)
            .arg("-o")
            .arg(out)
            .args(["--compression", codec, "--level", level])
            .env("SOURCE_DATE_EPOCH", "0")
            .stdout(std::process::Stdio::null())
            .status()?;
        let elapsed = t.elapsed();
        if !status.success() {
            bail!("fwpack initramfs failed: {status}");
        }
        Ok(elapsed)
    };
    let reference = || -> Result<Duration> {
        let script = format!(
            "cd '{}' && find . | cpio -o -H newc --quiet | gzip -9 > '{}'",
            tree.display(),
            ref_out.display()
        );
        let t = Instant::now();
        let status = Command::new("sh").arg("-c").arg(script).status()?;
        let elapsed = t.elapsed();
        if !status.success() {
            bail!("reference pipeline failed: {status}");
        }
        Ok(elapsed)
    };

    // Warm the page cache for both, then alternate timed runs so that any
    // background load hits both sides alike.
    ours(&ours_out, "gzip", "9")?;
    let first = fs::read(&ours_out)?;
    reference()?;
    let mut t_ours = Vec::new();
    let mut t_ref = Vec::new();
    for _ in 0..RUNS {
        t_ours.push(ours(&ours_out, "gzip", "9")?);
        if fs::read(&ours_out)? != first {
            bail!("our output changed between runs: not reproducible");
        }
        t_ref.push(reference()?);
    }
    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let (to, tr) = (best(&t_ours), best(&t_ref));
    let (so, sr) = (
        fs::metadata(&ours_out)?.len(),
        fs::metadata(&ref_out)?.len(),
    );

    println!("runs: {RUNS} timed after one warm-up each; best of each reported");
    println!(
        "fwpack initramfs (gzip -9)      : {:>8.3} s  {:>12} bytes   runs {:?}",
        to.as_secs_f64(),
        so,
        secs(&t_ours)
    );
    println!(
        "find | cpio -H newc | gzip -9   : {:>8.3} s  {:>12} bytes   runs {:?}",
        tr.as_secs_f64(),
        sr,
        secs(&t_ref)
    );
    println!(
        "speed: {:.2}x the reference (time ratio ref/ours); size: {:.4}x (ours/ref)",
        tr.as_secs_f64() / to.as_secs_f64().max(1e-9),
        so as f64 / sr.max(1) as f64
    );
    println!("reproducible: {} identical outputs", RUNS + 1);

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
