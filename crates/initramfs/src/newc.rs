//! Low-level newc ("070701") record writer.
//!
//! Header encoding is the `cpio` crate's (`cpio::newc::Builder`). It is
//! wrapped rather than used bare because, as of 0.4, it:
//! - takes the data size as `u32` with no way to report that a real file
//!   is bigger (callers would silently truncate with `as u32`);
//! - accepts any name, including ones the kernel rejects (> `PATH_MAX`) or
//!   the end marker `TRAILER!!!`;
//! - skips the data padding in `finish()` when fewer bytes than declared
//!   were written, producing a corrupt archive without an error — so a
//!   source file that shrank while we read it would go unnoticed;
//! - knows nothing about hard links (nlink/ino bookkeeping and which link
//!   carries the data), which lives in [`crate::tree`].
//!
//! This writer checks all of that and counts every byte it emits.

use std::io::{self, Read, Write};
use std::path::Path;

use crate::path::PATH_MAX;
use crate::Error;

/// Name of the end-of-archive record.
pub const TRAILER: &str = "TRAILER!!!";
/// Largest data size a newc header can declare (`c_filesize` is 8 hex digits).
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;
/// Fixed part of a newc header: magic + 13 eight-digit hex fields.
pub const HEADER_LEN: u64 = 110;

/// File type bits of `st_mode`.
pub mod mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFIFO: u32 = 0o010000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFBLK: u32 = 0o060000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFLNK: u32 = 0o120000;
    pub const S_IFSOCK: u32 = 0o140000;
}

/// One record's metadata. `size` is the number of data bytes that follow
/// (for a symlink: the target's length).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub ino: u32,
    /// File type and permission bits, as in `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub size: u64,
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

/// Rounds `n` up to newc's 4-byte alignment.
pub(crate) fn align4(n: u64) -> u64 {
    n.div_ceil(4).saturating_mul(4)
}

/// Bytes a record occupies: header + name + NUL padded to 4, data padded to 4.
pub fn record_len(name_len: usize, size: u64) -> u64 {
    align4(HEADER_LEN + name_len as u64 + 1) + align4(size)
}

/// Streams newc records into `W`. Call [`Writer::finish`] to write the
/// trailer; dropping the writer without it leaves an incomplete archive,
/// which is why the file-level API writes to a temporary file.
pub struct Writer<W: Write> {
    inner: W,
    written: u64,
    buf: Vec<u8>,
}

impl<W: Write> Writer<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            written: 0,
            buf: vec![0; 256 * 1024],
        }
    }

    /// Bytes of archive emitted so far (before any compression).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Appends a record whose data is exactly `header.size` bytes read from
    /// `data`. `src` names the data's origin in errors. A source that ends
    /// early or has bytes left over is an error ([`Error::SourceChanged`]).
    pub fn append(
        &mut self,
        header: &Header,
        mut data: impl Read,
        src: &Path,
    ) -> Result<(), Error> {
        let size = check_header(header, src)?;
        let mut out = cpio_builder(header).write(&mut self.inner, size);
        let mut remaining = header.size;
        while remaining > 0 {
            let want =
                usize::try_from(remaining.min(self.buf.len() as u64)).unwrap_or(self.buf.len());
            let chunk = self.buf.get_mut(..want).unwrap_or_default();
            let n = match data.read(chunk) {
                Ok(0) => {
                    return Err(Error::SourceChanged {
                        path: shown(&header.name),
                        src: src.to_owned(),
                        expected: header.size,
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Error::Read {
                        path: src.to_owned(),
                        source,
                    })
                }
            };
            out.write_all(chunk.get(..n).unwrap_or_default())
                .map_err(Error::Write)?;
            remaining -= n as u64;
        }
        // A file that grew since it was measured would otherwise be cut
        // silently at the old size.
        let mut probe = [0u8; 1];
        loop {
            match data.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => {
                    return Err(Error::SourceChanged {
                        path: shown(&header.name),
                        src: src.to_owned(),
                        expected: header.size,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Read {
                        path: src.to_owned(),
                        source,
                    })
                }
            }
        }
        // Also writes the header when there was no data to trigger it.
        out.finish().map_err(Error::Write)?;
        self.written += record_len(header.name.len(), header.size);
        Ok(())
    }

    /// Appends a record whose data is held in memory.
    pub fn append_bytes(&mut self, header: &Header, data: &[u8]) -> Result<(), Error> {
        let mut h = header.clone();
        h.size = data.len() as u64;
        self.append(&h, data, Path::new("<memory>"))
    }

    /// Writes the `TRAILER!!!` record, flushes, and returns the inner writer.
    pub fn finish(mut self) -> Result<W, Error> {
        cpio::newc::trailer(&mut self.inner).map_err(Error::Write)?;
        self.inner.flush().map_err(Error::Write)?;
        Ok(self.inner)
    }
}

fn check_header(h: &Header, src: &Path) -> Result<u32, Error> {
    if h.name.is_empty() || h.name.contains('\0') || h.name == TRAILER {
        return Err(Error::InvalidPath {
            dst: shown(&h.name),
            reason: "is not a valid newc record name",
        });
    }
    if h.name.len() >= PATH_MAX {
        return Err(Error::NameTooLong {
            path: shown(&h.name),
            len: h.name.len(),
            max: PATH_MAX - 1,
            what: "path",
        });
    }
    u32::try_from(h.size).map_err(|_| Error::FileTooLarge {
        path: shown(&h.name),
        src: src.to_owned(),
        size: h.size,
    })
}

/// Entry names in errors look like paths in the booted system: `/init`.
fn shown(name: &str) -> String {
    format!("/{}", name.trim_start_matches('/'))
}

fn cpio_builder(h: &Header) -> cpio::newc::Builder {
    cpio::newc::Builder::new(&h.name)
        .ino(h.ino)
        .mode(h.mode)
        .uid(h.uid)
        .gid(h.gid)
        .nlink(h.nlink)
        .mtime(h.mtime)
        .rdev_major(h.rdev_major)
        .rdev_minor(h.rdev_minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: u64) -> Header {
        Header {
            name: name.into(),
            ino: 1,
            mode: mode::S_IFREG | 0o644,
            nlink: 1,
            size,
            ..Header::default()
        }
    }

    #[test]
    fn layout_is_padded_and_counted() {
        let mut w = Writer::new(Vec::new());
        w.append_bytes(&header("a", 0), b"hello").unwrap();
        let n = w.bytes_written();
        let out = w.finish().unwrap();
        assert_eq!(n, record_len(1, 5));
        // header 110 + "a\0" = 112 (aligned), data 5 -> 8.
        assert_eq!(n, 120);
        assert_eq!(&out[..6], b"070701");
        assert_eq!(&out[112..117], b"hello");
        assert_eq!(&out[117..120], b"\0\0\0");
        assert_eq!(out.len() as u64, n + record_len(TRAILER.len(), 0));
        assert!(out.len() % 4 == 0);
    }

    #[test]
    fn short_and_long_sources_are_errors() {
        let mut w = Writer::new(Vec::new());
        let e = w
            .append(&header("f", 10), &b"short"[..], Path::new("/src/f"))
            .unwrap_err();
        assert!(
            matches!(e, Error::SourceChanged { expected: 10, .. }),
            "{e}"
        );
        let mut w = Writer::new(Vec::new());
        let e = w
            .append(&header("f", 2), &b"longer"[..], Path::new("/src/f"))
            .unwrap_err();
        assert!(matches!(e, Error::SourceChanged { .. }), "{e}");
    }

    #[test]
    fn size_and_name_limits() {
        let mut w = Writer::new(io::sink());
        let e = w
            .append(
                &header("big", MAX_FILE_SIZE + 1),
                io::empty(),
                Path::new("big"),
            )
            .unwrap_err();
        assert!(matches!(e, Error::FileTooLarge { .. }), "{e}");
        let e = w
            .append_bytes(&header(&"n".repeat(PATH_MAX), 0), b"")
            .unwrap_err();
        assert!(matches!(e, Error::NameTooLong { .. }), "{e}");
        let e = w.append_bytes(&header(TRAILER, 0), b"").unwrap_err();
        assert!(matches!(e, Error::InvalidPath { .. }), "{e}");
    }

    #[test]
    fn write_errors_surface() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = Writer::new(Full);
        assert!(matches!(
            w.append_bytes(&header("a", 0), b"x"),
            Err(Error::Write(_))
        ));
        assert!(matches!(Writer::new(Full).finish(), Err(Error::Write(_))));
    }
}
