//! The root-filesystem boot test (docs/boot.md "Root on dm-remap", docs/testing.md): Debian's
//! stock kernel boots with the initramfs that `update-initramfs` made in the guest image, the
//! root on `/dev/mapper/root0` (or on an LV whose PV it is), a write through a block the
//! main disk refuses (QEMU's blkdebug), a reboot that finds the data and the remap, and a
//! shutdown through the shutdown ramfs. The last boot has the spare detached.
//!
//! The root tree ([`root_tree`]) is the boot image with Debian's modules, the test's files and
//! an /etc/dmremaptab `initramfs` line; `update-initramfs -c` stands for the kernel package's
//! own postinst, then `dpkg -i` of the built packages, whose trigger must rebuild the
//! initramfs with dm-remap in it (checked with lsinitramfs). Each run makes the disks afresh
//! from it: ext4 by `mkfs.ext4 -d` is the plain main disk; the setup boot of the systemd
//! boot test (tests/boot/boottest `rootsetup`) formats both spares and copies the ext4 into
//! an LV on the second main disk.

use crate::env::{step, Paths};
use crate::kernel::Boot;
use crate::boottest::Phase;
use crate::vm::{self, VmOptions};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The root filesystem's UUID (tests/boot/rootboot has it too).
pub const ROOT_UUID: &str = "7a1c3e55-2b4d-4f60-8e9a-d0c0ffee0028";

/// The guest's /etc/dmremaptab: the root's device, brought up by the initramfs; with its
/// spare missing, read-only through dm-linear after 5 s.
pub const TAB: &str = "# name main spare options\n\
                       root0 /dev/disk/by-id/virtio-DRRMAIN /dev/disk/by-id/virtio-DRRSPARE initramfs,spare_missing=readonly,spare_timeout=5\n";

/// The file whose first block the main disk refuses to write (64 KiB, in the root tree).
const VICTIM: &str = "var/lib/dmremap-boottest/victim";

/// Changes whenever [`root_tree`]'s recipe changes.
const RECIPE: &str = "1";

/// Main disks (MiB): the ext4 fills the plain one; the LVM one has room for the PV's 1 MiB
/// header and metadata besides an LV of the ext4's size.
const FS_MIB: u64 = 448;
const LVM_MAIN_MIB: u64 = 512;
const SPARE_MIB: u64 = 16;

/// First sector of the LV's data on the LVM main disk: a new PV's data area starts at 1 MiB
/// (`pe_start`, checked by the setup boot) and the LV is the VG's first.
const LV_START: u64 = 2048;

const STAMP: &str = ".dm-remap-root";

fn chroot(dir: &Path, args: &[&str]) -> Result<()> {
    crate::env::run(crate::boottest::in_image(dir).args(args))
}

fn chroot_output(dir: &Path, args: &[&str]) -> Result<String> {
    crate::env::output(crate::boottest::in_image(dir).args(args))
}

/// The root tree, made once per (image, packages, modules, recipe). See the module doc.
fn root_tree(paths: &Paths, base: &Path, boot: &Boot, debs: &[PathBuf]) -> Result<PathBuf> {
    let m = boot.modules.as_ref().context("the root boot test needs Debian's kernel")?;
    let rel = &m.release;
    let closure = crate::debian::module_closure(paths, crate::boottest::MODULES)?;
    let config = crate::debian::headers(paths).join(".config");
    let repo = &paths.repo;
    let files: Vec<(&str, PathBuf, u32)> = vec![
        ("usr/local/sbin/dmremap-boottest", repo.join("tests/boot/rootboot"), 0o755),
        ("etc/systemd/system/dmremap-boottest.service", repo.join("tests/boot/dmremap-boottest.service"), 0o644),
        ("etc/systemd/system/dmremap@.service.d/console.conf", repo.join("tests/boot/console.conf"), 0o644),
        // What `exitrd-prepare` says at shutdown, where the host sees it.
        ("etc/systemd/system/dmremap-exitrd.service.d/console.conf", repo.join("tests/boot/console.conf"), 0o644),
    ];
    let mut h = Sha256::new();
    h.update(format!("{RECIPE}\0{}\0{rel}\0{TAB}\0{ROOT_UUID}\0", base.display()));
    for d in debs {
        h.update(std::fs::read(d)?);
    }
    for (g, p, _) in &files {
        h.update(g);
        h.update(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?);
    }
    for f in &closure {
        h.update(f);
        h.update(std::fs::read(m.dir.join(f))?);
    }
    use crate::boottest::Cached;
    let tmp = match crate::boottest::cached_copy(paths, base, "bootroot-", STAMP, h, "root boot test: root tree")? {
        Cached::Reused(dir) => return Ok(dir),
        Cached::Make(p) => p,
    };
    let present: Vec<&str> = ["modules.order", "modules.builtin", "modules.builtin.modinfo"].into_iter().filter(|f| m.dir.join(f).exists()).collect();
    crate::boottest::copy_modules(m, closure.iter().map(String::as_str).chain(present), &tmp)?;
    std::fs::create_dir_all(tmp.join("boot"))?;
    // What linux-image-<release> puts in /boot: update-initramfs -u updates the initramfs of
    // the kernels `linux-version list` finds there.
    std::fs::copy(&config, tmp.join(format!("boot/config-{rel}")))?;
    std::fs::copy(crate::debian::vmlinuz(paths), tmp.join(format!("boot/vmlinuz-{rel}")))?;
    let put = |p: &str, data: &[u8], mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let to = tmp.join(p);
        std::fs::create_dir_all(to.parent().context("path")?)?;
        std::fs::write(&to, data)?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    for (g, p, mode) in &files {
        put(g, &std::fs::read(p)?, *mode)?;
    }
    std::os::unix::fs::symlink("/etc/systemd/system/dmremap-boottest.service", tmp.join("etc/systemd/system/multi-user.target.wants/dmremap-boottest.service"))
        .or_else(|e| if e.kind() == std::io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) })?;
    for unit in ["serial-getty@ttyS0.service", "getty@tty1.service"] {
        let _ = std::os::unix::fs::symlink("/dev/null", tmp.join(format!("etc/systemd/system/{unit}")));
    }
    put("etc/dmremaptab", TAB.as_bytes(), 0o644)?;
    put("etc/fstab", format!("UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n").as_bytes(), 0o644)?;
    put("etc/hostname", b"dmremap-root\n", 0o644)?;
    // A file of known content whose first block the blkdebug main disk refuses to write.
    let victim: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    put(VICTIM, &victim, 0o644)?;
    // What the kernel package's postinst does: modules.dep, then an initramfs. The
    // packages are not installed yet: it has no dm-remap.
    chroot(&tmp, &["depmod", "-a", rel])?;
    chroot(&tmp, &["update-initramfs", "-c", "-k", rel])?;
    let initrd = format!("/boot/initrd.img-{rel}");
    if chroot_output(&tmp, &["lsinitramfs", &initrd])?.contains("usr/sbin/dmremap") {
        bail!("the initramfs has dmremap before its package is installed");
    }
    step("root boot test: dpkg -i of the packages (their trigger must rebuild the initramfs)");
    crate::boottest::dpkg_install(&tmp, debs, rel)?;
    let list = chroot_output(&tmp, &["lsinitramfs", &initrd])?;
    for want in ["usr/sbin/dmremap", "etc/dmremaptab", "usr/lib/udev/rules.d/61-dm-remap.rules", "scripts/local-top/dmremap", "dm-remap.ko"] {
        if !list.lines().any(|l| l.ends_with(want)) {
            bail!("after dpkg -i, the initramfs has no {want}: the packages' update-initramfs trigger did not bring dm-remap in");
        }
    }
    step("root boot test: the packages' trigger rebuilt the initramfs with dm-remap in it");
    tmp.publish(paths)
}

/// The disks of a run, made by [`prepare`]; the setup boot of the systemd boot test formats
/// the spares and fills the LVM main disk.
pub struct Disks {
    pub plain_main: PathBuf,
    pub plain_spare: PathBuf,
    pub lvm_main: PathBuf,
    pub lvm_spare: PathBuf,
    /// The initramfs and the victim's first ext4 block (4 KiB).
    initrd: PathBuf,
    victim_block: u64,
}

impl Disks {
    /// The setup boot's extra disks, by serial (tests/boot/boottest `rootsetup`).
    pub fn setup_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        for (id, img) in [("SRPMAIN", &self.plain_main), ("SRPSPARE", &self.plain_spare), ("SRLMAIN", &self.lvm_main), ("SRLSPARE", &self.lvm_spare)] {
            a.extend(["-drive".to_string(), format!("file={},format=raw,if=none,id={id}", img.display())]);
            a.extend(["-device".to_string(), format!("virtio-blk-pci,drive={id},serial={id}")]);
        }
        a
    }
}

/// Builds the root tree and this run's disks (ext4 from the tree; blank LVM main and spares).
pub fn prepare(paths: &Paths, base: &Path, boot: &Boot, debs: &[PathBuf]) -> Result<Disks> {
    let tree = root_tree(paths, base, boot, debs)?;
    let rel = &boot.modules.as_ref().context("Debian's kernel")?.release;
    let out = paths.target().join("boot");
    std::fs::create_dir_all(&out)?;
    let d = Disks {
        plain_main: out.join("root-main.img"),
        plain_spare: out.join("root-spare.img"),
        lvm_main: out.join("lvroot-main.img"),
        lvm_spare: out.join("lvroot-spare.img"),
        initrd: out.join("root-initrd.img"),
        victim_block: 0,
    };
    std::fs::copy(tree.join(format!("boot/initrd.img-{rel}")), &d.initrd)?;
    for (p, mib) in [(&d.plain_main, FS_MIB), (&d.plain_spare, SPARE_MIB), (&d.lvm_main, LVM_MAIN_MIB), (&d.lvm_spare, SPARE_MIB)] {
        let _ = std::fs::remove_file(p);
        let f = std::fs::File::create(p)?;
        f.set_len(mib << 20)?;
    }
    step("root boot test: mkfs.ext4 -d of the root tree");
    crate::env::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-U", ROOT_UUID, "-L", "root", "-d"])
            .arg(&tree)
            .arg(&d.plain_main),
    )?;
    let bmap = crate::env::output(Command::new("debugfs").args(["-R", &format!("bmap /{VICTIM} 0")]).arg(&d.plain_main))?;
    let victim_block: u64 = bmap.trim().parse().with_context(|| format!("debugfs bmap said {bmap:?}"))?;
    if victim_block == 0 {
        bail!("debugfs found no block for /{VICTIM}");
    }
    Ok(Disks { victim_block, ..d })
}

/// The blkdebug rule file: every write touching `sector` fails with EIO.
fn blkdebug_rules(dir: &Path, name: &str, sector: u64) -> Result<PathBuf> {
    let p = dir.join(format!("{name}.blkdebug"));
    std::fs::write(&p, format!("[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\nsector = \"{sector}\"\n"))?;
    Ok(p)
}

/// The boots: root1, root2 and nospare on the plain pair, lvroot1 and lvroot2 on the LVM
/// pair. Each main disk refuses writes at the victim's first sector.
pub fn run(paths: &Paths, boot: &Boot, module: &Path, d: &Disks) -> Result<Vec<Phase>> {
    let out = paths.target().join("boot");
    let plain_sector = d.victim_block * 8;
    let lvm_sector = LV_START + d.victim_block * 8;
    let plain_rules = blkdebug_rules(&out, "root-main", plain_sector)?;
    let lvm_rules = blkdebug_rules(&out, "lvroot-main", lvm_sector)?;
    let mut phases = Vec::new();
    for (name, main, rules, spare, sector) in [
        ("root1", &d.plain_main, &plain_rules, Some(&d.plain_spare), plain_sector),
        ("root2", &d.plain_main, &plain_rules, Some(&d.plain_spare), plain_sector),
        ("lvroot1", &d.lvm_main, &lvm_rules, Some(&d.lvm_spare), lvm_sector),
        ("lvroot2", &d.lvm_main, &lvm_rules, Some(&d.lvm_spare), lvm_sector),
        ("nospare", &d.plain_main, &plain_rules, None, plain_sector),
    ] {
        step(format!("root boot test: {name} boot (root on dm-remap from the initramfs)"));
        let mut disks = vec![
            "-drive".to_string(),
            format!("if=none,id=DRRMAIN,format=raw,file=blkdebug:{}:{}", rules.display(), main.display()),
            "-device".to_string(),
            "virtio-blk-pci,drive=DRRMAIN,serial=DRRMAIN".to_string(),
        ];
        if let Some(s) = spare {
            disks.extend(["-drive".to_string(), format!("file={},format=raw,if=none,id=DRRSPARE", s.display())]);
            disks.extend(["-device".to_string(), "virtio-blk-pci,drive=DRRSPARE,serial=DRRSPARE".to_string()]);
        }
        // No rootdelay=: initramfs-tools sleeps that long unconditionally before mounting
        // (its /init), which cost each boot a minute; a root that never comes up fails after
        // its default wait of 30 s anyway.
        let append = format!("root=UUID={ROOT_UUID} ro dmremap.boottest={name} dmremap.victim={sector} systemd.show_status=1");
        let opts = VmOptions::new(boot.clone(), module.to_path_buf(), Vec::new(), Some(String::new()), 600)
            .initrd(d.initrd.clone())
            .label(Some("root".into()))
            .append(append)
            .qemu_args(&disks);
        let result = vm::run(paths, &opts)?;
        phases.push(Phase { name, result });
    }
    Ok(phases)
}

/// The shutdown of a root boot, from its console after the exit marker: systemd-shutdown
/// moved into the shutdown ramfs, which removed every DM device (the LV first, then root0)
/// with nothing left. `None` if clean, else why not. A `Could not detach DM` line before the
/// ramfs is systemd-shutdown at info level: with a ramfs to hand over to, it leaves the
/// devices under the root to it (docs/boot.md).
pub fn shutdown_problem(console: &str, lvm: bool) -> Option<String> {
    let Some(at) = console.find(crate::protocol::EXIT) else { return Some("no exit marker on the console".into()) };
    let tail = &console[at..];
    let Some(ramfs) = tail.find("Entering exitrd") else { return Some("systemd-shutdown did not move into the shutdown ramfs".into()) };
    let after = &tail[ramfs..];
    for bad in ["Failed to", "Could not", "could not", "cannot unmount", "Unable to", "dmremap: "] {
        if let Some(line) = after.lines().find(|l| l.contains(bad)) {
            return Some(format!("the shutdown ramfs says: {line}"));
        }
    }
    for bad in ["Failed to deactivate", "Failed with result", "dmremap: "] {
        if let Some(line) = tail[..ramfs].lines().find(|l| l.contains(bad)) {
            return Some(format!("the shutdown says: {line}"));
        }
    }
    let root0 = after.find("dmremap-exitrd: removed root0");
    let lv = after.find("dmremap-exitrd: removed vgroot-root");
    let all = after.find("dmremap-exitrd: all DM devices removed");
    match (lvm, lv, root0, all) {
        (_, _, None, _) => Some("the shutdown ramfs did not remove root0".into()),
        (true, None, _, _) => Some("the shutdown ramfs did not remove the LV vgroot-root".into()),
        (true, Some(a), Some(b), _) if a > b => Some("root0 was removed before the LV on it".into()),
        (_, _, _, None) => Some("the shutdown ramfs did not report every DM device removed".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::shutdown_problem;

    #[test]
    fn judges_the_root_shutdown() {
        let ok = "--- PASS x\n@@DMREMAP-EXIT 0@@\nsystemd-shutdown[1]: Could not detach DM /dev/dm-0: Device or resource busy\n\
                  systemd-shutdown[1]: Entering exitrd...\ndmremap-exitrd: unmounting the old root, then removing the dm devices\n\
                  dmremap-exitrd: removed vgroot-root\ndmremap-exitrd: removed root0\ndmremap-exitrd: all DM devices removed\n";
        assert_eq!(shutdown_problem(ok, true), None);
        assert_eq!(shutdown_problem(&ok.replace("dmremap-exitrd: removed vgroot-root\n", ""), false), None);
        assert_eq!(shutdown_problem(&ok.replace("dmremap-exitrd: removed vgroot-root\n", ""), true).as_deref(), Some("the shutdown ramfs did not remove the LV vgroot-root"));
        assert_eq!(shutdown_problem(&ok.replace("Entering exitrd", "x"), true).as_deref(), Some("systemd-shutdown did not move into the shutdown ramfs"));
        let left = ok.replace("dmremap-exitrd: all DM devices removed", "dmremap-exitrd: could not remove root0");
        assert_eq!(shutdown_problem(&left, true).as_deref(), Some("the shutdown ramfs says: dmremap-exitrd: could not remove root0"));
        let swapped = ok.replace("removed vgroot-root\ndmremap-exitrd: removed root0", "removed root0\ndmremap-exitrd: removed vgroot-root");
        assert_eq!(shutdown_problem(&swapped, true).as_deref(), Some("root0 was removed before the LV on it"));
    }
}
