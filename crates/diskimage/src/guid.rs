//! GUIDs and the deterministic identifiers derived from the layout seed.
//!
//! A [`Guid`] holds its bytes in the order they are written as text
//! (`00112233-4455-6677-8899-aabbccddeeff`). GPT stores the first three
//! fields little-endian ("mixed endian"); [`Guid::to_disk`] and
//! [`Guid::from_disk`] convert, so no other code has to think about it.

use sha2::{Digest, Sha256};
use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid([u8; 16]);

impl Guid {
    pub const NIL: Guid = Guid([0; 16]);

    /// From bytes in textual order.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Guid(bytes)
    }

    /// Bytes in textual order.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case, optional braces).
    pub fn parse(s: &str) -> Option<Guid> {
        let s = s.trim();
        let s = s
            .strip_prefix('{')
            .and_then(|x| x.strip_suffix('}'))
            .unwrap_or(s);
        let b = s.as_bytes();
        if b.len() != 36 {
            return None;
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < b.len() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b.get(i) != Some(&b'-') {
                    return None;
                }
                i += 1;
                continue;
            }
            let hi = hex_val(*b.get(i)?)?;
            let lo = hex_val(*b.get(i + 1)?)?;
            *out.get_mut(n)? = hi << 4 | lo;
            n += 1;
            i += 2;
        }
        (n == 16).then_some(Guid(out))
    }

    /// The on-disk (GPT, mixed-endian) byte order.
    pub fn to_disk(&self) -> [u8; 16] {
        let b = self.0;
        [
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ]
    }

    /// From the on-disk (GPT, mixed-endian) byte order.
    pub fn from_disk(d: [u8; 16]) -> Guid {
        // The swap is its own inverse.
        Guid(Guid(d).to_disk())
    }

    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    /// A name-based GUID: SHA-256 over the seed and a purpose string,
    /// stamped as an RFC 9562 version 8 ("custom") UUID so it can never be
    /// mistaken for a random (v4) one.
    pub fn derive(seed: &str, purpose: &str) -> Guid {
        let h = derive_bytes(seed, purpose);
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        b[6] = (b[6] & 0x0f) | 0x80;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }
}

/// SHA-256 of seed and purpose, each length-prefixed so that no two
/// (seed, purpose) pairs hash the same input.
pub(crate) fn derive_bytes(seed: &str, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"fwpack-diskimage-v1\0");
    for part in [seed, purpose] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// A 32-bit identifier (MBR disk signature, FAT volume ID) from the seed;
/// never zero, since a zero MBR signature means "none" to some tools.
pub(crate) fn derive_u32(seed: &str, purpose: &str) -> u32 {
    let h = derive_bytes(seed, purpose);
    let v = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    if v == 0 {
        1
    } else {
        v
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl std::str::FromStr for Guid {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Guid::parse(s).ok_or(())
    }
}

impl serde::Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Well-known GPT partition type GUIDs.
pub mod gpt_types {
    use super::Guid;

    const fn g(b: [u8; 16]) -> Guid {
        Guid::from_bytes(b)
    }

    /// EFI System Partition, C12A7328-F81F-11D2-BA4B-00A0C93EC93B.
    pub const EFI_SYSTEM: Guid = g([
        0xc1, 0x2a, 0x73, 0x28, 0xf8, 0x1f, 0x11, 0xd2, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9,
        0x3b,
    ]);
    /// Microsoft basic data (plain FAT), EBD0A0A2-B9E5-4433-87C0-68B6B72699C7.
    pub const BASIC_DATA: Guid = g([
        0xeb, 0xd0, 0xa0, 0xa2, 0xb9, 0xe5, 0x44, 0x33, 0x87, 0xc0, 0x68, 0xb6, 0xb7, 0x26, 0x99,
        0xc7,
    ]);
    /// Linux filesystem data, 0FC63DAF-8483-4772-8E79-3D69D8477DE4.
    pub const LINUX_FS: Guid = g([
        0x0f, 0xc6, 0x3d, 0xaf, 0x84, 0x83, 0x47, 0x72, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d,
        0xe4,
    ]);
    /// Linux root (x86-64), 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709.
    pub const LINUX_ROOT_X86_64: Guid = g([
        0x4f, 0x68, 0xbc, 0xe3, 0xe8, 0xcd, 0x4d, 0xb1, 0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84, 0xb7,
        0x09,
    ]);
    /// Linux root (ARM-64), B921B045-1DF0-41C3-AF44-4C6F280D3FAE.
    pub const LINUX_ROOT_ARM64: Guid = g([
        0xb9, 0x21, 0xb0, 0x45, 0x1d, 0xf0, 0x41, 0xc3, 0xaf, 0x44, 0x4c, 0x6f, 0x28, 0x0d, 0x3f,
        0xae,
    ]);
    /// Linux root (RISC-V-64), 72EC70A6-CF74-40E6-BD49-4BDA08E8F224.
    pub const LINUX_ROOT_RISCV64: Guid = g([
        0x72, 0xec, 0x70, 0xa6, 0xcf, 0x74, 0x40, 0xe6, 0xbd, 0x49, 0x4b, 0xda, 0x08, 0xe8, 0xf2,
        0x24,
    ]);

    /// Short names accepted in layout files, with the GUID each stands for.
    pub const NAMED: &[(&str, Guid)] = &[
        ("esp", EFI_SYSTEM),
        ("basic-data", BASIC_DATA),
        ("linux", LINUX_FS),
        ("linux-root-x86-64", LINUX_ROOT_X86_64),
        ("linux-root-arm64", LINUX_ROOT_ARM64),
        ("linux-root-riscv64", LINUX_ROOT_RISCV64),
    ];

    /// A short name from [`NAMED`] or a GUID in text form.
    pub fn parse(s: &str) -> Option<Guid> {
        NAMED
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s.trim()))
            .map(|(_, g)| *g)
            .or_else(|| Guid::parse(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_disk_order() {
        let g = Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(g, gpt_types::EFI_SYSTEM);
        assert_eq!(g.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        // The on-disk bytes of the ESP type as every GPT tool writes them.
        assert_eq!(
            g.to_disk(),
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
        assert_eq!(Guid::from_disk(g.to_disk()), g);
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "c12a7328f81f11d2ba4b00a0c93ec93b",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93",
            "c12a7328-f81f-11d2-ba4b_00a0c93ec93b",
            "g12a7328-f81f-11d2-ba4b-00a0c93ec93b",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93bb",
            "é2a7328-f81f-11d2-ba4b-00a0c93ec93b",
        ] {
            assert!(Guid::parse(s).is_none(), "{s:?}");
        }
    }

    #[test]
    fn derived_ids_are_stable_v8_and_distinct() {
        let a = Guid::derive("board", "partition:boot");
        assert_eq!(a, Guid::derive("board", "partition:boot"));
        assert_ne!(a, Guid::derive("board", "partition:rootfs"));
        assert_ne!(a, Guid::derive("board2", "partition:boot"));
        // Length prefixes: moving a character between seed and purpose changes the id.
        assert_ne!(Guid::derive("ab", "c"), Guid::derive("a", "bc"));
        assert_eq!(a.as_bytes()[6] >> 4, 8);
        assert_eq!(a.as_bytes()[8] >> 6, 0b10);
        assert_ne!(derive_u32("x", "mbr"), 0);
    }
}
