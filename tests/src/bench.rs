//! `vmtest bench`: the measurements behind docs/BENCHMARKS.md, run by `cargo xtask bench` in a
//! VM whose clock counts instructions (QEMU `-icount shift=0,sleep=off`), so fio's IOPS are a
//! repeatable path-length measure. Prints `BENCH <config> <workload> <rep> <iops>` and
//! `BENCHINFO <key> <value>` lines for xtask to tabulate.

use crate::harness::*;
use crate::prep::write_spare;
use anyhow::{Context, Result};
use std::time::Instant;

const MIB: u64 = 1 << 20;
/// Blocks of the I/O region (64 MiB): all workloads run on it.
pub(crate) const REGION_BLOCKS: u64 = 16384;
/// Main device: 8 GiB of null_blk that stores nothing.
pub(crate) const MAIN_MB: u64 = 8192;

/// A workload: name and fio arguments.
pub(crate) struct Workload(pub(crate) &'static str, pub(crate) &'static [&'static str]);

// 4 KiB random I/O lands on even blocks only (`blockalign=8k`), the same for every config:
// the interleaved-remaps config puts its remaps on the odd blocks.
pub(crate) const WORKLOADS: &[Workload] = &[
    Workload("randread-4k-qd1", &["--rw=randread", "--bs=4k", "--blockalign=8k", "--iodepth=1"]),
    Workload("randread-4k-qd32", &["--rw=randread", "--bs=4k", "--blockalign=8k", "--iodepth=32"]),
    Workload("randwrite-4k-qd1", &["--rw=randwrite", "--bs=4k", "--blockalign=8k", "--iodepth=1"]),
    Workload("randwrite-4k-qd32", &["--rw=randwrite", "--bs=4k", "--blockalign=8k", "--iodepth=32"]),
    Workload("seqread-1m-qd8", &["--rw=read", "--bs=1M", "--iodepth=8"]),
];

pub(crate) fn fio(dev: &str, extra: &[&str], runtime: &str) -> Result<serde_json::Value> {
    let mut args = vec![
        "--name=bench".to_string(),
        format!("--filename={dev}"),
        "--ioengine=io_uring".into(),
        "--direct=1".into(),
        format!("--size={}", REGION_BLOCKS * 4096),
        "--output-format=json".into(),
        "--randrepeat=1".into(),
    ];
    if !runtime.is_empty() {
        args.push("--time_based".into());
        args.push(format!("--runtime={runtime}"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok(serde_json::from_str(&cmd("fio", &a)?)?)
}

pub(crate) fn iops(v: &serde_json::Value) -> f64 {
    let job = &v["jobs"][0];
    job["read"]["iops"].as_f64().unwrap_or(0.0) + job["write"]["iops"].as_f64().unwrap_or(0.0)
}

/// Kernel heap in use: slab plus vmalloc, KiB (the table is one kvmalloc'ed array; the
/// memory-backed spare's pages are neither).
fn kernel_heap_kb() -> Result<u64> {
    let s = std::fs::read_to_string("/proc/meminfo")?;
    let get = |key: &str| -> Result<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| key.to_string())
    };
    Ok(get("Slab:")? + get("VmallocUsed:")?)
}

pub fn run(reps: u32, runtime: &str) -> Result<()> {
    let main = NullB::new("bmain", MAIN_MB, false)?;
    let main_sectors = MAIN_MB * MIB / 512;
    let remap = |name: &str, spare: &NullB, features: &str| -> Result<DmDev> {
        let dm = DmDev::create(name, &format!("0 {main_sectors} remap {} {}{features}", main.path, spare.path))?;
        // The scan would read the main device in the background: off for measurements.
        dmsetup(&["message", name, "0", "scan", "stop"])?;
        Ok(dm)
    };
    let spare_mb = 256u64;
    let spare_bytes = spare_mb * MIB;
    let s0 = NullB::new("bs0", spare_mb, true)?;
    write_spare(&s0.path, spare_bytes, main_sectors, 0, |i| i)?;
    let s1k = NullB::new("bs1k", spare_mb, true)?;
    write_spare(&s1k.path, spare_bytes, main_sectors, 1000, |i| 100_000 + 13 * i)?;
    let s100o = NullB::new("bs100o", 1024, true)?;
    write_spare(&s100o.path, 1024 * MIB, main_sectors, 100_000, |i| REGION_BLOCKS + 2 * i)?;
    // Odd blocks of the region (8192), then the rest outside it.
    let interleaved = |i: u64| if i < REGION_BLOCKS / 2 { 2 * i + 1 } else { REGION_BLOCKS + 2 * i };
    let s100i = NullB::new("bs100i", 1024, true)?;
    write_spare(&s100i.path, 1024 * MIB, main_sectors, 100_000, interleaved)?;
    let shit = NullB::new("bshit", spare_mb, true)?;
    let g = write_spare(&shit.path, spare_bytes, main_sectors, REGION_BLOCKS, |i| i)?;

    let lin = DmDev::create("b-linear", &format!("0 {main_sectors} linear {} 0", main.path))?;
    // dm-linear onto the spare's pool: what the all-hit configs should be compared with (their
    // I/O goes to a memory-backed device).
    let lin_spare =
        DmDev::create("b-linear-spare", &format!("0 {} linear {} {}", REGION_BLOCKS * 8, shit.path, g.pool_start))?;
    let r0 = remap("b-remap-0", &s0, "")?;
    let r1k = remap("b-remap-1k", &s1k, "")?;
    let r100o = remap("b-remap-100k-outside", &s100o, "")?;
    let r100i = remap("b-remap-100k-interleaved", &s100i, "")?;
    // Two targets on one spare are not supported: the no-cache variant gets its own copy.
    let s100i2 = NullB::new("bs100i2", 1024, true)?;
    write_spare(&s100i2.path, 1024 * MIB, main_sectors, 100_000, interleaved)?;
    let r100in = remap("b-remap-100k-interleaved-nocache", &s100i2, " 2 cache_size 0")?;
    let rhit = remap("b-remap-allhit", &shit, "")?;
    let shit2 = NullB::new("bshit2", spare_mb, true)?;
    write_spare(&shit2.path, spare_bytes, main_sectors, REGION_BLOCKS, |i| i)?;
    let rhitn = remap("b-remap-allhit-nocache", &shit2, " 2 cache_size 0")?;
    // One device for the scrub's cost, measured with the scrub off and on at its default
    // speeds (`scan stop` / `scan start`). Off between its own runs: a scrub reading at its
    // idle ceiling would take cycles from the other configs' runs.
    let s0s = NullB::new("bs0s", spare_mb, true)?;
    write_spare(&s0s.path, spare_bytes, main_sectors, 0, |i| i)?;
    let rscrub = remap("b-remap-0-scrub", &s0s, "")?;

    let configs: Vec<(&str, &str, bool)> = vec![
        ("null_blk", main.path.as_str(), true),
        ("dm-linear", lin.path.as_str(), true),
        ("dm-linear-spare", lin_spare.path.as_str(), true),
        ("remap-0", r0.path.as_str(), true),
        // Random reads only: the scrub issue's goal is about them.
        (SCRUB_OFF, rscrub.path.as_str(), false),
        (SCRUB_ON, rscrub.path.as_str(), false),
        ("remap-1k", r1k.path.as_str(), true),
        ("remap-100k-outside", r100o.path.as_str(), true),
        // A 1 MiB read there touches remapped (odd) blocks: not a "none hit" case.
        ("remap-100k-interleaved", r100i.path.as_str(), false),
        ("remap-100k-interleaved-nocache", r100in.path.as_str(), false),
        ("remap-allhit", rhit.path.as_str(), true),
        ("remap-allhit-nocache", rhitn.path.as_str(), true),
        // dm-linear again, last in the round: shows whether the order of runs matters.
        ("dm-linear-last", lin.path.as_str(), true),
    ];
    println!("{} kernel {}", crate::protocol::BENCHINFO, std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim());
    println!("{} fio {}", crate::protocol::BENCHINFO, cmd("fio", &["--version"])?.trim());
    // Blocks the scrub read during the scrub-on runs, and their virtual time.
    let (mut scrub_blocks, mut scrub_secs) = (0u64, 0f64);
    for rep in 0..reps {
        for w in WORKLOADS {
            for (name, dev, seq_ok) in &configs {
                if w.0.starts_with("seq") && !seq_ok {
                    continue;
                }
                let scrub = [SCRUB_OFF, SCRUB_ON].contains(name);
                if scrub && !w.0.starts_with("randread") {
                    continue;
                }
                let on = *name == SCRUB_ON;
                let before = if on { Some(scrub_started(&rscrub.name)?) } else { None };
                let t0 = Instant::now();
                let v = fio(dev, w.1, runtime)?;
                if let Some(before) = before {
                    let after = crate::t_scrub::scan_status(&rscrub.name)?;
                    msg(&rscrub.name, &["scan", "stop"])?;
                    anyhow::ensure!(
                        after.passes == 0 && after.position >= before.position,
                        "the scrub finished a pass or restarted during a run ({before:?} -> {after:?}): the main device is too small for the run"
                    );
                    scrub_blocks += after.position - before.position;
                    scrub_secs += t0.elapsed().as_secs_f64();
                }
                println!("{} {name} {} {rep} {:.1}", crate::protocol::BENCH, w.0, iops(&v));
            }
        }
    }
    let last = crate::t_scrub::scan_status(&rscrub.name)?;
    println!(
        "{} scrub-on read={} secs={scrub_secs:.1} position={} blocks={} passes={}",
        crate::protocol::BENCHINFO,
        scrub_blocks * 4096,
        last.position,
        last.blocks,
        last.passes
    );
    for (name, dm) in [("remap-allhit", &rhit), ("remap-100k-interleaved", &r100i)] {
        let (hits, misses) = status_of(&dm.name, |s| (s.cache_hits, s.cache_misses))?;
        println!("{} cache-{name} hits={hits} misses={misses}", crate::protocol::BENCHINFO);
    }
    drop((r0, r1k, r100o, r100i, r100in, rhit, rhitn, rscrub, lin, lin_spare));

    storm(&main, main_sectors)?;
    ctr_and_memory(&main, main_sectors)?;
    Ok(())
}

/// `vmtest bench-ctr`: only [`ctr_and_memory`], on the benchmark's main device, in a boot of
/// its own (`cargo xtask bench --only ctr`).
pub fn ctr_only() -> Result<()> {
    let main = NullB::new("bmain", MAIN_MB, false)?;
    println!("{} kernel {}", crate::protocol::BENCHINFO, std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim());
    ctr_and_memory(&main, MAIN_MB * MIB / 512)
}

/// The scrub-cost configs: one device, its scrub stopped or running at the default speeds.
const SCRUB_OFF: &str = "remap-0-scrub-off";
const SCRUB_ON: &str = "remap-0-scrub-on";

/// `scan start` on `name`, then waits until the scrub has read something, so that the run
/// that follows has it running; returns the `scan_status` from then.
fn scrub_started(name: &str) -> Result<dm_remap_logic::message::ScanReply> {
    let first = crate::t_scrub::scan_status(name)?;
    msg(name, &["scan", "start"])?;
    let t0 = Instant::now();
    loop {
        let s = crate::t_scrub::scan_status(name)?;
        if s.position != first.position || s.passes != first.passes {
            return Ok(s);
        }
        anyhow::ensure!(t0.elapsed().as_secs() < 10, "the scrub did not start: {s:?}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The storm's first bad block and their number.
pub(crate) const STORM_BAD: (u64, u64) = (1_000_000, 4096);

/// The storm's devices (names prefixed with `tag`): `main` with [`STORM_BAD`] failing
/// (dm-error under dm-linear), a memory-backed spare, and the remap target, scan off.
/// Returned in creation order, to drop in reverse.
pub(crate) fn storm_devices(tag: &str, main: &NullB, main_sectors: u64) -> Result<(DmDev, NullB, DmDev)> {
    let (bad_first, bad_n) = STORM_BAD;
    let table = format!(
        "0 {a} linear {p} 0\n{a} {b} error\n{c} {d} linear {p} {c}",
        a = bad_first * 8,
        b = bad_n * 8,
        c = (bad_first + bad_n) * 8,
        d = main_sectors - (bad_first + bad_n) * 8,
        p = main.path
    );
    let bad = DmDev::create(&format!("{tag}-storm-main"), &table)?;
    let spare = NullB::new(&format!("{tag}sstorm"), 256, true)?;
    write_spare(&spare.path, 256 * MIB, main_sectors, 0, |i| i)?;
    let dm = DmDev::create(&format!("{tag}-storm"), &remap_table(main_sectors, LineSpec::new(&bad.path, &spare.path)))?;
    dmsetup(&["message", &dm.name, "0", "scan", "stop"])?;
    Ok((bad, spare, dm))
}

/// 4096 writes to bad blocks, 32 in flight: remaps per second of (virtual) time, and
/// metadata writes per remap.
fn storm(main: &NullB, main_sectors: u64) -> Result<()> {
    let bad_first = STORM_BAD.0;
    let (bad, _spare, dm) = storm_devices("b", main, main_sectors)?;
    // Two jobs at once: the storm (every write relocates), and a plain writer at queue depth
    // 1 on good blocks while the storm runs, for the latency a user sees meanwhile.
    let out = cmd(
        "fio",
        &[
            "--output-format=json",
            "--ioengine=io_uring",
            "--direct=1",
            &format!("--filename={}", dm.path),
            "--bs=4k",
            "--rw=randwrite",
            "--randrepeat=1",
            "--name=storm",
            "--iodepth=32",
            &format!("--offset={}", bad_first * 4096),
            "--size=16M",
            "--name=plain",
            "--iodepth=1",
            "--offset=0",
            "--size=64M",
            "--time_based",
            "--runtime=100ms",
        ],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    for (i, job) in ["storm", "plain"].iter().enumerate() {
        let p = &v["jobs"][i]["write"]["clat_ns"]["percentile"];
        let us = |q: &str| p[q].as_f64().unwrap_or(0.0) / 1000.0;
        println!("{} {job}-latency-us p50={:.0} p99={:.0}", crate::protocol::BENCHINFO, us("50.000000"), us("99.000000"));
    }
    let ms = v["jobs"][0]["job_runtime"].as_u64().unwrap_or(0);
    let (remaps, spare_ios, commits) = status_of(&dm.name, |s| (s.remaps, s.spare_ios, s.commits))?;
    println!("{} storm-remaps {remaps}", crate::protocol::BENCHINFO);
    println!("{} storm-ms {ms}", crate::protocol::BENCHINFO);
    println!("{} storm-commits {commits}", crate::protocol::BENCHINFO);
    // Spare I/Os = one pool write per remap + the log blocks written (no flushes here).
    println!("{} storm-log-writes {}", crate::protocol::BENCHINFO, spare_ios - remaps);
    drop(dm);
    drop(bad);
    Ok(())
}

/// Kernel heap in use once the kernel has stopped freeing memory in the background, KiB.
///
/// Why: memory freed by earlier work (the devices removed just before, RCU-deferred and
/// `kfree_rcu` frees, workqueues being torn down) keeps coming back for a while after the
/// command that freed it returned. A reading taken meanwhile is not the heap at rest: in the
/// 2026-12-04 run the 0-remap baseline *shrank* by 1,144 KiB and the figure per remap came
/// out 18.4 bytes instead of 16.8 (docs/BENCHMARKS.md). So each reading is taken at rest:
/// `sync`, then `drop_caches` (which also runs the `kfree_rcu` shrinker, so batched frees
/// waiting for their drain are queued), a pause of 500 ms (virtual: many grace periods), and
/// again, until two consecutive readings agree to [`QUIET_KB`]. The same is done before and
/// after each create, so the difference between the 0-remap and the 1M-remap creates is
/// still exactly what the larger table adds.
fn quiescent_heap_kb() -> Result<(u64, u32)> {
    let mut last: Option<u64> = None;
    for round in 1..=QUIET_ROUNDS {
        cmd("sync", &[])?;
        std::fs::write("/proc/sys/vm/drop_caches", "3")?;
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now = kernel_heap_kb()?;
        if last.is_some_and(|l| l.abs_diff(now) <= QUIET_KB) {
            return Ok((now, round));
        }
        last = Some(now);
    }
    anyhow::bail!("the kernel heap did not settle: {QUIET_ROUNDS} readings 500 ms apart kept moving by more than {QUIET_KB} KiB (last {last:?} KiB)")
}

/// Two consecutive readings at rest differ by at most this (two pages; Slab counts pages).
const QUIET_KB: u64 = 8;
/// Readings tried before giving up.
const QUIET_ROUNDS: u32 = 40;

/// Constructor time and kernel memory with 1M remaps (against 0): the growth of Slab +
/// VmallocUsed across `dmsetup create` (which resumes, so the first resume's reload is in),
/// each side read at rest ([`quiescent_heap_kb`]).
fn ctr_and_memory(main: &NullB, main_sectors: u64) -> Result<()> {
    let spare = NullB::new("bs1m", 5120, true)?;
    let mut results = Vec::new();
    for n in [0u64, 1_000_000] {
        write_spare(&spare.path, 5120 * MIB, main_sectors, n, |i| 2 * i)?;
        let (free0, rounds0) = quiescent_heap_kb()?;
        let t0 = Instant::now();
        let dm = DmDev::create("b-ctr", &remap_table(main_sectors, LineSpec::new(&main.path, &spare.path)))?;
        let ms = t0.elapsed().as_millis();
        dmsetup(&["message", &dm.name, "0", "scan", "stop"])?;
        let (free1, rounds1) = quiescent_heap_kb()?;
        let remaps = status_of(&dm.name, |s| s.remaps.to_string())?;
        println!(
            "{} ctr-{n} ms={ms} remaps={remaps} kb={} before={free0} after={free1} readings={rounds0}+{rounds1}",
            crate::protocol::BENCHINFO,
            free1 as i64 - free0 as i64
        );
        results.push(free1 as i64 - free0 as i64);
        drop(dm);
    }
    println!("{} bytes-per-remap {:.1}", crate::protocol::BENCHINFO, (results[1] - results[0]) as f64 * 1024.0 / 1e6);
    Ok(())
}
