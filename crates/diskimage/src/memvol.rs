//! A sparse in-memory volume: what fatfs formats and fills before the
//! result is copied into the image.
//!
//! fatfs issues one small read-modify-write per directory entry and FAT
//! update; against a file that is a syscall storm, against this it is a
//! memcpy. Only touched blocks take memory (the file data plus a few FAT
//! sectors), untouched ones read as zeros — which is exactly what the
//! freshly created, sparse image holds there, so all-zero blocks are not
//! copied out either.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

const BLOCK: u64 = 64 * 1024;

pub(crate) struct MemVolume {
    len: u64,
    pos: u64,
    blocks: BTreeMap<u64, Box<[u8]>>,
}

impl MemVolume {
    pub fn new(len: u64) -> Self {
        MemVolume {
            len,
            pos: 0,
            blocks: BTreeMap::new(),
        }
    }

    /// Non-zero blocks as (offset, bytes), in offset order; the last may
    /// be shorter than a block when the volume ends mid-block.
    pub fn nonzero_blocks(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.blocks.iter().filter_map(move |(&idx, data)| {
            let off = idx * BLOCK;
            let n = usize::try_from((self.len - off).min(BLOCK)).ok()?;
            let data = data.get(..n)?;
            (!data.iter().all(|&b| b == 0)).then_some((off, data))
        })
    }

    /// Copies `out.len()` bytes at `off`; the caller has bounds-checked.
    fn read_at(&self, off: u64, out: &mut [u8]) {
        let idx = off / BLOCK;
        let inner = (off % BLOCK) as usize;
        match self
            .blocks
            .get(&idx)
            .and_then(|b| b.get(inner..inner + out.len()))
        {
            Some(src) => out.copy_from_slice(src),
            None => out.fill(0),
        }
    }

    fn write_at(&mut self, off: u64, data: &[u8]) {
        let idx = off / BLOCK;
        let inner = (off % BLOCK) as usize;
        let block = self
            .blocks
            .entry(idx)
            .or_insert_with(|| vec![0u8; BLOCK as usize].into_boxed_slice());
        if let Some(dst) = block.get_mut(inner..inner + data.len()) {
            dst.copy_from_slice(data);
        }
    }

    /// How many bytes from `pos` stay inside one block and the volume.
    fn span(&self, want: usize) -> usize {
        let to_block_end = BLOCK - self.pos % BLOCK;
        let to_end = self.len.saturating_sub(self.pos);
        // Both bounds are ≤ BLOCK, so the cast cannot truncate.
        (want as u64).min(to_block_end).min(to_end) as usize
    }
}

impl Read for MemVolume {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.span(buf.len());
        if let Some(out) = buf.get_mut(..n) {
            self.read_at(self.pos, out);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for MemVolume {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !buf.is_empty() && self.pos >= self.len {
            // A file system writing past its own end is a bug, not a full disk.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "write past the end of the partition",
            ));
        }
        let n = self.span(buf.len());
        if let Some(data) = buf.get(..n) {
            self.write_at(self.pos, data);
        }
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for MemVolume {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_zero_until_written_and_spans_blocks() {
        let mut v = MemVolume::new(5 * BLOCK + 100);
        let mut buf = vec![1u8; 10];
        v.read_exact(&mut buf).unwrap();
        assert_eq!(buf, vec![0; 10]);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 + 1).collect();
        v.seek(SeekFrom::Start(BLOCK - 7)).unwrap();
        v.write_all(&data).unwrap();
        v.seek(SeekFrom::Start(BLOCK - 7)).unwrap();
        let mut back = vec![0u8; data.len()];
        v.read_exact(&mut back).unwrap();
        assert_eq!(back, data);
        // Writing up to the end works, past it fails, reading at the end is EOF.
        v.seek(SeekFrom::End(-4)).unwrap();
        v.write_all(&[9; 4]).unwrap();
        assert!(v.write_all(&[9]).is_err());
        assert_eq!(v.read(&mut buf).unwrap(), 0);
        let blocks: Vec<u64> = v.nonzero_blocks().map(|(o, _)| o).collect();
        assert_eq!(blocks, (0..6).map(|i| i * BLOCK).collect::<Vec<_>>());
        assert_eq!(v.nonzero_blocks().last().unwrap().1.len(), 100);
        assert!(v.seek(SeekFrom::Current(-1_000_000)).is_err());
    }

    #[test]
    fn zero_blocks_are_not_reported() {
        let mut v = MemVolume::new(4 * BLOCK);
        v.seek(SeekFrom::Start(2 * BLOCK)).unwrap();
        v.write_all(&vec![0u8; BLOCK as usize]).unwrap();
        assert_eq!(v.nonzero_blocks().count(), 0);
    }
}
