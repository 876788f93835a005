//! Arbitrary bytes as one compressed chunk, through both decoder sets of
//! fwimage: the device's (ruzstd, miniz_oxide) and the host's (libzstd,
//! zlib-rs, feature `host-codecs`). They must give the same result, the
//! same bytes or the same `DecodeError`, and never panic.
//!
//! Input: byte 0 picks the codec and whether to prepend a well-formed
//! header (so the fuzzer reaches the blocks without first having to find
//! the magic, the content size and the flags), bytes 1–2 are the chunk's
//! raw length (at most 64 KiB, the chunk size used here), the rest is the
//! chunk. An empty chunk (three bytes of input, no header) is a zero chunk
//! (FORMAT.md, "Zero chunks"): both decoders must give that many zeros.
#![no_main]

use fwimage::{BatchDecoder, Compression};
use libfuzzer_sys::fuzz_target;

const CHUNK: u64 = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Some((&[mode, a, b], rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    let raw_len = usize::from(u16::from_le_bytes([a, b]));
    let zstd = mode & 1 == 0;
    let mut chunk = Vec::with_capacity(rest.len() + 18);
    if mode & 2 != 0 {
        if zstd {
            // Single segment, checksum, 4-byte content size.
            chunk.extend_from_slice(&[0x28, 0xB5, 0x2F, 0xFD, 0xA4]);
            chunk.extend_from_slice(&(raw_len as u32).to_le_bytes());
        } else {
            chunk.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
        }
    }
    chunk.extend_from_slice(rest);
    let compression = if zstd {
        Compression::Zstd
    } else {
        Compression::Gzip
    };
    let mut portable = vec![0u8; raw_len];
    let mut host = vec![0u8; raw_len];
    let p = BatchDecoder::portable().decode_chunk(compression, &chunk, &mut portable, CHUNK);
    let h = BatchDecoder::default().decode_chunk(compression, &chunk, &mut host, CHUNK);
    assert_eq!(p, h, "the decoders disagree");
    if p.is_ok() {
        assert!(portable == host, "the decoders disagree on the bytes");
    }
    if chunk.is_empty() {
        assert!(p.is_ok() && portable.iter().all(|&b| b == 0), "a zero chunk is not zeros");
    }
});
