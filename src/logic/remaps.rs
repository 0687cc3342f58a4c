// SPDX-License-Identifier: GPL-2.0

//! The in-memory remap table: a sorted array of entries, read without locks by the I/O
//! path (the kernel publishes each new version under RCU) and rebuilt by the worker with
//! [`merge`] when a commit adds entries.
//!
//! A lookup is a binary search: O(log n), no allocation, no lock. A block is either not in
//! the table (its I/O goes to the main device), remapped to a pool block, or *pending*: a
//! read of it failed, so the next write to it is relocated (as disk firmware does).

/// Marks a pending entry in [`Entry::spare`]. Never a pool block: a spare has at most
/// [`super::format::MAX_POOL_BLOCKS`] (`u32::MAX`) of them, numbered from 0.
pub const PENDING: u32 = u32::MAX;

/// One table entry: 12 bytes, packed to 4-byte alignment (a `u64` and a `u32`, no padding),
/// so a table of a million remaps takes 12 MB, not 16. Never borrow a field (`&e.main` does
/// not compile for a packed struct); read it by value.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// Main-device block (target-relative, in relocation blocks).
    pub main: u64,
    /// Pool block, or [`PENDING`].
    pub spare: u32,
}

impl Entry {
    /// Whether this block is pending (unreadable, not yet relocated).
    pub fn is_pending(&self) -> bool {
        self.spare == PENDING
    }

    /// `main` remapped to pool block `pool`, if `pool` is one (below
    /// [`super::format::MAX_POOL_BLOCKS`]). Every pool block of a spare the loader accepted
    /// is (`loader::check_geometry` refuses a larger pool), so `None` means a caller's bug or
    /// an unchecked spare, never a value to truncate.
    pub fn remap(main: u64, pool: u64) -> Option<Entry> {
        u32::try_from(pool).ok().filter(|&p| p != PENDING).map(|spare| Entry { main, spare })
    }

    /// `main` pending.
    pub fn pending(main: u64) -> Entry {
        Entry { main, spare: PENDING }
    }

    /// The pool block, unless pending.
    pub fn pool(&self) -> Option<u64> {
        (!self.is_pending()).then_some(u64::from(self.spare))
    }
}

/// Where the first part of an I/O goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `blocks` blocks to the main device, unchanged.
    Main {
        /// Blocks covered.
        blocks: u64,
    },
    /// `blocks` blocks to the pool, starting at pool block `spare` (contiguous there too).
    Spare {
        /// First pool block.
        spare: u64,
        /// Blocks covered.
        blocks: u64,
    },
    /// `blocks` pending blocks.
    Pending {
        /// Blocks covered.
        blocks: u64,
    },
}

/// A write's first piece, given the blocks in doubt (`doubt`, any order: the new remaps of a
/// log write that failed, which the log may or may not hold). `None` if block `first` is in
/// doubt (the write must fail, since neither its main block nor its pool block is sure to be
/// the one the next load reads); otherwise the blocks from `first` (at most `blocks`) before
/// the next block in doubt.
pub fn doubt_clip(doubt: impl IntoIterator<Item = u64>, first: u64, blocks: u64) -> Option<u64> {
    let mut n = blocks;
    for d in doubt {
        if d == first {
            return None;
        }
        if d > first && d - first < n {
            n = d - first;
        }
    }
    Some(n)
}

/// Index of the first entry with `main >= block`.
pub fn lower_bound(t: &[Entry], block: u64) -> usize {
    t.partition_point(|e| e.main < block)
}

/// The entry for `block`, if any.
pub fn find(t: &[Entry], block: u64) -> Option<Entry> {
    t.get(lower_bound(t, block)).copied().filter(|e| e.main == block)
}

/// Routes the first part of an I/O covering blocks `first .. first + count` (`count > 0`).
/// The part returned never exceeds `count`; the caller sends the rest again.
pub fn route(t: &[Entry], first: u64, count: u64) -> Route {
    route_at(t, lower_bound(t, first), first, count)
}

/// [`route`], given `i = lower_bound(t, first)`.
pub fn route_at(t: &[Entry], i: usize, first: u64, count: u64) -> Route {
    let Some(e) = t.get(i) else { return Route::Main { blocks: count } };
    if e.main != first {
        return Route::Main { blocks: (e.main - first).min(count) };
    }
    // A run of consecutive entries of the same kind, contiguous in the pool too. One loop per
    // kind: each compares the 32-bit pool block once per entry.
    match e.pool() {
        None => Route::Pending { blocks: run(t, i, first, count, |next, _| next.is_pending()) },
        Some(spare) => {
            // In 64 bits: `spare + n` never wraps onto a smaller pool block, and a pending entry
            // (PENDING) never continues a remapped run.
            let blocks = run(t, i, first, count, |next, n| !next.is_pending() && u64::from(next.spare) == spare + n);
            Route::Spare { spare, blocks }
        }
    }
}

/// The length of the run starting at entry `i` (block `first`, which it holds), at most
/// `count`: entry `i + n` continues it if it holds block `first + n` and `same(entry, n)`.
#[inline(always)]
fn run(t: &[Entry], i: usize, first: u64, count: u64, same: impl Fn(&Entry, u64) -> bool) -> u64 {
    let mut n = 1u64;
    while n < count {
        match t.get(i + n as usize) {
            Some(next) if next.main == first + n && same(next, n) => n += 1,
            _ => break,
        }
    }
    n
}

/// Merges `add` (sorted by `main`, unique) into `old` (the same), writing into `out`, which
/// must hold `old.len() + add.len()` entries. On equal blocks the entry of `add` wins.
/// Returns the number of entries written.
pub fn merge(old: &[Entry], add: &[Entry], out: &mut [Entry]) -> usize {
    let (mut i, mut j, mut k) = (0, 0, 0);
    while i < old.len() || j < add.len() {
        let take_add = match (old.get(i), add.get(j)) {
            (Some(o), Some(a)) => {
                if o.main == a.main {
                    i += 1;
                }
                a.main <= o.main
            }
            (None, Some(_)) => true,
            _ => false,
        };
        if take_add {
            out[k] = add[j];
            j += 1;
        } else {
            out[k] = old[i];
            i += 1;
        }
        k += 1;
    }
    k
}

/// Sorts a batch of new entries by block and keeps one entry per block: a remap wins over
/// pending, and among remaps the highest pool block (the latest allocation). Returns the
/// number kept (at the front of `batch`).
pub fn sort_dedup(batch: &mut [Entry]) -> usize {
    batch.sort_unstable_by_key(|e| (e.main, !e.is_pending(), e.spare));
    let mut k = 0;
    for i in 0..batch.len() {
        if k > 0 && batch[k - 1].main == batch[i].main {
            batch[k - 1] = batch[i];
        } else {
            batch[k] = batch[i];
            k += 1;
        }
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn table(m: &BTreeMap<u64, u32>) -> Vec<Entry> {
        m.iter().map(|(&main, &spare)| Entry { main, spare }).collect()
    }

    fn model_route(m: &BTreeMap<u64, u32>, first: u64, count: u64) -> Route {
        let kind = |b: u64| m.get(&b).copied();
        match kind(first) {
            None => {
                let n = (0..count).take_while(|&i| kind(first + i).is_none()).count() as u64;
                Route::Main { blocks: n }
            }
            Some(PENDING) => {
                let n = (0..count).take_while(|&i| kind(first + i) == Some(PENDING)).count() as u64;
                Route::Pending { blocks: n }
            }
            Some(s) => {
                let n = (0..count).take_while(|&i| kind(first + i).map(u64::from) == Some(u64::from(s) + i)).count() as u64;
                Route::Spare { spare: u64::from(s), blocks: n }
            }
        }
    }

    #[test]
    fn routes_by_hand() {
        let t = [
            Entry { main: 10, spare: 0 },
            Entry { main: 11, spare: 1 },
            Entry { main: 12, spare: 5 },
            Entry { main: 20, spare: PENDING },
        ];
        assert_eq!(route(&t, 0, 8), Route::Main { blocks: 8 });
        assert_eq!(route(&t, 8, 8), Route::Main { blocks: 2 });
        assert_eq!(route(&t, 10, 8), Route::Spare { spare: 0, blocks: 2 });
        assert_eq!(route(&t, 12, 8), Route::Spare { spare: 5, blocks: 1 });
        assert_eq!(route(&t, 20, 8), Route::Pending { blocks: 1 });
        assert_eq!(route(&t, 21, 8), Route::Main { blocks: 8 });
        assert_eq!(find(&t, 12), Some(Entry { main: 12, spare: 5 }));
        assert_eq!(find(&t, 13), None);
    }

    #[test]
    fn entries_take_12_bytes_and_pool_blocks_fit_them() {
        assert_eq!(core::mem::size_of::<Entry>(), 12);
        assert_eq!(core::mem::align_of::<Entry>(), 4);
        assert_eq!(Entry::remap(7, 0), Some(Entry { main: 7, spare: 0 }));
        let last = crate::format::MAX_POOL_BLOCKS - 1;
        assert_eq!(Entry::remap(7, last).and_then(|e| e.pool()), Some(last));
        // PENDING and anything wider are not pool blocks: refused, never truncated.
        assert_eq!(Entry::remap(7, u64::from(PENDING)), None);
        assert_eq!(Entry::remap(7, 1 << 32), None);
        assert_eq!(Entry::remap(7, u64::MAX), None);
        assert_eq!(Entry::pending(7).pool(), None);
        assert!(Entry::pending(7).is_pending());
        // Ordered by block first, as the table is sorted.
        assert!(Entry { main: 1, spare: 9 } < Entry { main: 2, spare: 0 });
    }

    #[test]
    fn runs_near_the_top_of_the_pool() {
        let top = PENDING - 1; // the highest pool block
        let t = [
            Entry { main: 5, spare: top - 1 },
            Entry { main: 6, spare: top },
            Entry::pending(7),
            Entry::pending(8),
        ];
        assert_eq!(route(&t, 5, 8), Route::Spare { spare: u64::from(top) - 1, blocks: 2 });
        assert_eq!(route(&t, 6, 8), Route::Spare { spare: u64::from(top), blocks: 1 });
        // A pending entry after the highest pool block does not extend the run (no wrap).
        assert_eq!(route(&t, 7, 8), Route::Pending { blocks: 2 });
    }

    proptest! {
        /// Random remap sequences applied with sort_dedup + merge agree with a BTreeMap,
        /// and routing agrees with a block-by-block model.
        #[test]
        fn table_matches_model(
            batches in prop::collection::vec(
                prop::collection::vec((0u64..200, prop::option::of(0u32..400)), 0..20), 1..12),
            probes in prop::collection::vec((0u64..220, 1u64..40), 1..40),
        ) {
            let mut model = BTreeMap::new();
            let mut t: Vec<Entry> = Vec::new();
            for batch in batches {
                let mut add: Vec<Entry> = batch
                    .iter()
                    .map(|&(main, s)| Entry { main, spare: s.unwrap_or(PENDING) })
                    .collect();
                // Within a batch: a remap beats pending, a later pool block beats an earlier.
                let mut in_batch: BTreeMap<u64, u32> = BTreeMap::new();
                for e in &add {
                    let w = in_batch.entry(e.main).or_insert(e.spare);
                    let rank = |s: u32| (s != PENDING, s);
                    if rank(e.spare) > rank(*w) {
                        *w = e.spare;
                    }
                }
                model.extend(in_batch);
                let n = sort_dedup(&mut add);
                add.truncate(n);
                let mut out = vec![Entry::default(); t.len() + add.len()];
                let k = merge(&t, &add, &mut out);
                out.truncate(k);
                t = out;
                prop_assert_eq!(&t, &table(&model));
            }
            for (first, count) in probes {
                prop_assert_eq!(route(&t, first, count), model_route(&model, first, count));
            }
        }
    }

    #[test]
    fn doubt_clip_stops_before_and_refuses_doubtful_blocks() {
        assert_eq!(doubt_clip([], 5, 8), Some(8));
        assert_eq!(doubt_clip([5], 5, 8), None);
        assert_eq!(doubt_clip([9, 7, 100, 2], 5, 8), Some(2));
        assert_eq!(doubt_clip([13], 5, 8), Some(8));
        assert_eq!(doubt_clip([12], 5, 8), Some(7));
        assert_eq!(doubt_clip([u64::MAX, 0], u64::MAX - 1, 1), Some(1));
        assert_eq!(doubt_clip([u64::MAX], u64::MAX, 1), None);
    }

}
