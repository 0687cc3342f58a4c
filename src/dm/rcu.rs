// SPDX-License-Identifier: GPL-2.0

//! A heap value read under RCU and replaced by writers: readers (the I/O path) take no
//! lock and never wait; a writer publishes a new version and frees the old one after a
//! grace period, without waiting for it (polled grace periods: `get_state_synchronize_rcu`
//! and `poll_state_synchronize_rcu`), so a commit does not cost a grace period.

use super::bindings;
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::prelude::*;

/// How many replaced versions may wait for their grace period at once (see
/// [`RcuBox::replace`]); when all are in use, a replace waits for the oldest. A grace period
/// takes a few timer ticks; a relocation storm commits every millisecond or so.
const RETIRED: usize = 32;
/// How many bytes ([`Footprint`]) they may hold together: large tables (a million remaps is
/// 16 MiB) wait for their grace period sooner.
const RETIRED_BYTES: usize = 64 << 20;

/// The memory a version holds, for [`RETIRED_BYTES`].
pub(crate) trait Footprint {
    fn footprint(&self) -> usize;
}

/// The right to read an [`RcuBox`] without RCU protection and to replace its value. There is
/// one per box, made by [`RcuBox::new`]; keep it under the lock that serialises the writers.
/// `get` borrows it shared and `replace` exclusively, so no reference from `get` survives a
/// `replace`. It also holds the replaced versions until their grace period ends.
///
/// # Invariants
/// `retired[(head + i) % RETIRED]` for `i < len` are pointers from `KBox::into_raw`, owned by
/// this value, no longer reachable from the box, each with the RCU state cookie taken when it
/// was unpublished (`get_state_synchronize_rcu`), oldest first; readers may still hold them
/// until that cookie's grace period has ended.
pub(crate) struct RcuWriter<T> {
    retired: [(*mut T, core::ffi::c_ulong, usize); RETIRED],
    head: usize,
    len: usize,
    /// Sum of the retired versions' footprints.
    bytes: usize,
}

// SAFETY: the retired versions are owned values of `T`; only the owner of the writer touches
// them.
unsafe impl<T: Send> Send for RcuWriter<T> {}
// SAFETY: `&RcuWriter` gives no access to the retired versions.
unsafe impl<T: Sync> Sync for RcuWriter<T> {}

impl<T> RcuWriter<T> {
    /// Frees the retired versions whose grace period has ended. Never sleeps.
    pub(crate) fn reap(&mut self) {
        while self.len > 0 {
            let (p, cookie, _) = self.retired[self.head];
            // SAFETY: plain call on a cookie from `get_state_synchronize_rcu`.
            if !unsafe { bindings::poll_state_synchronize_rcu(cookie) } {
                break;
            }
            self.pop_free(p);
        }
    }

    /// Frees the oldest retired version, `p`, whose grace period has ended.
    fn pop_free(&mut self, p: *mut T) {
        self.bytes = self.bytes.saturating_sub(self.retired[self.head].2);
        self.head = (self.head + 1) % RETIRED;
        self.len -= 1;
        // SAFETY: type invariant: `p` came from `KBox::into_raw`, is owned here and no reader can still see it (its grace period ended); it leaves the ring above, so it is freed once.
        drop(unsafe { KBox::from_raw(p) });
    }

    /// Frees every retired version after a grace period. Sleeps.
    fn drain_sync(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: process context (callers' documented requirement).
        unsafe { bindings::synchronize_rcu() };
        while self.len > 0 {
            let (p, _, _) = self.retired[self.head];
            self.pop_free(p);
        }
    }
}

impl<T> Drop for RcuWriter<T> {
    fn drop(&mut self) {
        // The target's teardown (process context): wait once for all of them.
        self.drain_sync();
    }
}

/// An RCU-protected `KBox<T>`.
///
/// # Invariants
/// `ptr` is always a pointer from `KBox::into_raw`, owned by this value; replaced versions
/// go to the writer and are freed only after a grace period.
pub(crate) struct RcuBox<T> {
    ptr: AtomicPtr<T>,
}

// SAFETY: readers only get `&T`; the value moves between threads through the box.
unsafe impl<T: Send + Sync> Send for RcuBox<T> {}
// SAFETY: see `Send`.
unsafe impl<T: Send + Sync> Sync for RcuBox<T> {}

impl<T> RcuBox<T> {
    /// Wraps an initial value; returns the box and its writer token.
    pub(crate) fn new(v: KBox<T>) -> (Self, RcuWriter<T>) {
        let w = RcuWriter { retired: [(core::ptr::null_mut(), 0, 0); RETIRED], head: 0, len: 0, bytes: 0 };
        (Self { ptr: AtomicPtr::new(KBox::into_raw(v)) }, w)
    }

    /// Runs `f` on the current version inside an RCU read-side critical section. `f` must
    /// not sleep. Usable in any context.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        // SAFETY: plain rcu_read_lock.
        unsafe { bindings::dmr_rcu_read_lock() };
        // Acquire pairs with the Release in `replace`: the new version's contents are
        // visible before its pointer (what rcu_dereference/rcu_assign_pointer ensure).
        let p = self.ptr.load(Ordering::Acquire);
        // A replaced version is freed only after every reader that may hold it has left.
        // SAFETY: type invariant: `p` is valid for the whole critical section.
        let r = f(unsafe { &*p });
        // SAFETY: pairs with the lock above.
        unsafe { bindings::dmr_rcu_read_unlock() };
        r
    }

    /// The current version, for the writer.
    pub(crate) fn get<'a>(&'a self, _w: &'a RcuWriter<T>) -> &'a T {
        // SAFETY: only the writer frees versions, and `replace` needs it exclusively.
        unsafe { &*self.ptr.load(Ordering::Acquire) }
    }

    /// Publishes `new`; the previous version is freed once a grace period has passed, by a
    /// later `replace` or [`RcuWriter::reap`], without waiting here: a commit must not wait
    /// for a grace period (several ticks) per batch. Sleeps only when [`RETIRED`] versions or
    /// [`RETIRED_BYTES`] still wait: then it waits for the oldest ones. Process context;
    /// callers serialise writers.
    pub(crate) fn replace(&self, w: &mut RcuWriter<T>, new: KBox<T>)
    where
        T: Footprint,
    {
        let old = self.ptr.swap(KBox::into_raw(new), Ordering::AcqRel);
        // SAFETY: plain call; the cookie marks the moment `old` became unreachable.
        let cookie = unsafe { bindings::get_state_synchronize_rcu() };
        // SAFETY: `old` came from `KBox::into_raw` (type invariant) and is not freed yet.
        let bytes = unsafe { &*old }.footprint();
        w.reap();
        while w.len == RETIRED || (w.len > 0 && w.bytes.saturating_add(bytes) > RETIRED_BYTES) {
            let (p, oldest, _) = w.retired[w.head];
            // SAFETY: process context (documented requirement).
            unsafe { bindings::cond_synchronize_rcu(oldest) };
            w.pop_free(p);
        }
        w.retired[(w.head + w.len) % RETIRED] = (old, cookie, bytes);
        w.len += 1;
        w.bytes = w.bytes.saturating_add(bytes);
    }

    /// Like [`RcuBox::replace`], but frees the previous version (and every retired one)
    /// before returning: for a replace that leaves a large version behind once (the first
    /// resume's reload), so it is not held until the next commit. Sleeps.
    pub(crate) fn replace_sync(&self, w: &mut RcuWriter<T>, new: KBox<T>)
    where
        T: Footprint,
    {
        self.replace(w, new);
        w.drain_sync();
    }
}

impl<T> Drop for RcuBox<T> {
    fn drop(&mut self) {
        // SAFETY: type invariant; no reader exists once the owner is dropped.
        drop(unsafe { KBox::from_raw(*self.ptr.get_mut()) });
    }
}
