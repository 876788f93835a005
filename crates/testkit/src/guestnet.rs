//! A network for QEMU guests that reaches one loopback server and nothing
//! else, and the guest side that brings an interface up.
//!
//! Host side ([`loopback_forward`]): QEMU user networking with
//! `restrict=on` (no guest packet is routed anywhere) and one `guestfwd`
//! rule: a TCP connection from the guest to `GUEST_IP:GUEST_PORT` is
//! handed to a small relay that connects to `127.0.0.1:<port>` — the relay
//! can reach nothing but loopback, so neither can the guest. The relay is
//! a per-connection `cmd:` forward, not a `tcp:` chardev: QEMU opens a
//! chardev once at start-up and gives every guest connection the same
//! stream, while an HTTP client opens a new connection per retry or range.
//!
//! Guest side ([`NETUP_RS`]): Rust source of a function for a static test
//! init (std + libc symbols only, see [`crate::program`]) that gives an
//! interface an IPv4 address and brings it up with the classic ioctls.

use std::path::PathBuf;

use crate::kernels::Arch;
use crate::Result;

/// The guest's address on QEMU's user network (its default guest address).
pub const GUEST_ADDR: &str = "10.0.2.15";
/// The address the guest connects to for the forwarded server.
pub const SERVER_ADDR: &str = "10.0.2.100";
pub const SERVER_PORT: u16 = 8080;

const RELAY: &str = r#"
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::io::FromRawFd;

// stdin/stdout are QEMU's end of one guest TCP connection.
fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
        std::process::exit(1);
    };
    let _ = server.set_nodelay(true);
    let Ok(mut up) = server.try_clone() else { std::process::exit(1) };
    std::thread::spawn(move || {
        let mut input = unsafe { std::fs::File::from_raw_fd(0) };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if up.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = up.shutdown(Shutdown::Write);
    });
    let mut down = server;
    let mut output = unsafe { std::fs::File::from_raw_fd(1) };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match down.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if output.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    std::process::exit(0);
}
"#;

/// The relay binary for this host (built once, cached).
pub fn relay() -> Result<PathBuf> {
    let host = if cfg!(target_arch = "aarch64") {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };
    crate::program::build_static("fwpack-loopback-relay", RELAY, host)
}

/// QEMU arguments for a virtio NIC on a restricted user network where
/// `SERVER_ADDR:SERVER_PORT` is `127.0.0.1:host_port` (and nothing else
/// exists).
pub fn loopback_forward(host_port: u16) -> Result<Vec<String>> {
    Ok(net_args(&relay()?, host_port))
}

fn net_args(relay: &std::path::Path, host_port: u16) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!(
            "user,id=n0,restrict=on,net=10.0.2.0/24,guestfwd=tcp:{SERVER_ADDR}:{SERVER_PORT}-cmd:{} {host_port}",
            relay.display()
        ),
        "-device".into(),
        "virtio-net-pci,netdev=n0".into(),
    ]
}

/// Guest-side Rust: `fn netup(ifname: &str, addr: [u8; 4], mask: [u8; 4])
/// -> Result<(), String>`, retrying for up to 20 s while the interface
/// does not exist yet (its driver may still be probing). Paste into a
/// test init's source.
pub const NETUP_RS: &str = r#"
extern "C" {
    fn socket(domain: i32, ty: i32, proto: i32) -> i32;
    fn ioctl(fd: i32, req: std::os::raw::c_ulong, ...) -> i32;
    fn close(fd: i32) -> i32;
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

fn ifreq(ifname: &str) -> IfReq {
    let mut r = IfReq { name: [0; 16], data: [0; 24] };
    let n = ifname.len().min(15);
    r.name[..n].copy_from_slice(&ifname.as_bytes()[..n]);
    r
}

fn sockaddr_in(r: &mut IfReq, a: [u8; 4]) {
    r.data = [0; 24];
    r.data[0] = 2; // AF_INET, little-endian sa_family
    r.data[4..8].copy_from_slice(&a);
}

fn netup(ifname: &str, addr: [u8; 4], mask: [u8; 4]) -> Result<(), String> {
    const SIOCGIFFLAGS: std::os::raw::c_ulong = 0x8913;
    const SIOCSIFFLAGS: std::os::raw::c_ulong = 0x8914;
    const SIOCSIFADDR: std::os::raw::c_ulong = 0x8916;
    const SIOCSIFNETMASK: std::os::raw::c_ulong = 0x891c;
    let fd = unsafe { socket(2, 2, 0) }; // AF_INET, SOCK_DGRAM
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    let call = |req, r: &mut IfReq, what: &str| {
        if unsafe { ioctl(fd, req, r as *mut IfReq) } < 0 {
            Err(format!("{what} {ifname}: {}", std::io::Error::last_os_error()))
        } else {
            Ok(())
        }
    };
    let mut waited = 0;
    let result = loop {
        let mut r = ifreq(ifname);
        match call(SIOCGIFFLAGS, &mut r, "SIOCGIFFLAGS") {
            Ok(()) => break Ok(()),
            Err(e) if waited >= 200 => break Err(e),
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                waited += 1;
            }
        }
    };
    let result = result.and_then(|()| {
        let mut r = ifreq(ifname);
        sockaddr_in(&mut r, addr);
        call(SIOCSIFADDR, &mut r, "SIOCSIFADDR")?;
        let mut r = ifreq(ifname);
        sockaddr_in(&mut r, mask);
        call(SIOCSIFNETMASK, &mut r, "SIOCSIFNETMASK")?;
        let mut r = ifreq(ifname);
        call(SIOCGIFFLAGS, &mut r, "SIOCGIFFLAGS")?;
        let flags = u16::from_ne_bytes([r.data[0], r.data[1]]) | 0x1 | 0x40; // IFF_UP | IFF_RUNNING
        r.data[..2].copy_from_slice(&flags.to_ne_bytes());
        call(SIOCSIFFLAGS, &mut r, "SIOCSIFFLAGS")
    });
    unsafe { close(fd) };
    result
}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};

    #[test]
    fn args_restrict_the_guest_to_one_forward() {
        let a = net_args(std::path::Path::new("/r/relay"), 4321).join(" ");
        assert_eq!(
            a,
            "-netdev user,id=n0,restrict=on,net=10.0.2.0/24,guestfwd=tcp:10.0.2.100:8080-cmd:/r/relay 4321 -device virtio-net-pci,netdev=n0"
        );
    }

    /// The relay carries a whole HTTP exchange between its stdio and a
    /// loopback server, the way QEMU drives it.
    #[test]
    fn relay_carries_a_connection_to_loopback() {
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let server = crate::http::FaultServer::start(crate::http::Fault::Sequence(vec![
            crate::http::Served::new(body.clone(), "e"),
        ]))
        .unwrap();
        let mut child = Command::new(relay().unwrap())
            .arg(server.port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(
                b"GET /x HTTP/1.1\r\nHost: g\r\nRange: bytes=100-\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
        let mut out = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        assert!(child.wait().unwrap().success());
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&out[..split]);
        assert!(head.starts_with("HTTP/1.1 206"), "{head}");
        assert_eq!(out[split + 4..], body[100..]);
    }

    #[test]
    fn netup_source_compiles_for_the_guests() {
        let src = format!("{NETUP_RS}\nfn main() {{ let _ = netup; }}\n");
        crate::program::build_static("fwpack-netup-check", &src, Arch::X86_64).unwrap();
    }
}
