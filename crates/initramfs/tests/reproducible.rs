//! Same recipe, same inputs → same bytes, whatever the source files' mtimes,
//! inode numbers, directory creation order or the order of recipe entries.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use initramfs::{Compression, Options, Recipe, Vars};

const RECIPE: &str = r#"
files:
  - {src: "${BIN}", dst: /init, mode: "0755"}
  - {src: etc/config, dst: /etc/fwpack/config}
trees:
  - {src: overlay, dst: /usr/share/overlay}
symlinks:
  - {path: /bin/sh, target: /init}
devices:
  - {path: /dev/console, type: char, major: 5, minor: 1}
dirs: [/proc, /sys, {path: /tmp, mode: "1777"}]
"#;

/// The same recipe with every section and list in another order.
const RECIPE_SHUFFLED: &str = r#"
dirs: [{path: /tmp, mode: "1777"}, /sys, /proc]
devices:
  - {path: /dev/console, type: char, major: 5, minor: 1}
symlinks:
  - {path: /bin/sh, target: /init}
trees:
  - {src: overlay, dst: /usr/share/overlay}
files:
  - {src: etc/config, dst: /etc/fwpack/config}
  - {src: "${BIN}", dst: /init, mode: "0755"}
"#;

const FILES: &[(&str, &str)] = &[
    ("bin/app", "#!/not/really\n"),
    ("etc/config", "key = value\n"),
    ("overlay/a/one", "1"),
    ("overlay/a/two", "22"),
    ("overlay/b/c/deep", "deep file\n"),
    ("overlay/z", ""),
];

/// Writes the inputs in the given order, with the given mtime.
fn populate(root: &Path, recipe: &str, order: &[usize], mtime: SystemTime) {
    for &i in order {
        let (path, content) = FILES[i];
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    fs::write(root.join("recipe.yaml"), recipe).unwrap();
}

fn build(root: &Path, compression: Compression, mtime: u32) -> Vec<u8> {
    let mut vars = Vars::new();
    vars.set("BIN", "bin/app");
    let recipe = Recipe::load(&root.join("recipe.yaml"), &vars).unwrap();
    let (b, _) = recipe.build(Options { mtime }).unwrap();
    let out = root.join("out.img");
    b.write_file(&out, compression).unwrap();
    fs::read(out).unwrap()
}

#[test]
fn byte_identical_across_mtimes_and_creation_order() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    populate(a.path(), RECIPE, &[0, 1, 2, 3, 4, 5], SystemTime::now());
    // Reverse creation order (so different inode numbers and readdir
    // order), mtimes a decade apart, recipe entries shuffled.
    populate(
        b.path(),
        RECIPE_SHUFFLED,
        &[5, 4, 3, 2, 1, 0],
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_234_567_890),
    );
    for compression in [
        Compression::None,
        Compression::Gzip { level: 9 },
        Compression::Gzip { level: 1 },
        Compression::Zstd { level: 19 },
    ] {
        let x = build(a.path(), compression, 0);
        let y = build(b.path(), compression, 0);
        assert!(
            x == y,
            "{compression:?}: builds differ ({} vs {} bytes)",
            x.len(),
            y.len()
        );
        // And a rebuild of the same tree is identical too.
        assert!(
            build(a.path(), compression, 0) == x,
            "{compression:?}: rebuild differs"
        );
    }
}

#[test]
fn the_comparison_can_fail() {
    // Guards the test above: a one-byte content change or a different
    // SOURCE_DATE_EPOCH must change the output.
    let a = tempfile::tempdir().unwrap();
    populate(a.path(), RECIPE, &[0, 1, 2, 3, 4, 5], SystemTime::now());
    let x = build(a.path(), Compression::Gzip { level: 9 }, 0);
    assert_ne!(build(a.path(), Compression::Gzip { level: 9 }, 1), x);
    fs::write(a.path().join("overlay/a/one"), "2").unwrap();
    assert_ne!(build(a.path(), Compression::Gzip { level: 9 }, 0), x);
}

#[test]
fn source_date_epoch_sets_every_mtime() {
    let a = tempfile::tempdir().unwrap();
    populate(a.path(), RECIPE, &[0, 1, 2, 3, 4, 5], SystemTime::now());
    let bytes = build(a.path(), Compression::Gzip { level: 6 }, 1_700_000_000);
    let entries = initramfs::Reader::new(&bytes[..])
        .unwrap()
        .entries()
        .unwrap();
    assert!(entries.len() > 10);
    assert!(entries
        .iter()
        .all(|e| e.mtime == 1_700_000_000 && e.uid == 0 && e.gid == 0));
    assert_eq!(initramfs::parse_epoch("1700000000").unwrap(), 1_700_000_000);
}
