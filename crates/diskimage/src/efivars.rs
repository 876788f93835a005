//! UEFI boot entries written into a copy of OVMF's variable store
//! (`OVMF_VARS_4M.fd`) at build time, so the first power-on already has
//! `Boot####` entries for both bootstraps of an A/B board
//! (qemu-x86_64-efi) and nothing has to be created from inside the guest.
//!
//! The store is an EDK II firmware volume: a volume header (its length at
//! byte 48), then a variable store header (28 bytes: format GUID, size,
//! format `0x5A`, state `0xFE` healthy), then variables, each a 60-byte
//! authenticated-variable header (start `0x55AA`, state `0x3F` added,
//! attributes, monotonic count, time stamp, public key index, name size,
//! data size, vendor GUID), the UTF-16 name and the data, each padded to 4
//! bytes. Free space is `0xFF`. Only appending to a store is supported;
//! the firmware's own reclaim copes with what it finds.

use crate::guid::Guid;

/// `EFI_GLOBAL_VARIABLE`, the vendor of `Boot####`, `BootOrder`, `BootNext`.
pub const GLOBAL_VARIABLE: Guid = Guid::from_bytes([
    0x8b, 0xe4, 0xdf, 0x61, 0x93, 0xca, 0x11, 0xd2, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c,
]);
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
pub const NV_BS_RT: u32 = 7;

const FV_SIGNATURE_AT: usize = 40;
const FV_HEADER_LEN_AT: usize = 48;
const STORE_HEADER_LEN: usize = 28;
const VAR_HEADER_LEN: usize = 60;
const VAR_START_ID: u16 = 0x55AA;
const VAR_ADDED: u8 = 0x3F;
const AUTH_FORMAT_GUID: [u8; 16] = [
    0x78, 0x2c, 0xf3, 0xaa, 0x7b, 0x94, 0x9a, 0x43, 0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77, 0x92,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VarStoreError {
    #[error("not an OVMF variable store: {0}")]
    Format(&'static str),
    #[error("the variable store has no room for {0} more bytes")]
    Full(usize),
    #[error("variable name {0:?}: 1..=64 characters")]
    Name(String),
}

/// Where on the disk a bootstrap lives: the media device path `HD()` of
/// a GPT partition (number from 1, start and size in 512-byte sectors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GptPartition {
    pub number: u32,
    pub start_lba: u64,
    pub sectors: u64,
    pub guid: Guid,
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// An `EFI_LOAD_OPTION` (active) that starts `file` (e.g. `\vmlinuz`) on
/// `part` with `args` as its load options, which an EFI-stub kernel takes
/// as its command line (`initrd=\initrd.img console=ttyS0 ...`).
pub fn load_option(description: &str, part: &GptPartition, file: &str, args: &str) -> Vec<u8> {
    let mut path = Vec::new();
    // HARDDRIVE_DEVICE_PATH: media (4), hard drive (1), 42 bytes; GPT
    // (2) with a GUID signature (2). Firmware expands this short form to
    // the full path of whichever disk has that partition.
    path.extend_from_slice(&[4, 1, 42, 0]);
    path.extend_from_slice(&part.number.to_le_bytes());
    path.extend_from_slice(&part.start_lba.to_le_bytes());
    path.extend_from_slice(&part.sectors.to_le_bytes());
    path.extend_from_slice(&part.guid.to_disk());
    path.extend_from_slice(&[2, 2]);
    // FILEPATH_DEVICE_PATH: media (4), file path (4).
    let name = utf16z(file);
    path.extend_from_slice(&[4, 4]);
    path.extend_from_slice(&((4 + name.len()) as u16).to_le_bytes());
    path.extend_from_slice(&name);
    // End of the device path.
    path.extend_from_slice(&[0x7f, 0xff, 4, 0]);

    let mut o = Vec::new();
    o.extend_from_slice(&1u32.to_le_bytes()); // LOAD_OPTION_ACTIVE
    o.extend_from_slice(&(path.len() as u16).to_le_bytes());
    o.extend_from_slice(&utf16z(description));
    o.extend_from_slice(&path);
    o.extend(args.encode_utf16().flat_map(u16::to_le_bytes));
    o
}

/// `BootOrder` / `BootNext` data: little-endian u16s.
pub fn u16_list(entries: &[u16]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// The byte range of variables in `fd`: `[first variable, end of store)`.
fn store_range(fd: &[u8]) -> Result<(usize, usize), VarStoreError> {
    if fd.get(FV_SIGNATURE_AT..FV_SIGNATURE_AT + 4) != Some(b"_FVH") {
        return Err(VarStoreError::Format("no firmware volume signature"));
    }
    let hl = fd
        .get(FV_HEADER_LEN_AT..FV_HEADER_LEN_AT + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        .ok_or(VarStoreError::Format("truncated volume header"))?;
    let sh = fd
        .get(hl..hl + STORE_HEADER_LEN)
        .ok_or(VarStoreError::Format("truncated store header"))?;
    if sh[..16] != AUTH_FORMAT_GUID {
        return Err(VarStoreError::Format(
            "not the authenticated variable format",
        ));
    }
    let size = u32::from_le_bytes([sh[16], sh[17], sh[18], sh[19]]) as usize;
    if sh[20] != 0x5A || sh[21] != 0xFE {
        return Err(VarStoreError::Format("store not formatted or not healthy"));
    }
    let end = hl
        .checked_add(size)
        .filter(|e| *e <= fd.len())
        .ok_or(VarStoreError::Format("store larger than the file"))?;
    Ok((pad4(hl + STORE_HEADER_LEN), end))
}

/// Offset of the free space after the last variable.
fn free_at(fd: &[u8]) -> Result<(usize, usize), VarStoreError> {
    let (mut at, end) = store_range(fd)?;
    while let Some(h) = fd.get(at..at + VAR_HEADER_LEN).filter(|_| at < end) {
        if u16::from_le_bytes([h[0], h[1]]) != VAR_START_ID {
            break;
        }
        let name = u32::from_le_bytes([h[36], h[37], h[38], h[39]]) as usize;
        let data = u32::from_le_bytes([h[40], h[41], h[42], h[43]]) as usize;
        at = name
            .checked_add(data)
            .and_then(|n| n.checked_add(at + VAR_HEADER_LEN))
            .map(pad4)
            .filter(|next| *next <= end)
            .ok_or(VarStoreError::Format("a variable runs past the store"))?;
    }
    Ok((at, end))
}

/// Appends variables `(name, vendor, attributes, data)` to the store.
/// The caller adds each name once (the firmware would use the first).
pub fn append(fd: &mut [u8], vars: &[(&str, Guid, u32, &[u8])]) -> Result<(), VarStoreError> {
    let (mut at, end) = free_at(fd)?;
    for (name, vendor, attrs, data) in vars {
        if name.is_empty() || name.chars().count() > 64 {
            return Err(VarStoreError::Name(name.to_string()));
        }
        let n = utf16z(name);
        let total = pad4(VAR_HEADER_LEN + n.len() + data.len());
        if at + total > end {
            return Err(VarStoreError::Full(total));
        }
        // Padding stays erased flash, as the firmware leaves it.
        let mut v = vec![0xFFu8; total];
        v[0..2].copy_from_slice(&VAR_START_ID.to_le_bytes());
        v[2] = VAR_ADDED;
        v[3] = 0;
        v[4..8].copy_from_slice(&attrs.to_le_bytes());
        v[8..36].fill(0);
        // Monotonic count, time stamp, public key index: zero (not an
        // authenticated write).
        v[36..40].copy_from_slice(&(n.len() as u32).to_le_bytes());
        v[40..44].copy_from_slice(&(data.len() as u32).to_le_bytes());
        v[44..60].copy_from_slice(&vendor.to_disk());
        v[60..60 + n.len()].copy_from_slice(&n);
        let d = 60 + n.len();
        v[d..d + data.len()].copy_from_slice(data);
        fd[at..at + total].copy_from_slice(&v);
        at += total;
    }
    Ok(())
}

/// `Boot####` entries for `entries` (number, load option) and a
/// `BootOrder` listing them in that order.
pub fn add_boot_entries(fd: &mut [u8], entries: &[(u16, Vec<u8>)]) -> Result<(), VarStoreError> {
    let names: Vec<String> = entries
        .iter()
        .map(|(n, _)| format!("Boot{n:04X}"))
        .collect();
    let order = u16_list(&entries.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    let mut vars: Vec<(&str, Guid, u32, &[u8])> = names
        .iter()
        .zip(entries)
        .map(|(name, (_, opt))| (name.as_str(), GLOBAL_VARIABLE, NV_BS_RT, opt.as_slice()))
        .collect();
    vars.push(("BootOrder", GLOBAL_VARIABLE, NV_BS_RT, &order));
    append(fd, &vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> Vec<u8> {
        let mut fd = vec![0xFFu8; 0x40000];
        fd[..72].fill(0);
        fd[40..44].copy_from_slice(b"_FVH");
        fd[48..50].copy_from_slice(&72u16.to_le_bytes());
        fd[72..88].copy_from_slice(&AUTH_FORMAT_GUID);
        fd[88..92].copy_from_slice(&(0x40000u32 - 72).to_le_bytes());
        fd[92] = 0x5A;
        fd[93] = 0xFE;
        fd[94..100].fill(0);
        fd
    }

    #[test]
    fn appends_after_existing_variables() {
        let mut fd = blank();
        append(&mut fd, &[("A", GLOBAL_VARIABLE, 7, b"xyz")]).unwrap();
        assert_eq!(&fd[100..102], &[0xAA, 0x55]);
        let (free, _) = free_at(&fd).unwrap();
        // Header, "A\0" (4 bytes), "xyz", padded to 4.
        assert_eq!(free, 100 + 68);
        assert_eq!(&fd[164..167], b"xyz");
        append(&mut fd, &[("B", GLOBAL_VARIABLE, 7, b"")]).unwrap();
        assert_eq!(&fd[free..free + 2], &[0xAA, 0x55]);
        assert_eq!(fd[free + 60..free + 64], [b'B', 0, 0, 0]);
    }

    #[test]
    fn refuses_other_files_and_overflow() {
        assert!(append(&mut [0u8; 100], &[]).is_err());
        let mut fd = blank();
        let big = vec![0u8; 0x40000];
        assert!(matches!(
            append(&mut fd, &[("A", GLOBAL_VARIABLE, 7, &big)]),
            Err(VarStoreError::Full(_))
        ));
    }

    #[test]
    fn damaged_stores_are_errors_not_panics() {
        let mut good = blank();
        append(
            &mut good,
            &[("Boot000A", GLOBAL_VARIABLE, 7, b"0123456789")],
        )
        .unwrap();
        // Every byte of the headers and the first variable, set to values
        // that break lengths, offsets and magic numbers.
        for at in 0..200 {
            for v in [0x00, 0x01, 0x7F, 0xFF] {
                let mut fd = good.clone();
                fd[at] = v;
                let _ = append(&mut fd, &[("B", GLOBAL_VARIABLE, 7, b"x")]);
            }
        }
        for len in [0, 40, 50, 99, 100, 160] {
            let _ = append(&mut good[..len].to_vec(), &[]);
        }
    }

    #[test]
    fn load_option_layout() {
        let p = GptPartition {
            number: 1,
            start_lba: 2048,
            sectors: 4096,
            guid: Guid::NIL,
        };
        let o = load_option("A", &p, "\\k", "x");
        // attributes, path length, "A\0", HD (42) + file (4 + 6) + end (4), "x"
        assert_eq!(u16::from_le_bytes([o[4], o[5]]), 42 + 10 + 4);
        assert_eq!(o.len(), 6 + 4 + 56 + 2);
        assert_eq!(&o[10..14], &[4, 1, 42, 0]);
    }
}
