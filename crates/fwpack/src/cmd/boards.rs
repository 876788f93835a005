//! `fwpack boards`: the board configurations fwpack knows.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::installed;

#[derive(Args)]
pub struct BoardsArgs {
    /// Directory of board YAML files instead of the built-in ones
    /// [env: FWPACK_CONFIGS].
    #[arg(long)]
    configs: Option<PathBuf>,
    /// Print one board's YAML config, e.g. as the start of a custom board
    /// (save it, edit it, build with `fwpack build --config FILE`).
    #[arg(long, value_name = "NAME", conflicts_with = "json")]
    show: Option<String>,
    /// One JSON object per board on stdout.
    #[arg(long)]
    json: bool,
}

pub fn boards(args: BoardsArgs) -> Result<()> {
    let configs = installed::configs(args.configs);
    if let Some(name) = &args.show {
        let (text, _) = configs.text(name)?;
        print!("{text}");
        return Ok(());
    }
    for name in configs.list()? {
        let b = configs.find(&name)?;
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
