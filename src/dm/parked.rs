// SPDX-License-Identifier: GPL-2.0

//! Bios a target parks in `map` (a write to a block being relocated) and later submits
//! itself, remapped to where the block then lives.

use super::bindings;
use super::bio::per_bio_ptr;
use super::{Dev, MapResult, Token};
use core::marker::PhantomData;
use kernel::prelude::*;
use kernel::types::Opaque;

/// An irq-safe list of parked bios.
///
/// # Invariants
/// `q` is initialised by `dmr_bio_queue_init` in `new`, at a stable heap address; C mutates
/// it under its own spinlock, hence `Opaque`.
pub(crate) struct BioQueue<P> {
    q: KBox<Opaque<bindings::dmr_bio_queue>>,
    _p: PhantomData<P>,
}

// SAFETY: the list is protected by its spinlock.
unsafe impl<P> Send for BioQueue<P> {}
// SAFETY: see `Send`.
unsafe impl<P> Sync for BioQueue<P> {}

impl<P: Copy> BioQueue<P> {
    /// An empty queue.
    pub(crate) fn new() -> Result<Self> {
        let q = KBox::new(Opaque::uninit(), GFP_KERNEL)?;
        // SAFETY: the memory is ours and not shared yet.
        unsafe { bindings::dmr_bio_queue_init(q.get()) };
        Ok(Self { q, _p: PhantomData })
    }

    pub(super) fn push(&self, bio: *mut bindings::bio) {
        // SAFETY: type invariant; the queue locks itself.
        unsafe { bindings::dmr_bio_queue_push(self.q.get(), bio) };
    }

    /// The next parked bio, if any.
    pub(crate) fn pop(&self) -> Option<ParkedBio<P>> {
        // SAFETY: type invariant; the queue locks itself.
        let bio = unsafe { bindings::dmr_bio_queue_pop(self.q.get()) };
        if bio.is_null() {
            return None;
        }
        // INVARIANT: only `Bio::park` pushes, and popping transfers ownership. (Built only
        // for a real bio: a `ParkedBio` completes its bio when dropped.)
        Some(ParkedBio { bio, _p: PhantomData })
    }
}

/// A bio taken in `map` and not yet submitted: its position and data are as `map` saw them.
/// Dropping it completes it with an I/O error.
///
/// # Invariants
/// `bio` is a dm clone of a target with per-bio type `P`, parked by `Bio::park` and not
/// submitted or completed yet.
pub(crate) struct ParkedBio<P> {
    bio: *mut bindings::bio,
    _p: PhantomData<P>,
}

// SAFETY: a parked bio may be submitted from any thread; nothing else touches it meanwhile.
unsafe impl<P: Send> Send for ParkedBio<P> {}

impl<P: Copy> ParkedBio<P> {
    /// The target's per-bio data.
    pub(crate) fn per_bio(&mut self) -> &mut P {
        // SAFETY: type invariant: the area holds the `P` map initialised; the bio is ours.
        unsafe { &mut *per_bio_ptr::<P>(self.bio) }
    }

    /// Sends the bio to `dev` at `sector` (absolute on that device); it then completes
    /// through the target's `end_io` like a remapped bio.
    pub(crate) fn submit(self, dev: &Dev, sector: u64) {
        let bio = self.bio;
        core::mem::forget(self);
        // SAFETY: type invariant: ours, untouched since map; `dev`'s bdev is open.
        unsafe {
            bindings::dmr_bio_set_dev(bio, dev.bdev());
            if (*bio).bi_iter.bi_size != 0 {
                (*bio).bi_iter.bi_sector = sector;
            }
            bindings::dmr_submit_remapped(bio);
        }
    }
}

impl<P> Drop for ParkedBio<P> {
    fn drop(&mut self) {
        // SAFETY: type invariant: not submitted or completed yet.
        unsafe { bindings::dmr_bio_endio(self.bio, super::BlkStatus::IOERR.0) };
    }
}

/// Parks a bio from `map`.
pub(super) fn park<P: Copy>(q: &BioQueue<P>, bio: *mut bindings::bio) -> MapResult {
    q.push(bio);
    MapResult::Submitted(Token(()))
}
