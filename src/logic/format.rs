// SPDX-License-Identifier: GPL-2.0

//! The on-disk format of the spare device (version 2, which reads version 1), byte for byte
//! in docs/format.md.
//!
//! ```text
//! byte 0       superblock copy A (4 KiB)
//! byte 4096    superblock copy B (4 KiB)
//! byte 8192    remap log: `log_blocks` logical blocks, each with two 4 KiB slots
//! pool_start   the pool of spare blocks, `pool_blocks` x `block_size` bytes
//! ```
//!
//! The log is append-only and sized so that every pool block can be recorded once: a commit
//! never rewrites the whole table. A commit writes the tail logical block into the slot that
//! does *not* hold its last durable version, so a torn write leaves the previous version
//! intact; the slot with the higher sequence number wins on load. All integers are
//! little-endian; each 4 KiB unit ends with a CRC-32 of its first 4092 bytes.

use super::crc32::crc32;
use super::mainid::{MainId, MAX_LEN as MAIN_ID_MAX};

/// Size of a metadata unit (superblock copy or log slot).
pub const META_BLOCK: usize = 4096;
/// Sectors per metadata unit.
pub const META_SECTORS: u64 = (META_BLOCK / 512) as u64;
/// Byte offset of the CRC in a metadata unit; it covers the bytes before it.
pub const CRC_OFFSET: usize = META_BLOCK - 4;
/// Format version written.
pub const VERSION: u32 = 2;
/// Oldest format version still read (and rewritten as [`VERSION`] only by `dmremap upgrade`).
pub const VERSION_V1: u32 = 1;
/// Compatible feature: the superblock records the main device's id. A reader that does not
/// know it can still use the spare correctly (it only cannot check the binding).
pub const COMPAT_MAIN_ID: u64 = 1 << 0;
/// Compatible feature: the record area starts with the two scrub checkpoint slots. A reader
/// that does not know it only restarts the scrub at block 0.
pub const COMPAT_SCRUB_CHECKPOINT: u64 = 1 << 1;
/// Compatible features this code knows. Unknown compatible bits are ignored.
#[allow(dead_code)] // documents the set; the host tests use it
pub const COMPAT_KNOWN: u64 = COMPAT_MAIN_ID | COMPAT_SCRUB_CHECKPOINT;
/// Incompatible feature: the record area holds the persistent bad-block list after the
/// checkpoint slots. A reader that ignored it would serve blocks known to be lost as good.
pub const INCOMPAT_BADBLOCKS: u64 = 1 << 0;
/// Incompatible features this code knows. A spare with any other incompatible bit is refused
/// as "unsupported feature": using it without understanding it could lose data.
pub const INCOMPAT_KNOWN: u64 = INCOMPAT_BADBLOCKS;
/// Superblock magic.
pub const SB_MAGIC: [u8; 8] = *b"DMREMAP\0";
/// Log slot magic.
pub const LOG_MAGIC: [u8; 8] = *b"DMRLOG\0\0";
/// Byte offset of the log.
pub const LOG_START: u64 = 2 * META_BLOCK as u64;
/// Bytes of a log slot before its entries.
pub const LOG_HEADER: usize = 48;
/// Remap entries in one log block.
pub const ENTRIES_PER_BLOCK: usize = (CRC_OFFSET - LOG_HEADER) / 16;
/// Bytes of the record area a new spare gets: two checkpoint slots, then two slots kept for
/// the bad-block list.
pub const RECORDS_BYTES: u64 = 4 * META_BLOCK as u64;
/// Checkpoint slot magic.
pub const CKPT_MAGIC: [u8; 8] = *b"DMRCKPT\0";
/// The record kind of a scrub checkpoint slot.
pub const RECORD_SCRUB_CHECKPOINT: u32 = 1;
/// Bad-block list slot magic.
pub const BADB_MAGIC: [u8; 8] = *b"DMRBADB\0";
/// The record kind of a bad-block list slot.
pub const RECORD_BAD_BLOCKS: u32 = 2;
/// Bytes of a bad-block list slot before its entries.
pub const BADB_HEADER: usize = 48;
/// Blocks a bad-block list slot holds (md keeps 512 in 4 KiB; here each is a whole u64).
pub const BADB_CAPACITY: usize = (CRC_OFFSET - BADB_HEADER) / 8;
/// Bad-block list flag: more blocks were unreadable than the list holds since it was last
/// empty; those beyond it are known in memory only and forgotten by a reload.
pub const BADB_OVERFLOW: u32 = 1 << 0;
/// Byte offset of the bad-block list's slots in the record area (after the checkpoint's).
pub const BADB_RECORDS_OFFSET: u64 = 2 * META_BLOCK as u64;
/// Smallest and largest relocation block sizes.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// See [`MIN_BLOCK_SIZE`].
pub const MAX_BLOCK_SIZE: u32 = 65536;
/// Most pool blocks a spare may have: `u32::MAX`, numbered 0 to `u32::MAX - 1`, so that the
/// in-memory table stores a pool block in 32 bits (`remaps::Entry`, 12 bytes per remap) with
/// `u32::MAX` left for `remaps::PENDING`. The format itself records 64-bit numbers; this is
/// the kernel's limit: [`Geometry::compute`] lays out no larger pool (a bigger spare keeps
/// the rest unused), and the loader refuses a spare whose superblock says more
/// (`loader::LoadError::PoolTooLarge`). It is reached at 2 TiB of pool with 512-byte blocks,
/// 16 TiB with 4 KiB blocks.
pub const MAX_POOL_BLOCKS: u64 = u32::MAX as u64;

/// Where things are on the spare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Relocation block size in bytes.
    pub block_size: u32,
    /// Logical log blocks (each has two slots).
    pub log_blocks: u32,
    /// First sector of the pool.
    pub pool_start: u64,
    /// Spare blocks in the pool.
    pub pool_blocks: u64,
}

impl Geometry {
    /// The layout for a pool of `pool` blocks, if it fits in `spare_bytes`.
    pub fn for_pool(pool: u64, block_size: u32, spare_bytes: u64) -> Option<Geometry> {
        let bs = u64::from(block_size);
        let log_blocks = pool.div_ceil(ENTRIES_PER_BLOCK as u64);
        let log_end = LOG_START.checked_add(log_blocks.checked_mul(2 * META_BLOCK as u64)?)?;
        let pool_start = log_end.div_ceil(bs).checked_mul(bs)?;
        let end = pool_start.checked_add(pool.checked_mul(bs)?)?;
        (end <= spare_bytes && log_blocks <= u64::from(u32::MAX)).then_some(Geometry {
            block_size,
            log_blocks: log_blocks as u32,
            pool_start: pool_start / 512,
            pool_blocks: pool,
        })
    }

    /// Lays out a spare of `spare_bytes` bytes with the largest pool that fits, leaving
    /// [`RECORDS_BYTES`] (4 KiB-aligned) at the end for the record area
    /// ([`Geometry::records`]); a spare too small for that gets the pool alone. `None` if it
    /// cannot hold one pool block.
    pub fn compute(spare_bytes: u64, block_size: u32) -> Option<Geometry> {
        let room = spare_bytes.saturating_sub(RECORDS_BYTES) & !(META_BLOCK as u64 - 1);
        Self::compute_in(room, block_size).or_else(|| Self::compute_in(spare_bytes, block_size))
    }

    /// The record area for this layout on a spare of `spare_bytes`: (first sector, sectors),
    /// 4 KiB-aligned after the pool, if [`RECORDS_BYTES`] fit.
    pub fn records(&self, spare_bytes: u64) -> Option<(u64, u64)> {
        let unit = META_BLOCK as u64;
        let start = self.end_bytes().checked_add(unit - 1)? / unit * unit;
        let end = start.checked_add(RECORDS_BYTES)?;
        (end <= spare_bytes).then_some((start / 512, RECORDS_BYTES / 512))
    }

    /// The largest pool that fits in `spare_bytes` with its log.
    fn compute_in(spare_bytes: u64, block_size: u32) -> Option<Geometry> {
        if !valid_block_size(block_size) {
            return None;
        }
        let bs = u64::from(block_size);
        // Each pool block costs its own bytes plus 2 x 4 KiB / ENTRIES_PER_BLOCK of log:
        // estimate, then step to the exact maximum.
        // floor(avail * E / unit) without 128-bit arithmetic (the kernel has no __udivti3).
        let e = ENTRIES_PER_BLOCK as u64;
        let unit = bs * e + 2 * META_BLOCK as u64;
        let avail = spare_bytes.saturating_sub(LOG_START);
        let mut pool = (avail / unit) * e + (avail % unit) * e / unit;
        while pool > 0 && Self::for_pool(pool, block_size, spare_bytes).is_none() {
            pool -= 1;
        }
        while pool < MAX_POOL_BLOCKS && Self::for_pool(pool + 1, block_size, spare_bytes).is_some() {
            pool += 1;
        }
        // A spare larger than the largest pool keeps the rest unused (a smaller pool always
        // fits where a larger one did).
        pool = pool.min(MAX_POOL_BLOCKS);
        if pool == 0 {
            return None;
        }
        Self::for_pool(pool, block_size, spare_bytes)
    }

    /// Sector of log slot `slot` (0 or 1) of logical block `index`.
    pub fn log_slot_sector(index: u32, slot: u32) -> u64 {
        LOG_START / 512 + (2 * u64::from(index) + u64::from(slot & 1)) * META_SECTORS
    }

    /// Sector of pool block `block`.
    ///
    /// Saturating: for a geometry the loader accepted (`loader::check_geometry`) and a block
    /// in the pool this is exact; for anything else it cannot overflow or panic.
    pub fn pool_sector(&self, block: u64) -> u64 {
        self.pool_start.saturating_add(block.saturating_mul(u64::from(self.block_size / 512)))
    }

    /// Bytes of the spare this geometry uses (saturating, like `pool_sector`: a value read
    /// from a hostile spare may be anything).
    pub fn end_bytes(&self) -> u64 {
        self.pool_start.saturating_mul(512).saturating_add(self.pool_blocks.saturating_mul(u64::from(self.block_size)))
    }
}

/// A power of two between [`MIN_BLOCK_SIZE`] and [`MAX_BLOCK_SIZE`].
pub fn valid_block_size(bs: u32) -> bool {
    bs.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs)
}

/// The superblock (two copies, identical but for `seq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Format version of this copy ([`VERSION_V1`] or [`VERSION`]); `encode` writes it.
    pub version: u32,
    /// Compatible feature bits (v2; 0 in v1).
    pub compat: u64,
    /// Incompatible feature bits (v2; 0 in v1).
    pub incompat: u64,
    /// The main device this spare belongs to (v2 with [`COMPAT_MAIN_ID`]; else none).
    pub main_id: MainId,
    /// First sector of the record area (v2; 0 = none): fixed-size records in double-buffered
    /// slots (docs/format.md), today the scrub checkpoint.
    pub records_start: u64,
    /// Sectors of the record area (0 = none).
    pub records_sectors: u64,
    /// Generation of this copy; the higher valid one wins.
    pub seq: u64,
    /// Identifies this format of the spare; every log slot carries it.
    pub uuid: [u8; 16],
    /// Length of the main device (target) in sectors at format time.
    pub main_sectors: u64,
    /// The layout.
    pub geometry: Geometry,
}

/// Why a metadata unit was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// No magic: never written (or not ours).
    NoMagic,
    /// Magic present but the CRC does not match: torn or corrupt.
    BadCrc,
    /// A version this code does not know.
    BadVersion,
    /// An incompatible feature this code does not know.
    UnknownFeature,
    /// CRC fine but a field is impossible (e.g. geometry that does not add up).
    BadField,
}

// Fixed-size array conversions compile to one load or store; a slice copy_from_slice
// became a call to memcpy per field, which dominated decoding a long log. Offsets are
// constants inside the 4 KiB unit; out of range reads as 0 and writes nothing.
#[inline]
fn put_u32(b: &mut [u8], off: usize, v: u32) {
    if let Some(d) = b.get_mut(off..off.saturating_add(4)).and_then(|d| <&mut [u8; 4]>::try_from(d).ok()) {
        *d = v.to_le_bytes();
    }
}
#[inline]
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    if let Some(d) = b.get_mut(off..off.saturating_add(8)).and_then(|d| <&mut [u8; 8]>::try_from(d).ok()) {
        *d = v.to_le_bytes();
    }
}
#[inline]
fn get_u32(b: &[u8], off: usize) -> u32 {
    b.get(off..off.saturating_add(4)).and_then(|s| <[u8; 4]>::try_from(s).ok()).map_or(0, u32::from_le_bytes)
}
#[inline]
fn get_u64(b: &[u8], off: usize) -> u64 {
    b.get(off..off.saturating_add(8)).and_then(|s| <[u8; 8]>::try_from(s).ok()).map_or(0, u64::from_le_bytes)
}

fn seal(b: &mut [u8; META_BLOCK]) {
    let c = crc32(&b[..CRC_OFFSET]);
    put_u32(b, CRC_OFFSET, c);
}

fn check(b: &[u8; META_BLOCK], magic: &[u8; 8]) -> Result<(), DecodeError> {
    if &b[..8] != magic {
        return Err(DecodeError::NoMagic);
    }
    if crc32(&b[..CRC_OFFSET]) != get_u32(b, CRC_OFFSET) {
        return Err(DecodeError::BadCrc);
    }
    Ok(())
}

impl Superblock {
    /// A new superblock of the current version.
    pub fn new(seq: u64, uuid: [u8; 16], main_sectors: u64, geometry: Geometry, main_id: MainId) -> Superblock {
        Superblock {
            version: VERSION,
            compat: if main_id.is_none() { 0 } else { COMPAT_MAIN_ID },
            incompat: 0,
            main_id,
            records_start: 0,
            records_sectors: 0,
            seq,
            uuid,
            main_sectors,
            geometry,
        }
    }

    /// With the record area and its checkpoint slots, if the spare (`spare_bytes`) has room
    /// after the pool (a new v2 spare, laid out by [`Geometry::compute`]).
    pub fn with_records(mut self, spare_bytes: u64) -> Superblock {
        if let (VERSION, Some((start, sectors))) = (self.version, self.geometry.records(spare_bytes)) {
            self.records_start = start;
            self.records_sectors = sectors;
            self.compat |= COMPAT_SCRUB_CHECKPOINT;
            self.incompat |= INCOMPAT_BADBLOCKS;
        }
        self
    }

    /// Sector of bad-block list slot `slot` (0 or 1), if this spare has one: the `BADBLOCKS`
    /// feature (which `decode` accepts only with a record area of four slots).
    pub fn bad_blocks_sector(&self, slot: u32) -> Option<u64> {
        let has = self.version == VERSION && self.incompat & INCOMPAT_BADBLOCKS != 0 && self.records_sectors >= 4 * META_SECTORS;
        let off = (BADB_RECORDS_OFFSET / 512).checked_add(u64::from(slot & 1) * META_SECTORS)?;
        has.then(|| self.records_start.checked_add(off)).flatten()
    }

    /// Sector of scrub checkpoint slot `slot` (0 or 1), if this spare has them: the
    /// `SCRUB_CHECKPOINT` feature and a record area of at least two slots.
    pub fn checkpoint_sector(&self, slot: u32) -> Option<u64> {
        let has = self.version == VERSION
            && self.compat & COMPAT_SCRUB_CHECKPOINT != 0
            && self.records_start != 0
            && self.records_sectors >= 2 * META_SECTORS;
        has.then(|| self.records_start.checked_add(u64::from(slot & 1) * META_SECTORS)).flatten()
    }

    /// Encodes into a 4 KiB unit, as version `self.version` (v1 has no v2 fields).
    pub fn encode(&self, b: &mut [u8; META_BLOCK]) {
        b.fill(0);
        b[..8].copy_from_slice(&SB_MAGIC);
        put_u32(b, 8, self.version);
        put_u32(b, 12, self.geometry.block_size);
        put_u64(b, 16, self.seq);
        b[24..40].copy_from_slice(&self.uuid);
        put_u64(b, 40, self.main_sectors);
        put_u32(b, 48, self.geometry.log_blocks);
        put_u64(b, 56, self.geometry.pool_start);
        put_u64(b, 64, self.geometry.pool_blocks);
        if self.version >= VERSION {
            put_u64(b, 72, self.compat);
            put_u64(b, 80, self.incompat);
            let (len, id) = self.main_id.encode();
            b[88] = len;
            b[89..89 + MAIN_ID_MAX].copy_from_slice(&id);
            put_u64(b, 160, self.records_start);
            put_u64(b, 168, self.records_sectors);
        }
        seal(b);
    }

    /// Decodes and validates a 4 KiB unit.
    pub fn decode(b: &[u8; META_BLOCK]) -> Result<Superblock, DecodeError> {
        check(b, &SB_MAGIC)?;
        let version = get_u32(b, 8);
        if version != VERSION && version != VERSION_V1 {
            return Err(DecodeError::BadVersion);
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[24..40]);
        let (mut compat, mut incompat, mut main_id, mut records_start, mut records_sectors) = (0, 0, MainId::NONE, 0, 0);
        if version == VERSION {
            compat = get_u64(b, 72);
            incompat = get_u64(b, 80);
            if incompat & !INCOMPAT_KNOWN != 0 {
                return Err(DecodeError::UnknownFeature);
            }
            let mut id = [0u8; MAIN_ID_MAX];
            id.copy_from_slice(&b[89..89 + MAIN_ID_MAX]);
            main_id = MainId::decode(b[88], &id).ok_or(DecodeError::BadField)?;
            // The flag says whether an id is recorded; they must agree.
            if main_id.is_none() == (compat & COMPAT_MAIN_ID != 0) {
                return Err(DecodeError::BadField);
            }
            records_start = get_u64(b, 160);
            records_sectors = get_u64(b, 168);
            if (records_start == 0) != (records_sectors == 0) {
                return Err(DecodeError::BadField);
            }
            // The list lives in slots 2 and 3 of the area: without them the bit is a lie.
            if incompat & INCOMPAT_BADBLOCKS != 0 && (records_start == 0 || records_sectors < 4 * META_SECTORS) {
                return Err(DecodeError::BadField);
            }
        }
        let geometry = Geometry {
            block_size: get_u32(b, 12),
            log_blocks: get_u32(b, 48),
            pool_start: get_u64(b, 56),
            pool_blocks: get_u64(b, 64),
        };
        let sb = Superblock {
            version,
            compat,
            incompat,
            main_id,
            records_start,
            records_sectors,
            seq: get_u64(b, 16),
            uuid,
            main_sectors: get_u64(b, 40),
            geometry,
        };
        // The layout must be one that `Geometry` could have produced: log big enough for the
        // pool, pool after the log.
        let g = &sb.geometry;
        let log_end_sector = Geometry::log_slot_sector(g.log_blocks, 0);
        let ok = valid_block_size(g.block_size)
            && g.pool_blocks > 0
            && u64::from(g.log_blocks) >= g.pool_blocks.div_ceil(ENTRIES_PER_BLOCK as u64)
            && g.pool_start >= log_end_sector
            && g.pool_start % u64::from(g.block_size / 512) == 0
            && g.pool_blocks.checked_mul(u64::from(g.block_size)).is_some()
            && sb.main_sectors > 0;
        if !ok {
            return Err(DecodeError::BadField);
        }
        Ok(sb)
    }
}

/// What the two superblock copies say together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuperblockChoice {
    /// The newest valid copy.
    Valid(Superblock),
    /// Neither copy has the magic: a blank spare (may be formatted).
    Blank,
    /// At least one copy has the magic but none is valid: refuse, never overwrite.
    Corrupt,
}

/// Picks the newest valid superblock copy.
pub fn choose_superblock(a: &[u8; META_BLOCK], b: &[u8; META_BLOCK]) -> SuperblockChoice {
    match (Superblock::decode(a), Superblock::decode(b)) {
        (Ok(x), Ok(y)) => SuperblockChoice::Valid(if y.seq > x.seq { y } else { x }),
        (Ok(x), Err(_)) | (Err(_), Ok(x)) => SuperblockChoice::Valid(x),
        (Err(DecodeError::NoMagic), Err(DecodeError::NoMagic)) => SuperblockChoice::Blank,
        _ => SuperblockChoice::Corrupt,
    }
}

/// A scrub checkpoint: where the scrub goes on after a reload, reboot or power cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Generation; the valid slot with the higher one wins.
    pub seq: u64,
    /// Next main block to read (relocation blocks, target-relative).
    pub position: u64,
    /// Passes completed.
    pub passes: u64,
}

/// Encodes a checkpoint slot of the spare formatted as `uuid`.
pub fn ckpt_encode(b: &mut [u8; META_BLOCK], uuid: &[u8; 16], c: &Checkpoint) {
    b.fill(0);
    b[..8].copy_from_slice(&CKPT_MAGIC);
    b[8..24].copy_from_slice(uuid);
    put_u32(b, 24, RECORD_SCRUB_CHECKPOINT);
    put_u64(b, 32, c.seq);
    put_u64(b, 40, c.position);
    put_u64(b, 48, c.passes);
    seal(b);
}

/// Decodes a checkpoint slot of the spare formatted as `uuid` (magic, CRC, uuid, kind and
/// the reserved bytes checked; the position is judged by the loader).
pub fn ckpt_decode(b: &[u8; META_BLOCK], uuid: &[u8; 16]) -> Result<Checkpoint, DecodeError> {
    check(b, &CKPT_MAGIC)?;
    if b[8..24] != *uuid {
        // Left over from an earlier format of this spare.
        return Err(DecodeError::NoMagic);
    }
    if get_u32(b, 24) != RECORD_SCRUB_CHECKPOINT || get_u32(b, 28) != 0 || b[56..CRC_OFFSET].iter().any(|&x| x != 0) {
        return Err(DecodeError::BadField);
    }
    Ok(Checkpoint { seq: get_u64(b, 32), position: get_u64(b, 40), passes: get_u64(b, 48) })
}

/// The header of a bad-block list slot; its entries are read with [`badb_entry`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BadBlocksHeader {
    /// Generation; the valid slot with the higher one wins.
    pub seq: u64,
    /// Entries in the slot, at most [`BADB_CAPACITY`].
    pub count: u32,
    /// [`BADB_OVERFLOW`] or 0.
    pub flags: u32,
}

/// Encodes a bad-block list slot of the spare formatted as `uuid`: `blocks` (main blocks,
/// strictly increasing; at most [`BADB_CAPACITY`] are taken, the rest set the overflow flag).
pub fn badb_encode(b: &mut [u8; META_BLOCK], uuid: &[u8; 16], seq: u64, flags: u32, blocks: impl Iterator<Item = u64>) -> u32 {
    b.fill(0);
    b[..8].copy_from_slice(&BADB_MAGIC);
    b[8..24].copy_from_slice(uuid);
    put_u32(b, 24, RECORD_BAD_BLOCKS);
    put_u64(b, 32, seq);
    let mut n = 0usize;
    let mut flags = flags & BADB_OVERFLOW;
    for x in blocks {
        if n == BADB_CAPACITY {
            flags |= BADB_OVERFLOW;
            break;
        }
        let off = BADB_HEADER + 8 * n;
        put_u64(b, off, x);
        n += 1;
    }
    put_u32(b, 28, n as u32);
    put_u32(b, 40, flags);
    seal(b);
    n as u32
}

/// Decodes a bad-block list slot of the spare formatted as `uuid`: magic, CRC, uuid, kind,
/// count, flags, zero tail, and entries strictly increasing and below `main_blocks`.
pub fn badb_decode(b: &[u8; META_BLOCK], uuid: &[u8; 16], main_blocks: u64) -> Result<BadBlocksHeader, DecodeError> {
    check(b, &BADB_MAGIC)?;
    if b[8..24] != *uuid {
        return Err(DecodeError::NoMagic);
    }
    let count = get_u32(b, 28);
    let flags = get_u32(b, 40);
    if get_u32(b, 24) != RECORD_BAD_BLOCKS || count as usize > BADB_CAPACITY || flags & !BADB_OVERFLOW != 0 || get_u32(b, 44) != 0 {
        return Err(DecodeError::BadField);
    }
    let end = BADB_HEADER + 8 * count as usize;
    if b[end..CRC_OFFSET].iter().any(|&x| x != 0) {
        return Err(DecodeError::BadField);
    }
    let mut prev: Option<u64> = None;
    for i in 0..count as usize {
        let x = get_u64(b, BADB_HEADER + 8 * i);
        if x >= main_blocks || prev.is_some_and(|p| x <= p) {
            return Err(DecodeError::BadField);
        }
        prev = Some(x);
    }
    Ok(BadBlocksHeader { seq: get_u64(b, 32), count, flags })
}

/// Entry `i` of a slot [`badb_decode`] accepted (0 past the end).
pub fn badb_entry(b: &[u8; META_BLOCK], i: u32) -> u64 {
    if i as usize >= BADB_CAPACITY {
        return 0;
    }
    get_u64(b, BADB_HEADER + 8 * i as usize)
}

/// One remap: main block `main` lives at pool block `spare`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Remap {
    /// Block number on the main device (target-relative, in relocation blocks).
    pub main: u64,
    /// Block number in the spare pool.
    pub spare: u64,
}

/// The header of one version of a logical log block. The entries stay in the encoded
/// 4 KiB block (read with [`log_entry`], appended with [`log_push`]): a block is never held
/// as a 4 KiB value, which would not fit comfortably on a kernel stack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogHeader {
    /// Sequence number of the commit that wrote this version.
    pub seq: u64,
    /// Logical index in the log.
    pub index: u32,
    /// Number of valid entries.
    pub count: u32,
    /// Pool allocation position after this commit.
    pub next_free: u64,
}

impl LogHeader {
    /// Whether the block has no room for another entry.
    pub fn is_full(&self) -> bool {
        self.count as usize == ENTRIES_PER_BLOCK
    }
}

/// Reads the header fields of an encoded log block (no validation).
pub fn log_header(b: &[u8; META_BLOCK]) -> LogHeader {
    LogHeader { seq: get_u64(b, 24), index: get_u32(b, 32), count: get_u32(b, 36), next_free: get_u64(b, 40) }
}

/// Entry `i` of an encoded log block.
#[allow(dead_code)] // the host's readers of the log; the loader uses log_entries
pub fn log_entry(b: &[u8; META_BLOCK], i: usize) -> Remap {
    let off = LOG_HEADER + 16 * (i % ENTRIES_PER_BLOCK);
    Remap { main: get_u64(b, off), spare: get_u64(b, off + 8) }
}

/// The first `count` entries of an encoded log block, in order (at most 252): what
/// [`log_entry`] gives for `0..count`, without an index computation per entry.
pub fn log_entries(b: &[u8; META_BLOCK], count: u32) -> LogEntries<'_> {
    LogEntries { b, at: LOG_HEADER, end: LOG_HEADER + 16 * (count as usize).min(ENTRIES_PER_BLOCK) }
}

/// The iterator of [`log_entries`].
pub struct LogEntries<'a> {
    b: &'a [u8; META_BLOCK],
    at: usize,
    end: usize,
}

impl Iterator for LogEntries<'_> {
    type Item = Remap;

    #[inline]
    fn next(&mut self) -> Option<Remap> {
        if self.at >= self.end {
            return None;
        }
        let r = Remap { main: get_u64(self.b, self.at), spare: get_u64(self.b, self.at + 8) };
        self.at += 16;
        Some(r)
    }
}

/// Starts an empty logical block `index` of the spare formatted as `uuid`.
pub fn log_init(b: &mut [u8; META_BLOCK], uuid: &[u8; 16], index: u32) {
    b.fill(0);
    b[..8].copy_from_slice(&LOG_MAGIC);
    b[8..24].copy_from_slice(uuid);
    put_u32(b, 32, index);
}

/// Appends an entry; false if the block is full.
pub fn log_push(b: &mut [u8; META_BLOCK], r: Remap) -> bool {
    let count = get_u32(b, 36) as usize;
    if count >= ENTRIES_PER_BLOCK {
        return false;
    }
    put_u64(b, LOG_HEADER + 16 * count, r.main);
    put_u64(b, LOG_HEADER + 16 * count + 8, r.spare);
    put_u32(b, 36, count as u32 + 1);
    true
}

/// Stamps the commit's sequence number and allocation position, and the CRC.
pub fn log_seal(b: &mut [u8; META_BLOCK], seq: u64, next_free: u64) {
    put_u64(b, 24, seq);
    put_u64(b, 40, next_free);
    seal(b);
}

/// Validates a slot expected to hold logical block `index` of the spare described by `sb`.
pub fn log_decode(b: &[u8; META_BLOCK], sb: &Superblock, index: u32) -> Result<LogHeader, DecodeError> {
    check(b, &LOG_MAGIC)?;
    log_fields(b, sb, index)
}

/// [`log_decode`] without the CRC: the magic, the uuid (`NoMagic` if either differs) and the
/// fields (`BadField`). Says nothing about whether the slot is intact; `log_decode` is this
/// on a slot whose CRC matches.
fn log_fields(b: &[u8; META_BLOCK], sb: &Superblock, index: u32) -> Result<LogHeader, DecodeError> {
    if b[..8] != LOG_MAGIC || b[8..24] != sb.uuid {
        // A slot left over from an earlier format of this spare.
        return Err(DecodeError::NoMagic);
    }
    let h = log_header(b);
    if h.index != index || h.count == 0 || h.count as usize > ENTRIES_PER_BLOCK || h.next_free > sb.geometry.pool_blocks {
        return Err(DecodeError::BadField);
    }
    // `Superblock::decode` refuses a block size under 512, but this takes any superblock:
    // no division by zero (and no panic path in the kernel object) either way.
    let Some(main_blocks) = sb.main_sectors.checked_div(u64::from(sb.geometry.block_size / 512)) else {
        return Err(DecodeError::BadField);
    };
    for r in log_entries(b, h.count) {
        if r.main >= main_blocks || r.spare >= h.next_free {
            return Err(DecodeError::BadField);
        }
    }
    Ok(h)
}

/// Picks the version of a logical block from its two slots: the valid one with the higher
/// sequence number, and which slot (0 or 1) it is in. The loader uses [`log_choose`], which
/// also refuses impossible fields.
#[allow(dead_code)] // the host tests' reference for log_choose
pub fn choose_log_slot(
    s0: &[u8; META_BLOCK],
    s1: &[u8; META_BLOCK],
    sb: &Superblock,
    index: u32,
) -> Option<(LogHeader, u32)> {
    // The slot whose header claims the higher seq (slot 0 on a tie) is checked first: if it
    // is valid it wins whatever the other holds, so its CRC and entries are checked alone.
    // The same choice as checking both, at half the cost for a log written twice over.
    let first = if log_header(s1).seq > log_header(s0).seq { 1 } else { 0 };
    for slot in [first, 1 - first] {
        if let Ok(h) = log_decode(if slot == 0 { s0 } else { s1 }, sb, index) {
            return Some((h, slot));
        }
    }
    None
}

/// The loader's choice for one logical block: [`choose_log_slot`]'s version, or
/// `Err(BadField)` if either slot is intact (magic, uuid, CRC) but holds impossible fields,
/// exactly as calling [`log_decode`] on both slots first would decide, at one CRC per block
/// when the newer slot is valid (not three).
///
/// The slot that wins is decoded in full. The other one can only matter by being a
/// CRC-valid slot with impossible fields (corruption or a crafted spare, which a crash never
/// leaves); its fields are checked first, without the CRC, and only if they are impossible
/// is its CRC computed, to tell that refusal from a torn write (bad CRC: ignored). A slot
/// whose fields are possible cannot be refused whatever its CRC, so the CRC is skipped.
pub fn log_choose(s0: &[u8; META_BLOCK], s1: &[u8; META_BLOCK], sb: &Superblock, index: u32) -> Result<Option<(LogHeader, u32)>, DecodeError> {
    let first = if log_header(s1).seq > log_header(s0).seq { 1 } else { 0 };
    let (a, b) = if first == 0 { (s0, s1) } else { (s1, s0) };
    match log_decode(a, sb, index) {
        Ok(h) => {
            if log_fields(b, sb, index) == Err(DecodeError::BadField) && crc32(&b[..CRC_OFFSET]) == get_u32(b, CRC_OFFSET) {
                return Err(DecodeError::BadField);
            }
            Ok(Some((h, first)))
        }
        Err(DecodeError::BadField) => Err(DecodeError::BadField),
        Err(_) => match log_decode(b, sb, index) {
            Ok(h) => Ok(Some((h, 1 - first))),
            Err(DecodeError::BadField) => Err(DecodeError::BadField),
            Err(_) => Ok(None),
        },
    }
}

/// Replays the log block by block, as the loader reads it.
///
/// Feed each logical block's chosen version in index order; `accept` says whether it
/// belongs to the log. The log ends at the first block with no valid slot, or whose
/// sequence number is lower than its predecessor's: a block is only ever appended to while
/// it is the tail, so a lower number is a leftover of a commit that was never acknowledged.
#[derive(Debug, Default)]
pub struct Replay {
    /// Highest commit sequence number seen.
    pub seq: u64,
    /// Pool allocation position.
    pub next_free: u64,
    /// Logical blocks accepted.
    pub blocks: u32,
}

impl Replay {
    /// Accepts or rejects the next block; rejected ends the log.
    pub fn accept(&mut self, lb: &LogHeader) -> bool {
        if lb.index != self.blocks || (self.blocks > 0 && lb.seq < self.seq) || lb.next_free < self.next_free {
            return false;
        }
        self.seq = lb.seq;
        self.next_free = lb.next_free;
        self.blocks += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> Superblock {
        Superblock::new(1, [7; 16], 1 << 20, Geometry::compute(64 << 20, 4096).unwrap(), MainId::NONE)
    }

    #[test]
    fn geometry_fits_and_is_maximal() {
        for spare in [20_480u64, 1 << 20, 64 << 20, (1 << 30) + 12_345, 1 << 40] {
            for bs in [512u32, 4096, 65536] {
                let Some(g) = Geometry::compute(spare, bs) else { continue };
                assert!(g.end_bytes() <= spare);
                assert!(u64::from(g.log_blocks) * ENTRIES_PER_BLOCK as u64 >= g.pool_blocks);
                assert!(g.pool_start >= Geometry::log_slot_sector(g.log_blocks, 0));
                assert_eq!((g.pool_start * 512) % u64::from(bs), 0);
                // One more block would not fit (with the record area, where there is one).
                let room = if g.records(spare).is_some() { (spare - RECORDS_BYTES) & !4095 } else { spare };
                assert_eq!(Geometry::for_pool(g.pool_blocks + 1, bs, room), None);
                assert!(g.records(spare).is_some() || spare < (1 << 20));
            }
        }
        assert_eq!(Geometry::compute(8192 + 8192 + 4095, 4096), None);
        assert!(Geometry::compute(8192 + 8192 + 4096, 4096).is_some());
        assert_eq!(Geometry::compute(1 << 20, 3000), None);
    }

    #[test]
    fn pools_are_capped_at_max_pool_blocks() {
        // 4 TiB with 512-byte blocks would hold about 8.5 G pool blocks: capped, the rest
        // unused, the layout still consistent (log for the capped pool, records after it).
        let spare = 1u64 << 42;
        let g = Geometry::compute(spare, 512).unwrap();
        assert_eq!(g.pool_blocks, MAX_POOL_BLOCKS);
        assert_eq!(u64::from(g.log_blocks), MAX_POOL_BLOCKS.div_ceil(ENTRIES_PER_BLOCK as u64));
        assert!(g.end_bytes() < spare && g.records(spare).is_some());
        // The same spare with 4 KiB blocks stays under the cap and uses it all.
        let g = Geometry::compute(spare, 4096).unwrap();
        assert!(g.pool_blocks < MAX_POOL_BLOCKS);
        assert_eq!(Geometry::for_pool(g.pool_blocks + 1, 4096, (spare - RECORDS_BYTES) & !4095), None);
        // Exactly at the cap: the largest pool block is below PENDING.
        assert_eq!(MAX_POOL_BLOCKS - 1, u64::from(crate::remaps::PENDING) - 1);
    }

    #[test]
    fn documented_example() {
        // docs/format.md: a 4 MiB spare with 4 KiB blocks.
        let g = Geometry::compute(4 << 20, 4096).unwrap();
        assert_eq!((g.pool_blocks, g.log_blocks, g.pool_start * 512), (1008, 4, 40960));
        assert_eq!(ENTRIES_PER_BLOCK, 252);
        // The record area: 16 KiB right after the pool, 8 KiB of slack after it.
        assert_eq!(g.records(4 << 20), Some((4169728 / 512, 32)));
        let sb = Superblock::new(1, [7; 16], 32768, g, MainId::NONE).with_records(4 << 20);
        assert_eq!((sb.records_start, sb.records_sectors, sb.compat), (8144, 32, COMPAT_SCRUB_CHECKPOINT));
        assert_eq!((sb.checkpoint_sector(0), sb.checkpoint_sector(1)), (Some(8144), Some(8152)));
    }

    #[test]
    fn record_area_fits_or_is_left_out() {
        for spare in [24576u64, 40960, 65536, 65536 + 512, 1 << 20, (4 << 20) + 4095, 1 << 30] {
            for bs in [512u32, 4096, 65536] {
                let Some(g) = Geometry::compute(spare, bs) else { continue };
                assert!(g.end_bytes() <= spare);
                if let Some((start, sectors)) = g.records(spare) {
                    assert_eq!(start % META_SECTORS, 0);
                    assert!(start * 512 >= g.end_bytes() && (start + sectors) * 512 <= spare, "{spare} {bs}");
                } else {
                    // Only spares too small to give up 16 KiB of pool are left without one.
                    assert!(Geometry::compute_in(spare.saturating_sub(RECORDS_BYTES) & !4095, bs).is_none(), "{spare} {bs}");
                }
            }
        }
        // A v1 superblock never gets an area; no area, no checkpoint.
        let g = Geometry::compute(1 << 20, 4096).unwrap();
        let v1 = Superblock { version: VERSION_V1, ..Superblock::new(1, [7; 16], 8, g, MainId::NONE) };
        assert_eq!(v1.with_records(1 << 20).records_start, 0);
        assert_eq!(Superblock::new(1, [7; 16], 8, g, MainId::NONE).checkpoint_sector(0), None);
        // The area written survives encode/decode.
        let sb = Superblock::new(1, [7; 16], 8, g, MainId::NONE).with_records(1 << 20);
        let mut b = [0u8; META_BLOCK];
        sb.encode(&mut b);
        assert_eq!(Superblock::decode(&b), Ok(sb));
    }

    #[test]
    fn checkpoint_slot_round_trip_and_damage() {
        let c = Checkpoint { seq: 5, position: 1234, passes: 2 };
        let mut b = [0u8; META_BLOCK];
        ckpt_encode(&mut b, &[1; 16], &c);
        assert_eq!(&b[..8], b"DMRCKPT\0");
        assert_eq!((get_u32(&b, 24), get_u64(&b, 32), get_u64(&b, 40), get_u64(&b, 48)), (1, 5, 1234, 2));
        assert_eq!(ckpt_decode(&b, &[1; 16]), Ok(c));
        assert_eq!(ckpt_decode(&b, &[2; 16]), Err(DecodeError::NoMagic));
        let mut torn = b;
        torn[40] ^= 1;
        assert_eq!(ckpt_decode(&torn, &[1; 16]), Err(DecodeError::BadCrc));
        let mut kind = b;
        put_u32(&mut kind, 24, 2);
        seal(&mut kind);
        assert_eq!(ckpt_decode(&kind, &[1; 16]), Err(DecodeError::BadField));
        let mut junk = b;
        junk[100] = 1;
        seal(&mut junk);
        assert_eq!(ckpt_decode(&junk, &[1; 16]), Err(DecodeError::BadField));
        assert_eq!(ckpt_decode(&[0; META_BLOCK], &[1; 16]), Err(DecodeError::NoMagic));
    }

    #[test]
    fn bad_blocks_slot_round_trip_and_damage() {
        let mut b = [0u8; META_BLOCK];
        assert_eq!(badb_encode(&mut b, &[1; 16], 7, 0, [3u64, 9, 4000].into_iter()), 3);
        assert_eq!(&b[..8], b"DMRBADB\0");
        assert_eq!((get_u32(&b, 24), get_u32(&b, 28), get_u64(&b, 32), get_u32(&b, 40)), (2, 3, 7, 0));
        assert_eq!((get_u64(&b, 48), get_u64(&b, 56), get_u64(&b, 64)), (3, 9, 4000));
        assert_eq!(badb_decode(&b, &[1; 16], 4001), Ok(BadBlocksHeader { seq: 7, count: 3, flags: 0 }));
        assert_eq!((badb_entry(&b, 0), badb_entry(&b, 2), badb_entry(&b, 9999)), (3, 4000, 0));
        // An entry past the main device, another spare's slot, a torn write, junk after the
        // entries, an unsorted list, a count past the capacity, an unknown flag: refused.
        assert_eq!(badb_decode(&b, &[1; 16], 4000), Err(DecodeError::BadField));
        assert_eq!(badb_decode(&b, &[2; 16], 4001), Err(DecodeError::NoMagic));
        let mut torn = b;
        torn[50] ^= 1;
        assert_eq!(badb_decode(&torn, &[1; 16], 4001), Err(DecodeError::BadCrc));
        let mut junk = b;
        junk[72] = 1;
        seal(&mut junk);
        assert_eq!(badb_decode(&junk, &[1; 16], 4001), Err(DecodeError::BadField));
        let mut unsorted = b;
        put_u64(&mut unsorted, 56, 3);
        seal(&mut unsorted);
        assert_eq!(badb_decode(&unsorted, &[1; 16], 4001), Err(DecodeError::BadField));
        let mut big = b;
        put_u32(&mut big, 28, BADB_CAPACITY as u32 + 1);
        seal(&mut big);
        assert_eq!(badb_decode(&big, &[1; 16], 4001), Err(DecodeError::BadField));
        let mut flag = b;
        put_u32(&mut flag, 40, 2);
        seal(&mut flag);
        assert_eq!(badb_decode(&flag, &[1; 16], 4001), Err(DecodeError::BadField));
        assert_eq!(badb_decode(&[0; META_BLOCK], &[1; 16], 4001), Err(DecodeError::NoMagic));
    }

    #[test]
    fn bad_blocks_list_full_sets_overflow() {
        assert_eq!(BADB_CAPACITY, 505);
        let mut b = [0u8; META_BLOCK];
        assert_eq!(badb_encode(&mut b, &[1; 16], 1, 0, 0..1000), 505);
        let h = badb_decode(&b, &[1; 16], 1000).unwrap();
        assert_eq!((h.count, h.flags), (505, BADB_OVERFLOW));
        assert_eq!(badb_entry(&b, 504), 504);
        // Exactly full is not an overflow; the flag given is kept.
        assert_eq!(badb_encode(&mut b, &[1; 16], 2, 0, 0..505), 505);
        assert_eq!(badb_decode(&b, &[1; 16], 1000).unwrap().flags, 0);
        badb_encode(&mut b, &[1; 16], 3, BADB_OVERFLOW, 0..2);
        assert_eq!(badb_decode(&b, &[1; 16], 1000).unwrap(), BadBlocksHeader { seq: 3, count: 2, flags: BADB_OVERFLOW });
    }

    #[test]
    fn bad_blocks_feature_needs_its_slots() {
        let g = Geometry::compute(4 << 20, 4096).unwrap();
        let sb = Superblock::new(1, [7; 16], 32768, g, MainId::NONE).with_records(4 << 20);
        assert_eq!(sb.incompat, INCOMPAT_BADBLOCKS);
        assert_eq!((sb.bad_blocks_sector(0), sb.bad_blocks_sector(1)), (Some(8160), Some(8168)));
        let mut b = [0u8; META_BLOCK];
        sb.encode(&mut b);
        assert_eq!(Superblock::decode(&b), Ok(sb));
        // The bit with an area too small for the list's slots is not a valid superblock.
        let small = Superblock { records_sectors: 16, ..sb };
        small.encode(&mut b);
        assert_eq!(Superblock::decode(&b), Err(DecodeError::BadField));
        let none = Superblock { records_start: 0, records_sectors: 0, compat: 0, ..sb };
        none.encode(&mut b);
        assert_eq!(Superblock::decode(&b), Err(DecodeError::BadField));
        // Without the bit there is no list, whatever the area.
        assert_eq!(Superblock { incompat: 0, ..sb }.bad_blocks_sector(0), None);
    }

    #[test]
    fn documented_v2_example() {
        let g = Geometry::compute(4 << 20, 4096).unwrap();
        let sb = Superblock::new(1, [7; 16], 32768, g, MainId::parse(b"disk-a").unwrap());
        let mut b = [0u8; META_BLOCK];
        sb.encode(&mut b);
        assert_eq!(&b[8..12], &[2, 0, 0, 0]);
        assert_eq!(&b[72..80], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!((b[88], &b[89..95]), (6, &b"disk-a"[..]));
        assert!(b[95..160].iter().all(|&x| x == 0) && b[160..176].iter().all(|&x| x == 0));
        assert_eq!(Superblock::decode(&b), Ok(sb));
        // The same as v1 has none of the v2 fields, and decodes without them.
        let v1 = Superblock { version: VERSION_V1, compat: 0, main_id: MainId::NONE, ..sb };
        v1.encode(&mut b);
        assert!(b[72..176].iter().all(|&x| x == 0));
        assert_eq!(Superblock::decode(&b), Ok(v1));
    }

    #[test]
    fn superblock_round_trip() {
        let s = sb();
        let mut b = [0u8; META_BLOCK];
        s.encode(&mut b);
        assert_eq!(Superblock::decode(&b), Ok(s));
    }

    fn log_block(sb: &Superblock, index: u32, seq: u64, next_free: u64, entries: &[(u64, u64)]) -> [u8; META_BLOCK] {
        let mut b = [0u8; META_BLOCK];
        log_init(&mut b, &sb.uuid, index);
        for &(main, spare) in entries {
            assert!(log_push(&mut b, Remap { main, spare }));
        }
        log_seal(&mut b, seq, next_free);
        b
    }

    #[test]
    fn log_round_trip_and_full_block() {
        let s = sb();
        let b = log_block(&s, 3, 9, 10, &[(100, 0), (101, 7)]);
        let h = log_decode(&b, &s, 3).unwrap();
        assert_eq!(h, LogHeader { seq: 9, index: 3, count: 2, next_free: 10 });
        assert_eq!(log_entry(&b, 1), Remap { main: 101, spare: 7 });
        assert_eq!(log_entries(&b, 2).collect::<Vec<_>>(), [Remap { main: 100, spare: 0 }, Remap { main: 101, spare: 7 }]);
        let mut full = [0u8; META_BLOCK];
        log_init(&mut full, &s.uuid, 0);
        for i in 0..ENTRIES_PER_BLOCK as u64 {
            assert!(log_push(&mut full, Remap { main: i, spare: i }));
        }
        assert!(!log_push(&mut full, Remap { main: 999, spare: 999 }));
        log_seal(&mut full, 1, ENTRIES_PER_BLOCK as u64);
        assert!(log_decode(&full, &s, 0).unwrap().is_full());
        let all: Vec<Remap> = (0..ENTRIES_PER_BLOCK).map(|i| log_entry(&full, i)).collect();
        assert_eq!(log_entries(&full, u32::MAX).collect::<Vec<_>>(), all, "at most a block's");
    }

    #[test]
    fn every_single_byte_corruption_is_detected() {
        let s = sb();
        let mut b = [0u8; META_BLOCK];
        s.encode(&mut b);
        for i in 0..META_BLOCK {
            let mut c = b;
            c[i] ^= 0x5a;
            assert!(Superblock::decode(&c).is_err(), "superblock byte {i}");
        }
        let entries: Vec<(u64, u64)> = (0..10).map(|i| (100 + i, i)).collect();
        let b = log_block(&s, 3, 9, 10, &entries);
        assert!(log_decode(&b, &s, 3).is_ok());
        for i in 0..META_BLOCK {
            let mut c = b;
            c[i] ^= 0x01;
            assert!(log_decode(&c, &s, 3).is_err(), "log byte {i}");
        }
    }

    #[test]
    fn every_torn_prefix_is_detected() {
        // A torn write leaves a prefix of the new version over the old contents.
        let s = sb();
        let old = log_block(&s, 0, 1, 1, &[(5, 0)]);
        let new = log_block(&s, 0, 2, 2, &[(5, 0), (6, 1)]);
        for cut in 1..META_BLOCK {
            let mut torn = old;
            torn[..cut].copy_from_slice(&new[..cut]);
            // Either detected, or (a prefix the versions share) exactly the old version.
            assert!(log_decode(&torn, &s, 0).is_err() || torn == old, "torn at {cut}");
            // The other slot still holds the old version, which wins.
            let (chosen, slot) = choose_log_slot(&old, &torn, &s, 0).unwrap();
            assert_eq!((chosen.seq, slot), (1, 0));
        }
        let (chosen, slot) = choose_log_slot(&old, &new, &s, 0).unwrap();
        assert_eq!((chosen.seq, slot), (2, 1));
    }

    #[test]
    fn newest_valid_superblock_wins() {
        let mut s = sb();
        let (mut a, mut b) = ([0u8; META_BLOCK], [0u8; META_BLOCK]);
        s.encode(&mut a);
        s.seq = 2;
        s.encode(&mut b);
        assert_eq!(choose_superblock(&a, &b), SuperblockChoice::Valid(s));
        b[100] ^= 1;
        assert!(matches!(choose_superblock(&a, &b), SuperblockChoice::Valid(x) if x.seq == 1));
        a[100] ^= 1;
        assert_eq!(choose_superblock(&a, &b), SuperblockChoice::Corrupt);
        assert_eq!(choose_superblock(&[0; META_BLOCK], &[0; META_BLOCK]), SuperblockChoice::Blank);
    }

    #[test]
    fn entries_beyond_bounds_are_rejected() {
        let s = sb();
        // spare >= next_free
        assert_eq!(log_decode(&log_block(&s, 0, 1, 1, &[(0, 1)]), &s, 0), Err(DecodeError::BadField));
        // main beyond the main device
        assert_eq!(log_decode(&log_block(&s, 0, 1, 1, &[(1 << 40, 0)]), &s, 0), Err(DecodeError::BadField));
        // wrong index
        assert_eq!(log_decode(&log_block(&s, 1, 1, 1, &[(0, 0)]), &s, 0), Err(DecodeError::BadField));
        // another format of the spare
        let other = Superblock { uuid: [8; 16], ..s };
        assert_eq!(log_decode(&log_block(&other, 0, 1, 1, &[(0, 0)]), &s, 0), Err(DecodeError::NoMagic));
        // a superblock that was never decoded, with a block size of 0
        let mut zero = s;
        zero.geometry.block_size = 0;
        assert_eq!(log_decode(&log_block(&zero, 0, 1, 1, &[(0, 0)]), &zero, 0), Err(DecodeError::BadField));
    }

    /// `log_choose` decides as decoding both slots and then `choose_log_slot` would, for
    /// every pair of slot kinds (valid older/newer, torn, intact with impossible fields, torn
    /// with impossible fields, blank, another format's, a header claiming a high seq).
    #[test]
    fn log_choose_matches_decoding_both_slots() {
        let s = sb();
        let valid1 = log_block(&s, 0, 1, 1, &[(5, 0)]);
        let valid2 = log_block(&s, 0, 2, 2, &[(5, 0), (6, 1)]);
        let mut torn = log_block(&s, 0, 3, 3, &[(5, 0), (6, 1), (7, 2)]);
        torn[100] ^= 1;
        let bad = log_block(&s, 0, 4, 1, &[(5, 3)]);
        let mut bad_torn = bad;
        bad_torn[200] ^= 1;
        let bad_low = log_block(&s, 0, 0, 1, &[(1 << 40, 0)]);
        let other = log_block(&Superblock { uuid: [8; 16], ..s }, 0, 9, 1, &[(5, 0)]);
        let other_bad = log_block(&Superblock { uuid: [8; 16], ..s }, 0, 9, 1, &[(5, 7)]);
        let wrong_index = log_block(&s, 1, 5, 1, &[(5, 0)]);
        let mut high_seq = valid1;
        high_seq[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        let blank = [0u8; META_BLOCK];
        let kinds = [valid1, valid2, torn, bad, bad_torn, bad_low, other, other_bad, wrong_index, high_seq, blank];
        for (i, a) in kinds.iter().enumerate() {
            for (j, b) in kinds.iter().enumerate() {
                let refuse = [a, b].iter().any(|x| log_decode(x, &s, 0) == Err(DecodeError::BadField));
                let want = if refuse { Err(DecodeError::BadField) } else { Ok(choose_log_slot(a, b, &s, 0)) };
                assert_eq!(log_choose(a, b, &s, 0), want, "slots {i} and {j}");
            }
        }
    }

    #[test]
    fn replay_stops_at_stale_blocks() {
        let mut r = Replay::default();
        let b0 = LogHeader { seq: 5, index: 0, count: 1, next_free: 252 };
        // Older than its predecessor: a leftover of an unacknowledged commit.
        let mut b1 = LogHeader { seq: 4, index: 1, count: 1, next_free: 300 };
        assert!(r.accept(&b0));
        assert!(!r.accept(&b1));
        b1.seq = 6;
        assert!(r.accept(&b1));
        assert_eq!((r.seq, r.next_free, r.blocks), (6, 300, 2));
    }
}
