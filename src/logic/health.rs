// SPDX-License-Identifier: GPL-2.0

//! Health figures from measured signals: score, time to spare exhaustion, error hotspots.
//! Integer arithmetic only (no floating point in the kernel). The formula is in
//! docs/status.md.

/// Width of the window over which recent rates are measured, seconds.
pub const WINDOW_SECS: u64 = 600;
/// Buckets in the window (one per minute).
const BUCKETS: usize = 10;
const BUCKET_SECS: u64 = WINDOW_SECS / BUCKETS as u64;

/// Counts events in the last [`WINDOW_SECS`] seconds, in one-minute buckets.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecentCount {
    counts: [u32; BUCKETS],
    /// The minute each bucket counts (bucket i holds minute m with m % BUCKETS == i).
    minutes: [u64; BUCKETS],
}

impl RecentCount {
    /// Records `n` events at time `now` (seconds).
    pub fn add(&mut self, now: u64, n: u32) {
        let m = now / BUCKET_SECS;
        let i = (m % BUCKETS as u64) as usize;
        if self.minutes[i] != m {
            self.minutes[i] = m;
            self.counts[i] = 0;
        }
        self.counts[i] = self.counts[i].saturating_add(n);
    }

    /// Events in the last window at time `now`.
    pub fn total(&self, now: u64) -> u64 {
        let m = now / BUCKET_SECS;
        (0..BUCKETS)
            .filter(|&i| self.minutes[i] + (BUCKETS as u64) > m && self.minutes[i] <= m)
            .map(|i| u64::from(self.counts[i]))
            .sum()
    }
}

/// Seconds until the spare's free blocks run out at the recent remap rate; 0 means no trend
/// (no remap in the window). `age` is how long the target has been running (the window is
/// shorter at first).
pub fn seconds_to_exhaustion(free: u64, recent_remaps: u64, age: u64) -> u64 {
    if recent_remaps == 0 {
        return 0;
    }
    let span = age.clamp(1, WINDOW_SECS);
    free.saturating_mul(span) / recent_remaps
}

/// The signals the score is computed from.
#[derive(Clone, Copy, Debug, Default)]
pub struct Signals {
    /// Pool blocks in total.
    pub pool_blocks: u64,
    /// Pool blocks used.
    pub used: u64,
    /// Pending (unreadable, not yet rewritten) blocks.
    pub pending: u64,
    /// Media errors in the last window.
    pub recent_errors: u64,
    /// Errors in the largest hotspot.
    pub largest_hotspot: u64,
}

/// Health score, 100 (healthy) down to 0:
/// `100 - spare(0..50) - pending(0..20) - errors(0..20) - hotspot(0..10)`, where
/// spare = 50 x used / total, pending = 2 per pending block, errors = 1 per media error in
/// the last 10 minutes, hotspot = 1 per error in the largest cluster beyond the first; each
/// term capped at its maximum.
pub fn score(s: &Signals) -> u8 {
    let used = s.used.min(s.pool_blocks);
    let spare = match s.pool_blocks {
        0 => 50,
        // Exact while 50 x used fits; beyond (more than 2^58 blocks) close enough.
        p if used <= u64::MAX / 50 => 50 * used / p,
        p => used / (p / 50),
    };
    let pending = s.pending.saturating_mul(2).min(20);
    let errors = s.recent_errors.min(20);
    let hotspot = s.largest_hotspot.saturating_sub(1).min(10);
    100u64.saturating_sub(spare + pending + errors + hotspot) as u8
}

/// Most error clusters kept.
pub const MAX_HOTSPOTS: usize = 32;
/// Blocks within this distance of a cluster join it.
pub const HOTSPOT_DISTANCE: u64 = 64;

/// One cluster of nearby errors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hotspot {
    /// First block with an error.
    pub first: u64,
    /// Last block with an error.
    pub last: u64,
    /// Errors counted in it.
    pub errors: u64,
}

/// Up to [`MAX_HOTSPOTS`] clusters of media errors.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hotspots {
    spots: [Hotspot; MAX_HOTSPOTS],
    n: usize,
}

impl Hotspots {
    /// Records an error at `block`: joins the nearest cluster within [`HOTSPOT_DISTANCE`],
    /// or starts a new one; when all are taken, the two nearest clusters are merged first.
    pub fn add(&mut self, block: u64) {
        let near = (0..self.n).find(|&i| {
            let h = &self.spots[i];
            block.saturating_add(HOTSPOT_DISTANCE) >= h.first && block <= h.last.saturating_add(HOTSPOT_DISTANCE)
        });
        if let Some(i) = near {
            let h = &mut self.spots[i];
            h.first = h.first.min(block);
            h.last = h.last.max(block);
            h.errors += 1;
            return;
        }
        if self.n == MAX_HOTSPOTS {
            self.merge_nearest();
        }
        self.spots[self.n] = Hotspot { first: block, last: block, errors: 1 };
        self.n += 1;
        self.spots[..self.n].sort_unstable_by_key(|h| h.first);
    }

    fn merge_nearest(&mut self) {
        // Sorted by `first`: the nearest pair is adjacent.
        let Some(i) = (0..self.n - 1).min_by_key(|&i| self.spots[i + 1].first.saturating_sub(self.spots[i].last)) else {
            return;
        };
        let b = self.spots[i + 1];
        let a = &mut self.spots[i];
        a.last = a.last.max(b.last);
        a.errors += b.errors;
        self.spots.copy_within(i + 2..self.n, i + 1);
        self.n -= 1;
    }

    /// The clusters, by first block.
    pub fn list(&self) -> &[Hotspot] {
        &self.spots[..self.n]
    }

    /// Errors in the largest cluster.
    pub fn largest(&self) -> u64 {
        self.list().iter().map(|h| h.errors).max().unwrap_or(0)
    }

}

/// How many blocks the scan remembers as slow once.
pub const MAX_SUSPECTS: usize = 32;
const NO_BLOCK: u64 = u64::MAX;

/// Blocks the scan found slow on one visit, waiting for the next visit to confirm them.
///
/// A slow read proves little on its own (the device or the machine may just be busy); a
/// block that is slow again a whole scan pass later is weak. The oldest suspect makes room
/// for a new one when all places are taken.
#[derive(Clone, Copy, Debug)]
pub struct Suspects {
    blocks: [u64; MAX_SUSPECTS],
    next: usize,
}

impl Default for Suspects {
    fn default() -> Self {
        Self { blocks: [NO_BLOCK; MAX_SUSPECTS], next: 0 }
    }
}

impl Suspects {
    /// Records a slow visit to `block`; true if its previous visit was slow too (then it is
    /// weak, and forgotten here).
    pub fn slow_again(&mut self, block: u64) -> bool {
        if let Some(s) = self.blocks.iter_mut().find(|s| **s == block) {
            *s = NO_BLOCK;
            return true;
        }
        self.blocks[self.next] = block;
        self.next = (self.next + 1) % MAX_SUSPECTS;
        false
    }

    /// Forgets the blocks in `first..first + n`: they read at their usual speed.
    pub fn clear(&mut self, first: u64, n: u64) {
        for s in self.blocks.iter_mut().filter(|s| **s >= first && **s - first < n && **s != NO_BLOCK) {
            *s = NO_BLOCK;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspects_confirm_on_the_second_slow_visit() {
        let mut s = Suspects::default();
        assert!(!s.slow_again(7));
        assert!(s.slow_again(7));
        // Confirmed and forgotten: a third slow visit starts over.
        assert!(!s.slow_again(7));
        // A fast visit in between clears it.
        s.clear(5, 3);
        assert!(!s.slow_again(7));
        s.clear(8, 10);
        assert!(s.slow_again(7));
        // Block u64::MAX - 1 and a range reaching the end of the u64 space.
        assert!(!s.slow_again(u64::MAX - 1));
        s.clear(u64::MAX - 1, 1);
        assert!(!s.slow_again(u64::MAX - 1));
    }

    #[test]
    fn suspects_forget_the_oldest_when_full() {
        let mut s = Suspects::default();
        for b in 0..MAX_SUSPECTS as u64 + 1 {
            assert!(!s.slow_again(b));
        }
        // Block 0 made room for the last one.
        assert!(!s.slow_again(0));
        assert!(s.slow_again(MAX_SUSPECTS as u64));
    }

    #[test]
    fn score_terms() {
        let healthy = Signals { pool_blocks: 100, ..Default::default() };
        assert_eq!(score(&healthy), 100);
        assert_eq!(score(&Signals { used: 50, ..healthy }), 75);
        assert_eq!(score(&Signals { used: 100, ..healthy }), 50);
        assert_eq!(score(&Signals { pending: 3, ..healthy }), 94);
        assert_eq!(score(&Signals { pending: 1000, ..healthy }), 80);
        assert_eq!(score(&Signals { recent_errors: 5, ..healthy }), 95);
        assert_eq!(score(&Signals { largest_hotspot: 4, ..healthy }), 97);
        let worst = Signals { pool_blocks: 100, used: 100, pending: 99, recent_errors: 99, largest_hotspot: 99 };
        assert_eq!(score(&worst), 0);
        // Never wraps, whatever the inputs.
        assert_eq!(score(&Signals { pool_blocks: 0, used: u64::MAX, pending: u64::MAX, recent_errors: u64::MAX, largest_hotspot: u64::MAX }), 0);
    }

    #[test]
    fn recent_window() {
        let mut r = RecentCount::default();
        r.add(0, 3);
        r.add(59, 1);
        r.add(60, 2);
        assert_eq!(r.total(60), 6);
        assert_eq!(r.total(599), 6);
        assert_eq!(r.total(600), 2); // minute 0 left the window
        assert_eq!(r.total(660), 0);
        r.add(6000, 1); // reuses a bucket
        assert_eq!(r.total(6000), 1);
    }

    #[test]
    fn exhaustion() {
        assert_eq!(seconds_to_exhaustion(100, 0, 50), 0);
        // 10 remaps in the first 20 s, 100 free: 200 s.
        assert_eq!(seconds_to_exhaustion(100, 10, 20), 200);
        // After the window is full, the rate is over 600 s.
        assert_eq!(seconds_to_exhaustion(100, 10, 5000), 6000);
        assert_eq!(seconds_to_exhaustion(u64::MAX, 1, 0), u64::MAX);
    }

    #[test]
    fn hotspots_cluster_and_merge() {
        let mut h = Hotspots::default();
        h.add(1000);
        h.add(1010);
        h.add(5000);
        h.add(990);
        assert_eq!(h.list(), &[Hotspot { first: 990, last: 1010, errors: 3 }, Hotspot { first: 5000, last: 5000, errors: 1 }]);
        assert_eq!(h.largest(), 3);
        for i in 0..100u64 {
            h.add(100_000 + i * 1000);
        }
        assert_eq!(h.list().len(), MAX_HOTSPOTS);
        assert_eq!(h.list().iter().map(|s| s.errors).sum::<u64>(), 104);
        assert!(h.list().windows(2).all(|w| w[0].first < w[1].first));
    }
}
