// SPDX-License-Identifier: GPL-2.0

//! A small, safe abstraction over the kernel's device-mapper target interface.
//!
//! This module and its children are the only code in dm-remap with `unsafe` and raw C
//! types. A target implements [`Target`]; [`Registration`] registers it with device-mapper,
//! whose C callbacks (the `*_callback` functions here) call the trait's methods with safe
//! wrappers of the target ([`CtrContext`]), the bio ([`Bio`]) and the devices ([`Dev`]).

mod bindings;
mod bio;
#[macro_use]
mod compat;
mod dev;
mod gate;
mod io;
mod parked;
mod percpu;
mod rcu;
mod worker;

pub(crate) use bio::{Bio, BlkStatus, HeldBio, Op, SavedIter};
pub(crate) use dev::Dev;
pub(crate) use gate::{Ticket, WriteGate};
pub(crate) use parked::BioQueue;
pub(crate) use io::{crc32_le, random_bytes, IoKind};
pub(crate) use percpu::{now_ns, ratelimit, PerCpu};
pub(crate) use rcu::{RcuBox, RcuWriter};
pub(crate) use worker::{WorkHandler, Worker};

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_uint, c_void, CStr};
use core::marker::PhantomData;
use kernel::prelude::*;

/// Target feature flag: `map` never blocks, so io_uring may submit without punting.
pub(crate) const FEATURE_NOWAIT: u64 = bindings::DM_TARGET_NOWAIT as u64;

/// Proof that a bio was handed to the target's worker: only [`Bio::defer`] and
/// [`Bio::hold`] make one, so a target cannot claim a bio it did not take.
pub(crate) struct Token(());

/// What `map` tells device-mapper to do with a bio.
pub(crate) enum MapResult {
    /// The bio was redirected ([`Bio::remap`]); device-mapper submits it.
    Remapped,
    /// The target took the bio ([`Bio::defer`]) and will complete it.
    Submitted(Token),
}

/// What `end_io` tells device-mapper.
pub(crate) enum EndIo {
    /// Complete the bio with the (possibly changed) status.
    Done,
    /// The target kept the bio ([`Bio::hold`]) and will complete it later.
    Incomplete(Token),
}

/// A handle on a constructed target for work outside the callbacks (raising events).
#[derive(Clone, Copy)]
pub(crate) struct TargetHandle {
    // INVARIANT: the `dm_target` of a target instance that owns this handle; valid until the
    // instance's destructor, which drops the owner first.
    ti: *mut bindings::dm_target,
}

// SAFETY: dm_table_event may be called from any process context.
unsafe impl Send for TargetHandle {}
// SAFETY: see `Send`.
unsafe impl Sync for TargetHandle {}

impl TargetHandle {
    /// Raises a device-mapper event: `dmsetup wait` returns (no uevent: dm sends none for
    /// table events; see [`TargetHandle::uevent`]).
    pub(crate) fn event(&self) {
        // SAFETY: type invariant: `ti` and its table are valid.
        unsafe { bindings::dm_table_event((*self.ti).table) };
    }

    /// The dm device's name as upstream targets print it in log lines (`major:minor`).
    pub(crate) fn name(&self) -> &CStr {
        // SAFETY: type invariant: `ti` is live; dm_device_name returns the mapped device's
        // NUL-terminated name, which lives as long as the device, so at least as long as the
        // target and this handle.
        unsafe { CStr::from_ptr(bindings::dmr_device_name(self.ti)) }
    }

    /// Sends a `change` uevent on the dm device's disk with the variables `vars`, each
    /// displayed as `KEY=value` (at most [`UEVENT_VARS`] of them, [`UEVENT_BYTES`] bytes in
    /// all; what does not fit is left out). Process context only: the kernel allocates
    /// (in a NOIO scope here, since the caller may be serving the device's I/O). Returns the
    /// kernel's error, if any.
    pub(crate) fn uevent(&self, vars: &[&dyn core::fmt::Display]) -> Result {
        let mut buf = [0u8; UEVENT_BYTES];
        let mut starts = [0usize; UEVENT_VARS];
        let mut n = 0;
        let mut at = 0;
        for v in vars.iter().take(UEVENT_VARS) {
            let mut w = Cursor { buf: &mut buf[at..], len: 0 };
            // Room for the value and its NUL; else the variable is left out.
            if core::fmt::write(&mut w, format_args!("{v}")).is_err() || w.len + 1 > w.buf.len() {
                continue;
            }
            let len = w.len;
            starts[n] = at;
            n += 1;
            at += len + 1; // the NUL is already there: `buf` starts zeroed
        }
        let mut envp: [*mut core::ffi::c_char; UEVENT_VARS + 1] = [core::ptr::null_mut(); UEVENT_VARS + 1];
        let base = buf.as_mut_ptr();
        for (p, &s) in envp.iter_mut().zip(&starts[..n]) {
            // `s` < UEVENT_BYTES: each start is inside `buf`.
            *p = base.wrapping_add(s).cast();
        }
        // SAFETY: type invariant: `ti` is a live target; `envp` is a NULL-terminated array of
        // pointers to NUL-terminated strings in `buf`, which outlives the call (the kernel
        // copies them into the event before returning).
        let r = noio(|| unsafe { bindings::dmr_uevent(self.ti, envp.as_mut_ptr()) });
        kernel::error::to_result(r)
    }
}

/// Most variables a target uevent carries.
pub(crate) const UEVENT_VARS: usize = 8;
/// Bytes for all of them, NULs included.
pub(crate) const UEVENT_BYTES: usize = 512;

/// Formats into a byte slice, failing when it is full.
struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len.checked_add(s.len()).filter(|&e| e <= self.buf.len()).ok_or(core::fmt::Error)?;
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The queue limits of the dm device, adjustable in `io_hints`.
pub(crate) struct Limits<'a> {
    l: &'a mut bindings::queue_limits,
}

impl Limits<'_> {
    /// Raises the logical and physical block sizes and the minimum I/O size to `bytes`.
    pub(crate) fn set_block_size(&mut self, bytes: u32) {
        // SAFETY: `l` is a valid, exclusively borrowed queue_limits.
        unsafe { bindings::dmr_set_block_size(self.l, bytes) };
    }
}

/// Which report `status` is asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusType {
    /// `dmsetup status`: runtime figures.
    Info,
    /// `dmsetup table`: the table line, exactly as it was loaded.
    Table,
    /// The IMA measurement record.
    Ima,
}

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

/// The table line arguments given to a constructor.
pub(crate) struct Args<'a> {
    argv: &'a [*mut c_char],
}

impl<'a> Args<'a> {
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
        // SAFETY: dm passes NUL-terminated strings valid for the ctr call, which outlives `'a`.
        Some(unsafe { CStr::from_ptr(p) })
    }

    /// All arguments in order, as bytes.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i)).map(CStr::to_bytes)
    }
}

/// The target being constructed: the handle through which a constructor claims devices
/// and sets per-target parameters.
pub(crate) struct CtrContext<'a> {
    // INVARIANT: `ti` points to the `dm_target` being constructed, valid for `'a`.
    ti: *mut bindings::dm_target,
    _p: PhantomData<&'a mut bindings::dm_target>,
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
        // SAFETY: `dm_get_device` succeeded: `dev` is an open device of `ti`, now owned by `Dev`.
        unsafe { Dev::from_raw(self.ti, dev) }
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

    /// A handle for raising events later; valid for the life of the target instance, so it
    /// must only be kept inside it.
    pub(crate) fn handle(&self) -> TargetHandle {
        // INVARIANT: the caller keeps it inside the target being constructed.
        TargetHandle { ti: self.ti }
    }
}

/// Collects what [`Target::iterate_devices`] reports and hands it to device-mapper.
pub(crate) struct DeviceIterator<'a> {
    ti: *mut bindings::dm_target,
    f: bindings::iterate_devices_callout_fn,
    data: *mut c_void,
    ret: c_int,
    _p: PhantomData<&'a ()>,
}

impl DeviceIterator<'_> {
    /// Reports `len` sectors of `dev` from `start` as used by the target.
    pub(crate) fn visit(&mut self, dev: &Dev, start: u64, len: u64) {
        if self.ret != 0 {
            return;
        }
        if let Some(f) = self.f {
            // SAFETY: `f` and `data` come from dm for this call; `dev` is an open device of `ti`.
            self.ret = unsafe { f(self.ti, dev.as_ptr(), start, len, self.data) };
        }
    }
}

/// A `core::fmt::Write` sink over dm's status buffer: truncates like `DMEMIT` and keeps the
/// text NUL-terminated.
pub(crate) struct StatusWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> StatusWriter<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        if let Some(b) = buf.first_mut() {
            *b = 0;
        }
        Self { buf, pos: 0 }
    }
}

impl core::fmt::Write for StatusWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len().saturating_sub(self.pos + 1);
        let n = s.len().min(room);
        self.buf[self.pos..self.pos + n].copy_from_slice(&s.as_bytes()[..n]);
        self.pos += n;
        if let Some(b) = self.buf.get_mut(self.pos) {
            *b = 0;
        }
        Ok(())
    }
}

/// A registered target type; unregistered on drop.
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
        Ok(Self { tt, _p: PhantomData })
    }
}

impl<T: Target> Drop for Registration<T> {
    fn drop(&mut self) {
        // Module unload only happens when no table uses the type: no callback runs after this.
        // SAFETY: the target type was registered in `new`.
        unsafe { bindings::dm_unregister_target(self.tt.get()) };
    }
}

/// # Safety
/// `ti` must be a target whose constructor succeeded, so `private` holds a `KBox<T>`.
unsafe fn target_of<'a, T: Target>(ti: *mut bindings::dm_target) -> &'a T {
    // SAFETY: per the function's contract `private` is a live `KBox<T>` until `dtr`.
    unsafe { &*((*ti).private as *const T) }
}

unsafe extern "C" fn ctr_callback<T: Target>(
    ti: *mut bindings::dm_target,
    argc: c_uint,
    argv: *mut *mut c_char,
) -> c_int {
    let argv: &[*mut c_char] = if argc == 0 || argv.is_null() {
        &[]
    } else {
        // SAFETY: device-mapper passes `argc` valid pointers in `argv`.
        unsafe { core::slice::from_raw_parts(argv, argc as usize) }
    };
    // dm places per-bio data after a pointer-aligned struct; larger alignment is not given.
    const { assert!(core::mem::align_of::<T::PerBio>() <= core::mem::align_of::<u64>()) };
    // SAFETY: `ti` is the target being constructed.
    unsafe { (*ti).per_io_data_size = core::mem::size_of::<T::PerBio>() as c_uint };
    // INVARIANT: device-mapper calls `ctr` with a valid target being constructed.
    let mut ctx = CtrContext { ti, _p: PhantomData };
    let result = T::new(&mut ctx, &Args { argv }).and_then(|t| {
        KBox::new(t, GFP_KERNEL).map_err(|_| CtrError {
            code: ENOMEM,
            msg: c"Cannot allocate target context",
        })
    });
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

unsafe extern "C" fn dtr_callback<T: Target>(ti: *mut bindings::dm_target) {
    // SAFETY: `dtr` follows a successful `ctr`, which stored a `KBox<T>`; nothing uses it after.
    drop(unsafe { KBox::from_raw((*ti).private as *mut T) });
}

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
    }
}

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

unsafe extern "C" fn io_hints_callback<T: Target>(
    ti: *mut bindings::dm_target,
    limits: *mut bindings::queue_limits,
) {
    // SAFETY: `io_hints` runs on a constructed target.
    let t = unsafe { target_of::<T>(ti) };
    // SAFETY: device-mapper passes the limits being built, ours during the call.
    let mut l = Limits { l: unsafe { &mut *limits } };
    t.io_hints(&mut l);
}

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

unsafe extern "C" fn iterate_devices_callback<T: Target>(
    ti: *mut bindings::dm_target,
    f: bindings::iterate_devices_callout_fn,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `iterate_devices` runs on a constructed target.
    let t = unsafe { target_of::<T>(ti) };
    let mut it = DeviceIterator { ti, f, data, ret: 0, _p: PhantomData };
    t.iterate_devices(&mut it);
    it.ret
}

unsafe extern "C" fn message_callback<T: Target>(
    ti: *mut bindings::dm_target,
    argc: c_uint,
    argv: *mut *mut c_char,
    result: *mut c_char,
    maxlen: c_uint,
) -> c_int {
    // SAFETY: `message` runs on a constructed target.
    let t = unsafe { target_of::<T>(ti) };
    let argv: &[*mut c_char] = if argc == 0 || argv.is_null() {
        &[]
    } else {
        // SAFETY: device-mapper passes `argc` valid pointers in `argv`.
        unsafe { core::slice::from_raw_parts(argv, argc as usize) }
    };
    let buf: &mut [u8] = if result.is_null() || maxlen == 0 {
        &mut []
    } else {
        // SAFETY: device-mapper provides a writable buffer of `maxlen` bytes.
        unsafe { core::slice::from_raw_parts_mut(result.cast::<u8>(), maxlen as usize) }
    };
    // A NOIO scope: the handler may allocate while relocating (holding the target's lock).
    match noio(|| t.message(&Args { argv }, &mut StatusWriter::new(buf))) {
        // dm passes the reply to userspace only when the handler returns 1.
        Ok(true) => 1,
        Ok(false) => 0,
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn presuspend_callback<T: Target>(ti: *mut bindings::dm_target) {
    // SAFETY: `presuspend` runs on a constructed target.
    unsafe { target_of::<T>(ti) }.presuspend();
}

unsafe extern "C" fn resume_callback<T: Target>(ti: *mut bindings::dm_target) {
    // SAFETY: `resume` runs on a constructed target.
    unsafe { target_of::<T>(ti) }.resume();
}

unsafe extern "C" fn presuspend_undo_callback<T: Target>(ti: *mut bindings::dm_target) {
    // SAFETY: `presuspend_undo` runs on a constructed target.
    unsafe { target_of::<T>(ti) }.presuspend_undo();
}

/// Runs `f` in a NOIO allocation scope (memalloc_noio_save/restore): allocations inside
/// it do not start I/O to reclaim memory, which could wait for the device being served.
fn noio<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: plain memalloc_noio_save, restored below on the same task.
    let flags = unsafe { bindings::dmr_noio_save() };
    let r = f();
    // SAFETY: pairs with the save above.
    unsafe { bindings::dmr_noio_restore(flags) };
    r
}
