//! Power loss, enumerated: an apply is cut at every write and every sync
//! it issues, with several ways the volatile write cache may have
//! persisted the unsynced writes. After each cut:
//! (a) slot A is still the active slot and its bytes are untouched;
//! (b) slot B is never pending or complete unless it holds the new image;
//! (c) a boot picks A, or B only if (b) holds; and re-running the apply
//!     completes it (continuing from the journal where it can);
//! (d) the commit is one state write: B is complete exactly when it is
//!     pending, and never marked as fallen back by an apply, so no cut can
//!     leave a complete slot whose activation was lost (the PID-1 updater
//!     would take that for "tried and fell back" and drop the update);
//! (e) the journal claims only bytes that are on the medium: a checkpoint
//!     waits for every write before it (the engine has several in flight,
//!     on writer threads) and syncs before the journal names it.
//!
//! Also: a trial that runs out of tries, cut at every write, ends with B
//! marked as fallen back or still pending, never in between.

mod common;

use std::io::Cursor;

use common::*;
use fwimage::Compression;
use updater::state::{Slot, SlotState, StateArea};
use updater::{apply, ApplyOptions, ApplyReport, ErrorClass, MemStorage};

struct Fixture {
    img: Vec<u8>,
    rootfs: Vec<u8>,
    boot: Vec<u8>,
    env: Vec<u8>,
    old: Vec<u8>,
    trusted: fwimage::TrustedKeys,
}

impl Fixture {
    fn new() -> Fixture {
        let mut rng = Rng(7);
        let rootfs = rng.bytes(3 * MIB as usize / 2 + 5000);
        // Compressible but not trivial, so zstd really decodes something.
        let boot: Vec<u8> = (0..MIB as usize / 2 + 1234)
            .map(|i| {
                if i % 97 < 60 {
                    (i / 4096) as u8
                } else {
                    (rng.next() & 0xff) as u8
                }
            })
            .collect();
        let env = rng.bytes(8 * KIB as usize + 100);
        let k = key(1);
        let segs = Fixture::segs_of(&rootfs, &boot, &env);
        Fixture {
            img: image(BOARD, 2, &segs, &k),
            old: disk(),
            trusted: trusted(&k),
            rootfs,
            boot,
            env,
        }
    }

    fn segs_of<'a>(rootfs: &'a [u8], boot: &'a [u8], env: &'a [u8]) -> Vec<Seg<'a>> {
        vec![
            seg("rootfs", "system", rootfs),
            Seg {
                compression: Compression::Zstd,
                ..seg("boot", "boot", boot)
            },
            Seg {
                offset: MIB + 768 * KIB,
                ..seg("env", "system", env)
            },
        ]
    }

    fn segs(&self) -> Vec<Seg<'_>> {
        Fixture::segs_of(&self.rootfs, &self.boot, &self.env)
    }

    fn apply(
        &self,
        st: &mut dyn updater::Storage,
        opts: &ApplyOptions,
    ) -> updater::Result<ApplyReport> {
        apply(
            Cursor::new(&self.img),
            self.img.len() as u64,
            st,
            &self.trusted,
            opts,
            &mut |_| {},
        )
    }

    /// (a) and (b) on a disk as found after a cut. Returns the disk after
    /// one simulated boot (which may spend a try).
    fn check_after_cut(&self, d: Vec<u8>, what: &str) -> Vec<u8> {
        let mut m = MemStorage::new(d);
        let mut area = StateArea::read(&mut m, LOC)
            .unwrap_or_else(|e| panic!("{what}: state area unreadable: {e}"));
        let b = area.boot().clone();
        assert_eq!(b.active, Slot::A, "{what}: active slot changed");
        let a = b.slot(Slot::A);
        assert_eq!(
            (a.state, a.version),
            (SlotState::Complete, 1),
            "{what}: slot A metadata"
        );
        for r in slot_ranges(Slot::A) {
            assert!(
                m.data[r.clone()] == self.old[r.clone()],
                "{what}: slot A bytes changed in {r:?}"
            );
        }
        let bi = b.slot(Slot::B);
        let holds = slot_holds(&m.data, Slot::B, &self.segs());
        if bi.state == SlotState::Complete {
            assert!(
                holds,
                "{what}: slot B complete but its bytes are not the image"
            );
            assert_eq!(bi.version, 2, "{what}");
        }
        if b.pending == Some(Slot::B) {
            assert_eq!(
                bi.state,
                SlotState::Complete,
                "{what}: slot B pending but {:?}",
                bi.state
            );
        }
        // (d): complete and pending change in the same write.
        assert_eq!(
            bi.state == SlotState::Complete,
            b.pending == Some(Slot::B),
            "{what}: slot B {:?} but pending {:?}",
            bi.state,
            b.pending
        );
        if b.pending == Some(Slot::B) {
            assert_eq!(b.tries_left, 3, "{what}: tries written apart from pending");
        }
        assert!(!bi.fell_back, "{what}: an apply marked B as fallen back");
        // (e): everything before the journal's position is the image's.
        if let Some(j) = area.journal().filter(|j| j.slot == Slot::B) {
            let l = layout();
            for (i, sg) in self.segs().iter().enumerate() {
                let claimed = match (i as u32).cmp(&j.segment) {
                    std::cmp::Ordering::Less => sg.data.len(),
                    std::cmp::Ordering::Equal => j.offset as usize,
                    std::cmp::Ordering::Greater => 0,
                };
                let at = (l.group(sg.target).unwrap().slot(Slot::B).offset + sg.offset) as usize;
                assert!(
                    m.data[at..at + claimed] == sg.data[..claimed],
                    "{what}: the journal claims {claimed} bytes of segment `{}` ({:?}) that are not on the medium",
                    sg.name,
                    (j.segment, j.offset)
                );
            }
        }
        let d = area.boot_attempt(&mut m).unwrap();
        if d.slot == Slot::B {
            assert!(
                holds && bi.state == SlotState::Complete,
                "{what}: booted an unfinished slot B"
            );
        }
        m.data
    }

    fn check_done(&self, d: &[u8], what: &str) {
        let mut m = MemStorage::new(d.to_vec());
        let area = StateArea::read(&mut m, LOC).unwrap();
        let b = area.boot();
        assert_eq!(b.active, Slot::A, "{what}");
        assert_eq!(b.pending, Some(Slot::B), "{what}");
        assert_eq!(b.slot(Slot::B).state, SlotState::Complete, "{what}");
        assert_eq!(b.tries_left, 3, "{what}");
        assert!(!b.slot(Slot::B).fell_back, "{what}");
        assert!(area.journal().is_none(), "{what}: journal not cleared");
        assert!(
            slot_holds(d, Slot::B, &self.segs()),
            "{what}: slot B content"
        );
        for r in slot_ranges(Slot::A) {
            assert!(d[r.clone()] == self.old[r.clone()], "{what}: slot A");
        }
    }
}

fn options(verify: bool, minimize: bool) -> ApplyOptions {
    ApplyOptions {
        chunk_size: 32 * KIB as usize,
        checkpoint_interval: 128 * KIB,
        verify_writes: verify,
        minimize_writes: minimize,
        ..ApplyOptions::default()
    }
}

/// Tear patterns tried at every cut point ([`Tear::every`]).
const TEARS: u64 = 6;

struct Stats {
    cut_points: u64,
    scenarios: u64,
    resumed: u64,
    full_bytes: u64,
    resume_bytes: u64,
}

fn enumerate(opts: &ApplyOptions, second_level_every: u64) -> Stats {
    enumerate_on(Fixture::new(), opts, second_level_every).0
}

/// Returns the stats and the uncut apply's report.
fn enumerate_on(fx: Fixture, opts: &ApplyOptions, second_level_every: u64) -> (Stats, ApplyReport) {
    let mut st = CrashStorage::new(fx.old.clone(), None);
    let full = fx.apply(&mut st, opts).expect("uncut apply");
    fx.check_done(&st.durable, "uncut");
    let n = st.ops;
    let mut stats = Stats {
        cut_points: n,
        scenarios: 0,
        resumed: 0,
        full_bytes: full.bytes_written,
        resume_bytes: 0,
    };
    for cut in 0..n {
        let mut st = CrashStorage::new(fx.old.clone(), Some(cut));
        let err = fx.apply(&mut st, opts).expect_err("the cut must surface");
        assert_eq!(err.class(), ErrorClass::Io, "cut {cut}: {err}");
        for tear in Tear::every(cut) {
            let what = format!("cut {cut}/{n} {tear:?}");
            let d = fx.check_after_cut(st.after_crash(tear), &what);
            let mut again = CrashStorage::new(d.clone(), None);
            let r = fx
                .apply(&mut again, opts)
                .unwrap_or_else(|e| panic!("{what}: resume failed: {e}"));
            fx.check_done(&again.durable, &what);
            if r.resumed_from.is_some() || r.already_complete {
                stats.resumed += 1;
            }
            stats.resume_bytes += r.bytes_written;
            stats.scenarios += 1;
            // Cut again while recovering: the recovery must be as safe.
            if second_level_every > 0
                && cut % second_level_every == 0
                && tear == Tear::Sectors(cut * 13 + 5)
            {
                for cut2 in 0..again.ops {
                    let mut st2 = CrashStorage::new(d.clone(), Some(cut2));
                    assert!(fx.apply(&mut st2, opts).is_err());
                    let what2 = format!("{what}, then cut {cut2} of the resume");
                    let d2 = fx.check_after_cut(st2.after_crash(Tear::Sectors(cut2 + 3)), &what2);
                    let mut last = MemStorage::new(d2);
                    fx.apply(&mut last, opts)
                        .unwrap_or_else(|e| panic!("{what2}: final resume failed: {e}"));
                    fx.check_done(&last.data, &what2);
                    stats.scenarios += 1;
                }
            }
        }
    }
    (stats, full)
}

fn report(name: &str, s: &Stats) {
    eprintln!(
        "{name}: {} cut points (every write and sync), {} power-loss scenarios checked; \
         {} recoveries continued from the journal; an uncut apply writes {} bytes, \
         recoveries wrote {} on average",
        s.cut_points,
        s.scenarios,
        s.resumed,
        s.full_bytes,
        s.resume_bytes / (s.cut_points * TEARS).max(1)
    );
}

#[test]
fn power_cut_at_every_write_and_sync() {
    let s = enumerate(&options(false, false), 24);
    report("plain", &s);
    assert!(
        s.cut_points >= 80,
        "too few cut points ({}) for a realistic apply",
        s.cut_points
    );
    // Resume must actually save work, not just start over safely.
    assert!(
        s.resumed > s.cut_points,
        "only {} recoveries resumed",
        s.resumed
    );
    assert!(s.resume_bytes / (s.cut_points * TEARS) < s.full_bytes * 3 / 4);
}

/// `--verify-writes` alone: the writer threads read each batch back right
/// after writing it, before the checkpoint's sync; the journal still may
/// claim only what every write, read-back and sync before it covered.
#[test]
fn power_cut_with_read_back() {
    let s = enumerate(&options(true, false), 0);
    report("verify-writes", &s);
    assert!(s.cut_points >= 40);
}

#[test]
fn power_cut_with_read_back_and_minimized_writes() {
    let s = enumerate(&options(true, true), 0);
    report("verify-writes + minimize-writes", &s);
    assert!(s.cut_points >= 40);
}

/// A delta apply (chunks copied from slot A, the rest read from the
/// image), cut at every write and sync: slot A, the seed, is only read;
/// the recovery resumes and slot B ends up byte-exact.
#[test]
fn power_cut_during_a_delta_apply() {
    let mut fx = Fixture::new();
    // Slot A holds most of the new image: the rootfs and boot contents
    // with a few bytes changed in some chunks (so those are fetched).
    let mut rootfs = fx.rootfs.clone();
    let mut boot = fx.boot.clone();
    for at in [300 * KIB as usize, 1100 * KIB as usize] {
        rootfs[at] ^= 0x5a;
    }
    boot[10] ^= 1;
    let sys_a = 5 * MIB as usize;
    let boot_a = 9 * MIB as usize;
    fx.old[sys_a..sys_a + rootfs.len()].copy_from_slice(&rootfs);
    fx.old[boot_a..boot_a + boot.len()].copy_from_slice(&boot);
    let opts = ApplyOptions {
        seed: updater::Seed::Slot(Slot::A),
        ..options(false, false)
    };
    let (s, full) = enumerate_on(fx, &opts, 0);
    report("delta from slot A", &s);
    assert!(
        full.bytes_from_seed > 0 && full.bytes_from_seed < full.raw_bytes,
        "uncut delta copied {} of {} bytes from the seed",
        full.bytes_from_seed,
        full.raw_bytes
    );
    assert!(s.resumed > 0, "no recovery resumed a delta apply");
}

/// The device side of a failed trial: B pending with 2 tries, booted
/// twice without a confirmation, then the boot that falls back. Every
/// write and sync of those boots is cut, with every cache model; after
/// each cut B is either still pending (tries as before or after that
/// boot's write) or no longer pending and marked as fallen back — never
/// "complete, not pending, not fallen back", which would mean the update
/// was lost without a trial.
#[test]
fn fallback_flag_survives_power_cuts() {
    let fx = Fixture::new();
    let mut m = MemStorage::new(fx.old.clone());
    let mut opts = options(false, false);
    opts.tries = 2;
    fx.apply(&mut m, &opts).expect("apply");
    let start = m.data.clone();
    let boots = |st: &mut dyn updater::Storage| -> updater::Result<()> {
        for _ in 0..3 {
            let mut area = StateArea::read(st, LOC)?;
            area.boot_attempt(st)?;
        }
        Ok(())
    };
    let mut st = CrashStorage::new(start.clone(), None);
    boots(&mut st).unwrap();
    let n = st.ops;
    assert_eq!(n, 6, "three boot attempts: one write + one sync each");
    let mut scenarios = 0;
    for cut in 0..n {
        for tear in [
            Tear::LoseAll,
            Tear::KeepAll,
            Tear::Prefix(cut + 1),
            Tear::Sectors(cut * 3 + 1),
        ] {
            let mut st = CrashStorage::new(start.clone(), Some(cut));
            assert!(boots(&mut st).is_err(), "cut {cut}");
            let mut d = MemStorage::new(st.after_crash(tear));
            let area =
                StateArea::read(&mut d, LOC).unwrap_or_else(|e| panic!("cut {cut} {tear:?}: {e}"));
            let b = area.boot();
            let bi = b.slot(Slot::B);
            assert_eq!(bi.state, SlotState::Complete, "cut {cut} {tear:?}");
            match b.pending {
                Some(Slot::B) => assert!(!bi.fell_back, "cut {cut} {tear:?}"),
                _ => assert!(bi.fell_back, "cut {cut} {tear:?}: dropped without the flag"),
            }
            // Booting on from there ends fallen back, never looping.
            let mut area = area;
            for _ in 0..3 {
                area.boot_attempt(&mut d).unwrap();
            }
            assert_eq!(area.boot().pending, None);
            assert!(area.boot().slot(Slot::B).fell_back);
            scenarios += 1;
        }
    }
    eprintln!("fallback: {n} cut points, {scenarios} scenarios");
}
