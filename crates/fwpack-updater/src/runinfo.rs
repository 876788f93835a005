//! `/run/fwpack/boot.conf`: what the PID-1 updater decided, left for the
//! booted system (the tmpfs /run is moved into the new root). With it,
//! `fwpack-updater status` and `mark-good` need no arguments. The PID-1
//! updater also leaves a copy of itself at `/run/fwpack/fwpack-updater`,
//! so a root filesystem without the binary can still confirm itself.
//!
//! Same `key = value` syntax as updater.conf, read by the same parser
//! (`updater::keyvalue`: a repeated key is an error).

use std::path::{Path, PathBuf};

use updater::Slot;

pub const FILE: &str = updater::busy::BOOT_RECORD;
pub const BINARY: &str = "/run/fwpack/fwpack-updater";
/// Copies of the initramfs's trusted keys, for `apply` and `check` on the
/// running system (the initramfs is gone after switch_root).
pub const KEYS: &str = "/run/fwpack/keys";
/// A copy of updater.conf's `ca` bundle: the default `--ca` of `apply`
/// and `check` on the running system.
pub const CA: &str = "/run/fwpack/ca.pem";

/// Where commands look for the boot record: [`FILE`], or
/// `$FWPACK_BOOT_RECORD` (the library's running-slot check reads the same).
pub fn path() -> PathBuf {
    std::env::var_os("FWPACK_BOOT_RECORD")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(FILE), PathBuf::from)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    pub target: PathBuf,
    pub state_offset: u64,
    pub state_copy_distance: u64,
    pub slot: Slot,
    /// This boot is a trial of a pending slot.
    pub trial: bool,
    /// Tryboot: the autoboot.txt partition and the boot partitions of A and B.
    pub tryboot: Option<(PathBuf, String, [u32; 2])>,
    /// updater.conf's `max_rate`: the default `--max-rate` of `apply`
    /// and `check` on the running system.
    pub max_rate: Option<u64>,
}

impl RunInfo {
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "# written by the fwpack-updater PID 1 before switching root\ntarget = {}\nstate_offset = {}\nstate_copy_distance = {}\nslot = {}\ntrial = {}\n",
            self.target.display(),
            self.state_offset,
            self.state_copy_distance,
            self.slot,
            if self.trial { "yes" } else { "no" }
        );
        if let Some((dev, fstype, [a, b])) = &self.tryboot {
            s.push_str(&format!(
                "tryboot = {}\ntryboot_fstype = {fstype}\ntryboot_partitions = {a} {b}\n",
                dev.display()
            ));
        }
        if let Some(r) = self.max_rate {
            s.push_str(&format!("max_rate = {r}\n"));
        }
        s
    }

    pub fn parse(text: &str) -> Result<RunInfo, String> {
        let mut target = None;
        let mut state_offset = None;
        let mut state_copy_distance = updater::DEFAULT_STATE_COPY_DISTANCE;
        let mut slot = None;
        let mut trial = false;
        let mut max_rate = None;
        let (mut tb_dev, mut tb_fs, mut tb_parts) = (None, "vfat".to_string(), None);
        for p in updater::keyvalue::parse(text).strict()? {
            let v = p.value;
            match p.key {
                "target" => target = Some(PathBuf::from(v)),
                "state_offset" => {
                    state_offset = Some(
                        v.parse::<u64>()
                            .map_err(|_| format!("bad state_offset `{v}`"))?,
                    )
                }
                "state_copy_distance" => {
                    state_copy_distance = v
                        .parse::<u64>()
                        .map_err(|_| format!("bad state_copy_distance `{v}`"))?
                }
                "slot" => slot = Some(v.parse::<Slot>().map_err(|e| e.to_string())?),
                "trial" => trial = v == "yes",
                "max_rate" => {
                    max_rate = Some(
                        v.parse::<u64>()
                            .map_err(|_| format!("bad max_rate `{v}`"))?,
                    )
                    .filter(|&r| r > 0)
                }
                "tryboot" => tb_dev = Some(PathBuf::from(v)),
                "tryboot_fstype" => tb_fs = v.to_string(),
                "tryboot_partitions" => {
                    let n: Vec<u32> = v
                        .split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    if let [a, b] = n[..] {
                        tb_parts = Some([a, b]);
                    }
                }
                _ => {}
            }
        }
        Ok(RunInfo {
            target: target.ok_or("no target")?,
            state_offset: state_offset.ok_or("no state_offset")?,
            state_copy_distance,
            slot: slot.ok_or("no slot")?,
            trial,
            tryboot: match (tb_dev, tb_parts) {
                (Some(d), Some(p)) => Some((d, tb_fs, p)),
                _ => None,
            },
            max_rate,
        })
    }

    /// Reads [`path()`]; `None` if it is not there (not booted by fwpack).
    pub fn load() -> Option<Result<RunInfo, String>> {
        let p = path();
        let text = std::fs::read_to_string(&p).ok()?;
        Some(RunInfo::parse(&text).map_err(|e| format!("{}: {e}", p.display())))
    }

    /// Writes [`FILE`] and copies the running binary next to it.
    pub fn save(&self, keys: &Path, ca: Option<&Path>) -> Result<(), String> {
        std::fs::create_dir_all(KEYS).map_err(|e| format!("{KEYS}: {e}"))?;
        if let Some(ca) = ca {
            std::fs::copy(ca, CA).map_err(|e| format!("copying {} to {CA}: {e}", ca.display()))?;
        }
        for e in std::fs::read_dir(keys).into_iter().flatten().flatten() {
            let p = e.path();
            if matches!(p.extension().and_then(|x| x.to_str()), Some("pem" | "pub")) {
                if let Some(name) = p.file_name() {
                    std::fs::copy(&p, Path::new(KEYS).join(name))
                        .map_err(|e| format!("copying {} to {KEYS}: {e}", p.display()))?;
                }
            }
        }
        std::fs::write(FILE, self.to_text()).map_err(|e| format!("{FILE}: {e}"))?;
        let me = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("/init"));
        if Path::new(&me) != Path::new(BINARY) {
            std::fs::copy(&me, BINARY)
                .map_err(|e| format!("copying {} to {BINARY}: {e}", me.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        for (tryboot, max_rate) in [
            (None, None),
            (
                Some((PathBuf::from("/dev/mmcblk0p1"), "vfat".to_string(), [2, 3])),
                Some(1 << 20),
            ),
        ] {
            let r = RunInfo {
                target: "/dev/nvme0n1".into(),
                state_offset: 524288,
                state_copy_distance: 8 << 20,
                slot: Slot::B,
                trial: true,
                tryboot,
                max_rate,
            };
            assert_eq!(RunInfo::parse(&r.to_text()).unwrap(), r);
        }
        assert!(RunInfo::parse("target = /dev/x\n").is_err());
    }
}
