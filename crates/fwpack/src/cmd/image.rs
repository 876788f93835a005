//! `fwpack stamp | sign | verify | inspect`: the firmware container.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use ed25519_dalek::VerifyingKey;
use fwimage::{Compression, ImageBuilder, ImageHead, KeyId, SegmentSpec, Signer, TrustedKeys};
use serde_json::json;

use crate::cmd::{progress_bar, write_atomic_with};
use crate::exit::{refuse, INTEGRITY, POLICY};

#[derive(Args)]
pub struct StampArgs {
    /// Board (compatible string) the image is for; devices refuse others.
    #[arg(long)]
    board: String,
    /// Payload version, a non-negative integer that only ever grows.
    /// Devices refuse images older than what they run (anti-rollback).
    #[arg(long = "version", value_name = "N")]
    payload_version: u64,
    /// Human-readable version label (e.g. "2026.11.1").
    #[arg(long, default_value = "")]
    label: String,
    /// A segment: `NAME=FILE[,target=T][,offset=BYTES][,compress=none|gzip|zstd][,level=N]`.
    /// The target defaults to the name; compress and level to --compress
    /// and --level. Repeat for several segments.
    #[arg(long = "segment", short = 's', value_name = "SPEC", required = true)]
    segments: Vec<String>,
    /// Default compression for segments that don't name one.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    compress: Compression,
    /// Default compression level for segments that don't name one: gzip
    /// 0-12 (libdeflate; the default 11 parses near-optimally, about 0.5 %
    /// smaller than zlib -9; 1-9 are 2-3x faster), zstd 1-19 (default 3).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    level: Option<i32>,
    /// Output image (written to a temporary file and renamed on success).
    #[arg(short, long)]
    out: PathBuf,
    /// Signature slots to reserve (1-8).
    #[arg(long, default_value_t = 2)]
    sig_slots: u32,
    /// Raw bytes per chunk, the unit that is hashed, compressed and
    /// authenticated on its own (a power of two, 64K to 1M). Smaller
    /// chunks make delta fetches finer; larger ones compress better.
    #[arg(long, default_value = "256K", value_parser = super::apply::parse_size)]
    chunk_size: u64,
    /// Threads that hash and compress chunks (default: the cores available).
    /// The image is byte-identical for any number.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Record this SBOM file's SHA-256 in the signed head, so the
    /// signature also says which SBOM describes the image. Readers older
    /// than this option refuse such images (docs/FORMAT.md, "Head extension").
    #[arg(long, value_name = "FILE")]
    sbom: Option<PathBuf>,
    /// Store all-zero chunks of compressed segments compressed too,
    /// instead of empty. By default they are stored empty (no bytes; the
    /// image then sets incompat bit 2, docs/FORMAT.md "Zero chunks"),
    /// which updaters older than that bit refuse: use this for a fleet
    /// whose updaters predate it. The output is then what earlier fwpack
    /// versions wrote.
    #[arg(long)]
    no_zero_chunks: bool,
    #[command(flatten)]
    signer: SignerArgs,
}

#[derive(Args)]
#[group(multiple = true)]
pub struct SignerArgs {
    /// Sign with this private key (PKCS#8 PEM).
    #[arg(long, conflicts_with_all = ["signer_cmd", "signature_file"])]
    key: Option<PathBuf>,
    /// Sign with an external program (HSM, PKCS#11, cloud KMS), run with
    /// `sh -c`. It receives the bytes to sign on stdin (and as the file
    /// named by $FWPACK_SIGN_INPUT) and prints the 64-byte Ed25519
    /// signature on stdout, raw or hex. Needs --pubkey.
    #[arg(long, requires = "pubkey", conflicts_with = "signature_file")]
    signer_cmd: Option<String>,
    /// Insert a detached signature made elsewhere (64 bytes raw or hex),
    /// e.g. by `openssl pkeyutl -sign -rawin`. Needs --pubkey.
    #[arg(long, requires = "pubkey")]
    signature_file: Option<PathBuf>,
    /// Public key matching --signer-cmd or --signature-file.
    #[arg(long)]
    pubkey: Option<PathBuf>,
}

impl SignerArgs {
    pub fn is_set(&self) -> bool {
        self.key.is_some() || self.signer_cmd.is_some() || self.signature_file.is_some()
    }

    pub fn signer(&self) -> Result<Box<dyn Signer>> {
        if let Some(key) = &self.key {
            return Ok(Box::new(crate::cmd::keys::load_signing_key(key)?));
        }
        let public = match &self.pubkey {
            Some(p) => crate::cmd::keys::load_public_key(p)?,
            None => bail!("--pubkey is required with --signer-cmd or --signature-file"),
        };
        if let Some(cmd) = &self.signer_cmd {
            return Ok(Box::new(ExternalSigner {
                cmd: cmd.clone(),
                public,
            }));
        }
        if let Some(file) = &self.signature_file {
            let data = crate::cmd::read_input(file)?;
            return Ok(Box::new(DetachedSignature {
                signature: decode_signature(&data)?,
                public,
            }));
        }
        bail!("no signer given: use --key, --signer-cmd or --signature-file")
    }
}

#[derive(Args)]
pub struct SignArgs {
    /// Image to sign in place.
    image: PathBuf,
    #[command(flatten)]
    signer: SignerArgs,
    /// Write the exact bytes a signer must sign (40 bytes: "FWPKSIG2" and
    /// the SHA-256 of the image head) to this file and exit, for offline
    /// signing flows.
    #[arg(long, conflicts_with_all = ["key", "signer_cmd", "signature_file"])]
    export_message: Option<PathBuf>,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Image to verify.
    image: PathBuf,
    /// Trusted public key (PEM or 32 raw bytes). Repeat to trust several.
    #[arg(long = "key", short = 'k', required = true)]
    keys: Vec<PathBuf>,
    /// Refuse images whose payload version is lower than this.
    #[arg(long)]
    min_version: Option<u64>,
    /// Refuse images for another board.
    #[arg(long)]
    board: Option<String>,
    /// Also check that this file is the SBOM whose SHA-256 the signed head
    /// carries (exit 6 if it is another, 7 if the image names none).
    #[arg(long, value_name = "FILE")]
    sbom: Option<PathBuf>,
    /// One JSON object on stdout instead of human lines.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Image to describe (head only; use `verify` to check the data).
    image: PathBuf,
    /// One JSON object on stdout instead of human lines.
    #[arg(long)]
    json: bool,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse()
}

struct SegmentArg {
    spec: SegmentSpec,
    file: PathBuf,
}

fn parse_segment(arg: &str, default: Compression, level: Option<i32>) -> Result<SegmentArg> {
    let mut parts = arg.split(',');
    let first = parts.next().unwrap_or_default();
    let (name, file) = first
        .split_once('=')
        .ok_or_else(|| anyhow!("segment `{arg}`: expected NAME=FILE[,key=value...]"))?;
    let mut spec = SegmentSpec {
        name: name.to_string(),
        target: name.to_string(),
        target_offset: 0,
        compression: default,
        level,
    };
    for kv in parts {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("segment `{name}`: `{kv}` is not key=value"))?;
        match k {
            "target" => spec.target = v.to_string(),
            "offset" => {
                spec.target_offset = v
                    .parse()
                    .with_context(|| format!("segment `{name}`: offset `{v}`"))?
            }
            "compress" => {
                spec.compression = v.parse().map_err(|e| anyhow!("segment `{name}`: {e}"))?
            }
            "level" => {
                spec.level = Some(
                    v.parse()
                        .with_context(|| format!("segment `{name}`: level `{v}`"))?,
                )
            }
            _ => bail!("segment `{name}`: unknown key `{k}` (target, offset, compress, level)"),
        }
    }
    Ok(SegmentArg {
        spec,
        file: PathBuf::from(file),
    })
}

pub fn stamp(args: StampArgs) -> Result<()> {
    let segs = args
        .segments
        .iter()
        .map(|s| parse_segment(s, args.compress, args.level))
        .collect::<Result<Vec<_>>>()?;
    let signer = if args.signer.is_set() {
        Some(args.signer.signer()?)
    } else {
        None
    };
    let mut builder = ImageBuilder::new(&args.board, args.payload_version)?
        .version_label(&args.label)?
        .signature_slots(args.sig_slots)?
        .chunk_size(args.chunk_size)?
        .jobs(args.jobs.map_or_else(fwimage::default_jobs, usize::from))
        .zero_chunks(!args.no_zero_chunks);
    if let Some(sbom) = &args.sbom {
        builder = builder.sbom_sha256(sha256_file(sbom)?);
    }
    let mut total = 0;
    for s in segs {
        let f = crate::cmd::open_input(&s.file)?;
        let len = f
            .metadata()
            .with_context(|| format!("reading {}", s.file.display()))?
            .len();
        total += len;
        let named = NamedReader {
            inner: f,
            path: s.file.clone(),
        };
        builder.add_segment(s.spec, len, BufReader::with_capacity(1 << 20, named))?;
    }
    let mut bar = progress_bar(total, "stamping");
    let summary = write_atomic_with(&args.out, |file| {
        let summary = builder.write(&mut *file, &mut |n| bar.inc(n))?;
        if let Some(signer) = &signer {
            fwimage::insert_signature(file, signer.as_ref())?;
        }
        Ok(summary)
    })?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {} ({} bytes, {} segment(s){})",
        args.out.display(),
        summary.image_len,
        summary.segments.len(),
        if signer.is_some() {
            ", signed"
        } else {
            ", unsigned"
        }
    );
    Ok(())
}

pub fn sign(args: SignArgs) -> Result<()> {
    if let Some(out) = &args.export_message {
        let (head, _) = read_head(&args.image)?;
        crate::cmd::write_atomic(out, &head.signing_message())?;
        eprintln!(
            "wrote {} bytes to sign to {}",
            fwimage::SIGNING_MESSAGE_LEN,
            out.display()
        );
        return Ok(());
    }
    let signer = args.signer.signer()?;
    crate::cmd::open_input(&args.image)?;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&args.image)
        .with_context(|| format!("opening {}", args.image.display()))?;
    let id = fwimage::insert_signature(&mut f, signer.as_ref())
        .with_context(|| format!("signing {}", args.image.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", args.image.display()))?;
    eprintln!("signed {} with key {id}", args.image.display());
    Ok(())
}

pub fn verify(args: VerifyArgs) -> Result<()> {
    let mut trusted = TrustedKeys::new();
    for k in &args.keys {
        trusted.add(crate::cmd::keys::load_public_key(k)?);
    }
    let (head, file) = read_head(&args.image)?;
    if let Some(board) = &args.board {
        if &head.header.board != board {
            return Err(refuse(
                POLICY,
                format!("image is for board `{}`, not `{board}`", head.header.board),
            ));
        }
    }
    if let Some(min) = args.min_version {
        if head.header.payload_version < min {
            return Err(refuse(
                POLICY,
                format!(
                    "image version {} is older than the minimum {min} (rollback refused)",
                    head.header.payload_version
                ),
            ));
        }
    }
    let mut bar = progress_bar(head.segments.iter().map(|s| s.raw_len).sum(), "verifying");
    let report = head
        .verify(&trusted, file, &mut |n| bar.inc(n))
        .with_context(|| format!("verifying {}", args.image.display()))?;
    bar.finish_and_clear();
    // The hash is in the signed head, so once the signature verified it is
    // the signer's word on which SBOM this is.
    let sbom = head.extension.sbom_sha256.map(hex::encode);
    if let Some(path) = &args.sbom {
        let want = sbom.as_deref().ok_or_else(|| {
            refuse(
                POLICY,
                format!("{} names no SBOM in its signed head", args.image.display()),
            )
        })?;
        let got = hex::encode(sha256_file(path)?);
        if got != want {
            return Err(refuse(
                INTEGRITY,
                format!(
                    "{} is not the image's SBOM: its SHA-256 is {got}, the signed head names {want}",
                    path.display()
                ),
            ));
        }
    }
    if args.json {
        println!(
            "{}",
            json!({
                "result": "ok",
                "image": args.image,
                "board": head.header.board,
                "version": head.header.payload_version,
                "key_id": report.key_id.full(),
                "segments": report.segments,
                "chunks": report.chunks,
                "raw_bytes": report.raw_bytes,
                "bytes_read": report.bytes_read,
                "sbom_sha256": sbom,
            })
        );
    } else {
        println!(
            "OK: {} — board {}, version {}, {} segment(s), signed by key {}",
            args.image.display(),
            head.header.board,
            head.header.payload_version,
            report.segments,
            report.key_id
        );
        if let Some(h) = &sbom {
            println!("SBOM sha256 {h} (signed)");
        }
    }
    Ok(())
}

/// How many chunks of each segment are stored empty (zero chunks,
/// docs/FORMAT.md), read from the index pages as they are in the file:
/// unauthenticated, like everything `inspect` shows. Only an image with
/// incompat bit 2 can have any; the others' index is not read.
fn zero_chunk_counts(head: &ImageHead, f: &mut File) -> Result<Vec<u64>> {
    use std::io::{Read, Seek, SeekFrom};
    let h = &head.header;
    let mut counts = vec![0u64; head.segments.len()];
    if !h.has_zero_chunks() {
        return Ok(counts);
    }
    let mut page = vec![0u8; fwimage::PAGE_LEN];
    for (n, s) in head.segments.iter().enumerate() {
        let first = u64::from(s.first_chunk);
        for k in first..first + u64::from(s.chunks) {
            let (p, j) = (k / fwimage::ENTRIES_PER_PAGE, k % fwimage::ENTRIES_PER_PAGE);
            if j == 0 || k == first {
                f.seek(SeekFrom::Start(h.page_offset(p)))?;
                f.read_exact(&mut page).context("reading the index")?;
            }
            // stored_len: bytes 72..76 of the 80-byte entry.
            let at = j as usize * fwimage::CHUNK_ENTRY_LEN + 72;
            if page[at..at + 4] == [0; 4] {
                counts[n] += 1;
            }
        }
    }
    Ok(counts)
}

pub fn inspect(args: InspectArgs) -> Result<()> {
    let (head, mut file) = read_head(&args.image)?;
    let zero = zero_chunk_counts(&head, &mut file)?;
    let h = &head.header;
    let sigs: Vec<_> = head
        .slots
        .iter()
        .flatten()
        .map(|s| KeyId(s.key_id))
        .collect();
    if args.json {
        let segments: Vec<_> = head
            .segments
            .iter()
            .zip(&zero)
            .map(|(s, zero)| {
                json!({
                    "name": s.name, "target": s.target, "target_offset": s.target_offset,
                    "data_offset": s.data_offset, "stored_len": s.stored_len,
                    "raw_len": s.raw_len, "compression": s.compression.name(),
                    "first_crc": s.first_crc, "crc_blocks": s.crc_blocks,
                    "first_chunk": s.first_chunk, "chunks": s.chunks,
                    "zero_chunks": zero,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "format_version": h.format_version,
                "board": h.board,
                "version": h.payload_version,
                "label": h.version_label,
                "created": h.created,
                "reproducible": h.compat_flags & fwimage::COMPAT_REPRODUCIBLE != 0,
                "compat_flags": h.compat_flags,
                "incompat_flags": h.incompat_flags,
                "image_len": h.image_len,
                "signed_range": [0, h.sig_offset()],
                "crc_blocks": h.crc_count,
                "chunk_size": h.chunk_size(),
                "chunks": h.chunk_count,
                "index_range": [h.index_offset, h.data_offset],
                "index_pages": h.page_count,
                "signature_slots": h.sig_slot_count,
                "signatures": sigs.iter().map(KeyId::full).collect::<Vec<_>>(),
                "sbom_sha256": head.extension.sbom_sha256.map(hex::encode),
                "segments": segments,
            })
        );
        return Ok(());
    }
    println!("image        {}", args.image.display());
    println!("board        {}", h.board);
    println!(
        "version      {}{}",
        h.payload_version,
        if h.version_label.is_empty() {
            String::new()
        } else {
            format!(" ({})", h.version_label)
        }
    );
    println!(
        "created      {} (unix){}",
        h.created,
        if h.compat_flags & fwimage::COMPAT_REPRODUCIBLE != 0 {
            ", from SOURCE_DATE_EPOCH"
        } else {
            ""
        }
    );
    println!(
        "size         {} bytes, signed range 0..{}",
        h.image_len,
        h.sig_offset()
    );
    println!(
        "chunks       {} of {} KiB, index {} page(s) at {}..{}",
        h.chunk_count,
        h.chunk_size() >> 10,
        h.page_count,
        h.index_offset,
        h.data_offset
    );
    if h.has_zero_chunks() {
        // Worth saying: updaters that predate the flag refuse the image.
        println!(
            "             zero chunks stored empty (incompat bit 2; --no-zero-chunks to avoid)"
        );
    }
    println!(
        "signatures   {}/{} slot(s){}",
        sigs.len(),
        h.sig_slot_count,
        sigs.iter().map(|k| format!(" {k}")).collect::<String>()
    );
    if let Some(h) = head.extension.sbom_sha256 {
        println!("sbom         sha256 {}", hex::encode(h));
    }
    println!("segments     {}", head.segments.len());
    for (s, zero) in head.segments.iter().zip(&zero) {
        println!(
            "  {:<16} -> {}@{}  {} bytes ({} stored, {}), {} chunk(s){}",
            s.name,
            s.target,
            s.target_offset,
            s.raw_len,
            s.stored_len,
            s.compression.name(),
            s.chunks,
            if *zero > 0 {
                format!(", {zero} zero")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// A payload reader whose I/O errors name the payload: they surface while
/// the image is written, where they would otherwise read as errors of the
/// output.
struct NamedReader {
    inner: File,
    path: PathBuf,
}

impl std::io::Read for NamedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            std::io::Error::new(e.kind(), format!("reading {}: {e}", self.path.display()))
        })
    }
}

pub(crate) fn read_head(path: &Path) -> Result<(ImageHead, File)> {
    use std::io::{Seek, SeekFrom};
    let mut f = crate::cmd::open_input(path)?;
    let len = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let head = ImageHead::read(BufReader::new(&mut f), len)
        .with_context(|| format!("reading {}", path.display()))?;
    f.seek(SeekFrom::Start(0))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok((head, f))
}

fn decode_signature(data: &[u8]) -> Result<[u8; 64]> {
    if let Ok(raw) = <[u8; 64]>::try_from(data) {
        return Ok(raw);
    }
    let text = std::str::from_utf8(data).unwrap_or("").trim();
    let bytes = hex::decode(text)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok());
    bytes.ok_or_else(|| {
        fwimage::Error::Signer(format!(
            "expected a 64-byte Ed25519 signature (raw or hex), got {} bytes",
            data.len()
        ))
        .into()
    })
}

struct DetachedSignature {
    signature: [u8; 64],
    public: VerifyingKey,
}

impl Signer for DetachedSignature {
    fn public_key(&self) -> VerifyingKey {
        self.public
    }
    fn sign(&self, _message: &[u8]) -> fwimage::Result<[u8; 64]> {
        Ok(self.signature)
    }
}

/// Runs the user's signing command. The private key never touches this
/// process: only the message goes out and 64 bytes come back.
struct ExternalSigner {
    cmd: String,
    public: VerifyingKey,
}

impl Signer for ExternalSigner {
    fn public_key(&self) -> VerifyingKey {
        self.public
    }

    fn sign(&self, message: &[u8]) -> fwimage::Result<[u8; 64]> {
        let err = |m: String| fwimage::Error::Signer(m);
        let dir = tempfile::tempdir().map_err(|e| err(format!("temp dir: {e}")))?;
        let input = dir.path().join("message.bin");
        std::fs::write(&input, message).map_err(|e| err(format!("writing message: {e}")))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&self.cmd)
            .env("FWPACK_SIGN_INPUT", &input)
            .env("FWPACK_KEY_ID", KeyId::of(&self.public).full())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| err(format!("starting `{}`: {e}", self.cmd)))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A signer that reads the file instead may close stdin early.
            match stdin.write_all(message) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(err(format!("feeding `{}`: {e}", self.cmd))),
            }
        }
        let mut out = Vec::new();
        if let Some(mut stdout) = child.stdout.take() {
            stdout
                .read_to_end(&mut out)
                .map_err(|e| err(format!("reading `{}` output: {e}", self.cmd)))?;
        }
        let status = child
            .wait()
            .map_err(|e| err(format!("waiting for `{}`: {e}", self.cmd)))?;
        if !status.success() {
            return Err(err(format!("`{}` failed ({status})", self.cmd)));
        }
        decode_signature(&out).map_err(|e| err(format!("`{}`: {e:#}", self.cmd)))
    }
}

fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut f = crate::cmd::open_input(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(h.finalize().into())
}
