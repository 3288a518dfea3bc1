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
pub mod sink;
pub mod source;
pub mod text;
pub mod time;
pub mod warning;
pub mod webhook;

use cli::{Cli, Command};
use error::{Error, Exit};

/// Run a parsed command line and report any error on standard error; returns the exit status.
pub fn run(cli: Cli) -> Exit {
    sink::install_signal_cleanup();
    let result = match &cli.command {
        Command::Decrypt(args) => cmd::decrypt::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Encrypt(args) => cmd::encrypt::run(args),
        Command::Keygen(args) => cmd::keygen::run(args),
        Command::Webhook(sub) => cmd::webhook::run(sub),
        Command::Completions(args) => cmd::completions::run(args),
        Command::Man(args) => cmd::completions::man(args),
    };
    match result {
        Ok(()) => Exit::Success,
        // `| head` closed standard output: stop quietly (SPEC section 3).
        Err(e) if e.is_broken_pipe() => Exit::Success,
        // Each failed input was already reported; summarise only when there were several.
        Err(Error::Inputs {
            failed,
            total,
            exit,
        }) => {
            if total > 1 {
                eprintln!("error: {failed} of {total} inputs failed");
            }
            exit
        }
        Err(e) => {
            cmd::report(&e);
            e.exit()
        }
    }
}
