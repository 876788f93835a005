//! Compression of the finished archive.
//!
//! Every codec here must be one the kernel can unpack an initramfs with
//! (`CONFIG_RD_GZIP`, `CONFIG_RD_ZSTD`; Debian's 6.1 kernels enable both)
//! and must be deterministic: same input and level, same bytes, whatever
//! the number of threads.

use std::io::{self, Write};

use crate::pgzip::ParGzEncoder;

/// A compression format, as detected in an existing archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Zstd,
}

impl Codec {
    /// Detects the format from the first bytes of a stream. Formats the
    /// kernel supports but this crate does not decode are named in the error.
    pub fn sniff(head: &[u8]) -> Result<Codec, String> {
        let known = [
            (&b"070701"[..], Ok(Codec::None)),
            (&b"070702"[..], Ok(Codec::None)),
            (&[0x1f, 0x8b][..], Ok(Codec::Gzip)),
            (&[0x28, 0xb5, 0x2f, 0xfd][..], Ok(Codec::Zstd)),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0][..], Err("xz")),
            (&b"BZh"[..], Err("bzip2")),
            (&[0x5d, 0, 0][..], Err("lzma")),
            (&[0x89, b'L', b'Z', b'O'][..], Err("lzo")),
            (&[0x02, 0x21, 0x4c, 0x18][..], Err("lz4")),
        ];
        for (magic, codec) in known {
            if head.starts_with(magic) {
                return codec.map_err(|name| {
                    format!("archive is {name}-compressed; only gzip and zstd are decoded here")
                });
            }
        }
        if head.is_empty() {
            return Err("empty input, not a newc archive".into());
        }
        Err(format!(
            "not a newc archive (starts with {:02x?})",
            head.get(..head.len().min(6)).unwrap_or_default()
        ))
    }
}

/// How to compress a new archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain newc.
    None,
    /// gzip, level 0–9 (`CONFIG_RD_GZIP`). Header has mtime 0 and no name;
    /// deflated in parallel blocks ([`crate::pgzip`]).
    Gzip { level: u32 },
    /// zstd, level 1–19 (`CONFIG_RD_ZSTD`). Levels above 19 need windows
    /// larger than 8 MiB, which the kernel must allocate at boot; refused.
    Zstd { level: i32 },
}

impl Default for Compression {
    /// gzip -9: the universally supported choice, at the ratio people compare to.
    fn default() -> Self {
        Compression::Gzip { level: 9 }
    }
}

impl Compression {
    /// Builds a setting from a codec name and optional level, validating the level.
    pub fn from_name(name: &str, level: Option<i32>) -> Result<Self, String> {
        match name {
            "none" => match level {
                None => Ok(Compression::None),
                Some(_) => Err("--level makes no sense without compression".into()),
            },
            "gzip" => match level.unwrap_or(9) {
                l @ 0..=9 => Ok(Compression::Gzip { level: l as u32 }),
                l => Err(format!("gzip level {l} is outside 0..=9")),
            },
            "zstd" => match level.unwrap_or(19) {
                l @ 1..=19 => Ok(Compression::Zstd { level: l }),
                l => Err(format!("zstd level {l} is outside 1..=19")),
            },
            other => Err(format!("unknown compression {other:?} (none, gzip, zstd)")),
        }
    }

    pub fn codec(&self) -> Codec {
        match self {
            Compression::None => Codec::None,
            Compression::Gzip { .. } => Codec::Gzip,
            Compression::Zstd { .. } => Codec::Zstd,
        }
    }

    /// A compressing writer on `jobs` threads (at least 1). The bytes do
    /// not depend on `jobs`: gzip is cut into fixed blocks ([`crate::pgzip`]),
    /// and zstd always runs in its multithreaded mode, whose output is the
    /// same for any worker count of one or more (it differs from zstd's
    /// single-threaded mode, which is therefore never used).
    pub(crate) fn encoder<W: Write>(&self, w: W, jobs: usize) -> io::Result<Encoder<W>> {
        let jobs = jobs.max(1);
        Ok(match *self {
            Compression::None => Encoder::None(w),
            Compression::Gzip { level } => Encoder::Gzip(ParGzEncoder::new(w, level, jobs)?),
            Compression::Zstd { level } => {
                let mut e = zstd::Encoder::new(w, level.clamp(1, 19))?;
                e.include_checksum(true)?;
                e.multithread(u32::try_from(jobs).unwrap_or(u32::MAX))?;
                Encoder::Zstd(e)
            }
        })
    }
}

/// A compressing writer; [`Encoder::finish`] must be called to complete the stream.
pub(crate) enum Encoder<W: Write> {
    None(W),
    Gzip(ParGzEncoder<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(mut w) => {
                w.flush()?;
                Ok(w)
            }
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing() {
        assert_eq!(Codec::sniff(b"070701000"), Ok(Codec::None));
        assert_eq!(Codec::sniff(&[0x1f, 0x8b, 8]), Ok(Codec::Gzip));
        assert!(Codec::sniff(b"\xfd7zXZ\0").unwrap_err().contains("xz"));
        assert!(Codec::sniff(b"").is_err());
        assert!(Codec::sniff(b"hello").unwrap_err().contains("not a newc"));
    }

    #[test]
    fn gzip_header_is_fixed() {
        let mut e = Compression::Gzip { level: 6 }
            .encoder(Vec::new(), 2)
            .unwrap();
        e.write_all(b"x").unwrap();
        let out = e.finish().unwrap();
        // magic, CM=8, FLG=0 (no name), MTIME=0, XFL, OS=3
        assert_eq!(&out[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        assert_eq!(out[9], 3);
    }

    #[test]
    fn levels_are_validated() {
        assert_eq!(
            Compression::from_name("gzip", None),
            Ok(Compression::Gzip { level: 9 })
        );
        assert!(Compression::from_name("gzip", Some(10)).is_err());
        assert!(Compression::from_name("zstd", Some(22)).is_err());
        assert!(Compression::from_name("none", Some(1)).is_err());
        assert!(Compression::from_name("lz4", None).is_err());
    }
}
