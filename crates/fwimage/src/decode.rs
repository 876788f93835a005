//! Decoding one authenticated compressed chunk, with the limits of
//! docs/FORMAT.md enforced even though the bytes are signed: a decoder's
//! memory is bounded by the chunk size whatever the signer did.
//!
//! Two sets of decoders sit behind one set of rules:
//! - the portable ones, pure Rust (ruzstd, miniz_oxide), which the device
//!   build uses and which define every refusal;
//! - with the `host-codecs` feature, libzstd and zlib-rs, which decode
//!   straight into the chunk buffer 2–4× faster. They only take the
//!   success path: the frame or member is first checked by the same header
//!   rules, and when the fast decoder fails in any way (or decodes to the
//!   wrong length) the portable decoder decodes the chunk again and its
//!   result is the result. Failures are rare (the bytes are signed), so
//!   this never costs anything that matters, and both builds accept the
//!   same chunks and refuse the others with the same [`DecodeError`].

use std::io::Read;

use crate::Compression;

const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// Why a compressed chunk was refused. The portable and the host decoders
/// return the same value for the same bytes (see the module comment).
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("stored length {stored} differs from raw length {raw}")]
    StoredLength { stored: usize, raw: usize },

    #[error("zstd frame header truncated")]
    ZstdHeaderTruncated,
    #[error("not a zstd frame (magic {0:#010x})")]
    ZstdMagic(u32),
    #[error("reserved bit set in the zstd frame header")]
    ZstdReservedBit,
    #[error("zstd frame needs a dictionary (id {0})")]
    ZstdDictionary(u32),
    #[error("zstd frame declares a {window} byte window, more than the {chunk_size} byte chunk")]
    ZstdWindow { window: u64, chunk_size: u64 },
    #[error("zstd frame does not declare its content size")]
    ZstdNoContentSize,
    #[error("zstd frame declares {declared} bytes of content, the chunk has {raw_len}")]
    ZstdContentSize { declared: u64, raw_len: usize },
    #[error("zstd frame has no content checksum")]
    ZstdNoChecksum,
    /// A block the decoder cannot decode (ruzstd's reason).
    #[error("zstd frame invalid: {0}")]
    ZstdInvalid(String),
    #[error("zstd content checksum mismatch")]
    ZstdChecksum,

    #[error("gzip member header truncated")]
    GzipHeaderTruncated,
    #[error("not a gzip member (magic)")]
    GzipMagic,
    #[error("gzip compression method {0} (only 8, deflate)")]
    GzipMethod(u8),
    #[error("gzip header flags {0:#04x}: reserved bits set")]
    GzipReservedFlags(u8),
    #[error("gzip {0} longer than 65535 bytes")]
    GzipFieldTooLong(&'static str),
    #[error("gzip header CRC mismatch")]
    GzipHeaderCrc,
    #[error("gzip deflate stream invalid ({0})")]
    DeflateInvalid(String),
    #[error("gzip member truncated (deflate stream ends early)")]
    DeflateTruncated,
    #[error("gzip member trailer truncated")]
    GzipTrailerTruncated,
    #[error("gzip member CRC-32 mismatch")]
    GzipCrc,
    #[error("gzip ISIZE {isize} is not the decoded length {raw_len}")]
    GzipIsize { isize: u32, raw_len: usize },

    #[error("{0} decodes to more than the chunk's raw length")]
    Overlong(Codec),
    #[error("{codec} decodes to {decoded} bytes, the chunk has {raw_len}")]
    Short {
        codec: Codec,
        decoded: usize,
        raw_len: usize,
    },
    #[error("{n} bytes after the {codec}")]
    Trailing { codec: Codec, n: usize },
}

/// Debug is the message: a derived Debug of every variant's fields (with
/// `Error::Decompress` naming this as its `#[source]`) made the 1 MiB
/// aarch64 device updater 3.6 KB larger, for no added information.
impl std::fmt::Debug for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Which container a [`DecodeError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Zstd,
    Gzip,
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Codec::Zstd => "zstd frame",
            Codec::Gzip => "gzip member",
        })
    }
}

/// What the frame header of a zstd chunk declares (RFC 8878 §3.1.1.1).
#[derive(Debug, PartialEq, Eq)]
struct ZstdFrame {
    window: u64,
    content_size: Option<u64>,
    checksum: bool,
    dictionary: u32,
}

fn zstd_frame_header(b: &[u8]) -> Result<ZstdFrame, DecodeError> {
    let short = || DecodeError::ZstdHeaderTruncated;
    let magic = u32::from_le_bytes(
        b.get(0..4)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?,
    );
    if magic != ZSTD_MAGIC {
        return Err(DecodeError::ZstdMagic(magic));
    }
    let fhd = *b.get(4).ok_or_else(short)?;
    if fhd & 0x08 != 0 {
        return Err(DecodeError::ZstdReservedBit);
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
    let mut id = [0u8; 4];
    id[..did_len].copy_from_slice(b.get(at..at + did_len).ok_or_else(short)?);
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
        dictionary: u32::from_le_bytes(id),
    })
}

/// The frame rules that hold before any block is decoded, for both
/// decoders: no dictionary, a window no larger than the chunk (so no
/// decoder allocates more than that), the content size declared and equal
/// to the chunk's raw length, and a content checksum.
fn check_zstd_header(stored: &[u8], raw_len: usize, chunk_size: u64) -> Result<(), DecodeError> {
    let f = zstd_frame_header(stored)?;
    if f.dictionary != 0 {
        return Err(DecodeError::ZstdDictionary(f.dictionary));
    }
    if f.window > chunk_size {
        return Err(DecodeError::ZstdWindow {
            window: f.window,
            chunk_size,
        });
    }
    match f.content_size {
        Some(n) if n == raw_len as u64 => {}
        Some(declared) => return Err(DecodeError::ZstdContentSize { declared, raw_len }),
        None => return Err(DecodeError::ZstdNoContentSize),
    }
    if !f.checksum {
        return Err(DecodeError::ZstdNoChecksum);
    }
    Ok(())
}

/// A reusable decoder: one of each decoder for the whole image, made on
/// first use.
pub(crate) struct ChunkDecoder {
    zstd: Option<ruzstd::decoding::FrameDecoder>,
    #[cfg(feature = "host-codecs")]
    host: Option<host::Decoders>,
}

impl Default for ChunkDecoder {
    /// The fastest decoders this build has.
    fn default() -> Self {
        ChunkDecoder {
            zstd: None,
            #[cfg(feature = "host-codecs")]
            host: Some(host::Decoders::default()),
        }
    }
}

impl ChunkDecoder {
    /// The device's (pure Rust) decoders, whatever the build: for tests
    /// and benchmarks that compare the two.
    pub(crate) fn portable() -> Self {
        ChunkDecoder {
            zstd: None,
            #[cfg(feature = "host-codecs")]
            host: None,
        }
    }

    /// Decodes `stored` (one chunk, already authenticated) into `out`,
    /// whose length is the chunk's raw length. Any deviation from the
    /// format's rules is an error.
    pub(crate) fn decode(
        &mut self,
        compression: Compression,
        stored: &[u8],
        out: &mut [u8],
        chunk_size: u64,
    ) -> Result<(), DecodeError> {
        match compression {
            Compression::None => {
                if stored.len() != out.len() {
                    return Err(DecodeError::StoredLength {
                        stored: stored.len(),
                        raw: out.len(),
                    });
                }
                out.copy_from_slice(stored);
                Ok(())
            }
            // A zero chunk: no stored bytes, all-zero raw bytes. Only
            // `check_entry` decides whether an empty chunk is allowed
            // (incompat bit 2); the caller still checks the zeros against
            // the signed `raw_sha256`, as for any decoded chunk.
            Compression::Gzip | Compression::Zstd if stored.is_empty() => {
                out.fill(0);
                Ok(())
            }
            Compression::Gzip => self.decode_gzip(stored, out),
            Compression::Zstd => {
                check_zstd_header(stored, out.len(), chunk_size)?;
                #[cfg(feature = "host-codecs")]
                if self.host.as_mut().is_some_and(|h| h.zstd(stored, out)) {
                    return Ok(());
                }
                self.decode_zstd_portable(stored, out)
            }
        }
    }

    /// ruzstd, after [`check_zstd_header`]. It decodes into its own
    /// buffer (its API has no way to decode into ours), from which the
    /// bytes are copied out; `UptoBytes` keeps that buffer within one
    /// window and a block of the chunk size however the blocks lie.
    fn decode_zstd_portable(&mut self, stored: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
        let invalid = |e: &dyn std::fmt::Display| DecodeError::ZstdInvalid(e.to_string());
        let dec = self
            .zstd
            .get_or_insert_with(ruzstd::decoding::FrameDecoder::new);
        let mut input = stored;
        dec.reset(&mut input).map_err(|e| invalid(&e))?;
        let mut pos = 0;
        loop {
            let finished = dec
                .decode_blocks(
                    &mut input,
                    ruzstd::decoding::BlockDecodingStrategy::UptoBytes(128 << 10),
                )
                .map_err(|e| invalid(&e))?;
            loop {
                let n = dec.read(&mut out[pos..]).map_err(|e| invalid(&e))?;
                pos += n;
                if n == 0 {
                    break;
                }
            }
            if dec.can_collect() != 0 {
                return Err(DecodeError::Overlong(Codec::Zstd));
            }
            if finished {
                break;
            }
        }
        if pos != out.len() {
            return Err(DecodeError::Short {
                codec: Codec::Zstd,
                decoded: pos,
                raw_len: out.len(),
            });
        }
        if !input.is_empty() {
            return Err(DecodeError::Trailing {
                codec: Codec::Zstd,
                n: input.len(),
            });
        }
        match (dec.get_checksum_from_data(), dec.get_calculated_checksum()) {
            (Some(a), Some(b)) if a == b => Ok(()),
            _ => Err(DecodeError::ZstdChecksum),
        }
    }

    /// One gzip member into `out`, exactly: the header rules, a raw
    /// inflate into the chunk buffer (no stream wrapper, no second copy),
    /// then the trailer's CRC-32 and ISIZE, then nothing.
    fn decode_gzip(&mut self, stored: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
        let body = stored.get(gzip_body_offset(stored)?..).unwrap_or_default();
        #[cfg(feature = "host-codecs")]
        if let Some(h) = self.host.as_mut() {
            if let Some(used) = h.inflate(body, out) {
                return gzip_trailer(body.get(used..).unwrap_or_default(), out, host::crc32);
            }
        }
        let used = inflate_portable(body, out)?;
        gzip_trailer(body.get(used..).unwrap_or_default(), out, |b| {
            GZIP_CRC.checksum(b)
        })
    }
}

/// The member header (RFC 1952 §2.3) as the format allows it: ID1 ID2,
/// CM = 8 (deflate), no reserved FLG bit. The optional fields (FEXTRA,
/// FNAME, FCOMMENT, FHCRC) are allowed; the decoder checks the header CRC
/// when present and refuses an FNAME or FCOMMENT longer than 65535 bytes
/// before its NUL. MTIME, XFL and OS are ignored.
fn gzip_member_header(b: &[u8]) -> Result<(), DecodeError> {
    let h = b.get(..10).ok_or(DecodeError::GzipHeaderTruncated)?;
    if h[..2] != [0x1f, 0x8b] {
        return Err(DecodeError::GzipMagic);
    }
    if h[2] != 8 {
        return Err(DecodeError::GzipMethod(h[2]));
    }
    if h[3] & 0xe0 != 0 {
        return Err(DecodeError::GzipReservedFlags(h[3]));
    }
    Ok(())
}

/// CRC-32 of RFC 1952 (ISO-HDLC). A 1 KiB table: crc32fast's 24 KiB of
/// tables (through flate2) cost the 1 MiB device updater more than the
/// speed is worth on a check the raw SHA-256 already backs. The host
/// build uses zlib-rs's (SIMD) instead.
const GZIP_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Where a member's deflate stream starts, past the optional fields.
fn gzip_body_offset(b: &[u8]) -> Result<usize, DecodeError> {
    gzip_member_header(b)?;
    let short = || DecodeError::GzipHeaderTruncated;
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
                None if rest.len() > 65535 => return Err(DecodeError::GzipFieldTooLong(field)),
                None => return Err(short()),
            }
        }
    }
    if flags & 0x02 != 0 {
        let h = b.get(at..at + 2).ok_or_else(short)?;
        let head = b.get(..at).ok_or_else(short)?;
        if GZIP_CRC.checksum(head) as u16 != u16::from_le_bytes([h[0], h[1]]) {
            return Err(DecodeError::GzipHeaderCrc);
        }
        at += 2;
    }
    Ok(at)
}

/// miniz_oxide's raw inflate of `body` into exactly `out`; the bytes of
/// `body` it used.
fn inflate_portable(body: &[u8], out: &mut [u8]) -> Result<usize, DecodeError> {
    use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
    use miniz_oxide::inflate::TINFLStatus;
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
        TINFLStatus::HasMoreOutput => return Err(DecodeError::Overlong(Codec::Gzip)),
        TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
            return Err(DecodeError::DeflateTruncated)
        }
        other => return Err(DecodeError::DeflateInvalid(format!("{other:?}"))),
    }
    if n != out.len() {
        return Err(DecodeError::Short {
            codec: Codec::Gzip,
            decoded: n,
            raw_len: out.len(),
        });
    }
    Ok(used)
}

/// The 8-byte trailer after the deflate stream (CRC-32, ISIZE) and
/// nothing after it.
fn gzip_trailer(
    trailer: &[u8],
    out: &[u8],
    crc32: impl Fn(&[u8]) -> u32,
) -> Result<(), DecodeError> {
    let (t, rest) = trailer
        .split_at_checked(8)
        .ok_or(DecodeError::GzipTrailerTruncated)?;
    let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
    let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
    if crc32(out) != crc {
        return Err(DecodeError::GzipCrc);
    }
    if isize != out.len() as u32 {
        return Err(DecodeError::GzipIsize {
            isize,
            raw_len: out.len(),
        });
    }
    if !rest.is_empty() {
        return Err(DecodeError::Trailing {
            codec: Codec::Gzip,
            n: rest.len(),
        });
    }
    Ok(())
}

/// The host's decoders: libzstd (C, already linked for the encoder) and
/// zlib-rs (through flate2, already linked for stamp). Success paths only;
/// see the module comment.
#[cfg(feature = "host-codecs")]
mod host {
    use zstd::zstd_safe;

    #[derive(Default)]
    pub(super) struct Decoders {
        zstd: Option<zstd_safe::DCtx<'static>>,
        inflate: Option<flate2::Decompress>,
    }

    impl Decoders {
        /// One frame, exactly `stored`, decoded by libzstd straight into
        /// `out` and exactly filling it (libzstd checks the content size
        /// and the checksum). The header was checked before: the window
        /// is no larger than the chunk, and a one-shot decode into `out`
        /// allocates no window anyway. `false`: let the portable decoder
        /// decide.
        pub(super) fn zstd(&mut self, stored: &[u8], out: &mut [u8]) -> bool {
            // One frame and nothing after it: ZSTD_decompressDCtx would go
            // on into a second (or skippable) frame.
            if zstd_safe::find_frame_compressed_size(stored) != Ok(stored.len()) {
                return false;
            }
            let dctx = match &mut self.zstd {
                Some(d) => d,
                None => match zstd_safe::DCtx::try_create() {
                    Some(d) => self.zstd.insert(d),
                    None => return false,
                },
            };
            dctx.decompress(out, stored) == Ok(out.len())
        }

        /// zlib-rs's raw inflate of `body` straight into `out`, when it
        /// ends exactly at the end of `out`: the bytes of `body` it used.
        pub(super) fn inflate(&mut self, body: &[u8], out: &mut [u8]) -> Option<usize> {
            use flate2::{Decompress, FlushDecompress, Status};
            let d = self.inflate.get_or_insert_with(|| Decompress::new(false));
            d.reset(false);
            match d.decompress(body, out, FlushDecompress::Finish) {
                Ok(Status::StreamEnd) if d.total_out() == out.len() as u64 => {
                    usize::try_from(d.total_in()).ok()
                }
                _ => None,
            }
        }
    }

    /// CRC-32 (ISO-HDLC) with zlib-rs's folding implementation.
    pub(super) fn crc32(b: &[u8]) -> u32 {
        let mut c = flate2::Crc::new();
        c.update(b);
        c.sum()
    }
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
                dictionary: 0
            }
        );
        // Window descriptor: exponent 21 → 2 GiB window.
        let f = zstd_frame_header(&[0x28, 0xB5, 0x2F, 0xFD, 0x84, 21 << 3, 0, 0, 0, 1]).unwrap();
        assert_eq!(f.window, 1 << 31);
        assert_eq!(
            zstd_frame_header(&[0x28, 0xB5, 0x2F]),
            Err(DecodeError::ZstdHeaderTruncated)
        );
        assert_eq!(
            zstd_frame_header(&[0, 0, 0, 0, 0, 0]),
            Err(DecodeError::ZstdMagic(0))
        );
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

    /// `stored` through the portable decoder and through the default one
    /// (the host's, in this build), which must agree exactly: the same
    /// bytes or the same error.
    fn both(compression: Compression, stored: &[u8], len: usize) -> Result<Vec<u8>, DecodeError> {
        let run = |mut d: ChunkDecoder| {
            let mut out = vec![0u8; len];
            d.decode(compression, stored, &mut out, CHUNK).map(|()| out)
        };
        let portable = run(ChunkDecoder::portable());
        let host = run(ChunkDecoder::default());
        let brief = |r: &Result<Vec<u8>, DecodeError>| match r {
            Ok(v) => format!("Ok({} bytes)", v.len()),
            Err(e) => format!("{e:?}"),
        };
        assert!(
            portable == host,
            "the two decoders disagree: portable {}, host {}",
            brief(&portable),
            brief(&host)
        );
        host
    }

    fn decode(stored: &[u8], len: usize) -> Result<Vec<u8>, DecodeError> {
        both(Compression::Zstd, stored, len)
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

    /// `f` (a single-segment frame) with its content size field set to
    /// `n` (same width): the blocks then decode to more or fewer bytes
    /// than the header says.
    fn with_content_size(f: &[u8], n: u64) -> Vec<u8> {
        assert!(f[4] & 0x20 != 0 && f[4] & 3 == 0, "fixture frame");
        let fcs_len = [1usize, 2, 4, 8][usize::from(f[4] >> 6)];
        let v = if fcs_len == 2 { n - 256 } else { n };
        let mut out = f.to_vec();
        out[5..5 + fcs_len].copy_from_slice(&v.to_le_bytes()[..fcs_len]);
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
        assert_eq!(
            decode(&huge, raw.len()),
            Err(DecodeError::ZstdWindow {
                window: 1 << 31,
                chunk_size: CHUNK
            })
        );
        let mut out = Vec::new();
        ruzstd::decoding::StreamingDecoder::new(&huge[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, raw);

        // Bytes after the frame, a second frame (also an empty one, which
        // libzstd alone would take), a wrong checksum, a content size that
        // disagrees with the chunk, no checksum.
        let mut trailing = f.clone();
        trailing.push(0);
        let after = |n| {
            Err(DecodeError::Trailing {
                codec: Codec::Zstd,
                n,
            })
        };
        assert_eq!(decode(&trailing, raw.len()), after(1));
        let two = [f.clone(), f.clone()].concat();
        assert_eq!(decode(&two, raw.len()), after(f.len()));
        let empty = frame(&[]);
        let plus_empty = [f.clone(), empty.clone()].concat();
        assert_eq!(decode(&plus_empty, raw.len()), after(empty.len()));
        let mut bad_sum = f.clone();
        let n = bad_sum.len();
        bad_sum[n - 1] ^= 1;
        assert_eq!(decode(&bad_sum, raw.len()), Err(DecodeError::ZstdChecksum));
        assert_eq!(
            decode(&f, raw.len() - 1),
            Err(DecodeError::ZstdContentSize {
                declared: raw.len() as u64,
                raw_len: raw.len() - 1
            })
        );
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.include_checksum(false).unwrap();
        c.include_contentsize(true).unwrap();
        let unsummed = c.compress(&raw).unwrap();
        assert_eq!(
            decode(&unsummed, raw.len()),
            Err(DecodeError::ZstdNoChecksum)
        );
        c.include_checksum(true).unwrap();
        c.include_contentsize(false).unwrap();
        let unsized_ = c.compress(&raw).unwrap();
        assert_eq!(
            decode(&unsized_, raw.len()),
            Err(DecodeError::ZstdNoContentSize)
        );
    }

    /// A header that lies about the content size, in agreement with the
    /// chunk: the blocks decode to more (or fewer) bytes than the signed
    /// raw length. The output stays within the chunk buffer and both
    /// decoders refuse with the same error.
    #[test]
    fn zstd_frame_longer_or_shorter_than_its_header() {
        let raw = raw();
        let f = frame(&raw);
        let len = raw.len();
        let longer = with_content_size(&f, len as u64 - 100);
        assert_eq!(
            decode(&longer, len - 100),
            Err(DecodeError::Overlong(Codec::Zstd))
        );
        let shorter = with_content_size(&f, len as u64 + 100);
        assert_eq!(
            decode(&shorter, len + 100),
            Err(DecodeError::Short {
                codec: Codec::Zstd,
                decoded: len,
                raw_len: len + 100
            })
        );
        // Many RLE blocks (4 bytes each, 128 KiB out) behind a small
        // declared size: refused once the buffer passes the chunk, not
        // after decoding them all.
        let mut rle = f[..4].to_vec();
        rle.push(0x20 | 0x04 | (2 << 6)); // single segment, checksum, 4-byte FCS
        rle.extend_from_slice(&1000u32.to_le_bytes());
        for last in std::iter::repeat_n(false, 4000).chain([true]) {
            let h = u32::from(last) | (1 << 1) | ((128u32 << 10) << 3);
            rle.extend_from_slice(&h.to_le_bytes()[..3]);
            rle.push(b'x');
        }
        rle.extend_from_slice(&[0; 4]);
        assert_eq!(decode(&rle, 1000), Err(DecodeError::Overlong(Codec::Zstd)));
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
            // §3.1.1.1.3): accepted, by ruzstd and libzstd too.
            let zero = with_dictionary_id(&f, len, 0);
            assert_eq!(decode(&zero, raw.len()).unwrap(), raw, "{len}-byte id 0");
            let dict = with_dictionary_id(&f, len, 0x11);
            assert_eq!(
                decode(&dict, raw.len()),
                Err(DecodeError::ZstdDictionary(0x11)),
                "{len}-byte id"
            );
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
        assert_eq!(
            decode(&before, raw.len()),
            Err(DecodeError::ZstdMagic(0x184D_2A53))
        );
        let after = [f.clone(), skip.clone()].concat();
        assert_eq!(
            decode(&after, raw.len()),
            Err(DecodeError::Trailing {
                codec: Codec::Zstd,
                n: skip.len()
            })
        );
        // The reference decoders take both: the refusal is ours.
        let mut out = Vec::new();
        let mut input = &after[..];
        let mut d = ruzstd::decoding::StreamingDecoder::new(&mut input).unwrap();
        d.read_to_end(&mut out).unwrap();
        assert_eq!(out, raw);
        assert_eq!(zstd::stream::decode_all(&after[..]).unwrap(), raw);
        assert_eq!(zstd::stream::decode_all(&before[..]).unwrap(), raw);
    }

    /// A small xorshift: the same mutations on every run.
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Hostile frames in bulk: valid frames (several levels, so raw,
    /// RLE and compressed blocks, and ones with a window descriptor) with
    /// bytes flipped, cut short or lengthened; every one must give the same
    /// result from both decoders (`both` asserts that).
    #[test]
    fn zstd_mutated_frames_same_verdict_from_both_decoders() {
        let raw = raw();
        let mut frames = Vec::new();
        for level in [1, 3, 19] {
            let mut c = zstd::bulk::Compressor::new(level).unwrap();
            c.include_checksum(true).unwrap();
            c.include_contentsize(true).unwrap();
            frames.push(c.compress(&raw).unwrap());
        }
        frames.push(frame(&vec![7u8; 30_000]));
        let mut next = rng(0x5eed);
        let (mut ok, mut refused) = (0, 0);
        for f in &frames {
            for _ in 0..400 {
                let mut m = f.clone();
                match next() % 4 {
                    0 | 1 => {
                        let at = (next() % m.len() as u64) as usize;
                        m[at] ^= 1 << (next() % 8);
                    }
                    2 => {
                        let at = 5 + (next() % (m.len() as u64 - 5)) as usize;
                        m[at] = next() as u8;
                        m.truncate(m.len() - (next() % 3) as usize);
                    }
                    _ => m.extend_from_slice(&next().to_le_bytes()[..(next() % 5) as usize]),
                }
                match decode(&m, raw.len().min(f.len() * 1000)) {
                    Ok(_) => ok += 1,
                    Err(_) => refused += 1,
                }
            }
        }
        assert!(refused > 1000, "{ok} accepted, {refused} refused");
    }

    #[test]
    fn gzip_mutated_members_same_verdict_from_both_decoders() {
        use std::io::Write;
        let raw = raw();
        let mut members = Vec::new();
        for level in [1, 6, 9] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            e.write_all(&raw).unwrap();
            members.push(e.finish().unwrap());
        }
        let mut next = rng(0x9e1f);
        let mut refused = 0;
        for g in &members {
            for _ in 0..400 {
                let mut m = g.clone();
                let at = 10 + (next() % (m.len() as u64 - 10)) as usize;
                match next() % 3 {
                    0 => m[at] ^= 1 << (next() % 8),
                    1 => m[at] = next() as u8,
                    _ => m.truncate(at),
                }
                if both(Compression::Gzip, &m, raw.len()).is_err() {
                    refused += 1;
                }
            }
        }
        assert!(refused > 1000, "{refused} refused");
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
        let run = |stored: &[u8]| both(Compression::Gzip, stored, raw.len());
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
        assert_eq!(
            run(&name(65536)),
            Err(DecodeError::GzipFieldTooLong("FNAME"))
        );
        // A header CRC (FHCRC) is checked: a hand-made header with one.
        let mut hcrc = plain[..10].to_vec();
        hcrc[3] = 0x02;
        let crc = GZIP_CRC.checksum(&hcrc) as u16;
        hcrc.extend_from_slice(&crc.to_le_bytes());
        let good = [&hcrc[..], &plain[10..]].concat();
        assert_eq!(run(&good).unwrap(), raw);
        let mut bad = good.clone();
        bad[10] ^= 1;
        assert_eq!(run(&bad), Err(DecodeError::GzipHeaderCrc));
        for flag in [0x20, 0x40, 0x80] {
            let mut m = plain.clone();
            m[3] |= flag;
            assert_eq!(
                run(&m),
                Err(DecodeError::GzipReservedFlags(flag)),
                "{flag:#x}"
            );
        }
        let mut cm = plain.clone();
        cm[2] = 7;
        assert_eq!(run(&cm), Err(DecodeError::GzipMethod(7)));
        assert_eq!(run(&plain[..9]), Err(DecodeError::GzipHeaderTruncated));
        let mut magic = plain.clone();
        magic[0] = 0;
        assert_eq!(run(&magic), Err(DecodeError::GzipMagic));
    }

    #[test]
    fn gzip_chunk_rules() {
        use std::io::Write;
        let raw = raw();
        let gz = |raw: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        };
        let g = gz(&raw);
        let run = |stored: &[u8], len: usize| both(Compression::Gzip, stored, len);
        let len = raw.len();
        assert_eq!(run(&g, len).unwrap(), raw);
        let two = [g.clone(), g.clone()].concat();
        assert_eq!(
            run(&two, len),
            Err(DecodeError::Trailing {
                codec: Codec::Gzip,
                n: g.len()
            })
        );
        assert_eq!(run(&g, len - 1), Err(DecodeError::Overlong(Codec::Gzip)));
        assert_eq!(
            run(&g, len + 1),
            Err(DecodeError::Short {
                codec: Codec::Gzip,
                decoded: len,
                raw_len: len + 1
            })
        );
        let n = g.len();
        let mut bad_crc = g.clone();
        bad_crc[n - 6] ^= 1;
        assert_eq!(run(&bad_crc, len), Err(DecodeError::GzipCrc));
        let mut bad_isize = g.clone();
        bad_isize[n - 4] ^= 1;
        assert_eq!(
            run(&bad_isize, len),
            Err(DecodeError::GzipIsize {
                isize: len as u32 ^ 1,
                raw_len: len
            })
        );
        assert_eq!(
            run(&g[..n - 3], len),
            Err(DecodeError::GzipTrailerTruncated)
        );
        assert_eq!(run(&g[..n / 2], len), Err(DecodeError::DeflateTruncated));
        // Block type 3 is reserved: an invalid stream, not a short one.
        let mut reserved = g[..10].to_vec();
        reserved.push(0b111);
        reserved.extend_from_slice(&[0; 16]);
        assert!(matches!(
            run(&reserved, len),
            Err(DecodeError::DeflateInvalid(_))
        ));
    }
}
