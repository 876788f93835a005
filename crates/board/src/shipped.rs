//! The board configs fwpack ships, compiled into the binary so that a
//! release binary copied anywhere knows its boards without a source tree.
//! A configs directory (`--configs`, `FWPACK_CONFIGS`) or a single file
//! (`--config`) still replaces them.

use std::path::{Path, PathBuf};

use crate::{Board, Error};

/// (name, YAML text) of every file in `configs/`, sorted by name. A test
/// checks this list against the directory, so a new board cannot be
/// forgotten here.
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "qemu-aarch64",
        include_str!("../../../configs/qemu-aarch64.yaml"),
    ),
    (
        "qemu-riscv64",
        include_str!("../../../configs/qemu-riscv64.yaml"),
    ),
    (
        "qemu-x86_64",
        include_str!("../../../configs/qemu-x86_64.yaml"),
    ),
    (
        "qemu-x86_64-efi",
        include_str!("../../../configs/qemu-x86_64-efi.yaml"),
    ),
    (
        "rpi-zero2w",
        include_str!("../../../configs/rpi-zero2w.yaml"),
    ),
    (
        "visionfive2",
        include_str!("../../../configs/visionfive2.yaml"),
    ),
];

/// Where board configs come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Configs {
    /// The ones compiled into this binary ([`SHIPPED`]).
    Shipped,
    /// `<dir>/<name>.yaml`.
    Dir(PathBuf),
}

impl Configs {
    /// `dir` if given, else the shipped configs.
    pub fn from_dir(dir: Option<PathBuf>) -> Self {
        dir.map_or(Configs::Shipped, Configs::Dir)
    }

    /// Board names, sorted.
    pub fn list(&self) -> Result<Vec<String>, Error> {
        match self {
            Configs::Shipped => Ok(SHIPPED.iter().map(|(n, _)| n.to_string()).collect()),
            Configs::Dir(dir) => crate::list(dir),
        }
    }

    /// The YAML text of board `name` and the path it is known by in
    /// messages.
    pub fn text(&self, name: &str) -> Result<(String, PathBuf), Error> {
        let known = self.list()?;
        if !known.iter().any(|k| k == name) {
            return Err(Error::UnknownBoard {
                name: name.to_string(),
                known,
            });
        }
        match self {
            Configs::Shipped => {
                let text = SHIPPED
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, t)| t.to_string())
                    .unwrap_or_default();
                Ok((text, shipped_path(name)))
            }
            Configs::Dir(dir) => {
                let path = dir.join(format!("{name}.yaml"));
                let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
                Ok((text, path))
            }
        }
    }

    /// Loads and validates board `name`.
    pub fn find(&self, name: &str) -> Result<Board, Error> {
        let (text, path) = self.text(name)?;
        Board::parse(&text, &path)
    }
}

/// How messages name a compiled-in config: the file it was compiled from,
/// marked as built in so nobody looks for it on disk.
fn shipped_path(name: &str) -> PathBuf {
    Path::new("(built in)")
        .join("configs")
        .join(format!("{name}.yaml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
    }

    #[test]
    fn shipped_list_is_the_configs_directory() {
        let on_disk = crate::list(&dir()).unwrap();
        assert_eq!(Configs::Shipped.list().unwrap(), on_disk);
        for name in &on_disk {
            let disk = std::fs::read_to_string(dir().join(format!("{name}.yaml"))).unwrap();
            assert_eq!(Configs::Shipped.text(name).unwrap().0, disk, "{name}");
            let b = Configs::Shipped
                .find(name)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&b.name, name);
        }
    }

    #[test]
    fn a_directory_replaces_the_shipped_configs() {
        let tmp = tempfile::tempdir().unwrap();
        let text = Configs::Shipped.text("qemu-x86_64").unwrap().0;
        let custom = text.replace("name: qemu-x86_64", "name: my-board");
        std::fs::write(tmp.path().join("my-board.yaml"), custom).unwrap();
        let c = Configs::from_dir(Some(tmp.path().to_path_buf()));
        assert_eq!(c.list().unwrap(), ["my-board"]);
        assert_eq!(c.find("my-board").unwrap().name, "my-board");
        let err = c.find("rpi-zero2w").unwrap_err().to_string();
        assert!(
            err.contains("unknown board `rpi-zero2w` (known: my-board)"),
            "{err}"
        );
    }
}
