//! What a user flashes: `sdcard.img.bmap` (the block map of `sdcard.img`,
//! see `diskimage::bmap`) and `sdcard.img.zst`, the image compressed for
//! download. Debian's bmaptool (bookworm's 3.6 reads `.gz`, `.bz2`, `.xz`,
//! `.lz4`, `.lzo` and `.zst`) writes either through the map:
//! `bmaptool copy --bmap sdcard.img.bmap sdcard.img.zst /dev/sdX`.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use crate::Error;

/// zstd level of `sdcard.img.zst`: the holes compress to nothing at any
/// level, and 3 keeps the build fast.
const LEVEL: i32 = 3;

/// `<image>.bmap`.
pub fn bmap_path(image: &Path) -> PathBuf {
    let mut p = image.as_os_str().to_owned();
    p.push(".bmap");
    PathBuf::from(p)
}

/// `<image>.zst`.
pub fn zst_path(image: &Path) -> PathBuf {
    let mut p = image.as_os_str().to_owned();
    p.push(".zst");
    PathBuf::from(p)
}

/// Writes `<image>.bmap` mapping the byte ranges `written`.
pub fn write_bmap(image: &Path, written: &[(u64, u64)]) -> Result<(), Error> {
    diskimage::bmap::write(image, written, &bmap_path(image))?;
    Ok(())
}

/// Writes `<image>.zst`: one zstd frame with its content size and
/// checksum, the same bytes for the same image (single-threaded encoder,
/// fixed level).
pub fn write_zst(image: &Path) -> Result<PathBuf, Error> {
    let out = zst_path(image);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let src = std::fs::File::open(image).map_err(io(image))?;
    let len = src.metadata().map_err(io(image))?.len();
    let dst = std::fs::File::create(&out).map_err(io(&out))?;
    let mut enc = zstd::stream::Encoder::new(dst, LEVEL).map_err(io(&out))?;
    enc.include_checksum(true).map_err(io(&out))?;
    enc.include_contentsize(true).map_err(io(&out))?;
    enc.set_pledged_src_size(Some(len)).map_err(io(&out))?;
    std::io::copy(&mut BufReader::with_capacity(1 << 20, src), &mut enc).map_err(io(&out))?;
    let mut dst = enc.finish().map_err(io(&out))?;
    dst.flush()
        .and_then(|()| dst.sync_all())
        .map_err(io(&out))?;
    Ok(out)
}
