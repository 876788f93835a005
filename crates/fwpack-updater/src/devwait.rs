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
pub fn wait(
    spec: &DeviceSpec,
    timeout: Duration,
    signals: &mut Signals,
) -> Result<PathBuf, String> {
    wait_counting(spec, timeout, signals).map(|(p, _)| p)
}

/// [`wait`], also returning how many block uevents woke it.
fn wait_counting(
    spec: &DeviceSpec,
    timeout: Duration,
    signals: &mut Signals,
) -> Result<(PathBuf, usize), String> {
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
            return Ok((p, events));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn losetup() -> Option<std::path::PathBuf> {
        ["/usr/sbin/losetup", "/sbin/losetup"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists())
    }

    /// A device that appears while we wait is found through its uevent.
    /// Needs root and loop devices (CI runs as root); skips otherwise.
    #[test]
    fn finds_a_device_that_appears_while_waiting() {
        let mkfs = std::path::Path::new("/usr/sbin/mkfs.ext4");
        let (Some(losetup), true, true) = (
            losetup(),
            rustix::process::geteuid().is_root(),
            std::path::Path::new("/dev/loop-control").exists() && mkfs.exists(),
        ) else {
            eprintln!("SKIPPED: needs root, /dev/loop-control, losetup and mkfs.ext4");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let label = format!("fwpk{}", std::process::id() % 1_000_000);
        assert!(Command::new(mkfs)
            .args(["-q", "-F", "-L", &label])
            .arg(&img)
            .status()
            .unwrap()
            .success());
        let spec = DeviceSpec::Label(label);
        assert!(blkid::resolve(&spec).is_none(), "label already present");
        let attach = std::thread::spawn(move || {
            // Attach only once the waiter is (very likely) blocked in poll.
            std::thread::sleep(Duration::from_millis(300));
            let out = Command::new(losetup)
                .args(["-f", "--show"])
                .arg(&img)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        });
        let r = wait_counting(&spec, Duration::from_secs(20), &mut Signals::none());
        let dev = attach.join().unwrap();
        if !dev.is_empty() {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
        }
        if dev.is_empty() {
            eprintln!("SKIPPED: losetup could not attach a loop device here");
            return;
        }
        let (found, events) = r.unwrap();
        assert_eq!(found, std::path::PathBuf::from(&dev));
        assert!(
            events >= 1,
            "found without any block uevent: the netlink path was not exercised"
        );
    }

    #[test]
    fn timeout_names_what_is_there() {
        let spec = DeviceSpec::Label("no-such-label-fwpk".into());
        let t = std::time::Instant::now();
        let e = wait(&spec, Duration::from_secs(1), &mut Signals::none()).unwrap_err();
        assert!(t.elapsed() >= Duration::from_secs(1) && t.elapsed() < Duration::from_secs(10));
        assert!(e.contains("did not appear within 1 s"), "{e}");
    }
}
