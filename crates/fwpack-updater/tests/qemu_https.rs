//! HTTPS on the device: the TLS build of fwpack-updater (board option
//! `updater.tls`) is PID 1 of the initramfs and, copied to /run/fwpack,
//! the command the running system applies an `https://` update with.
//!
//! QEMU TCG, Debian's cloud-amd64 kernel, NVMe disk, virtio-net on a user
//! network that reaches only the test's nginx on the host's loopback
//! (testkit::guestnet). nginx serves TLS with a certificate for the
//! guest-side server address, issued by a private CA the test makes with
//! openssl; the CA certificate is a file of slot A's root filesystem,
//! named with `--ca`. Slot A's init runs `fwpack-updater apply
//! https://10.0.2.100:8080/u2.fwi --ca … --json`; B becomes pending, the
//! next boot is B, which confirms itself.
//!
//! The console lines carry the boot-to-apply time (QEMU start to the
//! updater's exit), printed, not asserted: docs/BENCHMARKS.md has the
//! figures against the plain build.

mod qemu_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qemu_support::*;
use testkit::guestnet::{self, SERVER_ADDR, SERVER_PORT};
use testkit::http::Nginx;
use testkit::kernels::{self, Arch, Kernel};
use testkit::qemu::{Console, Qemu};
use testkit::tls::{self, PrivateCa};

const ARCH: Arch = Arch::X86_64;
const WAIT: Duration = Duration::from_secs(120);
const APPLY_WAIT: Duration = Duration::from_secs(300);

fn config() -> String {
    "# fwpack-updater HTTPS test configuration\n\
     target = /dev/nvme0n1\n\
     modules = /etc/fwpack/modules.load\n\
     keys = /etc/fwpack/keys\n\
     device_timeout = 30\n\
     on_failure = poweroff\n\
     root_group = system\n\
     root_fstype = ext4\n\
     tries = 3\n"
        .to_string()
}

/// A private CA and a server certificate it issued for the address the
/// guest connects to: `(ca.pem, server chain, server key)`.
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = PrivateCa::new(dir).unwrap();
    let server = ca
        .issue("server", &[SERVER_ADDR, "127.0.0.1"], tls::EC_P256)
        .unwrap();
    (ca.cert(), server.cert, server.key)
}

fn boot(k: &Kernel, initrd: &Path, disk: &Path, net: &[String], name: &str) -> Console {
    let mut q = Qemu::new(ARCH, &k.vmlinuz)
        .initrd(initrd)
        .memory(512)
        .name(name);
    q.extra_args = vec![
        "-drive".into(),
        format!("if=none,id=d,file={},format=raw,cache=none", disk.display()),
        "-device".into(),
        "nvme,drive=d,serial=fwpack".into(),
    ];
    q.extra_args.extend(net.iter().cloned());
    q.spawn().expect("starting QEMU")
}

#[test]
fn field_tls_device_updater_applies_an_https_update_and_b_boots() {
    if !tools_present(ARCH)
        || !testkit::tools::require("nginx")
        || !testkit::tools::require("openssl")
    {
        return;
    }
    let t = scenario(true);
    eprintln!(
        "boot-to-apply (TLS updater, https): {:.1} s",
        t.as_secs_f64()
    );
}

/// Not a test: the boot-to-apply time of the TLS build over https against
/// the plain build over http, same image, same guest (docs/BENCHMARKS.md).
/// `cargo test -p fwpack-updater --test qemu_https -- --ignored --nocapture`
#[test]
#[ignore]
fn boot_to_apply_tls_against_plain() {
    if !tools_present(ARCH)
        || !testkit::tools::require("nginx")
        || !testkit::tools::require("openssl")
    {
        return;
    }
    for _ in 0..2 {
        let plain = scenario(false);
        let tls = scenario(true);
        eprintln!(
            "boot-to-apply: plain/http {:.1} s, TLS/https {:.1} s",
            plain.as_secs_f64(),
            tls.as_secs_f64()
        );
    }
}

/// Slot A applies the update from nginx (TLS build over https with
/// `--ca`, or the plain build over http), B boots and confirms. Returns
/// the time from starting QEMU to the updater's exit.
fn scenario(tls: bool) -> Duration {
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let pki = w.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let (ca, cert, key) = private_ca(&pki);

    // The bootstrap with the network client (board option
    // `updater.bootstrap_net`; with `tls` for https): the running system
    // uses its copy in /run/fwpack, as a root filesystem without an
    // updater of its own does.
    let updater = if tls {
        tls_updater_binary(ARCH)
    } else {
        slot_updater_binary(ARCH)
    };
    eprintln!(
        "updater ({ARCH:?}, tls {tls}): {} bytes",
        std::fs::metadata(&updater).unwrap().len()
    );
    let net_init = testkit::program::build_static("fwpack-net-init", &net_init_source(), ARCH)
        .expect("building slot A's init");
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://{SERVER_ADDR}:{SERVER_PORT}/u2.fwi");
    let mut download = vec![
        "apply",
        &url,
        "--target",
        "/dev/nvme0n1",
        "--key",
        "/etc/fwpack-test/key.pem",
        "--json",
    ];
    if tls {
        download.extend(["--ca", "/etc/fwpack-test/ca.pem"]);
    }
    let download = download.join("\n");
    let pem = public_pem();
    let ca_pem = std::fs::read(&ca).unwrap();
    let root_a = rootfs_with(
        w,
        "root-a",
        1,
        false,
        &net_init,
        &[
            ("etc/fwpack-test/key.pem", pem.as_bytes(), 0o644),
            ("etc/fwpack-test/ca.pem", &ca_pem, 0o644),
            ("etc/fwpack-test/download", download.as_bytes(), 0o644),
        ],
        ROOTFS_SIZE,
    );
    let root_b = rootfs(w, ARCH, "root-b", 2, true);
    let a = image(&root_a, 1);
    let b = image(&root_b, 2);
    let disk = disk(w, false, &a);
    let initrd = initramfs_with_updater(
        w,
        &updater,
        &config(),
        &[],
        Some((
            &kernel,
            &[
                "loop",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net",
            ],
        )),
    );
    let www = w.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("u2.fwi"), &b).unwrap();
    let nginx = if tls {
        Nginx::start_tls(&www, &cert, &key).unwrap()
    } else {
        Nginx::start(&www).unwrap()
    };
    let net = guestnet::loopback_forward(nginx.port()).unwrap();

    // Boot 1: slot A; its init applies the https:// update.
    let started = Instant::now();
    let mut c = boot(&kernel, &initrd, &disk, &net, &format!("x86-{scheme}-1"));
    expect(
        &mut c,
        &[
            "booting slot A",
            "FWPACK-NET booted version 1",
            "FWPACK-NET eth0 up",
            // 404 (no /probe); plain HTTP to the TLS port: 400.
            "FWPACK-NET probe: HTTP/1.1 4",
            "FWPACK-NET running fwpack-updater apply",
        ],
        WAIT,
    );
    let exit = expect(&mut c, &["FWPACK-NET apply exit "], APPLY_WAIT).remove(0);
    let elapsed = started.elapsed();
    let console = c.lines();
    assert!(
        exit.contains("apply exit 0"),
        "the updater failed (tls {tls}): {exit}\n{}",
        c.tail(40)
    );
    assert!(
        console.iter().any(|l| l.contains("\"event\":\"result\"")),
        "no result line: {}",
        c.tail(40)
    );
    expect_exit(&mut c, WAIT);
    // The image came over TLS from our nginx (chunks slot A already holds
    // are copied from it, so not every byte).
    let log = nginx.access_log();
    assert!(
        log.iter().any(|e| e.path() == "/u2.fwi"
            && matches!(e.status, 200 | 206)
            && e.body_bytes_sent > 0),
        "{log:?}"
    );
    let st = status_json(&disk);
    assert!(st.contains("\"pending\":\"B\""), "{st}");

    // Boot 2: B boots and confirms.
    let mut c = boot(&kernel, &initrd, &disk, &net, &format!("x86-{scheme}-2"));
    expect(
        &mut c,
        &[
            "booting slot B (version 2 v2)",
            "FWPACK-TEST booted slot B version 2",
            "slot B (version 2) confirmed",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let st = status_json(&disk);
    assert!(
        st.contains("\"active\":\"B\"") && st.contains("\"confirmed\":true"),
        "{st}"
    );
    elapsed
}
