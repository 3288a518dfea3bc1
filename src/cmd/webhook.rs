//! `cipherstream webhook verify|sign`: wires the command line to [`crate::webhook`].

use std::io::Write;
use std::time::Duration;

use crate::cli::{WebhookCommand, WebhookSignArgs, WebhookVerifyArgs};
use crate::cmd::{credentials, Stderr};
use crate::error::{Error, Result};
use crate::source::{Input, Source};
use crate::webhook::{self, Signature, TimestampCheck};

/// Run a `webhook` subcommand.
pub fn run(cmd: &WebhookCommand) -> Result<()> {
    match cmd {
        WebhookCommand::Verify(args) => verify(args),
        WebhookCommand::Sign(args) => sign(args),
    }
}

/// Verify the signature, the timestamp and (with `--seen-file`) the delivery id, then pass the body
/// through to standard output unchanged.
fn verify(args: &WebhookVerifyArgs) -> Result<()> {
    let signature = Signature::parse(&args.signature)?;
    let secrets = credentials::secrets(
        &credentials::SecretSources {
            files: &args.secret_file,
            commands: &args.secret_cmd,
            timeout: Duration::from_secs(args.secret_cmd_timeout),
        },
        &Stderr(None),
    )?;
    let input = args.body.name();
    let body = read_body(&args.body, args.max_body_bytes)?;
    let check = if args.no_timestamp_check {
        TimestampCheck::Skip
    } else {
        TimestampCheck::Within {
            tolerance: args.tolerance,
            now: crate::time::now()?,
        }
    };
    let verified = webhook::verify(&input, &body, &signature, &secrets, check)?;
    drop(secrets);
    if let Some(seen_file) = &args.seen_file {
        // Recorded before printing: a delivery is handed on at most once, even if the consumer of
        // standard output then fails.
        webhook::record_delivery(seen_file, verified.delivery_id()?)?;
    }
    write_stdout(&body)
}

/// Print the `X-CipherStream-Signature` value for a body.
fn sign(args: &WebhookSignArgs) -> Result<()> {
    let secrets = credentials::secrets(
        &credentials::SecretSources {
            files: args.secret_file.as_slice(),
            commands: args.secret_cmd.as_slice(),
            timeout: Duration::from_secs(args.secret_cmd_timeout),
        },
        &Stderr(None),
    )?;
    let body = read_body(&args.body, args.max_body_bytes)?;
    let mut line = secrets[0].signature_header(&body);
    drop(secrets);
    line.push('\n');
    write_stdout(line.as_bytes())
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing standard output", e))
}

/// Read a webhook body, byte for byte, at most `limit` bytes (`--max-body-bytes`): a file, or
/// standard input for `-` (a usage error when standard input is a terminal, rather than waiting
/// silently).
fn read_body(input: &Input, limit: u64) -> Result<Vec<u8>> {
    if input.is_interactive() {
        return Err(Error::Usage(
            "no BODY given and standard input is a terminal: pass the body's file, or pipe the \
             body in"
                .into(),
        ));
    }
    Source::new(input).read_all(
        limit,
        "webhook body",
        "raise the limit with --max-body-bytes BYTES",
    )
}
