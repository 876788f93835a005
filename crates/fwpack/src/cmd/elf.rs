//! `fwpack check-elf`: the ELF policy checks of the build pipeline, on
//! demand. Prints every file's findings, then fails with POLICY (7) if any
//! file was refused or FORMAT (4) if any was not a parseable ELF; a path
//! that cannot be read, or is not a regular file, fails with IO (3).
//!
//! Strings from the file (interpreter, libraries, section names) are made
//! printable by elfcheck itself; the paths, which can come from an archive
//! or a directory listing, are escaped here.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use elfcheck::{Machine, Policy, Report, Severity};

use super::escape_display;

#[derive(Args)]
pub struct CheckElfArgs {
    /// ELF files to check (all are checked; the exit status covers all).
    /// Regular files only: a directory, FIFO, socket or device is refused
    /// (exit 3) without being read.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Required machine: aarch64, x86_64, riscv64, arm (32-bit), or an
    /// e_machine number. Default: any.
    #[arg(long, value_name = "M")]
    machine: Option<Machine>,
    /// Largest acceptable file size: bytes, or with a K/M/G (KiB/MiB/GiB)
    /// suffix. A larger file is refused without being read past the
    /// budget (and not parsed). Without a budget, files over 1 GiB are
    /// refused the same way.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    budget: Option<u64>,
    /// Treat symbol tables and debug sections as errors, not warnings.
    #[arg(long)]
    require_stripped: bool,
    /// Accept an interpreter and needed libraries (e.g. to inspect host
    /// tools); device binaries must be static.
    #[arg(long)]
    allow_dynamic: bool,
    /// One JSON object per file per line instead of text.
    #[arg(long)]
    json: bool,
}

pub fn check_elf(args: CheckElfArgs) -> Result<()> {
    let policy = Policy {
        machine: args.machine,
        size_budget: args.budget,
        require_stripped: args.require_stripped,
        require_static: !args.allow_dynamic,
    };
    let reports = elfcheck::check_files(&args.files, &policy)?;
    let mut out = std::io::stdout().lock();
    for r in &reports {
        if args.json {
            serde_json::to_writer(&mut out, r)?;
            writeln!(out)?;
        } else {
            write_human(&mut out, r)?;
        }
    }
    out.flush().context("writing report")?;
    elfcheck::require_pass(&reports).map_err(escape_failures)?;
    Ok(())
}

/// The failure summary goes to stderr and names each failed file.
fn escape_failures(e: elfcheck::Error) -> elfcheck::Error {
    let esc = |failed: Vec<(String, String)>| {
        failed
            .into_iter()
            .map(|(file, why)| (escape_display(file.as_bytes()), why))
            .collect()
    };
    match e {
        elfcheck::Error::Malformed { failed, total } => elfcheck::Error::Malformed {
            failed: esc(failed),
            total,
        },
        elfcheck::Error::Rejected { failed, total } => elfcheck::Error::Rejected {
            failed: esc(failed),
            total,
        },
        other => other,
    }
}

fn write_human(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    let verdict = match r.verdict() {
        elfcheck::Verdict::Pass => "ok",
        elfcheck::Verdict::Rejected => "FAIL",
        elfcheck::Verdict::Malformed => "INVALID",
    };
    let name = r.path.as_deref().map_or_else(
        || r.display_name(),
        |p| escape_display(p.as_os_str().as_bytes()),
    );
    write!(out, "{name}: {verdict}")?;
    if let Some(f) = &r.facts {
        write!(
            out,
            " ({}, {}, {}, {}, {}, {} bytes)",
            f.machine,
            f.class,
            f.elf_type,
            f.linkage,
            match f.stripped {
                Some(true) => "stripped",
                Some(false) => "not stripped",
                None => "strip state unknown",
            },
            f.file_size
        )?;
    }
    writeln!(out)?;
    for finding in &r.findings {
        let tag = match finding.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(out, "  {tag}: {}", finding.message)?;
    }
    Ok(())
}

/// `1048576`, `512K`, `1M`, `1MiB`, `2G`: binary multiples, as budgets for
/// flash and RAM are usually given.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 1048576, 512K, 1MiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        _ => return Err(format!("unknown size unit in {s:?} (use K, M or G)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("1T").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
