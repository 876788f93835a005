//! The bootstrap's build of fwpack-updater (`--no-default-features`, what
//! `fwpack build` puts in /init) has no network client: a URL or an HTTP
//! option is a usage error (exit 2) that names the slot's updater, while
//! the slot's build (default features) goes on to fetch. Both x86_64
//! device builds are static musl binaries, so they run here natively.

mod qemu_support;

use std::path::Path;
use std::process::{Command, Output};

use qemu_support::{public_pem, slot_updater_binary, updater_binary};
use testkit::kernels::Arch;

const NO_NET: &str = "this build has no network support; use the slot's /usr/bin/fwpack-updater";

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().unwrap()
}

fn said(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn core_build_refuses_urls_and_http_options_with_exit_2() {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("SKIPPED: runs the x86_64 device builds natively");
        return;
    }
    let core = updater_binary(Arch::X86_64);
    let slot = slot_updater_binary(Arch::X86_64);
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("disk");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let key = work.path().join("key.pem");
    std::fs::write(&key, public_pem()).unwrap();
    let (disk, key) = (disk.to_str().unwrap(), key.to_str().unwrap());
    // Port 9 (discard) is closed on a test host: the slot build's fetch
    // fails fast as a source failure.
    let url = "http://127.0.0.1:9/u.fwi";
    let apply = ["apply", url, "--target", disk, "--key", key];

    let o = run(&core, &apply);
    assert_eq!(o.status.code(), Some(2), "{}", said(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{url}: {NO_NET}")), "{}", said(&o));
    assert!(
        !err.contains("usage:"),
        "the help text hides the reason: {err}"
    );

    let o = run(&core, &["check", url, "--target", disk, "--key", key]);
    assert_eq!(o.status.code(), Some(2), "{}", said(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(NO_NET),
        "{}",
        said(&o)
    );

    for opt in ["--ca", "--retries", "--pin", "--max-rate"] {
        let o = run(&core, &["apply", "/dev/null", opt, "1", "--target", disk]);
        assert_eq!(o.status.code(), Some(2), "{opt}: {}", said(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("{opt}: {NO_NET}")), "{}", said(&o));
    }

    let o = run(&core, &["--help"]);
    let help = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(help.contains("built without"), "{help}");

    // The same command with the slot's build reaches the network.
    let mut args = apply.to_vec();
    args.extend(["--retries", "0", "--timeout", "5"]);
    let o = run(&slot, &args);
    assert_eq!(o.status.code(), Some(9), "{}", said(&o));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains(NO_NET),
        "{}",
        said(&o)
    );
}
