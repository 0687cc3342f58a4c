//! `vmtest`: dm-remap's integration tests, run inside the test VM.
//!
//! `vmtest [--after-reboot] [--second-kernel] [--filter SUBSTRING]` runs the tests in order
//! (`--second-kernel`: see [`second_kernel`]). Each one sets up and tears down its
//! own devices; each fails if the kernel log gained a bug report (BUG, WARNING, Oops, lockdep,
//! KASAN, ...) while it ran. Results are printed as `--- PASS name` / `--- FAIL name: why`
//! lines, which `cargo xtask test` counts, and a closing `vm: N passed, M failed` line.
//!
//! `vmtest powercut CYCLE storm|final` is the guest side of the power-cut test (see
//! `t_powercut`).
//!
//! `vmtest replay-log LOG DEV [MARK]` replays a dm-log-writes log (see `logwrites`).
//!
//! `vmtest demo` walks through the target at work for `cargo xtask demo`.

mod bench;
mod bench_more;
mod demo;
mod harness;
mod prep;
mod profile;
mod protocol;
mod t_badblocks;
mod t_engine;
mod t_faults;
mod t_foundation;
mod t_health;
mod t_powercut;
mod logwrites;
mod t_crash;
mod t_correct;
mod t_safety;
mod t_scrub;
mod t_realfaults;
mod t_reliability;
mod t_tool;

use harness::is_kernel_bug;
use std::time::Instant;

/// A test: its name and body.
pub type Test = (&'static str, fn() -> anyhow::Result<()>);

/// A test across a reboot: its name, the part before, the part after (on /dev/vda, the disk
/// `cargo xtask test` keeps between its two boots).
pub type RebootTest = (&'static str, fn() -> anyhow::Result<()>, fn() -> anyhow::Result<()>);

/// Tests that prove only a wall-clock property (how long something waited). `cargo xtask
/// test` runs them on one kernel (`--second-kernel` on the others): their figures depend on
/// the machine, not on the kernel's API.
const WALL_CLOCK: &[&str] = &[
    "correct_slow_scan_step_blocks_neither_relocation_nor_suspend",
    // The limiter is logic-crate code; the test measures rates over seconds.
    "scrub_limiter_ceiling_idle_floor_under_fio",
    // A whole pass at the default ceiling takes 32 s of wall clock; the scrub's reads,
    // checkpoint and progress on the second kernel are covered by the checkpoint test.
    "scrub_pass_over_1gib_at_defaults_with_progress",
];

static SECOND_KERNEL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this suite repeats, on another kernel, a suite that `cargo xtask test` runs in full
/// on the first one (`--second-kernel`). Then the wall-clock tests are skipped, and the
/// generated-input tests (table lines, messages, the crash replay's storm) do a tenth to a
/// quarter of their work: what they check at scale is the logic crate's parsers and loader,
/// the same code on every kernel; what differs between kernels, the device-mapper glue, a
/// smaller run exercises as well.
pub fn second_kernel() -> bool {
    SECOND_KERNEL.load(std::sync::atomic::Ordering::Relaxed)
}

fn all_tests() -> Vec<Test> {
    let mut v = Vec::new();
    v.extend_from_slice(t_foundation::TESTS);
    v.extend_from_slice(t_engine::TESTS);
    v.extend_from_slice(t_correct::TESTS);
    v.extend_from_slice(t_safety::TESTS);
    v.extend_from_slice(t_health::TESTS);
    v.extend_from_slice(t_scrub::TESTS);
    v.extend_from_slice(t_badblocks::TESTS);
    v.extend_from_slice(t_tool::TESTS);
    v.extend_from_slice(t_reliability::TESTS);
    v.extend_from_slice(t_crash::TESTS);
    v.extend_from_slice(t_faults::TESTS);
    v.extend_from_slice(t_realfaults::TESTS);
    v
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("bench") {
        let reps = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(3);
        let runtime = args.get(2).cloned().unwrap_or_else(|| "1".into());
        if let Err(e) = bench::run(reps, &runtime) {
            println!("bench failed: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if args.first().map(String::as_str) == Some("bench-ctr") {
        // Only the constructor-time and memory part of `bench` (`cargo xtask bench --only ctr`).
        if let Err(e) = bench::ctr_only() {
            println!("bench failed: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(which @ ("bench-smp" | "bench-fs")) = args.first().map(String::as_str) {
        let reps = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(3);
        let runtime = args.get(2).cloned().unwrap_or_else(|| "1".into());
        let r = if which == "bench-smp" { bench_more::smp(reps, &runtime) } else { bench_more::fs(reps, &runtime) };
        if let Err(e) = r {
            println!("bench failed: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if args.first().map(String::as_str) == Some("profile") {
        if let Err(e) = profile::run(&args[1..]) {
            println!("profile failed: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if args.first().map(String::as_str) == Some("powercut") {
        if let Err(e) = t_powercut::run(&args[1..]) {
            println!("{}powercut: {e:#}", protocol::FAIL);
            std::process::exit(1);
        }
        return;
    }
    if args.first().map(String::as_str) == Some("replay-log") {
        if let Err(e) = logwrites::replay_cli(&args[1..]) {
            println!("replay-log failed: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if args.first().map(String::as_str) == Some("demo") {
        if let Err(e) = demo::run() {
            println!("demo failed: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let (mut after_reboot, mut second, mut filter) = (false, false, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.clone().next()) {
            ("--after-reboot", _) => after_reboot = true,
            ("--second-kernel", _) => second = true,
            ("--filter", Some(v)) => {
                filter = Some(v.clone());
                it.next();
            }
            _ => {
                eprintln!("usage: vmtest [--after-reboot] [--second-kernel] [--filter SUBSTRING] | vmtest demo");
                std::process::exit(2);
            }
        }
    }
    SECOND_KERNEL.store(second, std::sync::atomic::Ordering::Relaxed);
    let mut tests: Vec<(String, fn() -> anyhow::Result<()>)> = Vec::new();
    if !after_reboot {
        tests.extend(all_tests().into_iter().map(|(n, f)| (n.to_string(), f)));
    }
    for (n, before, after) in t_engine::REBOOT_TESTS.iter().chain(t_badblocks::REBOOT_TESTS) {
        let (phase, f) = if after_reboot { ("after reboot", *after) } else { ("before reboot", *before) };
        tests.push((format!("{n} ({phase})"), f));
    }
    tests.retain(|(n, _)| filter.as_ref().map_or(true, |f| n.contains(f.as_str())));
    // Latency figures need a fine-grained clock: wait (briefly) for the TSC clocksource.
    let cs = "/sys/devices/system/clocksource/clocksource0/current_clocksource";
    for _ in 0..50 {
        if std::fs::read_to_string(cs).is_ok_and(|c| c.trim() == "tsc") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("vmtest: clocksource {}", std::fs::read_to_string(cs).unwrap_or_default().trim());
    if let Err(e) = harness::klog_open() {
        println!("vmtest: cannot open /dev/kmsg: {e:#}");
        std::process::exit(1);
    }
    // Drained all along, not only between tests, so that a test's burst of kernel lines
    // (thousands of refused table lines) is read before the ring buffer wraps: a wrapped log
    // fails the test (harness::KLOG_LOST). Another thread: the fault-injection tests' fail-nth
    // countdown is per thread and never sees its reads.
    std::thread::spawn(|| loop {
        harness::klog_poll();
        std::thread::sleep(std::time::Duration::from_millis(20));
    });
    // Anything the boot itself logged is not a test's doing, but it is still a kernel bug.
    let boot_bugs: Vec<String> = harness::klog_take().into_iter().filter(|l| is_kernel_bug(l)).collect();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    if !boot_bugs.is_empty() {
        println!("{}boot: kernel reported a bug during boot:\n    {}", protocol::FAIL, boot_bugs.join("\n    "));
        failed += 1;
    }
    for (name, body) in &tests {
        let (name, body) = (name.as_str(), *body);
        if second && WALL_CLOCK.contains(&name) {
            skipped += 1;
            println!("{}{name}: a wall-clock property, measured on one kernel only", protocol::SKIP);
            continue;
        }
        println!("{}{name}", protocol::RUN);
        let start = Instant::now();
        harness::klog_take();
        let result = std::panic::catch_unwind(body);
        let bugs = harness::bug_reports(&harness::klog_take());
        let leftovers = harness::leftover_devices();
        let verdict = match result {
            Err(_) => Err("the test panicked".to_string()),
            Ok(Err(e)) if format!("{e}").starts_with("SKIP: ") => {
                skipped += 1;
                println!("{}{name}: {}", protocol::SKIP, format!("{e}").trim_start_matches("SKIP: "));
                continue;
            }
            Ok(Err(e)) => Err(format!("{e:#}")),
            Ok(Ok(())) if !bugs.is_empty() => Err(format!("kernel log gained:\n    {}", bugs.join("\n    "))),
            Ok(Ok(())) if !leftovers.is_empty() => Err(format!("left devices behind: {}", leftovers.join(", "))),
            Ok(Ok(())) => Ok(()),
        };
        let secs = start.elapsed().as_secs_f64();
        match verdict {
            Ok(()) => {
                passed += 1;
                println!("{}{name} ({secs:.1}s)", protocol::PASS);
            }
            Err(why) => {
                failed += 1;
                println!("{}{name} ({secs:.1}s): {why}", protocol::FAIL);
            }
        }
    }
    println!("vm: {passed} passed, {failed} failed, {skipped} skipped");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
