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
use dm_remap_logic::tab::{parse_line, DevRef, TabEntry};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The default table.
pub const TAB: &str = "/etc/dmremaptab";

/// DM UUID prefix of devices `activate` makes.
pub const UUID_PREFIX: &str = "REMAP-";

/// The valid superblock of a device holding dm-remap metadata.
fn superblock(path: &Path) -> Option<Superblock> {
    let f = File::open(path).ok()?;
    let mut head = [0u8; 2 * META_BLOCK];
    f.read_exact_at(&mut head, 0).ok()?;
    let (a, b) = head.split_at(META_BLOCK);
    loader::superblock_alone(a.try_into().ok()?, b.try_into().ok()?, spare::size_of(path).ok()? / 512).ok()
}

fn hex(u: &[u8; 16]) -> String {
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
    };
    // The length the spare was made for: the whole main device when `format` wrote it.
    let bs_sectors = u64::from(bs / 512).max(1);
    let len = sb.main_sectors / bs_sectors * bs_sectors;
    dm::create_with_uuid(e.name, Some(&format!("{UUID_PREFIX}{}", hex(&sb.uuid))), len, &spec.to_string())?;
    Ok(true)
}

/// Reads the table: (line number, line) of every line.
fn read_tab(tab: &Path) -> Result<Vec<(usize, String)>, Fail> {
    let text = std::fs::read_to_string(tab).map_err(|e| Fail::new(Kind::Io, format!("cannot read {}: {e}", tab.display())))?;
    Ok(text.lines().enumerate().map(|(i, l)| (i + 1, l.to_string())).collect())
}

/// Activates `name` (any line, `noauto` too) or every line without `noauto`. Returns 0 if
/// every chosen line is up, else the exit code of the last failure; each failure is one line
/// on stderr naming the table line.
pub fn activate(tab: &Path, name: Option<&str>) -> Result<i32, Fail> {
    let lines = read_tab(tab)?;
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
        match name {
            Some(n) if n != entry.name => continue,
            None if entry.options.noauto => continue,
            _ => {}
        }
        found = true;
        match activate_one(&entry) {
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

/// Removes `name`, or every device of the table that is up (in reverse order).
pub fn deactivate(tab: &Path, name: Option<&str>) -> Result<i32, Fail> {
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
