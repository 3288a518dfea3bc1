//! Several inputs at once (issue 16, item 1): `decrypt --output-dir` and `verify` run up to one
//! input per thread they may use, each with its share of the worker threads, and say everything
//! exactly as a run of one input after another would.
//!
//! Decrypting one ZIP costs what inflating it costs, on one thread; the other cores mostly wait.
//! Several exports (one per procedure, decrypted together from cron) are independent, so they
//! can use those cores. What the user sees must not depend on it: each input's lines (warnings,
//! its error and hint, its summary, `verify`'s line on standard output) are kept until it is done
//! and printed once every input before it has printed its own, so standard output, standard error
//! and the exit status are those of a run one input at a time, at every thread count. Output
//! files are written and synced as their inputs run but put in place in input order, just before
//! their input's lines are printed, so what is on disk is never ahead of what was said: a run
//! stopped by a signal leaves what one input after another would have left (a later export that
//! is done but not yet reported is not there, and its warnings are not lost). A failure of one
//! input ends only that input: every output is its own `AtomicFile`, and a signal removes the
//! temporary files of all of them (`sink`'s registry).
//!
//! Inputs concatenated to standard output or into one `-o` file stay one after another: their
//! bytes must come out in input order, so an input decrypted ahead could only wait in memory,
//! and a bounded read-ahead buys at most its size over the throughput (a fraction of a second
//! for 1M rows) while keeping more plaintext in memory for longer. A pipe's reader needs a core
//! of its own anyway (`decrypt::default_threads`).

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, PoisonError};

use indicatif::{MultiProgress, ProgressDrawTarget};

use crate::engine::progress::Progress;
use crate::error::Error;
use crate::warning::{Warn, Warning};

/// Which stream a kept line goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

/// Prints lines for the inputs of one run: on standard error out of the progress bars' way, on
/// standard output until it fails (a reader that went away), then no more.
pub struct Printer {
    /// The bars of the inputs running at once, on a terminal.
    group: Option<MultiProgress>,
    /// Why standard output could not be written, once it could not.
    stdout_failed: Mutex<Option<io::Error>>,
}

impl Printer {
    /// A printer whose inputs show bars (if `progress` and standard error is a terminal) in one
    /// group, one bar per input running.
    pub fn new(progress: bool) -> Printer {
        let group = (progress && io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        Printer {
            group,
            stdout_failed: Mutex::new(None),
        }
    }

    /// A printer for one input at a time, whose bar (if any) is its own.
    pub fn direct() -> Printer {
        Printer::new(false)
    }

    /// Print `lines` with the group's bars out of the way. MUST NOT be called from within a
    /// suspended bar or group: the group's lock is not reentrant.
    fn print(&self, lines: &[(Stream, String)]) {
        match &self.group {
            Some(group) => group.suspend(|| self.write(lines)),
            None => self.write(lines),
        }
    }

    fn write(&self, lines: &[(Stream, String)]) {
        for (stream, line) in lines {
            match stream {
                // Not eprintln!: a closed standard error must not panic the run.
                Stream::Err => {
                    let _ = writeln!(io::stderr(), "{line}");
                }
                Stream::Out => self.stdout(line),
            }
        }
    }

    fn stdout(&self, line: &str) {
        let mut failed = self
            .stdout_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if failed.is_none() {
            let mut out = io::stdout().lock();
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                *failed = Some(e);
            }
        }
    }

    /// Why standard output could not be written, if it could not.
    pub fn stdout_error(&self) -> Option<io::Error> {
        self.stdout_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// What one input has to say: printed at once when inputs run one at a time, else kept until the
/// inputs before it are done.
pub struct Lines<'a> {
    printer: &'a Printer,
    kept: Option<Mutex<Vec<(Stream, String)>>>,
}

impl<'a> Lines<'a> {
    /// Lines printed as they come.
    pub fn direct(printer: &'a Printer) -> Lines<'a> {
        Lines {
            printer,
            kept: None,
        }
    }

    fn kept(printer: &'a Printer) -> Lines<'a> {
        Lines {
            printer,
            kept: Some(Mutex::new(Vec::new())),
        }
    }

    fn say(&self, stream: Stream, line: String, progress: Option<&Progress>) {
        match &self.kept {
            Some(kept) => kept
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((stream, line)),
            // A bar in the group is suspended with the group; a bar of its own by itself (and
            // only once: suspending both would wait forever on the group's lock).
            None => match (&self.printer.group, progress) {
                (None, Some(progress)) => {
                    progress.suspend(|| self.printer.write(&[(stream, line)]))
                }
                _ => self.printer.print(&[(stream, line)]),
            },
        }
    }

    /// A line for standard error.
    pub fn err(&self, line: String) {
        self.say(Stream::Err, line, None);
    }

    /// A line for standard output (ignored once standard output has failed).
    pub fn out(&self, line: String) {
        self.say(Stream::Out, line, None);
    }

    /// An error and its hint, as [`crate::cmd::report`] prints them.
    pub fn report(&self, e: &Error) {
        self.err(format!("error: {e}"));
        if let Some(hint) = e.hint() {
            self.err(format!("hint: {hint}"));
        }
    }

    /// The progress display of the input these lines are for: a bar in the printer's group
    /// when inputs run at once, else a bar of its own (either only on a terminal, and if `show`).
    pub fn progress(&self, show: bool, label: &str) -> Progress {
        match &self.printer.group {
            Some(group) if show => Progress::in_group(group, label),
            _ => Progress::new(show && self.kept.is_none(), label),
        }
    }

    /// The warning sink of an input whose bar is `progress`.
    pub fn warnings<'b>(&'b self, progress: &'b Progress) -> Warnings<'b> {
        Warnings {
            lines: self,
            progress,
        }
    }

    fn into_kept(self) -> Vec<(Stream, String)> {
        self.kept
            .map(|k| k.into_inner().unwrap_or_else(PoisonError::into_inner))
            .unwrap_or_default()
    }
}

/// `warning: ...` (or `skipped: ...`) lines of one input, with its bar out of the way.
pub struct Warnings<'a> {
    lines: &'a Lines<'a>,
    progress: &'a Progress,
}

impl Warn for Warnings<'_> {
    fn warn(&self, warning: Warning) {
        let line = format!("{}: {warning}", warning.label());
        self.lines.say(Stream::Err, line, Some(self.progress));
    }
}

/// How many inputs run at once, and how many worker threads each gets, from the worker threads
/// the run may use in all (`--threads`, or the cores): one input per thread, at most one per
/// input, and the threads shared out evenly (the first ones get the remainder). `threads` 1 is a
/// run one input at a time.
pub fn shares(inputs: usize, threads: usize) -> Vec<usize> {
    let threads = threads.max(1);
    let jobs = inputs.min(threads).max(1);
    (0..jobs)
        .map(|j| threads / jobs + usize::from(j < threads % jobs))
        .collect()
}

/// Run `work(input, job, lines)` for inputs `0..count` on `jobs` threads (`job` is the thread's
/// number, `0..jobs`), then `done(result, lines)` for each on the calling thread, in input order,
/// as soon as the input and every input before it are done; return what `done` returns, in input
/// order. Each input's lines are printed in input order, right after its `done`: whatever `done`
/// does (commit an output file) is thus never ahead of what was said, and a run stopped by a
/// signal leaves exactly what one input after another would have left when it stopped. With
/// one job the inputs run on the calling thread, one after another, and their lines are printed
/// as they come (as before issue 16).
pub fn in_order<T: Send, U>(
    count: usize,
    jobs: usize,
    printer: &Printer,
    work: impl Fn(usize, usize, &Lines<'_>) -> T + Sync,
    mut done: impl FnMut(T, &Lines<'_>) -> U,
) -> Vec<U> {
    if jobs <= 1 || count <= 1 {
        return (0..count)
            .map(|i| {
                let lines = Lines::direct(printer);
                let result = work(i, 0, &lines);
                done(result, &lines)
            })
            .collect();
    }
    let next = AtomicUsize::new(0);
    let (done_tx, done_rx) = mpsc::channel();
    let mut results = Vec::with_capacity(count);
    std::thread::scope(|scope| {
        let (next, work) = (&next, &work);
        let mut started = 0;
        for job in 0..jobs {
            let done_tx = done_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("input-{job}"))
                .spawn_scoped(scope, move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    let lines = Lines::kept(printer);
                    let result = work(i, job, &lines);
                    if done_tx.send((i, result, lines.into_kept())).is_err() {
                        return;
                    }
                });
            // A thread that cannot start leaves its inputs to the others.
            started += usize::from(spawned.is_ok());
        }
        drop(done_tx);
        if started == 0 {
            // Not even one: the calling thread takes them all.
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let lines = Lines::direct(printer);
                let result = work(i, 0, &lines);
                results.push(done(result, &lines));
            }
        }
        let mut pending = BTreeMap::new();
        for (i, result, lines) in done_rx {
            pending.insert(i, (result, lines));
            while let Some((result, kept)) = pending.remove(&results.len()) {
                let lines = Lines {
                    printer,
                    kept: Some(Mutex::new(kept)),
                };
                let result = done(result, &lines);
                printer.print(&lines.into_kept());
                results.push(result);
            }
        }
    });
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_shared_out_one_input_per_thread() {
        assert_eq!(shares(1, 2), [2]);
        assert_eq!(shares(2, 2), [1, 1]);
        assert_eq!(shares(5, 2), [1, 1]);
        assert_eq!(shares(3, 1), [1]);
        assert_eq!(shares(3, 8), [3, 3, 2]);
        assert_eq!(shares(0, 4), [4]);
    }

    #[test]
    fn results_come_back_in_input_order_whatever_finishes_first() {
        let printer = Printer::direct();
        for jobs in [1, 2, 3, 8] {
            let mut finished = Vec::new();
            let got = in_order(
                20,
                jobs,
                &printer,
                |i, job, lines| {
                    assert!(job < jobs.max(1));
                    // Later inputs finish first.
                    std::thread::sleep(std::time::Duration::from_millis((20 - i as u64) % 4));
                    lines.err(format!("input {i}"));
                    i
                },
                |i, _| {
                    finished.push(i);
                    i * 10
                },
            );
            assert_eq!(got, (0..20).map(|i| i * 10).collect::<Vec<_>>());
            assert_eq!(finished, (0..20).collect::<Vec<_>>());
        }
    }

    #[test]
    fn kept_lines_stay_with_their_input() {
        let printer = Printer::direct();
        let lines = Lines::kept(&printer);
        lines.err("one".into());
        lines.out("two".into());
        lines.report(&Error::Usage("three".into()));
        assert_eq!(
            lines.into_kept(),
            [
                (Stream::Err, "one".to_owned()),
                (Stream::Out, "two".to_owned()),
                (Stream::Err, "error: three".to_owned()),
                (Stream::Err, "hint: run with --help for usage".to_owned()),
            ]
        );
    }
}
