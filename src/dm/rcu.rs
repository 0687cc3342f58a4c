// SPDX-License-Identifier: GPL-2.0

//! A heap value read under RCU and replaced by writers: readers (the I/O path) take no
//! lock and never wait; a writer publishes a new version and frees the old one after a
//! grace period.

use super::bindings;
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::prelude::*;

/// The right to read an [`RcuBox`] without RCU protection and to replace its value. There is
/// one per box, made by [`RcuBox::new`]; keep it under the lock that serialises the writers.
/// `get` borrows it shared and `replace` exclusively, so no reference from `get` survives a
/// `replace`.
pub(crate) struct RcuWriter(());

/// An RCU-protected `KBox<T>`.
///
/// # Invariants
/// `ptr` is always a pointer from `KBox::into_raw`, owned by this value; replaced versions
/// are freed only after a grace period.
pub(crate) struct RcuBox<T> {
    ptr: AtomicPtr<T>,
}

// SAFETY: readers only get `&T`; the value moves between threads through the box.
unsafe impl<T: Send + Sync> Send for RcuBox<T> {}
// SAFETY: see `Send`.
unsafe impl<T: Send + Sync> Sync for RcuBox<T> {}

impl<T> RcuBox<T> {
    /// Wraps an initial value; returns the box and its writer token.
    pub(crate) fn new(v: KBox<T>) -> (Self, RcuWriter) {
        (Self { ptr: AtomicPtr::new(KBox::into_raw(v)) }, RcuWriter(()))
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
    pub(crate) fn get<'a>(&'a self, _w: &'a RcuWriter) -> &'a T {
        // SAFETY: only `replace` frees versions, and it needs the token exclusively.
        unsafe { &*self.ptr.load(Ordering::Acquire) }
    }

    /// Publishes `new` and frees the previous version after a grace period. Sleeps:
    /// process context only, and callers serialise writers.
    pub(crate) fn replace(&self, _w: &mut RcuWriter, new: KBox<T>) {
        let old = self.ptr.swap(KBox::into_raw(new), Ordering::AcqRel);
        // SAFETY: process context (documented requirement).
        unsafe { bindings::synchronize_rcu() };
        // SAFETY: `old` came from `KBox::into_raw` and no reader can still see it.
        drop(unsafe { KBox::from_raw(old) });
    }
}

impl<T> Drop for RcuBox<T> {
    fn drop(&mut self) {
        // SAFETY: type invariant; no reader exists once the owner is dropped.
        drop(unsafe { KBox::from_raw(*self.ptr.get_mut()) });
    }
}
