//! The boot test: a Debian trixie system with systemd as PID 1, udev and lvm2 (Debian's
//! default configuration), booted on Debian's stock kernel with two extra virtio disks, main
//! and spare, an /etc/dmremaptab line and an fstab line for ext4 on an LVM LV on the remap
//! device (docs/boot.md, docs/testing.md).
//!
//! The root is a debootstrap made by [`image_root`], cached under the cache directory by a
//! hash of its inputs, and booted as the initramfs itself (systemd runs from it as the real
//! root: there is no /etc/initrd-release), so no disk driver is needed before systemd. The
//! package's files (dmremap, the udev rules, the unit and the generator) are laid over it as
//! the package installs them. Three boots: `setup` prepares the disks; `check1` and `check2`
//! check the outcomes (tests/boot/boottest), `check1` also relocates a block that `check2`
//! must find. Each boot ends with a reboot, whose console shows the shutdown.

use crate::cpio::Cpio;
use crate::env::{in_root, step, Paths};
use crate::kernel::Boot;
use crate::vm::{self, VmOptions};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guest's packages besides debootstrap's minbase.
pub const IMAGE_PACKAGES: &[&str] = &["systemd", "systemd-sysv", "udev", "lvm2", "e2fsprogs", "kmod", "util-linux"];

/// Changes whenever [`image_root`]'s recipe changes, so the cache entry is remade.
const RECIPE: &str = "1";

/// Debian modules the guest needs (the rest it does not load): the disks, device-mapper,
/// ext4.
const MODULES: &[&str] = &["virtio_blk", "dm_mod", "ext4"];

/// The filesystem's UUID (mkfs.ext4 -U in the setup boot; the fstab line names it).
pub const FS_UUID: &str = "5f2c1e0a-6b9d-4c3e-9a41-d0c0ffee0019";

const STAMP: &str = ".dm-remap-image";

/// The guest root, made once per recipe: `debootstrap --variant=minbase --include=...`.
pub fn image_root(paths: &Paths) -> Result<PathBuf> {
    let mut h = Sha256::new();
    h.update(format!("{}\0{RECIPE}\0", crate::setup::SUITE));
    for p in IMAGE_PACKAGES {
        h.update(p);
        h.update([0]);
    }
    let hash = format!("{:x}", h.finalize());
    let dir = paths.cache.join(format!("bootimage-{}", &hash[..16]));
    if dir.join(STAMP).exists() {
        return Ok(dir);
    }
    crate::setup::host_packages()?;
    let mirror = crate::setup::debian_mirror()?;
    let tmp = paths.cache.join(format!("bootimage-{}.partial", &hash[..16]));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).context("removing a half-made boot image")?;
    }
    step(format!("debootstrap {} with {} into {} (about 1.5 min)", crate::setup::SUITE, IMAGE_PACKAGES.join(","), tmp.display()));
    crate::env::run(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={}", IMAGE_PACKAGES.join(",")), crate::setup::SUITE])
            .arg(&tmp)
            .arg(&mirror),
    )
    .context("debootstrap of the boot image failed; see its output above")?;
    // What a booted test never reads: apt's package cache, documentation.
    for d in ["var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"] {
        let p = tmp.join(d);
        if p.exists() {
            std::fs::remove_dir_all(&p)?;
            std::fs::create_dir_all(&p)?;
        }
    }
    std::fs::write(tmp.join(STAMP), format!("{hash}\n"))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&tmp, &dir)?;
    Ok(dir)
}

/// Adds the tree under `root` (relative names) to `cpio`; skips what the booted system mounts
/// over (dev, proc, sys, run).
fn add_tree(cpio: &mut Cpio, root: &Path, rel: &str) -> Result<()> {
    let dir = if rel.is_empty() { root.to_path_buf() } else { root.join(rel) };
    let mut entries: Vec<_> = std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        if path == STAMP {
            continue;
        }
        let m = e.path().symlink_metadata()?;
        let perm = m.permissions().mode() & 0o7777;
        if m.file_type().is_symlink() {
            let t = std::fs::read_link(e.path())?;
            cpio.symlink(&path, &t.to_string_lossy());
        } else if m.is_dir() {
            cpio.dir_mode(&path, perm);
            if !["dev", "proc", "sys", "run"].contains(&path.as_str()) {
                add_tree(cpio, root, &path)?;
            }
        } else if m.is_file() {
            cpio.file(&path, perm, &std::fs::read(e.path())?);
        }
    }
    Ok(())
}

/// The guest's initramfs: the image root, the kernel's modules, and the package's files as
/// the package installs them, plus the test's own (tests/boot/).
fn guest_cpio(paths: &Paths, root: &Path, boot: &Boot, module: &Path, dmremap: &Path) -> Result<PathBuf> {
    let m = boot.modules.as_ref().context("the boot test needs a distribution kernel (debian-7.2) with its modules")?;
    let out = paths.target().join("boot");
    // The modules: Debian's that the guest needs and dm-remap.ko, indexed by depmod as the
    // packages' postinst would, so udev, mount and device-mapper load them on demand.
    let staging = out.join("modules");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    let mdir = staging.join(format!("usr/lib/modules/{}", m.release));
    // depmod -b looks in <base>/lib/modules, as on a merged-/usr system.
    std::fs::create_dir_all(&mdir)?;
    std::os::unix::fs::symlink("usr/lib", staging.join("lib"))?;
    for f in crate::debian::module_closure(paths, MODULES)? {
        let to = mdir.join(&f);
        std::fs::create_dir_all(to.parent().context("module path")?)?;
        std::fs::copy(m.dir.join(&f), &to).with_context(|| format!("copying {f}"))?;
    }
    for f in ["modules.order", "modules.builtin", "modules.builtin.modinfo", "modules.builtin.bin", "modules.builtin.alias.bin"] {
        // What the unpacked package has: modprobe then knows the built-in modules.
        if m.dir.join(f).exists() {
            std::fs::copy(m.dir.join(f), mdir.join(f)).with_context(|| format!("copying {f}"))?;
        }
    }
    std::fs::create_dir_all(mdir.join("updates"))?;
    std::fs::copy(module, mdir.join("updates/dm-remap.ko"))?;
    let staging_s = staging.display().to_string();
    in_root(paths, Path::new("/"), "depmod", &["-b", &staging_s, &m.release]).context("depmod of the guest modules failed")?;

    let mut cpio = Cpio::default();
    add_tree(&mut cpio, root, "")?;
    cpio.chardev("dev/console", 5, 1);
    // The unpacker makes no missing parents: the image has no usr/lib/modules of its own.
    cpio.dir_mode("usr/lib/modules", 0o755);
    add_tree(&mut cpio, &staging, "usr/lib/modules")?;
    let repo = &paths.repo;
    let host = |p: &str| repo.join(p);
    let files: Vec<(&str, PathBuf, u32)> = vec![
        // What the package installs.
        ("usr/sbin/dmremap", dmremap.to_path_buf(), 0o755),
        ("usr/lib/udev/rules.d/61-dm-remap.rules", host("udev/61-dm-remap.rules"), 0o644),
        ("usr/lib/systemd/system/dmremap@.service", host("systemd/dmremap@.service"), 0o644),
        ("usr/lib/systemd/system-generators/dmremap-generator", host("systemd/dmremap-generator"), 0o755),
        // The test's.
        ("usr/local/sbin/dmremap-boottest", host("tests/boot/boottest"), 0o755),
        ("etc/systemd/system/dmremap-boottest.service", host("tests/boot/dmremap-boottest.service"), 0o644),
        ("etc/systemd/system/dmremap@.service.d/console.conf", host("tests/boot/console.conf"), 0o644),
    ];
    // The unpacker makes no missing parents.
    cpio.dir_mode("etc/systemd/system/dmremap@.service.d", 0o755);
    for (guest, hostp, perm) in files {
        let data = std::fs::read(&hostp).with_context(|| format!("reading {}", hostp.display()))?;
        cpio.file(guest, perm, &data);
    }
    cpio.symlink("etc/systemd/system/multi-user.target.wants/dmremap-boottest.service", "/etc/systemd/system/dmremap-boottest.service");
    cpio.file("etc/dmremaptab", 0o644, b"# name main spare options\nr1 /dev/disk/by-id/virtio-DRMAIN /dev/disk/by-id/virtio-DRSPARE\n");
    cpio.file("etc/fstab", 0o644, format!("UUID={FS_UUID} /data ext4 defaults 0 2\n").as_bytes());
    cpio.dir_mode("data", 0o755);
    cpio.file("etc/hostname", 0o644, b"dmremap-boot\n");
    // No login prompts: a getty on the serial console would hang up the test's output.
    for unit in ["serial-getty@ttyS0.service", "getty@tty1.service"] {
        cpio.symlink(&format!("etc/systemd/system/{unit}"), "/dev/null");
    }
    let path = out.join("root.cpio");
    let f = std::fs::File::create(&path)?;
    cpio.write_to(std::io::BufWriter::new(f))?;
    Ok(path)
}

/// One boot's console, by phase.
pub struct Phase {
    pub name: &'static str,
    pub result: vm::VmResult,
}

/// Runs the three boots on `boot` (Debian's kernel) with `module` built for it; `dmremap` is
/// the host-built tool.
pub fn run(paths: &Paths, boot: &Boot, module: &Path, dmremap: &Path) -> Result<Vec<Phase>> {
    let root = image_root(paths)?;
    step("boot test: building the guest root");
    let initrd = guest_cpio(paths, &root, boot, module, dmremap)?;
    let out = paths.target().join("boot");
    let (main, spare) = (out.join("main.img"), out.join("spare.img"));
    for (p, mib) in [(&main, 96u64), (&spare, 32)] {
        let f = std::fs::File::create(p)?;
        f.set_len(mib << 20)?;
    }
    // virtio disks with serials, so they have /dev/disk/by-id/virtio-<serial> links and ids.
    let mut disks = Vec::new();
    for (id, img) in [("DRMAIN", &main), ("DRSPARE", &spare)] {
        disks.extend(["-drive".to_string(), format!("file={},format=raw,if=none,id={id}", img.display())]);
        disks.extend(["-device".to_string(), format!("virtio-blk-pci,drive={id},serial={id}")]);
    }
    let mut phases = Vec::new();
    for name in ["setup", "check1", "check2"] {
        step(format!("boot test: {name} boot (systemd)"));
        let mut append = format!("rdinit=/sbin/init dmremap.boottest={name}");
        if name == "setup" {
            // The disks are blank: no mount of the filesystem yet.
            append.push_str(" fstab=no");
        } else {
            // systemd's start and stop lines on the console: the shutdown is judged from it.
            append.push_str(" systemd.show_status=1");
        }
        let opts = VmOptions::new(boot.clone(), module.to_path_buf(), Vec::new(), Some(String::new()), 600)
            .initrd(initrd.clone())
            .label(Some("boot".into()))
            .append(append)
            .qemu_args(&disks);
        let result = vm::run(paths, &opts)?;
        let failed_setup = name == "setup" && result.status != 0;
        phases.push(Phase { name, result });
        if failed_setup {
            bail!("the boot test's setup boot failed; console in target/vm/console.log");
        }
    }
    Ok(phases)
}

/// The shutdown of a boot, from its console after the exit marker: the LV on the remap
/// device went first, then the device, and nothing failed to detach. `None` if clean, else
/// why not.
pub fn shutdown_problem(console: &str) -> Option<String> {
    let Some(at) = console.find(crate::protocol::EXIT) else { return Some("no exit marker on the console".into()) };
    let tail = &console[at..];
    let lv = tail.find("r1: deactivated /dev/mapper/vgr-data");
    let dev = tail.find("deactivated r1\n");
    for bad in ["Failed to detach", "Could not detach", "Failed to deactivate", "dmremap: ", "Failed with result"] {
        if let Some(line) = tail.lines().find(|l| l.contains(bad)) {
            return Some(format!("the shutdown says: {line}"));
        }
    }
    match (lv, dev) {
        (Some(a), Some(b)) if a < b => None,
        (None, _) => Some("the LV on r1 was not deactivated by dmremap@r1.service".into()),
        (_, None) => Some("r1 was not deactivated by dmremap@r1.service".into()),
        _ => Some("r1 was deactivated before the LV on it".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::shutdown_problem;

    #[test]
    fn judges_the_shutdown() {
        let ok = "--- PASS x\n@@DMREMAP-EXIT 0@@\n r1: deactivated /dev/mapper/vgr-data\ndeactivated r1\n";
        assert_eq!(shutdown_problem(ok), None);
        assert!(shutdown_problem("deactivated r1\n").is_some());
        let swapped = "@@DMREMAP-EXIT 0@@\ndeactivated r1\nr1: deactivated /dev/mapper/vgr-data\n";
        assert_eq!(shutdown_problem(swapped).as_deref(), Some("r1 was deactivated before the LV on it"));
        let bad = format!("{ok}[   10.1] systemd-shutdown[1]: Could not detach DM /dev/dm-0: Device or resource busy\n");
        assert!(shutdown_problem(&bad).is_some_and(|w| w.contains("Could not detach DM")));
    }
}
