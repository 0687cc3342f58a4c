//! The power-cut test's guest side (`vmtest powercut CYCLE storm|final`), driven by
//! `cargo xtask test`, which kills QEMU in the middle of each storm and boots again.
//!
//! The disk (/dev/vda, kept across boots) holds the main device (first 16 MiB, every 4th
//! 4 KiB block of it failing every I/O through a dm-error table) and the spare (next 8 MiB).
//! A storm writes blocks over and over from 8 threads, each write fsynced, and prints
//! `ACK <block> <generation> .` once it is acknowledged. The host collects the complete ACK
//! lines it saw before the kill into /powercut-acks.txt for the next boot, which checks that
//! every acknowledged write is there (its generation, or a later one that was in flight),
//! that every acknowledged relocation survived, and that the kernel logged no bug.

use crate::harness::*;
use anyhow::{ensure, Context, Result};
use std::collections::BTreeMap;

const BLOCK: u64 = 4096;
const MAIN_SECTORS: u64 = 16 << 11;
const SPARE_SECTORS: u64 = 8 << 11;
/// Blocks written by cycle `c`: its own quarter of the main device, plus the bad blocks of
/// earlier cycles (rewrites of relocated blocks).
const PER_CYCLE: u64 = 1024;
const THREADS: u64 = 8;
/// The text the host waits for before it starts the clock on the kill.
pub const RUNNING: &str = crate::protocol::POWERCUT_RUNNING;

fn is_bad(b: u64) -> bool {
    b % 4 == 1
}

fn data(block: u64, gen: u64) -> Vec<u8> {
    pattern(gen << 20 | block, BLOCK as usize)
}

/// The devices, as every boot sets them up (`format` only on the first).
fn setup(format: bool) -> Result<(DmDev, DmDev, DmDev)> {
    let bad: Vec<(u64, u64)> = (0..MAIN_SECTORS / 8).filter(|&b| is_bad(b)).map(|b| (b, 1)).collect();
    let main = bad_device("pc-main", "/dev/vda", MAIN_SECTORS, &bad)?;
    let spare = DmDev::create("pc-spare", &format!("0 {SPARE_SECTORS} linear /dev/vda {MAIN_SECTORS}"))?;
    let f = if format { " 1 format" } else { "" };
    let dm = DmDev::create("pc", &format!("0 {MAIN_SECTORS} remap {} {}{f}", main.path, spare.path))?;
    Ok((dm, spare, main))
}

/// `vmtest powercut CYCLE storm|final [scrub]` (`scrub`: the scrub checkpoint's part too,
/// `t_scrub::powercut_before_kill` in cycle 0, `powercut_after_kill` in cycle 1).
pub fn run(args: &[String]) -> Result<()> {
    let (cycle, mode, scrub) = match args {
        [c, m] => (c, m, false),
        [c, m, s] if s == "scrub" => (c, m, true),
        _ => anyhow::bail!("usage: vmtest powercut CYCLE storm|final [scrub]"),
    };
    let cycle: u64 = cycle.parse()?;
    let mut kmsg = Kmsg::open()?;
    let devs = setup(cycle == 0)?;
    if cycle > 0 {
        let name = format!("powercut_after_kill_{cycle}");
        match check(&devs.0, cycle).and_then(|s| {
            let bugs: Vec<String> = kmsg.drain().into_iter().filter(|l| is_kernel_bug(l)).collect();
            ensure!(bugs.is_empty(), "kernel log gained:\n    {}", bugs.join("\n    "));
            Ok(s)
        }) {
            Ok(summary) => println!("--- PASS {name}: {summary}"),
            Err(e) => {
                println!("--- FAIL {name}: {e:#}");
                return Ok(());
            }
        }
    }
    let name = crate::t_scrub::POWERCUT_TEST;
    let mut _scrub = None;
    if scrub && cycle == 0 {
        // On failure the storm still runs: the host reports the missing SCRUBCKPT line.
        match crate::t_scrub::powercut_before_kill() {
            Ok(d) => _scrub = Some(d),
            Err(e) => println!("--- FAIL {name}: before the kill: {e:#}"),
        }
    }
    if scrub && cycle == 1 {
        kmsg.drain();
        match crate::t_scrub::powercut_after_kill().and_then(|s| {
            let bugs: Vec<String> = kmsg.drain().into_iter().filter(|l| is_kernel_bug(l)).collect();
            ensure!(bugs.is_empty(), "kernel log gained:\n    {}", bugs.join("\n    "));
            Ok(s)
        }) {
            Ok(summary) => println!("--- PASS {name}: {summary}"),
            Err(e) => println!("--- FAIL {name}: {e:#}"),
        }
    }
    if mode == "storm" {
        storm(&devs.0.path, cycle);
    }
    Ok(())
}

/// Writes until the plug is pulled.
fn storm(path: &str, cycle: u64) {
    let mut blocks: Vec<u64> = (0..cycle).flat_map(|c| (c * PER_CYCLE..(c + 1) * PER_CYCLE).filter(|&b| is_bad(b))).collect();
    blocks.extend(cycle * PER_CYCLE..(cycle + 1) * PER_CYCLE);
    // Shuffled, so relocations and rewrites of relocated blocks are in flight together.
    let mut rng = Rng(0x9c00 + cycle);
    for i in (1..blocks.len()).rev() {
        blocks.swap(i, rng.below(i + 1));
    }
    println!("{RUNNING}: cycle {cycle}, {} blocks", blocks.len());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let mine: Vec<u64> = blocks.iter().copied().skip(t as usize).step_by(THREADS as usize).collect();
            s.spawn(move || {
                for round in 1.. {
                    let gen = cycle * 1_000_000 + round;
                    for &b in &mine {
                        match write_at(path, b * BLOCK, &data(b, gen)) {
                            Ok(()) => println!("{} {b} {gen} .", crate::protocol::ACK),
                            Err(e) => println!("powercut: write of block {b} failed: {e}"),
                        }
                    }
                }
            });
        }
    });
}

/// The acknowledged writes the host saw: block -> latest generation.
fn acks() -> Result<BTreeMap<u64, u64>> {
    let text = std::fs::read_to_string("/powercut-acks.txt").context("no /powercut-acks.txt")?;
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        if let (Some(b), Some(g)) = (w.next(), w.next()) {
            m.insert(b.parse()?, g.parse()?);
        }
    }
    Ok(m)
}

fn check(dm: &DmDev, cycle: u64) -> Result<String> {
    let acks = acks()?;
    ensure!(!acks.is_empty(), "the host saw no acknowledged write before the kill");
    let last = cycle - 1; // the storm that was cut short
    let (mut exact, mut newer) = (0, 0);
    for (&b, &gen) in &acks {
        let got = read_at(&dm.path, b * BLOCK, BLOCK as usize).with_context(|| format!("read block {b}"))?;
        if got == data(b, gen) {
            exact += 1;
            continue;
        }
        // A write issued after the last ACK the host saw may have landed (its ACK lost to
        // the kill): a later round of the same storm, or an early round of a later storm.
        let later = (gen + 1..gen + 4).chain((gen / 1_000_000 + 1..=last).flat_map(|c| c * 1_000_000 + 1..c * 1_000_000 + 4));
        if !later.into_iter().any(|g| got == data(b, g)) {
            let found = (0..=last).flat_map(|c| c * 1_000_000 + 1..c * 1_000_000 + 6).find(|&g| got == data(b, g));
            anyhow::bail!("block {b}: acknowledged generation {gen} lost; the block holds {}", match found {
                Some(g) => format!("generation {g}"),
                None => "no generation written to it".into(),
            });
        }
        newer += 1;
    }
    let (remaps, state) = status_of(&dm.name, |s| (s.remaps, s.state.name()))?;
    let bad_acked = acks.keys().filter(|&&b| is_bad(b)).count() as u64;
    ensure!(remaps >= bad_acked, "{remaps} remaps, but {bad_acked} bad blocks had acknowledged writes");
    expect_eq("state", state, "operational")?;
    Ok(format!(
        "{} acknowledged blocks intact ({exact} as acknowledged, {newer} with a later write), {remaps} remaps (>= {bad_acked} acknowledged)",
        acks.len()
    ))
}
