// SPDX-License-Identifier: GPL-2.0

//! Actions layer: the worker's bios. Relocates failed and pending writes, retries failed
//! reads.
//!
//! A pass takes the queued bios in batches. For each write it copies the data of every
//! block into a pool block (reusing the block's pool block if it already has one) and
//! writes it to the spare; then the batch's new remaps are committed to the log in one go
//! (group commit: one preflush and a few FUA writes for the whole batch); then the new table
//! is published; only then are the writes completed, successfully. A failure anywhere
//! completes the affected bios with their original error.
//!
//! A block that still reads (a weak block found by a read retry) is moved afterwards by
//! [`migrate::migrate`] alone.

#![forbid(unsafe_code)]

use crate::commit::{self, Batch, Weak, BATCH_BIOS};
use crate::dm::{ratelimit, BlkStatus, HeldBio, IoKind};
use crate::engine::{Engine, PerBio, Stage, WorkerState};
use crate::health;
use crate::logic::remaps::{self, Entry};
use crate::migrate;
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// Takes the bios queued to the worker, a batch at a time, and completes each once its data
/// and the remaps it depends on are durable (or with its original error).
pub(crate) fn drain(e: &Engine) {
    loop {
        let Some(first) = e.worker.pop() else { break };
        let (mut batch, mut bios) = match (Batch::new(), KVec::with_capacity(BATCH_BIOS, GFP_KERNEL)) {
            (Ok(b), Ok(v)) => (b, v),
            _ => {
                // No memory even for the batch: fail this bio with the error it met.
                let mut first = first;
                let error = first.per_bio().error;
                first.per_bio().stage = Stage::Completed;
                first.complete(if error.is_ok() { BlkStatus::IOERR } else { error });
                continue;
            }
        };
        let mut meta = e.meta.lock();
        let mut next = Some(first);
        while let Some(mut bio) = next.take() {
            let status = handle_bio(e, &mut meta, &mut batch, &mut bio);
            // Capacity was reserved for BATCH_BIOS, so this cannot fail; if it did, the
            // bio dropped here completes with an I/O error.
            let _ = bios.push((bio, status), GFP_KERNEL);
            if bios.len() < BATCH_BIOS {
                next = e.worker.pop();
            }
        }
        let weak = core::mem::replace(&mut batch.weak, KVVec::new());
        let committed = commit::commit_publish(e, &mut meta, batch);
        // Alerts before the bios complete, so whoever sees their result can see the event.
        health::check_alerts(e, &mut meta);
        for (mut bio, status) in bios {
            let ok = status.is_ok() && (committed || bio.per_bio().stage == Stage::FailedRead);
            let st = if ok { BlkStatus::OK } else if status.is_ok() { BlkStatus::IOERR } else { status };
            bio.per_bio().stage = Stage::Completed;
            bio.complete(st);
        }
        // Weak blocks the retries found move now, each quiesced on its own.
        for w in weak.iter() {
            let _ = migrate::migrate(e, &mut meta, w.block);
        }
        // Tables replaced by earlier batches whose readers have all left.
        meta.table_w.reap();
    }
}

/// Processes one bio into the batch: its data goes to the pool (writes) or is re-read
/// (reads). It is completed after the batch is committed.
fn handle_bio(e: &Engine, meta: &mut WorkerState, batch: &mut Batch, bio: &mut HeldBio<PerBio>) -> BlkStatus {
    let pb = *bio.per_bio();
    match pb.stage {
        Stage::FailedWrite | Stage::PendingWrite => relocate_write(e, meta, batch, bio, &pb),
        Stage::FailedRead => retry_read(e, meta, batch, bio, &pb),
        // Nothing else is queued; fail safe rather than complete something unknown.
        _ => BlkStatus::IOERR,
    }
}

fn relocate_write(e: &Engine, meta: &mut WorkerState, batch: &mut Batch, bio: &mut HeldBio<PerBio>, pb: &PerBio) -> BlkStatus {
    let failed = if pb.stage == Stage::FailedWrite { pb.error } else { BlkStatus::IOERR };
    let bs = e.config.line.block_size as usize;
    // A failed write is rewritten on the main device once, block by block, before anything
    // is relocated: a one-shot error (a bus reset, a write cache hiccup) then costs no pool
    // block, and a failed write of several blocks does not say which one is bad.
    let retry_main = pb.stage == Stage::FailedWrite && !e.main_lost.load(Ordering::Relaxed);
    // Whether every block took its rewrite: the error was transient (counted once).
    let mut cured = retry_main;
    // A FUA write is acknowledged durable: so is every rewrite made for it.
    let kind = if pb.fua { IoKind::WriteFua } else { IoKind::Write };
    for i in 0..u64::from(pb.blocks) {
        let block = pb.first + i;
        bio.copy_out(&pb.iter, (i as usize * bs) as u32, &mut meta.data.as_mut_slice()[..bs]);
        // The table now, not at map time: a block moved to the pool since (a migration)
        // must get its data there, not on the main device nobody reads any more.
        let moved = remaps::find(e.table.get(&meta.table_w).entries.as_slice(), block).is_some_and(|en| !en.is_pending())
            || batch.remapped(block).is_some();
        if retry_main && !moved {
            if e.config.main.rw_sync(block * e.config.bs_sectors, &mut meta.data.as_mut_slice()[..bs], kind).is_ok() {
                meta.main_fail_run = 0;
                continue;
            }
        }
        cured = false;
        if pb.stage == Stage::FailedWrite && !moved {
            health::note_error(meta, block);
            if main_failure(e, meta, block) {
                // Lost: nothing more is relocated (a gone disk would drain the pool).
                return failed;
            }
        }
        let before = batch.remaps.len();
        let WorkerState { log, table_w, data, .. } = &mut *meta;
        if !commit::place(e, log, table_w, batch, block, &mut data.as_mut_slice()[..bs], pb.fua) {
            // A write to a pending block that map sent here while the pool could take it, but
            // the pool filled or the spare failed since: the main device, as map would now
            // send it (it may well accept the write). Not for a block with a pool block
            // (its home is the spare) or one in doubt (`engine::InDoubt`).
            if pb.stage == Stage::PendingWrite && !moved && e.doubt.clip(block, 1).is_some() {
                let main = e.config.main.rw_sync(block * e.config.bs_sectors, &mut data.as_mut_slice()[..bs], kind);
                if main.is_ok() {
                    continue;
                }
            }
            return failed;
        }
        if batch.remaps.len() > before {
            e.figures.write_relocations.fetch_add(1, Ordering::Relaxed);
            if ratelimit() {
                let why = if pb.stage == Stage::FailedWrite { "the write failed on the main device" } else { "a write to a block that could not be read" };
                let pool = batch.remapped(block).unwrap_or(0);
                pr_info!("{}: block {} relocated to pool block {}: {}\n", e.dev_name(), block, pool, why);
            }
        }
    }
    if cured {
        e.figures.retried_ok.fetch_add(1, Ordering::Relaxed);
        if ratelimit() {
            pr_info!("{}: write of block {} failed once and took its rewrite: nothing relocated\n", e.dev_name(), pb.first);
        }
    }
    BlkStatus::OK
}

/// A failure on the main device that the worker's own retry did not cure; true if the main
/// device is lost. A main device that has gone (unplugged, deleted, dead) fails every I/O:
/// relocating each failed write would drain the pool a block at a time. So after
/// `main_lost_after` such failures in a row with no success of its own between, the worker
/// probes the main device (`probe`): if a probe reads, these are bad blocks and the run
/// starts again; if every probe fails, the main device is taken as lost (`Engine::main_lost`, alerted as
/// `main_lost`) until the table is reloaded. Blocks already on the spare are still served.
pub(crate) fn main_failure(e: &Engine, meta: &mut WorkerState, block: u64) -> bool {
    if e.main_lost.load(Ordering::Relaxed) {
        return true;
    }
    meta.main_fail_run = meta.main_fail_run.saturating_add(1);
    if meta.main_fail_run < e.config.line.main_lost_after {
        return false;
    }
    meta.main_fail_run = 0;
    if !probe(e, meta, block) {
        if ratelimit() {
            pr_warn!("{}: {} main-device failures in a row, but a probe read succeeded: a bad patch, not a lost device\n", e.dev_name(), e.config.line.main_lost_after);
        }
        return false;
    }
    true
}

/// A main-device I/O ended `BLK_STS_OFFLINE` (`end_io` set `Engine::main_suspect`): the
/// driver says the device is offline, which may be for good. Probed at once, since such
/// errors are passed on, never relocated, and so never start a run of failures.
pub(crate) fn check_suspect(e: &Engine) {
    if e.main_suspect.swap(false, Ordering::Relaxed) && !e.main_lost.load(Ordering::Relaxed) {
        let mut meta = e.meta.lock();
        let _ = probe(e, &mut meta, 0);
        health::check_alerts(e, &mut meta);
    }
}

/// Reads up to four blocks of the main device (not `block`, not in the table), stopping at the
/// first that reads; if none reads, marks the main device lost and returns true.
fn probe(e: &Engine, meta: &mut WorkerState, block: u64) -> bool {
    let n = e.config.main_blocks;
    let bs = e.config.line.block_size as usize;
    let (mut tried, mut read) = (0, 0);
    // The two neighbours (bad blocks in a pattern, every other or every fourth block, leave
    // them readable) and two far blocks at unrelated distances (a bad patch leaves those).
    for d in [n.saturating_sub(1), 1, n / 2, n / 3] {
        let probe = block.saturating_add(d).checked_rem(n).unwrap_or(0);
        // Not the failing block, nor one the table already knows to be bad or moved.
        if probe == block || remaps::find(e.table.get(&meta.table_w).entries.as_slice(), probe).is_some() {
            continue;
        }
        tried += 1;
        let sector = probe * e.config.bs_sectors;
        if e.config.main.rw_sync(sector, &mut meta.probe.as_mut_slice()[..bs], IoKind::Read).is_ok() {
            read += 1;
            break;
        }
    }
    if tried == 0 || read > 0 {
        return false;
    }
    e.main_lost.store(true, Ordering::Relaxed);
    e.event_pending.store(true, Ordering::Relaxed);
    pr_err!(
        "{}: main device lost: {} probe reads failed after failures no retry cured; relocation stopped, blocks on the spare still served (reload the table once the disk is back or replaced)\n",
        e.dev_name(),
        tried
    );
    true
}

fn retry_read(e: &Engine, meta: &mut WorkerState, batch: &mut Batch, bio: &mut HeldBio<PerBio>, pb: &PerBio) -> BlkStatus {
    let bs = e.config.line.block_size as usize;
    let mut status = BlkStatus::OK;
    for i in 0..u64::from(pb.blocks) {
        let block = pb.first + i;
        let mut tries = 0;
        let mut ok = false;
        while tries < e.config.line.read_retries && !ok && !e.main_lost.load(Ordering::Relaxed) {
            tries += 1;
            ok = e.config.main.rw_sync(block * e.config.bs_sectors, &mut meta.data.as_mut_slice()[..bs], IoKind::Read).is_ok();
        }
        if ok {
            meta.main_fail_run = 0;
            if tries == 1 {
                e.figures.retried_ok.fetch_add(1, Ordering::Relaxed);
            }
        } else if main_failure(e, meta, block) {
            // Lost: the error goes to the caller; nothing is listed.
            status = pb.error;
            break;
        }
        // In a multi-block read that failed, a block that reads at once may be innocent.
        let weak = ok && (pb.blocks == 1 || tries > 1);
        if !ok || weak {
            health::note_error(meta, block);
        }
        if ok {
            bio.copy_in(&pb.iter, (i as usize * bs) as u32, &meta.data.as_slice()[..bs]);
            // Readable only after retries: a weak block. Move it while it still reads,
            // after this batch (`migrate`); if there is no room to note it, a later read
            // or the scan finds it again.
            if weak && e.config.line.proactive {
                let _ = batch.weak.push(Weak { block, tries, last_ms: 0 }, GFP_KERNEL);
            }
            continue;
        }
        // Unreadable: the error goes to the caller (no data is invented) and the block
        // becomes pending, so its next write is relocated. A block remapped meanwhile
        // stays remapped.
        status = pb.error;
        let known = remaps::find(e.table.get(&meta.table_w).entries.as_slice(), block).is_some()
            || batch.remapped(block).is_some();
        if !known && batch.pending.push(Entry::pending(block), GFP_KERNEL).is_err() {
            break;
        }
        if !known && ratelimit() {
            pr_warn!("{}: block {} unreadable after {} tries: listed as bad until written\n", e.dev_name(), block, tries);
        }
    }
    status
}
