// SPDX-License-Identifier: GPL-2.0

//! Registration of a target type, and the C callbacks device-mapper calls: each one turns
//! its raw arguments into the safe types of [`Target`]'s methods and calls that method.
//!
//! A constructed target lives in `ti->private` as a `KBox<Instance<T>>`: from a successful
//! `ctr` until `dtr`. Every callback but `ctr` runs between those two, on that target, which
//! is what each callback's `# Safety` section states.

use super::dev::DevTracker;
use super::handle::Revoker;
use super::{
    bindings, noio, Args, Bio, BlkStatus, CtrContext, CtrError, DeviceIterator, EndIo, Limits, MapResult, StatusType,
    StatusWriter, Target,
};
use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_uint, c_void};
use core::marker::PhantomData;
use kernel::prelude::*;

/// A registered target type; unregistered on drop.
///
/// # Invariants
/// `tt` is registered with device-mapper from `new` until `drop`, at a stable address.
pub(crate) struct Registration<T: Target> {
    tt: KBox<UnsafeCell<bindings::target_type>>,
    _p: PhantomData<T>,
}

// SAFETY: after registration the `target_type` is only touched by device-mapper under its
// own locking; `Registration` itself only reads the pointer to unregister.
unsafe impl<T: Target> Send for Registration<T> {}
// SAFETY: see `Send`; `&Registration` gives no access to the `target_type`.
unsafe impl<T: Target> Sync for Registration<T> {}

impl<T: Target> Registration<T> {
    /// Registers `T` with device-mapper.
    pub(crate) fn new(module: &'static ThisModule) -> Result<Self> {
        let tt = bindings::target_type {
            features: T::FEATURES,
            name: T::NAME.as_ptr(),
            module: module.as_ptr().cast(),
            version: T::VERSION,
            ctr: Some(ctr_callback::<T>),
            dtr: Some(dtr_callback::<T>),
            map: Some(map_callback::<T>),
            end_io: Some(end_io_callback::<T>),
            preresume: Some(preresume_callback::<T>),
            status: Some(status_callback::<T>),
            iterate_devices: Some(iterate_devices_callback::<T>),
            io_hints: Some(io_hints_callback::<T>),
            message: Some(message_callback::<T>),
            presuspend: Some(presuspend_callback::<T>),
            presuspend_undo: Some(presuspend_undo_callback::<T>),
            resume: Some(resume_callback::<T>),
            ..Default::default()
        };
        let tt = KBox::new(UnsafeCell::new(tt), GFP_KERNEL)?;
        // SAFETY: `tt` is initialised, at a stable heap address, alive until `drop` unregisters.
        kernel::error::to_result(unsafe { bindings::dm_register_target(tt.get()) })?;
        // INVARIANT: registered just above; the box keeps its address.
        Ok(Self { tt, _p: PhantomData })
    }
}

impl<T: Target> Drop for Registration<T> {
    fn drop(&mut self) {
        // Module unload only happens when no table uses the type: no callback runs after this.
        // SAFETY: type invariant: the target type is registered.
        unsafe { bindings::dm_unregister_target(self.tt.get()) };
    }
}

/// What `ti->private` owns: the target, the count of its open devices and the revoker of
/// its handles. Fields drop in declaration order: the target first (its worker drained),
/// then the wait for its last device to be put (wherever the target kept it), then its
/// handles are revoked, all before `dtr` returns and device-mapper frees `ti`.
struct Instance<T> {
    target: T,
    _devs: DevTracker,
    _revoker: Revoker,
}

/// # Safety
/// `ti` must be a target whose constructor succeeded and whose destructor has not run, so
/// that `private` holds a live `KBox<Instance<T>>`; the result must not be used after `dtr`.
unsafe fn target_of<'a, T: Target>(ti: *mut bindings::dm_target) -> &'a T {
    // SAFETY: per the function's contract `private` is a live `KBox<Instance<T>>` until `dtr`.
    unsafe { &(*((*ti).private as *const Instance<T>)).target }
}

/// `ctr`: builds an instance of `T` from the table line.
///
/// # Safety
/// Called by device-mapper only: `ti` is a target being constructed (its table set), and
/// `argv` holds `argc` NUL-terminated strings valid for the call.
unsafe extern "C" fn ctr_callback<T: Target>(
    ti: *mut bindings::dm_target,
    argc: c_uint,
    argv: *mut *mut c_char,
) -> c_int {
    // SAFETY: device-mapper passes `argc` valid strings in `argv`, alive for this call.
    let args = unsafe { Args::from_raw(argc, argv) };
    // dm places per-bio data after a pointer-aligned struct; larger alignment is not given.
    const { assert!(core::mem::align_of::<T::PerBio>() <= core::mem::align_of::<u64>()) };
    // SAFETY: `ti` is the target being constructed.
    unsafe { (*ti).per_io_data_size = core::mem::size_of::<T::PerBio>() as c_uint };
    let nomem = CtrError { code: ENOMEM, msg: c"Cannot allocate target context" };
    // SAFETY: `ti` is being constructed with its table; the revoker is dropped at the end of this function on failure, or with the instance in `dtr` on success, both before device-mapper frees `ti`.
    let result = match (unsafe { Revoker::new(ti) }, DevTracker::new()) {
        (Err(_), _) | (_, Err(_)) => Err(nomem),
        (Ok(revoker), Ok(devs)) => {
            // SAFETY: `ti` is the target being constructed, valid for this call; `revoker` and `devs` are its own, dropped like the revoker (above).
            let mut ctx = unsafe { CtrContext::new(ti, &revoker, &devs) };
            let target = T::new(&mut ctx, &args);
            drop(ctx);
            target.and_then(|target| KBox::new(Instance { target, _devs: devs, _revoker: revoker }, GFP_KERNEL).map_err(|_| nomem))
        }
    };
    match result {
        Ok(b) => {
            // SAFETY: `ti` is valid; `private` is ours to set and freed by `dtr`.
            unsafe { (*ti).private = KBox::into_raw(b).cast() };
            0
        }
        Err(e) => {
            // SAFETY: `ti` is valid; `error` takes a string that outlives the target.
            unsafe { (*ti).error = e.msg.as_ptr().cast_mut() };
            e.code.to_errno()
        }
    }
}

/// `dtr`: drops the instance.
///
/// # Safety
/// Called by device-mapper only, once, after a successful `ctr` and after every other
/// callback on `ti` has returned.
unsafe extern "C" fn dtr_callback<T: Target>(ti: *mut bindings::dm_target) {
    // SAFETY: `ctr` stored a `KBox<Instance<T>>`; nothing uses it after `dtr`.
    drop(unsafe { KBox::from_raw((*ti).private as *mut Instance<T>) });
}

/// `map`: routes a bio.
///
/// # Safety
/// Called by device-mapper only, on a constructed target, with a clone of `ti` it owns
/// for the call.
unsafe extern "C" fn map_callback<T: Target>(
    ti: *mut bindings::dm_target,
    bio: *mut bindings::bio,
) -> c_int {
    // SAFETY: `map` runs on a constructed target.
    let t = unsafe { target_of::<T>(ti) };
    // SAFETY: dm hands over a valid clone of this target (per-bio type `T::PerBio`) for the call.
    let bio = unsafe { Bio::from_map(ti, bio) };
    match t.map(bio) {
        MapResult::Remapped => bindings::DM_MAPIO_REMAPPED as c_int,
        MapResult::Submitted(_) => bindings::DM_MAPIO_SUBMITTED as c_int,
        MapResult::Kill => bindings::DM_MAPIO_KILL as c_int,
    }
}

/// `end_io`: sees a bio complete; may run in interrupt context.
///
/// # Safety
/// Called by device-mapper only, on a constructed target, with a clone `map` saw and the
/// clone's status in `error`, both the callee's for the call.
unsafe extern "C" fn end_io_callback<T: Target>(
    ti: *mut bindings::dm_target,
    bio: *mut bindings::bio,
    error: *mut bindings::blk_status_t,
) -> c_int {
    // SAFETY: `end_io` runs on a constructed target.
    let t = unsafe { target_of::<T>(ti) };
    // SAFETY: a clone of this target that went through `map`, ours during the call.
    let bio = unsafe { Bio::from_end_io(ti, bio) };
    // SAFETY: `error` points to the bio's status, ours to read and change.
    let mut status = BlkStatus(unsafe { *error });
    let r = t.end_io(bio, &mut status);
    // SAFETY: as above.
    unsafe { *error = status.0 };
    match r {
        EndIo::Done => bindings::DM_ENDIO_DONE as c_int,
        EndIo::Incomplete(_) => bindings::DM_ENDIO_INCOMPLETE as c_int,
    }
}

/// `preresume`.
///
/// # Safety
/// Called by device-mapper only, on a constructed target, in process context.
unsafe extern "C" fn preresume_callback<T: Target>(ti: *mut bindings::dm_target) -> c_int {
    // SAFETY: `preresume` runs on a constructed target.
    let t = unsafe { target_of::<T>(ti) };
    // A NOIO scope: the target may allocate while its device is suspended (I/O to it would
    // wait for this very resume).
    match noio(|| t.preresume()) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `io_hints`.
///
/// # Safety
/// Called by device-mapper only, on a constructed target, with the limits being stacked,
/// exclusively the callee's for the call.
unsafe extern "C" fn io_hints_callback<T: Target>(
    ti: *mut bindings::dm_target,
    limits: *mut bindings::queue_limits,
) {
    // SAFETY: `io_hints` runs on a constructed target.
    let t = unsafe { target_of::<T>(ti) };
    // SAFETY: device-mapper passes the limits being built, ours during the call.
    let mut l = Limits::new(unsafe { &mut *limits });
    t.io_hints(&mut l);
}

/// `status`.
///
/// # Safety
/// Called by device-mapper only, on a constructed target, with `result` null or a writable
/// buffer of `maxlen` bytes, the callee's for the call.
unsafe extern "C" fn status_callback<T: Target>(
    ti: *mut bindings::dm_target,
    kind: bindings::status_type_t,
    _flags: c_uint,
    result: *mut c_char,
    maxlen: c_uint,
) {
    if result.is_null() || maxlen == 0 {
        return;
    }
    // SAFETY: `status` runs on a constructed target.
    let t = unsafe { target_of::<T>(ti) };
    // SAFETY: device-mapper provides a writable buffer of `maxlen` bytes.
    let buf = unsafe { core::slice::from_raw_parts_mut(result.cast::<u8>(), maxlen as usize) };
    let kind = match kind {
        bindings::status_type_t_STATUSTYPE_INFO => StatusType::Info,
        bindings::status_type_t_STATUSTYPE_TABLE => StatusType::Table,
        _ => StatusType::Ima,
    };
    t.status(kind, &mut StatusWriter::new(buf));
}

/// `iterate_devices`.
///
/// # Safety
/// Called by device-mapper only, on a constructed target, with a callout `f` and its
/// argument `data`, valid for the call.
unsafe extern "C" fn iterate_devices_callback<T: Target>(
    ti: *mut bindings::dm_target,
    f: bindings::iterate_devices_callout_fn,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `iterate_devices` runs on a constructed target.
    let t = unsafe { target_of::<T>(ti) };
    // SAFETY: the arguments of this call; `it` does not outlive it.
    let mut it = unsafe { DeviceIterator::new(ti, f, data) };
    t.iterate_devices(&mut it);
    it.result()
}

/// `message`.
///
/// # Safety
/// Called by device-mapper only, on a constructed target, in process context, with `argc`
/// NUL-terminated strings in `argv` and `result` null or a writable buffer of `maxlen`
/// bytes, all valid for the call.
unsafe extern "C" fn message_callback<T: Target>(
    ti: *mut bindings::dm_target,
    argc: c_uint,
    argv: *mut *mut c_char,
    result: *mut c_char,
    maxlen: c_uint,
) -> c_int {
    // SAFETY: `message` runs on a constructed target.
    let t = unsafe { target_of::<T>(ti) };
    // SAFETY: device-mapper passes `argc` valid strings in `argv`, alive for this call.
    let args = unsafe { Args::from_raw(argc, argv) };
    let buf: &mut [u8] = if result.is_null() || maxlen == 0 {
        &mut []
    } else {
        // SAFETY: device-mapper provides a writable buffer of `maxlen` bytes.
        unsafe { core::slice::from_raw_parts_mut(result.cast::<u8>(), maxlen as usize) }
    };
    // A NOIO scope: the handler may allocate while relocating (holding the target's lock).
    match noio(|| t.message(&args, &mut StatusWriter::new(buf))) {
        // dm passes the reply to userspace only when the handler returns 1.
        Ok(true) => 1,
        Ok(false) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `presuspend`.
///
/// # Safety
/// Called by device-mapper only, on a constructed target, in process context.
unsafe extern "C" fn presuspend_callback<T: Target>(ti: *mut bindings::dm_target) {
    // SAFETY: `presuspend` runs on a constructed target.
    unsafe { target_of::<T>(ti) }.presuspend();
}

/// `resume`.
///
/// # Safety
/// Called by device-mapper only, on a constructed target, in process context.
unsafe extern "C" fn resume_callback<T: Target>(ti: *mut bindings::dm_target) {
    // SAFETY: `resume` runs on a constructed target.
    unsafe { target_of::<T>(ti) }.resume();
}

/// `presuspend_undo`.
///
/// # Safety
/// Called by device-mapper only, on a constructed target, in process context.
unsafe extern "C" fn presuspend_undo_callback<T: Target>(ti: *mut bindings::dm_target) {
    // SAFETY: `presuspend_undo` runs on a constructed target.
    unsafe { target_of::<T>(ti) }.presuspend_undo();
}
