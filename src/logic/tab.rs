// SPDX-License-Identifier: GPL-2.0

//! `/etc/dmremaptab`: the devices to bring up at boot, one per line, in the manner of
//! crypttab and integritytab (docs/dmremaptab.md):
//!
//! ```text
//! # name   main                                spare                 options
//! failing  /dev/disk/by-id/ata-WDC_WD40-1234   UUID=3b0e5a...        read_retries=4,main_id=WD-1234
//! ```
//!
//! The spare may be named by its dm-remap metadata uuid (`UUID=<32 hex digits>`). Options are
//! comma-separated; `-` or nothing means none.

use super::mainid::MainId;
use super::scrub::{valid_speeds, DEFAULT_SPEED_MAX, DEFAULT_SPEED_MIN};

/// Longest device name device-mapper accepts, minus the terminating NUL.
pub const MAX_NAME: usize = 127;

/// Where a device is: a path, or (the spare only) the uuid its metadata records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevRef<'a> {
    /// A path (`/dev/disk/by-id/...`).
    Path(&'a str),
    /// `UUID=<hex>`: the spare whose superblock has this uuid.
    Uuid([u8; 16]),
}

/// One line's options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TabOptions {
    /// `block_size=<bytes>`.
    pub block_size: Option<u32>,
    /// `read_retries=<n>`.
    pub read_retries: Option<u32>,
    /// `cache_size=<entries>`.
    pub cache_size: Option<u32>,
    /// `no_proactive`.
    pub no_proactive: bool,
    /// `main_id=<id>` (else the main device's own id, as `dmremap create` takes it).
    pub main_id: Option<MainId>,
    /// `noauto`: not activated by `activate --all` (boot), only by name.
    pub noauto: bool,
    /// `alert_threshold=<0-100>`.
    pub alert_threshold: Option<u8>,
    /// `no_scan`.
    pub no_scan: bool,
    /// `scrub_speed_min=<MiB/s>`.
    pub scrub_speed_min: Option<u32>,
    /// `scrub_speed_max=<MiB/s>`.
    pub scrub_speed_max: Option<u32>,
    /// `main_lost_after=<n>`.
    pub main_lost_after: Option<u32>,
    /// `initramfs`: brought up in the initramfs, before the root filesystem is mounted
    /// (`dmremap activate --initramfs`, docs/boot.md).
    pub initramfs: bool,
    /// `spare_missing=fail|readonly`: what `activate --initramfs` does when the spare is still
    /// missing after `spare_timeout`.
    pub spare_missing: SpareMissing,
    /// `spare_timeout=<seconds>`: how long `activate --initramfs` waits for the devices.
    pub spare_timeout: Option<u32>,
}

/// What to do at boot when the spare is missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpareMissing {
    /// The device is not brought up (the boot waits for its root, then stops, as for any
    /// missing root device).
    #[default]
    Fail,
    /// The main device alone, read-only, through dm-linear under the same name, with a
    /// message saying so: blocks relocated to the spare read main's old copy.
    ReadOnly,
}

/// Default and largest `spare_timeout` (seconds).
pub const DEFAULT_SPARE_TIMEOUT: u32 = 30;
pub const MAX_SPARE_TIMEOUT: u32 = 3600;

/// One device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TabEntry<'a> {
    /// The dm name (`/dev/mapper/<name>`).
    pub name: &'a str,
    /// The main device.
    pub main: DevRef<'a>,
    /// The spare.
    pub spare: DevRef<'a>,
    /// The options.
    pub options: TabOptions,
}

/// Why a line was refused; each has a message naming what is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TabError {
    /// Fewer than three fields.
    TooFewFields,
    /// More than four fields.
    TooManyFields,
    /// A name device-mapper would refuse.
    BadName,
    /// The main device given as `UUID=`, or a device that is neither an absolute path nor
    /// `UUID=`.
    BadDevice,
    /// `UUID=` not followed by 32 hex digits (dashes allowed).
    BadUuid,
    /// An option this version does not know.
    UnknownOption,
    /// An option twice.
    DuplicateOption,
    /// An option with a bad or missing value.
    BadValue,
}

impl TabError {
    /// The text for the operator.
    pub fn message(self) -> &'static str {
        match self {
            TabError::TooFewFields => "need at least <name> <main> <spare>",
            TabError::TooManyFields => "more than <name> <main> <spare> <options> (options are comma-separated, no blanks)",
            TabError::BadName => "invalid name (1 to 127 characters, no '/', not . or ..)",
            TabError::BadDevice => "a device must be an absolute path (the spare may also be UUID=<uuid>)",
            TabError::BadUuid => "UUID= needs the spare's 32 hex digits (dmremap inspect shows it)",
            TabError::UnknownOption => "unknown option (block_size, read_retries, cache_size, no_proactive, main_id, alert_threshold, no_scan, scrub_speed_min, scrub_speed_max, main_lost_after, noauto, initramfs, spare_missing, spare_timeout)",
            TabError::DuplicateOption => "an option is given twice",
            TabError::BadValue => "an option has a bad or missing value",
        }
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses a uuid: 32 hex digits, dashes anywhere ignored.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    let mut n = 0usize;
    for c in s.bytes().filter(|&c| c != b'-') {
        let v = hex(c)?;
        let byte = out.get_mut(n / 2)?;
        *byte = if n % 2 == 0 { v << 4 } else { *byte | v };
        n += 1;
    }
    (n == 32).then_some(out)
}

fn dev(s: &str, spare: bool) -> Result<DevRef<'_>, TabError> {
    if let Some(u) = s.strip_prefix("UUID=") {
        if !spare {
            return Err(TabError::BadDevice);
        }
        return parse_uuid(u).map(DevRef::Uuid).ok_or(TabError::BadUuid);
    }
    if s.starts_with('/') {
        Ok(DevRef::Path(s))
    } else {
        Err(TabError::BadDevice)
    }
}

fn options(s: &str) -> Result<TabOptions, TabError> {
    let mut o = TabOptions::default();
    if s == "-" || s.is_empty() {
        return Ok(o);
    }
    let mut seen: [&str; 14] = [""; 14];
    let mut n = 0;
    for opt in s.split(',') {
        let (key, val) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        if seen[..n].contains(&key) {
            return Err(TabError::DuplicateOption);
        }
        let num = || val.and_then(|v| super::args::parse_u32(v.as_bytes())).ok_or(TabError::BadValue);
        match (key, val) {
            ("block_size", _) => o.block_size = Some(num().and_then(|v| if super::format::valid_block_size(v) { Ok(v) } else { Err(TabError::BadValue) })?),
            ("read_retries", _) => o.read_retries = Some(num().and_then(|v| if v <= super::args::MAX_READ_RETRIES { Ok(v) } else { Err(TabError::BadValue) })?),
            ("cache_size", _) => {
                let c = num()?;
                if !(c == 0 || (c.is_power_of_two() && (2..=super::cache::MAX_CACHE_SIZE).contains(&c))) {
                    return Err(TabError::BadValue);
                }
                o.cache_size = Some(c);
            }
            ("no_proactive", None) => o.no_proactive = true,
            ("no_scan", None) => o.no_scan = true,
            ("alert_threshold", _) => {
                o.alert_threshold = Some(num().and_then(|v| u8::try_from(v).ok().filter(|&t| t <= 100).ok_or(TabError::BadValue))?)
            }
            ("scrub_speed_min", _) => o.scrub_speed_min = Some(num()?),
            ("scrub_speed_max", _) => o.scrub_speed_max = Some(num()?),
            ("main_lost_after", _) => {
                o.main_lost_after = Some(num().and_then(|v| if (1..=super::args::MAX_MAIN_LOST_AFTER).contains(&v) { Ok(v) } else { Err(TabError::BadValue) })?)
            }
            ("noauto", None) => o.noauto = true,
            ("initramfs", None) => o.initramfs = true,
            ("spare_missing", Some("fail")) => o.spare_missing = SpareMissing::Fail,
            ("spare_missing", Some("readonly")) => o.spare_missing = SpareMissing::ReadOnly,
            ("spare_timeout", _) => {
                o.spare_timeout = Some(num().and_then(|v| if (1..=MAX_SPARE_TIMEOUT).contains(&v) { Ok(v) } else { Err(TabError::BadValue) })?)
            }
            ("main_id", Some(v)) => o.main_id = Some(MainId::parse(v.as_bytes()).ok_or(TabError::BadValue)?),
            ("no_proactive" | "noauto" | "no_scan" | "main_id" | "initramfs" | "spare_missing", _) => return Err(TabError::BadValue),
            _ => return Err(TabError::UnknownOption),
        }
        // At most 14 distinct keys exist, so `seen` cannot overflow before a duplicate or an
        // unknown key is refused.
        if let Some(slot) = seen.get_mut(n) {
            *slot = key;
            n += 1;
        }
    }
    // As the table line checks them: either alone against the other's default.
    let (min, max) = (o.scrub_speed_min.unwrap_or(DEFAULT_SPEED_MIN), o.scrub_speed_max.unwrap_or(DEFAULT_SPEED_MAX));
    if !valid_speeds(min, max) {
        return Err(TabError::BadValue);
    }
    Ok(o)
}

/// Parses one line: `Ok(None)` for a blank or comment line.
pub fn parse_line(line: &str) -> Result<Option<TabEntry<'_>>, TabError> {
    let line = line.split('#').next().unwrap_or("");
    let mut w = line.split_ascii_whitespace();
    let Some(name) = w.next() else { return Ok(None) };
    let (Some(main), Some(spare)) = (w.next(), w.next()) else { return Err(TabError::TooFewFields) };
    let opts = w.next().unwrap_or("-");
    if w.next().is_some() {
        return Err(TabError::TooManyFields);
    }
    if name.is_empty() || name.len() > MAX_NAME || name.contains('/') || name == "." || name == ".." {
        return Err(TabError::BadName);
    }
    Ok(Some(TabEntry { name, main: dev(main, false)?, spare: dev(spare, true)?, options: options(opts)? }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(parse_line("   # a comment"), Ok(None));
        let e = parse_line("failing /dev/disk/by-id/ata-X /dev/sdc").unwrap().unwrap();
        assert_eq!((e.name, e.main, e.spare, e.options), ("failing", DevRef::Path("/dev/disk/by-id/ata-X"), DevRef::Path("/dev/sdc"), TabOptions::default()));
        let e = parse_line("f /dev/sdb UUID=3b0e5a00-0000-0000-0000-0000000000ff read_retries=4,main_id=WD-1,noauto # x").unwrap().unwrap();
        let mut u = [0u8; 16];
        u[0] = 0x3b;
        u[1] = 0x0e;
        u[2] = 0x5a;
        u[15] = 0xff;
        assert_eq!(e.spare, DevRef::Uuid(u));
        assert_eq!((e.options.read_retries, e.options.noauto), (Some(4), true));
        assert_eq!(e.options.main_id, MainId::parse(b"WD-1"));
        let e = parse_line("g /dev/a /dev/b block_size=8192,cache_size=0,no_proactive").unwrap().unwrap();
        assert_eq!((e.options.block_size, e.options.cache_size, e.options.no_proactive), (Some(8192), Some(0), true));
        let e = parse_line("root /dev/a /dev/b initramfs,spare_missing=readonly,spare_timeout=5").unwrap().unwrap();
        assert_eq!((e.options.initramfs, e.options.spare_missing, e.options.spare_timeout), (true, SpareMissing::ReadOnly, Some(5)));
        let e = parse_line("root /dev/a /dev/b spare_missing=fail").unwrap().unwrap();
        assert_eq!((e.options.initramfs, e.options.spare_missing, e.options.spare_timeout), (false, SpareMissing::Fail, None));
        let e = parse_line("h /dev/a /dev/b main_lost_after=3").unwrap().unwrap();
        assert_eq!(e.options.main_lost_after, Some(3));
        let e = parse_line("h /dev/a /dev/b scrub_speed_max=200,scrub_speed_min=5").unwrap().unwrap();
        assert_eq!((e.options.scrub_speed_min, e.options.scrub_speed_max), (Some(5), Some(200)));
    }

    #[test]
    fn refusals() {
        use TabError::*;
        for (l, e) in [
            ("x", TooFewFields),
            ("x /dev/a", TooFewFields),
            ("x /dev/a /dev/b - extra", TooManyFields),
            ("a/b /dev/a /dev/b", BadName),
            (".. /dev/a /dev/b", BadName),
            ("x sdb /dev/b", BadDevice),
            ("x UUID=00000000000000000000000000000000 /dev/b", BadDevice),
            ("x /dev/a UUID=123", BadUuid),
            ("x /dev/a UUID=zz000000000000000000000000000000", BadUuid),
            ("x /dev/a /dev/b frob", UnknownOption),
            ("x /dev/a /dev/b noauto,noauto", DuplicateOption),
            ("x /dev/a /dev/b block_size=3000", BadValue),
            ("x /dev/a /dev/b read_retries=17", BadValue),
            ("x /dev/a /dev/b read_retries", BadValue),
            ("x /dev/a /dev/b main_id=a/b", BadValue),
            ("x /dev/a /dev/b noauto=1", BadValue),
            ("x /dev/a /dev/b cache_size=3", BadValue),
            ("x /dev/a /dev/b alert_threshold=101", BadValue),
            ("x /dev/a /dev/b main_lost_after=0", BadValue),
            ("x /dev/a /dev/b main_lost_after=1025", BadValue),
            ("x /dev/a /dev/b no_scan=1", BadValue),
            ("x /dev/a /dev/b scrub_speed_min=0", BadValue),
            ("x /dev/a /dev/b scrub_speed_min=33", BadValue),
            ("x /dev/a /dev/b scrub_speed_max=100001", BadValue),
            ("x /dev/a /dev/b scrub_speed_min=9,scrub_speed_max=8", BadValue),
            ("x /dev/a /dev/b scrub_speed_max", BadValue),
            ("x /dev/a /dev/b initramfs=1", BadValue),
            ("x /dev/a /dev/b spare_missing", BadValue),
            ("x /dev/a /dev/b spare_missing=linear", BadValue),
            ("x /dev/a /dev/b spare_timeout=0", BadValue),
            ("x /dev/a /dev/b spare_timeout=3601", BadValue),
            ("x /dev/a /dev/b initramfs,initramfs", DuplicateOption),
        ] {
            assert_eq!(parse_line(l), Err(e), "{l:?}");
        }
        let long = "n".repeat(MAX_NAME + 1);
        assert_eq!(parse_line(&format!("{long} /dev/a /dev/b")), Err(BadName));
        assert_eq!(parse_uuid("0123456789abcdef0123456789ABCDEF").map(|u| u[15]), Some(0xef));
        assert_eq!(parse_uuid("0123456789abcdef0123456789abcdef0"), None);
    }
}
