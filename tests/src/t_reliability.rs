//! Reliability: generated bad input, faults injected under load, life cycle under load.

use crate::harness::*;
use anyhow::{bail, ensure, Context, Result};
use std::process::{Child, Command, Stdio};

pub const TESTS: &[crate::Test] = &[
    ("reliability_generated_table_lines", generated_table_lines),
    ("reliability_generated_messages", generated_messages),
    ("reliability_fio_verify_with_errors_injected_under_load", verify_under_injection),
    ("reliability_lifecycle_under_load", lifecycle_under_load),
];

const MIB: u64 = 1 << 20;

/// How many lines or messages to generate: 1000, or 200 on the debug kernel, where each
/// takes ten times as long (the sanitizers need the paths, not the count), or 100 on the
/// second kernel of `cargo xtask test` (`crate::second_kernel`).
fn generated() -> usize {
    if crate::second_kernel() {
        100
    } else if std::path::Path::new("/sys/kernel/debug/kmemleak").exists() {
        200
    } else {
        1000
    }
}

/// 1000 table lines (see `generated`) from a seeded grammar of good and bad words: each is refused or works
/// (and is removed); nothing oopses (the runner checks the kernel log), nothing is left.
fn generated_table_lines() -> Result<()> {
    let main = LoopDev::new("gt-main", 16 * MIB)?;
    let spare = LoopDev::new("gt-spare", 4 * MIB)?;
    let n = (16 * MIB / 512).to_string();
    let (m, s) = (main.path.clone(), spare.path.clone());
    let devs = [m.as_str(), s.as_str(), "/dev/null", "/dev/nonexistent", "7:0", "0:0", "", "-", "/dev/mapper/control"];
    let words = [
        "format", "block_size", "read_retries", "cache_size", "no_proactive", "0", "1", "2", "3", "5", "8", "512",
        "4096", "65536", "131072", "4294967296", "18446744073709551616", "-1", "x", "%s%n", "\u{e9}", "format format",
    ];
    // Feature values, valid and not.
    let bs = ["512", "4096", "8192", "65536", "1000", "131072", "0"];
    let rr = ["0", "2", "16", "17", "-1"];
    let cs = ["0", "2", "256", "65536", "3", "131072"];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut ok, mut refused) = (0, 0);
    for i in 0..generated() {
        let len = match rng.next() % 4 {
            0 => n.clone(),
            1 => "8".into(),
            2 => (rng.next() % 100_000).to_string(),
            _ => (16 * MIB / 512 * 2).to_string(),
        };
        let mut line = format!("0 {len} remap");
        // Mostly the right devices in the right order, so the features get parsed too.
        if rng.below(4) > 0 {
            line.push_str(&format!(" {m} {s}"));
        } else {
            for _ in 0..rng.below(3) {
                line.push(' ');
                line.push_str(rng.pick(&devs));
            }
        }
        // Features: half the time a well-formed list (count matching), else random words.
        if rng.below(2) == 0 {
            let mut f: Vec<String> = Vec::new();
            if rng.below(2) == 0 {
                f.push("format".into());
            }
            for (k, vals) in [("block_size", &bs[..]), ("read_retries", &rr[..]), ("cache_size", &cs[..])] {
                if rng.below(3) == 0 {
                    f.extend([k.to_string(), rng.pick(vals).to_string()]);
                }
            }
            if rng.below(4) == 0 {
                f.push("no_proactive".into());
            }
            if !f.is_empty() {
                line.push_str(&format!(" {} {}", f.len(), f.join(" ")));
            }
        } else {
            for _ in 0..rng.below(6) {
                line.push(' ');
                line.push_str(rng.pick(&words));
            }
        }
        let out = Command::new("dmsetup").args(["create", "t-gen", "--table", &line]).output()?;
        if out.status.success() {
            ok += 1;
            dmsetup(&["remove", "--retry", "t-gen"]).with_context(|| format!("line {i}: {line:?}"))?;
        } else {
            refused += 1;
            ensure!(!dm_exists("t-gen"), "line {i} {line:?} was refused but left a device");
        }
    }
    println!("    generated table lines: {ok} accepted, {refused} refused");
    ensure!(refused > 0 && ok > 0, "the generator should make both good and bad lines");
    Ok(())
}

/// 1000 generated messages (see `generated`) to a live device: every one answered or refused, refusals change
/// nothing, and the device keeps its data.
fn generated_messages() -> Result<()> {
    let main = LoopDev::new("gm-main", 16 * MIB)?;
    let spare = LoopDev::new("gm-spare", 4 * MIB)?;
    let dm = DmDev::create("t-gm", &remap_table(16 * MIB / 512, LineSpec::new(&main.path, &spare.path).format()))?;
    let data = pattern(77, 4096);
    write_at(&dm.path, 40960, &data)?;
    let cmds = [
        "help", "maintenance", "alert_threshold", "scan", "scan_interval", "scan_rate", "scrub_speed", "scan_status", "remap", "query", "list_remaps",
        "hotspots", "clear_stats", "sync", "frobnicate", "", "HELP",
    ];
    let args = ["on", "off", "start", "stop", "0", "1", "100", "101", "65", "4096", "32767", "32768", "-1", "x", "99999999999999999999"];
    let mut rng = Rng(0xfeed_beef_0000_0007);
    let (mut answered, mut refused) = (0, 0);
    for i in 0..generated() {
        let mut words = vec![rng.pick(&cmds).to_string()];
        for _ in 0..(rng.next() % 4) {
            words.push(rng.pick(&args).to_string());
        }
        // Manual remaps change mappings by design; the rest of this test wants none.
        if words[0] == "remap" || (words[0] == "maintenance" && words.get(1).map(String::as_str) == Some("on")) {
            continue;
        }
        let before = steady(status_fields(&dm.name)?);
        let mut a = vec!["message".to_string(), dm.name.clone(), "0".into()];
        a.extend(words.iter().cloned());
        let out = Command::new("dmsetup").args(&a).output()?;
        if out.status.success() {
            answered += 1;
        } else {
            refused += 1;
            let now = steady(status_fields(&dm.name)?);
            ensure!(now == before, "message {i} {words:?} was refused but changed the status: {before:?} -> {now:?}");
        }
    }
    println!("    generated messages: {answered} answered, {refused} refused");
    expect_eq("data after the message storm", read_at(&dm.path, 40960, 4096)?, data)?;
    Ok(())
}

/// Status fields that do not move by themselves (leaves out counters a message may reset and
/// the time-dependent ones).
fn steady(f: Vec<String>) -> Vec<String> {
    // 18: scan passes (field 19): at the default 32 MiB/s the scrub finishes a pass of this
    // 16 MiB device in about half a second, whatever the message did.
    f.into_iter().enumerate().filter(|(i, _)| ![3, 4, 5, 6, 11, 12, 13, 15, 16, 17, 18, 20, 22, 24].contains(i)).map(|(_, v)| v).collect()
}

/// fio with crc32c verify in the background: for `secs` seconds, or (None) once over its size.
fn fio_bg(dev: &str, secs: Option<u32>, extra: &[&str]) -> Result<Child> {
    let mut args = vec![
        "--name=rel".to_string(),
        format!("--filename={dev}"),
        "--ioengine=io_uring".into(),
        "--direct=1".into(),
        "--bs=4k".into(),
        "--iodepth=8".into(),
        "--verify=crc32c".into(),
        "--verify_fatal=1".into(),
        "--output-format=terse".into(),
    ];
    if let Some(secs) = secs {
        args.extend(["--time_based".to_string(), format!("--runtime={secs}")]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Ok(Command::new("fio").args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?)
}

fn fio_wait(child: Child) -> Result<()> {
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("fio failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    // Terse v3: field 5 is the read error count, field 46 the write error count... any error
    // is fatal with verify_fatal and io errors fail fio, so the exit status is the verdict.
    Ok(())
}

/// fio writes the whole device once, sequentially, at most 600 IOPS, and verifies what it
/// wrote, over a main device whose odd blocks in the first half are bad from the start; 1.5 s
/// in (when fio is at most ~900 blocks in, however slow the machine), the odd blocks of the
/// second half turn bad under it (the table reloaded). No I/O error, no verify error, every
/// bad block relocated. (A block that turns bad after fio wrote it would rightly fail fio's
/// read: the disk lost that data, so the injection stays ahead of the writer.)
fn verify_under_injection() -> Result<()> {
    let bad1: Vec<(u64, u64)> = (0..2048).map(|i| (i * 2 + 1, 1)).collect();
    let lo = LoopDev::new("vi", 16 * MIB)?;
    let sectors = 16 * MIB / 512;
    let main = bad_device("t-vi-main", &lo.path, sectors, &bad1[..1024])?;
    let spare = LoopDev::new("vi-spare", 16 * MIB)?;
    let dm = DmDev::create("t-vi", &remap_table(sectors, LineSpec::new(&main.path, &spare.path).format()))?;
    let fio = fio_bg(&dm.path, None, &["--rw=write", "--verify_backlog=64", "--size=16M", "--rate_iops=600"])?;
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // More blocks go bad under the running I/O.
    let table = crate::harness::bad_table(&lo.path, sectors, &bad1);
    dmsetup(&["reload", &main.name, "--table", &table])?;
    dmsetup(&["resume", &main.name])?;
    fio_wait(fio)?;
    let (remaps, errors, state) = status_of(&dm.name, |s| (s.remaps, s.media_errors, s.state.name()))?;
    println!("    verify under injection: {remaps} remaps, {errors} media errors, state {state}");
    expect_eq("remaps: every odd block", remaps, 2048)?;
    expect_eq("state", state, "operational")?;
    Ok(())
}

/// 100 cycles of suspend/resume, table reload and message traffic while fio writes and
/// verifies: no I/O error, no verify error, nothing left behind.
fn lifecycle_under_load() -> Result<()> {
    let bad = BadMain::new("lc", 16 * MIB, &[(100, 1), (700, 1), (1500, 1)])?;
    let spare = LoopDev::new("lc-spare", 4 * MIB)?;
    let table = remap_table(16 * MIB / 512, LineSpec::new(&bad.path(), &spare.path).format());
    let dm = DmDev::create("t-lc", &table)?;
    let fio = fio_bg(&dm.path, Some(10), &["--rw=randwrite", "--verify_backlog=128", "--size=8M"])?;
    for i in 0..100 {
        match i % 4 {
            0 => {
                dmsetup(&["suspend", &dm.name])?;
                dmsetup(&["resume", &dm.name])?;
            }
            1 => {
                dmsetup(&["reload", &dm.name, "--table", &table])?;
                dmsetup(&["resume", &dm.name])?;
            }
            2 => {
                dmsetup(&["message", &dm.name, "0", "query", &(i * 8).to_string()])?;
                dmsetup(&["message", &dm.name, "0", "list_remaps"])?;
                dmsetup(&["message", &dm.name, "0", "scan", if i % 8 == 2 { "start" } else { "stop" }])?;
            }
            _ => {
                dmsetup(&["message", &dm.name, "0", "clear_stats"])?;
                dmsetup(&["status", &dm.name])?;
            }
        }
    }
    fio_wait(fio)?;
    expect_eq("state after 100 cycles", status_of(&dm.name, |s| s.state.name())?, "operational")?;
    Ok(())
}
