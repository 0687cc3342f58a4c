//! Correctness of the relocation paths under particular interleavings and faults (issue 12):
//! each test reproduces a defect that lost an acknowledged write, or left the target in a
//! state that would lose one, on the code before its fix.

use crate::harness::*;
use anyhow::{bail, ensure, Context, Result};
use std::time::{Duration, Instant};

pub const TESTS: &[crate::Test] = &[
    ("correct_migration_remap_message_vs_write", migration_message),
    ("correct_migration_scan_vs_write", migration_scan),
    ("correct_migration_read_retry_vs_write", migration_read_retry),
    ("correct_failed_pool_write_not_committed", failed_pool_write),
    ("correct_fua_kept_on_partly_failed_write", fua_kept),
    ("correct_failed_preresume_reloads_on_next_resume", failed_preresume),
    ("correct_messages_do_not_scan_suspended_device", no_scan_while_suspended),
    ("correct_pending_block_writable_with_pool_full", pending_writable_when_full),
    ("correct_slow_scan_step_blocks_neither_relocation_nor_suspend", slow_scan_step),
    ("correct_large_discard_goes_out_as_through_dm_linear", large_discard),
    ("correct_reload_waits_for_a_move_in_progress", reload_during_move),
    ("correct_failed_commit_spilling_into_next_log_block", failed_commit_spill),
    ("correct_pending_write_goes_to_main_when_pool_filled_first", pending_write_after_pool_filled),
];

const MIB: u64 = 1 << 20;
const BS: u64 = 4096;
/// Write delay of the slow spares, ms: long enough to act inside a relocation's window.
const SPARE_WRITE_DELAY_MS: u64 = 2000;

/// Fails unless block data `got` is `want`, naming what it is instead (no byte dumps).
fn expect_data(what: &str, got: &[u8], want: &[u8], old: &[u8]) -> Result<()> {
    if got != want {
        let is = if got == old { "the data from before the last write" } else { "other data" };
        bail!("{what}: {is}, not the data last written");
    }
    Ok(())
}

/// Fails unless `r` is the error EIO (what a refused or failed I/O returns), naming `what`.
fn expect_eio<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) -> Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(()),
        other => bail!("{what}: expected EIO, got {other:?}"),
    }
}

/// A spare whose writes take `SPARE_WRITE_DELAY_MS` (reads are immediate): dm-delay over a
/// loop device.
struct SlowSpare {
    dm: DmDev,
    _lo: LoopDev,
}

impl SlowSpare {
    fn new(tag: &str) -> Result<Self> {
        let lo = LoopDev::new(tag, 4 * MIB)?;
        let n = 4 * MIB / 512;
        let dm = DmDev::create(&format!("t-{tag}"), &format!("0 {n} delay {p} 0 0 {p} 0 {SPARE_WRITE_DELAY_MS}", p = lo.path))?;
        Ok(Self { dm, _lo: lo })
    }
}

/// Waits until the target `name` has sent an I/O to its spare past `base` (status field 6):
/// in these tests, nothing but a relocation writing its pool block does (dm's own inflight
/// counters do not count the spare's delayed bios), and it takes `SPARE_WRITE_DELAY_MS`.
fn wait_pool_write(name: &str, base: u64, secs: u64) -> Result<()> {
    wait_for(secs, "a relocation's write to the spare", || Ok(status_of(name, |s| s.spare_ios)? > base))
}

/// Writes `new` to block `b` through the target while a relocation of `b` is writing its pool
/// block, then checks that `b` reads `new` (through the target, and again after re-creation).
fn write_during_relocation(dm: &DmDev, base: u64, b: u64, old: &[u8], new: &[u8]) -> Result<()> {
    wait_pool_write(&dm.name, base, 90)?;
    let t = Instant::now();
    write_at(&dm.path, b * BS, new).context("the write during the relocation")?;
    println!("    write during the relocation acknowledged after {} ms", t.elapsed().as_millis());
    // Published: the remap shows in field 8.
    wait_for(60, "the relocation to be published", || Ok(status_of(&dm.name, |s| s.remaps)? == 1))?;
    expect_data("the block after the relocation", &read_at(&dm.path, b * BS, BS as usize)?, new, old)?;
    Ok(())
}

/// `remap <sector>` moves a block while a write to it arrives: the write must win.
fn migration_message() -> Result<()> {
    let lo = LoopDev::new("mm-main", 16 * MIB)?;
    let spare = SlowSpare::new("mm-spare")?;
    let n = 16 * MIB / 512;
    let old = pattern(1, BS as usize);
    write_at(&lo.path, 40 * BS, &old)?;
    let dm = DmDev::create("t-mm", &remap_table(n, LineSpec::new(&lo.path, &spare.dm.path).format()))?;
    msg(&dm.name, &["maintenance", "on"])?;
    let base = status_of(&dm.name, |s| s.spare_ios)?;
    let name = dm.name.clone();
    let mover = std::thread::spawn(move || msg(&name, &["remap", &(40 * 8).to_string()]));
    let new = pattern(2, BS as usize);
    let r = write_during_relocation(&dm, base, 40, &old, &new);
    let moved = mover.join().map_err(|_| anyhow::anyhow!("remap thread panicked"))?;
    r?;
    ensure!(moved?.starts_with("block=40 location=spare"), "remap reply");
    msg(&dm.name, &["maintenance", "off"])?;
    drop(dm);
    let dm = DmDev::create("t-mm", &remap_table(n, LineSpec::new(&lo.path, &spare.dm.path)))?;
    expect_data("the block after re-creation", &read_at(&dm.path, 40 * BS, BS as usize)?, &new, &old)?;
    Ok(())
}

/// The scan finds block 50 weak (every read of it takes 300 ms) and moves it while a write
/// to it arrives: the write must win.
fn migration_scan() -> Result<()> {
    let lo = LoopDev::new("ms-main", 16 * MIB)?;
    let n = 16 * MIB / 512;
    // Reads of block 50 take 300 ms; writes are immediate.
    let table = format!("0 400 linear {p} 0\n400 8 delay {p} 400 300 {p} 400 0\n408 {} linear {p} 408", n - 408, p = lo.path);
    let main = DmDev::create("t-ms-main", &table)?;
    let old = pattern(3, BS as usize);
    write_at(&lo.path, 50 * BS, &old)?;
    let spare = SlowSpare::new("ms-spare")?;
    let dm = DmDev::create("t-ms", &remap_table(n, LineSpec::new(&main.path, &spare.dm.path).format()))?;
    let base = status_of(&dm.name, |s| s.spare_ios)?;
    msg(&dm.name, &["scrub_speed", "1000", "1000"])?;
    msg(&dm.name, &["scan_interval", "1"])?;
    msg(&dm.name, &["scan", "start"])?;
    let new = pattern(4, BS as usize);
    write_during_relocation(&dm, base, 50, &old, &new)?;
    msg(&dm.name, &["scan", "stop"])?;
    Ok(())
}

/// A single-block read fails on the main device; by the time the worker retries it, the
/// block reads again, so it is weak and moved; a write to it arrives during the move: the
/// write must win. The worker is held back by a manual remap of another block (the meta lock)
/// while the main device's bad segment is replaced by a good one.
fn migration_read_retry() -> Result<()> {
    let lo = LoopDev::new("mr-main", 16 * MIB)?;
    let n = 16 * MIB / 512;
    let old = pattern(5, BS as usize);
    write_at(&lo.path, 60 * BS, &old)?;
    let good = format!("0 {n} linear {} 0", lo.path);
    let main = DmDev::create("t-mr-main", &bad_table(&lo.path, n, &[(60, 1)]))?;
    let spare = SlowSpare::new("mr-spare")?;
    let dm = DmDev::create("t-mr", &remap_table(n, LineSpec::new(&main.path, &spare.dm.path).format().read_retries(1)))?;
    // Holds the worker back: a relocation of block 70 (two delayed writes, about 4 s).
    let base = status_of(&dm.name, |s| s.spare_ios)?;
    let reader = while_worker_held(&dm, || {
        let path = dm.path.clone();
        let reader = std::thread::spawn(move || read_at(&path, 60 * BS, BS as usize));
        std::thread::sleep(Duration::from_millis(300));
        dmsetup(&["reload", &main.name, "--table", &good])?;
        dmsetup(&["resume", &main.name])?;
        Ok(reader)
    })?;
    // The weak block's move writes its pool block now (the read may complete before or
    // after it).
    let new = pattern(6, BS as usize);
    // Past the mover's two spare I/Os (its pool block and its commit): the weak block's.
    wait_pool_write(&dm.name, base + 2, 60)?;
    write_at(&dm.path, 60 * BS, &new).context("the write during the relocation")?;
    let read = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))?;
    expect_data("the read retried by the worker", &read.context("read of block 60")?, &old, &[])?;
    wait_for(60, "the relocation of block 60", || Ok(status_of(&dm.name, |s| s.remaps)? == 2))?;
    expect_data("block 60 after its relocation", &read_at(&dm.path, 60 * BS, BS as usize)?, &new, &old)?;
    msg(&dm.name, &["maintenance", "off"])?;
    Ok(())
}

/// The scan moves a weak block, but the pool block's write fails: the remap must not be
/// committed, and the block still reads its data from the main device.
fn failed_pool_write() -> Result<()> {
    let lo = LoopDev::new("fp-main", 16 * MIB)?;
    let n = 16 * MIB / 512;
    let table = format!("0 400 linear {p} 0\n400 8 delay {p} 400 300 {p} 400 0\n408 {} linear {p} 408", n - 408, p = lo.path);
    let main = DmDev::create("t-fp-main", &table)?;
    let data = pattern(7, BS as usize);
    write_at(&lo.path, 50 * BS, &data)?;
    let sl = LoopDev::new("fp-spare", 4 * MIB)?;
    let ps = geometry(4 * MIB)?.pool_start;
    let s = 4 * MIB / 512;
    // Formatted while whole (format reads the first and last MiB); then pool block 0 fails
    // every I/O.
    let spare = DmDev::create("t-fp-spare", &format!("0 {s} linear {} 0", sl.path))?;
    drop(DmDev::create("t-fp", &remap_table(n, LineSpec::new(&main.path, &spare.path).format()))?);
    let spare_table = format!("0 {ps} linear {p} 0\n{ps} 8 error\n{} {} linear {p} {}", ps + 8, s - ps - 8, ps + 8, p = sl.path);
    dmsetup(&["reload", &spare.name, "--table", &spare_table])?;
    dmsetup(&["resume", &spare.name])?;
    let dm = DmDev::create("t-fp", &remap_table(n, LineSpec::new(&main.path, &spare.path)))?;
    msg(&dm.name, &["scrub_speed", "1000", "1000"])?;
    msg(&dm.name, &["scan_interval", "1"])?;
    msg(&dm.name, &["scan", "start"])?;
    wait_for(60, "the state to become degraded", || {
        Ok(status_of(&dm.name, |s| s.state.name() == "degraded")?)
    })?;
    expect_eq("field 8 (remaps)", status_of(&dm.name, |s| s.remaps)?, 0)?;
    expect_data("the weak block's data", &read_at(&dm.path, 50 * BS, BS as usize)?, &data, &[])?;
    drop(dm);
    // And on disk: a new table over a working spare finds no remap of block 50.
    dmsetup(&["reload", &spare.name, "--table", &format!("0 {s} linear {} 0", sl.path)])?;
    dmsetup(&["resume", &spare.name])?;
    let dm = DmDev::create("t-fp", &remap_table(n, LineSpec::new(&main.path, &spare.path)))?;
    expect_eq("field 8 (remaps) after re-creation", status_of(&dm.name, |s| s.remaps)?, 0)?;
    expect_data("the weak block's data after re-creation", &read_at(&dm.path, 50 * BS, BS as usize)?, &data, &[])?;
    Ok(())
}

/// An asynchronous O_DSYNC (FUA) write of 4 blocks fails as a whole, as a disk fails a
/// command: the worker rewrites each block on the main device, and all four succeed there,
/// so no pool block and no commit is involved. When the write is acknowledged, all four must
/// be durable on the main device.
///
/// dm-log-writes under the main device puts a write in its log only once it is durable (a
/// FUA write at once, others at the next flush), so each block must be in the log before
/// the mark made after the acknowledgement. dm-dust (16 KiB blocks, the bad one failing one
/// write) fails the whole write above it. Asynchronous (io_uring), because a synchronous
/// O_DSYNC write is followed by an fsync anyway; an asynchronous one relies on REQ_FUA alone.
fn fua_kept() -> Result<()> {
    let data_lo = LoopDev::new("fu-data", 16 * MIB)?;
    let log_lo = LoopDev::new("fu-log", 64 * MIB)?;
    let n = 16 * MIB / 512;
    let lw = DmDev::create("t-fu-lw", &format!("0 {n} log-writes {} {}", data_lo.path, log_lo.path))?;
    let dust = DmDev::create("t-fu-dust", &format!("0 {n} dust {} 0 16384", lw.path))?;
    // Dust block 2 = 4 KiB blocks 8 to 11: its first write fails, the next ones work.
    dmsetup(&["message", &dust.name, "0", "addbadblock", "2", "1"])?;
    dmsetup(&["message", &dust.name, "0", "enable"])?;
    let spare = LoopDev::new("fu-spare", 4 * MIB)?;
    let dm = DmDev::create("t-fu", &remap_table(n, LineSpec::new(&dust.path, &spare.path).format()))?;
    msg(&lw.name, &["mark", "before"])?;
    cmd(
        "fio",
        &[
            "--name=dsync", &format!("--filename={}", dm.path), "--ioengine=io_uring", "--direct=1",
            "--sync=dsync", "--rw=write", "--bs=16k", "--size=16k", &format!("--offset={}", 8 * BS),
            "--iodepth=1", "--buffer_pattern=0x5a", "--end_fsync=0", "--fsync=0", "--output-format=terse",
        ],
    )?;
    // The write is acknowledged; nothing else has been sent to the main device.
    msg(&lw.name, &["mark", "after"])?;
    expect_eq("field 7 (media errors)", status_of(&dm.name, |s| s.media_errors)?, 1)?;
    expect_eq("field 8 (remaps)", status_of(&dm.name, |s| s.remaps)?, 0)?;
    let entries = log_writes_entries(&log_lo.path)?;
    let pos = |m: &str| entries.iter().position(|e| e.flags & LW_MARK != 0 && e.mark.starts_with(m));
    let (b, a) = (pos("before").context("mark before")?, pos("after").context("mark after")?);
    let window = &entries[b + 1..a];
    for blk in 8u64..12 {
        let s = blk * 8;
        let durable = window.iter().any(|e| e.nr > 0 && e.flags & LW_DISCARD == 0 && e.sector <= s && s < e.sector + e.nr);
        ensure!(
            durable,
            "block {blk} was not durable on the main device when the O_DSYNC write was acknowledged (log entries: {})",
            window.iter().map(|e| format!("{}+{}/{:#x}", e.sector, e.nr, e.flags)).collect::<Vec<_>>().join(" ")
        );
    }
    expect_eq("read back", read_at(&dm.path, 8 * BS, 4 * BS as usize)? == vec![0x5au8; 4 * BS as usize], true)?;
    drop(dm);
    drop(dust);
    Ok(())
}

/// A reloaded table's first resume fails (the spare is unreachable at that moment); a later
/// resume must still read the log again, so the remaps the old table committed after the new
/// one's constructor ran are kept.
fn failed_preresume() -> Result<()> {
    let bad = BadMain::new("pr", 16 * MIB, &[(5, 1), (6, 1)])?;
    let sl = LoopDev::new("pr-spare", 4 * MIB)?;
    let s = 4 * MIB / 512;
    let linear = format!("0 {s} linear {} 0", sl.path);
    let spare = DmDev::create("t-pr-spare", &linear)?;
    let table = remap_table(16 * MIB / 512, LineSpec::new(&bad.path(), &spare.path).format());
    let dm = DmDev::create("t-pr", &table)?;
    write_at(&dm.path, 5 * BS, &pattern(9, BS as usize))?;
    dmsetup(&["reload", &dm.name, "--table", &table])?;
    // The old table commits a relocation after the new constructor read the log.
    write_at(&dm.path, 6 * BS, &pattern(10, BS as usize))?;
    dmsetup(&["reload", &spare.name, "--table", &format!("0 {s} error")])?;
    dmsetup(&["resume", &spare.name])?;
    cmd_fails("dmsetup", &["resume", &dm.name]).context("the resume with the spare unreachable")?;
    dmsetup(&["reload", &spare.name, "--table", &linear])?;
    dmsetup(&["resume", &spare.name])?;
    dmsetup(&["resume", &dm.name]).context("the resume with the spare back")?;
    expect_eq("field 8 (remaps)", status_of(&dm.name, |s| s.remaps)?, 2)?;
    expect_data("block 6", &read_at(&dm.path, 6 * BS, BS as usize)?, &pattern(10, BS as usize), &[])?;
    expect_data("block 5", &read_at(&dm.path, 5 * BS, BS as usize)?, &pattern(9, BS as usize), &[])?;
    Ok(())
}

/// Messages that (re)start the scan do not start it on a suspended device: no scan read
/// reaches the main device until it is resumed (then it does).
fn no_scan_while_suspended() -> Result<()> {
    let lo = LoopDev::new("ns-main", 16 * MIB)?;
    let spare = LoopDev::new("ns-spare", 4 * MIB)?;
    let n = 16 * MIB / 512;
    let dm = DmDev::create("t-ns", &remap_table(n, LineSpec::new(&lo.path, &spare.path).format()))?;
    msg(&dm.name, &["scan", "stop"])?;
    msg(&dm.name, &["scrub_speed", "1000", "1000"])?;
    dmsetup(&["suspend", &dm.name])?;
    let blk = lo.path.trim_start_matches("/dev/").to_string();
    let before = io_counts(&blk)?.0;
    msg(&dm.name, &["scan", "start"])?;
    msg(&dm.name, &["scan_interval", "1"])?;
    msg(&dm.name, &["maintenance", "on"])?;
    msg(&dm.name, &["maintenance", "off"])?;
    std::thread::sleep(Duration::from_millis(2500));
    expect_eq("sectors read from the main device while suspended", io_counts(&blk)?.0 - before, 0)?;
    dmsetup(&["resume", &dm.name])?;
    wait_for(30, "the scan to read after resume", || Ok(io_counts(&blk)?.0 > before))?;
    Ok(())
}

/// A pending block (its read failed) stays writable when the pool cannot take it: the
/// write goes to the main device, which accepts it.
fn pending_writable_when_full() -> Result<()> {
    let lo = LoopDev::new("pw", 16 * MIB)?;
    let n = 16 * MIB / 512;
    let dust = DmDev::create("t-pw-dust", &format!("0 {n} dust {} 0 4096", lo.path))?;
    dmsetup(&["message", &dust.name, "0", "addbadblock", "20"])?;
    dmsetup(&["message", &dust.name, "0", "enable"])?;
    let g = dm_remap_logic::format::Geometry::for_pool(1, 4096, u64::MAX).context("layout")?;
    let spare = LoopDev::new("pw-spare", g.end_bytes())?;
    let dm = DmDev::create("t-pw", &remap_table(n, LineSpec::new(&dust.path, &spare.path).format().read_retries(1)))?;
    // Fill the one-block pool.
    msg(&dm.name, &["maintenance", "on"])?;
    msg(&dm.name, &["remap", &(40 * 8).to_string()])?;
    msg(&dm.name, &["maintenance", "off"])?;
    expect_eq("state", status_of(&dm.name, |s| s.state.name().to_string())?, "spare_full".to_string())?;
    expect_eio("reading the bad block", read_at(&dm.path, 20 * BS, BS as usize))?;
    expect_eq("field 11 (pending)", status_of(&dm.name, |s| s.pending)?, 1)?;
    let a = pattern(11, BS as usize);
    write_at(&dm.path, 20 * BS, &a).context("write to the pending block with the pool full")?;
    expect_data("read back", &read_at(&dm.path, 20 * BS, BS as usize)?, &a, &[])?;
    Ok(())
}

/// A scan step over a run of slow blocks (each read takes 200 ms, about 25 s for the step)
/// must neither hold back the relocation of a failing write nor a suspend: the scan reads
/// outside the metadata lock and stops between blocks. A wall-clock property, so it runs on
/// the test kernel only.
fn slow_scan_step() -> Result<()> {
    if std::path::Path::new("/sys/kernel/debug/kmemleak").exists() {
        bail!("SKIP: a wall-clock property, checked on the test kernel only");
    }
    let lo = LoopDev::new("sl-main", 16 * MIB)?;
    let n = 16 * MIB / 512;
    let p = &lo.path;
    let table = format!(
        "0 800 linear {p} 0\n800 512 delay {p} 800 200 {p} 800 0\n1312 14688 linear {p} 1312\n16000 8 error\n16008 {} linear {p} 16008",
        n - 16008
    );
    let main = DmDev::create("t-sl-main", &table)?;
    let spare = LoopDev::new("sl-spare", 4 * MIB)?;
    let dm = DmDev::create("t-sl", &remap_table(n, LineSpec::new(&main.path, &spare.path).format()))?;
    msg(&dm.name, &["scrub_speed", "1000", "1000"])?;
    msg(&dm.name, &["scan_interval", "1"])?;
    msg(&dm.name, &["scan", "start"])?;
    // The step reaches the slow run at once and stays in it for many seconds.
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    write_at(&dm.path, 2000 * BS, &pattern(12, BS as usize)).context("write to the bad block")?;
    let relocated = t.elapsed();
    let t = Instant::now();
    dmsetup(&["suspend", &dm.name])?;
    let suspended = t.elapsed();
    dmsetup(&["resume", &dm.name])?;
    msg(&dm.name, &["scan", "stop"])?;
    println!("    relocation took {} ms, suspend {} ms, during a slow scan step", relocated.as_millis(), suspended.as_millis());
    ensure!(relocated < Duration::from_secs(5), "a failing write waited {relocated:?} behind the scan");
    ensure!(suspended < Duration::from_secs(5), "suspend waited {suspended:?} behind the scan");
    expect_data("the relocated block", &read_at(&dm.path, 2000 * BS, BS as usize)?, &pattern(12, BS as usize), &[])?;
    Ok(())
}

/// Discard requests (and merges) a block device has seen (`/sys/block/<dev>/stat`).
fn discards(blkdev: &str) -> Result<u64> {
    let st = std::fs::read_to_string(format!("/sys/block/{blkdev}/stat"))?;
    let f: Vec<u64> = st.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    ensure!(f.len() >= 13, "no discard fields in /sys/block/{blkdev}/stat");
    Ok(f[11] + f[12])
}

/// A 16 MiB discard (4096 blocks) reaches the main device in as many pieces through
/// dm-remap with no remap as through dm-linear: map does not cut discards into 1024-block
/// pieces as it does reads and writes.
fn large_discard() -> Result<()> {
    let lo = LoopDev::new("ld", 32 * MIB)?;
    let blk = lo.path.trim_start_matches("/dev/").to_string();
    let n = 32 * MIB / 512;
    let len = (16 * MIB).to_string();
    let through = |table: &str| -> Result<u64> {
        let dm = DmDev::create("t-ld", table)?;
        let before = discards(&blk)?;
        cmd("blkdiscard", &["-o", "0", "-l", &len, &dm.path])?;
        Ok(discards(&blk)? - before)
    };
    let linear = through(&format!("0 {n} linear {} 0", lo.path))?;
    let spare = LoopDev::new("ld-spare", 4 * MIB)?;
    let remap = through(&remap_table(n, LineSpec::new(&lo.path, &spare.path).format()))?;
    println!("    discard requests on the main device: dm-linear {linear}, dm-remap {remap}");
    ensure!(linear > 0, "the discard never reached the loop device");
    expect_eq("discard requests through dm-remap (as through dm-linear)", remap, linear)
}

/// Holds the worker back (the metadata lock) with a `remap` message of block 70, whose pool
/// block and commit each wait `SPARE_WRITE_DELAY_MS`, while `during` runs once the message's
/// pool write has started. Returns `during`'s result after the message succeeded.
fn while_worker_held<T>(dm: &DmDev, during: impl FnOnce() -> Result<T>) -> Result<T> {
    msg(&dm.name, &["maintenance", "on"])?;
    let base = status_of(&dm.name, |s| s.spare_ios)?;
    let name = dm.name.clone();
    let mover = std::thread::spawn(move || msg(&name, &["remap", &(70 * 8).to_string()]));
    let r = wait_pool_write(&dm.name, base, 60).and_then(|()| during());
    let moved = mover.join().map_err(|_| anyhow::anyhow!("remap thread panicked"))?;
    ensure!(moved?.starts_with("block=70 location=spare"), "remap reply");
    // Maintenance stays on: `maintenance off` takes the metadata lock, so it would wait for
    // whatever the worker does next.
    r
}

/// Issue 32.1: a read retry finds block 60 weak (its one read failed, the retry works), and
/// its move is writing the slow spare when `dmsetup reload` + `resume` swap in a new table.
/// The old table must not commit the move after the new one read the log (presuspend waits
/// for it), or the new table sends the next write to the main device and the load after it
/// replays the move: the write reads back stale.
fn reload_during_move() -> Result<()> {
    let lo = LoopDev::new("rm-main", 16 * MIB)?;
    let n = 16 * MIB / 512;
    let old = pattern(21, BS as usize);
    write_at(&lo.path, 60 * BS, &old)?;
    let good = format!("0 {n} linear {} 0", lo.path);
    let main = DmDev::create("t-rm-main", &bad_table(&lo.path, n, &[(60, 1)]))?;
    let spare = SlowSpare::new("rm-spare")?;
    let line = LineSpec::new(&main.path, &spare.dm.path).read_retries(1).no_scan();
    let dm = DmDev::create("t-rm", &remap_table(n, line.format()))?;
    // The read fails once on the main device; the worker, held back, retries it after the
    // bad segment is gone: one failed read, then a good one.
    let reader = while_worker_held(&dm, || {
        let path = dm.path.clone();
        let reader = std::thread::spawn(move || read_at(&path, 60 * BS, BS as usize));
        std::thread::sleep(Duration::from_millis(300));
        dmsetup(&["reload", &main.name, "--table", &good])?;
        dmsetup(&["resume", &main.name])?;
        Ok(reader)
    })?;
    let read = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))?;
    expect_data("the read retried by the worker", &read.context("read of block 60")?, &old, &[])?;
    // The move of block 60 starts as the read completes: its pool write takes 2 s. Swap in a
    // new table at once.
    let t = Instant::now();
    dmsetup(&["reload", &dm.name, "--table", &remap_table(n, line)])?;
    dmsetup(&["resume", &dm.name])?;
    println!("    reload + resume took {} ms", t.elapsed().as_millis());
    let new = pattern(22, BS as usize);
    write_at(&dm.path, 60 * BS, &new).context("the write after the reload")?;
    expect_data("block 60 after the reload", &read_at(&dm.path, 60 * BS, BS as usize)?, &new, &old)?;
    drop(dm);
    let dm = DmDev::create("t-rm", &remap_table(n, line))?;
    expect_data("block 60 after re-creation", &read_at(&dm.path, 60 * BS, BS as usize)?, &new, &old)?;
    expect_eq("field 8 (remaps) after re-creation", status_of(&dm.name, |s| s.remaps)?, 2)?;
    Ok(())
}

/// Issue 32.2: a batch of two relocations spills from log block 0 (one entry short of full)
/// into block 1, whose write fails. Block 400's remap is durable in block 0, so it must be
/// published: a write to it acknowledged on the main device would read back stale after the
/// next load. Block 401's remap was in the failed write, which the log may or may not hold:
/// writes to it must fail until a reload resolves it.
fn failed_commit_spill() -> Result<()> {
    use dm_remap_logic::format::{Geometry, ENTRIES_PER_BLOCK};
    let fill = ENTRIES_PER_BLOCK as u64 - 1;
    let lo = LoopDev::new("fc-main", 16 * MIB)?;
    let n = 16 * MIB / 512;
    let old = pattern(30, BS as usize);
    write_at(&lo.path, 401 * BS, &old)?;
    let good = format!("0 {n} linear {} 0", lo.path);
    let main = DmDev::create("t-fc-main", &bad_table(&lo.path, n, &[(100, fill), (400, 2)]))?;
    let sl = LoopDev::new("fc-spare", 8 * MIB)?;
    let s = 8 * MIB / 512;
    let linear = format!("0 {s} linear {} 0", sl.path);
    let spare = DmDev::create("t-fc-spare", &linear)?;
    let line = LineSpec::new(&main.path, &spare.path).no_scan();
    let dm = DmDev::create("t-fc", &remap_table(n, line.format()))?;
    write_at(&dm.path, 100 * BS, &pattern(31, (fill * BS) as usize)).context("the write that fills log block 0")?;
    expect_eq("field 8 (remaps): log block 0 one entry short", status_of(&dm.name, |s| s.remaps)?, fill)?;
    // Log block 1 (both slots, contiguous) fails every I/O.
    let l1 = Geometry::log_slot_sector(1, 0);
    ensure!(Geometry::log_slot_sector(1, 1) == l1 + 8, "log slots of a block are adjacent");
    let broken = format!("0 {l1} linear {p} 0\n{l1} 16 error\n{} {} linear {p} {}", l1 + 16, s - l1 - 16, l1 + 16, p = sl.path);
    dmsetup(&["reload", &spare.name, "--table", &broken])?;
    dmsetup(&["resume", &spare.name])?;
    expect_eio("the write whose commit fails", write_at(&dm.path, 400 * BS, &pattern(32, 2 * BS as usize)))?;
    expect_eq("state", status_of(&dm.name, |s| s.state.name().to_string())?, "degraded".to_string())?;
    expect_eq("field 8 (remaps): block 400's durable remap published", status_of(&dm.name, |s| s.remaps)?, fill + 1)?;
    // The main device takes writes again (its failure was passing).
    dmsetup(&["reload", &main.name, "--table", &good])?;
    dmsetup(&["resume", &main.name])?;
    let a = pattern(33, BS as usize);
    write_at(&dm.path, 400 * BS, &a).context("a write to block 400, whose remap is durable")?;
    expect_data("block 400", &read_at(&dm.path, 400 * BS, BS as usize)?, &a, &[])?;
    expect_eio("a write to block 401, in doubt", write_at(&dm.path, 401 * BS, &pattern(34, BS as usize)))?;
    expect_data("block 401 (in doubt) reads the main device", &read_at(&dm.path, 401 * BS, BS as usize)?, &old, &[])?;
    drop(dm);
    dmsetup(&["reload", &spare.name, "--table", &linear])?;
    dmsetup(&["resume", &spare.name])?;
    let dm = DmDev::create("t-fc", &remap_table(n, line))?;
    expect_eq("field 8 (remaps) after re-creation", status_of(&dm.name, |s| s.remaps)?, fill + 1)?;
    expect_data("block 400 after re-creation", &read_at(&dm.path, 400 * BS, BS as usize)?, &a, &[])?;
    expect_data("block 401 after re-creation (its record never reached the spare)", &read_at(&dm.path, 401 * BS, BS as usize)?, &old, &[])?;
    let b = pattern(35, BS as usize);
    write_at(&dm.path, 401 * BS, &b).context("block 401 is writable after the reload")?;
    expect_data("block 401", &read_at(&dm.path, 401 * BS, BS as usize)?, &b, &old)?;
    Ok(())
}

/// Issue 32.3: a write to a pending block reaches the worker while the pool has room, but the
/// pool fills (a `remap` message takes its one block) before the worker runs: the write goes
/// to the main device, which takes it, instead of failing.
fn pending_write_after_pool_filled() -> Result<()> {
    let lo = LoopDev::new("pf-main", 16 * MIB)?;
    let n = 16 * MIB / 512;
    let good = format!("0 {n} linear {} 0", lo.path);
    let main = DmDev::create("t-pf-main", &bad_table(&lo.path, n, &[(20, 1)]))?;
    let g = dm_remap_logic::format::Geometry::for_pool(1, 4096, u64::MAX).context("layout")?;
    let sl = LoopDev::new("pf-spare", g.end_bytes())?;
    let ss = g.end_bytes() / 512;
    let spare = DmDev::create("t-pf-spare", &format!("0 {ss} delay {p} 0 0 {p} 0 {SPARE_WRITE_DELAY_MS}", p = sl.path))?;
    let line = LineSpec::new(&main.path, &spare.path).read_retries(1).no_scan();
    let dm = DmDev::create("t-pf", &remap_table(n, line.format()))?;
    expect_eio("reading the bad block", read_at(&dm.path, 20 * BS, BS as usize))?;
    expect_eq("field 11 (pending)", status_of(&dm.name, |s| s.pending)?, 1)?;
    dmsetup(&["reload", &main.name, "--table", &good])?;
    dmsetup(&["resume", &main.name])?;
    let a = pattern(36, BS as usize);
    while_worker_held(&dm, || {
        expect_eq("state while the pool's last block is being taken", status_of(&dm.name, |s| s.state.name().to_string())?, "maintenance".to_string())?;
        write_at(&dm.path, 20 * BS, &a).context("the write to the pending block")?;
        Ok(())
    })?;
    msg(&dm.name, &["maintenance", "off"])?;
    expect_eq("state", status_of(&dm.name, |s| s.state.name().to_string())?, "spare_full".to_string())?;
    expect_data("block 20", &read_at(&dm.path, 20 * BS, BS as usize)?, &a, &[])?;
    drop(dm);
    let dm = DmDev::create("t-pf", &remap_table(n, line))?;
    expect_data("block 20 after re-creation", &read_at(&dm.path, 20 * BS, BS as usize)?, &a, &[])?;
    Ok(())
}
