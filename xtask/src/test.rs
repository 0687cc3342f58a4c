//! `cargo xtask test`: the host tests of the workspace, then the VM integration tests, and
//! one closing line `N passed, M failed` over both.

use crate::env::{step, Paths};
use crate::kernel::Flavor;
use crate::vm;
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use std::process::{Command, Stdio};

/// Tallies of one test run.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    /// VM tests that need the debug kernel, on the test kernel.
    skipped: u64,
    failures: Vec<String>,
}

/// Runs everything: the host tests once, then the VM suite on each kernel of `kernels` (side
/// by side when there are several, one QEMU each); returns the process exit code.
pub fn test(paths: &Paths, filter: Option<&str>, kernels: &[Flavor]) -> Result<i32> {
    let mut t = Tally::default();
    // The host tests build the whole workspace, `dmremap` included, which needs host packages.
    crate::setup::host_packages()?;
    host_tests(paths, filter, &mut t)?;
    // Kernels and modules one after another (each build uses every core), then the suites
    // side by side: a TCG guest keeps about one core busy.
    let mut ready = Vec::new();
    for &k in kernels {
        match crate::prepare(paths, k) {
            Ok(p) => ready.push((k, p)),
            Err(e) => {
                t.failed += 1;
                t.failures.push(format!("vm [{}]: {e:#}", k.kernel_name()));
            }
        }
    }
    let runner = build_vmtest(paths)?;
    let several = kernels.len() > 1;
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let handles: Vec<_> = ready
            .iter()
            .enumerate()
            .map(|(i, (k, (kernel, module)))| {
                let suite = Suite {
                    flavor: *k,
                    kernel: kernel.clone(),
                    module: module.clone(),
                    runner: runner.clone(),
                    label: several.then(|| k.kernel_name().to_string()),
                    // The first kernel runs everything in full (`vmtest --second-kernel`).
                    second: i > 0,
                };
                s.spawn(move || {
                    let mut t = Tally::default();
                    vm_tests(paths, filter, &suite, &mut t);
                    if suite.flavor == Flavor::Debian72 {
                        // Debian's kernel's own tests, in its thread (beside the other
                        // kernel's longer suite): the packages, then the systemd boot.
                        package_tests(paths, filter, &mut t);
                        if filter.is_none_or(|f| BOOT_TEST.contains(f)) {
                            if let Err(e) = boot_test(paths, &suite, &mut t) {
                                t.failed += 1;
                                t.failures.push(format!("{BOOT_TEST}: {e:#}"));
                            }
                        }
                    }
                    t
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Tally::panicked())).collect()
    });
    for (kt, (k, _)) in tallies.into_iter().zip(&ready) {
        if several {
            println!("{}: {} passed, {} failed, {} skipped", k.kernel_name(), kt.passed, kt.failed, kt.skipped);
        }
        t.passed += kt.passed;
        t.failed += kt.failed;
        t.skipped += kt.skipped;
        t.failures.extend(kt.failures);
    }
    if !t.failures.is_empty() {
        println!("\nfailures:");
        for f in &t.failures {
            println!("    {f}");
        }
    }
    if t.skipped > 0 {
        println!(
            "{} skipped (their SKIP lines say why: tests that need the debug kernel, or wall-clock properties \
             measured on the first kernel only)",
            t.skipped
        );
    }
    let names: Vec<&str> = kernels.iter().map(|k| k.kernel_name()).collect();
    println!("{} passed, {} failed (VM suite on {})", t.passed, t.failed, names.join(" and "));
    Ok(if t.failed == 0 { 0 } else { 1 })
}

/// One kernel's VM suite: what to boot, and how.
struct Suite {
    flavor: Flavor,
    kernel: crate::kernel::Boot,
    module: PathBuf,
    runner: Vec<(String, PathBuf)>,
    /// Set when suites run side by side (files and console lines apart).
    label: Option<String>,
    /// Not the first kernel: `vmtest --second-kernel` (no wall-clock tests, generated
    /// inputs scaled down; tests/src/main.rs says why).
    second: bool,
}

impl Suite {
    /// A boot of this suite's kernel and module.
    fn boot(&self, extra: Vec<(String, PathBuf)>, cmd: String, timeout: u64) -> vm::VmOptions {
        vm::VmOptions::new(self.kernel.clone(), self.module.clone(), extra, Some(cmd), timeout).label(self.label.clone())
    }

    /// Where this suite's disks go.
    fn dir(&self, paths: &Paths) -> Result<PathBuf> {
        let d = vm::VmOptions::new(self.kernel.clone(), PathBuf::new(), Vec::new(), None, 0).label(self.label.clone()).dir(paths);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }
}

impl Tally {
    fn panicked() -> Self {
        Tally { failed: 1, failures: vec!["vm: the suite's thread panicked".into()], ..Tally::default() }
    }
}

/// `cargo test --workspace`, echoing its output and summing its `test result:` lines.
fn host_tests(paths: &Paths, filter: Option<&str>, t: &mut Tally) -> Result<()> {
    step("host tests: cargo test --workspace");
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(&paths.repo).args(["test", "--workspace", "--color", "never"]);
    if let Some(f) = filter {
        c.args(["--", f]);
    }
    let mut child = c.stdout(Stdio::piped()).spawn().context("cannot run cargo test")?;
    let out = child.stdout.take().context("no cargo stdout")?;
    for line in BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(name) = line.strip_prefix("test ").and_then(|l| l.strip_suffix(" ... FAILED")) {
            t.failures.push(format!("host: {name}"));
        }
        if let Some(rest) = line.strip_prefix("test result: ") {
            t.passed += count(rest, " passed");
            t.failed += count(rest, " failed");
        }
    }
    let status = child.wait()?;
    if !status.success() && t.failures.is_empty() {
        // A build failure: no test ran, so count the whole host suite as one failure.
        t.failed += 1;
        t.failures.push("host: cargo test failed before running tests".into());
    }
    Ok(())
}

/// The packaging test (xtask/src/package.rs, on Debian's stock kernel whatever `--kernel`
/// says): runs when no filter is given or the filter is part of one of its check names.
fn package_tests(paths: &Paths, filter: Option<&str>, t: &mut Tally) {
    if let Some(f) = filter {
        if !crate::package::CHECKS.iter().any(|c| c.contains(f)) {
            return;
        }
    }
    step("packaging test: lintian, dkms build/install/refusal, packaged and DKMS modules on Debian's kernel");
    let start = std::time::Instant::now();
    match crate::package::test(paths) {
        Ok(checks) => {
            for c in checks {
                match c.failure {
                    None => {
                        println!("package test {} ... ok", c.name);
                        t.passed += 1;
                    }
                    Some(why) => {
                        println!("package test {} ... FAILED: {why}", c.name);
                        t.failed += 1;
                        t.failures.push(format!("package: {}: {why}", c.name));
                    }
                }
            }
        }
        Err(e) => {
            t.failed += 1;
            t.failures.push(format!("package: {e:#}"));
        }
    }
    step(format!("packaging test took {:.0} s", start.elapsed().as_secs_f64()));
}

/// `"ok. 5 passed; 0 failed; ..."` -> the number before `what`.
fn count(s: &str, what: &str) -> u64 {
    s.split(';')
        .find_map(|part| part.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ").strip_suffix(what))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Builds the guest test runner and the operator tool for the host's target (the build
/// root's libc is newer, so they run in the guest); returns them as initramfs entries.
pub fn build_vmtest(paths: &Paths) -> Result<Vec<(String, PathBuf)>> {
    step("building the VM test runner and dmremap");
    crate::setup::host_packages()?;
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&paths.repo)
        .args(["build", "--release", "--quiet", "-p", "dm-remap-vmtests", "-p", "dmremap"])
        .status()?;
    anyhow::ensure!(status.success(), "building the VM test runner failed");
    Ok(vec![
        ("usr/bin/vmtest".into(), paths.target().join("release/vmtest")),
        ("usr/bin/dmremap".into(), paths.target().join("release/dmremap")),
    ])
}

fn vm_tests(paths: &Paths, filter: Option<&str>, suite: &Suite, t: &mut Tally) {
    let before = t.failures.len();
    if let Err(e) = vm_tests_inner(paths, filter, suite, t) {
        t.failed += 1;
        t.failures.push(format!("vm: {e:#}"));
    }
    // Each VM failure names the kernel it happened on.
    for f in &mut t.failures[before..] {
        if let Some(rest) = f.strip_prefix("vm: ") {
            *f = format!("vm [{}]: {rest}", suite.flavor.kernel_name());
        }
    }
}

fn vm_tests_inner(paths: &Paths, filter: Option<&str>, suite: &Suite, t: &mut Tally) -> Result<()> {
    // A disk that outlives the first boot, for the tests that check persistence across a
    // reboot: the second boot runs their second halves.
    let disk = suite.dir(paths)?.join("persist.img");
    let f = std::fs::File::create(&disk)?;
    f.set_len(64 << 20)?;
    drop(f);
    let faults = fault_disks(&suite.dir(paths)?)?;
    for phase in [None, Some("--after-reboot")] {
        let mut cmd = vec!["vmtest".to_string()];
        cmd.extend(phase.map(str::to_string));
        if suite.second {
            cmd.push("--second-kernel".into());
        }
        if let Some(f) = filter {
            cmd.extend(["--filter".to_string(), f.to_string()]);
        }
        // The sanitizer kernel runs the suite about ten times slower.
        let timeout = if suite.flavor == Flavor::Debug { 7200 } else { 1800 };
        let opts = suite.boot(suite.runner.clone(), vm::shell_join(&cmd), timeout).disk(Some(disk.clone())).qemu_args(&faults);
        count_vm_results(&vm::run(paths, &opts)?, t);
    }
    if filter.map_or(true, |f| "powercut".contains(f) || f.contains("powercut")) {
        powercut(paths, suite, t)?;
    }
    Ok(())
}

/// QEMU's own error injection (its `blkdebug` driver) under two real guest drivers: a
/// virtio-blk disk and an emulated NVMe disk, each over a fresh 64 MiB image with the rules
/// of [`BLKDEBUG_RULES`]. The guest finds them by serial (tests/src/t_realfaults.rs). Fresh
/// for each boot: a one-shot rule fires once per boot.
fn fault_disks(dir: &std::path::Path) -> Result<Vec<String>> {
    let conf = dir.join("blkdebug.conf");
    std::fs::write(&conf, BLKDEBUG_RULES)?;
    let mut args = Vec::new();
    // High PCI slots: the guest finds them after the persistent disk, which stays /dev/vda.
    for (id, device, slot) in [("dmrfv", "virtio-blk-pci", "0x1e"), ("dmrfn", "nvme", "0x1f")] {
        let img = dir.join(format!("{id}.img"));
        let f = std::fs::File::create(&img)?;
        f.set_len(64 << 20)?;
        drop(f);
        args.push("-drive".into());
        args.push(format!("if=none,id={id},format=raw,cache=writeback,file=blkdebug:{}:{}", conf.display(), img.display()));
        args.push("-device".into());
        args.push(format!("{device},drive={id},serial={id},addr={slot}"));
    }
    Ok(args)
}

/// The blkdebug rules of both fault disks, in 512-byte sectors; with 4 KiB blocks: block 100
/// never reads, block 200 never takes a write, block 300 fails its first read and block 400
/// its first write (`once`), then both work. EIO (5) is what a host disk returns for a bad
/// sector. tests/src/t_realfaults.rs has the same numbers.
const BLKDEBUG_RULES: &str = "\
[inject-error]
event = \"read_aio\"
errno = \"5\"
sector = \"800\"

[inject-error]
event = \"write_aio\"
errno = \"5\"
sector = \"1600\"

[inject-error]
event = \"read_aio\"
errno = \"5\"
sector = \"2400\"
once = \"on\"

[inject-error]
event = \"write_aio\"
errno = \"5\"
sector = \"3200\"
once = \"on\"
";

/// The systemd boot test's name for `--filter`.
const BOOT_TEST: &str = "boot_systemd";

/// The systemd boot test (xtask/src/boottest.rs), always on Debian's stock kernel: its
/// guest prints PASS/FAIL lines; the shutdown after each check boot is judged here.
fn boot_test(paths: &Paths, suite: &Suite, t: &mut Tally) -> Result<()> {
    step("boot test: Debian trixie with systemd, udev and lvm2 on Debian's kernel");
    for phase in crate::boottest::run(paths, &suite.kernel, &suite.module)? {
        let before = t.failures.len();
        count_vm_results(&phase.result, t);
        // The root boots' shutdown goes through the shutdown ramfs; `nospare`'s root is a
        // read-only dm-linear map with nothing to commit, which systemd leaves mounted
        // read-only (docs/boot.md), so it is not judged.
        let judged = match phase.name {
            "setup" | "nospare" => None,
            "root1" | "root2" => Some(crate::rootboot::shutdown_problem(&phase.result.console, false)),
            "lvroot1" | "lvroot2" => Some(crate::rootboot::shutdown_problem(&phase.result.console, true)),
            _ => Some(crate::boottest::shutdown_problem(&phase.result.console)),
        };
        if let Some(problem) = judged {
            match problem {
                None => {
                    println!("{}boot_shutdown_{}", crate::protocol::PASS, phase.name);
                    t.passed += 1;
                }
                Some(why) => {
                    t.failed += 1;
                    t.failures.push(format!("vm: boot_shutdown_{}: {why}", phase.name));
                }
            }
        }
        for f in &mut t.failures[before..] {
            *f = format!("{BOOT_TEST} [{}] {f}", phase.name);
        }
    }
    Ok(())
}

/// Storms killed mid-way: how many times the plug is pulled, and when (ms after the storm
/// starts).
const POWERCUT_KILLS: [u64; 3] = [2500, 4000, 1800];

/// The power-cut test: boots that write until QEMU is killed, each followed by a boot that
/// checks every write acknowledged before the kill (see tests/src/t_powercut.rs).
fn powercut(paths: &Paths, suite: &Suite, t: &mut Tally) -> Result<()> {
    step("power-cut test: storms killed mid-way, each checked after a reboot");
    let dir = suite.dir(paths)?;
    let disk = dir.join("powercut.img");
    let f = std::fs::File::create(&disk)?;
    f.set_len(64 << 20)?;
    drop(f);
    let acks_file = dir.join("powercut-acks.txt");
    let mut acks: BTreeMap<u64, u64> = BTreeMap::new();
    // The scrub checkpoint's power cut rides on cycles 0 (killed) and 1 (checked). It waits
    // for the kernel's 30 s checkpoint period: a wall-clock property, first kernel only.
    // Side by side, each line names its kernel.
    let tag = suite.label.as_ref().map(|l| format!("[{l}] ")).unwrap_or_default();
    let scrub = !suite.second;
    if !scrub {
        println!("{tag}{}{}: a wall-clock property, measured on one kernel only", crate::protocol::SKIP, SCRUB_TEST);
        t.skipped += 1;
    }
    let scrub_file = dir.join("powercut-scrub.txt");
    // Set once cycle 0 printed its positions: without them cycle 1 has nothing to check.
    let mut scrub_logged = false;
    // The second kernel kills one storm, not three: what differs between kernels is the
    // device-mapper glue a single cut and reload exercise; the first kernel runs all three.
    let kills: &[u64] = if suite.second { &POWERCUT_KILLS[..1] } else { &POWERCUT_KILLS[..] };
    for cycle in 0..=kills.len() {
        let text: String = acks.iter().map(|(b, g)| format!("{b} {g}\n")).collect();
        std::fs::write(&acks_file, text)?;
        let mut extra = suite.runner.clone();
        extra.push(("powercut-acks.txt".into(), acks_file.clone()));
        let scrub_here = scrub && (cycle == 0 || cycle == 1 && scrub_logged);
        if scrub_here && cycle == 1 {
            extra.push(("powercut-scrub.txt".into(), scrub_file.clone()));
        }
        // The sanitizer kernel writes about ten times slower: cut later, so that the storm
        // has acknowledged a comparable number of writes.
        let scale = if suite.flavor == Flavor::Debug { 8 } else { 1 };
        let kill = kills.get(cycle).map(|ms| ms * scale);
        let mode = if kill.is_some() { "storm" } else { "final" };
        let started = std::time::Instant::now();
        let opts = suite
            .boot(extra, format!("vmtest powercut {cycle} {mode}{}", if scrub_here { " scrub" } else { "" }), 600)
            .disk(Some(disk.clone()))
            .kill_on(kill.map(|ms| (POWERCUT_RUNNING.to_string(), Duration::from_millis(ms))));
        let res = vm::run(paths, &opts)?;
        count_vm_results_of(&res, t, kill.is_some());
        if kill.is_some() {
            let seen = collect_acks(&res.console, &mut acks);
            println!("{tag}power-cut: cycle {cycle}: QEMU killed {} ms into the storm; {seen} acknowledged writes seen", kill.unwrap_or(0));
            if res.console.contains("powercut: write of block") {
                t.failed += 1;
                t.failures.push(format!("vm: powercut cycle {cycle}: a write failed during the storm"));
            }
            if seen == 0 {
                t.failed += 1;
                t.failures.push(format!("vm: powercut cycle {cycle}: no write was acknowledged before the kill"));
            }
        }
        println!("{tag}power-cut: cycle {cycle}: boot took {:.1} s", started.elapsed().as_secs_f64());
        if scrub_here && cycle == 0 {
            let failed_in_guest = res.console.lines().any(|l| l.starts_with(&format!("{}{SCRUB_TEST}", crate::protocol::FAIL)));
            match scrub_positions(&res.console) {
                Some((ckpt, live)) => {
                    println!("{tag}power-cut: cycle 0: scrub checkpoint at block {ckpt}, last position printed before the kill {live}");
                    std::fs::write(&scrub_file, format!("{ckpt} {live}\n"))?;
                    scrub_logged = true;
                }
                // A FAIL line from the guest is counted already.
                None if failed_in_guest => {}
                None => {
                    t.failed += 1;
                    t.failures.push(format!("vm: {SCRUB_TEST}: no SCRUBCKPT and SCRUBPOS lines before the kill"));
                }
            }
        }
    }
    Ok(())
}

/// The power-cut scrub checkpoint test's name (`t_scrub::POWERCUT_TEST`).
const SCRUB_TEST: &str = "powercut_scrub_checkpoint_resumed";

/// From a console cut off by the kill: the checkpointed position (`SCRUBCKPT <pos> <seq> .`)
/// and the highest live position printed after it (`SCRUBPOS <pos> .`), complete lines only.
fn scrub_positions(console: &str) -> Option<(u64, u64)> {
    let (mut ckpt, mut live) = (None, None::<u64>);
    for line in console.lines() {
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            [m, p, _seq, "."] if m == crate::protocol::SCRUB_CKPT => ckpt = p.parse().ok(),
            [m, p, "."] if m == crate::protocol::SCRUB_POS && ckpt.is_some() => {
                if let Ok(p) = p.parse::<u64>() {
                    live = Some(live.map_or(p, |l| l.max(p)));
                }
            }
            _ => {}
        }
    }
    Some((ckpt?, live?))
}

/// What the guest prints when its storm starts (`t_powercut::RUNNING`).
const POWERCUT_RUNNING: &str = crate::protocol::POWERCUT_RUNNING;

/// Adds the complete `ACK <block> <gen> .` lines of a console to `acks` (latest generation
/// per block); returns how many there were. A line cut off by the kill is not complete.
fn collect_acks(console: &str, acks: &mut BTreeMap<u64, u64>) -> u64 {
    let mut n = 0;
    for line in console.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if let [ack, b, g, "."] = w[..] {
            if ack != crate::protocol::ACK {
                continue;
            }
            if let (Ok(b), Ok(g)) = (b.parse::<u64>(), g.parse::<u64>()) {
                let e = acks.entry(b).or_insert(g);
                *e = (*e).max(g);
                n += 1;
            }
        }
    }
    n
}

/// Like `count_vm_results`, for a boot that was meant to be killed (`killed`): then being
/// killed is its success, and exiting by itself is a failure.
fn count_vm_results_of(res: &vm::VmResult, t: &mut Tally, killed: bool) {
    if !killed {
        return count_vm_results(res, t);
    }
    let before = t.failed;
    count_vm_results(&vm::VmResult { status: 0, console: res.console.clone() }, t);
    if res.status != vm::KILLED && t.failed == before {
        t.failed += 1;
        t.failures.push(format!("vm: a power-cut storm ended by itself (status {})", res.status));
    }
}

fn count_vm_results(res: &vm::VmResult, t: &mut Tally) {
    let (mut passed, mut failed) = (0, 0);
    for line in res.console.lines() {
        if line.starts_with(crate::protocol::PASS) {
            passed += 1;
        } else if line.starts_with(crate::protocol::SKIP) {
            t.skipped += 1;
        } else if let Some(rest) = line.strip_prefix(crate::protocol::FAIL) {
            failed += 1;
            t.failures.push(format!("vm: {rest}"));
        }
    }
    t.passed += passed;
    t.failed += failed;
    if res.status != 0 && failed == 0 {
        t.failed += 1;
        t.failures.push(format!("vm: the test runner exited with status {} without a failing test", res.status));
    }
}

#[cfg(test)]
mod tests {
    use super::{collect_acks, count, scrub_positions};
    use std::collections::BTreeMap;

    /// tests/vm/init is a shell script and cannot use protocol.rs: it must print the same
    /// exit marker.
    #[test]
    fn init_prints_the_exit_marker() {
        let init = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vm/init")).unwrap();
        assert!(init.contains(&format!("echo \"{}$rc@@\"", crate::protocol::EXIT)), "tests/vm/init does not print {:?}", crate::protocol::EXIT);
        let first = init.lines().find(|l| l.starts_with("echo ") || l.starts_with("mount ")).unwrap_or("");
        assert_eq!(first, format!("echo \"{}\"", crate::protocol::INIT), "tests/vm/init's first command must print the INIT marker");
    }

    #[test]
    fn collects_only_complete_ack_lines() {
        let mut acks = BTreeMap::new();
        let console = "ACK 5 7 .\nACK 5 9 .\nnoise ACK 1 1 .\nACK 6 3 .\nACK 7 12";
        assert_eq!(collect_acks(console, &mut acks), 3);
        assert_eq!(acks.into_iter().collect::<Vec<_>>(), vec![(5, 9), (6, 3)]);
    }

    #[test]
    fn scrub_positions_after_the_checkpoint_and_complete_only() {
        let console = "SCRUBPOS 10 .\nSCRUBCKPT 4000 2 .\nSCRUBPOS 4100 .\nACK 1 1 .\nSCRUBPOS 4300 .\nSCRUBPOS 4400";
        assert_eq!(scrub_positions(console), Some((4000, 4300)));
        assert_eq!(scrub_positions("SCRUBCKPT 4000 2 .\n"), None);
        assert_eq!(scrub_positions("SCRUBCKPT 4000 2\nSCRUBPOS 4100 ."), None);
    }

    #[test]
    fn counts_cargo_summary() {
        let s = "ok. 5 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(count(s, " passed"), 5);
        assert_eq!(count(s, " failed"), 1);
        assert_eq!(count("FAILED. 2 passed; 3 failed; 0 ignored", " failed"), 3);
    }
}
