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

/// Where a slot carries its own fwpack-updater (docs/FORMAT.md, "The
/// bootstrap"): the running system applies and confirms with it.
pub const SLOT_UPDATER: &str = "/usr/bin/fwpack-updater";

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
/// path) into the copy, replacing files of the same name, and `updater`
/// as [`SLOT_UPDATER`] unless the root filesystem has one (its own
/// build's, which is kept). Checks the result: debugfs reports most
/// failures (a full filesystem, a name that is a directory) on stderr
/// with exit status 0.
pub fn inject(
    rootfs: &Path,
    out: &Path,
    files: &[(&str, &Path)],
    updater: Option<&Path>,
) -> Result<(), Error> {
    std::fs::copy(rootfs, out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let tool = debugfs()?;
    let quoted = |src: &Path| {
        src.to_str()
            .filter(|s| !s.contains(['\n', '"']))
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::MissingInput(format!(
                    "{}: path unusable in a debugfs script",
                    src.display()
                ))
            })
    };
    let mut script = String::from("mkdir /boot\nmkdir /boot/fwpack\n");
    let mut written: Vec<(String, &Path)> = Vec::new();
    for (name, src) in files {
        let q = quoted(src)?;
        script.push_str(&format!("rm {DIR}/{name}\nwrite \"{q}\" {DIR}/{name}\n"));
        written.push((format!("{DIR}/{name}"), src));
    }
    if let Some(u) = updater {
        // `stat` of a missing file says so on stderr; exit status 0 either way.
        let st = Command::new(&tool)
            .arg("-R")
            .arg(format!("stat {SLOT_UPDATER}"))
            .arg(out)
            .output()
            .map_err(|e| Error::Tool {
                tool: "debugfs".into(),
                message: e.to_string(),
            })?;
        if String::from_utf8_lossy(&st.stderr).contains("not found") {
            let q = quoted(u)?;
            script.push_str(&format!(
                "mkdir /usr\nmkdir /usr/bin\nwrite \"{q}\" {SLOT_UPDATER}\nsif {SLOT_UPDATER} mode 0100755\n"
            ));
            written.push((SLOT_UPDATER.to_string(), u));
        }
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
    for (name, src) in &written {
        let want = std::fs::read(src).map_err(|source| Error::Io {
            path: src.to_path_buf(),
            source,
        })?;
        let got = run(Command::new(&tool)
            .arg("-R")
            .arg(format!("cat {name}"))
            .arg(out))?;
        if Sha256::digest(&got) != Sha256::digest(&want) {
            return Err(Error::Tool {
                tool: "debugfs".into(),
                message: format!(
                    "{name} in {} does not read back as {} ({} bytes; is the filesystem full?)",
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
        let updater = dir.path().join("fwpack-updater");
        std::fs::write(&updater, b"\x7fELF the slot's updater").unwrap();
        inject(
            &img,
            &out,
            &[("kernel", &kernel), ("cmdline", &cmdline)],
            Some(&updater),
        )
        .unwrap();
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
        let at = |path: &str, cmd: &str| {
            let o = Command::new(&tool)
                .arg("-R")
                .arg(format!("{cmd} {path}"))
                .arg(&out)
                .output()
                .unwrap();
            (o.stdout, String::from_utf8_lossy(&o.stderr).into_owned())
        };
        assert_eq!(at(SLOT_UPDATER, "cat").0, b"\x7fELF the slot's updater");
        let mode = String::from_utf8_lossy(&at(SLOT_UPDATER, "stat").0).into_owned();
        assert!(
            mode.contains("Mode:  0755") || mode.contains("Mode:  00755"),
            "{mode}"
        );
        // A root filesystem with its own updater keeps it.
        std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
        std::fs::write(tree.join("usr/bin/fwpack-updater"), "its own").unwrap();
        let st = Command::new(&mkfs)
            .args(["-q", "-F", "-d"])
            .arg(&tree)
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success());
        inject(&img, &out, &[("kernel", &kernel)], Some(&updater)).unwrap();
        assert_eq!(at(SLOT_UPDATER, "cat").0, b"its own");
        // 8 MB do not fit in a 4 MiB filesystem.
        std::fs::write(&kernel, vec![7u8; 8_000_000]).unwrap();
        let e = inject(&img, &out, &[("kernel", &kernel)], None).unwrap_err();
        assert!(e.to_string().contains("full"), "{e}");
    }
}
