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
    /// The image's length: reaching it, the pipe must be at its end.
    end: Option<u64>,
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
            end: None,
        }
    }

    /// The image ends at `len`: once read up to there, a further byte on
    /// the pipe is an error ([`Error::Trailing`]) — the read that
    /// completes the image fails, so nothing is committed. (A stream with
    /// more than one image, or garbage after it, is not the image that was
    /// signed.)
    pub fn set_end(&mut self, len: u64) {
        self.end = Some(len);
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
        if self.end == Some(self.pos) {
            self.expect_eof()?;
        }
        Ok(())
    }

    fn expect_eof(&mut self) -> io::Result<()> {
        let mut one = [0u8; 1];
        loop {
            return match self.r.read(&mut one) {
                Ok(0) => Ok(()),
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    Error::Trailing { len: self.pos },
                )),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
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
        // Trailing bytes: the read that reaches the end fails.
        let mut q = PipeSource::new(&data[..], 1000);
        q.set_end(99_999);
        assert!(q.read_at(99_000, &mut [0u8; 998]).is_ok());
        let e = q.read_at(99_998, &mut [0u8; 1]).unwrap_err();
        assert!(matches!(
            e.get_ref().and_then(|i| i.downcast_ref::<Error>()),
            Some(Error::Trailing { len: 99_999 })
        ));
        let mut q = PipeSource::new(&data[..], 1000);
        q.set_end(100_000);
        assert!(q.read_at(99_000, &mut [0u8; 1000]).is_ok());
        assert_eq!(
            p.read_at(6000, &mut big).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
