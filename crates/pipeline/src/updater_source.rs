//! Which device updater goes into the initramfs, and what the build
//! report and `manifest.json` say about it.

use std::path::{Path, PathBuf};

use board::Board;
use serde::Serialize;

use crate::updater_build::Flavor;
use crate::{Error, Event};

/// Where the updater comes from. The CLI decides (docs/ARCHITECTURE.md,
/// "Where fwpack build gets the updater"); the pipeline only records it.
#[derive(Clone, Debug)]
pub enum Updater {
    /// A file the user named (`--updater`).
    File(PathBuf),
    /// The one shipped with this fwpack for the board's target.
    Shipped(PathBuf),
    /// Built now with cargo from the fwpack source tree at `workspace`.
    Build { workspace: PathBuf },
}

/// The updater that went in, as `manifest.json` names it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct UpdaterInfo {
    /// `path` (given), `shipped` or `built`.
    pub source: &'static str,
    pub path: PathBuf,
    pub sha256: String,
    /// From the version mark compiled into fwpack-updater; `None` for a
    /// binary without one (older, or not ours).
    pub version: Option<String>,
}

/// Precedes the version in every fwpack-updater binary (see its main.rs).
pub const VERSION_MARK: &[u8] = b"fwpack-updater-version=";

/// The version mark's value: 1 to 64 printable ASCII bytes after
/// [`VERSION_MARK`], ended by a NUL. The first occurrence that has one.
pub fn version_in(bytes: &[u8]) -> Option<String> {
    let mut from = 0;
    while let Some(at) = bytes
        .get(from..)?
        .windows(VERSION_MARK.len())
        .position(|w| w == VERSION_MARK)
    {
        let start = from + at + VERSION_MARK.len();
        let rest = bytes.get(start..)?;
        let len = rest
            .iter()
            .take(65)
            .take_while(|b| b.is_ascii_graphic())
            .count();
        if (1..=64).contains(&len) && rest.get(len) == Some(&0) {
            return rest
                .get(..len)
                .map(|v| String::from_utf8_lossy(v).into_owned());
        }
        from = start;
    }
    None
}

/// Beside a shipped `fwpack-updater` (the slot's, with the network
/// client), the release archive's bootstrap build.
pub const SHIPPED_BOOTSTRAP: &str = "fwpack-updater-bootstrap";

/// The binary of `flavor` to use: the given file (one binary serves both),
/// the shipped one (its bootstrap sibling for the bootstrap, when there is
/// one), or a fresh build.
pub(crate) fn resolve(
    board: &Board,
    updater: &Updater,
    flavor: Flavor,
    on: &mut dyn FnMut(Event),
) -> Result<(PathBuf, &'static str), Error> {
    Ok(match updater {
        Updater::File(p) => (p.clone(), "path"),
        Updater::Shipped(p) => {
            let core = p.with_file_name(SHIPPED_BOOTSTRAP);
            match flavor {
                Flavor::Bootstrap if !board.updater.bootstrap_net && core.is_file() => {
                    (core, "shipped")
                }
                _ => (p.clone(), "shipped"),
            }
        }
        Updater::Build { workspace } => (
            crate::updater_build::build(board, workspace, flavor, on)?,
            "built",
        ),
    })
}

pub(crate) fn describe(path: &Path, source: &'static str) -> Result<UpdaterInfo, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(UpdaterInfo {
        source,
        path: path.to_path_buf(),
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
        version: version_in(&bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_mark_is_found_and_bounded() {
        let mut bin = b"\x7fELF junk".to_vec();
        // A bare copy of the prefix followed by other text comes first.
        bin.extend_from_slice(VERSION_MARK);
        bin.extend_from_slice(b"unknown command\0");
        bin.extend_from_slice(VERSION_MARK);
        bin.extend_from_slice(b"0.1.0\0more");
        assert_eq!(version_in(&bin).as_deref(), Some("0.1.0"));
        assert_eq!(version_in(b"no mark here"), None);
        let mut long = VERSION_MARK.to_vec();
        long.extend(std::iter::repeat_n(b'9', 1000));
        long.push(0);
        assert_eq!(version_in(&long), None);
        let mut max = VERSION_MARK.to_vec();
        max.extend(std::iter::repeat_n(b'9', 64));
        max.push(0);
        assert_eq!(version_in(&max).map(|v| v.len()), Some(64));
        let mut empty = VERSION_MARK.to_vec();
        empty.push(0);
        assert_eq!(version_in(&empty), None);
        let mut cut = VERSION_MARK.to_vec();
        cut.extend_from_slice(b"0.1");
        assert_eq!(version_in(&cut), None);
    }
}
