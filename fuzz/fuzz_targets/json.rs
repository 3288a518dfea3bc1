//! libFuzzer entry point of the `json` target; what it checks is in `fuzz/checks/json.rs`.

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::json::check(data));
