// SPDX-License-Identifier: GPL-2.0

//! The `remap` target.
//!
//! At this stage it validates its table line, opens both devices and passes every bio to
//! the main device unchanged; relocation comes with the remap engine.

use crate::dm::{self, Args, Bio, CtrContext, CtrError, DeviceIterator, Dev, MapResult, StatusType, StatusWriter, Target};
use crate::logic::{self, args::TableLine};
use core::ffi::CStr;
use core::fmt::Write;

/// One `remap` target instance.
pub(crate) struct Remap {
    main: Dev,
    spare: Dev,
    len: u64,
}

impl Target for Remap {
    const NAME: &'static CStr = c"remap";
    const VERSION: [u32; 3] = logic::VERSION;
    // `map` only redirects the bio: it never blocks.
    const FEATURES: u64 = dm::FEATURE_NOWAIT;

    fn new(ctx: &mut CtrContext<'_>, args: &Args<'_>) -> Result<Self, CtrError> {
        let line = TableLine::parse(args.iter()).map_err(|e| CtrError::inval(e.message()))?;
        let main_path = args.get(line.main).ok_or(CtrError::inval(c"Missing main device"))?;
        let spare_path = args.get(line.spare).ok_or(CtrError::inval(c"Missing spare device"))?;
        let main = ctx
            .get_device(main_path)
            .map_err(|code| CtrError { code, msg: c"Main device lookup failed" })?;
        let spare = ctx
            .get_device(spare_path)
            .map_err(|code| CtrError { code, msg: c"Spare device lookup failed" })?;
        if main.devno() == spare.devno() {
            return Err(CtrError::inval(c"Main and spare must be different devices"));
        }
        // Flushes must reach the main device, or fsync through the target would be a no-op.
        ctx.set_num_flush_bios(1);
        Ok(Self { main, spare, len: ctx.len_sectors() })
    }

    fn map(&self, bio: &mut Bio<'_>) -> MapResult {
        let sector = bio.target_sector();
        bio.remap(&self.main, sector);
        MapResult::Remapped
    }

    fn status(&self, kind: StatusType, out: &mut StatusWriter<'_>) {
        // A truncated write is how device-mapper learns it needs a larger buffer.
        let _ = match kind {
            StatusType::Info => Ok(()),
            StatusType::Table => write!(out, "{} {}", Show(self.main.name()), Show(self.spare.name())),
            StatusType::Ima => write!(
                out,
                "target_name=remap,target_version={},main_device={},spare_device={};",
                logic::VERSION_STR,
                Show(self.main.name()),
                Show(self.spare.name())
            ),
        };
    }

    fn iterate_devices(&self, it: &mut DeviceIterator<'_>) {
        it.visit(&self.main, 0, self.len);
        it.visit(&self.spare, 0, self.spare.sectors());
    }
}

/// Displays a C string (device names are ASCII `major:minor`).
struct Show<'a>(&'a CStr);

impl core::fmt::Display for Show<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for &b in self.0.to_bytes() {
            f.write_char(if b.is_ascii_graphic() { b as char } else { '?' })?;
        }
        Ok(())
    }
}
