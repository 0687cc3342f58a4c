// SPDX-License-Identifier: GPL-2.0

//! The table line: `<main_dev> <spare_dev> [<#feature_args> <feature_arg>...]`.
//!
//! Feature arguments, in the style of dm-integrity and dm-cache:
//! `block_size <bytes>`, `read_retries <n>`, `format`, `cache_size <entries>`,
//! `no_proactive`, `main_id <id>`, `alert_threshold <0-100>`, `no_scan`,
//! `scrub_speed_min <MiB/s>`, `scrub_speed_max <MiB/s>`, `main_lost_after <n>`.

use super::format::valid_block_size;
use super::mainid::MainId;
use super::scrub::{valid_speeds, DEFAULT_SPEED_MAX, DEFAULT_SPEED_MIN};
use core::ffi::CStr;
use core::fmt;

/// Default relocation block size in bytes.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;
/// Default number of retries of a failed read before the error is returned.
pub const DEFAULT_READ_RETRIES: u32 = 2;
/// Largest accepted `read_retries`.
pub const MAX_READ_RETRIES: u32 = 16;
/// Default alert threshold (health score below which an alert is raised).
pub const DEFAULT_ALERT_THRESHOLD: u8 = 50;
/// Default lookup cache size, entries.
pub const DEFAULT_CACHE_SIZE: u32 = 256;
/// Default run of failures on the main device, none cured by a retry, after which the
/// worker probes whether the main device is still there (`main_lost_after`).
pub const DEFAULT_MAIN_LOST_AFTER: u32 = 8;
/// Largest accepted `main_lost_after`.
pub const MAX_MAIN_LOST_AFTER: u32 = 1024;
/// Most arguments a table line may have.
const MAX_ARGS: usize = 24;
/// Number of distinct features.
const NFEATURES: usize = 11;

/// A feature argument, kept in the order given so the line prints back exactly.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Feature {
    /// `block_size <bytes>`.
    BlockSize,
    /// `read_retries <n>`.
    ReadRetries,
    /// `format`.
    Format,
    /// `cache_size <entries>`.
    CacheSize,
    /// `no_proactive`.
    NoProactive,
    /// `main_id <id>`.
    MainId,
    /// `alert_threshold <0-100>`.
    AlertThreshold,
    /// `no_scan`.
    NoScan,
    /// `scrub_speed_min <MiB/s>`.
    ScrubSpeedMin,
    /// `scrub_speed_max <MiB/s>`.
    ScrubSpeedMax,
    /// `main_lost_after <n>`.
    MainLostAfter,
}

/// A parsed table line. Devices are given as argument indices, so the caller can pass the
/// original C strings to the device lookup.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct TableLine {
    /// Index of the main device argument.
    pub main: usize,
    /// Index of the spare device argument.
    pub spare: usize,
    /// Relocation block size in bytes.
    pub block_size: u32,
    /// Retries of a failed read.
    pub read_retries: u32,
    /// Initialise a blank spare.
    pub format: bool,
    /// Lookup cache entries (0: no cache).
    pub cache_size: u32,
    /// Relocate weak blocks (readable only after retries, or very slow) before they fail.
    pub proactive: bool,
    /// The main device's id the spare must be recorded for (none: not checked).
    pub main_id: MainId,
    /// The alert threshold the target starts with (the message can change it until the
    /// next load).
    pub alert_threshold: u8,
    /// Whether the background scan starts on (`no_scan`: off).
    pub scan: bool,
    /// The scrub's floor, MiB/s (its rate under foreground load).
    pub scrub_speed_min: u32,
    /// The scrub's ceiling, MiB/s (its rate while the device is idle).
    pub scrub_speed_max: u32,
    /// Consecutive uncured main-device failures before the worker probes the main device
    /// (1 to [`MAX_MAIN_LOST_AFTER`]).
    pub main_lost_after: u32,
    /// The `#feature_args` number, if the line had one.
    pub feature_count: Option<u32>,
    order: [Option<Feature>; NFEATURES],
}

/// Why a table line was refused.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum TableError {
    /// Fewer than the two device arguments.
    TooFewArgs,
    /// More arguments than any valid line has.
    TooManyArgs,
    /// The feature-argument count is not a number.
    BadFeatureCount,
    /// The feature-argument count does not match the arguments that follow.
    FeatureCountMismatch,
    /// A feature argument this version does not know.
    UnknownFeature,
    /// The same feature twice.
    DuplicateFeature,
    /// A feature that takes a value has none.
    MissingValue,
    /// `block_size` is not a power of two from 512 to 65536.
    BadBlockSize,
    /// `read_retries` is not a number from 0 to 16.
    BadReadRetries,
    /// `cache_size` is not 0 or a power of two up to 65536.
    BadCacheSize,
    /// `main_id` is not 1 to 64 characters of `[A-Za-z0-9._:-]`.
    BadMainId,
    /// `alert_threshold` is not a number from 0 to 100.
    BadAlertThreshold,
    /// A scrub speed is not 1 to 100000, or the floor is above the ceiling.
    BadScrubSpeed,
    /// `main_lost_after` is not a number from 1 to 1024.
    BadMainLostAfter,
}

impl TableError {
    /// The message for `ti->error`.
    pub fn message(self) -> &'static CStr {
        match self {
            TableError::TooFewArgs => c"Invalid argument count: need <main_dev> <spare_dev>",
            TableError::TooManyArgs => c"Too many arguments",
            TableError::BadFeatureCount => c"Invalid number of feature arguments",
            TableError::FeatureCountMismatch => c"Feature argument count does not match the arguments given",
            TableError::UnknownFeature => c"Unknown feature argument",
            TableError::DuplicateFeature => c"Duplicate feature argument",
            TableError::MissingValue => c"Feature argument needs a value",
            TableError::BadBlockSize => c"Invalid block_size: must be a power of two from 512 to 65536",
            TableError::BadReadRetries => c"Invalid read_retries: must be 0 to 16",
            TableError::BadCacheSize => c"Invalid cache_size: must be 0 or a power of two from 2 to 65536",
            TableError::BadMainId => c"Invalid main_id: must be 1 to 64 characters of A-Z a-z 0-9 . _ : -",
            TableError::BadAlertThreshold => c"Invalid alert_threshold: must be 0 to 100",
            TableError::BadScrubSpeed => {
                c"Invalid scrub_speed_min/scrub_speed_max: must be 1 to 100000 MiB/s, the min not above the max"
            }
            TableError::BadMainLostAfter => c"Invalid main_lost_after: must be 1 to 1024",
        }
    }
}

impl TableLine {
    /// Parses the arguments after the target name.
    pub fn parse<'a>(args: impl Iterator<Item = &'a [u8]>) -> Result<Self, TableError> {
        let mut v: [&[u8]; MAX_ARGS] = [&[]; MAX_ARGS];
        let mut n = 0;
        for a in args {
            if n == MAX_ARGS {
                return Err(TableError::TooManyArgs);
            }
            v[n] = a;
            n += 1;
        }
        let v = &v[..n];
        if n < 2 {
            return Err(TableError::TooFewArgs);
        }
        let mut line = TableLine {
            main: 0,
            spare: 1,
            block_size: DEFAULT_BLOCK_SIZE,
            read_retries: DEFAULT_READ_RETRIES,
            format: false,
            cache_size: DEFAULT_CACHE_SIZE,
            proactive: true,
            main_id: MainId::NONE,
            alert_threshold: DEFAULT_ALERT_THRESHOLD,
            scan: true,
            scrub_speed_min: DEFAULT_SPEED_MIN,
            scrub_speed_max: DEFAULT_SPEED_MAX,
            main_lost_after: DEFAULT_MAIN_LOST_AFTER,
            feature_count: None,
            order: [None; NFEATURES],
        };
        let Some(count) = v.get(2) else { return Ok(line) };
        let count = parse_u32(count).ok_or(TableError::BadFeatureCount)?;
        let features = &v[3..];
        if count as usize != features.len() {
            return Err(TableError::FeatureCountMismatch);
        }
        line.feature_count = Some(count);
        let mut i = 0;
        let mut seen = 0;
        while i < features.len() {
            let f = match features[i] {
                b"block_size" => Feature::BlockSize,
                b"read_retries" => Feature::ReadRetries,
                b"format" => Feature::Format,
                b"cache_size" => Feature::CacheSize,
                b"no_proactive" => Feature::NoProactive,
                b"main_id" => Feature::MainId,
                b"alert_threshold" => Feature::AlertThreshold,
                b"no_scan" => Feature::NoScan,
                b"scrub_speed_min" => Feature::ScrubSpeedMin,
                b"scrub_speed_max" => Feature::ScrubSpeedMax,
                b"main_lost_after" => Feature::MainLostAfter,
                _ => return Err(TableError::UnknownFeature),
            };
            if line.order[..seen].contains(&Some(f)) {
                return Err(TableError::DuplicateFeature);
            }
            line.order[seen] = Some(f);
            seen += 1;
            i += 1;
            let mut value = || -> Result<&[u8], TableError> {
                let val = features.get(i).ok_or(TableError::MissingValue)?;
                i += 1;
                Ok(val)
            };
            match f {
                Feature::BlockSize => {
                    let bs = parse_u32(value()?).ok_or(TableError::BadBlockSize)?;
                    if !valid_block_size(bs) {
                        return Err(TableError::BadBlockSize);
                    }
                    line.block_size = bs;
                }
                Feature::ReadRetries => {
                    line.read_retries = parse_u32(value()?)
                        .filter(|&r| r <= MAX_READ_RETRIES)
                        .ok_or(TableError::BadReadRetries)?;
                }
                Feature::Format => line.format = true,
                Feature::CacheSize => {
                    line.cache_size = parse_u32(value()?)
                        .filter(|&c| c == 0 || (c.is_power_of_two() && (2..=super::cache::MAX_CACHE_SIZE).contains(&c)))
                        .ok_or(TableError::BadCacheSize)?;
                }
                Feature::NoProactive => line.proactive = false,
                Feature::MainId => line.main_id = MainId::parse(value()?).ok_or(TableError::BadMainId)?,
                Feature::AlertThreshold => {
                    line.alert_threshold = parse_u32(value()?)
                        .filter(|&t| t <= 100)
                        .map(|t| t as u8)
                        .ok_or(TableError::BadAlertThreshold)?;
                }
                Feature::NoScan => line.scan = false,
                Feature::ScrubSpeedMin => line.scrub_speed_min = parse_u32(value()?).ok_or(TableError::BadScrubSpeed)?,
                Feature::ScrubSpeedMax => line.scrub_speed_max = parse_u32(value()?).ok_or(TableError::BadScrubSpeed)?,
                Feature::MainLostAfter => {
                    line.main_lost_after = parse_u32(value()?)
                        .filter(|&n| (1..=MAX_MAIN_LOST_AFTER).contains(&n))
                        .ok_or(TableError::BadMainLostAfter)?;
                }
            }
        }
        // Checked once both are known: either may be given alone, against the other's default.
        if !valid_speeds(line.scrub_speed_min, line.scrub_speed_max) {
            return Err(TableError::BadScrubSpeed);
        }
        Ok(line)
    }

    /// The feature arguments as given (with a leading space), for `dmsetup table`.
    pub fn features(&self) -> Features<'_> {
        Features(self)
    }
}

/// Displays the feature part of a table line exactly as it was loaded.
pub struct Features<'a>(&'a TableLine);

impl fmt::Display for Features<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self.0;
        let Some(count) = l.feature_count else { return Ok(()) };
        write!(f, " {count}")?;
        for feat in l.order.iter().flatten() {
            match feat {
                Feature::BlockSize => write!(f, " block_size {}", l.block_size)?,
                Feature::ReadRetries => write!(f, " read_retries {}", l.read_retries)?,
                Feature::Format => f.write_str(" format")?,
                Feature::CacheSize => write!(f, " cache_size {}", l.cache_size)?,
                Feature::NoProactive => f.write_str(" no_proactive")?,
                Feature::MainId => {
                    f.write_str(" main_id ")?;
                    // Only [A-Za-z0-9._:-] gets in (`MainId::parse`).
                    for &b in l.main_id.as_bytes() {
                        write!(f, "{}", b as char)?;
                    }
                }
                Feature::AlertThreshold => write!(f, " alert_threshold {}", l.alert_threshold)?,
                Feature::NoScan => f.write_str(" no_scan")?,
                Feature::ScrubSpeedMin => write!(f, " scrub_speed_min {}", l.scrub_speed_min)?,
                Feature::ScrubSpeedMax => write!(f, " scrub_speed_max {}", l.scrub_speed_max)?,
                Feature::MainLostAfter => write!(f, " main_lost_after {}", l.main_lost_after)?,
            }
        }
        Ok(())
    }
}

/// A table line to load, printed as `<main> <spare> [<#features> <feature>...]`: what
/// `dmremap create` and the tests build, and what [`TableLine::parse`] reads back (a property
/// test round-trips it). Options left `None`/`false` are not printed, so the target's
/// defaults apply.
#[allow(dead_code)] // the host's printer (dmremap create, the tests)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineSpec<'a> {
    /// The main device (path or `major:minor`).
    pub main: &'a str,
    /// The spare device.
    pub spare: &'a str,
    /// `format`.
    pub format: bool,
    /// `block_size <bytes>`.
    pub block_size: Option<u32>,
    /// `read_retries <n>`.
    pub read_retries: Option<u32>,
    /// `cache_size <entries>`.
    pub cache_size: Option<u32>,
    /// `no_proactive`.
    pub no_proactive: bool,
    /// `main_id <id>`.
    pub main_id: Option<MainId>,
    /// `alert_threshold <0-100>`.
    pub alert_threshold: Option<u8>,
    /// `no_scan`.
    pub no_scan: bool,
    /// `scrub_speed_min <MiB/s>`.
    pub scrub_speed_min: Option<u32>,
    /// `scrub_speed_max <MiB/s>`.
    pub scrub_speed_max: Option<u32>,
    /// `main_lost_after <n>`.
    pub main_lost_after: Option<u32>,
}

#[allow(dead_code)] // the host's printer
impl<'a> LineSpec<'a> {
    /// The two devices, every option at its default.
    pub fn new(main: &'a str, spare: &'a str) -> Self {
        LineSpec { main, spare, ..Default::default() }
    }
    /// With `format`.
    pub fn format(self) -> Self {
        LineSpec { format: true, ..self }
    }
    /// With `block_size`.
    pub fn block_size(self, v: u32) -> Self {
        LineSpec { block_size: Some(v), ..self }
    }
    /// With `read_retries`.
    pub fn read_retries(self, v: u32) -> Self {
        LineSpec { read_retries: Some(v), ..self }
    }
    /// With `cache_size`.
    pub fn cache_size(self, v: u32) -> Self {
        LineSpec { cache_size: Some(v), ..self }
    }
    /// With `no_proactive`.
    pub fn no_proactive(self) -> Self {
        LineSpec { no_proactive: true, ..self }
    }
    /// With `main_id`.
    pub fn main_id(self, id: MainId) -> Self {
        LineSpec { main_id: Some(id), ..self }
    }
    /// With `no_scan`.
    pub fn no_scan(self) -> Self {
        LineSpec { no_scan: true, ..self }
    }
    /// With `scrub_speed_min` and `scrub_speed_max`, MiB/s.
    pub fn scrub_speed(self, min: u32, max: u32) -> Self {
        LineSpec { scrub_speed_min: Some(min), scrub_speed_max: Some(max), ..self }
    }
    /// With `main_lost_after`.
    pub fn main_lost_after(self, n: u32) -> Self {
        LineSpec { main_lost_after: Some(n), ..self }
    }
}

impl fmt::Display for LineSpec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.main, self.spare)?;
        let count = usize::from(self.format)
            + 2 * usize::from(self.block_size.is_some())
            + 2 * usize::from(self.read_retries.is_some())
            + 2 * usize::from(self.cache_size.is_some())
            + usize::from(self.no_proactive)
            + 2 * usize::from(self.main_id.is_some())
            + 2 * usize::from(self.alert_threshold.is_some())
            + usize::from(self.no_scan)
            + 2 * usize::from(self.scrub_speed_min.is_some())
            + 2 * usize::from(self.scrub_speed_max.is_some())
            + 2 * usize::from(self.main_lost_after.is_some());
        if count == 0 {
            return Ok(());
        }
        write!(f, " {count}")?;
        if self.format {
            f.write_str(" format")?;
        }
        for (name, v) in [("block_size", self.block_size), ("read_retries", self.read_retries), ("cache_size", self.cache_size)] {
            if let Some(v) = v {
                write!(f, " {name} {v}")?;
            }
        }
        if self.no_proactive {
            f.write_str(" no_proactive")?;
        }
        if let Some(id) = self.main_id {
            f.write_str(" main_id ")?;
            for &b in id.as_bytes() {
                write!(f, "{}", b as char)?;
            }
        }
        if let Some(t) = self.alert_threshold {
            write!(f, " alert_threshold {t}")?;
        }
        if self.no_scan {
            f.write_str(" no_scan")?;
        }
        for (name, v) in [
            ("scrub_speed_min", self.scrub_speed_min),
            ("scrub_speed_max", self.scrub_speed_max),
            ("main_lost_after", self.main_lost_after),
        ] {
            if let Some(v) = v {
                write!(f, " {name} {v}")?;
            }
        }
        Ok(())
    }
}

/// A decimal `u32` with no sign, no spaces and no leading `+`.
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u64(s).and_then(|v| u32::try_from(v).ok())
}

/// A decimal `u64` with no sign, no spaces and no leading `+`.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<TableLine, TableError> {
        TableLine::parse(line.split_whitespace().map(str::as_bytes))
    }

    #[test]
    fn defaults() {
        let l = parse("/dev/loop0 /dev/loop1").unwrap();
        assert_eq!((l.main, l.spare, l.block_size, l.read_retries, l.format), (0, 1, 4096, 2, false));
        assert_eq!((l.cache_size, l.proactive), (256, true));
        assert_eq!(l.features().to_string(), "");
    }

    #[test]
    fn features_print_back_exactly() {
        for f in [
            "",
            " 0",
            " 1 format",
            " 3 format block_size 512",
            " 5 read_retries 0 format block_size 65536",
            " 4 no_proactive cache_size 0 format",
            " 2 cache_size 65536",
            " 2 main_id naa.5000c500a1b2c3d4",
            " 3 format main_id a",
            " 3 alert_threshold 0 no_scan",
            " 4 scrub_speed_max 200 scrub_speed_min 10",
            " 2 scrub_speed_min 32",
            " 5 no_scan scrub_speed_min 1 scrub_speed_max 1",
        ] {
            let l = parse(&format!("7:0 7:1{f}")).unwrap();
            assert_eq!(l.features().to_string(), f);
        }
        let l = parse("a b 5 read_retries 7 block_size 8192 format").unwrap();
        assert_eq!((l.block_size, l.read_retries, l.format), (8192, 7, true));
    }

    #[test]
    fn refusals() {
        use TableError::*;
        for (line, e) in [
            ("", TooFewArgs),
            ("/dev/loop0", TooFewArgs),
            ("a b x", BadFeatureCount),
            ("a b -1", BadFeatureCount),
            ("a b 1", FeatureCountMismatch),
            ("a b 2 format", FeatureCountMismatch),
            ("a b 1 frobnicate", UnknownFeature),
            ("a b 2 format format", DuplicateFeature),
            ("a b 1 block_size", MissingValue),
            ("a b 2 block_size 3000", BadBlockSize),
            ("a b 2 block_size 256", BadBlockSize),
            ("a b 2 block_size 131072", BadBlockSize),
            ("a b 2 block_size 4k", BadBlockSize),
            ("a b 2 read_retries 17", BadReadRetries),
            ("a b 2 read_retries x", BadReadRetries),
            ("a b 2 cache_size 3", BadCacheSize),
            ("a b 2 cache_size 1", BadCacheSize),
            ("a b 2 cache_size 131072", BadCacheSize),
            ("a b 2 no_proactive no_proactive", DuplicateFeature),
            ("a b 1 main_id", MissingValue),
            ("a b 2 main_id a/b", BadMainId),
            ("a b 2 main_id 0123456789012345678901234567890123456789012345678901234567890123X", BadMainId),
            ("a b 4 main_id a main_id a", DuplicateFeature),
            ("a b 2 alert_threshold 101", BadAlertThreshold),
            ("a b 2 alert_threshold -1", BadAlertThreshold),
            ("a b 1 alert_threshold", MissingValue),
            ("a b 2 scrub_speed_min 0", BadScrubSpeed),
            ("a b 2 scrub_speed_max 100001", BadScrubSpeed),
            ("a b 2 scrub_speed_min 33", BadScrubSpeed),
            ("a b 2 scrub_speed_max x", BadScrubSpeed),
            ("a b 4 scrub_speed_min 5 scrub_speed_max 4", BadScrubSpeed),
            ("a b 1 scrub_speed_max", MissingValue),
            ("a b 4 scrub_speed_min 1 scrub_speed_min 1", DuplicateFeature),
            ("a b 2 main_lost_after 0", BadMainLostAfter),
            ("a b 2 main_lost_after 1025", BadMainLostAfter),
            ("a b 2 main_lost_after x", BadMainLostAfter),
            ("a b 1 main_lost_after", MissingValue),
            ("a b 22 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22", TooManyArgs),
        ] {
            assert_eq!(parse(line), Err(e), "{line:?}");
            assert!(!e.message().to_bytes().is_empty());
        }
    }

    proptest::proptest! {
        /// A printed line parses back to the same options and prints its features back the
        /// same.
        #[test]
        fn line_round_trip(
            format in proptest::bool::ANY,
            bs in proptest::option::of(9u32..=16),
            rr in proptest::option::of(0u32..=MAX_READ_RETRIES),
            cs in proptest::option::of(prop_oneof_cache()),
            np in proptest::bool::ANY,
            id in proptest::option::of("[A-Za-z0-9._:-]{1,64}"),
            thr in proptest::option::of(0u8..=100),
            ns in proptest::bool::ANY,
            smin in proptest::option::of(1u32..=DEFAULT_SPEED_MAX),
            smax in proptest::option::of(DEFAULT_SPEED_MAX..=super::super::scrub::MAX_SPEED),
            lost in proptest::option::of(1u32..=MAX_MAIN_LOST_AFTER),
        ) {
            let id = id.as_deref().and_then(|s| MainId::parse(s.as_bytes()));
            let spec = LineSpec {
                main: "/dev/sdb",
                spare: "8:32",
                format,
                block_size: bs.map(|b| 1 << b),
                read_retries: rr,
                cache_size: cs,
                no_proactive: np,
                main_id: id,
                alert_threshold: thr,
                no_scan: ns,
                scrub_speed_min: smin,
                scrub_speed_max: smax,
                main_lost_after: lost,
            };
            let text = spec.to_string();
            let l = parse(&text).unwrap();
            proptest::prop_assert_eq!((l.main, l.spare, l.format, l.proactive, l.main_id), (0, 1, format, !np, id.unwrap_or_default()));
            proptest::prop_assert_eq!(l.block_size, spec.block_size.unwrap_or(DEFAULT_BLOCK_SIZE));
            proptest::prop_assert_eq!(l.read_retries, rr.unwrap_or(DEFAULT_READ_RETRIES));
            proptest::prop_assert_eq!(l.cache_size, cs.unwrap_or(DEFAULT_CACHE_SIZE));
            proptest::prop_assert_eq!((l.alert_threshold, l.scan), (thr.unwrap_or(DEFAULT_ALERT_THRESHOLD), !ns));
            proptest::prop_assert_eq!((l.scrub_speed_min, l.scrub_speed_max), (smin.unwrap_or(DEFAULT_SPEED_MIN), smax.unwrap_or(DEFAULT_SPEED_MAX)));
            proptest::prop_assert_eq!(l.main_lost_after, lost.unwrap_or(DEFAULT_MAIN_LOST_AFTER));
            proptest::prop_assert_eq!(format!("/dev/sdb 8:32{}", l.features()), text);
        }
    }

    fn prop_oneof_cache() -> impl proptest::strategy::Strategy<Value = u32> {
        use proptest::strategy::Strategy;
        (0u32..=16).prop_map(|e| if e == 0 { 0 } else { 1 << e })
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u32(b"0"), Some(0));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u32(b"+1"), None);
        assert_eq!(parse_u32(b""), None);
    }
}
