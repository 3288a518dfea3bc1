//! The receiver's log: one [`Event`] per thing that happened, rendered as one line of text or of
//! JSON (issue 14, item 6).
//!
//! The server and the worker never print: they hand each event to a [`Log`] sink that the command
//! chooses (`cmd::webhook` writes to standard error). What an event may hold is decided here, in
//! its type: ids that passed [`crate::webhook::queue::safe_id`], numbers, statuses, and messages
//! of errors and warnings, which never hold a key, a secret, a plaintext byte or a URL's query
//! (a URL appears only as `DownloadUrl::shown`). Text that came from a request (a refused
//! delivery id, an event name) is escaped in both renderings: [`text::escape`] for the text line,
//! [`text::json`] for the JSON line.

use std::fmt;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::text;

/// Something the receiver did or saw, worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The server is accepting connections.
    Listening {
        /// The bound address (`127.0.0.1:8080`, `unix:/run/x.sock`).
        addr: String,
        /// Whether it serves HTTPS.
        tls: bool,
    },
    /// A request was answered without recording anything: a forged, stale, malformed, oversized
    /// or misdirected request.
    Rejected {
        /// The status answered.
        status: u16,
        /// Why, in the receiver's words (never the request's).
        why: String,
    },
    /// A connection could not be taken (out of descriptors or threads): the client sees it
    /// closed.
    ConnectionLost {
        /// Why.
        why: String,
    },
    /// A verified delivery was durably recorded.
    Delivery {
        /// Its delivery id.
        delivery_id: String,
        /// Its event (`job.completed`, ...), escaped.
        event: String,
        /// Its job id, when it names a usable one.
        job_id: Option<String>,
        /// What became of it.
        outcome: Outcome,
    },
    /// A verified delivery was recorded as refused: it will not be acted on.
    Refused {
        /// Its delivery id, as sent (escaped when shown), when it has one.
        delivery_id: Option<String>,
        /// Why.
        why: String,
    },
    /// Storing a verified delivery failed; it was answered 503 so the vendor retries.
    StoreFailed {
        /// Why.
        why: String,
    },
    /// A job found running at start (the process stopped mid-job) is queued again.
    Resumed {
        /// The job.
        job_id: String,
    },
    /// A worker started (or resumed) a job.
    JobStarted {
        /// The job.
        job_id: String,
        /// 1 for the first try.
        attempt: u32,
    },
    /// A job failed in a way that may pass; it waits and tries again.
    JobRetry {
        /// The job.
        job_id: String,
        /// The try that failed.
        attempt: u32,
        /// Why.
        why: String,
        /// The wait before the next try.
        wait: Duration,
    },
    /// A job's output is complete.
    JobDone {
        /// The job.
        job_id: String,
        /// Rows decrypted.
        rows: u64,
        /// Bytes of the export downloaded.
        bytes: u64,
        /// The output file.
        output: String,
    },
    /// A job was parked as failed; it is not tried again unless replayed.
    JobFailed {
        /// The job.
        job_id: String,
        /// Why.
        why: String,
        /// What to check next (the error's hint), if anything.
        hint: Option<String>,
    },
    /// A warning during a job (a download retry, a nonce reuse).
    JobWarning {
        /// The job.
        job_id: String,
        /// The warning's text.
        warning: String,
    },
    /// The TLS certificate was reloaded (SIGHUP).
    TlsReloaded,
    /// Reloading the TLS certificate failed; the previous one is still served.
    TlsReloadFailed {
        /// Why.
        why: String,
    },
    /// Delivery records and refusals older than `--keep-deliveries` days were removed.
    Pruned {
        /// Delivery records removed.
        deliveries: usize,
        /// Refusal records removed.
        refused: usize,
        /// Their age limit, in days.
        days: u32,
    },
    /// `--max-connections` was lowered to what the open-files limit allows.
    ConnectionsCapped {
        /// The cap asked for.
        wanted: usize,
        /// The cap used.
        fit: usize,
        /// The open-files limit.
        files: u64,
    },
    /// Old delivery records could not be pruned (tried again later).
    PruneFailed {
        /// Why.
        why: String,
    },
    /// A signal asked the receiver to stop.
    Stopping {
        /// The signal's name.
        signal: &'static str,
    },
    /// The receiver stopped; jobs that were running stay in the queue and resume at the next
    /// start.
    Stopped {
        /// Jobs left running.
        parked: usize,
    },
}

/// What became of a recorded delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new job was queued.
    Queued,
    /// A failed job was queued again with this delivery (a redelivery).
    Requeued,
    /// The delivery id was recorded before: nothing to do.
    DuplicateDelivery,
    /// The job is already queued, running or done: nothing to do.
    DuplicateJob,
    /// The job was queued (waiting to try again) with a URL that expires sooner: it now has
    /// this delivery's, and is due at once (the vendor's redelivery after an expiry).
    Refreshed,
    /// An event that is recorded and logged, never fetched.
    Recorded,
}

impl Outcome {
    /// The outcome as one word, for the log and for `webhook replay`.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Queued => "queued",
            Outcome::Requeued => "requeued",
            Outcome::DuplicateDelivery => "duplicate-delivery",
            Outcome::DuplicateJob => "duplicate-job",
            Outcome::Refreshed => "url-refreshed",
            Outcome::Recorded => "recorded",
        }
    }
}

/// Where log events go.
pub trait Log: Send + Sync {
    /// Record one event.
    fn log(&self, event: Event);
}

/// A log that keeps every event, for tests.
#[derive(Default)]
pub struct Memory(pub std::sync::Mutex<Vec<Event>>);

impl Log for Memory {
    fn log(&self, event: Event) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }
}

impl Event {
    /// The event's name in JSON lines (`"event"`).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Listening { .. } => "listening",
            Event::Rejected { .. } => "rejected",
            Event::ConnectionLost { .. } => "connection-lost",
            Event::Delivery { .. } => "delivery",
            Event::Refused { .. } => "refused",
            Event::StoreFailed { .. } => "store-failed",
            Event::Resumed { .. } => "resumed",
            Event::JobStarted { .. } => "job-started",
            Event::JobRetry { .. } => "job-retry",
            Event::JobDone { .. } => "job-done",
            Event::JobFailed { .. } => "job-failed",
            Event::JobWarning { .. } => "job-warning",
            Event::TlsReloaded => "tls-reloaded",
            Event::TlsReloadFailed { .. } => "tls-reload-failed",
            Event::Pruned { .. } => "pruned",
            Event::PruneFailed { .. } => "prune-failed",
            Event::ConnectionsCapped { .. } => "connections-capped",
            Event::Stopping { .. } => "stopping",
            Event::Stopped { .. } => "stopped",
        }
    }

    /// The event as one JSON object (without the time): `{"event": NAME, ...fields}`.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("event".into(), json!(self.name()));
        let mut put = |k: &str, v: Value| {
            map.insert(k.into(), v);
        };
        match self {
            Event::Listening { addr, tls } => {
                put("addr", json!(addr));
                put("tls", json!(tls));
            }
            Event::Rejected { status, why } => {
                put("status", json!(status));
                put("why", json!(why));
            }
            Event::Delivery {
                delivery_id,
                event,
                job_id,
                outcome,
            } => {
                put("delivery_id", json!(delivery_id));
                put("type", json!(event));
                put("job_id", json!(job_id));
                put("outcome", json!(outcome.word()));
            }
            Event::Refused { delivery_id, why } => {
                put("delivery_id", json!(delivery_id));
                put("why", json!(why));
            }
            Event::StoreFailed { why }
            | Event::ConnectionLost { why }
            | Event::TlsReloadFailed { why }
            | Event::PruneFailed { why } => put("why", json!(why)),
            Event::JobFailed { why, hint, .. } => {
                put("why", json!(why));
                put("hint", json!(hint));
            }
            Event::Resumed { .. } | Event::TlsReloaded => {}
            Event::JobStarted { attempt, .. } => put("attempt", json!(attempt)),
            Event::JobRetry {
                attempt, why, wait, ..
            } => {
                put("attempt", json!(attempt));
                put("why", json!(why));
                put("wait_secs", json!(wait.as_secs()));
            }
            Event::JobDone {
                rows,
                bytes,
                output,
                ..
            } => {
                put("rows", json!(rows));
                put("bytes", json!(bytes));
                put("output", json!(output));
            }
            Event::JobWarning { warning, .. } => put("warning", json!(warning)),
            Event::Pruned {
                deliveries,
                refused,
                days,
            } => {
                put("deliveries", json!(deliveries));
                put("refused", json!(refused));
                put("days", json!(days));
            }
            Event::ConnectionsCapped { wanted, fit, files } => {
                put("wanted", json!(wanted));
                put("fit", json!(fit));
                put("files", json!(files));
            }
            Event::Stopping { signal } => put("signal", json!(signal)),
            Event::Stopped { parked } => put("parked", json!(parked)),
        }
        if let Some(job_id) = self.job_id() {
            map.insert("job_id".into(), json!(job_id));
        }
        map
    }

    fn job_id(&self) -> Option<&str> {
        match self {
            Event::Resumed { job_id }
            | Event::JobStarted { job_id, .. }
            | Event::JobRetry { job_id, .. }
            | Event::JobDone { job_id, .. }
            | Event::JobFailed { job_id, .. }
            | Event::JobWarning { job_id, .. } => Some(job_id),
            _ => None,
        }
    }

    /// One line of JSON: `{"time": RFC 3339, "event": ..., ...}`, safe on a terminal.
    pub fn json_line(&self, unix_secs: i64) -> String {
        let mut map = Map::new();
        map.insert("time".into(), json!(crate::time::format_rfc3339(unix_secs)));
        map.extend(self.to_json());
        text::json(&Value::Object(map))
    }

    /// One line of text: the time, then the message ([`fmt::Display`]).
    pub fn text_line(&self, unix_secs: i64) -> String {
        format!("{} {self}", crate::time::format_rfc3339(unix_secs))
    }
}

impl fmt::Display for Event {
    /// The message, escaped as a whole (see [`crate::text`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&text::escape(&Unescaped(self).to_string()))
    }
}

struct Unescaped<'a>(&'a Event);

impl fmt::Display for Unescaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Event::Listening { addr, tls } => {
                let scheme = if *tls { " (https)" } else { "" };
                write!(f, "listening on {addr}{scheme}")
            }
            Event::Rejected { status, why } => write!(f, "rejected ({status}): {why}"),
            Event::ConnectionLost { why } => write!(f, "connection dropped: {why}"),
            Event::Delivery {
                delivery_id,
                event,
                job_id,
                outcome,
            } => {
                write!(f, "delivery {delivery_id}: {event}")?;
                if let Some(job_id) = job_id {
                    write!(f, " for job {job_id}")?;
                }
                write!(f, ": {}", outcome.word())
            }
            Event::Refused { delivery_id, why } => match delivery_id {
                Some(id) => write!(f, "delivery {} refused: {why}", text::shorten(id)),
                None => write!(f, "delivery refused: {why}"),
            },
            Event::StoreFailed { why } => {
                write!(f, "cannot store a delivery (answered 503): {why}")
            }
            Event::Resumed { job_id } => {
                write!(
                    f,
                    "job {job_id}: was running when the receiver stopped; resuming"
                )
            }
            Event::ConnectionsCapped { wanted, fit, files } => write!(
                f,
                "--max-connections {wanted} lowered to {fit}: the process may open {files} files, \
                 and each connection takes two (raise LimitNOFILE= or ulimit -n)"
            ),
            Event::PruneFailed { why } => {
                write!(
                    f,
                    "cannot prune old delivery records (tried again later): {why}"
                )
            }
            Event::Pruned {
                deliveries,
                refused,
                days,
            } => write!(
                f,
                "pruned {deliveries} delivery records and {refused} refusals older than {days} days"
            ),
            Event::JobStarted { job_id, attempt } => {
                write!(f, "job {job_id}: started (try {attempt})")
            }
            Event::JobRetry {
                job_id,
                attempt,
                why,
                wait,
            } => write!(
                f,
                "job {job_id}: try {attempt} failed: {why}; trying again in {}s",
                wait.as_secs()
            ),
            Event::JobDone {
                job_id,
                rows,
                bytes,
                output,
            } => write!(
                f,
                "job {job_id}: done: {rows} rows from {bytes} bytes in {output}"
            ),
            Event::JobFailed { job_id, why, hint } => {
                write!(f, "job {job_id}: failed: {why}")?;
                match hint {
                    Some(hint) => write!(f, " (hint: {hint})"),
                    None => Ok(()),
                }
            }
            Event::JobWarning { job_id, warning } => write!(f, "job {job_id}: warning: {warning}"),
            Event::TlsReloaded => f.write_str("TLS certificate reloaded"),
            Event::TlsReloadFailed { why } => write!(
                f,
                "TLS certificate not reloaded, the previous one is still served: {why}"
            ),
            Event::Stopping { signal } => {
                write!(f, "{signal}: stopping: no new connections")
            }
            Event::Stopped { parked } => write!(
                f,
                "stopped; {parked} running jobs stay queued and resume at the next start"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_lines_escape_what_came_from_a_request() {
        let e = Event::Refused {
            delivery_id: Some("../x\u{1b}[2J".into()),
            why: "its delivery id holds characters other than letters, digits, '.', '_', '-'"
                .into(),
        };
        let line = e.text_line(0);
        assert_eq!(
            line,
            "1970-01-01T00:00:00Z delivery \"../x\\u{1b}[2J\" refused: its delivery id holds \
             characters other than letters, digits, '.', '_', '-'"
        );
        let json = e.json_line(0);
        assert!(!json.contains('\u{1b}'), "{json}");
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["delivery_id"], "../x\u{1b}[2J");
        assert_eq!(back["event"], "refused");
        assert_eq!(back["time"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn job_events_carry_the_job_id_in_json() {
        let e = Event::JobDone {
            job_id: "j1".into(),
            rows: 3,
            bytes: 10,
            output: "out/j1.ndjson".into(),
        };
        assert_eq!(
            e.to_string(),
            "job j1: done: 3 rows from 10 bytes in out/j1.ndjson"
        );
        let json = e.to_json();
        assert_eq!(json["job_id"], "j1");
        assert_eq!(json["rows"], 3);
    }
}
