//! `cipherstream encrypt`: plain NDJSON in, a vendor-format export out (for tests and staging).
//!
//! Resolves the arguments (SPEC section 3), then streams through [`crate::engine::encrypt`] into an
//! [`AtomicFile`]: the export appears at `-o` (mode 0600) only once every row is sealed and the
//! container finished; on any failure, or SIGINT/SIGTERM, nothing is left at `-o` and a previous
//! file there is intact. Usage errors are found before the key is read or any file is created.

use std::io::Read;
use std::path::Path;

use crate::cli::{EncryptArgs, Format};
use crate::cmd::{credentials, finish, Stderr};
use crate::engine::encrypt::{
    self as engine, check_job_id, default_job_id, Options, MAX_LINE_BYTES,
};
use crate::engine::progress::Progress;
use crate::error::{Error, Result};
use crate::format::container::Kind;
use crate::format::seal::check_key_id;
use crate::sink::{AtomicFile, Output};
use crate::source::{Raw, Source};
use crate::warning::{Warn, Warning};

/// Run `encrypt`.
pub fn run(args: &EncryptArgs) -> Result<()> {
    let customer_id = credentials::customer_id(args.customer_id.as_deref())?;
    if let Some(key_id) = &args.key_id {
        check_key_id(key_id)?;
        if key_id.contains(':') {
            // SPEC section 3 has decrypt split from the right, but the vendor's own sample code
            // splits on every ':' and would take part of the key id for the nonce.
            Stderr(None).warn(Warning::KeyIdWithColon);
        }
    }
    let job_id = job_id(args)?;
    let Output::Path(output) = &args.output else {
        return Err(Error::Usage(
            "encrypt writes a file: give -o a path (standard output is not supported)".to_owned(),
        ));
    };
    if output.is_dir() {
        return Err(Error::Usage(format!(
            "-o {} is a directory, not a file path",
            output.display()
        )));
    }
    if args.input.is_same_file(output) {
        return Err(Error::Usage(format!(
            "the output {} is the input {}: refusing to overwrite the input",
            output.display(),
            args.input.name()
        )));
    }
    let name = args.input.name();
    if args.input.path().is_some_and(Path::is_dir) {
        return Err(Error::Usage(format!(
            "{name} is a directory, not an NDJSON file"
        )));
    }
    let key = credentials::key(
        &credentials::OneKey {
            file: args.key_file.as_deref(),
            command: args.key_cmd.as_deref(),
            timeout: std::time::Duration::from_secs(args.key_cmd_timeout),
            key_id: args.key_id.as_deref(),
            customer_id: &customer_id,
        },
        &Stderr(None),
    )?;
    let key_id = args.key_id.clone().unwrap_or_else(|| key.fingerprint());

    // Open the input before anything is created at the destination. Only a regular file's length
    // says how large the export can get (a FIFO reports 0).
    let (input, input_len): (Box<dyn Read>, Option<u64>) = match Source::new(&args.input).open()? {
        Raw::Seekable(file, len) => (Box::new(file), Some(len)),
        Raw::Stream(stream) => (stream, None),
    };

    let opts = Options {
        customer_id,
        key_id,
        format: match args.format {
            Format::Zip => Kind::Zip,
            Format::Gzip => Kind::Gzip,
            Format::Ndjson => Kind::Plain,
        },
        job_id,
        max_line_bytes: MAX_LINE_BYTES,
        input_len,
        output_name: output.display().to_string(),
    };
    let file = AtomicFile::create(output)?;
    let progress = Progress::new(true, &name);
    let (file, summary) = match engine::encrypt(input, &name, &key, &opts, file, &progress) {
        Ok(done) => done,
        Err(e) => {
            progress.abandon();
            return Err(e);
        }
    };
    file.commit()?;
    finish(
        &progress,
        &format!(
            "{name}: encrypted {} rows into {}",
            summary.rows,
            output.display()
        ),
    );
    Ok(())
}

/// The ZIP member's job id: `--job-id`, else the output file's stem. Meaningless for the other
/// formats, so giving it there is a usage error rather than silently ignored.
fn job_id(args: &EncryptArgs) -> Result<String> {
    if args.format != Format::Zip {
        return match args.job_id {
            Some(_) => Err(Error::Usage(
                "--job-id names the ZIP member <job_id>.ndjson; it applies only to --format zip"
                    .into(),
            )),
            None => Ok(String::new()),
        };
    }
    let id = match &args.job_id {
        Some(id) => id.clone(),
        None => {
            // Standard output (`-o -`) is refused after this, with its own message.
            let Some(output) = args.output.path() else {
                return Ok(String::new());
            };
            let file_name = output.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                Error::Usage(format!(
                    "cannot take a job id from the output name {}: give --job-id ID",
                    output.display()
                ))
            })?;
            default_job_id(file_name)
        }
    };
    check_job_id(&id)?;
    Ok(id)
}
