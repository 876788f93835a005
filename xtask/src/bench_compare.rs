//! `cargo xtask bench compare`: fwpack side by side with the tools a build
//! engineer would otherwise use, in one run: `dd` (the disk's limit),
//! `curl` (the link's), `find | cpio | gzip -9`, `sha256sum`, the `zstd`
//! and `gzip` CLIs, and, where present, fwup (`--fwup PATH` or `$FWUP`;
//! not in Debian), Debian's `rauc` (with squashfs-tools) and `casync`.
//! Then apply time and peak RSS against image size (`--scale-mib`), with
//! the container's own overhead (index pages) at each size.
//!
//! Method, and why:
//! - One repetition runs every row once, and within a row every tool once,
//!   in an order rotated per repetition: drift in the machine's load (a
//!   shared 2-core box) then hits every tool alike.
//! - A ratio is taken per repetition (the other tool's time / fwpack's, so
//!   above 1 fwpack is faster) and summarised by median, min and max;
//!   times likewise. No single best-of: the spread is part of the result.
//! - Inputs are made once and read again before each row (page cache:
//!   see [`Row::inputs`]; the initramfs tree is read by both tools alike), outputs go
//!   to `target/bench-compare/` on the target directory's file system;
//!   writers to files use O_DIRECT + fsync alike (dd `oflag=direct
//!   conv=fsync`, fwpack's own).
//! - Peak RSS is GNU time's `%M` ([`crate::bench_apply::timed`]).
//! - Writes `compare.json` (every sample) and `apply-scaling.svg` (time vs
//!   image size) next to the work files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::json;
use testkit::http::Nginx;
use xshell::{cmd, Shell};

use crate::bench_apply::{
    loadavg, machine, median, new_target, path, quiet, random_payload, run_dd, span, stamp_named,
    sync, timed, warm, Sample, MIB,
};

const USAGE: &str = "usage: cargo xtask bench compare [--quick] [--runs N] [--size-mib 256] \
[--big-mib 1024] [--scale-mib 256,1024,4096] [--fwup PATH] [--only WORD,...]";

struct Opts {
    runs: usize,
    size_mib: u64,
    big_mib: u64,
    scale_mib: Vec<u64>,
    fwup: Option<PathBuf>,
    /// Only the rows whose title contains one of these (and no scaling
    /// run): `--only verify,"ext4 image"` for the decode rows.
    only: Vec<String>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Self> {
        let mut o = Opts {
            runs: 5,
            size_mib: 256,
            big_mib: 1024,
            scale_mib: vec![256, 1024, 4096],
            fwup: std::env::var_os("FWUP").map(PathBuf::from),
            only: Vec::new(),
        };
        let mut it = args.iter();
        let num = |v: Option<&String>, what: &str| -> Result<u64> {
            v.and_then(|v| v.parse().ok())
                .with_context(|| format!("{what} needs a number\n{USAGE}"))
        };
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => {
                    o.runs = 1;
                    // The ext4 image holds a ~96 MB tree.
                    o.size_mib = 128;
                    o.big_mib = 256;
                    o.scale_mib = vec![64, 128];
                }
                "--runs" => o.runs = num(it.next(), "--runs")? as usize,
                "--size-mib" => o.size_mib = num(it.next(), "--size-mib")?,
                "--big-mib" => o.big_mib = num(it.next(), "--big-mib")?,
                "--scale-mib" => {
                    o.scale_mib = it
                        .next()
                        .context(USAGE)?
                        .split(',')
                        .map(|s| s.parse().context(USAGE))
                        .collect::<Result<_>>()?
                }
                "--fwup" => o.fwup = Some(PathBuf::from(it.next().context(USAGE)?)),
                "--only" => {
                    o.only = it
                        .next()
                        .context(USAGE)?
                        .split(',')
                        .map(str::to_string)
                        .collect();
                    o.scale_mib.clear();
                }
                _ => bail!("{USAGE}"),
            }
        }
        o.runs = o.runs.max(1);
        if o.size_mib < 128 {
            bail!("--size-mib must be at least 128: the ext4 payload holds a ~96 MB tree");
        }
        if let Some(f) = &o.fwup {
            if !f.is_file() {
                bail!("--fwup {}: no such file", f.display());
            }
        }
        Ok(o)
    }
}

type Run = Box<dyn FnMut() -> Result<Sample>>;

/// One contender in a row; `out` is measured for size after each run.
struct Tool {
    name: String,
    run: Run,
    out: Option<PathBuf>,
    secs: Vec<f64>,
    rss_kib: Vec<u64>,
    size: Option<u64>,
}

fn tool(name: &str, out: Option<PathBuf>, run: impl FnMut() -> Result<Sample> + 'static) -> Tool {
    Tool {
        name: name.to_string(),
        run: Box::new(run),
        out,
        secs: Vec::new(),
        rss_kib: Vec::new(),
        size: None,
    }
}

/// A row: `tools[0]` is fwpack, the rest are compared against it.
struct Row {
    what: String,
    /// Read again before the row runs in each repetition: the machine's
    /// proactive reclaim (DAMON) evicts files left cold for a while, and a
    /// tool that then reads from the disk is timed on the wrong thing
    /// (dd was up to 0.1 s slower at 256 MiB that way).
    inputs: Vec<PathBuf>,
    tools: Vec<Tool>,
}

fn on_path(t: &str) -> bool {
    crate::deps::on_path(t)
}

fn sh_c(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script);
    c
}

pub fn run(sh: &Shell, args: &[String]) -> Result<()> {
    let opts = Opts::parse(args)?;
    for t in [
        "dd",
        "curl",
        "nginx",
        "cpio",
        "gzip",
        "zstd",
        "mkfs.ext4",
        "sha256sum",
        "taskset",
    ] {
        if !on_path(t) {
            bail!("`{t}` is missing: run `cargo xtask deps`");
        }
    }
    let work = crate::target_dir().join("bench-compare");
    let www = work.join("www");
    fs::create_dir_all(&www).with_context(|| format!("creating {}", www.display()))?;
    cmd!(sh, "cargo build --release -p fwpack").run()?;
    let fwpack = work.join("fwpack");
    let built = crate::target_dir().join("release/fwpack");
    fs::copy(&built, &fwpack).with_context(|| format!("copying {}", built.display()))?;
    if !work.join("k.pem").exists() {
        quiet(
            Command::new(&fwpack)
                .current_dir(&work)
                .args(["keygen", "-o", "k.pem"]),
        )?;
    }
    let load_before = loadavg();

    // Inputs: incompressible payloads for the write paths, an ext4 image
    // of a text/object-like tree for the compressors.
    let size = opts.size_mib;
    let rand = random_payload(&work, size, 1)?;
    let big = random_payload(&work, opts.big_mib, 1)?;
    let ext4 = ext4_payload(&work, size)?;
    let img = stamp_named(&fwpack, &work, &rand, size, 2, "plain")?;
    let big_img = stamp_named(&fwpack, &work, &big, opts.big_mib, 2, "plain")?;
    let zimg = stamp_with(&fwpack, &work, &ext4, "zstd", &work.join("ext4-zstd.fwi"))?;
    let gimg = stamp_with(&fwpack, &work, &ext4, "gzip", &work.join("ext4-gzip.fwi"))?;
    let url_path = {
        let dst = www.join("plain.fwi");
        let _ = fs::remove_file(&dst);
        fs::hard_link(&img, &dst).or_else(|_| fs::copy(&img, &dst).map(|_| ()))?;
        "/plain.fwi"
    };
    for p in [&rand, &big, &ext4, &img, &big_img, &zimg, &gimg] {
        warm(p)?;
    }
    let nginx = Nginx::start(&www).context("starting nginx")?;
    let url = nginx.url(url_path);
    let fwup = opts.fwup.clone().or_else(|| which("fwup"));
    let fw = match &fwup {
        Some(f) => Some(fwup_image(f, &work, &ext4, "ext4.fw")?),
        None => None,
    };
    // fwup has no "store" level: its image of the random payload is what
    // it verifies without compression gains (deflate stores such blocks).
    let fw_rand = match &fwup {
        Some(f) => Some(fwup_image(f, &work, &rand, "random.fw")?),
        None => None,
    };
    let rauc = on_path("rauc") && on_path("mksquashfs");
    if rauc {
        rauc_inputs(&work, &ext4)?;
    }
    let casync = on_path("casync");

    // `fwpack apply SOURCE` (a file or a URL) to a fresh target.
    let apply =
        |source: &str, mib: u64, extra: &'static [&'static str], cpus: Option<&'static str>| {
            let (fwpack, work, source) = (fwpack.clone(), work.clone(), source.to_string());
            move || -> Result<Sample> {
                new_target(&fwpack, &work, mib)?;
                sync();
                let mut c = match cpus {
                    Some(list) => {
                        let mut c = Command::new("taskset");
                        c.args(["-c", list]).arg(&fwpack);
                        c
                    }
                    None => Command::new(&fwpack),
                };
                c.current_dir(&work)
                    .args([
                        "apply",
                        &source,
                        "--target",
                        "target.img",
                        "--key",
                        "k.pub.pem",
                    ])
                    .args(extra);
                timed(&mut c)
            }
        };
    let dd = |payload: &Path| {
        let (work, payload) = (work.clone(), payload.to_path_buf());
        move || run_dd(&work, &payload)
    };
    let shell = |script: String| move || timed(&mut sh_c(&script));

    let mut rows: Vec<Row> = Vec::new();
    let mut one = |what: String, inputs: &[&PathBuf], tools: Vec<Tool>| {
        let inputs = inputs.iter().map(|p| p.to_path_buf()).collect();
        rows.push(Row {
            what,
            inputs,
            tools,
        });
    };
    one(
        format!("apply {size} MiB to a file"),
        &[&img, &rand],
        vec![
            tool("fwpack apply", None, apply(path(&img), size, &[], None)),
            tool("dd oflag=direct conv=fsync", None, dd(&rand)),
            tool(
                "fwpack apply, one core (taskset -c 0)",
                None,
                apply(path(&img), size, &[], Some("0")),
            ),
        ],
    );
    one(
        format!("apply {} MiB to a file", opts.big_mib),
        &[&big_img, &big],
        vec![
            tool(
                "fwpack apply",
                None,
                apply(path(&big_img), opts.big_mib, &[], None),
            ),
            tool("dd oflag=direct conv=fsync", None, dd(&big)),
        ],
    );
    one(
        format!("apply --verify-writes {size} MiB"),
        &[&img, &rand],
        vec![
            tool(
                "fwpack apply --verify-writes",
                None,
                apply(path(&img), size, &["--verify-writes"], None),
            ),
            tool("dd oflag=direct conv=fsync", None, dd(&rand)),
            // The disk's floor for writing every byte and reading it back
            // (the two share its bandwidth): what `--verify-writes` is
            // measured against beside the write alone.
            tool("dd write, then dd iflag=direct read", None, {
                let (out, rand) = (work.join("dd-readback.out"), rand.clone());
                move || {
                    let _ = fs::remove_file(&out);
                    sync();
                    timed(&mut sh_c(&format!(
                        "dd if='{p}' of='{o}' bs=1M oflag=direct conv=fsync status=none && \
                         dd if='{o}' of=/dev/null bs=1M iflag=direct status=none",
                        o = out.display(),
                        p = rand.display()
                    )))
                }
            }),
        ],
    );
    for (codec, image) in [("zstd", &zimg), ("gzip", &gimg)] {
        let mut row = vec![
            tool(
                &format!("fwpack apply ({codec} chunks)"),
                None,
                apply(path(image), size, &[], None),
            ),
            tool("dd of the decoded bytes", None, dd(&ext4)),
        ];
        if let (Some(f), Some(fw)) = (&fwup, &fw) {
            let out = work.join("fwup-target.img");
            row.push(tool(
                "fwup -a (deflate; incl. its sync)",
                None,
                shell(format!(
                    "rm -f '{o}' && '{f}' -a -q -d '{o}' -i '{fw}' -t complete && sync",
                    o = out.display(),
                    f = f.display(),
                    fw = fw.display()
                )),
            ));
        }
        let mut inputs = vec![image, &ext4];
        inputs.extend(&fw);
        one(
            format!("apply of a {codec} ext4 image ({size} MiB decoded)"),
            &inputs,
            row,
        );
    }
    one(
        format!("HTTP apply {size} MiB from nginx, --seed none"),
        &[&img],
        vec![
            tool(
                "fwpack apply URL",
                None,
                apply(&url, size, &["--seed", "none"], None),
            ),
            tool("curl -o /dev/null", None, shell(format!("curl -sS --fail -o /dev/null '{url}'"))),
            tool(
                "curl | dd oflag=direct",
                None,
                shell(format!(
                    "curl -sS --fail '{url}' | dd of='{}' bs=1M iflag=fullblock oflag=direct conv=fsync status=none",
                    work.join("curl-dd.out").display()
                )),
            ),
        ],
    );

    // Initramfs: the tree of bench_initramfs, gzip -9 on both sides.
    let tree = work.join("tree");
    crate::bench_initramfs::generate(&tree)?;
    let recipe = work.join("initramfs.yaml");
    fs::write(
        &recipe,
        "require_init: false\ntrees:\n  - {src: tree, dst: /}\n",
    )?;
    let ours_cpio = work.join("ours.cpio.gz");
    let ref_cpio = work.join("reference.cpio.gz");
    one(
        "initramfs, gzip -9".to_string(),
        &[],
        vec![
            tool("fwpack initramfs", Some(ours_cpio.clone()), {
                let (fwpack, recipe, out) = (fwpack.clone(), recipe.clone(), ours_cpio.clone());
                move || {
                    timed(
                        Command::new(&fwpack)
                            .arg("initramfs")
                            .arg("--recipe")
                            .arg(&recipe)
                            .arg("-o")
                            .arg(&out)
                            .args(["--compression", "gzip", "--level", "9"]),
                    )
                }
            }),
            tool(
                "find | cpio -H newc | gzip -9",
                Some(ref_cpio.clone()),
                shell(format!(
                    "cd '{}' && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -9 > '{}'",
                    tree.display(),
                    ref_cpio.display()
                )),
            ),
        ],
    );

    // Stamp and verify of the ext4 image.
    for codec in ["zstd", "gzip"] {
        let out = work.join(format!("stamp-{codec}.fwi"));
        let mut tools = vec![tool(
            &format!("fwpack stamp --compress {codec}"),
            Some(out.clone()),
            {
                let (fwpack, work, ext4, out) =
                    (fwpack.clone(), work.clone(), ext4.clone(), out.clone());
                move || stamp_timed(&fwpack, &work, &ext4, codec, &out)
            },
        )];
        let cli = work.join(format!("cli.{codec}"));
        let cli_cmd = match codec {
            "zstd" => format!(
                "zstd -q -f -3 -T1 '{}' -o '{}'",
                ext4.display(),
                cli.display()
            ),
            _ => format!("gzip -9 -c '{}' > '{}'", ext4.display(), cli.display()),
        };
        let cli_name = if codec == "zstd" {
            "zstd -3 -T1 (CLI)"
        } else {
            "gzip -9 (CLI)"
        };
        tools.push(tool(cli_name, Some(cli), shell(cli_cmd)));
        if codec == "gzip" {
            if let Some(f) = &fwup {
                let o = work.join("fwup-out.fw");
                tools.push(tool(
                    "fwup -c (deflate -9)",
                    Some(o.clone()),
                    shell(format!(
                        "SOURCE_DATE_EPOCH=0 '{}' -c -9 -f '{}' -o '{}'",
                        f.display(),
                        work.join("ext4.fw.conf").display(),
                        o.display()
                    )),
                ));
            }
        }
        if codec == "zstd" {
            if rauc {
                let o = work.join("bundle.raucb");
                tools.push(tool(
                    "rauc bundle (squashfs)",
                    Some(o.clone()),
                    shell(format!(
                        "cd '{w}' && rm -f '{o}' && rauc bundle --cert rauc-cert.pem --key rauc-key.pem rauc-in '{o}' >/dev/null",
                        w = work.display(),
                        o = o.display()
                    )),
                ));
            }
            if casync {
                let idx = work.join("payload.caibx");
                tools.push(tool(
                    "casync make (store)",
                    None,
                    shell(format!(
                        "cd '{w}' && rm -rf store.castr '{i}' && casync make --store=store.castr '{i}' '{p}' >/dev/null",
                        w = work.display(),
                        i = idx.display(),
                        p = ext4.display()
                    )),
                ));
            }
        }
        one(format!("stamp {size} MiB ext4, {codec}"), &[&ext4], tools);
    }
    for (label, image) in [("uncompressed", &img), ("zstd", &zimg), ("gzip", &gimg)] {
        let mut tools = vec![
            tool("fwpack verify", None, {
                let (fwpack, work, image) = (fwpack.clone(), work.clone(), image.clone());
                move || {
                    timed(Command::new(&fwpack).current_dir(&work).args([
                        "verify",
                        path(&image),
                        "--key",
                        "k.pub.pem",
                    ]))
                }
            }),
            tool(
                "sha256sum of the image",
                None,
                shell(format!("sha256sum '{}' >/dev/null", image.display())),
            ),
        ];
        // fwup -V of its image of the same payload: the random one for
        // the uncompressed row, the ext4 one (deflate) for the others.
        let fw_same = if label == "uncompressed" {
            &fw_rand
        } else {
            &fw
        };
        if let (Some(f), Some(fw)) = (&fwup, fw_same) {
            tools.push(tool(
                "fwup -V",
                None,
                shell(format!("'{}' -V -q -i '{}'", f.display(), fw.display())),
            ));
        }
        let mut inputs = vec![image];
        inputs.extend(fw_same);
        one(format!("verify {size} MiB, {label}"), &inputs, tools);
    }

    if !opts.only.is_empty() {
        rows.retain(|r| opts.only.iter().any(|w| r.what.contains(w.as_str())));
    }
    println!("== cargo xtask bench compare ==");
    println!("{}", machine());
    println!(
        "load average at the start: {load_before}; {} repetition(s), rows and tools interleaved; fwup: {}; rauc: {}; casync: {}",
        opts.runs,
        fwup.as_ref().map_or("not found (--fwup PATH)".to_string(), |f| f.display().to_string()),
        if rauc { "yes" } else { "not installed" },
        if casync { "yes" } else { "not installed" },
    );
    for rep in 0..opts.runs {
        for row in rows.iter_mut() {
            for p in &row.inputs {
                warm(p)?;
            }
            let n = row.tools.len();
            for k in 0..n {
                let t = &mut row.tools[(k + rep) % n];
                let s = (t.run)().with_context(|| format!("{}: {}", row.what, t.name))?;
                t.secs.push(s.wall.as_secs_f64());
                t.rss_kib.push(s.max_rss_kib);
                if let Some(o) = &t.out {
                    t.size = Some(
                        fs::metadata(o)
                            .with_context(|| o.display().to_string())?
                            .len(),
                    );
                }
            }
        }
    }
    drop(nginx);
    let load_after = loadavg();
    let table = print_table(&rows);
    println!("load average at the end: {load_after}");

    let scaling = scale(&fwpack, &work, &opts)?;
    let json = json!({
        "machine": machine(),
        "load_before": load_before,
        "load_after": load_after,
        "runs": opts.runs,
        "rows": table,
        "scaling": scaling,
    });
    let out = work.join("compare.json");
    fs::write(&out, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", out.display()))?;
    let svg = work.join("apply-scaling.svg");
    plot(&svg, &scaling)?;
    println!("\nwrote {} and {}", out.display(), svg.display());
    Ok(())
}

/// Prints the table and returns it as JSON rows.
fn print_table(rows: &[Row]) -> Vec<serde_json::Value> {
    println!(
        "\n{:<44} {:<40} {:>9} {:>15} {:>9} {:>22} {:>12}",
        "work", "tool", "median s", "min-max s", "RSS MiB", "fwpack × (med, min-max)", "size ratio"
    );
    let mut out = Vec::new();
    for row in rows {
        let ours = &row.tools[0];
        let mut tools_json = Vec::new();
        for (i, t) in row.tools.iter().enumerate() {
            let (med, min, max) = span(&t.secs);
            let rss = t.rss_kib.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
            let ratios: Vec<f64> = t.secs.iter().zip(&ours.secs).map(|(p, o)| p / o).collect();
            let (rmed, rmin, rmax) = span(&ratios);
            let size_ratio = match (ours.size, t.size) {
                (Some(a), Some(b)) if i > 0 && b > 0 => Some(a as f64 / b as f64),
                _ => None,
            };
            println!(
                "{:<44} {:<40} {:>9.3} {:>15} {:>9.1} {:>22} {:>12}",
                if i == 0 { row.what.as_str() } else { "" },
                t.name,
                med,
                format!("{min:.3}-{max:.3}"),
                rss,
                if i == 0 {
                    String::new()
                } else {
                    format!("{rmed:.2} ({rmin:.2}-{rmax:.2})")
                },
                size_ratio.map_or(String::new(), |r| format!("{r:.3}")),
            );
            tools_json.push(json!({
                "tool": t.name,
                "secs": t.secs,
                "median_s": med,
                "min_s": min,
                "max_s": max,
                "peak_rss_kib": t.rss_kib.iter().copied().max().unwrap_or(0),
                "output_bytes": t.size,
                "fwpack_speed_ratio": if i == 0 { None } else { Some(json!({"per_run": ratios, "median": rmed, "min": rmin, "max": rmax})) },
                "fwpack_size_ratio": size_ratio,
            }));
        }
        out.push(json!({"work": row.what, "tools": tools_json}));
    }
    println!("(fwpack × = the tool's time / fwpack's, per repetition: above 1 fwpack is faster; size ratio = fwpack's output / the tool's)");
    out
}

/// Apply time, peak RSS and the container's overhead against image size.
fn scale(fwpack: &Path, work: &Path, opts: &Opts) -> Result<Vec<serde_json::Value>> {
    println!(
        "\napply vs image size (random payload, uncompressed; median of {} interleaved with dd):",
        opts.runs
    );
    println!(
        "{:>9} {:>12} {:>10} {:>9} {:>12} {:>18}",
        "image", "fwpack s", "dd s", "fwpack ×", "peak RSS", "index+head bytes"
    );
    let mut out = Vec::new();
    for &mib in &opts.scale_mib {
        let payload = random_payload(work, mib, 1)?;
        let image = stamp_named(fwpack, work, &payload, mib, 2, "plain")?;
        let overhead = fs::metadata(&image)?.len().saturating_sub(mib * MIB);
        let (mut ours, mut dds, mut rss) = (Vec::new(), Vec::new(), 0u64);
        for _ in 0..opts.runs {
            warm(&image)?;
            warm(&payload)?;
            new_target(fwpack, work, mib)?;
            sync();
            let s = timed(Command::new(fwpack).current_dir(work).args([
                "apply",
                path(&image),
                "--target",
                "target.img",
                "--key",
                "k.pub.pem",
            ]))?;
            ours.push(s.wall.as_secs_f64());
            rss = rss.max(s.max_rss_kib);
            dds.push(run_dd(work, &payload)?.wall.as_secs_f64());
        }
        let (o, d) = (median(&ours), median(&dds));
        println!(
            "{:>8}M {:>12.3} {:>10.3} {:>9.2} {:>8.1} MiB {:>11} ({:.3} %)",
            mib,
            o,
            d,
            d / o,
            rss as f64 / 1024.0,
            overhead,
            overhead as f64 * 100.0 / (mib * MIB) as f64
        );
        out.push(
            json!({"size_mib": mib, "fwpack_s": ours, "dd_s": dds, "fwpack_median_s": o,
            "dd_median_s": d, "peak_rss_kib": rss, "overhead_bytes": overhead}),
        );
        // Large inputs are not kept: 4 GiB payloads would fill small disks.
        if mib > 1024 {
            let _ = fs::remove_file(&payload);
            let _ = fs::remove_file(&image);
        }
    }
    let _ = fs::remove_file(work.join("target.img"));
    let _ = fs::remove_file(work.join("dd.out"));
    Ok(out)
}

fn plot(svg: &Path, scaling: &[serde_json::Value]) -> Result<()> {
    use plotters::prelude::*;
    let pts = |key: &str| -> Vec<(f64, f64)> {
        scaling
            .iter()
            .filter_map(|r| Some((r["size_mib"].as_f64()?, r[key].as_f64()?)))
            .collect()
    };
    let (ours, dd) = (pts("fwpack_median_s"), pts("dd_median_s"));
    let xmax = ours.iter().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let ymax = ours.iter().chain(&dd).map(|p| p.1).fold(0.1, f64::max) * 1.1;
    let root = SVGBackend::new(svg, (720, 420)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plotting {}: {e}", svg.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "apply to a file: time vs image size (median)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("image size, MiB")
        .y_desc("seconds")
        .draw()
        .map_err(|e| err(&e))?;
    for (name, data, color) in [
        ("fwpack apply", &ours, &RED),
        ("dd oflag=direct conv=fsync", &dd, &BLUE),
    ] {
        chart
            .draw_series(LineSeries::new(data.iter().copied(), color))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(data.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn stamp_timed(
    fwpack: &Path,
    work: &Path,
    payload: &Path,
    codec: &str,
    out: &Path,
) -> Result<Sample> {
    timed(Command::new(fwpack).current_dir(work).args([
        "stamp",
        "--board",
        "bench",
        "--version",
        "2",
        "-s",
        &format!("rootfs={},target=system", payload.display()),
        "--compress",
        codec,
        "-o",
        path(out),
        "--key",
        "k.pem",
    ]))
}

fn stamp_with(
    fwpack: &Path,
    work: &Path,
    payload: &Path,
    codec: &str,
    out: &Path,
) -> Result<PathBuf> {
    // Stamped again by each run's fwpack (a fresh copy, so newer than
    // any earlier image): the compressed images are the encoder's output,
    // and an image an older build made would time another encoder's
    // chunks in the apply and verify rows.
    let fresh = |p: &Path| fs::metadata(p).and_then(|m| m.modified());
    if !matches!((fresh(out), fresh(fwpack)), (Ok(img), Ok(bin)) if img >= bin) {
        stamp_timed(fwpack, work, payload, codec, out)?;
    }
    Ok(out.to_path_buf())
}

/// An ext4 image of `size` MiB holding bench_initramfs's tree (text,
/// object-like records, some random blobs), with a fixed UUID, hash seed
/// and clock so reruns compress alike.
fn ext4_payload(work: &Path, size: u64) -> Result<PathBuf> {
    let out = work.join(format!("ext4-{size}M.img"));
    if out.exists() {
        return Ok(out);
    }
    let tree = work.join("tree");
    crate::bench_initramfs::generate(&tree)?;
    let tmp = out.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    quiet(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-b",
                "4096",
                "-U",
                "0f3a7e57-0000-4000-8000-000000000001",
            ])
            .args([
                "-E",
                "hash_seed=0f3a7e57-0000-4000-8000-000000000002,root_owner=0:0",
            ])
            .arg("-d")
            .arg(&tree)
            .arg(&tmp)
            .arg(format!("{size}M"))
            .env("E2FSPROGS_FAKE_TIME", "1700000000"),
    )?;
    fs::rename(&tmp, &out)?;
    Ok(out)
}

/// `work/NAME`, fwup's image of `payload` (made once), from
/// `work/NAME.conf`, which the `fwup -c` row reuses.
fn fwup_image(fwup: &Path, work: &Path, payload: &Path, name: &str) -> Result<PathBuf> {
    let conf = work.join(format!("{name}.conf"));
    fs::write(
        &conf,
        format!(
            "file-resource rootfs.img {{\n    host-path = \"{}\"\n}}\n\
             task complete {{\n    on-resource rootfs.img {{ raw_write(0) }}\n}}\n",
            payload.display()
        ),
    )?;
    let out = work.join(name);
    if out.exists() {
        return Ok(out);
    }
    let tmp = work.join(format!("{name}.tmp"));
    quiet(
        Command::new(fwup)
            .args(["-c", "-f"])
            .arg(&conf)
            .arg("-o")
            .arg(&tmp)
            .env("SOURCE_DATE_EPOCH", "0"),
    )?;
    fs::rename(&tmp, &out)?;
    Ok(out)
}

/// A RAUC bundle input directory and a self-signed signing certificate.
fn rauc_inputs(work: &Path, payload: &Path) -> Result<()> {
    let dir = work.join("rauc-in");
    fs::create_dir_all(&dir)?;
    let img = dir.join("rootfs.img");
    if !img.exists() {
        fs::hard_link(payload, &img).or_else(|_| fs::copy(payload, &img).map(|_| ()))?;
    }
    fs::write(
        dir.join("manifest.raucm"),
        "[update]\ncompatible=bench\nversion=2\n\n[bundle]\nformat=verity\n\n[image.rootfs]\nfilename=rootfs.img\n",
    )?;
    if !work.join("rauc-cert.pem").exists() {
        quiet(Command::new("openssl").current_dir(work).args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "rauc-key.pem",
            "-out",
            "rauc-cert.pem",
            "-subj",
            "/CN=fwpack bench",
            "-days",
            "3650",
        ]))?;
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}
