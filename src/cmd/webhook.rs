//! `cipherstream webhook verify|sign`: wires the command line to [`crate::webhook`].

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use crate::cli::{WebhookCommand, WebhookSignArgs, WebhookVerifyArgs};
use crate::cmd::{credentials, Stderr};
use crate::error::{display_input, Error, Result};
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
    let secrets = credentials::secrets(&args.secret_file, &Stderr(None))?;
    let input = display_input(&args.body);
    let body = read_body(&args.body)?;
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
    let secrets = credentials::secrets(args.secret_file.as_slice(), &Stderr(None))?;
    let body = read_body(&args.body)?;
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

/// Read a webhook body, byte for byte: a file, or standard input for `-` (a usage error when
/// standard input is a terminal, rather than waiting silently).
pub fn read_body(path: &Path) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    let read = if path.as_os_str() == "-" {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err(Error::Usage(
                "no BODY given and standard input is a terminal: pass the body's file, or pipe \
                 the body in"
                    .into(),
            ));
        }
        stdin.lock().read_to_end(&mut body)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut body))
    };
    read.map_err(|e| Error::io(format!("cannot read {}", display_input(path)), e))?;
    Ok(body)
}
