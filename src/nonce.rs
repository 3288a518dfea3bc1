//! Detecting a repeated GCM nonce, which is a catastrophic failure on the sender's side.
//!
//! Two rows sealed under one key with one nonce leak the XOR of their plaintexts and let an
//! attacker forge tags (SPEC section 1). `verify` checks exactly, with memory that grows with the
//! export (12 bytes and a row index per row). `decrypt` must stay within the throughput issue's
//! memory budget, so it uses a fixed 8 MiB Bloom filter over the first `FILTER_ROWS` rows: a hit
//! is a *suspect* (about one false suspect per 80 exports of a million rows), reported with the
//! advice to run `verify` for the exact rows.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use crate::record::NONCE_LEN;

/// Bits in the decrypt-side filter (8 MiB).
const FILTER_BITS: usize = 1 << 26;
/// Hash functions in the filter.
const FILTER_HASHES: u64 = 7;
/// Rows the filter covers before its false-positive rate would make warnings noise.
pub const FILTER_ROWS: u64 = 1_000_000;

/// Watches the nonces of one export, in row order.
pub struct NonceTracker {
    exact: Option<HashMap<[u8; NONCE_LEN], u64>>,
    filter: Vec<u64>,
    hasher: std::collections::hash_map::RandomState,
    observed: u64,
    found: Vec<(Option<u64>, u64)>,
}

impl NonceTracker {
    /// An exact tracker (`exact`), or a fixed-memory probabilistic one.
    pub fn new(exact: bool) -> NonceTracker {
        NonceTracker {
            exact: exact.then(HashMap::new),
            filter: Vec::new(),
            hasher: std::collections::hash_map::RandomState::new(),
            observed: 0,
            found: Vec::new(),
        }
    }

    /// Record the nonce of `row`.
    pub fn observe(&mut self, nonce: &[u8; NONCE_LEN], row: u64) {
        self.observed += 1;
        if let Some(map) = &mut self.exact {
            if let Some(first) = map.insert(*nonce, row) {
                // Keep the first row as the reference for later repeats too.
                map.insert(*nonce, first);
                self.found.push((Some(first), row));
            }
            return;
        }
        if self.observed > FILTER_ROWS {
            return;
        }
        if self.filter.is_empty() {
            self.filter = vec![0u64; FILTER_BITS / 64];
        }
        let mut h = self.hasher.build_hasher();
        h.write(nonce);
        let h1 = h.finish();
        h.write_u8(0x5a);
        let h2 = h.finish() | 1;
        let mut all_set = true;
        for i in 0..FILTER_HASHES {
            let bit = (h1.wrapping_add(i.wrapping_mul(h2)) % FILTER_BITS as u64) as usize;
            let (word, mask) = (bit / 64, 1u64 << (bit % 64));
            all_set &= self.filter[word] & mask != 0;
            self.filter[word] |= mask;
        }
        if all_set {
            self.found.push((None, row));
        }
    }

    /// The reuse found: `(Some(earlier), later)` pairs when exact, `(None, suspect)` otherwise.
    pub fn finish(&mut self) -> Vec<(Option<u64>, u64)> {
        std::mem::take(&mut self.found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_reports_first_and_repeat_rows() {
        let mut t = NonceTracker::new(true);
        t.observe(&[1; 12], 0);
        t.observe(&[2; 12], 1);
        t.observe(&[1; 12], 2);
        t.observe(&[1; 12], 5);
        assert_eq!(t.finish(), vec![(Some(0), 2), (Some(0), 5)]);
    }

    #[test]
    fn filter_flags_a_repeat_and_not_distinct_nonces() {
        let mut t = NonceTracker::new(false);
        for row in 0..10_000u64 {
            let mut n = [0u8; 12];
            n[..8].copy_from_slice(&row.to_le_bytes());
            t.observe(&n, row);
        }
        assert!(t.finish().is_empty());
        t.observe(&[0; 12], 10_000);
        assert_eq!(t.finish(), vec![(None, 10_000)]);
    }
}
