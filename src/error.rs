//! Typed errors that a user can act on, and the exit status each one maps to.
//!
//! Failure classes stay distinct (SPEC section 3): a container problem, a malformed line, a row that
//! fails authentication, a plaintext that is not JSON and a bad key are different variants with
//! different exit codes, so a parsing error can never masquerade as an authentication failure. Every
//! error renders as two parts: what failed and where (`export.zip: row 7: authentication failed`),
//! then a hint saying what to check next. No variant ever holds key material.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::text;

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
    /// A download URL has expired or is refused (`403`, `404`): retrying it will not help.
    Refused = 5,
    /// A download's server presented a certificate that is not trusted: no retry can help, the
    /// trust (or the URL) must change.
    Untrusted = 6,
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

    /// The more severe of two statuses, for a run over several inputs (issue 12, item 7): the
    /// run's status must not depend on the order of its inputs, and an authentication failure
    /// (possible tampering) must never hide behind another input's lesser failure. From most to
    /// least severe: 3 (authentication), 2 (usage), 1 (any other failure), 4 (a duplicate
    /// delivery), 0.
    pub fn most_severe(self, other: Exit) -> Exit {
        let rank = |e: Exit| match e {
            Exit::Success => 0,
            Exit::Duplicate => 1,
            Exit::Failure => 2,
            Exit::Refused => 3,
            Exit::Untrusted => 4,
            Exit::Usage => 5,
            Exit::Auth => 6,
            // A signal ends the process before any summary; rank it above all the same.
            Exit::HungUp | Exit::Interrupted | Exit::Quit | Exit::Terminated => 7,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
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
    /// No key could be had for the row's key id: a key command failed (exit 1). The run stops
    /// here even with `--skip-bad-rows`: the row is not bad, the configuration is.
    Key(Box<CommandFailure>),
}

impl RowError {
    /// Whether the run must stop at this error even when bad rows are skipped.
    pub fn stops_salvage(&self) -> bool {
        matches!(self, RowError::Key(_))
    }
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
    /// The line authenticates as row `with`, and the line at `with`'s place as this row.
    Swapped {
        /// The other row of the pair.
        with: u64,
    },
    /// No key given opens the row, and no earlier row has its key id: the export switched to a key
    /// that was not given (a rotation during the job), or the line was altered. Set by the engine,
    /// which knows the key ids of the rows before it.
    NewKeyId {
        /// The row's key id (untrusted: it is not authenticated).
        key_id: String,
    },
    /// Row 0 fails at every index tried and the customer id holds characters a user cannot see
    /// (a trailing `\r`, newline or space from an env file): the customer id is most likely
    /// wrong. Set by the commands, which know the customer id, in place of `WrongKeyOrCustomer`.
    InvisibleInCustomerId {
        /// The customer id, raw (it is not secret; messages show it escaped).
        customer_id: String,
    },
}

/// What is wrong with a webhook body whose signature verified (exit 1).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyProblem {
    /// The body is not JSON (the parser's message).
    NotJson(String),
    /// The body nests deeper than the JSON parser's limit of 128 levels.
    TooDeep,
    /// The body is JSON but not an object.
    NotObject,
    /// No `timestamp` field.
    NoTimestamp,
    /// `timestamp` is not a string (its JSON, shortened and quoted).
    TimestampNotString(String),
    /// `timestamp` is not an RFC 3339 date-time.
    BadTimestamp {
        /// The timestamp, shortened and quoted.
        shown: String,
        /// What is wrong with it.
        why: String,
    },
    /// No `delivery_id` field.
    NoDeliveryId,
    /// `delivery_id` is empty, too long or holds control characters (shortened and quoted).
    BadDeliveryId(String),
    /// `delivery_id` is not a string (its JSON, shortened and quoted).
    DeliveryIdNotString(String),
    /// No whole number at `data.rows_processed`.
    NoRowsProcessed,
    /// A body read for its row count is not JSON (the parser's message).
    Unparsable(String),
}

/// What is wrong with a line of `encrypt`'s plaintext input (exit 1).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlainLineProblem {
    /// The line is longer than the limit.
    TooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// The line is not one JSON document.
    NotJson {
        /// What the JSON check found.
        detail: String,
        /// The input starts like a ZIP or gzip file.
        compressed: bool,
    },
}

/// A command that was to print a key or a webhook secret (`--key-cmd`, `--secret-cmd`) gave
/// nothing usable (exit 1). Cloned into every row that needed its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandFailure {
    /// The command as messages name it: where it was given and its program, never its arguments
    /// (`--key-cmd "pass"`).
    pub command: String,
    /// What it was to print: "key" or "webhook secret".
    pub what: &'static str,
    /// The key id it was run for (`CIPHERSTREAM_KEY_ID`), if any.
    pub key_id: Option<String>,
    /// What went wrong.
    pub problem: CommandProblem,
}

/// What went wrong with a key or secret command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandProblem {
    /// It could not be started (the operating system's message).
    Start(String),
    /// It exited with a status other than 0.
    Status(i32),
    /// A signal ended it.
    Signal {
        /// The signal's number.
        number: i32,
        /// Its name (`SIGKILL`), when known.
        name: Option<&'static str>,
    },
    /// A signal stopped it (SIGTTIN: it tried to read from the terminal); it was killed.
    Stopped {
        /// The signal's number.
        number: i32,
        /// Its name (`SIGTTIN`), when known.
        name: Option<&'static str>,
    },
    /// It did not finish in time; it was killed, with every process it started.
    TimedOut {
        /// The limit, in seconds.
        secs: u64,
    },
    /// It printed more than `limit` bytes on standard output; it was killed.
    TooMuchOutput {
        /// The limit in bytes.
        limit: u64,
    },
    /// What it printed is not a key or secret: the check's message, which never shows the text.
    Unusable(String),
    /// It was not run: the export names more key ids than a key command is run for.
    TooManyKeyIds {
        /// The most key ids a command is run for.
        limit: usize,
    },
}

/// What is wrong with a `--keyring` directory (exit 1).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyringProblem {
    /// The directory is open to group or others.
    SharedDirectory {
        /// Its permission bits.
        mode: u32,
    },
    /// A key file in it is open to group or others.
    SharedFile {
        /// The file.
        file: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// An entry in it is not a regular file.
    NotAFile {
        /// The entry.
        entry: PathBuf,
    },
    /// It holds more key files than are read.
    TooMany {
        /// The most key files read.
        limit: usize,
    },
}

/// Every error the tool reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The command line is wrong (exit 2).
    Usage(String),
    /// The key could not be loaded or is not a 32-byte base64 key.
    Key(String),
    /// A key or webhook secret command gave nothing usable (exit 1).
    Command(Box<CommandFailure>),
    /// A `--keyring` directory cannot be used (exit 1).
    Keyring {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        problem: KeyringProblem,
    },
    /// An I/O operation failed; `what` names the file and operation.
    Io {
        /// What was being done, naming the path.
        what: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// Writing decrypted rows failed (a full disk, a size limit, a closed pipe).
    Write {
        /// The input being decrypted.
        input: String,
        /// Where the rows were going (`standard output`, a path).
        output: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// A ZIP arriving as a stream could not be spooled to a temporary file (a full `$TMPDIR`).
    Spool {
        /// The input as the user named it.
        input: String,
        /// The directory of the temporary file (`$TMPDIR`, else the system's default).
        dir: PathBuf,
        /// Bytes spooled before the failure; `None` when the file could not be created.
        written: Option<u64>,
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
    /// A key or secret file is a directory or too large to hold a key (exit 1).
    SecretFile {
        /// "key file" or "webhook secret file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its size, when it is too large; `None` for a directory.
        size: Option<u64>,
    },
    /// A key or webhook secret file that does not exist, whose name looks like the key or secret
    /// itself: the text was given where the path of its file belongs. The name is never shown,
    /// only where it came from and where the text belongs (exit 2).
    SecretGivenAsPath {
        /// What was expected: "key file" or "webhook secret file".
        what: &'static str,
        /// Where the value came from: `--key-file`, `CIPHERSTREAM_KEY_FILE` or `--secret-file`.
        given: &'static str,
        /// Where the text itself belongs: `CIPHERSTREAM_KEY` or `CIPHERSTREAM_WEBHOOK_SECRET`.
        meant: &'static str,
    },
    /// An input read whole into memory (a webhook body) is larger than its limit; nothing past
    /// the limit was read, and the body was not verified (exit 1).
    TooLarge {
        /// The input as the user named it.
        input: String,
        /// What the input was read as ("webhook body").
        what: &'static str,
        /// The limit in bytes.
        limit: u64,
        /// What to do if the input really is that large (raise the limit with a flag, ...).
        remedy: &'static str,
    },
    /// A webhook secret is not UTF-8 text, or is empty (exit 1).
    BadSecret {
        /// Where the secret came from (a file name or an environment variable).
        source: String,
        /// True when it is empty; false when it is not UTF-8.
        empty: bool,
    },
    /// The operating system's random generator failed while `encrypt` drew nonces (exit 1).
    Random(String),
    /// A line of `encrypt`'s plaintext input is unusable (exit 1).
    PlainLine {
        /// The input as the user named it.
        input: String,
        /// Zero-based row index.
        row: u64,
        /// What is wrong.
        problem: PlainLineProblem,
    },
    /// `encrypt`'s input holds more rows than one key may seal with random nonces (exit 1).
    TooManyRows {
        /// The input as the user named it.
        input: String,
        /// The most rows allowed.
        limit: u64,
    },
    /// A ZIP member is compressed with a method the tool does not read (exit 1).
    UnsupportedCompression {
        /// The input as the user named it.
        input: String,
        /// The method's name.
        method: String,
        /// The method's number.
        code: u16,
    },
    /// The ZIP member is encrypted with a password (ZipCrypto or AES): the vendor's exports never
    /// are, so someone re-packed it (exit 1).
    PasswordProtected {
        /// The input as the user named it.
        input: String,
    },
    /// `--member` names no member of the ZIP (exit 1).
    MemberNotFound {
        /// The input as the user named it.
        input: String,
        /// The name asked for.
        wanted: String,
        /// The archive's members.
        members: Vec<String>,
    },
    /// A ZIP holds several members and none is named `*.ndjson` (exit 1).
    NoNdjsonMember {
        /// The input as the user named it.
        input: String,
        /// The archive's members.
        members: Vec<String>,
    },
    /// A ZIP holds several entries with the same name (exit 1): tools disagree on which one is
    /// meant, so none is read.
    DuplicateMembers {
        /// The input as the user named it.
        input: String,
        /// Each name held by several entries, with how many, in central-directory order.
        names: Vec<(String, usize)>,
    },
    /// Bytes follow the last gzip member that are neither another member nor zero padding
    /// (exit 1).
    TrailingData {
        /// The input as the user named it.
        input: String,
        /// How many bytes follow the last member.
        bytes: u64,
    },
    /// `--signature` is not `sha256=` and 64 hex digits (exit 3: it comes from the request).
    MalformedSignature(String),
    /// The signature matches the body under none of the secrets (exit 3).
    SignatureMismatch {
        /// The body as the user named it.
        input: String,
        /// Where each secret tried came from.
        tried: Vec<String>,
        /// The signature matches the body without its final newline.
        newline_added: bool,
    },
    /// The webhook's timestamp is outside the tolerance (exit 3).
    StaleTimestamp {
        /// The body as the user named it.
        input: String,
        /// The timestamp, shortened and quoted.
        shown: String,
        /// Now minus the timestamp, in seconds (negative: in the future).
        age: i128,
        /// The tolerance in seconds.
        tolerance: u64,
    },
    /// A verified webhook body is unusable (exit 1).
    WebhookBody {
        /// The body as the user named it.
        input: String,
        /// What is wrong with it.
        problem: BodyProblem,
    },
    /// `--seen-file` already holds this delivery id (exit 4).
    DuplicateDelivery {
        /// The delivery id, shortened and quoted.
        shown: String,
        /// The seen-file.
        seen_file: PathBuf,
    },
    /// `webhook serve --tls-cert`/`--tls-key` cannot be used (exit 1); a key's content is never
    /// quoted.
    TlsFile {
        /// The certificate or key file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// `webhook serve --exec`: the command run after a job failed (exit 1; the job is retried).
    ExecFailed {
        /// The command as messages name it (`--exec "notify"`: its program, not its arguments).
        command: String,
        /// What went wrong.
        why: String,
    },
    /// `webhook serve`: the state directory is open to group or others, or the output directory
    /// is writable by them (exit 1).
    OpenDirectory {
        /// "state directory" or "--output-dir".
        what: &'static str,
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The `chmod` mode that fixes it (`700`, `go-w`).
        fix: &'static str,
    },
    /// `webhook replay`: the verified delivery will not be acted on (exit 1).
    DeliveryRefused {
        /// Why, in the receiver's words.
        why: String,
        /// Where it was recorded, in the state directory.
        recorded: PathBuf,
    },
    /// A download URL is not usable as given (exit 2; the URL is never quoted).
    BadUrl(crate::net::url::UrlProblem),
    /// The download URL has expired (exit 5): ask the vendor for the job again.
    UrlExpired {
        /// The URL as it may be shown (scheme, host, path).
        url: String,
        /// When it expired by its own terms, in Unix seconds, when known.
        at: Option<i64>,
    },
    /// The server refused the download (exit 5): `401`, `403`, `404`, `410`, or another status.
    UrlRefused {
        /// The URL as it may be shown.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The S3 error code, when the server sent one.
        code: Option<String>,
        /// The S3 error message, when the server sent one.
        message: Option<String>,
    },
    /// The server's TLS certificate is not trusted (exit 6): never retried.
    Untrusted {
        /// The URL as it may be shown.
        url: String,
        /// Why, in words (the names a certificate holds are the server's text).
        why: String,
    },
    /// A download did not complete within its retries (exit 1).
    DownloadFailed {
        /// The URL as it may be shown.
        url: String,
        /// What happened on the last try.
        why: String,
        /// Tries in a row without progress.
        tries: u32,
    },
    /// The server names the object by no strong ETag, so a request after the first cannot be
    /// checked to read the same object (exit 1): `decrypt URL` will not read it in parts.
    NoStrongEtag {
        /// The URL as it may be shown.
        url: String,
    },
    /// The object behind a URL changed while it was being read (exit 1): nothing spliced.
    ObjectChanged {
        /// The URL as it may be shown.
        url: String,
    },
    /// A remote read was stopped because the work it fed stopped (exit 1): what stopped the work
    /// is the error reported; this one is only what the reader's thread ends with.
    DownloadStopped {
        /// The URL as it may be shown.
        url: String,
    },
    /// A whole download is not the size announced (`--expect-size`) (exit 1).
    DownloadSize {
        /// The URL as it may be shown.
        url: String,
        /// The size announced.
        expected: u64,
        /// The size received.
        got: u64,
    },
    /// Several inputs failed (`--output-dir`, `verify`): each was already reported.
    Inputs {
        /// How many inputs failed.
        failed: usize,
        /// How many inputs there were.
        total: usize,
        /// The most severe of the failures' statuses ([`Exit::most_severe`]).
        exit: Exit,
    },
    /// A signal stopped the work; every temporary output file was removed.
    Interrupted {
        /// The status the signal stands for (129, 130, 131, 143).
        exit: Exit,
        /// Rows already written to standard output, when the output went there: that output is
        /// incomplete.
        stdout_rows: Option<u64>,
    },
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
            Error::Usage(_) | Error::SecretGivenAsPath { .. } => Exit::Usage,
            Error::Row {
                kind: RowError::Auth(_),
                ..
            }
            | Error::RowCount { .. }
            | Error::NonceReuse { .. }
            | Error::MalformedSignature(_)
            | Error::SignatureMismatch { .. }
            | Error::StaleTimestamp { .. } => Exit::Auth,
            Error::DuplicateDelivery { .. } => Exit::Duplicate,
            Error::UrlExpired { .. } | Error::UrlRefused { .. } => Exit::Refused,
            Error::Untrusted { .. } => Exit::Untrusted,
            Error::BadUrl(_) => Exit::Usage,
            Error::RowsSkipped { exit, .. }
            | Error::Inputs { exit, .. }
            | Error::Interrupted { exit, .. } => *exit,
            _ => Exit::Failure,
        }
    }

    /// True when this error is a closed standard output (`| head`): not an error at all.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io { source, .. } | Error::Write { source, .. }
            if source.kind() == io::ErrorKind::BrokenPipe)
    }

    /// What to check or run next, if there is something useful to say; escaped like the message.
    pub fn hint(&self) -> Option<String> {
        self.unescaped_hint()
            .map(|hint| text::escape(&hint).into_owned())
    }

    fn unescaped_hint(&self) -> Option<String> {
        match self {
            Error::Usage(_) => Some("run with --help for usage".into()),
            Error::Write { output, source, .. } if disk_full(source) => Some(format!(
                "the disk that holds {output} is full, or a file size limit was reached: free \
                 space (or raise the limit) and run again"
            )),
            Error::Io { source, .. } if disk_full(source) => Some(
                "the disk is full, or a file size limit was reached: free space (or raise the \
                 limit) and run again"
                    .into(),
            ),
            Error::Spool {
                written: Some(written),
                source,
                ..
            } if disk_full(source) => Some(format!(
                "a ZIP read from standard input is first copied to $TMPDIR (a ZIP's index is at \
                 its end), which needs free space there the size of the ZIP, more than \
                 {written} bytes here: set TMPDIR to a directory with room, or pass the ZIP by \
                 path, which needs no copy"
            )),
            Error::Spool { .. } => Some(
                "a ZIP read from standard input is first copied to $TMPDIR (a ZIP's index is at \
                 its end): set TMPDIR to a writable directory with room for the ZIP, or pass the \
                 ZIP by path, which needs no copy"
                    .into(),
            ),
            Error::Key(_) => Some(
                "the key is the base64 text of 32 random bytes, as the vendor issued it; \
                 give it with --key-file PATH, CIPHERSTREAM_KEY_FILE or CIPHERSTREAM_KEY"
                    .into(),
            ),
            Error::Command(failure) => Some(failure.hint()),
            Error::Keyring { dir, problem } => Some(match problem {
                KeyringProblem::SharedDirectory { .. } => {
                    format!("run: chmod 700 {}", dir.display())
                }
                KeyringProblem::SharedFile { file, .. } => format!(
                    "run: chmod 600 {} (or chmod 600 {}/* for every key file)",
                    file.display(),
                    dir.display()
                ),
                KeyringProblem::NotAFile { .. } | KeyringProblem::TooMany { .. } => {
                    "a keyring holds one key file per key id, named by the key id, and nothing \
                     else (names starting with a dot are skipped)"
                        .into()
                }
            }),
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
                RowError::Auth(Diagnosis::Swapped { with }) => Some(format!(
                    "rows {row} and {with} are swapped: each line authenticates at the other's \
                     place, so the export was reordered after it was sealed; download it again"
                )),
                RowError::Auth(Diagnosis::Displaced { actual }) if actual > row => Some(format!(
                    "the line authenticates as row {actual}: {} row(s) are missing before it",
                    actual - row
                )),
                RowError::Auth(Diagnosis::Displaced { actual }) => Some(format!(
                    "the line authenticates as row {actual}: {} row(s) are duplicated (or \
                     inserted, or reordered) before it",
                    row - actual
                )),
                RowError::Auth(Diagnosis::InvisibleInCustomerId { customer_id }) => Some(format!(
                    "the customer id {} {}, and every character of it is bound into each row's \
                     AAD: remove it (a Windows line ending or a stray space in an env file is \
                     the usual cause); if it belongs there, the key is wrong",
                    text::quote(customer_id),
                    text::invisible(customer_id)
                        .unwrap_or_else(|| "holds an invisible character".into())
                )),
                RowError::Auth(Diagnosis::NewKeyId { key_id }) => Some(format!(
                    "no key given opens it, and it is the first row with key id {}: the export \
                     switched keys here (a rotation during the job), so give that key too \
                     (--key-file, --key-cmd or --keyring); if there is no such key, this line \
                     was altered",
                    text::quote(key_id)
                )),
                RowError::Key(failure) => Some(failure.hint()),
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
            Error::SecretFile { what, .. } if what.starts_with("key") => {
                Error::Key(String::new()).hint()
            }
            Error::SecretFile { .. } => {
                Some("--secret-file names a small text file holding the secret".into())
            }
            Error::SecretGivenAsPath { what, given, meant } => {
                let noun = what.trim_end_matches(" file");
                let seen = if given.starts_with("--") {
                    " (a command-line value can be seen by other users of this machine while the \
                     command runs)"
                } else {
                    ""
                };
                Some(format!(
                    "{given} is the path of a file holding the {noun}; to give the {noun} itself, \
                     set {meant} instead{seen}"
                ))
            }
            Error::TooLarge { what, remedy, .. } => Some(format!(
                "a CipherStream {what} is a few KiB, so this is probably not one; if it is, \
                 {remedy}"
            )),
            Error::BadSecret { empty: false, .. } => Some(
                "save the webhook secret as plain UTF-8 text (not UTF-16), exactly as the vendor \
                 issued it"
                    .into(),
            ),
            Error::BadSecret { empty: true, .. } => {
                Some("an empty secret would let anyone sign webhooks; check the file".into())
            }
            Error::Random(_) => Some(
                "encrypt needs the operating system's random generator for every row's nonce; \
                 nothing was written"
                    .into(),
            ),
            Error::PlainLine {
                problem: PlainLineProblem::TooLong { .. },
                ..
            } => Some(
                "encrypt reads NDJSON: one JSON document per line; is this file NDJSON?".into(),
            ),
            Error::PlainLine {
                problem:
                    PlainLineProblem::NotJson {
                        compressed: true, ..
                    },
                ..
            } => Some(
                "this looks like a ZIP or gzip file; encrypt reads plain NDJSON (decompress it \
                 first)"
                    .into(),
            ),
            Error::PlainLine { .. } => Some(
                "encrypt reads NDJSON: each non-blank line must be exactly one JSON document"
                    .into(),
            ),
            Error::TooManyRows { .. } => Some(
                "with random nonces one key may seal at most 2^32 rows (NIST SP 800-38D); split \
                 the input and use a new key for each part"
                    .into(),
            ),
            Error::UnsupportedCompression { .. } => Some(
                "use the export as downloaded, or re-pack it with deflate (zip -Z deflate)".into(),
            ),
            Error::MemberNotFound { .. } => {
                Some("give --member one of the names listed, exactly".into())
            }
            Error::PasswordProtected { .. } => Some(
                "the vendor's exports are not password-protected, so this ZIP was re-packed: use \
                 the export as downloaded, or unpack it with its password (unzip -P) and decrypt \
                 the .ndjson inside"
                    .into(),
            ),
            Error::NoNdjsonMember { .. } => Some("choose one with --member NAME".into()),
            Error::DuplicateMembers { .. } => Some(
                "an export holds each name once, so this archive was changed after it was made \
                 (--member cannot tell entries of one name apart); download the export again"
                    .into(),
            ),
            Error::TrailingData { .. } => Some(
                "the gzip data before them is complete and its checksums match, but something was \
                 appended to the file; download the export again, or check what wrote or copied \
                 it"
                .into(),
            ),
            Error::MalformedSignature(_) => {
                Some("pass the X-CipherStream-Signature header's value exactly as received".into())
            }
            Error::SignatureMismatch {
                newline_added: true,
                ..
            } => Some(
                "the signature matches the body WITHOUT its final newline: the newline was added \
                 after the body was received (echo, an editor); pass the raw body byte for byte"
                    .into(),
            ),
            Error::SignatureMismatch { .. } => Some(
                "check that BODY is the exact raw request body (not re-serialized, re-encoded or \
                 with an added newline) and that the secret is current; during a secret rotation \
                 give both secrets with --secret-file"
                    .into(),
            ),
            Error::StaleTimestamp { age, .. } if *age > 0 => Some(
                "a delayed or replayed delivery; to process a saved payload use \
                 --no-timestamp-check, and check this machine's clock"
                    .into(),
            ),
            Error::StaleTimestamp { .. } => Some(
                "check this machine's clock (and the sender's); a large --tolerance weakens \
                 replay protection"
                    .into(),
            ),
            Error::WebhookBody { problem, .. } => problem.hint().map(str::to_owned),
            Error::UrlExpired { .. } => Some(
                "a presigned URL lives 12 hours (the webhook's expires_at says until when): ask \
                 the vendor for the job again to get a new URL; the bytes already downloaded are \
                 kept and resume if the object is the same"
                    .into(),
            ),
            Error::UrlRefused { status: 404, .. } => Some(
                "the object is not there (any more): check the URL, or ask the vendor for the job \
                 again"
                    .into(),
            ),
            Error::UrlRefused { .. } => Some(
                "retrying this URL will not help: check that it was copied whole, or ask the \
                 vendor for the job again"
                    .into(),
            ),
            Error::Untrusted { .. } => Some(
                "if a TLS-inspecting proxy sits between you and the server, give its CA \
                 certificate with --ca-file"
                    .into(),
            ),
            Error::DownloadFailed { .. } => Some(
                "the network kept failing; run the same command again later: it resumes where it \
                 stopped"
                    .into(),
            ),
            Error::NoStrongEtag { .. } => Some(
                "download it whole with `cipherstream fetch URL -o FILE` (without an ETag it starts \
                 over rather than resume), then decrypt FILE"
                    .into(),
            ),
            Error::ObjectChanged { .. } => Some(
                "the export was replaced on the server while it was being read; run the command \
                 again to read the new one (nothing was written at -o)"
                    .into(),
            ),
            Error::DownloadSize { .. } => Some(
                "the object is not the one announced (compare the webhook's file_size_bytes); \
                 nothing was kept"
                    .into(),
            ),
            Error::DuplicateDelivery { .. } => Some(
                "the vendor retries deliveries, so this one was already verified and handed on; \
                 nothing was printed"
                    .into(),
            ),
            Error::OpenDirectory { what, dir, fix, .. } => Some(format!(
                "the {what} holds {}; run: chmod {fix} {}",
                if *what == "state directory" {
                    "the presigned download URLs, which are credentials"
                } else {
                    "plaintext, and whoever may write to it could plant a link where an output \
                     goes"
                },
                dir.display()
            )),
            Error::TlsFile { .. } => Some(
                "--tls-cert takes the PEM certificate chain (the server's first) and --tls-key \
                 its PEM private key (PKCS#8, PKCS#1 or SEC1)"
                    .into(),
            ),
            Error::DeliveryRefused { .. } => Some(
                "fix the receiver's configuration (e.g. add the --customer-id) and replay the \
                 delivery again"
                    .into(),
            ),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    /// The message, escaped as a whole (see [`crate::text`]): the variants hold untrusted text
    /// raw (member names, paths, other libraries' messages), and no field or variant can reach a
    /// terminal without passing here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&text::escape(&Unescaped(self).to_string()))
    }
}

/// An error's message as worded, before [`text::escape`]; shown only through `Display for Error`.
struct Unescaped<'a>(&'a Error);

impl fmt::Display for Unescaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Error::Usage(msg) | Error::Key(msg) => f.write_str(msg),
            Error::Command(failure) => write!(f, "{}", failure.unescaped()),
            Error::Keyring { dir, problem } => match problem {
                KeyringProblem::SharedDirectory { mode } => write!(
                    f,
                    "keyring {} is open to group or others (mode {:04o}); it must be private",
                    dir.display(),
                    mode & 0o7777
                ),
                KeyringProblem::SharedFile { file, mode } => write!(
                    f,
                    "keyring file {} is open to group or others (mode {:04o}); key files must be \
                     private",
                    file.display(),
                    mode & 0o7777
                ),
                KeyringProblem::NotAFile { entry } => write!(
                    f,
                    "keyring {} holds {}, which is not a regular file",
                    dir.display(),
                    entry.display()
                ),
                KeyringProblem::TooMany { limit } => {
                    write!(f, "keyring {} holds more than {limit} files", dir.display())
                }
            },
            Error::Io { what, source } => write!(f, "{what}: {}", io_message(source)),
            Error::Write {
                input,
                output,
                source,
            } => write!(f, "{input}: cannot write {output}: {}", io_message(source)),
            Error::Spool {
                input,
                dir,
                written: None,
                source,
            } => write!(
                f,
                "{input}: cannot create a temporary file in {} ($TMPDIR) to spool the ZIP: {}",
                dir.display(),
                io_message(source)
            ),
            Error::Spool {
                input,
                dir,
                written: Some(written),
                source,
            } => write!(
                f,
                "{input}: spooling the ZIP to a temporary file in {} ($TMPDIR) failed after \
                 {written} bytes: {}",
                dir.display(),
                io_message(source)
            ),
            Error::Container { input, detail } => write!(f, "{input}: {detail}"),
            Error::AmbiguousArchive { input, members } => write!(
                f,
                "{input}: the ZIP holds several candidate members: {}",
                text::list(members)
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
                    RowError::Key(failure) => write!(f, "{}", failure.unescaped()),
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
            Error::SecretFile {
                what,
                path,
                size: None,
            } => write!(f, "{what} {} is a directory", path.display()),
            Error::SecretFile {
                what,
                path,
                size: Some(size),
            } => write!(
                f,
                "{what} {} is {size} bytes: too large to hold a secret",
                path.display()
            ),
            Error::SecretGivenAsPath { what, given, .. } => write!(
                f,
                "{given} names no {what}, and its value looks like the {} itself, not a path (so \
                 it is not shown)",
                what.trim_end_matches(" file")
            ),
            Error::TooLarge {
                input, what, limit, ..
            } => write!(
                f,
                "{input}: larger than the limit of {limit} bytes for a {what}; nothing was checked"
            ),
            Error::BadSecret {
                source,
                empty: false,
            } => write!(f, "{source} is not UTF-8 text"),
            Error::BadSecret {
                source,
                empty: true,
            } => write!(f, "{source} is empty: expected a webhook secret"),
            Error::Random(why) => {
                write!(f, "the operating system's random generator failed: {why}")
            }
            Error::PlainLine {
                input,
                row,
                problem,
            } => match problem {
                PlainLineProblem::TooLong { limit } => write!(
                    f,
                    "{input}: row {row}: line is longer than the limit of {limit} bytes"
                ),
                PlainLineProblem::NotJson { detail, .. } => {
                    write!(f, "{input}: row {row}: not a JSON document: {detail}")
                }
            },
            Error::TooManyRows { input, limit } => write!(f, "{input}: more than {limit} rows"),
            Error::UnsupportedCompression {
                input,
                method,
                code,
            } => write!(
                f,
                "{input}: the ZIP member is compressed with {method} (method {code}), which \
                 cipherstream does not read (the vendor's exports are deflated or stored)"
            ),
            Error::PasswordProtected { input } => write!(
                f,
                "{input}: the ZIP member is encrypted with a password, which cipherstream does \
                 not read"
            ),
            Error::MemberNotFound {
                input,
                wanted,
                members,
            } => write!(
                f,
                "{input}: the ZIP has no member named {}; its members are: {}",
                text::shorten(wanted),
                text::list(members)
            ),
            Error::NoNdjsonMember { input, members } => write!(
                f,
                "{input}: the ZIP holds several members and none ends in .ndjson: {}",
                text::list(members)
            ),
            Error::DuplicateMembers { input, names } => {
                let listed: Vec<String> = names
                    .iter()
                    .map(|(name, count)| format!("{name} ({count} entries)"))
                    .collect();
                write!(
                    f,
                    "{input}: ambiguous ZIP: several of its entries have the same name: {}",
                    listed.join(", ")
                )
            }
            Error::TrailingData { input, bytes } => write!(
                f,
                "{input}: {bytes} byte(s) of trailing data after the last gzip member (neither \
                 another member nor zero padding)"
            ),
            Error::MalformedSignature(why) => write!(
                f,
                "--signature is malformed: {why}; expected sha256= followed by 64 hex digits"
            ),
            Error::SignatureMismatch { input, tried, .. } => {
                let tried = match tried.len() {
                    1 => format!("tried 1 secret: {}", tried[0]),
                    n => format!("tried {n} secrets: {}", tried.join(", ")),
                };
                write!(
                    f,
                    "{input}: webhook signature does not match the body ({tried})"
                )
            }
            Error::StaleTimestamp {
                input,
                shown,
                age,
                tolerance,
            } if *age > 0 => write!(
                f,
                "{input}: webhook timestamp {shown} is too old: {age} seconds before now \
                 (tolerance {tolerance} seconds)"
            ),
            Error::StaleTimestamp {
                input,
                shown,
                age,
                tolerance,
            } => write!(
                f,
                "{input}: webhook timestamp {shown} is in the future by {} seconds (tolerance \
                 {tolerance} seconds)",
                -age
            ),
            Error::WebhookBody { input, problem } => write!(f, "{input}: {problem}"),
            Error::BadUrl(problem) => write!(f, "the download URL cannot be used: {problem}"),
            Error::UrlExpired { url, at: Some(at) } => write!(
                f,
                "{url}: the download URL expired at {}",
                crate::time::format_rfc3339(*at)
            ),
            Error::UrlExpired { url, at: None } => {
                write!(f, "{url}: the download URL has expired")
            }
            Error::UrlRefused {
                url,
                status,
                code,
                message,
            } => {
                write!(f, "{url}: the server refused the download (HTTP {status}")?;
                if let Some(code) = code {
                    write!(f, ", {code}")?;
                }
                if let Some(message) = message {
                    write!(f, ": {message}")?;
                }
                f.write_str(")")
            }
            Error::Untrusted { url, why } => {
                write!(f, "{url}: the server's certificate is not trusted: {why}")
            }
            Error::DownloadFailed { url, why, tries } => write!(
                f,
                "{url}: the download failed after {tries} tries in a row without progress: {why}"
            ),
            Error::ObjectChanged { url } => write!(
                f,
                "{url}: the object changed while it was being read (its ETag or size moved)"
            ),
            Error::NoStrongEtag { url } => write!(
                f,
                "{url}: the server gives the object no strong ETag, so a second request cannot be \
                 checked to read the same object"
            ),
            Error::DownloadStopped { url } => {
                write!(f, "{url}: the download was stopped before it completed")
            }
            Error::DownloadSize { url, expected, got } => write!(
                f,
                "{url}: the object is {got} bytes, but {expected} were expected"
            ),
            Error::DuplicateDelivery { shown, seen_file } => write!(
                f,
                "duplicate delivery: delivery_id {shown} is already recorded in {}",
                seen_file.display()
            ),
            Error::ExecFailed { command, why } => write!(f, "{command} {why}"),
            Error::OpenDirectory {
                what, dir, mode, ..
            } => write!(
                f,
                "the {what} {} is open to other users (mode {:04o})",
                dir.display(),
                mode & 0o7777
            ),
            Error::TlsFile { path, why } => {
                write!(f, "cannot serve TLS with {}: {why}", path.display())
            }
            Error::DeliveryRefused { why, recorded } => write!(
                f,
                "the delivery is refused: {why} (recorded in {})",
                recorded.display()
            ),
            Error::Inputs { failed, total, .. } => write!(f, "{failed} of {total} inputs failed"),
            Error::Interrupted { exit, stdout_rows } => {
                let signal = match exit {
                    Exit::Terminated => "SIGTERM",
                    Exit::HungUp => "SIGHUP",
                    Exit::Quit => "SIGQUIT",
                    _ => "SIGINT",
                };
                match stdout_rows {
                    None => write!(f, "interrupted by {signal}; no output file was left behind"),
                    Some(rows) => write!(
                        f,
                        "interrupted by {signal}; the output on standard output is incomplete: \
                         it stops after {rows} complete row(s)"
                    ),
                }
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Write { source, .. } => Some(source),
            Error::Spool { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl CommandFailure {
    /// The command, and the key id it was run for: `--key-cmd "pass" for key id "k1"`.
    fn name(&self) -> String {
        match &self.key_id {
            Some(key_id) => format!("{} for key id {}", self.command, text::quote(key_id)),
            None => self.command.clone(),
        }
    }

    /// The message as worded, before [`text::escape`].
    fn unescaped(&self) -> String {
        let name = self.name();
        match &self.problem {
            CommandProblem::Start(why) => format!("{name} could not be started: {why}"),
            CommandProblem::Status(code) => format!("{name} failed (exit status {code})"),
            CommandProblem::Signal { number, name: sig } => format!(
                "{name} was killed by signal {number}{}",
                sig.map(|s| format!(" ({s})")).unwrap_or_default()
            ),
            CommandProblem::Stopped { number, name: sig } => format!(
                "{name} was stopped by signal {number}{} (a {} command cannot use the terminal), \
                 and killed",
                sig.map(|s| format!(" ({s})")).unwrap_or_default(),
                self.what
            ),
            CommandProblem::TimedOut { secs } => format!(
                "{name} did not finish within {secs} second{}; it was killed, with every process \
                 it started",
                if *secs == 1 { "" } else { "s" }
            ),
            CommandProblem::TooMuchOutput { limit } => format!(
                "{name} printed more than {limit} bytes on standard output, more than any {}; \
                 it was killed",
                self.what
            ),
            CommandProblem::Unusable(why) => why.clone(),
            CommandProblem::TooManyKeyIds { limit } => {
                format!("{name} was not run: the export names more than {limit} key ids")
            }
        }
    }

    /// What to check next.
    fn hint(&self) -> String {
        let flag = if self.what == "key" {
            "--key-cmd"
        } else {
            "--secret-cmd"
        };
        match &self.problem {
            CommandProblem::Start(_) => format!(
                "{flag} is split into words as a shell would split it, but no shell runs it \
                 ($VARIABLES, ~, pipes and redirections are not expanded): check the program's \
                 name and PATH, or put the commands in a script"
            ),
            CommandProblem::Status(_) | CommandProblem::Signal { .. } => match &self.key_id {
                Some(key_id) => format!(
                    "its own message, if it wrote one, is above; run it by hand to see what it \
                     does (cipherstream sets CIPHERSTREAM_KEY_ID={} and \
                     CIPHERSTREAM_CUSTOMER_ID for it)",
                    text::quote(key_id)
                ),
                None => "its own message, if it wrote one, is above; run it by hand to see what \
                         it does"
                    .into(),
            },
            CommandProblem::Stopped { .. } => format!(
                "it runs with standard input closed and in a process group of its own, so it \
                 cannot prompt for a passphrase: unlock its agent first (gpg-agent, 1Password, \
                 vault login), or give the {} another way",
                self.what
            ),
            CommandProblem::TimedOut { .. } => format!(
                "raise {flag}-timeout SECS if it really needs longer; a command that waits for a \
                 passphrase cannot get one here"
            ),
            CommandProblem::TooMuchOutput { .. } | CommandProblem::Unusable(_) => {
                if self.what == "key" {
                    "a key command prints the key's base64 text (32 bytes) and nothing else on \
                     standard output; its messages belong on standard error"
                        .into()
                } else {
                    "a secret command prints the webhook secret and nothing else on standard \
                     output; its messages belong on standard error"
                        .into()
                }
            }
            CommandProblem::TooManyKeyIds { .. } => {
                "key ids are not authenticated, and a genuine export names one or two: this one \
                 was probably altered"
                    .into()
            }
        }
    }
}

impl fmt::Display for CommandFailure {
    /// The message, escaped as a whole (see [`crate::text`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&text::escape(&self.unescaped()))
    }
}

impl BodyProblem {
    /// What to check next.
    pub fn hint(&self) -> Option<&'static str> {
        const NO_TIMESTAMP: &str = "replay protection needs the body's RFC 3339 timestamp; \
                                    --no-timestamp-check skips it, for replaying a saved payload \
                                    only";
        const DELIVERY_ID: &str =
            "--seen-file needs the delivery_id of a CipherStream webhook to recognize retries";
        Some(match self {
            BodyProblem::NotJson(_) => {
                "BODY must be the request body alone, not the whole HTTP request or a file that \
                 wraps it"
            }
            BodyProblem::NotObject | BodyProblem::TooDeep => {
                "a CipherStream webhook body is a JSON object with event, timestamp and data"
            }
            BodyProblem::NoTimestamp | BodyProblem::TimestampNotString(_) => NO_TIMESTAMP,
            BodyProblem::BadTimestamp { .. } => "expected a date-time such as 2024-09-26T10:02:15Z",
            BodyProblem::NoDeliveryId
            | BodyProblem::BadDeliveryId(_)
            | BodyProblem::DeliveryIdNotString(_) => DELIVERY_ID,
            BodyProblem::NoRowsProcessed => "pass the body of a job.completed webhook",
            BodyProblem::Unparsable(_) => return None,
        })
    }
}

impl fmt::Display for BodyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyProblem::NotJson(e) => {
                write!(f, "the signature verified, but the body is not JSON: {e}")
            }
            BodyProblem::NotObject => {
                f.write_str("the signature verified, but the body is not a JSON object")
            }
            BodyProblem::TooDeep => f.write_str(
                "the signature verified, but the body nests deeper than 128 levels, more than \
                 any webhook body",
            ),
            BodyProblem::NoTimestamp => f.write_str("the webhook body has no \"timestamp\" field"),
            BodyProblem::TimestampNotString(shown) => {
                write!(f, "the webhook body's timestamp is not a string: {shown}")
            }
            BodyProblem::BadTimestamp { shown, why } => write!(
                f,
                "the webhook body's timestamp {shown} is not an RFC 3339 date-time: {why}"
            ),
            BodyProblem::NoDeliveryId => {
                f.write_str("the webhook body has no \"delivery_id\" field")
            }
            BodyProblem::BadDeliveryId(shown) => write!(
                f,
                "the webhook body's delivery_id {shown} is empty, longer than 1024 bytes or \
                 holds control characters"
            ),
            BodyProblem::DeliveryIdNotString(shown) => {
                write!(f, "the webhook body's delivery_id is not a string: {shown}")
            }
            BodyProblem::NoRowsProcessed => f.write_str("no whole number at data.rows_processed"),
            BodyProblem::Unparsable(e) => write!(f, "not a JSON webhook body ({e})"),
        }
    }
}

/// A write failed for want of space: a full disk (ENOSPC) or a file size limit (EFBIG).
fn disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::FileTooLarge
    )
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

    /// Every message is escaped as a whole, whichever field the untrusted text is in: another
    /// library's message (the `zip` crate's), a path, a member name, a usage message.
    #[test]
    fn untrusted_text_in_any_field_is_escaped() {
        let shown = |e: Error| e.to_string();
        assert_eq!(
            shown(Error::container(
                "e\x1b[2J.zip",
                "not a readable ZIP archive (bad name x\nerror: forged)"
            )),
            "e\\u{1b}[2J.zip: not a readable ZIP archive (bad name x\\nerror: forged)"
        );
        assert_eq!(
            shown(Error::io(
                "cannot open key file k\r\u{202e}",
                io::Error::from_raw_os_error(2)
            )),
            "cannot open key file k\\r\\u{202e}: No such file or directory"
        );
        assert_eq!(
            shown(Error::Usage(
                "--output-dir d\u{9b}2J is not a directory".into()
            )),
            "--output-dir d\\u{9b}2J is not a directory"
        );
        assert_eq!(
            shown(Error::SecretFile {
                what: "key file",
                path: PathBuf::from("k\n"),
                size: None,
            }),
            "key file k\\n is a directory"
        );
        let warning = crate::warning::Warning::MissingSecretFile {
            path: Some(PathBuf::from("old\x1b[2J")),
            remaining: 1,
        };
        assert_eq!(
            warning.to_string(),
            "the webhook secret file old\\u{1b}[2J does not exist; trying the other one"
        );
        let e = Error::Row {
            input: "e".into(),
            row: 0,
            kind: RowError::Auth(Diagnosis::InvisibleInCustomerId {
                customer_id: "c\u{1b}[2J\r".into(),
            }),
        };
        let hint = e.hint().unwrap();
        assert!(
            hint.starts_with(
                "the customer id \"c\\u{1b}[2J\\r\" ends with a carriage return (U+000D), and"
            ),
            "{hint}"
        );
    }

    #[test]
    fn io_message_drops_os_error_suffix() {
        let e = Error::io("reading x", io::Error::from_raw_os_error(2));
        assert_eq!(e.to_string(), "reading x: No such file or directory");
    }
}
