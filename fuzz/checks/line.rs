//! `line`: arbitrary bytes as one line of an export, through `record::parse_line` and
//! `RowOpener::open_into` with a fixed key and customer id.
//!
//! Properties, for every input:
//! - nothing panics (including debug assertions and integer overflow checks);
//! - on error the output buffer is exactly what it was before the call (a failed row releases no
//!   byte and leaves no trace);
//! - on success the appended bytes are one UTF-8 JSON document on one line;
//! - a line `parse_line` refuses is refused by `open_into` too.
//!
//! Random bytes essentially never carry a valid GCM tag, so the same input is also used as a
//! *plaintext*: sealed with the fixed key at row 5 and opened again. That reaches the code behind
//! the tag check (UTF-8 and JSON checks, compaction onto one line), with extra properties: the row
//! opens exactly when the plaintext is UTF-8 JSON; a single-line plaintext comes back byte for
//! byte, and a compacted one means the same JSON; opened as row 6 it fails as displaced from row 5.

use cipherstream::error::{Diagnosis, RowError};
use cipherstream::format::record::{parse_line, seal_line};

use super::common;

/// What the output buffer holds before each call: a failed row must leave exactly this.
const PREFIX: &[u8] = b"{\"earlier\":\"row\"}\n";

/// Run this target's checks on one input: panics when a property does not hold.
pub fn check(data: &[u8]) {
    as_line(data);
    as_plaintext(data);
}

/// Open `line` as row `row`, check the buffer contract, and return the result and the appended
/// bytes.
fn open(row: u64, line: &[u8]) -> (Result<(), RowError>, Vec<u8>) {
    let mut out = PREFIX.to_vec();
    let result = common::opener().open_into(row, line, &mut out).map(|_| ());
    match &result {
        Err(_) => assert_eq!(out, PREFIX, "a failed row changed the output buffer"),
        Ok(()) => {
            assert_eq!(&out[..PREFIX.len()], PREFIX, "earlier output was changed");
            common::assert_one_json_line(&out[PREFIX.len()..]);
        }
    }
    let appended = out[PREFIX.len()..].to_vec();
    (result, appended)
}

fn as_line(line: &[u8]) {
    let parsed = parse_line(line);
    if let Ok(fields) = &parsed {
        let _ = fields.split();
    }
    let (result, _) = open(0, line);
    if let Err(e) = parsed {
        assert_eq!(result, Err(e), "open_into and parse_line disagree");
    }
}

fn as_plaintext(plaintext: &[u8]) {
    let key = common::key();
    let cipher = key.cipher();
    let aad = format!("stream:{}:5", common::CUSTOMER_ID);
    let mut line = Vec::new();
    seal_line(
        &cipher,
        aad.as_bytes(),
        &[7u8; 12],
        "fuzz:key",
        plaintext,
        &mut Vec::new(),
        &mut line,
    );

    let is_json = std::str::from_utf8(plaintext).is_ok()
        && serde_json::from_slice::<serde::de::IgnoredAny>(plaintext).is_ok();
    let (result, appended) = open(5, &line);
    match result {
        Ok(()) => {
            assert!(is_json, "a plaintext that is not UTF-8 JSON was released");
            if !plaintext.contains(&b'\n') && !plaintext.contains(&b'\r') {
                assert_eq!(appended, plaintext, "a one-line plaintext was altered");
            } else if let Ok(before) = serde_json::from_slice::<serde_json::Value>(plaintext) {
                let after: serde_json::Value =
                    serde_json::from_slice(&appended).expect("checked by open");
                assert_eq!(after, before, "compaction changed the document");
            }
        }
        Err(RowError::Plaintext(_)) => assert!(!is_json, "a UTF-8 JSON plaintext was refused"),
        Err(e) => panic!("an authentic row failed with {e:?}"),
    }

    let (result, _) = open(6, &line);
    assert_eq!(
        result,
        Err(RowError::Auth(Diagnosis::Displaced { actual: 5 })),
        "row 5 opened as row 6"
    );
}
