//! `cipherstream verify`: authenticate every row, write no plaintext, summarise each input.
//!
//! Every input is checked even when an earlier one failed (a check should report everything it
//! can); the exit status is the most severe failure's (`Exit::most_severe`), whatever the order.
//! Several inputs run at once when there are threads to spare, and every line comes out in input
//! order (`parallel`; issue 16, item 1). Unlike `decrypt`, nonce reuse is checked exactly
//! and is a failure (exit 3): an export with a repeated nonce can no longer be trusted.

use serde_json::json;

use crate::cli::VerifyArgs;
use crate::cmd::{parallel, Reading};
use crate::engine::decrypt::Summary;
use crate::error::{Error, Exit, Result};
use crate::text;

/// Run `verify`.
pub fn run(args: &VerifyArgs) -> Result<()> {
    let reading = Reading::resolve(&args.read, true, false)?;
    let inputs = &args.read.inputs;
    // Several inputs at once, each with its share of the threads, every line in input order
    // (see `parallel`; issue 16, item 1).
    let jobs: Vec<Reading> = parallel::shares(inputs.len(), reading.options.threads)
        .into_iter()
        .map(|threads| reading.with_threads(threads))
        .collect();
    let printer = parallel::Printer::new(reading.show_progress);
    let exits = parallel::in_order(
        inputs.len(),
        jobs.len(),
        &printer,
        |i, job, lines| {
            let name = inputs[i].name();
            let result = jobs[job]
                .process_with(&inputs[i], None, "verified", lines)
                .and_then(|s| nonce_verdict(&name, s));
            let line = match &result {
                Ok(summary) if args.json => text::json(&json_ok(&name, summary)),
                Ok(summary) => text_ok(&name, summary),
                Err(e) if args.json => text::json(&json_err(&name, e)),
                Err(_) => format!("{name}: FAILED"),
            };
            if let Err(e) = &result {
                lines.report(e);
            }
            // The exit status is the verdict: a reader that went away (`| head -1`, a closed pipe)
            // neither stops the checking of the other inputs nor hides a failure.
            lines.out(line);
            result.map(drop).map_err(|e| e.exit())
        },
        |result, _| result,
    );
    let mut worst: Option<Exit> = None;
    let mut failed = 0;
    for exit in exits.into_iter().filter_map(|r| r.err()) {
        failed += 1;
        worst = Some(worst.map_or(exit, |w| w.most_severe(exit)));
    }
    match (worst, printer.stdout_error()) {
        (Some(exit), _) => Err(Error::Inputs {
            failed,
            total: inputs.len(),
            exit,
        }),
        (None, Some(e)) => Err(Error::io("writing standard output", e)),
        (None, None) => Ok(()),
    }
}

/// Nonce reuse found by the exact check fails verification.
fn nonce_verdict(name: &str, summary: Summary) -> Result<Summary> {
    if summary.nonce_reuse.is_empty() {
        return Ok(summary);
    }
    let pairs = summary
        .nonce_reuse
        .iter()
        .map(|(first, later)| (first.unwrap_or(0), *later));
    Err(Error::NonceReuse {
        input: name.to_owned(),
        pairs: pairs.collect(),
    })
}

/// The summary line: each key id, and in brackets where the key that opened its rows came from
/// (issue 15: with several keys, which one was used). The key ids are not authenticated (they
/// are outside the AAD), so whoever altered the export chooses them: a line's JSON can spell ESC,
/// CR or LF, which unescaped could move the cursor or forge a line such as `x: ok, 10 rows`.
/// They are shown as every untrusted text in a list is (escaped, each cut to a readable length,
/// as [`text::list`] does; there are at most 16); the keys' sources (paths the user gave) are
/// escaped whole.
fn text_ok(name: &str, s: &Summary) -> String {
    let ids = if s.key_ids.is_empty() {
        "none".to_owned()
    } else {
        let items = s.key_ids.iter().map(|id| {
            let mut item = text::cut(id, text::MAX_ITEM_CHARS);
            let sources: Vec<&str> = s
                .keys_used
                .iter()
                .filter(|(k, _)| k == id)
                .map(|(_, source)| source.as_str())
                .collect();
            if !sources.is_empty() {
                item.push_str(&format!(" ({})", text::escape(&sources.join(", "))));
            }
            item
        });
        items.collect::<Vec<_>>().join(", ")
    };
    let more = if s.more_key_ids { ", ..." } else { "" };
    format!("{name}: ok, {} rows, key ids: {ids}{more}", s.rows)
}

fn json_ok(name: &str, s: &Summary) -> serde_json::Value {
    json!({
        "input": name,
        "ok": true,
        "rows": s.rows,
        "key_ids": s.key_ids,
        "keys": s.keys_used.iter().map(|(key_id, source)| json!({
            "key_id": key_id,
            "source": source,
        })).collect::<Vec<_>>(),
        "container": s.container,
        "member": s.member,
        "error": null,
        "exit_code": 0,
    })
}

fn json_err(name: &str, e: &Error) -> serde_json::Value {
    let row = match e {
        Error::Row { row, .. } => Some(*row),
        _ => None,
    };
    // The same keys as a success, so a consumer can read every object alike; what a failure
    // does not establish is null.
    json!({
        "input": name,
        "ok": false,
        "rows": null,
        "key_ids": null,
        "keys": null,
        "container": null,
        "member": null,
        "error": { "message": e.to_string(), "row": row, "hint": e.hint() },
        "exit_code": e.exit().code(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_cannot_write_control_characters_to_the_terminal() {
        let summary = Summary {
            rows: 3,
            key_ids: vec![
                "k1".to_owned(),
                "evil\u{1b}[2K\rall.ndjson: ok, 9999 rows, key ids: k1\nx".to_owned(),
                "r\u{202e}lt\u{7f}".to_owned(),
                "kid-é:2024".to_owned(),
            ],
            ..Summary::default()
        };
        assert_eq!(
            text_ok("a.zip", &summary),
            "a.zip: ok, 3 rows, key ids: k1, evil\\u{1b}[2K\\rall.ndjson: ok, 9999 rows, key \
             ids: k1\\nx, r\\u{202e}lt\\u{7f}, kid-é:2024"
        );
    }
}
