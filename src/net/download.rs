//! Downloading an object to a file, resumably, atomically, and never spliced (SPEC section 4).
//!
//! The bytes accumulate in `.NAME.cipherstream-download` beside the destination (mode 0600), with
//! a small state file `.NAME.cipherstream-download.json` naming the object (the URL as shown,
//! never its query; its ETag; its total size). The destination appears only complete: the file is
//! synced, its size checked against the server's total and `--expect-size`, and renamed into
//! place. An interruption, in this run or the process's death, leaves the partial file for the
//! next run to resume.
//!
//! Never spliced: every resumed range carries `If-Match` with the ETag seen first, and every
//! answer's `Content-Range` must start exactly where the file ends and agree on the total. A
//! `412` (the object changed), a total that moves, or a state file for another object discards the
//! partial bytes and starts again; a server that ignores `Range` and answers `200` is read from the
//! start, the partial bytes discarded; a `416` is complete only if the file already holds the
//! whole object.
//!
//! Retries: resets, early ends of a body, stalls (an idle read, `ClientOptions::idle_timeout`),
//! `408`, `429` and `5xx` are retried with exponential backoff and jitter, at most
//! [`Options::retries`] times in a row without progress (a connection cut every few megabytes
//! still finishes), and never past the URL's own expiry. `401`, `403`, `404` and `410` are never
//! retried: an expired or refused URL exits 5, and says which.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// How to download.
#[derive(Debug, Clone)]
pub struct Options {
    /// The size the object must have (the webhook's `file_size_bytes`), when known.
    pub expect_size: Option<u64>,
    /// Tries in a row without any new byte before giving up.
    pub retries: u32,
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

/// What the state file records about the object being downloaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    version: u32,
    /// The URL as shown (scheme, host, path): the same object under a freshly signed URL resumes.
    url: String,
    etag: Option<String>,
    total: Option<u64>,
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

/// One try's outcome that is not a finished download.
enum Try {
    /// Bytes arrived (the try may still have ended early): go on at once.
    Progress(String),
    /// Nothing arrived for this reason: wait, then try again.
    Failed(String),
    /// The object changed (or the partial bytes cannot be trusted): discard them and start again.
    Restart(String),
}

/// Download `url` to `dest`.
pub fn fetch(
    client: &Client,
    url: &DownloadUrl,
    dest: &Path,
    options: &Options,
    warn: &dyn Warn,
) -> Result<Downloaded> {
    let (part_path, state_path) = companions(dest)?;
    let mut state = load_state(&state_path)
        .filter(|s| s.url == url.shown())
        .unwrap_or(State {
            version: 1,
            url: url.shown().to_owned(),
            etag: None,
            total: None,
        });
    let mut part = private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part_path)
        .map_err(|e| Error::io(format!("cannot create {}", part_path.display()), e))?;
    let mut have = part
        .metadata()
        .map_err(|e| Error::io(format!("cannot read {}", part_path.display()), e))?
        .len();
    if state.etag.is_none() && state.total.is_none() && have > 0 {
        // Bytes with no record of the object they came from cannot be trusted.
        have = discard(&mut part, &part_path)?;
    }
    // Two runs writing one partial file would interleave: the second waits for nothing, it stops.
    if part.try_lock().is_err() {
        return Err(Error::Usage(format!(
            "another cipherstream is downloading to {} right now",
            dest.display()
        )));
    }
    let start = have;
    // Progress is a byte beyond the furthest yet: a server that cuts at the same byte each time
    // (or ignores Range and starts over) is failing, not progressing.
    let mut furthest = have;
    let mut failures_in_a_row = 0u32;
    let mut retries = 0u32;
    loop {
        if state.total == Some(have) {
            break;
        }
        let outcome = one_try(
            client,
            url,
            &mut state,
            &state_path,
            &mut part,
            &mut have,
            warn,
        )?;
        let (why, progressed) = match outcome {
            None => break,
            Some(Try::Progress(why)) | Some(Try::Failed(why)) => (why, have > furthest),
            Some(Try::Restart(why)) => {
                warn.warn(Warning::DownloadRestarted {
                    url: url.shown().to_owned(),
                    why: why.clone(),
                });
                have = discard(&mut part, &part_path)?;
                state.etag = None;
                state.total = None;
                let _ = fs::remove_file(&state_path);
                // A restart is a failure too: it waits, it counts, it ends at the expiry.
                (why, false)
            }
        };
        furthest = furthest.max(have);
        failures_in_a_row = if progressed { 0 } else { failures_in_a_row + 1 };
        wait_to_retry(url, why, failures_in_a_row, options.retries, have, warn)?;
        retries += 1;
    }
    finish(url, dest, &part_path, &state_path, part, have, options)?;
    Ok(Downloaded {
        bytes: have,
        received: have.saturating_sub(start),
        retries,
    })
}

/// One request, and the body it brings appended to `part`. `Ok(None)`: the object is complete.
fn one_try(
    client: &Client,
    url: &DownloadUrl,
    state: &mut State,
    state_path: &Path,
    part: &mut File,
    have: &mut u64,
    warn: &dyn Warn,
) -> Result<Option<Try>> {
    if *have > 0 && !state.etag.as_deref().is_some_and(strong) {
        // Without a strong ETag nothing proves the bytes on disk are of the object served now.
        return Ok(Some(Try::Restart(
            "the server gives no strong ETag, so the partial bytes cannot be proven to be of the \
             same object"
                .into(),
        )));
    }
    let if_match = state.etag.as_deref().filter(|e| strong(e));
    let answer = match client.get(url, *have, if_match)? {
        Ok(answer) => answer,
        Err(why) => return Ok(Some(Try::Failed(why))),
    };
    match answer.status {
        206 => {
            let Some(range) = answer.content_range else {
                return Ok(Some(Try::Restart(
                    "a partial answer came without a Content-Range".into(),
                )));
            };
            if range.range.map(|(a, _)| a) != Some(*have) {
                return Ok(Some(Try::Restart(format!(
                    "the server sent a range that does not start at byte {have}"
                ))));
            }
            if let (Some(known), Some(total)) = (state.total, range.total) {
                if known != total {
                    return Ok(Some(Try::Restart(
                        "the object's size changed since the download started".into(),
                    )));
                }
            }
            if let (Some(known), Some(etag)) = (&state.etag, &answer.etag) {
                if known != etag {
                    return Ok(Some(Try::Restart(
                        "the object changed since the download started".into(),
                    )));
                }
            }
            let expected = range.range.map(|(a, b)| b - a + 1);
            remember(state, state_path, answer.etag.clone(), range.total)?;
            let copied = copy_body(answer, part, have, expected)?;
            Ok(settle(copied, state, *have))
        }
        200 => {
            if *have > 0 {
                // The server ignored Range: the body starts at byte 0, and the bytes on disk
                // are thrown away, which the user should hear about (a server that always does
                // this never resumes).
                warn.warn(Warning::DownloadRestarted {
                    url: url.shown().to_owned(),
                    why: "the server ignored the range asked for and sent the whole object".into(),
                });
                part.set_len(0)
                    .and_then(|()| part.seek(SeekFrom::Start(0)).map(drop))
                    .map_err(|e| Error::io("restarting the partial download", e))?;
                *have = 0;
            }
            state.etag = None;
            state.total = None;
            remember(
                state,
                state_path,
                answer.etag.clone(),
                answer.content_length,
            )?;
            let expected = answer.content_length;
            let copied = copy_body(answer, part, have, expected)?;
            Ok(settle(copied, state, *have))
        }
        416 => {
            let total = answer.content_range.and_then(|r| r.total);
            // The file holds the whole object (an empty object answers `bytes */0` at once).
            if total == Some(*have) {
                state.total = total;
                return Ok(None);
            }
            Ok(Some(Try::Restart(
                "the server has fewer bytes than were already downloaded".into(),
            )))
        }
        412 => Ok(Some(Try::Restart(
            "the object changed since the download started (its ETag no longer matches)".into(),
        ))),
        401 | 403 | 404 | 410 => Err(refusal(url, answer)),
        408 | 429 | 500..=599 => Ok(Some(Try::Failed(format!(
            "the server answered {}",
            answer.status
        )))),
        status => Err(Error::UrlRefused {
            url: url.shown().to_owned(),
            status,
            code: None,
            message: None,
        }),
    }
}

/// A strong ETag, the only kind `If-Match` compares (RFC 9110 section 13.1.1): a weak one
/// (`W/"..."`) never matches, so sending it would make every resumed range a `412`.
pub(crate) fn strong(etag: &str) -> bool {
    !etag.starts_with("W/")
}

/// Record the object's ETag and total the first time they are seen.
fn remember(
    state: &mut State,
    state_path: &Path,
    etag: Option<String>,
    total: Option<u64>,
) -> Result<()> {
    let before = state.clone();
    if state.etag.is_none() {
        state.etag = etag;
    }
    if state.total.is_none() {
        state.total = total;
    }
    if *state != before {
        save_state(state_path, state)?;
    }
    Ok(())
}

/// After a body was copied: `None` when the object is complete (a body that ended cleanly with no
/// total announced is the whole object), else what to do next.
fn settle(copied: Option<Try>, state: &mut State, have: u64) -> Option<Try> {
    match copied {
        Some(next) => Some(next),
        None if state.total.is_none() || state.total == Some(have) => {
            state.total = Some(have);
            None
        }
        None => Some(Try::Progress(format!(
            "the body ended at byte {have}, before the object's {} bytes",
            state.total.unwrap_or(0)
        ))),
    }
}

/// Append the body to `part`, syncing as it goes. `None`: the body ended cleanly with every byte
/// it announced; else a retry from where it stopped (it ended early, reset or stalled).
fn copy_body(
    mut answer: Answer,
    part: &mut File,
    have: &mut u64,
    expected: Option<u64>,
) -> Result<Option<Try>> {
    part.seek(SeekFrom::Start(*have))
        .map_err(|e| Error::io("writing the partial download", e))?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut got = 0u64;
    let ended = loop {
        match answer.body.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => {
                part.write_all(&buf[..n])
                    .map_err(|e| Error::io("writing the partial download", e))?;
                got += n as u64;
                *have += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Some(io_words(&e)),
        }
    };
    part.sync_data()
        .map_err(|e| Error::io("writing the partial download", e))?;
    let why = match ended {
        Some(why) => why,
        None if expected.is_some_and(|n| got < n) => {
            format!(
                "the body ended after {got} of {} bytes",
                expected.unwrap_or(0)
            )
        }
        None => return Ok(None),
    };
    Ok(Some(if got > 0 {
        Try::Progress(why)
    } else {
        Try::Failed(why)
    }))
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

fn discard(part: &mut File, part_path: &Path) -> Result<u64> {
    part.set_len(0)
        .and_then(|()| part.seek(SeekFrom::Start(0)).map(drop))
        .map_err(|e| Error::io(format!("cannot reset {}", part_path.display()), e))?;
    Ok(0)
}

fn load_state(path: &Path) -> Option<State> {
    let text = fs::read(path).ok()?;
    serde_json::from_slice::<State>(&text)
        .ok()
        .filter(|s| s.version == 1)
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
/// the remote reader, so both retry alike.
pub(crate) fn wait_to_retry(
    url: &DownloadUrl,
    why: String,
    failures: u32,
    retries: u32,
    at_byte: u64,
    warn: &dyn Warn,
) -> Result<()> {
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
    std::thread::sleep(wait);
    Ok(())
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
            version: 1,
            url: "https://h/p.zip".into(),
            etag: Some("\"abc-3\"".into()),
            total: Some(42),
        };
        save_state(&path, &state).unwrap();
        assert_eq!(load_state(&path), Some(state));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
