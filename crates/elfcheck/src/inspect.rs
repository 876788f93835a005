//! Parsing and checking. goblin decodes the fixed-size records (header,
//! program and section headers, dynamic entries); everything those records
//! point at — offsets, sizes, string tables, the entry address — is
//! bounds-checked here before use, because goblin takes most of them at
//! face value.

use std::borrow::Cow;

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::{dynamic, header, program_header as ph, section_header as sh};
use goblin::elf::{Dynamic, Elf, ProgramHeader, SectionHeader};

use crate::facts::{ElfFacts, Linkage, Segment, StackPolicy};
use crate::finding::{Finding, FindingKind, Severity};
use crate::machine::{Class, ElfType, Endianness, Machine};
use crate::Policy;

/// Longest interpreter path or library name we copy out of a file; real
/// ones are a few dozen bytes, and a hostile one should not make us
/// allocate or print megabytes.
const MAX_NAME: usize = 4096;

/// Largest table read out of a file: the dynamic segment, the dynamic
/// string table, the section header table and the section-name table.
/// Real ones are kilobytes; a header pointing at more is a malformed file,
/// not a reason to read (and hold) a gigabyte.
pub(crate) const MAX_TABLE: u64 = 16 << 20;

/// What [`inspect`] reads from: positioned reads of what the headers point
/// at, so a file is never read whole (a 1 GiB binary costs its headers).
pub(crate) trait Input {
    fn size(&self) -> u64;
    /// `size` bytes at `offset`; `None` when they are not all inside the
    /// input (or reading failed: a file input keeps the error).
    fn read(&self, offset: u64, size: u64) -> Option<Cow<'_, [u8]>>;
}

impl Input for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read(&self, offset: u64, size: u64) -> Option<Cow<'_, [u8]>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        self.get(start..end).map(Cow::Borrowed)
    }
}

/// `e_phnum` escape for counts that do not fit; the kernel does not load
/// such files, and goblin does not decode them.
const PN_XNUM: u16 = 0xffff;

/// Collects findings in file order as checks run.
struct Findings(Vec<Finding>);

impl Findings {
    fn error(&mut self, kind: FindingKind, message: String) {
        self.0.push(Finding {
            severity: Severity::Error,
            kind,
            message,
        });
    }

    fn warning(&mut self, kind: FindingKind, message: String) {
        self.0.push(Finding {
            severity: Severity::Warning,
            kind,
            message,
        });
    }

    fn add(&mut self, severity: Severity, kind: FindingKind, message: String) {
        self.0.push(Finding {
            severity,
            kind,
            message,
        });
    }
}

pub(crate) fn inspect(bytes: &dyn Input, policy: &Policy) -> (Vec<Finding>, Option<ElfFacts>) {
    let mut out = Findings(Vec::new());
    let facts = inspect_into(bytes, policy, &mut out);
    (out.0, facts)
}

fn inspect_into(bytes: &dyn Input, policy: &Policy, out: &mut Findings) -> Option<ElfFacts> {
    let file_size = bytes.size();
    // The largest ELF header (64 bytes), or the whole file if shorter.
    let head = bytes.read(0, file_size.min(64)).unwrap_or_default();
    if head.get(..header::SELFMAG) != Some(header::ELFMAG.as_slice()) {
        let script = head.starts_with(b"#!");
        let message = if script {
            "not an ELF file: a script (starts with #!)".to_string()
        } else {
            "not an ELF file (no \\x7fELF magic)".to_string()
        };
        out.error(FindingKind::NotElf { script }, message);
        return None;
    }

    let hdr = match Elf::parse_header(&head) {
        Ok(h) => h,
        Err(e) => {
            malformed(out, format!("ELF header: {e}"));
            return None;
        }
    };
    // goblin's header parser has already refused any other EI_CLASS and
    // EI_DATA values, but decide from the bytes rather than rely on that.
    let (class, container) = match hdr.e_ident[header::EI_CLASS] {
        header::ELFCLASS32 => (Class::Elf32, Container::Little),
        header::ELFCLASS64 => (Class::Elf64, Container::Big),
        c => {
            malformed(out, format!("invalid EI_CLASS {c}"));
            return None;
        }
    };
    let (endianness, endian) = match hdr.e_ident[header::EI_DATA] {
        header::ELFDATA2LSB => (Endianness::Little, Endian::Little),
        header::ELFDATA2MSB => (Endianness::Big, Endian::Big),
        d => {
            malformed(out, format!("invalid EI_DATA {d}"));
            return None;
        }
    };
    let ctx = Ctx::new(container, endian);
    let machine = Machine::from_e_machine(hdr.e_machine);
    let elf_type = ElfType::from_e_type(hdr.e_type);

    let mut facts = ElfFacts {
        file_size,
        class,
        endianness,
        machine,
        e_machine: hdr.e_machine,
        elf_type,
        entry: hdr.e_entry,
        linkage: Linkage::Unknown,
        interpreter: None,
        needed: Vec::new(),
        pie: false,
        stack: StackPolicy::Missing,
        load_segments: Vec::new(),
        stripped: None,
        symbol_bytes: 0,
        debug_bytes: 0,
        strippable_sections: Vec::new(),
    };

    check_identity(&facts, policy, out);
    check_budget(&facts, policy, out);

    let Some(phdrs) = program_headers(bytes, &hdr, ctx, out) else {
        return Some(facts);
    };
    let in_file = segments_in_file(&phdrs, file_size, out);

    facts.load_segments = phdrs
        .iter()
        .enumerate()
        .filter(|(_, p)| p.p_type == ph::PT_LOAD)
        .map(|(index, p)| Segment {
            index,
            offset: p.p_offset,
            vaddr: p.p_vaddr,
            filesz: p.p_filesz,
            memsz: p.p_memsz,
            flags: p.p_flags,
        })
        .collect();

    facts.interpreter = interpreter(bytes, &phdrs);
    let dynamic = read_dynamic(bytes, &phdrs, &in_file, ctx, out);
    if let Some(d) = &dynamic {
        facts.needed = d.needed.clone();
        facts.pie = d.pie;
    }
    facts.linkage = if facts.interpreter.is_some() || !facts.needed.is_empty() {
        Linkage::Dynamic
    } else if phdrs.iter().any(|p| p.p_type == ph::PT_DYNAMIC) && dynamic.is_none() {
        // No interpreter, but the library list is unreadable: a claim of
        // "static" would be a guess.
        Linkage::Unknown
    } else if elf_type == ElfType::Dyn {
        Linkage::StaticPie
    } else {
        Linkage::Static
    };
    facts.stack = match phdrs.iter().find(|p| p.p_type == ph::PT_GNU_STACK) {
        None => StackPolicy::Missing,
        Some(p) if p.p_flags & ph::PF_X != 0 => StackPolicy::Executable,
        Some(_) => StackPolicy::NonExecutable,
    };

    check_type(&facts, dynamic.as_ref(), out);
    check_linkage(&facts, policy, out);
    check_segments(&facts, out);

    strip_info(bytes, &hdr, ctx, &mut facts, out);
    if facts.stripped == Some(false) {
        let severity = if policy.require_stripped {
            Severity::Error
        } else {
            Severity::Warning
        };
        let message = not_stripped_message(&facts);
        out.add(
            severity,
            FindingKind::NotStripped {
                symbol_bytes: facts.symbol_bytes,
                debug_bytes: facts.debug_bytes,
                sections: facts.strippable_sections.clone(),
            },
            message,
        );
    }
    Some(facts)
}

fn not_stripped_message(facts: &ElfFacts) -> String {
    let mut costs = Vec::new();
    if facts.symbol_bytes > 0 {
        costs.push(format!("symbol table {} bytes", facts.symbol_bytes));
    }
    if facts.debug_bytes > 0 {
        costs.push(format!("debug info {} bytes", facts.debug_bytes));
    }
    let names = &facts.strippable_sections;
    let mut list = names.iter().take(6).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 6 {
        list.push_str(&format!(" and {} more", names.len() - 6));
    }
    format!("not stripped: {} ({list})", costs.join(", "))
}

fn malformed(out: &mut Findings, detail: String) {
    out.error(
        FindingKind::Malformed {
            detail: detail.clone(),
        },
        format!("malformed ELF: {detail}"),
    );
}

fn truncated(out: &mut Findings, what: String, offset: u64, size: u64, file_size: u64) {
    let message = format!(
        "{what} at offset {offset:#x}, {size} bytes, extends past the end of the file ({file_size} bytes): truncated?"
    );
    out.error(
        FindingKind::Truncated {
            what,
            offset,
            size,
            file_size,
        },
        message,
    );
}

/// `offset + size <= file_size`, without overflow.
fn fits(offset: u64, size: u64, file_size: u64) -> bool {
    offset.checked_add(size).is_some_and(|end| end <= file_size)
}

fn too_large(out: &mut Findings, what: &str, size: u64) {
    malformed(
        out,
        format!("{what} is {size} bytes, more than the {MAX_TABLE} an ELF check reads"),
    );
}

/// The NUL-terminated string starting at `at` inside `table`, capped at
/// [`MAX_NAME`]; `None` when it runs off the table.
fn c_str(table: &[u8], at: u64) -> Option<&[u8]> {
    let rest = table.get(usize::try_from(at).ok()?..)?;
    let rest = &rest[..rest.len().min(MAX_NAME + 1)];
    let nul = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..nul])
}

/// Text from the file, made safe to print: invalid UTF-8 replaced and
/// control characters escaped (a hostile library name must not be able to
/// drive the terminal).
fn printable(raw: &[u8]) -> String {
    let raw = &raw[..raw.len().min(MAX_NAME)];
    String::from_utf8_lossy(raw)
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn check_identity(facts: &ElfFacts, policy: &Policy, out: &mut Findings) {
    let Some(want) = policy.machine else {
        return;
    };
    if facts.machine != want {
        out.error(
            FindingKind::WrongMachine {
                expected: want,
                found: facts.machine,
            },
            match facts.machine {
                Machine::Other(n) => format!(
                    "built for e_machine {n} ({}), the board needs {want}",
                    facts.machine.description()
                ),
                found => format!("built for {found}, the board needs {want}"),
            },
        );
    }
    if let Some(class) = want.expected_class() {
        if facts.class != class {
            out.error(
                FindingKind::WrongClass {
                    expected: class,
                    found: facts.class,
                },
                format!("{} file, but {want} needs {class}", facts.class),
            );
        }
    }
    if let Some(endianness) = want.expected_endianness() {
        if facts.endianness != endianness {
            out.error(
                FindingKind::WrongEndianness {
                    expected: endianness,
                    found: facts.endianness,
                },
                format!("{} file, but the board is {endianness}", facts.endianness),
            );
        }
    }
}

fn check_budget(facts: &ElfFacts, policy: &Policy, out: &mut Findings) {
    if let Some(budget) = policy.size_budget {
        if facts.file_size > budget {
            out.0.push(over_budget(facts.file_size, budget));
        }
    }
}

/// Also used for files too large to be read at all.
pub(crate) fn over_budget(size: u64, budget: u64) -> Finding {
    Finding {
        severity: Severity::Error,
        kind: FindingKind::OverBudget { size, budget },
        message: format!(
            "{size} bytes, over the budget of {budget} bytes by {}",
            size.saturating_sub(budget)
        ),
    }
}

fn program_headers(
    bytes: &dyn Input,
    hdr: &header::Header,
    ctx: Ctx,
    out: &mut Findings,
) -> Option<Vec<ProgramHeader>> {
    let file_size = bytes.size();
    let count = u64::from(hdr.e_phnum);
    if count == 0 {
        return Some(Vec::new());
    }
    if hdr.e_phnum == PN_XNUM {
        malformed(
            out,
            "extended program header numbering (PN_XNUM) is not supported".into(),
        );
        return None;
    }
    let entsize = ProgramHeader::size(ctx) as u64;
    if u64::from(hdr.e_phentsize) != entsize {
        // goblin reads fixed-size records; another stride would be garbage.
        malformed(
            out,
            format!("e_phentsize is {}, expected {entsize}", hdr.e_phentsize),
        );
        return None;
    }
    let table = count * entsize;
    if !fits(hdr.e_phoff, table, file_size) {
        truncated(
            out,
            "program header table".into(),
            hdr.e_phoff,
            table,
            file_size,
        );
        return None;
    }
    // At most 65534 × 56 bytes: no cap needed.
    let table = bytes.read(hdr.e_phoff, table)?;
    match ProgramHeader::parse(&table, 0, usize::from(hdr.e_phnum), ctx) {
        Ok(p) => Some(p),
        Err(e) => {
            malformed(out, format!("program headers: {e}"));
            None
        }
    }
}

fn segment_name(p_type: u32) -> String {
    match p_type {
        ph::PT_LOAD => "PT_LOAD".into(),
        ph::PT_DYNAMIC => "PT_DYNAMIC".into(),
        ph::PT_INTERP => "PT_INTERP".into(),
        ph::PT_NOTE => "PT_NOTE".into(),
        ph::PT_PHDR => "PT_PHDR".into(),
        ph::PT_TLS => "PT_TLS".into(),
        ph::PT_GNU_EH_FRAME => "PT_GNU_EH_FRAME".into(),
        ph::PT_GNU_RELRO => "PT_GNU_RELRO".into(),
        ph::PT_GNU_STACK => "PT_GNU_STACK".into(),
        ph::PT_GNU_PROPERTY => "PT_GNU_PROPERTY".into(),
        t => format!("type {t:#x}"),
    }
}

/// Reports every segment whose file bytes are not all inside the file and
/// returns, per segment, whether they are.
fn segments_in_file(phdrs: &[ProgramHeader], file_size: u64, out: &mut Findings) -> Vec<bool> {
    phdrs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ok = fits(p.p_offset, p.p_filesz, file_size);
            if !ok {
                truncated(
                    out,
                    format!("segment {i} ({})", segment_name(p.p_type)),
                    p.p_offset,
                    p.p_filesz,
                    file_size,
                );
            }
            ok
        })
        .collect()
}

/// The `PT_INTERP` path. Present-but-unreadable still counts as an
/// interpreter request (the truncation is reported separately), so it
/// yields whatever part of the path is inside the file.
fn interpreter(bytes: &dyn Input, phdrs: &[ProgramHeader]) -> Option<String> {
    let p = phdrs.iter().find(|p| p.p_type == ph::PT_INTERP)?;
    // Whatever part is inside the file, up to the longest name we print.
    let len = p
        .p_filesz
        .min(bytes.size().saturating_sub(p.p_offset))
        .min(MAX_NAME as u64);
    let raw = bytes.read(p.p_offset, len).unwrap_or_default();
    let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
    Some(printable(raw))
}

struct DynamicFacts {
    needed: Vec<String>,
    pie: bool,
}

/// Reads `DT_NEEDED` names and `DT_FLAGS_1` from `PT_DYNAMIC`. `None` when
/// there is no readable dynamic segment.
fn read_dynamic(
    bytes: &dyn Input,
    phdrs: &[ProgramHeader],
    in_file: &[bool],
    ctx: Ctx,
    out: &mut Findings,
) -> Option<DynamicFacts> {
    let (index, _) = phdrs
        .iter()
        .enumerate()
        .find(|(_, p)| p.p_type == ph::PT_DYNAMIC)?;
    if !in_file.get(index).copied().unwrap_or(false) {
        return None; // already reported as truncated
    }
    let seg = phdrs.get(index)?;
    if seg.p_filesz > MAX_TABLE {
        too_large(out, "PT_DYNAMIC", seg.p_filesz);
        return None;
    }
    // Only the segment is read; goblin is handed it as a file of its own
    // (offset 0) and reads the first PT_DYNAMIC, the one we found.
    let data = bytes.read(seg.p_offset, seg.p_filesz)?;
    let alone = [ProgramHeader {
        p_offset: 0,
        ..seg.clone()
    }];
    let dynamic = match Dynamic::parse(&data, &alone, ctx) {
        Ok(Some(d)) => d,
        Ok(None) => return None,
        Err(e) => {
            malformed(out, format!("dynamic section: {e}"));
            return None;
        }
    };
    let tag = |t: u64| dynamic.dyns.iter().filter(move |d| d.d_tag == t);
    let pie = tag(dynamic::DT_FLAGS_1).any(|d| d.d_val & dynamic::DF_1_PIE != 0);
    let needed_at: Vec<u64> = tag(dynamic::DT_NEEDED).map(|d| d.d_val).collect();
    if needed_at.is_empty() {
        return Some(DynamicFacts {
            needed: Vec::new(),
            pie,
        });
    }

    let strtab = tag(dynamic::DT_STRTAB).next().map(|d| d.d_val);
    let strsz = tag(dynamic::DT_STRSZ).next().map(|d| d.d_val);
    let table = match (strtab, strsz) {
        (Some(_), Some(size)) if size > MAX_TABLE => {
            too_large(out, "the dynamic string table", size);
            None
        }
        (Some(addr), Some(size)) => {
            vaddr_to_offset(phdrs, addr, size).and_then(|o| bytes.read(o, size))
        }
        _ => None,
    };
    let mut unreadable = 0usize;
    let needed = needed_at
        .iter()
        .map(|&at| match table.as_deref().and_then(|t| c_str(t, at)) {
            Some(name) => printable(name),
            None => {
                unreadable += 1;
                format!("<unreadable name at string table offset {at:#x}>")
            }
        })
        .collect();
    if unreadable > 0 {
        malformed(
            out,
            format!("{unreadable} DT_NEEDED name(s) lie outside the dynamic string table"),
        );
    }
    Some(DynamicFacts { needed, pie })
}

/// File offset of `size` bytes at virtual address `vaddr`, if a `PT_LOAD`
/// maps them all from the file.
fn vaddr_to_offset(phdrs: &[ProgramHeader], vaddr: u64, size: u64) -> Option<u64> {
    phdrs
        .iter()
        .filter(|p| p.p_type == ph::PT_LOAD)
        .find_map(|p| {
            let delta = vaddr.checked_sub(p.p_vaddr)?;
            if delta.checked_add(size)? > p.p_filesz {
                return None;
            }
            p.p_offset.checked_add(delta)
        })
}

fn check_type(facts: &ElfFacts, dynamic: Option<&DynamicFacts>, out: &mut Findings) {
    match facts.elf_type {
        ElfType::Exec => {}
        ElfType::Dyn => {
            // A PIE with an interpreter runs even from old linkers that did
            // not set DF_1_PIE; without one, no DF_1_PIE means a library.
            if facts.interpreter.is_none() && !dynamic.is_some_and(|d| d.pie) {
                out.error(
                    FindingKind::SharedObject,
                    "ET_DYN without an interpreter or DF_1_PIE: a shared library, not a program"
                        .into(),
                );
            }
        }
        other => out.error(
            FindingKind::NotExecutable {
                e_type: other.e_type(),
            },
            format!("{other} file: not an executable (need EXEC or DYN)"),
        ),
    }
}

fn check_linkage(facts: &ElfFacts, policy: &Policy, out: &mut Findings) {
    if !policy.require_static {
        return;
    }
    if let Some(path) = &facts.interpreter {
        out.error(
            FindingKind::Interpreter { path: path.clone() },
            format!("dynamically linked: requests program interpreter {path}"),
        );
    }
    if !facts.needed.is_empty() {
        out.error(
            FindingKind::NeededLibraries {
                libraries: facts.needed.clone(),
            },
            format!(
                "dynamically linked: needs shared libraries {}",
                facts.needed.join(", ")
            ),
        );
    }
}

fn check_segments(facts: &ElfFacts, out: &mut Findings) {
    if facts.load_segments.is_empty() {
        out.error(
            FindingKind::NoLoadSegments,
            "no PT_LOAD segments: nothing to run".into(),
        );
        return;
    }
    let entry_ok = facts.load_segments.iter().any(|s| {
        s.flags & ph::PF_X != 0
            && facts.entry >= s.vaddr
            && s.vaddr
                .checked_add(s.filesz)
                .is_some_and(|end| facts.entry < end)
    });
    if !entry_ok {
        out.error(
            FindingKind::EntryNotExecutable { entry: facts.entry },
            format!(
                "entry point {:#x} is not inside the file bytes of an executable PT_LOAD",
                facts.entry
            ),
        );
    }
    for s in &facts.load_segments {
        if s.flags & ph::PF_W != 0 && s.flags & ph::PF_X != 0 {
            out.error(
                FindingKind::WritableExecutable {
                    index: s.index,
                    vaddr: s.vaddr,
                },
                format!(
                    "segment {} at {:#x} is writable and executable (W^X violated)",
                    s.index, s.vaddr
                ),
            );
        }
    }
    match facts.stack {
        StackPolicy::Executable => out.error(
            FindingKind::ExecutableStack,
            "PT_GNU_STACK requests an executable stack".into(),
        ),
        StackPolicy::Missing => out.warning(
            FindingKind::MissingStackHeader,
            "no PT_GNU_STACK: stack permissions left to the kernel's default".into(),
        ),
        StackPolicy::NonExecutable => {}
    }
}

/// Fills the strip facts from the section headers. A file without section
/// headers has nothing left to strip.
fn strip_info(
    bytes: &dyn Input,
    hdr: &header::Header,
    ctx: Ctx,
    facts: &mut ElfFacts,
    out: &mut Findings,
) {
    let file_size = bytes.size();
    if hdr.e_shoff == 0 {
        facts.stripped = Some(true);
        return;
    }
    let entsize = SectionHeader::size(ctx) as u64;
    if u64::from(hdr.e_shentsize) != entsize {
        malformed(
            out,
            format!("e_shentsize is {}, expected {entsize}", hdr.e_shentsize),
        );
        return;
    }
    // With e_shnum == 0 the real count is in section 0's sh_size.
    let table = u64::from(hdr.e_shnum.max(1)) * entsize;
    if !fits(hdr.e_shoff, table, file_size) {
        truncated(
            out,
            "section header table".into(),
            hdr.e_shoff,
            table,
            file_size,
        );
        return;
    }
    let mut count = u64::from(hdr.e_shnum);
    if count == 0 {
        let Some(first) = bytes.read(hdr.e_shoff, entsize) else {
            return;
        };
        match SectionHeader::parse_from(&first, 0, 1, ctx) {
            Ok(s) => count = s.first().map_or(0, |s| s.sh_size),
            Err(e) => {
                malformed(out, format!("section headers: {e}"));
                return;
            }
        }
        let table = count.saturating_mul(entsize);
        if table > MAX_TABLE {
            too_large(out, "the section header table", table);
            return;
        }
        if !fits(hdr.e_shoff, table, file_size) {
            malformed(
                out,
                format!("section headers: {count} entries do not fit in the file"),
            );
            return;
        }
    }
    let Some(table) = bytes.read(hdr.e_shoff, count.max(1) * entsize) else {
        return;
    };
    let shdrs = match SectionHeader::parse_from(&table, 0, count as usize, ctx) {
        Ok(s) => s,
        Err(e) => {
            malformed(out, format!("section headers: {e}"));
            return;
        }
    };

    let shstrndx = if u32::from(hdr.e_shstrndx) == sh::SHN_XINDEX {
        shdrs.first().map_or(0, |s| s.sh_link as usize)
    } else {
        usize::from(hdr.e_shstrndx)
    };
    let names = shdrs.get(shstrndx).filter(|_| shstrndx != 0).and_then(|s| {
        if s.sh_size > MAX_TABLE {
            too_large(out, "the section-name table", s.sh_size);
            return None;
        }
        bytes.read(s.sh_offset, s.sh_size)
    });
    let name = |s: &SectionHeader| -> String {
        names
            .as_deref()
            .and_then(|t| c_str(t, s.sh_name as u64))
            .map(printable)
            .unwrap_or_else(|| format!("<section name at {:#x}>", s.sh_name))
    };

    let mut outside = Vec::new();
    let mut counted = vec![false; shdrs.len()];
    for (i, s) in shdrs.iter().enumerate() {
        let stored = s.sh_type != sh::SHT_NOBITS && s.sh_size > 0;
        if stored && !fits(s.sh_offset, s.sh_size, file_size) {
            outside.push((i, s));
            continue;
        }
        let n = name(s);
        // Allocated sections are part of the running image, whatever their
        // name (rustc's `.debug_gdb_scripts` is one): strip keeps them.
        let is_debug = (n.starts_with(".debug") || n.starts_with(".zdebug"))
            && s.sh_flags & u64::from(sh::SHF_ALLOC) == 0;
        if s.sh_type == sh::SHT_SYMTAB {
            facts.symbol_bytes = facts.symbol_bytes.saturating_add(s.sh_size);
            facts.strippable_sections.push(n);
            mark(&mut counted, i);
            // Its string table goes with it, unless that is also the
            // section-name table, which strip keeps.
            let link = s.sh_link as usize;
            if link != shstrndx && !counted.get(link).copied().unwrap_or(true) {
                if let Some(strtab) = shdrs.get(link) {
                    if strtab.sh_type == sh::SHT_STRTAB
                        && fits(strtab.sh_offset, strtab.sh_size, file_size)
                    {
                        facts.symbol_bytes = facts.symbol_bytes.saturating_add(strtab.sh_size);
                        facts.strippable_sections.push(name(strtab));
                        mark(&mut counted, link);
                    }
                }
            }
        } else if is_debug && stored && !counted.get(i).copied().unwrap_or(true) {
            facts.debug_bytes = facts.debug_bytes.saturating_add(s.sh_size);
            facts.strippable_sections.push(n);
            mark(&mut counted, i);
        }
    }
    // Sections past the end of the file may be the very ones strip would
    // remove; leave the answer open then.
    if outside.is_empty() || !facts.strippable_sections.is_empty() {
        facts.stripped = Some(facts.strippable_sections.is_empty());
    }

    if let Some(&(i, s)) = outside.first() {
        let what = if outside.len() == 1 {
            format!("section {i} ({})", name(s))
        } else {
            format!(
                "{} sections, the first section {i} ({})",
                outside.len(),
                name(s)
            )
        };
        truncated(out, what, s.sh_offset, s.sh_size, file_size);
    }
}

fn mark(counted: &mut [bool], i: usize) {
    if let Some(c) = counted.get_mut(i) {
        *c = true;
    }
}
