//! The FAT boot partition: geometry choice, name rules, and building the
//! file system (with fatfs) in a sparse in-memory volume.

use crate::error::Error;
use crate::guid::derive_u32;
use crate::layout::{DiskLayout, FatFile, FatKind, FatSpec, Source, SECTOR_SIZE};
use crate::memvol::MemVolume;
use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

const MIB: u64 = 1 << 20;
const FAT16_MIN_CLUSTERS: u64 = 4085;
const FAT32_MIN_CLUSTERS: u64 = 65525;
const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF4;

/// The parameters handed to fatfs, decided up front so the partition type
/// byte (0x0C vs 0x0E) is known before anything is written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FatGeometry {
    pub fat_type: FatType,
    pub cluster_bytes: u32,
    pub total_sectors: u32,
}

impl FatGeometry {
    pub fn default_mbr_type(&self) -> u8 {
        match self.fat_type {
            FatType::Fat32 => 0x0c, // W95 FAT32 (LBA): what the Pi firmware expects
            FatType::Fat16 => 0x0e, // W95 FAT16 (LBA)
            FatType::Fat12 => 0x01,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        fat_name(self.fat_type)
    }
}

fn fat_name(t: FatType) -> &'static str {
    match t {
        FatType::Fat12 => "fat12",
        FatType::Fat16 => "fat16",
        FatType::Fat32 => "fat32",
    }
}

/// Cluster count fatfs will produce for this geometry. A copy of fatfs
/// 0.3's `try_fs_geometry` arithmetic (8 reserved sectors on FAT32, 1
/// otherwise; 512 root entries on FAT12/16; two FATs), so the type is
/// known without formatting; `build` checks the result agrees.
fn clusters(total_sectors: u64, spc: u64, t: FatType) -> Option<u64> {
    let (reserved, root, bits) = match t {
        FatType::Fat32 => (8, 0, 32),
        FatType::Fat16 => (1, 32, 16),
        FatType::Fat12 => (1, 32, 12),
    };
    if total_sectors <= reserved + root + 8 {
        return None;
    }
    let t0 = total_sectors - reserved - root;
    let t1 = t0 + 2 * spc;
    let t2 = spc * SECTOR_SIZE * 8 / bits + 2;
    let sectors_per_fat = t1.div_ceil(t2);
    Some(t0.checked_sub(2 * sectors_per_fat)? / spc)
}

fn type_of(clusters: u64) -> FatType {
    if clusters < FAT16_MIN_CLUSTERS {
        FatType::Fat12
    } else if clusters < FAT32_MIN_CLUSTERS {
        FatType::Fat16
    } else {
        FatType::Fat32
    }
}

pub(crate) fn geometry(partition: &str, sectors: u64, kind: FatKind) -> Result<FatGeometry, Error> {
    let bytes = sectors * SECTOR_SIZE;
    let wanted: &[FatType] = match kind {
        FatKind::Fat16 => &[FatType::Fat16],
        FatKind::Fat32 => &[FatType::Fat32],
        // Pi firmware reads FAT16 and FAT32; FAT32 from 64 MiB matches
        // what Raspberry Pi OS ships, FAT12 only for toy sizes.
        FatKind::Auto if bytes >= 64 * MIB => &[FatType::Fat32, FatType::Fat16],
        FatKind::Auto if bytes >= 4 * MIB => &[FatType::Fat16, FatType::Fat12],
        FatKind::Auto => &[FatType::Fat12],
    };
    let fail = || Error::FatGeometry {
        partition: partition.to_string(),
        fat: match kind {
            FatKind::Auto => "FAT".into(),
            _ => wanted
                .first()
                .map_or("FAT", |t| fat_name(*t))
                .to_uppercase(),
        },
        size: bytes,
    };
    let total_sectors = u32::try_from(sectors).map_err(|_| fail())?;
    for &t in wanted {
        // Preferred cluster sizes first: 4 KiB (2 KiB on FAT16) keeps FAT
        // small and reads fast; smaller only when the cluster count would
        // drop below the type's minimum, larger only above its maximum.
        let order: &[u64] = match t {
            FatType::Fat32 => &[4096, 2048, 1024, 512, 8192, 16384, 32768],
            FatType::Fat16 => &[2048, 4096, 1024, 512, 8192, 16384, 32768],
            FatType::Fat12 => &[512, 1024, 2048, 4096, 8192, 16384, 32768],
        };
        for &c in order {
            let Some(n) = clusters(sectors, c / SECTOR_SIZE, t) else {
                continue;
            };
            let max = match t {
                FatType::Fat32 => FAT32_MAX_CLUSTERS,
                _ => u64::MAX,
            };
            if type_of(n) == t && n >= 16 && n <= max {
                return Ok(FatGeometry {
                    fat_type: t,
                    cluster_bytes: c as u32,
                    total_sectors,
                });
            }
        }
    }
    Err(fail())
}

pub(crate) fn volume_id(layout: &DiskLayout, partition: &str) -> u32 {
    derive_u32(&layout.seed, &format!("fat-volume-id:{partition}"))
}

/// As blkid prints it (`UUID="1A2B-3C4D"`).
pub(crate) fn format_volume_id(id: u32) -> String {
    format!("{:04X}-{:04X}", id >> 16, id & 0xffff)
}

pub(crate) fn normalized_label(label: &str) -> String {
    label.to_ascii_uppercase()
}

/// The 11-byte label field, space padded; `None` for no label.
fn label_bytes(partition: &str, label: &str) -> Result<Option<[u8; 11]>, Error> {
    if label.is_empty() {
        return Ok(None);
    }
    let bad = |reason: &str| Error::InvalidLabel {
        partition: partition.to_string(),
        label: label.to_string(),
        reason: reason.to_string(),
    };
    let up = normalized_label(label);
    if up.len() > 11 {
        return Err(bad("longer than 11 characters"));
    }
    if up.starts_with(' ') {
        return Err(bad("starts with a space"));
    }
    if let Some(c) = up.chars().find(|c| {
        !(c.is_ascii_uppercase() || c.is_ascii_digit() || " !#$%&'()-@^_`{}~".contains(*c))
    }) {
        return Err(bad(&format!(
            "{c:?} is not allowed (use A-Z, 0-9, space and !#$%&'()-@^_`{{}}~)"
        )));
    }
    let mut out = [b' '; 11];
    out[..up.len()].copy_from_slice(up.as_bytes());
    Ok(Some(out))
}

/// Splits `dest` into checked path components.
fn components(partition: &str, dest: &str) -> Result<Vec<String>, Error> {
    let bad = |reason: String| Error::InvalidFatPath {
        partition: partition.to_string(),
        path: dest.to_string(),
        reason,
    };
    let trimmed = dest.trim_matches('/');
    if trimmed.is_empty() {
        return Err(bad("empty path".into()));
    }
    let mut out = Vec::new();
    for c in trimmed.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(bad(format!("component {c:?} is not a name")));
        }
        // fatfs limits long names to 255 bytes of UTF-8.
        if c.len() > 255 {
            return Err(bad(format!("component {c:?} is longer than 255 bytes")));
        }
        if c.ends_with('.') || c.ends_with(' ') {
            return Err(bad(format!("component {c:?} ends with a dot or space")));
        }
        // The set fatfs accepts in long names.
        if let Some(ch) = c.chars().find(|&ch| {
            !(ch.is_ascii_alphanumeric()
                || ('\u{80}'..='\u{FFFF}').contains(&ch)
                || "$%'-_@~`!(){}. +,;=[]^#&".contains(ch))
        }) {
            return Err(bad(format!("character {ch:?} is not allowed in FAT names")));
        }
        out.push(c.to_string());
    }
    Ok(out)
}

fn fold(components: &[String]) -> String {
    components.join("/").to_uppercase()
}

/// Files and directories to create, sorted, with name clashes (FAT names
/// ignore case) rejected before anything is written.
struct Tree<'a> {
    dirs: Vec<Vec<String>>,
    files: Vec<(Vec<String>, &'a FatFile)>,
}

fn plan_tree<'a>(partition: &str, spec: &'a FatSpec) -> Result<Tree<'a>, Error> {
    let dup = |path: &str| Error::DuplicateFatPath {
        partition: partition.to_string(),
        path: path.to_string(),
    };
    let mut dirs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut files = Vec::with_capacity(spec.files.len());
    let mut file_keys = BTreeSet::new();
    let add_dirs = |comps: &[String], dirs: &mut BTreeMap<String, Vec<String>>| {
        for n in 1..=comps.len() {
            if let Some(prefix) = comps.get(..n) {
                dirs.entry(fold(prefix)).or_insert_with(|| prefix.to_vec());
            }
        }
    };
    for d in &spec.dirs {
        let comps = components(partition, d)?;
        add_dirs(&comps, &mut dirs);
    }
    for f in &spec.files {
        let comps = components(partition, &f.dest)?;
        if let Some((_, parents)) = comps.split_last() {
            add_dirs(parents, &mut dirs);
        }
        if !file_keys.insert(fold(&comps)) {
            return Err(dup(&f.dest));
        }
        files.push((comps, f));
    }
    // Directories differing only in case were merged above (one
    // directory in FAT); a file and a directory cannot share a name.
    if let Some((_, d)) = dirs.iter().find(|(k, _)| file_keys.contains(*k)) {
        return Err(dup(&d.join("/")));
    }
    let mut dir_list: Vec<Vec<String>> = dirs.into_values().collect();
    // Parents before children, then by name: the byte order of the
    // directory entries depends on creation order.
    dir_list.sort();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Tree {
        dirs: dir_list,
        files,
    })
}

/// fatfs wants a `&'static` time provider; one per distinct timestamp is
/// interned for the life of the process.
#[derive(Debug)]
struct FixedTime(fatfs::DateTime);

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0
    }
}

fn time_provider(ts: Option<u64>) -> &'static FixedTime {
    static CACHE: OnceLock<Mutex<BTreeMap<u64, &'static FixedTime>>> = OnceLock::new();
    // 1980-01-01 00:00:00 and 2107-12-31 23:59:58 UTC: the FAT range.
    let ts = ts.unwrap_or(315_532_800).clamp(315_532_800, 4_354_819_198);
    let mut map = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    map.entry(ts)
        .or_insert_with(|| Box::leak(Box::new(FixedTime(dos_time(ts)))))
}

/// UTC calendar fields for a Unix time (H. Hinnant's civil_from_days).
fn dos_time(ts: u64) -> fatfs::DateTime {
    let days = (ts / 86_400) as i64;
    let secs = ts % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    fatfs::DateTime {
        date: fatfs::Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: fatfs::Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            sec: (secs % 60) as u16,
            millis: 0,
        },
    }
}

fn dos_stamp(t: &fatfs::DateTime) -> (u16, u16) {
    let d = &t.date;
    let date = (d.year.saturating_sub(1980) << 9) | (d.month << 5) | d.day;
    let tm = &t.time;
    let time = (tm.hour << 11) | (tm.min << 5) | (tm.sec / 2);
    (date, time)
}

pub(crate) fn build(
    partition: &str,
    spec: &FatSpec,
    geo: FatGeometry,
    volume_id: u32,
    start_lba: u64,
    timestamp: Option<u64>,
) -> Result<MemVolume, Error> {
    let fat_err = |context: String| {
        move |source: std::io::Error| Error::Fat {
            partition: partition.to_string(),
            context,
            source,
        }
    };
    let label = label_bytes(partition, &spec.label)?;
    let tree = plan_tree(partition, spec)?;
    let clock = time_provider(timestamp);

    let mut vol = MemVolume::new(u64::from(geo.total_sectors) * SECTOR_SIZE);
    let mut opts = FormatVolumeOptions::new()
        .bytes_per_cluster(geo.cluster_bytes)
        .fat_type(geo.fat_type)
        .volume_id(volume_id);
    if let Some(l) = label {
        opts = opts.volume_label(l);
    }
    fatfs::format_volume(&mut vol, opts).map_err(fat_err("formatting".into()))?;
    finish_boot_sectors(&mut vol, geo, start_lba, label, clock)
        .map_err(fat_err("writing the boot sector".into()))?;

    vol.seek(SeekFrom::Start(0))
        .map_err(fat_err("mounting".into()))?;
    let fs = FileSystem::new(
        &mut vol,
        FsOptions::new()
            .time_provider(clock)
            .update_accessed_date(false),
    )
    .map_err(fat_err("mounting the new file system".into()))?;
    let fat_type = fs.fat_type();
    if fat_type != geo.fat_type {
        return Err(Error::FatGeometry {
            partition: partition.to_string(),
            fat: fat_name(geo.fat_type).to_uppercase(),
            size: u64::from(geo.total_sectors) * SECTOR_SIZE,
        });
    }
    let root = fs.root_dir();
    for d in &tree.dirs {
        let path = d.join("/");
        root.create_dir(&path).map_err(|e| {
            if root_full(&e, d.len()) {
                return Error::FatRootFull {
                    partition: partition.to_string(),
                    path: path.clone(),
                };
            }
            fat_err(format!("creating directory {path}"))(e)
        })?;
    }
    let cluster = u64::from(fs.cluster_size());
    for (comps, file) in &tree.files {
        let path = comps.join("/");
        let len = file.source.len()?;
        let free = fs
            .stats()
            .map(|s| u64::from(s.free_clusters()) * cluster)
            .map_err(fat_err("counting free space".into()))?;
        let full = || Error::FatFull {
            partition: partition.to_string(),
            path: path.clone(),
            needed: len,
            free,
        };
        if len > u64::from(u32::MAX) {
            return Err(Error::FatFileTooLarge {
                partition: partition.to_string(),
                path,
                size: len,
            });
        }
        if len.div_ceil(cluster) * cluster > free {
            return Err(full());
        }
        let mut f = root.create_file(&path).map_err(|e| {
            if root_full(&e, comps.len()) {
                return Error::FatRootFull {
                    partition: partition.to_string(),
                    path: path.clone(),
                };
            }
            no_space(e, &full).unwrap_or_else(|e| fat_err(format!("creating {path}"))(e))
        })?;
        let write_err = |e: std::io::Error| {
            no_space(e, &full).unwrap_or_else(|e| fat_err(format!("writing {path}"))(e))
        };
        match &file.source {
            Source::Bytes(b) => f.write_all(b).map_err(write_err)?,
            Source::Path(p) => copy_file(p, len, &mut f, write_err)?,
        }
        f.flush().map_err(fat_err(format!("flushing {path}")))?;
    }
    drop(root);
    fs.unmount().map_err(fat_err("unmounting".into()))?;
    let bpb =
        Bpb::read(&mut vol, geo.fat_type).map_err(fat_err("re-reading the boot sector".into()))?;
    fix_dot_entries(&mut vol, &bpb, None, 0).map_err(fat_err("fixing directory entries".into()))?;
    Ok(vol)
}

/// fatfs runs into the end of a fixed FAT12/16 root directory as a short
/// write (subdirectories grow instead).
fn root_full(e: &std::io::Error, depth: usize) -> bool {
    e.kind() == std::io::ErrorKind::WriteZero && depth == 1
}

/// fatfs has no error kinds of its own; a full volume is recognisable only
/// by its message.
fn no_space(e: std::io::Error, full: &dyn Fn() -> Error) -> Result<Error, std::io::Error> {
    if e.kind() == std::io::ErrorKind::Other && e.to_string().contains("No space left") {
        Ok(full())
    } else {
        Err(e)
    }
}

fn copy_file(
    path: &Path,
    expected: u64,
    out: &mut impl Write,
    write_err: impl Fn(std::io::Error) -> Error,
) -> Result<(), Error> {
    let missing = |e| Error::MissingSource {
        path: path.to_path_buf(),
        source: e,
    };
    let mut src = std::fs::File::open(path).map_err(missing)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        total += n as u64;
        if total > expected {
            break;
        }
        out.write_all(buf.get(..n).unwrap_or_default())
            .map_err(&write_err)?;
    }
    if total != expected {
        return Err(Error::io(
            format!("reading {}", path.display()),
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "file changed size while the image was being written",
            ),
        ));
    }
    Ok(())
}

/// What fatfs 0.3 leaves out: the partition offset in the BPB ("hidden
/// sectors", which some boot loaders use to find the FAT) and the volume
/// label entry in the root directory (where Linux, mtools and Windows
/// read the label; fsck.fat compares it with the BPB copy).
fn finish_boot_sectors(
    vol: &mut MemVolume,
    geo: FatGeometry,
    start_lba: u64,
    label: Option<[u8; 11]>,
    clock: &FixedTime,
) -> std::io::Result<()> {
    let mut bs = [0u8; 512];
    vol.seek(SeekFrom::Start(0))?;
    vol.read_exact(&mut bs)?;
    let hidden = u32::try_from(start_lba).unwrap_or(u32::MAX).to_le_bytes();
    let mut sectors = vec![0u64];
    if geo.fat_type == FatType::Fat32 {
        let backup = u16::from_le_bytes([bs[50], bs[51]]);
        if backup != 0 {
            sectors.push(u64::from(backup));
        }
    }
    for s in sectors {
        vol.seek(SeekFrom::Start(s * SECTOR_SIZE + 0x1c))?;
        vol.write_all(&hidden)?;
    }
    let Some(label) = label else {
        return Ok(());
    };
    // The root directory starts right after the FATs on FAT12/16 and is
    // cluster 2 — the first data cluster, same place — on FAT32.
    let reserved = u64::from(u16::from_le_bytes([bs[14], bs[15]]));
    let fats = u64::from(bs[16]);
    let spf16 = u64::from(u16::from_le_bytes([bs[22], bs[23]]));
    let spf32 = u64::from(u32::from_le_bytes([bs[36], bs[37], bs[38], bs[39]]));
    let spf = if spf16 != 0 { spf16 } else { spf32 };
    let root = (reserved + fats * spf) * SECTOR_SIZE;
    let (date, time) = dos_stamp(&clock.0);
    let mut entry = [0u8; 32];
    entry[..11].copy_from_slice(&label);
    entry[11] = 0x08; // ATTR_VOLUME_ID
    entry[22..24].copy_from_slice(&time.to_le_bytes());
    entry[24..26].copy_from_slice(&date.to_le_bytes());
    vol.seek(SeekFrom::Start(root))?;
    vol.write_all(&entry)
}

/// Just enough of a FAT reader to walk the directory tree fatfs wrote.
struct Bpb {
    fat_type: FatType,
    cluster: u64,
    fat_start: u64,
    root_start: u64,
    root_len: u64,
    data_start: u64,
    root_cluster: u32,
    clusters: u32,
}

impl Bpb {
    fn read(vol: &mut MemVolume, fat_type: FatType) -> std::io::Result<Bpb> {
        let mut bs = [0u8; 64];
        vol.seek(SeekFrom::Start(0))?;
        vol.read_exact(&mut bs)?;
        let spc = u64::from(bs[13]);
        let reserved = u64::from(u16::from_le_bytes([bs[14], bs[15]]));
        let fats = u64::from(bs[16]);
        let root_entries = u64::from(u16::from_le_bytes([bs[17], bs[18]]));
        let spf16 = u64::from(u16::from_le_bytes([bs[22], bs[23]]));
        let spf32 = u64::from(u32::from_le_bytes([bs[36], bs[37], bs[38], bs[39]]));
        let spf = if spf16 != 0 { spf16 } else { spf32 };
        let root_start = (reserved + fats * spf) * SECTOR_SIZE;
        let root_len = root_entries * 32;
        let data_start = (root_start + root_len).div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
        let cluster = spc * SECTOR_SIZE;
        let total = vol.seek(SeekFrom::End(0))?;
        Ok(Bpb {
            fat_type,
            cluster,
            fat_start: reserved * SECTOR_SIZE,
            root_start,
            root_len,
            data_start,
            root_cluster: u32::from_le_bytes([bs[44], bs[45], bs[46], bs[47]]),
            clusters: u32::try_from(total.saturating_sub(data_start) / cluster.max(1))
                .unwrap_or(u32::MAX),
        })
    }

    fn next(&self, vol: &mut MemVolume, c: u32) -> std::io::Result<Option<u32>> {
        let c64 = u64::from(c);
        let (off, end) = match self.fat_type {
            FatType::Fat12 => (c64 + c64 / 2, 0xff8),
            FatType::Fat16 => (c64 * 2, 0xfff8),
            FatType::Fat32 => (c64 * 4, 0x0fff_fff8),
        };
        let mut b = [0u8; 4];
        vol.seek(SeekFrom::Start(self.fat_start + off))?;
        vol.read_exact(&mut b)?;
        let v = match self.fat_type {
            FatType::Fat12 => {
                let v = u32::from(u16::from_le_bytes([b[0], b[1]]));
                if c % 2 == 1 {
                    v >> 4
                } else {
                    v & 0xfff
                }
            }
            FatType::Fat16 => u32::from(u16::from_le_bytes([b[0], b[1]])),
            FatType::Fat32 => u32::from_le_bytes(b) & 0x0fff_ffff,
        };
        Ok((2..end).contains(&v).then_some(v))
    }

    /// Byte ranges of a directory: the fixed root region of FAT12/16, or a
    /// cluster chain.
    fn dir_ranges(
        &self,
        vol: &mut MemVolume,
        first: Option<u32>,
    ) -> std::io::Result<Vec<(u64, u64)>> {
        let mut c = match first {
            None if self.fat_type != FatType::Fat32 => {
                return Ok(vec![(self.root_start, self.root_len)])
            }
            None => self.root_cluster,
            Some(c) => c,
        };
        let mut out = Vec::new();
        loop {
            if c < 2 || out.len() as u64 > u64::from(self.clusters) {
                return Err(std::io::Error::other(format!("bad cluster chain at {c}")));
            }
            out.push((
                self.data_start + u64::from(c - 2) * self.cluster,
                self.cluster,
            ));
            match self.next(vol, c)? {
                Some(n) => c = n,
                None => return Ok(out),
            }
        }
    }
}

fn read_ranges(vol: &mut MemVolume, ranges: &[(u64, u64)]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for &(off, len) in ranges {
        let start = out.len();
        out.resize(start + len as usize, 0);
        vol.seek(SeekFrom::Start(off))?;
        vol.read_exact(&mut out[start..])?;
    }
    Ok(out)
}

fn write_ranges(vol: &mut MemVolume, ranges: &[(u64, u64)], data: &[u8]) -> std::io::Result<()> {
    let mut pos = 0usize;
    for &(off, len) in ranges {
        let chunk = data.get(pos..pos + len as usize).unwrap_or_default();
        vol.seek(SeekFrom::Start(off))?;
        vol.write_all(chunk)?;
        pos += len as usize;
    }
    Ok(())
}

const ATTR_LFN: u8 = 0x0f;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;

/// fatfs 0.3 writes long-name entries in front of every new directory's
/// "." and ".." entries, and points ".." of a top-level directory at
/// cluster 2 on FAT32; fsck.fat then finds no valid "."/".." and would
/// delete them. Each directory's first four slots are therefore
/// [LFN, ".", LFN, ".."]: rewrite them as [".", ".."], shift the rest up
/// and point ".." at 0 (the root) where the parent is the root.
fn fix_dot_entries(
    vol: &mut MemVolume,
    bpb: &Bpb,
    dir: Option<u32>,
    depth: u32,
) -> std::io::Result<()> {
    if depth > 64 {
        return Err(std::io::Error::other("directory tree too deep"));
    }
    let ranges = bpb.dir_ranges(vol, dir)?;
    let mut data = read_ranges(vol, &ranges)?;
    if dir.is_some() {
        let slot = |i: usize| data.get(i * 32..i * 32 + 32).unwrap_or(&[0; 32]);
        let lfn_dot = slot(0)[11] == ATTR_LFN && &slot(1)[..11] == b".          ";
        let lfn_dotdot = slot(2)[11] == ATTR_LFN && &slot(3)[..11] == b"..         ";
        let plain = &slot(0)[..11] == b".          " && &slot(1)[..11] == b"..         ";
        if lfn_dot && lfn_dotdot {
            let dot = slot(1).to_vec();
            let mut dotdot = slot(3).to_vec();
            let mut fixed = dot;
            fixed.append(&mut dotdot);
            fixed.extend_from_slice(data.get(128..).unwrap_or_default());
            fixed.extend_from_slice(&[0u8; 64]);
            data = fixed;
        } else if !plain {
            return Err(std::io::Error::other(
                "unexpected layout of a new directory",
            ));
        }
        if depth == 1 {
            // ".." of a directory in the root: cluster 0 (hi word at 20, lo at 26).
            if let Some(dd) = data.get_mut(32..64) {
                dd[20..22].fill(0);
                dd[26..28].fill(0);
            }
        }
        write_ranges(vol, &ranges, &data)?;
    }
    for e in data.chunks_exact(32) {
        match e[0] {
            0x00 => break,
            0xe5 | b'.' => continue,
            _ => {}
        }
        let attr = e[11];
        if attr == ATTR_LFN || attr & ATTR_VOLUME != 0 || attr & ATTR_DIR == 0 {
            continue;
        }
        let c = u32::from(u16::from_le_bytes([e[20], e[21]])) << 16
            | u32::from(u16::from_le_bytes([e[26], e[27]]));
        fix_dot_entries(vol, bpb, Some(c), depth + 1)?;
    }
    Ok(())
}

pub(crate) fn add_tree(spec: &mut FatSpec, dir: &Path, prefix: &str) -> Result<(), Error> {
    walk(spec, dir, prefix.trim_matches('/'), 0)
}

fn walk(spec: &mut FatSpec, dir: &Path, prefix: &str, depth: u32) -> Result<(), Error> {
    // Symlinks are followed; a loop would otherwise never end.
    if depth > 32 {
        return Err(Error::io(
            format!("reading {}", dir.display()),
            std::io::Error::other("directory tree deeper than 32 levels (symlink loop?)"),
        ));
    }
    let rd = std::fs::read_dir(dir).map_err(|e| Error::MissingSource {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut entries = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        entries.push(e.path());
    }
    entries.sort();
    for path in entries {
        let name =
            path.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::InvalidFatPath {
                    partition: String::new(),
                    path: path.display().to_string(),
                    reason: "name is not UTF-8".into(),
                })?;
        let dest = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let md = std::fs::metadata(&path).map_err(|e| Error::MissingSource {
            path: path.clone(),
            source: e,
        })?;
        if md.is_dir() {
            spec.dirs.push(dest.clone());
            walk(spec, &path, &dest, depth + 1)?;
        } else if md.is_file() {
            spec.files.push(FatFile {
                dest,
                source: Source::Path(path),
            });
        } else {
            return Err(Error::NotAFile { path });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_picks_type_by_size() {
        let g = |mib: u64, k| geometry("p", mib * MIB / SECTOR_SIZE, k);
        assert_eq!(g(64, FatKind::Auto).unwrap().fat_type, FatType::Fat32);
        assert_eq!(g(256, FatKind::Auto).unwrap().fat_type, FatType::Fat32);
        assert_eq!(g(256, FatKind::Auto).unwrap().cluster_bytes, 2048);
        assert_eq!(g(32, FatKind::Auto).unwrap().fat_type, FatType::Fat16);
        assert_eq!(g(4, FatKind::Auto).unwrap().fat_type, FatType::Fat16);
        assert_eq!(g(1, FatKind::Auto).unwrap().fat_type, FatType::Fat12);
        assert_eq!(g(200, FatKind::Fat16).unwrap().fat_type, FatType::Fat16);
        // FAT32 needs 65525 clusters of at least 512 bytes.
        assert!(g(16, FatKind::Fat32).is_err());
        assert!(geometry("p", 4, FatKind::Auto).is_err());
        assert!(g(4096, FatKind::Fat16).is_err());
    }

    #[test]
    fn dos_time_matches_known_dates() {
        let t = dos_time(0x5f5e_1000); // 2020-09-13 12:26:40 UTC
        assert_eq!((t.date.year, t.date.month, t.date.day), (2020, 9, 13));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (12, 26, 40));
        let t = dos_time(951_782_400); // 2000-02-29 00:00:00
        assert_eq!((t.date.year, t.date.month, t.date.day), (2000, 2, 29));
    }

    #[test]
    fn labels_and_paths_are_checked() {
        assert_eq!(label_bytes("p", "boot").unwrap().unwrap(), *b"BOOT       ");
        assert!(label_bytes("p", "").unwrap().is_none());
        assert!(label_bytes("p", "TWELVE_CHARS").is_err());
        assert!(label_bytes("p", "A.B").is_err());
        assert!(label_bytes("p", "ÄB").is_err());
        assert!(components("p", "overlays/x.dtbo").is_ok());
        for bad in [
            "",
            "/",
            "a//b",
            "../x",
            "a/./b",
            "a:b",
            "a*",
            "trailing.",
            "x\u{1F600}",
        ] {
            assert!(components("p", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_full_root_directory_is_a_format_error() {
        // FAT16's root holds 512 entries; each name here takes two (LFN + 8.3).
        let spec = FatSpec {
            files: (0..300)
                .map(|i| FatFile {
                    dest: format!("file-{i}.txt"),
                    source: Source::Bytes(vec![1]),
                })
                .collect(),
            ..Default::default()
        };
        let geo = geometry("p", 8 * MIB / SECTOR_SIZE, FatKind::Auto).unwrap();
        assert_eq!(geo.fat_type, FatType::Fat16);
        let e = build("p", &spec, geo, 1, 2048, None).err().unwrap();
        assert!(matches!(e, Error::FatRootFull { .. }), "{e:?}");
        assert_eq!(e.class(), crate::ErrorClass::Format);
        // In a subdirectory the same files fit: directories grow.
        let spec = FatSpec {
            files: spec
                .files
                .into_iter()
                .map(|f| FatFile {
                    dest: format!("sub/{}", f.dest),
                    ..f
                })
                .collect(),
            ..Default::default()
        };
        assert!(build("p", &spec, geo, 1, 2048, None).is_ok());
    }

    #[test]
    fn clashing_names_are_refused() {
        let f = |d: &str| FatFile {
            dest: d.into(),
            source: Source::Bytes(vec![]),
        };
        let spec = FatSpec {
            files: vec![f("Config.txt"), f("config.TXT")],
            ..Default::default()
        };
        assert!(matches!(
            plan_tree("p", &spec),
            Err(Error::DuplicateFatPath { .. })
        ));
        let spec = FatSpec {
            files: vec![f("a"), f("A/b")],
            ..Default::default()
        };
        assert!(matches!(
            plan_tree("p", &spec),
            Err(Error::DuplicateFatPath { .. })
        ));
        let spec = FatSpec {
            files: vec![f("b/z"), f("a"), f("b/c/d")],
            ..Default::default()
        };
        let t = plan_tree("p", &spec).unwrap();
        let order: Vec<String> = t.files.iter().map(|(c, _)| c.join("/")).collect();
        assert_eq!(order, ["a", "b/c/d", "b/z"]);
        let dirs: Vec<String> = t.dirs.iter().map(|c| c.join("/")).collect();
        assert_eq!(dirs, ["b", "b/c"]);
    }
}
