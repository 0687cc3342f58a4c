// SPDX-License-Identifier: GPL-2.0

//! dm-remap: a device-mapper target that hides a failing disk's bad blocks by relocating
//! them to a spare device.
//!
//! [`dm`] is the only code with `unsafe` (a safe device-mapper abstraction), [`logic`] is
//! plain `no_std` code without kernel types that the host workspace compiles and tests too,
//! and the target layer between them is a one-way hierarchy, each file importing only those
//! below it (docs/design.md, checked by `xtask`'s `layers` test):
//!
//! - dm adapter: [`target`];
//! - actions: [`relocate`], [`scan`], [`message`], [`migrate`];
//! - services: [`commit`], [`health`];
//! - state: [`engine`], [`table`];
//! - storage: [`metadata`].
//!
//! Every module outside `src/dm/` is `#![forbid(unsafe_code)]`. This file cannot say so for
//! the crate (the attribute would cover `src/dm/` too), so it forbids it on its own items.

// pin_init! expands recursively once per field of the engine.
#![recursion_limit = "512"]

mod commit;
#[macro_use]
mod dm;
mod engine;
mod health;
mod logic;
mod message;
mod metadata;
mod migrate;
mod relocate;
mod scan;
mod table;
mod target;

use kernel::prelude::*;

// `module!` through `crate::dm`, which knows each kernel's spelling of its keys.
remap_module! {
    type: RemapModule,
    name: "dm_remap",
    author: "dm-remap developers",
    description: "device-mapper target relocating bad blocks to a spare device",
    license: "GPL",
}

#[forbid(unsafe_code)]
struct RemapModule {
    _target: dm::Registration<target::Remap>,
}

#[forbid(unsafe_code)]
impl kernel::Module for RemapModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        // The metadata's CRC is computed by logic::crc32 so the host tools compute the same;
        // it must equal the kernel's crc32_le form, or the format's promise is broken.
        let input = logic::crc32::CHECK_INPUT;
        let kernel_crc = dm::crc32_le(!0, input) ^ !0;
        if kernel_crc != logic::crc32::crc32(input) || kernel_crc != logic::crc32::CHECK_VALUE {
            pr_err!("CRC-32 self-test failed: crc32_le gives {:#x}\n", kernel_crc);
            return Err(EINVAL);
        }
        // Silent on success, like upstream targets: `dmsetup targets` shows the version.
        Ok(Self { _target: dm::Registration::new(module)? })
    }
}
