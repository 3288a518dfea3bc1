//! `cipherstream completions SHELL` and `cipherstream man`, generated from the clap definitions so
//! they can never drift from the real flags.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};
use crate::error::{Error, Result};

/// Print a completion script for the chosen shell.
pub fn run(args: &CompletionsArgs) -> Result<()> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "cipherstream", &mut out);
    write_stdout(&out)
}

/// Print the man page (roff) for `cipherstream` and its subcommands.
pub fn man() -> Result<()> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut out)
        .map_err(|e| Error::io("rendering the man page", e))?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name: &'static str =
            Box::leak(format!("cipherstream-{}", sub.get_name()).into_boxed_str());
        let sub = sub.clone().name(name);
        out.extend_from_slice(b"\n");
        clap_mangen::Man::new(sub)
            .render(&mut out)
            .map_err(|e| Error::io("rendering the man page", e))?;
    }
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing standard output", e))
}
