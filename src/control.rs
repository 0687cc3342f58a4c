// SPDX-License-Identifier: GPL-2.0

//! Health figures, alerts and `dmsetup message` commands.

use crate::dm::{now_ns, ratelimit, Args, StatusWriter};
use crate::logic::health::{score, seconds_to_exhaustion, Signals};
use crate::logic::message::{Message, HELP};
use crate::logic::remaps;
use crate::target::{stat, Engine, Meta, State};
use core::fmt::Write;
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// Recomputes score, time to exhaustion and hotspot count; returns the score.
pub(crate) fn refresh_health(e: &Engine, meta: &Meta) -> u8 {
    let now = now_ns() / 1_000_000_000;
    let free = meta.log.free_blocks();
    let s = Signals {
        pool_blocks: e.geo.pool_blocks,
        used: e.geo.pool_blocks - free,
        pending: e.pending.load(Ordering::Relaxed),
        recent_errors: meta.recent_errors.total(now),
        largest_hotspot: meta.hotspots.largest(),
    };
    let h = score(&s);
    e.health.store(h, Ordering::Relaxed);
    e.eta_secs.store(seconds_to_exhaustion(free, meta.recent_remaps.total(now), e.age_secs()), Ordering::Relaxed);
    e.hotspot_count.store(meta.hotspots.list().len() as u64, Ordering::Relaxed);
    h
}

/// Raises an alert (a dm event and a rate-limited warning) when the score falls below the
/// threshold, spare use crosses 75, 90 or 100%, or the target becomes degraded. Each
/// condition alerts once per crossing; in maintenance mode alerts are held until it ends.
pub(crate) fn check_alerts(e: &Engine, meta: &mut Meta) {
    let h = refresh_health(e, meta);
    let mut why: Option<&str> = None;
    if h < e.alert_threshold.load(Ordering::Relaxed) {
        if !meta.alerts.low_score {
            meta.alerts.low_score = true;
            why = Some("health score below the alert threshold");
        }
    } else {
        meta.alerts.low_score = false;
    }
    let pool = e.geo.pool_blocks;
    let used = pool - meta.log.free_blocks();
    let pct = used * 100 / pool.max(1);
    let level = match pct {
        100.. => 3,
        90.. => 2,
        75.. => 1,
        _ => 0,
    };
    if level > meta.alerts.spare_level {
        meta.alerts.spare_level = level;
        why = Some("spare use crossed a threshold (75/90/100%)");
    }
    if e.state() == State::Degraded && !meta.alerts.degraded {
        meta.alerts.degraded = true;
        why = Some("the spare device failed; relocation stopped");
    }
    let maintenance = e.maintenance.load(Ordering::Relaxed);
    if why.is_none() && !(meta.alerts.held && !maintenance) {
        return;
    }
    if maintenance {
        meta.alerts.held = true;
        return;
    }
    meta.alerts.held = false;
    e.last_alert_ns.store(now_ns().max(1), Ordering::Relaxed);
    e.handle.event();
    if ratelimit() {
        pr_warn!(
            "alert: {}: health {}, spare {}% used ({} of {} blocks), state {}\n",
            why.unwrap_or("held alert released"),
            h,
            pct,
            used,
            pool,
            e.shown_state().name()
        );
    }
}

fn refuse(why: &str) -> Error {
    if ratelimit() {
        pr_warn!("message refused: {}\n", why);
    }
    EINVAL
}

/// Handles `dmsetup message <dev> 0 ...`. Refused messages change nothing.
pub(crate) fn message(e: &Engine, args: &Args<'_>, out: &mut StatusWriter<'_>) -> Result<bool> {
    let m = Message::parse(args.iter()).map_err(|err| refuse(err.message().to_str().unwrap_or("invalid")))?;
    let reply = |out: &mut StatusWriter<'_>, r: core::fmt::Arguments<'_>| {
        let _ = out.write_fmt(r);
        Ok(true)
    };
    match m {
        Message::Help => reply(out, format_args!("{HELP}")),
        Message::Maintenance(on) => {
            e.maintenance.store(on, Ordering::Relaxed);
            if on {
                e.worker.cancel_scan();
            } else {
                check_alerts(e, &mut e.meta.lock());
                crate::scan::start(e, false);
            }
            Ok(false)
        }
        Message::AlertThreshold(t) => {
            e.alert_threshold.store(t, Ordering::Relaxed);
            check_alerts(e, &mut e.meta.lock());
            Ok(false)
        }
        Message::Scan(on) => {
            e.scan_enabled.store(on, Ordering::Relaxed);
            if on {
                crate::scan::start(e, true);
            } else {
                e.worker.cancel_scan();
            }
            Ok(false)
        }
        Message::ScanInterval(s) => {
            e.scan_interval.store(s, Ordering::Relaxed);
            e.worker.cancel_scan();
            crate::scan::start(e, false);
            Ok(false)
        }
        Message::ScanRate(r) => {
            e.scan_rate.store(r, Ordering::Relaxed);
            Ok(false)
        }
        Message::Remap(sector) => manual_remap(e, sector, out),
        Message::Query(sector) => {
            if sector >= e.len {
                return Err(refuse("sector beyond the end of the device"));
            }
            let block = sector / e.bs_sectors;
            let found = e.table.read(|t| remaps::find(t.entries.as_slice(), block));
            match found {
                None => reply(out, format_args!("block={block} location=main")),
                Some(en) if en.is_pending() => reply(out, format_args!("block={block} location=pending")),
                Some(en) => reply(
                    out,
                    format_args!(
                        "block={block} location=spare pool_block={} spare_sector={}",
                        en.spare,
                        e.geo.pool_sector(en.spare)
                    ),
                ),
            }
        }
        Message::ListRemaps { first, count } => {
            e.table.read(|t| {
                let mut sep = "";
                for en in t.entries.iter().filter(|en| !en.is_pending()).skip(first as usize).take(count as usize) {
                    let _ = write!(out, "{sep}{} {}", en.main, en.spare);
                    sep = "\n";
                }
            });
            Ok(true)
        }
        Message::Hotspots => {
            let meta = e.meta.lock();
            let mut sep = "";
            for h in meta.hotspots.list() {
                let _ = write!(out, "{sep}{}-{} {}", h.first, h.last, h.errors);
                sep = "\n";
            }
            Ok(true)
        }
        Message::ClearStats => {
            for i in [stat::READS, stat::WRITES, stat::SPARE_IOS, stat::MEDIA_ERRORS, stat::CACHE_HITS, stat::CACHE_MISSES, stat::LATENCY_NS, stat::LATENCY_COUNT] {
                e.stats.zero(i);
            }
            for a in [&e.write_relocations, &e.proactive_relocations, &e.commits] {
                a.store(0, Ordering::Relaxed);
            }
            Ok(false)
        }
        Message::Sync => {
            e.main.flush()?;
            e.spare.flush()?;
            Ok(false)
        }
    }
}

/// `remap <sector>`: moves a readable block to the pool now (maintenance mode only).
fn manual_remap(e: &Engine, sector: u64, out: &mut StatusWriter<'_>) -> Result<bool> {
    if !e.maintenance.load(Ordering::Relaxed) {
        if ratelimit() {
            pr_warn!("message refused: remap is accepted only in maintenance mode\n");
        }
        return Err(EPERM);
    }
    if sector >= e.len {
        return Err(refuse("sector beyond the end of the device"));
    }
    let block = sector / e.bs_sectors;
    let mut meta = e.meta.lock();
    if e.suspended.load(Ordering::Relaxed) {
        // A suspended table may be on its way out while another table uses the spare.
        if ratelimit() {
            pr_warn!("message refused: remap needs the device resumed\n");
        }
        return Err(EBUSY);
    }
    let pool = match e.migrate(&mut meta, block) {
        Ok(pool) => pool,
        Err(err) if err == EEXIST => return Err(refuse("block already remapped")),
        Err(err) if err == EIO && e.state() == State::Operational => {
            // Its data cannot be read, so it cannot be moved (nothing is invented); its next
            // write will relocate it.
            if ratelimit() {
                pr_warn!("message refused: block {} is unreadable; write it to relocate it\n", block);
            }
            return Err(EIO);
        }
        Err(err) => return Err(err),
    };
    check_alerts(e, &mut meta);
    let _ = write!(out, "block={block} location=spare pool_block={pool}");
    Ok(true)
}
