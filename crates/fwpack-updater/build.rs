//! Link options of the device binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Identical code folding: monomorphised copies that compile to the same
    // machine code are kept once, about 12 KiB off the aarch64 binary and
    // its 1 MiB budget. rust-lld links that target (.cargo/config.toml);
    // the x86_64 musl target links with the system linker, which may not
    // have the option. Nothing here compares function addresses.
    if std::env::var("TARGET").as_deref() == Ok("aarch64-unknown-linux-musl") {
        println!("cargo:rustc-link-arg-bins=--icf=all");
    }
}
