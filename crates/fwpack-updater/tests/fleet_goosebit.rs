//! `fwpack-updater fleet` against goosebit, a real DDI server from PyPI
//! (pinned in python/goosebit-requirements.txt, installed by `cargo xtask
//! deps` into `<FWPACK_CACHE>/goosebit-venv` with our plugin,
//! python/fwpack-goosebit, which offers `.fwi` images through goosebit's
//! `update_source_hook`). goosebit runs on loopback with SQLite (schema
//! by `aerich upgrade`); the device registers (configData), gets the
//! deployment, downloads and applies it, "reboots" (the boot decision
//! taken on the disk file), confirms, and goosebit's own API then shows
//! the update finished with the new version; a trial that falls back
//! shows as an error with the reason in the device's log.

mod qemu_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qemu_support::*;
use updater::{Access, FileStorage, Slot, StateArea, StateLocation};

fn venv() -> Option<PathBuf> {
    let cache = std::env::var_os("FWPACK_CACHE")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::target_dir().join("fwpack-cache"));
    let v = cache.join("goosebit-venv");
    v.join("bin/uvicorn").is_file().then_some(v)
}

/// One HTTP/1.1 request on loopback: status and body.
fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

struct Goosebit {
    child: Child,
    port: u16,
    token: String,
}

impl Drop for Goosebit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Goosebit {
    fn start(venv: &Path, dir: &Path, images: &Path) -> Goosebit {
        let py = venv.join("bin/python");
        let pkg = Command::new(&py)
            .args(["-c", "import goosebit, os; print(os.path.dirname(goosebit.__file__))"])
            .output()
            .unwrap();
        assert!(pkg.status.success(), "{}", String::from_utf8_lossy(&pkg.stderr));
        let pkg = String::from_utf8_lossy(&pkg.stdout).trim().to_string();
        std::fs::write(
            dir.join("pyproject.toml"),
            format!("[tool.aerich]\ntortoise_orm = \"goosebit.db.config.TORTOISE_CONF\"\nlocation = \"{pkg}/db/migrations\"\nsrc_folder = \"./.\"\n"),
        )
        .unwrap();
        let env = [
            ("GOOSEBIT_DB_URI", format!("sqlite://{}/db.sqlite3", dir.display())),
            ("GOOSEBIT_ARTIFACTS_DIR", dir.join("artifacts").display().to_string()),
            ("GOOSEBIT_PLUGINS", "[\"fwpack_goosebit\"]".to_string()),
            ("GOOSEBIT_POLL_TIME", "00:00:01".to_string()),
            ("FWPACK_GOOSEBIT_IMAGES", images.display().to_string()),
        ];
        let out = Command::new(venv.join("bin/aerich"))
            .arg("upgrade")
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(out.status.success(), "aerich upgrade: {}", String::from_utf8_lossy(&out.stderr));
        let port = testkit::http::free_port().unwrap();
        let log = std::fs::File::create(dir.join("goosebit.log")).unwrap();
        let child = Command::new(venv.join("bin/uvicorn"))
            .args(["goosebit:app", "--host", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut g = Goosebit { child, port, token: String::new() };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "goosebit did not start: {}", std::fs::read_to_string(dir.join("goosebit.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(200));
        }
        // The first user, through goosebit's setup form; its token for the API.
        let (status, body) = request(
            port,
            "POST",
            "/setup",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"username=admin%40fwpack.test&password=fwpack-test",
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        g.token = v["access_token"].as_str().unwrap().to_string();
        g
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A device as goosebit's management API shows it.
    fn device(&self, id: &str) -> serde_json::Value {
        let auth = format!("Bearer {}", self.token);
        let (status, body) = request(self.port, "GET", "/api/v1/devices", &[("Authorization", &auth)], b"");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["devices"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["id"] == id).cloned())
            .unwrap_or_else(|| panic!("device {id} not in {v}"))
    }

    /// The device's update log (the `details` of its feedback).
    fn log(&self, id: &str) -> String {
        let auth = format!("Bearer {}", self.token);
        let (status, body) = request(
            self.port,
            "GET",
            &format!("/api/v1/devices/{id}/log"),
            &[("Authorization", &auth)],
            b"",
        );
        assert_eq!(status, 200, "{body}");
        body
    }
}

fn noise(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct Device {
    dir: PathBuf,
    disk: PathBuf,
}

impl Device {
    fn new(root: &Path, id: &str, server: &str, images: &Path, tries: u8) -> Device {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let v1 = noise(1);
        let mut v2 = v1.clone();
        v2[1000] ^= 1;
        std::fs::write(dir.join("v1.bin"), &v1).unwrap();
        std::fs::write(dir.join("v2.bin"), &v2).unwrap();
        let disk = disk(&dir, false, &image(&dir.join("v1.bin"), 1));
        std::fs::write(images.join(format!("{id}.fwi")), image(&dir.join("v2.bin"), 2)).unwrap();
        std::fs::write(dir.join("key.pem"), public_pem()).unwrap();
        std::fs::write(
            dir.join("updater.conf"),
            format!(
                "fleet_server = {server}\nfleet_controller_id = {id}\nfleet_poll_min = 1\nfleet_reboot = no\nfleet_tries = {tries}\nfleet_state_dir = {}\n",
                dir.join("state").display()
            ),
        )
        .unwrap();
        Device { dir, disk }
    }

    fn once(&self) -> String {
        let out = Command::new(host_updater())
            .args(["fleet", "--once", "--config"])
            .arg(self.dir.join("updater.conf"))
            .arg("--target")
            .arg(&self.disk)
            .arg("--key")
            .arg(self.dir.join("key.pem"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "fleet --once: {err}");
        err
    }

    fn boot(&self) -> Slot {
        let mut st = FileStorage::open(&self.disk, Access::ReadWrite).unwrap();
        let mut a = StateArea::read(
            &mut st,
            StateLocation::new(updater::DEFAULT_STATE_OFFSET, updater::DEFAULT_STATE_COPY_DISTANCE),
        )
        .unwrap();
        a.boot_attempt(&mut st).unwrap().slot
    }

    fn mark_good(&self, slot: Slot) {
        let out = Command::new(host_updater())
            .args(["mark-good", "--slot", &slot.to_string(), "--target"])
            .arg(&self.disk)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn fleet_goosebit_update_finishes_and_a_failed_trial_shows_as_error() {
    let Some(venv) = venv() else {
        eprintln!("skipped: no goosebit venv (run `cargo xtask deps`)");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let images = work.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::write(
        images.join("assignments.json"),
        r#"{"dev-ok": {"file": "dev-ok.fwi", "version": "v2"}, "dev-bad": {"file": "dev-bad.fwi", "version": "v2"}}"#,
    )
    .unwrap();
    let gb = Goosebit::start(&venv, work.path(), &images);
    let ok = Device::new(work.path(), "dev-ok", &gb.url(), &images, 3);
    let bad = Device::new(work.path(), "dev-bad", &gb.url(), &images, 1);

    // Registration: goosebit asks for configData first.
    ok.once();
    let d = gb.device("dev-ok");
    assert_eq!(d["sw_version"], "v1", "{d}");
    // The deployment: downloaded, applied, reported as running.
    let log = ok.once();
    assert!(log.contains("action -1"), "{log}");
    let d = gb.device("dev-ok");
    assert_eq!(d["last_state"].as_str().map(str::to_ascii_lowercase).as_deref(), Some("running"), "{d}");
    assert_eq!(ok.boot(), Slot::B);
    ok.mark_good(Slot::B);
    ok.once();
    let d = gb.device("dev-ok");
    assert_eq!(d["last_state"].as_str().map(str::to_ascii_lowercase).as_deref(), Some("finished"), "{d}");
    assert_eq!(d["sw_version"], "v2", "{d}");
    let log = gb.log("dev-ok");
    assert!(log.contains("confirmed"), "{log}");
    eprintln!("goosebit after the update: {d}; log: {log}");

    bad.once();
    bad.once();
    assert_eq!(bad.boot(), Slot::B);
    assert_eq!(bad.boot(), Slot::A);
    bad.once();
    let d = gb.device("dev-bad");
    assert_eq!(d["last_state"].as_str().map(str::to_ascii_lowercase).as_deref(), Some("error"), "{d}");
    let log = gb.log("dev-bad");
    assert!(log.contains("fell back to slot A"), "{log}");
    eprintln!("goosebit after the failed trial: {d}; log: {log}");
}
