//! The checks of the fuzz targets, one module per target. The libFuzzer entry points in
//! `fuzz/fuzz_targets/` call them, and so does the regression test `tests/fuzz_regressions.rs`
//! (which includes this directory with `#[path]`), so a saved input is replayed through exactly
//! the code that failed on it.

#![allow(dead_code)] // each includer uses part of this

pub mod common;
pub mod container;
pub mod export;
pub mod inflate;
pub mod json;
pub mod line;
pub mod roundtrip;
