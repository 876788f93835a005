//! A small HTTP/1.1 GET client: just what ranged image reads need
//! (redirects, timeouts, Content-Length and chunked bodies), with
//! `httparse` — the parser under hyper, reqwest and ureq — doing the
//! parsing, and rustls for https on host builds.
//!
//! Why not a full client crate: ureq 3 was tried first and costs 290 KB
//! in the static aarch64 updater (1,155,640 bytes, over its 1 MiB
//! budget); with this client the binary is 986,880 bytes (std's sockets and
//! musl's resolver included, which any client needs). Everything it returns is
//! untrusted anyway: the image readers authenticate every byte.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::http::Resolver;

/// What every connection is held to.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// Longest wait for a connection or any single read or write.
    pub timeout: Duration,
    /// When the whole transfer must be over.
    pub deadline: Option<Instant>,
    /// At least this many bytes per second over each window.
    pub min_rate: Option<(u64, Duration)>,
    /// At most this many bytes per second (per connection).
    pub max_rate: Option<u64>,
}

impl Limits {
    /// How long a blocking call may wait: the timeout, cut short by the
    /// deadline; a failure once the deadline has passed.
    pub fn wait(&self) -> Result<Duration, Failure> {
        self.check()?;
        Ok(match self.deadline {
            Some(d) => self
                .timeout
                .min(d.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1)),
            None => self.timeout,
        })
    }

    pub fn check(&self) -> Result<(), Failure> {
        match self.deadline {
            Some(d) if Instant::now() >= d => Err(Failure {
                msg: "the deadline (--deadline) passed".into(),
                retry: false,
                deadline: true,
            }),
            _ => Ok(()),
        }
    }
}

/// Longest response head accepted.
const MAX_HEAD: usize = 64 << 10;
/// The buffer under a response: the head is parsed from it, and the body
/// bytes that arrive with the head are read out of it; image reads (a
/// chunk batch, a 64 KiB window) are larger and go straight to the socket
/// (or TLS) past it, so more would only be memory: 64 KiB here, with a
/// window request's connection open beside the stream's, was 128 KiB of
/// the CLI's peak RSS.
const READ_BUF: usize = 8 << 10;
const MAX_HEADERS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let Some((scheme, rest)) = crate::Scheme::split(s) else {
            return Err(format!("`{s}` is not an http:// or https:// URL"));
        };
        let tls = scheme == crate::Scheme::Https;
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // Fragments are never sent.
        let path = path.split('#').next().unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        if authority.contains('@') {
            return Err("credentials in URLs are not supported".into());
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or("unterminated IPv6 address")?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(p)?,
                None if after.is_empty() => default_port,
                None => return Err(format!("bad authority `{authority}`")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), parse_port(p)?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
        {
            return Err(format!("bad host `{host}`"));
        }
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("the path has spaces or control characters".into());
        }
        Ok(Url {
            tls,
            host,
            port,
            path,
        })
    }

    fn host_header(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.tls { 443 } else { 80 } {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }

    fn same_origin(&self, o: &Url) -> bool {
        self.tls == o.tls && self.host.eq_ignore_ascii_case(&o.host) && self.port == o.port
    }

    /// `host` or `host:port` names this URL's server.
    fn matches_host(&self, pattern: &str) -> bool {
        match pattern.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                h.trim_matches(['[', ']']).eq_ignore_ascii_case(&self.host)
                    && p.parse::<u16>().ok() == Some(self.port)
            }
            _ => pattern
                .trim_matches(['[', ']'])
                .eq_ignore_ascii_case(&self.host),
        }
    }

    /// `location` resolved against this URL.
    fn join(&self, location: &str) -> Result<Url, String> {
        // Any `scheme:` (RFC 3986 §3.1) makes the reference absolute:
        // `ftp://h/x` is refused by `parse`, not requested as a path.
        let scheme = location.split_once(':').map_or("", |(s, _)| s);
        if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Url::parse(location);
        }
        if location.starts_with("//") {
            return Url::parse(&format!(
                "{}:{location}",
                if self.tls {
                    crate::Scheme::Https
                } else {
                    crate::Scheme::Http
                }
                .as_str()
            ));
        }
        // RFC 3986 §5.2: fragments are never sent; an empty reference is
        // this URL, `?q` this path with another query.
        let location = location.split('#').next().unwrap_or("");
        let base = self.path.split('?').next().unwrap_or("/");
        let path = if location.starts_with('/') {
            location.to_string()
        } else if location.is_empty() {
            self.path.clone()
        } else if location.starts_with('?') {
            format!("{base}{location}")
        } else {
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        // `.` and `..` segments are resolved here (§5.2.4), as a browser
        // does, not left to the server: a store that takes keys literally
        // (object storage) would not find `/a/../b`.
        let (p, query) = path
            .split_once('?')
            .map_or((&path[..], None), |(p, q)| (p, Some(q)));
        let mut segs: Vec<&str> = Vec::new();
        let mut it = p.split('/').skip(1).peekable();
        while let Some(seg) = it.next() {
            match seg {
                "." | ".." => {
                    if seg == ".." {
                        segs.pop();
                    }
                    if it.peek().is_none() {
                        segs.push("");
                    }
                }
                s => segs.push(s),
            }
        }
        let mut path = format!("/{}", segs.join("/"));
        if let Some(q) = query {
            path = format!("{path}?{q}");
        }
        let mut u = self.clone();
        u.path = path;
        if u.path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("the redirect's path has spaces or control characters".into());
        }
        Ok(u)
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("bad port `{p}`"))
}

/// Why a request failed, and whether trying again may help.
#[derive(Debug)]
pub(crate) struct Failure {
    pub msg: String,
    pub retry: bool,
    /// Stopped by the overall deadline.
    pub deadline: bool,
}

fn retryable(msg: impl Into<String>) -> Failure {
    Failure {
        msg: msg.into(),
        retry: true,
        deadline: false,
    }
}

/// An I/O error in words: a socket timeout surfaces as EAGAIN, which says
/// nothing to a user.
pub(crate) fn describe_io(e: &io::Error, timeout: Duration) -> String {
    if let Some(s) = stopped(e) {
        return s.reason.clone();
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            // Milliseconds, not `as_secs_f32`: float formatting would cost
            // the 1 MiB aarch64 device binary several KiB.
            format!(
                "timed out: nothing from the server for {} ms",
                timeout.as_millis()
            )
        }
        _ => e.to_string(),
    }
}

/// TLS failures (rustls reports them as `InvalidData`) and garbage will
/// not improve on retry; a reset or a timeout may.
fn io_failure(what: &str, e: &io::Error, timeout: Duration) -> Failure {
    let deadline = stopped(e).is_some_and(|s| s.deadline);
    Failure {
        msg: format!("{what}: {}", describe_io(e, timeout)),
        retry: e.kind() != io::ErrorKind::InvalidData && !deadline,
        deadline,
    }
}

/// The deadline or minimum-rate stop inside an I/O error (also through
/// rustls, which passes the socket's errors on as they are).
pub(crate) fn stopped(e: &io::Error) -> Option<&Stop> {
    e.get_ref().and_then(|i| i.downcast_ref::<Stop>())
}

fn fatal(msg: impl Into<String>) -> Failure {
    Failure {
        msg: msg.into(),
        retry: false,
        deadline: false,
    }
}

/// A connection: a metered socket, TLS over one, or (in the parser's
/// tests) bytes in memory.
trait Conn: Read + Write + Send {
    /// The socket under it.
    fn socket(&mut self) -> Option<&mut Metered> {
        None
    }
    /// Something arrived above the socket while idle: TLS plaintext or
    /// the server's close_notify.
    fn pending(&mut self) -> bool {
        false
    }
}

impl Conn for Metered {
    fn socket(&mut self) -> Option<&mut Metered> {
        Some(self)
    }
}

impl Conn for io::Cursor<Vec<u8>> {}

#[cfg(feature = "tls")]
impl Conn for rustls::StreamOwned<rustls::ClientConnection, Metered> {
    fn socket(&mut self) -> Option<&mut Metered> {
        Some(&mut self.sock)
    }
    fn pending(&mut self) -> bool {
        self.conn.process_new_packets().map_or(true, |s| {
            s.plaintext_bytes_to_read() > 0 || s.peer_has_closed()
        })
    }
}

type Reader = BufReader<Box<dyn Conn>>;

/// The one idle connection a client keeps for reuse (HTTP/1.1
/// keep-alive): a window request after another one, or after the stream
/// that ended, skips a TCP and (https) a TLS handshake — two or three
/// round trips each on a device's real link. One slot: a second idle
/// connection would only be memory.
type Pool = Arc<Mutex<Option<Idle>>>;

struct Idle {
    /// Scheme, host and port it was opened to: an https connection's
    /// server name was verified (and pinned) for this host; the roots
    /// and pins are the client's and never change.
    origin: Url,
    conn: Reader,
}

pub(crate) struct Response {
    pub status: u16,
    /// Came on a kept connection: bytes a server sent late after the
    /// previous response (a body longer than declared) are read as this
    /// one, which no check before the request can rule out.
    pub reused: bool,
    headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Framing {
    Length(u64),
    Chunked { left: u64, done: bool },
    UntilClose,
}

/// A response body; ends with an error (not a short read) when the
/// connection closes before its declared end.
///
/// A body read to its exact end, on a connection that may be kept
/// (`reuse`), hands the connection back to its client's idle slot when
/// dropped; one that any read failed on, that was left before its end,
/// or after which more bytes are already buffered (a server that sent
/// more than it declared) closes it: no byte of one response is ever
/// read as part of the next.
pub(crate) struct Body {
    /// `None` only once handed back (in `drop`).
    conn: Option<Reader>,
    framing: Framing,
    /// The slot to hand the connection back to, and its origin.
    reuse: Option<(Pool, Url)>,
    /// A read failed (timeout, deadline, reset, bad framing).
    broken: bool,
}

impl Body {
    fn new(conn: Reader, framing: Framing, reuse: Option<(Pool, Url)>) -> Body {
        Body {
            conn: Some(conn),
            framing,
            reuse,
            broken: false,
        }
    }

    /// Read to its declared end (a Content-Length, or a chunked body's
    /// last chunk and trailers).
    fn at_end(&self) -> bool {
        matches!(
            self.framing,
            Framing::Length(0) | Framing::Chunked { done: true, .. }
        )
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        let (Some((pool, origin)), Some(conn)) = (self.reuse.take(), self.conn.take()) else {
            return;
        };
        if !self.broken && self.at_end() && conn.buffer().is_empty() {
            if let Ok(mut idle) = pool.lock() {
                *idle = Some(Idle { origin, conn });
            }
        }
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.read_framed(buf);
        self.broken |= r.is_err();
        r
    }
}

impl Body {
    fn read_framed(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let conn = self
            .conn
            .as_mut()
            // Only `drop` takes it.
            .ok_or(io::ErrorKind::NotConnected)?;
        let early = || {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed before the end of the body",
            )
        };
        match &mut self.framing {
            Framing::Length(0) => Ok(0),
            Framing::Length(left) => {
                let n = (*left).min(buf.len() as u64) as usize;
                let k = conn.read(&mut buf[..n])?;
                if k == 0 {
                    return Err(early());
                }
                *left -= k as u64;
                Ok(k)
            }
            Framing::UntilClose => conn.read(buf),
            Framing::Chunked { left, done } => {
                if *done {
                    return Ok(0);
                }
                if *left == 0 {
                    let size = read_chunk_size(conn)?;
                    if size == 0 {
                        // Trailers until the empty line, 64 KiB at most.
                        let mut budget = MAX_HEAD as u64;
                        loop {
                            let mut line = Vec::new();
                            let n = conn.by_ref().take(budget).read_until(b'\n', &mut line)?;
                            if n == 0 || !line.ends_with(b"\n") {
                                return Err(if n as u64 == budget {
                                    io::Error::new(
                                        io::ErrorKind::InvalidData,
                                        "chunked trailers larger than 64 KiB",
                                    )
                                } else {
                                    early()
                                });
                            }
                            budget -= n as u64;
                            if line == b"\r\n" || line == b"\n" {
                                break;
                            }
                        }
                        *done = true;
                        return Ok(0);
                    }
                    *left = size;
                }
                let n = (*left).min(buf.len() as u64) as usize;
                let k = conn.read(&mut buf[..n])?;
                if k == 0 {
                    return Err(early());
                }
                *left -= k as u64;
                if *left == 0 {
                    let mut crlf = [0u8; 2];
                    conn.read_exact(&mut crlf)?;
                    if &crlf != b"\r\n" {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "bad chunked encoding",
                        ));
                    }
                }
                Ok(k)
            }
        }
    }
}

fn read_chunk_size(r: &mut impl BufRead) -> io::Result<u64> {
    let mut line = Vec::new();
    if r.take(1024).read_until(b'\n', &mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed in a chunked body",
        ));
    }
    let line = std::str::from_utf8(&line).unwrap_or("");
    let hex = line.trim_end().split(';').next().unwrap_or("").trim();
    if !line.ends_with('\n') || hex.is_empty() || hex.len() > 15 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad chunk size line",
        ));
    }
    u64::from_str_radix(hex, 16)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))
}

pub(crate) struct Client {
    pub limits: Limits,
    pub max_redirects: u32,
    /// Hosts (`host` or `host:port`) a redirect may lead to besides the
    /// URL's own origin.
    pub redirect_hosts: Vec<String>,
    pub user_agent: String,
    /// Keep a connection whose response ended cleanly for the next
    /// request (`Connection: keep-alive`): the image source's windows and
    /// streams. Off (`Connection: close`): the API client, which makes a
    /// client per request.
    pub keep_alive: bool,
    idle: Pool,
    resolver: Option<Resolver>,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    tls_opts: crate::http::TlsOptions,
    /// Built on the first https request: loading a CA bundle costs time
    /// and memory an http:// apply should not pay.
    #[cfg(feature = "tls")]
    tls: std::sync::OnceLock<Result<std::sync::Arc<rustls::ClientConfig>, String>>,
}

impl Client {
    pub fn new(o: &crate::http::HttpOptions, limits: Limits) -> Client {
        Client {
            limits,
            max_redirects: o.max_redirects,
            redirect_hosts: o.redirect_hosts.clone(),
            user_agent: o.user_agent.clone(),
            keep_alive: false,
            idle: Pool::default(),
            resolver: o.resolver.clone(),
            tls_opts: o.tls.clone(),
            #[cfg(feature = "tls")]
            tls: std::sync::OnceLock::new(),
        }
    }

    /// GET `url` with `headers`, following up to `max_redirects`
    /// redirects that the policy allows: the same origin (scheme, host,
    /// port) or a host named in `redirect_hosts`, and never from https to
    /// http. The request headers (Range, If-Range) therefore only ever go
    /// where the user said the image may come from. Any status is a
    /// response; only transport trouble and refused redirects are
    /// failures.
    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response, Failure> {
        let origin = Url::parse(url).map_err(fatal)?;
        let mut u = origin.clone();
        let mut hops = 0;
        loop {
            let resp = self.get_once(&u, headers)?;
            if !matches!(resp.status, 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            let Some(loc) = resp.header("location") else {
                return Ok(resp);
            };
            if hops >= self.max_redirects {
                return Err(fatal(format!(
                    "more than {} redirects (last to {loc})",
                    self.max_redirects
                )));
            }
            hops += 1;
            let next = u
                .join(loc)
                .map_err(|e| fatal(format!("redirect to `{loc}`: {e}")))?;
            if (u.tls || origin.tls) && !next.tls {
                return Err(fatal(format!(
                    "redirect from https to http (`{loc}`) refused"
                )));
            }
            if !next.same_origin(&origin)
                && !self.redirect_hosts.iter().any(|h| next.matches_host(h))
            {
                return Err(fatal(format!(
                    "redirect to another host or port (`{loc}`) refused; allow it with --allow-redirect-hosts {}:{}",
                    next.host, next.port
                )));
            }
            u = next;
        }
    }

    /// Resolves on a thread of its own so that a resolver that never
    /// answers (std has no DNS timeout) cannot outlast the timeout or the
    /// deadline; the thread is left to finish on its own.
    fn resolve(&self, u: &Url) -> Result<Vec<SocketAddr>, Failure> {
        if let Ok(ip) = u.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, u.port)]);
        }
        let wait = self.limits.wait()?;
        type Slot = (Mutex<Option<io::Result<Vec<SocketAddr>>>>, Condvar);
        let slot: Arc<Slot> = Arc::new((Mutex::new(None), Condvar::new()));
        let (host, port, hook, theirs) =
            (u.host.clone(), u.port, self.resolver.clone(), slot.clone());
        std::thread::Builder::new()
            .spawn(move || {
                let r = match hook {
                    Some(h) => (h.0)(&host, port),
                    None => (host.as_str(), port).to_socket_addrs().map(|a| a.collect()),
                };
                if let Ok(mut g) = theirs.0.lock() {
                    *g = Some(r);
                    theirs.1.notify_one();
                }
            })
            .map_err(|e| retryable(format!("resolving {}: {e}", u.host)))?;
        let answer = slot
            .0
            .lock()
            .ok()
            .and_then(|g| slot.1.wait_timeout_while(g, wait, |r| r.is_none()).ok())
            .and_then(|(mut g, _)| g.take());
        match answer {
            Some(Ok(a)) => Ok(a),
            Some(Err(e)) => Err(retryable(format!("resolving {}: {e}", u.host))),
            None => {
                self.limits.check()?;
                Err(retryable(format!(
                    "resolving {}: no answer within {} ms",
                    u.host,
                    // Integer: float formatting costs the device updater ~8 KiB.
                    wait.as_millis()
                )))
            }
        }
    }

    fn connect(&self, u: &Url) -> Result<Box<dyn Conn>, Failure> {
        let addrs = self.resolve(u)?;
        let mut last = None;
        for a in &addrs {
            let wait = self.limits.wait()?;
            match TcpStream::connect_timeout(a, wait) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return self.wrap(u, Metered::new(s, self.limits.clone()));
                }
                Err(e) => last = Some(format!("connecting to {a}: {}", describe_io(&e, wait))),
            }
        }
        self.limits.check()?;
        Err(retryable(last.unwrap_or_else(|| {
            format!("{} resolves to no address", u.host)
        })))
    }

    #[cfg(feature = "tls")]
    fn wrap(&self, u: &Url, s: Metered) -> Result<Box<dyn Conn>, Failure> {
        if !u.tls {
            return Ok(Box::new(s));
        }
        let name = rustls::pki_types::ServerName::try_from(u.host.clone())
            .map_err(|e| fatal(format!("TLS server name `{}`: {e}", u.host)))?;
        let config = self
            .tls
            .get_or_init(|| crate::tls::config(&self.tls_opts))
            .as_ref()
            .map_err(|e| fatal(e.clone()))?;
        let c = rustls::ClientConnection::new(config.clone(), name)
            .map_err(|e| fatal(format!("TLS: {e}")))?;
        Ok(Box::new(rustls::StreamOwned::new(c, s)))
    }

    #[cfg(not(feature = "tls"))]
    fn wrap(&self, u: &Url, s: Metered) -> Result<Box<dyn Conn>, Failure> {
        if u.tls {
            return Err(fatal("this build has no TLS"));
        }
        Ok(Box::new(s))
    }

    fn get_once(&self, u: &Url, headers: &[(&str, &str)]) -> Result<Response, Failure> {
        self.send_once("GET", u, headers, None)
    }

    /// Closes the idle connection (after a failed attempt: whatever
    /// went wrong, the retry starts on a new connection).
    pub fn drop_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            *idle = None;
        }
    }

    /// The idle connection, if it is to `u`'s origin and nothing arrived
    /// on it while idle (an EOF, a reset, stray bytes: closed instead).
    /// Its meters start again: no spent rate budget or stale window
    /// carries over into the next request.
    fn take_idle(&self, u: &Url) -> Option<Reader> {
        let mut slot = self.idle.lock().ok()?;
        if !slot.as_ref()?.origin.same_origin(u) {
            // Another origin's (a redirect's): left for its next request.
            return None;
        }
        let mut conn = slot.take()?.conn;
        drop(slot);
        let c = conn.get_mut();
        if c.pending() {
            return None;
        }
        c.socket()?.refresh(&self.limits).then_some(conn)
    }

    /// One request, no redirects followed (the JSON API client, `api.rs`,
    /// sends PUT and POST with a body through it). On the idle
    /// connection when there is one for this origin; a request that finds
    /// it closed by the server before any byte of an answer (servers time
    /// idle connections out whenever they like) goes out once more on a
    /// new connection, which is not a failure.
    pub(crate) fn send_once(
        &self,
        method: &str,
        u: &Url,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, Failure> {
        if self.keep_alive {
            if let Some(conn) = self.take_idle(u) {
                match self.exchange(conn, method, u, headers, body) {
                    Ok(r) => return Ok(Response { reused: true, ..r }),
                    Err((f, false)) if f.retry || f.deadline => return Err(f),
                    // Garbage where the answer should start may be the
                    // late surplus of the previous answer: a new
                    // connection decides, once, like a closed one.
                    Err(_) => {}
                }
            }
        }
        let conn = BufReader::with_capacity(READ_BUF, self.connect(u)?);
        self.exchange(conn, method, u, headers, body)
            .map_err(|(f, _)| f)
    }

    /// Sends the request on `conn` and reads the response head. The
    /// failure says whether the connection was closed before any byte of
    /// the answer came (EOF, reset, broken pipe): what a reused
    /// connection that the server timed out looks like.
    fn exchange(
        &self,
        mut conn: Reader,
        method: &str,
        u: &Url,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, (Failure, bool)> {
        let timeout = self.limits.timeout;
        let mut req = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nAccept-Encoding: identity\r\nConnection: {}\r\n",
            u.path,
            u.host_header(),
            self.user_agent,
            if self.keep_alive { "keep-alive" } else { "close" }
        );
        for (k, v) in headers {
            if v.bytes().any(|b| b == b'\r' || b == b'\n') {
                return Err((fatal(format!("header {k} has a line break")), false));
            }
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        let w = conn.get_mut();
        w.write_all(req.as_bytes())
            .and_then(|()| w.write_all(body.unwrap_or_default()))
            .and_then(|()| w.flush())
            .map_err(|e| (io_failure("sending the request", &e, timeout), closed(&e)))?;
        let Head {
            status,
            headers,
            framing,
            keep_alive,
        } = read_final_head(&mut conn, timeout)?;
        let reuse = (self.keep_alive && keep_alive && !matches!(framing, Framing::UntilClose))
            .then(|| {
                let mut origin = u.clone();
                origin.path.clear();
                (self.idle.clone(), origin)
            });
        Ok(Response {
            status,
            reused: false,
            headers,
            body: Body::new(conn, framing, reuse),
        })
    }
}

/// The peer closed the connection (not a timeout, not a stop, not TLS
/// trouble).
fn closed(e: &io::Error) -> bool {
    stopped(e).is_none()
        && matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        )
}

/// A parsed response head.
pub(crate) struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    framing: Framing,
    /// HTTP/1.1 without `Connection: close`: the server keeps the
    /// connection open after this response.
    keep_alive: bool,
}

/// Parses a response head (through its empty line). Total: any bytes
/// give a head or a reason, and nothing is allocated beyond the input's
/// size.
pub(crate) fn parse_head(head: &[u8]) -> Result<Head, String> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut p = httparse::Response::new(&mut hs);
    match p.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete response head".into()),
        Err(e) => return Err(format!("bad response head: {e}")),
    }
    let status = p.code.ok_or("no status code")?;
    let headers: Vec<(String, String)> = p
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let get = |n: &str| {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let keep_alive = p.version == Some(1)
        && !get("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
    // We ask for `Accept-Encoding: identity`, and can undo no coding but
    // chunked: a gzip body (a CDN's) read as the image would be blamed on
    // the image (exit 4 or 6) instead of on the server. (`none` is not
    // registered, but some servers say it of bytes they did not code.)
    let mut chunked = false;
    for (k, v) in &headers {
        let te = k.eq_ignore_ascii_case("transfer-encoding");
        if !te && !k.eq_ignore_ascii_case("content-encoding") {
            continue;
        }
        for c in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if te && c.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if !(c.eq_ignore_ascii_case("identity") || c.eq_ignore_ascii_case("none")) {
                return Err(format!("{k} `{c}` (only identity was asked for)"));
            }
        }
    }
    let lengths = get("content-length");
    let framing = if chunked {
        Framing::Chunked {
            left: 0,
            done: false,
        }
    } else if let Some(first) = lengths.first() {
        // RFC 9112 §6.3: differing Content-Lengths are an error.
        if lengths.iter().any(|l| l != first) {
            return Err("conflicting Content-Length headers".into());
        }
        Framing::Length(parse_decimal(first).ok_or(format!("bad Content-Length `{first}`"))?)
    } else if status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        Framing::UntilClose
    };
    Ok(Head {
        status,
        headers,
        framing,
        keep_alive,
    })
}

/// Digits only (no sign, no spaces inside), fitting in a u64.
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    let s = s.trim();
    (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Why a transfer was stopped on purpose (the deadline, a minimum rate):
/// travels inside the `io::Error` of the read that noticed.
#[derive(Debug)]
pub(crate) struct Stop {
    pub reason: String,
    /// The overall deadline (never retried); else the minimum rate.
    pub deadline: bool,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Stop {}

/// The socket under TLS and HTTP: every read and write is held to the
/// timeout, the overall deadline and the minimum rate, and reads to the
/// maximum rate — whatever the server sends, be it headers, a TLS
/// handshake or body bytes.
pub(crate) struct Metered {
    s: TcpStream,
    limits: Limits,
    /// Start of the current minimum-rate window and bytes since.
    window_start: Instant,
    window_bytes: u64,
    /// Since the connection opened, for the maximum rate.
    opened: Instant,
    total: u64,
    /// The socket's current read and write timeouts.
    armed_read: Option<Duration>,
    armed_write: Option<Duration>,
}

impl Metered {
    fn new(s: TcpStream, limits: Limits) -> Metered {
        let now = Instant::now();
        Metered {
            s,
            limits,
            window_start: now,
            window_bytes: 0,
            opened: now,
            total: 0,
            armed_read: None,
            armed_write: None,
        }
    }

    /// Before a reused connection's next request: true when nothing
    /// (data, EOF, an error) waits on the idle socket; the meters then
    /// start again, as on a new connection.
    fn refresh(&mut self, limits: &Limits) -> bool {
        let mut b = [0u8; 1];
        let quiet = self.s.set_nonblocking(true).is_ok()
            && matches!(self.s.peek(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        if self.s.set_nonblocking(false).is_err() || !quiet {
            return false;
        }
        let now = Instant::now();
        self.limits = limits.clone();
        self.window_start = now;
        self.window_bytes = 0;
        self.opened = now;
        self.total = 0;
        true
    }

    /// The minimum rate over the window that just ended.
    fn check_rate(&mut self) -> io::Result<()> {
        let Some((rate, window)) = self.limits.min_rate else {
            return Ok(());
        };
        let elapsed = self.window_start.elapsed();
        if elapsed < window {
            return Ok(());
        }
        // Integer arithmetic only: float formatting costs the device
        // binary kilobytes.
        let ms = elapsed.as_millis() as u64;
        if self.window_bytes.saturating_mul(1000) < rate.saturating_mul(ms) {
            return Err(stop(
                format!(
                    "slower than the minimum rate: {} bytes in {ms} ms (at least {rate} B/s over {} s)",
                    self.window_bytes,
                    window.as_secs()
                ),
                false,
            ));
        }
        self.window_start = Instant::now();
        self.window_bytes = 0;
        Ok(())
    }

    /// How long the next socket operation may block: the timeout, cut
    /// short by the deadline and the end of the rate window. Set on the
    /// socket only when it changes, in whole seconds rounded down (below
    /// a second, exactly): a timeout that fires early is only checked and
    /// re-armed, and a setsockopt per read was a syscall per 64 KiB.
    fn arm(&mut self, write: bool) -> io::Result<Duration> {
        let mut wait = self.limits.wait().map_err(|f| stop(f.msg, true))?;
        if let Some((_, window)) = self.limits.min_rate {
            let left = window.saturating_sub(self.window_start.elapsed());
            wait = wait.min(left.max(Duration::from_millis(10)));
        }
        let set = if wait >= Duration::from_secs(1) {
            Duration::from_secs(wait.as_secs())
        } else {
            wait
        };
        let armed = if write {
            &mut self.armed_write
        } else {
            &mut self.armed_read
        };
        if *armed != Some(set) {
            if write {
                self.s.set_write_timeout(Some(set))?;
            } else {
                self.s.set_read_timeout(Some(set))?;
            }
            *armed = Some(set);
        }
        Ok(wait)
    }

    /// A blocking call timed out: the deadline, the rate window, or the
    /// plain timeout?
    fn timed_out(&mut self, e: io::Error, started: Instant) -> io::Result<()> {
        self.limits.check().map_err(|f| stop(f.msg, true))?;
        self.check_rate()?;
        if started.elapsed() >= self.limits.timeout {
            return Err(e);
        }
        Ok(())
    }
}

fn stop(reason: String, deadline: bool) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, Stop { reason, deadline })
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Read for Metered {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let started = Instant::now();
        loop {
            self.arm(false)?;
            match self.s.read(buf) {
                Ok(k) => {
                    self.window_bytes += k as u64;
                    self.total += k as u64;
                    self.check_rate()?;
                    if let Some(max) = self.limits.max_rate.filter(|&m| m > 0) {
                        // Sleep until the average since the connection
                        // opened is back at the cap (never past the
                        // deadline).
                        let due = Duration::from_millis(self.total.saturating_mul(1000) / max);
                        let ahead = due.saturating_sub(self.opened.elapsed());
                        if !ahead.is_zero() {
                            let cap = self.limits.wait().unwrap_or_default();
                            std::thread::sleep(ahead.min(cap));
                            // The sleep is ours, not the server's slowness.
                            self.window_start += ahead.min(cap);
                        }
                    }
                    return Ok(k);
                }
                Err(e) if is_timeout(&e) => self.timed_out(e, started)?,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for Metered {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let started = Instant::now();
        loop {
            self.arm(true)?;
            match self.s.write(buf) {
                Ok(k) => return Ok(k),
                Err(e) if is_timeout(&e) => self.timed_out(e, started)?,
                Err(e) => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.s.flush()
    }
}

/// The response head, through the empty line. A failure says whether
/// the connection closed before any byte of it.
fn read_head(r: &mut impl BufRead, timeout: Duration) -> Result<Vec<u8>, (Failure, bool)> {
    let mut head = Vec::new();
    loop {
        let n = r
            .by_ref()
            .take((MAX_HEAD - head.len()) as u64)
            .read_until(b'\n', &mut head)
            .map_err(|e| {
                (
                    io_failure("reading the response", &e, timeout),
                    head.is_empty() && closed(&e),
                )
            })?;
        if n == 0 {
            return Err(if head.is_empty() {
                (
                    retryable("the server closed the connection without a response"),
                    true,
                )
            } else {
                (
                    retryable("the connection closed in the response head"),
                    false,
                )
            });
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(head);
        }
        if head.len() >= MAX_HEAD {
            return Err((fatal("response head larger than 64 KiB"), false));
        }
    }
}

/// The final response's head, parsed. RFC 9110 §15.2: a client must
/// skip any 1xx interim answers (100 Continue, 103 Early Hints from a
/// CDN) before it; 101 ends HTTP on the connection and is final. A few
/// at most: a server that sends them forever is refused.
fn read_final_head(r: &mut impl BufRead, timeout: Duration) -> Result<Head, (Failure, bool)> {
    for _ in 0..8 {
        let head = read_head(r, timeout)?;
        let h = parse_head(&head).map_err(|e| (fatal(e), false))?;
        if !(100..200).contains(&h.status) || h.status == 101 {
            return Ok(h);
        }
    }
    Err((fatal("more than 8 interim (1xx) responses"), false))
}

/// One response from raw bytes, as the client reads it: head, headers,
/// body. For the fuzz target and the in-process run of it below.
pub(crate) fn fuzz_response(data: &[u8]) {
    let conn: Box<dyn Conn> = Box::new(io::Cursor::new(data.to_vec()));
    let mut r = BufReader::with_capacity(4096, conn);
    let Ok(h) = read_final_head(&mut r, Duration::from_secs(1)) else {
        return;
    };
    for (_, v) in &h.headers {
        let _ = crate::http::parse_content_range(v);
        let _ = parse_decimal(v);
    }
    let mut body = Body::new(r, h.framing, None);
    let mut buf = [0u8; 4096];
    while let Ok(1..) = body.read(&mut buf) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bounded in-process run of fuzz/fuzz_targets/http_response.rs:
    /// mutations of a few real responses must neither panic nor hang.
    #[test]
    fn response_parser_is_total() {
        let seeds: [&[u8]; 4] = [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 206 P\r\nContent-Range: bytes 0-2/9\r\nTransfer-Encoding: identity, chunked\r\nContent-Encoding: none\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n0123456789",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nT: v\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Range: bytes 0-1099511627775/1099511627776\r\n\r\nabc",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for seed in seeds {
            fuzz_response(seed);
            for _ in 0..3000 {
                let mut v = seed.to_vec();
                for _ in 0..1 + next() % 4 {
                    let i = (next() % v.len() as u64) as usize;
                    match next() % 3 {
                        0 => v[i] = next() as u8,
                        1 => {
                            v.remove(i);
                        }
                        _ => v.insert(i, b"0123456789abcdef-/:\r\n "[(next() % 22) as usize]),
                    }
                    if v.is_empty() {
                        break;
                    }
                }
                fuzz_response(&v);
            }
        }
    }

    #[test]
    fn urls() {
        let u = Url::parse("http://10.0.2.100:8080/a/u.fwi?x=1#f").unwrap();
        assert_eq!(
            u,
            Url {
                tls: false,
                host: "10.0.2.100".into(),
                port: 8080,
                path: "/a/u.fwi?x=1".into()
            }
        );
        assert_eq!(u.host_header(), "10.0.2.100:8080");
        let v = Url::parse("HTTPS://[::1]/x").unwrap();
        assert_eq!((v.tls, v.host.as_str(), v.port), (true, "::1", 443));
        assert_eq!(v.host_header(), "[::1]");
        assert_eq!(Url::parse("http://h").unwrap().path, "/");
        for bad in [
            "ftp://h/",
            "http://",
            "http://u:p@h/",
            "http://h:0/",
            "http://h:99999/",
            "http://h h/",
            "http://h/a b",
            "http://[::1/",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(u.join("/b").unwrap().path, "/b");
        assert_eq!(u.join("c.fwi").unwrap().path, "/a/c.fwi");
        assert_eq!(u.join("http://o/z").unwrap().host, "o");
        assert_eq!(u.join("//o:1/z").unwrap().port, 1);
        // Another scheme is not a relative path on this server.
        for other in ["ftp://o/z", "file:///etc/passwd", "data:,x"] {
            assert!(u.join(other).is_err(), "{other}");
        }
        assert_eq!(u.join("./a:b").unwrap().path, "/a/a:b");
        // Dot segments, fragments, bare queries, the empty reference.
        assert_eq!(u.join("../b/./c.fwi#f").unwrap().path, "/b/c.fwi");
        assert_eq!(u.join("/x/../../y?q=/../").unwrap().path, "/y?q=/../");
        assert_eq!(u.join("..").unwrap().path, "/");
        assert_eq!(u.join("b/..").unwrap().path, "/a/");
        assert_eq!(u.join("?y=2").unwrap().path, "/a/u.fwi?y=2");
        assert_eq!(u.join("").unwrap().path, "/a/u.fwi?x=1");
        assert_eq!(u.join("#g").unwrap().path, "/a/u.fwi?x=1");
    }

    /// A loopback server answering every request with `response`,
    /// keeping the connection open unless the client closes it; counts
    /// the connections it accepted.
    fn server(response: &'static str) -> (u16, Arc<Mutex<u32>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(0));
        let n = accepted.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { return };
                *n.lock().unwrap() += 1;
                std::thread::spawn(move || {
                    let mut w = c.try_clone().unwrap();
                    let mut r = BufReader::new(c);
                    loop {
                        let mut line = String::new();
                        match r.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => {
                                if w.write_all(response.as_bytes()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    fn fetch(c: &Client, port: u16) {
        let mut r = c
            .get(&format!("http://127.0.0.1:{port}/x"), &[])
            .map_err(|f| f.msg)
            .unwrap();
        let mut body = Vec::new();
        r.body.read_to_end(&mut body).unwrap();
        assert_eq!(body, b"ok");
    }

    #[test]
    fn idle_connection_is_reused_only_for_its_origin_and_when_kept() {
        let mut c = Client::new(
            &crate::HttpOptions::default(),
            Limits {
                timeout: Duration::from_secs(5),
                deadline: None,
                min_rate: None,
                max_rate: None,
            },
        );
        c.keep_alive = true;
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (a, at_a) = server(ok);
        let (b, at_b) = server(ok);
        let count = |n: &Arc<Mutex<u32>>| *n.lock().unwrap();
        fetch(&c, a);
        fetch(&c, a);
        assert_eq!(
            count(&at_a),
            1,
            "the second request reuses the first's connection"
        );
        // Another origin (port): never the idle connection of the first.
        fetch(&c, b);
        assert_eq!((count(&at_a), count(&at_b)), (1, 1));
        // One idle slot: b's connection replaced a's.
        fetch(&c, a);
        assert_eq!(count(&at_a), 2);
        // `Connection: close`, HTTP/1.0, a body to the close: never kept.
        for response in [
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ] {
            let (p, at) = server(response);
            fetch(&c, p);
            fetch(&c, p);
            assert_eq!(count(&at), 2, "{response}");
        }
        // Keep-alive off (the API client): a connection per request.
        c.keep_alive = false;
        let (p, at) = server(ok);
        fetch(&c, p);
        fetch(&c, p);
        assert_eq!(count(&at), 2);
    }

    /// A connection idle for longer than the minimum-rate window starts
    /// a new window when reused: its idle time is not the server's
    /// slowness.
    #[test]
    fn reused_connection_starts_a_new_rate_window() {
        let mut c = Client::new(
            &crate::HttpOptions::default(),
            Limits {
                timeout: Duration::from_secs(5),
                deadline: None,
                min_rate: Some((1000, Duration::from_millis(300))),
                max_rate: None,
            },
        );
        c.keep_alive = true;
        let (a, at_a) = server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        fetch(&c, a);
        std::thread::sleep(Duration::from_millis(400));
        fetch(&c, a);
        assert_eq!(*at_a.lock().unwrap(), 1);
    }

    /// Codings: chunked is undone, identity (and the unregistered
    /// `none`) is no coding, anything else is refused.
    #[test]
    fn codings() {
        let head = |h: &str| parse_head(format!("HTTP/1.1 200 OK\r\n{h}\r\n\r\n").as_bytes());
        for ok in [
            "Content-Encoding: identity",
            "Content-Encoding: None",
            "Transfer-Encoding: identity, Chunked",
        ] {
            assert!(head(ok).is_ok(), "{ok}");
        }
        assert!(matches!(
            head("Transfer-Encoding: chunked").map(|h| h.framing),
            Ok(Framing::Chunked { .. })
        ));
        for bad in [
            "Content-Encoding: gzip",
            "Content-Encoding: identity, br",
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: xchunked",
        ] {
            assert!(head(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chunked_bodies() {
        let raw = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\n";
        let conn: Box<dyn Conn> = Box::new(io::Cursor::new(raw.to_vec()));
        let mut b = Body::new(
            BufReader::new(conn),
            Framing::Chunked {
                left: 0,
                done: false,
            },
            None,
        );
        let mut s = String::new();
        b.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world");
        let conn: Box<dyn Conn> = Box::new(io::Cursor::new(b"5\r\nhel".to_vec()));
        let mut b = Body::new(
            BufReader::new(conn),
            Framing::Chunked {
                left: 0,
                done: false,
            },
            None,
        );
        assert!(b.read_to_end(&mut Vec::new()).is_err());
    }
}
