//! What fwpack finds without being told: board configs (compiled in, or a
//! directory) and the device updater (shipped next to the binary, or
//! built in a source checkout on request). The layout of an installed
//! fwpack is documented in docs/RELEASE.md ("What the archive holds"):
//!
//! ```text
//! <prefix>/bin/fwpack
//! <prefix>/lib/fwpack/<rust target triple>/fwpack-updater
//! ```

use std::path::{Path, PathBuf};

use anyhow::Result;
use board::{Board, Configs};

use crate::exit;

/// `--configs DIR`, else `FWPACK_CONFIGS`, else the compiled-in configs.
pub fn configs(flag: Option<PathBuf>) -> Configs {
    Configs::from_dir(flag.or_else(|| std::env::var_os("FWPACK_CONFIGS").map(PathBuf::from)))
}

/// Where this fwpack's shipped updater for `triple` is: relative to the
/// running binary's real path (symlinks to it, e.g. in /usr/local/bin, are
/// followed).
pub fn shipped_updater(triple: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    let prefix = exe.parent()?.parent()?;
    Some(
        prefix
            .join("lib/fwpack")
            .join(triple)
            .join("fwpack-updater"),
    )
}

/// The source checkout this fwpack was compiled from, if it is still
/// there: the only place `--build-updater` can build from.
pub fn source_checkout() -> Option<PathBuf> {
    let root = compiled_from();
    root.join("crates/fwpack-updater/Cargo.toml")
        .is_file()
        .then(|| std::fs::canonicalize(&root).unwrap_or(root))
}

/// Where the workspace this fwpack was compiled from was: a path on the
/// build machine, used only for `--build-updater` and its message.
fn compiled_from() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The updater `fwpack build` puts in: `--updater FILE`, else the shipped
/// one for the board's target, else (only with `--build-updater`) one
/// built from the source checkout. Nothing else is tried silently.
pub fn updater(board: &Board, given: Option<&Path>, build: bool) -> Result<pipeline::Updater> {
    let triple = &board.updater.rust_target;
    if let Some(p) = given {
        return Ok(pipeline::Updater::File(p.to_path_buf()));
    }
    if build {
        return match source_checkout() {
            Some(workspace) => Ok(pipeline::Updater::Build { workspace }),
            None => Err(exit::refuse(
                exit::USAGE,
                format!(
                    "--build-updater needs the fwpack source checkout this binary was built from ({}), and it is gone; \
                     pass --updater FILE (a static fwpack-updater for {triple})",
                    compiled_from().display()
                ),
            )),
        };
    }
    // The release ships plain updaters only: a board that asks for HTTPS
    // must not silently get one without it.
    if board.updater.tls {
        return Err(exit::refuse(
            exit::USAGE,
            format!(
                "board {} sets updater.tls, and the shipped fwpack-updater for {triple} is the plain (http-only) build; \
                 pass --updater FILE (a build with the tls feature), or --build-updater in a source checkout",
                board.name
            ),
        ));
    }
    let shipped = shipped_updater(triple);
    if let Some(p) = shipped.as_ref().filter(|p| p.is_file()) {
        return Ok(pipeline::Updater::Shipped(p.clone()));
    }
    let looked = shipped
        .map(|p| format!("there is no shipped one at {}", p.display()))
        .unwrap_or_else(|| "the fwpack binary's own path is unknown".into());
    let hint = if source_checkout().is_some() {
        "; in this source checkout, --build-updater builds one with cargo"
    } else {
        ""
    };
    Err(exit::refuse(
        exit::IO,
        format!(
            "no fwpack-updater for {triple} (board {}): {looked}; pass --updater FILE, \
             or install the release archive whole (bin/ and lib/ side by side){hint}",
            board.name
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_board_never_gets_the_plain_shipped_updater() {
        let mut board = Configs::Shipped.find("rpi-zero2w").unwrap();
        board.updater.tls = true;
        let e = updater(&board, None, false).unwrap_err();
        assert!(e.to_string().contains("updater.tls"), "{e}");
        // An explicit file is the user's choice and is taken as given.
        assert!(updater(&board, Some(Path::new("/x")), false).is_ok());
    }
}
