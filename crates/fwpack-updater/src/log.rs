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
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rustix::event::{PollFd, PollFlags};

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
    let msg = one_line(msg);
    console(
        rustix::stdio::stderr(),
        format!("fwpack-updater: {msg}\n").as_bytes(),
    );
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

/// Multi-line messages (error chains) stay one line per event; other
/// control characters (ESC, CR) are shown as `?`: messages carry file
/// names from an images partition and command-line words, which must not
/// rewrite or hide what the console shows.
fn one_line(msg: &str) -> String {
    msg.replace('\n', " / ").replace(char::is_control, "?")
}

/// Set when a line did not fit within its wait, cleared by one that did.
static STUCK: AtomicBool = AtomicBool::new(false);

/// Writes `b` to stderr, which PID 1 opens `O_NONBLOCK` (pid1.rs): a
/// console that takes no more (XOFF from whoever is on the serial line,
/// hardware flow control, a pty nobody reads) must not hang PID 1 on a
/// log line. Each line waits for room at most once, up to 2 s, and not
/// at all while the console is stuck; what does not fit is dropped (the
/// line is in the kernel log as well). On a blocking stderr (a command)
/// this is a plain write.
fn console(fd: BorrowedFd<'_>, mut b: &[u8]) {
    let mut waited = STUCK.load(Ordering::Relaxed);
    while !b.is_empty() {
        match rustix::io::write(fd, b) {
            Ok(n) if n > 0 => b = &b[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) if !waited => {
                waited = true;
                let ts = rustix::event::Timespec {
                    tv_sec: 2,
                    tv_nsec: 0,
                };
                let mut p = [PollFd::new(&fd, PollFlags::OUT)];
                let _ = rustix::event::poll(&mut p, Some(&ts));
            }
            _ => break,
        }
    }
    STUCK.store(!b.is_empty(), Ordering::Relaxed);
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
    use rustix::fs::OFlags;

    /// A console that takes no more (a pty nobody reads, as a serial line
    /// after XOFF): lines are dropped, PID 1 goes on; once it drains,
    /// lines go through again.
    #[test]
    fn a_full_console_does_not_hang_logging() {
        use std::os::fd::{AsFd, FromRawFd, OwnedFd};
        let mut name = [0 as libc::c_char; 64];
        // SAFETY: plain libc calls on a pty master we own; ptsname_r
        // writes at most `name.len()` bytes, NUL-terminated.
        let master = unsafe {
            let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(m >= 0 && libc::grantpt(m) == 0 && libc::unlockpt(m) == 0);
            assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
            OwnedFd::from_raw_fd(m)
        };
        // SAFETY: NUL-terminated by ptsname_r.
        let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
        let slave = rustix::fs::open(
            name,
            OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let line = [b'x'; 1024];
        // Far more than a pty buffers (a few KiB to 64 KiB).
        for _ in 0..1024 {
            console(slave.as_fd(), &line);
        }
        assert!(STUCK.load(Ordering::Relaxed));
        // Drain: the pty frees room as its buffers are handed over.
        let mut buf = vec![0u8; 1 << 16];
        let ts = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        loop {
            let mut p = [PollFd::new(&master, PollFlags::IN)];
            if rustix::event::poll(&mut p, Some(&ts)) != Ok(1) {
                break;
            }
            let _ = rustix::io::read(&master, &mut buf);
        }
        console(slave.as_fd(), b"again\n");
        assert!(!STUCK.load(Ordering::Relaxed));
    }

    #[test]
    fn a_line_is_one_line_without_terminal_controls() {
        assert_eq!(
            one_line("update /mnt/\x1b[2Jx\r.fwi refused:\nbad"),
            "update /mnt/?[2Jx?.fwi refused: / bad"
        );
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
    }
}
