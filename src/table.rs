// SPDX-License-Identifier: GPL-2.0

//! State layer: the remap table as the I/O path reads it, one published version at a time
//! (`Engine::table`, an `RcuBox`). A version is never changed once built; `commit` builds the
//! next one and publishes it.

#![forbid(unsafe_code)]

use crate::dm::{RcuBox, RcuWriter};
use crate::logic::cache::{self, Answered};
use crate::logic::remaps::{Entry, Route};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use kernel::prelude::*;

/// The remap table as the I/O path reads it: sorted entries, replaced as a whole, with its
/// region bitmap and lookup cache (both belong to this version: see `logic::cache`).
pub(crate) struct Table {
    pub(crate) entries: KVVec<Entry>,
    bits: KVVec<u64>,
    shift: u32,
    cache: KVVec<AtomicU32>,
}

impl crate::dm::Footprint for Table {
    fn footprint(&self) -> usize {
        let size = |n: usize, each: usize| n.saturating_mul(each);
        size(self.entries.capacity(), core::mem::size_of::<Entry>())
            .saturating_add(size(self.bits.capacity(), 8))
            .saturating_add(size(self.cache.capacity(), 4))
    }
}

impl Table {
    /// A table version over `entries`, for a main device of `main_blocks` blocks.
    pub(crate) fn build(entries: KVVec<Entry>, main_blocks: u64, cache_size: u32) -> Result<KBox<Table>> {
        let shift = cache::region_shift(main_blocks);
        let mut bits = KVVec::from_elem(0u64, cache::bitmap_words(main_blocks, shift), GFP_KERNEL)?;
        cache::bitmap_build(bits.as_mut_slice(), shift, entries.as_slice());
        let mut c = KVVec::with_capacity(cache_size as usize, GFP_KERNEL)?;
        for _ in 0..cache_size {
            c.push(AtomicU32::new(0), GFP_KERNEL)?;
        }
        Ok(KBox::new(Table { entries, bits, shift, cache: c }, GFP_KERNEL)?)
    }

    /// The first piece of `count` blocks from `first` (`logic::cache::route_cached`: the
    /// bitmap, then the cache, then the binary search), and how it was answered. No lock, no
    /// allocation: the I/O path calls it under RCU.
    #[inline]
    pub(crate) fn route(&self, first: u64, count: u64) -> (Route, Answered) {
        cache::route_cached(self.entries.as_slice(), self.bits.as_slice(), self.shift, self.cache.as_slice(), first, count)
    }
}

/// The published table (`Engine::table`), with a flag the I/O path reads without entering RCU:
/// whether the current version has no entry at all (no remap, no pending block), the state
/// of every device that has not started failing.
///
/// The flag may lag the pointer only on the safe side: it is cleared before a version with
/// entries is published and set after an empty one is, so a bio that sees it set may use the
/// main device exactly as it would under the previous version (as a bio that read the old
/// pointer just before the swap does).
pub(crate) struct Published {
    rcu: RcuBox<Table>,
    empty: AtomicBool,
    /// Set once for good ([`Published::hold_general`]): `empty` stays clear whatever is
    /// published, so every bio takes the general path (which checks the blocks in doubt).
    general: AtomicBool,
}

impl Published {
    /// Publishes the first version; returns the writer token too.
    pub(crate) fn new(t: KBox<Table>) -> (Self, RcuWriter<Table>) {
        let empty = AtomicBool::new(t.entries.is_empty());
        let (rcu, w) = RcuBox::new(t);
        (Self { rcu, empty, general: AtomicBool::new(false) }, w)
    }

    /// Whether the current version is empty (see the type's comment for the ordering).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        // Acquire pairs with the Release stores in `publish`.
        self.empty.load(Ordering::Acquire)
    }

    /// `RcuBox::read` of the current version.
    #[inline]
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Table) -> R) -> R {
        self.rcu.read(f)
    }

    /// The current version, for the writer.
    pub(crate) fn get<'a>(&'a self, w: &'a RcuWriter<Table>) -> &'a Table {
        self.rcu.get(w)
    }

    /// Publishes `new`, retiring the old version (`RcuBox::replace`).
    pub(crate) fn replace(&self, w: &mut RcuWriter<Table>, new: KBox<Table>) {
        self.publish(new, |new| self.rcu.replace(w, new));
    }

    /// Publishes `new` and frees every retired version now (`RcuBox::replace_sync`).
    pub(crate) fn replace_sync(&self, w: &mut RcuWriter<Table>, new: KBox<Table>) {
        self.publish(new, |new| self.rcu.replace_sync(w, new));
    }

    /// From now on no bio takes the fast path (blocks are in doubt: `engine::InDoubt`). Worker
    /// only, like `publish`, so the two never race.
    pub(crate) fn hold_general(&self) {
        self.general.store(true, Ordering::Relaxed);
        // SeqCst: ordered before the stores that make the doubt visible to the bios it fails.
        self.empty.store(false, Ordering::SeqCst);
    }

    fn publish(&self, new: KBox<Table>, swap: impl FnOnce(KBox<Table>)) {
        let empty = new.entries.is_empty() && !self.general.load(Ordering::Relaxed);
        if !empty {
            self.empty.store(false, Ordering::Release);
        }
        swap(new);
        if empty {
            self.empty.store(true, Ordering::Release);
        }
    }
}
