//! `boot: kexec` boards: the slot image carries the slot's own kernel.
//! A copy of the root filesystem gets `/boot/fwpack/` (kernel, cmdline,
//! initrd, dtb; docs/FORMAT.md, "Slot kernels") written into it with
//! e2fsprogs' `debugfs -w`, so any ext4 image works as input and is never
//! modified itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::Error;

/// The directory inside the slot, as the updater reads it.
pub const DIR: &str = "/boot/fwpack";

/// `debugfs` from PATH or the sbin directories (often not on a user's PATH).
fn debugfs() -> Result<PathBuf, Error> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("debugfs"))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Tool {
            tool: "debugfs".into(),
            message: "not found (Debian package e2fsprogs; `cargo xtask deps`)".into(),
        })
}

fn run(cmd: &mut Command) -> Result<Vec<u8>, Error> {
    let out = cmd.output().map_err(|e| Error::Tool {
        tool: "debugfs".into(),
        message: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(Error::Tool {
            tool: "debugfs".into(),
            message: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out.stdout)
}

/// Copies `rootfs` to `out` and writes `files` (name in [`DIR`], host
/// path) into the copy, replacing files of the same name. Checks the
/// result: debugfs reports most failures (a full filesystem, a name that
/// is a directory) on stderr with exit status 0.
pub fn inject(rootfs: &Path, out: &Path, files: &[(&str, &Path)]) -> Result<(), Error> {
    std::fs::copy(rootfs, out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let tool = debugfs()?;
    let mut script = String::from("mkdir /boot\nmkdir /boot/fwpack\n");
    for (name, src) in files {
        let src = src
            .to_str()
            .filter(|s| !s.contains(['\n', '"']))
            .ok_or_else(|| {
                Error::MissingInput(format!(
                    "{}: path unusable in a debugfs script",
                    src.display()
                ))
            })?;
        script.push_str(&format!("rm {DIR}/{name}\nwrite \"{src}\" {DIR}/{name}\n"));
    }
    let script_path = out.with_extension("debugfs");
    std::fs::write(&script_path, &script).map_err(|source| Error::Io {
        path: script_path.clone(),
        source,
    })?;
    run(Command::new(&tool)
        .arg("-w")
        .arg("-f")
        .arg(&script_path)
        .arg(out))?;
    let _ = std::fs::remove_file(&script_path);
    // Read every file back: a full filesystem leaves a file of the right
    // size but missing blocks, which only its contents show.
    for (name, src) in files {
        let want = std::fs::read(src).map_err(|source| Error::Io {
            path: src.to_path_buf(),
            source,
        })?;
        let got = run(Command::new(&tool)
            .arg("-R")
            .arg(format!("cat {DIR}/{name}"))
            .arg(out))?;
        if Sha256::digest(&got) != Sha256::digest(&want) {
            return Err(Error::Tool {
                tool: "debugfs".into(),
                message: format!(
                    "{DIR}/{name} in {} does not read back as {} ({} bytes; is the filesystem full?)",
                    out.display(),
                    src.display(),
                    want.len()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfs() -> Option<PathBuf> {
        ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    }

    #[test]
    fn files_land_in_a_copy_and_a_full_filesystem_is_an_error() {
        let (Some(mkfs), Ok(tool)) = (mkfs(), debugfs()) else {
            eprintln!("SKIPPED: mkfs.ext4 / debugfs missing (e2fsprogs)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("boot/fwpack")).unwrap();
        std::fs::write(tree.join("boot/fwpack/kernel"), "old kernel").unwrap();
        let img = dir.path().join("root.ext4");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let st = Command::new(&mkfs)
            .args(["-q", "-F", "-d"])
            .arg(&tree)
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success());
        let before = std::fs::read(&img).unwrap();
        let kernel = dir.path().join("bzImage");
        std::fs::write(&kernel, vec![7u8; 100_000]).unwrap();
        let cmdline = dir.path().join("cmdline");
        std::fs::write(&cmdline, "console=ttyS0 rootwait\n").unwrap();
        let out = dir.path().join("slot.ext4");
        inject(&img, &out, &[("kernel", &kernel), ("cmdline", &cmdline)]).unwrap();
        assert_eq!(
            std::fs::read(&img).unwrap(),
            before,
            "the input is untouched"
        );
        let cat = |name: &str| {
            let o = Command::new(&tool)
                .arg("-R")
                .arg(format!("cat {DIR}/{name}"))
                .arg(&out)
                .output()
                .unwrap();
            o.stdout
        };
        assert_eq!(cat("kernel"), vec![7u8; 100_000]);
        assert_eq!(cat("cmdline"), b"console=ttyS0 rootwait\n");
        // 8 MB do not fit in a 4 MiB filesystem.
        std::fs::write(&kernel, vec![7u8; 8_000_000]).unwrap();
        let e = inject(&img, &out, &[("kernel", &kernel)]).unwrap_err();
        assert!(e.to_string().contains("full"), "{e}");
    }
}
