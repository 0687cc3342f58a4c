//! Spare safety (issue 13): a hostile or foreign spare is refused with its documented reason,
//! without an oops and without a single write to it; `format` initialises only a blank spare.

use crate::harness::*;
use anyhow::{ensure, Context, Result};
use dm_remap_logic::format::{log_init, log_push, log_seal, Geometry, Remap, Superblock, LOG_START, META_BLOCK};

pub const TESTS: &[crate::Test] = &[
    ("safety_hostile_spares_refused_untouched", hostile_spares),
    ("safety_format_refuses_a_filesystem", format_refuses_filesystem),
];

const MIB: u64 = 1 << 20;
const SPARE: u64 = 4 * MIB;
const MAIN_SECTORS: u64 = 16 * MIB / 512;

fn good_sb() -> Result<Superblock> {
    Ok(Superblock { seq: 1, uuid: [9; 16], main_sectors: MAIN_SECTORS, geometry: geometry(SPARE)? })
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
            image(Some(&with(&|s| s.geometry.pool_start += 8)), None, None),
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
    let mut v2 = image(Some(&sb), None, None);
    v2[8..12].copy_from_slice(&99u32.to_le_bytes());
    let crc = dm_remap_logic::crc32::crc32(&v2[..META_BLOCK - 4]);
    v2[META_BLOCK - 4..META_BLOCK].copy_from_slice(&crc.to_le_bytes());
    cases.push(("unknown format version", v2, "unsupported format version"));

    let mut kmsg = Kmsg::open()?;
    let (m, s) = (main.path.as_str(), spare.path.as_str());
    for (what, img, reason) in &cases {
        write_at(s, 0, img).with_context(|| format!("{what}: writing the image"))?;
        let before = read_at(s, 0, SPARE as usize)?;
        let writes = io_counts(&blk)?.1;
        kmsg.drain();
        for line in [format!("0 {MAIN_SECTORS} remap {m} {s}"), format!("0 {MAIN_SECTORS} remap {m} {s} 1 format")] {
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
    let line = format!("0 {MAIN_SECTORS} remap {} {} 1 format", main.path, spare.path);
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
    cmd_fails("dmsetup", &["create", "t-ff", "--table", &format!("0 {MAIN_SECTORS} remap {} {} 1 format", main.path, other.path)])?;
    ensure!(read_at(&other.path, 0, 8192)?.iter().all(|&b| b == 0), "the superblocks were written");
    Ok(())
}
