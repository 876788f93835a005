//! Fetches Debian's raspi-firmware (cached after the first run) and checks
//! with readelf that `start.elf` really is the VideoCore GPU firmware, so
//! a wrong package or path cannot pass as "some files were there".

use std::process::Command;

#[test]
fn raspi_firmware_holds_the_videocore_boot_files() {
    if !testkit::tools::require("apt-get")
        || !testkit::tools::require("dpkg-deb")
        || !testkit::tools::require("readelf")
    {
        return;
    }
    let dir = testkit::kernels::raspi_firmware().unwrap();
    assert!(dir.ends_with("usr/lib/raspi-firmware"), "{}", dir.display());
    for (name, min) in [
        ("bootcode.bin", 16 << 10),
        ("start.elf", 1 << 20),
        ("fixup.dat", 4 << 10),
    ] {
        let len = std::fs::metadata(dir.join(name)).unwrap().len();
        assert!(len >= min, "{name}: {len} bytes");
    }
    let out = Command::new("readelf")
        .arg("-h")
        .arg(dir.join("start.elf"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // e_machine 137 = EM_VIDEOCORE3; binutils names it.
    assert!(
        text.lines()
            .any(|l| l.contains("Machine:") && l.contains("VideoCore")),
        "start.elf is not a VideoCore ELF:\n{text}"
    );
    // Idempotent: the second call uses the unpacked copy.
    assert_eq!(testkit::kernels::raspi_firmware().unwrap(), dir);
}
