//! `sdcard.img`: boot partition(s), root slots A and B, and the updater's
//! state area in the gap before the first partition.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use board::Board;
use diskimage::{DiskLayout, FatSpec, PartKind, PartitionSpec, Reserved, Source, TableKind};
use updater::state::{BootState, Layout, Slot, SlotGroup, SlotRange, StateLocation};

use crate::{Error, Inputs, SYSTEM_GROUP};

const MIB: u64 = 1024 * 1024;

/// `rootfs`: slot A's contents (the input root filesystem, or its copy
/// with the slot kernel for kexec boards).
pub fn write(
    board: &Board,
    inputs: &Inputs,
    rootfs: Option<&Path>,
    boot_dir: &Path,
    out: &Path,
) -> Result<(), Error> {
    let mut fat = FatSpec {
        label: "BOOT".into(),
        ..FatSpec::default()
    };
    fat.add_tree(boot_dir, "")?;
    let mut boot = PartitionSpec::new("boot", board.disk.boot_mib * MIB, PartKind::Fat(fat));
    boot.bootable = true;
    let slot_a = match rootfs {
        Some(r) => PartKind::Raw(Source::Path(r.to_path_buf())),
        None => PartKind::Empty,
    };
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
        partitions: vec![
            boot,
            PartitionSpec::new("rootfs-a", board.disk.slot_mib * MIB, slot_a),
            PartitionSpec::new("rootfs-b", board.disk.slot_mib * MIB, PartKind::Empty),
        ],
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
    let state_layout = Layout::new(
        board.compatible(),
        loc,
        vec![SlotGroup {
            name: SYSTEM_GROUP.into(),
            slots: [part("rootfs-a")?, part("rootfs-b")?],
        }],
    )?;
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
    Ok(())
}

fn source_date_epoch() -> Option<u64> {
    std::env::var("SOURCE_DATE_EPOCH").ok()?.trim().parse().ok()
}
