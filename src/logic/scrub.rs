// SPDX-License-Identifier: GPL-2.0

//! The scrub's rate limiter, in the manner of md's `speed_limit_min`/`speed_limit_max`: the
//! scrub reads at up to the ceiling while the device is idle and backs off to the floor
//! while foreground I/O is busy. Plain arithmetic on times and counts, so the host tests it.
//!
//! Pacing is a virtual clock (GCRA): each read moves `tat` (the time the reads so far are
//! "paid" up to at the current rate) by `bytes / rate`; reads may go while `tat` is at most
//! [`BURST_NS`] ahead of now. Over any window the scrub reads at most `rate x window` plus
//! one burst, and never banks credit while it waits (an idle spell buys no later burst).

/// How far ahead of real time the reads may run before the step waits (ns): one burst at
/// 32 MiB/s is 3.2 MiB, so a 10 s measurement of the ceiling is within 1%.
pub const BURST_NS: u64 = 100_000_000;
/// How long after a foreground bio the device still counts as busy (ns).
pub const BUSY_HOLD_NS: u64 = 1_000_000_000;
/// Default floor, MiB/s: the rate under foreground load.
pub const DEFAULT_SPEED_MIN: u32 = 1;
/// Default ceiling, MiB/s: the rate while the device is idle.
pub const DEFAULT_SPEED_MAX: u32 = 32;
/// Largest accepted limit, MiB/s.
pub const MAX_SPEED: u32 = 100_000;
/// Bytes in a MiB.
pub const MIB: u64 = 1 << 20;

/// Whether a `min max` pair of limits is valid: both 1 to [`MAX_SPEED`], `min <= max`.
pub fn valid_speeds(min: u32, max: u32) -> bool {
    (1..=MAX_SPEED).contains(&min) && (1..=MAX_SPEED).contains(&max) && min <= max
}

/// The limiter's state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pacer {
    /// The virtual time the reads so far are paid up to (ns).
    tat_ns: u64,
    /// Until when the device counts as busy (ns).
    busy_until_ns: u64,
    /// The foreground bio count seen last (reads + writes through the target).
    last_fg: u64,
    /// Whether a foreground count was seen at all (the first look only records it).
    seen: bool,
}

impl Pacer {
    /// Looks at the foreground bio count and returns the rate to read at now, bytes/s: the
    /// floor if a foreground bio arrived in the last [`BUSY_HOLD_NS`], else the ceiling.
    pub fn rate(&mut self, now_ns: u64, fg: u64, min_mib: u32, max_mib: u32) -> u64 {
        if self.seen && fg != self.last_fg {
            self.busy_until_ns = now_ns.saturating_add(BUSY_HOLD_NS);
        }
        self.seen = true;
        self.last_fg = fg;
        let mib = if self.busy(now_ns) { min_mib } else { max_mib };
        u64::from(mib.max(1)).saturating_mul(MIB)
    }

    /// Whether foreground I/O was seen in the last [`BUSY_HOLD_NS`].
    pub fn busy(&self, now_ns: u64) -> bool {
        now_ns < self.busy_until_ns
    }

    /// How long to wait before the next read (ns): 0 while the reads are at most one burst
    /// ahead of time, else until they are paid up (so the next step reads a full burst).
    pub fn wait_ns(&self, now_ns: u64) -> u64 {
        if self.tat_ns <= now_ns.saturating_add(BURST_NS) {
            0
        } else {
            self.tat_ns - now_ns
        }
    }

    /// Charges `bytes` read at `rate` bytes/s.
    pub fn charge(&mut self, now_ns: u64, bytes: u64, rate: u64) {
        // u64 only (no 128-bit division in the kernel): `bytes` is at most a chunk.
        // Divisions are checked throughout: the kernel build must see no division panic.
        let cost = bytes.saturating_mul(1_000_000_000).checked_div(rate).unwrap_or(u64::MAX);
        self.tat_ns = self.tat_ns.max(now_ns).saturating_add(cost);
    }

    /// The most bytes worth reading at once at `rate`: one burst (at least `unit`), so a read
    /// at the floor does not run far ahead of it.
    pub fn burst_bytes(rate: u64, unit: u64) -> u64 {
        (rate / (1_000_000_000 / BURST_NS)).max(unit)
    }
}

/// A measured rate: bytes over windows of at least [`RATE_WINDOW_NS`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RateMeter {
    t0_ns: u64,
    bytes: u64,
    /// The last full window's rate, bytes/s.
    pub rate: u64,
}

/// The window of [`RateMeter`] (ns).
pub const RATE_WINDOW_NS: u64 = 2_000_000_000;

impl RateMeter {
    /// Counts `bytes` read by `now_ns`; closes the window when it is long enough.
    pub fn add(&mut self, now_ns: u64, bytes: u64) {
        if self.t0_ns == 0 {
            self.t0_ns = now_ns;
        }
        self.bytes = self.bytes.saturating_add(bytes);
        let dt = now_ns.saturating_sub(self.t0_ns);
        if dt >= RATE_WINDOW_NS {
            self.rate = self.bytes.saturating_mul(1000).checked_div(dt / 1_000_000).unwrap_or(0);
            self.t0_ns = now_ns;
            self.bytes = 0;
        }
    }

    /// Forgets the window (the scrub stopped or paused): the rate reads 0 until the next.
    pub fn reset(&mut self) {
        *self = RateMeter::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seconds one pass over `bytes` takes at `mib_per_s`.
    fn pass_secs(bytes: u64, mib_per_s: u32) -> u64 {
        bytes / (u64::from(mib_per_s.max(1)) * MIB)
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn limits() {
        assert!(valid_speeds(1, 32));
        assert!(valid_speeds(5, 5));
        assert!(!valid_speeds(0, 32));
        assert!(!valid_speeds(33, 32));
        assert!(!valid_speeds(1, MAX_SPEED + 1));
    }

    /// Reading chunks as fast as allowed for `secs`, idle (no foreground I/O) or busy: the
    /// bytes read stay within `rate x time + one burst`.
    fn simulate(busy: bool, secs: u64, chunk: u64, read_ns: u64) -> u64 {
        let mut p = Pacer::default();
        let mut now = 1000 * S;
        let end = now + secs * S;
        let mut fg = 0;
        let mut total = 0;
        while now < end {
            if busy {
                fg += 1;
            }
            let rate = p.rate(now, fg, 1, 32);
            let w = p.wait_ns(now);
            if w > 0 {
                now += w;
                continue;
            }
            let n = chunk.min(Pacer::burst_bytes(rate, 4096));
            now += read_ns;
            p.charge(now, n, rate);
            total += n;
        }
        total
    }

    #[test]
    fn idle_reads_at_the_ceiling() {
        let total = simulate(false, 10, 256 * 1024, 100_000);
        let ceiling = 32 * MIB * 10;
        assert!(total <= ceiling + ceiling / 100, "{total}");
        assert!(total >= ceiling - ceiling / 100, "{total}");
    }

    #[test]
    fn busy_reads_at_the_floor() {
        let total = simulate(true, 10, 256 * 1024, 100_000);
        // The first look only records the count: the first chunk may go at the ceiling.
        assert!(total <= 10 * MIB + MIB / 2, "{total}");
        assert!(total >= 9 * MIB, "{total}");
    }

    #[test]
    fn a_slow_device_is_not_pushed() {
        // 8 MiB/s device: the limiter never asks for more than it gives, and banks nothing.
        let total = simulate(false, 10, 256 * 1024, 256 * 1024 * S / (8 * MIB));
        assert!(total <= 80 * MIB + 256 * 1024, "{total}");
    }

    #[test]
    fn busy_holds_then_ends() {
        let mut p = Pacer::default();
        assert_eq!(p.rate(10 * S, 5, 1, 32), 32 * MIB);
        assert_eq!(p.rate(11 * S, 6, 1, 32), MIB);
        assert!(p.busy(11 * S + BUSY_HOLD_NS - 1));
        assert_eq!(p.rate(11 * S + BUSY_HOLD_NS, 6, 1, 32), 32 * MIB);
    }

    #[test]
    fn no_credit_banked_while_waiting() {
        let mut p = Pacer::default();
        p.charge(S, MIB, MIB);
        assert_eq!(p.wait_ns(S), S);
        // An hour later a burst, not an hour's worth.
        p.charge(3600 * S, MIB, MIB);
        assert_eq!(p.wait_ns(3600 * S), S);
        assert_eq!(Pacer::burst_bytes(32 * MIB, 4096), 32 * MIB / 10);
        assert_eq!(Pacer::burst_bytes(1, 4096), 4096);
    }

    #[test]
    fn meter() {
        let mut m = RateMeter::default();
        m.add(S, 0);
        m.add(2 * S, MIB);
        assert_eq!(m.rate, 0);
        m.add(3 * S, MIB);
        assert_eq!(m.rate, MIB);
        m.reset();
        assert_eq!(m.rate, 0);
    }

    /// The figures docs/messages.md gives for a 4 TB (4 x 10^12 bytes) pass.
    #[test]
    fn four_terabytes() {
        let tb4 = 4_000_000_000_000;
        assert_eq!(pass_secs(tb4, DEFAULT_SPEED_MAX), 119_209); // 33 h 7 min, idle
        assert_eq!(pass_secs(tb4, DEFAULT_SPEED_MIN), 3_814_697); // 44 days 3 h, always busy
    }
}
