//! `fwpack`: the command line. Parses arguments, calls the libraries, turns
//! their typed errors into messages and exit codes. Libraries never print.

mod cmd;
mod exit;
mod installed;

use clap::{Parser, Subcommand};

/// Build, sign and safely apply firmware for embedded Linux boards.
#[derive(Parser)]
#[command(name = "fwpack", version = env!("FWPACK_VERSION"), after_long_help = exit::TABLE)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an Ed25519 signing key pair (PEM, readable by openssl).
    Keygen(cmd::keys::KeygenArgs),
    /// Pack payload files into a firmware image (.fwi), optionally signing it.
    Stamp(cmd::image::StampArgs),
    /// Add a signature to an image: key file, external signer or detached signature.
    Sign(cmd::image::SignArgs),
    /// Check an image's signature, every chunk hash and the CRC chain, in one pass.
    Verify(cmd::image::VerifyArgs),
    /// Describe an image's header, segments and signatures.
    Inspect(cmd::image::InspectArgs),
    /// Check device binaries: static, right machine, W^X, stripped, size budget.
    CheckElf(cmd::elf::CheckElfArgs),
    /// Build a reproducible newc initramfs from a recipe, or list one (--list).
    Initramfs(cmd::initramfs::InitramfsArgs),
    /// Write a bootable disk image (MBR/GPT, FAT boot, raw slots) and its .bmap from a layout, or --inspect one.
    Disk(cmd::disk::DiskArgs),
    /// Build everything a board needs: checked updater, signed update.fwi,
    /// initramfs, boot files, sdcard.img (with sdcard.img.bmap and
    /// sdcard.img.zst for bmaptool) and manifest.json.
    Build(Box<cmd::build::BuildArgs>),
    /// List the board configurations `build` knows.
    Boards(cmd::boards::BoardsArgs),
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    Completions(cmd::docs::CompletionsArgs),
    /// Write man pages (fwpack.1 and one per subcommand) into a directory.
    Man(cmd::docs::ManArgs),
    /// Apply a signed image to the inactive A/B slot of a disk, safely and resumably.
    Apply(cmd::apply::ApplyArgs),
    /// Show a disk's slot layout, A/B boot state and apply journal.
    Status(cmd::apply::StatusArgs),
    /// Confirm the running slot as good (a pending slot becomes active).
    MarkGood(cmd::apply::MarkGoodArgs),
    /// Manage a disk's state area (`state init`).
    State(cmd::apply::StateArgs),
    /// Upload a signed image to a goosebit fleet server and roll it out
    /// or assign it to devices, through goosebit's management API.
    Publish(cmd::publish::PublishArgs),
}

fn main() -> std::process::ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(a) => cmd::keys::keygen(a),
        Command::Stamp(a) => cmd::image::stamp(a),
        Command::Sign(a) => cmd::image::sign(a),
        Command::Verify(a) => cmd::image::verify(a),
        Command::Inspect(a) => cmd::image::inspect(a),
        Command::CheckElf(a) => cmd::elf::check_elf(a),
        Command::Initramfs(a) => cmd::initramfs::initramfs(a),
        Command::Disk(a) => cmd::disk::disk(a),
        Command::Build(a) => cmd::build::build(*a),
        Command::Boards(a) => cmd::boards::boards(a),
        Command::Completions(a) => cmd::docs::completions(a),
        Command::Man(a) => cmd::docs::man(a),
        Command::Apply(a) => {
            one_malloc_arena();
            cmd::apply::apply(a)
        }
        Command::Status(a) => cmd::apply::status(a),
        Command::MarkGood(a) => cmd::apply::mark_good(a),
        Command::State(a) => cmd::apply::state(a),
        Command::Publish(a) => cmd::publish::publish(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::from(exit::OK),
        Err(err) if stdout_closed(&err) => std::process::ExitCode::from(exit::OK),
        Err(err) => {
            // A failing source travels inside the readers' I/O errors;
            // the chain would say it twice behind an "I/O error".
            match err.chain().find_map(imagesource::find_source_error) {
                Some(src) => eprintln!("fwpack: error: {err}: {src}"),
                None => eprintln!("fwpack: error: {}", exit::render(&err)),
            }
            std::process::ExitCode::from(exit::classify(&err))
        }
    }
}

/// glibc gives each thread that allocates an arena of its own; an apply's
/// pipeline threads (reader, checkers, writers) allocate little (their
/// buffers are one mmap'd block), yet their arenas held 350 KiB at peak
/// RSS, and one heap holds the same data in 136 KiB less
/// (docs/BENCHMARKS.md, "Peak RSS over https under 8 MiB"). Set before
/// any thread starts. Not for build or stamp, whose compressor threads
/// allocate in parallel.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The reader of our stdout went away (`fwpack initramfs --list … | head`):
/// nothing more can be said to it, so end quietly and successfully, as
/// ripgrep does. Only when stdout itself is the closed pipe: a broken pipe
/// to a signer command or a server stays an error.
fn stdout_closed(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    }) && stdout_is_broken()
}

/// The write end of a pipe whose readers are gone polls as POLLERR.
fn stdout_is_broken() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n == 1 && fd.revents & libc::POLLERR != 0
}

/// `println!` panics when stdout is a closed pipe; that is the same quiet
/// end as above, not a crash report.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && stdout_is_broken() {
            std::process::exit(exit::OK.into());
        }
        default(info);
    }));
}
