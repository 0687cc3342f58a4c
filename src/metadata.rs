// SPDX-License-Identifier: GPL-2.0

//! The spare's metadata in the kernel: reading what the loader asks for, format, commit.
//! Every decision about what the spare holds (which superblock copy, the geometry checks,
//! the replay and its rules) is `logic::loader`'s; this file only does the I/O. Storage
//! layer: it imports nothing of the target but `dm` and `logic`.

#![forbid(unsafe_code)]

use crate::dm::{random_bytes, CtrError, Dev, IoKind};
use crate::logic::format::{log_header, log_init, log_push, log_seal, Geometry, Remap, Superblock, META_BLOCK};
use crate::logic::loader::{self, Expect, LoadError, LogEnd, Resume};
use crate::logic::mainid::MainId;
use crate::logic::remaps::Entry;
use kernel::prelude::*;

/// The state of the log's tail: what a commit appends to.
pub(crate) struct Log {
    /// The superblock in use.
    pub(crate) sb: Superblock,
    /// The tail logical block, encoded, as last written (or empty if never written); also
    /// the buffer it is written from.
    tail: KVVec<u8>,
    /// The slot holding the tail's durable version.
    pub(crate) tail_slot: u32,
    /// Whether the tail has a durable version at all.
    pub(crate) tail_written: bool,
    /// Sequence number of the last commit.
    pub(crate) seq: u64,
    /// Next pool block to allocate.
    pub(crate) next_free: u64,
    /// Where the first resume's replay starts (`loader::Resume`): after the log's leading run
    /// of full blocks, which no commit writes again.
    pub(crate) resume: Resume,
    /// The remaps the constructor read from `resume` on, in log order: the part of its table
    /// the first resume reads again (usually one block's, at most 252). Emptied then.
    pub(crate) open: KVVec<Entry>,
    /// A blank spare accepted for formatting whose superblocks are not written yet: the
    /// first resume writes them (`write_superblocks`), so a table line refused after the
    /// metadata was read leaves the spare untouched.
    pub(crate) unformatted: bool,
}

/// What a failed [`Log::commit`] leaves: `new[..durable]` is in the log for sure, `new[doubt]`
/// may or may not be (the write that failed held them), the rest is not. The log's state in
/// memory is then no longer the spare's: the caller stops committing (degraded).
#[derive(Debug)]
pub(crate) struct CommitFailed {
    pub(crate) durable: usize,
    pub(crate) doubt: core::ops::Range<usize>,
}

/// A loaded spare: the log state and the remaps it records, sorted by main block.
pub(crate) struct Loaded {
    pub(crate) log: Log,
    pub(crate) entries: KVVec<Entry>,
}

fn err(code: Error, msg: &'static core::ffi::CStr) -> CtrError {
    CtrError { code, msg }
}

fn meta_buf(len: usize) -> Result<KVVec<u8>, CtrError> {
    KVVec::from_elem(0u8, len, GFP_KERNEL).map_err(|_| err(ENOMEM, c"Cannot allocate metadata buffer"))
}

fn as_block(b: &[u8]) -> &[u8; META_BLOCK] {
    // Callers pass META_BLOCK-sized slices of their buffers; a short one reads as blank.
    static ZERO: [u8; META_BLOCK] = [0; META_BLOCK];
    b.get(..META_BLOCK).and_then(|b| b.try_into().ok()).unwrap_or(&ZERO)
}

fn as_block_mut(b: &mut [u8]) -> Option<&mut [u8; META_BLOCK]> {
    b.get_mut(..META_BLOCK).and_then(|b| b.try_into().ok())
}

fn refused(e: LoadError) -> CtrError {
    let code = match e {
        LoadError::Read => EIO,
        LoadError::NoMemory => ENOMEM,
        _ => EINVAL,
    };
    err(code, e.message())
}

/// Reads the spare's metadata; a blank spare with `format` set gets a new superblock, in
/// memory only (see `Log::unformatted`).
///
/// Refuses (never overwrites) a spare whose metadata does not fit the devices, with the
/// loader's reason; with `format`, refuses a spare without metadata that is not blank.
pub(crate) fn load(spare: &Dev, block_size: u32, main_sectors: u64, main_id: MainId, format: bool) -> Result<Loaded, CtrError> {
    let mut buf = meta_buf(2 * META_BLOCK)?;
    spare
        .rw_sync(0, buf.as_mut_slice(), IoKind::Read)
        .map_err(|e| err(e, c"Cannot read the spare's superblocks"))?;
    let (a, b) = buf.as_slice().split_at(META_BLOCK);
    let want = Expect { spare_sectors: spare.sectors(), main_sectors, block_size, main_id };
    match loader::superblock(as_block(a), as_block(b), &want) {
        Ok(sb) => replay(spare, sb),
        Err(LoadError::Blank) if format => {
            ensure_blank(spare)?;
            new_superblock(spare, block_size, main_sectors, main_id)
        }
        Err(e) => Err(refused(e)),
    }
}

/// Refuses to format a spare whose first or last MiB holds anything: it has no dm-remap
/// metadata, so whatever it holds is someone else's (a filesystem, a partition table, an md
/// or LVM label at either end).
fn ensure_blank(spare: &Dev) -> Result<(), CtrError> {
    const CHUNK: usize = 64 * 1024;
    let mut buf = meta_buf(CHUNK)?;
    let bytes = spare.sectors().saturating_mul(512);
    for (start, len) in loader::blank_ranges(bytes) {
        let mut at = start;
        while at < start + len {
            let n = (start + len - at).min(CHUNK as u64) as usize;
            // Whole sectors: the device size is a multiple of 512, and so are the ranges.
            let piece = &mut buf.as_mut_slice()[..n];
            spare.rw_sync(at / 512, piece, IoKind::Read).map_err(|e| err(e, c"Cannot read the spare"))?;
            if !loader::is_zero(piece) {
                return Err(CtrError::inval(
                    c"Spare is not blank and holds no dm-remap metadata: format refused (prepare it with dmremap format --force)",
                ));
            }
            at += n as u64;
        }
    }
    Ok(())
}

/// A new superblock for a blank spare, not written yet.
fn new_superblock(spare: &Dev, block_size: u32, main_sectors: u64, main_id: MainId) -> Result<Loaded, CtrError> {
    let geometry = Geometry::compute(spare.sectors() * 512, block_size)
        .ok_or(CtrError::inval(c"Spare device too small for metadata and one spare block"))?;
    let mut uuid = [0u8; 16];
    random_bytes(&mut uuid);
    // The table's `main_id`, if any, binds the new spare to its main device.
    let sb = Superblock::new(1, uuid, main_sectors, geometry, main_id).with_records(spare.sectors() * 512);
    let mut tail = meta_buf(META_BLOCK)?;
    if let Some(b) = as_block_mut(tail.as_mut_slice()) {
        log_init(b, &sb.uuid, 0);
    }
    Ok(Loaded {
        log: Log {
            sb,
            tail,
            tail_slot: 0,
            tail_written: false,
            seq: 0,
            next_free: 0,
            resume: Resume::START,
            open: KVVec::new(),
            unformatted: true,
        },
        entries: KVVec::new(),
    })
}

/// Writes both copies of `sb` (formatting the spare), durably.
pub(crate) fn write_superblocks(spare: &Dev, sb: &Superblock) -> Result {
    let mut buf = KVVec::from_elem(0u8, 2 * META_BLOCK, GFP_KERNEL)?;
    for half in buf.as_mut_slice().chunks_exact_mut(META_BLOCK) {
        if let Ok(b) = <&mut [u8; META_BLOCK]>::try_from(half) {
            sb.encode(b);
        }
    }
    spare.rw_sync(0, buf.as_mut_slice(), IoKind::WriteCommit)?;
    Ok(())
}

/// Log blocks read per I/O while replaying (256 KiB).
const READ_BLOCKS: u32 = 32;

/// A replay buffer for `sb`'s log: up to [`READ_BLOCKS`] blocks of two slots.
fn replay_buf(sb: &Superblock) -> Result<KVVec<u8>, CtrError> {
    meta_buf(sb.geometry.log_blocks.clamp(1, READ_BLOCKS) as usize * 2 * META_BLOCK)
}

/// Runs `loader::replay_from` on the spare from `from` (`Resume::START`: the whole log),
/// appending the remaps it reads to `entries` in log order; `tail` holds the previous replay's
/// tail (see `loader::replay_from`) and gets the new one.
fn replay_into(spare: &Dev, sb: &Superblock, from: Resume, tail: &mut KVVec<u8>, entries: &mut KVVec<Entry>) -> Result<LogEnd, CtrError> {
    let mut buf = replay_buf(sb)?;
    let tail_block = as_block_mut(tail.as_mut_slice()).ok_or(err(ENOMEM, c"Cannot allocate metadata buffer"))?;
    let read = |index: u32, b: &mut [u8]| spare.rw_sync(Geometry::log_slot_sector(index, 0), b, IoKind::Read).map_err(|_| ());
    // A log block's entries go in together: one reservation per block, not per entry.
    // (A false from `push` ends the replay with `NoMemory`.)
    let mut chunk = [Entry::default(); 64];
    let mut n = 0;
    let mut too_large = false;
    let push = |r: Remap| {
        // `check_geometry` bounded the pool: every pool block fits an entry.
        let Some(en) = Entry::remap(r.main, r.spare) else {
            too_large = true;
            return false;
        };
        chunk[n % 64] = en;
        n += 1;
        if n < 64 {
            return true;
        }
        n = 0;
        entries.extend_from_slice(&chunk, GFP_KERNEL).is_ok()
    };
    let end = loader::replay_from(sb, from, buf.as_mut_slice(), tail_block, read, push)
        .map_err(|e| refused(if too_large { LoadError::PoolTooLarge } else { e }))?;
    if entries.extend_from_slice(chunk.get(..n).unwrap_or(&[]), GFP_KERNEL).is_err() {
        return Err(refused(LoadError::NoMemory));
    }
    Ok(end)
}

/// Replays the log (`loader::replay`): every acknowledged remap, in a table sorted by main
/// block, and the remaps from the resume point on (`Log::open`) for the first resume.
pub(crate) fn replay(spare: &Dev, sb: Superblock) -> Result<Loaded, CtrError> {
    let mut tail = meta_buf(META_BLOCK)?;
    if let Some(b) = as_block_mut(tail.as_mut_slice()) {
        log_init(b, &sb.uuid, 0);
    }
    let mut entries: KVVec<Entry> = KVVec::new();
    // Room for the log's remaps at once (`loader::estimate`, a few reads): growing by doubling
    // would copy the table along the way and leave up to twice its size. Only a hint: without
    // the memory for it the vector grows as the replay goes.
    let mut buf = meta_buf(2 * META_BLOCK)?;
    let read = |index: u32, b: &mut [u8]| spare.rw_sync(Geometry::log_slot_sector(index, 0), b, IoKind::Read).map_err(|_| ());
    let hint = loader::estimate(&sb, buf.as_mut_slice(), read).map_err(refused)?;
    drop(buf);
    if let Ok(n) = usize::try_from(hint) {
        let _ = entries.reserve(n, GFP_KERNEL | __GFP_NOWARN);
    }
    let end = replay_into(spare, &sb, Resume::START, &mut tail, &mut entries)?;
    let mut open = KVVec::new();
    let from = usize::try_from(end.resume.entries).ok().and_then(|n| entries.as_slice().get(n..)).unwrap_or(&[]);
    open.extend_from_slice(from, GFP_KERNEL).map_err(|_| refused(LoadError::NoMemory))?;
    loader::finish(entries.as_mut_slice()).map_err(refused)?;
    // The vector grew by doubling: keep an exact-size copy (12 bytes per remap, not up to 24).
    if entries.capacity() > entries.len() + entries.len() / 16 {
        let mut exact = KVVec::with_capacity(entries.len(), GFP_KERNEL).map_err(|_| refused(LoadError::NoMemory))?;
        exact.extend_from_slice(entries.as_slice(), GFP_KERNEL).map_err(|_| refused(LoadError::NoMemory))?;
        entries = exact;
    }
    Ok(Loaded { log: Log::at(sb, tail, &end, open), entries })
}

/// What the first resume's replay found: the log state and the remaps from the constructor's
/// resume point on, in log order.
pub(crate) struct Reread {
    pub(crate) log: Log,
    pub(crate) open: KVVec<Entry>,
}

/// Replays the log again from where the constructor's replay can be taken up
/// (`loader::replay_from` at `log.resume`), for the first resume: the blocks before it are
/// final, the ones from it on may have changed since (the old table committed until it was
/// suspended). `log` is not changed.
pub(crate) fn reread(spare: &Dev, log: &Log) -> Result<Reread, CtrError> {
    let mut tail = KVVec::new();
    tail.extend_from_slice(log.tail.as_slice(), GFP_KERNEL).map_err(|_| err(ENOMEM, c"Cannot allocate metadata buffer"))?;
    let mut open = KVVec::new();
    let end = replay_into(spare, &log.sb, log.resume, &mut tail, &mut open)?;
    Ok(Reread { log: Log::at(log.sb, tail, &end, KVVec::new()), open })
}

impl Log {
    /// The log state a replay ended with.
    fn at(sb: Superblock, tail: KVVec<u8>, end: &LogEnd, open: KVVec<Entry>) -> Log {
        Log {
            sb,
            tail,
            tail_slot: end.tail_slot,
            tail_written: end.tail_written,
            seq: end.seq,
            next_free: end.next_free,
            resume: end.resume,
            open,
            unformatted: false,
        }
    }

    /// Pool blocks not yet handed out.
    pub(crate) fn free_blocks(&self) -> u64 {
        self.sb.geometry.pool_blocks - self.next_free
    }

    /// Hands out the next pool block, if any is left.
    pub(crate) fn allocate(&mut self) -> Option<u64> {
        (self.next_free < self.sb.geometry.pool_blocks).then(|| {
            self.next_free += 1;
            self.next_free - 1
        })
    }

    /// Makes `new` durable: appends them to the log in new versions of the tail block (never
    /// over its durable version) and further blocks. The first write carries a preflush, so
    /// the relocated data written before it is durable first; every write is FUA.
    /// Returns the number of log blocks written; on failure, which of `new` may be durable
    /// ([`CommitFailed`]): a batch that spills into the next log block is written a block at a
    /// time, and a write that fails may still have reached the disk.
    pub(crate) fn commit(&mut self, spare: &Dev, new: &[Remap]) -> Result<u64, CommitFailed> {
        let before = |at: usize| CommitFailed { durable: at, doubt: at..at };
        // The loader refuses sequence numbers near the limit; still, never overflow.
        let seq = self.seq.checked_add(1).ok_or(before(0))?;
        let next_free = self.next_free;
        let uuid = self.sb.uuid;
        let log_blocks = self.sb.geometry.log_blocks;
        let b = as_block_mut(self.tail.as_mut_slice()).ok_or(before(0))?;
        let mut i = 0;
        let mut first = true;
        let mut written = 0;
        while i < new.len() {
            let h = log_header(b);
            if h.is_full() {
                if h.index + 1 >= log_blocks {
                    // The log holds one entry per pool block, so this cannot happen.
                    return Err(before(i));
                }
                log_init(b, &uuid, h.index + 1);
                self.tail_written = false;
            }
            let start = i;
            while i < new.len() && log_push(b, new[i]) {
                i += 1;
            }
            log_seal(b, seq, next_free);
            let slot = if self.tail_written { 1 - self.tail_slot } else { 0 };
            let kind = if first { IoKind::WriteCommit } else { IoKind::WriteFua };
            if spare.rw_sync(Geometry::log_slot_sector(log_header(b).index, slot), &mut b[..], kind).is_err() {
                // Earlier blocks are durable (each write was FUA); this one's new entries may
                // or may not be; the rest were never written.
                return Err(CommitFailed { durable: start, doubt: start..i });
            }
            first = false;
            written += 1;
            self.tail_slot = slot;
            self.tail_written = true;
        }
        self.seq = seq;
        Ok(written)
    }
}
