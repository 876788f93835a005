//! Field delivery (issue 25): `fwpack apply URL` against servers we do
//! not control. A hostile server of our own (testkit's FaultServer: a
//! terabyte Content-Range, a one-byte-per-second drip, redirects to
//! another port, a 200 with other bytes replacing a 206) and real ones
//! from Debian (nginx over https with a private CA made here with
//! openssl; python's http.server, which ignores Range). Every failure is
//! exit 9 with its reason, within a bounded time and memory, and slot B
//! never becomes bootable.

#[path = "apply_common.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use testkit::http::{CountingProxy, Fault, FaultServer, Nginx, Quirk, Served};
use testkit::tls::{self, PrivateCa};

const BOARD: &str = "acme-board";
const ROOTFS_LEN: usize = 12 * MIB as usize;
const KERNEL_LEN: usize = 300_000;
/// Most memory any of these runs may take (peak RSS of the child): the
/// terabyte Content-Range must not get near it.
const MAX_RSS_KIB: i64 = 64 << 10;

fn setup(name: &str) -> tempfile::TempDir {
    let tmp = workdir(name);
    let d = tmp.path();
    std::fs::write(d.join("rootfs.img"), payload(1, ROOTFS_LEN)).unwrap();
    std::fs::write(d.join("kernel.img"), payload(2, KERNEL_LEN)).unwrap();
    stamp(
        d,
        "v11.fwi",
        BOARD,
        11,
        &[
            "rootfs=rootfs.img,target=system",
            "kernel=kernel.img,target=boot",
        ],
    );
    ok(fwpack(
        &[
            "state",
            "init",
            "--target",
            "disk.img",
            "--size",
            "43MiB",
            "--board",
            BOARD,
            "-g",
            "system:A=9MiB+16MiB,B=25MiB+16MiB",
            "-g",
            "boot:A=41MiB+1MiB,B=42MiB+1MiB",
            "--active-version",
            "10",
        ],
        d,
    ));
    tmp
}

/// Runs `fwpack apply URL --target disk.img --key k.pub.pem --seed none
/// EXTRA...`, killed (and failed) after `limit`; checks the peak RSS.
fn apply(d: &Path, url: &str, extra: &[&str], limit: Duration) -> Output {
    let mut args = vec![
        "apply",
        url,
        "--target",
        "disk.img",
        "--key",
        "k.pub.pem",
        "--seed",
        "none",
    ];
    args.extend_from_slice(extra);
    let mut child = Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .args(&args)
        .current_dir(d)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out_t = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let err_t = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let killed = rx.recv_timeout(limit).is_err();
        if killed {
            // Ours, a direct child not yet reaped, by pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        killed
    });
    let start = Instant::now();
    // Peak RSS: VmHWM sampled while it runs (getrusage's ru_maxrss counts
    // the test process's memory the child had before exec).
    let (hwm_tx, hwm_rx) = std::sync::mpsc::channel::<()>();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0i64;
        let status = format!("/proc/{pid}/status");
        while hwm_rx.recv_timeout(Duration::from_millis(10)).is_err() {
            let Ok(s) = std::fs::read_to_string(&status) else {
                break;
            };
            if let Some(kib) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        peak
    });
    let status = child.wait().unwrap();
    let _ = tx.send(());
    let _ = hwm_tx.send(());
    let peak = sampler.join().unwrap();
    let out = Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    };
    assert!(
        !watchdog.join().unwrap(),
        "{args:?} did not end within {limit:?}: {}",
        show(&out)
    );
    eprintln!(
        "{args:?}: exit {:?} after {:?}, peak RSS {} KiB",
        out.status.code(),
        start.elapsed(),
        peak
    );
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB: {}", show(&out));
    out
}

fn status(d: &Path) -> serde_json::Value {
    serde_json::from_slice(&ok(fwpack(&["status", "--target", "disk.img", "--json"], d)).stdout)
        .unwrap()
}

fn assert_not_bootable(d: &Path, what: &str) {
    let st = status(d);
    assert!(st["pending"].is_null(), "{what}: B became pending: {st}");
    assert_ne!(st["slots"]["B"]["state"], "complete", "{what}: {st}");
    assert_eq!(st["active"], "A", "{what}: {st}");
}

fn assert_pending_b(d: &Path, what: &str) {
    let st = status(d);
    assert_eq!(st["pending"], "B", "{what}: {st}");
    assert_eq!(st["slots"]["B"]["version"], 11, "{what}: {st}");
    assert!(
        cmp_range(
            &d.join("rootfs.img"),
            0,
            &d.join("disk.img"),
            25 * MIB,
            ROOTFS_LEN as u64
        ),
        "{what}: slot B does not hold the rootfs"
    );
}

/// Exit 9, the message names one of `says`, B not bootable.
fn assert_source_failure(d: &Path, out: &Output, what: &str, says: &[&str]) {
    assert_eq!(code(out), 9, "{what}: {}", show(out));
    let err = stderr(out).to_lowercase();
    assert!(
        says.iter().any(|w| err.contains(w)),
        "{what}: the message names none of {says:?}: {}",
        show(out)
    );
    assert_not_bootable(d, what);
}

#[test]
fn field_huge_content_range_is_refused_without_allocating() {
    let tmp = setup("field-huge-range");
    let d = tmp.path();
    let server = FaultServer::start(Fault::HugeContentRange).unwrap();
    let out = apply(
        d,
        &server.url("u.fwi"),
        &["--retries", "0", "--timeout", "5"],
        Duration::from_secs(60),
    );
    assert_source_failure(d, &out, "huge Content-Range", &["content-range"]);
}

#[test]
fn field_drip_is_ended_by_the_minimum_rate_and_by_the_deadline() {
    let tmp = setup("field-drip");
    let d = tmp.path();
    let image = std::fs::read(d.join("v11.fwi")).unwrap();
    let server = FaultServer::start(Fault::Drip { body: image }).unwrap();
    let url = server.url("u.fwi");
    // Under 1 KiB/s over 3 s: the minimum rate ends it.
    let out = apply(
        d,
        &url,
        &[
            "--retries",
            "0",
            "--min-rate",
            "1KiB",
            "--min-rate-window",
            "3",
        ],
        Duration::from_secs(60),
    );
    assert_source_failure(d, &out, "drip, minimum rate", &["minimum rate"]);
    // The rate check off: the overall deadline ends it.
    let out = apply(
        d,
        &url,
        &["--retries", "3", "--min-rate", "0", "--deadline", "4"],
        Duration::from_secs(60),
    );
    assert_source_failure(d, &out, "drip, deadline", &["deadline"]);
}

#[test]
fn field_redirect_to_another_port_is_refused_unless_allowed() {
    let tmp = setup("field-redirect");
    let d = tmp.path();
    let image = std::fs::read(d.join("v11.fwi")).unwrap();
    let other = FaultServer::start(Fault::Sequence(vec![Served::new(image, "v11")])).unwrap();
    let redirect = FaultServer::start(Fault::RedirectTo(other.url("u.fwi"))).unwrap();
    let out = apply(
        d,
        &redirect.url("u.fwi"),
        &["--retries", "0"],
        Duration::from_secs(60),
    );
    assert_source_failure(d, &out, "redirect to another port", &["redirect"]);
    assert!(
        other.requests().is_empty(),
        "the Range request went to the other port: {:?}",
        other.requests()
    );
    let allow = format!("127.0.0.1:{}", other.port());
    let out = apply(
        d,
        &redirect.url("u.fwi"),
        &["--allow-redirect-hosts", &allow],
        Duration::from_secs(60),
    );
    assert_eq!(code(&out), 0, "allowed redirect: {}", show(&out));
    assert_pending_b(d, "allowed redirect");
}

#[test]
fn field_200_replacing_206_with_changed_bytes_is_never_committed() {
    let tmp = setup("field-200-after-206");
    let d = tmp.path();
    let image = std::fs::read(d.join("v11.fwi")).unwrap();
    let mut other = image.clone();
    let n = other.len();
    other[n - 100] ^= 0xff;
    let first = Served {
        body: image,
        etag: Some("v11".into()),
        cut_after: Some((n / 2) as u64),
    };
    let server = FaultServer::start(Fault::Sequence(vec![
        first.clone(),
        first,
        Served::new(other, "v11-changed"),
    ]))
    .unwrap();
    let out = apply(
        d,
        &server.url("u.fwi"),
        &["--retries", "3"],
        Duration::from_secs(120),
    );
    assert_source_failure(d, &out, "200 after 206", &["changed"]);
    // The retry asked with If-Range and got the other file's 200.
    let reqs = server.requests();
    assert!(
        reqs.len() >= 3 && reqs.iter().skip(1).all(|r| r.if_range.is_some()),
        "{reqs:?}"
    );
    assert!(stderr(&out).contains("v11-changed"), "{}", show(&out));
}

#[test]
fn field_trailing_bytes_on_stdin_are_malformed() {
    let tmp = setup("field-stdin-trailing");
    let d = tmp.path();
    let mut image = std::fs::read(d.join("v11.fwi")).unwrap();
    image.extend_from_slice(b"trailing");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .args(["apply", "-", "--target", "disk.img", "--key", "k.pub.pem"])
        .current_dir(d)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&image);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(code(&out), 4, "{}", show(&out));
    assert!(stderr(&out).contains("more bytes follow"), "{}", show(&out));
    assert_not_bootable(d, "trailing bytes on stdin");
}

/// ca.pem, and srv.pem/srv.key for 127.0.0.1 (P-256) issued by it.
fn private_ca(d: &Path) -> PrivateCa {
    let ca = PrivateCa::new(d).unwrap();
    ca.issue("srv", &["127.0.0.1"], tls::EC_P256).unwrap();
    ca
}

/// `sha256/<base64>` of a certificate's public key, by openssl alone.
fn pin_of(d: &Path, cert: &str) -> String {
    let sh = format!(
        "openssl x509 -in {cert} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64"
    );
    let out = Command::new("sh")
        .args(["-c", &sh])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    format!("sha256/{}", String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn field_nginx_https_with_a_private_ca_and_pins() {
    if !testkit::tools::require("nginx") || !testkit::tools::require("openssl") {
        return;
    }
    let tmp = setup("field-https");
    let d = tmp.path();
    private_ca(d);
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy(d.join("v11.fwi"), www.join("u.fwi")).unwrap();
    let plain = Nginx::start(&www).unwrap();
    let extra = format!(
        "location = /down.fwi {{ return 302 {}; }}",
        plain.url("u.fwi")
    );
    let nginx =
        Nginx::start_tls_with(&www, &d.join("srv.pem"), &d.join("srv.key"), &extra).unwrap();
    let url = nginx.url("u.fwi");
    let limit = Duration::from_secs(120);
    // Without --ca: the system's roots do not know this CA.
    let out = apply(d, &url, &["--retries", "0"], limit);
    assert_source_failure(d, &out, "https without --ca", &["certificate", "issuer"]);
    // A wrong pin (the CA's key, not the server's).
    let wrong = pin_of(d, "ca.pem");
    let out = apply(
        d,
        &url,
        &["--retries", "0", "--ca", "ca.pem", "--pin", &wrong],
        limit,
    );
    assert_source_failure(d, &out, "https with a wrong pin", &["pin"]);
    // The CA is trusted, but the certificate names 127.0.0.1, not this.
    let other = url.replace("127.0.0.1", "localhost");
    let out = apply(d, &other, &["--retries", "0", "--ca", "ca.pem"], limit);
    assert_source_failure(
        d,
        &out,
        "https under another name",
        &["certificate", "name"],
    );
    // https -> http is refused even when the host is allowed.
    let down = nginx.url("down.fwi");
    let allow = format!("127.0.0.1:{}", plain.port());
    let out = apply(
        d,
        &down,
        &[
            "--retries",
            "0",
            "--ca",
            "ca.pem",
            "--allow-redirect-hosts",
            &allow,
        ],
        limit,
    );
    assert_source_failure(d, &out, "https to http redirect", &["https to http"]);
    assert_eq!(
        plain.body_bytes_for("/u.fwi"),
        0,
        "{:?}",
        plain.access_log()
    );
    // With the CA and the right pin: applied.
    let right = pin_of(d, "srv.pem");
    let out = apply(
        d,
        &url,
        &["--ca", "ca.pem", "--pin", &wrong, "--pin", &right],
        limit,
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_pending_b(d, "https with --ca and the right pin");
}

/// What most servers on the internet present, and what Debian's nginx
/// does not offer by default (1.22 stops at TLS 1.2): an RSA key, TLS 1.3
/// only. curl limited to 1.2 is refused first, so the apply cannot have
/// fallen back to 1.2.
#[test]
fn field_nginx_https_tls13_only_with_an_rsa_server_key() {
    if !testkit::tools::require("nginx")
        || !testkit::tools::require("openssl")
        || !testkit::tools::require("curl")
    {
        return;
    }
    let tmp = setup("field-https13");
    let d = tmp.path();
    private_ca(d)
        .issue("rsa", &["127.0.0.1"], tls::RSA_2048)
        .unwrap();
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy(d.join("v11.fwi"), www.join("u.fwi")).unwrap();
    let nginx = Nginx::start_tls_with(
        &www,
        &d.join("rsa.pem"),
        &d.join("rsa.key"),
        "ssl_protocols TLSv1.3;",
    )
    .unwrap();
    let url = nginx.url("u.fwi");
    let curl = |max: &str| {
        Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "--cacert",
                "ca.pem",
                "--tls-max",
                max,
            ])
            .arg(&url)
            .current_dir(d)
            .output()
            .unwrap()
    };
    let out = curl("1.2");
    assert!(!out.status.success(), "nginx spoke TLS 1.2: {}", show(&out));
    let out = curl("1.3");
    assert!(out.status.success(), "curl over TLS 1.3: {}", show(&out));
    let out = apply(d, &url, &["--ca", "ca.pem"], Duration::from_secs(120));
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_pending_b(d, "https, TLS 1.3, RSA server key");
}

/// Each image byte is fetched at most once per attempt on a clean link,
/// by nginx's own account.
#[test]
fn field_nginx_serves_each_byte_once() {
    if !testkit::tools::require("nginx") {
        return;
    }
    let tmp = setup("field-once");
    let d = tmp.path();
    assert_each_byte_once(d, "v11.fwi");
}

/// The same with a chunk index larger than a 64 KiB window: its entry
/// pages run into its CRC pages, which a window had fetched already (a
/// 1024-chunk image fetched 40,960 bytes twice before windows were
/// clipped against the ranges fetched).
#[test]
fn field_nginx_serves_each_byte_of_a_large_index_once() {
    if !testkit::tools::require("nginx") {
        return;
    }
    let tmp = workdir("field-once-index");
    let d = tmp.path();
    // 1024 chunks of 64 KiB: 84 KiB of index entries, then 64 KiB of
    // CRCs. Zeros, uncompressed: a sparse file, quick to make.
    std::fs::File::create(d.join("zeros.img"))
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    if !d.join("k.pem").exists() {
        ok(fwpack(&["keygen", "-o", "k.pem"], d));
    }
    ok(fwpack(
        &[
            "stamp",
            "--board",
            BOARD,
            "--version",
            "11",
            "--chunk-size",
            "64K",
            "--key",
            "k.pem",
            "-o",
            "big-index.fwi",
            "-s",
            "rootfs=zeros.img,target=system",
        ],
        d,
    ));
    init_65mib_slots(d);
    assert_each_byte_once(d, "big-index.fwi");
    // A delta against it (slot B, made good): the first and the last
    // chunk changed. The first chunk's stream starts at the data offset
    // before the last CRC page is read, whose window must stop there.
    ok(fwpack(&["mark-good", "--target", "disk.img"], d));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join("zeros.img"))
            .unwrap();
        f.write_all_at(&[1u8; 4096], 0).unwrap();
        f.write_all_at(&[1u8; 4096], 64 * MIB - 4096).unwrap();
    }
    ok(fwpack(
        &[
            "stamp",
            "--board",
            BOARD,
            "--version",
            "12",
            "--chunk-size",
            "64K",
            "--key",
            "k.pem",
            "-o",
            "www/delta.fwi",
            "-s",
            "rootfs=zeros.img,target=system",
        ],
        d,
    ));
    let nginx = Nginx::start(&d.join("www")).unwrap();
    let url = nginx.url("delta.fwi");
    ok(fwpack(
        &["apply", &url, "--target", "disk.img", "--key", "k.pub.pem"],
        d,
    ));
    assert_no_byte_twice(&nginx);
}

/// Applies `image` (in `d`) from nginx and checks nginx's log: no byte
/// sent twice, no more bytes than the image.
fn assert_each_byte_once(d: &Path, image: &str) {
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy(d.join(image), www.join("u.fwi")).unwrap();
    let nginx = Nginx::start(&www).unwrap();
    let out = apply(d, &nginx.url("u.fwi"), &[], Duration::from_secs(120));
    assert_eq!(code(&out), 0, "{}", show(&out));
    let len = std::fs::metadata(d.join(image)).unwrap().len();
    let sent = assert_no_byte_twice(&nginx);
    assert!(sent <= len, "{sent} > {len}: {:?}", nginx.access_log());
}

/// No byte in nginx's log sent twice; returns the body bytes sent.
fn assert_no_byte_twice(nginx: &Nginx) -> u64 {
    let mut ranges: Vec<(u64, u64)> = nginx
        .access_log()
        .iter()
        .map(|e| {
            let start = e.range_starts().first().copied().unwrap_or(0);
            (start, start + e.body_bytes_sent)
        })
        .collect();
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "bytes fetched twice: {ranges:?}");
    }
    let sent: u64 = ranges.iter().map(|r| r.1 - r.0).sum();
    eprintln!("nginx sent {sent} body bytes in {ranges:?}");
    sent
}

struct Python {
    child: std::process::Child,
    port: u16,
}

impl Python {
    fn start(www: &Path) -> Python {
        let port = testkit::http::free_port().unwrap();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(www)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "python http.server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Python { child, port }
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gzip image whose zero chunks are stored empty (docs/FORMAT.md, "Zero
/// chunks": a zero run in the rootfs, an all-zero kernel last), from
/// python's http.server, which ignores Range: still one stream read
/// through, at most 1.05x the image, and the slot holds the zeros.
#[test]
fn field_zero_chunks_from_a_server_without_range() {
    if !testkit::tools::require("python3") {
        return;
    }
    let tmp = setup("field-python-zero");
    let d = tmp.path();
    let mut rootfs = payload(5, ROOTFS_LEN);
    rootfs[MIB as usize..5 * MIB as usize].fill(0);
    std::fs::write(d.join("sparse.img"), &rootfs).unwrap();
    std::fs::write(d.join("zero.img"), vec![0u8; KERNEL_LEN]).unwrap();
    ok(fwpack(
        &[
            "stamp",
            "--board",
            BOARD,
            "--version",
            "12",
            "--compress",
            "gzip",
            "--level",
            "1",
            "--key",
            "k.pem",
            "-o",
            "z.fwi",
            "-s",
            "rootfs=sparse.img,target=system",
            "-s",
            "kernel=zero.img,target=boot",
        ],
        d,
    ));
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy(d.join("z.fwi"), www.join("u.fwi")).unwrap();
    let len = std::fs::metadata(d.join("z.fwi")).unwrap().len();
    let py = Python::start(&www);
    let proxy = CountingProxy::start(py.port).unwrap();
    let url = format!("http://127.0.0.1:{}/u.fwi", proxy.port());
    let out = apply(d, &url, &["--verify-writes"], Duration::from_secs(120));
    assert_eq!(code(&out), 0, "{}", show(&out));
    let st = status(d);
    assert_eq!(
        (&st["pending"], &st["slots"]["B"]["version"]),
        (&serde_json::json!("B"), &serde_json::json!(12)),
        "{st}"
    );
    let down = proxy.bytes_down();
    assert!(
        down as f64 <= len as f64 * 1.05,
        "{down} bytes for a {len}-byte image"
    );
    assert!(cmp_range(
        &d.join("sparse.img"),
        0,
        &d.join("disk.img"),
        25 * MIB,
        ROOTFS_LEN as u64
    ));
    assert!(cmp_range(
        &d.join("zero.img"),
        0,
        &d.join("disk.img"),
        42 * MIB,
        KERNEL_LEN as u64
    ));
}

/// python's http.server ignores Range: one stream, read through; a full
/// apply costs at most 1.05x the image, and a resume after the server
/// was killed mid-transfer succeeds.
#[test]
fn field_python_http_server_without_range() {
    if !testkit::tools::require("python3") {
        return;
    }
    let tmp = setup("field-python");
    let d = tmp.path();
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy(d.join("v11.fwi"), www.join("u.fwi")).unwrap();
    let len = std::fs::metadata(d.join("v11.fwi")).unwrap().len();
    let py = Python::start(&www);
    let proxy = CountingProxy::start(py.port).unwrap();
    let url = format!("http://127.0.0.1:{}/u.fwi", proxy.port());
    let out = apply(d, &url, &[], Duration::from_secs(120));
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_pending_b(d, "python http.server");
    let down = proxy.bytes_down();
    eprintln!(
        "python http.server: {down} bytes for a {len}-byte image ({:.4}x)",
        down as f64 / len as f64
    );
    assert!(
        down as f64 <= len as f64 * 1.05,
        "{down} bytes for a {len}-byte image"
    );
    drop(proxy);
    drop(py);

    // Kill the server after the second checkpoint (the transfer slowed by
    // --max-rate), then resume from a new one.
    let pristine = d.join("pristine.img");
    let tmp2 = setup("field-python-resume");
    let d = tmp2.path();
    let _ = pristine;
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy(d.join("v11.fwi"), www.join("u.fwi")).unwrap();
    let mut py = Python::start(&www);
    let url = format!("http://127.0.0.1:{}/u.fwi", py.port);
    let mut child = Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .args([
            "apply",
            &url,
            "--target",
            "disk.img",
            "--key",
            "k.pub.pem",
            "--seed",
            "none",
            "--json",
            "--checkpoint-interval",
            "1MiB",
            "--max-rate",
            "4MiB",
            "--retries",
            "0",
        ])
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut seen = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("\"checkpoint\"") {
            seen += 1;
            if seen == 2 {
                let _ = py.child.kill();
                let _ = py.child.wait();
            }
        }
    }
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(9), "the cut transfer must fail");
    assert_not_bootable(d, "cut transfer");
    let py2 = Python::start(&www);
    let url = format!("http://127.0.0.1:{}/u.fwi", py2.port);
    let out = apply(d, &url, &["--json"], Duration::from_secs(120));
    assert_eq!(code(&out), 0, "{}", show(&out));
    let r = result_of(&out);
    assert!(!r["resumed_from"].is_null(), "not resumed: {r}");
    assert_pending_b(d, "python resume");
}

/// A 140 MiB disk whose system slots (65 MiB each) fit a 64 MiB image,
/// slot A active at version 10.
fn init_65mib_slots(d: &Path) {
    ok(fwpack(
        &[
            "state",
            "init",
            "--target",
            "disk.img",
            "--size",
            "140MiB",
            "--board",
            BOARD,
            "-g",
            "system:A=9MiB+65MiB,B=74MiB+65MiB",
            "--active-version",
            "10",
        ],
        d,
    ));
}

/// A 64 MiB image (`u.fwi`, random bytes) in 1024 chunks of 64 KiB: 84
/// KiB of index entries, then 64 KiB of CRCs, so the head and index take
/// three 64 KiB windows before the data; a disk whose slots fit it.
fn setup_many_windows(name: &str) -> tempfile::TempDir {
    let tmp = workdir(name);
    let d = tmp.path();
    std::fs::write(d.join("big.img"), payload(3, 64 * MIB as usize)).unwrap();
    ok(fwpack(&["keygen", "-o", "k.pem"], d));
    ok(fwpack(
        &[
            "stamp",
            "--board",
            BOARD,
            "--version",
            "11",
            "--chunk-size",
            "64K",
            "--key",
            "k.pem",
            "-o",
            "u.fwi",
            "-s",
            "rootfs=big.img,target=system",
        ],
        d,
    ));
    init_65mib_slots(d);
    tmp
}

/// Applied: exit 0, no retry counted, slot B pending with the image.
fn assert_applied_without_retries(d: &Path, out: &Output, what: &str) {
    assert_eq!(code(out), 0, "{what}: {}", show(out));
    let retries = json_lines(out)
        .iter()
        .filter(|l| l["event"] == "retry")
        .count();
    assert_eq!(retries, 0, "{what}: retries counted: {}", show(out));
    let st = status(d);
    assert_eq!(st["pending"], "B", "{what}: {st}");
    assert!(
        cmp_range(
            &d.join("big.img"),
            0,
            &d.join("disk.img"),
            74 * MIB,
            64 * MIB
        ),
        "{what}: slot B does not hold the image"
    );
}

/// The head and index windows go out on one kept-alive side connection
/// (HTTP/1.1 keep-alive), not one new connection (and over https one TLS
/// handshake) each: nginx's log names the connection of every request.
/// Each byte is still sent at most once.
#[test]
fn field_nginx_windows_share_one_side_connection_over_http_and_https() {
    if !testkit::tools::require("nginx") || !testkit::tools::require("openssl") {
        return;
    }
    for tls in [false, true] {
        let what = if tls { "https" } else { "http" };
        let tmp = setup_many_windows(&format!("field-keepalive-{what}"));
        let d = tmp.path();
        let www = d.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::copy(d.join("u.fwi"), www.join("u.fwi")).unwrap();
        let nginx = if tls {
            private_ca(d);
            Nginx::start_tls(&www, &d.join("srv.pem"), &d.join("srv.key")).unwrap()
        } else {
            Nginx::start(&www).unwrap()
        };
        let mut extra = vec!["--json"];
        if tls {
            extra.extend(["--ca", "ca.pem"]);
        }
        let out = apply(d, &nginx.url("u.fwi"), &extra, Duration::from_secs(120));
        assert_applied_without_retries(d, &out, what);
        let log = nginx.access_log();
        let sent = assert_no_byte_twice(&nginx);
        let len = std::fs::metadata(d.join("u.fwi")).unwrap().len();
        assert!(sent <= len, "{what}: {sent} > {len}: {log:?}");
        // The head and index windows and the data stream: several
        // requests, on the stream's connection and one side connection.
        let conns = nginx.connections();
        eprintln!("{what}: {} requests on {conns} connections", log.len());
        assert!(log.len() >= 3, "{what}: {log:?}");
        assert!(conns <= 2, "{what}: {conns} connections: {log:?}");
    }
}

/// Servers end idle connections whenever they like: silently after each
/// response, when the next request arrives on it, or saying `Connection:
/// close`. The apply goes on over a new connection each time and counts
/// no failure (`--retries 0` would end it at the first).
#[test]
fn field_servers_that_close_kept_connections_cost_no_failure() {
    for quirk in [Quirk::CloseSilently, Quirk::DropReused, Quirk::SayClose] {
        let what = format!("{quirk:?}");
        let tmp = setup_many_windows(&format!("field-keepalive-{what}"));
        let d = tmp.path();
        let image = std::fs::read(d.join("u.fwi")).unwrap();
        let server = FaultServer::start(Fault::KeepAlive {
            served: Served::new(image, "v11"),
            quirk,
        })
        .unwrap();
        let out = apply(
            d,
            &server.url("u.fwi"),
            &["--json", "--retries", "0", "--timeout", "5"],
            Duration::from_secs(120),
        );
        assert_applied_without_retries(d, &out, &what);
        let reqs = server.requests();
        assert!(reqs.len() >= 3, "{what}: {reqs:?}");
        if quirk == Quirk::DropReused {
            // The client did reuse a connection, and the server dropped
            // that request unanswered.
            assert!(
                reqs.iter()
                    .any(|r| r.before_on_connection > 0 && r.status == 0),
                "{what}: {reqs:?}"
            );
        }
    }
}

/// A kept-open connection whose response body is longer than its
/// Content-Length (a whole second response follows it) or shorter: the
/// connection is never used again, so no byte of one response is read as
/// the next one's. Longer: the apply succeeds without a failure. Shorter:
/// it times out as any short body does (exit 9 without retries; retried
/// on a new connection, the apply completes).
#[test]
fn field_wrong_body_length_on_a_kept_connection_is_never_read_as_the_next_response() {
    let tmp = setup_many_windows("field-keepalive-longer");
    let d = tmp.path();
    let image = std::fs::read(d.join("u.fwi")).unwrap();
    let server = FaultServer::start(Fault::KeepAlive {
        served: Served::new(image, "v11"),
        quirk: Quirk::Longer,
    })
    .unwrap();
    let out = apply(
        d,
        &server.url("u.fwi"),
        &["--json", "--retries", "0", "--timeout", "5"],
        Duration::from_secs(120),
    );
    assert_applied_without_retries(d, &out, "longer body");
    // Every connection ended with bytes nobody asked for: none carried
    // a second request.
    let reqs = server.requests();
    assert!(
        reqs.len() >= 3 && reqs.iter().all(|r| !r.after_bad_framing),
        "a request went out after a longer body: {reqs:?}"
    );
    drop(server);

    let tmp = setup_many_windows("field-keepalive-shorter");
    let d = tmp.path();
    let image = std::fs::read(d.join("u.fwi")).unwrap();
    let server = FaultServer::start(Fault::KeepAlive {
        served: Served::new(image, "v11"),
        quirk: Quirk::Shorter,
    })
    .unwrap();
    let url = server.url("u.fwi");
    let out = apply(
        d,
        &url,
        &["--retries", "0", "--timeout", "2"],
        Duration::from_secs(120),
    );
    assert_source_failure(d, &out, "shorter body", &["timed out"]);
    // With retries: each short body is a failure, retried on a new
    // connection, and the apply completes.
    let out = apply(
        d,
        &url,
        &["--json", "--timeout", "2"],
        Duration::from_secs(120),
    );
    assert_eq!(code(&out), 0, "shorter body, retried: {}", show(&out));
    assert!(cmp_range(
        &d.join("big.img"),
        0,
        &d.join("disk.img"),
        74 * MIB,
        64 * MIB
    ));
    let reqs = server.requests();
    assert!(
        reqs.iter().all(|r| !r.after_bad_framing),
        "a request went out after a short body: {reqs:?}"
    );
}

/// Interim answers (`100 Continue`, `103 Early Hints`, which CDNs send)
/// before every real one are skipped, as RFC 9110 §15.2 requires of
/// every client: the apply completes on kept connections, without a
/// failure.
#[test]
fn field_interim_1xx_answers_are_skipped() {
    let tmp = setup("field-interim");
    let d = tmp.path();
    let image = std::fs::read(d.join("v11.fwi")).unwrap();
    let server = FaultServer::start(Fault::KeepAlive {
        served: Served::new(image, "v11"),
        quirk: Quirk::Interim,
    })
    .unwrap();
    let out = apply(
        d,
        &server.url("u.fwi"),
        &["--json", "--retries", "0"],
        Duration::from_secs(60),
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_pending_b(d, "after interim answers");
}

/// A server that compresses the image on the fly (`Content-Encoding:
/// gzip`, though the client asked for identity) is a server fault named
/// as such (exit 9), not an image that is "not a fwpack image" (exit 4).
#[test]
fn field_gzip_content_encoding_is_a_server_fault() {
    let tmp = setup("field-gzip");
    let d = tmp.path();
    let gz = Command::new("gzip")
        .args(["-c", "-1", "v11.fwi"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(gz.status.success());
    let server = FaultServer::start(Fault::KeepAlive {
        served: Served::new(gz.stdout, "v11"),
        quirk: Quirk::Gzip,
    })
    .unwrap();
    let out = apply(
        d,
        &server.url("u.fwi"),
        &["--retries", "0"],
        Duration::from_secs(60),
    );
    assert_source_failure(d, &out, "gzip", &["content-encoding `gzip`"]);
}

/// Redirect targets are resolved as RFC 3986 says: a relative one with
/// `..`/`.` segments and a fragment reaches the file its path names
/// (no `#` and no dot segment ever goes on the wire), and another
/// scheme (`ftp://`) is refused at once, not requested as a path on
/// the same server.
#[test]
fn field_redirect_targets_are_resolved_like_urls() {
    let tmp = setup("field-redirect-resolve");
    let d = tmp.path();
    let image = std::fs::read(d.join("v11.fwi")).unwrap();
    let server = FaultServer::start(Fault::RedirectThen {
        location: "../c/./v11.fwi#frag".into(),
        path: "/a/c/v11.fwi".into(),
        served: Served::new(image, "v11"),
    })
    .unwrap();
    let out = apply(
        d,
        &server.url("a/b/u.fwi"),
        &["--retries", "0"],
        Duration::from_secs(60),
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_pending_b(d, "relative redirect");
    let reqs = server.requests();
    assert!(
        reqs.iter()
            .all(|r| !r.path.contains('#') && !r.path.contains("/.")),
        "{reqs:?}"
    );

    let tmp = setup("field-redirect-scheme");
    let d = tmp.path();
    let server = FaultServer::start(Fault::RedirectTo("ftp://127.0.0.1/v11.fwi".into())).unwrap();
    let out = apply(
        d,
        &server.url("u.fwi"),
        &["--retries", "0"],
        Duration::from_secs(60),
    );
    assert_source_failure(d, &out, "ftp redirect", &["not an http"]);
    assert_eq!(server.requests().len(), 1, "{:?}", server.requests());
}

/// The surplus of a body longer than its Content-Length may arrive only
/// after the next request went out on the kept connection (no check of
/// an idle connection can rule that out), and is then read as its
/// answer: a 206 for other bytes, or bytes that are no response head.
/// On a reused connection the first is retried on a new one instead of
/// ending the apply, and the second goes out again on a new connection
/// at once, as when a kept connection was closed (no failure counted).
#[test]
fn field_late_surplus_on_a_kept_connection_is_retried_on_a_new_one() {
    let tmp = setup("field-late-junk");
    let d = tmp.path();
    let image = std::fs::read(d.join("v11.fwi")).unwrap();
    let server = FaultServer::start(Fault::KeepAlive {
        served: Served::new(image, "v11"),
        quirk: Quirk::LateJunk,
    })
    .unwrap();
    let out = apply(
        d,
        &server.url("u.fwi"),
        &["--retries", "0", "--timeout", "5"],
        Duration::from_secs(120),
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_pending_b(d, "after late junk");
    assert!(
        server.requests().iter().any(|r| r.before_on_connection > 0),
        "no connection was reused: {:?}",
        server.requests()
    );
    drop(server);

    let tmp = setup("field-late-surplus");
    let d = tmp.path();
    let image = std::fs::read(d.join("v11.fwi")).unwrap();
    let server = FaultServer::start(Fault::KeepAlive {
        served: Served::new(image, "v11"),
        quirk: Quirk::LateSurplus,
    })
    .unwrap();
    let out = apply(
        d,
        &server.url("u.fwi"),
        &["--json", "--timeout", "5"],
        Duration::from_secs(120),
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_pending_b(d, "after a late surplus");
    let reqs = server.requests();
    assert!(
        reqs.iter().any(|r| r.before_on_connection > 0),
        "no connection was reused: {reqs:?}"
    );
}

/// More ways an https server fails to prove itself, each exit 9 with
/// its reason before a byte of the image is read: a certificate from
/// the trusted CA that expired (openssl `-days -1`), a server that ends
/// the handshake with an alert (no cipher suite in common), and plain
/// http answering on the https port.
#[test]
fn field_https_expired_certificate_alert_and_plain_http_are_refused() {
    if !testkit::tools::require("nginx") || !testkit::tools::require("openssl") {
        return;
    }
    let tmp = setup("field-https-refused");
    let d = tmp.path();
    private_ca(d);
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy(d.join("v11.fwi"), www.join("u.fwi")).unwrap();
    std::fs::write(d.join("old.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    for args in [
        "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout old.key -out old.csr -subj /CN=127.0.0.1",
        "x509 -req -in old.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out old.pem -days -1 -extfile old.ext",
    ] {
        let out = Command::new("openssl")
            .args(args.split(' '))
            .current_dir(d)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args}: {}", show(&out));
    }
    let limit = Duration::from_secs(120);
    let args = ["--retries", "0", "--ca", "ca.pem"];
    let expired = Nginx::start_tls(&www, &d.join("old.pem"), &d.join("old.key")).unwrap();
    let out = apply(d, &expired.url("u.fwi"), &args, limit);
    assert_source_failure(d, &out, "expired certificate", &["expired"]);
    drop(expired);
    // Only RSA key exchange, which rustls does not speak: nginx ends the
    // handshake with a handshake_failure alert.
    let alert = Nginx::start_tls_with(
        &www,
        &d.join("srv.pem"),
        &d.join("srv.key"),
        "ssl_protocols TLSv1.2; ssl_ciphers AES128-SHA;",
    )
    .unwrap();
    let out = apply(d, &alert.url("u.fwi"), &args, limit);
    assert_source_failure(d, &out, "TLS alert", &["fatal alert"]);
    drop(alert);
    let plain = Nginx::start(&www).unwrap();
    let url = plain.url("u.fwi").replace("http://", "https://");
    let out = apply(d, &url, &args, limit);
    assert_source_failure(d, &out, "plain http on https", &["corrupt message"]);
    assert_eq!(plain.body_bytes_for("/u.fwi"), 0);
}
