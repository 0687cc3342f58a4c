// SPDX-License-Identifier: GPL-2.0

//! dm-remap: a device-mapper target that hides a failing disk's bad blocks by relocating
//! them to a spare device.
//!
//! Three layers: [`dm`] is the only code with `unsafe` (a safe device-mapper abstraction),
//! [`target`] is the remap target in safe Rust on top of it, and [`logic`] is plain `no_std`
//! code without kernel types that the host workspace compiles and tests too.

mod dm;
mod logic;
mod target;

use kernel::prelude::*;

module! {
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
        let reg = dm::Registration::new(module)?;
        pr_info!("remap target registered, version {}\n", logic::VERSION_STR);
        Ok(Self { _target: reg })
    }
}
