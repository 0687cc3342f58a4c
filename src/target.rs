// SPDX-License-Identifier: GPL-2.0

//! The `remap` target: table line, routing of bios, completion handling, status.
//!
//! I/O that touches no remapped block goes to the main device unchanged (no split). I/O
//! touching remapped blocks is split at block boundaries and the remapped parts go to their
//! pool blocks on the spare. A write that fails on the main device with a media error, and a
//! write to a *pending* block (one whose read failed), is relocated by the worker
//! (`relocate.rs`), which acknowledges it only once the data and the remap are durable.

use crate::dm::{
    self, Args, Bio, BlkStatus, CtrContext, CtrError, DeviceIterator, Dev, EndIo, Limits, MapResult, Op,
    RcuBox, RcuWriter, SavedIter, StatusType, StatusWriter, Target, TargetHandle, Worker,
};
use crate::logic::{self, args::TableLine, format::Geometry, remaps::{self, Entry, Route}};
use crate::metadata::{self, Log};
use core::ffi::CStr;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

/// Longest bio, in blocks, that map lets through in one piece; bounds a relocation batch.
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
    /// Completed by the worker: end_io passes it through.
    Completed,
}

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

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Operational => "operational",
            State::SpareFull => "spare_full",
            State::Degraded => "degraded",
        }
    }
}

/// The remap table as the I/O path reads it: sorted entries, replaced as a whole.
pub(crate) struct Table {
    pub(crate) entries: KVVec<Entry>,
}

/// Everything the worker changes, under one lock.
pub(crate) struct Meta {
    pub(crate) log: Log,
    /// The right to read the table without RCU and to replace it.
    pub(crate) table_w: RcuWriter,
    /// One relocation block of data.
    pub(crate) data: KVVec<u8>,
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
    pub(crate) state: AtomicU8,
    /// Set by end_io (which cannot raise events) for the worker to raise one.
    pub(crate) event_pending: AtomicBool,
    /// Whether preresume has run once (the first one reloads the log).
    pub(crate) resumed: AtomicBool,
    pub(crate) remaps: AtomicU64,
    pub(crate) pending: AtomicU64,
    pub(crate) seq: AtomicU64,
    pub(crate) free: AtomicU64,
}

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

    /// Moves to a worse state (never back), and has an event raised.
    pub(crate) fn set_state(&self, s: State) {
        if self.state.fetch_max(s as u8, Ordering::Relaxed) < s as u8 {
            self.event_pending.store(true, Ordering::Relaxed);
            self.worker.kick();
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
        let loaded = metadata::load(&spare, line.block_size, len, line.format)?;
        let geo = loaded.log.sb.geometry;
        let nomem = |_| CtrError { code: ENOMEM, msg: c"Cannot allocate target state" };
        let data = KVVec::from_elem(0u8, line.block_size as usize, GFP_KERNEL).map_err(nomem)?;
        let worker = Worker::new(c"kdmremapd").map_err(|code| CtrError { code, msg: c"Cannot create workqueue" })?;
        let (table, table_w) = RcuBox::new(KBox::new(Table { entries: loaded.entries }, GFP_KERNEL).map_err(nomem)?);
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
                meta <- kernel::new_mutex!(Meta { log, table_w, data }, "dm_remap_meta"),
                state: AtomicU8::new(State::Operational as u8),
                event_pending: AtomicBool::new(false),
                resumed: AtomicBool::new(false),
                remaps: AtomicU64::new(0),
                pending: AtomicU64::new(0),
                seq: AtomicU64::new(0),
                free: AtomicU64::new(0),
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
            let dev = if bio.target_bio_nr() == 1 { &e.spare } else { &e.main };
            return bio.remap(dev, 0);
        }
        let sector = bio.target_sector();
        let bs = e.bs_sectors;
        let first = sector / bs;
        let end = (sector + size.div_ceil(512)).div_ceil(bs);
        let count = (end - first).min(MAX_BIO_BLOCKS);
        let route = e.table.read(|t| remaps::route(t.entries.as_slice(), first, count));
        let (blocks, routed) = match route {
            Route::Main { blocks } => (blocks, Routed::Main),
            Route::Spare { blocks, .. } => (blocks, Routed::Spare),
            // A write to a pending block goes straight to a new pool block; a read still
            // tries the main device.
            Route::Pending { blocks } if bio.op() == Op::Write => (blocks, Routed::PendingWrite),
            Route::Pending { blocks } => (blocks, Routed::Main),
        };
        if blocks < end - first {
            // The piece ends on a block boundary; dm sends the rest as a new bio.
            bio.accept_partial(((first + blocks) * bs - sector) as u32);
        }
        let iter = bio.save_iter();
        let pb = bio.per_bio();
        *pb = PerBio { routed, first, blocks: blocks as u32, error: BlkStatus::OK, iter };
        match route {
            Route::Spare { spare, .. } => {
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
        let routed = bio.per_bio().routed;
        let media = status.is_media_error();
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
        if self.e.resumed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // First resume of this instance: a previous table on the same spare may have
        // committed remaps after our constructor read the log (it kept serving I/O until the
        // swap). Read it again now that it is suspended.
        crate::relocate::reload(&self.e)
    }

    fn status(&self, kind: StatusType, out: &mut StatusWriter<'_>) {
        let e = &*self.e;
        // A truncated write is how device-mapper learns it needs a larger buffer.
        let _ = match kind {
            StatusType::Info => write!(
                out,
                "{} {} {} {} {} {}",
                e.remaps.load(Ordering::Relaxed),
                e.geo.pool_blocks,
                e.free.load(Ordering::Relaxed),
                e.pending.load(Ordering::Relaxed),
                e.seq.load(Ordering::Relaxed),
                e.state().name()
            ),
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
