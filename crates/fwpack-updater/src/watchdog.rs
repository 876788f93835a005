//! The hardware watchdog (`watchdog` in updater.conf, e.g.
//! /dev/watchdog0, with `watchdog_timeout`). PID 1 arms it while it
//! applies an update (pinging on every engine event) and before it boots
//! a trial slot. For the trial it is left running: the descriptor closes
//! on exec (switch_root) or stays with the old kernel (kexec) without the
//! magic 'V', so the driver keeps counting and the slot's own init must
//! take over the pinging (systemd `RuntimeWatchdogSec=`, busybox
//! `watchdog`). A trial slot that hangs before that resets the board, and
//! the next boot finds the try already counted (it is written before the
//! slot is booted). mark-good needs no change: a slot that confirms
//! itself also pings, or it would not be running.
//!
//! A missing device is a console line, not an error: the board may not
//! have one, and booting matters more.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;

use crate::config::Config;

pub struct Watchdog {
    file: File,
}

impl Watchdog {
    /// Opens (which starts) the configured watchdog and sets its timeout;
    /// `None` when none is configured or it cannot be opened.
    pub fn arm(cfg: &Config, why: &str) -> Option<Watchdog> {
        let path = cfg.watchdog.as_deref()?;
        // O_CLOEXEC (std's default): the slot's init must be able to open
        // it itself, and a watchdog has one opener at a time.
        let file = match std::fs::OpenOptions::new().write(true).open(path) {
            Ok(f) => f,
            Err(e) => {
                log!("watchdog {}: {e}; going on without it", path.display());
                return None;
            }
        };
        let want = u32::try_from(cfg.watchdog_timeout.as_secs()).unwrap_or(u32::MAX);
        match crate::sys::watchdog_set_timeout(file.as_fd(), want) {
            Ok(got) => log!("watchdog {} armed ({got} s) {why}", path.display()),
            Err(e) => log!(
                "watchdog {} armed {why}; setting its timeout to {want} s: {e} (the driver's default applies)",
                path.display()
            ),
        }
        let mut w = Watchdog { file };
        w.ping();
        Some(w)
    }

    pub fn ping(&mut self) {
        // Any byte but 'V' is a keepalive.
        let _ = self.file.write_all(b"\0");
    }

    /// Stops it (the magic close), for when nothing risky follows.
    pub fn disarm(mut self) {
        if self.file.write_all(b"V").is_err() {
            log!("watchdog: the magic close failed; it keeps running");
        }
    }
}
