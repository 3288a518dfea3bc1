//! Key and webhook secret commands (`--key-cmd`, `--secret-cmd`; issue 15): the customer's
//! secrets manager prints the secret, and nothing of it is copied onto disk or into the
//! environment of every job.
//!
//! A command is split into words as a POSIX shell would split it (`shlex`) and run without a
//! shell: no `$VARIABLES`, `~`, globs, pipes or redirections, so nothing in it is interpreted a
//! second time. It runs with standard input closed (`/dev/null`) and its standard error inherited,
//! so its own messages reach the user as it wrote them (nothing is printed here). Its standard
//! output is read into a buffer that is wiped when dropped, at most [`MAX_OUTPUT_BYTES`]. It learns
//! which key is wanted from its environment (`CIPHERSTREAM_KEY_ID`, `CIPHERSTREAM_CUSTOMER_ID`),
//! never from arguments added to it, and the secrets cipherstream itself may have been given
//! (`CIPHERSTREAM_KEY`, `CIPHERSTREAM_WEBHOOK_SECRET`) are removed from that environment.
//!
//! It runs in a process group of its own, so that everything it started can be killed at once:
//! at the timeout; when it prints more than the limit; when it stops (SIGTTIN: it tried to read a
//! passphrase from the terminal, which a process group in the background cannot); when it has
//! exited but something it started still holds its standard output open after
//! [`HELD_OPEN_GRACE`] (what it printed before it exited has been read by then, and waiting for
//! the straggler would hang the run); and when a signal ends cipherstream ([`kill_all`], called by
//! `signals`). Its exit is watched with `waitid(WNOWAIT)`, which leaves it unreaped until its
//! group has been dealt with, so the group's id cannot pass to an unrelated process first.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::error::{CommandFailure, CommandProblem, Error, Result};
use crate::text;

/// Most bytes read from a command's standard output: a base64 key is 44, a webhook secret a few
/// dozen, a key file is refused above this size too.
pub const MAX_OUTPUT_BYTES: usize = 4096;

/// How long output may stay open after the command exited (held by something it started).
pub const HELD_OPEN_GRACE: Duration = Duration::from_millis(200);

/// A key or webhook secret command, parsed.
pub struct Helper {
    words: Vec<String>,
    /// How messages name it: `--key-cmd "pass"`.
    name: String,
    /// What it prints: "key" or "webhook secret".
    what: &'static str,
    timeout: Duration,
}

impl Helper {
    /// Parse `command`, given with `given` (a flag or an environment variable); `number` is its
    /// place among several given with the same flag. Messages name it by `given`, its number and
    /// its program, never its arguments, and not its program either when that looks like a key or
    /// secret (given where the command belongs).
    pub fn parse(
        command: &str,
        given: &str,
        number: Option<usize>,
        what: &'static str,
        timeout: Duration,
    ) -> Result<Helper> {
        let words = shlex::split(command)
            .filter(|words| !words.is_empty())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "{given} is not a command: it is empty, or a quote in it is not closed"
                ))
            })?;
        let program = if crate::cmd::credentials::looks_like_secret(Path::new(&words[0])) {
            "(program not shown)".to_owned()
        } else {
            text::quote(&words[0])
        };
        let name = match number {
            Some(n) => format!("{given} #{n} {program}"),
            None => format!("{given} {program}"),
        };
        Ok(Helper {
            words,
            name,
            what,
            timeout,
        })
    }

    /// The command as messages name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A failure of this command, run for `key_id`.
    pub fn failure(&self, key_id: Option<&str>, problem: CommandProblem) -> CommandFailure {
        CommandFailure {
            command: self.name.clone(),
            what: self.what,
            key_id: key_id.map(str::to_owned),
            problem,
        }
    }

    /// Run the command with `env` set in its environment (a `None` value removes the variable)
    /// and return what it printed on standard output, if it exited with status 0.
    pub fn run(&self, env: &[(&str, Option<&str>)]) -> Result<Zeroizing<Vec<u8>>, CommandProblem> {
        let mut command = Command::new(&self.words[0]);
        command
            .args(&self.words[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env_remove(crate::cmd::credentials::ENV_KEY)
            .env_remove(crate::webhook::ENV_SECRET);
        for (name, value) in env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        unix::run(command, self.timeout)
    }
}

/// Kill every command still running (a signal is ending cipherstream).
pub fn kill_all() {
    unix::kill_all();
}

#[cfg(unix)]
mod unix {
    use std::io::{self, Read};
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, ChildStdout, Command};
    use std::sync::{Mutex, PoisonError};
    use std::time::{Duration, Instant};

    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use rustix::process::{kill_process_group, waitid, Pid, Signal, WaitId, WaitIdOptions};
    use zeroize::Zeroizing;

    use super::{HELD_OPEN_GRACE, MAX_OUTPUT_BYTES};
    use crate::error::CommandProblem;

    /// How often a command's state is looked at while its output is quiet.
    const STEP: Duration = Duration::from_millis(20);

    /// The process groups of the commands running now.
    static LIVE: Mutex<Vec<Pid>> = Mutex::new(Vec::new());

    /// Keeps a command's group in [`LIVE`] while it runs.
    struct Live(Pid);

    impl Live {
        fn add(group: Pid) -> Live {
            LIVE.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(group);
            Live(group)
        }
    }

    impl Drop for Live {
        fn drop(&mut self) {
            LIVE.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|&g| g != self.0);
        }
    }

    pub fn kill_all() {
        for &group in LIVE.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let _ = kill_process_group(group, Signal::KILL);
        }
    }

    /// How watching a command ended.
    enum Ended {
        /// It exited and its output reached its end.
        Exited,
        /// It exited, but its output is still held open (by a process it started).
        HeldOpen,
        /// The timeout passed.
        TimedOut,
        /// It printed more than the limit.
        TooMuch,
        /// A signal stopped it.
        Stopped(i32),
    }

    pub fn run(
        mut command: Command,
        timeout: Duration,
    ) -> Result<Zeroizing<Vec<u8>>, CommandProblem> {
        command.process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| CommandProblem::Start(os_message(&e)))?;
        let group = Pid::from_child(&child);
        let live = Live::add(group);
        let mut out = Zeroizing::new(Vec::with_capacity(MAX_OUTPUT_BYTES));
        let stdout = child.stdout.take().expect("standard output is piped");
        let ended = watch(stdout, group, timeout, &mut out);
        if !matches!(ended, Ended::Exited) {
            // Whatever the group still holds: the command, or what it left behind.
            let _ = kill_process_group(group, Signal::KILL);
        }
        let status = reap(&mut child);
        drop(live);
        match ended {
            Ended::TimedOut => Err(CommandProblem::TimedOut {
                secs: timeout.as_secs(),
            }),
            Ended::TooMuch => Err(CommandProblem::TooMuchOutput {
                limit: MAX_OUTPUT_BYTES as u64,
            }),
            Ended::Stopped(number) => Err(CommandProblem::Stopped {
                number,
                name: signal_name(number),
            }),
            Ended::Exited | Ended::HeldOpen => match status {
                Some(status) if status.success() => Ok(out),
                Some(status) => Err(match (status.code(), status.signal()) {
                    (Some(code), _) => CommandProblem::Status(code),
                    (None, Some(number)) => CommandProblem::Signal {
                        number,
                        name: signal_name(number),
                    },
                    (None, None) => CommandProblem::Status(-1),
                }),
                None => Err(CommandProblem::Start("its exit status was lost".into())),
            },
        }
    }

    /// Reap the command (it has exited, or was just killed).
    fn reap(child: &mut Child) -> Option<std::process::ExitStatus> {
        loop {
            match child.wait() {
                Ok(status) => return Some(status),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
    }

    /// What the command is doing: `None` while it runs.
    fn state(group: Pid) -> Option<Ended> {
        let options = WaitIdOptions::EXITED
            | WaitIdOptions::STOPPED
            | WaitIdOptions::NOHANG
            | WaitIdOptions::NOWAIT;
        match waitid(WaitId::Pid(group), options) {
            Ok(None) => None,
            Ok(Some(status)) if status.stopped() => {
                Some(Ended::Stopped(status.stopping_signal().unwrap_or(0)))
            }
            // Exited, killed, or gone: the reaping says which.
            _ => Some(Ended::Exited),
        }
    }

    /// Read the command's output until it has exited and the output ended, or until something
    /// else ends the wait (see [`Ended`]).
    fn watch(
        mut stdout: ChildStdout,
        group: Pid,
        timeout: Duration,
        out: &mut Zeroizing<Vec<u8>>,
    ) -> Ended {
        let deadline = Instant::now() + timeout;
        let mut exited: Option<Instant> = None;
        let mut eof = false;
        let mut chunk = Zeroizing::new([0u8; 512]);
        loop {
            if exited.is_none() {
                match state(group) {
                    None => {}
                    Some(Ended::Exited) => exited = Some(Instant::now()),
                    Some(other) => return other,
                }
            }
            if eof && exited.is_some() {
                return Ended::Exited;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ended::TimedOut;
            }
            if exited.is_some_and(|at| now >= at + HELD_OPEN_GRACE) {
                return Ended::HeldOpen;
            }
            let wait = STEP.min(deadline - now);
            if eof {
                // Output closed; the exit follows at once, as a rule.
                std::thread::sleep(wait.min(Duration::from_millis(1)));
                continue;
            }
            let mut fds = [PollFd::new(&stdout, PollFlags::IN)];
            let timeout = Timespec::try_from(wait).unwrap_or_default();
            match poll(&mut fds, Some(&timeout)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => {}
                // Never read without knowing it will not block: wait, and let the deadline end
                // it if poll keeps failing.
                Err(_) => {
                    std::thread::sleep(wait);
                    continue;
                }
            }
            match stdout.read(&mut chunk[..]) {
                Ok(0) => eof = true,
                Ok(n) if out.len() + n > MAX_OUTPUT_BYTES => return Ended::TooMuch,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => eof = true,
            }
        }
    }

    /// The operating system's message for an error, without Rust's " (os error N)".
    fn os_message(e: &io::Error) -> String {
        let text = e.to_string();
        match text.find(" (os error ") {
            Some(i) => text[..i].to_owned(),
            None => text,
        }
    }

    /// The name of a signal a command may die or stop of.
    fn signal_name(number: i32) -> Option<&'static str> {
        [
            (Signal::HUP, "SIGHUP"),
            (Signal::INT, "SIGINT"),
            (Signal::QUIT, "SIGQUIT"),
            (Signal::ILL, "SIGILL"),
            (Signal::ABORT, "SIGABRT"),
            (Signal::BUS, "SIGBUS"),
            (Signal::FPE, "SIGFPE"),
            (Signal::KILL, "SIGKILL"),
            (Signal::SEGV, "SIGSEGV"),
            (Signal::PIPE, "SIGPIPE"),
            (Signal::ALARM, "SIGALRM"),
            (Signal::TERM, "SIGTERM"),
            (Signal::STOP, "SIGSTOP"),
            (Signal::TSTP, "SIGTSTP"),
            (Signal::TTIN, "SIGTTIN"),
            (Signal::TTOU, "SIGTTOU"),
        ]
        .into_iter()
        .find(|(signal, _)| signal.as_raw() == number)
        .map(|(_, name)| name)
    }
}

#[cfg(not(unix))]
mod unix {
    use std::process::Command;
    use std::time::Duration;

    use zeroize::Zeroizing;

    use crate::error::CommandProblem;

    pub fn run(_: Command, _: Duration) -> Result<Zeroizing<Vec<u8>>, CommandProblem> {
        Err(CommandProblem::Start(
            "key and secret commands need a Unix system".into(),
        ))
    }

    pub fn kill_all() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper(command: &str) -> Helper {
        Helper::parse(command, "--key-cmd", None, "key", Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn commands_are_split_as_a_shell_would_without_a_shell() {
        let h = helper(r#"pass show "cipher stream/key" '$HOME' a\ b"#);
        assert_eq!(
            h.words,
            ["pass", "show", "cipher stream/key", "$HOME", "a b"]
        );
        assert_eq!(h.name(), "--key-cmd \"pass\"");
        for bad in ["", "   ", "pass show 'unclosed", "\"x"] {
            let e = Helper::parse(bad, "--key-cmd", None, "key", Duration::from_secs(1))
                .err()
                .unwrap();
            assert_eq!(
                e.to_string(),
                "--key-cmd is not a command: it is empty, or a quote in it is not closed"
            );
        }
        // A key given where the command belongs is not shown.
        let h = Helper::parse(
            "KWYaVYUN8EaMDLRkhRmZowpWIjT3d9be5zmL+R9tGKw=",
            "CIPHERSTREAM_KEY_CMD",
            Some(2),
            "key",
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(h.name(), "CIPHERSTREAM_KEY_CMD #2 (program not shown)");
    }

    #[test]
    fn output_status_and_environment() {
        let out = helper("sh -c 'printf %s \"$CIPHERSTREAM_KEY_ID/$GONE\"'")
            .run(&[("CIPHERSTREAM_KEY_ID", Some("k1")), ("GONE", None)])
            .unwrap();
        assert_eq!(out.as_slice(), b"k1/");
        assert_eq!(
            helper("sh -c 'exit 7'").run(&[]).err(),
            Some(CommandProblem::Status(7))
        );
        assert_eq!(
            helper("sh -c 'kill -TERM $$'").run(&[]).err(),
            Some(CommandProblem::Signal {
                number: 15,
                name: Some("SIGTERM")
            })
        );
        assert!(matches!(
            helper("/nonexistent/helper").run(&[]).err(),
            Some(CommandProblem::Start(why)) if why == "No such file or directory"
        ));
    }
}
