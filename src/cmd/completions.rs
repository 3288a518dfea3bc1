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
        let out = render(page).map_err(|e| Error::io("rendering the man page", e))?;
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

/// One man page: clap_mangen's, except for the text after the options (`after_help`), which
/// clap_mangen puts under a heading "EXTRA" as lines run together (issue 12, item 12). It becomes
/// the sections man pages have for it, before VERSION: EXIT STATUS, a tagged list, from the
/// paragraph headed "Exit status:"; ENVIRONMENT from the paragraphs that say where the key,
/// customer id and webhook secret come from; NOTES from the others (`webhook serve`'s answers,
/// log and signals). `--help` stays as it is: one text, two renderings.
fn render(page: clap::Command) -> std::io::Result<Vec<u8>> {
    let after = page.get_after_help().map(ToString::to_string);
    let mut out = Vec::new();
    clap_mangen::Man::new(page.after_help(None::<&'static str>)).render(&mut out)?;
    let Some(after) = after else {
        return Ok(out);
    };
    let mut roff = String::from_utf8(out).map_err(std::io::Error::other)?;
    let at = [".SH VERSION", ".SH AUTHORS"]
        .iter()
        .filter_map(|heading| roff.find(&format!("\n{heading}\n")).map(|i| i + 1))
        .min()
        .unwrap_or(roff.len());
    roff.insert_str(at, &after_help_sections(&after));
    Ok(roff.into_bytes())
}

/// The roff sections for an `after_help` text: paragraphs apart by blank lines; in the one headed
/// "Exit status:", each entry is `  CODE  WHAT` and a line indented further continues the one
/// before. The other paragraphs go under ENVIRONMENT when they name a `CIPHERSTREAM_` variable,
/// else under NOTES.
fn after_help_sections(text: &str) -> String {
    let mut statuses: Vec<(&str, String)> = Vec::new();
    let mut environment = Vec::new();
    let mut notes = Vec::new();
    for paragraph in text.split("\n\n") {
        let Some(entries) = paragraph.strip_prefix("Exit status:\n") else {
            let line = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
            // Where secrets come from names the variables; anything else (webhook serve's
            // answers, log and signals) is a note, not the environment.
            if line.contains("CIPHERSTREAM_") {
                environment.push(line);
            } else {
                notes.push(line);
            }
            continue;
        };
        for line in entries.lines() {
            match (line.strip_prefix("   "), statuses.last_mut()) {
                (Some(more), Some((_, what))) => {
                    what.push(' ');
                    what.push_str(more.trim());
                }
                _ => {
                    let (code, what) = line.trim().split_once("  ").unwrap_or((line.trim(), ""));
                    statuses.push((code, what.trim().to_owned()));
                }
            }
        }
    }
    let mut roff = String::new();
    if !statuses.is_empty() {
        roff.push_str(".SH \"EXIT STATUS\"\n");
        for (code, what) in &statuses {
            roff.push_str(&format!(
                ".TP\n\\fB{}\\fR\n{}\n",
                roff_text(code),
                roff_text(what)
            ));
        }
    }
    for (heading, paragraphs) in [("ENVIRONMENT", &environment), ("NOTES", &notes)] {
        if !paragraphs.is_empty() {
            roff.push_str(&format!(".SH {heading}\n"));
            for paragraph in paragraphs {
                roff.push_str(&format!(".PP\n{}\n", roff_text(paragraph)));
            }
        }
    }
    roff
}

/// `text` as one line of roff: backslashes and hyphens escaped (`\-` is the minus sign that
/// options are typed with), and a leading `.` or `'` kept from being read as a request.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_help_becomes_exit_status_and_environment_sections() {
        let text =
            "Exit status:\n  0  success\n  3  authentication failed: a row did not verify;\n     \
                    or the row count differs from --expect-rows\n  129, 143  stopped by \
                    SIGHUP or SIGTERM\n\nSecrets come from --key-file, else\nCIPHERSTREAM_KEY.";
        assert_eq!(
            after_help_sections(text),
            ".SH \"EXIT STATUS\"\n\
             .TP\n\\fB0\\fR\nsuccess\n\
             .TP\n\\fB3\\fR\nauthentication failed: a row did not verify; or the row count \
             differs from \\-\\-expect\\-rows\n\
             .TP\n\\fB129, 143\\fR\nstopped by SIGHUP or SIGTERM\n\
             .SH ENVIRONMENT\n\
             .PP\nSecrets come from \\-\\-key\\-file, else CIPHERSTREAM_KEY.\n"
        );
        assert_eq!(roff_text(".x 'y' a\\b"), "\\&.x 'y' a\\eb");
        // A paragraph that names no variable is a note (webhook serve's answers and signals).
        assert_eq!(
            after_help_sections("Signals: SIGHUP reloads.\n\nKeys from\nCIPHERSTREAM_KEY."),
            ".SH ENVIRONMENT\n.PP\nKeys from CIPHERSTREAM_KEY.\n.SH NOTES\n.PP\nSignals: SIGHUP reloads.\n"
        );
    }

    #[test]
    fn man_pages_have_an_exit_status_section_before_version_and_no_extra() {
        let page = Cli::command().name("cipherstream");
        let roff = String::from_utf8(render(page).unwrap()).unwrap();
        assert!(!roff.contains("EXTRA"), "{roff}");
        let exit = roff
            .find(".SH \"EXIT STATUS\"\n.TP\n\\fB0\\fR\nsuccess\n")
            .unwrap();
        let environment = roff.find(".SH ENVIRONMENT\n").unwrap();
        let version = roff.find(".SH VERSION\n").unwrap();
        assert!(exit < environment && environment < version, "{roff}");
    }
}
