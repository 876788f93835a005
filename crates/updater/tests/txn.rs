//! Transactions (`updater::txn`): two signed images, one per slot group
//! (`system`, `boot`), into slot B, switching together. Checks before any
//! write, the proof before the commit, and power loss enumerated at every
//! write and sync (the pattern of crash.rs): after each cut slot A is
//! active and intact, slot B is bootable only when it holds both parts,
//! and a re-run completes the transaction without writing again the
//! parts a previous run had finished.

mod common;

use std::io::Cursor;

use common::*;
use updater::state::{Slot, SlotState, StateArea};
use updater::{
    apply, apply_parts, image_id, transaction_id, ApplyOptions, ErrorClass, Event, MemStorage,
    Part, TxnReport,
};

struct Fixture {
    rootfs: Vec<u8>,
    env: Vec<u8>,
    boot: Vec<u8>,
    /// Part 1: `system` (rootfs + env); part 2: `boot`.
    sys_img: Vec<u8>,
    boot_img: Vec<u8>,
    old: Vec<u8>,
    trusted: fwimage::TrustedKeys,
}

impl Fixture {
    fn new() -> Fixture {
        let mut rng = Rng(11);
        let rootfs = rng.bytes(MIB as usize + 3000);
        let env = rng.bytes(8 * KIB as usize + 100);
        let boot = rng.bytes(MIB as usize / 2 + 1234);
        let k = key(1);
        let sys_img = image(
            BOARD,
            2,
            &[
                seg("rootfs", "system", &rootfs),
                Seg {
                    offset: MIB + 768 * KIB,
                    ..seg("env", "system", &env)
                },
            ],
            &k,
        );
        let boot_img = image(BOARD, 2, &[seg("boot", "boot", &boot)], &k);
        Fixture {
            rootfs,
            env,
            boot,
            sys_img,
            boot_img,
            old: disk(),
            trusted: trusted(&k),
        }
    }

    fn segs(&self) -> Vec<Seg<'_>> {
        vec![
            seg("rootfs", "system", &self.rootfs),
            Seg {
                offset: MIB + 768 * KIB,
                ..seg("env", "system", &self.env)
            },
            seg("boot", "boot", &self.boot),
        ]
    }

    fn parts<'a>(&'a self, imgs: &[&'a [u8]]) -> Vec<Part<Cursor<&'a [u8]>>> {
        imgs.iter()
            .enumerate()
            .map(|(i, img)| Part {
                image: Cursor::new(*img),
                len: img.len() as u64,
                source: format!("part{i}.fwi"),
                groups: Vec::new(),
            })
            .collect()
    }

    fn run(
        &self,
        st: &mut dyn updater::Storage,
        opts: &ApplyOptions,
    ) -> updater::Result<TxnReport> {
        let mut parts = self.parts(&[&self.sys_img, &self.boot_img]);
        apply_parts(&mut parts, st, &self.trusted, opts, &mut |_| {})
    }

    fn id(&self) -> [u8; 32] {
        transaction_id(&[self.part_id(0), self.part_id(1)])
    }

    fn part_id(&self, i: usize) -> [u8; 32] {
        let img = [&self.sys_img, &self.boot_img][i];
        let head = fwimage::ImageHead::read_from(&mut Cursor::new(img), img.len() as u64).unwrap();
        image_id(&head)
    }

    /// After a cut: A active and untouched; B complete exactly when it is
    /// pending, and then holding both parts with the transaction's id;
    /// a boot takes B only then. Returns the disk after that boot.
    fn check_after_cut(&self, d: Vec<u8>, what: &str) -> Vec<u8> {
        let mut m = MemStorage::new(d);
        let mut area = StateArea::read(&mut m, LOC)
            .unwrap_or_else(|e| panic!("{what}: state area unreadable: {e}"));
        let b = area.boot().clone();
        assert_eq!(b.active, Slot::A, "{what}: active slot changed");
        assert_eq!(b.slot(Slot::A).state, SlotState::Complete, "{what}");
        for r in slot_ranges(Slot::A) {
            assert!(m.data[r.clone()] == self.old[r.clone()], "{what}: slot A");
        }
        let bi = b.slot(Slot::B);
        let holds = slot_holds(&m.data, Slot::B, &self.segs());
        assert_eq!(
            bi.state == SlotState::Complete,
            b.pending == Some(Slot::B),
            "{what}: slot B {:?} but pending {:?}",
            bi.state,
            b.pending
        );
        if bi.state == SlotState::Complete {
            assert!(holds, "{what}: slot B complete without both parts");
            assert_eq!((bi.image_id, bi.version), (self.id(), 2), "{what}");
            assert_eq!(b.tries_left, 3, "{what}");
        }
        let dec = area.boot_attempt(&mut m).unwrap();
        if dec.slot == Slot::B {
            assert!(holds && bi.state == SlotState::Complete, "{what}");
        }
        m.data
    }

    fn check_done(&self, d: &[u8], what: &str) {
        let mut m = MemStorage::new(d.to_vec());
        let area = StateArea::read(&mut m, LOC).unwrap();
        let b = area.boot();
        assert_eq!((b.active, b.pending), (Slot::A, Some(Slot::B)), "{what}");
        let bi = b.slot(Slot::B);
        assert_eq!(bi.state, SlotState::Complete, "{what}");
        assert_eq!((bi.image_id, bi.version), (self.id(), 2), "{what}");
        assert_eq!(bi.label, "v2", "{what}");
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

fn options() -> ApplyOptions {
    ApplyOptions {
        chunk_size: 64 * KIB as usize,
        checkpoint_interval: 256 * KIB,
        ..ApplyOptions::default()
    }
}

#[test]
fn txn_two_parts_switch_together_in_one_commit() {
    let fx = Fixture::new();
    let mut m = MemStorage::new(fx.old.clone());
    let mut events = Vec::new();
    let mut parts = fx.parts(&[&fx.sys_img, &fx.boot_img]);
    let r = apply_parts(&mut parts, &mut m, &fx.trusted, &options(), &mut |e| {
        events.push(e.clone())
    })
    .unwrap();
    fx.check_done(&m.data, "uncut");
    assert_eq!(r.slot, Slot::B);
    assert_eq!(r.part_ids, vec![fx.part_id(0), fx.part_id(1)]);
    assert_eq!(
        r.applied.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 1]
    );
    assert!(r.applied.iter().all(|(_, a)| !a.pending));
    assert!(r.pending && !r.already_complete && r.repaired.is_empty());
    assert_eq!(
        r.bytes_proven,
        (fx.rootfs.len() + fx.env.len() + fx.boot.len()) as u64
    );
    // Complete (and pending) only once, at the end, after both parts
    // were read back.
    let complete: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            matches!(
                e,
                Event::SlotState {
                    state: SlotState::Complete,
                    ..
                }
            )
        })
        .map(|(i, _)| i)
        .collect();
    let last_proof = events
        .iter()
        .rposition(|e| matches!(e, Event::Part { proving: true, .. }))
        .unwrap();
    assert_eq!(complete.len(), 1, "{events:?}");
    assert!(complete[0] > last_proof);
    // Again: already complete, proven, nothing written.
    let before = m.bytes_written;
    let mut parts = fx.parts(&[&fx.sys_img, &fx.boot_img]);
    let r = apply_parts(&mut parts, &mut m, &fx.trusted, &options(), &mut |_| {}).unwrap();
    assert!(r.already_complete && r.applied.is_empty());
    assert_eq!(m.bytes_written, before);
    fx.check_done(&m.data, "again");
}

#[test]
fn txn_refuses_bad_part_sets_before_any_write() {
    let fx = Fixture::new();
    let k = key(1);
    let other_sys = image(BOARD, 2, &[seg("rootfs", "system", &fx.env)], &k);
    let v3_boot = image(BOARD, 3, &[seg("boot", "boot", &fx.boot)], &k);
    let other_board = image("other-board", 2, &[seg("boot", "boot", &fx.boot)], &k);
    let foreign = image(BOARD, 2, &[seg("boot", "boot", &fx.boot)], &key(9));
    let cases: Vec<(Vec<&[u8]>, &str)> = vec![
        (
            vec![&fx.sys_img, &other_sys],
            "both write slot group `system`",
        ),
        (vec![&fx.sys_img], "no segment for slot group `boot`"),
        (vec![&fx.sys_img, &v3_boot], "version 3"),
        (vec![&fx.sys_img, &other_board], "other-board"),
        (vec![&fx.sys_img, &foreign], ""),
        (vec![], "part count"),
    ];
    for (imgs, says) in cases {
        let mut m = MemStorage::new(fx.old.clone());
        let mut parts = fx.parts(&imgs);
        let e =
            apply_parts(&mut parts, &mut m, &fx.trusted, &options(), &mut |_| {}).expect_err(says);
        assert!(e.to_string().contains(says), "{says}: {e}");
        assert_eq!(m.writes, 0, "{says}: written before the refusal");
    }
    // A part that writes a group other than the one it is for.
    let mut m = MemStorage::new(fx.old.clone());
    let mut parts = fx.parts(&[&fx.sys_img, &fx.boot_img]);
    parts[1].groups = vec!["system".into()];
    let e = apply_parts(&mut parts, &mut m, &fx.trusted, &options(), &mut |_| {}).unwrap_err();
    assert!(
        e.to_string().contains("segment `boot` targets `boot`"),
        "{e}"
    );
    assert_eq!(m.writes, 0);
    // One part for the `system` group alone, when that is intended.
    let mut m = MemStorage::new(fx.old.clone());
    let mut parts = fx.parts(&[&fx.sys_img]);
    let opts = ApplyOptions {
        allow_partial: true,
        ..options()
    };
    apply_parts(&mut parts, &mut m, &fx.trusted, &opts, &mut |_| {}).unwrap();
}

#[test]
fn txn_a_corrupted_chunk_in_the_second_part_leaves_the_slot_unbootable() {
    let fx = Fixture::new();
    let mut bad = fx.boot_img.clone();
    let at = bad.len() - 5000;
    bad[at] ^= 0x40;
    let mut m = MemStorage::new(fx.old.clone());
    let mut parts = fx.parts(&[&fx.sys_img, &bad]);
    let e = apply_parts(&mut parts, &mut m, &fx.trusted, &options(), &mut |_| {}).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Integrity, "{e}");
    let area = StateArea::read(&mut m, LOC).unwrap();
    let b = area.boot();
    assert_eq!(b.slot(Slot::B).state, SlotState::Updating);
    assert_eq!(b.pending, None);
    // The first part was written, the slot is still never booted.
    assert!(slot_holds(&m.data, Slot::B, &fx.segs()[..2]));
    let mut area = area;
    assert_eq!(area.boot_attempt(&mut m).unwrap().slot, Slot::A);
}

#[test]
fn txn_proof_rewrites_a_part_that_no_longer_reads_back() {
    let fx = Fixture::new();
    let mut m = MemStorage::new(fx.old.clone());
    // Both parts written as a run that was cut just before its proof.
    for img in [&fx.sys_img, &fx.boot_img] {
        let o = ApplyOptions {
            slot: Some(Slot::B),
            allow_partial: true,
            leave_updating: true,
            ..options()
        };
        apply(
            Cursor::new(img),
            img.len() as u64,
            &mut m,
            &fx.trusted,
            &o,
            &mut |_| {},
        )
        .unwrap();
    }
    // Then part 1's bytes change on the medium.
    m.data[(SYSTEM_B + 70 * KIB) as usize] ^= 1;
    let mut parts = fx.parts(&[&fx.sys_img, &fx.boot_img]);
    let r = apply_parts(&mut parts, &mut m, &fx.trusted, &options(), &mut |_| {}).unwrap();
    // Part 2 resumed at its end (nothing fetched), part 1 was found by the
    // proof and written again.
    assert_eq!(r.repaired, [0]);
    let (i, part2) = &r.applied[0];
    assert_eq!(*i, 1);
    assert_eq!(part2.bytes_written, 0);
    fx.check_done(&m.data, "repaired");
}

#[test]
fn txn_power_cut_at_every_write_and_sync() {
    let fx = Fixture::new();
    let opts = options();
    let mut st = CrashStorage::new(fx.old.clone(), None);
    fx.run(&mut st, &opts).expect("uncut");
    fx.check_done(&st.durable, "uncut");
    let n = st.ops;
    let (mut scenarios, mut skipped_part1, mut resumed) = (0, 0, 0);
    for cut in 0..n {
        let mut st = CrashStorage::new(fx.old.clone(), Some(cut));
        let err = fx.run(&mut st, &opts).expect_err("the cut must surface");
        assert_eq!(err.class(), ErrorClass::Io, "cut {cut}: {err}");
        for tear in Tear::every(cut) {
            let what = format!("cut {cut}/{n} {tear:?}");
            let d = fx.check_after_cut(st.after_crash(tear), &what);
            let marked = {
                let mut m = MemStorage::new(d.clone());
                let a = StateArea::read(&mut m, LOC).unwrap();
                let bi = a.boot().slot(Slot::B).clone();
                (bi.state, bi.image_id)
            };
            let mut again = CrashStorage::new(d.clone(), None);
            let r = fx
                .run(&mut again, &opts)
                .unwrap_or_else(|e| panic!("{what}: resume failed: {e}"));
            fx.check_done(&again.durable, &what);
            // Cut while part 2 was written: part 1 is proven, not
            // written again.
            if marked == (SlotState::Updating, fx.part_id(1)) {
                assert!(
                    r.applied.iter().all(|(i, _)| *i == 1),
                    "{what}: part 1 rewritten"
                );
                skipped_part1 += 1;
            }
            if r.applied
                .iter()
                .any(|(_, a)| a.resumed_from.is_some() || a.already_complete)
            {
                resumed += 1;
            }
            scenarios += 1;
            // And a cut in the recovery, every few cut points.
            if cut % 16 == 0 && tear == Tear::Sectors(cut * 13 + 5) {
                for cut2 in 0..again.ops {
                    let mut st2 = CrashStorage::new(d.clone(), Some(cut2));
                    assert!(fx.run(&mut st2, &opts).is_err());
                    let what2 = format!("{what}, then cut {cut2} of the recovery");
                    let d2 = fx.check_after_cut(st2.after_crash(Tear::Sectors(cut2 + 3)), &what2);
                    let mut last = MemStorage::new(d2);
                    fx.run(&mut last, &opts)
                        .unwrap_or_else(|e| panic!("{what2}: final recovery failed: {e}"));
                    fx.check_done(&last.data, &what2);
                    scenarios += 1;
                }
            }
        }
    }
    eprintln!(
        "transaction: {n} cut points, {scenarios} power-loss scenarios; \
         {skipped_part1} recoveries proved part 1 instead of rewriting it, \
         {resumed} resumed a part from its journal"
    );
    assert!(n >= 40, "too few cut points: {n}");
    assert!(skipped_part1 > 0 && resumed > 0);
}
