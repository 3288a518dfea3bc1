//! Sealing rows into the vendor's line format: the inverse of opening them
//! ([`crate::format::record`]).
//!
//! Every nonce comes from the operating system's generator. They are drawn [`NONCE_BATCH`] at a
//! time (one `getrandom` call per batch rather than one per row, which costs a system call per row)
//! and each one is used for exactly one row: a repeated nonce under one key is the catastrophic
//! failure of GCM (SPEC section 1). One key MUST NOT seal more than [`MAX_ROWS`] rows.

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::format::aead::Cipher;
use crate::format::key::Key;
use crate::format::record::{seal_line, Aad, NONCE_LEN, TAG_LEN};

/// Nonces drawn from the operating system per `getrandom` call.
pub const NONCE_BATCH: usize = 4096;
/// Rows per export at most: NIST SP 800-38D (section 8.3) allows 2^32 messages under one key with
/// random 96-bit nonces. The bound is per key, across exports; one export must at least stay
/// inside it.
pub const MAX_ROWS: u64 = 1 << 32;

/// The sealing scratch buffer keeps at most this much capacity between rows.
const SCRATCH_KEEP: usize = 1024 * 1024;
/// Check a `key_id` before it is written into JSON unescaped: it MUST NOT hold `"`, `\` or control
/// characters. Returns a usage error saying which character is wrong.
pub fn check_key_id(key_id: &str) -> Result<()> {
    match key_id
        .chars()
        .find(|&c| c == '"' || c == '\\' || c.is_control())
    {
        None => Ok(()),
        Some(c) => Err(Error::Usage(format!(
            "--key-id must not contain {}: it is written into each line's JSON string unescaped",
            match c {
                '"' => "a double quote".to_owned(),
                '\\' => "a backslash".to_owned(),
                c => format!("control characters (found U+{:04X})", c as u32),
            }
        ))),
    }
}

/// Fresh nonces from the operating system, drawn [`NONCE_BATCH`] at a time; each is handed out once.
pub struct NonceSource {
    buf: Box<[u8]>,
    next: usize,
}

impl NonceSource {
    /// An empty source; the first [`NonceSource::take`] fills it.
    pub fn new() -> NonceSource {
        let buf = vec![0u8; NONCE_BATCH * NONCE_LEN].into_boxed_slice();
        let next = buf.len();
        NonceSource { buf, next }
    }

    /// The next unused nonce, refilling the batch from the operating system when it is used up.
    pub fn take(&mut self) -> Result<[u8; NONCE_LEN]> {
        if self.next == self.buf.len() {
            getrandom::fill(&mut self.buf).map_err(|e| Error::Random(e.to_string()))?;
            self.next = 0;
        }
        let nonce: [u8; NONCE_LEN] = self.buf[self.next..self.next + NONCE_LEN]
            .try_into()
            .expect("NONCE_LEN bytes");
        // Overwrite the handed-out nonce so that a bug in the refill logic could only ever yield
        // all-zero nonces, which the tests catch, never a silent repeat of a random one.
        self.buf[self.next..self.next + NONCE_LEN].fill(0);
        self.next += NONCE_LEN;
        Ok(nonce)
    }
}

impl Default for NonceSource {
    fn default() -> Self {
        NonceSource::new()
    }
}

/// Seals rows for one key, customer id and key id into vendor-format lines.
pub struct Sealer {
    cipher: Cipher,
    aad: Aad,
    nonces: NonceSource,
    key_id: String,
    scratch: Zeroizing<Vec<u8>>,
}

impl Sealer {
    /// A sealer writing `key_id` (checked with [`check_key_id`]) into every line.
    pub fn new(key: &Key, customer_id: &str, key_id: &str) -> Result<Sealer> {
        check_key_id(key_id)?;
        Ok(Sealer {
            cipher: key.cipher(),
            aad: Aad::new(customer_id),
            nonces: NonceSource::new(),
            key_id: key_id.to_owned(),
            scratch: Zeroizing::new(Vec::new()),
        })
    }

    /// Append the line `{"encrypted_data":"<key_id>:<iv_b64>:<blob_b64>"}\n` sealing `plaintext`
    /// as row `row` to `out`, under a fresh nonce.
    pub fn seal_line(&mut self, row: u64, plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let nonce = self.nonces.take()?;
        // After one huge row, start again small, so the sealer does not keep that much memory
        // (the old buffer is wiped when dropped). Reserving before the copy means no
        // reallocation can leave plaintext behind in freed memory.
        let need = plaintext.len() + TAG_LEN;
        if self.scratch.capacity() > need.max(SCRATCH_KEEP) {
            self.scratch = Zeroizing::new(Vec::new());
        }
        self.scratch.reserve(need);
        let aad = self.aad.for_row(row);
        seal_line(
            &self.cipher,
            aad,
            &nonce,
            &self.key_id,
            plaintext,
            &mut self.scratch,
            out,
        );
        out.push(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;
    use crate::format::record::RowOpener;

    #[test]
    fn nonces_are_fresh_across_batches() {
        let mut src = NonceSource::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..NONCE_BATCH * 2 + 3 {
            let n = src.take().unwrap();
            assert_ne!(n, [0u8; NONCE_LEN]);
            assert!(seen.insert(n), "nonce repeated");
        }
    }

    #[test]
    fn sealed_lines_open_with_the_decrypt_code() {
        let key = Key::from_bytes([5; 32]);
        let mut sealer = Sealer::new(&key, "cust:1", "kid").unwrap();
        let mut out = Vec::new();
        sealer
            .seal_line(0, br#"{"a": "\u00e9"}"#, &mut out)
            .unwrap();
        sealer.seal_line(1, b"[1, 2]", &mut out).unwrap();
        let lines: Vec<&[u8]> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(b"{\"encrypted_data\":\"kid:"));
        let mut opener = RowOpener::new(key.cipher(), "cust:1");
        let mut pt = Vec::new();
        opener.open_into(0, lines[0], &mut pt).unwrap();
        assert_eq!(pt, br#"{"a": "\u00e9"}"#);
        pt.clear();
        opener.open_into(1, lines[1], &mut pt).unwrap();
        assert_eq!(pt, b"[1, 2]");
        // Bound to its row index and customer id.
        assert!(opener.open_into(0, lines[1], &mut pt).is_err());
        assert!(RowOpener::new(key.cipher(), "cust:2")
            .open_into(0, lines[0], &mut pt)
            .is_err());
    }

    #[test]
    fn scratch_shrinks_after_a_huge_row() {
        let key = Key::from_bytes([5; 32]);
        let mut sealer = Sealer::new(&key, "c", "k").unwrap();
        let mut out = Vec::new();
        sealer
            .seal_line(0, &vec![b'1'; 3 * SCRATCH_KEEP], &mut out)
            .unwrap();
        sealer.seal_line(1, b"2", &mut out).unwrap();
        assert!(sealer.scratch.capacity() <= SCRATCH_KEEP);
    }

    #[test]
    fn key_ids_needing_json_escapes_are_refused() {
        assert!(check_key_id("3e9c:e2f1-k.1").is_ok());
        assert!(check_key_id("").is_ok());
        for bad in ["a\"b", "a\\b", "a\nb", "a\u{7f}b", "\u{1}"] {
            let e = check_key_id(bad).unwrap_err();
            assert_eq!(e.exit(), Exit::Usage, "{bad:?}");
        }
    }
}
