//! The hand-encoded purgatory is what LLVM's AArch64 assembler makes of
//! the same six instructions and two literals (rustc's `global_asm!`
//! for aarch64-unknown-linux-musl, which `cargo xtask deps` installs).

use std::process::Command;

#[test]
fn purgatory_words_match_the_assembler() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("p.rs");
    std::fs::write(
        &src,
        r#"#![no_std]
core::arch::global_asm!(
    ".section .text.purg,\"ax\"",
    "ldr x0, 1f",
    "mov x1, xzr",
    "mov x2, xzr",
    "mov x3, xzr",
    "ldr x4, 2f",
    "br x4",
    "1: .quad 0x1122334455667788",
    "2: .quad 0x40200000",
);
"#,
    )
    .unwrap();
    let obj = dir.path().join("p.o");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args([
            "--target",
            "aarch64-unknown-linux-musl",
            "--crate-type",
            "lib",
        ])
        .args(["--emit", "obj", "-o"])
        .arg(&obj)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rustc for aarch64 (rustup target add aarch64-unknown-linux-musl): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&obj).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let sh = elf
        .section_headers
        .iter()
        .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".text.purg"))
        .expect(".text.purg");
    let text = &bytes[sh.sh_offset as usize..(sh.sh_offset + sh.sh_size) as usize];
    assert_eq!(
        text,
        kexec::arm64::purgatory(0x1122_3344_5566_7788, 0x4020_0000)
    );
}
