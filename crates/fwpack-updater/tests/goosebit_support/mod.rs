//! goosebit, a real DDI server from PyPI (pinned in
//! python/goosebit-requirements.txt, installed by `cargo xtask deps` into
//! `<FWPACK_CACHE>/goosebit-venv` with our plugin, python/fwpack-goosebit,
//! which lets goosebit's software store take `.fwi` images), on loopback
//! with SQLite; images published with `fwpack publish`; devices that are
//! host builds of `fwpack-updater fleet` against disk files. Shared by
//! the `fleet_goosebit*` tests, each of which uses part of it.
#![allow(dead_code)]

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
    request_within(port, method, path, headers, body, Duration::from_secs(30))
}

/// [`request`] with another deadline for the answer.
pub fn request_within(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    within: Duration,
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    // chromedriver keeps the connection open after its answer: read to
    // the Content-Length when there is one, else to the end.
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = s.read(&mut buf).unwrap();
        out.extend_from_slice(&buf[..n]);
        if n == 0 {
            break;
        }
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|len| out.len() >= end + 4 + len) {
                break;
            }
        }
    }
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
        let out = self.publish_output(image, key, extra);
        assert!(
            out.status.success(),
            "fwpack publish: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `fwpack publish` as [`Goosebit::publish`], whatever its outcome.
    pub fn publish_output(&self, image: &Path, key: &Path, extra: &[&str]) -> std::process::Output {
        Command::new(fwpack_cli())
            .arg("publish")
            .arg(image)
            .arg("--key")
            .arg(key)
            .args(["--server", &self.url(), "--user", USER, "--json"])
            .args(extra)
            .env("FWPACK_PUBLISH_PASSWORD", PASSWORD)
            .output()
            .unwrap()
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

/// The files goosebit's web UI loads from two CDNs
/// (ui/templates/nav.html.jinja), from the npm packages `cargo xtask deps`
/// installs into `<FWPACK_CACHE>/goosebit-ui-npm` (python/goosebit-ui),
/// laid out under the CDN's paths: `npm/<package>@<version>/…` as on
/// jsDelivr, and the DataTables bundle (jQuery, DataTables, Buttons,
/// Responsive and Select with their Bootstrap 5 styling) that
/// cdn.datatables.net builds, here concatenated in that order.
pub fn cdn_tree(dir: &Path) -> PathBuf {
    let cache = std::env::var_os("FWPACK_CACHE")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::target_dir().join("fwpack-cache"));
    let npm = cache.join("goosebit-ui-npm/node_modules");
    assert!(
        npm.join("datatables.net").is_dir(),
        "no {}: run `cargo xtask deps`",
        npm.display()
    );
    let root = dir.join("cdn");
    std::fs::create_dir_all(root.join("npm/@popperjs")).unwrap();
    for (package, at) in [
        ("bootstrap", "bootstrap@5.3.3"),
        ("@popperjs/core", "@popperjs/core@2.11.8"),
        ("bootstrap-icons", "bootstrap-icons@1.11.3"),
        ("sweetalert2", "sweetalert2@11"),
        ("bootstrap-select", "bootstrap-select@1.14.0-beta3"),
    ] {
        std::os::unix::fs::symlink(npm.join(package), root.join("npm").join(at)).unwrap();
    }
    let bundle = root.join("v/bs5/jq-3.7.0/dt-2.3.4/b-3.2.5/r-3.0.6/sl-3.1.0");
    std::fs::create_dir_all(&bundle).unwrap();
    let concat = |files: &[&str]| {
        let mut out = Vec::new();
        for f in files {
            out.extend(std::fs::read(npm.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")));
            // Scripts end with a statement; a CSS parser skips the `;`.
            out.extend_from_slice(b"\n;\n");
        }
        out
    };
    let js = concat(&[
        "jquery/dist/jquery.min.js",
        "datatables.net/js/dataTables.min.js",
        "datatables.net-bs5/js/dataTables.bootstrap5.min.js",
        "datatables.net-buttons/js/dataTables.buttons.min.js",
        "datatables.net-buttons-bs5/js/buttons.bootstrap5.min.js",
        "datatables.net-responsive/js/dataTables.responsive.min.js",
        "datatables.net-responsive-bs5/js/responsive.bootstrap5.min.js",
        "datatables.net-select/js/dataTables.select.min.js",
        "datatables.net-select-bs5/js/select.bootstrap5.min.js",
    ]);
    std::fs::write(bundle.join("datatables.min.js"), js).unwrap();
    let css = concat(&[
        "datatables.net-bs5/css/dataTables.bootstrap5.min.css",
        "datatables.net-buttons-bs5/css/buttons.bootstrap5.min.css",
        "datatables.net-responsive-bs5/css/responsive.bootstrap5.min.css",
        "datatables.net-select-bs5/css/select.bootstrap5.min.css",
    ]);
    std::fs::write(bundle.join("datatables.min.css"), css).unwrap();
    root
}

/// Headless Chromium driven through chromedriver's W3C WebDriver API
/// (plain JSON over loopback HTTP). The CDN hosts resolve to `cdn_port`
/// on loopback; its self-signed certificate is accepted for them.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium; never a panic here (the test may be unwinding).
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                self.session
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    pub fn start(cdn_port: u16, log: &Path) -> Browser {
        let port = testkit::http::free_port().unwrap();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver; `cargo xtask deps`)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let args = serde_json::json!([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1600,1000",
            format!("--user-data-dir={}", profile.path().display()),
            format!("--host-resolver-rules=MAP cdn.jsdelivr.net 127.0.0.1:{cdn_port}, MAP cdn.datatables.net 127.0.0.1:{cdn_port}"),
            "--ignore-certificate-errors",
        ]);
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let v = b.call("POST", "/session", &caps);
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        eprintln!("WebDriver {method} {path}");
        // A page load may take long on a loaded machine.
        let (status, text) = request_within(
            self.port,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
            Duration::from_secs(180),
        );
        assert_eq!(status, 200, "WebDriver {method} {path}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.call(method, &format!("/session/{}{path}", self.session), &body)
    }

    pub fn go(&self, url: &str) {
        self.session_call("POST", "/url", serde_json::json!({ "url": url }));
    }

    /// The element matching a CSS selector (its WebDriver reference).
    fn element(&self, css: &str) -> String {
        let v = self.session_call(
            "POST",
            "/element",
            serde_json::json!({"using": "css selector", "value": css}),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|e| e.as_str())
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.session_call(
            "POST",
            &format!("/element/{e}/value"),
            serde_json::json!({ "text": text }),
        );
    }

    pub fn click(&self, css: &str) {
        let e = self.element(css);
        self.session_call(
            "POST",
            &format!("/element/{e}/click"),
            serde_json::json!({}),
        );
    }

    pub fn script(&self, js: &str) -> serde_json::Value {
        self.session_call(
            "POST",
            "/execute/sync",
            serde_json::json!({"script": js, "args": []}),
        )
    }

    pub fn text(&self) -> String {
        self.script("return document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's DataTable as (column titles, rows of cell texts).
    pub fn table(&self, id: &str) -> (Vec<String>, Vec<Vec<String>>) {
        let v = self.script(&format!(
            "const t = document.getElementById('{id}');
             if (!t) return [[], []];
             const c = t.closest('.dt-container') || t.parentElement;
             const head = c.querySelector('.dt-scroll-head thead') || t.querySelector('thead');
             const heads = head ? Array.from(head.rows[0].cells).map(h => h.innerText.trim()) : [];
             const rows = Array.from(t.tBodies[0] ? t.tBodies[0].rows : [])
                 .map(r => Array.from(r.cells).map(x => x.innerText.trim()));
             return [heads, rows];"
        ));
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| s.as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let heads = strings(&v[0]);
        let rows = v[1]
            .as_array()
            .map(|a| a.iter().map(strings).collect())
            .unwrap_or_default();
        (heads, rows)
    }

    /// Waits up to 60 s for the table's row holding `key` and returns it
    /// as (column title, cell text) pairs.
    pub fn row(&self, table: &str, key: &str) -> Vec<(String, String)> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (heads, rows) = self.table(table);
            if let Some(r) = rows.iter().find(|r| r.iter().any(|c| c == key)) {
                if heads.len() == r.len() {
                    return heads.into_iter().zip(r.iter().cloned()).collect();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no row {key} in #{table}: {heads:?} {rows:?}; page: {}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A PNG of the window.
    pub fn screenshot(&self, to: &Path) {
        let v = self.session_call("GET", "/screenshot", serde_json::Value::Null);
        let png = base64_decode(v.as_str().unwrap_or_default());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
        std::fs::write(to, png).unwrap();
    }
}

/// Standard base64 (RFC 4648) of the WebDriver screenshot.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
