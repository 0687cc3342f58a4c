//! Writes a spare's metadata directly, with the shared format code: a superblock and a log
//! holding `n` remaps, so benchmarks can start from 100k or 1M remaps (the kernel then loads
//! them like any other spare).

use crate::harness::*;
use anyhow::{ensure, Result};
use dm_remap_logic::mainid::MainId;
use dm_remap_logic::format::{
    log_init, log_push, log_seal, Geometry, Remap, Superblock, ENTRIES_PER_BLOCK, META_BLOCK,
};

/// Formats `dev` (`spare_bytes` long) for a target of `main_sectors`, with remaps
/// `main_block(i) -> pool block i` for `i < n`.
pub fn write_spare(dev: &str, spare_bytes: u64, main_sectors: u64, n: u64, main_block: impl Fn(u64) -> u64) -> Result<Geometry> {
    let geometry = Geometry::compute(spare_bytes, 4096).ok_or_else(|| anyhow::anyhow!("spare too small"))?;
    ensure!(n <= geometry.pool_blocks, "{n} remaps do not fit a pool of {}", geometry.pool_blocks);
    let mut uuid = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut uuid))?;
    let sb = Superblock::new(1, uuid, main_sectors, geometry, MainId::NONE);
    let mut head = vec![0u8; 2 * META_BLOCK];
    for half in head.chunks_exact_mut(META_BLOCK) {
        sb.encode(half.try_into()?);
    }
    write_at(dev, 0, &head)?;
    // Log blocks, both slots each (slot 1 zeroed), written in 1 MiB pieces.
    let blocks = n.div_ceil(ENTRIES_PER_BLOCK as u64);
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut at = Geometry::log_slot_sector(0, 0) * 512;
    let mut i = 0u64;
    for index in 0..blocks {
        let mut slot = [0u8; META_BLOCK];
        log_init(&mut slot, &uuid, index as u32);
        while i < n && log_push(&mut slot, Remap { main: main_block(i), spare: i }) {
            i += 1;
        }
        log_seal(&mut slot, 1, i);
        buf.extend_from_slice(&slot);
        buf.extend_from_slice(&[0u8; META_BLOCK]);
        if buf.len() >= 1 << 20 || index + 1 == blocks {
            write_at(dev, at, &buf)?;
            at += buf.len() as u64;
            buf.clear();
        }
    }
    // Slots left from earlier contents carry another uuid and are not read as log.
    Ok(geometry)
}
