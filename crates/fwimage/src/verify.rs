//! Full verification of an image in one pass: signature, every index page,
//! every chunk (stored and raw hashes), the CRC chain and the padding.

use crate::{ChunkReader, ImageHead, ImageSource, KeyId, Result};

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
        // Batches of several chunks: one read each, hashed on two threads.
        let cs = self.header.chunk_size() as usize;
        let mut page = crate::crc::PageBuf::new(cs.max(2 << 20));
        let buf = page.as_mut();
        let (mut chunks, mut raw_bytes) = (0u64, 0u64);
        loop {
            let batch = rd.next_batch(buf)?;
            if batch.is_empty() {
                break;
            }
            for c in batch {
                chunks += 1;
                raw_bytes += c.raw_len as u64;
                progress(c.raw_len as u64);
            }
        }
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
