//! The I/O boundary: everything the engine does to a target goes through
//! [`Storage`], so the same engine runs on a block device, a plain file, an
//! in-memory disk, or a test backend that simulates power loss.

use std::io;
use std::ops::Range;
use std::sync::Arc;

use crate::running::BootedSlot;

/// Sector sizes of a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Smallest addressable unit: O_DIRECT offsets and lengths must be
    /// multiples of it (BLKSSZGET).
    pub logical: u32,
    /// Unit the device writes internally (BLKPBSZGET); smaller writes make
    /// it read-modify-write.
    pub physical: u32,
}

impl Geometry {
    /// Offset/length granularity of every read and write the engine issues.
    pub fn io_align(&self) -> u64 {
        u64::from(self.logical.max(512))
    }

    /// Memory alignment of I/O buffers: at least a page, which every
    /// O_DIRECT implementation accepts.
    pub fn mem_align(&self) -> usize {
        (self.logical.max(self.physical) as usize).max(4096)
    }
}

/// What the busy check found about the ranges an apply will write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BusyCheck {
    /// Reasons to refuse (mounted, held, opened exclusively elsewhere).
    pub reasons: Vec<String>,
    /// Things worth saying that are no reason to refuse (e.g. the running
    /// system's own partition is mounted, outside the written ranges).
    pub notes: Vec<String>,
}

/// Positional reads and writes that several threads may issue at once on
/// one target (`pread`/`pwrite` on one descriptor): how the apply engine
/// keeps more than one write in flight (each writer thread also reads
/// its batch back with `verify_writes` while the other's write goes on).
/// Same alignment rules as [`Storage`]; nothing is durable until
/// [`Storage::sync`] on the storage it came from.
pub trait SharedIo: Send + Sync {
    /// Fills `buf` from `offset` (exactly; short reads are errors).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
}

/// A disk-like target. The engine only ever passes offsets and lengths
/// that are multiples of [`Geometry::io_align`] and buffers aligned to
/// [`Geometry::mem_align`], so implementations can hand them straight to
/// O_DIRECT. `Send`: the engine's writer threads (which also read back)
/// use a backend without [`Storage::shared_io`] through a lock, one call
/// at a time.
pub trait Storage: Send {
    /// Size in bytes.
    fn size(&self) -> u64;
    fn geometry(&self) -> Geometry;
    /// Fills `buf` from `offset` (exactly; short reads are errors).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset`. Not durable until [`Storage::sync`].
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable (fdatasync + device cache flush).
    fn sync(&mut self) -> io::Result<()>;
    /// Is anything using the byte ranges about to be written? Plain files
    /// and test backends have nothing to say.
    fn busy(&mut self, _ranges: &[Range<u64>]) -> io::Result<BusyCheck> {
        Ok(BusyCheck::default())
    }
    /// The slot of this target the running system booted from, if it
    /// booted from this target (the PID-1 updater's boot record). An
    /// error means a boot record exists but says nothing usable; the
    /// state area then refuses to mark any slot for writing.
    fn booted_slot(&mut self) -> io::Result<Option<BootedSlot>> {
        Ok(None)
    }
    /// A degradation the engine should report (e.g. O_DIRECT refused).
    fn take_warning(&mut self) -> Option<String> {
        None
    }
    /// Whether writes bypass the page cache (read-back then reads the
    /// device, not memory).
    fn direct_io(&self) -> bool {
        false
    }
    /// One line for humans: what this target is.
    fn describe(&self) -> String;
    /// A handle for concurrent positional I/O on this target, for backends
    /// that can (a file descriptor). `None` (the default): the engine
    /// serializes every call through `&mut self`.
    fn shared_io(&self) -> Option<Arc<dyn SharedIo>> {
        None
    }
}

impl<S: Storage + ?Sized> Storage for &mut S {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn geometry(&self) -> Geometry {
        (**self).geometry()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
    fn busy(&mut self, ranges: &[Range<u64>]) -> io::Result<BusyCheck> {
        (**self).busy(ranges)
    }
    fn booted_slot(&mut self) -> io::Result<Option<BootedSlot>> {
        (**self).booted_slot()
    }
    fn take_warning(&mut self) -> Option<String> {
        (**self).take_warning()
    }
    fn direct_io(&self) -> bool {
        (**self).direct_io()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn shared_io(&self) -> Option<Arc<dyn SharedIo>> {
        (**self).shared_io()
    }
}

/// A heap buffer whose usable part starts at an aligned address, without
/// `unsafe`: over-allocate by the alignment and slice from the first
/// aligned byte.
pub struct AlignedBuf {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    /// Zeroed buffer of `len` bytes aligned to `align` (a power of two).
    pub fn new(len: usize, align: usize) -> Self {
        let align = align.max(1);
        let raw = vec![0u8; len + align];
        // `align_offset` may decline to compute (never for u8 in practice);
        // an unaligned buffer then only costs O_DIRECT, which falls back.
        let off = match raw.as_ptr().align_offset(align) {
            o if o < align => o,
            _ => 0,
        };
        AlignedBuf { raw, off, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.off..self.off + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.off..self.off + self.len]
    }
}

/// A disk in memory: for building disk images on the host and for tests.
/// Counts what was written so tests can assert on it.
#[derive(Clone, Debug)]
pub struct MemStorage {
    pub data: Vec<u8>,
    pub geometry: Geometry,
    /// Number of `write_at` calls and bytes they wrote.
    pub writes: u64,
    pub bytes_written: u64,
    pub syncs: u64,
}

impl MemStorage {
    pub fn new(data: Vec<u8>) -> Self {
        MemStorage {
            data,
            geometry: Geometry {
                logical: 512,
                physical: 4096,
            },
            writes: 0,
            bytes_written: 0,
            syncs: 0,
        }
    }

    fn range(&self, offset: u64, len: usize) -> io::Result<Range<usize>> {
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start.checked_add(len).ok_or_else(out_of_range)?;
        if end > self.data.len() {
            return Err(out_of_range());
        }
        Ok(start..end)
    }
}

fn out_of_range() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "access beyond the end of the target",
    )
}

impl Storage for MemStorage {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn geometry(&self) -> Geometry {
        self.geometry
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let r = self.range(offset, buf.len())?;
        self.data[r].copy_from_slice(buf);
        self.writes += 1;
        self.bytes_written += buf.len() as u64;
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.syncs += 1;
        Ok(())
    }
    fn describe(&self) -> String {
        format!("in-memory disk of {} bytes", self.data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buf_is_aligned() {
        for align in [512, 4096, 65536] {
            let mut b = AlignedBuf::new(3 * align, align);
            assert_eq!(b.as_slice().as_ptr() as usize % align, 0);
            assert_eq!(b.len(), 3 * align);
            b.as_mut_slice()[3 * align - 1] = 1;
        }
    }

    #[test]
    fn mem_storage_bounds() {
        let mut m = MemStorage::new(vec![0; 4096]);
        assert!(m.write_at(4096 - 512, &[1; 512]).is_ok());
        assert!(m.write_at(4096 - 511, &[1; 512]).is_err());
        assert!(m.read_at(u64::MAX, &mut [0; 1]).is_err());
        assert_eq!(m.bytes_written, 512);
    }
}
