//! `digest2` must give exactly `sha2`'s digests, for every length pair the
//! padding and the interleave split differently.

use sha2::{Digest, Sha256};
use sha256x2::{digest2, digest2_portable};

/// Deterministic bytes (xorshift), so a failure is reproducible.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn check(a: &[u8], b: &[u8]) {
    let want = [sha(a), sha(b)];
    assert_eq!(digest2(a, b), want, "lengths {} and {}", a.len(), b.len());
    assert_eq!(
        digest2_portable(a, b),
        want,
        "portable, lengths {} and {}",
        a.len(),
        b.len()
    );
}

#[test]
fn known_answers() {
    // FIPS 180-2 examples, through both paths of `digest2`.
    let abc = hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    let two = hex("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    let msg2 = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_eq!(digest2(b"abc", msg2), [abc, two]);
    assert_eq!(digest2(msg2, b"abc"), [two, abc]);
    let a64 = [b'a'; 64 * 3];
    assert_eq!(digest2(&a64, &a64), [sha(&a64); 2]);
}

fn hex(s: &str) -> [u8; 32] {
    let mut o = [0u8; 32];
    for (i, b) in o.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    o
}

#[test]
fn all_short_length_pairs() {
    let a = bytes(300, 1);
    let b = bytes(300, 2);
    for la in 0..=300 {
        for lb in [
            0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 191, 192, 200, 255, 256, 300,
        ] {
            check(&a[..la], &b[..lb]);
            check(&b[..lb], &a[..la]);
        }
    }
}

#[test]
fn equal_lengths_and_same_message() {
    let a = bytes(4096 + 77, 3);
    let b = bytes(4096 + 77, 4);
    for n in (0..=a.len()).step_by(61) {
        check(&a[..n], &b[..n]);
        check(&a[..n], &a[..n]);
    }
}

#[test]
fn random_lengths_up_to_a_mebibyte() {
    let buf = bytes(2 << 20, 5);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = |m: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % m as u64) as usize
    };
    for _ in 0..40 {
        let (la, lb) = (next(1 << 20), next(1 << 20));
        let (oa, ob) = (next(1 << 20), next(1 << 20));
        check(&buf[oa..oa + la], &buf[ob..ob + lb]);
    }
    // The apply's shapes: two whole 256 KiB chunks, and a whole one with
    // a segment's short last one.
    check(&buf[..256 << 10], &buf[256 << 10..512 << 10]);
    check(
        &buf[..256 << 10],
        &buf[256 << 10..(256 << 10) + 4096 * 3 + 17],
    );
}

#[test]
fn odd_offsets() {
    // Unaligned slices: the loads must not assume any alignment.
    let buf = bytes(70_000, 6);
    for off in 1..8 {
        let a = &buf[off..off + 65_536 + off];
        let b = &buf[2 * off + 3..2 * off + 3 + 40_000];
        check(a, b);
    }
}
