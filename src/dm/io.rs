// SPDX-License-Identifier: GPL-2.0

//! Synchronous I/O from the worker or a constructor: metadata and relocated blocks.

use super::{bindings, Dev};
use kernel::prelude::*;

/// How a synchronous I/O is issued.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum IoKind {
    /// A read.
    Read,
    /// A write.
    Write,
    /// A write that is on stable media when it completes (FUA).
    WriteFua,
    /// A write that first makes every earlier completed write durable (preflush), and is
    /// itself durable on completion (FUA): a commit record.
    WriteCommit,
}

impl Dev {
    /// Reads or writes `buf` at `sector` and waits. Process context only; `buf` must be from
    /// the kernel heap (kmalloc or vmalloc) and a multiple of the logical block size.
    pub(crate) fn rw_sync(&self, sector: u64, buf: &mut [u8], kind: IoKind) -> Result {
        use bindings::dmr_const::*;
        let opf = match kind {
            IoKind::Read => DMR_REQ_OP_READ | DMR_REQ_SYNC,
            IoKind::Write => DMR_REQ_OP_WRITE | DMR_REQ_SYNC,
            IoKind::WriteFua => DMR_REQ_OP_WRITE | DMR_REQ_SYNC | DMR_REQ_FUA,
            IoKind::WriteCommit => DMR_REQ_OP_WRITE | DMR_REQ_SYNC | DMR_REQ_PREFLUSH | DMR_REQ_FUA,
        };
        // The I/O is waited for, so `buf` outlives it.
        // SAFETY: the bdev is open; `buf` is a valid heap buffer of `buf.len()` bytes.
        let ret = unsafe {
            bindings::dmr_rw_sync(self.pool(), self.bdev(), sector, buf.as_mut_ptr().cast(), buf.len() as u32, opf)
        };
        kernel::error::to_result(ret)
    }
}

/// Fills `buf` with random bytes.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    unsafe { bindings::get_random_bytes(buf.as_mut_ptr().cast(), buf.len() as _) };
}

/// The kernel's `crc32_le`.
pub(crate) fn crc32_le(seed: u32, buf: &[u8]) -> u32 {
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    unsafe { bindings::dmr_crc32_le(seed, buf.as_ptr().cast(), buf.len()) }
}

impl Dev {
    /// Flushes the device's write cache and waits. Process context only.
    pub(crate) fn flush(&self) -> Result {
        // SAFETY: the bdev is open.
        let ret = unsafe { bindings::blkdev_issue_flush(self.bdev()) };
        kernel::error::to_result(ret)
    }
}
