//! What the targets share: the fixtures' key and customer id, so the seed corpus (made from
//! `fixtures/vectors`) authenticates and the fuzzer starts from rows that decrypt.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cipherstream::engine::decrypt::Options;
use cipherstream::format::key::{Key, KeySource};
use cipherstream::format::record::RowOpener;

/// `fixtures/keys/customer.key`, the key nearly every fixture vector is sealed with. A test key,
/// public in the repository.
const KEY_B64: &[u8] = b"KWYaVYUN8EaMDLRkhRmZowpWIjT3d9be5zmL+R9tGKw=";
/// The customer id of those vectors (`fixtures/manifest.json`).
pub const CUSTOMER_ID: &str = "cust_4f9a2c71";

/// The fixtures' key.
pub fn key() -> Key {
    Key::from_base64(KEY_B64, &KeySource::Env("CIPHERSTREAM_KEY"))
        .expect("the fixture key is valid")
}

/// A row opener for the fixtures' key and customer id (built once, cloned per input).
pub fn opener() -> RowOpener {
    static OPENER: OnceLock<RowOpener> = OnceLock::new();
    OPENER
        .get_or_init(|| RowOpener::new(key().cipher(), CUSTOMER_ID))
        .clone()
}

/// Pipeline options for the whole-export targets: two workers (so ordering across threads is
/// exercised), decrypt's fixed-memory nonce check, and the given line limit.
pub fn pipeline_options(max_line_bytes: u64) -> Options {
    Options {
        threads: 2,
        max_line_bytes,
        skip_bad_rows: false,
        exact_nonce_check: false,
        spare_core: false,
    }
}

/// Assert that `text` is what a released row must be: one UTF-8 JSON document on one line.
pub fn assert_one_json_line(text: &[u8]) {
    let s = std::str::from_utf8(text).expect("released bytes are UTF-8");
    assert!(
        !text.contains(&b'\n') && !text.contains(&b'\r'),
        "released row spans several lines: {s:?}"
    );
    serde_json::from_slice::<serde::de::IgnoredAny>(text)
        .expect("released row is one JSON document");
}

/// Assert that `out` holds only complete lines (empty, or ending in `\n`), each one JSON document;
/// return how many lines.
pub fn assert_complete_lines(out: &[u8]) -> u64 {
    let Some(body) = out.strip_suffix(b"\n") else {
        assert!(out.is_empty(), "output ends in a partial line");
        return 0;
    };
    let mut n = 0;
    for line in body.split(|&b| b == b'\n') {
        assert_one_json_line(line);
        n += 1;
    }
    n
}

/// Threads in this process, from `/proc/self/task` (Linux).
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task is readable")
        .count()
}

/// Wait until the process is back to `before` threads: the pipeline joins its threads before it
/// returns (a reader blocked on a stalled stream is given a grace period), so they must all be
/// gone within 5 s of `run` returning.
///
/// Waiting also keeps LeakSanitizer meaningful: libFuzzer checks for leaks right after each input,
/// and a thread still exiting then shows its thread-local storage as leaked.
pub fn wait_for_threads(before: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while threads() > before {
        assert!(
            Instant::now() < deadline,
            "pipeline threads still running 5 s after run returned"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Decrypt a whole export held in memory through the real pipeline (opened by `Source`, as the
/// binary opens a file), with the fixed key and customer id: what was written, and the result.
pub fn decrypt_bytes(
    data: Vec<u8>,
    opts: &Options,
) -> (
    Vec<u8>,
    cipherstream::error::Result<cipherstream::engine::decrypt::Summary>,
) {
    use cipherstream::engine::decrypt::{self as pipeline, Destination};
    let mut out = Vec::new();
    let result = cipherstream::source::Source::from_bytes("fuzz-input", data)
        .ndjson(None)
        .and_then(|ndjson| {
            pipeline::run(
                ndjson,
                &opener(),
                opts,
                Some(Destination {
                    writer: &mut out,
                    name: "output",
                    written: None,
                }),
                &cipherstream::engine::progress::Progress::hidden(),
                &cipherstream::warning::Ignore,
            )
        });
    (out, result)
}
