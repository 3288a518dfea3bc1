//! The signals that end a run: SIGHUP, SIGINT, SIGQUIT and SIGTERM.
//!
//! A watcher thread waits for them. On the first one it removes every temporary output file (so no
//! partial plaintext is left behind, SPEC section 3), says so on standard error, and then lets the
//! process die of that same signal, as GNU tools and fd do: a shell loop running the tool then
//! stops too, and the shell reports 128 + the signal's number (129, 130, 131, 143). A signal that
//! was ignored when the process started stays ignored (`nohup`, background jobs).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{Error, Exit};
use crate::sink;

/// Whether decrypted rows go to standard output, and how many complete rows have gone there.
static STDOUT: (AtomicBool, AtomicU64) = (AtomicBool::new(false), AtomicU64::new(0));

/// Note that decrypted rows go to standard output, and return the counter the engine advances
/// as it writes them: a signal then says the output is incomplete and where it stops, rather than
/// that no output file was left behind (issue 12, item 9).
pub fn rows_to_stdout() -> &'static AtomicU64 {
    STDOUT.0.store(true, Ordering::Relaxed);
    &STDOUT.1
}

/// Start the watcher thread. Call once, before any output file is created.
pub fn install() {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        // A signal ignored when the process started stays ignored: `nohup` ignores SIGHUP, and a
        // shell starts background jobs with SIGINT and SIGQUIT ignored; a run meant to survive
        // them must not be ended by them.
        let caught = [SIGHUP, SIGINT, SIGQUIT, SIGTERM]
            .into_iter()
            .filter(|&s| !ignored_at_start(s));
        let Ok(mut signals) = signal_hook::iterator::Signals::new(caught) else {
            return;
        };
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                // Held until the process is gone, so no rename can slip in after the cleanup.
                let _temps = sink::remove_temporaries_for_exit();
                // A key command runs in a process group of its own, which the terminal's signal
                // did not reach: it must not outlive the run.
                crate::cmd::helper::kill_all();
                let exit = match signal {
                    SIGTERM => Exit::Terminated,
                    SIGHUP => Exit::HungUp,
                    SIGQUIT => Exit::Quit,
                    _ => Exit::Interrupted,
                };
                // Not eprintln!: it panics when stderr fails, and after SIGHUP the terminal is
                // usually gone (EIO); a panic here would end this thread, not the process.
                let stdout_rows = STDOUT
                    .0
                    .load(Ordering::Relaxed)
                    .then(|| STDOUT.1.load(Ordering::Relaxed));
                let stopped = Error::Interrupted { exit, stdout_rows };
                let _ = writeln!(io::stderr(), "error: {stopped}");
                if signal == SIGQUIT {
                    // SIGQUIT's default action dumps core, and a core file would hold the key and
                    // plaintext: die of the signal without one.
                    no_core_dump();
                }
                let _ = signal_hook::low_level::emulate_default_handler(signal);
                // Not reached unless the signal could not be re-raised.
                std::process::exit(exit.code().into());
            }
        });
    }
}

/// Whether `signal`'s disposition is "ignore" (inherited through `exec`).
#[cfg(unix)]
#[allow(unsafe_code, clippy::multiple_unsafe_ops_per_block)]
fn ignored_at_start(signal: libc::c_int) -> bool {
    // SAFETY: a null new action only reads the current one into `old`, a zeroed `sigaction` that
    // we own. No safe API (std, signal-hook) reads a disposition without changing it.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Forbid core files for this process (RLIMIT_CORE = 0).
#[cfg(unix)]
#[allow(unsafe_code)]
fn no_core_dump() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit only reads the `rlimit` we pass, which lives on this stack. No safe API in
    // std or signal-hook sets a resource limit.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
    }
}
