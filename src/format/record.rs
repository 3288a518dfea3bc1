//! One row of an export: parse the line, build the AAD, open the AES-256-GCM box, check the JSON.
//!
//! A line is `{"encrypted_data":"<key_id>:<iv_b64>:<blob_b64>"}` (SPEC section 1). The field value
//! is split from the right, so a `key_id` may itself contain `:`. `iv_b64` MUST decode to exactly
//! 12 bytes; `blob_b64` is `ciphertext || tag` with the 16-byte tag last. Base64 is the standard
//! alphabet, padding optional.
//!
//! The AAD is exactly the UTF-8 bytes of `stream:{customer_id}:{row_index}`, `row_index` being the
//! zero-based index of the non-blank line, in decimal without leading zeros. For customer id
//! `cust_123` and row 7 that is the 17 bytes `stream:cust_123:7`.
//!
//! Opening a row depends on nothing but the line, its index, the keys and the customer id (the
//! key id only orders the keys tried: [`crate::format::keyset`]), so rows can be opened on any
//! thread in any order. A row that fails releases none of its bytes. The tag
//! is not checked before the row is decrypted: `ring` decrypts the ciphertext in place in the
//! output buffer while it computes the tag, compares the tags after that, and on a mismatch
//! overwrites the decrypted bytes with zeros before it returns the error (see
//! [`Cipher::open_in_place`]; a test in `aead` pins it). On any error the output buffer is then
//! wiped again (`zeroize`) and cut back to where the row started.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use zeroize::Zeroize;

use crate::error::{Diagnosis, RowError};
use crate::format::aead::Cipher;
pub use crate::format::aead::{NONCE_LEN, TAG_LEN};
use crate::format::keyset::{InputKeyIds, KeyIndex, KeySet, SetKey, Step};

/// How far (in row indices, each way) a failing row is tried at other indices to explain why.
const DIAGNOSE_WINDOW: u64 = 1024;
/// Upper bound on the bytes re-authenticated while diagnosing one failure.
const DIAGNOSE_BUDGET_BYTES: u64 = 256 * 1024 * 1024;

/// The base64 engine: standard alphabet, padding optional, SIMD where the CPU has it (detected at
/// run time, so one binary serves every CPU).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub type B64 = base64::engine::Simd;
/// The base64 engine (scalar on this architecture).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub type B64 = base64::engine::GeneralPurpose;

fn b64_config() -> base64::engine::GeneralPurposeConfig {
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
}

/// A base64 engine that accepts standard base64 with or without padding.
pub fn b64_engine() -> B64 {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        base64::engine::Simd::standard(b64_config())
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, b64_config())
    }
}

/// `(key_id, iv_b64, blob_b64)`, borrowed from a line's `encrypted_data` value.
pub type Parts<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// The parts of one line, borrowed from it where possible.
#[derive(Debug, PartialEq, Eq)]
pub struct Fields<'a> {
    /// The whole `encrypted_data` value (owned only when the JSON used escapes).
    value: Cow<'a, [u8]>,
}

impl<'a> Fields<'a> {
    /// Split into `(key_id, iv_b64, blob_b64)`, from the right.
    pub fn split(&self) -> Result<Parts<'_>, RowError> {
        let v: &[u8] = &self.value;
        let last = memchr::memrchr(b':', v);
        let prev = last.and_then(|i| memchr::memrchr(b':', &v[..i]));
        match (prev, last) {
            (Some(p), Some(l)) => Ok((&v[..p], &v[p + 1..l], &v[l + 1..])),
            _ => Err(RowError::Malformed(
                "encrypted_data is not of the form <key_id>:<iv_b64>:<blob_b64>".into(),
            )),
        }
    }
}

/// The slow path's view of a line: any JSON object with a string `encrypted_data`.
#[derive(serde::Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    encrypted_data: Cow<'a, str>,
}

/// What is wrong with the base64 of a line's `iv` or `blob`, in the user's terms rather than the
/// decoder's (`Invalid symbol 95, offset 7.`, `Output slice too small`): issue 12, item 9. The
/// offending character is named only when it is printable ASCII (the line is untrusted text).
fn base64_problem(part: &str, text: &[u8], e: &base64::DecodeSliceError) -> String {
    use base64::{DecodeError, DecodeSliceError};
    let character = |b: u8| match b {
        b'!'..=b'~' => format!("'{}'", char::from(b)),
        _ => format!("byte 0x{b:02x}"),
    };
    match e {
        DecodeSliceError::OutputSliceTooSmall => format!(
            "{part} is too long: it decodes to more than the {} bytes it must have",
            NONCE_LEN
        ),
        DecodeSliceError::DecodeError(DecodeError::InvalidByte(at, b)) => {
            // The first character outside the alphabet, whichever the engine (SIMD or not)
            // happened to report; a misplaced '=' is the engine's to name.
            let first = text
                .iter()
                .position(|&c| !(c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'='));
            let (at, b) = first.map_or((*at, *b), |i| (i, text[i]));
            format!(
                "{part} is not valid base64: {} at character {at} is not in the standard alphabet",
                character(b)
            )
        }
        DecodeSliceError::DecodeError(DecodeError::InvalidLength(_)) => format!(
            "{part} is not valid base64: its length is not a whole number of base64 groups (cut \
             short?)"
        ),
        DecodeSliceError::DecodeError(DecodeError::InvalidLastSymbol { offset, .. }) => format!(
            "{part} is not valid base64: its last character (at {offset}) is not a valid ending \
             (cut short or altered?)"
        ),
        DecodeSliceError::DecodeError(DecodeError::InvalidPadding) => {
            format!("{part} is not valid base64: its '=' padding is wrong")
        }
    }
}

/// A UTF-8 byte order mark, ignored at the start of an export (SPEC: inputs and containers).
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What stands before a line's value in the vendor's exact line shape.
pub const LINE_PREFIX: &[u8] = b"{\"encrypted_data\":\"";
/// What stands after it (the line ending not included).
pub const LINE_SUFFIX: &[u8] = b"\"}";

/// Parse one line (without its `\n`; a trailing `\r` is allowed) into its `encrypted_data` value.
///
/// The vendor's exact shape is recognised without a JSON parser; anything else (whitespace, other
/// fields, escapes) goes through `serde_json`, so both paths accept exactly the JSON objects with a
/// string `encrypted_data` field.
pub fn parse_line(line: &[u8]) -> Result<Fields<'_>, RowError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(inner) = exact_value(line) {
        // A value without quotes, backslashes or control bytes is its own JSON string text, as
        // long as it is UTF-8 (checked below on the key id; the base64 parts are checked by their
        // decoder, which accepts only ASCII).
        // Branch-free so that it vectorises: this runs over every byte of every row, and the
        // short-circuiting `any` was ~10% of all CPU time of a decrypt (issue 3 benchmark).
        let special = inner
            .iter()
            .fold(0u8, |acc, &b| acc | u8::from(escaped_in_json(b)));
        if special == 0 {
            return Ok(Fields {
                value: Cow::Borrowed(inner),
            });
        }
    }
    match serde_json::from_slice::<Line<'_>>(line) {
        Ok(Line {
            encrypted_data: Cow::Borrowed(s),
        }) => Ok(Fields {
            value: Cow::Borrowed(s.as_bytes()),
        }),
        Ok(Line {
            encrypted_data: Cow::Owned(s),
        }) => Ok(Fields {
            value: Cow::Owned(s.into_bytes()),
        }),
        Err(e) => Err(RowError::Malformed(json_problem(line, &e))),
    }
}

/// Say what is wrong with a line that is not a usable JSON object, without quoting its content.
fn json_problem(line: &[u8], e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => {
            let text = e.to_string();
            if text.starts_with("missing field") {
                "no \"encrypted_data\" field".into()
            } else if text.starts_with("invalid type") && line.trim_ascii_start().starts_with(b"{")
            {
                "\"encrypted_data\" is not a string".into()
            } else if text.starts_with("duplicate field") {
                "\"encrypted_data\" appears more than once".into()
            } else {
                format!("not a JSON object ({})", strip_position(&text))
            }
        }
        _ => format!("not valid JSON ({})", strip_position(&e.to_string())),
    }
}

/// serde_json appends " at line 1 column N"; keep the column, drop the always-1 line.
fn strip_position(text: &str) -> String {
    text.replace(" at line 1 column ", " at column ")
}

/// What opening a row learned besides its plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened<'a> {
    /// The row's informational key id, unescaped: borrowed from the line, or (only when the line
    /// spelled it with JSON escapes such as `\/`) a copy.
    pub key_id: Cow<'a, [u8]>,
    /// The row's nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The key that opened it, in the opener's [`KeySet`].
    pub key: KeyIndex,
}

/// The AADs of one customer's rows, `stream:{customer_id}:{row}`, built in one reused buffer.
#[derive(Debug, Clone)]
pub struct Aad {
    /// `stream:{customer_id}:` and, after [`Aad::for_row`], the row index.
    bytes: Vec<u8>,
    prefix_len: usize,
}

impl Aad {
    /// The AADs for `customer_id`.
    pub fn new(customer_id: &str) -> Aad {
        let bytes = format!("stream:{customer_id}:").into_bytes();
        Aad {
            prefix_len: bytes.len(),
            bytes,
        }
    }

    /// The AAD bytes of `row`.
    pub fn for_row(&mut self, row: u64) -> &[u8] {
        self.bytes.truncate(self.prefix_len);
        push_decimal(&mut self.bytes, row);
        &self.bytes
    }
}

/// Opens rows for one customer id with a set of keys (one key, or several: see
/// [`crate::format::keyset`]). Cheap to clone for each worker thread.
#[derive(Clone)]
pub struct RowOpener {
    /// Shared, not copied, by every worker's opener: one key schedule per key to wipe, wherever
    /// it is.
    keys: Arc<KeySet>,
    /// The key ids this input asked key commands for (fresh for each input: [`Self::for_input`]).
    input: Arc<InputKeyIds>,
    /// The key id of this worker's last row and the key that opened it: every row with the same
    /// key id tries that key first, comparing one short key id and taking no lock. With a single
    /// key, that key for every key id, compared with nothing (the one-key path costs what it did
    /// before several keys, issue 15).
    last: Option<Last>,
    b64: B64,
    aad: Aad,
}

/// See [`RowOpener::last`].
#[derive(Clone)]
struct Last {
    /// `None`: any key id (the set's only key).
    key_id: Option<Vec<u8>>,
    index: KeyIndex,
    key: Arc<SetKey>,
}

impl RowOpener {
    /// An opener for rows encrypted with `cipher` for `customer_id`.
    pub fn new(cipher: Cipher, customer_id: &str) -> RowOpener {
        RowOpener::with_keys(Arc::new(KeySet::single(cipher, "the key")), customer_id)
    }

    /// An opener for rows encrypted with any of `keys` for `customer_id`.
    pub fn with_keys(keys: Arc<KeySet>, customer_id: &str) -> RowOpener {
        RowOpener {
            last: keys.sole().map(|(index, key)| Last {
                key_id: None,
                index,
                key,
            }),
            keys,
            input: Arc::default(),
            b64: b64_engine(),
            aad: Aad::new(customer_id),
        }
    }

    /// The same opener for another input: the same keys and what was learned about them, a fresh
    /// allowance of key ids for key commands.
    pub fn for_input(&self) -> RowOpener {
        RowOpener {
            input: Arc::default(),
            ..self.clone()
        }
    }

    /// The opener's keys.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Whether `line` authenticates as row `row` (its plaintext is wiped at once, never released).
    pub fn authenticates_as(&mut self, row: u64, line: &[u8]) -> bool {
        let mut scratch = Vec::new();
        let ok = self.open_into(row, line, &mut scratch).is_ok();
        scratch.zeroize();
        ok
    }

    /// The AAD bytes of `row` (for tests).
    pub fn aad_for(&mut self, row: u64) -> &[u8] {
        self.aad.for_row(row)
    }

    /// Open row `row` from `line` and append its plaintext (one line of JSON, no newline) to
    /// `out`. On any error `out` is wiped back to its length on entry.
    pub fn open_into<'l>(
        &mut self,
        row: u64,
        line: &'l [u8],
        out: &mut Vec<u8>,
    ) -> Result<Opened<'l>, RowError> {
        let start = out.len();
        let result = self.open_inner(row, line, out, start);
        if result.is_err() {
            out[start..].zeroize();
            out.truncate(start);
        }
        result
    }

    fn open_inner<'l>(
        &mut self,
        row: u64,
        line: &'l [u8],
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<Opened<'l>, RowError> {
        match self.open_plain(row, line, out, start)? {
            Some(opened) => Ok(opened),
            None => self.open_general(row, line, out, start),
        }
    }

    /// Open any line: the JSON parsed as [`parse_line`] does, every part checked with a message.
    fn open_general<'l>(
        &mut self,
        row: u64,
        line: &'l [u8],
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<Opened<'l>, RowError> {
        let fields = parse_line(line)?;
        let (key_id, iv_b64, blob_b64) = fields.split()?;
        if !is_utf8(key_id) {
            return Err(RowError::Malformed("key_id is not valid UTF-8".into()));
        }
        let nonce = match decode_nonce(iv_b64) {
            Some(nonce) => nonce,
            None => self.nonce_slow(iv_b64)?,
        };
        let tag = self.decode_blob(blob_b64, out, start)?;
        let key = self.open_decoded(row, key_id, &nonce, blob_b64, &tag, out, start)?;
        Ok(Opened {
            key_id: line_key_id(key_id, &fields, line),
            nonce,
            key,
        })
    }

    /// Open a line of the vendor's exact shape whose parts are plain: a key id with nothing JSON
    /// would escape, a 16-character IV and a blob that decode. `Ok(None)` (and `out` as on entry)
    /// for any other line, and for any part that does not decode: the general path then reads
    /// the line again and says what is wrong, so the two paths give the same answer on every
    /// line. No pass over the whole value looks for quotes, backslashes or control bytes:
    /// parts that decode hold only base64 characters, which JSON never escapes, and the key id is
    /// checked on its own. That pass was ~3% of a decrypt's CPU (issue 3).
    #[inline]
    fn open_plain<'l>(
        &mut self,
        row: u64,
        line: &'l [u8],
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<Option<Opened<'l>>, RowError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some((key_id, iv_b64, blob_b64)) = exact_value(line).and_then(split_plain) else {
            return Ok(None);
        };
        if key_id.iter().any(|&b| escaped_in_json(b)) || !is_utf8(key_id) {
            return Ok(None);
        }
        let Some(nonce) = decode_nonce(iv_b64) else {
            return Ok(None);
        };
        let Ok(tag) = self.decode_blob(blob_b64, out, start) else {
            out[start..].zeroize();
            out.truncate(start);
            return Ok(None);
        };
        let key = self.open_decoded(row, key_id, &nonce, blob_b64, &tag, out, start)?;
        Ok(Some(Opened {
            key_id: Cow::Borrowed(key_id),
            nonce,
            key,
        }))
    }

    /// Decode `blob_b64` (`ciphertext || tag`) into `out[start..]`, leaving the ciphertext there
    /// and returning the tag.
    #[inline]
    fn decode_blob(
        &self,
        blob_b64: &[u8],
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<[u8; TAG_LEN], RowError> {
        let estimate = blob_b64.len() / 4 * 3 + 3;
        out.resize(start + estimate, 0);
        let n = self
            .b64
            .decode_slice(blob_b64, &mut out[start..])
            .map_err(|e| RowError::Malformed(base64_problem("blob", blob_b64, &e)))?;
        if n < TAG_LEN {
            return Err(RowError::Malformed(format!(
                "blob decodes to {n} bytes, shorter than the 16-byte tag"
            )));
        }
        let ct_end = start + n - TAG_LEN;
        let tag: [u8; TAG_LEN] = out[ct_end..start + n].try_into().expect("16 bytes");
        out.truncate(ct_end);
        Ok(tag)
    }

    /// Authenticate and decrypt the ciphertext in `out[start..]` as row `row`, then check the
    /// plaintext (and compact it onto one line); the key that opened it. The hot path: a row
    /// with the key id of this worker's last row tries that row's key, and nothing else is done
    /// unless it fails.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn open_decoded(
        &mut self,
        row: u64,
        key_id: &[u8],
        nonce: &[u8; NONCE_LEN],
        blob_b64: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<KeyIndex, RowError> {
        let index = match &self.last {
            Some(last) if last.key_id.as_deref().is_none_or(|k| k == key_id) => {
                let aad = self.aad.for_row(row);
                if last
                    .key
                    .cipher()
                    .open_in_place(nonce, aad, &mut out[start..], tag)
                    .is_ok()
                {
                    last.index
                } else {
                    let tried = Some(last.index);
                    self.open_with_other_keys(row, key_id, tried, nonce, blob_b64, tag, out, start)?
                }
            }
            _ => self.open_with_other_keys(row, key_id, None, nonce, blob_b64, tag, out, start)?,
        };
        check_and_compact(out, start)?;
        Ok(index)
    }

    /// Try every key for the row in the key set's order (except `tried`, already tried, which
    /// left `out[start..]` zeroed), and remember the one that authenticates it (its plaintext is
    /// left in `out[start..]`, not yet checked); or say why none does: a key command that failed
    /// (no key at all for this key id), else what trying the keys at nearby row indices tells
    /// ([`Self::diagnose`]).
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn open_with_other_keys(
        &mut self,
        row: u64,
        key_id: &[u8],
        tried: Option<KeyIndex>,
        nonce: &[u8; NONCE_LEN],
        blob_b64: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<KeyIndex, RowError> {
        // Both paths check that a key id is UTF-8 before a row is opened.
        let id = std::str::from_utf8(key_id).unwrap_or_default();
        let mut keys: Vec<(KeyIndex, Arc<SetKey>)> = Vec::new();
        if let Some(index) = tried {
            keys.push((index, self.keys.get(index)));
        }
        // `out[start..]` holds the ciphertext until a key fails on it, then zeros.
        let mut zeroed = tried.is_some();
        let mut failed_command = None;
        for step in self.keys.plan(key_id) {
            let index = match step {
                Step::Key(index) => index,
                Step::Fetch(i) => match self.keys.fetched(i, id, &self.input) {
                    Ok(index) => index,
                    Err(failure) => {
                        failed_command.get_or_insert(failure);
                        continue;
                    }
                },
            };
            if keys.iter().any(|(i, _)| *i == index) {
                continue;
            }
            let key = self.keys.get(index);
            if zeroed {
                // The same bytes as before the first try, so the same ciphertext and tag.
                self.decode_blob(blob_b64, out, start)?;
            }
            let aad = self.aad.for_row(row);
            let opened = key
                .cipher()
                .open_in_place(nonce, aad, &mut out[start..], tag)
                .is_ok();
            if opened {
                self.keys.learn(key_id, index);
                self.last = Some(Last {
                    key_id: Some(key_id.to_vec()),
                    index,
                    key,
                });
                return Ok(index);
            }
            zeroed = true;
            keys.push((index, key));
        }
        // A key command that could not give its key for this key id: whether that key would have
        // opened the row is unknown, so the row is not called unauthentic.
        if let Some(failure) = failed_command {
            return Err(RowError::Key(Box::new(failure)));
        }
        let keys: Vec<Arc<SetKey>> = keys.into_iter().map(|(_, key)| key).collect();
        Err(RowError::Auth(
            self.diagnose(row, nonce, blob_b64, out, start, tag, &keys),
        ))
    }

    /// The nonce of an IV that is not 16 base64 characters: decoded by the engine, which says
    /// what is wrong with it, or (padded forms) decodes it.
    #[cold]
    fn nonce_slow(&self, iv_b64: &[u8]) -> Result<[u8; NONCE_LEN], RowError> {
        let mut iv = [0u8; 18];
        let n = self
            .b64
            .decode_slice(iv_b64, &mut iv)
            .map_err(|e| RowError::Malformed(base64_problem("iv", iv_b64, &e)))?;
        if n != NONCE_LEN {
            return Err(RowError::Malformed(format!(
                "iv decodes to {n} bytes; AES-GCM here needs a 12-byte nonce"
            )));
        }
        Ok(iv[..NONCE_LEN].try_into().expect("length checked"))
    }

    /// Try the failing ciphertext under nearby row indices, with each of `keys`, to tell a wrong
    /// key from moved lines. `out[start..]` is scratch of the ciphertext's length, `blob_b64` the
    /// ciphertext as read. The window is shared among the keys, so several keys cost no more.
    #[allow(clippy::too_many_arguments)]
    fn diagnose(
        &mut self,
        row: u64,
        nonce: &[u8; NONCE_LEN],
        blob_b64: &[u8],
        out: &mut Vec<u8>,
        start: usize,
        tag: &[u8; TAG_LEN],
        keys: &[Arc<SetKey>],
    ) -> Diagnosis {
        let ct_len = out.len() - start;
        let per_try = ct_len as u64 + 64;
        let window =
            DIAGNOSE_WINDOW.min(DIAGNOSE_BUDGET_BYTES / per_try / 2) / keys.len().max(1) as u64;
        let lo = row.saturating_sub(window);
        let hi = row.saturating_add(window);
        // Nearest indices first, so the simplest explanation wins.
        for distance in 1..=window {
            for candidate in [row.checked_add(distance), row.checked_sub(distance)] {
                let Some(candidate) = candidate.filter(|c| (lo..=hi).contains(c)) else {
                    continue;
                };
                for key in keys {
                    // The same bytes as before the first try, so the same ciphertext length.
                    if self.decode_blob(blob_b64, out, start).is_err() {
                        return Diagnosis::Unknown;
                    }
                    // On failure the buffer is zeros; on success it holds this row's plaintext
                    // under another index, which is wiped straight away (it is never released).
                    let aad = self.aad.for_row(candidate);
                    if key
                        .cipher()
                        .open_in_place(nonce, aad, &mut out[start..], tag)
                        .is_ok()
                    {
                        out[start..].zeroize();
                        return Diagnosis::Displaced { actual: candidate };
                    }
                }
            }
        }
        if row == 0 {
            Diagnosis::WrongKeyOrCustomer
        } else {
            Diagnosis::Unknown
        }
    }
}

/// The `encrypted_data` value of a line (without its `\r`) in the vendor's exact shape, as it
/// stands between the quotes: JSON text, not yet known to need no unescaping.
#[inline]
fn exact_value(line: &[u8]) -> Option<&[u8]> {
    line.strip_prefix(LINE_PREFIX)?.strip_suffix(LINE_SUFFIX)
}

/// Whether JSON text must escape byte `b` inside a string (a quote, a backslash or a control
/// byte). Branch-free, so that a fold over a whole value vectorises.
#[inline]
fn escaped_in_json(b: u8) -> bool {
    (b == b'"') | (b == b'\\') | (b < 0x20)
}

/// Whether `bytes` are UTF-8 (ASCII checked first: key ids nearly always are).
#[inline]
fn is_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

/// `(key_id, iv_b64, blob_b64)` of a value, split from the right (see [`Fields::split`]), or `None`
/// without two colons. The usual 16-character IV is found from the left, past a key id without
/// colons, instead of searching the ~550-byte blob backwards for its colon; when the blob then
/// decodes (holding no colon), that is the split from the right.
#[inline]
fn split_plain(v: &[u8]) -> Option<Parts<'_>> {
    let p = memchr::memchr(b':', v)?;
    if v.get(p + 17) == Some(&b':') {
        return Some((&v[..p], &v[p + 1..p + 17], &v[p + 18..]));
    }
    let l = memchr::memrchr(b':', v)?;
    let p = memchr::memrchr(b':', &v[..l])?;
    Some((&v[..p], &v[p + 1..l], &v[l + 1..]))
}

/// The key id, borrowed from the line when the line needed no unescaping; otherwise (rare: a
/// writer that escapes `/` or non-ASCII) copied out of the unescaped value.
fn line_key_id<'l>(key_id: &[u8], fields: &Fields<'_>, line: &'l [u8]) -> Cow<'l, [u8]> {
    match fields.value {
        Cow::Borrowed(_) => {
            // key_id points into `line`: recover the same bytes with `line`'s lifetime.
            let offset = key_id.as_ptr() as usize - line.as_ptr() as usize;
            Cow::Borrowed(&line[offset..offset + key_id.len()])
        }
        Cow::Owned(_) => Cow::Owned(key_id.to_vec()),
    }
}

/// Standard base64 digit values; 0xFF for bytes outside the alphabet.
const B64_DIGITS: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// A 12-byte nonce from exactly 16 standard base64 characters (the vendor's IV, which needs no
/// padding), or `None` for anything else, which the engine then decodes or explains. The engine
/// spent a scalar call on every row's 16-character IV: ~3% of decrypt's CPU (issue 3).
#[inline]
pub fn decode_nonce(iv_b64: &[u8]) -> Option<[u8; NONCE_LEN]> {
    let chars: &[u8; 16] = iv_b64.try_into().ok()?;
    let mut nonce = [0u8; NONCE_LEN];
    let mut bad = 0u8;
    for (quad, out) in chars.chunks_exact(4).zip(nonce.chunks_exact_mut(3)) {
        let d = quad.iter().map(|&c| B64_DIGITS[c as usize]);
        let mut word = 0u32;
        for v in d {
            bad |= v;
            word = word << 6 | u32::from(v & 0x3F);
        }
        out.copy_from_slice(&word.to_be_bytes()[1..]);
    }
    // 0xFF has the high bit set; every digit value is below 64.
    (bad < 64).then_some(nonce)
}

/// Append `n` in decimal.
pub fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// Check that `out[start..]` is one UTF-8 JSON document, and compact it onto one line if it spans
/// several (SPEC section 3). A single-line plaintext is left byte-for-byte as it is.
/// What is wrong with a plaintext that is not JSON. `NaN`, `Infinity` and `-Infinity` are named
/// (issue 12, item 10): Python's `json.dumps` writes them for float NaN and infinities unless told
/// `allow_nan=False`, and the vendor's own sample reads them back, but they are not JSON and most
/// JSON readers (jq 1.7, serde_json, JavaScript's `JSON.parse`) refuse them. Rows holding them are
/// refused rather than passed on: a pass-through flag would hand invalid JSON to the next tool
/// in the pipe, and the sender is the one to fix. Only the token is named, never other bytes.
fn plaintext_problem(plaintext: &[u8], e: &crate::format::json::JsonError) -> String {
    let at = |i: usize, token: &[u8]| plaintext.get(i..).is_some_and(|t| t.starts_with(token));
    let token = [&b"-Infinity"[..], b"NaN", b"Infinity"]
        .into_iter()
        .find(|t| at(e.offset, t) || (e.offset > 0 && at(e.offset - 1, t) && t[0] == b'-'));
    match token {
        Some(token) => {
            format!(
            "{} at byte {} is not JSON: JSON has no NaN or Infinity (Python's json.dumps writes \
             them for float NaN and infinities unless allow_nan=False)",
            String::from_utf8_lossy(token),
            if at(e.offset, token) { e.offset } else { e.offset - 1 }
        )
        }
        None => e.to_string(),
    }
}

fn check_and_compact(out: &mut Vec<u8>, start: usize) -> Result<(), RowError> {
    let plaintext = &out[start..];
    // UTF-8, JSON and line breaks in one pass (see `json`).
    let breaks = crate::format::json::validate_breaks(plaintext)
        .map_err(|e| RowError::Plaintext(plaintext_problem(plaintext, &e)))?;
    if breaks {
        let mut kept = start;
        let mut in_string = false;
        let mut escaped = false;
        for i in start..out.len() {
            let b = out[i];
            let keep = if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                true
            } else {
                if b == b'"' {
                    in_string = true;
                }
                !matches!(b, b' ' | b'\t' | b'\n' | b'\r')
            };
            if keep {
                out[kept] = b;
                kept += 1;
            }
        }
        out[kept..].zeroize();
        out.truncate(kept);
    }
    Ok(())
}

/// Seal one plaintext as a whole vendor-format line, `{"encrypted_data":"<key_id>:<iv>:<blob>"}`
/// without a line ending, appended to `out`. The nonce MUST be unique for every row sealed under
/// one key; `key_id` MUST NOT hold characters that JSON would escape (use [`seal_value`] and a JSON
/// serialiser for such ids).
pub fn seal_line(
    cipher: &Cipher,
    aad: &[u8],
    nonce: &[u8; NONCE_LEN],
    key_id: &str,
    plaintext: &[u8],
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(LINE_PREFIX);
    seal_value(cipher, aad, nonce, key_id, plaintext, scratch, out);
    out.extend_from_slice(LINE_SUFFIX);
}

/// Seal one plaintext as a line's value, `key_id:iv_b64:blob_b64` (standard padded base64), with
/// no JSON around it, appended to `out`. The nonce MUST be unique for every row sealed under one
/// key. `scratch` is left wiped; only the bytes used are touched, so a large one costs nothing.
pub fn seal_value(
    cipher: &Cipher,
    aad: &[u8],
    nonce: &[u8; NONCE_LEN],
    key_id: &str,
    plaintext: &[u8],
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) {
    scratch.clear();
    scratch.extend_from_slice(plaintext);
    let tag = cipher.seal_in_place(nonce, aad, &mut scratch[..]);
    scratch.extend_from_slice(&tag);
    out.extend_from_slice(key_id.as_bytes());
    out.push(b':');
    push_base64(out, nonce);
    out.push(b':');
    push_base64(out, scratch);
    scratch.as_mut_slice().zeroize();
    scratch.clear();
}

/// Append the standard padded base64 of `bytes`, encoded in place.
fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    use base64::engine::general_purpose::STANDARD;
    let start = out.len();
    out.resize(
        start + base64::encoded_len(bytes.len(), true).expect("fits in usize"),
        0,
    );
    let n = STANDARD
        .encode_slice(bytes, &mut out[start..])
        .expect("sized by encoded_len");
    out.truncate(start + n);
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The 16-character fast path agrees with the base64 engine on every input: the same
        /// nonce when both decode it, and `None` exactly when the engine would not produce a
        /// 12-byte nonce from it.
        #[test]
        fn decode_nonce_agrees_with_the_engine(
            nonce in proptest::prelude::any::<[u8; 12]>(),
            noise in "[A-Za-z0-9+/=_\\-. \u{e9}]{0,20}",
        ) {
            use base64::Engine as _;
            let b64 = b64_engine();
            let encoded = base64::engine::general_purpose::STANDARD.encode(nonce);
            proptest::prop_assert_eq!(decode_nonce(encoded.as_bytes()), Some(nonce));
            let mut buf = [0u8; 18];
            let engine = match b64.decode_slice(noise.as_bytes(), &mut buf) {
                Ok(12) => Some(<[u8; 12]>::try_from(&buf[..12]).unwrap()),
                _ => None,
            };
            match decode_nonce(noise.as_bytes()) {
                Some(fast) => proptest::prop_assert_eq!(Some(fast), engine),
                // Only non-16-character IVs (padded or not) are left to the engine.
                None => proptest::prop_assert!(engine.is_none() || noise.len() != 16),
            }
        }
    }

    #[test]
    fn decode_nonce_takes_only_sixteen_alphabet_characters() {
        assert_eq!(
            decode_nonce(b"AAECAwQFBgcICQoL"),
            Some([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
        );
        assert_eq!(decode_nonce(b"////////////////"), Some([0xFF; 12]));
        assert_eq!(decode_nonce(b"AAECAwQFBgcICQo"), None);
        assert_eq!(decode_nonce(b"AAECAwQFBgcICQoLA"), None);
        assert_eq!(decode_nonce(b"AAECAwQFBgcICQo="), None);
        assert_eq!(decode_nonce(b"AAECAwQFBgcICQo_"), None);
        assert_eq!(decode_nonce(b"AAECAwQFBgc\xC3\xA9CQoL"), None);
    }

    fn opener(cid: &str) -> RowOpener {
        RowOpener::new(Cipher::new(&[9u8; 32]), cid)
    }

    fn line_for(cid: &str, row: u64, key_id: &str, plaintext: &[u8]) -> Vec<u8> {
        let aad = opener(cid).aad_for(row).to_vec();
        let mut line = Vec::new();
        seal_line(
            &Cipher::new(&[9u8; 32]),
            &aad,
            &[3u8; 12],
            key_id,
            plaintext,
            &mut Vec::new(),
            &mut line,
        );
        line
    }

    #[test]
    fn aad_is_exactly_stream_customer_row() {
        let mut o = opener("cust_123");
        assert_eq!(o.aad_for(7), b"stream:cust_123:7");
        assert_eq!(o.aad_for(0), b"stream:cust_123:0");
        assert_eq!(o.aad_for(u64::MAX), b"stream:cust_123:18446744073709551615");
        let mut o = opener("cüst:Ω");
        assert_eq!(o.aad_for(10), "stream:cüst:Ω:10".as_bytes());
    }

    #[test]
    fn split_is_from_the_right() {
        let f = parse_line(br#"{"encrypted_data":"a:b:c:IV:BLOB"}"#).unwrap();
        assert_eq!(
            f.split().unwrap(),
            (&b"a:b:c"[..], &b"IV"[..], &b"BLOB"[..])
        );
        let f = parse_line(br#"{"encrypted_data":"IV:BLOB"}"#).unwrap();
        assert!(f.split().is_err());
    }

    #[test]
    fn slow_path_accepts_whitespace_escapes_and_other_fields() {
        let f = parse_line(br#" { "note": 1, "encrypted_data" : "k\u003ai:v:b" } "#).unwrap();
        assert_eq!(f.split().unwrap(), (&b"k:i"[..], &b"v"[..], &b"b"[..]));
    }

    #[test]
    fn malformed_lines_are_named() {
        let m = |l: &[u8]| match parse_line(l) {
            Err(RowError::Malformed(s)) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(m(b"{\"other\":1}"), "no \"encrypted_data\" field");
        assert_eq!(
            m(b"{\"encrypted_data\":5}"),
            "\"encrypted_data\" is not a string"
        );
        assert!(m(b"not json").starts_with("not valid JSON"));
        assert!(m(b"[1,2]").starts_with("not a JSON object"));
        assert_eq!(
            m(br#"{"encrypted_data":"a","encrypted_data":"b"}"#),
            "\"encrypted_data\" appears more than once"
        );
    }

    /// Issue 12, item 9: base64 errors are said in the user's terms, never the decoder's.
    #[test]
    fn bad_base64_is_described_in_the_users_terms() {
        let mut o = opener("c");
        let m = |o: &mut RowOpener, value: &str| {
            let line = format!("{{\"encrypted_data\":\"{value}\"}}");
            match o.open_into(0, line.as_bytes(), &mut Vec::new()) {
                Err(RowError::Malformed(s)) => s,
                other => panic!("{other:?}"),
            }
        };
        let blob = "A".repeat(40);
        assert_eq!(
            m(&mut o, &format!("k:AAAA_AAAAAAAAAAA:{blob}")),
            "iv is not valid base64: '_' at character 4 is not in the standard alphabet"
        );
        assert_eq!(
            m(&mut o, &format!("k:{}:{blob}", "A".repeat(40))),
            "iv is too long: it decodes to more than the 12 bytes it must have"
        );
        assert_eq!(
            m(&mut o, "k:AAAAAAAAAAAAAAAA:AAAAA"),
            "blob is not valid base64: its length is not a whole number of base64 groups (cut \
             short?)"
        );
        assert_eq!(
            m(
                &mut o,
                &format!("k:AAAAAAAAAAAAAAAA:{}\\u00e9", "A".repeat(39))
            ),
            "blob is not valid base64: byte 0xc3 at character 39 is not in the standard alphabet"
        );
        assert_eq!(
            m(&mut o, &format!("k:AAAAAAAAAAAAAAAA:{}B", "A".repeat(22))),
            "blob is not valid base64: its last character (at 22) is not a valid ending (cut \
             short or altered?)"
        );
    }

    /// Issue 12, item 10: NaN and Infinity are named, and the row is refused.
    #[test]
    fn nan_and_infinity_are_named() {
        let mut o = opener("c");
        for (plaintext, want) in [
            (&br#"{"a": NaN}"#[..], "NaN at byte 6"),
            (br#"{"a":Infinity}"#, "Infinity at byte 5"),
            (br#"[1,-Infinity]"#, "-Infinity at byte 3"),
        ] {
            let line = line_for("c", 0, "k", plaintext);
            let mut out = Vec::new();
            match o.open_into(0, &line, &mut out) {
                Err(RowError::Plaintext(s)) => assert_eq!(
                    s,
                    format!(
                        "{want} is not JSON: JSON has no NaN or Infinity (Python's json.dumps \
                         writes them for float NaN and infinities unless allow_nan=False)"
                    )
                ),
                other => panic!("{other:?}"),
            }
            assert!(out.is_empty());
        }
        let line = line_for("c", 0, "k", br#"{"a": Nope}"#);
        match o.open_into(0, &line, &mut Vec::new()) {
            Err(RowError::Plaintext(s)) => assert_eq!(s, "expected a value at byte 6"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_id_spelled_with_json_escapes_is_reported_unescaped() {
        let line = line_for("c", 2, "kid/2024", br#"{"a":1}"#);
        let mut o = opener("c");
        // As PHP's json_encode writes it: every `/` escaped, in the key id and the base64 alike.
        let escaped = String::from_utf8(line).unwrap().replace('/', "\\/");
        assert!(escaped.contains(r"kid\/2024:"));
        let mut out = Vec::new();
        let opened = o.open_into(2, escaped.as_bytes(), &mut out).unwrap();
        assert_eq!(&*opened.key_id, b"kid/2024");
        assert_eq!(out, br#"{"a":1}"#);
        // And `é` as `\u00e9`.
        let line = line_for("c", 0, "kid-é", b"1");
        let escaped = String::from_utf8(line).unwrap().replace('é', "\\u00e9");
        let opened = o.open_into(0, escaped.as_bytes(), &mut Vec::new()).unwrap();
        assert_eq!(&*opened.key_id, "kid-é".as_bytes());
    }

    #[test]
    fn round_trip_and_crlf() {
        let mut line = line_for("c", 4, "kid:x", br#"{"a":1}"#);
        let mut o = opener("c");
        let mut out = b"prev".to_vec();
        let opened = o.open_into(4, &line, &mut out).unwrap();
        assert_eq!(&*opened.key_id, b"kid:x");
        assert_eq!(out, br#"prev{"a":1}"#);
        line.push(b'\r');
        let mut out = Vec::new();
        o.open_into(4, &line, &mut out).unwrap();
        assert_eq!(out, br#"{"a":1}"#);
    }

    #[test]
    fn wrong_row_fails_and_releases_nothing() {
        let line = line_for("c", 5, "k", br#"{"secret":"x"}"#);
        let mut o = opener("c");
        let mut out = b"keep".to_vec();
        let err = o.open_into(3, &line, &mut out).unwrap_err();
        assert_eq!(err, RowError::Auth(Diagnosis::Displaced { actual: 5 }));
        assert_eq!(out, b"keep");
    }

    #[test]
    fn row_zero_with_wrong_customer_is_diagnosed() {
        let line = line_for("right", 0, "k", b"{}");
        let mut o = opener("wrong");
        let err = o.open_into(0, &line, &mut Vec::new()).unwrap_err();
        assert_eq!(err, RowError::Auth(Diagnosis::WrongKeyOrCustomer));
    }

    #[test]
    fn multi_line_plaintext_is_compacted_strings_kept() {
        let pt = b"{\n  \"a b\": \"x\\\" \\n y\",\r\n  \"n\": [1, 2]\n}\n";
        let line = line_for("c", 0, "k", pt);
        let mut out = Vec::new();
        opener("c").open_into(0, &line, &mut out).unwrap();
        assert_eq!(out, br#"{"a b":"x\" \n y","n":[1,2]}"#);
    }

    #[test]
    fn single_line_plaintext_is_untouched() {
        let line = line_for("c", 0, "k", br#"{ "a" : 1 }"#);
        let mut out = Vec::new();
        opener("c").open_into(0, &line, &mut out).unwrap();
        assert_eq!(out, br#"{ "a" : 1 }"#);
    }

    #[test]
    fn authentic_non_json_is_a_plaintext_error() {
        let line = line_for("c", 0, "k", b"hello");
        let mut out = Vec::new();
        let err = opener("c").open_into(0, &line, &mut out).unwrap_err();
        assert!(matches!(err, RowError::Plaintext(_)), "{err:?}");
        assert!(out.is_empty());
        let line = line_for("c", 0, "k", b"\"\xff\"");
        let err = opener("c").open_into(0, &line, &mut out).unwrap_err();
        assert_eq!(err, RowError::Plaintext("invalid UTF-8 at byte 1".into()));
    }

    #[test]
    fn bad_nonce_and_short_blob() {
        let mut o = opener("c");
        let e = o.open_into(
            0,
            br#"{"encrypted_data":"k:AAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAA=="}"#,
            &mut Vec::new(),
        );
        assert_eq!(
            e.unwrap_err(),
            RowError::Malformed("iv decodes to 8 bytes; AES-GCM here needs a 12-byte nonce".into())
        );
        let e = o.open_into(
            0,
            br#"{"encrypted_data":"k:AAAAAAAAAAAAAAAA:AAAA"}"#,
            &mut Vec::new(),
        );
        assert_eq!(
            e.unwrap_err(),
            RowError::Malformed("blob decodes to 3 bytes, shorter than the 16-byte tag".into())
        );
    }

    /// The shortcut for plain lines gives exactly the general path's answer (plaintext, key id,
    /// nonce, or error) wherever it answers, and otherwise leaves `out` as it was: on every
    /// single-byte replacement and insertion of a line, with bytes that JSON escapes, that base64
    /// refuses or pads with, colons, and non-ASCII.
    #[test]
    fn plain_shortcut_agrees_with_the_general_path() {
        let base = line_for("c", 2, "kid", br#"{"a":1}"#);
        let with_colon = line_for("c", 2, "k:i:d", br#"{"a":1}"#);
        let escaped = String::from_utf8(base.clone())
            .unwrap()
            .replacen('/', "\\/", 1)
            .into_bytes();
        let fillers = [
            b'"', b'\\', b':', b'=', b'A', b'/', b'+', 1, b' ', 0xC3, b'\r',
        ];
        let mut lines = vec![base.clone(), with_colon.clone(), escaped];
        for l in [&base, &with_colon] {
            for i in 0..=l.len() {
                for &f in &fillers {
                    let mut inserted = l.clone();
                    inserted.insert(i, f);
                    lines.push(inserted);
                    if i < l.len() {
                        let mut replaced = l.clone();
                        replaced[i] = f;
                        lines.push(replaced);
                    }
                }
            }
        }
        let mut o = opener("c");
        let mut answered = 0;
        for line in &lines {
            let mut fast = b"prev".to_vec();
            let mut general = b"prev".to_vec();
            let want = o.open_general(2, line, &mut general, 4);
            if want.is_err() {
                general.truncate(4);
            }
            match o.open_plain(2, line, &mut fast, 4) {
                Ok(Some(got)) => {
                    answered += 1;
                    assert_eq!(Ok(got), want, "{:?}", String::from_utf8_lossy(line));
                    assert_eq!(fast, general);
                }
                Ok(None) => assert_eq!(fast, b"prev"),
                Err(e) => {
                    answered += 1;
                    assert_eq!(Err(e), want, "{:?}", String::from_utf8_lossy(line));
                }
            }
        }
        // Replacing a byte of the blob with a base64 character answers (and fails to open).
        assert!(answered > 300, "{answered}");
    }

    /// An opener with two keys, `[9; 32]` (the tests' usual key) second.
    fn two_key_opener(cid: &str) -> RowOpener {
        use crate::format::key::Key;
        let mut keys = KeySet::builder();
        keys.key(&Key::from_bytes([5; 32]), "five", None);
        keys.key(&Key::from_bytes([9; 32]), "nine", None);
        RowOpener::with_keys(Arc::new(keys.build()), cid)
    }

    #[test]
    fn with_several_keys_each_row_reports_the_key_that_opened_it() {
        let five = |row: u64, key_id: &str| {
            let aad = opener("c").aad_for(row).to_vec();
            let mut line = Vec::new();
            let cipher = Cipher::new(&[5u8; 32]);
            seal_line(
                &cipher,
                &aad,
                &[4u8; 12],
                key_id,
                b"5",
                &mut Vec::new(),
                &mut line,
            );
            line
        };
        let mut o = two_key_opener("c");
        // Rows switch key, with and without a new key id, and back.
        let rows = [
            (line_for("c", 0, "k", b"9"), 1, "9"),
            (five(1, "k"), 0, "5"),
            (five(2, "k5"), 0, "5"),
            (line_for("c", 3, "k5", b"9"), 1, "9"),
            (line_for("c", 4, "k", b"9"), 1, "9"),
        ];
        for (row, (line, key, plaintext)) in rows.iter().enumerate() {
            let mut out = Vec::new();
            let opened = o.open_into(row as u64, line, &mut out).unwrap();
            assert_eq!((opened.key, out.as_slice()), (*key, plaintext.as_bytes()));
        }
        assert_eq!(o.keys().get(1).source(), "nine");
    }

    #[test]
    fn with_several_keys_a_failure_is_diagnosed_with_each() {
        // Sealed with the second key as row 5, read as row 3.
        let line = line_for("c", 5, "k", br#"{"secret":"x"}"#);
        let mut out = b"keep".to_vec();
        let err = two_key_opener("c")
            .open_into(3, &line, &mut out)
            .unwrap_err();
        assert_eq!(err, RowError::Auth(Diagnosis::Displaced { actual: 5 }));
        assert_eq!(out, b"keep");
        let err = two_key_opener("other")
            .open_into(0, &line_for("c", 0, "k", b"1"), &mut out)
            .unwrap_err();
        assert_eq!(err, RowError::Auth(Diagnosis::WrongKeyOrCustomer));
        assert_eq!(out, b"keep");
    }

    #[test]
    fn decimal() {
        for n in [0u64, 9, 10, 12345, u64::MAX] {
            let mut v = Vec::new();
            push_decimal(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
        }
    }
}
