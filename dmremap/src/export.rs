//! Prometheus text exposition (version 0.0.4) of dm-remap devices, for node_exporter's
//! textfile collector: `dmremap_` prefix, base units, `_total` for counters.

use crate::status::{self, Status};
use crate::{dm, Fail, Kind};
use std::fmt::Write;
use std::path::Path;

/// (name, type, help, value) of every metric of one device.
fn metrics(s: &Status) -> Vec<(&'static str, &'static str, &'static str, f64)> {
    let f = |v: u64| v as f64;
    vec![
        ("dmremap_reads_total", "counter", "Read bios submitted to the target.", f(s.reads)),
        ("dmremap_writes_total", "counter", "Write bios submitted to the target.", f(s.writes)),
        ("dmremap_spare_ios_total", "counter", "I/Os sent to the spare device.", f(s.spare_ios)),
        ("dmremap_media_errors_total", "counter", "Media errors seen on the main device.", f(s.media_errors)),
        ("dmremap_remaps", "gauge", "Blocks relocated to the spare.", f(s.remaps)),
        ("dmremap_spare_blocks", "gauge", "Spare blocks in the pool.", f(s.spare_blocks)),
        ("dmremap_spare_free_blocks", "gauge", "Spare blocks not used yet.", f(s.spare_free)),
        ("dmremap_pending_blocks", "gauge", "Unreadable blocks not rewritten yet.", f(s.pending)),
        ("dmremap_write_relocations_total", "counter", "Relocations after write errors.", f(s.write_relocations)),
        ("dmremap_proactive_relocations_total", "counter", "Weak blocks relocated before failing.", f(s.proactive_relocations)),
        ("dmremap_metadata_commits_total", "counter", "Metadata commits.", f(s.metadata_commits)),
        ("dmremap_cache_hits_total", "counter", "Lookup cache hits.", f(s.cache_hits)),
        ("dmremap_cache_misses_total", "counter", "Lookup cache misses.", f(s.cache_misses)),
        ("dmremap_scan_passes_total", "counter", "Background scan passes completed.", f(s.scan_passes)),
        ("dmremap_health_score", "gauge", "Health score, 0 to 100.", f(s.health)),
        ("dmremap_spare_exhaustion_seconds", "gauge", "Predicted seconds until the spare is used up (0: no trend).", f(s.seconds_to_exhaustion)),
        ("dmremap_hotspots", "gauge", "Clusters of media errors.", f(s.hotspots)),
        ("dmremap_main_latency_seconds", "gauge", "Mean I/O latency of the main device.", s.main_latency_us as f64 / 1e6),
        ("dmremap_alert_threshold", "gauge", "Health score below which an alert is raised.", f(s.alert_threshold)),
    ]
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The exposition text for `(name, status)` pairs.
pub fn render(devs: &[(String, Status)]) -> String {
    let mut out = String::new();
    let Some((_, first)) = devs.first() else { return out };
    for (i, (mname, ty, help, _)) in metrics(first).iter().enumerate() {
        let _ = writeln!(out, "# HELP {mname} {help}\n# TYPE {mname} {ty}");
        for (name, s) in devs {
            let v = metrics(s)[i].3;
            let _ = writeln!(out, "{mname}{{device=\"{}\"}} {v}", escape(name));
        }
    }
    let _ = writeln!(out, "# HELP dmremap_state Target state (1 for the current one).\n# TYPE dmremap_state gauge");
    for (name, s) in devs {
        for st in ["operational", "maintenance", "spare_full", "degraded"] {
            let _ = writeln!(out, "dmremap_state{{device=\"{}\",state=\"{st}\"}} {}", escape(name), u8::from(s.state == st));
        }
    }
    out
}

pub fn export(names: &[String], output: Option<&Path>) -> Result<i32, Fail> {
    let names = if names.is_empty() { dm::list()? } else { names.to_vec() };
    let mut devs = Vec::new();
    for n in names {
        let s = status::parse(&dm::status_line(&n)?)?;
        devs.push((n, s));
    }
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
        let t = render(&[("failing".into(), s)]);
        assert!(t.contains("# TYPE dmremap_reads_total counter\ndmremap_reads_total{device=\"failing\"} 1207\n"));
        assert!(t.contains("dmremap_main_latency_seconds{device=\"failing\"} 0.000041\n"));
        assert!(t.contains("dmremap_state{device=\"failing\",state=\"operational\"} 1\n"));
        // Every sample line: name{labels} value, with a HELP and TYPE before its family.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let (name, rest) = l.split_once('{').unwrap();
            assert!(name.starts_with("dmremap_") && rest.contains("} "));
            assert!(t.contains(&format!("# TYPE {name} ")));
            rest.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap();
        }
    }
}
