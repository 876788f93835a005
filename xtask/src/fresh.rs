//! `cargo xtask fresh`: the README's two commands on a machine that has
//! nothing but Debian 12 and a Rust toolchain.
//!
//! A developer machine always has something installed by hand, so a green
//! `cargo xtask test` there cannot show that `deps.rs` is complete. This
//! builds a minimal Debian chroot (debootstrap `minbase`, from the mirror the
//! host's apt already uses), puts a Rust toolchain in it, clones the
//! repository at a given commit and runs `cargo xtask demo` then
//! `cargo xtask test` inside, printing each one's exit status and wall time.
//!
//! What the chroot starts with, beyond `minbase`, is what a Rust toolchain
//! itself needs to build anything (the C linker rustc calls, and CA
//! certificates for cargo to reach crates.io): Debian's own `rustc` package
//! depends on gcc and libc6-dev for the same reason. Everything else must
//! come from `cargo xtask deps`.
//!
//! The toolchain is copied from the host (rustup's usual download source is
//! not reachable from this workplace); the run says so.
//!
//! Slow (a cold build of the workspace plus the whole test suite), so it is
//! not part of `cargo xtask test`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xshell::{cmd, Shell};

/// Packages the chroot gets before the repository is cloned: the
/// prerequisites of a working `cargo build`, not of this project.
const TOOLCHAIN_PREREQS: &[&str] = &["gcc", "libc6-dev", "ca-certificates"];

/// The README's two commands, in order.
const README_COMMANDS: &[&str] = &["demo", "test"];

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

struct Opts {
    rev: Option<String>,
    only: Option<String>,
    keep: bool,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        rev: None,
        only: None,
        keep: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rev" => o.rev = Some(it.next().context("--rev needs a value")?.clone()),
            "--only" => {
                let c = it.next().context("--only needs demo or test")?;
                if !README_COMMANDS.contains(&c.as_str()) {
                    bail!("--only takes demo or test, not `{c}`");
                }
                o.only = Some(c.clone());
            }
            "--keep" => o.keep = true,
            other => {
                bail!("fresh: unknown argument `{other}` (--rev REV, --only demo|test, --keep)")
            }
        }
    }
    Ok(o)
}

pub fn run(sh: &Shell, root: &Path, args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    if !is_root() {
        bail!("fresh needs root (debootstrap, chroot, bind mounts, loop devices)");
    }
    // Interrupting the run must still unmount /proc, /sys and /dev from the
    // chroot: the child in the chroot dies of the signal, we see a failed
    // command, and the mount guard's Drop runs. A handler (not SIG_IGN)
    // because ignored signals stay ignored across exec.
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root.join("target"), PathBuf::from);
    let work = target.join("fresh");
    std::fs::create_dir_all(&work)?;
    let work = work.canonicalize()?;

    let rev = match &opts.rev {
        Some(r) => r.clone(),
        None => "HEAD".to_string(),
    };
    let spec = format!("{rev}^{{commit}}");
    let commit = cmd!(sh, "git -C {root} rev-parse --verify {spec}")
        .read()
        .with_context(|| format!("resolve {rev}"))?;
    if opts.rev.is_none()
        && !cmd!(sh, "git -C {root} status --porcelain")
            .read()?
            .is_empty()
    {
        eprintln!("fresh: note: the work tree has uncommitted changes; the chroot gets commit {commit} only");
    }

    let (codename, mirror, sources) = host_debian_mirror()?;
    println!("fresh: Debian {codename} (minbase) from {mirror}, commit {commit}");

    ensure_debootstrap(sh)?;
    let t0 = Instant::now();
    let base = base_tarball(sh, &work, &codename, &mirror)?;
    let t_base = t0.elapsed();

    let chroot = work.join("root");
    unmount_under(&chroot)?;
    if chroot.exists() {
        cmd!(sh, "rm -rf --one-file-system {chroot}").run()?;
    }
    std::fs::create_dir_all(&chroot)?;
    let t1 = Instant::now();
    cmd!(sh, "tar -xpf {base} --numeric-owner -C {chroot}").run()?;
    // apt inside the chroot (deps.rs) reads the same sources as the host's.
    for (src, rel) in &sources {
        let dst = chroot.join(rel);
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::copy(src, &dst).with_context(|| format!("copy {}", src.display()))?;
    }
    if !sources
        .iter()
        .any(|(_, rel)| rel == Path::new("etc/apt/sources.list"))
    {
        // debootstrap's own one-line list would duplicate the host's entries.
        let _ = std::fs::remove_file(chroot.join("etc/apt/sources.list"));
    }
    host_network_setup(sh, &chroot)?;
    let toolchain = copy_toolchain(sh, &chroot)?;
    println!(
        "fresh: Rust toolchain {toolchain} COPIED from the host's rustup home (rustup's usual \
         download source is not reachable here), with the targets the host had installed"
    );
    let clone = chroot.join("root/fwpack");
    cmd!(sh, "git clone --quiet --no-checkout {root} {clone}").run()?;
    cmd!(sh, "git -C {clone} checkout --quiet --detach {commit}").run()?;
    let t_setup = t1.elapsed();
    println!(
        "fresh: base tarball {} ({}), pristine chroot + toolchain + clone in {}",
        base.display(),
        if t_base.as_secs() > 5 {
            format!("built in {}", hms(t_base))
        } else {
            "cached".to_string()
        },
        hms(t_setup)
    );

    let mounts = Mounts::bind(&chroot)?;
    let mut results = Vec::new();
    for c in README_COMMANDS {
        if opts.only.as_deref().is_some_and(|o| o != *c) {
            continue;
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        let line = format!("cargo xtask {c}");
        println!("fresh: ===== {line} (in the chroot) =====");
        let log = format!("/root/{c}.log");
        let script = format!("set -o pipefail; cd /root/fwpack && {line} 2>&1 | tee {log}");
        let t = Instant::now();
        let st = Command::new("chroot")
            .arg(&chroot)
            .args(["/usr/bin/env", "-i"])
            .args(chroot_env())
            .args(["/bin/bash", "-c", &script])
            .status()
            .context("chroot")?;
        let took = t.elapsed();
        let code = st
            .code()
            .map_or_else(|| format!("signal {:?}", st_signal(&st)), |c| c.to_string());
        println!("fresh: {line}: exit {code}, {}", hms(took));
        let _ = std::fs::copy(chroot.join(&log[1..]), work.join(format!("{c}.log")));
        results.push((line, st.success(), code, took));
    }
    drop(mounts);

    println!(
        "fresh: summary (Debian {codename} minbase + {}, commit {commit}):",
        TOOLCHAIN_PREREQS.join(" ")
    );
    for (line, _, code, took) in &results {
        println!("  {line:<18} exit {code:<4} {}", hms(*took));
    }
    println!("fresh: logs in {}", work.display());
    if !opts.keep {
        unmount_under(&chroot)?;
        cmd!(sh, "rm -rf --one-file-system {chroot}").run()?;
    } else {
        println!("fresh: chroot kept at {}", chroot.display());
    }
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    if let Some((line, ..)) = results.iter().find(|r| !r.1) {
        bail!("`{line}` failed in the fresh chroot");
    }
    Ok(())
}

/// What this machine needs to reach the package registries at all, not
/// what the project needs: its resolver, the CA certificates it added
/// locally (the registries are reached through a TLS-inspecting egress
/// here), and pip's pointer to the system bundle. Copied as they are.
fn host_network_setup(sh: &Shell, chroot: &Path) -> Result<()> {
    std::fs::copy("/etc/resolv.conf", chroot.join("etc/resolv.conf")).context("resolv.conf")?;
    let mut copied = vec!["/etc/resolv.conf".to_string()];
    let local_ca = Path::new("/usr/local/share/ca-certificates");
    if let Ok(rd) = std::fs::read_dir(local_ca) {
        let dst = chroot.join("usr/local/share/ca-certificates");
        std::fs::create_dir_all(&dst)?;
        let mut n = 0;
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "crt") && p.is_file() {
                std::fs::copy(&p, dst.join(e.file_name()))?;
                n += 1;
            }
        }
        if n > 0 {
            cmd!(sh, "chroot {chroot} update-ca-certificates --fresh")
                .quiet()
                .ignore_stdout()
                .run()
                .context("update-ca-certificates in the chroot")?;
            copied.push(format!(
                "{n} local CA certificate(s) from {}",
                local_ca.display()
            ));
        }
    }
    if Path::new("/etc/pip.conf").is_file() {
        std::fs::copy("/etc/pip.conf", chroot.join("etc/pip.conf"))?;
        copied.push("/etc/pip.conf".into());
    }
    println!(
        "fresh: this machine's network setup copied in (to reach the registries, not project setup): {}",
        copied.join(", ")
    );
    Ok(())
}

fn chroot_env() -> Vec<String> {
    let mut env = vec![
        "HOME=/root".to_string(),
        "USER=root".to_string(),
        "PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            .to_string(),
        "LANG=C.UTF-8".to_string(),
        "TERM=dumb".to_string(),
    ];
    // Keep a build-parallelism cap the caller set; nothing else of the
    // host's environment leaks in.
    if let Ok(j) = std::env::var("CARGO_BUILD_JOBS") {
        env.push(format!("CARGO_BUILD_JOBS={j}"));
    }
    env
}

fn st_signal(st: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    st.signal()
}

fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

/// An apt source file: (host path, the same path relative to the chroot).
type SourceFile = (PathBuf, PathBuf);

/// The host's Debian entry (codename, mirror URI) and the apt source files
/// that name it, as (host path, path relative to the chroot).
fn host_debian_mirror() -> Result<(String, String, Vec<SourceFile>)> {
    let os = std::fs::read_to_string("/etc/os-release").context("/etc/os-release")?;
    let codename = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .context("no VERSION_CODENAME in /etc/os-release")?;
    let mut files = Vec::new();
    if Path::new("/etc/apt/sources.list").is_file() {
        files.push(PathBuf::from("/etc/apt/sources.list"));
    }
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut v: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        v.sort();
        files.extend(v);
    }
    let mut mirror = None;
    let mut used = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let found = if f.extension().is_some_and(|e| e == "sources") {
            deb822_mirror(&text, &codename)
        } else {
            one_line_mirror(&text, &codename)
        };
        if let Some(m) = found {
            mirror.get_or_insert(m);
            let rel = f.strip_prefix("/").unwrap_or(&f).to_path_buf();
            used.push((f, rel));
        }
    }
    let mirror = mirror.with_context(|| {
        format!("no `deb URI {codename} main` entry in /etc/apt/sources.list{{,.d}}")
    })?;
    Ok((codename, mirror, used))
}

/// `deb [opts] URI SUITE COMPONENTS…` lines.
fn one_line_mirror(text: &str, codename: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace().peekable();
        if w.next()? != "deb" {
            return None;
        }
        if w.peek()?.starts_with('[') {
            for x in w.by_ref() {
                if x.ends_with(']') {
                    break;
                }
            }
        }
        let uri = w.next()?;
        (w.next()? == codename).then(|| uri.to_string())
    })
}

/// deb822 stanzas: `Types: deb`, `URIs:`, `Suites:` containing the codename.
fn deb822_mirror(text: &str, codename: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let types = field("Types")?;
        let suites = field("Suites")?;
        let uris = field("URIs")?;
        let enabled = field("Enabled").is_none_or(|e| e != "no");
        (enabled
            && types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == codename))
        .then(|| uris.split_whitespace().next().map(str::to_string))
        .flatten()
    })
}

fn ensure_debootstrap(sh: &Shell) -> Result<()> {
    if Path::new("/usr/sbin/debootstrap").exists() || crate::deps::on_path("debootstrap") {
        return Ok(());
    }
    eprintln!("fresh: installing debootstrap on the host");
    let _env = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    cmd!(
        sh,
        "apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends debootstrap"
    )
    .run()
    .context("apt-get install debootstrap")
}

/// `<work>/debian-<codename>-minbase.tar`, built by debootstrap once and
/// unpacked afresh for every run (a run never sees the previous one's
/// changes). Rebuilt when the mirror or the prerequisites change.
fn base_tarball(sh: &Shell, work: &Path, codename: &str, mirror: &str) -> Result<PathBuf> {
    let tar = work.join(format!("debian-{codename}-minbase.tar"));
    let key_file = work.join(format!("debian-{codename}-minbase.key"));
    let include = TOOLCHAIN_PREREQS.join(",");
    let key = format!("{codename} {mirror} minbase {include}\n");
    if tar.is_file() && std::fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str()) {
        return Ok(tar);
    }
    let stage = work.join("debootstrap.tmp");
    unmount_under(&stage)?;
    if stage.exists() {
        cmd!(sh, "rm -rf --one-file-system {stage}").run()?;
    }
    println!(
        "fresh: debootstrap --variant=minbase --include={include} {codename} (first run only)"
    );
    cmd!(
        sh,
        "debootstrap --variant=minbase --include={include} {codename} {stage} {mirror}"
    )
    .run()
    .context("debootstrap")?;
    // debootstrap leaves its package cache; the tarball need not carry it.
    let _ = cmd!(sh, "chroot {stage} apt-get clean").quiet().run();
    let part = tar.with_extension("tar.part");
    cmd!(sh, "tar -cf {part} --numeric-owner -C {stage} .").run()?;
    std::fs::rename(&part, &tar)?;
    std::fs::write(&key_file, key)?;
    cmd!(sh, "rm -rf --one-file-system {stage}").run()?;
    Ok(tar)
}

/// Copy the host's active toolchain (with its installed targets and
/// components) and the rustup/cargo proxies into the chroot's /root.
/// Only the active toolchain: the others are not what a new user has.
fn copy_toolchain(sh: &Shell, chroot: &Path) -> Result<String> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    let rustup_home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".rustup"));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cargo"));
    let active = cmd!(sh, "rustup show active-toolchain").read()?;
    let name = active
        .split_whitespace()
        .next()
        .context("rustup show active-toolchain printed nothing")?
        .to_string();
    let src = rustup_home.join("toolchains").join(&name).canonicalize()?;
    let dst_home = chroot.join("root/.rustup");
    let dst = dst_home.join("toolchains").join(&name);
    std::fs::create_dir_all(dst.parent().context("toolchains dir")?)?;
    cmd!(sh, "cp -a {src} {dst}").run()?;
    std::fs::write(
        dst_home.join("settings.toml"),
        format!(
            "version = \"12\"\ndefault_toolchain = \"{name}\"\nprofile = \"default\"\n\
             auto_self_update = \"disable\"\n\n[overrides]\n"
        ),
    )?;
    let bin = cargo_home.join("bin");
    let dst_bin = chroot.join("root/.cargo/bin");
    std::fs::create_dir_all(&dst_bin)?;
    // One cp for all proxies keeps them hard links to one rustup binary.
    let proxies: Vec<PathBuf> = std::fs::read_dir(&bin)
        .with_context(|| bin.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    cmd!(sh, "cp -a {proxies...} {dst_bin}").run()?;
    Ok(name)
}

/// proc, sys and dev in the chroot: the tests use loop devices as root and
/// QEMU (KVM when /dev/kvm is there). Unmounted on drop, also when a
/// command failed or the run was interrupted.
struct Mounts {
    chroot: PathBuf,
}

impl Mounts {
    fn bind(chroot: &Path) -> Result<Self> {
        let m = Mounts {
            chroot: chroot.to_path_buf(),
        };
        let p = |d: &str| chroot.join(d);
        // The chroot's root must be a mount point, as `/` is on any real
        // machine: otherwise /proc/self/mountinfo inside has no `/` entry
        // (the updater's busy check reads it, and its test says so).
        run_ok(Command::new("mount").arg("--bind").arg(chroot).arg(chroot))?;
        run_ok(Command::new("mount").arg("--make-private").arg(chroot))?;
        run_ok(
            Command::new("mount")
                .args(["-t", "proc", "proc"])
                .arg(p("proc")),
        )?;
        for d in ["sys", "dev"] {
            run_ok(
                Command::new("mount")
                    .arg("--rbind")
                    .arg(format!("/{d}"))
                    .arg(p(d)),
            )?;
            // Unmounting the chroot's copies must not propagate to the host.
            run_ok(Command::new("mount").arg("--make-rslave").arg(p(d)))?;
        }
        Ok(m)
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        if let Err(e) = unmount_under(&self.chroot) {
            eprintln!("fresh: WARNING: {e:#}");
        }
    }
}

fn run_ok(c: &mut Command) -> Result<()> {
    let st = c.status().with_context(|| format!("{c:?}"))?;
    if !st.success() {
        bail!("{c:?} failed: {st}");
    }
    Ok(())
}

/// Unmount everything mounted at or below `dir` (deepest first), so a
/// leftover from a killed run never lets `rm -rf` reach the host's /dev.
fn unmount_under(dir: &Path) -> Result<()> {
    let Ok(dir) = dir.canonicalize() else {
        return Ok(());
    };
    for _ in 0..3 {
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        let mut points: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| PathBuf::from(p.replace("\\040", " ")))
            .filter(|p| p.starts_with(&dir))
            .collect();
        if points.is_empty() {
            return Ok(());
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        points.dedup();
        for p in points {
            let _ = Command::new("umount").arg("-l").arg(&p).status();
        }
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    if info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| Path::new(p).starts_with(&dir))
    {
        bail!(
            "mounts remain under {}; unmount them by hand",
            dir.display()
        );
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mirror_in_both_formats() {
        let deb822 = "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: http://m.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            deb822_mirror(deb822, "bookworm").as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(deb822_mirror(deb822, "trixie"), None);
        let list = "# c\ndeb-src http://x/debian bookworm main\ndeb [arch=amd64 signed-by=/k] http://m/debian bookworm main\n";
        assert_eq!(
            one_line_mirror(list, "bookworm").as_deref(),
            Some("http://m/debian")
        );
        assert_eq!(
            one_line_mirror("deb http://m/debian bookworm-updates main\n", "bookworm"),
            None
        );
    }
}
