//! Webhook signatures: the secret, the `X-CipherStream-Signature` value, and the constant-time
//! check of an HMAC-SHA256 over the exact raw body bytes (SPEC section 2).
//!
//! Secrets are held in buffers that are wiped on drop and have no `Debug` that shows them; no error
//! ever contains a secret or the signature the body should have had.

use std::fmt;

use base16ct::HexDisplay;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::text::shorten;

type HmacSha256 = Hmac<Sha256>;

/// A webhook secret: the UTF-8 bytes of the secret's text, surrounding whitespace removed. Wiped on
/// drop; its `Debug` shows only where it came from.
pub struct Secret {
    bytes: Zeroizing<Vec<u8>>,
    source: String,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("source", &self.source)
            .field("bytes", &"<redacted>")
            .finish()
    }
}

impl Secret {
    /// Make a secret from its text; a UTF-8 byte order mark at the start and surrounding
    /// whitespace are ignored. `source` names where the text came from in messages (a file name or
    /// the environment variable, never the text). An empty secret, or text that is not UTF-8, is
    /// an error (exit 1).
    ///
    /// The byte order mark (issue 12 item 8): Windows editors start a saved file with one, and
    /// Unicode does not count it as whitespace, so it would survive the trim and be keyed into
    /// every HMAC: `webhook verify` would call each genuine delivery forged (exit 3), and
    /// `webhook sign` would sign wrongly. The vendor's secrets are ASCII, so no real secret starts
    /// with one.
    pub fn from_text(text: &[u8], source: impl Into<String>) -> Result<Secret> {
        let source = source.into();
        let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
        let Ok(text) = std::str::from_utf8(text) else {
            return Err(Error::BadSecret {
                source,
                empty: false,
            });
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(Error::BadSecret {
                source,
                empty: true,
            });
        }
        Ok(Secret {
            bytes: Zeroizing::new(trimmed.as_bytes().to_vec()),
            source,
        })
    }

    /// Where the secret came from, for messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The HMAC-SHA256 of `body` under this secret.
    pub fn mac(&self, body: &[u8]) -> Zeroizing<[u8; 32]> {
        // hmac's own state is wiped only with its `zeroize` feature, which this crate does not
        // enable; the key bytes themselves live in `self.bytes`, which is wiped.
        let mut mac =
            HmacSha256::new_from_slice(&self.bytes).expect("HMAC takes keys of any length");
        mac.update(body);
        Zeroizing::new(mac.finalize().into_bytes().into())
    }

    /// The `X-CipherStream-Signature` header value for `body`: `sha256=` and 64 lowercase hex
    /// digits.
    pub fn signature_header(&self, body: &[u8]) -> String {
        format!("sha256={:x}", HexDisplay(self.mac(body).as_ref()))
    }
}

/// A parsed `X-CipherStream-Signature` value: the 32 bytes of an HMAC-SHA256.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature([u8; 32]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(sha256={:x})", HexDisplay(&self.0))
    }
}

impl Signature {
    /// Parse `sha256=<64 hex digits>`; the `sha256=` prefix is optional and both the prefix and
    /// the hex digits may be in either case. Anything else fails verification (exit 3): the value
    /// comes from the request, and a forged request is as likely to carry garbage as a wrong MAC.
    pub fn parse(header: &str) -> Result<Signature> {
        let text = header.trim();
        let hex = match text.split_once('=') {
            Some((scheme, hex)) if scheme.eq_ignore_ascii_case("sha256") => hex,
            Some((scheme, _)) => {
                return Err(malformed_signature(format!(
                    "it names the scheme {}, but only sha256= is used",
                    shorten(scheme)
                )))
            }
            None => text,
        };
        let mut bytes = [0u8; 32];
        match base16ct::mixed::decode(hex, &mut bytes) {
            Ok(decoded) if decoded.len() == 32 => Ok(Signature(bytes)),
            // Not decoded: say why, a stray character before a wrong count.
            _ if !hex.bytes().all(|b| b.is_ascii_hexdigit()) => Err(malformed_signature(
                "it holds a character that is not a hex digit".to_owned(),
            )),
            _ => Err(malformed_signature(format!(
                "it has {} hex digits, not 64",
                hex.len()
            ))),
        }
    }

    /// The signature's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn malformed_signature(why: String) -> Error {
    Error::MalformedSignature(why)
}

/// Compare two byte strings in time that depends only on their lengths, never on where they
/// differ. Different lengths compare unequal.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Check `signature` against the HMAC of the exact `body` bytes under every secret, each in
/// constant time, and return the index of the (first) secret that matched. All secrets are always
/// tried. A mismatch is an authentication error (exit 3) that counts the secrets tried and never
/// shows the expected signature. `input` names the body in messages.
pub fn verify_signature(
    input: &str,
    body: &[u8],
    signature: &Signature,
    secrets: &[Secret],
) -> Result<usize> {
    if let Some(index) = matching_secret(body, signature, secrets) {
        return Ok(index);
    }
    // A body saved with `echo` or an editor gains a final newline the sender never signed. Saying
    // so reveals nothing: whoever holds the body can add or remove a newline.
    let without_newline = body
        .strip_suffix(b"\n")
        .map(|b| b.strip_suffix(b"\r").unwrap_or(b));
    Err(Error::SignatureMismatch {
        input: input.to_owned(),
        tried: secrets.iter().map(|s| s.source().to_owned()).collect(),
        newline_added: without_newline
            .is_some_and(|b| matching_secret(b, signature, secrets).is_some()),
    })
}

fn matching_secret(body: &[u8], signature: &Signature, secrets: &[Secret]) -> Option<usize> {
    let mut found = None;
    for (index, secret) in secrets.iter().enumerate() {
        let expected = secret.mac(body);
        if constant_time_eq(expected.as_ref(), signature.as_bytes()) && found.is_none() {
            found = Some(index);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;

    fn secret(text: &str) -> Secret {
        Secret::from_text(text.as_bytes(), "test secret").unwrap()
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(&[7; 32], &[7; 32]));
        let mut other = [7; 32];
        other[31] ^= 1;
        assert!(!constant_time_eq(&[7; 32], &other));
        other = [7; 32];
        other[0] ^= 0x80;
        assert!(!constant_time_eq(&[7; 32], &other));
        assert!(!constant_time_eq(&[7; 32], &[7; 31]));
        assert!(!constant_time_eq(&[7; 31], &[7; 32]));
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        // RFC 4231 section 4.3: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            secret("Jefe").signature_header(b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signature_parse_accepts_prefix_case_and_bare_hex() {
        let hex = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let want = Signature::parse(&format!("sha256={hex}")).unwrap();
        assert_eq!(want.as_bytes()[0], 0x5b);
        assert_eq!(want.as_bytes()[31], 0x43);
        assert_eq!(format!("{want:?}"), format!("Signature(sha256={hex})"));
        for other in [
            hex.to_owned(),
            hex.to_uppercase(),
            format!("SHA256={}", hex.to_uppercase()),
            format!("  sha256={hex}\r\n"),
        ] {
            assert_eq!(Signature::parse(&other).unwrap(), want, "{other:?}");
        }
    }

    #[test]
    fn signature_parse_rejects_malformed_values() {
        let hex = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        for bad in [
            String::new(),
            "sha256=".into(),
            hex[..63].to_owned(),
            format!("{hex}0"),
            format!("sha1={hex}"),
            format!("sha256={}g", &hex[..63]),
            format!("sha256=={hex}"),
            format!("sha256={}é", &hex[..62]),
        ] {
            let e = Signature::parse(&bad).unwrap_err();
            assert_eq!(e.exit(), Exit::Auth, "{bad:?}");
            assert!(
                e.to_string().starts_with("--signature is malformed: "),
                "{e}"
            );
        }
        let e = Signature::parse(&hex[..63]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--signature is malformed: it has 63 hex digits, not 64; expected sha256= followed \
             by 64 hex digits"
        );
        // A stray character is named before a wrong count, whatever the length.
        for stray in [format!("{}g", &hex[..62]), "xyz".into(), format!("{hex}0_")] {
            let e = Signature::parse(&format!("sha256={stray}")).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("--signature is malformed: it holds a character that is not"),
                "{stray:?}: {e}"
            );
        }
        let e = Signature::parse("sha256=abc").unwrap_err();
        assert!(e.to_string().contains("it has 3 hex digits, not 64"), "{e}");
    }

    #[test]
    fn secrets_are_trimmed_and_never_shown() {
        let s = Secret::from_text(b"  \n s3cr3t-value \r\n", "secret file w.txt").unwrap();
        assert_eq!(
            s.signature_header(b"x"),
            secret("s3cr3t-value").signature_header(b"x")
        );
        let debug = format!("{s:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains("w.txt"), "{debug}");
        assert_eq!(
            Secret::from_text(b" \n\t", "e").unwrap_err().exit(),
            Exit::Failure
        );
        assert_eq!(
            Secret::from_text(&[0xff, 0xfe, b'a'], "e")
                .unwrap_err()
                .exit(),
            Exit::Failure
        );
    }

    /// A secret file saved with a byte order mark signs as the secret itself.
    #[test]
    fn a_leading_byte_order_mark_is_not_part_of_the_secret() {
        let s = Secret::from_text(b"\xEF\xBB\xBFwhsec_test_4f9a2c71e0\r\n", "w.txt").unwrap();
        assert_eq!(
            s.signature_header(b"x"),
            secret("whsec_test_4f9a2c71e0").signature_header(b"x")
        );
        assert!(Secret::from_text(b"\xEF\xBB\xBF \n", "e").is_err());
    }

    #[test]
    fn added_newline_is_diagnosed() {
        let body = b"{\"timestamp\":\"2024-09-26T10:02:15Z\"}";
        let sig = Signature::parse(&secret("k").signature_header(body)).unwrap();
        let mut with_newline = body.to_vec();
        with_newline.extend_from_slice(b"\r\n");
        let e = verify_signature("b", &with_newline, &sig, &[secret("k")]).unwrap_err();
        assert!(
            e.hint().unwrap().contains("WITHOUT its final newline"),
            "{:?}",
            e.hint()
        );
        let e = verify_signature("b", b"{}\n", &sig, &[secret("k")]).unwrap_err();
        assert!(!e.hint().unwrap().contains("WITHOUT"), "{:?}", e.hint());
    }
}
