//! Detecting a repeated GCM nonce, which is a catastrophic failure on the sender's side.
//!
//! Two rows sealed under one key with one nonce leak the XOR of their plaintexts and let an
//! attacker forge tags (SPEC section 1). `verify` checks exactly, with memory that grows with the
//! export (16 bytes per row: the nonce and the row index, sorted at the end). `decrypt` must stay within the throughput issue's
//! memory budget, so it uses a fixed 8 MiB Bloom filter over the first `FILTER_ROWS` rows: a hit
//! is a *suspect* (about one false suspect per 400 exports of a million rows), reported with the
//! advice to run `verify` for the exact rows. The filter is cache-blocked: all the bits of one
//! nonce lie in one 64-byte line, so a row costs one cache (and TLB) miss instead of one per hash
//! function; with 12 bits per nonce it also has fewer false suspects than the 7-hash unblocked
//! filter it replaced (issue 3 benchmark: that filter was ~7% of all decrypt CPU time).

use std::hash::{BuildHasher, Hasher};

use crate::record::NONCE_LEN;

/// Bits in the decrypt-side filter (8 MiB).
const FILTER_BITS: usize = 1 << 26;
/// 512-bit blocks (cache lines) in the filter.
const FILTER_BLOCKS: usize = FILTER_BITS / 512;
/// Bits set per nonce, all in one block: 12 indices of 9 bits from 111 bits of hash.
const FILTER_HASHES: u32 = 12;

/// A transparent huge page on x86_64 and most aarch64 Linux systems.
const HUGE_PAGE: usize = 2 << 20;

/// Rows the filter covers before its false-positive rate would make warnings noise.
pub const FILTER_ROWS: u64 = 1_000_000;

/// Ask Linux to back the 2 MiB-aligned parts of `words` with transparent huge pages. The filter is
/// probed at random, so with 4 KiB pages nearly every probe misses the TLB and a 100k-row export
/// touches all 2048 pages, each a page fault (issue 3: ~5,000 faults in all were a visible part of
/// a 100k-row decrypt). Only advice: nothing changes if the kernel declines.
fn advise_huge_pages(words: &mut [u64]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = HUGE_PAGE;
        let start = words.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(words);
        let first = start.next_multiple_of(HUGE);
        let last = end / HUGE * HUGE;
        if first < last {
            // SAFETY: [first, last) lies inside `words`, memory this process owns and keeps
            // mapped while the filter lives; MADV_HUGEPAGE only changes how the kernel backs it,
            // never its contents, and its result is deliberately ignored.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = words;
}

/// Watches the nonces of one export, in row order.
pub struct NonceTracker {
    /// Exact mode: one `nonce << 32 | row` per row (16 bytes a row, a fifth of a hash map's cost),
    /// sorted once at the end so equal nonces sit together with their rows in order.
    exact: Option<Vec<u128>>,
    /// The filter's words, allocated zeroed (so untouched pages cost nothing), 2 MiB longer than
    /// needed so that the filter can start on a huge-page (so also a 64-byte) boundary at `base`.
    filter: Vec<u64>,
    base: usize,
    hasher: std::collections::hash_map::RandomState,
    observed: u64,
    found: Vec<(Option<u64>, u64)>,
    /// Scratch for [`NonceTracker::observe_all`]: (block, bit indices) per nonce.
    slots: Vec<(usize, u128)>,
}

impl NonceTracker {
    /// An exact tracker (`exact`), or a fixed-memory probabilistic one.
    pub fn new(exact: bool) -> NonceTracker {
        NonceTracker {
            exact: exact.then(Vec::new),
            filter: Vec::new(),
            base: 0,
            hasher: std::collections::hash_map::RandomState::new(),
            observed: 0,
            found: Vec::new(),
            slots: Vec::new(),
        }
    }

    /// Record the nonces of consecutive rows, in row order; the same as calling
    /// [`NonceTracker::observe`] on each, but faster: every nonce is hashed and its filter block
    /// loaded before any bit is tested, so the cache and TLB misses of a batch overlap instead of
    /// costing one full memory latency per row (issue 3 benchmark: ~8% of decrypt CPU).
    pub fn observe_all(&mut self, batch: &[([u8; NONCE_LEN], u64)]) {
        if self.exact.is_some() || self.observed + batch.len() as u64 > FILTER_ROWS {
            for (nonce, row) in batch {
                self.observe(nonce, *row);
            }
            return;
        }
        self.allocate();
        let mut slots = std::mem::take(&mut self.slots);
        slots.clear();
        slots.extend(batch.iter().map(|(nonce, _)| self.slot(nonce)));
        // A tight loop of independent loads: the CPU keeps many misses in flight.
        let touched = slots
            .iter()
            .fold(0u64, |acc, &(b, _)| acc ^ self.filter[self.base + b * 8]);
        std::hint::black_box(touched);
        for (&(b, bits), (_, row)) in slots.iter().zip(batch) {
            self.observed += 1;
            if self.set_bits(b, bits) {
                self.found.push((None, *row));
            }
        }
        self.slots = slots;
    }

    fn allocate(&mut self) {
        if self.filter.is_empty() {
            // 2 MiB more than the filter, so that it can start on a huge-page boundary: then
            // all of it can be backed by huge pages (4 page faults), where an unaligned one got
            // about 500 small pages at its ends (issue 3). The spare room is never touched, so it
            // costs address space, not memory.
            const SPARE: usize = HUGE_PAGE / 8;
            self.filter = vec![0u64; FILTER_BITS / 64 + SPARE];
            self.base = self.filter.as_ptr().align_offset(HUGE_PAGE).min(SPARE);
            if self.base == SPARE {
                // No boundary could be reached (never with a real allocator): a cache line.
                self.base = self.filter.as_ptr().align_offset(64).min(7);
            }
            let base = self.base;
            advise_huge_pages(&mut self.filter[base..base + FILTER_BITS / 64]);
        }
    }

    /// The filter block and the packed bit indices of `nonce`.
    fn slot(&self, nonce: &[u8; NONCE_LEN]) -> (usize, u128) {
        let mut h = self.hasher.build_hasher();
        h.write(nonce);
        let h1 = h.finish();
        h.write_u8(0x5a);
        let h2 = h.finish();
        let block = (h1 % FILTER_BLOCKS as u64) as usize;
        let bits = u128::from(h1 >> FILTER_BLOCKS.trailing_zeros()) | (u128::from(h2) << 47);
        (block, bits)
    }

    /// Set the bits of one nonce in its block; true if they were all set already (a suspect).
    fn set_bits(&mut self, block: usize, mut bits: u128) -> bool {
        let block = &mut self.filter[self.base + block * 8..][..8];
        let mut all_set = true;
        for _ in 0..FILTER_HASHES {
            let bit = (bits & 511) as usize;
            bits >>= 9;
            let (word, mask) = (bit / 64, 1u64 << (bit % 64));
            all_set &= block[word] & mask != 0;
            block[word] |= mask;
        }
        all_set
    }

    /// Record the nonce of `row`.
    pub fn observe(&mut self, nonce: &[u8; NONCE_LEN], row: u64) {
        self.observed += 1;
        if let Some(all) = &mut self.exact {
            // Rows past 2^32 (an export of terabytes) are beyond the exact check.
            if let Ok(row) = u32::try_from(row) {
                let mut wide = [0u8; 16];
                wide[..NONCE_LEN].copy_from_slice(nonce);
                all.push(u128::from_be_bytes(wide) | u128::from(row));
            }
            return;
        }
        if self.observed > FILTER_ROWS {
            return;
        }
        self.allocate();
        let (block, bits) = self.slot(nonce);
        if self.set_bits(block, bits) {
            self.found.push((None, row));
        }
    }

    /// The reuse found: `(Some(earlier), later)` pairs when exact, `(None, suspect)` otherwise.
    pub fn finish(&mut self) -> Vec<(Option<u64>, u64)> {
        if let Some(all) = &mut self.exact {
            all.sort_unstable();
            let row = |v: u128| u64::from(v as u32);
            let mut first = None;
            for pair in all.windows(2) {
                if pair[0] >> 32 == pair[1] >> 32 {
                    let earliest = *first.get_or_insert(row(pair[0]));
                    self.found.push((Some(earliest), row(pair[1])));
                } else {
                    first = None;
                }
            }
            self.found.sort_by_key(|&(_, later)| later);
            all.clear();
        }
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

        let mut t = NonceTracker::new(true);
        for (nonce, row) in [(1u8, 0u64), (2, 1), (1, 2), (7, 3), (7, 4), (1, 5), (9, 6)] {
            t.observe(&[nonce; 12], row);
        }
        assert_eq!(t.finish(), vec![(Some(0), 2), (Some(3), 4), (Some(0), 5)]);
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

    #[test]
    fn observe_all_is_observe_in_order() {
        let mut batch: Vec<([u8; NONCE_LEN], u64)> = (0..5000u64)
            .map(|row| {
                let mut n = [0u8; NONCE_LEN];
                n[..8].copy_from_slice(&row.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
                (n, row)
            })
            .collect();
        batch.push((batch[17].0, 5000));
        let mut t = NonceTracker::new(false);
        t.observe_all(&batch[..2500]);
        t.observe_all(&batch[2500..]);
        assert_eq!(t.finish(), vec![(None, 5000)]);
    }
}
