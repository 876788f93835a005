//! `fwpack-updater`: the device side of fwpack as one static binary.
//!
//! - As PID 1 (`/init` of the fwpack initramfs): mounts the pseudo
//!   filesystems, loads kernel modules, waits for the target disk, applies
//!   a newer signed image from the initramfs to the inactive slot (then
//!   reboots into it), picks the slot to boot from the A/B boot state,
//!   mounts it read-only and switches root into its init. It never exits:
//!   every failure ends in the configured reboot, halt or power-off.
//! - As a command: `status [--json]`, `mark-good`, `apply`.
//!
//! Which one is decided by the process id alone: the kernel starts /init
//! as PID 1, and nothing else ever runs as PID 1.

#[macro_use]
mod log;
mod blkid;
mod bootslot;
mod cmd;
mod config;
mod devwait;
mod efiboot;
#[cfg(feature = "fleet")]
mod fleet;
#[cfg(feature = "fleet")]
mod fleet_stop;
mod flow;
mod kexecboot;
mod kmod;
mod pid1;
mod recovery;
mod runinfo;
mod slotdev;
mod slotmount;
mod switchroot;
mod sys;
mod tryboot;
mod update;
mod watchdog;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if rustix::process::getpid().is_init() {
        flow::run(args)
    }
    std::process::exit(cmd::main(args))
}
