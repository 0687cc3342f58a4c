// SPDX-License-Identifier: GPL-2.0

//! Actions layer: [`migrate`], the one way a block that still reads reaches the pool (a weak
//! block found by a read retry or the scan, or one the `remap` message names). It quiesces
//! the block (writes to it are parked, writes already sent are waited for), copies, commits,
//! publishes and then sends the parked writes to the pool block. See docs/design.md.

#![forbid(unsafe_code)]

use crate::commit::{self, Batch};
use crate::dm::{now_ns, IoKind};
use crate::engine::{Engine, Stage, Stat, State, WorkerState, NOT_MIGRATING};
use crate::logic::remaps;
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// Moves main block `block`, which still reads, to a new pool block: the one way a
/// readable block's data reaches the pool (weak blocks from read retries and the scan,
/// and the `remap` message). Call with `meta` held and no batch open.
///
/// While it runs, map parks writes to the block; it first waits for the writes already
/// sent to the main device, so the copy has the latest data; after the commit and the
/// publish it sends the parked writes to the pool block (or back to the main device if
/// the move failed). Returns the pool block.
pub(crate) fn migrate(e: &Engine, meta: &mut WorkerState, block: u64) -> Result<u64> {
    // Once presuspend has run, no move starts (`quiesce`): this table may be on its way out,
    // and a new one may already read the log.
    if e.suspended.load(Ordering::SeqCst) {
        return Err(EBUSY);
    }
    if remaps::find(e.table.get(&meta.table_w).entries.as_slice(), block).is_some_and(|en| !en.is_pending()) {
        return Err(EEXIST);
    }
    if e.state() != State::Operational {
        return Err(if e.state() == State::SpareFull { ENOSPC } else { EIO });
    }
    // Nothing to copy from, and no pool block for it (`relocate::main_failure`).
    if e.main_lost.load(Ordering::Relaxed) {
        return Err(EIO);
    }
    let mut batch = Batch::new()?;
    e.migrating.store(block, Ordering::SeqCst);
    // Every write that did not see the mark entered the gate before this wait.
    e.gate.wait();
    let r = copy(e, meta, &mut batch, block);
    if r.is_ok() {
        let _ = commit::commit_publish(e, meta, batch);
    }
    // Commit or not, the table is final for this block now.
    let r = r.and_then(|pool| {
        let published = remaps::find(e.table.get(&meta.table_w).entries.as_slice(), block);
        match published {
            Some(en) if en.pool() == Some(pool) => Ok(pool),
            _ => Err(EIO),
        }
    });
    e.migrating.store(NOT_MIGRATING, Ordering::SeqCst);
    // Writes that saw the mark park inside the gate: after this wait all are parked.
    e.gate.wait();
    release_parked(e);
    if r.is_ok() {
        e.figures.proactive_relocations.fetch_add(1, Ordering::Relaxed);
    }
    r
}

/// For presuspend, after the scan is stopped and `suspended` set: waits for a move in progress
/// (each runs under the metadata lock), so that none runs or starts once this returns. The
/// old table of a reload then writes the spare only for the bios still in flight, which dm
/// waits for before the new table's first resume reads the log.
pub(crate) fn quiesce(e: &Engine) {
    drop(e.meta.lock());
}

/// The copy of `migrate`: reads the block (with retries) and writes it to a new pool block.
fn copy(e: &Engine, meta: &mut WorkerState, batch: &mut Batch, block: u64) -> Result<u64> {
    let bs = e.config.line.block_size as usize;
    let mut ok = false;
    for _ in 0..=e.config.line.read_retries {
        if e.config.main.rw_sync(block * e.config.bs_sectors, &mut meta.data.as_mut_slice()[..bs], IoKind::Read).is_ok() {
            ok = true;
            break;
        }
    }
    if !ok {
        return Err(EIO);
    }
    let WorkerState { log, table_w, data, .. } = &mut *meta;
    if !commit::place(e, log, table_w, batch, block, &mut data.as_mut_slice()[..bs], false) {
        return Err(if e.state() == State::SpareFull { ENOSPC } else { EIO });
    }
    batch.remaps.last().map(|r| r.spare).ok_or(EIO)
}

/// Sends the writes parked during a migration to where their block lives now.
fn release_parked(e: &Engine) {
    while let Some(mut p) = e.parked.pop() {
        let pb = p.per_bio();
        let home = e.table.read(|t| remaps::find(t.entries.as_slice(), pb.first)).and_then(|en| en.pool());
        let offset = pb.sector - pb.first * e.config.bs_sectors;
        match home {
            Some(pool) => {
                pb.stage = Stage::Spare;
                e.stats.add(Stat::SpareIos, 1);
                let at = e.config.geo.pool_sector(pool) + offset;
                p.submit(&e.config.spare, at);
            }
            None if e.doubt.clip(pb.first, 1).is_none() => {
                // Its commit failed and the log may hold the move: neither device is sure to
                // be the block's home, so the write fails (dropping a parked bio does).
                drop(p);
            }
            None => {
                // The move failed: the main device, through the gate like any write.
                pb.stage = Stage::Main;
                pb.gate = Some(e.gate.enter());
                pb.start_ns = now_ns();
                let at = pb.sector;
                p.submit(&e.config.main, at);
            }
        }
    }
}
