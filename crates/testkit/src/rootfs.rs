//! Root filesystems for the slots of end-to-end runs (`cargo xtask e2e`,
//! `cargo xtask demo`): an ext4 image made with `mkfs.ext4 -d` (no root,
//! no loop device) whose `/sbin/init` is a tiny static program that
//!
//! 1. prints `FWPACK-SYSTEM booted slot <S> version <V> pid <P>` (slot from
//!    the `/run/fwpack/boot.conf` the PID-1 updater leaves, version from
//!    the filesystem), plus the greeting when there is one;
//! 2. reads `/data/blob` (if any) to the end and prints
//!    `FWPACK-SYSTEM blob <bytes> fold <hex>`: every byte of it went through
//!    the kernel's ext4 and the block device, so a mixed or torn slot shows
//!    up here as an I/O error or a different fold;
//! 3. confirms the slot with `/run/fwpack/fwpack-updater mark-good` when
//!    the image says so (`FWPACK-SYSTEM mark-good: exit 0`), else prints
//!    `FWPACK-SYSTEM not confirming this slot`;
//! 4. prints `FWPACK-SYSTEM status <json>` and powers off.
//!
//! The blob is seeded pseudo-random bytes: incompressible, so a large one
//! makes the apply (zstd decode, CRC, write) take long enough under TCG for
//! power cuts to land in the middle of it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kernels::Arch;
use crate::{io_err, run, Error, Result};

/// Lines the init prints start with this.
pub const PREFIX: &str = "FWPACK-SYSTEM";

const INIT: &str = r#"
use std::io::{Read, Write};
use std::process::Command;

extern "C" {
    fn reboot(cmd: i32) -> i32;
    fn sync();
}
const RB_POWER_OFF: i32 = 0x4321fedc;

fn main() {
    let mut out = std::io::stdout();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let version = read("/etc/fwpack-system/version");
    let run = read("/run/fwpack/boot.conf");
    let slot = run.lines().find_map(|l| l.strip_prefix("slot = ")).unwrap_or("?");
    let _ = writeln!(out, "FWPACK-SYSTEM booted slot {} version {} pid {}", slot.trim(), version.trim(), std::process::id());
    let greeting = read("/etc/fwpack-system/greeting");
    if !greeting.trim().is_empty() {
        let _ = writeln!(out, "FWPACK-SYSTEM {}", greeting.trim());
    }
    if let Ok(mut f) = std::fs::File::open("/data/blob") {
        let mut buf = vec![0u8; 1 << 20];
        let (mut h, mut total, mut err) = (0xcbf2_9ce4_8422_2325u64, 0u64, None);
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    for w in buf[..n].chunks(8) {
                        let mut b = [0u8; 8];
                        b[..w.len()].copy_from_slice(w);
                        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(0x0000_0100_0000_01b3);
                    }
                    total += n as u64;
                }
                Err(e) => { err = Some(e); break; }
            }
        }
        match err {
            None => { let _ = writeln!(out, "FWPACK-SYSTEM blob {} fold {:016x}", total, h); }
            Some(e) => { let _ = writeln!(out, "FWPACK-SYSTEM blob read error after {} bytes: {}", total, e); }
        }
    }
    if std::path::Path::new("/etc/fwpack-system/mark-good").exists() {
        let st = Command::new("/run/fwpack/fwpack-updater").arg("mark-good").status();
        match st {
            Ok(s) => { let _ = writeln!(out, "FWPACK-SYSTEM mark-good: exit {}", s.code().unwrap_or(-1)); }
            Err(e) => { let _ = writeln!(out, "FWPACK-SYSTEM mark-good: {}", e); }
        }
    } else {
        let _ = writeln!(out, "FWPACK-SYSTEM not confirming this slot");
    }
    match Command::new("/run/fwpack/fwpack-updater").args(["status", "--json"]).output() {
        Ok(o) => { let _ = writeln!(out, "FWPACK-SYSTEM status {}", String::from_utf8_lossy(&o.stdout).trim()); }
        Err(e) => { let _ = writeln!(out, "FWPACK-SYSTEM status failed: {}", e); }
    }
    let _ = out.flush();
    if std::process::id() == 1 {
        unsafe { sync(); reboot(RB_POWER_OFF); }
        loop { std::thread::park(); }
    }
}
"#;

/// What goes into one root filesystem.
#[derive(Clone, Debug)]
pub struct Spec {
    /// ext4 volume label and file name stem.
    pub name: String,
    pub version: u64,
    /// The system confirms its slot (`mark-good`) when it boots.
    pub confirm: bool,
    /// Size of `/data/blob` in bytes (0: no blob).
    pub blob_bytes: u64,
    /// Seed of the blob's bytes.
    pub seed: u64,
    /// An extra line the init prints after booting (for the demo).
    pub greeting: Option<String>,
    /// Free space to leave for what a build writes into the image: a
    /// `boot: kexec` board's slot kernel and initrd (`fwpack build`).
    pub room_mib: u64,
}

/// A built root filesystem image.
#[derive(Clone, Debug)]
pub struct Rootfs {
    pub path: PathBuf,
    pub version: u64,
    /// What the init prints for the blob: `(bytes, fold)`.
    pub blob: Option<(u64, u64)>,
}

impl Rootfs {
    /// The `FWPACK-SYSTEM blob …` line a correct boot of this image prints.
    pub fn blob_line(&self) -> Option<String> {
        self.blob
            .map(|(n, h)| format!("{PREFIX} blob {n} fold {h:016x}"))
    }
}

/// The static init for `arch` (built once, cached).
pub fn init_binary(arch: Arch) -> Result<PathBuf> {
    crate::program::build_static("fwpack-system-init", INIT, arch)
}

/// Splitmix64: a tiny, well-mixed generator; the same seed gives the same
/// bytes on every machine and Rust version.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Writes `len` seeded pseudo-random bytes to `path`; returns the fold the
/// guest init computes over them.
fn write_blob(path: &Path, len: u64, seed: u64) -> Result<u64> {
    let f = fs::File::create(path).map_err(io_err(path))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let mut rng = SplitMix64(seed);
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut left = len;
    while left > 0 {
        let word = rng.next_u64().to_le_bytes();
        let n = left.min(8) as usize;
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&word[..n]);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(0x0000_0100_0000_01b3);
        w.write_all(&word[..n]).map_err(io_err(path))?;
        left -= n as u64;
    }
    w.flush().map_err(io_err(path))?;
    Ok(h)
}

/// Builds `<work>/<name>.ext4` for `arch`: large enough for the blob plus
/// some room, at least 8 MiB.
pub fn build(spec: &Spec, arch: Arch, work: &Path) -> Result<Rootfs> {
    let tree = work.join(format!("{}-tree", spec.name));
    if tree.exists() {
        fs::remove_dir_all(&tree).map_err(io_err(&tree))?;
    }
    for d in [
        "sbin",
        "etc/fwpack-system",
        "data",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
    ] {
        let p = tree.join(d);
        fs::create_dir_all(&p).map_err(io_err(&p))?;
    }
    let init = init_binary(arch)?;
    let dst = tree.join("sbin/init");
    fs::copy(&init, &dst).map_err(io_err(&dst))?;
    let put = |rel: &str, text: &str| {
        let p = tree.join(rel);
        fs::write(&p, text).map_err(io_err(&p))
    };
    put("etc/fwpack-system/version", &format!("{}\n", spec.version))?;
    if spec.confirm {
        put("etc/fwpack-system/mark-good", "")?;
    }
    if let Some(g) = &spec.greeting {
        put("etc/fwpack-system/greeting", &format!("{g}\n"))?;
    }
    let blob = if spec.blob_bytes > 0 {
        let fold = write_blob(&tree.join("data/blob"), spec.blob_bytes, spec.seed)?;
        Some((spec.blob_bytes, fold))
    } else {
        None
    };
    // A small ext4 uses 1 KiB blocks: its journal (4 MiB), inode tables
    // and extent blocks take about 10 MiB next to a 48 MiB file.
    let blob_mib = spec.blob_bytes.div_ceil(1 << 20);
    let mib = (blob_mib + blob_mib / 8 + 6).max(8) + spec.room_mib;
    let img = work.join(format!("{}.ext4", spec.name));
    let _ = fs::remove_file(&img);
    let mkfs = crate::tools::find("mkfs.ext4")
        .ok_or_else(|| Error::Other("mkfs.ext4 not found (package e2fsprogs)".into()))?;
    run(Command::new(mkfs)
        .args(["-q", "-F", "-L", &spec.name, "-d"])
        .arg(&tree)
        .arg(&img)
        .arg(format!("{mib}M")))?;
    fs::remove_dir_all(&tree).map_err(io_err(&tree))?;
    Ok(Rootfs {
        path: img,
        version: spec.version,
        blob,
    })
}

/// An ext4 filesystem (no partition table) labelled `label` holding
/// `files` as `(path inside, source)`: the "second disk" an update can be
/// delivered on (`images = partition:LABEL=<label>:/<dir>`).
pub fn data_disk(
    label: &str,
    files: &[(&str, &Path)],
    work: &Path,
    size_mib: u64,
) -> Result<PathBuf> {
    let tree = work.join(format!("{label}-tree"));
    if tree.exists() {
        fs::remove_dir_all(&tree).map_err(io_err(&tree))?;
    }
    for (rel, src) in files {
        let dst = tree.join(rel.trim_start_matches('/'));
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fs::copy(src, &dst).map_err(io_err(&dst))?;
    }
    let img = work.join(format!("{label}.ext4"));
    let _ = fs::remove_file(&img);
    let mkfs = crate::tools::find("mkfs.ext4")
        .ok_or_else(|| Error::Other("mkfs.ext4 not found (package e2fsprogs)".into()))?;
    run(Command::new(mkfs)
        .args(["-q", "-F", "-L", label, "-d"])
        .arg(&tree)
        .arg(&img)
        .arg(format!("{size_mib}M")))?;
    fs::remove_dir_all(&tree).map_err(io_err(&tree))?;
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_the_reference_sequence() {
        // First outputs of the reference splitmix64 for seed 0.
        let mut r = SplitMix64(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    /// The fold returned while writing is the fold of the bytes on disk
    /// (the guest init computes the same fold over what it reads).
    #[test]
    fn blob_fold_matches_the_file() {
        let dir = std::env::temp_dir().join(format!("testkit-blob-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("blob");
        let fold = write_blob(&p, 1_000_003, 7).unwrap();
        let data = fs::read(&p).unwrap();
        assert_eq!(data.len(), 1_000_003);
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for w in data.chunks(8) {
            let mut b = [0u8; 8];
            b[..w.len()].copy_from_slice(w);
            h = (h ^ u64::from_le_bytes(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        assert_eq!(h, fold);
        // Incompressible enough that zstd cannot make the apply trivial.
        let distinct = data.iter().collect::<std::collections::HashSet<_>>().len();
        assert_eq!(distinct, 256);
        fs::remove_dir_all(&dir).unwrap();
    }
}
