//! The binary as an ordinary command on a running system (or a build
//! host): `status`, `mark-good`, `apply`. Arguments are parsed by hand to
//! keep the device binary small.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use updater::{
    Access, ApplyOptions, ErrorClass, FileStorage, Slot, StateArea, StateLocation, Storage,
};

use crate::log::json_str;
use crate::runinfo::RunInfo;
use crate::update::{add_keys_from, Progress};
use crate::{flow, tryboot};

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

impl From<updater::Error> for Fail {
    fn from(e: updater::Error) -> Fail {
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
  apply IMAGE --target DEV (--key PEM | --keys DIR)... [--slot A|B]
        [--tries N] [--no-activate] [--verify-writes] [--force] [--json]
        [--state-offset N] [--state-copy-distance N]
      Write a signed image to the inactive slot and make it pending. The
      slot the running system booted from is refused, even with --force.

Without --target, status and mark-good use /run/fwpack/boot.conf (or
$FWPACK_BOOT_RECORD), which the PID-1 updater leaves for the system it
booted; apply reads it to refuse the running slot.
Exit status: 0 ok, 1 failure, 2 usage, 3 I/O, 4 format, 5 signature,
6 integrity, 7 policy, 8 busy.";

/// Options shared by the commands.
#[derive(Default)]
struct Opts {
    json: bool,
    target: Option<PathBuf>,
    state_offset: Option<u64>,
    copy_distance: Option<u64>,
    slot: Option<Slot>,
    keys: Vec<PathBuf>,
    key_dirs: Vec<PathBuf>,
    tries: Option<u8>,
    no_activate: bool,
    verify_writes: bool,
    force: bool,
    positional: Vec<String>,
}

fn parse_opts(args: &[String]) -> Result<Opts, Fail> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
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
            "--no-activate" => o.no_activate = true,
            "--verify-writes" => o.verify_writes = true,
            "--force" => o.force = true,
            s if s.starts_with("--") => return Err(usage(format!("unknown option {s}"))),
            s => o.positional.push(s.to_string()),
        }
    }
    Ok(o)
}

/// Target, state location and booted slot: from the options, else from
/// what the PID-1 updater left in /run.
fn whereabouts(o: &Opts) -> Result<(PathBuf, StateLocation, Option<Slot>, Option<RunInfo>), Fail> {
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
        "apply" => parse_opts(rest).and_then(|o| apply(&o)),
        "--help" | "-h" | "help" => {
            println!("{HELP}");
            Ok(())
        }
        "--version" | "-V" => {
            println!("fwpack-updater {}", env!("CARGO_PKG_VERSION"));
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
        flow::with_autoboot(&dev, &fstype, |dir| {
            let text = std::fs::read_to_string(dir.join("autoboot.txt")).unwrap_or_default();
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

fn apply(o: &Opts) -> Result<(), Fail> {
    let [image] = &o.positional[..] else {
        return Err(usage("apply needs exactly one IMAGE"));
    };
    let target = o
        .target
        .clone()
        .ok_or_else(|| usage("apply needs --target"))?;
    let mut keys = fwimage::TrustedKeys::new();
    for k in &o.keys {
        let data = std::fs::read(k).map_err(|e| format!("{}: {e}", k.display()))?;
        keys.add_encoded(&data)
            .map_err(|e| Fail::from(updater::Error::from(e)))?;
    }
    for d in &o.key_dirs {
        add_keys_from(&mut keys, d)?;
    }
    if keys.is_empty() {
        return Err(usage(
            "apply needs at least one trusted key (--key or --keys)",
        ));
    }
    let file = File::open(image).map_err(|e| format!("{image}: {e}"))?;
    let len = file.metadata().map_err(|e| format!("{image}: {e}"))?.len();
    let mut st = FileStorage::open(Path::new(&target), Access::ReadWrite)?;
    let opts = ApplyOptions {
        slot: o.slot,
        state_offset: o.state_offset.unwrap_or(updater::DEFAULT_STATE_OFFSET),
        state_copy_distance: o
            .copy_distance
            .unwrap_or(updater::DEFAULT_STATE_COPY_DISTANCE),
        verify_writes: o.verify_writes,
        force: o.force,
        activate: !o.no_activate,
        tries: o.tries.unwrap_or(3),
        ..ApplyOptions::default()
    };
    let mut human = Progress::default();
    let json = o.json;
    let report = updater::apply(file, len, &mut st, &keys, &opts, &mut |e| {
        if json {
            println!("{}", event_json(e));
        } else {
            human.event(e);
        }
    })?;
    if json {
        println!(
            "{{\"result\":\"ok\",\"slot\":\"{}\",\"version\":{},\"bytes_written\":{},\"bytes_read_back\":{},\"pending\":{}}}",
            report.slot, report.version, report.bytes_written, report.bytes_read_back, report.pending
        );
    } else {
        crate::log!(
            "applied {image} to slot {}: version {}, {} bytes written{}",
            report.slot,
            report.version,
            report.bytes_written,
            if report.pending { ", pending" } else { "" }
        );
    }
    Ok(())
}

fn event_json(e: &updater::Event) -> String {
    use updater::Event;
    match e {
        Event::Phase(p) => format!("{{\"event\":\"phase\",\"phase\":\"{}\"}}", p.name()),
        Event::Progress { phase, done, total } => {
            format!(
                "{{\"event\":\"progress\",\"phase\":\"{}\",\"done\":{done},\"total\":{total}}}",
                phase.name()
            )
        }
        Event::Warning(w) => format!("{{\"event\":\"warning\",\"message\":{}}}", json_str(w)),
        Event::SlotState { slot, state } => {
            format!(
                "{{\"event\":\"slot_state\",\"slot\":\"{slot}\",\"state\":\"{}\"}}",
                state.name()
            )
        }
        Event::Pending { slot, tries } => {
            format!("{{\"event\":\"pending\",\"slot\":\"{slot}\",\"tries\":{tries}}}")
        }
        other => format!(
            "{{\"event\":\"info\",\"message\":{}}}",
            json_str(&format!("{other:?}"))
        ),
    }
}
