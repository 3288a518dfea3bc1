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

use crate::format::record::NONCE_LEN;

/// Inputs at least this large get their filter prefaulted (see [`NonceTracker::expect_input`]).
const PREFAULT_BYTES: u64 = 4 << 20;

/// Bits in the decrypt-side filter (8 MiB).
const FILTER_BITS: usize = 1 << 26;
/// 512-bit blocks (cache lines) in the filter.
const FILTER_BLOCKS: usize = FILTER_BITS / 512;
/// Bits set per nonce, all in one block: 12 indices of 9 bits from 111 bits of hash.
const FILTER_HASHES: u32 = 12;

/// A transparent huge page on x86_64 and most aarch64 Linux systems.
#[cfg(target_os = "linux")]
const HUGE_PAGE: usize = 2 << 20;

/// Rows the filter covers before its false-positive rate would make warnings noise.
pub const FILTER_ROWS: u64 = 1_000_000;

/// Bytes in the filter.
const FILTER_BYTES: usize = FILTER_BITS / 8;

/// The filter's memory: `FILTER_BYTES` zeroed bytes on (at least) a 64-byte boundary, so that each
/// block is one cache line.
///
/// On Linux it is an anonymous mapping of its own (`memmap2`), 2 MiB longer than the filter, which
/// starts at the first 2 MiB boundary inside it and is advised to be backed by transparent huge
/// pages. The filter is probed at random, so with 4 KiB pages nearly every probe misses the TLB
/// and a 100k-row export touches all 2048 pages, each a page fault (issue 3: ~5,000 faults in all
/// were a visible part of a 100k-row decrypt; aligned huge pages leave 4). It is mapped directly
/// rather than allocated because malloc raises its mmap threshold to the size of a freed large
/// block: after one input's filter was freed, the next input's came from the heap, zeroed by a
/// memset that touched the spare 2 MiB too (`decrypt --output-dir` with three inputs peaked at
/// 18.2 MiB instead of 14.9). Untouched pages of a mapping cost address space, not memory.
///
/// The filter is bytes, as `memmap2` hands the mapping out (`&mut [u8]`), so there is no cast and
/// no `unsafe` here; [`set_bits`] still tests and sets each bit in a `u64` loaded from 8 of them.
/// `memmap2` unmaps the mapping on drop.
enum FilterMemory {
    /// `map[start..start + FILTER_BYTES]` is the filter; `start` is on a 2 MiB boundary.
    #[cfg(target_os = "linux")]
    Mapped { map: memmap2::MmapMut, start: usize },
    /// Elsewhere, or when the mapping fails: zeroed heap memory; the filter starts at `start`.
    Heap { vec: Vec<u8>, start: usize },
}

impl FilterMemory {
    /// Zeroed filter memory; with `prefault`, backed by the kernel in one call instead of one
    /// page fault at a time as rows land in it.
    fn new(prefault: bool) -> FilterMemory {
        #[cfg(target_os = "linux")]
        if let Some(mapped) = FilterMemory::map(prefault) {
            return mapped;
        }
        let _ = prefault;
        let vec = vec![0u8; FILTER_BYTES + 63];
        let start = align_up(vec.as_ptr(), 64);
        FilterMemory::Heap { vec, start }
    }

    #[cfg(target_os = "linux")]
    fn map(prefault: bool) -> Option<FilterMemory> {
        use memmap2::Advice;
        // A private anonymous mapping: zero-filled, backed only as it is touched.
        let map = memmap2::MmapMut::map_anon(FILTER_BYTES + HUGE_PAGE).ok()?;
        let start = align_up(map.as_ptr(), HUGE_PAGE);
        // Advice only, so the results are deliberately ignored: a kernel without transparent huge
        // pages, or with none free, or older than 5.14 (MADV_POPULATE_WRITE), leaves the lazy
        // default of 4 KiB pages faulted in as rows land. MADV_POPULATE_WRITE faults the range
        // in (zeroed, as it would be anyway); it never changes its contents.
        let _ = map.advise_range(Advice::HugePage, start, FILTER_BYTES);
        if prefault {
            let _ = map.advise_range(Advice::PopulateWrite, start, FILTER_BYTES);
        }
        Some(FilterMemory::Mapped { map, start })
    }

    /// The filter's bytes.
    #[inline]
    fn bytes(&mut self) -> &mut [u8] {
        match self {
            #[cfg(target_os = "linux")]
            FilterMemory::Mapped { map, start } => &mut map[*start..*start + FILTER_BYTES],
            FilterMemory::Heap { vec, start } => &mut vec[*start..*start + FILTER_BYTES],
        }
    }
}

/// How many bytes from `ptr` to the next multiple of `align` (a power of two) in the address
/// space, or 0 if `ptr` is one.
fn align_up(ptr: *const u8, align: usize) -> usize {
    ptr.addr().next_multiple_of(align) - ptr.addr()
}

/// Watches the nonces of one export, in row order.
pub struct NonceTracker {
    /// Exact mode: one `nonce << 32 | row` per row (16 bytes a row, a fifth of a hash map's cost),
    /// sorted once at the end so equal nonces sit together with their rows in order.
    exact: Option<Vec<u128>>,
    /// The filter, allocated on the first nonce observed.
    filter: Option<FilterMemory>,
    hasher: std::collections::hash_map::RandomState,
    observed: u64,
    found: Vec<(Option<u64>, u64)>,
    /// Scratch for [`NonceTracker::observe_all`]: (block, bit indices) per nonce.
    slots: Vec<(usize, u128)>,
    /// Fault the whole filter in at once when it is made (see [`NonceTracker::expect_input`]).
    prefault: bool,
}

impl NonceTracker {
    /// An exact tracker (`exact`), or a fixed-memory probabilistic one.
    pub fn new(exact: bool) -> NonceTracker {
        NonceTracker {
            exact: exact.then(Vec::new),
            filter: None,
            hasher: std::collections::hash_map::RandomState::new(),
            observed: 0,
            found: Vec::new(),
            slots: Vec::new(),
            prefault: false,
        }
    }

    /// Tell the tracker how big the input is (`None`: a stream of unknown size). An export of
    /// more than a few thousand rows touches every page of the filter, so for one of at least
    /// `PREFAULT_BYTES` (or of unknown size) the filter is faulted in with one call when it is
    /// made: on a host without free huge pages that replaced 2048 page faults and cut a 100k-row
    /// decrypt from 52 to 45 ms (issue 3). A small file keeps the lazy filter (a one-row export
    /// would pay 0.8 ms to zero 8 MiB it never uses).
    pub fn expect_input(&mut self, total_bytes: Option<u64>) {
        self.prefault = total_bytes.is_none_or(|n| n >= PREFAULT_BYTES);
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
        let mut slots = std::mem::take(&mut self.slots);
        slots.clear();
        slots.extend(batch.iter().map(|(nonce, _)| self.slot(nonce)));
        let prefault = self.prefault;
        let bytes = self
            .filter
            .get_or_insert_with(|| FilterMemory::new(prefault))
            .bytes();
        // A tight loop of independent loads: the CPU keeps many misses in flight.
        let touched = slots.iter().fold(0u8, |acc, &(b, _)| acc ^ bytes[b * 64]);
        std::hint::black_box(touched);
        for (&(b, bits), (_, row)) in slots.iter().zip(batch) {
            self.observed += 1;
            if set_bits(bytes, b, bits) {
                self.found.push((None, *row));
            }
        }
        self.slots = slots;
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
        let (block, bits) = self.slot(nonce);
        let prefault = self.prefault;
        let bytes = self
            .filter
            .get_or_insert_with(|| FilterMemory::new(prefault))
            .bytes();
        if set_bits(bytes, block, bits) {
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

/// Set the bits of one nonce in its 64-byte block of `bytes`; true if they were all set already
/// (a suspect). The block is handled as eight `u64` words, each loaded and stored as 8 bytes: on
/// x86_64 that compiles to the word loads and `bt`/`bts` of a `&mut [u64]` filter, where testing
/// single bytes cost 66 more instructions a row (callgrind, 100k rows).
#[inline]
fn set_bits(bytes: &mut [u8], block: usize, mut bits: u128) -> bool {
    let block = &mut bytes[block * 64..][..64];
    let mut all_set = true;
    for _ in 0..FILTER_HASHES {
        let bit = (bits & 511) as usize;
        bits >>= 9;
        let word: &mut [u8; 8] = (&mut block[bit / 64 * 8..][..8])
            .try_into()
            .expect("8 bytes");
        let (value, mask) = (u64::from_ne_bytes(*word), 1u64 << (bit % 64));
        all_set &= value & mask != 0;
        *word = (value | mask).to_ne_bytes();
    }
    all_set
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
    fn filter_memory_is_zeroed_aligned_and_writable() {
        for prefault in [false, true] {
            let mut f = FilterMemory::new(prefault);
            #[cfg(target_os = "linux")]
            assert!(matches!(f, FilterMemory::Mapped { .. }));
            let bytes = f.bytes();
            assert_eq!(bytes.len(), FILTER_BYTES);
            assert_eq!(bytes.as_ptr().addr() % 64, 0);
            #[cfg(target_os = "linux")]
            assert_eq!(bytes.as_ptr().addr() % HUGE_PAGE, 0);
            assert!(bytes.iter().step_by(4099).all(|&b| b == 0));
            bytes[0] = 1;
            bytes[FILTER_BYTES - 1] = u8::MAX;
            assert_eq!((bytes[0], bytes[FILTER_BYTES - 1]), (1, u8::MAX));
        }
        let mut heap = FilterMemory::Heap {
            vec: vec![0; FILTER_BYTES + 63],
            start: 3,
        };
        assert_eq!(heap.bytes().len(), FILTER_BYTES);
        assert_eq!(align_up(std::ptr::without_provenance(4096 + 1), 64), 63);
        assert_eq!(align_up(std::ptr::without_provenance(4096), 64), 0);
    }

    #[test]
    fn the_filter_is_prefaulted_for_big_or_unknown_inputs_only() {
        let mut t = NonceTracker::new(false);
        assert!(!t.prefault);
        for (total, prefault) in [
            (Some(0), false),
            (Some(PREFAULT_BYTES - 1), false),
            (Some(PREFAULT_BYTES), true),
            (Some(u64::MAX), true),
            (None, true),
        ] {
            t.expect_input(total);
            assert_eq!(t.prefault, prefault, "{total:?}");
        }
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
