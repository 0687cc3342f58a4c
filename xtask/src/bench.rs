//! `cargo xtask bench`: boots one VM in instruction-counting mode and runs `vmtest bench`;
//! tabulates medians, spreads and ratios to dm-linear into docs/BENCHMARKS.md.

use crate::env::{step, Paths};
use crate::kernel::Flavor;
use crate::vm;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Targets from the benchmark issue: (config, baseline, minimum ratio).
const TARGETS: &[(&str, &str, f64)] = &[
    ("remap-0", "dm-linear", 0.995),
    ("remap-100k-outside", "dm-linear", 0.98),
    ("remap-100k-interleaved", "dm-linear", 0.98),
    ("remap-allhit", "dm-linear-spare", 0.95),
    // The scrub issue: foreground 4k random reads with the scrub at its default speeds.
    (SCRUB_ON, SCRUB_OFF, 0.97),
];

/// The scrub-cost configs (tests/src/bench.rs): one device, its scrub off or on.
const SCRUB_OFF: &str = "remap-0-scrub-off";
const SCRUB_ON: &str = "remap-0-scrub-on";

/// What a config's ratio is taken against.
fn baseline(config: &str) -> &'static str {
    if config.starts_with("remap-allhit") {
        "dm-linear-spare"
    } else if config == SCRUB_ON {
        SCRUB_OFF
    } else {
        "dm-linear"
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs the benchmark on `flavor` (or tabulates a saved console). The 6.12 test kernel's
/// figures are the project's reference and go to docs/BENCHMARKS.md; another kernel's go to
/// docs/BENCHMARKS-<kernel>.md (issue 20: one table per kernel, each with its command and versions).
pub fn bench(paths: &Paths, reps: u32, runtime: &str, from_log: Option<&std::path::Path>, flavor: Flavor) -> Result<i32> {
    let console = match from_log {
        Some(p) => std::fs::read_to_string(p)?,
        None => run_vm(paths, reps, runtime, flavor)?,
    };
    let code = tabulate(paths, reps, runtime, &console, flavor)?;
    if from_log.is_none() {
        // The several-CPU and ext4 boots, as sections before the kept analysis.
        let extra = crate::bench_more::run(paths, flavor, reps, runtime)?;
        let out = report_path(paths, flavor);
        let md = std::fs::read_to_string(&out)?;
        let md = md.replacen("\n## Reading the numbers\n", &format!("\n{extra}## Reading the numbers\n"), 1);
        std::fs::write(&out, md)?;
        print!("{extra}");
    }
    Ok(code)
}

/// Where a kernel's report goes: docs/BENCHMARKS.md for the test kernel, docs/BENCHMARKS-<kernel>.md
/// for others.
fn report_path(paths: &Paths, flavor: Flavor) -> std::path::PathBuf {
    match flavor {
        Flavor::Test => paths.repo.join("docs/BENCHMARKS.md"),
        other => paths.repo.join(format!("docs/BENCHMARKS-{}.md", other.kernel_name())),
    }
}

/// `cargo xtask bench --only ctr`: the constructor-time and memory part alone, in its own
/// icount boot (`vmtest bench-ctr`); prints its figures and writes no report (a partial run
/// must not replace docs/BENCHMARKS.md).
pub fn ctr_only(paths: &Paths, flavor: Flavor) -> Result<i32> {
    let (kernel, module) = crate::prepare(paths, flavor)?;
    let runner = crate::test::build_vmtest(paths)?;
    let opts = vm::VmOptions::new(kernel, module, runner, Some("vmtest bench-ctr".into()), 1800).icount();
    step("benchmark: constructor time and kernel memory only (0 and 1M remaps)");
    let res = vm::run(paths, &opts)?;
    std::fs::write(paths.target().join("bench-ctr-console.log"), &res.console)?;
    for line in res.console.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if let [m, rest @ ..] = w.as_slice() {
            if *m == crate::protocol::BENCHINFO {
                println!("{}", rest.join(" "));
            }
        }
    }
    if res.status != 0 {
        bail!("the benchmark failed in the VM (status {}); console in target/bench-ctr-console.log", res.status);
    }
    Ok(0)
}

fn run_vm(paths: &Paths, reps: u32, runtime: &str, flavor: Flavor) -> Result<String> {
    let (kernel, module) = crate::prepare(paths, flavor)?;
    let runner = crate::test::build_vmtest(paths)?;
    let opts = vm::VmOptions::new(kernel, module, runner, Some(format!("vmtest bench {reps} {runtime}")), 7200).icount();
    step(format!("benchmark: {reps} interleaved repetitions, fio runtime {runtime} s (virtual)"));
    let res = vm::run(paths, &opts)?;
    if res.status != 0 {
        bail!("the benchmark failed in the VM (status {}); console in target/vm/console.log", res.status);
    }
    std::fs::write(paths.target().join("bench-console.log"), &res.console)?;
    Ok(res.console)
}

fn tabulate(paths: &Paths, reps: u32, runtime: &str, console: &str, flavor: Flavor) -> Result<i32> {
    let mut runs: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut workloads: Vec<String> = Vec::new();
    let mut info: Vec<(String, String)> = Vec::new();
    for line in console.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            [m, cfg, wl, _rep, iops] if *m == crate::protocol::BENCH => {
                if !order.iter().any(|c| c == cfg) {
                    order.push(cfg.to_string());
                }
                if !workloads.iter().any(|c| c == wl) {
                    workloads.push(wl.to_string());
                }
                runs.entry((cfg.to_string(), wl.to_string())).or_default().push(iops.parse()?);
            }
            [m, key, rest @ ..] if *m == crate::protocol::BENCHINFO => info.push((key.to_string(), rest.join(" "))),
            _ => {}
        }
    }
    let mut med: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for ((c, w), v) in &runs {
        let mut v = v.clone();
        let m = median(&mut v);
        let spread = if m > 0.0 { (v[v.len() - 1] - v[0]) / m * 100.0 } else { 0.0 };
        med.insert((c.clone(), w.clone()), (m, spread));
    }
    let versions = std::fs::read_to_string(paths.cache.join("versions.txt")).unwrap_or_default();
    let qemu = versions.lines().find(|l| l.starts_with("qemu-system-x86")).unwrap_or("qemu ?");
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(md, "Kernel: `{}` (`cargo xtask bench --kernel {}`).\n", flavor.kernel_name(), flavor.kernel_name());
    let _ = writeln!(
        md,
        "Measured by `cargo xtask bench --reps {reps} --runtime {runtime}` in one VM boot with QEMU \
         `-icount shift=0,sleep=off` (one vCPU, guest time counts instructions: IOPS are a \
         repeatable path-length measure of the whole I/O stack, not a disk speed). \
         fio with io_uring, direct I/O, {runtime} s of virtual time per run on a 64 MiB region; \
         repetitions interleaved (every config and workload once per round). \
         Versions: {}, {qemu}, {}.\n",
        info.iter().find(|(k, _)| k == "kernel").map(|(_, v)| format!("kernel {v}")).unwrap_or_default(),
        info.iter().find(|(k, _)| k == "fio").map(|(_, v)| v.clone()).unwrap_or_default(),
    );
    let _ = writeln!(md, "{}", CONFIGS_TEXT);
    let _ = writeln!(md, "## IOPS: median (spread = (max - min) / median) and ratio to the baseline\n");
    let mut header = String::from("| config | baseline |");
    let mut sep = String::from("| --- | --- |");
    for w in &workloads {
        header.push_str(&format!(" {w} |"));
        sep.push_str(" --- |");
    }
    let _ = writeln!(md, "{header}\n{sep}");
    for c in &order {
        let base = baseline(c);
        let mut row = format!("| {c} | {} |", if c.starts_with("remap") { base } else { "" });
        for w in &workloads {
            match (med.get(&(c.clone(), w.clone())), med.get(&(base.to_string(), w.clone()))) {
                (Some((m, s)), Some((b, _))) if c.starts_with("remap") && *b > 0.0 => {
                    row.push_str(&format!(" {m:.0} ({s:.2}%) **{:.2}%** |", m / b * 100.0))
                }
                (Some((m, s)), _) => row.push_str(&format!(" {m:.0} ({s:.2}%) |")),
                _ => row.push_str(" n/a |"),
            }
        }
        let _ = writeln!(md, "{row}");
    }
    // The chart: remap configs against their baselines.
    let groups: Vec<crate::chart::Group> = order
        .iter()
        .filter(|c| c.starts_with("remap"))
        .map(|c| {
            let base = baseline(c);
            crate::chart::Group {
                label: c.trim_start_matches("remap-").replace("interleaved", "inter"),
                ratios: workloads
                    .iter()
                    .map(|w| Some(med.get(&(c.clone(), w.clone()))?.0 / med.get(&(base.to_string(), w.clone()))?.0 * 100.0))
                    .collect(),
            }
        })
        .collect();
    let font = paths.root().join("usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
    let (chart, chart_name) = match flavor {
        Flavor::Test => (paths.repo.join("docs/bench.png"), "bench.png".to_string()),
        other => {
            let name = format!("bench-{}.png", other.kernel_name());
            (paths.repo.join("docs").join(&name), name)
        }
    };
    match crate::chart::draw(&chart, &font, &workloads, &groups) {
        Ok(()) => {
            let _ = writeln!(md, "\n![IOPS as % of the baseline]({chart_name})");
        }
        Err(e) => step(format!("no chart: {e:#}")),
    }
    let _ = writeln!(md, "\n## Against the targets\n\n| config | baseline | target | worst workload ratio | met |\n| --- | --- | --- | --- | --- |");
    for (c, b, t) in TARGETS {
        let worst = workloads
            .iter()
            .filter_map(|w| Some(med.get(&(c.to_string(), w.clone()))?.0 / med.get(&(b.to_string(), w.clone()))?.0))
            .fold(f64::INFINITY, f64::min);
        if worst.is_finite() {
            let _ = writeln!(md, "| {c} | {b} | {:.1}% | {:.2}% | {} |", t * 100.0, worst * 100.0, if worst >= *t { "yes" } else { "**no**" });
        }
    }
    let get = |k: &str| info.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let _ = write!(md, "{}", scrub_section(&workloads, &med, &get("scrub-on")));
    let remaps: f64 = get("storm-remaps").parse().unwrap_or(0.0);
    let ms: f64 = get("storm-ms").parse().unwrap_or(0.0);
    let log_writes: f64 = get("storm-log-writes").parse().unwrap_or(0.0);
    let commits: f64 = get("storm-commits").parse().unwrap_or(0.0);
    let _ = writeln!(md, "\n## Remap storm\n");
    let _ = writeln!(
        md,
        "4096 writes to bad blocks (dm-error under dm-linear on null_blk), 32 in flight: {remaps:.0} remaps \
         persisted in {ms:.0} ms of virtual time = **{:.0} remaps/s** (target 10,000); {commits:.0} commits, \
         {log_writes:.0} log-block writes = **{:.3} metadata writes per remap**.\n",
        if ms > 0.0 { remaps / ms * 1000.0 } else { 0.0 },
        if remaps > 0.0 { log_writes / remaps } else { 0.0 }
    );
    let lat = |k: &str, q: &str| get(k).split_whitespace().find_map(|p| p.strip_prefix(q)).unwrap_or("?").to_string();
    let _ = writeln!(
        md,
        "Write latency (fio completion latency, virtual µs) during the storm: a relocating write p50 {} / p99 {}; \
         a plain write to good blocks (queue depth 1, running beside the storm) p50 {} / p99 {}.\n",
        lat("storm-latency-us", "p50="),
        lat("storm-latency-us", "p99="),
        lat("plain-latency-us", "p50="),
        lat("plain-latency-us", "p99=")
    );
    let _ = writeln!(md, "## Constructor time and memory with 1M remaps\n");
    let _ = writeln!(md, "| remaps | `dmsetup create` (virtual ms) | kernel heap growth: Slab + VmallocUsed (KiB) |\n| --- | --- | --- |");
    for k in ["ctr-0", "ctr-1000000"] {
        let v = get(k);
        let f = |name: &str| v.split_whitespace().find_map(|p| p.strip_prefix(name)).unwrap_or("?").to_string();
        let _ = writeln!(md, "| {} | {} | {} |", f("remaps="), f("ms="), f("kb="));
    }
    let _ = writeln!(
        md,
        "\nKernel memory per remap (the difference between the two, per remap): **{} bytes** (target 16); constructor \
         target 150 ms. Each side of each growth is read with the kernel at rest (see \"Kernel memory per remap: how it \
         is measured\" below).\n",
        get("bytes-per-remap")
    );
    for (k, v) in info.iter().filter(|(k, _)| k.starts_with("cache-")) {
        let _ = writeln!(md, "- {k}: {v}");
    }
    let _ = writeln!(md, "\n## Reading the numbers\n\n{}", NOTES_PLACEHOLDER);
    let out = report_path(paths, flavor);
    let old = std::fs::read_to_string(&out).unwrap_or_default();
    // Keep the hand-written analysis (after the marker) across runs.
    let notes = old.split_once(NOTES_MARKER).map(|(_, n)| n.to_string()).unwrap_or_else(|| "\n(none yet)\n".into());
    let md = md.replace(NOTES_PLACEHOLDER, &format!("{NOTES_MARKER}{notes}"));
    std::fs::write(&out, &md)?;
    print!("{md}");
    step(format!("written to {}", out.display()));
    Ok(0)
}

/// The scrub's cost: foreground IOPS with the scrub on at its defaults against off, per
/// workload measured, and what the scrub read meanwhile (`BENCHINFO scrub-on`).
fn scrub_section(workloads: &[String], med: &BTreeMap<(String, String), (f64, f64)>, info: &str) -> String {
    let mut md = String::new();
    let rows: Vec<(String, f64, f64)> = workloads
        .iter()
        .filter_map(|w| Some((w.clone(), med.get(&(SCRUB_ON.to_string(), w.clone()))?.0, med.get(&(SCRUB_OFF.to_string(), w.clone()))?.0)))
        .collect();
    if rows.is_empty() {
        return md;
    }
    let _ = writeln!(md, "\n## Foreground reads with the scrub at its defaults\n");
    let _ = writeln!(
        md,
        "The same dm-remap device (no remap) with the scrub off (`scan stop`) and on at its default \
         speeds (`scan start`, 1-32 MiB/s), one run after the other in each round; the scrub is \
         started and seen reading before each scrub-on run, and stopped after it.\n"
    );
    let _ = writeln!(md, "| workload | scrub off (IOPS) | scrub on (IOPS) | on / off (goal >= 97%) |\n| --- | --- | --- | --- |");
    for (w, on, off) in &rows {
        let _ = writeln!(md, "| {w} | {off:.0} | {on:.0} | **{:.2}%** |", if *off > 0.0 { on / off * 100.0 } else { 0.0 });
    }
    let field = |k: &str| info.split_whitespace().find_map(|p| p.strip_prefix(k)).and_then(|v| v.parse::<f64>().ok());
    if let (Some(read), Some(secs), Some(pos), Some(blocks), Some(passes)) =
        (field("read="), field("secs="), field("position="), field("blocks="), field("passes="))
    {
        let _ = writeln!(
            md,
            "\nDuring the scrub-on runs (fio's start-up included) the scrub read {:.1} MiB in {secs:.1} s \
             of virtual time, {:.2} MiB/s on average; at the end it was at block {pos:.0} of {blocks:.0}, \
             {passes:.0} passes done (a finished pass would have stopped the benchmark).",
            read / (1 << 20) as f64,
            if secs > 0.0 { read / (1 << 20) as f64 / secs } else { 0.0 },
        );
    }
    md
}

const NOTES_MARKER: &str = "<!-- analysis: kept across runs -->";
const NOTES_PLACEHOLDER: &str = "@@NOTES@@";

const CONFIGS_TEXT: &str = "Devices: the main device is an 8 GiB null_blk (`queue_mode=2 irqmode=0`, stores \
nothing); spares are memory-backed null_blks holding metadata written with the shared format code \
(`tests/src/prep.rs`). 4 KiB random I/O is aligned to 8 KiB (even blocks), identically for every config.

| config | what |
| --- | --- |
| null_blk | the raw main device |
| dm-linear | dm-linear over it: the baseline |
| dm-linear-last | the same device measured again at the end of each round |
| dm-linear-spare | dm-linear onto the pool of a memory-backed spare: the baseline of the all-hit configs, whose I/O lands there |
| remap-0 | dm-remap, no remap |
| remap-0-scrub-off | dm-remap, no remap, on its own spare, the scrub stopped (`scan stop`); random reads only |
| remap-0-scrub-on | the same device with the scrub on at its default speeds (`scan start` before each run, `scan stop` after): compared with `remap-0-scrub-off` |
| remap-1k | 1,000 remaps outside the I/O region |
| remap-100k-outside | 100,000 remaps outside the I/O region (the region bitmap answers) |
| remap-100k-interleaved | 100,000 remaps, 8,192 of them on the odd blocks of the I/O region, none hit (the cache and the binary search answer); no 1 MiB read (it would hit) |
| remap-100k-interleaved-nocache | the same with `cache_size 0` |
| remap-allhit | every block of the region remapped (contiguous in the pool): all I/O goes to the spare |
| remap-allhit-nocache | the same with `cache_size 0` |
";

#[cfg(test)]
mod tests {
    use super::{baseline, scrub_section, SCRUB_OFF, SCRUB_ON};
    use std::collections::BTreeMap;

    #[test]
    fn scrub_on_is_compared_with_scrub_off() {
        assert_eq!(baseline(SCRUB_ON), SCRUB_OFF);
        assert_eq!(baseline(SCRUB_OFF), "dm-linear");
        assert_eq!(baseline("remap-allhit-nocache"), "dm-linear-spare");
        let w = vec!["randread-4k-qd1".to_string(), "seqread-1m-qd8".to_string()];
        let mut med = BTreeMap::new();
        med.insert((SCRUB_ON.to_string(), w[0].clone()), (97.0, 0.0));
        med.insert((SCRUB_OFF.to_string(), w[0].clone()), (100.0, 0.0));
        let md = scrub_section(&w, &med, "read=2097152 secs=4.0 position=512 blocks=2097152 passes=0");
        assert!(md.contains("| randread-4k-qd1 | 100 | 97 | **97.00%** |"), "{md}");
        assert!(!md.contains("seqread"), "{md}");
        assert!(md.contains("read 2.0 MiB in 4.0 s of virtual time, 0.50 MiB/s on average; at the end it was at block 512 of 2097152, 0 passes"), "{md}");
        assert_eq!(scrub_section(&w, &BTreeMap::new(), ""), "");
    }
}
