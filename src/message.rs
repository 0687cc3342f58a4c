// SPDX-License-Identifier: GPL-2.0

//! Actions layer: `dmsetup message` commands. Parsed by `logic::message`; each command
//! changes a tunable, calls an action (the scan, a migration) or formats a reply.

#![forbid(unsafe_code)]

use crate::dm::{ratelimit, Args, StatusWriter};
use crate::engine::{Engine, Stat, State};
use crate::health::check_alerts;
use crate::logic::message::{BadBlocksReply, BlockReply, HotspotLine, LatencyReply, Location, Message, RemapLine, ScanReport, ScrubState, HELP};
use crate::logic::remaps;
use crate::migrate;
use crate::scan;
use core::fmt::Write;
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// A message that changes a setting the table line also holds: when they now differ, the
/// reply says so (the next table load starts from the line again).
fn not_in_table<T: core::fmt::Display + PartialEq>(out: &mut StatusWriter<'_>, name: &str, now: T, line: T) -> Result<bool> {
    if now == line {
        return Ok(false);
    }
    let _ = write!(out, "{name} is now {now}; the table line says {line} and a reload returns to it (set it there to keep it)");
    Ok(true)
}

/// A `scrub_speed` pair as the message takes it: `<min> <max>`.
#[derive(PartialEq)]
struct Speeds(u32, u32);

impl core::fmt::Display for Speeds {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

/// The `scan_status` reply, from the figures the scan publishes (it never waits for a step).
fn scan_report(e: &Engine) -> ScanReport {
    let f = &e.figures;
    let t = &e.tunables;
    let state = if !t.scan_enabled.load(Ordering::Relaxed) {
        ScrubState::Off
    } else if t.maintenance.load(Ordering::Relaxed) || e.state() == State::Degraded || e.main_lost.load(Ordering::Relaxed) || e.suspended.load(Ordering::Relaxed) {
        ScrubState::Paused
    } else if f.scan_resting.load(Ordering::Relaxed) {
        ScrubState::Resting
    } else {
        ScrubState::On
    };
    ScanReport {
        state,
        position: f.scan_pos.load(Ordering::Relaxed),
        blocks: e.config.main_blocks,
        rate_kib: if state == ScrubState::On { f.scan_rate_kib.load(Ordering::Relaxed) } else { 0 },
        passes: f.scan_passes.load(Ordering::Relaxed),
        busy: f.scan_busy.load(Ordering::Relaxed),
        speed_min: t.speed_min.load(Ordering::Relaxed),
        speed_max: t.speed_max.load(Ordering::Relaxed),
        block_size: e.config.line.block_size,
    }
}

fn refuse(e: &Engine, why: &str) -> Error {
    if ratelimit() {
        pr_warn!("{}: message refused: {}\n", e.dev_name(), why);
    }
    EINVAL
}

/// Handles `dmsetup message <dev> 0 ...`. Refused messages change nothing.
pub(crate) fn message(e: &Engine, args: &Args<'_>, out: &mut StatusWriter<'_>) -> Result<bool> {
    let m = Message::parse(args.iter()).map_err(|err| refuse(e, err.message().to_str().unwrap_or("invalid")))?;
    let reply = |out: &mut StatusWriter<'_>, r: core::fmt::Arguments<'_>| {
        let _ = out.write_fmt(r);
        Ok(true)
    };
    match m {
        Message::Help => reply(out, format_args!("{HELP}")),
        Message::Maintenance(on) => {
            e.tunables.maintenance.store(on, Ordering::Relaxed);
            if on {
                e.worker.cancel_scan();
            } else {
                check_alerts(e, &mut e.meta.lock());
                scan::start(e, false);
            }
            Ok(false)
        }
        Message::AlertThreshold(t) => {
            e.tunables.alert_threshold.store(t, Ordering::Relaxed);
            check_alerts(e, &mut e.meta.lock());
            not_in_table(out, "alert_threshold", t, e.config.line.alert_threshold)
        }
        Message::Scan(on) => {
            e.tunables.scan_enabled.store(on, Ordering::Relaxed);
            if on {
                scan::start(e, true);
            } else {
                e.worker.cancel_scan();
            }
            let word = |on: bool| if on { "on" } else { "off" };
            not_in_table(out, "scan", word(on), word(e.config.line.scan))
        }
        Message::ScanInterval(s) => {
            e.tunables.scan_interval.store(s, Ordering::Relaxed);
            e.worker.cancel_scan();
            scan::start(e, false);
            Ok(false)
        }
        Message::ScrubSpeed { min, max } => {
            e.tunables.speed_min.store(min, Ordering::Relaxed);
            e.tunables.speed_max.store(max, Ordering::Relaxed);
            let line = &e.config.line;
            not_in_table(out, "scrub_speed", Speeds(min, max), Speeds(line.scrub_speed_min, line.scrub_speed_max))
        }
        Message::ScanStatus => reply(out, format_args!("{}", scan_report(e))),
        Message::Remap(sector) => manual_remap(e, sector, out),
        Message::Query(sector) => {
            if sector >= e.config.len {
                return Err(refuse(e, "sector beyond the end of the device"));
            }
            let block = sector / e.config.bs_sectors;
            let found = e.table.read(|t| remaps::find(t.entries.as_slice(), block));
            let location = match found {
                None => Location::Main,
                Some(en) => match en.pool() {
                    None => Location::Pending,
                    Some(pool) => Location::Spare { pool_block: pool, spare_sector: Some(e.config.geo.pool_sector(pool)) },
                },
            };
            reply(out, format_args!("{}", BlockReply { block, location }))
        }
        Message::ListRemaps { first, count } => {
            e.table.read(|t| {
                let mut sep = "";
                for en in t.entries.iter().filter(|en| !en.is_pending()).skip(first as usize).take(count as usize) {
                    let _ = write!(out, "{sep}{}", RemapLine(en.main, u64::from(en.spare)));
                    sep = "\n";
                }
            });
            Ok(true)
        }
        Message::BadBlocks { first, count } => {
            let (on_spare, list, overflow) = {
                let meta = e.meta.lock();
                (meta.bad.on_spare, meta.bad.at.is_some(), meta.bad.overflow)
            };
            let bs = e.config.bs_sectors;
            e.table.read(|t| {
                let pending = || t.entries.iter().filter(|en| en.is_pending());
                let head = BadBlocksReply { blocks: pending().count() as u64, on_spare, list, overflow };
                let _ = write!(out, "{head}");
                // In sectors of the device, so debugfs icheck or xfs_db can name the file.
                for en in pending().skip(first as usize).take(count as usize) {
                    let _ = write!(out, "\n{}", RemapLine(en.main.saturating_mul(bs), bs));
                }
            });
            Ok(true)
        }
        Message::Hotspots => {
            let meta = e.meta.lock();
            let mut sep = "";
            for h in meta.hotspots.list() {
                let _ = write!(out, "{sep}{}", HotspotLine(h.first, h.last, h.errors));
                sep = "\n";
            }
            Ok(true)
        }
        Message::ClearStats => {
            e.clear_stats();
            Ok(false)
        }
        Message::Sync => {
            e.config.main.flush()?;
            e.config.spare.flush()?;
            Ok(false)
        }
        Message::Latency => {
            let r = LatencyReply { main_sum_ns: e.stats.sum(Stat::LatencyNs), main_count: e.stats.sum(Stat::LatencyCount) };
            reply(out, format_args!("{r}"))
        }
    }
}

/// `remap <sector>`: moves a readable block to the pool now (maintenance mode only).
fn manual_remap(e: &Engine, sector: u64, out: &mut StatusWriter<'_>) -> Result<bool> {
    if !e.tunables.maintenance.load(Ordering::Relaxed) {
        if ratelimit() {
            pr_warn!("{}: message refused: remap is accepted only in maintenance mode\n", e.dev_name());
        }
        return Err(EPERM);
    }
    if sector >= e.config.len {
        return Err(refuse(e, "sector beyond the end of the device"));
    }
    let block = sector / e.config.bs_sectors;
    let mut meta = e.meta.lock();
    if e.suspended.load(Ordering::Relaxed) {
        // A suspended table may be on its way out while another table uses the spare.
        if ratelimit() {
            pr_warn!("{}: message refused: remap needs the device resumed\n", e.dev_name());
        }
        return Err(EBUSY);
    }
    let pool = match migrate::migrate(e, &mut meta, block) {
        Ok(pool) => pool,
        Err(err) if err == EEXIST => return Err(refuse(e, "block already remapped")),
        Err(err) if err == EIO && e.state() == State::Operational => {
            // Its data cannot be read, so it cannot be moved (nothing is invented); its next
            // write will relocate it.
            if ratelimit() {
                pr_warn!("{}: message refused: block {} is unreadable; write it to relocate it\n", e.dev_name(), block);
            }
            return Err(EIO);
        }
        Err(err) => return Err(err),
    };
    check_alerts(e, &mut meta);
    let _ = write!(out, "{}", BlockReply { block, location: Location::Spare { pool_block: pool, spare_sector: None } });
    Ok(true)
}
