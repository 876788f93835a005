//! Any bytes as a device tree: `kexec::fdt::Fdt::parse` returns a tree or
//! an error, never panics, never loops, and allocates within
//! `EXPANSION` times the input (run with -malloc_limit_mb to catch a
//! regression); what parses is rewritten the way the arm64 loader
//! rewrites /chosen and must read back.
//!
//! Seed: `kexec::fdt::many_props_one_long_name(4096)` and any real DTB.

#![no_main]

use kexec::arm64::{rewrite_chosen, Range};
use kexec::fdt::Fdt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut f) = Fdt::parse(data) else {
        return;
    };
    // The written blob is compact: a tree read from a padded blob may
    // exceed the budget of the smaller one, and only that may fail.
    match Fdt::parse(&f.to_bytes()) {
        Ok(again) => assert_eq!(again, f),
        Err(e) => {
            assert!(e.0.contains("times the blob"), "{e}");
            return;
        }
    }
    rewrite_chosen(
        &mut f,
        "console=ttyAMA0",
        Some(Range {
            start: 0x4800_0000,
            end: 0x4810_0000,
        }),
        None,
    );
    if let Ok(c) = Fdt::parse(&f.to_bytes()) {
        assert!(c.root.child("chosen").is_some());
    }
});
