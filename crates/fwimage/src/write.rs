//! Writing images (host side). One pass over each input, chunk by chunk;
//! the head and the index are written last, once every hash is known, by
//! seeking back.

use std::io::{Read, Seek, SeekFrom, Write};

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::layout::{
    align_up, blocks_for, max_stored_len, validate_name, ChunkEntry, Compression, Header, Segment,
    SigSlot, BOARD_LEN, COMPAT_REPRODUCIBLE, CRCS_PER_PAGE, DEFAULT_CHUNK_SHIFT, EMPTY_SHA256,
    ENTRIES_PER_PAGE, FORMAT_VERSION, INCOMPAT_COMPRESSED, INCOMPAT_HEAD_EXT, INCOMPAT_ZERO_CHUNKS,
    LABEL_LEN, MAX_CHUNK_SHIFT, MAX_SEGMENTS, MAX_SIGNED_HEAD, MAX_SIG_SLOTS, MIN_CHUNK_SHIFT,
    PAGE_LEN, SIG_SLOT_LEN,
};
use crate::read::read_full;
use crate::{CrcChain, Error, ImageHead, KeyId, Result, BLOCK_SIZE};

/// What goes into one segment.
#[derive(Clone, Debug)]
pub struct SegmentSpec {
    pub name: String,
    pub target: String,
    pub target_offset: u64,
    pub compression: Compression,
    /// Compression level (gzip 0–12, default [`GZIP_DEFAULT_LEVEL`]; zstd
    /// 1–19, default 3); `None` for the default.
    pub level: Option<i32>,
}

struct Pending<'a> {
    spec: SegmentSpec,
    raw_len: u64,
    input: Box<dyn Read + 'a>,
}

/// Builds an unsigned image; sign it afterwards with [`insert_signature`].
pub struct ImageBuilder<'a> {
    board: String,
    payload_version: u64,
    version_label: String,
    created: u64,
    reproducible: bool,
    sig_slots: u32,
    chunk_shift: u8,
    jobs: usize,
    zero_chunks: bool,
    extension: crate::HeadExtension,
    segments: Vec<Pending<'a>>,
}

/// The threads [`ImageBuilder`] hashes and compresses chunks on unless told
/// otherwise: the cores this process may run on, asked once (the answer
/// reads cgroup files).
pub fn default_jobs() -> usize {
    static JOBS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *JOBS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// What [`ImageBuilder::write`] produced.
#[derive(Clone, Debug)]
pub struct WriteSummary {
    pub image_len: u64,
    pub signed_len: u64,
    pub chunk_size: u64,
    pub chunks: u64,
    /// Bytes of head, index and padding: the format's overhead.
    pub overhead: u64,
    pub segments: Vec<Segment>,
}

impl<'a> ImageBuilder<'a> {
    /// `created` is taken from `SOURCE_DATE_EPOCH` when set (and the image
    /// is flagged reproducible), otherwise from the clock.
    pub fn new(board: &str, payload_version: u64) -> Result<Self> {
        check_text("board", board, BOARD_LEN)?;
        let (created, reproducible) = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(s) => (
                s.trim().parse::<u64>().map_err(|_| Error::InvalidInput {
                    what: "SOURCE_DATE_EPOCH",
                    value: s.clone(),
                    reason: "not a non-negative integer".into(),
                })?,
                true,
            ),
            Err(_) => (
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                false,
            ),
        };
        Ok(Self {
            board: board.to_string(),
            payload_version,
            version_label: String::new(),
            created,
            reproducible,
            sig_slots: 2,
            chunk_shift: DEFAULT_CHUNK_SHIFT,
            jobs: default_jobs(),
            zero_chunks: false,
            extension: crate::HeadExtension::default(),
            segments: Vec::new(),
        })
    }

    pub fn version_label(mut self, label: &str) -> Result<Self> {
        check_text("version label", label, LABEL_LEN)?;
        self.version_label = label.to_string();
        Ok(self)
    }

    /// Number of signature slots to reserve (1–8; default 2 so an image can
    /// carry the old and the new key during a rotation).
    pub fn signature_slots(mut self, n: u32) -> Result<Self> {
        if n == 0 || n > MAX_SIG_SLOTS {
            return Err(Error::InvalidInput {
                what: "signature slot count",
                value: n.to_string(),
                reason: format!("must be 1..={MAX_SIG_SLOTS}"),
            });
        }
        self.sig_slots = n;
        Ok(self)
    }

    /// Records the SBOM's SHA-256 in the signed head (FORMAT.md, "Head
    /// extension"), so a signature also vouches for which SBOM the image has.
    pub fn sbom_sha256(mut self, sha256: [u8; 32]) -> Self {
        self.extension.sbom_sha256 = Some(sha256);
        self
    }

    /// Raw bytes per chunk: a power of two from 64 KiB to 1 MiB
    /// (default 256 KiB).
    pub fn chunk_size(mut self, bytes: u64) -> Result<Self> {
        let ok = bytes.is_power_of_two()
            && (MIN_CHUNK_SHIFT..=MAX_CHUNK_SHIFT).contains(&(bytes.trailing_zeros() as u8));
        if !ok {
            return Err(Error::InvalidInput {
                what: "chunk size",
                value: bytes.to_string(),
                reason: format!(
                    "must be a power of two from {} to {} bytes",
                    1u64 << MIN_CHUNK_SHIFT,
                    1u64 << MAX_CHUNK_SHIFT
                ),
            });
        }
        self.chunk_shift = bytes.trailing_zeros() as u8;
        Ok(self)
    }

    /// Threads to hash and compress chunks on (at least 1; default
    /// [`default_jobs`]). Chunks are independent, so the image's bytes are
    /// the same for any number.
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    /// Stores every all-zero chunk of a compressed segment empty
    /// (FORMAT.md, "Zero chunks"; incompat bit 2, set only when some chunk
    /// is). Off by default: such an image needs a reader that knows the
    /// bit, and without it the bytes are those earlier writers made.
    pub fn zero_chunks(mut self, on: bool) -> Self {
        self.zero_chunks = on;
        self
    }

    /// Adds a segment whose raw content is the next `raw_len` bytes of
    /// `input`. The input is read exactly once, during [`Self::write`].
    pub fn add_segment(
        &mut self,
        spec: SegmentSpec,
        raw_len: u64,
        input: impl Read + 'a,
    ) -> Result<()> {
        validate_name("segment name", &spec.name)?;
        validate_name("segment target", &spec.target)?;
        let bad = |reason: &str| Error::InvalidInput {
            what: "segment",
            value: spec.name.clone(),
            reason: reason.to_string(),
        };
        if raw_len == 0 {
            return Err(bad("payload is empty"));
        }
        if !spec.target_offset.is_multiple_of(512) {
            return Err(bad("target offset must be a multiple of 512"));
        }
        if spec.target_offset.checked_add(raw_len).is_none() {
            return Err(bad("target offset + length overflows"));
        }
        if blocks_for(raw_len) > u64::from(u32::MAX) {
            return Err(bad("payload too large"));
        }
        if spec.compression == Compression::Gzip
            && spec
                .level
                .is_some_and(|l| !(0..=GZIP_MAX_LEVEL).contains(&l))
        {
            return Err(bad(&format!("gzip level must be 0..={GZIP_MAX_LEVEL}")));
        }
        if self.segments.len() >= MAX_SEGMENTS as usize {
            return Err(bad("too many segments"));
        }
        if self.segments.iter().any(|p| p.spec.name == spec.name) {
            return Err(Error::DuplicateSegment(spec.name));
        }
        if let Some(o) = self.segments.iter().find(|p| {
            p.spec.target == spec.target
                && p.spec.target_offset < spec.target_offset + raw_len
                && spec.target_offset < p.spec.target_offset + p.raw_len
        }) {
            return Err(Error::TargetOverlap {
                a: o.spec.name.clone(),
                b: spec.name,
                target: o.spec.target.clone(),
            });
        }
        self.segments.push(Pending {
            spec,
            raw_len,
            input: Box::new(input),
        });
        Ok(())
    }

    /// Streams every segment into `out` and writes the head and index
    /// last. `progress` receives raw bytes consumed.
    pub fn write<W: Write + Seek>(
        self,
        mut out: W,
        progress: &mut dyn FnMut(u64),
    ) -> Result<WriteSummary> {
        let too_big = |reason: &str| Error::InvalidInput {
            what: "image",
            value: String::new(),
            reason: reason.into(),
        };
        if self.segments.is_empty() {
            return Err(too_big("no segments"));
        }
        let cs = 1u64 << self.chunk_shift;
        let crc_count: u64 = self.segments.iter().map(|p| blocks_for(p.raw_len)).sum();
        let chunk_count: u64 = self.segments.iter().map(|p| p.raw_len.div_ceil(cs)).sum();
        if crc_count > u64::from(u32::MAX) || chunk_count > u64::from(u32::MAX) {
            return Err(too_big("too many blocks"));
        }
        let mut header = Header {
            format_version: FORMAT_VERSION,
            compat_flags: if self.reproducible {
                COMPAT_REPRODUCIBLE
            } else {
                0
            },
            incompat_flags: 0,
            payload_version: self.payload_version,
            created: self.created,
            segment_count: self.segments.len() as u32,
            chunk_shift: self.chunk_shift,
            sig_slot_count: self.sig_slots,
            chunk_count,
            crc_count,
            page_count: 0,
            ext_len: 0,
            index_offset: 0,
            data_offset: 0,
            image_len: 0,
            board: self.board,
            version_label: self.version_label,
        };
        header.page_count = header.chunk_pages() + header.crc_pages();
        let ext = self.extension.encode();
        if !ext.is_empty() {
            header.ext_len = ext.len() as u32;
            header.incompat_flags |= INCOMPAT_HEAD_EXT;
        }
        if header.sig_offset() > MAX_SIGNED_HEAD {
            return Err(too_big(
                "the index needs a signed head over 1 MiB: use a larger chunk size or split the payload",
            ));
        }
        header.index_offset = align_up(header.sig_end());
        header.data_offset = header.index_offset + header.page_count * PAGE_LEN as u64;
        if self
            .segments
            .iter()
            .any(|p| p.spec.compression != Compression::None)
        {
            header.incompat_flags |= INCOMPAT_COMPRESSED;
        }

        let mut crc_table: Vec<u32> = Vec::with_capacity(crc_count as usize);
        let mut entries: Vec<ChunkEntry> = Vec::with_capacity(chunk_count as usize);
        let mut chain = CrcChain::default();
        let mut segments = Vec::with_capacity(self.segments.len());
        let mut pos = header.data_offset;
        out.seek(SeekFrom::Start(pos))?;
        let jobs = self.jobs;
        let zero_chunks = self.zero_chunks;
        let mut probe = [0u8; 1];
        for p in self.segments {
            let aligned = align_up(pos);
            out.write_all(&vec![0u8; (aligned - pos) as usize])?;
            pos = aligned;
            let (first_crc, first_chunk) = (crc_table.len() as u32, entries.len() as u32);
            let Pending {
                spec,
                raw_len,
                mut input,
            } = p;
            let start = pos;
            let mut sink = Sink {
                out: &mut out,
                pos: &mut pos,
                entries: &mut entries,
                progress: &mut *progress,
            };
            encode_segment(
                &spec,
                raw_len,
                &mut input,
                self.chunk_shift,
                (jobs, zero_chunks),
                &mut crc_table,
                &mut chain,
                &mut sink,
            )?;
            // An input that grew while being read would silently lose its tail.
            if read_full(&mut input, &mut probe)? != 0 {
                return Err(Error::InputChanged {
                    segment: spec.name.clone(),
                    expected: raw_len,
                    actual: raw_len + 1,
                });
            }
            segments.push(Segment {
                name: spec.name,
                target: spec.target,
                target_offset: spec.target_offset,
                data_offset: start,
                stored_len: pos - start,
                raw_len,
                first_crc,
                crc_blocks: blocks_for(raw_len) as u32,
                compression: spec.compression,
                flags: 0,
                first_chunk,
                chunks: raw_len.div_ceil(cs) as u32,
            });
        }
        header.image_len = pos;
        if entries.iter().any(|e| e.stored_len == 0) {
            header.incompat_flags |= INCOMPAT_ZERO_CHUNKS;
        }

        let index = index_pages(&entries, &crc_table);
        debug_assert_eq!(index.len() as u64, header.page_count * PAGE_LEN as u64);
        let mut head = Vec::with_capacity(header.index_offset as usize);
        head.extend_from_slice(&header.encode());
        for s in &segments {
            head.extend_from_slice(&s.encode());
        }
        for page in index.chunks(PAGE_LEN) {
            head.extend_from_slice(&Sha256::digest(page));
        }
        head.extend_from_slice(&ext);
        for _ in 0..header.sig_slot_count {
            head.extend_from_slice(&SigSlot::encode(None));
        }
        head.resize(header.index_offset as usize, 0);
        head.extend_from_slice(&index);
        out.seek(SeekFrom::Start(0))?;
        out.write_all(&head)?;
        out.flush()?;
        let stored: u64 = segments.iter().map(|s| s.stored_len).sum();
        Ok(WriteSummary {
            image_len: header.image_len,
            signed_len: header.sig_offset(),
            chunk_size: cs,
            chunks: chunk_count,
            overhead: header.image_len - stored,
            segments,
        })
    }
}

/// Chunks read ahead or being encoded per thread: keeps every thread busy
/// while the caller reads and writes, and bounds memory to about
/// 2 × jobs × 2 chunks (raw and stored).
const IN_FLIGHT_PER_JOB: usize = 2;

/// Where encoded chunks go, in order.
struct Sink<'s> {
    out: &'s mut dyn Write,
    pos: &'s mut u64,
    entries: &'s mut Vec<ChunkEntry>,
    progress: &'s mut dyn FnMut(u64),
}

/// One chunk after hashing and encoding.
struct Encoded {
    seq: u64,
    raw: Vec<u8>,
    raw_sha: [u8; 32],
    /// `None`: stored as is.
    stored: Option<(Vec<u8>, [u8; 32])>,
}

impl Sink<'_> {
    fn put(&mut self, c: &Encoded) -> Result<()> {
        let (stored, stored_sha) = match &c.stored {
            Some((bytes, sha)) => (&bytes[..], *sha),
            None => (&c.raw[..], c.raw_sha),
        };
        if stored.len() as u64 > max_stored_len(c.raw.len() as u64) {
            return Err(Error::InvalidInput {
                what: "image",
                value: String::new(),
                reason: "a chunk did not compress within the format's bound".into(),
            });
        }
        self.out.write_all(stored)?;
        self.entries.push(ChunkEntry {
            stored_sha256: stored_sha,
            raw_sha256: c.raw_sha,
            stored_offset: *self.pos,
            stored_len: stored.len() as u32,
        });
        *self.pos += stored.len() as u64;
        (self.progress)(c.raw.len() as u64);
        Ok(())
    }
}

/// Reads one segment's chunks in order, hashes and encodes them on `jobs`
/// threads, and hands them to `sink` in order. The CRC chain runs here, in
/// order, as it must; each chunk's hashes and stored form depend on that
/// chunk alone, so the bytes do not depend on `jobs`.
#[allow(clippy::too_many_arguments)]
fn encode_segment(
    spec: &SegmentSpec,
    raw_len: u64,
    input: &mut dyn Read,
    shift: u8,
    (jobs, zero_chunks): (usize, bool),
    crc_table: &mut Vec<u32>,
    chain: &mut CrcChain,
    sink: &mut Sink<'_>,
) -> Result<()> {
    use std::collections::BTreeMap;
    use std::sync::mpsc::channel;
    use std::sync::{Arc, Mutex};

    let cs = 1u64 << shift;
    let jobs = jobs.max(1);
    let max_in_flight = (jobs * IN_FLIGHT_PER_JOB) as u64;
    std::thread::scope(|scope| -> Result<()> {
        let (job_tx, job_rx) = channel::<(u64, Vec<u8>)>();
        let (done_tx, done_rx) = channel::<Result<Encoded>>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for _ in 0..jobs {
            let (rx, tx) = (Arc::clone(&job_rx), done_tx.clone());
            scope.spawn(move || {
                let mut enc = Encoder::default();
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, raw)) = job else { return };
                    // A zero chunk is stored empty; whether one is
                    // depends on its bytes alone, so the image is still
                    // the same for any `jobs`.
                    let zero = zero_chunks
                        && spec.compression != Compression::None
                        && raw.iter().all(|&b| b == 0);
                    let encoded = if zero {
                        Ok(Some(Vec::new()))
                    } else {
                        enc.encode(spec, &raw, shift)
                    };
                    let done = encoded.map(|stored| {
                        let raw_sha: [u8; 32] = Sha256::digest(&raw).into();
                        let stored = stored.map(|b| {
                            let sha: [u8; 32] = if b.is_empty() {
                                EMPTY_SHA256
                            } else {
                                Sha256::digest(&b).into()
                            };
                            (b, sha)
                        });
                        Encoded {
                            seq,
                            raw,
                            raw_sha,
                            stored,
                        }
                    });
                    if tx.send(done).is_err() {
                        return;
                    }
                }
            });
        }
        // Only the workers hold senders now: if they all die, recv fails
        // instead of waiting for ever.
        drop(done_tx);
        let mut ready: BTreeMap<u64, Encoded> = BTreeMap::new();
        let mut free: Vec<Vec<u8>> = Vec::new();
        let (mut next_seq, mut next_write) = (0u64, 0u64);
        let mut collect = |ready: &mut BTreeMap<u64, Encoded>,
                           free: &mut Vec<Vec<u8>>,
                           next_write: &mut u64|
         -> Result<()> {
            let done = done_rx.recv().map_err(|_| Error::InvalidInput {
                what: "encoder",
                value: String::new(),
                reason: "a chunk encoder thread died".into(),
            })??;
            ready.insert(done.seq, done);
            while let Some(c) = ready.remove(next_write) {
                sink.put(&c)?;
                free.push(c.raw);
                *next_write += 1;
            }
            Ok(())
        };
        let mut left = raw_len;
        while left > 0 {
            let want = left.min(cs) as usize;
            let mut raw = free.pop().unwrap_or_default();
            raw.resize(want, 0);
            let got = read_full(&mut *input, &mut raw)?;
            if got < want {
                return Err(Error::InputChanged {
                    segment: spec.name.clone(),
                    expected: raw_len,
                    actual: raw_len - left + got as u64,
                });
            }
            for block in raw.chunks(BLOCK_SIZE) {
                crc_table.push(chain.push(block));
            }
            job_tx
                .send((next_seq, raw))
                .map_err(|_| Error::InvalidInput {
                    what: "encoder",
                    value: String::new(),
                    reason: "the chunk encoder threads died".into(),
                })?;
            next_seq += 1;
            left -= want as u64;
            while next_seq - next_write >= max_in_flight {
                collect(&mut ready, &mut free, &mut next_write)?;
            }
        }
        while next_write < next_seq {
            collect(&mut ready, &mut free, &mut next_write)?;
        }
        // Dropping the queue (also on every error return above) ends the
        // workers, which the scope then joins.
        drop(job_tx);
        Ok(())
    })
}

/// The index region: chunk pages, then CRC pages (FORMAT.md).
fn index_pages(entries: &[ChunkEntry], crcs: &[u32]) -> Vec<u8> {
    let mut out = Vec::new();
    for page in entries.chunks(ENTRIES_PER_PAGE as usize) {
        let start = out.len();
        for e in page {
            out.extend_from_slice(&e.encode());
        }
        out.resize(start + PAGE_LEN, 0);
    }
    for page in crcs.chunks(CRCS_PER_PAGE as usize) {
        let start = out.len();
        for c in page {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out.resize(start + PAGE_LEN, 0);
    }
    out
}

/// The gzip level stamp uses unless told otherwise (libdeflate's scale:
/// 0 stores, 1–9 greedy and lazy parsing like zlib's, 10–12 near-optimal
/// parsing). 11: on the 256 MiB ext4 benchmark payload its chunks are
/// 0.5 % smaller than zlib-rs at 9, within 0.003 % of level 12's, for
/// three quarters of 12's CPU time (docs/BENCHMARKS.md, "libdeflate for
/// gzip chunks").
pub const GZIP_DEFAULT_LEVEL: i32 = 11;

/// The highest gzip level (libdeflate's).
pub const GZIP_MAX_LEVEL: i32 = 12;

/// One thread's chunk encoders, reused across chunks (a near-optimal
/// libdeflate compressor holds several MiB of parser state).
#[derive(Default)]
struct Encoder {
    zstd: Option<(i32, zstd::bulk::Compressor<'static>)>,
    gzip: Option<(i32, libdeflater::Compressor)>,
}

/// The gzip level a chunk is actually deflated at. A chunk of one repeated
/// byte (zeroed or erased space, most of a sparse filesystem image) goes
/// at most at level 9: libdeflate's near-optimal parser (10–12) spends
/// 11–17 times as long on such a run for a result no smaller (measured
/// in docs/BENCHMARKS.md). The rule reads only the chunk, so the image
/// stays the same for any `--jobs`.
fn gzip_chunk_level(level: i32, raw: &[u8]) -> i32 {
    match raw.split_first() {
        Some((first, rest)) if level > 9 && rest.iter().all(|b| b == first) => 9,
        _ => level,
    }
}

impl Encoder {
    /// The stored form of one chunk: `None` for the raw bytes, or one gzip
    /// member, or one zstd frame with content size and checksum and a window
    /// no larger than the chunk.
    fn encode(&mut self, spec: &SegmentSpec, raw: &[u8], shift: u8) -> Result<Option<Vec<u8>>> {
        match spec.compression {
            Compression::None => Ok(None),
            Compression::Gzip => {
                let level = gzip_chunk_level(spec.level.unwrap_or(GZIP_DEFAULT_LEVEL), raw);
                let bad = |reason: String| Error::InvalidInput {
                    what: "gzip level",
                    value: level.to_string(),
                    reason,
                };
                if self.gzip.as_ref().is_none_or(|(l, _)| *l != level) {
                    let lvl = libdeflater::CompressionLvl::new(level)
                        .map_err(|_| bad(format!("must be 0..={GZIP_MAX_LEVEL}")))?;
                    self.gzip = Some((level, libdeflater::Compressor::new(lvl)));
                }
                let Some((_, c)) = self.gzip.as_mut() else {
                    return Err(bad("encoder unavailable".into()));
                };
                // libdeflate writes the member whole: header with FLG = 0
                // and MTIME = 0 (XFL 2 at levels 8-12, OS 255), deflate
                // stream, CRC32 and ISIZE.
                let mut buf = vec![0u8; c.gzip_compress_bound(raw.len())];
                let n = c
                    .gzip_compress(raw, &mut buf)
                    .map_err(|e| bad(e.to_string()))?;
                buf.truncate(n);
                Ok(Some(buf))
            }
            Compression::Zstd => {
                let level = spec.level.unwrap_or(3);
                if self.zstd.as_ref().is_none_or(|(l, _)| *l != level) {
                    let mut c = zstd::bulk::Compressor::new(level)?;
                    c.include_checksum(true)?;
                    c.include_contentsize(true)?;
                    c.window_log(u32::from(shift))?;
                    self.zstd = Some((level, c));
                }
                let Some((_, c)) = self.zstd.as_mut() else {
                    return Err(Error::InvalidInput {
                        what: "zstd",
                        value: String::new(),
                        reason: "encoder unavailable".into(),
                    });
                };
                let mut buf = Vec::with_capacity(zstd::zstd_safe::compress_bound(raw.len()));
                c.compress_to_buffer(raw, &mut buf)?;
                Ok(Some(buf))
            }
        }
    }
}

fn check_text(what: &'static str, s: &str, max: usize) -> Result<()> {
    let reason = if s.len() > max {
        Some(format!("longer than {max} bytes"))
    } else if s.contains('\0') || s.chars().any(char::is_control) {
        Some("contains control characters".into())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidInput {
            what,
            value: s.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Anything that can produce an Ed25519 signature: a key in memory, or an
/// external program (HSM, PKCS#11, KMS) driven by the CLI.
pub trait Signer {
    fn public_key(&self) -> VerifyingKey;
    fn sign(&self, message: &[u8]) -> Result<[u8; 64]>;
}

impl Signer for ed25519_dalek::SigningKey {
    fn public_key(&self) -> VerifyingKey {
        self.verifying_key()
    }
    fn sign(&self, message: &[u8]) -> Result<[u8; 64]> {
        Ok(ed25519_dalek::Signer::sign(self, message).to_bytes())
    }
}

/// The bytes a signer must sign for the image in `src`
/// ([`ImageHead::signing_message`]).
pub fn signed_message<R: Read>(src: R, file_len: u64) -> Result<Vec<u8>> {
    Ok(ImageHead::read(src, file_len)?.signing_message().to_vec())
}

/// Signs the image in `file` in place: the signature goes into the slot that
/// already holds this key's signature, or the first empty one. The signature
/// is checked against the public key before it is written, so a
/// misbehaving external signer cannot produce an image that fails later.
pub fn insert_signature<F: Read + Write + Seek>(
    file: &mut F,
    signer: &dyn Signer,
) -> Result<KeyId> {
    let len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    let head = ImageHead::read(&mut *file, len)?;
    let key = signer.public_key();
    let key_id = KeyId::of(&key);
    let message = head.signing_message();
    let sig = signer.sign(&message)?;
    key.verify_strict(&message, &Signature::from_bytes(&sig))
        .map_err(|_| {
            Error::Signer(format!(
                "returned a signature that does not verify with key {key_id}"
            ))
        })?;
    let slot = head
        .slots
        .iter()
        .position(|s| s.as_ref().is_some_and(|s| s.key_id == key_id.0))
        .or_else(|| head.slots.iter().position(Option::is_none))
        .ok_or(Error::NoFreeSlot(head.slots.len()))?;
    let at = head.header.sig_offset() + (slot * SIG_SLOT_LEN) as u64;
    file.seek(SeekFrom::Start(at))?;
    file.write_all(&SigSlot::encode(Some(&SigSlot {
        key_id: key_id.0,
        signature: sig,
    })))?;
    file.flush()?;
    Ok(key_id)
}

#[cfg(test)]
mod tests {
    use super::gzip_chunk_level;

    #[test]
    fn runs_take_level_9() {
        assert_eq!(gzip_chunk_level(12, &[0u8; 4096]), 9);
        assert_eq!(gzip_chunk_level(10, &[0xffu8; 3]), 9);
        assert_eq!(gzip_chunk_level(12, &[7u8]), 9);
        // Below 10 the level stands; one differing byte makes it no run.
        assert_eq!(gzip_chunk_level(6, &[0u8; 4096]), 6);
        let mut almost = [0u8; 4096];
        almost[4095] = 1;
        assert_eq!(gzip_chunk_level(12, &almost), 12);
        assert_eq!(gzip_chunk_level(12, &[]), 12);
    }
}
