//! The engine's refusals, resume, minimized writes and a real file target.

mod common;

use std::io::Cursor;

use common::*;
use fwimage::{Compression, ImageHead};
use updater::state::{Slot, SlotState, StateArea};
use updater::{
    apply, Access, ApplyOptions, ApplyReport, ErrorClass, Event, FileStorage, MemStorage, Storage,
};

fn run(
    img: &[u8],
    st: &mut dyn Storage,
    k: &ed25519_dalek::SigningKey,
    opts: &ApplyOptions,
) -> updater::Result<ApplyReport> {
    apply(
        Cursor::new(img),
        img.len() as u64,
        st,
        &trusted(k),
        opts,
        &mut |_| {},
    )
}

/// Applies and expects a refusal of `class` with not a single write.
fn refused(
    img: &[u8],
    k: &ed25519_dalek::SigningKey,
    opts: &ApplyOptions,
    class: ErrorClass,
) -> String {
    let before = disk();
    let mut m = MemStorage::new(before.clone());
    let err = run(img, &mut m, k, opts).expect_err("must be refused");
    assert_eq!(err.class(), class, "{err}");
    assert_eq!(m.writes, 0, "{err}: refused after writing");
    assert!(m.data == before, "{err}: target changed");
    err.to_string()
}

fn payloads() -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng(3);
    (
        rng.bytes(300 * KIB as usize + 17),
        rng.bytes(64 * KIB as usize),
    )
}

fn good_image(version: u64, board: &str, k: &ed25519_dalek::SigningKey) -> Vec<u8> {
    let (sys, boot) = payloads();
    image(
        board,
        version,
        &[seg("rootfs", "system", &sys), seg("kernel", "boot", &boot)],
        k,
    )
}

#[test]
fn refusals_write_nothing() {
    let k = key(1);
    let o = ApplyOptions::default();
    let img = good_image(2, BOARD, &k);

    // Corrupt payload: one bit in the last data block of the last segment.
    // One pass: what came before it is written, the bad chunk is not, and
    // the slot stays `updating`, never bootable; slot A is untouched.
    let mut bad = img.clone();
    let head = ImageHead::parse(&img).unwrap();
    let last = head.segments.last().unwrap();
    bad[(last.data_offset + last.stored_len - 1) as usize] ^= 0x10;
    let before = disk();
    let mut m = MemStorage::new(before.clone());
    let err = run(&bad, &mut m, &k, &o).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Integrity, "{err}");
    assert!(err.to_string().contains("kernel"), "{err}");
    for g in &layout().groups {
        let r = g.slot(Slot::A);
        let (a, b) = (r.offset as usize, (r.offset + r.size) as usize);
        assert!(m.data[a..b] == before[a..b], "slot A of {} changed", g.name);
    }
    let area = StateArea::read(&mut m, LOC).unwrap();
    assert_eq!(area.boot().slot(Slot::B).state, SlotState::Updating);
    assert_eq!(area.boot().pending, None);
    let mut b = area.boot().clone();
    assert_eq!(b.boot_attempt().slot, Slot::A);

    let m = refused(&img, &key(2), &o, ErrorClass::Signature);
    assert!(m.contains("untrusted"), "{m}");
    let m = refused(
        &good_image(2, "other-board", &k),
        &k,
        &o,
        ErrorClass::Policy,
    );
    assert!(m.contains("other-board"), "{m}");
    // The disk runs version 1; version 0 is a rollback.
    let m = refused(&good_image(0, BOARD, &k), &k, &o, ErrorClass::Policy);
    assert!(m.contains("rollback"), "{m}");
    let slot_a = ApplyOptions {
        slot: Some(Slot::A),
        ..ApplyOptions::default()
    };
    let m = refused(&img, &k, &slot_a, ErrorClass::Policy);
    assert!(m.contains("active slot"), "{m}");

    let big = vec![7u8; 2 * MIB as usize + 4096];
    let (_, boot) = payloads();
    let too_big = image(
        BOARD,
        2,
        &[seg("rootfs", "system", &big), seg("k", "boot", &boot)],
        &k,
    );
    let m = refused(&too_big, &k, &o, ErrorClass::Policy);
    assert!(m.contains("needs"), "{m}");
    let unknown = image(BOARD, 2, &[seg("rootfs", "data", &boot)], &k);
    let m = refused(&unknown, &k, &o, ErrorClass::Policy);
    assert!(m.contains("not a slot group"), "{m}");
    let partial = image(BOARD, 2, &[seg("rootfs", "system", &boot)], &k);
    let m = refused(&partial, &k, &o, ErrorClass::Policy);
    assert!(m.contains("boot"), "{m}");
    // ...which is fine when asked for.
    let mut m = MemStorage::new(disk());
    let r = run(
        &partial,
        &mut m,
        &k,
        &ApplyOptions {
            allow_partial: true,
            ..ApplyOptions::default()
        },
    )
    .unwrap();
    assert!(r.pending);

    // No state area: a format error, nothing written.
    let mut blank = MemStorage::new(vec![0; DISK_LEN]);
    let e = run(&img, &mut blank, &k, &o).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Format);
    assert_eq!(blank.writes, 0);
}

/// Every usage error is found before the first write: a complete,
/// pending slot B is not lost to `--seed B` (the slot being written), a
/// zero try count or a bad write size, and the whole disk is unchanged.
#[test]
fn usage_errors_change_nothing_even_on_a_pending_slot() {
    let k = key(1);
    let img = good_image(2, BOARD, &k);
    let mut m = MemStorage::new(disk());
    run(&img, &mut m, &k, &ApplyOptions::default()).unwrap();
    let pending = m.data.clone();
    assert_eq!(
        StateArea::read(&mut m, LOC).unwrap().boot().pending,
        Some(Slot::B)
    );
    let v3 = good_image(3, BOARD, &k);
    for (what, o) in [
        (
            "seed = target (default slot)",
            ApplyOptions {
                seed: updater::Seed::Slot(Slot::B),
                ..ApplyOptions::default()
            },
        ),
        (
            "seed = target (explicit slot)",
            ApplyOptions {
                slot: Some(Slot::B),
                seed: updater::Seed::Slot(Slot::B),
                ..ApplyOptions::default()
            },
        ),
        (
            "zero tries",
            ApplyOptions {
                tries: 0,
                ..ApplyOptions::default()
            },
        ),
        (
            "write size not a multiple of 4 KiB",
            ApplyOptions {
                chunk_size: 1000,
                ..ApplyOptions::default()
            },
        ),
        (
            "zero checkpoint interval",
            ApplyOptions {
                checkpoint_interval: 0,
                ..ApplyOptions::default()
            },
        ),
    ] {
        let mut m = MemStorage::new(pending.clone());
        let err = run(&v3, &mut m, &k, &o).expect_err(what);
        assert_eq!(err.class(), ErrorClass::Usage, "{what}: {err}");
        assert_eq!(m.writes, 0, "{what}: {err}: refused after writing");
        assert!(m.data == pending, "{what}: {err}: target changed");
    }
}

#[test]
fn applies_and_reapplies() {
    let k = key(1);
    let img = good_image(2, BOARD, &k);
    let (sys, boot) = payloads();
    let mut m = MemStorage::new(disk());
    let mut events = Vec::new();
    let r = apply(
        Cursor::new(&img),
        img.len() as u64,
        &mut m,
        &trusted(&k),
        &ApplyOptions::default(),
        &mut |e| events.push(e.clone()),
    )
    .unwrap();
    assert_eq!(r.slot, Slot::B);
    assert!(r.pending && !r.already_complete);
    assert_eq!(r.raw_bytes, (sys.len() + boot.len()) as u64);
    // Only the tail sector is padding.
    assert_eq!(r.bytes_written, r.raw_bytes.div_ceil(512) * 512);
    assert!(slot_holds(
        &m.data,
        Slot::B,
        &[seg("rootfs", "system", &sys), seg("k", "boot", &boot)]
    ));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::ImageAccepted { version: 2, .. })));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Pending {
            slot: Slot::B,
            tries: 3
        }
    )));
    let area = StateArea::read(&mut m, LOC).unwrap();
    let b = area.boot();
    assert_eq!(b.slot(Slot::B).state, SlotState::Complete);
    assert_eq!(b.slot(Slot::B).label, "v2");
    assert_eq!(b.slot(Slot::B).image_id, r.image_id);

    // The same image again: nothing to write.
    let w = m.bytes_written;
    let r2 = run(&img, &mut m, &k, &ApplyOptions::default()).unwrap();
    assert!(r2.already_complete);
    assert_eq!(m.bytes_written, w);
    // ...unless read-back finds the slot damaged, then it is rewritten.
    let at = (SYSTEM_B + 8192) as usize;
    m.data[at] ^= 1;
    let r3 = run(
        &img,
        &mut m,
        &k,
        &ApplyOptions {
            verify_writes: true,
            ..ApplyOptions::default()
        },
    )
    .unwrap();
    assert!(!r3.already_complete);
    assert!(slot_holds(
        &m.data,
        Slot::B,
        &[seg("rootfs", "system", &sys)]
    ));
}

#[test]
fn resume_writes_only_the_remainder() {
    let k = key(1);
    let mut rng = Rng(11);
    let sys = rng.bytes(MIB as usize + 4096 * 3 + 99);
    let boot = rng.bytes(100 * KIB as usize);
    let img = image(
        BOARD,
        5,
        &[
            seg("rootfs", "system", &sys),
            Seg {
                compression: Compression::Gzip,
                ..seg("kernel", "boot", &boot)
            },
        ],
        &k,
    );
    let opts = ApplyOptions {
        chunk_size: 64 * KIB as usize,
        checkpoint_interval: 256 * KIB,
        ..ApplyOptions::default()
    };
    let mut full = CrashStorage::new(disk(), None);
    let whole = run(&img, &mut full, &k, &opts).unwrap();
    let total_ops = full.ops;

    // Interrupt (e.g. unplugged) about two thirds in; every write up to
    // then made it to the medium.
    let mut st = CrashStorage::new(disk(), Some(total_ops * 2 / 3));
    assert!(run(&img, &mut st, &k, &opts).is_err());
    let after = st.after_crash(Tear::KeepAll);
    let journal = {
        let mut m = MemStorage::new(after.clone());
        let area = StateArea::read(&mut m, LOC).unwrap();
        assert_eq!(area.boot().slot(Slot::B).state, SlotState::Updating);
        area.journal().cloned().expect("a checkpoint was recorded")
    };
    let mut m = MemStorage::new(after);
    let mut resumed_event = None;
    let r = apply(
        Cursor::new(&img),
        img.len() as u64,
        &mut m,
        &trusted(&k),
        &opts,
        &mut |e| {
            if let Event::Resume { skipped, .. } = e {
                resumed_event = Some(*skipped);
            }
        },
    )
    .unwrap();
    // A checkpoint at a segment's end resumes at the next one's start.
    let head = ImageHead::parse(&img).unwrap();
    let expected = if journal.offset == head.segments[journal.segment as usize].raw_len {
        (journal.segment + 1, 0)
    } else {
        (journal.segment, journal.offset)
    };
    assert_eq!(r.resumed_from, Some(expected));
    assert_eq!(Some(r.skipped_resume), resumed_event);
    assert!(r.skipped_resume > 0);
    // Exactly the rest: raw bytes after the checkpoint (plus tail padding).
    let padding = whole.bytes_written - whole.raw_bytes;
    assert!(r.skipped_resume + r.bytes_written >= r.raw_bytes);
    assert!(r.skipped_resume + r.bytes_written <= r.raw_bytes + padding);
    assert!(
        r.bytes_written < whole.bytes_written / 2,
        "{} of {}",
        r.bytes_written,
        whole.bytes_written
    );
    assert!(slot_holds(
        &m.data,
        Slot::B,
        &[seg("rootfs", "system", &sys), seg("k", "boot", &boot)]
    ));

    // A journal for another image is not trusted: that run starts over.
    let mut st = CrashStorage::new(disk(), Some(total_ops * 2 / 3));
    assert!(run(&img, &mut st, &k, &opts).is_err());
    let other = image(
        BOARD,
        6,
        &[seg("rootfs", "system", &sys), seg("kernel", "boot", &boot)],
        &k,
    );
    let mut m = MemStorage::new(st.after_crash(Tear::KeepAll));
    let r = run(&other, &mut m, &k, &opts).unwrap();
    assert_eq!(r.resumed_from, None);
    assert_eq!(r.skipped_resume, 0);

    // A boundary block that does not read back as the image (someone
    // wrote there) is not trusted either.
    let mut st = CrashStorage::new(disk(), Some(total_ops * 2 / 3));
    assert!(run(&img, &mut st, &k, &opts).is_err());
    let mut d = st.after_crash(Tear::KeepAll);
    let at = (SYSTEM_B + journal.offset - 1) as usize;
    d[at] ^= 0xff;
    let mut m = MemStorage::new(d);
    let mut restarted = false;
    let r = apply(
        Cursor::new(&img),
        img.len() as u64,
        &mut m,
        &trusted(&k),
        &opts,
        &mut |e| restarted |= matches!(e, Event::Restart { .. }),
    )
    .unwrap();
    // Writing resumes at the chunk that fails its signed hash, no later.
    let cs = ImageHead::parse(&img).unwrap().header.chunk_size();
    let bad_chunk = (journal.offset - 1) / cs * cs;
    assert!(restarted, "the bad chunk was reported");
    assert_eq!(r.resumed_from, Some((0, bad_chunk)));
    assert!(slot_holds(
        &m.data,
        Slot::B,
        &[seg("rootfs", "system", &sys)]
    ));
}

#[test]
fn minimize_writes_skips_unchanged_blocks() {
    let k = key(1);
    let mut rng = Rng(5);
    let sys = rng.bytes(MIB as usize + 1000);
    let boot = rng.bytes(32 * KIB as usize);
    let v2 = image(
        BOARD,
        2,
        &[seg("rootfs", "system", &sys), seg("k", "boot", &boot)],
        &k,
    );
    let mut m = MemStorage::new(disk());
    run(&v2, &mut m, &k, &ApplyOptions::default()).unwrap();

    // v3 changes three 4 KiB blocks and the partial tail.
    let mut sys3 = sys.clone();
    for at in [0usize, 300 * 1024 + 5, 700 * 1024 + 4095, sys.len() - 1] {
        sys3[at] ^= 0x5a;
    }
    let v3 = image(
        BOARD,
        3,
        &[seg("rootfs", "system", &sys3), seg("k", "boot", &boot)],
        &k,
    );
    let before = m.bytes_written;
    let min = ApplyOptions {
        minimize_writes: true,
        verify_writes: true,
        ..ApplyOptions::default()
    };
    let r = run(&v3, &mut m, &k, &min).unwrap();
    assert_eq!(
        r.slot,
        Slot::B,
        "v2 was only pending, so B is still the inactive slot"
    );
    // Four blocks; the tail block is 1000 bytes padded to 1024.
    assert_eq!(r.bytes_written, 3 * 4096 + 1024);
    // Everything else written is state records (one block each).
    let records = m.bytes_written - before - r.bytes_written;
    assert!(
        records.is_multiple_of(4096) && records / 4096 <= 8,
        "{records}"
    );
    assert_eq!(r.skipped_unchanged, r.raw_bytes - 3 * 4096 - 1000);
    assert!(slot_holds(
        &m.data,
        Slot::B,
        &[seg("rootfs", "system", &sys3), seg("k", "boot", &boot)]
    ));
}

#[test]
fn real_file_target_with_direct_io() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, disk()).unwrap();
    let k = key(1);
    let img = good_image(2, BOARD, &k);
    let mut st = FileStorage::open(&path, Access::ReadWrite).unwrap();
    let mut warnings = Vec::new();
    let r = apply(
        Cursor::new(&img),
        img.len() as u64,
        &mut st,
        &trusted(&k),
        &ApplyOptions {
            verify_writes: true,
            ..ApplyOptions::default()
        },
        &mut |e| {
            if let Event::Warning(w) = e {
                warnings.push(w.clone());
            }
        },
    )
    .unwrap();
    // CARGO_TARGET_TMPDIR is on a disk filesystem here (ext4), which
    // takes O_DIRECT; a fallback must at least have said so.
    assert!(r.direct_io || !warnings.is_empty());
    assert!(r.bytes_read_back >= r.raw_bytes);
    drop(st);
    let d = std::fs::read(&path).unwrap();
    let (sys, boot) = payloads();
    assert!(slot_holds(
        &d,
        Slot::B,
        &[seg("rootfs", "system", &sys), seg("k", "boot", &boot)]
    ));
    assert_eq!(d.len(), DISK_LEN, "a file target must not grow");
    let mut ro = FileStorage::open(&path, Access::ReadOnly).unwrap();
    let area = StateArea::read(&mut ro, LOC).unwrap();
    assert_eq!(area.boot().pending, Some(Slot::B));
}
