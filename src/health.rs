// SPDX-License-Identifier: GPL-2.0

//! Services layer: the health figures (score, time to spare exhaustion, hotspots) and the
//! alerts raised from them (a dm event and a rate-limited warning). Called from process
//! context only: `dm_table_event` takes a mutex.

#![forbid(unsafe_code)]

use crate::dm::{now_ns, ratelimit};
use crate::engine::{Engine, State, WorkerState};
use crate::logic::health::{score, seconds_to_exhaustion, Signals};
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// Records a media error at `block` for the health figures.
pub(crate) fn note_error(meta: &mut WorkerState, block: u64) {
    meta.hotspots.add(block);
    meta.recent_errors.add(now_ns() / 1_000_000_000, 1);
}

/// Recomputes score, time to exhaustion and hotspot count; returns the score.
pub(crate) fn refresh_health(e: &Engine, meta: &WorkerState) -> u8 {
    let now = now_ns() / 1_000_000_000;
    let free = meta.log.free_blocks();
    let s = Signals {
        pool_blocks: e.config.geo.pool_blocks,
        used: e.config.geo.pool_blocks - free,
        pending: e.figures.pending.load(Ordering::Relaxed),
        recent_errors: meta.recent_errors.total(now),
        largest_hotspot: meta.hotspots.largest(),
    };
    let h = score(&s);
    e.figures.health.store(h, Ordering::Relaxed);
    e.figures.eta_secs.store(seconds_to_exhaustion(free, meta.recent_remaps.total(now), e.age_secs()), Ordering::Relaxed);
    e.figures.hotspot_count.store(meta.hotspots.list().len() as u64, Ordering::Relaxed);
    h
}

/// Raises an alert (a dm event and a rate-limited warning) when the score falls below the
/// threshold, spare use crosses 75, 90 or 100%, or the target becomes degraded. Each
/// condition alerts once per crossing; in maintenance mode alerts are held until it ends.
pub(crate) fn check_alerts(e: &Engine, meta: &mut WorkerState) {
    let h = refresh_health(e, meta);
    let mut why: Option<(&str, &str)> = None;
    if h < e.tunables.alert_threshold.load(Ordering::Relaxed) {
        if !meta.alerts.low_score {
            meta.alerts.low_score = true;
            why = Some(("health score below the alert threshold", "health"));
        }
    } else {
        meta.alerts.low_score = false;
    }
    let pool = e.config.geo.pool_blocks;
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
        let kind = match level {
            3 => "spare_full",
            2 => "spare_90",
            _ => "spare_75",
        };
        why = Some(("spare use crossed a threshold (75/90/100%)", kind));
    }
    if e.state() == State::Degraded && !meta.alerts.degraded {
        meta.alerts.degraded = true;
        why = Some(("the spare device failed; relocation stopped", "degraded"));
    }
    if e.main_lost.load(Ordering::Relaxed) && !meta.alerts.main_lost {
        meta.alerts.main_lost = true;
        why = Some(("the main device stopped answering; relocation stopped", "main_lost"));
    }
    let maintenance = e.tunables.maintenance.load(Ordering::Relaxed);
    if why.is_none() && !(meta.alerts.held && !maintenance) {
        return;
    }
    if maintenance {
        meta.alerts.held = true;
        return;
    }
    meta.alerts.held = false;
    e.figures.last_alert_ns.store(now_ns().max(1), Ordering::Relaxed);
    e.config.handle.event();
    // dm sends no uevent for a table event: send one, so udev rules can react (docs/status.md
    // lists the kinds). A failure to send is logged, never fatal.
    let (text, kind) = why.unwrap_or(("held alert released", "released"));
    let state = e.shown_state().name();
    let sent = e.config.handle.uevent(&[&Var("DM_REMAP_EVENT", kind), &Var("DM_REMAP_STATE", state), &Var("DM_REMAP_HEALTH", h)]);
    if sent.is_err() && ratelimit() {
        pr_warn!("{}: alert: the uevent could not be sent\n", e.dev_name());
    }
    if ratelimit() {
        pr_warn!(
            "{}: alert: {}: health {}, spare {}% used ({} of {} blocks), state {}\n",
            e.dev_name(),
            text,
            h,
            pct,
            used,
            pool,
            e.shown_state().name()
        );
    }
}

/// A uevent variable: `KEY=value`.
struct Var<'a, T>(&'a str, T);

impl<T: core::fmt::Display> core::fmt::Display for Var<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}={}", self.0, self.1)
    }
}

/// Raises the alert a state change flagged from a context that cannot (`end_io`, via
/// `Engine::set_state`), if one is flagged.
pub(crate) fn check_flagged(e: &Engine) {
    if e.event_pending.swap(false, Ordering::Relaxed) {
        let mut meta = e.meta.lock();
        check_alerts(e, &mut meta);
    }
}
