//! CLI behaviour, built as one integration test binary (one module per area).

mod cli;
mod encrypt;
mod fuzz_regressions;
mod hardening;
mod hostile;
mod json_diff;
mod keys;
mod multi;
mod net;
mod props;
mod readme;
mod serve;
mod util;
mod vectors;
mod webhook;
mod writers;
