// SPDX-License-Identifier: GPL-2.0

//! State layer: the remap table as the I/O path reads it, one published version at a time
//! (`Engine::table`, an `RcuBox`). A version is never changed once built; `commit` builds the
//! next one and publishes it.

#![forbid(unsafe_code)]

use crate::logic::cache::{self, Answered};
use crate::logic::remaps::{Entry, Route};
use core::sync::atomic::AtomicU32;
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
