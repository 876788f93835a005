//! SHA-256 of two messages at once.
//!
//! On x86_64 with the SHA extensions one message's rounds are a chain of
//! dependent `sha256rnds2` instructions, so a single stream runs at the
//! instruction's latency and leaves the unit idle in between. Two
//! independent messages interleaved fill some of those gaps (the
//! "multi-buffer" idea of Intel ISA-L's `sha256_ni_x2`): 1.2–1.3× the
//! bytes per core of two `sha2` digests one after the other on the
//! host's Rocket Lake, where the SHA unit itself is then the limit
//! (docs/BENCHMARKS.md). The full
//! blocks both messages have are compressed together; what is left of each
//! (the longer one's extra blocks, the tail and the padding) goes through
//! `sha2::compress256`. Without the extensions, and on every other target,
//! [`digest2`] is two `sha2::Sha256::digest` calls.

#![deny(unsafe_op_in_unsafe_fn)]

use sha2::{Digest, Sha256};

/// The SHA-256 digests of `a` and of `b`, in that order.
pub fn digest2(a: &[u8], b: &[u8]) -> [[u8; 32]; 2] {
    #[cfg(target_arch = "x86_64")]
    if ni::available() {
        return ni::digest2(a, b);
    }
    digest2_portable(a, b)
}

/// [`digest2`] without SHA-NI, whatever the CPU: for tests and benchmarks.
#[doc(hidden)]
pub fn digest2_portable(a: &[u8], b: &[u8]) -> [[u8; 32]; 2] {
    [Sha256::digest(a).into(), Sha256::digest(b).into()]
}

/// The initial hash value (FIPS 180-4, 5.3.3).
#[cfg(target_arch = "x86_64")]
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Finishes one message whose first `done` bytes are in `state`: the
/// remaining full blocks, then the tail with the standard padding.
#[cfg(target_arch = "x86_64")]
fn finish(mut state: [u32; 8], msg: &[u8], done: usize) -> [u8; 32] {
    use sha2::digest::generic_array::GenericArray;
    let rest = &msg[done..];
    let whole = rest.len() / 64 * 64;
    // The longer message's extra blocks, copied 16 at a time into the
    // block type `compress256` takes: one call per 1 KiB rather than per
    // block (each call loads and stores the state; the copy is cheaper).
    let mut buf = [GenericArray::default(); 16];
    for run in rest[..whole].chunks(16 * 64) {
        let n = run.len() / 64;
        for (dst, src) in buf.iter_mut().zip(run.chunks_exact(64)) {
            dst.copy_from_slice(src);
        }
        sha2::compress256(&mut state, &buf[..n]);
    }
    let tail = &rest[whole..];
    // The tail, 0x80, zeros, and the length in bits: one block when the
    // tail leaves room for 9 bytes, else two.
    let mut pad = [0u8; 128];
    pad[..tail.len()].copy_from_slice(tail);
    pad[tail.len()] = 0x80;
    let n = if tail.len() < 56 { 64 } else { 128 };
    let bits = (msg.len() as u64).wrapping_mul(8);
    pad[n - 8..n].copy_from_slice(&bits.to_be_bytes());
    for (dst, src) in buf.iter_mut().zip(pad[..n].chunks_exact(64)) {
        dst.copy_from_slice(src);
    }
    sha2::compress256(&mut state, &buf[..n / 64]);
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod ni {
    use core::arch::x86_64::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// 0 = not probed yet, 1 = no, 2 = yes.
    static HAVE: AtomicU8 = AtomicU8::new(0);

    pub(crate) fn available() -> bool {
        match HAVE.load(Ordering::Relaxed) {
            0 => {
                let yes = std::is_x86_feature_detected!("sha")
                    && std::is_x86_feature_detected!("sse2")
                    && std::is_x86_feature_detected!("ssse3")
                    && std::is_x86_feature_detected!("sse4.1");
                HAVE.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
                yes
            }
            v => v == 2,
        }
    }

    pub(crate) fn digest2(a: &[u8], b: &[u8]) -> [[u8; 32]; 2] {
        let both = a.len().min(b.len()) / 64 * 64;
        let mut st = [super::H0; 2];
        // SAFETY: only called after `available()` found every feature
        // `compress2` is compiled for.
        unsafe { compress2(&mut st, &a[..both], &b[..both]) };
        [super::finish(st[0], a, both), super::finish(st[1], b, both)]
    }

    /// The round constants, four to a vector in round order.
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// SHA-NI keeps the state as ABEF and CDGH vectors.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn to_ni(s: &[u32; 8]) -> (__m128i, __m128i) {
        let dcba = _mm_set_epi32(s[3] as i32, s[2] as i32, s[1] as i32, s[0] as i32);
        let hgfe = _mm_set_epi32(s[7] as i32, s[6] as i32, s[5] as i32, s[4] as i32);
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
        (
            _mm_alignr_epi8(cdab, efgh, 8),
            _mm_blend_epi16(efgh, cdab, 0xF0),
        )
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn from_ni(abef: __m128i, cdgh: __m128i, s: &mut [u32; 8]) {
        let feba = _mm_shuffle_epi32(abef, 0x1B);
        let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
        let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
        let hgef = _mm_alignr_epi8(dchg, feba, 8);
        *s = [
            _mm_extract_epi32(dcba, 0) as u32,
            _mm_extract_epi32(dcba, 1) as u32,
            _mm_extract_epi32(dcba, 2) as u32,
            _mm_extract_epi32(dcba, 3) as u32,
            _mm_extract_epi32(hgef, 0) as u32,
            _mm_extract_epi32(hgef, 1) as u32,
            _mm_extract_epi32(hgef, 2) as u32,
            _mm_extract_epi32(hgef, 3) as u32,
        ];
    }

    /// The next four message words from the last sixteen.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn schedule(w0: __m128i, w1: __m128i, w2: __m128i, w3: __m128i) -> __m128i {
        let t = _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4));
        _mm_sha256msg2_epu32(t, w3)
    }

    /// Four rounds of each stream, the two chains side by side so that
    /// each `sha256rnds2` of one stream issues while the other's is in
    /// flight.
    macro_rules! rounds4x2 {
        ($a0:ident, $c0:ident, $m0:expr, $a1:ident, $c1:ident, $m1:expr, $i:expr) => {{
            let k = _mm_set_epi32(
                K[4 * $i + 3] as i32,
                K[4 * $i + 2] as i32,
                K[4 * $i + 1] as i32,
                K[4 * $i] as i32,
            );
            let t0 = _mm_add_epi32($m0, k);
            let t1 = _mm_add_epi32($m1, k);
            $c0 = _mm_sha256rnds2_epu32($c0, $a0, t0);
            $c1 = _mm_sha256rnds2_epu32($c1, $a1, t1);
            $a0 = _mm_sha256rnds2_epu32($a0, $c0, _mm_shuffle_epi32(t0, 0x0E));
            $a1 = _mm_sha256rnds2_epu32($a1, $c1, _mm_shuffle_epi32(t1, 0x0E));
        }};
    }

    /// Compresses the blocks of `a` into `st[0]` and those of `b` into
    /// `st[1]`, block i of both together. `a` and `b` must be the same
    /// whole number of blocks (extra bytes of either are left alone).
    ///
    /// # Safety
    ///
    /// The CPU must have sha, sse2, ssse3 and sse4.1.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress2(st: &mut [[u32; 8]; 2], a: &[u8], b: &[u8]) {
        // Message bytes are big-endian words.
        let bswap = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
        let load = |blk: &[u8], i: usize| {
            debug_assert!(blk.len() == 64 && i < 4);
            // SAFETY: `blk` is one 64-byte block (from `chunks_exact(64)`)
            // and `i < 4`, so the 16 bytes at `16 * i` are inside it;
            // `loadu` has no alignment requirement.
            let v = unsafe { _mm_loadu_si128(blk.as_ptr().add(16 * i).cast()) };
            _mm_shuffle_epi8(v, bswap)
        };
        let (mut a0, mut c0) = to_ni(&st[0]);
        let (mut a1, mut c1) = to_ni(&st[1]);
        for (x, y) in a.chunks_exact(64).zip(b.chunks_exact(64)) {
            let (sa0, sc0, sa1, sc1) = (a0, c0, a1, c1);
            let (mut x0, mut x1, mut x2, mut x3) = (load(x, 0), load(x, 1), load(x, 2), load(x, 3));
            let (mut y0, mut y1, mut y2, mut y3) = (load(y, 0), load(y, 1), load(y, 2), load(y, 3));
            rounds4x2!(a0, c0, x0, a1, c1, y0, 0);
            rounds4x2!(a0, c0, x1, a1, c1, y1, 1);
            rounds4x2!(a0, c0, x2, a1, c1, y2, 2);
            rounds4x2!(a0, c0, x3, a1, c1, y3, 3);
            // Rounds 16..64: each group's words from the sixteen before,
            // rotating through the four registers.
            let mut i = 4;
            while i < 16 {
                x0 = schedule(x0, x1, x2, x3);
                y0 = schedule(y0, y1, y2, y3);
                rounds4x2!(a0, c0, x0, a1, c1, y0, i);
                x1 = schedule(x1, x2, x3, x0);
                y1 = schedule(y1, y2, y3, y0);
                rounds4x2!(a0, c0, x1, a1, c1, y1, i + 1);
                x2 = schedule(x2, x3, x0, x1);
                y2 = schedule(y2, y3, y0, y1);
                rounds4x2!(a0, c0, x2, a1, c1, y2, i + 2);
                x3 = schedule(x3, x0, x1, x2);
                y3 = schedule(y3, y0, y1, y2);
                rounds4x2!(a0, c0, x3, a1, c1, y3, i + 3);
                i += 4;
            }
            a0 = _mm_add_epi32(a0, sa0);
            c0 = _mm_add_epi32(c0, sc0);
            a1 = _mm_add_epi32(a1, sa1);
            c1 = _mm_add_epi32(c1, sc1);
        }
        from_ni(a0, c0, &mut st[0]);
        from_ni(a1, c1, &mut st[1]);
    }
}
