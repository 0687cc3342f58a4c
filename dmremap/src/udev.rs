//! `dmremap udev-member <devnode> [<link>...]`: whether a block device is a member of a
//! dm-remap device (its main disk, a partition of it, or its spare), for udev's
//! `IMPORT{program}` in `61-dm-remap.rules` (docs/boot.md).
//!
//! The main disk carries the same filesystem UUID and LVM PV header as `/dev/mapper/<name>`
//! (target sector s is main sector s), so anything that finds it by content (fstab `UUID=`,
//! udisks, LVM autoactivation) would bypass every relocation. The rules hide the members'
//! content from udev when this answers `DM_REMAP_MEMBER=main|spare`.
//!
//! A device is a member when:
//! - it holds valid dm-remap metadata (it is a spare);
//! - a line of /etc/dmremaptab names it (main or spare, by path or by its links, the spare
//!   also by `UUID=`), or names the disk it is a partition of (main), or its disk's id is a
//!   line's `main_id=`;
//! - its disk's id (WWN, else serial) is the main id a spare seen by udev records.
//!
//! Spares seen are remembered in /run/dm-remap/spares/<uuid> (their recorded main id), so a
//! main disk that appears after its spare is recognised; one that appeared before is sent a
//! `change` uevent when the spare is first seen.

use crate::{activate, ident};
use dm_remap_logic::mainid::MainId;
use dm_remap_logic::tab::{parse_line, DevRef};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where spares seen by udev are remembered (tmpfs: forgotten at reboot, as udev's own db).
pub const RUN_DIR: &str = "/run/dm-remap/spares";

/// What a member is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Main,
    Spare,
}

/// The answer for a member device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub role: Role,
    /// The dmremaptab name, when a line names this device.
    pub name: Option<String>,
    /// The spare's metadata uuid (spares only).
    pub spare_uuid: Option<[u8; 16]>,
}

/// What is known of the device udev is handling.
pub struct Facts<'a> {
    /// Its device number.
    pub devno: u64,
    /// Its kernel name (`vdb`, `sda1`).
    pub kname: &'a str,
    /// The whole disk's device number, if this is a partition.
    pub parent: Option<u64>,
    /// Its links so far, relative to /dev (`disk/by-id/...`): udev's `$links`.
    pub links: &'a [String],
    /// The whole disk's links (partitions), from the udev database.
    pub parent_links: &'a [String],
    /// Its own dm-remap superblock, if valid: uuid and recorded main id.
    pub superblock: Option<([u8; 16], MainId)>,
    /// The whole disk's id (WWN, else serial), if any.
    pub disk_id: Option<MainId>,
    /// Main ids recorded by the spares seen so far.
    pub recorded: &'a [MainId],
}

/// Whether the path `p` of a table line names the device with `devno`, kernel name `kname`
/// and `links`: by one of its links, by its /dev name, or by resolving to its number.
fn names(p: &str, devno: u64, kname: &str, links: &[String], resolve: &dyn Fn(&str) -> Option<u64>) -> bool {
    let rel = p.strip_prefix("/dev/").unwrap_or("");
    (!rel.is_empty() && (rel == kname || links.iter().any(|l| l == rel))) || resolve(p) == Some(devno)
}

/// Decides from the facts and the table's text; `resolve` gives a path's device number.
pub fn decide(f: &Facts, tab: &str, resolve: &dyn Fn(&str) -> Option<u64>) -> Option<Member> {
    let entries: Vec<_> = tab.lines().filter_map(|l| parse_line(l).ok().flatten()).collect();
    if let Some((uuid, _)) = f.superblock {
        let name = entries.iter().find(|e| match e.spare {
            DevRef::Uuid(u) => u == uuid,
            DevRef::Path(p) => names(p, f.devno, f.kname, f.links, resolve),
        });
        return Some(Member { role: Role::Spare, name: name.map(|e| e.name.to_string()), spare_uuid: Some(uuid) });
    }
    for e in &entries {
        let main_hit = match e.main {
            DevRef::Path(p) => {
                names(p, f.devno, f.kname, f.links, resolve)
                    || f.parent.is_some_and(|pd| resolve(p) == Some(pd) || p.strip_prefix("/dev/").is_some_and(|r| f.parent_links.iter().any(|l| l == r)))
            }
            DevRef::Uuid(_) => false,
        } || matches!((e.options.main_id, f.disk_id), (Some(a), Some(b)) if a == b);
        if main_hit {
            return Some(Member { role: Role::Main, name: Some(e.name.to_string()), spare_uuid: None });
        }
        if let DevRef::Path(p) = e.spare {
            if names(p, f.devno, f.kname, f.links, resolve) {
                return Some(Member { role: Role::Spare, name: Some(e.name.to_string()), spare_uuid: None });
            }
        }
    }
    if f.disk_id.is_some_and(|id| f.recorded.contains(&id)) {
        return Some(Member { role: Role::Main, name: None, spare_uuid: None });
    }
    None
}

/// The `KEY=value` lines udev imports.
pub fn env_lines(m: &Member) -> String {
    let mut s = format!("DM_REMAP_MEMBER={}\n", if m.role == Role::Main { "main" } else { "spare" });
    if let Some(n) = &m.name {
        s.push_str(&format!("DM_REMAP_NAME={n}\n"));
    }
    if let Some(u) = &m.spare_uuid {
        s.push_str(&format!("DM_REMAP_SPARE_UUID={}\n", activate::hex(u)));
    }
    s
}

fn devno_of(p: &str) -> Option<u64> {
    let m = std::fs::metadata(p).ok()?;
    m.file_type().is_block_device().then(|| m.rdev())
}

fn sysfs(devno: u64) -> Option<PathBuf> {
    let (ma, mi) = (nix::sys::stat::major(devno), nix::sys::stat::minor(devno));
    std::fs::canonicalize(format!("/sys/dev/block/{ma}:{mi}")).ok()
}

fn parse_devno(s: &str) -> Option<u64> {
    let (a, b) = s.trim().split_once(':')?;
    Some(nix::sys::stat::makedev(a.parse().ok()?, b.parse().ok()?))
}

/// A device's links from the udev database (`S:` lines), relative to /dev.
fn db_links(devno: u64) -> Vec<String> {
    let (ma, mi) = (nix::sys::stat::major(devno), nix::sys::stat::minor(devno));
    std::fs::read_to_string(format!("/run/udev/data/b{ma}:{mi}"))
        .map(|t| t.lines().filter_map(|l| l.strip_prefix("S:")).map(str::to_string).collect())
        .unwrap_or_default()
}

fn recorded() -> Vec<MainId> {
    std::fs::read_dir(RUN_DIR)
        .map(|d| d.flatten().filter_map(|e| std::fs::read_to_string(e.path()).ok()).filter_map(|t| MainId::parse(t.trim().as_bytes())).collect())
        .unwrap_or_default()
}

/// Remembers a spare's main id; if that is news, sends `change` to the main disk (and its
/// partitions) when it is already there, so the rules run again for it.
fn remember(uuid: &[u8; 16], main: &MainId) {
    if main.is_none() || std::fs::create_dir_all(RUN_DIR).is_err() {
        return;
    }
    let file = Path::new(RUN_DIR).join(activate::hex(uuid));
    let text = format!("{}\n", ident::text(main));
    if std::fs::read_to_string(&file).ok().as_deref() == Some(text.as_str()) {
        return;
    }
    if std::fs::write(&file, text).is_err() {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/sys/class/block") else { return };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Whole disks only (a partition has a `partition` file); they answer for their
        // partitions below.
        if e.path().join("partition").exists() || ident::detect(Path::new(&format!("/dev/{name}"))).as_ref() != Some(main) {
            continue;
        }
        let Ok(real) = std::fs::canonicalize(e.path()) else { continue };
        let _ = std::fs::write(real.join("uevent"), "change");
        if let Ok(parts) = std::fs::read_dir(&real) {
            for p in parts.flatten().filter(|p| p.path().join("partition").exists()) {
                let _ = std::fs::write(p.path().join("uevent"), "change");
            }
        }
    }
}

/// The command: prints the lines for a member, nothing otherwise; always exits 0 (udev
/// then imports nothing).
pub fn run(dev: &Path, links: &[String], tab: &Path) -> i32 {
    let Some(devno) = devno_of(&dev.to_string_lossy()) else { return 0 };
    let Some(sys) = sysfs(devno) else { return 0 };
    // The remap device itself (and any dm device not fully set up) gets no verdict.
    if std::fs::read_to_string(sys.join("dm/uuid")).is_ok_and(|u| u.starts_with(activate::UUID_PREFIX)) {
        return 0;
    }
    let kname = sys.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parent = if sys.join("partition").exists() {
        sys.parent().and_then(|p| std::fs::read_to_string(p.join("dev")).ok()).and_then(|s| parse_devno(&s))
    } else {
        None
    };
    let parent_links = parent.map(db_links).unwrap_or_default();
    let disk_node = match parent.and_then(sysfs) {
        Some(p) => p.file_name().map(|n| PathBuf::from(format!("/dev/{}", n.to_string_lossy()))),
        None => Some(dev.to_path_buf()),
    };
    let disk_id = disk_node.and_then(|n| ident::detect(&n));
    let superblock = activate::superblock(dev).map(|sb| (sb.uuid, sb.main_id));
    if let Some((uuid, main)) = &superblock {
        remember(uuid, main);
    }
    let recorded = recorded();
    let tab_text = std::fs::read_to_string(tab).unwrap_or_default();
    // udev passes `$links` as one argument or several: split on blanks either way.
    let links: Vec<String> = links.iter().flat_map(|l| l.split_ascii_whitespace()).map(str::to_string).collect();
    let facts = Facts { devno, kname: &kname, parent, links: &links, parent_links: &parent_links, superblock, disk_id, recorded: &recorded };
    if let Some(m) = decide(&facts, &tab_text, &devno_of) {
        print!("{}", env_lines(&m));
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAB: &str = "# name main spare\n\
        a /dev/disk/by-id/virtio-MAIN /dev/disk/by-id/virtio-SPARE\n\
        bad line\n\
        b /dev/vdd UUID=000102030405060708090a0b0c0d0e0f noauto\n\
        c /dev/disk/by-path/x /dev/vdf main_id=WD-77\n";

    fn facts<'a>(devno: u64, kname: &'a str, links: &'a [String]) -> Facts<'a> {
        Facts { devno, kname, parent: None, links, parent_links: &[], superblock: None, disk_id: None, recorded: &[] }
    }

    fn none(_: &str) -> Option<u64> {
        None
    }

    fn member(role: Role, name: Option<&str>, spare_uuid: Option<[u8; 16]>) -> Option<Member> {
        Some(Member { role, name: name.map(str::to_string), spare_uuid })
    }

    #[test]
    fn table_lines_make_members() {
        let links = vec!["disk/by-id/virtio-MAIN".to_string(), "disk/by-path/pci-0000:00:04.0".to_string()];
        assert_eq!(decide(&facts(1, "vdb", &links), TAB, &none), member(Role::Main, Some("a"), None));
        let links = vec!["disk/by-id/virtio-SPARE".to_string()];
        assert_eq!(decide(&facts(2, "vdc", &links), TAB, &none), member(Role::Spare, Some("a"), None));
        // By kernel name, noauto lines too.
        assert_eq!(decide(&facts(3, "vdd", &[]), TAB, &none), member(Role::Main, Some("b"), None));
        // By resolving the path (a link udev made in an earlier event).
        let resolve = |p: &str| (p == "/dev/disk/by-path/x").then_some(9);
        assert_eq!(decide(&facts(9, "sdz", &[]), TAB, &resolve), member(Role::Main, Some("c"), None));
        // A partition of a main disk, by the disk's links or number.
        let parent_links = vec!["disk/by-id/virtio-MAIN".to_string()];
        let p1 = vec!["disk/by-id/virtio-MAIN-part1".to_string()];
        let f = Facts { parent: Some(1), parent_links: &parent_links, ..facts(5, "vdb1", &p1) };
        assert_eq!(decide(&f, TAB, &none), member(Role::Main, Some("a"), None));
        let f = Facts { parent: Some(9), ..facts(10, "sdz1", &[]) };
        assert_eq!(decide(&f, TAB, &resolve), member(Role::Main, Some("c"), None));
        // main_id= of a line.
        let f = Facts { disk_id: MainId::parse(b"WD-77"), ..facts(11, "sdy", &[]) };
        assert_eq!(decide(&f, TAB, &none), member(Role::Main, Some("c"), None));
        // Anything else is not a member; the partition of a spare path is not either.
        assert_eq!(decide(&facts(12, "vde", &[]), TAB, &none), None);
        assert_eq!(decide(&facts(12, "vdb", &[]), "", &none), None);
        let f = Facts { parent: Some(2), ..facts(13, "vdc1", &[]) };
        assert_eq!(decide(&f, TAB, &none), None);
        // A path that is a prefix of a link is not that link.
        let links = vec!["disk/by-id/virtio-MAIN2".to_string()];
        assert_eq!(decide(&facts(14, "vdg", &links), TAB, &none), None);
    }

    #[test]
    fn spares_are_members_and_bind_their_main() {
        let u: [u8; 16] = core::array::from_fn(|i| i as u8);
        let id = MainId::parse(b"QEMU-MAIN-1").unwrap();
        // A spare is a member whether or not the table names it; its UUID= line names it.
        let f = Facts { superblock: Some((u, id)), ..facts(20, "vdx", &[]) };
        assert_eq!(decide(&f, TAB, &none), member(Role::Spare, Some("b"), Some(u)));
        assert_eq!(decide(&f, "", &none), member(Role::Spare, None, Some(u)));
        // A disk whose id a spare records is a main disk, partitions included.
        let rec = [id];
        let f = Facts { disk_id: Some(id), recorded: &rec, ..facts(21, "sdq", &[]) };
        assert_eq!(decide(&f, "", &none), member(Role::Main, None, None));
        let f = Facts { disk_id: Some(id), recorded: &rec, parent: Some(21), ..facts(22, "sdq1", &[]) };
        assert_eq!(decide(&f, "", &none), member(Role::Main, None, None));
        let other = MainId::parse(b"OTHER").unwrap();
        let f = Facts { disk_id: Some(other), recorded: &rec, ..facts(23, "sdr", &[]) };
        assert_eq!(decide(&f, "", &none), None);
    }

    #[test]
    fn lines_for_udev() {
        let u: [u8; 16] = core::array::from_fn(|i| i as u8);
        assert_eq!(env_lines(&Member { role: Role::Main, name: Some("a".into()), spare_uuid: None }), "DM_REMAP_MEMBER=main\nDM_REMAP_NAME=a\n");
        assert_eq!(
            env_lines(&Member { role: Role::Spare, name: None, spare_uuid: Some(u) }),
            "DM_REMAP_MEMBER=spare\nDM_REMAP_SPARE_UUID=000102030405060708090a0b0c0d0e0f\n"
        );
    }
}
