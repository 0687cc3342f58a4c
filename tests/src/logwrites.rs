//! A dm-log-writes log: parsing and replay.
//!
//! Debian packages no replay tool, so this reads the format the kernel writes
//! (`drivers/md/dm-log-writes.c`, `Documentation/admin-guide/device-mapper/log-writes.rst`):
//!
//! ```text
//! sector 0        super: magic u64, version u64, nr_entries u64, sectorsize u32 (little-endian)
//! sector 1        entry: sector u64, nr_sectors u64, flags u64, data_len u64, then for a mark
//!                 its text (data_len bytes) in the same sector
//! sector 2..      the entry's data (nr_sectors sectors; none for marks and discards)
//! ...             the next entry
//! ```
//!
//! Sectors (positions in the log and `sector`/`nr_sectors` of an entry) are in units of
//! `sectorsize`, the logged device's logical block size. Writes are logged in the order they
//! became durable: a plain write when a later flush completes (just before that flush's
//! entry), a FUA write when it completes, a mark when it is asked for.

use anyhow::{bail, ensure, Result};

/// The log's magic number.
pub const MAGIC: u64 = 0x6a_7366_7773_6872;
/// The entry is (or carries) a cache flush: everything logged before it is durable.
pub const FLUSH: u64 = 1 << 0;
/// The entry was written with FUA: durable once it completed.
pub const FUA: u64 = 1 << 1;
/// The entry is a discard (no data logged).
pub const DISCARD: u64 = 1 << 2;
/// The entry is a mark (its text is the data).
pub const MARK: u64 = 1 << 3;

/// One logged event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Byte offset on the logged device.
    pub offset: u64,
    /// `FLUSH`, `FUA`, `DISCARD`, `MARK` bits.
    pub flags: u64,
    /// The data written (empty for flushes, marks and discards).
    pub data: Vec<u8>,
    /// A mark's text.
    pub mark: Option<String>,
}

impl Entry {
    /// Whether this entry writes data.
    pub fn is_write(&self) -> bool {
        !self.data.is_empty()
    }
}

/// Parses a whole log.
pub fn parse(log: &[u8]) -> Result<Vec<Entry>> {
    let u64_at = |off: usize| -> Result<u64> {
        let b = log.get(off..off + 8).ok_or_else(|| anyhow::anyhow!("log truncated at byte {off}"))?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    ensure!(u64_at(0)? == MAGIC, "not a dm-log-writes log (bad magic)");
    ensure!(u64_at(8)? == 1, "dm-log-writes log version {} is not supported", u64_at(8)?);
    let n = u64_at(16)?;
    let ss = log.get(24..28).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0) as usize;
    ensure!(ss.is_power_of_two() && (512..=65536).contains(&ss), "bad sector size {ss}");
    let mut entries = Vec::with_capacity(n as usize);
    let mut pos = 1usize; // in sectors
    for i in 0..n {
        let at = pos * ss;
        let (sector, nr, flags, data_len) = (u64_at(at)?, u64_at(at + 8)?, u64_at(at + 16)?, u64_at(at + 24)?);
        let mut e = Entry { offset: sector * ss as u64, flags, data: Vec::new(), mark: None };
        pos += 1;
        if flags & MARK != 0 {
            ensure!(data_len as usize <= ss - 32, "entry {i}: mark longer than a sector");
            let text = log.get(at + 32..at + 32 + data_len as usize).ok_or_else(|| anyhow::anyhow!("entry {i}: truncated"))?;
            e.mark = Some(String::from_utf8_lossy(text).into_owned());
        } else if data_len != 0 {
            bail!("entry {i}: inline data is not supported");
        } else if flags & DISCARD == 0 {
            let len = nr as usize * ss;
            let d = log.get(pos * ss..pos * ss + len).ok_or_else(|| anyhow::anyhow!("entry {i}: data truncated"))?;
            e.data = d.to_vec();
            pos += nr as usize;
        }
        entries.push(e);
    }
    Ok(entries)
}

/// Writes an entry's data into an image of the logged device (discards and marks change
/// nothing: a discarded range may read back as before).
pub fn apply(image: &mut [u8], e: &Entry) -> Result<()> {
    if e.is_write() {
        let at = e.offset as usize;
        let dst = image
            .get_mut(at..at + e.data.len())
            .ok_or_else(|| anyhow::anyhow!("write at byte {at} beyond the image"))?;
        dst.copy_from_slice(&e.data);
    }
    Ok(())
}

/// Replays entries through `write(offset, data)`, up to (not including) the first mark named
/// `until`, or all of them; returns how many entries were replayed.
pub fn replay(entries: &[Entry], until: Option<&str>, mut write: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<usize> {
    for (i, e) in entries.iter().enumerate() {
        if until.is_some() && e.mark.as_deref() == until {
            return Ok(i);
        }
        if e.is_write() {
            write(e.offset, &e.data)?;
        }
    }
    ensure!(until.is_none(), "mark {:?} is not in the log", until.unwrap_or_default());
    Ok(entries.len())
}

/// `vmtest replay-log LOG DEV [MARK]`: replays a dm-log-writes log onto a device or image
/// file (all of it, or up to the mark).
pub fn replay_cli(args: &[String]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let [log, dev, rest @ ..] = args else { anyhow::bail!("usage: vmtest replay-log LOG DEV [MARK]") };
    let entries = parse(&std::fs::read(log)?)?;
    let out = std::fs::OpenOptions::new().write(true).open(dev)?;
    let n = replay(&entries, rest.first().map(String::as_str), |at, d| Ok(out.write_all_at(d, at)?))?;
    out.sync_all()?;
    println!("replayed {n} of {} entries onto {dev}", entries.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a log as the kernel does, for the round trip.
    fn encode(ss: usize, entries: &[Entry]) -> Vec<u8> {
        let mut log = vec![0u8; ss];
        log[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        log[8..16].copy_from_slice(&1u64.to_le_bytes());
        log[16..24].copy_from_slice(&(entries.len() as u64).to_le_bytes());
        log[24..28].copy_from_slice(&(ss as u32).to_le_bytes());
        for e in entries {
            let mut s = vec![0u8; ss];
            let text = e.mark.as_deref().unwrap_or("").as_bytes();
            s[0..8].copy_from_slice(&(e.offset / ss as u64).to_le_bytes());
            s[8..16].copy_from_slice(&((e.data.len() / ss) as u64).to_le_bytes());
            s[16..24].copy_from_slice(&e.flags.to_le_bytes());
            s[24..32].copy_from_slice(&(text.len() as u64).to_le_bytes());
            s[32..32 + text.len()].copy_from_slice(text);
            log.extend_from_slice(&s);
            log.extend_from_slice(&e.data);
        }
        log
    }

    fn w(offset: u64, byte: u8, len: usize, flags: u64) -> Entry {
        Entry { offset, flags, data: vec![byte; len], mark: None }
    }

    fn mark(m: &str) -> Entry {
        Entry { offset: 0, flags: MARK, data: vec![], mark: Some(m.into()) }
    }

    #[test]
    fn round_trip_and_replay_to_a_mark() {
        let flush = Entry { offset: 0, flags: FLUSH, data: vec![], mark: None };
        let entries = vec![w(0, 1, 4096, 0), flush, w(4096, 2, 512, FUA), mark("one"), w(0, 3, 1024, FLUSH | FUA)];
        for ss in [512, 4096] {
            let entries: Vec<Entry> = entries.iter().filter(|e| e.data.len() % ss == 0).cloned().collect();
            let log = encode(ss, &entries);
            assert_eq!(parse(&log).unwrap(), entries);
        }
        let log = encode(512, &entries);
        let parsed = parse(&log).unwrap();
        let mut img = vec![0u8; 8192];
        let mut write = |at: u64, d: &[u8]| apply(&mut img, &Entry { offset: at, flags: 0, data: d.to_vec(), mark: None });
        assert_eq!(replay(&parsed, Some("one"), &mut write).unwrap(), 3);
        assert_eq!((img[0], img[4095], img[4096], img[4608], img[1024]), (1, 1, 2, 0, 1));
        let mut img2 = vec![0u8; 8192];
        assert_eq!(replay(&parsed, None, |at, d| apply(&mut img2, &Entry { offset: at, flags: 0, data: d.to_vec(), mark: None })).unwrap(), 5);
        assert_eq!((img2[0], img2[1023], img2[1024], img2[4096]), (3, 3, 1, 2));
        assert!(replay(&parsed, Some("two"), |_, _| Ok(())).is_err(), "no such mark");
    }

    #[test]
    fn refuses_damaged_logs() {
        let log = encode(512, &[w(0, 1, 4096, 0)]);
        assert!(parse(&log[..log.len() - 1]).is_err(), "truncated data");
        let mut bad = log.clone();
        bad[0] ^= 1;
        assert!(parse(&bad).is_err(), "magic");
        let mut bad = log.clone();
        bad[24] = 3;
        assert!(parse(&bad).is_err(), "sector size");
        assert!(parse(&[]).is_err());
        let mut img = vec![0u8; 1024];
        assert!(apply(&mut img, &parse(&log).unwrap()[0]).is_err(), "beyond the image");
    }
}
