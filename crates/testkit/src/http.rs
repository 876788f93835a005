//! HTTP servers for the image-source tests, on 127.0.0.1 only.
//!
//! - [`Nginx`]: Debian's nginx (installed by `cargo xtask deps`) run as a
//!   single foreground process on a free loopback port with its own config,
//!   pid file, error log and a machine-readable access log
//!   ([`Nginx::access_log`]). One process (`master_process off`) so that
//!   [`Nginx::stop`] (SIGKILL) really cuts a transfer instead of leaving an
//!   orphaned worker serving it. `limit_rate` slows transfers down enough
//!   to interrupt them.
//! - [`FaultServer`]: a std `TcpListener` in a thread answering every
//!   request with a scripted misbehaviour ([`Fault`]): 404, a redirect
//!   loop, a truncated body, a lying `Content-Length`, a stall, or an image
//!   replaced between requests. It records what it was asked
//!   ([`FaultServer::requests`]).
//!
//! Real servers come first: everything nginx can do is tested against
//! nginx; the fault server only does what a correct server never does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{io_err, Error, Result};

/// How long a starting nginx may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One line of nginx's access log (format `fwpack`, see [`Nginx`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `GET /u2.fwi HTTP/1.1`
    pub request: String,
    pub status: u16,
    /// The `Range` request header, if sent.
    pub range: Option<String>,
    /// The `If-Range` request header, if sent.
    pub if_range: Option<String>,
    /// Body bytes sent (what a delta or resume is measured by).
    pub body_bytes_sent: u64,
    /// Everything sent, headers included.
    pub bytes_sent: u64,
    /// nginx's serial number of the connection it came on
    /// (`$connection`): distinct numbers are distinct TCP connections.
    pub connection: u64,
    /// Requests on that connection so far, this one included
    /// (`$connection_requests`).
    pub connection_requests: u64,
}

impl Entry {
    /// The path of the request line (`/u2.fwi`).
    pub fn path(&self) -> &str {
        self.request.split(' ').nth(1).unwrap_or("")
    }

    /// First byte of every range in the `Range` header
    /// (`bytes=100-199,300-` -> `[100, 300]`); suffix ranges (`-500`) are
    /// left out.
    pub fn range_starts(&self) -> Vec<u64> {
        parse_ranges(self.range.as_deref().unwrap_or(""))
            .into_iter()
            .filter_map(|r| match r {
                ByteRange::From(a) | ByteRange::FromTo(a, _) => Some(a),
                ByteRange::Suffix(_) => None,
            })
            .collect()
    }

    fn parse(line: &str) -> Option<Entry> {
        let f: Vec<&str> = line.split('\t').collect();
        let [request, status, range, if_range, body, total, conn, conn_requests] = f.as_slice()
        else {
            return None;
        };
        let opt = |s: &str| {
            let s = s.trim_matches('"');
            (s != "-" && !s.is_empty()).then(|| s.to_string())
        };
        Some(Entry {
            request: request.trim_matches('"').to_string(),
            status: status.parse().ok()?,
            range: opt(range),
            if_range: opt(if_range),
            body_bytes_sent: body.parse().ok()?,
            bytes_sent: total.parse().ok()?,
            connection: conn.parse().ok()?,
            connection_requests: conn_requests.parse().ok()?,
        })
    }
}

/// nginx serving `root` on `127.0.0.1:<port>`.
pub struct Nginx {
    dir: tempfile::TempDir,
    root: PathBuf,
    port: u16,
    limit_rate: Option<u64>,
    /// `(certificate chain, key)` PEM files: serve HTTPS instead of HTTP.
    tls: Option<(PathBuf, PathBuf)>,
    /// More directives for the `server` block (e.g. a `location` that
    /// redirects).
    extra: String,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx serving the files under `root` at full speed.
    pub fn start(root: &Path) -> Result<Nginx> {
        Self::start_limited(root, None)
    }

    /// Starts nginx with `limit_rate` (bytes per second per connection), or
    /// unlimited with `None`.
    pub fn start_limited(root: &Path, limit_rate: Option<u64>) -> Result<Nginx> {
        let dir = tempfile::Builder::new()
            .prefix("fwpack-nginx-")
            .tempdir()
            .map_err(io_err(std::env::temp_dir()))?;
        let root = root.canonicalize().map_err(io_err(root.to_path_buf()))?;
        let mut n = Nginx {
            dir,
            root,
            port: free_port()?,
            limit_rate,
            tls: None,
            extra: String::new(),
            child: None,
        };
        n.launch()?;
        Ok(n)
    }

    /// Starts nginx serving `root` over HTTPS with the certificate chain
    /// `cert` and its key `key` (PEM files, e.g. made by the test with
    /// openssl under a private CA).
    pub fn start_tls(root: &Path, cert: &Path, key: &Path) -> Result<Nginx> {
        Self::start_tls_with(root, cert, key, "")
    }

    /// [`Nginx::start_tls`] with `extra` directives in the `server` block.
    pub fn start_tls_with(root: &Path, cert: &Path, key: &Path, extra: &str) -> Result<Nginx> {
        let mut n = Self::start_limited(root, None)?;
        n.stop();
        n.extra = extra.to_string();
        n.tls = Some((
            cert.canonicalize().map_err(io_err(cert.to_path_buf()))?,
            key.canonicalize().map_err(io_err(key.to_path_buf()))?,
        ));
        n.launch()?;
        Ok(n)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>/<path>` (`https://` with TLS).
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://127.0.0.1:{}/{}",
            if self.tls.is_some() { "https" } else { "http" },
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// Changes `limit_rate` from the next [`Nginx::restart`] on.
    pub fn set_limit_rate(&mut self, limit_rate: Option<u64>) {
        self.limit_rate = limit_rate;
    }

    /// SIGKILL: open transfers are cut mid-body, the way a crashed server
    /// or a pulled cable looks to the client. (nginx logs a request when it
    /// ends, so a transfer cut this way has no access-log line.)
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port, appending to the same access log.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    pub fn error_log_path(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    /// Every request logged so far, oldest first.
    pub fn access_log(&self) -> Vec<Entry> {
        std::fs::read_to_string(self.access_log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(Entry::parse)
            .collect()
    }

    /// Distinct connections the logged requests came on.
    pub fn connections(&self) -> usize {
        let mut c: Vec<u64> = self.access_log().iter().map(|e| e.connection).collect();
        c.sort_unstable();
        c.dedup();
        c.len()
    }

    /// Body bytes sent for `path` over the whole log.
    pub fn body_bytes_for(&self, path: &str) -> u64 {
        self.access_log()
            .iter()
            .filter(|e| e.path() == path)
            .map(|e| e.body_bytes_sent)
            .sum()
    }

    fn config(&self) -> String {
        let d = self.dir.path().display();
        let rate = self
            .limit_rate
            .map(|r| format!("limit_rate {r};"))
            .unwrap_or_default();
        let (ssl, tls) = match &self.tls {
            Some((cert, key)) => (
                " ssl",
                format!(
                    "ssl_certificate {};\n        ssl_certificate_key {};",
                    cert.display(),
                    key.display()
                ),
            ),
            None => ("", String::new()),
        };
        // Running as root, nginx would otherwise switch to `nobody`, who
        // may not read a test's files; single-process mode never switches.
        format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    default_type application/octet-stream;
    log_format fwpack '"$request"\t$status\t"$http_range"\t"$http_if_range"\t$body_bytes_sent\t$bytes_sent\t$connection\t$connection_requests';
    access_log {d}/access.log fwpack;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    sendfile on;
    keepalive_timeout 30s;
    server {{
        listen 127.0.0.1:{port}{ssl};
        {tls}
        root {root};
        location / {{ {rate} }}
        {extra}
    }}
}}
"#,
            port = self.port,
            root = self.root.display(),
            extra = self.extra,
        )
    }

    fn launch(&mut self) -> Result<()> {
        let conf = self.dir.path().join("nginx.conf");
        std::fs::write(&conf, self.config()).map_err(io_err(&conf))?;
        let nginx = crate::tools::find("nginx").ok_or_else(|| {
            Error::Other("nginx is not installed; `cargo xtask deps` installs it".into())
        })?;
        let mut cmd = Command::new(&nginx);
        // -e: the error log before the config is read (the compiled-in
        // default is /var/log/nginx, not ours to write).
        cmd.arg("-p")
            .arg(self.dir.path())
            .arg("-e")
            .arg(self.error_log_path())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let shown = format!("{cmd:?}");
        let mut child = cmd.spawn().map_err(|e| Error::Command {
            command: shown.clone(),
            message: e.to_string(),
        })?;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Command {
                    command: shown,
                    message: format!(
                        "exited ({status}) at start\n{}",
                        std::fs::read_to_string(self.error_log_path()).unwrap_or_default()
                    ),
                });
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Other(format!(
                    "{shown}: not listening on {addr} after {START_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP forwarder on `127.0.0.1:<port>` to an upstream port that counts
/// the bytes the upstream sends: traffic measured for servers that do not
/// log it (python's http.server).
pub struct CountingProxy {
    port: u16,
    down: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    pub fn start(upstream: u16) -> Result<CountingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("127.0.0.1:0"))?;
        let port = listener.local_addr().map_err(io_err("127.0.0.1:0"))?.port();
        let down = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, st) = (down.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let d = d.clone();
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                std::thread::spawn(move || pump(client, server, None));
                std::thread::spawn(move || pump(s2, c2, Some(d)));
            }
        });
        Ok(CountingProxy { port, down, stop })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Bytes the upstream sent (headers included), all connections.
    pub fn bytes_down(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<std::sync::atomic::AtomicU64>>) {
    let mut buf = [0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(c) = &count {
                    c.fetch_add(n as u64, Ordering::SeqCst);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
    }
}

/// A port that was free a moment ago (the kernel's choice for port 0).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("127.0.0.1:0"))?;
    let port = l.local_addr().map_err(io_err("127.0.0.1:0"))?.port();
    Ok(port)
}

/// A body the fault server serves, honouring `Range` and `If-Range`.
#[derive(Debug, Clone, Default)]
pub struct Served {
    pub body: Vec<u8>,
    /// Sent as `ETag` (quoted by the server); `If-Range` is compared to it.
    pub etag: Option<String>,
    /// Close the connection after this many body bytes of a response (the
    /// client sees a connection dropped mid-body).
    pub cut_after: Option<u64>,
}

impl Served {
    pub fn new(body: Vec<u8>, etag: &str) -> Served {
        Served {
            body,
            etag: Some(etag.to_string()),
            cut_after: None,
        }
    }
}

/// What every request to a [`FaultServer`] gets.
#[derive(Debug, Clone)]
pub enum Fault {
    /// `404 Not Found`.
    NotFound,
    /// `302 Found` with `Location:` the request's own path, forever.
    RedirectLoop,
    /// A file cut at byte `send`: every response declares the length it
    /// should have (ranges honoured) but stops before byte `send` of the
    /// body and closes, so retries from there get nothing more.
    Truncated { body: Vec<u8>, send: usize },
    /// A server without range support whose file is cut at byte `send`:
    /// every request, `Range` or not, gets `200` declaring the whole
    /// length, the first `send` bytes, then a close.
    TruncatedNoRanges { body: Vec<u8>, send: usize },
    /// The whole body with `Content-Length: declared` (more or fewer
    /// bytes than declared), then close.
    WrongLength { body: Vec<u8>, declared: u64 },
    /// Headers for `body` (200, its length), then silence on an open
    /// connection.
    StallAfterHeaders { body: Vec<u8> },
    /// Accepts the connection and never says anything.
    Silent,
    /// `206` for bytes 0 to 1 TiB of a 1 TiB file (whatever was asked),
    /// a few bytes, then close: a client that trusts Content-Range
    /// allocates a terabyte.
    HugeContentRange,
    /// Correct headers for `body` (200, or 206 for a range), then one
    /// body byte per second.
    Drip { body: Vec<u8> },
    /// `302 Found` to this absolute URL.
    RedirectTo(String),
    /// A request for exactly `path` is answered from `served` (ranges
    /// honoured); any other gets `302 Found` with `Location: location`
    /// as it is (relative, with dot segments, a fragment...).
    RedirectThen {
        location: String,
        path: String,
        served: Served,
    },
    /// Request `i` (counting from 0) is answered from `v[min(i, len-1)]`:
    /// one entry is a plain range-capable server; two with a cut in the
    /// first are an image replaced on the server between a dropped
    /// transfer and its retry (with the same or a different ETag).
    Sequence(Vec<Served>),
    /// A range-capable HTTP/1.1 server that keeps connections open
    /// (keep-alive), with a `Quirk` in how it ends or reuses them.
    KeepAlive { served: Served, quirk: Quirk },
}

/// How a [`Fault::KeepAlive`] server treats its connections. "Reused":
/// a request on a connection that already carried a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quirk {
    /// None: a correct keep-alive server (for counting connections).
    Honest,
    /// Closes every connection after its response without saying so (no
    /// `Connection: close`).
    CloseSilently,
    /// Closes a reused connection on its next request, unanswered: the
    /// server timed the idle connection out as the request went out.
    DropReused,
    /// Answers `Connection: close`, then closes.
    SayClose,
    /// After every body a whole second response nobody asked for (a 206
    /// head and bytes of 0xEE), connection open: a client that reuses
    /// the connection reads it as the answer to its next request.
    Longer,
    /// On a reused connection: 100 body bytes fewer than its
    /// Content-Length, connection open.
    Shorter,
    /// On a reused connection, before the answer, a whole 206 for bytes
    /// 0-9 nobody asked for: the surplus of a body longer than its
    /// Content-Length that arrived only after the client's next request
    /// went out (no check of an idle connection can see it coming).
    LateSurplus,
    /// On a reused connection, `xyz` before the answer: a late surplus
    /// that is no response at all.
    LateJunk,
    /// Two interim answers (`100 Continue`, `103 Early Hints`) before
    /// every real one, as a CDN may send (RFC 9110 §15.2).
    Interim,
    /// Ignores Range: `200` with `Content-Encoding: gzip` and the served
    /// body as it is (the test serves it gzipped), though the client
    /// asked for identity: a CDN compressing on the fly.
    Gzip,
}

/// One request as the fault server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    /// Status the server answered with (0: none, e.g. [`Fault::Silent`]).
    pub status: u16,
    /// The connection it came on (counted from 1 as accepted).
    pub connection: u64,
    /// Responses that connection had carried before this request.
    pub before_on_connection: u64,
    /// The previous response on this connection broke its framing
    /// ([`Quirk::Longer`], [`Quirk::Shorter`]).
    pub after_bad_framing: bool,
}

struct FaultShared {
    fault: Fault,
    accepted: std::sync::atomic::AtomicU64,
    requests: Mutex<Vec<Request>>,
    stop: AtomicBool,
}

/// A misbehaving HTTP/1.1 server on `127.0.0.1:<port>`; stopped on drop.
pub struct FaultServer {
    addr: SocketAddr,
    shared: Arc<FaultShared>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl FaultServer {
    pub fn start(fault: Fault) -> Result<FaultServer> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("127.0.0.1:0"))?;
        let addr = listener.local_addr().map_err(io_err("127.0.0.1:0"))?;
        let shared = Arc::new(FaultShared {
            fault,
            accepted: std::sync::atomic::AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let acceptor = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                let number = s.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                // A connection of its own per thread: a stalled one must
                // not hold up the client's retry on a new connection.
                std::thread::spawn(move || {
                    let _ = serve_connection(conn, number, &s);
                });
            }
        });
        Ok(FaultServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head; `None` when the peer closed first.
fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    let mut total = 0usize;
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line)?;
        if n == 0 {
            return Ok(None);
        }
        total += n;
        if total > 64 * 1024 {
            return Err(std::io::Error::other("request head too large"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn serve_connection(conn: TcpStream, number: u64, s: &FaultShared) -> std::io::Result<()> {
    if let Fault::Silent = s.fault {
        s.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Request {
                method: String::new(),
                path: String::new(),
                range: None,
                if_range: None,
                status: 0,
                connection: number,
                before_on_connection: 0,
                after_bad_framing: false,
            });
        idle_until_stopped(s);
        return Ok(());
    }
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    // Keep-alive: several requests may come on one connection; every
    // response that ends early or lies closes it.
    let mut answered = 0u64;
    let mut bad_framing = false;
    while let Some(head) = read_head(&mut r)? {
        let mut parts = head.first().map(|l| l.split(' ')).into_iter().flatten();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("/").to_string();
        let header = |name: &str| {
            head.iter().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let range = header("range");
        let if_range = header("if-range");
        let index = {
            let mut reqs = s.requests.lock().unwrap_or_else(|p| p.into_inner());
            reqs.push(Request {
                method: method.clone(),
                path: path.clone(),
                range: range.clone(),
                if_range: if_range.clone(),
                status: 0,
                connection: number,
                before_on_connection: answered,
                after_bad_framing: bad_framing,
            });
            reqs.len() - 1
        };
        let set_status = |status: u16| {
            if let Some(r) = s
                .requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(index)
            {
                r.status = status;
            }
        };
        let head_only = method == "HEAD";
        let keep_going = match &s.fault {
            Fault::Silent => unreachable!("handled above"),
            Fault::NotFound => {
                set_status(404);
                let body = b"not found\n";
                write!(
                    w,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )?;
                if !head_only {
                    w.write_all(body)?;
                }
                true
            }
            Fault::RedirectLoop => {
                set_status(302);
                write!(
                    w,
                    "HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\n\r\n"
                )?;
                true
            }
            Fault::Truncated { body, send } => {
                let sv = Served {
                    body: body.clone(),
                    etag: Some("truncated".into()),
                    cut_after: None,
                };
                let (status, _) = respond_ranged(
                    &mut w,
                    &sv,
                    range.as_deref(),
                    if_range.as_deref(),
                    head_only,
                    Some(*send as u64),
                )?;
                set_status(status);
                false
            }
            Fault::TruncatedNoRanges { body, send } => {
                set_status(200);
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )?;
                if !head_only {
                    w.write_all(body.get(..*send).unwrap_or(body))?;
                }
                false
            }
            Fault::WrongLength { body, declared } => {
                set_status(200);
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
                )?;
                if !head_only {
                    w.write_all(body)?;
                }
                false
            }
            Fault::StallAfterHeaders { body } => {
                set_status(200);
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )?;
                w.flush()?;
                idle_until_stopped(s);
                false
            }
            Fault::HugeContentRange => {
                set_status(206);
                let last = (1u64 << 40) - 1;
                write!(
                    w,
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-{last}/{}\r\nContent-Length: {}\r\n\r\nFWPK",
                    last + 1,
                    last + 1
                )?;
                false
            }
            Fault::Drip { body } => {
                let ranged = range
                    .as_deref()
                    .map(parse_ranges)
                    .and_then(|r| r.first().and_then(|r| r.resolve(body.len() as u64)));
                let (start, end) = ranged.unwrap_or((0, body.len() as u64));
                if ranged.is_some() {
                    set_status(206);
                    write!(
                        w,
                        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\n\r\n",
                        end - 1,
                        body.len(),
                        end - start
                    )?;
                } else {
                    set_status(200);
                    write!(
                        w,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )?;
                }
                for b in body.get(start as usize..end as usize).unwrap_or_default() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    w.write_all(&[*b])?;
                    w.flush()?;
                    std::thread::sleep(Duration::from_secs(1));
                }
                false
            }
            Fault::RedirectTo(to) => {
                set_status(302);
                write!(
                    w,
                    "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n"
                )?;
                true
            }
            Fault::RedirectThen {
                location,
                path: to,
                served,
            } => {
                if path == *to {
                    let (status, cut) = respond_ranged(
                        &mut w,
                        served,
                        range.as_deref(),
                        if_range.as_deref(),
                        head_only,
                        None,
                    )?;
                    set_status(status);
                    !cut
                } else {
                    set_status(302);
                    write!(
                        w,
                        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
                    )?;
                    true
                }
            }
            Fault::Sequence(v) => {
                let served = v.get(index.min(v.len().saturating_sub(1)));
                match served {
                    Some(sv) => {
                        let (status, cut) = respond_ranged(
                            &mut w,
                            sv,
                            range.as_deref(),
                            if_range.as_deref(),
                            head_only,
                            None,
                        )?;
                        set_status(status);
                        !cut
                    }
                    None => false,
                }
            }
            Fault::KeepAlive { served, quirk } => {
                if *quirk == Quirk::DropReused && answered > 0 {
                    break;
                }
                let (status, keep) =
                    respond_quirk(&mut w, served, range.as_deref(), *quirk, answered > 0)?;
                set_status(status);
                bad_framing = *quirk == Quirk::Longer || (answered > 0 && *quirk == Quirk::Shorter);
                keep
            }
        };
        answered += 1;
        w.flush()?;
        let close = header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        if !keep_going || close {
            break;
        }
    }
    let _ = w.shutdown(Shutdown::Both);
    Ok(())
}

fn idle_until_stopped(s: &FaultShared) {
    while !s.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Answers like a correct server would (200, 206 for one satisfiable
/// range unless `If-Range` names another ETag, 416), except for
/// `cut_after` (bytes into this response) and `cut_at` (an absolute
/// offset of the body no response gets past). Returns (status, whether
/// the connection was cut).
fn respond_ranged(
    w: &mut TcpStream,
    sv: &Served,
    range: Option<&str>,
    if_range: Option<&str>,
    head_only: bool,
    cut_at: Option<u64>,
) -> std::io::Result<(u16, bool)> {
    let len = sv.body.len() as u64;
    let etag = sv.etag.as_ref().map(|e| format!("\"{e}\""));
    let etag_line = etag
        .as_ref()
        .map(|e| format!("ETag: {e}\r\n"))
        .unwrap_or_default();
    // If-Range with an ETag that is not the current one: the whole new
    // representation (RFC 9110 13.1.5). Dates are never matched.
    let range_applies = match if_range {
        None => true,
        Some(v) => etag.as_deref() == Some(v),
    };
    let ranges = range
        .filter(|_| range_applies)
        .map(parse_ranges)
        .unwrap_or_default();
    let (status, start, end) = match ranges.as_slice() {
        [one] => match one.resolve(len) {
            Some((a, b)) => (206, a, b),
            None => {
                write!(
                    w,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\n{etag_line}Content-Length: 0\r\n\r\n"
                )?;
                return Ok((416, false));
            }
        },
        // No range, or several (a server may ignore a multi-range request
        // and send everything).
        _ => (200, 0, len),
    };
    let mut headers = content_head(status, (start, end, len), &etag_line);
    headers.push_str("\r\n");
    w.write_all(headers.as_bytes())?;
    if head_only {
        return Ok((status, false));
    }
    let body = sv
        .body
        .get(start as usize..end as usize)
        .unwrap_or_default();
    let cut = match (sv.cut_after, cut_at.map(|a| a.saturating_sub(start))) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    match cut {
        Some(n) if n < body.len() as u64 => {
            w.write_all(body.get(..n as usize).unwrap_or_default())?;
            w.flush()?;
            Ok((status, true))
        }
        _ => {
            w.write_all(body)?;
            Ok((status, false))
        }
    }
}

/// The head of a 200 (whole body) or 206 answer for bytes `[start, end)`
/// of a `len`-byte body, up to but not including its closing empty line.
fn content_head(status: u16, (start, end, len): (u64, u64, u64), etag_line: &str) -> String {
    let mut head = format!(
        "HTTP/1.1 {}\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\n{etag_line}Content-Length: {}\r\n",
        if status == 206 { "206 Partial Content" } else { "200 OK" },
        end - start
    );
    if status == 206 {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{len}\r\n",
            end.saturating_sub(1)
        ));
    }
    head
}

/// A [`Fault::KeepAlive`] answer (200, or 206 for one satisfiable
/// range); returns (status, keep the connection open).
fn respond_quirk(
    w: &mut TcpStream,
    sv: &Served,
    range: Option<&str>,
    quirk: Quirk,
    reused: bool,
) -> std::io::Result<(u16, bool)> {
    let len = sv.body.len() as u64;
    let one = match range.map(parse_ranges).as_deref() {
        Some([one]) if quirk != Quirk::Gzip => one.resolve(len),
        _ => None,
    };
    let (status, start, end) = match one {
        Some((a, b)) => (206, a, b),
        None => (200, 0, len),
    };
    let etag = sv
        .etag
        .as_ref()
        .map(|e| format!("ETag: \"{e}\"\r\n"))
        .unwrap_or_default();
    let mut head = content_head(status, (start, end, len), &etag);
    if quirk == Quirk::SayClose {
        head.push_str("Connection: close\r\n");
    }
    if quirk == Quirk::Gzip {
        head.push_str("Content-Encoding: gzip\r\n");
    }
    head.push_str("\r\n");
    if quirk == Quirk::LateSurplus && reused {
        write!(
            w,
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/{len}\r\nContent-Length: 10\r\n\r\n"
        )?;
        w.write_all(&[0xEE; 10])?;
    }
    if quirk == Quirk::LateJunk && reused {
        w.write_all(b"xyz")?;
    }
    if quirk == Quirk::Interim {
        w.write_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </u.fwi>; rel=preload\r\n\r\n",
        )?;
    }
    w.write_all(head.as_bytes())?;
    let body = sv
        .body
        .get(start as usize..end as usize)
        .unwrap_or_default();
    match quirk {
        Quirk::Shorter if reused => {
            w.write_all(&body[..body.len().saturating_sub(100)])?;
        }
        Quirk::Longer => {
            w.write_all(body)?;
            let fake = vec![0xEE; 4096];
            write!(
                w,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{len}\r\nContent-Length: {}\r\n\r\n",
                start + fake.len() as u64 - 1,
                fake.len()
            )?;
            w.write_all(&fake)?;
        }
        _ => w.write_all(body)?,
    }
    w.flush()?;
    Ok((
        status,
        !matches!(quirk, Quirk::CloseSilently | Quirk::SayClose),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteRange {
    /// `a-`
    From(u64),
    /// `a-b` (inclusive b, as on the wire)
    FromTo(u64, u64),
    /// `-n`: the last n bytes
    Suffix(u64),
}

impl ByteRange {
    /// Half-open [start, end) within `len`, or `None` if unsatisfiable.
    fn resolve(self, len: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::From(a) if a < len => Some((a, len)),
            ByteRange::FromTo(a, b) if a < len && a <= b => Some((a, (b + 1).min(len))),
            ByteRange::Suffix(n) if n > 0 && len > 0 => Some((len.saturating_sub(n), len)),
            _ => None,
        }
    }
}

fn parse_ranges(header: &str) -> Vec<ByteRange> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Vec::new();
    };
    spec.split(',')
        .filter_map(|r| {
            let (a, b) = r.trim().split_once('-')?;
            match (a.trim(), b.trim()) {
                ("", n) => Some(ByteRange::Suffix(n.parse().ok()?)),
                (a, "") => Some(ByteRange::From(a.parse().ok()?)),
                (a, b) => Some(ByteRange::FromTo(a.parse().ok()?, b.parse().ok()?)),
            }
        })
        .collect()
}

/// A minimal HTTP/1.1 GET for tests and benchmarks that check a server
/// without the code under test: (status, lower-cased headers, body). Reads
/// the body to EOF (sends `Connection: close`).
pub fn get(url: &str, headers: &[(&str, &str)], timeout: Duration) -> Result<Response> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Error::Other(format!("{url}: only http:// URLs")))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = host
        .parse()
        .map_err(|e| Error::Other(format!("{url}: host must be ip:port ({e})")))?;
    let net = |e: std::io::Error| Error::Other(format!("GET {url}: {e}"));
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(net)?;
    s.set_read_timeout(Some(timeout)).map_err(net)?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(net)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(net)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| Error::Other(format!("GET {url}: no end of headers")))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Error::Other(format!("GET {url}: bad status line")))?;
    let headers = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    fn body(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(
            parse_ranges("bytes=0-9, 20-,-5"),
            vec![
                ByteRange::FromTo(0, 9),
                ByteRange::From(20),
                ByteRange::Suffix(5)
            ]
        );
        assert!(parse_ranges("items=1-2").is_empty());
        assert_eq!(ByteRange::FromTo(5, 100).resolve(10), Some((5, 10)));
        assert_eq!(ByteRange::From(10).resolve(10), None);
        assert_eq!(ByteRange::Suffix(3).resolve(10), Some((7, 10)));
    }

    #[test]
    fn access_log_lines_parse() {
        let e = Entry::parse(
            "\"GET /u2.fwi HTTP/1.1\"\t206\t\"bytes=4096-\"\t\"\\x22abc\\x22\"\t100\t350\t7\t2",
        )
        .unwrap();
        assert_eq!(e.path(), "/u2.fwi");
        assert_eq!(e.status, 206);
        assert_eq!(e.range_starts(), vec![4096]);
        assert_eq!(e.if_range.as_deref(), Some("\\x22abc\\x22"));
        assert_eq!((e.body_bytes_sent, e.bytes_sent), (100, 350));
        assert_eq!((e.connection, e.connection_requests), (7, 2));
        let e = Entry::parse("\"GET / HTTP/1.1\"\t200\t\"-\"\t\"-\"\t5\t200\t1\t1").unwrap();
        assert_eq!((e.range, e.if_range), (None, None));
        assert!(Entry::parse("garbage").is_none());
    }

    #[test]
    fn fault_not_found_and_redirect_loop() {
        let s = FaultServer::start(Fault::NotFound).unwrap();
        assert_eq!(get(&s.url("x.fwi"), &[], T).unwrap().status, 404);
        let s = FaultServer::start(Fault::RedirectLoop).unwrap();
        let r = get(&s.url("loop.fwi"), &[], T).unwrap();
        assert_eq!((r.status, r.header("location")), (302, Some("/loop.fwi")));
        assert_eq!(s.requests()[0].path, "/loop.fwi");
    }

    #[test]
    fn fault_truncated_and_wrong_length() {
        let b = body(1000);
        let s = FaultServer::start(Fault::Truncated {
            body: b.clone(),
            send: 300,
        })
        .unwrap();
        let r = get(&s.url("t"), &[], T).unwrap();
        assert_eq!(r.header("content-length"), Some("1000"));
        assert_eq!(r.body, b[..300]);
        let s = FaultServer::start(Fault::WrongLength {
            body: b.clone(),
            declared: 600,
        })
        .unwrap();
        let r = get(&s.url("t"), &[], T).unwrap();
        assert_eq!(r.header("content-length"), Some("600"));
        assert_eq!(r.body.len(), 1000, "more bytes than declared");
    }

    #[test]
    fn fault_stalls_time_out() {
        for fault in [Fault::StallAfterHeaders { body: body(10) }, Fault::Silent] {
            let s = FaultServer::start(fault).unwrap();
            let e = get(&s.url("s"), &[], Duration::from_millis(300)).unwrap_err();
            assert!(e.to_string().contains("GET"), "{e}");
        }
    }

    #[test]
    fn fault_sequence_honours_range_and_if_range() {
        let a = body(5000);
        let mut b = a.clone();
        b[4000] ^= 1;
        let s = FaultServer::start(Fault::Sequence(vec![
            Served {
                cut_after: Some(1000),
                ..Served::new(a.clone(), "one")
            },
            Served::new(b.clone(), "two"),
        ]))
        .unwrap();
        let r = get(&s.url("img"), &[], T).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &a[..1000]));
        // The image changed: If-Range with the old ETag gets all of the new one.
        let r = get(
            &s.url("img"),
            &[("Range", "bytes=1000-"), ("If-Range", "\"one\"")],
            T,
        )
        .unwrap();
        assert_eq!((r.status, r.body.len()), (200, 5000));
        assert_eq!(r.header("etag"), Some("\"two\""));
        let r = get(
            &s.url("img"),
            &[("Range", "bytes=1000-1999"), ("If-Range", "\"two\"")],
            T,
        )
        .unwrap();
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), Some("bytes 1000-1999/5000"));
        assert_eq!(r.body, b[1000..2000]);
        let reqs = s.requests();
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[1].range.as_deref(), Some("bytes=1000-"));
        assert_eq!(
            reqs.iter().map(|r| r.status).collect::<Vec<_>>(),
            [200, 200, 206]
        );
    }

    #[test]
    fn nginx_serves_ranges_logs_them_and_survives_a_restart() {
        if !crate::tools::require("nginx") {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let b = body(100_000);
        std::fs::write(root.path().join("u2.fwi"), &b).unwrap();
        let mut n = Nginx::start(root.path()).unwrap();
        let r = get(&n.url("u2.fwi"), &[], T).unwrap();
        assert_eq!((r.status, r.body.len()), (200, 100_000));
        let etag = r.header("etag").unwrap().to_string();
        let r = get(
            &n.url("/u2.fwi"),
            &[("Range", "bytes=4096-"), ("If-Range", &etag)],
            T,
        )
        .unwrap();
        assert_eq!(r.status, 206);
        assert_eq!(r.body, b[4096..]);
        assert_eq!(get(&n.url("nope"), &[], T).unwrap().status, 404);

        let port = n.port();
        n.stop();
        assert!(get(&n.url("u2.fwi"), &[], Duration::from_secs(1)).is_err());
        n.restart().unwrap();
        assert_eq!(n.port(), port);
        let r = get(&n.url("u2.fwi"), &[("Range", "bytes=0-99")], T).unwrap();
        assert_eq!((r.status, r.body.len()), (206, 100));

        let log = n.access_log();
        assert_eq!(log.len(), 4, "{log:?}");
        assert_eq!(log[0].status, 200);
        assert_eq!(log[0].body_bytes_sent, 100_000);
        assert!(log[0].bytes_sent > 100_000);
        assert_eq!(log[1].range_starts(), vec![4096]);
        assert!(log[1].if_range.is_some());
        assert_eq!(log[1].body_bytes_sent, 100_000 - 4096);
        assert_eq!(log[2].status, 404);
        assert_eq!((log[3].status, log[3].body_bytes_sent), (206, 100));
        assert_eq!(n.body_bytes_for("/u2.fwi"), 200_000 - 4096 + 100);
    }

    #[test]
    fn nginx_stop_cuts_a_slow_transfer() {
        if !crate::tools::require("nginx") {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("big"), body(4 << 20)).unwrap();
        let mut n = Nginx::start_limited(root.path(), Some(256 * 1024)).unwrap();
        let url = n.url("big");
        let t = std::thread::spawn(move || get(&url, &[], Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(500));
        n.stop();
        let r = t.join().unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert!(
            (r.body.len() as u64) < 4 << 20,
            "cut mid-body, got {}",
            r.body.len()
        );
    }
}
