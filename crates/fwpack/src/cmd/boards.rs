//! `fwpack boards`: the shipped board configurations.

use std::path::{Path, PathBuf};

use anyhow::Result;
use board::Board;
use clap::Args;

#[derive(Args)]
pub struct BoardsArgs {
    /// Directory of board YAML files.
    #[arg(long, default_value_os_t = default_configs_dir())]
    configs: PathBuf,
    /// One JSON object per board on stdout.
    #[arg(long)]
    json: bool,
}

/// `configs/` of the source tree fwpack was built from, unless
/// `FWPACK_CONFIGS` points elsewhere (installed copies, Buildroot).
pub fn default_configs_dir() -> PathBuf {
    std::env::var_os("FWPACK_CONFIGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs"))
}

pub fn boards(args: BoardsArgs) -> Result<()> {
    for name in board::list(&args.configs)? {
        let b = Board::find(&args.configs, &name)?;
        if args.json {
            println!("{}", serde_json::to_string(&b)?);
        } else {
            println!(
                "{:<14} {:<54} {:<28} {} MiB RAM",
                b.name, b.description, b.updater.rust_target, b.ram.total_mib
            );
        }
    }
    Ok(())
}
