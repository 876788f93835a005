//! What a file is, independent of any policy.

use std::fmt;

use goblin::elf::program_header as ph;
use serde::{Serialize, Serializer};

use crate::machine::{Class, ElfType, Endianness, Machine};

/// How the program gets its code at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Linkage {
    /// `ET_EXEC`, no interpreter, no needed libraries.
    Static,
    /// `ET_DYN` that relocates itself: may have `PT_DYNAMIC`, but no
    /// interpreter and no needed libraries.
    StaticPie,
    /// Has `PT_INTERP` or `DT_NEEDED`.
    Dynamic,
    /// No interpreter, but a `PT_DYNAMIC` we could not read (or no program
    /// headers at all): not provably static.
    Unknown,
}

impl Linkage {
    /// Static in the sense the device cares about: runs with no loader and
    /// no libraries.
    pub fn is_static(self) -> bool {
        matches!(self, Linkage::Static | Linkage::StaticPie)
    }
}

impl fmt::Display for Linkage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Linkage::Static => "static",
            Linkage::StaticPie => "static-pie",
            Linkage::Dynamic => "dynamic",
            Linkage::Unknown => "linkage unknown",
        })
    }
}

/// `PT_GNU_STACK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StackPolicy {
    NonExecutable,
    Executable,
    /// No `PT_GNU_STACK` header.
    Missing,
}

/// One `PT_LOAD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Index in the program header table.
    pub index: usize,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    /// `p_flags` (`PF_R` 4, `PF_W` 2, `PF_X` 1); serialised as readelf
    /// prints it, e.g. `"R E"`.
    #[serde(serialize_with = "flags_str")]
    pub flags: u32,
}

impl Segment {
    pub fn readable(&self) -> bool {
        self.flags & ph::PF_R != 0
    }
    pub fn writable(&self) -> bool {
        self.flags & ph::PF_W != 0
    }
    pub fn executable(&self) -> bool {
        self.flags & ph::PF_X != 0
    }
}

/// readelf's `Flg` column: `R`, `W`, `E` or a space each.
pub fn flags_string(flags: u32) -> String {
    [(ph::PF_R, 'R'), (ph::PF_W, 'W'), (ph::PF_X, 'E')]
        .iter()
        .map(|&(bit, c)| if flags & bit != 0 { c } else { ' ' })
        .collect()
}

fn flags_str<S: Serializer>(flags: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&flags_string(*flags))
}

/// Everything we learned about a file whose ELF header parsed. Fields that
/// depend on tables we could not read keep their neutral values
/// (`linkage: Unknown`, empty lists); a finding says why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ElfFacts {
    pub file_size: u64,
    pub class: Class,
    pub endianness: Endianness,
    pub machine: Machine,
    /// Raw `e_machine`, for machines [`Machine`] has no name for.
    pub e_machine: u16,
    pub elf_type: ElfType,
    pub entry: u64,
    pub linkage: Linkage,
    /// `PT_INTERP` path.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` names, in file order.
    pub needed: Vec<String>,
    /// `DT_FLAGS_1` has `DF_1_PIE`.
    pub pie: bool,
    pub stack: StackPolicy,
    pub load_segments: Vec<Segment>,
    /// No symbol table and no debug sections; `None` when the section
    /// headers could not be read (a file without any is stripped).
    pub stripped: Option<bool>,
    /// Bytes `strip` would remove for the symbol table and its strings.
    pub symbol_bytes: u64,
    /// Bytes of `.debug_*` / `.zdebug_*` sections.
    pub debug_bytes: u64,
    /// Names of the sections counted in `symbol_bytes` and `debug_bytes`.
    pub strippable_sections: Vec<String>,
}
