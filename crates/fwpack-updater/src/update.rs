//! The update check PID 1 runs before choosing a slot: is there a signed
//! image, newer than the running system, not yet tried? Then apply it to
//! the inactive slot and make that slot pending.

use std::fs::File;
use std::path::{Path, PathBuf};

use fwimage::{ImageHead, TrustedKeys};
use updater::{Access, ApplyOptions, Event, FileStorage, Phase, SlotState, StateArea};

use crate::config::{Config, Images};
use crate::devwait;
use crate::pid1::Signals;

/// Adds every `*.pem` (SubjectPublicKeyInfo) and `*.pub` (32 raw bytes)
/// key in `dir` to `keys`; returns how many were added.
pub fn add_keys_from(keys: &mut TrustedKeys, dir: &Path) -> Result<usize, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("trusted keys {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("pem" | "pub")))
        .collect();
    paths.sort();
    let mut n = 0;
    for p in paths {
        let data = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        match keys.add_encoded(&data) {
            Ok(id) => {
                n += 1;
                log!("trusted key {id} from {}", p.display());
            }
            Err(e) => log!("ignoring {}: {e}", p.display()),
        }
    }
    Ok(n)
}

/// The trusted keys of a directory; an error if there are none.
pub fn trusted_keys(dir: &Path) -> Result<TrustedKeys, String> {
    let mut keys = TrustedKeys::new();
    if add_keys_from(&mut keys, dir)? == 0 {
        return Err(format!("no usable public key in {}", dir.display()));
    }
    Ok(keys)
}

/// More update images than any device needs to choose from.
const MAX_IMAGES: usize = 64;

/// The `*.fwi` files of a directory, in name order: regular files only,
/// as the directory entry says (no symlink followed). The images
/// partition is outside media: a FIFO named `x.fwi` would hang the open
/// for good, a symlink to `/dev/console` the first read, and one to
/// `/dev/watchdog0` would arm the watchdog just by being opened.
/// At most [`MAX_IMAGES`] of them (in directory order), so a stick with
/// a million files costs neither memory nor hours on every boot.
fn images_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "fwi"))
                .take(MAX_IMAGES)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Whether an image (its head, already authenticated) is an update for
/// this device: for its board, newer than the active slot, and not one
/// the inactive slot already holds pending or fell back from. `Ok` may
/// carry a note; `Err` says why not. Shared by the boot-time check and
/// `fwpack-updater check`.
pub fn judge(
    head: &ImageHead,
    boot: &updater::BootState,
    board: &str,
) -> Result<Option<String>, String> {
    let h = &head.header;
    if h.board != board {
        return Err(format!(
            "refused: it is for board `{}`, this device is `{board}`",
            h.board
        ));
    }
    let active = boot.slot(boot.active);
    let inactive_slot = boot.inactive();
    let inactive = boot.slot(inactive_slot);
    let id = updater::image_id(head);
    if id == active.image_id || h.payload_version <= active.version {
        return Err(format!(
            "(version {}) is not newer than the running slot {} (version {})",
            h.payload_version, boot.active, active.version
        ));
    }
    if id == inactive.image_id && inactive.state == SlotState::Complete {
        let pending = boot.pending == Some(inactive_slot);
        if pending && boot.tries_left > 0 {
            return Err(format!("is already in slot {inactive_slot}, pending"));
        }
        // Tried and not confirmed: explicitly marked as fallen back, or
        // out of tries (this boot's attempt falls back). Re-applying
        // would hand it new tries: never loop on it.
        if pending || inactive.fell_back {
            return Err(format!("was already installed in slot {inactive_slot} and did not confirm; not applying it again"));
        }
        // Complete but never activated (`apply --no-activate`, or a
        // commit an older updater wrote in two steps and was cut
        // between): the apply finds the data in place and only commits.
        return Ok(Some(format!(
            "is in slot {inactive_slot} but was never activated; activating it"
        )));
    }
    Ok(None)
}

/// In recovery (recovery.rs) the active slot cannot be booted, so any
/// image for this board at or above the rollback floor will do, even the
/// one the broken slot holds; the engine checks the floor again.
fn judge_recovery(head: &ImageHead, boot: &updater::BootState, board: &str) -> Result<(), String> {
    let h = &head.header;
    if h.board != board {
        return Err(format!(
            "refused: it is for board `{}`, this device is `{board}`",
            h.board
        ));
    }
    if h.payload_version < boot.rollback_floor {
        return Err(format!(
            "(version {}) is below the rollback floor {}",
            h.payload_version, boot.rollback_floor
        ));
    }
    Ok(())
}

/// A candidate that passed the cheap checks (head, signature, board, version).
struct Candidate {
    path: PathBuf,
    version: u64,
    label: String,
}

pub enum Outcome {
    Nothing,
    Applied { slot: updater::Slot, tries: u8 },
}

/// Where images on a partition are mounted for the check.
const IMAGES_MNT: &str = "/mnt/images";

/// `recovery`: the active slot cannot be booted (recovery.rs): any image
/// at or above the rollback floor is applied, and an empty source is not
/// worth a console line on every look.
pub fn check_and_apply(
    cfg: &Config,
    disk: &Path,
    signals: &mut Signals,
    recovery: bool,
) -> Result<Outcome, String> {
    let Some(images) = &cfg.images else {
        return Ok(Outcome::Nothing);
    };
    let (dir, mounted) = match images {
        Images::Dir(d) => (d.clone(), false),
        Images::Partition {
            device,
            fstype,
            dir,
        } => {
            let dev = devwait::wait(device, cfg.device_timeout, signals)?;
            let _ = std::fs::create_dir_all(IMAGES_MNT);
            rustix::mount::mount(
                &dev,
                IMAGES_MNT,
                fstype.as_str(),
                // nodev: a device node on the stick opens nothing.
                rustix::mount::MountFlags::RDONLY
                    | rustix::mount::MountFlags::NODEV
                    | rustix::mount::MountFlags::NOSUID
                    | rustix::mount::MountFlags::NOEXEC,
                c"",
            )
            .map_err(|e| {
                format!(
                    "mounting {} ({fstype}) for update images: {e}",
                    dev.display()
                )
            })?;
            (
                Path::new(IMAGES_MNT).join(dir.trim_start_matches('/')),
                true,
            )
        }
    };
    let r = check_dir(cfg, disk, &dir, recovery);
    if mounted {
        let _ = rustix::mount::unmount(IMAGES_MNT, rustix::mount::UnmountFlags::DETACH);
    }
    r
}

fn check_dir(cfg: &Config, disk: &Path, dir: &Path, recovery: bool) -> Result<Outcome, String> {
    let files = images_in(dir);
    if files.is_empty() {
        if !recovery {
            log!("no update images in {}", dir.display());
        }
        return Ok(Outcome::Nothing);
    }
    let keys = trusted_keys(&cfg.keys)?;
    let mut storage = FileStorage::open(disk, Access::ReadWrite).map_err(|e| e.to_string())?;
    let area = StateArea::read(&mut storage, cfg.state_location())
        .map_err(|e| format!("state area of {}: {e}", disk.display()))?;
    let boot = area.boot().clone();
    let board = area.layout().board.clone();
    let inactive_slot = boot.inactive();

    let mut best: Option<Candidate> = None;
    for path in files {
        let name = path.display().to_string();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                log!("update {name} refused: {e}");
                continue;
            }
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let head = match ImageHead::read(&file, len) {
            Ok(h) => h,
            Err(e) => {
                log!("update {name} refused: {e}");
                continue;
            }
        };
        if let Err(e) = head.verify_signature(&keys) {
            log!("update {name} refused: {e}");
            continue;
        }
        let h = &head.header;
        let verdict = if recovery {
            judge_recovery(&head, &boot, &board).map(|()| None)
        } else {
            judge(&head, &boot, &board)
        };
        match verdict {
            Ok(None) => {}
            Ok(Some(note)) => log!("update {name} {note}"),
            Err(why) => {
                log!("update {name} {why}");
                continue;
            }
        }
        if best.as_ref().is_none_or(|b| h.payload_version > b.version) {
            best = Some(Candidate {
                path: path.clone(),
                version: h.payload_version,
                label: h.version_label.clone(),
            });
        }
    }
    let Some(c) = best else {
        return Ok(Outcome::Nothing);
    };
    drop(area);

    let name = c.path.display().to_string();
    log!(
        "applying update {name} (version {} {}) to slot {inactive_slot}",
        c.version,
        c.label
    );
    let file = File::open(&c.path).map_err(|e| format!("{name}: {e}"))?;
    let len = file
        .metadata()
        .map(|m| m.len())
        .map_err(|e| format!("{name}: {e}"))?;
    // Tryboot boards get one try: the firmware's flag is one-shot anyway.
    let tries = if cfg.tryboot.is_some() { 1 } else { cfg.tries };
    let opts = ApplyOptions {
        slot: Some(inactive_slot),
        state_offset: cfg.state_offset,
        state_copy_distance: cfg.state_copy_distance,
        verify_writes: cfg.verify_writes,
        activate: true,
        tries,
        ..ApplyOptions::default()
    };
    let mut progress = Progress::default();
    let mut wd = crate::watchdog::Watchdog::arm(cfg, "while the update is applied");
    // The same instantiation of the engine as `apply SOURCE` (one copy in the binary).
    let report = updater::apply(
        imagesource::AnySource::File(file),
        len,
        &mut storage,
        &keys,
        &opts,
        &mut |e| {
            if let Some(w) = &mut wd {
                w.ping();
            }
            progress.event(e)
        },
    );
    if let Some(w) = wd {
        w.disarm();
    }
    let report = report.map_err(|e| format!("update {name} refused: {e}"))?;
    log!(
        "applied {name} to slot {}: version {}, {} bytes written{}{}",
        report.slot,
        report.version,
        report.bytes_written,
        if report.bytes_read_back > 0 {
            format!(", {} bytes read back and verified", report.bytes_read_back)
        } else {
            String::new()
        },
        if report.already_complete {
            " (slot already held it)"
        } else {
            ""
        },
    );
    Ok(Outcome::Applied {
        slot: report.slot,
        tries,
    })
}

/// Event lines for the console: phases, decisions, and progress every 25%.
#[derive(Default)]
pub struct Progress {
    last_quarter: Option<(Phase, u64)>,
}

impl Progress {
    pub fn event(&mut self, e: &Event) {
        match e {
            Event::Target { description } => log!("target: {description}"),
            Event::Phase(p) => {
                self.last_quarter = None;
                match p {
                    Phase::Check => log!("checking image"),
                    Phase::Verify => {
                        log!("checking what the slot holds against the signed chunk hashes")
                    }
                    Phase::Write => log!("signature ok; writing, each chunk authenticated first"),
                    Phase::Commit => log!("data written and synced; committing"),
                }
            }
            Event::ImageAccepted {
                board,
                version,
                label,
                key_id,
                segments,
                raw_bytes,
                slot,
            } => log!(
                "image accepted: board {board}, version {version} {label}, signed by {key_id}, {segments} segment(s), {raw_bytes} bytes for slot {slot}"
            ),
            Event::Progress { phase, done, total } => {
                let q = if *total == 0 { 4 } else { done.saturating_mul(4) / total };
                if self.last_quarter != Some((*phase, q)) && q > 0 {
                    self.last_quarter = Some((*phase, q));
                    log!("{}: {}% ({done}/{total} bytes)", phase.name(), q * 25);
                }
            }
            Event::Warning(w) => log!("warning: {w}"),
            Event::Resume { segment, offset, skipped } => {
                log!("resuming an interrupted apply at segment {segment} offset {offset} ({skipped} bytes already done)")
            }
            Event::Restart { reason } => log!("starting over: {reason}"),
            Event::AlreadyComplete { slot } => log!("slot {slot} already holds this image, complete and read back"),
            Event::Checkpoint { .. } => {}
            Event::SlotState { slot, state } => log!("slot {slot} is now {}", state.name()),
            Event::Pending { slot, tries } => log!("slot {slot} is pending with {tries} tries"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only regular `*.fwi` files are candidates: a FIFO (whose open
    /// waits for a writer forever), a symlink (to a console, a watchdog)
    /// and a directory are not opened at all.
    #[test]
    fn only_regular_image_files_are_opened() {
        let dir = std::env::temp_dir().join(format!("fwpack-images-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("d.fwi")).unwrap();
        std::fs::write(dir.join("a.fwi"), b"not an image").unwrap();
        std::fs::write(dir.join("e.txt"), b"").unwrap();
        let fifo = std::ffi::CString::new(dir.join("b.fwi").into_os_string().into_encoded_bytes())
            .unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/dev/console", dir.join("c.fwi")).unwrap();
        assert_eq!(images_in(&dir), vec![dir.join("a.fwi")]);
        // Bounded, however many there are.
        for i in 0..MAX_IMAGES + 10 {
            std::fs::write(dir.join(format!("n{i}.fwi")), b"").unwrap();
        }
        assert_eq!(images_in(&dir).len(), MAX_IMAGES);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
