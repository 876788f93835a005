//! Full verification of an image in one pass: signature, every index page,
//! every chunk (stored and raw hashes), the CRC chain and the padding.

use std::sync::{mpsc, Arc, Mutex};

use crate::crc::PageBuf;
use crate::stream::{BatchDecoder, PendingBatch};
use crate::{ChunkReader, Error, ImageHead, ImageSource, KeyId, Result};

/// What a full verification established.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub key_id: KeyId,
    pub segments: usize,
    pub chunks: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// Bytes read from the source: each byte of the image exactly once.
    pub bytes_read: u64,
}

impl ImageHead {
    /// The check `fwpack verify` does: what a device does before and while
    /// writing, without a device. `progress` gets raw bytes checked.
    pub fn verify<S: ImageSource>(
        &self,
        trusted: &crate::TrustedKeys,
        src: S,
        progress: &mut dyn FnMut(u64),
    ) -> Result<VerifyReport> {
        let v = self.authenticate(trusted)?;
        let mut rd = ChunkReader::new(&v, src)?;
        let cs = self.header.chunk_size() as usize;
        let batch = cs.max(1 << 20);
        let raw: u64 = self.segments.iter().map(|s| s.raw_len).sum();
        // Threads only pay when there is more than one batch to check.
        let (chunks, raw_bytes) = if checkers() > 1 && raw > batch as u64 {
            check_in_parallel(&mut rd, batch, progress)?
        } else {
            check_in_order(&mut rd, batch, progress)?
        };
        // Every index page was loaded on the way (all chunks and all CRC
        // entries are used), each once: the chunk and CRC caches are
        // separate and both walked in order.
        let bytes_read = self.header.index_offset + rd.index_bytes_read() + rd.data_bytes_read;
        Ok(VerifyReport {
            key_id: v.key_id,
            segments: self.segments.len(),
            chunks,
            raw_bytes,
            stored_bytes: self.segments.iter().map(|s| s.stored_len).sum(),
            bytes_read,
        })
    }
}

/// How many threads check batches: every core, at most 4, asked once
/// (the answer reads cgroup files).
fn checkers() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4)))
}

/// [`check_in_parallel`] on this thread alone.
fn check_in_order<S: ImageSource>(
    rd: &mut ChunkReader<'_, S>,
    batch: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<(u64, u64)> {
    let mut buf = PageBuf::new(batch);
    let mut dec = BatchDecoder::default();
    let (mut chunks, mut raw_bytes) = (0u64, 0u64);
    while let Some(b) = rd.read_batch(buf.as_mut())? {
        let raw = b.raw_len() as u64;
        chunks += b.verify(buf.as_mut(), &mut dec)?.len() as u64;
        raw_bytes += raw;
        progress(raw);
    }
    Ok((chunks, raw_bytes))
}

/// A batch's outcome: its number, (chunks, raw bytes) or the error, and
/// the buffer back.
type Checked = (u64, Result<(u64, u64)>, PageBuf);

/// Reads batches of `batch` bytes on this thread while `checkers()`
/// threads authenticate (and decode) the ones read before: chunks are
/// independent, so a zstd or gzip image decodes on every core. Returns
/// (chunks, raw bytes). Of several failures the first in file order is
/// reported, whatever thread found it first, so the error does not depend
/// on timing.
fn check_in_parallel<S: ImageSource>(
    rd: &mut ChunkReader<'_, S>,
    batch: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<(u64, u64)> {
    let workers = checkers();
    std::thread::scope(|sc| {
        let (job_tx, job_rx) = mpsc::sync_channel::<(u64, PendingBatch, PageBuf)>(0);
        let (done_tx, done_rx) = mpsc::channel::<Checked>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut started = 0;
        for _ in 0..workers {
            let (rx, tx) = (job_rx.clone(), done_tx.clone());
            let spawned = std::thread::Builder::new()
                .name("fwimage-verify".into())
                .spawn_scoped(sc, move || check_batches(&rx, &tx));
            started += usize::from(spawned.is_ok());
        }
        drop((job_rx, done_tx));
        if started == 0 {
            return Err(Error::Io(std::io::Error::other(
                "could not start a verification thread",
            )));
        }
        // One buffer per checker and one being read.
        let mut free: Vec<PageBuf> = (0..=started).map(|_| PageBuf::new(batch)).collect();
        let (mut sent, mut got) = (0u64, 0u64);
        let (mut chunks, mut raw_bytes) = (0u64, 0u64);
        // The first failure in file order: (batch number, error).
        let mut failed: Option<(u64, Error)> = None;
        let mut note =
            |seq: u64, res: Result<(u64, u64)>, failed: &mut Option<(u64, Error)>| match res {
                Ok((c, r)) => {
                    chunks += c;
                    raw_bytes += r;
                    progress(r);
                }
                Err(e) if failed.as_ref().is_none_or(|(s, _)| seq < *s) => *failed = Some((seq, e)),
                Err(_) => {}
            };
        while failed.is_none() {
            let mut buf = match free.pop() {
                Some(b) => b,
                None => match done_rx.recv() {
                    Ok((seq, res, buf)) => {
                        got += 1;
                        note(seq, res, &mut failed);
                        buf
                    }
                    Err(_) => break,
                },
            };
            match rd.read_batch(buf.as_mut()) {
                Ok(Some(b)) => {
                    if job_tx.send((sent, b, buf)).is_err() {
                        break;
                    }
                    sent += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some((sent, e));
                    break;
                }
            }
        }
        drop(job_tx);
        while got < sent {
            let Ok((seq, res, _)) = done_rx.recv() else {
                break;
            };
            got += 1;
            note(seq, res, &mut failed);
        }
        match failed {
            Some((_, e)) => Err(e),
            None if got < sent => Err(Error::Io(std::io::Error::other(
                "a verification thread stopped",
            ))),
            None => Ok((chunks, raw_bytes)),
        }
    })
}

/// A checker thread: authenticates batches until the reader hangs up.
fn check_batches(
    jobs: &Mutex<mpsc::Receiver<(u64, PendingBatch, PageBuf)>>,
    out: &mpsc::Sender<Checked>,
) {
    let mut dec = BatchDecoder::default();
    loop {
        // The lock is held only while waiting for the next job.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, batch, mut buf)) = job else {
            return;
        };
        let res = batch.verify(buf.as_mut(), &mut dec).map(|infos| {
            (
                infos.len() as u64,
                infos.iter().map(|c| c.raw_len as u64).sum(),
            )
        });
        if out.send((seq, res, buf)).is_err() {
            return;
        }
    }
}
