//! `vmtest demo`: shows the target at work, step by step, for `cargo xtask demo`.

use crate::harness::*;
use anyhow::Result;

fn show(title: &str, out: &str) {
    println!("\n# {title}");
    for l in out.lines() {
        println!("  {l}");
    }
}

/// Registers, creates a remap device over two loop devices, moves data through it.
pub fn run() -> Result<()> {
    show("dmsetup targets (dm-remap.ko is loaded)", &dmsetup(&["targets"])?);
    let main = LoopDev::new("demo-main", 64 << 20)?;
    let spare = LoopDev::new("demo-spare", 16 << 20)?;
    let n = main.sectors()?;
    let table = format!("0 {n} remap {} {} 1 format", main.path, spare.path);
    show("dmsetup create demo --table", &table);
    let dm = DmDev::create("demo", &table)?;
    show("dmsetup table demo", &dmsetup(&["table", &dm.name])?);
    show("dmsetup status demo", &dmsetup(&["status", &dm.name])?);
    let data = pattern(7, 1 << 20);
    write_at(&dm.path, 0, &data)?;
    let ok = read_at(&dm.path, 0, data.len())? == data;
    show("write 1 MiB through /dev/mapper/demo and read it back", if ok { "identical" } else { "MISMATCH" });
    anyhow::ensure!(ok, "data read back differs");
    Ok(())
}
