//! A main device's id, taken the way udev names disks in /dev/disk/by-id: the WWN where the
//! device reports one, else its serial number (docs/dmremap.md).

use crate::{Fail, Kind};
use dm_remap_logic::mainid::{allowed, MainId, MAX_LEN};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Turns a sysfs attribute into an id: surrounding blanks trimmed, every run of other
/// characters outside `[A-Za-z0-9._:-]` made one `_` (as udev does with spaces), at most 64
/// bytes. `None` if nothing is left.
pub fn mangle(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut gap = false;
    for c in raw.trim().chars() {
        if c.is_ascii() && allowed(c as u8) {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.push(c);
        } else {
            gap = true;
        }
    }
    out.truncate(MAX_LEN);
    (!out.is_empty()).then_some(out)
}

fn sysfs_dir(dev: &Path) -> Option<PathBuf> {
    let m = std::fs::metadata(dev).ok()?;
    if !m.file_type().is_block_device() {
        return None;
    }
    let rdev = m.rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()
}

fn attr(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok().and_then(|s| mangle(&s))
}

/// The id of block device `dev`, if it has one: `wwid` (NVMe, SCSI/SATA through the SCSI
/// layer), else `serial` (virtio-blk, NVMe controllers). A partition gets its disk's id with
/// `-part<N>`, as in /dev/disk/by-id. Loop devices, dm devices and plain files have none.
pub fn detect(dev: &Path) -> Option<MainId> {
    let dir = sysfs_dir(dev)?;
    let (disk, part) = match std::fs::read_to_string(dir.join("partition")) {
        Ok(n) => (dir.parent()?.to_path_buf(), Some(n.trim().to_string())),
        Err(_) => (dir, None),
    };
    let id = ["wwid", "device/wwid", "serial", "device/serial"].iter().find_map(|a| attr(&disk, a))?;
    let id = match part {
        Some(n) => mangle(&format!("{}-part{n}", &id[..id.len().min(MAX_LEN - 8)]))?,
        None => id,
    };
    MainId::parse(id.as_bytes())
}

/// The id to record or check: `--main-id` if given (validated), else the device's own.
pub fn choose(given: Option<&str>, main: &Path) -> Result<Option<MainId>, Fail> {
    match given {
        Some(s) => MainId::parse(s.as_bytes()).map(Some).ok_or_else(|| {
            Fail::new(Kind::Refused, format!("invalid --main-id {s:?}: must be 1 to 64 characters of A-Z a-z 0-9 . _ : -"))
        }),
        None => Ok(detect(main)),
    }
}

/// The id as text.
pub fn text(id: &MainId) -> String {
    String::from_utf8_lossy(id.as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mangles_like_udev() {
        assert_eq!(mangle("  WD-WCC4N1234567\n").as_deref(), Some("WD-WCC4N1234567"));
        assert_eq!(mangle("Samsung SSD  870 EVO").as_deref(), Some("Samsung_SSD_870_EVO"));
        assert_eq!(mangle("naa.5000c500a1b2c3d4").as_deref(), Some("naa.5000c500a1b2c3d4"));
        assert_eq!(mangle("  \n"), None);
        assert_eq!(mangle("é/é"), None);
        assert_eq!(mangle(&"x".repeat(100)).map(|s| s.len()), Some(MAX_LEN));
    }

    #[test]
    fn a_plain_file_has_no_id() {
        assert_eq!(detect(Path::new("/etc/hostname")), None);
        assert_eq!(detect(Path::new("/nonexistent")), None);
    }
}
