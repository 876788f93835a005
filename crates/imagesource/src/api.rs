//! Small JSON requests (GET, PUT, POST) for device-management APIs such as
//! hawkBit's DDI (crate `ddi`): the same connections, TLS options
//! (`--ca`, `--pin`), timeouts and redirect policy as image fetches, with
//! two more bounds: every request must be over by its deadline, and a
//! response body larger than `max_body` is an error before it is read
//! whole, never an allocation.
//!
//! One attempt per call: a management client polls again later anyway,
//! and its caller decides whether a failed report is retried.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::client::{Client, Limits, Url};
use crate::{Error, HttpOptions};

/// A JSON API reached over HTTP(S).
pub struct ApiClient {
    opts: HttpOptions,
    /// Sent as `Authorization` with every request (never with redirects
    /// to other origins: API requests follow none but GET's, which stay on
    /// the origin unless `redirect_hosts` allows another).
    authorization: Option<String>,
    /// Longest response body accepted.
    pub max_body: usize,
    /// Longest time one request (connect, send, whole response) may take.
    pub request_deadline: Duration,
}

/// A response: its status and whole body (at most `max_body` bytes).
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl ApiResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl ApiClient {
    /// `opts.deadline` (if any) bounds each request; else 120 s.
    pub fn new(opts: &HttpOptions, authorization: Option<String>) -> ApiClient {
        ApiClient {
            opts: opts.clone(),
            authorization,
            max_body: 1 << 20,
            request_deadline: opts.deadline.unwrap_or(Duration::from_secs(120)),
        }
    }

    fn client(&self) -> Client {
        Client::new(
            &self.opts,
            Limits {
                timeout: self.opts.timeout,
                deadline: Some(Instant::now() + self.request_deadline),
                min_rate: None,
                max_rate: None,
            },
        )
    }

    fn headers<'a>(&'a self, content_type: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
        let mut h = vec![("Accept", "application/json")];
        if let Some(t) = content_type {
            h.push(("Content-Type", t));
        }
        if let Some(a) = &self.authorization {
            h.push(("Authorization", a.as_str()));
        }
        h
    }

    pub fn get(&self, url: &str) -> Result<ApiResponse, Error> {
        let c = self.client();
        let resp = c
            .get(url, &self.headers(None))
            .map_err(|f| transport(url, "GET", f.msg))?;
        self.finish(url, resp)
    }

    pub fn put_json(&self, url: &str, body: &[u8]) -> Result<ApiResponse, Error> {
        self.send("PUT", url, "application/json", body)
    }

    pub fn post_json(&self, url: &str, body: &[u8]) -> Result<ApiResponse, Error> {
        self.send("POST", url, "application/json", body)
    }

    /// A request with a body of any type (a form, a multipart upload);
    /// the response is bounded as for JSON.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<ApiResponse, Error> {
        let u = Url::parse(url).map_err(|reason| Error::BadSpec(format!("{url}: {reason}")))?;
        let c = self.client();
        let resp = c
            .send_once(method, &u, &self.headers(Some(content_type)), Some(body))
            .map_err(|f| transport(url, method, f.msg))?;
        self.finish(url, resp)
    }

    fn finish(&self, url: &str, mut resp: crate::client::Response) -> Result<ApiResponse, Error> {
        let declared = resp
            .header("content-length")
            .and_then(crate::client::parse_decimal);
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(too_big(url, self.max_body));
        }
        let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize).min(self.max_body));
        resp.body
            .by_ref()
            .take(self.max_body as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| Error::Transport {
                url: url.to_string(),
                what: "reading the response".into(),
                attempts: 1,
                reason: crate::client::describe_io(&e, self.opts.timeout),
            })?;
        if body.len() > self.max_body {
            return Err(too_big(url, self.max_body));
        }
        Ok(ApiResponse {
            status: resp.status,
            body,
        })
    }
}

fn transport(url: &str, method: &str, reason: String) -> Error {
    Error::Transport {
        url: url.to_string(),
        what: method.to_string(),
        attempts: 1,
        reason,
    }
}

fn too_big(url: &str, max: usize) -> Error {
    Error::Protocol {
        url: url.to_string(),
        reason: format!("the response is larger than {max} bytes"),
    }
}
