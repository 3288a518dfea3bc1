//! The commands: one module per subcommand, each with a `run` function, plus what they share
//! (argument resolution in [`Reading`], credentials, signals, reporting).
//!
//! This is the only layer that prints to standard error or chooses an exit status: the library
//! below it returns errors and hands warnings to a sink.

pub mod completions;
pub mod credentials;
pub mod decrypt;
pub mod encrypt;
pub mod fetch;
pub mod helper;
pub mod keygen;
pub mod parallel;
pub mod signals;
pub mod verify;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::io::{IsTerminal, Write};

use crate::cli::{Cli, Command, ReadArgs};
use crate::engine;
use crate::engine::decrypt::{Destination, Options, Summary};
use crate::engine::progress::{Progress, ProgressHandle};
use crate::error::{Diagnosis, Error, Exit, Result, RowError};
use crate::format::record::RowOpener;
use crate::source::{Input, Source};
use crate::warning::{Warn, Warning};

/// Run a parsed command line and report any error on standard error; returns the exit status.
pub fn run(cli: Cli) -> Exit {
    // The receiver handles its signals itself: SIGTERM stops it gracefully, SIGHUP reloads its
    // certificate (cmd::webhook).
    if !matches!(
        cli.command,
        Command::Webhook(crate::cli::WebhookCommand::Serve(_))
    ) {
        signals::install();
    }
    let result = match &cli.command {
        Command::Decrypt(args) => decrypt::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Encrypt(args) => encrypt::run(args),
        Command::Fetch(args) => fetch::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Webhook(sub) => webhook::run(sub),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => completions::man(args),
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
                let _ = writeln!(
                    std::io::stderr(),
                    "error: {failed} of {total} inputs failed"
                );
            }
            exit
        }
        Err(e) => {
            report(&e);
            e.exit()
        }
    }
}

/// Everything resolved from [`ReadArgs`] that processing an input needs.
#[derive(Clone)]
pub struct Reading {
    /// Opens rows with the keys and customer id (a fresh copy per input: [`RowOpener::for_input`]).
    pub opener: RowOpener,
    /// Pipeline options.
    pub options: Options,
    /// The ZIP member to read, if chosen.
    pub member: Option<String>,
    /// Expected row count, if any.
    pub expect_rows: Option<u64>,
    /// Show progress on a terminal.
    pub show_progress: bool,
    /// The customer id, for the hint of a row 0 that fails (see [`Reading::process`]).
    pub customer_id: String,
    /// How inputs given as URLs are downloaded.
    pub network: crate::source::NetOptions,
}

impl Reading {
    /// Resolve the customer id, key, thread count and expected rows. `exact_nonces` selects the
    /// exact (verify) or fixed-memory (decrypt) nonce-reuse check.
    pub fn resolve(args: &ReadArgs, exact_nonces: bool, skip_bad_rows: bool) -> Result<Reading> {
        let customer = credentials::customer_id(args.customer_id.as_deref())?;
        let stdin_inputs = args.inputs.iter().filter(|i| **i == Input::Stdin).count();
        if args.inputs.iter().any(Input::is_interactive) {
            return Err(Error::Usage(
                "no export given: name an INPUT file, or pipe an export into standard input".into(),
            ));
        }
        if stdin_inputs > 1 {
            return Err(Error::Usage(
                "standard input (-) can be read only once".into(),
            ));
        }
        let expect_rows = match (&args.expect_rows, &args.expect_rows_from) {
            (Some(n), _) => Some(*n),
            (None, Some(path)) => {
                let body = Input::from(path.clone());
                let text = Source::new(&body).read_all(
                    crate::webhook::MAX_BODY_BYTES,
                    "webhook body",
                    "give the row count with --expect-rows N instead",
                )?;
                Some(crate::webhook::rows_processed(&body.name(), &text)?)
            }
            (None, None) => None,
        };
        if expect_rows.is_some() && args.inputs.len() > 1 {
            return Err(Error::Usage(
                "--expect-rows and --expect-rows-from check one input; give one INPUT".into(),
            ));
        }
        let keys = credentials::keys(&args.keys, &customer, &Stderr(None))?;
        let threads = args.threads.map(usize::from).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        Ok(Reading {
            opener: RowOpener::with_keys(Arc::new(keys), &customer),
            customer_id: customer,
            options: Options {
                threads,
                max_line_bytes: args.max_line_bytes,
                skip_bad_rows,
                exact_nonce_check: exact_nonces,
                spare_core: false,
            },
            member: args.member.clone(),
            expect_rows,
            show_progress: !args.quiet,
            network: args.net.options(),
        })
    }

    /// The same, for rows written to standard output: no progress bar when that is a terminal.
    /// The bar is redrawn on standard error, the same screen, and rows landing between its
    /// redraws would leave stale bar lines among the data (issue 12, item 12); the rows appearing
    /// are the progress then. Clearing the bar before every write would flicker and cost a
    /// lock per batch for nothing a reader needs.
    pub fn to_stdout(mut self) -> Reading {
        self.show_progress &= !std::io::stdout().is_terminal();
        self
    }

    /// The same, with `threads` worker threads (an input's share when several run at once).
    pub fn with_threads(&self, threads: usize) -> Reading {
        let mut reading = self.clone();
        reading.options.threads = threads;
        reading
    }

    /// Process one input (decrypting into `sink`, or verifying when `sink` is `None`) and apply
    /// the checks that follow the rows: skipped rows, the expected count, nonce reuse. Warnings
    /// and the summary line are printed as they come.
    pub fn process(
        &self,
        input: &Input,
        sink: Option<Destination<'_>>,
        verb: &str,
    ) -> Result<Summary> {
        let printer = parallel::Printer::direct();
        self.process_with(input, sink, verb, &parallel::Lines::direct(&printer))
    }

    /// [`Reading::process`], saying its warnings and summary line through `lines`.
    pub fn process_with(
        &self,
        input: &Input,
        sink: Option<Destination<'_>>,
        verb: &str,
        lines: &parallel::Lines<'_>,
    ) -> Result<Summary> {
        let name = input.name();
        let progress = lines.progress(self.show_progress, &name);
        let warnings = lines.warnings(&progress);
        let opener = self.opener.for_input();
        // The engine's cancel flag, shared with a download's reader so its waits end with the run.
        let cancel = Arc::new(AtomicBool::new(false));
        let result = Source::new(input)
            .network(self.network.clone())
            .reporting(Box::new(StderrAbove(progress.handle())), cancel.clone())
            .ndjson(self.member.as_deref())
            .and_then(|ndjson| {
                engine::decrypt::run_cancellable(
                    ndjson,
                    &opener,
                    &self.options,
                    sink,
                    &progress,
                    &warnings,
                    cancel.clone(),
                )
            });
        cancel.store(true, Ordering::SeqCst);
        let summary = match result {
            Ok(s) => s,
            Err(e) => {
                progress.abandon();
                return Err(self.explain_row_zero(e));
            }
        };
        // verify (exact) turns reuse into an error of its own; decrypt only warns.
        if !self.options.exact_nonce_check {
            for &(first, later) in &summary.nonce_reuse {
                warnings.warn(Warning::NonceReuse {
                    input: name.clone(),
                    first,
                    later,
                });
            }
        }
        let skipped = summary.skipped.len() as u64;
        if skipped > 0 {
            progress.abandon();
            let any_auth = summary
                .skipped
                .iter()
                .any(|(_, kind)| matches!(kind, RowError::Auth(_)));
            let exit = if any_auth { Exit::Auth } else { Exit::Failure };
            return Err(Error::RowsSkipped {
                input: name,
                skipped,
                exit,
            });
        }
        if let Some(expected) = self.expect_rows {
            if expected != summary.rows {
                progress.abandon();
                return Err(Error::RowCount {
                    input: name,
                    expected,
                    found: summary.rows,
                });
            }
        }
        if let Some(took) = progress.finish() {
            lines.err(format!(
                "{name}: {verb} {} rows in {:.2}s",
                summary.rows,
                took.as_secs_f64()
            ));
        }
        Ok(summary)
    }

    /// When row 0 fails everywhere (wrong key or customer id) and the customer id holds a
    /// character a user cannot see (a trailing `\r`, newline or space: an env file's accident),
    /// say so: the usual hint would send them to check a customer id that looks right (issue 12,
    /// item 11). The id is not trimmed: every byte of it is bound into the AAD.
    fn explain_row_zero(&self, e: Error) -> Error {
        match e {
            Error::Row {
                input,
                row: 0,
                kind: RowError::Auth(Diagnosis::WrongKeyOrCustomer | Diagnosis::Unknown),
            } if crate::text::invisible(&self.customer_id).is_some() => Error::Row {
                input,
                row: 0,
                kind: RowError::Auth(Diagnosis::InvisibleInCustomerId {
                    customer_id: self.customer_id.clone(),
                }),
            },
            e => e,
        }
    }
}

/// The commands' warning sink: `warning: ...` (or `skipped: ...`) on standard error, with the
/// progress bar, if any, out of the way.
pub struct Stderr<'a>(pub Option<&'a Progress>);

impl Warn for Stderr<'_> {
    fn warn(&self, warning: Warning) {
        let print = || {
            // Not eprintln!: a closed standard error must not panic the run.
            let _ = writeln!(std::io::stderr(), "{}: {warning}", warning.label());
        };
        match self.0 {
            Some(progress) => progress.suspend(print),
            None => print(),
        }
    }
}

/// The same sink for another thread (a download's reader): the bar is put out of the way through
/// its handle.
struct StderrAbove(ProgressHandle);

impl Warn for StderrAbove {
    fn warn(&self, warning: Warning) {
        self.0.suspend(|| {
            let _ = writeln!(std::io::stderr(), "{}: {warning}", warning.label());
        });
    }
}

/// Clear the progress bar and, when one was shown (on a terminal), print a one-line summary.
pub fn finish(progress: &Progress, summary: &str) {
    if let Some(took) = progress.finish() {
        let _ = writeln!(std::io::stderr(), "{summary} in {:.2}s", took.as_secs_f64());
    }
}

/// Print an error and its hint to standard error, as the final report or per failed input.
pub fn report(e: &Error) {
    eprintln!("error: {e}");
    if let Some(hint) = e.hint() {
        eprintln!("hint: {hint}");
    }
}

/// `DIR/<stem>.ndjson` for an input: the file name with its container and NDJSON extensions
/// (`.zip`, `.gz`, `.gzip`, `.ndjson`, `.jsonl`) removed.
pub fn output_name(dir: &Path, input: &Input) -> Result<PathBuf> {
    let name = input
        .path()
        .and_then(Path::file_name)
        .ok_or_else(|| {
            Error::Usage(format!(
                "--output-dir needs input file names; {} has none",
                input.name()
            ))
        })?
        .to_string_lossy();
    Ok(dir.join(format!(
        "{}.ndjson",
        crate::format::container::export_stem(&name)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_drop_container_extensions() {
        let d = Path::new("out");
        assert_eq!(
            output_name(d, &Input::from("a/x.ndjson.gz")).unwrap(),
            Path::new("out/x.ndjson")
        );
        assert_eq!(
            output_name(d, &Input::from("x.ZIP")).unwrap(),
            Path::new("out/x.ndjson")
        );
        assert_eq!(
            output_name(d, &Input::from("x.tar")).unwrap(),
            Path::new("out/x.tar.ndjson")
        );
        assert_eq!(
            output_name(d, &Input::from(".zip")).unwrap(),
            Path::new("out/.zip.ndjson")
        );
        assert!(output_name(d, &Input::from("-")).is_err());
    }
}
