//! `fwpack build`: the main job.

use std::path::PathBuf;

use anyhow::{Context, Result};
use board::Board;
use clap::Args;

use crate::cmd::image::SignerArgs;
use crate::installed;

#[derive(Args)]
pub struct BuildArgs {
    /// Board name (see `fwpack boards`).
    #[arg(long, default_value = "rpi-zero2w", conflicts_with = "config")]
    board: String,
    /// A board config file instead of a shipped board (start one with
    /// `fwpack boards --show NAME`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory of board YAML files to take --board from instead of the
    /// built-in ones [env: FWPACK_CONFIGS].
    #[arg(long, conflicts_with = "config")]
    configs: Option<PathBuf>,
    /// Output directory (boot/, sdcard.img with .bmap and .zst, update.fwi,
    /// the SPDX SBOM sbom.spdx.json whose SHA-256 update.fwi's signed head
    /// carries, manifest.json); replaced as a whole only when the build
    /// succeeds.
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Kernel image for the board (Debian's vmlinuz, Buildroot's Image).
    #[arg(long)]
    kernel: PathBuf,
    /// Directory holding the board's DTBs (e.g. usr/lib/linux-image-<release>).
    #[arg(long)]
    dtb_dir: Option<PathBuf>,
    /// Raspberry Pi GPU firmware (bootcode.bin, start.elf, fixup.dat).
    #[arg(long)]
    firmware_dir: Option<PathBuf>,
    /// lib/modules/<release> of the kernel, for boards that load modules.
    #[arg(long)]
    modules_dir: Option<PathBuf>,
    /// Root filesystem image: slot A of sdcard.img and the payload of update.fwi.
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Carry this update image in the initramfs (`/images`); the updater
    /// applies it at boot. Repeatable.
    #[arg(long = "include-image", value_name = "FWI")]
    include_images: Vec<PathBuf>,
    /// The static fwpack-updater to put in as /init (and, on boot: kexec
    /// boards, into the slot as /usr/bin/fwpack-updater). Default: the ones
    /// shipped with fwpack for the board's target
    /// (<prefix>/lib/fwpack/<triple>/fwpack-updater-bootstrap for /init,
    /// fwpack-updater with the network client for the slot, next to
    /// <prefix>/bin/fwpack).
    #[arg(long)]
    updater: Option<PathBuf>,
    /// Build the updaters with cargo from the source checkout fwpack was
    /// compiled from, instead of using the shipped ones (the bootstrap's
    /// without the network client, the slot's with it).
    #[arg(long, conflicts_with = "updater")]
    build_updater: bool,
    /// Initramfs recipe instead of the built-in one.
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// Payload version (anti-rollback counter) of update.fwi and slot A.
    #[arg(long = "version", default_value_t = 1)]
    payload_version: u64,
    /// Threads that compress the initramfs and update.fwi (default: the
    /// cores available). The artifacts are byte-identical for any number.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Leave the SBOM's SHA-256 out of update.fwi's signed head
    /// (sbom.spdx.json is still written). For a fleet whose updaters
    /// predate the head extension: they refuse images that carry it.
    #[arg(long)]
    no_sbom_record: bool,
    /// Store all-zero chunks of update.fwi compressed instead of empty.
    /// For a fleet whose updaters predate zero chunks (incompat bit 2,
    /// docs/FORMAT.md "Zero chunks"): they refuse images that have them.
    #[arg(long)]
    no_zero_chunks: bool,
    /// Human-readable version label.
    #[arg(long, default_value = "")]
    label: String,
    #[command(flatten)]
    signer: SignerArgs,
    /// One JSON object per line (progress, warnings, result) on stdout.
    #[arg(long)]
    json: bool,
}

pub fn build(args: BuildArgs) -> Result<()> {
    let board = match &args.config {
        Some(path) => Board::load(path)?,
        None => installed::configs(args.configs.clone()).find(&args.board)?,
    };
    if !args.signer.is_set() {
        anyhow::bail!(
            "no signing key: pass --key KEY.pem (make one with `fwpack keygen`) or --signer-cmd/--pubkey"
        );
    }
    let updater = installed::updater(&board, args.updater.as_deref(), args.build_updater)?;
    let inputs = pipeline::Inputs {
        out_dir: args.out.clone(),
        recipe: args.recipe.clone(),
        kernel: args.kernel.clone(),
        dtb_dir: args.dtb_dir.clone(),
        firmware_dir: args.firmware_dir.clone(),
        modules_dir: args.modules_dir.clone(),
        rootfs: args.rootfs.clone(),
        updater,
        signer: args.signer.signer()?,
        include_images: args.include_images.clone(),
        payload_version: args.payload_version,
        version_label: args.label.clone(),
        jobs: args.jobs.map_or_else(initramfs::default_jobs, usize::from),
        sbom_record: !args.no_sbom_record,
        zero_chunks: !args.no_zero_chunks,
    };
    let started = std::time::Instant::now();
    let json = args.json;
    let mut on = |e: pipeline::Event| {
        if json {
            if let Ok(line) = serde_json::to_string(&e) {
                println!("{line}");
            }
            return;
        }
        match e {
            pipeline::Event::Step { step, detail } => eprintln!("==> {step:<11} {detail}"),
            pipeline::Event::Warning { message } => eprintln!("warning: {message}"),
        }
    };
    let manifest = pipeline::build(&board, &inputs, &mut on)
        .with_context(|| format!("building {} for {}", args.out.display(), board.name))?;
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "result", "result": "ok", "manifest": manifest})
        );
        return Ok(());
    }
    eprintln!(
        "built {} for {} in {:.1}s (version {}, key {}):",
        args.out.display(),
        board.name,
        started.elapsed().as_secs_f64(),
        manifest.version,
        &manifest.key_id[..16]
    );
    let u = &manifest.updater;
    eprintln!(
        "  updater: {} {} (version {}, sha256 {})",
        u.source,
        u.path.display(),
        u.version.as_deref().unwrap_or("unknown"),
        u.sha256
    );
    eprintln!(
        "  sbom:    {} (sha256 {}{})",
        manifest.sbom,
        manifest.sbom_sha256,
        if args.no_sbom_record {
            "; not in update.fwi, --no-sbom-record"
        } else {
            ", also in update.fwi's signed head"
        }
    );
    for a in &manifest.artifacts {
        println!(
            "  {:<40} {:>12} bytes  sha256 {}",
            a.path,
            a.size,
            &a.sha256[..16]
        );
    }
    Ok(())
}
