//! goosebit, a real DDI server from PyPI (pinned in
//! python/goosebit-requirements.txt, installed by `cargo xtask deps` into
//! `<FWPACK_CACHE>/goosebit-venv` with our plugin, python/fwpack-goosebit,
//! which lets goosebit's software store take `.fwi` images), on loopback
//! with SQLite; images published with `fwpack publish`; devices that are
//! host builds of `fwpack-updater fleet` against disk files. Shared by
//! the `fleet_goosebit*` tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::qemu_support::*;
use fwimage::{Compression, ImageBuilder, SegmentSpec};
use updater::{Access, FileStorage, Slot, StateArea, StateLocation};

pub const USER: &str = "admin@fwpack.test";
pub const PASSWORD: &str = "fwpack-test";

pub fn venv() -> Option<PathBuf> {
    let cache = std::env::var_os("FWPACK_CACHE")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::target_dir().join("fwpack-cache"));
    let v = cache.join("goosebit-venv");
    v.join("bin/uvicorn").is_file().then_some(v)
}

/// One HTTP/1.1 request on loopback: status and body.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
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
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

pub struct Goosebit {
    child: Child,
    pub port: u16,
    pub token: String,
    pub dir: PathBuf,
}

impl Drop for Goosebit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Goosebit {
    pub fn start(venv: &Path, dir: &Path) -> Goosebit {
        let py = venv.join("bin/python");
        let pkg = Command::new(&py)
            .args([
                "-c",
                "import goosebit, os; print(os.path.dirname(goosebit.__file__))",
            ])
            .output()
            .unwrap();
        assert!(
            pkg.status.success(),
            "{}",
            String::from_utf8_lossy(&pkg.stderr)
        );
        let pkg = String::from_utf8_lossy(&pkg.stdout).trim().to_string();
        std::fs::write(
            dir.join("pyproject.toml"),
            format!("[tool.aerich]\ntortoise_orm = \"goosebit.db.config.TORTOISE_CONF\"\nlocation = \"{pkg}/db/migrations\"\nsrc_folder = \"./.\"\n"),
        )
        .unwrap();
        let env = [
            (
                "GOOSEBIT_DB_URI",
                format!("sqlite://{}/db.sqlite3", dir.display()),
            ),
            (
                "GOOSEBIT_ARTIFACTS_DIR",
                dir.join("artifacts").display().to_string(),
            ),
            ("GOOSEBIT_PLUGINS", "[\"fwpack_goosebit\"]".to_string()),
            ("GOOSEBIT_POLL_TIME", "00:00:01".to_string()),
        ];
        let out = Command::new(venv.join("bin/aerich"))
            .arg("upgrade")
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "aerich upgrade: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = testkit::http::free_port().unwrap();
        let log = std::fs::File::create(dir.join("goosebit.log")).unwrap();
        let child = Command::new(venv.join("bin/uvicorn"))
            .args([
                "goosebit:app",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut g = Goosebit {
            child,
            port,
            token: String::new(),
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "goosebit did not start: {}",
                std::fs::read_to_string(dir.join("goosebit.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The first user, through goosebit's setup form; its token for the API.
        let (status, body) = request(
            port,
            "POST",
            "/setup",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!("username={}&password={PASSWORD}", USER.replace('@', "%40")).as_bytes(),
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        g.token = v["access_token"].as_str().unwrap().to_string();
        g
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A device as goosebit's management API shows it.
    pub fn device(&self, id: &str) -> serde_json::Value {
        let auth = format!("Bearer {}", self.token);
        let (status, body) = request(
            self.port,
            "GET",
            "/api/v1/devices",
            &[("Authorization", &auth)],
            b"",
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["devices"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["id"] == id).cloned())
            .unwrap_or_else(|| panic!("device {id} not in {v}"))
    }

    /// The device's update log (the `details` of its feedback).
    pub fn log(&self, id: &str) -> String {
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

pub fn noise(seed: u64) -> Vec<u8> {
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

pub struct Device {
    pub dir: PathBuf,
    pub disk: PathBuf,
}

impl Device {
    /// A disk whose slot A holds `v1.bin` as version 1 ("1.0.1"), and
    /// `update.fwi`: `v2.bin` (one byte changed) as version 2 ("1.0.2").
    pub fn new(root: &Path, id: &str, server: &str, tries: u8) -> Device {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let v1 = noise(1);
        let mut v2 = v1.clone();
        v2[1000] ^= 1;
        std::fs::write(dir.join("v1.bin"), &v1).unwrap();
        std::fs::write(dir.join("v2.bin"), &v2).unwrap();
        let disk = disk(&dir, false, &labelled_image(&dir.join("v1.bin"), 1));
        std::fs::write(
            dir.join("update.fwi"),
            labelled_image(&dir.join("v2.bin"), 2),
        )
        .unwrap();
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

    pub fn once(&self) -> String {
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

    pub fn boot(&self) -> Slot {
        let mut st = FileStorage::open(&self.disk, Access::ReadWrite).unwrap();
        let mut a = StateArea::read(
            &mut st,
            StateLocation::new(
                updater::DEFAULT_STATE_OFFSET,
                updater::DEFAULT_STATE_COPY_DISTANCE,
            ),
        )
        .unwrap();
        a.boot_attempt(&mut st).unwrap().slot
    }

    pub fn mark_good(&self, slot: Slot) {
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
}

/// As [`image`], with the label `1.0.<version>`: goosebit orders software
/// by SWUpdate's version scheme and refuses labels such as `v2`.
pub fn labelled_image(rootfs: &Path, version: u64) -> Vec<u8> {
    let data = std::fs::read(rootfs).unwrap();
    let mut b = ImageBuilder::new(BOARD, version)
        .and_then(|b| b.version_label(&format!("1.0.{version}")))
        .unwrap();
    b.add_segment(
        SegmentSpec {
            name: "rootfs".into(),
            target: "system".into(),
            target_offset: 0,
            compression: Compression::Zstd,
            level: None,
        },
        data.len() as u64,
        std::io::Cursor::new(data),
    )
    .unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    b.write(&mut out, &mut |_| {}).unwrap();
    fwimage::insert_signature(&mut out, &signing_key()).unwrap();
    out.into_inner()
}

/// The host build of the `fwpack` CLI (another package: built here, a
/// no-op when up to date).
pub fn fwpack_cli() -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _g = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "-p", "fwpack", "--bin", "fwpack"])
        .current_dir(testkit::workspace_root())
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "building fwpack failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    testkit::target_dir().join("debug").join("fwpack")
}

impl Goosebit {
    /// `fwpack publish IMAGE --key KEY --server URL --user … EXTRA…`: its
    /// stdout (one JSON object).
    pub fn publish(&self, image: &Path, key: &Path, extra: &[&str]) -> serde_json::Value {
        let out = Command::new(fwpack_cli())
            .arg("publish")
            .arg(image)
            .arg("--key")
            .arg(key)
            .args(["--server", &self.url(), "--user", USER, "--json"])
            .args(extra)
            .env("FWPACK_PUBLISH_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fwpack publish: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A GET of goosebit's management API with the test user's token.
    pub fn api(&self, path: &str) -> serde_json::Value {
        let auth = format!("Bearer {}", self.token);
        let (status, body) = request(self.port, "GET", path, &[("Authorization", &auth)], b"");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// A JSON field as lower-case text.
pub fn lower(v: &serde_json::Value) -> Option<String> {
    v.as_str().map(str::to_ascii_lowercase)
}
