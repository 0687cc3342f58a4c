// SPDX-License-Identifier: GPL-2.0

//! The background scan: reads the main device at a set rate, skipping remapped blocks,
//! with its own I/O (not the user's bios). A block that does not read becomes pending; a
//! block that reads only after retries, or far slower than the device usually answers, is
//! weak and is relocated while it still reads (proactive relocation, as disk firmware does).
//!
//! It runs as delayed work on the target's ordered workqueue (so never alongside the
//! relocation worker), is cancelled before suspend and in the destructor, and restarts on
//! resume.

use crate::dm::{now_ns, IoKind};
use crate::logic::remaps::{self, Entry, Route, PENDING};
use crate::relocate::Batch;
use crate::target::{stat, Engine, Meta, State};
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// Bytes the scan reads at once.
const CHUNK_BYTES: usize = 256 * 1024;
/// A block read slower than this (and than 8 times the usual time) is weak.
const SLOW_FLOOR_NS: u64 = 50_000_000;

/// Size of the scan buffer for a block size.
pub(crate) fn buf_bytes(block_size: u32) -> usize {
    let bs = block_size as usize;
    (CHUNK_BYTES / bs).max(1) * bs
}

/// Schedules the next step (`now`: at once), if the scan is on and may run.
pub(crate) fn start(e: &Engine, now: bool) {
    if e.scan_enabled.load(Ordering::Relaxed) && !e.maintenance.load(Ordering::Relaxed) && e.state() != State::Degraded {
        let ms = if now { 0 } else { e.scan_interval.load(Ordering::Relaxed).saturating_mul(1000) };
        e.worker.schedule_scan(ms);
    }
}

fn slow(ewma: u64, ns: u64, blocks: u64) -> bool {
    ns > (8 * ewma * blocks).max(SLOW_FLOOR_NS)
}

/// One step: `scan_rate x scan_interval` blocks from where the last step stopped.
pub(crate) fn step(e: &Engine) {
    if !e.scan_enabled.load(Ordering::Relaxed) || e.maintenance.load(Ordering::Relaxed) || e.state() == State::Degraded {
        return;
    }
    let Ok(mut batch) = Batch::new() else {
        start(e, false);
        return;
    };
    let mut meta = e.meta.lock();
    let bs = u64::from(e.line.block_size);
    let chunk = (meta.scan_buf.len() as u64 / bs).max(1);
    let budget = u64::from(e.scan_rate.load(Ordering::Relaxed))
        .saturating_mul(u64::from(e.scan_interval.load(Ordering::Relaxed)))
        .clamp(1, e.main_blocks);
    let mut done = 0;
    while done < budget {
        if meta.scan_pos >= e.main_blocks {
            meta.scan_pos = 0;
            e.scan_passes.fetch_add(1, Ordering::Relaxed);
            e.scanned.store(0, Ordering::Relaxed);
        }
        let pos = meta.scan_pos;
        let n = chunk.min(budget - done).min(e.main_blocks - pos);
        let clean = remaps::route(e.table.get(&meta.table_w).entries.as_slice(), pos, n) == Route::Main { blocks: n };
        let whole_ok = clean && {
            let t0 = now_ns();
            let buf = &mut meta.scan_buf.as_mut_slice()[..(n * bs) as usize];
            let ok = e.main.rw_sync(pos * e.bs_sectors, buf, IoKind::Read).is_ok();
            let ns = now_ns().saturating_sub(t0);
            let fast = ok && !slow(meta.scan_ewma_ns, ns, n);
            if fast {
                let per = ns / n;
                meta.scan_ewma_ns = if meta.scan_ewma_ns == 0 { per } else { (meta.scan_ewma_ns * 7 + per) / 8 };
            }
            if fast {
                meta.suspects.clear(pos, n);
            }
            fast
        };
        if !whole_ok {
            for b in pos..pos + n {
                block(e, &mut meta, &mut batch, b);
            }
        }
        meta.scan_pos = pos + n;
        done += n;
        e.scanned.fetch_add(n, Ordering::Relaxed);
    }
    e.commit_publish(&mut meta, batch);
    crate::control::check_alerts(e, &mut meta);
    drop(meta);
    start(e, false);
}

/// Whether the main device reads a block half of it away from `b` at its usual speed now.
///
/// Slowness is a property of a block only if the rest of the device is fast at the same
/// moment: under a heavy load (or on a stalled machine) every read is slow, and relocating
/// on that would spend the spare on healthy blocks. A reference read that fails or is slow
/// says nothing about `b`, so `b` is not called weak this pass (the next pass looks again).
fn device_fast(e: &Engine, meta: &mut Meta, b: u64) -> bool {
    let r = (b + e.main_blocks / 2) % e.main_blocks;
    if r == b {
        return true; // a one-block device: nothing to compare with
    }
    let bs = e.line.block_size as usize;
    let t0 = now_ns();
    // Into the scan buffer: `meta.data` holds `b`'s data, which a relocation writes out.
    let ok = e.main.rw_sync(r * e.bs_sectors, &mut meta.scan_buf.as_mut_slice()[..bs], IoKind::Read).is_ok();
    ok && !slow(meta.scan_ewma_ns, now_ns().saturating_sub(t0), 1)
}

/// Scans one block: unreadable -> pending; weak -> relocated (if enabled).
fn block(e: &Engine, meta: &mut Meta, batch: &mut Batch, b: u64) {
    if remaps::find(e.table.get(&meta.table_w).entries.as_slice(), b).is_some() {
        return; // remapped or already pending
    }
    let bs = e.line.block_size as usize;
    let mut tries = 0;
    let mut ok = false;
    let mut ns = 0;
    while tries <= e.line.read_retries && !ok {
        tries += 1;
        let t0 = now_ns();
        ok = e.main.rw_sync(b * e.bs_sectors, &mut meta.data.as_mut_slice()[..bs], IoKind::Read).is_ok();
        ns = now_ns().saturating_sub(t0);
    }
    if ok && tries == 1 && slow(meta.scan_ewma_ns, ns, 1) {
        // One slow read may be the machine (a stall, a busy CPU), not the disk: the block is
        // weak only if a second read is slow too.
        let t0 = now_ns();
        ok = e.main.rw_sync(b * e.bs_sectors, &mut meta.data.as_mut_slice()[..bs], IoKind::Read).is_ok();
        ns = now_ns().saturating_sub(t0);
    }
    if !ok {
        e.stats.add(stat::MEDIA_ERRORS, 1);
        e.note_error(meta, b);
        let _ = batch.pending.push(Entry { main: b, spare: PENDING }, GFP_KERNEL);
        return;
    }
    if tries == 1 {
        if !slow(meta.scan_ewma_ns, ns, 1) {
            meta.suspects.clear(b, 1);
            return;
        }
        // Slow on two reads in a row: weak only if the rest of the device is fast meanwhile
        // and the block was slow on its previous visit too (a pass earlier).
        if !device_fast(e, meta, b) || !meta.suspects.slow_again(b) {
            return;
        }
    }
    if tries > 1 {
        e.stats.add(stat::MEDIA_ERRORS, 1);
    }
    e.note_error(meta, b);
    if e.line.proactive {
        let before = batch.remaps.len();
        let Meta { log, table_w, data, .. } = &mut *meta;
        if e.place(log, table_w, batch, b, &mut data.as_mut_slice()[..bs]) && batch.remaps.len() > before {
            e.proactive_relocations.fetch_add(1, Ordering::Relaxed);
            // Rare (bounded by the spare's size), and the operator wants to know which block.
            if tries > 1 {
                pr_info!("weak block {} relocated: it read only at try {}\n", b, tries);
            } else {
                pr_info!("weak block {} relocated: slow on two scan passes (last read {} ms)\n", b, ns / 1_000_000);
            }
        }
    }
}
