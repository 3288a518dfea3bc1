//! `cipherstream decrypt`: exports in, plaintext JSON lines out, in row order.
//!
//! Several inputs: to standard output they are concatenated and the first failure stops the run
//! (a stream with a hole in it is worse than a short one); with `-o` they are concatenated into one
//! file that appears only if every input succeeded; with `--output-dir` each input is its own
//! atomic file, so a bad third input of five leaves the other four written, its own previous file
//! untouched, and the run exits with the first failure's status (issue 2, item 7).

use std::collections::HashSet;
use std::io::Write;

use crate::cli::DecryptArgs;
use crate::cmd::{output_name, report, Reading};
use crate::error::{display_input, Error, Result};
use crate::output::{same_file, AtomicFile};
use crate::pipeline::Summary;

/// Run `decrypt`.
pub fn run(args: &DecryptArgs) -> Result<()> {
    let inputs = &args.read.inputs;
    let reading = Reading::resolve(&args.read, false, args.skip_bad_rows)?;

    // `-o -` is standard output, as an input of `-` is standard input.
    if let Some(dest) = args.output.as_ref().filter(|d| d.as_os_str() != "-") {
        refuse_overwriting_inputs(inputs, std::slice::from_ref(dest))?;
        let mut file = AtomicFile::create(dest)?;
        let mut salvaged = Vec::new();
        for input in inputs {
            let result = reading.process(input, Some(&mut file as &mut dyn Write), "decrypted");
            salvage(result, &mut salvaged)?;
        }
        file.commit()?;
        return salvage_outcome(salvaged, inputs.len());
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
                    display_input(input)
                )));
            }
        }
        refuse_overwriting_inputs(inputs, &dests)?;
        let mut first_failure = None;
        let mut failed = 0;
        for (input, dest) in inputs.iter().zip(&dests) {
            let result = AtomicFile::create(dest).and_then(|mut file| {
                let mut salvaged = Vec::new();
                let result = reading.process(input, Some(&mut file as &mut dyn Write), "decrypted");
                salvage(result, &mut salvaged)?;
                file.commit()?;
                salvage_outcome(salvaged, 1)
            });
            if let Err(e) = result {
                report(&e);
                failed += 1;
                first_failure.get_or_insert(e.exit());
            }
        }
        return match first_failure {
            None => Ok(()),
            Some(exit) => Err(Error::Inputs {
                failed,
                total: inputs.len(),
                exit,
            }),
        };
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut salvaged = Vec::new();
    for input in inputs {
        let result = reading.process(input, Some(&mut out as &mut dyn Write), "decrypted");
        salvage(result, &mut salvaged)?;
    }
    out.flush()
        .map_err(|e| Error::io("writing standard output", e))?;
    salvage_outcome(salvaged, inputs.len())
}

/// With `--skip-bad-rows`, an input whose bad rows were skipped is still written: its rows that
/// authenticated are the salvage that was asked for (to standard output, into `-o`'s file, or to
/// its own file in `--output-dir`), and the run goes on to the next input. Every other error
/// stops as usual. The skips are kept for [`salvage_outcome`].
fn salvage(result: Result<Summary>, salvaged: &mut Vec<Error>) -> Result<()> {
    match result {
        Err(e @ Error::RowsSkipped { .. }) => {
            salvaged.push(e);
            Ok(())
        }
        other => other.map(drop),
    }
}

/// The run's outcome once everything salvaged was written: a failure (exit 1 or 3) if any row was
/// skipped, never success.
fn salvage_outcome(salvaged: Vec<Error>, total: usize) -> Result<()> {
    match salvaged.len() {
        0 => Ok(()),
        1 => Err(salvaged.into_iter().next().expect("one")),
        failed => {
            salvaged.iter().for_each(report);
            Err(Error::Inputs {
                failed,
                total,
                exit: salvaged[0].exit(),
            })
        }
    }
}

/// Refuse to write plaintext over an input: that would destroy the encrypted export.
fn refuse_overwriting_inputs(
    inputs: &[std::path::PathBuf],
    dests: &[std::path::PathBuf],
) -> Result<()> {
    for input in inputs {
        for dest in dests {
            if same_file(input, dest) {
                return Err(Error::Usage(format!(
                    "the output {} is the input {}: refusing to overwrite the export",
                    dest.display(),
                    display_input(input)
                )));
            }
        }
    }
    Ok(())
}
