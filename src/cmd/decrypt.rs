//! `cipherstream decrypt`: exports in, plaintext JSON lines out, in row order.
//!
//! Several inputs: to standard output they are concatenated and the first failure stops the run
//! (a stream with a hole in it is worse than a short one); with `-o` they are concatenated into one
//! file that appears only if every input succeeded; with `--output-dir` each input is its own
//! atomic file, so a bad third input of five leaves the other four written, its own previous file
//! untouched, and the run exits with the most severe failure's status, whatever the order of the
//! inputs (issue 2, item 7; issue 12, item 7). Those inputs run several at once when there are
//! threads to spare, and say everything in input order, as one after another would (`parallel`;
//! issue 16, item 1); inputs concatenated to standard output or `-o` run one after another.

use std::collections::HashSet;
use std::io::Write;

use crate::cli::DecryptArgs;
use crate::cmd::{output_name, parallel, report, signals, Reading};
use crate::engine::decrypt::Destination;
use crate::error::{Error, Exit, Result};
use crate::sink::{self, AtomicFile, Output};
use crate::source::Input;

/// Run `decrypt`.
pub fn run(args: &DecryptArgs) -> Result<()> {
    let inputs = &args.read.inputs;
    let reading = Reading::resolve(&args.read, false, args.skip_bad_rows)?;

    let output = args.output.as_ref().and_then(Output::path);
    if args.skip_bad_rows && (output.is_some() || args.output_dir.is_some()) {
        // A file at -o (or in --output-dir) means "every row authenticated": scripts test for it
        // (the README's webhook receiver does), and SPEC section 3 promises it. A salvage is
        // incomplete by definition, so it goes where the user can see it is not that file.
        return Err(Error::Usage(
            "--skip-bad-rows cannot write to -o or --output-dir, which only ever hold a complete \
             export; send the salvage to standard output instead, e.g. \
             (umask 077; cipherstream decrypt --skip-bad-rows ... > salvage.ndjson)"
                .into(),
        ));
    }
    if let Some(dest) = output {
        refuse_overwriting_inputs(inputs, &[dest.to_path_buf()])?;
        let mut file = AtomicFile::create(dest)?;
        let name = dest.display().to_string();
        for input in inputs {
            let sink = Destination {
                writer: &mut file,
                name: &name,
                written: None,
            };
            reading.process(input, Some(sink), "decrypted")?;
        }
        return file.commit();
    }

    if let Some(dir) = &args.output_dir {
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "--output-dir {} is not a directory",
                dir.display()
            )));
        }
        let dests = inputs
            .iter()
            .map(|i| output_name(dir, i))
            .collect::<Result<Vec<_>>>()?;
        let mut seen = HashSet::new();
        for (input, dest) in inputs.iter().zip(&dests) {
            if !seen.insert(dest) {
                return Err(Error::Usage(format!(
                    "two inputs would both be written to {} ({} is one)",
                    dest.display(),
                    input.name()
                )));
            }
        }
        refuse_overwriting_inputs(inputs, &dests)?;
        // Several inputs at once, each with its share of the threads (see `parallel`).
        let jobs: Vec<Reading> = parallel::shares(inputs.len(), reading.options.threads)
            .into_iter()
            .map(|threads| reading.with_threads(threads))
            .collect();
        let printer = parallel::Printer::new(reading.show_progress);
        let failed = |lines: &parallel::Lines<'_>, e: Error| {
            lines.report(&e);
            e.exit()
        };
        // Each file is written and synced as its input runs, and put in place only once every
        // input before it has been put in place or reported (see `parallel::in_order`).
        let exits = parallel::in_order(
            inputs.len(),
            jobs.len(),
            &printer,
            |i, job, lines| {
                let dest = &dests[i];
                let result = AtomicFile::create(dest).and_then(|mut file| {
                    let name = dest.display().to_string();
                    let sink = Destination {
                        writer: &mut file,
                        name: &name,
                        written: None,
                    };
                    jobs[job].process_with(&inputs[i], Some(sink), "decrypted", lines)?;
                    file.sync()?;
                    Ok(file)
                });
                result.map_err(|e| failed(lines, e))
            },
            |result, lines| result.and_then(|file| file.commit().map_err(|e| failed(lines, e))),
        );
        let mut worst: Option<Exit> = None;
        let mut failed = 0;
        for exit in exits.into_iter().filter_map(|r| r.err()) {
            failed += 1;
            worst = Some(worst.map_or(exit, |w| w.most_severe(exit)));
        }
        return match worst {
            None => Ok(()),
            Some(exit) => Err(Error::Inputs {
                failed,
                total: inputs.len(),
                exit,
            }),
        };
    }

    let into_pipe = sink::stdout_is_pipe();
    if into_pipe {
        sink::grow_stdout_pipe();
    }
    let mut reading = reading.to_stdout();
    // The pipe's reader (`jq`, `gzip`, a loader) is another process that needs a core too.
    reading.options.spare_core = into_pipe && args.read.threads.is_none();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let rows_to_stdout = signals::rows_to_stdout();
    // With --skip-bad-rows an input whose bad rows were skipped has still been written (its rows
    // that authenticated are the salvage asked for) and the run goes on; any other error stops it.
    let mut salvaged = Vec::new();
    let mut stopped = None;
    for input in inputs {
        let sink = Destination {
            writer: &mut out,
            name: "standard output",
            written: Some(rows_to_stdout),
        };
        match reading.process(input, Some(sink), "decrypted") {
            Ok(_) => {}
            Err(e @ Error::RowsSkipped { .. }) => salvaged.push(e),
            Err(e) => {
                stopped = Some(e);
                break;
            }
        }
    }
    if stopped.is_none() {
        if let Err(e) = out.flush() {
            stopped = Some(Error::io("writing standard output", e));
        }
    }
    outcome(salvaged, stopped, inputs.len())
}

/// How a run to standard output ends. Without skipped rows: as the error that stopped it, if any
/// (a closed pipe stays quiet, exit 0). With skipped rows it is always a failure, whatever came
/// after (a reader that went away must not turn a salvage into a success): exit 1 or 3, the most
/// severe of the failures.
fn outcome(salvaged: Vec<Error>, stopped: Option<Error>, total: usize) -> Result<()> {
    let Some(first_exit) = salvaged.first().map(Error::exit) else {
        return stopped.map_or(Ok(()), Err);
    };
    let quiet = stopped.as_ref().is_some_and(Error::is_broken_pipe);
    let mut failures: Vec<Error> = salvaged;
    failures.extend(stopped.filter(|_| !quiet));
    let exit = failures
        .iter()
        .fold(first_exit, |worst, e| worst.most_severe(e.exit()));
    if failures.len() == 1 {
        return Err(failures.pop().expect("one"));
    }
    failures.iter().for_each(report);
    Err(Error::Inputs {
        failed: failures.len(),
        total,
        exit,
    })
}

/// Refuse to write plaintext over an input: that would destroy the encrypted export.
fn refuse_overwriting_inputs(inputs: &[Input], dests: &[std::path::PathBuf]) -> Result<()> {
    for input in inputs {
        for dest in dests {
            if input.is_same_file(dest) {
                return Err(Error::Usage(format!(
                    "the output {} is the input {}: refusing to overwrite the export",
                    dest.display(),
                    input.name()
                )));
            }
        }
    }
    Ok(())
}
