//! Bad input on the command line: every cause said once, every class of
//! mistake its own exit code, inputs that are not regular files named for
//! what they are, a closed stdout ended quietly, I/O errors naming their
//! path, and published outputs readable under the umask.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn command(args: &[&str], dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fwpack"));
    c.args(args)
        .current_dir(dir)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    c
}

/// Runs fwpack and kills it after a minute: a FIFO that is opened or read
/// blocks forever, which must fail the test, not hang the suite.
fn run(mut c: Command) -> Output {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fwpack");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{c:?} did not finish: it blocks");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn fwpack(args: &[&str], dir: &Path) -> Output {
    run(command(args, dir))
}

fn fwpack_umask(args: &[&str], dir: &Path, mask: libc::mode_t) -> Output {
    let mut c = command(args, dir);
    // SAFETY: umask is async-signal-safe and touches only the child.
    unsafe {
        c.pre_exec(move || {
            libc::umask(mask);
            Ok(())
        });
    }
    run(c)
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> Output {
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    o
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A key pair and a signed image in a fresh directory.
fn signed_image() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    std::fs::write(dir.join("rootfs.img"), vec![5u8; 200_000]).unwrap();
    ok(fwpack(&["keygen", "-o", "release.pem"], &dir));
    ok(fwpack(
        &[
            "stamp",
            "--version",
            "1",
            "--board",
            "qemu-x86_64",
            "-s",
            "rootfs=rootfs.img,target=system",
            "--key",
            "release.pem",
            "-o",
            "update.fwi",
        ],
        &dir,
    ));
    (tmp, dir)
}

#[test]
fn each_cause_is_said_once() {
    let d = tempfile::tempdir().unwrap();
    let cases: &[&[&str]] = &[
        &["initramfs", "--list", "missing.cpio"],
        &["inspect", "missing.fwi"],
        &["verify", "-k", "missing.pem", "missing.fwi"],
        &[
            "stamp",
            "--version",
            "1",
            "--board",
            "b",
            "-s",
            "rootfs=missing.img",
            "-o",
            "x.fwi",
        ],
        &["disk", "--inspect", "missing.img"],
        &[
            "build",
            "--config",
            "missing.yaml",
            "--key",
            "missing.pem",
            "--out",
            "out",
            "--kernel",
            "vmlinuz",
        ],
    ];
    for args in cases {
        let o = fwpack(args, d.path());
        let err = stderr(&o);
        assert_eq!(code(&o), 3, "{args:?}: {err}");
        assert!(err.contains("missing."), "{args:?} names the file: {err}");
        assert_eq!(
            err.matches("No such file or directory").count(),
            1,
            "{args:?} says the cause once: {err}"
        );
    }
}

#[test]
fn a_key_of_the_wrong_kind_is_a_usage_error() {
    let (_tmp, dir) = signed_image();
    let o = fwpack(&["verify", "-k", "release.pem", "update.fwi"], &dir);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{err}");
    assert!(
        err.contains("release.pem is a private key; a public key is needed"),
        "{err}"
    );
    assert!(!err.contains("ASN.1") && !err.contains("asn1"), "{err}");
    ok(fwpack(
        &["verify", "-k", "release.pub.pem", "update.fwi"],
        &dir,
    ));

    let o = fwpack(&["sign", "update.fwi", "--key", "release.pub.pem"], &dir);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("is a public key"), "{}", stderr(&o));
}

#[test]
fn inputs_that_are_not_regular_files_are_named_and_exit_3() {
    let (_tmp, dir) = signed_image();
    mkfifo(&dir.join("fifo"));
    let fifo = dir.join("fifo").to_string_lossy().into_owned();
    let seg = format!("rootfs={fifo}");
    let seg_zero = "rootfs=/dev/zero".to_string();
    let stamp = |s: &str| -> Vec<String> {
        [
            "stamp",
            "--version",
            "1",
            "--board",
            "b",
            "-s",
            s,
            "-o",
            "x.fwi",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (vec!["inspect".into(), fifo.clone()], &fifo, "a FIFO"),
        (
            vec![
                "verify".into(),
                "-k".into(),
                "release.pub.pem".into(),
                fifo.clone(),
            ],
            &fifo,
            "a FIFO",
        ),
        (
            vec![
                "verify".into(),
                "-k".into(),
                fifo.clone(),
                "update.fwi".into(),
            ],
            &fifo,
            "a FIFO",
        ),
        (
            vec![
                "sign".into(),
                "update.fwi".into(),
                "--key".into(),
                fifo.clone(),
            ],
            &fifo,
            "a FIFO",
        ),
        (
            vec![
                "sign".into(),
                fifo.clone(),
                "--key".into(),
                "release.pem".into(),
            ],
            &fifo,
            "a FIFO",
        ),
        (stamp(&seg), &fifo, "a FIFO"),
        (stamp(&seg_zero), "/dev/zero", "a character device"),
        (
            vec!["initramfs".into(), "--list".into(), fifo.clone()],
            &fifo,
            "a FIFO",
        ),
        (
            vec!["initramfs".into(), "--list".into(), "/dev/zero".into()],
            "/dev/zero",
            "a character device",
        ),
        (
            vec!["disk".into(), "--inspect".into(), fifo.clone()],
            &fifo,
            "a FIFO",
        ),
        (
            vec![
                "build".into(),
                "--board".into(),
                "qemu-x86_64".into(),
                "--out".into(),
                "out".into(),
                "--kernel".into(),
                fifo.clone(),
                "--key".into(),
                "release.pem".into(),
                // Any regular file: the kernel is refused before it is used.
                "--updater".into(),
                "rootfs.img".into(),
            ],
            &fifo,
            "a FIFO",
        ),
    ];
    for (args, path, kind) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = fwpack(&args, &dir);
        let err = stderr(&o);
        assert_eq!(code(&o), 3, "{args:?}: {err}");
        assert!(
            err.contains(&format!("{path} is {kind}, not a regular file")),
            "{args:?}: {err}"
        );
        assert!(!err.contains("truncated"), "{args:?}: {err}");
    }
}

/// `dir/tree` with `n` files, archived by GNU cpio as newc.
fn cpio_archive(dir: &Path, n: usize) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let mut names = String::new();
    for i in 0..n {
        let name = format!("file-with-a-longish-name-{i:05}");
        std::fs::write(tree.join(&name), b"x").unwrap();
        names.push_str(&name);
        names.push('\n');
    }
    let out = dir.join("a.cpio");
    let mut c = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&tree)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .expect("GNU cpio");
    use std::io::Write;
    c.stdin.take().unwrap().write_all(names.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success());
    out
}

#[test]
fn a_zstd_window_over_the_limit_is_malformed_input() {
    let d = tempfile::tempdir().unwrap();
    let archive = cpio_archive(d.path(), 3);
    // Streamed (no content size), so the frame declares the full 1 GiB
    // window, over the decoder's limit.
    let zst = d.path().join("a.cpio.zst");
    let st = Command::new("sh")
        .arg("-c")
        .arg("zstd -q --zstd=wlog=30 -c < a.cpio > a.cpio.zst")
        .current_dir(d.path())
        .status()
        .expect("zstd");
    assert!(st.success());
    let o = fwpack(&["initramfs", "--list", zst.to_str().unwrap()], d.path());
    let err = stderr(&o);
    assert_eq!(code(&o), 4, "{err}");
    assert!(err.contains("a.cpio.zst"), "{err}");
    // The same archive with a small window lists.
    let st = Command::new("sh")
        .arg("-c")
        .arg("zstd -q -f --zstd=wlog=20 -c < a.cpio > a.cpio.zst")
        .current_dir(d.path())
        .status()
        .unwrap();
    assert!(st.success());
    ok(fwpack(
        &["initramfs", "--list", zst.to_str().unwrap()],
        d.path(),
    ));
    let _ = archive;
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let d = tempfile::tempdir().unwrap();
    // Far more listing than a pipe buffer holds.
    let archive = cpio_archive(d.path(), 4000);
    let mut child = command(
        &["initramfs", "--list", archive.to_str().unwrap()],
        d.path(),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty());
    // The reader is gone (as `| head -1` leaves it).
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "nothing said about the closed pipe");
}

#[test]
fn io_errors_name_their_path() {
    let (_tmp, dir) = signed_image();
    for (args, path) in [
        (
            &[
                "stamp",
                "--version",
                "1",
                "--board",
                "b",
                "-s",
                "rootfs=rootfs.img",
                "-o",
                "no-such-dir/x.fwi",
            ][..],
            "no-such-dir",
        ),
        (
            &["keygen", "-o", "no-such-dir/k.pem"][..],
            "no-such-dir/k.pem",
        ),
        (
            &[
                "sign",
                "update.fwi",
                "--export-message",
                "no-such-dir/m.bin",
            ][..],
            "no-such-dir",
        ),
        (
            &["sign", "absent.fwi", "--key", "release.pem"][..],
            "absent.fwi",
        ),
    ] {
        let o = fwpack(args, &dir);
        let err = stderr(&o);
        assert_eq!(code(&o), 3, "{args:?}: {err}");
        assert!(err.contains(path), "{args:?} names {path}: {err}");
    }
}

#[test]
fn published_outputs_follow_the_umask_and_private_keys_stay_private() {
    for (mask, public) in [(0o022, 0o644), (0o027, 0o640)] {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::write(dir.join("rootfs.img"), vec![5u8; 10_000]).unwrap();
        ok(fwpack_umask(&["keygen", "-o", "k.pem"], dir, mask));
        ok(fwpack_umask(
            &[
                "stamp",
                "--version",
                "1",
                "--board",
                "b",
                "-s",
                "rootfs=rootfs.img",
                "--key",
                "k.pem",
                "-o",
                "u.fwi",
            ],
            dir,
            mask,
        ));
        ok(fwpack_umask(
            &["sign", "u.fwi", "--export-message", "m.bin"],
            dir,
            mask,
        ));
        assert_eq!(mode(&dir.join("k.pem")), 0o600, "umask {mask:o}");
        for f in ["k.pub.pem", "u.fwi", "m.bin"] {
            assert_eq!(mode(&dir.join(f)), public, "{f} under umask {mask:o}");
        }
    }
}
