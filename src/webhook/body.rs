//! A webhook body after its signature verified: its JSON, its timestamp checked against the clock,
//! its delivery id, and the row count it announces.
//!
//! [`verify`] is the only way to obtain a parsed body, so no caller can parse or re-serialize the
//! JSON before the signature verified (SPEC section 2).

use std::path::Path;

use crate::error::{Error, Exit, Result};
use crate::text::shorten;
use crate::time::parse_rfc3339;
use crate::webhook::signature::{verify_signature, Secret, Signature};

/// Delivery ids longer than this are refused rather than written to the seen-file.
const MAX_DELIVERY_ID_BYTES: usize = 1024;

/// Whether and how to check the body's `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampCheck {
    /// Do not look at the timestamp (replaying a saved payload).
    Skip,
    /// The timestamp must be within `tolerance` seconds of `now`, before or after.
    Within {
        /// Largest accepted distance in seconds.
        tolerance: u64,
        /// Now, in Unix seconds (see [`now`](crate::time::now)).
        now: i64,
    },
}

/// A webhook body whose signature (and, if asked, timestamp) verified.
#[derive(Debug)]
pub struct Verified {
    input: String,
    json: serde_json::Value,
    secret_index: usize,
}

impl Verified {
    /// The index, in the list given to [`verify`], of the secret that matched.
    pub fn secret_index(&self) -> usize {
        self.secret_index
    }

    /// The body's `delivery_id`: a non-empty string of at most 1024 bytes without control
    /// characters (it is stored one per line in a seen-file). Missing or unusable is an error
    /// (exit 1).
    pub fn delivery_id(&self) -> Result<&str> {
        let input = &self.input;
        let unusable = |why: String| Error::Failed {
            message: format!("{input}: {why}"),
            hint: Some(
                "--seen-file needs the delivery_id of a CipherStream webhook to recognize retries"
                    .into(),
            ),
            exit: Exit::Failure,
        };
        match self.json.get("delivery_id") {
            None => Err(unusable(
                "the webhook body has no \"delivery_id\" field".into(),
            )),
            Some(serde_json::Value::String(id))
                if !id.is_empty()
                    && id.len() <= MAX_DELIVERY_ID_BYTES
                    && !id.chars().any(char::is_control) =>
            {
                Ok(id)
            }
            Some(serde_json::Value::String(id)) => Err(unusable(format!(
                "the webhook body's delivery_id {} is empty, longer than {MAX_DELIVERY_ID_BYTES} \
                 bytes or holds control characters",
                shorten(id)
            ))),
            Some(other) => Err(unusable(format!(
                "the webhook body's delivery_id is not a string: {}",
                shorten(&other.to_string())
            ))),
        }
    }
}

/// Verify a webhook body: the signature over the exact raw bytes first, then (only then) parse the
/// JSON, then check its `timestamp` as `check` asks. `input` names the body in messages.
///
/// Errors: a signature mismatch, or a timestamp too old or in the future, is exit 3; a body that is
/// not a JSON object or (when checked) has no usable `timestamp` is exit 1.
pub fn verify(
    input: &str,
    body: &[u8],
    signature: &Signature,
    secrets: &[Secret],
    check: TimestampCheck,
) -> Result<Verified> {
    let secret_index = verify_signature(input, body, signature, secrets)?;
    // SPEC section 2: never parse before verifying. The bytes are authentic from here on.
    let unusable = |message: String, hint: &str| Error::Failed {
        message: format!("{input}: {message}"),
        hint: Some(hint.to_owned()),
        exit: Exit::Failure,
    };
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        unusable(
            format!("the signature verified, but the body is not JSON: {e}"),
            "BODY must be the request body alone, not the whole HTTP request or a file that \
             wraps it",
        )
    })?;
    if !json.is_object() {
        return Err(unusable(
            "the signature verified, but the body is not a JSON object".into(),
            "a CipherStream webhook body is a JSON object with event, timestamp and data",
        ));
    }
    if let TimestampCheck::Within { tolerance, now } = check {
        let no_timestamp_hint = "replay protection needs the body's RFC 3339 timestamp; \
                                 --no-timestamp-check skips it, for replaying a saved payload only";
        let text = match json.get("timestamp") {
            None => {
                return Err(unusable(
                    "the webhook body has no \"timestamp\" field".into(),
                    no_timestamp_hint,
                ))
            }
            Some(serde_json::Value::String(text)) => text,
            Some(other) => {
                return Err(unusable(
                    format!(
                        "the webhook body's timestamp is not a string: {}",
                        shorten(&other.to_string())
                    ),
                    no_timestamp_hint,
                ))
            }
        };
        let sent = parse_rfc3339(text).map_err(|why| {
            unusable(
                format!(
                    "the webhook body's timestamp {} is not an RFC 3339 date-time: {why}",
                    shorten(text)
                ),
                "expected a date-time such as 2024-09-26T10:02:15Z",
            )
        })?;
        check_timestamp(input, text, sent, now, tolerance)?;
    }
    Ok(Verified {
        input: input.to_owned(),
        json,
        secret_index,
    })
}

/// Check that `sent` (Unix seconds, from the body's `timestamp` text `shown`) lies within
/// `tolerance` seconds of `now`, before or after. Outside it is an authentication error (exit 3)
/// that says whether the timestamp is too old or in the future, and by how many seconds.
pub fn check_timestamp(
    input: &str,
    shown: &str,
    sent: i64,
    now: i64,
    tolerance: u64,
) -> Result<()> {
    let age = i128::from(now) - i128::from(sent);
    if age.unsigned_abs() <= u128::from(tolerance) {
        return Ok(());
    }
    let (message, hint) = if age > 0 {
        (
            format!(
                "{input}: webhook timestamp {} is too old: {age} seconds before now (tolerance \
                 {tolerance} seconds)",
                shorten(shown)
            ),
            "a delayed or replayed delivery; to process a saved payload use --no-timestamp-check, \
             and check this machine's clock",
        )
    } else {
        (
            format!(
                "{input}: webhook timestamp {} is in the future by {} seconds (tolerance \
                 {tolerance} seconds)",
                shorten(shown),
                -age
            ),
            "check this machine's clock (and the sender's); a large --tolerance weakens replay \
             protection",
        )
    };
    Err(Error::Failed {
        message,
        hint: Some(hint.into()),
        exit: Exit::Auth,
    })
}

/// Read `data.rows_processed` from a (verified) webhook body, for `--expect-rows-from`.
pub fn rows_processed(path: &Path) -> Result<u64> {
    let text =
        std::fs::read(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    let body: serde_json::Value = serde_json::from_slice(&text).map_err(|e| Error::Failed {
        message: format!("{}: not a JSON webhook body ({e})", path.display()),
        hint: None,
        exit: Exit::Failure,
    })?;
    body.pointer("/data/rows_processed")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| Error::Failed {
            message: format!("{}: no whole number at data.rows_processed", path.display()),
            hint: Some("pass the body of a job.completed webhook".into()),
            exit: Exit::Failure,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> Secret {
        Secret::from_text(text.as_bytes(), "test secret").unwrap()
    }

    #[test]
    fn verify_tries_every_secret_and_reports_the_count() {
        let body = br#"{"timestamp":"2024-09-26T10:02:15Z","delivery_id":"d1"}"#;
        let secrets = vec![secret("old"), secret("new")];
        let sig = Signature::parse(&secrets[1].signature_header(body)).unwrap();
        let v = verify("b", body, &sig, &secrets, TimestampCheck::Skip).unwrap();
        assert_eq!(v.secret_index(), 1);
        assert_eq!(v.delivery_id().unwrap(), "d1");

        let wrong = Signature::parse(&secret("other").signature_header(body)).unwrap();
        let e = verify("b", body, &wrong, &secrets, TimestampCheck::Skip).unwrap_err();
        assert_eq!(e.exit(), Exit::Auth);
        let text = format!("{e} {:?}", e.hint());
        assert!(text.contains("tried 2 secrets"), "{text}");
        for leaked in [
            secrets[0].signature_header(body),
            secrets[1].signature_header(body),
        ] {
            assert!(!text.contains(&leaked[7..]), "{text}");
        }
    }

    #[test]
    fn signature_is_checked_before_the_body_is_parsed() {
        // Not JSON, wrongly signed: an authentication failure, not a parse error.
        let e = verify(
            "b",
            b"not json",
            &Signature::parse(&"0".repeat(64)).unwrap(),
            &[secret("k")],
            TimestampCheck::Skip,
        )
        .unwrap_err();
        assert_eq!(e.exit(), Exit::Auth);
        // Not JSON, rightly signed: a parse error.
        let sig = Signature::parse(&secret("k").signature_header(b"not json")).unwrap();
        let e = verify("b", b"not json", &sig, &[secret("k")], TimestampCheck::Skip).unwrap_err();
        assert_eq!(e.exit(), Exit::Failure);
    }

    #[test]
    fn timestamp_window_is_inclusive_and_two_sided() {
        let at = 1_727_344_935;
        assert!(check_timestamp("b", "t", at, at + 300, 300).is_ok());
        assert!(check_timestamp("b", "t", at, at - 300, 300).is_ok());
        let old = check_timestamp("b", "t", at, at + 301, 300).unwrap_err();
        assert_eq!(old.exit(), Exit::Auth);
        assert!(old.to_string().contains("too old: 301 seconds"), "{old}");
        let future = check_timestamp("b", "t", at, at - 301, 300).unwrap_err();
        assert!(
            future.to_string().contains("in the future by 301 seconds"),
            "{future}"
        );
        // The widest distance, 2^64 - 1 seconds, neither overflows nor wraps.
        assert!(check_timestamp("b", "t", i64::MIN, i64::MAX, u64::MAX).is_ok());
        assert!(check_timestamp("b", "t", i64::MIN, i64::MAX, u64::MAX - 1).is_err());
        assert!(check_timestamp("b", "t", i64::MAX, i64::MIN, u64::MAX - 1).is_err());
        assert!(check_timestamp("b", "t", 0, 0, 0).is_ok());
    }

    #[test]
    fn delivery_id_must_be_a_plain_string() {
        let secrets = [secret("k")];
        let verified = |body: &[u8]| {
            let sig = Signature::parse(&secrets[0].signature_header(body)).unwrap();
            verify("b", body, &sig, &secrets, TimestampCheck::Skip).unwrap()
        };
        for body in [
            &br#"{}"#[..],
            br#"{"delivery_id":7}"#,
            br#"{"delivery_id":""}"#,
            br#"{"delivery_id":"a\nb"}"#,
        ] {
            let e = verified(body).delivery_id().unwrap_err();
            assert_eq!(e.exit(), Exit::Failure, "{}", String::from_utf8_lossy(body));
        }
    }
}
