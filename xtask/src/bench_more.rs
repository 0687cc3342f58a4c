//! The benchmark's two other boots (tests/src/bench_more.rs): fio with four jobs in an icount
//! VM with several vCPUs, and ext4 over a memory-backed main device; each compares dm-remap
//! with no remaps against dm-linear in the same boot. Tabulated here, as sections of the
//! benchmark's report.

use crate::env::{step, Paths};
use crate::kernel::Flavor;
use crate::vm;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// vCPUs of the several-CPU boot: four, where the kernel allows it (the 6.12 test kernel is
/// built with NR_CPUS=2).
pub fn vcpus(flavor: Flavor) -> u32 {
    if flavor == Flavor::Debian72 {
        4
    } else {
        2
    }
}

/// Runs both boots and returns the markdown of their tables.
pub fn run(paths: &Paths, flavor: Flavor, reps: u32, runtime: &str) -> Result<String> {
    let (kernel, module) = crate::prepare(paths, flavor)?;
    let runner = crate::test::build_vmtest(paths)?;
    let n = vcpus(flavor);
    let mut out = String::new();
    for (what, cmd, goal, title) in [
        ("bench-smp", n, 98.0, format!("## Several CPUs: four fio jobs on {n} vCPUs\n\nicount VM with `-smp {n}` (QEMU runs the vCPUs round-robin on one thread, deterministic); 4 KiB random I/O at queue depth 32 per job, `--numjobs=4`, on the whole 64 MiB region."),),
        ("bench-fs", 1, 99.0, "## A filesystem on top: ext4\n\nicount VM, one vCPU; ext4 on a 512 MiB memory-backed null_blk main (one each, both fresh), fio in a 192 MiB file: 4 KiB random writes through the page cache with an fsync every 32 writes (`--fsync=32`), and 1 MiB sequential writes with a final fsync.".to_string()),
    ] {
        let opts = vm::VmOptions::new(kernel.clone(), module.clone(), runner.clone(), Some(format!("vmtest {what} {reps} {runtime}")), 7200).icount_vcpus(cmd);
        step(format!("benchmark: {what} ({reps} repetitions, {runtime} s each, {cmd} vCPU)"));
        let res = vm::run(paths, &opts)?;
        std::fs::write(paths.target().join(format!("{what}-console.log")), &res.console)?;
        if res.status != 0 {
            bail!("{what} failed in the VM (status {}); console in target/{what}-console.log", res.status);
        }
        out.push_str(&section(&title, &res.console, goal));
    }
    Ok(out)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One table: per workload, dm-linear's and remap-0's median IOPS and the ratio to the goal.
fn section(title: &str, console: &str, goal: f64) -> String {
    let mut runs: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut kernel = String::new();
    let mut cpus = String::new();
    for l in console.lines() {
        if let Some(k) = l.split_once("BENCHINFO kernel ").map(|(_, k)| k.trim()) {
            kernel = k.to_string();
        }
        if let Some(k) = l.split_once("BENCHINFO cpus ").map(|(_, k)| k.trim()) {
            cpus = k.to_string();
        }
        let Some((_, rest)) = l.split_once(&format!("{} ", crate::protocol::BENCH)) else { continue };
        let w: Vec<&str> = rest.split_whitespace().collect();
        if let [config, workload, _rep, iops] = w[..] {
            if let Ok(x) = iops.parse::<f64>() {
                runs.entry((workload.to_string(), config.to_string())).or_default().push(x);
            }
        }
    }
    // What the guest saw, not what QEMU was given: the 6.12 test kernel (no ACPI) brings up
    // one CPU whatever -smp says, and then this is no several-CPU measurement.
    let mut out = format!("{title} Kernel {kernel}; CPUs the guest saw: {cpus}.\n\n| workload | dm-linear | remap-0 | remap-0 / dm-linear | goal | met |\n| --- | ---: | ---: | ---: | ---: | --- |\n");
    let workloads: Vec<String> = runs.keys().map(|(w, _)| w.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    for w in workloads {
        let mut get = |c: &str| runs.get_mut(&(w.clone(), c.to_string())).map(|v| median(v)).unwrap_or(0.0);
        let (a, b) = (get("dm-linear"), get("remap-0"));
        let ratio = if a > 0.0 { b / a * 100.0 } else { 0.0 };
        let _ = writeln!(out, "| {w} | {a:.0} | {b:.0} | {ratio:.2}% | {goal:.0}% | {} |", if ratio >= goal { "yes" } else { "no" });
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabulates_medians_and_ratios() {
        let console = "BENCHINFO kernel 6.12.117\nBENCH dm-linear w1 0 100.0\nBENCH remap-0 w1 0 99.5\nBENCH dm-linear w1 1 102.0\nBENCH remap-0 w1 1 97.0\nBENCH dm-linear w1 2 101.0\nBENCH remap-0 w1 2 98.0\n";
        let s = section("## T\n\nx.", console, 98.0);
        assert!(s.contains("Kernel 6.12.117; CPUs the guest saw: ."), "{s}");
        assert!(s.contains("| w1 | 101 | 98 | 97.03% | 98% | no |"), "{s}");
    }
}
