// SPDX-License-Identifier: GPL-2.0

//! A device opened by a target through `dm_get_device`.

use super::bindings;
use core::ffi::CStr;
use core::ptr::NonNull;
use kernel::prelude::*;
use kernel::sync::{Arc, CondVar, Mutex};

/// How many [`Dev`]s of one target are alive, and a wait for none.
#[pin_data]
struct Live {
    #[pin]
    count: Mutex<usize>,
    #[pin]
    none: CondVar,
}

/// The registration glue's count of a target's open devices. Dropping it waits until every
/// [`Dev`] it counted is dropped, so however a target shares its devices (an engine in an
/// `Arc`, a work item, a timer), none can be put after `dtr` returns and device-mapper frees
/// the `dm_target` its `dm_put_device` needs: sound by construction, not by each target's
/// care. A leaked `Dev` hangs `dtr` (the hung-task detector names it) instead of using
/// freed memory.
pub(super) struct DevTracker(Arc<Live>);

impl DevTracker {
    pub(super) fn new() -> Result<Self> {
        let live = Arc::pin_init(
            pin_init!(Live {
                count <- kernel::new_mutex!(0, "dm_remap_devs"),
                none <- kernel::new_condvar!("dm_remap_devs_none"),
            }),
            GFP_KERNEL,
        )?;
        Ok(Self(live))
    }
}

impl Drop for DevTracker {
    fn drop(&mut self) {
        let mut n = self.0.count.lock();
        while *n > 0 {
            self.0.none.wait(&mut n);
        }
    }
}

/// An underlying block device of a target, released with `dm_put_device` on drop.
///
/// # Invariants
/// `dev` was returned by `dm_get_device(ti, ...)` and is released only by `drop`. `ti`
/// outlives this value: `live` counts it, and the [`DevTracker`] of `ti`, dropped before
/// device-mapper frees `ti`, waits until it is dropped. `pool` is from `dmr_pool_alloc`,
/// freed only by `drop`.
pub(crate) struct Dev {
    ti: *mut bindings::dm_target,
    dev: *mut bindings::dm_dev,
    pool: NonNull<bindings::dmr_pool>,
    live: Arc<Live>,
}

// SAFETY: a `dm_dev` may be used from any CPU; `Dev` only reads it.
unsafe impl Send for Dev {}
// SAFETY: shared access only reads immutable fields of the `dm_dev` and its bdev.
unsafe impl Sync for Dev {}

impl Dev {
    /// # Safety
    /// `dev` must come from a successful `dm_get_device(ti, ...)`, and `devs` must be the
    /// tracker of `ti`, dropped before device-mapper frees `ti`. Ownership of the reference
    /// passes to the result, also on error (the device is put if its bio pool cannot be
    /// allocated).
    pub(super) unsafe fn from_raw(ti: *mut bindings::dm_target, dev: *mut bindings::dm_dev, devs: &DevTracker) -> kernel::error::Result<Self> {
        // SAFETY: plain allocation.
        match NonNull::new(unsafe { bindings::dmr_pool_alloc() }) {
            Some(pool) => {
                *devs.0.count.lock() += 1;
                // INVARIANT: counted above; `devs` waits for this value's drop (contract).
                Ok(Self { ti, dev, pool, live: devs.0.clone() })
            }
            None => {
                // SAFETY: per the contract, the reference is ours to put.
                unsafe { bindings::dm_put_device(ti, dev) };
                Err(kernel::error::code::ENOMEM)
            }
        }
    }

    pub(super) fn pool(&self) -> *mut bindings::dmr_pool {
        self.pool.as_ptr()
    }

    pub(super) fn as_ptr(&self) -> *mut bindings::dm_dev {
        self.dev
    }

    pub(super) fn bdev(&self) -> *mut bindings::block_device {
        // SAFETY: `dev` is valid (type invariant).
        unsafe { (*self.dev).bdev }
    }

    /// Size of the device in 512-byte sectors.
    pub(crate) fn sectors(&self) -> u64 {
        // SAFETY: the bdev of an open `dm_dev` is valid.
        unsafe { bindings::dmr_bdev_nr_sectors(self.bdev()) }
    }

    /// The device's logical block size in bytes.
    pub(crate) fn logical_block_size(&self) -> u32 {
        // SAFETY: the bdev of an open `dm_dev` is valid.
        unsafe { bindings::dmr_bdev_logical_block_size(self.bdev()) }
    }

    /// The device number as `(major, minor)`.
    pub(crate) fn devno(&self) -> (u32, u32) {
        // SAFETY: the bdev of an open `dm_dev` is valid.
        let d = unsafe { bindings::dmr_bdev_dev(self.bdev()) };
        // The kernel's dev_t layout: 12-bit major above a 20-bit minor.
        (d >> 20, d & ((1 << 20) - 1))
    }

    /// The name device-mapper prints for the device in table lines (`major:minor`).
    pub(crate) fn name(&self) -> &CStr {
        // SAFETY: `name` is a NUL-terminated array inside the valid `dm_dev`.
        unsafe { CStr::from_ptr((*self.dev).name.as_ptr()) }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // No I/O of ours is in flight: synchronous I/O waits for its bio.
        // SAFETY: type invariant: allocated in `from_raw`, freed once here.
        unsafe { bindings::dmr_pool_free(self.pool.as_ptr()) };
        // SAFETY: type invariant: `dev` is a reference of `ti`, put exactly once here, and `ti` is alive (its tracker waits for this drop).
        unsafe { bindings::dm_put_device(self.ti, self.dev) };
        let mut n = self.live.count.lock();
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.live.none.notify_all();
        }
    }
}
