//! Errors from real drivers: a SCSI disk (`scsi_debug`, through the SCSI midlayer and sd)
//! with medium errors, timeouts and a deletion under fio; and QEMU's `blkdebug` under the
//! guest's virtio-blk and NVMe drivers (`cargo xtask test` attaches those two disks, with the
//! rules of `BLKDEBUG_RULES` in xtask/src/test.rs). Each test checks the data after the
//! fault and the policy of docs/design.md ("Errors from real drivers"), and prints one
//! `POLICY` line per error that reached dm-remap: what the table is filled from.

use crate::harness::*;
use anyhow::{bail, ensure, Context, Result};
use dm_remap_logic::args::LineSpec;

pub const TESTS: &[crate::Test] = &[
    ("real_virtio_blkdebug_errors", virtio_blkdebug),
    ("real_nvme_blkdebug_errors", nvme_blkdebug),
    ("real_scsi_medium_errors", scsi_medium),
    ("real_scsi_timeouts_then_offline", scsi_timeouts),
    ("real_scsi_host_byte_errors_follow_the_policy", scsi_host_bytes),
    ("real_scsi_disk_deleted_under_fio", scsi_deleted),
];

const MIB: u64 = 1 << 20;
const BS: u64 = 4096;
const NAME: &str = "rf";
const PATH: &str = "/dev/mapper/rf";

/// The blkdebug blocks (xtask/src/test.rs `BLKDEBUG_RULES`, sectors / 8).
const NEVER_READS: u64 = 100;
const NEVER_WRITES: u64 = 200;
const FIRST_READ_FAILS: u64 = 300;
const FIRST_WRITE_FAILS: u64 = 400;

/// The guest's block device whose serial is `serial` (virtio: /sys/block/X/serial; NVMe:
/// the controller's, /sys/block/X/device/serial).
fn disk_by_serial(serial: &str) -> Result<String> {
    for e in std::fs::read_dir("/sys/block")?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        for f in ["serial", "device/serial"] {
            if std::fs::read_to_string(format!("/sys/block/{n}/{f}")).is_ok_and(|s| s.trim() == serial) {
                return Ok(n);
            }
        }
    }
    bail!("no disk with serial {serial} (the VM attaches it: cargo xtask test)")
}

/// An error dm-remap logged: `<dev>: main device: <status> error on <op> of block <b>: <action>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: String,
    op: String,
    block: u64,
    action: String,
}

fn seen(lines: &[String]) -> Vec<Seen> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.split_once(": main device: ")?.1;
            let (status, rest) = rest.split_once(" error on ")?;
            let (op, rest) = rest.split_once(" of block ")?;
            let (block, action) = rest.split_once(": ")?;
            Some(Seen { status: status.into(), op: op.into(), block: block.parse().ok()?, action: action.into() })
        })
        .collect()
}

/// Prints the policy lines of a test, and the driver's own report of each error (the
/// kernel's `blk_print_req_error` line), for docs/design.md.
fn report(source: &str, fault: &str, lines: &[String], got: &[Seen], outcome: &str) {
    let driver: Vec<&String> = lines.iter().filter(|l| l.contains(" error, dev ")).take(2).collect();
    for s in got {
        println!("POLICY | {source} | {fault} | {} ({} of block {}) | {}; {outcome}", s.status, s.op, s.block, s.action);
    }
    if got.is_empty() {
        println!("POLICY | {source} | {fault} | (none reached dm-remap) | {outcome}");
    }
    for d in driver {
        println!("POLICY-DRIVER | {source} | {d}");
    }
}

fn spec<'a>(main: &'a str, spare: &'a str) -> LineSpec<'a> {
    // No scrub: its reads would meet the injected errors before the test does.
    LineSpec::new(main, spare).no_scan().no_proactive()
}

fn sectors(dev: &str) -> Result<u64> {
    Ok(cmd("blockdev", &["--getsz", dev])?.trim().parse()?)
}

fn write_block(block: u64, data: &[u8]) -> std::io::Result<()> {
    write_at(PATH, block * BS, data)
}

fn read_block(block: u64) -> std::io::Result<Vec<u8>> {
    read_at(PATH, block * BS, BS as usize)
}

fn expect_block(what: &str, block: u64, want: &[u8]) -> Result<()> {
    let got = read_block(block).with_context(|| format!("{what}: reading block {block}"))?;
    ensure!(got == want, "{what}: block {block} does not hold the data last written");
    Ok(())
}

/// The blkdebug disk `serial`, whose driver reports errors as `statuses`: every fault of the
/// rules, through dm-remap, then the data after re-creating the device.
fn blkdebug(serial: &str, source: &str, statuses: &[&str]) -> Result<()> {
    let disk = disk_by_serial(serial)?;
    let dev = format!("/dev/{disk}");
    let (spare, len, mut k) = rig(&dev)?;
    let dm = DmDev::create(NAME, &remap_table(len, spec(&dev, &spare.path).format()))?;
    let data = |b: u64, gen: u64| pattern(b * 1000 + gen, BS as usize);

    // A block that never takes a write: the write is rewritten once, fails again, relocated.
    write_block(NEVER_WRITES, &data(NEVER_WRITES, 1)).context("a write to a block that never takes one")?;
    expect_eq("remaps after the failing write", status_of(NAME, |s| s.remaps)?, 1)?;
    expect_block("relocated write", NEVER_WRITES, &data(NEVER_WRITES, 1))?;
    let l = k.drain();
    report(source, "write error at one sector (permanent)", &l, &seen(&l), "rewritten once, failed, relocated");
    let got = seen(&l);
    ensure!(got.iter().any(|s| s.op == "write" && s.block == NEVER_WRITES), "no logged write error on block {NEVER_WRITES}: {l:?}");
    ensure!(got.iter().all(|s| statuses.contains(&s.status.as_str())), "{source}: statuses {got:?}, expected one of {statuses:?}");

    // A block whose first write fails: the worker's rewrite takes it; nothing relocated.
    let retried = status_of(NAME, |s| s.retried_ok)?.context("no field 27")?;
    write_block(FIRST_WRITE_FAILS, &data(FIRST_WRITE_FAILS, 1)).context("a write that fails once")?;
    let l = k.drain();
    let got = seen(&l);
    let reached = got.iter().filter(|s| s.block == FIRST_WRITE_FAILS).count() as u64;
    report(source, "write error at one sector (once)", &l, &got, "rewrite succeeded: nothing relocated, counted (field 27)");
    expect_eq("remaps after a one-shot write error", status_of(NAME, |s| s.remaps)?, 1)?;
    expect_eq("field 27 after a one-shot write error", status_of(NAME, |s| s.retried_ok)?, Some(retried + reached))?;
    expect_block("write that failed once", FIRST_WRITE_FAILS, &data(FIRST_WRITE_FAILS, 1))?;

    // A block whose first read fails: the worker's retry reads it; the data is right.
    write_block(FIRST_READ_FAILS, &data(FIRST_READ_FAILS, 1))?;
    let retried = status_of(NAME, |s| s.retried_ok)?.context("no field 27")?;
    expect_block("read that fails once", FIRST_READ_FAILS, &data(FIRST_READ_FAILS, 1))?;
    let l = k.drain();
    let got = seen(&l);
    let reached = got.iter().filter(|s| s.block == FIRST_READ_FAILS).count() as u64;
    report(source, "read error at one sector (once)", &l, &got, "retry read it: data returned, counted (field 27)");
    expect_eq("field 27 after a one-shot read error", status_of(NAME, |s| s.retried_ok)?, Some(retried + reached))?;
    expect_eq("remaps after a one-shot read error (no_proactive)", status_of(NAME, |s| s.remaps)?, 1)?;

    // A block that never reads: EIO to the reader, listed; the next write relocates it.
    write_block(NEVER_READS, &data(NEVER_READS, 1))?;
    ensure!(read_block(NEVER_READS).is_err(), "a block that never reads was read");
    expect_eq("pending after an unreadable block", status_of(NAME, |s| s.pending)?, 1)?;
    write_block(NEVER_READS, &data(NEVER_READS, 2)).context("rewriting the unreadable block")?;
    expect_eq("remaps after rewriting it", status_of(NAME, |s| s.remaps)?, 2)?;
    expect_block("rewritten unreadable block", NEVER_READS, &data(NEVER_READS, 2))?;
    let l = k.drain();
    let got = seen(&l);
    report(source, "read error at one sector (permanent)", &l, &got, "retries failed: EIO, listed; the next write relocated it");
    ensure!(got.iter().any(|s| s.op == "read" && s.block == NEVER_READS), "no logged read error on block {NEVER_READS}: {l:?}");
    ensure!(got.iter().all(|s| statuses.contains(&s.status.as_str())), "{source}: statuses {got:?}, expected one of {statuses:?}");

    // After the device is re-created from the spare's metadata, every block holds its data.
    drop(dm);
    let _dm = DmDev::create(NAME, &remap_table(len, spec(&dev, &spare.path)))?;
    for (b, gen) in [(NEVER_WRITES, 1), (FIRST_WRITE_FAILS, 1), (FIRST_READ_FAILS, 1), (NEVER_READS, 2)] {
        expect_block("after re-creation", b, &data(b, gen))?;
    }
    expect_eq("remaps after re-creation", status_of(NAME, |s| s.remaps)?, 2)?;
    Ok(())
}

/// virtio-blk has one error status for the guest (`VIRTIO_BLK_S_IOERR`): BLK_STS_IOERR.
fn virtio_blkdebug() -> Result<()> {
    blkdebug("dmrfv", "virtio-blk + blkdebug EIO", &["I/O"])
}

/// QEMU's NVMe controller fails a read as Unrecovered Read Error and a write as Write Fault;
/// Linux's nvme driver maps both to BLK_STS_MEDIUM.
fn nvme_blkdebug() -> Result<()> {
    blkdebug("dmrfn", "NVMe + blkdebug EIO", &["critical medium"])
}

/// A scsi_debug disk of `mb` MiB: the module loaded with `params` (insmod of the test
/// kernel's module, or the distro's modprobe), unloaded on drop.
struct ScsiDebug {
    /// `sdX`.
    disk: String,
    /// `h:c:t:l`, the name of its debugfs directory.
    hctl: String,
}

const SDEBUG_PARAMS: &str = "/sys/module/scsi_debug/parameters";

impl ScsiDebug {
    fn new(mb: u64) -> Result<Self> {
        let size = format!("dev_size_mb={mb}");
        // delay=0: commands complete at once (no jiffy of latency each).
        let args = [size.as_str(), "delay=0", "num_tgts=1", "max_luns=1"];
        let ko = "/ondemand/scsi_debug.ko";
        let r = if std::path::Path::new(ko).exists() {
            // What it needs first, in order (already loaded after an earlier test: EEXIST).
            for dep in ["crct10dif_common", "crct10dif_generic", "crc-t10dif"] {
                let _ = cmd("insmod", &[&format!("/ondemand/{dep}.ko")]);
            }
            let mut a = vec![ko];
            a.extend_from_slice(&args);
            cmd("insmod", &a)
        } else {
            let mut a = vec!["scsi_debug"];
            a.extend_from_slice(&args);
            cmd("modprobe", &a)
        };
        r.context("loading scsi_debug")?;
        let mut found = None;
        wait_for(20, "scsi_debug's disk", || {
            for e in std::fs::read_dir("/sys/block")?.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("sd") && std::fs::read_to_string(format!("/sys/block/{n}/device/model")).is_ok_and(|m| m.trim() == "scsi_debug") {
                    found = Some(n);
                    return Ok(true);
                }
            }
            Ok(false)
        })?;
        let disk = found.context("no disk")?;
        let link = std::fs::read_link(format!("/sys/block/{disk}/device"))?;
        let hctl = link.file_name().map(|n| n.to_string_lossy().into_owned()).context("no h:c:t:l")?;
        let _ = std::fs::write(format!("/sys/block/{disk}/queue/scheduler"), "none");
        Ok(Self { disk, hctl })
    }

    fn dev(&self) -> String {
        format!("/dev/{}", self.disk)
    }

    /// Adds an error-injection rule (scsi_debug's debugfs `error` file).
    fn inject(&self, rule: &str) -> Result<()> {
        let f = format!("/sys/kernel/debug/scsi_debug/{}/error", self.hctl);
        std::fs::write(&f, rule).with_context(|| format!("writing {rule:?} to {f}"))
    }

    fn param(name: &str, v: &str) -> Result<()> {
        std::fs::write(format!("{SDEBUG_PARAMS}/{name}"), v).with_context(|| format!("scsi_debug {name}={v}"))
    }
}

impl Drop for ScsiDebug {
    fn drop(&mut self) {
        let _ = Self::param("opts", "0");
        for _ in 0..50 {
            if cmd("rmmod", &["scsi_debug"]).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        println!("warning: scsi_debug could not be unloaded");
    }
}

/// What each test here starts from, for a main disk `dev`: a 16 MiB spare, the disk's length
/// in sectors, and the kernel log from now on (what the fault made the drivers say).
fn rig(dev: &str) -> Result<(LoopDev, u64, Kmsg)> {
    let spare = LoopDev::new("rf", 16 * MIB)?;
    let len = sectors(dev)?;
    let mut k = Kmsg::open()?;
    k.drain();
    Ok((spare, len, k))
}

/// WRITE(10), the command sd uses for a small disk.
const WRITE_10: &str = "0x2a";

/// Medium errors through the SCSI midlayer: scsi_debug's unreadable LBA range (`opts` bit 2,
/// `medium_error_start/count`), and CHECK CONDITION / MEDIUM ERROR on writes through its
/// error injection (once, then twice).
fn scsi_medium() -> Result<()> {
    let sd = ScsiDebug::new(64)?;
    let dev = sd.dev();
    let (spare, len, mut k) = rig(&dev)?;
    let dm = DmDev::create(NAME, &remap_table(len, spec(&dev, &spare.path).format()))?;
    let data = |b: u64, gen: u64| pattern(b * 1000 + gen + 7, BS as usize);
    let source = "SCSI (scsi_debug)";

    // Block 50 becomes unreadable (its 8 sectors), as a disk's bad sectors.
    write_block(50, &data(50, 1))?;
    ScsiDebug::param("medium_error_start", "400")?;
    ScsiDebug::param("medium_error_count", "8")?;
    ScsiDebug::param("opts", "2")?;
    ensure!(read_block(50).is_err(), "an unreadable SCSI block was read");
    expect_eq("pending after a SCSI medium error", status_of(NAME, |s| s.pending)?, 1)?;
    write_block(50, &data(50, 2)).context("rewriting the unreadable block")?;
    expect_eq("remaps after rewriting it", status_of(NAME, |s| s.remaps)?, 1)?;
    expect_block("relocated SCSI block", 50, &data(50, 2))?;
    let l = k.drain();
    let got = seen(&l);
    report(source, "unrecovered read error (sense 3/11/00), LBA range", &l, &got, "retries failed: EIO, listed; the next write relocated it");
    ensure!(got.iter().any(|s| s.op == "read" && s.block == 50 && s.status == "critical medium"), "no critical medium read error on block 50: {got:?}");
    ScsiDebug::param("opts", "0")?;

    // The next WRITE(10) fails once with MEDIUM ERROR: the worker's rewrite takes it.
    let retried = status_of(NAME, |s| s.retried_ok)?.context("no field 27")?;
    sd.inject(&format!("2 -1 {WRITE_10} 0 0 2 3 0x11 0"))?;
    write_block(60, &data(60, 1)).context("a write that fails once")?;
    expect_eq("remaps after a one-shot SCSI write error", status_of(NAME, |s| s.remaps)?, 1)?;
    expect_eq("field 27 after it", status_of(NAME, |s| s.retried_ok)?, Some(retried + 1))?;
    let l = k.drain();
    let got = seen(&l);
    report(source, "MEDIUM ERROR on WRITE(10), once", &l, &got, "rewrite succeeded: nothing relocated, counted (field 27)");
    ensure!(got.iter().any(|s| s.op == "write" && s.block == 60 && s.status == "critical medium"), "no critical medium write error on block 60: {got:?}");

    // Twice: the write and its rewrite fail, so the block is relocated.
    sd.inject(&format!("2 -2 {WRITE_10} 0 0 2 3 0x11 0"))?;
    write_block(70, &data(70, 1)).context("a write that fails twice")?;
    expect_eq("remaps after a SCSI write error that stays", status_of(NAME, |s| s.remaps)?, 2)?;
    let l = k.drain();
    report(source, "MEDIUM ERROR on WRITE(10), twice", &l, &seen(&l), "rewrite failed: relocated");

    drop(dm);
    let _dm = DmDev::create(NAME, &remap_table(len, spec(&dev, &spare.path)))?;
    for (b, gen) in [(50, 2), (60, 1), (70, 1)] {
        expect_block("after re-creation", b, &data(b, gen))?;
    }
    Ok(())
}

/// A disk that stops answering: scsi_debug ignores WRITE(10) (its timeout injection) under a
/// 2 s command timeout. Once: the midlayer's error handler aborts and retries, the write
/// succeeds and dm-remap sees nothing. Always: sd offlines the disk after its second medium
/// access timeout and fails the write with BLK_STS_IOERR (measured: not TIMEOUT), so dm-remap
/// sees an I/O error; the data goes to the spare, and every later I/O fails at once on the
/// offline disk, so after `main_lost_after` of them the target is `main_lost`: the pool
/// loses at most that many blocks, and every write that succeeded reads back.
fn scsi_timeouts() -> Result<()> {
    const LOST_AFTER: u32 = 4;
    let sd = ScsiDebug::new(64)?;
    let dev = sd.dev();
    std::fs::write(format!("/sys/block/{}/device/timeout", sd.disk), "2")?;
    let (spare, len, mut k) = rig(&dev)?;
    let _dm = DmDev::create(NAME, &remap_table(len, spec(&dev, &spare.path).format().main_lost_after(LOST_AFTER)))?;
    let source = "SCSI (scsi_debug)";
    let free = status_of(NAME, |s| s.free)?;
    let data = |b: u64| pattern(b + 500, BS as usize);

    sd.inject(&format!("0 -1 {WRITE_10}"))?;
    write_block(80, &data(80)).context("a write whose first command timed out")?;
    expect_block("after a timed-out command", 80, &data(80))?;
    let l = k.drain();
    let got = seen(&l);
    report(source, "WRITE(10) not answered once (2 s timeout)", &l, &got, "the midlayer's abort and retry succeeded");
    ensure!(got.is_empty(), "a timeout the midlayer recovered reached dm-remap: {got:?}");
    expect_eq("pool blocks free after a recovered timeout", status_of(NAME, |s| s.free)?, free)?;

    sd.inject(&format!("0 1 {WRITE_10}"))?;
    let started = std::time::Instant::now();
    // Each write fails (the fsync at least: the offline disk takes no flush) or its data lands
    // on the spare.
    let mut tried = Vec::new();
    for b in 90..90 + 2 * u64::from(LOST_AFTER) {
        let _ = write_at(PATH, b * BS, &data(b));
        tried.push(b);
        if status_of(NAME, |s| s.state.name())? == "main_lost" {
            break;
        }
    }
    let waited = started.elapsed().as_secs();
    let l = k.drain();
    let got = seen(&l);
    let spent = free.saturating_sub(status_of(NAME, |s| s.free)?);
    report(
        source,
        "WRITE(10) never answered (2 s timeout): sd offlines the disk",
        &l,
        &got[..got.len().min(2)],
        &format!("{spent} pool blocks, then main_lost after {waited} s"),
    );
    ensure!(l.iter().any(|x| x.contains("Offlining disk")), "sd did not offline the disk: {l:?}");
    expect_eq("state after the disk went offline", status_of(NAME, |s| s.state.name())?.to_string(), "main_lost".to_string())?;
    ensure!(spent <= u64::from(LOST_AFTER), "{spent} pool blocks spent on an offline disk (bound {LOST_AFTER})");
    // The offline disk reads nothing: a block that reads is one relocated to the spare, and
    // holds exactly the data written.
    let mut on_spare = 0;
    for b in tried {
        if let Ok(got) = read_block(b) {
            ensure!(got == data(b), "block {b} reads back other data than was written");
            on_spare += 1;
        }
    }
    expect_eq("blocks readable (on the spare) vs pool blocks spent", on_spare, spent)?;
    Ok(())
}

/// SCSI host bytes the midlayer may map to non-media statuses (scsi_result_to_blk_status),
/// made by scsi_debug on WRITE(10): whatever status reaches dm-remap, it is handled by the
/// policy of docs/design.md: a media status (I/O, critical medium) is rewritten, then
/// relocated, and the write succeeds; any other goes to the caller, is counted in field 28 and
/// takes no pool block. At least one must arrive as a non-media status, so that both sides
/// of the policy are exercised.
fn scsi_host_bytes() -> Result<()> {
    let sd = ScsiDebug::new(64)?;
    let dev = sd.dev();
    let (spare, len, mut k) = rig(&dev)?;
    let _dm = DmDev::create(NAME, &remap_table(len, spec(&dev, &spare.path).format()))?;
    let cases = [
        ("0x0f", "DID_TRANSPORT_FAILFAST"),
        ("0x10", "DID_TARGET_FAILURE"),
        ("0x11", "DID_NEXUS_FAILURE"),
        ("0x12", "DID_ALLOC_FAILURE"),
    ];
    let mut non_media = 0;
    for (i, (host, what)) in cases.iter().enumerate() {
        let (other, free, remaps) = status_of(NAME, |s| (s.other_errors.unwrap_or(0), s.free, s.remaps))?;
        let b = 30 + i as u64;
        let data = pattern(b, BS as usize);
        sd.inject(&format!("2 1 {WRITE_10} {host} 0 0 0 0 0"))?;
        let r = write_block(b, &data);
        sd.inject(&format!("- 2 {WRITE_10}"))?;
        let l = k.drain();
        let got: Vec<Seen> = seen(&l).into_iter().filter(|s| s.block == b).collect();
        let first = got.first().with_context(|| format!("{what}: no error reached dm-remap: {l:?}"))?;
        let media = first.status == "I/O" || first.status == "critical medium";
        let fault = format!("WRITE(10) completed with host byte {what} (every try)");
        if media {
            report("SCSI (scsi_debug)", &fault, &l, &got[..1], "media class: rewrite failed, relocated, write succeeded");
            ensure!(r.is_ok(), "{what}: a media-class error was not relocated: {r:?}");
            expect_eq(&format!("{what}: remaps"), status_of(NAME, |s| s.remaps)?, remaps + 1)?;
            expect_block(what, b, &data)?;
        } else {
            non_media += 1;
            report("SCSI (scsi_debug)", &fault, &l, &got[..1], "passed on: to the caller, no pool block, counted (field 28)");
            ensure!(r.is_err(), "{what}: the write succeeded");
            ensure!(first.action.contains("not a media error"), "{what}: {first:?}");
            ensure!(status_of(NAME, |s| s.other_errors)?.unwrap_or(0) > other, "{what}: field 28 did not count it");
            expect_eq(&format!("{what}: pool blocks free"), status_of(NAME, |s| s.free)?, free)?;
            // The disk still takes the block once the fault is gone.
            write_block(b, &data)?;
            expect_block(what, b, &data)?;
        }
    }
    ensure!(non_media > 0, "no host byte reached dm-remap as a non-media status");
    Ok(())
}

/// The main disk deleted while fio writes: fio exits, the target goes to `main_lost` with a
/// uevent, the pool loses at most the writes in flight plus `main_lost_after`, a block already
/// on the spare still takes writes and reads, and the device can be removed.
fn scsi_deleted() -> Result<()> {
    const LOST_AFTER: u32 = 4;
    const IODEPTH: u64 = 8;
    let sd = ScsiDebug::new(64)?;
    let dev = sd.dev();
    let (spare, len, mut k) = rig(&dev)?;
    let dm = DmDev::create(NAME, &remap_table(len, spec(&dev, &spare.path).format().main_lost_after(LOST_AFTER)))?;
    // Block 10 on the spare before the disk goes.
    write_block(10, &pattern(10, BS as usize))?;
    msg(NAME, &["maintenance", "on"])?;
    msg(NAME, &["remap", "80"])?;
    msg(NAME, &["maintenance", "off"])?;
    expect_eq("remaps before the deletion", status_of(NAME, |s| s.remaps)?, 1)?;
    let events = Uevents::open()?;
    let mut fio = std::process::Command::new("fio")
        .args([
            "--name=rf", &format!("--filename={PATH}"), "--rw=randwrite", "--bs=4k", "--direct=1",
            "--ioengine=libaio", &format!("--iodepth={IODEPTH}"), "--offset=1M", "--size=48M",
            "--time_based", "--runtime=60", "--output-format=terse",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting fio")?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let free = status_of(NAME, |s| s.free)?;
    std::fs::write(format!("/sys/block/{}/device/delete", sd.disk), "1").context("deleting the disk")?;
    let st = wait_child(&mut fio, 120, "fio after the disk was deleted")?;
    ensure!(!st.success(), "fio succeeded after its disk was deleted");
    if let Err(e) = wait_for(30, "state main_lost", || Ok(status_of(NAME, |s| s.state.name())? == "main_lost")) {
        let l = k.drain();
        bail!("{e:#}; status {:?}; kernel log: {:?}", status_fields(NAME)?, &l[l.len().saturating_sub(30)..]);
    }
    let after = status_of(NAME, |s| s.free)?;
    let spent = free.saturating_sub(after);
    println!("main disk deleted under fio (iodepth {IODEPTH}, main_lost_after {LOST_AFTER}): {spent} pool blocks taken after the deletion");
    ensure!(spent <= IODEPTH + u64::from(LOST_AFTER), "the pool lost {spent} blocks to a deleted disk (bound {})", IODEPTH + u64::from(LOST_AFTER));
    let ev = events.drain(2000);
    ensure!(
        ev.iter().any(|e| e.iter().any(|f| f == "DM_REMAP_EVENT=main_lost")),
        "no main_lost uevent: {ev:?}"
    );
    // The block on the spare still works; a block of the gone disk fails and takes nothing.
    // O_DIRECT without fsync: a flush of the device also flushes the main device, which fails
    // while it is gone (docs/design.md, "A main device that is gone").
    let fresh = pattern(11, BS as usize);
    {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        let f = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(PATH)?;
        f.write_all_at(Aligned::from(&fresh).as_ref(), 10 * BS).context("writing a block on the spare after the main disk went")?;
        ensure!(f.sync_all().is_err(), "a flush succeeded with the main device gone");
    }
    expect_block("spare block after the main disk went", 10, &fresh)?;
    let before = status_of(NAME, |s| s.free)?;
    ensure!(write_block(20, &fresh).is_err(), "a write to the deleted disk succeeded");
    ensure!(read_block(20).is_err(), "a read of the deleted disk succeeded");
    expect_eq("pool blocks after a write to the lost disk", status_of(NAME, |s| s.free)?, before)?;
    let l = k.drain();
    let got = seen(&l);
    report("SCSI (scsi_debug)", "disk deleted under fio", &l, &got[..got.len().min(3)], &format!("main_lost; {spent} pool blocks taken"));
    ensure!(l.iter().any(|x| x.contains("main device lost")), "no 'main device lost' log line");
    drop(dm);
    ensure!(!dm_exists(NAME), "the device could not be removed");
    Ok(())
}
