//! Completions and man pages, generated from the clap definitions so they
//! can never drift from `--help`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};

#[derive(Args)]
pub struct CompletionsArgs {
    /// Shell to generate completions for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// Directory to write the man pages into (created if missing).
    #[arg(long, short = 'o', default_value = "man")]
    out_dir: PathBuf,
}

pub fn completions(args: CompletionsArgs) -> Result<()> {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "fwpack", &mut std::io::stdout());
    Ok(())
}

pub fn man(args: ManArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    clap_mangen::generate_to(crate::Cli::command(), &args.out_dir)
        .with_context(|| format!("writing man pages to {}", args.out_dir.display()))?;
    Ok(())
}
