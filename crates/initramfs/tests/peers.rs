//! Our archives as the real tools see them: GNU cpio and bsdtar (libarchive)
//! list them as intended and extract them back into the tree they came from.
//!
//! Expected listings here are written by hand from what each entry is meant
//! to be, not computed by this crate.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use initramfs::{Builder, Compression, DeviceKind, Meta, Options};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tools_present() -> bool {
    ["cpio", "bsdtar", "gzip", "mkfifo"]
        .iter()
        .all(|t| testkit::tools::require(t))
}

/// One listed entry, normalised across tools: (mode string, nlink, uid,
/// gid, size or "major,minor", name, link target).
type Row = (String, u32, u32, u32, String, String, Option<String>);

/// Parses `cpio -itv --numeric-uid-gid` / `bsdtar -tvf --numeric-owner` lines.
fn parse_listing(text: &str) -> Vec<Row> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut t: Vec<&str> = line.split_whitespace().collect();
            let mode = t.remove(0).to_string();
            let nlink = t.remove(0).parse().unwrap();
            let uid = t.remove(0).parse().unwrap();
            let gid = t.remove(0).parse().unwrap();
            // Devices: "5,   1" (cpio) or "5,1" (bsdtar).
            let mut size = t.remove(0).to_string();
            if size.ends_with(',') {
                size.push_str(t.remove(0));
            }
            t.drain(..3); // month day year
            let rest = t.join(" ");
            let (name, target) = match rest.split_once(" -> ") {
                Some((n, tg)) => (n.to_string(), Some(tg.to_string())),
                None => match rest.split_once(" link to ") {
                    // bsdtar marks later hard links; the target is checked separately.
                    Some((n, _)) => (n.to_string(), None),
                    None => (rest, None),
                },
            };
            (mode, nlink, uid, gid, size, name, target)
        })
        .collect()
}

fn row(
    mode: &str,
    nlink: u32,
    ids: (u32, u32),
    size: &str,
    name: &str,
    target: Option<&str>,
) -> Row {
    (
        mode.into(),
        nlink,
        ids.0,
        ids.1,
        size.into(),
        name.into(),
        target.map(Into::into),
    )
}

#[test]
fn gnu_cpio_and_bsdtar_list_what_we_meant() {
    if !tools_present() {
        return;
    }
    let mut b = Builder::new(Options {
        mtime: 1_000_000_000,
    });
    b.add_bytes("/bin/tool", "hello world\n", Meta::mode(0o4755))
        .unwrap();
    b.add_bytes(
        "/a/file",
        "twelve bytes",
        Meta {
            mode: 0o640,
            uid: 1000,
            gid: 100,
        },
    )
    .unwrap();
    b.add_hardlink("/z/hard", "/a/file").unwrap();
    b.add_hardlink("/a/hard2", "/a/file").unwrap();
    b.add_symlink("/lnk", "/bin/tool").unwrap();
    b.add_symlink("/a/rel", "file").unwrap();
    b.add_dir("/secret", Meta::mode(0o700)).unwrap();
    b.add_dir("/tmp", Meta::mode(0o1777)).unwrap();
    b.add_device("/dev/console", DeviceKind::Char, 5, 1, Meta::mode(0o600))
        .unwrap();
    b.add_device("/dev/null", DeviceKind::Char, 1, 3, Meta::mode(0o666))
        .unwrap();
    b.add_device(
        "/dev/nvme0n1p1",
        DeviceKind::Block,
        259,
        70000,
        Meta::mode(0o660),
    )
    .unwrap();
    b.add_fifo("/run/fifo", Meta::mode(0o644)).unwrap();
    b.add_bytes("/empty", "", Meta::mode(0o644)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("x.cpio");
    b.write_file(&archive, Compression::None).unwrap();
    let bytes = fs::read(&archive).unwrap();
    assert_eq!(bytes.len() % 4, 0);
    assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));

    let root = (0, 0);
    // Hard links: newc puts the data on the last link (z/hard), nlink 3 on all.
    let want = vec![
        row("drwxr-xr-x", 2, root, "0", "a", None),
        row("-rw-r-----", 3, (1000, 100), "0", "a/file", None),
        row("-rw-r-----", 3, (1000, 100), "0", "a/hard2", None),
        row("lrwxrwxrwx", 1, root, "4", "a/rel", Some("file")),
        row("drwxr-xr-x", 2, root, "0", "bin", None),
        row("-rwsr-xr-x", 1, root, "12", "bin/tool", None),
        row("drwxr-xr-x", 2, root, "0", "dev", None),
        row("crw-------", 1, root, "5,1", "dev/console", None),
        row("crw-rw-rw-", 1, root, "1,3", "dev/null", None),
        row("brw-rw----", 1, root, "259,70000", "dev/nvme0n1p1", None),
        row("-rw-r--r--", 1, root, "0", "empty", None),
        row("lrwxrwxrwx", 1, root, "9", "lnk", Some("/bin/tool")),
        row("drwxr-xr-x", 2, root, "0", "run", None),
        row("prw-r--r--", 1, root, "0", "run/fifo", None),
        row("drwx------", 2, root, "0", "secret", None),
        row("drwxrwxrwt", 2, root, "0", "tmp", None),
        row("drwxr-xr-x", 2, root, "0", "z", None),
        row("-rw-r-----", 3, (1000, 100), "12", "z/hard", None),
    ];

    let f = || fs::File::open(&archive).unwrap();
    let cpio = run(Command::new("cpio")
        .env("TZ", "UTC")
        .args(["-itv", "--numeric-uid-gid", "--quiet"])
        .stdin(f()));
    assert_eq!(parse_listing(&cpio), want, "GNU cpio:\n{cpio}");
    // Dates: GNU cpio renders mtime 1000000000 as Sep 9 2001 (UTC).
    assert!(cpio.lines().all(|l| l.contains("Sep  9  2001")), "{cpio}");

    let bsd = run(Command::new("bsdtar")
        .args(["-tvf"])
        .arg(&archive)
        .arg("--numeric-owner"));
    assert_eq!(parse_listing(&bsd), want, "bsdtar:\n{bsd}");
    // libarchive pairs the later links with the first one.
    assert!(
        bsd.contains("a/hard2 link to a/file") && bsd.contains("z/hard link to a/file"),
        "{bsd}"
    );

    // Same listing through gzip, decoded by the tools themselves.
    let gz = dir.path().join("x.cpio.gz");
    b.write_file(&gz, Compression::Gzip { level: 9 }).unwrap();
    let bsd_gz = run(Command::new("bsdtar")
        .args(["-tvf"])
        .arg(&gz)
        .arg("--numeric-owner"));
    assert_eq!(bsd_gz, bsd);
    let plain = run(Command::new("gzip").arg("-dc").arg(&gz));
    assert_eq!(
        plain.as_bytes(),
        &bytes[..],
        "gzip -d must give back the plain archive"
    );
}

/// A source tree with every kind of entry a tree can hold.
fn make_tree(root: &Path) {
    let mkdir = |p: &str, mode: u32| {
        let d = root.join(p);
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
    };
    let file = |p: &str, data: &[u8], mode: u32| {
        let f = root.join(p);
        fs::write(&f, data).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
    };
    mkdir("usr/bin", 0o755);
    mkdir("etc/secret", 0o700);
    mkdir("var/empty", 0o755);
    mkdir("tmp", 0o1777);
    mkdir("data", 0o750);
    mkdir("run", 0o755);
    let pseudo = |n: usize, seed: u32| -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    };
    file("usr/bin/tool", &pseudo(100_003, 1), 0o755);
    file("usr/bin/suid", &pseudo(5, 2), 0o4755);
    file("etc/secret/key", &pseudo(32, 3), 0o600);
    file("etc/empty", b"", 0o644);
    file("data/odd", &pseudo(4097, 4), 0o640);
    file("data/big", &pseudo((1 << 20) + 3, 5), 0o644);
    file("data/h1", b"shared by two names\n", 0o644);
    fs::hard_link(root.join("data/h1"), root.join("data/h2")).unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
    std::os::unix::fs::symlink("tool", root.join("usr/bin/alias")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/tool", root.join("etc/abs")).unwrap();
    std::os::unix::fs::symlink("../nowhere", root.join("etc/dangling")).unwrap();
    run(Command::new("mkfifo")
        .arg("-m")
        .arg("0640")
        .arg(root.join("run/fifo")));
}

#[derive(Debug, PartialEq)]
enum Node {
    Dir(u32),
    /// Permission bits, length, content hash (keeps failure output readable).
    File(u32, usize, u64),
    Link(PathBuf),
    Fifo(u32),
}

/// Every entry under `root` with type, permission bits and content, plus
/// the groups of paths sharing an inode.
fn snapshot(root: &Path) -> (BTreeMap<String, Node>, Vec<Vec<String>>) {
    let mut nodes = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let md = e.path().symlink_metadata().unwrap();
        let perm = md.mode() & 0o7777;
        let node = if md.is_dir() {
            Node::Dir(perm)
        } else if md.file_type().is_symlink() {
            Node::Link(fs::read_link(e.path()).unwrap())
        } else if md.is_file() {
            inodes.entry(md.ino()).or_default().push(rel.clone());
            let data = fs::read(e.path()).unwrap();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&data, &mut h);
            Node::File(perm, data.len(), std::hash::Hasher::finish(&h))
        } else {
            Node::Fifo(perm)
        };
        nodes.insert(rel, node);
    }
    let mut groups: Vec<Vec<String>> = inodes.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    (nodes, groups)
}

type Snapshot = (BTreeMap<String, Node>, Vec<Vec<String>>);

fn assert_same_tree(got: &Snapshot, want: &Snapshot, tool: &str) {
    let mut diffs = Vec::new();
    for (k, v) in &want.0 {
        match got.0.get(k) {
            None => diffs.push(format!("missing {k}")),
            Some(g) if g != v => diffs.push(format!("{k}: got {g:?}, want {v:?}")),
            _ => {}
        }
    }
    for k in got.0.keys().filter(|k| !want.0.contains_key(*k)) {
        diffs.push(format!("unexpected {k}"));
    }
    if got.1 != want.1 {
        diffs.push(format!(
            "hard-link groups: got {:?}, want {:?}",
            got.1, want.1
        ));
    }
    assert!(
        diffs.is_empty(),
        "{tool} extraction differs from the source tree:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn cpio_and_bsdtar_extract_the_source_tree_back() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src);
    let mut b = Builder::new(Options::default());
    b.add_tree("/", &src).unwrap();
    let archive = work.path().join("tree.cpio.gz");
    b.write_file(&archive, Compression::Gzip { level: 6 })
        .unwrap();

    let want = snapshot(&src);
    assert_eq!(want.1.len(), 2, "the fixture has two hard-link pairs");

    let cpio_out = work.path().join("cpio");
    fs::create_dir(&cpio_out).unwrap();
    let script = format!(
        "gzip -dc '{}' | cpio -idm --no-absolute-filenames --quiet",
        archive.display()
    );
    run(Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(&cpio_out));
    assert_same_tree(&snapshot(&cpio_out), &want, "GNU cpio");

    let bsd_out = work.path().join("bsdtar");
    fs::create_dir(&bsd_out).unwrap();
    run(Command::new("bsdtar")
        .arg("-xpf")
        .arg(&archive)
        .current_dir(&bsd_out));
    assert_same_tree(&snapshot(&bsd_out), &want, "bsdtar");
}
