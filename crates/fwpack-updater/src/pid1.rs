//! Being PID 1: the pseudo filesystems, a console on fds 0–2, signals
//! through a signalfd, reaping children, and the one way out — reboot,
//! halt or power off. PID 1 must never exit (the kernel panics), so
//! [`finish`] never returns and a panic is routed to it as well.

use std::ffi::OsString;
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

/// Mounts a pseudo filesystem `fstype` at `target` (no flags beyond
/// nosuid/nodev/noexec); one already there is fine.
pub fn mount_fs(src: &str, target: &str, fstype: &str) -> Result<(), String> {
    mount(
        src,
        target,
        fstype,
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        c"",
    )
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
///
/// Non-blocking, as is a configured console ([`attach_tty`]): log lines
/// must not hang PID 1 on a console that takes no more (`log::console`);
/// [`crate::switchroot`] makes it blocking again for the slot's init.
fn attach_console(console: &str, or_null: bool) -> Result<(), String> {
    let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd: OwnedFd = match rustix::fs::open(console, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if !or_null => return Err(format!("opening {console}: {e}")),
        Err(_) => rustix::fs::open("/dev/null", flags, Mode::empty())
            .map_err(|e| format!("opening {console} and /dev/null: {e}"))?,
    };
    dup_to_stdio(&fd)
}

/// Makes `console` (the `console` setting) fds 0–2, if it is a terminal.
///
/// Whoever sets the console could otherwise name a disk, and every log
/// line would be written over its first sectors, or `/dev/watchdog`, which
/// an open arms. So nothing is opened for reading or writing before the
/// node is known to be a terminal: an `O_PATH|O_NOFOLLOW` open (no driver
/// code runs, a symlink is refused), `fstat` for a character device, and
/// sysfs for its class: `/sys/dev/char/MAJ:MIN/subsystem` is the `tty`
/// class for serial ports, virtual consoles, `hvc`, ptys and
/// `/dev/console` alike, and for nothing else (disks are block devices,
/// `/dev/mem`, `/dev/kmsg` and the watchdog are other classes). Then the
/// same inode is opened through the `O_PATH` descriptor (no second path
/// lookup to race) with `O_NOCTTY|O_NONBLOCK` (a modem line without
/// carrier must not hang PID 1), and `TCGETS` confirms a terminal driver
/// answers. It stays non-blocking, like `/dev/console` ([`attach_console`]).
pub fn attach_tty(console: &str) -> Result<(), String> {
    use rustix::fs::FileType;
    let path = rustix::fs::open(
        console,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening {console}: {e}"))?;
    let st = rustix::fs::fstat(&path).map_err(|e| format!("{console}: {e}"))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::CharacterDevice {
        return Err(format!("{console} is not a character device"));
    }
    let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
    let class = std::fs::read_link(format!("/sys/dev/char/{major}:{minor}/subsystem"));
    if !class.is_ok_and(|c| c.ends_with("tty")) {
        return Err(format!(
            "{console} (device {major}:{minor}) is not of the tty class"
        ));
    }
    let fd = rustix::fs::open(
        format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&path)),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening {console}: {e}"))?;
    rustix::termios::tcgetattr(&fd).map_err(|e| format!("{console} is not a terminal: {e}"))?;
    dup_to_stdio(&fd)
}

fn dup_to_stdio(fd: &OwnedFd) -> Result<(), String> {
    rustix::stdio::dup2_stdin(fd.as_fd()).map_err(|e| e.to_string())?;
    rustix::stdio::dup2_stdout(fd.as_fd()).map_err(|e| e.to_string())?;
    rustix::stdio::dup2_stderr(fd.as_fd()).map_err(|e| e.to_string())
}

/// What the kernel gives every init (`HOME=/ TERM=linux`): the base of
/// PID 1's own environment and of its init's.
const BASE_ENV: [(&str, &str); 2] = [("HOME", "/"), ("TERM", "linux")];

/// Empties PID 1's environment and sets [`BASE_ENV`]; returns what the
/// kernel put there. Besides `HOME` and `TERM`, that is every `KEY=value`
/// word of the kernel command line the kernel does not know (`TERM=`
/// included), so whoever edits the command line would otherwise set
/// `FWPACK_BOOT_RECORD` (the running-slot check of every apply) or any
/// other variable a library reads. Called first, while PID 1 has a single
/// thread.
pub fn take_environment() -> Vec<(OsString, OsString)> {
    let kernel: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (k, _) in &kernel {
        std::env::remove_var(k);
    }
    for (k, v) in BASE_ENV {
        std::env::set_var(k, v);
    }
    kernel
}

/// The environment of the slot's init: [`BASE_ENV`], then the variables
/// of `kernel` that `names` (the `init_env` setting) lists.
pub fn init_env(kernel: &[(OsString, OsString)], names: &[String]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = BASE_ENV
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
    for (k, v) in kernel {
        if names.iter().any(|n| k == n.as_str()) {
            env.retain(|(b, _)| b != k);
            env.push((k.clone(), v.clone()));
        }
    }
    env
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

    #[test]
    fn init_env_is_the_base_plus_named_kernel_variables() {
        let kernel: Vec<(OsString, OsString)> = [
            ("HOME", "/"),
            ("TERM", "vt100"),
            ("FWPACK_BOOT_RECORD", "/x"),
            ("LANG", "C.UTF-8"),
        ]
        .iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let env = init_env(&kernel, &[]);
        assert_eq!(
            env,
            [("HOME".into(), "/".into()), ("TERM".into(), "linux".into())]
        );
        let env = init_env(&kernel, &["LANG".into(), "TERM".into()]);
        assert_eq!(
            env,
            [
                ("HOME".into(), "/".into()),
                ("TERM".into(), "vt100".into()),
                ("LANG".into(), "C.UTF-8".into())
            ]
        );
    }

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
