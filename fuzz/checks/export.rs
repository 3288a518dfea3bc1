//! `export`: arbitrary bytes as a whole export (any container) through the full decrypt pipeline,
//! `pipeline::run`, with `max_line_bytes` = 1 MiB and 2 worker threads, into a `Vec`.
//!
//! Properties: nothing panics (on any thread: a worker that dies shows up as an error, checked
//! below); the output holds only complete lines, each one JSON document; on success one line per
//! released row; when row N fails, exactly rows 0..N were written before the error; the
//! pipeline's threads are all gone within 5 s of `run` returning (see
//! `common::wait_for_threads`). A panic on any thread aborts the process, which libFuzzer reports.

use cipherstream::error::Error;

use super::common;

/// Run this target's checks on one input: panics when a property does not hold.
pub fn check(data: &[u8]) {
    let opts = common::pipeline_options(1 << 20);
    let threads_before = common::threads();
    let (out, result) = common::decrypt_bytes(data.to_vec(), &opts);
    let lines = common::assert_complete_lines(&out);
    match result {
        Ok(summary) => {
            assert_eq!(lines, summary.released, "lines written != rows released");
            assert_eq!(
                summary.rows, summary.released,
                "rows lost without skip_bad_rows"
            );
        }
        Err(e) => {
            if let Error::Row { row, .. } = &e {
                assert_eq!(
                    lines, *row,
                    "rows before the failing row were not all written"
                );
            }
            let message = e.to_string();
            assert!(
                !message.contains("worker thread stopped"),
                "a pipeline thread died: {message}"
            );
            let _ = (e.hint(), e.exit());
        }
    }
    common::wait_for_threads(threads_before);
}
