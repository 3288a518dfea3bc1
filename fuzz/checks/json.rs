//! `json`: arbitrary bytes through `json::validate`, against serde_json and between the two
//! implementations inside `json`.
//!
//! Properties, for every input:
//! - nothing panics (including debug assertions: `validate` asserts that the reference parser
//!   refuses whatever the fast scanner refuses);
//! - the fast scanner, with either string scan (SSE2 on x86_64, and 8 bytes at a time), accepts
//!   exactly what the reference parser accepts, and `validate` returns exactly the reference
//!   parser's result, error offset and description included;
//! - an error's offset is at most the input's length;
//! - on an accepted input, the scanners (and `validate_breaks`) report a line break exactly when
//!   the input holds a `\n` or `\r`;
//! - `validate` accepts exactly the inputs that are UTF-8 (`std::str::from_utf8`) and that
//!   `serde_json::from_slice::<IgnoredAny>` accepts, and an input that is not UTF-8 is refused at
//!   or before the offset where `from_utf8` stops. Nothing is excluded: `IgnoredAny` has no
//!   nesting limit (it skips values iteratively; serde_json's limit of 128 levels is for building
//!   values) and, like `validate`, accepts lone surrogate escapes; `tests/it/json_diff.rs` pins
//!   both facts down.

use cipherstream::format::json::{self, internals};
use serde::de::IgnoredAny;

/// Run this target's checks on one input: panics when a property does not hold.
pub fn check(data: &[u8]) {
    let result = json::validate(data);
    let reference = internals::reference(data);
    assert_eq!(
        result, reference,
        "validate and the reference parser disagree"
    );
    assert_eq!(
        internals::fast_accepts(data),
        reference.is_ok(),
        "the fast scanner and the reference parser disagree"
    );
    assert_eq!(
        internals::portable_fast_accepts(data),
        reference.is_ok(),
        "the 8-byte scanner and the reference parser disagree"
    );
    let breaks = reference
        .is_ok()
        .then(|| data.iter().any(|&b| b == b'\n' || b == b'\r'));
    assert_eq!(internals::fast_scan(data), breaks, "line breaks missed");
    assert_eq!(
        internals::portable_fast_scan(data),
        breaks,
        "line breaks missed (8-byte)"
    );
    assert_eq!(json::validate_breaks(data).ok(), breaks, "validate_breaks");
    if let Err(e) = result {
        assert!(e.offset <= data.len(), "{e} in a {}-byte input", data.len());
    }
    match std::str::from_utf8(data) {
        Ok(_) => {
            let serde = serde_json::from_slice::<IgnoredAny>(data).map_err(|e| e.to_string());
            assert_eq!(
                result.is_ok(),
                serde.is_ok(),
                "validate: {result:?}; serde_json: {serde:?}"
            );
        }
        Err(utf8) => {
            let e = result.expect_err("accepted an input that is not UTF-8");
            assert!(
                e.offset <= utf8.valid_up_to(),
                "{e}, but UTF-8 is valid up to {}",
                utf8.valid_up_to()
            );
        }
    }
}
