// SPDX-License-Identifier: GPL-2.0

//! State layer: one `remap` target instance's state ([`Engine`]), what each bio carries
//! ([`PerBio`]), the state under the metadata lock ([`WorkerState`]) and the scan's own
//! ([`ScanState`]). Only accessors live here; what changes the state is in the layers above
//! (docs/design.md).

#![forbid(unsafe_code)]

use crate::dm::{
    now_ns, ratelimit, BioQueue, BlkStatus, Dev, PerCpu, RcuWriter, SavedIter, TargetHandle, Ticket, Worker, WriteGate,
};
use crate::logic::{
    self,
    args::TableLine,
    format::{Geometry, META_BLOCK},
    health::{Hotspots, RecentCount, Suspects},
    remaps::Entry,
    scrub::{Pacer, RateMeter},
    status::{DevNo, Status},
};
use crate::metadata::Log;
use crate::table::{Published, Table};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use kernel::prelude::*;
use kernel::sync::Mutex;

/// What became of a bio, kept in its per-bio data between map and completion.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) enum Stage {
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
    /// (`migrate::migrate`), then submitted to where the block lives.
    Parked,
    /// Completed by the worker: end_io passes it through.
    Completed,
}

/// `Engine::migrating` when no block is being relocated.
pub(crate) const NOT_MIGRATING: u64 = u64::MAX;

/// One read in this many, and one write in this many, per CPU (the first of each included),
/// has its main-device latency timed for field 23 and the `latency` message: two clock reads
/// per I/O were about a fifth of the no-remap path's cost over dm-linear's (docs/BENCHMARKS.md).
/// A power of two: the test is a mask.
pub(crate) const LATENCY_SAMPLE: u64 = 64;

/// Per-bio data: what map decided, and where the bio's data is.
#[derive(Clone, Copy, Default)]
pub(crate) struct PerBio {
    pub(crate) stage: Stage,
    /// First main block the bio covers.
    pub(crate) first: u64,
    /// Blocks covered.
    pub(crate) blocks: u32,
    /// The status it failed with on the main device.
    pub(crate) error: BlkStatus,
    /// Its data position at map time.
    pub(crate) iter: SavedIter,
    /// When it was sent to the main device (ns), for the latency figure; 0 if this bio is not
    /// one of the sampled ones ([`LATENCY_SAMPLE`]).
    pub(crate) start_ns: u64,
    /// First sector, relative to the target, at map time.
    pub(crate) sector: u64,
    /// Its entry into the write gate (a write sent to the main device), left at completion.
    pub(crate) gate: Option<Ticket>,
    /// The bio carries REQ_FUA: whatever the target writes for it is written FUA too.
    pub(crate) fua: bool,
}

/// The per-CPU counters (`Engine::stats`): the index type of [`Counters`], so a counter
/// cannot be out of range.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub(crate) enum Stat {
    Reads = 0,
    Writes,
    SpareIos,
    MediaErrors,
    CacheHits,
    CacheMisses,
    /// Sum of the main device's latencies, ns.
    LatencyNs,
    /// Number of latencies summed.
    LatencyCount,
}

impl Stat {
    /// Every counter.
    pub(crate) const ALL: [Stat; 8] = [
        Stat::Reads,
        Stat::Writes,
        Stat::SpareIos,
        Stat::MediaErrors,
        Stat::CacheHits,
        Stat::CacheMisses,
        Stat::LatencyNs,
        Stat::LatencyCount,
    ];
    /// How many there are.
    pub(crate) const COUNT: usize = Self::ALL.len();
}

/// Per-CPU counters indexed by [`Stat`]: bumped on the I/O path, summed when read.
pub(crate) struct Counters(PerCpu<{ Stat::COUNT }>);

impl Counters {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self(PerCpu::new()?))
    }

    /// Adds `v` to `s` on this CPU.
    #[inline]
    pub(crate) fn add(&self, s: Stat, v: u64) {
        self.0.add(s as usize, v);
    }

    /// Adds `v` to `s` on this CPU and returns this CPU's new value.
    #[inline]
    pub(crate) fn add_return(&self, s: Stat, v: u64) -> u64 {
        self.0.add_return(s as usize, v)
    }

    /// `s` summed over all CPUs.
    pub(crate) fn sum(&self, s: Stat) -> u64 {
        self.0.sum(s as usize)
    }

    /// Zeroes every counter.
    pub(crate) fn clear(&self) {
        for s in Stat::ALL {
            self.0.zero(s as usize);
        }
    }
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

/// Alert bookkeeping: what has been raised, so each condition alerts once per crossing.
#[derive(Default)]
pub(crate) struct Alerts {
    /// The score is below the threshold (alerted).
    pub(crate) low_score: bool,
    /// Spare use level alerted: 0, 1 (75%), 2 (90%), 3 (100%).
    pub(crate) spare_level: u8,
    /// Degradation alerted.
    pub(crate) degraded: bool,
    /// The main device's loss alerted.
    pub(crate) main_lost: bool,
    /// An alert arose in maintenance mode and waits for it to end.
    pub(crate) held: bool,
}

/// Everything the worker changes, under one lock (`Engine::meta`, the metadata lock).
pub(crate) struct WorkerState {
    pub(crate) log: Log,
    /// The right to read the table without RCU and to replace it.
    pub(crate) table_w: RcuWriter<Table>,
    /// One relocation block of data.
    pub(crate) data: KVVec<u8>,
    pub(crate) hotspots: Hotspots,
    pub(crate) recent_errors: RecentCount,
    /// Main-device failures in a row that no retry cured, since the last success the worker
    /// saw (`relocate::main_failure`).
    pub(crate) main_fail_run: u32,
    /// One block, for probing the main device (`relocate::main_failure`): `data` holds the
    /// block being relocated meanwhile.
    pub(crate) probe: KVVec<u8>,
    pub(crate) recent_remaps: RecentCount,
    pub(crate) alerts: Alerts,
    /// The persistent bad-block list (`commit::save_bad_blocks`).
    pub(crate) bad: BadList,
}

/// The persistent bad-block list's place on the spare and what its durable version says
/// (docs/format.md).
pub(crate) struct BadList {
    /// Its slots and durable version; none before the first resume read it, for a spare
    /// without the `BADBLOCKS` feature, or when it could not be read (the durable list is
    /// then kept as it is: never rewritten from an incomplete memory).
    pub(crate) at: Option<CkptState>,
    /// Two 4 KiB slots: read both at load, write one.
    pub(crate) buf: KVVec<u8>,
    /// Entries in the durable version.
    pub(crate) on_spare: u64,
    /// The durable version's overflow flag (sticky until the list empties).
    pub(crate) overflow: bool,
}

impl BadList {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self { at: None, buf: KVVec::from_elem(0u8, 2 * META_BLOCK, GFP_KERNEL)?, on_spare: 0, overflow: false })
    }
}

/// Bytes the scan reads at once.
const CHUNK_BYTES: usize = 256 * 1024;

/// Size of the scan buffer for a block size.
pub(crate) fn scan_buf_bytes(block_size: u32) -> usize {
    let bs = block_size as usize;
    // Checked: objtool does not know the division panic as noreturn (bs is never 0).
    CHUNK_BYTES.checked_div(bs).unwrap_or(1).max(1) * bs
}

/// The scan's own state: only the scan step uses it (under `Engine::scan`), so the step
/// reads the main device without holding the metadata lock.
pub(crate) struct ScanState {
    /// Chunk buffer.
    pub(crate) buf: KVVec<u8>,
    /// One block, for the per-block reads of a chunk that failed or was slow.
    pub(crate) one: KVVec<u8>,
    /// Next block to read.
    pub(crate) pos: u64,
    /// Moving average of the per-block read time, ns.
    pub(crate) ewma_ns: u64,
    /// The rate limiter (`logic::scrub`).
    pub(crate) pacer: Pacer,
    /// The measured rate, for `scan_status`.
    pub(crate) meter: RateMeter,
    /// Blocks found slow once (see `scan::block`).
    pub(crate) suspects: Suspects,
    /// Where the scrub checkpoint goes (`scan::checkpoint`); none until the first resume
    /// read it, and none for a spare without checkpoint slots.
    pub(crate) ckpt: Option<CkptState>,
}

/// The scrub checkpoint's slots on the spare and the durable version (docs/format.md).
#[derive(Clone, Copy)]
pub(crate) struct CkptState {
    /// Sector of slot 0 (slot 1 follows it).
    pub(crate) sector: u64,
    /// The spare's uuid, which every slot carries.
    pub(crate) uuid: [u8; 16],
    /// `seq` of the durable version (0: none yet).
    pub(crate) seq: u64,
    /// The slot holding it; the next write goes to the other.
    pub(crate) slot: u32,
    /// When it was written (ns), for the interval.
    pub(crate) written_ns: u64,
}

impl ScanState {
    pub(crate) fn new(block_size: u32) -> Result<Self> {
        Ok(Self {
            buf: KVVec::from_elem(0u8, scan_buf_bytes(block_size), GFP_KERNEL)?,
            one: KVVec::from_elem(0u8, block_size as usize, GFP_KERNEL)?,
            pos: 0,
            ewma_ns: 0,
            pacer: Pacer::default(),
            meter: RateMeter::default(),
            suspects: Suspects::default(),
            ckpt: None,
        })
    }
}

/// What the table line and the devices fixed at construction: never changes.
pub(crate) struct Config {
    pub(crate) main: Dev,
    pub(crate) spare: Dev,
    /// For dm events.
    pub(crate) handle: TargetHandle,
    pub(crate) line: TableLine,
    pub(crate) geo: Geometry,
    /// Sectors per relocation block.
    pub(crate) bs_sectors: u64,
    /// `bs_sectors` is `1 << bs_shift` (block sizes are powers of two): the fast path
    /// shifts where a division would carry a division-by-zero branch.
    pub(crate) bs_shift: u32,
    /// Target length in sectors.
    pub(crate) len: u64,
    /// Main-device blocks.
    pub(crate) main_blocks: u64,
    /// When the target was created (ns).
    pub(crate) created_ns: u64,
}

/// What `dmsetup message` sets; read by the scan and the alerts.
pub(crate) struct Tunables {
    pub(crate) alert_threshold: AtomicU8,
    pub(crate) maintenance: AtomicBool,
    pub(crate) scan_enabled: AtomicBool,
    /// Seconds the scan rests between two passes (and after a resume).
    pub(crate) scan_interval: AtomicU32,
    /// The scrub's floor and ceiling, MiB/s (`logic::scrub`). Each is stored alone; a
    /// message stores both, and a step that reads one old and one new value reads at a rate
    /// between them for one chunk.
    pub(crate) speed_min: AtomicU32,
    pub(crate) speed_max: AtomicU32,
}

impl Tunables {
    /// What a new instance starts with: the table line's `alert_threshold`, `no_scan` and
    /// scrub speeds, the defaults for the rest.
    pub(crate) fn new(line: &TableLine) -> Self {
        Self {
            alert_threshold: AtomicU8::new(line.alert_threshold),
            maintenance: AtomicBool::new(false),
            scan_enabled: AtomicBool::new(line.scan),
            scan_interval: AtomicU32::new(DEFAULT_SCAN_INTERVAL),
            speed_min: AtomicU32::new(line.scrub_speed_min),
            speed_max: AtomicU32::new(line.scrub_speed_max),
        }
    }
}

/// The figures the worker, the scan and the alerts publish for the status line (the per-CPU
/// counters of the I/O path are [`Counters`]).
pub(crate) struct Figures {
    pub(crate) remaps: AtomicU64,
    pub(crate) pending: AtomicU64,
    pub(crate) seq: AtomicU64,
    pub(crate) free: AtomicU64,
    pub(crate) write_relocations: AtomicU64,
    pub(crate) proactive_relocations: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) scanned: AtomicU64,
    pub(crate) scan_passes: AtomicU64,
    /// The scan's next block, published for `scan_status` (the step holds `Engine::scan`).
    pub(crate) scan_pos: AtomicU64,
    /// The scan's measured rate, KiB/s (0 when it is not reading).
    pub(crate) scan_rate_kib: AtomicU64,
    /// The limiter sees foreground I/O.
    pub(crate) scan_busy: AtomicBool,
    /// Between two passes.
    pub(crate) scan_resting: AtomicBool,
    pub(crate) health: AtomicU8,
    pub(crate) eta_secs: AtomicU64,
    pub(crate) hotspot_count: AtomicU64,
    /// When the last alert was raised (ns), 0 if never.
    pub(crate) last_alert_ns: AtomicU64,
    /// Main-device errors that one retry by the worker cured (status field 27).
    pub(crate) retried_ok: AtomicU64,
    /// Main-device errors that are not media errors (passed to the caller, no pool block).
    pub(crate) other_errors: AtomicU64,
    /// Main-device errors logged so far (`Engine::log_error`).
    pub(crate) logged_errors: AtomicU64,
}

impl Figures {
    /// All zero, health 100.
    pub(crate) fn new() -> Self {
        Self {
            remaps: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            free: AtomicU64::new(0),
            write_relocations: AtomicU64::new(0),
            proactive_relocations: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            scanned: AtomicU64::new(0),
            scan_passes: AtomicU64::new(0),
            scan_pos: AtomicU64::new(0),
            scan_rate_kib: AtomicU64::new(0),
            scan_busy: AtomicBool::new(false),
            scan_resting: AtomicBool::new(false),
            health: AtomicU8::new(100),
            eta_secs: AtomicU64::new(0),
            hotspot_count: AtomicU64::new(0),
            retried_ok: AtomicU64::new(0),
            other_errors: AtomicU64::new(0),
            logged_errors: AtomicU64::new(0),
            last_alert_ns: AtomicU64::new(0),
        }
    }
}

/// The blocks whose new remaps were in a log write that failed (`commit::commit_publish`): the
/// log may or may not hold them, so neither the main block nor the pool block is sure to be
/// what the next load reads, and writes to them are refused until a reload resolves it
/// (docs/design.md, "A commit that fails"). Set once, by the worker, when the spare fails
/// (the state is then degraded, so no later commit adds more); read locklessly by `map`.
pub(crate) struct InDoubt {
    /// The blocks, `count` of them valid; room for one log block's entries, reserved at
    /// construction (a failed commit never allocates).
    blocks: KVVec<AtomicU64>,
    count: AtomicU32,
    /// Every write is refused: more blocks were in doubt than `blocks` holds, or the remaps
    /// that did become durable could not be published.
    all: AtomicBool,
}

impl InDoubt {
    pub(crate) fn new() -> Result<Self> {
        let mut blocks = KVVec::with_capacity(logic::format::ENTRIES_PER_BLOCK, GFP_KERNEL)?;
        for _ in 0..logic::format::ENTRIES_PER_BLOCK {
            blocks.push(AtomicU64::new(0), GFP_KERNEL)?;
        }
        Ok(Self { blocks, count: AtomicU32::new(0), all: AtomicBool::new(false) })
    }

    /// Whether any block is in doubt (`map`'s test before it looks further).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) != 0 || self.all.load(Ordering::Acquire)
    }

    /// Adds `b`; past the room for them, every block is in doubt. Worker only.
    pub(crate) fn add(&self, b: u64) {
        let n = self.count.load(Ordering::Relaxed) as usize;
        match self.blocks.get(n) {
            Some(slot) => {
                slot.store(b, Ordering::Relaxed);
                // Release: a reader that sees the count sees the block.
                self.count.store(n as u32 + 1, Ordering::Release);
            }
            None => self.refuse_all(),
        }
    }

    /// Every block is in doubt from now on.
    pub(crate) fn refuse_all(&self) {
        self.all.store(true, Ordering::Release);
    }

    /// How many blocks are in doubt (for the log line); `None` for all of them.
    pub(crate) fn count(&self) -> Option<u32> {
        (!self.all.load(Ordering::Acquire)).then(|| self.count.load(Ordering::Acquire))
    }

    /// `logic::remaps::doubt_clip` over these blocks: `None` if a write at `first` must fail,
    /// else how many of its `blocks` may go on.
    pub(crate) fn clip(&self, first: u64, blocks: u64) -> Option<u64> {
        if self.all.load(Ordering::Acquire) {
            return None;
        }
        let n = self.count.load(Ordering::Acquire) as usize;
        let set = self.blocks.as_slice().get(..n).unwrap_or(&[]);
        logic::remaps::doubt_clip(set.iter().map(|a| a.load(Ordering::Relaxed)), first, blocks)
    }
}

/// One `remap` target instance: parts that own their data.
#[pin_data]
pub(crate) struct Engine {
    // First field: dropped (drained) before anything the worker uses.
    pub(crate) worker: Worker<Engine>,
    pub(crate) config: Config,
    pub(crate) table: Published,
    /// The metadata lock.
    #[pin]
    pub(crate) meta: Mutex<WorkerState>,
    /// Writes to the main device in flight (see `migrate::migrate`).
    pub(crate) gate: WriteGate,
    /// The main block being relocated from a readable main block, or `NOT_MIGRATING`.
    /// Written under `meta`; map parks writes to it.
    pub(crate) migrating: AtomicU64,
    /// Writes parked by map while their block moves.
    pub(crate) parked: BioQueue<PerBio>,
    /// Blocks a failed commit left in doubt: writes to them are refused.
    pub(crate) doubt: InDoubt,
    /// The scan's own state (`scan::step`), apart from `meta` so that the scan reads without
    /// holding the metadata lock.
    #[pin]
    pub(crate) scan: Mutex<ScanState>,
    /// Serialises scheduling the scan with `suspended`.
    #[pin]
    pub(crate) sched: Mutex<()>,
    /// Between presuspend and resume (and before the first resume): no scan may start.
    pub(crate) suspended: AtomicBool,
    pub(crate) state: AtomicU8,
    /// The main device is gone (every probe failed): nothing more is relocated; I/O to
    /// blocks on the spare goes on. Until the table is reloaded.
    pub(crate) main_lost: AtomicBool,
    /// A main-device I/O ended "device offline": the worker probes the device
    /// (`relocate::check_suspect`).
    pub(crate) main_suspect: AtomicBool,
    /// Set by end_io (which cannot raise events) for the worker to raise one.
    pub(crate) event_pending: AtomicBool,
    /// Whether preresume has run once (the first one reloads the log).
    pub(crate) resumed: AtomicBool,
    pub(crate) stats: Counters,
    pub(crate) figures: Figures,
    pub(crate) tunables: Tunables,
}

/// Main-device errors each instance logs before its error lines are rate-limited.
pub(crate) const ERRORS_ALWAYS_LOGGED: u64 = 64;

/// Default seconds the scan rests between passes (and waits after a resume).
pub(crate) const DEFAULT_SCAN_INTERVAL: u32 = 10;

impl Engine {
    pub(crate) fn state(&self) -> State {
        match self.state.load(Ordering::Relaxed) {
            0 => State::Operational,
            1 => State::SpareFull,
            _ => State::Degraded,
        }
    }

    /// Moves to a worse state (never back); the worker raises the alert.
    /// Whether to log a main-device error: the first [`ERRORS_ALWAYS_LOGGED`] of this
    /// instance always (what the driver's error became at this layer, for the operator and
    /// the policy table of docs/design.md), then rate-limited like every other line.
    pub(crate) fn log_error(&self) -> bool {
        self.figures.logged_errors.fetch_add(1, Ordering::Relaxed) < ERRORS_ALWAYS_LOGGED || ratelimit()
    }

    /// The dm device's `major:minor`, which every log line about this target starts with
    /// (as upstream targets print `dm_device_name`).
    pub(crate) fn dev_name(&self) -> &str {
        self.config.handle.name().to_str().unwrap_or("?")
    }

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
            _ if self.main_lost.load(Ordering::Relaxed) => S::MainLost,
            State::Degraded => S::Degraded,
            State::SpareFull => S::SpareFull,
            State::Operational if self.tunables.maintenance.load(Ordering::Relaxed) => S::Maintenance,
            State::Operational => S::Operational,
        }
    }

    /// Seconds since the target was created.
    pub(crate) fn age_secs(&self) -> u64 {
        now_ns().saturating_sub(self.config.created_ns) / 1_000_000_000
    }

    /// The 28 status fields, from the live counters.
    pub(crate) fn status(&self) -> Status<'static> {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let lat_n = self.stats.sum(Stat::LatencyCount);
        let last = r(&self.figures.last_alert_ns);
        let (mj, mn) = self.config.main.devno();
        let (sj, sn) = self.config.spare.devno();
        Status {
            version: logic::VERSION_STR,
            main: DevNo(mj, mn),
            spare: DevNo(sj, sn),
            reads: self.stats.sum(Stat::Reads),
            writes: self.stats.sum(Stat::Writes),
            spare_ios: self.stats.sum(Stat::SpareIos),
            media_errors: self.stats.sum(Stat::MediaErrors),
            remaps: r(&self.figures.remaps),
            pool_blocks: self.config.geo.pool_blocks,
            free: r(&self.figures.free),
            pending: r(&self.figures.pending),
            write_relocations: r(&self.figures.write_relocations),
            proactive_relocations: r(&self.figures.proactive_relocations),
            commits: r(&self.figures.commits),
            seq: r(&self.figures.seq),
            cache_hits: self.stats.sum(Stat::CacheHits),
            cache_misses: self.stats.sum(Stat::CacheMisses),
            scanned: r(&self.figures.scanned),
            scan_passes: r(&self.figures.scan_passes),
            health: self.figures.health.load(Ordering::Relaxed),
            eta_secs: r(&self.figures.eta_secs),
            hotspots: r(&self.figures.hotspot_count),
            latency_us: if lat_n == 0 { 0 } else { self.stats.sum(Stat::LatencyNs) / lat_n / 1000 },
            alert_threshold: self.tunables.alert_threshold.load(Ordering::Relaxed),
            since_alert: (last != 0).then(|| now_ns().saturating_sub(last) / 1_000_000_000),
            state: self.shown_state(),
            retried_ok: Some(r(&self.figures.retried_ok)),
            other_errors: Some(r(&self.figures.other_errors)),
        }
    }

    /// Publishes figures derived from a table and the log.
    pub(crate) fn update_counts(&self, entries: &[Entry], log: &Log) {
        let pending = entries.iter().filter(|e| e.is_pending()).count() as u64;
        self.publish_counts(entries.len() as u64 - pending, pending, log);
    }

    /// [`Engine::update_counts`] for a table whose counts are known without counting it
    /// (a loaded log has no pending blocks; the first resume adds the bad-block list's).
    pub(crate) fn publish_counts(&self, remaps: u64, pending: u64, log: &Log) {
        self.figures.pending.store(pending, Ordering::Relaxed);
        self.figures.remaps.store(remaps, Ordering::Relaxed);
        self.figures.seq.store(log.seq, Ordering::Relaxed);
        self.figures.free.store(log.free_blocks(), Ordering::Relaxed);
    }

    /// Zeroes the statistics `clear_stats` clears: the per-CPU counters and the relocation
    /// and commit counts (not the figures derived from the table, the log or the scan).
    pub(crate) fn clear_stats(&self) {
        self.stats.clear();
        for a in [&self.figures.write_relocations, &self.figures.proactive_relocations, &self.figures.commits] {
            a.store(0, Ordering::Relaxed);
        }
    }
}
