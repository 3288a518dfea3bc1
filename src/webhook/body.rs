//! A webhook body after its signature verified: its JSON, its timestamp checked against the clock,
//! its delivery id, and the row count it announces.
//!
//! [`verify`] is the only way to obtain a parsed body, so no caller can parse or re-serialize the
//! JSON before the signature verified (SPEC section 2).

use crate::error::{BodyProblem, Error, Result};
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
        /// Now, in Unix seconds (see [`crate::time::now`]).
        now: i64,
    },
}

/// A webhook body whose signature (and, if asked, timestamp) verified. Its `Debug` shows where
/// it came from and which secret matched, never the body: that holds the presigned URL, a
/// bearer credential.
pub struct Verified {
    input: String,
    json: serde_json::Value,
    secret_index: usize,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("input", &self.input)
            .field(
                "json",
                &format_args!("<{} bytes, not shown>", self.json.to_string().len()),
            )
            .field("secret_index", &self.secret_index)
            .finish()
    }
}

impl Verified {
    /// The index, in the list given to [`verify`], of the secret that matched.
    pub fn secret_index(&self) -> usize {
        self.secret_index
    }

    /// The parsed body (a JSON object).
    pub fn json(&self) -> &serde_json::Value {
        &self.json
    }

    /// The body's `delivery_id`: a non-empty string of at most 1024 bytes without control
    /// characters (it is stored one per line in a seen-file). Missing or unusable is an error
    /// (exit 1).
    pub fn delivery_id(&self) -> Result<&str> {
        let unusable = |problem| Error::WebhookBody {
            input: self.input.clone(),
            problem,
        };
        match self.json.get("delivery_id") {
            None => Err(unusable(BodyProblem::NoDeliveryId)),
            Some(serde_json::Value::String(id))
                if !id.is_empty()
                    && id.len() <= MAX_DELIVERY_ID_BYTES
                    && !id.chars().any(char::is_control) =>
            {
                Ok(id)
            }
            Some(serde_json::Value::String(id)) => {
                Err(unusable(BodyProblem::BadDeliveryId(shorten(id))))
            }
            Some(other) => Err(unusable(BodyProblem::DeliveryIdNotString(shorten(
                &other.to_string(),
            )))),
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
    let unusable = |problem| Error::WebhookBody {
        input: input.to_owned(),
        problem,
    };
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        // serde_json refuses nesting deeper than 128 levels with a syntax error; it is JSON, just
        // deeper than any webhook body (issue 12, item 9).
        unusable(if e.to_string().starts_with("recursion limit exceeded") {
            BodyProblem::TooDeep
        } else {
            BodyProblem::NotJson(e.to_string())
        })
    })?;
    if !json.is_object() {
        return Err(unusable(BodyProblem::NotObject));
    }
    if let TimestampCheck::Within { tolerance, now } = check {
        let text = match json.get("timestamp") {
            None => return Err(unusable(BodyProblem::NoTimestamp)),
            Some(serde_json::Value::String(text)) => text,
            Some(other) => {
                return Err(unusable(BodyProblem::TimestampNotString(shorten(
                    &other.to_string(),
                ))))
            }
        };
        let sent = parse_rfc3339(text).map_err(|why| {
            unusable(BodyProblem::BadTimestamp {
                shown: shorten(text),
                why,
            })
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
    Err(Error::StaleTimestamp {
        input: input.to_owned(),
        shown: shorten(shown),
        age,
        tolerance,
    })
}

/// Read `data.rows_processed` from a (verified) webhook body, for `--expect-rows-from`. `input`
/// names the body in messages.
pub fn rows_processed(input: &str, body: &[u8]) -> Result<u64> {
    let unusable = |problem| Error::WebhookBody {
        input: input.to_owned(),
        problem,
    };
    let body: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| unusable(BodyProblem::Unparsable(e.to_string())))?;
    body.pointer("/data/rows_processed")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| unusable(BodyProblem::NoRowsProcessed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;

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
    fn a_verified_body_s_debug_never_shows_the_body() {
        let body = br#"{"timestamp":"2024-09-26T10:02:15Z","delivery_id":"d1","data":{"s3_url":"https://b.example/x?X-Amz-Signature=sekrit"}}"#;
        let secrets = vec![secret("k")];
        let sig = Signature::parse(&secrets[0].signature_header(body)).unwrap();
        let v = verify("b", body, &sig, &secrets, TimestampCheck::Skip).unwrap();
        assert_eq!(
            format!("{v:?}"),
            format!(
                "Verified {{ input: \"b\", json: <{} bytes, not shown>, secret_index: 0 }}",
                body.len()
            )
        );
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
    fn a_body_nested_too_deep_is_called_that_not_malformed() {
        let body = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        let sig = Signature::parse(&secret("k").signature_header(body.as_bytes())).unwrap();
        let e = verify(
            "b",
            body.as_bytes(),
            &sig,
            &[secret("k")],
            TimestampCheck::Skip,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "b: the signature verified, but the body nests deeper than 128 levels, more than any \
             webhook body"
        );
        assert_eq!(e.exit(), Exit::Failure);
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
