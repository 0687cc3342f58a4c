// SPDX-License-Identifier: GPL-2.0

//! A target's worker: an owned workqueue, one work item, and an irq-safe queue of bios.
//!
//! `end_io` may run in interrupt context, where nothing may sleep; work that must sleep
//! (relocating data, writing metadata) is handed to the worker with the bio held.

use super::bindings;
use super::bio::HeldBio;
use core::ffi::{c_void, CStr};
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use kernel::prelude::*;
use kernel::types::Opaque;

/// What the worker runs.
pub(crate) trait WorkHandler: Send + Sync {
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
    ctx: AtomicPtr<c_void>,
    scan: Opaque<bindings::delayed_work>,
    /// `work` and `scan` are initialised (by `bind`).
    bound: AtomicBool,
}

/// An owned workqueue running a [`WorkHandler`]. Dropping it drains and destroys the
/// workqueue: no work runs after the drop returns.
pub(crate) struct Worker<P: Copy + Send> {
    // INVARIANT: `inner` is heap-allocated, its `work`, `queue` and `wq` initialised in
    // `new`, and stays at the same address until drop.
    inner: KBox<Inner>,
    _p: PhantomData<P>,
}

// SAFETY: the queue is protected by its spinlock, the work item by the workqueue core; the
// handler pointer is set once before use (atomically).
unsafe impl<P: Copy + Send> Send for Worker<P> {}
// SAFETY: see `Send`; `&Worker` only pushes (locked) and queues work (thread-safe).
unsafe impl<P: Copy + Send> Sync for Worker<P> {}

/// Runs `f` on the handler in a NOIO scope (the worker completes I/O: its allocations must not
/// wait for I/O, to this very device possibly).
///
/// # Safety
/// `inner` must be a bound worker's state.
unsafe fn run<H: WorkHandler>(inner: &Inner, f: impl FnOnce(&H)) {
    let ctx = inner.ctx.load(Ordering::Acquire) as *const H;
    if ctx.is_null() {
        return;
    }
    // SAFETY: plain memalloc_noio_save, restored below on the same task.
    let flags = unsafe { bindings::dmr_noio_save() };
    // The worker is drained when dropped, before the rest of the handler that owns it.
    // SAFETY: `bind` stored a handler that owns this worker, so it outlives every run.
    f(unsafe { &*ctx });
    // SAFETY: pairs with the save above.
    unsafe { bindings::dmr_noio_restore(flags) };
}

unsafe extern "C" fn scan_fn<H: WorkHandler>(work: *mut bindings::work_struct) {
    // `work` is the `work` field (offset 0) of `Inner::scan`.
    let off = core::mem::offset_of!(Inner, scan);
    // SAFETY: only `bind` registers this function, for the `scan` field of an `Inner`.
    let inner = unsafe { &*((work as *const u8).sub(off) as *const Inner) };
    // SAFETY: a bound worker.
    unsafe { run::<H>(inner, |h| h.scan()) };
}

unsafe extern "C" fn work_fn<H: WorkHandler>(work: *mut bindings::work_struct) {
    // SAFETY: `work` is the first field of a `#[repr(C)]` `Inner` (`Opaque` is transparent).
    let inner = unsafe { &*(work as *const Inner) };
    // SAFETY: a bound worker.
    unsafe { run::<H>(inner, |h| h.work()) };
}

impl<P: Copy + Send> Worker<P> {
    /// Creates the workqueue, named `name` in `ps` output.
    pub(crate) fn new(name: &CStr) -> Result<Self> {
        let mut inner = KBox::new(
            Inner {
                work: Opaque::uninit(),
                queue: Opaque::uninit(),
                wq: core::ptr::null_mut(),
                ctx: AtomicPtr::new(core::ptr::null_mut()),
                scan: Opaque::uninit(),
                bound: AtomicBool::new(false),
            },
            GFP_KERNEL,
        )?;
        // SAFETY: `name` is NUL-terminated.
        let wq = unsafe { bindings::dmr_alloc_workqueue(name.as_ptr()) };
        if wq.is_null() {
            return Err(ENOMEM);
        }
        inner.wq = wq;
        // SAFETY: `queue` is ours and not yet shared.
        unsafe { bindings::dmr_bio_queue_init(inner.queue.get()) };
        Ok(Self { inner, _p: PhantomData })
    }

    /// Makes `handler` the one the worker runs. `handler` must own this worker (so it lives
    /// as long as the worker); call once, before anything is queued.
    pub(crate) fn bind<H: WorkHandler<PerBio = P>>(&self, handler: &H) {
        // `Opaque` allows writing them through a shared reference.
        // SAFETY: nothing is queued yet, so nobody else touches `work` and `scan`.
        unsafe {
            bindings::dmr_init_work(self.inner.work.get(), Some(work_fn::<H>));
            bindings::dmr_init_delayed_work(self.inner.scan.get(), Some(scan_fn::<H>));
        }
        self.inner.ctx.store(handler as *const H as *mut c_void, Ordering::Release);
        self.inner.bound.store(true, Ordering::Release);
    }

    pub(super) fn push(&self, bio: *mut bindings::bio) {
        // SAFETY: the queue was initialised in `new` and is protected by its own lock.
        unsafe { bindings::dmr_bio_queue_push(self.inner.queue.get(), bio) };
        self.kick();
    }

    /// Makes the worker run (again) soon.
    pub(crate) fn kick(&self) {
        // SAFETY: `wq` and `work` were initialised in `new`/`bind`; queueing is thread-safe.
        unsafe { bindings::dmr_queue_work(self.inner.wq, self.inner.work.get()) };
    }

    /// Runs the handler's `scan` in `msecs` milliseconds (no-op if already scheduled).
    pub(crate) fn schedule_scan(&self, msecs: u32) {
        // SAFETY: `wq` and `scan` were initialised in `new`/`bind`; queueing is thread-safe.
        unsafe { bindings::dmr_queue_delayed_work(self.inner.wq, self.inner.scan.get(), msecs) };
    }

    /// Cancels a scheduled scan and waits for a running one to finish. Sleeps.
    pub(crate) fn cancel_scan(&self) {
        if !self.inner.bound.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: `scan` was initialised by `bind`.
        unsafe { bindings::dmr_cancel_delayed_work_sync(self.inner.scan.get()) };
    }

    /// The next queued bio, if any.
    pub(crate) fn pop(&self) -> Option<HeldBio<P>> {
        // SAFETY: see `push`.
        let bio = unsafe { bindings::dmr_bio_queue_pop(self.inner.queue.get()) };
        if bio.is_null() {
            None
        } else {
            // SAFETY: only `Bio::defer`/`Bio::hold` push, and popping transfers ownership.
            Some(unsafe { HeldBio::from_raw(bio) })
        }
    }
}

impl<P: Copy + Send> Drop for Worker<P> {
    fn drop(&mut self) {
        // A pending delayed work would fire after the queue is gone: cancel it first.
        self.cancel_scan();
        // SAFETY: `wq` was allocated in `new`; destroying it drains queued work first.
        unsafe { bindings::destroy_workqueue(self.inner.wq) };
        // Device-mapper completes all I/O before a target is destroyed, and the worker
        // completes every bio it pops, so the queue is empty here.
    }
}
