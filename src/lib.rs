//! cipherstream: decrypt, verify and make CipherStream encrypted NDJSON exports, and check
//! CipherStream webhooks.
//!
//! `main.rs` only parses arguments and calls [`run`]; everything else lives here so tests, benchmarks
//! and fuzz targets call the same code the binary does.

#![warn(missing_docs)]

pub mod cli;
pub mod cmd;
pub mod engine;
pub mod error;
pub mod format;
pub mod net;
pub mod sink;
pub mod source;
#[cfg(test)]
mod testing;
pub mod text;
pub mod time;
pub mod warning;
pub mod webhook;

pub use cmd::run;
