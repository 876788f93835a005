//! Waiting for a block device: a NETLINK_KOBJECT_UEVENT socket is bound
//! *before* the first look, so a device that appears in between still
//! wakes us; every wake-up (uevent, signal, timeout) re-checks sysfs.
//! Without netlink (a kernel built without CONFIG_NET) it degrades to
//! re-checking every 100 ms, and says so.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{netlink, AddressFamily, RecvFlags, SocketFlags, SocketType};

use crate::blkid;
use crate::config::DeviceSpec;
use crate::pid1::Signals;

fn uevent_socket() -> std::io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        Some(netlink::KOBJECT_UEVENT),
    )?;
    // Group 1: the kernel's own uevents (not udev's re-broadcasts).
    rustix::net::bind(&fd, &netlink::SocketAddrNetlink::new(0, 1))?;
    Ok(fd)
}

/// Reads every queued uevent; returns how many mention a block device.
fn drain(fd: &OwnedFd) -> usize {
    let mut buf = [0u8; 8192];
    let mut block = 0;
    loop {
        match rustix::net::recv(fd, &mut buf[..], RecvFlags::DONTWAIT) {
            Ok((n, _)) => {
                let msg = buf.get(..n).unwrap_or_default();
                if msg.split(|&b| b == 0).any(|f| f == b"SUBSYSTEM=block") {
                    block += 1;
                }
            }
            // Overflow (ENOBUFS) only means we missed some: we re-check sysfs anyway.
            Err(rustix::io::Errno::NOBUFS) | Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return block,
        }
    }
}

/// Waits up to `timeout` for `spec` to resolve to a device node.
pub fn wait(spec: &DeviceSpec, timeout: Duration, signals: &mut Signals) -> Result<PathBuf, String> {
    let start = Instant::now();
    let sock = match uevent_socket() {
        Ok(s) => Some(s),
        Err(e) => {
            crate::log!("no uevent socket ({e}); re-checking for {spec} every 100 ms");
            None
        }
    };
    let mut events = 0usize;
    loop {
        if let Some(p) = blkid::resolve(spec) {
            crate::log!(
                "found {spec} at {} after {} ms ({events} block uevents)",
                p.display(),
                start.elapsed().as_millis()
            );
            return Ok(p);
        }
        signals.act_on_request();
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            let present: Vec<String> = blkid::block_devices().into_iter().map(|d| d.name).collect();
            return Err(format!(
                "{spec} did not appear within {} s (block devices present: {}); is its driver in the module list?",
                timeout.as_secs(),
                if present.is_empty() { "none".to_string() } else { present.join(" ") }
            ));
        }
        let wait = match sock {
            Some(_) => left,
            None => left.min(Duration::from_millis(100)),
        };
        let ts = Timespec {
            tv_sec: wait.as_secs() as _,
            tv_nsec: wait.subsec_nanos() as _,
        };
        let mut fds = Vec::with_capacity(2);
        if let Some(s) = &sock {
            fds.push(PollFd::new(s, PollFlags::IN));
        }
        let sigfd = signals.fd();
        if let Some(f) = &sigfd {
            fds.push(PollFd::new(f, PollFlags::IN));
        }
        if fds.is_empty() {
            std::thread::sleep(wait);
        } else {
            let _ = rustix::event::poll(&mut fds, Some(&ts));
        }
        drop(fds);
        if let Some(s) = &sock {
            events += drain(s);
        }
    }
}
