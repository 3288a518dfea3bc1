//! The receiver's durable queue: plain files in the state directory, every change of state one
//! atomic rename (issue 14, items 3 and 4).
//!
//! ```text
//! STATE/
//!   deliveries/<delivery_id>.json   every verified delivery: its raw body and signature
//!   refused/<delivery_id>.json      verified deliveries that will not be acted on, and why
//!                                   (`<time>-<random>.json` when the id cannot name a file)
//!   jobs/queued/<job_id>.json       a job to run (at or after its `not_before`)
//!   jobs/running/<job_id>.json      a job a worker holds (found at start: the process died)
//!   jobs/done/<job_id>.json         a job whose output is complete
//!   jobs/failed/<job_id>.json       a job parked with its reason
//!   downloads/<job_id>/             the export being downloaded (resumable, `net::download`)
//!   exec/<job_id>.json              the raw body handed to `--exec` (while it runs)
//!   tmp/                            files being written, before their rename
//!   record.lock, serve.lock         who may record (briefly), who serves (for its lifetime)
//! ```
//!
//! Directories are created 0700 and files 0600: a delivery's body holds the presigned URL, a
//! bearer credential (SPEC section 4). A file is written in `tmp/`, synced, and renamed into
//! place, and the directory is synced: a file in a state directory is always complete. A job is
//! in exactly one state directory at any instant: a transition rewrites the job in its directory
//! (temporary file, rename) and then renames it to the next directory, so a process killed
//! anywhere (kill -9, a power cut after the syncs) leaves every job in one well-defined state.
//! A job found in `running/` at start is moved back to `queued/`; its download resumes.
//!
//! Recording a delivery: its record and its job are written to `tmp/` and synced first, outside
//! any lock, so that concurrent deliveries sync in parallel. Then, under `record.lock` (an
//! exclusive `flock`, also taken by `webhook replay` from another process), the delivery id and
//! the job id are looked up and the files renamed into place: the job (unless it is already
//! queued, running or done), then the delivery. Then the directories are synced, once for all
//! the deliveries recorded meanwhile (a group commit), and only then is the delivery answered.
//! A delivery id recorded before is a duplicate only if its job exists too, so a crash that kept
//! the delivery's rename and lost its job's (renames in two directories, synced together) is
//! healed by the vendor's retry, which creates the job again; one that kept the job and lost the
//! delivery finds the job, and is answered 200 as a duplicate.
//!
//! Ids from a request become file names only through [`safe_id`]: `[A-Za-z0-9][A-Za-z0-9._-]`,
//! at most 128 characters, so no `/`, no leading dot, no `..`, nothing a terminal interprets.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::webhook::fault::fault_point;
use crate::webhook::log::Outcome;

/// Longest id (delivery or job) used as a file name.
pub const MAX_ID_LEN: usize = 128;

/// Whether an id from a request may name a file: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`.
pub fn safe_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_ID_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobState {
    /// Waiting for a worker (or for its next try).
    Queued,
    /// Held by a worker.
    Running,
    /// Its output is complete.
    Done,
    /// Parked with its reason.
    Failed,
}

impl JobState {
    /// Every state, in the order `webhook status` lists them.
    pub const ALL: [JobState; 4] = [
        JobState::Queued,
        JobState::Running,
        JobState::Done,
        JobState::Failed,
    ];

    /// The state's name, which is also its directory's.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }
}

/// A presigned URL kept in a job file: a secret, never in `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(pub String);

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretUrl(<redacted>)")
    }
}

/// A job: what a `job.completed` delivery asks for, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Format version of the file.
    pub version: u32,
    /// The job id ([`safe_id`]); the output is `OUTPUT_DIR/<job_id>.ndjson`.
    pub job_id: String,
    /// The delivery that created (or last requeued) the job.
    pub delivery_id: String,
    /// The customer id, one the receiver was configured for.
    pub customer_id: String,
    /// `data.rows_processed`: the row count the output must have.
    pub rows_processed: u64,
    /// `data.file_size_bytes`: the size the download must have, when given.
    pub file_size_bytes: Option<u64>,
    /// `data.s3_url`; removed once the job is done or failed.
    pub s3_url: Option<SecretUrl>,
    /// When the URL stops working (`data.expires_at`, else the URL's own expiry), Unix seconds.
    pub expires_at: Option<i64>,
    /// When the delivery was recorded.
    pub received_at: i64,
    /// Tries started.
    pub attempts: u32,
    /// Not to be tried before this time (after a failed try).
    pub not_before: i64,
    /// Why the last try failed, or why the job was parked.
    pub last_error: Option<String>,
    /// When the job was done or parked.
    pub finished_at: Option<i64>,
    /// Rows written, once the output is complete.
    pub rows: Option<u64>,
    /// Bytes of the export, once the output is complete.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// The output is complete and only the `--exec` command is left to run (a retry skips the
    /// download and the decryption).
    #[serde(default)]
    pub output_done: bool,
}

/// What a verified `job.completed` asks for (from [`crate::webhook::delivery`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOrder {
    /// See [`Job::job_id`].
    pub job_id: String,
    /// See [`Job::customer_id`].
    pub customer_id: String,
    /// See [`Job::rows_processed`].
    pub rows_processed: u64,
    /// See [`Job::file_size_bytes`].
    pub file_size_bytes: Option<u64>,
    /// See [`Job::s3_url`].
    pub s3_url: SecretUrl,
    /// See [`Job::expires_at`].
    pub expires_at: Option<i64>,
}

/// A verified delivery to record. Its `Debug` leaves out the body, which holds the presigned URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its delivery id ([`safe_id`]).
    pub delivery_id: String,
    /// Its `event`, as sent (`?` when absent).
    pub event: String,
    /// The `X-CipherStream-Signature` it came with.
    pub signature: String,
    /// The raw body, byte for byte (verified JSON, so UTF-8).
    pub body: String,
    /// For a `job.completed`: the job.
    pub job: Option<JobOrder>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("delivery_id", &self.delivery_id)
            .field("event", &self.event)
            .field("body", &"<redacted>")
            .field("job", &self.job)
            .finish()
    }
}

/// The file that records a delivery.
#[derive(Serialize, Deserialize)]
struct DeliveryRecord {
    version: u32,
    delivery_id: String,
    event: String,
    received_at: i64,
    signature: String,
    body: String,
}

/// The file that records a refused delivery.
#[derive(Serialize)]
struct RefusedRecord<'a> {
    version: u32,
    received_at: i64,
    why: &'a str,
    signature: &'a str,
    body: &'a str,
}

/// The state directory, opened.
pub struct Queue {
    root: PathBuf,
    /// Woken when a job is queued by this process.
    wake: (Mutex<u64>, Condvar),
    /// The directory syncs of [`Queue::record`], shared by concurrent deliveries.
    sync: GroupSync,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue").field("root", &self.root).finish()
    }
}

const SUBDIRS: [&str; 10] = [
    "deliveries",
    "exec",
    "refused",
    "jobs",
    "jobs/queued",
    "jobs/running",
    "jobs/done",
    "jobs/failed",
    "downloads",
    "tmp",
];

fn io_at(what: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |e| Error::io(what, e)
}

impl Queue {
    /// Open the state directory at `root`, creating it and its subdirectories (mode 0700) as
    /// needed.
    /// A state directory open to group or others is refused (it holds the presigned URLs).
    pub fn open(root: &Path) -> Result<Queue> {
        create_private_dir(root)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(root)
                .map_err(io_at("cannot open", root))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(Error::OpenDirectory {
                    what: "state directory",
                    dir: root.to_path_buf(),
                    mode,
                    fix: "700",
                });
            }
        }
        for sub in SUBDIRS {
            create_private_dir(&root.join(sub))?;
        }
        Ok(Queue {
            root: root.to_path_buf(),
            wake: (Mutex::new(0), Condvar::new()),
            sync: GroupSync::default(),
        })
    }

    /// Open an existing state directory for reading (`webhook status`): nothing is created.
    pub fn open_existing(root: &Path) -> Result<Queue> {
        for sub in ["jobs/queued", "jobs/running", "jobs/done", "jobs/failed"] {
            let dir = root.join(sub);
            if !dir.is_dir() {
                return Err(Error::Usage(format!(
                    "{} is not a receiver's state directory (it has no {sub})",
                    root.display()
                )));
            }
        }
        Ok(Queue {
            root: root.to_path_buf(),
            wake: (Mutex::new(0), Condvar::new()),
            sync: GroupSync::default(),
        })
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Take the serving lock for the life of the returned file: two receivers on one state
    /// directory would run every job twice.
    pub fn lock_for_serving(&self) -> Result<File> {
        let path = self.root.join("serve.lock");
        let file = private_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_at("cannot open", &path))?;
        if file.try_lock().is_err() {
            return Err(Error::Usage(format!(
                "another `cipherstream webhook serve` uses the state directory {}",
                self.root.display()
            )));
        }
        Ok(file)
    }

    /// Remove temporary files older than an hour (left by a process that died while writing).
    pub fn clean_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600));
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Remove delivery records and refusals last written before `before` (the file's mtime:
    /// when it was renamed into place), and return how many of each. A delivery record only
    /// answers a redelivery of its id as a duplicate, and the vendor retries within hours; job
    /// files are kept, so a delivery for a job already done is still a duplicate however old.
    /// Under the record lock, so no lookup sees a record half gone.
    pub fn prune(&self, before: std::time::SystemTime) -> Result<(usize, usize)> {
        let _lock = self.record_lock()?;
        let prune_dir = |name: &str| -> Result<usize> {
            let dir = self.root.join(name);
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(io_at("cannot read", &dir)(e)),
            };
            let mut removed = 0;
            for entry in entries.flatten() {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < before);
                if old && entry.file_type().is_ok_and(|t| t.is_file()) {
                    fs::remove_file(entry.path()).map_err(io_at("cannot remove", &entry.path()))?;
                    removed += 1;
                }
            }
            if removed > 0 {
                sync_dir(&dir)?;
            }
            Ok(removed)
        };
        Ok((prune_dir("deliveries")?, prune_dir("refused")?))
    }

    fn dir(&self, state: JobState) -> PathBuf {
        self.root.join("jobs").join(state.name())
    }

    fn job_path(&self, state: JobState, job_id: &str) -> PathBuf {
        self.dir(state).join(format!("{job_id}.json"))
    }

    /// The directory a job's download goes to.
    pub fn download_dir(&self, job_id: &str) -> PathBuf {
        self.root.join("downloads").join(job_id)
    }

    /// Where the job is, if anywhere.
    pub fn state_of(&self, job_id: &str) -> Option<JobState> {
        JobState::ALL
            .into_iter()
            .find(|&s| self.job_path(s, job_id).exists())
    }

    /// Record a verified delivery (see the module's documentation for the order of the steps).
    /// `replay` (`webhook replay`): a delivery id recorded before is recorded again rather than
    /// answered as a duplicate, so a redelivery of a refused or failed delivery is acted on.
    ///
    /// When this returns, what it recorded (or found already recorded) is on disk: every outcome,
    /// duplicates included, waits for a directory sync that began after the lookup.
    pub fn record(&self, delivery: &Delivery, replay: bool, now: i64) -> Result<Outcome> {
        // The files are written and synced before the lock is taken, so that concurrent
        // deliveries sync in parallel (the journal commits them together) and the lock is held
        // only for lookups and renames.
        let record = DeliveryRecord {
            version: 1,
            delivery_id: delivery.delivery_id.clone(),
            event: delivery.event.clone(),
            received_at: now,
            signature: delivery.signature.clone(),
            body: delivery.body.clone(),
        };
        let mut record_temp =
            Some(self.write_temp(&serde_json::to_vec(&record).expect("a record serialises"))?);
        let mut job_temp = None;
        if let Some(order) = &delivery.job {
            let job = new_job(delivery, order, now);
            let text = serde_json::to_vec_pretty(&job).expect("a job serialises");
            job_temp = Some(self.write_temp(&text));
        }
        let result = match job_temp.take().transpose() {
            Ok(mut job_temp) => {
                let result = self.record_locked(delivery, replay, &mut record_temp, &mut job_temp);
                if let Some(temp) = job_temp {
                    let _ = fs::remove_file(temp);
                }
                result
            }
            Err(e) => Err(e),
        };
        if let Some(temp) = record_temp {
            let _ = fs::remove_file(temp);
        }
        let outcome = result?;
        self.sync.sync(&[
            self.root.join("deliveries"),
            self.dir(JobState::Queued),
            self.dir(JobState::Failed),
        ])?;
        fault_point("after-record");
        if matches!(
            outcome,
            Outcome::Queued | Outcome::Requeued | Outcome::Refreshed
        ) {
            let (count, cv) = &self.wake;
            *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            cv.notify_all();
        }
        Ok(outcome)
    }

    /// The lookups and renames of [`Queue::record`], under the record lock. A temporary file
    /// is taken out of its `Option` once it is renamed into place; the caller removes the rest.
    fn record_locked(
        &self,
        delivery: &Delivery,
        replay: bool,
        record_temp: &mut Option<PathBuf>,
        job_temp: &mut Option<PathBuf>,
    ) -> Result<Outcome> {
        let _lock = self.record_lock()?;
        let record_path = self
            .root
            .join("deliveries")
            .join(format!("{}.json", delivery.delivery_id));
        let job = delivery
            .job
            .as_ref()
            .map(|order| (order, self.state_of(&order.job_id)));
        // A delivery recorded before is a duplicate only if its job exists too: then no order
        // of the renames below needs to survive a power cut (a record whose job was lost is
        // recorded again, and its job created).
        let job_exists = job.as_ref().is_none_or(|(_, state)| state.is_some());
        if !replay && job_exists && record_path.exists() {
            return Ok(Outcome::DuplicateDelivery);
        }
        let rename =
            |from: &Path, to: &Path| fs::rename(from, to).map_err(io_at("cannot write", to));
        let outcome = match job {
            None => Outcome::Recorded,
            Some((order, Some(JobState::Queued))) => {
                // A job waiting to try again may hold a URL about to expire, and the vendor's
                // answer to an expiry is a delivery with a fresh one: take it, due at once.
                // Under the record lock, which `claim` takes too: no worker holds it meanwhile.
                let path = self.job_path(JobState::Queued, &order.job_id);
                let queued: Option<Job> = fs::read(&path)
                    .ok()
                    .and_then(|text| serde_json::from_slice(&text).ok());
                match queued {
                    Some(mut queued)
                        if order
                            .expires_at
                            .is_some_and(|new| queued.expires_at.is_none_or(|old| new > old)) =>
                    {
                        queued.s3_url = Some(order.s3_url.clone());
                        queued.expires_at = order.expires_at;
                        queued.file_size_bytes = order.file_size_bytes.or(queued.file_size_bytes);
                        queued.not_before = 0;
                        let text = serde_json::to_vec_pretty(&queued).expect("a job serialises");
                        let temp = self.write_temp(&text)?;
                        if let Err(e) = rename(&temp, &path) {
                            let _ = fs::remove_file(&temp);
                            return Err(e);
                        }
                        Outcome::Refreshed
                    }
                    _ => Outcome::DuplicateJob,
                }
            }
            Some((_, Some(JobState::Running | JobState::Done))) => Outcome::DuplicateJob,
            Some((order, state)) => {
                let temp = job_temp.as_ref().expect("written for a job");
                let queued = self.job_path(JobState::Queued, &order.job_id);
                let outcome = if state == Some(JobState::Failed) {
                    // A redelivery of a parked job (a fresh URL): rewrite it where it is, then
                    // move it, so it is never in two places.
                    let failed = self.job_path(JobState::Failed, &order.job_id);
                    rename(temp, &failed)?;
                    *job_temp = None;
                    rename(&failed, &queued)?;
                    Outcome::Requeued
                } else {
                    rename(temp, &queued)?;
                    Outcome::Queued
                };
                *job_temp = None;
                outcome
            }
        };
        fault_point("before-delivery-record");
        rename(record_temp.as_ref().expect("written"), &record_path)?;
        *record_temp = None;
        Ok(outcome)
    }

    /// Record a verified delivery that will not be acted on, with why; returns the file's name in
    /// `refused/`: `<delivery_id>.json` when the id is [`safe_id`] (a repeat keeps the first
    /// record), else `<time>-<random>.json`.
    pub fn refuse(
        &self,
        delivery_id: Option<&str>,
        why: &str,
        signature: &str,
        body: &[u8],
        now: i64,
    ) -> Result<String> {
        let name = match delivery_id.filter(|id| safe_id(id)) {
            Some(id) => format!("{id}.json"),
            None => {
                let mut random = [0u8; 8];
                getrandom::fill(&mut random).map_err(|e| Error::Random(e.to_string()))?;
                format!(
                    "{now}-{}.json",
                    random
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                )
            }
        };
        if self.root.join("refused").join(&name).exists() {
            return Ok(name);
        }
        let record = RefusedRecord {
            version: 1,
            received_at: now,
            why,
            signature,
            body: &String::from_utf8_lossy(body),
        };
        let text = serde_json::to_vec(&record).expect("a record serialises");
        self.write_into(&self.root.join("refused").join(&name), &text)?;
        Ok(name)
    }

    /// Move every job found running (the process that held it is gone) back to the queue, and
    /// return their ids. Call once, at start, holding the serving lock.
    pub fn resume_running(&self) -> Result<Vec<String>> {
        let _lock = self.record_lock()?;
        let mut resumed = Vec::new();
        for job in self.jobs(JobState::Running)? {
            self.rename_job(&job.job_id, JobState::Running, JobState::Queued)?;
            resumed.push(job.job_id);
        }
        Ok(resumed)
    }

    /// Take the queued job due first (by `not_before`, then arrival), moving it to `running/`
    /// and counting the try. `None` when no job is due.
    pub fn claim(&self, now: i64) -> Result<Option<Job>> {
        let _lock = self.record_lock()?;
        let next = self
            .jobs(JobState::Queued)?
            .into_iter()
            .filter(|j| j.not_before <= now)
            .min_by_key(|j| (j.not_before, j.received_at));
        let Some(mut job) = next else {
            return Ok(None);
        };
        self.rename_job(&job.job_id, JobState::Queued, JobState::Running)?;
        job.attempts += 1;
        self.write_job(JobState::Running, &job)?;
        Ok(Some(job))
    }

    /// The earliest `not_before` among queued jobs, if any.
    pub fn next_due(&self) -> Option<i64> {
        self.jobs(JobState::Queued)
            .ok()?
            .iter()
            .map(|j| j.not_before)
            .min()
    }

    /// Wait until a job is queued by this process, or `timeout` passes.
    pub fn wait_for_work(&self, timeout: Duration) {
        let (count, cv) = &self.wake;
        let guard = count.lock().unwrap_or_else(|p| p.into_inner());
        let seen = *guard;
        let _ = cv
            .wait_timeout_while(guard, timeout, |c| *c == seen)
            .unwrap_or_else(|p| p.into_inner());
    }

    /// Wake every waiting worker (at shutdown).
    pub fn wake_all(&self) {
        let (count, cv) = &self.wake;
        *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        cv.notify_all();
    }

    /// Rewrite a running job where it is (its output is complete, only `--exec` is left).
    pub fn update_running(&self, job: &Job) -> Result<()> {
        let _lock = self.record_lock()?;
        self.write_job(JobState::Running, job)
    }

    /// Write the raw body of the delivery `delivery_id` to `exec/<job_id>.json` (mode 0600) for
    /// an `--exec` command, and return its path.
    pub fn exec_file(&self, delivery_id: &str, job_id: &str) -> Result<PathBuf> {
        let record = self
            .root
            .join("deliveries")
            .join(format!("{delivery_id}.json"));
        let text = fs::read(&record).map_err(io_at("cannot read", &record))?;
        let body = serde_json::from_slice::<DeliveryRecord>(&text)
            .map_err(|e| {
                Error::io(
                    format!("cannot read {}", record.display()),
                    io::Error::other(e),
                )
            })?
            .body;
        let dest = self.root.join("exec").join(format!("{job_id}.json"));
        self.write_into(&dest, body.as_bytes())?;
        Ok(dest)
    }

    /// A running job's try failed and may pass: record why, and queue it again for `not_before`.
    pub fn retry(&self, job: &Job) -> Result<()> {
        let _lock = self.record_lock()?;
        self.write_job(JobState::Running, job)?;
        self.rename_job(&job.job_id, JobState::Running, JobState::Queued)
    }

    /// A running job is done or failed: write its final record (without its URL) and move it.
    pub fn finish(&self, job: &Job, to: JobState) -> Result<()> {
        let _lock = self.record_lock()?;
        let mut last = job.clone();
        last.s3_url = None;
        self.write_job(JobState::Running, &last)?;
        self.rename_job(&job.job_id, JobState::Running, to)
    }

    /// Every job in `state`, in no particular order. A file that cannot be read or parsed is
    /// skipped (nothing this module writes is ever incomplete).
    pub fn jobs(&self, state: JobState) -> Result<Vec<Job>> {
        let dir = self.dir(state);
        let mut jobs = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_at("cannot read", &dir))? {
            let entry = entry.map_err(io_at("cannot read", &dir))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !safe_id(id) {
                continue;
            }
            let Ok(text) = fs::read(entry.path()) else {
                continue;
            };
            if let Ok(job) = serde_json::from_slice::<Job>(&text) {
                if job.version == 1 && job.job_id == id {
                    jobs.push(job);
                }
            }
        }
        Ok(jobs)
    }

    /// Every job, by state then arrival.
    pub fn list(&self) -> Result<Vec<(JobState, Job)>> {
        let mut all = Vec::new();
        for state in JobState::ALL {
            let mut jobs = self.jobs(state)?;
            jobs.sort_by(|a, b| (a.received_at, &a.job_id).cmp(&(b.received_at, &b.job_id)));
            all.extend(jobs.into_iter().map(|j| (state, j)));
        }
        Ok(all)
    }

    fn record_lock(&self) -> Result<File> {
        let path = self.root.join("record.lock");
        let file = private_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_at("cannot open", &path))?;
        loop {
            match file.lock() {
                Ok(()) => return Ok(file),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_at("cannot lock", &path)(e)),
            }
        }
    }

    fn write_job(&self, state: JobState, job: &Job) -> Result<()> {
        let text = serde_json::to_vec_pretty(job).expect("a job serialises");
        self.write_into(&self.job_path(state, &job.job_id), &text)
    }

    fn rename_job(&self, job_id: &str, from: JobState, to: JobState) -> Result<()> {
        let (a, b) = (self.job_path(from, job_id), self.job_path(to, job_id));
        fs::rename(&a, &b).map_err(io_at("cannot move", &a))?;
        sync_dir(&self.dir(to))?;
        sync_dir(&self.dir(from))
    }

    /// Write `bytes` to a new file in `tmp/` (mode 0600), synced, and return its path.
    fn write_temp(&self, bytes: &[u8]) -> Result<PathBuf> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let temp = self.root.join("tmp").join(format!(
            "{}-{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> io::Result<()> {
            let mut f = private_options().write(true).create_new(true).open(&temp)?;
            f.write_all(bytes)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&temp);
            return Err(io_at("cannot write", &temp)(e));
        }
        Ok(temp)
    }

    /// Write `bytes` to `dest` atomically: a temporary file in `tmp/`, synced, renamed over
    /// `dest`, and `dest`'s directory synced.
    fn write_into(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let temp = self.write_temp(bytes)?;
        if let Err(e) = fs::rename(&temp, dest) {
            let _ = fs::remove_file(&temp);
            return Err(io_at("cannot write", dest)(e));
        }
        sync_dir(dest.parent().unwrap_or(Path::new(".")))
    }
}

/// The job a delivery creates, before its first try.
fn new_job(delivery: &Delivery, order: &JobOrder, now: i64) -> Job {
    Job {
        version: 1,
        job_id: order.job_id.clone(),
        delivery_id: delivery.delivery_id.clone(),
        customer_id: order.customer_id.clone(),
        rows_processed: order.rows_processed,
        file_size_bytes: order.file_size_bytes,
        s3_url: Some(order.s3_url.clone()),
        expires_at: order.expires_at,
        received_at: now,
        attempts: 0,
        not_before: now,
        last_error: None,
        finished_at: None,
        rows: None,
        bytes: None,
        output_done: false,
    }
}

/// Directory syncs shared by concurrent callers (group commit): a caller's sync is done once a
/// sync that began after the caller asked has finished, so N deliveries recorded together cost
/// one sync of each directory, not N.
#[derive(Default)]
struct GroupSync {
    state: Mutex<SyncState>,
    done: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// Tickets handed out.
    asked: u64,
    /// Every ticket up to this one is synced.
    synced: u64,
    /// A sync is under way.
    running: bool,
}

impl GroupSync {
    /// Return once `dirs` were synced by a sync that began after this call.
    fn sync(&self, dirs: &[PathBuf]) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.asked += 1;
        let ticket = state.asked;
        loop {
            if state.synced >= ticket {
                return Ok(());
            }
            if !state.running {
                state.running = true;
                let target = state.asked;
                drop(state);
                let result = dirs.iter().try_for_each(|d| sync_dir(d));
                state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                state.running = false;
                if result.is_ok() {
                    state.synced = state.synced.max(target);
                }
                self.done.notify_all();
                // A failed sync fails its own caller; the others try again themselves.
                result?;
                continue;
            }
            state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Create `dir` with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(io_at("cannot create the directory", dir))
}

/// Sync a directory, so that a rename in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at("cannot sync the directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(job_id: &str) -> JobOrder {
        JobOrder {
            job_id: job_id.into(),
            customer_id: "c".into(),
            rows_processed: 3,
            file_size_bytes: Some(10),
            s3_url: SecretUrl("https://h/k?X-Amz-Signature=s3cr3t".into()),
            expires_at: None,
        }
    }

    fn delivery(id: &str, job: Option<JobOrder>) -> Delivery {
        Delivery {
            delivery_id: id.into(),
            event: "job.completed".into(),
            signature: "sha256=00".into(),
            body: "{}".into(),
            job,
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_state_directory_open_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o750)).unwrap();
        let e = Queue::open(&root).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the state directory {} is open to other users (mode 0750)",
                root.display()
            )
        );
        assert!(e
            .hint()
            .unwrap()
            .ends_with(&format!("run: chmod 700 {}", root.display())));
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        Queue::open(&root).unwrap();
    }

    #[test]
    fn prune_removes_old_delivery_records_and_refusals_only() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(&dir.path().join("state")).unwrap();
        let now = 1_760_000_000;
        for id in ["old", "new"] {
            queue
                .record(&delivery(id, Some(order(&format!("job_{id}")))), false, now)
                .unwrap();
        }
        let refused = queue.root().join("refused");
        create_private_dir(&refused).unwrap();
        std::fs::write(refused.join("old_r.json"), b"{}").unwrap();
        std::fs::write(refused.join("new_r.json"), b"{}").unwrap();
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(40 * 86_400);
        for path in [
            queue.root().join("deliveries/old.json"),
            refused.join("old_r.json"),
        ] {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        let cut = std::time::SystemTime::now() - Duration::from_secs(30 * 86_400);
        assert_eq!(queue.prune(cut).unwrap(), (1, 1));
        let names = |d: &Path| {
            let mut n: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(&queue.root().join("deliveries")), ["new.json"]);
        assert_eq!(names(&refused), ["new_r.json"]);
        // The jobs stay: a redelivery of the old one is still a duplicate, not a new download.
        assert_eq!(queue.state_of("job_old"), Some(JobState::Queued));
        assert_eq!(
            queue
                .record(&delivery("old", Some(order("job_old"))), false, now)
                .unwrap(),
            Outcome::DuplicateJob
        );
        assert_eq!(queue.prune(cut).unwrap(), (0, 0));
    }

    #[test]
    fn safe_ids_are_plain_names() {
        for ok in ["a", "job_123", "d-1.2", &"x".repeat(128), "0"] {
            assert!(safe_id(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-x",
            "_x",
            "a/b",
            "a\\b",
            "a b",
            "é",
            "a\n",
            &"x".repeat(129),
        ] {
            assert!(!safe_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_queued_job_takes_a_fresher_url_from_a_redelivery() {
        let tmp = tempfile::tempdir().unwrap();
        let q = Queue::open(&tmp.path().join("state")).unwrap();
        let with = |expires_at: Option<i64>, url: &str| JobOrder {
            expires_at,
            s3_url: SecretUrl(url.into()),
            ..order("j1")
        };
        let first = with(Some(1000), "https://b.example/j1?sig=old");
        assert_eq!(
            q.record(&delivery("d1", Some(first)), false, 100).unwrap(),
            Outcome::Queued
        );
        let mut job = q.claim(100).unwrap().unwrap();
        job.not_before = 500;
        q.retry(&job).unwrap();
        // The same URL's expiry, or an earlier one: nothing changes.
        for (id, order) in [
            ("d2", with(Some(1000), "https://b.example/j1?sig=same")),
            ("d3", with(Some(900), "https://b.example/j1?sig=older")),
            ("d4", with(None, "https://b.example/j1?sig=none")),
        ] {
            assert_eq!(
                q.record(&delivery(id, Some(order)), false, 101).unwrap(),
                Outcome::DuplicateJob,
                "{id}"
            );
        }
        let fresh = with(Some(5000), "https://b.example/j1?sig=fresh");
        assert_eq!(
            q.record(&delivery("d5", Some(fresh)), false, 102).unwrap(),
            Outcome::Refreshed
        );
        let queued = &q.jobs(JobState::Queued).unwrap()[0];
        assert_eq!(queued.expires_at, Some(5000));
        assert_eq!(queued.not_before, 0);
        assert_eq!(queued.attempts, 1);
        assert_eq!(
            queued.s3_url.as_ref().unwrap().0,
            "https://b.example/j1?sig=fresh"
        );
        assert!(std::fs::read_dir(q.root().join("tmp"))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn deliveries_and_jobs_are_recorded_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let q = Queue::open(&dir).unwrap();
        let d1 = delivery("d1", Some(order("j1")));
        assert_eq!(q.record(&d1, false, 100).unwrap(), Outcome::Queued);
        assert_eq!(
            q.record(&d1, false, 101).unwrap(),
            Outcome::DuplicateDelivery
        );
        let d2 = delivery("d2", Some(order("j1")));
        assert_eq!(q.record(&d2, false, 102).unwrap(), Outcome::DuplicateJob);
        let d3 = Delivery {
            event: "job.progress".into(),
            ..delivery("d3", None)
        };
        assert_eq!(q.record(&d3, false, 103).unwrap(), Outcome::Recorded);
        assert_eq!(q.state_of("j1"), Some(JobState::Queued));

        let job = q.claim(104).unwrap().unwrap();
        assert_eq!(job.attempts, 1);
        assert_eq!(q.state_of("j1"), Some(JobState::Running));
        assert!(q.claim(104).unwrap().is_none());
        q.finish(&job, JobState::Failed).unwrap();
        let failed = &q.jobs(JobState::Failed).unwrap()[0];
        assert_eq!(failed.s3_url, None);
        // A new delivery of a failed job queues it again.
        let d4 = delivery("d4", Some(order("j1")));
        assert_eq!(q.record(&d4, false, 105).unwrap(), Outcome::Requeued);
        assert_eq!(q.state_of("j1"), Some(JobState::Queued));
        // Replay records a delivery id again.
        assert_eq!(q.record(&d4, true, 106).unwrap(), Outcome::DuplicateJob);
    }

    #[test]
    fn a_delivery_whose_job_was_lost_is_recorded_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let q = Queue::open(&dir).unwrap();
        let d1 = delivery("d1", Some(order("j1")));
        assert_eq!(q.record(&d1, false, 1).unwrap(), Outcome::Queued);
        // A power cut that kept the delivery's rename and lost the job's.
        fs::remove_file(dir.join("jobs/queued/j1.json")).unwrap();
        assert_eq!(q.record(&d1, false, 2).unwrap(), Outcome::Queued);
        assert_eq!(q.state_of("j1"), Some(JobState::Queued));
        assert_eq!(q.record(&d1, false, 3).unwrap(), Outcome::DuplicateDelivery);
        // Nothing is left in tmp/.
        assert!(fs::read_dir(dir.join("tmp")).unwrap().next().is_none());
    }

    #[test]
    fn concurrent_duplicates_record_one_job() {
        let tmp = tempfile::tempdir().unwrap();
        let q = Queue::open(&tmp.path().join("state")).unwrap();
        let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let q = &q;
                    scope.spawn(move || {
                        let id = if i % 2 == 0 { "d1" } else { "d2" };
                        q.record(&delivery(id, Some(order("j1"))), false, 1)
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let count = |o: Outcome| outcomes.iter().filter(|&&x| x == o).count();
        assert_eq!(count(Outcome::Queued), 1, "{outcomes:?}");
        assert_eq!(count(Outcome::DuplicateJob), 1, "{outcomes:?}");
        assert_eq!(count(Outcome::DuplicateDelivery), 14, "{outcomes:?}");
        assert_eq!(q.jobs(JobState::Queued).unwrap().len(), 1);
    }

    #[test]
    fn running_jobs_resume_and_files_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let q = Queue::open(&dir).unwrap();
        q.record(&delivery("d1", Some(order("j1"))), false, 1)
            .unwrap();
        let mut job = q.claim(1).unwrap().unwrap();
        job.not_before = 50;
        job.last_error = Some("x".into());
        q.retry(&job).unwrap();
        assert!(q.claim(49).unwrap().is_none());
        assert_eq!(q.next_due(), Some(50));
        let job = q.claim(50).unwrap().unwrap();
        assert_eq!(job.attempts, 2);
        drop(job);
        let q = Queue::open(&dir).unwrap();
        assert_eq!(q.resume_running().unwrap(), vec!["j1".to_owned()]);
        assert_eq!(q.state_of("j1"), Some(JobState::Queued));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.join("jobs/queued")), 0o700);
            assert_eq!(mode(&dir.join("jobs/queued/j1.json")), 0o600);
            assert_eq!(mode(&dir.join("deliveries/d1.json")), 0o600);
        }
        assert!(!format!("{:?}", q.jobs(JobState::Queued).unwrap()).contains("s3cr3t"));
        let mut d = delivery("d9", Some(order("j9")));
        d.body = r#"{"data":{"s3_url":"https://h/k?X-Amz-Signature=s3cr3t"}}"#.into();
        assert!(!format!("{d:?}").contains("s3cr3t"), "{d:?}");
        let _serving = q.lock_for_serving().unwrap();
        assert!(Queue::open(&dir).unwrap().lock_for_serving().is_err());
    }
}
