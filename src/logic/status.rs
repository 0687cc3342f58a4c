// SPDX-License-Identifier: GPL-2.0

//! The `dmsetup status` line: 26 fields, and two appended since (docs/status.md).

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
    /// The main device stopped answering (every probe failed): nothing is relocated; blocks
    /// on the spare are still served. Shown before any other state.
    MainLost,
}

impl State {
    /// The state a word names.
    #[allow(dead_code)] // the host's parser
    pub fn parse(word: &str) -> Option<State> {
        [State::Operational, State::Maintenance, State::Degraded, State::SpareFull, State::MainLost]
            .into_iter()
            .find(|s| s.name() == word)
    }

    /// The word printed.
    pub fn name(self) -> &'static str {
        match self {
            State::Operational => "operational",
            State::Maintenance => "maintenance",
            State::Degraded => "degraded",
            State::SpareFull => "spare_full",
            State::MainLost => "main_lost",
        }
    }
}

/// A device number, printed `major:minor`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevNo(pub u32, pub u32);

impl DevNo {
    /// Parses `major:minor`.
    #[allow(dead_code)] // the host's parser
    pub fn parse(s: &str) -> Option<DevNo> {
        let (a, b) = s.split_once(':')?;
        Some(DevNo(super::args::parse_u32(a.as_bytes())?, super::args::parse_u32(b.as_bytes())?))
    }
}

/// Fields every version prints. A parser accepts more (later versions append fields) but
/// not fewer: an older module's 26-field line still parses, its appended fields `None`.
pub const FIELDS: usize = 26;
/// Fields this version prints ([`FIELDS`] and the appended ones).
pub const FIELDS_NOW: usize = 28;

/// Why a status line was not one of ours.
#[allow(dead_code)] // the host's parser
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusError {
    /// Fewer than [`FIELDS`] fields (the number found).
    TooFewFields(usize),
    /// Field `n` (1-based) is not what it must be.
    BadField(usize),
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusError::TooFewFields(n) => write!(f, "the status has {n} fields, not the {FIELDS} of a dm-remap target"),
            StatusError::BadField(i) => write!(f, "status field {i} is not valid"),
        }
    }
}

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
    /// 27: main-device errors that one retry cured (a cured write relocates nothing; a
    /// cured read marks its block weak, as before); `None` from a module
    /// that prints only 26 fields.
    pub retried_ok: Option<u64>,
    /// 28: main-device errors that were not media errors (passed on, no pool block).
    pub other_errors: Option<u64>,
}

#[allow(dead_code)] // the host's parser (dmremap, the tests); the kernel only prints
impl<'a> Status<'a> {
    /// Parses the fields after `<start> <len> remap` (or a whole `dmsetup status` line of one
    /// target): the one parser of the status line, for `dmremap` and the tests. Accepts
    /// [`FIELDS`] or more fields, so fields appended later do not break deployed tools.
    pub fn parse(line: &'a str) -> Result<Status<'a>, StatusError> {
        let mut words = line.split_ascii_whitespace().peekable();
        let mut head: [&str; 3] = [""; 3];
        let mut f: [&str; FIELDS_NOW] = [""; FIELDS_NOW];
        let mut n = 0;
        // A `dmsetup status` line starts with `<start> <len> remap`.
        let all: [Option<&str>; 3] = [words.next(), words.next(), words.next()];
        let prefixed = matches!(all, [Some(a), Some(b), Some("remap")]
            if super::args::parse_u64(a.as_bytes()).is_some() && super::args::parse_u64(b.as_bytes()).is_some());
        if !prefixed {
            for w in all.into_iter().flatten() {
                head[n] = w;
                n += 1;
            }
            f[..n].copy_from_slice(&head[..n]);
        }
        for w in words {
            if n < FIELDS_NOW {
                f[n] = w;
            }
            n += 1;
        }
        if n < FIELDS {
            return Err(StatusError::TooFewFields(n));
        }
        let num = |i: usize| super::args::parse_u64(f[i - 1].as_bytes()).ok_or(StatusError::BadField(i));
        let small = |i: usize| num(i).and_then(|v| u8::try_from(v).map_err(|_| StatusError::BadField(i)));
        Ok(Status {
            version: f[0],
            main: DevNo::parse(f[1]).ok_or(StatusError::BadField(2))?,
            spare: DevNo::parse(f[2]).ok_or(StatusError::BadField(3))?,
            reads: num(4)?,
            writes: num(5)?,
            spare_ios: num(6)?,
            media_errors: num(7)?,
            remaps: num(8)?,
            pool_blocks: num(9)?,
            free: num(10)?,
            pending: num(11)?,
            write_relocations: num(12)?,
            proactive_relocations: num(13)?,
            commits: num(14)?,
            seq: num(15)?,
            cache_hits: num(16)?,
            cache_misses: num(17)?,
            scanned: num(18)?,
            scan_passes: num(19)?,
            health: small(20)?,
            eta_secs: num(21)?,
            hotspots: num(22)?,
            latency_us: num(23)?,
            alert_threshold: small(24)?,
            since_alert: if f[24] == "-" { None } else { Some(num(25)?) },
            state: State::parse(f[25]).ok_or(StatusError::BadField(26))?,
            retried_ok: if n > 26 { Some(num(27)?) } else { None },
            other_errors: if n > 27 { Some(num(28)?) } else { None },
        })
    }
}

impl PartialEq for Status<'_> {
    fn eq(&self, o: &Self) -> bool {
        // Every field, through the one printer: equal lines are equal statuses.
        let mut a = [0u8; 512];
        let mut b = [0u8; 512];
        let (Some(a), Some(b)) = (print_into(self, &mut a), print_into(o, &mut b)) else { return false };
        a == b
    }
}

/// Prints `s` into `buf`, if it fits.
fn print_into<'b>(s: &Status<'_>, buf: &'b mut [u8]) -> Option<&'b [u8]> {
    struct W<'b> {
        buf: &'b mut [u8],
        len: usize,
    }
    impl fmt::Write for W<'_> {
        fn write_str(&mut self, t: &str) -> fmt::Result {
            let end = self.len.checked_add(t.len()).filter(|&e| e <= self.buf.len()).ok_or(fmt::Error)?;
            self.buf[self.len..end].copy_from_slice(t.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    let mut w = W { buf, len: 0 };
    fmt::write(&mut w, format_args!("{s}")).ok()?;
    let len = w.len;
    Some(&w.buf[..len])
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
        write!(f, " {}", s.state.name())?;
        // Appended fields print only as a pair, so that a printed line always parses back.
        if let (Some(a), Some(b)) = (s.retried_ok, s.other_errors) {
            write!(f, " {a} {b}")?;
        }
        Ok(())
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
            retried_ok: None,
            other_errors: None,
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
        assert_eq!(Status::parse(&text), Ok(s));
        assert_eq!(Status::parse(&format!("0 32768 remap {text}")), Ok(s), "a whole dmsetup line");
        let now = Status { retried_ok: Some(27), other_errors: Some(28), ..s };
        assert_eq!(now.to_string(), format!("{text} 27 28"), "the two appended fields");
        assert_eq!(Status::parse(&format!("{text} 27 28")), Ok(now));
        assert_eq!(Status::parse(&format!("{text} 27 28 29 x")), Ok(now), "fields appended later are ignored");
        assert_eq!(Status::parse(&format!("{text} 27 x")), Err(StatusError::BadField(28)));
        assert_eq!(Status::parse(&text).map(|p| (p.retried_ok, p.other_errors)), Ok((None, None)), "an older module's line");
    }

    #[test]
    fn refusals() {
        let good = "0.1.0 7:0 7:1 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 - operational";
        assert!(Status::parse(good).is_ok());
        assert_eq!(Status::parse(""), Err(StatusError::TooFewFields(0)));
        assert_eq!(Status::parse("0 100 linear"), Err(StatusError::TooFewFields(3)));
        assert_eq!(Status::parse(&good.replace(" -", "")), Err(StatusError::TooFewFields(25)));
        for (from, to, field) in [
            ("7:0", "7", 2),
            ("7:1", "x:1", 3),
            (" 8 ", " -8 ", 8),
            (" 20 ", " 256 ", 20),
            (" 24 ", " 999 ", 24),
            (" - ", " x ", 25),
            ("operational", "fine", 26),
        ] {
            assert_eq!(Status::parse(&good.replacen(from, to, 1)), Err(StatusError::BadField(field)), "{from} -> {to}");
        }
    }

    proptest::proptest! {
        /// Print then parse gives back every field.
        #[test]
        fn round_trip(
            n in proptest::array::uniform19(proptest::num::u64::ANY),
            devs in proptest::array::uniform4(proptest::num::u32::ANY),
            health in proptest::num::u8::ANY,
            thr in proptest::num::u8::ANY,
            since in proptest::option::of(proptest::num::u64::ANY),
            st in 0usize..5,
            extra in proptest::option::of((proptest::num::u64::ANY, proptest::num::u64::ANY)),
        ) {
            let state = [State::Operational, State::Maintenance, State::Degraded, State::SpareFull, State::MainLost][st];
            let s = Status {
                version: "0.1.0",
                main: DevNo(devs[0], devs[1]),
                spare: DevNo(devs[2], devs[3]),
                reads: n[0], writes: n[1], spare_ios: n[2], media_errors: n[3], remaps: n[4],
                pool_blocks: n[5], free: n[6], pending: n[7], write_relocations: n[8],
                proactive_relocations: n[9], commits: n[10], seq: n[11], cache_hits: n[12],
                cache_misses: n[13], scanned: n[14], scan_passes: n[15], health, eta_secs: n[16],
                hotspots: n[17], latency_us: n[18], alert_threshold: thr, since_alert: since, state,
                retried_ok: extra.map(|e| e.0), other_errors: extra.map(|e| e.1),
            };
            let text = s.to_string();
            let back = Status::parse(&text).unwrap();
            proptest::prop_assert_eq!(back.to_string(), text.clone());
            proptest::prop_assert_eq!((back.remaps, back.health, back.since_alert, back.state, back.main), (s.remaps, health, since, state, s.main));
            proptest::prop_assert_eq!((back.retried_ok, back.other_errors), (s.retried_ok, s.other_errors));
        }
    }
}
