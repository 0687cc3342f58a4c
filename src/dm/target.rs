// SPDX-License-Identifier: GPL-2.0

//! The target trait and the types its methods take and return: what a target type
//! implements, in the order device-mapper calls it (construct, map, complete, report).

use super::{bindings, Args, Bio, BlkStatus, CtrContext, CtrError, Dev, StatusType, StatusWriter};
use core::ffi::{c_int, c_void, CStr};
use core::marker::PhantomData;
use kernel::prelude::*;

/// Target feature flag: `map` never blocks, so io_uring may submit without punting.
pub(crate) const FEATURE_NOWAIT: u64 = bindings::DM_TARGET_NOWAIT as u64;

/// Proof that a bio was handed to the target's worker: only [`Bio::defer`] and
/// [`Bio::hold`] make one, so a target cannot claim a bio it did not take.
pub(crate) struct Token(pub(super) ());

/// What `map` tells device-mapper to do with a bio.
pub(crate) enum MapResult {
    /// The bio was redirected ([`Bio::remap`]); device-mapper submits it.
    Remapped,
    /// The target took the bio ([`Bio::defer`]) and will complete it.
    Submitted(Token),
    /// Fail the bio with an I/O error, unsent ([`Bio::kill`]); `end_io` does not see it.
    Kill,
}

/// What `end_io` tells device-mapper.
pub(crate) enum EndIo {
    /// Complete the bio with the (possibly changed) status.
    Done,
    /// The target kept the bio ([`Bio::hold`]) and will complete it later.
    Incomplete(Token),
}

/// A device-mapper target type.
pub(crate) trait Target: Sized + Send + Sync + 'static {
    /// Name used in table lines (`<start> <len> NAME ...`).
    const NAME: &'static CStr;
    /// Version shown by `dmsetup targets`.
    const VERSION: [u32; 3];
    /// `DM_TARGET_*` feature flags, e.g. [`FEATURE_NOWAIT`].
    const FEATURES: u64 = 0;

    /// Per-bio data, reserved by device-mapper in each clone (`per_io_data_size`) and
    /// initialised to the default at map time.
    type PerBio: Copy + Default + Send + 'static;

    /// Builds a target instance from its table line arguments.
    fn new(ctx: &mut CtrContext<'_>, args: &Args<'_>) -> Result<Self, CtrError>;

    /// Routes one bio. Runs in the submission path: must not sleep or allocate.
    fn map(&self, bio: Bio<'_, Self::PerBio>) -> MapResult;

    /// Sees a bio complete, possibly in interrupt context: must not sleep.
    fn end_io(&self, _bio: Bio<'_, Self::PerBio>, _status: &mut BlkStatus) -> EndIo {
        EndIo::Done
    }

    /// Runs before the target starts (or restarts) serving I/O; may sleep.
    fn preresume(&self) -> Result {
        Ok(())
    }

    /// Adjusts the dm device's queue limits after they were stacked from the devices.
    fn io_hints(&self, _limits: &mut Limits<'_>) {}

    /// Handles `dmsetup message <dev> 0 <args>`; may sleep. `Ok(true)` if a reply was
    /// written to `out` (dmsetup prints it), `Ok(false)` if there is none.
    fn message(&self, _args: &Args<'_>, _out: &mut StatusWriter<'_>) -> Result<bool> {
        Err(EINVAL)
    }

    /// Runs before the device suspends (I/O still flows); may sleep.
    fn presuspend(&self) {}

    /// Runs when a suspend that `presuspend` saw begin was cancelled (the device goes on
    /// serving I/O without a resume).
    fn presuspend_undo(&self) {}

    /// Runs when the device has resumed.
    fn resume(&self) {}

    /// Writes the `dmsetup status` / `dmsetup table` text.
    fn status(&self, kind: StatusType, out: &mut StatusWriter<'_>);

    /// Reports every device and range the target sends I/O to, so that device-mapper can
    /// check the ranges and stack the queue limits (block sizes, alignment).
    fn iterate_devices(&self, it: &mut DeviceIterator<'_>);
}

/// The queue limits of the dm device, adjustable in `io_hints`.
pub(crate) struct Limits<'a> {
    l: &'a mut bindings::queue_limits,
}

impl<'a> Limits<'a> {
    /// Lends the limits device-mapper is building to `io_hints`.
    pub(super) fn new(l: &'a mut bindings::queue_limits) -> Self {
        Self { l }
    }

    /// Raises the logical and physical block sizes and the minimum I/O size to `bytes`.
    pub(crate) fn set_block_size(&mut self, bytes: u32) {
        // SAFETY: `l` is a valid, exclusively borrowed queue_limits.
        unsafe { bindings::dmr_set_block_size(self.l, bytes) };
    }
}

/// Collects what [`Target::iterate_devices`] reports and hands it to device-mapper.
///
/// # Invariants
/// `ti` is the constructed target whose `iterate_devices` runs, and `f`/`data` are the
/// callout and its argument device-mapper passed to that call; all valid for `'a`.
pub(crate) struct DeviceIterator<'a> {
    ti: *mut bindings::dm_target,
    f: bindings::iterate_devices_callout_fn,
    data: *mut c_void,
    ret: c_int,
    _p: PhantomData<&'a ()>,
}

impl DeviceIterator<'_> {
    /// The iterator for one `iterate_devices` call.
    ///
    /// # Safety
    /// `ti`, `f` and `data` must be the arguments of an `iterate_devices` call on a
    /// constructed target, and the result must not outlive that call.
    pub(super) unsafe fn new(
        ti: *mut bindings::dm_target,
        f: bindings::iterate_devices_callout_fn,
        data: *mut c_void,
    ) -> Self {
        // INVARIANT: per the function's contract.
        Self { ti, f, data, ret: 0, _p: PhantomData }
    }

    /// What the callout last returned (non-zero stops the iteration).
    pub(super) fn result(&self) -> c_int {
        self.ret
    }

    /// Reports `len` sectors of `dev` from `start` as used by the target.
    pub(crate) fn visit(&mut self, dev: &Dev, start: u64, len: u64) {
        if self.ret != 0 {
            return;
        }
        if let Some(f) = self.f {
            // SAFETY: type invariant: `f` and `data` come from dm for this call on `ti`; `dev` is an open device of `ti`.
            self.ret = unsafe { f(self.ti, dev.as_ptr(), start, len, self.data) };
        }
    }
}

