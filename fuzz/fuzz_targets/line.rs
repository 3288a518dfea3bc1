//! libFuzzer entry point of the `line` target; what it checks is in `fuzz/checks/line.rs`.

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::line::check(data));
