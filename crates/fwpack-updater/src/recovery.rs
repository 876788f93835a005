//! Recovery: the active slot cannot be booted and the other one may not
//! be (it is below the rollback floor, and `fallback_below_floor` is
//! `refuse`). Booting it would be a rollback anyone could trigger by
//! breaking the new slot (the path AVB closes), so PID 1 boots nothing:
//! it says why on the console and in [`RECORD`], and looks for a signed
//! image at or above the floor in its configured sources (`images`: the
//! initramfs directory or a partition, which a technician can provide)
//! until one is applied to the inactive slot, then reboots into it.

use std::time::Duration;

use updater::Slot;

use crate::config::Config;
use crate::pid1::Signals;
use crate::update;

/// Next to the boot record: why this boot went into recovery. No slot is
/// booted, so the boot record itself is not written (it names a slot).
pub const RECORD: &str = "/run/fwpack/recovery";

/// How often the sources are looked at again.
const RESCAN: Duration = Duration::from_secs(10);
/// How often the reason is repeated on the console.
const REMIND_EVERY: u32 = 30;

/// Returns the slot an image was applied to (pending) and its tries.
pub fn wait(cfg: &Config, disk: &std::path::Path, signals: &mut Signals, why: &str) -> (Slot, u8) {
    let _ = std::fs::create_dir_all("/run/fwpack");
    if let Err(e) = std::fs::write(RECORD, format!("reason = {why}\n")) {
        log!("{RECORD}: {e}");
    }
    let sources = match &cfg.images {
        Some(crate::config::Images::Dir(d)) => d.display().to_string(),
        Some(crate::config::Images::Partition { device, dir, .. }) => format!("{device}:{dir}"),
        None => "nowhere (no `images` configured): only a reflash can help".into(),
    };
    let mut n: u32 = 0;
    loop {
        if n.is_multiple_of(REMIND_EVERY) {
            log!("RECOVERY: {why}");
            log!(
                "recovery: waiting for a signed image at or above the rollback floor in {sources}"
            );
        }
        signals.act_on_request();
        match update::check_and_apply(cfg, disk, signals, true) {
            Ok(update::Outcome::Applied { slot, tries }) => return (slot, tries),
            Ok(update::Outcome::Nothing) => {}
            Err(e) => log!("recovery: {e}"),
        }
        for _ in 0..RESCAN.as_secs() {
            signals.act_on_request();
            std::thread::sleep(Duration::from_secs(1));
        }
        n = n.wrapping_add(1);
    }
}
