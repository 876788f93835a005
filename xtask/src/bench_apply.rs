//! `cargo xtask bench apply`: `fwpack apply` of 256 MiB and 1 GiB images
//! (random payload, uncompressed) to a disk-image file, with and without
//! `--verify-writes`, against `dd if=payload of=file bs=1M oflag=direct
//! conv=fsync` in the same run; peak RSS of the fwpack process; and what
//! `--minimize-writes` saves on a re-flash with 1% of the blocks changed.
//!
//! Method, and why:
//! - The release `fwpack` is copied aside before timing (a concurrent
//!   rebuild cannot swap it mid-run).
//! - Everything lives under `target/bench-apply/`, on the same file system
//!   as the target directory (a real disk here: O_DIRECT and fdatasync do
//!   real work). Payloads and images are made once and read before timing,
//!   so both tools read their input from the page cache and the figures
//!   compare the writing, which is what dd measures.
//! - Each run writes a fresh sparse file (dd: `rm` first; apply: a new
//!   disk with `fwpack state init`), so both allocate the same way.
//! - apply's own phases are timed from its `--json` event lines as they
//!   arrive (checks, the one authenticated write pass, commit).
//! - Peak RSS is GNU time's `%M` for each run (see [`timed`] for why not
//!   our own wait4).
//! - Best of N wall time per row (least disturbed by other load on a shared
//!   machine); rows alternate between the tools so drift hits both.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

pub(crate) const MIB: u64 = 1 << 20;

struct Opts {
    sizes_mib: Vec<u64>,
    /// Sizes of the zero-payload images whose peak RSS is measured.
    rss_mib: Vec<u64>,
    runs: usize,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Self> {
        let mut o = Opts {
            sizes_mib: vec![256, 1024],
            rss_mib: vec![256, 1024, 4096],
            runs: 2,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => {
                    o.sizes_mib = vec![64];
                    o.rss_mib = vec![64];
                    o.runs = 1;
                }
                "--rss-mib" => {
                    o.rss_mib = it
                        .next()
                        .context("--rss-mib needs a list like 256,1024,4096")?
                        .split(',')
                        .map(|s| s.parse().context("--rss-mib"))
                        .collect::<Result<_>>()?;
                }
                "--runs" => {
                    o.runs = it
                        .next()
                        .and_then(|v| v.parse().ok())
                        .context("--runs needs a positive integer")?;
                }
                "--sizes-mib" => {
                    o.sizes_mib = it
                        .next()
                        .context("--sizes-mib needs a list like 256,1024")?
                        .split(',')
                        .map(|s| s.parse().context("--sizes-mib"))
                        .collect::<Result<_>>()?;
                }
                _ => bail!(
                    "usage: cargo xtask bench apply [--quick] [--runs N] [--sizes-mib 256,1024] [--rss-mib 256,1024,4096]"
                ),
            }
        }
        o.runs = o.runs.max(1);
        Ok(o)
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Sample {
    pub(crate) wall: Duration,
    pub(crate) max_rss_kib: u64,
    /// (seconds since start, JSON line) for fwpack --json runs.
    pub(crate) lines: Vec<(Duration, String)>,
}

impl Sample {
    /// Seconds from the `phase` event `from` to the next phase event.
    fn phase_secs(&self, from: &str) -> Option<f64> {
        let phases: Vec<(Duration, &str)> = self
            .lines
            .iter()
            .filter(|(_, l)| l.contains("\"event\":\"phase\""))
            .map(|(t, l)| (*t, l.as_str()))
            .collect();
        let i = phases
            .iter()
            .position(|(_, l)| l.contains(&format!("\"phase\":\"{from}\"")))?;
        let end = phases.get(i + 1).map_or(self.wall, |p| p.0);
        Some((end - phases[i].0).as_secs_f64())
    }

    pub(crate) fn result_field(&self, key: &str) -> Option<u64> {
        let l = &self
            .lines
            .iter()
            .find(|(_, l)| l.contains("\"event\":\"result\""))?
            .1;
        let at = l.find(&format!("\"{key}\":"))? + key.len() + 3;
        l[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }
}

pub fn run(sh: &Shell, args: &[String]) -> Result<()> {
    let opts = Opts::parse(args)?;
    let work = crate::target_dir().join("bench-apply");
    fs::create_dir_all(&work)?;
    cmd!(sh, "cargo build --release -p fwpack").run()?;
    let fwpack = work.join("fwpack");
    fs::copy(crate::target_dir().join("release/fwpack"), &fwpack)
        .context("copying the release fwpack")?;
    let sh_work = sh.clone();
    sh_work.change_dir(&work);
    if !work.join("k.pem").exists() {
        quiet(
            Command::new(&fwpack)
                .current_dir(&work)
                .args(["keygen", "-o", "k.pem"]),
        )?;
    }
    print_machine(sh, &opts, &work);

    let mut rows = Vec::new();
    for &size in &opts.sizes_mib {
        let payload = random_payload(&work, size, 1)?;
        let image = stamp(&fwpack, &work, &payload, size, 2)?;
        warm(&payload)?;
        warm(&image)?;
        let mut dd = Vec::new();
        let mut plain = Vec::new();
        let mut verify = Vec::new();
        for _ in 0..opts.runs {
            dd.push(run_dd(&work, &payload)?);
            plain.push(run_apply(&fwpack, &work, &image, size, &[])?);
            verify.push(run_apply(
                &fwpack,
                &work,
                &image,
                size,
                &["--verify-writes"],
            )?);
        }
        rows.push((size, best(dd), best(plain), best(verify)));
        let _ = fs::remove_file(work.join("target.img"));
        let _ = fs::remove_file(work.join("dd.out"));
    }
    print_rows(&rows);

    let size = opts.sizes_mib[0];
    minimize(&fwpack, &work, size, opts.runs)?;
    let _ = fs::remove_file(work.join("target.img"));
    rss_by_size(sh, &fwpack, &work, &opts.rss_mib)?;
    Ok(())
}

/// Peak RSS of `fwpack apply` and of the device updater's `apply`
/// command (host build, same engine) for images of zeros (sparse
/// payloads; the images themselves are real files): memory must not grow
/// with the image.
fn rss_by_size(sh: &Shell, fwpack: &Path, work: &Path, sizes: &[u64]) -> Result<()> {
    cmd!(
        sh,
        "cargo build --release -p fwpack-updater --bin fwpack-updater"
    )
    .run()?;
    let updater = work.join("fwpack-updater");
    fs::copy(crate::target_dir().join("release/fwpack-updater"), &updater)
        .context("copying the release fwpack-updater")?;
    println!("\npeak RSS applying an image of zeros (uncompressed), MiB:");
    println!("{:>7} {:>12} {:>16}", "image", "fwpack", "fwpack-updater");
    for &size in sizes {
        let payload = work.join(format!("zeros-{size}M.bin"));
        if !fs::metadata(&payload).is_ok_and(|m| m.len() == size * MIB) {
            File::create(&payload)?.set_len(size * MIB)?;
        }
        let image = stamp_named(fwpack, work, &payload, size, 2, "zeros")?;
        let cli = run_apply(fwpack, work, &image, size, &[])?;
        new_target(fwpack, work, size)?;
        let dev = timed(Command::new(&updater).current_dir(work).args([
            "apply",
            path(&image),
            "--target",
            "target.img",
            "--key",
            "k.pub.pem",
            "--json",
        ]))?;
        println!(
            "{:>6}M {:>12.1} {:>16.1}",
            size,
            cli.max_rss_kib as f64 / 1024.0,
            dev.max_rss_kib as f64 / 1024.0
        );
        let _ = fs::remove_file(&image);
        let _ = fs::remove_file(work.join("target.img"));
    }
    Ok(())
}

pub(crate) fn best(v: Vec<Sample>) -> Sample {
    let rss = v.iter().map(|s| s.max_rss_kib).max().unwrap_or(0);
    let mut b = v.into_iter().min_by_key(|s| s.wall).unwrap_or_default();
    b.max_rss_kib = rss;
    b
}

fn mbps(size_mib: u64, d: Duration) -> f64 {
    (size_mib * MIB) as f64 / 1e6 / d.as_secs_f64()
}

fn print_rows(rows: &[(u64, Sample, Sample, Sample)]) {
    println!();
    println!(
        "{:>6}  {:<32} {:>8} {:>8} {:>8} {:>10}   apply phases",
        "size", "what", "wall s", "MB/s", "vs dd", "peak RSS"
    );
    for (size, dd, plain, verify) in rows {
        let dd_mbps = mbps(*size, dd.wall);
        println!(
            "{:>5}M  {:<32} {:>8.2} {:>8.0} {:>8} {:>10}",
            size,
            "dd bs=1M oflag=direct conv=fsync",
            dd.wall.as_secs_f64(),
            dd_mbps,
            "1.00",
            format!("{} KiB", dd.max_rss_kib)
        );
        for (name, s) in [
            ("fwpack apply", plain),
            ("fwpack apply --verify-writes", verify),
        ] {
            let m = mbps(*size, s.wall);
            println!(
                "{:>5}M  {:<32} {:>8.2} {:>8.0} {:>8.2} {:>10}   check {:.2} s, write (one pass) {:.2} s, commit {:.3} s",
                size,
                name,
                s.wall.as_secs_f64(),
                m,
                m / dd_mbps,
                format!("{} KiB", s.max_rss_kib),
                s.phase_secs("check").unwrap_or(f64::NAN),
                s.phase_secs("write").unwrap_or(f64::NAN),
                s.phase_secs("commit").unwrap_or(f64::NAN),
            );
        }
    }
    if rows.len() > 1 {
        let rss: Vec<String> = rows
            .iter()
            .map(|(s, _, p, v)| format!("{s} MiB: {}/{} KiB", p.max_rss_kib, v.max_rss_kib))
            .collect();
        println!(
            "peak RSS of fwpack apply (plain/verify) by image size: {}",
            rss.join(", ")
        );
    }
}

/// Re-flash of a slot that holds image v2 with v3, in which 1% of the
/// 4 KiB blocks differ: plain vs `--minimize-writes`.
fn minimize(fwpack: &Path, work: &Path, size: u64, runs: usize) -> Result<()> {
    let p2 = random_payload(work, size, 1)?;
    let p3 = work.join(format!("changed-{size}M.bin"));
    let mut data = fs::read(&p2)?;
    let blocks = data.len() / 4096;
    let mut changed = 0;
    for b in (0..blocks).step_by(100) {
        data[b * 4096 + 17] ^= 0xa5;
        changed += 1;
    }
    fs::write(&p3, &data)?;
    drop(data);
    let v2 = stamp(fwpack, work, &p2, size, 2)?;
    let v3 = stamp_named(fwpack, work, &p3, size, 3, "v3-changed")?;
    warm(&v3)?;
    let mut rows: Vec<(&str, Sample)> = Vec::new();
    for (name, extra) in [
        ("plain", &[][..]),
        ("--minimize-writes", &["--minimize-writes"][..]),
    ] {
        let mut v = Vec::new();
        for _ in 0..runs {
            // The slot holds v2 (applied, pending); v3 goes to the same slot.
            new_target(fwpack, work, size)?;
            quiet(Command::new(fwpack).current_dir(work).args([
                "apply",
                path(&v2),
                "--target",
                "target.img",
                "--key",
                "k.pub.pem",
            ]))?;
            v.push(timed(
                Command::new(fwpack)
                    .current_dir(work)
                    .args([
                        "apply",
                        path(&v3),
                        "--target",
                        "target.img",
                        "--key",
                        "k.pub.pem",
                        "--json",
                    ])
                    .args(extra),
            )?);
        }
        rows.push((name, best(v)));
    }
    println!();
    println!(
        "re-flash of a {size} MiB slot holding v2 with v3 ({changed} of {blocks} 4 KiB blocks changed):"
    );
    for (name, s) in &rows {
        println!(
            "  {:<18} wall {:>6.2} s, written {:>10} bytes, unchanged (skipped) {:>10} bytes, read {:>10} bytes, peak RSS {} KiB",
            name,
            s.wall.as_secs_f64(),
            s.result_field("bytes_written").unwrap_or(0),
            s.result_field("skipped_unchanged").unwrap_or(0),
            s.result_field("bytes_read_back").unwrap_or(0),
            s.max_rss_kib
        );
    }
    Ok(())
}

pub(crate) fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

pub(crate) fn new_target(fwpack: &Path, work: &Path, size: u64) -> Result<()> {
    let t = work.join("target.img");
    let _ = fs::remove_file(&t);
    // Slots just large enough, aligned to 1 MiB, after the state area
    // (copies at 512 KiB and 4.5 MiB).
    let slot = size + 1;
    let disk = 5 + 2 * slot;
    quiet(Command::new(fwpack).current_dir(work).args([
        "state",
        "init",
        "--target",
        "target.img",
        "--size",
        &format!("{disk}MiB"),
        "--board",
        "bench",
        "-g",
        &format!("system:A=5MiB+{slot}MiB,B={}MiB+{slot}MiB", 5 + slot),
        "--active-version",
        "1",
    ]))
}

fn run_apply(
    fwpack: &Path,
    work: &Path,
    image: &Path,
    size: u64,
    extra: &[&str],
) -> Result<Sample> {
    new_target(fwpack, work, size)?;
    sync();
    timed(
        Command::new(fwpack)
            .current_dir(work)
            .args([
                "apply",
                path(image),
                "--target",
                "target.img",
                "--key",
                "k.pub.pem",
                "--json",
            ])
            .args(extra),
    )
}

pub(crate) fn run_dd(work: &Path, payload: &Path) -> Result<Sample> {
    let out = work.join("dd.out");
    let _ = fs::remove_file(&out);
    sync();
    timed(
        Command::new("dd")
            .arg(format!("if={}", payload.display()))
            .arg(format!("of={}", out.display()))
            .args(["bs=1M", "oflag=direct", "conv=fsync", "status=none"]),
    )
}

pub(crate) fn sync() {
    let _ = Command::new("sync").status();
}

pub(crate) fn quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Runs `cmd` under GNU time, timestamping its stdout lines. Peak RSS
/// comes from `time -f %M`, not from our own wait4: a child's ru_maxrss
/// starts from the RSS of the process image it replaced at execve (Linux
/// carries the old mm's high-water mark over), which would be this
/// xtask's, not the tool's. `time` is small, so its own share stays below
/// any tool's real peak.
pub(crate) fn timed(cmd: &mut Command) -> Result<Sample> {
    const TAG: &str = "FWBENCH_MAXRSS_KIB=";
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped.arg("-f").arg(format!("{TAG}%M"));
    wrapped.arg(cmd.get_program()).args(cmd.get_args());
    if let Some(d) = cmd.get_current_dir() {
        wrapped.current_dir(d);
    }
    let t0 = Instant::now();
    let mut child = wrapped
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {wrapped:?} (GNU time: Debian package `time`)"))?;
    let mut lines = Vec::new();
    if let Some(out) = child.stdout.take() {
        for l in BufReader::new(out).lines() {
            lines.push((t0.elapsed(), l?));
        }
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait()?;
    let wall = t0.elapsed();
    if !status.success() {
        bail!("{cmd:?} failed ({status}):\n{err}");
    }
    let max_rss_kib = err
        .lines()
        .find_map(|l| l.strip_prefix(TAG))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no peak RSS from GNU time in:\n{err}"))?;
    Ok(Sample {
        wall,
        max_rss_kib,
        lines,
    })
}

pub(crate) fn random_payload(work: &Path, size_mib: u64, seed: u64) -> Result<PathBuf> {
    let path = work.join(format!("random-{size_mib}M-s{seed}.bin"));
    if fs::metadata(&path).is_ok_and(|m| m.len() == size_mib * MIB) {
        return Ok(path);
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::io::BufWriter::with_capacity(MIB as usize, File::create(&tmp)?);
    let mut state: u64 = 0x5eed_f00d ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for _ in 0..size_mib * MIB / 8 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        f.write_all(&(z ^ (z >> 31)).to_le_bytes())?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    fs::rename(&tmp, &path)?;
    Ok(path)
}

fn stamp(fwpack: &Path, work: &Path, payload: &Path, size: u64, version: u64) -> Result<PathBuf> {
    stamp_named(fwpack, work, payload, size, version, &format!("v{version}"))
}

pub(crate) fn stamp_named(
    fwpack: &Path,
    work: &Path,
    payload: &Path,
    size: u64,
    version: u64,
    name: &str,
) -> Result<PathBuf> {
    let out = work.join(format!("{name}-{size}M.fwi"));
    if out.exists() && fs::metadata(&out)?.modified()? >= fs::metadata(payload)?.modified()? {
        return Ok(out);
    }
    quiet(Command::new(fwpack).current_dir(work).args([
        "stamp",
        "--board",
        "bench",
        "--version",
        &version.to_string(),
        "-s",
        &format!("rootfs={},target=system", payload.display()),
        "-o",
        path(&out),
        "--key",
        "k.pem",
    ]))?;
    Ok(out)
}

/// Median of `v` (NaN when empty).
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Median, min and max of `v`.
pub(crate) fn span(v: &[f64]) -> (f64, f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(v), min, max)
}

pub(crate) fn warm(p: &Path) -> Result<()> {
    let mut f = File::open(p)?;
    std::io::copy(&mut f, &mut std::io::sink())?;
    Ok(())
}

/// "CPU model, N cores" of this machine, for the benches' headers.
pub(crate) fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores")
}

/// The 1, 5 and 15 minute load averages.
pub(crate) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn print_machine(sh: &Shell, opts: &Opts, work: &Path) {
    let fs_line = cmd!(sh, "df -hT {work}")
        .read()
        .ok()
        .and_then(|s| s.lines().nth(1).map(str::to_string))
        .unwrap_or_default();
    println!("== cargo xtask bench apply ==");
    println!("machine: {}; load average {}", machine(), loadavg());
    println!("target file system: {fs_line}");
    println!(
        "sizes {:?} MiB, best of {} run(s); fresh sparse target file per run",
        opts.sizes_mib, opts.runs
    );
}
