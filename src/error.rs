//! Typed errors that a user can act on, and the exit status each one maps to.
//!
//! Failure classes stay distinct (SPEC section 3): a container problem, a malformed line, a row that
//! fails authentication, a plaintext that is not JSON and a bad key are different variants with
//! different exit codes, so a parsing error can never masquerade as an authentication failure. Every
//! error renders as two parts: what failed and where (`export.zip: row 7: authentication failed`),
//! then a hint saying what to check next. No variant ever holds key material.

use std::fmt;
use std::io;

/// Process exit statuses, documented in `--help` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Everything worked.
    Success = 0,
    /// I/O, malformed input, bad container, bad key format.
    Failure = 1,
    /// Bad or missing arguments.
    Usage = 2,
    /// A row, a webhook signature or a timestamp did not verify; or the row count is wrong.
    Auth = 3,
    /// `webhook verify --seen-file`: a delivery id that was already recorded.
    Duplicate = 4,
    /// Hung up: SIGHUP (the terminal or ssh session went away).
    HungUp = 129,
    /// Interrupted by SIGINT.
    Interrupted = 130,
    /// Quit by SIGQUIT.
    Quit = 131,
    /// Terminated by SIGTERM.
    Terminated = 143,
}

impl Exit {
    /// The numeric process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Why a row could not be released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowError {
    /// The line is not a vendor-format line; the text says what is wrong with it.
    Malformed(String),
    /// The AES-GCM tag did not verify for this row index.
    Auth(Diagnosis),
    /// The row authenticated but its plaintext is not one UTF-8 JSON document.
    Plaintext(String),
    /// The line is longer than `--max-line-bytes`.
    TooLong {
        /// The configured limit in bytes.
        limit: u64,
    },
}

/// What the neighbouring row indices tell about an authentication failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnosis {
    /// Nothing else was tried (or nothing matched a later row).
    Unknown,
    /// Row 0 fails at every index tried: the key or the customer id is wrong.
    WrongKeyOrCustomer,
    /// The line authenticates under another row index.
    Displaced {
        /// The index the line authenticates as.
        actual: u64,
    },
}

/// Every error the tool reports.
#[derive(Debug)]
pub enum Error {
    /// The command line is wrong (exit 2).
    Usage(String),
    /// The key could not be loaded or is not a 32-byte base64 key.
    Key(String),
    /// An I/O operation failed; `what` names the file and operation.
    Io {
        /// What was being done, naming the path.
        what: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// The input is not a readable ZIP, gzip or NDJSON export.
    Container {
        /// The input as the user named it.
        input: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A ZIP holds several candidate members and none was chosen.
    AmbiguousArchive {
        /// The input as the user named it.
        input: String,
        /// The candidate member names.
        members: Vec<String>,
    },
    /// A row failed.
    Row {
        /// The input as the user named it.
        input: String,
        /// Zero-based row index (blank lines do not count).
        row: u64,
        /// What went wrong with it.
        kind: RowError,
    },
    /// `--expect-rows` and the export disagree.
    RowCount {
        /// The input as the user named it.
        input: String,
        /// Rows the caller expected.
        expected: u64,
        /// Rows the export holds.
        found: u64,
    },
    /// `--skip-bad-rows` skipped rows: the output is incomplete.
    RowsSkipped {
        /// The input as the user named it.
        input: String,
        /// How many rows were skipped.
        skipped: u64,
        /// The worst exit status among the skipped rows.
        exit: Exit,
    },
    /// `verify` found rows sealed with a nonce an earlier row used (exit 3).
    NonceReuse {
        /// The input as the user named it.
        input: String,
        /// (earlier row, later row) pairs, in row order.
        pairs: Vec<(u64, u64)>,
    },
    /// A check failed or an input is unusable, said in a message of its own: a webhook signature
    /// or timestamp (exit 3), a webhook body or an `encrypt` input line (exit 1).
    Failed {
        /// What failed.
        message: String,
        /// What to check next.
        hint: Option<String>,
        /// Exit status.
        exit: Exit,
    },
    /// Several inputs failed (`--output-dir`, `verify`): each was already reported.
    Inputs {
        /// How many inputs failed.
        failed: usize,
        /// How many inputs there were.
        total: usize,
        /// The exit status of the first failure.
        exit: Exit,
    },
    /// A signal stopped the work; everything was cleaned up.
    Interrupted(Exit),
}

impl Error {
    /// Wrap an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// A container error for `input`.
    pub fn container(input: &str, detail: impl Into<String>) -> Error {
        Error::Container {
            input: input.to_owned(),
            detail: detail.into(),
        }
    }

    /// The exit status this error maps to.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Usage(_) => Exit::Usage,
            Error::Row {
                kind: RowError::Auth(_),
                ..
            }
            | Error::RowCount { .. }
            | Error::NonceReuse { .. } => Exit::Auth,
            Error::RowsSkipped { exit, .. }
            | Error::Failed { exit, .. }
            | Error::Inputs { exit, .. }
            | Error::Interrupted(exit) => *exit,
            _ => Exit::Failure,
        }
    }

    /// True when this error is a closed standard output (`| head`): not an error at all.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }

    /// What to check or run next, if there is something useful to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Usage(_) => Some("run with --help for usage".into()),
            Error::Key(_) => Some(
                "the key is the base64 text of 32 random bytes, as the vendor issued it; \
                 give it with --key-file PATH, CIPHERSTREAM_KEY_FILE or CIPHERSTREAM_KEY"
                    .into(),
            ),
            Error::AmbiguousArchive { .. } => Some("choose one with --member NAME".into()),
            Error::Container { .. } => Some(
                "check that the download completed (compare its size with the webhook's \
                 file_size_bytes) and that this is the export file itself"
                    .into(),
            ),
            Error::Row { row, kind, .. } => match kind {
                RowError::Auth(Diagnosis::WrongKeyOrCustomer) => Some(
                    "row 0 fails at every nearby index: the key or the --customer-id is wrong \
                     (the two look the same)"
                        .into(),
                ),
                RowError::Auth(Diagnosis::Displaced { actual }) if actual > row => Some(format!(
                    "the line authenticates as row {actual}: {} row(s) are missing before it",
                    actual - row
                )),
                RowError::Auth(Diagnosis::Displaced { actual }) => Some(format!(
                    "the line authenticates as row {actual}: {} row(s) are duplicated (or \
                     inserted, or reordered) before it",
                    row - actual
                )),
                RowError::Auth(Diagnosis::Unknown) if *row == 0 => Some(
                    "a wrong key and a wrong --customer-id look the same on row 0; check both"
                        .into(),
                ),
                RowError::Auth(Diagnosis::Unknown) => Some(
                    "earlier rows verified, so the key and customer id are right: this line was \
                     altered, or lines were reordered, inserted or removed; download the export \
                     again"
                        .into(),
                ),
                RowError::Malformed(_) => Some(
                    "each line must be {\"encrypted_data\":\"<key_id>:<iv_b64>:<blob_b64>\"}; \
                     check that this is an unmodified CipherStream export"
                        .into(),
                ),
                RowError::Plaintext(_) => Some(
                    "the row is authentic, so the sender encrypted something that is not JSON; \
                     report it to the vendor"
                        .into(),
                ),
                RowError::TooLong { .. } => {
                    Some("raise --max-line-bytes if the export really has rows this large".into())
                }
            },
            Error::RowCount {
                expected, found, ..
            } if found < expected => Some(format!(
                "{} row(s) are missing from the end: the download was probably cut short; \
                 download it again",
                expected - found
            )),
            Error::RowCount { .. } => Some(
                "the export holds more rows than expected: check the row count's source".into(),
            ),
            Error::NonceReuse { .. } => Some(
                "a repeated AES-GCM nonce is a failure on the sender's side that breaks the \
                 encryption of those rows: do not trust this export, and report it to the vendor"
                    .into(),
            ),
            Error::Failed { hint, .. } => hint.clone(),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) | Error::Key(msg) => f.write_str(msg),
            Error::Io { what, source } => write!(f, "{what}: {}", io_message(source)),
            Error::Container { input, detail } => write!(f, "{input}: {detail}"),
            Error::AmbiguousArchive { input, members } => write!(
                f,
                "{input}: the ZIP holds several candidate members: {}",
                members.join(", ")
            ),
            Error::Row { input, row, kind } => {
                write!(f, "{input}: row {row}: ")?;
                match kind {
                    RowError::Malformed(detail) => write!(f, "malformed line: {detail}"),
                    RowError::Auth(_) => f.write_str("authentication failed"),
                    RowError::Plaintext(detail) => {
                        write!(f, "decrypted plaintext is not valid UTF-8 JSON: {detail}")
                    }
                    RowError::TooLong { limit } => {
                        write!(f, "line is longer than the limit of {limit} bytes")
                    }
                }
            }
            Error::RowCount {
                input,
                expected,
                found,
            } => {
                write!(f, "{input}: expected {expected} rows, found {found}")
            }
            Error::RowsSkipped { input, skipped, .. } => {
                write!(
                    f,
                    "{input}: {skipped} row(s) were skipped; the output is incomplete"
                )
            }
            Error::NonceReuse { input, pairs } => {
                let shown: Vec<String> = pairs
                    .iter()
                    .take(10)
                    .map(|(first, later)| format!("row {later} repeats the nonce of row {first}"))
                    .collect();
                let more = if pairs.len() > 10 { ", ..." } else { "" };
                write!(
                    f,
                    "{input}: {} row(s) reuse a nonce: {}{more}",
                    pairs.len(),
                    shown.join(", ")
                )
            }
            Error::Failed { message, .. } => f.write_str(message),
            Error::Inputs { failed, total, .. } => write!(f, "{failed} of {total} inputs failed"),
            Error::Interrupted(exit) => write!(
                f,
                "interrupted by {}; no output file was left behind",
                match exit {
                    Exit::Terminated => "SIGTERM",
                    Exit::HungUp => "SIGHUP",
                    Exit::Quit => "SIGQUIT",
                    _ => "SIGINT",
                }
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The OS error text without Rust's " (os error N)" suffix.
fn io_message(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Result with this crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_and_parse_errors_have_distinct_exit_codes() {
        let auth = Error::Row {
            input: "e.zip".into(),
            row: 7,
            kind: RowError::Auth(Diagnosis::Unknown),
        };
        let parse = Error::Row {
            input: "e.zip".into(),
            row: 7,
            kind: RowError::Malformed("x".into()),
        };
        assert_eq!(auth.exit().code(), 3);
        assert_eq!(parse.exit().code(), 1);
        assert_eq!(auth.to_string(), "e.zip: row 7: authentication failed");
        assert_eq!(parse.to_string(), "e.zip: row 7: malformed line: x");
    }

    #[test]
    fn displaced_row_hint_counts_missing_rows() {
        let e = Error::Row {
            input: "e".into(),
            row: 2,
            kind: RowError::Auth(Diagnosis::Displaced { actual: 5 }),
        };
        assert_eq!(
            e.hint().unwrap(),
            "the line authenticates as row 5: 3 row(s) are missing before it"
        );
    }

    #[test]
    fn io_message_drops_os_error_suffix() {
        let e = Error::io("reading x", io::Error::from_raw_os_error(2));
        assert_eq!(e.to_string(), "reading x: No such file or directory");
    }
}
