// SPDX-License-Identifier: GPL-2.0

//! A bio handed to a target's `map`.

use super::{bindings, Dev};
use core::marker::PhantomData;

/// The operation of a bio.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Op {
    /// A read.
    Read,
    /// A write (an empty write with the preflush flag is a flush).
    Write,
    /// A discard.
    Discard,
    /// A write of zeroes.
    WriteZeroes,
    /// Anything else (zone management, secure erase, ...).
    Other,
}

/// A bio being mapped: the clone device-mapper made for this target.
pub(crate) struct Bio<'a> {
    // INVARIANT: `bio` is the clone passed to `map` and `ti` its target, both valid and the
    // bio exclusively ours for `'a`.
    ti: *mut bindings::dm_target,
    bio: *mut bindings::bio,
    _p: PhantomData<&'a mut bindings::bio>,
}

impl Bio<'_> {
    /// # Safety
    /// `ti` and `bio` must be the arguments of a `map` call, used only during it.
    pub(super) unsafe fn from_raw(ti: *mut bindings::dm_target, bio: *mut bindings::bio) -> Self {
        Self { ti, bio, _p: PhantomData }
    }

    /// The first sector, relative to the start of the target.
    pub(crate) fn target_sector(&self) -> u64 {
        // SAFETY: `bio` and `ti` are valid (type invariant).
        unsafe { (*self.bio).bi_iter.bi_sector - (*self.ti).begin }
    }

    /// Size in bytes.
    pub(crate) fn size(&self) -> u32 {
        // SAFETY: `bio` is valid (type invariant).
        unsafe { (*self.bio).bi_iter.bi_size }
    }

    /// The operation.
    pub(crate) fn op(&self) -> Op {
        // SAFETY: `bio` is valid (type invariant).
        let op = unsafe { bindings::dmr_bio_op(self.bio) };
        match op {
            bindings::req_op::REQ_OP_READ => Op::Read,
            bindings::req_op::REQ_OP_WRITE => Op::Write,
            bindings::req_op::REQ_OP_DISCARD => Op::Discard,
            bindings::req_op::REQ_OP_WRITE_ZEROES => Op::WriteZeroes,
            _ => Op::Other,
        }
    }

    /// Sends the bio to `dev` at `sector` (absolute on that device). A bio without data
    /// (an empty flush) keeps its sector: it has none that matters.
    pub(crate) fn remap(&mut self, dev: &Dev, sector: u64) {
        // SAFETY: `bio` is ours (type invariant) and `dev`'s bdev is open.
        unsafe {
            bindings::dmr_bio_set_dev(self.bio, dev.bdev());
            if (*self.bio).bi_iter.bi_size != 0 {
                (*self.bio).bi_iter.bi_sector = sector;
            }
        }
    }
}
