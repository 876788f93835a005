//! One line per event: `fwpack-updater: <message>` on stderr (the console
//! when running as PID 1) and the same message in the kernel log
//! (/dev/kmsg), so it survives into `dmesg` of the booted system.
//!
//! The kernel prints kmsg lines on the console itself when their level is
//! below `console_loglevel`; to avoid every line appearing twice there,
//! lines go to kmsg at level info (6) only when info is not printed on
//! the console, and at level debug (7) otherwise (still in `dmesg`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

struct Sinks {
    kmsg: Option<File>,
    /// `<N>` prefix for kmsg lines.
    level: u8,
}

static SINKS: Mutex<Option<Sinks>> = Mutex::new(None);

/// Opens /dev/kmsg (when writable) and picks its level. Safe to call again
/// (after /dev is mounted); failures just leave kmsg out.
pub fn init() {
    let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
    let console_level = std::fs::read_to_string("/proc/sys/kernel/printk")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u8>().ok())
        })
        .unwrap_or(7);
    let level = if console_level > 6 { 7 } else { 6 };
    if let Ok(mut s) = SINKS.lock() {
        *s = Some(Sinks { kmsg, level });
    }
}

/// Logs one event line.
pub fn line(msg: &str) {
    // Multi-line messages (error chains) stay one line per event.
    let msg = msg.replace('\n', " / ");
    let _ = writeln!(std::io::stderr().lock(), "fwpack-updater: {msg}");
    if let Ok(mut s) = SINKS.lock() {
        if let Some(Sinks {
            kmsg: Some(k),
            level,
        }) = s.as_mut()
        {
            // One write per record: kmsg takes each write(2) as one line.
            let rec = format!("<{level}>fwpack-updater: {msg}\n");
            let _ = k.write_all(rec.as_bytes());
        }
    }
}

#[macro_export]
macro_rules! log {
    ($($t:tt)*) => { $crate::log::line(&format!($($t)*)) };
}

/// JSON string literals: the one escaper, shared with `status`.
pub use updater::status::json_str;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escaping() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
    }
}
