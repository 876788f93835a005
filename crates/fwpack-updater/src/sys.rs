//! The few system calls rustix does not wrap (signal masks, signalfd,
//! `reboot` with an argument, loop-device ioctls). All `unsafe` in the
//! binary lives here, each block next to the reason it is sound.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Signals PID 1 takes over: shutdown requests and child exits.
pub const HANDLED: [libc::c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGPWR,
    libc::SIGCHLD,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully
    // before sigaddset reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks [`HANDLED`] and returns a non-blocking signalfd that receives
/// them instead. Blocked signals queue, so none is lost between checks.
pub fn block_and_signalfd() -> io::Result<OwnedFd> {
    let set = sigset(&HANDLED);
    // SAFETY: `set` is initialised; the old mask is not requested.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: -1 asks for a new descriptor; `set` is initialised.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Unblocks every signal: a signal mask survives `execve`, and the next
/// init must not inherit ours.
pub fn unblock_all() {
    let set = sigset(&[]);
    // SAFETY: `set` is initialised (empty).
    unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Reads one queued signal number from a signalfd; `None` when none is queued.
pub fn read_signal(fd: BorrowedFd<'_>) -> Option<u32> {
    let mut info = std::mem::MaybeUninit::<libc::signalfd_siginfo>::uninit();
    let len = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: the buffer is exactly one signalfd_siginfo; the kernel
    // writes whole records only.
    let n = unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), len) };
    if n as usize != len {
        return None;
    }
    // SAFETY: a full record was written.
    Some(unsafe { info.assume_init() }.ssi_signo)
}

/// `reboot(LINUX_REBOOT_CMD_RESTART2, arg)`: restart, passing `arg` to the
/// platform's restart handler (the Raspberry Pi firmware driver reads a
/// partition number and the word `tryboot` from it). Returns only on error.
pub fn reboot_with_arg(arg: &CStr) -> io::Error {
    // SAFETY: the magic numbers and command are constants; `arg` is a valid
    // NUL-terminated string that outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_reboot,
            libc::LINUX_REBOOT_MAGIC1,
            libc::LINUX_REBOOT_MAGIC2,
            libc::LINUX_REBOOT_CMD_RESTART2,
            arg.as_ptr(),
        );
    }
    io::Error::last_os_error()
}

// <linux/loop.h>
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
pub const LO_FLAGS_READ_ONLY: u32 = 1;
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LoopInfo64 {
    pub lo_device: u64,
    pub lo_inode: u64,
    pub lo_rdevice: u64,
    pub lo_offset: u64,
    pub lo_sizelimit: u64,
    pub lo_number: u32,
    pub lo_encrypt_type: u32,
    pub lo_encrypt_key_size: u32,
    pub lo_flags: u32,
    pub lo_file_name: [u8; 64],
    pub lo_crypt_name: [u8; 64],
    pub lo_encrypt_key: [u8; 32],
    pub lo_init: [u64; 2],
}

impl LoopInfo64 {
    pub fn new(offset: u64, size: u64, flags: u32) -> Self {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: offset,
            lo_sizelimit: size,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        }
    }
}

/// `struct loop_config` (LOOP_CONFIGURE, Linux 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// LOOP_CTL_GET_FREE on /dev/loop-control: the number of a free loop device.
pub fn loop_get_free(control: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: this ioctl takes no argument.
    let n = check(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) })?;
    Ok(n as u32)
}

/// Attaches `backing` to the loop device in one step (LOOP_CONFIGURE).
pub fn loop_configure(
    dev: BorrowedFd<'_>,
    backing: BorrowedFd<'_>,
    info: &LoopInfo64,
) -> io::Result<()> {
    let cfg = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: *info,
        reserved: [0; 8],
    };
    // SAFETY: `cfg` is a fully initialised loop_config the kernel only reads.
    check(unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_CONFIGURE as _,
            &cfg as *const LoopConfig,
        )
    })?;
    Ok(())
}

/// The pre-5.8 way: LOOP_SET_FD, then LOOP_SET_STATUS64 (undone on failure).
pub fn loop_set_fd_and_status(
    dev: BorrowedFd<'_>,
    backing: BorrowedFd<'_>,
    info: &LoopInfo64,
) -> io::Result<()> {
    // SAFETY: LOOP_SET_FD takes the backing descriptor by value.
    check(unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_SET_FD as _,
            backing.as_raw_fd() as libc::c_ulong,
        )
    })?;
    // SAFETY: `info` is a fully initialised loop_info64 the kernel only reads.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_SET_STATUS64 as _,
            info as *const LoopInfo64,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _) };
        return Err(e);
    }
    Ok(())
}

/// WDIOC_SETTIMEOUT = _IOWR('W', 6, int).
const WDIOC_SETTIMEOUT: u32 = 0xC004_5706;

/// Sets a watchdog's timeout; returns the one the driver chose (it may
/// round, or clamp to what the hardware can count).
pub fn watchdog_set_timeout(wd: BorrowedFd<'_>, seconds: u32) -> io::Result<u32> {
    let mut t: libc::c_int = seconds.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: the kernel reads and writes one int through the pointer,
    // which points at a live local.
    check(unsafe {
        libc::ioctl(
            wd.as_raw_fd(),
            WDIOC_SETTIMEOUT as _,
            &mut t as *mut libc::c_int,
        )
    })?;
    Ok(t.max(0) as u32)
}
