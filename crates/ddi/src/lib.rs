//! A client for Eclipse hawkBit's Direct Device Integration (DDI) API, the
//! polling protocol that hawkBit, goosebit and commercial back ends serve
//! to devices.
//!
//! Resources and fields follow hawkBit's published DDI documentation
//! (<https://eclipse.dev/hawkbit/apis/ddi_api/> and the OpenAPI reference
//! at <https://eclipse.dev/hawkbit/rest-api/ddi/>), cross-checked with
//! rauc-hawkbit-updater (`src/hawkbit-client.c`: `json_build_status` for
//! feedback and configData, `process_deployment` for the artifact links,
//! `download` preferred over `download-http`) and with goosebit 0.2.12's
//! DDI routes (`goosebit/updater/controller/v1/routes.py`: action id
//! `-1` for plugin sources):
//!
//! - `GET {server}/{tenant}/controller/v1/{controllerId}`: the base
//!   resource: `config.polling.sleep` ("HH:MM:SS") and `_links` to
//!   `deploymentBase`, `configData`, `cancelAction`, `installedBase`,
//!   `confirmationBase` when there is something to do ([`Base`]).
//! - `deploymentBase/{actionId}`: `id`, `deployment.download` /
//!   `deployment.update` (`skip`, `attempt`, `forced`),
//!   `deployment.maintenanceWindow` (`available`, `unavailable`) and
//!   `deployment.chunks[]` (`part`, `version`, `name`, `artifacts[]` with
//!   `filename`, `size`, `hashes`, `_links.download` /
//!   `_links.download-http`) ([`Deployment`]).
//! - `POST deploymentBase/{actionId}/feedback`: `status.execution`
//!   (`proceeding`, `closed`, …), `status.result.finished` (`success`,
//!   `failure`, `none`), `status.result.progress` (`cnt`, `of`) and
//!   `status.details[]` ([`Feedback`]).
//! - `PUT configData`: `{"mode": "merge", "data": {…}}`.
//! - `cancelAction/{actionId}`: `cancelAction.stopId`; answered by
//!   `POST cancelAction/{actionId}/feedback` ([`Cancel`]).
//! - `installedBase/{actionId}`: the last installed action, same shape as
//!   a deployment.
//! - `confirmationBase/{actionId}`: an action waiting for the device's
//!   consent, answered by `POST confirmationBase/{actionId}/feedback`
//!   with `confirmation` `confirmed` or `denied`.
//!
//! Every response is untrusted: [`MAX_RESPONSE`] bounds a body before it
//! is read (in `imagesource::ApiClient`), the parsers here are total
//! (any bytes give a value or an [`Error`], fuzzed in `fuzz/`), counts
//! and strings are bounded, and ids that go into URLs are restricted to a
//! safe alphabet. Links are only followed on the configured server's
//! origin, so the target token never goes to another host; artifact
//! downloads get no token (the `.fwi` is signed, not the transport).

use std::time::Duration;

use serde::Deserialize;

mod client;
mod feedback;

pub use client::{confirmation_action, Auth, Ddi, DdiConfig};
pub use feedback::{Execution, Feedback, Finished};

/// Longest DDI response body accepted.
pub const MAX_RESPONSE: usize = 256 << 10;
/// Most chunks, and artifacts per chunk, in one deployment.
pub const MAX_CHUNKS: usize = 16;
pub const MAX_ARTIFACTS: usize = 16;
/// Longest string field kept (links, names, versions).
pub const MAX_STR: usize = 4096;
/// Longest id that is put into a URL path.
pub const MAX_ID: usize = 128;
/// Longest poll interval a server may ask for (a typo must not silence a
/// device for years); the client's own bounds clamp it further.
pub const MAX_SLEEP: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Source(#[from] imagesource::Error),
    #[error("{url}: the server answered {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{href}: {reason}")]
    Link { href: String, reason: String },
    /// A deployment whose `id` is readable and safe but whose rest is not
    /// (a wrong type, a bad hash, too many chunks): the action can be
    /// closed with `failure` and this reason instead of failing every
    /// poll without a word to the server.
    #[error("action {id}: {reason}")]
    Unreadable { id: String, reason: String },
    #[error("{0}")]
    Config(String),
}

fn malformed(what: &'static str, reason: impl Into<String>) -> Error {
    Error::Malformed {
        what,
        reason: reason.into(),
    }
}

/// The base resource: when to poll next and what to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Base {
    /// `config.polling.sleep`.
    pub sleep: Option<Duration>,
    pub deployment: Option<String>,
    pub config_data: Option<String>,
    pub cancel_action: Option<String>,
    pub installed_base: Option<String>,
    pub confirmation_base: Option<String>,
}

/// `download` and `update` handling types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handling {
    /// Do not do it now.
    Skip,
    /// Do it when the device sees fit (fwpack: now).
    Attempt,
    /// Do it now.
    Forced,
}

/// `maintenanceWindow`: when absent, install when the update handling says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Available,
    /// Download now, install later.
    Unavailable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    pub id: String,
    pub download: Handling,
    pub update: Handling,
    pub window: Option<Window>,
    pub chunks: Vec<Chunk>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub part: String,
    pub version: String,
    pub name: String,
    pub artifacts: Vec<Artifact>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    pub filename: String,
    pub size: Option<u64>,
    /// Lower-case hex, when the server gives it.
    pub sha256: Option<String>,
    /// `_links.download` (https on hawkBit), else `_links.download-http`.
    pub href: Option<String>,
}

/// A cancel request: `stop_id` is the action to stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cancel {
    pub id: String,
    pub stop_id: String,
}

// Raw shapes: unknown fields are ignored (servers add fields); bounds are
// checked after parsing, which itself is bounded by MAX_RESPONSE.

#[derive(Deserialize)]
struct Href {
    href: String,
}

#[derive(Deserialize, Default)]
struct RawBaseLinks {
    #[serde(rename = "deploymentBase")]
    deployment_base: Option<Href>,
    #[serde(rename = "configData")]
    config_data: Option<Href>,
    #[serde(rename = "cancelAction")]
    cancel_action: Option<Href>,
    #[serde(rename = "installedBase")]
    installed_base: Option<Href>,
    #[serde(rename = "confirmationBase")]
    confirmation_base: Option<Href>,
}

#[derive(Deserialize)]
struct RawPolling {
    sleep: Option<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    polling: Option<RawPolling>,
}

#[derive(Deserialize)]
struct RawBase {
    config: Option<RawConfig>,
    #[serde(rename = "_links")]
    links: Option<RawBaseLinks>,
}

#[derive(Deserialize)]
struct RawArtifactLinks {
    download: Option<Href>,
    #[serde(rename = "download-http")]
    download_http: Option<Href>,
}

#[derive(Deserialize)]
struct RawHashes {
    sha256: Option<String>,
}

#[derive(Deserialize)]
struct RawArtifact {
    filename: Option<String>,
    size: Option<u64>,
    hashes: Option<RawHashes>,
    #[serde(rename = "_links")]
    links: Option<RawArtifactLinks>,
}

#[derive(Deserialize)]
struct RawChunk {
    part: Option<String>,
    version: Option<String>,
    name: Option<String>,
    #[serde(default)]
    artifacts: Vec<RawArtifact>,
}

#[derive(Deserialize)]
struct RawDeployment {
    download: Option<String>,
    update: Option<String>,
    #[serde(rename = "maintenanceWindow")]
    maintenance_window: Option<String>,
    #[serde(default)]
    chunks: Vec<RawChunk>,
}

#[derive(Deserialize)]
struct RawDeploymentBase {
    id: serde_json::Value,
    deployment: RawDeployment,
}

#[derive(Deserialize)]
struct RawId {
    id: serde_json::Value,
}

#[derive(Deserialize)]
struct RawCancelInner {
    #[serde(rename = "stopId")]
    stop_id: serde_json::Value,
}

#[derive(Deserialize)]
struct RawCancel {
    id: serde_json::Value,
    #[serde(rename = "cancelAction")]
    cancel_action: RawCancelInner,
}

fn json<'a, T: Deserialize<'a>>(data: &'a [u8], what: &'static str) -> Result<T, Error> {
    if data.len() > MAX_RESPONSE {
        return Err(malformed(
            what,
            format!("{} bytes, more than {MAX_RESPONSE}", data.len()),
        ));
    }
    serde_json::from_slice(data).map_err(|e| malformed(what, e.to_string()))
}

fn bounded(s: String, what: &'static str) -> Result<String, Error> {
    if s.len() > MAX_STR {
        return Err(malformed(
            what,
            format!("a field longer than {MAX_STR} bytes"),
        ));
    }
    Ok(s)
}

fn href(h: Option<Href>, what: &'static str) -> Result<Option<String>, Error> {
    h.map(|h| bounded(h.href, what)).transpose()
}

/// An action id as it may be put into a URL path: hawkBit's are decimal
/// numbers, sent as strings or numbers; anything outside `[A-Za-z0-9_.-]`
/// is refused rather than escaped.
pub fn action_id(v: &serde_json::Value, what: &'static str) -> Result<String, Error> {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(malformed(what, "the id is not a string or a number")),
    };
    check_id(&s).map_err(|r| malformed(what, r))?;
    Ok(s)
}

/// Ids that go into URL paths (action ids, controller ids, tenants).
pub fn check_id(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_ID {
        return Err(format!("id `{s}`: 1 to {MAX_ID} characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        || s == "."
        || s == ".."
    {
        return Err(format!("id `{s}`: only letters, digits, `_`, `.` and `-`"));
    }
    Ok(())
}

/// `HH:MM:SS` (hours may have more digits), as `config.polling.sleep`.
pub fn parse_sleep(s: &str) -> Option<Duration> {
    let mut it = s.split(':');
    let (h, m, sec) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    let num = |p: &str, max: u64| -> Option<u64> {
        if p.is_empty() || p.len() > 6 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse::<u64>().ok().filter(|&n| n <= max)
    };
    let secs = num(h, 999_999)? * 3600 + num(m, 59)? * 60 + num(sec, 59)?;
    Some(Duration::from_secs(secs).min(MAX_SLEEP))
}

impl Base {
    pub fn parse(data: &[u8]) -> Result<Base, Error> {
        const WHAT: &str = "the DDI base resource";
        let raw: RawBase = json(data, WHAT)?;
        let sleep = match raw.config.and_then(|c| c.polling).and_then(|p| p.sleep) {
            Some(s) => Some(
                parse_sleep(&s)
                    .ok_or_else(|| malformed(WHAT, format!("config.polling.sleep `{s}`")))?,
            ),
            None => None,
        };
        let l = raw.links.unwrap_or_default();
        Ok(Base {
            sleep,
            deployment: href(l.deployment_base, WHAT)?,
            config_data: href(l.config_data, WHAT)?,
            cancel_action: href(l.cancel_action, WHAT)?,
            installed_base: href(l.installed_base, WHAT)?,
            confirmation_base: href(l.confirmation_base, WHAT)?,
        })
    }
}

fn handling(v: Option<String>, what: &'static str) -> Result<Handling, Error> {
    // Absent: hawkBit always sends both; `forced` is what an old server
    // without handling types meant.
    match v.as_deref() {
        None | Some("forced") => Ok(Handling::Forced),
        Some("attempt") => Ok(Handling::Attempt),
        Some("skip") => Ok(Handling::Skip),
        Some(o) => Err(malformed(
            what,
            format!("handling `{}`", o.chars().take(64).collect::<String>()),
        )),
    }
}

impl Deployment {
    /// A `deploymentBase` (or `installedBase`) response; one that is
    /// JSON with a valid `id` but is otherwise refused is
    /// [`Error::Unreadable`].
    pub fn parse(data: &[u8]) -> Result<Deployment, Error> {
        Self::parse_raw(data).map_err(|e| match e {
            Error::Malformed { what, reason } => {
                match json::<RawId>(data, what).and_then(|r| action_id(&r.id, what)) {
                    Ok(id) => Error::Unreadable {
                        id,
                        reason: format!("{what}: {reason}"),
                    },
                    Err(_) => Error::Malformed { what, reason },
                }
            }
            e => e,
        })
    }

    fn parse_raw(data: &[u8]) -> Result<Deployment, Error> {
        const WHAT: &str = "the DDI deployment";
        let raw: RawDeploymentBase = json(data, WHAT)?;
        let id = action_id(&raw.id, WHAT)?;
        let d = raw.deployment;
        if d.chunks.len() > MAX_CHUNKS {
            return Err(malformed(WHAT, format!("more than {MAX_CHUNKS} chunks")));
        }
        let window = match d.maintenance_window.as_deref() {
            None => None,
            Some("available") => Some(Window::Available),
            Some("unavailable") => Some(Window::Unavailable),
            Some(o) => {
                return Err(malformed(
                    WHAT,
                    format!(
                        "maintenanceWindow `{}`",
                        o.chars().take(64).collect::<String>()
                    ),
                ))
            }
        };
        let mut chunks = Vec::with_capacity(d.chunks.len());
        for c in d.chunks {
            if c.artifacts.len() > MAX_ARTIFACTS {
                return Err(malformed(
                    WHAT,
                    format!("more than {MAX_ARTIFACTS} artifacts in a chunk"),
                ));
            }
            let mut artifacts = Vec::with_capacity(c.artifacts.len());
            for a in c.artifacts {
                let (dl, dl_http) = a
                    .links
                    .map_or((None, None), |l| (l.download, l.download_http));
                let sha256 = match a.hashes.and_then(|h| h.sha256) {
                    Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        Some(h.to_ascii_lowercase())
                    }
                    Some(_) => {
                        return Err(malformed(WHAT, "an artifact's sha256 is not 64 hex digits"))
                    }
                    None => None,
                };
                artifacts.push(Artifact {
                    filename: bounded(a.filename.unwrap_or_default(), WHAT)?,
                    size: a.size,
                    sha256,
                    href: href(dl.or(dl_http), WHAT)?,
                });
            }
            chunks.push(Chunk {
                part: bounded(c.part.unwrap_or_default(), WHAT)?,
                version: bounded(c.version.unwrap_or_default(), WHAT)?,
                name: bounded(c.name.unwrap_or_default(), WHAT)?,
                artifacts,
            });
        }
        Ok(Deployment {
            id,
            download: handling(d.download, WHAT)?,
            update: handling(d.update, WHAT)?,
            window,
            chunks,
        })
    }

    /// The one `.fwi` artifact this deployment installs: fwpack images
    /// carry every slot group in one signed container, so a deployment
    /// with several `.fwi` artifacts is refused rather than guessed at.
    pub fn fwi(&self) -> Result<&Artifact, String> {
        let mut found = self
            .chunks
            .iter()
            .flat_map(|c| &c.artifacts)
            .filter(|a| a.filename.ends_with(".fwi"));
        let first = found.next().ok_or("the deployment has no .fwi artifact")?;
        if found.next().is_some() {
            return Err("the deployment has more than one .fwi artifact".into());
        }
        Ok(first)
    }
}

impl Cancel {
    pub fn parse(data: &[u8]) -> Result<Cancel, Error> {
        const WHAT: &str = "the DDI cancel action";
        let raw: RawCancel = json(data, WHAT)?;
        Ok(Cancel {
            id: action_id(&raw.id, WHAT)?,
            stop_id: action_id(&raw.cancel_action.stop_id, WHAT)?,
        })
    }
}

/// Parses `data` as every DDI response type: the fuzz target's entry.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    if let Ok(b) = Base::parse(data) {
        assert!(b.sleep.is_none_or(|s| s <= MAX_SLEEP));
    }
    if let Ok(d) = Deployment::parse(data) {
        assert!(d.chunks.len() <= MAX_CHUNKS);
        assert!(check_id(&d.id).is_ok());
        let _ = d.fwi();
    }
    if let Ok(c) = Cancel::parse(data) {
        assert!(check_id(&c.stop_id).is_ok());
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_sleep(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep() {
        assert_eq!(parse_sleep("00:05:00"), Some(Duration::from_secs(300)));
        assert_eq!(parse_sleep("12:00:01"), Some(Duration::from_secs(43201)));
        assert_eq!(parse_sleep("99999:00:00"), Some(MAX_SLEEP));
        for bad in [
            "",
            "1:2",
            "00:60:00",
            "a:00:00",
            "00:00:00:00",
            "-1:00:00",
            "+1:00:00",
        ] {
            assert_eq!(parse_sleep(bad), None, "{bad}");
        }
    }

    #[test]
    fn base_from_the_docs() {
        // The example of hawkBit's DDI reference (GET /{tenant}/controller/v1/{controllerId}).
        let b = Base::parse(br#"{"config":{"polling":{"sleep":"12:00:00"}},"_links":{"deploymentBase":{"href":"https://h/DEFAULT/controller/v1/dev/deploymentBase/5?c=-2129030598"},"configData":{"href":"https://h/DEFAULT/controller/v1/dev/configData"}}}"#).unwrap();
        assert_eq!(b.sleep, Some(Duration::from_secs(43200)));
        assert!(b.deployment.unwrap().contains("deploymentBase/5"));
        assert!(b.config_data.is_some() && b.cancel_action.is_none());
        assert_eq!(Base::parse(b"{}").unwrap(), Base::default());
        assert!(Base::parse(b"[]").is_err());
        assert!(Base::parse(br#"{"config":{"polling":{"sleep":"soon"}}}"#).is_err());
    }

    #[test]
    fn deployment_from_the_docs() {
        let d = Deployment::parse(br#"{"id":"8","deployment":{"download":"forced","update":"attempt","maintenanceWindow":"unavailable","chunks":[{"part":"os","version":"1.0.79","name":"one","artifacts":[{"filename":"u.fwi","hashes":{"sha1":"x","md5":"y","sha256":"AB8C47D1A7F2A1C2B3D4E5F60718293A4B5C6D7E8F9011223344556677889900"},"size":11,"_links":{"download":{"href":"https://h/a/u.fwi"},"download-http":{"href":"http://h/a/u.fwi"}}}]}]},"actionHistory":{"status":"RUNNING","messages":[]}}"#).unwrap();
        assert_eq!(d.id, "8");
        assert_eq!(
            (d.download, d.update),
            (Handling::Forced, Handling::Attempt)
        );
        assert_eq!(d.window, Some(Window::Unavailable));
        let a = d.fwi().unwrap();
        assert_eq!(a.href.as_deref(), Some("https://h/a/u.fwi"));
        assert_eq!(a.size, Some(11));
        assert!(a.sha256.as_deref().unwrap().starts_with("ab8c"));
        // Numeric ids are accepted; ids that would escape a
        // URL path are not.
        assert_eq!(
            Deployment::parse(br#"{"id":3,"deployment":{"chunks":[]}}"#)
                .unwrap()
                .id,
            "3"
        );
        for bad in [
            &br#"{"id":"../x","deployment":{}}"#[..],
            br#"{"id":"1","deployment":{"download":"later"}}"#,
            br#"{"id":"1","deployment":{"maintenanceWindow":"x"}}"#,
            br#"{"id":null,"deployment":{}}"#,
        ] {
            assert!(
                Deployment::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn unreadable_deployment_keeps_a_safe_id() {
        let e =
            Deployment::parse(br#"{"id":4,"deployment":{"chunks":[{"artifacts":[{"size":-1}]}]}}"#);
        assert!(
            matches!(e, Err(Error::Unreadable { ref id, .. }) if id == "4"),
            "{e:?}"
        );
        // An id that may not go into a URL is never reported to.
        for bad in [
            &br#"{"id":"../x","deployment":{"download":"later"}}"#[..],
            br#"{"id":"1","deployment":"#,
        ] {
            assert!(matches!(
                Deployment::parse(bad),
                Err(Error::Malformed { .. })
            ));
        }
    }

    /// Every prefix and one-byte corruption of valid responses: a value
    /// or an error, never a panic (the fuzz target's entry, run here on
    /// inputs near the valid ones).
    #[test]
    fn prefixes_and_flips_are_total() {
        let samples: [&[u8]; 3] = [
            br#"{"config":{"polling":{"sleep":"00:05:00"}},"_links":{"deploymentBase":{"href":"http://h/T/controller/v1/c/deploymentBase/5"},"cancelAction":{"href":"http://h/x"}}}"#,
            br#"{"id":"8","deployment":{"download":"forced","update":"skip","maintenanceWindow":"available","chunks":[{"part":"os","version":"1","name":"n","artifacts":[{"filename":"u.fwi","size":11,"hashes":{"sha256":"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"},"_links":{"download-http":{"href":"http://h/u.fwi"}}}]}]}}"#,
            br#"{"id":"11","cancelAction":{"stopId":"11"}}"#,
        ];
        for s in samples {
            for n in 0..=s.len() {
                fuzz(&s[..n]);
            }
            for i in 0..s.len() {
                for b in [b'"', b'{', b']', b'9', 0xff] {
                    let mut v = s.to_vec();
                    v[i] = b;
                    fuzz(&v);
                }
            }
        }
    }

    #[test]
    fn cancel_and_bounds() {
        let c = Cancel::parse(br#"{"id":"11","cancelAction":{"stopId":"11"}}"#).unwrap();
        assert_eq!((c.id.as_str(), c.stop_id.as_str()), ("11", "11"));
        let many = format!(
            r#"{{"id":"1","deployment":{{"chunks":[{}]}}}}"#,
            vec![r#"{"part":"p"}"#; MAX_CHUNKS + 1].join(",")
        );
        assert!(Deployment::parse(many.as_bytes()).is_err());
        let long = format!(
            r#"{{"_links":{{"deploymentBase":{{"href":"{}"}}}}}}"#,
            "a".repeat(MAX_STR + 1)
        );
        assert!(Base::parse(long.as_bytes()).is_err());
        assert!(Base::parse(&vec![b' '; MAX_RESPONSE + 1]).is_err());
    }
}
