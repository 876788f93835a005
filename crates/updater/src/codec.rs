//! Byte helpers shared by every section of the state record: fixed-size
//! NUL-padded strings and little-endian integers, all total on short or
//! malformed input.

pub(crate) fn put_str(field: &mut [u8], s: &str) {
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

pub(crate) fn get_str(field: &[u8]) -> Option<String> {
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    if field[end..].iter().any(|&c| c != 0) {
        return None;
    }
    std::str::from_utf8(&field[..end]).ok().map(str::to_owned)
}

pub(crate) fn get_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn get_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
