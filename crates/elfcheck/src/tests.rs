//! Hand-built ELF images for the corner cases real toolchains do not
//! produce (hostile counts, bad strides, odd classes). The toolchain-built
//! fixtures and the readelf/file comparison live in tests/toolchains.rs.

use super::*;

const BASE: u64 = 0x40_0000;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_GNU_STACK: u32 = 0x6474_e551;
const R: u32 = 4;
const W: u32 = 2;
const X: u32 = 1;

#[derive(Clone, Copy)]
struct Phdr {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

/// A minimal ELF writer: header, program headers, then a payload.
struct Synth {
    elf64: bool,
    little: bool,
    machine: u16,
    e_type: u16,
    phdrs: Vec<Phdr>,
    payload: Vec<u8>,
    /// Entry as an offset into the payload.
    entry_in_payload: u64,
}

impl Synth {
    /// A static x86_64 executable: one R+X PT_LOAD over the whole file and
    /// a non-executable stack.
    fn exe() -> Self {
        Synth {
            elf64: true,
            little: true,
            machine: 62,
            e_type: 2,
            phdrs: vec![
                Phdr {
                    p_type: PT_LOAD,
                    flags: R | X,
                    offset: 0,
                    vaddr: BASE,
                    filesz: u64::MAX, // patched to the file size
                    memsz: u64::MAX,
                },
                Phdr {
                    p_type: PT_GNU_STACK,
                    flags: R | W,
                    offset: 0,
                    vaddr: 0,
                    filesz: 0,
                    memsz: 0,
                },
            ],
            payload: vec![0xc3; 16],
            entry_in_payload: 0,
        }
    }

    fn ehsize(&self) -> u64 {
        if self.elf64 {
            64
        } else {
            52
        }
    }

    fn phentsize(&self) -> u64 {
        if self.elf64 {
            56
        } else {
            32
        }
    }

    fn payload_offset(&self) -> u64 {
        self.ehsize() + self.phentsize() * self.phdrs.len() as u64
    }

    fn build(&self) -> Vec<u8> {
        let total = self.payload_offset() + self.payload.len() as u64;
        let mut b = vec![0u8; total as usize];
        let mut put = |off: u64, v: u64, n: usize| {
            for i in 0..n {
                let shift = if self.little { i } else { n - 1 - i };
                b[off as usize + i] = (v >> (8 * shift)) as u8;
            }
        };
        let w = if self.elf64 { 8 } else { 4 };
        let (phoff, entry) = (
            self.ehsize(),
            BASE + self.payload_offset() + self.entry_in_payload,
        );
        // Header fields after e_ident, in order, with their widths.
        let fields: [(u64, usize); 13] = [
            (u64::from(self.e_type), 2),
            (u64::from(self.machine), 2),
            (1, 4),
            (entry, w),
            (phoff, w),
            (0, w), // e_shoff
            (0, 4),
            (self.ehsize(), 2),
            (self.phentsize(), 2),
            (self.phdrs.len() as u64, 2),
            (if self.elf64 { 64 } else { 40 }, 2),
            (0, 2),
            (0, 2),
        ];
        let mut off = 16;
        for (v, n) in fields {
            put(off, v, n);
            off += n as u64;
        }
        for (i, p) in self.phdrs.iter().enumerate() {
            let at = phoff + i as u64 * self.phentsize();
            let filesz = if p.filesz == u64::MAX {
                total
            } else {
                p.filesz
            };
            let memsz = if p.memsz == u64::MAX { total } else { p.memsz };
            if self.elf64 {
                let f = [
                    (u64::from(p.p_type), 4),
                    (u64::from(p.flags), 4),
                    (p.offset, 8),
                    (p.vaddr, 8),
                    (p.vaddr, 8),
                    (filesz, 8),
                    (memsz, 8),
                    (0x1000, 8),
                ];
                let mut o = at;
                for (v, n) in f {
                    put(o, v, n);
                    o += n as u64;
                }
            } else {
                let f = [
                    p.p_type.into(),
                    p.offset,
                    p.vaddr,
                    p.vaddr,
                    filesz,
                    memsz,
                    p.flags.into(),
                    0x1000,
                ];
                for (k, v) in f.into_iter().enumerate() {
                    put(at + 4 * k as u64, v, 4);
                }
            }
        }
        let start = self.payload_offset() as usize;
        b[start..].copy_from_slice(&self.payload);
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = if self.elf64 { 2 } else { 1 };
        b[5] = if self.little { 1 } else { 2 };
        b[6] = 1;
        b
    }
}

fn kinds(r: &Report) -> Vec<&FindingKind> {
    r.findings.iter().map(|f| &f.kind).collect()
}

fn has(r: &Report, pred: impl Fn(&FindingKind) -> bool) -> bool {
    r.findings.iter().any(|f| pred(&f.kind))
}

fn x86() -> Policy {
    Policy {
        machine: Some(Machine::X86_64),
        ..Policy::default()
    }
}

#[test]
fn minimal_static_executable_passes() {
    let r = check_bytes(&Synth::exe().build(), &x86());
    assert!(r.passed(), "{:?}", r.findings);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    let f = r.facts.expect("facts");
    assert_eq!(f.linkage, Linkage::Static);
    assert_eq!(f.machine, Machine::X86_64);
    assert_eq!(f.stripped, Some(true));
}

#[test]
fn not_elf_inputs_are_typed_findings() {
    for (input, script) in [
        (&b""[..], false),
        (b"\x7fEL", false),
        (b"#!/bin/sh\necho hi\n", true),
        (b"MZ\x90\x00 not an elf at all", false),
    ] {
        let r = check_bytes(input, &Policy::default());
        assert_eq!(r.verdict(), Verdict::Malformed);
        assert_eq!(kinds(&r), vec![&FindingKind::NotElf { script }]);
        assert!(r.facts.is_none());
    }
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let full = Synth::exe().build();
    for len in 0..full.len() {
        let r = check_bytes(&full[..len], &x86());
        assert_eq!(
            r.verdict(),
            Verdict::Malformed,
            "len {len}: {:?}",
            r.findings
        );
    }
}

#[test]
fn bad_ident_bytes_are_malformed() {
    for (at, v) in [(4, 0u8), (4, 3), (5, 0), (5, 7)] {
        let mut b = Synth::exe().build();
        b[at] = v;
        let r = check_bytes(&b, &x86());
        assert!(
            has(&r, |k| matches!(k, FindingKind::Malformed { .. })),
            "byte {at}={v}: {:?}",
            r.findings
        );
    }
}

#[test]
fn hostile_program_header_fields() {
    // e_phentsize lies: goblin would read records at the wrong stride.
    let mut b = Synth::exe().build();
    b[54] = 40;
    let r = check_bytes(&b, &x86());
    assert!(has(
        &r,
        |k| matches!(k, FindingKind::Malformed { detail } if detail.contains("e_phentsize"))
    ));

    // e_phoff far outside the file, and one that overflows when added to.
    for phoff in [1u64 << 40, u64::MAX - 8] {
        let mut b = Synth::exe().build();
        b[32..40].copy_from_slice(&phoff.to_le_bytes());
        let r = check_bytes(&b, &x86());
        assert!(
            has(
                &r,
                |k| matches!(k, FindingKind::Truncated { what, .. } if what == "program header table")
            ),
            "{:?}",
            r.findings
        );
    }

    // PN_XNUM.
    let mut b = Synth::exe().build();
    b[56..58].copy_from_slice(&0xffffu16.to_le_bytes());
    let r = check_bytes(&b, &x86());
    assert_eq!(r.verdict(), Verdict::Malformed);
}

#[test]
fn segment_past_end_of_file_is_truncated() {
    let mut s = Synth::exe();
    s.phdrs[0].filesz = 1 << 20;
    let r = check_bytes(&s.build(), &x86());
    assert_eq!(r.verdict(), Verdict::Malformed);
    assert!(has(
        &r,
        |k| matches!(k, FindingKind::Truncated { what, .. } if what.contains("PT_LOAD"))
    ));

    s.phdrs[0].filesz = 64;
    s.phdrs[0].offset = u64::MAX - 10;
    let r = check_bytes(&s.build(), &x86());
    assert_eq!(r.verdict(), Verdict::Malformed);
}

#[test]
fn writable_executable_segment() {
    let mut s = Synth::exe();
    s.phdrs[0].flags = R | W | X;
    let r = check_bytes(&s.build(), &x86());
    assert_eq!(r.verdict(), Verdict::Rejected);
    assert!(has(&r, |k| matches!(
        k,
        FindingKind::WritableExecutable {
            index: 0,
            vaddr: BASE
        }
    )));
}

#[test]
fn entry_point_must_be_in_executable_file_bytes() {
    // Past the end of the file-backed bytes.
    let mut s = Synth::exe();
    s.entry_in_payload = 4096;
    let r = check_bytes(&s.build(), &x86());
    assert!(has(&r, |k| matches!(
        k,
        FindingKind::EntryNotExecutable { .. }
    )));

    // Inside, but the segment is not executable.
    let mut s = Synth::exe();
    s.phdrs[0].flags = R;
    let r = check_bytes(&s.build(), &x86());
    assert!(has(&r, |k| matches!(
        k,
        FindingKind::EntryNotExecutable { .. }
    )));

    // A segment whose vaddr + filesz overflows must not wrap into a match.
    let mut s = Synth::exe();
    s.phdrs[0].vaddr = u64::MAX - 4;
    s.phdrs[0].filesz = 16;
    let r = check_bytes(&s.build(), &x86());
    assert!(has(&r, |k| matches!(
        k,
        FindingKind::EntryNotExecutable { .. }
    )));
}

#[test]
fn stack_header() {
    let mut s = Synth::exe();
    s.phdrs[1].flags = R | W | X;
    let r = check_bytes(&s.build(), &x86());
    assert!(has(&r, |k| *k == FindingKind::ExecutableStack));
    assert!(!r.passed());

    let mut s = Synth::exe();
    s.phdrs.truncate(1);
    let r = check_bytes(&s.build(), &x86());
    assert!(r.passed(), "a missing PT_GNU_STACK is only a warning");
    assert!(r
        .warnings()
        .any(|f| f.kind == FindingKind::MissingStackHeader));
}

#[test]
fn object_files_and_cores_are_not_executables() {
    for e_type in [1u16, 4, 0xfe00] {
        let mut s = Synth::exe();
        s.e_type = e_type;
        let r = check_bytes(&s.build(), &x86());
        assert!(has(&r, |k| *k == FindingKind::NotExecutable { e_type }));
    }
}

#[test]
fn machine_class_and_byte_order_policy() {
    let mut s = Synth::exe();
    s.machine = 183;
    let r = check_bytes(&s.build(), &x86());
    assert!(has(&r, |k| *k
        == FindingKind::WrongMachine {
            expected: Machine::X86_64,
            found: Machine::Aarch64
        }));
    // No machine in the policy: any machine is fine.
    assert!(check_bytes(&s.build(), &Policy::default()).passed());

    // aarch64_be: right e_machine, wrong byte order.
    s.little = false;
    let policy = Policy {
        machine: Some(Machine::Aarch64),
        ..Policy::default()
    };
    let r = check_bytes(&s.build(), &policy);
    assert_eq!(
        r.facts.as_ref().map(|f| f.endianness),
        Some(Endianness::Big)
    );
    assert!(has(&r, |k| matches!(
        k,
        FindingKind::WrongEndianness { .. }
    )));

    // 32-bit ARM is reported as arm, not aarch64, and passes an arm policy.
    let mut s = Synth::exe();
    s.elf64 = false;
    s.machine = 40;
    let arm = Policy {
        machine: Some(Machine::Arm),
        ..Policy::default()
    };
    let r = check_bytes(&s.build(), &arm);
    assert!(r.passed(), "{:?}", r.findings);
    let f = r.facts.expect("facts");
    assert_eq!((f.machine, f.class), (Machine::Arm, Class::Elf32));

    // riscv32 has riscv's e_machine but the wrong class for riscv64.
    s.machine = 243;
    let rv = Policy {
        machine: Some(Machine::Riscv64),
        ..Policy::default()
    };
    let r = check_bytes(&s.build(), &rv);
    assert!(has(&r, |k| *k
        == FindingKind::WrongClass {
            expected: Class::Elf64,
            found: Class::Elf32
        }));
}

/// An x86_64 executable with a dynamic section naming `libs`, and the
/// string-table offset of each DT_NEEDED overridable.
fn dynamic_exe(libs: &[&str], needed_offsets: Option<&[u64]>, flags_1: u64) -> Vec<u8> {
    let mut s = Synth::exe();
    s.e_type = 3;
    s.phdrs.push(Phdr {
        p_type: PT_DYNAMIC,
        flags: R,
        offset: 0,
        vaddr: 0,
        filesz: 0,
        memsz: 0,
    });
    let payload_at = s.payload_offset();
    let mut strtab = vec![0u8];
    let mut offsets = Vec::new();
    for l in libs {
        offsets.push(strtab.len() as u64);
        strtab.extend_from_slice(l.as_bytes());
        strtab.push(0);
    }
    let offsets = needed_offsets.map_or(offsets, <[u64]>::to_vec);
    let code = 16u64;
    let strtab_at = payload_at + code;
    let mut dyns: Vec<(u64, u64)> = offsets.iter().map(|&o| (1, o)).collect();
    dyns.push((5, BASE + strtab_at));
    dyns.push((10, strtab.len() as u64));
    dyns.push((0x6fff_fffb, flags_1));
    dyns.push((0, 0));
    let dyn_at = strtab_at + strtab.len() as u64;
    let mut payload = vec![0xc3; code as usize];
    payload.extend_from_slice(&strtab);
    for (t, v) in &dyns {
        payload.extend_from_slice(&t.to_le_bytes());
        payload.extend_from_slice(&v.to_le_bytes());
    }
    s.payload = payload;
    let p = &mut s.phdrs[2];
    p.offset = dyn_at;
    p.vaddr = BASE + dyn_at;
    p.filesz = dyns.len() as u64 * 16;
    p.memsz = p.filesz;
    s.build()
}

const DF_1_PIE: u64 = 0x0800_0000;

#[test]
fn needed_libraries_are_listed_and_refused() {
    let b = dynamic_exe(&["libc.so.6", "libm.so.6"], None, DF_1_PIE);
    let r = check_bytes(&b, &x86());
    let f = r.facts.as_ref().expect("facts");
    assert_eq!(f.needed, ["libc.so.6", "libm.so.6"]);
    assert_eq!(f.linkage, Linkage::Dynamic);
    assert_eq!(r.verdict(), Verdict::Rejected);
    assert!(has(
        &r,
        |k| matches!(k, FindingKind::NeededLibraries { libraries } if libraries.len() == 2)
    ));

    // Allowed when the policy does not require static linking.
    let lax = Policy {
        require_static: false,
        ..x86()
    };
    assert!(check_bytes(&b, &lax).passed());
}

#[test]
fn static_pie_with_empty_dynamic_passes() {
    let b = dynamic_exe(&[], None, DF_1_PIE);
    let r = check_bytes(&b, &x86());
    assert!(r.passed(), "{:?}", r.findings);
    assert_eq!(r.facts.map(|f| f.linkage), Some(Linkage::StaticPie));
}

#[test]
fn dyn_without_pie_flag_or_interpreter_is_a_library() {
    let r = check_bytes(&dynamic_exe(&[], None, 0), &x86());
    assert!(has(&r, |k| *k == FindingKind::SharedObject));
}

#[test]
fn needed_name_outside_string_table() {
    let b = dynamic_exe(&["libc.so.6"], Some(&[1, 1 << 33, u64::MAX]), DF_1_PIE);
    let r = check_bytes(&b, &x86());
    let f = r.facts.as_ref().expect("facts");
    assert_eq!(f.linkage, Linkage::Dynamic, "unreadable names still count");
    assert_eq!(f.needed.len(), 3);
    assert_eq!(f.needed[0], "libc.so.6");
    assert_eq!(r.verdict(), Verdict::Malformed);
}

#[test]
fn hostile_names_are_escaped() {
    let b = dynamic_exe(&["lib\x1b[2Jevil.so"], None, DF_1_PIE);
    let r = check_bytes(&b, &x86());
    let f = r.facts.expect("facts");
    assert_eq!(f.needed, ["lib\\u{1b}[2Jevil.so"]);
}

#[test]
fn interpreter_is_reported_even_when_cut_short() {
    let mut s = Synth::exe();
    let at = s.payload_offset() + 16;
    s.payload.extend_from_slice(b"/lib/ld-musl-aarch64.so.1\0");
    s.phdrs.push(Phdr {
        p_type: PT_INTERP,
        flags: R,
        offset: 0,
        vaddr: 0,
        filesz: 26,
        memsz: 26,
    });
    // The pushed header moved the payload by one phdr.
    let at = at + s.phentsize();
    s.phdrs[2].offset = at;
    let r = check_bytes(&s.build(), &x86());
    let f = r.facts.as_ref().expect("facts");
    assert_eq!(f.interpreter.as_deref(), Some("/lib/ld-musl-aarch64.so.1"));
    assert!(has(&r, |k| matches!(k, FindingKind::Interpreter { .. })));

    s.phdrs[2].filesz = 1 << 30;
    let r = check_bytes(&s.build(), &x86());
    assert_eq!(r.verdict(), Verdict::Malformed);
    assert_eq!(r.facts.map(|f| f.linkage), Some(Linkage::Dynamic));
}

#[test]
fn section_table_problems() {
    let base = Synth::exe().build();
    // e_shoff past the end.
    let mut b = base.clone();
    b[40..48].copy_from_slice(&(1u64 << 32).to_le_bytes());
    b[60..62].copy_from_slice(&3u16.to_le_bytes());
    let r = check_bytes(&b, &x86());
    assert!(has(
        &r,
        |k| matches!(k, FindingKind::Truncated { what, .. } if what == "section header table")
    ));

    // Extended numbering: e_shnum 0, count in section 0's sh_size, and a
    // count far larger than the file could hold must not allocate.
    let mut b = base.clone();
    let shoff = b.len() as u64;
    b[40..48].copy_from_slice(&shoff.to_le_bytes());
    let mut null = vec![0u8; 64];
    null[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    b.extend_from_slice(&null);
    let r = check_bytes(&b, &x86());
    assert_eq!(r.verdict(), Verdict::Malformed, "{:?}", r.findings);

    // Bad stride.
    let mut b = base;
    b[40..48].copy_from_slice(&64u64.to_le_bytes());
    b[58..60].copy_from_slice(&32u16.to_le_bytes());
    let r = check_bytes(&b, &x86());
    assert!(has(
        &r,
        |k| matches!(k, FindingKind::Malformed { detail } if detail.contains("e_shentsize"))
    ));
}

#[test]
fn budget() {
    let b = Synth::exe().build();
    let tight = Policy {
        size_budget: Some(b.len() as u64 - 1),
        ..x86()
    };
    let r = check_bytes(&b, &tight);
    assert!(has(&r, |k| *k
        == FindingKind::OverBudget {
            size: b.len() as u64,
            budget: b.len() as u64 - 1
        }));
    let exact = Policy {
        size_budget: Some(b.len() as u64),
        ..x86()
    };
    assert!(check_bytes(&b, &exact).passed());
}

#[test]
fn check_file_reads_no_more_than_the_budget() {
    let d = tempfile::tempdir().unwrap();
    let b = Synth::exe().build();
    let f = d.path().join("exe");
    std::fs::write(&f, &b).unwrap();
    let n = b.len() as u64;
    let at = |budget| Policy {
        size_budget: Some(budget),
        ..x86()
    };
    assert!(check_file(&f, &at(n)).unwrap().passed());
    // Over: refused by policy from the length alone, not parsed.
    let r = check_file(&f, &at(n - 1)).unwrap();
    assert_eq!(r.verdict(), Verdict::Rejected);
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    assert!(has(&r, |k| *k
        == FindingKind::OverBudget {
            size: n,
            budget: n - 1
        }));
    assert!(r.facts.is_none());
    // A regular file whose length lies (procfs says 0): the read itself
    // stops after budget + 1 bytes.
    let r = check_file("/proc/self/maps", &at(10)).unwrap();
    assert!(has(&r, |k| *k
        == FindingKind::OverBudget {
            size: 11,
            budget: 10
        }));
}

#[test]
fn check_file_refuses_what_is_not_a_regular_file() {
    let d = tempfile::tempdir().unwrap();
    for (path, kind) in [
        (d.path(), "a directory"),
        (Path::new("/dev/zero"), "a character device"),
    ] {
        match check_file(path, &Policy::default()) {
            Err(Error::NotRegular { path: p, kind: k }) => {
                assert_eq!((p.as_path(), k), (path, kind));
            }
            other => panic!("{}: {other:?}", path.display()),
        }
    }
    // A socket cannot even be opened (ENXIO); it is named for what it is.
    let sock = d.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let e = check_file(&sock, &Policy::default()).unwrap_err();
    assert!(
        e.to_string().ends_with("is a socket, not a regular file"),
        "{e}"
    );
}

#[test]
fn require_pass_prefers_malformed_and_lists_failures() {
    let good = check_bytes(&Synth::exe().build(), &x86());
    let mut s = Synth::exe();
    s.phdrs[0].flags = R | W | X;
    let mut wx = check_bytes(&s.build(), &x86());
    wx.path = Some("wx".into());
    let mut script = check_bytes(b"#!/bin/sh\n", &x86());
    script.path = Some("run.sh".into());

    assert!(require_pass(std::slice::from_ref(&good)).is_ok());
    match require_pass(&[good.clone(), wx.clone()]) {
        Err(Error::Rejected { failed, total }) => {
            assert_eq!(total, 2);
            assert_eq!(failed.len(), 1);
            assert_eq!(failed[0].0, "wx");
        }
        other => panic!("{other:?}"),
    }
    match require_pass(&[wx, script, good]) {
        Err(e @ Error::Malformed { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("run.sh"), "{msg}");
            assert!(!msg.contains("wx"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn json_shape() {
    let b = dynamic_exe(&["libc.so.6"], None, DF_1_PIE);
    let v = serde_json::to_value(check_bytes(&b, &x86())).expect("json");
    assert_eq!(v["passed"], false);
    assert_eq!(v["verdict"], "rejected");
    assert_eq!(v["facts"]["machine"], "x86_64");
    assert_eq!(v["facts"]["linkage"], "dynamic");
    assert_eq!(v["facts"]["load_segments"][0]["flags"], "R E");
    let needed = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["kind"] == "needed_libraries")
        .expect("needed finding");
    assert_eq!(needed["severity"], "error");
    assert_eq!(needed["libraries"][0], "libc.so.6");
}

#[test]
fn check_file_reports_io_errors_with_the_path() {
    let err = check_file("/nonexistent/elfcheck-test", &x86()).expect_err("missing file");
    assert!(matches!(&err, Error::Io { path, .. } if path.ends_with("elfcheck-test")));
}

#[test]
fn check_file_reads_only_what_the_headers_point_at() {
    let d = tempfile::tempdir().unwrap();
    let b = Synth::exe().build();
    let small = d.path().join("exe");
    std::fs::write(&small, &b).unwrap();
    let (want, _) = check_file_counted(&small, &x86()).unwrap();
    // The same headers in a 1 GiB file (sparse: nothing to write).
    let big = d.path().join("big");
    std::fs::write(&big, &b).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.set_len(1 << 30).unwrap();
    let (r, read) = check_file_counted(&big, &x86()).unwrap();
    let mut facts = r.facts.clone().unwrap();
    assert_eq!(facts.file_size, 1 << 30);
    facts.file_size = b.len() as u64;
    assert_eq!(Some(facts), want.facts, "same facts whatever the length");
    assert!(r.passed(), "{:?}", r.findings);
    assert!(
        read <= b.len() as u64,
        "read {read} bytes of a 1 GiB file whose ELF is {} bytes",
        b.len()
    );
}
