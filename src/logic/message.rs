// SPDX-License-Identifier: GPL-2.0

//! `dmsetup message <dev> 0 ...`: the commands the target accepts.

use super::args::{parse_u32, parse_u64};
use super::scrub::valid_speeds;
use core::ffi::CStr;

/// Largest `list_remaps` count per message (the reply must fit dm's result buffer).
pub const MAX_LIST: u32 = 64;
/// Largest `scan_interval`, seconds (one day).
pub const MAX_SCAN_INTERVAL: u32 = 86_400;

/// A parsed message.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Message {
    /// `help`: list the messages.
    Help,
    /// `maintenance on|off`.
    Maintenance(bool),
    /// `alert_threshold <0-100>`.
    AlertThreshold(u8),
    /// `scan start|stop`.
    Scan(bool),
    /// `scan_interval <seconds>` (1 to 86400): the rest between two passes.
    ScanInterval(u32),
    /// `scrub_speed <min> <max>`: the floor and ceiling of the scrub's rate, MiB/s.
    ScrubSpeed {
        /// Rate under foreground load.
        min: u32,
        /// Rate while idle.
        max: u32,
    },
    /// `scan_status`: where the scrub is, how fast it goes.
    ScanStatus,
    /// `remap <sector>`: relocate the block holding this sector (maintenance mode only).
    Remap(u64),
    /// `query <sector>`: where the block holding this sector lives.
    Query(u64),
    /// `list_remaps [<first> <count>]`: remaps from the `first`-th, at most `count`.
    ListRemaps {
        /// Index of the first remap listed.
        first: u64,
        /// How many, at most [`MAX_LIST`].
        count: u32,
    },
    /// `hotspots`: the error clusters.
    Hotspots,
    /// `clear_stats`: zero the I/O and error counters.
    ClearStats,
    /// `sync`: flush both devices.
    Sync,
    /// `latency`: the main device's I/O latency as a sum and a count ([`LatencyReply`]).
    Latency,
    /// `bad_blocks [<first> <count>]`: the unreadable blocks not yet rewritten, from the
    /// `first`-th, at most `count`, in sectors of the device ([`BadBlocksReply`]).
    BadBlocks {
        /// Index of the first block listed.
        first: u64,
        /// How many, at most [`MAX_LIST`].
        count: u32,
    },
}

/// Why a message was refused.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum MessageError {
    /// No words.
    Empty,
    /// A command this target does not know.
    Unknown,
    /// Known command, wrong number of arguments.
    ArgCount,
    /// An argument that is not a valid value.
    BadValue,
    /// `scan_rate`, replaced by `scrub_speed`.
    ScanRateReplaced,
}

impl MessageError {
    /// A one-line reason for the kernel log.
    pub fn message(self) -> &'static CStr {
        match self {
            MessageError::Empty => c"empty message",
            MessageError::Unknown => c"unknown message (try: help)",
            MessageError::ArgCount => c"wrong number of arguments (try: help)",
            MessageError::BadValue => c"invalid argument value (try: help)",
            MessageError::ScanRateReplaced => {
                c"scan_rate <blocks/s> is no longer accepted: use scrub_speed <min MiB/s> <max MiB/s>"
            }
        }
    }
}

/// The reply to `help`.
pub const HELP: &str = "help | maintenance on|off | alert_threshold <0-100> | scan start|stop | \
scan_interval <1-86400 s> | scrub_speed <min MiB/s> <max MiB/s> | scan_status | remap <sector> | query <sector> | \
list_remaps [<first> <count 1-64>] | bad_blocks [<first> <count 1-64>] | hotspots | clear_stats | sync | latency";

fn on_off(s: &[u8], on: &[u8], off: &[u8]) -> Result<bool, MessageError> {
    if s == on {
        Ok(true)
    } else if s == off {
        Ok(false)
    } else {
        Err(MessageError::BadValue)
    }
}

fn ranged(s: &[u8], lo: u32, hi: u32) -> Result<u32, MessageError> {
    parse_u32(s).filter(|v| (lo..=hi).contains(v)).ok_or(MessageError::BadValue)
}

impl Message {
    /// Parses the words after `dmsetup message <dev> 0`.
    pub fn parse<'a>(mut words: impl Iterator<Item = &'a [u8]>) -> Result<Message, MessageError> {
        let cmd = words.next().ok_or(MessageError::Empty)?;
        let mut args: [&[u8]; 3] = [&[]; 3];
        let mut n = 0;
        for w in words {
            if n == args.len() {
                return Err(MessageError::ArgCount);
            }
            args[n] = w;
            n += 1;
        }
        let args = &args[..n];
        let want = |k: usize| if n == k { Ok(()) } else { Err(MessageError::ArgCount) };
        Ok(match cmd {
            b"help" => {
                want(0)?;
                Message::Help
            }
            b"maintenance" => {
                want(1)?;
                Message::Maintenance(on_off(args[0], b"on", b"off")?)
            }
            b"alert_threshold" => {
                want(1)?;
                Message::AlertThreshold(ranged(args[0], 0, 100)? as u8)
            }
            b"scan" => {
                want(1)?;
                Message::Scan(on_off(args[0], b"start", b"stop")?)
            }
            b"scan_interval" => {
                want(1)?;
                Message::ScanInterval(ranged(args[0], 1, MAX_SCAN_INTERVAL)?)
            }
            b"scan_rate" => return Err(MessageError::ScanRateReplaced),
            b"scrub_speed" => {
                want(2)?;
                let (min, max) = (parse_u32(args[0]), parse_u32(args[1]));
                match (min, max) {
                    (Some(min), Some(max)) if valid_speeds(min, max) => Message::ScrubSpeed { min, max },
                    _ => return Err(MessageError::BadValue),
                }
            }
            b"scan_status" => {
                want(0)?;
                Message::ScanStatus
            }
            b"remap" | b"query" => {
                want(1)?;
                let s = parse_u64(args[0]).ok_or(MessageError::BadValue)?;
                if cmd == b"remap" {
                    Message::Remap(s)
                } else {
                    Message::Query(s)
                }
            }
            b"list_remaps" => match n {
                0 => Message::ListRemaps { first: 0, count: MAX_LIST },
                2 => Message::ListRemaps {
                    first: parse_u64(args[0]).ok_or(MessageError::BadValue)?,
                    count: ranged(args[1], 1, MAX_LIST)?,
                },
                _ => return Err(MessageError::ArgCount),
            },
            b"bad_blocks" => match n {
                0 => Message::BadBlocks { first: 0, count: MAX_LIST },
                2 => Message::BadBlocks {
                    first: parse_u64(args[0]).ok_or(MessageError::BadValue)?,
                    count: ranged(args[1], 1, MAX_LIST)?,
                },
                _ => return Err(MessageError::ArgCount),
            },
            b"hotspots" => {
                want(0)?;
                Message::Hotspots
            }
            b"clear_stats" => {
                want(0)?;
                Message::ClearStats
            }
            b"sync" => {
                want(0)?;
                Message::Sync
            }
            b"latency" => {
                want(0)?;
                Message::Latency
            }
            _ => return Err(MessageError::Unknown),
        })
    }
}

/// Where a block lives: the reply to `query` (and, `Spare` without `spare_sector`, to
/// `remap`). The kernel prints it with `Display`, `dmremap` reads it with `parse`.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Location {
    /// On the main device.
    Main,
    /// Unreadable on the main device, waiting for a write.
    Pending,
    /// In pool block `pool_block`, at `spare_sector` of the spare (`query` gives it, `remap`
    /// does not).
    Spare {
        /// The pool block.
        pool_block: u64,
        /// Its first sector on the spare.
        spare_sector: Option<u64>,
    },
}

/// `block=<b> location=...`: the reply to `query` and `remap`.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct BlockReply {
    /// The relocation block holding the sector asked about.
    pub block: u64,
    /// Where it lives.
    pub location: Location,
}

impl core::fmt::Display for BlockReply {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "block={} location=", self.block)?;
        match self.location {
            Location::Main => f.write_str("main"),
            Location::Pending => f.write_str("pending"),
            Location::Spare { pool_block, spare_sector: None } => write!(f, "spare pool_block={pool_block}"),
            Location::Spare { pool_block, spare_sector: Some(s) } => write!(f, "spare pool_block={pool_block} spare_sector={s}"),
        }
    }
}

#[allow(dead_code)] // the host's parser
impl BlockReply {
    /// Parses a `query` or `remap` reply.
    pub fn parse(s: &str) -> Option<BlockReply> {
        let mut w = s.split_ascii_whitespace();
        let block = parse_u64(w.next()?.strip_prefix("block=")?.as_bytes())?;
        let at = w.next()?.strip_prefix("location=")?;
        let mut kv = |key: &str| -> Option<Option<u64>> {
            match w.next() {
                None => Some(None),
                Some(x) => Some(Some(parse_u64(x.strip_prefix(key)?.as_bytes())?)),
            }
        };
        let location = match at {
            "main" => Location::Main,
            "pending" => Location::Pending,
            "spare" => {
                let pool_block = kv("pool_block=")??;
                Location::Spare { pool_block, spare_sector: kv("spare_sector=")? }
            }
            _ => return None,
        };
        if w.next().is_some() || (matches!(location, Location::Main | Location::Pending) && s.split_ascii_whitespace().count() != 2) {
            return None;
        }
        Some(BlockReply { block, location })
    }
}

/// One line of a `list_remaps` reply: `<main_block> <pool_block>` ([`parse_remap_line`]
/// reads it).
pub struct RemapLine(pub u64, pub u64);

impl core::fmt::Display for RemapLine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

/// One line of a `hotspots` reply: `<first_block>-<last_block> <errors>`
/// ([`parse_hotspot_line`] reads it).
pub struct HotspotLine(pub u64, pub u64, pub u64);

impl core::fmt::Display for HotspotLine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}-{} {}", self.0, self.1, self.2)
    }
}

/// One line of a `list_remaps` reply: `<main_block> <pool_block>`.
#[allow(dead_code)] // the host's parser
pub fn parse_remap_line(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.trim().split_once(' ')?;
    Some((parse_u64(a.as_bytes())?, parse_u64(b.as_bytes())?))
}

/// One line of a `hotspots` reply: `<first_block>-<last_block> <errors>`.
#[allow(dead_code)] // the host's parser
pub fn parse_hotspot_line(s: &str) -> Option<(u64, u64, u64)> {
    let (range, n) = s.trim().split_once(' ')?;
    let (a, b) = range.split_once('-')?;
    Some((parse_u64(a.as_bytes())?, parse_u64(b.as_bytes())?, parse_u64(n.as_bytes())?))
}

/// Whether the scrub runs, as `scan_status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrubState {
    /// Reading (or waiting for its rate).
    On,
    /// Switched off (`scan stop`, `no_scan`).
    Off,
    /// On, but held: maintenance mode, a degraded device, or suspended.
    Paused,
    /// On, between two passes (`scan_interval`).
    Resting,
}

impl ScrubState {
    fn word(self) -> &'static str {
        match self {
            ScrubState::On => "on",
            ScrubState::Off => "off",
            ScrubState::Paused => "paused",
            ScrubState::Resting => "resting",
        }
    }
}

/// The reply to `scan_status`: one line of `key=value` words,
/// `scan=on position=<block> blocks=<n> percent=<p.p> rate_kib=<KiB/s> eta_secs=<s|-> passes=<n> busy=<0|1> speed_min=<MiB/s> speed_max=<MiB/s>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanReport {
    /// On, off, paused or resting.
    pub state: ScrubState,
    /// The next block the scrub reads.
    pub position: u64,
    /// Blocks in a pass (the main device's).
    pub blocks: u64,
    /// Measured rate, KiB/s (0 when not reading).
    pub rate_kib: u64,
    /// Passes completed.
    pub passes: u64,
    /// Whether the limiter sees foreground I/O (reading at the floor).
    pub busy: bool,
    /// Floor, MiB/s.
    pub speed_min: u32,
    /// Ceiling, MiB/s.
    pub speed_max: u32,
    /// Block size, bytes (for the ETA; not printed).
    pub block_size: u32,
}

impl ScanReport {
    /// Tenths of a percent of the pass done.
    pub fn permille(&self) -> u64 {
        let p = self.position.min(self.blocks);
        match p.checked_mul(1000) {
            Some(x) => x.checked_div(self.blocks),
            None => p.checked_div(self.blocks / 1000),
        }
        .unwrap_or(0)
    }

    /// Seconds to the end of the pass at the measured rate (none when not reading).
    pub fn eta_secs(&self) -> Option<u64> {
        if self.state != ScrubState::On {
            return None;
        }
        let left = self.blocks.saturating_sub(self.position).saturating_mul(u64::from(self.block_size));
        (left / 1024).checked_div(self.rate_kib)
    }
}

impl core::fmt::Display for ScanReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let p = self.permille();
        write!(
            f,
            "scan={} position={} blocks={} percent={}.{} rate_kib={} eta_secs=",
            self.state.word(),
            self.position,
            self.blocks,
            p / 10,
            p % 10,
            self.rate_kib
        )?;
        match self.eta_secs() {
            Some(s) => write!(f, "{s}")?,
            None => f.write_str("-")?,
        }
        write!(f, " passes={} busy={} speed_min={} speed_max={}", self.passes, u8::from(self.busy), self.speed_min, self.speed_max)
    }
}

/// What a host reads back from a `scan_status` reply (the ETA and percent are derived).
#[allow(dead_code)] // the host's parser
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanReply {
    /// The `scan=` word.
    pub state: ScrubState,
    /// `position=`.
    pub position: u64,
    /// `blocks=`.
    pub blocks: u64,
    /// `percent=` in tenths.
    pub permille: u64,
    /// `rate_kib=`.
    pub rate_kib: u64,
    /// `eta_secs=` (`-`: none).
    pub eta_secs: Option<u64>,
    /// `passes=`.
    pub passes: u64,
    /// `busy=`.
    pub busy: bool,
    /// `speed_min=`.
    pub speed_min: u32,
    /// `speed_max=`.
    pub speed_max: u32,
}

#[allow(dead_code)] // the host's parser
impl ScanReply {
    /// Parses a `scan_status` reply; `None` unless every word is there, in order.
    pub fn parse(s: &str) -> Option<ScanReply> {
        let mut w = s.split_ascii_whitespace();
        let mut val = |key: &str| -> Option<&str> { w.next()?.strip_prefix(key)?.strip_prefix('=') };
        let state = match val("scan")? {
            "on" => ScrubState::On,
            "off" => ScrubState::Off,
            "paused" => ScrubState::Paused,
            "resting" => ScrubState::Resting,
            _ => return None,
        };
        let position = parse_u64(val("position")?.as_bytes())?;
        let blocks = parse_u64(val("blocks")?.as_bytes())?;
        let (whole, tenth) = val("percent")?.split_once('.')?;
        if tenth.len() != 1 {
            return None;
        }
        let permille = parse_u64(whole.as_bytes())?.checked_mul(10)?.checked_add(parse_u64(tenth.as_bytes())?)?;
        let rate_kib = parse_u64(val("rate_kib")?.as_bytes())?;
        let eta_secs = match val("eta_secs")? {
            "-" => None,
            n => Some(parse_u64(n.as_bytes())?),
        };
        let passes = parse_u64(val("passes")?.as_bytes())?;
        let busy = match val("busy")? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let speed_min = parse_u32(val("speed_min")?.as_bytes())?;
        let speed_max = parse_u32(val("speed_max")?.as_bytes())?;
        if w.next().is_some() {
            return None;
        }
        Some(ScanReply { state, position, blocks, permille, rate_kib, eta_secs, passes, busy, speed_min, speed_max })
    }
}

/// The reply to `latency`: `main_sum_ns=<n> main_count=<n>`, the summed latency (ns) of the
/// main device's completed I/Os and how many there were, since creation or `clear_stats`.
/// A sum and a count, not a mean, so that a monitor computes the mean over its own
/// interval (Prometheus: `rate(_sum) / rate(_count)`).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct LatencyReply {
    /// Summed latency, nanoseconds.
    pub main_sum_ns: u64,
    /// I/Os summed.
    pub main_count: u64,
}

impl core::fmt::Display for LatencyReply {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "main_sum_ns={} main_count={}", self.main_sum_ns, self.main_count)
    }
}

#[allow(dead_code)] // the host's parser
impl LatencyReply {
    /// Parses a `latency` reply; `None` unless both words are there, in order, and nothing else.
    pub fn parse(s: &str) -> Option<LatencyReply> {
        let mut w = s.split_ascii_whitespace();
        let mut val = |key: &str| -> Option<u64> { parse_u64(w.next()?.strip_prefix(key)?.strip_prefix('=')?.as_bytes()) };
        let r = LatencyReply { main_sum_ns: val("main_sum_ns")?, main_count: val("main_count")? };
        w.next().is_none().then_some(r)
    }
}

/// The first line of a `bad_blocks` reply (docs/messages.md); one line per block follows,
/// `<sector> <sectors>` ([`parse_remap_line`] reads it).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct BadBlocksReply {
    /// Unreadable blocks not yet rewritten (status field 11).
    pub blocks: u64,
    /// Of them, in the durable list on the spare.
    pub on_spare: u64,
    /// Whether the spare keeps a list (format v2 with `BADBLOCKS`).
    pub list: bool,
    /// More blocks were unreadable than the list holds since it was last empty.
    pub overflow: bool,
}

impl core::fmt::Display for BadBlocksReply {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let list = if self.list { "on" } else { "off" };
        write!(f, "blocks={} on_spare={} list={} overflow={}", self.blocks, self.on_spare, list, u8::from(self.overflow))
    }
}

#[allow(dead_code)] // the host's parser
impl BadBlocksReply {
    /// Parses the first line of a `bad_blocks` reply; `None` unless every word is there, in
    /// order, and nothing else.
    pub fn parse(s: &str) -> Option<BadBlocksReply> {
        let mut w = s.split_ascii_whitespace();
        let mut val = |key: &str| -> Option<&str> { w.next()?.strip_prefix(key)?.strip_prefix('=') };
        let blocks = parse_u64(val("blocks")?.as_bytes())?;
        let on_spare = parse_u64(val("on_spare")?.as_bytes())?;
        let list = match val("list")? {
            "on" => true,
            "off" => false,
            _ => return None,
        };
        let overflow = match val("overflow")? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        w.next().is_none().then_some(BadBlocksReply { blocks, on_spare, list, overflow })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_blocks_reply_round_trip() {
        let r = BadBlocksReply { blocks: 3, on_spare: 2, list: true, overflow: false };
        let s = r.to_string();
        assert_eq!(s, "blocks=3 on_spare=2 list=on overflow=0");
        assert_eq!(BadBlocksReply::parse(&s), Some(r));
        assert_eq!(BadBlocksReply::parse("blocks=3 on_spare=2 list=off overflow=1"), Some(BadBlocksReply { list: false, overflow: true, ..r }));
        assert_eq!(BadBlocksReply::parse("blocks=3 on_spare=2 list=on"), None);
        assert_eq!(BadBlocksReply::parse("blocks=3 on_spare=2 list=maybe overflow=0"), None);
        assert_eq!(BadBlocksReply::parse("blocks=3 on_spare=2 list=on overflow=0 x"), None);
        assert_eq!(p("bad_blocks"), Ok(Message::BadBlocks { first: 0, count: 64 }));
        assert_eq!(p("bad_blocks 5 10"), Ok(Message::BadBlocks { first: 5, count: 10 }));
        assert_eq!(p("bad_blocks 5"), Err(MessageError::ArgCount));
        assert_eq!(p("bad_blocks 0 65"), Err(MessageError::BadValue));
        assert_eq!(p("bad_blocks x 1"), Err(MessageError::BadValue));
    }

    fn p(s: &str) -> Result<Message, MessageError> {
        Message::parse(s.split_whitespace().map(str::as_bytes))
    }

    #[test]
    fn accepted() {
        use Message::*;
        for (s, m) in [
            ("help", Help),
            ("maintenance on", Maintenance(true)),
            ("maintenance off", Maintenance(false)),
            ("alert_threshold 0", AlertThreshold(0)),
            ("alert_threshold 100", AlertThreshold(100)),
            ("scan start", Scan(true)),
            ("scan stop", Scan(false)),
            ("scan_interval 86400", ScanInterval(86400)),
            ("scrub_speed 1 32", ScrubSpeed { min: 1, max: 32 }),
            ("scrub_speed 100000 100000", ScrubSpeed { min: 100000, max: 100000 }),
            ("scan_status", ScanStatus),
            ("remap 4096", Remap(4096)),
            ("query 0", Query(0)),
            ("list_remaps", ListRemaps { first: 0, count: 64 }),
            ("list_remaps 10 5", ListRemaps { first: 10, count: 5 }),
            ("hotspots", Hotspots),
            ("clear_stats", ClearStats),
            ("sync", Sync),
        ] {
            assert_eq!(p(s), Ok(m), "{s}");
        }
    }

    #[test]
    fn refused() {
        use MessageError::*;
        for (s, e) in [
            ("", Empty),
            ("frobnicate", Unknown),
            ("HELP", Unknown),
            ("help me", ArgCount),
            ("maintenance", ArgCount),
            ("maintenance yes", BadValue),
            ("alert_threshold 101", BadValue),
            ("alert_threshold -1", BadValue),
            ("scan go", BadValue),
            ("scan_interval 0", BadValue),
            ("scan_rate 16", ScanRateReplaced),
            ("scan_rate", ScanRateReplaced),
            ("scrub_speed 1", ArgCount),
            ("scrub_speed 0 32", BadValue),
            ("scrub_speed 33 32", BadValue),
            ("scrub_speed 1 100001", BadValue),
            ("scrub_speed x 32", BadValue),
            ("scan_status now", ArgCount),
            ("remap", ArgCount),
            ("remap x", BadValue),
            ("query 1 2", ArgCount),
            ("list_remaps 1", ArgCount),
            ("list_remaps 0 65", BadValue),
            ("list_remaps 0 0", BadValue),
            ("sync now", ArgCount),
            ("clear_stats 1 2 3 4", ArgCount),
        ] {
            assert_eq!(p(s), Err(e), "{s:?}");
            assert!(!e.message().to_bytes().is_empty());
        }
    }

    #[test]
    fn latency_reply_round_trip() {
        for r in [
            LatencyReply { main_sum_ns: 0, main_count: 0 },
            LatencyReply { main_sum_ns: u64::MAX, main_count: 1 },
            LatencyReply { main_sum_ns: 41_000, main_count: u64::MAX },
        ] {
            assert_eq!(LatencyReply::parse(&r.to_string()), Some(r), "{r}");
        }
        for bad in ["", "main_sum_ns=1", "main_count=1 main_sum_ns=1", "main_sum_ns=1 main_count=x", "main_sum_ns=1 main_count=2 x", "main_sum_ns=-1 main_count=2"] {
            assert_eq!(LatencyReply::parse(bad), None, "{bad:?}");
        }
        assert_eq!(p("latency"), Ok(Message::Latency));
        assert_eq!(p("latency 1"), Err(MessageError::ArgCount));
    }

    #[test]
    fn replies_round_trip() {
        for r in [
            BlockReply { block: 0, location: Location::Main },
            BlockReply { block: 7, location: Location::Pending },
            BlockReply { block: u64::MAX, location: Location::Spare { pool_block: 3, spare_sector: None } },
            BlockReply { block: 9, location: Location::Spare { pool_block: 0, spare_sector: Some(96) } },
        ] {
            assert_eq!(BlockReply::parse(&r.to_string()), Some(r), "{r}");
        }
        for bad in ["", "block=1", "block=x location=main", "block=1 location=moon", "block=1 location=main x=1",
            "block=1 location=spare", "block=1 location=spare pool=1", "block=1 location=spare pool_block=1 spare_sector=2 z"] {
            assert_eq!(BlockReply::parse(bad), None, "{bad:?}");
        }
        assert_eq!(parse_remap_line("10 0"), Some((10, 0)));
        assert_eq!(parse_remap_line("10"), None);
        assert_eq!(parse_hotspot_line("100-101 2"), Some((100, 101, 2)));
        assert_eq!(parse_hotspot_line("100 2"), None);
        assert_eq!(parse_remap_line(&RemapLine(7, 9).to_string()), Some((7, 9)));
        assert_eq!(parse_hotspot_line(&HotspotLine(1, 4, 6).to_string()), Some((1, 4, 6)));
    }

    #[test]
    fn report_round_trip() {
        let r = ScanReport {
            state: ScrubState::On,
            position: 131072,
            blocks: 262144,
            rate_kib: 32768,
            passes: 2,
            busy: false,
            speed_min: 1,
            speed_max: 32,
            block_size: 4096,
        };
        let text = r.to_string();
        assert_eq!(
            text,
            "scan=on position=131072 blocks=262144 percent=50.0 rate_kib=32768 eta_secs=16 passes=2 busy=0 speed_min=1 speed_max=32"
        );
        let p = ScanReply::parse(&text).unwrap();
        assert_eq!((p.state, p.position, p.blocks, p.permille, p.rate_kib, p.eta_secs), (ScrubState::On, 131072, 262144, 500, 32768, Some(16)));
        assert_eq!((p.passes, p.busy, p.speed_min, p.speed_max), (2, false, 1, 32));
        let off = ScanReport { state: ScrubState::Off, rate_kib: 0, position: 1, blocks: 3, ..r };
        assert_eq!(
            off.to_string(),
            "scan=off position=1 blocks=3 percent=33.3 rate_kib=0 eta_secs=- passes=2 busy=0 speed_min=1 speed_max=32"
        );
        assert_eq!(ScanReply::parse(&off.to_string()).unwrap().eta_secs, None);
        for bad in ["", "scan=on", "scan=maybe position=1", &format!("{text} x=1"), &text.replace("percent=50.0", "percent=50")] {
            assert_eq!(ScanReply::parse(bad), None, "{bad:?}");
        }
        assert_eq!(ScanReport { blocks: 0, ..r }.permille(), 0);
    }
}
