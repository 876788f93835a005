//! Link options of the device binary: what makes it fit its 1 MiB budget
//! whichever linker a build system hands cargo.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    // Only the static device builds (every musl target, and `+crt-static`
    // on the others); a host build for the tests keeps its defaults.
    let has = |var: &str, word: &str| env::var(var).is_ok_and(|v| v.split(',').any(|v| v == word));
    if !has("CARGO_CFG_TARGET_FEATURE", "crt-static") {
        return;
    }
    // The linker's flavour decides how an option is spelled: rust-lld (our
    // .cargo/config.toml for aarch64) takes it as is, a C compiler driver
    // (Buildroot's and Yocto's cross gcc, Debian's) needs `-Wl,`. A bare
    // `--icf=all` handed to gcc failed every aarch64 musl link by gcc.
    let linker = env::var("RUSTC_LINKER").unwrap_or_default();
    let name = Path::new(&linker)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let lld = matches!(name, "rust-lld" | "ld.lld" | "lld");
    // One linker argument; a comma joins an option and its value.
    let arg = |a: &str| {
        let a = if lld {
            a.replace(',', "")
        } else {
            format!("-Wl,{a}")
        };
        println!("cargo:rustc-link-arg-bins={a}");
    };
    // No `.eh_frame_hdr` (28 KiB on aarch64): it only indexes the unwind
    // tables for an unwinder, and the device binary never unwinds
    // (panic = "abort"); a panic still prints its message. GNU ld and lld
    // both take it, after rustc's own `--eh-frame-hdr`.
    arg("--no-eh-frame-hdr");
    // No RELRO on musl: a static musl executable has no dynamic loader to
    // make it read-only, so it protects nothing there, and GNU ld pads the
    // file to end it on a page (22 KiB on aarch64). glibc's static start
    // code may apply it, so it stays there.
    if has("CARGO_CFG_TARGET_ENV", "musl") {
        arg("-z,norelro");
    }
    // Identical code folding: monomorphised copies that compile to the same
    // machine code are kept once, about 12 KiB off the aarch64 binary.
    // lld has it, GNU ld (bfd) has not. Nothing here compares function
    // addresses.
    if lld {
        arg("--icf=all");
    }
}
