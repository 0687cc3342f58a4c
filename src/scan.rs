// SPDX-License-Identifier: GPL-2.0

//! Actions layer: the background scan (the scrub). It reads the main device at a rate
//! between a floor and a ceiling (`logic::scrub`, like md's speed limits), skipping
//! remapped blocks, with its own I/O (not the user's bios). A block that does not read
//! becomes pending; a block that reads only after retries, or far slower than the device
//! usually answers, is weak and is relocated while it still reads (proactive relocation, as
//! disk firmware does).
//!
//! It runs as delayed work on the target's ordered workqueue (so never alongside the
//! relocation worker), is cancelled before suspend and in the destructor, and restarts on
//! resume. It reads without holding the metadata lock (its state is its own, in
//! `engine::ScanState`) and takes that lock only to record what it found and move weak
//! blocks.

#![forbid(unsafe_code)]

use crate::commit::{self, Batch, Weak};
use crate::dm::{now_ns, ratelimit, IoKind};
use crate::engine::{CkptState, Engine, ScanState, Stat, State, WorkerState};
use crate::health;
use crate::logic::format::{ckpt_encode, Checkpoint, META_BLOCK, META_SECTORS};
use crate::logic::loader;
use crate::logic::remaps::{self, Entry, Route};
use crate::logic::scrub::Pacer;
use crate::migrate;
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// A block read slower than this (and than 8 times the usual time) is weak.
const SLOW_FLOOR_NS: u64 = 50_000_000;

/// Schedules the next step in `ms`, if the scan is on and may run.
fn schedule(e: &Engine, ms: u32) {
    let _g = e.sched.lock();
    // Under `sched`: presuspend sets `suspended` under it before cancelling, so no step is
    // scheduled after that cancel (a message may arrive at a suspended table).
    if e.suspended.load(Ordering::Relaxed) {
        return;
    }
    let t = &e.tunables;
    if t.scan_enabled.load(Ordering::Relaxed)
        && !t.maintenance.load(Ordering::Relaxed)
        && e.state() != State::Degraded
        && !e.main_lost.load(Ordering::Relaxed)
    {
        e.worker.schedule_scan(ms);
    }
}

/// Schedules the next step (`now`: at once, else after `scan_interval`), if the scan is on
/// and may run.
pub(crate) fn start(e: &Engine, now: bool) {
    let ms = if now { 0 } else { e.tunables.scan_interval.load(Ordering::Relaxed).saturating_mul(1000) };
    schedule(e, ms);
}

/// Stops the scan for a suspend: no step runs after this returns, and none is scheduled
/// until [`unsuspend`]. Then checkpoints the position, so a reload, a remove/create or a
/// reboot goes on from here.
pub(crate) fn suspend(e: &Engine) {
    {
        let _g = e.sched.lock();
        e.suspended.store(true, Ordering::Relaxed);
    }
    e.worker.cancel_scan();
    let mut st = e.scan.lock();
    checkpoint(e, &mut st);
}

/// Longest time between checkpoints while the scan runs (docs/format.md: at least every
/// minute).
const CKPT_NS: u64 = 30_000_000_000;

/// Reads the scrub checkpoint (`logic::loader::checkpoint`) at the first resume, after the
/// log (a previous table on this spare has written its last one at its suspend), and puts
/// the scan there. A spare without checkpoint slots, or without a valid one, starts at 0.
pub(crate) fn restore(e: &Engine) {
    let sb = e.meta.lock().log.sb;
    let (Some(s0), Some(s1)) = (sb.checkpoint_sector(0), sb.checkpoint_sector(1)) else { return };
    let mut guard = e.scan.lock();
    let st = &mut *guard;
    // The slots lie inside the spare: the loader checked the record area's bounds.
    let slot = |sector: u64, buf: &mut [u8]| e.config.spare.rw_sync(sector, buf, IoKind::Read).is_ok();
    let mut found = None;
    let ok = {
        let buf = st.buf.as_mut_slice();
        buf.len() >= 2 * META_BLOCK && {
            let (a, b) = buf.split_at_mut(META_BLOCK);
            let (a, b) = (&mut a[..META_BLOCK], &mut b[..META_BLOCK]);
            let ok = slot(s0, a) && slot(s1, b);
            if let (true, Ok(a), Ok(b)) = (ok, <&[u8; META_BLOCK]>::try_from(&*a), <&[u8; META_BLOCK]>::try_from(&*b)) {
                found = loader::checkpoint(&sb, a, b, e.config.main_blocks);
            }
            ok
        }
    };
    if !ok {
        pr_warn!("{}: cannot read the scrub checkpoint: the scrub starts at block 0\n", e.dev_name());
    }
    let (c, durable) = found.unwrap_or((Checkpoint::default(), 1));
    st.pos = c.position;
    e.figures.scan_pos.store(c.position, Ordering::Relaxed);
    e.figures.scanned.store(c.position, Ordering::Relaxed);
    e.figures.scan_passes.store(c.passes, Ordering::Relaxed);
    // With no valid slot, the first write goes to slot 0 (`slot` is the durable one).
    st.ckpt = Some(CkptState { sector: s0, uuid: sb.uuid, seq: c.seq, slot: durable, written_ns: now_ns() });
}

/// Writes the scan position and passes to the checkpoint slot not holding the durable
/// version, with FUA. A failed write leaves the durable one (the next try goes to the same
/// slot); the scrub only restarts from an older position.
fn checkpoint(e: &Engine, st: &mut ScanState) {
    let Some(mut c) = st.ckpt else { return };
    let Some(seq) = c.seq.checked_add(1) else { return };
    let rec = Checkpoint { seq, position: st.pos, passes: e.figures.scan_passes.load(Ordering::Relaxed) };
    let slot = 1 - (c.slot & 1);
    let Some(b) = st.buf.as_mut_slice().get_mut(..META_BLOCK).and_then(|b| <&mut [u8; META_BLOCK]>::try_from(b).ok()) else {
        return;
    };
    ckpt_encode(b, &c.uuid, &rec);
    let sector = c.sector.saturating_add(u64::from(slot) * META_SECTORS);
    c.written_ns = now_ns();
    if e.config.spare.rw_sync(sector, b, IoKind::WriteFua).is_ok() {
        c.seq = seq;
        c.slot = slot;
    }
    st.ckpt = Some(c);
}

/// Lets the scan run again (resume, or a cancelled suspend) and schedules it.
pub(crate) fn unsuspend(e: &Engine) {
    {
        let _g = e.sched.lock();
        e.suspended.store(false, Ordering::Relaxed);
    }
    start(e, false);
}

fn slow(ewma: u64, ns: u64, blocks: u64) -> bool {
    ns > (8 * ewma * blocks).max(SLOW_FLOOR_NS)
}

/// Longest a step reads before it yields (checked between chunks and blocks); the next step
/// goes on from there at once. The relocation worker shares the ordered workqueue, so this
/// bounds how long a failing write waits behind the scan.
const STEP_NS: u64 = 500_000_000;

/// Whether the scan must stop now (between chunks and blocks): switched off, maintenance,
/// degraded, or suspending.
fn stopped(e: &Engine) -> bool {
    !e.tunables.scan_enabled.load(Ordering::Relaxed)
        || e.tunables.maintenance.load(Ordering::Relaxed)
        || e.state() == State::Degraded
        || e.main_lost.load(Ordering::Relaxed)
        || e.suspended.load(Ordering::Relaxed)
}

/// Foreground bios the target has mapped (reads and writes): the limiter's sign of load.
/// The scan's own reads do not pass through the target, so they do not count.
fn foreground(e: &Engine) -> u64 {
    e.stats.sum(Stat::Reads).wrapping_add(e.stats.sum(Stat::Writes))
}

/// What ends a step, and so when the next one runs.
enum Next {
    /// The deadline, or stopped: at once (if it may run at all).
    Now,
    /// Ahead of its rate: after this many ms.
    Wait(u32),
    /// A pass ended: after `scan_interval`.
    Rest,
}

/// One step: reads from where the last step stopped, at the rate the limiter allows
/// (`logic::scrub`: the ceiling while idle, the floor under foreground I/O), for about
/// `STEP_NS` at most. The reads happen outside the metadata lock, which is taken only to
/// record what they found; `presuspend` waits for at most one chunk's (or block's) reads.
pub(crate) fn step(e: &Engine) {
    if stopped(e) {
        return;
    }
    let Ok(mut batch) = Batch::new() else {
        start(e, false);
        return;
    };
    let mut guard = e.scan.lock();
    let st = &mut *guard;
    let bs = u64::from(e.config.line.block_size);
    let chunk = (st.buf.len() as u64 / bs).max(1);
    let main_blocks = e.config.main_blocks;
    e.figures.scan_resting.store(false, Ordering::Relaxed);
    if st.pos >= main_blocks {
        // A new pass (the last one ended at the end of the device).
        st.pos = 0;
        e.figures.scanned.store(0, Ordering::Relaxed);
    }
    let deadline = now_ns().saturating_add(STEP_NS);
    let mut next = Next::Now;
    loop {
        let now = now_ns();
        if stopped(e) || now >= deadline {
            break;
        }
        let t = &e.tunables;
        let rate = st.pacer.rate(now, foreground(e), t.speed_min.load(Ordering::Relaxed), t.speed_max.load(Ordering::Relaxed));
        e.figures.scan_busy.store(st.pacer.busy(now), Ordering::Relaxed);
        let wait = st.pacer.wait_ns(now);
        if wait > 0 {
            next = Next::Wait(u32::try_from(wait.div_ceil(1_000_000)).unwrap_or(u32::MAX));
            break;
        }
        let pos = st.pos;
        // At most one burst at once, so that the floor is kept even chunk by chunk.
        let n = chunk.min(Pacer::burst_bytes(rate, bs).checked_div(bs).unwrap_or(1)).max(1).min(main_blocks - pos);
        let clean = e.table.read(|t| remaps::route(t.entries.as_slice(), pos, n)) == Route::Main { blocks: n };
        let whole_ok = clean && {
            let t0 = now_ns();
            let buf = &mut st.buf.as_mut_slice()[..(n * bs) as usize];
            let ok = e.config.main.rw_sync(pos * e.config.bs_sectors, buf, IoKind::Read).is_ok();
            let ns = now_ns().saturating_sub(t0);
            let fast = ok && !slow(st.ewma_ns, ns, n);
            if fast {
                let per = ns / n;
                st.ewma_ns = if st.ewma_ns == 0 { per } else { (st.ewma_ns * 7 + per) / 8 };
                st.suspects.clear(pos, n);
            }
            fast
        };
        let mut b = pos;
        if !whole_ok {
            while b < pos + n && !stopped(e) && now_ns() < deadline {
                block(e, st, &mut batch, b);
                b += 1;
            }
        } else {
            b = pos + n;
        }
        st.pos = b;
        let bytes = (b - pos) * bs;
        let t1 = now_ns();
        st.pacer.charge(t1, bytes, rate);
        st.meter.add(t1, bytes);
        e.figures.scanned.fetch_add(b - pos, Ordering::Relaxed);
        e.figures.scan_pos.store(b, Ordering::Relaxed);
        e.figures.scan_rate_kib.store(st.meter.rate / 1024, Ordering::Relaxed);
        if b >= main_blocks {
            e.figures.scan_passes.fetch_add(1, Ordering::Relaxed);
            next = Next::Rest;
            break;
        }
    }
    if matches!(next, Next::Rest) || st.ckpt.is_some_and(|c| now_ns().saturating_sub(c.written_ns) >= CKPT_NS) {
        checkpoint(e, st);
    }
    if !matches!(next, Next::Wait(_)) && (stopped(e) || matches!(next, Next::Rest)) {
        // Not reading until the next start: no rate to show, none to carry over.
        st.meter.reset();
        e.figures.scan_rate_kib.store(0, Ordering::Relaxed);
        e.figures.scan_resting.store(matches!(next, Next::Rest), Ordering::Relaxed);
    }
    drop(guard);
    let mut meta = e.meta.lock();
    record(e, &mut meta, &mut batch);
    let weak = core::mem::replace(&mut batch.weak, KVVec::new());
    commit::commit_publish(e, &mut meta, batch);
    // Tables the worker replaced and no reader holds any more (a storm's last ones).
    meta.table_w.reap();
    // Weak blocks move one by one, each quiesced (`migrate::migrate`).
    for w in weak.iter().filter(|_| e.config.line.proactive) {
        if migrate::migrate(e, &mut meta, w.block).is_ok() {
            // Rare (bounded by the spare's size), and the operator wants to know which block.
            if w.tries > 1 {
                pr_info!("{}: weak block {} relocated: it read only at try {}\n", e.dev_name(), w.block, w.tries);
            } else {
                pr_info!("{}: weak block {} relocated: slow on two scan passes (last read {} ms)\n", e.dev_name(), w.block, w.last_ms);
            }
        }
    }
    health::check_alerts(e, &mut meta);
    drop(meta);
    match next {
        Next::Now => schedule(e, 0),
        Next::Wait(ms) => schedule(e, ms),
        Next::Rest => start(e, false),
    }
}

/// Under the metadata lock: counts what the step found, and drops findings about blocks that
/// were remapped (or marked pending) while it read, so a pending mark never hides a remap.
fn record(e: &Engine, meta: &mut WorkerState, batch: &mut Batch) {
    let table = e.table.get(&meta.table_w).entries.as_slice();
    let mut pending = KVVec::new();
    // Without room the marks are dropped: they are hints, and the next pass finds them again.
    if pending.reserve(batch.pending.len(), GFP_KERNEL).is_ok() {
        for p in batch.pending.iter().filter(|p| remaps::find(table, p.main).is_none()) {
            let _ = pending.push(*p, GFP_KERNEL);
        }
    }
    batch.pending = pending;
    for p in batch.pending.iter() {
        if ratelimit() {
            pr_warn!("{}: block {} unreadable (found by the scrub): listed as bad until written\n", e.dev_name(), { p.main });
        }
        e.stats.add(Stat::MediaErrors, 1);
        meta.hotspots.add(p.main);
        meta.recent_errors.add(now_ns() / 1_000_000_000, 1);
    }
    for w in batch.weak.iter() {
        if w.tries > 1 {
            e.stats.add(Stat::MediaErrors, 1);
        }
        meta.hotspots.add(w.block);
        meta.recent_errors.add(now_ns() / 1_000_000_000, 1);
    }
}
/// Whether the main device reads a block half of it away from `b` at its usual speed now.
///
/// Slowness is a property of a block only if the rest of the device is fast at the same
/// moment: under a heavy load (or on a stalled machine) every read is slow, and relocating
/// on that would spend the spare on healthy blocks. A reference read that fails or is slow
/// says nothing about `b`, so `b` is not called weak this pass (the next pass looks again).
fn device_fast(e: &Engine, st: &mut ScanState, b: u64) -> bool {
    let r = (b + e.config.main_blocks / 2) % e.config.main_blocks;
    if r == b {
        return true; // a one-block device: nothing to compare with
    }
    let bs = e.config.line.block_size as usize;
    let t0 = now_ns();
    let ok = e.config.main.rw_sync(r * e.config.bs_sectors, &mut st.buf.as_mut_slice()[..bs], IoKind::Read).is_ok();
    ok && !slow(st.ewma_ns, now_ns().saturating_sub(t0), 1)
}

/// Scans one block: unreadable -> pending; weak -> to be moved after the step. Reads only;
/// `record` counts the findings under the metadata lock.
fn block(e: &Engine, st: &mut ScanState, batch: &mut Batch, b: u64) {
    if e.table.read(|t| remaps::find(t.entries.as_slice(), b).is_some()) {
        return; // remapped or already pending
    }
    let mut tries = 0;
    let mut ok = false;
    let mut ns = 0;
    while tries <= e.config.line.read_retries && !ok {
        tries += 1;
        let t0 = now_ns();
        ok = e.config.main.rw_sync(b * e.config.bs_sectors, st.one.as_mut_slice(), IoKind::Read).is_ok();
        ns = now_ns().saturating_sub(t0);
    }
    if ok && tries == 1 && slow(st.ewma_ns, ns, 1) {
        // One slow read may be the machine (a stall, a busy CPU), not the disk: the block is
        // weak only if a second read is slow too.
        let t0 = now_ns();
        ok = e.config.main.rw_sync(b * e.config.bs_sectors, st.one.as_mut_slice(), IoKind::Read).is_ok();
        ns = now_ns().saturating_sub(t0);
    }
    if !ok {
        let _ = batch.pending.push(Entry::pending(b), GFP_KERNEL);
        return;
    }
    if tries == 1 {
        if !slow(st.ewma_ns, ns, 1) {
            st.suspects.clear(b, 1);
            return;
        }
        // Slow on two reads in a row: weak only if the rest of the device is fast meanwhile
        // and the block was slow on its previous visit too (a pass earlier).
        if !device_fast(e, st, b) || !st.suspects.slow_again(b) {
            return;
        }
    }
    // Counted (`record`) even when it is not to be moved; moved only if enabled. If there is
    // no room to note it, the next pass finds it again.
    let _ = batch.weak.push(Weak { block: b, tries, last_ms: ns / 1_000_000 }, GFP_KERNEL);
}
