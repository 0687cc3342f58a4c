//! Crash consistency by replay: every write dm-remap made to its spare during an error
//! storm is recorded by dm-log-writes, then every state a crash could have left on the spare
//! is rebuilt from the log and checked.

use crate::harness::*;
use crate::logwrites::{self, FLUSH, FUA};
use anyhow::{ensure, Context, Result};
use dm_remap_logic::mainid::MainId;
use dm_remap_logic::format::{badb_entry, Geometry, Superblock, META_BLOCK};
use std::collections::{HashMap, HashSet};

pub const TESTS: &[crate::Test] = &[("crash_consistency_by_log_replay", crash_replay)];

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;
const MAIN_BYTES: u64 = 16 * MIB;
const SPARE_BYTES: u64 = 8 * MIB;
/// Bad blocks written in the storm (so this many relocations).
const BAD: u64 = 1200;

/// The storm's size: [`BAD`], or a quarter of it on the second kernel of `cargo xtask test`
/// (`crate::second_kernel`): the state enumeration checks the logic crate's loader, the same
/// on every kernel.
fn bad_writes() -> u64 {
    if crate::second_kernel() {
        BAD / 4
    } else {
        BAD
    }
}
/// Writes in flight together; one mark after each batch is acknowledged.
const BATCH: usize = 16;

/// Bad blocks read (and found unreadable) before the storm, so the storm's writes rewrite
/// blocks of the bad-block list.
const UNREAD: usize = 24;

/// What the spare image says after a crash: the remaps and the listed bad blocks (those not
/// remapped, as the kernel loads them), or why it is refused.
type Loaded = Result<(Superblock, HashMap<u64, u64>, HashSet<u64>), String>;

/// Loads a spare image with the kernel's own loader (`logic::loader`, which the ctr calls
/// with its reads): newest valid superblock checked against the devices, then the log.
fn load(img: &[u8]) -> Loaded {
    use dm_remap_logic::loader::{self, Expect};
    use dm_remap_logic::remaps::Entry;
    let block = |off: u64| -> &[u8; META_BLOCK] {
        static ZERO: [u8; META_BLOCK] = [0; META_BLOCK];
        img.get(off as usize..off as usize + META_BLOCK).and_then(|b| b.try_into().ok()).unwrap_or(&ZERO)
    };
    let want = Expect { spare_sectors: img.len() as u64 / 512, main_sectors: MAIN_BYTES / 512, block_size: BLOCK as u32, main_id: MainId::NONE };
    let why = |e: loader::LoadError| e.message().to_string_lossy().into_owned();
    let sb = loader::superblock(block(0), block(META_BLOCK as u64), &want).map_err(why)?;
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 2 * META_BLOCK];
    let mut tail = [0u8; META_BLOCK];
    let read = |index: u32, b: &mut [u8]| {
        let off = (Geometry::log_slot_sector(index, 0) * 512) as usize;
        match img.get(off..off + b.len()) {
            Some(src) => b.copy_from_slice(src),
            None => b.fill(0),
        }
        Ok(())
    };
    loader::replay(&sb, &mut buf, &mut tail, read, |r| {
        // None: a pool block the table cannot hold (the loader refuses such pools).
        Entry::remap(r.main, r.spare).map(|e| entries.push(e)).is_some()
    })
    .map_err(why)?;
    loader::finish(&mut entries).map_err(why)?;
    let remaps = entries.iter().map(|e| (e.main, u64::from(e.spare))).collect::<HashMap<u64, u64>>();
    let mut listed = HashSet::new();
    if let (Some(s0), Some(s1)) = (sb.bad_blocks_sector(0), sb.bad_blocks_sector(1)) {
        let (a, b) = (block(s0 * 512), block(s1 * 512));
        if let Some((h, slot)) = loader::bad_blocks(&sb, a, b, MAIN_BYTES / BLOCK) {
            let src = if slot == 0 { a } else { b };
            listed.extend((0..h.count).map(|i| badb_entry(src, i)).filter(|x| !remaps.contains_key(x)));
        }
    }
    Ok((sb, remaps, listed))
}

/// Tallies of the states checked.
#[derive(Default, Debug)]
struct Tally {
    prefixes: u64,
    reordered: u64,
    torn: u64,
    refused_before_format: u64,
    violations: Vec<String>,
}

/// What the log says was promised: where the format was acknowledged, and after which
/// entry each main block's relocated write was acknowledged.
struct Promises {
    formatted: usize,
    /// (entry index of the mark, main blocks acknowledged by then), in log order.
    acks: Vec<(usize, usize)>,
    bad: Vec<u64>,
    /// Each bad block's data.
    patterns: HashMap<u64, Vec<u8>>,
    /// (entry index of the mark logged after its read returned EIO, block): from then on
    /// the block must be listed or remapped.
    unread: Vec<(usize, u64)>,
}

impl Promises {
    /// Main blocks whose writes were acknowledged before entry `cut`.
    fn acked_before(&self, cut: usize) -> &[u64] {
        let n = self.acks.iter().take_while(|(at, _)| *at < cut).last().map_or(0, |(_, n)| *n);
        &self.bad[..n]
    }
}

/// Checks one crash state: it loads (or, before the format was acknowledged, is refused),
/// every acknowledged relocation is there with its data, and every remap present is one the
/// storm made, with its data (no unacknowledged garbage).
fn check(img: &[u8], cut: usize, p: &Promises, bad: &HashSet<u64>, what: &str, t: &mut Tally) {
    let (sb, remaps, listed) = match load(img) {
        Ok(x) => x,
        Err(_) if cut <= p.formatted => {
            t.refused_before_format += 1;
            return;
        }
        Err(why) => {
            t.violations.push(format!("{what}: refused after the format was acknowledged: {why}"));
            return;
        }
    };
    // The data, by a fingerprint of each sector (its first 16 bytes of the block's pattern):
    // catches a block never written, written in part, or holding another block's data. The
    // sampled states below read whole blocks through the real target.
    let data_ok = |main: u64, spare: u64| {
        let at = (sb.geometry.pool_sector(spare) * 512) as usize;
        let Some(want) = p.patterns.get(&main) else { return false };
        (0..BLOCK as usize / 512).all(|s| img.get(at + s * 512..at + s * 512 + 16) == Some(&want[s * 512..s * 512 + 16]))
    };
    for &main in p.acked_before(cut) {
        match remaps.get(&main) {
            None => t.violations.push(format!("{what}: acknowledged remap of block {main} missing")),
            Some(&s) if !data_ok(main, s) => t.violations.push(format!("{what}: block {main}: acknowledged data lost")),
            _ => {}
        }
    }
    for (&main, &s) in &remaps {
        if !bad.contains(&main) || !data_ok(main, s) {
            t.violations.push(format!("{what}: remap of block {main} -> {s} is garbage"));
        }
    }
    // The bad-block list: a read that returned EIO left its block listed (or, rewritten
    // since, remapped); nothing else is ever listed.
    for &(at, b) in p.unread.iter().filter(|(at, _)| *at < cut) {
        if !listed.contains(&b) && !remaps.contains_key(&b) {
            t.violations.push(format!("{what}: block {b} read as unreadable (mark {at}) is neither listed nor remapped"));
        }
    }
    for &b in &listed {
        if !p.unread.iter().any(|&(_, u)| u == b) {
            t.violations.push(format!("{what}: block {b} listed as bad but never found unreadable"));
        }
    }
}

fn crash_replay() -> Result<()> {
    let n_bad = bad_writes();
    let bad: Vec<u64> = (0..n_bad).map(|i| i * 3 + 1).collect();
    let ranges: Vec<(u64, u64)> = bad.iter().map(|&b| (b, 1)).collect();
    let lo = LoopDev::new("cr", MAIN_BYTES)?;
    let main = bad_device("t-cr-main", &lo.path, MAIN_BYTES / 512, &ranges)?;
    let spare = LoopDev::new("cr-spare", SPARE_BYTES)?;
    let logdev = LoopDev::new("cr-log", 64 * MIB)?;
    let lw = DmDev::create("t-cr-lw", &format!("0 {} log-writes {} {}", SPARE_BYTES / 512, spare.path, logdev.path))?;
    let mark = |m: &str| dmsetup(&["message", "t-cr-lw", "0", "mark", m]);
    let dm = DmDev::create("t-cr", &remap_table(MAIN_BYTES / 512, LineSpec::new(&main.path, &lw.path).format()))?;
    // No scrub: it starts 10 s after the resume, and on a loaded machine the storm outlasts
    // that, so the scrub would find (and rightly list) bad blocks the checker's promises do
    // not know were read. Seen: "block 1111 listed as bad but never found unreadable".
    dmsetup(&["message", "t-cr", "0", "scan", "stop"])?;
    mark("formatted")?;
    // Some bad blocks are read first: each read fails and lists its block before returning.
    for (k, &b) in bad.iter().take(UNREAD).enumerate() {
        ensure!(read_at(&dm.path, b * BLOCK, BLOCK as usize).is_err(), "block {b} read through a failing main device");
        mark(&format!("read-{k}"))?;
    }
    // The storm: batches of concurrent writes to bad blocks, each acknowledged (fsynced)
    // before the batch's mark is logged.
    let path = dm.path.as_str();
    let t0 = std::time::Instant::now();
    for (n, batch) in bad.chunks(BATCH).enumerate() {
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = batch
                .iter()
                .map(|&b| s.spawn(move || write_at(path, b * BLOCK, &pattern(b, BLOCK as usize))))
                .collect();
            for (h, b) in handles.into_iter().zip(batch) {
                h.join().map_err(|_| anyhow::anyhow!("writer panicked"))?.with_context(|| format!("write block {b}"))?;
            }
            Ok(())
        })?;
        mark(&format!("ack-{n}"))?;
    }
    let remaps = status_of(&dm.name, |s| s.remaps)?;
    println!("    storm: {n_bad} relocating writes in {:.1} s", t0.elapsed().as_secs_f64());
    expect_eq("remaps after the storm", remaps.to_string(), n_bad.to_string())?;
    drop(dm);
    drop(lw);
    let log = std::fs::read(&logdev.path)?;
    let entries = logwrites::parse(&log)?;
    let writes = entries.iter().filter(|e| e.is_write()).count();
    let flushes = entries.iter().filter(|e| e.flags & FLUSH != 0).count();
    println!("    log: {} entries, {writes} writes, {flushes} flushes, {} bytes", entries.len(), log.len());

    let pos = |m: &str| entries.iter().position(|e| e.mark.as_deref() == Some(m));
    let formatted = pos("formatted").context("no 'formatted' mark in the log")?;
    let mut acks = Vec::new();
    for n in 0..bad.chunks(BATCH).len() {
        let at = pos(&format!("ack-{n}")).with_context(|| format!("mark ack-{n} missing"))?;
        acks.push((at, ((n + 1) * BATCH).min(bad.len())));
    }
    let mut unread = Vec::new();
    for (k, &b) in bad.iter().take(UNREAD).enumerate() {
        unread.push((pos(&format!("read-{k}")).with_context(|| format!("mark read-{k} missing"))?, b));
    }
    let bad_set: HashSet<u64> = bad.iter().copied().collect();
    let patterns = bad.iter().map(|&b| (b, pattern(b, BLOCK as usize))).collect();
    let p = Promises { formatted, acks, bad, patterns, unread };
    let mut t = Tally::default();
    let mut rng = Rng(0xc4a5_4000_0000_0001);
    // `img` is the spare after every entry before `cut`. Instead of copying it for each
    // variant, the bytes each write of the current flush epoch replaced are kept (`undo`),
    // so the epoch can be rewound and replayed another way.
    let mut img = vec![0u8; SPARE_BYTES as usize];
    let mut undo: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut epoch_start = 0usize;
    let rewind = |img: &mut [u8], undo: &[(usize, Vec<u8>)]| {
        for (at, old) in undo.iter().rev() {
            img[*at..*at + old.len()].copy_from_slice(old);
        }
    };
    let mut samples = Vec::new(); // states also loaded by the kernel and dmremap
    for cut in 0..=entries.len() {
        // Every prefix: the writes logged before `cut` reached the disk in log order.
        check(&img, cut, &p, &bad_set, &format!("prefix {cut}"), &mut t);
        t.prefixes += 1;
        if cut % 97 == 0 || cut == entries.len() {
            samples.push((cut, img.clone()));
        }
        // Reordered: since the last flush, the disk's cache kept any subset of the plain
        // writes (FUA writes are durable once complete). The subset is applied in log order:
        // for writes that do not overlap the order makes no difference, and of two writes to
        // the same sectors a disk never lets the older one overwrite the newer (the older
        // one surviving alone is the subset without the newer). A shuffle would also let an
        // older FUA write land over a newer one issued after it completed, which no disk does.
        if cut > epoch_start + 1 {
            let epoch = &entries[epoch_start..cut];
            rewind(&mut img, &undo);
            for e in epoch {
                if e.flags & FUA != 0 || rng.next() % 2 == 0 {
                    logwrites::apply(&mut img, e)?;
                }
            }
            check(&img, cut, &p, &bad_set, &format!("reordered epoch at {cut}"), &mut t);
            t.reordered += 1;
            rewind(&mut img, &undo);
            for e in epoch {
                logwrites::apply(&mut img, e)?;
            }
        }
        let Some(e) = entries.get(cut) else { break };
        let at = e.offset as usize;
        let old = img.get(at..at + e.data.len()).context("write beyond the spare")?.to_vec();
        // Torn: the next write reached the disk only in part, sector by sector.
        if e.data.len() > 512 {
            let mut any = false;
            for (s, sector) in e.data.chunks(512).enumerate() {
                if rng.next() % 2 == 0 {
                    img[at + s * 512..at + (s + 1) * 512].copy_from_slice(sector);
                    any = true;
                }
            }
            if any {
                check(&img, cut, &p, &bad_set, &format!("torn write {cut}"), &mut t);
                t.torn += 1;
                img[at..at + old.len()].copy_from_slice(&old);
            }
        }
        logwrites::apply(&mut img, e)?;
        undo.push((at, old));
        if e.flags & FLUSH != 0 {
            undo.clear();
            epoch_start = cut + 1;
        }
    }
    // The loader above stands in for the kernel's: on sampled states, the real target and
    // `dmremap inspect` must agree with it.
    let mut agreed = 0;
    let img_dev = LoopDev::new("cr-img", SPARE_BYTES)?;
    for (cut, state) in &samples {
        let mine = load(state);
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&img_dev.path)?;
            f.write_all(state)?;
            f.sync_all()?;
        }
        let table = remap_table(MAIN_BYTES / 512, LineSpec::new(&lo.path, &img_dev.path));
        let kernel = match DmDev::create("t-cr-load", &table) {
            Ok(d) => {
                let n = status_of(&d.name, |s| s.remaps)? as usize;
                let pending = status_of(&d.name, |s| s.pending)? as usize;
                let listed = mine.as_ref().ok().map(|(_, _, l)| l.len());
                ensure!(Some(pending) == listed, "state {cut}: the kernel loaded {pending} pending blocks, the checker {listed:?}");
                for &b in p.acked_before(*cut).iter().step_by(25) {
                    expect_eq(&format!("block {b} read through the target at {cut}"), read_at(&d.path, b * BLOCK, BLOCK as usize)?, pattern(b, BLOCK as usize))?;
                }
                Some(n)
            }
            Err(_) => None,
        };
        let inspect = std::process::Command::new("dmremap").args(["inspect", "--json", &img_dev.path]).output()?;
        let json: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap_or_default();
        let inspected = json["remaps"].as_array().map(|a| a.len());
        let mine_n = mine.as_ref().ok().map(|(_, r, _)| r.len());
        ensure!(kernel == mine_n, "state {cut}: the kernel loaded {kernel:?} remaps, the checker {mine_n:?}");
        if mine_n.is_some() {
            ensure!(inspected == mine_n, "state {cut}: dmremap inspect saw {inspected:?} remaps, the checker {mine_n:?}");
        }
        agreed += 1;
    }
    let states = t.prefixes + t.reordered + t.torn;
    println!(
        "    crash states checked: {states} ({} prefixes, {} reordered epochs, {} torn writes); \
         {} refused before the format was acknowledged; {} also loaded by the kernel and dmremap; violations: {}",
        t.prefixes,
        t.reordered,
        t.torn,
        t.refused_before_format,
        agreed,
        t.violations.len()
    );
    ensure!(t.violations.is_empty(), "{} violations, first: {}", t.violations.len(), t.violations[..t.violations.len().min(5)].join("; "));
    // Nearly every relocating write acknowledged (a batch per ACK line).
    let want = n_bad as usize * 5 / 6;
    ensure!(p.acks.len() * BATCH >= want, "fewer than {want} relocations acknowledged");
    Ok(())
}
