//! The `cipherstream` binary: parse arguments, run, exit with the status `run` chose.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cipherstream::cli::Cli::parse();
    std::process::ExitCode::from(cipherstream::run(cli).code())
}
