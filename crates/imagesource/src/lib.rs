//! Where fwpack images come from: a file, a pipe (`-`), or an HTTP(S)
//! server — any web server, CDN or object store that answers `Range`
//! requests; no server of ours.
//!
//! Every source here is untrusted: the readers in `fwimage` authenticate
//! each byte range against the signed head before it is used, and never
//! read a range twice. So these sources only have to be *efficient* and
//! *honest about failure*: a short body, a wrong length, a server that now
//! serves another file, a stall — each is a typed [`Error`] (carried
//! through `io::Error` by [`fwimage::ImageSource`]), never silently
//! different bytes.
//!
//! - [`HttpSource`]: positioned reads become a few long sequential
//!   streams (`Range: bytes=X-`), small reads (head, index pages) are
//!   served from 64 KiB windows, a delta plan ([`ImageSource::plan_reads`])
//!   turns into one bounded request per run of needed chunks; `If-Range`
//!   with the first response's validator makes a replaced file an error
//!   instead of a splice; dropped connections are retried from the
//!   current position with backoff.
//! - [`PipeSource`]: a pipe cannot seek, so the head and index (everything
//!   before the first chunk, about 0.12 % of the image) are kept in
//!   memory; chunks are read strictly forward.

use std::fs::File;
use std::io;
#[cfg(feature = "http")]
use std::ops::Range;

use fwimage::{ImageSource, HEADER_LEN};

#[cfg(feature = "http")]
mod api;
#[cfg(feature = "http")]
mod client;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
mod pin;
mod pipe;
#[cfg(feature = "http")]
mod render;
#[cfg(feature = "tls")]
mod tls;

#[cfg(feature = "http")]
pub use api::{ApiClient, ApiResponse};
#[cfg(feature = "http")]
pub use http::{
    FetchEvent, HttpOptions, HttpSource, Observer, Resolver, TlsOptions, DEFAULT_MIN_RATE,
};
#[cfg(feature = "http")]
pub use pin::parse_pin;
pub use pipe::PipeSource;

/// Most memory a pipe source may keep for the head and index (an image
/// of about 50 GiB at the default chunk size).
pub const MAX_PIPE_RETAIN: u64 = 64 << 20;

/// Why a source failed. `Display` says what was asked and what came back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: not a path, `-` or an http:// / https:// URL")]
    BadSpec(String),
    #[error("{url}: this build has no network support")]
    NoNet { url: String },
    #[error("{url}: HTTPS is not available in this build ({reason})")]
    NoTls { url: String, reason: &'static str },
    #[error("{url}: the server answered {status} {reason}")]
    Status {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("{url}: {reason}")]
    Protocol { url: String, reason: String },
    #[error("{url}: stopped: {reason}")]
    Stopped { url: String, reason: String },
    #[error("{url}: the image changed on the server while it was read ({reason}); run again to start over with the new image")]
    Changed { url: String, reason: String },
    #[error("{url}: {what} failed after {attempts} attempt(s): {reason}")]
    Transport {
        url: String,
        what: String,
        attempts: u32,
        reason: String,
    },
    #[error("{what}: the source has {source_len} bytes but its image header says {header_len}")]
    Length {
        what: String,
        source_len: u64,
        header_len: u64,
    },
    #[error("standard input: {0}")]
    Pipe(String),
    #[error("standard input: more bytes follow the image's {len} bytes (its header's image_len); the stream is not exactly the signed image")]
    Trailing { len: u64 },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Image {
        what: String,
        #[source]
        source: fwimage::Error,
    },
}

impl Error {
    /// Whether this is a failure of the source itself (network, server,
    /// pipe) rather than of the image's content: the CLIs give these their
    /// own exit code.
    pub fn is_source_failure(&self) -> bool {
        !matches!(
            self,
            Error::Image { .. } | Error::BadSpec(_) | Error::Trailing { .. } | Error::NoNet { .. }
        )
    }

    #[cfg(any(feature = "http", test))]
    fn into_io(self) -> io::Error {
        io::Error::other(self)
    }
}

/// Finds an [`Error`] of this crate in an error's source chain (it travels
/// inside `io::Error` through the image readers).
pub fn find_source_error<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Error> {
    loop {
        if let Some(s) = e.downcast_ref::<Error>() {
            return Some(s);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(s) = inner.downcast_ref::<Error>() {
                    return Some(s);
                }
            }
        }
        e = e.source()?;
    }
}

/// Parses one HTTP response from raw bytes (head and body) as the
/// client would: the entry point of the fuzz target.
#[cfg(feature = "http")]
#[doc(hidden)]
pub fn fuzz_response(data: &[u8]) {
    client::fuzz_response(data)
}

/// What the user named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    Path(std::path::PathBuf),
    Stdin,
    Url(String),
}

impl Spec {
    pub fn parse(s: &str) -> Spec {
        if s == "-" {
            Spec::Stdin
        } else if Scheme::split(s).is_some() {
            Spec::Url(s.to_string())
        } else {
            Spec::Path(s.into())
        }
    }

    /// For messages and the journal.
    pub fn describe(&self) -> String {
        match self {
            Spec::Path(p) => p.display().to_string(),
            Spec::Stdin => "-".into(),
            Spec::Url(u) => u.clone(),
        }
    }
}

/// A URL's scheme. This is the one place that looks at it: [`Spec`],
/// the client's URL parser and its redirect resolution all ask here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// The scheme of `s` (`http://` or `https://`, any case) and what
    /// follows it.
    pub fn split(s: &str) -> Option<(Scheme, &str)> {
        [("http://", Scheme::Http), ("https://", Scheme::Https)]
            .into_iter()
            .find_map(|(p, scheme)| {
                s.get(..p.len())
                    .filter(|h| h.eq_ignore_ascii_case(p))
                    .map(|_| (scheme, &s[p.len()..]))
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// An opened source of any kind.
pub enum AnySource {
    File(File),
    Pipe(PipeSource<io::Stdin>),
    #[cfg(feature = "http")]
    Http(Box<HttpSource>),
}

impl ImageSource for AnySource {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            AnySource::File(f) => f.read_at(offset, buf),
            AnySource::Pipe(p) => p.read_at(offset, buf),
            #[cfg(feature = "http")]
            AnySource::Http(h) => h.read_at(offset, buf),
        }
    }

    #[cfg(feature = "http")]
    fn plan_reads(&mut self, runs: &[Range<u64>]) {
        if let AnySource::Http(h) = self {
            h.plan_reads(runs)
        }
    }
}

/// A source and the image length it serves.
pub struct Opened {
    pub source: AnySource,
    pub len: u64,
    pub spec: Spec,
}

/// Opens `spec`. For every kind, the 256-byte header is read once here
/// (an HTTP source serves it from its first window again later, a pipe
/// from memory) to check the length the source claims against the one
/// the header declares — a server with a wrong Content-Length, or a
/// pipe, whose length nobody knows, get it from there.
#[cfg(feature = "http")]
pub fn open(spec: &Spec, http: &HttpOptions, observer: Option<Observer>) -> Result<Opened, Error> {
    let Spec::Url(url) = spec else {
        return open_local(spec);
    };
    let mut h = HttpSource::open(url, http, observer)?;
    let len = h.len();
    let header = read_header(&mut h, url)?;
    let hd = decode_header(&header, url)?;
    if hd.image_len != len {
        return Err(Error::Length {
            what: url.clone(),
            source_len: len,
            header_len: hd.image_len,
        });
    }
    h.keep_head(hd.data_offset, MAX_PIPE_RETAIN)?;
    Ok(Opened {
        source: AnySource::Http(Box::new(h)),
        len,
        spec: spec.clone(),
    })
}

/// [`open`] for files and standard input, in every build; a URL is
/// [`Error::NoNet`] (the build without the `http` feature has only this).
pub fn open_local(spec: &Spec) -> Result<Opened, Error> {
    match spec {
        Spec::Path(p) => {
            let what = p.display().to_string();
            let f = File::open(p).map_err(|source| Error::Io {
                what: format!("opening {what}"),
                source,
            })?;
            let len = f
                .metadata()
                .map_err(|source| Error::Io {
                    what: what.clone(),
                    source,
                })?
                .len();
            Ok(Opened {
                source: AnySource::File(f),
                len,
                spec: spec.clone(),
            })
        }
        Spec::Stdin => {
            let mut p = PipeSource::new(io::stdin(), MAX_PIPE_RETAIN);
            let header = read_header(&mut p, "standard input")?;
            let h = decode_header(&header, "standard input")?;
            if h.data_offset > MAX_PIPE_RETAIN {
                return Err(Error::Pipe(format!(
                    "the image's head and index take {} bytes, more than a pipe may buffer ({MAX_PIPE_RETAIN}); apply it from a file or a URL",
                    h.data_offset
                )));
            }
            p.set_retain(h.data_offset);
            p.set_end(h.image_len);
            Ok(Opened {
                source: AnySource::Pipe(p),
                len: h.image_len,
                spec: spec.clone(),
            })
        }
        Spec::Url(url) => Err(Error::NoNet { url: url.clone() }),
    }
}

fn read_header(src: &mut dyn ImageSource, what: &str) -> Result<[u8; HEADER_LEN], Error> {
    let mut b = [0u8; HEADER_LEN];
    src.read_at(0, &mut b)
        .map_err(|e| match e.downcast::<Error>() {
            Ok(e) => e,
            Err(source) => Error::Io {
                what: format!("{what}: reading the image header"),
                source,
            },
        })?;
    Ok(b)
}

/// Decodes a header against the length it declares itself (bytes 96..104):
/// the caller compares that with what the source claims.
fn decode_header(b: &[u8; HEADER_LEN], what: &str) -> Result<fwimage::Header, Error> {
    let declared = b
        .get(96..104)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_le_bytes);
    fwimage::Header::decode(b, declared).map_err(|source| Error::Image {
        what: what.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(Spec::parse("-"), Spec::Stdin);
        assert_eq!(
            Spec::parse("HTTP://h/x.fwi"),
            Spec::Url("HTTP://h/x.fwi".into())
        );
        assert_eq!(Spec::parse("./http:"), Spec::Path("./http:".into()));
        assert_eq!(Spec::parse("https:/x"), Spec::Path("https:/x".into()));
        assert_eq!(Scheme::split("hTTpS://h/x"), Some((Scheme::Https, "h/x")));
        assert_eq!(Scheme::split("http:/h"), None);
        assert_eq!(Spec::parse("h"), Spec::Path("h".into()));
    }

    #[test]
    fn source_errors_are_found_through_io_errors() {
        let e = Error::Changed {
            url: "u".into(),
            reason: "r".into(),
        }
        .into_io();
        let outer = fwimage::Error::Io(e);
        assert!(matches!(
            find_source_error(&outer),
            Some(Error::Changed { .. })
        ));
    }
}
