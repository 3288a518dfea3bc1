//! Downloading an object to a file, resumably, atomically, and never spliced (SPEC section 4).
//!
//! The bytes accumulate in `.NAME.cipherstream-download` beside the destination (mode 0600), with
//! a small state file `.NAME.cipherstream-download.json` naming the object (the URL as shown,
//! never its query; its ETag; its total size) and the byte ranges of the partial file that are on
//! disk. The destination appears only complete: the file is synced, its size checked against the
//! server's total and `--expect-size`, and renamed into place. An interruption, in this run or the
//! process's death, leaves the partial file for the next run to resume.
//!
//! Parallel: the first request (`bytes=0-`) learns the size and ETag; the object is then cut into
//! up to [`Options::connections`] ranges of at least 4 MiB, the first request's body kept for the
//! first, and each range is fetched on its own connection with positioned writes. A connection
//! that finishes early takes the second half of the largest range left. About once a second (and
//! when a range completes or the round ends) the partial file is synced (`fdatasync`) and only
//! then are the bytes written claimed in the state file (a temporary file, synced, renamed): a
//! crash or `kill -9` never leaves a state claiming bytes that are not on disk. A state file of
//! another version is not trusted.
//!
//! Never spliced: every range after the first carries `If-Match` with the ETag seen first, and
//! every answer's `Content-Range` must be exactly the range asked and agree on the total. A `412`
//! (the object changed), a total or ETag that moves, a `200` that ignores `Range`, a `416`, or a
//! state file for another object discards the partial bytes and starts again, with a warning.
//! Without a strong ETag (or a size) the download is one connection and cannot resume.
//!
//! Retries: resets, early ends of a body, stalls (an idle read, `ClientOptions::idle_timeout`),
//! `408`, `429` and `5xx` are retried with exponential backoff and jitter, at most
//! [`Options::retries`] times in a row without a new byte on any connection (a connection cut
//! every few megabytes still finishes), and never past the URL's own expiry. `401`, `403`, `404` and `410` are never
//! retried: an expired or refused URL exits 5, and says which.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::net::client::{io_words, Answer, Client};
use crate::net::s3::S3Error;
use crate::net::url::DownloadUrl;
use crate::warning::{Warn, Warning};

/// Longest error body read from a refusing server.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// First wait before a retry; it doubles each time, with jitter, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Bytes copied per read and write.
const COPY_CHUNK: usize = 256 * 1024;
/// A strong ETag, the only kind `If-Match` compares (RFC 9110 section 13.1.1): a weak one
/// (`W/"..."`) never matches, so sending it would make every resumed range a `412`.
pub(crate) fn strong(etag: &str) -> bool {
    !etag.starts_with("W/")
}

/// The smallest range given a connection of its own: an object under twice this is one
/// connection, and a range is split for an idle connection only when both halves are at least
/// this.
const MIN_SEGMENT: u64 = 4 << 20;
/// How often the bytes written are synced and claimed in the state file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// The state file's format; a file of another version is not trusted.
const STATE_VERSION: u32 = 2;
/// How often a wait looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

/// How to download.
#[derive(Debug, Clone)]
pub struct Options {
    /// The size the object must have (the webhook's `file_size_bytes`), when known.
    pub expect_size: Option<u64>,
    /// Tries in a row without any new byte (on any connection) before giving up.
    pub retries: u32,
    /// Connections at once, each with its own range of the object (at least 1).
    pub connections: usize,
}

/// What a finished download was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes in the file.
    pub bytes: u64,
    /// Bytes this run received (the rest were resumed from an earlier run).
    pub received: u64,
    /// Tries that failed and were retried.
    pub retries: u32,
}

/// Told how a download goes, for a progress display: bytes on disk (resumed ones included), the
/// object's total once known, and the retries so far.
pub trait Watch: Sync {
    /// Called after each write and each retry.
    fn progress(&self, have: u64, total: Option<u64>, retries: u32);
}

impl<F: Fn(u64, Option<u64>, u32) + Sync> Watch for F {
    fn progress(&self, have: u64, total: Option<u64>, retries: u32) {
        self(have, total, retries)
    }
}

/// What the state file records about the object being downloaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    version: u32,
    /// The URL as shown (scheme, host, path): the same object under a freshly signed URL resumes.
    url: String,
    etag: Option<String>,
    total: Option<u64>,
    /// Byte ranges `[start, end)` of the partial file that are synced to disk, sorted, apart.
    #[serde(default)]
    done: Vec<(u64, u64)>,
}

impl State {
    fn new(url: &DownloadUrl) -> State {
        State {
            version: STATE_VERSION,
            url: url.shown().to_owned(),
            etag: None,
            total: None,
            done: Vec::new(),
        }
    }

    /// Bytes claimed done.
    fn have(&self) -> u64 {
        self.done.iter().map(|(a, b)| b - a).sum()
    }

    /// Whether resuming may trust it: the object is named by a strong ETag and its total, and
    /// the ranges done lie inside it and inside the partial file.
    fn resumable(&self, part_len: u64) -> bool {
        let (Some(etag), Some(total)) = (&self.etag, self.total) else {
            return false;
        };
        let mut last = 0;
        strong(etag)
            && self.done.iter().all(|&(a, b)| {
                let ok = a >= last && a < b && b <= total && b <= part_len;
                last = b;
                ok
            })
    }

    /// The ranges not done, in order.
    fn missing(&self) -> Vec<(u64, u64)> {
        let total = self.total.unwrap_or(0);
        let mut out = Vec::new();
        let mut at = 0;
        for &(a, b) in &self.done {
            if a > at {
                out.push((at, a));
            }
            at = b;
        }
        if at < total {
            out.push((at, total));
        }
        out
    }

    /// Add `[a, b)` to the ranges done, merging.
    fn claim(&mut self, a: u64, b: u64) {
        if a >= b {
            return;
        }
        self.done.push((a, b));
        self.done.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.done.len());
        for &(a, b) in &self.done {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.done = merged;
    }
}

/// The partial file and state file beside `dest`.
fn companions(dest: &Path) -> Result<(PathBuf, PathBuf)> {
    let name = dest
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{} is not a file path", dest.display())))?
        .to_string_lossy();
    let dir = dest.parent().unwrap_or_else(|| Path::new(""));
    Ok((
        dir.join(format!(".{name}.cipherstream-download")),
        dir.join(format!(".{name}.cipherstream-download.json")),
    ))
}

fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// How a round of requests ended when it did not complete the object.
enum Stop {
    /// The object changed (or the partial bytes cannot be trusted): discard them, start again.
    Restart(String),
    /// Give up.
    Fatal(Error),
}

/// Download `url` to `dest`, on up to `options.connections` connections.
pub fn fetch(
    client: &Client,
    url: &DownloadUrl,
    dest: &Path,
    options: &Options,
    warn: &dyn Warn,
    watch: &dyn Watch,
) -> Result<Downloaded> {
    let (part_path, state_path) = companions(dest)?;
    let part = private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part_path)
        .map_err(|e| Error::io(format!("cannot create {}", part_path.display()), e))?;
    // Two runs writing one partial file would interleave: the second waits for nothing, it stops.
    if part.try_lock().is_err() {
        return Err(Error::Usage(format!(
            "another cipherstream is downloading to {} right now",
            dest.display()
        )));
    }
    let part_len = part
        .metadata()
        .map_err(|e| Error::io(format!("cannot read {}", part_path.display()), e))?
        .len();
    let mut state = match load_state(&state_path) {
        Loaded::Good(s) if s.url == url.shown() && s.resumable(part_len) => s,
        Loaded::OtherVersion if part_len > 0 => {
            warn.warn(Warning::DownloadRestarted {
                url: url.shown().to_owned(),
                why: "the partial download was left by another version of cipherstream".into(),
            });
            State::new(url)
        }
        // Bytes with no record of the object they came from cannot be trusted.
        _ => State::new(url),
    };
    if state.done.is_empty() {
        discard(&part, &part_path)?;
    }
    let run = Run {
        client,
        url,
        options,
        warn,
        watch,
        part: &part,
        state_path: &state_path,
        stop: AtomicBool::new(false),
        shared: Mutex::new(Shared::default()),
        checkpointing: Mutex::new(()),
        sync_failed: AtomicBool::new(false),
    };
    let mut resumed = state.have();
    let mut retries = 0u32;
    let mut failures_in_a_row = 0u32;
    let complete = |state: &State| state.total.is_some() && state.total == Some(state.have());
    while !complete(&state) {
        let first = state.done.is_empty();
        let outcome = if first {
            // `Ok` also when the request failed and its wait is over: then it is made again.
            run.first(&mut state, failures_in_a_row, retries)
        } else {
            run.rest(&mut state, None, failures_in_a_row, retries)
        };
        {
            let shared = run.shared.lock().expect("not poisoned");
            retries = shared.retries;
            failures_in_a_row = shared.failures_in_a_row;
        }
        match outcome {
            Ok(()) if first || complete(&state) => {}
            Ok(()) => {
                // Every connection ended with ranges still missing: a failure like any other.
                failures_in_a_row += 1;
                wait_to_retry(
                    url,
                    "the connections ended before the object did".into(),
                    failures_in_a_row,
                    options.retries,
                    state.have(),
                    warn,
                    &|| false,
                )?;
                retries += 1;
            }
            Err(Stop::Fatal(e)) => return Err(e),
            Err(Stop::Restart(why)) => {
                warn.warn(Warning::DownloadRestarted {
                    url: url.shown().to_owned(),
                    why: why.clone(),
                });
                discard(&part, &part_path)?;
                state = State::new(url);
                resumed = 0;
                let _ = fs::remove_file(&state_path);
                run.stop.store(false, Ordering::SeqCst);
                // A restart is a failure too: it waits, it counts, it ends at the expiry.
                failures_in_a_row += 1;
                wait_to_retry(
                    url,
                    why,
                    failures_in_a_row,
                    options.retries,
                    0,
                    warn,
                    &|| false,
                )?;
                retries += 1;
                let mut shared = run.shared.lock().expect("not poisoned");
                shared.retries = retries;
                shared.failures_in_a_row = failures_in_a_row;
                shared.received = 0;
            }
        }
    }
    let have = state.total.unwrap_or(0);
    finish(url, dest, &part_path, &state_path, part, have, options)?;
    Ok(Downloaded {
        bytes: have,
        received: have.saturating_sub(resumed),
        retries,
    })
}

/// One download's shared context.
struct Run<'a> {
    client: &'a Client,
    url: &'a DownloadUrl,
    options: &'a Options,
    warn: &'a dyn Warn,
    watch: &'a dyn Watch,
    part: &'a File,
    state_path: &'a Path,
    /// Set when a connection ends the round (a restart, a fatal error): the others stop.
    stop: AtomicBool,
    shared: Mutex<Shared>,
    /// One checkpoint at a time, so the state file's claims only grow.
    checkpointing: Mutex<()>,
    /// A sync of the partial file failed: the kernel may have dropped its pages, so no later
    /// sync may be taken to cover them, and nothing is claimed again in this run.
    sync_failed: AtomicBool,
}

/// What the connections share, under one lock.
#[derive(Default)]
struct Shared {
    /// The state as last saved, plus what is claimed at each checkpoint.
    state: Option<State>,
    /// The ranges being fetched; a finished one stays (by index) until the round ends.
    segments: Vec<Segment>,
    /// Failures in a row with no new byte on any connection.
    failures_in_a_row: u32,
    /// Tries that failed and were retried, over the whole download.
    retries: u32,
    /// Bytes written this run.
    received: u64,
    /// Bytes on disk, resumed and new.
    have: u64,
    /// Why the round ended early, first reason only.
    stopped: Option<Stop>,
}

/// One range of the object, fetched by one connection at a time.
#[derive(Debug, Clone)]
struct Segment {
    /// The first byte written but not yet claimed in the state file.
    claimed: u64,
    /// The next byte to write.
    pos: u64,
    /// One past the last byte (`u64::MAX` while the object's size is unknown). Shrinks when
    /// an idle connection takes the second half.
    end: u64,
    /// A connection is on it.
    taken: bool,
}

/// A body already open at the start of a segment (the first request's), kept for it.
struct Opened {
    answer: Answer,
}

impl Run<'_> {
    /// The first request (`bytes=0-`, unconditional) learns the object's size and ETag; its body
    /// is kept for the first range, and the rest of the object is shared among connections.
    fn first(
        &self,
        state: &mut State,
        failures: u32,
        retries: u32,
    ) -> std::result::Result<(), Stop> {
        {
            let mut shared = self.shared.lock().expect("not poisoned");
            shared.failures_in_a_row = failures;
            shared.retries = retries;
        }
        let answer = match self
            .client
            .get(self.url, 0, None, None)
            .map_err(Stop::Fatal)?
        {
            Ok(answer) => answer,
            Err(why) => return self.failed_first(why),
        };
        match answer.status {
            206 => {
                let range = answer.content_range;
                let total = range.and_then(|r| r.total);
                if range.and_then(|r| r.range).map(|(a, _)| a) != Some(0) {
                    return Err(Stop::Restart(
                        "the server sent a range that does not start at byte 0".into(),
                    ));
                }
                state.etag = answer.etag.clone();
                state.total = total;
                self.save(state)?;
                self.rest(state, Some(Opened { answer }), failures, retries)
            }
            200 => {
                state.etag = answer.etag.clone();
                state.total = answer.content_length;
                self.save(state)?;
                self.rest(state, Some(Opened { answer }), failures, retries)
            }
            // An empty object answers `bytes */0`.
            416 if answer.content_range.and_then(|r| r.total) == Some(0) => {
                state.total = Some(0);
                Ok(())
            }
            416 => self.failed_first("the server refused the range bytes=0-".into()),
            401 | 403 | 404 | 410 => Err(Stop::Fatal(refusal(self.url, answer))),
            408 | 429 | 500..=599 => {
                self.failed_first(format!("the server answered {}", answer.status))
            }
            status => Err(Stop::Fatal(Error::UrlRefused {
                url: self.url.shown().to_owned(),
                status,
                code: None,
                message: None,
            })),
        }
    }

    /// A first request that brought nothing: wait (or give up), then the caller tries again.
    fn failed_first(&self, why: String) -> std::result::Result<(), Stop> {
        let failures = {
            let mut shared = self.shared.lock().expect("not poisoned");
            shared.failures_in_a_row += 1;
            shared.failures_in_a_row
        };
        wait_to_retry(
            self.url,
            why,
            failures,
            self.options.retries,
            0,
            self.warn,
            &|| self.stop.load(Ordering::SeqCst),
        )
        .map_err(Stop::Fatal)?;
        let mut shared = self.shared.lock().expect("not poisoned");
        shared.retries += 1;
        self.watch.progress(0, None, shared.retries);
        Ok(())
    }

    /// Fetch every range not done, `opened` (the first request's body) for the one at byte 0.
    fn rest(
        &self,
        state: &mut State,
        opened: Option<Opened>,
        failures: u32,
        retries: u32,
    ) -> std::result::Result<(), Stop> {
        // One connection when the ranges cannot be checked (no strong ETag: If-Match cannot name
        // the object), the size is unknown, or the server answered the first range with the
        // whole object (it ignores Range: every other range would be the whole object again);
        // else up to the option, if the object is big enough.
        let ranges_work = opened.as_ref().is_none_or(|o| o.answer.status == 206);
        let parallel =
            ranges_work && state.etag.as_deref().is_some_and(strong) && state.total.is_some();
        let connections = if parallel {
            self.options.connections.max(1)
        } else {
            1
        };
        let mut segments: Vec<Segment> = if state.total.is_none() {
            vec![Segment {
                claimed: 0,
                pos: 0,
                end: u64::MAX,
                taken: false,
            }]
        } else {
            state
                .missing()
                .into_iter()
                .map(|(a, b)| Segment {
                    claimed: a,
                    pos: a,
                    end: b,
                    taken: false,
                })
                .collect()
        };
        while parallel && segments.len() < connections {
            let Some(i) = splittable(&segments, 0) else {
                break;
            };
            let half = split_point(&segments[i]);
            let end = segments[i].end;
            segments[i].end = half;
            segments.push(Segment {
                claimed: half,
                pos: half,
                end,
                taken: false,
            });
        }
        segments.sort_by_key(|s| s.pos);
        {
            let mut shared = self.shared.lock().expect("not poisoned");
            shared.have = state.have();
            shared.state = Some(state.clone());
            shared.segments = segments;
            shared.failures_in_a_row = failures;
            shared.retries = retries;
            shared.stopped = None;
        }
        self.stop.store(false, Ordering::SeqCst);
        // The first request's body is for the range at byte 0: that range is its connection's
        // before any other connection starts (else one might take it, and the body be dropped).
        let (workers, mut first) = {
            let mut shared = self.shared.lock().expect("not poisoned");
            let first = opened.and_then(|opened| {
                let i = shared.segments.iter().position(|s| s.pos == 0)?;
                shared.segments[i].taken = true;
                Some((i, opened))
            });
            (connections.min(shared.segments.len()), first)
        };
        std::thread::scope(|scope| {
            // Bytes are claimed once a second whether or not more arrive: a connection that
            // stalls (and the kill that may follow) must not hold back what it already wrote.
            // A checkpoint that fails ends the download: after a failed `fdatasync` the kernel
            // may have dropped the pages, and the next sync would succeed without them, so
            // nothing written since the last claim may ever be claimed.
            let (rounding, round_over) = mpsc::channel::<()>();
            scope.spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = round_over.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(e) = self.checkpoint() {
                        let mut shared = self.shared.lock().expect("not poisoned");
                        shared.stopped = Some(Stop::Fatal(e));
                        self.stop.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            });
            let connections: Vec<_> = (0..workers.max(1))
                .map(|i| {
                    let first = if i == 0 { first.take() } else { None };
                    scope.spawn(move || self.connection(first, parallel))
                })
                .collect();
            for connection in connections {
                if let Err(panic) = connection.join() {
                    drop(rounding);
                    std::panic::resume_unwind(panic);
                }
            }
            drop(rounding);
        });
        // Claim what was written, whatever ended the round (a kill now loses nothing claimed).
        let checkpoint = self.checkpoint();
        let mut shared = self.shared.lock().expect("not poisoned");
        if let Some(saved) = shared.state.clone() {
            *state = saved;
        }
        if let Some(stop) = shared.stopped.take() {
            return Err(stop);
        }
        checkpoint.map_err(Stop::Fatal)?;
        if state.total.is_none() {
            // A body that ended cleanly with no size announced is the whole object.
            state.total = Some(shared.have);
        }
        Ok(())
    }

    /// One connection: take a range (or half of the largest one left), fetch it, again.
    /// `first`: the range already taken for it, with the first request's body.
    fn connection(&self, mut first: Option<(usize, Opened)>, parallel: bool) {
        loop {
            let (index, opened) = match first.take() {
                Some((index, opened)) => (index, Some(opened)),
                None => match self.take(parallel) {
                    Some(index) => (index, None),
                    None => return,
                },
            };
            let result = self.segment(index, opened);
            let mut shared = self.shared.lock().expect("not poisoned");
            shared.segments[index].taken = false;
            if let Err(stop) = result {
                if shared.stopped.is_none() {
                    shared.stopped = Some(stop);
                }
                self.stop.store(true, Ordering::SeqCst);
                return;
            }
        }
    }

    /// A range for an idle connection: one nobody is on, else the second half of the largest.
    fn take(&self, parallel: bool) -> Option<usize> {
        let mut shared = self.shared.lock().expect("not poisoned");
        if self.stop.load(Ordering::SeqCst) {
            return None;
        }
        let free = shared
            .segments
            .iter()
            .position(|s| !s.taken && s.pos < s.end);
        if let Some(i) = free {
            shared.segments[i].taken = true;
            return Some(i);
        }
        if !parallel {
            return None;
        }
        let i = splittable(&shared.segments, COPY_CHUNK as u64)?;
        let half = split_point(&shared.segments[i]);
        let end = shared.segments[i].end;
        shared.segments[i].end = half;
        shared.segments.push(Segment {
            claimed: half,
            pos: half,
            end,
            taken: true,
        });
        Some(shared.segments.len() - 1)
    }

    /// Fetch segment `index` until it is complete, retrying what a retry can fix.
    fn segment(&self, index: usize, mut opened: Option<Opened>) -> std::result::Result<(), Stop> {
        loop {
            let (pos, end, total, etag) = {
                let shared = self.shared.lock().expect("not poisoned");
                let s = &shared.segments[index];
                let state = shared.state.as_ref().expect("set for the round");
                (s.pos, s.end, state.total, state.etag.clone())
            };
            if pos >= end || self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            // The last byte asked for (`None`: to the end of the object).
            let mut asked_to = None;
            let answer = match opened.take() {
                Some(Opened { answer }) => Ok(answer),
                None => {
                    if !etag.as_deref().is_some_and(strong) {
                        // Without a strong ETag nothing proves the bytes on disk are of the
                        // object served now.
                        return Err(Stop::Restart(
                            "the server gives no strong ETag, so the partial bytes cannot be \
                             proven to be of the same object"
                                .into(),
                        ));
                    }
                    // The range's last byte, unless it runs to the end of the object.
                    asked_to = (Some(end) != total && end != u64::MAX).then(|| end - 1);
                    self.client
                        .get(self.url, pos, asked_to, etag.as_deref())
                        .map_err(Stop::Fatal)?
                }
            };
            let outcome = match answer {
                Err(why) => Some(why),
                Ok(answer) => {
                    let asked = Asked {
                        pos,
                        end,
                        to: asked_to,
                        total,
                        etag: etag.as_deref(),
                    };
                    self.check(answer, &asked, index)?
                }
            };
            let Some(why) = outcome else {
                continue;
            };
            // What ended this try; `progressed` when any connection brought a byte since this one
            // last failed (then the count of failures in a row starts again).
            let (failures, at) = {
                let mut shared = self.shared.lock().expect("not poisoned");
                let progressed = shared.segments[index].pos > pos;
                if !progressed {
                    shared.failures_in_a_row += 1;
                }
                (
                    if progressed {
                        0
                    } else {
                        shared.failures_in_a_row
                    },
                    shared.segments[index].pos,
                )
            };
            if at >= end {
                // It ended after its last byte (a split moved the end), nothing is missing.
                return Ok(());
            }
            wait_to_retry(
                self.url,
                why,
                failures,
                self.options.retries,
                at,
                self.warn,
                &|| self.stop.load(Ordering::SeqCst),
            )
            .map_err(|e| match e {
                // Another connection ended the round: its reason stands.
                Error::DownloadStopped { .. } => Stop::Restart(String::new()),
                e => Stop::Fatal(e),
            })?;
            let mut shared = self.shared.lock().expect("not poisoned");
            shared.retries += 1;
            self.watch.progress(
                shared.have,
                shared.state.as_ref().and_then(|s| s.total),
                shared.retries,
            );
        }
    }

    /// Check an answer to `asked` and copy its body. `Ok(None)`: the body ended (the caller
    /// looks at what is left); `Ok(Some(why))`: a failure to retry.
    fn check(
        &self,
        answer: Answer,
        asked: &Asked<'_>,
        index: usize,
    ) -> std::result::Result<Option<String>, Stop> {
        let Asked {
            pos,
            end,
            to: asked_to,
            total,
            etag,
        } = *asked;
        let changed = |why: &str| Err(Stop::Restart(why.to_owned()));
        match answer.status {
            206 => {
                let Some(range) = answer.content_range else {
                    return changed("a partial answer came without a Content-Range");
                };
                let Some((first, last)) = range.range else {
                    return changed("a partial answer came without its range");
                };
                if first != pos {
                    return changed(&format!(
                        "the server sent a range that does not start at byte {pos}"
                    ));
                }
                if total.is_some() && range.total != total {
                    return changed("the object's size changed since the download started");
                }
                if let (Some(known), Some(now)) = (etag, &answer.etag) {
                    if known != now {
                        return changed("the object changed since the download started");
                    }
                }
                // Exactly the bytes asked for: to the byte asked, else to the object's end.
                let wanted_last = asked_to.or(range.total.map(|t| t - 1));
                if let Some(wanted) = wanted_last.filter(|&w| w != last) {
                    return changed(&format!(
                        "the server sent bytes {first}-{last}, not {first}-{wanted}"
                    ));
                }
                if total.is_none() {
                    self.learn_total(range.total, index);
                }
                self.copy(answer, index, last - first + 1)
            }
            200 if pos == 0 && (end == u64::MAX || Some(end) == total) => {
                if let (Some(known), Some(now)) = (etag, &answer.etag) {
                    if known != now {
                        return changed("the object changed since the download started");
                    }
                }
                if total.is_some()
                    && answer.content_length.is_some()
                    && answer.content_length != total
                {
                    return changed("the object's size changed since the download started");
                }
                let expected = answer.content_length.or(total);
                if total.is_none() {
                    self.learn_total(expected, index);
                }
                match expected {
                    Some(n) => self.copy(answer, index, n),
                    None => self.copy(answer, index, u64::MAX),
                }
            }
            200 => changed("the server ignored the range asked for and sent the whole object"),
            416 => changed("the server has fewer bytes than were already downloaded"),
            412 => changed(
                "the object changed since the download started (its ETag no longer matches)",
            ),
            401 | 403 | 404 | 410 => Err(Stop::Fatal(refusal(self.url, answer))),
            408 | 429 | 500..=599 => Ok(Some(format!("the server answered {}", answer.status))),
            status => Err(Stop::Fatal(Error::UrlRefused {
                url: self.url.shown().to_owned(),
                status,
                code: None,
                message: None,
            })),
        }
    }

    /// The object's size, learnt after the first answer did not say it.
    fn learn_total(&self, total: Option<u64>, index: usize) {
        let Some(total) = total else { return };
        let mut shared = self.shared.lock().expect("not poisoned");
        if let Some(state) = shared.state.as_mut() {
            state.total = Some(total);
        }
        let s = &mut shared.segments[index];
        if s.end == u64::MAX {
            s.end = total;
        }
    }

    /// Write the body at the segment's position until it ends, the segment is complete (its end
    /// may move closer meanwhile), or the round stops. `expected`: the bytes the body announced.
    fn copy(
        &self,
        mut answer: Answer,
        index: usize,
        expected: u64,
    ) -> std::result::Result<Option<String>, Stop> {
        let mut buf = vec![0u8; COPY_CHUNK];
        let mut got = 0u64;
        let why = loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let n = match answer.body.read(&mut buf) {
                Ok(0) if got < expected && expected != u64::MAX => {
                    break format!("the body ended after {got} of {expected} bytes");
                }
                Ok(0) => {
                    // A body of unknown size ended cleanly: the object ends here.
                    let mut shared = self.shared.lock().expect("not poisoned");
                    let s = &mut shared.segments[index];
                    if s.end == u64::MAX {
                        s.end = s.pos;
                        let at = s.pos;
                        if let Some(state) = shared.state.as_mut() {
                            state.total = Some(at);
                        }
                    }
                    return Ok(None);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break io_words(&e),
            };
            got += n as u64;
            // Never past the segment's end: an idle connection may have taken the rest. A split
            // leaves at least one buffer before the new end, so the bytes reserved here are this
            // segment's.
            let (at, k) = {
                let shared = self.shared.lock().expect("not poisoned");
                let s = &shared.segments[index];
                (s.pos, (n as u64).min(s.end - s.pos) as usize)
            };
            self.part
                .write_all_at(&buf[..k], at)
                .map_err(|e| Stop::Fatal(Error::io("writing the partial download", e)))?;
            let complete = {
                let mut shared = self.shared.lock().expect("not poisoned");
                let s = &mut shared.segments[index];
                s.pos += k as u64;
                let complete = s.pos >= s.end;
                shared.received += k as u64;
                shared.have += k as u64;
                shared.failures_in_a_row = 0;
                self.watch.progress(
                    shared.have,
                    shared.state.as_ref().and_then(|s| s.total),
                    shared.retries,
                );
                complete
            };
            if complete {
                self.checkpoint().map_err(Stop::Fatal)?;
            }
            if complete {
                return Ok(None);
            }
        };
        Ok(Some(why))
    }

    /// Sync the bytes written, then claim them in the state file (written to a temporary file,
    /// synced, renamed): the state never claims a byte that is not on disk.
    fn checkpoint(&self) -> Result<()> {
        let _one = self.checkpointing.lock().expect("not poisoned");
        let written: Vec<(usize, u64)> = {
            let shared = self.shared.lock().expect("not poisoned");
            shared
                .segments
                .iter()
                .enumerate()
                .filter(|(_, s)| s.pos > s.claimed)
                .map(|(i, s)| (i, s.pos))
                .collect()
        };
        if self.sync_failed.load(Ordering::SeqCst) {
            return Err(Error::io(
                "writing the partial download",
                io::Error::other("an earlier sync of it failed"),
            ));
        }
        if written.is_empty() {
            return Ok(());
        }
        self.part.sync_data().map_err(|e| {
            self.sync_failed.store(true, Ordering::SeqCst);
            Error::io("writing the partial download", e)
        })?;
        let state = {
            let mut shared = self.shared.lock().expect("not poisoned");
            let mut claims = Vec::new();
            for &(i, pos) in &written {
                let s = &mut shared.segments[i];
                claims.push((s.claimed, pos));
                s.claimed = pos;
            }
            let Some(state) = shared.state.as_mut() else {
                return Ok(());
            };
            for (a, b) in claims {
                state.claim(a, b);
            }
            state.clone()
        };
        if state.total.is_some() {
            save_state(self.state_path, &state)?;
        }
        Ok(())
    }

    fn save(&self, state: &State) -> std::result::Result<(), Stop> {
        save_state(self.state_path, state).map_err(Stop::Fatal)
    }
}

/// What a request for a segment asked.
#[derive(Clone, Copy)]
struct Asked<'a> {
    /// Its first byte.
    pos: u64,
    /// One past the segment's last byte when asked (`u64::MAX`: the size is unknown).
    end: u64,
    /// The last byte in its `Range` (`None`: to the end of the object).
    to: Option<u64>,
    /// The object's size, when known.
    total: Option<u64>,
    /// The ETag it was conditional on.
    etag: Option<&'a str>,
}

/// The segment with the most bytes left, if both its halves would be at least [`MIN_SEGMENT`]
/// and `margin` (the bytes its connection may be writing now) lies before the split.
fn splittable(segments: &[Segment], margin: u64) -> Option<usize> {
    segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.end != u64::MAX)
        .max_by_key(|(_, s)| s.end.saturating_sub(s.pos))
        .filter(|(_, s)| s.end.saturating_sub(s.pos) >= 2 * MIN_SEGMENT.max(margin))
        .map(|(i, _)| i)
}

/// Where a segment is cut in two.
fn split_point(s: &Segment) -> u64 {
    s.pos + (s.end - s.pos) / 2
}

/// The error for a 401, 403, 404 or 410: an expiry, or another refusal with the S3 code.
pub(crate) fn refusal(url: &DownloadUrl, answer: Answer) -> Error {
    let status = answer.status;
    let mut body = Vec::new();
    let _ = answer.body.take(MAX_ERROR_BODY).read_to_end(&mut body);
    let s3 = S3Error::parse(&body);
    let expired_by_clock = url
        .expires_at()
        .is_some_and(|at| crate::time::now().is_ok_and(|now| now >= at));
    if status == 403 && (s3.is_expiry() || expired_by_clock) {
        return Error::UrlExpired {
            url: url.shown().to_owned(),
            at: url.expires_at(),
        };
    }
    Error::UrlRefused {
        url: url.shown().to_owned(),
        status,
        code: s3.code,
        message: s3.message,
    }
}

/// Check the whole object's size and rename it into place.
fn finish(
    url: &DownloadUrl,
    dest: &Path,
    part_path: &Path,
    state_path: &Path,
    part: File,
    have: u64,
    options: &Options,
) -> Result<()> {
    if let Some(expected) = options.expect_size {
        if expected != have {
            // The whole object is here and it is not the size announced: keep nothing.
            drop(part);
            let _ = fs::remove_file(part_path);
            let _ = fs::remove_file(state_path);
            return Err(Error::DownloadSize {
                url: url.shown().to_owned(),
                expected,
                got: have,
            });
        }
    }
    // The ranges claimed cover the object; the file must be exactly its size too (bytes past the
    // end can only be a stale file's, never the object's).
    let len = part
        .metadata()
        .map_err(|e| Error::io(format!("cannot read {}", part_path.display()), e))?
        .len();
    if len > have {
        part.set_len(have)
            .map_err(|e| Error::io(format!("writing {}", part_path.display()), e))?;
    } else if len < have {
        let _ = fs::remove_file(state_path);
        return Err(Error::DownloadFailed {
            url: url.shown().to_owned(),
            why: format!("the partial file holds {len} bytes, not the object's {have}"),
            tries: 1,
        });
    }
    part.sync_all()
        .map_err(|e| Error::io(format!("writing {}", part_path.display()), e))?;
    drop(part);
    fs::rename(part_path, dest)
        .map_err(|e| Error::io(format!("cannot create {}", dest.display()), e))?;
    let _ = fs::remove_file(state_path);
    if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn discard(part: &File, part_path: &Path) -> Result<()> {
    part.set_len(0)
        .map_err(|e| Error::io(format!("cannot reset {}", part_path.display()), e))
}

/// What the state file beside a partial download says.
#[derive(Debug, PartialEq, Eq)]
enum Loaded {
    /// A state of this version.
    Good(State),
    /// A state file of another version (an older cipherstream's): not trusted.
    OtherVersion,
    /// No state file, or one that cannot be read.
    Nothing,
}

fn load_state(path: &Path) -> Loaded {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let Ok(text) = fs::read(path) else {
        return Loaded::Nothing;
    };
    match serde_json::from_slice::<Version>(&text) {
        Ok(v) if v.version != STATE_VERSION => Loaded::OtherVersion,
        Ok(_) => match serde_json::from_slice::<State>(&text) {
            Ok(state) => Loaded::Good(state),
            Err(_) => Loaded::Nothing,
        },
        Err(_) => Loaded::Nothing,
    }
}

/// Write the state file: a temporary file, synced, renamed over it.
fn save_state(path: &Path, state: &State) -> Result<()> {
    let temp = path.with_extension("json.new");
    let text = serde_json::to_vec(state).expect("the state serialises");
    let write = || -> io::Result<()> {
        let mut f = private_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        fs::rename(&temp, path)
    };
    write().map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

/// After a try that did not finish: give up once `failures` (in a row without progress; 0 when the
/// try progressed) passes `retries`, or when the wait would pass the URL's expiry; else say what
/// happened and when the next try is, and wait (not at all after progress). Shared by `fetch` and
/// the remote reader, so both retry alike. The wait ends early, with
/// [`Error::DownloadStopped`], once `stop` is set (the work the download feeds has stopped).
pub(crate) fn wait_to_retry(
    url: &DownloadUrl,
    why: String,
    failures: u32,
    retries: u32,
    at_byte: u64,
    warn: &dyn Warn,
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    let stopped = || Error::DownloadStopped {
        url: url.shown().to_owned(),
    };
    if stop() {
        return Err(stopped());
    }
    if failures > retries {
        return Err(Error::DownloadFailed {
            url: url.shown().to_owned(),
            why,
            tries: failures,
        });
    }
    let wait = if failures == 0 {
        Duration::ZERO
    } else {
        backoff(failures)
    };
    if let Some(expiry) = url.expires_at() {
        if crate::time::now()? + wait.as_secs() as i64 >= expiry {
            return Err(Error::UrlExpired {
                url: url.shown().to_owned(),
                at: Some(expiry),
            });
        }
    }
    warn.warn(Warning::DownloadRetry {
        url: url.shown().to_owned(),
        why,
        at_byte,
        wait,
        attempt: failures.max(1),
        of: retries,
    });
    if sleep_unless(stop, wait) {
        return Err(stopped());
    }
    Ok(())
}

/// Sleep for `wait`, or less once `stop` says so; true if it did.
pub(crate) fn sleep_unless(stop: &dyn Fn() -> bool, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    loop {
        if stop() {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(STOP_POLL));
    }
}

/// The wait before try `n` (1-based): 0.5 s doubling to 30 s, with up to 50% jitter so that many
/// clients cut at once do not come back at once.
pub(crate) fn backoff(n: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << n.saturating_sub(1).min(10))
        .min(MAX_BACKOFF);
    let mut random = [0u8; 2];
    let jitter = match getrandom::fill(&mut random) {
        Ok(()) => f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    };
    base.mul_f64(0.5 + jitter / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for n in 1..20 {
            let wait = backoff(n);
            let base = FIRST_BACKOFF
                .saturating_mul(1 << (n - 1).min(10))
                .min(MAX_BACKOFF);
            assert!(wait >= base / 2 && wait <= base, "try {n}: {wait:?}");
        }
        assert!(backoff(30) <= MAX_BACKOFF);
    }

    #[test]
    fn companions_sit_beside_the_destination_and_hide() {
        let (part, state) = companions(Path::new("out/job.zip")).unwrap();
        assert_eq!(part, Path::new("out/.job.zip.cipherstream-download"));
        assert_eq!(state, Path::new("out/.job.zip.cipherstream-download.json"));
    }

    #[test]
    fn state_round_trips_and_never_holds_a_query() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let state = State {
            version: STATE_VERSION,
            url: "https://h/p.zip".into(),
            etag: Some("\"abc-3\"".into()),
            total: Some(42),
            done: vec![(0, 10), (20, 30)],
        };
        save_state(&path, &state).unwrap();
        assert_eq!(load_state(&path), Loaded::Good(state));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[test]
    fn an_old_state_file_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        fs::write(
            &path,
            br#"{"version":1,"url":"https://h/p.zip","etag":"\"e\"","total":9}"#,
        )
        .unwrap();
        assert_eq!(load_state(&path), Loaded::OtherVersion);
        fs::write(&path, b"{").unwrap();
        assert_eq!(load_state(&path), Loaded::Nothing);
    }

    #[test]
    fn ranges_done_merge_and_leave_the_rest_missing() {
        let mut state = State::new(&DownloadUrl::parse("https://h/p.zip").unwrap());
        state.total = Some(100);
        state.etag = Some("\"e\"".into());
        state.claim(40, 50);
        state.claim(0, 10);
        state.claim(10, 20);
        state.claim(45, 60);
        assert_eq!(state.done, [(0, 20), (40, 60)]);
        assert_eq!(state.missing(), [(20, 40), (60, 100)]);
        assert_eq!(state.have(), 40);
        assert!(state.resumable(60));
        // Claims beyond the partial file's end, or a weak ETag: start again.
        assert!(!state.resumable(59));
        state.etag = Some("W/\"e\"".into());
        assert!(!state.resumable(60));
    }

    #[test]
    fn a_range_is_split_only_when_both_halves_are_big_enough() {
        let seg = |pos, end| Segment {
            claimed: pos,
            pos,
            end,
            taken: true,
        };
        let segments = [seg(0, 2 * MIN_SEGMENT - 1), seg(0, 3 * MIN_SEGMENT)];
        assert_eq!(splittable(&segments, COPY_CHUNK as u64), Some(1));
        assert_eq!(split_point(&segments[1]), 3 * MIN_SEGMENT / 2);
        assert_eq!(splittable(&segments[..1], 0), None);
        assert_eq!(splittable(&[seg(0, u64::MAX)], 0), None);
    }

    #[test]
    fn a_file_is_renamed_into_place_only_at_the_object_size() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.zip");
        let (part_path, state_path) = companions(&dest).unwrap();
        let url = DownloadUrl::parse("https://h/a.zip").unwrap();
        let options = Options {
            expect_size: None,
            retries: 0,
            connections: 1,
        };
        let open = |bytes: &[u8]| {
            fs::write(&part_path, bytes).unwrap();
            fs::write(&state_path, b"{}").unwrap();
            File::options()
                .read(true)
                .write(true)
                .open(&part_path)
                .unwrap()
        };
        // Short of the object: an error, and the state is dropped (the next run starts again).
        let short = finish(
            &url,
            &dest,
            &part_path,
            &state_path,
            open(b"abc"),
            4,
            &options,
        );
        assert!(
            matches!(short, Err(Error::DownloadFailed { .. })),
            "{short:?}"
        );
        assert!(!dest.exists() && !state_path.exists());
        // Bytes past the object's end are not the object's.
        finish(
            &url,
            &dest,
            &part_path,
            &state_path,
            open(b"abcdXX"),
            4,
            &options,
        )
        .unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"abcd");
    }

    #[test]
    fn a_wait_ends_when_stopped() {
        let stop = AtomicBool::new(true);
        let started = Instant::now();
        assert!(sleep_unless(
            &|| stop.load(Ordering::SeqCst),
            Duration::from_secs(30)
        ));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
