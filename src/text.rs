//! Untrusted text (member names, body fields, key ids, paths, messages of other libraries) made
//! safe to show.
//!
//! Whoever altered an export or forged a request chooses this text; shown raw it could move the
//! cursor, clear the screen (`ESC[2J`), forge a line of output (`\n`), or reorder what a reader
//! sees (the bidirectional controls). One rule, [`needs_escape`], decides what may not reach a
//! terminal or a log as it is, and one function, [`escape`], writes it as `\n`, `\r`, `\t` or
//! `\u{1b}` instead; [`quote`], [`shorten`], [`list`] and [`json`] build on them.
//!
//! Where it is applied, so that it cannot be forgotten (issue 12, item 2): errors and warnings
//! keep the raw text (a program may need the exact member names), and their `Display` escapes the
//! whole message it has rendered, not field by field. None of the tool's own wording holds a
//! character that [`needs_escape`], so escaping the whole line changes only what came from outside,
//! and a variant or field added later is covered without anyone remembering to. Escaping is
//! idempotent (its output holds nothing it would escape), so text escaped earlier, such as an
//! input's name ([`crate::source::Input::name`], which the progress bar also shows), passes
//! through unchanged. The few lines that are not errors, `verify`'s summaries and its JSON, use
//! [`escape`], [`list`] and [`json`] directly.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;

use serde::Serialize as _;

/// At most this many items of a list are shown; the rest are counted.
pub const MAX_LISTED: usize = 20;

/// Each item of a list is cut to this many characters.
pub const MAX_ITEM_CHARS: usize = 100;

/// True for a character that must never reach a terminal or a log as it is: the control
/// characters (C0, DEL and C1, among them ESC, CR, LF and the 8-bit CSI), the bidirectional
/// controls, the line and paragraph separators, and the invisible format characters (zero-width
/// spaces and joiners, the BOM, the soft hyphen, the interlinear annotations and the tag
/// characters, which can hide text in plain sight).
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{AD}'
                | '\u{61C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// `text` with every character that [`needs_escape`] written as `\t`, `\n`, `\r` or `\u{hex}`;
/// everything else, backslashes included, is kept, so an ordinary name reads as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// `text` in double quotes, escaped as [`escape`] does, and `"` and `\` escaped too, so where the
/// value starts and ends is never in doubt.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => push_escaped(&mut out, c),
        }
    }
    out.push('"');
    out
}

/// A value from an (untrusted or verified) body, quoted and cut to a readable length for messages.
pub fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    match text.char_indices().nth(MAX_CHARS) {
        None => quote(text),
        Some((end, _)) => format!("{}...", quote(&text[..end])),
    }
}

/// `text` escaped and cut to `max` characters, with `...` when it was longer.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => escape(text).into_owned(),
        Some((end, _)) => format!("{}...", escape(&text[..end])),
    }
}

/// A list for a message, `a, b, c`: each item escaped and cut to [`MAX_ITEM_CHARS`], at most
/// [`MAX_LISTED`] of them, then `... and N more` (2000 members of a hostile ZIP once made a 38 KB
/// error line).
pub fn list(items: &[String]) -> String {
    let mut out = items
        .iter()
        .take(MAX_LISTED)
        .map(|item| cut(item, MAX_ITEM_CHARS))
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > MAX_LISTED {
        let _ = write!(out, ", ... and {} more", items.len() - MAX_LISTED);
    }
    out
}

/// `value` as one line of JSON that is safe on a terminal and loses nothing: serde_json already
/// writes the C0 controls as `\u00XX`; every other character that [`needs_escape`] (DEL, C1, the
/// bidirectional controls, ...) is written as a `\uXXXX` escape too, so a consumer still reads
/// the exact value.
pub fn json(value: &serde_json::Value) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, SafeJson);
    value
        .serialize(&mut ser)
        .expect("a JSON value serializes into memory");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// serde_json's compact output, with the characters that [`needs_escape`] escaped in strings.
struct SafeJson;

impl serde_json::ser::Formatter for SafeJson {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if needs_escape(c) {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// What a user cannot see in `text` (a customer id, say): whitespace at either end, or a
/// character that [`needs_escape`] anywhere, described with its code point, e.g. `ends with a
/// carriage return (U+000D)`. `None` when every character shows.
pub fn invisible(text: &str) -> Option<String> {
    let unseen = |c: char| c.is_whitespace() || needs_escape(c);
    if let Some(c) = text.chars().next_back().filter(|&c| unseen(c)) {
        return Some(format!("ends with {}", describe(c)));
    }
    if let Some(c) = text.chars().next().filter(|&c| unseen(c)) {
        return Some(format!("starts with {}", describe(c)));
    }
    text.chars()
        .find(|&c| needs_escape(c))
        .map(|c| format!("holds {}", describe(c)))
}

/// A character a user cannot see, by name and code point: `a carriage return (U+000D)`.
fn describe(c: char) -> String {
    let name = match c {
        '\t' => "a tab",
        '\n' => "a newline",
        '\r' => "a carriage return",
        ' ' => "a space",
        '\u{A0}' => "a no-break space",
        '\u{200B}' => "a zero-width space",
        '\u{FEFF}' => "a byte order mark",
        c if c.is_whitespace() => "a space character",
        c if c.is_control() => "a control character",
        _ => "an invisible character",
    };
    format!("{name} (U+{:04X})", c as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_writes_controls_and_invisible_characters_as_escapes() {
        assert!(matches!(escape("a.ndjson"), Cow::Borrowed("a.ndjson")));
        assert_eq!(escape("kid-é:2024 \\ x"), "kid-é:2024 \\ x");
        assert_eq!(
            escape("a\u{1b}[2J\r\n\tb\u{7f}\u{9b}c"),
            "a\\u{1b}[2J\\r\\n\\tb\\u{7f}\\u{9b}c"
        );
        assert_eq!(
            escape("r\u{202e}lt\u{2066}\u{200b}\u{feff}\u{2028}\u{e0041}"),
            "r\\u{202e}lt\\u{2066}\\u{200b}\\u{feff}\\u{2028}\\u{e0041}"
        );
        // Idempotent: what escape writes holds nothing it would escape.
        let once = escape("x\u{1b}\n\u{202e}").into_owned();
        assert_eq!(escape(&once), once);
    }

    #[test]
    fn quote_and_shorten_mark_where_the_value_ends() {
        assert_eq!(quote("a\"b\\c\r"), r#""a\"b\\c\r""#);
        assert_eq!(shorten("x"), "\"x\"");
        let long = "é".repeat(70);
        assert_eq!(shorten(&long), format!("\"{}\"...", "é".repeat(64)));
        assert_eq!(shorten(&"a".repeat(64)), format!("\"{}\"", "a".repeat(64)));
    }

    #[test]
    fn lists_are_bounded_in_items_and_in_item_length() {
        let few: Vec<String> = vec!["a".into(), "b\u{1b}".into()];
        assert_eq!(list(&few), "a, b\\u{1b}");
        let many: Vec<String> = (0..2000).map(|i| format!("m{i}")).collect();
        let shown = list(&many);
        assert!(shown.starts_with("m0, m1, "), "{shown}");
        assert!(shown.ends_with(", m19, ... and 1980 more"), "{shown}");
        let long = vec!["x".repeat(5000)];
        assert_eq!(list(&long), format!("{}...", "x".repeat(MAX_ITEM_CHARS)));
        assert_eq!(list(&[]), "");
    }

    #[test]
    fn json_is_lossless_and_safe_on_a_terminal() {
        let value = serde_json::json!({
            "member": "a\u{1b}[2J\n\u{7f}\u{9b}r\u{202e}\u{e0041}é\"\\.ndjson",
        });
        let line = json(&value);
        assert_eq!(
            line,
            r#"{"member":"a\u001b[2J\n\u007f\u009br\u202e\udb40\udc41é\"\\.ndjson"}"#
        );
        assert!(!line.chars().any(needs_escape), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn invisible_characters_are_named_with_their_code_point() {
        assert_eq!(invisible("cust_123"), None);
        assert_eq!(invisible("cust 123"), None);
        assert_eq!(
            invisible("cust_123\r").as_deref(),
            Some("ends with a carriage return (U+000D)")
        );
        assert_eq!(
            invisible("cust_123\n").as_deref(),
            Some("ends with a newline (U+000A)")
        );
        assert_eq!(
            invisible("cust_123 ").as_deref(),
            Some("ends with a space (U+0020)")
        );
        assert_eq!(
            invisible("\u{feff}cust_123").as_deref(),
            Some("starts with a byte order mark (U+FEFF)")
        );
        assert_eq!(
            invisible("cust\u{200b}_123").as_deref(),
            Some("holds a zero-width space (U+200B)")
        );
        assert_eq!(
            invisible("cust_123\u{a0}").as_deref(),
            Some("ends with a no-break space (U+00A0)")
        );
    }
}
