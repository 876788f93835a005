//! `std::fs` calls whose errors name the path they are about: a bare
//! "No such file or directory (os error 2)" from xtask says nothing.

use std::path::Path;

use anyhow::{Context, Result};

pub fn read_to_string(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

pub fn write(p: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(p, data).with_context(|| format!("writing {}", p.display()))
}

pub fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

pub fn create_dir_all(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
}

pub fn canonicalize(p: &Path) -> Result<std::path::PathBuf> {
    std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()))
}

pub fn open(p: &Path) -> Result<std::fs::File> {
    std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))
}
