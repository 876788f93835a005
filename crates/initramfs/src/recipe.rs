//! Recipes: YAML descriptions of what goes into an initramfs.
//!
//! ```yaml
//! description: the updater's initramfs
//! dirs: [/proc, /sys, {path: /tmp, mode: "1777"}]
//! files:
//!   - {src: "${UPDATER}", dst: /init, mode: "0755"}
//! trees:
//!   - {src: overlay, dst: /}
//! symlinks:
//!   - {path: /bin/sh, target: /init}
//! hardlinks:
//!   - {path: /sbin/init, target: /init}
//! devices:
//!   - {path: /dev/console, type: char, major: 5, minor: 1, mode: "0600"}
//! images:
//!   - {src: "${IMAGE}", dst: /images/update.fwi}
//! modules:
//!   dir: "${KERNEL_MODULES:-}"
//!   names: ["${MODULES:-}"]
//! ```
//!
//! Rules:
//! - unknown fields are errors, reported with file, line and column;
//! - modes are octal strings (`"0755"`, or `0755`, which serde_yaml keeps
//!   as a string); a plain number such as `755` or `0o755` is refused,
//!   because YAML 1.2 reads `755` as decimal, a classic way to ship a
//!   world-writable file;
//! - `${NAME}` is replaced by a variable the caller passes (`--var`),
//!   `${NAME:-default}` falls back to `default`, `$$` is a literal `$`;
//!   the process environment is never consulted, so a recipe means the
//!   same thing on every machine. Substitution happens on parsed strings,
//!   so a value can never inject YAML;
//! - a relative `src` (after substitution) is relative to the recipe file's
//!   directory, not to the caller's working directory;
//! - module `names` entries are split on whitespace and commas after
//!   substitution, so `names: ["${MODULES:-}"]` takes a list from one
//!   variable and may end up empty;
//! - `/init` must end up an executable file unless `require_init: false`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::{modules, Builder, DeviceKind, Error, Meta, Options};

/// Variables substituted into recipe strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vars(BTreeMap<String, String>);

impl Vars {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.insert(name.into(), value.into());
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Parses `NAME=VALUE` (as given on a command line).
    pub fn set_assignment(&mut self, assignment: &str) -> Result<&mut Self, String> {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| format!("{assignment:?} is not NAME=VALUE"))?;
        if !valid_var_name(name) {
            return Err(format!(
                "{name:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
            ));
        }
        Ok(self.set(name, value))
    }
}

fn valid_var_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Replaces `${NAME}`, `${NAME:-default}` and `$$` in `s`.
pub fn expand(s: &str, vars: &Vars) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let after = rest.get(i + 1..).unwrap_or_default();
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in {s:?}"))?;
            let inner = body.get(..end).unwrap_or_default();
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if !valid_var_name(name) {
                return Err(format!("`${{{inner}}}` is not a valid variable reference"));
            }
            match (vars.get(name), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "undefined variable ${{{name}}} (pass it with --var {name}=...)"
                    ))
                }
            }
            rest = body.get(end + 1..).unwrap_or_default();
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Permission bits written as a quoted octal string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Mode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a quoted octal mode such as \"0755\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Mode, E> {
                let digits = v.strip_prefix("0o").unwrap_or(v);
                match u32::from_str_radix(digits, 8) {
                    Ok(m) if m <= 0o7777 && !digits.is_empty() => Ok(Mode(m)),
                    _ => Err(E::custom(format!(
                        "mode {v:?} is not an octal number up to 7777"
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Mode, E> {
                Err(E::custom(format!(
                    "mode {v} must be a quoted octal string like \"0755\" (unquoted numbers are read as decimal)"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Mode, E> {
                self.visit_u64(v.unsigned_abs())
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    #[serde(default)]
    description: Option<String>,
    #[serde(default = "yes")]
    require_init: bool,
    #[serde(default)]
    dirs: Vec<DirSpec>,
    #[serde(default)]
    files: Vec<FileSpec>,
    #[serde(default)]
    trees: Vec<TreeSpec>,
    #[serde(default)]
    symlinks: Vec<LinkSpec>,
    #[serde(default)]
    hardlinks: Vec<LinkSpec>,
    #[serde(default)]
    devices: Vec<DeviceSpec>,
    #[serde(default)]
    images: Vec<ImageSpec>,
    #[serde(default)]
    modules: Option<ModulesSpec>,
}

fn yes() -> bool {
    true
}

/// `- /proc` or `- {path: /tmp, mode: "1777"}`.
#[derive(Debug)]
struct DirSpec(DirFull);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirFull {
    path: String,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
}

impl<'de> Deserialize<'de> for DirSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DirSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a directory path or {path, mode, uid, gid}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DirSpec, E> {
                Ok(DirSpec(DirFull {
                    path: v.to_owned(),
                    mode: None,
                    uid: None,
                    gid: None,
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DirSpec, A::Error> {
                DirFull::deserialize(de::value::MapAccessDeserializer::new(map)).map(DirSpec)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    src: String,
    dst: String,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TreeSpec {
    src: String,
    dst: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkSpec {
    path: String,
    target: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum DevType {
    Char,
    Block,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceSpec {
    path: String,
    #[serde(rename = "type")]
    kind: DevType,
    major: u32,
    minor: u32,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageSpec {
    src: String,
    #[serde(default)]
    dst: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModulesSpec {
    #[serde(default)]
    dir: Option<String>,
    #[serde(default)]
    release: Option<String>,
    #[serde(default)]
    names: Vec<String>,
}

/// Where image files go when a recipe gives no `dst`.
pub const IMAGE_DIR: &str = "/images";

/// A parsed recipe with variables substituted and sources resolved.
#[derive(Debug)]
pub struct Recipe {
    file: PathBuf,
    text: String,
    pub description: Option<String>,
    pub require_init: bool,
    steps: Vec<Step>,
    modules: Option<(PathBuf, Option<String>, Vec<String>)>,
}

#[derive(Debug)]
enum Step {
    Dir(String, Meta),
    File(String, PathBuf, Option<Meta>),
    Tree(String, PathBuf),
    Symlink(String, String),
    HardLink(String, String),
    Device(String, DeviceKind, u32, u32, Meta),
}

impl Recipe {
    /// Reads and resolves a recipe file.
    pub fn load(path: &Path, vars: &Vars) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
            path: path.into(),
            source: e,
        })?;
        Self::parse(&text, path, vars)
    }

    /// Parses recipe text; `file` is used for error messages and as the
    /// base for relative sources.
    pub fn parse(text: &str, file: &Path, vars: &Vars) -> Result<Self, Error> {
        let raw: RawRecipe = serde_yaml::from_str(text).map_err(|e| {
            let loc = e.location();
            let msg = e.to_string();
            // serde_yaml appends " at line L column C"; we print it as file:L:C.
            let message = match msg.rfind(" at line ") {
                Some(i) if loc.is_some() => msg.get(..i).unwrap_or(&msg).to_owned(),
                _ => msg,
            };
            Error::Recipe {
                file: file.into(),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                message,
            }
        })?;
        let mut r = Recipe {
            file: file.into(),
            text: text.into(),
            description: raw.description.clone(),
            require_init: raw.require_init,
            steps: Vec::new(),
            modules: None,
        };
        r.resolve(raw, vars)?;
        Ok(r)
    }

    fn err(&self, message: String) -> Error {
        // Point at the first line mentioning the offending variable, if any.
        let line = message
            .find("${")
            .and_then(|i| message.get(i..))
            .and_then(|v| v.split(['}', ':']).next())
            .and_then(|needle| self.text.lines().position(|l| l.contains(needle)))
            .map(|i| i + 1);
        Error::Recipe {
            file: self.file.clone(),
            line,
            column: None,
            message,
        }
    }

    fn expand(&self, what: &str, s: &str, vars: &Vars) -> Result<String, Error> {
        expand(s, vars).map_err(|m| self.err(format!("{what}: {m}")))
    }

    fn src_path(&self, s: &str) -> PathBuf {
        let p = Path::new(s);
        if p.is_absolute() {
            return p.into();
        }
        match self.file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.join(p),
            _ => p.into(),
        }
    }

    fn resolve(&mut self, raw: RawRecipe, vars: &Vars) -> Result<(), Error> {
        let meta = |mode: Option<Mode>, default: u32, uid: Option<u32>, gid: Option<u32>| Meta {
            mode: mode.map_or(default, |m| m.0),
            uid: uid.unwrap_or(0),
            gid: gid.unwrap_or(0),
        };
        for (i, d) in raw.dirs.iter().enumerate() {
            let d = &d.0;
            let path = self.expand(&format!("dirs[{i}]"), &d.path, vars)?;
            self.steps
                .push(Step::Dir(path, meta(d.mode, 0o755, d.uid, d.gid)));
        }
        for (i, t) in raw.trees.iter().enumerate() {
            let src = self.expand(&format!("trees[{i}].src"), &t.src, vars)?;
            let dst = self.expand(&format!("trees[{i}].dst"), &t.dst, vars)?;
            self.nonempty(&format!("trees[{i}].src"), &src)?;
            self.steps.push(Step::Tree(dst, self.src_path(&src)));
        }
        for (i, f) in raw.files.iter().enumerate() {
            let src = self.expand(&format!("files[{i}].src"), &f.src, vars)?;
            let dst = self.expand(&format!("files[{i}].dst"), &f.dst, vars)?;
            self.nonempty(&format!("files[{i}].src"), &src)?;
            let m = (f.mode.is_some() || f.uid.is_some() || f.gid.is_some())
                .then(|| meta(f.mode, 0o644, f.uid, f.gid));
            self.steps.push(Step::File(dst, self.src_path(&src), m));
        }
        for (i, img) in raw.images.iter().enumerate() {
            let src = self.expand(&format!("images[{i}].src"), &img.src, vars)?;
            self.nonempty(&format!("images[{i}].src"), &src)?;
            let dst = match &img.dst {
                Some(d) => self.expand(&format!("images[{i}].dst"), d, vars)?,
                None => {
                    let name = Path::new(&src)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .ok_or_else(|| {
                            self.err(format!("images[{i}].src {src:?} has no file name"))
                        })?;
                    format!("{IMAGE_DIR}/{name}")
                }
            };
            self.steps.push(Step::File(
                dst,
                self.src_path(&src),
                Some(Meta::mode(0o644)),
            ));
        }
        for (i, l) in raw.symlinks.iter().enumerate() {
            let path = self.expand(&format!("symlinks[{i}].path"), &l.path, vars)?;
            let target = self.expand(&format!("symlinks[{i}].target"), &l.target, vars)?;
            self.steps.push(Step::Symlink(path, target));
        }
        for (i, l) in raw.hardlinks.iter().enumerate() {
            let path = self.expand(&format!("hardlinks[{i}].path"), &l.path, vars)?;
            let target = self.expand(&format!("hardlinks[{i}].target"), &l.target, vars)?;
            self.steps.push(Step::HardLink(path, target));
        }
        for (i, d) in raw.devices.iter().enumerate() {
            let path = self.expand(&format!("devices[{i}].path"), &d.path, vars)?;
            let kind = match d.kind {
                DevType::Char => DeviceKind::Char,
                DevType::Block => DeviceKind::Block,
            };
            self.steps.push(Step::Device(
                path,
                kind,
                d.major,
                d.minor,
                meta(d.mode, 0o600, d.uid, d.gid),
            ));
        }
        if let Some(m) = &raw.modules {
            let mut names = Vec::new();
            for (i, n) in m.names.iter().enumerate() {
                let v = self.expand(&format!("modules.names[{i}]"), n, vars)?;
                names.extend(
                    v.split([' ', '\t', '\n', ','])
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
            }
            let dir = match &m.dir {
                Some(d) => self.expand("modules.dir", d, vars)?,
                None => String::new(),
            };
            let release = match &m.release {
                Some(r) => Some(self.expand("modules.release", r, vars)?).filter(|r| !r.is_empty()),
                None => None,
            };
            if !names.is_empty() {
                if dir.is_empty() {
                    return Err(self.err(format!(
                        "modules.dir is empty but modules are requested ({})",
                        names.join(" ")
                    )));
                }
                self.modules = Some((self.src_path(&dir), release, names));
            }
        }
        Ok(())
    }

    fn nonempty(&self, what: &str, v: &str) -> Result<(), Error> {
        if v.is_empty() {
            return Err(self.err(format!("{what} is empty after substitution")));
        }
        Ok(())
    }

    /// The recipe file this came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Resolves the module closure (if the recipe asks for modules).
    pub fn module_set(&self) -> Result<Option<modules::ModuleSet>, Error> {
        match &self.modules {
            None => Ok(None),
            Some((dir, release, names)) => {
                modules::resolve(dir, release.as_deref(), names).map(Some)
            }
        }
    }

    /// Builds the archive tree the recipe describes; also returns the
    /// resolved kernel modules (if any), for reporting.
    pub fn build(&self, options: Options) -> Result<(Builder, Option<modules::ModuleSet>), Error> {
        let mut b = Builder::new(options);
        for step in &self.steps {
            match step {
                Step::Dir(p, m) => b.add_dir(p, *m)?,
                Step::Tree(dst, src) => b.add_tree(dst, src)?,
                Step::File(dst, src, m) => b.add_file(dst, src, *m)?,
                Step::Symlink(p, t) => b.add_symlink(p, t)?,
                Step::HardLink(p, t) => b.add_hardlink(p, t)?,
                Step::Device(p, k, ma, mi, m) => b.add_device(p, *k, *ma, *mi, *m)?,
            }
        }
        let set = self.module_set()?;
        if let Some(set) = &set {
            set.add_to(&mut b)?;
        }
        if self.require_init {
            b.check_init()?;
        }
        Ok((b, set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        let mut v = Vars::new();
        for (k, val) in pairs {
            v.set(*k, *val);
        }
        v
    }

    #[test]
    fn substitution() {
        let v = vars(&[("A", "x"), ("EMPTY", "")]);
        assert_eq!(expand("${A}/b", &v).unwrap(), "x/b");
        assert_eq!(expand("${B:-dflt}", &v).unwrap(), "dflt");
        assert_eq!(expand("${EMPTY:-dflt}", &v).unwrap(), "");
        assert_eq!(expand("$$A $x", &v).unwrap(), "$A $x");
        assert!(expand("${B}", &v)
            .unwrap_err()
            .contains("undefined variable ${B}"));
        assert!(expand("${A", &v).is_err());
        assert!(expand("${1A}", &v).is_err());
    }

    #[test]
    fn unknown_field_has_location() {
        let text = "dirs: [/proc]\nfiles:\n  - src: a\n    dst: /init\n    mdoe: \"0755\"\n";
        let e = Recipe::parse(text, Path::new("r.yaml"), &Vars::new()).unwrap_err();
        let Error::Recipe { line, message, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(*line, Some(5));
        assert!(message.contains("unknown field `mdoe`"), "{message}");
        assert!(e.to_string().starts_with("r.yaml:5:"), "{e}");
    }

    #[test]
    fn decimal_looking_modes_are_refused() {
        // serde_yaml hands a leading-zero scalar over as a string: octal, fine.
        let text = "require_init: false\nfiles:\n  - {src: a, dst: /init, mode: 0755}\n";
        let r = Recipe::parse(text, Path::new("r.yaml"), &Vars::new()).unwrap();
        assert!(matches!(&r.steps[0], Step::File(_, _, Some(m)) if m.mode == 0o755));
        for bad in ["755", "0o755", "\"0999\"", "\"17777\"", "\"\""] {
            let text = format!("files:\n  - {{src: a, dst: /init, mode: {bad}}}\n");
            let e = Recipe::parse(&text, Path::new("r.yaml"), &Vars::new()).unwrap_err();
            assert!(e.to_string().contains("octal"), "{bad}: {e}");
        }
    }

    #[test]
    fn undefined_variable_points_at_line() {
        let text = "dirs: [/proc]\nfiles:\n  - {src: \"${UPDATER}\", dst: /init}\n";
        let e = Recipe::parse(text, Path::new("r.yaml"), &Vars::new()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("r.yaml:3: files[0].src: undefined variable ${UPDATER}"),
            "{e}"
        );
    }

    #[test]
    fn dirs_string_or_map_and_relative_sources() {
        let text = "require_init: false\ndirs: [/proc, {path: /tmp, mode: \"1777\"}]\nfiles: [{src: sub/x, dst: /x}]\nmodules: {dir: \"${K:-}\", names: [\"${M:-}\"]}\n";
        let r = Recipe::parse(text, Path::new("/r/recipe.yaml"), &Vars::new()).unwrap();
        assert!(matches!(&r.steps[1], Step::Dir(p, m) if p == "/tmp" && m.mode == 0o1777));
        assert!(matches!(&r.steps[2], Step::File(_, src, None) if src == Path::new("/r/sub/x")));
        assert!(r.modules.is_none());
        let e = Recipe::parse(
            text,
            Path::new("/r/recipe.yaml"),
            &vars(&[("M", "virtio_blk")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("modules.dir is empty"), "{e}");
        let e = Recipe::parse(
            "dirs: [{path: /x, mod: \"1\"}]",
            Path::new("r"),
            &Vars::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `mod`"), "{e}");
    }
}
