//! CLI behaviour, built as one integration test binary (one module per area).

mod cli;
mod hardening;
mod util;
mod vectors;
