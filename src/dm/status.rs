// SPDX-License-Identifier: GPL-2.0

//! The status writer: `dmsetup status`/`table` text and message replies go through it into
//! device-mapper's result buffer.

/// Which report `status` is asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusType {
    /// `dmsetup status`: runtime figures.
    Info,
    /// `dmsetup table`: the table line, exactly as it was loaded.
    Table,
    /// The IMA measurement record.
    Ima,
}

/// A `core::fmt::Write` sink over dm's status buffer: truncates like `DMEMIT` and keeps the
/// text NUL-terminated.
pub(crate) struct StatusWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> StatusWriter<'a> {
    /// A writer at the start of `buf`, which it empties (a NUL at index 0).
    pub(super) fn new(buf: &'a mut [u8]) -> Self {
        if let Some(b) = buf.first_mut() {
            *b = 0;
        }
        Self { buf, pos: 0 }
    }
}

impl core::fmt::Write for StatusWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len().saturating_sub(self.pos + 1);
        let n = s.len().min(room);
        self.buf[self.pos..self.pos + n].copy_from_slice(&s.as_bytes()[..n]);
        self.pos += n;
        if let Some(b) = self.buf.get_mut(self.pos) {
            *b = 0;
        }
        Ok(())
    }
}
