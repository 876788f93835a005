//! `fwpack apply | status | state init | mark-good`: the updater's engine
//! and A/B state on a block device, a loop device or a plain disk image.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use fwimage::TrustedKeys;
use updater::state::{Layout, SlotGroup, SlotRange};
use updater::{
    Access, ApplyOptions, ApplyReport, BootState, Event, FileStorage, Phase, Seed, Slot, StateArea,
    StateLocation, Storage,
};

pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    diskimage::ByteSize::parse(s)
}

fn parse_slot(s: &str) -> Result<Slot, String> {
    s.parse().map_err(|e: updater::Error| e.to_string())
}

fn parse_seed(s: &str) -> Result<SeedArg, String> {
    match s.to_ascii_lowercase().as_str() {
        "auto" => Ok(SeedArg::Auto),
        "none" => Ok(SeedArg::Fixed(Seed::None)),
        "active" => Ok(SeedArg::Fixed(Seed::Active)),
        _ => parse_slot(s).map(|sl| SeedArg::Fixed(Seed::Slot(sl))),
    }
}

#[derive(Clone, Copy, Debug)]
enum SeedArg {
    /// The active slot for network sources, none for files and pipes
    /// (where every byte is at hand anyway).
    Auto,
    Fixed(Seed),
}

#[derive(Args)]
pub struct ApplyArgs {
    /// Signed image (.fwi) to apply: a file, `-` for standard input, or an
    /// http:// or https:// URL (a server that answers Range requests, or
    /// one that does not: then the image is read as one stream).
    image: String,
    /// More signed images for the same slot, each for its own slot groups:
    /// all of them are written, read back and switched together in one
    /// commit (a transaction; files or URLs, not `-`).
    #[arg(value_name = "IMAGE")]
    more: Vec<String>,
    /// Disk to write: a block device, a loop device, or a disk image file
    /// that carries a fwpack state area.
    #[arg(long)]
    target: PathBuf,
    /// Trusted public key (PEM or 32 raw bytes). Repeat to trust several.
    #[arg(long = "key", short = 'k', required = true)]
    keys: Vec<PathBuf>,
    /// Slot to write (A or B); default: the inactive one. The active slot
    /// is always refused.
    #[arg(long, value_parser = parse_slot)]
    slot: Option<Slot>,
    /// Read everything written back from the target and check each chunk
    /// against its signed SHA-256 before recording it as done.
    #[arg(long)]
    verify_writes: bool,
    /// Read the target first and write only blocks that differ (re-flashes
    /// of mostly unchanged images; saves flash wear).
    #[arg(long)]
    minimize_writes: bool,
    /// Write even if the target is mounted, held or opened exclusively.
    #[arg(long)]
    force: bool,
    /// Accept an image without a segment for every slot group.
    #[arg(long)]
    allow_partial: bool,
    /// Mark the slot complete but do not make it pending.
    #[arg(long)]
    no_activate: bool,
    /// Trial boots of the new slot before the device falls back.
    #[arg(long, default_value_t = 3, conflicts_with = "no_activate")]
    tries: u8,
    /// Byte offset of the state area on the target.
    #[arg(long, value_parser = parse_size, default_value = "512KiB")]
    state_offset: u64,
    /// Distance from the state area's first copy to its second.
    #[arg(long, value_parser = parse_size, default_value = "4MiB")]
    state_copy_distance: u64,
    /// Memory of the write pipeline (a multiple of 4 KiB): 1.5 × this on
    /// two cores, split into one buffer per checker thread plus one, each
    /// whole chunks of the image and the bytes of one write.
    #[arg(long, value_parser = parse_size, default_value = "1MiB")]
    chunk_size: u64,
    /// Bytes between durable checkpoints in the resume journal.
    #[arg(long, value_parser = parse_size, default_value = "32MiB")]
    checkpoint_interval: u64,
    /// Copy chunks that a slot already holds instead of fetching them
    /// (matched by their signed raw SHA-256): A, B, `active`, `none`, or
    /// `auto` = the active slot for URLs, none for files and pipes.
    #[arg(long, value_parser = parse_seed, default_value = "auto")]
    seed: SeedArg,
    /// HTTP: attempts after a failed request or a dropped connection
    /// (each continues where the last stopped; backoff 0.5 s, doubling).
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// HTTP: seconds to wait for a connection or for any read.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// HTTP: seconds the whole fetch may take, retries included (0: no
    /// limit). Exit 9 when it passes.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    deadline: u64,
    /// HTTP: give up (or retry) a connection that delivers less than this
    /// many bytes per second over --min-rate-window (like curl's
    /// --speed-limit); 0: off.
    #[arg(long, value_name = "RATE", value_parser = parse_size, default_value = "1KiB")]
    min_rate: u64,
    /// HTTP: seconds over which --min-rate is measured (curl's --speed-time).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    min_rate_window: u64,
    /// HTTP: fetch at most this many bytes per second (e.g. 2MiB), to
    /// spare a metered or shared link. Seed and resume copies are local
    /// and not throttled.
    #[arg(long, value_name = "RATE", value_parser = parse_size)]
    max_rate: Option<u64>,
    /// HTTP: hosts (`host` or `host:port`, comma-separated or repeated)
    /// that redirects may lead to; by default only the URL's own scheme,
    /// host and port. A redirect from https to http is always refused.
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    allow_redirect_hosts: Vec<String>,
    /// HTTPS: PEM bundle of the CAs to trust (default: the system's
    /// bundle, else Mozilla's roots built in).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// HTTPS: accept only a server whose certificate's public key hashes
    /// to this: `sha256/<base64>` of the DER SubjectPublicKeyInfo, as
    /// curl's --pinnedpubkey. Checked after the CA chain. Repeat for
    /// several keys (e.g. the current and the next).
    #[arg(long = "pin", value_name = "sha256/BASE64", value_parser = imagesource::parse_pin)]
    pins: Vec<[u8; 32]>,
    /// One JSON object per line on stdout (events, then the result).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Disk to describe (block device or disk image file).
    #[arg(long)]
    target: PathBuf,
    #[arg(long, value_parser = parse_size, default_value = "512KiB")]
    state_offset: u64,
    /// Distance from the state area's first copy to its second.
    #[arg(long, value_parser = parse_size, default_value = "4MiB")]
    state_copy_distance: u64,
    /// One JSON object on stdout instead of human lines.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct MarkGoodArgs {
    /// Disk whose boot state to change.
    #[arg(long)]
    target: PathBuf,
    /// The slot the running system booted from; default: the pending slot
    /// if there is one, else the active slot.
    #[arg(long, value_parser = parse_slot)]
    slot: Option<Slot>,
    #[arg(long, value_parser = parse_size, default_value = "512KiB")]
    state_offset: u64,
    /// Distance from the state area's first copy to its second.
    #[arg(long, value_parser = parse_size, default_value = "4MiB")]
    state_copy_distance: u64,
}

#[derive(Args)]
pub struct StateArgs {
    #[command(subcommand)]
    command: StateCommand,
}

#[derive(Subcommand)]
enum StateCommand {
    /// Write a fresh state area (layout + boot state) onto a disk.
    Init(StateInitArgs),
}

#[derive(Args)]
pub struct StateInitArgs {
    /// Disk to initialise; a file is created or grown to --size.
    #[arg(long)]
    target: PathBuf,
    /// Board name; images for other boards are refused.
    #[arg(long)]
    board: String,
    /// A slot group: `NAME:A=OFFSET+SIZE,B=OFFSET+SIZE` (sizes like 64MiB).
    /// Repeat for several groups.
    #[arg(long = "group", short = 'g', required = true)]
    groups: Vec<String>,
    /// Byte offset of the state area's first copy.
    #[arg(long, value_parser = parse_size, default_value = "512KiB")]
    state_offset: u64,
    /// Distance to its second copy: at least the medium's erase block
    /// (SD cards: 4 MiB allocation units), so one erase cannot take both.
    #[arg(long, value_parser = parse_size, default_value = "4MiB")]
    state_copy_distance: u64,
    /// Size of a file target (created sparse, or grown; never shrunk).
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Slot that holds the running (factory) firmware.
    #[arg(long, value_parser = parse_slot, default_value = "A")]
    active: Slot,
    /// Payload version of that firmware (the rollback floor).
    #[arg(long, default_value_t = 0)]
    active_version: u64,
    #[arg(long, default_value = "")]
    active_label: String,
    /// Overwrite an existing state area (its boot state is lost), or write
    /// to a busy device.
    #[arg(long)]
    force: bool,
}

fn trusted_keys(paths: &[PathBuf]) -> Result<TrustedKeys> {
    let mut t = TrustedKeys::new();
    for k in paths {
        t.add(crate::cmd::keys::load_public_key(k)?);
    }
    Ok(t)
}

fn open(target: &Path, access: Access) -> Result<FileStorage> {
    FileStorage::open(target, access).with_context(|| format!("target {}", target.display()))
}

pub fn apply(args: ApplyArgs) -> Result<()> {
    if args.more.is_empty() {
        finish(&args, run_apply(&args), print_report)
    } else {
        // `fwpack apply A.fwi B.fwi …`: one transaction (`updater::txn`).
        finish(&args, run_transaction(&args), print_transaction)
    }
}

/// Prints how a run ended: its report, or with `--json` the error line
/// (the text goes to stderr through the CLI's error path either way).
fn finish<T>(args: &ApplyArgs, result: Result<T>, print: fn(&ApplyArgs, &T)) -> Result<()> {
    match &result {
        Ok(r) => print(args, r),
        Err(e) if args.json => {
            let code = crate::exit::classify(e);
            println!(
                "{}",
                updater::error_json(code.into(), &crate::exit::render(e))
            );
        }
        Err(_) => {}
    }
    result.map(|_| ())
}

fn http_options(args: &ApplyArgs) -> imagesource::HttpOptions {
    imagesource::HttpOptions {
        timeout: std::time::Duration::from_secs(args.timeout.max(1)),
        retries: args.retries,
        deadline: (args.deadline > 0).then(|| std::time::Duration::from_secs(args.deadline)),
        min_rate: (args.min_rate > 0 && args.min_rate_window > 0).then(|| {
            (
                args.min_rate,
                std::time::Duration::from_secs(args.min_rate_window),
            )
        }),
        max_rate: args.max_rate.filter(|&m| m > 0),
        redirect_hosts: args.allow_redirect_hosts.clone(),
        tls: imagesource::TlsOptions {
            ca_file: args.ca.clone(),
            pins: args.pins.clone(),
        },
        ..Default::default()
    }
}

/// Source events as lines: JSON on stdout or text on stderr. Runs on
/// whichever thread reads the image; lines are written whole.
fn observer(json_mode: bool) -> imagesource::Observer {
    Box::new(move |e| {
        if json_mode {
            println!("{}", e.json());
        } else if let Some(line) = e.text() {
            eprintln!("{line}");
        }
    })
}

/// The source as the journal keeps it: a path made absolute.
fn journal_source(spec: &imagesource::Spec, image: &str) -> String {
    match spec {
        imagesource::Spec::Path(p) => std::path::absolute(p)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| image.to_string()),
        _ => image.to_string(),
    }
}

fn run_apply(args: &ApplyArgs) -> Result<ApplyReport> {
    let trusted = trusted_keys(&args.keys)?;
    let spec = imagesource::Spec::parse(&args.image);
    let opened = imagesource::open(&spec, &http_options(args), Some(observer(args.json)))
        .with_context(|| format!("opening {}", args.image))?;
    let len = opened.len;
    let seed = match args.seed {
        SeedArg::Auto if matches!(spec, imagesource::Spec::Url(_)) => Seed::Active,
        SeedArg::Auto => Seed::None,
        SeedArg::Fixed(s) => s,
    };
    let source = journal_source(&spec, &args.image);
    let mut storage = open(&args.target, Access::ReadWrite)?;
    let opts = options(args, seed, source)?;
    let mut out = EventPrinter::new(args.json);
    // Positioned reads of whole chunks: no buffering wanted.
    let report = updater::apply(
        opened.source,
        len,
        &mut storage,
        &trusted,
        &opts,
        &mut |e| out.event(e),
    )
    .with_context(|| format!("applying {} to {}", args.image, args.target.display()));
    out.finish();
    report
}

fn options(args: &ApplyArgs, seed: Seed, source: String) -> Result<ApplyOptions> {
    Ok(ApplyOptions {
        slot: args.slot,
        state_offset: args.state_offset,
        state_copy_distance: args.state_copy_distance,
        verify_writes: args.verify_writes,
        minimize_writes: args.minimize_writes,
        force: args.force,
        allow_partial: args.allow_partial,
        activate: !args.no_activate,
        leave_updating: false,
        tries: args.tries,
        chunk_size: usize::try_from(args.chunk_size).context("--chunk-size")?,
        checkpoint_interval: args.checkpoint_interval,
        seed,
        source,
    })
}

fn images(args: &ApplyArgs) -> Vec<&String> {
    std::iter::once(&args.image).chain(&args.more).collect()
}

fn run_transaction(args: &ApplyArgs) -> Result<updater::TxnReport> {
    let trusted = trusted_keys(&args.keys)?;
    let http = http_options(args);
    let mut parts = Vec::new();
    let mut any_url = false;
    for image in images(args) {
        let spec = imagesource::Spec::parse(image);
        if matches!(spec, imagesource::Spec::Stdin) {
            bail!("`-`: a transaction reads each image again for its final proof, so its images are files or URLs");
        }
        any_url |= matches!(spec, imagesource::Spec::Url(_));
        let opened = imagesource::open(&spec, &http, Some(observer(args.json)))
            .with_context(|| format!("opening {image}"))?;
        parts.push(updater::Part {
            image: opened.source,
            len: opened.len,
            source: journal_source(&spec, image),
            groups: Vec::new(),
        });
    }
    let seed = match args.seed {
        SeedArg::Auto if any_url => Seed::Active,
        SeedArg::Auto => Seed::None,
        SeedArg::Fixed(s) => s,
    };
    let mut storage = open(&args.target, Access::ReadWrite)?;
    let opts = options(args, seed, String::new())?;
    let mut out = EventPrinter::new(args.json);
    let report = updater::apply_parts(&mut parts, &mut storage, &trusted, &opts, &mut |e| {
        out.event(e)
    })
    .with_context(|| {
        format!(
            "applying {} to {} as one transaction",
            args.image,
            args.target.display()
        )
    });
    out.finish();
    report
}

fn print_transaction(args: &ApplyArgs, r: &updater::TxnReport) {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let written: u64 = r.applied.iter().map(|(_, a)| a.bytes_written).sum();
    if args.json {
        let parts: Vec<serde_json::Value> = images(args)
            .iter()
            .zip(&r.part_ids)
            .map(|(i, id)| serde_json::json!({ "image": i, "image_id": hex(id) }))
            .collect();
        let v = serde_json::json!({
            "event": "result",
            "result": "ok",
            "transaction": true,
            "target": args.target.display().to_string(),
            "slot": r.slot.to_string(),
            "image_id": hex(&r.id),
            "version": r.version,
            "label": r.label,
            "parts": parts,
            "applied": r.applied.iter().map(|(i, _)| i).collect::<Vec<_>>(),
            "repaired": r.repaired,
            "raw_bytes": r.raw_bytes,
            "bytes_written": written,
            "bytes_proven": r.bytes_proven,
            "already_complete": r.already_complete,
            "pending": r.pending,
        });
        println!("{v}");
        return;
    }
    println!(
        "OK: {} images → slot {} of {} as one transaction: {written} bytes written, {} read back{}",
        r.part_ids.len(),
        r.slot,
        args.target.display(),
        r.bytes_proven,
        if r.pending {
            format!("; slot {} boots next on trial", r.slot)
        } else {
            "; slot marked complete, not activated".into()
        }
    );
}

/// Turns engine events into JSON lines or human lines (+ a progress bar
/// on a terminal).
struct EventPrinter {
    json: bool,
    bar: Option<crate::cmd::ProgressBar>,
    last_percent: Option<(Phase, u64)>,
}

impl EventPrinter {
    fn new(json: bool) -> Self {
        EventPrinter {
            json,
            bar: None,
            last_percent: None,
        }
    }

    fn finish(&mut self) {
        // Dropping the bar clears its line.
        self.bar = None;
    }

    fn event(&mut self, e: &Event) {
        if self.json {
            if let Some(v) = self.event_json(e) {
                println!("{v}");
            }
            return;
        }
        match e {
            Event::Target { description } => eprintln!("target: {description}"),
            Event::Phase(_) => self.finish(),
            Event::ImageAccepted {
                board,
                version,
                label,
                key_id,
                segments,
                raw_bytes,
                slot,
            } => eprintln!(
                "image: board {board}, version {version}{}, {segments} segment(s), {raw_bytes} bytes, signed by {key_id}; writing slot {slot}",
                if label.is_empty() { String::new() } else { format!(" ({label})") }
            ),
            Event::Progress { phase, done, total } => {
                let b = self
                    .bar
                    .get_or_insert_with(|| crate::cmd::progress_bar(*total, phase.name()));
                b.set_position(*done);
            }
            Event::Warning(w) => {
                self.suspend(|| eprintln!("warning: {w}"));
            }
            Event::Resume {
                segment,
                offset,
                skipped,
            } => eprintln!(
                "resuming an interrupted apply at segment {segment} offset {offset}: {skipped} bytes already on the target"
            ),
            Event::Restart { reason } => eprintln!("starting over: {reason}"),
            Event::AlreadyComplete { slot } => {
                eprintln!("slot {slot} already holds this image, complete")
            }
            Event::SlotState { slot, state } => {
                self.suspend(|| eprintln!("slot {slot}: {}", state.name()));
            }
            Event::Pending { slot, tries } => {
                eprintln!("slot {slot} is pending: it boots next ({tries} tries)")
            }
            Event::DeltaPlan {
                seed,
                chunks,
                from_seed,
                fetch_bytes,
                runs,
            } => eprintln!(
                "delta: {from_seed} of {chunks} chunks already on slot {seed}; fetching {fetch_bytes} bytes in {runs} range(s)"
            ),
            Event::Checkpoint { .. } => {}
            Event::TransactionAccepted {
                parts,
                version,
                slot,
                raw_bytes,
            } => eprintln!(
                "transaction: {parts} images, version {version}, {raw_bytes} bytes, into slot {slot}; it switches once all are written and read back"
            ),
            Event::TransactionPlan {
                seed,
                chunks,
                from_seed,
                fetch_bytes,
            } => eprintln!(
                "delta over all images: {from_seed} of {chunks} chunks already on slot {seed}; fetching {fetch_bytes} bytes"
            ),
            Event::Part {
                index,
                count,
                proving,
                ..
            } => {
                self.finish();
                eprintln!(
                    "image {} of {count}: {}",
                    index + 1,
                    if *proving { "reading back" } else { "writing" }
                )
            }
            _ => {}
        }
    }

    fn suspend(&mut self, f: impl FnOnce()) {
        match &mut self.bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    /// The engine's JSON line for `e` (shared with fwpack-updater), with
    /// progress thinned to one line per percent.
    fn event_json(&mut self, e: &Event) -> Option<String> {
        if let Event::Progress { phase, done, total } = e {
            // One line per percent is plenty for a log or a UI.
            let pct = done.saturating_mul(100) / (*total).max(1);
            if self.last_percent == Some((*phase, pct)) && done != total {
                return None;
            }
            self.last_percent = Some((*phase, pct));
        }
        Some(e.json())
    }
}

fn print_report(args: &ApplyArgs, r: &ApplyReport) {
    if args.json {
        // The same result line as `fwpack-updater apply --json`.
        println!(
            "{}",
            r.json(&args.image, &args.target.display().to_string())
        );
        return;
    }
    let mut extra = Vec::new();
    if r.skipped_resume > 0 {
        extra.push(format!("{} resumed", r.skipped_resume));
    }
    if r.skipped_unchanged > 0 {
        extra.push(format!("{} unchanged", r.skipped_unchanged));
    }
    if r.bytes_read_back > 0 {
        extra.push(format!("{} read back", r.bytes_read_back));
    }
    if r.bytes_from_seed > 0 {
        extra.push(format!(
            "{} copied from the seed slot, {} fetched",
            r.bytes_from_seed, r.image_bytes_read
        ));
    }
    println!(
        "OK: {} → slot {} of {}: {} bytes written{}{}",
        args.image,
        r.slot,
        args.target.display(),
        r.bytes_written,
        if extra.is_empty() {
            String::new()
        } else {
            format!(" ({})", extra.join(", "))
        },
        if r.pending {
            format!("; slot {} boots next on trial", r.slot)
        } else {
            "; slot marked complete, not activated".into()
        }
    );
}

pub fn status(args: StatusArgs) -> Result<()> {
    let mut st = open(&args.target, Access::ReadOnly)?;
    let loc = StateLocation::new(args.state_offset, args.state_copy_distance);
    let target = args.target.display().to_string();
    let area = match StateArea::read(&mut st, loc) {
        Ok(a) => a,
        Err(e) => {
            if let Ok(h) = StateArea::diagnose(&mut st, loc) {
                if args.json {
                    println!(
                        "{}",
                        updater::status::diagnosis_json(&target, &e.to_string(), &h)
                    );
                } else {
                    eprintln!("{}", updater::status::health_line(&h));
                }
            }
            return Err(e).with_context(|| format!("state area of {}", args.target.display()));
        }
    };
    // The same rendering as `fwpack-updater status` on the device.
    let describe = st.describe();
    let status = updater::status::Status {
        target: &target,
        describe: &describe,
        area: &area,
    };
    if args.json {
        println!("{}", status.json());
    } else {
        print!("{}", status.text());
    }
    Ok(())
}

pub fn mark_good(args: MarkGoodArgs) -> Result<()> {
    let mut st = open(&args.target, Access::ReadWrite)?;
    let loc = StateLocation::new(args.state_offset, args.state_copy_distance);
    let mut area = StateArea::read(&mut st, loc)
        .with_context(|| format!("state area of {}", args.target.display()))?;
    let b = area.boot();
    let slot = args.slot.or(b.pending).unwrap_or(b.active);
    area.confirm(&mut st, slot)
        .with_context(|| format!("state area of {}", args.target.display()))?;
    println!(
        "slot {slot} confirmed good; active slot is {}, rollback floor {}",
        area.boot().active,
        area.boot().rollback_floor
    );
    Ok(())
}

pub fn state(args: StateArgs) -> Result<()> {
    match args.command {
        StateCommand::Init(a) => state_init(a),
    }
}

/// `NAME:A=OFF+SIZE,B=OFF+SIZE`
fn parse_group(s: &str) -> Result<SlotGroup> {
    let (name, rest) = s
        .split_once(':')
        .with_context(|| format!("group `{s}`: expected NAME:A=OFFSET+SIZE,B=OFFSET+SIZE"))?;
    let mut slots = [None, None];
    for part in rest.split(',') {
        let (which, range) = part
            .split_once('=')
            .with_context(|| format!("group `{name}`: `{part}` is not A=OFFSET+SIZE"))?;
        let slot: Slot = which.trim().parse()?;
        let (off, size) = range
            .split_once('+')
            .with_context(|| format!("group `{name}`: `{range}` is not OFFSET+SIZE"))?;
        let r = SlotRange {
            offset: parse_size(off).map_err(anyhow::Error::msg)?,
            size: parse_size(size).map_err(anyhow::Error::msg)?,
        };
        if slots[slot.index()].replace(r).is_some() {
            bail!("group `{name}`: slot {slot} given twice");
        }
    }
    match slots {
        [Some(a), Some(b)] => Ok(SlotGroup {
            name: name.to_string(),
            slots: [a, b],
        }),
        _ => bail!("group `{name}`: needs both A= and B="),
    }
}

fn state_init(args: StateInitArgs) -> Result<()> {
    let groups = args
        .groups
        .iter()
        .map(|g| parse_group(g))
        .collect::<Result<Vec<_>>>()?;
    let loc = StateLocation::new(args.state_offset, args.state_copy_distance);
    let layout = Layout::new(&args.board, loc, groups)?;
    let boot = BootState::initial(args.active, args.active_version, &args.active_label)?;
    if let Some(size) = args.size {
        let is_file = std::fs::metadata(&args.target).map_or(true, |m| m.is_file());
        if is_file {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&args.target)
                .with_context(|| format!("creating {}", args.target.display()))?;
            let len = f
                .metadata()
                .with_context(|| format!("reading {}", args.target.display()))?
                .len();
            if len < size {
                f.set_len(size).with_context(|| {
                    format!("growing {} to {size} bytes", args.target.display())
                })?;
            }
        }
    }
    let mut st = open(&args.target, Access::ReadWrite)?;
    if !args.force {
        if let Ok(existing) = StateArea::read(&mut st, loc) {
            bail!(
                "{} already has a state area (board {}, active slot {}); --force replaces it and loses its boot state",
                args.target.display(),
                existing.layout().board,
                existing.boot().active
            );
        }
        let busy = st
            .busy(&[layout.state_range()])
            .with_context(|| format!("target {}", args.target.display()))?;
        if !busy.reasons.is_empty() {
            return Err(updater::Error::Busy {
                reasons: busy.reasons,
            }
            .into());
        }
    }
    updater::init_state_area(&mut st, &layout, &boot)
        .with_context(|| format!("target {}", args.target.display()))?;
    println!(
        "initialised the state area of {} at {} and {} (board {}, {} slot group(s), active slot {})",
        args.target.display(),
        args.state_offset,
        loc.copy_offset(1),
        layout.board,
        layout.groups.len(),
        args.active
    );
    Ok(())
}
