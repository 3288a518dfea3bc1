//! `cipherstream webhook verify|sign|serve|status|replay`: wires the command line to
//! [`crate::webhook`].
//!
//! For `serve` this is where the receiver's parts meet (issue 14): credentials resolved once, the
//! log printed on standard error (text or JSON lines), the signals (SIGTERM and SIGINT stop it
//! gracefully, SIGHUP reloads the certificate), and the exit. The server, the queue and the
//! workers never print and never exit.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{
    LogFormat, SecretArgs, WebhookCommand, WebhookReplayArgs, WebhookServeArgs, WebhookSignArgs,
    WebhookStatusArgs, WebhookVerifyArgs,
};
use crate::cmd::{credentials, Stderr};
use crate::error::{Error, Result};
use crate::format::record::RowOpener;
use crate::source::{Input, Source};
use crate::webhook::delivery::{self, Parsed};
use crate::webhook::log::{Event, Log};
use crate::webhook::queue::{JobState, Queue};
use crate::webhook::receiver::Receiver;
use crate::webhook::server::{Limits, Listener, Server, Tls};
use crate::webhook::worker::{self, Pool};
use crate::webhook::{self, Signature, TimestampCheck};

/// Run a `webhook` subcommand.
pub fn run(cmd: &WebhookCommand) -> Result<()> {
    match cmd {
        WebhookCommand::Verify(args) => verify(args),
        WebhookCommand::Sign(args) => sign(args),
        WebhookCommand::Serve(args) => serve(args),
        WebhookCommand::Status(args) => status(args),
        WebhookCommand::Replay(args) => replay(args),
    }
}

/// The receiver's log on standard error: one line per event, written whole.
struct StderrLog {
    json: bool,
}

impl Log for StderrLog {
    fn log(&self, event: Event) {
        let now = crate::time::now().unwrap_or(0);
        let mut line = if self.json {
            event.json_line(now)
        } else {
            event.text_line(now)
        };
        line.push('\n');
        // One write per line, so lines from several threads never interleave; a closed standard
        // error must not stop the receiver.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// The state directory: `--state-dir`, else `$STATE_DIRECTORY` (systemd's `StateDirectory=`;
/// the first when it lists several), else `$XDG_STATE_HOME/cipherstream`, else
/// `~/.local/state/cipherstream`.
fn state_dir(given: Option<&PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir.clone());
    }
    let env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dirs) = env("STATE_DIRECTORY") {
        if let Some(first) = std::env::split_paths(&dirs).next() {
            return Ok(first);
        }
    }
    if let Some(base) = env("XDG_STATE_HOME") {
        return Ok(PathBuf::from(base).join("cipherstream"));
    }
    if let Some(home) = env("HOME") {
        return Ok(PathBuf::from(home).join(".local/state/cipherstream"));
    }
    Err(Error::Usage(
        "no state directory: give --state-dir DIR (neither STATE_DIRECTORY, XDG_STATE_HOME nor \
         HOME is set)"
            .into(),
    ))
}

/// The customer ids: every `--customer-id`, else `CIPHERSTREAM_CUSTOMER_ID`.
fn customer_ids(given: &[String]) -> Result<Vec<String>> {
    if given.is_empty() {
        return Ok(vec![credentials::customer_id(None)?]);
    }
    given
        .iter()
        .map(|id| credentials::customer_id(Some(id)))
        .collect()
}

fn webhook_secrets(args: &SecretArgs) -> Result<Vec<webhook::Secret>> {
    credentials::secrets(
        &credentials::SecretSources {
            files: &args.secret_file,
            commands: &args.secret_cmd,
            timeout: Duration::from_secs(args.secret_cmd_timeout),
        },
        &Stderr(None),
    )
}

/// `webhook serve`: resolve everything, start the workers and the server, and wait for a signal.
fn serve(args: &WebhookServeArgs) -> Result<()> {
    #[cfg(unix)]
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    // Registered first, so a signal during the start is not lost (nor kills the process half
    // started).
    #[cfg(unix)]
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGQUIT, SIGTERM])
        .map_err(|e| Error::io("cannot install the signal handlers", e))?;
    let secrets = webhook_secrets(&args.secrets)?;
    let customers = customer_ids(&args.customer_id)?;
    let mut openers = HashMap::new();
    for customer in &customers {
        let keys = credentials::keys(&args.keys, customer, &Stderr(None))?;
        openers.insert(
            customer.clone(),
            RowOpener::with_keys(Arc::new(keys), customer),
        );
    }
    if !args.output_dir.is_dir() {
        return Err(Error::Usage(format!(
            "--output-dir {} is not a directory",
            args.output_dir.display()
        )));
    }
    // Whoever may write to the output directory could plant a symbolic link where a job's
    // output goes, and AtomicFile follows links (so that a linked output stays linked).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&args.output_dir)
            .map_err(|e| Error::io(format!("cannot open {}", args.output_dir.display()), e))?
            .permissions()
            .mode();
        if mode & 0o022 != 0 {
            return Err(Error::OpenDirectory {
                what: "--output-dir",
                dir: args.output_dir.clone(),
                mode,
                fix: "go-w",
            });
        }
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Tls::load(cert, key)?),
        _ => None,
    };
    let queue = Arc::new(Queue::open(&state_dir(args.state_dir.as_ref())?)?);
    let _serving = queue.lock_for_serving()?;
    queue.clean_tmp();
    let log: Arc<dyn Log> = Arc::new(StderrLog {
        json: args.log_format == LogFormat::Json,
    });
    for job_id in queue.resume_running()? {
        log.log(Event::Resumed { job_id });
    }
    if args.keep_deliveries > 0 {
        start_pruning(queue.clone(), log.clone(), args.keep_deliveries);
    }
    let listener = Listener::bind(&args.listen)?;
    let jobs = usize::from(args.jobs);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = worker::Config {
        output_dir: args.output_dir.clone(),
        openers,
        options: crate::engine::decrypt::Options {
            threads: (cores / jobs).max(1),
            max_line_bytes: 256 * 1024 * 1024,
            skip_bad_rows: false,
            exact_nonce_check: false,
            spare_core: false,
        },
        client: crate::net::client::ClientOptions {
            ca_file: args.ca_file.clone(),
            idle_timeout: Duration::from_secs(args.idle_timeout),
            https_only: true,
        },
        retries: args.retries,
        connections: usize::from(args.connections),
        retry_backoff: Duration::from_secs(args.retry_backoff),
        after: match &args.exec {
            Some(text) => Some(Box::new(Exec::parse(
                text,
                Duration::from_secs(args.exec_timeout),
            )?)),
            None => None,
        },
    };
    let pool = Pool::start(jobs, queue.clone(), Arc::new(config), log.clone());
    let wanted = args.max_connections as usize;
    let (max_connections, files) = connections_that_fit(wanted);
    if max_connections < wanted {
        log.log(Event::ConnectionsCapped {
            wanted,
            fit: max_connections,
            files: files.unwrap_or(0),
        });
    }
    let limits = Limits {
        header_timeout: Duration::from_secs(args.header_timeout),
        body_timeout: Duration::from_secs(args.body_timeout),
        max_body: args.max_body,
        max_connections,
    };
    let receiver = Receiver {
        secrets,
        tolerance: args.tolerance,
        customers,
        queue: queue.clone(),
        log: log.clone(),
    };
    let server = Arc::new(Server::new(
        listener,
        args.path.clone(),
        limits,
        tls,
        Arc::new(receiver),
        log.clone(),
    ));
    let accepting = {
        let server = server.clone();
        std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || server.run())
            .map_err(|e| Error::io("cannot start the server thread", e))?
    };
    #[cfg(unix)]
    let signal = loop {
        let Some(signal) = signals.forever().next() else {
            break "end of signals";
        };
        if signal != SIGHUP {
            break match signal {
                SIGINT => "SIGINT",
                SIGQUIT => "SIGQUIT",
                _ => "SIGTERM",
            };
        }
        if let Some(tls) = server.tls() {
            log.log(match tls.reload() {
                Ok(()) => Event::TlsReloaded,
                Err(e) => Event::TlsReloadFailed { why: e.to_string() },
            });
        }
    };
    #[cfg(not(unix))]
    let signal = {
        let _ = accepting.join();
        "end"
    };
    log.log(Event::Stopping { signal });
    server.stop();
    #[cfg(unix)]
    let _ = accepting.join();
    server.wait_for_answers(limits.body_timeout + Duration::from_secs(1));
    pool.stop(Duration::from_millis(500));
    let parked = queue.jobs(JobState::Running).map_or(0, |j| j.len());
    log.log(Event::Stopped { parked });
    // A job still running is abandoned here: its download stays for the next start, and its
    // output's temporary file goes (unnamed ones die with the process; named ones are removed
    // now, and no rename can follow while the registry is held).
    let _temps = crate::sink::remove_temporaries_for_exit();
    crate::cmd::helper::kill_all();
    Exec::kill_all();
    std::process::exit(0)
}

/// Environment variables an `--exec` command is given.
pub const ENV_JOB_ID: &str = "CIPHERSTREAM_JOB_ID";
/// The output file's path, for `--exec`.
pub const ENV_OUTPUT: &str = "CIPHERSTREAM_OUTPUT";
/// The delivery's raw body's path, for `--exec`.
pub const ENV_EVENT_FILE: &str = "CIPHERSTREAM_EVENT_FILE";

/// `--exec CMD`: a command run after each job whose output is complete (issue 14, item 5). Split
/// into words as a shell would and run without one (as `--key-cmd` is: `cmd::helper`), with
/// standard input closed, its output on the receiver's standard error, in a process group of its
/// own that is killed at `--exec-timeout` and when the receiver stops. It learns the job from
/// its environment only (never from arguments added to it, which a job id would then choose):
/// `CIPHERSTREAM_JOB_ID`, `CIPHERSTREAM_OUTPUT`, `CIPHERSTREAM_EVENT_FILE` (the delivery's raw
/// body, mode 0600, removed when the command ends); the secrets the receiver itself may have
/// been given in its environment are removed from it.
struct Exec {
    words: Vec<String>,
    name: String,
    timeout: Duration,
}

/// Process groups of `--exec` commands running now.
#[cfg(unix)]
static EXEC_GROUPS: std::sync::Mutex<Vec<rustix::process::Pid>> = std::sync::Mutex::new(Vec::new());

impl Exec {
    fn parse(text: &str, timeout: Duration) -> Result<Exec> {
        let words = shlex::split(text)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| {
                Error::Usage(
                    "--exec is not a command: it is empty, or a quote in it is not closed".into(),
                )
            })?;
        Ok(Exec {
            name: format!("--exec {}", crate::text::quote(&words[0])),
            words,
            timeout,
        })
    }

    fn kill_all() {
        #[cfg(unix)]
        for &group in EXEC_GROUPS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }

    fn failed(&self, why: String) -> Error {
        Error::ExecFailed {
            command: self.name.clone(),
            why,
        }
    }
}

impl worker::AfterJob for Exec {
    fn run(
        &self,
        job_id: &str,
        output: &std::path::Path,
        event_file: &std::path::Path,
    ) -> Result<()> {
        use std::process::{Command, Stdio};
        let mut command = Command::new(&self.words[0]);
        command
            .args(&self.words[1..])
            .stdin(Stdio::null())
            .env_remove(credentials::ENV_KEY)
            .env_remove(webhook::ENV_SECRET)
            // The receiver's socket activation is not the command's.
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .env(ENV_JOB_ID, job_id)
            .env(ENV_OUTPUT, output)
            .env(ENV_EVENT_FILE, event_file);
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            use std::os::unix::process::CommandExt;
            command.process_group(0);
            // Its standard output joins the log's stream, not the receiver's standard output.
            if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
                command.stdout(Stdio::from(fd));
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| self.failed(format!("could not be started: {e}")))?;
        #[cfg(unix)]
        let group = rustix::process::Pid::from_child(&child);
        #[cfg(unix)]
        EXEC_GROUPS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(group);
        let deadline = std::time::Instant::now() + self.timeout;
        let ended = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if std::time::Instant::now() >= deadline => {
                    #[cfg(unix)]
                    let _ =
                        rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                    #[cfg(not(unix))]
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!(
                        "did not finish within {}s (--exec-timeout) and was killed",
                        self.timeout.as_secs()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => break Err(format!("could not be waited for: {e}")),
            }
        };
        #[cfg(unix)]
        EXEC_GROUPS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|&g| g != group);
        match ended {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(self.failed(match status.code() {
                Some(code) => format!("failed (exit status {code})"),
                None => format!("was ended by a signal ({status})"),
            })),
            Err(why) => Err(self.failed(why)),
        }
    }
}

/// `webhook status`: the jobs, by state then arrival.
fn status(args: &WebhookStatusArgs) -> Result<()> {
    let queue = Queue::open_existing(&state_dir(args.state_dir.as_ref())?)?;
    let mut out = String::new();
    for (state, job) in queue.list()? {
        let detail = match state {
            JobState::Done => format!("{} rows", job.rows.unwrap_or(0)),
            JobState::Queued if job.attempts > 0 => format!(
                "try {} at {}: {}",
                job.attempts + 1,
                crate::time::format_rfc3339(job.not_before),
                job.last_error.as_deref().unwrap_or("")
            ),
            _ => job.last_error.clone().unwrap_or_default(),
        };
        if args.json {
            let line = serde_json::json!({
                "state": state.name(),
                "job_id": job.job_id,
                "customer_id": job.customer_id,
                "delivery_id": job.delivery_id,
                "tries": job.attempts,
                "received_at": crate::time::format_rfc3339(job.received_at),
                "finished_at": job.finished_at.map(crate::time::format_rfc3339),
                "rows_processed": job.rows_processed,
                "rows": job.rows,
                "error": job.last_error,
            });
            out.push_str(&crate::text::json(&line));
        } else {
            // Ids passed safe_id (no tab, no newline); the customer id and the detail may hold
            // anything, and are escaped (a tab becomes \t).
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                state.name(),
                job.job_id,
                crate::text::escape(&job.customer_id),
                job.attempts,
                crate::time::format_rfc3339(job.received_at),
                crate::text::escape(&detail)
            ));
        }
        out.push('\n');
    }
    write_stdout(out.as_bytes())
}

/// `webhook replay`: verify the signature (not the timestamp) and record the delivery as the
/// server would, a delivery id seen before included; a running receiver picks the job up.
fn replay(args: &WebhookReplayArgs) -> Result<()> {
    let signature = Signature::parse(&args.signature)?;
    let secrets = webhook_secrets(&args.secrets)?;
    let customers = customer_ids(&args.customer_id)?;
    let input = args.body.name();
    let body = read_body(&args.body, webhook::MAX_BODY_BYTES)?;
    let verified = webhook::verify(&input, &body, &signature, &secrets, TimestampCheck::Skip)?;
    drop(secrets);
    let queue = Queue::open(&state_dir(args.state_dir.as_ref())?)?;
    let now = crate::time::now()?;
    match delivery::parse(&verified, &body, &args.signature, &customers)? {
        Parsed::Refused { delivery_id, why } => {
            let name = queue.refuse(delivery_id.as_deref(), &why, &args.signature, &body, now)?;
            Err(Error::DeliveryRefused {
                why,
                recorded: PathBuf::from("refused").join(name),
            })
        }
        Parsed::Delivery(d) => {
            let outcome = queue.record(&d, true, now)?;
            let event = Event::Delivery {
                delivery_id: d.delivery_id.clone(),
                event: d.event.clone(),
                job_id: d.job.as_ref().map(|j| j.job_id.clone()),
                outcome,
            };
            write_stdout(format!("{event}\n").as_bytes())
        }
    }
}

/// Verify the signature, the timestamp and (with `--seen-file`) the delivery id, then pass the body
/// through to standard output unchanged.
fn verify(args: &WebhookVerifyArgs) -> Result<()> {
    let signature = Signature::parse(&args.signature)?;
    let secrets = credentials::secrets(
        &credentials::SecretSources {
            files: &args.secret_file,
            commands: &args.secret_cmd,
            timeout: Duration::from_secs(args.secret_cmd_timeout),
        },
        &Stderr(None),
    )?;
    let input = args.body.name();
    let body = read_body(&args.body, args.max_body_bytes)?;
    let check = if args.no_timestamp_check {
        TimestampCheck::Skip
    } else {
        TimestampCheck::Within {
            tolerance: args.tolerance,
            now: crate::time::now()?,
        }
    };
    let verified = webhook::verify(&input, &body, &signature, &secrets, check)?;
    drop(secrets);
    if let Some(seen_file) = &args.seen_file {
        // Recorded before printing: a delivery is handed on at most once, even if the consumer of
        // standard output then fails.
        webhook::record_delivery(seen_file, verified.delivery_id()?)?;
    }
    write_stdout(&body)
}

/// Print the `X-CipherStream-Signature` value for a body.
fn sign(args: &WebhookSignArgs) -> Result<()> {
    let secrets = credentials::secrets(
        &credentials::SecretSources {
            files: args.secret_file.as_slice(),
            commands: args.secret_cmd.as_slice(),
            timeout: Duration::from_secs(args.secret_cmd_timeout),
        },
        &Stderr(None),
    )?;
    let body = read_body(&args.body, args.max_body_bytes)?;
    let mut line = secrets[0].signature_header(&body);
    drop(secrets);
    line.push('\n');
    write_stdout(line.as_bytes())
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing standard output", e))
}

/// Read a webhook body, byte for byte, at most `limit` bytes (`--max-body-bytes`): a file, or
/// standard input for `-` (a usage error when standard input is a terminal, rather than waiting
/// silently).
fn read_body(input: &Input, limit: u64) -> Result<Vec<u8>> {
    if input.is_interactive() {
        return Err(Error::Usage(
            "no BODY given and standard input is a terminal: pass the body's file, or pipe the \
             body in"
                .into(),
        ));
    }
    Source::new(input).read_all(
        limit,
        "webhook body",
        "raise the limit with --max-body-bytes BYTES",
    )
}

/// How often old delivery records are pruned, after the first time at start.
const PRUNE_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Remove delivery records and refusals older than `days` days now (before the receiver
/// listens), then every [`PRUNE_EVERY`] on a thread of its own (it ends with the process). A
/// failure is logged and tried again next time: it never stops the receiver.
fn start_pruning(queue: Arc<Queue>, log: Arc<dyn Log>, days: u32) {
    let thread_log = log.clone();
    let prune = move || {
        let log = &thread_log;
        let cut = std::time::SystemTime::now()
            .checked_sub(Duration::from_secs(u64::from(days) * 86_400))
            .unwrap_or(std::time::UNIX_EPOCH);
        match queue.prune(cut) {
            Ok((0, 0)) => {}
            Ok((deliveries, refused)) => log.log(Event::Pruned {
                deliveries,
                refused,
                days,
            }),
            Err(e) => log.log(Event::PruneFailed { why: e.to_string() }),
        }
    };
    prune();
    let spawned = std::thread::Builder::new()
        .name("prune".into())
        .spawn(move || loop {
            std::thread::sleep(PRUNE_EVERY);
            prune();
        });
    if let Err(e) = spawned {
        log.log(Event::PruneFailed {
            why: format!("cannot start its thread: {e}"),
        });
    }
}

/// Files the receiver keeps open besides its connections: the listener, state and lock files,
/// downloads and outputs being written, `--exec` pipes.
const SPARE_FILES: u64 = 128;

/// The connection cap that fits in the open-files limit, after raising its soft value to the
/// hard one (systemd's default soft limit is 1024, and each connection holds two descriptors:
/// its socket and the clone the server keeps to close it), and the limit. Past the limit,
/// `accept` fails and the connection that could make room is never accepted.
fn connections_that_fit(wanted: usize) -> (usize, Option<u64>) {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let limit = getrlimit(Resource::Nofile);
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        let files = match limit.maximum.is_some() && setrlimit(Resource::Nofile, raised).is_ok() {
            true => limit.maximum,
            false => limit.current,
        };
        match files {
            Some(files) => {
                let fit =
                    usize::try_from(files.saturating_sub(SPARE_FILES) / 2).unwrap_or(usize::MAX);
                (wanted.min(fit.max(1)), Some(files))
            }
            None => (wanted, None),
        }
    }
    #[cfg(not(unix))]
    (wanted, None)
}
