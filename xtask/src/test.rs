//! `cargo xtask test`: the host tests of the workspace, then the VM integration tests, and
//! one closing line `N passed, M failed` over both.

use crate::env::{step, Paths};
use crate::kernel::Flavor;
use crate::vm;
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Tallies of one test run.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    failures: Vec<String>,
}

/// Runs everything; returns the process exit code.
pub fn test(paths: &Paths, filter: Option<&str>, flavor: Flavor) -> Result<i32> {
    let mut t = Tally::default();
    // The host tests build the whole workspace, `dmremap` included, which needs host packages.
    crate::setup::host_packages()?;
    host_tests(paths, filter, &mut t)?;
    vm_tests(paths, filter, flavor, &mut t);
    if !t.failures.is_empty() {
        println!("\nfailures:");
        for f in &t.failures {
            println!("    {f}");
        }
    }
    println!("{} passed, {} failed", t.passed, t.failed);
    Ok(if t.failed == 0 { 0 } else { 1 })
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

fn vm_tests(paths: &Paths, filter: Option<&str>, flavor: Flavor, t: &mut Tally) {
    if let Err(e) = vm_tests_inner(paths, filter, flavor, t) {
        t.failed += 1;
        t.failures.push(format!("vm: {e:#}"));
    }
}

fn vm_tests_inner(paths: &Paths, filter: Option<&str>, flavor: Flavor, t: &mut Tally) -> Result<()> {
    let (kernel, module) = crate::prepare(paths, flavor)?;
    let runner = build_vmtest(paths)?;
    // A disk that outlives the first boot, for the tests that check persistence across a
    // reboot: the second boot runs their second halves.
    let disk = paths.target().join("vm/persist.img");
    std::fs::create_dir_all(paths.target().join("vm"))?;
    let f = std::fs::File::create(&disk)?;
    f.set_len(64 << 20)?;
    drop(f);
    for phase in [None, Some("--after-reboot")] {
        let mut cmd = vec!["vmtest".to_string()];
        cmd.extend(phase.map(str::to_string));
        if let Some(f) = filter {
            cmd.extend(["--filter".to_string(), f.to_string()]);
        }
        let opts = vm::VmOptions {
            kernel: kernel.clone(),
            module: module.clone(),
            extra: runner.clone(),
            cmd: Some(vm::shell_join(&cmd)),
            timeout: 1800,
            icount: false,
            append: String::new(),
            disk: Some(disk.clone()),
        };
        count_vm_results(&vm::run(paths, &opts)?, t);
    }
    Ok(())
}

fn count_vm_results(res: &vm::VmResult, t: &mut Tally) {
    let (mut passed, mut failed) = (0, 0);
    for line in res.console.lines() {
        if line.starts_with("--- PASS ") {
            passed += 1;
        } else if let Some(rest) = line.strip_prefix("--- FAIL ") {
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
    use super::count;

    #[test]
    fn counts_cargo_summary() {
        let s = "ok. 5 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(count(s, " passed"), 5);
        assert_eq!(count(s, " failed"), 1);
        assert_eq!(count("FAILED. 2 passed; 3 failed; 0 ignored", " failed"), 3);
    }
}
