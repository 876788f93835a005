//! The running system downloads its update over HTTP and survives a power
//! cut mid-download (QEMU TCG, Debian's cloud-amd64 kernel, NVMe disk,
//! virtio-net on a user network that reaches only the test's nginx on the
//! host's loopback — see testkit::guestnet).
//!
//! Slot A's init brings eth0 up (10.0.2.15/24) and runs the slot's own
//! `/usr/bin/fwpack-updater apply http://10.0.2.100:8080/u2.fwi --json`
//! (the network build; the bootstrap in the initramfs has no HTTP client).
//! QEMU is SIGKILLed once the updater reports a durable checkpoint; the
//! next boot is slot A again (B is only `updating`), whose init re-runs
//! the command, which must resume with a `Range` request at the chunk
//! after the checkpoint (asserted from nginx's access log) and make B
//! pending; the boot after that is B, which confirms itself.

mod qemu_support;

use std::io::Cursor;
use std::path::Path;
use std::time::Duration;

use fwimage::Compression;
use qemu_support::*;
use testkit::guestnet::{self, SERVER_ADDR, SERVER_PORT};
use testkit::http::Nginx;
use testkit::kernels::{self, Arch, Kernel};
use testkit::qemu::{Console, Qemu};
use updater::SlotRange;

const ARCH: Arch = Arch::X86_64;
const WAIT: Duration = Duration::from_secs(120);
/// The download at `RATE` takes about 20 s: room to cut it after the first
/// checkpoint (32 MiB, the updater's default interval) and before the end.
const DOWNLOAD_WAIT: Duration = Duration::from_secs(300);
const RATE: u64 = 2 * MIB;
const BIG_A: SlotRange = SlotRange {
    offset: 8 * MIB,
    size: 48 * MIB,
};
const BIG_B: SlotRange = SlotRange {
    offset: 56 * MIB,
    size: 48 * MIB,
};
const BIG_DISK: u64 = 105 * MIB;
/// Slot B's root filesystem: 44 MiB, 32 MiB of it a random blob (the
/// image is uncompressed, so stored offsets are raw offsets + data offset).
const B_ROOTFS: u64 = 44 * MIB;
const B_BLOB: usize = 32 * MIB as usize;

fn config() -> String {
    "# fwpack-updater download test configuration\n\
     target = /dev/nvme0n1\n\
     modules = /etc/fwpack/modules.load\n\
     keys = /etc/fwpack/keys\n\
     images = /images\n\
     device_timeout = 30\n\
     on_failure = poweroff\n\
     root_group = system\n\
     root_fstype = ext4\n\
     tries = 3\n"
        .to_string()
}

/// Deterministic incompressible bytes.
fn blob(len: usize) -> Vec<u8> {
    let mut r = testkit::rootfs::SplitMix64(0xb10b);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
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

/// The number after `offset` in a checkpoint line, whichever way the
/// updater spells it (`"offset":N` or `offset: N`).
fn offset_in(line: &str) -> Option<u64> {
    let at = line.find("offset")? + "offset".len();
    line[at..]
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn download_is_cut_by_a_power_loss_then_resumes_and_b_boots() {
    if !tools_present(ARCH) || !testkit::tools::require("nginx") {
        return;
    }
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    let net_init = testkit::program::build_static("fwpack-net-init", &net_init_source(), ARCH)
        .expect("building slot A's init");
    let url = format!("http://{SERVER_ADDR}:{SERVER_PORT}/u2.fwi");
    let download = [
        "apply",
        &url,
        "--target",
        "/dev/nvme0n1",
        "--key",
        "/etc/fwpack-test/key.pem",
        "--json",
    ]
    .join("\n");
    let key = public_pem();
    let slot_updater = std::fs::read(slot_updater_binary(ARCH)).unwrap();
    let root_a = rootfs_with(
        w,
        "root-a",
        1,
        false,
        &net_init,
        &[
            ("etc/fwpack-test/key.pem", key.as_bytes(), 0o644),
            ("etc/fwpack-test/download", download.as_bytes(), 0o644),
            ("usr/bin/fwpack-updater", &slot_updater, 0o755),
        ],
        ROOTFS_SIZE,
    );
    let big = blob(B_BLOB);
    let root_b = rootfs_with(
        w,
        "root-b",
        2,
        true,
        &test_init(ARCH),
        &[("data/blob", &big, 0o644)],
        B_ROOTFS,
    );
    let a = image(&root_a, 1);
    let b = image_with(&root_b, 2, Compression::None);
    let head = fwimage::ImageHead::read(Cursor::new(&b), b.len() as u64).unwrap();
    let data_offset = head.segments[0].data_offset;
    let disk = disk_with(w, false, &a, [BIG_A, BIG_B], BIG_DISK);
    let initrd = initramfs(
        w,
        ARCH,
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
    let mut nginx = Nginx::start_limited(&www, Some(RATE)).unwrap();
    let net = guestnet::loopback_forward(nginx.port()).unwrap();

    // Boot 1: slot A starts the download; power cut after a checkpoint.
    let mut c = boot(&kernel, &initrd, &disk, &net, "x86-download-1");
    let lines = expect(
        &mut c,
        &[
            "booting slot A",
            "FWPACK-NET booted version 1",
            "FWPACK-NET eth0 up",
            "FWPACK-NET probe: HTTP/1.1 404",
            "FWPACK-NET running fwpack-updater apply",
        ],
        WAIT,
    );
    drop(lines);
    let checkpoint = match c.wait_for("heckpoint", DOWNLOAD_WAIT) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    // SIGKILL: the guest loses its RAM, the disk keeps what was written.
    drop(c);
    let off = offset_in(&checkpoint)
        .unwrap_or_else(|| panic!("no offset in the checkpoint line: {checkpoint}"));
    assert!(off > 0 && off < B_ROOTFS, "{checkpoint}");
    let st = status_json(&disk);
    assert!(
        st.contains("\"pending\":null") && st.contains("\"active\":\"A\""),
        "a cut download must not be pending: {st}"
    );
    let x = data_offset + off;

    // Boot 2: slot A again; its init re-runs the command, which resumes.
    // (Restarted first: the cut request is then logged or lost, never
    // counted as boot 2's.)
    nginx.set_limit_rate(None);
    nginx.restart().unwrap();
    let first = nginx.access_log();
    let mut c = boot(&kernel, &initrd, &disk, &net, "x86-download-2");
    expect(
        &mut c,
        &[
            "booting slot A",
            "FWPACK-NET eth0 up",
            "FWPACK-NET running fwpack-updater apply",
        ],
        WAIT,
    );
    expect(&mut c, &["FWPACK-NET apply exit 0"], DOWNLOAD_WAIT);
    expect_exit(&mut c, WAIT);
    let log = nginx.access_log();
    let second = log.get(first.len()..).unwrap_or_default();
    assert!(
        second
            .iter()
            .any(|e| e.path() == "/u2.fwi" && e.status == 206 && e.range_starts() == [x]),
        "boot 2 made no 206 request from the checkpoint (Range: bytes={x}-): {second:?}\nboot 1: {first:?}"
    );
    let fetched: u64 = second
        .iter()
        .filter(|e| e.path() == "/u2.fwi")
        .map(|e| e.body_bytes_sent)
        .sum();
    let head_len = data_offset;
    assert!(
        fetched <= b.len() as u64 - x + head_len,
        "boot 2 fetched {fetched} bytes; after the checkpoint there are {}",
        b.len() as u64 - x
    );
    let st = status_json(&disk);
    assert!(st.contains("\"pending\":\"B\""), "{st}");

    // Boot 3: B boots and confirms.
    let mut c = boot(&kernel, &initrd, &disk, &net, "x86-download-3");
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
}

#[test]
fn checkpoint_offsets_parse_both_spellings() {
    assert_eq!(
        offset_in(r#"{"event":"checkpoint","segment":0,"offset":33554432,"done":1}"#),
        Some(33554432)
    );
    assert_eq!(
        offset_in(
            r#"{"event":"info","message":"Checkpoint { segment: 0, offset: 4096, done: 4096 }"}"#
        ),
        Some(4096)
    );
    assert_eq!(offset_in("nothing"), None);
}
