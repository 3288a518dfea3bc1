//! `json::validate` against serde_json (`from_slice::<IgnoredAny>`, the check it replaced): the
//! same documents are accepted and refused. Also that the fast scanner (with both string scans,
//! SSE2 and 8-byte) and the reference parser inside `json` agree, and that an error's offset lies
//! in the document.
//!
//! What is compared, and what is not:
//! - UTF-8: `validate` checks it too, so it is compared with "`from_utf8` accepts and serde_json
//!   accepts"; most generators below work on `char`s, and the byte-level ones add invalid UTF-8;
//! - nesting depth: nothing excluded. serde_json's recursion limit of 128 applies when it builds
//!   values (`Value`, structs), but `IgnoredAny` goes through its iterative `ignore_value`, which
//!   has no limit, as [`serde_json_ignored_any_has_no_nesting_limit`] pins down;
//! - lone surrogate escapes (`"\uD800"`): nothing excluded either. `validate` accepts them (RFC
//!   8259's grammar does), and so does `IgnoredAny`, which never decodes escapes; only serde_json's
//!   `Value` refuses them. [`lone_surrogates`] pins that down.

use proptest::prelude::*;
use serde::de::IgnoredAny;

use cipherstream::format::json::{self, internals};

/// Compare everything on one input; `Ok` for inputs that are not UTF-8. Whitespace around `doc`
/// changes no answer; `shift` spaces before it and some after it move every string to another
/// distance from the end of the document, where the scanner goes from 16-byte to 8-byte to
/// byte-by-byte steps.
fn compare(doc: &[u8], shift: usize) -> Result<(), TestCaseError> {
    let ours = json::validate(doc);
    let utf8 = std::str::from_utf8(doc);
    let serde = serde_json::from_slice::<IgnoredAny>(doc);
    if let (Err(u), Err(e)) = (&utf8, &ours) {
        prop_assert!(
            e.offset <= u.valid_up_to(),
            "{} but UTF-8 is valid up to {}",
            e,
            u.valid_up_to()
        );
    }
    prop_assert_eq!(
        ours.is_ok(),
        utf8.is_ok() && serde.is_ok(),
        "validate: {:?}, serde_json: {:?}, on {:?}",
        ours,
        serde.as_ref().err().map(|e| e.to_string()),
        String::from_utf8_lossy(doc)
    );
    prop_assert_eq!(internals::reference(doc), ours);
    prop_assert_eq!(internals::fast_accepts(doc), ours.is_ok());
    prop_assert_eq!(internals::portable_fast_accepts(doc), ours.is_ok());
    // The line-break answer is memchr's, whichever way it is found.
    let breaks = ours
        .as_ref()
        .ok()
        .map(|()| memchr::memchr2(b'\n', b'\r', doc).is_some());
    prop_assert_eq!(json::validate_breaks(doc).ok(), breaks);
    prop_assert_eq!(internals::fast_scan(doc), breaks);
    prop_assert_eq!(internals::portable_fast_scan(doc), breaks);
    if let Err(e) = ours {
        prop_assert!(e.offset <= doc.len(), "{e} in {} bytes", doc.len());
    }
    let shifted = [&b" ".repeat(shift), doc, &b"\n".repeat(shift * 7 % 23)].concat();
    prop_assert_eq!(
        internals::fast_accepts(&shifted),
        ours.is_ok(),
        "shifted by {}",
        shift
    );
    prop_assert_eq!(
        internals::portable_fast_accepts(&shifted),
        ours.is_ok(),
        "shifted by {}",
        shift
    );
    let breaks = ours
        .is_ok()
        .then(|| memchr::memchr2(b'\n', b'\r', &shifted).is_some());
    prop_assert_eq!(
        internals::fast_scan(&shifted),
        breaks,
        "shifted by {}",
        shift
    );
    Ok(())
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (-1e3f64..1e3).prop_map(Value::from),
        // Any chars, control characters and quotes included (serde_json escapes them).
        any::<String>().prop_map(Value::from),
        "[a-zé \"\\\\/\u{1}\u{1f}\u{7f}\u{2028}😀]{0,80}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::btree_map("[a-z_\"\\\\é]{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON value serialised compact or pretty, after up to 130 bytes of whitespace.
fn serialised() -> impl Strategy<Value = String> {
    (json_value(), any::<bool>(), 0usize..130, 0usize..4).prop_map(|(v, pretty, pad, trail)| {
        let body = match pretty {
            true => serde_json::to_string_pretty(&v).unwrap(),
            false => serde_json::to_string(&v).unwrap(),
        };
        format!("{}{body}{}", " \n".repeat(pad / 2), &"\r\n\t "[..trail])
    })
}

/// The characters mutations insert: JSON's punctuation, digits, exponent and sign characters,
/// whitespace, the letters of the literals and escapes, control characters, DEL and non-ASCII.
const ALPHABET: &[char] = &[
    '"', '\\', '{', '}', '[', ']', ':', ',', '.', '-', '+', 'e', 'E', '0', '1', '2', '3', '4', '5',
    '6', '7', '8', '9', ' ', '\t', '\n', '\r', 'u', 't', 'r', 'f', 'n', 'l', 'a', 's', 'b', '/',
    'D', '\u{0}', '\u{1f}', '\u{7f}', '\u{a0}', 'é', '€', '😀', '\u{feff}',
];

/// Bytes that make UTF-8 text invalid where they land (or start a sequence that may).
const UTF8_BREAKERS: &[u8] = &[
    0x80, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF,
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, char),
    Delete(usize),
    Replace(usize, char),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let c = prop::sample::select(ALPHABET);
    prop_oneof![
        (any::<usize>(), c.clone()).prop_map(|(i, c)| Mutation::Insert(i, c)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), c).prop_map(|(i, c)| Mutation::Replace(i, c)),
    ]
}

/// Apply mutations at `char` positions (taken modulo the length), so the result stays UTF-8.
fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for m in mutations {
        match *m {
            Mutation::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
            Mutation::Delete(i) if !chars.is_empty() => {
                chars.remove(i % chars.len());
            }
            Mutation::Replace(i, c) if !chars.is_empty() => {
                let n = chars.len();
                chars[i % n] = c;
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// Pieces of JSON strung together at random: mostly nearly-valid structure, which is where the
/// grammar's state machine is exercised hardest.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    " ",
    "\n",
    "\"a\"",
    "\"\"",
    "\"k\":",
    "\"\\\"\"",
    "\"\\\\\"",
    "\"\\u00e9\"",
    "\"\\ud800\"",
    "\"é😀\"",
    "0",
    "-1",
    "1.5",
    "2e-3",
    "-0.0E+1",
    "true",
    "false",
    "null",
    "\"",
    "\\",
    "1.",
    "01",
    "-01",
    ".5",
    "1.e5",
    "1e+",
    "-",
    "0x1",
    "1E5",
    "-0.0e-0",
    "tru",
    "nul",
    "fals",
    "\u{1}",
    "\"\\a\"",
    "\"\\x41\"",
    "\"\\'\"",
    "\"\\u12G4\"",
    "\"\\u00\"",
    "\"\\uDC00\"",
    "\"\\/\\b\\f\\n\\r\\t\"",
    "\"\u{7f}\u{1f}\"",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..40).prop_map(|t| t.concat())
}

/// A shift for [`compare`].
fn shift() -> impl Strategy<Value = usize> {
    1usize..64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// (a) Every serialised JSON value is accepted by both.
    #[test]
    fn serialised_values(doc in serialised(), shift in shift()) {
        prop_assert!(json::validate(doc.as_bytes()).is_ok());
        compare(doc.as_bytes(), shift)?;
    }

    /// (b) Serialised values with 1 to 4 random insertions, deletions and replacements.
    #[test]
    fn mutated_values(
        doc in serialised(),
        mutations in prop::collection::vec(mutation(), 1..5),
        shift in shift(),
    ) {
        compare(mutate(&doc, &mutations).as_bytes(), shift)?;
    }

    /// (c) Arbitrary UTF-8 text, and text from the JSON alphabet only.
    #[test]
    fn arbitrary_text(
        any_text in any::<String>(),
        jsonish in prop::collection::vec(prop::sample::select(ALPHABET), 0..60),
        shift in shift(),
    ) {
        compare(any_text.as_bytes(), shift)?;
        compare(jsonish.into_iter().collect::<String>().as_bytes(), shift)?;
    }

    /// (d) Serialised values (with non-ASCII strings) with bytes inserted or replaced at byte
    /// positions, from bytes that break UTF-8: lone continuation bytes, leads of overlong forms,
    /// surrogates and code points above U+10FFFF, and bytes never valid in UTF-8.
    #[test]
    fn byte_mutated_values(
        doc in serialised(),
        edits in prop::collection::vec(
            (any::<usize>(), prop::sample::select(UTF8_BREAKERS), any::<bool>()),
            1..4,
        ),
        shift in shift(),
    ) {
        let mut bytes = doc.into_bytes();
        for (i, b, insert) in edits {
            let at = i % (bytes.len() + 1);
            if insert || at == bytes.len() {
                bytes.insert(at, b);
            } else {
                bytes[at] = b;
            }
        }
        compare(&bytes, shift)?;
    }

    /// Random sequences of JSON tokens, as they are and mutated.
    #[test]
    fn token_sequences(
        doc in token_soup(),
        mutations in prop::collection::vec(mutation(), 0..3),
        shift in shift(),
    ) {
        compare(doc.as_bytes(), shift)?;
        compare(mutate(&doc, &mutations).as_bytes(), shift)?;
    }
}

/// serde_json's `IgnoredAny` skips values iteratively and has no nesting limit (its limit of 128
/// is for building values), so the differential test compares deeply nested inputs too. If a
/// serde_json upgrade changes this, this test says so before the proptests do.
#[test]
fn serde_json_ignored_any_has_no_nesting_limit() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(serde_json::from_slice::<IgnoredAny>(deep.as_bytes()).is_ok());
    assert!(json::validate(deep.as_bytes()).is_ok());
    let objects = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    assert!(serde_json::from_slice::<IgnoredAny>(objects.as_bytes()).is_ok());
    assert!(json::validate(objects.as_bytes()).is_ok());
    // Building a `Value` does stop at 128 levels.
    let e = serde_json::from_str::<serde_json::Value>(&format!(
        "{}{}",
        "[".repeat(129),
        "]".repeat(129)
    ))
    .unwrap_err();
    assert!(e.to_string().starts_with("recursion limit exceeded"), "{e}");
}

/// Lone surrogate escapes are grammatical JSON: accepted by `validate` and by serde_json's
/// `IgnoredAny`; refused only when serde_json decodes the string into a `Value`.
#[test]
fn lone_surrogates() {
    for doc in [
        r#""\ud800""#,
        r#""\uDFFF""#,
        r#""\udc00\ud800""#,
        r#"{"k\ud800":["\udbff"]}"#,
    ] {
        assert!(json::validate(doc.as_bytes()).is_ok(), "{doc}");
        assert!(
            serde_json::from_slice::<IgnoredAny>(doc.as_bytes()).is_ok(),
            "{doc}"
        );
        assert!(
            serde_json::from_str::<serde_json::Value>(doc).is_err(),
            "{doc}"
        );
    }
    // A proper pair decodes either way.
    let pair = r#""\ud83d\ude00""#;
    assert!(json::validate(pair.as_bytes()).is_ok());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(pair).unwrap(),
        "😀"
    );
}

/// Hand-picked inputs where a validator could plausibly differ from serde_json.
#[test]
fn corner_cases_agree_with_serde_json() {
    let docs: &[&[u8]] = &[
        b"",
        b" ",
        b"\xef\xbb\xbf{}",
        b"{}\x00",
        b"-0",
        b"-",
        b"01",
        b"1.",
        b".5",
        b"1e",
        b"+1",
        b"1E+9999999999",
        b"123456789012345678901234567890123456789",
        b"[1,]",
        b"{\"a\":1,}",
        b"{\"a\" 1}",
        b"{1:1}",
        b"tru",
        b"nul",
        b"\"\\u12\"",
        b"\"\\u12G4\"",
        b"\"\x1f\"",
        b"\"\x7f\"",
        b"\"\t\"",
        b"[\"a\"\\]",
        b"NaN",
        b"Infinity",
        b"[] []",
        b"\"\\/\"",
        b"\"\\'\"",
    ];
    for doc in docs {
        for shift in 0..64 {
            compare(doc, shift).unwrap();
        }
    }
}
