//! `fwpack-updater fleet`: a hawkBit DDI client (crate `ddi`) on the
//! running system. It polls the server, reports the device's
//! configuration when asked, installs a deployment's `.fwi` through the
//! same engine as `apply` (streamed from the artifact URL, every chunk
//! authenticated, a delta from the active slot, Range resume through the
//! journal; a deployment with a `.fwi` per chunk as one transaction of
//! `updater::txn`, all groups switching together), and reports the
//! result only once it is known: `success`
//! after the new slot booted and was confirmed (`mark-good`), `failure`
//! when its trial fell back.
//!
//! What must survive the reboot between "installed" and "confirmed" is
//! one small file, `{fleet_state_dir}/action` (the action id, slot and
//! image id), on storage both slots see (`/data` by default). It is kept
//! apart from the state area's journal, which belongs to the apply engine.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ddi::{Auth, Ddi, DdiConfig, Deployment, Feedback, Handling, Window};
use imagesource::{HttpOptions, Spec};
use updater::{Access, ApplyOptions, Event, FileStorage, Phase, Seed, Slot, StateArea};

use crate::cmd::{self, Fail, USAGE_CODE};
use crate::fleet_stop::{Stop, StopFlag, Stoppable};

pub const HELP: &str = "\
usage: fwpack-updater fleet [--once] [--config FILE] [--cycles N]
        [--target DEV] [--key PEM | --keys DIR]... [--ca FILE] [--pin sha256/BASE64]...
        [--max-rate RATE] [--tries N] [--timeout SECS]

Polls a hawkBit DDI server (hawkBit, goosebit, ...) and installs its
deployments' signed .fwi images into the inactive slot; the result is
reported after the new slot booted and was confirmed (mark-good), or
failed its trial. Configured by the fleet_* keys of FILE (default
/etc/fwpack/updater.conf; see docs/FORMAT.md and docs/FLEET.md).
--once: one poll (for timers); else a daemon polling at the server's
interval, bounded by fleet_poll_min/fleet_poll_max (--cycles N: stop
after N polls).";

const DEFAULT_CONFIG: &str = "/etc/fwpack/updater.conf";
const DEFAULT_STATE_DIR: &str = "/data/fwpack";
/// Poll interval when the server names none.
const DEFAULT_SLEEP: Duration = Duration::from_secs(300);
/// Raw bytes between journal checkpoints of a download.
const CHECKPOINT: u64 = 4 << 20;
/// Most progress reports per download (every 10 %).
const PROGRESS_STEP: u64 = 10;
/// A progress report answered later than this turns the poll's others
/// off (a loopback or LAN answer takes milliseconds).
const SLOW_REPORT: Duration = Duration::from_secs(10);

/// What an oversized download (`fleet_max_download`) gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Oversize {
    /// Wait: an `attempt` download is left for later; a `forced` one (the
    /// operator insists) goes ahead.
    Defer,
    /// `closed`/`failure` with the plan's numbers, whatever the handling.
    Refuse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Confirm {
    /// Give consent to every action awaiting it.
    Auto,
    Deny,
    /// Leave it to the operator (the action stays waiting).
    Wait,
}

struct Conf {
    server: String,
    tenant: String,
    controller_id: Option<String>,
    auth: Auth,
    ca: Option<PathBuf>,
    pins: Vec<[u8; 32]>,
    poll_min: Duration,
    poll_max: Duration,
    max_rate: Option<u64>,
    /// Most image bytes a deployment may fetch (its delta plan's).
    max_download: Option<u64>,
    oversize: Oversize,
    state_dir: PathBuf,
    confirm: Confirm,
    reboot: bool,
    tries: u8,
}

fn secs(v: &str, key: &str) -> Result<Duration, String> {
    v.parse::<u64>()
        .ok()
        .filter(|&s| s > 0 && s <= 30 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{key} = {v}: seconds, 1 to 2592000"))
}

/// The `fleet_*` keys of updater.conf (and `ca` as the default of
/// `fleet_ca`); every other key belongs to the PID-1 updater.
fn parse_conf(text: &str) -> Result<Conf, String> {
    let pairs = updater::keyvalue::parse(text).strict()?;
    let mut c = Conf {
        server: String::new(),
        tenant: "DEFAULT".into(),
        controller_id: None,
        auth: Auth::None,
        ca: None,
        pins: Vec::new(),
        poll_min: Duration::from_secs(30),
        poll_max: Duration::from_secs(86_400),
        max_rate: None,
        max_download: None,
        oversize: Oversize::Defer,
        state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        confirm: Confirm::Auto,
        reboot: true,
        tries: 3,
    };
    let mut fleet_ca = None;
    let mut token = None;
    for p in pairs {
        let (k, v) = (p.key, p.value);
        let err = |why: String| format!("line {}: {k}: {why}", p.line);
        match k {
            "fleet_server" => c.server = v.to_string(),
            "fleet_tenant" => c.tenant = v.to_string(),
            "fleet_controller_id" => c.controller_id = Some(v.to_string()),
            "fleet_target_token" | "fleet_gateway_token" => {
                if token.is_some() {
                    return Err(err(
                        "give fleet_target_token or fleet_gateway_token, not both".into(),
                    ));
                }
                token = Some(if k == "fleet_target_token" {
                    Auth::Target(v.to_string())
                } else {
                    Auth::Gateway(v.to_string())
                });
            }
            "ca" if v != "none" => c.ca = Some(PathBuf::from(v)),
            "fleet_ca" => fleet_ca = Some(v),
            "fleet_pin" => {
                for pin in v.split(',').filter(|s| !s.is_empty()) {
                    c.pins.push(imagesource::parse_pin(pin).map_err(err)?);
                }
            }
            "fleet_poll_min" => c.poll_min = secs(v, k).map_err(err)?,
            "fleet_poll_max" => c.poll_max = secs(v, k).map_err(err)?,
            "fleet_max_rate" => {
                c.max_rate = Some(crate::config::parse_size(v).map_err(err)?).filter(|&r| r > 0)
            }
            "fleet_max_download" => {
                c.max_download = Some(crate::config::parse_size(v).map_err(err)?).filter(|&r| r > 0)
            }
            "fleet_oversize" => {
                c.oversize = match v {
                    "defer" => Oversize::Defer,
                    "refuse" => Oversize::Refuse,
                    _ => return Err(err(format!("`{v}`: defer or refuse"))),
                }
            }
            "fleet_state_dir" => c.state_dir = PathBuf::from(v),
            "fleet_confirm" => {
                c.confirm = match v {
                    "auto" => Confirm::Auto,
                    "deny" => Confirm::Deny,
                    "wait" => Confirm::Wait,
                    _ => return Err(err(format!("`{v}`: auto, deny or wait"))),
                }
            }
            "fleet_reboot" => {
                c.reboot = match v {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(err(format!("`{v}`: yes or no"))),
                }
            }
            "fleet_tries" => {
                c.tries = v
                    .parse()
                    .ok()
                    .filter(|&t: &u8| t > 0)
                    .ok_or_else(|| err(format!("`{v}`: 1..=255")))?
            }
            _ => {}
        }
    }
    match fleet_ca {
        Some("none") => c.ca = None,
        Some(p) => c.ca = Some(PathBuf::from(p)),
        None => {}
    }
    c.auth = token.unwrap_or(Auth::None);
    if c.server.is_empty() {
        return Err("fleet_server is not set".into());
    }
    if c.poll_min > c.poll_max {
        return Err("fleet_poll_min is larger than fleet_poll_max".into());
    }
    Ok(c)
}

/// A stable id for a device without a configured one: the hardware's
/// serial number (device tree), else the DMI product UUID, else the
/// system's machine id.
fn device_id() -> Option<String> {
    [
        "/proc/device-tree/serial-number",
        "/sys/class/dmi/id/product_uuid",
        "/etc/machine-id",
    ]
    .iter()
    .find_map(|p| {
        let raw = std::fs::read(p).ok()?;
        let id: String = raw
            .iter()
            .map(|&b| b as char)
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(64)
            .collect();
        (!id.is_empty()).then(|| format!("fwpack-{}", id.to_ascii_lowercase()))
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// In the slot, complete, not pending: the maintenance window was
    /// closed (or `update` was `skip`).
    Downloaded,
    /// Pending or booted: the result is known after the reboot.
    Installed,
}

/// The action whose result is not reported yet.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    action: String,
    slot: Slot,
    image_id: [u8; 32],
    version: u64,
    stage: Stage,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Pending {
    fn path(dir: &Path) -> PathBuf {
        dir.join("action")
    }

    fn load(dir: &Path) -> Result<Option<Pending>, String> {
        let p = Self::path(dir);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", p.display())),
        };
        let bad = |why: &str| format!("{}: {why}", p.display());
        let pairs = updater::keyvalue::parse(&text)
            .strict()
            .map_err(|e| bad(&e))?;
        let get = |k: &str| {
            pairs
                .iter()
                .find(|q| q.key == k)
                .map(|q| q.value)
                .ok_or_else(|| bad(&format!("no {k}")))
        };
        let id = get("image_id")?;
        let mut image_id = [0u8; 32];
        if id.len() != 64 {
            return Err(bad("image_id"));
        }
        for (i, b) in image_id.iter_mut().enumerate() {
            *b = id
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("image_id"))?;
        }
        let action = get("action")?.to_string();
        ddi::check_id(&action).map_err(|e| bad(&e))?;
        Ok(Some(Pending {
            action,
            slot: get("slot")?.parse().map_err(|_| bad("slot"))?,
            image_id,
            version: get("version")?.parse().map_err(|_| bad("version"))?,
            stage: match get("stage")? {
                "downloaded" => Stage::Downloaded,
                "installed" => Stage::Installed,
                _ => return Err(bad("stage")),
            },
        }))
    }

    /// Written to a temporary file, synced and renamed: a power cut
    /// leaves the old file or the new one.
    fn save(&self, dir: &Path) -> Result<(), String> {
        let text = format!(
            "action = {}\nslot = {}\nimage_id = {}\nversion = {}\nstage = {}\n",
            self.action,
            self.slot,
            hex(&self.image_id),
            self.version,
            match self.stage {
                Stage::Downloaded => "downloaded",
                Stage::Installed => "installed",
            }
        );
        let io = |e: std::io::Error| format!("{}: {e}", dir.display());
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join("action.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, Self::path(dir)).map_err(io)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    fn remove(dir: &Path) -> Result<(), String> {
        remove_if_present(&Self::path(dir))
    }
}

/// The action deferred by `fleet_max_download`, and the limit it was
/// over: the same deployment under the same limit is not planned again
/// at every poll (its head, index and a read of the whole active slot).
struct Deferred;

impl Deferred {
    fn path(dir: &Path) -> PathBuf {
        dir.join("deferred")
    }

    /// The deferred action id, if it was deferred under `limit`.
    fn load(dir: &Path, limit: Option<u64>) -> Result<Option<String>, String> {
        let p = Self::path(dir);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", p.display())),
        };
        let pairs = updater::keyvalue::parse(&text)
            .strict()
            .map_err(|e| format!("{}: {e}", p.display()))?;
        let get = |k: &str| pairs.iter().find(|q| q.key == k).map(|q| q.value);
        let same = get("limit").and_then(|v| v.parse::<u64>().ok()) == limit;
        Ok(get("action").filter(|_| same).map(str::to_string))
    }

    fn save(dir: &Path, action: &str, limit: u64) -> Result<(), String> {
        let io = |e: std::io::Error| format!("{}: {e}", dir.display());
        std::fs::create_dir_all(dir).map_err(io)?;
        // Losing it to a power cut costs one more plan, nothing else.
        std::fs::write(
            Self::path(dir),
            format!("action = {action}\nlimit = {limit}\n"),
        )
        .map_err(io)
    }

    fn remove(dir: &Path) -> Result<(), String> {
        remove_if_present(&Self::path(dir))
    }
}

/// Removes `p`; already gone is fine.
fn remove_if_present(p: &Path) -> Result<(), String> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("{}: {e}", p.display())),
        _ => Ok(()),
    }
}

fn ddi_fail(e: ddi::Error) -> Fail {
    let code = match &e {
        ddi::Error::Source(s) if !s.is_source_failure() => 4,
        ddi::Error::Source(_) | ddi::Error::Status { .. } => cmd::SOURCE_CODE,
        ddi::Error::Malformed { .. } | ddi::Error::Link { .. } | ddi::Error::Unreadable { .. } => 4,
        ddi::Error::Config(_) => USAGE_CODE,
    };
    Fail {
        msg: e.to_string(),
        code,
    }
}

struct Device {
    target: PathBuf,
    loc: updater::StateLocation,
    keys: fwimage::TrustedKeys,
    http: HttpOptions,
    conf: Conf,
    tries: u8,
    ddi: Ddi,
    /// Progress reports are off for the rest of this poll (one failed or
    /// was slow).
    quiet: AtomicBool,
}

pub fn main(args: &[String]) -> Result<(), Fail> {
    crate::log::init();
    let mut once = false;
    let mut cycles: Option<u64> = None;
    let mut config = PathBuf::from(DEFAULT_CONFIG);
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--once" => once = true,
            "--config" | "--cycles" => {
                let v = it.next().ok_or_else(|| Fail {
                    msg: format!("{a} needs a value\n\n{HELP}"),
                    code: USAGE_CODE,
                })?;
                if a == "--config" {
                    config = PathBuf::from(v);
                } else {
                    cycles = Some(v.parse().ok().filter(|&n| n > 0).ok_or_else(|| Fail {
                        msg: format!("--cycles {v}: a count > 0"),
                        code: USAGE_CODE,
                    })?);
                }
            }
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            _ => rest.push(a.clone()),
        }
    }
    let o = cmd::parse_opts(&rest)?;
    if !o.positional.is_empty() {
        return Err(Fail {
            msg: format!("fleet takes no SOURCE\n\n{HELP}"),
            code: USAGE_CODE,
        });
    }
    let text = std::fs::read_to_string(&config)
        .map_err(|e| Fail::from(format!("{}: {e}", config.display())))?;
    let conf = parse_conf(&text).map_err(|e| Fail {
        msg: format!("{}: {e}", config.display()),
        code: USAGE_CODE,
    })?;
    let (target, loc, _, _) = cmd::whereabouts(&o)?;
    let keys = cmd::trusted_keys(&o)?;
    let mut http = cmd::http_options(&o);
    if o.ca.is_none() && conf.ca.is_some() {
        http.tls.ca_file = conf.ca.clone();
    }
    if o.pins.is_empty() {
        http.tls.pins = conf.pins.clone();
    }
    if o.max_rate.is_none() {
        http.max_rate = conf.max_rate;
    }
    let controller_id = match conf.controller_id.clone().or_else(device_id) {
        Some(id) => id,
        None => return Err(Fail {
            msg:
                "no fleet_controller_id, and no device serial number or machine id to take one from"
                    .into(),
            code: USAGE_CODE,
        }),
    };
    // API requests have a deadline of their own, the download none (the
    // minimum rate ends a stalled one).
    let mut api_http = http.clone();
    api_http.deadline = Some(Duration::from_secs(60));
    let ddi = Ddi::new(&DdiConfig {
        server: conf.server.clone(),
        tenant: conf.tenant.clone(),
        controller_id: controller_id.clone(),
        auth: conf.auth.clone(),
        http: api_http,
    })
    .map_err(ddi_fail)?;
    crate::log!("fleet: controller {controller_id} polls {}", ddi.base_url());
    let mut dev = Device {
        target,
        loc,
        keys,
        http,
        tries: o.tries.unwrap_or(conf.tries),
        conf,
        ddi,
        quiet: AtomicBool::new(false),
    };
    let mut n = 0u64;
    let mut backoff = dev.conf.poll_min;
    loop {
        n += 1;
        let sleep = match dev.cycle() {
            Ok(s) => {
                backoff = dev.conf.poll_min;
                s
            }
            Err(f) if once => return Err(f),
            Err(f) => {
                crate::log!("fleet: {} (next poll in {} s)", f.msg, backoff.as_secs());
                let s = backoff;
                backoff = (backoff * 2).min(dev.conf.poll_max);
                s
            }
        };
        if once || cycles.is_some_and(|c| n >= c) {
            return Ok(());
        }
        std::thread::sleep(sleep);
    }
}

impl Device {
    /// One poll and whatever it asks for; returns the time to the next.
    fn cycle(&mut self) -> Result<Duration, Fail> {
        self.quiet.store(false, Ordering::Relaxed);
        let base = self.ddi.poll().map_err(ddi_fail)?;
        let sleep = base
            .sleep
            .unwrap_or(DEFAULT_SLEEP)
            .clamp(self.conf.poll_min, self.conf.poll_max);
        if let Some(href) = &base.config_data {
            // Informational: a server whose configData fails (or links
            // off its origin) must not hold every update and every
            // result hostage; it asks again at the next poll.
            if let Err(f) = self.put_config(href) {
                crate::log!("fleet: configuration data not sent: {}", f.msg);
            }
        }
        if let Some(href) = &base.cancel_action {
            self.cancel(href)?;
            return Ok(sleep);
        }
        let consented = match &base.confirmation_base {
            Some(href) => self.confirmation(href)?,
            None => true,
        };
        if let Some(p) = Pending::load(&self.conf.state_dir)? {
            if p.stage == Stage::Installed {
                // Still in its trial, or just reported: this poll's links
                // predate the report, the next poll has fresh ones.
                self.settle(&p)?;
                return Ok(sleep);
            }
        }
        match &base.deployment {
            // A server that asks for consent and offers the deployment in
            // the same breath does not get to skip fleet_confirm.
            Some(_) if !consented => {
                crate::log!("fleet: a deployment awaits consent that fleet_confirm did not give; not installed");
            }
            Some(href) => self.deploy(href)?,
            None => {}
        }
        Ok(sleep)
    }

    fn area(&self, access: Access) -> Result<(FileStorage, StateArea), Fail> {
        let mut st = FileStorage::open(&self.target, access)?;
        let area = StateArea::read(&mut st, self.loc)?;
        Ok((st, area))
    }

    fn put_config(&self, href: &str) -> Result<(), Fail> {
        let (_, area) = self.area(Access::ReadOnly)?;
        let b = area.boot();
        let active = b.slot(b.active);
        let mut data = BTreeMap::new();
        data.insert("board".to_string(), area.layout().board.clone());
        data.insert("active_slot".into(), b.active.to_string());
        data.insert("active_version".into(), active.version.to_string());
        data.insert("active_label".into(), active.label.clone());
        data.insert("active_image_id".into(), hex(&active.image_id));
        data.insert(
            "pending_slot".into(),
            b.pending.map_or("none".into(), |s| s.to_string()),
        );
        if let Some(p) = b.pending {
            data.insert("pending_version".into(), b.slot(p).version.to_string());
        }
        // The names goosebit reads (`DeviceManager.update_config_data`).
        data.insert("hw_boardname".into(), area.layout().board.clone());
        data.insert(
            "sw_version".into(),
            if active.label.is_empty() {
                active.version.to_string()
            } else {
                active.label.clone()
            },
        );
        data.insert(
            "updater_version".into(),
            env!("CARGO_PKG_VERSION").to_string(),
        );
        self.ddi.put_config(href, &data).map_err(ddi_fail)?;
        crate::log!("fleet: configuration data sent");
        Ok(())
    }

    fn report(&self, action: &str, f: Feedback) {
        // Progress is best effort: a lost report must not stop an install,
        // nor a slow one stall it (the engine waits for each answer, up to
        // the API deadline, a dozen times per install). After one that
        // failed or was slow, the poll's other `proceeding` reports are
        // skipped (`downloaded` and `scheduled`, one each at most, and
        // the final status, `close`'s, never are).
        if self.quiet.load(Ordering::Relaxed) && f.execution == ddi::Execution::Proceeding {
            return;
        }
        let t = std::time::Instant::now();
        let r = self.ddi.feedback(action, &f);
        if let Err(e) = &r {
            crate::log!("fleet: feedback for action {action} not sent: {e}");
        }
        if r.is_err() || t.elapsed() > SLOW_REPORT {
            crate::log!("fleet: action {action}: no more progress reports at this poll");
            self.quiet.store(true, Ordering::Relaxed);
        }
    }

    /// The final status; the pending file goes only once the server took it.
    fn close(&self, action: &str, ok: bool, details: String) -> Result<(), Fail> {
        crate::log!(
            "fleet: action {action}: {}: {details}",
            if ok { "success" } else { "failure" }
        );
        match self.ddi.feedback(action, &Feedback::closed(ok, details)) {
            Ok(()) => {}
            // hawkBit: 404, the action is unknown; 410, no longer active
            // (canceled or replaced on the server). The result will never
            // be taken, and a pending result is settled before any new
            // deployment is looked at: kept, it would hold every later
            // update back for good.
            Err(ddi::Error::Status {
                status: status @ (404 | 410),
                ..
            }) => crate::log!(
                "fleet: action {action}: the server answered {status} to its result; dropped"
            ),
            Err(e) => return Err(ddi_fail(e)),
        }
        Pending::remove(&self.conf.state_dir).map_err(Fail::from)
    }

    /// After the reboot: success, failure, or (nothing sent) still waiting.
    fn settle(&self, p: &Pending) -> Result<(), Fail> {
        let (_, area) = self.area(Access::ReadOnly)?;
        let b = area.boot();
        let info = b.slot(p.slot);
        let verdict = if info.image_id != p.image_id {
            Some((
                false,
                format!("slot {} no longer holds the installed image", p.slot),
            ))
        } else if b.pending == Some(p.slot) {
            None
        } else if b.active == p.slot && b.confirmed {
            Some((
                true,
                format!(
                    "slot {} booted version {} and confirmed it",
                    p.slot, p.version
                ),
            ))
        } else if b.active == p.slot {
            None
        } else if info.fell_back {
            Some((
                false,
                format!(
                    "the trial of version {} in slot {} failed: it was not confirmed within its boot tries and the device fell back to slot {} (version {})",
                    p.version,
                    p.slot,
                    b.active,
                    b.slot(b.active).version
                ),
            ))
        } else {
            Some((
                false,
                format!("slot {} was dropped before it booted", p.slot),
            ))
        };
        match verdict {
            None => Ok(()),
            Some((ok, why)) => {
                self.close(&p.action, ok, why)?;
                if ok {
                    // What hawkBit asks for after a successful update
                    // anyway; goosebit learns the new version only so.
                    let href = format!("{}/configData", self.ddi.base_url());
                    if let Err(f) = self.put_config(&href) {
                        crate::log!("fleet: configuration data not sent: {}", f.msg);
                    }
                }
                Ok(())
            }
        }
    }

    fn cancel(&self, href: &str) -> Result<(), Fail> {
        let c = self.ddi.cancel(href).map_err(ddi_fail)?;
        let mut detail = format!("action {}: nothing of it was installed", c.stop_id);
        if let Some(p) = Pending::load(&self.conf.state_dir)?.filter(|p| p.action == c.stop_id) {
            let (mut st, mut area) = self.area(Access::ReadWrite)?;
            let b = area.boot().clone();
            if b.active == p.slot {
                let f = Feedback {
                    execution: ddi::Execution::Rejected,
                    finished: ddi::Finished::None,
                    progress: None,
                    details: vec![format!("slot {} already runs the update", p.slot)],
                };
                self.ddi.cancel_feedback(&c.id, &f).map_err(ddi_fail)?;
                return Ok(());
            }
            if b.pending == Some(p.slot) {
                area.fallback(&mut st)?;
                detail = format!("slot {} was pending; it will not boot", p.slot);
            } else {
                detail = format!("slot {} was written but never made pending", p.slot);
            }
            Pending::remove(&self.conf.state_dir)?;
        }
        Deferred::remove(&self.conf.state_dir)?;
        crate::log!("fleet: canceled: {detail}");
        self.ddi
            .cancel_feedback(&c.id, &Feedback::closed(true, detail))
            .map_err(ddi_fail)
    }

    /// Answers a consent request per `fleet_confirm`; true when consent
    /// was given.
    fn confirmation(&self, href: &str) -> Result<bool, Fail> {
        if ddi::confirmation_action(href).is_none() {
            return Ok(false);
        }
        let yes = match self.conf.confirm {
            Confirm::Wait => return Ok(false),
            Confirm::Auto => true,
            Confirm::Deny => false,
        };
        self.ddi
            .confirm(href, yes, "fwpack-updater (fleet_confirm)")
            .map_err(ddi_fail)?;
        Ok(yes)
    }

    fn deploy(&self, href: &str) -> Result<(), Fail> {
        let d = match self.ddi.deployment(href) {
            Ok(d) => d,
            // Refused whatever the next poll brings: say so, once per
            // poll at most, instead of failing every poll in silence.
            Err(ddi::Error::Unreadable { id, reason }) => {
                return self.close(&id, false, format!("refused: {reason}"))
            }
            Err(e) => return Err(ddi_fail(e)),
        };
        if let Some(p) = Pending::load(&self.conf.state_dir)? {
            if p.action == d.id && p.stage == Stage::Downloaded {
                return self.install_downloaded(&d, &p);
            }
            if p.action == d.id || p.stage == Stage::Installed {
                return Ok(());
            }
        }
        if d.download == Handling::Skip {
            crate::log!("fleet: action {}: download is `skip`; waiting", d.id);
            return Ok(());
        }
        let limit = self.limit_for(&d);
        if limit.is_some() && Deferred::load(&self.conf.state_dir, limit)?.as_ref() == Some(&d.id) {
            // Deferred at an earlier poll and nothing changed: no second
            // head, index and seed-slot read for the same answer.
            return Ok(());
        }
        let parts = {
            let (_, area) = self.area(Access::ReadOnly)?;
            match check_chunks(&d, area.layout()) {
                Ok(p) => p,
                Err(why) => return self.close(&d.id, false, why),
            }
        };
        if !parts.is_empty() {
            let install = d.update != Handling::Skip && d.window != Some(Window::Unavailable);
            crate::log!(
                "fleet: action {}: {} parts ({}){}",
                d.id,
                parts.len(),
                parts
                    .iter()
                    .map(|p| format!("{}: {}", p.group, p.url))
                    .collect::<Vec<_>>()
                    .join(", "),
                if install {
                    ""
                } else {
                    ", download only (maintenance window)"
                }
            );
            self.report(
                &d.id,
                Feedback::proceeding(format!(
                    "downloading {} parts as one transaction: {}",
                    parts.len(),
                    parts
                        .iter()
                        .map(|p| format!("{} ({})", p.name, p.group))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
            let r = self.apply_txn(&d.id, &parts, install, limit);
            return self.applied(&d, install, r);
        }
        let (url, size) = match d.fwi() {
            Ok(a) => match &a.href {
                Some(h) if matches!(Spec::parse(h), Spec::Url(_)) => (h.clone(), a.size),
                _ => {
                    return self.close(
                        &d.id,
                        false,
                        format!("artifact {}: no http(s) download link", a.filename),
                    )
                }
            },
            Err(why) => return self.close(&d.id, false, why),
        };
        let install = d.update != Handling::Skip && d.window != Some(Window::Unavailable);
        crate::log!(
            "fleet: action {}: {url} ({} bytes){}",
            d.id,
            size.unwrap_or(0),
            if install {
                ""
            } else {
                ", download only (maintenance window)"
            }
        );
        self.report(&d.id, Feedback::proceeding(format!("downloading {url}")));
        let r = self.apply(&d.id, &url, install, limit);
        self.applied(&d, install, r)
    }

    /// Reports how an apply (one image or a transaction) of `d` ended.
    fn applied(
        &self,
        d: &Deployment,
        install: bool,
        result: Result<Applied, Fail>,
    ) -> Result<(), Fail> {
        match result {
            Ok(Applied::Done(r)) => {
                Deferred::remove(&self.conf.state_dir)?;
                let p = Pending {
                    action: d.id.clone(),
                    slot: r.slot,
                    image_id: r.image_id,
                    version: r.version,
                    stage: if install {
                        Stage::Installed
                    } else {
                        Stage::Downloaded
                    },
                };
                p.save(&self.conf.state_dir)?;
                let summary = format!(
                    "version {} in slot {}{}: {} bytes fetched, {} copied from the active slot",
                    r.version, r.slot, r.what, r.fetched, r.from_seed
                );
                if install {
                    self.installed(&p, &summary)
                } else {
                    self.report(
                        &d.id,
                        Feedback {
                            execution: ddi::Execution::Downloaded,
                            finished: ddi::Finished::None,
                            progress: None,
                            details: vec![format!(
                                "downloaded {summary}; installs when the maintenance window opens"
                            )],
                        },
                    );
                    Ok(())
                }
            }
            Ok(Applied::Running { slot, version }) => {
                Deferred::remove(&self.conf.state_dir)?;
                self.close(
                    &d.id,
                    true,
                    format!(
                        "slot {slot} already runs this image (version {version}); nothing written"
                    ),
                )
            }
            Ok(Applied::Oversize { fetch, len }) => self.oversize(d, fetch, len),
            Ok(Applied::Canceled { cancel, detail }) => {
                Deferred::remove(&self.conf.state_dir)?;
                crate::log!("fleet: canceled: {detail}");
                // hawkBit's DDI docs (cancelAction feedback,
                // `status.execution`): the target confirms a cancellation
                // with `closed` and `status.result.finished` `success`
                // (the action becomes CANCELED; `rejected` would keep it
                // running). That ends the deployment too: a `closed`
                // `failure` on deploymentBase would turn it into ERROR
                // ("CLOSED … FAILURE → ERROR") and leave the cancel
                // unconfirmed, so none is sent — exactly one final status.
                self.ddi
                    .cancel_feedback(&cancel, &Feedback::closed(true, detail))
                    .map_err(ddi_fail)
            }
            // The network may come back: the journal keeps the progress and
            // the next poll resumes it (Range requests).
            Err(f) if f.code == cmd::SOURCE_CODE => {
                self.report(
                    &d.id,
                    Feedback::proceeding(format!(
                        "download interrupted, resuming at the next poll: {}",
                        f.msg
                    )),
                );
                Err(f)
            }
            Err(f) => self.close(&d.id, false, f.msg),
        }
    }

    /// The `fleet_max_download` that applies to `d`: in `defer` mode a
    /// `forced` download is the operator's decision and goes ahead.
    fn limit_for(&self, d: &Deployment) -> Option<u64> {
        match self.conf.oversize {
            Oversize::Defer if d.download == Handling::Forced => None,
            _ => self.conf.max_download,
        }
    }

    /// The delta plan fetches more than `fleet_max_download`.
    fn oversize(&self, d: &Deployment, fetch: u64, len: u64) -> Result<(), Fail> {
        let why = format!(
            "the delta plan fetches {fetch} of {len} bytes, over fleet_max_download = {}",
            self.conf.max_download.unwrap_or(0)
        );
        if self.conf.oversize == Oversize::Refuse {
            Deferred::remove(&self.conf.state_dir)?;
            return self.close(&d.id, false, format!("refused: {why}"));
        }
        Deferred::save(
            &self.conf.state_dir,
            &d.id,
            self.conf.max_download.unwrap_or(0),
        )?;
        crate::log!("fleet: action {}: deferred: {why}", d.id);
        self.report(
            &d.id,
            Feedback {
                execution: ddi::Execution::Scheduled,
                finished: ddi::Finished::None,
                progress: None,
                details: vec![format!(
                    "deferred: {why}; downloads when the deployment is `forced` or the limit is raised"
                )],
            },
        );
        Ok(())
    }

    fn installed(&self, p: &Pending, summary: &str) -> Result<(), Fail> {
        self.report(
            &p.action,
            Feedback::proceeding(format!(
                "installed {summary}; rebooting into it, the result follows its confirmation"
            ))
            .with_progress(100, 100),
        );
        if self.conf.reboot {
            crate::log!("fleet: rebooting into slot {}", p.slot);
            let st = std::process::Command::new("reboot").status();
            if !st.as_ref().is_ok_and(|s| s.success()) {
                return Err(format!("reboot failed: {st:?}").into());
            }
        }
        Ok(())
    }

    /// A downloaded slot whose maintenance window opened: make it pending.
    fn install_downloaded(&self, d: &Deployment, p: &Pending) -> Result<(), Fail> {
        if d.update == Handling::Skip || d.window == Some(Window::Unavailable) {
            return Ok(());
        }
        let (mut st, mut area) = self.area(Access::ReadWrite)?;
        let info = area.boot().slot(p.slot);
        if info.image_id != p.image_id || info.state != updater::bootstate::SlotState::Complete {
            return self.close(
                &p.action,
                false,
                format!("slot {} no longer holds the downloaded image", p.slot),
            );
        }
        area.set_pending(&mut st, p.slot, self.tries)?;
        let p = Pending {
            stage: Stage::Installed,
            ..p.clone()
        };
        p.save(&self.conf.state_dir)?;
        self.installed(&p, &format!("version {} in slot {}", p.version, p.slot))
    }

    /// Applies `url`: one image for the whole slot.
    fn apply(
        &self,
        action: &str,
        url: &str,
        activate: bool,
        limit: Option<u64>,
    ) -> Result<Applied, Fail> {
        self.install(action, &[(url.to_string(), Vec::new())], activate, limit)
    }

    /// Applies the `.fwi` of every chunk as one transaction.
    fn apply_txn(
        &self,
        action: &str,
        parts: &[ChunkPart],
        activate: bool,
        limit: Option<u64>,
    ) -> Result<Applied, Fail> {
        let sources: Vec<(String, Vec<String>)> = parts
            .iter()
            .map(|p| (p.url.clone(), vec![p.group.clone()]))
            .collect();
        self.install(action, &sources, activate, limit)
    }

    /// Applies `sources` (URL, and the slot groups it is for): one with no
    /// groups named is a plain apply, anything else a transaction
    /// (`updater::txn`). Stopped when the delta plan (the parts' sum)
    /// fetches more than `limit` or when the server cancels `action`
    /// meanwhile (a watcher polls the base resource every
    /// `fleet_poll_min` while it runs). Progress covers all parts.
    fn install(
        &self,
        action: &str,
        sources: &[(String, Vec<String>)],
        activate: bool,
        limit: Option<u64>,
    ) -> Result<Applied, Fail> {
        let txn = !matches!(sources, [(_, g)] if g.is_empty());
        let observer = || -> imagesource::Observer {
            Box::new(|e| {
                if let Some(line) = e.text() {
                    crate::log!("{line}");
                }
            })
        };
        let flag = StopFlag::default();
        let mut parts = Vec::with_capacity(sources.len());
        for (url, groups) in sources {
            let opened = imagesource::open(&Spec::Url(url.clone()), &self.http, Some(observer()))?;
            parts.push(updater::Part {
                len: opened.len,
                image: Stoppable {
                    inner: opened.source,
                    flag: flag.clone(),
                },
                source: url.clone(),
                groups: groups.clone(),
            });
        }
        let len: u64 = parts.iter().map(|p| p.len).sum();
        if !txn {
            // An action for the image the active slot already runs (the
            // same action offered again after its result, or a server
            // opening a new one at every poll) would be written into the
            // other slot and booted: a slot write and a reboot per action,
            // forever. Equal ids are equal signed heads, so the head needs
            // no authentication here; an unreadable one is the apply's
            // to report.
            let (_, area) = self.area(Access::ReadOnly)?;
            let b = area.boot();
            let active = b.slot(b.active);
            if active.state == updater::bootstate::SlotState::Complete
                && fwimage::ImageHead::read_from(&mut parts[0].image, len)
                    .is_ok_and(|h| updater::image_id(&h) == active.image_id)
            {
                return Ok(Applied::Running {
                    slot: b.active,
                    version: active.version,
                });
            }
        }
        {
            // Without a complete active slot there is no delta (the
            // engine's `Seed::Active`): the whole image is the plan, and
            // an oversized one is stopped before the engine touches the
            // inactive slot.
            let (_, area) = self.area(Access::ReadOnly)?;
            let b = area.boot();
            if b.slot(b.active).state != updater::bootstate::SlotState::Complete
                && limit.is_some_and(|l| len > l)
            {
                return Ok(Applied::Oversize { fetch: len, len });
            }
        }
        let mut st = FileStorage::open(&self.target, Access::ReadWrite)?;
        let opts = ApplyOptions {
            state_offset: self.loc.offset,
            state_copy_distance: self.loc.copy_distance,
            activate,
            tries: self.tries,
            seed: Seed::Active,
            source: sources.first().map(|s| s.0.clone()).unwrap_or_default(),
            // A power cut or a dropped link loses at most this much of a
            // download (the engine's default, 32 MiB, is for local
            // sources); a journal write per 4 MiB is no wear to speak of.
            checkpoint_interval: CHECKPOINT,
            ..ApplyOptions::default()
        };
        let mut next = 0u64;
        let mut fetch = len;
        let mut written = (0u64, 0u64);
        // A transaction's progress: the raw bytes of all parts, and of
        // the parts before the one being written.
        let (mut all, mut before) = (0u64, 0u64);
        let cancel_id = std::sync::Mutex::new(None);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let result = std::thread::scope(|s| {
            let (f, found) = (&flag, &cancel_id);
            s.spawn(move || self.watch_cancel(action, &done_rx, f, found));
            let mut plan = |fetch_bytes: u64, from_seed: u64, chunks: u64, seed: Slot| {
                fetch = fetch_bytes;
                let parts = if txn {
                    format!(" in {} parts", sources.len())
                } else {
                    String::new()
                };
                self.report(
                    action,
                    Feedback::proceeding(format!(
                        "delta plan: fetching {fetch_bytes} of {len} bytes{parts}; {from_seed} of {chunks} chunks copied from slot {seed}"
                    )),
                );
                if limit.is_some_and(|l| fetch_bytes > l) {
                    flag.stop(Stop::Oversize);
                }
            };
            let mut events = |e: &Event| match e {
                // Known before the first chunk is fetched: what this
                // update costs on the wire (a transaction's, summed over
                // its parts, comes before any part is written).
                Event::DeltaPlan {
                    seed,
                    chunks,
                    from_seed,
                    fetch_bytes,
                    ..
                } if !txn => plan(*fetch_bytes, *from_seed, *chunks, *seed),
                Event::TransactionPlan {
                    seed,
                    chunks,
                    from_seed,
                    fetch_bytes,
                } => plan(*fetch_bytes, *from_seed, *chunks, *seed),
                Event::TransactionAccepted { raw_bytes, .. } => all = *raw_bytes,
                Event::Part {
                    index,
                    count,
                    raw_before,
                    proving: false,
                } => {
                    before = *raw_before;
                    crate::log!("fleet: part {} of {count}", index + 1);
                }
                Event::Progress {
                    phase: Phase::Write,
                    done,
                    total,
                } if *total > 0 => {
                    let (done, total) = if txn {
                        (before + done, all.max(before + total))
                    } else {
                        (*done, *total)
                    };
                    written = (done, total);
                    let pct = done.saturating_mul(100) / total;
                    if pct >= next {
                        next = pct + PROGRESS_STEP;
                        self.report(
                            action,
                            Feedback::proceeding(format!("writing: {done} of {total} bytes"))
                                .with_progress(pct, 100),
                        );
                    }
                }
                _ => {}
            };
            let r = if txn {
                updater::apply_parts(&mut parts, &mut st, &self.keys, &opts, &mut events)
                    .map(|r| Done::of_txn(&r))
            } else {
                let p = parts.remove(0);
                updater::apply(p.image, p.len, &mut st, &self.keys, &opts, &mut events)
                    .map(|r| Done::of_image(&r))
            };
            drop(done_tx);
            r
        });
        drop(st);
        match flag.get() {
            None => Ok(Applied::Done(result?)),
            Some(Stop::Oversize) => Ok(Applied::Oversize { fetch, len }),
            Some(Stop::Cancel) => {
                let cancel = cancel_id
                    .into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .unwrap_or_else(|| action.to_string());
                let slot =
                    self.unpend_after_cancel(result.as_ref().ok().map(|r| (r.slot, r.image_id)))?;
                let (done, total) = written;
                Ok(Applied::Canceled {
                    cancel,
                    detail: format!(
                        "action {action} canceled while it was written ({done} of {total} bytes): slot {slot} is left `updating` and will not boot; the active slot stays"
                    ),
                })
            }
        }
    }

    /// Polls the base resource every `fleet_poll_min` until `done` is
    /// dropped (the apply ended) or a `cancelAction` for `action` shows.
    /// Every request has the API deadline, so the apply's end waits for
    /// at most one of them.
    fn watch_cancel(
        &self,
        action: &str,
        done: &std::sync::mpsc::Receiver<()>,
        flag: &StopFlag,
        found: &std::sync::Mutex<Option<String>>,
    ) {
        use std::sync::mpsc::RecvTimeoutError;
        while let Err(RecvTimeoutError::Timeout) = done.recv_timeout(self.conf.poll_min) {
            let href = match self.ddi.poll() {
                Ok(b) => b.cancel_action,
                Err(e) => {
                    crate::log!("fleet: poll during the download failed: {e}");
                    continue;
                }
            };
            let Some(href) = href else { continue };
            match self.ddi.cancel(&href) {
                Ok(c) if c.stop_id == action => {
                    crate::log!("fleet: action {action} canceled by the server; stopping");
                    *found.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.id);
                    flag.stop(Stop::Cancel);
                    return;
                }
                Ok(_) => {}
                Err(e) => crate::log!("fleet: cancel request unreadable: {e}"),
            }
        }
    }

    /// After a cancel: the inactive slot must not boot. A stopped apply
    /// left it `updating` (or, stopped before its first write, as it
    /// was). One that finished before the stop was seen (`done`: slot and
    /// image id) made it complete, maybe pending: it is marked `updating`
    /// again, its data kept, as after a cut mid-write. Returns the slot.
    fn unpend_after_cancel(&self, done: Option<(Slot, [u8; 32])>) -> Result<Slot, Fail> {
        let (mut st, mut area) = self.area(Access::ReadWrite)?;
        let Some((slot, id)) = done else {
            return Ok(area.boot().inactive());
        };
        area.update_boot(&mut st, |b| {
            let i = b.slot(slot).clone();
            if i.image_id == id {
                b.mark_updating(slot, i.version, i.image_id, &i.label);
            }
            Ok(())
        })?;
        Ok(slot)
    }
}

/// What an installed update is, for the action file and the report.
struct Done {
    slot: Slot,
    /// The slot's image id: the image's, or the transaction's.
    image_id: [u8; 32],
    version: u64,
    /// Image bytes read (over all parts).
    fetched: u64,
    /// Raw bytes copied from the active slot instead.
    from_seed: u64,
    /// "" for one image, " (N parts)" for a transaction.
    what: String,
}

impl Done {
    fn of_image(r: &updater::ApplyReport) -> Done {
        Done {
            slot: r.slot,
            image_id: r.image_id,
            version: r.version,
            fetched: r.image_bytes_read,
            from_seed: r.bytes_from_seed,
            what: String::new(),
        }
    }

    fn of_txn(r: &updater::TxnReport) -> Done {
        Done {
            slot: r.slot,
            image_id: r.id,
            version: r.version,
            fetched: r.applied.iter().map(|(_, a)| a.image_bytes_read).sum(),
            from_seed: r.applied.iter().map(|(_, a)| a.bytes_from_seed).sum(),
            what: format!(" ({} parts)", r.part_ids.len()),
        }
    }
}

/// How an apply through the fleet client ended.
enum Applied {
    Done(Done),
    /// Stopped by `fleet_max_download`: the plan fetches `fetch` of the
    /// image's `len` bytes.
    Oversize {
        fetch: u64,
        len: u64,
    },
    /// Not applied: the active slot `slot` already runs the image.
    Running {
        slot: Slot,
        version: u64,
    },
    /// Stopped by the server's cancel action `cancel`.
    Canceled {
        cancel: String,
        detail: String,
    },
}

/// One `.fwi` of a multi-chunk deployment: the slot group it is for
/// (its chunk's `part`) and where to fetch it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ChunkPart {
    group: String,
    name: String,
    url: String,
}

/// Multi-chunk deployments (DDI `deployment.chunks[]`, one per software
/// module): each chunk's `part` names a slot group of the layout, two
/// chunks never the same one. A single chunk is the whole slot whatever
/// its part (`os` on hawkBit's default type, goosebit's). When several
/// chunks carry a `.fwi` each, they are the parts of one transaction
/// (`updater::txn`): returned in the deployment's order, each to write
/// only its own group; all groups switch in one commit. With one `.fwi`
/// among them, that image carries every group (empty list).
fn check_chunks(d: &Deployment, layout: &updater::Layout) -> Result<Vec<ChunkPart>, String> {
    if d.chunks.len() <= 1 {
        return Ok(Vec::new());
    }
    let groups: Vec<&str> = layout.groups.iter().map(|g| g.name.as_str()).collect();
    let mut seen: Vec<&str> = Vec::new();
    for c in &d.chunks {
        if !groups.contains(&c.part.as_str()) {
            return Err(format!(
                "chunk `{}` (part `{}`) maps to no slot group of board {} (groups: {})",
                c.name,
                c.part,
                layout.board,
                groups.join(", ")
            ));
        }
        if seen.contains(&c.part.as_str()) {
            return Err(format!("two chunks map to slot group `{}`", c.part));
        }
        seen.push(&c.part);
    }
    let mut parts = Vec::new();
    for c in &d.chunks {
        let mut fwi = c.artifacts.iter().filter(|a| a.filename.ends_with(".fwi"));
        let Some(a) = fwi.next() else { continue };
        if fwi.next().is_some() {
            return Err(format!(
                "chunk `{}` carries more than one .fwi artifact",
                c.name
            ));
        }
        let url = match &a.href {
            Some(h) if matches!(Spec::parse(h), Spec::Url(_)) => h.clone(),
            _ => return Err(format!("artifact {}: no http(s) download link", a.filename)),
        };
        parts.push(ChunkPart {
            group: c.part.clone(),
            name: c.name.clone(),
            url,
        });
    }
    if parts.len() <= 1 {
        parts.clear();
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_keys() {
        let c = parse_conf(
            "target = /dev/mmcblk0\nca = /etc/ca.pem\nfleet_server = http://h:1\nfleet_target_token = t\nfleet_poll_min = 5\nfleet_max_rate = 1M\nfleet_reboot = no\n",
        )
        .unwrap();
        assert_eq!(c.server, "http://h:1");
        assert_eq!(c.auth, Auth::Target("t".into()));
        assert_eq!(c.ca.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(c.poll_min, Duration::from_secs(5));
        assert_eq!(c.max_rate, Some(1 << 20));
        assert!(!c.reboot);
        for bad in [
            "",
            "fleet_server = http://h\nfleet_target_token = a\nfleet_gateway_token = b\n",
            "fleet_server = http://h\nfleet_poll_min = 0\n",
            "fleet_server = http://h\nfleet_poll_min = 10\nfleet_poll_max = 5\n",
            "fleet_server = http://h\nfleet_confirm = maybe\n",
        ] {
            assert!(parse_conf(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn oversize_keys() {
        let c = parse_conf("fleet_server = http://h\nfleet_max_download = 5M\n").unwrap();
        assert_eq!(
            (c.max_download, c.oversize),
            (Some(5 << 20), Oversize::Defer)
        );
        let c = parse_conf("fleet_server = http://h\nfleet_oversize = refuse\n").unwrap();
        assert_eq!((c.max_download, c.oversize), (None, Oversize::Refuse));
        for bad in ["fleet_max_download = lots", "fleet_oversize = maybe"] {
            assert!(parse_conf(&format!("fleet_server = http://h\n{bad}\n")).is_err());
        }
    }

    #[test]
    fn chunks_map_to_slot_groups() {
        let range = updater::SlotRange {
            offset: 1 << 20,
            size: 1 << 20,
        };
        let group = |name: &str| updater::SlotGroup {
            name: name.into(),
            slots: [range, range],
        };
        let layout = updater::Layout {
            board: "b".into(),
            state_offset: 0,
            copy_distance: 0,
            groups: vec![group("boot"), group("system")],
        };
        let chunk = |part: &str, file: &str| ddi::Chunk {
            part: part.into(),
            version: "1".into(),
            name: part.into(),
            artifacts: vec![ddi::Artifact {
                filename: file.into(),
                size: None,
                sha256: None,
                href: Some(format!("http://h/{file}")),
            }],
        };
        let dep = |chunks| Deployment {
            id: "1".into(),
            download: Handling::Forced,
            update: Handling::Forced,
            window: None,
            chunks,
        };
        // One chunk is the whole slot, whatever its part.
        assert_eq!(
            check_chunks(&dep(vec![chunk("os", "a.fwi")]), &layout),
            Ok(vec![])
        );
        // Several, one .fwi: it carries every group.
        let one = dep(vec![chunk("system", "a.fwi"), chunk("boot", "notes.txt")]);
        assert_eq!(check_chunks(&one, &layout), Ok(vec![]));
        // A .fwi per chunk: the parts of a transaction, in order.
        let two = dep(vec![chunk("system", "a.fwi"), chunk("boot", "b.fwi")]);
        assert_eq!(
            check_chunks(&two, &layout),
            Ok(vec![
                ChunkPart {
                    group: "system".into(),
                    name: "system".into(),
                    url: "http://h/a.fwi".into(),
                },
                ChunkPart {
                    group: "boot".into(),
                    name: "boot".into(),
                    url: "http://h/b.fwi".into(),
                },
            ])
        );
        let mut no_link = chunk("boot", "b.fwi");
        no_link.artifacts[0].href = None;
        let mut twice = chunk("boot", "b.fwi");
        twice.artifacts.push(twice.artifacts[0].clone());
        for (chunks, says) in [
            (
                vec![chunk("system", "a.fwi"), chunk("firmware", "f.bin")],
                "part `firmware`",
            ),
            (
                vec![chunk("system", "a.fwi"), chunk("system", "b.txt")],
                "two chunks",
            ),
            (
                vec![chunk("system", "a.fwi"), no_link],
                "no http(s) download link",
            ),
            (vec![chunk("system", "a.fwi"), twice], "more than one .fwi"),
        ] {
            let why = check_chunks(&dep(chunks), &layout).unwrap_err();
            assert!(why.contains(says), "{why}");
        }
    }

    #[test]
    fn deferred_remembers_the_limit() {
        let dir = std::env::temp_dir().join(format!("fwpack-fleet-def-{}", std::process::id()));
        Deferred::save(&dir, "5", 100).unwrap();
        assert_eq!(
            Deferred::load(&dir, Some(100)).unwrap().as_deref(),
            Some("5")
        );
        assert_eq!(Deferred::load(&dir, Some(200)).unwrap(), None);
        Deferred::remove(&dir).unwrap();
        assert_eq!(Deferred::load(&dir, Some(100)).unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pending_round_trip() {
        let dir = std::env::temp_dir().join(format!("fwpack-fleet-{}", std::process::id()));
        let p = Pending {
            action: "42".into(),
            slot: Slot::B,
            image_id: [0xab; 32],
            version: 7,
            stage: Stage::Downloaded,
        };
        p.save(&dir).unwrap();
        assert_eq!(Pending::load(&dir).unwrap(), Some(p));
        Pending::remove(&dir).unwrap();
        assert_eq!(Pending::load(&dir).unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
