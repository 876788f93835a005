//! Where image bytes come from. Readers take each range once and
//! authenticate it themselves, so a source is free to be hostile: return
//! different bytes on a second read, short reads, errors.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;

/// Positioned reads of an image.
pub trait ImageSource {
    /// Fills `buf` with the bytes at `offset`, or fails (a short file is
    /// `UnexpectedEof`).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// A hint: the stored bytes the reader will take next, as sorted,
    /// disjoint ranges, in order (a delta apply skipping unchanged
    /// chunks). A network source can fetch each run with one request
    /// instead of one per chunk or one to the end. Reads outside the plan
    /// must still work.
    fn plan_reads(&mut self, _runs: &[Range<u64>]) {}
}

impl<T: ImageSource + ?Sized> ImageSource for &mut T {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn plan_reads(&mut self, runs: &[Range<u64>]) {
        (**self).plan_reads(runs)
    }
}

impl<T: ImageSource + ?Sized> ImageSource for Box<T> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn plan_reads(&mut self, runs: &[Range<u64>]) {
        (**self).plan_reads(runs)
    }
}

#[cfg(unix)]
impl ImageSource for std::fs::File {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// An image in memory.
#[derive(Clone, Copy, Debug)]
pub struct MemSource<'a>(pub &'a [u8]);

impl ImageSource for MemSource<'_> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let from = usize::try_from(offset).map_err(|_| eof())?;
        let to = from.checked_add(buf.len()).ok_or_else(eof)?;
        buf.copy_from_slice(self.0.get(from..to).ok_or_else(eof)?);
        Ok(())
    }
}

/// Any `Read + Seek` (a cursor, a buffered file).
#[derive(Debug)]
pub struct SeekSource<R>(pub R);

impl<R: Read + Seek> ImageSource for SeekSource<R> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.seek(SeekFrom::Start(offset))?;
        self.0.read_exact(buf)
    }
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "read past the end of the image",
    )
}

/// Counts what passes through: tests use it to prove one pass.
#[derive(Debug)]
pub struct CountingSource<S> {
    pub inner: S,
    pub bytes: u64,
    pub reads: u64,
}

impl<S> CountingSource<S> {
    pub fn new(inner: S) -> Self {
        CountingSource {
            inner,
            bytes: 0,
            reads: 0,
        }
    }
}

impl<S: ImageSource> ImageSource for CountingSource<S> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)?;
        self.bytes += buf.len() as u64;
        self.reads += 1;
        Ok(())
    }
    fn plan_reads(&mut self, runs: &[Range<u64>]) {
        self.inner.plan_reads(runs)
    }
}

impl<T: AsRef<[u8]>> ImageSource for std::io::Cursor<T> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        MemSource(self.get_ref().as_ref()).read_at(offset, buf)
    }
}
