// SPDX-License-Identifier: GPL-2.0

//! The dm adapter (top layer): the `remap` target's table line, routing of bios, completion
//! handling, status, and the dispatch of messages and of the worker's work to the actions
//! below it (docs/design.md).
//!
//! I/O that touches no remapped block goes to the main device unchanged (no split). I/O
//! touching remapped blocks is split at block boundaries and the remapped parts go to their
//! pool blocks on the spare. A write that fails on the main device with a media error, and a
//! write to a *pending* block (one whose read failed), is relocated by the worker
//! (`relocate.rs`), which acknowledges it only once the data and the remap are durable.

#![forbid(unsafe_code)]

use crate::commit;
use crate::dm::{
    self, now_ns, Args, Bio, BioQueue, BlkStatus, CtrContext, CtrError, DeviceIterator, Dev, EndIo, Limits, MapResult,
    Op, StatusType, StatusWriter, Target, WorkHandler, Worker, WriteGate,
};
use crate::engine::{
    Alerts, BadList, Config, Counters, Engine, Figures, InDoubt, PerBio, ScanState, Stage, Stat, State, Tunables, WorkerState,
    LATENCY_SAMPLE, NOT_MIGRATING,
};
use crate::health;
use crate::logic::{
    self,
    args::TableLine,
    cache::Answered,
    health::{Hotspots, RecentCount},
    remaps::Route,
};
use crate::message;
use crate::metadata;
use crate::migrate;
use crate::relocate;
use crate::scan;
use crate::table::{Published, Table};
use core::ffi::CStr;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use kernel::prelude::*;
use kernel::sync::Arc;

/// Longest read or write, in blocks, that map lets through in one piece; bounds the worker's
/// work for one bio.
pub(crate) const MAX_BIO_BLOCKS: u64 = 1024;

/// The target object device-mapper holds.
pub(crate) struct Remap {
    e: Arc<Engine>,
}

fn block_size_fits(bs: u32, dev: &Dev) -> bool {
    let lbs = dev.logical_block_size();
    lbs != 0 && bs % lbs == 0
}

impl Remap {
    /// The blocks `[first, end)` a bio of `size` bytes at target sector `sector` touches. No
    /// overflow: the sector is inside the target (dm checks), far below 2^63, and a bio is at
    /// most 4 GiB; `end > first` as the bio is not empty. Shifts, as block sizes are powers of
    /// two: no division-by-zero branch on the I/O path.
    #[inline]
    fn block_range(&self, sector: u64, size: u64) -> (u64, u64) {
        let c = &self.e.config;
        let first = sector >> c.bs_shift;
        let end = sector.wrapping_add(size.div_ceil(512)).wrapping_add(c.bs_sectors.wrapping_sub(1)) >> c.bs_shift;
        (first, end)
    }

    /// `map` for every bio the fast path does not take: flushes, discards, bios over
    /// several pieces, remapped or pending blocks, the block being moved.
    #[inline(never)]
    fn map_general(&self, mut bio: Bio<'_, PerBio>) -> MapResult {
        let e = &*self.e;
        let size = u64::from(bio.size());
        if size == 0 {
            bio.set_per_bio(PerBio { stage: Stage::Flush, ..PerBio::default() });
            if bio.target_bio_nr() == 1 {
                e.stats.add(Stat::SpareIos, 1);
                return bio.remap(&e.config.spare, 0);
            }
            return bio.remap(&e.config.main, 0);
        }
        let op = bio.op();
        // Anything that may change data on the main device enters the write gate first, then
        // reads the migration mark, then the table: a write the relocation's first wait does
        // not cover entered after the mark was set, so it sees the mark (and parks) or, if it
        // comes after the mark was cleared, sees the table the relocation published. Reading
        // the table before entering would let a write route by the old table, sleep through a
        // whole migration, and land on the main device after the block moved.
        let (gate, m) = if op == Op::Read {
            (None, NOT_MIGRATING)
        } else {
            let t = e.gate.enter();
            (Some(t), e.migrating.load(Ordering::SeqCst))
        };
        // This CPU's count of its kind, for the latency sample; discards and write-zeroes
        // (rare, uncounted) are timed every time.
        let nth = match op {
            Op::Read => e.stats.add_return(Stat::Reads, 1),
            Op::Write => e.stats.add_return(Stat::Writes, 1),
            _ => 1,
        };
        let sector = bio.target_sector();
        let bs_sectors = e.config.bs_sectors;
        let (first, end) = self.block_range(sector, size);
        // Reads and writes may come back to the worker block by block (a failed write is
        // rewritten or relocated per block), which bounds them; a discard or write-zeroes
        // never does, so it goes out whole where it touches no remapped block.
        let cap = if matches!(op, Op::Read | Op::Write) { MAX_BIO_BLOCKS } else { u64::MAX };
        let count = (end - first).min(cap);
        // A device with nothing remapped or pending (the usual case) skips the table.
        let (route, answered) =
            if e.table.is_empty() { (Route::Main { blocks: count }, Answered::Shortcut) } else { e.table.read(|t| t.route(first, count)) };
        match answered {
            Answered::Hit => e.stats.add(Stat::CacheHits, 1),
            Answered::Miss => e.stats.add(Stat::CacheMisses, 1),
            Answered::Shortcut | Answered::Table => {}
        }
        let (mut blocks, mut stage) = match route {
            Route::Main { blocks } => (blocks, Stage::Main),
            Route::Spare { blocks, .. } => (blocks, Stage::Spare),
            // A write to a pending block goes to a new pool block while the pool can take
            // one; otherwise to the main device, which may well accept it (and if it fails,
            // end_io holds it as any failed write). A read still tries the main device.
            Route::Pending { blocks } if op == Op::Write && e.state() == State::Operational => (blocks, Stage::PendingWrite),
            Route::Pending { blocks } => (blocks, Stage::Main),
        };
        if op != Op::Read && stage != Stage::Spare && e.doubt.any() {
            // After a failed commit: a block whose remap the log may or may not hold takes no
            // write, on either device, until a reload (docs/design.md, "A commit that fails").
            match e.doubt.clip(first, blocks) {
                Some(n) => blocks = n,
                None => {
                    if let Some(t) = gate {
                        e.gate.leave(t);
                    }
                    return bio.kill();
                }
            }
        }
        let gate = match gate {
            Some(t) if stage != Stage::Main => {
                // Not to the main device: nothing for a relocation to wait for.
                e.gate.leave(t);
                None
            }
            Some(t) if m >= first && m - first < blocks => {
                // Reaches the block being relocated: the piece before it goes now; the bio
                // from that block is parked until the block has moved.
                if m > first {
                    blocks = m - first;
                    Some(t)
                } else {
                    // Still inside the gate while parking: the relocation's second wait, after
                    // it clears the mark, covers this push, so it finds the bio parked.
                    stage = Stage::Parked;
                    let fua = bio.is_fua();
                    bio.accept_partial(((first + 1) * bs_sectors - sector) as u32);
                    let iter = bio.save_iter();
                    bio.set_per_bio(PerBio { stage, first, blocks: 1, iter, sector, fua, ..PerBio::default() });
                    let r = bio.park(&e.parked);
                    e.gate.leave(t);
                    return r;
                }
            }
            g => g,
        };
        if blocks < end - first {
            // The piece ends on a block boundary; dm sends the rest as a new bio.
            bio.accept_partial(((first + blocks) * bs_sectors - sector) as u32);
        }
        let iter = bio.save_iter();
        let fua = bio.is_fua();
        let start_ns = if stage == Stage::Main && nth % LATENCY_SAMPLE == 1 { now_ns() } else { 0 };
        bio.set_per_bio(PerBio { stage, first, blocks: blocks as u32, error: BlkStatus::OK, iter, start_ns, sector, gate, fua });
        match route {
            Route::Spare { spare, .. } => {
                e.stats.add(Stat::SpareIos, 1);
                let at = e.config.geo.pool_sector(spare) + (sector - first * bs_sectors);
                bio.remap(&e.config.spare, at)
            }
            _ if stage == Stage::PendingWrite => bio.defer(&e.worker),
            _ => bio.remap(&e.config.main, sector),
        }
    }

    #[cold]
    #[inline(never)]
    fn count_latency(&self, start_ns: u64) {
        let e = &*self.e;
        e.stats.add(Stat::LatencyNs, now_ns().saturating_sub(start_ns));
        e.stats.add(Stat::LatencyCount, 1);
    }

    /// `end_io` of a bio that failed.
    #[cold]
    #[inline(never)]
    fn end_io_failed(&self, mut bio: Bio<'_, PerBio>, stage: Stage, status: BlkStatus) -> EndIo {
        let e = &*self.e;
        let op = bio.op();
        let media = status.is_media_error();
        if stage == Stage::Main {
            if media {
                e.stats.add(Stat::MediaErrors, 1);
            } else {
                e.figures.other_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        match stage {
            Stage::Main if media && matches!(op, Op::Read | Op::Write) && !e.main_lost.load(Ordering::Relaxed) => {
                let pb = bio.per_bio();
                if e.log_error() {
                    // What the driver's error became at this layer: the policy table of
                    // docs/design.md is read from these lines.
                    pr_warn!("{}: main device: {} error on {} of block {}: retrying\n", e.dev_name(), status.name(), op_name(op), pb.first);
                }
                pb.error = status;
                pb.stage = if op == Op::Write { Stage::FailedWrite } else { Stage::FailedRead };
                bio.hold(&e.worker)
            }
            Stage::Main => {
                if status == BlkStatus::OFFLINE && !e.main_lost.load(Ordering::Relaxed) && !e.main_suspect.swap(true, Ordering::Relaxed) {
                    e.worker.kick();
                }
                if e.log_error() {
                    let why = if media { "the main device is lost" } else { "not a media error" };
                    pr_warn!("{}: main device: {} error on {} of block {}: passed on ({})\n", e.dev_name(), status.name(), op_name(op), bio.per_bio().first, why);
                }
                EndIo::Done
            }
            // The spare itself failed (data in the pool, or its flush): nothing can be
            // relocated safely any more; the error goes to the caller.
            Stage::Spare if media => {
                e.set_state(State::Degraded);
                EndIo::Done
            }
            Stage::Flush if media && bio.target_bio_nr() == 1 => {
                e.set_state(State::Degraded);
                EndIo::Done
            }
            _ => EndIo::Done,
        }
    }
}

impl Target for Remap {
    const NAME: &'static CStr = c"remap";
    const VERSION: [u32; 3] = logic::VERSION;
    // `map` never blocks: it routes, or hands the bio to the worker.
    const FEATURES: u64 = dm::FEATURE_NOWAIT;
    type PerBio = PerBio;

    fn new(ctx: &mut CtrContext<'_>, args: &Args<'_>) -> Result<Self, CtrError> {
        let line = TableLine::parse(args.iter()).map_err(|e| CtrError::inval(e.message()))?;
        let main_path = args.get(line.main).ok_or(CtrError::inval(c"Missing main device"))?;
        let spare_path = args.get(line.spare).ok_or(CtrError::inval(c"Missing spare device"))?;
        let main = ctx
            .get_device(main_path)
            .map_err(|code| CtrError { code, msg: c"Main device lookup failed" })?;
        let spare = ctx
            .get_device(spare_path)
            .map_err(|code| CtrError { code, msg: c"Spare device lookup failed" })?;
        if main.devno() == spare.devno() {
            return Err(CtrError::inval(c"Main and spare must be different devices"));
        }
        if !block_size_fits(line.block_size, &main) {
            return Err(CtrError::inval(c"block_size is not a multiple of the main device's logical block size"));
        }
        if !block_size_fits(line.block_size, &spare) {
            return Err(CtrError::inval(c"block_size is not a multiple of the spare device's logical block size"));
        }
        let len = ctx.len_sectors();
        // Checked here, before the spare may be formatted: a refused table leaves no trace.
        if len > main.sectors() {
            return Err(CtrError::inval(c"Main device is smaller than the target length"));
        }
        let bs_sectors = u64::from(line.block_size / 512);
        if len % bs_sectors != 0 {
            return Err(CtrError::inval(c"Target length is not a multiple of block_size"));
        }
        let loaded = metadata::load(&spare, line.block_size, len, line.main_id, line.format)?;
        let geo = loaded.log.sb.geometry;
        let nomem = |_| CtrError { code: ENOMEM, msg: c"Cannot allocate target state" };
        let data = KVVec::from_elem(0u8, line.block_size as usize, GFP_KERNEL).map_err(nomem)?;
        let probe = KVVec::from_elem(0u8, line.block_size as usize, GFP_KERNEL).map_err(nomem)?;
        let worker = Worker::new(c"kdmremapd").map_err(|code| CtrError { code, msg: c"Cannot create workqueue" })?;
        let main_blocks = len / bs_sectors;
        let nomem_e = |_: Error| CtrError { code: ENOMEM, msg: c"Cannot allocate target state" };
        let (table, table_w) = Published::new(Table::build(loaded.entries, main_blocks, line.cache_size).map_err(nomem_e)?);
        let scan = ScanState::new(line.block_size).map_err(nomem_e)?;
        let bad = BadList::new().map_err(nomem_e)?;
        let stats = Counters::new().map_err(nomem_e)?;
        let gate = WriteGate::new().map_err(nomem_e)?;
        let parked = BioQueue::new().map_err(nomem_e)?;
        let doubt = InDoubt::new().map_err(nomem_e)?;
        let log = loaded.log;
        let handle = ctx.handle();
        let tunables = Tunables::new(&line);
        let config = Config { main, spare, handle, line, geo, bs_sectors, bs_shift: bs_sectors.trailing_zeros(), len, main_blocks, created_ns: now_ns() };
        let e = Arc::pin_init(
            pin_init!(Engine {
                worker,
                config,
                table,
                meta <- kernel::new_mutex!(
                    WorkerState {
                        log,
                        table_w,
                        data,
                        hotspots: Hotspots::default(),
                        recent_errors: RecentCount::default(),
                        main_fail_run: 0,
                        probe,
                        recent_remaps: RecentCount::default(),
                        alerts: Alerts::default(),
                        bad,
                    },
                    "dm_remap_meta"
                ),
                gate,
                migrating: AtomicU64::new(NOT_MIGRATING),
                parked,
                doubt,
                sched <- kernel::new_mutex!((), "dm_remap_sched"),
                scan <- kernel::new_mutex!(scan, "dm_remap_scan"),
                suspended: AtomicBool::new(true),
                state: AtomicU8::new(State::Operational as u8),
                main_lost: AtomicBool::new(false),
                main_suspect: AtomicBool::new(false),
                event_pending: AtomicBool::new(false),
                resumed: AtomicBool::new(false),
                stats,
                figures: Figures::new(),
                tunables,
            }),
            GFP_KERNEL,
        )
        .map_err(|code| CtrError { code, msg: c"Cannot allocate target state" })?;
        // A new worker is unbound, so this cannot fail. From here the worker holds the engine
        // until `Remap` drops: nothing below fails before `Self` is built.
        let _ = e.worker.bind(e.clone());
        {
            let meta = e.meta.lock();
            // A loaded log holds remaps only: the bad-block list is read at the first resume.
            e.publish_counts(e.table.get(&meta.table_w).entries.len() as u64, 0, &meta.log);
            if meta.log.free_blocks() == 0 {
                e.state.store(State::SpareFull as u8, Ordering::Relaxed);
            }
            health::refresh_health(&e, &meta);
        }
        // Flush bio 0 goes to the main device, 1 to the spare: fsync through the target
        // makes both durable.
        ctx.set_num_flush_bios(2);
        ctx.set_num_discard_bios(1);
        ctx.set_num_write_zeroes_bios(1);
        Ok(Self { e })
    }

    // Inline into the registration's callbacks: one call frame fewer per bio.
    #[inline]
    fn map(&self, mut bio: Bio<'_, PerBio>) -> MapResult {
        // The fast path: a read or write of at most MAX_BIO_BLOCKS blocks while the table is
        // empty and no block is being moved, i.e. every bio of a device that has not started
        // failing. It does what `map_general` does for such a bio, with nothing else live.
        let e = &*self.e;
        let op = bio.op();
        let size = u64::from(bio.size());
        if size == 0 || !matches!(op, Op::Read | Op::Write) {
            return self.map_general(bio);
        }
        // The same order as `map_general`: the gate, the mark, then the table.
        let gate = if op == Op::Write { Some(e.gate.enter()) } else { None };
        let m = if op == Op::Write { e.migrating.load(Ordering::SeqCst) } else { NOT_MIGRATING };
        let sector = bio.target_sector();
        let (first, end) = self.block_range(sector, size);
        let blocks = end.wrapping_sub(first);
        if !e.table.is_empty() || blocks > MAX_BIO_BLOCKS || (m >= first && m - first < blocks) {
            if let Some(t) = gate {
                // `map_general` enters again, and looks at the mark and table after that.
                e.gate.leave(t);
            }
            return self.map_general(bio);
        }
        let nth = e.stats.add_return(if op == Op::Read { Stat::Reads } else { Stat::Writes }, 1);
        let start_ns = if nth % LATENCY_SAMPLE == 1 { now_ns() } else { 0 };
        let iter = bio.save_iter();
        let fua = bio.is_fua();
        bio.set_per_bio(PerBio { stage: Stage::Main, first, blocks: blocks as u32, error: BlkStatus::OK, iter, start_ns, sector, gate, fua });
        bio.remap(&e.config.main, sector)
    }

    #[inline]
    fn end_io(&self, mut bio: Bio<'_, PerBio>, status: &mut BlkStatus) -> EndIo {
        let e = &*self.e;
        let (stage, start_ns) = {
            let pb = bio.per_bio();
            // Once: a bio the worker completes passes through here again.
            if let Some(t) = pb.gate.take() {
                e.gate.leave(t);
            }
            (pb.stage, pb.start_ns)
        };
        if start_ns != 0 && stage == Stage::Main {
            // A sampled bio sent to the main device; the worker's second pass of a held bio
            // comes with another stage, and is not counted again.
            self.count_latency(start_ns);
        }
        if status.is_ok() {
            return EndIo::Done;
        }
        self.end_io_failed(bio, stage, *status)
    }

    fn preresume(&self) -> Result {
        if self.e.resumed.load(Ordering::Acquire) {
            return Ok(());
        }
        // First resume of this instance: a previous table on the same spare may have
        // committed remaps while our constructor read the log (it kept serving I/O until the
        // swap). Replay it whole now that the old table is suspended. Marked done only on
        // success: a failed resume must read it again next time.
        commit::reload(&self.e)?;
        scan::restore(&self.e);
        self.e.resumed.store(true, Ordering::Release);
        Ok(())
    }

    fn presuspend(&self) {
        // No scan I/O while the device is suspended (or after it is destroyed): a message
        // cannot restart it until resume (`scan::start` checks the flag under `sched`).
        scan::suspend(&self.e);
        // No move of a readable block runs or starts from here on (`migrate::migrate` checks
        // `suspended`, set just above); a move that started waits for it.
        migrate::quiesce(&self.e);
    }

    fn presuspend_undo(&self) {
        scan::unsuspend(&self.e);
    }

    fn resume(&self) {
        scan::unsuspend(&self.e);
    }

    fn message(&self, args: &Args<'_>, out: &mut StatusWriter<'_>) -> Result<bool> {
        message::message(&self.e, args, out)
    }

    fn status(&self, kind: StatusType, out: &mut StatusWriter<'_>) {
        let e = &*self.e;
        // A truncated write is how device-mapper learns it needs a larger buffer.
        let _ = match kind {
            StatusType::Info => write!(out, "{}", e.status()),
            StatusType::Table => {
                let c = &e.config;
                write!(out, "{} {}{}", Show(c.main.name()), Show(c.spare.name()), c.line.features())
            }
            StatusType::Ima => write!(
                out,
                "target_name=remap,target_version={},main_device={},spare_device={},block_size={};",
                logic::VERSION_STR,
                Show(e.config.main.name()),
                Show(e.config.spare.name()),
                e.config.line.block_size
            ),
        };
    }

    fn iterate_devices(&self, it: &mut DeviceIterator<'_>) {
        let e = &*self.e;
        it.visit(&e.config.main, 0, e.config.len);
        it.visit(&e.config.spare, 0, e.config.spare.sectors());
    }

    fn io_hints(&self, limits: &mut Limits<'_>) {
        // Every I/O covers whole relocation blocks, so a failing block is always rewritten
        // whole and never needs a read-modify-write of unreadable sectors.
        limits.set_block_size(self.e.config.line.block_size);
    }
}

impl Drop for Remap {
    fn drop(&mut self) {
        // The worker holds the engine while bound (a cycle through `Engine::worker`): take its
        // reference back, after any run in progress, so the engine drops with this target.
        drop(self.e.worker.unbind());
    }
}

/// The worker's two jobs, dispatched to the actions that do them.
impl WorkHandler for Engine {
    type PerBio = PerBio;

    fn work(&self) {
        relocate::drain(self);
        relocate::check_suspect(self);
        health::check_flagged(self);
    }

    fn scan(&self) {
        scan::step(self);
    }
}

/// An operation as log lines name it.
fn op_name(op: Op) -> &'static str {
    match op {
        Op::Read => "read",
        Op::Write => "write",
        Op::Discard => "discard",
        Op::WriteZeroes => "write-zeroes",
        Op::Other => "request",
    }
}

/// Displays a C string (device names are ASCII `major:minor`).
struct Show<'a>(&'a CStr);

impl core::fmt::Display for Show<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for &b in self.0.to_bytes() {
            f.write_char(if b.is_ascii_graphic() { b as char } else { '?' })?;
        }
        Ok(())
    }
}
