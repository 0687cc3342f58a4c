//! Prometheus text exposition (version 0.0.4) of dm-remap devices, for node_exporter's
//! textfile collector: `dmremap_` prefix, base units, `_total` for counters.

use dm_remap_logic::message::{LatencyReply, ScanReply, ScrubState};
use crate::status::{self, Status};
use crate::{dm, Fail, Kind};
use std::fmt::Write;
use std::path::Path;

/// Field 21 says 0 both for "no trend" and for a full spare: no trend is no sample (NaN here,
/// left out by `render`), so an `< 86400` alert rule never fires on a healthy device.
fn exhaustion(s: &Status) -> f64 {
    match (s.state.as_str(), s.seconds_to_exhaustion) {
        ("spare_full", _) => 0.0,
        (_, 0) => f64::NAN,
        (_, v) => v as f64,
    }
}

/// (name, type, help, value) of every metric of one device; NaN: no sample.
fn metrics(s: &Status) -> Vec<(&'static str, &'static str, &'static str, f64)> {
    let f = |v: u64| v as f64;
    vec![
        ("dmremap_reads_total", "counter", "Read bios submitted to the target.", f(s.reads)),
        ("dmremap_writes_total", "counter", "Write bios submitted to the target.", f(s.writes)),
        ("dmremap_spare_ios_total", "counter", "I/Os sent to the spare device.", f(s.spare_ios)),
        ("dmremap_media_errors_total", "counter", "Media errors seen on the main device.", f(s.media_errors)),
        ("dmremap_retried_errors_total", "counter", "Main-device errors one retry cured (no sample: the module does not say).", s.retried_errors.map_or(f64::NAN, f)),
        ("dmremap_other_errors_total", "counter", "Main-device errors that were not media errors, passed on (no sample: the module does not say).", s.other_errors.map_or(f64::NAN, f)),
        ("dmremap_remaps", "gauge", "Blocks relocated to the spare.", f(s.remaps)),
        ("dmremap_spare_blocks", "gauge", "Spare blocks in the pool.", f(s.spare_blocks)),
        ("dmremap_spare_free_blocks", "gauge", "Spare blocks not used yet.", f(s.spare_free)),
        ("dmremap_pending_blocks", "gauge", "Unreadable blocks not rewritten yet (the bad-block list; `dmremap badblocks` lists them).", f(s.pending)),
        ("dmremap_write_relocations_total", "counter", "Relocations after write errors.", f(s.write_relocations)),
        ("dmremap_proactive_relocations_total", "counter", "Weak blocks relocated before failing.", f(s.proactive_relocations)),
        ("dmremap_metadata_commits_total", "counter", "Metadata commits.", f(s.metadata_commits)),
        ("dmremap_cache_hits_total", "counter", "Lookup cache hits.", f(s.cache_hits)),
        ("dmremap_cache_misses_total", "counter", "Lookup cache misses.", f(s.cache_misses)),
        ("dmremap_scan_passes_total", "counter", "Background scan passes completed.", f(s.scan_passes)),
        ("dmremap_health_score", "gauge", "Health score, 0 to 100.", f(s.health)),
        ("dmremap_spare_exhaustion_seconds", "gauge", "Predicted seconds until the spare is used up (no sample: no trend; 0: full).", exhaustion(s)),
        ("dmremap_hotspots", "gauge", "Clusters of media errors.", f(s.hotspots)),
        ("dmremap_alert_threshold", "gauge", "Health score below which an alert is raised.", f(s.alert_threshold)),
    ]
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// What the exporter knows of one device: its status, or why it could not be read, and the
/// kernel names to join with node_exporter (`dm-N`) and smartctl_exporter (`sdb`).
pub struct Dev {
    pub name: String,
    pub status: Result<Status, String>,
    /// `dm-N`, if known.
    pub dm: Option<String>,
    /// The `latency` message's reply (no sample without it).
    pub latency: Option<LatencyReply>,
    /// The `scan_status` message's reply (no scrub samples without it).
    pub scan: Option<ScanReply>,
}

/// The exposition text. A device whose status could not be read is `dmremap_up 0` and has no
/// other samples; the rest are exported as usual.
pub fn render(devs: &[Dev]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP dmremap_up Whether the device's status could be read (1) or not (0).\n# TYPE dmremap_up gauge");
    for d in devs {
        let _ = writeln!(out, "dmremap_up{{device=\"{}\"}} {}", escape(&d.name), u8::from(d.status.is_ok()));
    }
    let ok: Vec<(&str, &Status)> = devs.iter().filter_map(|d| d.status.as_ref().ok().map(|s| (d.name.as_str(), s))).collect();
    let Some((_, first)) = ok.first() else { return out };
    let _ = writeln!(
        out,
        "# HELP dmremap_info The device's kernel names, for joining (value 1).\n# TYPE dmremap_info gauge"
    );
    for d in devs {
        if let Ok(s) = &d.status {
            let kname = |devno: &str| dm::kernel_name(devno).unwrap_or_default();
            let _ = writeln!(
                out,
                "dmremap_info{{device=\"{}\",dm=\"{}\",main=\"{}\",main_dev=\"{}\",spare=\"{}\",spare_dev=\"{}\",version=\"{}\"}} 1",
                escape(&d.name),
                escape(d.dm.as_deref().unwrap_or("")),
                escape(&kname(&s.main_device)),
                escape(&s.main_device),
                escape(&kname(&s.spare_device)),
                escape(&s.spare_device),
                escape(&s.version)
            );
        }
    }
    for (i, (mname, ty, help, _)) in metrics(first).iter().enumerate() {
        let _ = writeln!(out, "# HELP {mname} {help}\n# TYPE {mname} {ty}");
        for (name, s) in &ok {
            let v = metrics(s)[i].3;
            if !v.is_nan() {
                let _ = writeln!(out, "{mname}{{device=\"{}\"}} {v}", escape(name));
            }
        }
    }
    // Latency as a summary without quantiles: the mean over any interval is
    // rate(_sum) / rate(_count), not a mean since creation.
    let lat: Vec<(&str, &LatencyReply)> = devs.iter().filter_map(|d| Some((d.name.as_str(), d.latency.as_ref().filter(|_| d.status.is_ok())?))).collect();
    if !lat.is_empty() {
        let _ = writeln!(
            out,
            "# HELP dmremap_main_latency_seconds Latency of the main device's completed I/Os (a sample: one read and one write in 64 per CPU) since creation or clear_stats.\n\
             # TYPE dmremap_main_latency_seconds summary"
        );
        for (name, l) in &lat {
            let _ = writeln!(out, "dmremap_main_latency_seconds_sum{{device=\"{}\"}} {}", escape(name), l.main_sum_ns as f64 / 1e9);
            let _ = writeln!(out, "dmremap_main_latency_seconds_count{{device=\"{}\"}} {}", escape(name), l.main_count);
        }
    }
    let scans: Vec<(&str, &ScanReply)> = devs.iter().filter_map(|d| Some((d.name.as_str(), d.scan.as_ref().filter(|_| d.status.is_ok())?))).collect();
    let scrub: [(&str, &str, fn(&ScanReply) -> Option<f64>); 5] = [
        ("dmremap_scrub_running", "Whether the scrub is reading now (1) or off, paused or resting (0).", |r| Some(f64::from(u8::from(r.state == ScrubState::On)))),
        ("dmremap_scrub_progress_ratio", "How far the current scrub pass is, 0 to 1.", |r| Some(r.permille as f64 / 1000.0)),
        ("dmremap_scrub_rate_bytes_per_second", "The scrub's measured read rate.", |r| Some(r.rate_kib as f64 * 1024.0)),
        ("dmremap_scrub_eta_seconds", "Seconds until the current pass ends at the current rate (no sample: not running).", |r| r.eta_secs.map(|e| e as f64)),
        ("dmremap_scrub_passes", "Scrub passes completed since the table was loaded.", |r| Some(r.passes as f64)),
    ];
    if !scans.is_empty() {
        for (mname, help, get) in scrub {
            let _ = writeln!(out, "# HELP {mname} {help}\n# TYPE {mname} gauge");
            for (name, r) in &scans {
                if let Some(v) = get(r) {
                    let _ = writeln!(out, "{mname}{{device=\"{}\"}} {v}", escape(name));
                }
            }
        }
    }
    let _ = writeln!(out, "# HELP dmremap_state Target state (1 for the current one).\n# TYPE dmremap_state gauge");
    for (name, s) in &ok {
        for st in ["operational", "maintenance", "spare_full", "degraded", "main_lost"] {
            let _ = writeln!(out, "dmremap_state{{device=\"{}\",state=\"{st}\"}} {}", escape(name), u8::from(s.state == st));
        }
    }
    out
}

pub fn export(names: &[String], output: Option<&Path>) -> Result<i32, Fail> {
    let names = if names.is_empty() { dm::list()? } else { names.to_vec() };
    // One device that cannot be read (removed mid-export, say) is marked, not fatal.
    let devs: Vec<Dev> = names
        .into_iter()
        .map(|n| {
            let status = dm::status_line(&n).and_then(|l| status::parse(&l)).map_err(|f| f.msg);
            let dm = dm::devno(&n).ok().and_then(|d| dm::kernel_name(&d));
            // Older modules lack these messages: their samples are left out, nothing fails.
            let latency = status.as_ref().ok().and_then(|_| dm::message(&n, "latency").ok()).and_then(|r| LatencyReply::parse(r.trim()));
            let scan = status.as_ref().ok().and_then(|_| dm::message(&n, "scan_status").ok()).and_then(|r| ScanReply::parse(r.trim()));
            Dev { name: n, status, dm, latency, scan }
        })
        .collect();
    let text = render(&devs);
    match output {
        None => print!("{text}"),
        Some(path) => {
            // Written beside the target and renamed over it: a collector never reads half a file.
            let tmp = path.with_extension("prom.tmp");
            std::fs::write(&tmp, &text)
                .and_then(|_| std::fs::rename(&tmp, path))
                .map_err(|e| Fail::new(Kind::Io, format!("cannot write {}: {e}", path.display())))?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let s = status::parse("0.1.0 252:0 7:1 1207 866 10 3 3 1012 1009 0 3 0 3 3 0 0 0 0 96 336 2 41 50 - operational").unwrap();
        let lat = LatencyReply { main_sum_ns: 2_500_000_000, main_count: 1000 };
        let scan = ScanReply::parse("scan=on position=512 blocks=2048 percent=25.0 rate_kib=32768 eta_secs=3 passes=1 busy=0 speed_min=1 speed_max=32");
        let t = render(&[Dev { name: "failing".into(), status: Ok(s.clone()), dm: Some("dm-0".into()), latency: Some(lat), scan }]);
        assert!(t.contains("# TYPE dmremap_reads_total counter\ndmremap_reads_total{device=\"failing\"} 1207\n"));
        assert!(t.contains("# TYPE dmremap_main_latency_seconds summary\ndmremap_main_latency_seconds_sum{device=\"failing\"} 2.5\ndmremap_main_latency_seconds_count{device=\"failing\"} 1000\n"), "{t}");
        assert!(t.contains("dmremap_scrub_progress_ratio{device=\"failing\"} 0.25\n"), "{t}");
        assert!(t.contains("dmremap_scrub_rate_bytes_per_second{device=\"failing\"} 33554432\n"), "{t}");
        assert!(t.contains("dmremap_scrub_running{device=\"failing\"} 1\n"), "{t}");
        assert!(t.contains("dmremap_state{device=\"failing\",state=\"operational\"} 1\n"));
        assert!(t.contains("dmremap_up{device=\"failing\"} 1\n"));
        assert!(t.contains("dmremap_info{device=\"failing\",dm=\"dm-0\",main=\""));
        assert!(t.contains("dmremap_spare_exhaustion_seconds{device=\"failing\"} 336\n"));
        // No trend: no sample. A full spare: 0. A device that cannot be read: up 0 only.
        let mut quiet = s.clone();
        quiet.seconds_to_exhaustion = 0;
        let mut full = quiet.clone();
        full.state = "spare_full".into();
        let t = render(&[
            Dev { name: "quiet".into(), status: Ok(quiet), dm: None, latency: None, scan: None },
            Dev { name: "full".into(), status: Ok(full), dm: None, latency: None, scan: None },
            Dev { name: "gone".into(), status: Err("no device-mapper device gone".into()), dm: None, latency: Some(lat), scan: None },
        ]);
        assert!(!t.contains("dmremap_spare_exhaustion_seconds{device=\"quiet\"}"), "{t}");
        assert!(t.contains("dmremap_spare_exhaustion_seconds{device=\"full\"} 0\n"));
        assert!(t.contains("dmremap_up{device=\"gone\"} 0\n") && !t.contains("dmremap_reads_total{device=\"gone\"}"));
        // Every sample line: name{labels} value, with a HELP and TYPE before its family.
        assert!(!t.contains("dmremap_main_latency_seconds_sum{device=\"gone\"}"), "{t}");
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let (name, rest) = l.split_once('{').unwrap();
            assert!(name.starts_with("dmremap_") && rest.contains("} "));
            let family = name.strip_suffix("_sum").or(name.strip_suffix("_count")).filter(|f| t.contains(&format!("# TYPE {f} summary"))).unwrap_or(name);
            assert!(t.contains(&format!("# TYPE {family} ")));
            rest.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap();
        }
    }
}
