//! `cargo xtask profile <config> <workload>`: where the guest kernel spends its instructions,
//! for dm-linear and a dm-remap configuration side by side, in the same icount boot as the
//! benchmark uses.
//!
//! Not sampled: a QEMU TCG plugin (xtask/profile/insn_profile.c, built here against the
//! `qemu-plugin.h` of the build root's QEMU) counts every guest instruction at the address of
//! the translation block that runs it. The guest (`vmtest profile`) executes a marker
//! instruction before and after each measured fio run, and the plugin writes one file per
//! window. The guest prints its `/proc/kallsyms`; each block's instructions go to the symbol
//! containing its start address. Under `-icount` the instruction stream repeats from run to
//! run, so the profile is as deterministic as the benchmark, and the guest kernel is the
//! benchmark's own (no profiling options changed).

use crate::env::{in_root, in_root_output, step, Paths};
use crate::kernel::Flavor;
use crate::vm;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The QEMU source whose `include/qemu/qemu-plugin.h` the plugin is built against: the upstream
/// tarball of the build root's qemu-system-x86 package, and its SHA-256.
const QEMU_SOURCES: &[(&str, &str)] = &[("10.0.13+ds", "6a0888e806c2ffc0c5f0733e974f9aea55491950d3c47c98669c8b236dde59ae")];

/// Build-root packages the plugin's build needs.
const PLUGIN_TOOLS: &[&str] = &["gcc", "libglib2.0-dev", "pkg-config", "curl", "xz-utils", "ca-certificates"];

const PLUGIN_SRC: &str = "xtask/profile/insn_profile.c";

/// Builds the plugin (cached by its source and the QEMU version) and returns its path.
fn plugin(paths: &Paths) -> Result<PathBuf> {
    crate::setup::setup(paths)?;
    crate::setup::root_packages(paths, PLUGIN_TOOLS)?;
    let qemu = in_root_output(paths, Path::new("/"), "dpkg-query", &["-W", "-f=${Version}", "qemu-system-x86"])?;
    // 1:10.0.13+ds-0+deb13u1 -> 10.0.13+ds
    let upstream = qemu.split_once(':').map_or(qemu.as_str(), |(_, v)| v).rsplit_once('-').map_or(qemu.as_str(), |(v, _)| v).to_string();
    let Some((_, sha)) = QEMU_SOURCES.iter().find(|(v, _)| *v == upstream) else {
        bail!("no pinned QEMU source for the build root's qemu {qemu}: add its orig tarball's SHA-256 to QEMU_SOURCES in xtask/src/profile.rs");
    };
    let src = std::fs::read(paths.repo.join(PLUGIN_SRC))?;
    let mut h = Sha256::new();
    h.update(&src);
    h.update(upstream.as_bytes());
    let hash = format!("{:x}", h.finalize());
    let dir = paths.cache.join("profile");
    std::fs::create_dir_all(&dir)?;
    let so = dir.join(format!("insn_profile-{}.so", &hash[..16]));
    if so.exists() {
        return Ok(so);
    }
    let header_dir = dir.join(format!("qemu-{upstream}"));
    let header = header_dir.join("qemu-plugin.h");
    if !header.exists() {
        let tarball = dir.join(format!("qemu_{upstream}.orig.tar.xz"));
        let mirror = crate::setup::debian_mirror()?;
        let url = format!("{mirror}/pool/main/q/qemu/qemu_{upstream}.orig.tar.xz");
        step(format!("fetching {url} (for qemu-plugin.h)"));
        in_root(paths, &dir, "curl", &["-fsSL", "-o", &tarball.to_string_lossy(), &url])?;
        let got = format!("{:x}", Sha256::digest(std::fs::read(&tarball)?));
        if got != *sha {
            std::fs::remove_file(&tarball)?;
            bail!("{url}: SHA-256 {got}, expected {sha}");
        }
        let member = format!("qemu-{}/include/qemu/qemu-plugin.h", upstream.trim_end_matches("+ds"));
        in_root(paths, &dir, "tar", &["-xJf", &tarball.to_string_lossy(), "-C", &dir.to_string_lossy(), &member])?;
        std::fs::create_dir_all(&header_dir)?;
        std::fs::rename(dir.join(&member), &header)?;
        std::fs::remove_file(&tarball)?;
    }
    step("building the QEMU instruction-count plugin");
    let cmd = format!(
        "gcc -O2 -Wall -Werror -shared -fPIC -I{} $(pkg-config --cflags glib-2.0) -o {}.tmp {} $(pkg-config --libs glib-2.0) && mv {}.tmp {}",
        header_dir.display(),
        so.display(),
        paths.repo.join(PLUGIN_SRC).display(),
        so.display(),
        so.display()
    );
    in_root(paths, &paths.repo, "sh", &["-c", &cmd])?;
    Ok(so)
}

/// A kernel symbol: start address and name (`[module]` appended for module symbols).
struct Symbols(Vec<(u64, String)>);

impl Symbols {
    /// From the guest's `PROFSYM <addr> <type> <name> [module]` lines: text symbols only.
    fn parse(console: &str) -> Symbols {
        let mut v: Vec<(u64, String)> = console
            .lines()
            .filter_map(|l| l.split_once(crate::protocol::PROFSYM).map(|(_, r)| r))
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let addr = u64::from_str_radix(w.next()?, 16).ok()?;
                let ty = w.next()?;
                let name = w.next()?;
                let module = w.next().map(|m| format!(" {m}")).unwrap_or_default();
                matches!(ty, "t" | "T").then(|| (addr, format!("{name}{module}")))
            })
            .collect();
        v.sort();
        Symbols(v)
    }

    /// The symbol containing `addr`: the last one starting at or before it. Addresses below
    /// the kernel's half are user space (fio).
    fn of(&self, addr: u64) -> &str {
        if addr < 0xffff_8000_0000_0000 {
            return "[user space]";
        }
        match self.0.partition_point(|(a, _)| *a <= addr) {
            0 => "[unknown kernel]",
            i => &self.0[i - 1].1,
        }
    }
}

/// Instructions per symbol in one window file.
fn window(path: &Path, syms: &Symbols) -> Result<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("plugin output {}", path.display()))?;
    let mut m = BTreeMap::new();
    for l in text.lines() {
        let (a, n) = l.split_once(' ').context("plugin line")?;
        let (a, n) = (u64::from_str_radix(a, 16)?, n.parse::<u64>()?);
        *m.entry(syms.of(a).to_string()).or_insert(0) += n;
    }
    Ok(m)
}

/// One measured run, from the guest's `PROFILE <name> ios=<n> iops=<x>` line.
struct Run {
    name: String,
    ios: u64,
    iops: f64,
}

fn runs(console: &str) -> Vec<Run> {
    console
        .lines()
        .filter_map(|l| l.split_once(crate::protocol::PROFILE).map(|(_, r)| r))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next()?.to_string();
            let ios = w.next()?.strip_prefix("ios=")?.parse().ok()?;
            let iops = w.next()?.strip_prefix("iops=")?.parse().ok()?;
            Some(Run { name, ios, iops })
        })
        .collect()
}

/// Boots the icount VM with the plugin, runs the workload on dm-linear and on `config`, and
/// prints and saves (target/PROFILE-<config>-<workload>.md) the top symbols side by side in
/// instructions per I/O.
pub fn profile(paths: &Paths, config: &str, workload: &str, runtime: &str, top: usize, flavor: Flavor) -> Result<i32> {
    let so = plugin(paths)?;
    let (kernel, module) = crate::prepare(paths, flavor)?;
    let runner = crate::test::build_vmtest(paths)?;
    let out_dir = paths.target().join("profile");
    if out_dir.exists() {
        std::fs::remove_dir_all(&out_dir)?;
    }
    std::fs::create_dir_all(&out_dir)?;
    let prefix = crate::env::absolute(&out_dir)?.join("window");
    // The several-CPU workloads get one vCPU per fio job, as in the benchmark's SMP boot.
    let vcpus = if workload.ends_with("-4jobs") { 4 } else { 1 };
    let opts = vm::VmOptions::new(kernel, module, runner, Some(format!("vmtest profile {config} {workload} {runtime}")), 7200)
        .icount_vcpus(vcpus)
        .qemu_args(&["-plugin".into(), format!("{},out={}", so.display(), prefix.display())]);
    step(format!("profiling {workload} on dm-linear and {config} ({runtime} s of virtual time each)"));
    let res = vm::run(paths, &opts)?;
    std::fs::write(out_dir.join("console.log"), &res.console)?;
    if res.status != 0 {
        bail!("the profile run failed in the VM (status {}); console in target/profile/console.log", res.status);
    }
    let syms = Symbols::parse(&res.console);
    let runs = runs(&res.console);
    let single = config == "storm" || config == "ctr";
    let want = if single { 1 } else { 2 };
    if syms.0.is_empty() || runs.len() != want {
        bail!("the guest printed {} symbols and {} runs (expected {want}); console in target/profile/console.log", syms.0.len(), runs.len());
    }
    // Windows: 0 = boot to the first marker, 1 = first run, 2 = between, 3 = second run.
    let a = window(&out_dir.join("window.1"), &syms)?;
    let text = if single {
        storm_report(&runs[0], &a, top, &res.console)
    } else {
        let b = window(&out_dir.join("window.3"), &syms)?;
        report(config, workload, runtime, &runs, &a, &b, top, &res.console)
    };
    print!("{text}");
    let file = paths.target().join(format!("PROFILE-{}-{config}-{workload}.md", flavor.kernel_name()));
    std::fs::write(&file, &text)?;
    step(format!("profile written to {}", file.display()));
    Ok(0)
}

/// The storm's profile: instructions per remap by symbol, and the share of virtual time the
/// CPU spent idle (waiting, not computing).
fn storm_report(run: &Run, a: &BTreeMap<String, u64>, top: usize, console: &str) -> String {
    let info = |key: &str| console.lines().find_map(|l| l.split_once(&format!("BENCHINFO {key} ")).map(|(_, k)| k.trim().to_string())).unwrap_or_default();
    let total: u64 = a.values().sum();
    let mut out = String::new();
    let (unit, head) = if run.name == "ctr" {
        ("create", format!(
            "`cargo xtask profile ctr`, kernel {}: `dmsetup create` of a target whose spare holds 1,000,000 remaps, {:.0} ms (virtual); {} instructions in all.\n",
            info("kernel"),
            1000.0 / run.iops.max(1e-9),
            total
        ))
    } else {
        ("remap", format!(
            "`cargo xtask profile storm`, kernel {}: 4096 writes to bad blocks, 32 in flight; {} remaps at {:.0} remaps/s (virtual time); \
             {:.0} instructions per remap in all, fio's start and exit included.\n",
            info("kernel"),
            run.ios,
            run.iops,
            total as f64 / run.ios.max(1) as f64
        ))
    };
    let _ = writeln!(out, "# Profile: {}\n\n{head}", if unit == "create" { "the constructor with 1M remaps" } else { "the remap storm" });
    let mut v: Vec<(&String, &u64)> = a.iter().collect();
    v.sort_by(|x, y| y.1.cmp(x.1));
    let _ = writeln!(out, "| symbol | instructions per {unit} |\n| --- | ---: |");
    for (s, n) in v.iter().take(top) {
        let _ = writeln!(out, "| `{s}` | {:.0} |", **n as f64 / run.ios.max(1) as f64);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn report(config: &str, workload: &str, runtime: &str, runs: &[Run], a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>, top: usize, console: &str) -> String {
    let per = |m: &BTreeMap<String, u64>, s: &str, ios: u64| m.get(s).copied().unwrap_or(0) as f64 / ios.max(1) as f64;
    let (ra, rb) = (&runs[0], &runs[1]);
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    let kernel = console.lines().find_map(|l| l.split_once("BENCHINFO kernel ").map(|(_, k)| k.trim().to_string())).unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "# Profile: {workload}, {} against {}\n", rb.name, ra.name);
    let _ = writeln!(
        out,
        "`cargo xtask profile {config} {workload} --runtime {runtime}`, kernel {kernel}: every guest instruction in each \
         fio run, counted by a QEMU plugin and attributed to the kernel symbol it runs in (`-icount shift=0,sleep=off`).\n"
    );
    let _ = writeln!(out, "| | {} | {} |\n| --- | ---: | ---: |", ra.name, rb.name);
    let _ = writeln!(out, "| I/Os | {} | {} |", ra.ios, rb.ios);
    let _ = writeln!(out, "| IOPS (virtual time) | {:.0} | {:.0} |", ra.iops, rb.iops);
    let _ = writeln!(out, "| instructions per I/O, all | {:.0} | {:.0} |\n", total(a) as f64 / ra.ios.max(1) as f64, total(b) as f64 / rb.ios.max(1) as f64);
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    // The symbols that matter most either way, then the largest differences.
    let mut by_size = names.clone();
    by_size.sort_by(|x, y| {
        let m = |s: &str| per(a, s, ra.ios).max(per(b, s, rb.ios));
        m(y).total_cmp(&m(x))
    });
    let _ = writeln!(out, "Top {top} symbols, instructions per I/O:\n");
    let _ = writeln!(out, "| symbol | {} | {} | difference |\n| --- | ---: | ---: | ---: |", ra.name, rb.name);
    for s in by_size.iter().take(top) {
        let (x, y) = (per(a, s, ra.ios), per(b, s, rb.ios));
        let _ = writeln!(out, "| `{s}` | {x:.1} | {y:.1} | {:+.1} |", y - x);
    }
    // Every lock and lock-like entry point that ran, so a lock taken per I/O shows as a
    // difference here (issue 20: none of dm-remap's own; SRCU and RCU read sides are per-CPU
    // counters, listed because they are the gate and the table's read side).
    let locks: Vec<&&String> = names.iter().filter(|s| is_lock(s) && per(a, s, ra.ios).max(per(b, s, rb.ios)) >= 0.05).collect();
    let _ = writeln!(out, "Lock functions (spinlocks, mutexes, rwsems, RCU/SRCU read sides), instructions per I/O:\n");
    let _ = writeln!(out, "| symbol | {} | {} | difference |\n| --- | ---: | ---: | ---: |", ra.name, rb.name);
    for s in &locks {
        let (x, y) = (per(a, s, ra.ios), per(b, s, rb.ios));
        let _ = writeln!(out, "| `{s}` | {x:.1} | {y:.1} | {:+.1} |", y - x);
    }
    let _ = writeln!(out);
    let mut by_diff = names;
    by_diff.sort_by(|x, y| {
        let d = |s: &str| (per(b, s, rb.ios) - per(a, s, ra.ios)).abs();
        d(y).total_cmp(&d(x))
    });
    let _ = writeln!(out, "\nLargest differences, instructions per I/O:\n");
    let _ = writeln!(out, "| symbol | {} | {} | difference |\n| --- | ---: | ---: | ---: |", ra.name, rb.name);
    for s in by_diff.iter().take(top) {
        let (x, y) = (per(a, s, ra.ios), per(b, s, rb.ios));
        let _ = writeln!(out, "| `{s}` | {x:.1} | {y:.1} | {:+.1} |", y - x);
    }
    out
}

/// Whether a kernel symbol is a lock's entry point (or its slow path).
fn is_lock(sym: &str) -> bool {
    const PATTERNS: &[&str] = &[
        "_raw_spin_", "_raw_read_", "_raw_write_", "queued_spin_", "queued_read_", "queued_write_", "native_queued_spin",
        "mutex_lock", "mutex_unlock", "down_read", "down_write", "up_read", "up_write", "rwsem", "srcu_read_", "rcu_read_",
    ];
    let name = sym.split_whitespace().next().unwrap_or(sym);
    PATTERNS.iter().any(|p| name.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_and_windows() {
        let console = "x @@PROFSYM@@ ffffffff81000000 T _text\n@@PROFSYM@@ ffffffff81000100 t foo\n\
                       @@PROFSYM@@ ffffffffc0000000 t remap_map [dm_remap]\n@@PROFSYM@@ ffffffff81000200 D data\n\
                       @@PROFILE@@ dm-linear ios=100 iops=1000.5\n@@PROFILE@@ remap-0 ios=200 iops=2000\n";
        let s = Symbols::parse(console);
        assert_eq!(s.0.len(), 3);
        assert_eq!(s.of(0xffffffff81000050), "_text");
        assert_eq!(s.of(0xffffffff81000100), "foo");
        assert_eq!(s.of(0xffffffffc0000010), "remap_map [dm_remap]");
        assert_eq!(s.of(0x401000), "[user space]");
        assert_eq!(s.of(0xffff900000000000), "[unknown kernel]");
        let r = runs(console);
        assert_eq!((r.len(), r[0].name.as_str(), r[0].ios, r[1].iops), (2, "dm-linear", 100, 2000.0));
        let dir = std::env::temp_dir().join(format!("xtask-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let w = dir.join("window.1");
        std::fs::write(&w, "ffffffff81000100 30\nffffffff81000180 12\n401000 5\n").unwrap();
        let m = window(&w, &s).unwrap();
        assert_eq!((m["foo"], m["[user space]"], m.len()), (42, 5, 2));
        let text = report("remap-0", "randread-4k-qd32", "1", &r, &m, &m, 5, console);
        assert!(text.contains("| `foo` | 0.4 | 0.2 | -0.2 |"), "{text}");
        assert!(is_lock("_raw_spin_lock_irqsave") && is_lock("dmr_rcu_read_lock [dm_remap]") && is_lock("__srcu_read_unlock"));
        assert!(!is_lock("blk_mq_submit_bio") && !is_lock("dm_submit_bio"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
