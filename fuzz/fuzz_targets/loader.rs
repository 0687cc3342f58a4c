//! The one metadata loader (`logic::loader`), structure-aware: the fuzzer's bytes become
//! superblock and log fields, the device sizes and the block size, and the CRCs are
//! recomputed, so inputs get past the checksums into the code the kernel runs. Whatever it
//! accepts must be safe to use: every remap inside the main device and the pool, the pool
//! inside the spare, sequence numbers below the limit.
#![no_main]
use dm_remap_logic::format::*;
use dm_remap_logic::loader::{self, Expect, SEQ_LIMIT};
use dm_remap_logic::mainid::MainId;
use dm_remap_logic::remaps::Entry;
use libfuzzer_sys::fuzz_target;

/// Reads fields from the input; zeroes once it runs out.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u64(&mut self) -> u64 {
        let n = self.0.len().min(8);
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u64::from_le_bytes(b)
    }
    fn u32(&mut self) -> u32 {
        self.u64() as u32
    }
    /// A value near a boundary more often than not: 0, 1, max, `near` +- 1, or raw.
    fn pick(&mut self, near: u64) -> u64 {
        let sel = self.u64();
        match sel % 8 {
            0 => 0,
            1 => 1,
            2 => u64::MAX,
            3 => near.wrapping_sub(1),
            4 => near,
            5 => near.wrapping_add(1),
            _ => self.u64(),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor(data);
    // A plausible layout to start from, then fields bent towards their extremes.
    let spare_bytes = (c.u64() % (64 << 20)).max(64 << 10) & !511;
    let block_size = [512u32, 1024, 4096, 65536, 0, 3, 131072][(c.u64() % 7) as usize];
    let Some(base) = Geometry::compute(spare_bytes, block_size.clamp(512, 65536).next_power_of_two()) else { return };
    let main_sectors = c.pick(1 << 20);
    let ids = [MainId::NONE, MainId::parse(b"disk-a").unwrap_or_default(), MainId::parse(&[b'z'; 64]).unwrap_or_default()];
    let main_id = ids[(c.u64() % 3) as usize];
    let pool_end = base.pool_start + base.pool_blocks * u64::from(base.block_size / 512);
    let sb = Superblock {
        version: [VERSION, VERSION_V1, 0, 3][(c.u64() % 4) as usize],
        compat: if main_id.is_none() { 0 } else { COMPAT_MAIN_ID }
            | if c.u64() % 2 == 0 { COMPAT_SCRUB_CHECKPOINT } else { 0 }
            | if c.u64() % 4 == 0 { c.u64() } else { 0 },
        incompat: match c.u64() % 4 {
            0 => c.u64(),
            1 => INCOMPAT_BADBLOCKS,
            _ => 0,
        },
        main_id,
        records_start: if c.u64() % 2 == 0 { 0 } else { c.pick(pool_end) },
        records_sectors: if c.u64() % 2 == 0 { 0 } else { c.pick(spare_bytes / 512 - pool_end) },
        seq: c.pick(SEQ_LIMIT),
        uuid: [c.u64() as u8; 16],
        main_sectors,
        geometry: Geometry {
            block_size: if c.u64() % 2 == 0 { base.block_size } else { block_size },
            log_blocks: c.pick(u64::from(base.log_blocks)) as u32,
            pool_start: c.pick(base.pool_start),
            pool_blocks: c.pick(base.pool_blocks),
        },
    };
    let want = Expect {
        spare_sectors: if c.u64() % 2 == 0 { spare_bytes / 512 } else { c.pick(spare_bytes / 512) },
        main_sectors: if c.u64() % 2 == 0 { main_sectors } else { c.pick(main_sectors) },
        block_size: if c.u64() % 2 == 0 { sb.geometry.block_size } else { block_size },
        main_id: ids[(c.u64() % 3) as usize],
    };
    let mut a = [0u8; META_BLOCK];
    let mut b = [0u8; META_BLOCK];
    sb.encode(&mut a);
    if c.u64() % 8 == 0 {
        // A raw main id field (length byte and 64 bytes), resealed past the CRC.
        for i in 88..153 {
            a[i] = c.u64() as u8;
        }
        let crc = dm_remap_logic::crc32::crc32(&a[..CRC_OFFSET]);
        a[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    }
    match c.u64() % 4 {
        0 => b = a,
        1 => {}
        2 => {
            let mut other = sb;
            other.seq = c.u64();
            other.encode(&mut b);
        }
        _ => {
            a[(c.u64() % META_BLOCK as u64) as usize] ^= 1; // torn
        }
    }
    // Up to 4 logical log blocks, each with two slots of crafted headers and entries.
    let nblocks = (c.u64() % 5) as usize;
    let mut slots = vec![[0u8; META_BLOCK]; 2 * nblocks];
    for (i, s) in slots.iter_mut().enumerate() {
        if c.u64() % 4 == 0 {
            continue; // never written
        }
        let index = if c.u64() % 8 == 0 { c.u32() } else { (i / 2) as u32 };
        log_init(s, &sb.uuid, index);
        let count = (c.u64() % (ENTRIES_PER_BLOCK as u64 + 1)) as usize;
        for _ in 0..count {
            let r = Remap { main: c.pick(main_sectors / 8), spare: c.pick(sb.geometry.pool_blocks) };
            log_push(s, r);
        }
        log_seal(s, c.pick(SEQ_LIMIT), c.pick(sb.geometry.pool_blocks));
        if c.u64() % 16 == 0 {
            s[(c.u64() % META_BLOCK as u64) as usize] ^= 0x80; // torn
        }
    }
    // The two scrub checkpoint slots: crafted seq and position, some of another format,
    // some torn, some never written.
    let mut ckpt = [[0u8; META_BLOCK]; 2];
    for s in ckpt.iter_mut() {
        if c.u64() % 4 == 0 {
            continue;
        }
        let uuid = if c.u64() % 8 == 0 { [c.u64() as u8; 16] } else { sb.uuid };
        let rec = Checkpoint { seq: c.pick(SEQ_LIMIT), position: c.pick(main_sectors / 8), passes: c.u64() };
        ckpt_encode(s, &uuid, &rec);
        if c.u64() % 8 == 0 {
            s[(c.u64() % META_BLOCK as u64) as usize] ^= 0x80; // torn
        }
    }
    // The two bad-block list slots: crafted seq, count, flags and entries (any order, any
    // value), some of another format, some torn, some never written; resealed, so they get
    // past the CRC into the checks.
    let mut badb = [[0u8; META_BLOCK]; 2];
    for s in badb.iter_mut() {
        if c.u64() % 4 == 0 {
            continue;
        }
        let uuid = if c.u64() % 8 == 0 { [c.u64() as u8; 16] } else { sb.uuid };
        let n = (c.u64() % 8) as usize;
        let start = c.pick(main_sectors / 8);
        let step = c.u64() % 3;
        badb_encode(s, &uuid, c.pick(SEQ_LIMIT), c.u32(), (0..n as u64).map(|i| start.wrapping_add(i.wrapping_mul(step))));
        if c.u64() % 4 == 0 {
            // Raw count, flags, reserved word or an entry, resealed.
            let off = [28usize, 40, 44, 48, 56, 48 + 8 * BADB_CAPACITY - 8][(c.u64() % 6) as usize];
            s[off..off + 4].copy_from_slice(&(c.pick(BADB_CAPACITY as u64) as u32).to_le_bytes());
            let crc = dm_remap_logic::crc32::crc32(&s[..CRC_OFFSET]);
            s[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        }
        if c.u64() % 8 == 0 {
            s[(c.u64() % META_BLOCK as u64) as usize] ^= 0x80; // torn
        }
    }

    let Ok(sb) = loader::superblock(&a, &b, &want) else { return };
    // Accepted: the layout fits the devices, so these are exact and cannot overflow.
    let g = sb.geometry;
    let bs_sectors = u64::from(g.block_size / 512);
    assert!(g.pool_blocks > 0 && g.block_size == want.block_size && sb.main_sectors == want.main_sectors);
    assert!(g.pool_sector(g.pool_blocks - 1) + bs_sectors <= want.spare_sectors);
    assert!(g.end_bytes() <= want.spare_sectors.saturating_mul(512));
    assert!(Geometry::log_slot_sector(g.log_blocks, 0) <= g.pool_start);
    assert!(sb.incompat & !INCOMPAT_KNOWN == 0 && (sb.version == VERSION || sb.version == VERSION_V1));
    assert!(want.main_id.is_none() || sb.main_id.is_none() || want.main_id == sb.main_id);
    assert!(MainId::parse(sb.main_id.as_bytes()).is_some() || sb.main_id.is_none());
    if sb.records_sectors != 0 {
        assert!(sb.records_start >= g.pool_sector(g.pool_blocks));
        assert!(sb.records_start.checked_add(sb.records_sectors).is_some_and(|e| e <= want.spare_sectors));
    }
    // The checkpoint: its slots inside the record area; what it resumes from is inside the
    // main device, and the next seq cannot overflow.
    let main_blocks = sb.main_sectors / bs_sectors;
    if let (Some(s0), Some(s1)) = (sb.checkpoint_sector(0), sb.checkpoint_sector(1)) {
        assert!(s0 >= sb.records_start && s1 + META_SECTORS <= sb.records_start + sb.records_sectors);
        assert!(s1 + META_SECTORS <= want.spare_sectors);
    }
    if let Some((r, slot)) = loader::checkpoint(&sb, &ckpt[0], &ckpt[1], main_blocks) {
        assert!(slot <= 1 && r.seq < SEQ_LIMIT && (r.position < main_blocks || r.position == 0));
    }
    // The bad-block list: its slots after the checkpoint's, inside the area; what it loads
    // is inside the main device, sorted, within the capacity, and its next seq cannot
    // overflow.
    if let (Some(s0), Some(s1)) = (sb.bad_blocks_sector(0), sb.bad_blocks_sector(1)) {
        assert!(sb.incompat & INCOMPAT_BADBLOCKS != 0);
        assert!(s0 >= sb.records_start + 2 * META_SECTORS && s1 + META_SECTORS <= sb.records_start + sb.records_sectors);
        assert!(s1 + META_SECTORS <= want.spare_sectors);
    }
    if let Some((h, slot)) = loader::bad_blocks(&sb, &badb[0], &badb[1], main_blocks) {
        assert!(slot <= 1 && h.seq < SEQ_LIMIT && h.count as usize <= BADB_CAPACITY && h.flags & !BADB_OVERFLOW == 0);
        let src = &badb[slot as usize];
        let list: Vec<u64> = (0..h.count).map(|i| badb_entry(src, i)).collect();
        assert!(list.iter().all(|&x| x < main_blocks) && list.windows(2).all(|w| w[0] < w[1]));
    }
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 2 * META_BLOCK];
    let mut tail = [0u8; META_BLOCK];
    let read = |index: u32, out: &mut [u8]| {
        out.fill(0);
        let i = index as usize * 2;
        if i + 1 < slots.len() {
            out[..META_BLOCK].copy_from_slice(&slots[i]);
            out[META_BLOCK..].copy_from_slice(&slots[i + 1]);
        }
        Ok(())
    };
    let Ok(end) = loader::replay(&sb, &mut buf, &mut tail, read, |r| {
        // The loader refused pools too large to number in an entry: every pool block fits.
        entries.push(Entry::remap(r.main, r.spare).expect("a pool block the table cannot hold"));
        true
    }) else {
        return;
    };
    assert!(end.seq < SEQ_LIMIT && end.next_free <= g.pool_blocks);
    for e in &entries {
        assert!(e.main < main_blocks && u64::from(e.spare) < end.next_free);
    }
    // Reads of several blocks at once, and the first resume's replay from the resume point
    // of an unchanged log, end where the whole replay ends, with the same remaps.
    let read_any = |index: u32, out: &mut [u8]| {
        for (k, half) in out.chunks_exact_mut(META_BLOCK).enumerate() {
            match slots.get(index as usize * 2 + k) {
                Some(s) => half.copy_from_slice(s),
                None => half.fill(0),
            }
        }
        Ok(())
    };
    let mut wide = vec![0u8; 3 * 2 * META_BLOCK];
    let mut tail2 = [0u8; META_BLOCK];
    let mut again = Vec::new();
    let end2 = loader::replay(&sb, &mut wide, &mut tail2, read_any, |r| {
        again.push(Entry::remap(r.main, r.spare).expect("a pool block the table cannot hold"));
        true
    });
    assert_eq!(end2, Ok(end));
    assert!(again == entries && tail2 == tail);
    let from = end.resume;
    assert!(from.entries as usize <= entries.len() && from.index <= end.tail_index + 1);
    let mut tail3 = tail;
    let mut rest = Vec::new();
    let end3 = loader::replay_from(&sb, from, &mut wide, &mut tail3, read_any, |r| {
        rest.push(Entry::remap(r.main, r.spare).expect("a pool block the table cannot hold"));
        true
    });
    assert_eq!(end3, Ok(end));
    assert!(rest[..] == entries[from.entries as usize..] && tail3 == tail);
    let _ = loader::estimate(&sb, &mut wide, read_any);
    if loader::finish(&mut entries).is_ok() {
        assert!(entries.windows(2).all(|w| w[0].main < w[1].main));
    }
});
