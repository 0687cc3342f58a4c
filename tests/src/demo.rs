//! `vmtest demo`: shows the target at work, step by step, for `cargo xtask demo`.

use crate::harness::*;
use anyhow::{ensure, Result};

fn show(title: &str, out: &str) {
    println!("\n# {title}");
    for l in out.lines() {
        println!("  {l}");
    }
}

/// A failing disk (two unwritable blocks), a spare, and dm-remap between them and the user.
pub fn run() -> Result<()> {
    show("dmsetup targets (dm-remap.ko is loaded)", &dmsetup(&["targets"])?);
    let bad = BadMain::new("demo", 64 << 20, &[(100, 1), (200, 1)])?;
    show(
        "the 'failing disk': 64 MiB where 4 KiB blocks 100 and 200 fail every I/O (dm-linear + dm-error)",
        &dmsetup(&["table", &bad.dm.name])?,
    );
    let spare = LoopDev::new("demo-spare", 4 << 20)?;
    let n = 64 << 20 >> 9;
    let table = remap_table(n, LineSpec::new(&bad.path(), &spare.path).format());
    show("dmsetup create demo --table", &table);
    let dm = DmDev::create("demo", &table)?;
    show("dmsetup table demo", &dmsetup(&["table", &dm.name])?);
    show("dmsetup status demo   (26 fields: docs/status.md)", &dmsetup(&["status", &dm.name])?);

    let direct = write_at(bad.path(), 100 * 4096, &pattern(1, 4096));
    let direct = match direct {
        Err(e) => format!("fails: {e}"),
        Ok(()) => "succeeded (unexpected)".into(),
    };
    show("writing block 100 directly on the failing disk", &direct);
    let data = pattern(100, 4096);
    write_at(&dm.path, 100 * 4096, &data)?;
    let back = read_at(&dm.path, 100 * 4096, 4096)?;
    show("writing block 100 through dm-remap, then reading it back", if back == data { "ok, identical" } else { "MISMATCH" });
    ensure!(back == data, "data read back differs");
    show("dmsetup status demo   (field 8: one remap; 12: one relocation after a write error)", &dmsetup(&["status", &dm.name])?);

    dmsetup(&["suspend", &dm.name])?;
    dmsetup(&["resume", &dm.name])?;
    drop(dm);
    let dm = DmDev::create("demo", &remap_table(n, LineSpec::new(&bad.path(), &spare.path)))?;
    let back = read_at(&dm.path, 100 * 4096, 4096)?;
    show(
        "after suspend/resume, remove and create again without `format`: block 100",
        if back == data { "still there (the remap was loaded from the spare)" } else { "MISMATCH" },
    );
    ensure!(back == data, "data lost across re-creation");
    show("dmsetup status demo", &dmsetup(&["status", &dm.name])?);
    Ok(())
}
