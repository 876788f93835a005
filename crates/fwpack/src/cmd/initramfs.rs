//! `fwpack initramfs`: build a reproducible newc initramfs from a recipe, or
//! list an existing archive (plain, gzip or zstd).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use initramfs::{reader, Compression, Options, Recipe, Vars};

use crate::exit::{Classified, USAGE};

#[derive(Args)]
pub struct InitramfsArgs {
    /// Recipe (YAML) describing what goes into the archive.
    #[arg(
        long,
        short = 'r',
        value_name = "RECIPE",
        required_unless_present = "list"
    )]
    recipe: Option<PathBuf>,
    /// Output file; written to a temporary file and renamed only on success.
    #[arg(
        long,
        short = 'o',
        value_name = "FILE",
        required_unless_present = "list"
    )]
    output: Option<PathBuf>,
    /// Recipe variable (repeatable), substituted verbatim for `${NAME}`; a
    /// relative `src` resolves against the recipe's directory, so pass
    /// absolute paths, e.g. `--var UPDATER=$PWD/target/.../updater`.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Compression of the archive; the kernel needs the matching CONFIG_RD_*.
    #[arg(long, value_name = "CODEC", default_value = "gzip", value_parser = ["gzip", "zstd", "none"])]
    compression: String,
    /// Compression level (gzip 0-9, default 9; zstd 1-19, default 19).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    level: Option<i32>,
    /// Threads that compress (default: the cores available). gzip is
    /// deflated in 128 KiB blocks, each primed with the 32 KiB before it, and
    /// zstd runs in its multithreaded mode: the archive is byte-identical for
    /// any number.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// List an existing archive (plain, gzip or zstd) instead of building
    /// one. A name ends at its first NUL, as the kernel unpacks it. Names and
    /// symlink targets are escaped, in text and JSON alike, so the exact
    /// bytes can be recovered and a hostile archive cannot drive the
    /// terminal: `\\` for a backslash, `\n` `\r` `\t`, `\xNN` for any other
    /// control byte, DEL or byte that is not valid UTF-8, `\u{N}` for a
    /// non-printable Unicode character; everything else is verbatim.
    #[arg(long, value_name = "ARCHIVE", conflicts_with_all = ["recipe", "output", "vars", "level", "jobs"])]
    list: Option<PathBuf>,
    /// Machine-readable output: one JSON object per entry (with --list) or a summary.
    #[arg(long)]
    json: bool,
}

fn usage(message: String) -> anyhow::Error {
    anyhow!(Classified {
        code: USAGE,
        message
    })
}

pub fn initramfs(args: InitramfsArgs) -> Result<()> {
    if let Some(archive) = &args.list {
        return list(archive, args.json);
    }
    let (Some(recipe_path), Some(output)) = (&args.recipe, &args.output) else {
        return Err(usage(
            "--recipe and --output are required to build an archive".into(),
        ));
    };
    let mut vars = Vars::new();
    for v in &args.vars {
        vars.set_assignment(v)
            .map_err(|m| usage(format!("--var {m}")))?;
    }
    let compression = Compression::from_name(&args.compression, args.level)
        .map_err(|m| usage(format!("--compression/--level: {m}")))?;
    let options = Options::from_env()?;
    let recipe = Recipe::load(recipe_path, &vars)
        .with_context(|| format!("recipe {}", recipe_path.display()))?;
    let (mut builder, modules) = recipe
        .build(options)
        .with_context(|| format!("recipe {}", recipe_path.display()))?;
    if let Some(jobs) = args.jobs {
        builder.jobs(usize::from(jobs));
    }
    let summary = builder
        .write_file(output, compression)
        .with_context(|| format!("writing {}", output.display()))?;
    let codec = match compression {
        Compression::None => "none".to_string(),
        Compression::Gzip { level } => format!("gzip -{level}"),
        Compression::Zstd { level } => format!("zstd -{level}"),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let mods = modules.as_ref();
        let line = serde_json::json!({
            "output": output,
            "entries": summary.entries,
            "uncompressed_bytes": summary.uncompressed_bytes,
            "bytes": summary.compressed_bytes,
            "compression": codec,
            "mtime": options.mtime,
            "modules": mods.map(|m| m.load_list()).unwrap_or_default(),
            "builtin_modules": mods.map(|m| m.builtin.clone()).unwrap_or_default(),
        });
        writeln!(out, "{line}")?;
    } else {
        writeln!(
            out,
            "{}: {} entries, {} bytes ({} uncompressed, {codec})",
            output.display(),
            summary.entries,
            summary.compressed_bytes,
            summary.uncompressed_bytes
        )?;
        if let Some(m) = &modules {
            let names: Vec<&str> = m.modules.iter().map(|m| m.name.as_str()).collect();
            writeln!(
                out,
                "modules ({}), load order: {}",
                m.release,
                names.join(" ")
            )?;
            if !m.builtin.is_empty() {
                writeln!(
                    out,
                    "built into the kernel (nothing to load): {}",
                    m.builtin.join(" ")
                )?;
            }
        }
    }
    Ok(())
}

fn list(archive: &std::path::Path, json: bool) -> Result<()> {
    let f = crate::cmd::open_input(archive)?;
    let mut r =
        initramfs::Reader::new(f).with_context(|| format!("reading {}", archive.display()))?;
    let mut out = std::io::stdout().lock();
    while let Some(e) = r
        .next_entry()
        .with_context(|| format!("reading {}", archive.display()))?
    {
        if json {
            let kind = match e.file_type() {
                initramfs::newc::mode::S_IFDIR => "dir",
                initramfs::newc::mode::S_IFREG => "file",
                initramfs::newc::mode::S_IFLNK => "symlink",
                initramfs::newc::mode::S_IFCHR => "char",
                initramfs::newc::mode::S_IFBLK => "block",
                initramfs::newc::mode::S_IFIFO => "fifo",
                initramfs::newc::mode::S_IFSOCK => "socket",
                _ => "unknown",
            };
            let dev = matches!(kind, "char" | "block").then(|| [e.rdev_major, e.rdev_minor]);
            let line = serde_json::json!({
                "name": reader::display_path(&e),
                "type": kind,
                "mode": format!("{:04o}", e.mode & 0o7777),
                "uid": e.uid,
                "gid": e.gid,
                "nlink": e.nlink,
                "ino": e.ino,
                "size": e.size,
                "mtime": e.mtime,
                "rdev": dev,
                "target": e.link_target_bytes.as_deref().map(reader::escape_display),
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}", reader::ls_line(&e))?;
        }
    }
    Ok(())
}
