// SPDX-License-Identifier: GPL-2.0

//! What sits in front of the table lookup, per table version, all lock-free:
//!
//! 1. a region bitmap: one bit per run of `2^shift` main blocks that holds any entry; an I/O
//!    in clean regions skips everything else (the no-remap path stays as cheap as possible);
//! 2. a 2-way set-associative LRU cache of table *positions* (way 0 most recent): for a block,
//!    its `lower_bound` index, which answers both "remapped here" and "not remapped" (the
//!    I/O path mostly looks up blocks that are not remapped). A position is only trusted
//!    after checking it against its neighbours in the table, so racing relaxed updates can
//!    cost a miss but never give a wrong answer.

use super::remaps::{lower_bound, route_at, Entry, Route};
use core::sync::atomic::{AtomicU32, Ordering};

/// Most bits in the region bitmap (4 KiB of memory).
pub const MAX_REGION_BITS: u64 = 32768;
/// Largest accepted cache size, entries.
pub const MAX_CACHE_SIZE: u32 = 65536;

/// The region shift for a device of `main_blocks` blocks: the smallest with at most
/// [`MAX_REGION_BITS`] regions.
pub fn region_shift(main_blocks: u64) -> u32 {
    let mut s = 0;
    while (main_blocks >> s) >= MAX_REGION_BITS {
        s += 1;
    }
    s
}

/// Words of bitmap needed for `main_blocks` blocks at `shift`.
pub fn bitmap_words(main_blocks: u64, shift: u32) -> usize {
    ((main_blocks >> shift) / 64 + 1) as usize
}

/// Marks the regions of every entry.
pub fn bitmap_build(bits: &mut [u64], shift: u32, t: &[Entry]) {
    bits.fill(0);
    // A sorted table has a region's entries side by side: its bit is set once.
    let mut last = usize::MAX;
    for e in t {
        let r = (e.main >> shift) as usize;
        if r == last {
            continue;
        }
        last = r;
        if let Some(w) = bits.get_mut(r / 64) {
            *w |= 1 << (r % 64);
        }
    }
}

/// Whether any region covering blocks `first .. first + count` holds an entry.
pub fn bitmap_any(bits: &[u64], shift: u32, first: u64, count: u64) -> bool {
    let (lo, hi) = (first >> shift, (first + count - 1) >> shift);
    (lo..=hi).any(|r| bits.get((r / 64) as usize).is_none_or(|w| w & (1 << (r % 64)) != 0))
}

/// How a lookup was answered, for the hit and miss counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    /// By the empty-table check or the bitmap: the cache was not consulted.
    Shortcut,
    /// By the cache.
    Hit,
    /// By the table (binary search), after the cache.
    Miss,
    /// By the table, with the cache disabled.
    Table,
}

fn set_of(slots: &[AtomicU32], block: u64) -> usize {
    let sets = slots.len() / 2;
    // Fibonacci hashing: spreads neighbouring blocks over the sets.
    ((block.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize) & (sets - 1)
}

/// Whether `i` is `lower_bound(t, block)`: the first entry at or after `block`.
fn is_position(t: &[Entry], block: u64, i: usize) -> bool {
    i <= t.len() && t.get(i).is_none_or(|e| e.main >= block) && (i == 0 || t[i - 1].main < block)
}

/// Looks `block` up in the cache: its position in the table (`lower_bound`), on a hit.
pub fn cache_get(slots: &[AtomicU32], t: &[Entry], block: u64) -> Option<usize> {
    if slots.len() < 2 {
        return None;
    }
    let s = 2 * set_of(slots, block);
    for way in 0..2 {
        let v = slots[s + way].load(Ordering::Relaxed);
        let Some(i) = (v as usize).checked_sub(1) else { continue };
        // The key is not stored: a position is valid for a range of blocks, and checking it
        // against the table is what makes it safe anyway.
        if is_position(t, block, i) {
            if way == 1 {
                // Make it the most recent.
                let other = slots[s].load(Ordering::Relaxed);
                slots[s].store(v, Ordering::Relaxed);
                slots[s + 1].store(other, Ordering::Relaxed);
            }
            return Some(i);
        }
    }
    None
}

/// Puts position `i` of `block` in the cache as the most recent of its set.
pub fn cache_put(slots: &[AtomicU32], block: u64, i: usize) {
    if slots.len() < 2 || i >= (u32::MAX - 1) as usize {
        return;
    }
    let s = 2 * set_of(slots, block);
    let mru = slots[s].load(Ordering::Relaxed);
    slots[s + 1].store(mru, Ordering::Relaxed);
    slots[s].store(i as u32 + 1, Ordering::Relaxed);
}

/// Routes the first part of an I/O like [`super::remaps::route`], through the bitmap and the
/// cache (empty `slots` disables the cache).
pub fn route_cached(
    t: &[Entry],
    bits: &[u64],
    shift: u32,
    slots: &[AtomicU32],
    first: u64,
    count: u64,
) -> (Route, Answered) {
    if t.is_empty() || !bitmap_any(bits, shift, first, count) {
        return (Route::Main { blocks: count }, Answered::Shortcut);
    }
    if slots.len() < 2 {
        return (route_at(t, lower_bound(t, first), first, count), Answered::Table);
    }
    if let Some(i) = cache_get(slots, t, first) {
        return (route_at(t, i, first, count), Answered::Hit);
    }
    let i = lower_bound(t, first);
    cache_put(slots, first, i);
    (route_at(t, i, first, count), Answered::Miss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remaps::{route, PENDING};
    use proptest::prelude::*;

    fn slots(n: usize) -> Vec<AtomicU32> {
        (0..n).map(|_| AtomicU32::new(0)).collect()
    }

    #[test]
    fn lru_within_a_set() {
        // Every block remapped, so each block has its own position.
        let t: Vec<Entry> = (0..1000).map(|b| Entry { main: b, spare: b as u32 }).collect();
        let c = slots(2); // one set, two ways
        cache_put(&c, 1, 1);
        cache_put(&c, 2, 2);
        assert_eq!(cache_get(&c, &t, 1), Some(1)); // hit in way 1: becomes most recent
        cache_put(&c, 3, 3); // evicts the least recent: 2
        assert_eq!(cache_get(&c, &t, 2), None);
        assert_eq!(cache_get(&c, &t, 1), Some(1));
        assert_eq!(cache_get(&c, &t, 3), Some(3));
    }

    #[test]
    fn stale_indexes_are_not_trusted() {
        let t = vec![Entry { main: 5, spare: 0 }];
        let c = slots(4);
        cache_put(&c, 9, 0); // block 9 is after entry 0 (block 5): its position is 1
        assert_eq!(cache_get(&c, &t, 9), None);
        let c = slots(4);
        cache_put(&c, 5, 7); // beyond the table
        assert_eq!(cache_get(&c, &t, 5), None);
        let c = slots(4);
        cache_put(&c, 3, 0); // a block before entry 0: position 0, valid
        assert_eq!(cache_get(&c, &t, 3), Some(0));
    }

    #[test]
    fn only_real_hits_count() {
        let t = vec![Entry { main: 100, spare: 0 }];
        let mut bits = vec![0u64; bitmap_words(1 << 20, region_shift(1 << 20))];
        let shift = region_shift(1 << 20);
        bitmap_build(&mut bits, shift, &t);
        let c = slots(256);
        // Far away: the bitmap answers.
        assert_eq!(route_cached(&t, &bits, shift, &c, 500_000, 1).1, Answered::Shortcut);
        assert_eq!(route_cached(&t, &bits, shift, &c, 100, 1), (Route::Spare { spare: 0, blocks: 1 }, Answered::Miss));
        assert_eq!(route_cached(&t, &bits, shift, &c, 100, 1), (Route::Spare { spare: 0, blocks: 1 }, Answered::Hit));
        // Same region, block not remapped: a miss, then a hit (its position is cached too).
        assert_eq!(route_cached(&t, &bits, shift, &c, 101, 1), (Route::Main { blocks: 1 }, Answered::Miss));
        assert_eq!(route_cached(&t, &bits, shift, &c, 101, 1), (Route::Main { blocks: 1 }, Answered::Hit));
        assert_eq!(route_cached(&[], &bits, shift, &c, 100, 1).1, Answered::Shortcut);
        assert_eq!(route_cached(&t, &bits, shift, &[], 100, 1).1, Answered::Table);
    }

    #[test]
    fn region_sizes() {
        assert_eq!(region_shift(1000), 0);
        assert_eq!(region_shift(MAX_REGION_BITS), 1);
        let s = region_shift(1 << 30);
        assert!((1u64 << 30) >> s < MAX_REGION_BITS && s > 0);
    }

    proptest! {
        /// Whatever the cache and bitmap hold, routing through them equals plain routing.
        #[test]
        fn cached_route_equals_route(
            blocks in prop::collection::btree_map(0u64..5000, prop::option::of(0u32..10_000), 0..200),
            probes in prop::collection::vec((0u64..5100, 1u64..20), 1..200),
            size_pow in 1u32..8,
        ) {
            let t: Vec<Entry> = blocks.iter().map(|(&main, s)| Entry { main, spare: s.unwrap_or(PENDING) }).collect();
            let shift = region_shift(5100);
            let mut bits = vec![0u64; bitmap_words(5100, shift)];
            bitmap_build(&mut bits, shift, &t);
            let c = slots(1 << size_pow);
            for &(first, count) in &probes {
                let plain = route(&t, first, count);
                prop_assert_eq!(route_cached(&t, &bits, shift, &c, first, count).0, plain);
                prop_assert_eq!(route_cached(&t, &bits, shift, &c, first, count).0, plain);
            }
        }
    }
}
