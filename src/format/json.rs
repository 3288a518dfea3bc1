//! Checking that a decrypted row is one JSON document (RFC 8259), without building anything.
//!
//! [`validate`] accepts exactly the texts of RFC 8259's grammar: one value, with optional
//! whitespace (space, `\t`, `\n`, `\r` only) before and after it. Strings hold no raw byte below
//! 0x20 (DEL, 0x7F, is allowed) and only the escapes `\" \\ \/ \b \f \n \r \t \uXXXX` (hex digits in
//! either case); numbers are `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` of any length;
//! the literals are `true`, `false` and `null`. There is no nesting limit: containers are tracked on
//! a heap bit stack (one bit per level), never on the call stack.
//!
//! Decisions:
//!
//! - **Lone surrogates are accepted.** `"\uD800"` and `"\uDC00\uD800"` match RFC 8259's grammar
//!   (section 7 allows any four hex digits; section 8.2 only says such strings may make
//!   interoperability trouble). This is also what the previous check, serde_json's `IgnoredAny`,
//!   accepted, so no row that used to be released is now refused. A consumer that decodes strings
//!   into Unicode scalar values may reject such a row (serde_json's `Value` does); cipherstream
//!   passes the plaintext through byte for byte and never decodes it.
//! - **UTF-8 is checked in the same pass** (RFC 8259 section 8.1: JSON text is UTF-8). Outside
//!   strings every byte must be ASCII anyway, so only string bodies can hold other bytes, and each
//!   sequence there is checked where the scan meets it, by the standard library's own UTF-8 rules
//!   (`std::str::from_utf8` on at most 4 bytes). A separate `from_utf8` pass over every row cost
//!   ~4.5% of all decrypt CPU (issue 3). An invalid sequence in a string is reported as `invalid
//!   UTF-8 at byte N`, N being where `from_utf8` would stop; elsewhere such bytes are a grammar
//!   error at that byte.
//! - Errors carry a byte offset and a fixed description, never any of the document's bytes (the
//!   documents are health data).
//!
//! How: two implementations of the same grammar. The fast one ([`internals::fast_accepts`]) is one
//! iterative pass that only answers yes or no: it steps from token to token and skips string
//! bodies 16 bytes at a time with SSE2 on x86_64 (part of that architecture's baseline, so there is
//! no run-time detection), or 8 bytes at a time in a `u64` elsewhere; it never reads past the end of
//! the slice. When it says no, a plain byte-by-byte parser ([`internals::reference`]) finds where
//! and why, and its answer is the result. Unit tests, a proptest and a fuzz target check that the
//! two (and the 8-byte variant on x86_64 too) agree on every input, and that they agree with
//! serde_json.
//!
//! A block scanner in the style of simdjson (64-byte blocks classified into bit masks, string
//! bodies found by the prefix XOR of the quotes, the grammar checked with bit arithmetic) was
//! built and measured first: on rows of this shape (about 420 bytes, a token every 5 bytes,
//! strings of about 10 bytes) it ran about 3,600 instructions a row, of which the SSE2
//! classification alone took 1,400, against about 4,900 for serde_json's `IgnoredAny` and about
//! 2,300 for this scanner; it was slower, and it is not kept.

use std::fmt;

/// Why a document is not JSON: where the problem was found and what was expected or found there.
///
/// Displays as `<what> at byte <offset>`, e.g. `expected a value at byte 17`. It never holds any
/// byte of the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonError {
    /// Offset, in bytes from the start of the document, of the first byte that cannot be part of
    /// a JSON document there (the document's length when it ended too early).
    pub offset: usize,
    /// What was expected or found, e.g. `expected ':'` or `invalid escape`.
    pub what: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.offset)
    }
}

impl std::error::Error for JsonError {}

/// `Err` with a [`JsonError`] at `offset`.
fn fail<T>(offset: usize, what: &'static str) -> Result<T, JsonError> {
    Err(JsonError { offset, what })
}

const EXPECTED_VALUE: &str = "expected a value";
const EXPECTED_VALUE_OR_BRACKET: &str = "expected a value or ']'";
const EXPECTED_KEY: &str = "expected a string key";
const EXPECTED_KEY_OR_BRACE: &str = "expected a string key or '}'";
const EXPECTED_COLON: &str = "expected ':'";
const EXPECTED_COMMA_OR_BRACE: &str = "expected ',' or '}'";
const EXPECTED_COMMA_OR_BRACKET: &str = "expected ',' or ']'";
const END_OF_INPUT: &str = "unexpected end of input";
const TRAILING: &str = "trailing characters";
const CONTROL: &str = "control character in a string";
const BAD_ESCAPE: &str = "invalid escape";
const BAD_NUMBER: &str = "invalid number";
const BAD_LITERAL: &str = "invalid literal";
const BAD_UTF8: &str = "invalid UTF-8";

/// The character whose first byte, `doc[i]`, is 0x80 or above: the offset just past it if it is a
/// well-formed UTF-8 sequence, else `None`. The rules are `std::str::from_utf8`'s (the Unicode
/// Standard's table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF, nothing cut
/// off), written out because calling `from_utf8` on each character's 2 to 4 bytes cost ~2% of a
/// decrypt's CPU (issue 3). A test compares the two on every lead and second byte, with the
/// boundary values of the third and fourth.
#[inline]
fn utf8_char(doc: &[u8], i: usize) -> Option<usize> {
    // A continuation byte is 0x80..=0xBF: as `i8`, exactly the values below -64.
    let cont = |b: u8| (b as i8) < -64;
    let b0 = doc[i];
    match b0 {
        0xC2..=0xDF => cont(*doc.get(i + 1)?).then_some(i + 2),
        0xE0..=0xEF => {
            let &[b1, b2] = doc.get(i + 1..i + 3)? else {
                return None;
            };
            let first = match b0 {
                0xE0 => (0xA0..=0xBF).contains(&b1),
                0xED => (0x80..=0x9F).contains(&b1),
                _ => cont(b1),
            };
            (first && cont(b2)).then_some(i + 3)
        }
        0xF0..=0xF4 => {
            let &[b1, b2, b3] = doc.get(i + 1..i + 4)? else {
                return None;
            };
            let first = match b0 {
                0xF0 => (0x90..=0xBF).contains(&b1),
                0xF4 => (0x80..=0x8F).contains(&b1),
                _ => cont(b1),
            };
            (first && cont(b2) && cont(b3)).then_some(i + 4)
        }
        _ => None,
    }
}

/// Check that `doc` is exactly one UTF-8 JSON document (RFC 8259), optionally surrounded by
/// whitespace.
///
/// On error, the offset and description are those of the first problem in document order.
pub fn validate(doc: &[u8]) -> Result<(), JsonError> {
    validate_breaks(doc).map(|_| ())
}

/// As [`validate`], and whether the document holds a line break (`\n` or `\r`). In a valid
/// document those can only be whitespace between tokens (a string cannot hold them raw), so one
/// without any is a single line as it is. The scan sees every whitespace byte anyway: a second
/// pass to look for them cost ~1.5% of a decrypt's CPU (issue 3).
pub fn validate_breaks(doc: &[u8]) -> Result<bool, JsonError> {
    if let Some(breaks) = internals::fast_scan(doc) {
        return Ok(breaks);
    }
    let result = internals::reference(doc);
    debug_assert!(
        result.is_err(),
        "the fast scanner refused a document the reference parser accepts"
    );
    result.map(|()| memchr::memchr2(b'\n', b'\r', doc).is_some())
}

/// The two implementations behind [`validate`], public for the differential tests and the fuzz
/// target only.
#[doc(hidden)]
pub mod internals {
    pub use super::reference::validate as reference;

    /// The fast scanner's verdict on `doc`, scanning strings as [`super::validate`] does on this
    /// architecture (SSE2 on x86_64, 8 bytes at a time elsewhere): `None` if it refuses `doc`,
    /// else whether `doc` holds a line break (see [`super::validate_breaks`]).
    pub fn fast_scan(doc: &[u8]) -> Option<bool> {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        {
            super::scan::accepts::<true>(doc)
        }
        #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
        {
            super::scan::accepts::<false>(doc)
        }
    }

    /// Whether the fast scanner accepts `doc` (see [`fast_scan`]).
    pub fn fast_accepts(doc: &[u8]) -> bool {
        fast_scan(doc).is_some()
    }

    /// As [`fast_scan`], scanning strings 8 bytes at a time as on architectures without SSE2 (so
    /// that their fallback is tested on x86_64 too).
    pub fn portable_fast_scan(doc: &[u8]) -> Option<bool> {
        super::scan::accepts::<false>(doc)
    }

    /// Whether the portable variant of the fast scanner accepts `doc`.
    pub fn portable_fast_accepts(doc: &[u8]) -> bool {
        portable_fast_scan(doc).is_some()
    }
}

/// The number starting at `doc[at]`, for the reference parser; returns the offset just past it.
#[inline]
fn number(doc: &[u8], at: usize) -> Result<usize, JsonError> {
    let digits = |mut i: usize| {
        while matches!(doc.get(i), Some(b'0'..=b'9')) {
            i += 1;
        }
        i
    };
    let mut i = at;
    if doc.get(i) == Some(&b'-') {
        i += 1;
    }
    match doc.get(i) {
        Some(b'0') => {
            i += 1;
            if matches!(doc.get(i), Some(b'0'..=b'9')) {
                return fail(i, BAD_NUMBER);
            }
        }
        Some(b'1'..=b'9') => i = digits(i + 1),
        Some(_) => return fail(i, BAD_NUMBER),
        None => return fail(i, END_OF_INPUT),
    }
    if doc.get(i) == Some(&b'.') {
        i += 1;
        match doc.get(i) {
            Some(b'0'..=b'9') => i = digits(i + 1),
            Some(_) => return fail(i, BAD_NUMBER),
            None => return fail(i, END_OF_INPUT),
        }
    }
    if matches!(doc.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(doc.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        match doc.get(i) {
            Some(b'0'..=b'9') => i = digits(i + 1),
            Some(_) => return fail(i, BAD_NUMBER),
            None => return fail(i, END_OF_INPUT),
        }
    }
    Ok(i)
}

/// The kinds of the open containers, innermost last, one bit per level (1 = object). The 64
/// innermost levels live in `top`; deeper ones are spilled to the heap 64 at a time.
struct Kinds {
    depth: usize,
    top: u64,
    spill: Vec<u64>,
}

impl Kinds {
    fn new() -> Kinds {
        Kinds {
            depth: 0,
            top: 0,
            spill: Vec::new(),
        }
    }

    #[inline]
    fn push(&mut self, object: bool) {
        if self.depth != 0 && self.depth % 64 == 0 {
            self.spill.push(self.top);
            self.top = 0;
        }
        self.top = (self.top << 1) | u64::from(object);
        self.depth += 1;
    }

    /// Close the innermost container (there must be one).
    #[inline]
    fn pop(&mut self) {
        self.depth -= 1;
        self.top >>= 1;
        if self.depth != 0 && self.depth % 64 == 0 {
            self.top = self
                .spill
                .pop()
                .expect("a spilled level for every 64 open ones");
        }
    }

    /// Whether the innermost open container is an object (meaningless when none is open).
    #[inline]
    fn in_object(&self) -> bool {
        self.top & 1 == 1
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.depth == 0
    }
}

/// The reference parser: byte by byte, iterative, exact about where and why a document fails.
/// It is the specification the fast scanner is tested against, and it produces every error
/// [`validate`] returns.
mod reference {
    use super::*;

    fn skip_ws(doc: &[u8], mut i: usize) -> usize {
        while matches!(doc.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        i
    }

    fn end(doc: &[u8]) -> JsonError {
        JsonError {
            offset: doc.len(),
            what: END_OF_INPUT,
        }
    }

    /// The string whose opening quote is `doc[at]`; returns the offset just past its closing quote.
    fn string(doc: &[u8], at: usize) -> Result<usize, JsonError> {
        let mut i = at + 1;
        loop {
            match doc.get(i) {
                None => return Err(end(doc)),
                Some(b'"') => return Ok(i + 1),
                Some(b'\\') => {
                    i += 1;
                    match doc.get(i) {
                        None => return Err(end(doc)),
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 1,
                        Some(b'u') => {
                            for k in 1..=4 {
                                match doc.get(i + k) {
                                    None => return Err(end(doc)),
                                    Some(h) if h.is_ascii_hexdigit() => {}
                                    Some(_) => return fail(i + k, BAD_ESCAPE),
                                }
                            }
                            i += 5;
                        }
                        Some(_) => return fail(i, BAD_ESCAPE),
                    }
                }
                Some(&b) if b < 0x20 => return fail(i, CONTROL),
                Some(&b) if b >= 0x80 => match utf8_char(doc, i) {
                    Some(next) => i = next,
                    None => return fail(i, BAD_UTF8),
                },
                Some(_) => i += 1,
            }
        }
    }

    fn literal(doc: &[u8], at: usize, word: &[u8]) -> Result<usize, JsonError> {
        for (k, &expected) in word.iter().enumerate() {
            match doc.get(at + k) {
                None => return Err(end(doc)),
                Some(&b) if b == expected => {}
                Some(_) => return fail(at + k, BAD_LITERAL),
            }
        }
        Ok(at + word.len())
    }

    /// A key (whose opening quote is `doc[at]`) and the colon after it; returns the offset just
    /// past the colon.
    fn key_and_colon(doc: &[u8], at: usize) -> Result<usize, JsonError> {
        let i = skip_ws(doc, string(doc, at)?);
        match doc.get(i) {
            Some(b':') => Ok(i + 1),
            Some(_) => fail(i, EXPECTED_COLON),
            None => Err(end(doc)),
        }
    }

    /// See [`super::validate`]; this is the byte-by-byte implementation.
    pub fn validate(doc: &[u8]) -> Result<(), JsonError> {
        let mut kinds = Kinds::new();
        let mut i = 0;
        // What to say if the next value does not start like one.
        let mut expected = EXPECTED_VALUE;
        'value: loop {
            i = skip_ws(doc, i);
            let Some(&c) = doc.get(i) else {
                return Err(end(doc));
            };
            i = match c {
                b'{' => {
                    let j = skip_ws(doc, i + 1);
                    match doc.get(j) {
                        Some(b'}') => j + 1,
                        Some(b'"') => {
                            kinds.push(true);
                            i = key_and_colon(doc, j)?;
                            expected = EXPECTED_VALUE;
                            continue 'value;
                        }
                        Some(_) => return fail(j, EXPECTED_KEY_OR_BRACE),
                        None => return Err(end(doc)),
                    }
                }
                b'[' => {
                    let j = skip_ws(doc, i + 1);
                    match doc.get(j) {
                        Some(b']') => j + 1,
                        Some(_) => {
                            kinds.push(false);
                            i = j;
                            expected = EXPECTED_VALUE_OR_BRACKET;
                            continue 'value;
                        }
                        None => return Err(end(doc)),
                    }
                }
                b'"' => string(doc, i)?,
                b't' => literal(doc, i, b"true")?,
                b'f' => literal(doc, i, b"false")?,
                b'n' => literal(doc, i, b"null")?,
                b'-' | b'0'..=b'9' => number(doc, i)?,
                _ => return fail(i, expected),
            };
            // A value ended at `i`: close containers until one wants another value.
            loop {
                i = skip_ws(doc, i);
                if kinds.is_empty() {
                    return match i == doc.len() {
                        true => Ok(()),
                        false => fail(i, TRAILING),
                    };
                }
                let object = kinds.in_object();
                match doc.get(i) {
                    None => return Err(end(doc)),
                    Some(b',') if object => {
                        let j = skip_ws(doc, i + 1);
                        match doc.get(j) {
                            Some(b'"') => {
                                i = key_and_colon(doc, j)?;
                                expected = EXPECTED_VALUE;
                                continue 'value;
                            }
                            Some(_) => return fail(j, EXPECTED_KEY),
                            None => return Err(end(doc)),
                        }
                    }
                    Some(b',') => {
                        i += 1;
                        expected = EXPECTED_VALUE;
                        continue 'value;
                    }
                    Some(b'}') if object => {
                        kinds.pop();
                        i += 1;
                    }
                    Some(b']') if !object => {
                        kinds.pop();
                        i += 1;
                    }
                    Some(_) => {
                        let what = match object {
                            true => EXPECTED_COMMA_OR_BRACE,
                            false => EXPECTED_COMMA_OR_BRACKET,
                        };
                        return fail(i, what);
                    }
                }
            }
        }
    }
}

/// The fast path: one pass, byte by byte between tokens, with string bodies skipped 16 bytes at
/// a time (SSE2) or 8 at a time (SWAR). Yes or no only: when it says no, [`internals::reference`]
/// finds where and why.
mod scan {
    use super::Kinds;

    /// Whether `b` is JSON whitespace.
    #[inline(always)]
    fn is_ws(b: u8) -> bool {
        matches!(b, b' ' | b'\t' | b'\n' | b'\r')
    }

    /// The quotes of a 16-byte block, and its other special bytes (backslashes, control bytes and
    /// non-ASCII bytes), as bit masks (bit `k` for byte `k`).
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[inline(always)]
    fn masks_sse2(chunk: &[u8; 16]) -> (u32, u32) {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8,
        };
        // SAFETY: SSE2 is enabled for this target (the `cfg` on this function), so these
        // intrinsics are available. `_mm_loadu_si128` reads exactly the 16 bytes of `chunk` and
        // allows any alignment.
        unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // v <= 0x1F (unsigned) exactly when min(v, 0x1F) == v.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1F)), v);
            // The movemask of `v` itself is its bytes' high bits: the non-ASCII ones.
            let other = _mm_movemask_epi8(_mm_or_si128(backslash, control)) | _mm_movemask_epi8(v);
            (_mm_movemask_epi8(quote) as u32, other as u32)
        }
    }

    /// The offset of the first quote, backslash, control byte or non-ASCII byte at or after `i` in
    /// `doc`, or `doc.len()`; 16 bytes at a time with SSE2. (The scanner itself uses
    /// [`string_sse2`]; this is the same search, kept to test [`masks_sse2`] byte by byte.)
    #[cfg(all(test, target_arch = "x86_64", target_feature = "sse2"))]
    fn special_sse2(doc: &[u8], mut i: usize) -> usize {
        while let Some(chunk) = doc.get(i..i + 16) {
            let (quote, other) = masks_sse2(chunk.try_into().expect("16 bytes"));
            let mask = quote | other;
            if mask != 0 {
                return i + mask.trailing_zeros() as usize;
            }
            i += 16;
        }
        special_swar(doc, i)
    }

    /// The string whose body starts at `i`, as [`string`] with SSE2: a block whose first quote
    /// comes before any other special byte ends the string there, told by the two masks alone.
    /// Reading the quote back from memory and dispatching on it, as [`string`] does, put a load
    /// on the scan's critical path once per string (issue 3).
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[inline(always)]
    fn string_sse2(doc: &[u8], mut i: usize) -> Option<usize> {
        while let Some(chunk) = doc.get(i..i + 16) {
            let (quote, other) = masks_sse2(chunk.try_into().expect("16 bytes"));
            // The first quote and every bit below it; all bits when there is no quote.
            let upto_quote = quote ^ quote.wrapping_sub(1);
            if quote != 0 && other & upto_quote == 0 {
                return Some(i + quote.trailing_zeros() as usize + 1);
            }
            if other == 0 {
                i += 16;
                continue;
            }
            // Another special byte comes first.
            i += other.trailing_zeros() as usize;
            i = match doc[i] {
                b'\\' => escape(doc, i)?,
                0x80.. => super::utf8_char(doc, i)?,
                _ => return None,
            };
        }
        string::<false>(doc, i)
    }

    /// As `special_sse2`, 8 bytes at a time in a `u64` (any architecture).
    #[inline(always)]
    fn special_swar(doc: &[u8], mut i: usize) -> usize {
        const ONES: u64 = u64::MAX / 255;
        const HIGH: u64 = ONES << 7;
        while let Some(chunk) = doc.get(i..i + 8) {
            let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            let quote = x ^ (ONES * u64::from(b'"'));
            let backslash = x ^ (ONES * u64::from(b'\\'));
            // The high bit of a byte is set where the byte is zero (a quote or backslash in
            // `x`) or below 0x20 in `x`. A borrow can set it falsely, but only in bytes above a
            // true match, so the lowest set bit is exact.
            // Non-ASCII bytes are exactly those with their own high bit set (`x`).
            let mask = (quote.wrapping_sub(ONES) & !quote)
                | (backslash.wrapping_sub(ONES) & !backslash)
                | (x.wrapping_sub(ONES * 0x20) & !x)
                | x;
            let mask = mask & HIGH;
            if mask != 0 {
                return i + (mask.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        while let Some(&b) = doc.get(i) {
            if b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b) {
                break;
            }
            i += 1;
        }
        i
    }

    /// The offset just past the digits at or after `i`.
    #[inline(always)]
    fn digits(doc: &[u8], mut i: usize) -> usize {
        while let Some(b'0'..=b'9') = doc.get(i) {
            i += 1;
        }
        i
    }

    /// The number starting at `doc[i]` (a `-` or a digit); returns the offset just past it.
    #[inline(always)]
    fn number_end(doc: &[u8], mut i: usize) -> Option<usize> {
        if doc[i] == b'-' {
            i += 1;
        }
        i = match *doc.get(i)? {
            b'0' => i + 1,
            b'1'..=b'9' => digits(doc, i + 1),
            _ => return None,
        };
        match doc.get(i) {
            // After the integer part: a digit here is a leading zero's follower.
            Some(b'0'..=b'9') => None,
            Some(b'.') => {
                let j = digits(doc, i + 1);
                if j == i + 1 {
                    return None;
                }
                match doc.get(j) {
                    Some(b'e' | b'E') => exponent(doc, j),
                    _ => Some(j),
                }
            }
            Some(b'e' | b'E') => exponent(doc, i),
            _ => Some(i),
        }
    }

    /// The exponent whose `e` or `E` is `doc[i]`; returns the offset just past it.
    #[inline(always)]
    fn exponent(doc: &[u8], mut i: usize) -> Option<usize> {
        i += 1;
        if let Some(b'+' | b'-') = doc.get(i) {
            i += 1;
        }
        let j = digits(doc, i);
        if j == i {
            None
        } else {
            Some(j)
        }
    }

    /// The string whose body starts at `i` (just after its opening quote); returns the offset
    /// just past its closing quote.
    #[inline(always)]
    fn string<const SSE2: bool>(doc: &[u8], mut i: usize) -> Option<usize> {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        if SSE2 {
            return string_sse2(doc, i);
        }
        loop {
            i = special_swar(doc, i);
            match *doc.get(i)? {
                b'"' => return Some(i + 1),
                b'\\' => i = escape(doc, i)?,
                0x80.. => i = super::utf8_char(doc, i)?,
                _ => return None,
            }
        }
    }

    /// The escape whose backslash is `doc[i]`; returns the offset just past it.
    #[cold]
    fn escape(doc: &[u8], i: usize) -> Option<usize> {
        match *doc.get(i + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(i + 2),
            b'u' if doc.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => Some(i + 6),
            _ => None,
        }
    }

    /// The first byte at or after `i` that is not whitespace, and its offset; 0 and
    /// `doc.len()` at the end. (A 0 byte in the document is never accepted where this is used,
    /// and the end is told apart by the offset where it matters.) Sets `breaks` on skipping a
    /// `\n` or `\r`.
    #[inline(always)]
    fn peek(doc: &[u8], mut i: usize, breaks: &mut bool) -> (usize, u8) {
        loop {
            match doc.get(i) {
                Some(&b) if b <= b' ' && is_ws(b) => {
                    *breaks |= b == b'\n' || b == b'\r';
                    i += 1;
                }
                Some(&b) => return (i, b),
                None => return (i, 0),
            }
        }
    }

    /// A key whose opening quote is `doc[i]` and the colon after it; returns where the value
    /// after it starts, and its first byte (as [`peek`]).
    #[inline(always)]
    fn key<const SSE2: bool>(doc: &[u8], i: usize, breaks: &mut bool) -> Option<(usize, u8)> {
        let (j, c) = peek(doc, string::<SSE2>(doc, i + 1)?, breaks);
        match c {
            b':' => Some(peek(doc, j + 1, breaks)),
            _ => None,
        }
    }

    /// Whether `doc` is one JSON document, scanning strings with SSE2 if `SSE2` (when compiled
    /// in), else 8 bytes at a time: `None` if not, else whether it holds a line break (`\n` or
    /// `\r`, which can only be whitespace between tokens, since strings cannot hold them raw).
    #[inline(always)]
    pub(super) fn accepts<const SSE2: bool>(doc: &[u8]) -> Option<bool> {
        let mut kinds = Kinds::new();
        let mut breaks = false;
        let (mut i, mut c) = peek(doc, 0, &mut breaks);
        'value: loop {
            // A value starts at `i` with byte `c`.
            i = match c {
                b'"' => string::<SSE2>(doc, i + 1)?,
                b'{' => match peek(doc, i + 1, &mut breaks) {
                    (j, b'"') => {
                        kinds.push(true);
                        (i, c) = key::<SSE2>(doc, j, &mut breaks)?;
                        continue 'value;
                    }
                    (j, b'}') => j + 1,
                    _ => return None,
                },
                b'[' => match peek(doc, i + 1, &mut breaks) {
                    (j, b']') => j + 1,
                    next => {
                        kinds.push(false);
                        (i, c) = next;
                        continue 'value;
                    }
                },
                b't' | b'n' => {
                    // Four bytes compared at once: "true" or "null".
                    let word = match c {
                        b't' => u32::from_le_bytes(*b"true"),
                        _ => u32::from_le_bytes(*b"null"),
                    };
                    match doc.get(i..i + 4) {
                        Some(w) if u32::from_le_bytes(w.try_into().expect("4")) == word => i + 4,
                        _ => return None,
                    }
                }
                b'f' => match doc.get(i + 1..i + 5) {
                    Some(w) if w == b"alse" => i + 5,
                    _ => return None,
                },
                b'-' | b'0'..=b'9' => number_end(doc, i)?,
                _ => return None,
            };
            // A value ended at `i`: close containers until one wants another value.
            loop {
                let (j, d) = peek(doc, i, &mut breaks);
                if kinds.is_empty() {
                    return (j == doc.len()).then_some(breaks);
                }
                let object = kinds.in_object();
                match d {
                    b',' => {
                        let next = peek(doc, j + 1, &mut breaks);
                        (i, c) = match object {
                            false => next,
                            true if next.1 == b'"' => key::<SSE2>(doc, next.0, &mut breaks)?,
                            true => return None,
                        };
                        continue 'value;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return None,
                }
                kinds.pop();
                i = j + 1;
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The first quote, backslash or control byte at or after `i`, one byte at a time.
        fn naive(doc: &[u8], i: usize) -> usize {
            (i..doc.len())
                .find(|&k| matches!(doc[k], b'"' | b'\\' | 0..=0x1F | 0x80..))
                .unwrap_or(doc.len())
        }

        /// A quote and another special byte (or sequence) at every pair of positions of a string
        /// body, across the 16-byte blocks: the fast scanner (whose SSE2 string scan decides by
        /// which comes first in a block) accepts exactly what the reference parser accepts.
        #[test]
        fn quote_and_other_special_in_every_order() {
            let others: [&[u8]; 6] = [
                b"\\\\",
                b"\\\"",
                b"\\u00e9",
                b"\x01",
                "é".as_bytes(),
                b"\xFF",
            ];
            for other in others {
                for p in 0..40 {
                    for q in 0..40 {
                        let mut body = vec![b'a'; 40];
                        body[q] = b'"';
                        body.splice(p..p + 1, other.iter().copied());
                        let doc = [&b"[\""[..], &body, b"\",1]"].concat();
                        let want = super::super::reference::validate(&doc).is_ok();
                        assert_eq!(accepts::<true>(&doc).is_some(), want, "{other:?} {p} {q}");
                        assert_eq!(accepts::<false>(&doc).is_some(), want, "{other:?} {p} {q}");
                    }
                }
            }
        }

        /// Every byte value at every position of a 40-byte buffer, over fillers just above and
        /// below the special values (where a SWAR borrow could mislead), from several starts.
        #[test]
        fn string_scanners_find_exactly_the_first_special_byte() {
            for filler in [b'a', 0x20, 0x21, 0x23, 0x5D, 0x7F, 0x80, 0xFF] {
                for v in 0..=255u8 {
                    for p in 0..40 {
                        let mut doc = vec![filler; 40];
                        doc[p] = v;
                        // A second candidate later, so a false match after the first shows.
                        doc[39] = b'"';
                        for i in [0, 1, 7, 8, 9, 15, 16, 17, p.saturating_sub(1), p, p + 1] {
                            let want = naive(&doc, i.min(40));
                            assert_eq!(special_swar(&doc, i.min(40)), want, "{filler} {v} {p} {i}");
                            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
                            assert_eq!(special_sse2(&doc, i.min(40)), want, "{filler} {v} {p} {i}");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::internals::{fast_accepts, portable_fast_accepts, reference};
    use super::*;

    /// Every ill-formed sequence class, inside a string at every offset across the 8- and 16-byte
    /// steps: refused by all three scanners exactly where `from_utf8` stops, with `invalid UTF-8`;
    /// and every well-formed boundary case accepted.
    /// `utf8_char` agrees with `std::str::from_utf8` on every lead byte, every second byte, and
    /// the boundary values of the third and fourth, whole and cut short.
    #[test]
    fn utf8_char_is_from_utf8() {
        let edges = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF];
        for b0 in 0x80..=0xFFu8 {
            for b1 in 0..=0xFFu8 {
                for b2 in edges {
                    for b3 in edges {
                        let seq = [b0, b1, b2, b3];
                        for len in 1..=4 {
                            let doc = &seq[..len];
                            let want = (1..=4)
                                .find(|&w| w <= len && std::str::from_utf8(&doc[..w]).is_ok());
                            assert_eq!(utf8_char(doc, 0), want, "{doc:x?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn utf8_inside_strings_is_checked_where_from_utf8_stops() {
        let bad: &[&[u8]] = &[
            b"\x80", // continuation without a lead
            b"\xBF",
            b"\xC0\x80",     // overlong NUL
            b"\xC1\xBF",     // overlong
            b"\xE0\x80\x80", // overlong 3-byte
            b"\xE0\x9F\xBF",
            b"\xED\xA0\x80",     // UTF-16 surrogate U+D800
            b"\xED\xBF\xBF",     // U+DFFF
            b"\xF0\x80\x80\x80", // overlong 4-byte
            b"\xF0\x8F\xBF\xBF",
            b"\xF4\x90\x80\x80", // above U+10FFFF
            b"\xF5\x80\x80\x80",
            b"\xFF",
            b"\xC3", // cut short before the closing quote
            b"\xE2\x82",
            b"\xF0\x9F\x98",
            b"\xC3\x28", // a lead followed by ASCII
            b"\xE2\x28\xA1",
        ];
        for k in 0..=40 {
            for seq in bad {
                let mut doc = b"[\"".to_vec();
                doc.extend(std::iter::repeat_n(b'a', k));
                doc.extend_from_slice(seq);
                doc.extend_from_slice(b"zz\"]");
                let at = std::str::from_utf8(&doc).unwrap_err().valid_up_to();
                assert_eq!(at, 2 + k, "{seq:x?}");
                let want = Err(JsonError {
                    offset: at,
                    what: BAD_UTF8,
                });
                assert_eq!(validate(&doc), want, "{seq:x?} after {k}");
                assert!(!fast_accepts(&doc), "{seq:x?} after {k}");
                assert!(!portable_fast_accepts(&doc), "{seq:x?} after {k}");
                // Cut off at the end of the document (no closing quote).
                let cut = &doc[..2 + k + seq.len()];
                assert!(validate(cut).is_err());
                assert!(!fast_accepts(cut) && !portable_fast_accepts(cut));
            }
        }
        // Outside strings a non-ASCII byte is a grammar error where it stands.
        assert_eq!(
            validate(b"[1,\xFF]"),
            Err(JsonError {
                offset: 3,
                what: EXPECTED_VALUE
            })
        );
    }

    /// Both variants of the fast scanner and the reference parser agree on `doc`.
    #[track_caller]
    fn agree(doc: &[u8]) {
        let r = reference(doc).is_ok();
        assert_eq!(fast_accepts(doc), r, "fast scanner vs reference on {doc:?}");
        assert_eq!(
            portable_fast_accepts(doc),
            r,
            "8-byte scanner vs reference on {doc:?}"
        );
    }

    #[track_caller]
    fn ok(doc: impl AsRef<[u8]>) {
        let doc = doc.as_ref();
        assert_eq!(validate(doc), Ok(()), "{:?}", String::from_utf8_lossy(doc));
        agree(doc);
    }

    #[track_caller]
    fn bad(doc: impl AsRef<[u8]>, offset: usize, what: &str) {
        let doc = doc.as_ref();
        let e = validate(doc).expect_err(&format!("accepted {:?}", String::from_utf8_lossy(doc)));
        assert_eq!(
            (e.offset, e.what),
            (offset, what),
            "{:?}",
            String::from_utf8_lossy(doc)
        );
        agree(doc);
    }

    #[test]
    fn display_and_copy() {
        let e = JsonError {
            offset: 17,
            what: EXPECTED_VALUE,
        };
        let copy = e;
        assert_eq!(e.to_string(), "expected a value at byte 17");
        assert_eq!(copy, e);
        assert_eq!(
            validate(b"[1,2").unwrap_err().to_string(),
            "unexpected end of input at byte 4"
        );
        assert_eq!(
            validate(b"{} x").unwrap_err().to_string(),
            "trailing characters at byte 3"
        );
        assert_eq!(
            validate(b"\"\t\"").unwrap_err().to_string(),
            "control character in a string at byte 1"
        );
        assert_eq!(
            validate(br#""\x""#).unwrap_err().to_string(),
            "invalid escape at byte 2"
        );
        assert_eq!(
            validate(b"-x").unwrap_err().to_string(),
            "invalid number at byte 1"
        );
    }

    #[test]
    fn every_escape() {
        for e in [r#"\""#, r"\\", r"\/", r"\b", r"\f", r"\n", r"\r", r"\t"] {
            ok(format!("\"{e}\""));
            ok(format!("[\"a{e}b\",\"{e}{e}\"]"));
        }
        for u in [
            r"\u0000", r"\u001f", r"\u0041", r"\uabcd", r"\uABCD", r"\uAbCd", r"\uffff", r"\uFFFF",
            r"\u00e9", r"\u2028",
        ] {
            ok(format!("\"{u}\""));
            ok(format!("{{\"{u}\":\"x{u}y\"}}"));
        }
    }

    #[test]
    fn lone_and_paired_surrogates_are_accepted() {
        ok(r#""\ud800""#);
        ok(r#""\uDC00""#);
        ok(r#""\udc00\ud800""#);
        ok(r#""\ud83d\ude00""#);
        ok(r#""a\uD800b""#);
        ok(r#"{"\udfff":"\ud800\ud800"}"#);
    }

    #[test]
    fn bad_escapes() {
        bad(r#""\a""#, 2, BAD_ESCAPE);
        bad(r#""\x41""#, 2, BAD_ESCAPE);
        bad(r#""\U0041""#, 2, BAD_ESCAPE);
        bad(r#""\'""#, 2, BAD_ESCAPE);
        bad(r#""\ ""#, 2, BAD_ESCAPE);
        bad(r#""\0""#, 2, BAD_ESCAPE);
        bad(r#""ab\v""#, 4, BAD_ESCAPE);
        bad("\"\\\u{1}\"", 2, BAD_ESCAPE);
        bad("\"\\\u{e9}\"", 2, BAD_ESCAPE);
        bad(r#""\"#, 2, END_OF_INPUT);
        bad(r#""\\\"#, 4, END_OF_INPUT);
        bad(r#""\""#, 3, END_OF_INPUT);
        // \u needs exactly four hex digits.
        bad(r#""\u12G4""#, 5, BAD_ESCAPE);
        bad(r#""\u123""#, 6, BAD_ESCAPE);
        bad(r#""\u12""#, 5, BAD_ESCAPE);
        bad(r#""\u""#, 3, BAD_ESCAPE);
        bad(r#""\u{41}""#, 3, BAD_ESCAPE);
        bad(r#""\u-123""#, 3, BAD_ESCAPE);
        bad(r#""\u 123""#, 3, BAD_ESCAPE);
        bad(r#""\ug000""#, 3, BAD_ESCAPE);
        bad(r#""\u000g""#, 6, BAD_ESCAPE);
        bad(r#""\u12"#, 5, END_OF_INPUT);
        bad(r#""\u"#, 3, END_OF_INPUT);
        bad(r#""\u1234"#, 7, END_OF_INPUT);
        bad(r#"["\u123x"]"#, 7, BAD_ESCAPE);
    }

    #[test]
    fn control_characters() {
        for b in 0u8..0x20 {
            bad([b'"', b'a', b, b'"'], 2, CONTROL);
            bad([b'{', b'"', b, b'"', b':', b'1', b'}'], 2, CONTROL);
        }
        bad(b"\"\x1f\"", 1, CONTROL);
        bad(b"\"\x00\"", 1, CONTROL);
        bad("\"line\nbreak\"", 5, CONTROL);
        // DEL and everything from 0x20 up are ordinary string bytes.
        ok(b"\"\x7f\"");
        ok(b"\" \x7f~\"");
        ok("\"Zoë Ólafsdóttir – 田中 愛子 😀\"");
        // Outside strings a control byte is not a value (tab, LF and CR are whitespace).
        bad(b"[1,\x01]", 3, EXPECTED_VALUE);
        bad(b"\x00", 0, EXPECTED_VALUE);
        bad(b"1\x1f", 1, TRAILING);
        bad(b"[1\x0b]", 2, EXPECTED_COMMA_OR_BRACKET);
        bad(b"\x7f", 0, EXPECTED_VALUE);
    }

    #[test]
    fn numbers() {
        for n in [
            "0",
            "-0",
            "-0.0",
            "0.5e-3",
            "1",
            "-1",
            "10",
            "1.25",
            "1e2",
            "1E2",
            "1e+2",
            "1E-2",
            "0e0",
            "-1.25E-10",
            "123456789012345678901234567890123456789012345678901234567890",
            "-123456789012345678901234567890.123456789012345678901234567890e123456789",
            "1e400",
            "1e-400",
            "18446744073709551616",
        ] {
            ok(n);
            ok(format!("[{n}]"));
            ok(format!(" {n} "));
            ok(format!("{{\"n\":{n}}}"));
            ok(format!("[{n},{n}]"));
        }
        bad("01", 1, BAD_NUMBER);
        bad("-01", 2, BAD_NUMBER);
        bad("00", 1, BAD_NUMBER);
        bad("[01]", 2, BAD_NUMBER);
        bad("1.", 2, END_OF_INPUT);
        bad("[1.]", 3, BAD_NUMBER);
        bad("1.e3", 2, BAD_NUMBER);
        bad(".5", 0, EXPECTED_VALUE);
        bad("[.5]", 1, EXPECTED_VALUE_OR_BRACKET);
        bad("-", 1, END_OF_INPUT);
        bad("[-]", 2, BAD_NUMBER);
        bad("-a", 1, BAD_NUMBER);
        bad("- 1", 1, BAD_NUMBER);
        bad("--1", 1, BAD_NUMBER);
        bad("-.5", 1, BAD_NUMBER);
        bad("1e", 2, END_OF_INPUT);
        bad("1e+", 3, END_OF_INPUT);
        bad("1e-", 3, END_OF_INPUT);
        bad("1ea", 2, BAD_NUMBER);
        bad("1e+-1", 3, BAD_NUMBER);
        bad("[1e]", 3, BAD_NUMBER);
        bad("+1", 0, EXPECTED_VALUE);
        bad("[+1]", 1, EXPECTED_VALUE_OR_BRACKET);
        bad("1 2", 2, TRAILING);
        bad("0x10", 1, TRAILING);
        bad("1.5.3", 3, TRAILING);
        bad("1e5e5", 3, TRAILING);
        bad("[1x]", 2, EXPECTED_COMMA_OR_BRACKET);
        bad("[0x1]", 2, EXPECTED_COMMA_OR_BRACKET);
        bad("Infinity", 0, EXPECTED_VALUE);
        bad("-Infinity", 1, BAD_NUMBER);
        bad("NaN", 0, EXPECTED_VALUE);
        bad("１", 0, EXPECTED_VALUE);
    }

    #[test]
    fn empty_whitespace_and_several_values() {
        bad("", 0, END_OF_INPUT);
        bad(" ", 1, END_OF_INPUT);
        bad(" \t\n\r", 4, END_OF_INPUT);
        bad("{} {}", 3, TRAILING);
        bad("[][]", 2, TRAILING);
        bad("1 2", 2, TRAILING);
        bad(r#""a""b""#, 3, TRAILING);
        bad("null null", 5, TRAILING);
        bad("{},", 2, TRAILING);
        bad("{}}", 2, TRAILING);
        ok(" \t\n\r{}\r\n\t ");
        ok("\n[\n1\n,\n2\n]\n");
        // Only those four are whitespace.
        bad("\u{0b}1", 0, EXPECTED_VALUE);
        bad("1\u{0c}", 1, TRAILING);
        bad("\u{a0}1", 0, EXPECTED_VALUE);
        bad("\u{feff}{}", 0, EXPECTED_VALUE);
        bad("{}\u{2028}", 2, TRAILING);
        // Any value may be the whole document.
        for doc in [r#""x""#, "1", "-2.5", "true", "false", "null", "{}", "[]"] {
            ok(doc);
        }
    }

    #[test]
    fn objects() {
        ok(r#"{"a":1}"#);
        ok(r#"{ "a" : 1 , "b" : [ ] , "c" : { } }"#);
        ok(r#"{"a":1,"a":2}"#);
        ok(r#"{"":""}"#);
        bad(r#"{"a":1,}"#, 7, EXPECTED_KEY);
        bad(r#"{"a":1, }"#, 8, EXPECTED_KEY);
        bad(r#"{"a" 1}"#, 5, EXPECTED_COLON);
        bad(r#"{"a",1}"#, 4, EXPECTED_COLON);
        bad(r#"{"a"}"#, 4, EXPECTED_COLON);
        bad(r#"{"a":1,"b"}"#, 10, EXPECTED_COLON);
        bad(r#"{"a"::1}"#, 5, EXPECTED_VALUE);
        bad(r#"{1:2}"#, 1, EXPECTED_KEY_OR_BRACE);
        bad(r#"{null:2}"#, 1, EXPECTED_KEY_OR_BRACE);
        bad(r#"{a:2}"#, 1, EXPECTED_KEY_OR_BRACE);
        bad(r#"{'a':2}"#, 1, EXPECTED_KEY_OR_BRACE);
        bad(r#"{"a":1,2:3}"#, 7, EXPECTED_KEY);
        bad(r#"{"a":1,{}:3}"#, 7, EXPECTED_KEY);
        bad(r#"{,}"#, 1, EXPECTED_KEY_OR_BRACE);
        bad(r#"{"a":}"#, 5, EXPECTED_VALUE);
        bad(r#"{"a":1 "b":2}"#, 7, EXPECTED_COMMA_OR_BRACE);
        bad(r#"{"a":1]"#, 6, EXPECTED_COMMA_OR_BRACE);
        bad(r#"{"a":1:2}"#, 6, EXPECTED_COMMA_OR_BRACE);
        bad(r#"{"a":1,,"b":2}"#, 7, EXPECTED_KEY);
        bad("{", 1, END_OF_INPUT);
        bad("{ ", 2, END_OF_INPUT);
        bad(r#"{"a"#, 3, END_OF_INPUT);
        bad(r#"{"a""#, 4, END_OF_INPUT);
        bad(r#"{"a":"#, 5, END_OF_INPUT);
        bad(r#"{"a":1"#, 6, END_OF_INPUT);
        bad(r#"{"a":1,"#, 7, END_OF_INPUT);
        bad("}", 0, EXPECTED_VALUE);
        bad(":", 0, EXPECTED_VALUE);
        bad(",", 0, EXPECTED_VALUE);
    }

    #[test]
    fn arrays() {
        ok("[1,2,3]");
        ok(r#"[ 1 , "a" , null , true , false , [ ] , { } ]"#);
        bad("[1,]", 3, EXPECTED_VALUE);
        bad("[1, ]", 4, EXPECTED_VALUE);
        bad("[,1]", 1, EXPECTED_VALUE_OR_BRACKET);
        bad("[,]", 1, EXPECTED_VALUE_OR_BRACKET);
        bad("[1,,2]", 3, EXPECTED_VALUE);
        bad("[1 2]", 3, EXPECTED_COMMA_OR_BRACKET);
        bad("[1:2]", 2, EXPECTED_COMMA_OR_BRACKET);
        bad("[1}", 2, EXPECTED_COMMA_OR_BRACKET);
        bad("[}", 1, EXPECTED_VALUE_OR_BRACKET);
        bad(r#"["a":1]"#, 4, EXPECTED_COMMA_OR_BRACKET);
        bad("[", 1, END_OF_INPUT);
        bad("[1", 2, END_OF_INPUT);
        bad("[1,", 3, END_OF_INPUT);
        bad("[[]", 3, END_OF_INPUT);
        bad("]", 0, EXPECTED_VALUE);
        bad("[]]", 2, TRAILING);
    }

    #[test]
    fn nested_empty_containers() {
        for doc in [
            "{}",
            "[]",
            "[[]]",
            "[{}]",
            "{\"a\":{}}",
            "{\"a\":[]}",
            "[[[]],[{}],{}]",
            " [ ] ",
            "{ }",
            "[ [ ] , { } ]",
            "{\"a\":{\"b\":{\"c\":[[],{}]}}}",
        ] {
            ok(doc);
        }
        bad("[[]}", 3, EXPECTED_COMMA_OR_BRACKET);
        bad("{\"a\":[}", 6, EXPECTED_VALUE_OR_BRACKET);
        bad("[{]", 2, EXPECTED_KEY_OR_BRACE);
        bad("[{}", 3, END_OF_INPUT);
    }

    #[test]
    fn literals() {
        ok("true");
        ok("false");
        ok("null");
        ok("[true,false,null]");
        bad("tru", 3, END_OF_INPUT);
        bad("nul", 3, END_OF_INPUT);
        bad("fals", 4, END_OF_INPUT);
        bad("t", 1, END_OF_INPUT);
        bad("[tru", 4, END_OF_INPUT);
        bad("trux", 3, BAD_LITERAL);
        bad("nulL", 3, BAD_LITERAL);
        bad("[tru]", 4, BAD_LITERAL);
        bad("[nul,1]", 4, BAD_LITERAL);
        bad("True", 0, EXPECTED_VALUE);
        bad("NULL", 0, EXPECTED_VALUE);
        bad("nulll", 4, TRAILING);
        bad("truefalse", 4, TRAILING);
        bad("[truex]", 5, EXPECTED_COMMA_OR_BRACKET);
        bad("[true\"x\"]", 5, EXPECTED_COMMA_OR_BRACKET);
        bad("[1\"x\"]", 2, EXPECTED_COMMA_OR_BRACKET);
        bad("undefined", 0, EXPECTED_VALUE);
    }

    #[test]
    fn strings() {
        ok(r#""""#);
        ok(r#""a""#);
        ok(r#"["{}[]:,"]"#);
        ok(r#"{"a\"b":"c\\"}"#);
        bad(r#"""#, 1, END_OF_INPUT);
        bad(r#""abc"#, 4, END_OF_INPUT);
        bad(r#"["abc]"#, 6, END_OF_INPUT);
        bad(r#"'a'"#, 0, EXPECTED_VALUE);
        // A backslash outside a string is not a value.
        bad(r#"\"a""#, 0, EXPECTED_VALUE);
        bad(r#"["a"\]"#, 4, EXPECTED_COMMA_OR_BRACKET);
        bad(r#"["a",\"b"]"#, 5, EXPECTED_VALUE);
        // Non-ASCII only inside strings.
        bad("é", 0, EXPECTED_VALUE);
        bad("[\"a\"é]", 4, EXPECTED_COMMA_OR_BRACKET);
    }

    /// Put `special` at offset `k` (1..=130) inside a string that starts at offset 0, so that over
    /// all `k` it falls at every position of the string scan's 16- and 8-byte chunks, and in the
    /// byte-by-byte tail at the end of the document.
    fn at_offset(k: usize, special: &str, rest: &str) -> String {
        format!("\"{}{special}{rest}", "a".repeat(k - 1))
    }

    #[test]
    fn specials_at_every_offset_across_chunk_boundaries() {
        for k in 1..=130 {
            // A closing quote at k; then followed by whitespace, and inside an array.
            ok(at_offset(k, "\"", ""));
            ok(at_offset(k, "\"", " "));
            ok(format!("[{}]", at_offset(k, "\"", "")));
            // An opening quote at k.
            ok(format!("{}\"a\"", " ".repeat(k)));
            // A backslash-quote at k, with and without the closing quote after it.
            ok(at_offset(k, "\\\"", "\""));
            bad(at_offset(k, "\\\"", ""), k + 2, END_OF_INPUT);
            // Runs of backslashes ending at k: an odd run escapes the quote after it.
            for n in 1..=5 {
                let run = "\\".repeat(n);
                if n % 2 == 1 {
                    ok(at_offset(k, &run, "\"\""));
                    bad(at_offset(k, &run, "\""), k + n + 1, END_OF_INPUT);
                } else {
                    ok(at_offset(k, &run, "\""));
                    bad(at_offset(k, &run, "\"\""), k + n + 1, TRAILING);
                }
            }
            // A control byte at k; DEL is fine.
            bad(at_offset(k, "\u{1f}", "\""), k, CONTROL);
            bad(at_offset(k, "\u{0}", "\""), k, CONTROL);
            bad(at_offset(k, "\n", "\""), k, CONTROL);
            ok(at_offset(k, "\u{7f}", "\""));
            // Escapes across the boundary.
            ok(at_offset(k, "\\u00e9", "\""));
            ok(at_offset(k, "\\n", "\""));
            bad(at_offset(k, "\\q", "\""), k + 1, BAD_ESCAPE);
            bad(at_offset(k, "\\u00g9", "\""), k + 4, BAD_ESCAPE);
            bad(at_offset(k, "\\u00e", ""), k + 5, END_OF_INPUT);
            bad(at_offset(k, "\\", ""), k + 1, END_OF_INPUT);
            // Multi-byte UTF-8 across the boundary.
            ok(at_offset(k, "é€😀", "\""));
            ok(at_offset(
                k,
                "\u{80}\u{7ff}\u{800}\u{d7ff}\u{e000}\u{ffff}\u{10000}\u{10ffff}",
                "\"",
            ));
        }
        for k in 0..=130 {
            let pad = " ".repeat(k);
            // Numbers and literals that start at k (and cross boundaries).
            ok(format!("{pad}-12.5e+3"));
            ok(format!("[{pad}-12.5e+3]"));
            ok(format!("{pad}true"));
            ok(format!("{{\"k\":{pad}null}}"));
            bad(format!("{pad}tru"), k + 3, END_OF_INPUT);
            bad(format!("[{pad}1.]"), k + 3, BAD_NUMBER);
            bad(format!("{pad}01"), k + 1, BAD_NUMBER);
            bad(format!("{pad}1."), k + 2, END_OF_INPUT);
            // Structural characters at k.
            ok(format!("{pad}{{}}"));
            ok(format!("[{pad}]"));
            bad(format!("[1{pad},]"), k + 3, EXPECTED_VALUE);
            bad(format!("{{\"a\":1{pad},}}"), k + 7, EXPECTED_KEY);
            bad(format!("{pad}{{"), k + 1, END_OF_INPUT);
            bad(format!("{pad}x"), k, EXPECTED_VALUE);
            bad(format!("1{pad}x"), k + 1, TRAILING);
            // A stray backslash or control byte outside strings at k.
            bad(format!("[{pad}\\\"a\"]"), k + 1, EXPECTED_VALUE_OR_BRACKET);
            bad(
                format!("[\"a\"{pad}\\\"]"),
                k + 4,
                EXPECTED_COMMA_OR_BRACKET,
            );
            bad(format!("[{pad}\u{1}]"), k + 1, EXPECTED_VALUE_OR_BRACKET);
        }
    }

    /// Documents that end exactly at, just before and just after 8-, 16- and 64-byte boundaries.
    #[test]
    fn documents_ending_at_chunk_boundaries() {
        for len in [15, 16, 17, 63, 64, 65, 127, 128, 129, 191, 192, 193] {
            // `["aaa...a"]` of exactly `len` bytes.
            let s = format!("[\"{}\"]", "a".repeat(len - 4));
            assert_eq!(s.len(), len);
            ok(&s);
            bad(&s[..len - 1], len - 1, END_OF_INPUT);
            let n = format!("[{}]", "1".repeat(len - 2));
            ok(&n);
            bad(&n[..len - 1], len - 1, END_OF_INPUT);
            let w = format!("{}{}", " ".repeat(len - 4), "null");
            ok(&w);
            bad(&w[..len - 1], len - 1, END_OF_INPUT);
            // An unterminated string whose last byte is a backslash at the boundary.
            let b = format!("\"{}\\", "a".repeat(len - 2));
            assert_eq!(b.len(), len);
            bad(&b, len, END_OF_INPUT);
        }
    }

    #[test]
    fn deep_nesting_without_limit() {
        let n = 100_000;
        ok(format!("{}{}", "[".repeat(n), "]".repeat(n)));
        ok(format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n)));
        ok(format!("{}0{}", "[{\"k\":".repeat(n), "}]".repeat(n)));
        bad("[".repeat(n), n, END_OF_INPUT);
        bad(format!("{}}}", "[".repeat(n)), n, EXPECTED_VALUE_OR_BRACKET);
        bad(
            format!("{}{}]", "[".repeat(n), "]".repeat(n)),
            2 * n,
            TRAILING,
        );
        bad(
            format!("{}{}", "[".repeat(n), "]".repeat(n - 1)),
            2 * n - 1,
            END_OF_INPUT,
        );
    }

    /// The kind stack spills every 64 levels: a wrong closer at each depth around the spill points
    /// must be caught, and the right one accepted.
    #[test]
    fn container_kinds_across_spill_boundaries() {
        for depth in [1, 2, 63, 64, 65, 66, 127, 128, 129, 200] {
            // Alternate kinds so that every level's kind matters.
            let mut open = String::new();
            let mut close = Vec::new();
            for level in 0..depth {
                if level % 2 == 0 {
                    open.push('[');
                    close.push(']');
                } else {
                    open.push_str("{\"k\":");
                    close.push('}');
                }
            }
            close.reverse();
            let close: String = close.into_iter().collect();
            ok(format!("{open}0{close}"));
            // Swap the kind of the closer at every position.
            for (j, c) in close.char_indices() {
                let mut wrong = close.clone();
                wrong.replace_range(j..j + 1, if c == ']' { "}" } else { "]" });
                let at = open.len() + 1 + j;
                let what = if c == ']' {
                    EXPECTED_COMMA_OR_BRACKET
                } else {
                    EXPECTED_COMMA_OR_BRACE
                };
                bad(format!("{open}0{wrong}"), at, what);
            }
        }
    }

    #[test]
    fn realistic_row() {
        let row = r#"{"record_type":"appointment","appointment_id":"apt_demo_0001","clinic":{"id":"clinic_demo_01","name":"Brightsmile Dental (DEMO)","timezone":"Europe/Dublin"},"patient":{"id":"pat_demo_101","name":"Zoë Ólafsdóttir"},"provider":{"id":"prov_017","name":"Dr. Amélie Dubois"},"start":"2025-09-23T09:00:00+01:00","duration_minutes":45,"status":"completed","procedures":[{"code":"D0150","description":"Comprehensive oral evaluation","fee":95.00}],"payment":{"amount":95.00,"currency":"EUR","method":"card","status":"paid"},"notes":null}"#;
        ok(row);
        // Every proper prefix is refused, and every truncation is an end-of-input error.
        for cut in 0..row.len() {
            if row.is_char_boundary(cut) {
                let e = validate(&row.as_bytes()[..cut]).unwrap_err();
                assert!(e.what == END_OF_INPUT || e.what == BAD_NUMBER, "{cut}: {e}");
                agree(&row.as_bytes()[..cut]);
            }
        }
    }
}
