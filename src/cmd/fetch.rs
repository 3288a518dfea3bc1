//! `cipherstream fetch URL -o PATH`: download an export resumably and atomically (SPEC section 4,
//! issue 13). The work is `net::download`'s; this resolves the arguments and reports: a progress
//! bar on a terminal (bytes of total, rate, ETA, retries), retry lines above it.

use std::io::Write;
use std::time::Duration;

use crate::cli::FetchArgs;
use crate::cmd::Stderr;
use crate::engine::progress::Progress;
use crate::error::{Error, Result};
use crate::net::client::{Client, ClientOptions};
use crate::net::download::{self, Options};
use crate::net::url::DownloadUrl;

/// Run `fetch`.
pub fn run(args: &FetchArgs) -> Result<()> {
    let url = DownloadUrl::parse(&args.url).map_err(Error::BadUrl)?;
    if args.output.is_dir() {
        return Err(Error::Usage(format!(
            "-o {} is a directory, not a file path",
            args.output.display()
        )));
    }
    let client = Client::new(&ClientOptions {
        ca_file: args.ca_file.clone(),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        https_only: url.is_https(),
    })?;
    let options = Options {
        expect_size: args.expect_size,
        retries: args.retries,
        connections: usize::from(args.connections),
    };
    let progress = Progress::new(!args.quiet, &crate::text::escape(url.shown()));
    let watch = |have: u64, total: Option<u64>, retries: u32| {
        progress.download(have, total, retries);
    };
    let done = match download::fetch(
        &client,
        &url,
        &args.output,
        &options,
        &Stderr(Some(&progress)),
        &watch,
    ) {
        Ok(done) => done,
        Err(e) => {
            progress.abandon();
            return Err(e);
        }
    };
    if let Some(took) = progress.finish() {
        let _ = writeln!(
            std::io::stderr(),
            "{}: {} bytes ({} this run, {} retries) in {:.2}s",
            args.output.display(),
            done.bytes,
            done.received,
            done.retries,
            took.as_secs_f64()
        );
    }
    Ok(())
}
