//! The command-line surface: every subcommand, flag and help text.
//!
//! The names here are fixed by SPEC section 3 (scripts depend on them); the `///` comments are the
//! `--help` text, and `tests/cli.rs` snapshots that text so a change to what users see is reviewed.

use std::path::PathBuf;

use clap::builder::{PathBufValueParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::sink::Output;
use crate::source::Input;
use crate::webhook;

/// Inputs are parsed as paths (any bytes the OS allows): `-` becomes standard input, and an
/// `https://` URL a download (refused at once if it cannot be used, without quoting it).
fn input_parser() -> impl TypedValueParser<Value = Input> {
    InputParser
}

/// [`Input::parse`] as a clap parser whose error is our message alone: clap's own error for a
/// rejected value (`try_map`) quotes the value, and a URL's query holds credentials (SPEC
/// section 4).
#[derive(Clone, Copy, Debug)]
struct InputParser;

impl TypedValueParser for InputParser {
    type Value = Input;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Input, clap::Error> {
        Input::parse(value.to_owned()).map_err(|why| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{why}\n"))
                .with_cmd(cmd)
        })
    }
}

/// `--max-body-bytes`: at least one byte, at most 4 GiB (the body is held in memory).
fn body_limit() -> impl TypedValueParser<Value = u64> {
    clap::value_parser!(u64).range(1..=4 * 1024 * 1024 * 1024)
}

/// Inputs that are never downloads (`encrypt`'s plaintext, a webhook body): a path or `-`; an
/// argument that looks like a URL is a path like any other (and is not found), rather than a
/// download made without the download flags (`--ca-file`, `--retries`).
fn local_input_parser() -> impl TypedValueParser<Value = Input> {
    PathBufValueParser::new().map(Input::from)
}

/// Outputs likewise: `-` becomes standard output.
fn output_parser() -> impl TypedValueParser<Value = Output> {
    PathBufValueParser::new().map(Output::from)
}

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  any other error: I/O, malformed input, bad container, bad key format, a key command failed
  2  usage error (bad or missing arguments, no key, no customer id)
  3  authentication failed: a row, or a webhook signature or timestamp, did not verify;
     or the row count differs from --expect-rows
  4  webhook verify --seen-file: a verified delivery_id that was already recorded
  5  a download URL has expired or is refused (403, 404): retrying it will not help
  6  a download's server certificate is not trusted (a TLS-inspecting proxy needs --ca-file)
  129, 130, 131, 143  stopped by SIGHUP, SIGINT, SIGQUIT or SIGTERM (no output file is left behind)

Secrets are never taken as command-line values: the keys come from --key-file, --key-cmd and
--keyring, else CIPHERSTREAM_KEY_FILE, else CIPHERSTREAM_KEY_CMD, else CIPHERSTREAM_KEY (base64
text); the customer id from --customer-id, else CIPHERSTREAM_CUSTOMER_ID; the webhook secret from
--secret-file and --secret-cmd, else CIPHERSTREAM_WEBHOOK_SECRET.";

/// Decrypt, verify and make CipherStream encrypted NDJSON exports, and check CipherStream webhooks.
#[derive(Debug, Parser)]
#[command(name = "cipherstream", version, about, after_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decrypt exports to JSON lines on standard output, or atomically to a file.
    #[command(after_help = EXIT_CODES)]
    Decrypt(DecryptArgs),
    /// Authenticate every row of exports without writing any plaintext.
    #[command(after_help = EXIT_CODES)]
    Verify(VerifyArgs),
    /// Make an export in the vendor's format from plain NDJSON (for tests and staging).
    #[command(after_help = EXIT_CODES)]
    Encrypt(EncryptArgs),
    /// Download an export from its (presigned) URL to a file, resumably and atomically.
    #[command(after_help = EXIT_CODES)]
    Fetch(FetchArgs),
    /// Generate a new random 32-byte key, printed as base64.
    Keygen(KeygenArgs),
    /// Verify or sign webhook bodies.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the man pages (roff) on standard output, or write one file per page.
    Man(ManArgs),
}

/// `cipherstream man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write cipherstream.1 and one cipherstream-<command>.1 per command into DIR (so the pages'
    /// cross-references resolve once installed), instead of all pages on standard output.
    // This text is also the --help text, where <command> is meant literally.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Options shared by every command that reads exports.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Export files: ZIP, gzip or plain NDJSON, detected from their content; `-` is standard input;
    /// an https:// URL is downloaded as it is decrypted (resuming after a failure).
    #[arg(value_name = "INPUT", default_value = "-", value_parser = input_parser())]
    pub inputs: Vec<Input>,

    /// Customer id bound into every row's AAD [env: CIPHERSTREAM_CUSTOMER_ID].
    #[arg(long, value_name = "ID")]
    pub customer_id: Option<String>,

    #[allow(missing_docs)]
    #[command(flatten)]
    pub keys: KeyArgs,

    /// In a ZIP with several candidate members, the member to read.
    #[arg(long, value_name = "NAME")]
    pub member: Option<String>,

    /// Fail with exit status 3 unless the export holds exactly N rows (the cryptography cannot
    /// see rows cut off the end of an export).
    #[arg(long, value_name = "N", conflicts_with = "expect_rows_from")]
    pub expect_rows: Option<u64>,

    /// Take the expected row count from a webhook body's `data.rows_processed` (verify the body
    /// first with `cipherstream webhook verify`).
    #[arg(long, value_name = "WEBHOOK_JSON")]
    pub expect_rows_from: Option<PathBuf>,

    /// Decryption threads in all: several inputs with --output-dir, or to verify, run at once
    /// (one per thread) and share them [default: the available cores; one fewer for a ZIP or
    /// gzip export decrypted into a pipe, whose reader needs one].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,

    /// Longest line accepted, in bytes; a longer line is an error, not an out-of-memory kill.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 256 * 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(1..=4 * 1024 * 1024 * 1024)
    )]
    pub max_line_bytes: u64,

    /// No progress bar and no summary line.
    #[arg(short, long)]
    pub quiet: bool,

    #[allow(missing_docs)]
    #[command(flatten)]
    pub net: NetArgs,
}

/// How exports given as URLs are downloaded.
#[derive(Debug, Args)]
pub struct NetArgs {
    /// For an INPUT that is a URL: also trust the certificates in this PEM file (a
    /// TLS-inspecting proxy's CA).
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// For an INPUT that is a URL: failures in a row without any new byte before giving up.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub retries: u32,

    /// For an INPUT that is a URL: seconds a read may wait for a single byte before the
    /// connection counts as stalled and is made again.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout: u64,

    /// For an INPUT that is a URL: connections reading ahead at once, each a range of the export
    /// (a server that limits each connection's speed is then not the bottleneck).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub connections: u8,
}

impl NetArgs {
    /// The network options these flags give.
    pub fn options(&self) -> crate::source::NetOptions {
        crate::source::NetOptions {
            client: crate::net::client::ClientOptions {
                ca_file: self.ca_file.clone(),
                idle_timeout: std::time::Duration::from_secs(self.idle_timeout),
                https_only: true,
            },
            retries: self.retries,
            connections: usize::from(self.connections),
        }
    }
}

/// Where the keys for reading exports come from. Any of these replaces the environment's key.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// File holding a base64 key; repeat it for several keys (each row is opened by the one that
    /// authenticates it) [env: CIPHERSTREAM_KEY_FILE; else CIPHERSTREAM_KEY holds the key].
    #[arg(long, value_name = "PATH")]
    pub key_file: Vec<PathBuf>,

    /// Command that prints a base64 key on standard output, such as "pass show cipherstream/key";
    /// repeatable. Split into words as a shell would, run without a shell, with standard input
    /// closed and CIPHERSTREAM_KEY_ID and CIPHERSTREAM_CUSTOMER_ID set to the key id and customer
    /// id the rows need; run once per key id, only when no other key opens the rows [env:
    /// CIPHERSTREAM_KEY_CMD].
    #[arg(long, value_name = "CMD")]
    pub key_cmd: Vec<String>,

    /// Directory of key files, each named by the key id it opens (0600 files in a 0700
    /// directory): a row's key_id picks its file; when none is named so, every key is tried.
    #[arg(long, value_name = "DIR")]
    pub keyring: Option<PathBuf>,

    /// Seconds a --key-cmd may run before it is killed, with every process it started.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub key_cmd_timeout: u64,
}

/// `cipherstream decrypt`.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    #[allow(missing_docs)]
    #[command(flatten)]
    pub read: ReadArgs,

    /// Write to PATH (mode 0600) instead of standard output; PATH is replaced only after every
    /// row authenticated, and is left untouched on any failure. A PATH that is a device or FIFO
    /// is written as rows arrive, like standard output; `-o -` is standard output.
    #[arg(short, long, value_name = "PATH", conflicts_with = "output_dir", value_parser = output_parser())]
    pub output: Option<Output>,

    /// Write each input to DIR/<input stem>.ndjson, each atomically; a failed input leaves its
    /// file untouched and the other inputs are still written.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// Salvage a damaged export to standard output: skip rows that fail (each reported on
    /// stderr), write the rest. The exit status is still non-zero when any row was skipped. Not
    /// with -o or --output-dir, which only ever hold complete exports.
    #[arg(long)]
    pub skip_bad_rows: bool,
}

/// `cipherstream verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[allow(missing_docs)]
    #[command(flatten)]
    pub read: ReadArgs,

    /// Print one JSON object per input instead of a summary line.
    #[arg(long)]
    pub json: bool,
}

/// Container formats `encrypt` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A ZIP holding one `<job id>.ndjson` member (what the vendor sends).
    Zip,
    /// gzip-compressed NDJSON.
    Gzip,
    /// Plain NDJSON.
    Ndjson,
}

/// `cipherstream encrypt`.
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// Plain NDJSON to encrypt, one JSON document per line; `-` is standard input.
    #[arg(value_name = "INPUT", value_parser = local_input_parser())]
    pub input: Input,

    /// Customer id bound into every row's AAD [env: CIPHERSTREAM_CUSTOMER_ID].
    #[arg(long, value_name = "ID")]
    pub customer_id: Option<String>,

    /// File holding the base64 key [env: CIPHERSTREAM_KEY_FILE; else CIPHERSTREAM_KEY holds the key].
    #[arg(long, value_name = "PATH", conflicts_with = "key_cmd")]
    pub key_file: Option<PathBuf>,

    /// Command that prints the base64 key on standard output, run without a shell, with standard
    /// input closed, CIPHERSTREAM_CUSTOMER_ID set, and CIPHERSTREAM_KEY_ID set to --key-id when
    /// given [env: CIPHERSTREAM_KEY_CMD].
    #[arg(long, value_name = "CMD")]
    pub key_cmd: Option<String>,

    /// Seconds --key-cmd may run before it is killed, with every process it started.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub key_cmd_timeout: u64,

    /// Where to write the export (atomically, mode 0600).
    #[arg(short, long, value_name = "PATH", value_parser = output_parser())]
    pub output: Output,

    /// Container to write.
    #[arg(long, value_enum, default_value_t = Format::Zip)]
    pub format: Format,

    /// key_id written into every row [default: a short fingerprint of the key].
    #[arg(long, value_name = "ID")]
    pub key_id: Option<String>,

    /// Job id naming the ZIP member `<job_id>.ndjson` [default: the output file's stem].
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,
}

/// `cipherstream fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The https:// URL of the export (a presigned S3 URL). Its query string holds credentials:
    /// only its scheme, host and path are ever shown.
    #[arg(value_name = "URL")]
    pub url: String,

    /// Where to write the export. It appears only complete; the bytes accumulate beside it in
    /// .NAME.cipherstream-download (with a small state file) and resume in a later run.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,

    /// The size the export must have, in bytes (the webhook's file_size_bytes).
    #[arg(long, value_name = "BYTES")]
    pub expect_size: Option<u64>,

    /// Failures in a row without any new byte before giving up (the URL's expiry also ends the
    /// retries).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub retries: u32,

    /// Seconds a read may wait for a single byte before the connection counts as stalled.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout: u64,

    /// Connections at once, each downloading its own range of the export (a server that limits
    /// each connection's speed is then not the bottleneck); an export under 8 MiB takes one.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub connections: u8,

    /// Also trust the certificates in this PEM file (a TLS-inspecting proxy's CA).
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// No progress bar and no summary line (retries are still reported).
    #[arg(short, long)]
    pub quiet: bool,
}

/// `cipherstream keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write the key to PATH (created with mode 0600; an existing file is never overwritten);
    /// `-o -` is standard output.
    #[arg(short, long, value_name = "PATH", value_parser = output_parser())]
    pub output: Option<Output>,
}

/// `cipherstream webhook ...`.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Verify a webhook body's signature and timestamp, then print the body unchanged.
    #[command(after_help = EXIT_CODES)]
    Verify(WebhookVerifyArgs),
    /// Print the X-CipherStream-Signature header value for a body.
    Sign(WebhookSignArgs),
    /// Receive the vendor's deliveries over HTTP(S) and turn each job.completed into
    /// OUTPUT_DIR/<job_id>.ndjson, exactly once, from a durable queue.
    #[command(after_help = SERVE_AFTER_HELP)]
    Serve(Box<WebhookServeArgs>),
    /// List the receiver's jobs: queued, running, done and failed.
    Status(WebhookStatusArgs),
    /// Queue a saved delivery again (the vendor's manual redelivery from its dead-letter queue).
    #[command(after_help = EXIT_CODES)]
    Replay(WebhookReplayArgs),
}

const SERVE_AFTER_HELP: &str = "\
Answers: 200 once a verified delivery is durably recorded (or was already: a repeated
delivery_id, or a job already queued, running or done); 401 a missing or wrong signature; 400 a
stale or future timestamp, or a body without a usable delivery_id; 413 a body over --max-body;
404 another path; 405 another method; 411 no Content-Length; 503 when the delivery could not be
stored (the vendor retries). GET /healthz answers 200. A verified delivery that cannot be acted
on (an id that is not a plain name, a customer id not given with --customer-id) is answered 200
and recorded in STATE/refused/ for `webhook replay`.

The log: one line per event on standard error (--log-format json for JSON lines); it never holds
a key, a secret, a plaintext byte or a download URL's query.

Signals: SIGTERM or SIGINT stops accepting, finishes the answers under way and exits 0; a job
still running stays queued and resumes (its download too) at the next start. SIGHUP reloads
--tls-cert and --tls-key (a bad new pair keeps the old one, and says so in the log).

Exit status:
  0  stopped by SIGTERM or SIGINT
  1  the state directory, the certificate or the listening address cannot be used
  2  usage error (no secret, no key, no customer id, no output directory)";

/// The log's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `TIME message`, one line per event.
    Text,
    /// One JSON object per line, with `time` and `event`.
    Json,
}

/// `cipherstream webhook serve`.
#[derive(Debug, Args)]
pub struct WebhookServeArgs {
    /// Where to listen: HOST:PORT (port 0 picks a free one; the log's first line names it),
    /// unix:PATH for a reverse proxy on the same machine, or systemd for the socket a .socket
    /// unit passes (connections then wait in the kernel while the receiver restarts).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,

    /// The path the vendor posts to; anything else is answered 404.
    #[arg(long, value_name = "PATH", default_value = "/", value_parser = url_path())]
    pub path: String,

    /// Where each job's output goes, as DIR/<job_id>.ndjson (mode 0600, written atomically).
    #[arg(long, value_name = "DIR")]
    pub output_dir: PathBuf,

    /// Where deliveries, jobs and downloads are kept (created with mode 0700) [default:
    /// $STATE_DIRECTORY (set by systemd's StateDirectory=), else $XDG_STATE_HOME/cipherstream,
    /// else ~/.local/state/cipherstream].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    #[allow(missing_docs)]
    #[command(flatten)]
    pub secrets: SecretArgs,

    /// A customer id whose jobs are accepted; repeat it for several (each row's AAD binds it)
    /// [env: CIPHERSTREAM_CUSTOMER_ID].
    #[arg(long, value_name = "ID")]
    pub customer_id: Vec<String>,

    #[allow(missing_docs)]
    #[command(flatten)]
    pub keys: KeyArgs,

    /// Largest accepted distance, in seconds, between a body's `timestamp` and now.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub tolerance: u64,

    /// Jobs run at once (downloads and decryptions).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// Largest request body accepted, in bytes; a larger one is answered 413 unread.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u64).range(1..=16 * 1024 * 1024))]
    pub max_body: u64,

    /// Seconds a client has from connecting to the end of its request head (TLS included).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_timeout: u64,

    /// Seconds a client has to send the body once the head arrived.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub body_timeout: u64,

    /// Most connections open at once; a new one then closes the one that has waited longest for
    /// its request head, or is answered 503 when all are past theirs.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,

    /// Serve HTTPS (TLS 1.3 only) with this PEM certificate chain; reloaded on SIGHUP.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The log's format on standard error.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Seconds to wait after a job's first failed try (a network failure, a full disk); the wait
    /// doubles with each try, until the download URL expires.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub retry_backoff: u64,

    /// Command run after each job whose output is complete, such as "/usr/local/bin/load-export":
    /// split into words as a shell would, run without a shell, standard input closed, told the
    /// job in its environment only (CIPHERSTREAM_JOB_ID, CIPHERSTREAM_OUTPUT, and
    /// CIPHERSTREAM_EVENT_FILE, a file holding the delivery's raw body). A failure is retried
    /// like the job's (the output is not made again); the job is done once it succeeds.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,

    /// Seconds --exec may run before it is killed, with every process it started.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub exec_timeout: u64,

    /// Also trust the certificates in this PEM file for downloads (a TLS-inspecting proxy's CA).
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// Download failures in a row without any new byte before a try gives up (the job is then
    /// tried again after --retry-backoff).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub retries: u32,

    /// Seconds a download read may wait for a single byte before the connection counts as
    /// stalled.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout: u64,

    /// Days a delivery record (and a refusal) is kept, to answer a redelivery of its id as a
    /// duplicate; older ones are removed at start and every 6 hours. Jobs are kept. 0 keeps
    /// everything.
    #[arg(long, value_name = "DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=36500))]
    pub keep_deliveries: u32,

    /// Connections each download uses at once, each its own range of the export (as for fetch).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub connections: u8,
}

/// Where webhook secrets come from (serve, replay).
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// File holding a webhook secret; repeat it during a rotation, any one may match [else
    /// CIPHERSTREAM_WEBHOOK_SECRET holds the secret].
    #[arg(long, value_name = "PATH")]
    pub secret_file: Vec<PathBuf>,

    /// Command that prints a webhook secret on standard output (run once, at start, as --key-cmd
    /// is: no shell, standard input closed); repeatable.
    #[arg(long, value_name = "CMD")]
    pub secret_cmd: Vec<String>,

    /// Seconds a --secret-cmd may run before it is killed, with every process it started.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub secret_cmd_timeout: u64,
}

/// `cipherstream webhook status`.
#[derive(Debug, Args)]
pub struct WebhookStatusArgs {
    /// The receiver's state directory [default: as for webhook serve].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// One JSON object per job instead of tab-separated columns (STATE, JOB_ID, CUSTOMER_ID,
    /// TRIES, RECEIVED, DETAIL).
    #[arg(long)]
    pub json: bool,
}

/// `cipherstream webhook replay`.
#[derive(Debug, Args)]
pub struct WebhookReplayArgs {
    /// The saved raw body of the delivery; `-` is standard input.
    #[arg(value_name = "BODY", value_parser = local_input_parser())]
    pub body: Input,

    /// The delivery's X-CipherStream-Signature value. The signature is checked; the timestamp is
    /// not (a redelivery from the vendor's dead-letter queue is hours or days old).
    #[arg(long, value_name = "SIG")]
    pub signature: String,

    /// The receiver's state directory [default: as for webhook serve].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    #[allow(missing_docs)]
    #[command(flatten)]
    pub secrets: SecretArgs,

    /// The customer ids the receiver accepts, as given to webhook serve [env:
    /// CIPHERSTREAM_CUSTOMER_ID].
    #[arg(long, value_name = "ID")]
    pub customer_id: Vec<String>,
}

/// `--path`: an absolute URL path without a query.
fn url_path() -> impl TypedValueParser<Value = String> {
    clap::builder::StringValueParser::new().try_map(|p: String| {
        if p.starts_with('/')
            && !p.contains(['?', '#'])
            && !p.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            Ok(p)
        } else {
            Err(format!(
                "{} is not a path starting with / (and without ? or #)",
                crate::text::quote(&p)
            ))
        }
    })
}

/// `cipherstream webhook verify`.
#[derive(Debug, Args)]
pub struct WebhookVerifyArgs {
    /// The X-CipherStream-Signature header value: `sha256=<hex>` (the prefix is optional).
    #[arg(long, value_name = "SIG")]
    pub signature: String,

    /// File holding a webhook secret; repeat it during a rotation, any one may match (one that
    /// no longer exists is skipped with a warning) [else CIPHERSTREAM_WEBHOOK_SECRET holds the
    /// secret].
    #[arg(long, value_name = "PATH")]
    pub secret_file: Vec<PathBuf>,

    /// Command that prints a webhook secret on standard output (run as --key-cmd is: no shell,
    /// standard input closed); repeatable, with --secret-file too: any one may match.
    #[arg(long, value_name = "CMD")]
    pub secret_cmd: Vec<String>,

    /// Seconds a --secret-cmd may run before it is killed, with every process it started (the
    /// vendor waits 30 seconds for a receiver's answer).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub secret_cmd_timeout: u64,

    /// Largest accepted distance, in seconds, between the body's `timestamp` and now.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 300,
        conflicts_with = "no_timestamp_check"
    )]
    pub tolerance: u64,

    /// Skip the timestamp check (for replaying a saved payload); the signature is still checked.
    #[arg(long)]
    pub no_timestamp_check: bool,

    /// Record verified delivery ids in this file; a repeat exits with status 4.
    #[arg(long, value_name = "PATH")]
    pub seen_file: Option<PathBuf>,

    /// Largest body read, in bytes; a larger one is refused unverified (exit 1) after reading no
    /// more than that.
    #[arg(long, value_name = "BYTES", default_value_t = webhook::MAX_BODY_BYTES, value_parser = body_limit())]
    pub max_body_bytes: u64,

    /// The raw request body; `-` or nothing is standard input.
    #[arg(value_name = "BODY", default_value = "-", value_parser = local_input_parser())]
    pub body: Input,
}

/// `cipherstream webhook sign`.
#[derive(Debug, Args)]
pub struct WebhookSignArgs {
    /// File holding the webhook secret [else CIPHERSTREAM_WEBHOOK_SECRET holds the secret].
    #[arg(long, value_name = "PATH", conflicts_with = "secret_cmd")]
    pub secret_file: Option<PathBuf>,

    /// Command that prints the webhook secret on standard output (run as --key-cmd is: no shell,
    /// standard input closed).
    #[arg(long, value_name = "CMD")]
    pub secret_cmd: Option<String>,

    /// Seconds --secret-cmd may run before it is killed, with every process it started.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub secret_cmd_timeout: u64,

    /// Largest body read, in bytes; a larger one is refused (exit 1).
    #[arg(long, value_name = "BYTES", default_value_t = webhook::MAX_BODY_BYTES, value_parser = body_limit())]
    pub max_body_bytes: u64,

    /// The raw request body; `-` or nothing is standard input.
    #[arg(value_name = "BODY", default_value = "-", value_parser = local_input_parser())]
    pub body: Input,
}

/// `cipherstream completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
