//! The floor for `cipherstream decrypt` on a ZIP (issue 3): inflate the export's member and throw
//! the bytes away, with nothing else.
//!
//! It opens the archive exactly as `src/container.rs` does (`zip::ZipArchive` over an unbuffered
//! `File`, `by_index`, so the same `zip` + flate2 zlib-rs backend, CRC check included, built with
//! the same features and release profile from this crate's Cargo.toml) and reads the member to
//! the end into one reusable 256 KiB buffer, the size of the pipeline's read buffers. Decrypting
//! the ZIP to /dev/null must take at most 1.10x this, measured in the same run.
//!
//! ```text
//! cargo bench --locked --bench inflate_only -- EXPORT.zip [MEMBER]
//! ```
//!
//! or run the binary that `cargo bench --locked --bench inflate_only --no-run` builds (its path is
//! in the `executable` field of `--message-format=json`; `bench/run.sh` does that). The member is
//! chosen like the tool does: MEMBER if given, else the only file, else the only `*.ndjson`. It
//! prints one line on stdout: `<member> <bytes> bytes <seconds> s <MB/s> MB/s`.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::process::ExitCode;
use std::time::Instant;

const BUF: usize = 256 * 1024;

fn main() -> ExitCode {
    // `cargo bench` appends `--bench` to the arguments; a harness-less bench must ignore it.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (path, wanted) = match args.as_slice() {
        [path] => (path, None),
        [path, member] => (path, Some(member.as_str())),
        _ => {
            eprintln!("usage: inflate_only EXPORT.zip [MEMBER]");
            return ExitCode::from(2);
        }
    };
    match run(path, wanted) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inflate_only: {path}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &str, wanted: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut archive = zip::ZipArchive::new(File::open(path)?)?;
    let mut files = Vec::new();
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i)?;
        if !entry.is_dir() {
            files.push((i, entry.name()?.into_owned()));
        }
    }
    let pick = |f: &dyn Fn(&str) -> bool| {
        let hits: Vec<_> = files.iter().filter(|(_, n)| f(n)).collect();
        match hits.as_slice() {
            [one] => Ok(one.0),
            _ => Err(format!(
                "cannot choose a member among {} candidates",
                hits.len()
            )),
        }
    };
    let index = match wanted {
        Some(w) => pick(&|n| n == w)?,
        None if files.len() == 1 => files[0].0,
        None => pick(&|n| n.ends_with(".ndjson"))?,
    };
    let mut entry = archive.by_index(index)?;
    let name = entry.name()?.into_owned();
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Keep the reads observable so nothing can be optimised away.
    std::hint::black_box(&buf);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name} {total} bytes {secs:.3} s {:.1} MB/s",
        total as f64 / secs / 1e6
    );
    Ok(())
}
