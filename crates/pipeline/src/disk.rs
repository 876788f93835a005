//! `sdcard.img`: boot partition(s), root slots A and B, and the updater's
//! state area in the gap before the first partition.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use board::{Board, KernelBoot};
use diskimage::efivars::{self, GptPartition};
use diskimage::{
    gpt_types, DiskLayout, FatSpec, Guid, PartKind, PartitionSpec, Reserved, Source, TableKind,
};
use updater::state::{BootState, Layout, Slot, SlotGroup, SlotRange, StateLocation};

use crate::{Error, Inputs, SYSTEM_GROUP};

const MIB: u64 = 1024 * 1024;

/// The slot group of the bootstrap partitions on `kernel.boot: efi-ab`
/// boards, in images and on disk.
pub const BOOTSTRAP_GROUP: &str = "bootstrap";
/// `Boot####` numbers of the bootstraps of slot A and slot B
/// (updater.conf `efi_boot_entries`).
pub const EFI_BOOT_ENTRIES: [u16; 2] = [0x000A, 0x000B];
/// Written next to sdcard.img when the board names a variable store.
pub const EFI_VARS_NAME: &str = "OVMF_VARS.fd";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `kernel.boot: efi-ab`: the bootstrap partition's bytes (a FAT of
/// `boot_dir`, `disk.boot_mib` long) in `out`: what the factory image has
/// in bootstrap A and what update.fwi carries as its `bootstrap` segment.
pub fn bootstrap_fat(board: &Board, boot_dir: &Path, out: &Path) -> Result<(), Error> {
    let mut fat = FatSpec {
        label: "BOOTSTRAP".into(),
        ..FatSpec::default()
    };
    fat.add_tree(boot_dir, "")?;
    let mut part = PartitionSpec::new("bootstrap", board.disk.boot_mib * MIB, PartKind::Fat(fat));
    part.start_bytes = Some(MIB);
    // The FAT is built inside a scratch disk (diskimage writes whole
    // disks), then cut out of it.
    let scratch = out.with_extension("disk");
    let report = diskimage::write_image(
        &DiskLayout {
            table: TableKind::Gpt,
            seed: format!("fwpack/{}/bootstrap", board.compatible()),
            size_bytes: None,
            fat_timestamp: source_date_epoch(),
            partitions: vec![part],
            reserved: vec![],
        },
        &scratch,
    )?;
    let p = report.partitions.first().ok_or_else(|| Error::Tool {
        tool: "diskimage".into(),
        message: "no bootstrap partition written".into(),
    })?;
    let mut src = std::fs::File::open(&scratch).map_err(io(&scratch))?;
    src.seek(SeekFrom::Start(p.offset_bytes))
        .map_err(io(&scratch))?;
    let mut dst = std::fs::File::create(out).map_err(io(out))?;
    std::io::copy(&mut std::io::Read::take(src, p.size_bytes), &mut dst).map_err(io(out))?;
    std::fs::remove_file(&scratch).map_err(io(&scratch))
}

/// `rootfs`: slot A's contents (the input root filesystem, or its copy
/// with the slot kernel for kexec boards).
pub fn write(
    board: &Board,
    inputs: &Inputs,
    rootfs: Option<&Path>,
    boot_dir: &Path,
    bootstrap: Option<&Path>,
    out: &Path,
) -> Result<(), Error> {
    let slot_a = match rootfs {
        Some(r) => PartKind::Raw(Source::Path(r.to_path_buf())),
        None => PartKind::Empty,
    };
    let mut partitions = match bootstrap {
        // A/B bootstraps: ESP type, so the firmware's FAT driver takes
        // both (its Boot#### entries name them by partition GUID).
        Some(fat) => [
            (
                "bootstrap-a",
                PartKind::Raw(Source::Path(fat.to_path_buf())),
            ),
            ("bootstrap-b", PartKind::Empty),
        ]
        .into_iter()
        .map(|(name, kind)| PartitionSpec {
            gpt_type: Some(gpt_types::EFI_SYSTEM),
            ..PartitionSpec::new(name, board.disk.boot_mib * MIB, kind)
        })
        .collect(),
        None => {
            let mut fat = FatSpec {
                label: "BOOT".into(),
                ..FatSpec::default()
            };
            fat.add_tree(boot_dir, "")?;
            let mut boot =
                PartitionSpec::new("boot", board.disk.boot_mib * MIB, PartKind::Fat(fat));
            boot.bootable = true;
            vec![boot]
        }
    };
    partitions.extend([
        PartitionSpec::new("rootfs-a", board.disk.slot_mib * MIB, slot_a),
        PartitionSpec::new("rootfs-b", board.disk.slot_mib * MIB, PartKind::Empty),
    ]);
    let loc = StateLocation::new(board.disk.state_offset, board.disk.state_copy_distance);
    let span = loc.span();
    let layout = DiskLayout {
        table: match board.disk.table.as_str() {
            "gpt" => TableKind::Gpt,
            _ => TableKind::Mbr,
        },
        seed: format!("fwpack/{}", board.compatible()),
        size_bytes: None,
        fat_timestamp: source_date_epoch(),
        partitions,
        // Both copies of the state area and the gap between them: no
        // partition there, so partitions start after the second copy.
        reserved: vec![Reserved {
            name: "fwpack state area".into(),
            start_bytes: span.start,
            size_bytes: span.end - span.start,
        }],
    };
    let report = diskimage::write_image(&layout, out)?;
    let part = |name: &str| {
        report
            .partitions
            .iter()
            .find(|p| p.name == name)
            .map(|p| SlotRange {
                offset: p.offset_bytes,
                size: p.size_bytes,
            })
            .ok_or_else(|| Error::Tool {
                tool: "diskimage".into(),
                message: format!("partition {name} missing from the written image"),
            })
    };
    let mut groups = vec![SlotGroup {
        name: SYSTEM_GROUP.into(),
        slots: [part("rootfs-a")?, part("rootfs-b")?],
    }];
    if bootstrap.is_some() {
        groups.insert(
            0,
            SlotGroup {
                name: BOOTSTRAP_GROUP.into(),
                slots: [part("bootstrap-a")?, part("bootstrap-b")?],
            },
        );
    }
    let state_layout = Layout::new(board.compatible(), loc, groups)?;
    let boot_state = BootState::initial(Slot::A, inputs.payload_version, &inputs.version_label)?;
    let halves = updater::state::format_state_area(&state_layout, &boot_state)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(out)
        .map_err(|source| Error::Io {
            path: out.to_path_buf(),
            source,
        })?;
    halves
        .iter()
        .try_for_each(|(at, bytes)| {
            f.seek(SeekFrom::Start(*at))?;
            f.write_all(bytes)
        })
        .and_then(|()| f.sync_all())
        .map_err(|source| Error::Io {
            path: out.to_path_buf(),
            source,
        })?;
    drop(f);
    // The block map: what write_image wrote, and the state area.
    let mut written = report.written.clone();
    written.extend(
        halves
            .iter()
            .map(|(at, bytes)| (*at, *at + bytes.len() as u64)),
    );
    crate::flash::write_bmap(out, &written)?;
    if let (KernelBoot::EfiAb, Some(template)) =
        (board.kernel.boot, &board.boot_files.efi_vars_template)
    {
        let entries = [("bootstrap-a", "A"), ("bootstrap-b", "B")]
            .into_iter()
            .zip(EFI_BOOT_ENTRIES)
            .map(|((name, slot), number)| {
                let p = report
                    .partitions
                    .iter()
                    .find(|p| p.name == name)
                    .ok_or_else(|| Error::Tool {
                        tool: "diskimage".into(),
                        message: format!("partition {name} missing from the written image"),
                    })?;
                let hd = GptPartition {
                    number: p.number,
                    start_lba: p.start_lba,
                    sectors: p.sectors,
                    guid: Guid::parse(&p.partuuid).unwrap_or(Guid::NIL),
                };
                let args = format!(
                    "initrd=\\{} {}",
                    crate::INITRAMFS_NAME,
                    crate::cmdline(board)
                );
                let file = format!("\\{}", board.kernel.image_name);
                let desc = format!("fwpack bootstrap {slot}");
                Ok((number, efivars::load_option(&desc, &hd, &file, &args)))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let mut vars = std::fs::read(template).map_err(io(template))?;
        efivars::add_boot_entries(&mut vars, &entries).map_err(|e| Error::Tool {
            tool: "efivars".into(),
            message: format!("{}: {e}", template.display()),
        })?;
        let dst = out.with_file_name(EFI_VARS_NAME);
        std::fs::write(&dst, vars).map_err(io(&dst))?;
    }
    Ok(())
}

fn source_date_epoch() -> Option<u64> {
    std::env::var("SOURCE_DATE_EPOCH").ok()?.trim().parse().ok()
}
