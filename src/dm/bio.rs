// SPDX-License-Identifier: GPL-2.0

//! Bios as a target sees them: [`Bio`] during `map`/`end_io`, and [`HeldBio`] once the
//! target has taken a bio over (deferred from `map` or held from `end_io`) until it
//! completes it.

use super::worker::{WorkHandler, Worker};
use super::{bindings, Dev, EndIo, MapResult, Token};
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

/// A block-layer completion status (`blk_status_t`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct BlkStatus(pub(crate) u8);

impl BlkStatus {
    /// Success.
    pub(crate) const OK: Self = Self(bindings::dmr_const::DMR_BLK_STS_OK as u8);
    /// Generic I/O error (what most drivers return for a failed sector).
    pub(crate) const IOERR: Self = Self(bindings::dmr_const::DMR_BLK_STS_IOERR as u8);
    /// The device is offline (SCSI after its error handler gave up, a deleted disk).
    pub(crate) const OFFLINE: Self = Self(bindings::dmr_const::DMR_BLK_STS_OFFLINE as u8);

    /// Whether this is success.
    pub(crate) fn is_ok(self) -> bool {
        self == Self::OK
    }

    /// Whether this error says the medium failed (the errors relocation is for), as opposed
    /// to no space, try again, unsupported, a transport or timeout, ... `IOERR` counts:
    /// drivers that cannot tell (virtio-blk) return it for a bad sector. The policy per
    /// status is the table in docs/design.md, "Errors from real drivers".
    pub(crate) fn is_media_error(self) -> bool {
        self.0 == bindings::dmr_const::DMR_BLK_STS_IOERR as u8
            || self.0 == bindings::dmr_const::DMR_BLK_STS_MEDIUM as u8
    }

    /// The kernel's name of the status, as `blk_errors[]` spells it, for log lines.
    pub(crate) fn name(self) -> &'static str {
        use bindings::dmr_const as c;
        let names: [(c::Type, &str); 15] = [
            (c::DMR_BLK_STS_OK, "ok"),
            (c::DMR_BLK_STS_IOERR, "I/O"),
            (c::DMR_BLK_STS_MEDIUM, "critical medium"),
            (c::DMR_BLK_STS_NOSPC, "critical space allocation"),
            (c::DMR_BLK_STS_AGAIN, "busy"),
            (c::DMR_BLK_STS_TARGET, "critical target"),
            (c::DMR_BLK_STS_NOTSUPP, "operation not supported"),
            (c::DMR_BLK_STS_TIMEOUT, "timeout"),
            (c::DMR_BLK_STS_TRANSPORT, "recoverable transport"),
            (c::DMR_BLK_STS_RESV_CONFLICT, "reservation conflict"),
            (c::DMR_BLK_STS_INVAL, "invalid"),
            (c::DMR_BLK_STS_PROTECTION, "protection"),
            (c::DMR_BLK_STS_RESOURCE, "kernel resource"),
            (c::DMR_BLK_STS_DEV_RESOURCE, "device resource"),
            (c::DMR_BLK_STS_OFFLINE, "device offline"),
        ];
        names.iter().find(|(v, _)| *v as u8 == self.0).map_or("other", |(_, n)| n)
    }
}

/// A bio's position in its data, saved at map time: by completion the bio may have been
/// advanced past the range it covered.
#[derive(Clone, Copy, Default)]
pub(crate) struct SavedIter(bindings::bvec_iter);

/// The low 8 bits of `bi_opf` are the operation (`REQ_OP_MASK`).
const REQ_OP_MASK: u32 = 0xff;

fn op_of(bio: *const bindings::bio) -> Op {
    // Read in place, not through a C call: this runs for every bio.
    // SAFETY: callers pass a valid bio.
    let op = unsafe { (*bio).bi_opf } & REQ_OP_MASK;
    match op {
        bindings::req_op::REQ_OP_READ => Op::Read,
        bindings::req_op::REQ_OP_WRITE => Op::Write,
        bindings::req_op::REQ_OP_DISCARD => Op::Discard,
        bindings::req_op::REQ_OP_WRITE_ZEROES => Op::WriteZeroes,
        _ => Op::Other,
    }
}

/// The per-bio data of `bio`, of a target whose `per_io_data_size` is `size_of::<P>()`.
///
/// # Safety
/// `bio` must be a clone of a target whose per-bio type is `P`.
pub(super) unsafe fn per_bio_ptr<P>(bio: *mut bindings::bio) -> *mut P {
    // dm aligns the area for any `P` with at most pointer alignment (checked at registration).
    // SAFETY: per the contract the area exists and has the size of `P`.
    unsafe { bindings::dm_per_bio_data(bio, core::mem::size_of::<P>()).cast::<P>() }
}

/// A bio being mapped or completed: the clone device-mapper made for this target.
///
/// # Invariants
/// `bio` is the clone passed to `map`/`end_io` of target `ti`, valid and ours for `'a`; its
/// per-bio data is at `pb`, and holds an initialised `P` if `init` (always in `end_io`; in
/// `map` once the target has set it, or on first use: see `per_bio`).
pub(crate) struct Bio<'a, P> {
    ti: *mut bindings::dm_target,
    bio: *mut bindings::bio,
    /// `bio`'s per-bio data, looked up once per call (`dm_per_bio_data` is not inline).
    pb: *mut P,
    init: bool,
    _p: PhantomData<(&'a mut bindings::bio, P)>,
}

impl<P: Copy + Default + Send> Bio<'_, P> {
    /// # Safety
    /// `ti` and `bio` must be the arguments of a `map` call of a target whose per-bio type is
    /// `P`, used only during it.
    pub(super) unsafe fn from_map(ti: *mut bindings::dm_target, bio: *mut bindings::bio) -> Self {
        // Not initialised here: `map` writes the whole `P` once (`set_per_bio`), and the
        // area is set to `P::default()` before any other use.
        // SAFETY: per the contract.
        let pb = unsafe { per_bio_ptr::<P>(bio) };
        Self { ti, bio, pb, init: false, _p: PhantomData }
    }

    /// # Safety
    /// As `from_map`, for an `end_io` call (map initialised the per-bio data).
    pub(super) unsafe fn from_end_io(ti: *mut bindings::dm_target, bio: *mut bindings::bio) -> Self {
        // SAFETY: per the contract.
        let pb = unsafe { per_bio_ptr::<P>(bio) };
        Self { ti, bio, pb, init: true, _p: PhantomData }
    }

    /// Sets the target's per-bio data.
    pub(crate) fn set_per_bio(&mut self, p: P) {
        // SAFETY: type invariant: `pb` is `bio`'s per-bio area, of a `P`'s size and alignment, exclusively ours while we hold the bio; `P: Copy`, so overwriting an initialised value drops nothing.
        unsafe { self.pb.write(p) };
        self.init = true;
    }

    /// Makes sure the per-bio data is initialised (to `P::default()` if `map` has not set
    /// it), before the bio or its data is used elsewhere.
    fn ensure_init(&mut self) {
        if !self.init {
            self.set_per_bio(P::default());
        }
    }

    /// The target's per-bio data (`P::default()` if not set yet).
    pub(crate) fn per_bio(&mut self) -> &mut P {
        self.ensure_init();
        // SAFETY: type invariant: `pb` is `bio`'s per-bio area, initialised (just above), exclusively ours while we hold the bio.
        unsafe { &mut *self.pb }
    }

    /// The first sector, relative to the start of the target.
    pub(crate) fn target_sector(&self) -> u64 {
        // dm maps only bios inside the target, so the sector is at least `begin`: wrapping
        // keeps a panic branch off the I/O path.
        // SAFETY: `bio` and `ti` are valid (type invariant).
        unsafe { (*self.bio).bi_iter.bi_sector.wrapping_sub((*self.ti).begin) }
    }

    /// Size in bytes.
    pub(crate) fn size(&self) -> u32 {
        // SAFETY: `bio` is valid (type invariant).
        unsafe { (*self.bio).bi_iter.bi_size }
    }

    /// The operation.
    pub(crate) fn op(&self) -> Op {
        op_of(self.bio)
    }

    /// For the empty flush bios a target asked for with `num_flush_bios`: which one this is
    /// (0-based).
    pub(crate) fn target_bio_nr(&self) -> u32 {
        // SAFETY: `bio` is a valid dm clone (type invariant).
        unsafe { bindings::dm_bio_get_target_bio_nr(self.bio) }
    }

    /// Keeps only the first `sectors` sectors; device-mapper sends the rest as a new bio.
    /// Must not be used on flush bios; `sectors` must be positive and at most the size.
    pub(crate) fn accept_partial(&mut self, sectors: u32) {
        if sectors == 0 || u64::from(sectors) * 512 >= u64::from(self.size()) || self.size() == 0 {
            return;
        }
        // SAFETY: a data-carrying clone in `map`; `sectors` is within the bio (checked).
        unsafe { bindings::dm_accept_partial_bio(self.bio, sectors) };
    }

    /// The current data position, to copy the bio's data later.
    pub(crate) fn save_iter(&self) -> SavedIter {
        // A plain copy of `bi_iter`, read in place (every bio saves it).
        // SAFETY: `bio` is valid (type invariant).
        SavedIter(unsafe { (*self.bio).bi_iter })
    }

    /// Sends the bio to `dev` at `sector` (absolute on that device). A bio without data
    /// (an empty flush) keeps its sector: it has none that matters.
    #[inline]
    pub(crate) fn remap(&mut self, dev: &Dev, sector: u64) -> MapResult {
        // `end_io` reads the per-bio data.
        self.ensure_init();
        // SAFETY: `bio` is ours (type invariant) and `dev`'s bdev is open.
        unsafe {
            bindings::dmr_bio_set_dev(self.bio, dev.bdev());
            if (*self.bio).bi_iter.bi_size != 0 {
                (*self.bio).bi_iter.bi_sector = sector;
            }
        }
        MapResult::Remapped
    }

    /// Whether the bio asks to be on stable media when it completes (REQ_FUA).
    pub(crate) fn is_fua(&self) -> bool {
        // SAFETY: `bio` is valid (type invariant).
        let f = unsafe { (*self.bio).bi_opf };
        f & bindings::dmr_const::DMR_REQ_FUA as u32 != 0
    }

    /// Fails the bio from `map` with an I/O error without sending it anywhere (dm's
    /// DM_MAPIO_KILL); its `end_io` is not called, so the caller must have released whatever
    /// the per-bio data would have (a gate ticket).
    pub(crate) fn kill(self) -> MapResult {
        MapResult::Kill
    }

    /// Parks the bio from `map` in `q`; the target submits it later (`dm::parked::ParkedBio`).
    pub(crate) fn park(mut self, q: &super::BioQueue<P>) -> MapResult {
        self.ensure_init();
        super::parked::park(q, self.bio)
    }

    /// Hands the bio to the target's worker from `map`; the worker completes it.
    pub(crate) fn defer<H: WorkHandler<PerBio = P>>(mut self, w: &Worker<H>) -> MapResult {
        self.ensure_init();
        w.push(self.bio);
        MapResult::Submitted(Token(()))
    }

    /// Keeps the bio from completing in `end_io` and hands it to the worker, which
    /// completes it later (possibly with another status).
    pub(crate) fn hold<H: WorkHandler<PerBio = P>>(mut self, w: &Worker<H>) -> EndIo {
        self.ensure_init();
        w.push(self.bio);
        EndIo::Incomplete(Token(()))
    }
}

/// A bio the target has taken over; it must complete it. Dropping it completes it with an
/// I/O error, so no bio can be left hanging.
///
/// # Invariants
/// `bio` is a dm clone of a target with per-bio type `P`, handed to the target by
/// `defer`/`hold` and not completed yet.
pub(crate) struct HeldBio<P> {
    bio: *mut bindings::bio,
    _p: PhantomData<P>,
}

// SAFETY: a held bio may be completed from any thread; nothing else touches it meanwhile.
unsafe impl<P: Send> Send for HeldBio<P> {}

impl<P: Copy> HeldBio<P> {
    /// # Safety
    /// `bio` must have come from [`Bio::defer`] or [`Bio::hold`] of a target with per-bio
    /// type `P`, and be owned by the caller.
    pub(super) unsafe fn from_raw(bio: *mut bindings::bio) -> Self {
        Self { bio, _p: PhantomData }
    }

    /// The target's per-bio data.
    pub(crate) fn per_bio(&mut self) -> &mut P {
        // SAFETY: type invariant: the area holds the `P` map initialised; the bio is ours.
        unsafe { &mut *per_bio_ptr::<P>(self.bio) }
    }

    /// Copies `dst.len()` bytes of the bio's data, from `skip` bytes after `start`.
    pub(crate) fn copy_out(&self, start: &SavedIter, skip: u32, dst: &mut [u8]) {
        // The copy is bounded by both the iterator and `dst.len()`.
        // SAFETY: the bio's pages live until it completes; `start` was saved from this bio.
        unsafe {
            bindings::dmr_bio_copy_out(self.bio, &start.0, skip, dst.as_mut_ptr().cast(), dst.len() as u32)
        };
    }

    /// Copies `src` into the bio's data, from `skip` bytes after `start`.
    pub(crate) fn copy_in(&mut self, start: &SavedIter, skip: u32, src: &[u8]) {
        // SAFETY: as `copy_out`; the bio is ours to fill (a read being completed).
        unsafe { bindings::dmr_bio_copy_in(self.bio, &start.0, skip, src.as_ptr().cast(), src.len() as u32) };
    }

    /// Completes the bio with `status`.
    pub(crate) fn complete(self, status: BlkStatus) {
        let bio = self.bio;
        core::mem::forget(self);
        // SAFETY: type invariant: ours and not completed; completion passes it back to dm.
        unsafe { bindings::dmr_bio_endio(bio, status.0) };
    }
}

impl<P> Drop for HeldBio<P> {
    fn drop(&mut self) {
        // SAFETY: type invariant: not completed yet (`complete` forgets `self`).
        unsafe { bindings::dmr_bio_endio(self.bio, BlkStatus::IOERR.0) };
    }
}
