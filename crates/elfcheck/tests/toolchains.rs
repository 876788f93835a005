//! Fixtures built by the real toolchains the boards use (rustc for the
//! musl and glibc targets, Debian's cross gcc and binutils), checked by us
//! and by readelf and file. Built once per run into CARGO_TARGET_TMPDIR.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use elfcheck::{
    check_bytes, check_file, Class, ElfType, FindingKind, Linkage, Machine, Policy, Report, Verdict,
};

const HELLO_RS: &str = "fn main() { println!(\"hello from the device\"); }\n";
const HELLO_C: &str = "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n";
const LIB_RS: &str = "#[no_mangle] pub extern \"C\" fn answer() -> i32 { 42 }\n";
/// exit(0) through the EABI syscall: a whole static 32-bit ARM program.
const ARM_S: &str = "\t.syntax unified\n\t.arm\n\t.text\n\t.global _start\n_start:\n\
                     \tmov r0, #0\n\tmov r7, #1\n\tsvc #0\n";

struct Fixtures {
    dir: PathBuf,
    files: BTreeMap<&'static str, PathBuf>,
}

impl Fixtures {
    fn path(&self, name: &str) -> &Path {
        self.files
            .get(name)
            .unwrap_or_else(|| panic!("no fixture {name}"))
    }
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (cargo xtask test installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn rustc(dir: &Path, src: &str, out: &str, args: &[&str]) -> PathBuf {
    let o = dir.join(out);
    run(
        Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .current_dir(dir)
            .args(["--edition", "2021", "-C", "opt-level=s"])
            .args(args)
            .arg(src)
            .arg("-o")
            .arg(&o),
    );
    o
}

/// Overwrites `p_flags` of every executable PT_LOAD with R|W|X, reading the
/// program header table with fixed ELF64 little-endian offsets (independent
/// of the code under test; readelf confirms the result).
fn patch_wx(bytes: &mut [u8]) {
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(bytes, 54), u16_at(bytes, 56));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let flags = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
        if p_type == 1 && flags & 1 != 0 {
            bytes[at + 4..at + 8].copy_from_slice(&7u32.to_le_bytes());
        }
    }
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(build_fixtures)
}

fn build_fixtures() -> Fixtures {
    // One directory per process so parallel `cargo test` runs do not race;
    // directories of processes that are gone are cleared first.
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("elfcheck-fixtures");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !Path::new("/proc").join(&pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = root.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.rs"), HELLO_RS).unwrap();
    std::fs::write(dir.join("hello.c"), HELLO_C).unwrap();
    std::fs::write(dir.join("lib.rs"), LIB_RS).unwrap();
    std::fs::write(dir.join("arm.s"), ARM_S).unwrap();

    let mut files = BTreeMap::new();
    let strip = ["-C", "strip=symbols"];
    let static_crt = ["-C", "target-feature=+crt-static"];

    files.insert(
        "aarch64-musl",
        rustc(
            &dir,
            "hello.rs",
            "aarch64-musl",
            &[
                "--target",
                "aarch64-unknown-linux-musl",
                "-C",
                "linker=rust-lld",
                static_crt[0],
                static_crt[1],
                strip[0],
                strip[1],
            ],
        ),
    );
    files.insert(
        "x86_64-musl-static-pie",
        rustc(
            &dir,
            "hello.rs",
            "x86_64-musl",
            &[
                "--target",
                "x86_64-unknown-linux-musl",
                static_crt[0],
                static_crt[1],
                strip[0],
                strip[1],
            ],
        ),
    );
    files.insert(
        "x86_64-musl-unstripped",
        rustc(
            &dir,
            "hello.rs",
            "x86_64-musl-unstripped",
            &[
                "--target",
                "x86_64-unknown-linux-musl",
                static_crt[0],
                static_crt[1],
                "-C",
                "debuginfo=1",
            ],
        ),
    );
    files.insert(
        "riscv64-gnu-static",
        rustc(
            &dir,
            "hello.rs",
            "riscv64-gnu",
            &[
                "--target",
                "riscv64gc-unknown-linux-gnu",
                "-C",
                "linker=riscv64-linux-gnu-gcc",
                static_crt[0],
                static_crt[1],
                strip[0],
                strip[1],
            ],
        ),
    );
    files.insert(
        "x86_64-gnu-dynamic",
        rustc(&dir, "hello.rs", "x86_64-gnu-dynamic", &[]),
    );
    files.insert(
        "x86_64-gnu-cdylib",
        rustc(
            &dir,
            "lib.rs",
            "libanswer.so",
            &["--crate-type", "cdylib", strip[0], strip[1]],
        ),
    );

    let a64dyn = dir.join("aarch64-gnu-dynamic");
    run(Command::new("aarch64-linux-gnu-gcc")
        .current_dir(&dir)
        .args(["-O2", "hello.c", "-o"])
        .arg(&a64dyn));
    files.insert("aarch64-gnu-dynamic", a64dyn.clone());

    run(Command::new("arm-linux-gnueabihf-as")
        .current_dir(&dir)
        .args(["arm.s", "-o", "arm.o"]));
    let arm = dir.join("arm32-static");
    run(Command::new("arm-linux-gnueabihf-ld")
        .current_dir(&dir)
        .args(["-s", "-z", "noexecstack", "arm.o", "-o"])
        .arg(&arm));
    files.insert("arm32-static", arm);
    let armx = dir.join("arm32-execstack");
    run(Command::new("arm-linux-gnueabihf-ld")
        .current_dir(&dir)
        .args(["-s", "-z", "execstack", "arm.o", "-o"])
        .arg(&armx));
    files.insert("arm32-execstack", armx);

    let script = dir.join("updater.sh");
    std::fs::write(&script, "#!/bin/sh\nexec /sbin/updater \"$@\"\n").unwrap();
    files.insert("shell-script", script);

    // The interpreter request stays inside the first 4 KiB; the second
    // PT_LOAD, the dynamic section and the section headers are cut off.
    let full = std::fs::read(&a64dyn).unwrap();
    let truncated = dir.join("aarch64-gnu-dynamic-truncated");
    std::fs::write(&truncated, &full[..4096]).unwrap();
    files.insert("truncated", truncated);

    let mut wx = std::fs::read(&files["aarch64-musl"]).unwrap();
    patch_wx(&mut wx);
    let wx_path = dir.join("aarch64-musl-wx");
    std::fs::write(&wx_path, wx).unwrap();
    files.insert("wx-patched", wx_path);

    Fixtures { dir, files }
}

fn policy(machine: Machine) -> Policy {
    Policy {
        machine: Some(machine),
        require_stripped: true,
        ..Policy::default()
    }
}

fn check(name: &str, policy: &Policy) -> Report {
    check_file(fixtures().path(name), policy).unwrap()
}

fn error_kinds(r: &Report) -> Vec<&FindingKind> {
    r.errors().map(|f| &f.kind).collect()
}

// ---- Verdicts ------------------------------------------------------------

#[test]
fn aarch64_musl_is_static_and_passes() {
    let r = check("aarch64-musl", &policy(Machine::Aarch64));
    assert!(r.passed(), "{:#?}", r.findings);
    let f = r.facts.unwrap();
    assert_eq!(f.linkage, Linkage::Static);
    assert_eq!(f.elf_type, ElfType::Exec);
    assert_eq!(f.stripped, Some(true));
    // And it is refused for the other boards.
    let r = check("aarch64-musl", &policy(Machine::X86_64));
    assert_eq!(r.verdict(), Verdict::Rejected);
    assert!(error_kinds(&r).contains(&&FindingKind::WrongMachine {
        expected: Machine::X86_64,
        found: Machine::Aarch64
    }));
}

#[test]
fn x86_64_musl_static_pie_is_accepted_as_static() {
    let r = check("x86_64-musl-static-pie", &policy(Machine::X86_64));
    assert!(r.passed(), "{:#?}", r.findings);
    let f = r.facts.unwrap();
    assert_eq!(f.linkage, Linkage::StaticPie);
    assert_eq!(f.elf_type, ElfType::Dyn);
    assert!(f.pie);
    assert!(f.interpreter.is_none() && f.needed.is_empty());
}

#[test]
fn riscv64_gnu_crt_static_is_static() {
    let r = check("riscv64-gnu-static", &policy(Machine::Riscv64));
    assert!(r.passed(), "{:#?}", r.findings);
    let f = r.facts.unwrap();
    assert_eq!((f.machine, f.class), (Machine::Riscv64, Class::Elf64));
    assert_eq!(f.linkage, Linkage::Static);
}

#[test]
fn x86_64_gnu_dynamic_is_refused_with_its_libraries() {
    let r = check("x86_64-gnu-dynamic", &policy(Machine::X86_64));
    assert_eq!(r.verdict(), Verdict::Rejected);
    let f = r.facts.as_ref().unwrap();
    assert_eq!(f.linkage, Linkage::Dynamic);
    assert!(f.pie, "a dynamic PIE, refused even though it is PIE");
    assert!(f.needed.iter().any(|l| l == "libc.so.6"), "{:?}", f.needed);
    let kinds = error_kinds(&r);
    assert!(kinds.iter().any(
        |k| matches!(k, FindingKind::Interpreter { path } if path.contains("ld-linux-x86-64"))
    ));
    assert!(kinds.iter().any(|k| matches!(k, FindingKind::NeededLibraries { libraries } if libraries.contains(&"libc.so.6".to_string()))));
}

#[test]
fn aarch64_gnu_dynamic_is_refused() {
    let r = check("aarch64-gnu-dynamic", &policy(Machine::Aarch64));
    assert_eq!(r.verdict(), Verdict::Rejected);
    let f = r.facts.as_ref().unwrap();
    assert_eq!(f.interpreter.as_deref(), Some("/lib/ld-linux-aarch64.so.1"));
    assert_eq!(f.needed, ["libc.so.6"]);
}

#[test]
fn cdylib_is_a_library_not_a_program() {
    let r = check("x86_64-gnu-cdylib", &policy(Machine::X86_64));
    assert_eq!(r.verdict(), Verdict::Rejected);
    assert!(error_kinds(&r).contains(&&FindingKind::SharedObject));
}

#[test]
fn arm32_is_reported_as_arm_not_aarch64() {
    let r = check("arm32-static", &policy(Machine::Arm));
    assert!(r.passed(), "{:#?}", r.findings);
    let f = r.facts.unwrap();
    assert_eq!((f.machine, f.class), (Machine::Arm, Class::Elf32));
    let r = check("arm32-static", &policy(Machine::Aarch64));
    let kinds = error_kinds(&r);
    assert!(kinds.contains(&&FindingKind::WrongMachine {
        expected: Machine::Aarch64,
        found: Machine::Arm
    }));
    assert!(kinds.contains(&&FindingKind::WrongClass {
        expected: Class::Elf64,
        found: Class::Elf32
    }));
}

#[test]
fn executable_stack_is_refused() {
    let r = check("arm32-execstack", &policy(Machine::Arm));
    assert_eq!(error_kinds(&r), [&FindingKind::ExecutableStack]);
}

#[test]
fn shell_script_is_not_elf() {
    let r = check("shell-script", &Policy::default());
    assert_eq!(r.verdict(), Verdict::Malformed);
    assert_eq!(error_kinds(&r), [&FindingKind::NotElf { script: true }]);
}

#[test]
fn unstripped_binary_fails_only_when_stripping_is_required() {
    let r = check("x86_64-musl-unstripped", &policy(Machine::X86_64));
    assert_eq!(r.verdict(), Verdict::Rejected);
    let kinds = error_kinds(&r);
    assert_eq!(kinds.len(), 1, "{kinds:?}");
    let FindingKind::NotStripped {
        symbol_bytes,
        debug_bytes,
        sections,
    } = kinds[0]
    else {
        panic!("{kinds:?}")
    };
    assert!(*symbol_bytes > 0 && *debug_bytes > 0);
    assert!(sections.iter().any(|s| s == ".symtab"));
    assert!(sections.iter().any(|s| s == ".debug_info"));

    let lax = Policy {
        require_stripped: false,
        ..policy(Machine::X86_64)
    };
    let r = check("x86_64-musl-unstripped", &lax);
    assert!(r.passed());
    assert_eq!(r.warnings().count(), 1);
}

#[test]
fn truncated_elf_is_malformed_and_still_seen_as_dynamic() {
    let r = check("truncated", &policy(Machine::Aarch64));
    assert_eq!(r.verdict(), Verdict::Malformed);
    assert!(error_kinds(&r)
        .iter()
        .any(|k| matches!(k, FindingKind::Truncated { .. })));
    let f = r.facts.unwrap();
    assert_eq!(f.linkage, Linkage::Dynamic);
    assert_eq!(f.stripped, None, "its section headers are cut off");
}

#[test]
fn wx_patched_segment_is_refused() {
    let r = check("wx-patched", &policy(Machine::Aarch64));
    assert_eq!(r.verdict(), Verdict::Rejected);
    assert!(matches!(
        error_kinds(&r)[..],
        [FindingKind::WritableExecutable { .. }]
    ));
}

#[test]
fn budget_is_measured_against_the_file() {
    let path = fixtures().path("aarch64-musl");
    let size = std::fs::metadata(path).unwrap().len();
    let tight = Policy {
        size_budget: Some(size / 2),
        ..policy(Machine::Aarch64)
    };
    let r = check_file(path, &tight).unwrap();
    assert_eq!(
        error_kinds(&r),
        [&FindingKind::OverBudget {
            size,
            budget: size / 2
        }]
    );
}

#[test]
fn batch_collects_every_file() {
    let f = fixtures();
    let names = ["aarch64-musl", "aarch64-gnu-dynamic", "wx-patched"];
    let reports =
        elfcheck::check_files(names.iter().map(|n| f.path(n)), &policy(Machine::Aarch64)).unwrap();
    assert_eq!(reports.len(), 3);
    let verdicts: Vec<_> = reports.iter().map(Report::verdict).collect();
    assert_eq!(
        verdicts,
        [Verdict::Pass, Verdict::Rejected, Verdict::Rejected]
    );
    let err = elfcheck::require_pass(&reports).unwrap_err();
    assert!(matches!(&err, elfcheck::Error::Rejected { failed, total: 3 } if failed.len() == 2));
}

// ---- Agreement with readelf and file -------------------------------------

/// What `readelf -W -h -l -d` says about a file; `None` when it says the
/// file is not ELF.
#[derive(Debug, Default)]
struct Readelf {
    class: String,
    little_endian: bool,
    e_type: String,
    machine: String,
    entry: u64,
    interpreter: Option<String>,
    needed: Vec<String>,
    /// (type, flags) per program header, flags as letters without spaces.
    segments: Vec<(String, String)>,
}

fn readelf(path: &Path) -> Option<Readelf> {
    let out = Command::new("readelf")
        .args(["-W", "-h", "-l", "-d"])
        .arg(path)
        .output()
        .expect("readelf (binutils) must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.contains("ELF Header:") {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Failed to read file header") || stderr.contains("Not an ELF"),
            "unexpected readelf failure: {stderr}"
        );
        return None;
    }
    let mut r = Readelf::default();
    let mut in_phdrs = false;
    for line in stdout.lines() {
        let t = line.trim();
        let value = |key: &str| t.strip_prefix(key).map(|v| v.trim().to_string());
        if let Some(v) = value("Class:") {
            r.class = v;
        } else if let Some(v) = value("Data:") {
            r.little_endian = v.contains("little endian");
        } else if let Some(v) = value("Type:") {
            r.e_type = v.split_whitespace().next().unwrap_or("").to_string();
        } else if let Some(v) = value("Machine:") {
            r.machine = v;
        } else if let Some(v) = value("Entry point address:") {
            r.entry = u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap();
        } else if let Some(v) = value("[Requesting program interpreter:") {
            r.interpreter = Some(v.trim_end_matches(']').to_string());
        } else if t.contains("(NEEDED)") {
            let lib = t.split('[').nth(1).unwrap().trim_end_matches(']');
            r.needed.push(lib.to_string());
        } else if t.starts_with("Type") && t.contains("Offset") {
            in_phdrs = true;
        } else if t.is_empty() || t.starts_with("Section to Segment") {
            in_phdrs = false;
        } else if in_phdrs && !t.starts_with('[') {
            // TYPE OFFSET VADDR PADDR FILESZ MEMSZ FLAGS... ALIGN
            let tok: Vec<&str> = t.split_whitespace().collect();
            if tok.len() >= 8 {
                let flags = tok[6..tok.len() - 1].concat();
                r.segments.push((tok[0].to_string(), flags));
            }
        }
    }
    Some(r)
}

fn readelf_machine(name: &str) -> Machine {
    match name {
        "AArch64" => Machine::Aarch64,
        "Advanced Micro Devices X86-64" => Machine::X86_64,
        "RISC-V" => Machine::Riscv64,
        "ARM" => Machine::Arm,
        other => panic!("readelf machine {other:?} not mapped"),
    }
}

#[test]
fn readelf_agrees_on_every_fixture() {
    let f = fixtures();
    assert_eq!(f.files.len(), 12, "every fixture is compared");
    for (name, path) in &f.files {
        let ours = check_file(path, &Policy::default()).unwrap();
        let Some(theirs) = readelf(path) else {
            assert!(
                matches!(error_kinds(&ours)[..], [FindingKind::NotElf { .. }]),
                "{name}: readelf says not ELF, we say {:?}",
                ours.findings
            );
            continue;
        };
        let facts = ours
            .facts
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: readelf parsed it, we did not"));

        // The verdict that matters: static or not.
        let readelf_static = theirs.interpreter.is_none() && theirs.needed.is_empty();
        assert_eq!(
            facts.linkage.is_static(),
            readelf_static,
            "{name}: we say {}, readelf shows interpreter {:?} needed {:?}",
            facts.linkage,
            theirs.interpreter,
            theirs.needed
        );
        assert_eq!(facts.interpreter, theirs.interpreter, "{name}");
        assert_eq!(facts.needed, theirs.needed, "{name}");

        assert_eq!(facts.class.to_string(), theirs.class, "{name}");
        assert_eq!(
            facts.endianness == elfcheck::Endianness::Little,
            theirs.little_endian,
            "{name}"
        );
        assert_eq!(facts.elf_type.to_string(), theirs.e_type, "{name}");
        assert_eq!(facts.machine, readelf_machine(&theirs.machine), "{name}");
        assert_eq!(facts.entry, theirs.entry, "{name}");

        let loads: Vec<&String> = theirs
            .segments
            .iter()
            .filter(|(t, _)| t == "LOAD")
            .map(|(_, fl)| fl)
            .collect();
        assert_eq!(facts.load_segments.len(), loads.len(), "{name}");
        for (seg, fl) in facts.load_segments.iter().zip(&loads) {
            assert_eq!(
                &&elfcheck::flags_string(seg.flags).replace(' ', ""),
                fl,
                "{name}"
            );
        }
        let readelf_wx = loads.iter().any(|fl| fl.contains('W') && fl.contains('E'));
        let ours_wx = ours
            .errors()
            .any(|e| matches!(e.kind, FindingKind::WritableExecutable { .. }));
        assert_eq!(ours_wx, readelf_wx, "{name}: W^X");
        let stack = theirs.segments.iter().find(|(t, _)| t == "GNU_STACK");
        let readelf_exec_stack = stack.is_some_and(|(_, fl)| fl.contains('E'));
        let ours_exec_stack = ours
            .errors()
            .any(|e| e.kind == FindingKind::ExecutableStack);
        assert_eq!(ours_exec_stack, readelf_exec_stack, "{name}: stack");
    }
}

#[test]
fn file_agrees_on_every_fixture() {
    for (name, path) in &fixtures().files {
        let out = run(Command::new("file").arg("-b").arg(path));
        let desc = String::from_utf8_lossy(&out.stdout).to_string();
        let r = check_file(path, &Policy::default()).unwrap();
        let Some(facts) = &r.facts else {
            assert!(!desc.starts_with("ELF"), "{name}: file says {desc}");
            if name == &"shell-script" {
                assert!(desc.contains("shell script"), "{desc}");
            }
            continue;
        };
        let class = match facts.class {
            Class::Elf32 => "ELF 32-bit LSB",
            Class::Elf64 => "ELF 64-bit LSB",
        };
        assert!(desc.starts_with(class), "{name}: {desc}");
        let arch = match facts.machine {
            Machine::Aarch64 => "ARM aarch64",
            Machine::X86_64 => "x86-64",
            Machine::Riscv64 => "RISC-V",
            Machine::Arm => "ARM, EABI",
            Machine::Other(_) => unreachable!(),
        };
        assert!(desc.contains(arch), "{name}: {desc}");
        let linkage = match facts.linkage {
            Linkage::Static => "statically linked",
            Linkage::StaticPie => "static-pie linked",
            Linkage::Dynamic => "dynamically linked",
            Linkage::Unknown => panic!("{name}: linkage unknown"),
        };
        assert!(desc.contains(linkage), "{name}: {desc} vs {linkage}");
        // file names a symbol table "not stripped"; it cannot see sections
        // past the end of a truncated file.
        if !desc.contains("missing section headers") {
            let file_symbols = desc.contains("not stripped");
            assert_eq!(facts.symbol_bytes > 0, file_symbols, "{name}: {desc}");
        }
    }
}

#[test]
fn strippable_bytes_match_what_strip_removes() {
    let f = fixtures();
    let src = f.path("x86_64-musl-unstripped");
    let stripped = f.dir.join("x86_64-musl-restripped");
    run(Command::new("strip")
        .args(["--strip-all", "-o"])
        .arg(&stripped)
        .arg(src));
    let before = std::fs::metadata(src).unwrap().len();
    let after = std::fs::metadata(&stripped).unwrap().len();
    let facts = check_file(src, &Policy::default()).unwrap().facts.unwrap();
    let ours = facts.symbol_bytes + facts.debug_bytes;
    let saved = before - after;
    // strip also drops the section headers and names of what it removes,
    // and may lose a little alignment padding: a few KiB at most.
    assert!(ours <= saved, "we claim {ours}, strip saved {saved}");
    assert!(
        saved - ours < 4096,
        "we claim {ours}, strip saved {saved}: {:?}",
        facts.strippable_sections
    );
    let again = check_file(&stripped, &Policy::default()).unwrap();
    assert_eq!(again.facts.unwrap().stripped, Some(true));
}

/// Cheap, deterministic cousin of the fuzz target: damage the headers of
/// every real fixture in many ways and insist on a report, never a panic,
/// and never a pass for an input that lost its program headers.
#[test]
fn mutated_fixtures_never_panic() {
    let policy = Policy::default();
    let mut checked = 0usize;
    for path in fixtures().files.values() {
        let mut bytes = std::fs::read(path).unwrap();
        let header_region = bytes.len().min(512);
        for i in 0..header_region {
            let orig = bytes[i];
            for v in [0x00, 0xff, orig ^ 0x80, orig.wrapping_add(1)] {
                bytes[i] = v;
                let _ = check_bytes(&bytes, &policy);
                checked += 1;
            }
            bytes[i] = orig;
        }
        for cut in (0..bytes.len()).step_by(97).take(400) {
            let r = check_bytes(&bytes[..cut], &policy);
            assert_ne!(
                r.verdict(),
                Verdict::Pass,
                "{} cut at {cut}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 10_000);
}
