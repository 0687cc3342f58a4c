// SPDX-License-Identifier: GPL-2.0

//! Per-CPU counters: bumped on the I/O path without shared cache lines, summed when read.

use super::bindings;
use kernel::prelude::*;

/// `N` per-CPU `u64` counters.
///
/// # Invariants
/// `p` is an `alloc_percpu` area of `N` u64s, freed only on drop.
pub(crate) struct PerCpu<const N: usize> {
    p: *mut u64,
}

// SAFETY: per-CPU areas are meant to be used from every CPU; each CPU bumps its own copy.
unsafe impl<const N: usize> Send for PerCpu<N> {}
// SAFETY: see `Send`; sums read every copy with plain loads (a counter read may be slightly
// behind a concurrent increment, as with any statistic).
unsafe impl<const N: usize> Sync for PerCpu<N> {}

impl<const N: usize> PerCpu<N> {
    /// Allocates zeroed counters.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: plain allocation; the area is zeroed by alloc_percpu.
        let p = unsafe { bindings::dmr_pcpu_alloc(N as u32) };
        if p.is_null() {
            return Err(ENOMEM);
        }
        Ok(Self { p })
    }

    /// Adds `v` to counter `i` on this CPU.
    #[inline]
    pub(crate) fn add(&self, i: usize, v: u64) {
        if i < N {
            // SAFETY: `p` is a live per-CPU area of N counters (invariant); `i < N`.
            unsafe { bindings::dmr_pcpu_add(self.p, i as u32, v) };
        }
    }

    /// Adds `v` to counter `i` on this CPU and returns this CPU's new value (0 if `i` is out
    /// of range).
    #[inline]
    pub(crate) fn add_return(&self, i: usize, v: u64) -> u64 {
        if i < N {
            // SAFETY: as `add`.
            unsafe { bindings::dmr_pcpu_add_return(self.p, i as u32, v) }
        } else {
            0
        }
    }

    /// Counter `i` summed over all CPUs.
    pub(crate) fn sum(&self, i: usize) -> u64 {
        if i >= N {
            return 0;
        }
        // SAFETY: as `add`.
        unsafe { bindings::dmr_pcpu_sum(self.p, i as u32) }
    }

    /// Zeroes counter `i` on every CPU.
    pub(crate) fn zero(&self, i: usize) {
        if i < N {
            // SAFETY: as `add`.
            unsafe { bindings::dmr_pcpu_zero(self.p, i as u32) };
        }
    }
}

impl<const N: usize> Drop for PerCpu<N> {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` (invariant), freed once.
        unsafe { bindings::dmr_pcpu_free(self.p) };
    }
}

/// Nanoseconds of the monotonic clock.
pub(crate) fn now_ns() -> u64 {
    // SAFETY: reads the clock.
    unsafe { bindings::dmr_now_ns() }
}

/// Whether a rate-limited warning may be printed now (10 per 5 s, shared by the target).
pub(crate) fn ratelimit() -> bool {
    // SAFETY: uses a static ratelimit state.
    unsafe { bindings::dmr_ratelimit() }
}
