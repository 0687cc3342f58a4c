// SPDX-License-Identifier: GPL-2.0

//! What a constructor works with: the table line's arguments ([`Args`], also given to
//! message handlers), the target being built ([`CtrContext`]) and the failure it reports
//! ([`CtrError`]).

use super::handle::Revoker;
use super::dev::DevTracker;
use super::{bindings, Dev, TargetHandle};
use core::ffi::{c_char, c_uint, CStr};
use core::marker::PhantomData;
use kernel::prelude::*;

/// A constructor failure: the errno returned to device-mapper and the message stored in
/// `ti->error`, which device-mapper logs and dmsetup reports.
pub(crate) struct CtrError {
    /// The errno (EINVAL for bad arguments, ENOMEM, or a device lookup's error).
    pub(crate) code: Error,
    /// The human-readable reason.
    pub(crate) msg: &'static CStr,
}

impl CtrError {
    /// An `EINVAL` failure with a message.
    pub(crate) fn inval(msg: &'static CStr) -> Self {
        Self { code: EINVAL, msg }
    }
}

/// The table line arguments given to a constructor.
///
/// # Invariants
/// Every non-null pointer in `argv` is a NUL-terminated string valid for `'a`.
pub(crate) struct Args<'a> {
    argv: &'a [*mut c_char],
}

impl<'a> Args<'a> {
    /// The arguments of a `ctr` or `message` call (`argc`, `argv` as device-mapper passes
    /// them).
    ///
    /// # Safety
    /// `argv` must be null or point to `argc` pointers, each null or a NUL-terminated
    /// string, all valid and unchanged for `'a`.
    pub(super) unsafe fn from_raw(argc: c_uint, argv: *const *mut c_char) -> Self {
        let argv: &[*mut c_char] = if argc == 0 || argv.is_null() {
            &[]
        } else {
            // SAFETY: per the function's contract, `argv` holds `argc` pointers valid for `'a`.
            unsafe { core::slice::from_raw_parts(argv, argc as usize) }
        };
        // INVARIANT: per the function's contract.
        Self { argv }
    }

    /// Number of arguments.
    pub(crate) fn len(&self) -> usize {
        self.argv.len()
    }

    /// Argument `i`, if present.
    pub(crate) fn get(&self, i: usize) -> Option<&'a CStr> {
        let p = *self.argv.get(i)?;
        if p.is_null() {
            return None;
        }
        // SAFETY: type invariant: a non-null `p` is a NUL-terminated string valid for `'a`.
        Some(unsafe { CStr::from_ptr(p) })
    }

    /// All arguments in order, as bytes.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i)).map(CStr::to_bytes)
    }
}

/// The target being constructed: the handle through which a constructor claims devices
/// and sets per-target parameters.
///
/// # Invariants
/// `ti` points to the `dm_target` being constructed, valid and not yet visible to I/O for
/// `'a`.
pub(crate) struct CtrContext<'a> {
    ti: *mut bindings::dm_target,
    revoker: &'a Revoker,
    devs: &'a DevTracker,
    _p: PhantomData<&'a mut bindings::dm_target>,
}

impl<'a> CtrContext<'a> {
    /// The context of the constructor call on `ti`, whose handles `revoker` revokes and
    /// whose devices `devs` counts.
    ///
    /// # Safety
    /// `ti` must be the target being constructed, valid for `'a`, and `revoker` and `devs`
    /// its own, dropped before device-mapper frees `ti`.
    pub(super) unsafe fn new(ti: *mut bindings::dm_target, revoker: &'a Revoker, devs: &'a DevTracker) -> Self {
        // INVARIANT: per the function's contract.
        Self { ti, revoker, devs, _p: PhantomData }
    }
}

impl CtrContext<'_> {
    /// Length of the target in 512-byte sectors.
    pub(crate) fn len_sectors(&self) -> u64 {
        // SAFETY: `ti` is valid (type invariant).
        unsafe { (*self.ti).len }
    }

    /// Opens a device named by a path or `major:minor`, with the table's mode.
    pub(crate) fn get_device(&mut self, path: &CStr) -> Result<Dev> {
        // SAFETY: `ti` is valid (type invariant); `ti->table` is set before the ctr runs.
        let mode = unsafe { bindings::dm_table_get_mode((*self.ti).table) };
        let mut dev: *mut bindings::dm_dev = core::ptr::null_mut();
        // SAFETY: `ti` is valid; `path` is NUL-terminated; `dev` is a valid out pointer.
        kernel::error::to_result(unsafe { bindings::dm_get_device(self.ti, path.as_ptr(), mode, &mut dev) })?;
        // SAFETY: `dm_get_device` succeeded: `dev` is an open device of `ti`, now owned by `Dev`; `devs` is the tracker of `ti` (type invariant).
        unsafe { Dev::from_raw(self.ti, dev, self.devs) }
    }

    /// Number of empty flush bios the target receives per flush (0 drops flushes).
    pub(crate) fn set_num_flush_bios(&mut self, n: u32) {
        // SAFETY: `ti` is valid (type invariant) and not yet visible to I/O.
        unsafe { (*self.ti).num_flush_bios = n };
    }

    /// Number of bios the target receives per discard (0: discards unsupported).
    pub(crate) fn set_num_discard_bios(&mut self, n: u32) {
        // SAFETY: as `set_num_flush_bios`.
        unsafe { (*self.ti).num_discard_bios = n };
    }

    /// Number of bios the target receives per write-zeroes (0: unsupported).
    pub(crate) fn set_num_write_zeroes_bios(&mut self, n: u32) {
        // SAFETY: as `set_num_flush_bios`.
        unsafe { (*self.ti).num_write_zeroes_bios = n };
    }

    /// A handle for raising events later. It may be kept anywhere: once the target is
    /// destroyed it raises nothing (see [`TargetHandle`]).
    pub(crate) fn handle(&self) -> TargetHandle {
        self.revoker.handle()
    }
}

