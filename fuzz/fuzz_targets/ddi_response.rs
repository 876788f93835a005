//! Any bytes as every DDI response (base, deployment, cancel, sleep):
//! a value or an error, never a panic, and the bounds of `ddi` hold for
//! every value returned (checked inside `ddi::fuzz`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ddi::fuzz(data);
});
