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
//! - [`signature`]: secrets, the signature header, the constant-time HMAC check.
//! - [`body`]: the verified body: JSON, timestamp window, delivery id, announced row count.
//! - [`seen`]: the seen-file of delivery ids already handed on.
//!
//! The receiver (`webhook serve`, issue 14) is built from these and five more:
//!
//! - [`server`]: HTTP/1.1 (and HTTPS) on std threads, one request per connection, deadlines and
//!   caps for slow and oversized requests.
//! - [`receiver`]: a request's body to an answer: verified as `webhook verify` does, then
//!   recorded.
//! - [`delivery`]: what a verified body asks for (a job, an event to record, or a refusal).
//! - [`queue`]: the durable queue of deliveries and jobs, plain files, atomic renames.
//! - [`worker`]: the pool that downloads, decrypts and writes each job's output.
//! - [`log`]: the receiver's log events, as text or JSON lines.
//! - [`fault`]: fault points for the crash tests (debug builds only).
//!
//! Reading secrets from files and the environment is the commands' job (`cmd::credentials`), and
//! so are printing the log and handling signals (`cmd::webhook`).

pub mod body;
pub mod delivery;
pub mod fault;
pub mod log;
pub mod queue;
pub mod receiver;
pub mod seen;
pub mod server;
pub mod signature;
pub mod worker;

pub use body::{rows_processed, verify, TimestampCheck, Verified};
pub use seen::record_delivery;
pub use signature::{constant_time_eq, verify_signature, Secret, Signature};

/// Environment variable holding the webhook secret when no `--secret-file` is given.
pub const ENV_SECRET: &str = "CIPHERSTREAM_WEBHOOK_SECRET";

/// The largest webhook body read by default (`webhook verify`/`sign --max-body-bytes`,
/// `--expect-rows-from`): 1 MiB. The vendor's bodies are a few KiB; a body is read before its
/// signature is checked, so its size is the sender's choice and needs a bound. (A receiver that
/// answers on the network should bound it tighter still, e.g. 64 KiB.)
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;
