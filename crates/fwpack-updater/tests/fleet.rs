//! `fwpack-updater fleet` against the DDI test server of testkit (written
//! from hawkBit's DDI docs), with the artifact on nginx: poll →
//! confirmation → configData → deployment → delta download → apply →
//! "reboot" (the boot flow's decision, taken on the disk file with the
//! engine's own `boot_attempt`) → mark-good → `closed` `success`; a trial
//! that falls back reports `failure` with the reason; maintenance window
//! and `cancelAction`.

mod qemu_support;

use std::path::PathBuf;
use std::process::{Command, Output};

use qemu_support::*;
use testkit::ddi::{Action, Chunk, DdiServer};
use testkit::http::Nginx;
use updater::{Access, FileStorage, Slot, StateArea, StateLocation};

const CONTROLLER: &str = "dev-1";
const TOKEN: &str = "s3cret";

struct Rig {
    work: tempfile::TempDir,
    disk: PathBuf,
    nginx: Nginx,
    ddi: DdiServer,
    fwi_len: u64,
}

/// 4 MiB of noise (incompressible, so bytes on the wire are honest).
fn noise(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..4 << 20)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn rig(tries: u8) -> Rig {
    let work = tempfile::tempdir().unwrap();
    let v1 = noise(1);
    // Version 2: 1 % of the bytes changed, in one run.
    let mut v2 = v1.clone();
    let n = v2.len() / 100;
    for b in &mut v2[1 << 20..(1 << 20) + n] {
        *b ^= 0x5a;
    }
    let p1 = work.path().join("v1.bin");
    let p2 = work.path().join("v2.bin");
    std::fs::write(&p1, &v1).unwrap();
    std::fs::write(&p2, &v2).unwrap();
    let disk = disk(work.path(), false, &image(&p1, 1));
    let www = work.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let fwi = image(&p2, 2);
    std::fs::write(www.join("v2.fwi"), &fwi).unwrap();
    std::fs::write(work.path().join("key.pem"), public_pem()).unwrap();
    let nginx = Nginx::start(&www).unwrap();
    let ddi = DdiServer::start("DEFAULT", CONTROLLER, Some(TOKEN)).unwrap();
    std::fs::write(
        work.path().join("updater.conf"),
        format!(
            "target = /dev/unused\nfleet_server = {}\nfleet_controller_id = {CONTROLLER}\nfleet_target_token = {TOKEN}\nfleet_poll_min = 1\nfleet_reboot = no\nfleet_tries = {tries}\nfleet_state_dir = {}\n",
            ddi.url(),
            work.path().join("state").display()
        ),
    )
    .unwrap();
    Rig {
        fwi_len: fwi.len() as u64,
        work,
        disk,
        nginx,
        ddi,
    }
}

impl Rig {
    fn action(&self, id: &str, window: Option<&str>) -> Action {
        Action {
            id: id.into(),
            download: "forced".into(),
            update: "forced".into(),
            window: window.map(str::to_string),
            filename: "v2.fwi".into(),
            url: self.nginx.url("/v2.fwi"),
            size: self.fwi_len,
            sha256: "0".repeat(64),
            version: "2".into(),
        }
    }

    fn once(&self) -> Output {
        Command::new(host_updater())
            .args(["fleet", "--once", "--config"])
            .arg(self.work.path().join("updater.conf"))
            .arg("--target")
            .arg(&self.disk)
            .arg("--key")
            .arg(self.work.path().join("key.pem"))
            .output()
            .unwrap()
    }

    fn once_ok(&self) -> String {
        let out = self.once();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "fleet --once failed: {err}");
        err
    }

    fn area(&self) -> (FileStorage, StateArea) {
        let mut st = FileStorage::open(&self.disk, Access::ReadWrite).unwrap();
        let a = StateArea::read(
            &mut st,
            StateLocation::new(
                updater::DEFAULT_STATE_OFFSET,
                updater::DEFAULT_STATE_COPY_DISTANCE,
            ),
        )
        .unwrap();
        (st, a)
    }

    /// What the PID-1 updater does at boot: spend a try of the pending
    /// slot (or fall back when none is left); returns the slot it boots.
    fn reboot(&self) -> Slot {
        let (mut st, mut a) = self.area();
        a.boot_attempt(&mut st).unwrap().slot
    }

    fn mark_good(&self, slot: Slot) {
        let out = Command::new(host_updater())
            .args(["mark-good", "--slot", &slot.to_string(), "--target"])
            .arg(&self.disk)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn action_file(&self) -> PathBuf {
        self.work.path().join("state/action")
    }
}

fn details(fb: &[serde_json::Value]) -> Vec<String> {
    fb.iter()
        .flat_map(|f| {
            f["status"]["details"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|d| d.as_str().map(str::to_string))
        .collect()
}

#[test]
fn fleet_ddi_update_is_reported_after_the_confirmed_reboot() {
    let r = rig(3);
    r.ddi.deploy(r.action("7", None));
    r.ddi.require_confirmation();

    // First poll: configData is asked for, the action waits for consent.
    r.once_ok();
    let cfg = r.ddi.config().expect("configData sent");
    assert_eq!(cfg["mode"], "merge");
    assert_eq!(cfg["data"]["board"], BOARD);
    assert_eq!(cfg["data"]["active_slot"], "A");
    assert_eq!(cfg["data"]["active_version"], "1");
    assert_eq!(r.ddi.confirmations(), ["confirmed"]);
    assert!(r
        .ddi
        .seen()
        .iter()
        .all(|s| s.authorization.as_deref() == Some("TargetToken s3cret")));

    // Second poll: download and install into B.
    r.once_ok();
    let fb = r.ddi.feedback("7");
    let d = details(&fb);
    let plan = d
        .iter()
        .find(|l| l.starts_with("delta plan"))
        .expect("delta plan reported");
    assert!(
        fb.iter()
            .any(|f| f["status"]["result"]["progress"]["cnt"] == 100),
        "{fb:?}"
    );
    assert!(fb.iter().all(|f| f["status"]["execution"] == "proceeding"));
    assert!(r.ddi.outcomes().is_empty(), "no result before the reboot");
    let (_, a) = r.area();
    assert_eq!(a.boot().pending, Some(Slot::B));
    assert!(r.action_file().is_file());

    // Bytes on the wire: the delta from slot A, not the whole image.
    let wire = r.nginx.body_bytes_for("/v2.fwi");
    eprintln!(
        "fleet 1 % change: {wire} bytes fetched of a {} byte image ({plan})",
        r.fwi_len
    );
    assert!(wire < r.fwi_len / 4, "{wire} of {}", r.fwi_len);

    // Polled again before the reboot: still nothing final.
    r.once_ok();
    assert!(r.ddi.outcomes().is_empty());

    assert_eq!(r.reboot(), Slot::B);
    r.mark_good(Slot::B);
    r.once_ok();
    let out = r.ddi.outcomes();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].finished, "success");
    assert!(out[0].details[0].contains("confirmed"), "{:?}", out[0]);
    assert!(!r.action_file().exists());
    // hawkBit asks for configData again after an update: the new version.
    r.once_ok();
    assert_eq!(r.ddi.config().unwrap()["data"]["active_version"], "2");
    assert_eq!(r.ddi.outcomes().len(), 1, "exactly one final status");
}

#[test]
fn fleet_ddi_failed_trial_reports_failure_with_the_reason() {
    let r = rig(1);
    r.ddi.deploy(r.action("9", None));
    r.once_ok();
    let (_, a) = r.area();
    assert_eq!(a.boot().pending, Some(Slot::B));
    // The trial boot never confirms; the next boot falls back to A.
    assert_eq!(r.reboot(), Slot::B);
    assert_eq!(r.reboot(), Slot::A);
    r.once_ok();
    let out = r.ddi.outcomes();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].finished, "failure");
    assert!(
        out[0].details[0].contains("fell back to slot A"),
        "{:?}",
        out[0]
    );
    assert!(!r.action_file().exists());
}

#[test]
fn fleet_ddi_maintenance_window_and_cancel() {
    let r = rig(3);
    r.ddi.deploy(r.action("11", Some("unavailable")));
    // Window closed: downloaded into B, not made pending.
    r.once_ok();
    let (_, a) = r.area();
    assert_eq!(a.boot().pending, None);
    assert_eq!(a.boot().slot(Slot::B).version, 2);
    assert!(r
        .ddi
        .feedback("11")
        .iter()
        .any(|f| f["status"]["execution"] == "downloaded"));
    // Still closed: nothing changes, nothing is fetched again.
    let fetched = r.nginx.body_bytes_for("/v2.fwi");
    r.once_ok();
    assert_eq!(r.nginx.body_bytes_for("/v2.fwi"), fetched);
    assert_eq!(r.area().1.boot().pending, None);
    // Window open: installed (pending) without another download.
    r.ddi.set_window(Some("available"));
    r.once_ok();
    assert_eq!(r.area().1.boot().pending, Some(Slot::B));
    assert_eq!(r.nginx.body_bytes_for("/v2.fwi"), fetched);
    // Canceled before the reboot: B is no longer pending, the cancel is
    // confirmed, and no deployment result follows.
    r.ddi.cancel();
    r.once_ok();
    let (_, a) = r.area();
    assert_eq!(a.boot().pending, None);
    assert_eq!(r.reboot(), Slot::A);
    let out = r.ddi.outcomes();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].finished, "canceled");
    assert!(out[0].details[0].contains("will not boot"), "{:?}", out[0]);
    assert!(!r.action_file().exists());
    r.once_ok();
    assert_eq!(r.ddi.outcomes().len(), 1);
}

#[test]
fn fleet_ddi_refused_image_closes_with_failure() {
    let r = rig(3);
    // The server points at something that is not a signed image.
    std::fs::write(r.work.path().join("www/bad.fwi"), vec![0u8; 4096]).unwrap();
    let mut a = r.action("12", None);
    a.url = r.nginx.url("/bad.fwi");
    r.ddi.deploy(a);
    r.once_ok();
    let out = r.ddi.outcomes();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].finished, "failure");
    assert_eq!(r.area().1.boot().pending, None);
    // A wrong token is refused by the server: the poll fails (exit 9).
    let conf = r.work.path().join("updater.conf");
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace(TOKEN, "wrong");
    std::fs::write(&conf, text).unwrap();
    let out = r.once();
    assert_eq!(
        out.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A measurement, not a check (run by hand with `--ignored --nocapture`):
/// the daemon's RSS and CPU time while it polls an idle server every
/// second (the fastest `fleet_poll_min` allows) for `FLEET_IDLE_SECS`
/// (default 120) seconds.
#[test]
#[ignore]
fn fleet_idle_cost_measure() {
    let r = rig(3);
    let secs: u64 = std::env::var("FLEET_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    // FLEET_IDLE_UPDATER: another build to measure (the device build).
    let bin = std::env::var_os("FLEET_IDLE_UPDATER").map_or_else(host_updater, PathBuf::from);
    let mut child = Command::new(bin)
        .args(["fleet", "--config"])
        .arg(r.work.path().join("updater.conf"))
        .arg("--target")
        .arg(&r.disk)
        .arg("--key")
        .arg(r.work.path().join("key.pem"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = stat.rsplit_once(')').unwrap().1;
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // utime + stime (fields 14 and 15; 12 and 13 after the name).
        f[11] + f[12]
    };
    let rss = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_string()))
            .unwrap()
    };
    std::thread::sleep(std::time::Duration::from_secs(5));
    let t0 = ticks();
    let start = std::time::Instant::now();
    let mut max_rss = String::new();
    while start.elapsed().as_secs() < secs {
        std::thread::sleep(std::time::Duration::from_secs(5));
        max_rss = rss();
    }
    let used = ticks() - t0;
    let polls = r.ddi.seen().iter().filter(|s| s.method == "GET").count();
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "fleet daemon idle: {polls} polls in {secs} s (+5 s warm-up); RSS {max_rss}; CPU {used} ticks ({} ms at 100 Hz, {:.3} %)",
        used * 10,
        used as f64 * 10.0 / (secs as f64 * 1000.0) * 100.0
    );
}

/// A 12 MiB update with nothing in common with slot A (all of it is
/// fetched), served by nginx at `rate` bytes/s: slow enough to interrupt.
struct Slow {
    work: tempfile::TempDir,
    disk: PathBuf,
    nginx: Nginx,
    ddi: DdiServer,
    conf: PathBuf,
    fwi_len: u64,
}

fn slow(rate: u64) -> Slow {
    let work = tempfile::tempdir().unwrap();
    let v1 = noise(3);
    let p1 = work.path().join("v1.bin");
    std::fs::write(&p1, &v1[..1 << 20]).unwrap();
    let disk = disk(work.path(), false, &image(&p1, 1));
    let p2 = work.path().join("v2.bin");
    let v2: Vec<u8> = (0..3).flat_map(|i| noise(10 + i)).collect();
    std::fs::write(&p2, &v2).unwrap();
    let www = work.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let fwi = image(&p2, 2);
    std::fs::write(www.join("v2.fwi"), &fwi).unwrap();
    std::fs::write(work.path().join("key.pem"), public_pem()).unwrap();
    let nginx = Nginx::start_limited(&www, Some(rate)).unwrap();
    let ddi = DdiServer::start("DEFAULT", CONTROLLER, None).unwrap();
    let conf = work.path().join("updater.conf");
    std::fs::write(
        &conf,
        format!(
            "fleet_server = {}\nfleet_controller_id = {CONTROLLER}\nfleet_poll_min = 1\nfleet_reboot = no\nfleet_state_dir = {}\n",
            ddi.url(),
            work.path().join("state").display()
        ),
    )
    .unwrap();
    ddi.deploy(Action {
        id: "21".into(),
        download: "forced".into(),
        update: "forced".into(),
        window: None,
        filename: "v2.fwi".into(),
        url: nginx.url("/v2.fwi"),
        size: fwi.len() as u64,
        sha256: "0".repeat(64),
        version: "2".into(),
    });
    Slow {
        fwi_len: fwi.len() as u64,
        work,
        disk,
        nginx,
        ddi,
        conf,
    }
}

impl Slow {
    fn run(&self) -> std::process::Child {
        Command::new(host_updater())
            .args(["fleet", "--once", "--config"])
            .arg(&self.conf)
            .arg("--target")
            .arg(&self.disk)
            .arg("--key")
            .arg(self.work.path().join("key.pem"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits until the device reported `pct` % of the write.
    fn wait_progress(&self, c: &mut std::process::Child, pct: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !self
            .ddi
            .feedback("21")
            .iter()
            .any(|f| f["status"]["result"]["progress"]["cnt"].as_u64() >= Some(pct))
        {
            assert!(std::time::Instant::now() < deadline, "no progress");
            assert!(c.try_wait().unwrap().is_none(), "finished before {pct} %");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

#[test]
fn fleet_ddi_power_cut_mid_download_resumes_with_range() {
    let r = slow(2 << 20);
    let (disk, nginx, ddi) = (&r.disk, &r.nginx, &r.ddi);
    // The power cut: the process dies mid-download, once it reported half
    // of the write (past the 4 MiB checkpoint; the rate cap keeps the rest
    // in flight).
    let mut c = r.run();
    r.wait_progress(&mut c, 50);
    let _ = c.kill();
    let _ = c.wait();
    assert!(ddi.outcomes().is_empty());
    let out = r.run().wait_with_output().unwrap();
    assert!(out.status.success());
    let ranges: Vec<Option<String>> = nginx
        .access_log()
        .iter()
        .filter(|e| e.path() == "/v2.fwi")
        .map(|e| e.range.clone())
        .collect();
    let resumed = nginx
        .access_log()
        .iter()
        .filter(|e| e.path() == "/v2.fwi")
        .flat_map(|e| e.range_starts())
        .max()
        .unwrap_or(0);
    assert!(
        resumed >= 4 << 20,
        "no resume from a checkpoint: {ranges:?}"
    );
    let total = nginx.body_bytes_for("/v2.fwi");
    eprintln!(
        "power cut: {total} bytes served for a {} byte image; requests {ranges:?}",
        r.fwi_len
    );
    assert!(total < r.fwi_len * 3 / 2, "{total}");
    let mut st = FileStorage::open(disk, Access::ReadWrite).unwrap();
    let mut a = StateArea::read(&mut st, loc()).unwrap();
    assert_eq!(a.boot().pending, Some(Slot::B));
    assert_eq!(a.boot_attempt(&mut st).unwrap().slot, Slot::B);
    drop(st);
    let out = Command::new(host_updater())
        .args(["mark-good", "--slot", "B", "--target"])
        .arg(disk)
        .output()
        .unwrap();
    assert!(out.status.success());
    for _ in 0..2 {
        assert!(r.run().wait().unwrap().success());
    }
    let outcomes = ddi.outcomes();
    assert_eq!(outcomes.len(), 1, "exactly one final status: {outcomes:?}");
    assert_eq!(outcomes[0].finished, "success");
}

fn loc() -> StateLocation {
    StateLocation::new(
        updater::DEFAULT_STATE_OFFSET,
        updater::DEFAULT_STATE_COPY_DISTANCE,
    )
}

#[test]
fn fleet_ddi_cancel_stops_a_running_download() {
    let r = slow(2 << 20);
    let mut c = r.run();
    // Cancel in the middle of the write: the watcher sees it at its next
    // poll (fleet_poll_min = 1 s), the source's next read fails.
    r.wait_progress(&mut c, 20);
    r.ddi.cancel();
    let out = c.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let outcomes = r.ddi.outcomes();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}\n{log}");
    assert_eq!(outcomes[0].finished, "canceled");
    assert!(
        outcomes[0].details[0].contains("will not boot"),
        "{:?}",
        outcomes[0]
    );
    // The deployment itself got no closed status (the cancel ended it).
    assert!(r
        .ddi
        .feedback("21")
        .iter()
        .all(|f| f["status"]["execution"] == "proceeding"));
    // Not all of it was fetched.
    let served = r.nginx.body_bytes_for("/v2.fwi");
    eprintln!(
        "canceled at 20 % of the write: {served} of {} bytes served",
        r.fwi_len
    );
    assert!(served < r.fwi_len * 9 / 10, "{served} of {}", r.fwi_len);
    // B is `updating` (never booted), A is still what boots.
    let mut st = FileStorage::open(&r.disk, Access::ReadWrite).unwrap();
    let mut a = StateArea::read(&mut st, loc()).unwrap();
    assert_eq!(a.boot().pending, None);
    assert_eq!(
        a.boot().slot(Slot::B).state,
        updater::SlotState::Updating,
        "{:?}",
        a.boot()
    );
    assert_eq!(a.boot().slot(Slot::A).state, updater::SlotState::Complete);
    assert_eq!(a.boot_attempt(&mut st).unwrap().slot, Slot::A);
    drop(st);
    assert!(!r.work.path().join("state/action").exists());
    // Later polls change nothing.
    assert!(r.run().wait().unwrap().success());
    assert_eq!(r.ddi.outcomes().len(), 1);
}

/// The bytes the delta plan says it fetches, from its feedback.
fn planned(fb: &[serde_json::Value]) -> u64 {
    details(fb)
        .iter()
        .find_map(|l| l.strip_prefix("delta plan: fetching "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("delta plan reported")
}

#[test]
fn fleet_ddi_oversized_attempt_download_is_deferred() {
    let r = rig(3);
    let conf = r.work.path().join("updater.conf");
    let base = std::fs::read_to_string(&conf).unwrap();
    // The 1 % change fetches one 256 KiB chunk: over a 100 KiB limit.
    std::fs::write(&conf, format!("{base}fleet_max_download = 100K\n")).unwrap();
    let mut a = r.action("31", None);
    a.download = "attempt".into();
    r.ddi.deploy(a.clone());
    r.once_ok();
    let fb = r.ddi.feedback("31");
    let plan = planned(&fb);
    assert!(plan > 100 << 10, "{plan}");
    let d = details(&fb);
    assert!(
        d.iter()
            .any(|l| l.starts_with("deferred:") && l.contains("fleet_max_download = 102400")),
        "{d:?}"
    );
    assert!(fb.iter().any(|f| f["status"]["execution"] == "scheduled"));
    assert!(r.ddi.outcomes().is_empty());
    // Head and index only: none of the planned data.
    let wire = r.nginx.body_bytes_for("/v2.fwi");
    eprintln!(
        "deferred: {wire} bytes fetched (head and index) for a plan of {plan} of {} bytes",
        r.fwi_len
    );
    assert!(wire < plan, "{wire} bytes fetched, plan {plan}");
    let (_, area) = r.area();
    assert_eq!(area.boot().pending, None);
    assert_eq!(area.boot().active, Slot::A);
    assert_ne!(
        area.boot().slot(Slot::B).state,
        updater::SlotState::Complete
    );
    // The next poll does not plan it again.
    r.once_ok();
    assert_eq!(r.nginx.body_bytes_for("/v2.fwi"), wire);
    assert_eq!(r.ddi.feedback("31").len(), fb.len());
    // The operator forces it: the limit gives way (fleet_oversize = defer).
    a.download = "forced".into();
    r.ddi.deploy(a);
    r.once_ok();
    assert_eq!(r.area().1.boot().pending, Some(Slot::B));
    assert!(r.ddi.outcomes().is_empty());
}

#[test]
fn fleet_ddi_oversized_download_is_refused_with_the_plan() {
    let r = rig(3);
    let conf = r.work.path().join("updater.conf");
    let base = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        format!("{base}fleet_max_download = 100K\nfleet_oversize = refuse\n"),
    )
    .unwrap();
    r.ddi.deploy(r.action("32", None));
    r.once_ok();
    let plan = planned(&r.ddi.feedback("32"));
    let out = r.ddi.outcomes();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].finished, "failure");
    let why = &out[0].details[0];
    assert!(
        why.starts_with("refused:") && why.contains(&format!("fetches {plan} of {}", r.fwi_len)),
        "{why}"
    );
    assert!(r.nginx.body_bytes_for("/v2.fwi") < plan);
    let (_, area) = r.area();
    assert_eq!(area.boot().pending, None);
    assert_eq!(area.boot().active, Slot::A);
    assert!(!r.action_file().exists());
    // Within the limit the same update goes through.
    std::fs::write(&conf, format!("{base}fleet_max_download = 1M\n")).unwrap();
    r.ddi.deploy(r.action("33", None));
    r.once_ok();
    assert_eq!(r.area().1.boot().pending, Some(Slot::B));
}

#[test]
fn fleet_ddi_chunk_without_a_slot_group_is_refused() {
    let r = rig(3);
    std::fs::write(r.work.path().join("www/u-boot.bin"), b"boot").unwrap();
    r.ddi.deploy(r.action("41", None));
    r.ddi.set_chunks(vec![
        Chunk {
            part: "system".into(),
            name: "rootfs".into(),
            filename: "v2.fwi".into(),
            url: r.nginx.url("/v2.fwi"),
            size: r.fwi_len,
        },
        Chunk {
            part: "bootloader".into(),
            name: "u-boot".into(),
            filename: "u-boot.bin".into(),
            url: r.nginx.url("/u-boot.bin"),
            size: 4,
        },
    ]);
    r.once_ok();
    let out = r.ddi.outcomes();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].finished, "failure");
    assert!(
        out[0].details[0].contains("part `bootloader`")
            && out[0].details[0].contains("groups: system"),
        "{:?}",
        out[0]
    );
    // Refused before anything was fetched or written.
    assert_eq!(r.nginx.body_bytes_for("/v2.fwi"), 0);
    assert_eq!(r.area().1.boot().slot(Slot::B).version, 0);
    // The same .fwi in a chunk named after its group installs.
    r.ddi.deploy(r.action("42", None));
    r.ddi.set_chunks(vec![Chunk {
        part: "system".into(),
        name: "rootfs".into(),
        filename: "v2.fwi".into(),
        url: r.nginx.url("/v2.fwi"),
        size: r.fwi_len,
    }]);
    r.once_ok();
    assert_eq!(r.area().1.boot().pending, Some(Slot::B));
}

fn package_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../buildroot-external/package/fwpack")
        .join(name)
}

/// The unit as Buildroot installs it, checked by systemd itself where
/// Debian's systemd is installed (`systemd-analyze verify` also checks
/// that ExecStart's program exists: it is pointed at this build, the
/// arguments kept). Man pages are not checked: device roots have none.
#[test]
fn fleet_systemd_unit_verifies() {
    let text = std::fs::read_to_string(package_file("fwpack-fleet.service")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for want in [
        "ExecStart=/usr/bin/fwpack-updater fleet",
        "Restart=on-failure",
        "After=network-online.target fwpack-mark-good.service",
        "WantedBy=multi-user.target",
    ] {
        assert!(lines.contains(&want), "{want} missing");
    }
    // It writes the slot: nothing may hide or deny block devices.
    for never in ["PrivateDevices=", "DevicePolicy=", "DeviceAllow="] {
        assert!(!text.contains(never), "{never}");
    }
    if !testkit::tools::require("systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("fwpack-fleet.service");
    std::fs::write(
        &unit,
        text.replace(
            "ExecStart=/usr/bin/fwpack-updater",
            &format!("ExecStart={}", host_updater().display()),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Unknown keys and bad values are warnings only: none either.
    assert!(
        !err.contains("fwpack-fleet.service"),
        "systemd-analyze: {err}"
    );
}

/// The init script: `sh -n`, then start and stop against a stub program
/// that records its arguments and its stop, with the pid file in a
/// temporary root.
#[test]
fn fleet_init_script_starts_and_stops_the_daemon() {
    let script = package_file("S99fwpack-fleet");
    let st = Command::new("sh").arg("-n").arg(&script).status().unwrap();
    assert!(st.success());
    if !testkit::tools::require("start-stop-daemon") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let stub = r.join("fwpack-updater");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\necho \"$@\" > {0}/args\ntrap 'echo stopped > {0}/stopped; exit 0' TERM\nwhile :; do sleep 1; done\n",
            r.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pidfile = r.join("fwpack-fleet.pid");
    let run = |what: &str| {
        let out = Command::new("sh")
            .arg(&script)
            .arg(what)
            .env("FWPACK_UPDATER", &stub)
            .env("FWPACK_PIDFILE", &pidfile)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{what}: {text}");
        text
    };
    assert!(run("start").ends_with("OK\n"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !r.join("args").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(r.join("args")).unwrap(), "fleet\n");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.rsplit_once(')').is_some_and(|(_, r)| r.starts_with(" Z")))
    };
    assert!(alive(pid));
    assert!(run("stop").ends_with("OK\n"));
    assert!(!alive(pid), "still running after stop");
    assert!(r.join("stopped").exists(), "not stopped by SIGTERM");
    assert!(!pidfile.exists());
    // Usage errors fail.
    let st = Command::new("sh")
        .arg(&script)
        .arg("bogus")
        .output()
        .unwrap();
    assert!(!st.status.success());
}

// Multi-chunk deployments with a `.fwi` per chunk: one transaction.

/// Two slot groups: `system` (4 MiB slots) and `boot` (8 MiB slots).
const SYS_SLOTS: [updater::SlotRange; 2] = [
    updater::SlotRange {
        offset: 8 * MIB,
        size: 4 * MIB,
    },
    updater::SlotRange {
        offset: 12 * MIB,
        size: 4 * MIB,
    },
];
const BOOT_SLOTS: [updater::SlotRange; 2] = [
    updater::SlotRange {
        offset: 16 * MIB,
        size: 8 * MIB,
    },
    updater::SlotRange {
        offset: 24 * MIB,
        size: 8 * MIB,
    },
];

/// A signed image with one uncompressed segment per (name, group, data).
fn signed(version: u64, segs: &[(&str, &str, &[u8])], key: &ed25519_dalek::SigningKey) -> Vec<u8> {
    let mut b = fwimage::ImageBuilder::new(BOARD, version)
        .and_then(|b| b.version_label(&format!("{version}.0.0")))
        .unwrap();
    for (name, target, data) in segs {
        b.add_segment(
            fwimage::SegmentSpec {
                name: name.to_string(),
                target: target.to_string(),
                target_offset: 0,
                compression: fwimage::Compression::None,
                level: None,
            },
            data.len() as u64,
            std::io::Cursor::new(data.to_vec()),
        )
        .unwrap();
    }
    let mut out = std::io::Cursor::new(Vec::new());
    b.write(&mut out, &mut |_| {}).unwrap();
    fwimage::insert_signature(&mut out, key).unwrap();
    out.into_inner()
}

fn fwi_id(img: &[u8]) -> [u8; 32] {
    let head =
        fwimage::ImageHead::read_from(&mut std::io::Cursor::new(img), img.len() as u64).unwrap();
    updater::image_id(&head)
}

struct Parts {
    rig: Rig,
    sys: Vec<u8>,
    boot: Vec<u8>,
    sys_fwi: Vec<u8>,
    boot_fwi: Vec<u8>,
}

/// Slot A holds version 1 of both groups (3 MiB `system`, 6 MiB
/// `boot`), confirmed; nginx (rate-capped with `rate`) serves version 2
/// as `system.fwi` (1 % of the rootfs changed) and `boot.fwi` (all new,
/// as `mangle_boot` leaves it), deployed as action 31 with a chunk each.
fn parts_rig(rate: Option<u64>, mangle_boot: impl FnOnce(Vec<u8>, &[u8]) -> Vec<u8>) -> Parts {
    let work = tempfile::tempdir().unwrap();
    let key = signing_key();
    let sys1 = noise(21)[..3 << 20].to_vec();
    let boot1: Vec<u8> = noise(22)
        .into_iter()
        .chain(noise(23))
        .take(6 << 20)
        .collect();
    let mut sys = sys1.clone();
    for b in &mut sys[1 << 20..(1 << 20) + sys1.len() / 100] {
        *b ^= 0x5a;
    }
    let boot: Vec<u8> = noise(24)
        .into_iter()
        .chain(noise(25))
        .take(6 << 20)
        .collect();
    let layout = updater::Layout::new(
        BOARD,
        StateLocation::default(),
        vec![
            updater::SlotGroup {
                name: "system".into(),
                slots: SYS_SLOTS,
            },
            updater::SlotGroup {
                name: "boot".into(),
                slots: BOOT_SLOTS,
            },
        ],
    )
    .unwrap();
    let disk = work.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(32 * MIB)
        .unwrap();
    let mut keys = fwimage::TrustedKeys::new();
    keys.add(key.verifying_key());
    {
        // Installed as a device would be: A written and pending, booted,
        // confirmed.
        let mut st = FileStorage::open(&disk, Access::ReadWrite).unwrap();
        let blank = updater::BootState {
            active: Slot::B,
            pending: None,
            tries_left: 0,
            confirmed: false,
            rollback_floor: 0,
            slots: [updater::SlotInfo::empty(), updater::SlotInfo::empty()],
        };
        updater::init_state_area(&mut st, &layout, &blank).unwrap();
        let v1 = signed(
            1,
            &[("rootfs", "system", &sys1), ("boot", "boot", &boot1)],
            &key,
        );
        let o = updater::ApplyOptions {
            slot: Some(Slot::A),
            ..Default::default()
        };
        updater::apply(
            std::io::Cursor::new(&v1),
            v1.len() as u64,
            &mut st,
            &keys,
            &o,
            &mut |_| {},
        )
        .unwrap();
        let mut a = StateArea::read(&mut st, loc()).unwrap();
        assert_eq!(a.boot_attempt(&mut st).unwrap().slot, Slot::A);
        a.confirm(&mut st, Slot::A).unwrap();
    }
    let sys_fwi = signed(2, &[("rootfs", "system", &sys)], &key);
    let boot_fwi = mangle_boot(signed(2, &[("boot", "boot", &boot)], &key), &boot);
    let www = work.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("system.fwi"), &sys_fwi).unwrap();
    std::fs::write(www.join("boot.fwi"), &boot_fwi).unwrap();
    std::fs::write(work.path().join("key.pem"), public_pem()).unwrap();
    let nginx = Nginx::start_limited(&www, rate).unwrap();
    let ddi = DdiServer::start("DEFAULT", CONTROLLER, Some(TOKEN)).unwrap();
    std::fs::write(
        work.path().join("updater.conf"),
        format!(
            "fleet_server = {}\nfleet_controller_id = {CONTROLLER}\nfleet_target_token = {TOKEN}\nfleet_poll_min = 1\nfleet_reboot = no\nfleet_state_dir = {}\n",
            ddi.url(),
            work.path().join("state").display()
        ),
    )
    .unwrap();
    let rig = Rig {
        fwi_len: (sys_fwi.len() + boot_fwi.len()) as u64,
        work,
        disk,
        nginx,
        ddi,
    };
    let mut a = rig.action("31", None);
    a.filename = "system.fwi".into();
    a.url = rig.nginx.url("/system.fwi");
    rig.ddi.deploy(a);
    rig.ddi.set_chunks(vec![
        Chunk {
            part: "system".into(),
            name: "rootfs".into(),
            filename: "system.fwi".into(),
            url: rig.nginx.url("/system.fwi"),
            size: sys_fwi.len() as u64,
        },
        Chunk {
            part: "boot".into(),
            name: "bootloader".into(),
            filename: "boot.fwi".into(),
            url: rig.nginx.url("/boot.fwi"),
            size: boot_fwi.len() as u64,
        },
    ]);
    Parts {
        rig,
        sys,
        boot,
        sys_fwi,
        boot_fwi,
    }
}

impl Parts {
    fn slot_b_holds_v2(&self) -> bool {
        let d = std::fs::read(&self.rig.disk).unwrap();
        let at = |r: updater::SlotRange, len: usize| &d[r.offset as usize..r.offset as usize + len];
        at(SYS_SLOTS[1], self.sys.len()) == self.sys.as_slice()
            && at(BOOT_SLOTS[1], self.boot.len()) == self.boot.as_slice()
    }

    fn txn_id(&self) -> [u8; 32] {
        updater::transaction_id(&[fwi_id(&self.sys_fwi), fwi_id(&self.boot_fwi)])
    }

    fn spawn(&self) -> std::process::Child {
        Command::new(host_updater())
            .args(["fleet", "--once", "--config"])
            .arg(self.rig.work.path().join("updater.conf"))
            .arg("--target")
            .arg(&self.rig.disk)
            .arg("--key")
            .arg(self.rig.work.path().join("key.pem"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// B pending → boot it → mark-good → the poll that reports.
    fn reboot_confirm_and_report(&self) {
        let (_, a) = self.rig.area();
        assert_eq!(a.boot().pending, Some(Slot::B));
        let bi = a.boot().slot(Slot::B);
        assert_eq!(bi.state, updater::SlotState::Complete);
        assert_eq!((bi.image_id, bi.version), (self.txn_id(), 2));
        assert!(self.slot_b_holds_v2());
        assert_eq!(self.rig.reboot(), Slot::B);
        self.rig.mark_good(Slot::B);
        self.rig.once_ok();
        self.rig.once_ok();
    }
}

#[test]
fn fleet_ddi_two_fwi_chunks_install_as_one_transaction() {
    let p = parts_rig(None, |f, _| f);
    let r = &p.rig;
    r.once_ok();
    let fb = r.ddi.feedback("31");
    let d = details(&fb);
    let plan = d
        .iter()
        .find(|l| l.starts_with("delta plan"))
        .expect("delta plan reported");
    assert!(
        plan.contains(&format!("of {} bytes in 2 parts", r.fwi_len)),
        "{plan}"
    );
    // One plan, before anything was written, summed over the parts.
    assert_eq!(d.iter().filter(|l| l.starts_with("delta plan")).count(), 1);
    // Progress over both parts: one rising sequence up to 100.
    let cnt: Vec<u64> = fb
        .iter()
        .filter_map(|f| f["status"]["result"]["progress"]["cnt"].as_u64())
        .collect();
    assert!(cnt.windows(2).all(|w| w[0] <= w[1]), "{cnt:?}");
    assert!(cnt.iter().any(|&c| c > 0 && c < 50), "{cnt:?}");
    assert!(cnt.iter().any(|&c| (50..100).contains(&c)), "{cnt:?}");
    assert_eq!(cnt.last(), Some(&100));
    let raw = (p.sys.len() + p.boot.len()) as u64;
    let writing: Vec<&String> = d.iter().filter(|l| l.starts_with("writing:")).collect();
    assert!(
        writing
            .iter()
            .all(|l| l.ends_with(&format!(" of {raw} bytes"))),
        "{writing:?}"
    );
    assert!(fb.iter().all(|f| f["status"]["execution"] == "proceeding"));
    assert!(r.ddi.outcomes().is_empty());
    // The system part came as a delta: far less than its image.
    let sys_bytes = r.nginx.body_bytes_for("/system.fwi");
    assert!(sys_bytes < p.sys_fwi.len() as u64 / 4, "{sys_bytes}");
    p.reboot_confirm_and_report();
    let outcomes = r.ddi.outcomes();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].finished, "success", "{outcomes:?}");
    let st = status_json(&r.disk);
    assert!(st.contains("\"active\":\"B\""), "{st}");
}

#[test]
fn fleet_ddi_failing_part_leaves_the_slot_unbootable_with_one_failure() {
    // A corrupted chunk in the second .fwi: found when it is read, after
    // the first part was written.
    let p = parts_rig(None, |mut f, _| {
        let at = f.len() - (1 << 20);
        f[at] ^= 0x20;
        f
    });
    let r = &p.rig;
    r.once_ok();
    r.once_ok();
    let outcomes = r.ddi.outcomes();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].finished, "failure", "{outcomes:?}");
    let (_, a) = r.area();
    assert_eq!(a.boot().pending, None);
    assert_eq!(a.boot().slot(Slot::B).state, updater::SlotState::Updating);
    assert_eq!(r.reboot(), Slot::A);
    assert!(!r.action_file().exists());

    // Signed by a key the device does not trust: refused before any write.
    let p = parts_rig(None, |_, boot| {
        let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        signed(2, &[("boot", "boot", boot)], &other)
    });
    let r = &p.rig;
    r.once_ok();
    let outcomes = r.ddi.outcomes();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].finished, "failure");
    let (_, a) = r.area();
    assert_eq!(a.boot().slot(Slot::B).state, updater::SlotState::Empty);
    assert_eq!(r.reboot(), Slot::A);
}

#[test]
fn fleet_ddi_power_cut_between_parts_resumes() {
    let p = parts_rig(Some(1 << 20), |f, _| f);
    let r = &p.rig;
    // Cut while the second part is written, past its first 4 MiB
    // checkpoint: at 80 % of the 9 MiB of both parts, 4.2 MiB of part 2
    // are written and 1.8 MiB (almost 2 s at the rate cap) are to come.
    let mut c = p.spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !r
        .ddi
        .feedback("31")
        .iter()
        .any(|f| f["status"]["result"]["progress"]["cnt"].as_u64() >= Some(80))
    {
        assert!(std::time::Instant::now() < deadline, "no progress");
        assert!(c.try_wait().unwrap().is_none(), "finished before the cut");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
    assert!(r.ddi.outcomes().is_empty());
    {
        let (_, a) = r.area();
        let bi = a.boot().slot(Slot::B);
        assert_eq!(bi.state, updater::SlotState::Updating);
        assert_eq!(bi.image_id, fwi_id(&p.boot_fwi), "cut in part 2");
    }
    let logged = r.nginx.access_log().len();
    let out = p.spawn().wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after: Vec<_> = r.nginx.access_log().split_off(logged);
    // Part 1 proven from the slot: only its head and index read again
    // (the first 64 KiB), none of its data (the first run fetched its
    // one changed chunk, after 1 MiB).
    let sys_requests: Vec<_> = after.iter().filter(|e| e.path() == "/system.fwi").collect();
    assert!(
        sys_requests
            .iter()
            .all(|e| e.range_starts().iter().all(|&s| s < 64 << 10)),
        "part 1 fetched again: {sys_requests:?}"
    );
    let sys: u64 = sys_requests.iter().map(|e| e.body_bytes_sent).sum();
    // Part 2 resumed with Range from its checkpoint.
    let resumed = after
        .iter()
        .filter(|e| e.path() == "/boot.fwi")
        .flat_map(|e| e.range_starts())
        .max()
        .unwrap_or(0);
    assert!(resumed >= 4 << 20, "no Range resume: {after:?}");
    let boot: u64 = after
        .iter()
        .filter(|e| e.path() == "/boot.fwi")
        .map(|e| e.body_bytes_sent)
        .sum();
    eprintln!(
        "cut in part 2: the restart fetched {sys} bytes of system.fwi, {boot} of boot.fwi ({} bytes), from offset {resumed}",
        p.boot_fwi.len()
    );
    assert!(boot < p.boot_fwi.len() as u64 / 2, "{boot}");
    // The restart's plan counts what is left, not the whole of part 2.
    let plans: Vec<u64> = details(&r.ddi.feedback("31"))
        .iter()
        .filter_map(|l| l.strip_prefix("delta plan: fetching "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(plans.len(), 2, "{plans:?}");
    assert!(plans[1] < p.boot_fwi.len() as u64 / 2, "{plans:?}");
    p.reboot_confirm_and_report();
    let outcomes = r.ddi.outcomes();
    assert_eq!(outcomes.len(), 1, "exactly one final status: {outcomes:?}");
    assert_eq!(outcomes[0].finished, "success");
}

#[test]
fn fleet_ddi_oversized_transaction_is_refused_with_the_summed_plan() {
    let p = parts_rig(None, |f, _| f);
    let r = &p.rig;
    // Part 1's delta alone (one changed chunk) is under the limit; with
    // part 2 (all new) the sum is over it.
    let conf = r.work.path().join("updater.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("fleet_max_download = 1M\nfleet_oversize = refuse\n");
    std::fs::write(&conf, text).unwrap();
    r.once_ok();
    let out = r.ddi.outcomes();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].finished, "failure");
    let why = &out[0].details[0];
    let fetch: u64 = why
        .strip_prefix("refused: the delta plan fetches ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{why}"));
    assert!(
        fetch > p.boot.len() as u64,
        "not the sum of the parts: {why}"
    );
    assert!(why.contains(&format!("of {} bytes", r.fwi_len)), "{why}");
    // Nothing written, and of part 2 only its head and index fetched.
    let (_, a) = r.area();
    assert_eq!(a.boot().slot(Slot::B).state, updater::SlotState::Empty);
    assert!(r.nginx.body_bytes_for("/boot.fwi") <= 128 << 10);
}

#[test]
fn fleet_ddi_transaction_waits_for_the_maintenance_window() {
    let p = parts_rig(None, |f, _| f);
    let r = &p.rig;
    r.ddi.set_window(Some("unavailable"));
    // Window closed: both parts written, proven and committed complete
    // with the transaction's id, not pending.
    r.once_ok();
    let (_, a) = r.area();
    assert_eq!(a.boot().pending, None);
    let bi = a.boot().slot(Slot::B);
    assert_eq!(bi.state, updater::SlotState::Complete);
    assert_eq!(bi.image_id, p.txn_id());
    assert!(r
        .ddi
        .feedback("31")
        .iter()
        .any(|f| f["status"]["execution"] == "downloaded"));
    let fetched = r.nginx.access_log().len();
    // Window open: pending without another download; then the usual end.
    r.ddi.set_window(Some("available"));
    r.once_ok();
    assert_eq!(r.nginx.access_log().len(), fetched);
    p.reboot_confirm_and_report();
    let out = r.ddi.outcomes();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].finished, "success");
}

/// A server that offers a finished action again (the same id, after its
/// `closed` `success`): the device must not install it a second time
/// (a slot write and a reboot per poll, forever); it repeats the result
/// it reported instead.
#[test]
fn fleet_finished_action_offered_again_is_not_reinstalled() {
    let r = rig(3);
    r.ddi.deploy(r.action("7", None));
    r.once_ok();
    assert_eq!(r.reboot(), Slot::B);
    r.mark_good(Slot::B);
    r.once_ok();
    assert_eq!(r.ddi.outcomes().len(), 1);
    let a_before = r.area().1.boot().slot(Slot::A).clone();
    // The server lost the result (or lies): the same action is open again.
    r.ddi.deploy(r.action("7", None));
    r.once_ok();
    let (_, a) = r.area();
    assert_eq!(a.boot().pending, None, "reinstalled");
    assert_eq!(a.boot().active, Slot::B);
    assert_eq!(a.boot().slot(Slot::A), &a_before, "slot A was written");
    let out = r.ddi.outcomes();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[1].id, "7");
    assert_eq!(out[1].finished, "success", "{out:?}");
    assert!(!r.action_file().exists());
}

/// A server that opens a new action for the image the device already
/// runs (a new id at every poll): closed `success` without a write or a
/// reboot, not a reinstall into the other slot at each poll.
#[test]
fn fleet_new_action_for_the_running_image_is_not_reinstalled() {
    let r = rig(3);
    r.ddi.deploy(r.action("7", None));
    r.once_ok();
    assert_eq!(r.reboot(), Slot::B);
    r.mark_good(Slot::B);
    r.once_ok();
    let a_before = r.area().1.boot().slot(Slot::A).clone();
    for id in ["8", "9"] {
        r.ddi.deploy(r.action(id, None));
        r.once_ok();
        let (_, a) = r.area();
        assert_eq!(a.boot().pending, None, "reinstalled by action {id}");
        assert_eq!(a.boot().slot(Slot::A), &a_before, "slot A was written");
        let out = r.ddi.outcomes();
        let last = out.last().unwrap();
        assert_eq!(
            (last.id.as_str(), last.finished.as_str()),
            (id, "success"),
            "{out:?}"
        );
        assert!(last.details[0].contains("already runs"), "{last:?}");
        assert!(!r.action_file().exists());
    }
}

/// A server whose configData resource fails (500) while it keeps asking
/// for it: the report is lost, but the deployment is still installed and
/// its result still reported (configData is informational; it must not
/// hold every update and every result hostage).
#[test]
fn fleet_failing_config_data_does_not_block_deployments() {
    let r = rig(3);
    r.ddi.fail_config(500);
    r.ddi.deploy(r.action("7", None));
    r.once_ok();
    assert_eq!(r.area().1.boot().pending, Some(Slot::B), "not installed");
    assert_eq!(r.reboot(), Slot::B);
    r.mark_good(Slot::B);
    r.once_ok();
    let out = r.ddi.outcomes();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].finished, "success");
}

/// A deployment with a readable id but a field the client refuses (here
/// a sha256 that is not 64 hex digits): the action is closed with
/// `failure` naming the field, not left running while every poll fails.
#[test]
fn fleet_unreadable_deployment_closes_with_failure() {
    let r = rig(3);
    let mut a = r.action("7", None);
    a.sha256 = "not-a-hash".into();
    r.ddi.deploy(a);
    r.once_ok();
    let out = r.ddi.outcomes();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].finished, "failure");
    assert!(out[0].details[0].contains("sha256"), "{:?}", out[0]);
    assert_eq!(r.area().1.boot().pending, None);
    assert_eq!(r.nginx.body_bytes_for("/v2.fwi"), 0, "fetched");
}

/// The action whose result is due vanished from the server (canceled or
/// replaced there during the trial boot: its feedback answers 410 Gone).
/// The result cannot be delivered, but it must not be retried forever:
/// the pending result is settled before any deployment is looked at, so
/// the device would never take another update.
#[test]
fn fleet_result_for_a_vanished_action_does_not_wedge_the_device() {
    let r = rig(3);
    r.ddi.deploy(r.action("7", None));
    r.once_ok();
    assert_eq!(r.reboot(), Slot::B);
    r.mark_good(Slot::B);
    // Replaced on the server: feedback for 7 is now 410.
    r.ddi.deploy(r.action("8", None));
    for _ in 0..3 {
        let _ = r.once();
    }
    assert!(
        !r.action_file().exists(),
        "the vanished action is still pending"
    );
    let out = r.ddi.outcomes();
    assert!(
        out.iter().any(|o| o.id == "8"),
        "action 8 never looked at: {out:?}"
    );
}

/// A server that answers each progress report only after 12 s (a drip,
/// or an overloaded one): the reports wait for their answers, so a dozen
/// of them held the install for minutes. After one that took longer
/// than 10 s (or failed) the rest of the poll's progress reports are
/// skipped; the install goes on.
#[test]
fn fleet_slow_feedback_does_not_stall_the_install() {
    let r = rig(3);
    r.ddi.slow_feedback(std::time::Duration::from_secs(12));
    r.ddi.deploy(r.action("7", None));
    r.once_ok();
    assert_eq!(r.area().1.boot().pending, Some(Slot::B));
    let sent = r.ddi.feedback("7");
    assert_eq!(sent.len(), 1, "{:?}", details(&sent));
}

/// `fleet_confirm = deny` (and `wait`) against a server that offers the
/// action awaiting consent as a deploymentBase as well: the device's
/// consent policy holds; nothing is fetched or written.
#[test]
fn fleet_withheld_consent_is_not_bypassed_by_a_deployment_link() {
    for (policy, said) in [("deny", vec!["denied"]), ("wait", vec![])] {
        let r = rig(3);
        let conf = r.work.path().join("updater.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&format!("fleet_confirm = {policy}\n"));
        std::fs::write(&conf, text).unwrap();
        r.ddi.deploy(r.action("7", None));
        r.ddi.require_confirmation();
        r.ddi.ignore_consent();
        r.once_ok();
        assert_eq!(r.ddi.confirmations(), said, "{policy}");
        assert_eq!(r.area().1.boot().pending, None, "{policy}: installed");
        assert_eq!(r.nginx.body_bytes_for("/v2.fwi"), 0, "{policy}: fetched");
        assert!(r.ddi.feedback("7").is_empty(), "{policy}");
    }
}
