//! What a check can say about a file.

use std::fmt;

use serde::Serialize;

use crate::machine::{Class, Endianness, Machine};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; does not fail the check.
    Warning,
    /// Fails the check.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One observation about a file: how bad it is, what it is (typed, for
/// callers that react to specific problems), and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    #[serde(flatten)]
    pub kind: FindingKind,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity, self.message)
    }
}

/// The typed part of a [`Finding`]. Serialised with a `kind` tag
/// (`{"kind": "interpreter", "path": "/lib/ld-linux-aarch64.so.1"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FindingKind {
    /// No ELF magic: a script, a text file, some other format.
    NotElf {
        /// `true` when the file starts with `#!`.
        script: bool,
    },
    /// ELF magic, but headers that cannot be taken at face value
    /// (bad class/data bytes, wrong entry sizes, unreadable tables).
    Malformed {
        detail: String,
    },
    /// Something the headers point at lies (partly) beyond the end of the
    /// file: a cut-off download or a damaged copy.
    Truncated {
        what: String,
        offset: u64,
        size: u64,
        file_size: u64,
    },
    WrongClass {
        expected: Class,
        found: Class,
    },
    WrongEndianness {
        expected: Endianness,
        found: Endianness,
    },
    WrongMachine {
        expected: Machine,
        found: Machine,
    },
    /// Not an executable (`ET_REL`, `ET_CORE`, …).
    NotExecutable {
        e_type: u16,
    },
    /// `ET_DYN` without `DF_1_PIE`: a shared library rather than a program.
    SharedObject,
    /// `PT_INTERP`: the kernel would hand the file to this dynamic loader.
    Interpreter {
        path: String,
    },
    /// `DT_NEEDED` entries: shared libraries the device must provide.
    NeededLibraries {
        libraries: Vec<String>,
    },
    NoLoadSegments,
    /// `e_entry` is not inside the file-backed part of an executable
    /// `PT_LOAD`.
    EntryNotExecutable {
        entry: u64,
    },
    /// A `PT_LOAD` that is both writable and executable (W^X violated).
    WritableExecutable {
        index: usize,
        vaddr: u64,
    },
    /// `PT_GNU_STACK` asks for an executable stack.
    ExecutableStack,
    /// No `PT_GNU_STACK`: the stack's permissions are left to the kernel's
    /// per-architecture default (executable on older x86 kernels).
    MissingStackHeader,
    /// Symbol tables or debug sections are present.
    NotStripped {
        /// `.symtab` plus the string table it links to.
        symbol_bytes: u64,
        /// `.debug_*` / `.zdebug_*` sections.
        debug_bytes: u64,
        sections: Vec<String>,
    },
    OverBudget {
        size: u64,
        budget: u64,
    },
}

impl FindingKind {
    /// The file is not something we could fully parse (exit class FORMAT),
    /// as opposed to a well-formed ELF that policy refuses.
    pub fn is_format(&self) -> bool {
        matches!(
            self,
            FindingKind::NotElf { .. }
                | FindingKind::Malformed { .. }
                | FindingKind::Truncated { .. }
        )
    }
}
