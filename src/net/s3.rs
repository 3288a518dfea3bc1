//! What an S3-compatible server says when it refuses a request: the `<Error>` XML body.
//!
//! SPEC section 4: an expired presigned URL answers `403` with
//! `<Error><Code>AccessDenied</Code><Message>Request has expired</Message>...<Expires>...`; other
//! refusals are `403` with another code (`SignatureDoesNotMatch`, ...). The body is untrusted
//! text: it is read with a size cap by the caller, only these three elements are taken from it,
//! and whatever is shown of them is escaped when displayed (`crate::text`).
//!
//! A few lines by hand rather than an XML crate: the body is flat, the elements are known, and
//! nothing else in it is used.

/// The parts of an S3 error body the tool uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Error {
    /// `<Code>`, e.g. `AccessDenied`, `SignatureDoesNotMatch`, `NoSuchKey`.
    pub code: Option<String>,
    /// `<Message>`, e.g. `Request has expired`.
    pub message: Option<String>,
    /// `<Expires>`, when the server says when the URL expired (RFC 3339 or similar).
    pub expires: Option<String>,
}

/// Longest element value kept: S3's are short, and the rest of a hostile body is not needed.
const MAX_VALUE_CHARS: usize = 256;

impl S3Error {
    /// Read the elements from an error body; missing ones are `None`.
    pub fn parse(body: &[u8]) -> S3Error {
        let text = String::from_utf8_lossy(body);
        S3Error {
            code: element(&text, "Code"),
            message: element(&text, "Message"),
            expires: element(&text, "Expires"),
        }
    }

    /// The server says the URL has expired (`AccessDenied` with "expired" in its message, as S3
    /// and SeaweedFS write it).
    pub fn is_expiry(&self) -> bool {
        self.code.as_deref() == Some("AccessDenied")
            && self
                .message
                .as_deref()
                .is_some_and(|m| m.to_ascii_lowercase().contains("expired"))
    }
}

/// The text of the first `<name>...</name>`, entities decoded, cut to [`MAX_VALUE_CHARS`].
fn element(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    let value = text[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    let value = value.trim();
    Some(value.chars().take(MAX_VALUE_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_expiry_as_s3_writes_it() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>Request has expired</Message><X-Amz-Expires>43200</X-Amz-Expires><Expires>2024-09-26T22:02:15Z</Expires><ServerTime>2024-09-27T08:00:00Z</ServerTime><RequestId>R1</RequestId></Error>"#;
        let e = S3Error::parse(body);
        assert_eq!(e.code.as_deref(), Some("AccessDenied"));
        assert_eq!(e.message.as_deref(), Some("Request has expired"));
        assert_eq!(e.expires.as_deref(), Some("2024-09-26T22:02:15Z"));
        assert!(e.is_expiry());
    }

    #[test]
    fn other_refusals_are_not_expiries() {
        let e = S3Error::parse(
            b"<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we \
              calculated does not match &amp; so on</Message></Error>",
        );
        assert_eq!(e.code.as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(
            e.message.as_deref(),
            Some("The request signature we calculated does not match & so on")
        );
        assert!(!e.is_expiry());
        let denied = S3Error::parse(
            b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
        );
        assert!(!denied.is_expiry());
    }

    #[test]
    fn anything_else_yields_nothing_and_long_values_are_cut() {
        assert_eq!(
            S3Error::parse(b"<html>Bad gateway</html>"),
            S3Error::default()
        );
        assert_eq!(S3Error::parse(b"\xff\xfe"), S3Error::default());
        let long = format!("<Error><Code>{}</Code></Error>", "A".repeat(10_000));
        assert_eq!(
            S3Error::parse(long.as_bytes()).code.unwrap().len(),
            MAX_VALUE_CHARS
        );
    }
}
