// SPDX-License-Identifier: GPL-2.0

//! A handle on a constructed target, for the work a target does outside device-mapper's
//! callbacks: raising events and naming the device in log lines.
//!
//! The handle may be cloned and kept anywhere, even past the target's destruction, and
//! stays sound: the registration glue revokes it ([`Revoker`]) once the target instance is
//! dropped and before device-mapper frees the `dm_target`; a revoked handle raises nothing.

use super::{bindings, noio};
use core::ffi::CStr;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

/// Bytes kept of the device's name (`major:minor`, at most 15 bytes in the kernel's
/// `mapped_device`), the NUL included.
const NAME_BYTES: usize = 32;

/// A `dm_target` pointer that may cross threads.
///
/// # Invariants
/// Null, or a constructed (or being constructed) target that is alive: see [`Shared`].
struct Ti(*mut bindings::dm_target);

// SAFETY: the pointer is only dereferenced under `Shared::ti`'s lock while non-null, which
// the type invariant makes a live target, usable from any process context.
unsafe impl Send for Ti {}

/// What every clone of a [`TargetHandle`] shares.
///
/// # Invariants
/// `ti` holds the target until the [`Revoker`] made with it is dropped, then null; the
/// `Revoker` is dropped before device-mapper frees the target.
#[pin_data]
struct Shared {
    #[pin]
    ti: Mutex<Ti>,
    /// The device's name, copied at construction (it never changes).
    name: [u8; NAME_BYTES],
}

/// A handle on a target, for raising events; cheap to clone.
#[derive(Clone)]
pub(crate) struct TargetHandle {
    shared: Arc<Shared>,
}

/// The registration glue's side of a target's handles: revokes them all when dropped.
pub(super) struct Revoker(TargetHandle);

impl Revoker {
    /// Makes the handle of the target `ti`.
    ///
    /// # Safety
    /// `ti` must be a target being constructed (its table set), and the returned value must
    /// be dropped before device-mapper frees `ti`.
    pub(super) unsafe fn new(ti: *mut bindings::dm_target) -> Result<Self> {
        let mut name = [0u8; NAME_BYTES];
        // SAFETY: `ti` is valid with its table (contract); dm_device_name returns the mapped device's NUL-terminated name, which lives as long as the device.
        let dev = unsafe { CStr::from_ptr(bindings::dmr_device_name(ti)) }.to_bytes();
        let n = dev.len().min(NAME_BYTES - 1);
        name[..n].copy_from_slice(&dev[..n]);
        // INVARIANT: `ti` is live until `self` drops (contract), which revokes it.
        let shared = Arc::pin_init(
            pin_init!(Shared { ti <- kernel::new_mutex!(Ti(ti), "dm_remap_handle"), name }),
            GFP_KERNEL,
        )?;
        Ok(Self(TargetHandle { shared }))
    }

    /// A handle for the target to keep.
    pub(super) fn handle(&self) -> TargetHandle {
        self.0.clone()
    }
}

impl Drop for Revoker {
    fn drop(&mut self) {
        // Waits for an event being raised through a clone, so none runs on a freed target.
        self.0.shared.ti.lock().0 = core::ptr::null_mut();
    }
}

impl TargetHandle {
    /// Raises a device-mapper event: `dmsetup wait` returns (no uevent: dm sends none for
    /// table events; see [`TargetHandle::uevent`]). Process context only (it sleeps); a
    /// no-op once the target is destroyed.
    pub(crate) fn event(&self) {
        let ti = self.shared.ti.lock();
        if ti.0.is_null() {
            return;
        }
        // SAFETY: type invariant of `Shared`: a non-null `ti`, under the lock, is a live target whose table is set.
        unsafe { bindings::dm_table_event((*ti.0).table) };
    }

    /// The dm device's name as upstream targets print it in log lines (`major:minor`).
    pub(crate) fn name(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.shared.name).unwrap_or(c"?")
    }

    /// Sends a `change` uevent on the dm device's disk with the variables `vars`, each
    /// displayed as `KEY=value` (at most [`UEVENT_VARS`] of them, [`UEVENT_BYTES`] bytes in
    /// all; what does not fit is left out). Process context only: the kernel allocates
    /// (in a NOIO scope here, since the caller may be serving the device's I/O). Returns the
    /// kernel's error, if any, and `ENODEV` once the target is destroyed.
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
        let ti = self.shared.ti.lock();
        if ti.0.is_null() {
            return Err(ENODEV);
        }
        // SAFETY: type invariant of `Shared`: a non-null `ti`, under the lock, is a live target; `envp` is a NULL-terminated array of pointers to NUL-terminated strings in `buf`, which outlives the call (the kernel copies them into the event before returning).
        let r = noio(|| unsafe { bindings::dmr_uevent(ti.0, envp.as_mut_ptr()) });
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
