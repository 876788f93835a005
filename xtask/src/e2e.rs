//! `cargo xtask e2e [--full] [--board B] [--cuts N] [--seed S] [--blob-mib M]`:
//! the product's whole story in QEMU (TCG), on the artifacts `fwpack build`
//! makes, for the qemu-x86_64 board (and qemu-aarch64 and qemu-riscv64
//! with `--full`).
//!
//! The story, on one disk (a copy of the v1 `sdcard.img`):
//! 1. v2 (a 48 MiB-blob root filesystem, ~60 MiB) arrives on a second
//!    virtual disk: an ext4 file system labelled FWUPDATES, named by
//!    `fwpack.images=partition:LABEL=FWUPDATES:/updates` on the kernel
//!    command line. The updater verifies it and writes it into slot B;
//! 2. B boots on trial, reads its whole data blob through ext4, confirms;
//! 3. v3 arrives in the initramfs (`fwpack build --include-image`; the
//!    qemu boards' 32 MiB boot partition cannot hold v2 that way) and is
//!    applied to slot A; v3 never confirms;
//! 4. after its trial boots, the updater falls back to B (v2), and does not
//!    apply v3 again.
//!
//! Power cuts, each run on a fresh copy of the v1 disk: boot with v2 on the
//! second disk, wait for the apply to start on the console, wait a delay
//! drawn from a seeded PRNG within the apply's duration measured in step 1
//! (the injected fault, not a wait for something), SIGKILL QEMU. Every
//! third run is cut twice (the second cut lands in the next boot's apply).
//! Then the host reads the state area (`fwpack status --json`) and checks
//! the invariants, and the disk boots again: in two runs of three with the
//! update still there (it must resume or restart and complete, then B boots
//! and confirms), in the third without it (the old slot must boot). A slot the state
//! area calls complete must hold exactly its image's bytes, slot A must be
//! untouched v1 throughout, and the booted system must read its whole data
//! blob back with the right fold.
//!
//! Disks are `cache=none` (see `testkit::machine`). Every wait is a console
//! line with a timeout. Console logs of failing runs are copied to
//! `target/fwpack-e2e/failed-logs/` and their paths printed.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use testkit::kernels::Arch;
use testkit::machine::Machine;
use testkit::qemu::Console;
use testkit::rootfs::{self, Rootfs, SplitMix64};

use crate::inputs::{self, Build};

/// Longest wait for any one console line (a loaded 2-core machine under
/// TCG is slow; a healthy line comes in seconds).
const WAIT: Duration = Duration::from_secs(300);
const UPDATES_LABEL: &str = "FWUPDATES";
/// Free space a `boot: kexec` board's root filesystem keeps for what
/// `fwpack build` adds (kernel, initrd, slot updater; ~40 MB on arm64).
const KEXEC_ROOM_MIB: u64 = 48;
/// Where the updater sees v2 on the second disk.
const V2: &str = "/mnt/images/updates/update-v2.fwi";

#[derive(Clone, Copy, Debug)]
pub struct BoardDef {
    pub name: &'static str,
    pub arch: Arch,
    /// Kernel file name in the boot directory.
    pub kernel_name: &'static str,
}

pub const X86: BoardDef = BoardDef {
    name: "qemu-x86_64",
    arch: Arch::X86_64,
    kernel_name: "vmlinuz",
};
pub const AARCH64: BoardDef = BoardDef {
    name: "qemu-aarch64",
    arch: Arch::Aarch64,
    kernel_name: "Image",
};
/// QEMU virt + Debian's OpenSBI, Debian trixie's riscv64 kernel.
pub const RISCV64: BoardDef = BoardDef {
    name: "qemu-riscv64",
    arch: Arch::Riscv64,
    kernel_name: "Image",
};

struct Opts {
    boards: Vec<BoardDef>,
    cuts: usize,
    seed: u64,
    blob_mib: u64,
    /// Trial boots for the never-confirming v3 (None: the board's value).
    tries: Option<u8>,
    /// Aim the first cut at the apply's first journal checkpoint (read
    /// from the disk's state area while QEMU runs), so even the 3-cut run
    /// inside `cargo xtask test` exercises a resume; fail if none resumed.
    resume_first: bool,
}

const USAGE: &str =
    "usage: cargo xtask e2e [--full] [--board qemu-x86_64|qemu-aarch64|qemu-riscv64] [--cuts N] [--seed S] [--blob-mib M]";

impl Opts {
    fn parse(args: &[String]) -> Result<Opts> {
        let mut full = false;
        let (mut board, mut cuts, mut seed, mut blob) = (None, None, 0x5eed_f1a5_u64, 48u64);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = |what: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| anyhow!("{a} needs {what}\n{USAGE}"))
            };
            match a.as_str() {
                "--full" => full = true,
                "--board" => board = Some(val("a board")?),
                "--cuts" => cuts = Some(val("a number")?.parse().context("--cuts")?),
                "--seed" => seed = val("a number")?.parse().context("--seed")?,
                "--blob-mib" => blob = val("a number")?.parse().context("--blob-mib")?,
                _ => bail!("{USAGE}"),
            }
        }
        let boards = match board.as_deref() {
            Some("qemu-x86_64") => vec![X86],
            Some("qemu-aarch64") => vec![AARCH64],
            Some("qemu-riscv64") => vec![RISCV64],
            Some(other) => {
                bail!("e2e runs on qemu-x86_64, qemu-aarch64 or qemu-riscv64, not `{other}`")
            }
            None if full => vec![X86, AARCH64, RISCV64],
            None => vec![X86],
        };
        // --full: >= 20 cuts over both boards (split evenly); short: a
        // handful on one.
        let cuts = cuts.unwrap_or(if full { 24 } else { 3 });
        // The root filesystem is about blob * 9/8 + 6 MiB (+ KEXEC_ROOM_MIB
        // on kexec boards, whose slots are bigger); the smallest slots are
        // 64 MiB.
        if !(1..=50).contains(&blob) {
            bail!("--blob-mib must be 1..=50 (the smallest slots are 64 MiB)");
        }
        Ok(Opts {
            boards,
            cuts,
            seed,
            blob_mib: blob,
            tries: if full { None } else { Some(1) },
            resume_first: !full,
        })
    }
}

/// One power cut and what followed it.
#[derive(Clone, Debug, Default)]
struct CutRow {
    board: &'static str,
    run: usize,
    /// 1 for the first cut of a run, 2 for a cut of the resumed apply.
    nth: usize,
    /// Seconds after the console showed the apply starting.
    cut_at: f64,
    /// The last updater line before the cut (where it landed).
    phase: String,
    /// Bytes the guest reported written (its last progress line).
    written_seen: u64,
    /// Bytes durable per the journal, read on the host after the cut.
    journal_done: Option<u64>,
    /// Slot B's state after the cut (host).
    b_state: String,
    /// Bytes the next apply skipped (resumed from the journal).
    resumed_at: Option<u64>,
    /// Bytes the next apply wrote.
    rewritten: Option<u64>,
    outcome: String,
    ok: bool,
}

struct BoardReport {
    name: &'static str,
    story: Vec<(String, f64)>,
    rows: Vec<CutRow>,
    failures: Vec<String>,
    secs: f64,
}

pub fn run(sh: &xshell::Shell, args: &[String]) -> Result<()> {
    let opts = Opts::parse(args)?;
    crate::deps::ensure(sh)?;
    let started = Instant::now();
    let fwpack = inputs::fwpack_binary()?;
    let key = inputs::dev_key(&fwpack)?;
    let root = testkit::target_dir().join("fwpack-e2e");
    fs::create_dir_all(&root)?;
    let failed_dir = root.join("failed-logs");
    let _ = fs::remove_dir_all(&failed_dir);
    let mut rng = SplitMix64(opts.seed);
    let n = opts.boards.len();
    let mut reports = Vec::new();
    for (i, def) in opts.boards.iter().enumerate() {
        // Spread the cuts: the first board takes the remainder.
        let cuts = opts.cuts / n + usize::from(i < opts.cuts % n);
        let t = Instant::now();
        let mut b = BoardRun::prepare(*def, &fwpack, &key, &root, &opts, &failed_dir)?;
        let story = b.story(opts.tries);
        let rows = match &story {
            Ok(_) => b.cuts(cuts, &mut rng),
            Err(_) => Vec::new(),
        };
        let mut failures = b.failures.clone();
        if let Err(e) = &story {
            failures.push(format!("{}: story: {e:#}", def.name));
        }
        reports.push(BoardReport {
            name: def.name,
            story: story.unwrap_or_default(),
            rows,
            failures,
            secs: t.elapsed().as_secs_f64(),
        });
    }
    let text = summary(&reports, started.elapsed().as_secs_f64(), &opts);
    print!("{text}");
    let _ = fs::write(root.join("summary.txt"), &text);
    println!("(summary saved to {})", root.join("summary.txt").display());
    let failed: Vec<&String> = reports.iter().flat_map(|r| &r.failures).collect();
    if !failed.is_empty() {
        println!("console logs of the failing runs: {}", failed_dir.display());
        bail!("e2e: {} failure(s)", failed.len());
    }
    Ok(())
}

/// Everything one board's runs share.
struct BoardRun<'a> {
    def: BoardDef,
    fwpack: &'a Path,
    work: PathBuf,
    failed_dir: &'a Path,
    kernel: PathBuf,
    /// Initramfs of the v1 build: no update in it.
    initrd_v1: PathBuf,
    /// Initramfs of the v3 build, carrying v3's update.fwi.
    initrd_v3: PathBuf,
    pristine: PathBuf,
    updates_disk: PathBuf,
    v1: Rootfs,
    v2: Rootfs,
    v3: Rootfs,
    /// From "applying update" to "signature ok; writing" (the checks
    /// before the first write), measured in story step 1.
    verify_window: Duration,
    /// From "signature ok; writing" to "pending" (the one authenticated
    /// pass: write, sync, read back, commit), measured in story step 1.
    write_window: Duration,
    /// Console logs of the current run (copied away if it fails).
    logs: Vec<PathBuf>,
    resume_first: bool,
    failures: Vec<String>,
}

fn say(board: &str, msg: &str) {
    println!("[e2e {board}] {msg}");
}

impl<'a> BoardRun<'a> {
    fn prepare(
        def: BoardDef,
        fwpack: &'a Path,
        key: &Path,
        root: &Path,
        opts: &Opts,
        failed_dir: &'a Path,
    ) -> Result<BoardRun<'a>> {
        let work = root.join(def.name);
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work)?;
        say(
            def.name,
            "fetching inputs, building root filesystems v1, v2, v3",
        );
        let inputs = inputs::fetch(def.name)?;
        // A `boot: kexec` board's build writes the slot kernel (Debian's
        // arm64 Image is 33 MB), the slot's initrd and its updater into
        // each root filesystem: room for them.
        let board =
            board::Configs::Dir(testkit::workspace_root().join("configs")).find(def.name)?;
        let room_mib = match board.boot {
            board::SlotBoot::Kexec => KEXEC_ROOM_MIB,
            board::SlotBoot::SwitchRoot => 0,
        };
        let spec = |name: &str, version: u64, confirm: bool, blob: u64| rootfs::Spec {
            name: name.into(),
            version,
            confirm,
            blob_bytes: blob,
            seed: opts.seed ^ version,
            greeting: None,
            room_mib,
        };
        let v1 = rootfs::build(&spec("sys-v1", 1, true, 1 << 20), def.arch, &work)?;
        let v2 = rootfs::build(
            &spec("sys-v2", 2, true, opts.blob_mib << 20),
            def.arch,
            &work,
        )?;
        let v3 = rootfs::build(&spec("sys-v3", 3, false, 2 << 20), def.arch, &work)?;
        let build = |out: &str, r: &Rootfs, include: Vec<PathBuf>| {
            let t = Instant::now();
            Build {
                fwpack,
                inputs: &inputs,
                key,
                out: work.join(out),
                rootfs: Some(r.path.clone()),
                include_images: include,
                version: r.version,
                label: format!("v{}", r.version),
            }
            .run_quiet()?;
            say(
                def.name,
                &format!("fwpack build {out}: {:.1} s", t.elapsed().as_secs_f64()),
            );
            Ok::<_, anyhow::Error>(work.join(out))
        };
        let out_v1 = build("v1", &v1, vec![])?;
        let out_v2 = build("v2", &v2, vec![])?;
        let out_v3 = build("v3", &v3, vec![])?;
        let fwi_v2 = work.join("update-v2.fwi");
        let fwi_v3 = work.join("update-v3.fwi");
        fs::copy(out_v2.join("update.fwi"), &fwi_v2)?;
        fs::copy(out_v3.join("update.fwi"), &fwi_v3)?;
        // The v3 release again, its initramfs carrying its own update.fwi.
        let out_v3i = build("v3-with-update", &v3, vec![fwi_v3.clone()])?;
        // A kexec board's build adds the slot kernel, initrd and updater
        // to the root filesystem: the slots must then hold the built one.
        let (v1, v2, v3) = if room_mib > 0 {
            (
                as_built(fwpack, &out_v1, v1)?,
                as_built(fwpack, &out_v2, v2)?,
                as_built(fwpack, &out_v3, v3)?,
            )
        } else {
            (v1, v2, v3)
        };
        let fwi_mib = fs::metadata(&fwi_v2)?.len() >> 20;
        let updates_disk = rootfs::data_disk(
            UPDATES_LABEL,
            &[("updates/update-v2.fwi", &fwi_v2)],
            &work,
            fwi_mib + fwi_mib / 8 + 8,
        )?;
        Ok(BoardRun {
            def,
            fwpack,
            failed_dir,
            kernel: out_v1.join("boot").join(def.kernel_name),
            initrd_v1: out_v1.join("boot/initramfs.cpio.gz"),
            initrd_v3: out_v3i.join("boot/initramfs.cpio.gz"),
            pristine: out_v1.join("sdcard.img"),
            updates_disk,
            v1,
            v2,
            v3,
            verify_window: Duration::ZERO,
            write_window: Duration::ZERO,
            logs: Vec::new(),
            failures: Vec::new(),
            resume_first: opts.resume_first,
            work,
        })
    }

    fn say(&self, msg: &str) {
        say(self.def.name, msg);
    }

    fn fresh_disk(&self, name: &str) -> Result<PathBuf> {
        let d = self.work.join(name);
        let _ = fs::remove_file(&d);
        // --sparse keeps the empty slot B and padding free on the host.
        let st = Command::new("cp")
            .arg("--sparse=always")
            .arg(&self.pristine)
            .arg(&d)
            .status()?;
        if !st.success() {
            bail!("cp {} failed", self.pristine.display());
        }
        Ok(d)
    }

    fn boot(
        &mut self,
        name: &str,
        initrd: &Path,
        disk: &Path,
        extra: Option<&Path>,
        append: &str,
    ) -> Result<Console> {
        let mut m = Machine::new(
            self.def.arch,
            self.kernel.clone(),
            initrd.to_path_buf(),
            disk.to_path_buf(),
        );
        m.extra_disk = extra.map(Path::to_path_buf);
        m.append = append.into();
        m.name = format!("e2e-{}-{name}", self.def.name);
        let c = m.spawn()?;
        self.logs.push(c.log_path().to_path_buf());
        Ok(c)
    }

    /// A boot with v2 on the second disk (the v1 initramfs, told where to look).
    fn boot_with_v2(&mut self, name: &str, disk: &Path) -> Result<Console> {
        let (initrd, extra) = (self.initrd_v1.clone(), self.updates_disk.clone());
        let append = format!("fwpack.images=partition:LABEL={UPDATES_LABEL}:/updates");
        self.boot(name, &initrd, disk, Some(&extra), &append)
    }

    /// A boot with no update anywhere.
    fn boot_plain(&mut self, name: &str, disk: &Path) -> Result<Console> {
        let initrd = self.initrd_v1.clone();
        self.boot(name, &initrd, disk, None, "")
    }

    /// Copies the current run's console logs aside and records the failure.
    fn fail(&mut self, what: &str, e: &anyhow::Error) {
        let _ = fs::create_dir_all(self.failed_dir);
        let mut saved = Vec::new();
        for l in self.logs.drain(..) {
            if let Some(name) = l.file_name() {
                let dst = self.failed_dir.join(name);
                if fs::copy(&l, &dst).is_ok() {
                    saved.push(dst.display().to_string());
                }
            }
        }
        let msg = format!(
            "{}: {what}: {e:#}\n  console logs: {}",
            self.def.name,
            saved.join(" ")
        );
        println!("FAILED {msg}");
        self.failures.push(msg);
    }

    fn status(&self, disk: &Path) -> Result<Value> {
        let out = Command::new(self.fwpack)
            .args(["status", "--json", "--target"])
            .arg(disk)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "fwpack status {}: {}{}",
                disk.display(),
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_str(text.trim()).with_context(|| format!("fwpack status: {text}"))
    }

    /// The state area's promises, checked against the disk's bytes: A is
    /// untouched v1; a slot marked complete holds exactly its image; a
    /// pending or active slot is complete. Returns the status.
    fn check_invariants(&self, disk: &Path) -> Result<Value> {
        let st = self.status(disk)?;
        let g = st["groups"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["name"] == "system"))
            .ok_or_else(|| anyhow!("no slot group `system` in {st}"))?;
        for slot in ["A", "B"] {
            let info = &st["slots"][slot];
            let state = info["state"].as_str().unwrap_or("?");
            let version = info["version"].as_u64().unwrap_or(0);
            let active = st["active"] == slot;
            let pending = st["pending"] == slot;
            if (active || pending) && state != "complete" {
                bail!(
                    "slot {slot} is {} but {state}: {st}",
                    if active { "active" } else { "pending" }
                );
            }
            if state == "complete" {
                let image = match version {
                    1 => &self.v1,
                    2 => &self.v2,
                    3 => &self.v3,
                    v => bail!("slot {slot} claims version {v}"),
                };
                let off = g[slot]["offset"].as_u64().unwrap_or(0);
                if let Some(at) = first_difference(disk, off, &image.path, u64::MAX)? {
                    bail!(
                        "MIXED SLOT: slot {slot} is complete with version {version} but differs from its image at byte {at}"
                    );
                }
            }
        }
        // The journal's claim is what a resume trusts: every byte before
        // its offset must already be the new image's (v2 is one segment).
        let j = &st["journal"];
        if !j.is_null() {
            let slot = j["slot"].as_str().unwrap_or("?");
            let done = j["offset"].as_u64().unwrap_or(0);
            if slot != "B" || j["segment"].as_u64() != Some(0) {
                bail!("unexpected journal (only v2 goes to B in these runs): {j}");
            }
            let off = g["B"]["offset"].as_u64().unwrap_or(0);
            if let Some(at) = first_difference(disk, off, &self.v2.path, done)? {
                bail!(
                    "the journal claims {done} bytes of slot B are done, but byte {at} is not v2's"
                );
            }
        }
        Ok(st)
    }

    /// Steps 1–4 of the story; returns (step, seconds).
    fn story(&mut self, tries: Option<u8>) -> Result<Vec<(String, f64)>> {
        self.logs.clear();
        let r = self.story_inner(tries);
        if let Err(e) = &r {
            let e = anyhow!("{e:#}");
            self.fail("story", &e);
        }
        r
    }

    fn story_inner(&mut self, tries: Option<u8>) -> Result<Vec<(String, f64)>> {
        let mut steps = Vec::new();
        let disk = self.fresh_disk("story.img")?;

        self.say(
            "story 1/4: slot A boots; v2 is on a second disk; the updater writes it to slot B",
        );
        let t = Instant::now();
        let mut c = self.boot_with_v2("story-apply", &disk)?;
        let l = expect(
            &mut c,
            &[
                "found /dev/",
                &format!("found LABEL={UPDATES_LABEL}"),
                &format!("applying update {V2} (version 2 v2) to slot B"),
                "signature ok; writing",
                "data written and synced; committing",
                "slot B is pending with",
                &format!("applied {V2} to slot B"),
                "rebooting into it",
            ],
        )?;
        let (applying, verifying, writing, committing, pending) =
            (l[2].1, l[3].1, l[4].1, l[5].1, l[6].1);
        exit(&mut c)?;
        self.verify_window = writing - applying;
        self.write_window = pending - writing;
        self.say(&format!(
            "  apply of a {} MiB root filesystem: verify {:.1} s, write {:.1} s, whole apply {:.1} s ({})",
            self.v2.path.metadata()?.len() >> 20,
            (writing - verifying).as_secs_f64(),
            (committing - writing).as_secs_f64(),
            (pending - applying).as_secs_f64(),
            line_tail(&l[7].0),
        ));
        let st = self.check_invariants(&disk)?;
        want(&st, "pending", "B")?;
        steps.push((
            "apply v2 (second disk) -> reboot".into(),
            t.elapsed().as_secs_f64(),
        ));

        self.say("story 2/4: slot B boots on trial, reads its data back, confirms");
        let t = Instant::now();
        let mut c = self.boot_with_v2("story-boot-b", &disk)?;
        let blob = self.v2.blob_line().unwrap_or_default();
        expect(
            &mut c,
            &[
                "booting slot B (version 2 v2), trial",
                "switching root to slot B",
                "FWPACK-SYSTEM booted slot B version 2",
                &blob,
                "slot B (version 2) confirmed: it is now the active slot",
                "FWPACK-SYSTEM mark-good: exit 0",
            ],
        )?;
        exit(&mut c)?;
        let st = self.check_invariants(&disk)?;
        want(&st, "active", "B")?;
        want_bool(&st, "confirmed", true)?;
        steps.push(("boot B, confirm".into(), t.elapsed().as_secs_f64()));

        self.say("story 3/4: v3 (never confirms) in the initramfs, applied to slot A");
        let t = Instant::now();
        let append = tries.map_or(String::new(), |n| format!("fwpack.tries={n}"));
        let initrd = self.initrd_v3.clone();
        let mut c = self.boot("story-apply-v3", &initrd, &disk, None, &append)?;
        expect(
            &mut c,
            &[
                "applying update /images/update-v3.fwi (version 3 v3) to slot A",
                "applied /images/update-v3.fwi to slot A",
                "rebooting into it",
            ],
        )?;
        exit(&mut c)?;
        let st = self.check_invariants(&disk)?;
        want(&st, "pending", "A")?;
        let tries = st["tries_left"].as_u64().unwrap_or(0);
        steps.push((
            "apply v3 (initramfs) -> reboot".into(),
            t.elapsed().as_secs_f64(),
        ));

        self.say(&format!(
            "story 4/4: v3 boots {tries} time(s) without confirming, then the updater falls back to B"
        ));
        let t = Instant::now();
        for i in 0..tries {
            let mut c = self.boot(&format!("story-trial-{i}"), &initrd, &disk, None, &append)?;
            expect(
                &mut c,
                &[
                    "booting slot A (version 3 v3), trial",
                    "FWPACK-SYSTEM booted slot A version 3",
                    "FWPACK-SYSTEM not confirming this slot",
                ],
            )?;
            exit(&mut c)?;
        }
        let mut c = self.boot("story-fallback", &initrd, &disk, None, &append)?;
        expect(
            &mut c,
            &[
                "was already installed in slot A and did not confirm; not applying it again",
                "slot A was tried and never confirmed; falling back to slot B",
                "booting slot B (version 2 v2)",
                "FWPACK-SYSTEM booted slot B version 2",
                &blob,
            ],
        )?;
        exit(&mut c)?;
        let st = self.check_invariants(&disk)?;
        want(&st, "active", "B")?;
        if !st["pending"].is_null() {
            bail!("after the fallback nothing may be pending: {st}");
        }
        steps.push((
            format!("{tries} trial boot(s) of v3, fallback to B"),
            t.elapsed().as_secs_f64(),
        ));
        self.say("story done: update, confirm, second update, fallback");
        let _ = fs::remove_file(&disk);
        Ok(steps)
    }

    /// Power-cut runs until `n` cuts have landed.
    fn cuts(&mut self, n: usize, rng: &mut SplitMix64) -> Vec<CutRow> {
        let mut rows: Vec<CutRow> = Vec::new();
        let mut run = 0;
        let mut landed = 0;
        // A cut can come too late (the apply finished first); give up after
        // a generous number of misses rather than loop forever.
        while landed < n && run < 3 * n + 3 {
            run += 1;
            // Runs cycle through: one cut then the update still there; one
            // cut then the update gone; two cuts (the second in the next
            // boot's apply, often a resumed one) then the update still there.
            let times = if run % 3 == 0 && landed + 1 < n { 2 } else { 1 };
            let with_update = run % 3 != 2;
            self.logs.clear();
            match self.cut_run(run, times, with_update, rng) {
                Ok(mut r) => {
                    landed += r.iter().filter(|r| !r.outcome.starts_with("late")).count();
                    rows.append(&mut r);
                }
                Err((mut r, e)) => {
                    self.fail(&format!("power-cut run {run}"), &e);
                    landed += r.len().max(1);
                    if let Some(last) = r.last_mut() {
                        last.ok = false;
                        last.outcome = format!("FAILED: {}", first_line(&format!("{e:#}")));
                    }
                    rows.append(&mut r);
                }
            }
        }
        if self.resume_first && !rows.iter().any(|r| r.outcome.starts_with("resumed")) {
            let msg = format!(
                "{}: no power cut recovered by resuming (the first cut is aimed at a journal checkpoint)",
                self.def.name
            );
            println!("FAILED {msg}");
            self.failures.push(msg);
        }
        rows
    }

    #[allow(clippy::type_complexity)]
    fn cut_run(
        &mut self,
        run: usize,
        times: usize,
        with_update: bool,
        rng: &mut SplitMix64,
    ) -> std::result::Result<Vec<CutRow>, (Vec<CutRow>, anyhow::Error)> {
        let mut rows = Vec::new();
        match self.cut_run_inner(run, times, with_update, rng, &mut rows) {
            Ok(()) => Ok(rows),
            Err(e) => Err((rows, e)),
        }
    }

    fn cut_run_inner(
        &mut self,
        run: usize,
        times: usize,
        with_update: bool,
        rng: &mut SplitMix64,
        rows: &mut Vec<CutRow>,
    ) -> Result<()> {
        let disk = self.fresh_disk(&format!("cut-{run}.img"))?;
        for nth in 1..=times {
            // Three cuts in four land in the write phase (where a cut can
            // do harm), one in the check/verify phase (nothing written yet).
            // Write-phase cuts are anchored on a random quarter's progress
            // line, then delayed within a quarter's duration, so they spread
            // over the whole write even when this boot runs slower or faster
            // than the measured one. A resumed apply prints only the
            // quarters after its resume point: it is anchored at its start.
            // The run's first cut in the short e2e is aimed, not drawn:
            // power goes the moment the journal first claims bytes done,
            // so the next boot must resume (a time-based aim came after
            // the apply had finished on a slower machine).
            let aimed = self.resume_first && run == 1 && nth == 1;
            let quarter = if aimed {
                Some(0)
            } else if rng.below(4) == 0 {
                None
            } else if nth == 1 {
                Some(rng.below(4) as usize)
            } else {
                Some(0)
            };
            let window = match quarter {
                None => self.verify_window,
                Some(_) if nth > 1 => self.write_window / 2,
                Some(_) => self.write_window / 4,
            };
            let delay = if aimed {
                Duration::ZERO
            } else {
                Duration::from_millis(rng.below(window.as_millis().max(1) as u64))
            };
            let mut c = self.boot_with_v2(&format!("cut-{run}-{nth}"), &disk)?;
            let applying = expect(&mut c, &[&format!("applying update {V2}")])?[0].1;
            if let Some(q) = quarter {
                let anchors = [
                    "signature ok; writing",
                    "write: 25%",
                    "write: 50%",
                    "write: 75%",
                ];
                expect(&mut c, &[anchors[q]])?;
            }
            if aimed {
                match wait_for_checkpoint(&c, &disk)? {
                    Some(done) => self.say(&format!(
                        "run {run} cut {nth}: aimed at the journal's first checkpoint ({} MiB durable)",
                        mib(done)
                    )),
                    None => self.say(&format!(
                        "run {run} cut {nth}: the apply finished before a journal checkpoint was seen"
                    )),
                }
            }
            // The injected fault: power goes away `delay` after the anchor.
            std::thread::sleep(delay);
            let lines = c.lines();
            drop(c); // SIGKILL: the guest's RAM, caches and queued I/O are gone
            let cut_at = applying.elapsed().as_secs_f64();
            let upd: Vec<&String> = lines
                .iter()
                .filter(|l| l.starts_with("fwpack-updater: "))
                .collect();
            let phase = upd
                .last()
                .map(|l| l.trim_start_matches("fwpack-updater: ").to_string())
                .unwrap_or_default();
            let written_seen = upd
                .iter()
                .rev()
                .filter_map(|l| l.strip_prefix("fwpack-updater: write: "))
                .find_map(progress_done)
                .unwrap_or(0);
            let finished = lines.iter().any(|l| l.contains("rebooting into it"));
            let st = self.check_invariants(&disk)?;
            let mut row = CutRow {
                board: self.def.name,
                run,
                nth,
                cut_at,
                phase: shorten(&phase),
                written_seen,
                journal_done: st["journal"]["done_bytes"].as_u64(),
                b_state: st["slots"]["B"]["state"].as_str().unwrap_or("?").into(),
                ok: true,
                ..CutRow::default()
            };
            if finished {
                row.outcome = "late: apply had finished".into();
            }
            self.say(&format!(
                "run {run} cut {nth}: {:.2} s into the apply, at \"{}\"; slot B {}, journal {}",
                cut_at,
                row.phase,
                row.b_state,
                row.journal_done
                    .map_or("idle".into(), |d| format!("{d} bytes durable")),
            ));
            let pending_b = st["pending"] == "B";
            // Complete but not pending: the cut fell between the two
            // state-area writes of the commit. The updater then treats B as
            // tried-and-failed and boots A; not a brick, but the update is
            // lost, so the row says so.
            let stranded = !pending_b && row.b_state == "complete";
            if nth < times && !pending_b && !stranded && !finished {
                row.outcome = "cut again during the next apply".into();
                rows.push(row);
                continue;
            }
            // Recovery boot.
            if stranded {
                let mut c = if with_update {
                    self.boot_with_v2(&format!("cut-{run}-stranded"), &disk)?
                } else {
                    self.boot_plain(&format!("cut-{run}-stranded"), &disk)?
                };
                let blob = self.v1.blob_line().unwrap_or_default();
                expect(
                    &mut c,
                    &[
                        "booting slot A (version 1 v1)",
                        "FWPACK-SYSTEM booted slot A version 1",
                        &blob,
                        "FWPACK-SYSTEM mark-good: exit 0",
                    ],
                )?;
                exit(&mut c)?;
                let st = self.check_invariants(&disk)?;
                want(&st, "active", "A")?;
                row.outcome = "B complete, not pending: A boots, update not retried".into();
            } else if with_update {
                let mut c = self.boot_with_v2(&format!("cut-{run}-resume"), &disk)?;
                if pending_b {
                    row.outcome = "apply had completed; B boots".into();
                } else {
                    expect(&mut c, &[&format!("applying update {V2}")])?;
                    let applied = expect(&mut c, &[&format!("applied {V2} to slot B")])?;
                    let all = c.lines();
                    row.resumed_at = all.iter().find_map(|l| resumed_bytes(l));
                    row.rewritten = bytes_written(&applied[0].0);
                    row.outcome = match row.resumed_at {
                        Some(s) if s > 0 => "resumed, completed".into(),
                        _ if row.b_state == "empty" => {
                            "started over (nothing written), completed".into()
                        }
                        _ => "restarted from 0, completed".into(),
                    };
                    expect(&mut c, &["rebooting into it"])?;
                    exit(&mut c)?;
                    c = self.boot_with_v2(&format!("cut-{run}-boot-b"), &disk)?;
                }
                let blob = self.v2.blob_line().unwrap_or_default();
                expect(
                    &mut c,
                    &[
                        "booting slot B (version 2 v2), trial",
                        "FWPACK-SYSTEM booted slot B version 2",
                        &blob,
                        "FWPACK-SYSTEM mark-good: exit 0",
                    ],
                )?;
                exit(&mut c)?;
                let st = self.check_invariants(&disk)?;
                want(&st, "active", "B")?;
            } else {
                // The update is gone (the stick was pulled, the download lost).
                let mut c = self.boot_plain(&format!("cut-{run}-no-update"), &disk)?;
                let (slot, version, blob) = if pending_b {
                    ("B", 2, self.v2.blob_line().unwrap_or_default())
                } else {
                    ("A", 1, self.v1.blob_line().unwrap_or_default())
                };
                expect(
                    &mut c,
                    &[
                        &format!("booting slot {slot} (version {version} v{version})"),
                        &format!("FWPACK-SYSTEM booted slot {slot} version {version}"),
                        &blob,
                        "FWPACK-SYSTEM mark-good: exit 0",
                    ],
                )?;
                exit(&mut c)?;
                let st = self.check_invariants(&disk)?;
                want(&st, "active", slot)?;
                row.outcome = if pending_b {
                    "apply had completed; B boots".into()
                } else {
                    "update gone: old slot A boots".into()
                };
            }
            if finished {
                row.outcome = "late: the apply finished before the cut".into();
            }
            self.say(&format!("run {run}: {}", row.outcome));
            rows.push(row);
        }
        let _ = fs::remove_file(&disk);
        Ok(())
    }
}

/// Polls the target disk's state area, read with the updater's own
/// reader while the guest writes it (the disk is `cache=none`, so the
/// guest's synced writes are in the host file), until the journal claims
/// bytes done: returns them. `None` when the console shows the apply
/// finished first. Every read is a fresh, read-only open: a torn read of a
/// record that is being rewritten fails its CRC and is simply retried.
fn wait_for_checkpoint(c: &Console, disk: &Path) -> Result<Option<u64>> {
    use updater::state::{
        StateArea, StateLocation, DEFAULT_STATE_COPY_DISTANCE, DEFAULT_STATE_OFFSET,
    };
    let started = Instant::now();
    while started.elapsed() < WAIT {
        let journal = updater::FileStorage::open(disk, updater::Access::ReadOnly)
            .ok()
            .and_then(|mut st| {
                StateArea::read(
                    &mut st,
                    StateLocation::new(DEFAULT_STATE_OFFSET, DEFAULT_STATE_COPY_DISTANCE),
                )
                .ok()
            })
            .and_then(|a| a.journal().cloned());
        if let Some(j) = journal {
            if j.done_bytes > 0 {
                return Ok(Some(j.done_bytes));
            }
        }
        let lines = c.lines();
        if lines
            .iter()
            .any(|l| l.contains(&format!("applied {V2}")) || l.contains("rebooting into it"))
        {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!(
        "no journal checkpoint on {} within {WAIT:?}",
        disk.display()
    )
}

/// Waits for each pattern in order; returns each line and when it came.
fn expect(c: &mut Console, patterns: &[&str]) -> Result<Vec<(String, Instant)>> {
    patterns
        .iter()
        .map(|p| {
            c.wait_for(p, WAIT)
                .map(|l| (l, Instant::now()))
                .map_err(|e| anyhow!("{e}"))
        })
        .collect()
}

/// The guest powers off or reboots; QEMU (-no-reboot) exits.
fn exit(c: &mut Console) -> Result<()> {
    c.wait_exit(WAIT).map(drop).map_err(|e| anyhow!("{e}"))
}

fn want(st: &Value, key: &str, slot: &str) -> Result<()> {
    if st[key] != slot {
        bail!("expected {key} = {slot}: {st}");
    }
    Ok(())
}

fn want_bool(st: &Value, key: &str, v: bool) -> Result<()> {
    if st[key].as_bool() != Some(v) {
        bail!("expected {key} = {v}: {st}");
    }
    Ok(())
}

/// First byte at which the disk (from `offset`) differs from `image`,
/// looking at no more than `limit` bytes.
/// `r` with its path replaced by the root filesystem `fwpack build` put
/// into slot A of `out`/sdcard.img (same length as the input: the build
/// writes into the room the input kept free).
fn as_built(fwpack: &Path, out: &Path, mut r: Rootfs) -> Result<Rootfs> {
    use std::io::{Seek, SeekFrom};
    let sd = out.join("sdcard.img");
    let st = Command::new(fwpack)
        .args(["status", "--json", "--target"])
        .arg(&sd)
        .output()?;
    let st: Value = serde_json::from_slice(&st.stdout)
        .with_context(|| format!("fwpack status {}", sd.display()))?;
    let off = st["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == "system"))
        .and_then(|g| g["A"]["offset"].as_u64())
        .ok_or_else(|| anyhow!("no slot A of group `system` in {st}"))?;
    let len = fs::metadata(&r.path)?.len();
    let built = r.path.with_extension("built.img");
    let mut from = fs::File::open(&sd)?;
    from.seek(SeekFrom::Start(off))?;
    let n = std::io::copy(&mut from.take(len), &mut fs::File::create(&built)?)?;
    if n != len {
        bail!("{}: slot A ends before {len} bytes", sd.display());
    }
    r.path = built;
    Ok(r)
}

fn first_difference(disk: &Path, offset: u64, image: &Path, limit: u64) -> Result<Option<u64>> {
    use std::io::{Seek, SeekFrom};
    let mut d = fs::File::open(disk)?;
    d.seek(SeekFrom::Start(offset))?;
    let mut i = fs::File::open(image)?;
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut pos = 0u64;
    loop {
        let want = (limit - pos).min(a.len() as u64) as usize;
        let n = read_full(&mut i, &mut a[..want])?;
        if n == 0 {
            return Ok(None);
        }
        let m = read_full(&mut d, &mut b[..n])?;
        if let Some(k) = (0..n).find(|&k| k >= m || a[k] != b[k]) {
            return Ok(Some(pos + k as u64));
        }
        pos += n as u64;
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// `50% (4194304/8388608 bytes)` → 4194304.
fn progress_done(s: &str) -> Option<u64> {
    s.split_once('(')?.1.split_once('/')?.0.parse().ok()
}

/// `resuming an interrupted apply at … (N bytes already done)` → N.
fn resumed_bytes(line: &str) -> Option<u64> {
    let rest = line.split("resuming an interrupted apply").nth(1)?;
    rest.rsplit_once('(')?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `applied … : version 2, N bytes written…` → N.
fn bytes_written(line: &str) -> Option<u64> {
    let before = line.split(" bytes written").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

fn line_tail(l: &str) -> String {
    l.split_once(": version")
        .map_or(l.to_string(), |(_, t)| format!("version{t}"))
}

fn shorten(s: &str) -> String {
    let s = s
        .replace(
            "signature ok; writing, each chunk authenticated first",
            "write start",
        )
        .replace("data written and synced; committing", "committing");
    let s = s.split(" (").next().unwrap_or(&s).to_string();
    if s.len() > 44 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(43).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(100).collect()
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1 << 20) as f64)
}

fn summary(reports: &[BoardReport], total: f64, opts: &Opts) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n=== fwpack e2e summary (seed {:#x}, blob {} MiB) ===",
        opts.seed, opts.blob_mib
    );
    for r in reports {
        let _ = writeln!(s, "\n{} ({:.0} s)", r.name, r.secs);
        for (step, secs) in &r.story {
            let _ = writeln!(s, "  story: {step:<40} {secs:>6.1} s");
        }
    }
    let _ = writeln!(
        s,
        "\n{:<13} {:>3} {:>3} {:>7}  {:<30} {:>8} {:>8} {:>9} {:>8} {:>9}  outcome",
        "board",
        "run",
        "cut",
        "cut s",
        "landed at",
        "seen MiB",
        "jrnl MiB",
        "B state",
        "skip MiB",
        "rewr MiB"
    );
    let opt = |v: Option<u64>| v.map_or("-".to_string(), mib);
    for row in reports.iter().flat_map(|r| &r.rows) {
        let _ = writeln!(
            s,
            "{:<13} {:>3} {:>3} {:>7.2}  {:<30} {:>8} {:>8} {:>9} {:>8} {:>9}  {}",
            row.board,
            row.run,
            row.nth,
            row.cut_at,
            row.phase.chars().take(30).collect::<String>(),
            mib(row.written_seen),
            opt(row.journal_done),
            row.b_state,
            opt(row.resumed_at),
            opt(row.rewritten),
            row.outcome
        );
    }
    let rows: Vec<&CutRow> = reports.iter().flat_map(|r| &r.rows).collect();
    let cuts = rows
        .iter()
        .filter(|r| !r.outcome.starts_with("late"))
        .count();
    let count = |p: &str| rows.iter().filter(|r| r.outcome.starts_with(p)).count();
    let bricked = rows.iter().filter(|r| !r.ok).count()
        + reports
            .iter()
            .filter(|r| !r.failures.is_empty() && r.rows.is_empty())
            .count();
    let _ = writeln!(
        s,
        "\ncuts: {cuts} (late, apply already done: {}); recovered by resuming: {}, by restarting: {}, \
         apply had completed: {}, old slot booted (update gone): {}, cut again during the next apply: {}, \
         B complete but not pending: {}; bricked or mixed: {bricked}; total {:.0} s",
        count("late"),
        count("resumed"),
        count("restarted") + count("started over"),
        count("apply had completed"),
        count("update gone"),
        count("cut again"),
        count("B complete, not pending"),
        total
    );
    for r in reports {
        for f in &r.failures {
            let _ = writeln!(s, "FAILED {f}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_line_parsers() {
        assert_eq!(progress_done("50% (4194304/8388608 bytes)"), Some(4194304));
        assert_eq!(
            resumed_bytes("fwpack-updater: resuming an interrupted apply at segment 0 offset 33554432 (33554432 bytes already done)"),
            Some(33554432)
        );
        assert_eq!(
            bytes_written("fwpack-updater: applied /images/u.fwi to slot B: version 2, 20971520 bytes written"),
            Some(20971520)
        );
    }
}
