//! Archive paths: the names entries carry inside the newc archive.
//!
//! Every destination a caller or recipe gives goes through
//! [`ArchivePath::new`], which is the only way to get one. That is where
//! "nothing escapes the root" is enforced, so the writer never has to think
//! about it again.

use crate::Error;

/// Linux `PATH_MAX`, including the terminating NUL. The kernel's initramfs
/// unpacker refuses longer names (`name_len > PATH_MAX`) and silently skips
/// longer symlink bodies, so we refuse them up front.
pub const PATH_MAX: usize = 4096;
/// Linux `NAME_MAX`: the longest single component a filesystem accepts.
pub const NAME_MAX: usize = 255;

/// A normalised, relative, UTF-8 path inside the archive: no leading `/`,
/// no `.` or `..` components, no empty components, no NUL, at most
/// [`PATH_MAX`]` - 1` bytes. Ordering is byte order, under which a
/// directory always sorts before everything inside it (a parent is a prefix
/// of its children).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArchivePath(String);

impl ArchivePath {
    /// Normalises a destination such as `/init`, `./etc//fwpack/` or
    /// `usr/lib/../lib/x`. Absolute paths are taken relative to the archive
    /// root; `..` is resolved lexically and is an error if it would climb
    /// above the root. The root itself is not a valid entry name.
    pub fn new(dst: &str) -> Result<Self, Error> {
        let invalid = |reason: &'static str| Error::InvalidPath {
            dst: dst.to_owned(),
            reason,
        };
        if dst.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        let mut parts: Vec<&str> = Vec::new();
        for comp in dst.split('/') {
            match comp {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(Error::EscapesRoot {
                            dst: dst.to_owned(),
                        });
                    }
                }
                c => {
                    if c.len() > NAME_MAX {
                        return Err(Error::NameTooLong {
                            path: dst.to_owned(),
                            len: c.len(),
                            max: NAME_MAX,
                            what: "component",
                        });
                    }
                    parts.push(c);
                }
            }
        }
        if parts.is_empty() {
            return Err(invalid("names the archive root"));
        }
        let joined = parts.join("/");
        if joined.len() >= PATH_MAX {
            return Err(Error::NameTooLong {
                path: dst.to_owned(),
                len: joined.len(),
                max: PATH_MAX - 1,
                what: "path",
            });
        }
        if joined == crate::newc::TRAILER {
            return Err(invalid("is the newc end-of-archive marker"));
        }
        Ok(Self(joined))
    }

    /// The name as stored in the archive (no leading `/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent directory, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<ArchivePath> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| ArchivePath(parent.to_owned()))
    }

    /// Appends a relative path (itself normalised; `..` may not climb out of
    /// `self`).
    pub fn join(&self, rel: &str) -> Result<ArchivePath, Error> {
        let child = ArchivePath::new(rel)?;
        ArchivePath::new(&format!("{}/{}", self.0, child.0))
    }
}

impl std::fmt::Display for ArchivePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        for (input, want) in [
            ("/init", "init"),
            ("init", "init"),
            ("./etc//fwpack/", "etc/fwpack"),
            ("/usr/lib/../lib/x", "usr/lib/x"),
            ("a/./b", "a/b"),
        ] {
            assert_eq!(ArchivePath::new(input).unwrap().as_str(), want, "{input}");
        }
    }

    #[test]
    fn refuses_escapes_and_junk() {
        assert!(matches!(
            ArchivePath::new("../etc/passwd"),
            Err(Error::EscapesRoot { .. })
        ));
        assert!(matches!(
            ArchivePath::new("/a/../../b"),
            Err(Error::EscapesRoot { .. })
        ));
        for bad in ["/", "", ".", "a/..", "x\0y", "TRAILER!!!"] {
            assert!(
                matches!(ArchivePath::new(bad), Err(Error::InvalidPath { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn length_limits() {
        let comp = "c".repeat(NAME_MAX);
        assert!(ArchivePath::new(&comp).is_ok());
        assert!(matches!(
            ArchivePath::new(&format!("{comp}x")),
            Err(Error::NameTooLong {
                what: "component",
                ..
            })
        ));
        // 16 components of 255 + 15 slashes = 4095 bytes: the longest legal name.
        let longest = vec![comp.as_str(); 16].join("/");
        assert_eq!(longest.len(), PATH_MAX - 1);
        assert!(ArchivePath::new(&longest).is_ok());
        assert!(matches!(
            ArchivePath::new(&format!("{longest}/x")),
            Err(Error::NameTooLong { what: "path", .. })
        ));
    }

    #[test]
    fn parents_sort_before_children() {
        let mut v: Vec<ArchivePath> = ["a/b", "a-b", "a", "a/b/c", "a.b"]
            .iter()
            .map(|s| ArchivePath::new(s).unwrap())
            .collect();
        v.sort();
        let pos = |s: &str| v.iter().position(|p| p.as_str() == s).unwrap();
        assert!(pos("a") < pos("a/b") && pos("a/b") < pos("a/b/c"));
    }
}
