// SPDX-License-Identifier: GPL-2.0

//! A small, safe abstraction over the kernel's device-mapper target interface.
//!
//! This module and its children are the only code in dm-remap with `unsafe` and raw C
//! types. It is laid out like the kernel's `rust/kernel/block/mq`:
//!
//! - [`target`](self::target): the [`Target`] trait a target type implements, and the types
//!   its methods take and return ([`MapResult`], [`EndIo`], [`Limits`], [`DeviceIterator`]);
//! - [`ctr`](self::ctr): what a constructor works with ([`Args`], [`CtrContext`], [`CtrError`]);
//! - [`registration`](self::registration): [`Registration`] and the `extern "C"` callbacks
//!   device-mapper calls, which turn raw arguments into those safe types;
//! - [`status`](self::status): the [`StatusWriter`] over dm's result buffer;
//! - [`handle`](self::handle): [`TargetHandle`], for events raised outside the callbacks;
//! - [`worker`](self::worker): [`Worker`], the target's own workqueue;
//! - bios ([`Bio`], [`HeldBio`]), devices ([`Dev`], synchronous I/O), and the kernel
//!   primitives the target layer uses (RCU, SRCU write gate, per-CPU counters);
//! - [`compat`](self::compat): the only place that knows which kernel it builds for.
//!
//! # Why the safe API is sound
//!
//! Every `unsafe` block carries a `// SAFETY:` comment, every unsafe function and callback a
//! `# Safety` section, and every type holding a raw pointer an `# Invariants` section. Two
//! things outlive the callbacks that made them, and are sound by construction rather than
//! by a rule their users must follow:
//!
//! - **The worker's handler.** [`Worker::bind`] takes an `Arc` of the handler and keeps that
//!   strong reference while bound, so the handler outlives every run of the work function
//!   whoever owns what. [`Worker::unbind`] clears the binding, waits for any run that may
//!   still use the handler, and only then gives the reference back. The worlds safe code can
//!   reach are "bound" (handler alive) and "unbound" (work runs do nothing); forgetting to
//!   unbind leaks, it does not dangle. The work items are initialised in [`Worker::new`],
//!   so queueing work on an unbound worker is harmless too.
//! - **The target handle.** [`CtrContext::handle`] returns a [`TargetHandle`] that may be
//!   cloned and kept anywhere. The registration glue owns the other end ([`handle`]'s
//!   `Revoker`) next to the target instance in `ti->private`, and drops it right after the
//!   instance in `dtr` (or at once when `ctr` fails), before device-mapper frees the
//!   `dm_target`; dropping it clears the pointer under the handle's lock. A handle kept too
//!   long raises nothing; the name it prints was copied at construction.

mod bindings;
mod bio;
#[macro_use]
mod compat;
mod ctr;
mod dev;
mod gate;
mod handle;
mod io;
mod parked;
mod percpu;
mod rcu;
mod registration;
mod status;
mod target;
mod worker;

pub(crate) use bio::{Bio, BlkStatus, HeldBio, Op, SavedIter};
pub(crate) use ctr::{Args, CtrContext, CtrError};
pub(crate) use dev::Dev;
pub(crate) use gate::{Ticket, WriteGate};
pub(crate) use handle::TargetHandle;
pub(crate) use io::{crc32_le, random_bytes, IoKind};
pub(crate) use parked::BioQueue;
pub(crate) use percpu::{now_ns, ratelimit, PerCpu};
pub(crate) use rcu::{Footprint, RcuBox, RcuWriter};
pub(crate) use registration::Registration;
pub(crate) use status::{StatusType, StatusWriter};
pub(crate) use target::{DeviceIterator, EndIo, Limits, MapResult, Target, Token, FEATURE_NOWAIT};
pub(crate) use worker::{WorkHandler, Worker};

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
