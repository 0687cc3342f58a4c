// SPDX-License-Identifier: GPL-2.0

//! The `remap` target: table line, routing of bios, completion handling, status.
//!
//! I/O that touches no remapped block goes to the main device unchanged (no split). I/O
//! touching remapped blocks is split at block boundaries and the remapped parts go to their
//! pool blocks on the spare. A write that fails on the main device with a media error, and a
//! write to a *pending* block (one whose read failed), is relocated by the worker
//! (`relocate.rs`), which acknowledges it only once the data and the remap are durable.

use crate::dm::{
    self, now_ns, Args, Bio, BioQueue, BlkStatus, CtrContext, CtrError, DeviceIterator, Dev, EndIo, Limits, MapResult,
    Op, PerCpu, RcuBox, RcuWriter, SavedIter, StatusType, StatusWriter, Target, TargetHandle, Ticket, Worker,
    WriteGate,
};
use crate::logic::{
    self,
    args::TableLine,
    cache::{self, Answered},
    format::Geometry,
    health::{Hotspots, RecentCount},
    remaps::{Entry, Route},
    status::{DevNo, Status},
};
use crate::metadata::{self, Log};
use core::ffi::CStr;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

/// Longest read or write, in blocks, that map lets through in one piece; bounds the worker's
/// work for one bio.
pub(crate) const MAX_BIO_BLOCKS: u64 = 1024;

/// What became of a bio, kept in its per-bio data between map and completion.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) enum Routed {
    /// Sent to the main device.
    #[default]
    Main,
    /// Sent to the spare pool.
    Spare,
    /// An empty flush.
    Flush,
    /// A write to pending blocks, deferred to the worker from map.
    PendingWrite,
    /// A write that failed on the main device, held for relocation.
    FailedWrite,
    /// A read that failed on the main device, held for retries.
    FailedRead,
    /// A write to the block being relocated, parked in map until the block has moved
    /// (`relocate::migrate`), then submitted to where the block lives.
    Parked,
    /// Completed by the worker: end_io passes it through.
    Completed,
}

/// `Engine::migrating` when no block is being relocated.
pub(crate) const NOT_MIGRATING: u64 = u64::MAX;

/// Per-bio data: what map decided, and where the bio's data is.
#[derive(Clone, Copy, Default)]
pub(crate) struct PerBio {
    pub(crate) routed: Routed,
    /// First main block the bio covers.
    pub(crate) first: u64,
    /// Blocks covered.
    pub(crate) blocks: u32,
    /// The status it failed with on the main device.
    pub(crate) error: BlkStatus,
    /// Its data position at map time.
    pub(crate) iter: SavedIter,
    /// When it was sent to the main device (ns), for the latency figure.
    pub(crate) start_ns: u64,
    /// First sector, relative to the target, at map time.
    pub(crate) sector: u64,
    /// Its entry into the write gate (a write sent to the main device), left at completion.
    pub(crate) gate: Option<Ticket>,
    /// The bio carries REQ_FUA: whatever the target writes for it is written FUA too.
    pub(crate) fua: bool,
}

/// Per-CPU counters (`Engine::stats`).
pub(crate) mod stat {
    pub(crate) const READS: usize = 0;
    pub(crate) const WRITES: usize = 1;
    pub(crate) const SPARE_IOS: usize = 2;
    pub(crate) const MEDIA_ERRORS: usize = 3;
    pub(crate) const CACHE_HITS: usize = 4;
    pub(crate) const CACHE_MISSES: usize = 5;
    pub(crate) const LATENCY_NS: usize = 6;
    pub(crate) const LATENCY_COUNT: usize = 7;
    pub(crate) const N: usize = 8;
}

/// The target's condition, as `dmsetup status` prints it.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    /// Relocating as needed.
    Operational = 0,
    /// The pool is used up: media errors now reach the caller.
    SpareFull = 1,
    /// The spare failed (I/O or metadata error): no more relocation; errors reach the caller.
    Degraded = 2,
}

/// The remap table as the I/O path reads it: sorted entries, replaced as a whole, with its
/// region bitmap and lookup cache (both belong to this version: see `logic::cache`).
pub(crate) struct Table {
    pub(crate) entries: KVVec<Entry>,
    bits: KVVec<u64>,
    shift: u32,
    cache: KVVec<AtomicU32>,
}

impl Table {
    /// A table version over `entries`, for a main device of `main_blocks` blocks.
    pub(crate) fn build(entries: KVVec<Entry>, main_blocks: u64, cache_size: u32) -> Result<KBox<Table>> {
        let shift = cache::region_shift(main_blocks);
        let mut bits = KVVec::from_elem(0u64, cache::bitmap_words(main_blocks, shift), GFP_KERNEL)?;
        cache::bitmap_build(bits.as_mut_slice(), shift, entries.as_slice());
        let mut c = KVVec::with_capacity(cache_size as usize, GFP_KERNEL)?;
        for _ in 0..cache_size {
            c.push(AtomicU32::new(0), GFP_KERNEL)?;
        }
        Ok(KBox::new(Table { entries, bits, shift, cache: c }, GFP_KERNEL)?)
    }
}

/// Alert bookkeeping: what has been raised, so each condition alerts once per crossing.
#[derive(Default)]
pub(crate) struct Alerts {
    /// The score is below the threshold (alerted).
    pub(crate) low_score: bool,
    /// Spare use level alerted: 0, 1 (75%), 2 (90%), 3 (100%).
    pub(crate) spare_level: u8,
    /// Degradation alerted.
    pub(crate) degraded: bool,
    /// An alert arose in maintenance mode and waits for it to end.
    pub(crate) held: bool,
}

/// Everything the worker changes, under one lock.
pub(crate) struct Meta {
    pub(crate) log: Log,
    /// The right to read the table without RCU and to replace it.
    pub(crate) table_w: RcuWriter,
    /// One relocation block of data.
    pub(crate) data: KVVec<u8>,
    pub(crate) hotspots: Hotspots,
    pub(crate) recent_errors: RecentCount,
    pub(crate) recent_remaps: RecentCount,
    pub(crate) alerts: Alerts,
}

/// One `remap` target instance.
#[pin_data]
pub(crate) struct Engine {
    // First field: dropped (drained) before anything the worker uses.
    pub(crate) worker: Worker<PerBio>,
    pub(crate) main: Dev,
    pub(crate) spare: Dev,
    pub(crate) handle: TargetHandle,
    pub(crate) line: TableLine,
    pub(crate) geo: Geometry,
    /// Sectors per relocation block.
    pub(crate) bs_sectors: u64,
    /// Target length in sectors.
    pub(crate) len: u64,
    pub(crate) table: RcuBox<Table>,
    #[pin]
    pub(crate) meta: Mutex<Meta>,
    /// Writes to the main device in flight (see `relocate::migrate`).
    pub(crate) gate: WriteGate,
    /// The main block being relocated from a readable main block, or `NOT_MIGRATING`.
    /// Written under `meta`; map parks writes to it.
    pub(crate) migrating: AtomicU64,
    /// Writes parked by map while their block moves.
    pub(crate) parked: BioQueue<PerBio>,
    /// The scan's own state (`scan::step`), apart from `meta` so that the scan reads without
    /// holding the metadata lock.
    #[pin]
    pub(crate) scan: Mutex<crate::scan::ScanState>,
    /// Serialises scheduling the scan with `suspended`.
    #[pin]
    pub(crate) sched: Mutex<()>,
    /// Between presuspend and resume (and before the first resume): no scan may start.
    pub(crate) suspended: AtomicBool,
    pub(crate) state: AtomicU8,
    /// Set by end_io (which cannot raise events) for the worker to raise one.
    pub(crate) event_pending: AtomicBool,
    /// Whether preresume has run once (the first one reloads the log).
    pub(crate) resumed: AtomicBool,
    pub(crate) remaps: AtomicU64,
    pub(crate) pending: AtomicU64,
    pub(crate) seq: AtomicU64,
    pub(crate) free: AtomicU64,
    pub(crate) stats: PerCpu<{ stat::N }>,
    pub(crate) write_relocations: AtomicU64,
    pub(crate) proactive_relocations: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) scanned: AtomicU64,
    pub(crate) scan_passes: AtomicU64,
    pub(crate) health: AtomicU8,
    pub(crate) eta_secs: AtomicU64,
    pub(crate) hotspot_count: AtomicU64,
    pub(crate) alert_threshold: AtomicU8,
    /// When the last alert was raised (ns), 0 if never.
    pub(crate) last_alert_ns: AtomicU64,
    pub(crate) maintenance: AtomicBool,
    pub(crate) scan_enabled: AtomicBool,
    pub(crate) scan_interval: AtomicU32,
    pub(crate) scan_rate: AtomicU32,
    pub(crate) created_ns: u64,
    /// Main-device blocks.
    pub(crate) main_blocks: u64,
}

/// Default alert threshold (health score).
pub(crate) const DEFAULT_ALERT_THRESHOLD: u8 = 50;
/// Default seconds between scan steps.
pub(crate) const DEFAULT_SCAN_INTERVAL: u32 = 10;
/// Default scan rate, blocks per second: 64 KiB/s with 4 KiB blocks, far below what a
/// disk serves, so the scan does not hurt foreground I/O.
pub(crate) const DEFAULT_SCAN_RATE: u32 = 16;

/// The target object device-mapper holds.
pub(crate) struct Remap {
    e: Arc<Engine>,
}

impl Engine {
    pub(crate) fn state(&self) -> State {
        match self.state.load(Ordering::Relaxed) {
            0 => State::Operational,
            1 => State::SpareFull,
            _ => State::Degraded,
        }
    }

    /// Moves to a worse state (never back); the worker raises the alert.
    pub(crate) fn set_state(&self, s: State) {
        if self.state.fetch_max(s as u8, Ordering::Relaxed) < s as u8 {
            self.event_pending.store(true, Ordering::Relaxed);
            self.worker.kick();
        }
    }

    /// The state as the status line prints it.
    pub(crate) fn shown_state(&self) -> logic::status::State {
        use logic::status::State as S;
        match self.state() {
            State::Degraded => S::Degraded,
            State::SpareFull => S::SpareFull,
            State::Operational if self.maintenance.load(Ordering::Relaxed) => S::Maintenance,
            State::Operational => S::Operational,
        }
    }

    /// Seconds since the target was created.
    pub(crate) fn age_secs(&self) -> u64 {
        now_ns().saturating_sub(self.created_ns) / 1_000_000_000
    }

    /// The 26 status fields, from the live counters.
    pub(crate) fn status(&self) -> Status<'static> {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let lat_n = self.stats.sum(stat::LATENCY_COUNT);
        let last = r(&self.last_alert_ns);
        let (mj, mn) = self.main.devno();
        let (sj, sn) = self.spare.devno();
        Status {
            version: logic::VERSION_STR,
            main: DevNo(mj, mn),
            spare: DevNo(sj, sn),
            reads: self.stats.sum(stat::READS),
            writes: self.stats.sum(stat::WRITES),
            spare_ios: self.stats.sum(stat::SPARE_IOS),
            media_errors: self.stats.sum(stat::MEDIA_ERRORS),
            remaps: r(&self.remaps),
            pool_blocks: self.geo.pool_blocks,
            free: r(&self.free),
            pending: r(&self.pending),
            write_relocations: r(&self.write_relocations),
            proactive_relocations: r(&self.proactive_relocations),
            commits: r(&self.commits),
            seq: r(&self.seq),
            cache_hits: self.stats.sum(stat::CACHE_HITS),
            cache_misses: self.stats.sum(stat::CACHE_MISSES),
            scanned: r(&self.scanned),
            scan_passes: r(&self.scan_passes),
            health: self.health.load(Ordering::Relaxed),
            eta_secs: r(&self.eta_secs),
            hotspots: r(&self.hotspot_count),
            latency_us: if lat_n == 0 { 0 } else { self.stats.sum(stat::LATENCY_NS) / lat_n / 1000 },
            alert_threshold: self.alert_threshold.load(Ordering::Relaxed),
            since_alert: (last != 0).then(|| now_ns().saturating_sub(last) / 1_000_000_000),
            state: self.shown_state(),
        }
    }

    /// Publishes figures derived from a table and the log.
    pub(crate) fn update_counts(&self, entries: &[Entry], log: &Log) {
        let pending = entries.iter().filter(|e| e.is_pending()).count() as u64;
        self.pending.store(pending, Ordering::Relaxed);
        self.remaps.store(entries.len() as u64 - pending, Ordering::Relaxed);
        self.seq.store(log.seq, Ordering::Relaxed);
        self.free.store(log.free_blocks(), Ordering::Relaxed);
    }
}

fn block_size_fits(bs: u32, dev: &Dev) -> bool {
    let lbs = dev.logical_block_size();
    lbs != 0 && bs % lbs == 0
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
        let worker = Worker::new(c"kdmremapd").map_err(|code| CtrError { code, msg: c"Cannot create workqueue" })?;
        let main_blocks = len / bs_sectors;
        let nomem_e = |_: Error| CtrError { code: ENOMEM, msg: c"Cannot allocate target state" };
        let (table, table_w) = RcuBox::new(Table::build(loaded.entries, main_blocks, line.cache_size).map_err(nomem_e)?);
        let scan = crate::scan::ScanState::new(line.block_size).map_err(nomem_e)?;
        let stats = PerCpu::new().map_err(nomem_e)?;
        let gate = WriteGate::new().map_err(nomem_e)?;
        let parked = BioQueue::new().map_err(nomem_e)?;
        let log = loaded.log;
        let handle = ctx.handle();
        let e = Arc::pin_init(
            pin_init!(Engine {
                worker,
                main,
                spare,
                handle,
                line,
                geo,
                bs_sectors,
                len,
                table,
                meta <- kernel::new_mutex!(
                    Meta {
                        log,
                        table_w,
                        data,
                        hotspots: Hotspots::default(),
                        recent_errors: RecentCount::default(),
                        recent_remaps: RecentCount::default(),
                        alerts: Alerts::default(),
                    },
                    "dm_remap_meta"
                ),
                gate,
                migrating: AtomicU64::new(NOT_MIGRATING),
                parked,
                sched <- kernel::new_mutex!((), "dm_remap_sched"),
                scan <- kernel::new_mutex!(scan, "dm_remap_scan"),
                suspended: AtomicBool::new(true),
                state: AtomicU8::new(State::Operational as u8),
                event_pending: AtomicBool::new(false),
                resumed: AtomicBool::new(false),
                remaps: AtomicU64::new(0),
                pending: AtomicU64::new(0),
                seq: AtomicU64::new(0),
                free: AtomicU64::new(0),
                stats,
                write_relocations: AtomicU64::new(0),
                proactive_relocations: AtomicU64::new(0),
                commits: AtomicU64::new(0),
                scanned: AtomicU64::new(0),
                scan_passes: AtomicU64::new(0),
                health: AtomicU8::new(100),
                eta_secs: AtomicU64::new(0),
                hotspot_count: AtomicU64::new(0),
                alert_threshold: AtomicU8::new(DEFAULT_ALERT_THRESHOLD),
                last_alert_ns: AtomicU64::new(0),
                maintenance: AtomicBool::new(false),
                scan_enabled: AtomicBool::new(true),
                scan_interval: AtomicU32::new(DEFAULT_SCAN_INTERVAL),
                scan_rate: AtomicU32::new(DEFAULT_SCAN_RATE),
                created_ns: now_ns(),
                main_blocks,
            }),
            GFP_KERNEL,
        )
        .map_err(|code| CtrError { code, msg: c"Cannot allocate target state" })?;
        e.worker.bind(&*e);
        {
            let meta = e.meta.lock();
            e.update_counts(e.table.get(&meta.table_w).entries.as_slice(), &meta.log);
            if meta.log.free_blocks() == 0 {
                e.state.store(State::SpareFull as u8, Ordering::Relaxed);
            }
            crate::control::refresh_health(&e, &meta);
        }
        // Flush bio 0 goes to the main device, 1 to the spare: fsync through the target
        // makes both durable.
        ctx.set_num_flush_bios(2);
        ctx.set_num_discard_bios(1);
        ctx.set_num_write_zeroes_bios(1);
        Ok(Self { e })
    }

    fn map(&self, mut bio: Bio<'_, PerBio>) -> MapResult {
        let e = &*self.e;
        let size = u64::from(bio.size());
        if size == 0 {
            bio.per_bio().routed = Routed::Flush;
            if bio.target_bio_nr() == 1 {
                e.stats.add(stat::SPARE_IOS, 1);
                return bio.remap(&e.spare, 0);
            }
            return bio.remap(&e.main, 0);
        }
        let op = bio.op();
        match op {
            Op::Read => e.stats.add(stat::READS, 1),
            Op::Write => e.stats.add(stat::WRITES, 1),
            _ => {}
        }
        let sector = bio.target_sector();
        let bs = e.bs_sectors;
        let first = sector / bs;
        let end = (sector + size.div_ceil(512)).div_ceil(bs);
        // Reads and writes may come back to the worker block by block (a failed write is
        // rewritten or relocated per block), which bounds them; a discard or write-zeroes
        // never does, so it goes out whole where it touches no remapped block.
        let cap = if matches!(op, Op::Read | Op::Write) { MAX_BIO_BLOCKS } else { u64::MAX };
        let count = (end - first).min(cap);
        let (route, answered) = e.table.read(|t| {
            cache::route_cached(t.entries.as_slice(), t.bits.as_slice(), t.shift, t.cache.as_slice(), first, count)
        });
        match answered {
            Answered::Hit => e.stats.add(stat::CACHE_HITS, 1),
            Answered::Miss => e.stats.add(stat::CACHE_MISSES, 1),
            Answered::Shortcut | Answered::Table => {}
        }
        let (mut blocks, mut routed) = match route {
            Route::Main { blocks } => (blocks, Routed::Main),
            Route::Spare { blocks, .. } => (blocks, Routed::Spare),
            // A write to a pending block goes to a new pool block while the pool can take
            // one; otherwise to the main device, which may well accept it (and if it fails,
            // end_io holds it as any failed write). A read still tries the main device.
            Route::Pending { blocks } if op == Op::Write && e.state() == State::Operational => (blocks, Routed::PendingWrite),
            Route::Pending { blocks } => (blocks, Routed::Main),
        };
        let mut gate = None;
        if routed == Routed::Main && op != Op::Read {
            // Anything that changes data on the main device passes the write gate, so that a
            // relocation can wait for it; one that reaches the block being relocated is
            // parked until the block has moved. Entering before looking at `migrating`
            // makes the relocation's wait cover every write that did not see its mark.
            let t = e.gate.enter();
            let m = e.migrating.load(Ordering::Acquire);
            if m >= first && m - first < blocks {
                if m > first {
                    blocks = m - first;
                    gate = Some(t);
                } else {
                    // Still inside the gate while parking: the relocation's second wait, after
                    // it clears the mark, covers this push, so it finds the bio parked.
                    routed = Routed::Parked;
                    let fua = bio.is_fua();
                    bio.accept_partial(((first + 1) * bs - sector) as u32);
                    let iter = bio.save_iter();
                    *bio.per_bio() = PerBio { routed, first, blocks: 1, iter, sector, fua, ..PerBio::default() };
                    let r = bio.park(&e.parked);
                    e.gate.leave(t);
                    return r;
                }
            } else {
                gate = Some(t);
            }
        }
        if blocks < end - first {
            // The piece ends on a block boundary; dm sends the rest as a new bio.
            bio.accept_partial(((first + blocks) * bs - sector) as u32);
        }
        let iter = bio.save_iter();
        let fua = bio.is_fua();
        let start_ns = if routed == Routed::Main { now_ns() } else { 0 };
        let pb = bio.per_bio();
        *pb = PerBio { routed, first, blocks: blocks as u32, error: BlkStatus::OK, iter, start_ns, sector, gate, fua };
        match route {
            Route::Spare { spare, .. } => {
                e.stats.add(stat::SPARE_IOS, 1);
                let at = e.geo.pool_sector(spare) + (sector - first * bs);
                bio.remap(&e.spare, at)
            }
            _ if routed == Routed::PendingWrite => bio.defer(&e.worker),
            _ => bio.remap(&e.main, sector),
        }
    }

    fn end_io(&self, mut bio: Bio<'_, PerBio>, status: &mut BlkStatus) -> EndIo {
        let e = &*self.e;
        let op = bio.op();
        let (routed, start_ns) = {
            let pb = bio.per_bio();
            // Once: a bio the worker completes passes through here again.
            if let Some(t) = pb.gate.take() {
                e.gate.leave(t);
            }
            (pb.routed, pb.start_ns)
        };
        let media = status.is_media_error();
        if routed == Routed::Main && start_ns != 0 {
            e.stats.add(stat::LATENCY_NS, now_ns().saturating_sub(start_ns));
            e.stats.add(stat::LATENCY_COUNT, 1);
            if media {
                e.stats.add(stat::MEDIA_ERRORS, 1);
            }
        }
        match routed {
            Routed::Main if media && matches!(op, Op::Read | Op::Write) => {
                let pb = bio.per_bio();
                pb.error = *status;
                pb.routed = if op == Op::Write { Routed::FailedWrite } else { Routed::FailedRead };
                bio.hold(&e.worker)
            }
            // The spare itself failed (data in the pool, or its flush): nothing can be
            // relocated safely any more; the error goes to the caller.
            Routed::Spare if media => {
                e.set_state(State::Degraded);
                EndIo::Done
            }
            Routed::Flush if media && bio.target_bio_nr() == 1 => {
                e.set_state(State::Degraded);
                EndIo::Done
            }
            _ => EndIo::Done,
        }
    }

    fn preresume(&self) -> Result {
        if self.e.resumed.load(Ordering::Acquire) {
            return Ok(());
        }
        // First resume of this instance: a previous table on the same spare may have
        // committed remaps while our constructor read the log (it kept serving I/O until the
        // swap). Replay it whole now that the old table is suspended. Marked done only on
        // success: a failed resume must read it again next time.
        crate::relocate::reload(&self.e)?;
        self.e.resumed.store(true, Ordering::Release);
        Ok(())
    }

    fn presuspend(&self) {
        // No scan I/O while the device is suspended (or after it is destroyed): a message
        // cannot restart it until resume (`scan::start` checks the flag under `sched`).
        crate::scan::suspend(&self.e);
    }

    fn presuspend_undo(&self) {
        crate::scan::unsuspend(&self.e);
    }

    fn resume(&self) {
        crate::scan::unsuspend(&self.e);
    }

    fn message(&self, args: &Args<'_>, out: &mut StatusWriter<'_>) -> Result<bool> {
        crate::control::message(&self.e, args, out)
    }

    fn status(&self, kind: StatusType, out: &mut StatusWriter<'_>) {
        let e = &*self.e;
        // A truncated write is how device-mapper learns it needs a larger buffer.
        let _ = match kind {
            StatusType::Info => write!(out, "{}", e.status()),
            StatusType::Table => write!(out, "{} {}{}", Show(e.main.name()), Show(e.spare.name()), e.line.features()),
            StatusType::Ima => write!(
                out,
                "target_name=remap,target_version={},main_device={},spare_device={},block_size={};",
                logic::VERSION_STR,
                Show(e.main.name()),
                Show(e.spare.name()),
                e.line.block_size
            ),
        };
    }

    fn iterate_devices(&self, it: &mut DeviceIterator<'_>) {
        let e = &*self.e;
        it.visit(&e.main, 0, e.len);
        it.visit(&e.spare, 0, e.spare.sectors());
    }

    fn io_hints(&self, limits: &mut Limits<'_>) {
        // Every I/O covers whole relocation blocks, so a failing block is always rewritten
        // whole and never needs a read-modify-write of unreadable sectors.
        limits.set_block_size(self.e.line.block_size);
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
