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
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Longest response head accepted.
const MAX_HEAD: usize = 64 << 10;
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
        let (tls, rest) = if let Some(r) = strip_prefix_ci(s, "http://") {
            (false, r)
        } else if let Some(r) = strip_prefix_ci(s, "https://") {
            (true, r)
        } else {
            return Err(format!("`{s}` is not an http:// or https:// URL"));
        };
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

    /// `location` resolved against this URL.
    fn join(&self, location: &str) -> Result<Url, String> {
        if strip_prefix_ci(location, "http://").is_some()
            || strip_prefix_ci(location, "https://").is_some()
        {
            return Url::parse(location);
        }
        let path = if location.starts_with("//") {
            return Url::parse(&format!(
                "{}:{location}",
                if self.tls { "https" } else { "http" }
            ));
        } else if location.starts_with('/') {
            location.to_string()
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        let mut u = self.clone();
        u.path = path;
        if u.path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("the redirect's path has spaces or control characters".into());
        }
        Ok(u)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, p: &str) -> Option<&'a str> {
    s.get(..p.len())
        .filter(|h| h.eq_ignore_ascii_case(p))
        .map(|_| &s[p.len()..])
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
}

fn retryable(msg: impl Into<String>) -> Failure {
    Failure {
        msg: msg.into(),
        retry: true,
    }
}

/// An I/O error in words: a socket timeout surfaces as EAGAIN, which says
/// nothing to a user.
pub(crate) fn describe_io(e: &io::Error, timeout: Duration) -> String {
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
    Failure {
        msg: format!("{what}: {}", describe_io(e, timeout)),
        retry: e.kind() != io::ErrorKind::InvalidData,
    }
}

fn fatal(msg: impl Into<String>) -> Failure {
    Failure {
        msg: msg.into(),
        retry: false,
    }
}

trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

pub(crate) struct Response {
    pub status: u16,
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
pub(crate) struct Body {
    conn: BufReader<Box<dyn Conn>>,
    framing: Framing,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
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
                let k = self.conn.read(&mut buf[..n])?;
                if k == 0 {
                    return Err(early());
                }
                *left -= k as u64;
                Ok(k)
            }
            Framing::UntilClose => self.conn.read(buf),
            Framing::Chunked { left, done } => {
                if *done {
                    return Ok(0);
                }
                if *left == 0 {
                    let size = read_chunk_size(&mut self.conn)?;
                    if size == 0 {
                        // Trailers until the empty line.
                        loop {
                            let mut line = String::new();
                            if self.conn.by_ref().take(8192).read_line(&mut line)? == 0 {
                                return Err(early());
                            }
                            if line == "\r\n" || line == "\n" {
                                break;
                            }
                        }
                        *done = true;
                        return Ok(0);
                    }
                    *left = size;
                }
                let n = (*left).min(buf.len() as u64) as usize;
                let k = self.conn.read(&mut buf[..n])?;
                if k == 0 {
                    return Err(early());
                }
                *left -= k as u64;
                if *left == 0 {
                    let mut crlf = [0u8; 2];
                    self.conn.read_exact(&mut crlf)?;
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
    let mut line = String::new();
    if r.take(1024).read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed in a chunked body",
        ));
    }
    let hex = line.trim_end().split(';').next().unwrap_or("").trim();
    if hex.is_empty() || hex.len() > 15 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad chunk size line",
        ));
    }
    u64::from_str_radix(hex, 16)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))
}

pub(crate) struct Client {
    pub timeout: Duration,
    pub max_redirects: u32,
    pub user_agent: String,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    tls_opts: crate::http::TlsOptions,
    /// Built on the first https request: loading a CA bundle costs time
    /// and memory an http:// apply should not pay.
    #[cfg(feature = "tls")]
    tls: std::sync::OnceLock<Result<std::sync::Arc<rustls::ClientConfig>, String>>,
}

impl Client {
    pub fn new(
        timeout: Duration,
        max_redirects: u32,
        user_agent: String,
        tls_opts: crate::http::TlsOptions,
    ) -> Client {
        Client {
            timeout,
            max_redirects,
            user_agent,
            tls_opts,
            #[cfg(feature = "tls")]
            tls: std::sync::OnceLock::new(),
        }
    }

    /// GET `url` with `headers`, following up to `max_redirects`
    /// redirects. Any status is a response; only transport trouble is a
    /// failure.
    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response, Failure> {
        let mut u = Url::parse(url).map_err(fatal)?;
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
            u = u
                .join(loc)
                .map_err(|e| fatal(format!("redirect to `{loc}`: {e}")))?;
        }
    }

    fn connect(&self, u: &Url) -> Result<Box<dyn Conn>, Failure> {
        let addrs: Vec<_> = (u.host.as_str(), u.port)
            .to_socket_addrs()
            .map_err(|e| retryable(format!("resolving {}: {e}", u.host)))?
            .collect();
        let mut last = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, self.timeout) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    s.set_read_timeout(Some(self.timeout))
                        .and_then(|()| s.set_write_timeout(Some(self.timeout)))
                        .map_err(|e| retryable(format!("socket options: {e}")))?;
                    return self.wrap(u, s);
                }
                Err(e) => {
                    last = Some(format!(
                        "connecting to {a}: {}",
                        describe_io(&e, self.timeout)
                    ))
                }
            }
        }
        Err(retryable(last.unwrap_or_else(|| {
            format!("{} resolves to no address", u.host)
        })))
    }

    #[cfg(feature = "tls")]
    fn wrap(&self, u: &Url, s: TcpStream) -> Result<Box<dyn Conn>, Failure> {
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
    fn wrap(&self, u: &Url, s: TcpStream) -> Result<Box<dyn Conn>, Failure> {
        if u.tls {
            return Err(fatal("this build has no TLS"));
        }
        Ok(Box::new(s))
    }

    fn get_once(&self, u: &Url, headers: &[(&str, &str)]) -> Result<Response, Failure> {
        let mut conn = self.connect(u)?;
        let mut req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nAccept-Encoding: identity\r\nConnection: close\r\n",
            u.path,
            u.host_header(),
            self.user_agent
        );
        for (k, v) in headers {
            if v.bytes().any(|b| b == b'\r' || b == b'\n') {
                return Err(fatal(format!("header {k} has a line break")));
            }
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        conn.write_all(req.as_bytes())
            .and_then(|()| conn.flush())
            .map_err(|e| io_failure("sending the request", &e, self.timeout))?;
        let mut r = BufReader::with_capacity(64 << 10, conn);
        let head = read_head(&mut r, self.timeout)?;
        let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut p = httparse::Response::new(&mut hs);
        match p.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(fatal("incomplete response head")),
            Err(e) => return Err(fatal(format!("bad response head: {e}"))),
        }
        let status = p.code.ok_or_else(|| fatal("no status code"))?;
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
        let chunked = get("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        let lengths = get("content-length");
        let framing = if chunked {
            Framing::Chunked {
                left: 0,
                done: false,
            }
        } else if let Some(first) = lengths.first() {
            // RFC 9112 §6.3: differing Content-Lengths are an error.
            if lengths.iter().any(|l| l != first) {
                return Err(fatal("conflicting Content-Length headers"));
            }
            Framing::Length(
                first
                    .parse::<u64>()
                    .map_err(|_| fatal(format!("bad Content-Length `{first}`")))?,
            )
        } else if status == 204 || status == 304 {
            Framing::Length(0)
        } else {
            Framing::UntilClose
        };
        Ok(Response {
            status,
            headers,
            body: Body { conn: r, framing },
        })
    }
}

/// The response head, through the empty line.
fn read_head(r: &mut impl BufRead, timeout: Duration) -> Result<Vec<u8>, Failure> {
    let mut head = Vec::new();
    loop {
        let n = r
            .by_ref()
            .take((MAX_HEAD - head.len()) as u64)
            .read_until(b'\n', &mut head)
            .map_err(|e| io_failure("reading the response", &e, timeout))?;
        if n == 0 {
            return Err(retryable(if head.is_empty() {
                "the server closed the connection without a response".to_string()
            } else {
                "the connection closed in the response head".to_string()
            }));
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(head);
        }
        if head.len() >= MAX_HEAD {
            return Err(fatal("response head larger than 64 KiB"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn chunked_bodies() {
        let raw = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\n";
        let conn: Box<dyn Conn> = Box::new(io::Cursor::new(raw.to_vec()));
        let mut b = Body {
            conn: BufReader::new(conn),
            framing: Framing::Chunked {
                left: 0,
                done: false,
            },
        };
        let mut s = String::new();
        b.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world");
        let conn: Box<dyn Conn> = Box::new(io::Cursor::new(b"5\r\nhel".to_vec()));
        let mut b = Body {
            conn: BufReader::new(conn),
            framing: Framing::Chunked {
                left: 0,
                done: false,
            },
        };
        assert!(b.read_to_end(&mut Vec::new()).is_err());
    }
}
