//! The metadata decoder on raw bytes: two superblock copies and log slots as they would lie
//! on a spare, through the one loader (`logic::loader`) the kernel uses. (The `loader` target
//! crafts CRC-valid fields; this one feeds raw, mostly CRC-invalid bytes.)
#![no_main]
use dm_remap_logic::format::*;
use dm_remap_logic::loader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut a = [0u8; META_BLOCK];
    let mut b = [0u8; META_BLOCK];
    let n = data.len().min(META_BLOCK);
    a[..n].copy_from_slice(&data[..n]);
    if data.len() > META_BLOCK {
        let m = (data.len() - META_BLOCK).min(META_BLOCK);
        b[..m].copy_from_slice(&data[META_BLOCK..META_BLOCK + m]);
    }
    // The CRC rarely matches random bytes: also try with it fixed up, to reach the fields.
    for fix in [false, true] {
        if fix {
            let c = dm_remap_logic::crc32::crc32(&a[..CRC_OFFSET]);
            a[CRC_OFFSET..].copy_from_slice(&c.to_le_bytes());
        }
        if let Ok(sb) = Superblock::decode(&a) {
            // A decoded superblock re-encodes to the same bytes.
            let mut again = [0u8; META_BLOCK];
            sb.encode(&mut again);
            assert_eq!(Superblock::decode(&again), Ok(sb));
        }
        let spare_sectors = u64::from(data.first().copied().unwrap_or(0)) << 16;
        let Ok(sb) = loader::superblock_alone(&a, &b, spare_sectors) else { continue };
        let mut buf = vec![0u8; 2 * META_BLOCK];
        let mut tail = [0u8; META_BLOCK];
        // The log slots are the input again: slot 0 = copy B, slot 1 = copy A.
        let read = |_: u32, out: &mut [u8]| {
            out[..META_BLOCK].copy_from_slice(&b);
            out[META_BLOCK..].copy_from_slice(&a);
            Ok(())
        };
        let _ = loader::replay(&sb, &mut buf, &mut tail, read, |_| true);
    }
});
