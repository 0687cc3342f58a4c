// SPDX-License-Identifier: GPL-2.0

//! dm-remap: a device-mapper target that hides a failing disk's bad blocks by relocating
//! them to a spare device.
//!
//! Three layers: [`dm`] is the only code with `unsafe` (a safe device-mapper abstraction),
//! [`target`] is the remap target in safe Rust on top of it, and [`logic`] is plain `no_std`
//! code without kernel types that the host workspace compiles and tests too.

// pin_init! expands recursively once per field of the engine.
#![recursion_limit = "512"]

mod control;
#[macro_use]
mod dm;
mod logic;
mod metadata;
mod relocate;
mod scan;
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

struct RemapModule {
    _target: dm::Registration<target::Remap>,
}

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
        let reg = dm::Registration::new(module)?;
        pr_info!("remap target registered, version {}\n", logic::VERSION_STR);
        Ok(Self { _target: reg })
    }
}
