//! The Buildroot br2-external tree and the Yocto layer, checked with what
//! runs without Buildroot or bitbake sources: shellcheck, flake8 and
//! oelint-adv (real linters), Buildroot's coding rules for package files,
//! the .hash file against the source archive Buildroot would download
//! (rebuilt from git the way Buildroot builds it), the defconfig's symbols
//! against our Kconfig files and a list verified in Buildroot's sources,
//! the Yocto crate checksums against Cargo.lock and the cargo cache, and
//! the kas file against kas's own schema.

#[path = "release_common.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ok, run, workspace};

fn br() -> PathBuf {
    workspace().join("buildroot-external")
}

fn layer() -> PathBuf {
    workspace().join("meta-fwpack")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Kconfig symbols checked to be defined (`config SYM`) in Buildroot
/// 2026.05.1's own Config.in files, and make variables checked to be
/// defined by its Makefile, package/Makefile.in or the package
/// infrastructures. Anything the tree uses must be ours or listed here.
const BUILDROOT_2026_05_1_SYMBOLS: &[&str] = &[
    "BR2_ARM_FPU_VFPV4",
    "BR2_DOWNLOAD_FORCE_CHECK_HASHES",
    "BR2_ENABLE_DEBUG",
    "BR2_GLOBAL_PATCH_DIR",
    "BR2_LINUX_KERNEL",
    "BR2_LINUX_KERNEL_CUSTOM_TARBALL",
    "BR2_LINUX_KERNEL_CUSTOM_TARBALL_LOCATION",
    "BR2_LINUX_KERNEL_DEFCONFIG",
    "BR2_LINUX_KERNEL_DTS_SUPPORT",
    "BR2_LINUX_KERNEL_INTREE_DTS_NAME",
    "BR2_LINUX_KERNEL_NEEDS_HOST_OPENSSL",
    "BR2_PACKAGE_BUSYBOX_SHOW_OTHERS",
    "BR2_PACKAGE_HOST_KMOD_XZ",
    "BR2_PACKAGE_HOST_LINUX_HEADERS_CUSTOM_6_12",
    "BR2_PACKAGE_HOST_RUSTC",
    "BR2_PACKAGE_HOST_RUSTC_ARCH_SUPPORTS",
    "BR2_PACKAGE_HOST_RUSTC_TARGET_ARCH_SUPPORTS",
    "BR2_PACKAGE_KMOD",
    "BR2_PACKAGE_KMOD_TOOLS",
    "BR2_PACKAGE_RPI_FIRMWARE",
    "BR2_PACKAGE_RPI_FIRMWARE_BOOTCODE_BIN",
    "BR2_PACKAGE_RPI_FIRMWARE_CONFIG_FILE",
    "BR2_PACKAGE_RPI_FIRMWARE_VARIANT_PI",
    "BR2_PACKAGE_XZ",
    "BR2_ROOTFS_POST_BUILD_SCRIPT",
    "BR2_ROOTFS_POST_IMAGE_SCRIPT",
    "BR2_TARGET_ROOTFS_EXT2",
    "BR2_TARGET_ROOTFS_EXT2_4",
    "BR2_TARGET_ROOTFS_EXT2_SIZE",
    "BR2_TARGET_ROOTFS_TAR",
    "BR2_TOOLCHAIN_BUILDROOT_CXX",
    "BR2_TOOLCHAIN_BUILDROOT_MUSL",
    "BR2_aarch64",
];
const BUILDROOT_2026_05_1_MAKE_VARS: &[&str] = &[
    "@D",
    "TARGET_DIR",
    "cargo-package",
    "host-cargo-package",
    "BR_CARGO_HOME",
    "HOST_DIR",
    "HOST_MAKE_ENV",
    "INSTALL",
    "RUSTC_TARGET_NAME",
    "TARGET_DIR",
    // The fleet build's command is the cargo infrastructure's own
    // (package/pkg-cargo.mk); its binary for the initramfs goes to the
    // images directory.
    "TARGET_MAKE_ENV",
    "TARGET_CONFIGURE_OPTS",
    "PKG_CARGO_ENV",
    "BINARIES_DIR",
];
/// Defined by Buildroot for our tree from external.desc's `name:`.
const EXTERNAL_VARS: &[&str] = &["BR2_EXTERNAL_FWPACK_PATH"];

/// `config`/`menuconfig` symbols of our Config.in files.
fn our_symbols() -> BTreeSet<String> {
    ["Config.in", "Config.in.host"]
        .iter()
        .flat_map(|f| {
            read(&br().join("package/fwpack").join(f))
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("config ")
                        .or_else(|| l.strip_prefix("menuconfig "))
                        .map(|s| s.trim().to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every `BR2_*` word in a text.
fn br2_words(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("BR2_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

/// Shell scripts: `*.sh` or a `#!` line naming sh/bash.
fn shell_scripts(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let first = std::fs::read(p)
                .ok()
                .and_then(|b| b.split(|&c| c == b'\n').next().map(<[u8]>::to_vec))
                .unwrap_or_default();
            let first = String::from_utf8_lossy(&first);
            p.extension().is_some_and(|e| e == "sh")
                || (first.starts_with("#!")
                    && (first.ends_with("/sh") || first.contains("bash") || first.ends_with(" sh")))
        })
        .collect()
}

#[test]
fn shell_scripts_pass_shellcheck() {
    if !testkit::tools::require("shellcheck") {
        return;
    }
    let mut scripts = shell_scripts(&br());
    scripts.extend(shell_scripts(&layer()));
    assert!(
        scripts
            .iter()
            .any(|p| p.ends_with("board/rpi-zero2w/post-image.sh")),
        "post-image.sh not found among {scripts:?}"
    );
    for s in &scripts {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s).unwrap().permissions().mode();
        // Buildroot wants package init scripts (S??name) not executable:
        // the .mk installs them with mode 0755 (check-package says so).
        let init_script = s.parent().is_some_and(|d| d.ends_with("package/fwpack"))
            && s.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with('S') && n[1..].starts_with(|c: char| c.is_ascii_digit())
            });
        if init_script {
            assert!(
                mode & 0o111 == 0,
                "{}: Buildroot init scripts are not executable",
                s.display()
            );
        } else {
            assert!(mode & 0o111 != 0, "{} is not executable", s.display());
        }
        ok(Command::new("shellcheck")
            .args(["--severity=style", "--external-sources"])
            .arg(s));
    }

    // The bitbake shell task of the image class is POSIX sh run by
    // bitbake after expanding ${VARS}: check it as sh, with the bitbake
    // variables declared so only real shell mistakes remain.
    let class = read(&layer().join("classes-recipe/image_types_fwpack.bbclass"));
    let start = class
        .find("IMAGE_CMD:fwi () {")
        .expect("IMAGE_CMD:fwi in the class");
    let body_end = class[start..].find("\n}\n").expect("end of IMAGE_CMD:fwi") + start;
    let body = &class[start + "IMAGE_CMD:fwi () {".len()..body_end];
    let mut vars: BTreeSet<String> = BTreeSet::new();
    let mut rest = body;
    while let Some(p) = rest.find("${") {
        let after = &rest[p + 2..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && after[name.len()..].starts_with('}') {
            vars.insert(name);
        }
        rest = after;
    }
    let mut script = String::from("#!/bin/sh\nbbfatal() { echo \"$*\" >&2; exit 1; }\n");
    for v in &vars {
        script.push_str(&format!("{v}=\"${{{v}:-x}}\"\n"));
    }
    script.push_str("fwi() {");
    script.push_str(body);
    script.push_str("\n}\nfwi\n");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("image_cmd_fwi.sh");
    std::fs::write(&path, script).unwrap();
    ok(Command::new("shellcheck")
        .args(["--severity=style", "--shell=sh"])
        .arg(&path));
}

#[test]
fn python_scripts_pass_flake8() {
    let Some(venv) = common::venv() else { return };
    let mut scripts: Vec<PathBuf> = files_under(&br().join("utils"));
    scripts.extend(files_under(&layer().join("scripts")));
    scripts.retain(|p| p.extension().is_some_and(|e| e == "py"));
    assert!(scripts.len() >= 3, "{scripts:?}");
    ok(Command::new(venv.join("bin/flake8")).args(&scripts));
}

#[test]
fn buildroot_package_follows_buildroot_coding_style() {
    let desc = read(&br().join("external.desc"));
    assert!(desc.lines().any(|l| l == "name: FWPACK"), "{desc}");
    assert!(desc.lines().any(|l| l.starts_with("desc: ") && l.len() > 6));
    assert!(read(&br().join("external.mk")).contains("$(BR2_EXTERNAL_FWPACK_PATH)/package/*/*.mk"));
    for f in ["package/fwpack/Config.in", "package/fwpack/Config.in.host"] {
        assert!(read(&br().join("Config.in"))
            .contains(&format!("source \"$BR2_EXTERNAL_FWPACK_PATH/{f}\"")));
    }

    // Kconfig: only the package's own symbols, one tab before attributes,
    // tab + two spaces before help text, help lines within 72 columns.
    let symbols = our_symbols();
    assert_eq!(
        symbols,
        [
            "BR2_PACKAGE_FWPACK",
            "BR2_PACKAGE_FWPACK_FLEET",
            "BR2_PACKAGE_FWPACK_MARK_GOOD",
            "BR2_PACKAGE_FWPACK_MARK_GOOD_HEALTH_CHECK",
            "BR2_PACKAGE_HOST_FWPACK"
        ]
        .map(String::from)
        .into(),
    );
    for (file, want) in [
        ("Config.in", "BR2_PACKAGE_FWPACK"),
        ("Config.in.host", "BR2_PACKAGE_HOST_FWPACK"),
    ] {
        let text = read(&br().join("package/fwpack").join(file));
        assert!(text.starts_with(&format!("config {want}\n")), "{file}");
        let mut in_help = false;
        for (n, line) in text.lines().enumerate() {
            let at = format!("{file}:{}", n + 1);
            assert!(
                !line.ends_with(' ') && !line.ends_with('\t'),
                "{at}: trailing whitespace"
            );
            let block = line.starts_with("config ") || line.starts_with("if ") || line == "endif";
            if line.is_empty() || block {
                in_help &= !block;
                continue;
            }
            if in_help {
                let text = line
                    .strip_prefix("\t  ")
                    .unwrap_or_else(|| panic!("{at}: help text needs tab + 2 spaces"));
                assert!(
                    8 + 2 + text.chars().count() <= 72,
                    "{at}: help line over 72 columns"
                );
                continue;
            }
            let attr = line
                .strip_prefix('\t')
                .unwrap_or_else(|| panic!("{at}: attribute needs one tab"));
            assert!(
                !attr.starts_with([' ', '\t']),
                "{at}: one tab, nothing more"
            );
            in_help = attr == "help";
            if let Some(dep) = attr
                .strip_prefix("depends on ")
                .or_else(|| attr.strip_prefix("select "))
            {
                for s in br2_words(dep) {
                    assert!(
                        symbols.contains(&s) || BUILDROOT_2026_05_1_SYMBOLS.contains(&s.as_str()),
                        "{at}: {s} is neither ours nor a verified upstream symbol"
                    );
                }
            }
        }
    }

    // The .mk file: Buildroot's header, every variable ours, tabs in
    // recipes, the infrastructure called last.
    let mk = read(&br().join("package/fwpack/fwpack.mk"));
    let rule = "#".repeat(80);
    assert!(
        mk.starts_with(&format!("{rule}\n#\n# fwpack\n#\n{rule}\n\n")),
        "fwpack.mk must start with Buildroot's package header"
    );
    let mut in_define = false;
    let mut continued = false;
    for (n, line) in mk.lines().enumerate() {
        let at = format!("fwpack.mk:{}", n + 1);
        assert!(
            !line.ends_with(' ') && !line.ends_with('\t'),
            "{at}: trailing whitespace"
        );
        // Continuation lines of a multi-line value: one tab, as upstream.
        let was_continued = std::mem::replace(&mut continued, line.ends_with('\\'));
        if was_continued && !in_define {
            assert!(
                line.starts_with('\t') && !line[1..].starts_with([' ', '\t']),
                "{at}: continuation needs one tab"
            );
            continue;
        }
        if let Some(name) = line.strip_prefix("define ") {
            assert!(
                name.starts_with("FWPACK_") || name.starts_with("HOST_FWPACK_"),
                "{at}: {name}"
            );
            in_define = true;
            continue;
        }
        if line == "endef" {
            in_define = false;
            continue;
        }
        if in_define {
            assert!(line.starts_with('\t'), "{at}: commands start with a tab");
            continue;
        }
        if line.starts_with('#')
            || line.is_empty()
            || line.starts_with("ifneq")
            || line.starts_with("ifeq")
            || line == "endif"
            || line.starts_with("$(eval")
        {
            continue;
        }
        let name = line
            .split([' ', '\t', '+', ':', '?', '='])
            .next()
            .unwrap_or_default();
        assert!(
            name.starts_with("FWPACK_") || name.starts_with("HOST_FWPACK_"),
            "{at}: variable {name} is not prefixed with FWPACK_/HOST_FWPACK_"
        );
    }
    let evals: Vec<&str> = mk.lines().filter(|l| l.starts_with("$(eval")).collect();
    assert_eq!(
        evals,
        ["$(eval $(cargo-package))", "$(eval $(host-cargo-package))"]
    );
    assert!(mk.trim_end().ends_with("$(eval $(host-cargo-package))"));
    // Every $(VAR) is ours, the external tree's, or a verified upstream one.
    let mut rest = mk.as_str();
    while let Some(p) = rest.find("$(") {
        let after = &rest[p + 2..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '-'))
            .collect();
        let is_function = after[name.len()..].starts_with(' ')
            && name.chars().all(|c| c.is_ascii_lowercase() || c == '-');
        if !name.is_empty()
            && !is_function
            && !name.starts_with("FWPACK_")
            && !name.starts_with("HOST_FWPACK_")
        {
            assert!(
                BUILDROOT_2026_05_1_MAKE_VARS.contains(&name.as_str())
                    || BUILDROOT_2026_05_1_SYMBOLS.contains(&name.as_str())
                    || symbols.contains(&name)
                    || EXTERNAL_VARS.contains(&name.as_str()),
                "fwpack.mk uses $({name}), neither ours nor verified upstream"
            );
        }
        rest = after;
    }
}

#[test]
fn defconfig_symbols_exist_here_or_upstream() {
    let ours = our_symbols();
    let configs: Vec<PathBuf> = files_under(&br().join("configs"));
    assert!(configs
        .iter()
        .any(|p| p.ends_with("fwpack_rpizero2w_defconfig")));
    for defconfig in &configs {
        let text = read(defconfig);
        let mut set = BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let at = format!("{}:{}", defconfig.display(), n + 1);
            let sym = if let Some(s) = line
                .strip_prefix("# ")
                .and_then(|l| l.strip_suffix(" is not set"))
            {
                s.to_string()
            } else {
                let (s, value) = line
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{at}: not SYMBOL=value"));
                assert!(!value.is_empty(), "{at}");
                if value.starts_with('"') {
                    assert!(
                        value.ends_with('"') && value.len() >= 2,
                        "{at}: unbalanced quotes"
                    );
                }
                if value == "y" {
                    set.insert(s.to_string());
                }
                s.to_string()
            };
            assert!(
                ours.contains(&sym) || BUILDROOT_2026_05_1_SYMBOLS.contains(&sym.as_str()),
                "{at}: {sym} is neither defined in our Config.in files nor a verified Buildroot 2026.05.1 option"
            );
        }
        // Learned from loading it in Buildroot: Rust targets on musl need
        // the C++ toolchain, else Kconfig drops the updater silently.
        if set.contains("BR2_PACKAGE_FWPACK") && set.contains("BR2_TOOLCHAIN_BUILDROOT_MUSL") {
            assert!(
                set.contains("BR2_TOOLCHAIN_BUILDROOT_CXX"),
                "{}",
                defconfig.display()
            );
        }
        assert!(set.contains("BR2_DOWNLOAD_FORCE_CHECK_HASHES"));
        let post = text
            .lines()
            .find_map(|l| l.strip_prefix("BR2_ROOTFS_POST_IMAGE_SCRIPT=\""))
            .and_then(|v| v.strip_suffix('"'))
            .expect("a post-image script");
        let path = post.replace("$(BR2_EXTERNAL_FWPACK_PATH)", &br().display().to_string());
        assert!(Path::new(&path).is_file(), "{path}");
    }
}

fn mk_value(mk: &str, var: &str) -> String {
    mk.lines()
        .find_map(|l| l.strip_prefix(&format!("{var} = ")))
        .unwrap_or_else(|| panic!("{var} in fwpack.mk"))
        .trim()
        .to_string()
}

/// Whether this clone has the commit (a shallow CI clone may not).
fn have_commit(commit: &str) -> bool {
    let root = workspace();
    if run(Command::new("git").arg("-C").arg(&root).args([
        "cat-file",
        "-e",
        &format!("{commit}^{{commit}}"),
    ]))
    .status
    .success()
    {
        return true;
    }
    let shallow = run(Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["rev-parse", "--is-shallow-repository"]));
    assert!(
        String::from_utf8_lossy(&shallow.stdout).trim() == "true",
        "{commit} is not in this repository: FWPACK_VERSION/SRCREV must name a commit of it"
    );
    eprintln!("SKIPPED: {commit} is not in this shallow clone; fetch the history to check it");
    false
}

#[test]
fn hash_file_matches_the_archive_buildroot_downloads() {
    let hash = read(&br().join("package/fwpack/fwpack.hash"));
    let mut entries = Vec::new();
    for (n, line) in hash.lines().enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split("  ").collect();
        assert!(
            parts.len() == 3
                && parts[0] == "sha256"
                && parts[1].len() == 64
                && parts[1]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "fwpack.hash:{}: want `sha256  <64 lowercase hex>  <file>`, got {line:?}",
            n + 1
        );
        entries.push((parts[1].to_string(), parts[2].to_string()));
    }
    let mk = read(&br().join("package/fwpack/fwpack.mk"));
    let version = mk_value(&mk, "FWPACK_VERSION");
    assert_eq!(mk_value(&mk, "FWPACK_SITE_METHOD"), "git");
    // LICENSE_FILES, each with its hash (Buildroot checks them in
    // legal-info); every other line is a source archive of the pin.
    let licence_files = mk_value(&mk, "FWPACK_LICENSE_FILES");
    let licences: Vec<&str> = licence_files.split_whitespace().collect();
    assert_eq!(licences, ["LICENSE-APACHE", "LICENSE-MIT"]);
    let (licence_entries, entries): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|(_, f)| licences.contains(&f.as_str()));
    assert_eq!(
        licence_entries
            .iter()
            .map(|(_, f)| f.as_str())
            .collect::<Vec<_>>(),
        licences,
        "fwpack.hash needs a line for each of FWPACK_LICENSE_FILES"
    );
    assert!(!entries.is_empty());
    for (_, file) in &entries {
        assert!(
            file.starts_with(&format!("fwpack-{version}-git4-cargo")) && file.ends_with(".tar.gz"),
            "{file} is not an archive of FWPACK_VERSION {version}"
        );
    }
    if !have_commit(&version) {
        return;
    }
    for (digest, file) in &licence_entries {
        use sha2::Digest;
        let blob = ok(Command::new("git")
            .arg("-C")
            .arg(workspace())
            .args(["show", &format!("{version}:{file}")]));
        assert_eq!(
            &hex::encode(sha2::Sha256::digest(&blob.stdout)),
            digest,
            "fwpack.hash: {file} at {version}"
        );
    }
    for tool in ["git", "tar", "gzip", "python3"] {
        if !testkit::tools::require(tool) {
            return;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(Command::new("python3")
        .arg(br().join("utils/cargo-git-archive.py"))
        .arg(workspace())
        .arg(&version)
        .arg("fwpack")
        .arg(tmp.path())
        .arg(format!("{}/Cargo.toml", mk_value(&mk, "FWPACK_SUBDIR"))));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (digest, file) = line
        .strip_prefix("sha256  ")
        .and_then(|l| l.split_once("  "))
        .unwrap_or_else(|| panic!("unexpected output {line:?}"));
    // The archive is what Buildroot's cargo post-process leaves: the
    // tree at the commit plus VENDOR/ and the vendoring config.
    let listing = ok(Command::new("tar").arg("-tzf").arg(tmp.path().join(file)));
    let listing = String::from_utf8_lossy(&listing.stdout);
    let base = format!("fwpack-{version}/");
    assert!(listing.lines().all(|l| l.starts_with(&base)));
    for want in [
        "Cargo.lock",
        ".cargo/config.toml",
        &format!("{}/Cargo.toml", mk_value(&mk, "FWPACK_SUBDIR")),
        "VENDOR/ed25519-dalek/Cargo.toml",
    ] {
        assert!(
            listing.lines().any(|l| l == format!("{base}{want}")),
            "{want} missing from the archive"
        );
    }
    match entries.iter().find(|(_, f)| f == file) {
        Some((want, _)) => assert_eq!(
            want, digest,
            "fwpack.hash disagrees with the archive Buildroot would download; the line is:\n{line}"
        ),
        None => panic!(
            "fwpack.hash has no line for {file} (this cargo's vendoring format); add:\n{line}"
        ),
    }
}

/// `SRC_URI[name.sha256sum] = "hex"` lines of the crates .inc.
fn crate_checksums(inc: &str) -> Vec<(String, String)> {
    inc.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("SRC_URI[")?;
            let (name, rest) = rest.split_once(".sha256sum] = \"")?;
            Some((name.to_string(), rest.strip_suffix('"')?.to_string()))
        })
        .collect()
}

fn bb_value(text: &str, var: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{var} = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{var} in the recipe"))
        .to_string()
}

#[test]
fn yocto_recipe_pins_the_same_commit_with_matching_crates_and_license() {
    let recipe = read(&layer().join("recipes-devtools/fwpack/fwpack_git.bb"));
    let srcrev = bb_value(&recipe, "SRCREV");
    let mk = read(&br().join("package/fwpack/fwpack.mk"));
    assert_eq!(
        srcrev,
        mk_value(&mk, "FWPACK_VERSION"),
        "Yocto and Buildroot build different commits"
    );
    let inc = read(&layer().join("recipes-devtools/fwpack/fwpack-crates.inc"));
    let sums = crate_checksums(&inc);
    assert!(sums.len() > 50, "{} crates", sums.len());

    // The checksums are those of the .crate files: compare with every one
    // cargo has downloaded into its cache.
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap();
    let caches: Vec<PathBuf> = std::fs::read_dir(home.join("registry/cache"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    let mut checked = 0;
    for (name, sum) in &sums {
        for c in &caches {
            if let Ok(bytes) = std::fs::read(c.join(format!("{name}.crate"))) {
                use sha2::Digest;
                assert_eq!(&hex::encode(sha2::Sha256::digest(&bytes)), sum, "{name}");
                checked += 1;
                break;
            }
        }
    }
    eprintln!(
        "{checked} of {} crate checksums compared with cargo's cache",
        sums.len()
    );
    assert!(
        checked > 0,
        "no crate of fwpack-crates.inc in cargo's cache ({})",
        home.display()
    );

    if !have_commit(&srcrev) {
        return;
    }
    if !testkit::tools::require("python3") || !testkit::tools::require("md5sum") {
        return;
    }
    let generated = ok(Command::new("python3")
        .arg(layer().join("scripts/fwpack-crates-inc.py"))
        .arg(workspace())
        .arg(&srcrev));
    assert_eq!(
        String::from_utf8_lossy(&generated.stdout),
        inc,
        "fwpack-crates.inc is stale: rerun meta-fwpack/scripts/fwpack-crates-inc.py for SRCREV"
    );

    // LIC_FILES_CHKSUM, computed as bitbake does (md5 of the file, or of
    // its lines beginline..=endline): the licence files at SRCREV.
    let lic = bb_value_continued(&recipe, "LIC_FILES_CHKSUM");
    let mut seen = Vec::new();
    for uri in lic.split_whitespace() {
        let params: Vec<&str> = uri.strip_prefix("file://").unwrap().split(';').collect();
        let get = |k: &str| params.iter().find_map(|p| p.strip_prefix(&format!("{k}=")));
        let file = ok(Command::new("git")
            .arg("-C")
            .arg(workspace())
            .arg("show")
            .arg(format!("{srcrev}:{}", params[0])));
        let lines: Vec<&[u8]> = file.stdout.split_inclusive(|&b| b == b'\n').collect();
        let begin: usize = get("beginline").map_or(1, |v| v.parse().unwrap());
        let end: usize = get("endline").map_or(lines.len(), |v| v.parse().unwrap());
        let chunk: Vec<u8> = lines[begin - 1..end].concat();
        let out = md5sum(&chunk);
        assert_eq!(
            Some(out.as_str()),
            get("md5"),
            "LIC_FILES_CHKSUM of {}",
            params[0]
        );
        seen.push(params[0].to_string());
    }
    assert_eq!(seen, ["LICENSE-APACHE", "LICENSE-MIT"]);
}

fn md5sum(bytes: &[u8]) -> String {
    let mut md5 = Command::new("md5sum");
    md5.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = md5.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A `VAR = "..."` value that may continue over `\`-ended lines.
fn bb_value_continued(text: &str, var: &str) -> String {
    let start = text
        .find(&format!("\n{var} = \""))
        .unwrap_or_else(|| panic!("{var} in the recipe"))
        + var.len()
        + 5;
    let end = text[start..].find('"').unwrap() + start;
    text[start..end].replace("\\\n", " ")
}

#[test]
fn yocto_layer_passes_oelint_adv() {
    let Some(venv) = common::venv() else { return };
    let files = [
        "conf/layer.conf",
        "recipes-devtools/fwpack/fwpack_git.bb",
        "classes-recipe/image_types_fwpack.bbclass",
        "recipes-core/fwpack-mark-good/fwpack-mark-good_1.0.bb",
    ];
    // Run from the layer so its .oelint.cfg (release, constants,
    // suppressions with reasons) applies.
    let out = run(Command::new(venv.join("bin/oelint-adv"))
        .current_dir(layer())
        .args(["--relpaths", "--quiet"])
        .args(files));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let findings: Vec<&str> = report
        .lines()
        .filter(|l| l.contains(":error:") || l.contains(":warning:") || l.contains("Traceback"))
        .collect();
    assert!(findings.is_empty(), "oelint-adv:\n{report}");
    eprintln!("oelint-adv (info only):\n{report}");

    let conf = read(&layer().join("conf/layer.conf"));
    let series = bb_value(&conf, "LAYERSERIES_COMPAT_fwpack");
    assert!(series.split(' ').any(|s| s == "wrynose"), "{series}");
    assert!(conf.contains("BBFILE_COLLECTIONS += \"fwpack\""));
}

#[test]
fn kas_file_matches_kas_schema_and_the_layer() {
    let Some(venv) = common::venv() else { return };
    let kas = layer().join("kas/fwpack-qemuarm64.yml");
    ok(Command::new(venv.join("bin/python3"))
        .arg("-c")
        .arg(
            "import sys, yaml, jsonschema\n\
         from kas.configschema import CONFIGSCHEMA\n\
         jsonschema.validate(yaml.safe_load(open(sys.argv[1])), CONFIGSCHEMA)\n",
        )
        .arg(&kas));
    let text = read(&kas);
    let conf = read(&layer().join("conf/layer.conf"));
    let series = bb_value(&conf, "LAYERSERIES_COMPAT_fwpack");
    let branch = text
        .lines()
        .skip_while(|l| !l.starts_with("  openembedded-core:"))
        .find_map(|l| l.trim().strip_prefix("branch: "))
        .expect("openembedded-core branch");
    assert!(
        series.split(' ').any(|s| s == branch),
        "kas uses {branch}, layer is for {series}"
    );
    assert!(text.contains("IMAGE_CLASSES += \"image_types_fwpack\""));
    assert!(text.contains("IMAGE_FSTYPES += \"fwi\""));
}

/// Buildroot's `utils/check-package` to run: the copy vendored in
/// xtask/third_party/buildroot (always: it is what makes this test run in CI,
/// where nothing is downloaded), then every Buildroot source tree in
/// `$FWPACK_BUILDROOT_DIRS` (colon-separated) or unpacked under
/// `<cache>/buildroot/` (docs/RELEASE.md says how), whose own rules may
/// be newer.
fn buildroot_trees() -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = match std::env::var_os("FWPACK_BUILDROOT_DIRS") {
        Some(v) if !v.is_empty() => std::env::split_paths(&v).collect(),
        _ => std::fs::read_dir(testkit::cache_dir().join("buildroot"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default(),
    };
    let mut trees: Vec<PathBuf> = dirs
        .into_iter()
        .filter(|d| d.join("utils/check-package").is_file())
        .collect();
    trees.sort();
    let vendored = workspace().join("xtask/third_party/buildroot");
    assert!(
        vendored.join("utils/check-package").is_file(),
        "xtask/third_party/buildroot/utils/check-package is missing"
    );
    trees.insert(0, vendored);
    trees
}

#[test]
fn buildroot_check_package_is_clean() {
    let trees = buildroot_trees();
    let Some(venv) = common::venv() else { return };
    let mut files: Vec<PathBuf> = files_under(&br())
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "pyc"))
        .map(|p| p.strip_prefix(br()).unwrap().to_path_buf())
        .collect();
    files.sort();
    for tree in trees {
        // -b: the files belong to a br2-external tree, run from its root.
        let out = run(Command::new(venv.join("bin/python3"))
            .arg(tree.join("utils/check-package"))
            .arg("-b")
            .args(&files)
            .current_dir(br()));
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}: {}", tree.display(), report.trim());
        assert!(
            out.status.success() && report.contains("\n0 warnings generated"),
            "check-package of {}:\n{report}",
            tree.display()
        );
    }
}
