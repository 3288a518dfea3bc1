//! libFuzzer entry point of the `container` target; what it checks is in `fuzz/checks/container.rs`.

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::container::check(data));
