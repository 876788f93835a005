//! The layout file (YAML) used by `fwpack disk --layout`, and embeddable
//! in board configs: unknown fields are refused, sizes are written with
//! binary units, relative paths are relative to the file.
//!
//! ```yaml
//! table: mbr                  # or gpt
//! seed: acme/rpi-zero2w       # all disk/partition/volume IDs derive from it
//! size: 64MiB                 # optional; default: just enough
//! partitions:
//!   - name: boot
//!     kind: fat               # fat | raw | empty
//!     size: 32MiB
//!     bootable: true
//!     label: BOOT
//!     fat: auto               # auto | 16 | 32
//!     files:
//!       - { dest: config.txt, source: boot/config.txt }
//!     tree: firmware/         # optional: a whole directory, recursively
//!     dirs: [overlays]
//!   - { name: rootfs-a, kind: raw, size: 16MiB, source: rootfs.ext4 }
//!   - { name: state, kind: empty }   # no size: the rest of the disk
//! ```

use crate::error::Error;
use crate::guid::gpt_types;
use crate::layout::{
    DiskLayout, FatFile, FatKind, FatSpec, PartKind, PartitionSpec, Source, TableKind,
};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutConfig {
    pub table: TableKind,
    pub seed: String,
    #[serde(default)]
    pub size: Option<ByteSize>,
    pub partitions: Vec<PartitionConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KindConfig {
    Fat,
    Raw,
    Empty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    pub name: String,
    pub kind: KindConfig,
    /// Absent: fill the rest of the disk (last partition, disk size given).
    #[serde(default)]
    pub size: Option<ByteSize>,
    #[serde(default)]
    pub start: Option<ByteSize>,
    #[serde(default)]
    pub bootable: bool,
    #[serde(default)]
    pub mbr_type: Option<MbrType>,
    /// A GUID or one of `esp`, `basic-data`, `linux`, `linux-root-x86-64`,
    /// `linux-root-arm64`, `linux-root-riscv64`.
    #[serde(default)]
    pub gpt_type: Option<String>,
    // kind: fat
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub fat: Option<FatChoice>,
    #[serde(default)]
    pub files: Vec<FileConfig>,
    #[serde(default)]
    pub tree: Option<PathBuf>,
    #[serde(default)]
    pub dirs: Vec<String>,
    // kind: raw
    #[serde(default)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub dest: String,
    pub source: PathBuf,
}

/// A byte count: an integer, or a string with a binary unit
/// (`512`, `4KiB`, `64MiB`, `1GiB`; `K`/`M`/`G`/`T` mean the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<u64, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size (e.g. 512, 4KiB, 64MiB)"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            "KB" | "MB" | "GB" | "TB" | "kB" => {
                return Err(format!(
                    "{s:?}: decimal units are ambiguous here; write KiB, MiB, GiB or TiB"
                ))
            }
            u => {
                return Err(format!(
                    "{s:?}: unknown unit {u:?} (use KiB, MiB, GiB, TiB)"
                ))
            }
        };
        n.checked_mul(mult)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size in bytes or a string like \"64MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// An MBR type byte: `0x0c`, `12`, or `"c"` / `"0c"` / `"0x0C"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrType(pub u8);

impl<'de> Deserialize<'de> for MbrType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MbrType;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an MBR partition type byte, e.g. 0x0c or \"83\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MbrType, E> {
                u8::try_from(v)
                    .map(MbrType)
                    .map_err(|_| E::custom(format!("MBR type {v} does not fit in a byte")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MbrType, E> {
                u8::try_from(v)
                    .map(MbrType)
                    .map_err(|_| E::custom(format!("MBR type {v} does not fit in a byte")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MbrType, E> {
                let h = v.trim();
                let h = h
                    .strip_prefix("0x")
                    .or_else(|| h.strip_prefix("0X"))
                    .unwrap_or(h);
                u8::from_str_radix(h, 16)
                    .map(MbrType)
                    .map_err(|_| E::custom(format!("{v:?} is not a hex MBR type byte")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `auto`, `16`/`fat16`, `32`/`fat32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FatChoice(pub FatKind);

impl<'de> Deserialize<'de> for FatChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FatChoice;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("auto, 16 or 32")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FatChoice, E> {
                match v {
                    16 => Ok(FatChoice(FatKind::Fat16)),
                    32 => Ok(FatChoice(FatKind::Fat32)),
                    _ => Err(E::custom(format!(
                        "FAT{v} is not offered; use auto, 16 or 32"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FatChoice, E> {
                self.visit_u64(u64::try_from(v).unwrap_or(0))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FatChoice, E> {
                match v.to_ascii_lowercase().as_str() {
                    "auto" => Ok(FatChoice(FatKind::Auto)),
                    "16" | "fat16" => Ok(FatChoice(FatKind::Fat16)),
                    "32" | "fat32" => Ok(FatChoice(FatKind::Fat32)),
                    _ => Err(E::custom(format!("{v:?}: use auto, 16 or 32"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl LayoutConfig {
    /// Parses YAML text; `file` is used in error messages only.
    pub fn from_yaml(text: &str, file: &Path) -> Result<Self, Error> {
        serde_yaml::from_str(text).map_err(|e| {
            let loc = e.location();
            let mut message = e.to_string();
            // serde_yaml appends " at line L column C"; we prefix it instead.
            if loc.is_some() {
                if let Some(i) = message.rfind(" at line ") {
                    message.truncate(i);
                }
            }
            Error::Config {
                file: file.to_path_buf(),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                message,
            }
        })
    }

    /// Reads and checks a layout file; relative paths in it are resolved
    /// against its directory.
    pub fn load(path: &Path) -> Result<DiskLayout, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let cfg = Self::from_yaml(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.into_layout(base, Some((path, &text)))
    }

    /// Checks the combinations serde cannot (fields that only apply to one
    /// kind) and builds the layout. `origin` (file name and text) lets
    /// errors point at the partition's line.
    pub fn into_layout(
        self,
        base: &Path,
        origin: Option<(&Path, &str)>,
    ) -> Result<DiskLayout, Error> {
        let mut partitions = Vec::with_capacity(self.partitions.len());
        for (i, p) in self.partitions.into_iter().enumerate() {
            let err = |message: String| Error::Config {
                file: origin.map(|o| o.0.to_path_buf()).unwrap_or_default(),
                line: origin.and_then(|o| line_of_name(o.1, &p.name)),
                column: None,
                message: format!("partitions[{i}] ({:?}): {message}", p.name),
            };
            let only =
                |field: &str, kind: &str| err(format!("`{field}` only applies to kind: {kind}"));
            let resolve = |s: &Path| -> PathBuf {
                if s.is_absolute() {
                    s.to_path_buf()
                } else {
                    base.join(s)
                }
            };
            if p.kind != KindConfig::Fat {
                if p.label.is_some() {
                    return Err(only("label", "fat"));
                }
                if p.fat.is_some() {
                    return Err(only("fat", "fat"));
                }
                if !p.files.is_empty() {
                    return Err(only("files", "fat"));
                }
                if p.tree.is_some() {
                    return Err(only("tree", "fat"));
                }
                if !p.dirs.is_empty() {
                    return Err(only("dirs", "fat"));
                }
            }
            if p.kind != KindConfig::Raw && p.source.is_some() {
                return Err(only("source", "raw"));
            }
            let kind = match p.kind {
                KindConfig::Fat => {
                    let mut spec = FatSpec {
                        label: p.label.clone().unwrap_or_default(),
                        fat_type: p.fat.map_or(FatKind::Auto, |c| c.0),
                        files: p
                            .files
                            .iter()
                            .map(|f| FatFile {
                                dest: f.dest.clone(),
                                source: Source::Path(resolve(&f.source)),
                            })
                            .collect(),
                        dirs: p.dirs.clone(),
                    };
                    if let Some(t) = &p.tree {
                        spec.add_tree(&resolve(t), "")?;
                    }
                    PartKind::Fat(spec)
                }
                KindConfig::Raw => match &p.source {
                    Some(s) => PartKind::Raw(Source::Path(resolve(s))),
                    None => {
                        return Err(err(
                            "kind: raw needs a `source` (use kind: empty for none)".into()
                        ))
                    }
                },
                KindConfig::Empty => PartKind::Empty,
            };
            let gpt_type = match &p.gpt_type {
                None => None,
                Some(s) => Some(gpt_types::parse(s).ok_or_else(|| {
                    err(format!(
                        "gpt_type {s:?} is neither a GUID nor one of {}",
                        gpt_types::NAMED
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?),
            };
            if self.table == TableKind::Mbr && gpt_type.is_some() {
                return Err(err("gpt_type given for an MBR disk".into()));
            }
            if self.table == TableKind::Gpt && p.mbr_type.is_some() {
                return Err(err("mbr_type given for a GPT disk".into()));
            }
            partitions.push(PartitionSpec {
                name: p.name.clone(),
                start_bytes: p.start.map(|s| s.0),
                size_bytes: p.size.map(|s| s.0),
                kind,
                bootable: p.bootable,
                mbr_type: p.mbr_type.map(|t| t.0),
                gpt_type,
            });
        }
        Ok(DiskLayout {
            table: self.table,
            seed: self.seed,
            size_bytes: self.size.map(|s| s.0),
            fat_timestamp: None,
            partitions,
            reserved: Vec::new(),
        })
    }
}

/// Best effort: the line holding `name: <name>`, so a message about a
/// partition points into the file.
fn line_of_name(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches('-').trim_start();
            let l = l.strip_prefix('{').unwrap_or(l).trim_start();
            l.strip_prefix("name:").is_some_and(|rest| {
                let v = rest.split([',', '}', '#']).next().unwrap_or("").trim();
                v.trim_matches(|c| c == '"' || c == '\'') == name
            })
        })
        .map(|i| i + 1)
}

/// `SOURCE_DATE_EPOCH` from the environment, for `DiskLayout::fat_timestamp`.
pub fn source_date_epoch() -> Result<Option<u64>, Error> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Error::BadSourceDateEpoch(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(Error::BadSourceDateEpoch(v.to_string_lossy().into_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("512").unwrap(), 512);
        assert_eq!(ByteSize::parse("64MiB").unwrap(), 64 << 20);
        assert_eq!(ByteSize::parse(" 2 G ").unwrap(), 2 << 30);
        assert!(ByteSize::parse("64MB").is_err());
        assert!(ByteSize::parse("MiB").is_err());
        assert!(ByteSize::parse("-1").is_err());
        assert!(ByteSize::parse("99999999999TiB").is_err());
    }

    #[test]
    fn unknown_field_has_a_line() {
        let y = "table: mbr\nseed: x\npartitions:\n  - name: a\n    kind: empty\n    sise: 1MiB\n";
        match LayoutConfig::from_yaml(y, Path::new("l.yaml")) {
            Err(Error::Config { line, message, .. }) => {
                assert_eq!(line, Some(6));
                assert!(message.contains("sise"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kind_specific_fields_are_checked() {
        let y = "table: gpt\nseed: x\npartitions:\n  - name: a\n    kind: empty\n    size: 1MiB\n  - name: b\n    kind: raw\n    size: 1MiB\n    label: X\n    source: f\n";
        let cfg = LayoutConfig::from_yaml(y, Path::new("l.yaml")).unwrap();
        match cfg.into_layout(Path::new("."), Some((Path::new("l.yaml"), y))) {
            Err(Error::Config { line, message, .. }) => {
                assert_eq!(line, Some(7));
                assert!(message.contains("label"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn types_parse() {
        let y = "table: mbr\nseed: x\npartitions:\n  - {name: a, kind: empty, size: 1MiB, mbr_type: 0x0c}\n  - {name: b, kind: empty, size: 1MiB, mbr_type: \"83\"}\n";
        let l = LayoutConfig::from_yaml(y, Path::new("l.yaml"))
            .unwrap()
            .into_layout(Path::new("."), None)
            .unwrap();
        assert_eq!(l.partitions[0].mbr_type, Some(0x0c));
        assert_eq!(l.partitions[1].mbr_type, Some(0x83));
        assert_eq!(
            gpt_types::parse("linux-root-arm64"),
            Some(gpt_types::LINUX_ROOT_ARM64)
        );
    }
}
