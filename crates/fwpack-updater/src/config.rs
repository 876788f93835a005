//! `/etc/fwpack/updater.conf`: line-based `key = value` (format in
//! docs/FORMAT.md, "Updater configuration"). Parsed by hand: the device
//! binary carries no YAML or serde.
//!
//! Unknown keys are warnings, not errors (a PID 1 that refuses to boot
//! over a typo'd optional key helps nobody); a malformed value of a known
//! key, a duplicate key or a missing `target` is an error. The syntax is
//! read by `updater::keyvalue`, the one parser of fwpack's `key = value`
//! files.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_PATH: &str = "/etc/fwpack/updater.conf";

/// The kernel command line (`/proc/cmdline`). At most 64 KiB of it are
/// read (the kernel's own limit is a few KiB; this reader does not lean
/// on it), and bytes that are not UTF-8 are replaced: one stray byte then
/// costs its own word (a `fwpack.*` word with one is refused: safe mode),
/// where `read_to_string` failed as a whole and every override, refusal
/// and the slot-stage marker went unseen.
pub fn kernel_cmdline() -> String {
    std::fs::File::open("/proc/cmdline").map_or_else(|_| String::new(), cmdline_text)
}

fn cmdline_text(r: impl Read) -> String {
    let mut b = Vec::new();
    let _ = r.take(64 << 10).read_to_end(&mut b);
    String::from_utf8_lossy(&b).into_owned()
}

/// A block device named by path or by an identifier resolved at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Path(PathBuf),
    /// GPT partition GUID or MBR `SSSSSSSS-PP`, compared case-insensitively.
    PartUuid(String),
    /// GPT partition name.
    PartLabel(String),
    /// Filesystem label (ext2/3/4, FAT).
    Label(String),
}

impl DeviceSpec {
    pub fn parse(v: &str) -> Result<DeviceSpec, String> {
        let nonempty = |s: &str, what: &str| {
            if s.is_empty() {
                Err(format!("{what}= needs a value"))
            } else {
                Ok(s.to_string())
            }
        };
        if let Some(u) = v.strip_prefix("PARTUUID=") {
            Ok(DeviceSpec::PartUuid(
                nonempty(u, "PARTUUID")?.to_ascii_lowercase(),
            ))
        } else if let Some(l) = v.strip_prefix("PARTLABEL=") {
            Ok(DeviceSpec::PartLabel(nonempty(l, "PARTLABEL")?))
        } else if let Some(l) = v.strip_prefix("LABEL=") {
            Ok(DeviceSpec::Label(nonempty(l, "LABEL")?))
        } else if v.starts_with("/dev/") && v.len() > 5 {
            Ok(DeviceSpec::Path(PathBuf::from(v)))
        } else {
            Err(format!(
                "`{v}` is not a device: use /dev/NAME, PARTUUID=…, PARTLABEL=… or LABEL=…"
            ))
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Path(p) => write!(f, "{}", p.display()),
            DeviceSpec::PartUuid(u) => write!(f, "PARTUUID={u}"),
            DeviceSpec::PartLabel(l) => write!(f, "PARTLABEL={l}"),
            DeviceSpec::Label(l) => write!(f, "LABEL={l}"),
        }
    }
}

/// What PID 1 does when it cannot go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Reboot,
    Halt,
    PowerOff,
}

impl Action {
    pub fn parse(v: &str) -> Result<Action, String> {
        match v {
            "reboot" => Ok(Action::Reboot),
            "halt" => Ok(Action::Halt),
            "poweroff" => Ok(Action::PowerOff),
            _ => Err(format!("`{v}`: expected reboot, halt or poweroff")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Reboot => "reboot",
            Action::Halt => "halt",
            Action::PowerOff => "poweroff",
        }
    }
}

/// Where update images come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Images {
    /// A directory (normally inside the initramfs): every `*.fwi` in it.
    Dir(PathBuf),
    /// A directory on a partition, mounted read-only for the check.
    Partition {
        device: DeviceSpec,
        fstype: String,
        dir: String,
    },
}

impl Images {
    fn parse(v: &str) -> Result<Images, String> {
        if v.starts_with('/') {
            return Ok(Images::Dir(PathBuf::from(v)));
        }
        // partition:<device>:<dir>[:<fstype>]
        let rest = v
            .strip_prefix("partition:")
            .ok_or_else(|| format!("`{v}`: expected /DIR or partition:DEVICE:/DIR[:FSTYPE]"))?;
        let mut parts = rest.splitn(2, ":/");
        let dev = parts.next().unwrap_or_default();
        let tail = parts
            .next()
            .ok_or_else(|| format!("`{v}`: expected partition:DEVICE:/DIR[:FSTYPE]"))?;
        let (dir, fstype) = match tail.rsplit_once(':') {
            Some((d, f)) if !f.is_empty() && !f.contains('/') => (format!("/{d}"), f.to_string()),
            _ => (format!("/{tail}"), "ext4".to_string()),
        };
        Ok(Images::Partition {
            device: DeviceSpec::parse(dev)?,
            fstype,
            dir,
        })
    }
}

/// How a slot's byte range becomes a mountable block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotDevice {
    /// The partition covering exactly that range if there is one, else a loop device.
    Auto,
    Partition,
    Loop,
}

/// How the chosen slot is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootMethod {
    /// Mount the slot and exec its init under the bootstrap kernel.
    SwitchRoot,
    /// Load the slot's own kernel from `/boot/fwpack/` and kexec into it.
    Kexec,
}

impl BootMethod {
    pub fn parse(v: &str) -> Result<BootMethod, String> {
        match v {
            "switch_root" => Ok(BootMethod::SwitchRoot),
            "kexec" => Ok(BootMethod::Kexec),
            _ => Err(format!("`{v}`: expected switch_root or kexec")),
        }
    }
}

/// Which device tree a kexec'd arm64 slot kernel gets (kexecboot.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KexecDtb {
    /// The live /sys/firmware/fdt with /chosen rewritten: keeps what the
    /// firmware fixed up.
    Firmware,
    /// The slot's own `/boot/fwpack/dtb`, with the live memory nodes and
    /// reservations carried over.
    Slot,
}

/// Raspberry Pi firmware A/B (autoboot.txt + tryboot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tryboot {
    /// The FAT partition holding autoboot.txt.
    pub autoboot: DeviceSpec,
    pub fstype: String,
    /// Boot partition numbers of slot A and slot B.
    pub partitions: [u32; 2],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub target: DeviceSpec,
    pub state_offset: u64,
    /// Distance from the state area's copy 0 to its copy 1.
    pub state_copy_distance: u64,
    /// Load-order file: absolute module paths, one per line.
    pub modules: Option<PathBuf>,
    pub keys: PathBuf,
    /// CA bundle (PEM) for https sources, copied to /run/fwpack for the
    /// running system's `apply`/`check` (default there: the system's).
    pub ca: Option<PathBuf>,
    /// Cap on fetch bandwidth in bytes per second, passed on to the
    /// running system's `apply` like `ca`; `None`: no cap.
    pub max_rate: Option<u64>,
    pub images: Option<Images>,
    pub device_timeout: Duration,
    pub on_failure: Action,
    /// Slot group holding the root filesystem.
    pub root_group: String,
    pub root_fstype: String,
    /// Filesystem-specific mount data (`-o` minus the generic flags).
    pub root_flags: String,
    pub init: String,
    pub console: PathBuf,
    pub tries: u8,
    pub slot_device: SlotDevice,
    pub verify_writes: bool,
    /// Expected board (checked against the layout record and images).
    pub board: Option<String>,
    pub tryboot: Option<Tryboot>,
    /// UEFI A/B of the bootstrap (efiboot.rs): the `Boot####` numbers of
    /// slot A's and slot B's bootstrap entries.
    pub efi_boot_entries: Option<[u16; 2]>,
    /// Printed at start, so a console says which bootstrap build runs
    /// (the build writes the image's version label).
    pub bootstrap_label: Option<String>,
    /// Protected keys ([`PROTECTED`]) the kernel command line may override
    /// anyway (`cmdline_overrides`); `None`: no overrides at all.
    pub cmdline_overrides: Option<Vec<String>>,
    /// Not a key: the configuration had errors, so this boot only boots
    /// the active slot ([`Config::into_safe_mode`]).
    pub safe_mode: bool,
    pub boot: BootMethod,
    /// `panic=N` on a kexec'd slot kernel's command line: a slot kernel
    /// that panics reboots after N seconds, and the next boot counts the
    /// try.
    pub kexec_panic: u32,
    /// May an active slot that cannot be booted give way to the other
    /// slot when that one is below the rollback floor? (`refuse`: the
    /// bootstrap waits in recovery instead.)
    pub fallback_below_floor: updater::FallbackBelowFloor,
    /// Hardware watchdog armed before a trial boot (watchdog.rs); `None`:
    /// none.
    pub watchdog: Option<PathBuf>,
    /// Its timeout.
    pub watchdog_timeout: Duration,
    pub kexec_dtb: KexecDtb,
    /// Names of variables the kernel put in PID 1's environment (unknown
    /// `KEY=value` words of its command line) that are passed on to the
    /// slot's init; nothing else from there is ([`crate::pid1::take_environment`]).
    pub init_env: Vec<String>,
}

/// Keys the kernel command line may not override unless
/// `cmdline_overrides` names them: whoever can edit the command line (a
/// FAT `cmdline.txt`, a bootloader prompt) could otherwise choose the disk
/// that is written, trust their own keys and so apply images they signed,
/// load other kernel modules, or start another init as root.
pub const PROTECTED: &[&str] = &[
    "target",
    "state_offset",
    "state_copy_distance",
    "modules",
    "keys",
    "ca",
    "images",
    "init",
    "board",
    "fallback_below_floor",
];

/// Every key the parser knows (for the unknown-key warning).
const KEYS: &[&str] = &[
    "target",
    "state_offset",
    "modules",
    "keys",
    "images",
    "device_timeout",
    "on_failure",
    "root_group",
    "root_fstype",
    "root_flags",
    "init",
    "console",
    "tries",
    "slot_device",
    "verify_writes",
    "board",
    "tryboot",
    "tryboot_fstype",
    "tryboot_partitions",
    "efi_boot_entries",
    "bootstrap_label",
    "state_copy_distance",
    "cmdline_overrides",
    "boot",
    "kexec_panic",
    "ca",
    "max_rate",
    "fallback_below_floor",
    "watchdog",
    "watchdog_timeout",
    "init_env",
    "kexec_dtb",
    // Read by `fwpack-updater fleet` on the running system (fleet.rs).
    "fleet_server",
    "fleet_tenant",
    "fleet_controller_id",
    "fleet_target_token",
    "fleet_gateway_token",
    "fleet_ca",
    "fleet_pin",
    "fleet_poll_min",
    "fleet_poll_max",
    "fleet_max_rate",
    "fleet_state_dir",
    "fleet_confirm",
    "fleet_reboot",
    "fleet_tries",
];

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "yes" | "true" | "1" | "on" => Ok(true),
        "no" | "false" | "0" | "off" => Ok(false),
        _ => Err(format!("`{v}`: expected yes or no")),
    }
}

/// A size or offset: decimal bytes, optional K/M/G (binary) suffix.
pub fn parse_size(v: &str) -> Result<u64, String> {
    let (num, mul) = match v.as_bytes().last() {
        Some(b'K' | b'k') => (&v[..v.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&v[..v.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("`{v}`: expected a byte count like 524288 or 512K"))
}

/// `cmdline_overrides`: `none`, or protected keys (space or comma
/// separated) the command line may override as well.
fn parse_overrides(v: &str) -> Result<Option<Vec<String>>, String> {
    if v == "none" {
        return Ok(None);
    }
    let mut out = Vec::new();
    for k in v
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        if !PROTECTED.contains(&k) {
            return Err(format!(
                "`{k}` is not a protected key ({}); other keys need no permission, tryboot* and cmdline_overrides are never overridable",
                PROTECTED.join(", ")
            ));
        }
        out.push(k.to_string());
    }
    Ok(Some(out))
}

/// `init_env`: environment variable names, space or comma separated.
fn parse_env_names(v: &str) -> Result<Vec<String>, String> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|n| {
            let ok = n.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
                && !n.starts_with(|c: char| c.is_ascii_digit());
            if ok {
                Ok(n.to_string())
            } else {
                Err(format!("`{n}` is not an environment variable name"))
            }
        })
        .collect()
}

fn parse_seconds(v: &str) -> Result<Duration, String> {
    let s = v.strip_suffix('s').unwrap_or(v);
    match s.parse::<u32>() {
        Ok(n) if n > 0 && n <= 3600 => Ok(Duration::from_secs(u64::from(n))),
        _ => Err(format!("`{v}`: expected seconds, 1..=3600")),
    }
}

/// Everything one reading of the file found.
struct Parsed {
    config: Config,
    warnings: Vec<String>,
    /// In file order; the missing-target error last.
    errors: Vec<String>,
    have_target: bool,
}

impl Config {
    /// Parses the file's text; returns the config and warnings, or the
    /// first error.
    pub fn parse(text: &str) -> Result<(Config, Vec<String>), String> {
        let p = Self::parse_all(text);
        match p.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok((p.config, p.warnings)),
        }
    }

    /// For a file that does not parse: every line that does, the built-in
    /// default for every other key, in [safe mode](Self::into_safe_mode).
    /// Returns it with all errors and warnings, or why nothing can be
    /// booted (no usable `target`: there is no disk to boot from).
    pub fn salvage(text: &str) -> Result<(Config, Vec<String>), String> {
        let p = Self::parse_all(text);
        if !p.have_target {
            return Err(p.errors.join("; "));
        }
        let mut notes = p.errors;
        notes.extend(p.warnings);
        Ok((p.config.into_safe_mode(), notes))
    }

    /// What a boot with a broken configuration may do: boot the active
    /// slot and nothing else. No update is applied (`images` off), the
    /// boot state is not written (`safe_mode`, see flow.rs), and a failure
    /// halts instead of rebooting (a reboot would meet the same
    /// configuration again, forever).
    pub fn into_safe_mode(mut self) -> Config {
        self.images = None;
        self.safe_mode = true;
        if self.on_failure == Action::Reboot {
            self.on_failure = Action::Halt;
        }
        self
    }

    fn parse_all(text: &str) -> Parsed {
        let mut c = Config {
            target: DeviceSpec::Path(PathBuf::new()),
            state_offset: updater::DEFAULT_STATE_OFFSET,
            state_copy_distance: updater::DEFAULT_STATE_COPY_DISTANCE,
            modules: None,
            keys: PathBuf::from("/etc/fwpack/keys"),
            ca: None,
            max_rate: None,
            images: None,
            device_timeout: Duration::from_secs(30),
            on_failure: Action::Reboot,
            root_group: "system".into(),
            root_fstype: "ext4".into(),
            root_flags: String::new(),
            init: "/sbin/init".into(),
            console: PathBuf::from("/dev/console"),
            tries: 3,
            slot_device: SlotDevice::Auto,
            verify_writes: true,
            board: None,
            tryboot: None,
            efi_boot_entries: None,
            bootstrap_label: None,
            cmdline_overrides: Some(Vec::new()),
            safe_mode: false,
            boot: BootMethod::SwitchRoot,
            kexec_panic: 5,
            fallback_below_floor: updater::FallbackBelowFloor::Refuse,
            watchdog: None,
            watchdog_timeout: Duration::from_secs(60),
            kexec_dtb: KexecDtb::Firmware,
            init_env: Vec::new(),
        };
        let mut warnings = Vec::new();
        let mut have_target = false;
        let mut tryboot_dev = None;
        let mut tryboot_fstype = "vfat".to_string();
        let mut tryboot_parts = None;
        let parsed = updater::keyvalue::parse(text);
        let mut errors = parsed.errors;
        for updater::keyvalue::Pair {
            line: n,
            key: k,
            value: v,
        } in parsed.pairs
        {
            let at = |e: String| format!("line {n}: {k}: {e}");
            // A bad value leaves the key at its default (and is an error).
            let r: Result<(), String> = (|| {
                match k {
                    "target" => {
                        c.target = DeviceSpec::parse(v).map_err(at)?;
                        have_target = true;
                    }
                    "tryboot" => {
                        if v != "off" {
                            tryboot_dev = Some(DeviceSpec::parse(v).map_err(at)?);
                        }
                    }
                    "tryboot_fstype" => tryboot_fstype = v.to_string(),
                    "init_env" => c.init_env = parse_env_names(v).map_err(at)?,
                    "cmdline_overrides" => {
                        c.cmdline_overrides = parse_overrides(v).map_err(at)?;
                    }
                    "tryboot_partitions" => {
                        let nums: Vec<u32> = v
                            .split(|c: char| c == ',' || c.is_whitespace())
                            .filter(|s| !s.is_empty())
                            .map(|s| {
                                s.parse::<u32>()
                                    .map_err(|_| format!("`{s}` is not a partition number"))
                            })
                            .collect::<Result<_, _>>()
                            .map_err(at)?;
                        match nums[..] {
                            [a, b] if a != b && (1..=63).contains(&a) && (1..=63).contains(&b) => {
                                tryboot_parts = Some([a, b])
                            }
                            _ => {
                                return Err(at(
                                    "expected two different partition numbers (slot A, slot B)"
                                        .into(),
                                ))
                            }
                        }
                    }
                    _ => c.set(k, v).map_err(at)?,
                }
                Ok(())
            })();
            if let Err(e) = r {
                errors.push(e);
                continue;
            }
            if !KEYS.contains(&k) {
                warnings.push(format!("line {n}: unknown key `{k}` ignored"));
            }
        }
        c.tryboot = match (tryboot_dev, tryboot_parts) {
            (Some(autoboot), Some(partitions)) => Some(Tryboot {
                autoboot,
                fstype: tryboot_fstype,
                partitions,
            }),
            (None, None) => None,
            (Some(_), None) => {
                errors.push(
                    "tryboot needs tryboot_partitions (boot partitions of slots A and B)".into(),
                );
                None
            }
            (None, Some(_)) => {
                errors
                    .push("tryboot_partitions without tryboot (the autoboot.txt partition)".into());
                None
            }
        };
        if !have_target {
            errors.push("no `target` (the disk holding the state area and the slots)".into());
        }
        Parsed {
            config: c,
            warnings,
            errors,
            have_target,
        }
    }

    /// Sets one key from its text value (shared by the file and `fwpack.KEY=` overrides).
    fn set(&mut self, k: &str, v: &str) -> Result<(), String> {
        let path = |v: &str| {
            if v.starts_with('/') {
                Ok(PathBuf::from(v))
            } else {
                Err(format!("`{v}` is not an absolute path"))
            }
        };
        let word = |v: &str| {
            if !v.is_empty()
                && v.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.+".contains(&c))
            {
                Ok(v.to_string())
            } else {
                Err(format!("`{v}`: expected a name (letters, digits, - _ . +)"))
            }
        };
        match k {
            "target" => self.target = DeviceSpec::parse(v)?,
            "state_offset" => self.state_offset = parse_size(v)?,
            "state_copy_distance" => self.state_copy_distance = parse_size(v)?,
            "modules" => self.modules = if v.is_empty() { None } else { Some(path(v)?) },
            "keys" => self.keys = path(v)?,
            "ca" => {
                self.ca = if v.is_empty() || v == "none" {
                    None
                } else {
                    Some(path(v)?)
                }
            }
            "max_rate" => {
                self.max_rate = if v.is_empty() || v == "none" {
                    None
                } else {
                    Some(parse_size(v)?).filter(|&r| r > 0)
                }
            }
            "images" => {
                self.images = if v.is_empty() || v == "none" {
                    None
                } else {
                    Some(Images::parse(v)?)
                }
            }
            "device_timeout" => self.device_timeout = parse_seconds(v)?,
            "on_failure" => self.on_failure = Action::parse(v)?,
            "root_group" => self.root_group = word(v)?,
            "root_fstype" => self.root_fstype = word(v)?,
            "root_flags" => {
                if v.contains(char::is_whitespace) {
                    return Err(format!(
                        "`{v}`: mount options are comma-separated, without spaces"
                    ));
                }
                // The kernel reads `rw` in mount data as clearing the
                // superblock's read-only flag: the slot's filesystem would
                // write its superblock and journal though the mount is
                // read-only. A quote would swallow the words after
                // `rootflags=` on a kexec'd kernel's command line.
                if v.split(',').any(|o| o == "rw") || v.contains('"') {
                    return Err(format!(
                        "`{v}`: the slot is mounted read-only (no rw, no quotes)"
                    ));
                }
                self.root_flags = v.to_string();
            }
            "init" => self.init = path(v)?.to_string_lossy().into_owned(),
            "console" => self.console = path(v)?,
            "tries" => {
                self.tries = match v.parse::<u8>() {
                    Ok(t) if t >= 1 => t,
                    _ => return Err(format!("`{v}`: expected 1..=255")),
                }
            }
            "slot_device" => {
                self.slot_device = match v {
                    "auto" => SlotDevice::Auto,
                    "partition" => SlotDevice::Partition,
                    "loop" => SlotDevice::Loop,
                    _ => return Err(format!("`{v}`: expected auto, partition or loop")),
                }
            }
            "verify_writes" => self.verify_writes = parse_bool(v)?,
            "boot" => self.boot = BootMethod::parse(v)?,
            "fallback_below_floor" => {
                self.fallback_below_floor = v.parse().map_err(|e: updater::Error| e.to_string())?
            }
            // Only the names the kernel gives watchdogs in devtmpfs: every
            // ping writes to the device, and `fwpack.watchdog=` could
            // otherwise name a disk (its first sectors).
            "watchdog" => {
                self.watchdog = match v.strip_prefix("/dev/watchdog") {
                    _ if v == "none" => None,
                    Some(n) if n.bytes().all(|c| c.is_ascii_digit()) => Some(v.into()),
                    _ => return Err(format!("`{v}`: expected /dev/watchdog[N] or none")),
                }
            }
            "watchdog_timeout" => self.watchdog_timeout = parse_seconds(v)?,
            "efi_boot_entries" => {
                let n: Vec<u16> = v
                    .split_whitespace()
                    .map(|e| u16::from_str_radix(e, 16))
                    .collect::<Result<_, _>>()
                    .map_err(|_| {
                        format!("`{v}`: expected two hex Boot#### numbers (slot A's, slot B's)")
                    })?;
                self.efi_boot_entries = match n.as_slice() {
                    [a, b] if a != b => Some([*a, *b]),
                    _ => {
                        return Err(format!(
                        "`{v}`: expected two different hex Boot#### numbers (slot A's, slot B's)"
                    ))
                    }
                }
            }
            "bootstrap_label" => {
                if v.len() > 64 || v.chars().any(char::is_control) {
                    return Err(format!("`{v}`: at most 64 characters"));
                }
                self.bootstrap_label = Some(v.to_string());
            }
            "kexec_dtb" => {
                self.kexec_dtb = match v {
                    "firmware" => KexecDtb::Firmware,
                    "slot" => KexecDtb::Slot,
                    _ => return Err(format!("`{v}`: expected firmware or slot")),
                }
            }
            "kexec_panic" => {
                self.kexec_panic = match v.parse::<u32>() {
                    Ok(n) if (1..=3600).contains(&n) => n,
                    _ => {
                        return Err(format!(
                        "`{v}`: expected seconds, 1..=3600 (a slot kernel that panics must reboot)"
                    ))
                    }
                }
            }
            "board" => {
                if v.is_empty()
                    || v.len() > 64
                    || v.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(format!("`{v}`: expected the board's compatible string (1..=64 characters, no spaces)"));
                }
                self.board = Some(v.to_string());
            }
            // Unknown keys are reported by the caller.
            _ => {}
        }
        Ok(())
    }

    /// Where the state area is.
    pub fn state_location(&self) -> updater::StateLocation {
        updater::StateLocation::new(self.state_offset, self.state_copy_distance)
    }

    /// Applies `fwpack.KEY=VALUE` words of the kernel command line (for
    /// debugging a board without rebuilding its initramfs). Returns what
    /// was changed, for the log. Protected keys need `cmdline_overrides`;
    /// a refused word is an error (the boot stops with a clear message
    /// rather than silently running with settings nobody asked for).
    pub fn apply_cmdline(&mut self, cmdline: &str) -> Result<Vec<String>, String> {
        let mut changed = Vec::new();
        for word in cmdline.split_whitespace() {
            let Some((k, v)) = word.strip_prefix("fwpack.").and_then(|w| w.split_once('=')) else {
                continue;
            };
            // The kexec slot marker (kexecboot.rs), not a setting.
            if k == "slot" {
                continue;
            }
            // What reaches the environment is the build's choice alone:
            // the command line is what it protects against.
            if !KEYS.contains(&k)
                || k.starts_with("tryboot")
                || k == "efi_boot_entries"
                || k == "cmdline_overrides"
                || k == "init_env"
            {
                return Err(format!(
                    "kernel command line: `fwpack.{k}` is not a setting that can be overridden"
                ));
            }
            let Some(allowed) = &self.cmdline_overrides else {
                return Err(format!(
                    "kernel command line: `fwpack.{k}`: updater.conf has `cmdline_overrides = none`"
                ));
            };
            if PROTECTED.contains(&k) && !allowed.iter().any(|a| a == k) {
                return Err(format!(
                    "kernel command line: `fwpack.{k}` is protected; updater.conf must list it in `cmdline_overrides` to allow this"
                ));
            }
            self.set(k, v)
                .map_err(|e| format!("kernel command line: fwpack.{k}: {e}"))?;
            changed.push(format!("{k}={v}"));
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "\
# generated by fwpack build for qemu-x86_64
target = /dev/nvme0n1
state_offset = 512K
state_copy_distance = 8M
modules = /etc/fwpack/modules.load
keys = /etc/fwpack/keys
images = /images
device_timeout = 20
on_failure = halt
root_group = system
root_fstype = ext4
root_flags = noload
init = /sbin/init
tries = 2
slot_device = loop
verify_writes = no
board = qemu-x86_64
";

    #[test]
    fn full_file() {
        let (c, w) = Config::parse(FULL).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.target, DeviceSpec::Path("/dev/nvme0n1".into()));
        assert_eq!(c.state_offset, 524288);
        assert_eq!(c.state_copy_distance, 8 << 20);
        assert_eq!(
            c.modules.as_deref(),
            Some(std::path::Path::new("/etc/fwpack/modules.load"))
        );
        assert_eq!(c.images, Some(Images::Dir("/images".into())));
        assert_eq!(c.device_timeout, Duration::from_secs(20));
        assert_eq!(c.on_failure, Action::Halt);
        assert_eq!(c.root_flags, "noload");
        assert_eq!(
            (c.tries, c.slot_device, c.verify_writes),
            (2, SlotDevice::Loop, false)
        );
        assert_eq!(c.board.as_deref(), Some("qemu-x86_64"));
        assert!(c.tryboot.is_none());
        assert_eq!(c.boot, BootMethod::SwitchRoot);
    }

    #[test]
    fn boot_method() {
        let (c, _) = Config::parse("target = /dev/vda\nboot = kexec\nkexec_panic = 3\n").unwrap();
        assert_eq!((c.boot, c.kexec_panic), (BootMethod::Kexec, 3));
        let (c, _) = Config::parse("target = /dev/vda\n").unwrap();
        assert_eq!((c.boot, c.kexec_panic), (BootMethod::SwitchRoot, 5));
        for bad in ["boot = chainload", "kexec_panic = 0", "kexec_panic = -1"] {
            let e = Config::parse(&format!("target = /dev/vda\n{bad}\n")).unwrap_err();
            assert!(e.contains("line 2"), "{bad}: {e}");
        }
    }

    #[test]
    fn efi_boot_entries_and_bootstrap_label() {
        let (c, w) = Config::parse(
            "target = /dev/nvme0n1\nefi_boot_entries = 000A 000b\nbootstrap_label = v2 (2026)\n",
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.efi_boot_entries, Some([0x000A, 0x000B]));
        assert_eq!(c.bootstrap_label.as_deref(), Some("v2 (2026)"));
        for bad in [
            "000A",
            "000A 000A",
            "000A 000B 000C",
            "xyz 000B",
            "10000 000B",
        ] {
            let text = format!("target = /dev/vda\nefi_boot_entries = {bad}\n");
            assert!(Config::parse(&text).is_err(), "{bad}");
        }
        let mut c = Config::parse("target = /dev/vda\ncmdline_overrides = images\n")
            .unwrap()
            .0;
        assert!(c
            .apply_cmdline("fwpack.efi_boot_entries=0001,0002")
            .is_err());
    }

    #[test]
    fn floor_and_watchdog() {
        use updater::FallbackBelowFloor as F;
        let (c, _) = Config::parse("target = /dev/vda\n").unwrap();
        assert_eq!(
            (c.fallback_below_floor, c.watchdog.is_none()),
            (F::Refuse, true)
        );
        let (c, _) = Config::parse(
            "target = /dev/vda\nfallback_below_floor = allow\nwatchdog = /dev/watchdog0\nwatchdog_timeout = 30\n",
        )
        .unwrap();
        assert_eq!(c.fallback_below_floor, F::Allow);
        assert_eq!(
            c.watchdog.as_deref(),
            Some(std::path::Path::new("/dev/watchdog0"))
        );
        assert_eq!(c.watchdog_timeout, Duration::from_secs(30));
        assert_eq!(c.kexec_dtb, KexecDtb::Firmware);
        let (c, _) = Config::parse("target = /dev/vda\nkexec_dtb = slot\n").unwrap();
        assert_eq!(c.kexec_dtb, KexecDtb::Slot);
        assert!(Config::parse("target = /dev/vda\nkexec_dtb = both\n").is_err());
        for bad in [
            "fallback_below_floor = yes",
            "watchdog_timeout = 0",
            "watchdog = rel",
        ] {
            assert!(
                Config::parse(&format!("target = /dev/vda\n{bad}\n")).is_err(),
                "{bad}"
            );
        }
        // Allowing a rollback is not the command line's to decide.
        let (mut c, _) = Config::parse("target = /dev/vda\n").unwrap();
        assert!(c
            .apply_cmdline("fwpack.fallback_below_floor=allow")
            .is_err());
    }

    #[test]
    fn defaults_and_minimal() {
        let (c, _) = Config::parse("target=PARTUUID=ABCD-01\n").unwrap();
        assert_eq!(c.target, DeviceSpec::PartUuid("abcd-01".into()));
        assert_eq!(
            (c.tries, c.on_failure, c.init.as_str()),
            (3, Action::Reboot, "/sbin/init")
        );
        assert_eq!(c.state_offset, updater::DEFAULT_STATE_OFFSET);
        assert_eq!(c.state_copy_distance, updater::DEFAULT_STATE_COPY_DISTANCE);
        assert!(c.images.is_none() && c.modules.is_none());
    }

    #[test]
    fn errors_name_the_line() {
        for (text, want) in [
            ("target = /dev/vda\ntries = 0\n", "line 2: tries"),
            (
                "target = /dev/vda\ntarget = /dev/vdb\n",
                "already set on line 1",
            ),
            ("target = vda\n", "not a device"),
            ("images = /i\n", "no `target`"),
            ("target = /dev/vda\non_failure = explode\n", "line 2"),
            ("target = /dev/vda\njust words\n", "expected `key = value`"),
            ("target = /dev/vda\ndevice_timeout = 0\n", "device_timeout"),
            (
                "target = /dev/vda\ntryboot = /dev/mmcblk0p1\n",
                "tryboot_partitions",
            ),
            (
                "target = /dev/vda\ntryboot = LABEL=AB\ntryboot_partitions = 2 2\n",
                "two different",
            ),
            ("target = /dev/vda\nroot_flags = a b\n", "comma-separated"),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_broken_file_is_salvaged_into_safe_mode() {
        let text = "target = /dev/nvme0n1\n\
                    modules = /etc/fwpack/modules.load\n\
                    images = /images\n\
                    tries = 0\n\
                    root_fstype = ext4 with spaces\n\
                    just words\n\
                    init = /sbin/init\n\
                    init = /bin/sh\n\
                    state_offset = 1M\n\
                    tryboot = /dev/mmcblk0p1\n\
                    future_knob = 1\n";
        assert!(Config::parse(text).is_err());
        let (c, notes) = Config::salvage(text).unwrap();
        // Good lines are kept, bad ones have their defaults.
        assert_eq!(c.target, DeviceSpec::Path("/dev/nvme0n1".into()));
        assert_eq!(c.state_offset, 1 << 20);
        assert!(c.modules.is_some());
        assert_eq!((c.tries, c.root_fstype.as_str()), (3, "ext4"));
        assert_eq!(c.init, "/sbin/init", "the first of a duplicate counts");
        assert!(c.tryboot.is_none());
        // Safe mode: no update, no boot-state writes, no reboot loop.
        assert!(c.safe_mode && c.images.is_none());
        assert_eq!(c.on_failure, Action::Halt);
        for want in [
            "line 4: tries",
            "line 5: root_fstype",
            "line 6: expected `key = value`",
            "line 8: `init` already set on line 7",
            "tryboot needs tryboot_partitions",
            "line 11: unknown key",
        ] {
            assert!(notes.iter().any(|n| n.contains(want)), "{want}: {notes:?}");
        }
        // A configured halt or power-off stays what it was.
        let (c, _) =
            Config::salvage("target = /dev/vda\non_failure = poweroff\ntries = x\n").unwrap();
        assert_eq!(c.on_failure, Action::PowerOff);
        // A good file with safe mode applied (a bad command-line override).
        let (c, _) = Config::parse(FULL).unwrap();
        let c = c.into_safe_mode();
        assert!(c.safe_mode && c.images.is_none());
        assert_eq!(c.on_failure, Action::Halt);
    }

    #[test]
    fn without_a_target_nothing_is_salvaged() {
        for text in [
            "images = /i\n",
            "target = vda\n",
            "target = /dev/vda\ntarget = /dev/vdb\n",
        ] {
            let r = Config::salvage(text);
            if text.contains("vdb") {
                // The first target counts; the duplicate is only an error.
                assert_eq!(r.unwrap().0.target, DeviceSpec::Path("/dev/vda".into()));
            } else {
                let e = r.unwrap_err();
                assert!(e.contains("no `target`"), "{text:?}: {e}");
            }
        }
    }

    #[test]
    fn unknown_keys_warn() {
        let (_, w) = Config::parse("target = /dev/vda\nfuture_knob = 1\n").unwrap();
        assert_eq!(
            w,
            vec!["line 2: unknown key `future_knob` ignored".to_string()]
        );
    }

    #[test]
    fn tryboot_and_partition_images() {
        let (c, _) = Config::parse(
            "target = /dev/mmcblk0\ntryboot = /dev/mmcblk0p1\ntryboot_partitions = 2,3\nimages = partition:LABEL=data:/updates:vfat\n",
        )
        .unwrap();
        assert_eq!(
            c.tryboot,
            Some(Tryboot {
                autoboot: DeviceSpec::Path("/dev/mmcblk0p1".into()),
                fstype: "vfat".into(),
                partitions: [2, 3]
            })
        );
        assert_eq!(
            c.images,
            Some(Images::Partition {
                device: DeviceSpec::Label("data".into()),
                fstype: "vfat".into(),
                dir: "/updates".into()
            })
        );
        let (c, _) =
            Config::parse("target = /dev/vda\nimages = partition:/dev/vda3:/fw\n").unwrap();
        assert_eq!(
            c.images,
            Some(Images::Partition {
                device: DeviceSpec::Path("/dev/vda3".into()),
                fstype: "ext4".into(),
                dir: "/fw".into()
            })
        );
    }

    #[test]
    fn hostile_kernel_command_lines() {
        // Non-UTF-8: the other words still count, the bad one is refused.
        let t = cmdline_text(&b"quiet \xff\xfe fwpack.tries=1"[..]);
        let (mut c, _) = Config::parse("target = /dev/vda\n").unwrap();
        assert_eq!(c.apply_cmdline(&t).unwrap(), vec!["tries=1"]);
        let t = cmdline_text(&b"fwpack.tries=\xff1"[..]);
        assert!(c.apply_cmdline(&t).is_err());
        // Bounded, whatever /proc says.
        let big = std::io::repeat(b'x').take(1 << 30);
        assert_eq!(cmdline_text(big).len(), 64 << 10);
        // NUL, quotes, empty values, repeats, overflowing numbers.
        for bad in [
            "fwpack.tries=1\0",
            "fwpack.tries=\"2\"",
            "fwpack.tries=",
            "fwpack.tries=256",
            "fwpack.device_timeout=18446744073709551616",
            "fwpack.device_timeout=-1",
            "fwpack.device_timeout=0x10",
            "fwpack.device_timeout=0",
            "fwpack.device_timeout=9223372036854775808",
            "fwpack.kexec_panic=0",
            "fwpack.console=../dev/vda",
            "fwpack.unknown=1",
            "fwpack.=1",
        ] {
            assert!(c.clone().apply_cmdline(bad).is_err(), "{bad:?}");
        }
        // The last of repeated words wins, as in the kernel.
        c.apply_cmdline("fwpack.tries=3 fwpack.tries=4").unwrap();
        assert_eq!(c.tries, 4);
    }

    #[test]
    fn cmdline_overrides() {
        let (mut c, _) = Config::parse("target = /dev/vda\n").unwrap();
        let changed = c
            .apply_cmdline(
                "console=ttyS0 fwpack.tries=1 quiet fwpack.on_failure=poweroff root=/dev/x",
            )
            .unwrap();
        assert_eq!(changed, vec!["tries=1", "on_failure=poweroff"]);
        assert_eq!((c.tries, c.on_failure), (1, Action::PowerOff));
        assert!(c.apply_cmdline("fwpack.bogus=1").is_err());
        // Not protected, but no override may make the slot writable.
        for w in [
            "fwpack.root_flags=rw",
            "fwpack.root_flags=noload,rw",
            "fwpack.root_flags=\"x",
        ] {
            assert!(c.apply_cmdline(w).is_err(), "{w}");
        }
        assert!(c.apply_cmdline("fwpack.root_flags=noload,ro").is_ok());
        for w in [
            "/dev/vda",
            "/dev/watchdog/../vda",
            "/run/x",
            "/dev/watchdog0x",
        ] {
            assert!(
                c.apply_cmdline(&format!("fwpack.watchdog={w}")).is_err(),
                "{w}"
            );
        }
        for w in ["/dev/watchdog", "/dev/watchdog1", "none"] {
            assert!(
                c.apply_cmdline(&format!("fwpack.watchdog={w}")).is_ok(),
                "{w}"
            );
        }
        assert!(c.apply_cmdline("fwpack.tries=x").is_err());
    }

    #[test]
    fn ca_bundle_key() {
        let (c, _) = Config::parse("target = /dev/vda\n").unwrap();
        assert_eq!(c.ca, None);
        let (c, _) = Config::parse("target = /dev/vda\nca = /etc/fwpack/ca.pem\n").unwrap();
        assert_eq!(
            c.ca.as_deref(),
            Some(std::path::Path::new("/etc/fwpack/ca.pem"))
        );
        let (c, _) = Config::parse("target = /dev/vda\nca = none\n").unwrap();
        assert_eq!(c.ca, None);
        assert!(Config::parse("target = /dev/vda\nca = ca.pem\n").is_err());
    }

    #[test]
    fn max_rate_key() {
        let (c, _) = Config::parse("target = /dev/vda\n").unwrap();
        assert_eq!(c.max_rate, None);
        let (c, _) = Config::parse("target = /dev/vda\nmax_rate = 512K\n").unwrap();
        assert_eq!(c.max_rate, Some(512 << 10));
        for off in ["0", "none"] {
            let (c, _) = Config::parse(&format!("target = /dev/vda\nmax_rate = {off}\n")).unwrap();
            assert_eq!(c.max_rate, None);
        }
        assert!(Config::parse("target = /dev/vda\nmax_rate = fast\n").is_err());
    }

    #[test]
    fn protected_keys_need_permission() {
        let (mut c, _) = Config::parse(
            "target = /dev/vda
",
        )
        .unwrap();
        let before = c.clone();
        for w in [
            "fwpack.target=/dev/sdb",
            "fwpack.keys=/tmp/k",
            "fwpack.ca=/tmp/evil-ca.pem",
            "fwpack.images=/mnt/usb",
            "fwpack.init=/bin/sh",
            "fwpack.modules=/tmp/evil.load",
            "fwpack.state_offset=1M",
            "fwpack.cmdline_overrides=init",
            "fwpack.tryboot=/dev/vda1",
        ] {
            let e = c.apply_cmdline(w).unwrap_err();
            assert!(
                e.contains("protected") || e.contains("cannot") || e.contains("not a setting"),
                "{w}: {e}"
            );
        }
        // Nothing was changed by the refused words.
        assert_eq!(c, before);
        // Allowed explicitly: exactly the listed keys.
        let (mut c, _) =
            Config::parse("target = /dev/vda\ncmdline_overrides = init images\n").unwrap();
        assert_eq!(
            c.apply_cmdline("fwpack.init=/bin/sh fwpack.images=/x")
                .unwrap(),
            vec!["init=/bin/sh", "images=/x"]
        );
        assert_eq!(c.init, "/bin/sh");
        assert!(c.apply_cmdline("fwpack.keys=/tmp/k").is_err());
        // `none`: not even the harmless keys.
        let (mut c, _) = Config::parse("target = /dev/vda\ncmdline_overrides = none\n").unwrap();
        assert!(c.apply_cmdline("fwpack.tries=1").is_err());
        assert_eq!(c.tries, 3);
        // Unprotected or unknown names in the list are refused.
        for bad in ["tries", "tryboot", "bogus"] {
            let e = Config::parse(&format!("target = /dev/vda\ncmdline_overrides = {bad}\n"))
                .unwrap_err();
            assert!(e.contains("not a protected key"), "{bad}: {e}");
        }
    }

    #[test]
    fn init_env_names() {
        let (c, _) = Config::parse("target = /dev/vda\ninit_env = LANG, TZ _X1\n").unwrap();
        assert_eq!(c.init_env, ["LANG", "TZ", "_X1"]);
        for bad in ["A=B", "1X", "A-B"] {
            let e = Config::parse(&format!("target = /dev/vda\ninit_env = {bad}\n")).unwrap_err();
            assert!(e.contains("not an environment variable name"), "{bad}: {e}");
        }
        let (mut c, _) = Config::parse("target = /dev/vda\n").unwrap();
        assert!(c
            .apply_cmdline("fwpack.init_env=FWPACK_BOOT_RECORD")
            .is_err());
        assert!(c.init_env.is_empty());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("99999999999G").is_err());
        assert!(parse_size("x").is_err());
    }
}
