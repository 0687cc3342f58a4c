//! Talking to device-mapper, through the `devicemapper` crate (its ioctls, no dmsetup).

use crate::status;
use crate::{Fail, Kind};
use devicemapper::{DevId, DmName, DmOptions, DM};
use std::os::fd::AsFd;
use std::path::Path;

pub fn dm() -> Result<DM, Fail> {
    DM::new().map_err(|e| Fail::new(Kind::Dm, format!("cannot open /dev/mapper/control (are you root, is dm loaded?): {e}")))
}

fn name(n: &str) -> Result<&DmName, Fail> {
    // The kernel's rules (dm-ioctl.c): no '/', not "." or "..", under 128 bytes.
    if n.contains('/') || n == "." || n == ".." || n.is_empty() || n.len() >= 128 {
        return Err(Fail::new(Kind::Refused, format!("{n:?} is not a valid device-mapper name (no '/', 1 to 127 bytes)")));
    }
    DmName::new(n).map_err(|e| Fail::new(Kind::Refused, format!("{n:?} is not a valid device-mapper name: {e}")))
}

/// Creates and activates `name` with one `remap` target; returns its device node.
pub fn create(n: &str, len: u64, params: &str) -> Result<String, Fail> {
    create_with_uuid(n, None, len, params)
}

/// [`create`], with a DM UUID (`REMAP-<spare uuid>` for `activate`: udev's
/// /dev/disk/by-id/dm-uuid-REMAP-* link and a prefix rules can match).
pub fn create_with_uuid(n: &str, uuid: Option<&str>, len: u64, params: &str) -> Result<String, Fail> {
    create_one(n, uuid, ("remap", len, params), DmOptions::default())
}

/// The DM UUID prefix of the read-only stand-in (`REMAPRO-<name>`): not `REMAP-`, so the
/// rules and tools that act on remap devices leave it alone, but `dmremap` knows it.
pub const STANDIN_UUID_PREFIX: &str = "REMAPRO-";

/// What `status`, `check` and `message` say of the stand-in.
pub fn standin_text(n: &str) -> String {
    format!(
        "{n} is the main device alone, read-only, through dm-linear: its spare was missing at boot (spare_missing=readonly); no remap is served and blocks relocated to the spare read the main device's old copy; attach the spare and reboot"
    )
}

/// Creates `name` as a read-only dm-linear map of all of `main` (`sectors` long): the
/// boot-time stand-in when the spare is missing (`spare_missing=readonly`).
pub fn create_linear_ro(n: &str, main: &str, sectors: u64) -> Result<String, Fail> {
    let uuid = format!("{STANDIN_UUID_PREFIX}{n}");
    create_one(n, Some(&uuid), ("linear", sectors, &format!("{main} 0")), DmOptions::default().set_flags(devicemapper::DmFlags::DM_READONLY))
}

/// Whether dm device `n` is the stand-in [`create_linear_ro`] made: its DM UUID says so and
/// its table is one linear target.
pub fn is_standin(n: &str) -> bool {
    let (Ok(dm), Ok(dn)) = (dm(), name(n)) else { return false };
    let ours = dm
        .device_info(&DevId::Name(dn))
        .ok()
        .and_then(|i| i.uuid().map(|u| u.to_string()))
        .is_some_and(|u| u.starts_with(STANDIN_UUID_PREFIX));
    ours && table(&dm, n, true).is_ok_and(|t| matches!(t.as_slice(), [(_, _, ty, _)] if ty == "linear"))
}

/// Every stand-in's name (`check --all` reports them).
pub fn standins() -> Vec<String> {
    list_all().unwrap_or_default().into_iter().filter(|n| is_standin(n)).collect()
}

/// Creates `name` with one target (`(type, sectors, params)`), loaded with `load` options,
/// and resumes it; a refused table removes the device again. Returns its device node.
fn create_one(n: &str, uuid: Option<&str>, (target, len, params): (&str, u64, &str), load: DmOptions) -> Result<String, Fail> {
    let dm = dm()?;
    let dn = name(n)?;
    let du = match uuid {
        Some(u) => Some(devicemapper::DmUuid::new(u).map_err(|e| Fail::new(Kind::Refused, format!("{u:?} is not a valid DM UUID: {e}")))?),
        None => None,
    };
    let info = dm
        .device_create(dn, du, DmOptions::default())
        .map_err(|e| Fail::new(Kind::Dm, format!("cannot create device {n}: {e}")))?;
    let id = DevId::Name(dn);
    let table = vec![(0u64, len, target.to_string(), params.to_string())];
    let loaded = dm.table_load(&id, &table, load).and_then(|_| dm.device_suspend(&id, DmOptions::default()));
    if let Err(e) = loaded {
        let _ = dm.device_remove(&id, DmOptions::default());
        return Err(Fail::new(Kind::Dm, format!("the kernel refused the table for {n} (the reason is in the kernel log, dmesg): {e}")));
    }
    let node = format!("/dev/mapper/{n}");
    ensure_node(&node, info.device().major, info.device().minor)?;
    Ok(node)
}

/// Makes the /dev/mapper node when no udev does it.
fn ensure_node(node: &str, major: u32, minor: u32) -> Result<(), Fail> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    // Give udev a moment if it is there.
    for _ in 0..20 {
        if Path::new(node).exists() {
            return Ok(());
        }
        if !Path::new("/run/udev/control").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let dev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
    mknod(node, SFlag::S_IFBLK, Mode::from_bits_truncate(0o660), dev)
        .map_err(|e| Fail::new(Kind::Io, format!("cannot create the device node {node}: {e}")))
}

/// Removes `name` (a dm-remap device, or the stand-in for one) and its node.
pub fn remove(n: &str) -> Result<(), Fail> {
    if !is_standin(n) {
        check_remap(n)?;
    }
    remove_any(n)
}

/// Removes dm device `name` whatever its target (the shutdown ramfs takes down the LVs on a
/// remap device too).
pub fn remove_any(n: &str) -> Result<(), Fail> {
    let dm = dm()?;
    dm.device_remove(&DevId::Name(name(n)?), DmOptions::default())
        .map_err(|e| Fail::new(Kind::Dm, format!("cannot remove {n} (is it in use?): {e}")))?;
    let node = format!("/dev/mapper/{n}");
    if Path::new(&node).exists() && !Path::new("/run/udev/control").exists() {
        let _ = std::fs::remove_file(&node);
    }
    Ok(())
}

fn table(dm: &DM, n: &str, table_flag: bool) -> Result<Vec<(u64, u64, String, String)>, Fail> {
    let opts = if table_flag {
        DmOptions::default().set_flags(devicemapper::DmFlags::DM_STATUS_TABLE)
    } else {
        DmOptions::default()
    };
    dm.table_status(&DevId::Name(name(n)?), opts)
        .map(|(_, t)| t)
        .map_err(|e| Fail::new(Kind::NotRemap, format!("no device-mapper device {n}: {e}")))
}

fn check_remap(n: &str) -> Result<(), Fail> {
    let dm = dm()?;
    if is_remap_table(&table(&dm, n, true)?) {
        Ok(())
    } else {
        Err(not_remap(n))
    }
}

/// Whether a table is one `remap` target.
fn is_remap_table(t: &[(u64, u64, String, String)]) -> bool {
    matches!(t, [(_, _, ty, _)] if ty == "remap")
}

/// Why `n` is not a dm-remap device: the stand-in is named as such.
fn not_remap(n: &str) -> Fail {
    if is_standin(n) {
        Fail::new(Kind::NotRemap, standin_text(n))
    } else {
        Fail::new(Kind::NotRemap, format!("{n} is not a dm-remap device"))
    }
}

/// The status fields of a dm-remap device (after `remap`).
pub fn status_line(n: &str) -> Result<String, Fail> {
    let dm = dm()?;
    let t = table(&dm, n, false)?;
    match t.as_slice() {
        [(_, _, ty, params)] if ty == "remap" => Ok(params.clone()),
        _ => Err(not_remap(n)),
    }
}

/// Sends `msg` to a dm-remap device's target (`dmsetup message <n> 0 <msg>`); its reply, if
/// any. A refusal carries the kernel's errno text (the kernel log has the reason).
pub fn message(n: &str, msg: &str) -> Result<String, Fail> {
    check_remap(n)?;
    let dm = dm()?;
    dm.target_msg(&DevId::Name(name(n)?), Some(0), msg)
        .map(|(_, reply)| reply.unwrap_or_default())
        .map_err(|e| Fail::new(Kind::Dm, format!("{n} refused `{msg}`: {e}")))
}

/// Whether a dm device of this name exists (any target).
pub fn exists(n: &str) -> bool {
    match (dm(), name(n)) {
        (Ok(dm), Ok(dn)) => dm.device_info(&DevId::Name(dn)).is_ok(),
        _ => false,
    }
}

/// The kernel's name of a block device `major:minor` (`dm-0`, `sdb`, `loop1`), from sysfs.
pub fn kernel_name(devno: &str) -> Option<String> {
    let p = std::fs::canonicalize(format!("/sys/dev/block/{devno}")).ok()?;
    Some(p.file_name()?.to_string_lossy().into_owned())
}

/// `major:minor` of a dm device.
pub fn devno(n: &str) -> Result<String, Fail> {
    let dm = dm()?;
    let info = dm.device_info(&DevId::Name(name(n)?)).map_err(|e| Fail::new(Kind::NotRemap, format!("no device-mapper device {n}: {e}")))?;
    let d = info.device();
    Ok(format!("{}:{}", d.major, d.minor))
}

/// Every dm device's name, whatever its target (the shutdown ramfs removes them all).
pub fn list_all() -> Result<Vec<String>, Fail> {
    let dm = dm()?;
    let devs = dm.list_devices().map_err(|e| Fail::new(Kind::Dm, format!("cannot list devices: {e}")))?;
    Ok(devs.into_iter().map(|(n, _, _)| n.to_string()).collect())
}

/// Every dm-remap device's name.
pub fn list() -> Result<Vec<String>, Fail> {
    let dm = dm()?;
    Ok(list_all()?.into_iter().filter(|n| table(&dm, n, true).is_ok_and(|t| is_remap_table(&t))).collect())
}

pub fn event_nr(dm: &DM, n: &str) -> Result<u32, Fail> {
    dm.device_info(&DevId::Name(name(n)?))
        .map(|i| i.event_nr())
        .map_err(|e| Fail::new(Kind::NotRemap, format!("no device-mapper device {n}: {e}")))
}

/// Waits for events on `n`; prints each with the state it left, runs `exec` with it in the
/// environment. Returns after `count` events (never if `None`).
pub fn watch(n: &str, exec: Option<&str>, count: Option<u64>) -> Result<i32, Fail> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    check_remap(n)?;
    let dm = dm()?;
    let mut last = event_nr(&dm, n)?;
    let mut seen = 0u64;
    println!("watching {n} (event {last})");
    while count.is_none_or(|c| seen < c) {
        // Arm first, then look: an event between the two still wakes the poll.
        dm.arm_poll().map_err(|e| Fail::new(Kind::Dm, format!("cannot arm device-mapper polling: {e}")))?;
        let now = event_nr(&dm, n)?;
        if now == last {
            let mut fds = [PollFd::new(dm.file().as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::NONE).map_err(|e| Fail::new(Kind::Dm, format!("poll failed: {e}")))?;
            continue;
        }
        last = now;
        seen += 1;
        let s = status::parse(&status_line(n)?)?;
        let used_pct = s.spare_blocks.saturating_sub(s.spare_free).saturating_mul(100).checked_div(s.spare_blocks).unwrap_or(0);
        println!(
            "event {now}: {n} {} health {} spare {}% used ({} free), {} remaps, {} pending",
            s.state, s.health, used_pct, s.spare_free, s.remaps, s.pending
        );
        if let Some(cmd) = exec {
            let st = std::process::Command::new("sh")
                .args(["-c", cmd])
                .env("DMREMAP_NAME", n)
                .env("DMREMAP_EVENT", now.to_string())
                .env("DMREMAP_STATE", &s.state)
                .env("DMREMAP_HEALTH", s.health.to_string())
                .env("DMREMAP_SPARE_USED_PERCENT", used_pct.to_string())
                .env("DMREMAP_SPARE_FREE", s.spare_free.to_string())
                .env("DMREMAP_REMAPS", s.remaps.to_string())
                .status();
            if let Err(e) = st {
                eprintln!("dmremap: cannot run {cmd:?}: {e}");
            }
        }
    }
    Ok(0)
}
