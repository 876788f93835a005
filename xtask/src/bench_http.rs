//! `cargo xtask bench http`: `fwpack apply URL` from Debian's nginx on
//! 127.0.0.1 against `curl -o /dev/null` of the same URL and `dd` of the
//! payload to a file (the two things an HTTP apply does: fetch and write),
//! in the same run, over http and over https (a private CA made here with
//! openssl, as the field tests do); delta fetches of an ext4 root filesystem with 1 %,
//! 10 % and 50 % of its files rewritten against a full fetch of the same
//! image; peak RSS while streaming 256 MiB and 1 GiB (http and https).
//!
//! Method, and why:
//! - Same conventions as `bench apply` (xtask/src/bench_apply.rs): release
//!   binaries copied aside, work files under `target/bench-http/` on the
//!   disk file system, inputs read once before timing (page cache), a
//!   fresh sparse target per run, best and median of N wall time, GNU
//!   time's `%M` for peak RSS, rows alternating between the tools. The
//!   full fetches also give CPU seconds (the tool's user + sys, and
//!   nginx's while it ran) and fwpack against the slower of dd and curl
//!   per run: on 2 shared cores the wall clock follows the load. A row
//!   of the same apply from the image file (no network) shows what the
//!   HTTP path itself costs. The copied
//!   binaries are dropped from the page cache once (`uncache`), so that
//!   their peak RSS is that of a binary loaded from disk, not of one just
//!   written.
//! - nginx is testkit's (`testkit::http::Nginx`: one process, loopback
//!   port, its own config); bytes fetched are the access log's
//!   `$body_bytes_sent`, not the client's own count.
//! - The ext4 images are made by `mkfs.ext4 -d` from a tree of 1 MiB files
//!   with a fixed UUID, hash seed and clock (`E2FSPROGS_FAKE_TIME`), so
//!   two versions differ where their files differ plus the metadata that
//!   must change; "x % changed" is x % of the file system's size in
//!   rewritten files.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use testkit::http::Nginx;
use testkit::tls::PrivateCa;
use xshell::{cmd, Shell};

use crate::bench_apply::{
    best, median, new_target, path, quiet, random_payload, run_dd, span, stamp_named, sync, timed,
    warm, Sample, MIB,
};

struct Opts {
    size_mib: u64,
    rss_mib: Vec<u64>,
    pcts: Vec<u64>,
    runs: usize,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Self> {
        let mut o = Opts {
            size_mib: 256,
            rss_mib: vec![256, 1024],
            pcts: vec![1, 10, 50],
            runs: 3,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => {
                    o.size_mib = 64;
                    o.rss_mib = vec![64];
                    o.pcts = vec![1];
                    o.runs = 1;
                }
                "--runs" => {
                    o.runs = it
                        .next()
                        .and_then(|v| v.parse().ok())
                        .context("--runs needs a positive integer")?;
                }
                "--size-mib" => {
                    o.size_mib = it
                        .next()
                        .and_then(|v| v.parse().ok())
                        .context("--size-mib needs a number")?;
                }
                "--rss-mib" => {
                    o.rss_mib = list(it.next(), "--rss-mib")?;
                }
                "--pcts" => {
                    o.pcts = list(it.next(), "--pcts")?;
                }
                _ => bail!(
                    "usage: cargo xtask bench http [--quick] [--runs N] [--size-mib 256] [--rss-mib 256,1024] [--pcts 1,10,50]"
                ),
            }
        }
        o.runs = o.runs.max(1);
        Ok(o)
    }
}

fn list(v: Option<&String>, what: &str) -> Result<Vec<u64>> {
    v.with_context(|| format!("{what} needs a list like 1,10,50"))?
        .split(',')
        .map(|s| s.parse().with_context(|| what.to_string()))
        .collect()
}

pub fn run(sh: &Shell, args: &[String]) -> Result<()> {
    let opts = Opts::parse(args)?;
    for tool in ["nginx", "curl", "mkfs.ext4", "dd"] {
        if testkit::tools::find(tool).is_none() {
            bail!("`{tool}` is missing: run `cargo xtask deps`");
        }
    }
    let work = crate::target_dir().join("bench-http");
    let www = work.join("www");
    fs::create_dir_all(&www)?;
    cmd!(sh, "cargo build --release -p fwpack -p fwpack-updater").run()?;
    let fwpack = work.join("fwpack");
    fs::copy(crate::target_dir().join("release/fwpack"), &fwpack)
        .context("copying the release fwpack")?;
    let updater = work.join("fwpack-updater");
    fs::copy(crate::target_dir().join("release/fwpack-updater"), &updater)
        .context("copying the release fwpack-updater")?;
    uncache(&fwpack)?;
    uncache(&updater)?;
    if !work.join("k.pem").exists() {
        quiet(
            Command::new(&fwpack)
                .current_dir(&work)
                .args(["keygen", "-o", "k.pem"]),
        )?;
    }
    let nginx = Nginx::start(&www).context("starting nginx")?;
    print_machine(&opts, &work);

    full(&fwpack, &work, &www, &nginx, &opts, None)?;
    let tls = if testkit::tools::find("openssl").is_some() {
        // ECDSA P-256, as the field tests make it: rustls and curl then
        // negotiate TLS 1.3 with AES-256-GCM.
        let srv = PrivateCa::new(&work)
            .and_then(|ca| ca.issue("srv", &["127.0.0.1"], testkit::tls::EC_P256))
            .context("making a private CA with openssl")?;
        // nginx 1.22 offers TLS 1.3 only when told to (1.23.4 made it a
        // default); TLS 1.3 is what current servers and CDNs speak.
        let tls =
            Nginx::start_tls_with(&www, &srv.cert, &srv.key, "ssl_protocols TLSv1.2 TLSv1.3;")
                .context("starting nginx with TLS")?;
        full(&fwpack, &work, &www, &tls, &opts, Some("ca.pem"))?;
        Some(tls)
    } else {
        println!("\nno openssl: the https rows are skipped");
        None
    };
    delta(&fwpack, &work, &www, &nginx, &opts)?;
    rss(&fwpack, &updater, &work, &www, &nginx, tls.as_ref(), &opts)?;
    Ok(())
}

/// Drops `p` from the page cache (written back first), so that it is
/// next loaded as an installed binary is after a boot: by page faults and
/// readahead. A file just written (the copies above) sits in the page
/// cache in large folios, which the kernel maps whole around each page a
/// process touches: measured 2026-12-07, 0.3-0.6 MiB more peak RSS for
/// the same binary and run (docs/BENCHMARKS.md, "Peak RSS over HTTP").
fn uncache(p: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(p)?;
    f.sync_all()?;
    // SAFETY: an open descriptor; the call only advises the kernel.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        bail!("posix_fadvise({}): error {rc}", p.display());
    }
    Ok(())
}

/// Puts `image` on the server as `name` (hard link: no copy, same bytes).
fn publish(www: &Path, image: &Path, name: &str) -> Result<String> {
    let dst = www.join(name);
    let _ = fs::remove_file(&dst);
    if fs::hard_link(image, &dst).is_err() {
        fs::copy(image, &dst)?;
    }
    Ok(format!("/{name}"))
}

fn apply_url(fwpack: &Path, work: &Path, url: &str, extra: &[&str]) -> Result<Sample> {
    timed(
        Command::new(fwpack)
            .current_dir(work)
            .args([
                "apply",
                url,
                "--target",
                "target.img",
                "--key",
                "k.pub.pem",
                "--json",
            ])
            .args(extra),
    )
}

/// Body bytes nginx sent while `f` ran, and the requests and the
/// distinct connections (`$connection`) they came on.
fn fetched<T>(nginx: &Nginx, f: impl FnOnce() -> Result<T>) -> Result<(T, u64, (usize, usize))> {
    let before = nginx.access_log().len();
    let t = f()?;
    let log = nginx.access_log();
    let new = log.get(before..).unwrap_or_default();
    let sent = new.iter().map(|e| e.body_bytes_sent).sum();
    let mut conns: Vec<u64> = new.iter().map(|e| e.connection).collect();
    conns.sort_unstable();
    conns.dedup();
    Ok((t, sent, (new.len(), conns.len())))
}

/// A run with the CPU seconds (user + sys) of the command and of nginx
/// while it ran: on 2 cores shared with other jobs the wall clock follows
/// the load, CPU seconds much less.
type Timed = (Sample, f64, f64);

/// Runs `f` (one child command, waited for) and measures its CPU time
/// (`RUSAGE_CHILDREN` counts every descendant waited for: the tool under
/// GNU time) and nginx's (`/proc/PID/stat`).
fn cpu(nginx: &Nginx, f: impl FnOnce() -> Result<Sample>) -> Result<Timed> {
    let (c0, n0) = (children_cpu(), nginx_cpu(nginx));
    let s = f()?;
    let (c1, n1) = (children_cpu(), nginx_cpu(nginx));
    Ok((s, c1 - c0, n1 - n0))
}

fn children_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) } != 0 {
        return 0.0;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// nginx's user + sys seconds so far (0 when its pid file is unreadable).
fn nginx_cpu(nginx: &Nginx) -> f64 {
    let pid_file = nginx.access_log_path().with_file_name("nginx.pid");
    let Some(pid) = fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return 0.0;
    };
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 14th and 15th of the line, the 12th and 13th after it.
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    f.iter().sum::<f64>() / tick
}

fn mbps(bytes: u64, s: &Sample) -> f64 {
    bytes as f64 / 1e6 / s.wall.as_secs_f64()
}

/// The full apply against dd and curl, over http, or over https when
/// `ca` names the private CA (curl `--cacert`, fwpack `--ca`).
fn full(
    fwpack: &Path,
    work: &Path,
    www: &Path,
    nginx: &Nginx,
    opts: &Opts,
    ca: Option<&str>,
) -> Result<()> {
    let size = opts.size_mib;
    let payload = random_payload(work, size, 1)?;
    let image = stamp_named(fwpack, work, &payload, size, 2, "http")?;
    let url = nginx.url(&publish(www, &image, "full.fwi")?);
    warm(&payload)?;
    warm(&image)?;
    let (mut dd, mut curl, mut apply) = (Vec::new(), Vec::new(), Vec::new());
    let mut file = Vec::new();
    let mut sent = 0;
    let mut conns = (0, 0);
    for _ in 0..opts.runs {
        dd.push(cpu(nginx, || run_dd(work, &payload))?);
        let mut c = Command::new("curl");
        c.current_dir(work)
            .args(["-sS", "--fail", "-o", "/dev/null"]);
        if let Some(ca) = ca {
            c.args(["--cacert", ca]);
        }
        curl.push(cpu(nginx, || timed(c.arg(&url)))?);
        new_target(fwpack, work, size)?;
        sync();
        let mut extra = vec!["--seed", "none"];
        if let Some(ca) = ca {
            extra.extend(["--ca", ca]);
        }
        let (s, n, c) = fetched(nginx, || {
            cpu(nginx, || apply_url(fwpack, work, &url, &extra))
        })?;
        sent = n;
        conns = c;
        apply.push(s);
        // The same image from the file, no network: what the engine
        // costs, so that the HTTP path's share is the difference.
        new_target(fwpack, work, size)?;
        sync();
        file.push(cpu(nginx, || {
            apply_url(fwpack, work, path(&image), &["--seed", "none"])
        })?);
    }
    let _ = fs::remove_file(work.join("dd.out"));
    let bytes = size * MIB;
    // Per run, fwpack against the slower of that run's dd and curl; the
    // median of those is less at the mercy of one lucky run than a ratio
    // of bests.
    let per_run: Vec<f64> = (0..opts.runs)
        .map(|i| {
            let slower = dd[i].0.wall.max(curl[i].0.wall);
            slower.as_secs_f64() / apply[i].0.wall.as_secs_f64()
        })
        .collect();
    let rows = [
        ("dd bs=1M oflag=direct conv=fsync (payload)", dd),
        ("curl -o /dev/null URL", curl),
        ("fwpack apply URL --seed none", apply),
        ("fwpack apply FILE --seed none (no network)", file),
    ]
    .map(|(name, v)| {
        let med = |f: &dyn Fn(&Timed) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
        let (wall, cpu_s, srv) = (
            med(&|t| t.0.wall.as_secs_f64()),
            med(&|t| t.1),
            med(&|t| t.2),
        );
        (
            name,
            best(v.into_iter().map(|t| t.0).collect()),
            wall,
            cpu_s,
            srv,
        )
    });
    let slower = mbps(bytes, &rows[0].1).min(mbps(bytes, &rows[1].1));
    println!(
        "\nfull apply of {size} MiB (random payload, uncompressed image of {} bytes) from nginx on 127.0.0.1 over {}, best and median of {} (load average {}):",
        fs::metadata(&image)?.len(),
        if ca.is_some() { "https (TLS 1.3, AES-256-GCM, private CA)" } else { "http" },
        opts.runs,
        crate::bench_apply::loadavg()
    );
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10}",
        "what", "best s", "median s", "MB/s", "CPU s", "nginx s", "peak RSS", "vs slower"
    );
    for (name, s, wall, cpu_s, srv) in &rows {
        println!(
            "{:<44} {:>8.3} {:>8.3} {:>8.0} {:>8.3} {:>8.3} {:>10} {:>10.2}",
            name,
            s.wall.as_secs_f64(),
            wall,
            mbps(bytes, s),
            cpu_s,
            srv,
            format!("{} KiB", s.max_rss_kib),
            mbps(bytes, s) / slower
        );
    }
    println!(
        "CPU s: the tool's user + sys (median); nginx s: nginx's user + sys while it ran (median)"
    );
    let (med, min, max) = span(&per_run);
    println!(
        "fwpack vs the slower of dd and curl, per run: median {med:.2} (min {min:.2}, max {max:.2})"
    );
    println!(
        "fwpack fetched {sent} bytes in {} requests on {} connections (nginx access log)",
        conns.0, conns.1
    );
    Ok(())
}

/// A deterministic 1 MiB file: `seed` picks the content.
fn write_file(p: &Path, seed: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(File::create(p)?);
    let mut rng = testkit::rootfs::SplitMix64(seed);
    for _ in 0..MIB / 8 {
        f.write_all(&rng.next_u64().to_le_bytes())?;
    }
    f.into_inner().map_err(|e| e.into_error())?;
    File::options()
        .write(true)
        .open(p)?
        .set_modified(fixed_time())?;
    Ok(())
}

/// The trees' mtimes (mkfs.ext4 -d copies them into the inodes).
fn fixed_time() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)
}

/// An ext4 image of `size_mib` whose tree holds 1 MiB files filling about
/// three quarters of it; `pct` % of the file system's size in files get
/// other content (0: the base version).
fn ext4(work: &Path, size_mib: u64, pct: u64) -> Result<PathBuf> {
    let img = work.join(format!("rootfs-{size_mib}M-{pct}pct.ext4"));
    if img.exists() {
        return Ok(img);
    }
    let tree = work.join("ext4-tree");
    if tree.exists() {
        fs::remove_dir_all(&tree)?;
    }
    fs::create_dir_all(tree.join("data"))?;
    let files = size_mib * 3 / 4;
    let changed = (size_mib * pct).div_ceil(100).min(files);
    let step = files.checked_div(changed).unwrap_or(0);
    for i in 0..files {
        let rewritten = step > 0 && i % step == 0 && i / step < changed;
        let seed = if rewritten { 1_000_000 + i } else { i };
        write_file(&tree.join(format!("data/f{i:04}")), seed)?;
    }
    for d in [tree.join("data"), tree.clone()] {
        File::open(&d)?.set_modified(fixed_time())?;
    }
    let tmp = img.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let uuid = "9a2f4c1e-5b7d-4e3a-8c6f-0d1e2f3a4b5c";
    quiet(
        Command::new("mkfs.ext4")
            .env("E2FSPROGS_FAKE_TIME", "1700000000")
            .args(["-q", "-F", "-b", "4096", "-U", uuid])
            .arg(format!("-Ehash_seed={uuid}"))
            .arg("-d")
            .arg(&tree)
            .arg(&tmp)
            .arg(format!("{size_mib}M")),
    )?;
    fs::rename(&tmp, &img)?;
    fs::remove_dir_all(&tree)?;
    Ok(img)
}

/// Chunks of `chunk` bytes that differ between two equal-sized files
/// (streamed: the files may be larger than memory).
fn differing_chunks(a: &Path, b: &Path, chunk: usize) -> Result<(u64, u64)> {
    use std::io::Read;
    let (mut a, mut b) = (File::open(a)?, File::open(b)?);
    let (mut x, mut y) = (vec![0u8; chunk], vec![0u8; chunk]);
    let (mut diff, mut total) = (0, 0);
    loop {
        let n = read_full(&mut a, &mut x)?;
        let m = read_full(&mut b, &mut y)?;
        if n == 0 && m == 0 {
            return Ok((diff, total));
        }
        total += 1;
        if x.get(..n) != y.get(..m) {
            diff += 1;
        }
    }
    fn read_full(f: &mut File, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match f.read(&mut buf[got..])? {
                0 => break,
                n => got += n,
            }
        }
        Ok(got)
    }
}

fn delta(fwpack: &Path, work: &Path, www: &Path, nginx: &Nginx, opts: &Opts) -> Result<()> {
    let size = opts.size_mib;
    let base = ext4(work, size, 0)?;
    let v1 = stamp_named(fwpack, work, &base, size, 2, "ext4-base")?;
    println!(
        "\ndelta apply of a {size} MiB ext4 root filesystem (256 KiB chunks), seed = the active slot holding the base version, best of {}:",
        opts.runs
    );
    println!(
        "{:>8} {:>16} {:<22} {:>8} {:>14} {:>14} {:>10}",
        "changed", "chunks differ", "what", "wall s", "fetched B", "from seed B", "vs full"
    );
    for &pct in &opts.pcts {
        let changed = ext4(work, size, pct)?;
        let (diff, total) = differing_chunks(&base, &changed, 256 * 1024)?;
        let v2 = stamp_named(fwpack, work, &changed, size, 3, &format!("ext4-{pct}pct"))?;
        let url = nginx.url(&publish(www, &v2, &format!("ext4-{pct}.fwi"))?);
        warm(&v2)?;
        let mut rows: Vec<(&str, Sample, u64)> = Vec::new();
        for (name, extra) in [
            ("full (--seed none)", &["--seed", "none"][..]),
            ("delta (default seed)", &[][..]),
        ] {
            let mut samples = Vec::new();
            let mut sent = 0;
            for _ in 0..opts.runs {
                // B holds the base version and is the active slot.
                new_target(fwpack, work, size)?;
                quiet(Command::new(fwpack).current_dir(work).args([
                    "apply",
                    path(&v1),
                    "--target",
                    "target.img",
                    "--key",
                    "k.pub.pem",
                ]))?;
                quiet(Command::new(fwpack).current_dir(work).args([
                    "mark-good",
                    "--target",
                    "target.img",
                ]))?;
                sync();
                let (s, n, _) = fetched(nginx, || apply_url(fwpack, work, &url, extra))?;
                sent = n;
                samples.push(s);
            }
            rows.push((name, best(samples), sent));
        }
        let full_wall = rows[0].1.wall.as_secs_f64();
        let full_sent = rows[0].2.max(1);
        for (name, s, sent) in &rows {
            println!(
                "{:>7}% {:>16} {:<22} {:>8.2} {:>14} {:>14} {:>10}",
                pct,
                format!("{diff}/{total}"),
                name,
                s.wall.as_secs_f64(),
                sent,
                s.result_field("bytes_from_seed").unwrap_or(0),
                format!(
                    "{:.2}x t, {:.3}x B",
                    s.wall.as_secs_f64() / full_wall,
                    *sent as f64 / full_sent as f64
                )
            );
        }
    }
    let _ = fs::remove_file(work.join("target.img"));
    Ok(())
}

fn rss(
    fwpack: &Path,
    updater: &Path,
    work: &Path,
    www: &Path,
    nginx: &Nginx,
    tls: Option<&Nginx>,
    opts: &Opts,
) -> Result<()> {
    println!("\npeak RSS streaming an image of zeros from nginx (--seed none), MiB:");
    println!(
        "{:>7} {:>16} {:>22} {:>22}",
        "image", "fwpack apply", "fwpack apply https", "fwpack-updater apply"
    );
    for &size in &opts.rss_mib {
        let payload = work.join(format!("zeros-{size}M.bin"));
        if !fs::metadata(&payload).is_ok_and(|m| m.len() == size * MIB) {
            File::create(&payload)?.set_len(size * MIB)?;
        }
        let image = stamp_named(fwpack, work, &payload, size, 2, "zeros")?;
        let url = nginx.url(&publish(www, &image, &format!("zeros-{size}.fwi"))?);
        new_target(fwpack, work, size)?;
        let cli = apply_url(fwpack, work, &url, &["--seed", "none"])?;
        let https = match tls {
            Some(tls) => {
                new_target(fwpack, work, size)?;
                let url = tls.url(&format!("zeros-{size}.fwi"));
                let s = apply_url(fwpack, work, &url, &["--seed", "none", "--ca", "ca.pem"])?;
                format!("{:.1}", s.max_rss_kib as f64 / 1024.0)
            }
            None => "-".into(),
        };
        new_target(fwpack, work, size)?;
        let dev = timed(Command::new(updater).current_dir(work).args([
            "apply",
            &url,
            "--target",
            "target.img",
            "--key",
            "k.pub.pem",
            "--seed",
            "none",
            "--json",
        ]))?;
        println!(
            "{:>6}M {:>16.1} {:>22} {:>22.1}",
            size,
            cli.max_rss_kib as f64 / 1024.0,
            https,
            dev.max_rss_kib as f64 / 1024.0
        );
        let _ = fs::remove_file(www.join(format!("zeros-{size}.fwi")));
        let _ = fs::remove_file(&image);
        let _ = fs::remove_file(work.join("target.img"));
    }
    Ok(())
}

fn print_machine(opts: &Opts, work: &Path) {
    println!("== cargo xtask bench http ==");
    println!(
        "machine: {}; load average {}",
        crate::bench_apply::machine(),
        crate::bench_apply::loadavg()
    );
    println!(
        "work dir {}; {} MiB, best of {} run(s)",
        work.display(),
        opts.size_mib,
        opts.runs
    );
}
