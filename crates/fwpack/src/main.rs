//! `fwpack`: the command line. Parses arguments, calls the libraries, turns
//! their typed errors into messages and exit codes. Libraries never print.

mod cmd;
mod exit;

use clap::{Parser, Subcommand};

/// Build, sign and safely apply firmware for embedded Linux boards.
#[derive(Parser)]
#[command(name = "fwpack", version, propagate_version = true, after_long_help = exit::TABLE)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    Completions(cmd::docs::CompletionsArgs),
    /// Write man pages (fwpack.1 and one per subcommand) into a directory.
    Man(cmd::docs::ManArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Completions(a) => cmd::docs::completions(a),
        Command::Man(a) => cmd::docs::man(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::from(exit::OK),
        Err(err) => {
            eprintln!("fwpack: error: {err:#}");
            std::process::ExitCode::from(exit::classify(&err))
        }
    }
}
