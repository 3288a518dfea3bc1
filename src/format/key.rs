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

    /// Parse the base64 text of a key; a UTF-8 byte order mark at the start (Windows editors save
    /// one) and surrounding whitespace are ignored. `source` names where the text came from in
    /// errors. Text that is not base64 because of a character that does not show (another byte
    /// order mark, a zero-width or no-break space, a carriage return inside) is refused with that
    /// character's name and position, and never with the text itself.
    pub fn from_base64(text: &[u8], source: &KeySource) -> Result<Key> {
        let trimmed = text.strip_prefix(BOM).unwrap_or(text).trim_ascii();
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
            .map_err(|_| Error::Key(not_base64(source, text, trimmed)))?;
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

/// The UTF-8 encoding of U+FEFF, the byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why `trimmed` (the key text, without a leading byte order mark and surrounding whitespace) is
/// not base64, for the error. It names the first character outside the base64 alphabet and its
/// position when that character does not show on a screen, or shows as something else; a visible
/// one is only located, never shown: no character of a key reaches a message.
fn not_base64(source: &KeySource, text: &[u8], trimmed: &[u8]) -> String {
    if text.starts_with(b"\xFF\xFE") || text.starts_with(b"\xFE\xFF") {
        return format!(
            "{source} is UTF-16 text (it starts with a UTF-16 byte order mark); save it as UTF-8 \
             or ASCII"
        );
    }
    let base64 = |b: u8| b.is_ascii_alphanumeric() || b"+/=".contains(&b);
    let Some(at) = trimmed.iter().position(|&b| !base64(b)) else {
        return format!("{source} is not valid base64 (standard alphabet)");
    };
    // The position in characters, counted from the key's first, as an editor shows them.
    let position = String::from_utf8_lossy(&trimmed[..at]).chars().count() + 1;
    let rest = &trimmed[at..];
    let what = match rest[0] {
        b'\r' => "a carriage return (CR, U+000D)".to_owned(),
        b'\n' => "a line break (LF, U+000A)".to_owned(),
        b'\t' => "a tab (U+0009)".to_owned(),
        b' ' => "a space".to_owned(),
        b if b.is_ascii_control() => format!("the control character U+{b:04X}"),
        b if b.is_ascii() => {
            "a character outside the standard base64 alphabet (A-Z, a-z, 0-9, +, /, =)".to_owned()
        }
        _ => match utf8_char(rest) {
            Some(c) => match invisible_name(c) {
                Some(name) => format!("{name} (U+{:04X})", u32::from(c)),
                None => format!("the non-ASCII character U+{:04X}", u32::from(c)),
            },
            None => format!("the byte 0x{:02X}, which is not UTF-8 text", rest[0]),
        },
    };
    format!(
        "{source} is not valid base64 (standard alphabet): it holds {what} at character {position}"
    )
}

/// The first character of `bytes`, if they start with one in UTF-8.
fn utf8_char(bytes: &[u8]) -> Option<char> {
    let len = match bytes[0] {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    std::str::from_utf8(bytes.get(..len)?).ok()?.chars().next()
}

/// Names of the characters that copying, pasting and editors slip into text without showing them.
fn invisible_name(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{FEFF}' => "a byte order mark",
        '\u{200B}' => "a zero-width space",
        '\u{200C}' => "a zero-width non-joiner",
        '\u{200D}' => "a zero-width joiner",
        '\u{2060}' => "a word joiner",
        '\u{00A0}' => "a no-break space",
        '\u{202F}' => "a narrow no-break space",
        '\u{00AD}' => "a soft hyphen",
        '\u{2028}' => "a line separator",
        '\u{2029}' => "a paragraph separator",
        '\u{3000}' => "an ideographic space",
        '\u{2000}'..='\u{200A}' => "a typographic space",
        '\u{FFFD}' => "a replacement character",
        _ => return None,
    })
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
            "CIPHERSTREAM_KEY is not valid base64 (standard alphabet): it holds a space at \
             character 4"
        );
        // Only the alphabet's characters, in a way base64 does not allow.
        let e = Key::from_base64(b"AAAA=AAA", &SRC).unwrap_err();
        assert_eq!(
            e.to_string(),
            "CIPHERSTREAM_KEY is not valid base64 (standard alphabet)"
        );
    }

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    /// A key file saved by a Windows editor starts with a UTF-8 byte order mark: ignored.
    #[test]
    fn a_leading_byte_order_mark_is_ignored() {
        for text in [
            format!("\u{feff}{KEY}\r\n"),
            format!("\u{feff}  {KEY}\n"),
            format!("\u{feff}{KEY}"),
        ] {
            let k = Key::from_base64(text.as_bytes(), &SRC).unwrap();
            assert_eq!(k.bytes()[31], 31);
        }
    }

    /// An invisible character is named with its position, and no character of the key is shown.
    #[test]
    fn an_invisible_character_is_named_with_its_position() {
        let at = |i: usize, c: &str| format!("{}{c}{}", &KEY[..i], &KEY[i..]);
        let cases = [
            (at(10, "\u{200B}"), "a zero-width space (U+200B) at character 11"),
            (at(0, "\u{00A0}"), "a no-break space (U+00A0) at character 1"),
            (format!("\u{feff}{}", at(43, "\u{feff}")), "a byte order mark (U+FEFF) at character 44"),
            (at(20, "\r"), "a carriage return (CR, U+000D) at character 21"),
            (at(22, "\n"), "a line break (LF, U+000A) at character 23"),
            (at(5, " "), "a space at character 6"),
            (at(5, "\t"), "a tab (U+0009) at character 6"),
            (at(5, "\u{0}"), "the control character U+0000 at character 6"),
            (at(5, "\u{e9}"), "the non-ASCII character U+00E9 at character 6"),
            (at(7, "*"), "a character outside the standard base64 alphabet (A-Z, a-z, 0-9, +, /, =) at character 8"),
            (at(7, "-"), "a character outside the standard base64 alphabet (A-Z, a-z, 0-9, +, /, =) at character 8"),
            (format!("\u{e9}{}", at(3, "\u{200B}")), "the non-ASCII character U+00E9 at character 1"),
        ];
        for (text, what) in cases {
            let e = Key::from_base64(text.as_bytes(), &SRC).unwrap_err();
            let shown = e.to_string();
            assert_eq!(
                shown,
                format!(
                    "CIPHERSTREAM_KEY is not valid base64 (standard alphabet): it holds {what}"
                ),
                "{text:?}"
            );
            assert_eq!(e.exit().code(), 1);
            for piece in KEY.as_bytes().chunks(4) {
                assert!(
                    !shown.contains(std::str::from_utf8(piece).unwrap()),
                    "{shown}"
                );
            }
        }
        let mut bytes = KEY.as_bytes().to_vec();
        bytes.insert(9, 0xFF);
        let e = Key::from_base64(&bytes, &SRC).unwrap_err();
        assert_eq!(
            e.to_string(),
            "CIPHERSTREAM_KEY is not valid base64 (standard alphabet): it holds the byte 0xFF, \
             which is not UTF-8 text at character 10"
        );
    }

    /// Notepad's old "Unicode" (UTF-16) is named as such.
    #[test]
    fn utf16_text_is_named() {
        for bom in [[0xFF, 0xFE], [0xFE, 0xFF]] {
            let mut text = bom.to_vec();
            for b in KEY.bytes() {
                text.extend([b, 0]);
            }
            let e = Key::from_base64(&text, &SRC).unwrap_err();
            assert_eq!(
                e.to_string(),
                "CIPHERSTREAM_KEY is UTF-16 text (it starts with a UTF-16 byte order mark); save \
                 it as UTF-8 or ASCII"
            );
        }
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
