//! Kernel fault injection (debug kernel only: CONFIG_FAILSLAB, CONFIG_FAIL_MAKE_REQUEST):
//! every allocation of the ctr fails in turn, and bios to the spare fail at random under a
//! write storm. The runner's kernel-log check and the closing kmemleak scan catch what an
//! error path forgot.

use crate::harness::*;
use anyhow::{bail, ensure, Context, Result};
use devicemapper::{DevId, DmName, DmOptions, DM};

pub const TESTS: &[crate::Test] = &[
    ("fault_failslab_each_allocation_of_the_ctr", failslab_ctr),
    ("fault_fail_make_request_on_the_spare", fail_make_request),
    ("fault_failslab_during_relocation_is_not_a_device_failure", failslab_relocation),
    ("fault_kmemleak_clean_after_unload", kmemleak_after_unload),
];

const MIB: u64 = 1 << 20;
const BS: u64 = 4096;
const DEBUGFS: &str = "/sys/kernel/debug";

/// Fails with a `SKIP:` reason (the runner reports it as skipped) unless the kernel has
/// `what` under debugfs.
fn need(what: &str) -> Result<()> {
    if !std::path::Path::new(&format!("{DEBUGFS}/{what}")).exists() {
        bail!("SKIP: needs the debug kernel (cargo xtask test --debug-kernel): no {DEBUGFS}/{what}");
    }
    Ok(())
}

fn put(path: &str, v: &str) -> Result<()> {
    std::fs::write(path, v).with_context(|| format!("write {v:?} to {path}"))
}

/// Loads the remap table into a fresh device with the `n`-th fault-injection point of this
/// thread failing; returns whether the load worked and whether the `n`-th point was reached.
/// `nth` is this thread's /proc/thread-self/fail-nth, opened beforehand: reading and writing
/// an open proc file allocates nothing, so the countdown is spent in the load alone.
fn load_failing_nth(dm: &DM, nth: &std::fs::File, name: &DmName, len: u64, params: &str, n: u32) -> Result<(bool, bool)> {
    use std::os::unix::fs::FileExt;
    let id = DevId::Name(name);
    dm.device_create(name, None, DmOptions::default())?;
    let table = vec![(0u64, len, "remap".to_string(), params.to_string())];
    nth.write_all_at(n.to_string().as_bytes(), 0)?;
    let loaded = dm.table_load(&id, &table, DmOptions::default()).is_ok();
    let mut buf = [0u8; 16];
    let got = nth.read_at(&mut buf, 0);
    nth.write_all_at(b"0", 0)?;
    let left: u32 = String::from_utf8_lossy(&buf[..got?]).trim().parse()?;
    let activated = if loaded { dm.device_suspend(&id, DmOptions::default()).map(|_| ()) } else { Ok(()) };
    dm.device_remove(&id, DmOptions::default())?;
    // Each injected failure in a slab cache's creation dumps the stack: drain them as they
    // come, or thousands of loads wrap the ring buffer before the runner reads the log.
    klog_poll();
    activated?;
    Ok((loaded, left == 0))
}

/// Every slab allocation on the table-load path (dm core and our ctr, with a spare that holds
/// remaps to replay) fails in turn: each load is refused cleanly or works, never an oops,
/// and nothing leaks (checked by the kmemleak test after unload).
fn failslab_ctr() -> Result<()> {
    need("failslab")?;
    let bad = BadMain::new("fs", 16 * MIB, &[(3, 1), (5, 1), (9, 1)])?;
    let spare = LoopDev::new("fs-spare", 4 * MIB)?;
    let len = 16 * MIB / 512;
    {
        let dm = DmDev::create("t-fs-init", &remap_table(len, LineSpec::new(&bad.path(), &spare.path).format()))?;
        for b in [3u64, 5, 9] {
            write_at(&dm.path, b * BS, &pattern(b, BS as usize))?;
        }
        expect_eq("remaps to replay", status_of(&dm.name, |s| s.remaps.to_string())?, "3".to_string())?;
    }
    // Sleeping allocations too (GFP_KERNEL is what a ctr uses), any cache.
    put(&format!("{DEBUGFS}/failslab/ignore-gfp-wait"), "N")?;
    put(&format!("{DEBUGFS}/failslab/cache-filter"), "N")?;
    // Each injected failure would print a stack trace; they are expected, not bugs.
    put(&format!("{DEBUGFS}/failslab/verbose"), "0")?;
    let dm = DM::new()?;
    let name = DmName::new("t-fs")?;
    let nth = std::fs::OpenOptions::new().read(true).write(true).open("/proc/thread-self/fail-nth")?;
    let params = format!("{} {}", bad.path(), spare.path);
    let (mut refused, mut n) = (0, 0u32);
    loop {
        n += 1;
        ensure!(n < 20_000, "the table load never ran out of allocations to fail");
        let (loaded, reached) = load_failing_nth(&dm, &nth, name, len, &params, n)?;
        if !reached {
            ensure!(loaded, "load {n} failed without an injected fault");
            break;
        }
        if !loaded {
            refused += 1;
        }
    }
    println!("    failslab: {} allocations failed in turn, {refused} loads refused, the rest worked", n - 1);
    ensure!(refused > 0, "no injected failure made the load fail");
    // A refused table line never writes to the spare: with `format` on a blank spare, every
    // load an injected failure refused leaves it blank.
    let blank = LoopDev::new("fs-blank", 4 * MIB)?;
    let bparams = format!("{} {} 1 format", bad.path(), blank.path);
    // The whole spare: a load that resumed also wrote the scrub checkpoint (at its suspend,
    // in the record area at the spare's end), and format refuses a spare whose last MiB holds
    // anything.
    let zero = vec![0u8; 4 * MIB as usize];
    let (mut refused_blank, mut n) = (0, 0u32);
    loop {
        n += 1;
        ensure!(n < 20_000, "the table load never ran out of allocations to fail");
        let (loaded, reached) = load_failing_nth(&dm, &nth, name, len, &bparams, n)?;
        if !reached {
            ensure!(loaded, "load {n} failed without an injected fault");
            break;
        }
        if loaded {
            // Loaded and resumed: formatted; blank it again for the next round.
            write_at(&blank.path, 0, &zero)?;
        } else {
            refused_blank += 1;
            ensure!(read_at(&blank.path, 0, zero.len())? == zero, "load {n} was refused but wrote to the blank spare");
        }
    }
    println!("    failslab, blank spare with format: {refused_blank} loads refused, none wrote to the spare");
    // And the spare is intact after all that.
    let d = DmDev::create("t-fs-after", &format!("0 {len} {}", format_args!("remap {params}")))?;
    for b in [3u64, 5, 9] {
        expect_eq("relocated block", read_at(&d.path, b * BS, BS as usize)?, pattern(b, BS as usize))?;
    }
    Ok(())
}

/// For n = 1, 2, ... the n-th slab allocation of a `remap` message fails (in the message
/// ioctl, so in the relocation it runs: reading, writing the pool block, committing,
/// publishing), until a message runs out of allocations to fail: each message moves its
/// block or is refused, the target stays operational (no memory is not a failed device),
/// and every block reads its data.
fn failslab_relocation() -> Result<()> {
    need("failslab")?;
    let lo = LoopDev::new("fr", 16 * MIB)?;
    let spare = LoopDev::new("fr-spare", 4 * MIB)?;
    let len = 16 * MIB / 512;
    let dmn = DmDev::create("t-fr", &remap_table(len, LineSpec::new(&lo.path, &spare.path).format()))?;
    dmsetup(&["message", &dmn.name, "0", "maintenance", "on"])?;
    put(&format!("{DEBUGFS}/failslab/ignore-gfp-wait"), "N")?;
    put(&format!("{DEBUGFS}/failslab/cache-filter"), "N")?;
    put(&format!("{DEBUGFS}/failslab/verbose"), "0")?;
    let dm = DM::new()?;
    let name = DmName::new("t-fr")?;
    let id = DevId::Name(name);
    let nth = std::fs::OpenOptions::new().read(true).write(true).open("/proc/thread-self/fail-nth")?;
    use std::os::unix::fs::FileExt;
    let (mut moved, mut refused, mut n, mut b) = (0, 0, 0u32, 100u64);
    let mut blocks = Vec::new();
    loop {
        n += 1;
        ensure!(n < 5_000, "the remap message never ran out of allocations to fail");
        write_at(&lo.path, b * BS, &pattern(b + 500, BS as usize))?;
        nth.write_all_at(n.to_string().as_bytes(), 0)?;
        let r = dm.target_msg(&id, Some(0), &format!("remap {}", b * 8));
        let mut buf = [0u8; 16];
        let got = nth.read_at(&mut buf, 0);
        nth.write_all_at(b"0", 0)?;
        let left: u32 = String::from_utf8_lossy(&buf[..got?]).trim().parse()?;
        klog_poll();
        let state = status_of(&dmn.name, |s| s.state.name().to_string())?;
        ensure!(state == "maintenance", "after failing allocation {n} of a remap: state {state}");
        match r {
            Ok(_) => {
                moved += 1;
                blocks.push(b);
                b += 3;
            }
            Err(_) => refused += 1,
        }
        if left != 0 {
            ensure!(r_ok(&blocks, b), "unreachable");
            break; // the n-th allocation was never reached: a message that failed nothing
        }
    }
    println!("    failslab in relocation: {} allocations failed in turn, {moved} blocks moved, {refused} refused", n - 1);
    ensure!(refused > 0, "no injected failure made a relocation fail");
    dmsetup(&["message", &dmn.name, "0", "maintenance", "off"])?;
    expect_eq("state", status_of(&dmn.name, |s| s.state.name().to_string())?, "operational".to_string())?;
    for &blk in &blocks {
        expect_eq(&format!("block {blk}"), read_at(&dmn.path, blk * BS, BS as usize)? == pattern(blk + 500, BS as usize), true)?;
    }
    Ok(())
}

/// Whether the last message (the one that failed nothing) moved its block.
fn r_ok(blocks: &[u64], next: u64) -> bool {
    blocks.last().is_some_and(|&l| l + 3 == next)
}

/// Bios to the spare fail at random (fail_make_request, 10%) while bad blocks are written:
/// each write is acknowledged or gets EIO; the target degrades instead of hanging; after the
/// spare is healthy again and the table reloaded, every acknowledged write is there.
fn fail_make_request() -> Result<()> {
    need("fail_make_request")?;
    const ROUNDS: u64 = 20;
    const PER_ROUND: u64 = 10;
    let bad: Vec<(u64, u64)> = (0..ROUNDS * PER_ROUND).map(|i| (i * 2 + 1, 1)).collect();
    let main = BadMain::new("fm", 16 * MIB, &bad)?;
    let spare = LoopDev::new("fm-spare", 4 * MIB)?;
    let len = 16 * MIB / 512;
    let table = remap_table(len, LineSpec::new(&main.path(), &spare.path).format());
    let dm = DmDev::create("t-fm", &table)?;
    let fr = format!("{DEBUGFS}/fail_make_request");
    let disk = format!("/sys/block/{}/make-it-fail", spare.path.trim_start_matches("/dev/"));
    put(&format!("{fr}/interval"), "1")?;
    put(&format!("{fr}/times"), "-1")?;
    put(&format!("{fr}/verbose"), "0")?;
    put(&format!("{fr}/task-filter"), "N")?;
    let mut acked = Vec::new();
    let (mut eio, mut recoveries) = (0, 0);
    let result = (|| -> Result<()> {
        for round in 0..ROUNDS {
            put(&format!("{fr}/probability"), "10")?;
            put(&disk, "1")?;
            for &(b, _) in &bad[(round * PER_ROUND) as usize..((round + 1) * PER_ROUND) as usize] {
                match write_at(&dm.path, b * BS, &pattern(b + 1000, BS as usize)) {
                    Ok(()) => acked.push(b),
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => eio += 1,
                    Err(e) => bail!("write of block {b}: {e}"),
                }
            }
            put(&disk, "0")?;
            put(&format!("{fr}/probability"), "0")?;
            if status_of(&dm.name, |s| s.state.name() != "operational")? {
                dmsetup(&["reload", &dm.name, "--table", &table])?;
                dmsetup(&["resume", &dm.name])?;
                recoveries += 1;
            }
        }
        Ok(())
    })();
    let _ = put(&disk, "0");
    let _ = put(&format!("{fr}/probability"), "0");
    result?;
    println!("    fail_make_request: {} writes acknowledged, {eio} EIO, {recoveries} recoveries by reload", acked.len());
    ensure!(eio > 0, "no injected failure reached a write");
    dmsetup(&["reload", &dm.name, "--table", &table])?;
    dmsetup(&["resume", &dm.name])?;
    expect_eq("state", status_of(&dm.name, |s| s.state.name().to_string())?, "operational".to_string())?;
    for &b in &acked {
        expect_eq(&format!("acknowledged block {b}"), read_at(&dm.path, b * BS, BS as usize)?, pattern(b + 1000, BS as usize))?;
    }
    Ok(())
}

/// After the module is unloaded, kmemleak finds nothing unreferenced that it allocated (the
/// scan runs twice: kmemleak reports an object only when two scans agree).
fn kmemleak_after_unload() -> Result<()> {
    need("kmemleak")?;
    let k = format!("{DEBUGFS}/kmemleak");
    // Exercise the module once more so every path above has had its chance to leak.
    {
        let bad = BadMain::new("kl", 16 * MIB, &[(1, 1)])?;
        let spare = LoopDev::new("kl-spare", 4 * MIB)?;
        let dm = DmDev::create("t-kl", &remap_table(16 * MIB / 512, LineSpec::new(&bad.path(), &spare.path).format()))?;
        write_at(&dm.path, BS, &pattern(1, BS as usize))?;
        dmsetup(&["message", &dm.name, "0", "scan", "start"])?;
    }
    // Scanned while the module is loaded (its frames have names), then after unload (its
    // frames are bare addresses in module space).
    let scan = || -> Result<String> {
        for _ in 0..2 {
            put(&k, "scan")?;
        }
        Ok(std::fs::read_to_string(&k)?)
    };
    let loaded = scan()?;
    cmd("rmmod", &["dm_remap"])?;
    let unloaded = scan();
    cmd("insmod", &["/dm-remap.ko"])?;
    let unloaded = unloaded?;
    // Only leaks allocated by dm-remap count: the rest of the kernel (boot, upstream targets)
    // is not ours to judge here. Everything else in this kernel is built in, so an unnamed
    // module-space frame (0xffffffffc...) is ours.
    let ours = |report: &str| -> Vec<String> {
        report
            .split("unreferenced object")
            .filter(|r| r.contains("dm_remap") || r.contains("0xffffffffc"))
            .map(|r| r.trim().to_string())
            .collect()
    };
    let mut leaks = ours(&loaded);
    leaks.extend(ours(&unloaded));
    ensure!(leaks.is_empty(), "kmemleak: {} leaks from dm-remap:\n{}", leaks.len(), leaks.join("\n---\n"));
    // The others, by the first six callers of the allocator in their backtrace, for the
    // record.
    let mut elsewhere: std::collections::BTreeMap<String, usize> = Default::default();
    for r in unloaded.split("unreferenced object").skip(1) {
        let frames: Vec<&str> = r
            .lines()
            .skip_while(|l| !l.contains("backtrace"))
            .skip(1)
            .filter_map(|l| l.split_whitespace().last()?.split('+').next())
            .filter(|f| !["kmalloc", "kmem_cache", "kmemleak", "kvmalloc", "krealloc", "kstrdup", "kmemdup", "kasprintf", "kvasprintf"].iter().any(|a| f.contains(a)))
            .take(6)
            .collect();
        *elsewhere.entry(frames.join("<")).or_default() += 1;
    }
    println!("    kmemleak: 0 leaks from dm-remap; elsewhere in the kernel: {elsewhere:?}");
    Ok(())
}
