//! The one rendering of [`FetchEvent`]s, as JSON lines and as human lines,
//! for `fwpack apply` and `fwpack-updater apply` alike. Hand-written JSON:
//! this is linked into the device binary, which has no serde.

use std::fmt::Write as _;

use crate::FetchEvent;

impl FetchEvent {
    /// One JSON object (one line).
    pub fn json(&self) -> String {
        match self {
            FetchEvent::Request {
                offset,
                end,
                status,
            } => format!(
                "{{\"event\":\"fetch\",\"offset\":{offset},\"end\":{},\"status\":{status}}}",
                end.map_or("null".into(), |e| e.to_string())
            ),
            FetchEvent::Retry {
                offset,
                attempt,
                wait,
                error,
            } => format!(
                "{{\"event\":\"retry\",\"offset\":{offset},\"attempt\":{attempt},\"wait_ms\":{},\"error\":{}}}",
                wait.as_millis(),
                json_str(error)
            ),
        }
    }

    /// A line for a human, or `None` for events only worth a JSON line
    /// (every request).
    pub fn text(&self) -> Option<String> {
        match self {
            FetchEvent::Request { .. } => None,
            FetchEvent::Retry {
                offset,
                attempt,
                wait,
                error,
            } => Some(format!(
                "retrying at byte {offset} in {wait:?} (attempt {attempt}): {error}"
            )),
        }
    }
}

/// A JSON string literal for `s` (quotes included).
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn json_lines() {
        let r = FetchEvent::Request {
            offset: 0,
            end: Some(65536),
            status: 206,
        };
        assert_eq!(
            r.json(),
            r#"{"event":"fetch","offset":0,"end":65536,"status":206}"#
        );
        assert_eq!(r.text(), None);
        let open = FetchEvent::Request {
            offset: 9,
            end: None,
            status: 200,
        };
        assert!(open.json().contains("\"end\":null"));
        let retry = FetchEvent::Retry {
            offset: 4096,
            attempt: 2,
            wait: Duration::from_millis(1500),
            error: "reset \"by\" peer\n".into(),
        };
        assert_eq!(
            retry.json(),
            r#"{"event":"retry","offset":4096,"attempt":2,"wait_ms":1500,"error":"reset \"by\" peer\n"}"#
        );
        assert!(retry.text().unwrap().contains("attempt 2"));
    }
}
