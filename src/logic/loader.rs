// SPDX-License-Identifier: GPL-2.0

//! The one metadata loader: every decision about what a spare holds, as plain functions over
//! byte slices with the I/O passed in. The kernel (`src/metadata.rs`), `dmremap inspect`, the
//! crash checker and the fuzzers all call these, so a spare is judged the same everywhere.
//!
//! Every value read from the spare is checked against the real device sizes with checked
//! arithmetic before it is used: a crafted or corrupt spare whose CRCs match is refused with
//! a [`LoadError`], never trusted.

use super::format::{
    badb_decode, ckpt_decode, BadBlocksHeader, Checkpoint, choose_superblock, log_choose, log_entries, log_header, DecodeError, Geometry, Remap, Replay, Superblock,
    SuperblockChoice, ENTRIES_PER_BLOCK, MAX_POOL_BLOCKS, META_BLOCK,
};
use super::mainid::MainId;
use super::remaps::Entry;
use core::ffi::CStr;

/// Commit sequence numbers at or above this are refused: a real log never gets near it (one
/// commit per nanosecond would take 290 years), and the next commit's `seq + 1` must not
/// overflow.
pub const SEQ_LIMIT: u64 = 1 << 63;

/// The devices the metadata must describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// Size of the spare, in 512-byte sectors.
    pub spare_sectors: u64,
    /// Length of the target (the main device's used part), in sectors.
    pub main_sectors: u64,
    /// The table line's block size, in bytes.
    pub block_size: u32,
    /// The table line's `main_id` (none: not checked; the length check stays).
    pub main_id: MainId,
}

/// Why a spare is refused. Each has one `ti->error` line ([`LoadError::message`]), listed in
/// docs/table.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// Reading the spare failed.
    Read,
    /// Neither superblock copy has the magic.
    Blank,
    /// Both superblock copies are damaged (magic present, CRC or fields wrong).
    Corrupt,
    /// The metadata is of a format version this module does not know.
    Unsupported,
    /// The metadata uses an incompatible feature this module does not know.
    UnsupportedFeature,
    /// Made for a main device of another length.
    OtherMain,
    /// Made for a main device with another id (the table's `main_id`).
    OtherMainId,
    /// Made with another block size.
    OtherBlockSize,
    /// The layout does not add up (pool overlapping the log, log of the wrong size).
    BadGeometry,
    /// The layout reaches past the end of the spare.
    TooSmall,
    /// A commit sequence number at the limit.
    SeqLimit,
    /// Pool blocks not in allocation order along the log.
    OutOfOrder,
    /// A log block whose CRC is right but whose fields are not (not a torn write: a crash
    /// never leaves that): an entry outside the devices, a wrong index, an empty block.
    BadLog,
    /// A main block remapped twice.
    Duplicate,
    /// No memory for the table.
    NoMemory,
    /// More pool blocks than the in-memory table can number ([`MAX_POOL_BLOCKS`]).
    PoolTooLarge,
}

impl LoadError {
    /// The `ti->error` text.
    pub fn message(&self) -> &'static CStr {
        match self {
            LoadError::Read => c"Cannot read the spare's metadata",
            LoadError::Blank => c"Spare holds no dm-remap metadata (add the format feature to initialise it)",
            LoadError::Corrupt => c"Spare metadata is corrupt in every copy",
            LoadError::Unsupported => c"Spare metadata has an unsupported format version",
            LoadError::UnsupportedFeature => c"Spare metadata uses an unsupported feature (a newer dm-remap wrote it)",
            LoadError::OtherMain => c"Spare metadata belongs to another main device (length differs)",
            LoadError::OtherMainId => c"Spare metadata belongs to another main device (main_id differs)",
            LoadError::OtherBlockSize => c"Spare metadata was formatted with another block_size",
            LoadError::BadGeometry => c"Spare metadata is inconsistent (pool and log layout)",
            LoadError::TooSmall => c"Spare device is smaller than its metadata says",
            LoadError::SeqLimit => c"Spare metadata is inconsistent (sequence number at its limit)",
            LoadError::OutOfOrder => c"Spare metadata is inconsistent (pool blocks out of order)",
            LoadError::BadLog => c"Spare metadata is inconsistent (a log block with impossible fields)",
            LoadError::Duplicate => c"Spare metadata is inconsistent (a block remapped twice)",
            LoadError::NoMemory => c"Cannot allocate the remap table",
            LoadError::PoolTooLarge => c"Spare pool has more than 4294967295 blocks, the most dm-remap supports (format it again)",
        }
    }
}

/// Checks a decoded superblock's layout against the devices.
pub fn check_geometry(sb: &Superblock, want: &Expect) -> Result<(), LoadError> {
    let g = &sb.geometry;
    if !want.main_id.is_none() && !sb.main_id.is_none() && want.main_id != sb.main_id {
        return Err(LoadError::OtherMainId);
    }
    if sb.main_sectors != want.main_sectors {
        return Err(LoadError::OtherMain);
    }
    if g.block_size != want.block_size {
        return Err(LoadError::OtherBlockSize);
    }
    // The log holds exactly one entry per pool block, as `Geometry::for_pool` lays it out;
    // a larger one would make the loader read a crafted number of blocks.
    let log_needed = g.pool_blocks.div_ceil(ENTRIES_PER_BLOCK as u64);
    let log_end = Geometry::log_slot_sector(g.log_blocks, 0);
    let bs_sectors = u64::from(g.block_size / 512);
    if g.pool_blocks == 0 || u64::from(g.log_blocks) != log_needed || g.pool_start < log_end || bs_sectors == 0 {
        return Err(LoadError::BadGeometry);
    }
    if g.pool_start % bs_sectors != 0 {
        return Err(LoadError::BadGeometry);
    }
    // The table numbers pool blocks in 32 bits (`remaps::Entry`); `Geometry::compute` never
    // lays out more. After this, every pool block the log may name fits an entry.
    if g.pool_blocks > MAX_POOL_BLOCKS {
        return Err(LoadError::PoolTooLarge);
    }
    let end = g.pool_blocks.checked_mul(bs_sectors).and_then(|n| n.checked_add(g.pool_start));
    let end = match end {
        Some(end) if end <= want.spare_sectors => end,
        _ => return Err(LoadError::TooSmall),
    };
    // The record area (v2), if any, lies after the pool and inside the spare.
    if sb.records_sectors != 0 {
        if sb.records_start < end {
            return Err(LoadError::BadGeometry);
        }
        match sb.records_start.checked_add(sb.records_sectors) {
            Some(r) if r <= want.spare_sectors => {}
            _ => return Err(LoadError::TooSmall),
        }
    }
    Ok(())
}

/// Chooses the superblock copy and checks it against the devices.
pub fn superblock(a: &[u8; META_BLOCK], b: &[u8; META_BLOCK], want: &Expect) -> Result<Superblock, LoadError> {
    let sb = match choose_superblock(a, b) {
        SuperblockChoice::Valid(sb) => sb,
        SuperblockChoice::Blank => return Err(LoadError::Blank),
        SuperblockChoice::Corrupt if either_is(a, b, DecodeError::UnknownFeature) => return Err(LoadError::UnsupportedFeature),
        SuperblockChoice::Corrupt if either_is(a, b, DecodeError::BadVersion) => return Err(LoadError::Unsupported),
        SuperblockChoice::Corrupt => return Err(LoadError::Corrupt),
    };
    if sb.seq >= SEQ_LIMIT {
        return Err(LoadError::SeqLimit);
    }
    check_geometry(&sb, want)?;
    Ok(sb)
}

/// For an offline inspection of a spare alone (`dmremap inspect`): the superblock choice and
/// the checks against the spare's size, with the main device and block size the metadata
/// itself records.
#[allow(dead_code)] // dmremap inspect (host)
pub fn superblock_alone(a: &[u8; META_BLOCK], b: &[u8; META_BLOCK], spare_sectors: u64) -> Result<Superblock, LoadError> {
    let own = match choose_superblock(a, b) {
        SuperblockChoice::Valid(sb) => {
            Expect { spare_sectors, main_sectors: sb.main_sectors, block_size: sb.geometry.block_size, main_id: sb.main_id }
        }
        _ => Expect { spare_sectors, main_sectors: 0, block_size: 0, main_id: MainId::NONE },
    };
    superblock(a, b, &own)
}

/// Whether a copy is intact (magic, CRC) but refused for `why` (a version or an
/// incompatible feature this code does not know).
fn either_is(a: &[u8; META_BLOCK], b: &[u8; META_BLOCK], why: DecodeError) -> bool {
    [a, b].iter().any(|c| Superblock::decode(c) == Err(why))
}

/// Where the log ends after a replay: what the next commit appends to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogEnd {
    /// Sequence number of the last commit.
    pub seq: u64,
    /// Next pool block to allocate.
    pub next_free: u64,
    /// Logical index of the tail block.
    pub tail_index: u32,
    /// The slot holding the tail's durable version.
    pub tail_slot: u32,
    /// Whether the tail has a durable version at all (false: empty log).
    pub tail_written: bool,
    /// Where a later replay of the same log can start ([`replay_from`]).
    pub resume: Resume,
}

/// A point from which the log can be replayed again without reading what comes before it:
/// the replay's state after the log's leading run of **full** blocks (252 entries).
///
/// A commit only ever writes its tail block while the tail has room, and starts the next
/// block once it is full, so a full version of a block, once durable, is never written again
/// (a commit writes the slot not holding the durable version of a block with room). Blocks
/// before the first one that is not full are therefore final: a second replay of the same
/// spare, even after the table that owned it committed more (a table reload: the old table
/// serves I/O between the new one's constructor and the swap) or while it committed (the
/// constructor's block-by-block read may mix versions, but only of blocks from here on),
/// reads exactly them again, and can start here with this state instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// The first block to read again.
    pub index: u32,
    /// The sequence number of block `index - 1` (0 if `index` is 0).
    pub seq: u64,
    /// The allocation position after block `index - 1`.
    pub next_free: u64,
    /// The last pool block of the blocks before `index`.
    pub last_spare: Option<u64>,
    /// The slot block `index - 1` was read from.
    pub slot: u32,
    /// Remaps the blocks before `index` hold (252 each).
    pub entries: u64,
}

impl Resume {
    /// The start of the log: a whole replay.
    pub const START: Resume = Resume { index: 0, seq: 0, next_free: 0, last_spare: None, slot: 0, entries: 0 };
}

/// Replays the log of `sb`: reads logical blocks with `read(index, buf)` into `buf` (2 x 4 KiB
/// per block; `buf` may hold several blocks, and `read` is then asked for as many consecutive
/// blocks from `index` as fit, the length of the slice it gets), hands each acknowledged remap
/// to `push` (false: out of memory), and leaves the tail block's chosen version in `tail`.
///
/// The log ends at the first block with no valid slot or whose sequence number goes back
/// (a leftover of a commit never acknowledged). Pool blocks are handed out in order, so
/// along the log they must strictly increase: this also proves no pool block is used twice.
#[allow(dead_code)] // the host's callers (crash checker, fuzzers); the kernel calls replay_from
pub fn replay(
    sb: &Superblock,
    buf: &mut [u8],
    tail: &mut [u8; META_BLOCK],
    read: impl FnMut(u32, &mut [u8]) -> Result<(), ()>,
    push: impl FnMut(Remap) -> bool,
) -> Result<LogEnd, LoadError> {
    replay_observed(sb, buf, tail, read, push, |_, _, _| {})
}

/// [`replay`], telling `seen(index, slot, entries)` which version of each logical block it
/// used (for `dmremap inspect`'s report).
#[allow(dead_code)] // dmremap inspect (host)
pub fn replay_observed(
    sb: &Superblock,
    buf: &mut [u8],
    tail: &mut [u8; META_BLOCK],
    read: impl FnMut(u32, &mut [u8]) -> Result<(), ()>,
    push: impl FnMut(Remap) -> bool,
    seen: impl FnMut(u32, u32, u32),
) -> Result<LogEnd, LoadError> {
    replay_core(sb, Resume::START, buf, tail, read, push, seen)
}

/// [`replay`] from `from`, the [`LogEnd::resume`] of an earlier replay of the same spare:
/// pushes the remaps of the blocks from `from.index` on only (the earlier replay pushed
/// `from.entries` before them, which stay as they were), and returns the log's end as a whole
/// replay would. Every block it reads is checked as in a whole replay.
///
/// `tail` must hold what the earlier replay left in it; it is used as the tail only if block
/// `from.index` is the end of the log, and then it must be block `from.index - 1` (the earlier
/// replay ended there): otherwise the log lost a block the earlier replay read, which neither
/// a crash nor a table on this spare does, and the spare is refused (`BadLog`).
pub fn replay_from(
    sb: &Superblock,
    from: Resume,
    buf: &mut [u8],
    tail: &mut [u8; META_BLOCK],
    read: impl FnMut(u32, &mut [u8]) -> Result<(), ()>,
    push: impl FnMut(Remap) -> bool,
) -> Result<LogEnd, LoadError> {
    replay_core(sb, from, buf, tail, read, push, |_, _, _| {})
}

/// The one replay loop behind [`replay_observed`] and [`replay_from`].
fn replay_core(
    sb: &Superblock,
    from: Resume,
    buf: &mut [u8],
    tail: &mut [u8; META_BLOCK],
    mut read: impl FnMut(u32, &mut [u8]) -> Result<(), ()>,
    mut push: impl FnMut(Remap) -> bool,
    mut seen: impl FnMut(u32, u32, u32),
) -> Result<LogEnd, LoadError> {
    const PAIR: usize = 2 * META_BLOCK;
    let log_blocks = sb.geometry.log_blocks;
    if from.index > log_blocks || from.next_free > sb.geometry.pool_blocks {
        return Err(LoadError::BadLog);
    }
    let mut r = Replay { seq: from.seq, next_free: from.next_free, blocks: from.index };
    let mut resume = from;
    let mut last_spare = from.last_spare;
    let mut end = match from.index.checked_sub(1) {
        Some(prev) => LogEnd { seq: from.seq, next_free: from.next_free, tail_index: prev, tail_slot: from.slot, tail_written: true, resume },
        None => LogEnd::default(),
    };
    let mut per_read = (buf.len() / PAIR).min(u32::MAX as usize) as u32;
    if per_read == 0 {
        return Err(LoadError::NoMemory);
    }
    // The chosen version of the last block accepted, by its offset in `buf`: copied to `tail`
    // once, before `buf` is read over or at the end, not for every block.
    let mut tail_at: Option<usize> = None;
    let mut index = from.index;
    'log: while index < log_blocks {
        let n = per_read.min(log_blocks - index);
        if let Some(at) = tail_at.take() {
            copy_slot(tail, buf, at);
        }
        let chunk = buf.get_mut(..n as usize * PAIR).ok_or(LoadError::NoMemory)?;
        if read(index, chunk).is_err() {
            if n == 1 {
                return Err(LoadError::Read);
            }
            // Perhaps a block past the log's end that does not read: from here on one block
            // at a time, so only what the log needs is read, as with a one-block buffer.
            per_read = 1;
            continue;
        }
        for (j, pair) in chunk.chunks_exact(PAIR).enumerate() {
            let (s0, s1) = pair.split_at(META_BLOCK);
            let (Ok(s0), Ok(s1)) = (<&[u8; META_BLOCK]>::try_from(s0), <&[u8; META_BLOCK]>::try_from(s1)) else {
                return Err(LoadError::NoMemory);
            };
            // A torn write leaves a bad CRC; a valid CRC over impossible fields is corruption
            // (or a crafted spare), never the end of the log.
            let Some((h, slot)) = log_choose(s0, s1, sb, index).map_err(|_| LoadError::BadLog)? else { break 'log };
            if !r.accept(&h) {
                break 'log;
            }
            if h.seq >= SEQ_LIMIT {
                return Err(LoadError::SeqLimit);
            }
            let chosen = if slot == 0 { s0 } else { s1 };
            seen(index, slot, h.count);
            for e in log_entries(chosen, h.count) {
                if last_spare.is_some_and(|l| e.spare <= l) {
                    return Err(LoadError::OutOfOrder);
                }
                last_spare = Some(e.spare);
                if !push(e) {
                    return Err(LoadError::NoMemory);
                }
            }
            tail_at = Some(j * PAIR + slot as usize * META_BLOCK);
            if resume.index == index && h.is_full() {
                // Still in the leading run of full blocks: final, a later replay starts after it.
                resume = Resume {
                    index: index + 1,
                    seq: r.seq,
                    next_free: r.next_free,
                    last_spare,
                    slot,
                    entries: resume.entries + ENTRIES_PER_BLOCK as u64,
                };
            }
            end = LogEnd { seq: r.seq, next_free: r.next_free, tail_index: index, tail_slot: slot, tail_written: true, resume };
            index += 1;
        }
    }
    match tail_at {
        Some(at) => copy_slot(tail, buf, at),
        // Nothing read from `from` on: the tail is the block before it, as the caller holds it.
        None if end.tail_written && log_header(tail).index != end.tail_index => return Err(LoadError::BadLog),
        None => {}
    }
    Ok(end)
}

/// Copies the 4 KiB slot at `at` in `buf` to `tail`.
fn copy_slot(tail: &mut [u8; META_BLOCK], buf: &[u8], at: usize) {
    if let Some(s) = buf.get(at..at + META_BLOCK) {
        tail.copy_from_slice(s);
    }
}

/// About how many remaps the log of `sb` holds, to reserve room for them before a replay: 252
/// for each block up to the last one with an intact slot (magic, uuid, CRC), found by
/// bisection (a log is intact up to its tail, and blank after it), so about
/// log2(`log_blocks`) blocks are read with `read` (as [`replay`] reads, into the first 8 KiB
/// of `buf`; a block that does not read counts as blank). Nothing is decided on it: the replay
/// checks everything, and a spare that misleads the bisection only makes the reservation wrong
/// (never larger than the whole log, which a replay of a full log would hold anyway). Fails
/// only for a buffer under 8 KiB.
pub fn estimate(sb: &Superblock, buf: &mut [u8], mut read: impl FnMut(u32, &mut [u8]) -> Result<(), ()>) -> Result<u64, LoadError> {
    let buf = buf.get_mut(..2 * META_BLOCK).ok_or(LoadError::NoMemory)?;
    let (mut lo, mut hi) = (0u32, sb.geometry.log_blocks);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        // A block that does not read counts as past the end: the replay, which decides, reads
        // only up to the end (a bad sector in the unused part of the log refuses nothing).
        let unread = read(mid, buf).is_err();
        let (s0, s1) = buf.split_at(META_BLOCK);
        let (Ok(s0), Ok(s1)) = (<&[u8; META_BLOCK]>::try_from(s0), <&[u8; META_BLOCK]>::try_from(s1)) else {
            return Err(LoadError::NoMemory);
        };
        // Impossible fields in an intact slot count as written: the replay refuses them.
        if unread || log_choose(s0, s1, sb, mid) == Ok(None) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(u64::from(lo) * ENTRIES_PER_BLOCK as u64)
}

/// The scrub checkpoint to resume from, given checkpoint slots 0 and 1 of `sb`'s spare
/// ([`Superblock::checkpoint_sector`]): the valid slot with the higher `seq` and which slot it
/// is (the next write goes to the other). Invalid slots are ignored, never an error: a torn
/// write leaves the other one, and without any the scrub restarts at 0. A position at or
/// past the end of the main device (`main_blocks`: a pass that ended) restarts at 0; a
/// `seq` at the limit is ignored, so the next `seq + 1` cannot overflow.
pub fn checkpoint(sb: &Superblock, s0: &[u8; META_BLOCK], s1: &[u8; META_BLOCK], main_blocks: u64) -> Option<(Checkpoint, u32)> {
    let ok = |s: &[u8; META_BLOCK]| ckpt_decode(s, &sb.uuid).ok().filter(|c| c.seq < SEQ_LIMIT);
    let (c, slot) = match (ok(s0), ok(s1)) {
        (Some(a), Some(b)) => {
            if b.seq > a.seq {
                (b, 1)
            } else {
                (a, 0)
            }
        }
        (Some(a), None) => (a, 0),
        (None, Some(b)) => (b, 1),
        (None, None) => return None,
    };
    let position = if c.position < main_blocks { c.position } else { 0 };
    Some((Checkpoint { position, ..c }, slot))
}

/// The bad-block list to load, given list slots 0 and 1 of `sb`'s spare
/// ([`Superblock::bad_blocks_sector`]): the valid slot with the higher `seq`, and which slot
/// it is (the next write goes to the other; read its entries from that slot with
/// [`super::format::badb_entry`]). Invalid slots are ignored: a torn write leaves the other
/// one, the previous durable list; with neither the list is empty (a new spare). A `seq` at
/// the limit is ignored, so the next `seq + 1` cannot overflow. Entries are checked against
/// `main_blocks` by the decoder; a block also in the log is dropped by the caller (a crash
/// between the remap's commit and the list's rewrite leaves both, and the remap wins).
pub fn bad_blocks(sb: &Superblock, s0: &[u8; META_BLOCK], s1: &[u8; META_BLOCK], main_blocks: u64) -> Option<(BadBlocksHeader, u32)> {
    let ok = |s: &[u8; META_BLOCK]| badb_decode(s, &sb.uuid, main_blocks).ok().filter(|h| h.seq < SEQ_LIMIT);
    match (ok(s0), ok(s1)) {
        (Some(a), Some(b)) if b.seq > a.seq => Some((b, 1)),
        (Some(a), _) => Some((a, 0)),
        (None, Some(b)) => Some((b, 1)),
        (None, None) => None,
    }
}

/// Sorts the replayed remaps by main block and refuses a block remapped twice.
pub fn finish(entries: &mut [Entry]) -> Result<(), LoadError> {
    // A log in main-block order (relocations of a bad region, a scrub's finds) is sorted
    // already: one pass checks both the order and that no block is there twice.
    if entries.windows(2).all(|w| w[0].main < w[1].main) {
        return Ok(());
    }
    entries.sort_unstable_by_key(|e| e.main);
    if entries.windows(2).any(|w| w[0].main == w[1].main) {
        return Err(LoadError::Duplicate);
    }
    Ok(())
}

/// The table after a [`replay_from`]: `table` (sorted by main block, as [`finish`] left it
/// after the earlier replay) without `old`, the remaps the earlier replay pushed from the
/// resume point on, and with `new`, those the replay from there pushed; written to `out`,
/// which must be exactly `table.len() - old.len() + new.len()` long. Sorts `old` and `new`.
///
/// Refuses a block remapped twice (`Duplicate`, as [`finish`] would on a whole replay), and
/// an `old` entry missing from `table` (`BadLog`: not the table that replay made; never from
/// the spare's content).
pub fn retake(table: &[Entry], old: &mut [Entry], new: &mut [Entry], out: &mut [Entry]) -> Result<(), LoadError> {
    old.sort_unstable_by_key(|e| e.main);
    finish(new)?;
    let want = table.len().checked_sub(old.len()).and_then(|n| n.checked_add(new.len()));
    if want != Some(out.len()) {
        return Err(LoadError::BadLog);
    }
    let mut old = old.iter().peekable();
    let mut new = new.iter().peekable();
    let mut out = out.iter_mut();
    let mut put = |e: Entry| out.next().map(|o| *o = e).ok_or(LoadError::BadLog);
    for t in table {
        match old.peek() {
            Some(o) if o.main < t.main => return Err(LoadError::BadLog),
            Some(o) if o.main == t.main => {
                if **o != *t {
                    return Err(LoadError::BadLog);
                }
                old.next();
                continue;
            }
            _ => {}
        }
        while let Some(n) = new.next_if(|n| n.main < t.main) {
            put(*n)?;
        }
        if new.peek().is_some_and(|n| n.main == t.main) {
            return Err(LoadError::Duplicate);
        }
        put(*t)?;
    }
    if old.next().is_some() {
        return Err(LoadError::BadLog);
    }
    for n in new {
        put(*n)?;
    }
    Ok(())
}

/// Whether `b` is all zeroes (a blank region).
pub fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Bytes at each end of a spare that must read as zeroes for `format` to initialise it: both
/// superblock copies and the first log blocks at the start, a GPT backup header and md's
/// end-of-device superblocks at the end.
pub const BLANK_BYTES: u64 = 1 << 20;

/// The byte ranges `format` checks for zeroes on a spare of `spare_bytes` (the whole device
/// if it is smaller than two of them).
pub fn blank_ranges(spare_bytes: u64) -> [(u64, u64); 2] {
    let head = BLANK_BYTES.min(spare_bytes);
    let tail_start = spare_bytes.saturating_sub(BLANK_BYTES).max(head);
    [(0, head), (tail_start, spare_bytes - tail_start)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{log_init, log_push, log_seal, LOG_START};

    const MAIN: u64 = 1 << 20;

    fn want(spare_sectors: u64) -> Expect {
        Expect { spare_sectors, main_sectors: MAIN, block_size: 4096, main_id: MainId::NONE }
    }

    fn sb_for(spare_bytes: u64) -> Superblock {
        Superblock::new(1, [3; 16], MAIN, Geometry::compute(spare_bytes, 4096).unwrap(), MainId::NONE)
    }

    fn enc(sb: &Superblock) -> [u8; META_BLOCK] {
        let mut b = [0u8; META_BLOCK];
        sb.encode(&mut b);
        b
    }

    #[test]
    fn a_formatted_spare_loads() {
        let sb = sb_for(4 << 20);
        let b = enc(&sb);
        assert_eq!(superblock(&b, &b, &want((4 << 20) / 512)), Ok(sb));
    }

    #[test]
    fn pool_start_extremes_are_refused_not_overflowed() {
        let spare = (4u64 << 20) / 512;
        for pool_start in [0, 1, 1u64 << 55, u64::MAX / 512, u64::MAX - 7, u64::MAX] {
            let mut sb = sb_for(4 << 20);
            sb.geometry.pool_start = pool_start;
            let b = enc(&sb);
            let r = superblock(&b, &b, &want(spare));
            assert!(r.is_err(), "pool_start {pool_start}: {r:?}");
            // The accessors never panic either.
            let _ = sb.geometry.end_bytes();
            let _ = sb.geometry.pool_sector(u64::MAX);
        }
    }

    #[test]
    fn pool_at_device_size_boundary() {
        let sb = sb_for(4 << 20);
        let g = sb.geometry;
        let end = g.pool_start + g.pool_blocks * 8;
        let b = enc(&sb);
        assert_eq!(superblock(&b, &b, &want(end)), Ok(sb), "exactly fits");
        assert_eq!(superblock(&b, &b, &want(end - 1)), Err(LoadError::TooSmall), "one sector short");
        let mut big = sb;
        big.geometry.pool_blocks = u64::MAX;
        big.geometry.log_blocks = u32::MAX;
        let b = enc(&big);
        assert!(superblock(&b, &b, &want(u64::MAX)).is_err());
    }

    #[test]
    fn pools_beyond_32_bit_block_numbers_are_refused() {
        // Laid out the way an unlimited `Geometry::compute` would have: one block too many.
        let spare = 1u64 << 43;
        let want = Expect { spare_sectors: spare / 512, main_sectors: MAIN, block_size: 512, main_id: MainId::NONE };
        for (pool, ok) in [(MAX_POOL_BLOCKS, true), (MAX_POOL_BLOCKS + 1, false), (1 << 33, false)] {
            let g = Geometry::for_pool(pool, 512, spare).unwrap();
            let sb = Superblock::new(1, [3; 16], MAIN, g, MainId::NONE);
            let b = enc(&sb);
            let r = superblock(&b, &b, &want);
            assert_eq!(r, if ok { Ok(sb) } else { Err(LoadError::PoolTooLarge) }, "{pool} pool blocks");
        }
    }

    #[test]
    fn pool_overlapping_the_log_or_wrong_log_size_is_refused() {
        let mut sb = sb_for(4 << 20);
        sb.geometry.pool_start = LOG_START / 512; // the pool on top of the log
        let b = enc(&sb);
        assert!(superblock(&b, &b, &want(u64::MAX)).is_err());
        let mut sb = sb_for(4 << 20);
        sb.geometry.log_blocks += 1;
        let b = enc(&sb);
        assert!(superblock(&b, &b, &want(u64::MAX)).is_err());
        // A log longer than the pool needs, with the pool after it.
        let mut sb = sb_for(4 << 20);
        sb.geometry.log_blocks += 1;
        sb.geometry.pool_start += 16;
        let b = enc(&sb);
        assert_eq!(superblock(&b, &b, &want(u64::MAX)), Err(LoadError::BadGeometry));
        let mut sb = sb_for(4 << 20);
        sb.geometry.log_blocks = 0;
        let b = enc(&sb);
        assert!(superblock(&b, &b, &want(u64::MAX)).is_err());
    }

    #[test]
    fn other_devices_and_block_sizes_are_refused() {
        let sb = sb_for(4 << 20);
        let b = enc(&sb);
        let mut w = want(u64::MAX);
        w.main_sectors += 1;
        assert_eq!(superblock(&b, &b, &w), Err(LoadError::OtherMain));
        let mut w = want(u64::MAX);
        w.block_size = 8192;
        assert_eq!(superblock(&b, &b, &w), Err(LoadError::OtherBlockSize));
    }

    #[test]
    fn main_ids_bind_a_spare_to_its_main_device() {
        let id = |s: &[u8]| MainId::parse(s).unwrap();
        let mut sb = sb_for(4 << 20);
        sb = Superblock::new(sb.seq, sb.uuid, sb.main_sectors, sb.geometry, id(b"disk-a"));
        let b = enc(&sb);
        let mut w = want(u64::MAX);
        assert_eq!(superblock(&b, &b, &w), Ok(sb), "no id in the table: only the length is checked");
        w.main_id = id(b"disk-a");
        assert_eq!(superblock(&b, &b, &w), Ok(sb));
        w.main_id = id(b"disk-b");
        assert_eq!(superblock(&b, &b, &w), Err(LoadError::OtherMainId));
        w.main_id = id(b"disk-a-");
        assert_eq!(superblock(&b, &b, &w), Err(LoadError::OtherMainId), "a prefix is not the id");
        // A spare without an id (a loop device's) loads under any table id.
        let b = enc(&sb_for(4 << 20));
        assert!(superblock(&b, &b, &w).is_ok());
    }

    #[test]
    fn version_1_spares_still_load() {
        let mut sb = sb_for(4 << 20);
        sb.version = crate::format::VERSION_V1;
        sb.compat = 0;
        let b = enc(&sb);
        assert_eq!(superblock(&b, &b, &want(u64::MAX)), Ok(sb));
        // A v1 copy beside a newer v2 copy (an upgrade torn between the copies): v2 wins.
        let mut v2 = sb_for(4 << 20);
        v2.seq = 2;
        assert_eq!(superblock(&b, &enc(&v2), &want(u64::MAX)), Ok(v2));
    }

    #[test]
    fn unknown_features_and_versions() {
        let mut sb = sb_for(4 << 20);
        sb.incompat = 1 << 5;
        let b = enc(&sb);
        assert_eq!(superblock(&b, &b, &want(u64::MAX)), Err(LoadError::UnsupportedFeature));
        // One copy with an unknown incompatible feature, the other torn: still "unsupported".
        let mut torn = b;
        torn[200] ^= 1;
        assert_eq!(superblock(&b, &torn, &want(u64::MAX)), Err(LoadError::UnsupportedFeature));
        let mut sb = sb_for(4 << 20);
        sb.compat = 1 << 40; // unknown but compatible: ignored
        let b = enc(&sb);
        assert_eq!(superblock(&b, &b, &want(u64::MAX)), Ok(sb));
        let mut sb = sb_for(4 << 20);
        sb.version = 3;
        let b = enc(&sb);
        assert_eq!(superblock(&b, &b, &want(u64::MAX)), Err(LoadError::Unsupported));
        for v in [0, u32::MAX] {
            sb.version = v;
            let b = enc(&sb);
            assert_eq!(superblock(&b, &b, &want(u64::MAX)), Err(LoadError::Unsupported), "version {v}");
        }
    }

    #[test]
    fn record_area_extremes() {
        let spare = (4u64 << 20) / 512;
        let base = sb_for(4 << 20);
        let g = base.geometry;
        let pool_end = g.pool_start + g.pool_blocks * 8;
        let cases: [(u64, u64, bool); 8] = [
            (0, 0, true),
            (pool_end, spare - pool_end, pool_end < spare),
            (pool_end - 1, 1, false),
            (0, 1, false),
            (1, 0, false),
            (pool_end, u64::MAX, false),
            (u64::MAX, 1, false),
            (spare, 1, false),
        ];
        for (start, sectors, ok) in cases {
            let mut sb = base;
            sb.records_start = start;
            sb.records_sectors = sectors;
            let b = enc(&sb);
            let r = superblock(&b, &b, &want(spare));
            assert_eq!(r.is_ok(), ok, "records at {start} for {sectors}: {r:?}");
        }
    }

    #[test]
    fn sequence_numbers_at_the_limit_are_refused() {
        let mut sb = sb_for(4 << 20);
        sb.seq = u64::MAX;
        let b = enc(&sb);
        assert_eq!(superblock(&b, &b, &want(u64::MAX)), Err(LoadError::SeqLimit));
        let sb = sb_for(4 << 20);
        let mut slot = [0u8; META_BLOCK];
        log_init(&mut slot, &sb.uuid, 0);
        log_push(&mut slot, Remap { main: 1, spare: 0 });
        log_seal(&mut slot, u64::MAX, 1);
        let mut buf = [0u8; 2 * META_BLOCK];
        let mut tail = [0u8; META_BLOCK];
        let r = replay(&sb, &mut buf, &mut tail, |i, b| {
            b.fill(0);
            if i == 0 {
                b[..META_BLOCK].copy_from_slice(&slot);
            }
            Ok(())
        }, |_| true);
        assert_eq!(r, Err(LoadError::SeqLimit));
    }

    #[test]
    fn replay_refuses_out_of_order_and_duplicates() {
        let sb = sb_for(4 << 20);
        let mut slot = [0u8; META_BLOCK];
        log_init(&mut slot, &sb.uuid, 0);
        log_push(&mut slot, Remap { main: 1, spare: 1 });
        log_push(&mut slot, Remap { main: 2, spare: 0 });
        log_seal(&mut slot, 1, 2);
        let mut buf = [0u8; 2 * META_BLOCK];
        let mut tail = [0u8; META_BLOCK];
        let read = |i: u32, b: &mut [u8]| {
            b.fill(0);
            if i == 0 {
                b[..META_BLOCK].copy_from_slice(&slot);
            }
            Ok(())
        };
        assert_eq!(replay(&sb, &mut buf, &mut tail, read, |_| true), Err(LoadError::OutOfOrder));
        let mut e = [Entry { main: 5, spare: 0 }, Entry { main: 5, spare: 1 }];
        assert_eq!(finish(&mut e), Err(LoadError::Duplicate));
    }

    #[test]
    fn a_crc_valid_log_block_with_an_entry_outside_the_main_device_is_refused() {
        let sb = sb_for(4 << 20);
        let mut slot = [0u8; META_BLOCK];
        log_init(&mut slot, &sb.uuid, 0);
        log_push(&mut slot, Remap { main: MAIN / 8, spare: 0 });
        log_seal(&mut slot, 1, 1);
        let mut buf = [0u8; 2 * META_BLOCK];
        let mut tail = [0u8; META_BLOCK];
        let read = |i: u32, b: &mut [u8]| {
            b.fill(0);
            if i == 0 {
                b[META_BLOCK..].copy_from_slice(&slot);
            }
            Ok(())
        };
        assert_eq!(replay(&sb, &mut buf, &mut tail, read, |_| true), Err(LoadError::BadLog));
        // A torn version (bad CRC) of the same block is the end of the log, not an error.
        slot[100] ^= 1;
        let read = |i: u32, b: &mut [u8]| {
            b.fill(0);
            if i == 0 {
                b[META_BLOCK..].copy_from_slice(&slot);
            }
            Ok(())
        };
        assert_eq!(replay(&sb, &mut buf, &mut tail, read, |_| true), Ok(LogEnd::default()));
    }

    #[test]
    fn replay_reports_read_errors_and_memory() {
        let sb = sb_for(4 << 20);
        let mut buf = [0u8; 2 * META_BLOCK];
        let mut tail = [0u8; META_BLOCK];
        assert_eq!(replay(&sb, &mut buf, &mut tail, |_, _| Err(()), |_| true), Err(LoadError::Read));
        let mut short = [0u8; META_BLOCK];
        assert_eq!(replay(&sb, &mut short, &mut tail, |_, _| Ok(()), |_| true), Err(LoadError::NoMemory));
        let end = replay(&sb, &mut buf, &mut tail, |_, b| { b.fill(0); Ok(()) }, |_| true);
        assert_eq!(end, Ok(LogEnd::default()), "an empty log");
    }

    /// A spare's log in memory, written by the kernel's commit protocol
    /// (`metadata::Log::commit`): the tail in memory, new versions into the slot not holding
    /// the durable one, the next block once the tail is full.
    struct Spare {
        sb: Superblock,
        slots: Vec<[u8; META_BLOCK]>,
        tail: [u8; META_BLOCK],
        tail_slot: u32,
        tail_written: bool,
        seq: u64,
        next_free: u64,
        main: u64,
    }

    impl Spare {
        fn new(log_blocks: u32) -> Spare {
            let mut sb = sb_for(64 << 20);
            sb.geometry.log_blocks = log_blocks;
            sb.geometry.pool_blocks = u64::from(log_blocks) * ENTRIES_PER_BLOCK as u64;
            let mut tail = [0u8; META_BLOCK];
            log_init(&mut tail, &sb.uuid, 0);
            Spare { sb, slots: vec![[0; META_BLOCK]; 2 * log_blocks as usize], tail, tail_slot: 0, tail_written: false, seq: 0, next_free: 0, main: 0 }
        }

        fn commit(&mut self, n: usize) {
            let seq = self.seq + 1;
            let mut left = n;
            while left > 0 && self.next_free < self.sb.geometry.pool_blocks {
                let h = crate::format::log_header(&self.tail);
                if h.is_full() {
                    log_init(&mut self.tail, &self.sb.uuid, h.index + 1);
                    self.tail_written = false;
                }
                let mut pushed = 0;
                while left > 0 && self.next_free < self.sb.geometry.pool_blocks {
                    // Main blocks in a scattered order, each once.
                    let main = (self.main * 7919) % (MAIN / 8);
                    if !log_push(&mut self.tail, Remap { main, spare: self.next_free }) {
                        break;
                    }
                    self.main += 1;
                    self.next_free += 1;
                    left -= 1;
                    pushed += 1;
                }
                if pushed == 0 {
                    continue;
                }
                log_seal(&mut self.tail, seq, self.next_free);
                let slot = if self.tail_written { 1 - self.tail_slot } else { 0 };
                let index = crate::format::log_header(&self.tail).index as usize;
                self.slots[2 * index + slot as usize] = self.tail;
                self.tail_slot = slot;
                self.tail_written = true;
            }
            self.seq = seq;
        }

        fn read(&self, index: u32, b: &mut [u8]) {
            for (k, half) in b.chunks_exact_mut(META_BLOCK).enumerate() {
                half.copy_from_slice(&self.slots[2 * index as usize + k]);
            }
        }
    }

    /// A small deterministic generator.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    type Replayed = (LogEnd, Vec<Remap>, [u8; META_BLOCK]);

    fn whole(sp: &Spare, pairs: usize) -> Replayed {
        let mut buf = vec![0u8; pairs * 2 * META_BLOCK];
        let mut tail = [0u8; META_BLOCK];
        let mut got = Vec::new();
        let end = replay(&sp.sb, &mut buf, &mut tail, |i, b| Ok(sp.read(i, b)), |r| {
            got.push(r);
            true
        })
        .unwrap();
        (end, got, tail)
    }

    /// The constructor's replay while the old table keeps committing (between its reads of
    /// two blocks, so it sees a mix of versions), then more commits, then the first resume's
    /// replay from the resume point: it gives what a whole replay of the final log gives.
    #[test]
    fn replay_from_the_resume_point_equals_a_whole_replay() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..400 {
            let sp = core::cell::RefCell::new(Spare::new(12));
            let start = rng.below(2000) as usize;
            sp.borrow_mut().commit(start);
            let big = rng.below(4) == 0;
            // The constructor: the old table commits between reads.
            let mut buf = vec![0u8; 2 * META_BLOCK];
            let mut tail = [0u8; META_BLOCK];
            let mut ctr = Vec::new();
            let mut during = Vec::new();
            for _ in 0..8 {
                during.push(if rng.below(3) == 0 { rng.below(if big { 600 } else { 40 }) as usize } else { 0 });
            }
            let sb = sp.borrow().sb;
            let end = replay(&sb, &mut buf, &mut tail, |i, b| {
                let n = during.get(i as usize).copied().unwrap_or(0);
                sp.borrow_mut().commit(n);
                sp.borrow().read(i, b);
                Ok(())
            }, |r| {
                ctr.push(r);
                true
            })
            .unwrap();
            assert_eq!(end.resume.entries, u64::from(end.resume.index) * ENTRIES_PER_BLOCK as u64);
            // The old table goes on until it is suspended.
            let most = if rng.below(2) == 0 { 3 } else { 700 };
            let after = rng.below(most) as usize;
            sp.borrow_mut().commit(after);
            let sp = sp.into_inner();
            // The first resume (twice: a failed resume is retried from the same state).
            for pairs in [1, 3] {
                let mut buf = vec![0u8; pairs * 2 * META_BLOCK];
                let mut t = tail;
                let mut got: Vec<Remap> = ctr[..end.resume.entries as usize].to_vec();
                let again = replay_from(&sp.sb, end.resume, &mut buf, &mut t, |i, b| Ok(sp.read(i, b)), |r| {
                    got.push(r);
                    true
                })
                .unwrap();
                let (want_end, want, want_tail) = whole(&sp, 1);
                assert_eq!(again, want_end, "round {round}");
                assert_eq!(got, want, "round {round}");
                assert_eq!(t, want_tail, "round {round}");
                assert_eq!(whole(&sp, pairs), (want_end, want.clone(), want_tail), "chunked reads, round {round}");
                // The kernel's table: the constructor's, with the remaps from the resume point
                // exchanged.
                let mut table: Vec<Entry> = ctr.iter().map(|r| Entry::remap(r.main, r.spare).unwrap()).collect();
                finish(&mut table).unwrap();
                let mut old: Vec<Entry> = ctr[end.resume.entries as usize..].iter().map(|r| Entry::remap(r.main, r.spare).unwrap()).collect();
                let mut new: Vec<Entry> = want[end.resume.entries as usize..].iter().map(|r| Entry::remap(r.main, r.spare).unwrap()).collect();
                let mut out = vec![Entry::default(); table.len() - old.len() + new.len()];
                retake(&table, &mut old, &mut new, &mut out).unwrap();
                let mut all: Vec<Entry> = want.iter().map(|r| Entry::remap(r.main, r.spare).unwrap()).collect();
                finish(&mut all).unwrap();
                assert_eq!(out, all, "round {round}");
            }
        }
    }

    #[test]
    fn estimate_finds_the_log_end() {
        for n in [0, 1, 251, 252, 253, 1000, 12 * ENTRIES_PER_BLOCK] {
            let mut sp = Spare::new(12);
            sp.commit(n);
            let mut reads = 0;
            let mut buf = vec![0u8; 2 * META_BLOCK];
            let got = estimate(&sp.sb, &mut buf, |i, b| {
                reads += 1;
                sp.read(i, b);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, (n as u64).div_ceil(ENTRIES_PER_BLOCK as u64) * ENTRIES_PER_BLOCK as u64, "{n} remaps");
            assert!(reads <= 4, "{reads} reads");
        }
        let sp = Spare::new(12);
        assert_eq!(estimate(&sp.sb, &mut [0u8; 100], |_, _| Ok(())), Err(LoadError::NoMemory));
        assert_eq!(estimate(&sp.sb, &mut [0u8; 2 * META_BLOCK], |_, _| Err(())), Ok(0));
    }

    /// Blocks past the log's end that do not read (bad sectors in the unused part of the log)
    /// refuse nothing, whether the replay reads one block or several at a time: as before
    /// reads of several blocks, only what the log needs must read.
    #[test]
    fn unreadable_blocks_past_the_end_of_the_log() {
        let mut sp = Spare::new(12);
        sp.commit(2 * ENTRIES_PER_BLOCK + 5);
        let (want_end, want, want_tail) = whole(&sp, 1);
        // Blocks 0 to 2 hold the log; block 3, blank, is its end.
        for bad_from in [4u32, 5, 7] {
            let read = |i: u32, b: &mut [u8]| {
                if i + (b.len() / (2 * META_BLOCK)) as u32 > bad_from {
                    return Err(());
                }
                sp.read(i, b);
                Ok(())
            };
            for pairs in [1, 2, 5, 32] {
                let mut buf = vec![0u8; pairs * 2 * META_BLOCK];
                let mut tail = [0u8; META_BLOCK];
                let mut got = Vec::new();
                let end = replay(&sp.sb, &mut buf, &mut tail, read, |r| {
                    got.push(r);
                    true
                });
                assert_eq!(end, Ok(want_end), "bad from {bad_from}, {pairs} blocks per read");
                assert_eq!((&got, tail), (&want, want_tail));
                let hint = estimate(&sp.sb, &mut buf, read).unwrap();
                assert!(hint <= u64::from(bad_from) * ENTRIES_PER_BLOCK as u64);
            }
        }
        // A block the log needs that does not read is an error, as always.
        let read = |i: u32, b: &mut [u8]| if i + (b.len() / (2 * META_BLOCK)) as u32 > 2 { Err(()) } else { Ok(sp.read(i, b)) };
        let mut buf = vec![0u8; 4 * 2 * META_BLOCK];
        let mut tail = [0u8; META_BLOCK];
        assert_eq!(replay(&sp.sb, &mut buf, &mut tail, read, |_| true), Err(LoadError::Read));
    }

    #[test]
    fn finish_takes_a_sorted_log_as_it_is() {
        let e = |main, spare| Entry { main, spare };
        let mut v = [e(1, 0), e(3, 1), e(8, 2)];
        assert_eq!(finish(&mut v), Ok(()));
        assert_eq!(v, [e(1, 0), e(3, 1), e(8, 2)]);
        let mut v = [e(8, 0), e(1, 1), e(3, 2)];
        assert_eq!(finish(&mut v), Ok(()));
        assert_eq!(v, [e(1, 1), e(3, 2), e(8, 0)]);
        assert_eq!(finish(&mut [e(1, 0), e(1, 1)]), Err(LoadError::Duplicate));
        assert_eq!(finish(&mut [e(3, 0), e(1, 1), e(3, 2)]), Err(LoadError::Duplicate));
        assert_eq!(finish(&mut []), Ok(()));
    }

    #[test]
    fn replay_from_a_log_that_lost_blocks_is_refused() {
        let mut sp = Spare::new(4);
        sp.commit(ENTRIES_PER_BLOCK + 3);
        let (end, _, tail) = whole(&sp, 1);
        assert_eq!(end.resume.index, 1);
        // Block 1 gone (both slots): the tail the caller holds is not block 0.
        sp.slots[2] = [0; META_BLOCK];
        sp.slots[3] = [0; META_BLOCK];
        let mut buf = vec![0u8; 2 * META_BLOCK];
        let mut t = tail;
        let r = replay_from(&sp.sb, end.resume, &mut buf, &mut t, |i, b| Ok(sp.read(i, b)), |_| true);
        assert_eq!(r, Err(LoadError::BadLog));
        // A resume point past the log is refused, not read.
        let far = Resume { index: 5, ..end.resume };
        let r = replay_from(&sp.sb, far, &mut buf, &mut t, |_, _| panic!("read"), |_| true);
        assert_eq!(r, Err(LoadError::BadLog));
        // A full tail at the end of the log: nothing more to read, the tail is block 0.
        let mut sp = Spare::new(4);
        sp.commit(ENTRIES_PER_BLOCK);
        let (end, _, tail) = whole(&sp, 2);
        assert_eq!((end.resume.index, end.tail_index), (1, 0));
        let mut t = tail;
        let r = replay_from(&sp.sb, end.resume, &mut buf, &mut t, |i, b| Ok(sp.read(i, b)), |_| panic!("push"));
        assert_eq!(r, Ok(end));
    }

    #[test]
    fn retake_refusals() {
        let e = |main, spare| Entry { main, spare };
        let table = [e(1, 0), e(4, 1), e(9, 2)];
        let mut out = [Entry::default(); 3];
        // The new remaps of the tail remap a block the final blocks already do.
        assert_eq!(retake(&table, &mut [e(9, 2)], &mut [e(4, 5)], &mut out), Err(LoadError::Duplicate));
        assert_eq!(retake(&table, &mut [e(9, 2)], &mut [e(3, 5), e(3, 6)], &mut [Entry::default(); 4]), Err(LoadError::Duplicate));
        // `old` not from this table, or the wrong size of output.
        assert_eq!(retake(&table, &mut [e(5, 2)], &mut [e(7, 3)], &mut out), Err(LoadError::BadLog));
        assert_eq!(retake(&table, &mut [e(9, 3)], &mut [e(7, 3)], &mut out), Err(LoadError::BadLog));
        assert_eq!(retake(&table, &mut [e(10, 3)], &mut [e(7, 3)], &mut out), Err(LoadError::BadLog));
        assert_eq!(retake(&table, &mut [], &mut [e(7, 3)], &mut out), Err(LoadError::BadLog));
        assert_eq!(retake(&table, &mut [e(1, 0), e(4, 1), e(9, 2), e(10, 3)], &mut [], &mut []), Err(LoadError::BadLog));
        assert_eq!(retake(&table, &mut [e(9, 2)], &mut [e(0, 3), e(12, 4)], &mut [Entry::default(); 4]), Ok(()));
    }

    #[test]
    fn blank_ranges_cover_both_ends() {
        assert_eq!(blank_ranges(4 << 20), [(0, 1 << 20), (3 << 20, 1 << 20)]);
        assert_eq!(blank_ranges(1 << 20), [(0, 1 << 20), (1 << 20, 0)]);
        assert_eq!(blank_ranges(3 << 19), [(0, 1 << 20), (1 << 20, 1 << 19)]);
        assert_eq!(blank_ranges(0), [(0, 0), (0, 0)]);
        assert!(is_zero(&[0; 9]) && !is_zero(&[0, 1]));
    }

    #[test]
    fn checkpoint_choice() {
        use crate::format::{ckpt_encode, Checkpoint};
        let sb = sb_for(4 << 20).with_records(4 << 20);
        let slot = |seq, position, passes| {
            let mut b = [0u8; META_BLOCK];
            ckpt_encode(&mut b, &sb.uuid, &Checkpoint { seq, position, passes });
            b
        };
        let blank = [0u8; META_BLOCK];
        let mb = MAIN / 8;
        let c = |seq, position, passes| Checkpoint { seq, position, passes };
        // The higher seq wins, in either slot.
        assert_eq!(checkpoint(&sb, &slot(3, 100, 1), &slot(4, 200, 1), mb), Some((c(4, 200, 1), 1)));
        assert_eq!(checkpoint(&sb, &slot(9, 100, 2), &slot(4, 200, 1), mb), Some((c(9, 100, 2), 0)));
        // A torn or blank slot is ignored; both: none.
        let mut torn = slot(5, 300, 1);
        torn[41] ^= 0xff;
        assert_eq!(checkpoint(&sb, &slot(3, 100, 1), &torn, mb), Some((c(3, 100, 1), 0)));
        assert_eq!(checkpoint(&sb, &blank, &slot(3, 100, 1), mb), Some((c(3, 100, 1), 1)));
        assert_eq!(checkpoint(&sb, &blank, &torn, mb), None);
        // Another format's slot (uuid) is not ours.
        let mut other = [0u8; META_BLOCK];
        ckpt_encode(&mut other, &[9; 16], &c(50, 7, 0));
        assert_eq!(checkpoint(&sb, &other, &slot(2, 8, 0), mb), Some((c(2, 8, 0), 1)));
        // At or past the end of the main device: a new pass from 0; the last block is kept.
        assert_eq!(checkpoint(&sb, &slot(3, mb, 4), &blank, mb), Some((c(3, 0, 4), 0)));
        assert_eq!(checkpoint(&sb, &slot(3, u64::MAX, 4), &blank, mb), Some((c(3, 0, 4), 0)));
        assert_eq!(checkpoint(&sb, &slot(3, mb - 1, 4), &blank, mb), Some((c(3, mb - 1, 4), 0)));
        assert_eq!(checkpoint(&sb, &slot(3, 5, 0), &blank, 0), Some((c(3, 0, 0), 0)));
        // A seq at the limit is ignored (its successor would overflow).
        assert_eq!(checkpoint(&sb, &slot(u64::MAX, 5, 0), &slot(1, 6, 0), mb), Some((c(1, 6, 0), 1)));
        assert_eq!(checkpoint(&sb, &slot(SEQ_LIMIT, 5, 0), &blank, mb), None);
    }

    #[test]
    fn bad_blocks_choice() {
        use crate::format::{badb_encode, badb_entry};
        let sb = sb_for(4 << 20).with_records(4 << 20);
        let mb = MAIN / 8;
        let slot = |seq, blocks: &[u64]| {
            let mut b = [0u8; META_BLOCK];
            badb_encode(&mut b, &sb.uuid, seq, 0, blocks.iter().copied());
            b
        };
        let blank = [0u8; META_BLOCK];
        let h = |seq, count| BadBlocksHeader { seq, count, flags: 0 };
        let (a, b) = (slot(3, &[1, 5]), slot(4, &[1]));
        assert_eq!(bad_blocks(&sb, &a, &b, mb), Some((h(4, 1), 1)));
        assert_eq!(bad_blocks(&sb, &b, &a, mb), Some((h(4, 1), 0)));
        assert_eq!(badb_entry(&a, 1), 5);
        // A torn newer slot leaves the older list; a blank pair is an empty list (none).
        let mut torn = b;
        torn[48] ^= 1;
        assert_eq!(bad_blocks(&sb, &a, &torn, mb), Some((h(3, 2), 0)));
        assert_eq!(bad_blocks(&sb, &blank, &blank, mb), None);
        // An entry past the main device makes its slot invalid, not the load.
        assert_eq!(bad_blocks(&sb, &slot(9, &[mb]), &a, mb), Some((h(3, 2), 1)));
        // A seq at the limit is ignored.
        assert_eq!(bad_blocks(&sb, &slot(SEQ_LIMIT, &[2]), &a, mb), Some((h(3, 2), 1)));
        // Another format's slot is not ours.
        let mut other = [0u8; META_BLOCK];
        badb_encode(&mut other, &[9; 16], 50, 0, [1u64].into_iter());
        assert_eq!(bad_blocks(&sb, &other, &blank, mb), None);
    }
}
