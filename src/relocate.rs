// SPDX-License-Identifier: GPL-2.0

//! The worker: relocates failed and pending writes, retries failed reads.
//!
//! A pass takes the queued bios in batches. For each write it copies the data of every
//! block into a pool block (reusing the block's pool block if it already has one) and
//! writes it to the spare; then the batch's new remaps are committed to the log in one go
//! (group commit: one preflush and a few FUA writes for the whole batch); then the new table
//! is published; only then are the writes completed, successfully. A failure anywhere
//! completes the affected bios with their original error.

use crate::control;
use crate::dm::{now_ns, BlkStatus, CtrError, HeldBio, IoKind, RcuWriter, WorkHandler};
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
}

impl Batch {
    pub(crate) fn new() -> Result<Self> {
        // Start small: most batches hold a few blocks; they grow as needed.
        Ok(Self { remaps: KVVec::with_capacity(BATCH_BIOS, GFP_KERNEL)?, pending: KVVec::with_capacity(8, GFP_KERNEL)? })
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
            let committed = self.commit_publish(&mut meta, batch);
            // Alerts before the bios complete, so whoever sees their result can see the event.
            control::check_alerts(self, &mut meta);
            for (mut bio, status) in bios {
                let ok = status.is_ok() && (committed || bio.per_bio().routed == Routed::FailedRead);
                let st = if ok { BlkStatus::OK } else if status.is_ok() { BlkStatus::IOERR } else { status };
                bio.per_bio().routed = Routed::Completed;
                bio.complete(st);
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
    /// or a new one recorded in `batch`. False if the pool is full or the spare failed.
    pub(crate) fn place(&self, log: &mut Log, w: &RcuWriter, batch: &mut Batch, block: u64, data: &mut [u8]) -> bool {
        if self.state() == State::Degraded {
            return false;
        }
        let existing = remaps::find(self.table.get(w).entries.as_slice(), block)
            .filter(|e| !e.is_pending())
            .map(|e| e.spare)
            .or_else(|| batch.remapped(block));
        let spare = match existing {
            Some(s) => s,
            // Room first, so a pool block is never taken without being recorded.
            None if batch.remaps.reserve(1, GFP_KERNEL).is_err() => return false,
            None => match log.allocate() {
                Some(s) => {
                    // Cannot fail: room was reserved.
                    let _ = batch.remaps.push(Remap { main: block, spare: s }, GFP_KERNEL);
                    s
                }
                None => {
                    self.set_state(State::SpareFull);
                    return false;
                }
            },
        };
        self.stats.add(stat::SPARE_IOS, 1);
        if self.spare.rw_sync(self.geo.pool_sector(spare), data, IoKind::Write).is_err() {
            pr_err!("write to the spare failed; relocation stopped (degraded)\n");
            self.set_state(State::Degraded);
            return false;
        }
        true
    }

    fn relocate_write(&self, meta: &mut Meta, batch: &mut Batch, bio: &mut HeldBio<PerBio>, pb: &PerBio) -> BlkStatus {
        let failed = if pb.routed == Routed::FailedWrite { pb.error } else { BlkStatus::IOERR };
        let bs = self.line.block_size as usize;
        // A failed write of several blocks does not say which one is bad: rewrite each on
        // the main device first, and relocate only those that fail again.
        let retry_main = pb.routed == Routed::FailedWrite && pb.blocks > 1;
        for i in 0..u64::from(pb.blocks) {
            let block = pb.first + i;
            bio.copy_out(&pb.iter, (i as usize * bs) as u32, &mut meta.data.as_mut_slice()[..bs]);
            if retry_main && self.main.rw_sync(block * self.bs_sectors, &mut meta.data.as_mut_slice()[..bs], IoKind::Write).is_ok() {
                continue;
            }
            if pb.routed == Routed::FailedWrite {
                self.note_error(meta, block);
            }
            let before = batch.remaps.len();
            let Meta { log, table_w, data, .. } = &mut *meta;
            if !self.place(log, table_w, batch, block, &mut data.as_mut_slice()[..bs]) {
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
                // Readable only after retries: a weak block. Move it while it still reads.
                if weak && self.line.proactive {
                    let before = batch.remaps.len();
                    let Meta { log, table_w, data, .. } = &mut *meta;
                    if self.place(log, table_w, batch, block, &mut data.as_mut_slice()[..bs]) && batch.remaps.len() > before {
                        self.proactive_relocations.fetch_add(1, Ordering::Relaxed);
                    }
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
    pub(crate) fn commit_publish(&self, meta: &mut Meta, batch: Batch) -> bool {
        let Batch { remaps, pending } = batch;
        let mut committed = remaps.is_empty();
        if !committed {
            match meta.log.commit(&self.spare, remaps.as_slice()) {
                Ok(written) => {
                    self.stats.add(stat::SPARE_IOS, written);
                    committed = true;
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    meta.recent_remaps.add(now_ns() / 1_000_000_000, remaps.len() as u32);
                }
                Err(_) => {
                    pr_err!("metadata commit failed; relocation stopped (degraded)\n");
                    self.set_state(State::Degraded);
                }
            }
        }
        let add = if committed { remaps.as_slice() } else { &[] };
        if (!add.is_empty() || !pending.is_empty()) && self.publish(&mut meta.table_w, add, pending.as_slice()).is_err() {
            // Out of memory for the new table: the remaps are durable and will be in the table
            // after the next load, but their writes cannot be acknowledged now.
            committed = false;
        }
        if meta.log.free_blocks() == 0 {
            self.set_state(State::SpareFull);
        }
        self.update_counts(self.table.get(&meta.table_w).entries.as_slice(), &meta.log);
        committed
    }

    /// Builds and publishes a table with `add` remaps and `pending` blocks merged in.
    fn publish(&self, w: &mut RcuWriter, add: &[Remap], pending: &[Entry]) -> Result {
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
        let table = Table::build(merged, self.main_blocks, self.line.cache_size)?;
        self.table.replace(w, table);
        Ok(())
    }
}

/// Reloads the log from the spare and publishes it (first resume of an instance).
pub(crate) fn reload(e: &Engine) -> Result {
    let mut meta = e.meta.lock();
    let sb = meta.log.sb;
    let report = |CtrError { code, msg }: CtrError| {
        pr_err!("reloading the remap log failed: {}\n", msg.to_str().unwrap_or("?"));
        code
    };
    if !metadata::changed_since(&e.spare, &meta.log).map_err(report)? {
        return Ok(());
    }
    let loaded = metadata::replay(&e.spare, sb).map_err(|CtrError { code, msg }| {
        pr_err!("reloading the remap log failed: {}\n", msg.to_str().unwrap_or("?"));
        code
    })?;
    meta.log = loaded.log;
    let table = Table::build(loaded.entries, e.main_blocks, e.line.cache_size)?;
    let meta = &mut *meta;
    e.table.replace(&mut meta.table_w, table);
    e.update_counts(e.table.get(&meta.table_w).entries.as_slice(), &meta.log);
    if meta.log.free_blocks() == 0 {
        e.set_state(State::SpareFull);
    }
    control::refresh_health(e, meta);
    Ok(())
}
