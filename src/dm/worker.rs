// SPDX-License-Identifier: GPL-2.0

//! A target's worker: an owned workqueue, one work item, a delayed work item for the scan,
//! and an irq-safe queue of bios.
//!
//! `end_io` may run in interrupt context, where nothing may sleep; work that must sleep
//! (relocating data, writing metadata) is handed to the worker with the bio held.
//!
//! The worker holds a strong reference to its handler while bound ([`Worker::bind`]), so
//! no run of the work can outlive the handler, whoever owns the worker. A handler that owns
//! its worker makes a reference cycle, which its owner breaks with [`Worker::unbind`] when
//! the target is destroyed.

use super::bindings;
use super::bio::HeldBio;
use core::ffi::{c_void, CStr};
use core::marker::PhantomData;
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::Opaque;

/// What the worker runs.
pub(crate) trait WorkHandler: Send + Sync + 'static {
    /// The per-bio type of the bios queued to the worker.
    type PerBio: Copy + Send;
    /// Runs in process context, one instance at a time; pops (from the worker it owns) and
    /// completes queued bios.
    fn work(&self);

    /// Runs when the delayed scan work fires (see [`Worker::schedule_scan`]), on the same
    /// ordered workqueue, so never at the same time as `work`.
    fn scan(&self) {}
}

/// The worker's state. The C fields are `Opaque`: the workqueue core and the queue's lock
/// change them while Rust holds `&Inner`.
#[repr(C)]
struct Inner {
    // `work` first: the work function finds `Inner` from it.
    work: Opaque<bindings::work_struct>,
    queue: Opaque<bindings::dmr_bio_queue>,
    wq: *mut bindings::workqueue_struct,
    /// The bound handler (an `Arc::into_raw` pointer), or null.
    ctx: AtomicPtr<c_void>,
    scan: Opaque<bindings::delayed_work>,
}

/// An owned workqueue running a [`WorkHandler`]. Dropping it drains and destroys the
/// workqueue: no work runs after the drop returns.
///
/// # Invariants
/// - `inner` is heap-allocated and stays at the same address until drop; its `work`,
///   `scan` (with the work functions for `H`), `queue` and `wq` are initialised in `new`.
/// - `inner.ctx` is null or a pointer from `Arc::<H>::into_raw` whose strong reference the
///   worker owns; it is released only after every run that may have read it has finished.
pub(crate) struct Worker<H: WorkHandler> {
    inner: KBox<Inner>,
    _p: PhantomData<Arc<H>>,
}

// SAFETY: the queue is protected by its spinlock, the work items by the workqueue core, the
// handler pointer is an atomic, and the handler itself is `Send + Sync`.
unsafe impl<H: WorkHandler> Send for Worker<H> {}
// SAFETY: see `Send`; `&Worker` only pushes and pops (locked), queues or cancels work
// (thread-safe), and binds or unbinds (atomic swaps).
unsafe impl<H: WorkHandler> Sync for Worker<H> {}

/// Runs `f` on the bound handler, if any, in a NOIO scope (the worker completes I/O: its
/// allocations must not wait for I/O, to this very device possibly).
///
/// # Safety
/// `inner` must be the state of a `Worker<H>`, and the call must come from one of its work
/// items' functions (so that `unbind` and `drop` wait for it).
unsafe fn run<H: WorkHandler>(inner: &Inner, f: impl FnOnce(&H)) {
    let ctx = inner.ctx.load(Ordering::Acquire) as *const H;
    if ctx.is_null() {
        return;
    }
    // SAFETY: plain memalloc_noio_save, restored below on the same task.
    let flags = unsafe { bindings::dmr_noio_save() };
    // SAFETY: type invariant: a non-null `ctx` is a strong reference the worker owns, and `unbind`/`drop` release it only after waiting for this run (we are a work item's run).
    f(unsafe { &*ctx });
    // SAFETY: pairs with the save above.
    unsafe { bindings::dmr_noio_restore(flags) };
}

/// The scan's work function.
///
/// # Safety
/// Called by the workqueue core only, for the `scan` work item of a `Worker<H>`, which
/// `Worker::<H>::new` initialised with this function.
unsafe extern "C" fn scan_fn<H: WorkHandler>(work: *mut bindings::work_struct) {
    // `work` is the `work` field (offset 0) of `Inner::scan`.
    let off = core::mem::offset_of!(Inner, scan);
    // SAFETY: only `new` registers this function, for the `scan` field of an `Inner`.
    let inner = unsafe { &*((work as *const u8).sub(off) as *const Inner) };
    // SAFETY: a `Worker<H>`'s state, from its work item.
    unsafe { run::<H>(inner, |h| h.scan()) };
}

/// The main work function.
///
/// # Safety
/// Called by the workqueue core only, for the `work` item of a `Worker<H>`, which
/// `Worker::<H>::new` initialised with this function.
unsafe extern "C" fn work_fn<H: WorkHandler>(work: *mut bindings::work_struct) {
    // SAFETY: `work` is the first field of a `#[repr(C)]` `Inner` (`Opaque` is transparent).
    let inner = unsafe { &*(work as *const Inner) };
    // SAFETY: a `Worker<H>`'s state, from its work item.
    unsafe { run::<H>(inner, |h| h.work()) };
}

impl<H: WorkHandler> Worker<H> {
    /// Creates the workqueue, named `name` in `ps` output. The worker runs nothing until
    /// bound.
    pub(crate) fn new(name: &CStr) -> Result<Self> {
        let mut inner = KBox::new(
            Inner {
                work: Opaque::uninit(),
                queue: Opaque::uninit(),
                wq: core::ptr::null_mut(),
                ctx: AtomicPtr::new(core::ptr::null_mut()),
                scan: Opaque::uninit(),
            },
            GFP_KERNEL,
        )?;
        // SAFETY: `name` is NUL-terminated.
        let wq = unsafe { bindings::dmr_alloc_workqueue(name.as_ptr()) };
        if wq.is_null() {
            return Err(ENOMEM);
        }
        inner.wq = wq;
        // SAFETY: `inner` is ours and not yet shared: nothing else touches its C fields. `work_fn::<H>`/`scan_fn::<H>` are the functions for a `Worker<H>`'s items.
        unsafe {
            bindings::dmr_bio_queue_init(inner.queue.get());
            bindings::dmr_init_work(inner.work.get(), Some(work_fn::<H>));
            bindings::dmr_init_delayed_work(inner.scan.get(), Some(scan_fn::<H>));
        }
        // INVARIANT: all initialised above; `ctx` is null.
        Ok(Self { inner, _p: PhantomData })
    }

    /// Makes the worker run `handler`, keeping this reference to it until [`Worker::unbind`]
    /// (or the worker's drop). If the worker is already bound, hands `handler` back.
    pub(crate) fn bind(&self, handler: Arc<H>) -> core::result::Result<(), Arc<H>> {
        let p = Arc::into_raw(handler).cast_mut().cast::<c_void>();
        // INVARIANT: on success the worker owns the reference `into_raw` released.
        match self.inner.ctx.compare_exchange(core::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(()),
            // SAFETY: `p` came from `Arc::into_raw` above and was not stored.
            Err(_) => Err(unsafe { Arc::from_raw(p.cast::<H>()) }),
        }
    }

    /// Stops running the handler: no run uses it once this returns, and the reference
    /// `bind` took is handed back (`None` if unbound). Sleeps: not from the worker's own work.
    pub(crate) fn unbind(&self) -> Option<Arc<H>> {
        let p = self.inner.ctx.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if p.is_null() {
            return None;
        }
        // A run that read the pointer before the swap is still pending or running: wait for
        // both items; runs that start later read null.
        // SAFETY: `scan` and `work` were initialised in `new` (type invariant).
        unsafe {
            bindings::dmr_cancel_delayed_work_sync(self.inner.scan.get());
            bindings::flush_work(self.inner.work.get());
        }
        // SAFETY: type invariant: `p` is an `Arc<H>` reference the worker owned; the swap took it out of the worker, and no run uses it any more.
        Some(unsafe { Arc::from_raw(p.cast::<H>()) })
    }

    pub(super) fn push(&self, bio: *mut bindings::bio) {
        // SAFETY: the queue was initialised in `new` and is protected by its own lock.
        unsafe { bindings::dmr_bio_queue_push(self.inner.queue.get(), bio) };
        self.kick();
    }

    /// Makes the worker run (again) soon.
    pub(crate) fn kick(&self) {
        // SAFETY: `wq` and `work` were initialised in `new`; queueing is thread-safe.
        unsafe { bindings::dmr_queue_work(self.inner.wq, self.inner.work.get()) };
    }

    /// Runs the handler's `scan` in `msecs` milliseconds (no-op if already scheduled).
    pub(crate) fn schedule_scan(&self, msecs: u32) {
        // SAFETY: `wq` and `scan` were initialised in `new`; queueing is thread-safe.
        unsafe { bindings::dmr_queue_delayed_work(self.inner.wq, self.inner.scan.get(), msecs) };
    }

    /// Cancels a scheduled scan and waits for a running one to finish. Sleeps.
    pub(crate) fn cancel_scan(&self) {
        // SAFETY: `scan` was initialised in `new`.
        unsafe { bindings::dmr_cancel_delayed_work_sync(self.inner.scan.get()) };
    }

    /// The next queued bio, if any.
    pub(crate) fn pop(&self) -> Option<HeldBio<H::PerBio>> {
        // SAFETY: see `push`.
        let bio = unsafe { bindings::dmr_bio_queue_pop(self.inner.queue.get()) };
        if bio.is_null() {
            None
        } else {
            // SAFETY: only `Bio::defer`/`Bio::hold` push, for a worker with this per-bio type, and popping transfers ownership.
            Some(unsafe { HeldBio::from_raw(bio) })
        }
    }
}

impl<H: WorkHandler> Drop for Worker<H> {
    fn drop(&mut self) {
        // Still bound only if the handler does not own this worker; released after the drain.
        let p = self.inner.ctx.swap(core::ptr::null_mut(), Ordering::AcqRel);
        // A pending delayed work would fire after the queue is gone: cancel it first.
        self.cancel_scan();
        // SAFETY: `wq` was allocated in `new`; destroying it drains queued work first.
        unsafe { bindings::destroy_workqueue(self.inner.wq) };
        // Device-mapper completes all I/O before a target is destroyed, and the worker
        // completes every bio it pops, so the queue is empty here.
        if !p.is_null() {
            // SAFETY: type invariant: a reference the worker owned; the workqueue is gone, so no run uses it.
            drop(unsafe { Arc::from_raw(p.cast::<H>()) });
        }
    }
}
