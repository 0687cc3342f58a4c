// SPDX-License-Identifier: GPL-2.0

//! The 26-field `dmsetup status` line (fields documented in docs/status.md).

use core::fmt;

/// The target's condition (field 26).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Relocating as needed.
    Operational,
    /// Maintenance mode: the scan and alert events are held; manual remaps are accepted.
    Maintenance,
    /// The spare failed: nothing more is relocated.
    Degraded,
    /// No free pool block.
    SpareFull,
}

impl State {
    /// The word printed.
    pub fn name(self) -> &'static str {
        match self {
            State::Operational => "operational",
            State::Maintenance => "maintenance",
            State::Degraded => "degraded",
            State::SpareFull => "spare_full",
        }
    }
}

/// A device number, printed `major:minor`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevNo(pub u32, pub u32);

/// Every figure of the status line, in field order.
#[derive(Clone, Copy, Debug)]
pub struct Status<'a> {
    /// 1: target version.
    pub version: &'a str,
    /// 2: main device.
    pub main: DevNo,
    /// 3: spare device.
    pub spare: DevNo,
    /// 4: reads submitted to the target.
    pub reads: u64,
    /// 5: writes submitted to the target.
    pub writes: u64,
    /// 6: I/Os sent to the spare (pool data and flushes).
    pub spare_ios: u64,
    /// 7: media errors seen on the main device.
    pub media_errors: u64,
    /// 8: active remaps.
    pub remaps: u64,
    /// 9: pool blocks in total.
    pub pool_blocks: u64,
    /// 10: pool blocks free.
    pub free: u64,
    /// 11: pending blocks.
    pub pending: u64,
    /// 12: relocations after write errors.
    pub write_relocations: u64,
    /// 13: proactive relocations (weak sectors found by the scan).
    pub proactive_relocations: u64,
    /// 14: metadata commits by this instance.
    pub commits: u64,
    /// 15: metadata sequence number.
    pub seq: u64,
    /// 16: lookup cache hits.
    pub cache_hits: u64,
    /// 17: lookup cache misses.
    pub cache_misses: u64,
    /// 18: blocks scanned in the current pass.
    pub scanned: u64,
    /// 19: scan passes completed.
    pub scan_passes: u64,
    /// 20: health score, 0 to 100.
    pub health: u8,
    /// 21: predicted seconds to spare exhaustion (0 = no trend).
    pub eta_secs: u64,
    /// 22: hotspots.
    pub hotspots: u64,
    /// 23: mean main-device I/O latency, microseconds.
    pub latency_us: u64,
    /// 24: alert threshold.
    pub alert_threshold: u8,
    /// 25: seconds since the last alert, if any.
    pub since_alert: Option<u64>,
    /// 26: state.
    pub state: State,
}

impl fmt::Display for Status<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self;
        write!(f, "{} {}:{} {}:{}", s.version, s.main.0, s.main.1, s.spare.0, s.spare.1)?;
        // Fields 4 to 24, in order.
        let numbers: [u64; 21] = [
            s.reads, s.writes, s.spare_ios, s.media_errors, s.remaps, s.pool_blocks, s.free, s.pending,
            s.write_relocations, s.proactive_relocations, s.commits, s.seq, s.cache_hits, s.cache_misses,
            s.scanned, s.scan_passes, u64::from(s.health), s.eta_secs, s.hotspots, s.latency_us,
            u64::from(s.alert_threshold),
        ];
        for n in numbers {
            write!(f, " {n}")?;
        }
        f.write_str(" ")?;
        match s.since_alert {
            Some(t) => write!(f, "{t}")?,
            None => f.write_str("-")?,
        }
        write!(f, " {}", s.state.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_six_fields_in_order() {
        let s = Status {
            version: "0.2.0",
            main: DevNo(7, 0),
            spare: DevNo(7, 1),
            reads: 4,
            writes: 5,
            spare_ios: 6,
            media_errors: 7,
            remaps: 8,
            pool_blocks: 9,
            free: 10,
            pending: 11,
            write_relocations: 12,
            proactive_relocations: 13,
            commits: 14,
            seq: 15,
            cache_hits: 16,
            cache_misses: 17,
            scanned: 18,
            scan_passes: 19,
            health: 20,
            eta_secs: 21,
            hotspots: 22,
            latency_us: 23,
            alert_threshold: 24,
            since_alert: None,
            state: State::SpareFull,
        };
        let text = s.to_string();
        let f: Vec<&str> = text.split(' ').collect();
        assert_eq!(f.len(), 26);
        assert_eq!(&f[..3], &["0.2.0", "7:0", "7:1"]);
        for (i, v) in f[3..24].iter().enumerate() {
            assert_eq!(v.parse::<usize>().unwrap(), i + 4, "field {}", i + 4);
        }
        assert_eq!(&f[24..], &["-", "spare_full"]);
        let t = Status { since_alert: Some(3), state: State::Maintenance, ..s }.to_string();
        assert!(t.ends_with(" 24 3 maintenance"));
    }
}
