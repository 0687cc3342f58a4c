// SPDX-License-Identifier: GPL-2.0

//! Services layer: how new remaps become durable and visible. A [`Batch`] collects them,
//! [`place`] writes a block's data to its pool block, [`commit_publish`] commits the batch
//! to the log (group commit: one preflush and a few FUA writes) and publishes the new table,
//! and [`reload`] replays the whole log at an instance's first resume.

#![forbid(unsafe_code)]

use crate::dm::{now_ns, ratelimit, CtrError, IoKind, RcuWriter};
use crate::engine::{BadList, CkptState, Engine, Stat, State, WorkerState};
use crate::health;
use crate::logic::format::{badb_encode, badb_entry, Remap, Superblock, BADB_OVERFLOW, META_BLOCK, META_SECTORS};
use crate::logic::loader;
use crate::logic::remaps::{self, Entry};
use crate::metadata::{self, Log};
use crate::table::Table;
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// Bios per batch.
pub(crate) const BATCH_BIOS: usize = 64;

/// What a batch adds to the table.
pub(crate) struct Batch {
    /// New remaps, in allocation order (the log's order).
    pub(crate) remaps: KVVec<Remap>,
    /// Blocks found unreadable.
    pub(crate) pending: KVVec<Entry>,
    /// Readable blocks found weak, to be moved (`migrate::migrate`) once the batch is done.
    pub(crate) weak: KVVec<Weak>,
}

/// A weak block and why it is weak (for the log).
#[derive(Clone, Copy)]
pub(crate) struct Weak {
    pub(crate) block: u64,
    /// The try at which it read (1: it read at once, but slowly).
    pub(crate) tries: u32,
    /// Its last read time, ms.
    pub(crate) last_ms: u64,
}

impl Batch {
    pub(crate) fn new() -> Result<Self> {
        // Start small: most batches hold a few blocks; they grow as needed.
        Ok(Self {
            remaps: KVVec::with_capacity(BATCH_BIOS, GFP_KERNEL)?,
            pending: KVVec::with_capacity(8, GFP_KERNEL)?,
            weak: KVVec::new(),
        })
    }

    /// The pool block this batch gave `block`, if any.
    pub(crate) fn remapped(&self, block: u64) -> Option<u64> {
        self.remaps.iter().rev().find(|r| r.main == block).map(|r| r.spare)
    }
}

/// Puts `data` (one block) for main block `block` into the pool: its existing pool block,
/// or a new one recorded in `batch` once its data is written. False if the pool is full
/// or the spare failed. `fua`: the data must be durable when this returns (a FUA bio's
/// data in a pool block that no commit will flush).
pub(crate) fn place(e: &Engine, log: &mut Log, w: &RcuWriter<Table>, batch: &mut Batch, block: u64, data: &mut [u8], fua: bool) -> bool {
    if e.state() == State::Degraded {
        return false;
    }
    let existing = remaps::find(e.table.get(w).entries.as_slice(), block)
        .and_then(|en| en.pool())
        .or_else(|| batch.remapped(block));
    let (spare, new) = match existing {
        Some(s) => (s, false),
        // A lost main device takes no new pool block (`relocate::main_failure`); a block
        // already in the pool still takes its data.
        None if e.main_lost.load(Ordering::Relaxed) => return false,
        // Room first, so a pool block is never taken without being recorded.
        None if batch.remaps.reserve(1, GFP_KERNEL).is_err() => return false,
        None => match log.allocate() {
            Some(s) => (s, true),
            None => {
                e.set_state(State::SpareFull);
                return false;
            }
        },
    };
    e.stats.add(Stat::SpareIos, 1);
    let kind = if fua { IoKind::WriteFua } else { IoKind::Write };
    if e.config.spare.rw_sync(e.config.geo.pool_sector(spare), data, kind).is_err() {
        // A new pool block that did not take its data is never recorded: it stays
        // allocated and unused (retired) and the block keeps its old home.
        pr_err!("{}: write to the spare failed; relocation stopped (degraded)\n", e.dev_name());
        e.set_state(State::Degraded);
        return false;
    }
    if new {
        // Cannot fail: room was reserved.
        let _ = batch.remaps.push(Remap { main: block, spare }, GFP_KERNEL);
    }
    true
}

/// Commits the batch's remaps and publishes the new table. True if the remaps are
/// durable and published (trivially, if there were none).
///
/// The new table is built before the commit: once a remap is durable it must be
/// published, or the next failure of its block would take a second pool block and the log
/// would hold the block twice. Without memory for it nothing is committed (the batch's
/// new pool blocks stay allocated and unused) and its writes fail.
pub(crate) fn commit_publish(e: &Engine, meta: &mut WorkerState, batch: Batch) -> bool {
    let Batch { remaps, pending, .. } = batch;
    let mut committed = remaps.is_empty();
    // The bad-block list changes when a block becomes pending or a pending block is
    // relocated (its write is its rewrite); otherwise it is not rewritten.
    let old = e.table.get(&meta.table_w).entries.as_slice();
    let list_changes = !pending.is_empty() || remaps.iter().any(|r| remaps::find(old, r.main).is_some_and(|en| en.is_pending()));
    if !remaps.is_empty() || !pending.is_empty() {
        match build_table(e, &meta.table_w, remaps.as_slice(), pending.as_slice()) {
            Err(_) => {
                pr_err!("{}: no memory for the remap table; {} relocations not committed\n", e.dev_name(), remaps.len());
                committed = false;
            }
            Ok(table) if remaps.is_empty() => e.table.replace(&mut meta.table_w, table),
            Ok(table) => match meta.log.commit(&e.config.spare, remaps.as_slice()) {
                Ok(written) => {
                    e.stats.add(Stat::SpareIos, written);
                    committed = true;
                    e.figures.commits.fetch_add(1, Ordering::Relaxed);
                    meta.recent_remaps.add(now_ns() / 1_000_000_000, remaps.len() as u32);
                    e.table.replace(&mut meta.table_w, table);
                }
                Err(failed) => {
                    drop(table);
                    commit_failed(e, meta, remaps.as_slice(), pending.as_slice(), failed);
                }
            },
        }
    }
    if meta.log.free_blocks() == 0 {
        e.set_state(State::SpareFull);
    }
    e.update_counts(e.table.get(&meta.table_w).entries.as_slice(), &meta.log);
    if list_changes && committed {
        // After the log commit: a crash between the two leaves a relocated block in both, and
        // the load lets the remap win.
        save_bad_blocks(e, meta);
    }
    committed
}

/// After a failed log write (`Log::commit`): the remaps the log holds for sure are published,
/// since the next load replays them (a write to such a block acknowledged on the main device
/// would read back stale); the ones it may hold are put in doubt, and writes to them are
/// refused until a reload reads what the log holds (docs/design.md, "A commit that fails").
/// Relocation stops (degraded: no more commits). The batch's bios fail, as its commit did.
/// Called before they complete, so a write that follows one of them sees the doubt.
fn commit_failed(e: &Engine, meta: &mut WorkerState, remaps: &[Remap], pending: &[Entry], failed: metadata::CommitFailed) {
    e.set_state(State::Degraded);
    let doubt = remaps.get(failed.doubt.clone()).unwrap_or(&[]);
    if !doubt.is_empty() {
        e.table.hold_general();
        for r in doubt {
            e.doubt.add(r.main);
        }
    }
    let durable = remaps.get(..failed.durable).unwrap_or(&[]);
    if !durable.is_empty() {
        // The pending marks go with them (memory-only hints); without memory for the table,
        // every write is refused instead (nothing may reach a block the log now moves).
        match build_table(e, &meta.table_w, durable, pending) {
            Ok(table) => e.table.replace(&mut meta.table_w, table),
            Err(_) => {
                e.table.hold_general();
                e.doubt.refuse_all();
            }
        }
    }
    match e.doubt.count() {
        Some(0) => pr_err!("{}: metadata commit failed; relocation stopped (degraded)\n", e.dev_name()),
        Some(n) => pr_err!(
            "{}: metadata commit failed; relocation stopped (degraded); {} of {} new remaps durable, {} in doubt: writes to those blocks fail until the table is reloaded\n",
            e.dev_name(),
            durable.len(),
            remaps.len(),
            n
        ),
        None => pr_err!(
            "{}: metadata commit failed; relocation stopped (degraded); no memory to publish {} durable remaps: every write fails until the table is reloaded\n",
            e.dev_name(),
            durable.len()
        ),
    }
}

/// Writes the table's pending blocks as the bad-block list, with FUA, to the slot not holding
/// the durable version (docs/format.md). Call after `update_counts` on the current table. Called in the worker pass that found or relocated
/// them, before its bios complete, so a failed read returns after its block is listed. A
/// failed write leaves the durable version (the next try goes to the same slot) and stops
/// relocation like any failed metadata write.
fn save_bad_blocks(e: &Engine, meta: &mut WorkerState) {
    // A spare that failed takes no more writes (the state is final until a reload).
    if e.state() == State::Degraded {
        return;
    }
    let WorkerState { bad, table_w, .. } = meta;
    let Some(mut at) = bad.at else { return };
    let Some(seq) = at.seq.checked_add(1) else { return };
    let Some(b) = bad.buf.as_mut_slice().get_mut(..META_BLOCK).and_then(|b| <&mut [u8; META_BLOCK]>::try_from(b).ok()) else {
        return;
    };
    let entries = e.table.get(table_w).entries.as_slice();
    // Counted from this table by `update_counts`, just before.
    let count = e.figures.pending.load(Ordering::Relaxed);
    let flags = if bad.overflow && count > 0 { BADB_OVERFLOW } else { 0 };
    let n = u64::from(badb_encode(b, &at.uuid, seq, flags, entries.iter().filter(|en| en.is_pending()).map(|en| en.main)));
    let overflow = flags != 0 || n < count;
    let slot = 1 - (at.slot & 1);
    let sector = at.sector.saturating_add(u64::from(slot) * META_SECTORS);
    e.stats.add(Stat::SpareIos, 1);
    if e.config.spare.rw_sync(sector, b, IoKind::WriteFua).is_err() {
        if ratelimit() {
            pr_err!("{}: writing the bad-block list failed; relocation stopped (degraded)\n", e.dev_name());
        }
        e.set_state(State::Degraded);
        return;
    }
    if overflow && !bad.overflow {
        pr_warn!("{}: bad-block list full ({} blocks); {} more kept in memory only until rewritten\n", e.dev_name(), n, count - n);
    }
    at.seq = seq;
    at.slot = slot;
    bad.at = Some(at);
    bad.on_spare = n;
    bad.overflow = overflow;
}

/// Reads the bad-block list (`logic::loader::bad_blocks`) at the first resume and returns its
/// blocks, minus those `log` (sorted) remaps, as pending entries, sorted. A spare without the
/// feature has none. A list that cannot be read is left as it is on the spare and not
/// rewritten by this instance.
fn load_bad_blocks(e: &Engine, bad: &mut BadList, sb: &Superblock, log: &[Entry]) -> Result<KVVec<Entry>> {
    let mut out = KVVec::new();
    bad.at = None;
    let (Some(s0), Some(_)) = (sb.bad_blocks_sector(0), sb.bad_blocks_sector(1)) else { return Ok(out) };
    let buf = bad.buf.as_mut_slice();
    // The slots are consecutive and inside the spare: the loader checked the area's bounds.
    if buf.len() < 2 * META_BLOCK || e.config.spare.rw_sync(s0, &mut buf[..2 * META_BLOCK], IoKind::Read).is_err() {
        pr_err!("{}: cannot read the bad-block list; it is kept on the spare but not updated\n", e.dev_name());
        return Ok(out);
    }
    let (a, b) = buf.split_at(META_BLOCK);
    let (Ok(a), Ok(b)) = (<&[u8; META_BLOCK]>::try_from(a), <&[u8; META_BLOCK]>::try_from(&b[..META_BLOCK])) else { return Ok(out) };
    let (head, slot) = match loader::bad_blocks(sb, a, b, e.config.main_blocks) {
        Some((h, slot)) => (h, slot),
        // No valid slot: a new spare. The first write goes to slot 0.
        None => (Default::default(), 1),
    };
    let src = if slot == 0 { a } else { b };
    out.reserve(head.count as usize, GFP_KERNEL)?;
    for i in 0..head.count {
        let main = badb_entry(src, i);
        if remaps::find(log, main).is_none() {
            out.push(Entry::pending(main), GFP_KERNEL)?;
        }
    }
    bad.at = Some(CkptState { sector: s0, uuid: sb.uuid, seq: head.seq, slot, written_ns: now_ns() });
    bad.on_spare = u64::from(head.count);
    bad.overflow = head.flags & BADB_OVERFLOW != 0;
    if head.count > 0 {
        pr_info!("{}: bad-block list: {} unreadable blocks not yet rewritten\n", e.dev_name(), out.len());
    }
    Ok(out)
}

/// A new table version: the current one with `add` remaps and `pending` blocks merged in.
fn build_table(e: &Engine, w: &RcuWriter<Table>, add: &[Remap], pending: &[Entry]) -> Result<KBox<Table>> {
    let mut new: KVVec<Entry> = KVVec::with_capacity(add.len() + pending.len(), GFP_KERNEL)?;
    new.extend_from_slice(pending, GFP_KERNEL)?;
    for r in add {
        // Every pool block fits an entry (the loader refuses larger pools, and `Log::allocate`
        // hands out only pool blocks); were one not to, nothing is committed.
        new.push(Entry::remap(r.main, r.spare).ok_or(EINVAL)?, GFP_KERNEL)?;
    }
    let n = remaps::sort_dedup(new.as_mut_slice());
    let add = &new.as_slice()[..n];
    let old = e.table.get(w).entries.as_slice();
    let overlap = add.iter().filter(|a| remaps::find(old, a.main).is_some()).count();
    let total = old.len() + n - overlap;
    let mut merged: KVVec<Entry> = KVVec::from_elem(Entry::default(), total, GFP_KERNEL)?;
    remaps::merge(old, add, merged.as_mut_slice());
    Table::build(merged, e.config.main_blocks, e.config.line.cache_size)
}

/// Replays the log from the spare and publishes it (first resume of an instance).
///
/// The constructor read the log block by block while an old table could still commit, and
/// that table went on committing until it was suspended: the blocks from the constructor's
/// resume point on (`loader::Resume`: after the leading run of full blocks, which no commit
/// writes again) are read again (`metadata::reread`), and the constructor's table gets the
/// remaps they hold now in place of those it read there (`loader::retake`). The table is
/// rebuilt only if they changed or the bad-block list has blocks. Nothing is changed unless
/// the replay and the new table both succeed: a failed resume reads the same blocks again.
pub(crate) fn reload(e: &Engine) -> Result {
    let mut meta = e.meta.lock();
    let sb = meta.log.sb;
    if meta.log.unformatted {
        // The constructor accepted a blank spare for formatting: written only now that the
        // table line can no longer be refused.
        metadata::write_superblocks(&e.config.spare, &sb)
            .inspect(|()| pr_info!("{}: formatted spare: {} pool blocks of {} bytes\n", e.dev_name(), sb.geometry.pool_blocks, sb.geometry.block_size))
            .inspect_err(|_| pr_err!("{}: cannot write the spare's superblocks\n", e.dev_name()))?;
        meta.log.unformatted = false;
    }
    let failed = |CtrError { code, msg }| {
        pr_err!("{}: reloading the remap log failed: {}\n", e.dev_name(), msg.to_str().unwrap_or("?"));
        code
    };
    let again = metadata::reread(&e.config.spare, &meta.log).map_err(failed)?;
    let meta = &mut *meta;
    let current = e.table.get(&meta.table_w).entries.as_slice();
    // The remaps of the blocks read again, if they changed: the constructor's table with them
    // exchanged.
    let changed = if again.open.as_slice() == meta.log.open.as_slice() {
        None
    } else {
        let mut old: KVVec<Entry> = KVVec::new();
        old.extend_from_slice(meta.log.open.as_slice(), GFP_KERNEL)?;
        let mut new = again.open;
        let len = (current.len() - old.len().min(current.len())).checked_add(new.len()).ok_or(EINVAL)?;
        let mut out: KVVec<Entry> = KVVec::from_elem(Entry::default(), len, GFP_KERNEL)?;
        loader::retake(current, old.as_mut_slice(), new.as_mut_slice(), out.as_mut_slice()).map_err(|err| {
            pr_err!("{}: reloading the remap log failed: {}\n", e.dev_name(), err.message().to_str().unwrap_or("?"));
            EINVAL
        })?;
        Some(out)
    };
    let log_entries = changed.as_ref().map_or(current, |v| v.as_slice());
    let remaps = log_entries.len() as u64;
    let bad = load_bad_blocks(e, &mut meta.bad, &sb, log_entries)?;
    let entries = match changed {
        Some(v) if bad.is_empty() => Some(v),
        None if bad.is_empty() => None,
        _ => {
            let mut all: KVVec<Entry> = KVVec::from_elem(Entry::default(), log_entries.len() + bad.len(), GFP_KERNEL)?;
            remaps::merge(log_entries, bad.as_slice(), all.as_mut_slice());
            Some(all)
        }
    };
    if let Some(entries) = entries {
        let table = Table::build(entries, e.config.main_blocks, e.config.line.cache_size)?;
        // The constructor's table (as large as this one) is freed now, not at the next commit.
        e.table.replace_sync(&mut meta.table_w, table);
    }
    meta.log = again.log;
    e.publish_counts(remaps, bad.len() as u64, &meta.log);
    if meta.log.free_blocks() == 0 {
        e.set_state(State::SpareFull);
    }
    health::refresh_health(e, meta);
    Ok(())
}
