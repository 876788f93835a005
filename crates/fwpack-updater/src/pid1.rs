//! Being PID 1: the pseudo filesystems, a console on fds 0–2, signals
//! through a signalfd, reaping children, and the one way out — reboot,
//! halt or power off. PID 1 must never exit (the kernel panics), so
//! [`finish`] never returns and a panic is routed to it as well.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use rustix::mount::MountFlags;
use rustix::process::WaitOptions;

use crate::config::Action;
use crate::log;
use crate::sys;

/// What to do if we panic (set once the configuration is known).
static PANIC_ACTION: AtomicU8 = AtomicU8::new(0);

fn action_code(a: Action) -> u8 {
    match a {
        Action::Reboot => 0,
        Action::Halt => 1,
        Action::PowerOff => 2,
    }
}

fn action_from_code(c: u8) -> Action {
    match c {
        1 => Action::Halt,
        2 => Action::PowerOff,
        _ => Action::Reboot,
    }
}

pub fn set_panic_action(a: Action) {
    PANIC_ACTION.store(action_code(a), Ordering::Relaxed);
}

fn mkdir(path: &str) {
    let _ = rustix::fs::mkdir(path, Mode::from_raw_mode(0o755));
}

fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MountFlags,
    data: &std::ffi::CStr,
) -> Result<(), String> {
    mkdir(target);
    match rustix::mount::mount(src, target, fstype, flags, data) {
        Ok(()) => Ok(()),
        // Already there (a kernel with CONFIG_DEVTMPFS_MOUNT, or a rerun).
        Err(rustix::io::Errno::BUSY) => Ok(()),
        Err(e) => Err(format!("mounting {fstype} on {target}: {e}")),
    }
}

/// Opens `console` onto fds 0, 1 and 2 (with `or_null`, /dev/null if the
/// console cannot be opened, so that later files never land on fds 0–2).
/// The kernel already did this if the initramfs has /dev/console; doing
/// it again after devtmpfs is mounted covers images without the node.
pub fn attach_console(console: &str, or_null: bool) -> Result<(), String> {
    let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd: OwnedFd = match rustix::fs::open(console, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if !or_null => return Err(format!("opening {console}: {e}")),
        Err(_) => rustix::fs::open("/dev/null", flags, Mode::empty())
            .map_err(|e| format!("opening {console} and /dev/null: {e}"))?,
    };
    rustix::stdio::dup2_stdin(fd.as_fd()).map_err(|e| e.to_string())?;
    rustix::stdio::dup2_stdout(fd.as_fd()).map_err(|e| e.to_string())?;
    rustix::stdio::dup2_stderr(fd.as_fd()).map_err(|e| e.to_string())?;
    Ok(())
}

/// PID 1's signal handling: everything interesting arrives on a signalfd.
pub struct Signals {
    fd: Option<OwnedFd>,
    /// A shutdown request not yet acted on.
    requested: Option<Action>,
}

impl Signals {
    /// No signal handling (a command, or a test on the host).
    #[cfg(test)]
    pub fn none() -> Signals {
        Signals {
            fd: None,
            requested: None,
        }
    }

    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    /// Drains queued signals: reaps children, remembers shutdown requests.
    /// Returns the pending request, if any (it stays pending).
    pub fn poll(&mut self) -> Option<Action> {
        if let Some(fd) = &self.fd {
            while let Some(sig) = sys::read_signal(fd.as_fd()) {
                let req = match sig as i32 {
                    libc::SIGCHLD => {
                        reap();
                        None
                    }
                    // The conventions of sysvinit and busybox init.
                    libc::SIGTERM | libc::SIGINT => Some(Action::Reboot),
                    libc::SIGUSR1 => Some(Action::Halt),
                    libc::SIGPWR | libc::SIGUSR2 => Some(Action::PowerOff),
                    _ => None,
                };
                if let Some(r) = req {
                    if self.requested.is_none() {
                        log!("signal {sig} received: {} requested", r.name());
                    }
                    self.requested.get_or_insert(r);
                }
            }
        }
        // Children can exit without our signal being queued (e.g. when
        // one SIGCHLD stands for several); reaping is cheap.
        reap();
        self.requested
    }

    /// Acts on a pending shutdown request, if there is one.
    pub fn act_on_request(&mut self) {
        if let Some(a) = self.poll() {
            log!("shutting down on request");
            finish(a);
        }
    }
}

/// Reaps every exited child (orphans are re-parented to PID 1).
fn reap() {
    while let Ok(Some(_)) = rustix::process::waitpid(None, WaitOptions::NOHANG) {}
}

/// Sets up everything PID 1 needs before it can log. Returns problems to
/// report once logging works (none of them stops the boot by itself).
pub fn setup(console: &str) -> (Signals, Vec<String>) {
    let mut problems = Vec::new();
    rustix::process::umask(Mode::from_raw_mode(0o022));
    let nosuid = MountFlags::NOSUID;
    let quiet = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    for (src, target, fstype, flags, data) in [
        ("devtmpfs", "/dev", "devtmpfs", nosuid, c"mode=0755"),
        ("proc", "/proc", "proc", quiet, c""),
        ("sysfs", "/sys", "sysfs", quiet, c""),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            c"mode=0755",
        ),
    ] {
        if let Err(e) = mount(src, target, fstype, flags, data) {
            problems.push(e);
        }
    }
    if let Err(e) = attach_console(console, true) {
        problems.push(format!("no console: {e}"));
    }
    let _ = rustix::process::chdir("/");
    log::init();
    std::panic::set_hook(Box::new(|info| {
        log!("internal error: {info}");
        finish(action_from_code(PANIC_ACTION.load(Ordering::Relaxed)));
    }));
    let fd = match sys::block_and_signalfd() {
        Ok(fd) => Some(fd),
        Err(e) => {
            problems.push(format!(
                "signalfd: {e}; signals keep their default (ignored for PID 1)"
            ));
            None
        }
    };
    // Ctrl-Alt-Del becomes SIGINT to us (an orderly reboot) instead of an
    // immediate restart.
    let _ = rustix::system::reboot(rustix::system::RebootCommand::CadOff);
    (
        Signals {
            fd,
            requested: None,
        },
        problems,
    )
}

/// The only way PID 1 ends: sync, then reboot / halt / power off. If the
/// kernel refuses, wait for signals forever (still reaping).
pub fn finish(action: Action) -> ! {
    rustix::fs::sync();
    let cmd = match action {
        Action::Reboot => rustix::system::RebootCommand::Restart,
        Action::Halt => rustix::system::RebootCommand::Halt,
        Action::PowerOff => rustix::system::RebootCommand::PowerOff,
    };
    log!("{}", action.name());
    if let Err(e) = rustix::system::reboot(cmd) {
        log!("{} failed: {e}; waiting forever", action.name());
    }
    park()
}

/// Reboots with an argument for the platform (Raspberry Pi: "0 tryboot").
pub fn reboot_with_arg(arg: &std::ffi::CStr) -> ! {
    rustix::fs::sync();
    log!("reboot with argument {arg:?}");
    let e = sys::reboot_with_arg(arg);
    log!("reboot with argument failed: {e}; plain reboot instead");
    finish(Action::Reboot)
}

fn park() -> ! {
    loop {
        reap();
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signals queue on the signalfd and map to the sysvinit/busybox
    /// conventions; SIGCHLD only reaps.
    #[test]
    fn signals_become_requests() {
        let fd = sys::block_and_signalfd().unwrap();
        let mut s = Signals {
            fd: Some(fd),
            requested: None,
        };
        assert_eq!(s.poll(), None);
        // SAFETY: raise() on our own thread, where the signal is blocked.
        unsafe { libc::raise(libc::SIGCHLD) };
        assert_eq!(s.poll(), None);
        unsafe { libc::raise(libc::SIGPWR) };
        assert_eq!(s.poll(), Some(Action::PowerOff));
        // The first request wins and stays pending.
        unsafe { libc::raise(libc::SIGTERM) };
        assert_eq!(s.poll(), Some(Action::PowerOff));
        let mut s = Signals {
            fd: s.fd.take(),
            requested: None,
        };
        unsafe { libc::raise(libc::SIGUSR1) };
        assert_eq!(s.poll(), Some(Action::Halt));
        sys::unblock_all();
    }
}
