//! `fwpack disk`: write a bootable disk image from a layout file, or show
//! the partition table of an existing image.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Args;
use diskimage::{ImageReport, LayoutConfig};

use crate::exit::{Classified, USAGE};

#[derive(Args)]
pub struct DiskArgs {
    /// Layout (YAML): table, seed, partitions and their contents. Relative
    /// paths in it are relative to the file.
    #[arg(
        long,
        short = 'l',
        value_name = "LAYOUT",
        required_unless_present = "inspect"
    )]
    layout: Option<PathBuf>,
    /// Image to write; built in a temporary file and renamed only on success.
    /// Its block map for `bmaptool copy` goes beside it as IMAGE.bmap.
    #[arg(long, short = 'o', value_name = "IMAGE", required_unless_present_any = ["inspect", "dry_run"])]
    output: Option<PathBuf>,
    /// Check the layout and show where everything would go, writing nothing.
    #[arg(long, requires = "layout", conflicts_with = "output")]
    dry_run: bool,
    /// Show the partition table (and FAT labels) of an existing image.
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["layout", "output", "dry_run"])]
    inspect: Option<PathBuf>,
    /// Machine-readable output: one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn disk(args: DiskArgs) -> Result<()> {
    if let Some(image) = &args.inspect {
        let mut f = crate::cmd::open_input_or_disk(image)?;
        let report = diskimage::inspect_reader(&mut f, image)?;
        return print(image, &report, args.json, "");
    }
    let Some(layout_path) = &args.layout else {
        return Err(anyhow!(Classified {
            code: USAGE,
            message: "--layout or --inspect is required".into(),
        }));
    };
    let mut layout = LayoutConfig::load(layout_path)?;
    layout.fat_timestamp = diskimage::source_date_epoch()?;
    if args.dry_run {
        let report = diskimage::plan(&layout)
            .with_context(|| format!("layout {}", layout_path.display()))?;
        return print(layout_path, &report, args.json, " (plan)");
    }
    let Some(output) = &args.output else {
        return Err(anyhow!(Classified {
            code: USAGE,
            message: "--output is required".into(),
        }));
    };
    let report = diskimage::write_image(&layout, output)
        .with_context(|| format!("layout {}", layout_path.display()))?;
    // The block map beside it, for `bmaptool copy`.
    let mut bmap = output.as_os_str().to_owned();
    bmap.push(".bmap");
    diskimage::bmap::write(output, &report.written, Path::new(&bmap))?;
    print(output, &report, args.json, "")
}

fn print(name: &Path, r: &ImageReport, json: bool, note: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, r)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{}{note}: {}, {}, disk id {}",
        name.display(),
        r.table.as_str().to_uppercase(),
        human(r.size_bytes),
        r.disk_id
    )?;
    let rows: Vec<[String; 8]> = r
        .partitions
        .iter()
        .map(|p| {
            let fs = p
                .filesystem
                .as_ref()
                .map(|f| format!("{} {}", f.kind, f.label).trim_end().to_string())
                .unwrap_or_default();
            [
                p.number.to_string(),
                p.start_lba.to_string(),
                human(p.size_bytes),
                p.type_id.clone(),
                if p.bootable {
                    "*".into()
                } else {
                    String::new()
                },
                p.partuuid.clone(),
                fs,
                p.name.clone(),
            ]
        })
        .collect();
    let head = [
        "#", "start", "size", "type", "boot", "partuuid", "fs", "name",
    ];
    let mut widths = head.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        s.join("  ").trim_end().to_string()
    };
    writeln!(out, "  {}", line(head.to_vec()))?;
    for row in &rows {
        writeln!(out, "  {}", line(row.iter().map(String::as_str).collect()))?;
    }
    for w in &r.warnings {
        eprintln!("fwpack: warning: {w}");
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= size {
            return if bytes.is_multiple_of(size) {
                format!("{} {unit}", bytes / size)
            } else {
                format!("{:.1} {unit}", bytes as f64 / size as f64)
            };
        }
    }
    format!("{bytes} B")
}
