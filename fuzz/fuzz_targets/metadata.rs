//! The metadata decoder: superblocks, the choice between copies, log slots, replay.
#![no_main]
use dm_remap_logic::format::*;
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
        let _ = choose_superblock(&a, &b);
        if let Ok(sb) = Superblock::decode(&a) {
            // A decoded superblock re-encodes to the same bytes.
            let mut again = [0u8; META_BLOCK];
            sb.encode(&mut again);
            assert_eq!(Superblock::decode(&again), Ok(sb));
            let mut r = Replay::default();
            for index in 0..4 {
                if let Some((h, _)) = choose_log_slot(&b, &a, &sb, index) {
                    assert!(h.count as usize <= ENTRIES_PER_BLOCK);
                    for i in 0..h.count as usize {
                        let e = log_entry(&b, i);
                        let _ = e.main.checked_add(e.spare);
                    }
                    let _ = r.accept(&h);
                }
            }
        }
    }
});
