// SPDX-License-Identifier: GPL-2.0

//! The identity of a main device that a spare is bound to (format v2, docs/format.md).
//!
//! `dmremap format` takes it the way udev names disks (WWN, else serial) or from
//! `--main-id`; the table line carries it as `main_id <id>`, and the loader refuses a spare
//! recorded for another id. A `major:minor` changes across reboots; this does not.

/// Longest id, in bytes.
pub const MAX_LEN: usize = 64;

/// A main device id: 1..=64 bytes of `[A-Za-z0-9._:-]`, or none (length 0).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MainId {
    len: u8,
    bytes: [u8; MAX_LEN],
}

impl core::fmt::Debug for MainId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "MainId(\"")?;
        for &b in self.as_bytes() {
            write!(f, "{}", b as char)?;
        }
        write!(f, "\")")
    }
}

impl Default for MainId {
    fn default() -> Self {
        Self::NONE
    }
}

/// Whether `b` may appear in an id: what survives a table line, a file name and a shell.
pub fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

impl MainId {
    /// No id recorded.
    pub const NONE: MainId = MainId { len: 0, bytes: [0; MAX_LEN] };

    /// Parses an id: `None` if empty, longer than [`MAX_LEN`] or with a byte outside the set.
    pub fn parse(s: &[u8]) -> Option<MainId> {
        if s.is_empty() || s.len() > MAX_LEN || !s.iter().all(|&b| allowed(b)) {
            return None;
        }
        let mut bytes = [0u8; MAX_LEN];
        bytes[..s.len()].copy_from_slice(s);
        Some(MainId { len: s.len() as u8, bytes })
    }

    /// Decodes the on-disk field: a length byte then [`MAX_LEN`] bytes, zero past the id.
    /// `None` if the field is not one [`MainId::encode`] writes.
    pub fn decode(len: u8, field: &[u8; MAX_LEN]) -> Option<MainId> {
        let n = usize::from(len);
        if n > MAX_LEN || field[n..].iter().any(|&b| b != 0) {
            return None;
        }
        if n == 0 {
            return Some(Self::NONE);
        }
        Self::parse(&field[..n])
    }

    /// The on-disk field: the length and the bytes, zero-padded.
    pub fn encode(&self) -> (u8, [u8; MAX_LEN]) {
        (self.len, self.bytes)
    }

    /// The id's bytes (empty: none).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len).min(MAX_LEN)]
    }

    /// Whether no id is recorded.
    pub fn is_none(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extremes() {
        assert_eq!(MainId::parse(b""), None);
        assert_eq!(MainId::parse(b"a").map(|i| i.as_bytes().to_vec()), Some(b"a".to_vec()));
        let max = [b'x'; MAX_LEN];
        assert_eq!(MainId::parse(&max).map(|i| i.as_bytes().len()), Some(MAX_LEN));
        assert_eq!(MainId::parse(&[b'x'; MAX_LEN + 1]), None);
        for bad in [&b"a b"[..], b"a/b", b"a\0", b"\xff", b"a\n", b"a,b"] {
            assert_eq!(MainId::parse(bad), None, "{bad:?}");
        }
        assert!(MainId::parse(b"naa.5000c500a1b2c3d4").is_some());
        assert!(MainId::parse(b"QEMU_HARDDISK_serial-1:2").is_some());
    }

    #[test]
    fn field_round_trip_and_rejects_garbage() {
        let id = MainId::parse(b"WD-WCC4N1234567").unwrap();
        let (len, field) = id.encode();
        assert_eq!(MainId::decode(len, &field), Some(id));
        assert_eq!(MainId::decode(0, &[0; MAX_LEN]), Some(MainId::NONE));
        // Bytes past the length, a length past the field, a bad byte: not ours.
        let mut f = field;
        f[MAX_LEN - 1] = b'z';
        assert_eq!(MainId::decode(len, &f), None);
        assert_eq!(MainId::decode(MAX_LEN as u8 + 1, &field), None);
        assert_eq!(MainId::decode(255, &field), None);
        let mut f = field;
        f[0] = b' ';
        assert_eq!(MainId::decode(len, &f), None);
        assert_eq!(MainId::decode(0, &field), None);
    }
}
