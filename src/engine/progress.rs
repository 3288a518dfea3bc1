//! The progress bar: on standard error, only when it is a terminal and `--quiet` is not given.
//!
//! It shows input bytes consumed of the total (when the total is known), rows (or, for a download,
//! retries so far), rate and ETA; when it ends, the caller prints a one-line summary. Scripts and cron jobs (stderr not a terminal) see
//! nothing.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress display for one input (or nothing).
pub struct Progress {
    bar: Option<ProgressBar>,
    /// The group the bar is drawn in, with the bars of the other inputs running at once.
    group: Option<MultiProgress>,
    bytes: Mutex<Option<Arc<AtomicU64>>>,
    started: Instant,
}

impl Progress {
    /// A bar labelled `label`, shown only if `enabled` and standard error is a terminal.
    pub fn new(enabled: bool, label: &str) -> Progress {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
            bar.set_style(spinner_style());
            bar.set_prefix(label.to_owned());
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Progress {
            bar,
            group: None,
            bytes: Mutex::new(None),
            started: Instant::now(),
        }
    }

    /// A bar labelled `label` in `group`, drawn with the bars of the other inputs that run at
    /// the same time (the group is drawn only on a terminal); it leaves the group when it ends.
    pub fn in_group(group: &MultiProgress, label: &str) -> Progress {
        // Added to the group before it can draw: a bar drawn on its own first would be left on
        // the screen.
        let bar = group.add(ProgressBar::hidden());
        bar.set_style(spinner_style());
        bar.set_prefix(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(250));
        Progress {
            bar: Some(bar),
            group: Some(group.clone()),
            bytes: Mutex::new(None),
            started: Instant::now(),
        }
    }

    /// A progress that shows nothing.
    pub fn hidden() -> Progress {
        Progress::new(false, "")
    }

    /// Where consumed input bytes are counted.
    pub fn set_count_source(&self, bytes: Option<Arc<AtomicU64>>) {
        *self.bytes.lock().expect("not poisoned") = bytes;
    }

    /// The input's size, once known.
    pub fn set_total(&self, total: Option<u64>) {
        if let (Some(bar), Some(total)) = (&self.bar, total) {
            bar.set_length(total);
            bar.set_style(bar_style());
        }
    }

    /// Rows released so far; the byte position is read from the counter.
    pub fn advance(&self, rows: u64) {
        if let Some(bar) = &self.bar {
            if let Some(bytes) = &*self.bytes.lock().expect("not poisoned") {
                bar.set_position(bytes.load(Ordering::Relaxed));
            }
            bar.set_message(format!("{rows} rows"));
        }
    }

    /// A download's progress: bytes on disk of the total (once known), and the retries so far.
    pub fn download(&self, have: u64, total: Option<u64>, retries: u32) {
        if let Some(bar) = &self.bar {
            if total.is_some() && bar.length().is_none() {
                self.set_total(total);
            }
            bar.set_position(have);
            bar.set_message(match retries {
                1 => "1 retry".to_owned(),
                n => format!("{n} retries"),
            });
        }
    }

    /// Clear the bar. When one was shown, returns how long the work took, for a one-line summary
    /// on the terminal (printed by the caller: this module only draws the bar).
    pub fn finish(&self) -> Option<Duration> {
        let bar = self.bar.as_ref()?;
        self.clear(bar);
        Some(self.started.elapsed())
    }

    /// Run `f` (which prints to stderr) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// A handle that can put the bar out of the way from another thread (for warnings printed
    /// there).
    pub fn handle(&self) -> ProgressHandle {
        ProgressHandle(self.bar.clone())
    }

    /// Clear the bar without a summary (before an error message).
    pub fn abandon(&self) {
        if let Some(bar) = &self.bar {
            self.clear(bar);
        }
    }

    fn clear(&self, bar: &ProgressBar) {
        bar.finish_and_clear();
        if let Some(group) = &self.group {
            group.remove(bar);
        }
    }
}

/// A [`Progress`]'s bar, shared with another thread, only to print out of its way.
#[derive(Clone)]
pub struct ProgressHandle(Option<ProgressBar>);

impl ProgressHandle {
    /// Run `f` (which prints to stderr) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.0 {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix}: {bytes} read, {msg} ({bytes_per_sec})")
        .expect("valid template")
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix}: [{bar:30}] {bytes}/{total_bytes}, {msg}, {bytes_per_sec}, ETA {eta}",
    )
    .expect("valid template")
    .progress_chars("=> ")
}
