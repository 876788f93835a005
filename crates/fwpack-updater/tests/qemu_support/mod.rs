//! Shared pieces of the QEMU tests: the static updater for the guest, a
//! tiny root filesystem per slot, signed images, a disk with a state area
//! and slot A installed, the initramfs, and QEMU itself.

#![allow(dead_code)]

pub mod kexec;

use std::fs::{self, File};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::SigningKey;
use fwimage::{Compression, ImageBuilder, SegmentSpec};
use initramfs::{Builder, DeviceKind, Meta, Options};
use testkit::kernels::{Arch, Kernel};
use testkit::qemu::{Console, Qemu};
use updater::{Access, BootState, FileStorage, Layout, Slot, SlotGroup, SlotInfo, SlotRange};

pub const BOARD: &str = "fwpack-qemu-test";
pub const MIB: u64 = 1 << 20;
// After the state area (copy 1 at 4.5 MiB).
pub const SLOT_A: SlotRange = SlotRange {
    offset: 8 * MIB,
    size: 16 * MIB,
};
pub const SLOT_B: SlotRange = SlotRange {
    offset: 24 * MIB,
    size: 16 * MIB,
};
pub const DISK_SIZE: u64 = 41 * MIB;
pub const ROOTFS_SIZE: u64 = 8 * MIB;

pub fn triple(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64-unknown-linux-musl",
        Arch::Aarch64 => "aarch64-unknown-linux-musl",
        // These QEMU tests cover x86_64 and aarch64; riscv64 (glibc +
        // crt-static) is exercised by crates/pipeline/tests/visionfive2.rs.
        Arch::Riscv64 => "riscv64gc-unknown-linux-gnu",
    }
}

/// QEMU and the tools the disk is built with; prints why when missing.
pub fn tools_present(arch: Arch) -> bool {
    let qemu = match arch {
        Arch::X86_64 => "qemu-system-x86_64",
        Arch::Aarch64 => "qemu-system-aarch64",
        Arch::Riscv64 => "qemu-system-riscv64",
    };
    ["apt-get", "dpkg-deb", qemu, "mkfs.ext4", "sfdisk"]
        .iter()
        .all(|t| testkit::tools::require(t))
}

/// The bootstrap's device build of fwpack-updater for `arch`
/// (`--no-default-features`: no network client, as `fwpack build` puts it
/// in /init), built now (a no-op when up to date) so a test never boots a
/// stale binary.
pub fn updater_binary(arch: Arch) -> PathBuf {
    device_build(arch, "bootstrap")
}

/// The slot's device build (default features: the HTTP client), as
/// `fwpack build` writes it to a slot's /usr/bin/fwpack-updater.
pub fn slot_updater_binary(arch: Arch) -> PathBuf {
    device_build(arch, "slot")
}

/// Both flavors leave cargo's one output path: each is copied to
/// `fwpack-updater-<flavor>` under the lock, so neither hands out the other.
fn device_build(arch: Arch, flavor: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _g = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let target = triple(arch);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-p",
        "fwpack-updater",
        "--bin",
        "fwpack-updater",
        "--profile",
        "device",
        "--target",
        target,
    ]);
    if flavor == "bootstrap" {
        cmd.arg("--no-default-features");
    }
    let out = cmd
        .current_dir(testkit::workspace_root())
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "building fwpack-updater ({flavor}) for {target} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = testkit::target_dir().join(target).join("device");
    let bin = dir.join("fwpack-updater");
    assert!(bin.is_file(), "{} missing after the build", bin.display());
    // Copied aside and renamed into place: another test may be packing
    // the previous copy into its initramfs (outside the lock), and a copy
    // over it truncated the file under that reader (SourceChanged).
    let copy = dir.join(format!("fwpack-updater-{flavor}"));
    let part = dir.join(format!("fwpack-updater-{flavor}.part"));
    fs::copy(&bin, &part).unwrap();
    fs::rename(&part, &copy).unwrap();
    copy
}

/// The device build with HTTPS (`--features tls`, the board option
/// `updater.tls`), in its own target directory so it never replaces the
/// plain build other tests boot. ring compiles C: Debian's cross gcc for
/// aarch64, musl-gcc for x86_64.
pub fn tls_updater_binary(arch: Arch) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _g = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let target = triple(arch);
    let dir = testkit::target_dir().join("tls");
    let cc = match arch {
        Arch::Aarch64 => "aarch64-linux-gnu-gcc",
        _ => "musl-gcc",
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "-p",
            "fwpack-updater",
            "--bin",
            "fwpack-updater",
            "--features",
            "tls",
            "--profile",
            "device",
            "--target",
            target,
            "--target-dir",
        ])
        .arg(&dir)
        .env(format!("CC_{}", target.replace('-', "_")), cc)
        .current_dir(testkit::workspace_root())
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "building the TLS fwpack-updater for {target} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = dir.join(target).join("device").join("fwpack-updater");
    assert!(bin.is_file(), "{} missing after the build", bin.display());
    bin
}

/// The host build, for `apply` / `mark-good` / `status` on disk files.
pub fn host_updater() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fwpack-updater"))
}

/// `/sbin/init` of the test root filesystems: says which slot and version
/// booted (slot from what the PID-1 updater left in /run, version from
/// the root filesystem), confirms the slot when the root filesystem asks
/// for it, prints the boot state, powers off. Like the recipes in the
/// README, it uses the slot's own updater ([`SLOT_UPDATER`]) when the
/// root filesystem has one, else the bootstrap's copy in /run/fwpack.
const TEST_INIT: &str = r#"
use std::io::Write;
use std::process::Command;

extern "C" {
    fn reboot(cmd: i32) -> i32;
    fn sync();
}
const RB_POWER_OFF: i32 = 0x4321fedc;

fn main() {
    let mut out = std::io::stdout();
    let version = std::fs::read_to_string("/etc/fwpack-test/version").unwrap_or_default();
    let run = std::fs::read_to_string("/run/fwpack/boot.conf").unwrap_or_default();
    let slot = run.lines().find_map(|l| l.strip_prefix("slot = ")).unwrap_or("?");
    let _ = writeln!(out, "FWPACK-TEST booted slot {} version {} pid {}", slot, version.trim(), std::process::id());
    let root = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if let Some(l) = root.lines().find(|l| l.split(' ').nth(4) == Some("/")) {
        let _ = writeln!(out, "FWPACK-TEST root mount: {}", l);
    }
    let env: Vec<String> = std::env::vars_os().map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())).collect();
    let _ = writeln!(out, "FWPACK-TEST env: {}", env.join(" "));
    let updater = ["/usr/bin/fwpack-updater", "/run/fwpack/fwpack-updater"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("/run/fwpack/fwpack-updater");
    let _ = writeln!(out, "FWPACK-TEST updater {}", updater);
    if std::path::Path::new("/etc/fwpack-test/mark-good").exists() {
        let st = Command::new(updater).arg("mark-good").status();
        let _ = writeln!(out, "FWPACK-TEST mark-good: {:?}", st.map(|s| s.code()));
    } else {
        let _ = writeln!(out, "FWPACK-TEST not confirming this slot");
    }
    match Command::new(updater).args(["status", "--json"]).output() {
        Ok(o) => { let _ = writeln!(out, "FWPACK-TEST status {}", String::from_utf8_lossy(&o.stdout).trim()); }
        Err(e) => { let _ = writeln!(out, "FWPACK-TEST status failed: {}", e); }
    }
    let _ = out.flush();
    if std::process::id() == 1 {
        unsafe { sync(); reboot(RB_POWER_OFF); }
        loop { std::thread::park(); }
    }
}
"#;

/// Where a slot's root filesystem carries its own fwpack-updater
/// (Buildroot's and meta-fwpack's install path; docs/FORMAT.md, "The bootstrap").
pub const SLOT_UPDATER: &str = "/usr/bin/fwpack-updater";

pub fn test_init(arch: Arch) -> PathBuf {
    testkit::program::build_static("fwpack-test-init", TEST_INIT, arch)
        .expect("building the test init")
}

/// An ext4 image whose init reports `version`, and confirms itself when
/// `mark_good`.
pub fn rootfs(work: &Path, arch: Arch, name: &str, version: u64, mark_good: bool) -> PathBuf {
    rootfs_with(
        work,
        name,
        version,
        mark_good,
        &test_init(arch),
        &[],
        ROOTFS_SIZE,
    )
}

/// [`rootfs`] with another `/sbin/init`, extra files (path in the tree,
/// contents, mode; a mode with `S_IFIFO` makes a named pipe) and size.
pub fn rootfs_with(
    work: &Path,
    name: &str,
    version: u64,
    mark_good: bool,
    init: &Path,
    extra: &[(&str, &[u8], u32)],
    size: u64,
) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let tree = work.join(format!("{name}-tree"));
    for d in [
        "sbin",
        "etc/fwpack-test",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
    ] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }
    fs::copy(init, tree.join("sbin/init")).unwrap();
    fs::write(tree.join("etc/fwpack-test/version"), format!("{version}\n")).unwrap();
    if mark_good {
        fs::write(tree.join("etc/fwpack-test/mark-good"), "").unwrap();
    }
    for (path, data, mode) in extra {
        let p = tree.join(path.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        if mode & 0o170000 == 0o010000 {
            // S_IFIFO: a named pipe (mkfs.ext4 -d copies it as one).
            let st = Command::new("mkfifo").arg(&p).status().unwrap();
            assert!(st.success(), "mkfifo {}", p.display());
            continue;
        }
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
    }
    let img = work.join(format!("{name}.ext4"));
    File::create(&img).unwrap().set_len(size).unwrap();
    let out = Command::new(testkit::tools::find("mkfs.ext4").unwrap())
        .args(["-q", "-F", "-L", name, "-d"])
        .arg(&tree)
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

/// A fixed test key (deterministic, so failures reproduce).
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[42u8; 32])
}

pub fn public_pem() -> String {
    signing_key()
        .verifying_key()
        .to_public_key_pem(Default::default())
        .unwrap()
}

/// A signed image: the root filesystem as a zstd-compressed segment for
/// the `system` slot group, its all-zero chunks stored empty as `fwpack
/// stamp` stores them by default (docs/FORMAT.md, "Zero chunks"), so
/// the device updater applies what the field gets.
pub fn image(rootfs: &Path, version: u64) -> Vec<u8> {
    image_with(rootfs, version, Compression::Zstd)
}

pub fn image_with(rootfs: &Path, version: u64, compression: Compression) -> Vec<u8> {
    let data = fs::read(rootfs).unwrap();
    let mut b = ImageBuilder::new(BOARD, version)
        .and_then(|b| b.version_label(&format!("v{version}")))
        .unwrap()
        .zero_chunks(true);
    b.add_segment(
        SegmentSpec {
            name: "rootfs".into(),
            target: "system".into(),
            target_offset: 0,
            compression,
            level: None,
        },
        data.len() as u64,
        Cursor::new(data),
    )
    .unwrap();
    let mut out = Cursor::new(Vec::new());
    b.write(&mut out, &mut |_| {}).unwrap();
    fwimage::insert_signature(&mut out, &signing_key()).unwrap();
    out.into_inner()
}

pub fn layout() -> Layout {
    layout_with([SLOT_A, SLOT_B])
}

pub fn layout_with(slots: [SlotRange; 2]) -> Layout {
    Layout::new(
        BOARD,
        updater::StateLocation::default(),
        vec![SlotGroup {
            name: "system".into(),
            slots,
        }],
    )
    .unwrap()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A disk with the state area, optionally an MBR whose two partitions are
/// exactly the slots, and slot A holding `image_a` — installed the way a
/// device would: `fwpack-updater apply --slot A`, then `mark-good`.
pub fn disk(work: &Path, partitions: bool, image_a: &[u8]) -> PathBuf {
    disk_with(work, partitions, image_a, [SLOT_A, SLOT_B], DISK_SIZE)
}

/// [`disk`] with other slot ranges and disk size.
pub fn disk_with(
    work: &Path,
    partitions: bool,
    image_a: &[u8],
    slots: [SlotRange; 2],
    disk_size: u64,
) -> PathBuf {
    let [slot_a, slot_b] = slots;
    let path = work.join("disk.img");
    File::create(&path).unwrap().set_len(disk_size).unwrap();
    if partitions {
        let script = format!(
            "label: dos\nlabel-id: 0x0f3a7e57\nstart={}, size={}, type=83\nstart={}, size={}, type=83\n",
            slot_a.offset / 512,
            slot_a.size / 512,
            slot_b.offset / 512,
            slot_b.size / 512
        );
        let mut c = Command::new(testkit::tools::find("sfdisk").unwrap())
            .arg("-q")
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut c.stdin.take().unwrap(), script.as_bytes()).unwrap();
        assert!(c.wait().unwrap().success(), "sfdisk");
    }
    // A blank device: B is "active" only as a formality so that A can be
    // written as the inactive slot; both slots start empty.
    let blank = BootState {
        active: Slot::B,
        pending: None,
        tries_left: 0,
        confirmed: false,
        rollback_floor: 0,
        slots: [SlotInfo::empty(), SlotInfo::empty()],
    };
    {
        let mut st = FileStorage::open(&path, Access::ReadWrite).unwrap();
        updater::init_state_area(&mut st, &layout_with(slots), &blank).unwrap();
    }
    let img = work.join("slot-a.fwi");
    fs::write(&img, image_a).unwrap();
    let key = work.join("key.pem");
    fs::write(&key, public_pem()).unwrap();
    let host = host_updater();
    run_ok(
        Command::new(&host)
            .arg("apply")
            .arg(&img)
            .arg("--target")
            .arg(&path)
            .args(["--slot", "A", "--key"])
            .arg(&key)
            .arg("--verify-writes"),
    );
    run_ok(
        Command::new(&host)
            .args(["mark-good", "--slot", "A", "--target"])
            .arg(&path),
    );
    path
}

/// `fwpack-updater status --json` of a disk file, on the host.
pub fn status_json(disk: &Path) -> String {
    run_ok(
        Command::new(host_updater())
            .args(["status", "--json", "--target"])
            .arg(disk),
    )
}

/// The updater initramfs: `/init`, config, trusted key, update images and
/// kernel modules (with their load order).
pub fn initramfs(
    work: &Path,
    arch: Arch,
    config: &str,
    images: &[(&str, &[u8])],
    modules: Option<(&Kernel, &[&str])>,
) -> PathBuf {
    initramfs_with_updater(work, &updater_binary(arch), config, images, modules)
}

/// [`initramfs`] with another build of the updater as `/init`.
pub fn initramfs_with_updater(
    work: &Path,
    updater: &Path,
    config: &str,
    images: &[(&str, &[u8])],
    modules: Option<(&Kernel, &[&str])>,
) -> PathBuf {
    let mut b = Builder::new(Options::default());
    b.add_file("/init", updater, Some(Meta::mode(0o755)))
        .unwrap();
    b.add_device("/dev/console", DeviceKind::Char, 5, 1, Meta::mode(0o600))
        .unwrap();
    b.add_device("/dev/null", DeviceKind::Char, 1, 3, Meta::mode(0o666))
        .unwrap();
    for d in ["/proc", "/sys", "/dev", "/run", "/mnt", "/images"] {
        b.add_dir(d, Meta::mode(0o755)).unwrap();
    }
    b.add_bytes(
        "/etc/fwpack/updater.conf",
        config.as_bytes().to_vec(),
        Meta::mode(0o644),
    )
    .unwrap();
    b.add_bytes(
        "/etc/fwpack/keys/test.pem",
        public_pem().into_bytes(),
        Meta::mode(0o644),
    )
    .unwrap();
    for (name, data) in images {
        b.add_bytes(&format!("/images/{name}"), data.to_vec(), Meta::mode(0o644))
            .unwrap();
    }
    if let Some((k, names)) = modules {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let set = initramfs::modules::resolve(&k.modules_dir, Some(&k.release), &names).unwrap();
        set.add_to(&mut b).unwrap();
    }
    let out = work.join("initramfs.cpio.gz");
    b.write_file(&out, initramfs::Compression::Gzip { level: 1 })
        .unwrap();
    out
}

/// A QEMU boot of `initrd` with `disk` attached the way the board does it.
pub fn boot(arch: Arch, k: &Kernel, initrd: &Path, disk: &Path, name: &str) -> Console {
    boot_appending(arch, k, initrd, disk, name, "")
}

/// As [`boot`], with `append` added to the kernel command line.
pub fn boot_appending(
    arch: Arch,
    k: &Kernel,
    initrd: &Path,
    disk: &Path,
    name: &str,
    append: &str,
) -> Console {
    let mut q = Qemu::new(arch, &k.vmlinuz)
        .initrd(initrd)
        .memory(512)
        .name(name);
    if !append.is_empty() {
        q = q.append(append);
    }
    match arch {
        // NVMe, built into the cloud kernel.
        Arch::X86_64 => {
            q.extra_args = vec![
                "-drive".into(),
                format!("if=none,id=d,file={},format=raw", disk.display()),
                "-device".into(),
                "nvme,drive=d,serial=fwpack".into(),
            ];
        }
        Arch::Aarch64 | Arch::Riscv64 => q = q.drive(disk),
    }
    q.spawn().expect("starting QEMU")
}

/// Waits for each pattern in order; panics with the console log path.
pub fn expect(c: &mut Console, patterns: &[&str], timeout: Duration) -> Vec<String> {
    patterns
        .iter()
        .map(|p| match c.wait_for(p, timeout) {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        })
        .collect()
}

/// Waits for QEMU to exit (the guest rebooted or powered off; `-no-reboot`).
pub fn expect_exit(c: &mut Console, timeout: Duration) {
    if let Err(e) = c.wait_exit(timeout) {
        panic!("{e}");
    }
}

/// Slot A's init: network up, a probe request (so a broken network reads
/// as one, not as an updater failure), then the download command from
/// /etc/fwpack-test/download, run with the slot's /usr/bin/fwpack-updater
/// when the root filesystem has one (one argument per line); on success reboot
/// into the new slot, else power off.
pub fn net_init_source() -> String {
    format!(
        r#"
use std::io::{{Read, Write}};
use std::process::Command;

extern "C" {{
    fn reboot(cmd: i32) -> i32;
    fn sync();
}}
const RB_POWER_OFF: i32 = 0x4321fedc;
const RB_AUTOBOOT: i32 = 0x01234567;
{netup}
fn main() {{
    let mut out = std::io::stdout();
    let version = std::fs::read_to_string("/etc/fwpack-test/version").unwrap_or_default();
    let _ = writeln!(out, "FWPACK-NET booted version {{}} pid {{}}", version.trim(), std::process::id());
    let mut code = -1;
    match netup("eth0", [10, 0, 2, 15], [255, 255, 255, 0]) {{
        Err(e) => {{ let _ = writeln!(out, "FWPACK-NET eth0 failed: {{}}", e); }}
        Ok(()) => {{
            let _ = writeln!(out, "FWPACK-NET eth0 up 10.0.2.15/24");
            let addr: std::net::SocketAddr = "{server}:{port}".parse().unwrap();
            match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10)) {{
                Ok(mut s) => {{
                    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                    let _ = s.write_all(b"GET /probe HTTP/1.1\r\nHost: fwpack\r\nConnection: close\r\n\r\n");
                    let mut buf = Vec::new();
                    let _ = s.read_to_end(&mut buf);
                    let text = String::from_utf8_lossy(&buf);
                    let _ = writeln!(out, "FWPACK-NET probe: {{}}", text.lines().next().unwrap_or(""));
                }}
                Err(e) => {{ let _ = writeln!(out, "FWPACK-NET probe failed: {{}}", e); }}
            }}
            let args: Vec<String> = std::fs::read_to_string("/etc/fwpack-test/download")
                .unwrap_or_default().lines().map(str::to_string).collect();
            let _ = writeln!(out, "FWPACK-NET running fwpack-updater {{}}", args.join(" "));
            let _ = out.flush();
            // The slot's own updater (network client), as the README's
            // recipes run it; else the bootstrap's copy.
            let updater = ["/usr/bin/fwpack-updater", "/run/fwpack/fwpack-updater"]
                .into_iter()
                .find(|p| std::path::Path::new(p).exists())
                .unwrap_or("/run/fwpack/fwpack-updater");
            let _ = writeln!(out, "FWPACK-NET updater {{}}", updater);
            match Command::new(updater).args(&args).status() {{
                Ok(s) => code = s.code().unwrap_or(-1),
                Err(e) => {{ let _ = writeln!(out, "FWPACK-NET could not run the updater: {{}}", e); }}
            }}
        }}
    }}
    let _ = writeln!(out, "FWPACK-NET apply exit {{}}", code);
    let _ = out.flush();
    if std::process::id() == 1 {{
        unsafe {{ sync(); reboot(if code == 0 {{ RB_AUTOBOOT }} else {{ RB_POWER_OFF }}); }}
        loop {{ std::thread::park(); }}
    }}
}}
"#,
        netup = testkit::guestnet::NETUP_RS,
        server = testkit::guestnet::SERVER_ADDR,
        port = testkit::guestnet::SERVER_PORT,
    )
}
