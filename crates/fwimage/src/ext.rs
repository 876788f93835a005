//! The head extension: typed records between the page-hash table and the
//! signature slots, inside the signed head (FORMAT.md, "Head extension").
//!
//! Format 2 as first written had no signed space a reader would skip, so
//! the area is announced by a must-understand flag: readers that predate it
//! refuse such an image by that flag, and readers from here on skip any
//! record marked may-ignore that they do not know. New optional fields
//! become new records, not new format versions.

use crate::{Error, Result};

/// Record header: type (u16), flags (u16), value length (u32).
pub const EXT_RECORD_HEADER_LEN: usize = 8;
/// Upper bound of the extension area; checked before it is read.
pub const MAX_EXT_LEN: u32 = 4096;
/// Record flag: a reader that does not know the type skips the record.
/// Without it, an unknown record makes the image unreadable.
pub const EXT_MAY_IGNORE: u16 = 1 << 0;
/// Record type 1: SHA-256 of the image's SBOM file (32-byte value).
pub const EXT_SBOM_SHA256: u16 = 1;

/// What the head extension carries. Empty for images without one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeadExtension {
    /// SHA-256 of the SBOM (SPDX JSON) that describes the image's content.
    pub sbom_sha256: Option<[u8; 32]>,
}

impl HeadExtension {
    pub fn is_empty(&self) -> bool {
        self.sbom_sha256.is_none()
    }

    /// The records in type order; empty when there is nothing to carry.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(h) = &self.sbom_sha256 {
            put_record(&mut out, EXT_SBOM_SHA256, EXT_MAY_IGNORE, h);
        }
        out
    }

    /// Parses the records of an extension area whose length the header
    /// gave and bounded. Total: every length is checked against what is
    /// left before it is used.
    pub fn decode(mut b: &[u8]) -> Result<Self> {
        let mut ext = HeadExtension::default();
        let mut last_type: Option<u16> = None;
        while !b.is_empty() {
            let Some((rec, body)) = b.split_at_checked(EXT_RECORD_HEADER_LEN) else {
                return Err(bad(format!(
                    "{} bytes left, a record header needs {EXT_RECORD_HEADER_LEN}",
                    b.len()
                )));
            };
            let ty = u16::from_le_bytes([rec[0], rec[1]]);
            let flags = u16::from_le_bytes([rec[2], rec[3]]);
            let len = u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]) as usize;
            if flags & !EXT_MAY_IGNORE != 0 {
                return Err(bad(format!(
                    "record type {ty} has unknown flags {flags:#06x}"
                )));
            }
            // Ascending types: one place per record, so two readers can
            // never pick different copies of the same field.
            if last_type.is_some_and(|t| ty <= t) {
                return Err(bad(format!("record type {ty} out of order or repeated")));
            }
            last_type = Some(ty);
            let Some((value, rest)) = body.split_at_checked(len) else {
                return Err(bad(format!(
                    "record type {ty} declares {len} bytes, only {} left",
                    body.len()
                )));
            };
            match ty {
                EXT_SBOM_SHA256 => {
                    let h: [u8; 32] = value
                        .try_into()
                        .map_err(|_| bad(format!("SBOM SHA-256 record of {len} bytes, not 32")))?;
                    ext.sbom_sha256 = Some(h);
                }
                _ if flags & EXT_MAY_IGNORE != 0 => {}
                _ => {
                    return Err(bad(format!(
                        "record type {ty} must be understood and this reader does not know it"
                    )))
                }
            }
            b = rest;
        }
        Ok(ext)
    }
}

fn put_record(out: &mut Vec<u8>, ty: u16, flags: u16, value: &[u8]) {
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn bad(reason: String) -> Error {
    Error::BadField {
        field: "head extension",
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ty: u16, flags: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        put_record(&mut v, ty, flags, value);
        v
    }

    #[test]
    fn sbom_record_round_trips() {
        let e = HeadExtension {
            sbom_sha256: Some([0xab; 32]),
        };
        let b = e.encode();
        assert_eq!(b.len(), EXT_RECORD_HEADER_LEN + 32);
        assert_eq!(HeadExtension::decode(&b).ok(), Some(e));
        assert_eq!(HeadExtension::default().encode(), Vec::<u8>::new());
    }

    #[test]
    fn unknown_records_are_skipped_only_when_marked_may_ignore() {
        let mut b = rec(EXT_SBOM_SHA256, EXT_MAY_IGNORE, &[1; 32]);
        b.extend(rec(900, EXT_MAY_IGNORE, b"future"));
        let e = HeadExtension::decode(&b).ok();
        assert_eq!(e.and_then(|e| e.sbom_sha256), Some([1; 32]));
        let must = rec(900, 0, b"future");
        assert!(HeadExtension::decode(&must).is_err());
    }

    #[test]
    fn malformed_areas_are_refused() {
        let good = rec(EXT_SBOM_SHA256, EXT_MAY_IGNORE, &[1; 32]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("short record header", good[..5].to_vec()),
            ("value past the end", good[..20].to_vec()),
            (
                "wrong SBOM length",
                rec(EXT_SBOM_SHA256, EXT_MAY_IGNORE, &[1; 31]),
            ),
            ("unknown flag", rec(EXT_SBOM_SHA256, 2, &[1; 32])),
            ("repeated type", [good.clone(), good.clone()].concat()),
            (
                "descending types",
                [rec(5, EXT_MAY_IGNORE, b""), rec(3, EXT_MAY_IGNORE, b"")].concat(),
            ),
            ("length overflow", {
                let mut v = good.clone();
                v[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
                v
            }),
        ];
        for (what, b) in cases {
            assert!(HeadExtension::decode(&b).is_err(), "{what} was accepted");
        }
    }
}
