//! Tests that prove the harness and the module's life cycle: upstream targets behave as
//! the later tests rely on, and `remap` loads, refuses bad tables and passes I/O through.

use crate::harness::*;
use anyhow::{bail, ensure, Result};

pub const TESTS: &[crate::Test] = &[
    // First: it reads what loading the module at boot logged.
    ("remap_module_load_logs_only_taint_lines", module_load_quiet),
    ("harness_linear_roundtrip", linear_roundtrip),
    ("harness_dust_read_eio", dust_read_eio),
    ("harness_null_blk_configfs", null_blk_configfs),
    ("remap_module_unload_reload", module_unload_reload),
    ("remap_bad_table_lines", bad_table_lines),
    ("remap_passthrough_roundtrip", passthrough_roundtrip),
];

const MIB: u64 = 1 << 20;

/// dm-linear over a loop device: data written through dm lands at the mapped offset.
fn linear_roundtrip() -> Result<()> {
    let lo = LoopDev::new("linear", 16 * MIB)?;
    // Map the second half of the loop device.
    let half = lo.sectors()? / 2;
    let dm = DmDev::create("t-linear", &format!("0 {half} linear {} {half}", lo.path))?;
    let data = pattern(1, 256 * 1024);
    write_at(&dm.path, 40960, &data)?;
    expect_eq("read back through dm-linear", read_at(&dm.path, 40960, data.len())?, data.clone())?;
    expect_eq("read at the mapped offset of the loop device", read_at(&lo.path, half * 512 + 40960, data.len())?, data)?;
    Ok(())
}

/// dm-dust: `addbadblock` + `enable` makes exactly that block's reads fail with EIO.
fn dust_read_eio() -> Result<()> {
    let lo = LoopDev::new("dust", 16 * MIB)?;
    let dm = DmDev::create("t-dust", &format!("0 {} dust {} 0 4096", lo.sectors()?, lo.path))?;
    dmsetup(&["message", &dm.name, "0", "addbadblock", "5"])?;
    ensure!(read_at(&dm.path, 5 * 4096, 4096).is_ok(), "block 5 failed before `enable`");
    dmsetup(&["message", &dm.name, "0", "enable"])?;
    match read_at(&dm.path, 5 * 4096, 4096) {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
        other => bail!("reading bad block 5: expected EIO, got {other:?}"),
    }
    ensure!(read_at(&dm.path, 4 * 4096, 4096).is_ok(), "good block 4 failed to read");
    ensure!(read_at(&dm.path, 6 * 4096, 4096).is_ok(), "good block 6 failed to read");
    Ok(())
}

/// null_blk is built in and configurable through configfs (memory-backed devices with
/// bad blocks are used by later tests and the benchmarks).
fn null_blk_configfs() -> Result<()> {
    ensure!(std::path::Path::new("/sys/block/nullb0").exists(), "the default /dev/nullb0 is missing");
    // null_blk names a configfs-made disk after its directory: /dev/tnullb.
    let dir = "/sys/kernel/config/nullb/tnullb";
    std::fs::create_dir(dir)?;
    let result = (|| -> Result<()> {
        for (attr, val) in [("size", "16"), ("memory_backed", "1"), ("blocksize", "4096"), ("power", "1")] {
            std::fs::write(format!("{dir}/{attr}"), val)?;
        }
        let dev = "/dev/tnullb";
        let data = pattern(3, 8192);
        write_at(dev, 8192, &data)?;
        expect_eq("memory-backed null_blk round trip", read_at(dev, 8192, data.len())?, data)?;
        Ok(())
    })();
    let _ = std::fs::write(format!("{dir}/power"), "0");
    std::fs::remove_dir(dir)?;
    result
}

fn remap_listed() -> Result<bool> {
    Ok(dmsetup(&["targets"])?.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["remap", "v0.1.0"]))
}

/// The module registers `remap`, is pinned while a table uses it, and unloads cleanly.
fn module_unload_reload() -> Result<()> {
    ensure!(remap_listed()?, "`dmsetup targets` does not list remap v0.1.0");
    {
        let main = LoopDev::new("unload-main", 4 * MIB)?;
        let spare = LoopDev::new("unload-spare", 4 * MIB)?;
        let _dm = DmDev::create("t-unload", &remap_table(main.sectors()?, LineSpec::new(&main.path, &spare.path).format()))?;
        cmd_fails("rmmod", &["dm_remap"])?;
        ensure!(remap_listed()?, "remap vanished while a table used it");
    }
    cmd("rmmod", &["dm_remap"])?;
    ensure!(!remap_listed()?, "remap still listed after rmmod");
    ensure!(!std::fs::read_to_string("/proc/modules")?.contains("dm_remap"), "dm_remap still in /proc/modules");
    cmd("insmod", &["/dm-remap.ko"])?;
    ensure!(remap_listed()?, "remap not listed after insmod");
    Ok(())
}

/// Every malformed table line is refused with its precise message, and leaves nothing behind.
fn bad_table_lines() -> Result<()> {
    let main = LoopDev::new("bad-main", 4 * MIB)?;
    let spare = LoopDev::new("bad-spare", 4 * MIB)?;
    let n = main.sectors()?;
    let (m, s) = (main.path.as_str(), spare.path.as_str());
    const EINVAL: &str = "Invalid argument";
    const ENOENT: &str = "No such file or directory";
    // (table, kernel log line, dmsetup's errno text)
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("0 {n} remap"), "remap: Invalid argument count: need <main_dev> <spare_dev> (-22)", EINVAL),
        (format!("0 {n} remap {m}"), "remap: Invalid argument count: need <main_dev> <spare_dev> (-22)", EINVAL),
        (format!("0 {n} remap /dev/nonexistent {s}"), "remap: Main device lookup failed (-2)", ENOENT),
        (format!("0 {n} remap {m} /dev/nonexistent"), "remap: Spare device lookup failed (-2)", ENOENT),
        (remap_table(n, LineSpec::new(&m, &m)), "remap: Main and spare must be different devices (-22)", EINVAL),
        (format!("0 {n} remap {m} {s} x"), "remap: Invalid number of feature arguments (-22)", EINVAL),
        (format!("0 {n} remap {m} {s} 1"), "remap: Feature argument count does not match the arguments given (-22)", EINVAL),
        (format!("0 {n} remap {m} {s} 1 frobnicate"), "remap: Unknown feature argument (-22)", EINVAL),
        (format!("0 {n} remap {m} {s} 2 format format"), "remap: Duplicate feature argument (-22)", EINVAL),
        (format!("0 {n} remap {m} {s} 1 block_size"), "remap: Feature argument needs a value (-22)", EINVAL),
        (format!("0 {n} remap {m} {s} 2 block_size 1000"), "remap: Invalid block_size: must be a power of two from 512 to 65536 (-22)", EINVAL),
        (format!("0 {n} remap {m} {s} 2 read_retries 99"), "remap: Invalid read_retries: must be 0 to 16 (-22)", EINVAL),
        (remap_table(n - 1, LineSpec::new(&m, &s).format()), "remap: Target length is not a multiple of block_size (-22)", EINVAL),
        (remap_table(n * 2, LineSpec::new(&m, &s).format()), "remap: Main device is smaller than the target length (-22)", EINVAL),
        (remap_table(n, LineSpec::new(&m, &s)), "remap: Spare holds no dm-remap metadata (add the format feature to initialise it) (-22)", EINVAL),
    ];
    let mut kmsg = Kmsg::open()?;
    for (table, want, errno) in cases {
        kmsg.drain();
        let stderr = cmd_fails("dmsetup", &["create", "t-bad", "--table", &table])?;
        ensure!(stderr.contains(errno), "table {table:?}: dmsetup said {stderr:?}, expected {errno:?}");
        let log = kmsg.drain();
        let spellings = errno_spellings(want);
        ensure!(
            log.iter().any(|l| spellings.iter().any(|w| l.contains(w.as_str()))),
            "table {table:?}: kernel log lacks {want:?}; it has {log:?}"
        );
        ensure!(!dm_exists("t-bad"), "table {table:?}: a device was left behind");
    }
    Ok(())
}

/// The kernel-log line of a refused table in both spellings device-mapper has used for the
/// constructor's error code: a number up to 6.x (`(-22)`), its name from 7.x (`(-EINVAL)`,
/// printed with `%pe`). Either is the same error; the text before it must match exactly.
fn errno_spellings(want: &str) -> Vec<String> {
    let mut v = vec![want.to_string()];
    for (num, name) in [("(-22)", "(-EINVAL)"), ("(-2)", "(-ENOENT)")] {
        if let Some(head) = want.strip_suffix(num) {
            v.push(format!("{head}{name}"));
        }
    }
    v
}

/// With no remaps, `remap` passes I/O to the main device unchanged and prints its table.
fn passthrough_roundtrip() -> Result<()> {
    let main = LoopDev::new("pass-main", 16 * MIB)?;
    let spare = LoopDev::new("pass-spare", 4 * MIB)?;
    let n = main.sectors()?;
    let dm = DmDev::create("t-pass", &remap_table(n, LineSpec::new(&main.path, &spare.path).format()))?;
    let data = pattern(2, 1 << 20);
    write_at(&dm.path, 3 * MIB, &data)?;
    expect_eq("read through remap", read_at(&dm.path, 3 * MIB, data.len())?, data.clone())?;
    expect_eq("same bytes on the main device", read_at(&main.path, 3 * MIB, data.len())?, data)?;
    // Only the metadata (superblocks) was written to the spare; its pool is untouched.
    let g = geometry(4 * MIB)?;
    let pool = read_at(&spare.path, g.pool_start * 512, (g.pool_blocks * 4096) as usize)?;
    ensure!(pool.iter().all(|&b| b == 0), "the spare's pool was written");
    let table = dmsetup(&["table", &dm.name])?;
    expect_eq("dmsetup table", table.trim().to_string(), format!("0 {n} remap {} {} 1 format", main.devno()?, spare.devno()?))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::errno_spellings;

    #[test]
    fn errno_spelled_as_number_or_name() {
        assert_eq!(errno_spellings("remap: Bad (-22)"), ["remap: Bad (-22)", "remap: Bad (-EINVAL)"]);
        assert_eq!(errno_spellings("remap: Gone (-2)"), ["remap: Gone (-2)", "remap: Gone (-ENOENT)"]);
        // Only a trailing code is respelled.
        assert_eq!(errno_spellings("remap: (-22) inside"), ["remap: (-22) inside"]);
    }
}

/// The kernel's own lines about loading an out-of-tree, unsigned module.
const TAINT_LINES: [&str; 2] = [
    "dm_remap: loading out-of-tree module taints kernel.",
    "dm_remap: module verification failed: signature and/or required key missing - tainting kernel",
];

/// Loading the module (by /init, at boot) logs nothing of its own: like upstream targets,
/// only the kernel's taint lines (both on a kernel that checks module signatures, as
/// Debian's does; the first only on the 6.12 test kernel, which does not).
fn module_load_quiet() -> Result<()> {
    let mut k = Kmsg::open()?;
    let ours: Vec<String> = k.drain().into_iter().filter(|l| l.starts_with("dm_remap: ")).collect();
    // The kernel checks signatures (CONFIG_MODULE_SIG) exactly when it has this parameter.
    let signed = std::path::Path::new("/sys/module/module/parameters/sig_enforce").exists();
    let want: Vec<&str> = if signed { TAINT_LINES.to_vec() } else { TAINT_LINES[..1].to_vec() };
    expect_eq("the kernel log lines of dm_remap at load", ours.iter().map(String::as_str).collect::<Vec<_>>(), want)
}
