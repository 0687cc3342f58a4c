//! The benchmark's other boots: `vmtest bench-smp <reps> <runtime>` (fio with four jobs in an
//! icount VM with four vCPUs) and the filesystem runs of `vmtest bench-fs <reps> <runtime>`
//! (ext4 over a memory-backed main device), each on dm-linear and on dm-remap with no remaps
//! in the same boot. Lines as in `vmtest bench`: `BENCH <config> <workload> <rep> <iops>`.

use crate::bench::{fio, iops, MAIN_MB};
use crate::harness::*;
use crate::prep::write_spare;
use crate::protocol::{BENCH, BENCHINFO};
use anyhow::{Context, Result};

const MIB: u64 = 1 << 20;

/// A dm-linear and a dm-remap (no remaps, scrub off) over `main` of `main_sectors`.
fn pair(tag: &str, main: &str, main_sectors: u64, spare: &NullB) -> Result<(DmDev, DmDev)> {
    write_spare(&spare.path, 256 * MIB, main_sectors, 0, |i| i)?;
    let lin = DmDev::create(&format!("{tag}-linear"), &format!("0 {main_sectors} linear {main} 0"))?;
    let remap = DmDev::create(&format!("{tag}-remap"), &format!("0 {main_sectors} remap {main} {}", spare.path))?;
    dmsetup(&["message", &remap.name, "0", "scan", "stop"])?;
    Ok((lin, remap))
}

fn kernel_info() -> Result<()> {
    println!("{BENCHINFO} kernel {}", std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim());
    println!("{BENCHINFO} cpus {}", std::thread::available_parallelism().map_or(1, |n| n.get()));
    Ok(())
}

/// The several-CPU workloads: four fio jobs, 4 KiB random reads and writes at queue depth 32
/// each (also `cargo xtask profile remap-0 randread-4k-qd32-4jobs`).
pub const SMP_WORKLOADS: [(&str, &[&str]); 2] = [
    ("randread-4k-qd32-4jobs", &["--rw=randread", "--bs=4k", "--blockalign=8k", "--iodepth=32", "--numjobs=4", "--group_reporting"]),
    ("randwrite-4k-qd32-4jobs", &["--rw=randwrite", "--bs=4k", "--blockalign=8k", "--iodepth=32", "--numjobs=4", "--group_reporting"]),
];

/// Four fio jobs (one per vCPU), 4 KiB random reads and writes at queue depth 32 each.
pub fn smp(reps: u32, runtime: &str) -> Result<()> {
    kernel_info()?;
    let main = NullB::new("smain", MAIN_MB, false)?;
    let main_sectors = MAIN_MB * MIB / 512;
    let spare = NullB::new("sspare", 256, true)?;
    let (lin, remap) = pair("s", &main.path, main_sectors, &spare)?;
    for rep in 0..reps {
        for (w, args) in SMP_WORKLOADS {
            for (name, dev) in [("dm-linear", &lin.path), ("remap-0", &remap.path)] {
                let v = fio(dev, args, runtime)?;
                println!("{BENCH} {name} {w} {rep} {:.1}", iops(&v));
            }
        }
    }
    Ok(())
}

/// ext4 on each device (512 MiB memory-backed null_blk main, one each so both start empty):
/// 4 KiB random writes with an fsync every 32, and 1 MiB sequential writes, in a file.
pub fn fs(reps: u32, runtime: &str) -> Result<()> {
    kernel_info()?;
    // Debian's kernel has ext4 as a module: the guest image carries it and /init loads it
    // (xtask/src/debian.rs GUEST_MODULES); without it mount fails with EINVAL. The test
    // kernel builds it in (then this modprobe fails harmlessly).
    let _ = cmd("modprobe", &["ext4"]);
    let mb = 512u64;
    let sectors = mb * MIB / 512;
    let workloads: [(&str, &[&str]); 2] = [
        ("ext4-randwrite-4k-fsync32", &["--rw=randwrite", "--bs=4k", "--iodepth=1", "--ioengine=psync", "--fsync=32", "--direct=0"]),
        ("ext4-seqwrite-1m", &["--rw=write", "--bs=1M", "--iodepth=1", "--ioengine=psync", "--direct=0", "--end_fsync=1"]),
    ];
    let mut mounts = Vec::new();
    for name in ["dm-linear", "remap-0"] {
        let tag = if name == "dm-linear" { "fl" } else { "fr" };
        let main = NullB::new(&format!("{tag}main"), mb, true)?;
        let spare = NullB::new(&format!("{tag}spare"), 256, true)?;
        let (lin, remap) = pair(tag, &main.path, sectors, &spare)?;
        let dev = if name == "dm-linear" { lin.path.clone() } else { remap.path.clone() };
        cmd("mkfs.ext4", &["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", &dev])?;
        let dir = format!("/mnt/{tag}");
        std::fs::create_dir_all(&dir)?;
        cmd("mount", &[&dev, &dir])?;
        let m = Mounted(dir.clone());
        mounts.push((name, dir, m, lin, remap, main, spare));
    }
    for rep in 0..reps {
        for (w, args) in &workloads {
            for (name, dir, ..) in &mounts {
                let file = format!("{dir}/fio.dat");
                let mut a: Vec<String> = vec![format!("--filename={file}"), "--size=192M".into()];
                a.extend(args.iter().map(|s| s.to_string()));
                let v = fio_file(&a, runtime)?;
                println!("{BENCH} {name} {w} {rep} {:.1}", iops(&v));
                std::fs::remove_file(&file).with_context(|| format!("removing {file}"))?;
            }
        }
    }
    Ok(())
}

/// fio on a file (the block-device runs use `bench::fio`).
fn fio_file(args: &[String], runtime: &str) -> Result<serde_json::Value> {
    let mut a: Vec<String> = vec!["--name=bench".into(), "--output-format=json".into(), "--randrepeat=1".into()];
    if !runtime.is_empty() {
        a.push("--time_based".into());
        a.push(format!("--runtime={runtime}"));
    }
    a.extend(args.iter().cloned());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = cmd("fio", &a)?;
    // fio may print notes before the JSON.
    let json = out.find('{').map_or(out.as_str(), |i| &out[i..]);
    serde_json::from_str(json).with_context(|| format!("fio output {out:?}"))
}

/// Unmounts on drop, so a failed run leaves its devices removable.
struct Mounted(String);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = cmd("umount", &[&self.0]);
    }
}
