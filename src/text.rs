//! Untrusted text (member names, body fields, key ids, server messages) made safe to show.
//!
//! Whoever altered an export or forged a request chooses this text; shown raw it could move the
//! cursor, clear the screen or forge a line of output. Everything shown from it passes through
//! here.

/// A value from an (untrusted or verified) body, quoted and cut to a readable length for messages.
pub fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    if text.chars().count() <= MAX_CHARS {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(MAX_CHARS).collect();
        format!("{head:?}...")
    }
}
