//! The chained CRC32C: block `i`'s value is the CRC32C of every byte from
//! the start of the first segment through the end of block `i`, i.e. each
//! block's CRC is seeded with the previous block's value. Reordering,
//! splicing or dropping blocks therefore changes every later entry, and a
//! device can check any single block given only its predecessor's entry
//! (which is what resume needs).

/// Granularity of the CRC chain, in bytes. Also the alignment of segment
/// data inside the file.
pub const BLOCK_SIZE: usize = 4096;

/// A zeroed buffer of `len` bytes starting on a 4096-byte boundary.
/// `read(2)` into a buffer that starts a few bytes into a page is several
/// times slower on the machines we measured (docs/BENCHMARKS.md), and
/// reading the image is most of what stamp and verify do.
pub(crate) struct PageBuf {
    store: Vec<u8>,
    off: usize,
    len: usize,
}

impl PageBuf {
    pub(crate) fn new(len: usize) -> Self {
        let store = vec![0u8; len + BLOCK_SIZE];
        let off = store.as_ptr().align_offset(BLOCK_SIZE).min(BLOCK_SIZE);
        PageBuf { store, off, len }
    }

    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        &mut self.store[self.off..self.off + self.len]
    }
}

/// Running state of a CRC chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrcChain {
    value: u32,
}

impl CrcChain {
    /// A chain that continues after a block whose entry was `prev`
    /// (0 for the very first block of an image).
    pub fn resume(prev: u32) -> Self {
        Self { value: prev }
    }

    /// Folds one block in and returns its table entry.
    pub fn push(&mut self, block: &[u8]) -> u32 {
        self.value = crc32c::crc32c_append(self.value, block);
        self.value
    }

    pub fn value(&self) -> u32 {
        self.value
    }
}

/// Computes the chain entries for `data`, continuing from `prev`. Intended
/// for tests and benchmarks; the writer and verifier stream instead.
pub fn crc_chain(prev: u32, data: &[u8]) -> Vec<u32> {
    let mut chain = CrcChain::resume(prev);
    data.chunks(BLOCK_SIZE).map(|b| chain.push(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_equals_prefix_crc() {
        let data: Vec<u8> = (0..3 * BLOCK_SIZE + 100).map(|i| (i * 7) as u8).collect();
        let chain = crc_chain(0, &data);
        assert_eq!(chain.len(), 4);
        for (i, entry) in chain.iter().enumerate() {
            let end = ((i + 1) * BLOCK_SIZE).min(data.len());
            assert_eq!(*entry, crc32c::crc32c(&data[..end]));
        }
    }

    #[test]
    fn swapping_blocks_changes_chain() {
        let mut data = vec![0u8; 2 * BLOCK_SIZE];
        data[0] = 1;
        let a = crc_chain(0, &data);
        let (x, y) = data.split_at_mut(BLOCK_SIZE);
        x.swap_with_slice(y);
        let b = crc_chain(0, &data);
        assert_ne!(a, b);
    }
}
