//! libFuzzer entry point of the `inflate` target; what it checks is in `fuzz/checks/inflate.rs`.

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::inflate::check(data));
