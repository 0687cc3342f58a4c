// SPDX-License-Identifier: GPL-2.0

//! A small, safe abstraction over the kernel's device-mapper target interface.
//!
//! This module and its children are the only code in dm-remap with `unsafe` and raw C
//! types. A target implements [`Target`]; [`Registration`] registers it with device-mapper,
//! whose C callbacks (the `*_callback` functions here) call the trait's methods with safe
//! wrappers of the target ([`CtrContext`]), the bio ([`Bio`]) and the devices ([`Dev`]).

mod bindings;
mod bio;
mod dev;

pub(crate) use bio::{Bio, Op};
pub(crate) use dev::Dev;

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_uint, c_void, CStr};
use core::marker::PhantomData;
use kernel::prelude::*;

/// Target feature flag: `map` never blocks, so io_uring may submit without punting.
pub(crate) const FEATURE_NOWAIT: u64 = bindings::DM_TARGET_NOWAIT as u64;

/// What `map` tells device-mapper to do with a bio.
pub(crate) enum MapResult {
    /// The bio was redirected; device-mapper submits it.
    Remapped,
    /// The bio was completed with an error status.
    Kill,
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

    /// Builds a target instance from its table line arguments.
    fn new(ctx: &mut CtrContext<'_>, args: &Args<'_>) -> Result<Self, CtrError>;

    /// Routes one bio. Runs in the submission path: must not sleep or allocate.
    fn map(&self, bio: &mut Bio<'_>) -> MapResult;

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
        // SAFETY: device-mapper passes `argc` pointers to NUL-terminated strings that stay
        // valid for the whole constructor call, which outlives `'a`.
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
        // SAFETY: `ti` is valid (type invariant) and `ti->table` is set before the
        // constructor runs.
        let mode = unsafe { bindings::dm_table_get_mode((*self.ti).table) };
        let mut dev: *mut bindings::dm_dev = core::ptr::null_mut();
        // SAFETY: `ti` is valid; `path` is NUL-terminated; `dev` is a valid out pointer.
        let ret = unsafe { bindings::dm_get_device(self.ti, path.as_ptr(), mode, &mut dev) };
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        // SAFETY: `dm_get_device` succeeded, so `dev` is an open device of this target,
        // released only by the returned `Dev`.
        Ok(unsafe { Dev::from_raw(self.ti, dev) })
    }

    /// Number of empty flush bios the target receives per flush (0 drops flushes).
    pub(crate) fn set_num_flush_bios(&mut self, n: u32) {
        // SAFETY: `ti` is valid (type invariant) and not yet visible to I/O.
        unsafe { (*self.ti).num_flush_bios = n };
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
            // SAFETY: `f` and `data` came from device-mapper for this call; `dev` is an
            // open device of `ti`.
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
            status: Some(status_callback::<T>),
            iterate_devices: Some(iterate_devices_callback::<T>),
            ..Default::default()
        };
        let tt = KBox::new(UnsafeCell::new(tt), GFP_KERNEL)?;
        // SAFETY: `tt` is a fully initialised target type at a stable heap address that
        // lives until `drop` unregisters it.
        let ret = unsafe { bindings::dm_register_target(tt.get()) };
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        Ok(Self { tt, _p: PhantomData })
    }
}

impl<T: Target> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: the target type was registered in `new`. Module unload only happens when
        // no table uses it, so no callback can run after this.
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
    // SAFETY: `dtr` is only called after a successful `ctr`, which stored a `KBox<T>`;
    // nothing uses it afterwards.
    drop(unsafe { KBox::from_raw((*ti).private as *mut T) });
}

unsafe extern "C" fn map_callback<T: Target>(
    ti: *mut bindings::dm_target,
    bio: *mut bindings::bio,
) -> c_int {
    // SAFETY: `map` runs on a constructed target.
    let t = unsafe { target_of::<T>(ti) };
    // SAFETY: device-mapper hands us exclusive use of a valid clone bio for this call.
    let mut bio = unsafe { Bio::from_raw(ti, bio) };
    match t.map(&mut bio) {
        MapResult::Remapped => bindings::DM_MAPIO_REMAPPED as c_int,
        MapResult::Kill => bindings::DM_MAPIO_KILL as c_int,
    }
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
