//! libFuzzer entry point of the `roundtrip` target; what it checks is in `fuzz/checks/roundtrip.rs`.

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::roundtrip::check(data));
