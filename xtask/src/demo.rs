//! `cargo xtask demo`: the main job, end to end, on a fresh Debian machine
//! with only rustup and cargo.
//!
//! 1. host tools (`deps`);
//! 2. the board inputs from Debian (arm64 kernel with its modules and DTBs,
//!    Raspberry Pi GPU firmware);
//! 3. a development signing key and a tiny root filesystem;
//! 4. `fwpack build --board rpi-zero2w` → `target/fwpack-demo/rpi-zero2w/`
//!    (sdcard.img to write to a card);
//! 5. the same updater doing an A/B update in QEMU on the qemu-aarch64
//!    board: v1 disk, v2's update.fwi in the initramfs, apply → reboot →
//!    slot B boots → mark-good.
//!
//! Artifact paths at the end.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testkit::kernels::Arch;
use testkit::machine::Machine;
use testkit::qemu::{Console, WaitError};
use testkit::rootfs;
use xshell::Shell;

use crate::inputs::{self, Build};

const WAIT: Duration = Duration::from_secs(300);

/// Bold on a terminal, plain in a log.
fn bold(text: &str) -> String {
    // SAFETY: isatty only inspects the file descriptor.
    if unsafe { libc::isatty(1) } == 1 {
        format!("\x1b[1m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn step(n: u32, what: &str) {
    println!("\n{}", bold(&format!("==> [{n}/5] {what}")));
}

pub fn run(sh: &Shell) -> Result<()> {
    let t0 = Instant::now();
    let root = testkit::target_dir().join("fwpack-demo");
    std::fs::create_dir_all(&root)?;

    step(1, "host tools (installed only when missing)");
    crate::deps::ensure(sh)?;
    let fwpack = inputs::fwpack_binary()?;
    println!("fwpack: {}", fwpack.display());

    step(
        2,
        "board inputs from Debian (private apt config; the machine's sources are untouched)",
    );
    let rpi = inputs::fetch("rpi-zero2w")?;
    if let Some(k) = &rpi.kernel {
        println!("kernel        {} ({})", k.vmlinuz.display(), k.package);
        println!("dtb-dir       {}", k.dtbs_dir.display());
        println!("modules-dir   {}", k.modules_dir.display());
    }
    if let Some(f) = &rpi.firmware_dir {
        println!("firmware-dir  {}", f.display());
    }

    step(3, "development signing key and a tiny root filesystem");
    let key = inputs::dev_key(&fwpack)?;
    println!("signing key   {} (development only)", key.display());
    let work = root.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let fs_v1 = rootfs::build(
        &rootfs::Spec {
            name: "demo-v1".into(),
            version: 1,
            confirm: true,
            blob_bytes: 0,
            seed: 1,
            greeting: Some("hello from the fwpack demo root filesystem, release v1".into()),
            // rpi-zero2w and qemu-aarch64 boot by kexec: `fwpack build`
            // writes the slot's kernel (33 MB arm64 Image), its initrd and
            // the slot's updater into the image.
            room_mib: 48,
        },
        Arch::Aarch64,
        &work,
    )?;
    println!(
        "rootfs        {} (ext4, static /sbin/init that says hello and confirms its slot)",
        fs_v1.path.display()
    );

    step(4, "fwpack build --board rpi-zero2w");
    let rpi_out = root.join("rpi-zero2w");
    let b = Build {
        fwpack: &fwpack,
        inputs: &rpi,
        key: &key,
        out: rpi_out.clone(),
        rootfs: Some(fs_v1.path.clone()),
        include_images: Vec::new(),
        version: 1,
        label: "v1".into(),
    };
    println!("$ {}", shown(&b.command()));
    b.run_visible()?;

    step(
        5,
        "the same updater doing an A/B update in QEMU (qemu-aarch64, TCG)",
    );
    let qa = inputs::fetch("qemu-aarch64")?;
    let fs_v2 = rootfs::build(
        &rootfs::Spec {
            name: "demo-v2".into(),
            version: 2,
            confirm: true,
            blob_bytes: 4 << 20,
            seed: 2,
            greeting: Some("hello from release v2, booted from slot B".into()),
            // qemu-aarch64 boots by kexec too: room for the slot kernel.
            room_mib: 48,
        },
        Arch::Aarch64,
        &work,
    )?;
    let qbuild = |out: &Path, r: &rootfs::Rootfs, include: Vec<PathBuf>| -> Result<()> {
        let t = Instant::now();
        Build {
            fwpack: &fwpack,
            inputs: &qa,
            key: &key,
            out: out.to_path_buf(),
            rootfs: Some(r.path.clone()),
            include_images: include,
            version: r.version,
            label: format!("v{}", r.version),
        }
        .run_quiet()?;
        println!(
            "built {} in {:.1} s",
            out.display(),
            t.elapsed().as_secs_f64()
        );
        Ok(())
    };
    let q_v1 = root.join("qemu-aarch64-v1");
    let q_v2 = root.join("qemu-aarch64-v2");
    let q_v2u = root.join("qemu-aarch64-v2-with-update");
    qbuild(&q_v1, &fs_v1, vec![])?;
    qbuild(&q_v2, &fs_v2, vec![])?;
    let fwi = work.join("update-v2.fwi");
    std::fs::copy(q_v2.join("update.fwi"), &fwi)?;
    qbuild(&q_v2u, &fs_v2, vec![fwi])?;
    let device = root.join("device-sdcard.img");
    std::fs::copy(q_v1.join("sdcard.img"), &device).context("copying the v1 sdcard.img")?;
    println!(
        "device disk   {} (the v1 sdcard.img: slot A = v1, slot B empty)",
        device.display()
    );
    let machine = |name: &str| {
        let mut m = Machine::new(
            Arch::Aarch64,
            q_v2u.join("boot/Image"),
            q_v2u.join("boot/initramfs.cpio.gz"),
            device.clone(),
        );
        m.name = format!("demo-{name}");
        m
    };
    println!("\n-- boot 1: the updater finds v2 in its initramfs and applies it to slot B");
    let mut logs = Vec::new();
    let mut c = machine("boot1").spawn()?;
    logs.push(c.log_path().to_path_buf());
    let l1 = follow(&mut c)?;
    require(&l1, "rebooting into it", &c)?;
    println!("\n-- boot 2: slot B boots on trial, its system confirms it (mark-good)");
    let mut c = machine("boot2").spawn()?;
    logs.push(c.log_path().to_path_buf());
    let l2 = follow(&mut c)?;
    require(&l2, "FWPACK-SYSTEM booted slot B version 2", &c)?;
    require(&l2, "confirmed: it is now the active slot", &c)?;

    println!("\n-- the device's boot state, read on the host:");
    let st = std::process::Command::new(&fwpack)
        .args(["status", "--target"])
        .arg(&device)
        .status()?;
    if !st.success() {
        bail!("fwpack status failed");
    }

    let done = format!(
        "==> done in {:.0} s. Artifacts:",
        t0.elapsed().as_secs_f64()
    );
    println!("\n{}", bold(&done));
    println!(
        "rpi-zero2w (write sdcard.img to a micro-SD card: dd if=… of=/dev/sdX bs=4M conv=fsync):"
    );
    for name in ["sdcard.img", "update.fwi", "manifest.json", "boot"] {
        let p = rpi_out.join(name);
        let size = dir_size(&p);
        println!("  {:<58} {:>10} bytes", p.display(), size);
    }
    println!("QEMU run:");
    println!("  {}", device.display());
    for l in logs {
        println!("  {} (console log)", l.display());
    }
    Ok(())
}

/// Streams the console until QEMU exits, showing the updater's and the
/// booted system's lines; returns every line.
fn follow(c: &mut Console) -> Result<Vec<String>> {
    let start = Instant::now();
    let mut modules = 0;
    loop {
        match c.wait_for("", WAIT) {
            Ok(line) => {
                let t = start.elapsed().as_secs_f64();
                if let Some(m) = line.strip_prefix("fwpack-updater: ") {
                    if m.starts_with("module ") {
                        modules += 1;
                        continue;
                    }
                    if m.contains("kernel modules ready") {
                        println!(
                            "  [{t:5.1}s] updater | {m} ({modules} loaded from the initramfs)"
                        );
                        continue;
                    }
                    println!("  [{t:5.1}s] updater | {m}");
                } else if let Some(m) = line.strip_prefix("FWPACK-SYSTEM ") {
                    let m = if m.starts_with("status ") {
                        "status (JSON) printed; see the console log".to_string()
                    } else {
                        m.to_string()
                    };
                    println!("  [{t:5.1}s] system  | {m}");
                } else if line.contains("Run /init as init process") {
                    println!("  [{t:5.1}s] kernel  | booted, starting the updater as PID 1");
                }
            }
            Err(WaitError::Exited { .. }) => return Ok(c.lines()),
            Err(e) => bail!("{e}"),
        }
    }
}

fn require(lines: &[String], pattern: &str, c: &Console) -> Result<()> {
    if lines.iter().any(|l| l.contains(pattern)) {
        return Ok(());
    }
    bail!(
        "the console never showed `{pattern}`; console log: {}",
        c.log_path().display()
    )
}

fn shown(c: &std::process::Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn dir_size(p: &Path) -> u64 {
    if p.is_dir() {
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
            .unwrap_or(0)
    } else {
        p.metadata().map(|m| m.len()).unwrap_or(0)
    }
}
