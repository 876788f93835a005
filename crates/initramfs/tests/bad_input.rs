//! Bad input gives a typed error that names the entry, and never leaves a
//! half-written archive at the output path.

use std::fs;
use std::path::Path;

use initramfs::{Builder, Compression, Error, ErrorClass, Meta, Options, Recipe, Vars, PATH_MAX};

fn recipe_err(dir: &Path, text: &str) -> Error {
    let file = dir.join("r.yaml");
    fs::write(&file, text).unwrap();
    match Recipe::load(&file, &Vars::new()).and_then(|r| r.build(Options::default())) {
        Ok(_) => panic!("recipe unexpectedly accepted:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn missing_source_names_entry_and_file() {
    let d = tempfile::tempdir().unwrap();
    let e = recipe_err(
        d.path(),
        "files: [{src: no-such-updater, dst: /init, mode: \"0755\"}]",
    );
    assert!(matches!(e, Error::MissingSource { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Io);
    let msg = e.to_string();
    assert!(
        msg.contains("`/init`") && msg.contains("no-such-updater"),
        "{msg}"
    );
    let e = recipe_err(
        d.path(),
        "require_init: false\ntrees: [{src: no-such-dir, dst: /}]",
    );
    assert!(matches!(e, Error::MissingSource { .. }), "{e:?}");
}

#[test]
fn destinations_cannot_escape_the_root() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("f"), "x").unwrap();
    for dst in ["../../etc/passwd", "/a/../../x", "./../x"] {
        let e = recipe_err(
            d.path(),
            &format!("require_init: false\nfiles: [{{src: f, dst: \"{dst}\"}}]"),
        );
        assert!(
            matches!(&e, Error::EscapesRoot { dst: d } if d == dst),
            "{dst}: {e:?}"
        );
        assert!(e.to_string().contains(dst));
    }
    let e = recipe_err(
        d.path(),
        "require_init: false\nsymlinks: [{path: ../evil, target: /etc}]",
    );
    assert!(matches!(e, Error::EscapesRoot { .. }), "{e:?}");
    // Absolute and redundant forms are normalised, not refused; absolute
    // symlink targets are fine (they resolve inside the booted system).
    let mut b = Builder::default();
    b.add_bytes("//usr/./bin//x", "", Meta::mode(0o755))
        .unwrap();
    b.add_symlink("/lib", "/usr/lib").unwrap();
    assert!(b.contains("usr/bin/x"));
}

#[test]
fn duplicates_identical_ok_different_refused() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("a"), "same").unwrap();
    fs::write(d.path().join("b"), "same").unwrap();
    fs::write(d.path().join("c"), "diff").unwrap();
    let ok = d.path().join("ok.yaml");
    fs::write(
        &ok,
        "require_init: false\nfiles: [{src: a, dst: /x}, {src: b, dst: /x}]\ndirs: [/x-dir, /x-dir]",
    )
    .unwrap();
    Recipe::load(&ok, &Vars::new())
        .unwrap()
        .build(Options::default())
        .unwrap();
    let e = recipe_err(
        d.path(),
        "require_init: false\nfiles: [{src: a, dst: /x}, {src: c, dst: /x}]",
    );
    assert!(
        matches!(&e, Error::Duplicate { path, what: "content" } if path == "/x"),
        "{e:?}"
    );
    let e = recipe_err(
        d.path(),
        "require_init: false\nfiles: [{src: a, dst: /x}]\nsymlinks: [{path: /x, target: a}]",
    );
    assert!(
        matches!(&e, Error::Duplicate { path, .. } if path == "/x"),
        "{e:?}"
    );
    let e = recipe_err(
        d.path(),
        "require_init: false\nfiles: [{src: a, dst: /x, mode: \"0644\"}, {src: b, dst: /x, mode: \"0755\"}]",
    );
    assert!(
        matches!(
            &e,
            Error::Duplicate {
                what: "mode or owner",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn files_too_big_for_newc() {
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big.img");
    // Sparse: costs no disk space.
    let f = fs::File::create(&big).unwrap();
    f.set_len(u64::from(u32::MAX) + 1).unwrap();
    let mut b = Builder::default();
    let e = b.add_file("/images/big.img", &big, None).unwrap_err();
    assert!(
        matches!(&e, Error::FileTooLarge { path, size, .. } if path == "/images/big.img" && *size == 1 << 32),
        "{e:?}"
    );
    assert!(e.to_string().contains("big.img"), "{e}");
    // One byte less is the largest newc can carry: accepted.
    f.set_len(u64::from(u32::MAX)).unwrap();
    b.add_file("/images/big.img", &big, None).unwrap();
}

#[test]
fn over_long_names() {
    let mut b = Builder::default();
    let long = format!("/{}", vec!["d".repeat(200); 21].join("/"));
    assert!(long.len() > PATH_MAX);
    let e = b.add_bytes(&long, "", Meta::mode(0o644)).unwrap_err();
    assert!(
        matches!(e, Error::NameTooLong { what: "path", .. }),
        "{e:?}"
    );
    let e = b
        .add_bytes(&format!("/{}", "n".repeat(256)), "", Meta::mode(0o644))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NameTooLong {
                what: "component",
                ..
            }
        ),
        "{e:?}"
    );
    let e = b.add_symlink("/l", &"t".repeat(PATH_MAX)).unwrap_err();
    assert!(matches!(e, Error::InvalidLinkTarget { .. }), "{e:?}");
}

fn dir_entries(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn failed_writes_leave_the_output_path_alone() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let vanishing = src.path().join("vanishing");
    fs::write(&vanishing, vec![7u8; 100_000]).unwrap();
    let mut b = Builder::default();
    b.add_bytes("/init", "#!", Meta::mode(0o755)).unwrap();
    b.add_file("/data/vanishing", &vanishing, None).unwrap();

    let existing = out.path().join("old.cpio.gz");
    fs::write(&existing, "previous good archive").unwrap();
    let fresh = out.path().join("new.cpio.gz");

    // The source shrinks between planning and packing.
    fs::write(&vanishing, vec![7u8; 10]).unwrap();
    for target in [&existing, &fresh] {
        let e = b
            .write_file(target, Compression::Gzip { level: 6 })
            .unwrap_err();
        assert!(
            matches!(&e, Error::SourceChanged { path, expected: 100_000, .. } if path == "/data/vanishing"),
            "{e:?}"
        );
    }
    // The source disappears.
    fs::remove_file(&vanishing).unwrap();
    let e = b.write_file(&existing, Compression::None).unwrap_err();
    assert!(matches!(e, Error::Read { .. }), "{e:?}");

    assert_eq!(
        fs::read_to_string(&existing).unwrap(),
        "previous good archive"
    );
    assert!(!fresh.exists());
    assert_eq!(
        dir_entries(out.path()),
        ["old.cpio.gz"],
        "no temporary files left behind"
    );

    // Unwritable destination directory: an error, not a panic.
    let e = b
        .write_file(&out.path().join("no/such/dir/x.cpio"), Compression::None)
        .unwrap_err();
    assert!(matches!(e, Error::Write(_)), "{e:?}");
}

#[test]
fn recipe_errors_carry_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let e = recipe_err(
        d.path(),
        "files:\n  - src: a\n    dst: /init\n    owner: root\n",
    );
    let msg = e.to_string();
    assert!(
        msg.contains("r.yaml:4:") && msg.contains("unknown field `owner`"),
        "{msg}"
    );
    let e = recipe_err(d.path(), "file: []\n");
    assert!(e.to_string().contains("r.yaml:1:"), "{e}");
    let e = recipe_err(
        d.path(),
        "devices: [{path: /dev/x, type: pipe, major: 1, minor: 1}]",
    );
    assert!(e.to_string().contains("unknown variant `pipe`"), "{e}");
}

#[test]
fn init_must_be_an_executable_file() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("u"), "x").unwrap();
    let e = recipe_err(d.path(), "dirs: [/proc]");
    assert!(
        e.to_string().contains("/init") && e.to_string().contains("missing"),
        "{e}"
    );
    let e = recipe_err(d.path(), "files: [{src: u, dst: /init, mode: \"0644\"}]");
    assert!(e.to_string().contains("not executable"), "{e}");
}

#[test]
fn reader_rejects_garbage_with_typed_errors() {
    for junk in [
        &b""[..],
        b"hello world",
        b"070701zzzzzzzz",
        b"\x1f\x8b\x08\0\0\0\0\0\0\x03garbage",
    ] {
        match initramfs::Reader::new(junk).and_then(initramfs::Reader::entries) {
            Err(Error::Format { .. }) => {}
            other => panic!("{junk:?}: {other:?}"),
        }
    }
    // A valid gzip archive cut short.
    let mut b = Builder::default();
    b.add_bytes("/f", vec![1u8; 50_000], Meta::mode(0o644))
        .unwrap();
    let (gz, _) = b
        .write_to(Vec::new(), Compression::Gzip { level: 1 })
        .unwrap();
    let e = initramfs::Reader::new(&gz[..gz.len() / 2])
        .and_then(initramfs::Reader::entries)
        .unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
}
