// SPDX-License-Identifier: GPL-2.0

//! dm-remap's plain logic: no kernel types, no allocation, no `unsafe`.
//!
//! The kernel module includes this directory as its `logic` module; the host workspace
//! builds the same files as the `dm-remap-logic` crate (see `logic/Cargo.toml`) to test them
//! with the standard test harness.

#![cfg_attr(not(any(MODULE, test)), no_std)]
#![forbid(unsafe_code)]
// The items are the host crate's API; inside the kernel crate they are crate-private.
#![allow(unreachable_pub)]

pub mod args;
pub mod cache;
pub mod crc32;
pub mod format;
mod gate_model;
pub mod health;
pub mod loader;
pub mod mainid;
pub mod message;
pub mod remaps;
pub mod scrub;
pub mod status;
// Read by the host tool only (`dmremap activate`); not built into the module.
#[cfg(not(MODULE))]
pub mod tab;

/// Target version, as `dmsetup targets` shows it.
pub const VERSION: [u32; 3] = [0, 1, 0];
/// [`VERSION`] as text.
pub const VERSION_STR: &str = "0.1.0";

#[cfg(test)]
mod tests {
    #[test]
    fn version_text_matches_numbers() {
        let v = super::VERSION;
        assert_eq!(super::VERSION_STR, format!("{}.{}.{}", v[0], v[1], v[2]));
    }
}
