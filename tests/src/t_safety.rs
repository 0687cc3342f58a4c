//! Spare safety (issue 13): a hostile or foreign spare is refused with its documented reason,
//! without an oops and without a single write to it; `format` initialises only a blank spare.

use crate::harness::*;
use anyhow::{ensure, Context, Result};
use dm_remap_logic::mainid::MainId;
use dm_remap_logic::format::{log_init, log_push, log_seal, Geometry, Remap, Superblock, LOG_START, META_BLOCK};

pub const TESTS: &[crate::Test] = &[
    ("safety_hostile_spares_refused_untouched", hostile_spares),
    ("safety_format_refuses_a_filesystem", format_refuses_filesystem),
    ("safety_swapped_spares_refused_by_main_id", swapped_spares),
    ("safety_v1_spare_loads_and_upgrades", v1_spare_upgrades),
];

const MIB: u64 = 1 << 20;
const SPARE: u64 = 4 * MIB;
const MAIN_SECTORS: u64 = 16 * MIB / 512;

fn good_sb() -> Result<Superblock> {
    Ok(Superblock::new(1, [9; 16], MAIN_SECTORS, geometry(SPARE)?, MainId::NONE))
}

/// A spare image: both superblock copies as given (None: zeroes), and log block 0's slot 0.
fn image(a: Option<&Superblock>, b: Option<&Superblock>, slot0: Option<[u8; META_BLOCK]>) -> Vec<u8> {
    let mut img = vec![0u8; SPARE as usize];
    for (i, sb) in [a, b].iter().enumerate() {
        if let Some(sb) = sb {
            let mut blk = [0u8; META_BLOCK];
            sb.encode(&mut blk);
            img[i * META_BLOCK..(i + 1) * META_BLOCK].copy_from_slice(&blk);
        }
    }
    if let Some(s) = slot0 {
        let at = (Geometry::log_slot_sector(0, 0) * 512) as usize;
        img[at..at + META_BLOCK].copy_from_slice(&s);
    }
    img
}

/// Recomputes superblock copy A's CRC after a raw edit.
fn reseal(img: &mut [u8]) {
    let crc = dm_remap_logic::crc32::crc32(&img[..META_BLOCK - 4]);
    img[META_BLOCK - 4..META_BLOCK].copy_from_slice(&crc.to_le_bytes());
}

/// Log block 0 with `entries`, sealed as commit `seq` with `next_free`.
fn log_block(sb: &Superblock, entries: &[(u64, u64)], seq: u64, next_free: u64) -> [u8; META_BLOCK] {
    let mut b = [0u8; META_BLOCK];
    log_init(&mut b, &sb.uuid, 0);
    for &(main, spare) in entries {
        log_push(&mut b, Remap { main, spare });
    }
    log_seal(&mut b, seq, next_free);
    b
}

/// Every crafted spare is refused with its reason; the spare is byte-for-byte unchanged and
/// received no write; the main device still serves another table.
fn hostile_spares() -> Result<()> {
    let main = LoopDev::new("hs-main", 16 * MIB)?;
    let spare = LoopDev::new("hs-spare", SPARE)?;
    let blk = spare.path.trim_start_matches("/dev/").to_string();
    let sb = good_sb()?;
    let with = |f: &dyn Fn(&mut Superblock)| {
        let mut s = sb;
        f(&mut s);
        s
    };
    let g = sb.geometry;
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("pool_start 2^55", image(Some(&with(&|s| s.geometry.pool_start = 1 << 55)), None, None), "Spare device is smaller than its metadata says"),
        (
            "pool_start at u64::MAX / 512",
            image(Some(&with(&|s| s.geometry.pool_start = (u64::MAX / 512) & !7)), None, None),
            "Spare device is smaller than its metadata says",
        ),
        (
            "pool one block past the device",
            // The pool no longer fills the spare (the record area follows it): moved so that
            // it ends one block past the device.
            image(Some(&with(&|s| s.geometry.pool_start = SPARE / 512 - s.geometry.pool_blocks * 8 + 8)), None, None),
            "Spare device is smaller than its metadata says",
        ),
        (
            "record area one sector past the device",
            image(Some(&with(&|s| {
                s.records_start = g.pool_sector(g.pool_blocks);
                s.records_sectors = SPARE / 512 - s.records_start + 1;
            })), None, None),
            "Spare device is smaller than its metadata says",
        ),

        (
            "pool overlapping the log",
            image(Some(&with(&|s| s.geometry.pool_start = LOG_START / 512)), None, None),
            "Spare metadata is corrupt in every copy",
        ),
        (
            "log longer than the pool needs",
            image(Some(&with(&|s| {
                s.geometry.log_blocks += 1;
                s.geometry.pool_start += 16;
                s.geometry.pool_blocks -= 4;
            })), None, None),
            "Spare metadata is inconsistent (pool and log layout)",
        ),
        (
            "pool_blocks u64::MAX",
            image(Some(&with(&|s| {
                s.geometry.pool_blocks = u64::MAX;
                s.geometry.log_blocks = u32::MAX;
            })), None, None),
            "Spare metadata is corrupt in every copy",
        ),
        ("block size 0", image(Some(&with(&|s| s.geometry.block_size = 0)), None, None), "Spare metadata is corrupt in every copy"),
        ("main length 0", image(Some(&with(&|s| s.main_sectors = 0)), None, None), "Spare metadata is corrupt in every copy"),
        (
            "main length + 1",
            image(Some(&with(&|s| s.main_sectors = MAIN_SECTORS + 1)), None, None),
            "Spare metadata belongs to another main device (length differs)",
        ),
        ("superblock seq u64::MAX", image(Some(&with(&|s| s.seq = u64::MAX)), None, None), "sequence number at its limit"),
        ("log seq u64::MAX", image(Some(&sb), Some(&sb), Some(log_block(&sb, &[(1, 0)], u64::MAX, 1))), "sequence number at its limit"),
        (
            "entry past the main device",
            image(Some(&sb), Some(&sb), Some(log_block(&sb, &[(MAIN_SECTORS / 8, 0)], 1, 1))),
            "a log block with impossible fields",
        ),
        (
            "entry past the pool",
            image(Some(&sb), Some(&sb), Some(log_block(&sb, &[(1, g.pool_blocks)], 1, g.pool_blocks))),
            "a log block with impossible fields",
        ),
        (
            "next_free past the pool",
            image(Some(&sb), Some(&sb), Some(log_block(&sb, &[(1, 0)], 1, g.pool_blocks + 1))),
            "a log block with impossible fields",
        ),
        (
            "a block remapped twice",
            image(Some(&sb), Some(&sb), Some(log_block(&sb, &[(1, 0), (1, 1)], 1, 2))),
            "a block remapped twice",
        ),
        (
            "pool blocks out of order",
            image(Some(&sb), Some(&sb), Some(log_block(&sb, &[(1, 1), (2, 0)], 1, 2))),
            "pool blocks out of order",
        ),
    ];
    // A half-written superblock pair: copy A's first half only, copy B never written.
    let mut half = image(Some(&sb), None, None);
    half[META_BLOCK / 2..META_BLOCK].fill(0);
    cases.push(("half-written superblock, other copy blank", half, "Spare metadata is corrupt in every copy"));
    // Both copies torn.
    let mut torn = image(Some(&sb), Some(&sb), None);
    torn[200] ^= 1;
    torn[META_BLOCK + 200] ^= 1;
    cases.push(("both superblock copies torn", torn, "Spare metadata is corrupt in every copy"));
    // A newer format version, intact.
    let mut v99 = image(Some(&sb), None, None);
    v99[8..12].copy_from_slice(&99u32.to_le_bytes());
    reseal(&mut v99);
    cases.push(("unknown format version", v99, "unsupported format version"));
    // An incompatible feature this module does not know, intact: "unsupported", not "corrupt".
    cases.push(("unknown incompatible feature", image(Some(&with(&|s| s.incompat = 1 << 7)), None, None), "unsupported feature"));
    // A main id field with a byte outside the set, CRC recomputed.
    let mut badid = image(Some(&with(&|s| {
        s.main_id = MainId::parse(b"disk-a").unwrap_or_default();
        s.compat = dm_remap_logic::format::COMPAT_MAIN_ID;
    })), None, None);
    badid[89] = b' ';
    reseal(&mut badid);
    cases.push(("main id with a space", badid, "Spare metadata is corrupt in every copy"));
    // The record area (v2) past the end of the device, or inside the pool.
    cases.push((
        "record area past the device",
        image(Some(&with(&|s| {
            s.records_start = g.pool_start + g.pool_blocks * 8;
            s.records_sectors = u64::MAX;
        })), None, None),
        "Spare device is smaller than its metadata says",
    ));
    cases.push((
        "record area inside the pool",
        image(Some(&with(&|s| {
            s.records_start = g.pool_start;
            s.records_sectors = 8;
        })), None, None),
        "Spare metadata is inconsistent (pool and log layout)",
    ));

    let mut kmsg = Kmsg::open()?;
    let (m, s) = (main.path.as_str(), spare.path.as_str());
    for (what, img, reason) in &cases {
        write_at(s, 0, img).with_context(|| format!("{what}: writing the image"))?;
        let before = read_at(s, 0, SPARE as usize)?;
        let writes = io_counts(&blk)?.1;
        kmsg.drain();
        for line in [remap_table(MAIN_SECTORS, LineSpec::new(&m, &s)), remap_table(MAIN_SECTORS, LineSpec::new(&m, &s).format())] {
            cmd_fails("dmsetup", &["create", "t-hs", "--table", &line]).with_context(|| format!("{what}: {line}"))?;
            ensure!(!dm_exists("t-hs"), "{what}: device left behind");
        }
        let log = kmsg.drain();
        ensure!(log.iter().any(|l| l.contains(reason)), "{what}: kernel log lacks {reason:?}: {log:?}");
        expect_eq(&format!("{what}: sectors written to the spare"), io_counts(&blk)?.1 - writes, 0)?;
        ensure!(read_at(s, 0, SPARE as usize)? == before, "{what}: the spare changed");
        println!("    refused: {what}");
    }
    // The main device still serves another table.
    let other = DmDev::create("t-hs-other", &format!("0 {MAIN_SECTORS} linear {m} 0"))?;
    write_at(&other.path, 0, &pattern(1, 4096))?;
    expect_eq("main device through another table", read_at(&other.path, 0, 4096)? == pattern(1, 4096), true)?;
    Ok(())
}

/// `format` on a spare holding an ext4 filesystem is refused with a reason that says how to
/// proceed, and the filesystem is intact (e2fsck) afterwards.
fn format_refuses_filesystem() -> Result<()> {
    let main = LoopDev::new("ff-main", 16 * MIB)?;
    let spare = LoopDev::new("ff-spare", 8 * MIB)?;
    cmd("mkfs.ext4", &["-q", "-F", &spare.path])?;
    let mut kmsg = Kmsg::open()?;
    kmsg.drain();
    let line = remap_table(MAIN_SECTORS, LineSpec::new(&main.path, &spare.path).format());
    cmd_fails("dmsetup", &["create", "t-ff", "--table", &line])?;
    ensure!(!dm_exists("t-ff"), "device left behind");
    let log = kmsg.drain();
    ensure!(
        log.iter().any(|l| l.contains("Spare is not blank") && l.contains("dmremap format --force")),
        "kernel log lacks the refusal: {log:?}"
    );
    cmd("e2fsck", &["-f", "-n", &spare.path]).context("e2fsck after the refused format")?;
    // The tool refuses it too (a filesystem signature), and a device another table holds
    // (exclusive open) even with --force; exit code 6.
    let out = std::process::Command::new("dmremap").args(["format", &spare.path, "--main", &main.path]).output()?;
    expect_eq("dmremap format on ext4: exit code", out.status.code(), Some(6))?;
    // Named by libblkid (the guest has libblkid.so.1 from util-linux), not by the fallback.
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("holds a signature of type ext4 (libblkid)"), "stderr: {err}");
    let held = DmDev::create("t-ff-held", &format!("0 {} linear {} 0", 8 * MIB / 512, spare.path))?;
    let out = std::process::Command::new("dmremap").args(["format", &spare.path, "--main", &main.path, "--force"]).output()?;
    expect_eq("dmremap format --force on a held device: exit code", out.status.code(), Some(6))?;
    ensure!(String::from_utf8_lossy(&out.stderr).contains("is in use"), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    drop(held);
    cmd("e2fsck", &["-f", "-n", &spare.path]).context("e2fsck after dmremap's refusals")?;
    // A zeroed start with data only in the last MiB (md's or GPT's backup place) is not blank
    // either.
    let other = LoopDev::new("ff-tail", 8 * MIB)?;
    write_at(&other.path, 8 * MIB - 4096, &pattern(2, 4096))?;
    cmd_fails("dmsetup", &["create", "t-ff", "--table", &remap_table(MAIN_SECTORS, LineSpec::new(&main.path, &other.path).format())])?;
    ensure!(read_at(&other.path, 0, 8192)?.iter().all(|&b| b == 0), "the superblocks were written");
    Ok(())
}

/// Runs the tool; (exit code, stdout, stderr).
fn dmremap(args: &[&str]) -> Result<(i32, String, String)> {
    let out = std::process::Command::new("dmremap").args(args).output().context("cannot run dmremap")?;
    let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    ensure!(!e.contains("panicked"), "dmremap panicked: {e}");
    Ok((out.status.code().unwrap_or(-1), o, e))
}

fn id(s: &str) -> Result<MainId> {
    MainId::parse(s.as_bytes()).context("a valid id")
}

fn remaps(name: &str) -> Result<String> {
    status_of(name, |s| s.remaps.to_string())
}

/// Two main devices of the same size, each spare bound to its own by id: the swapped pairs
/// are refused (through dmsetup and through `dmremap create`), with no write to the spare;
/// the right pairs load and print their `main_id` back.
fn swapped_spares() -> Result<()> {
    let (main_a, main_b) = (LoopDev::new("sw-main-a", 16 * MIB)?, LoopDev::new("sw-main-b", 16 * MIB)?);
    let (spare_a, spare_b) = (LoopDev::new("sw-spare-a", SPARE)?, LoopDev::new("sw-spare-b", SPARE)?);
    // A loop device has no WWN or serial: without --main-id, format records none and warns.
    let (code, _, err) = dmremap(&["format", &spare_a.path, "--main", &main_a.path])?;
    expect_eq("format without an id: exit code", code, 0)?;
    ensure!(err.contains("has no WWN or serial"), "no warning: {err:?}");
    for (spare, main, id) in [(&spare_a, &main_a, "disk-a"), (&spare_b, &main_b, "disk-b")] {
        let (code, out, err) = dmremap(&["format", &spare.path, "--main", &main.path, "--main-id", id, "--force"])?;
        expect_eq(&format!("format {id}: exit code ({err})"), code, 0)?;
        ensure!(out.contains(&format!("main id {id}")), "format said {out:?}");
        let (_, out, _) = dmremap(&["inspect", &spare.path, "--json"])?;
        let r: serde_json::Value = serde_json::from_str(&out)?;
        expect_eq("inspect main_id", r["main_id"].as_str(), Some(id))?;
        expect_eq("inspect version", r["version"].as_u64(), Some(2))?;
    }
    let (code, _, _) = dmremap(&["format", &spare_a.path, "--main", &main_a.path, "--main-id", "a b"])?;
    expect_eq("format with an invalid id: exit code", code, 6)?;
    let mut kmsg = Kmsg::open()?;
    let blk = spare_b.path.trim_start_matches("/dev/").to_string();
    let before = read_at(&spare_b.path, 0, SPARE as usize)?;
    let writes = io_counts(&blk)?.1;
    kmsg.drain();
    let line = remap_table(MAIN_SECTORS, LineSpec::new(&main_a.path, &spare_b.path).main_id(id("disk-a")?));
    cmd_fails("dmsetup", &["create", "t-sw", "--table", &line])?;
    ensure!(!dm_exists("t-sw"), "device left behind");
    let log = kmsg.drain();
    ensure!(log.iter().any(|l| l.contains("belongs to another main device (main_id differs)")), "kernel log: {log:?}");
    let (code, _, err) = dmremap(&["create", "t-sw", &main_a.path, &spare_b.path, "--main-id", "disk-a"])?;
    expect_eq(&format!("dmremap create with swapped spares: exit code ({err})"), code, 7)?;
    ensure!(!dm_exists("t-sw"), "device left behind");
    expect_eq("sectors written to the refused spare", io_counts(&blk)?.1 - writes, 0)?;
    ensure!(read_at(&spare_b.path, 0, SPARE as usize)? == before, "the refused spare changed");
    // The right pairs.
    for (spare, main, id) in [(&spare_a, &main_a, "disk-a"), (&spare_b, &main_b, "disk-b")] {
        let name = format!("t-sw-{id}");
        let (code, out, err) = dmremap(&["create", &name, &main.path, &spare.path, "--main-id", id])?;
        expect_eq(&format!("dmremap create {id}: exit code ({err})"), code, 0)?;
        ensure!(out.contains(&format!("main_id {id}")), "create said {out:?}");
        let dev = DmDev { name: name.clone(), path: format!("/dev/mapper/{name}") };
        let table = dmsetup(&["table", &name])?;
        ensure!(table.trim_end().ends_with(&format!("2 main_id {id}")), "table {table:?}");
        write_at(&dev.path, 0, &pattern(3, 4096))?;
        expect_eq("data through the right pair", read_at(&dev.path, 0, 4096)? == pattern(3, 4096), true)?;
        drop(dev);
    }
    // Without an id in the table, the length is all that binds (docs/table.md).
    let dev = DmDev::create("t-sw-noid", &remap_table(MAIN_SECTORS, LineSpec::new(&main_a.path, &spare_b.path)))?;
    expect_eq("remaps on a spare loaded without an id", remaps(&dev.name)?, "0".to_string())?;
    Ok(())
}

/// A version 1 spare (the previous release's) with a remap loads; `dmremap upgrade` rewrites
/// it as version 2 with a main id (refused while a table holds it), and it loads again with
/// its remap; a table with another id is refused.
fn v1_spare_upgrades() -> Result<()> {
    let main = LoopDev::new("v1-main", 16 * MIB)?;
    let spare = LoopDev::new("v1-spare", SPARE)?;
    let v1 = Superblock { version: dm_remap_logic::format::VERSION_V1, compat: 0, ..good_sb()? };
    write_at(&spare.path, 0, &image(Some(&v1), Some(&v1), Some(log_block(&v1, &[(5, 0)], 1, 1))))?;
    write_at(&spare.path, v1.geometry.pool_sector(0) * 512, &pattern(7, 4096))?;
    let (m, s) = (main.path.as_str(), spare.path.as_str());
    {
        let dev = DmDev::create("t-v1", &remap_table(MAIN_SECTORS, LineSpec::new(&m, &s)))?;
        expect_eq("remaps on the v1 spare", remaps(&dev.name)?, "1".to_string())?;
        expect_eq("remapped block read from the pool", read_at(&dev.path, 5 * 4096, 4096)? == pattern(7, 4096), true)?;
        let (code, _, err) = dmremap(&["upgrade", s, "--main-id", "disk-a"])?;
        expect_eq("upgrade while a table holds the spare: exit code", code, 6)?;
        ensure!(err.contains("is in use"), "stderr {err:?}");
    }
    let (_, out, _) = dmremap(&["inspect", s])?;
    ensure!(out.contains("format v1"), "inspect before: {out}");
    let (code, out, err) = dmremap(&["upgrade", s, "--main-id", "disk-a"])?;
    expect_eq(&format!("upgrade: exit code ({err})"), code, 0)?;
    expect_eq("upgrade said", out.trim_end().to_string(), format!("upgraded {s} to format v2, main id disk-a"))?;
    let (_, out, _) = dmremap(&["inspect", s])?;
    ensure!(out.contains("format v2") && out.contains("main id disk-a") && out.contains("main block 5 -> pool block 0"), "inspect after: {out}");
    let (code, out, _) = dmremap(&["upgrade", s])?;
    expect_eq("second upgrade: exit code", code, 0)?;
    ensure!(out.contains("nothing written"), "second upgrade said {out:?}");
    cmd_fails("dmsetup", &["create", "t-v1", "--table", &remap_table(MAIN_SECTORS, LineSpec::new(m, s).main_id(id("disk-b")?))])?;
    ensure!(!dm_exists("t-v1"), "device left behind");
    let dev = DmDev::create("t-v1", &remap_table(MAIN_SECTORS, LineSpec::new(m, s).main_id(id("disk-a")?)))?;
    expect_eq("remaps after the upgrade", remaps(&dev.name)?, "1".to_string())?;
    expect_eq("remapped block after the upgrade", read_at(&dev.path, 5 * 4096, 4096)? == pattern(7, 4096), true)?;
    Ok(())
}
