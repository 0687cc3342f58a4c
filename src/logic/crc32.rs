// SPDX-License-Identifier: GPL-2.0

//! CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), the checksum of the metadata.
//!
//! This is the kernel's `crc32_le(~0, buf, len) ^ ~0` and `crc32fast::hash(buf)`: the module
//! checks at load time that the kernel's `crc32_le` agrees with it, and the host tests check
//! it against crc32fast, so metadata written by either side verifies on the other.

const fn make_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = make_table();

/// CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The known answer: CRC-32 of the ASCII digits "123456789".
pub const CHECK_INPUT: &[u8] = b"123456789";
/// [`crc32`] of [`CHECK_INPUT`].
pub const CHECK_VALUE: u32 = 0xCBF4_3926;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        assert_eq!(crc32(CHECK_INPUT), CHECK_VALUE);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn matches_crc32fast() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in [1usize, 7, 64, 511, 4096, 10_000] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert_eq!(crc32(&data), crc32fast::hash(&data), "len {len}");
        }
    }
}
