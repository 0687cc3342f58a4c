// SPDX-License-Identifier: GPL-2.0

//! A write gate: lets a relocation wait until every write mapped before a point in time has
//! completed (SRCU, with the read side spanning a write from `map` to `end_io`).
//!
//! The map path enters the gate before it looks at what is migrating, and leaves it when the
//! write completes; the relocation marks its block, then [`WriteGate::wait`]s. A write that
//! did not see the mark entered before the wait began, so the wait covers it (SRCU's
//! grace-period guarantee).

use super::bindings;
use core::ptr::NonNull;
use kernel::prelude::*;

/// Proof of an entry into a [`WriteGate`], to leave it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket(u8);

/// An SRCU domain for in-flight writes.
///
/// # Invariants
/// `g` is from `dmr_gate_alloc`, initialised, freed only in `drop`; `srcu` is its
/// srcu_struct.
pub(crate) struct WriteGate {
    g: NonNull<bindings::dmr_gate>,
    srcu: *mut bindings::srcu_struct,
}

// SAFETY: SRCU's read and update sides are thread-safe; the pointer is owned.
unsafe impl Send for WriteGate {}
// SAFETY: see `Send`.
unsafe impl Sync for WriteGate {}

impl WriteGate {
    /// A new gate. Process context (allocates with GFP_KERNEL).
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: plain allocation and init_srcu_struct.
        let g = NonNull::new(unsafe { bindings::dmr_gate_alloc() }).ok_or(ENOMEM)?;
        // SAFETY: `g` is an initialised gate.
        let srcu = unsafe { bindings::dmr_gate_srcu(g.as_ptr()) };
        Ok(Self { g, srcu })
    }

    /// Enters the gate; any context but NMI (map and end_io never run in one); never
    /// sleeps.
    pub(crate) fn enter(&self) -> Ticket {
        // `srcu_down_read` without its NMI warning: the exported function it calls.
        // SAFETY: type invariant: an initialised srcu_struct.
        let idx = unsafe { bindings::__srcu_read_lock(self.srcu) };
        Ticket((idx & 1) as u8)
    }

    /// Leaves the gate entered with `t` (possibly from another context, e.g. interrupt).
    /// Each ticket must be used once.
    pub(crate) fn leave(&self, t: Ticket) {
        // srcu_up_read's checks, which this skips, are the index and not being in NMI.
        // SAFETY: type invariant; the index is 0 or 1, as SRCU requires.
        unsafe { bindings::__srcu_read_unlock(self.srcu, i32::from(t.0 & 1)) };
    }

    /// Waits until every entry made before this call has left. Sleeps.
    pub(crate) fn wait(&self) {
        // SAFETY: type invariant; process context (documented requirement).
        unsafe { bindings::dmr_gate_wait(self.g.as_ptr()) };
    }
}

impl Drop for WriteGate {
    fn drop(&mut self) {
        // The owner is dropped when no I/O is in flight, so no entry is left open.
        // SAFETY: type invariant; nothing uses the gate after this.
        unsafe { bindings::dmr_gate_free(self.g.as_ptr()) };
    }
}
