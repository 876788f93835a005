//! Requests to one DDI server for one controller.

use std::collections::BTreeMap;

use imagesource::{ApiClient, ApiResponse, HttpOptions};
use serde_json::json;

use crate::{check_id, Base, Cancel, Deployment, Error, Feedback, MAX_RESPONSE};

/// How the device authenticates (hawkBit's `Authorization` schemes; none
/// when the server allows anonymous controllers, as goosebit does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    /// `TargetToken`: this device's own token.
    Target(String),
    /// `GatewayToken`: a tenant-wide token.
    Gateway(String),
}

#[derive(Clone, Debug)]
pub struct DdiConfig {
    /// `http(s)://host[:port][/prefix]`, without the tenant.
    pub server: String,
    pub tenant: String,
    pub controller_id: String,
    pub auth: Auth,
    pub http: HttpOptions,
}

/// A DDI session of one controller.
pub struct Ddi {
    api: ApiClient,
    base: String,
    origin: String,
}

impl Ddi {
    pub fn new(c: &DdiConfig) -> Result<Ddi, Error> {
        check_id(&c.tenant).map_err(|e| Error::Config(format!("tenant: {e}")))?;
        check_id(&c.controller_id).map_err(|e| Error::Config(format!("controller id: {e}")))?;
        let server = c.server.trim_end_matches('/');
        let origin = origin(server)
            .ok_or_else(|| Error::Config(format!("server `{server}` is not an http(s) URL")))?;
        let auth = match &c.auth {
            Auth::None => None,
            Auth::Target(t) => Some(format!("TargetToken {t}")),
            Auth::Gateway(t) => Some(format!("GatewayToken {t}")),
        };
        if auth
            .as_ref()
            .is_some_and(|a| a.bytes().any(|b| b.is_ascii_control()))
        {
            return Err(Error::Config("the token has control characters".into()));
        }
        let mut api = ApiClient::new(&c.http, auth);
        api.max_body = MAX_RESPONSE;
        Ok(Ddi {
            api,
            base: format!("{server}/{}/controller/v1/{}", c.tenant, c.controller_id),
            origin,
        })
    }

    /// The controller's base resource URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A link from the server is followed only on the server's own origin:
    /// the token goes nowhere else.
    fn link<'a>(&self, href: &'a str) -> Result<&'a str, Error> {
        match origin(href) {
            Some(o) if o.eq_ignore_ascii_case(&self.origin) => Ok(href),
            _ => Err(Error::Link {
                href: href.chars().take(200).collect(),
                reason: format!("not on the DDI server's origin {}", self.origin),
            }),
        }
    }

    fn ok(url: &str, r: ApiResponse) -> Result<Vec<u8>, Error> {
        if r.is_success() {
            return Ok(r.body);
        }
        let body: String = String::from_utf8_lossy(&r.body)
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        Err(Error::Status {
            url: url.to_string(),
            status: r.status,
            body,
        })
    }

    fn get(&self, url: &str) -> Result<Vec<u8>, Error> {
        Self::ok(url, self.api.get(url)?)
    }

    fn post(&self, url: &str, v: &serde_json::Value) -> Result<(), Error> {
        Self::ok(url, self.api.post_json(url, v.to_string().as_bytes())?).map(drop)
    }

    pub fn poll(&self) -> Result<Base, Error> {
        Base::parse(&self.get(&self.base)?)
    }

    /// `deploymentBase` or `installedBase`, by its link.
    pub fn deployment(&self, href: &str) -> Result<Deployment, Error> {
        Deployment::parse(&self.get(self.link(href)?)?)
    }

    pub fn cancel(&self, href: &str) -> Result<Cancel, Error> {
        Cancel::parse(&self.get(self.link(href)?)?)
    }

    /// `PUT configData` with `mode: merge` (plus the `id`/`time`/`status`
    /// that older servers require, as rauc-hawkbit-updater sends them).
    pub fn put_config(&self, href: &str, data: &BTreeMap<String, String>) -> Result<(), Error> {
        let url = self.link(href)?;
        let v = json!({
            "mode": "merge",
            "data": data,
            "id": "",
            "time": crate::feedback::ddi_time(std::time::SystemTime::now()),
            "status": {"execution": "closed", "result": {"finished": "success"}, "details": []},
        });
        Self::ok(url, self.api.put_json(url, v.to_string().as_bytes())?).map(drop)
    }

    pub fn feedback(&self, action_id: &str, f: &Feedback) -> Result<(), Error> {
        check_id(action_id).map_err(Error::Config)?;
        let url = format!("{}/deploymentBase/{action_id}/feedback", self.base);
        self.post(&url, &f.to_value(action_id))
    }

    pub fn cancel_feedback(&self, action_id: &str, f: &Feedback) -> Result<(), Error> {
        check_id(action_id).map_err(Error::Config)?;
        let url = format!("{}/cancelAction/{action_id}/feedback", self.base);
        self.post(&url, &f.to_value(action_id))
    }

    /// Gives or refuses consent to the action behind a `confirmationBase`
    /// link that names one (`…/confirmationBase/{actionId}`).
    pub fn confirm(&self, href: &str, confirmed: bool, details: &str) -> Result<(), Error> {
        let path = self
            .link(href)?
            .split(['?', '#'])
            .next()
            .unwrap_or_default();
        let url = format!("{}/feedback", path.trim_end_matches('/'));
        self.post(
            &url,
            &json!({
                "confirmation": if confirmed { "confirmed" } else { "denied" },
                "code": 0,
                "details": [details],
            }),
        )
    }
}

/// `scheme://authority` of an http(s) URL.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    (!authority.is_empty()).then(|| format!("{}://{authority}", scheme.to_ascii_lowercase()))
}

/// The action id at the end of a `confirmationBase/{actionId}` link, if
/// it names one.
pub fn confirmation_action(href: &str) -> Option<&str> {
    let path = href.split(['?', '#']).next()?.trim_end_matches('/');
    let (before, id) = path.rsplit_once('/')?;
    (before.ends_with("/confirmationBase") && check_id(id).is_ok()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_links() {
        assert_eq!(origin("HTTP://h:1/x").as_deref(), Some("http://h:1"));
        assert_eq!(origin("ftp://h/x"), None);
        assert_eq!(origin("http:///x"), None);
        let d = Ddi::new(&DdiConfig {
            server: "http://127.0.0.1:9/".into(),
            tenant: "DEFAULT".into(),
            controller_id: "dev-1".into(),
            auth: Auth::Target("t".into()),
            http: HttpOptions::default(),
        })
        .unwrap();
        assert_eq!(
            d.base_url(),
            "http://127.0.0.1:9/DEFAULT/controller/v1/dev-1"
        );
        assert!(d.link("http://127.0.0.1:9/DEFAULT/x").is_ok());
        assert!(d.link("http://127.0.0.1:10/DEFAULT/x").is_err());
        assert!(d.link("http://127.0.0.1:9@evil/x").is_err());
        assert_eq!(
            confirmation_action("http://h/T/controller/v1/c/confirmationBase/7?c=1"),
            Some("7")
        );
        assert_eq!(
            confirmation_action("http://h/T/controller/v1/c/confirmationBase"),
            None
        );
    }
}
