// SPDX-License-Identifier: GPL-2.0

//! The worker: relocates failed and pending writes, retries failed reads.
//!
//! A pass takes the queued bios in batches. For each write it copies the data of every
//! block into a pool block (reusing the block's pool block if it already has one) and
//! writes it to the spare; then the batch's new remaps are committed to the log in one go
//! (group commit: one preflush and a few FUA writes for the whole batch); then the new table
//! is published; only then are the writes completed, successfully. A failure anywhere
//! completes the affected bios with their original error.

use crate::dm::{BlkStatus, CtrError, HeldBio, IoKind, RcuWriter, WorkHandler};
use crate::logic::format::Remap;
use crate::logic::remaps::{self, Entry, PENDING};
use crate::metadata;
use crate::target::{Engine, Meta, PerBio, Routed, State, Table};
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// Bios per batch.
const BATCH_BIOS: usize = 64;

/// One batch: the bios and what they add to the table.
struct Batch {
    bios: KVec<(HeldBio<PerBio>, BlkStatus)>,
    /// New remaps, in allocation order (the log's order).
    remaps: KVVec<Remap>,
    /// Blocks found unreadable.
    pending: KVVec<Entry>,
}

impl Batch {
    fn new() -> Result<Self> {
        Ok(Self {
            bios: KVec::with_capacity(BATCH_BIOS, GFP_KERNEL)?,
            // Start small: most batches hold a few blocks; they grow as needed.
            remaps: KVVec::with_capacity(BATCH_BIOS, GFP_KERNEL)?,
            pending: KVVec::with_capacity(BATCH_BIOS, GFP_KERNEL)?,
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
        if self.event_pending.swap(false, Ordering::Relaxed) {
            self.handle.event();
        }
        loop {
            let Some(first) = self.worker.pop() else { break };
            let mut batch = match Batch::new() {
                Ok(b) => b,
                Err(_) => {
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
            while let Some(bio) = next.take() {
                self.handle_bio(&mut meta, &mut batch, bio);
                if batch.bios.len() < BATCH_BIOS {
                    next = self.worker.pop();
                }
            }
            self.finish(&mut meta, batch);
        }
        if self.event_pending.swap(false, Ordering::Relaxed) {
            self.handle.event();
        }
    }
}

impl Engine {
    /// Processes one bio into the batch: its data goes to the pool (writes) or is re-read
    /// (reads). It is completed in `finish`.
    fn handle_bio(&self, meta: &mut Meta, batch: &mut Batch, mut bio: HeldBio<PerBio>) {
        let pb = *bio.per_bio();
        let status = match pb.routed {
            Routed::FailedWrite | Routed::PendingWrite => self.relocate_write(meta, batch, &mut bio, &pb),
            Routed::FailedRead => self.retry_read(meta, batch, &mut bio, &pb),
            // Nothing else is queued; fail safe rather than complete something unknown.
            _ => BlkStatus::IOERR,
        };
        if batch.bios.push((bio, status), GFP_KERNEL).is_err() {
            // Capacity was reserved for BATCH_BIOS; cannot happen. The bio dropped with the
            // error completes with an I/O error.
        }
    }

    fn relocate_write(&self, meta: &mut Meta, batch: &mut Batch, bio: &mut HeldBio<PerBio>, pb: &PerBio) -> BlkStatus {
        let failed = if pb.routed == Routed::FailedWrite { pb.error } else { BlkStatus::IOERR };
        if self.state() == State::Degraded {
            return failed;
        }
        let bs = self.line.block_size as usize;
        // A failed write of several blocks does not say which one is bad: rewrite each on
        // the main device first, and relocate only those that fail again.
        let retry_main = pb.routed == Routed::FailedWrite && pb.blocks > 1;
        for i in 0..u64::from(pb.blocks) {
            let block = pb.first + i;
            if retry_main {
                let data = &mut meta.data.as_mut_slice()[..bs];
                bio.copy_out(&pb.iter, (i as usize * bs) as u32, data);
                if self.main.rw_sync(block * self.bs_sectors, data, IoKind::Write).is_ok() {
                    continue;
                }
            }
            let existing = remaps::find(self.table.get(&meta.table_w).entries.as_slice(), block)
                .filter(|e| !e.is_pending())
                .map(|e| e.spare)
                .or_else(|| batch.remapped(block));
            let spare = match existing {
                Some(s) => s,
                // Room first, so a pool block is never taken without being recorded.
                None if batch.remaps.reserve(1, GFP_KERNEL).is_err() => return failed,
                None => match meta.log.allocate() {
                    Some(s) => {
                        // Cannot fail: room was reserved.
                        let _ = batch.remaps.push(Remap { main: block, spare: s }, GFP_KERNEL);
                        s
                    }
                    None => {
                        self.set_state(State::SpareFull);
                        return failed;
                    }
                },
            };
            let data = &mut meta.data.as_mut_slice()[..bs];
            bio.copy_out(&pb.iter, (i as usize * bs) as u32, data);
            if self.spare.rw_sync(self.geo.pool_sector(spare), data, IoKind::Write).is_err() {
                pr_err!("write to the spare failed; relocation stopped (degraded)\n");
                self.set_state(State::Degraded);
                return failed;
            }
        }
        BlkStatus::OK
    }

    fn retry_read(&self, meta: &mut Meta, batch: &mut Batch, bio: &mut HeldBio<PerBio>, pb: &PerBio) -> BlkStatus {
        let bs = self.line.block_size as usize;
        let mut status = BlkStatus::OK;
        for i in 0..u64::from(pb.blocks) {
            let block = pb.first + i;
            let data = &mut meta.data.as_mut_slice()[..bs];
            let mut ok = false;
            for _ in 0..self.line.read_retries {
                if self.main.rw_sync(block * self.bs_sectors, data, IoKind::Read).is_ok() {
                    ok = true;
                    break;
                }
            }
            if ok {
                bio.copy_in(&pb.iter, (i as usize * bs) as u32, data);
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

    /// Commits the batch's remaps, publishes the new table, completes the bios.
    fn finish(&self, meta: &mut Meta, batch: Batch) {
        let Batch { bios, remaps, pending } = batch;
        let mut committed = remaps.is_empty();
        if !committed {
            match meta.log.commit(&self.spare, remaps.as_slice()) {
                Ok(()) => committed = true,
                Err(_) => {
                    pr_err!("metadata commit failed; relocation stopped (degraded)\n");
                    self.set_state(State::Degraded);
                }
            }
        }
        let add_remaps = if committed { remaps.as_slice() } else { &[] };
        if (!add_remaps.is_empty() || !pending.is_empty()) && self.publish(&mut meta.table_w, add_remaps, pending.as_slice()).is_err() {
            // Out of memory for the new table: the remaps are durable and will be in the table
            // after the next load, but the bios cannot be acknowledged now.
            committed = false;
        }
        if meta.log.free_blocks() == 0 {
            self.set_state(State::SpareFull);
        }
        // Before the bios complete, so whoever sees their result can also see the event.
        if self.event_pending.swap(false, Ordering::Relaxed) {
            self.handle.event();
        }
        for (mut bio, status) in bios {
            let ok = status.is_ok() && (committed || bio.per_bio().routed == Routed::FailedRead);
            let st = if ok { BlkStatus::OK } else if status.is_ok() { BlkStatus::IOERR } else { status };
            bio.per_bio().routed = Routed::Completed;
            bio.complete(st);
        }
        self.update_counts(self.table.get(&meta.table_w).entries.as_slice(), &meta.log);
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
        let new = KBox::new(Table { entries: merged }, GFP_KERNEL)?;
        self.table.replace(w, new);
        Ok(())
    }
}

/// Reloads the log from the spare and publishes it (first resume of an instance).
pub(crate) fn reload(e: &Engine) -> Result {
    let mut meta = e.meta.lock();
    let sb = meta.log.sb;
    let loaded = metadata::replay(&e.spare, sb).map_err(|CtrError { code, msg }| {
        pr_err!("reloading the remap log failed: {}\n", msg.to_str().unwrap_or("?"));
        code
    })?;
    meta.log = loaded.log;
    let new = KBox::new(Table { entries: loaded.entries }, GFP_KERNEL)?;
    let meta = &mut *meta;
    e.table.replace(&mut meta.table_w, new);
    e.update_counts(e.table.get(&meta.table_w).entries.as_slice(), &meta.log);
    if meta.log.free_blocks() == 0 {
        e.set_state(State::SpareFull);
    }
    Ok(())
}
