//! visionfive2 (riscv64): no musl std is published for riscv64, so the
//! updater is glibc + crt-static, linked by Debian's riscv64 gcc. The ELF
//! check must still prove it static, and it must run.

use std::path::Path;
use std::process::Command;

#[test]
fn riscv64_updater_is_static_and_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let board = board::Board::find(&root.join("configs"), "visionfive2").unwrap();
    let mut events = Vec::new();
    let bin = pipeline::checked_updater(&board, &root, None, &mut |e| events.push(e))
        .unwrap_or_else(|e| panic!("riscv64 updater: {e}"));

    let report = elfcheck::check_file(&bin, &elfcheck::Policy::default()).unwrap();
    let facts = report.facts.as_ref().unwrap();
    assert_eq!(facts.machine, elfcheck::Machine::Riscv64);
    assert!(
        matches!(
            facts.linkage,
            elfcheck::Linkage::Static | elfcheck::Linkage::StaticPie
        ),
        "{:?}",
        facts.linkage
    );
    // readelf agrees: no interpreter, no needed libraries.
    let readelf = Command::new("readelf")
        .args(["-l", "-d"])
        .arg(&bin)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&readelf.stdout);
    assert!(
        !text.contains("INTERP") && !text.contains("(NEEDED)"),
        "{text}"
    );

    let out = Command::new("qemu-riscv64-static")
        .arg(&bin)
        .arg("--version")
        .output()
        .expect("qemu-riscv64-static (qemu-user-static)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
}
