//! Writing the image: a sparse temporary file next to the output, renamed
//! into place only when every byte is written and synced.

use crate::error::Error;
use crate::fat;
use crate::layout::{
    make_plan, DiskLayout, PartKind, Placed, Plan, Source, TableKind, SECTOR_SIZE,
};
use crate::report::ImageReport;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The image file, with every byte range written through it recorded: the
/// ranges the image really holds (tables, FAT blocks, slot contents), which
/// become the block map (`.bmap`) that lets a flasher skip the rest.
/// mbrman and gptman write through it as well.
struct Recorder<'a> {
    file: &'a mut File,
    pos: u64,
    written: Vec<(u64, u64)>,
}

impl Read for Recorder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Recorder<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        if n > 0 {
            self.written.push((self.pos, self.pos + n as u64));
        }
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Recorder<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = self.file.seek(to)?;
        Ok(self.pos)
    }
}

/// Granularity of hole detection when copying: zero runs at least this
/// long are skipped, leaving holes in the sparse image.
const HOLE: usize = 4096;

/// Validates the layout and computes where everything goes, without
/// reading sources or writing anything: the same report `write_image`
/// returns (minus `content_bytes`). Use it to learn the PARTUUIDs for the
/// kernel command line before generating the boot files.
pub fn plan(layout: &DiskLayout) -> Result<ImageReport, Error> {
    let plan = make_plan(layout)?;
    Ok(plan.report(layout))
}

/// Writes the disk image to `out`. On error nothing is left at `out` (an
/// existing file there is untouched); on success the file appears
/// atomically, complete and synced.
pub fn write_image(layout: &DiskLayout, out: &Path) -> Result<ImageReport, Error> {
    let plan = make_plan(layout)?;
    let mut report = plan.report(layout);
    precheck_sources(layout, &plan)?;

    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .permissions(published_mode())
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("creating a temporary file in {}", dir.display()), e))?;
    let disk_bytes = plan.disk_sectors * SECTOR_SIZE;
    tmp.as_file_mut()
        .set_len(disk_bytes)
        .map_err(|e| Error::io(format!("sizing the image to {disk_bytes} bytes"), e))?;
    let mut rec = Recorder {
        file: tmp.as_file_mut(),
        pos: 0,
        written: Vec::new(),
    };
    let file = &mut rec;

    match layout.table {
        TableKind::Mbr => write_mbr(file, layout, &plan)?,
        TableKind::Gpt => write_gpt(file, layout, &plan)?,
    }

    for (p, r) in plan.parts.iter().zip(report.partitions.iter_mut()) {
        let Some(spec) = layout.partitions.get(p.index) else {
            continue;
        };
        let offset = p.start * SECTOR_SIZE;
        match (&spec.kind, p.fat) {
            (PartKind::Fat(f), Some(geo)) => {
                let volume = fat::build(
                    &spec.name,
                    f,
                    geo,
                    fat::volume_id(layout, &spec.name),
                    p.start,
                    layout.fat_timestamp,
                )?;
                for (off, data) in volume.nonzero_blocks() {
                    write_at(file, offset + off, data)?;
                }
            }
            (PartKind::Raw(src), _) => {
                r.content_bytes = Some(copy_raw(file, p, &spec.name, src)?);
            }
            _ => {}
        }
    }

    report.written = crate::bmap::merge(std::mem::take(&mut rec.written));
    let file = tmp.as_file_mut();
    file.sync_all()
        .map_err(|e| Error::io("syncing the image", e))?;
    tmp.persist(out)
        .map_err(|e| Error::io(format!("renaming the image to {}", out.display()), e.error))?;
    // Make the rename itself durable.
    if let Ok(d) = File::open(dir) {
        match d.sync_all() {
            Ok(()) => {}
            // Some file systems cannot sync a directory; the data is synced.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {}
            Err(e) => return Err(Error::io(format!("syncing {}", dir.display()), e)),
        }
    }
    Ok(report)
}

/// Everything that can be checked before the first byte is written: source
/// files exist and fit, FAT names and labels are valid.
fn precheck_sources(layout: &DiskLayout, plan: &Plan) -> Result<(), Error> {
    for p in &plan.parts {
        let Some(spec) = layout.partitions.get(p.index) else {
            continue;
        };
        match &spec.kind {
            PartKind::Raw(src) => {
                let size = src.len()?;
                let capacity = p.sectors * SECTOR_SIZE;
                if size > capacity {
                    return Err(Error::SourceTooLarge {
                        partition: spec.name.clone(),
                        source_name: src.describe(),
                        size,
                        capacity,
                    });
                }
            }
            PartKind::Fat(f) => {
                for file in &f.files {
                    file.source.len()?;
                }
            }
            PartKind::Empty => {}
        }
    }
    Ok(())
}

fn write_at(file: &mut Recorder, offset: u64, data: &[u8]) -> Result<(), Error> {
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.write_all(data))
        .map_err(|e| {
            Error::io(
                format!("writing {} bytes at offset {offset}", data.len()),
                e,
            )
        })
}

/// Writes `data` at `offset`, skipping all-zero `HOLE`-sized pieces.
fn write_sparse(file: &mut Recorder, offset: u64, data: &[u8]) -> Result<(), Error> {
    let mut run_start: Option<usize> = None;
    let mut pos = 0;
    for chunk in data.chunks(HOLE) {
        let zero = chunk.iter().all(|&b| b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(pos),
            (true, Some(s)) => {
                write_at(
                    file,
                    offset + s as u64,
                    data.get(s..pos).unwrap_or_default(),
                )?;
                run_start = None;
            }
            _ => {}
        }
        pos += chunk.len();
    }
    if let Some(s) = run_start {
        write_at(file, offset + s as u64, data.get(s..).unwrap_or_default())?;
    }
    Ok(())
}

fn copy_raw(file: &mut Recorder, p: &Placed, name: &str, src: &Source) -> Result<u64, Error> {
    let offset = p.start * SECTOR_SIZE;
    let capacity = p.sectors * SECTOR_SIZE;
    let too_large = |size| Error::SourceTooLarge {
        partition: name.to_string(),
        source_name: src.describe(),
        size,
        capacity,
    };
    match src {
        Source::Bytes(b) => {
            let len = b.len() as u64;
            if len > capacity {
                return Err(too_large(len));
            }
            write_sparse(file, offset, b)?;
            Ok(len)
        }
        Source::Path(path) => {
            let mut f = File::open(path).map_err(|e| Error::MissingSource {
                path: path.clone(),
                source: e,
            })?;
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = read_full(&mut f, &mut buf)
                    .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                if n == 0 {
                    break;
                }
                let end = total + n as u64;
                // Checked while copying too: the file may have grown since
                // the size check.
                if end > capacity {
                    return Err(too_large(end));
                }
                write_sparse(file, offset + total, buf.get(..n).unwrap_or_default())?;
                total = end;
            }
            Ok(total)
        }
    }
}

/// Reads until `buf` is full or the source ends, so hole detection sees
/// whole pieces.
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|r| !r.is_empty()) {
        match f.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// CHS for an LBA in the 255-head, 63-sector geometry every partitioner
/// assumes for LBA disks; past cylinder 1023 the conventional "maximum"
/// value says "use the LBA fields".
fn chs(lba: u64) -> mbrman::CHS {
    const HEADS: u64 = 255;
    const SECTORS: u64 = 63;
    let c = lba / (HEADS * SECTORS);
    if c > 1023 {
        return mbrman::CHS::new(1023, 254, 63);
    }
    mbrman::CHS::new(
        c as u16,
        (lba / SECTORS % HEADS) as u8,
        (lba % SECTORS + 1) as u8,
    )
}

fn mbr_entry(boot: bool, sys: u8, start: u64, sectors: u64) -> mbrman::MBRPartitionEntry {
    // The plan guarantees the disk (hence every start and size) fits in 32 bits.
    let s32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    mbrman::MBRPartitionEntry {
        boot: if boot {
            mbrman::BOOT_ACTIVE
        } else {
            mbrman::BOOT_INACTIVE
        },
        first_chs: chs(start),
        sys,
        last_chs: chs(start + sectors.saturating_sub(1)),
        starting_lba: s32(start),
        sectors: s32(sectors),
    }
}

fn write_mbr(file: &mut Recorder, layout: &DiskLayout, plan: &Plan) -> Result<(), Error> {
    let mut mbr = mbrman::MBR::new_from(file, SECTOR_SIZE as u32, plan.mbr_signature.to_le_bytes())
        .map_err(Error::Mbr)?;
    let mut first_logical = true;
    for p in &plan.parts {
        let boot = layout.partitions.get(p.index).is_some_and(|s| s.bootable);
        let entry = mbr_entry(boot, p.mbr_type, p.start, p.sectors);
        match p.ebr {
            None => {
                if let Some(slot) = mbr.header.get_mut(p.number as usize) {
                    *slot = entry;
                }
            }
            Some(ebr) => {
                let end = p.start + p.sectors;
                mbr.logical_partitions.push(mbrman::LogicalPartition {
                    partition: entry,
                    absolute_ebr_lba: ebr as u32,
                    // The link to an EBR spans that EBR and its partition;
                    // the first EBR's extent is the extended partition itself.
                    ebr_sectors: (!first_logical).then_some((end - ebr) as u32),
                    ebr_first_chs: chs(ebr),
                    ebr_last_chs: (!first_logical).then(|| chs(end - 1)),
                    bootstrap_code: [0; 446],
                });
                first_logical = false;
            }
        }
    }
    if let Some((start, sectors)) = plan.extended {
        if let Some(slot) = mbr.header.get_mut(4) {
            // 0x0F: extended, LBA-addressed.
            *slot = mbr_entry(false, 0x0f, start, sectors);
        }
    }
    mbr.write_into(file).map_err(Error::Mbr)
}

fn write_gpt(file: &mut Recorder, layout: &DiskLayout, plan: &Plan) -> Result<(), Error> {
    let mut gpt =
        gptman::GPT::new_from(file, SECTOR_SIZE, plan.disk_guid.to_disk()).map_err(Error::Gpt)?;
    gpt.align = crate::layout::ALIGNMENT / SECTOR_SIZE;
    for p in &plan.parts {
        let Some(spec) = layout.partitions.get(p.index) else {
            continue;
        };
        let entry = gptman::GPTPartitionEntry {
            partition_type_guid: p.gpt_type.to_disk(),
            unique_partition_guid: p.guid.to_disk(),
            starting_lba: p.start,
            ending_lba: p.start + p.sectors - 1,
            // Bit 2: legacy BIOS bootable.
            attribute_bits: if spec.bootable { 1 << 2 } else { 0 },
            partition_name: spec.name.as_str().into(),
        };
        if let Some((_, slot)) = gpt.iter_mut().find(|(n, _)| *n == p.number) {
            *slot = entry;
        }
    }
    gpt.write_into(file).map_err(Error::Gpt)?;
    gptman::GPT::write_protective_mbr_into(file, SECTOR_SIZE).map_err(Error::Gpt)
}

/// An image is not a secret: created 0666 minus the umask, as `cp` or a
/// shell redirect would make it (tempfile's own default is 0600, which a
/// web server serving the image cannot read).
fn published_mode() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o666)
}

#[cfg(test)]
mod tests {
    use super::chs;

    #[test]
    fn chs_like_sfdisk() {
        let c = chs(2048);
        assert_eq!((c.cylinder, c.head, c.sector), (0, 32, 33));
        let c = chs(u64::from(u32::MAX));
        assert_eq!((c.cylinder, c.head, c.sector), (1023, 254, 63));
    }
}
