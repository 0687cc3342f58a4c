//! `dmremap activate` / `deactivate`: the devices of /etc/dmremaptab (docs/dmremaptab.md),
//! parsed by `dm_remap_logic::tab`.
//!
//! A bad line is reported with its number and the other lines still activate. Activation
//! never formats: the spare must hold dm-remap metadata (`dmremap format`), whose uuid becomes
//! the DM UUID `REMAP-<uuid>`.

use crate::{dm, ident, spare, Fail, Kind};
use dm_remap_logic::args::LineSpec;
use dm_remap_logic::format::{Superblock, META_BLOCK};
use dm_remap_logic::loader;
use dm_remap_logic::tab::{parse_line, DevRef, SpareMissing, TabEntry};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The default table.
pub const TAB: &str = "/etc/dmremaptab";

/// DM UUID prefix of devices `activate` makes.
pub const UUID_PREFIX: &str = "REMAP-";

/// The valid superblock of a device holding dm-remap metadata.
pub fn superblock(path: &Path) -> Option<Superblock> {
    let f = File::open(path).ok()?;
    let mut head = [0u8; 2 * META_BLOCK];
    f.read_exact_at(&mut head, 0).ok()?;
    let (a, b) = head.split_at(META_BLOCK);
    loader::superblock_alone(a.try_into().ok()?, b.try_into().ok()?, spare::size_of(path).ok()? / 512).ok()
}

pub fn hex(u: &[u8; 16]) -> String {
    u.iter().map(|b| format!("{b:02x}")).collect()
}

/// The block device whose dm-remap superblock has `uuid`: every whole disk and partition
/// in /sys/class/block, except dm-remap devices themselves.
fn find_spare(uuid: &[u8; 16]) -> Option<PathBuf> {
    let mut names: Vec<String> =
        std::fs::read_dir("/sys/class/block").ok()?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names.into_iter().map(|n| PathBuf::from(format!("/dev/{n}"))).find(|p| superblock(p).is_some_and(|sb| &sb.uuid == uuid))
}

/// Fails unless `path` is a block device nobody holds: not mounted, not a member of md, LVM
/// or another dm device (an exclusive open succeeds).
fn not_in_use(path: &Path, what: &str) -> Result<(), Fail> {
    let m = std::fs::metadata(path).map_err(|e| Fail::new(Kind::Io, format!("{what} {}: {e}", path.display())))?;
    if !m.file_type().is_block_device() {
        return Err(Fail::new(Kind::Refused, format!("{what} {} is not a block device", path.display())));
    }
    OpenOptions::new().read(true).custom_flags(nix::libc::O_EXCL).open(path).map(drop).map_err(|e| match e.raw_os_error() {
        Some(nix::libc::EBUSY) => Fail::new(
            Kind::Refused,
            format!("{what} {} is in use (mounted, or held by device-mapper, md, LVM or another exclusive user)", path.display()),
        ),
        _ => Fail::new(Kind::Io, format!("cannot open {what} {}: {e}", path.display())),
    })
}

/// Brings up one entry; `Ok(false)` if it was already up.
fn activate_one(e: &TabEntry) -> Result<bool, Fail> {
    if dm::exists(e.name) {
        return Ok(false);
    }
    let main = match e.main {
        DevRef::Path(p) => PathBuf::from(p),
        DevRef::Uuid(_) => return Err(Fail::new(Kind::Refused, "the main device cannot be given by UUID")),
    };
    let spare = match e.spare {
        DevRef::Path(p) => PathBuf::from(p),
        DevRef::Uuid(u) => find_spare(&u).ok_or_else(|| Fail::new(Kind::Io, format!("no block device holds the spare UUID={}", hex(&u))))?,
    };
    not_in_use(&main, "main device")?;
    not_in_use(&spare, "spare")?;
    let sb = superblock(&spare).ok_or_else(|| {
        Fail::new(Kind::Refused, format!("{} holds no valid dm-remap metadata (dmremap inspect says why; dmremap format prepares a spare)", spare.display()))
    })?;
    let bs = e.options.block_size.unwrap_or(sb.geometry.block_size);
    let (main_s, spare_s) = (main.display().to_string(), spare.display().to_string());
    if main_s.contains(char::is_whitespace) || spare_s.contains(char::is_whitespace) {
        return Err(Fail::new(Kind::Refused, "a device path with blanks cannot go in a table line"));
    }
    let main_id = match e.options.main_id {
        Some(id) => Some(id),
        None => ident::detect(&main),
    };
    let spec = LineSpec {
        main: &main_s,
        spare: &spare_s,
        format: false,
        // The spare's own block size unless the line says otherwise (then the kernel
        // refuses a mismatch).
        block_size: e.options.block_size.or((sb.geometry.block_size != dm_remap_logic::args::DEFAULT_BLOCK_SIZE).then_some(sb.geometry.block_size)),
        read_retries: e.options.read_retries,
        cache_size: e.options.cache_size,
        no_proactive: e.options.no_proactive,
        main_id,
        alert_threshold: e.options.alert_threshold,
        no_scan: e.options.no_scan,
        scrub_speed_min: e.options.scrub_speed_min,
        scrub_speed_max: e.options.scrub_speed_max,
        main_lost_after: e.options.main_lost_after,
    };
    // The length the spare was made for: the whole main device when `format` wrote it.
    let bs_sectors = u64::from(bs / 512).max(1);
    let len = sb.main_sectors / bs_sectors * bs_sectors;
    dm::create_with_uuid(e.name, Some(&format!("{UUID_PREFIX}{}", hex(&sb.uuid))), len, &spec.to_string())?;
    lvm_devices_file(&main, e.name);
    Ok(true)
}

/// Reads the table: (line number, line) of every line.
fn read_tab(tab: &Path) -> Result<Vec<(usize, String)>, Fail> {
    let text = std::fs::read_to_string(tab).map_err(|e| Fail::new(Kind::Io, format!("cannot read {}: {e}", tab.display())))?;
    Ok(text.lines().enumerate().map(|(i, l)| (i + 1, l.to_string())).collect())
}

/// Which lines `activate` brings up.
#[derive(Clone, Copy)]
pub enum Pick<'a> {
    /// One line, `noauto` or not.
    Name(&'a str),
    /// Every line without `noauto` (the systemd unit's boot path).
    All,
    /// Every line with `initramfs`, waiting for its devices (the initramfs).
    Initramfs,
}

/// Activates the lines `pick` chooses; with `list`, only prints their names. Returns 0 if
/// every chosen line is up, else the exit code of the last failure; each failure is one line
/// on stderr naming the table line.
pub fn activate(tab: &Path, pick: Pick<'_>, list: bool) -> Result<i32, Fail> {
    let lines = read_tab(tab)?;
    let name = match pick {
        Pick::Name(n) => Some(n),
        _ => None,
    };
    let mut code = 0;
    let mut found = false;
    for (no, text) in &lines {
        let entry = match parse_line(text) {
            Ok(None) => continue,
            Ok(Some(e)) => e,
            Err(err) => {
                // A bad line is skipped only when activating everything; a named device is
                // looked for by name, which a bad line may not even have.
                if name.is_none() || text.split_ascii_whitespace().next() == name {
                    eprintln!("dmremap: {} line {no}: {}", tab.display(), err.message());
                    code = Kind::Refused as i32;
                    found |= name.is_some();
                }
                continue;
            }
        };
        match pick {
            Pick::Name(n) if n != entry.name => continue,
            Pick::All if entry.options.noauto => continue,
            Pick::Initramfs if !entry.options.initramfs => continue,
            _ => {}
        }
        found = true;
        if list {
            println!("{}", entry.name);
            continue;
        }
        let done = match pick {
            Pick::Initramfs => activate_waiting(&entry),
            _ => activate_one(&entry),
        };
        match done {
            Ok(true) => println!("activated {}", entry.name),
            Ok(false) => println!("{} is already active", entry.name),
            Err(f) => {
                eprintln!("dmremap: {} line {no} ({}): {}", tab.display(), entry.name, f.msg);
                code = f.kind as i32;
            }
        }
    }
    if let (Some(n), false) = (name, found) {
        return Err(Fail::new(Kind::NotRemap, format!("{n} is not in {}", tab.display())));
    }
    Ok(code)
}

/// Where the spare of `e` is now, if it is there.
fn spare_now(e: &TabEntry) -> Option<PathBuf> {
    match e.spare {
        DevRef::Path(p) => Path::new(p).exists().then(|| PathBuf::from(p)),
        DevRef::Uuid(u) => find_spare(&u),
    }
}

/// The initramfs path: waits up to `spare_timeout` for the devices of `e` to appear (udev
/// makes the links as the disks are probed), then activates it. A spare still missing then
/// follows `spare_missing`: `fail` leaves the device down; `readonly` maps the main device
/// alone, read-only, through dm-linear, and says so on the console and in the kernel log.
fn activate_waiting(e: &TabEntry) -> Result<bool, Fail> {
    if dm::exists(e.name) {
        return Ok(false);
    }
    let DevRef::Path(main) = e.main else { return Err(Fail::new(Kind::Refused, "the main device cannot be given by UUID")) };
    let secs = e.options.spare_timeout.unwrap_or(dm_remap_logic::tab::DEFAULT_SPARE_TIMEOUT);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(u64::from(secs));
    let mut said = false;
    loop {
        let here = (Path::new(main).exists(), spare_now(e).is_some());
        if here == (true, true) {
            return activate_one(e);
        }
        if std::time::Instant::now() >= deadline {
            if !here.0 {
                return Err(Fail::new(Kind::Io, format!("main device {main} not found after {secs} s")));
            }
            let spare = match e.spare {
                DevRef::Path(p) => p.to_string(),
                DevRef::Uuid(u) => format!("UUID={}", hex(&u)),
            };
            return match e.options.spare_missing {
                SpareMissing::Fail => Err(Fail::new(
                    Kind::Io,
                    format!("spare {spare} not found after {secs} s; not brought up (spare_missing=readonly would map the main device alone, read-only)"),
                )),
                SpareMissing::ReadOnly => {
                    not_in_use(Path::new(main), "main device")?;
                    let sectors = spare::size_of(Path::new(main))? / 512;
                    dm::create_linear_ro(e.name, main, sectors)?;
                    let msg = format!(
                        "{}: spare {spare} not found after {secs} s: /dev/mapper/{} is the main device alone, READ-ONLY, through dm-linear (spare_missing=readonly); blocks relocated to the spare read the main device's old copy; attach the spare and reboot",
                        e.name, e.name
                    );
                    eprintln!("dmremap: {msg}");
                    kmsg(2, &msg);
                    Ok(true)
                }
            };
        }
        if !said {
            eprintln!("dmremap: {}: waiting up to {secs} s for {}", e.name, if here.0 { "the spare" } else { "the main device" });
            said = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// One line in the kernel log at `level` (the journal keeps it: the initramfs has no other
/// log).
fn kmsg(level: u8, msg: &str) {
    if let Ok(mut f) = OpenOptions::new().write(true).open("/dev/kmsg") {
        use std::io::Write;
        // One write() is one record: `writeln!` would write the prefix, the text and the
        // newline as three (seen: the line never showed whole in dmesg or the journal).
        let _ = f.write_all(format!("<{level}>dmremap: {msg}\n").as_bytes());
    }
}

/// `/dev/mapper/<holder>` of every LVM LV (DM UUID `LVM-...`) stacked on dm device `n`,
/// from sysfs: what must go before `n` can.
fn lvm_holders(n: &str) -> Vec<String> {
    let Some(k) = dm::devno(n).ok().and_then(|d| dm::kernel_name(&d)) else { return Vec::new() };
    let Ok(dir) = std::fs::read_dir(format!("/sys/block/{k}/holders")) else { return Vec::new() };
    let mut out: Vec<String> = dir
        .flatten()
        .filter(|h| std::fs::read_to_string(h.path().join("dm/uuid")).is_ok_and(|u| u.starts_with("LVM-")))
        .filter_map(|h| std::fs::read_to_string(h.path().join("dm/name")).ok())
        .map(|name| format!("/dev/mapper/{}", name.trim()))
        .collect();
    out.sort();
    out
}

/// Runs `lvm <args>`, echoing what it says; whether it succeeded.
fn lvm(args: &[&str]) -> bool {
    match std::process::Command::new("lvm").args(args).status() {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("dmremap: cannot run lvm {}: {e}", args.join(" "));
            false
        }
    }
}

/// Whether LVM uses its devices file (lvm.conf `devices/use_devicesfile`, and the file is
/// there): only then does it restrict LVM to the devices listed.
fn lvm_devices_file_in_use() -> bool {
    let out = std::process::Command::new("lvmconfig").args(["--typeconfig", "full", "devices/use_devicesfile", "devices/devicesfile"]).output();
    let Ok(out) = out else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| text.lines().find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().trim_matches('"').to_string()));
    let file = value("devicesfile=").unwrap_or_else(|| "system.devices".into());
    value("use_devicesfile=").as_deref() == Some("1") && Path::new("/etc/lvm/devices").join(file).exists()
}

/// Keeps LVM's devices file right when it is in use: the main disk and its partitions out,
/// the remap device in (if a member was listed). Without a devices file (Debian's default)
/// nothing is written: the udev rules keep autoactivation off the members (docs/boot.md).
fn lvm_devices_file(main: &Path, name: &str) {
    if !lvm_devices_file_in_use() {
        return;
    }
    let Ok(real) = std::fs::canonicalize(main) else { return };
    let kname = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut members = vec![real.display().to_string()];
    if let Ok(dir) = std::fs::read_dir(format!("/sys/class/block/{kname}")) {
        members.extend(dir.flatten().filter(|e| e.path().join("partition").exists()).map(|e| format!("/dev/{}", e.file_name().to_string_lossy())));
    }
    let mut listed = false;
    for m in &members {
        let out = std::process::Command::new("lvmdevices").args(["--deldev", m]).output();
        if out.is_ok_and(|o| o.status.success()) {
            println!("{name}: {m} removed from LVM's devices file");
            listed = true;
        }
    }
    let node = format!("/dev/mapper/{name}");
    if listed && std::process::Command::new("lvmdevices").args(["--adddev", &node]).output().is_ok_and(|o| o.status.success()) {
        println!("{name}: {node} added to LVM's devices file");
    }
}

/// Removes `name`, or every device of the table that is up (in reverse order); with `lvm`,
/// deactivates the LVM volumes on each first.
pub fn deactivate(tab: &Path, name: Option<&str>, with_lvm: bool) -> Result<i32, Fail> {
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_string()],
        None => read_tab(tab)?
            .iter()
            .filter_map(|(_, l)| parse_line(l).ok().flatten().map(|e| e.name.to_string()))
            .filter(|n| dm::exists(n))
            .rev()
            .collect(),
    };
    let mut code = 0;
    for n in names {
        if with_lvm && dm::exists(&n) {
            for lv in lvm_holders(&n) {
                if lvm(&["lvchange", "-an", &lv]) {
                    println!("{n}: deactivated {lv}");
                }
            }
        }
        match dm::remove(&n) {
            Ok(()) => println!("deactivated {n}"),
            Err(f) => {
                eprintln!("dmremap: {}", f.msg);
                code = f.kind as i32;
            }
        }
    }
    Ok(code)
}
