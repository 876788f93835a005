//! Any bytes, any policy: `check_bytes` must return a report, never panic,
//! and never allocate beyond what the input can justify (libFuzzer's
//! -rss_limit_mb and -malloc_limit_mb catch the latter).

#![no_main]

use elfcheck::{check_bytes, Machine, Policy, Verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the policy, so the policy-dependent paths
    // (machine, class, budget, strip) are all reachable.
    let (knobs, elf) = match data.split_first() {
        Some((&k, rest)) => (k, rest),
        None => (0, data),
    };
    let machine = match knobs & 7 {
        0 => None,
        1 => Some(Machine::Aarch64),
        2 => Some(Machine::X86_64),
        3 => Some(Machine::Riscv64),
        4 => Some(Machine::Arm),
        n => Some(Machine::Other(u16::from(n))),
    };
    let policy = Policy {
        machine,
        size_budget: (knobs & 8 != 0).then_some(elf.len() as u64 / 2),
        require_stripped: knobs & 16 != 0,
        require_static: knobs & 32 == 0,
    };
    let report = check_bytes(elf, &policy);

    // Invariants that hold for every input.
    let has_error = report.errors().next().is_some();
    assert_eq!(report.passed(), !has_error);
    if report.facts.is_none() {
        assert_ne!(report.verdict(), Verdict::Pass);
    }
    if let Some(f) = &report.facts {
        assert_eq!(f.file_size, elf.len() as u64);
        if policy.require_static && report.passed() {
            assert!(f.linkage.is_static(), "passed but {:?}", f.linkage);
        }
    }
    let _ = serde_json_free_render(&report);
});

/// Exercises every Display path (messages are built from file data).
fn serde_json_free_render(report: &elfcheck::Report) -> usize {
    report.findings.iter().map(|f| f.to_string().len()).sum()
}
