//! `vmtest profile <config> <workload> <runtime>`, the guest half of `cargo xtask profile`:
//! the workload on dm-linear and on a dm-remap configuration, each run bracketed by the
//! marker instruction the host's QEMU plugin (xtask/profile/insn_profile.c) writes a window
//! at; then the kernel's text symbols, for the host to attribute the instructions.

use crate::bench::{fio, iops, storm_devices, MAIN_MB, REGION_BLOCKS, STORM_BAD, WORKLOADS};
use crate::harness::*;
use crate::prep::write_spare;
use crate::protocol::{BENCHINFO, PROFILE, PROFSYM};
use anyhow::{bail, Context, Result};

const MIB: u64 = 1 << 20;

/// The plugin's window marker, `xchg %bx,%bx` (66 87 db): exchanges a register with itself,
/// which nothing else in the guest runs.
fn mark() {
    // SAFETY: swaps bx with itself: no register, memory or flag changes.
    unsafe { core::arch::asm!(".byte 0x66, 0x87, 0xdb", options(nomem, nostack, preserves_flags)) }
}

fn total_ios(v: &serde_json::Value) -> u64 {
    let job = &v["jobs"][0];
    job["read"]["total_ios"].as_u64().unwrap_or(0) + job["write"]["total_ios"].as_u64().unwrap_or(0)
}

/// Idle and total jiffies of the (one) CPU, from /proc/stat.
fn cpu_jiffies() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu: Vec<u64> = stat.lines().next().context("/proc/stat")?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    Ok((cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0), cpu.iter().sum()))
}

/// The benchmark's remap storm (4096 writes to bad blocks, 32 in flight) in one window:
/// instructions per remap, and how much of the virtual time the CPU was idle.
fn storm() -> Result<()> {
    let main = NullB::new("pmain", MAIN_MB, false)?;
    let main_sectors = MAIN_MB * MIB / 512;
    let bad_first = STORM_BAD.0;
    let (bad, _spare, dm) = storm_devices("p", &main, main_sectors)?;
    println!("{BENCHINFO} kernel {}", std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim());
    let (i0, t0) = cpu_jiffies()?;
    mark();
    let v = fio(&dm.path, &["--rw=randwrite", "--bs=4k", "--iodepth=32", &format!("--offset={}", bad_first * 4096), "--size=16M"], "")?;
    mark();
    let (i1, t1) = cpu_jiffies()?;
    let ms = v["jobs"][0]["job_runtime"].as_u64().unwrap_or(0);
    let remaps = status_of(&dm.name, |s| s.remaps)?;
    println!("{BENCHINFO} idle {} of {} jiffies", i1 - i0, t1 - t0);
    println!("{PROFILE}storm ios={remaps} iops={:.1}", remaps as f64 * 1000.0 / ms.max(1) as f64);
    drop((dm, bad));
    Ok(())
}

/// `dmsetup create` of a target whose spare holds 1M remaps, in one window (the benchmark's
/// constructor figure).
fn ctr() -> Result<()> {
    let main = NullB::new("pmain", MAIN_MB, false)?;
    let main_sectors = MAIN_MB * MIB / 512;
    let spare = NullB::new("pspare", 5120, true)?;
    write_spare(&spare.path, 5120 * MIB, main_sectors, 1_000_000, |i| 2 * i)?;
    println!("{BENCHINFO} kernel {}", std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim());
    let (i0, t0) = cpu_jiffies()?;
    let start = std::time::Instant::now();
    mark();
    let dm = DmDev::create("p-ctr", &remap_table(main_sectors, LineSpec::new(&main.path, &spare.path)))?;
    mark();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let (i1, t1) = cpu_jiffies()?;
    println!("{BENCHINFO} idle {} of {} jiffies", i1 - i0, t1 - t0);
    println!("{PROFILE}ctr ios=1 iops={:.1}", 1000.0 / ms.max(0.001));
    drop(dm);
    Ok(())
}

pub fn run(args: &[String]) -> Result<()> {
    let config = args.first().map_or("remap-0", String::as_str);
    if config == "storm" {
        storm()?;
        return print_symbols();
    }
    if config == "ctr" {
        ctr()?;
        return print_symbols();
    }
    let workload = args.get(1).map_or("randread-4k-qd32", String::as_str);
    let runtime = args.get(2).map_or("1", String::as_str);
    let args = WORKLOADS
        .iter()
        .map(|w| (w.0, w.1))
        .chain(crate::bench_more::SMP_WORKLOADS)
        .find(|w| w.0 == workload)
        .with_context(|| format!("unknown workload {workload}"))?
        .1;
    let main = NullB::new("pmain", MAIN_MB, false)?;
    let main_sectors = MAIN_MB * MIB / 512;
    let lin = DmDev::create("p-linear", &format!("0 {main_sectors} linear {} 0", main.path))?;
    let spare_mb = 256u64;
    let spare = NullB::new("pspare", spare_mb, true)?;
    let (n, at): (u64, fn(u64) -> u64) = match config {
        "remap-0" => (0, |i| i),
        "remap-1k" => (1000, |i| 100_000 + 13 * i),
        "remap-allhit" => (REGION_BLOCKS, |i| i),
        other => bail!("unknown configuration {other} (remap-0, remap-1k, remap-allhit)"),
    };
    write_spare(&spare.path, spare_mb * MIB, main_sectors, n, at)?;
    let remap = DmDev::create("p-remap", &format!("0 {main_sectors} remap {} {}", main.path, spare.path))?;
    // The scan would read the main device in the background: off, as in the benchmark.
    dmsetup(&["message", &remap.name, "0", "scan", "stop"])?;
    println!("{BENCHINFO} kernel {}", std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim());
    for (name, dev) in [("dm-linear", lin.path.as_str()), (config, remap.path.as_str())] {
        fio(dev, args, "1")?; // warm-up, outside the window
        mark();
        let v = fio(dev, args, runtime)?;
        mark();
        println!("{PROFILE}{name} ios={} iops={:.1}", total_ios(&v), iops(&v));
    }
    drop((remap, lin));
    print_symbols()
}

fn print_symbols() -> Result<()> {
    // Addresses are shown to root only with kptr_restrict 0.
    std::fs::write("/proc/sys/kernel/kptr_restrict", "0")?;
    let syms = std::fs::read_to_string("/proc/kallsyms")?;
    for l in syms.lines().filter(|l| matches!(l.split_whitespace().nth(1), Some("t" | "T"))) {
        println!("{PROFSYM}{l}");
    }
    Ok(())
}
