//! A hawkBit DDI server for the fleet tests, on 127.0.0.1 only, written
//! from hawkBit's published DDI API documentation
//! (<https://eclipse.dev/hawkbit/apis/ddi_api/>, OpenAPI reference
//! <https://eclipse.dev/hawkbit/rest-api/ddi/>). It serves what goosebit
//! does not: `cancelAction`, `confirmationBase`, `installedBase`, handling
//! types and maintenance windows. Artifacts are not served here: their
//! links point at a real web server (nginx in the tests).
//!
//! Resources (all under `/{tenant}/controller/v1/{controllerId}`):
//! - `GET` (base): `config.polling.sleep` and `_links.{configData,
//!   deploymentBase, cancelAction, confirmationBase, installedBase}` for
//!   whatever is open.
//! - `GET deploymentBase/{actionId}`: `id`, `deployment.{download,
//!   update, maintenanceWindow, chunks[].{part, version, name,
//!   artifacts[].{filename, size, hashes.sha256, _links.download-http}}}`;
//!   one chunk per software module of the distribution set, `part` being
//!   the module type's key (`os` for hawkBit's default type).
//! - `POST deploymentBase/{actionId}/feedback`: `status.{execution,
//!   result.{finished, progress.{cnt, of}}, details[]}`; `closed` ends the
//!   action.
//! - `PUT configData`: `{mode, data}`.
//! - `GET cancelAction/{actionId}` → `{id, cancelAction.stopId}`;
//!   `POST cancelAction/{actionId}/feedback`: `status.execution` `closed`
//!   with `result.finished` `success` confirms the cancel (the action is
//!   CANCELED); `rejected` means it cannot be canceled now (the action
//!   goes on). While a cancel is open the base resource links
//!   `cancelAction` instead of `deploymentBase`, but the deployment's own
//!   resources still answer (a device in the middle of it keeps
//!   reporting).
//! - `POST confirmationBase/{actionId}/feedback`: `{confirmation:
//!   confirmed|denied, code, details}`.
//! - `GET installedBase/{actionId}`: the last finished action.
//!
//! Authentication: with a token set, every request must carry
//! `Authorization: TargetToken <token>` (else 401).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{io_err, Result};

/// One deployment action.
#[derive(Clone, Debug)]
pub struct Action {
    pub id: String,
    /// `skip`, `attempt` or `forced`.
    pub download: String,
    pub update: String,
    /// `available`, `unavailable`, or none.
    pub window: Option<String>,
    pub filename: String,
    pub url: String,
    pub size: u64,
    pub sha256: String,
    pub version: String,
}

/// One chunk of a multi-chunk deployment (`deployment.chunks[]`, one per
/// software module of the distribution set): its `part` (the module
/// type's key) and one artifact.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub part: String,
    pub name: String,
    pub filename: String,
    pub url: String,
    pub size: u64,
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Option<Value>,
}

/// How an action ended (a `closed` feedback, or a confirmed cancel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub id: String,
    /// `success`, `failure`, or `canceled`.
    pub finished: String,
    pub details: Vec<String>,
}

#[derive(Default)]
struct State {
    tenant: String,
    controller: String,
    token: Option<String>,
    sleep: String,
    config_requested: bool,
    config: Option<Value>,
    /// What `PUT configData` answers, when not 200 (a broken server).
    config_status: Option<u16>,
    /// How long a `proceeding` deployment feedback waits for its answer
    /// (a server that drips).
    slow_feedback: Option<Duration>,
    action: Option<Action>,
    /// The open action's chunks, when not the one `os` chunk of `action`.
    chunks: Option<Vec<Chunk>>,
    cancel: bool,
    awaiting_confirmation: bool,
    /// A broken server: the action awaiting consent is offered as a
    /// `deploymentBase` too.
    ignore_consent: bool,
    confirmations: Vec<String>,
    installed: Option<Action>,
    outcomes: Vec<Outcome>,
    seen: Vec<Seen>,
}

pub struct DdiServer {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl DdiServer {
    /// A server for one controller of one tenant; `token`: the target
    /// token it demands.
    pub fn start(tenant: &str, controller: &str, token: Option<&str>) -> Result<DdiServer> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("127.0.0.1:0"))?;
        let port = l.local_addr().map_err(io_err("local_addr"))?.port();
        let state = Arc::new(Mutex::new(State {
            tenant: tenant.into(),
            controller: controller.into(),
            token: token.map(str::to_string),
            sleep: "00:00:01".into(),
            config_requested: true,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = c {
                    let st = st.clone();
                    std::thread::spawn(move || serve(c, &st));
                }
            }
        });
        Ok(DdiServer { port, state, stop })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Opens a deployment (and asks for configData again, as hawkBit does
    /// after an update).
    pub fn deploy(&self, a: Action) {
        self.with(|s| {
            s.action = Some(a);
            s.chunks = None;
            s.cancel = false;
        })
    }

    /// Changes the open action's maintenance window.
    pub fn set_window(&self, w: Option<&str>) {
        self.with(|s| {
            if let Some(a) = s.action.as_mut() {
                a.window = w.map(str::to_string)
            }
        })
    }

    /// Replaces the open action's one chunk with `chunks`.
    pub fn set_chunks(&self, chunks: Vec<Chunk>) {
        self.with(|s| s.chunks = Some(chunks))
    }

    /// Asks the device to cancel the open action.
    pub fn cancel(&self) {
        self.with(|s| s.cancel = true)
    }

    /// The open action waits for the device's consent before it is offered.
    pub fn require_confirmation(&self) {
        self.with(|s| s.awaiting_confirmation = true)
    }

    /// Links and serves the open action's `deploymentBase` even while it
    /// awaits the device's consent (a server that ignores its own
    /// confirmation flow).
    pub fn ignore_consent(&self) {
        self.with(|s| s.ignore_consent = true)
    }

    pub fn confirmations(&self) -> Vec<String> {
        self.with(|s| s.confirmations.clone())
    }

    pub fn request_config(&self) {
        self.with(|s| s.config_requested = true)
    }

    /// Every `proceeding` feedback on a deployment is answered only
    /// after `d` (a slow server).
    pub fn slow_feedback(&self, d: Duration) {
        self.with(|s| s.slow_feedback = Some(d))
    }

    /// `PUT configData` answers `status` (and keeps asking for it).
    pub fn fail_config(&self, status: u16) {
        self.with(|s| s.config_status = Some(status))
    }

    pub fn config(&self) -> Option<Value> {
        self.with(|s| s.config.clone())
    }

    pub fn outcomes(&self) -> Vec<Outcome> {
        self.with(|s| s.outcomes.clone())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.with(|s| s.seen.clone())
    }

    /// Every feedback body posted for deployment `id`.
    pub fn feedback(&self, id: &str) -> Vec<Value> {
        let p = format!("/deploymentBase/{id}/feedback");
        self.seen()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with(&p))
            .filter_map(|r| r.body)
            .collect()
    }

    pub fn open_action(&self) -> Option<String> {
        self.with(|s| s.action.as_ref().map(|a| a.id.clone()))
    }
}

impl Drop for DdiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(c: TcpStream, state: &Mutex<State>) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut w = match c.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(c);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = match (parts.next(), parts.next()) {
        (Some(m), Some(p)) => (m.to_string(), p.to_string()),
        _ => return,
    };
    let mut len = 0usize;
    let mut auth = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0).min(1 << 20);
            } else if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let body: Option<Value> = serde_json::from_slice(&body).ok();
    let (answer, slow) = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            authorization: auth.clone(),
            body: body.clone(),
        });
        let origin = format!(
            "http://{}",
            w.local_addr().map(|a| a.to_string()).unwrap_or_default()
        );
        let slow = s.slow_feedback.filter(|_| {
            method == "POST"
                && path.contains("/deploymentBase/")
                && body.as_ref().map(|b| &b["status"]["execution"]) == Some(&json!("proceeding"))
        });
        let answer = handle(&mut s, &origin, &method, &path, auth.as_deref(), body);
        (answer, slow)
    };
    let (status, reply) = answer;
    // Outside the lock: the server goes on answering other requests.
    if let Some(d) = slow {
        std::thread::sleep(d);
    }
    let text = reply.map(|v| v.to_string()).unwrap_or_default();
    let _ = write!(
        w,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn handle(
    s: &mut State,
    origin: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<Value>) {
    if let Some(t) = &s.token {
        if auth != Some(format!("TargetToken {t}").as_str()) {
            return (401, None);
        }
    }
    let base = format!("/{}/controller/v1/{}", s.tenant, s.controller);
    let path = path.split('?').next().unwrap_or_default();
    let Some(rest) = path.strip_prefix(&base) else {
        return (404, None);
    };
    let href = |p: &str| json!({ "href": format!("{origin}{base}{p}") });
    let open = s.action.clone();
    let segs: Vec<&str> = rest.split('/').filter(|x| !x.is_empty()).collect();
    match (method, segs.as_slice()) {
        ("GET", []) => {
            let mut links = serde_json::Map::new();
            if s.config_requested {
                links.insert("configData".into(), href("/configData"));
            }
            if let Some(a) = &open {
                if s.cancel {
                    links.insert(
                        "cancelAction".into(),
                        href(&format!("/cancelAction/{}", a.id)),
                    );
                } else if s.awaiting_confirmation {
                    links.insert(
                        "confirmationBase".into(),
                        href(&format!("/confirmationBase/{}", a.id)),
                    );
                }
                if !s.cancel && (!s.awaiting_confirmation || s.ignore_consent) {
                    links.insert(
                        "deploymentBase".into(),
                        href(&format!("/deploymentBase/{}?c=1", a.id)),
                    );
                }
            }
            if let Some(a) = &s.installed {
                links.insert(
                    "installedBase".into(),
                    href(&format!("/installedBase/{}", a.id)),
                );
            }
            (
                200,
                Some(json!({ "config": { "polling": { "sleep": s.sleep } }, "_links": links })),
            )
        }
        ("PUT", ["configData"]) => {
            if let Some(status) = s.config_status {
                return (status, None);
            }
            s.config = body;
            s.config_requested = false;
            (200, None)
        }
        ("GET", ["deploymentBase", id]) => match &open {
            Some(a) if a.id == *id && (!s.awaiting_confirmation || s.ignore_consent) => {
                (200, Some(deployment(a, s.chunks.as_deref(), origin)))
            }
            _ => (404, None),
        },
        ("GET", ["installedBase", id]) => match &s.installed {
            Some(a) if a.id == *id => (200, Some(deployment(a, None, origin))),
            _ => (404, None),
        },
        ("POST", ["deploymentBase", id, "feedback"]) => {
            let Some(a) = open.filter(|a| a.id == *id) else {
                return (410, None);
            };
            let st = body.as_ref().map(|b| &b["status"]);
            if st.and_then(|s| s["execution"].as_str()) == Some("closed") {
                let finished = st
                    .and_then(|s| s["result"]["finished"].as_str())
                    .unwrap_or("none")
                    .to_string();
                let details = details(st);
                s.outcomes.push(Outcome {
                    id: a.id.clone(),
                    finished: finished.clone(),
                    details,
                });
                s.action = None;
                if finished == "success" {
                    s.installed = Some(a);
                    s.config_requested = true;
                }
            }
            (200, None)
        }
        ("GET", ["cancelAction", id]) => match &open {
            Some(a) if a.id == *id && s.cancel => (
                200,
                Some(json!({ "id": a.id, "cancelAction": { "stopId": a.id } })),
            ),
            _ => (404, None),
        },
        ("POST", ["cancelAction", id, "feedback"]) => {
            let st = body.as_ref().map(|b| &b["status"]);
            let execution = st.and_then(|s| s["execution"].as_str()).unwrap_or_default();
            let finished = st.and_then(|s| s["result"]["finished"].as_str());
            if execution == "closed"
                && finished == Some("success")
                && open.as_ref().is_some_and(|a| a.id == *id)
            {
                s.outcomes.push(Outcome {
                    id: id.to_string(),
                    finished: "canceled".into(),
                    details: details(st),
                });
                s.action = None;
                s.cancel = false;
            }
            (200, None)
        }
        ("POST", ["confirmationBase", id, "feedback"]) => {
            let c = body
                .as_ref()
                .and_then(|b| b["confirmation"].as_str())
                .unwrap_or_default()
                .to_string();
            if open.as_ref().is_some_and(|a| a.id == *id) {
                s.confirmations.push(c.clone());
                if c == "confirmed" {
                    s.awaiting_confirmation = false;
                }
            }
            (200, None)
        }
        _ => (404, None),
    }
}

fn details(st: Option<&Value>) -> Vec<String> {
    st.and_then(|s| s["details"].as_array())
        .map(|d| {
            d.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn deployment(a: &Action, chunks: Option<&[Chunk]>, _origin: &str) -> Value {
    let one = [Chunk {
        part: "os".into(),
        name: "fwpack".into(),
        filename: a.filename.clone(),
        url: a.url.clone(),
        size: a.size,
    }];
    let chunks: Vec<Value> = chunks
        .unwrap_or(&one)
        .iter()
        .map(|c| {
            json!({
                "part": c.part,
                "version": a.version,
                "name": c.name,
                "artifacts": [{
                    "filename": c.filename,
                    "size": c.size,
                    "hashes": { "sha256": a.sha256 },
                    "_links": { "download-http": { "href": c.url } }
                }]
            })
        })
        .collect();
    let mut d = json!({
        "download": a.download,
        "update": a.update,
        "chunks": chunks
    });
    if let Some(w) = &a.window {
        d["maintenanceWindow"] = json!(w);
    }
    json!({ "id": a.id, "deployment": d, "actionHistory": { "status": "RUNNING", "messages": [] } })
}
