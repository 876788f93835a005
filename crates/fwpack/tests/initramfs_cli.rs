//! `fwpack initramfs` end to end with the shipped recipe: what GNU cpio sees,
//! `--list` (human and JSON), reproducibility, and exit codes on bad input.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fwpack(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fwpack"));
    c.args(args).env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "fwpack failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn recipe() -> String {
    testkit::workspace_root()
        .join("recipes/updater-initramfs.yaml")
        .display()
        .to_string()
}

/// A stand-in updater: any file; the recipe makes it 0755.
fn fake_updater(dir: &Path) -> PathBuf {
    let p = dir.join("updater");
    fs::write(&p, b"\x7fELF not really, but /init all the same").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    p
}

#[test]
fn shipped_recipe_builds_lists_and_reproduces() {
    if !testkit::tools::require("cpio") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let upd = fake_updater(d.path());
    let out = d.path().join("initramfs.cpio.gz");
    let var = format!("UPDATER={}", upd.display());
    let args = [
        "initramfs",
        "--recipe",
        &recipe(),
        "-o",
        out.to_str().unwrap(),
        "--var",
        &var,
    ];
    let summary = ok(&fwpack(&args, &[("SOURCE_DATE_EPOCH", "1000000000")]));
    assert!(
        summary.contains("entries") && summary.contains("gzip -9"),
        "{summary}"
    );
    let first = fs::read(&out).unwrap();
    ok(&fwpack(&args, &[("SOURCE_DATE_EPOCH", "1000000000")]));
    assert_eq!(
        fs::read(&out).unwrap(),
        first,
        "rebuild must be byte-identical"
    );

    // GNU cpio's view of the archive.
    let listing = Command::new("sh")
        // cpio prints local time; the expected date below is UTC.
        .env("TZ", "UTC")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' | cpio -itv --numeric-uid-gid --quiet",
            out.display()
        ))
        .output()
        .unwrap();
    let listing = ok(&listing);
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{name} missing from:\n{listing}"))
            .to_string()
    };
    assert!(line("init").starts_with("-rwxr-xr-x"), "{listing}");
    let console: Vec<String> = line("dev/console")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(
        &console[..6],
        ["crw-------", "1", "0", "0", "5,", "1"],
        "{listing}"
    );
    let null: Vec<String> = line("dev/null")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(
        &null[..6],
        ["crw-rw-rw-", "1", "0", "0", "1,", "3"],
        "{listing}"
    );
    for dir in ["proc", "sys", "dev", "run", "mnt", "etc/fwpack"] {
        assert!(line(dir).starts_with("drwxr-xr-x"), "{dir}: {listing}");
    }
    assert!(
        listing.lines().all(|l| l.contains("Sep  9  2001")),
        "SOURCE_DATE_EPOCH: {listing}"
    );
    // No modules requested: no module files, no load list.
    assert!(
        !listing.contains("lib/modules") && !listing.contains("modules.load"),
        "{listing}"
    );

    // Our own lister agrees, in both formats.
    let ours = ok(&fwpack(
        &["initramfs", "--list", out.to_str().unwrap()],
        &[],
    ));
    assert!(
        ours.lines().any(|l| l.starts_with("crw-------")
            && l.contains("5, 1")
            && l.ends_with("/dev/console")),
        "{ours}"
    );
    let json = ok(&fwpack(
        &["initramfs", "--list", out.to_str().unwrap(), "--json"],
        &[],
    ));
    let entries: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), listing.lines().count());
    let init = entries.iter().find(|e| e["name"] == "/init").unwrap();
    assert_eq!(
        (init["type"].as_str(), init["mode"].as_str()),
        (Some("file"), Some("0755"))
    );
    let con = entries
        .iter()
        .find(|e| e["name"] == "/dev/console")
        .unwrap();
    assert_eq!(con["rdev"], serde_json::json!([5, 1]));
}

#[test]
fn zstd_and_none_round_trip_through_list() {
    let d = tempfile::tempdir().unwrap();
    let upd = fake_updater(d.path());
    let var = format!("UPDATER={}", upd.display());
    let mut listings = Vec::new();
    for (codec, magic) in [
        ("none", &b"070701"[..]),
        ("zstd", &[0x28, 0xb5, 0x2f, 0xfd][..]),
    ] {
        let out = d.path().join(format!("i.{codec}"));
        ok(&fwpack(
            &[
                "initramfs",
                "-r",
                &recipe(),
                "-o",
                out.to_str().unwrap(),
                "--var",
                &var,
                "--compression",
                codec,
            ],
            &[],
        ));
        assert!(fs::read(&out).unwrap().starts_with(magic), "{codec}");
        listings.push(ok(&fwpack(
            &["initramfs", "--list", out.to_str().unwrap()],
            &[],
        )));
    }
    assert_eq!(listings[0], listings[1]);
}

#[test]
fn bad_input_exit_codes_and_messages() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x.cpio.gz");
    let o = out.to_str().unwrap();
    let r = recipe();

    // Undefined variable: malformed recipe input (4), pointing at the line.
    let e = fwpack(&["initramfs", "-r", &r, "-o", o], &[]);
    assert_eq!(e.status.code(), Some(4));
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(
        msg.contains("updater-initramfs.yaml:") && msg.contains("${UPDATER}"),
        "{msg}"
    );

    // Missing updater binary: I/O (3), naming /init and the file.
    let e = fwpack(
        &[
            "initramfs",
            "-r",
            &r,
            "-o",
            o,
            "--var",
            "UPDATER=/no/such/updater",
        ],
        &[],
    );
    assert_eq!(e.status.code(), Some(3));
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(
        msg.contains("/init") && msg.contains("/no/such/updater"),
        "{msg}"
    );

    // Modules requested without a module tree.
    let upd = fake_updater(d.path());
    let var = format!("UPDATER={}", upd.display());
    let e = fwpack(
        &[
            "initramfs",
            "-r",
            &r,
            "-o",
            o,
            "--var",
            &var,
            "--var",
            "MODULES=virtio_blk",
        ],
        &[],
    );
    assert_eq!(
        e.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&e.stderr)
    );

    // Usage errors: 2.
    for args in [
        vec!["initramfs", "-r", &r, "-o", o, "--var", "no-equals-sign"],
        vec![
            "initramfs",
            "-r",
            &r,
            "-o",
            o,
            "--var",
            &var,
            "--level",
            "10",
        ],
        vec!["initramfs", "-r", &r],
    ] {
        assert_eq!(fwpack(&args, &[]).status.code(), Some(2), "{args:?}");
    }
    // Bad SOURCE_DATE_EPOCH is refused rather than silently ignored.
    let e = fwpack(
        &["initramfs", "-r", &r, "-o", o, "--var", &var],
        &[("SOURCE_DATE_EPOCH", "yesterday")],
    );
    assert_eq!(e.status.code(), Some(4));

    assert!(!out.exists(), "no output after failures");
    assert_eq!(
        fs::read_dir(d.path()).unwrap().count(),
        1,
        "only the fake updater remains"
    );

    // Listing something that is not an archive: 4.
    let junk = d.path().join("junk");
    fs::write(&junk, "not an archive").unwrap();
    assert_eq!(
        fwpack(&["initramfs", "--list", junk.to_str().unwrap()], &[])
            .status
            .code(),
        Some(4)
    );
    assert_eq!(
        fwpack(&["initramfs", "--list", "/no/such/file"], &[])
            .status
            .code(),
        Some(3)
    );
}

/// One raw newc record with the name written as given (NULs included), so
/// that names no writer of ours would produce can be listed.
fn raw_record(name: &[u8], mode: u32, data: &[u8]) -> Vec<u8> {
    let fields = [1, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0];
    let mut r = b"070701".to_vec();
    for v in fields.into_iter().chain([name.len() as u32, 0]) {
        r.extend_from_slice(format!("{v:08x}").as_bytes());
    }
    r.extend_from_slice(name);
    r.resize(r.len().next_multiple_of(4), 0);
    r.extend_from_slice(data);
    r.resize(r.len().next_multiple_of(4), 0);
    r
}

/// Inverse of the escaping documented in `fwpack initramfs --help`.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            continue;
        }
        match it.next() {
            Some('\\') => out.push(b'\\'),
            Some('n') => out.push(b'\n'),
            Some('r') => out.push(b'\r'),
            Some('t') => out.push(b'\t'),
            Some('x') => {
                let hex: String = it.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap());
            }
            Some('u') => {
                assert_eq!(it.next(), Some('{'));
                let hex: String = it.by_ref().take_while(|&c| c != '}').collect();
                let c = char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap();
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
            other => panic!("bad escape {other:?} in {s:?}"),
        }
    }
    out
}

#[test]
fn hostile_names_are_listed_escaped_and_end_at_nul() {
    const REG: u32 = 0o100644;
    // (name as stored, as the kernel and GNU cpio create it, as listed)
    let cases: [(&[u8], &[u8], &str); 6] = [
        (
            b"./evil\x1b]0;pwned\x07\x1b[2J\0",
            b"./evil\x1b]0;pwned\x07\x1b[2J",
            r"/evil\x1b]0;pwned\x07\x1b[2J",
        ),
        (b"new\nline\0", b"new\nline", r"/new\nline"),
        (b"bin/sh\0hidden\0", b"bin/sh", "/bin/sh"),
        (
            b"bad\xff\xfe\xc2\x9b\0",
            b"bad\xff\xfe\xc2\x9b",
            r"/bad\xff\xfe\u{9b}",
        ),
        (b"back\\slash\0", b"back\\slash", r"/back\\slash"),
        (b"lnk\0", b"lnk", "/lnk"),
    ];
    let mut archive = Vec::new();
    for (stored, _, _) in &cases[..5] {
        archive.extend(raw_record(stored, REG, b""));
    }
    archive.extend(raw_record(b"lnk\0", 0o120777, b"t\x1b[31mx\0junk"));
    archive.extend(raw_record(b"TRAILER!!!\0", 0, b""));
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("hostile.cpio");
    fs::write(&path, &archive).unwrap();
    let p = path.to_str().unwrap();

    let text = fwpack(&["initramfs", "--list", p], &[]);
    let text = ok(&text);
    assert!(
        !text.bytes().any(|b| (b < 0x20 && b != b'\n') || b == 0x7f),
        "raw control bytes in {text:?}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{text}");
    for (line, (_, _, listed)) in lines.iter().zip(&cases) {
        assert!(line.contains(&format!(" {listed}")), "{line} vs {listed}");
    }
    assert!(lines[5].ends_with(r"/lnk -> t\x1b[31mx"), "{}", lines[5]);

    // JSON: valid, and the exact bytes come back through the documented
    // escapes.
    let json = ok(&fwpack(&["initramfs", "--list", p, "--json"], &[]));
    let entries: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), cases.len());
    for (e, (_, created, listed)) in entries.iter().zip(&cases) {
        let name = e["name"].as_str().unwrap();
        assert_eq!(name, *listed);
        let created = created.strip_prefix(b"./").unwrap_or(created);
        assert_eq!(unescape(&name[1..]), created);
    }
    assert_eq!(
        unescape(entries[5]["target"].as_str().unwrap()),
        b"t\x1b[31mx"
    );

    // GNU cpio reads the same names: it ends each at its first NUL (and
    // prints them raw, which is what --list does not do).
    if !testkit::tools::require("cpio") {
        return;
    }
    let t = Command::new("cpio")
        .args(["-it", "--quiet", "-F", p])
        .output()
        .unwrap();
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    let want: Vec<u8> = cases
        .iter()
        .flat_map(|(_, created, _)| created.iter().copied().chain([b'\n']))
        .collect();
    assert_eq!(
        t.stdout,
        want,
        "cpio -t: {:?}",
        String::from_utf8_lossy(&t.stdout)
    );
    // And it creates bin/sh, as the kernel would, not "bin/sh\0hidden".
    let x = d.path().join("x");
    fs::create_dir(&x).unwrap();
    let st = Command::new("cpio")
        .args(["-id", "--quiet", "-F"])
        .arg(&path)
        .current_dir(&x)
        .status()
        .unwrap();
    assert!(st.success());
    let bin: Vec<_> = fs::read_dir(x.join("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(bin, ["sh"]);
}

/// Several MiB that compress a little, like binaries: deflate blocks of
/// very different cost, so the threads finish out of order.
fn mixed_tree(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("lib")).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (i, len) in [1_300_000usize, 2_100_001, 70_000, 0, 900_000]
        .iter()
        .enumerate()
    {
        let data: Vec<u8> = (0..*len)
            .map(|j| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (j / 3000) % 3 == 0 {
                    x as u8
                } else {
                    b"libc.so.6 GLIBC_2.34 __stack_chk_fail "[j % 38]
                }
            })
            .collect();
        fs::write(tree.join(format!("lib/f{i}")), data).unwrap();
    }
    tree
}

#[test]
fn jobs_give_the_same_archive_and_gnu_tools_read_it() {
    if !["cpio", "gzip", "zstd"]
        .iter()
        .all(|t| testkit::tools::require(t))
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let upd = fake_updater(d.path());
    let tree = mixed_tree(d.path());
    let recipe = d.path().join("r.yaml");
    fs::write(
        &recipe,
        format!(
            "files:\n  - {{src: \"{}\", dst: /init, mode: \"0755\"}}\ntrees:\n  - {{src: \"{}\", dst: /}}\n",
            upd.display(),
            tree.display()
        ),
    )
    .unwrap();
    for (codec, level, test) in [
        ("gzip", "9", "gzip -t"),
        ("gzip", "1", "gzip -t"),
        ("zstd", "1", "zstd -qt"),
    ] {
        let mut first: Option<Vec<u8>> = None;
        for jobs in ["1", "2", "3"] {
            let out = d.path().join(format!("i.{codec}{level}.{jobs}"));
            ok(&fwpack(
                &[
                    "initramfs",
                    "-r",
                    recipe.to_str().unwrap(),
                    "-o",
                    out.to_str().unwrap(),
                    "--compression",
                    codec,
                    "--level",
                    level,
                    "--jobs",
                    jobs,
                ],
                &[("SOURCE_DATE_EPOCH", "1000000000")],
            ));
            let bytes = fs::read(&out).unwrap();
            match &first {
                None => first = Some(bytes),
                Some(f) => assert!(
                    *f == bytes,
                    "{codec} -{level}: --jobs {jobs} differs from --jobs 1"
                ),
            }
            if jobs != "3" {
                continue;
            }
            // The codec's own tool checks the stream (CRC32/ISIZE, checksum),
            // and GNU cpio reads every member back intact.
            let dc = if codec == "gzip" {
                "gzip -dc"
            } else {
                "zstd -dcq"
            };
            let sh = |cmd: String| {
                let o = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
                assert!(
                    o.status.success(),
                    "{cmd}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                o.stdout
            };
            sh(format!("{test} '{}'", out.display()));
            let x = d.path().join(format!("x.{codec}{level}"));
            fs::create_dir(&x).unwrap();
            sh(format!(
                "cd '{}' && {dc} '{}' | cpio -id --quiet",
                x.display(),
                out.display()
            ));
            for i in 0..5 {
                let name = format!("lib/f{i}");
                assert!(
                    fs::read(x.join(&name)).unwrap() == fs::read(tree.join(&name)).unwrap(),
                    "{codec}: {name} differs after cpio -i"
                );
            }
        }
    }
}
