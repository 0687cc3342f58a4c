//! The persistent bad-block list (docs/format.md, docs/messages.md `bad_blocks`): blocks
//! whose read failed and that were not rewritten survive remove/create and reboot, are listed
//! in device sectors, and leave the list once rewritten; a crash between a relocation's
//! commit and the list's rewrite leaves the remap in charge.

use crate::harness::*;
use anyhow::{bail, ensure, Context, Result};
use dm_remap_logic::format::{badb_encode, badb_entry, choose_superblock, Superblock, SuperblockChoice, META_BLOCK};
use dm_remap_logic::loader;

pub const TESTS: &[crate::Test] = &[
    ("badblocks_list_persists_pages_and_empties_on_rewrite", persists),
    ("badblocks_remap_wins_over_a_stale_list", remap_wins),
    ("badblocks_list_full_overflows_and_keeps_505", overflow),
];

/// Across the reboot between `cargo xtask test`'s two boots.
pub const REBOOT_TESTS: &[crate::RebootTest] = &[("badblocks_list_survives_reboot", reboot_before, reboot_after)];

const MIB: u64 = 1 << 20;
const BS: u64 = 4096;

fn read_fails(path: &str, block: u64) -> Result<()> {
    match read_at(path, block * BS, BS as usize) {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(()),
        other => bail!("reading bad block {block}: expected EIO, got {other:?}"),
    }
}

/// The superblock on `spare`, through the one loader's choice.
fn superblock(spare: &str) -> Result<Superblock> {
    let b = read_at(spare, 0, 2 * META_BLOCK)?;
    let (a, c) = b.split_at(META_BLOCK);
    match choose_superblock(a.try_into()?, c.try_into()?) {
        SuperblockChoice::Valid(sb) => Ok(sb),
        other => bail!("spare superblock: {other:?}"),
    }
}

/// The durable list on `spare` as the loader sees it: its blocks (and the slot it is in).
fn list_on_spare(spare: &str, main_blocks: u64) -> Result<(Vec<u64>, u32)> {
    let sb = superblock(spare)?;
    let s0 = sb.bad_blocks_sector(0).context("a new spare has no bad-block list slots")?;
    let b = read_at(spare, s0 * 512, 2 * META_BLOCK)?;
    let (a, c) = b.split_at(META_BLOCK);
    let (a, c): (&[u8; META_BLOCK], &[u8; META_BLOCK]) = (a.try_into()?, c.try_into()?);
    let Some((h, slot)) = loader::bad_blocks(&sb, a, c, main_blocks) else { return Ok((Vec::new(), 0)) };
    let src = if slot == 0 { a } else { c };
    Ok(((0..h.count).map(|i| badb_entry(src, i)).collect(), slot))
}

/// A dm-dust main of 16 MiB with blocks 20 and 33 unreadable, and a 4 MiB loop spare.
/// Returns the devices, the table line and the same line with `format`.
fn dust_setup(tag: &str) -> Result<(LoopDev, DmDev, LoopDev, String, String)> {
    let n = 16 * MIB / 512;
    let lo = LoopDev::new(tag, 16 * MIB)?;
    let dust = DmDev::create(&format!("t-{tag}-dust"), &format!("0 {n} dust {} 0 4096", lo.path))?;
    for b in ["20", "33"] {
        dmsetup(&["message", &dust.name, "0", "addbadblock", b])?;
    }
    dmsetup(&["message", &dust.name, "0", "enable"])?;
    let spare = LoopDev::new(&format!("{tag}-spare"), 4 * MIB)?;
    let table = remap_table(n, LineSpec::new(&dust.path, &spare.path).read_retries(1));
    let format = remap_table(n, LineSpec::new(&dust.path, &spare.path).read_retries(1).format());
    Ok((lo, dust, spare, table, format))
}

/// Two read errors list blocks 20 and 33 (sectors 160 and 264) on the spare before the reads
/// return; the list pages; it survives remove/create; each rewrite takes its block off,
/// durably.
fn persists() -> Result<()> {
    let (_lo, _dust, spare, table, format) = dust_setup("bb")?;
    let main_blocks = 16 * MIB / BS;
    let dm = DmDev::create("t-bb", &format)?;
    expect_eq("a new spare's list", msg(&dm.name, &["bad_blocks"])?, "blocks=0 on_spare=0 list=on overflow=0".into())?;
    let dev = cmd("dmsetup", &["info", "-c", "--noheadings", "-o", "major,minor", &dm.name])?.trim().to_string();
    let mut kmsg = Kmsg::open()?;
    kmsg.drain();
    read_fails(&dm.path, 33)?;
    read_fails(&dm.path, 20)?;
    // Each finding is logged with the device (major:minor), the block and the reason.
    let said: Vec<String> = kmsg.drain().into_iter().filter(|l| l.contains("unreadable")).collect();
    ensure!(
        said.len() == 2
            && said[0].contains(&format!("dm_remap: {dev}: block 33 unreadable after 1 tries: listed as bad until written"))
            && said[1].contains(&format!("dm_remap: {dev}: block 20 unreadable after 1 tries")),
        "kernel log about unreadable blocks on {dev}: {said:?}"
    );
    let two = "blocks=2 on_spare=2 list=on overflow=0\n160 8\n264 8".to_string();
    expect_eq("list after two read errors", msg(&dm.name, &["bad_blocks"])?, two.clone())?;
    expect_eq("the second page of one", msg(&dm.name, &["bad_blocks", "1", "1"])?, "blocks=2 on_spare=2 list=on overflow=0\n264 8".into())?;
    expect_eq("past the end", msg(&dm.name, &["bad_blocks", "5", "64"])?, "blocks=2 on_spare=2 list=on overflow=0".into())?;
    // Durable when the reads returned: the loader finds both on the spare.
    expect_eq("list on the spare", list_on_spare(&spare.path, main_blocks)?.0, vec![20, 33])?;
    // The operator's tool says the same, as text and JSON.
    expect_eq(
        "dmremap badblocks",
        cmd("dmremap", &["badblocks", &dm.name])?,
        "t-bb: 2 unreadable blocks waiting for a rewrite (sector, sectors):\n160 8\n264 8\n".into(),
    )?;
    let j: serde_json::Value = serde_json::from_str(&cmd("dmremap", &["badblocks", "--json", &dm.name])?)?;
    expect_eq(
        "dmremap badblocks --json",
        j,
        serde_json::json!({"blocks": 2, "on_spare": 2, "persistent": true, "overflow": false,
            "sectors": [{"sector": 160, "sectors": 8}, {"sector": 264, "sectors": 8}]}),
    )?;
    drop(dm);
    let dm = DmDev::create("t-bb", &table)?;
    expect_eq("field 11 after remove/create", status_of(&dm.name, |s| s.pending)?, 2)?;
    expect_eq("list after remove/create", msg(&dm.name, &["bad_blocks"])?, two)?;
    expect_eq("query", msg(&dm.name, &["query", "160"])?, "block=20 location=pending".into())?;
    // A rewrite relocates the block and takes it off the list.
    let a = pattern(20, BS as usize);
    kmsg.drain();
    write_at(&dm.path, 20 * BS, &a)?;
    let said: Vec<String> = kmsg.drain().into_iter().filter(|l| l.contains("relocated")).collect();
    ensure!(
        said.len() == 1 && said[0].contains("block 20 relocated to pool block 0: a write to a block that could not be read"),
        "kernel log about the relocation: {said:?}"
    );
    expect_eq("list after rewriting block 20", msg(&dm.name, &["bad_blocks"])?, "blocks=1 on_spare=1 list=on overflow=0\n264 8".into())?;
    expect_eq("list on the spare after the rewrite", list_on_spare(&spare.path, main_blocks)?.0, vec![33])?;
    drop(dm);
    let dm = DmDev::create("t-bb", &table)?;
    expect_eq("field 11 after the rewrite and remove/create", status_of(&dm.name, |s| s.pending)?, 1)?;
    expect_eq("rewritten block", read_at(&dm.path, 20 * BS, BS as usize)?, a)?;
    write_at(&dm.path, 33 * BS, &pattern(33, BS as usize))?;
    drop(dm);
    let dm = DmDev::create("t-bb", &table)?;
    expect_eq("list after both rewrites", msg(&dm.name, &["bad_blocks"])?, "blocks=0 on_spare=0 list=on overflow=0".into())?;
    expect_eq("field 11 at the end", status_of(&dm.name, |s| s.pending)?, 0)?;
    expect_eq("remaps at the end", status_of(&dm.name, |s| s.remaps)?, 2)?;
    Ok(())
}

/// A crash after a relocation's commit but before the list's rewrite leaves the block both
/// remapped and listed: the load keeps the remap (the block reads its new data) and lists
/// only the others; the next rewrite makes the spare's list right.
fn remap_wins() -> Result<()> {
    let (_lo, _dust, spare, table, format) = dust_setup("bw")?;
    let main_blocks = 16 * MIB / BS;
    let dm = DmDev::create("t-bw", &format)?;
    read_fails(&dm.path, 20)?;
    read_fails(&dm.path, 33)?;
    let a = pattern(7, BS as usize);
    write_at(&dm.path, 20 * BS, &a)?;
    drop(dm);
    // The state that crash leaves: both slots list 20 and 33, at a newer generation.
    let sb = superblock(&spare.path)?;
    let s0 = sb.bad_blocks_sector(0).context("no list slots")?;
    let mut slot = [0u8; META_BLOCK];
    badb_encode(&mut slot, &sb.uuid, 1000, 0, [20u64, 33].into_iter());
    write_at(&spare.path, s0 * 512, &slot)?;
    write_at(&spare.path, (s0 + 8) * 512, &slot)?;
    let dm = DmDev::create("t-bw", &table)?;
    expect_eq("field 11: only block 33", status_of(&dm.name, |s| s.pending)?, 1)?;
    expect_eq("the listed blocks", msg(&dm.name, &["bad_blocks"])?, "blocks=1 on_spare=2 list=on overflow=0\n264 8".into())?;
    expect_eq("the remapped block's data", read_at(&dm.path, 20 * BS, BS as usize)?, a)?;
    write_at(&dm.path, 33 * BS, &pattern(8, BS as usize))?;
    expect_eq("list on the spare after the next rewrite", list_on_spare(&spare.path, main_blocks)?.0, Vec::<u64>::new())?;
    ensure!(status_of(&dm.name, |s| s.pending == 0 && s.remaps == 2)?, "expected 0 pending and 2 remaps");
    Ok(())
}

/// The persistent disk's second region (the engine's reboot test uses its first 36 MiB): a
/// 16 MiB main at 40 MiB with block 20 failing every I/O, a 4 MiB spare at 56 MiB.
/// Returns them and the table line without `format`.
fn reboot_devices(format: bool) -> Result<(DmDev, DmDev, DmDev, DmDev, String)> {
    let vda = "/dev/vda";
    ensure!(std::path::Path::new(vda).exists(), "no persistent disk /dev/vda (run through `cargo xtask test`)");
    let n = 16 * MIB / 512;
    let base = DmDev::create("bbr-base", &format!("0 {n} linear {vda} {}", 40 * MIB / 512))?;
    let main = bad_device("bbr-main", &base.path, n, &[(20, 1)])?;
    let spare = DmDev::create("bbr-spare", &format!("0 {} linear {vda} {}", 4 * MIB / 512, 56 * MIB / 512))?;
    let spec = || LineSpec::new(&main.path, &spare.path).read_retries(1);
    let table = remap_table(n, spec());
    let dm = DmDev::create("bbr", &if format { remap_table(n, spec().format()) } else { table.clone() })?;
    Ok((base, main, spare, dm, table))
}

fn reboot_before() -> Result<()> {
    let (_base, _main, _spare, dm, _) = reboot_devices(true)?;
    read_fails(&dm.path, 20)?;
    expect_eq("list before the reboot", msg(&dm.name, &["bad_blocks"])?, "blocks=1 on_spare=1 list=on overflow=0\n160 8".into())
}

fn reboot_after() -> Result<()> {
    let (_base, _main, _spare, dm, table) = reboot_devices(false)?;
    expect_eq("field 11 after the reboot", status_of(&dm.name, |s| s.pending)?, 1)?;
    expect_eq("list after the reboot", msg(&dm.name, &["bad_blocks"])?, "blocks=1 on_spare=1 list=on overflow=0\n160 8".into())?;
    let a = pattern(21, BS as usize);
    write_at(&dm.path, 20 * BS, &a)?;
    drop(dm);
    let dm = DmDev::create("bbr", &table)?;
    expect_eq("list emptied by the rewrite", msg(&dm.name, &["bad_blocks"])?, "blocks=0 on_spare=0 list=on overflow=0".into())?;
    expect_eq("the rewritten block", read_at(&dm.path, 20 * BS, BS as usize)?, a)
}

/// 506 unreadable blocks: the list holds 505 (docs/format.md), says it overflowed, and the
/// kernel logs it once; after remove/create the 505 come back, still flagged; rewriting one
/// leaves 504, still flagged until the list empties.
fn overflow() -> Result<()> {
    let n = 16 * MIB / 512;
    let lo = LoopDev::new("bo", 16 * MIB)?;
    let bad: Vec<u64> = (0..506).map(|i| 100 + 2 * i).collect();
    // dm-error ranges for every second block from 100: reads (and writes) of them fail.
    let main = bad_device("t-bo-main", &lo.path, n, &bad.iter().map(|&b| (b, 1)).collect::<Vec<_>>())?;
    let spare = LoopDev::new("bo-spare", 4 * MIB)?;
    let spec = || LineSpec::new(&main.path, &spare.path).read_retries(1);
    let dm = DmDev::create("t-bo", &remap_table(n, spec().format()))?;
    let mut kmsg = Kmsg::open()?;
    kmsg.drain();
    for &b in &bad {
        read_fails(&dm.path, b)?;
    }
    let head = |name: &str| -> Result<String> { Ok(msg(name, &["bad_blocks", "0", "1"])?.lines().next().unwrap_or_default().to_string()) };
    expect_eq("after 506 read errors", head(&dm.name)?, "blocks=506 on_spare=505 list=on overflow=1".into())?;
    let full: Vec<String> = kmsg.drain().into_iter().filter(|l| l.contains("bad-block list full")).collect();
    ensure!(full.len() == 1 && full[0].contains("bad-block list full (505 blocks); 1 more kept in memory only until rewritten"), "kernel log: {full:?}");
    expect_eq("the spare's list", list_on_spare(&spare.path, 16 * MIB / BS)?.0, bad[..505].to_vec())?;
    drop(dm);
    let dm = DmDev::create("t-bo", &remap_table(n, spec()))?;
    expect_eq("after remove/create", head(&dm.name)?, "blocks=505 on_spare=505 list=on overflow=1".into())?;
    write_at(&dm.path, bad[0] * BS, &pattern(1, BS as usize))?;
    expect_eq("after one rewrite", head(&dm.name)?, "blocks=504 on_spare=504 list=on overflow=1".into())?;
    Ok(())
}

