//! PID 1 from start to `exec`: set up, load modules, wait for the disk,
//! apply a pending update (then reboot into it), choose the slot with the
//! boot state, mount it and switch root. Every error ends in the
//! configured failure action (a halt instead of a reboot when the
//! configuration itself is broken: see `load_config`); nothing here
//! returns.

use std::convert::Infallible;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use updater::{BootDecision, FileStorage, Slot, StateArea};

use crate::config::{Action, BootMethod, Config, DeviceSpec, DEFAULT_PATH};
use crate::pid1::{self, Signals};
use crate::runinfo::RunInfo;
use crate::slotmount::open_disk;
use crate::switchroot::InitArgs;
use crate::{
    bootslot, devwait, efiboot, kexecboot, kmod, recovery, switchroot, tryboot, update, watchdog,
};

pub fn run(args: Vec<OsString>) -> ! {
    let kernel_env = pid1::take_environment();
    let (mut signals, problems) = pid1::setup("/dev/console");
    log!(
        "fwpack-updater {} starting as PID 1",
        env!("CARGO_PKG_VERSION")
    );
    for p in problems {
        log!("{p}");
    }
    let cfg = match load_config() {
        Ok(c) => c,
        Err(e) => {
            // Not even the disk is known: a reboot would meet the same
            // configuration again, forever.
            log!("configuration: {e}");
            log!("without a usable `target` there is nothing to boot; halting instead of rebooting into the same error");
            pid1::finish(Action::Halt)
        }
    };
    pid1::set_panic_action(cfg.on_failure);
    if let Some(l) = &cfg.bootstrap_label {
        log!("bootstrap {l}");
    }
    // The kernel passes unknown command-line words on to init; so do we.
    let init = InitArgs {
        args: args.into_iter().skip(1).collect(),
        env: pid1::init_env(&kernel_env, &cfg.init_env),
    };
    match boot(&cfg, &mut signals, &init) {
        Ok(never) => match never {},
        Err(e) => {
            log!("{e}");
            log!("cannot continue; on_failure = {}", cfg.on_failure.name());
            pid1::finish(cfg.on_failure)
        }
    }
}

/// The configuration with its command-line overrides; if either has an
/// error, the usable part of the file in safe mode (`Config::salvage`,
/// `Config::into_safe_mode`). `Err` only when no target is known.
fn load_config() -> Result<Config, String> {
    let text = std::fs::read_to_string(DEFAULT_PATH).map_err(|e| format!("{DEFAULT_PATH}: {e}"))?;
    const SAFE: &str = "safe mode: booting the active slot; no update is applied, the boot state is not changed, a failure halts";
    let cfg = match Config::parse(&text) {
        Ok((cfg, warnings)) => {
            for w in warnings {
                log!("{DEFAULT_PATH}: {w}");
            }
            cfg
        }
        Err(_) => {
            let (cfg, notes) =
                Config::salvage(&text).map_err(|e| format!("{DEFAULT_PATH}: {e}"))?;
            for n in notes {
                log!("{DEFAULT_PATH}: {n}");
            }
            log!("{SAFE}; settings with errors have their built-in defaults, the kernel command line is ignored");
            return Ok(cfg);
        }
    };
    let cmdline = crate::config::kernel_cmdline();
    // On a copy: a refused word must not leave the words before it applied.
    let mut with = cfg.clone();
    match with.apply_cmdline(&cmdline) {
        Ok(changed) => {
            for c in changed {
                log!("kernel command line overrides {c}");
            }
            Ok(with)
        }
        Err(e) => {
            log!("{e}");
            log!("{SAFE}; no fwpack.* override is used, {DEFAULT_PATH} is as built");
            Ok(cfg.into_safe_mode())
        }
    }
}

fn boot(cfg: &Config, signals: &mut Signals, init: &InitArgs) -> Result<Infallible, String> {
    if let Some(list) = &cfg.modules {
        match kmod::load_all(list) {
            Ok((ok, 0)) => log!("{ok} kernel modules ready"),
            Ok((ok, failed)) => log!("{ok} kernel modules ready, {failed} failed"),
            Err(e) => log!("{e}"),
        }
    }
    signals.act_on_request();
    let disk = devwait::wait(&cfg.target, cfg.device_timeout, signals)?;
    // Once the modules are loaded (a console's driver may be one of them)
    // and the disk is there: a disk named as the console is then refused
    // for what it is, not for being missing.
    if cfg.console != Path::new("/dev/console") {
        match pid1::attach_tty(&cfg.console.to_string_lossy()) {
            Ok(()) => log!("console: {}", cfg.console.display()),
            Err(e) => log!("console refused: {e}; staying on /dev/console"),
        }
    }
    let mut efi = cfg.efi_boot_entries.and_then(|e| {
        efiboot::Efi::start(e)
            .map_err(|e| log!("{e}; booting without the UEFI bootstrap A/B"))
            .ok()
    });
    // Booted by kexec for a slot (this initramfs is the slot kernel's own).
    let cmdline = crate::config::kernel_cmdline();
    if let Some(slot) = kexecboot::staged_slot(&cmdline) {
        return kexecboot::slot_stage(cfg, &disk, slot?, init);
    }

    match update::check_and_apply(cfg, &disk, signals, false) {
        Ok(update::Outcome::Nothing) => {}
        Ok(update::Outcome::Applied { slot, tries }) => {
            return reboot_into(cfg, slot, tries, signals)
        }
        // The running slot is untouched by a refused update: boot it.
        Err(e) => log!("{e}; booting the current slot"),
    }
    signals.act_on_request();

    let mut storage = open_disk(&disk)?;
    let mut area = StateArea::read(&mut storage, cfg.state_location())
        .map_err(|e| format!("state area of {}: {e}", disk.display()))?;
    let decision = match &cfg.tryboot {
        // Read only: no try is counted, nothing falls back.
        _ if cfg.safe_mode => BootDecision {
            slot: area.boot().active,
            trial: false,
            fell_back_from: None,
        },
        Some(tb) => tryboot_decision(tb, &mut area, &mut storage)?,
        None => match efi.as_mut() {
            Some(efi) => match efiboot::decide(efi, &mut area, &mut storage)? {
                efiboot::Next::Boot(d) => d,
                efiboot::Next::Reboot => pid1::finish(Action::Reboot),
            },
            None => area.boot_attempt(&mut storage).map_err(|e| e.to_string())?,
        },
    };
    if let Some(from) = decision.fell_back_from {
        log!(
            "slot {from} was tried and never confirmed; falling back to slot {}",
            decision.slot
        );
    }
    let info = area.boot().slot(decision.slot).clone();
    log!(
        "booting slot {} (version {} {}){}",
        decision.slot,
        info.version,
        info.label,
        if decision.trial {
            format!(
                ", trial: {} tries left after this one",
                area.boot().tries_left
            )
        } else {
            String::new()
        }
    );
    let layout = area.layout().clone();
    if let Some(b) = cfg.board.as_deref().filter(|b| *b != layout.board) {
        // Images are checked against the disk's board; this only flags a
        // mismatched build.
        log!(
            "warning: this initramfs was built for board `{b}`, the disk says `{}`",
            layout.board
        );
    }
    let group = layout
        .group(&cfg.root_group)
        .ok_or_else(|| {
            format!(
                "the layout has no slot group `{}` (root_group)",
                cfg.root_group
            )
        })?
        .clone();
    // The disk must not be held open (exclusively) while a partition of it
    // is mounted.
    drop(storage);

    let (mut slot, mut trial) =
        match bootslot::mount_chosen(cfg, &disk, &group, &mut area, decision.slot, decision.trial)?
        {
            bootslot::Chosen::Mounted(slot, trial) => (slot, trial),
            bootslot::Chosen::Recovery(why) => {
                let (slot, tries) = recovery::wait(cfg, &disk, signals, &why);
                return reboot_into(cfg, slot, tries, signals);
            }
        };
    // Left running into the trial slot (watchdog.rs); dropped without the
    // magic close.
    let mut wd = if trial {
        watchdog::Watchdog::arm(cfg, &format!("for the trial of slot {slot}"))
    } else {
        None
    };
    if cfg.boot == BootMethod::Kexec {
        // Returns only when the bootstrap cannot kexec (the slot mounted).
        (slot, trial) = kexecboot::boot(cfg, &disk, &group, &mut area, slot, trial)?;
        if !trial {
            // Fell back to the active slot under this kernel.
            if let Some(w) = wd.take() {
                w.disarm();
            }
        }
    }

    let info = RunInfo {
        target: disk.clone(),
        state_offset: cfg.state_offset,
        state_copy_distance: cfg.state_copy_distance,
        slot,
        trial,
        tryboot: cfg.tryboot.as_ref().map(|t| {
            let dev = match &t.autoboot {
                DeviceSpec::Path(p) => p.clone(),
                other => {
                    crate::blkid::resolve(other).unwrap_or_else(|| PathBuf::from(other.to_string()))
                }
            };
            (dev, t.fstype.clone(), t.partitions)
        }),
        max_rate: cfg.max_rate,
    };
    if let Err(e) = info.save(&cfg.keys, cfg.ca.as_deref()) {
        // Booting matters more than the convenience of mark-good defaults.
        log!("{e} (`fwpack-updater mark-good` will need --target and --slot)");
    }
    signals.act_on_request();
    log!("switching root to slot {slot}, running {}", cfg.init);
    switchroot::switch_root(&cfg.init, init)
}

/// After an update was applied to `slot` and made pending: reboot into it.
fn reboot_into(
    cfg: &Config,
    slot: Slot,
    tries: u8,
    signals: &mut Signals,
) -> Result<Infallible, String> {
    if let Some(tb) = &cfg.tryboot {
        prepare_tryboot(cfg, tb, slot, signals)?;
        log!("slot {slot} is pending; rebooting into it once with the firmware's tryboot flag");
        pid1::reboot_with_arg(c"0 tryboot");
    }
    log!("slot {slot} is pending ({tries} tries); rebooting into it");
    pid1::finish(Action::Reboot)
}

/// Before the tryboot reboot: autoboot.txt must send a tryboot to the new
/// slot's boot partition and a normal boot to the current one.
fn prepare_tryboot(
    cfg: &Config,
    tb: &crate::config::Tryboot,
    new: Slot,
    signals: &mut Signals,
) -> Result<(), String> {
    let dev = devwait::wait(&tb.autoboot, cfg.device_timeout, signals)?;
    let (cur, next) = (
        tb.partitions[new.other().index()],
        tb.partitions[new.index()],
    );
    tryboot::with_autoboot(&dev, &tb.fstype, |dir| {
        let text = tryboot::read(dir)?;
        let a = tryboot::parse(&text);
        if a.default == Some(cur) && a.tryboot == Some(next) && a.tryboot_a_b {
            return Ok(());
        }
        log!("autoboot.txt: default partition {cur}, tryboot partition {next}");
        tryboot::write_atomically(dir, &tryboot::rewrite(&text, cur, next)?)
    })
}

/// Slot choice on a tryboot board: the firmware already chose the boot
/// partition, so the root slot must match it.
fn tryboot_decision(
    tb: &crate::config::Tryboot,
    area: &mut StateArea,
    storage: &mut FileStorage,
) -> Result<BootDecision, String> {
    let Some(fw) = tryboot::firmware_boot() else {
        log!("no /proc/device-tree/chosen/bootloader (not booted by Raspberry Pi firmware?); using the boot-state record alone");
        return area.boot_attempt(storage).map_err(|e| e.to_string());
    };
    if tryboot::supports_tryboot_a_b(fw.capabilities) == Some(false) {
        log!("warning: this bootloader does not report the TRYBOOT_A_B capability");
    }
    let booted = tryboot::slot_of(tb.partitions, fw.partition).ok_or_else(|| {
        format!(
            "the firmware booted partition {}, which is neither slot's boot partition ({} / {})",
            fw.partition, tb.partitions[0], tb.partitions[1]
        )
    })?;
    log!(
        "firmware booted partition {} (slot {booted}){}",
        fw.partition,
        if fw.tryboot {
            " with the tryboot flag"
        } else {
            ""
        }
    );
    let err = |e: updater::Error| e.to_string();
    match tryboot::decide(area.boot(), booted, fw.tryboot) {
        tryboot::Decision::Boot(s) => Ok(BootDecision {
            slot: s,
            trial: false,
            fell_back_from: None,
        }),
        tryboot::Decision::Trial(_) => area.boot_attempt(storage).map_err(err),
        tryboot::Decision::FellBack { from, boot } => {
            area.fallback(storage).map_err(err)?;
            Ok(BootDecision {
                slot: boot,
                trial: false,
                fell_back_from: Some(from),
            })
        }
        tryboot::Decision::FinishCommit(s) => {
            log!("autoboot.txt already makes slot {s} the default; completing its confirmation");
            area.confirm(storage, s).map_err(err)?;
            Ok(BootDecision {
                slot: s,
                trial: false,
                fell_back_from: None,
            })
        }
        tryboot::Decision::Refuse(why) => Err(why),
    }
}
