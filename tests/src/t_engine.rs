//! The remap engine: relocation of failed writes, pending blocks, spare exhaustion, flushes,
//! persistence, and refusal of bad metadata.

use crate::harness::*;
use anyhow::{bail, ensure, Context, Result};
use dm_remap_logic::format::{log_decode, log_entry, Geometry, Superblock, META_BLOCK};

pub const TESTS: &[crate::Test] = &[
    ("engine_write_error_relocates", write_error_relocates),
    ("engine_multiblock_write_relocates_only_bad_block", multiblock_write),
    ("engine_read_error_pending_then_write_relocates", read_error_pending),
    ("engine_spare_full", spare_full),
    ("engine_flush_reaches_spare", flush_reaches_spare),
    ("engine_persists_suspend_reload_recreate", persists),
    ("engine_bad_metadata_refused", bad_metadata),
    ("engine_reload_keeps_commits_made_after_its_ctr", reload_race),
    ("engine_reload_keeps_commits_across_log_blocks", reload_race_blocks),
    ("engine_spare_failure_degrades", spare_failure),
    ("engine_discard_and_zeroes_follow_remaps", discard_and_zeroes),
    ("engine_error_storm_fio_verify", error_storm_verify),
    ("engine_non_media_error_passes_through", non_media_error),
];

/// Tests that span the reboot between `cargo xtask test`'s two boots.
pub const REBOOT_TESTS: &[crate::RebootTest] = &[("engine_persists_reboot", reboot_before, reboot_after)];

const MIB: u64 = 1 << 20;
const BS: u64 = 4096;

/// Checks fields 8 (remaps), 9 (pool blocks), 10 (free), 11 (pending), 15 (metadata seq) and
/// 26 (state) of the status line.
fn expect_status(name: &str, want: &[String]) -> Result<()> {
    let got: Vec<String> = status_of(name, |s| {
        [s.remaps, s.pool_blocks, s.free, s.pending, s.seq].iter().map(u64::to_string).chain([s.state.name().to_string()]).collect()
    })?;
    expect_eq(&format!("dmsetup status {name} (fields 8 9 10 11 15 26)"), got, want.to_vec())
}

/// Expected fields 8, 9, 10, 11, 15, 26.
fn st(remaps: u64, pool: u64, free: u64, pending: u64, seq: u64, state: &str) -> Vec<String> {
    [remaps.to_string(), pool.to_string(), free.to_string(), pending.to_string(), seq.to_string(), state.into()].to_vec()
}

fn read_block(spare: &str, g: &Geometry, pool_block: u64) -> Result<Vec<u8>> {
    Ok(read_at(spare, (g.pool_start + pool_block * 8) * 512, BS as usize)?)
}

/// A write to a bad block succeeds, reads back, sits in the pool where the log says, and
/// the bad block is never touched again.
fn write_error_relocates() -> Result<()> {
    let bad = BadMain::new("wr", 16 * MIB, &[(10, 1)])?;
    let spare = LoopDev::new("wr-spare", 4 * MIB)?;
    let g = geometry(4 * MIB)?;
    let n = 16 * MIB / 512;
    let dm = DmDev::create("t-wr", &remap_table(n, LineSpec::new(&bad.path(), &spare.path).format()))?;
    expect_status(&dm.name, &st(0, g.pool_blocks, g.pool_blocks, 0, 0, "operational"))?;
    let a = pattern(10, BS as usize);
    write_at(&dm.path, 10 * BS, &a).context("write to the bad block")?;
    expect_status(&dm.name, &st(1, g.pool_blocks, g.pool_blocks - 1, 0, 1, "operational"))?;
    expect_eq("read back through the target", read_at(&dm.path, 10 * BS, BS as usize)?, a.clone())?;
    expect_eq("data in pool block 0", read_block(&spare.path, &g, 0)?, a)?;

    // The log on the spare, decoded by the host-side format code: one entry, 10 -> 0.
    let sbs = read_at(&spare.path, 0, META_BLOCK)?;
    let sb = Superblock::decode(sbs.as_slice().try_into()?).map_err(|e| anyhow::anyhow!("superblock: {e:?}"))?;
    let slot = read_at(&spare.path, Geometry::log_slot_sector(0, 0) * 512, META_BLOCK)?;
    let slot: &[u8; META_BLOCK] = slot.as_slice().try_into()?;
    let h = log_decode(slot, &sb, 0).map_err(|e| anyhow::anyhow!("log: {e:?}"))?;
    let entries: Vec<(u64, u64)> = (0..h.count as usize).map(|i| log_entry(slot, i)).map(|r| (r.main, r.spare)).collect();
    expect_eq("log entries", entries, vec![(10, 0)])?;

    // Rewrite and reread the block: the main device sees none of it; the same pool block
    // is reused.
    let main_blk = dm_blkdev(&bad.dm.name)?;
    let before = io_counts(&main_blk)?;
    let b = pattern(11, BS as usize);
    write_at(&dm.path, 10 * BS, &b)?;
    expect_eq("reread", read_at(&dm.path, 10 * BS, BS as usize)?, b.clone())?;
    expect_eq("main device I/O counts", io_counts(&main_blk)?, before)?;
    expect_eq("pool block 0 rewritten", read_block(&spare.path, &g, 0)?, b)?;
    expect_status(&dm.name, &st(1, g.pool_blocks, g.pool_blocks - 1, 0, 1, "operational"))?;

    // Neighbours still live on the main device.
    let c = pattern(12, BS as usize);
    write_at(&dm.path, 11 * BS, &c)?;
    expect_eq("neighbour on the main device", read_at(&bad.lo.path, 11 * BS, BS as usize)?, c)?;
    Ok(())
}

/// A multi-block write over one bad block: the good blocks are rewritten in place, only the
/// bad one is relocated, and the whole write reads back.
fn multiblock_write() -> Result<()> {
    let bad = BadMain::new("mb", 16 * MIB, &[(10, 1)])?;
    let spare = LoopDev::new("mb-spare", 4 * MIB)?;
    let g = geometry(4 * MIB)?;
    let dm = DmDev::create("t-mb", &remap_table(16 * MIB / 512, LineSpec::new(&bad.path(), &spare.path).format()))?;
    let data = pattern(20, 5 * BS as usize);
    write_at(&dm.path, 8 * BS, &data)?;
    expect_status(&dm.name, &st(1, g.pool_blocks, g.pool_blocks - 1, 0, 1, "operational"))?;
    expect_eq("read back", read_at(&dm.path, 8 * BS, data.len())?, data.clone())?;
    expect_eq("pool block 0 holds block 10", read_block(&spare.path, &g, 0)?, data[2 * BS as usize..3 * BS as usize].to_vec())?;
    expect_eq("block 9 on main", read_at(&bad.lo.path, 9 * BS, BS as usize)?, data[BS as usize..2 * BS as usize].to_vec())?;
    Ok(())
}

/// A read error returns EIO and marks the block pending; the next write relocates it
/// without touching the main device.
fn read_error_pending() -> Result<()> {
    let lo = LoopDev::new("rd", 16 * MIB)?;
    let n = 16 * MIB / 512;
    let dust = DmDev::create("t-rd-dust", &format!("0 {n} dust {} 0 4096", lo.path))?;
    dmsetup(&["message", &dust.name, "0", "addbadblock", "20"])?;
    dmsetup(&["message", &dust.name, "0", "enable"])?;
    let spare = LoopDev::new("rd-spare", 4 * MIB)?;
    let g = geometry(4 * MIB)?;
    let dm = DmDev::create("t-rd", &remap_table(n, LineSpec::new(&dust.path, &spare.path).format().read_retries(1)))?;
    match read_at(&dm.path, 20 * BS, BS as usize) {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
        other => bail!("reading the bad block: expected EIO, got {other:?}"),
    }
    expect_status(&dm.name, &st(0, g.pool_blocks, g.pool_blocks, 1, 0, "operational"))?;
    ensure!(read_at(&dm.path, 21 * BS, BS as usize).is_ok(), "block 21 must read");
    let a = pattern(30, BS as usize);
    write_at(&dm.path, 20 * BS, &a)?;
    expect_status(&dm.name, &st(1, g.pool_blocks, g.pool_blocks - 1, 0, 1, "operational"))?;
    expect_eq("read back", read_at(&dm.path, 20 * BS, BS as usize)?, a.clone())?;
    expect_eq("in the pool", read_block(&spare.path, &g, 0)?, a)?;
    // dm-dust forgets a bad block when it is written: still bad means the write went to the
    // spare, not to the main device.
    let count = dmsetup(&["message", &dust.name, "0", "countbadblocks"])?;
    ensure!(count.contains("1 badblock"), "dust says {count:?}: the main device was written");
    Ok(())
}

/// A pool of 10 blocks: 10 relocations succeed, the 11th write fails with EIO, the state is
/// spare_full, and an event was raised.
fn spare_full() -> Result<()> {
    let g = Geometry::for_pool(10, 4096, u64::MAX).context("layout")?;
    // The pool, then the record area a new spare gets after it (docs/format.md).
    let spare_bytes = g.end_bytes() + dm_remap_logic::format::RECORDS_BYTES;
    expect_eq("pool of the sized spare", geometry(spare_bytes)?.pool_blocks, 10)?;
    let bad = BadMain::new("full", 16 * MIB, &[(100, 12)])?;
    let spare = LoopDev::new("full-spare", spare_bytes)?;
    let dm = DmDev::create("t-full", &remap_table(16 * MIB / 512, LineSpec::new(&bad.path(), &spare.path).format()))?;
    let ev0 = event_nr(&dm.name)?;
    for b in 100..110 {
        write_at(&dm.path, b * BS, &pattern(b, BS as usize)).with_context(|| format!("block {b}"))?;
    }
    expect_status(&dm.name, &st(10, 10, 0, 0, 10, "spare_full"))?;
    match write_at(&dm.path, 110 * BS, &pattern(110, BS as usize)) {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
        other => bail!("write with the pool full: expected EIO, got {other:?}"),
    }
    ensure!(event_nr(&dm.name)? > ev0, "no dm event when the spare filled up");
    for b in 100..110 {
        expect_eq(&format!("block {b}"), read_at(&dm.path, b * BS, BS as usize)?, pattern(b, BS as usize))?;
    }
    Ok(())
}

/// dm-log-writes entries: (flags, nr_sectors, mark text).
fn log_entries(log: &str) -> Result<Vec<(u64, u64, String)>> {
    Ok(log_writes_entries(log)?.into_iter().map(|e| (e.flags, e.nr, e.mark)).collect())
}

/// fsync through the target sends a flush to the spare too (dm-log-writes on the spare
/// records it).
fn flush_reaches_spare() -> Result<()> {
    let main = LoopDev::new("fl-main", 16 * MIB)?;
    let sdata = LoopDev::new("fl-sdata", 4 * MIB)?;
    let slog = LoopDev::new("fl-slog", 16 * MIB)?;
    let lw = DmDev::create("t-fl-lw", &format!("0 {} log-writes {} {}", 4 * MIB / 512, sdata.path, slog.path))?;
    let dm = DmDev::create("t-fl", &remap_table(16 * MIB / 512, LineSpec::new(&main.path, &lw.path).format()))?;
    dmsetup(&["message", &lw.name, "0", "mark", "before"])?;
    write_at(&dm.path, 0, &pattern(40, BS as usize))?; // O_DIRECT write, then fsync
    dmsetup(&["message", &lw.name, "0", "mark", "after"])?;
    let entries = log_entries(&slog.path)?;
    let pos = |m: &str| entries.iter().position(|e| e.2.starts_with(m));
    let (b, a) = (pos("before").context("mark before")?, pos("after").context("mark after")?);
    let flushes = entries[b..a].iter().filter(|e| e.0 & 1 != 0 && e.1 == 0).count();
    ensure!(flushes >= 1, "no empty flush reached the spare between the marks: {:?}", &entries[b..=a]);
    let writes = entries[b..a].iter().filter(|e| e.1 > 0).count();
    expect_eq("data writes to the spare (none: nothing was relocated)", writes, 0)?;
    Ok(())
}

/// Remaps survive suspend/resume, a table reload, and remove + create (with and without
/// `format`, which never overwrites valid metadata).
fn persists() -> Result<()> {
    let bad = BadMain::new("per", 16 * MIB, &[(5, 1)])?;
    let spare = LoopDev::new("per-spare", 4 * MIB)?;
    let g = geometry(4 * MIB)?;
    let n = 16 * MIB / 512;
    let table = remap_table(n, LineSpec::new(&bad.path(), &spare.path).format());
    let a = pattern(50, BS as usize);
    let check = |name: &str, what: &str| -> Result<()> {
        expect_eq(what, read_at(&format!("/dev/mapper/{name}"), 5 * BS, BS as usize)?, a.clone())?;
        expect_status(name, &st(1, g.pool_blocks, g.pool_blocks - 1, 0, 1, "operational"))
    };
    {
        let dm = DmDev::create("t-per", &table)?;
        write_at(&dm.path, 5 * BS, &a)?;
        check(&dm.name, "after relocation")?;
        dmsetup(&["suspend", &dm.name])?;
        dmsetup(&["resume", &dm.name])?;
        check(&dm.name, "after suspend/resume")?;
        dmsetup(&["reload", &dm.name, "--table", &table])?;
        dmsetup(&["resume", &dm.name])?;
        check(&dm.name, "after table reload")?;
    }
    {
        let dm = DmDev::create("t-per", &remap_table(n, LineSpec::new(&bad.path(), &spare.path)))?;
        check(&dm.name, "after remove + create")?;
    }
    let dm = DmDev::create("t-per", &table)?;
    check(&dm.name, "after remove + create with format")?;
    Ok(())
}

/// Metadata that does not fit is refused with its reason, and never overwritten.
fn bad_metadata() -> Result<()> {
    let main = LoopDev::new("bm-main", 16 * MIB)?;
    let spare = LoopDev::new("bm-spare", 4 * MIB)?;
    let n = 16 * MIB / 512;
    let (m, s) = (main.path.as_str(), spare.path.as_str());
    drop(DmDev::create("t-bm", &remap_table(n, LineSpec::new(&m, &s).format()))?);
    let original = read_at(s, 0, 2 * META_BLOCK)?;
    let mut kmsg = Kmsg::open()?;
    let mut refused = |table: String, want: &str| -> Result<()> {
        kmsg.drain();
        cmd_fails("dmsetup", &["create", "t-bm", "--table", &table])?;
        let log = kmsg.drain();
        ensure!(log.iter().any(|l| l.contains(want)), "{table:?}: kernel log lacks {want:?}: {log:?}");
        ensure!(!dm_exists("t-bm"), "{table:?}: device left behind");
        Ok(())
    };
    refused(remap_table(n / 2, LineSpec::new(&m, &s).format()), "Spare metadata belongs to another main device (length differs)")?;
    refused(remap_table(n, LineSpec::new(m, s).block_size(8192)), "Spare metadata was formatted with another block_size")?;
    // One corrupt copy is survivable...
    let mut sb = original.clone();
    sb[100] ^= 0xff;
    write_at(s, 0, &sb)?;
    drop(DmDev::create("t-bm", &remap_table(n, LineSpec::new(&m, &s)))?);
    // ...both are not, even with `format`.
    sb[META_BLOCK + 100] ^= 0xff;
    write_at(s, 0, &sb)?;
    refused(remap_table(n, LineSpec::new(&m, &s).format()), "Spare metadata is corrupt in every copy")?;
    expect_eq("corrupt superblocks left as they were", read_at(s, 0, 2 * META_BLOCK)?, sb)?;
    let tiny = LoopDev::new("bm-tiny", 16384)?;
    refused(remap_table(n, LineSpec::new(&m, &tiny.path).format()), "Spare device too small for metadata and one spare block")?;
    Ok(())
}

/// The persistent disk's layout: main (32 MiB, block 7 bad) then spare (4 MiB).
/// Returned in creation order; bind them in that order so they drop (are removed) in reverse.
fn reboot_devices(format: bool) -> Result<(DmDev, DmDev, DmDev)> {
    let vda = "/dev/vda";
    ensure!(std::path::Path::new(vda).exists(), "no persistent disk /dev/vda (run through `cargo xtask test`)");
    let main = bad_device("rb-main", vda, 32 * MIB / 512, &[(7, 1)])?;
    let spare = DmDev::create("rb-spare", &format!("0 {} linear {vda} {}", 4 * MIB / 512, 32 * MIB / 512))?;
    let f = if format { " 1 format" } else { "" };
    let dm = DmDev::create("rb", &format!("0 {} remap {} {}{f}", 32 * MIB / 512, main.path, spare.path))?;
    Ok((main, spare, dm))
}

fn reboot_before() -> Result<()> {
    let (_main, _spare, dm) = reboot_devices(true)?;
    write_at(&dm.path, 7 * BS, &pattern(70, BS as usize))?;
    write_at(&dm.path, 8 * BS, &pattern(80, BS as usize))?;
    let g = geometry(4 * MIB)?;
    expect_status(&dm.name, &st(1, g.pool_blocks, g.pool_blocks - 1, 0, 1, "operational"))
}

fn reboot_after() -> Result<()> {
    // No `format`: the spare must carry its metadata across the reboot.
    let (_main, _spare, dm) = reboot_devices(false)?;
    let g = geometry(4 * MIB)?;
    expect_status(&dm.name, &st(1, g.pool_blocks, g.pool_blocks - 1, 0, 1, "operational"))?;
    expect_eq("relocated block after reboot", read_at(&dm.path, 7 * BS, BS as usize)?, pattern(70, BS as usize))?;
    expect_eq("main-device block after reboot", read_at(&dm.path, 8 * BS, BS as usize)?, pattern(80, BS as usize))
}

/// The spare failing under the target: reads of relocated blocks fail, the state is
/// degraded (with an event), no relocation is attempted, nothing hangs or oopses; with the
/// spare back and the table reloaded, all is well again.
fn spare_failure() -> Result<()> {
    let bad = BadMain::new("sf", 16 * MIB, &[(10, 1), (20, 1)])?;
    let sl = LoopDev::new("sf-spare", 4 * MIB)?;
    let sectors = 4 * MIB / 512;
    let linear = format!("0 {sectors} linear {} 0", sl.path);
    let spare = DmDev::create("t-sf-spare", &linear)?;
    let n = 16 * MIB / 512;
    let table = remap_table(n, LineSpec::new(&bad.path(), &spare.path).format());
    let dm = DmDev::create("t-sf", &table)?;
    let a = pattern(60, BS as usize);
    write_at(&dm.path, 10 * BS, &a)?;
    let ev0 = event_nr(&dm.name)?;
    // The spare dies.
    dmsetup(&["reload", &spare.name, "--table", &format!("0 {sectors} error")])?;
    dmsetup(&["resume", &spare.name])?;
    match read_at(&dm.path, 10 * BS, BS as usize) {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
        other => bail!("reading a relocated block from a dead spare: expected EIO, got {other:?}"),
    }
    ensure!(status_of(&dm.name, |s| s.state.name() == "degraded")?, "state not degraded");
    ensure!(event_nr(&dm.name)? > ev0, "no event on degradation");
    match write_at(&dm.path, 20 * BS, &a) {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
        other => bail!("write to a bad block while degraded: expected EIO, got {other:?}"),
    }
    expect_eq("good blocks still work", { write_at(&dm.path, 30 * BS, &a)?; read_at(&dm.path, 30 * BS, BS as usize)? }, a.clone())?;
    // The spare comes back; a table reload brings the target back.
    dmsetup(&["reload", &spare.name, "--table", &linear])?;
    dmsetup(&["resume", &spare.name])?;
    dmsetup(&["reload", &dm.name, "--table", &table])?;
    dmsetup(&["resume", &dm.name])?;
    ensure!(status_of(&dm.name, |s| s.state.name() == "operational")?, "not operational after reload");
    expect_eq("relocated block after recovery", read_at(&dm.path, 10 * BS, BS as usize)?, a)?;
    Ok(())
}

/// Discard and write-zeroes over a remapped block act on its pool block, not on the bad
/// block of the main device.
fn discard_and_zeroes() -> Result<()> {
    let spare = LoopDev::new("dz-spare", 4 * MIB)?;
    let g = geometry(4 * MIB)?;
    let n = 16 * MIB / 512;
    let a = pattern(70, BS as usize);
    let lo = {
        // Relocate block 10 through a main device where it is bad...
        let bad = BadMain::new("dz", 16 * MIB, &[(10, 1)])?;
        let dm = DmDev::create("t-dz", &remap_table(n, LineSpec::new(&bad.path(), &spare.path).format()))?;
        write_at(&dm.path, 10 * BS, &a)?;
        drop(dm);
        let BadMain { dm: composite, lo } = bad;
        drop(composite);
        lo
    };
    // ...then use the plain loop device (which supports discard and write-zeroes) as main.
    let old = pattern(71, BS as usize);
    write_at(&lo.path, 10 * BS, &old)?;
    let dm = DmDev::create("t-dz", &remap_table(n, LineSpec::new(&lo.path, &spare.path)))?;
    let ones = vec![0xffu8; 3 * BS as usize];
    write_at(&dm.path, 9 * BS, &ones)?;
    cmd("blkdiscard", &["-z", "-o", &(9 * BS).to_string(), "-l", &(3 * BS).to_string(), &dm.path])?;
    expect_eq("zeroed through the target", read_at(&dm.path, 9 * BS, 3 * BS as usize)?, vec![0u8; 3 * BS as usize])?;
    expect_eq("pool block zeroed", read_block(&spare.path, &g, 0)?, vec![0u8; BS as usize])?;
    expect_eq("the main device's block 10 untouched", read_at(&lo.path, 10 * BS, BS as usize)?, old.clone())?;
    write_at(&dm.path, 9 * BS, &ones)?;
    cmd("blkdiscard", &["-o", &(9 * BS).to_string(), "-l", &(3 * BS).to_string(), &dm.path])?;
    expect_eq("the main device's block 10 untouched by discard", read_at(&lo.path, 10 * BS, BS as usize)?, old)?;
    drop(dm);
    Ok(())
}

/// fio writes with verification over a main device with 64 bad blocks, 16 I/Os in flight:
/// every write succeeds, every block verifies, each bad block is relocated once, and the
/// relocations were committed in fewer metadata commits than remaps (group commit).
fn error_storm_verify() -> Result<()> {
    let bad_blocks: Vec<(u64, u64)> = (0..64).map(|i| (7 + i * 31, 1)).collect();
    let bad = BadMain::new("st", 16 * MIB, &bad_blocks)?;
    let spare = LoopDev::new("st-spare", 4 * MIB)?;
    let g = geometry(4 * MIB)?;
    let dm = DmDev::create("t-st", &remap_table(16 * MIB / 512, LineSpec::new(&bad.path(), &spare.path).format()))?;
    let out = cmd(
        "fio",
        &[
            "--name=storm", &format!("--filename={}", dm.path), "--ioengine=io_uring", "--direct=1",
            "--bs=4k", "--size=8M", "--rw=randwrite", "--iodepth=16", "--verify=crc32c",
            "--verify_fatal=1", "--output-format=terse", "--terse-version=3",
        ],
    )?;
    // Terse v3: field 5 is the read error count... errors are fatal anyway; check the total.
    ensure!(!out.is_empty(), "fio printed nothing");
    let in_range = bad_blocks.iter().filter(|(b, _)| *b < 8 * MIB / BS).count() as u64;
    let (remaps, seq, after_errors, proactive, free) = status_of(&dm.name, |s| (s.remaps, s.seq, s.write_relocations, s.proactive_relocations, s.free))?;
    expect_eq(
        &format!("remaps (one per bad block written; {after_errors} after write errors, {proactive} proactive)"),
        remaps,
        in_range,
    )?;
    expect_eq("relocations after write errors", after_errors, in_range)?;
    expect_eq("free pool blocks", free, g.pool_blocks - in_range)?;
    println!("    storm: {remaps} remaps in {seq} metadata commits");
    ensure!(seq < remaps, "no group commit: {seq} commits for {remaps} remaps");
    Ok(())
}

/// A write failing with a non-media error (ENOSPC from a full thin pool) is not relocated:
/// the caller gets that error, the spare is untouched.
fn non_media_error() -> Result<()> {
    let meta = LoopDev::new("nm-meta", 4 * MIB)?;
    let data = LoopDev::new("nm-data", MIB)?;
    let pool = DmDev::create(
        "t-nm-pool",
        &format!("0 {} thin-pool {} {} 128 0 1 error_if_no_space", MIB / 512, meta.path, data.path),
    )?;
    dmsetup(&["message", &pool.name, "0", "create_thin 0"])?;
    let n = 16 * MIB / 512;
    let thin = DmDev::create("t-nm-thin", &format!("0 {n} thin {} 0", pool.path))?;
    let spare = LoopDev::new("nm-spare", 4 * MIB)?;
    let g = geometry(4 * MIB)?;
    let dm = DmDev::create("t-nm", &remap_table(n, LineSpec::new(&thin.path, &spare.path).format()))?;
    // The pool holds 1 MiB: the 2nd MiB of fresh writes finds no space.
    let chunk = pattern(80, MIB as usize);
    write_at(&dm.path, 0, &chunk)?;
    match write_at(&dm.path, 4 * MIB, &chunk) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {}
        other => bail!("write to a full thin pool: expected ENOSPC, got {other:?}"),
    }
    expect_status(&dm.name, &st(0, g.pool_blocks, g.pool_blocks, 0, 0, "operational"))?;
    drop(dm);
    drop(thin);
    dmsetup(&["message", &pool.name, "0", "delete 0"])?;
    Ok(())
}

/// `dmsetup reload` builds the new table (its constructor reads the log) while the old one
/// still serves I/O; a relocation the old table commits in between must survive the swap.
fn reload_race() -> Result<()> {
    let bad = BadMain::new("rr", 16 * MIB, &[(5, 1), (6, 1)])?;
    let spare = LoopDev::new("rr-spare", 4 * MIB)?;
    let g = geometry(4 * MIB)?;
    let table = remap_table(16 * MIB / 512, LineSpec::new(&bad.path(), &spare.path).format());
    let dm = DmDev::create("t-rr", &table)?;
    write_at(&dm.path, 5 * BS, &pattern(90, BS as usize))?;
    dmsetup(&["reload", &dm.name, "--table", &table])?;
    // The old table is still live: this relocation is committed after the new constructor ran.
    write_at(&dm.path, 6 * BS, &pattern(91, BS as usize))?;
    dmsetup(&["resume", &dm.name])?;
    expect_status(&dm.name, &st(2, g.pool_blocks, g.pool_blocks - 2, 0, 2, "operational"))?;
    expect_eq("block 6 after the swap", read_at(&dm.path, 6 * BS, BS as usize)?, pattern(91, BS as usize))?;
    expect_eq("block 5 after the swap", read_at(&dm.path, 5 * BS, BS as usize)?, pattern(90, BS as usize))?;
    Ok(())
}

/// The same across log blocks: the first resume reads the log again only from the end of its
/// leading run of full blocks (docs/design.md), so the old table's commits after the new
/// constructor must survive whether that constructor saw a full tail (the old table then
/// starts new blocks) or a tail with room (the old table fills it and goes on).
fn reload_race_blocks() -> Result<()> {
    const FIRST: u64 = 100;
    let bad = BadMain::new("rb", 16 * MIB, &[(FIRST, 800)])?;
    let spare = LoopDev::new("rb-spare", 4 * MIB)?;
    let table = remap_table(16 * MIB / 512, LineSpec::new(&bad.path(), &spare.path).format());
    let dm = DmDev::create("t-rb", &table)?;
    let remaps = |name: &str| status_of(name, |s| s.remaps);
    let mut written: Vec<(u64, Vec<u8>)> = Vec::new();
    // Writes the next `n` bad blocks (each relocated: one log entry each).
    let mut write = |path: &str, n: u64| -> Result<u64> {
        let first = written.last().map_or(FIRST, |(f, d)| f + d.len() as u64 / BS);
        let data = pattern(first * 7 + n, (n * BS) as usize);
        write_at(path, first * BS, &data)?;
        written.push((first, data));
        Ok(first + n - FIRST)
    };
    // (before the reload, after it): a full tail (252 entries, one log block) at the
    // constructor, then 300 more by the old table (a second full block, 48 in the third); a
    // tail with room, 10 more into it; a tail with room, 200 more across into the fourth block.
    for (before, after) in [(252, 300), (0, 10), (0, 200)] {
        if before > 0 {
            write(&dm.path, before)?;
        }
        // The new constructor reads the log here; the old table goes on serving until resume.
        dmsetup(&["reload", &dm.name, "--table", &table])?;
        let total = write(&dm.path, after)?;
        dmsetup(&["resume", &dm.name])?;
        expect_eq(&format!("remaps after the swap ({before}, {after})"), remaps(&dm.name)?, total)?;
    }
    // The new table commits on from the old one's tail, and a whole replay of the log (a new
    // device) agrees.
    let total = write(&dm.path, 1)?;
    expect_eq("remaps after one more", remaps(&dm.name)?, total)?;
    drop(dm);
    let dm = DmDev::create("t-rb", &remap_table(16 * MIB / 512, LineSpec::new(&bad.path(), &spare.path)))?;
    expect_eq("remaps after remove + create", remaps(&dm.name)?, total)?;
    for (first, data) in &written {
        expect_eq(&format!("blocks from {first}"), read_at(&dm.path, first * BS, data.len())?, data.clone())?;
    }
    Ok(())
}
