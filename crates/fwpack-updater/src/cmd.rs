//! The binary as an ordinary command on a running system (or a build
//! host): `status`, `mark-good`, `apply`. Arguments are parsed by hand to
//! keep the device binary small.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
#[cfg(feature = "net")]
use std::time::Duration;

use fwimage::{ImageHead, ImageSource};
#[cfg(feature = "net")]
use imagesource::HttpOptions;
use imagesource::Spec;
use updater::{
    Access, ApplyOptions, ErrorClass, FileStorage, Seed, Slot, StateArea, StateLocation, Storage,
};

use crate::log::json_str;
use crate::runinfo::RunInfo;
use crate::tryboot;
use crate::update::{add_keys_from, Progress};

/// A failed command: message and exit status (the codes of `fwpack`).
pub struct Fail {
    pub msg: String,
    pub code: i32,
}

pub const USAGE_CODE: i32 = 2;

fn usage(msg: impl Into<String>) -> Fail {
    Fail {
        msg: format!("{}\n\n{HELP}", msg.into()),
        code: USAGE_CODE,
    }
}

/// What a build without the `net` feature says to a URL or an HTTP option.
#[cfg(not(feature = "net"))]
const NO_NET: &str = "this build has no network support; use the slot's /usr/bin/fwpack-updater";

/// The options only the HTTP client reads.
#[cfg(not(feature = "net"))]
const NET_OPTIONS: &[&str] = &[
    "--retries",
    "--timeout",
    "--deadline",
    "--min-rate",
    "--min-rate-window",
    "--max-rate",
    "--allow-redirect-hosts",
    "--ca",
    "--pin",
];

/// A usage error (exit 2), without the help text: the command was right,
/// this binary is the wrong one for it.
#[cfg(not(feature = "net"))]
fn no_net(what: &str) -> Fail {
    Fail {
        msg: format!("{what}: {NO_NET}"),
        code: USAGE_CODE,
    }
}

/// Exit status for a failing image source (HTTP status, network, timeout,
/// truncated or replaced download, a pipe that ended early).
pub const SOURCE_CODE: i32 = 9;
/// `check`: no newer image.
pub const UP_TO_DATE_CODE: i32 = 10;

impl From<imagesource::Error> for Fail {
    fn from(e: imagesource::Error) -> Fail {
        let code = if e.is_source_failure() {
            SOURCE_CODE
        } else {
            4
        };
        Fail {
            msg: e.to_string(),
            code,
        }
    }
}

impl From<updater::Error> for Fail {
    fn from(e: updater::Error) -> Fail {
        // A failing source travels inside the I/O error of the reader.
        match imagesource::find_source_error(&e) {
            Some(src) if src.is_source_failure() => {
                return Fail {
                    msg: src.to_string(),
                    code: SOURCE_CODE,
                }
            }
            // More than the image on standard input: malformed.
            Some(src @ imagesource::Error::Trailing { .. }) => {
                return Fail {
                    msg: src.to_string(),
                    code: 4,
                }
            }
            _ => {}
        }
        let code = match e.class() {
            ErrorClass::Io => 3,
            ErrorClass::Format => 4,
            ErrorClass::Signature => 5,
            ErrorClass::Integrity => 6,
            ErrorClass::Policy => 7,
            ErrorClass::Busy => 8,
            ErrorClass::Usage => 2,
        };
        Fail {
            msg: e.to_string(),
            code,
        }
    }
}

impl From<String> for Fail {
    fn from(msg: String) -> Fail {
        Fail { msg, code: 1 }
    }
}

pub const HELP: &str = "\
usage: fwpack-updater <command> [options]

As PID 1 (/init of the fwpack initramfs) it applies pending updates and
boots the right A/B slot; see docs/ARCHITECTURE.md. As a command:

  status [--json] [--target DEV] [--state-offset N] [--state-copy-distance N]
      Show the boot state: active and pending slot, tries, versions
      (the same text and JSON as `fwpack status`).
  mark-good [--target DEV] [--slot A|B] [--state-offset N] [--state-copy-distance N]
      Confirm the running slot (after a trial boot it becomes active).
  apply [SOURCE] [--target DEV] [--key PEM | --keys DIR]... [--slot A|B]
        [--seed auto|none|active|A|B] [--retries N] [--timeout SECS]
        [--deadline SECS] [--min-rate RATE] [--min-rate-window SECS]
        [--max-rate RATE] [--allow-redirect-hosts HOST,...]
        [--ca FILE] [--pin sha256/BASE64]...
        [--tries N] [--no-activate] [--verify-writes] [--force] [--json]
        [--state-offset N] [--state-copy-distance N]
      Write a signed image to the inactive slot and make it pending.
      SOURCE: a file, - (standard input) or an http:// URL (https:// in
      builds with TLS: --ca names the CA bundle, default the system's;
      --pin sha256/BASE64 accepts only that server key). HTTP limits:
      --deadline for the whole fetch (default none), --min-rate (default
      1KiB per --min-rate-window 60 s; 0 off), --max-rate caps fetches
      (not seed or resume copies; default updater.conf's max_rate, 0 off); redirects stay on the URL's scheme,
      host and port unless --allow-redirect-hosts names the target. Without SOURCE, continue
      the interrupted apply the journal names. A re-run after a power cut
      or a dropped connection resumes from the last checkpoint. --seed:
      copy chunks the seed slot already holds (auto: the active slot for
      URLs). The slot the running system booted from is refused, even
      with --force.
  check URL [--target DEV] [--key PEM | --keys DIR]... [--json]
        [--ca FILE] [--pin sha256/BASE64]...
      Is the image at URL an update for this device (its board, a trusted
      signature, newer than the active slot)? Exit 0 yes, 10 no.
  fleet [--once] [--config FILE] [options of apply]
      (Builds with the `fleet` feature.) A hawkBit DDI client: polls the
      server in updater.conf's fleet_* keys, installs its deployments and
      reports the result after the reboot; `fleet --help` for more.

The bootstrap's copy (/init, /run/fwpack/fwpack-updater) is built without
network support: there a URL or an HTTP option is a usage error (exit 2);
the slot's /usr/bin/fwpack-updater has it.
Without --target, the commands use /run/fwpack/boot.conf (or
$FWPACK_BOOT_RECORD), which the PID-1 updater leaves for the system it
booted, and the trusted keys it copied to /run/fwpack/keys.
Exit status: 0 ok, 1 failure, 2 usage, 3 I/O, 4 format, 5 signature,
6 integrity, 7 policy, 8 busy, 9 image source failed, 10 no update (check).";

/// Options shared by the commands.
#[derive(Default)]
pub(crate) struct Opts {
    pub(crate) json: bool,
    pub(crate) target: Option<PathBuf>,
    pub(crate) state_offset: Option<u64>,
    pub(crate) copy_distance: Option<u64>,
    pub(crate) slot: Option<Slot>,
    pub(crate) keys: Vec<PathBuf>,
    pub(crate) key_dirs: Vec<PathBuf>,
    pub(crate) tries: Option<u8>,
    pub(crate) no_activate: bool,
    pub(crate) verify_writes: bool,
    pub(crate) force: bool,
    pub(crate) seed: Option<String>,
    pub(crate) retries: Option<u32>,
    pub(crate) timeout: Option<u64>,
    pub(crate) ca: Option<PathBuf>,
    #[cfg(feature = "net")]
    pub(crate) pins: Vec<[u8; 32]>,
    pub(crate) deadline: Option<u64>,
    pub(crate) min_rate: Option<u64>,
    pub(crate) min_rate_window: Option<u64>,
    pub(crate) max_rate: Option<u64>,
    pub(crate) redirect_hosts: Vec<String>,
    pub(crate) positional: Vec<String>,
}

/// Options that may be given more than once; any other repeated option is
/// a usage error (as in `fwpack`, whose parser refuses them too), never
/// "the last one wins".
const REPEATABLE: &[&str] = &["--key", "--keys", "--pin", "--allow-redirect-hosts"];

pub(crate) fn parse_opts(args: &[String]) -> Result<Opts, Fail> {
    let mut o = Opts::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a.starts_with("--") && !REPEATABLE.contains(&a.as_str()) {
            if seen.contains(&a.as_str()) {
                return Err(usage(format!("{a} given twice")));
            }
            seen.push(a);
        }
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        #[cfg(not(feature = "net"))]
        if NET_OPTIONS.contains(&a.as_str()) {
            return Err(no_net(a));
        }
        match a.as_str() {
            "--json" => o.json = true,
            "--target" => o.target = Some(PathBuf::from(value("--target")?)),
            "--state-offset" => {
                o.state_offset =
                    Some(crate::config::parse_size(&value("--state-offset")?).map_err(usage)?)
            }
            "--state-copy-distance" => {
                o.copy_distance = Some(
                    crate::config::parse_size(&value("--state-copy-distance")?).map_err(usage)?,
                )
            }
            "--slot" => {
                o.slot = Some(
                    value("--slot")?
                        .parse::<Slot>()
                        .map_err(|e| usage(e.to_string()))?,
                )
            }
            "--key" => o.keys.push(PathBuf::from(value("--key")?)),
            "--keys" => o.key_dirs.push(PathBuf::from(value("--keys")?)),
            "--tries" => {
                let v = value("--tries")?;
                o.tries = Some(
                    v.parse()
                        .ok()
                        .filter(|&t: &u8| t > 0)
                        .ok_or_else(|| usage(format!("--tries {v}: 1..=255")))?,
                )
            }
            "--seed" => o.seed = Some(value("--seed")?),
            "--retries" => {
                let v = value("--retries")?;
                o.retries = Some(v.parse().map_err(|_| usage(format!("--retries {v}")))?);
            }
            "--timeout" => {
                let v = value("--timeout")?;
                o.timeout = Some(
                    v.parse()
                        .ok()
                        .filter(|&t: &u64| t > 0)
                        .ok_or_else(|| usage(format!("--timeout {v}: seconds, > 0")))?,
                );
            }
            "--deadline" | "--min-rate-window" => {
                let v = value(a)?;
                let n = Some(v.parse().map_err(|_| usage(format!("{a} {v}: seconds")))?);
                if a == "--deadline" {
                    o.deadline = n
                } else {
                    o.min_rate_window = n
                }
            }
            "--min-rate" | "--max-rate" => {
                let n = Some(crate::config::parse_size(&value(a)?).map_err(usage)?);
                if a == "--min-rate" {
                    o.min_rate = n
                } else {
                    o.max_rate = n
                }
            }
            "--allow-redirect-hosts" => o.redirect_hosts.extend(
                value(a)?
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(str::to_string),
            ),
            "--ca" => o.ca = Some(PathBuf::from(value("--ca")?)),
            #[cfg(feature = "net")]
            "--pin" => o
                .pins
                .push(imagesource::parse_pin(&value("--pin")?).map_err(usage)?),
            "--no-activate" => o.no_activate = true,
            "--verify-writes" => o.verify_writes = true,
            "--force" => o.force = true,
            s if s.starts_with("--") => return Err(usage(format!("unknown option {s}"))),
            // Before the disk is looked at: the answer does not depend on it.
            #[cfg(not(feature = "net"))]
            s if matches!(Spec::parse(s), Spec::Url(_)) => return Err(no_net(s)),
            s => o.positional.push(s.to_string()),
        }
    }
    if o.no_activate && o.tries.is_some() {
        return Err(usage(
            "--tries counts the boots of a pending slot; --no-activate makes none",
        ));
    }
    Ok(o)
}

/// Target, state location and booted slot: from the options, else from
/// what the PID-1 updater left in /run.
pub(crate) fn whereabouts(
    o: &Opts,
) -> Result<(PathBuf, StateLocation, Option<Slot>, Option<RunInfo>), Fail> {
    let run = match RunInfo::load() {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) if o.target.is_none() => return Err(e.into()),
        _ => None,
    };
    let target = match (&o.target, &run) {
        (Some(t), _) => t.clone(),
        (None, Some(r)) => r.target.clone(),
        (None, None) => {
            return Err(usage(format!(
                "no --target, and no {} (not booted by the fwpack updater)",
                crate::runinfo::path().display()
            )))
        }
    };
    // The run info describes one disk; with another --target it does not apply.
    let run = run.filter(|r| r.target == target);
    let offset = o
        .state_offset
        .or(run.as_ref().map(|r| r.state_offset))
        .unwrap_or(updater::DEFAULT_STATE_OFFSET);
    let distance = o
        .copy_distance
        .or(run.as_ref().map(|r| r.state_copy_distance))
        .unwrap_or(updater::DEFAULT_STATE_COPY_DISTANCE);
    let slot = o.slot.or(run.as_ref().map(|r| r.slot));
    Ok((target, StateLocation::new(offset, distance), slot, run))
}

/// `fwpack build` finds the version in the binary's bytes by this mark
/// (pipeline::version_in) to name it in manifest.json; `--version` prints
/// it, which also keeps the bytes in the binary.
const VERSION_MARK: &str = concat!("fwpack-updater-version=", env!("CARGO_PKG_VERSION"), "\0");

pub fn main(args: Vec<OsString>) -> i32 {
    let args: Vec<String> = args
        .into_iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{HELP}");
        return USAGE_CODE;
    };
    let r = match cmd.as_str() {
        "status" => parse_opts(rest).and_then(|o| status(&o)),
        "mark-good" => parse_opts(rest).and_then(|o| mark_good(&o)),
        "apply" => parse_opts(rest).and_then(|o| {
            let r = apply(&o);
            if let (true, Err(f)) = (o.json, &r) {
                // As `fwpack apply --json`: the last line says why.
                let msg = f.msg.split("\n\n").next().unwrap_or_default();
                println!("{}", updater::error_json(f.code, msg));
            }
            r
        }),
        "check" => parse_opts(rest).and_then(|o| check(&o)),
        #[cfg(feature = "fleet")]
        "fleet" => crate::fleet::main(rest),
        "--help" | "-h" | "help" => {
            println!("{HELP}");
            Ok(())
        }
        "--version" | "-V" => {
            // black_box: the whole mark, not a folded "0.1.0", stays.
            // Not strip_prefix: a second copy of the mark's prefix in the
            // binary would be a false match for the reader.
            let version = std::hint::black_box(VERSION_MARK)
                .split_once('=')
                .map_or(VERSION_MARK, |(_, v)| v)
                .trim_end_matches('\0');
            println!("fwpack-updater {version}");
            Ok(())
        }
        other => Err(usage(format!("unknown command `{other}`"))),
    };
    match r {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("fwpack-updater: {}", f.msg);
            f.code
        }
    }
}

fn status(o: &Opts) -> Result<(), Fail> {
    let (target, offset, _, _) = whereabouts(o)?;
    let mut st = FileStorage::open(&target, Access::ReadOnly)?;
    let target = target.display().to_string();
    let area = match StateArea::read(&mut st, offset) {
        Ok(a) => a,
        Err(e) => {
            if let Ok(h) = StateArea::diagnose(&mut st, offset) {
                if o.json {
                    println!(
                        "{}",
                        updater::status::diagnosis_json(&target, &e.to_string(), &h)
                    );
                } else {
                    eprintln!("{}", updater::status::health_line(&h));
                }
            }
            return Err(e.into());
        }
    };
    // The same rendering as `fwpack status` on the host.
    let describe = st.describe();
    let status = updater::status::Status {
        target: &target,
        describe: &describe,
        area: &area,
    };
    if o.json {
        println!("{}", status.json());
    } else {
        print!("{}", status.text());
    }
    Ok(())
}

fn mark_good(o: &Opts) -> Result<(), Fail> {
    // A device-side action: worth a line in the kernel log too.
    crate::log::init();
    let (target, offset, booted, run) = whereabouts(o)?;
    let slot = booted.ok_or_else(|| usage("which slot is running? give --slot"))?;
    // Tryboot: commit autoboot.txt first. A cut between the two steps
    // leaves the firmware booting the new slot normally, and the PID-1
    // updater finishes the confirmation on that boot.
    if let Some((dev, fstype, parts)) = run.as_ref().and_then(|r| r.tryboot.clone()) {
        let fw = tryboot::firmware_boot();
        let (new, old) = (parts[slot.index()], parts[slot.other().index()]);
        if fw.is_some_and(|f| !f.tryboot && f.partition != new) {
            return Err(format!(
                "the firmware booted partition {}, not slot {slot}'s ({new})",
                fw.map_or(0, |f| f.partition)
            )
            .into());
        }
        tryboot::with_autoboot(&dev, &fstype, |dir| {
            let text = tryboot::read(dir)?;
            let a = tryboot::parse(&text);
            if a.default == Some(new) && a.tryboot == Some(old) {
                return Ok(());
            }
            tryboot::write_atomically(dir, &tryboot::rewrite(&text, new, old)?)
        })?;
        crate::log!("autoboot.txt committed: partition {new} boots by default");
    }
    let mut st = FileStorage::open(&target, Access::ReadWrite)?;
    let mut area = StateArea::read(&mut st, offset)?;
    let was_pending = area.boot().pending == Some(slot);
    area.confirm(&mut st, slot)?;
    let v = area.boot().slot(slot).version;
    if was_pending {
        crate::log!("slot {slot} (version {v}) confirmed: it is now the active slot");
    } else {
        crate::log!("slot {slot} (version {v}) confirmed");
    }
    Ok(())
}

/// Trusted keys: the options', else the copies the PID-1 updater left.
pub(crate) fn trusted_keys(o: &Opts) -> Result<fwimage::TrustedKeys, Fail> {
    let mut keys = fwimage::TrustedKeys::new();
    for k in &o.keys {
        let data = std::fs::read(k).map_err(|e| format!("{}: {e}", k.display()))?;
        keys.add_encoded(&data)
            .map_err(|e| Fail::from(updater::Error::from(e)))?;
    }
    for d in &o.key_dirs {
        add_keys_from(&mut keys, d)?;
    }
    if o.keys.is_empty() && o.key_dirs.is_empty() && Path::new(crate::runinfo::KEYS).is_dir() {
        add_keys_from(&mut keys, Path::new(crate::runinfo::KEYS))?;
    }
    if keys.is_empty() {
        return Err(usage(format!(
            "no trusted key: give --key or --keys (or boot through the fwpack updater, which leaves its keys in {})",
            crate::runinfo::KEYS
        )));
    }
    Ok(keys)
}

/// Opens SOURCE with the HTTP options; fetch events become JSON lines or
/// log lines.
#[cfg(feature = "net")]
fn open_source(o: &Opts, spec: &Spec) -> Result<imagesource::Opened, Fail> {
    let http = http_options(o);
    let json = o.json;
    // The same lines as `fwpack apply` (rendered by imagesource).
    let observer: imagesource::Observer = Box::new(move |e| {
        if json {
            println!("{}", e.json());
        } else if let Some(line) = e.text() {
            crate::log!("{line}");
        }
    });
    Ok(imagesource::open(spec, &http, Some(observer))?)
}

/// Opens a file or standard input; a URL is a usage error.
#[cfg(not(feature = "net"))]
fn open_source(_: &Opts, spec: &Spec) -> Result<imagesource::Opened, Fail> {
    match spec {
        Spec::Url(url) => Err(no_net(url)),
        _ => Ok(imagesource::open_local(spec)?),
    }
}

/// The HTTP options the command line gives (`fleet` uses them too).
#[cfg(feature = "net")]
pub(crate) fn http_options(o: &Opts) -> HttpOptions {
    HttpOptions {
        timeout: Duration::from_secs(o.timeout.unwrap_or(30)),
        retries: o.retries.unwrap_or(5),
        deadline: o.deadline.filter(|&d| d > 0).map(Duration::from_secs),
        min_rate: {
            let (r, w) = imagesource::DEFAULT_MIN_RATE;
            let r = o.min_rate.unwrap_or(r);
            let w = o.min_rate_window.map_or(w, Duration::from_secs);
            (r > 0 && !w.is_zero()).then_some((r, w))
        },
        // Else updater.conf's `max_rate`, which PID 1 left in the boot
        // record; `--max-rate 0` lifts it.
        max_rate: o
            .max_rate
            .or_else(|| {
                RunInfo::load()
                    .and_then(Result::ok)
                    .and_then(|r| r.max_rate)
            })
            .filter(|&m| m > 0),
        redirect_hosts: o.redirect_hosts.clone(),
        tls: imagesource::TlsOptions {
            // Else what updater.conf's `ca` left in /run, else the system's.
            ca_file: o.ca.clone().or_else(|| {
                Path::new(crate::runinfo::CA)
                    .is_file()
                    .then(|| PathBuf::from(crate::runinfo::CA))
            }),
            pins: o.pins.clone(),
        },
        ..HttpOptions::default()
    }
}

/// `--seed`: `None` for auto (the active slot for URLs, none otherwise).
fn parse_seed(s: Option<&str>) -> Result<Option<Seed>, Fail> {
    Ok(match s.map(str::to_ascii_lowercase).as_deref() {
        None | Some("auto") => None,
        Some("none") => Some(Seed::None),
        Some("active") => Some(Seed::Active),
        Some(s) => Some(Seed::Slot(
            s.parse::<Slot>()
                .map_err(|e| usage(format!("--seed: {e}")))?,
        )),
    })
}

fn apply(o: &Opts) -> Result<(), Fail> {
    // Usage errors first: nothing is opened before the arguments are known
    // to make sense (the engine checks the rest before its first write).
    let seed = parse_seed(o.seed.as_deref())?;
    if o.positional.len() > 1 {
        return Err(usage("apply takes one SOURCE"));
    }
    let (target, loc, _, _) = whereabouts(o)?;
    let keys = trusted_keys(o)?;
    let mut st = FileStorage::open(Path::new(&target), Access::ReadWrite)?;
    let image = match &o.positional[..] {
        [image] => image.clone(),
        _ => {
            // Continue what the journal names.
            let area = StateArea::read(&mut st, loc)?;
            match area.journal().map(|j| j.source.clone()) {
                Some(s) if !s.is_empty() && s != "-" => {
                    crate::log!("continuing the interrupted apply of {s}");
                    s
                }
                _ => return Err(usage("apply needs a SOURCE (the journal names none)")),
            }
        }
    };
    let spec = Spec::parse(&image);
    let seed = match seed {
        Some(s) => s,
        None if matches!(spec, Spec::Url(_)) => Seed::Active,
        None => Seed::None,
    };
    let opened = open_source(o, &spec)?;
    let source = match &spec {
        Spec::Path(p) => std::path::absolute(p).map_or(image.clone(), |p| p.display().to_string()),
        _ => image.clone(),
    };
    let opts = ApplyOptions {
        slot: o.slot,
        state_offset: loc.offset,
        state_copy_distance: loc.copy_distance,
        verify_writes: o.verify_writes,
        force: o.force,
        activate: !o.no_activate,
        tries: o.tries.unwrap_or(3),
        seed,
        source,
        ..ApplyOptions::default()
    };
    let mut human = Progress::default();
    let json = o.json;
    let report = updater::apply(opened.source, opened.len, &mut st, &keys, &opts, &mut |e| {
        if json {
            println!("{}", e.json());
        } else {
            human.event(e);
        }
    })?;
    if json {
        // The same result line as `fwpack apply --json`.
        println!("{}", report.json(&image, &target.display().to_string()));
    } else {
        crate::log!(
            "applied {image} to slot {}: version {}, {} bytes written, {} read from the source, {} copied from the seed{}",
            report.slot,
            report.version,
            report.bytes_written,
            report.image_bytes_read,
            report.bytes_from_seed,
            if report.pending { ", pending" } else { "" }
        );
    }
    Ok(())
}

/// `check URL`: the head alone (one small request), authenticated, then
/// the same decision the PID-1 updater makes at boot.
fn check(o: &Opts) -> Result<(), Fail> {
    let [url] = &o.positional[..] else {
        return Err(usage("check takes one URL (or file)"));
    };
    let (target, loc, _, _) = whereabouts(o)?;
    let keys = trusted_keys(o)?;
    let mut st = FileStorage::open(Path::new(&target), Access::ReadOnly)?;
    let area = StateArea::read(&mut st, loc)?;
    let mut opened = open_source(o, &Spec::parse(url))?;
    let head = ImageHead::read_from(&mut opened.source as &mut dyn ImageSource, opened.len)
        .map_err(|e| Fail::from(updater::Error::from(e)))?;
    head.verify_signature(&keys)
        .map_err(|e| Fail::from(updater::Error::from(e)))?;
    let boot = area.boot();
    let verdict = crate::update::judge(&head, boot, &area.layout().board);
    let h = &head.header;
    let active = boot.slot(boot.active);
    let (yes, why) = match &verdict {
        Ok(note) => (true, note.clone().unwrap_or_default()),
        Err(why) => (false, why.clone()),
    };
    if o.json {
        println!(
            "{{\"update_available\":{yes},\"url\":{},\"board\":{},\"version\":{},\"label\":{},\"image_id\":\"{}\",\"active_slot\":\"{}\",\"active_version\":{},\"reason\":{}}}",
            json_str(url),
            json_str(&h.board),
            h.payload_version,
            json_str(&h.version_label),
            updater::image_id(&head).iter().map(|x| format!("{x:02x}")).collect::<String>(),
            boot.active,
            active.version,
            json_str(&why)
        );
    } else if yes {
        println!(
            "update available: version {} {} (active slot {} has version {})",
            h.payload_version, h.version_label, boot.active, active.version
        );
    } else {
        println!("no update: {url} {why}");
    }
    if yes {
        Ok(())
    } else {
        Err(Fail {
            msg: format!("{url}: no update"),
            code: UP_TO_DATE_CODE,
        })
    }
}
