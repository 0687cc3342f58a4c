//! The scrub at disk scale: a whole pass over a large device at the default speeds with its
//! progress in `scan_status`, the rate limiter (the ceiling while idle, the floor under a
//! foreground fio), the speeds as a message and as table feature arguments.

use crate::harness::*;
use anyhow::{ensure, Context, Result};
use dm_remap_logic::message::{ScanReply, ScrubState};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const TESTS: &[crate::Test] = &[
    ("scrub_pass_over_1gib_at_defaults_with_progress", pass_1gib),
    ("scrub_limiter_ceiling_idle_floor_under_fio", limiter),
    ("scrub_speed_message_and_table_line", speed_settings),
    ("scrub_checkpoint_resumes_after_remove_create_and_reload", checkpoint_resumes),
];

const MIB: u64 = 1 << 20;

pub(crate) fn scan_status(name: &str) -> Result<ScanReply> {
    let text = msg(name, &["scan_status"])?;
    ScanReply::parse(&text).with_context(|| format!("scan_status reply {text:?}"))
}

/// A null_blk main device of `mib` MiB that stores nothing (reads return zeroes at memory
/// speed, so the limiter, not the device, sets the pace), a 4 MiB loop spare, and a remap
/// target over them with `spec`'s options.
fn setup(tag: &str, mib: u64, spec: impl FnOnce(LineSpec<'_>) -> LineSpec<'_>) -> Result<(NullB, LoopDev, DmDev)> {
    let main = NullB::new(&format!("nb{tag}"), mib, false)?;
    let spare = LoopDev::new(&format!("{tag}-spare"), 4 * MIB)?;
    let dm = DmDev::create(&format!("t-{tag}"), &remap_table(mib * MIB / 512, spec(LineSpec::new(&main.path, &spare.path).format())))?;
    Ok((main, spare, dm))
}

/// Bytes the scrub read between two `scan_status` replies of the same pass.
fn read_between(a: &ScanReply, b: &ScanReply) -> u64 {
    (b.position - a.position) * 4096
}

/// One pass over 1 GiB at the default speeds (32 MiB/s idle: about 33 s, after the 10 s
/// rest that follows a resume). `scan_status` shows the position moving, the percent
/// matching it, a measured rate within the ceiling, an ETA, then the pass counted and the
/// scrub resting at 100%.
fn pass_1gib() -> Result<()> {
    let (_main, _spare, dm) = setup("sp", 1024, |s| s)?;
    let n = dm.name.as_str();
    let blocks = 1024 * MIB / 4096;
    let first = scan_status(n)?;
    expect_eq("scan_status before the first step", (first.state, first.position, first.blocks, first.passes), (ScrubState::On, 0, blocks, 0))?;
    expect_eq("default speeds", (first.speed_min, first.speed_max), (1, 32))?;
    let t0 = Instant::now();
    let mut seen = Vec::new();
    loop {
        let s = scan_status(n)?;
        if s.passes == 1 {
            expect_eq("after the pass", (s.state, s.position, s.permille, s.rate_kib, s.eta_secs), (ScrubState::Resting, blocks, 1000, 0, None))?;
            break;
        }
        ensure!(t0.elapsed() < Duration::from_secs(150), "no pass after 150 s: {s:?}");
        if s.position > 0 && s.position < blocks {
            expect_eq("percent in tenths", s.permille, s.position * 1000 / blocks)?;
            ensure!(s.state == ScrubState::On && !s.busy, "scrubbing an idle device: {s:?}");
            if s.rate_kib > 0 {
                ensure!(s.rate_kib <= 32 * 1024 * 11 / 10, "measured rate above the ceiling: {s:?}");
                let eta = s.eta_secs.context("no ETA while reading")?;
                expect_eq("ETA", eta, (blocks - s.position) * 4 / s.rate_kib)?;
            }
            seen.push((Instant::now(), s));
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let elapsed = t0.elapsed();
    ensure!(seen.len() >= 3, "progress seen only {} times during the pass", seen.len());
    ensure!(seen.windows(2).all(|w| w[1].1.position > w[0].1.position), "position did not move forward: {seen:?}");
    let (ta, a) = &seen[0];
    let (tb, b) = &seen[seen.len() - 1];
    let rate = read_between(a, b) as f64 / (*tb - *ta).as_secs_f64() / MIB as f64;
    println!("    1 GiB pass in {:.0} s (with the 10 s rest after resume), {rate:.1} MiB/s between polls", elapsed.as_secs_f64());
    ensure!(rate <= 32.0 * 1.1, "measured {rate:.1} MiB/s, ceiling 32");
    expect_eq("field 19 (passes)", status_of(n, |s| s.scan_passes)?, 1)?;
    Ok(())
}

/// The scrub's rate (MiB/s) over the next `secs` seconds, from two `scan_status` replies, and
/// the second reply.
fn rate_over(n: &str, secs: u64) -> Result<(f64, ScanReply)> {
    let (t0, a) = (Instant::now(), scan_status(n)?);
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, b) = (Instant::now(), scan_status(n)?);
    Ok((read_between(&a, &b) as f64 / (t1 - t0).as_secs_f64() / MIB as f64, b))
}

/// The limiter: idle, the rate measured from `scan_status` positions is at most the ceiling
/// + 10%; within 10 s of a foreground fio starting it is at most 1.5 x the floor, and
/// `busy=1`; once fio ends it climbs back.
fn limiter() -> Result<()> {
    let (_main, _spare, dm) = setup("sl", 2048, |s| s)?;
    let n = dm.name.as_str();
    wait_for(30, "the scrub to start", || Ok(scan_status(n)?.position > 0))?;
    std::thread::sleep(Duration::from_secs(1));
    let (idle, b) = rate_over(n, 8)?;
    println!("    idle: {idle:.1} MiB/s (ceiling 32)");
    ensure!(idle <= 32.0 * 1.1, "idle rate {idle:.1} MiB/s above the ceiling + 10%");
    ensure!(idle >= 8.0, "idle rate {idle:.1} MiB/s: the scrub hardly ran");
    ensure!(!b.busy, "busy on an idle device: {b:?}");

    let mut fio = Command::new("fio")
        .args([
            "--name=fg",
            &format!("--filename={}", dm.path),
            "--ioengine=psync",
            "--direct=1",
            "--rw=randread",
            "--bs=4k",
            "--time_based",
            "--runtime=16",
            "--output-format=terse",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    wait_for(10, "fio's first reads", || Ok(status_of(n, |s| s.reads)? > 0))?;
    std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    let (t2, c) = (Instant::now(), scan_status(n)?);
    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    let (t3, d) = (Instant::now(), scan_status(n)?);
    let busy = read_between(&c, &d) as f64 / (t3 - t2).as_secs_f64() / MIB as f64;
    println!("    under fio, {:.1} s to {:.1} s after its start: {busy:.2} MiB/s (floor 1)", (t2 - started).as_secs_f64(), (t3 - started).as_secs_f64());
    ensure!(d.busy, "the limiter does not see fio: {d:?}");
    ensure!(busy <= 1.5, "rate under fio {busy:.2} MiB/s above 1.5 x the floor");
    let st = wait_child(&mut fio, 30, "fio")?;
    ensure!(st.success(), "fio failed: {st}");
    std::thread::sleep(Duration::from_secs(2));
    let (after, f) = rate_over(n, 4)?;
    println!("    after fio: {after:.1} MiB/s");
    ensure!(!f.busy && after > 4.0, "the scrub did not speed up again after fio: {after:.1} MiB/s, {f:?}");
    Ok(())
}

/// `scrub_speed <min> <max>` sets the limits (saying the table line differs), bad pairs are
/// refused, the old `scan_rate` is refused with a log line naming `scrub_speed`; the table
/// line's `scrub_speed_min`/`scrub_speed_max` show in `dmsetup table` and `scan_status` and
/// survive a reload, which also returns to them from a message's values; `dmremap
/// scrub-speed` and `scan-status` (text and JSON) use the same messages.
fn speed_settings() -> Result<()> {
    let (_main, _spare, dm) = setup("ss", 64, |s| s.scrub_speed(2, 8))?;
    let n = dm.name.as_str();
    let shown = dmsetup(&["table", n])?;
    ensure!(shown.trim_end().ends_with(" 5 format scrub_speed_min 2 scrub_speed_max 8"), "dmsetup table: {shown:?}");
    let s = scan_status(n)?;
    expect_eq("speeds from the line", (s.speed_min, s.speed_max), (2, 8))?;
    expect_eq(
        "reply to scrub_speed 4 100",
        msg(n, &["scrub_speed", "4", "100"])?,
        "scrub_speed is now 4 100; the table line says 2 8 and a reload returns to it (set it there to keep it)".to_string(),
    )?;
    let s = scan_status(n)?;
    expect_eq("speeds after the message", (s.speed_min, s.speed_max), (4, 100))?;
    expect_eq("reply to the line's own speeds", msg(n, &["scrub_speed", "2", "8"])?, String::new())?;
    let mut kmsg = Kmsg::open()?;
    kmsg.drain();
    let out = cmd_fails("dmsetup", &["message", n, "0", "scan_rate", "16"])?;
    ensure!(out.contains("Invalid argument"), "scan_rate: {out:?}");
    let log = kmsg.drain();
    let want = format!(
        "{}: message refused: scan_rate <blocks/s> is no longer accepted: use scrub_speed <min MiB/s> <max MiB/s>",
        dm_devno(n)?
    );
    ensure!(log.iter().any(|l| l.contains(&want)), "kernel log after scan_rate: {log:?}, wanted {want:?}");
    for bad in [["5", "4"], ["0", "4"], ["1", "100001"]] {
        let out = cmd_fails("dmsetup", &["message", n, "0", "scrub_speed", bad[0], bad[1]])?;
        ensure!(out.contains("Invalid argument"), "scrub_speed {bad:?}: {out:?}");
    }
    // The same through dmremap: the reply parsed by the same code, as JSON and text.
    let out = cmd("dmremap", &["scrub-speed", n, "3", "9"])?;
    expect_eq("dmremap scrub-speed", out, format!("{n}: scrub_speed 3 9\n"))?;
    let j: serde_json::Value = serde_json::from_str(&cmd("dmremap", &["scan-status", n, "--json"])?)?;
    expect_eq("dmremap scan-status --json speeds", (j["speed_min_mib"].as_u64(), j["speed_max_mib"].as_u64()), (Some(3), Some(9)))?;
    expect_eq("dmremap scan-status --json blocks", j["blocks"].as_u64(), Some(64 * MIB / 4096))?;
    let text = cmd("dmremap", &["scan-status", n])?;
    ensure!(text.starts_with(&format!("{n}: scan ")) && text.trim_end().ends_with("limits 3-9 MiB/s"), "dmremap scan-status: {text:?}");
    let table = dmsetup(&["table", n])?;
    let line = table.trim_end().split_once(" remap ").context("table")?.1.to_string();
    dmsetup(&["reload", n, "--table", &format!("0 {} remap {line}", 64 * MIB / 512)])?;
    dmsetup(&["resume", n])?;
    let s = scan_status(n)?;
    expect_eq("speeds after a reload", (s.speed_min, s.speed_max), (2, 8))?;
    let bad = remap_table(64 * MIB / 512, LineSpec::new(&dm_devno_of_main(n)?, "7:0").scrub_speed(9, 8));
    let out = cmd_fails("dmsetup", &["reload", n, "--table", &bad])?;
    ensure!(out.contains("Invalid argument"), "a table line with min > max: {out:?}");
    Ok(())
}

/// The scrub checkpoint on the 4 MiB spare at `path`, read with the kernel's loader (with
/// O_DIRECT, so also while a table uses the spare).
fn spare_checkpoint(path: &str, main_blocks: u64) -> Result<dm_remap_logic::format::Checkpoint> {
    use dm_remap_logic::format::META_BLOCK;
    use dm_remap_logic::loader;
    let arr = |v: Vec<u8>| -> Result<[u8; META_BLOCK]> { v.try_into().map_err(|_| anyhow::anyhow!("short read")) };
    let a = arr(read_at(path, 0, META_BLOCK)?)?;
    let b = arr(read_at(path, META_BLOCK as u64, META_BLOCK)?)?;
    let sb = loader::superblock_alone(&a, &b, 4 * MIB / 512).map_err(|e| anyhow::anyhow!("{:?}", e))?;
    let s0 = sb.checkpoint_sector(0).context("the new spare has no checkpoint slots")?;
    let s1 = sb.checkpoint_sector(1).context("slot 1")?;
    let c0 = arr(read_at(path, s0 * 512, META_BLOCK)?)?;
    let c1 = arr(read_at(path, s1 * 512, META_BLOCK)?)?;
    Ok(loader::checkpoint(&sb, &c0, &c1, main_blocks).context("no valid checkpoint slot")?.0)
}

/// The scrub checkpoint: part-way through a pass over 1 GiB, `dmsetup remove` writes it at
/// suspend; the spare then holds that position (read back with the loader), and the same
/// table created again starts `scan_status` there, not at 0. A table reload (load, resume)
/// goes on from where the old table stopped too.
fn checkpoint_resumes() -> Result<()> {
    let mib = 1024;
    let blocks = mib * MIB / 4096;
    let main = NullB::new("nbsk", mib, false)?;
    let spare = LoopDev::new("sk-spare", 4 * MIB)?;
    let name = "t-sk";
    let table = remap_table(mib * MIB / 512, LineSpec::new(&main.path, &spare.path).format());
    let dm = DmDev::create(name, &table)?;
    wait_for(60, "the scrub to read 32 MiB", || Ok(scan_status(name)?.position >= 8192))?;
    let before = scan_status(name)?;
    ensure!(before.passes == 0 && before.position < blocks, "the pass ended too soon: {before:?}");
    drop(dm);
    let c = spare_checkpoint(&spare.path, blocks)?;
    ensure!(c.position >= before.position && c.position < blocks && c.passes == 0, "checkpoint {c:?} after {before:?}");
    let dm = DmDev::create(name, &table)?;
    let after = scan_status(name)?;
    // Read before the scrub's first step (10 s after resume): exactly the checkpoint.
    expect_eq("position after remove/create", (after.position, after.passes, after.blocks), (c.position, 0, blocks))?;
    wait_for(60, "the scrub to go on", || Ok(scan_status(name)?.position > c.position + 1024))?;
    let moved = scan_status(name)?;
    dmsetup(&["load", name, "--table", &table])?;
    dmsetup(&["resume", name])?;
    let reloaded = scan_status(name)?;
    ensure!(
        reloaded.position >= moved.position && reloaded.position < blocks && reloaded.passes == 0,
        "after a reload the scrub is at {reloaded:?}, it was at {moved:?}"
    );
    println!(
        "    positions: {} before remove, {} checkpointed, {} after create, {} before reload, {} after it",
        before.position, c.position, after.position, moved.position, reloaded.position
    );
    drop(dm);
    Ok(())
}

/// The dm device's `major:minor`, as the kernel log names it.
fn dm_devno(name: &str) -> Result<String> {
    Ok(dmsetup(&["info", "-c", "--noheadings", "-o", "major,minor", "--separator", ":", name])?.trim().to_string())
}

/// The main device of a remap table, as `dmsetup table` shows it.
fn dm_devno_of_main(name: &str) -> Result<String> {
    let table = dmsetup(&["table", name])?;
    Ok(table.split_whitespace().nth(3).context("table")?.to_string())
}

/// The power-cut half of the checkpoint test: `cargo xtask test` kills QEMU one checkpoint
/// interval into a pass (t_powercut's cycle 0 storm boot) and checks the position in the next
/// boot (cycle 1). Wall-clock bound (the kernel's 30 s checkpoint period), so run on the first
/// kernel only.
pub const POWERCUT_TEST: &str = "powercut_scrub_checkpoint_resumed";

/// The scrub's ceiling in that test (MiB/s): low enough that a pass over `PC_MIB` takes longer
/// than the test (1 GiB at 8 MiB/s: 128 s), so the kill falls inside the first pass.
const PC_SPEED: u64 = 8;
const PC_MIB: u64 = 1024;
/// The spare: 4 MiB of /dev/vda past what t_powercut's own devices use (24 MiB).
const PC_SPARE_OFFSET: u64 = 32 * MIB / 512;
/// The kernel's checkpoint period (CKPT_NS in src/scan.rs).
const CKPT_SECS: u64 = 30;

/// The devices of the power-cut checkpoint test, removed in order when dropped.
pub struct PcScrub {
    dm: Option<DmDev>,
    spare: Option<DmDev>,
    _main: NullB,
}

impl Drop for PcScrub {
    fn drop(&mut self) {
        self.dm.take();
        self.spare.take();
    }
}

fn pc_setup(format: bool) -> Result<PcScrub> {
    let main = NullB::new("nbpcs", PC_MIB, false)?;
    let spare = DmDev::create("pcs-spare", &format!("0 {} linear /dev/vda {PC_SPARE_OFFSET}", 4 * MIB / 512))?;
    let mut spec = LineSpec::new(&main.path, &spare.path).scrub_speed(1, PC_SPEED as u32);
    if format {
        spec = spec.format();
    }
    let dm = DmDev::create("pcs", &remap_table(PC_MIB * MIB / 512, spec))?;
    Ok(PcScrub { dm: Some(dm), spare: Some(spare), _main: main })
}

/// Cycle 0, before the storm: a remap device over 1 GiB with a fresh spare on /dev/vda, the
/// scrub at up to 8 MiB/s; waits until the spare holds a periodic checkpoint past block 0 (about
/// 30 s after the table's resume), prints `SCRUBCKPT <position> <seq> .`, then prints the
/// live position as `SCRUBPOS <position> .` every 200 ms until QEMU is killed (fails instead
/// if the kernel logged a bug meanwhile). The devices
/// must stay alive until then: keep the returned value.
pub fn powercut_before_kill() -> Result<PcScrub> {
    let mut kmsg = Kmsg::open()?;
    kmsg.drain();
    let devs = pc_setup(true)?;
    let blocks = PC_MIB * MIB / 4096;
    let t0 = Instant::now();
    let mut last_print = Instant::now();
    let c = loop {
        // No slot is valid until the first write: the format leaves them zero.
        if let Ok(c) = spare_checkpoint("/dev/mapper/pcs-spare", blocks) {
            if c.position > 0 {
                break c;
            }
        }
        ensure!(t0.elapsed() < Duration::from_secs(4 * CKPT_SECS), "no checkpoint past block 0 after {} s", 4 * CKPT_SECS);
        if last_print.elapsed() >= Duration::from_secs(5) {
            println!("    scrub at {} after {:.0} s, no checkpoint yet", scan_status("pcs")?.position, t0.elapsed().as_secs_f64());
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let now = scan_status("pcs")?;
    ensure!(c.passes == 0 && now.passes == 0 && now.position < blocks, "the first pass ended before the kill: {now:?}");
    // The kill ends this boot without a verdict line: check the kernel log now.
    let bugs: Vec<String> = kmsg.drain().into_iter().filter(|l| is_kernel_bug(l)).collect();
    ensure!(bugs.is_empty(), "kernel log gained:\n    {}", bugs.join("\n    "));
    println!("{} {} {} .", crate::protocol::SCRUB_CKPT, c.position, c.seq);
    println!("    checkpoint at block {} (seq {}) {:.1} s after create; scrub at {}", c.position, c.seq, t0.elapsed().as_secs_f64(), now.position);
    std::thread::spawn(|| loop {
        if let Ok(s) = scan_status("pcs") {
            println!("{} {} .", crate::protocol::SCRUB_POS, s.position);
        }
        std::thread::sleep(Duration::from_millis(200));
    });
    Ok(devs)
}

/// Cycle 1, after the kill: the positions the host collected from cycle 0's console
/// (/powercut-scrub.txt: the checkpointed position, the last live position printed). The
/// spare's durable checkpoint (read with the loader before the table is loaded) and
/// `scan_status` right after the create (before the scrub's first step, 10 s after resume)
/// are both the same position, which lies between the two printed ones, within one
/// checkpoint period at 8 MiB/s of the last one, and past 0.
pub fn powercut_after_kill() -> Result<String> {
    let text = std::fs::read_to_string("/powercut-scrub.txt").context("no /powercut-scrub.txt")?;
    let v: Vec<u64> = text.split_whitespace().map(str::parse).collect::<Result<_, _>>().context("/powercut-scrub.txt")?;
    let [ckpt, live] = v[..] else { anyhow::bail!("/powercut-scrub.txt: {text:?}") };
    let blocks = PC_MIB * MIB / 4096;
    let spare = DmDev::create("pcs-spare", &format!("0 {} linear /dev/vda {PC_SPARE_OFFSET}", 4 * MIB / 512))?;
    let on_disk = spare_checkpoint(&spare.path, blocks)?;
    drop(spare);
    let devs = pc_setup(false)?;
    let r = scan_status("pcs")?;
    drop(devs);
    let period = CKPT_SECS * PC_SPEED * MIB / 4096;
    ensure!(r.passes == 0 && r.blocks == blocks, "scan_status after the reboot: {r:?}");
    expect_eq("position after the reboot against the spare's checkpoint", r.position, on_disk.position)?;
    ensure!(r.position > 0, "the scrub restarted at block 0: {r:?}");
    ensure!(r.position >= ckpt, "position {} after the reboot, but block {ckpt} was checkpointed before the kill", r.position);
    ensure!(r.position <= live, "position {} after the reboot, past the last position printed before the kill ({live})", r.position);
    ensure!(
        r.position + period >= live,
        "position {} after the reboot, more than one checkpoint period ({period} blocks at {PC_SPEED} MiB/s) behind the last printed ({live})",
        r.position
    );
    Ok(format!(
        "resumed at block {} (checkpointed before the kill: {ckpt}; last printed before the kill: {live}; of {blocks})",
        r.position
    ))
}
