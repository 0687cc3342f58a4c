// SPDX-License-Identifier: GPL-2.0

//! The worker: relocates failed and pending writes, retries failed reads.
//!
//! A pass takes the queued bios in batches. For each write it copies the data of every
//! block into a pool block (reusing the block's pool block if it already has one) and
//! writes it to the spare; then the batch's new remaps are committed to the log in one go
//! (group commit: one preflush and a few FUA writes for the whole batch); then the new table
//! is published; only then are the writes completed, successfully. A failure anywhere
//! completes the affected bios with their original error.
//!
//! A block that still reads (a weak block found by a read retry or the scan, or one the
//! `remap` message names) is moved by [`Engine::migrate`] alone: it quiesces the block
//! (writes to it are parked, writes already sent are waited for), copies, commits, publishes
//! and then sends the parked writes to the pool block. See docs/design.md.

use crate::control;
use crate::dm::{now_ns, BlkStatus, CtrError, HeldBio, IoKind, RcuWriter, WorkHandler};
use crate::target::NOT_MIGRATING;
use crate::logic::format::Remap;
use crate::logic::remaps::{self, Entry, PENDING};
use crate::metadata::{self, Log};
use crate::target::{stat, Engine, Meta, PerBio, Routed, State, Table};
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// Bios per batch.
const BATCH_BIOS: usize = 64;

/// What a batch adds to the table.
pub(crate) struct Batch {
    /// New remaps, in allocation order (the log's order).
    pub(crate) remaps: KVVec<Remap>,
    /// Blocks found unreadable.
    pub(crate) pending: KVVec<Entry>,
    /// Readable blocks found weak, to be moved (`Engine::migrate`) once the batch is done.
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
    fn remapped(&self, block: u64) -> Option<u64> {
        self.remaps.iter().rev().find(|r| r.main == block).map(|r| r.spare)
    }
}

impl WorkHandler for Engine {
    type PerBio = PerBio;

    fn work(&self) {
        loop {
            let Some(first) = self.worker.pop() else { break };
            let (mut batch, mut bios) = match (Batch::new(), KVec::with_capacity(BATCH_BIOS, GFP_KERNEL)) {
                (Ok(b), Ok(v)) => (b, v),
                _ => {
                    // No memory even for the batch: fail this bio with the error it met.
                    let mut first = first;
                    let error = first.per_bio().error;
                    first.per_bio().routed = Routed::Completed;
                    first.complete(if error.is_ok() { BlkStatus::IOERR } else { error });
                    continue;
                }
            };
            let mut meta = self.meta.lock();
            let mut next = Some(first);
            while let Some(mut bio) = next.take() {
                let status = self.handle_bio(&mut meta, &mut batch, &mut bio);
                // Capacity was reserved for BATCH_BIOS, so this cannot fail; if it did, the
                // bio dropped here completes with an I/O error.
                let _ = bios.push((bio, status), GFP_KERNEL);
                if bios.len() < BATCH_BIOS {
                    next = self.worker.pop();
                }
            }
            let weak = core::mem::replace(&mut batch.weak, KVVec::new());
            let committed = self.commit_publish(&mut meta, batch);
            // Alerts before the bios complete, so whoever sees their result can see the event.
            control::check_alerts(self, &mut meta);
            for (mut bio, status) in bios {
                let ok = status.is_ok() && (committed || bio.per_bio().routed == Routed::FailedRead);
                let st = if ok { BlkStatus::OK } else if status.is_ok() { BlkStatus::IOERR } else { status };
                bio.per_bio().routed = Routed::Completed;
                bio.complete(st);
            }
            // Weak blocks the retries found move now, each quiesced on its own.
            for w in weak.iter() {
                let _ = self.migrate(&mut meta, w.block);
            }
        }
        if self.event_pending.swap(false, Ordering::Relaxed) {
            let mut meta = self.meta.lock();
            control::check_alerts(self, &mut meta);
        }
    }

    fn scan(&self) {
        crate::scan::step(self);
    }
}

impl Engine {
    /// Processes one bio into the batch: its data goes to the pool (writes) or is re-read
    /// (reads). It is completed after the batch is committed.
    fn handle_bio(&self, meta: &mut Meta, batch: &mut Batch, bio: &mut HeldBio<PerBio>) -> BlkStatus {
        let pb = *bio.per_bio();
        match pb.routed {
            Routed::FailedWrite | Routed::PendingWrite => self.relocate_write(meta, batch, bio, &pb),
            Routed::FailedRead => self.retry_read(meta, batch, bio, &pb),
            // Nothing else is queued; fail safe rather than complete something unknown.
            _ => BlkStatus::IOERR,
        }
    }

    /// Records a media error at `block` for the health figures.
    pub(crate) fn note_error(&self, meta: &mut Meta, block: u64) {
        meta.hotspots.add(block);
        meta.recent_errors.add(now_ns() / 1_000_000_000, 1);
    }

    /// Puts `data` (one block) for main block `block` into the pool: its existing pool block,
    /// or a new one recorded in `batch` once its data is written. False if the pool is full
    /// or the spare failed. `fua`: the data must be durable when this returns (a FUA bio's
    /// data in a pool block that no commit will flush).
    pub(crate) fn place(&self, log: &mut Log, w: &RcuWriter, batch: &mut Batch, block: u64, data: &mut [u8], fua: bool) -> bool {
        if self.state() == State::Degraded {
            return false;
        }
        let existing = remaps::find(self.table.get(w).entries.as_slice(), block)
            .filter(|e| !e.is_pending())
            .map(|e| e.spare)
            .or_else(|| batch.remapped(block));
        let (spare, new) = match existing {
            Some(s) => (s, false),
            // Room first, so a pool block is never taken without being recorded.
            None if batch.remaps.reserve(1, GFP_KERNEL).is_err() => return false,
            None => match log.allocate() {
                Some(s) => (s, true),
                None => {
                    self.set_state(State::SpareFull);
                    return false;
                }
            },
        };
        self.stats.add(stat::SPARE_IOS, 1);
        let kind = if fua { IoKind::WriteFua } else { IoKind::Write };
        if self.spare.rw_sync(self.geo.pool_sector(spare), data, kind).is_err() {
            // A new pool block that did not take its data is never recorded: it stays
            // allocated and unused (retired) and the block keeps its old home.
            pr_err!("write to the spare failed; relocation stopped (degraded)\n");
            self.set_state(State::Degraded);
            return false;
        }
        if new {
            // Cannot fail: room was reserved.
            let _ = batch.remaps.push(Remap { main: block, spare }, GFP_KERNEL);
        }
        true
    }

    /// Moves main block `block`, which still reads, to a new pool block: the one way a
    /// readable block's data reaches the pool (weak blocks from read retries and the scan,
    /// and the `remap` message). Call with `meta` held and no batch open.
    ///
    /// While it runs, map parks writes to the block; it first waits for the writes already
    /// sent to the main device, so the copy has the latest data; after the commit and the
    /// publish it sends the parked writes to the pool block (or back to the main device if
    /// the move failed). Returns the pool block.
    pub(crate) fn migrate(&self, meta: &mut Meta, block: u64) -> Result<u64> {
        if remaps::find(self.table.get(&meta.table_w).entries.as_slice(), block).is_some_and(|e| !e.is_pending()) {
            return Err(EEXIST);
        }
        if self.state() != State::Operational {
            return Err(if self.state() == State::SpareFull { ENOSPC } else { EIO });
        }
        let mut batch = Batch::new()?;
        self.migrating.store(block, Ordering::SeqCst);
        // Every write that did not see the mark entered the gate before this wait.
        self.gate.wait();
        let r = self.copy_commit(meta, &mut batch, block);
        if r.is_ok() {
            let _ = self.commit_publish(meta, batch);
        }
        // Commit or not, the table is final for this block now.
        let r = r.and_then(|pool| {
            let published = remaps::find(self.table.get(&meta.table_w).entries.as_slice(), block);
            match published {
                Some(e) if e.spare == pool => Ok(pool),
                _ => Err(EIO),
            }
        });
        self.migrating.store(NOT_MIGRATING, Ordering::SeqCst);
        // Writes that saw the mark park inside the gate: after this wait all are parked.
        self.gate.wait();
        self.release_parked();
        if r.is_ok() {
            self.proactive_relocations.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// The copy of `migrate`: reads the block (with retries) and writes it to a new pool block.
    fn copy_commit(&self, meta: &mut Meta, batch: &mut Batch, block: u64) -> Result<u64> {
        let bs = self.line.block_size as usize;
        let mut ok = false;
        for _ in 0..=self.line.read_retries {
            if self.main.rw_sync(block * self.bs_sectors, &mut meta.data.as_mut_slice()[..bs], IoKind::Read).is_ok() {
                ok = true;
                break;
            }
        }
        if !ok {
            return Err(EIO);
        }
        let Meta { log, table_w, data, .. } = &mut *meta;
        if !self.place(log, table_w, batch, block, &mut data.as_mut_slice()[..bs], false) {
            return Err(if self.state() == State::SpareFull { ENOSPC } else { EIO });
        }
        batch.remaps.last().map(|r| r.spare).ok_or(EIO)
    }

    /// Sends the writes parked during a migration to where their block lives now.
    fn release_parked(&self) {
        while let Some(mut p) = self.parked.pop() {
            let pb = p.per_bio();
            let home = self.table.read(|t| remaps::find(t.entries.as_slice(), pb.first)).filter(|e| !e.is_pending());
            let offset = pb.sector - pb.first * self.bs_sectors;
            match home {
                Some(en) => {
                    pb.routed = Routed::Spare;
                    self.stats.add(stat::SPARE_IOS, 1);
                    let at = self.geo.pool_sector(en.spare) + offset;
                    p.submit(&self.spare, at);
                }
                None => {
                    // The move failed: the main device, through the gate like any write.
                    pb.routed = Routed::Main;
                    pb.gate = Some(self.gate.enter());
                    pb.start_ns = now_ns();
                    let at = pb.sector;
                    p.submit(&self.main, at);
                }
            }
        }
    }

    fn relocate_write(&self, meta: &mut Meta, batch: &mut Batch, bio: &mut HeldBio<PerBio>, pb: &PerBio) -> BlkStatus {
        let failed = if pb.routed == Routed::FailedWrite { pb.error } else { BlkStatus::IOERR };
        let bs = self.line.block_size as usize;
        // A failed write of several blocks does not say which one is bad: rewrite each on
        // the main device first, and relocate only those that fail again.
        let retry_main = pb.routed == Routed::FailedWrite && pb.blocks > 1;
        // A FUA write is acknowledged durable: so is every rewrite made for it.
        let kind = if pb.fua { IoKind::WriteFua } else { IoKind::Write };
        for i in 0..u64::from(pb.blocks) {
            let block = pb.first + i;
            bio.copy_out(&pb.iter, (i as usize * bs) as u32, &mut meta.data.as_mut_slice()[..bs]);
            // The table now, not at map time: a block moved to the pool since (a migration)
            // must get its data there, not on the main device nobody reads any more.
            let moved = remaps::find(self.table.get(&meta.table_w).entries.as_slice(), block).is_some_and(|e| !e.is_pending())
                || batch.remapped(block).is_some();
            if retry_main && !moved {
                if self.main.rw_sync(block * self.bs_sectors, &mut meta.data.as_mut_slice()[..bs], kind).is_ok() {
                    continue;
                }
            }
            if pb.routed == Routed::FailedWrite && !moved {
                self.note_error(meta, block);
            }
            let before = batch.remaps.len();
            let Meta { log, table_w, data, .. } = &mut *meta;
            if !self.place(log, table_w, batch, block, &mut data.as_mut_slice()[..bs], pb.fua) {
                return failed;
            }
            if batch.remaps.len() > before {
                self.write_relocations.fetch_add(1, Ordering::Relaxed);
            }
        }
        BlkStatus::OK
    }

    fn retry_read(&self, meta: &mut Meta, batch: &mut Batch, bio: &mut HeldBio<PerBio>, pb: &PerBio) -> BlkStatus {
        let bs = self.line.block_size as usize;
        let mut status = BlkStatus::OK;
        for i in 0..u64::from(pb.blocks) {
            let block = pb.first + i;
            let mut tries = 0;
            let mut ok = false;
            while tries < self.line.read_retries && !ok {
                tries += 1;
                ok = self.main.rw_sync(block * self.bs_sectors, &mut meta.data.as_mut_slice()[..bs], IoKind::Read).is_ok();
            }
            // In a multi-block read that failed, a block that reads at once may be innocent.
            let weak = ok && (pb.blocks == 1 || tries > 1);
            if !ok || weak {
                self.note_error(meta, block);
            }
            if ok {
                bio.copy_in(&pb.iter, (i as usize * bs) as u32, &meta.data.as_slice()[..bs]);
                // Readable only after retries: a weak block. Move it while it still reads,
                // after this batch (`migrate`); if there is no room to note it, a later read
                // or the scan finds it again.
                if weak && self.line.proactive {
                    let _ = batch.weak.push(Weak { block, tries, last_ms: 0 }, GFP_KERNEL);
                }
                continue;
            }
            // Unreadable: the error goes to the caller (no data is invented) and the block
            // becomes pending, so its next write is relocated. A block remapped meanwhile
            // stays remapped.
            status = pb.error;
            let known = remaps::find(self.table.get(&meta.table_w).entries.as_slice(), block).is_some()
                || batch.remapped(block).is_some();
            if !known && batch.pending.push(Entry { main: block, spare: PENDING }, GFP_KERNEL).is_err() {
                break;
            }
        }
        status
    }

    /// Commits the batch's remaps and publishes the new table. True if the remaps are
    /// durable and published (trivially, if there were none).
    ///
    /// The new table is built before the commit: once a remap is durable it must be
    /// published, or the next failure of its block would take a second pool block and the log
    /// would hold the block twice. Without memory for it nothing is committed (the batch's
    /// new pool blocks stay allocated and unused) and its writes fail.
    pub(crate) fn commit_publish(&self, meta: &mut Meta, batch: Batch) -> bool {
        let Batch { remaps, pending, .. } = batch;
        let mut committed = remaps.is_empty();
        if !remaps.is_empty() || !pending.is_empty() {
            match self.build_table(&meta.table_w, remaps.as_slice(), pending.as_slice()) {
                Err(_) => {
                    pr_err!("no memory for the remap table; {} relocations not committed\n", remaps.len());
                    committed = false;
                }
                Ok(table) if remaps.is_empty() => self.table.replace(&mut meta.table_w, table),
                Ok(table) => match meta.log.commit(&self.spare, remaps.as_slice()) {
                    Ok(written) => {
                        self.stats.add(stat::SPARE_IOS, written);
                        committed = true;
                        self.commits.fetch_add(1, Ordering::Relaxed);
                        meta.recent_remaps.add(now_ns() / 1_000_000_000, remaps.len() as u32);
                        self.table.replace(&mut meta.table_w, table);
                    }
                    Err(_) => {
                        // The pending marks are lost with the table (memory-only hints: the
                        // next read error marks a block again).
                        pr_err!("metadata commit failed; relocation stopped (degraded)\n");
                        self.set_state(State::Degraded);
                    }
                },
            }
        }
        if meta.log.free_blocks() == 0 {
            self.set_state(State::SpareFull);
        }
        self.update_counts(self.table.get(&meta.table_w).entries.as_slice(), &meta.log);
        committed
    }

    /// A new table version: the current one with `add` remaps and `pending` blocks merged in.
    fn build_table(&self, w: &RcuWriter, add: &[Remap], pending: &[Entry]) -> Result<KBox<Table>> {
        let mut new: KVVec<Entry> = KVVec::with_capacity(add.len() + pending.len(), GFP_KERNEL)?;
        new.extend_from_slice(pending, GFP_KERNEL)?;
        for r in add {
            new.push(Entry { main: r.main, spare: r.spare }, GFP_KERNEL)?;
        }
        let n = remaps::sort_dedup(new.as_mut_slice());
        let add = &new.as_slice()[..n];
        let old = self.table.get(w).entries.as_slice();
        let overlap = add.iter().filter(|a| remaps::find(old, a.main).is_some()).count();
        let total = old.len() + n - overlap;
        let mut merged: KVVec<Entry> = KVVec::from_elem(Entry::default(), total, GFP_KERNEL)?;
        remaps::merge(old, add, merged.as_mut_slice());
        Table::build(merged, self.main_blocks, self.line.cache_size)
    }
}

/// Replays the log from the spare and publishes it (first resume of an instance).
///
/// A whole replay, not a check of the tail: the constructor read the log block by block while
/// an old table could still commit, so its snapshot may mix states. Nothing is changed unless
/// the replay and the new table both succeed.
pub(crate) fn reload(e: &Engine) -> Result {
    let mut meta = e.meta.lock();
    let sb = meta.log.sb;
    if meta.log.unformatted {
        // The constructor accepted a blank spare for formatting: written only now that the
        // table line can no longer be refused.
        metadata::write_superblocks(&e.spare, &sb).inspect_err(|_| pr_err!("cannot write the spare's superblocks\n"))?;
        meta.log.unformatted = false;
    }
    let loaded = metadata::replay(&e.spare, sb).map_err(|CtrError { code, msg }| {
        pr_err!("reloading the remap log failed: {}\n", msg.to_str().unwrap_or("?"));
        code
    })?;
    let table = Table::build(loaded.entries, e.main_blocks, e.line.cache_size)?;
    let meta = &mut *meta;
    meta.log = loaded.log;
    e.table.replace(&mut meta.table_w, table);
    e.update_counts(e.table.get(&meta.table_w).entries.as_slice(), &meta.log);
    if meta.log.free_blocks() == 0 {
        e.set_state(State::SpareFull);
    }
    control::refresh_health(e, meta);
    Ok(())
}
