//! Positioned reads over HTTP `Range` requests.
//!
//! The image readers read in three interleaved sequential patterns: the
//! head and index pages (small reads, forward), the chunks (large reads,
//! forward, sometimes skipping ahead), and on resume the index pages
//! before the checkpoint. One request per read would cost a round trip
//! per chunk; one stream for everything would restart on every switch.
//! So: small reads come from 64 KiB windows (one bounded request covers
//! up to 16 index pages, i.e. 200 MiB of chunks), large reads from one
//! sequential stream that continues as long as reads follow each other,
//! skips small gaps by reading through them, and is reopened at the new
//! offset otherwise. With a plan (delta), a reopened stream ends where
//! its run of needed chunks ends. A window starts at the first byte the
//! windows do not hold and ends where an earlier window began (the index
//! entries run into the CRC pages): each byte is fetched at most once.

use std::io::{self, Read};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fwimage::ImageSource;

use crate::client::{Body, Client, Limits, Response};
use crate::Error;

/// Bytes fetched for a small read.
const WINDOW: u64 = 64 << 10;
/// Reads up to this size are served from windows.
const SMALL_READ: usize = 16 << 10;
/// A stream reads through a gap this small instead of being reopened.
const MAX_SKIP: u64 = 64 << 10;
/// Windows kept (one for chunk pages, one for CRC pages, one spare).
const WINDOWS: usize = 3;
/// Most fetched window ranges remembered (16 bytes each, merged when
/// adjacent); past it, windows are only clipped against those recorded.
const MAX_FETCHED: usize = 4096;
/// Progress that resets the retry count: a server that dies after every
/// few bytes still runs out of attempts.
const PROGRESS_RESET: u64 = 1 << 20;

#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Connect timeout, and the longest wait for any single read.
    pub timeout: Duration,
    /// The whole fetch (all requests, retries and waits included) must be
    /// over this long after the source is opened.
    pub deadline: Option<Duration>,
    /// At least this many bytes per second over every window of this
    /// length, on every connection (curl's --speed-limit/--speed-time):
    /// what ends a server that drips a byte at a time under the timeout.
    pub min_rate: Option<(u64, Duration)>,
    /// At most this many bytes per second (network fetches only).
    pub max_rate: Option<u64>,
    /// Hosts (`host` or `host:port`) that redirects may lead to besides
    /// the URL's own origin.
    pub redirect_hosts: Vec<String>,
    /// Name resolution instead of the system's (tests).
    pub resolver: Option<Resolver>,
    /// Attempts after the first, per failure.
    pub retries: u32,
    /// First retry delay; doubles per attempt, at most 8 s.
    pub backoff: Duration,
    pub max_redirects: u32,
    pub user_agent: String,
    /// Server identity for https:// (ignored by http:// URLs).
    pub tls: TlsOptions,
}

/// A drip ends within two minutes: under 1 KiB/s for 60 s.
pub const DEFAULT_MIN_RATE: (u64, Duration) = (1024, Duration::from_secs(60));

/// Resolves `(host, port)`; runs on a thread of its own, waited for no
/// longer than the timeout.
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct Resolver(
    pub Arc<dyn Fn(&str, u16) -> io::Result<Vec<std::net::SocketAddr>> + Send + Sync>,
);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

/// Whom an https:// server must prove to be.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// PEM bundle of the CAs to trust; default: the system's bundle when
    /// there is one, else (with the `webpki-roots` feature) Mozilla's.
    pub ca_file: Option<std::path::PathBuf>,
    /// SHA-256 hashes of public keys (SPKI) the server's certificate may
    /// have ([`crate::parse_pin`]); empty: any key the CAs vouch for.
    pub pins: Vec<[u8; 32]>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(30),
            retries: 5,
            backoff: Duration::from_millis(500),
            max_redirects: 5,
            deadline: None,
            min_rate: Some(DEFAULT_MIN_RATE),
            max_rate: None,
            redirect_hosts: Vec::new(),
            resolver: None,
            user_agent: format!("fwpack/{}", env!("CARGO_PKG_VERSION")),
            tls: TlsOptions::default(),
        }
    }
}

/// What the source did, for progress output and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchEvent {
    /// One HTTP request for `offset..end` (`None`: to the end of the file).
    Request {
        offset: u64,
        end: Option<u64>,
        status: u16,
    },
    /// A failed read, retried after `wait`.
    Retry {
        offset: u64,
        attempt: u32,
        wait: Duration,
        error: String,
    },
}

/// Receives [`FetchEvent`]s (from whichever thread reads the image).
pub type Observer = Box<dyn FnMut(&FetchEvent) + Send>;

struct Stream {
    pos: u64,
    end: u64,
    body: Body,
    /// Bytes received since this stream was opened.
    got: u64,
}

struct Window {
    start: u64,
    data: Vec<u8>,
}

/// An image on an HTTP(S) server.
pub struct HttpSource {
    client: Client,
    url: String,
    len: u64,
    /// Strong ETag or Last-Modified of the first response, sent as
    /// `If-Range` so that a replaced file fails instead of splicing.
    validator: Option<String>,
    opts: HttpOptions,
    stream: Option<Stream>,
    windows: Vec<Window>,
    /// Byte ranges fetched so far, into windows or by streams (sorted,
    /// merged), kept after their windows are evicted: a new window ends
    /// where an earlier fetch began, so that no byte is fetched twice (the
    /// chunk index's entry pages run into its CRC pages, and its last
    /// pages into the first chunks).
    fetched: Vec<Range<u64>>,
    plan: Vec<Range<u64>>,
    observer: Option<Observer>,
    /// Consecutive failed attempts (reset by progress).
    failures: u32,
    since_failure: u64,
    /// Furthest stream position reached (for [`Self::progress`]).
    furthest: u64,
    /// The first answer was a 200 to a range request.
    no_ranges: bool,
    /// Requests made.
    pub requests: u64,
    /// Body bytes received (including bytes read through small gaps).
    pub bytes_received: u64,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("url", &self.url)
            .field("len", &self.len)
            .field("validator", &self.validator)
            .finish_non_exhaustive()
    }
}

enum Got {
    /// 206 for exactly what was asked.
    Partial(Body),
    /// 200: the whole file from byte 0.
    Whole(Body),
}

impl HttpSource {
    /// Opens `url`: one request for the first window, which gives the
    /// length and the validator.
    pub fn open(url: &str, opts: &HttpOptions, observer: Option<Observer>) -> Result<Self, Error> {
        let parsed = crate::client::Url::parse(url).map_err(|reason| Error::Protocol {
            url: url.into(),
            reason,
        })?;
        if !cfg!(feature = "tls") && parsed.tls {
            return Err(Error::NoTls {
                url: url.into(),
                reason: "the device build has no TLS stack: ring, the only mature Rust crypto provider for rustls, needs a C compiler; the signature already secures the content, so serve the image over http:// or terminate TLS on a local proxy",
            });
        }
        let mut client = Client::new(
            opts,
            Limits {
                timeout: opts.timeout,
                deadline: opts.deadline.map(|d| Instant::now() + d),
                min_rate: opts.min_rate.filter(|&(r, w)| r > 0 && !w.is_zero()),
                max_rate: opts.max_rate.filter(|&m| m > 0),
            },
        );
        // The windows (and a stream that ran to its end) leave their
        // connection for the next request: one side connection for all
        // the head and index windows, not one per window.
        client.keep_alive = true;
        let mut s = HttpSource {
            client,
            url: url.into(),
            len: 0,
            validator: None,
            opts: opts.clone(),
            stream: None,
            windows: Vec::new(),
            fetched: Vec::new(),
            plan: Vec::new(),
            observer,
            failures: 0,
            since_failure: 0,
            furthest: 0,
            no_ranges: false,
            requests: 0,
            bytes_received: 0,
        };
        s.retrying(0, |s| s.first_request())?;
        Ok(s)
    }

    /// For a server that ignores Range: keeps bytes `0..head_len` (the
    /// image's head and index, at most `max` bytes) in memory as they
    /// stream past, as a pipe source does, so that the readers' returns to
    /// index pages never re-request the file from byte 0. A no-op for
    /// servers that answer Range.
    pub fn keep_head(&mut self, head_len: u64, max: u64) -> Result<(), Error> {
        if !self.no_ranges {
            return Ok(());
        }
        let have = self
            .windows
            .iter()
            .find(|w| w.start == 0)
            .map_or(0, |w| w.data.len() as u64);
        let want = head_len.min(self.len).min(max);
        if want <= have {
            return Ok(());
        }
        let mut more = vec![0u8; (want - have) as usize];
        self.retrying(have, |s| {
            s.skip_stream(have)?;
            let usable = s.stream.as_ref().is_some_and(|st| st.pos == have);
            if !usable {
                s.open_stream(have, s.len)?;
            }
            s.read_stream(&mut more)
        })?;
        if let Some(w) = self.windows.iter_mut().find(|w| w.start == 0) {
            w.data.extend_from_slice(&more);
        }
        Ok(())
    }

    /// Length of the file, from the first response.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn emit(&mut self, e: FetchEvent) {
        if let Some(o) = self.observer.as_mut() {
            o(&e)
        }
    }

    fn first_request(&mut self) -> Result<(), Attempt> {
        let resp = self.send(0, Some(WINDOW - 1), false)?;
        let status = resp.status;
        let header = |n: &str| resp.header(n).map(str::to_string);
        self.validator = header("etag")
            .filter(|e| !e.starts_with("W/"))
            .or_else(|| header("last-modified"));
        let (content_range, content_length) = (header("content-range"), header("content-length"));
        let body = resp.body;
        match status {
            206 => {
                let cr = content_range.ok_or_else(|| {
                    Attempt::fatal(self.protocol("a 206 answer without Content-Range"))
                })?;
                let (first, last, total) = parse_content_range(&cr).ok_or_else(|| {
                    Attempt::fatal(self.protocol(&format!("bad Content-Range `{cr}`")))
                })?;
                // Bounded by the request before anything is allocated: a
                // server may send less than the window, never more.
                if first != 0 || last >= total || last >= WINDOW {
                    return Err(Attempt::fatal(self.protocol(&format!(
                        "Content-Range `{cr}` for bytes 0-{}",
                        WINDOW - 1
                    ))));
                }
                self.len = total;
                let n = last + 1;
                self.check_content_length(&content_length, n)?;
                let data = self.read_body(body, n, Vec::new())?;
                self.note_fetched(0..data.len() as u64);
                self.windows.push(Window { start: 0, data });
            }
            200 => {
                let n = content_length
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        Attempt::fatal(self.protocol(
                            "the server ignores Range and sends no Content-Length: the image length is unknown",
                        ))
                    })?;
                self.len = n;
                // A server without Range support: keep this whole-file
                // stream, and its first window as if asked for
                // ([`HttpSource::keep_head`] extends it to the whole head),
                // so that reads going back to the head do not restart it.
                self.no_ranges = true;
                self.stream = Some(Stream {
                    pos: 0,
                    end: n,
                    body,
                    got: 0,
                });
                let mut data = vec![0u8; WINDOW.min(n) as usize];
                self.read_stream(&mut data)?;
                self.note_fetched(0..data.len() as u64);
                self.windows.push(Window { start: 0, data });
            }
            _ => return Err(self.status_error(status)),
        }
        Ok(())
    }

    fn protocol(&self, reason: &str) -> Error {
        Error::Protocol {
            url: self.url.clone(),
            reason: reason.into(),
        }
    }

    fn status_error(&self, status: u16) -> Attempt {
        let reason = match status {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            408 => "Request Timeout",
            410 => "Gone",
            429 => "Too Many Requests",
            500 => "Internal Server Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            301 | 302 | 303 | 307 | 308 => "(a redirect without a usable Location)",
            _ => "",
        }
        .to_string();
        let e = Error::Status {
            url: self.url.clone(),
            status,
            reason,
        };
        // Server-side trouble may pass; a 404 or 403 will not.
        if status >= 500 || status == 408 || status == 429 {
            Attempt::retry(e)
        } else {
            Attempt::fatal(e)
        }
    }

    fn check_content_length(&self, v: &Option<String>, want: u64) -> Result<(), Attempt> {
        if let Some(v) = v {
            if v.trim().parse::<u64>().ok() != Some(want) {
                return Err(Attempt::fatal(self.protocol(&format!(
                    "Content-Length {v} does not match the {want} bytes of its Content-Range"
                ))));
            }
        }
        Ok(())
    }

    /// One request for `first..=last` (`None`: to the end).
    fn send(&mut self, first: u64, last: Option<u64>, if_range: bool) -> Result<Response, Attempt> {
        let range = match last {
            Some(l) => format!("bytes={first}-{l}"),
            None => format!("bytes={first}-"),
        };
        let mut headers = vec![("Range", range.as_str())];
        let validator = self.validator.clone();
        if if_range {
            if let Some(v) = &validator {
                headers.push(("If-Range", v.as_str()));
            }
        }
        self.requests += 1;
        let resp = self.client.get(&self.url, &headers).map_err(|f| {
            let err = if f.deadline {
                Error::Stopped {
                    url: self.url.clone(),
                    reason: f.msg.clone(),
                }
            } else {
                Error::Transport {
                    url: self.url.clone(),
                    what: format!("GET {range}"),
                    attempts: self.failures + 1,
                    reason: f.msg,
                }
            };
            Attempt {
                error: err,
                retry: f.retry,
            }
        })?;
        self.emit(FetchEvent::Request {
            offset: first,
            end: last.map(|l| l + 1),
            status: resp.status,
        });
        Ok(resp)
    }

    /// Reads a body of `n` bytes (bounded by the request) into `data`,
    /// an empty buffer to reuse.
    fn read_body(&mut self, mut body: Body, n: u64, mut data: Vec<u8>) -> Result<Vec<u8>, Attempt> {
        data.resize(n as usize, 0);
        let mut got = 0;
        while got < data.len() {
            match body.read(&mut data[got..]) {
                Ok(0) => {
                    return Err(Attempt::retry(self.truncated(got as u64, n)));
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_failure(&e)),
            }
        }
        self.bytes_received += n;
        Ok(data)
    }

    fn truncated(&self, got: u64, want: u64) -> Error {
        Error::Transport {
            url: self.url.clone(),
            what: "reading the body".into(),
            attempts: self.failures + 1,
            reason: format!("the connection ended after {got} of {want} bytes"),
        }
    }

    /// A body read failed: the deadline ends the fetch, anything else
    /// may pass on retry.
    fn read_failure(&self, e: &io::Error) -> Attempt {
        match crate::client::stopped(e) {
            Some(s) if s.deadline => Attempt::fatal(Error::Stopped {
                url: self.url.clone(),
                reason: s.reason.clone(),
            }),
            _ => Attempt::retry(self.transport("reading the body", e)),
        }
    }

    fn transport(&self, what: &str, e: &io::Error) -> Error {
        Error::Transport {
            url: self.url.clone(),
            what: what.into(),
            attempts: self.failures + 1,
            reason: crate::client::describe_io(e, self.opts.timeout),
        }
    }

    /// Runs `f` until it succeeds, a fatal error, or the retries are used
    /// up, sleeping with exponential backoff in between.
    fn retrying<T>(
        &mut self,
        offset: u64,
        mut f: impl FnMut(&mut Self) -> Result<T, Attempt>,
    ) -> Result<T, Error> {
        loop {
            match f(self) {
                Ok(v) => return Ok(v),
                Err(Attempt { error, retry }) => {
                    self.stream = None;
                    self.client.drop_idle();
                    if !retry || self.failures >= self.opts.retries {
                        return Err(error);
                    }
                    let wait = self
                        .opts
                        .backoff
                        .saturating_mul(1 << self.failures.min(4))
                        .min(Duration::from_secs(8));
                    self.failures += 1;
                    self.since_failure = 0;
                    let left = self.client.limits.wait().map_err(|f| Error::Stopped {
                        url: self.url.clone(),
                        reason: format!("{} (after: {error})", f.msg),
                    })?;
                    if left < wait {
                        return Err(Error::Stopped {
                            url: self.url.clone(),
                            reason: format!(
                                "the deadline (--deadline) leaves no time for a retry after: {error}"
                            ),
                        });
                    }
                    self.emit(FetchEvent::Retry {
                        offset,
                        attempt: self.failures,
                        wait,
                        error: error.to_string(),
                    });
                    std::thread::sleep(wait);
                }
            }
        }
    }

    /// Bytes up to `pos` have arrived. Only bytes past the furthest point
    /// ever reached count as progress: a server that sends the file from
    /// byte 0 each time (no Range support) and dies at the same place must
    /// still run out of attempts.
    fn progress(&mut self, pos: u64) {
        if pos > self.furthest {
            self.since_failure += pos - self.furthest;
            self.furthest = pos;
        }
        if self.since_failure >= PROGRESS_RESET {
            self.failures = 0;
        }
    }

    /// The end of the planned run that contains `offset`, else the file's.
    fn run_end(&self, offset: u64) -> u64 {
        let i = self.plan.partition_point(|r| r.end <= offset);
        match self.plan.get(i) {
            Some(r) if r.start <= offset => r.end,
            _ => self.len,
        }
    }

    /// Opens the stream at `pos` (until `end`).
    fn open_stream(&mut self, pos: u64, end: u64) -> Result<(), Attempt> {
        // The old stream first: when it ran to its end, its connection
        // carries this request.
        self.stream = None;
        let last = if end >= self.len { None } else { Some(end - 1) };
        let resp = self.send(pos, last, true)?;
        let content_length = resp.header("content-length").map(str::to_string);
        // Bytes before `pos` were had already: re-reading them (a server
        // without Range support) is not progress.
        self.furthest = self.furthest.max(pos);
        match self.classify(resp, pos, end)? {
            Got::Partial(body) => {
                self.check_content_length(&content_length, end - pos)?;
                self.stream = Some(Stream {
                    pos,
                    end,
                    body,
                    got: 0,
                });
            }
            Got::Whole(body) => self.read_through(body, pos)?,
        }
        Ok(())
    }

    fn classify(&self, resp: Response, pos: u64, end: u64) -> Result<Got, Attempt> {
        let header = |n: &str| resp.header(n).map(str::to_string);
        let (status, cr, cl) = (
            resp.status,
            header("content-range"),
            header("content-length"),
        );
        let validator = header("etag")
            .filter(|e| !e.starts_with("W/"))
            .or_else(|| header("last-modified"));
        let (body, reused) = (resp.body, resp.reused);
        match status {
            206 => {
                let cr = cr.unwrap_or_default();
                match parse_content_range(&cr) {
                    Some((_, _, total)) if total != self.len => {
                        Err(Attempt::fatal(Error::Changed {
                            url: self.url.clone(),
                            reason: format!(
                                "it was {} bytes, Content-Range `{cr}` says {total}",
                                self.len
                            ),
                        }))
                    }
                    Some((f, l, _)) if f == pos && l + 1 == end => Ok(Got::Partial(body)),
                    _ => {
                        let e = self.protocol(&format!(
                            "asked for bytes {pos}-{}, got Content-Range `{cr}`",
                            end - 1
                        ));
                        // On a kept connection this may be a late
                        // surplus of the previous answer: a new
                        // connection (the retry's) decides.
                        Err(if reused {
                            Attempt::retry(e)
                        } else {
                            Attempt::fatal(e)
                        })
                    }
                }
            }
            200 => {
                let same_len = cl
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .is_none_or(|n| n == self.len);
                // A 200 to a range request: the server ignores Range (or
                // If-Range with a date), or it has another file. Its
                // validators decide; without any, the header bytes do
                // (compared in `read_through`).
                if pos > 0 {
                    if let (Some(ours), Some(theirs)) = (&self.validator, &validator) {
                        if ours != theirs {
                            return Err(Attempt::fatal(Error::Changed {
                                url: self.url.clone(),
                                reason: format!(
                                    "a whole-file answer with validator {theirs}, was {ours}"
                                ),
                            }));
                        }
                    }
                }
                if !same_len {
                    return Err(Attempt::fatal(Error::Changed {
                        url: self.url.clone(),
                        reason: format!(
                            "it was {} bytes, now Content-Length says otherwise",
                            self.len
                        ),
                    }));
                }
                Ok(Got::Whole(body))
            }
            416 => Err(Attempt::fatal(Error::Changed {
                url: self.url.clone(),
                reason: format!("bytes {pos}- are no longer in the file (416)"),
            })),
            _ => Err(self.status_error(status)),
        }
    }

    /// A whole-file body replaces the stream and is read up to `to`; its
    /// header (which names the signed head) must be the one read first,
    /// or the file was replaced.
    fn read_through(&mut self, body: Body, to: u64) -> Result<(), Attempt> {
        self.stream = Some(Stream {
            pos: 0,
            end: self.len,
            body,
            got: 0,
        });
        let n = fwimage::HEADER_LEN.min(to as usize);
        let first = self
            .windows
            .iter()
            .find(|w| w.start == 0)
            .and_then(|w| w.data.get(..n))
            .map(<[u8]>::to_vec);
        if let Some(first) = first {
            let mut now = vec![0u8; n];
            self.read_stream(&mut now)?;
            if now != first {
                return Err(Attempt::fatal(Error::Changed {
                    url: self.url.clone(),
                    reason: "a whole-file answer with another image header".into(),
                }));
            }
        }
        self.skip_stream(to)
    }

    /// Reads and drops stream bytes up to `to`.
    fn skip_stream(&mut self, to: u64) -> Result<(), Attempt> {
        let mut sink = [0u8; 16 << 10];
        loop {
            let Some(s) = self.stream.as_ref() else {
                return Ok(());
            };
            if s.pos >= to {
                return Ok(());
            }
            let n = ((to - s.pos) as usize).min(sink.len());
            self.read_stream(&mut sink[..n])?;
        }
    }

    /// Fills `buf` from the stream (which must cover it).
    fn read_stream(&mut self, buf: &mut [u8]) -> Result<(), Attempt> {
        let mut got = 0;
        while got < buf.len() {
            let Some(s) = self.stream.as_mut() else {
                return Err(Attempt::retry(self.truncated(0, buf.len() as u64)));
            };
            match s.body.read(&mut buf[got..]) {
                Ok(0) => {
                    let (g, want) = (s.got, s.end - (s.pos - s.got));
                    return Err(Attempt::retry(self.truncated(g, want)));
                }
                Ok(k) => {
                    s.pos += k as u64;
                    s.got += k as u64;
                    got += k;
                    self.bytes_received += k as u64;
                    let pos = s.pos;
                    self.progress(pos);
                    // A window fetched later (an index page after a
                    // delta's first chunk) must stop where these began.
                    self.note_fetched(pos - k as u64..pos);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_failure(&e)),
            }
        }
        Ok(())
    }

    fn window_hit(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        let end = offset + buf.len() as u64;
        let Some(i) = self
            .windows
            .iter()
            .position(|w| w.start <= offset && end <= w.start + w.data.len() as u64)
        else {
            return false;
        };
        let w = self.windows.remove(i);
        let from = (offset - w.start) as usize;
        buf.copy_from_slice(&w.data[from..from + buf.len()]);
        self.windows.insert(0, w);
        true
    }

    /// Copies what the windows hold from `offset` on into `buf`; returns
    /// how many bytes (a prefix) that was.
    fn window_prefix(&self, offset: u64, buf: &mut [u8]) -> usize {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let Some(w) = self
                .windows
                .iter()
                .find(|w| w.start <= at && at < w.start + w.data.len() as u64)
            else {
                break;
            };
            let from = (at - w.start) as usize;
            let n = (w.data.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&w.data[from..from + n]);
            done += n;
        }
        done
    }

    /// Fetches a window from `offset`, covering at least up to `need`:
    /// `WINDOW` bytes, but never into bytes an earlier window fetched.
    fn fetch_window(&mut self, offset: u64, need: u64) -> Result<(), Attempt> {
        let mut end = (offset + WINDOW).min(self.len);
        if let Some(next) = self.fetched.iter().map(|r| r.start).find(|&s| s > offset) {
            end = end.min(next.max(need));
        }
        let resp = self.send(offset, Some(end - 1), true)?;
        let cl = resp.header("content-length").map(str::to_string);
        let data = match self.classify(resp, offset, end)? {
            Got::Partial(body) => {
                self.check_content_length(&cl, end - offset)?;
                let spare = self.evict_window();
                self.read_body(body, end - offset, spare)?
            }
            Got::Whole(body) => {
                // No Range support: read through to the window.
                self.read_through(body, offset)?;
                let mut d = self.evict_window();
                d.resize((end - offset) as usize, 0);
                self.read_stream(&mut d)?;
                d
            }
        };
        self.note_fetched(offset..end);
        self.windows.insert(
            0,
            Window {
                start: offset,
                data,
            },
        );
        Ok(())
    }

    /// Records `r` in [`Self::fetched`].
    fn note_fetched(&mut self, r: Range<u64>) {
        note_range(&mut self.fetched, r, MAX_FETCHED);
    }

    /// Makes room for one more window: when all are in use, the oldest
    /// goes (but never the head a Range-less server gave), and its buffer
    /// is handed back for the new one, emptied. Reusing it, rather than
    /// filling a new one before the old is freed, keeps the windows at
    /// `WINDOWS` buffers and not one more at the peak.
    fn evict_window(&mut self) -> Vec<u8> {
        if self.windows.len() < WINDOWS {
            return Vec::new();
        }
        let no_ranges = self.no_ranges;
        match self
            .windows
            .iter()
            .rposition(|w| !(no_ranges && w.start == 0))
        {
            Some(i) => {
                let mut data = self.windows.remove(i).data;
                data.clear();
                data
            }
            None => Vec::new(),
        }
    }

    fn read_inner(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                self.protocol(&format!(
                    "read of {} bytes at {offset} past the end ({} bytes)",
                    buf.len(),
                    self.len
                ))
            })?;
        if buf.is_empty() || self.window_hit(offset, buf) {
            return Ok(());
        }
        // Without Range, every request is the whole file again: reading on
        // through any gap costs less than starting over.
        let max_skip = if self.no_ranges { u64::MAX } else { MAX_SKIP };
        let continues = self
            .stream
            .as_ref()
            .is_some_and(|s| s.pos <= offset && offset - s.pos <= max_skip && end <= s.end);
        if !continues && buf.len() <= SMALL_READ {
            // A window starts at the first byte the windows do not hold:
            // a read that runs past the end of one (an index page across
            // a window's edge) fetches only what is missing.
            let have = self.window_prefix(offset, buf);
            if have == buf.len() {
                return Ok(());
            }
            let at = offset + have as u64;
            self.retrying(at, |s| s.fetch_window(at, end))?;
            if self.window_prefix(at, &mut buf[have..]) == buf.len() - have {
                return Ok(());
            }
        }
        // Bytes a window already holds are not fetched again: the first
        // window (the head) usually runs into the first chunks.
        let mut done = self.window_prefix(offset, buf);
        if done == buf.len() {
            return Ok(());
        }
        let run_end = self.run_end(offset).max(end);
        self.retrying(offset, |s| {
            let at = offset + done as u64;
            let usable = s
                .stream
                .as_ref()
                .is_some_and(|st| st.pos <= at && at - st.pos <= max_skip && end <= st.end);
            if !usable {
                s.open_stream(at, run_end.max(end))?;
            }
            s.skip_stream(at)?;
            // Progress survives a retry: continue where the last one
            // stopped rather than re-reading.
            while done < buf.len() {
                let before = s.stream.as_ref().map_or(0, |st| st.pos);
                let r = s.read_stream(&mut buf[done..]);
                let after = s.stream.as_ref().map_or(before, |st| st.pos);
                done += after.saturating_sub(before) as usize;
                r?;
            }
            Ok(())
        })
    }
}

impl ImageSource for HttpSource {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read_inner(offset, buf).map_err(Error::into_io)
    }

    fn plan_reads(&mut self, runs: &[Range<u64>]) {
        self.plan = runs.to_vec();
    }
}

/// One attempt's failure, and whether trying again may help.
struct Attempt {
    error: Error,
    retry: bool,
}

impl Attempt {
    fn retry(error: Error) -> Self {
        Attempt { error, retry: true }
    }
    fn fatal(error: Error) -> Self {
        Attempt {
            error,
            retry: false,
        }
    }
}

/// Adds `r` to the sorted, disjoint `ranges`, merged with those it
/// overlaps or touches; a range that would be the `max + 1`-th is dropped.
fn note_range(ranges: &mut Vec<Range<u64>>, r: Range<u64>, max: usize) {
    let i = ranges.partition_point(|f| f.end < r.start);
    let mut j = i;
    let mut merged = r;
    while let Some(f) = ranges.get(j).filter(|f| f.start <= merged.end) {
        merged = merged.start.min(f.start)..merged.end.max(f.end);
        j += 1;
    }
    if i == j && ranges.len() >= max {
        return;
    }
    ranges.splice(i..j, [merged]);
}

/// `bytes FIRST-LAST/TOTAL` (RFC 9110 §14.4), numbers only.
pub(crate) fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.trim().split_once('-')?;
    let num = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (f, l, t) = (num(first)?, num(last)?, num(total)?);
    (f <= l).then_some((f, l, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetched_ranges_merge_and_stay_bounded() {
        let mut v = Vec::new();
        note_range(&mut v, 90112..155648, 3);
        note_range(&mut v, 0..65536, 3);
        assert_eq!(v, [0..65536, 90112..155648]);
        // Touching and overlapping ranges merge.
        note_range(&mut v, 65536..90112, 3);
        assert_eq!(v, vec![(0..155648)]);
        note_range(&mut v, 200_000..210_000, 3);
        note_range(&mut v, 150_000..205_000, 3);
        assert_eq!(v, vec![(0..210_000)]);
        note_range(&mut v, 300_000..310_000, 2);
        note_range(&mut v, 400_000..410_000, 2);
        assert_eq!(v, [0..210_000, 300_000..310_000], "at most 2 kept");
        // A range that merges is kept even at the bound.
        note_range(&mut v, 310_000..320_000, 2);
        assert_eq!(v, [0..210_000, 300_000..320_000]);
    }

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 0-99/1000"), Some((0, 99, 1000)));
        assert_eq!(parse_content_range("bytes  5-5/6"), Some((5, 5, 6)));
        assert_eq!(parse_content_range("bytes 9-5/6"), None);
        assert_eq!(parse_content_range("bytes 0-5/*"), None);
        assert_eq!(parse_content_range("bytes -5/10"), None);
        assert_eq!(parse_content_range("bytes +1-5/10"), None);
        assert_eq!(parse_content_range("items 0-5/10"), None);
        assert_eq!(parse_content_range("bytes 0-99999999999999999999/1"), None);
    }
}
