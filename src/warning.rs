//! Warnings: what the library noticed that does not stop the work, reported through one sink.
//!
//! Library code never prints. It hands each [`Warning`] to a [`Warn`] sink that the caller
//! chooses: the commands print `warning: ...` on standard error (out of the progress bar's way),
//! and a long-running receiver can log them in its own format.

use std::fmt;
use std::path::PathBuf;

use crate::error::Error;
use crate::format::nonce::FILTER_ROWS;
use crate::text;

/// Something worth telling the user that does not stop the work.
#[derive(Debug)]
#[non_exhaustive]
pub enum Warning {
    /// A key or secret file is readable by group or others (SPEC: warn, do not refuse).
    SharedSecretFile {
        /// "key file" or "webhook secret file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// One of several `--secret-file`s does not exist (a rotation that is over); the others are
    /// tried.
    MissingSecretFile {
        /// The missing file; `None` when its name looks like a webhook secret itself (the secret
        /// given where its file belongs), which is never shown.
        path: Option<PathBuf>,
        /// How many other files are tried.
        remaining: usize,
    },
    /// Two rows were sealed with the same nonce (`first` is `None` when the fixed-memory check
    /// can only suspect it).
    NonceReuse {
        /// The input as the user named it.
        input: String,
        /// The earlier row, when known exactly.
        first: Option<u64>,
        /// The later row.
        later: u64,
    },
    /// `--skip-bad-rows` skipped a row; the error says which and why.
    RowSkipped(Error),
    /// A download try failed and will be retried.
    DownloadRetry {
        /// The URL as it may be shown.
        url: String,
        /// What happened.
        why: String,
        /// Bytes already downloaded.
        at_byte: u64,
        /// The wait before the next try.
        wait: std::time::Duration,
        /// This failure's number in a row.
        attempt: u32,
        /// The most failures in a row allowed.
        of: u32,
    },
    /// The partial bytes of a download were discarded and it starts again.
    DownloadRestarted {
        /// The URL as it may be shown.
        url: String,
        /// Why.
        why: String,
    },
    /// `encrypt --key-id` holds `:`, which the vendor's sample code cannot read.
    KeyIdWithColon,
}

impl Warning {
    /// The word the line starts with: `skipped` for a skipped row, `warning` otherwise.
    pub fn label(&self) -> &'static str {
        match self {
            Warning::RowSkipped(_) => "skipped",
            _ => "warning",
        }
    }
}

impl fmt::Display for Warning {
    /// The message, escaped as a whole, as errors are (see [`crate::text`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&text::escape(&Unescaped(self).to_string()))
    }
}

/// A warning as worded, before [`text::escape`]; shown only through `Display for Warning`.
struct Unescaped<'a>(&'a Warning);

impl fmt::Display for Unescaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Warning::SharedSecretFile { what, path, mode } => write!(
                f,
                "{what} {} is readable by group or others (mode {:04o}); run: chmod 600 {}",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
            Warning::MissingSecretFile { path, remaining } => {
                let others = match remaining {
                    1 => "one".to_owned(),
                    n => n.to_string(),
                };
                match path {
                    Some(path) => write!(
                        f,
                        "the webhook secret file {} does not exist; trying the other {others}",
                        path.display()
                    ),
                    None => write!(
                        f,
                        "a --secret-file names no file and looks like a webhook secret itself \
                         (not shown): it takes the path of a file holding the secret, and the \
                         secret's text belongs in CIPHERSTREAM_WEBHOOK_SECRET; trying the other \
                         {others}"
                    ),
                }
            }
            Warning::NonceReuse {
                input,
                first: Some(first),
                later,
            } => write!(
                f,
                "{input}: rows {first} and {later} use the same nonce: the sender reused an \
                 AES-GCM nonce, which breaks confidentiality and authenticity; report it to the \
                 vendor"
            ),
            Warning::NonceReuse {
                input,
                first: None,
                later,
            } => write!(
                f,
                "{input}: row {later} probably reuses an earlier row's nonce (a fixed-memory \
                 check over the first {FILTER_ROWS} rows); run `cipherstream verify` to find the \
                 exact rows"
            ),
            Warning::RowSkipped(e) => write!(f, "{e}"),
            Warning::DownloadRetry {
                url,
                why,
                at_byte,
                wait,
                attempt,
                of,
            } => write!(
                f,
                "{url}: {why} at byte {at_byte}; retry {attempt} of {of} in {:.1}s",
                wait.as_secs_f64()
            ),
            Warning::DownloadRestarted { url, why } => {
                write!(f, "{url}: {why}; starting the download again")
            }
            Warning::KeyIdWithColon => f.write_str(
                "--key-id contains ':'; cipherstream reads such rows, but the vendor's sample \
                 code (split(\":\")) does not",
            ),
        }
    }
}

/// Where warnings go.
pub trait Warn: Sync {
    /// Report one warning.
    fn warn(&self, warning: Warning);
}

impl<F: Fn(Warning) + Sync> Warn for F {
    fn warn(&self, warning: Warning) {
        self(warning)
    }
}

/// A sink that drops every warning.
pub struct Ignore;

impl Warn for Ignore {
    fn warn(&self, _: Warning) {}
}
