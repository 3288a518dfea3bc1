//! The receiver's workers: a bounded pool of threads that turns queued jobs into output files
//! (issue 14, item 3).
//!
//! A job, once claimed (moved to `running/`): the presigned URL is fetched to
//! `STATE/downloads/<job_id>/export` with `net::download::fetch` (resumable: an interrupted
//! download, in this process or after a restart, continues where it stopped; checked against
//! `file_size_bytes`), decrypted with the keys of the job's customer id and `rows_processed` as
//! the expected row count into `OUTPUT_DIR/<job_id>.ndjson` through `sink::AtomicFile` (mode
//! 0600; the file appears only complete), then the job is moved to `done/` and its download
//! removed. A kill between the output's rename and the move to `done/` redoes the decryption from
//! the kept download at the next start, and the rename replaces the file with the same bytes; an
//! export found complete at its name (`fetch` renames it there only whole and checked) is not
//! downloaded again. `tests/it/serve.rs` kills the process at each of these steps (the fault
//! points of [`crate::webhook::fault`]) and in the middle of a download, and checks that the
//! restart ends with exactly one correct output and no second download.
//!
//! Failures: an I/O error, a download that outlasted its own retries, an object that changed
//! under it or a key command that failed may pass; the job goes back to the queue with a backoff
//! (the first wait `Config::retry_backoff`, doubling to at most an hour) until the URL's expiry
//! (12 hours after the delivery when neither the body nor the URL says), then is parked in
//! `failed/` with its reason. Anything else is parked at once: an expired or
//! refused URL (a retry of the same URL cannot help), a download of the wrong size, rows that
//! fail to authenticate, a row count other than `rows_processed`.
//!
//! Stopping: a worker takes no new job once told to stop; a job it is running is left in
//! `running/` and resumes at the next start (nothing of it is lost: the download is on disk and
//! the output's temporary file dies with the process).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::engine::decrypt::{Destination, Options};
use crate::engine::progress::Progress;
use crate::error::{Error, Result};
use crate::format::record::RowOpener;
use crate::net::client::{Client, ClientOptions};
use crate::net::download;
use crate::net::url::DownloadUrl;
use crate::sink::AtomicFile;
use crate::source::{Input, Source};
use crate::warning::{Warn, Warning};
use crate::webhook::fault::fault_point;
use crate::webhook::log::{Event, Log};
use crate::webhook::queue::{create_private_dir, Job, JobState, Queue};

/// Longest wait between two tries of a job.
const MAX_JOB_BACKOFF: Duration = Duration::from_secs(3600);
/// How often an idle worker looks at the queue for jobs another process queued
/// (`webhook replay`) or whose backoff ended.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// What every job needs.
pub struct Config {
    /// Where outputs go.
    pub output_dir: PathBuf,
    /// Opens rows, per customer id.
    pub openers: HashMap<String, RowOpener>,
    /// The decryption pipeline's options (threads, line limit).
    pub options: Options,
    /// The download client's options.
    pub client: ClientOptions,
    /// Failures in a row without progress before one download try gives up.
    pub retries: u32,
    /// Connections each download uses at once.
    pub connections: usize,
    /// The wait after a job's first failed try; it doubles with each try.
    pub retry_backoff: Duration,
    /// What to run after each job whose output is complete (`--exec`), if anything.
    pub after: Option<Box<dyn AfterJob>>,
}

/// A command run after each job whose output is complete (`webhook serve --exec`). Its failure
/// is retried as a job's is (the output is not made again); the job is done only once it
/// succeeded.
pub trait AfterJob: Send + Sync {
    /// Run for the job `job_id`, whose output is `output` and whose delivery's raw body is in
    /// `event_file`. An error is [`Error::ExecFailed`].
    fn run(
        &self,
        job_id: &str,
        output: &std::path::Path,
        event_file: &std::path::Path,
    ) -> Result<()>;
}

/// The niceness of the workers (see [`work`]).
#[cfg(target_os = "linux")]
const WORKER_NICE: i32 = 10;

/// The running workers.
pub struct Pool {
    stop: Arc<AtomicBool>,
    queue: Arc<Queue>,
    handles: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Start `jobs` workers.
    pub fn start(jobs: usize, queue: Arc<Queue>, config: Arc<Config>, log: Arc<dyn Log>) -> Pool {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..jobs.max(1))
            .map(|i| {
                let (stop, queue, config, log) =
                    (stop.clone(), queue.clone(), config.clone(), log.clone());
                std::thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || work(&stop, &queue, &config, &*log))
                    .expect("a worker thread starts")
            })
            .collect();
        Pool {
            stop,
            queue,
            handles,
        }
    }

    /// Tell the workers to take no new job, and wait up to `within` for those between jobs to
    /// return. A job still running stays in `running/` (it resumes at the next start).
    pub fn stop(self, within: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        self.queue.wake_all();
        let until = std::time::Instant::now() + within;
        for handle in self.handles {
            while !handle.is_finished() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

fn work(stop: &AtomicBool, queue: &Queue, config: &Config, log: &dyn Log) {
    // Answers first: a worker, and the download, decryption and --exec threads and processes
    // it starts (they inherit it), run at nice 10, so that a burst of deliveries arriving while
    // jobs run is answered by the server's threads (nice 0) before the jobs' work goes on. On
    // Linux a priority is a thread's (`setpriority(2)`, NOTES: who 0 is the calling thread).
    // Best effort: a system that refuses leaves the worker as it was.
    #[cfg(target_os = "linux")]
    let _ = rustix::process::setpriority_process(None, WORKER_NICE);
    while !stop.load(Ordering::SeqCst) {
        let now = crate::time::now().unwrap_or(0);
        match queue.claim(now) {
            Ok(Some(job)) => run(job, queue, config, log),
            Ok(None) => {
                let wait = queue
                    .next_due()
                    .map(|at| Duration::from_secs(at.saturating_sub(now).max(0) as u64))
                    .unwrap_or(IDLE_POLL)
                    .min(IDLE_POLL);
                queue.wait_for_work(wait);
            }
            Err(e) => {
                log.log(Event::StoreFailed {
                    why: format!("cannot take a job from the queue: {e}"),
                });
                std::thread::sleep(IDLE_POLL);
            }
        }
    }
}

/// Run one claimed job and move it to its next state.
fn run(mut job: Job, queue: &Queue, config: &Config, log: &dyn Log) {
    log.log(Event::JobStarted {
        job_id: job.job_id.clone(),
        attempt: job.attempts,
    });
    // A panic is a bug: it parks the job as failed with a word on it, instead of ending this
    // worker for good (and leaving the job in running/ until a restart).
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        attempt(&mut job, queue, config, log)
    }))
    .unwrap_or_else(|_| {
        Err(Error::Usage(
            "cipherstream failed unexpectedly while running this job (a bug: please report it \
             with the log); replay its delivery with `webhook replay` once fixed"
                .into(),
        ))
    });
    let now = crate::time::now().unwrap_or(0);
    let moved = match result {
        Ok((rows, bytes, output)) => {
            job.rows = Some(rows);
            job.bytes = Some(bytes);
            job.finished_at = Some(now);
            job.last_error = None;
            queue.finish(&job, JobState::Done).map(|()| {
                let _ = std::fs::remove_dir_all(queue.download_dir(&job.job_id));
                log.log(Event::JobDone {
                    job_id: job.job_id.clone(),
                    rows,
                    bytes,
                    output,
                });
            })
        }
        Err(e) => {
            let why = e.to_string();
            let wait = backoff(config.retry_backoff, job.attempts);
            let next = now.saturating_add(wait.as_secs() as i64);
            let expired = next >= retry_horizon(&job);
            if may_pass(&e) && !expired {
                job.last_error = Some(why.clone());
                job.not_before = next;
                queue.retry(&job).map(|()| {
                    log.log(Event::JobRetry {
                        job_id: job.job_id.clone(),
                        attempt: job.attempts,
                        why,
                        wait,
                    })
                })
            } else {
                let why = if may_pass(&e) && job.output_done {
                    format!("{why}; no more tries: the job's URL has expired")
                } else if may_pass(&e) {
                    format!("{why}; the download URL expires before another try")
                } else {
                    why
                };
                job.last_error = Some(why.clone());
                job.finished_at = Some(now);
                queue.finish(&job, JobState::Failed).map(|()| {
                    if !job.output_done {
                        let _ = std::fs::remove_dir_all(queue.download_dir(&job.job_id));
                    }
                    log.log(Event::JobFailed {
                        job_id: job.job_id.clone(),
                        why,
                        hint: e.hint(),
                    })
                })
            }
        }
    };
    if let Err(e) = moved {
        // The job stays where it is (running/): the next start resumes it.
        log.log(Event::StoreFailed {
            why: format!("job {}: cannot record its state: {e}", job.job_id),
        });
    }
}

/// How long a presigned URL lives when neither the body nor the URL says (SPEC section 4: the
/// vendor's URLs expire after 12 hours).
const DEFAULT_URL_LIFETIME: i64 = 12 * 3600;

/// Until when a job is retried: its URL's expiry, else 12 hours after it was received.
fn retry_horizon(job: &Job) -> i64 {
    job.expires_at
        .unwrap_or_else(|| job.received_at.saturating_add(DEFAULT_URL_LIFETIME))
}

/// Whether a failed try may succeed later with the same URL.
fn may_pass(e: &Error) -> bool {
    matches!(
        e,
        Error::Io { .. }
            | Error::Write { .. }
            | Error::Spool { .. }
            | Error::DownloadFailed { .. }
            | Error::ObjectChanged { .. }
            | Error::Command(_)
            | Error::ExecFailed { .. }
    )
}

/// The wait after try `n` (1-based): `first`, doubling, at most [`MAX_JOB_BACKOFF`].
fn backoff(first: Duration, n: u32) -> Duration {
    first
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(MAX_JOB_BACKOFF)
}

/// Warnings of a job, logged with its id.
struct JobWarn<'a> {
    job_id: &'a str,
    log: &'a dyn Log,
}

impl Warn for JobWarn<'_> {
    fn warn(&self, warning: Warning) {
        self.log.log(Event::JobWarning {
            job_id: self.job_id.to_owned(),
            warning: warning.to_string(),
        });
    }
}

/// One try: download, decrypt, commit, then the `--exec` command. Returns the rows, the
/// download's size and the output. With `--exec`, a job whose output is complete is marked so
/// before the command runs, and a later try only runs the command again.
fn attempt(
    job: &mut Job,
    queue: &Queue,
    config: &Config,
    log: &dyn Log,
) -> Result<(u64, u64, String)> {
    let output = config.output_dir.join(format!("{}.ndjson", job.job_id));
    let name = output.display().to_string();
    let (rows, bytes) = match (job.output_done, job.rows, job.bytes) {
        (true, Some(rows), Some(bytes)) if output.is_file() => (rows, bytes),
        _ => {
            let made = make_output(job, queue, config, log, &output)?;
            if config.after.is_some() {
                job.output_done = true;
                job.rows = Some(made.0);
                job.bytes = Some(made.1);
                queue.update_running(job)?;
                let _ = std::fs::remove_dir_all(queue.download_dir(&job.job_id));
            }
            made
        }
    };
    if let Some(after) = &config.after {
        let event_file = queue.exec_file(&job.delivery_id, &job.job_id)?;
        let ran = after.run(&job.job_id, &output, &event_file);
        let _ = std::fs::remove_file(&event_file);
        ran?;
    }
    Ok((rows, bytes, name))
}

/// Download, decrypt and commit the output: the rows and the download's size.
fn make_output(
    job: &Job,
    queue: &Queue,
    config: &Config,
    log: &dyn Log,
    output: &std::path::Path,
) -> Result<(u64, u64)> {
    let text = job
        .s3_url
        .as_ref()
        .ok_or_else(|| Error::Usage("the job has no download URL left".into()))?;
    let url = DownloadUrl::parse(&text.0).map_err(Error::BadUrl)?;
    let warn = JobWarn {
        job_id: &job.job_id,
        log,
    };
    let dir = queue.download_dir(&job.job_id);
    create_private_dir(&dir)?;
    let export = dir.join("export");
    let client = Client::new(&ClientOptions {
        https_only: url.is_https(),
        ..config.client.clone()
    })?;
    // `fetch` puts the export at its name only complete and checked (size and all): one found
    // there is a download that finished before the process stopped, not to be fetched again.
    let bytes = match std::fs::metadata(&export) {
        Ok(meta) if meta.is_file() => meta.len(),
        _ => {
            if let Some(at) = job.expires_at {
                if crate::time::now()? >= at {
                    return Err(Error::UrlExpired {
                        url: url.shown().to_owned(),
                        at: Some(at),
                    });
                }
            }
            download::fetch(
                &client,
                &url,
                &export,
                &download::Options {
                    expect_size: job.file_size_bytes,
                    retries: config.retries,
                    connections: config.connections,
                },
                &warn,
                &|_, _, _| {},
            )?
            .bytes
        }
    };
    fault_point("after-download");
    let opener = config
        .openers
        .get(&job.customer_id)
        .ok_or_else(|| Error::Usage(format!("no keys for the customer id of job {}", job.job_id)))?
        .for_input();
    let name = output.display().to_string();
    let mut file = AtomicFile::create(output)?;
    let input = Input::Path(export);
    let ndjson = Source::new(&input).ndjson(None)?;
    let sink = Destination {
        writer: &mut file,
        name: &name,
        written: None,
    };
    let summary = crate::engine::decrypt::run(
        ndjson,
        &opener,
        &config.options,
        Some(sink),
        &Progress::hidden(),
        &warn,
    )?;
    for &(first, later) in &summary.nonce_reuse {
        warn.warn(Warning::NonceReuse {
            input: input.name(),
            first,
            later,
        });
    }
    if summary.rows != job.rows_processed {
        return Err(Error::RowCount {
            input: input.name(),
            expected: job.rows_processed,
            found: summary.rows,
        });
    }
    fault_point("before-commit");
    file.commit()?;
    fault_point("after-commit");
    Ok((summary.rows, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let first = Duration::from_secs(30);
        assert_eq!(backoff(first, 1), first);
        assert_eq!(backoff(first, 2), first * 2);
        assert_eq!(backoff(first, 3), first * 4);
        assert_eq!(backoff(first, 40), MAX_JOB_BACKOFF);
    }

    #[test]
    fn a_job_without_an_expiry_is_retried_for_twelve_hours() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "version": 1, "job_id": "j", "delivery_id": "d", "customer_id": "c",
            "rows_processed": 1, "file_size_bytes": null, "s3_url": null, "expires_at": null,
            "received_at": 1000, "attempts": 1, "not_before": 1000, "last_error": null,
            "finished_at": null, "rows": null
        }))
        .unwrap();
        assert_eq!(retry_horizon(&job), 1000 + 12 * 3600);
        let job = Job {
            expires_at: Some(5000),
            ..job
        };
        assert_eq!(retry_horizon(&job), 5000);
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(may_pass(&Error::io("x", std::io::ErrorKind::Other.into())));
        assert!(!may_pass(&Error::UrlExpired {
            url: "https://h/k".into(),
            at: None
        }));
        assert!(!may_pass(&Error::RowCount {
            input: "i".into(),
            expected: 1,
            found: 0
        }));
    }
}
