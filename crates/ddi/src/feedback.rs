//! Action feedback (`POST …/deploymentBase/{actionId}/feedback`,
//! `…/cancelAction/{actionId}/feedback`): hawkBit's `DdiActionFeedback`.
//! `id` and `time` are sent as rauc-hawkbit-updater does, for servers of
//! the older API that require them; newer ones ignore them.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// `status.execution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Execution {
    Proceeding,
    Closed,
    Canceled,
    Rejected,
    Scheduled,
    Resumed,
    Downloaded,
    Download,
}

impl Execution {
    pub fn name(self) -> &'static str {
        match self {
            Execution::Proceeding => "proceeding",
            Execution::Closed => "closed",
            Execution::Canceled => "canceled",
            Execution::Rejected => "rejected",
            Execution::Scheduled => "scheduled",
            Execution::Resumed => "resumed",
            Execution::Downloaded => "downloaded",
            Execution::Download => "download",
        }
    }
}

/// `status.result.finished`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    Success,
    Failure,
    None,
}

impl Finished {
    pub fn name(self) -> &'static str {
        match self {
            Finished::Success => "success",
            Finished::Failure => "failure",
            Finished::None => "none",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feedback {
    pub execution: Execution,
    pub finished: Finished,
    /// `status.result.progress`: `cnt` of `of`.
    pub progress: Option<(u64, u64)>,
    pub details: Vec<String>,
}

impl Feedback {
    pub fn proceeding(details: impl Into<String>) -> Feedback {
        Feedback {
            execution: Execution::Proceeding,
            finished: Finished::None,
            progress: None,
            details: vec![details.into()],
        }
    }

    pub fn closed(ok: bool, details: impl Into<String>) -> Feedback {
        Feedback {
            execution: Execution::Closed,
            finished: if ok {
                Finished::Success
            } else {
                Finished::Failure
            },
            progress: None,
            details: vec![details.into()],
        }
    }

    pub fn with_progress(mut self, cnt: u64, of: u64) -> Feedback {
        self.progress = Some((cnt.min(of), of));
        self
    }

    pub fn to_value(&self, action_id: &str) -> Value {
        let mut result = json!({ "finished": self.finished.name() });
        if let Some((cnt, of)) = self.progress {
            result["progress"] = json!({ "cnt": cnt, "of": of });
        }
        json!({
            "id": action_id,
            "time": ddi_time(SystemTime::now()),
            "status": {
                "execution": self.execution.name(),
                "result": result,
                "details": self.details,
            }
        })
    }
}

/// `YYYYMMDDTHHMMSS` in UTC (the `time` field of hawkBit's older DDI).
pub fn ddi_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil, for non-negative day counts.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_format() {
        let t = |s| ddi_time(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(t(0), "19700101T000000");
        // `date -u -d @1709251199 +%Y%m%dT%H%M%S` (a leap day).
        assert_eq!(t(1_709_251_199), "20240229T235959");
        assert_eq!(t(1_709_251_200), "20240301T000000");
    }

    #[test]
    fn feedback_shape() {
        let v = Feedback::proceeding("downloading")
            .with_progress(5, 3)
            .to_value("8");
        assert_eq!(v["id"], "8");
        assert_eq!(v["status"]["execution"], "proceeding");
        assert_eq!(v["status"]["result"]["finished"], "none");
        assert_eq!(v["status"]["result"]["progress"]["cnt"], 3);
        assert_eq!(v["status"]["details"][0], "downloading");
        let c = Feedback::closed(false, "why").to_value("8");
        assert_eq!(c["status"]["result"]["finished"], "failure");
        assert!(c["status"]["result"].get("progress").is_none());
    }
}
