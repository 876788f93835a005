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
use testkit::ddi::{Action, DdiServer};
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

#[test]
fn fleet_ddi_power_cut_mid_download_resumes_with_range() {
    let work = tempfile::tempdir().unwrap();
    let v1 = noise(3);
    let p1 = work.path().join("v1.bin");
    std::fs::write(&p1, &v1[..1 << 20]).unwrap();
    let disk = disk(work.path(), false, &image(&p1, 1));
    // 12 MiB with nothing in common with slot A: all of it is fetched.
    let p2 = work.path().join("v2.bin");
    let v2: Vec<u8> = (0..3).flat_map(|i| noise(10 + i)).collect();
    std::fs::write(&p2, &v2).unwrap();
    let www = work.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let fwi = image(&p2, 2);
    std::fs::write(www.join("v2.fwi"), &fwi).unwrap();
    std::fs::write(work.path().join("key.pem"), public_pem()).unwrap();
    let nginx = Nginx::start_limited(&www, Some(2 << 20)).unwrap();
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
    let run = || {
        Command::new(host_updater())
            .args(["fleet", "--once", "--config"])
            .arg(&conf)
            .arg("--target")
            .arg(&disk)
            .arg("--key")
            .arg(work.path().join("key.pem"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // The power cut: the process dies mid-download, once it reported half
    // of the write (past the 4 MiB checkpoint; the rate cap keeps the rest
    // in flight).
    let mut c = run();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !ddi
        .feedback("21")
        .iter()
        .any(|f| f["status"]["result"]["progress"]["cnt"].as_u64() >= Some(50))
    {
        assert!(std::time::Instant::now() < deadline, "no progress");
        assert!(c.try_wait().unwrap().is_none(), "finished before the cut");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
    assert!(ddi.outcomes().is_empty());
    let out = run().wait_with_output().unwrap();
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
        fwi.len()
    );
    assert!(total < fwi.len() as u64 * 3 / 2, "{total}");
    let mut st = FileStorage::open(&disk, Access::ReadWrite).unwrap();
    let loc = StateLocation::new(
        updater::DEFAULT_STATE_OFFSET,
        updater::DEFAULT_STATE_COPY_DISTANCE,
    );
    let mut a = StateArea::read(&mut st, loc).unwrap();
    assert_eq!(a.boot().pending, Some(Slot::B));
    assert_eq!(a.boot_attempt(&mut st).unwrap().slot, Slot::B);
    drop(st);
    let out = Command::new(host_updater())
        .args(["mark-good", "--slot", "B", "--target"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(out.status.success());
    for _ in 0..2 {
        assert!(run().wait().unwrap().success());
    }
    let outcomes = ddi.outcomes();
    assert_eq!(outcomes.len(), 1, "exactly one final status: {outcomes:?}");
    assert_eq!(outcomes[0].finished, "success");
}
