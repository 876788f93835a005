//! `fwpack check-elf` end to end: real binaries from the cross toolchains,
//! the exit status scripts rely on, and the JSON lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const HELLO_RS: &str = "fn main() { println!(\"hello\"); }\n";
const HELLO_C: &str = "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n";

struct Bins {
    static_a64: PathBuf,
    dynamic_a64: PathBuf,
    script: PathBuf,
}

fn must(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (cargo xtask test installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn bins() -> &'static Bins {
    static B: OnceLock<Bins> = OnceLock::new();
    B.get_or_init(|| {
        // Per-process directory; those of finished processes are removed.
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("check-elf-cli");
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            if !Path::new("/proc").join(e.file_name()).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = root.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hello.rs"), HELLO_RS).unwrap();
        std::fs::write(dir.join("hello.c"), HELLO_C).unwrap();
        let static_a64 = dir.join("updater-aarch64");
        must(
            Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
                .current_dir(&dir)
                .args([
                    "--target",
                    "aarch64-unknown-linux-musl",
                    "-C",
                    "linker=rust-lld",
                    "-C",
                    "target-feature=+crt-static",
                    "-C",
                    "opt-level=s",
                    "-C",
                    "strip=symbols",
                    "hello.rs",
                    "-o",
                ])
                .arg(&static_a64),
        );
        let dynamic_a64 = dir.join("hello-aarch64-gnu");
        must(
            Command::new("aarch64-linux-gnu-gcc")
                .current_dir(&dir)
                .args(["-O2", "hello.c", "-o"])
                .arg(&dynamic_a64),
        );
        let script = dir.join("init.sh");
        std::fs::write(&script, "#!/bin/sh\nexec /bin/updater\n").unwrap();
        Bins {
            static_a64,
            dynamic_a64,
            script,
        }
    })
}

fn fwpack(args: &[&str], files: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fwpack"))
        .arg("check-elf")
        .args(args)
        .args(files)
        .output()
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn static_binary_for_the_right_machine_passes() {
    let b = bins();
    let o = fwpack(
        &[
            "--machine",
            "aarch64",
            "--require-stripped",
            "--budget",
            "1MiB",
        ],
        &[&b.static_a64],
    );
    assert_eq!(
        code(&o),
        0,
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    let out = stdout(&o);
    assert!(
        out.contains("updater-aarch64: ok (aarch64, ELF64, EXEC, static, stripped"),
        "{out}"
    );
}

#[test]
fn policy_failures_exit_7_and_name_the_libraries() {
    let b = bins();
    let o = fwpack(&["--machine", "aarch64"], &[&b.static_a64, &b.dynamic_a64]);
    assert_eq!(code(&o), 7);
    let out = stdout(&o);
    assert!(out.contains("updater-aarch64: ok"), "{out}");
    assert!(out.contains("hello-aarch64-gnu: FAIL"), "{out}");
    assert!(out.contains("/lib/ld-linux-aarch64.so.1"), "{out}");
    assert!(out.contains("libc.so.6"), "{out}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1 of 2 file(s) failed the ELF policy"),
        "{err}"
    );

    // Wrong board, and over budget: policy too.
    assert_eq!(code(&fwpack(&["--machine", "x86_64"], &[&b.static_a64])), 7);
    assert_eq!(code(&fwpack(&["--machine", "arm"], &[&b.static_a64])), 7);
    assert_eq!(code(&fwpack(&["--budget", "64K"], &[&b.static_a64])), 7);
}

#[test]
fn not_elf_exits_4_even_next_to_policy_failures() {
    let b = bins();
    let o = fwpack(&[], &[&b.script]);
    assert_eq!(code(&o), 4);
    assert!(stdout(&o).contains("a script"), "{}", stdout(&o));
    let o = fwpack(&[], &[&b.dynamic_a64, &b.script, &b.static_a64]);
    assert_eq!(code(&o), 4);
    // Every file is still reported.
    assert_eq!(
        stdout(&o).lines().filter(|l| !l.starts_with(' ')).count(),
        3
    );
}

#[test]
fn unreadable_file_exits_3() {
    let o = fwpack(&[], &[Path::new("/nonexistent/updater")]);
    assert_eq!(code(&o), 3);
}

#[test]
fn bad_arguments_exit_2() {
    let b = bins();
    assert_eq!(code(&fwpack(&["--machine", "vax11"], &[&b.static_a64])), 2);
    assert_eq!(code(&fwpack(&["--budget", "lots"], &[&b.static_a64])), 2);
    assert_eq!(code(&fwpack(&[], &[])), 2);
}

#[test]
fn json_is_one_object_per_file() {
    let b = bins();
    let o = fwpack(
        &["--json", "--machine", "aarch64"],
        &[&b.static_a64, &b.dynamic_a64, &b.script],
    );
    assert_eq!(code(&o), 4);
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["verdict"], "pass");
    assert_eq!(lines[0]["facts"]["linkage"], "static");
    assert_eq!(lines[0]["facts"]["machine"], "aarch64");
    assert_eq!(lines[1]["verdict"], "rejected");
    assert_eq!(lines[1]["facts"]["needed"][0], "libc.so.6");
    assert_eq!(
        lines[1]["facts"]["interpreter"],
        "/lib/ld-linux-aarch64.so.1"
    );
    assert_eq!(lines[2]["verdict"], "malformed");
    assert_eq!(lines[2]["findings"][0]["kind"], "not_elf");
    assert!(lines[2]["facts"].is_null());
}

/// Runs check-elf under a guard: a run that does not end within two
/// minutes (a FIFO open or read blocking, /dev/zero read without end) is
/// killed and fails the test instead of hanging the suite. `ulimit -v`
/// turns a read that grows without bound into a failed allocation rather
/// than gigabytes taken from the machine.
fn fwpack_guarded(args: &[&str], files: &[&Path]) -> Output {
    use std::time::{Duration, Instant};
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" check-elf \"$@\"")
        .arg(env!("CARGO_BIN_EXE_fwpack"))
        .args(args)
        .args(files)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("check-elf {args:?} {files:?} did not finish: it blocks");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Outputs are a few lines: they fit in the pipe buffers while waiting.
    child.wait_with_output().unwrap()
}

#[test]
fn non_regular_files_are_refused_promptly_with_exit_3() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let sock = d.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    for (path, kind) in [
        (fifo.as_path(), "a FIFO"),
        (Path::new("/dev/zero"), "a character device"),
        (d.path(), "a directory"),
        (sock.as_path(), "a socket"),
    ] {
        let o = fwpack_guarded(&["--budget", "1M"], &[path]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(code(&o), 3, "{}: {err}", path.display());
        assert!(
            err.contains(&format!("{} is {kind}, not a regular file", path.display())),
            "{err}"
        );
        // Without a budget too (the bound must not depend on one).
        assert_eq!(code(&fwpack_guarded(&[], &[path])), 3);
    }
}

#[test]
fn large_files_are_refused_without_being_read() {
    // Sparse: 8 GiB of length, no blocks. Reading it whole would need
    // 8 GiB of memory; ulimit -v in the guard makes that fail loudly.
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    let o = fwpack_guarded(&["--budget", "1M", "--json"], &[&big]);
    assert_eq!(code(&o), 7, "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["verdict"], "rejected");
    assert_eq!(v["findings"][0]["kind"], "over_budget");
    assert_eq!(v["findings"][0]["size"], 8u64 << 30);
    assert!(v["facts"].is_null());
    // No budget: only the ELF header's bytes are read (all zero: not an
    // ELF), never the 8 GiB.
    let o = fwpack_guarded(&[], &[&big]);
    assert_eq!(code(&o), 4, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("not an ELF file"), "{}", stdout(&o));
}

#[test]
fn a_large_elf_is_checked_from_its_headers_alone() {
    // A real static binary grown to 8 GiB (sparse): under the guard's
    // 1 GiB address-space limit it can only be checked by reading what its
    // headers point at, and the facts are those of the small file.
    let b = bins();
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big-updater");
    std::fs::copy(&b.static_a64, &big).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    let facts = |o: &Output| -> serde_json::Value {
        let mut v: serde_json::Value = serde_json::from_str(stdout(o).trim()).unwrap();
        v["facts"]["file_size"] = 0.into();
        v["facts"].take()
    };
    let small = fwpack_guarded(&["--machine", "aarch64", "--json"], &[&b.static_a64]);
    assert_eq!(
        code(&small),
        0,
        "{}",
        String::from_utf8_lossy(&small.stderr)
    );
    let o = fwpack_guarded(&["--machine", "aarch64", "--json"], &[&big]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(facts(&o), facts(&small));
}

#[test]
fn hostile_paths_and_strings_are_escaped() {
    // A file name with an ESC sequence and a newline (as a listing of an
    // unpacked hostile archive would pass), and an interpreter path with
    // one: neither reaches the terminal raw, in the report or the summary.
    let b = bins();
    let mut bytes = std::fs::read(&b.dynamic_a64).unwrap();
    let interp = b"/lib/ld-linux-aarch64.so.1";
    let at = bytes
        .windows(interp.len())
        .position(|w| w == interp)
        .expect("PT_INTERP string");
    bytes[at + 5..at + 9].copy_from_slice(b"\x1b[2J");
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("e\x1b]0;t\x07\n");
    std::fs::write(&f, &bytes).unwrap();
    let o = fwpack(&[], &[&f]);
    assert_eq!(code(&o), 7);
    let (out, err) = (stdout(&o), String::from_utf8_lossy(&o.stderr).into_owned());
    for text in [&out, &err] {
        assert!(!text.contains(['\x1b', '\x07']), "{text:?}");
        assert!(text.contains(r"/e\x1b]0;t\x07\n: "), "{text}");
    }
    assert!(out.contains(r"/lib/\u{1b}[2Jinux-aarch64.so.1"), "{out}");
    assert_eq!(out.lines().filter(|l| !l.starts_with(' ')).count(), 1);
}
