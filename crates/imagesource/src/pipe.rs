//! A non-seekable source (standard input): read strictly forward, except
//! for the bytes before the first chunk (head and index), which are kept.

use std::io::{self, Read};

use fwimage::ImageSource;

use crate::Error;

/// Reads an image from a pipe. Bytes below `retain` are kept in memory as
/// they pass (the readers go back to index pages while chunks stream);
/// everything else may be read once, in increasing offsets, skipping
/// forward as needed.
pub struct PipeSource<R> {
    r: R,
    /// Bytes taken from the pipe so far.
    pos: u64,
    retain: u64,
    kept: Vec<u8>,
}

impl<R: Read> PipeSource<R> {
    /// `retain` bounds the memory until the caller knows the head's size
    /// ([`PipeSource::set_retain`]).
    pub fn new(r: R, retain: u64) -> Self {
        PipeSource {
            r,
            pos: 0,
            retain,
            kept: Vec::new(),
        }
    }

    /// Keep only bytes below `retain` from now on (and drop any above it).
    pub fn set_retain(&mut self, retain: u64) {
        self.retain = retain;
        if (self.kept.len() as u64) > retain {
            self.kept.truncate(retain as usize);
        }
    }

    /// Bytes taken from the pipe.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn pull(&mut self, out: Option<&mut [u8]>, n: usize) -> io::Result<()> {
        let mut scratch = [0u8; 16 << 10];
        let mut out = out;
        let mut done = 0;
        while done < n {
            let want = n - done;
            let chunk: &mut [u8] = match out.as_deref_mut() {
                Some(o) => &mut o[done..],
                None => &mut scratch[..want.min(16 << 10)],
            };
            let k = match self.r.read(chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        Error::Pipe(format!("the image ended after {} bytes", self.pos)),
                    ))
                }
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if self.pos < self.retain {
                let keep = ((self.retain - self.pos) as usize).min(k);
                self.kept.extend_from_slice(&chunk[..keep]);
            }
            self.pos += k as u64;
            done += k;
        }
        Ok(())
    }
}

impl<R: Read> ImageSource for PipeSource<R> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
        // Already passed and kept?
        if end <= self.pos {
            let kept = self
                .kept
                .get(offset as usize..end as usize)
                .ok_or_else(|| {
                    io::Error::other(Error::Pipe(format!(
                        "bytes {offset}..{end} went past already; a pipe cannot go back"
                    )))
                })?;
            buf.copy_from_slice(kept);
            return Ok(());
        }
        if offset < self.pos {
            // Straddles the current position: the kept part, then the rest.
            let have = (self.pos - offset) as usize;
            let kept = self
                .kept
                .get(offset as usize..self.pos as usize)
                .ok_or_else(|| {
                    io::Error::other(Error::Pipe(format!(
                        "bytes {offset}..{} went past already; a pipe cannot go back",
                        self.pos
                    )))
                })?;
            buf[..have].copy_from_slice(kept);
            let rest = buf.len() - have;
            return self.pull(Some(&mut buf[have..]), rest);
        }
        while self.pos < offset {
            let n = ((offset - self.pos) as usize).min(1 << 20);
            self.pull(None, n)?;
        }
        let n = buf.len();
        self.pull(Some(buf), n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_head_and_goes_only_forward_after_it() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut p = PipeSource::new(&data[..], 1000);
        let mut b = [0u8; 10];
        p.read_at(0, &mut b).unwrap();
        assert_eq!(b, data[..10]);
        p.read_at(5000, &mut b).unwrap();
        assert_eq!(b, data[5000..5010]);
        // The kept part can be read again; the rest cannot.
        p.read_at(990, &mut b).unwrap();
        assert_eq!(b, data[990..1000]);
        assert!(p.read_at(2000, &mut b).is_err());
        p.read_at(5010, &mut b).unwrap();
        assert_eq!(b, data[5010..5020]);
        let mut big = vec![0u8; 200_000];
        assert_eq!(
            p.read_at(6000, &mut big).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
