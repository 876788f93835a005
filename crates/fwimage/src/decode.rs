//! Decoding one authenticated compressed chunk, with the limits of
//! docs/FORMAT.md enforced even though the bytes are signed: a decoder's
//! memory is bounded by the chunk size whatever the signer did.

use std::io::Read;

use crate::Compression;

const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// What the frame header of a zstd chunk declares (RFC 8878 §3.1.1.1).
#[derive(Debug, PartialEq, Eq)]
struct ZstdFrame {
    window: u64,
    content_size: Option<u64>,
    checksum: bool,
    dictionary: bool,
}

fn zstd_frame_header(b: &[u8]) -> Result<ZstdFrame, String> {
    let short = || "frame header truncated".to_string();
    let magic = u32::from_le_bytes(
        b.get(0..4)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?,
    );
    if magic != ZSTD_MAGIC {
        return Err(format!("not a zstd frame (magic {magic:#010x})"));
    }
    let fhd = *b.get(4).ok_or_else(short)?;
    if fhd & 0x08 != 0 {
        return Err("reserved bit set in the frame header".into());
    }
    let fcs_flag = fhd >> 6;
    let single = fhd & 0x20 != 0;
    let checksum = fhd & 0x04 != 0;
    let did_len = [0usize, 1, 2, 4][usize::from(fhd & 3)];
    let mut at = 5;
    let mut window = None;
    if !single {
        let wd = *b.get(at).ok_or_else(short)?;
        at += 1;
        let log = 10 + u64::from(wd >> 3);
        let base = 1u64 << log;
        window = Some(base + (base / 8) * u64::from(wd & 7));
    }
    let dictionary = b
        .get(at..at + did_len)
        .ok_or_else(short)?
        .iter()
        .any(|&x| x != 0);
    at += did_len;
    let fcs_len = match (fcs_flag, single) {
        (0, false) => 0,
        (0, true) => 1,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let fcs = b.get(at..at + fcs_len).ok_or_else(short)?;
    let mut v = [0u8; 8];
    v[..fcs_len].copy_from_slice(fcs);
    let content_size = match fcs_len {
        0 => None,
        2 => Some(u64::from_le_bytes(v) + 256),
        _ => Some(u64::from_le_bytes(v)),
    };
    let window = match window {
        Some(w) => w,
        None => content_size.unwrap_or(0),
    };
    Ok(ZstdFrame {
        window,
        content_size,
        checksum,
        dictionary,
    })
}

/// A reusable decoder: one zstd frame decoder for the whole image.
#[derive(Default)]
pub(crate) struct ChunkDecoder {
    zstd: Option<ruzstd::decoding::FrameDecoder>,
}

impl ChunkDecoder {
    /// Decodes `stored` (one chunk, already authenticated) into `out`,
    /// whose length is the chunk's raw length. Any deviation from the
    /// format's rules is an error message.
    pub(crate) fn decode(
        &mut self,
        compression: Compression,
        stored: &[u8],
        out: &mut [u8],
        chunk_size: u64,
    ) -> Result<(), String> {
        match compression {
            Compression::None => {
                if stored.len() != out.len() {
                    return Err("stored length differs from raw length".into());
                }
                out.copy_from_slice(stored);
                Ok(())
            }
            Compression::Gzip => decode_gzip(stored, out),
            Compression::Zstd => self.decode_zstd(stored, out, chunk_size),
        }
    }

    fn decode_zstd(
        &mut self,
        stored: &[u8],
        out: &mut [u8],
        chunk_size: u64,
    ) -> Result<(), String> {
        let f = zstd_frame_header(stored)?;
        if f.dictionary {
            return Err("zstd frame needs a dictionary".into());
        }
        if f.window > chunk_size {
            return Err(format!(
                "zstd frame declares a {} byte window, more than the {chunk_size} byte chunk",
                f.window
            ));
        }
        match f.content_size {
            Some(n) if n == out.len() as u64 => {}
            Some(n) => {
                return Err(format!(
                    "zstd frame declares {n} bytes of content, the chunk has {}",
                    out.len()
                ))
            }
            None => return Err("zstd frame does not declare its content size".into()),
        }
        if !f.checksum {
            return Err("zstd frame has no content checksum".into());
        }
        let dec = self
            .zstd
            .get_or_insert_with(ruzstd::decoding::FrameDecoder::new);
        let mut input = stored;
        dec.reset(&mut input).map_err(|e| e.to_string())?;
        let mut pos = 0;
        loop {
            let finished = dec
                .decode_blocks(
                    &mut input,
                    ruzstd::decoding::BlockDecodingStrategy::UptoBytes(128 << 10),
                )
                .map_err(|e| e.to_string())?;
            loop {
                let n = dec.read(&mut out[pos..]).map_err(|e| e.to_string())?;
                pos += n;
                if n == 0 {
                    break;
                }
            }
            if dec.can_collect() != 0 {
                return Err("zstd frame decodes to more than the chunk's raw length".into());
            }
            if finished {
                break;
            }
        }
        if pos != out.len() {
            return Err(format!(
                "zstd frame decodes to {pos} bytes, the chunk has {}",
                out.len()
            ));
        }
        if !input.is_empty() {
            return Err(format!("{} bytes after the zstd frame", input.len()));
        }
        match (dec.get_checksum_from_data(), dec.get_calculated_checksum()) {
            (Some(a), Some(b)) if a == b => Ok(()),
            _ => Err("zstd content checksum mismatch".into()),
        }
    }
}

/// The member header (RFC 1952 §2.3) as the format allows it: ID1 ID2,
/// CM = 8 (deflate), no reserved FLG bit. The optional fields (FEXTRA,
/// FNAME, FCOMMENT, FHCRC) are allowed; the decoder checks the header CRC
/// when present and refuses an FNAME or FCOMMENT longer than 65535 bytes
/// before its NUL. MTIME, XFL and OS are ignored.
fn gzip_member_header(b: &[u8]) -> Result<(), String> {
    let h = b.get(..10).ok_or("gzip member header truncated")?;
    if h[..2] != [0x1f, 0x8b] {
        return Err("not a gzip member (magic)".into());
    }
    if h[2] != 8 {
        return Err(format!(
            "gzip compression method {} (only 8, deflate)",
            h[2]
        ));
    }
    if h[3] & 0xe0 != 0 {
        return Err(format!(
            "gzip header flags {:#04x}: reserved bits set",
            h[3]
        ));
    }
    Ok(())
}

/// CRC-32 of RFC 1952 (ISO-HDLC). A 1 KiB table: crc32fast's 24 KiB of
/// tables (through flate2) cost the 1 MiB device updater more than the
/// speed is worth on a check the raw SHA-256 already backs.
const GZIP_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Where a member's deflate stream starts, past the optional fields.
fn gzip_body_offset(b: &[u8]) -> Result<usize, String> {
    gzip_member_header(b)?;
    let short = || "gzip member header truncated".to_string();
    let flags = b.get(3).copied().ok_or_else(short)?;
    let mut at = 10usize;
    if flags & 0x04 != 0 {
        let x = b.get(at..at + 2).ok_or_else(short)?;
        let xlen = usize::from(u16::from_le_bytes([x[0], x[1]]));
        at = Some(at + 2 + xlen)
            .filter(|&end| end <= b.len())
            .ok_or_else(short)?;
    }
    for (bit, field) in [(0x08, "FNAME"), (0x10, "FCOMMENT")] {
        if flags & bit != 0 {
            let rest = b.get(at..).ok_or_else(short)?;
            match rest.iter().take(65536).position(|&c| c == 0) {
                Some(nul) => at += nul + 1,
                None if rest.len() > 65535 => {
                    return Err(format!("gzip {field} longer than 65535 bytes"))
                }
                None => return Err(short()),
            }
        }
    }
    if flags & 0x02 != 0 {
        let h = b.get(at..at + 2).ok_or_else(short)?;
        let head = b.get(..at).ok_or_else(short)?;
        if GZIP_CRC.checksum(head) as u16 != u16::from_le_bytes([h[0], h[1]]) {
            return Err("gzip header CRC mismatch".into());
        }
        at += 2;
    }
    Ok(at)
}

/// One gzip member into `out`, exactly: miniz_oxide's raw inflate into
/// the chunk buffer (no stream wrapper, no second copy), then the
/// trailer's CRC-32 and ISIZE, then nothing.
fn decode_gzip(stored: &[u8], out: &mut [u8]) -> Result<(), String> {
    use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
    use miniz_oxide::inflate::TINFLStatus;
    let body = stored.get(gzip_body_offset(stored)?..).unwrap_or_default();
    let mut d = Box::<DecompressorOxide>::default();
    let (status, used, n) = decompress(
        &mut d,
        body,
        out,
        0,
        inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
    );
    match status {
        TINFLStatus::Done => {}
        TINFLStatus::HasMoreOutput => {
            return Err("gzip member decodes to more than the chunk's raw length".into())
        }
        TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
            return Err("gzip member truncated (deflate stream ends early)".into())
        }
        other => return Err(format!("gzip deflate stream invalid ({other:?})")),
    }
    if n != out.len() {
        return Err(format!(
            "gzip member decodes to {n} bytes, the chunk has {}",
            out.len()
        ));
    }
    let trailer = body.get(used..).unwrap_or_default();
    let (t, rest) = trailer
        .split_at_checked(8)
        .ok_or("gzip member trailer truncated")?;
    let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
    let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
    if GZIP_CRC.checksum(out) != crc {
        return Err("gzip member CRC-32 mismatch".into());
    }
    if isize != out.len() as u32 {
        return Err(format!(
            "gzip ISIZE {isize} is not the decoded length {}",
            out.len()
        ));
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the gzip member", rest.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_header_fields() {
        // Single segment, checksum, 1-byte content size 100.
        let f = zstd_frame_header(&[0x28, 0xB5, 0x2F, 0xFD, 0x24, 100]).unwrap();
        assert_eq!(
            f,
            ZstdFrame {
                window: 100,
                content_size: Some(100),
                checksum: true,
                dictionary: false
            }
        );
        // Window descriptor: exponent 21 → 2 GiB window.
        let f = zstd_frame_header(&[0x28, 0xB5, 0x2F, 0xFD, 0x84, 21 << 3, 0, 0, 0, 1]).unwrap();
        assert_eq!(f.window, 1 << 31);
        assert!(zstd_frame_header(&[0x28, 0xB5, 0x2F]).is_err());
        assert!(zstd_frame_header(&[0, 0, 0, 0, 0, 0]).is_err());
    }

    const CHUNK: u64 = 64 << 10;

    fn raw() -> Vec<u8> {
        (0..40_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 997) as u8)
            .collect()
    }

    /// A frame as fwpack writes it (checksum, content size).
    fn frame(raw: &[u8]) -> Vec<u8> {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.include_checksum(true).unwrap();
        c.include_contentsize(true).unwrap();
        c.compress(raw).unwrap()
    }

    fn decode(stored: &[u8], len: usize) -> Result<Vec<u8>, String> {
        let mut out = vec![0u8; len];
        ChunkDecoder::default()
            .decode(Compression::Zstd, stored, &mut out, CHUNK)
            .map(|()| out)
    }

    /// The same frame re-headed to declare a 2 GiB window (the blocks and
    /// checksum unchanged): what a hostile signer would ship.
    fn with_huge_window(f: &[u8], content: u64) -> Vec<u8> {
        let h = zstd_frame_header(f).unwrap();
        assert!(f[4] & 0x20 != 0, "fixture frame is single-segment");
        let fcs_len = [1usize, 2, 4, 8][usize::from(f[4] >> 6)];
        let rest = &f[5 + fcs_len..];
        let mut out = f[..4].to_vec();
        out.push((2 << 6) | if h.checksum { 0x04 } else { 0 });
        out.push(21 << 3);
        out.extend_from_slice(&(content as u32).to_le_bytes());
        out.extend_from_slice(rest);
        out
    }

    #[test]
    fn zstd_chunk_rules() {
        let raw = raw();
        let f = frame(&raw);
        assert_eq!(decode(&f, raw.len()).unwrap(), raw);

        // A declared 2 GiB window is refused before the decoder allocates
        // it, although the frame is otherwise valid: ruzstd decodes it.
        let huge = with_huge_window(&f, raw.len() as u64);
        assert_eq!(zstd_frame_header(&huge).unwrap().window, 1 << 31);
        let e = decode(&huge, raw.len()).unwrap_err();
        assert!(e.contains("window"), "{e}");
        let mut out = Vec::new();
        ruzstd::decoding::StreamingDecoder::new(&huge[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, raw);

        // Bytes after the frame, a second frame, a wrong checksum, a
        // content size that disagrees with the chunk, no checksum.
        let mut trailing = f.clone();
        trailing.push(0);
        assert!(decode(&trailing, raw.len()).unwrap_err().contains("after"));
        let two = [f.clone(), f.clone()].concat();
        assert!(decode(&two, raw.len()).is_err());
        let mut bad_sum = f.clone();
        let n = bad_sum.len();
        bad_sum[n - 1] ^= 1;
        assert!(decode(&bad_sum, raw.len())
            .unwrap_err()
            .contains("checksum"));
        assert!(decode(&f, raw.len() - 1).unwrap_err().contains("content"));
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.include_checksum(false).unwrap();
        c.include_contentsize(true).unwrap();
        let unsummed = c.compress(&raw).unwrap();
        assert!(decode(&unsummed, raw.len())
            .unwrap_err()
            .contains("checksum"));
    }

    /// `f` (a single-segment frame) with a Dictionary_ID field of `len`
    /// bytes holding `id` inserted after the frame header descriptor.
    fn with_dictionary_id(f: &[u8], len: usize, id: u32) -> Vec<u8> {
        assert!(f[4] & 0x20 != 0 && f[4] & 3 == 0, "fixture frame");
        let flag = match len {
            1 => 1,
            2 => 2,
            _ => 3,
        };
        let mut out = f[..4].to_vec();
        out.push(f[4] | flag);
        out.extend_from_slice(&id.to_le_bytes()[..len]);
        out.extend_from_slice(&f[5..]);
        out
    }

    #[test]
    fn zstd_dictionary_id_zero_means_none() {
        let raw = raw();
        let f = frame(&raw);
        for len in [1, 2, 4] {
            // A present field holding 0 is "no dictionary" (RFC 8878
            // §3.1.1.1.3): accepted, by ruzstd too.
            let zero = with_dictionary_id(&f, len, 0);
            assert_eq!(decode(&zero, raw.len()).unwrap(), raw, "{len}-byte id 0");
            let dict = with_dictionary_id(&f, len, 0x11);
            let e = decode(&dict, raw.len()).unwrap_err();
            assert!(e.contains("dictionary"), "{len}-byte id: {e}");
        }
    }

    #[test]
    fn zstd_skippable_frames_are_refused_before_and_after() {
        let raw = raw();
        let f = frame(&raw);
        // RFC 8878 §3.1.2: magic 0x184D2A5?, 4-byte length, user data.
        let mut skip = 0x184D_2A53u32.to_le_bytes().to_vec();
        skip.extend_from_slice(&3u32.to_le_bytes());
        skip.extend_from_slice(b"abc");
        let before = [skip.clone(), f.clone()].concat();
        let e = decode(&before, raw.len()).unwrap_err();
        assert!(e.contains("not a zstd frame"), "{e}");
        let after = [f.clone(), skip].concat();
        let e = decode(&after, raw.len()).unwrap_err();
        assert!(e.contains("after the zstd frame"), "{e}");
        // The reference decoder takes both: the refusal is ours.
        let mut out = Vec::new();
        let mut input = &after[..];
        let mut d = ruzstd::decoding::StreamingDecoder::new(&mut input).unwrap();
        d.read_to_end(&mut out).unwrap();
        assert_eq!(out, raw);
    }

    #[test]
    fn gzip_member_header_rules() {
        use std::io::Write;
        let raw = raw();
        let member = |b: flate2::GzBuilder| {
            let mut e = b.write(Vec::new(), flate2::Compression::new(6));
            e.write_all(&raw).unwrap();
            e.finish().unwrap()
        };
        let run = |stored: &[u8]| {
            let mut out = vec![0u8; raw.len()];
            ChunkDecoder::default()
                .decode(Compression::Gzip, stored, &mut out, CHUNK)
                .map(|()| out)
        };
        // MTIME, OS and FTEXT are ignored; the optional fields allowed.
        let plain = member(flate2::GzBuilder::new().mtime(12345).operating_system(3));
        assert_eq!(run(&plain).unwrap(), raw);
        let mut ftext = plain.clone();
        ftext[3] = 1;
        assert_eq!(run(&ftext).unwrap(), raw);
        let fields = member(
            flate2::GzBuilder::new()
                .filename("rootfs")
                .comment("c")
                .extra(vec![1, 2, 0, 0]),
        );
        assert_eq!(run(&fields).unwrap(), raw);
        // FNAME: 65535 bytes before the NUL at most.
        let name = |n: usize| member(flate2::GzBuilder::new().filename(vec![b'n'; n]));
        assert_eq!(run(&name(65535)).unwrap(), raw);
        assert!(run(&name(65536)).is_err());
        // A header CRC (FHCRC) is checked: a hand-made header with one.
        let mut hcrc = plain[..10].to_vec();
        hcrc[3] = 0x02;
        let crc = GZIP_CRC.checksum(&hcrc) as u16;
        hcrc.extend_from_slice(&crc.to_le_bytes());
        let good = [&hcrc[..], &plain[10..]].concat();
        assert_eq!(run(&good).unwrap(), raw);
        let mut bad = good.clone();
        bad[10] ^= 1;
        assert!(run(&bad).is_err());
        for flag in [0x20, 0x40, 0x80] {
            let mut m = plain.clone();
            m[3] |= flag;
            assert!(run(&m).unwrap_err().contains("reserved"), "{flag:#x}");
        }
        let mut cm = plain.clone();
        cm[2] = 7;
        assert!(run(&cm).unwrap_err().contains("method"));
        assert!(run(&plain[..9]).unwrap_err().contains("truncated"));
    }

    #[test]
    fn gzip_chunk_rules() {
        use std::io::Write;
        let raw = raw();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(&raw).unwrap();
        let g = e.finish().unwrap();
        let run = |stored: &[u8], len: usize| {
            let mut out = vec![0u8; len];
            ChunkDecoder::default()
                .decode(Compression::Gzip, stored, &mut out, CHUNK)
                .map(|()| out)
        };
        assert_eq!(run(&g, raw.len()).unwrap(), raw);
        let two = [g.clone(), g.clone()].concat();
        assert!(run(&two, raw.len()).unwrap_err().contains("after"));
        assert!(run(&g, raw.len() + 1).is_err());
        assert!(run(&g, raw.len() - 1).is_err());
        let mut bad_crc = g.clone();
        let n = bad_crc.len();
        bad_crc[n - 6] ^= 1;
        assert!(run(&bad_crc, raw.len()).is_err());
    }
}
