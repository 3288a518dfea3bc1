//! Webhook bodies: signatures (HMAC-SHA256), timestamps, delivery ids, and the row count a body
//! announces.
//!
//! A CipherStream webhook is trusted only after three checks, in this order (SPEC section 2):
//! the `X-CipherStream-Signature` header is the HMAC-SHA256 of the exact raw body bytes under one
//! of the webhook secrets, compared in constant time; only then is the body parsed as JSON, and its
//! `timestamp` (RFC 3339) must lie within a tolerance of now in both directions; finally, with a
//! seen-file, its `delivery_id` must not have been recorded before (the vendor retries up to three
//! times, so duplicates are normal). [`verify`] is the only way to obtain a parsed body, so no
//! caller can parse or re-serialize the JSON before the signature verified.
//!
//! Secrets are held in buffers that are wiped on drop and have no `Debug` that shows them; no error
//! ever contains a secret or the signature the body should have had.
//!
//! Testing aid: in a debug build (the one `cargo test` runs), when the environment variable
//! `CIPHERSTREAM_NOW` holds a whole number of Unix seconds, [`now`] returns it instead of the
//! system clock, so tests can check stale and future timestamps against fixed bodies. A release
//! build ignores it: a stray variable on a production receiver must not move the clock that the
//! timestamp check trusts.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{display_input, Error, Exit, Result};

/// Environment variable holding the webhook secret when no `--secret-file` is given.
pub const ENV_SECRET: &str = "CIPHERSTREAM_WEBHOOK_SECRET";

/// Environment variable overriding the current time (Unix seconds) in debug builds; a testing aid.
pub const ENV_NOW: &str = "CIPHERSTREAM_NOW";

/// Delivery ids longer than this are refused rather than written to the seen-file.
const MAX_DELIVERY_ID_BYTES: usize = 1024;

type HmacSha256 = Hmac<Sha256>;

/// A webhook secret: the UTF-8 bytes of the secret's text, surrounding whitespace removed. Wiped on
/// drop; its `Debug` shows only where it came from.
pub struct Secret {
    bytes: Zeroizing<Vec<u8>>,
    source: String,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("source", &self.source)
            .field("bytes", &"<redacted>")
            .finish()
    }
}

impl Secret {
    /// Make a secret from its text; surrounding whitespace is ignored. `source` names where the text
    /// came from in messages (a file name or the environment variable, never the text). An empty
    /// secret, or text that is not UTF-8, is an error (exit 1).
    pub fn from_text(text: &[u8], source: impl Into<String>) -> Result<Secret> {
        let source = source.into();
        let text = std::str::from_utf8(text).map_err(|_| Error::Failed {
            message: format!("{source} is not UTF-8 text"),
            hint: Some(
                "save the webhook secret as plain UTF-8 text (not UTF-16), exactly as the vendor \
                 issued it"
                    .into(),
            ),
            exit: Exit::Failure,
        })?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(Error::Failed {
                message: format!("{source} is empty: expected a webhook secret"),
                hint: Some("an empty secret would let anyone sign webhooks; check the file".into()),
                exit: Exit::Failure,
            });
        }
        Ok(Secret {
            bytes: Zeroizing::new(trimmed.as_bytes().to_vec()),
            source,
        })
    }

    /// Read a secret file, warning on stderr when it is readable by group or others.
    pub fn from_file(path: &Path) -> Result<Secret> {
        let what = "webhook secret file";
        let text = crate::format::key::read_secret_file(path, what).map_err(|e| match e {
            // `read_secret_file` reports a directory or an oversized file as a key error, whose
            // hint is about base64 AES keys; say it in webhook terms instead.
            Error::Key(message) => Error::Failed {
                message,
                hint: Some("--secret-file names a small text file holding the secret".into()),
                exit: Exit::Failure,
            },
            other => other,
        })?;
        Secret::from_text(&text, format!("{what} {}", path.display()))
    }

    /// Where the secret came from, for messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The HMAC-SHA256 of `body` under this secret.
    pub fn mac(&self, body: &[u8]) -> Zeroizing<[u8; 32]> {
        // hmac's own state is wiped only with its `zeroize` feature, which this crate does not
        // enable; the key bytes themselves live in `self.bytes`, which is wiped.
        let mut mac =
            HmacSha256::new_from_slice(&self.bytes).expect("HMAC takes keys of any length");
        mac.update(body);
        Zeroizing::new(mac.finalize().into_bytes().into())
    }

    /// The `X-CipherStream-Signature` header value for `body`: `sha256=` and 64 lowercase hex
    /// digits.
    pub fn signature_header(&self, body: &[u8]) -> String {
        format!("sha256={}", to_hex(self.mac(body).as_ref()))
    }
}

/// Load the webhook secrets per SPEC section 3: every `--secret-file` (any one may match, for a
/// rotation's grace period), else `CIPHERSTREAM_WEBHOOK_SECRET`. None at all is a usage error, so
/// the list returned is never empty.
pub fn load_secrets(files: &[PathBuf]) -> Result<Vec<Secret>> {
    if !files.is_empty() {
        // During a rotation the receiver lists the old and the new file; once one of them is
        // removed, the others must still work (with a warning, so the configuration gets fixed).
        // A file that exists but cannot be read is still an error, as is every file missing.
        let present: Vec<&PathBuf> = files
            .iter()
            .filter(|p| !matches!(p.try_exists(), Ok(false)))
            .collect();
        if present.is_empty() {
            return Err(Secret::from_file(&files[0])
                .err()
                .unwrap_or_else(|| Error::Usage("no webhook secret file exists".to_owned())));
        }
        for missing in files.iter().filter(|p| !present.contains(p)) {
            eprintln!(
                "warning: the webhook secret file {} does not exist; trying the other {}",
                missing.display(),
                match present.len() {
                    1 => "one".to_owned(),
                    n => n.to_string(),
                }
            );
        }
        return present.iter().map(|path| Secret::from_file(path)).collect();
    }
    if let Some(value) = std::env::var_os(ENV_SECRET) {
        let text = Zeroizing::new(value.into_encoded_bytes());
        return Ok(vec![Secret::from_text(&text, ENV_SECRET)?]);
    }
    Err(Error::Usage(format!(
        "no webhook secret given: use --secret-file PATH or set {ENV_SECRET}"
    )))
}

/// A parsed `X-CipherStream-Signature` value: the 32 bytes of an HMAC-SHA256.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature([u8; 32]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(sha256={})", to_hex(&self.0))
    }
}

impl Signature {
    /// Parse `sha256=<64 hex digits>`; the `sha256=` prefix is optional and both the prefix and
    /// the hex digits may be in either case. Anything else fails verification (exit 3): the value
    /// comes from the request, and a forged request is as likely to carry garbage as a wrong MAC.
    pub fn parse(header: &str) -> Result<Signature> {
        let text = header.trim();
        let hex = match text.split_once('=') {
            Some((scheme, hex)) if scheme.eq_ignore_ascii_case("sha256") => hex,
            Some((scheme, _)) => {
                return Err(malformed_signature(format!(
                    "it names the scheme {}, but only sha256= is used",
                    shorten(scheme)
                )))
            }
            None => text,
        };
        let Some(digits) = hex.bytes().map(hex_value).collect::<Option<Vec<u8>>>() else {
            return Err(malformed_signature(
                "it holds a character that is not a hex digit".to_owned(),
            ));
        };
        if digits.len() != 64 {
            return Err(malformed_signature(format!(
                "it has {} hex digits, not 64",
                digits.len()
            )));
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = pair[0] << 4 | pair[1];
        }
        Ok(Signature(bytes))
    }

    /// The signature's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn malformed_signature(why: String) -> Error {
    Error::Failed {
        message: format!(
            "--signature is malformed: {why}; expected sha256= followed by 64 hex digits"
        ),
        hint: Some("pass the X-CipherStream-Signature header's value exactly as received".into()),
        exit: Exit::Auth,
    }
}

/// Compare two byte strings in time that depends only on their lengths, never on where they
/// differ. Different lengths compare unequal.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Check `signature` against the HMAC of the exact `body` bytes under every secret, each in
/// constant time, and return the index of the (first) secret that matched. All secrets are always
/// tried. A mismatch is an authentication error (exit 3) that counts the secrets tried and never
/// shows the expected signature. `input` names the body in messages.
pub fn verify_signature(
    input: &str,
    body: &[u8],
    signature: &Signature,
    secrets: &[Secret],
) -> Result<usize> {
    if let Some(index) = matching_secret(body, signature, secrets) {
        return Ok(index);
    }
    let sources: Vec<&str> = secrets.iter().map(Secret::source).collect();
    let tried = match secrets.len() {
        1 => format!("tried 1 secret: {}", sources[0]),
        n => format!("tried {n} secrets: {}", sources.join(", ")),
    };
    // A body saved with `echo` or an editor gains a final newline the sender never signed. Saying
    // so reveals nothing: whoever holds the body can add or remove a newline.
    let without_newline = body
        .strip_suffix(b"\n")
        .map(|b| b.strip_suffix(b"\r").unwrap_or(b));
    let hint = if without_newline.is_some_and(|b| matching_secret(b, signature, secrets).is_some())
    {
        "the signature matches the body WITHOUT its final newline: the newline was added after \
         the body was received (echo, an editor); pass the raw body byte for byte"
            .to_owned()
    } else {
        "check that BODY is the exact raw request body (not re-serialized, re-encoded or with an \
         added newline) and that the secret is current; during a secret rotation give both \
         secrets with --secret-file"
            .to_owned()
    };
    Err(Error::Failed {
        message: format!("{input}: webhook signature does not match the body ({tried})"),
        hint: Some(hint),
        exit: Exit::Auth,
    })
}

fn matching_secret(body: &[u8], signature: &Signature, secrets: &[Secret]) -> Option<usize> {
    let mut found = None;
    for (index, secret) in secrets.iter().enumerate() {
        let expected = secret.mac(body);
        if constant_time_eq(expected.as_ref(), signature.as_bytes()) && found.is_none() {
            found = Some(index);
        }
    }
    found
}

/// Whether and how to check the body's `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampCheck {
    /// Do not look at the timestamp (replaying a saved payload).
    Skip,
    /// The timestamp must be within `tolerance` seconds of `now`, before or after.
    Within {
        /// Largest accepted distance in seconds.
        tolerance: u64,
        /// Now, in Unix seconds (see [`now`]).
        now: i64,
    },
}

/// A webhook body whose signature (and, if asked, timestamp) verified.
#[derive(Debug)]
pub struct Verified {
    input: String,
    json: serde_json::Value,
    secret_index: usize,
}

impl Verified {
    /// The index, in the list given to [`verify`], of the secret that matched.
    pub fn secret_index(&self) -> usize {
        self.secret_index
    }

    /// The body's `delivery_id`: a non-empty string of at most 1024 bytes without control
    /// characters (it is stored one per line in a seen-file). Missing or unusable is an error
    /// (exit 1).
    pub fn delivery_id(&self) -> Result<&str> {
        let input = &self.input;
        let unusable = |why: String| Error::Failed {
            message: format!("{input}: {why}"),
            hint: Some(
                "--seen-file needs the delivery_id of a CipherStream webhook to recognize retries"
                    .into(),
            ),
            exit: Exit::Failure,
        };
        match self.json.get("delivery_id") {
            None => Err(unusable(
                "the webhook body has no \"delivery_id\" field".into(),
            )),
            Some(serde_json::Value::String(id))
                if !id.is_empty()
                    && id.len() <= MAX_DELIVERY_ID_BYTES
                    && !id.chars().any(char::is_control) =>
            {
                Ok(id)
            }
            Some(serde_json::Value::String(id)) => Err(unusable(format!(
                "the webhook body's delivery_id {} is empty, longer than {MAX_DELIVERY_ID_BYTES} \
                 bytes or holds control characters",
                shorten(id)
            ))),
            Some(other) => Err(unusable(format!(
                "the webhook body's delivery_id is not a string: {}",
                shorten(&other.to_string())
            ))),
        }
    }
}

/// Verify a webhook body: the signature over the exact raw bytes first, then (only then) parse the
/// JSON, then check its `timestamp` as `check` asks. `input` names the body in messages.
///
/// Errors: a signature mismatch, or a timestamp too old or in the future, is exit 3; a body that is
/// not a JSON object or (when checked) has no usable `timestamp` is exit 1.
pub fn verify(
    input: &str,
    body: &[u8],
    signature: &Signature,
    secrets: &[Secret],
    check: TimestampCheck,
) -> Result<Verified> {
    let secret_index = verify_signature(input, body, signature, secrets)?;
    // SPEC section 2: never parse before verifying. The bytes are authentic from here on.
    let unusable = |message: String, hint: &str| Error::Failed {
        message: format!("{input}: {message}"),
        hint: Some(hint.to_owned()),
        exit: Exit::Failure,
    };
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        unusable(
            format!("the signature verified, but the body is not JSON: {e}"),
            "BODY must be the request body alone, not the whole HTTP request or a file that \
             wraps it",
        )
    })?;
    if !json.is_object() {
        return Err(unusable(
            "the signature verified, but the body is not a JSON object".into(),
            "a CipherStream webhook body is a JSON object with event, timestamp and data",
        ));
    }
    if let TimestampCheck::Within { tolerance, now } = check {
        let no_timestamp_hint = "replay protection needs the body's RFC 3339 timestamp; \
                                 --no-timestamp-check skips it, for replaying a saved payload only";
        let text = match json.get("timestamp") {
            None => {
                return Err(unusable(
                    "the webhook body has no \"timestamp\" field".into(),
                    no_timestamp_hint,
                ))
            }
            Some(serde_json::Value::String(text)) => text,
            Some(other) => {
                return Err(unusable(
                    format!(
                        "the webhook body's timestamp is not a string: {}",
                        shorten(&other.to_string())
                    ),
                    no_timestamp_hint,
                ))
            }
        };
        let sent = parse_rfc3339(text).map_err(|why| {
            unusable(
                format!(
                    "the webhook body's timestamp {} is not an RFC 3339 date-time: {why}",
                    shorten(text)
                ),
                "expected a date-time such as 2024-09-26T10:02:15Z",
            )
        })?;
        check_timestamp(input, text, sent, now, tolerance)?;
    }
    Ok(Verified {
        input: input.to_owned(),
        json,
        secret_index,
    })
}

/// Check that `sent` (Unix seconds, from the body's `timestamp` text `shown`) lies within
/// `tolerance` seconds of `now`, before or after. Outside it is an authentication error (exit 3)
/// that says whether the timestamp is too old or in the future, and by how many seconds.
pub fn check_timestamp(
    input: &str,
    shown: &str,
    sent: i64,
    now: i64,
    tolerance: u64,
) -> Result<()> {
    let age = i128::from(now) - i128::from(sent);
    if age.unsigned_abs() <= u128::from(tolerance) {
        return Ok(());
    }
    let (message, hint) = if age > 0 {
        (
            format!(
                "{input}: webhook timestamp {} is too old: {age} seconds before now (tolerance \
                 {tolerance} seconds)",
                shorten(shown)
            ),
            "a delayed or replayed delivery; to process a saved payload use --no-timestamp-check, \
             and check this machine's clock",
        )
    } else {
        (
            format!(
                "{input}: webhook timestamp {} is in the future by {} seconds (tolerance \
                 {tolerance} seconds)",
                shorten(shown),
                -age
            ),
            "check this machine's clock (and the sender's); a large --tolerance weakens replay \
             protection",
        )
    };
    Err(Error::Failed {
        message,
        hint: Some(hint.into()),
        exit: Exit::Auth,
    })
}

/// The current time in Unix seconds: the system clock, or in a debug build `CIPHERSTREAM_NOW` when
/// set (a testing aid; one that is not a whole number is a usage error).
pub fn now() -> Result<i64> {
    #[cfg(debug_assertions)]
    if let Some(value) = std::env::var_os(ENV_NOW).filter(|v| !v.is_empty()) {
        let text = value.to_string_lossy();
        return text.trim().parse::<i64>().map_err(|_| {
            Error::Usage(format!(
                "{ENV_NOW} must be a whole number of Unix seconds, got {text:?}"
            ))
        });
    }
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    Ok(match since {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    })
}

/// Parse an RFC 3339 date-time, `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, into Unix seconds
/// (a fraction is truncated towards the earlier second). Strict: no other layout, no surrounding
/// space; `T` and `Z` may be lower case (RFC 3339 section 5.6). A leap second `:60` counts as the
/// next minute's `:00`. The error says what is wrong.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let mut p = Cursor {
        bytes: text.as_bytes(),
        at: 0,
    };
    let year = p.number(4, "year")?;
    p.expect(b"-", "'-' after the year")?;
    let month = p.number(2, "month")?;
    p.expect(b"-", "'-' after the month")?;
    let day = p.number(2, "day")?;
    p.expect(b"Tt", "'T' between the date and the time")?;
    let hour = p.number(2, "hour")?;
    p.expect(b":", "':' after the hour")?;
    let minute = p.number(2, "minute")?;
    p.expect(b":", "':' after the minute")?;
    let second = p.number(2, "second")?;
    if p.peek() == Some(b'.') {
        p.at += 1;
        let start = p.at;
        while p.peek().is_some_and(|b| b.is_ascii_digit()) {
            p.at += 1;
        }
        if p.at == start {
            return Err(format!("expected a digit after '.' at byte {}", start));
        }
    }
    let offset = match p.peek() {
        Some(b'Z' | b'z') => {
            p.at += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            p.at += 1;
            let hours = p.number(2, "offset hour")?;
            p.expect(b":", "':' in the UTC offset")?;
            let minutes = p.number(2, "offset minute")?;
            if hours > 23 || minutes > 59 {
                return Err(format!(
                    "UTC offset {hours:02}:{minutes:02} is out of range"
                ));
            }
            let seconds = hours * 3600 + minutes * 60;
            if sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => {
            return Err(format!(
                "expected 'Z' or a UTC offset such as +00:00 at byte {}",
                p.at
            ))
        }
    };
    if p.at != text.len() {
        return Err(format!(
            "unexpected characters after the date-time at byte {}",
            p.at
        ));
    }
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} is out of range"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(format!(
            "day {day} is out of range for {year:04}-{month:02}"
        ));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(format!(
            "time {hour:02}:{minute:02}:{second:02} is out of range"
        ));
    }
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// A position in the text being parsed.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Exactly `width` ASCII digits.
    fn number(&mut self, width: usize, what: &str) -> Result<i64, String> {
        let mut value = 0;
        for _ in 0..width {
            match self.peek() {
                Some(b) if b.is_ascii_digit() => value = value * 10 + i64::from(b - b'0'),
                _ => {
                    return Err(format!(
                        "expected {width} digits of the {what} at byte {}",
                        self.at
                    ))
                }
            }
            self.at += 1;
        }
        Ok(value)
    }

    /// One of the bytes in `any`.
    fn expect(&mut self, any: &[u8], what: &str) -> Result<(), String> {
        match self.peek() {
            Some(b) if any.contains(&b) => {
                self.at += 1;
                Ok(())
            }
            _ => Err(format!("expected {what} at byte {}", self.at)),
        }
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Record `delivery_id` in the seen-file at `path` (one id per line, appended), or fail with exit 4
/// when it is already there. The file is created with mode 0600 and held under an exclusive
/// `flock` while it is read and appended, so concurrent verifiers (two cron jobs) agree on exactly
/// one first delivery. Callers MUST call this only after [`verify`] succeeded: an unverified body
/// must never burn a delivery id.
pub fn record_delivery(path: &Path, delivery_id: &str) -> Result<()> {
    let shown = path.display();
    let io_err = |what: &str, e: io::Error| Error::io(format!("{what} seen-file {shown}"), e);
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| io_err("cannot open", e))?;
    lock_exclusive(&file).map_err(|e| io_err("cannot lock", e))?;
    // The lock is released when `file` is closed, on every return path.
    let mut seen = Vec::new();
    // Opened with O_APPEND, the file position is still 0: this reads the whole history.
    file.read_to_end(&mut seen)
        .map_err(|e| io_err("cannot read", e))?;
    let already = seen
        .split(|&b| b == b'\n')
        .any(|line| line.strip_suffix(b"\r").unwrap_or(line) == delivery_id.as_bytes());
    if already {
        return Err(Error::Failed {
            message: format!(
                "duplicate delivery: delivery_id {} is already recorded in {shown}",
                shorten(delivery_id)
            ),
            hint: Some(
                "the vendor retries deliveries, so this one was already verified and handed on; \
                 nothing was printed"
                    .into(),
            ),
            exit: Exit::Duplicate,
        });
    }
    let mut line = Vec::with_capacity(delivery_id.len() + 2);
    if seen.last().is_some_and(|&b| b != b'\n') {
        // A line cut short (by a crash or an editor) must not swallow this id.
        line.push(b'\n');
    }
    line.extend_from_slice(delivery_id.as_bytes());
    line.push(b'\n');
    file.write_all(&line)
        .and_then(|()| file.sync_data())
        .map_err(|e| io_err("cannot append to", e))
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn lock_exclusive(file: &File) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: the descriptor belongs to `file`, which outlives the call; flock touches no
        // memory of ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(not(unix))]
fn lock_exclusive(_: &File) -> io::Result<()> {
    // No flock: concurrent verifiers may both accept the same delivery.
    Ok(())
}

/// Read a webhook body, byte for byte: a file, or standard input for `-` (a usage error when
/// standard input is a terminal, rather than waiting silently).
pub fn read_body(path: &Path) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    let read = if path.as_os_str() == "-" {
        let stdin = io::stdin();
        if stdin.is_terminal() {
            return Err(Error::Usage(
                "no BODY given and standard input is a terminal: pass the body's file, or pipe \
                 the body in"
                    .into(),
            ));
        }
        stdin.lock().read_to_end(&mut body)
    } else {
        File::open(path).and_then(|mut f| f.read_to_end(&mut body))
    };
    read.map_err(|e| Error::io(format!("cannot read {}", display_input(path)), e))?;
    Ok(body)
}

/// Lowercase hex of `bytes`.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A value from an (untrusted or verified) body, quoted and cut to a readable length for messages.
fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    if text.chars().count() <= MAX_CHARS {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(MAX_CHARS).collect();
        format!("{head:?}...")
    }
}

/// Read `data.rows_processed` from a (verified) webhook body, for `--expect-rows-from`.
pub fn rows_processed(path: &Path) -> Result<u64> {
    let text =
        std::fs::read(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    let body: serde_json::Value = serde_json::from_slice(&text).map_err(|e| Error::Failed {
        message: format!("{}: not a JSON webhook body ({e})", path.display()),
        hint: None,
        exit: Exit::Failure,
    })?;
    body.pointer("/data/rows_processed")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| Error::Failed {
            message: format!("{}: no whole number at data.rows_processed", path.display()),
            hint: Some("pass the body of a job.completed webhook".into()),
            exit: Exit::Failure,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> Secret {
        Secret::from_text(text.as_bytes(), "test secret").unwrap()
    }

    #[test]
    fn parses_utc_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        // `date -u -d 2024-09-26T10:02:15Z +%s`
        assert_eq!(parse_rfc3339("2024-09-26T10:02:15Z"), Ok(1_727_344_935));
        assert_eq!(parse_rfc3339("2024-09-26t10:02:15z"), Ok(1_727_344_935));
        assert_eq!(
            parse_rfc3339("2024-09-26T12:02:15+02:00"),
            Ok(1_727_344_935)
        );
        assert_eq!(
            parse_rfc3339("2024-09-26T04:32:15-05:30"),
            Ok(1_727_344_935)
        );
        assert_eq!(
            parse_rfc3339("2024-09-26T10:02:15-00:00"),
            Ok(1_727_344_935)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Ok(-1));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Ok(951_782_400));
        assert_eq!(parse_rfc3339("2038-01-19T03:14:08Z"), Ok(1 << 31));
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59Z"), Ok(253_402_300_799));
        assert_eq!(parse_rfc3339("0000-03-01T00:00:00Z"), Ok(-62_162_035_200));
    }

    #[test]
    fn fractions_truncate_and_leap_seconds_roll_over() {
        assert_eq!(
            parse_rfc3339("2024-09-26T10:02:15.999999999Z"),
            Ok(1_727_344_935)
        );
        assert_eq!(
            parse_rfc3339("2024-09-26T10:02:15.5+00:00"),
            Ok(1_727_344_935)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.5Z"), Ok(-1));
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            parse_rfc3339("2017-01-01T00:00:00Z")
        );
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "2024-09-26",
            "2024-09-26T10:02:15",
            "2024-09-26 10:02:15Z",
            " 2024-09-26T10:02:15Z",
            "2024-09-26T10:02:15Z ",
            "2024-09-26T10:02Z",
            "24-09-26T10:02:15Z",
            "2024-9-26T10:02:15Z",
            "2024-09-26T10:02:15.Z",
            "2024-09-26T10:02:15+0200",
            "2024-09-26T10:02:15+02",
            "2024-09-26T10:02:15+24:00",
            "2024-09-26T10:02:15+02:60",
            "2024-09-26T10:02:15UTC",
            "2024-13-01T00:00:00Z",
            "2024-00-01T00:00:00Z",
            "2024-09-00T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-09-26T24:00:00Z",
            "2024-09-26T10:60:00Z",
            "2024-09-26T10:02:61Z",
            "+2024-09-26T10:02:15Z",
            "２０２４-09-26T10:02:15Z",
            "1727344935",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            parse_rfc3339("2023-02-29T00:00:00Z"),
            Err("day 29 is out of range for 2023-02".into())
        );
        assert_eq!(
            parse_rfc3339("2024-09-26T10:02:15"),
            Err("expected 'Z' or a UTC offset such as +00:00 at byte 19".into())
        );
    }

    #[test]
    fn days_from_civil_agrees_with_counting_days() {
        let mut days = 0;
        for year in 1970..2100 {
            for month in 1..=12 {
                assert_eq!(days_from_civil(year, month, 1), days, "{year}-{month}");
                days += days_in_month(year, month);
            }
        }
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(&[7; 32], &[7; 32]));
        let mut other = [7; 32];
        other[31] ^= 1;
        assert!(!constant_time_eq(&[7; 32], &other));
        other = [7; 32];
        other[0] ^= 0x80;
        assert!(!constant_time_eq(&[7; 32], &other));
        assert!(!constant_time_eq(&[7; 32], &[7; 31]));
        assert!(!constant_time_eq(&[7; 31], &[7; 32]));
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        // RFC 4231 section 4.3: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            secret("Jefe").signature_header(b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signature_parse_accepts_prefix_case_and_bare_hex() {
        let hex = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let want = Signature::parse(&format!("sha256={hex}")).unwrap();
        assert_eq!(want.as_bytes()[0], 0x5b);
        assert_eq!(want.as_bytes()[31], 0x43);
        for other in [
            hex.to_owned(),
            hex.to_uppercase(),
            format!("SHA256={}", hex.to_uppercase()),
            format!("  sha256={hex}\r\n"),
        ] {
            assert_eq!(Signature::parse(&other).unwrap(), want, "{other:?}");
        }
    }

    #[test]
    fn signature_parse_rejects_malformed_values() {
        let hex = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        for bad in [
            String::new(),
            "sha256=".into(),
            hex[..63].to_owned(),
            format!("{hex}0"),
            format!("sha1={hex}"),
            format!("sha256={}g", &hex[..63]),
            format!("sha256=={hex}"),
            format!("sha256={}é", &hex[..62]),
        ] {
            let e = Signature::parse(&bad).unwrap_err();
            assert_eq!(e.exit(), Exit::Auth, "{bad:?}");
            assert!(
                e.to_string().starts_with("--signature is malformed: "),
                "{e}"
            );
        }
        let e = Signature::parse(&hex[..63]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--signature is malformed: it has 63 hex digits, not 64; expected sha256= followed \
             by 64 hex digits"
        );
    }

    #[test]
    fn secrets_are_trimmed_and_never_shown() {
        let s = Secret::from_text(b"  \n s3cr3t-value \r\n", "secret file w.txt").unwrap();
        assert_eq!(
            s.signature_header(b"x"),
            secret("s3cr3t-value").signature_header(b"x")
        );
        let debug = format!("{s:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains("w.txt"), "{debug}");
        assert_eq!(
            Secret::from_text(b" \n\t", "e").unwrap_err().exit(),
            Exit::Failure
        );
        assert_eq!(
            Secret::from_text(&[0xff, 0xfe, b'a'], "e")
                .unwrap_err()
                .exit(),
            Exit::Failure
        );
    }

    #[test]
    fn verify_tries_every_secret_and_reports_the_count() {
        let body = br#"{"timestamp":"2024-09-26T10:02:15Z","delivery_id":"d1"}"#;
        let secrets = vec![secret("old"), secret("new")];
        let sig = Signature::parse(&secrets[1].signature_header(body)).unwrap();
        let v = verify("b", body, &sig, &secrets, TimestampCheck::Skip).unwrap();
        assert_eq!(v.secret_index(), 1);
        assert_eq!(v.delivery_id().unwrap(), "d1");

        let wrong = Signature::parse(&secret("other").signature_header(body)).unwrap();
        let e = verify("b", body, &wrong, &secrets, TimestampCheck::Skip).unwrap_err();
        assert_eq!(e.exit(), Exit::Auth);
        let text = format!("{e} {:?}", e.hint());
        assert!(text.contains("tried 2 secrets"), "{text}");
        for leaked in [
            secrets[0].signature_header(body),
            secrets[1].signature_header(body),
        ] {
            assert!(!text.contains(&leaked[7..]), "{text}");
        }
    }

    #[test]
    fn signature_is_checked_before_the_body_is_parsed() {
        // Not JSON, wrongly signed: an authentication failure, not a parse error.
        let e = verify(
            "b",
            b"not json",
            &Signature([0; 32]),
            &[secret("k")],
            TimestampCheck::Skip,
        )
        .unwrap_err();
        assert_eq!(e.exit(), Exit::Auth);
        // Not JSON, rightly signed: a parse error.
        let sig = Signature::parse(&secret("k").signature_header(b"not json")).unwrap();
        let e = verify("b", b"not json", &sig, &[secret("k")], TimestampCheck::Skip).unwrap_err();
        assert_eq!(e.exit(), Exit::Failure);
    }

    #[test]
    fn added_newline_is_diagnosed() {
        let body = b"{\"timestamp\":\"2024-09-26T10:02:15Z\"}";
        let sig = Signature::parse(&secret("k").signature_header(body)).unwrap();
        let mut with_newline = body.to_vec();
        with_newline.extend_from_slice(b"\r\n");
        let e = verify_signature("b", &with_newline, &sig, &[secret("k")]).unwrap_err();
        assert!(
            e.hint().unwrap().contains("WITHOUT its final newline"),
            "{:?}",
            e.hint()
        );
        let e = verify_signature("b", b"{}\n", &sig, &[secret("k")]).unwrap_err();
        assert!(!e.hint().unwrap().contains("WITHOUT"), "{:?}", e.hint());
    }

    #[test]
    fn timestamp_window_is_inclusive_and_two_sided() {
        let at = 1_727_344_935;
        assert!(check_timestamp("b", "t", at, at + 300, 300).is_ok());
        assert!(check_timestamp("b", "t", at, at - 300, 300).is_ok());
        let old = check_timestamp("b", "t", at, at + 301, 300).unwrap_err();
        assert_eq!(old.exit(), Exit::Auth);
        assert!(old.to_string().contains("too old: 301 seconds"), "{old}");
        let future = check_timestamp("b", "t", at, at - 301, 300).unwrap_err();
        assert!(
            future.to_string().contains("in the future by 301 seconds"),
            "{future}"
        );
        // The widest distance, 2^64 - 1 seconds, neither overflows nor wraps.
        assert!(check_timestamp("b", "t", i64::MIN, i64::MAX, u64::MAX).is_ok());
        assert!(check_timestamp("b", "t", i64::MIN, i64::MAX, u64::MAX - 1).is_err());
        assert!(check_timestamp("b", "t", i64::MAX, i64::MIN, u64::MAX - 1).is_err());
        assert!(check_timestamp("b", "t", 0, 0, 0).is_ok());
    }

    #[test]
    fn seen_file_records_once_and_survives_a_cut_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen");
        record_delivery(&path, "a").unwrap();
        assert_eq!(
            record_delivery(&path, "a").unwrap_err().exit(),
            Exit::Duplicate
        );
        record_delivery(&path, "ab").unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"cut")
            .unwrap();
        record_delivery(&path, "c").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nab\ncut\nc\n");
        assert_eq!(
            record_delivery(&path, "cut").unwrap_err().exit(),
            Exit::Duplicate
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn delivery_id_must_be_a_plain_string() {
        let secrets = [secret("k")];
        let verified = |body: &[u8]| {
            let sig = Signature::parse(&secrets[0].signature_header(body)).unwrap();
            verify("b", body, &sig, &secrets, TimestampCheck::Skip).unwrap()
        };
        for body in [
            &br#"{}"#[..],
            br#"{"delivery_id":7}"#,
            br#"{"delivery_id":""}"#,
            br#"{"delivery_id":"a\nb"}"#,
        ] {
            let e = verified(body).delivery_id().unwrap_err();
            assert_eq!(e.exit(), Exit::Failure, "{}", String::from_utf8_lossy(body));
        }
    }
}
