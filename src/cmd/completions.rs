//! `cipherstream completions SHELL` and `cipherstream man`, generated from the clap definitions so
//! they can never drift from the real flags.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::error::{Error, Result};

/// Print a completion script for the chosen shell.
pub fn run(args: &CompletionsArgs) -> Result<()> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "cipherstream", &mut out);
    write_stdout(&out)
}

/// The man pages (roff) for `cipherstream` and each of its commands, at every level
/// (`cipherstream-webhook-verify`): all on standard output, or one file per page in `--out-dir`,
/// where the pages' references to each other (`cipherstream-decrypt(1)`) resolve. clap's `help`
/// commands get no page and no reference: `--help` says the same.
pub fn man(args: &ManArgs) -> Result<()> {
    let mut pages = Vec::new();
    collect_pages(Cli::command(), "cipherstream", &mut pages);
    let mut all = Vec::new();
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut out)
            .map_err(|e| Error::io("rendering the man page", e))?;
        match &args.out_dir {
            Some(dir) => {
                let path = dir.join(format!("{name}.1"));
                std::fs::write(&path, out)
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            }
            None => {
                if !all.is_empty() {
                    all.push(b'\n');
                }
                all.extend_from_slice(&out);
            }
        }
    }
    if args.out_dir.is_some() {
        return Ok(());
    }
    write_stdout(&all)
}

/// `cmd` as the page `name`, then its subcommands as `name-<sub>`, depth first.
fn collect_pages(cmd: clap::Command, name: &str, pages: &mut Vec<(String, clap::Command)>) {
    // clap takes a command's name as a `&'static str`; this runs once per process.
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let cmd = cmd.name(leaked).disable_help_subcommand(true);
    let subs: Vec<clap::Command> = cmd.get_subcommands().cloned().collect();
    pages.push((name.to_owned(), cmd));
    for sub in subs {
        let sub_name = format!("{name}-{}", sub.get_name());
        collect_pages(sub, &sub_name, pages);
    }
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing standard output", e))
}
