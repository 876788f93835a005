//! Parallel gzip, pigz-style: one gzip member whose deflate stream is cut
//! into fixed blocks of input, each compressed on its own thread with the
//! previous 32 KiB of input as its dictionary and ended with a sync flush
//! (so the next block starts byte-aligned), the last one with the final
//! bit. The blocks are cut at fixed offsets of the input, never where a
//! thread or a `write` call happens to end, so the bytes are the same for
//! any thread count. The dictionary keeps almost all of the ratio a single
//! stream gets; what is lost is a few bytes per block for the flush marker
//! and the restarted Huffman tables.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Crc, FlushCompress, Status};

/// Input bytes per block (pigz's default). Part of the output's definition:
/// changing it changes every archive.
pub const BLOCK: usize = 128 << 10;
/// Deflate's window: all a block can refer back to.
const DICT: usize = 32 << 10;
/// Blocks queued or being compressed per thread: enough to keep each busy
/// while the caller produces input, and the bound on memory
/// (about 2 × `jobs` × (BLOCK + DICT) in, as much out).
const IN_FLIGHT_PER_JOB: usize = 2;

struct Job {
    seq: u64,
    dict: Vec<u8>,
    data: Vec<u8>,
    last: bool,
}

struct Done {
    seq: u64,
    deflated: io::Result<Vec<u8>>,
    crc: Crc,
}

/// A gzip writer that deflates on `jobs` threads; call [`ParGzEncoder::finish`].
pub struct ParGzEncoder<W: Write> {
    /// `None` only once finished.
    out: Option<W>,
    cur: Vec<u8>,
    /// The last `DICT` bytes of input before `cur`.
    tail: Vec<u8>,
    crc: Crc,
    jobs: Option<Sender<Job>>,
    results: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    ready: BTreeMap<u64, Done>,
    next_seq: u64,
    next_write: u64,
    max_in_flight: u64,
}

impl<W: Write> ParGzEncoder<W> {
    /// Writes the gzip header at once; `jobs` is clamped to at least 1.
    pub fn new(mut out: W, level: u32, jobs: usize) -> io::Result<Self> {
        let level = level.min(9);
        // What gzip -n writes: no name, mtime 0, OS 3 (Unix) so the host
        // never leaks in; XFL as zlib sets it for the level.
        let xfl = match level {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3])?;
        let jobs = jobs.max(1);
        let (job_tx, job_rx) = channel::<Job>();
        let (done_tx, done_rx) = channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut workers = Vec::with_capacity(jobs);
        for _ in 0..jobs {
            let rx = Arc::clone(&job_rx);
            let tx = done_tx.clone();
            workers.push(std::thread::spawn(move || worker(level, &rx, &tx)));
        }
        Ok(Self {
            out: Some(out),
            cur: Vec::with_capacity(BLOCK),
            tail: Vec::new(),
            crc: Crc::new(),
            jobs: Some(job_tx),
            results: done_rx,
            workers,
            ready: BTreeMap::new(),
            next_seq: 0,
            next_write: 0,
            max_in_flight: (jobs * IN_FLIGHT_PER_JOB) as u64,
        })
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.cur, Vec::with_capacity(BLOCK));
        let dict = std::mem::take(&mut self.tail);
        // Blocks before the last are whole, so this is the input's last 32 KiB.
        self.tail = data[data.len().saturating_sub(DICT)..].to_vec();
        let job = Job {
            seq: self.next_seq,
            dict,
            data,
            last,
        };
        self.next_seq += 1;
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))?
            .send(job)
            .map_err(|_| io::Error::other("gzip worker threads are gone"))?;
        while self.next_seq - self.next_write >= self.max_in_flight {
            self.collect_one()?;
        }
        Ok(())
    }

    /// Waits for one block and writes every block that is now next in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let done = self
            .results
            .recv()
            .map_err(|_| io::Error::other("gzip worker threads are gone"))?;
        self.ready.insert(done.seq, done);
        while let Some(done) = self.ready.remove(&self.next_write) {
            let deflated = done.deflated?;
            self.out()?.write_all(&deflated)?;
            self.crc.combine(&done.crc);
            self.next_write += 1;
        }
        Ok(())
    }

    /// Compresses what is left as the final block, writes the CRC32 and
    /// ISIZE trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        // The last block may be empty (input a multiple of BLOCK): it is then
        // just an empty final block, still the same for any thread count.
        self.submit(true)?;
        while self.next_write < self.next_seq {
            self.collect_one()?;
        }
        self.stop();
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        let out = self.out()?;
        out.write_all(&trailer)?;
        out.flush()?;
        self.out
            .take()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))
    }

    /// Closes the job queue and waits for the threads to exit.
    fn stop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            // A worker only ends by its queue closing; a panic in one has
            // already surfaced as a missing result.
            let _ = w.join();
        }
    }
}

impl<W: Write> Drop for ParGzEncoder<W> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.cur.len());
        self.cur.extend_from_slice(&buf[..n]);
        if self.cur.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    /// Flushes the inner writer only: a deflate flush here would put a block
    /// boundary where the caller flushed, and the output would depend on it.
    fn flush(&mut self) -> io::Result<()> {
        self.out()?.flush()
    }
}

fn worker(level: u32, jobs: &Mutex<Receiver<Job>>, results: &Sender<Done>) {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let mut crc = Crc::new();
        crc.update(&job.data);
        let deflated = deflate_block(&mut c, &job.dict, &job.data, job.last);
        if results
            .send(Done {
                seq: job.seq,
                deflated,
                crc,
            })
            .is_err()
        {
            return;
        }
    }
}

/// One block as raw deflate: primed with `dict`, ended with a sync flush
/// (byte-aligned, not final) or, for the last block, the final block.
fn deflate_block(c: &mut Compress, dict: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    c.reset();
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // Deflate's worst case is a few bytes per 16 KiB over the input.
    let mut out = Vec::with_capacity(data.len() + data.len() / 1000 + 64);
    loop {
        let done = c.total_in() as usize;
        let input = data.get(done..).unwrap_or_default();
        let status = c
            .compress_vec(input, &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize >= data.len();
        // zlib has flushed everything once a call ends with output space left.
        let finished = if last {
            status == Status::StreamEnd
        } else {
            all_in && out.len() < out.capacity()
        };
        if finished {
            return Ok(out);
        }
        out.reserve(out.capacity().max(4096));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gz(data: &[u8], jobs: usize, piece: usize) -> Vec<u8> {
        let mut e = ParGzEncoder::new(Vec::new(), 9, jobs).unwrap();
        for p in data.chunks(piece.max(1)) {
            e.write_all(p).unwrap();
        }
        e.finish().unwrap()
    }

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: text-like with a slow drift.
        let mut x: u32 = 1;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                if i % 7 == 0 {
                    (x >> 24) as u8
                } else {
                    b"firmware initramfs "[i % 19]
                }
            })
            .collect()
    }

    #[test]
    fn same_bytes_for_any_thread_count_and_write_size() {
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK, 5 * BLOCK + 77] {
            let data = sample(len);
            let one = gz(&data, 1, 1 << 20);
            for (jobs, piece) in [(2, 4096), (3, 1), (8, BLOCK + 3)] {
                if piece == 1 && len > BLOCK {
                    continue;
                }
                assert_eq!(gz(&data, jobs, piece), one, "len {len} jobs {jobs}");
            }
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}");
        }
    }

    #[test]
    fn dictionary_keeps_the_ratio() {
        // Repeats at a distance shorter than the window but across a block
        // boundary only compress if the next block is primed.
        let unit = sample(20 << 10);
        let data: Vec<u8> = unit.iter().cycle().take(4 * BLOCK).copied().collect();
        let ours = gz(&data, 2, 1 << 16).len();
        // Primed: about one unit's worth (10 KiB); unprimed: every block pays it (29 KiB).
        assert!(
            ours < unit.len() * 3 / 4,
            "{ours} bytes for {} repeated",
            unit.len()
        );
    }
}
