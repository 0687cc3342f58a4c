//! Offline work on a spare: format it, and inspect every metadata copy.
//!
//! The decoding is the kernel's own (`dm-remap-logic`); CRCs are also checked with crc32fast,
//! independently of that code, so an inspection proves the on-disk bytes, not the decoder.

use crate::{Fail, Kind};
use dm_remap_logic::format::{log_decode, DecodeError, Geometry, Superblock, CRC_OFFSET, META_BLOCK};
use dm_remap_logic::loader::{self, LoadError};
use dm_remap_logic::mainid::MainId;
use dm_remap_logic::remaps::Entry;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

/// Size in bytes of a block device or a regular file.
pub fn size_of(path: &Path) -> Result<u64, Fail> {
    let f = File::open(path).map_err(|e| Fail::new(Kind::Io, format!("cannot open {}: {e}", path.display())))?;
    let meta = f.metadata().map_err(|e| Fail::new(Kind::Io, format!("cannot stat {}: {e}", path.display())))?;
    if meta.file_type().is_block_device() {
        let mut n = 0u64;
        // SAFETY: BLKGETSIZE64 writes one u64 to the pointer, which is valid.
        unsafe { blkgetsize64(std::os::fd::AsRawFd::as_raw_fd(&f), &mut n) }
            .map_err(|e| Fail::new(Kind::Io, format!("cannot get the size of {}: {e}", path.display())))?;
        Ok(n)
    } else {
        Ok(meta.len())
    }
}

fn read_at(f: &File, off: u64, buf: &mut [u8], path: &Path) -> Result<(), Fail> {
    f.read_exact_at(buf, off).map_err(|e| Fail::new(Kind::Io, format!("cannot read {} at byte {off}: {e}", path.display())))
}

/// What `format` would overwrite: our own metadata, or anything libblkid recognises (a
/// filesystem, an LVM, md or LUKS label, a partition table). Without libblkid, anything but
/// zeroes in the first and last MiB (the kernel's own blank rule).
fn occupant(f: &File, spare: &Path, spare_bytes: u64) -> Result<Option<String>, Fail> {
    let mut head = [0u8; 2 * META_BLOCK];
    if spare_bytes >= head.len() as u64 {
        read_at(f, 0, &mut head, spare)?;
        if head[..8] == dm_remap_logic::format::SB_MAGIC || head[META_BLOCK..META_BLOCK + 8] == dm_remap_logic::format::SB_MAGIC {
            return Ok(Some("dm-remap metadata".into()));
        }
    }
    match crate::probe::probe(std::os::fd::AsRawFd::as_raw_fd(f)) {
        Some(crate::probe::Found::Nothing) => Ok(None),
        Some(crate::probe::Found::Signature(t)) => Ok(Some(format!("a signature of type {t} (libblkid)"))),
        Some(crate::probe::Found::Ambiguous) => Ok(Some("more than one signature (libblkid)".into())),
        None => {
            let mut buf = vec![0u8; 1 << 16];
            for (start, len) in loader::blank_ranges(spare_bytes) {
                let mut at = start;
                while at < start + len {
                    let n = (start + len - at).min(buf.len() as u64) as usize;
                    read_at(f, at, &mut buf[..n], spare)?;
                    if !loader::is_zero(&buf[..n]) {
                        return Ok(Some("data in its first or last MiB (libblkid.so.1 is not available to name it)".into()));
                    }
                    at += n as u64;
                }
            }
            Ok(None)
        }
    }
}

/// Opens a spare for writing; a block device exclusively.
fn open_exclusive(spare: &Path) -> Result<File, Fail> {
    // O_EXCL on a block device is an exclusive open: it fails (EBUSY) while the device is
    // mounted, or held by device-mapper, md or another exclusive user.
    let is_blk = std::fs::metadata(spare).map(|m| m.file_type().is_block_device()).unwrap_or(false);
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    if is_blk {
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, nix::libc::O_EXCL);
    }
    opts.open(spare).map_err(|e| match e.raw_os_error() {
        Some(nix::libc::EBUSY) => Fail::new(
            Kind::Refused,
            format!("{} is in use (mounted, or held by device-mapper, md or another exclusive user)", spare.display()),
        ),
        _ => Fail::new(Kind::Io, format!("cannot open {} for writing: {e}", spare.display())),
    })
}

/// Writes both superblock copies of `sb`, durably.
fn write_superblocks(f: &File, spare: &Path, sb: &Superblock) -> Result<(), Fail> {
    let mut buf = vec![0u8; 2 * META_BLOCK];
    for half in buf.chunks_exact_mut(META_BLOCK) {
        if let Ok(b) = <&mut [u8; META_BLOCK]>::try_from(half) {
            sb.encode(b);
        }
    }
    f.write_all_at(&buf, 0).and_then(|_| f.sync_all()).map_err(|e| Fail::new(Kind::Io, format!("cannot write {}: {e}", spare.display())))
}

/// Writes fresh metadata for a target as long as `main_bytes`. Refuses a spare holding
/// metadata or a filesystem unless `force`.
pub fn format(spare: &Path, main_bytes: u64, block_size: u32, main_id: MainId, force: bool) -> Result<Superblock, Fail> {
    let spare_bytes = size_of(spare)?;
    if main_bytes == 0 || main_bytes % u64::from(block_size) != 0 {
        return Err(Fail::new(Kind::Refused, format!("the main device's size ({main_bytes} bytes) is not a multiple of the block size {block_size}")));
    }
    let geometry = Geometry::compute(spare_bytes, block_size).ok_or_else(|| {
        Fail::new(Kind::Refused, format!("{} ({spare_bytes} bytes) is too small for metadata and one spare block", spare.display()))
    })?;
    let f = open_exclusive(spare)?;
    if let (Some(what), false) = (occupant(&f, spare, spare_bytes)?, force) {
        return Err(Fail::new(Kind::Refused, format!("{} holds {what}; use --force to overwrite it", spare.display())));
    }
    let mut uuid = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut r| std::io::Read::read_exact(&mut r, &mut uuid))
        .map_err(|e| Fail::new(Kind::Io, format!("cannot read /dev/urandom: {e}")))?;
    let sb = Superblock::new(1, uuid, main_bytes / 512, geometry, main_id).with_records(spare_bytes);
    write_superblocks(&f, spare, &sb)?;
    Ok(sb)
}

/// The main id a spare records, if it holds valid metadata with one.
pub fn recorded_id(spare: &Path) -> Option<MainId> {
    let f = File::open(spare).ok()?;
    let mut head = [0u8; 2 * META_BLOCK];
    f.read_exact_at(&mut head, 0).ok()?;
    let (a, b) = head.split_at(META_BLOCK);
    let sb = loader::superblock_alone(a.try_into().ok()?, b.try_into().ok()?, size_of(spare).ok()? / 512).ok()?;
    (!sb.main_id.is_none()).then_some(sb.main_id)
}

/// What `upgrade` did.
pub enum Upgraded {
    /// Rewritten from version 1.
    FromV1(Superblock),
    /// Already the current version with that id: nothing written.
    Already(Superblock),
    /// The current version, given a main id it did not have.
    IdAdded(Superblock),
}

/// Rewrites a version 1 spare's superblocks as version 2 (and records `main_id` if given and
/// none is recorded). The log and pool are the same in both versions; only the superblock
/// copies are written, together and durably, with the next generation: whichever copy a crash
/// leaves, the loader reads a consistent spare.
pub fn upgrade(spare: &Path, main_id: Option<MainId>) -> Result<Upgraded, Fail> {
    let spare_bytes = size_of(spare)?;
    let f = open_exclusive(spare)?;
    let mut head = [0u8; 2 * META_BLOCK];
    if spare_bytes < head.len() as u64 {
        return Err(Fail::new(Kind::Refused, format!("{} holds no dm-remap metadata", spare.display())));
    }
    read_at(&f, 0, &mut head, spare)?;
    let (a, b) = head.split_at(META_BLOCK);
    let (a, b): (&[u8; META_BLOCK], &[u8; META_BLOCK]) = (a.try_into().unwrap_or(&[0; META_BLOCK]), b.try_into().unwrap_or(&[0; META_BLOCK]));
    let old = loader::superblock_alone(a, b, spare_bytes / 512).map_err(|e| {
        let kind = if e == LoadError::Blank { Kind::NotRemap } else { Kind::Corrupt };
        Fail::new(kind, format!("{}: {}; not upgraded", spare.display(), e.message().to_string_lossy()))
    })?;
    let id = match (main_id, old.main_id.is_none()) {
        (Some(new), false) if new != old.main_id => {
            return Err(Fail::new(
                Kind::Refused,
                format!("{} is recorded for main id {}, not {}", spare.display(), crate::ident::text(&old.main_id), crate::ident::text(&new)),
            ))
        }
        (Some(new), true) => new,
        _ => old.main_id,
    };
    let seq = old.seq.checked_add(1).filter(|&s| s < loader::SEQ_LIMIT).ok_or_else(|| Fail::new(Kind::Corrupt, "superblock generation at its limit"))?;
    let new = Superblock::new(seq, old.uuid, old.main_sectors, old.geometry, id);
    if old.version == dm_remap_logic::format::VERSION && old.main_id == id {
        return Ok(Upgraded::Already(old));
    }
    write_superblocks(&f, spare, &new)?;
    Ok(if old.version == dm_remap_logic::format::VERSION { Upgraded::IdAdded(new) } else { Upgraded::FromV1(new) })
}

/// The verdict on one 4 KiB metadata unit.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// `valid`, `blank` (no magic), `bad_crc`, `bad_version`, `bad_field`.
    pub verdict: &'static str,
    /// The CRC stored in the unit.
    pub stored_crc: String,
    /// crc32fast of its first 4092 bytes.
    pub computed_crc: String,
    /// Its sequence number, if it decoded.
    pub seq: Option<u64>,
}

/// One logical log block: both slots and which one counts.
#[derive(Serialize, Debug, Clone)]
pub struct LogBlockReport {
    pub index: u32,
    pub slots: [Copy; 2],
    /// The slot whose version is used, if any.
    pub chosen: Option<u32>,
    pub entries: u32,
}

/// The scrub checkpoint (docs/format.md).
#[derive(Serialize, Debug)]
pub struct CheckpointReport {
    pub slot: u32,
    pub seq: u64,
    /// Next main block the scrub reads.
    pub position: u64,
    pub passes: u64,
}

/// The bad-block list (docs/format.md).
#[derive(Serialize, Debug)]
pub struct BadBlocksReport {
    /// The slot holding the durable version (none: neither is valid, an empty list).
    pub slot: Option<u32>,
    pub seq: u64,
    /// Main blocks (block_size units) listed; the kernel drops those the log remaps.
    pub blocks: Vec<u64>,
    pub overflow: bool,
}

/// The whole inspection, stable for scripts (`--json`).
#[derive(Serialize, Debug)]
pub struct Report {
    pub spare: String,
    pub spare_bytes: u64,
    /// `valid`; `damaged` (loads, but a copy is bad); `corrupt` (will not load); `blank`.
    pub metadata: &'static str,
    pub superblocks: [Copy; 2],
    pub version: Option<u32>,
    /// Feature bits (v2), as hex.
    pub compat_features: Option<String>,
    pub incompat_features: Option<String>,
    /// The main device's id the spare is bound to, if recorded.
    pub main_id: Option<String>,
    pub uuid: Option<String>,
    pub block_size: Option<u32>,
    pub main_sectors: Option<u64>,
    pub pool_start_sector: Option<u64>,
    pub pool_blocks: Option<u64>,
    pub pool_free: Option<u64>,
    pub metadata_seq: Option<u64>,
    pub log: Vec<LogBlockReport>,
    /// (main block, pool block), in log order.
    pub remaps: Vec<(u64, u64)>,
    /// The scrub checkpoint the kernel would resume from (none: no slots, or none valid).
    pub scrub_checkpoint: Option<CheckpointReport>,
    /// The persistent bad-block list as the kernel would load it (none: the spare has none).
    pub bad_blocks: Option<BadBlocksReport>,
    /// Problems found (empty if healthy).
    pub problems: Vec<String>,
}

fn verdict(r: Result<(), DecodeError>) -> &'static str {
    match r {
        Ok(()) => "valid",
        Err(DecodeError::NoMagic) => "blank",
        Err(DecodeError::BadCrc) => "bad_crc",
        Err(DecodeError::BadVersion) => "bad_version",
        Err(DecodeError::UnknownFeature) => "unknown_feature",
        Err(DecodeError::BadField) => "bad_field",
    }
}

fn copy_of(b: &[u8; META_BLOCK], r: Result<Option<u64>, DecodeError>) -> Copy {
    let stored = u32::from_le_bytes([b[CRC_OFFSET], b[CRC_OFFSET + 1], b[CRC_OFFSET + 2], b[CRC_OFFSET + 3]]);
    Copy {
        verdict: verdict(r.map(|_| ())),
        stored_crc: format!("{stored:08x}"),
        computed_crc: format!("{:08x}", crc32fast::hash(&b[..CRC_OFFSET])),
        seq: r.ok().flatten(),
    }
}

/// Whether a log slot that does not decode was written for this format of the spare and is
/// now damaged (or torn by a crash), as opposed to never written, or left from an earlier
/// format (another uuid, intact CRC).
fn slot_damaged(b: &[u8; META_BLOCK], sb: &Superblock, index: u32) -> bool {
    let magic_ok = b[..8] == dm_remap_logic::format::LOG_MAGIC;
    let uuid_ok = b[8..24] == sb.uuid;
    let stored = u32::from_le_bytes([b[CRC_OFFSET], b[CRC_OFFSET + 1], b[CRC_OFFSET + 2], b[CRC_OFFSET + 3]]);
    let crc_ok = crc32fast::hash(&b[..CRC_OFFSET]) == stored;
    log_decode(b, sb, index).is_err() && (uuid_ok || (magic_ok && !crc_ok))
}

/// Reads and checks every metadata copy of a spare.
pub fn inspect(spare: &Path) -> Result<Report, Fail> {
    let spare_bytes = size_of(spare)?;
    let f = File::open(spare).map_err(|e| Fail::new(Kind::Io, format!("cannot open {}: {e}", spare.display())))?;
    let mut head = [0u8; 2 * META_BLOCK];
    if spare_bytes < head.len() as u64 {
        return Err(Fail::new(Kind::Io, format!("{} is too small to hold dm-remap metadata", spare.display())));
    }
    read_at(&f, 0, &mut head, spare)?;
    let (a, b) = head.split_at(META_BLOCK);
    let (a, b): (&[u8; META_BLOCK], &[u8; META_BLOCK]) = (a.try_into().unwrap_or(&[0; META_BLOCK]), b.try_into().unwrap_or(&[0; META_BLOCK]));
    let sbs = [copy_of(a, Superblock::decode(a).map(|s| Some(s.seq))), copy_of(b, Superblock::decode(b).map(|s| Some(s.seq)))];
    let mut rep = Report {
        spare: spare.display().to_string(),
        spare_bytes,
        metadata: "blank",
        superblocks: sbs,
        version: None,
        compat_features: None,
        incompat_features: None,
        main_id: None,
        uuid: None,
        block_size: None,
        main_sectors: None,
        pool_start_sector: None,
        pool_blocks: None,
        pool_free: None,
        metadata_seq: None,
        log: Vec::new(),
        remaps: Vec::new(),
        scrub_checkpoint: None,
        bad_blocks: None,
        problems: Vec::new(),
    };
    for (i, c) in rep.superblocks.iter().enumerate() {
        if c.verdict != "valid" && c.verdict != "blank" {
            rep.problems.push(format!("superblock copy {} is {}", ["A", "B"][i], c.verdict));
        }
    }
    // The decision is the kernel's loader's; the report around it only describes copies.
    let sb = match loader::superblock_alone(a, b, spare_bytes / 512) {
        Ok(sb) => sb,
        Err(LoadError::Blank) => return Ok(rep),
        Err(e) => {
            rep.metadata = if e == LoadError::Corrupt { "corrupt" } else { "refused" };
            rep.problems.push(e.message().to_string_lossy().into_owned());
            if let Some(sb) = [a, b].iter().find_map(|c| Superblock::decode(c).ok()) {
                describe(&mut rep, &sb);
            }
            return Ok(rep);
        }
    };
    rep.metadata = "valid";
    for (i, c) in rep.superblocks.iter().enumerate() {
        if c.verdict == "blank" {
            // Beside a valid copy, a copy without its magic was damaged, not never written.
            rep.problems.push(format!("superblock copy {} is missing (no magic)", ["A", "B"][i]));
        }
    }
    describe(&mut rep, &sb);
    records(&f, spare, &sb, &mut rep)?;
    let mut buf = vec![0u8; 2 * META_BLOCK];
    let mut tail = [0u8; META_BLOCK];
    let mut log: Vec<LogBlockReport> = Vec::new();
    let mut remaps = Vec::new();
    let mut damaged = Vec::new();
    let mut used = Vec::new();
    let mut io: Option<Fail> = None;
    let result = loader::replay_observed(
        &sb,
        &mut buf,
        &mut tail,
        |index, slots| {
            if let Err(e) = read_at(&f, Geometry::log_slot_sector(index, 0) * 512, slots, spare) {
                io = Some(e);
                return Err(());
            }
            let (s0, s1) = slots.split_at(META_BLOCK);
            let (s0, s1): (&[u8; META_BLOCK], &[u8; META_BLOCK]) = (s0.try_into().unwrap_or(&[0; META_BLOCK]), s1.try_into().unwrap_or(&[0; META_BLOCK]));
            let c = |s: &[u8; META_BLOCK]| copy_of(s, log_decode(s, &sb, index).map(|h| Some(h.seq)));
            for (k, slot) in [s0, s1].iter().enumerate() {
                if slot_damaged(slot, &sb, index) {
                    damaged.push(format!("log block {index} slot {k} is damaged or torn (a crash during a commit, or corruption)"));
                }
            }
            log.push(LogBlockReport { index, slots: [c(s0), c(s1)], chosen: None, entries: 0 });
            Ok(())
        },
        |r| {
            remaps.push((r.main, r.spare));
            true
        },
        |index, slot, entries| used.push((index, slot, entries)),
    );
    for (index, slot, entries) in used {
        if let Some(l) = log.iter_mut().find(|l| l.index == index) {
            l.chosen = Some(slot);
            l.entries = entries;
        }
    }
    if let Some(e) = io {
        return Err(e);
    }
    rep.log = log;
    rep.remaps = remaps;
    rep.problems.extend(damaged);
    match result {
        Ok(end) => {
            // `finish` checks the blocks (`main`) only; every pool block fits an entry once the
            // loader has accepted the geometry, and one that would not is still a block.
            let mut entries: Vec<Entry> =
                rep.remaps.iter().map(|&(main, spare)| Entry::remap(main, spare).unwrap_or(Entry::pending(main))).collect();
            match loader::finish(&mut entries) {
                Ok(()) => {
                    rep.pool_free = Some(sb.geometry.pool_blocks - end.next_free);
                    rep.metadata_seq = Some(end.seq);
                }
                Err(e) => rep.problems.push(e.message().to_string_lossy().into_owned()),
            }
        }
        Err(e) => rep.problems.push(e.message().to_string_lossy().into_owned()),
    }
    // What the loader refuses stops the kernel from loading the spare; a bad superblock copy
    // or a torn log slot beside a good one does not, but is worth knowing.
    let fatal = rep.problems.iter().any(|p| !p.starts_with("superblock copy") && !p.contains("damaged or torn"));
    if fatal {
        rep.metadata = "corrupt";
    } else if !rep.problems.is_empty() {
        rep.metadata = "damaged";
    }
    Ok(rep)
}

/// The record area's checkpoint and bad-block list, through the kernel's loader.
fn records(f: &File, spare: &Path, sb: &Superblock, rep: &mut Report) -> Result<(), Fail> {
    let main_blocks = sb.main_sectors / u64::from(sb.geometry.block_size / 512).max(1);
    let mut two = vec![0u8; 2 * META_BLOCK];
    let mut pair = |sector: u64| -> Result<([u8; META_BLOCK], [u8; META_BLOCK]), Fail> {
        read_at(f, sector * 512, &mut two, spare)?;
        let (a, b) = two.split_at(META_BLOCK);
        Ok((a.try_into().unwrap_or([0; META_BLOCK]), b.try_into().unwrap_or([0; META_BLOCK])))
    };
    if let Some(s0) = sb.checkpoint_sector(0) {
        let (a, b) = pair(s0)?;
        rep.scrub_checkpoint = loader::checkpoint(sb, &a, &b, main_blocks)
            .map(|(c, slot)| CheckpointReport { slot, seq: c.seq, position: c.position, passes: c.passes });
    }
    if let Some(s0) = sb.bad_blocks_sector(0) {
        let (a, b) = pair(s0)?;
        rep.bad_blocks = Some(match loader::bad_blocks(sb, &a, &b, main_blocks) {
            Some((h, slot)) => {
                let src = if slot == 0 { &a } else { &b };
                BadBlocksReport {
                    slot: Some(slot),
                    seq: h.seq,
                    blocks: (0..h.count).map(|i| dm_remap_logic::format::badb_entry(src, i)).collect(),
                    overflow: h.flags & dm_remap_logic::format::BADB_OVERFLOW != 0,
                }
            }
            None => BadBlocksReport { slot: None, seq: 0, blocks: Vec::new(), overflow: false },
        });
    }
    Ok(())
}

/// The superblock's fields in the report.
fn describe(rep: &mut Report, sb: &Superblock) {
    rep.version = Some(sb.version);
    rep.compat_features = Some(format!("{:#x}", sb.compat));
    rep.incompat_features = Some(format!("{:#x}", sb.incompat));
    rep.main_id = (!sb.main_id.is_none()).then(|| crate::ident::text(&sb.main_id));
    rep.uuid = Some(sb.uuid.iter().map(|b| format!("{b:02x}")).collect());
    rep.block_size = Some(sb.geometry.block_size);
    rep.main_sectors = Some(sb.main_sectors);
    rep.pool_start_sector = Some(sb.geometry.pool_start);
    rep.pool_blocks = Some(sb.geometry.pool_blocks);
}

/// The human-readable inspection.
pub fn render(r: &Report) -> String {
    let mut s = format!("spare {} ({} bytes): metadata {}\n", r.spare, r.spare_bytes, r.metadata);
    for (i, c) in r.superblocks.iter().enumerate() {
        s += &format!(
            "  superblock {}: {:<11} crc stored {} computed {}{}\n",
            ["A", "B"][i],
            c.verdict,
            c.stored_crc,
            c.computed_crc,
            c.seq.map(|q| format!(" seq {q}")).unwrap_or_default()
        );
    }
    if let (Some(bs), Some(ms), Some(ps), Some(pb), Some(free)) = (r.block_size, r.main_sectors, r.pool_start_sector, r.pool_blocks, r.pool_free) {
        s += &format!(
            "  format v{} uuid {}{}\n  block size {bs} B, main device {ms} sectors, pool of {pb} blocks at sector {ps}, {free} free\n",
            r.version.unwrap_or(0),
            r.uuid.clone().unwrap_or_default(),
            match &r.main_id {
                Some(id) => format!(" main id {id}"),
                None => " main id none".into(),
            }
        );
    }
    for l in &r.log {
        s += &format!(
            "  log block {}: slot 0 {} (crc {}/{}), slot 1 {} (crc {}/{}) -> {}\n",
            l.index,
            l.slots[0].verdict,
            l.slots[0].stored_crc,
            l.slots[0].computed_crc,
            l.slots[1].verdict,
            l.slots[1].stored_crc,
            l.slots[1].computed_crc,
            match l.chosen {
                Some(c) => format!("slot {c}, {} entries", l.entries),
                None => "end of log".into(),
            }
        );
    }
    if let Some(seq) = r.metadata_seq {
        s += &format!("  metadata sequence {seq}, {} remaps\n", r.remaps.len());
    }
    for (m, p) in &r.remaps {
        s += &format!("    main block {m} -> pool block {p}\n");
    }
    if let Some(c) = &r.scrub_checkpoint {
        s += &format!("  scrub checkpoint: block {}, {} passes done (slot {}, seq {})\n", c.position, c.passes, c.slot, c.seq);
    }
    if let Some(b) = &r.bad_blocks {
        s += &format!(
            "  bad-block list: {} blocks{}{}\n",
            b.blocks.len(),
            if b.overflow { " (overflowed: more were unreadable)" } else { "" },
            b.slot.map(|k| format!(" (slot {k}, seq {})", b.seq)).unwrap_or_default()
        );
        for x in &b.blocks {
            s += &format!("    main block {x}\n");
        }
    }
    for p in &r.problems {
        s += &format!("  PROBLEM: {p}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use dm_remap_logic::format::{log_init, log_push, log_seal, Remap};

    fn temp(name: &str, bytes: u64) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("dmremap-test-{}-{name}", std::process::id()));
        let f = File::create(&p).unwrap();
        f.set_len(bytes).unwrap();
        p
    }

    /// Appends a log block with `entries` (as the kernel would after one commit).
    fn add_log(spare: &Path, sb: &Superblock, entries: &[(u64, u64)]) {
        let mut b = [0u8; META_BLOCK];
        log_init(&mut b, &sb.uuid, 0);
        for &(main, spare) in entries {
            assert!(log_push(&mut b, Remap { main, spare }));
        }
        log_seal(&mut b, 1, entries.len() as u64);
        let f = OpenOptions::new().write(true).open(spare).unwrap();
        f.write_all_at(&b, Geometry::log_slot_sector(0, 0) * 512).unwrap();
    }

    #[test]
    fn format_then_inspect() {
        let spare = temp("spare", 4 << 20);
        let sb = format(&spare, 16 << 20, 4096, MainId::NONE, false).unwrap();
        assert_eq!(sb.main_sectors, 32768);
        let r = inspect(&spare).unwrap();
        assert_eq!((r.metadata, r.pool_blocks, r.pool_free, r.remaps.len()), ("valid", Some(1008), Some(1008), 0));
        for c in &r.superblocks {
            assert_eq!((c.verdict, &c.stored_crc), ("valid", &c.computed_crc));
        }
        add_log(&spare, &sb, &[(10, 0), (20, 1)]);
        let r = inspect(&spare).unwrap();
        assert_eq!((r.remaps.clone(), r.pool_free, r.metadata_seq), (vec![(10, 0), (20, 1)], Some(1006), Some(1)));
        assert!(render(&r).contains("main block 20 -> pool block 1"));
        // Valid metadata is never overwritten without --force.
        let e = format(&spare, 16 << 20, 4096, MainId::NONE, false).unwrap_err();
        assert_eq!(e.kind, Kind::Refused);
        assert!(e.msg.contains("dm-remap metadata"));
        assert!(format(&spare, 16 << 20, 4096, MainId::NONE, true).is_ok());
        assert_eq!(inspect(&spare).unwrap().remaps.len(), 0);
        std::fs::remove_file(spare).unwrap();
    }

    #[test]
    fn inspect_shows_checkpoint_and_bad_blocks() {
        use dm_remap_logic::format::{badb_encode, ckpt_encode, Checkpoint};
        let spare = temp("records", 4 << 20);
        let sb = format(&spare, 16 << 20, 4096, MainId::NONE, false).unwrap();
        let r = inspect(&spare).unwrap();
        assert!(r.scrub_checkpoint.is_none());
        let b = r.bad_blocks.as_ref().unwrap();
        assert_eq!((b.slot, b.blocks.len(), b.overflow), (None, 0, false));
        let f = OpenOptions::new().write(true).open(&spare).unwrap();
        let mut slot = [0u8; META_BLOCK];
        ckpt_encode(&mut slot, &sb.uuid, &Checkpoint { seq: 3, position: 1500, passes: 2 });
        f.write_all_at(&slot, sb.checkpoint_sector(1).unwrap() * 512).unwrap();
        badb_encode(&mut slot, &sb.uuid, 4, 0, [5u64, 9].into_iter());
        f.write_all_at(&slot, sb.bad_blocks_sector(0).unwrap() * 512).unwrap();
        let r = inspect(&spare).unwrap();
        let c = r.scrub_checkpoint.as_ref().unwrap();
        assert_eq!((c.slot, c.seq, c.position, c.passes), (1, 3, 1500, 2));
        let b = r.bad_blocks.as_ref().unwrap();
        assert_eq!((b.slot, b.seq, b.blocks.clone(), b.overflow), (Some(0), 4, vec![5, 9], false));
        let text = render(&r);
        assert!(text.contains("  scrub checkpoint: block 1500, 2 passes done (slot 1, seq 3)\n"), "{text}");
        assert!(text.contains("  bad-block list: 2 blocks (slot 0, seq 4)\n    main block 5\n    main block 9\n"), "{text}");
        std::fs::remove_file(spare).unwrap();
    }

    #[test]
    fn refuses_filesystems_and_impossible_sizes() {
        let spare = temp("fs", 4 << 20);
        let ok = std::process::Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&spare).status().map(|s| s.success());
        if ok.unwrap_or(false) {
            let e = format(&spare, 16 << 20, 4096, MainId::NONE, false).unwrap_err();
            assert!(e.msg.contains("ext4"), "{}", e.msg);
            assert_eq!(e.kind, Kind::Refused);
        }
        // A DOS partition table and nothing else: libblkid names it; without libblkid, the
        // blank rule refuses it too.
        let f = OpenOptions::new().write(true).open(&spare).unwrap();
        f.write_all_at(&vec![0u8; 4 << 20], 0).unwrap();
        let mut mbr = [0u8; 512];
        mbr[446 + 4] = 0x83;
        mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        mbr[446 + 12..446 + 16].copy_from_slice(&4096u32.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        f.write_all_at(&mbr, 0).unwrap();
        let e = format(&spare, 16 << 20, 4096, MainId::NONE, false).unwrap_err();
        assert_eq!(e.kind, Kind::Refused, "{}", e.msg);
        if crate::probe::probe(std::os::fd::AsRawFd::as_raw_fd(&f)).is_some() {
            assert!(e.msg.contains("dos"), "{}", e.msg);
        }
        assert_eq!(format(&spare, 4095, 4096, MainId::NONE, false).unwrap_err().kind, Kind::Refused);
        let tiny = temp("tiny", 8192);
        assert!(format(&tiny, 16 << 20, 4096, MainId::NONE, false).unwrap_err().msg.contains("too small"));
        assert_eq!(size_of(Path::new("/nonexistent/spare")).unwrap_err().kind, Kind::Io);
        std::fs::remove_file(spare).unwrap();
        std::fs::remove_file(tiny).unwrap();
    }

    #[test]
    fn upgrade_rewrites_v1_superblocks_and_keeps_the_log() {
        let spare = temp("upgrade", 4 << 20);
        let sb = format(&spare, 16 << 20, 4096, MainId::NONE, false).unwrap();
        add_log(&spare, &sb, &[(10, 0), (20, 1)]);
        // Make it a version 1 spare, as the previous release wrote it.
        let v1 = Superblock { version: dm_remap_logic::format::VERSION_V1, compat: 0, ..sb };
        let f = OpenOptions::new().write(true).open(&spare).unwrap();
        write_superblocks(&f, &spare, &v1).unwrap();
        let r = inspect(&spare).unwrap();
        assert_eq!((r.metadata, r.version, r.remaps.len()), ("valid", Some(1), 2));
        let id = MainId::parse(b"disk-a").unwrap();
        assert!(matches!(upgrade(&spare, Some(id)).unwrap(), Upgraded::FromV1(_)));
        let r = inspect(&spare).unwrap();
        assert_eq!((r.metadata, r.version, r.main_id.as_deref()), ("valid", Some(2), Some("disk-a")));
        assert_eq!(r.remaps, vec![(10, 0), (20, 1)]);
        assert!(matches!(upgrade(&spare, None).unwrap(), Upgraded::Already(_)));
        let e = upgrade(&spare, MainId::parse(b"disk-b")).err().unwrap();
        assert_eq!(e.kind, Kind::Refused);
        let blank = temp("upgrade-blank", 1 << 20);
        assert_eq!(upgrade(&blank, None).err().unwrap().kind, Kind::NotRemap);
        std::fs::remove_file(spare).unwrap();
        std::fs::remove_file(blank).unwrap();
    }

    #[test]
    fn every_corruption_of_a_copy_is_detected() {
        let spare = temp("corrupt", 4 << 20);
        let sb = format(&spare, 16 << 20, 4096, MainId::NONE, false).unwrap();
        add_log(&spare, &sb, &[(10, 0)]);
        let f = OpenOptions::new().read(true).write(true).open(&spare).unwrap();
        let log_at = Geometry::log_slot_sector(0, 0) * 512;
        for (at, what) in [(0u64, "superblock A"), (4096, "superblock B"), (log_at, "log slot")] {
            let mut orig = [0u8; META_BLOCK];
            f.read_exact_at(&mut orig, at).unwrap();
            for i in 0..META_BLOCK {
                let mut c = orig;
                c[i] ^= 0x20;
                f.write_all_at(&c, at).unwrap();
                let r = inspect(&spare).unwrap();
                assert_ne!(r.metadata, "valid", "{what} byte {i} not detected");
            }
            f.write_all_at(&orig, at).unwrap();
        }
        assert_eq!(inspect(&spare).unwrap().metadata, "valid");
        std::fs::remove_file(spare).unwrap();
    }
}
