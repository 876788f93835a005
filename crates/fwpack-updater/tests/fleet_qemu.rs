//! The whole fleet loop in QEMU (x86_64, TCG, Debian's cloud kernel, NVMe):
//! goosebit on the host's loopback, reached by the guest only through a
//! restricted user network's one `guestfwd` (testkit::guestnet). Slot A's
//! root filesystem runs its own fleet-enabled updater
//! (`/usr/bin/fwpack-updater`, the device build with `--features fleet`)
//! with `fleet --once` until the deployment published with `fwpack
//! publish` is installed and B is pending, then reboots; the bootstrap
//! boots B, whose init confirms it (`mark-good`) and polls until the
//! final status is sent; goosebit's API then shows the device finished on
//! the new version. The action id crosses the reboot in /data, a second
//! disk both slots mount.

mod goosebit_support;
mod qemu_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use goosebit_support::*;
use qemu_support::*;
use testkit::guestnet::{self, SERVER_ADDR, SERVER_PORT};
use testkit::kernels::{self, Arch, Kernel};
use testkit::qemu::{Console, Qemu};

const ARCH: Arch = Arch::X86_64;
const WAIT: Duration = Duration::from_secs(240);

/// The slots' init: /data mounted, network up, the slot confirmed when
/// its root filesystem says so, then `fleet --once` every second until
/// the slot is pending (reboot into it) or no action is left to report
/// (power off).
fn fleet_init_source() -> String {
    format!(
        r#"
use std::io::Write;
use std::process::Command;

extern "C" {{
    fn reboot(cmd: i32) -> i32;
    fn sync();
    fn mount(src: *const i8, target: *const i8, fstype: *const i8, flags: u64, data: *const u8) -> i32;
}}
const RB_POWER_OFF: i32 = 0x4321fedc;
const RB_AUTOBOOT: i32 = 0x01234567;
{netup}
fn say(s: &str) {{
    let mut out = std::io::stdout();
    let _ = writeln!(out, "FWPACK-FLEET {{}}", s);
    let _ = out.flush();
}}

fn main() {{
    let version = std::fs::read_to_string("/etc/fwpack-test/version").unwrap_or_default();
    say(&format!("booted version {{}}", version.trim()));
    let _ = std::fs::create_dir_all("/data");
    let rc = unsafe {{ mount(b"/dev/nvme1n1\0".as_ptr() as _, b"/data\0".as_ptr() as _, b"ext4\0".as_ptr() as _, 0, std::ptr::null()) }};
    say(&format!("mount /data: {{}}", if rc == 0 {{ "ok".to_string() }} else {{ std::io::Error::last_os_error().to_string() }}));
    let up = netup("eth0", [10, 0, 2, 15], [255, 255, 255, 0]);
    say(&format!("eth0: {{:?}}", up));
    let updater = "/usr/bin/fwpack-updater";
    if std::path::Path::new("/etc/fwpack-test/mark-good").exists() {{
        let st = Command::new(updater).arg("mark-good").status();
        say(&format!("mark-good: {{:?}}", st.map(|s| s.code())));
    }}
    let mut next = RB_POWER_OFF;
    for round in 0..300 {{
        let st = Command::new(updater).args(["fleet", "--once", "--config", "/etc/fwpack-test/fleet.conf"]).status();
        let status = Command::new(updater).args(["status", "--json"]).output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        let pending = status.contains("\"pending\":\"B\"") || status.contains("\"pending\":\"A\"");
        let action = std::path::Path::new("/data/fwpack/action").exists();
        say(&format!("round {{}}: fleet {{:?}}, pending {{}}, action file {{}}", round, st.map(|s| s.code()), pending, action));
        if pending {{ say("rebooting into the pending slot"); next = RB_AUTOBOOT; break; }}
        if round > 0 && !action && version.trim() == "2" {{ say("done"); break; }}
        std::thread::sleep(std::time::Duration::from_secs(1));
    }}
    if std::process::id() == 1 {{
        unsafe {{ sync(); reboot(next); }}
        loop {{ std::thread::park(); }}
    }}
}}
"#,
        netup = testkit::guestnet::NETUP_RS,
    )
}

/// The device build with the fleet client, in its own target directory
/// so it never replaces the plain build the bootstrap uses.
fn fleet_updater_binary() -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _g = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let target = triple(ARCH);
    let dir = testkit::target_dir().join("fleet");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "-p", "fwpack-updater", "--bin", "fwpack-updater"])
        .args([
            "--features",
            "fleet",
            "--profile",
            "device",
            "--target",
            target,
        ])
        .arg("--target-dir")
        .arg(&dir)
        .current_dir(testkit::workspace_root())
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "building the fleet fwpack-updater failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(target).join("device").join("fwpack-updater")
}

fn config() -> String {
    "target = /dev/nvme0n1\n\
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

fn boot(
    k: &Kernel,
    initrd: &Path,
    disk: &Path,
    data: &Path,
    net: &[String],
    name: &str,
) -> Console {
    let mut q = Qemu::new(ARCH, &k.vmlinuz)
        .initrd(initrd)
        .memory(512)
        .name(name);
    q.extra_args = vec![
        "-drive".into(),
        format!("if=none,id=d,file={},format=raw,cache=none", disk.display()),
        "-device".into(),
        "nvme,drive=d,serial=fwpack".into(),
        "-drive".into(),
        format!(
            "if=none,id=data,file={},format=raw,cache=none",
            data.display()
        ),
        "-device".into(),
        "nvme,drive=data,serial=data".into(),
    ];
    q.extra_args.extend(net.iter().cloned());
    q.spawn().expect("starting QEMU")
}

#[test]
fn fleet_qemu_x86_64_deployment_is_applied_rebooted_confirmed_and_finished_in_goosebit() {
    assert!(
        tools_present(ARCH),
        "QEMU tools missing: run `cargo xtask deps`"
    );
    let venv = venv().expect("no goosebit venv: run `cargo xtask deps`");
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let gb = Goosebit::start(&venv, w);
    let net = guestnet::loopback_forward(gb.port).unwrap();

    let init = testkit::program::build_static("fwpack-fleet-init", &fleet_init_source(), ARCH)
        .expect("building the slots' init");
    let fleet = std::fs::read(fleet_updater_binary()).unwrap();
    let conf = format!(
        "fleet_server = http://{SERVER_ADDR}:{SERVER_PORT}\nfleet_controller_id = qemu-x86\n\
         fleet_poll_min = 1\nfleet_reboot = no\nfleet_state_dir = /data/fwpack\n"
    );
    let files: [(&str, &[u8], u32); 3] = [
        ("usr/bin/fwpack-updater", &fleet, 0o755),
        ("etc/fwpack-test/fleet.conf", conf.as_bytes(), 0o644),
        ("data/.keep", b"", 0o644),
    ];
    let root_a = rootfs_with(w, "root-a", 1, false, &init, &files, ROOTFS_SIZE);
    let root_b = rootfs_with(w, "root-b", 2, true, &init, &files, ROOTFS_SIZE);
    let a = labelled_image(&root_a, 1);
    let b = labelled_image(&root_b, 2);
    let update = w.join("update.fwi");
    std::fs::write(&update, &b).unwrap();
    let key = w.join("key.pem");
    std::fs::write(&key, public_pem()).unwrap();
    let disk = disk(w, false, &a);
    let data = w.join("data.ext4");
    std::fs::File::create(&data)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    let out = Command::new(testkit::tools::find("mkfs.ext4").unwrap())
        .args(["-q", "-F", "-L", "data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

    // Boot 1, slot A: registers (configData) and waits for a deployment.
    let mut c = boot(&kernel, &initrd, &disk, &data, &net, "x86-fleet-1");
    expect(
        &mut c,
        &[
            "booting slot A",
            "FWPACK-FLEET booted version 1",
            "FWPACK-FLEET mount /data: ok",
        ],
        WAIT,
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let v = gb.api("/api/v1/devices");
        if v["devices"].as_array().is_some_and(|d| {
            d.iter()
                .any(|d| d["id"] == "qemu-x86" && d["sw_version"] == "1.0.1")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the device did not register: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let p = gb.publish(&update, &key, &["--assign", "qemu-x86"]);
    // Applied in the running system, then the reboot into B; B confirms
    // itself and reports.
    expect(
        &mut c,
        &["FWPACK-FLEET rebooting into the pending slot"],
        WAIT,
    );
    // QEMU runs with -no-reboot: the guest's reboot ends it.
    expect_exit(&mut c, WAIT);
    let mut c = boot(&kernel, &initrd, &disk, &data, &net, "x86-fleet-2");
    expect(
        &mut c,
        &[
            "booting slot B",
            "FWPACK-FLEET booted version 2",
            "FWPACK-FLEET mark-good: Ok(Some(0))",
            "FWPACK-FLEET done",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let d = gb.device("qemu-x86");
    assert_eq!(lower(&d["last_state"]).as_deref(), Some("finished"), "{d}");
    assert_eq!(d["sw_version"], "1.0.2", "{d}");
    let log = gb.log("qemu-x86");
    assert!(log.contains("confirmed"), "{log}");
    let st = status_json(&disk);
    assert!(
        st.contains("\"active\":\"B\"") && st.contains("\"confirmed\":true"),
        "{st}"
    );
    eprintln!(
        "goosebit after the QEMU update (software {}): {d}; log: {log}",
        p["software_id"]
    );
}
