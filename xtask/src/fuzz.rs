//! `cargo xtask fuzz`: libFuzzer (cargo-fuzz) on the parsers that take untrusted bytes: the
//! metadata decoder on raw bytes, the metadata loader on crafted CRC-valid fields
//! (structure-aware), the table-line parser, the message parser.

use crate::env::{step, Paths};
use anyhow::{bail, Context, Result};
use std::process::Command;

const TARGETS: &[&str] = &["metadata", "loader", "table_line", "message"];

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

pub fn fuzz(paths: &Paths, seconds: u64, only: Option<&str>) -> Result<i32> {
    if let Some(o) = only.filter(|o| !TARGETS.contains(o)) {
        bail!("no fuzz target {o:?}; the targets are {}", TARGETS.join(", "));
    }
    let have = Command::new(cargo()).args(["fuzz", "--version"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !have {
        step("installing cargo-fuzz (crates.io)");
        let st = Command::new(cargo()).args(["install", "cargo-fuzz", "--locked"]).status()?;
        if !st.success() {
            bail!("`cargo install cargo-fuzz` failed");
        }
    }
    let mut report = Vec::new();
    let mut failed = 0;
    for t in TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        let work = paths.target().join(format!("fuzz-corpus/{t}"));
        let arts = paths.target().join(format!("fuzz-artifacts/{t}"));
        std::fs::create_dir_all(&work)?;
        std::fs::create_dir_all(&arts)?;
        step(format!("fuzzing {t} for {seconds} s"));
        // cargo-fuzz needs unstable rustc flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
        let out = Command::new(cargo())
            .current_dir(&paths.repo)
            .env("RUSTC_BOOTSTRAP", "1")
            // No sanitizer: the fuzzed code is safe Rust (`forbid(unsafe_code)`), where ASan finds
            // nothing and costs 3x the executions; overflow checks and assertions stay on
            // (cargo-fuzz builds with debug assertions).
            .args(["fuzz", "run", "--sanitizer", "none", t])
            .arg(&work)
            .arg(paths.repo.join(format!("fuzz/corpus/{t}")))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", arts.display()))
            .output()
            .context("cannot run cargo fuzz")?;
        let err = String::from_utf8_lossy(&out.stderr);
        let runs = err
            .lines()
            .filter_map(|l| l.strip_prefix("Done ").and_then(|r| r.split_whitespace().next()))
            .last()
            .unwrap_or("?")
            .to_string();
        let crashed = !out.status.success();
        if crashed {
            failed += 1;
            eprintln!("{}", err.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        report.push(format!("{t}: {runs} executions in {seconds} s, {}", if crashed { "CRASH (artifacts in target/fuzz-artifacts)" } else { "0 crashes" }));
    }
    for r in &report {
        println!("fuzz {r}");
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
