//! libFuzzer entry point of the `export` target; what it checks is in `fuzz/checks/export.rs`.

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::export::check(data));
