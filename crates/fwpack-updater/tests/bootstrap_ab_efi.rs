//! Bootstrap A/B under UEFI (board qemu-x86_64-efi): OVMF from Debian's
//! `ovmf` package on a q35 machine (TCG), an NVMe disk with a GPT whose
//! two bootstrap partitions (EFI-stub kernel + the updater initramfs) are
//! the layout's `bootstrap` slot group, next to the `system` slots.
//! `Boot000A` and `Boot000B` start the two bootstraps; they are written
//! into the test's copy of the variable store before the first power-on
//! (diskimage::efivars), which persists across the QEMU runs of a test
//! like NVRAM across resets.
//!
//! - factory: bootstrap v1 boots slot A;
//! - an update with bootstrap v2 + slot v2: bootstrap v1 sets BootNext,
//!   v2 comes up, rewrites BootOrder, slot B boots and confirms;
//! - an update whose bootstrap v3 panics: the firmware returns to v2,
//!   which records why and keeps booting slot B;
//! - power cuts (SIGKILL of QEMU) at points of a bootstrap update applied
//!   by the PID-1 updater: the disk boots afterwards every time.

mod qemu_support;

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use diskimage::efivars::{self, GptPartition};
use diskimage::{
    gpt_types, DiskLayout, FatFile, FatKind, FatSpec, Guid, PartKind, PartitionSpec, Reserved,
    Source, TableKind,
};
use fwimage::{Compression, ImageBuilder, SegmentSpec};
use qemu_support::*;
use testkit::kernels::{self, Arch, Kernel};
use testkit::qemu::Console;
use updater::{Access, BootState, FileStorage, Layout, Slot, SlotGroup, SlotInfo, SlotRange};

const ARCH: Arch = Arch::X86_64;
const WAIT: Duration = Duration::from_secs(240);
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const ENTRIES: [u16; 2] = [0x000A, 0x000B];
const BOOT_SIZE: u64 = 32 * MIB;
const BOOTSTRAP: [SlotRange; 2] = [
    SlotRange {
        offset: 8 * MIB,
        size: BOOT_SIZE,
    },
    SlotRange {
        offset: 40 * MIB,
        size: BOOT_SIZE,
    },
];
const SYSTEM: [SlotRange; 2] = [
    SlotRange {
        offset: 72 * MIB,
        size: 16 * MIB,
    },
    SlotRange {
        offset: 88 * MIB,
        size: 16 * MIB,
    },
];
const DISK_SIZE: u64 = 105 * MIB;
/// The EFI stub's command line, in both Boot#### entries: `panic=5`
/// turns a bootstrap that panics into a reset (QEMU exits, `-no-reboot`);
/// `no_timer_check`: a TCG guest on a busy host otherwise fails the
/// kernel's IO-APIC timer check now and then ("IO-APIC + timer doesn't
/// work!").
const CMDLINE: &str = "initrd=\\initrd.img console=ttyS0,115200 panic=5 no_timer_check";

fn config(label: &str) -> String {
    format!(
        "target = /dev/nvme0n1\n\
         modules = /etc/fwpack/modules.load\n\
         keys = /etc/fwpack/keys\n\
         images = /images\n\
         device_timeout = 30\n\
         on_failure = poweroff\n\
         root_group = system\n\
         root_fstype = ext4\n\
         tries = 1\n\
         verify_writes = yes\n\
         efi_boot_entries = {:04X} {:04X}\n\
         bootstrap_label = {label}\n",
        ENTRIES[0], ENTRIES[1]
    )
}

fn layout() -> Layout {
    Layout::new(
        BOARD,
        updater::StateLocation::default(),
        vec![
            SlotGroup {
                name: "bootstrap".into(),
                slots: BOOTSTRAP,
            },
            SlotGroup {
                name: "system".into(),
                slots: SYSTEM,
            },
        ],
    )
    .unwrap()
}

/// The bytes of one bootstrap partition: a FAT with `vmlinuz` (the
/// kernel, EFI stub) and `initrd.img`.
fn bootstrap_fat(work: &Path, name: &str, kernel: &Path, initrd: &Path) -> Vec<u8> {
    let mut spec = PartitionSpec::new(
        "bootstrap",
        BOOT_SIZE,
        PartKind::Fat(FatSpec {
            label: "BOOTSTRAP".into(),
            fat_type: FatKind::Auto,
            files: vec![
                FatFile {
                    dest: "vmlinuz".into(),
                    source: Source::Path(kernel.into()),
                },
                FatFile {
                    dest: "initrd.img".into(),
                    source: Source::Path(initrd.into()),
                },
            ],
            dirs: vec![],
        }),
    );
    spec.start_bytes = Some(MIB);
    let l = DiskLayout {
        table: TableKind::Gpt,
        seed: format!("fwpack-efi-test/{name}"),
        size_bytes: None,
        fat_timestamp: None,
        partitions: vec![spec],
        reserved: vec![],
    };
    let tmp = work.join(format!("{name}.tmpdisk"));
    let r = diskimage::write_image(&l, &tmp).unwrap();
    let p = &r.partitions[0];
    let all = fs::read(&tmp).unwrap();
    fs::remove_file(&tmp).unwrap();
    all[p.offset_bytes as usize..(p.offset_bytes + p.size_bytes) as usize].to_vec()
}

/// A bootstrap initramfs labelled `label` (the updater prints it), with
/// update images in /images.
fn bootstrap_initrd(work: &Path, k: &Kernel, label: &str, images: &[(&str, &[u8])]) -> PathBuf {
    let i = initramfs(
        work,
        ARCH,
        &config(label),
        images,
        Some((k, &["efivarfs", "loop"])),
    );
    let out = work.join(format!("initrd-{label}.img"));
    fs::rename(i, &out).unwrap();
    out
}

/// A bootstrap whose kernel panics: its initramfs has no /init and
/// there is no root= to fall back on.
fn panicking_initrd(work: &Path) -> PathBuf {
    let mut b = initramfs::Builder::new(initramfs::Options::default());
    b.add_bytes(
        "/etc/bootstrap-v3",
        b"no init here\n".to_vec(),
        initramfs::Meta::mode(0o644),
    )
    .unwrap();
    let out = work.join("initrd-v3.img");
    b.write_file(&out, initramfs::Compression::Gzip { level: 1 })
        .unwrap();
    out
}

/// A signed image carrying a bootstrap partition and a root filesystem.
fn efi_image(bootstrap: &[u8], rootfs: &Path, version: u64) -> Vec<u8> {
    let mut b = ImageBuilder::new(BOARD, version)
        .and_then(|b| b.version_label(&format!("v{version}")))
        .unwrap();
    for (name, target, data) in [
        ("bootstrap", "bootstrap", bootstrap.to_vec()),
        ("rootfs", "system", fs::read(rootfs).unwrap()),
    ] {
        b.add_segment(
            SegmentSpec {
                name: name.into(),
                target: target.into(),
                target_offset: 0,
                compression: Compression::Zstd,
                level: None,
            },
            data.len() as u64,
            Cursor::new(data),
        )
        .unwrap();
    }
    let mut out = Cursor::new(Vec::new());
    b.write(&mut out, &mut |_| {}).unwrap();
    fwimage::insert_signature(&mut out, &signing_key()).unwrap();
    out.into_inner()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
}

/// `fwpack-updater apply` on the disk file: what the running system's
/// own updater does with a downloaded image.
fn host_apply(work: &Path, disk: &Path, image: &[u8], extra: &[&str]) {
    let img = work.join("apply.fwi");
    fs::write(&img, image).unwrap();
    let key = work.join("key.pem");
    fs::write(&key, public_pem()).unwrap();
    run_ok(
        Command::new(host_updater())
            .arg("apply")
            .arg(&img)
            .arg("--target")
            .arg(disk)
            .arg("--key")
            .arg(&key)
            .args(extra),
    );
}

/// The GPT disk (state area, both bootstraps, both system slots) with
/// the factory image in slot A, and the variable store with a Boot####
/// entry for each bootstrap (A first in BootOrder).
fn factory(work: &Path, image_a: &[u8]) -> (PathBuf, PathBuf) {
    let part = |name: &str, r: SlotRange, ty: Guid| PartitionSpec {
        start_bytes: Some(r.offset),
        gpt_type: Some(ty),
        ..PartitionSpec::new(name, r.size, PartKind::Empty)
    };
    let loc = updater::StateLocation::default();
    let l = DiskLayout {
        table: TableKind::Gpt,
        seed: "fwpack-efi-test/disk".into(),
        size_bytes: Some(DISK_SIZE),
        fat_timestamp: None,
        partitions: vec![
            part("bootstrap-a", BOOTSTRAP[0], gpt_types::EFI_SYSTEM),
            part("bootstrap-b", BOOTSTRAP[1], gpt_types::EFI_SYSTEM),
            part("system-a", SYSTEM[0], gpt_types::LINUX_FS),
            part("system-b", SYSTEM[1], gpt_types::LINUX_FS),
        ],
        reserved: vec![Reserved {
            name: "state".into(),
            start_bytes: loc.offset,
            size_bytes: loc.copy_distance + updater::STATE_HALF_LEN,
        }],
    };
    let disk = work.join("disk.img");
    let report = diskimage::write_image(&l, &disk).unwrap();
    let blank = BootState {
        active: Slot::B,
        pending: None,
        tries_left: 0,
        confirmed: false,
        rollback_floor: 0,
        slots: [SlotInfo::empty(), SlotInfo::empty()],
    };
    {
        let mut st = FileStorage::open(&disk, Access::ReadWrite).unwrap();
        updater::init_state_area(&mut st, &layout(), &blank).unwrap();
    }
    host_apply(work, &disk, image_a, &["--slot", "A", "--verify-writes"]);
    run_ok(
        Command::new(host_updater())
            .args(["mark-good", "--slot", "A", "--target"])
            .arg(&disk),
    );

    let mut vars = fs::read(OVMF_VARS).unwrap();
    let entries: Vec<(u16, Vec<u8>)> = [Slot::A, Slot::B]
        .into_iter()
        .map(|s| {
            let p = &report.partitions[s.index()];
            let hd = GptPartition {
                number: p.number,
                start_lba: p.start_lba,
                sectors: p.sectors,
                guid: Guid::parse(&p.partuuid).unwrap(),
            };
            let opt =
                efivars::load_option(&format!("fwpack bootstrap {s}"), &hd, "\\vmlinuz", CMDLINE);
            (ENTRIES[s.index()], opt)
        })
        .collect();
    efivars::add_boot_entries(&mut vars, &entries).unwrap();
    let vars_path = work.join("OVMF_VARS.fd");
    fs::write(&vars_path, vars).unwrap();
    (disk, vars_path)
}

/// One power-on: OVMF with the test's variable store, the disk on NVMe.
fn power_on(disk: &Path, vars: &Path, name: &str) -> Console {
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-m", "512", "-M", "q35"])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-drive")
        .arg(format!("if=none,id=d,file={},format=raw", disk.display()))
        .args(["-device", "nvme,drive=d,serial=fwpack"]);
    Console::spawn(c, name).expect("starting QEMU")
}

struct Setup {
    work: tempfile::TempDir,
    kernel: Kernel,
    disk: PathBuf,
    vars: PathBuf,
}

/// Factory disk with bootstrap v1 and slot v1 in A; `v1_images` go into
/// bootstrap v1's /images.
fn setup(v1_images: &[(&str, &[u8])]) -> Option<Setup> {
    if !tools_present(ARCH) || !Path::new(OVMF_CODE).exists() || !Path::new(OVMF_VARS).exists() {
        eprintln!("skipped: needs QEMU and Debian's ovmf package ({OVMF_CODE})");
        return None;
    }
    let kernel = kernels::amd64_cloud().expect("Debian cloud kernel");
    let work = tempfile::tempdir().unwrap();
    let initrd = bootstrap_initrd(work.path(), &kernel, "v1", v1_images);
    let fat = bootstrap_fat(work.path(), "bootstrap-v1", &kernel.vmlinuz, &initrd);
    let rootfs = rootfs(work.path(), ARCH, "root-v1", 1, true);
    let (disk, vars) = factory(work.path(), &efi_image(&fat, &rootfs, 1));
    Some(Setup {
        work,
        kernel,
        disk,
        vars,
    })
}

/// The image of bootstrap `label` + slot `version` (confirming itself).
fn update(s: &Setup, label: &str, version: u64, panics: bool) -> Vec<u8> {
    let w = s.work.path();
    let initrd = if panics {
        panicking_initrd(w)
    } else {
        bootstrap_initrd(w, &s.kernel, label, &[])
    };
    let fat = bootstrap_fat(w, &format!("bootstrap-{label}"), &s.kernel.vmlinuz, &initrd);
    let rootfs = rootfs(w, ARCH, &format!("root-{label}"), version, true);
    efi_image(&fat, &rootfs, version)
}

#[test]
fn bootstrap_ab_efi_try_commit_and_failed_try() {
    let Some(s) = setup(&[]) else {
        return;
    };
    // Factory: bootstrap v1 (Boot000A, first in BootOrder) boots slot A.
    let mut c = power_on(&s.disk, &s.vars, "efi-factory");
    expect(
        &mut c,
        &[
            "bootstrap v1",
            "UEFI: booted Boot000A (bootstrap A), BootOrder 000A,000B",
            "booting slot A (version 1 v1)",
            "FWPACK-TEST booted slot A version 1",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);

    // The running system applies bootstrap v2 + slot v2 (to B).
    host_apply(
        s.work.path(),
        &s.disk,
        &update(&s, "v2", 2, false),
        &["--tries", "1"],
    );
    let mut c = power_on(&s.disk, &s.vars, "efi-v2-try");
    expect(
        &mut c,
        &[
            "bootstrap v1",
            "UEFI: booted Boot000A (bootstrap A)",
            "trying bootstrap B once: BootNext = Boot000B",
            "rebooting into bootstrap B once",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let mut c = power_on(&s.disk, &s.vars, "efi-v2-commit");
    let lines = expect(
        &mut c,
        &[
            "bootstrap v2",
            "UEFI: booted Boot000B (bootstrap B), BootOrder 000A,000B",
            "UEFI: BootOrder now starts with Boot000B (bootstrap B): it came up from its one-shot try",
            "booting slot B (version 2 v2), trial",
            "FWPACK-TEST booted slot B version 2",
            "FWPACK-TEST mark-good: Ok(Some(0))",
            "FWPACK-TEST status",
        ],
        WAIT,
    );
    assert!(lines[6].contains("\"active\":\"B\""), "{}", lines[6]);
    expect_exit(&mut c, WAIT);
    // The next power-on starts bootstrap v2 by BootOrder alone.
    let mut c = power_on(&s.disk, &s.vars, "efi-v2-again");
    expect(
        &mut c,
        &[
            "bootstrap v2",
            "UEFI: booted Boot000B (bootstrap B), BootOrder 000B,000A",
            "booting slot B (version 2 v2)",
            "FWPACK-TEST booted slot B version 2",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);

    // Bootstrap v3 panics: its one try ends in a reset, the firmware
    // returns to BootOrder (v2), which records why.
    host_apply(
        s.work.path(),
        &s.disk,
        &update(&s, "v3", 3, true),
        &["--tries", "1"],
    );
    let mut c = power_on(&s.disk, &s.vars, "efi-v3-try");
    expect(
        &mut c,
        &[
            "bootstrap v2",
            "trying bootstrap A once: BootNext = Boot000A",
            "rebooting into bootstrap A once",
        ],
        WAIT,
    );
    expect_exit(&mut c, WAIT);
    let mut c = power_on(&s.disk, &s.vars, "efi-v3-panic");
    expect(&mut c, &["Kernel panic"], WAIT);
    expect_exit(&mut c, WAIT);
    let mut c = power_on(&s.disk, &s.vars, "efi-v3-fallback");
    let lines = expect(
        &mut c,
        &[
            "bootstrap v2",
            "UEFI: booted Boot000B (bootstrap B), BootOrder 000B,000A",
            "bootstrap A (Boot000A) was tried and never came up: the firmware booted Boot000B instead",
            "booting slot B (version 2 v2)",
            "FWPACK-TEST booted slot B version 2",
            "FWPACK-TEST status",
        ],
        WAIT,
    );
    assert!(
        lines[5].contains("\"active\":\"B\"") && lines[5].contains("\"pending\":null"),
        "{}",
        lines[5]
    );
    expect_exit(&mut c, WAIT);
    let st = status_json(&s.disk);
    assert!(st.contains("\"fell_back\":true"), "{st}");
}

/// Powers on until `pattern` appears (the guest may reboot on the way:
/// each reboot ends QEMU, and the next run is the next power-on), at
/// most `runs` times. Returns the console still running, or `None`.
fn run_until(disk: &Path, vars: &Path, name: &str, pattern: &str, runs: usize) -> Option<Console> {
    for n in 0..runs {
        let mut c = power_on(disk, vars, &format!("{name}-{n}"));
        if c.wait_for(pattern, WAIT).is_ok() {
            return Some(c);
        }
    }
    None
}

/// Bootstrap v2 + slot v2 applied by PID 1 of bootstrap v1 from its
/// /images, with QEMU killed (SIGKILL: no sync, no shutdown) at points
/// from the apply to the bootstrap commit; then the disk must boot a
/// slot within 4 power-ons. Every cut starts from a copy of the same
/// factory disk and variable store.
#[test]
fn bootstrap_ab_efi_power_cuts_leave_a_bootable_system() {
    let t = Instant::now();
    let Some(probe) = setup(&[]) else {
        return;
    };
    let v2 = update(&probe, "v2", 2, false);
    drop(probe);
    let Some(s) = setup(&[("update-v2.fwi", &v2)]) else {
        return;
    };
    // (console line after which the power goes, extra delay)
    let cuts: &[(&str, u64)] = &[
        ("signature ok; writing", 0),
        ("signature ok; writing", 4),
        ("slot B is now complete", 0),
        ("trying bootstrap B once", 0),
        ("it came up from its one-shot try", 0),
        ("switching root to slot B", 0),
    ];
    let (mut bootable, mut bricked) = (0, 0);
    for (i, (at, delay)) in cuts.iter().enumerate() {
        let disk = s.work.path().join(format!("cut{i}.img"));
        let vars = s.work.path().join(format!("cut{i}-vars.fd"));
        fs::copy(&s.disk, &disk).unwrap();
        fs::copy(&s.vars, &vars).unwrap();
        let c = run_until(&disk, &vars, &format!("efi-cut{i}"), at, 3)
            .unwrap_or_else(|| panic!("cut {i}: `{at}` never appeared"));
        std::thread::sleep(Duration::from_secs(*delay));
        drop(c);
        match run_until(
            &disk,
            &vars,
            &format!("efi-cut{i}-after"),
            "FWPACK-TEST booted slot",
            4,
        ) {
            Some(mut c) => {
                let lines = c.lines();
                let find = |p: &str| {
                    lines
                        .iter()
                        .rev()
                        .find(|l| l.contains(p))
                        .cloned()
                        .unwrap_or_default()
                };
                let (booted, label) = (
                    find("FWPACK-TEST booted slot"),
                    find("fwpack-updater: bootstrap v"),
                );
                // Bootstrap and slot from the same image: v1 with 1, v2 with 2.
                let version = |l: &str, p: &str| {
                    l.split(p)
                        .nth(1)
                        .and_then(|r| r.split(' ').next())
                        .map(str::to_string)
                };
                let same = version(&booted, "version ") == version(&label, "bootstrap v");
                eprintln!(
                    "cut {i} after `{at}` +{delay} s: {} under {}",
                    booted.trim(),
                    label.trim()
                );
                if same {
                    bootable += 1;
                } else {
                    bricked += 1;
                    eprintln!("cut {i}: mixed: bootstrap and slot from different images");
                }
                let _ = c.wait_exit(WAIT);
            }
            None => {
                bricked += 1;
                eprintln!("cut {i} after `{at}` +{delay} s: no slot booted in 4 power-ons");
            }
        }
        let _ = fs::remove_file(&disk);
    }
    eprintln!(
        "bootstrap A/B power cuts: {}; bootable afterwards: {bootable}; bricked or mixed: {bricked}; total {:.0} s",
        cuts.len(),
        t.elapsed().as_secs_f64()
    );
    assert_eq!(bricked, 0);
}
