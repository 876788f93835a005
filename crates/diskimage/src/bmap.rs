//! Block maps for `bmaptool` (bmap-tools' format 2.0): which 4 KiB blocks
//! of an image hold data, each mapped range with its SHA-256, so `bmaptool
//! copy IMAGE DEVICE` writes only those blocks and checks each range as it
//! goes. The ranges are the ones the image writer really wrote (tables,
//! FAT blocks, slot contents, the updater's state area), not a guess from
//! zero runs; the holes between them read as zeros in the image.
//!
//! The file is XML as bmap-tools writes it; `BmapFileChecksum` is the
//! SHA-256 of the whole file with that field's 64 hex digits set to `0`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::Error;

/// Block size of the maps we write (bmaptool's default too).
pub const BLOCK_SIZE: u64 = 4096;

/// Sorts `[start, end)` ranges and merges those that overlap or touch.
pub fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.retain(|(s, e)| e > s);
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// What [`write`] mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub image_size: u64,
    pub blocks: u64,
    pub mapped_blocks: u64,
    /// Inclusive block ranges.
    pub ranges: Vec<(u64, u64)>,
}

/// Writes the block map of `image` (whose written byte ranges are
/// `written`) to `out`, atomically. Each range is read back from the image
/// for its checksum, so the map describes the file as it is on disk.
pub fn write(image: &Path, written: &[(u64, u64)], out: &Path) -> Result<Summary, Error> {
    let mut f = std::fs::File::open(image)
        .map_err(|e| Error::io(format!("opening {}", image.display()), e))?;
    let image_size = f
        .metadata()
        .map_err(|e| Error::io(format!("reading {}", image.display()), e))?
        .len();
    let blocks = image_size.div_ceil(BLOCK_SIZE);
    // Byte ranges widened to whole blocks, then merged again: two writes
    // into one block map that block once.
    let ranges: Vec<(u64, u64)> = merge(
        written
            .iter()
            .map(|&(s, e)| (s / BLOCK_SIZE, e.min(image_size).div_ceil(BLOCK_SIZE)))
            .collect(),
    )
    .into_iter()
    .map(|(first, end)| (first, end - 1))
    .collect();
    let mapped_blocks: u64 = ranges.iter().map(|(a, b)| b - a + 1).sum();

    let mut body = String::new();
    let mut buf = vec![0u8; 1 << 20];
    for &(first, last) in &ranges {
        let start = first * BLOCK_SIZE;
        let end = ((last + 1) * BLOCK_SIZE).min(image_size);
        let mut hash = Sha256::new();
        f.seek(SeekFrom::Start(start))
            .map_err(|e| Error::io(format!("reading {}", image.display()), e))?;
        let mut left = end - start;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            let chunk = buf.get_mut(..n).unwrap_or_default();
            f.read_exact(chunk)
                .map_err(|e| Error::io(format!("reading {}", image.display()), e))?;
            hash.update(&*chunk);
            left -= n as u64;
        }
        let range = if first == last {
            format!("{first}")
        } else {
            format!("{first}-{last}")
        };
        body.push_str(&format!(
            "        <Range chksum=\"{}\"> {range} </Range>\n",
            hex(&hash.finalize())
        ));
    }

    let zeros = "0".repeat(64);
    let render = |checksum: &str| {
        format!(
            "<?xml version=\"1.0\" ?>\n\
             <!-- Block map of {name}, written by fwpack: bmaptool copy {name} DEVICE\n     \
             writes the {mapped_blocks} mapped blocks of {blocks} and checks each range. -->\n\
             <bmap version=\"2.0\">\n    \
             <ImageSize> {image_size} </ImageSize>\n    \
             <BlockSize> {BLOCK_SIZE} </BlockSize>\n    \
             <BlocksCount> {blocks} </BlocksCount>\n    \
             <MappedBlocksCount> {mapped_blocks} </MappedBlocksCount>\n    \
             <ChecksumType> sha256 </ChecksumType>\n    \
             <BmapFileChecksum> {checksum} </BmapFileChecksum>\n    \
             <BlockMap>\n{body}    </BlockMap>\n\
             </bmap>\n",
            name = image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
                .replace("--", "-"),
        )
    };
    let checksum = hex(&Sha256::digest(render(&zeros).as_bytes()));
    write_atomic(out, render(&checksum).as_bytes())?;
    Ok(Summary {
        image_size,
        blocks,
        mapped_blocks,
        ranges,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a published file: a temporary beside it (0666 minus the umask),
/// synced, renamed.
pub(crate) fn write_atomic(out: &Path, data: &[u8]) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".fwpack-")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("creating a temporary file in {}", dir.display()), e))?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io(format!("writing {}", out.display()), e))?;
    tmp.persist(out)
        .map_err(|e| Error::io(format!("renaming into {}", out.display()), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn merge_sorts_and_joins_touching_ranges() {
        assert_eq!(
            merge(vec![(10, 20), (0, 5), (5, 7), (15, 30), (40, 40), (50, 60)]),
            vec![(0, 7), (10, 30), (50, 60)]
        );
    }
}
