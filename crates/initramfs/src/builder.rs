//! The archive builder: collect entries, then write them in one canonical order.
//!
//! Invariants established here (the writer relies on them):
//! - every entry's parent exists and is a directory (missing parents are
//!   created as `0755` directories; an explicit `dir` later overrides that);
//! - each path is added once, or again with identical type, metadata and
//!   content (anything else is [`Error::Duplicate`]);
//! - output order is byte order of the normalised path, so a parent always
//!   precedes its children and the order never depends on the order of
//!   `add_*` calls or on the source filesystem;
//! - inode numbers are assigned in output order starting at 1 (hard links
//!   share their file's), uid/gid default to 0, every mtime is the single
//!   value from [`Options`]; nothing about the build host leaks in.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::compress::Compression;
use crate::newc::{self, mode, Header, MAX_FILE_SIZE};
use crate::path::{ArchivePath, PATH_MAX};
use crate::Error;

/// Settings that apply to the whole archive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// mtime of every entry.
    pub mtime: u32,
}

impl Options {
    /// mtime from `SOURCE_DATE_EPOCH` if set (the reproducible-builds
    /// convention), else 0.
    pub fn from_env() -> Result<Self, Error> {
        match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => Ok(Options {
                mtime: parse_epoch(&v)?,
            }),
            Err(std::env::VarError::NotPresent) => Ok(Options::default()),
            Err(std::env::VarError::NotUnicode(v)) => Err(Error::BadEpoch {
                value: v.to_string_lossy().into_owned(),
            }),
        }
    }
}

/// Parses a `SOURCE_DATE_EPOCH` value; newc's mtime field is 32-bit.
pub fn parse_epoch(v: &str) -> Result<u32, Error> {
    let t = v.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::BadEpoch { value: v.into() });
    }
    t.parse::<u32>()
        .map_err(|_| Error::BadEpoch { value: v.into() })
}

/// Ownership and permission bits of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (`0o7777` at most); the file type is implied by the entry.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Meta {
    /// Root-owned with the given permission bits.
    pub const fn mode(mode: u32) -> Self {
        Meta {
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// Character or block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
}

#[derive(Clone, Debug)]
enum Content {
    Bytes(Arc<[u8]>),
    File { src: PathBuf, size: u64 },
}

impl Content {
    fn size(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::File { size, .. } => *size,
        }
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Dir,
    File(Content),
    Symlink(String),
    HardLink(ArchivePath),
    Device(DeviceKind, u32, u32),
    Fifo,
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    meta: Meta,
    /// Created only because something lives inside it.
    implicit: bool,
}

/// What a write produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records written, not counting the trailer.
    pub entries: usize,
    /// Size of the newc stream before compression.
    pub uncompressed_bytes: u64,
    /// Size of the output after compression.
    pub compressed_bytes: u64,
}

/// Collects entries and writes them as one deterministic newc archive.
#[derive(Clone, Debug, Default)]
pub struct Builder {
    nodes: BTreeMap<ArchivePath, Node>,
    options: Options,
    jobs: usize,
}

/// The threads compression uses unless told otherwise: the cores this
/// process may run on, asked once (the answer reads cgroup files).
pub fn default_jobs() -> usize {
    static JOBS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *JOBS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

const DIR_MODE: Meta = Meta::mode(0o755);

impl Builder {
    pub fn new(options: Options) -> Self {
        Builder {
            nodes: BTreeMap::new(),
            options,
            jobs: default_jobs(),
        }
    }

    /// Number of entries (including implicit directories).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether `dst` (normalised) is in the archive.
    pub fn contains(&self, dst: &str) -> bool {
        ArchivePath::new(dst).is_ok_and(|p| self.nodes.contains_key(&p))
    }

    /// Adds a directory. Re-adding an auto-created parent sets its metadata.
    pub fn add_dir(&mut self, dst: &str, meta: Meta) -> Result<(), Error> {
        self.insert(dst, Kind::Dir, meta)
    }

    /// Adds a regular file with in-memory content.
    pub fn add_bytes(
        &mut self,
        dst: &str,
        data: impl Into<Vec<u8>>,
        meta: Meta,
    ) -> Result<(), Error> {
        let data: Vec<u8> = data.into();
        if data.len() as u64 > MAX_FILE_SIZE {
            return Err(Error::FileTooLarge {
                path: dst.into(),
                src: "<memory>".into(),
                size: data.len() as u64,
            });
        }
        self.insert(dst, Kind::File(Content::Bytes(data.into())), meta)
    }

    /// Adds a regular file read from `src` when the archive is written.
    /// Symlinks at `src` are followed. Without `meta`, the source's
    /// permission bits are kept and the owner is root.
    pub fn add_file(&mut self, dst: &str, src: &Path, meta: Option<Meta>) -> Result<(), Error> {
        let md = fs::metadata(src).map_err(|e| source_err(dst, src, e))?;
        if !md.is_file() {
            return Err(Error::UnsupportedFileType {
                path: dst.into(),
                src: src.into(),
                kind: if md.is_dir() {
                    "directory (use a tree)"
                } else {
                    file_kind(&md.file_type())
                },
            });
        }
        check_size(dst, src, md.len())?;
        let meta = meta.unwrap_or(Meta::mode(md.mode() & 0o7777));
        self.insert(
            dst,
            Kind::File(Content::File {
                src: src.into(),
                size: md.len(),
            }),
            meta,
        )
    }

    /// Adds a symbolic link. The target is stored verbatim (absolute targets
    /// are fine: they resolve inside the booted system, not on the host).
    pub fn add_symlink(&mut self, dst: &str, target: &str) -> Result<(), Error> {
        let bad = |reason| Error::InvalidLinkTarget {
            path: dst.into(),
            reason,
        };
        if target.is_empty() {
            return Err(bad("empty"));
        }
        if target.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        if target.len() >= PATH_MAX {
            return Err(bad("longer than PATH_MAX - 1 (the kernel would skip it)"));
        }
        self.insert(dst, Kind::Symlink(target.into()), Meta::mode(0o777))
    }

    /// Adds a hard link to the regular file at `target` (an archive path,
    /// which may be added before or after this call).
    pub fn add_hardlink(&mut self, dst: &str, target: &str) -> Result<(), Error> {
        let t = ArchivePath::new(target)?;
        self.insert(dst, Kind::HardLink(t), Meta::mode(0))
    }

    /// Adds a device node. Only the header is written, so no privileges are needed.
    pub fn add_device(
        &mut self,
        dst: &str,
        kind: DeviceKind,
        major: u32,
        minor: u32,
        meta: Meta,
    ) -> Result<(), Error> {
        self.insert(dst, Kind::Device(kind, major, minor), meta)
    }

    /// Adds a named pipe.
    pub fn add_fifo(&mut self, dst: &str, meta: Meta) -> Result<(), Error> {
        self.insert(dst, Kind::Fifo, meta)
    }

    /// Adds the directory tree at `src` under `dst` (which may be `/`).
    /// Permission bits are kept, owners become root, mtimes are dropped.
    /// Files with several links inside the tree become hard links; symlinks
    /// are kept as symlinks, never followed.
    pub fn add_tree(&mut self, dst: &str, src: &Path) -> Result<(), Error> {
        let root_md = fs::symlink_metadata(src).map_err(|e| source_err(dst, src, e))?;
        if !root_md.is_dir() {
            return Err(Error::UnsupportedFileType {
                path: dst.into(),
                src: src.into(),
                kind: "non-directory (trees must be directories)",
            });
        }
        // (dev, ino) of multiply-linked files -> first archive path.
        let mut links: HashMap<(u64, u64), String> = HashMap::new();
        let walk = walkdir::WalkDir::new(src)
            .follow_links(false)
            .sort_by_file_name();
        for item in walk {
            let item = item.map_err(|e| {
                let path = e.path().unwrap_or(src).to_owned();
                Error::Read {
                    path,
                    source: e
                        .into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("directory loop")),
                }
            })?;
            let rel = item.path().strip_prefix(src).unwrap_or(item.path());
            let rel = rel.to_str().ok_or_else(|| Error::InvalidPath {
                dst: item.path().to_string_lossy().into_owned(),
                reason: "is not valid UTF-8",
            })?;
            let target = if rel.is_empty() {
                dst.to_owned()
            } else {
                format!("{dst}/{rel}")
            };
            if rel.is_empty() && ArchivePath::new(dst).is_err() {
                // Tree at the archive root: the root itself is not an entry.
                continue;
            }
            let md = item.metadata().map_err(|e| Error::Read {
                path: item.path().into(),
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("metadata")),
            })?;
            let ft = md.file_type();
            let meta = Meta::mode(md.mode() & 0o7777);
            if ft.is_dir() {
                self.add_dir(&target, meta)?;
            } else if ft.is_file() {
                if md.nlink() > 1 {
                    if let Some(first) = links.get(&(md.dev(), md.ino())) {
                        self.add_hardlink(&target, &first.clone())?;
                        continue;
                    }
                    links.insert((md.dev(), md.ino()), target.clone());
                }
                check_size(&target, item.path(), md.len())?;
                self.insert(
                    &target,
                    Kind::File(Content::File {
                        src: item.path().into(),
                        size: md.len(),
                    }),
                    meta,
                )?;
            } else if ft.is_symlink() {
                let t = fs::read_link(item.path()).map_err(|e| Error::Read {
                    path: item.path().into(),
                    source: e,
                })?;
                let t = t.to_str().ok_or_else(|| Error::InvalidLinkTarget {
                    path: target.clone(),
                    reason: "not valid UTF-8",
                })?;
                self.add_symlink(&target, t)?;
            } else if ft.is_char_device() || ft.is_block_device() {
                let kind = if ft.is_char_device() {
                    DeviceKind::Char
                } else {
                    DeviceKind::Block
                };
                let (major, minor) = split_dev(md.rdev());
                self.add_device(&target, kind, major, minor, meta)?;
            } else if ft.is_fifo() {
                self.add_fifo(&target, meta)?;
            } else {
                return Err(Error::UnsupportedFileType {
                    path: target,
                    src: item.path().into(),
                    kind: file_kind(&ft),
                });
            }
        }
        Ok(())
    }

    /// Checks that `/init` exists and is an executable regular file (or a
    /// symlink to one inside the archive): without it the kernel silently
    /// falls back to mounting `root=`.
    pub fn check_init(&self) -> Result<(), Error> {
        let mut path = ArchivePath::new("init")?;
        for _ in 0..8 {
            let not_ok = |reason| Error::InvalidPath {
                dst: "/init".into(),
                reason,
            };
            match self.nodes.get(&path).map(|n| (&n.kind, n.meta)) {
                None => return Err(not_ok("is missing (the kernel needs it to start anything)")),
                Some((Kind::File(_), m)) if m.mode & 0o111 != 0 => return Ok(()),
                Some((Kind::File(_), _)) => return Err(not_ok("is not executable")),
                Some((Kind::HardLink(t), _)) => path = t.clone(),
                Some((Kind::Symlink(t), _)) => {
                    let base = if t.starts_with('/') {
                        None
                    } else {
                        path.parent()
                    };
                    path = match base {
                        Some(b) => b.join(t)?,
                        None => ArchivePath::new(t)?,
                    };
                }
                Some(_) => return Err(not_ok("is not a regular file")),
            }
        }
        Err(Error::InvalidPath {
            dst: "/init".into(),
            reason: "is a chain of too many links",
        })
    }

    fn insert(&mut self, dst: &str, kind: Kind, meta: Meta) -> Result<(), Error> {
        let path = ArchivePath::new(dst)?;
        if meta.mode & !0o7777 != 0 {
            return Err(Error::BadMode {
                path: path.to_string(),
                mode: meta.mode,
            });
        }
        self.ensure_parents(&path)?;
        let node = Node {
            kind,
            meta,
            implicit: false,
        };
        match self.nodes.get_mut(&path) {
            None => {
                self.nodes.insert(path, node);
                Ok(())
            }
            Some(old) => {
                if let (Kind::Dir, true) = (&old.kind, old.implicit) {
                    if let Kind::Dir = node.kind {
                        *old = node;
                        return Ok(());
                    }
                }
                same_node(&path, old, &node)
            }
        }
    }

    fn ensure_parents(&mut self, path: &ArchivePath) -> Result<(), Error> {
        let mut missing = Vec::new();
        let mut cur = path.parent();
        while let Some(p) = cur {
            match self.nodes.get(&p) {
                Some(n) if matches!(n.kind, Kind::Dir) => break,
                Some(_) => {
                    return Err(Error::ParentNotDirectory {
                        path: path.to_string(),
                        parent: p.to_string(),
                    })
                }
                None => {
                    cur = p.parent();
                    missing.push(p);
                }
            }
        }
        for p in missing {
            self.nodes.insert(
                p,
                Node {
                    kind: Kind::Dir,
                    meta: DIR_MODE,
                    implicit: true,
                },
            );
        }
        Ok(())
    }

    /// Threads to compress with (at least 1; default [`default_jobs`]).
    /// The archive's bytes are the same for any number.
    pub fn jobs(&mut self, jobs: usize) -> &mut Self {
        self.jobs = jobs.max(1);
        self
    }

    /// Writes the uncompressed newc stream into `w`.
    pub fn write_newc<W: Write>(&self, w: W) -> Result<(W, Summary), Error> {
        let plan = self.plan()?;
        let mut out = newc::Writer::new(w);
        for rec in &plan {
            match rec.data {
                Data::None => out.append_bytes(&rec.header, b"")?,
                Data::Bytes(b) => out.append_bytes(&rec.header, b)?,
                Data::File(src) => {
                    let f = File::open(src).map_err(|e| Error::Read {
                        path: src.into(),
                        source: e,
                    })?;
                    out.append(&rec.header, f, src)?;
                }
            }
        }
        let uncompressed_bytes = out.bytes_written() + newc::record_len(newc::TRAILER.len(), 0);
        let w = out.finish()?;
        Ok((
            w,
            Summary {
                entries: plan.len(),
                uncompressed_bytes,
                compressed_bytes: uncompressed_bytes,
            },
        ))
    }

    /// Writes the archive, compressed, into `w`.
    pub fn write_to<W: Write>(
        &self,
        w: W,
        compression: Compression,
    ) -> Result<(W, Summary), Error> {
        let counter = Counter { inner: w, n: 0 };
        let enc = compression
            .encoder(counter, self.jobs)
            .map_err(Error::Write)?;
        let (enc, mut summary) = self.write_newc(enc)?;
        let counter = enc.finish().map_err(Error::Write)?;
        summary.compressed_bytes = counter.n;
        Ok((counter.inner, summary))
    }

    /// Writes the archive to `path` atomically: into a temporary file in the
    /// same directory, synced, then renamed over `path`. On any error the
    /// temporary file is removed and `path` is untouched.
    pub fn write_file(&self, path: &Path, compression: Compression) -> Result<Summary, Error> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        // 0666 minus the umask, like any other file a user creates
        // (tempfile's default is 0600).
        let tmp = tempfile::Builder::new()
            .prefix(".fwpack-initramfs-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(Error::Write)?;
        let (buf, summary) = self.write_to(
            BufWriter::with_capacity(1 << 20, tmp.as_file()),
            compression,
        )?;
        buf.into_inner().map_err(|e| Error::Write(e.into_error()))?;
        tmp.as_file().sync_all().map_err(Error::Write)?;
        tmp.persist(path).map_err(|e| Error::Write(e.error))?;
        Ok(summary)
    }

    /// Turns the tree into the exact records to write, in order.
    fn plan(&self) -> Result<Vec<Record<'_>>, Error> {
        // Hard-link groups: file path -> every path sharing its inode.
        let mut groups: HashMap<&ArchivePath, Vec<&ArchivePath>> = HashMap::new();
        for (path, node) in &self.nodes {
            if let Kind::HardLink(target) = &node.kind {
                match self.nodes.get(target).map(|n| &n.kind) {
                    Some(Kind::File(_)) => groups
                        .entry(target)
                        .or_insert_with(|| vec![target])
                        .push(path),
                    _ => {
                        return Err(Error::BadHardLink {
                            path: path.to_string(),
                            target: target.to_string(),
                        })
                    }
                }
            }
        }
        let mut subdirs: HashMap<ArchivePath, u32> = HashMap::new();
        for (path, node) in &self.nodes {
            if let (Kind::Dir, Some(parent)) = (&node.kind, path.parent()) {
                *subdirs.entry(parent).or_default() += 1;
            }
        }
        let mut inos: HashMap<&ArchivePath, u32> = HashMap::new();
        let mut next_ino: u32 = 1;
        let mut plan = Vec::with_capacity(self.nodes.len());
        for (path, node) in &self.nodes {
            // The inode's "owner": the file itself for hard links.
            let (owner, owner_node) = match &node.kind {
                Kind::HardLink(t) => match self.nodes.get_key_value(t) {
                    Some(kv) => kv,
                    None => {
                        return Err(Error::BadHardLink {
                            path: path.to_string(),
                            target: t.to_string(),
                        })
                    }
                },
                _ => (path, node),
            };
            let ino = *inos.entry(owner).or_insert_with(|| {
                let i = next_ino;
                next_ino = next_ino.wrapping_add(1);
                i
            });
            let group = groups.get(owner);
            let nlink = match (&node.kind, group) {
                (Kind::Dir, _) => 2 + subdirs.get(path).copied().unwrap_or(0),
                (_, Some(g)) => u32::try_from(g.len()).unwrap_or(u32::MAX),
                _ => 1,
            };
            let meta = owner_node.meta;
            let (ftype, rdev, data) = match &owner_node.kind {
                Kind::Dir => (mode::S_IFDIR, (0, 0), Data::None),
                Kind::Symlink(t) => (mode::S_IFLNK, (0, 0), Data::Bytes(t.as_bytes())),
                Kind::Device(DeviceKind::Char, ma, mi) => (mode::S_IFCHR, (*ma, *mi), Data::None),
                Kind::Device(DeviceKind::Block, ma, mi) => (mode::S_IFBLK, (*ma, *mi), Data::None),
                Kind::Fifo => (mode::S_IFIFO, (0, 0), Data::None),
                Kind::HardLink(_) => unreachable_link(path)?,
                Kind::File(c) => {
                    // newc convention (GNU cpio, libarchive): a hard-linked
                    // file's data travels with the last link in the archive;
                    // the kernel accepts that too.
                    let carries_data = match group {
                        Some(g) => g.iter().max() == Some(&path),
                        None => true,
                    };
                    let data = match (carries_data, c) {
                        (false, _) => Data::None,
                        (true, Content::Bytes(b)) => Data::Bytes(b),
                        (true, Content::File { src, .. }) => Data::File(src),
                    };
                    (mode::S_IFREG, (0, 0), data)
                }
            };
            let size = match (&data, &owner_node.kind) {
                (Data::None, _) => 0,
                (Data::Bytes(b), _) => b.len() as u64,
                (Data::File(_), Kind::File(c)) => c.size(),
                (Data::File(_), _) => 0,
            };
            plan.push(Record {
                header: Header {
                    name: path.as_str().to_owned(),
                    ino,
                    mode: ftype | meta.mode,
                    uid: meta.uid,
                    gid: meta.gid,
                    nlink,
                    mtime: self.options.mtime,
                    size,
                    rdev_major: rdev.0,
                    rdev_minor: rdev.1,
                },
                data,
            });
        }
        Ok(plan)
    }
}

/// A hard link's owner is always a regular file (checked when groups are
/// built), so reaching this is a bug; still an error, never a panic.
fn unreachable_link<T>(path: &ArchivePath) -> Result<T, Error> {
    Err(Error::BadHardLink {
        path: path.to_string(),
        target: "another hard link".into(),
    })
}

enum Data<'a> {
    None,
    Bytes(&'a [u8]),
    File(&'a Path),
}

struct Record<'a> {
    header: Header,
    data: Data<'a>,
}

struct Counter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn same_node(path: &ArchivePath, old: &Node, new: &Node) -> Result<(), Error> {
    let dup = |what| {
        Err(Error::Duplicate {
            path: path.to_string(),
            what,
        })
    };
    let same_kind = match (&old.kind, &new.kind) {
        (Kind::Dir, Kind::Dir) | (Kind::Fifo, Kind::Fifo) => true,
        (Kind::Symlink(a), Kind::Symlink(b)) => {
            return if a == b {
                Ok(())
            } else {
                dup("symlink targets")
            }
        }
        (Kind::HardLink(a), Kind::HardLink(b)) => {
            return if a == b {
                Ok(())
            } else {
                dup("hard link targets")
            }
        }
        (Kind::Device(k1, a1, b1), Kind::Device(k2, a2, b2)) => {
            if (k1, a1, b1) != (k2, a2, b2) {
                return dup("device numbers");
            }
            true
        }
        (Kind::File(a), Kind::File(b)) => {
            if !same_content(a, b)? {
                return dup("content");
            }
            true
        }
        _ => false,
    };
    if !same_kind {
        return Err(Error::Duplicate {
            path: path.to_string(),
            what: if matches!(old.kind, Kind::Dir) && old.implicit {
                "types (it is also the parent directory of other entries)"
            } else {
                "types"
            },
        });
    }
    if old.meta != new.meta {
        return dup("mode or owner");
    }
    Ok(())
}

fn same_content(a: &Content, b: &Content) -> Result<bool, Error> {
    if a.size() != b.size() {
        return Ok(false);
    }
    match (a, b) {
        (Content::Bytes(x), Content::Bytes(y)) => Ok(x == y),
        (Content::File { src: x, .. }, Content::File { src: y, .. }) if x == y => Ok(true),
        _ => {
            let mut ra = open_content(a)?;
            let mut rb = open_content(b)?;
            let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
            loop {
                let na = read_full(&mut ra.1, &mut ba).map_err(|e| Error::Read {
                    path: ra.0.clone(),
                    source: e,
                })?;
                let nb = read_full(&mut rb.1, &mut bb).map_err(|e| Error::Read {
                    path: rb.0.clone(),
                    source: e,
                })?;
                if ba.get(..na) != bb.get(..nb) {
                    return Ok(false);
                }
                if na == 0 {
                    return Ok(true);
                }
            }
        }
    }
}

fn open_content(c: &Content) -> Result<(PathBuf, Box<dyn Read + '_>), Error> {
    match c {
        Content::Bytes(b) => Ok(("<memory>".into(), Box::new(&b[..]))),
        Content::File { src, .. } => {
            let f = File::open(src).map_err(|e| Error::Read {
                path: src.clone(),
                source: e,
            })?;
            Ok((src.clone(), Box::new(f)))
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(buf.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn check_size(dst: &str, src: &Path, size: u64) -> Result<(), Error> {
    if size > MAX_FILE_SIZE {
        return Err(Error::FileTooLarge {
            path: dst.into(),
            src: src.into(),
            size,
        });
    }
    Ok(())
}

fn source_err(dst: &str, src: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::MissingSource {
            path: dst.into(),
            src: src.into(),
        }
    } else {
        Error::Read {
            path: src.into(),
            source: e,
        }
    }
}

fn file_kind(ft: &fs::FileType) -> &'static str {
    if ft.is_socket() {
        "socket"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// Linux's `dev_t` encoding (glibc/musl `major()`/`minor()`).
fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Reader;

    fn list(b: &Builder) -> Vec<(String, u32, u32, u32, u32)> {
        let (bytes, _) = b.write_newc(Vec::new()).unwrap();
        Reader::new(&bytes[..])
            .unwrap()
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.mode, e.ino, e.nlink, e.size))
            .collect()
    }

    #[test]
    fn parents_first_and_implicit_dirs() {
        let mut b = Builder::default();
        b.add_bytes("/usr/bin/tool", "x", Meta::mode(0o755))
            .unwrap();
        b.add_dir("/usr", Meta::mode(0o700)).unwrap();
        b.add_bytes("/a", "", Meta::mode(0o600)).unwrap();
        let l = list(&b);
        let names: Vec<&str> = l.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["a", "usr", "usr/bin", "usr/bin/tool"]);
        // explicit mode overrides the implicit 0755; nlink counts subdirs.
        assert_eq!((l[1].1, l[1].3), (mode::S_IFDIR | 0o700, 3));
        assert_eq!(l[2].1, mode::S_IFDIR | 0o755);
        let inos: Vec<u32> = l.iter().map(|e| e.2).collect();
        assert_eq!(inos, [1, 2, 3, 4]);
    }

    #[test]
    fn hardlinks_share_inode_and_last_carries_data() {
        let mut b = Builder::default();
        b.add_hardlink("/z-link", "/m-file").unwrap();
        b.add_bytes("/m-file", "data", Meta::mode(0o640)).unwrap();
        b.add_hardlink("/a-link", "/m-file").unwrap();
        let l = list(&b);
        assert_eq!(l.len(), 3);
        assert!(l
            .iter()
            .all(|e| e.2 == 1 && e.3 == 3 && e.1 == mode::S_IFREG | 0o640));
        let sizes: Vec<u32> = l.iter().map(|e| e.4).collect();
        assert_eq!(sizes, [0, 0, 4]);
    }

    #[test]
    fn bad_hardlink_target() {
        let mut b = Builder::default();
        b.add_dir("/d", DIR_MODE).unwrap();
        b.add_hardlink("/l", "/d").unwrap();
        assert!(matches!(
            b.write_newc(Vec::new()),
            Err(Error::BadHardLink { .. })
        ));
        let mut b = Builder::default();
        b.add_hardlink("/l", "/nowhere").unwrap();
        assert!(matches!(
            b.write_newc(Vec::new()),
            Err(Error::BadHardLink { .. })
        ));
    }

    #[test]
    fn duplicates() {
        let mut b = Builder::default();
        b.add_bytes("/f", "same", Meta::mode(0o644)).unwrap();
        b.add_bytes("f", "same", Meta::mode(0o644)).unwrap();
        assert!(matches!(
            b.add_bytes("/f", "diff", Meta::mode(0o644)),
            Err(Error::Duplicate {
                what: "content",
                ..
            })
        ));
        assert!(matches!(
            b.add_bytes("/f", "same", Meta::mode(0o600)),
            Err(Error::Duplicate {
                what: "mode or owner",
                ..
            })
        ));
        assert!(matches!(
            b.add_dir("/f", DIR_MODE),
            Err(Error::Duplicate { .. })
        ));
        assert!(matches!(
            b.add_bytes("/f/g", "", DIR_MODE),
            Err(Error::ParentNotDirectory { .. })
        ));
        b.add_bytes("/d/x", "", DIR_MODE).unwrap();
        assert!(matches!(
            b.add_symlink("/d", "/x"),
            Err(Error::Duplicate { .. })
        ));
        b.add_dir("/d", DIR_MODE).unwrap();
        b.add_dir("/d", DIR_MODE).unwrap();
        assert!(matches!(
            b.add_dir("/d", Meta::mode(0o700)),
            Err(Error::Duplicate { .. })
        ));
    }

    #[test]
    fn bad_modes_and_targets() {
        let mut b = Builder::default();
        assert!(matches!(
            b.add_bytes("/f", "", Meta::mode(0o100644)),
            Err(Error::BadMode { .. })
        ));
        assert!(matches!(
            b.add_symlink("/l", ""),
            Err(Error::InvalidLinkTarget { .. })
        ));
        assert!(matches!(
            b.add_symlink("/l", &"x".repeat(PATH_MAX)),
            Err(Error::InvalidLinkTarget { .. })
        ));
    }

    #[test]
    fn init_check() {
        let mut b = Builder::default();
        assert!(b.check_init().is_err());
        b.add_bytes("/bin/app", "", Meta::mode(0o644)).unwrap();
        b.add_symlink("/init", "bin/app").unwrap();
        assert!(b
            .check_init()
            .unwrap_err()
            .to_string()
            .contains("not executable"));
        let mut b = Builder::default();
        b.add_bytes("/bin/app", "", Meta::mode(0o755)).unwrap();
        b.add_symlink("/init", "/bin/app").unwrap();
        b.check_init().unwrap();
    }

    #[test]
    fn epoch() {
        assert_eq!(parse_epoch("1700000000").unwrap(), 1_700_000_000);
        for bad in ["", "-1", "1.5", "99999999999", "abc"] {
            assert!(parse_epoch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dev_split() {
        // glibc's makedev() for Linux.
        fn makedev(major: u64, minor: u64) -> u64 {
            ((major & 0xfff) << 8)
                | ((major & !0xfff) << 32)
                | (minor & 0xff)
                | ((minor & !0xff) << 12)
        }
        assert_eq!(split_dev(makedev(259, 70000)), (259, 70000));
        assert_eq!(split_dev(makedev(4095, 1 << 20)), (4095, 1 << 20));
        assert_eq!(split_dev((5 << 8) | 1), (5, 1));
    }
}
