//! The customer's AES-256 key: how its text is checked, and how it is wiped.
//!
//! A key is the base64 text of 32 bytes (SPEC section 3); where that text comes from (files, the
//! environment) is the commands' business (`cmd::credentials`). The key bytes, and every buffer
//! that held their text, are zeroized when dropped; `Key` has no `Debug` that could print them.

use std::fmt;

use std::path::PathBuf;

use base64::Engine as _;
use sha2::Digest;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::format::aead::Cipher;

/// A 32-byte AES-256-GCM key. Wiped on drop; never printed.
pub struct Key(Zeroizing<[u8; 32]>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Where a key was found, for messages (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file, from `--key-file` or `CIPHERSTREAM_KEY_FILE`.
    File(PathBuf),
    /// An environment variable, by name.
    Env(&'static str),
    /// What a command printed (`--key-cmd`), named as messages name the command.
    Command(String),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "key file {}", p.display()),
            KeySource::Env(name) => f.write_str(name),
            KeySource::Command(command) => write!(f, "the output of {command}"),
        }
    }
}

impl Key {
    /// Wrap raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(Zeroizing::new(bytes))
    }

    /// Draw a fresh key from the operating system's generator.
    pub fn generate() -> Result<Key> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| {
            Error::Key(format!(
                "the operating system's random generator failed: {e}"
            ))
        })?;
        Ok(Key(bytes))
    }

    /// Parse the base64 text of a key; surrounding whitespace is ignored. `source` names where the
    /// text came from in errors.
    pub fn from_base64(text: &[u8], source: &KeySource) -> Result<Key> {
        let trimmed = text.trim_ascii();
        if trimmed.is_empty() {
            return Err(Error::Key(format!(
                "{source} is empty: expected a base64 key"
            )));
        }
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let mut decoded = Zeroizing::new(Vec::with_capacity(trimmed.len()));
        engine
            .decode_vec(trimmed, &mut decoded)
            .map_err(|_| Error::Key(format!("{source} is not valid base64 (standard alphabet)")))?;
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| {
            Error::Key(format!(
                "{source} decodes to {} bytes, but an AES-256 key needs exactly 32 bytes",
                decoded.len()
            ))
        })?;
        Ok(Key(Zeroizing::new(bytes)))
    }

    /// The raw key bytes, for this module's tests only: nothing else needs them outside a cipher.
    #[cfg(test)]
    fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// An AES-256-GCM cipher for this key (its key schedule is zeroized on drop).
    pub fn cipher(&self) -> Cipher {
        Cipher::new(&self.0)
    }

    /// A short public fingerprint: the first 8 bytes of SHA-256("cipherstream key id v1" || key), in
    /// hex. It identifies a key without revealing anything useful about it.
    pub fn fingerprint(&self) -> String {
        let mut h = sha2::Sha256::new();
        h.update(b"cipherstream key id v1\0");
        h.update(self.0.as_ref());
        let digest = h.finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key as base64 text plus a newline, in a buffer that is wiped on drop.
    pub fn to_base64_line(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(46));
        base64::engine::general_purpose::STANDARD.encode_string(self.0.as_ref(), &mut s);
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: KeySource = KeySource::Env("CIPHERSTREAM_KEY");

    #[test]
    fn accepts_padded_unpadded_and_whitespace() {
        let b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let k = Key::from_base64(format!("\n  {b64}\r\n\n").as_bytes(), &SRC).unwrap();
        assert_eq!(k.bytes()[31], 31);
        let k = Key::from_base64(b64.trim_end_matches('=').as_bytes(), &SRC).unwrap();
        assert_eq!(k.bytes()[1], 1);
    }

    #[test]
    fn wrong_length_says_found_and_needed() {
        let e = Key::from_base64(b"AAECAwQFBgcICQoLDA0ODw==", &SRC).unwrap_err();
        assert_eq!(
            e.to_string(),
            "CIPHERSTREAM_KEY decodes to 16 bytes, but an AES-256 key needs exactly 32 bytes"
        );
        assert_eq!(e.exit().code(), 1);
    }

    #[test]
    fn not_base64_is_a_key_error() {
        let e = Key::from_base64(b"not base64 at all!", &SRC).unwrap_err();
        assert_eq!(
            e.to_string(),
            "CIPHERSTREAM_KEY is not valid base64 (standard alphabet)"
        );
    }

    #[test]
    fn debug_does_not_show_key() {
        let k = Key::from_bytes([0x41; 32]);
        assert_eq!(format!("{k:?}"), "Key(<redacted>)");
    }

    #[test]
    fn fingerprint_is_stable_and_short() {
        let k = Key::from_bytes([0; 32]);
        assert_eq!(k.fingerprint().len(), 16);
        assert_eq!(k.fingerprint(), Key::from_bytes([0; 32]).fingerprint());
        assert_ne!(k.fingerprint(), Key::from_bytes([1; 32]).fingerprint());
    }

    #[test]
    fn base64_line_round_trips() {
        let k = Key::from_bytes([7; 32]);
        let line = k.to_base64_line();
        assert!(line.ends_with('\n'));
        assert_eq!(
            Key::from_base64(line.as_bytes(), &SRC).unwrap().bytes(),
            &[7; 32]
        );
    }
}
