//! Health monitoring: the 26 status fields against known workloads, messages, alerts, the
//! background scan, proactive relocation, the lookup cache.

use crate::harness::*;
use anyhow::{ensure, Result};
use std::time::Duration;

pub const TESTS: &[crate::Test] = &[
    ("health_status_fields_known_workload", status_fields_workload),
    ("health_messages", messages),
    ("health_dmsetup_wait_woken_by_alert", wait_woken_by_alert),
    ("health_scan_finds_unread_bad_block", scan_finds_bad_block),
    ("health_weak_block_relocated_proactively", weak_block),
    ("health_cache_counts_only_real_hits", cache_hits),
    ("health_alerts_send_uevents", alerts_send_uevents),
    ("health_tunables_in_the_table_line", tunables_in_table),
];

const MIB: u64 = 1 << 20;
const BS: u64 = 4096;

fn msg_fails(name: &str, words: &[&str]) -> Result<String> {
    let mut args = vec!["message", name, "0"];
    args.extend_from_slice(words);
    cmd_fails("dmsetup", &args)
}

/// N writes move field 5 by N, M reads field 4 by M; each fsync sends one flush to the
/// spare (field 6); K bad blocks written make fields 7, 8 and 12 equal K.
fn status_fields_workload() -> Result<()> {
    let bad = BadMain::new("sw", 16 * MIB, &[(100, 1), (101, 1), (300, 1)])?;
    let spare = LoopDev::new("sw-spare", 4 * MIB)?;
    let g = geometry(4 * MIB)?;
    let dm = DmDev::create("t-sw", &remap_table(16 * MIB / 512, LineSpec::new(&bad.path(), &spare.path).format()))?;
    let f = status_fields(&dm.name)?;
    expect_eq("fields 1-3", f[..3].to_vec(), vec!["0.1.0".to_string(), bad_devno(&bad)?, spare.devno()?])?;
    expect_eq(
        "fields 8-11, 20-22, 24-26 at start",
        [7, 8, 9, 10, 19, 20, 21, 23, 24, 25].iter().map(|&i| f[i].clone()).collect::<Vec<_>>(),
        ["0", &g.pool_blocks.to_string(), &g.pool_blocks.to_string(), "0", "100", "0", "0", "50", "-", "operational"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    )?;
    let (r0, w0, s0) = (status_of(&dm.name, |s| s.reads)?, status_of(&dm.name, |s| s.writes)?, status_of(&dm.name, |s| s.spare_ios)?);
    for i in 0..10 {
        write_at(&dm.path, (10 + i) * BS, &pattern(i, BS as usize))?;
    }
    for i in 0..7 {
        read_at(&dm.path, (10 + i) * BS, BS as usize)?;
    }
    expect_eq("field 5 (writes) moved by", status_of(&dm.name, |s| s.writes)? - w0, 10)?;
    expect_eq("field 4 (reads) moved by", status_of(&dm.name, |s| s.reads)? - r0, 7)?;
    expect_eq("field 6 (spare I/Os: one flush per fsync) moved by", status_of(&dm.name, |s| s.spare_ios)? - s0, 10)?;
    ensure!(status_of(&dm.name, |s| s.latency_us)? > 0, "field 23 (mean main latency) is 0 after 17 I/Os");
    for b in [100, 101, 300] {
        write_at(&dm.path, b * BS, &pattern(b, BS as usize))?;
    }
    expect_eq("field 7 (media errors)", status_of(&dm.name, |s| s.media_errors)?, 3)?;
    expect_eq("field 8 (remaps)", status_of(&dm.name, |s| s.remaps)?, 3)?;
    expect_eq("field 12 (relocations after write errors)", status_of(&dm.name, |s| s.write_relocations)?, 3)?;
    expect_eq("field 10 (free)", status_of(&dm.name, |s| s.free)?, g.pool_blocks - 3)?;
    expect_eq("field 14 (commits)", status_of(&dm.name, |s| s.commits)?, 3)?;
    expect_eq("field 22 (hotspots: 100-101 and 300)", status_of(&dm.name, |s| s.hotspots)?, 2)?;
    // 3 recent errors, 2 in the largest cluster, 3 of 1008 blocks used (0 points).
    expect_eq("field 20 (health)", status_of(&dm.name, |s| u64::from(s.health))?, 100 - 3 - 1)?;
    ensure!(status_of(&dm.name, |s| s.eta_secs)? > 0, "field 21 (time to exhaustion) shows no trend after 3 remaps");
    Ok(())
}

fn bad_devno(bad: &BadMain) -> Result<String> {
    Ok(dmsetup(&["info", "-c", "--noheadings", "-o", "major,minor", "--separator", ":", &bad.dm.name])?.trim().to_string())
}

/// Every message: replies, effects, and refusals that change nothing.
fn messages() -> Result<()> {
    let bad = BadMain::new("ms", 16 * MIB, &[(10, 1)])?;
    let spare = LoopDev::new("ms-spare", 4 * MIB)?;
    let g = geometry(4 * MIB)?;
    let dm = DmDev::create("t-ms", &remap_table(16 * MIB / 512, LineSpec::new(&bad.path(), &spare.path).format()))?;
    let n = dm.name.as_str();
    write_at(&dm.path, 10 * BS, &pattern(1, BS as usize))?;

    ensure!(msg(n, &["help"])?.contains("maintenance on|off"), "help reply");
    msg(n, &["alert_threshold", "70"])?;
    expect_eq("field 24 after alert_threshold 70", status_of(n, |s| u64::from(s.alert_threshold))?, 70)?;
    expect_eq("query a remapped sector", msg(n, &["query", "80"])?, format!("block=10 location=spare pool_block=0 spare_sector={}", g.pool_start))?;
    expect_eq("query a main sector", msg(n, &["query", "40"])?, "block=5 location=main".to_string())?;
    expect_eq("list_remaps", msg(n, &["list_remaps"])?, "10 0".to_string())?;
    expect_eq("list_remaps 1 5", msg(n, &["list_remaps", "1", "5"])?, String::new())?;
    expect_eq("hotspots", msg(n, &["hotspots"])?, "10-10 1".to_string())?;
    msg(n, &["scan_interval", "30"])?;
    expect_eq("reply to scrub_speed at the line's values", msg(n, &["scrub_speed", "1", "32"])?, String::new())?;
    msg(n, &["scan", "stop"])?;
    msg(n, &["scan", "start"])?;
    msg(n, &["scan", "stop"])?;
    msg(n, &["sync"])?;

    // Manual remap: refused outside maintenance mode, done inside.
    ensure!(msg_fails(n, &["remap", "160"])?.contains("Operation not permitted"), "remap outside maintenance");
    msg(n, &["maintenance", "on"])?;
    expect_eq("state in maintenance", status_of(n, |s| s.state.name().to_string())?, "maintenance".to_string())?;
    let data = pattern(2, BS as usize);
    write_at(&bad.lo.path, 20 * BS, &data)?;
    expect_eq("remap 160", msg(n, &["remap", "160"])?, "block=20 location=spare pool_block=1".to_string())?;
    expect_eq("field 13 (proactive/manual relocations)", status_of(n, |s| s.proactive_relocations)?, 1)?;
    expect_eq("data of the manually remapped block", read_at(&dm.path, 20 * BS, BS as usize)?, data)?;
    ensure!(msg_fails(n, &["remap", "160"])?.contains("Invalid argument"), "remapping a remapped block");
    msg(n, &["maintenance", "off"])?;
    expect_eq("state after maintenance", status_of(n, |s| s.state.name().to_string())?, "operational".to_string())?;

    // Refused messages: EINVAL, and nothing changes (field 21 is left out: it moves with time).
    let steady = |f: Vec<String>| f.into_iter().enumerate().filter(|(i, _)| *i != 20).map(|(_, v)| v).collect::<Vec<_>>();
    let before = steady(status_fields(n)?);
    let mut kmsg = Kmsg::open()?;
    kmsg.drain();
    for bad_msg in [
        vec!["frobnicate"],
        vec!["help", "me"],
        vec!["maintenance"],
        vec!["maintenance", "yes"],
        vec!["alert_threshold", "101"],
        vec!["alert_threshold", "x"],
        vec!["scan", "go"],
        vec!["scan_interval", "0"],
        vec!["scan_rate", "1000001"],
        vec!["scrub_speed", "33", "32"],
        vec!["scan_status", "now"],
        vec!["remap"],
        vec!["query", "abc"],
        vec!["query", &(16 * MIB / 512).to_string()],
        vec!["list_remaps", "1"],
        vec!["list_remaps", "0", "65"],
        vec!["hotspots", "now"],
        vec!["clear_stats", "all"],
        vec!["sync", "now"],
    ] {
        let err = msg_fails(n, &bad_msg)?;
        ensure!(err.contains("Invalid argument"), "{bad_msg:?}: {err}");
    }
    ensure!(kmsg.drain().iter().any(|l| l.contains("message refused")), "no log line for refused messages");
    expect_eq("status after refused messages", steady(status_fields(n)?), before)?;

    msg(n, &["clear_stats"])?;
    let cleared = status_of(n, |s| {
        [
            ("reads", s.reads),
            ("writes", s.writes),
            ("spare_ios", s.spare_ios),
            ("media_errors", s.media_errors),
            ("write_relocations", s.write_relocations),
            ("proactive_relocations", s.proactive_relocations),
            ("commits", s.commits),
            ("cache_hits", s.cache_hits),
            ("cache_misses", s.cache_misses),
            ("latency_us", s.latency_us),
        ]
    })?;
    for (what, v) in cleared {
        expect_eq(&format!("{what} after clear_stats"), v, 0)?;
    }
    expect_eq("field 8 kept by clear_stats", status_of(n, |s| s.remaps)?, 2)?;
    Ok(())
}

/// `dmsetup wait` returns when an alert is raised, and field 25 then counts from it.
fn wait_woken_by_alert() -> Result<()> {
    let bad = BadMain::new("wt", 16 * MIB, &[(10, 1)])?;
    let spare = LoopDev::new("wt-spare", 4 * MIB)?;
    let dm = DmDev::create("t-wt", &remap_table(16 * MIB / 512, LineSpec::new(&bad.path(), &spare.path).format()))?;
    write_at(&dm.path, 10 * BS, &pattern(3, BS as usize))?;
    ensure!(status_of(&dm.name, |s| u64::from(s.health))? < 100, "a media error must lower the score");
    expect_eq("field 25 before any alert", status_of(&dm.name, |s| s.since_alert)?, None)?;
    let ev = event_nr(&dm.name)?.to_string();
    let mut waiter = std::process::Command::new("dmsetup").args(["wait", &dm.name, &ev]).spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    ensure!(waiter.try_wait()?.is_none(), "dmsetup wait returned before any alert");
    msg(&dm.name, &["alert_threshold", "100"])?;
    let status = wait_child(&mut waiter, 10, "dmsetup wait was not woken by the alert")?;
    ensure!(status.success(), "dmsetup wait failed: {status}");
    ensure!(status_of(&dm.name, |s| s.since_alert)?.is_some_and(|t| t < 10), "field 25 is not the time since the alert");
    Ok(())
}

/// The scan reads the whole device and finds a dm-dust bad block that nobody read: it
/// becomes pending, with a media error and a hotspot.
fn scan_finds_bad_block() -> Result<()> {
    let lo = LoopDev::new("sc", 16 * MIB)?;
    let n = 16 * MIB / 512;
    let dust = DmDev::create("t-sc-dust", &format!("0 {n} dust {} 0 4096", lo.path))?;
    dmsetup(&["message", &dust.name, "0", "addbadblock", "1234"])?;
    dmsetup(&["message", &dust.name, "0", "enable"])?;
    let spare = LoopDev::new("sc-spare", 4 * MIB)?;
    let dm = DmDev::create("t-sc", &remap_table(n, LineSpec::new(&dust.path, &spare.path).format()))?;
    msg(&dm.name, &["scrub_speed", "1000", "1000"])?;
    msg(&dm.name, &["scan_interval", "1"])?;
    msg(&dm.name, &["scan", "start"])?;
    wait_for(30, "a full scan pass", || Ok(status_of(&dm.name, |s| s.scan_passes)? >= 1))?;
    msg(&dm.name, &["scan", "stop"])?;
    expect_eq("field 11 (pending)", status_of(&dm.name, |s| s.pending)?, 1)?;
    expect_eq("query", msg(&dm.name, &["query", &(1234 * 8).to_string()])?, "block=1234 location=pending".to_string())?;
    ensure!(status_of(&dm.name, |s| s.media_errors)? >= 1, "no media error counted");
    expect_eq("hotspots", msg(&dm.name, &["hotspots"])?, "1234-1234 1".to_string())?;
    expect_eq("nothing relocated", status_of(&dm.name, |s| s.remaps)?, 0)?;
    Ok(())
}

/// A block behind dm-delay (every read of it takes 300 ms) is weak: the scan relocates it
/// with its data, before it fails.
fn weak_block() -> Result<()> {
    let lo = LoopDev::new("wk", 16 * MIB)?;
    let n = 16 * MIB / 512;
    let table = format!(
        "0 400 linear {p} 0\n400 8 delay {p} 400 300\n408 {} linear {p} 408",
        n - 408,
        p = lo.path
    );
    let main = DmDev::create("t-wk-main", &table)?;
    let data = pattern(50, BS as usize);
    write_at(&lo.path, 50 * BS, &data)?;
    let spare = LoopDev::new("wk-spare", 4 * MIB)?;
    let dm = DmDev::create("t-wk", &remap_table(n, LineSpec::new(&main.path, &spare.path).format()))?;
    let mut kmsg = Kmsg::open()?;
    kmsg.drain();
    msg(&dm.name, &["scrub_speed", "1000", "1000"])?;
    msg(&dm.name, &["scan_interval", "1"])?;
    msg(&dm.name, &["scan", "start"])?;
    // Slow on one pass makes a suspect; slow again on the next makes it weak.
    wait_for(60, "two full scan passes", || Ok(status_of(&dm.name, |s| s.scan_passes)? >= 2))?;
    msg(&dm.name, &["scan", "stop"])?;
    expect_eq("field 13 (proactive relocations)", status_of(&dm.name, |s| s.proactive_relocations)?, 1)?;
    let said: Vec<String> = kmsg.drain().into_iter().filter(|l| l.contains("weak block")).collect();
    ensure!(
        said.len() == 1 && said[0].contains("weak block 50 relocated: slow on two scan passes"),
        "kernel log about weak blocks: {said:?}"
    );
    expect_eq("field 8 (remaps)", status_of(&dm.name, |s| s.remaps)?, 1)?;
    expect_eq("query", msg(&dm.name, &["query", "400"])?.split(' ').take(2).collect::<Vec<_>>().join(" "), "block=50 location=spare".to_string())?;
    expect_eq("relocated data", read_at(&dm.path, 50 * BS, BS as usize)?, data)?;
    Ok(())
}

/// Hits are counted only when the cache answered; misses only when it was asked and the
/// table answered; lookups the region bitmap answers count as neither.
fn cache_hits() -> Result<()> {
    let lo = LoopDev::new("ch", 16 * MIB)?;
    let spare = LoopDev::new("ch-spare", 4 * MIB)?;
    let n = 16 * MIB / 512;
    for (cache, hits, misses) in [("", 2, 1), (" cache_size 0", 0, 0)] {
        let count = if cache.is_empty() { 1 } else { 3 };
        let dm = DmDev::create("t-ch", &format!("0 {n} remap {} {} {count} format{cache}", lo.path, spare.path))?;
        if cache.is_empty() {
            msg(&dm.name, &["maintenance", "on"])?;
            msg(&dm.name, &["remap", "80"])?;
            msg(&dm.name, &["maintenance", "off"])?;
        }
        let (h0, m0) = (status_of(&dm.name, |s| s.cache_hits)?, status_of(&dm.name, |s| s.cache_misses)?);
        for b in [10, 10, 10, 500, 12] {
            read_at(&dm.path, b * BS, BS as usize)?;
        }
        expect_eq(&format!("cache hits{cache}"), status_of(&dm.name, |s| s.cache_hits)? - h0, hits)?;
        expect_eq(&format!("cache misses{cache}"), status_of(&dm.name, |s| s.cache_misses)? - m0, misses)?;
    }
    Ok(())
}

/// Every alert is a `change` uevent on the dm device with DM_REMAP_EVENT, DM_REMAP_STATE and
/// DM_REMAP_HEALTH, received by a netlink listener as udev would: health below the
/// threshold, spare use at 75/90/100%, degraded.
fn alerts_send_uevents() -> Result<()> {
    // A pool of 4 blocks: 3 relocations cross 75%, the 4th 100% (90% too: one event, the
    // highest level).
    let g = dm_remap_logic::format::Geometry::for_pool(4, 4096, u64::MAX).ok_or_else(|| anyhow::anyhow!("layout"))?;
    let bad = BadMain::new("ue", 16 * MIB, &[(100, 8)])?;
    let lo = LoopDev::new("ue-spare", g.end_bytes())?;
    let spare = DmDev::create("t-ue-spare", &format!("0 {} linear {} 0", g.end_bytes() / 512, lo.path))?;
    let dm = DmDev::create("t-ue", &remap_table(16 * MIB / 512, LineSpec::new(bad.path(), &spare.path).format()))?;
    let dmn = dm_blkdev(&dm.name)?;
    let ue = Uevents::open()?;
    let ours = |evs: Vec<Vec<String>>| -> Vec<Vec<String>> {
        evs.into_iter().filter(|f| f.iter().any(|x| x.starts_with("DM_REMAP_EVENT="))).collect()
    };
    let expect = |evs: &[Vec<String>], kind: &str, state: &str| -> Result<()> {
        let found = evs.iter().find(|f| f.contains(&format!("DM_REMAP_EVENT={kind}")));
        let f = found.ok_or_else(|| anyhow::anyhow!("no {kind} uevent in {evs:?}"))?;
        ensure!(f.contains(&"ACTION=change".to_string()), "{kind}: {f:?}");
        ensure!(f.contains(&format!("DEVNAME={dmn}")), "{kind}: not on {dmn}: {f:?}");
        ensure!(f.contains(&format!("DM_REMAP_STATE={state}")), "{kind}: {f:?}");
        ensure!(f.iter().any(|x| x.strip_prefix("DM_REMAP_HEALTH=").is_some_and(|h| h.parse::<u8>().is_ok_and(|h| h <= 100))), "{kind}: {f:?}");
        Ok(())
    };
    write_at(&dm.path, 100 * BS, &pattern(1, BS as usize))?;
    msg(&dm.name, &["alert_threshold", "100"])?;
    let evs = ours(ue.drain(1000));
    expect(&evs, "health", "operational")?;
    for b in 101..103 {
        write_at(&dm.path, b * BS, &pattern(b, BS as usize))?;
    }
    let evs = ours(ue.drain(1000));
    expect(&evs, "spare_75", "operational")?;
    write_at(&dm.path, 103 * BS, &pattern(103, BS as usize))?;
    let evs = ours(ue.drain(1000));
    expect(&evs, "spare_full", "spare_full")?;
    drop(dm);
    // Degraded: a new pool whose spare fails.
    let lo2 = LoopDev::new("ue-spare2", 4 * MIB)?;
    let spare2 = DmDev::create("t-ue-spare2", &format!("0 {} linear {} 0", 4 * MIB / 512, lo2.path))?;
    let dm = DmDev::create("t-ue", &remap_table(16 * MIB / 512, LineSpec::new(bad.path(), &spare2.path).format()))?;
    let dmn2 = dm_blkdev(&dm.name)?;
    dmsetup(&["reload", &spare2.name, "--table", &format!("0 {} error", 4 * MIB / 512)])?;
    dmsetup(&["resume", &spare2.name])?;
    let _ = ue.drain(200);
    let _ = write_at(&dm.path, 104 * BS, &pattern(104, BS as usize));
    let evs = ours(ue.drain(1000));
    let f = evs.iter().find(|f| f.contains(&"DM_REMAP_EVENT=degraded".to_string())).ok_or_else(|| anyhow::anyhow!("no degraded uevent: {evs:?}"))?;
    ensure!(f.contains(&format!("DEVNAME={dmn2}")) && f.contains(&"DM_REMAP_STATE=degraded".to_string()), "{f:?}");
    Ok(())
}

/// `alert_threshold` and `no_scan` as feature arguments: the target starts with them, shows
/// them in `dmsetup table`, a message that changes one says the table line does not hold the
/// new value, and a reload returns to the line's.
fn tunables_in_table() -> Result<()> {
    let lo = LoopDev::new("tt", 16 * MIB)?;
    let spare = LoopDev::new("tt-spare", 4 * MIB)?;
    let spec = LineSpec { alert_threshold: Some(90), no_scan: true, ..LineSpec::new(&lo.path, &spare.path).format() };
    let table = remap_table(16 * MIB / 512, spec);
    let dm = DmDev::create("t-tt", &table)?;
    let n = dm.name.as_str();
    expect_eq("alert threshold from the line", status_of(n, |s| s.alert_threshold)?, 90)?;
    let shown = dmsetup(&["table", n])?;
    ensure!(shown.trim_end().ends_with(" 4 format alert_threshold 90 no_scan"), "dmsetup table: {shown:?}");
    // The scan is off: nothing is read in the background even with a fast schedule.
    msg(n, &["scan_interval", "1"])?;
    msg(n, &["scrub_speed", "1000", "1000"])?;
    std::thread::sleep(Duration::from_millis(2500));
    expect_eq("blocks scanned with no_scan", status_of(n, |s| (s.scanned, s.scan_passes))?, (0, 0))?;
    expect_eq(
        "reply to alert_threshold 70",
        msg(n, &["alert_threshold", "70"])?,
        "alert_threshold is now 70; the table line says 90 and a reload returns to it (set it there to keep it)".to_string(),
    )?;
    expect_eq("reply to alert_threshold 90 (the line's)", msg(n, &["alert_threshold", "90"])?, String::new())?;
    msg(n, &["alert_threshold", "70"])?;
    expect_eq(
        "reply to scan start",
        msg(n, &["scan", "start"])?,
        "scan is now on; the table line says off and a reload returns to it (set it there to keep it)".to_string(),
    )?;
    wait_for(30, "a scan pass once started", || Ok(status_of(n, |s| s.scan_passes)? >= 1))?;
    dmsetup(&["reload", n, "--table", &table])?;
    dmsetup(&["resume", n])?;
    expect_eq("alert threshold after a reload", status_of(n, |s| s.alert_threshold)?, 90)?;
    Ok(())
}
