//! Kernel modules: pick named modules plus everything they depend on.
//!
//! Dependencies come from `modules.dep` when the tree has one (Buildroot and
//! installed kernels run `depmod`). Debian's kernel packages ship without it
//! (it is generated at install time), so when it is missing the same
//! information is read from each module's `.modinfo` `depends=` field, which
//! modpost writes at build time and depmod itself trusts for dependencies.
//! That works for any architecture, with no `depmod` on the build host.
//!
//! Modules are stored uncompressed in the archive: the archive is
//! compressed as a whole anyway, and `finit_module` only accepts compressed
//! modules on kernels with `CONFIG_MODULE_DECOMPRESS` (Debian 6.1 has none).
//!
//! Written into the archive, for the updater:
//! - `/lib/modules/<release>/<path>.ko` for every module;
//! - `/lib/modules/<release>/modules.dep` covering exactly those modules
//!   (depmod format, so busybox/kmod `modprobe` also work);
//! - [`LOAD_LIST`]: absolute module paths, one per line, in load order
//!   (every module after all of its dependencies).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Builder, Error, Meta};

/// Where the load order goes in the archive.
pub const LOAD_LIST: &str = "/etc/fwpack/modules.load";

/// Suffixes Debian and others use for module files.
const SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// One module to include.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Canonical name (`-` folded to `_`, as the kernel and modprobe do).
    pub name: String,
    /// Path relative to the modules directory, as found (maybe compressed).
    pub rel_path: String,
    /// Path relative to the modules directory once stored (always `.ko`).
    pub stored_path: String,
}

/// The resolved closure of a module request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleSet {
    pub dir: PathBuf,
    pub release: String,
    /// Load order: every module after its dependencies.
    pub modules: Vec<Module>,
    /// Requested names that are built into the kernel (nothing to load).
    pub builtin: Vec<String>,
    /// Direct dependencies of each module (by name), for `modules.dep`.
    deps: BTreeMap<String, Vec<String>>,
}

/// Canonical module name: `-` and `_` are interchangeable in module names.
pub fn canonical_name(name: &str) -> String {
    name.replace('-', "_")
}

fn module_stem(path: &str) -> Option<&str> {
    let file = path.rsplit('/').next().unwrap_or(path);
    SUFFIXES.iter().find_map(|s| file.strip_suffix(s))
}

/// Resolves `names` (and their dependency closure) in the modules
/// directory `dir` (`…/lib/modules/<release>`). `release` defaults to the
/// directory's name.
pub fn resolve(dir: &Path, release: Option<&str>, names: &[String]) -> Result<ModuleSet, Error> {
    let err = |message: String| Error::Module {
        dir: dir.to_owned(),
        message,
    };
    let release = match release {
        Some(r) if !r.is_empty() => r.to_owned(),
        _ => dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                err("cannot tell the kernel release from the directory name; give it".into())
            })?,
    };
    if release.contains('/') || release == ".." || release == "." {
        return Err(err(format!("invalid kernel release {release:?}")));
    }
    if !dir.is_dir() {
        return Err(err("is not a directory".into()));
    }
    let index = Index::load(dir)?;
    let mut set = ModuleSet {
        dir: dir.to_owned(),
        release,
        ..ModuleSet::default()
    };
    let mut state: HashMap<String, Visit> = HashMap::new();
    for requested in names {
        let name = canonical_name(requested.trim());
        if name.is_empty() {
            continue;
        }
        if !index.paths.contains_key(&name) && index.builtin.contains(&name) {
            if !set.builtin.contains(&name) {
                set.builtin.push(name);
            }
            continue;
        }
        visit(&index, &name, &mut state, &mut set, &mut Vec::new())?;
    }
    Ok(set)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Visit {
    InProgress,
    Done,
}

fn visit(
    index: &Index,
    name: &str,
    state: &mut HashMap<String, Visit>,
    set: &mut ModuleSet,
    stack: &mut Vec<String>,
) -> Result<(), Error> {
    let err = |message: String| Error::Module {
        dir: index.dir.clone(),
        message,
    };
    match state.get(name) {
        Some(Visit::Done) => return Ok(()),
        Some(Visit::InProgress) => {
            stack.push(name.to_owned());
            return Err(err(format!("dependency cycle: {}", stack.join(" -> "))));
        }
        None => {}
    }
    let rel = index.paths.get(name).ok_or_else(|| {
        let via = if stack.is_empty() {
            String::new()
        } else {
            format!(" (needed by {})", stack.join(" -> "))
        };
        err(format!(
            "module `{name}` not found{via}: not in the tree and not built in"
        ))
    })?;
    state.insert(name.to_owned(), Visit::InProgress);
    stack.push(name.to_owned());
    let deps = index.deps_of(name, rel)?;
    for d in &deps {
        visit(index, d, state, set, stack)?;
    }
    stack.pop();
    state.insert(name.to_owned(), Visit::Done);
    let stem_len = module_stem(rel).map_or(rel.len(), str::len);
    let file_start = rel.rfind('/').map_or(0, |i| i + 1);
    let stored = format!("{}.ko", rel.get(..file_start + stem_len).unwrap_or(rel));
    set.modules.push(Module {
        name: name.to_owned(),
        rel_path: rel.clone(),
        stored_path: stored,
    });
    set.deps.insert(name.to_owned(), deps);
    Ok(())
}

struct Index {
    dir: PathBuf,
    /// name -> path relative to dir
    paths: HashMap<String, String>,
    /// name -> dependency names, when modules.dep exists
    dep_file: Option<HashMap<String, Vec<String>>>,
    builtin: HashSet<String>,
}

impl Index {
    fn load(dir: &Path) -> Result<Self, Error> {
        let read_err = |path: PathBuf, source| Error::Read { path, source };
        let mut paths = HashMap::new();
        let dep_path = dir.join("modules.dep");
        let dep_file = match fs::read_to_string(&dep_path) {
            Ok(text) => {
                let mut deps = HashMap::new();
                for (i, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let (module, rest) = line.split_once(':').ok_or_else(|| Error::Module {
                        dir: dir.to_owned(),
                        message: format!("modules.dep line {}: no `:`", i + 1),
                    })?;
                    let name = module_name(dir, module)?;
                    let mut list = Vec::new();
                    for d in rest.split_whitespace() {
                        list.push(module_name(dir, d)?);
                    }
                    paths.insert(name.clone(), module.trim().to_owned());
                    deps.insert(name, list);
                }
                Some(deps)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                for item in walkdir::WalkDir::new(dir).sort_by_file_name() {
                    let item = item.map_err(|e| Error::Read {
                        path: e.path().unwrap_or(dir).to_owned(),
                        source: e
                            .into_io_error()
                            .unwrap_or_else(|| std::io::Error::other("directory loop")),
                    })?;
                    if !item.file_type().is_file() {
                        continue;
                    }
                    let Ok(rel) = item.path().strip_prefix(dir) else {
                        continue;
                    };
                    let Some(rel) = rel.to_str() else { continue };
                    if let Some(stem) = module_stem(rel) {
                        // First in sorted order wins, like depmod's default search.
                        paths
                            .entry(canonical_name(stem))
                            .or_insert_with(|| rel.to_owned());
                    }
                }
                None
            }
            Err(e) => return Err(read_err(dep_path, e)),
        };
        let mut builtin = HashSet::new();
        match fs::read_to_string(dir.join("modules.builtin")) {
            Ok(text) => {
                builtin.extend(text.lines().filter_map(module_stem).map(canonical_name));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(read_err(dir.join("modules.builtin"), e)),
        }
        Ok(Index {
            dir: dir.to_owned(),
            paths,
            dep_file,
            builtin,
        })
    }

    fn deps_of(&self, name: &str, rel: &str) -> Result<Vec<String>, Error> {
        if let Some(deps) = &self.dep_file {
            return Ok(deps.get(name).cloned().unwrap_or_default());
        }
        let bytes = read_module(&self.dir, rel)?;
        let info = modinfo(&bytes).map_err(|m| Error::Module {
            dir: self.dir.clone(),
            message: format!("{rel}: {m}"),
        })?;
        Ok(info
            .iter()
            .filter_map(|kv| kv.strip_prefix("depends="))
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(canonical_name)
            .collect())
    }
}

fn module_name(dir: &Path, path: &str) -> Result<String, Error> {
    module_stem(path.trim())
        .map(canonical_name)
        .ok_or_else(|| Error::Module {
            dir: dir.to_owned(),
            message: format!("modules.dep names {path:?}, which is not a module file"),
        })
}

/// Reads a module file, decompressing `.gz`/`.zst`.
fn read_module(dir: &Path, rel: &str) -> Result<Vec<u8>, Error> {
    let path = dir.join(rel);
    let f = fs::File::open(&path).map_err(|e| Error::Read {
        path: path.clone(),
        source: e,
    })?;
    let mut out = Vec::new();
    let compressed = rel.ends_with(".ko.gz") || rel.ends_with(".ko.zst");
    let res = if rel.ends_with(".ko.gz") {
        flate2::read::GzDecoder::new(f).read_to_end(&mut out)
    } else if rel.ends_with(".ko.zst") {
        zstd::stream::read::Decoder::new(f).and_then(|mut d| d.read_to_end(&mut out))
    } else if rel.ends_with(".ko.xz") {
        return Err(Error::Module {
            dir: dir.to_owned(),
            message: format!("{rel}: xz-compressed modules are not supported; unpack them (`xz -d`) or build with zstd/gzip module compression"),
        });
    } else {
        let mut f = f;
        f.read_to_end(&mut out)
    };
    res.map_err(|e| {
        // The OS reports with an errno; a decoder's own errors (corrupt
        // data, a zstd window over its limit) have none: bad input, exit 4.
        if compressed && e.raw_os_error().is_none() {
            Error::Module {
                dir: dir.to_owned(),
                message: format!("{rel}: cannot decompress: {e}"),
            }
        } else {
            Error::Read { path, source: e }
        }
    })?;
    Ok(out)
}

/// The `key=value` strings of an ELF module's `.modinfo` section.
pub fn modinfo(elf: &[u8]) -> Result<Vec<String>, String> {
    let parsed =
        goblin::elf::Elf::parse(elf).map_err(|e| format!("not a valid ELF module: {e}"))?;
    let section = parsed
        .section_headers
        .iter()
        .find(|sh| parsed.shdr_strtab.get_at(sh.sh_name) == Some(".modinfo"))
        .ok_or("no .modinfo section (not a kernel module?)")?;
    let start = usize::try_from(section.sh_offset).map_err(|_| ".modinfo offset out of range")?;
    let len = usize::try_from(section.sh_size).map_err(|_| ".modinfo size out of range")?;
    let data = start
        .checked_add(len)
        .and_then(|end| elf.get(start..end))
        .ok_or(".modinfo lies outside the file")?;
    Ok(data
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

impl ModuleSet {
    /// Absolute paths of the modules inside the archive, in load order.
    pub fn load_list(&self) -> Vec<String> {
        self.modules
            .iter()
            .map(|m| format!("/lib/modules/{}/{}", self.release, m.stored_path))
            .collect()
    }

    /// Adds the modules, a matching `modules.dep` and [`LOAD_LIST`].
    pub fn add_to(&self, b: &mut Builder) -> Result<(), Error> {
        let base = format!("/lib/modules/{}", self.release);
        let by_name: HashMap<&str, &Module> =
            self.modules.iter().map(|m| (m.name.as_str(), m)).collect();
        let mut dep_lines = String::new();
        for m in &self.modules {
            let dst = format!("{base}/{}", m.stored_path);
            if m.rel_path == m.stored_path {
                // Uncompressed: streamed from disk at write time.
                b.add_file(&dst, &self.dir.join(&m.rel_path), Some(Meta::mode(0o644)))?;
            } else {
                b.add_bytes(
                    &dst,
                    read_module(&self.dir, &m.rel_path)?,
                    Meta::mode(0o644),
                )?;
            }
            // depmod's convention: the full closure, the last entry loaded first.
            let closure = self.closure(&m.name);
            let mut line = format!("{}:", m.stored_path);
            for dep in closure.iter().rev() {
                if let Some(d) = by_name.get(dep.as_str()) {
                    line.push(' ');
                    line.push_str(&d.stored_path);
                }
            }
            dep_lines.push_str(&line);
            dep_lines.push('\n');
        }
        b.add_bytes(&format!("{base}/modules.dep"), dep_lines, Meta::mode(0o644))?;
        let mut list = self.load_list().join("\n");
        if !list.is_empty() {
            list.push('\n');
        }
        b.add_bytes(LOAD_LIST, list, Meta::mode(0o644))
    }

    /// Transitive dependencies of `name`, in load order.
    fn closure(&self, name: &str) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        fn go(set: &ModuleSet, n: &str, seen: &mut HashSet<String>, out: &mut Vec<String>) {
            for d in set.deps.get(n).map(Vec::as_slice).unwrap_or_default() {
                if seen.insert(d.clone()) {
                    go(set, d, seen, out);
                    out.push(d.clone());
                }
            }
        }
        go(self, name, &mut seen, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_tree(dep: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("6.1.0-test");
        for line in dep.lines() {
            let (m, _) = line.split_once(':').unwrap();
            let p = root.join(m);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, m.as_bytes()).unwrap();
        }
        fs::write(root.join("modules.dep"), dep).unwrap();
        fs::write(
            root.join("modules.builtin"),
            "kernel/drivers/nvme/host/nvme.ko\n",
        )
        .unwrap();
        t
    }

    const DEP: &str = "\
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci-modern.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci-modern.ko: kernel/drivers/virtio/virtio_ring.ko
";

    #[test]
    fn closure_in_load_order() {
        let t = fake_tree(DEP);
        let dir = t.path().join("6.1.0-test");
        let set = resolve(
            &dir,
            None,
            &["virtio-blk".into(), "nvme".into(), "virtio_pci".into()],
        )
        .unwrap();
        assert_eq!(set.release, "6.1.0-test");
        assert_eq!(set.builtin, ["nvme"]);
        let names: Vec<&str> = set.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "virtio_ring",
                "virtio",
                "virtio_blk",
                "virtio_pci_modern",
                "virtio_pci"
            ]
        );
        let mut b = Builder::default();
        set.add_to(&mut b).unwrap();
        assert!(b.contains("/lib/modules/6.1.0-test/kernel/drivers/virtio/virtio_pci-modern.ko"));
        assert!(b.contains(LOAD_LIST));
    }

    #[test]
    fn missing_and_cycles() {
        let t = fake_tree(DEP);
        let dir = t.path().join("6.1.0-test");
        let e = resolve(&dir, None, &["nope".into()]).unwrap_err();
        assert!(e.to_string().contains("`nope` not found"), "{e}");
        let t = fake_tree("kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n");
        let e = resolve(&t.path().join("6.1.0-test"), None, &["a".into()]).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
        let t = fake_tree("kernel/a.ko: kernel/missing.ko\n");
        let e = resolve(&t.path().join("6.1.0-test"), None, &["a".into()]).unwrap_err();
        assert!(e.to_string().contains("needed by a"), "{e}");
    }

    #[test]
    fn modinfo_rejects_junk() {
        assert!(modinfo(b"not an elf").is_err());
        assert!(modinfo(&[]).is_err());
    }
}
