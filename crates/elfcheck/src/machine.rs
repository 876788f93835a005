//! The header-level vocabulary: machine, class, byte order, object type.

use std::fmt;
use std::str::FromStr;

use goblin::elf::header;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// CPU architecture, as named by `e_machine`.
///
/// Board configs name it with the strings [`FromStr`] accepts; it
/// serialises as the same canonical name (`Other` as its decimal number),
/// so a value read from YAML round-trips through JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Machine {
    /// `EM_AARCH64` (183).
    Aarch64,
    /// `EM_X86_64` (62).
    X86_64,
    /// `EM_RISCV` (243) in a 64-bit file; the same `e_machine` in a 32-bit
    /// file is riscv32, which the class check tells apart.
    Riscv64,
    /// `EM_ARM` (40): 32-bit ARM, not to be confused with aarch64.
    Arm,
    /// Anything else, by its raw `e_machine`.
    Other(u16),
}

impl Machine {
    pub fn from_e_machine(e_machine: u16) -> Self {
        match e_machine {
            header::EM_AARCH64 => Machine::Aarch64,
            header::EM_X86_64 => Machine::X86_64,
            header::EM_RISCV => Machine::Riscv64,
            header::EM_ARM => Machine::Arm,
            n => Machine::Other(n),
        }
    }

    pub fn e_machine(self) -> u16 {
        match self {
            Machine::Aarch64 => header::EM_AARCH64,
            Machine::X86_64 => header::EM_X86_64,
            Machine::Riscv64 => header::EM_RISCV,
            Machine::Arm => header::EM_ARM,
            Machine::Other(n) => n,
        }
    }

    /// The class a Linux userspace binary for this machine must have.
    /// `None` for machines we know nothing about.
    pub fn expected_class(self) -> Option<Class> {
        match self {
            Machine::Aarch64 | Machine::X86_64 | Machine::Riscv64 => Some(Class::Elf64),
            Machine::Arm => Some(Class::Elf32),
            Machine::Other(_) => None,
        }
    }

    /// All supported boards are little-endian; big-endian variants of these
    /// machines exist (aarch64_be, armeb) but would not run on them.
    pub fn expected_endianness(self) -> Option<Endianness> {
        match self {
            Machine::Other(_) => None,
            _ => Some(Endianness::Little),
        }
    }

    /// Canonical short name (`aarch64`, …), or the decimal `e_machine`.
    pub fn name(self) -> String {
        self.to_string()
    }

    /// Human description, also for machines we have no variant for
    /// (goblin's table: "MIPS", "PowerPC64", …).
    pub fn description(self) -> &'static str {
        header::machine_to_str(self.e_machine())
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Machine::Aarch64 => f.write_str("aarch64"),
            Machine::X86_64 => f.write_str("x86_64"),
            Machine::Riscv64 => f.write_str("riscv64"),
            Machine::Arm => f.write_str("arm"),
            Machine::Other(n) => write!(f, "{n}"),
        }
    }
}

/// A machine name that is neither known nor a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown machine {0:?} (expected aarch64, x86_64, riscv64, arm, or an e_machine number)")]
pub struct ParseMachineError(pub String);

impl FromStr for Machine {
    type Err = ParseMachineError;

    /// Accepts the canonical names, common aliases (Rust/Debian/kernel
    /// spellings and the `EM_*` constant names used in board configs), and
    /// raw `e_machine` numbers in decimal or `0x` hex.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        let named = match lower.as_str() {
            "aarch64" | "arm64" | "em_aarch64" => Some(Machine::Aarch64),
            "x86_64" | "x86-64" | "amd64" | "em_x86_64" => Some(Machine::X86_64),
            "riscv64" | "riscv64gc" | "riscv" | "em_riscv" => Some(Machine::Riscv64),
            "arm" | "arm32" | "armhf" | "armel" | "armv7" | "em_arm" => Some(Machine::Arm),
            _ => None,
        };
        if let Some(m) = named {
            return Ok(m);
        }
        let number = match lower.strip_prefix("0x") {
            Some(hex) => u16::from_str_radix(hex, 16).ok(),
            None => lower.parse::<u16>().ok(),
        };
        number
            .map(Machine::from_e_machine)
            .ok_or_else(|| ParseMachineError(t.to_string()))
    }
}

impl Serialize for Machine {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Machine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Numbers too, so `machine: 183` in YAML is not a surprise.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Number(u16),
        }
        match Raw::deserialize(d)? {
            Raw::Name(s) => s.parse().map_err(serde::de::Error::custom),
            Raw::Number(n) => Ok(Machine::from_e_machine(n)),
        }
    }
}

/// `EI_CLASS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Elf32,
    Elf64,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Elf32 => "ELF32",
            Class::Elf64 => "ELF64",
        })
    }
}

/// `EI_DATA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endianness {
    Little,
    Big,
}

impl fmt::Display for Endianness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Endianness::Little => "little-endian",
            Endianness::Big => "big-endian",
        })
    }
}

/// `e_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElfType {
    /// Relocatable object (`.o`).
    Rel,
    /// Fixed-address executable.
    Exec,
    /// Position-independent: a PIE, a static-pie, or a shared library.
    Dyn,
    Core,
    Other(u16),
}

impl ElfType {
    pub fn from_e_type(e_type: u16) -> Self {
        match e_type {
            header::ET_REL => ElfType::Rel,
            header::ET_EXEC => ElfType::Exec,
            header::ET_DYN => ElfType::Dyn,
            header::ET_CORE => ElfType::Core,
            n => ElfType::Other(n),
        }
    }

    pub fn e_type(self) -> u16 {
        match self {
            ElfType::Rel => header::ET_REL,
            ElfType::Exec => header::ET_EXEC,
            ElfType::Dyn => header::ET_DYN,
            ElfType::Core => header::ET_CORE,
            ElfType::Other(n) => n,
        }
    }
}

impl fmt::Display for ElfType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfType::Rel => f.write_str("REL"),
            ElfType::Exec => f.write_str("EXEC"),
            ElfType::Dyn => f.write_str("DYN"),
            ElfType::Core => f.write_str("CORE"),
            ElfType::Other(n) => write!(f, "type {n:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_config_spellings_parse() {
        for (s, m) in [
            ("aarch64", Machine::Aarch64),
            ("EM_AARCH64", Machine::Aarch64),
            ("arm64", Machine::Aarch64),
            ("x86_64", Machine::X86_64),
            ("EM_X86_64", Machine::X86_64),
            ("riscv64", Machine::Riscv64),
            ("EM_RISCV", Machine::Riscv64),
            ("arm", Machine::Arm),
            ("183", Machine::Aarch64),
            ("0x28", Machine::Arm),
            ("8", Machine::Other(8)),
        ] {
            assert_eq!(s.parse::<Machine>(), Ok(m), "{s}");
        }
        assert!("mips-ish".parse::<Machine>().is_err());
        assert!("70000".parse::<Machine>().is_err());
    }

    #[test]
    fn names_round_trip() {
        for m in [
            Machine::Aarch64,
            Machine::X86_64,
            Machine::Riscv64,
            Machine::Arm,
            Machine::Other(8),
        ] {
            assert_eq!(m.to_string().parse::<Machine>(), Ok(m));
            assert_eq!(Machine::from_e_machine(m.e_machine()), m);
        }
        // 32-bit ARM and aarch64 are different machines, not one "arm".
        assert_ne!(Machine::from_e_machine(40), Machine::from_e_machine(183));
    }
}
