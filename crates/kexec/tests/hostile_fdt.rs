//! The device-tree reader and writer under hostile input, in process: a
//! bounded-time mutation loop over valid and hostile blobs, with a
//! counting allocator proving that no parse (and no rewrite of what
//! parsed) allocates more than a small multiple of its input.
//!
//! The counters are per thread, so the test harness's own threads do not
//! disturb them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use kexec::arm64::{rewrite_chosen, Range, Seeds};
use kexec::fdt::{self, Fdt, Node};

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn add(n: usize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get() + n;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

fn sub(n: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(n)));
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        add(l.size());
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        sub(l.size());
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        add(new);
        sub(l.size());
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Peak bytes allocated by `f` above what was live when it started.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    (r, PEAK.with(Cell::get) - base)
}

/// What the peak may be: the tree's budget twice (vectors grow by
/// doubling), the tree again for a rewrite, the written blob three times
/// over (structure, strings, output), and a constant for small inputs.
fn bound(len: usize) -> usize {
    (2 * fdt::EXPANSION + 1 + 3) * len + (64 << 10)
}

/// Parse, and for what parses, rewrite /chosen and write it back, as the
/// arm64 loader does.
fn exercise(blob: &[u8]) -> usize {
    let (r, peak) = peak_of(|| {
        let Ok(mut f) = Fdt::parse(blob) else {
            return false;
        };
        rewrite_chosen(
            &mut f,
            "console=ttyAMA0 root=/dev/vda2 ro",
            Some(Range {
                start: 0x4800_0000,
                end: 0x4810_0000,
            }),
            Some(&Seeds {
                kaslr: [1; 8],
                rng: vec![2; 128],
            }),
        );
        let out = f.to_bytes();
        // What the writer writes, the reader reads back, unless the input
        // was padded: the written blob is compact, so the same tree may
        // exceed the budget of the smaller blob (real trees are near 3x).
        if let Err(e) = Fdt::parse(&out) {
            assert!(e.0.contains("times the blob"), "{e}");
        }
        true
    });
    assert!(
        peak <= bound(blob.len()),
        "{} byte blob (parsed: {r}) peaked at {peak} bytes",
        blob.len()
    );
    peak
}

fn sample() -> Vec<u8> {
    let mut root = Node::new("");
    root.set_prop("#address-cells", 2u32.to_be_bytes().to_vec());
    root.set_prop("compatible", b"linux,dummy-virt\0".to_vec());
    for i in 0..8u64 {
        let mut n = Node::new(&format!("serial@{:x}", 0x900_0000 + i * 0x1000));
        n.set_prop("compatible", b"arm,pl011\0arm,primecell\0".to_vec());
        n.set_prop("reg", (0x900_0000 + i * 0x1000).to_be_bytes().to_vec());
        root.children.push(n);
    }
    let mut chosen = Node::new("chosen");
    chosen.set_prop("bootargs", b"console=ttyAMA0\0".to_vec());
    root.children.push(chosen);
    Fdt {
        boot_cpuid_phys: 0,
        reservations: vec![(0x4000_0000, 0x1000)],
        root,
    }
    .to_bytes()
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, b: &mut Vec<u8>) {
    const WORDS: [u32; 10] = [0, 1, 2, 3, 4, 9, 16, 17, 0xffff_ffff, 0x20_0000];
    match rng.below(5) {
        0 => {
            let i = rng.below(b.len());
            b[i] ^= 1 << rng.below(8);
        }
        1 if b.len() >= 4 => {
            // A structure token, length, offset or header field.
            let i = rng.below(b.len() / 4) * 4;
            let w = if rng.below(2) == 0 {
                WORDS[rng.below(WORDS.len())]
            } else {
                rng.below(b.len() + 64) as u32
            };
            b[i..i + 4].copy_from_slice(&w.to_be_bytes());
        }
        2 => b.truncate(rng.below(b.len()) + 1),
        3 => {
            // Repeat a 4-aligned run: more tokens of the same kind.
            let a = rng.below(b.len() / 4) * 4;
            let n = (rng.below(64) + 1) * 4;
            let run: Vec<u8> = b.iter().skip(a).take(n).copied().collect();
            let at = rng.below(b.len() / 4) * 4;
            for _ in 0..rng.below(32) + 1 {
                b.splice(at..at, run.iter().copied());
            }
        }
        _ => {
            let i = rng.below(b.len());
            b[i] = rng.next() as u8;
        }
    }
}

#[test]
fn hostile_fdt_the_85_gib_blob_is_refused_within_bounds() {
    let blob = fdt::many_props_one_long_name(fdt::MAX_LEN);
    let peak = exercise(&blob);
    eprintln!("2 MiB hostile blob: peak {peak} bytes");
    assert!(Fdt::parse(&blob).is_err());
    // Every size on the way up: accepted while within the budget,
    // refused after, never beyond the bound.
    let mut len = 64;
    while len <= fdt::MAX_LEN {
        exercise(&fdt::many_props_one_long_name(len));
        len *= 2;
    }
}

#[test]
fn hostile_fdt_mutations_stay_bounded() {
    let seeds = [
        sample(),
        fdt::many_props_one_long_name(4096),
        fdt::many_props_one_long_name(64 << 10),
    ];
    for s in &seeds {
        exercise(s);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Bounded in both count and time (a debug build on a busy machine).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut runs, mut worst) = (0u32, 0f64);
    while runs < 20_000 && Instant::now() < deadline {
        let mut b = seeds[rng.below(seeds.len())].clone();
        for _ in 0..rng.below(4) + 1 {
            mutate(&mut rng, &mut b);
            if b.is_empty() {
                b.push(0);
            }
        }
        b.truncate(fdt::MAX_LEN + 4096);
        worst = worst.max(exercise(&b) as f64 / b.len() as f64);
        runs += 1;
    }
    eprintln!("{runs} mutated blobs; worst peak {worst:.1} bytes per input byte");
    assert!(runs >= 100, "only {runs} mutations ran");
}
