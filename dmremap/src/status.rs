//! The target's status line (docs/status.md: 26 fields, 28 since main-device loss
//! detection), parsed and shown.

use crate::{Fail, Kind};
use serde::Serialize;

/// A parsed status line. Field names and units are the JSON schema (stable).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub version: String,
    pub main_device: String,
    pub spare_device: String,
    pub reads: u64,
    pub writes: u64,
    pub spare_ios: u64,
    pub media_errors: u64,
    pub remaps: u64,
    pub spare_blocks: u64,
    pub spare_free: u64,
    pub pending: u64,
    pub write_relocations: u64,
    pub proactive_relocations: u64,
    pub metadata_commits: u64,
    pub metadata_seq: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub scanned_this_pass: u64,
    pub scan_passes: u64,
    pub health: u64,
    pub seconds_to_exhaustion: u64,
    pub hotspots: u64,
    pub main_latency_us: u64,
    pub alert_threshold: u64,
    pub seconds_since_alert: Option<u64>,
    pub state: String,
    /// Fields 27 and 28; `null` from a module that prints 26 fields.
    pub retried_errors: Option<u64>,
    pub other_errors: Option<u64>,
}

/// Parses the fields after `<start> <len> remap` (or a whole `dmsetup status` line), with
/// the one parser in `dm_remap_logic::status`; 26 fields or more (later ones are ignored).
pub fn parse(line: &str) -> Result<Status, Fail> {
    let s = dm_remap_logic::status::Status::parse(line).map_err(|e| Fail::new(Kind::NotRemap, e.to_string()))?;
    let dev = |d: dm_remap_logic::status::DevNo| format!("{}:{}", d.0, d.1);
    Ok(Status {
        version: s.version.into(),
        main_device: dev(s.main),
        spare_device: dev(s.spare),
        reads: s.reads,
        writes: s.writes,
        spare_ios: s.spare_ios,
        media_errors: s.media_errors,
        remaps: s.remaps,
        spare_blocks: s.pool_blocks,
        spare_free: s.free,
        pending: s.pending,
        write_relocations: s.write_relocations,
        proactive_relocations: s.proactive_relocations,
        metadata_commits: s.commits,
        metadata_seq: s.seq,
        cache_hits: s.cache_hits,
        cache_misses: s.cache_misses,
        scanned_this_pass: s.scanned,
        scan_passes: s.scan_passes,
        health: u64::from(s.health),
        seconds_to_exhaustion: s.eta_secs,
        hotspots: s.hotspots,
        main_latency_us: s.latency_us,
        alert_threshold: u64::from(s.alert_threshold),
        seconds_since_alert: s.since_alert,
        state: s.state.name().into(),
        retried_errors: s.retried_ok,
        other_errors: s.other_errors,
    })
}

/// Seconds as a human duration ("3d 4h", "12m 5s").
pub fn human_duration(s: u64) -> String {
    let (d, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The readable report.
pub fn render(name: &str, s: &Status) -> String {
    let used = s.spare_blocks.saturating_sub(s.spare_free);
    let pct = used.saturating_mul(100).checked_div(s.spare_blocks).unwrap_or(0);
    let bar_len = 30;
    let filled = (pct as usize * bar_len / 100).min(bar_len);
    let bar = format!("[{}{}]", "#".repeat(filled), ".".repeat(bar_len - filled));
    let eta = if s.seconds_to_exhaustion == 0 { "no trend".to_string() } else { human_duration(s.seconds_to_exhaustion) };
    let alert = s.seconds_since_alert.map(|t| format!("{} ago", human_duration(t))).unwrap_or_else(|| "never".into());
    format!(
        "{name}: {state}, health {health}/100 (alert below {thr}; last alert {alert})\n\
         main {main}, spare {spare}, dm-remap {ver}\n\
         spare {bar} {pct}% used: {used} of {total} blocks, {free} free; exhausted in: {eta}\n\
         remaps {remaps} ({wr} after write errors, {pr} proactive), pending {pending}, hotspots {hot}\n\
         I/O: {reads} reads, {writes} writes, {sio} to the spare, {me} media errors, mean main latency {lat} us\n\
         metadata: {commits} commits, sequence {seq}; cache {hits} hits / {misses} misses; scan: {scanned} blocks this pass, {passes} passes\n",
        state = s.state,
        health = s.health,
        thr = s.alert_threshold,
        main = s.main_device,
        spare = s.spare_device,
        ver = s.version,
        total = s.spare_blocks,
        free = s.spare_free,
        remaps = s.remaps,
        wr = s.write_relocations,
        pr = s.proactive_relocations,
        pending = s.pending,
        hot = s.hotspots,
        reads = s.reads,
        writes = s.writes,
        sio = s.spare_ios,
        me = s.media_errors,
        lat = s.main_latency_us,
        commits = s.metadata_commits,
        seq = s.metadata_seq,
        hits = s.cache_hits,
        misses = s.cache_misses,
        scanned = s.scanned_this_pass,
        passes = s.scan_passes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up but well-formed line, for the arithmetic of the report.
    const FIXTURE: &str = "0 32768 remap 0.1.0 252:0 7:1 1207 866 10 3 3 1012 1009 0 3 0 3 3 0 0 0 0 96 336 2 41 50 - operational";
    /// Lines captured from the module in the VM (`cargo xtask demo`: after one relocation,
    /// and after re-creating the device).
    const CAPTURED: &str = include_str!("status-fixture.txt");

    #[test]
    fn parses_captured_lines() {
        let lines: Vec<&str> = CAPTURED.lines().collect();
        assert_eq!(lines.len(), 2);
        let a = parse(lines[0]).unwrap();
        assert_eq!((a.writes, a.media_errors, a.remaps, a.write_relocations, a.spare_free), (1, 1, 1, 1, 1011));
        assert_eq!((a.version.as_str(), a.state.as_str(), a.seconds_since_alert), ("0.1.0", "operational", None));
        let b = parse(lines[1]).unwrap();
        assert_eq!((b.remaps, b.metadata_seq, b.write_relocations, b.health), (1, 1, 0, 100));
    }

    #[test]
    fn parses_a_real_line() {
        let s = parse(FIXTURE).unwrap();
        assert_eq!((s.reads, s.writes, s.remaps, s.spare_free, s.health), (1207, 866, 3, 1009, 96));
        assert_eq!((s.main_device.as_str(), s.seconds_since_alert, s.state.as_str()), ("252:0", None, "operational"));
        let with_alert = FIXTURE.replace(" - ", " 12 ");
        assert_eq!(parse(&with_alert).unwrap().seconds_since_alert, Some(12));
    }

    #[test]
    fn refuses_other_lines() {
        assert!(parse("0 100 linear 7:0 0").is_err());
        assert!(parse(&FIXTURE.replace(" 866 ", " x ")).is_err());
    }

    #[test]
    fn json_schema_is_stable() {
        let j = serde_json::to_value(parse(FIXTURE).unwrap()).unwrap();
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "version", "main_device", "spare_device", "reads", "writes", "spare_ios", "media_errors", "remaps",
            "spare_blocks", "spare_free", "pending", "write_relocations", "proactive_relocations", "metadata_commits",
            "metadata_seq", "cache_hits", "cache_misses", "scanned_this_pass", "scan_passes", "health",
            "seconds_to_exhaustion", "hotspots", "main_latency_us", "alert_threshold", "seconds_since_alert", "state",
            "retried_errors", "other_errors",
        ];
        want.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, want);
    }

    #[test]
    fn readable_report() {
        let r = render("failing", &parse(FIXTURE).unwrap());
        assert!(r.contains("failing: operational, health 96/100"));
        assert!(r.contains("0% used: 3 of 1012 blocks, 1009 free; exhausted in: 5m 36s"));
        assert_eq!(human_duration(3 * 86400 + 4 * 3600 + 5), "3d 4h");
    }
}
