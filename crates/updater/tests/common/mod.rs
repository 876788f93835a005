//! Shared fixtures: signed test images, a two-group A/B disk, and a
//! storage backend that models a volatile write cache and power cuts.
#![allow(dead_code)]

use std::io::{self, Cursor};

use ed25519_dalek::SigningKey;
use fwimage::{Compression, ImageBuilder, SegmentSpec, TrustedKeys};
use updater::state::{init_state_area, BootState, Layout, Slot, SlotGroup, SlotRange};
use updater::{Geometry, MemStorage, StateLocation, Storage};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const BOARD: &str = "test-board";

/// xorshift64*: deterministic test data and tear patterns.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn trusted(k: &SigningKey) -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add(k.verifying_key());
    t
}

pub struct Seg<'a> {
    pub name: &'a str,
    pub target: &'a str,
    pub offset: u64,
    pub data: &'a [u8],
    pub compression: Compression,
}

pub fn seg<'a>(name: &'a str, target: &'a str, data: &'a [u8]) -> Seg<'a> {
    Seg {
        name,
        target,
        offset: 0,
        data,
        compression: Compression::None,
    }
}

/// A signed image in memory.
pub fn image(board: &str, version: u64, segs: &[Seg], k: &SigningKey) -> Vec<u8> {
    image_with(board, version, segs, k, false)
}

/// [`image`], with all-zero chunks of compressed segments stored empty
/// when `zero_chunks` (docs/FORMAT.md, "Zero chunks").
pub fn image_with(
    board: &str,
    version: u64,
    segs: &[Seg],
    k: &SigningKey,
    zero_chunks: bool,
) -> Vec<u8> {
    let mut b = ImageBuilder::new(board, version)
        .unwrap()
        .version_label(&format!("v{version}"))
        .unwrap()
        // The smallest chunks: more chunk boundaries, checkpoints and cut
        // points per byte of fixture.
        .chunk_size(64 * 1024)
        .unwrap()
        .zero_chunks(zero_chunks);
    for s in segs {
        b.add_segment(
            SegmentSpec {
                name: s.name.into(),
                target: s.target.into(),
                target_offset: s.offset,
                compression: s.compression,
                level: None,
            },
            s.data.len() as u64,
            s.data,
        )
        .unwrap();
    }
    let mut out = Cursor::new(Vec::new());
    b.write(&mut out, &mut |_| {}).unwrap();
    fwimage::insert_signature(&mut out, k).unwrap();
    out.into_inner()
}

/// Where the test disks keep their state area: the defaults (copy 0 at
/// 512 KiB, copy 1 4 MiB further).
pub const LOC: StateLocation = StateLocation {
    offset: updater::DEFAULT_STATE_OFFSET,
    copy_distance: updater::DEFAULT_STATE_COPY_DISTANCE,
};

/// Offset of slot B of `system` (tests poke bytes there).
pub const SYSTEM_B: u64 = 7 * MIB;

/// The state area up to 4.5 MiB + 16 KiB; system: A at 5 MiB, B at 7 MiB
/// (2 MiB each); boot: A at 9 MiB, B at 10 MiB (1 MiB each). 11 MiB in all.
pub fn layout() -> Layout {
    let pair = |name: &str, a: u64, b: u64, size: u64| SlotGroup {
        name: name.into(),
        slots: [SlotRange { offset: a, size }, SlotRange { offset: b, size }],
    };
    Layout::new(
        BOARD,
        LOC,
        vec![
            pair("system", 5 * MIB, SYSTEM_B, 2 * MIB),
            pair("boot", 9 * MIB, 10 * MIB, MIB),
        ],
    )
    .unwrap()
}

pub const DISK_LEN: usize = 11 * MIB as usize;

/// A disk whose A slots hold random "old firmware" (version 1, active)
/// and whose B slots hold other random bytes.
pub fn disk() -> Vec<u8> {
    let mut rng = Rng(42);
    let mut d = rng.bytes(DISK_LEN);
    let mut m = MemStorage::new(std::mem::take(&mut d));
    init_state_area(
        &mut m,
        &layout(),
        &BootState::initial(Slot::A, 1, "v1").unwrap(),
    )
    .unwrap();
    m.data
}

/// The byte ranges of slot `s` over all groups.
pub fn slot_ranges(s: Slot) -> Vec<std::ops::Range<usize>> {
    layout()
        .groups
        .iter()
        .map(|g| {
            let r = g.slot(s);
            r.offset as usize..(r.offset + r.size) as usize
        })
        .collect()
}

/// Does slot `s` hold `segs` (raw bytes at their offsets)?
pub fn slot_holds(disk: &[u8], s: Slot, segs: &[Seg]) -> bool {
    let l = layout();
    segs.iter().all(|sg| {
        let r = l.group(sg.target).unwrap().slot(s);
        let at = (r.offset + sg.offset) as usize;
        disk[at..at + sg.data.len()] == *sg.data
    })
}

/// How unsynced writes survive a power cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tear {
    /// None of them reached the medium.
    LoseAll,
    /// All of them did.
    KeepAll,
    /// Each kept up to a seeded 512-byte boundary (in-order device).
    Prefix(u64),
    /// Each 512-byte sector of each write independently kept or lost
    /// (a cache that reorders).
    Sectors(u64),
    /// The first k writes reached the medium, the next one torn at a
    /// 512-byte boundary, the rest lost (an in-order cache).
    InOrder(u64),
    /// Only the newest k writes reached the medium (a cache that flushed
    /// the most recent data first): the adversary for any "data, then the
    /// record that vouches for it" sequence without a sync in between.
    Newest(u64),
}

impl Tear {
    /// The tears tried at cut point `cut` of an apply: each kind once,
    /// seeded by the cut so the torn boundaries move from cut to cut.
    pub fn every(cut: u64) -> [Tear; 6] {
        [
            Tear::LoseAll,
            Tear::KeepAll,
            Tear::Prefix(cut * 7 + 1),
            Tear::Sectors(cut * 13 + 5),
            Tear::InOrder(cut * 17 + 3),
            Tear::Newest(cut * 19 + 11),
        ]
    }
}

pub const SECTOR: usize = 512;

/// A disk behind a volatile write cache. Writes are visible to reads at
/// once but reach the "medium" only at `sync`. `crash_at = Some(n)` cuts
/// the power during the n-th write or sync call (0-based): that call and
/// every later one fail, and what survives is decided by a [`Tear`].
pub struct CrashStorage {
    pub view: Vec<u8>,
    pub durable: Vec<u8>,
    unsynced: Vec<(usize, Vec<u8>)>,
    pub ops: u64,
    pub crash_at: Option<u64>,
    pub crashed: bool,
    pub writes: u64,
    pub syncs: u64,
}

impl CrashStorage {
    pub fn new(disk: Vec<u8>, crash_at: Option<u64>) -> Self {
        CrashStorage {
            durable: disk.clone(),
            view: disk,
            unsynced: Vec::new(),
            ops: 0,
            crash_at,
            crashed: false,
            writes: 0,
            syncs: 0,
        }
    }

    fn power_cut() -> io::Error {
        io::Error::other("simulated power cut")
    }

    /// Counts the call; true if the power goes now.
    fn tick(&mut self) -> io::Result<bool> {
        if self.crashed {
            return Err(Self::power_cut());
        }
        let n = self.ops;
        self.ops += 1;
        Ok(self.crash_at == Some(n))
    }

    /// The medium after the cut.
    pub fn after_crash(&self, tear: Tear) -> Vec<u8> {
        let mut d = self.durable.clone();
        let mut rng = Rng(match tear {
            Tear::Prefix(s) | Tear::Sectors(s) | Tear::InOrder(s) | Tear::Newest(s) => s | 1,
            _ => 1,
        });
        let n = self.unsynced.len() as u64;
        let k = rng.below(n + 1) as usize;
        for (i, (at, data)) in self.unsynced.iter().enumerate() {
            let sectors = data.len().div_ceil(SECTOR);
            let keep: Vec<bool> = match tear {
                Tear::InOrder(_) if i < k => vec![true; sectors],
                Tear::InOrder(_) if i == k => {
                    let cut = rng.below(sectors as u64) as usize;
                    (0..sectors).map(|j| j < cut).collect()
                }
                Tear::InOrder(_) => vec![false; sectors],
                Tear::Newest(_) => vec![i + k >= n as usize && n > 0; sectors],
                Tear::LoseAll => vec![false; sectors],
                Tear::KeepAll => vec![true; sectors],
                Tear::Prefix(_) => {
                    let k = rng.below(sectors as u64 + 1) as usize;
                    (0..sectors).map(|i| i < k).collect()
                }
                Tear::Sectors(_) => (0..sectors).map(|_| rng.next() & 1 == 1).collect(),
            };
            for (i, kept) in keep.iter().enumerate() {
                if *kept {
                    let s = i * SECTOR;
                    let e = (s + SECTOR).min(data.len());
                    d[at + s..at + e].copy_from_slice(&data[s..e]);
                }
            }
        }
        d
    }
}

impl Storage for CrashStorage {
    fn size(&self) -> u64 {
        self.view.len() as u64
    }
    fn geometry(&self) -> Geometry {
        Geometry {
            logical: 512,
            physical: 4096,
        }
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.crashed {
            return Err(Self::power_cut());
        }
        let at = offset as usize;
        buf.copy_from_slice(&self.view[at..at + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let cut = self.tick()?;
        let at = offset as usize;
        assert_eq!(at % SECTOR, 0, "unaligned write offset {at}");
        assert_eq!(
            buf.len() % SECTOR,
            0,
            "unaligned write length {}",
            buf.len()
        );
        assert_eq!(buf.as_ptr() as usize % 4096, 0, "unaligned buffer");
        self.view[at..at + buf.len()].copy_from_slice(buf);
        self.unsynced.push((at, buf.to_vec()));
        self.writes += 1;
        if cut {
            self.crashed = true;
            return Err(Self::power_cut());
        }
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        if self.tick()? {
            self.crashed = true;
            return Err(Self::power_cut());
        }
        for (at, data) in self.unsynced.drain(..) {
            self.durable[at..at + data.len()].copy_from_slice(&data);
        }
        self.syncs += 1;
        Ok(())
    }
    fn describe(&self) -> String {
        "simulated disk with a volatile write cache".into()
    }
}
