//! The boot test: a Debian trixie system with systemd as PID 1, udev and lvm2 (Debian's
//! default configuration), booted on Debian's stock kernel with two extra virtio disks, main
//! and spare, an /etc/dmremaptab line and an fstab line for ext4 on an LVM LV on the remap
//! device (docs/boot.md, docs/testing.md).
//!
//! The root is a debootstrap made by [`image_root`], cached under the cache directory by a
//! hash of its inputs, and booted as the initramfs itself (systemd runs from it as the real
//! root: there is no /etc/initrd-release), so no disk driver is needed before systemd. The
//! built packages (`dmremap` and the module package) are installed into a copy of it with
//! dpkg ([`installed_root`], cached by the packages' contents). Three boots: `setup`
//! prepares the disks; `check1` and `check2` check the outcomes (tests/boot/boottest),
//! `check1` also relocates a block that `check2` must find and raises an alert for the
//! watch unit. Each boot ends with a reboot, whose console shows the shutdown.

use crate::cpio::Cpio;
use crate::env::{step, Paths};
use crate::kernel::Boot;
use crate::vm::{self, VmOptions};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guest's packages besides debootstrap's minbase.
/// initramfs-tools (with busybox and zstd, which Debian installs as its recommends) for the
/// root boot test's `update-initramfs`.
pub const IMAGE_PACKAGES: &[&str] =
    &["systemd", "systemd-sysv", "udev", "lvm2", "e2fsprogs", "kmod", "util-linux", "initramfs-tools", "busybox", "zstd"];

/// Changes whenever [`image_root`]'s recipe changes, so the cache entry is remade.
const RECIPE: &str = "1";

/// Debian modules the guest needs (the rest it does not load): the disks, device-mapper,
/// ext4.
pub const MODULES: &[&str] = &["virtio_blk", "dm_mod", "ext4"];

/// The filesystem's UUID (mkfs.ext4 -U in the setup boot; the fstab line names it).
pub const FS_UUID: &str = "5f2c1e0a-6b9d-4c3e-9a41-d0c0ffee0019";

const STAMP: &str = ".dm-remap-image";

/// Changes whenever [`installed_root`]'s recipe changes.
const INSTALL_RECIPE: &str = "1";

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

/// The image root with the packages installed, made once per (image, packages, Debian
/// modules): a copy of `base` holding the Debian modules the guest needs (what
/// linux-modules-<release> would install), then `dpkg -i` of `debs` in a chroot, whose
/// postinst scripts run as on a real system (the module package's runs depmod).
fn installed_root(paths: &Paths, base: &Path, boot: &Boot, debs: &[PathBuf]) -> Result<PathBuf> {
    let m = boot.modules.as_ref().context("the boot test needs a distribution kernel (debian-7.2) with its modules")?;
    let closure = crate::debian::module_closure(paths, MODULES)?;
    let extra: Vec<&str> = ["modules.order", "modules.builtin", "modules.builtin.modinfo", "modules.builtin.bin", "modules.builtin.alias.bin"]
        .into_iter()
        .filter(|f| m.dir.join(f).exists())
        .collect();
    let mut h = Sha256::new();
    h.update(format!("{INSTALL_RECIPE}\0{}\0{}\0", base.display(), m.release));
    for d in debs {
        h.update(std::fs::read(d).with_context(|| format!("reading {}", d.display()))?);
    }
    for f in closure.iter().map(String::as_str).chain(extra.iter().copied()) {
        h.update(f);
        h.update(std::fs::read(m.dir.join(f)).with_context(|| format!("reading {f}"))?);
    }
    let tmp = match cached_copy(paths, base, "bootimage-installed-", STAMP, h, "boot test: installed image")? {
        Cached::Reused(dir) => return Ok(dir),
        Cached::Make(p) => p,
    };
    // Debian's modules the guest needs, where linux-modules-<release> puts them; the kernel
    // itself is booted from outside the image (QEMU's -kernel), so its 159 MB modules
    // package is not installed.
    copy_modules(m, closure.iter().map(String::as_str).chain(extra.iter().copied()), &tmp)?;
    dpkg_install(&tmp, debs, &m.release).context("dpkg -i of the packages in the boot image failed; see its output above")?;
    tmp.publish(paths)
}

/// What [`cached_copy`] found.
pub enum Cached {
    /// The entry exists (its stamp rewritten): use it.
    Reused(PathBuf),
    /// It must be made: fill the copy, then [`Partial::publish`] it.
    Make(Partial),
}

/// A cache entry being made: a copy of the base image under a per-process name (other
/// worktrees share the cache and may make the same entry at once).
pub struct Partial {
    tmp: PathBuf,
    dir: PathBuf,
    hash: String,
    prefix: &'static str,
    stamp: &'static str,
}

impl std::ops::Deref for Partial {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.tmp
    }
}

/// The cache entry `<prefix><hash>` derived from the image `base` and the inputs hashed in
/// `h`, whose `stamp` file marks it complete: reused if there, else a fresh copy of `base`
/// (without the image's own stamp) to fill. `what` names it in the progress lines.
pub fn cached_copy(paths: &Paths, base: &Path, prefix: &'static str, stamp: &'static str, h: Sha256, what: &str) -> Result<Cached> {
    let hash = format!("{:x}", h.finalize());
    let dir = paths.cache.join(format!("{prefix}{}", &hash[..16]));
    if dir.join(stamp).exists() {
        // Rewritten so its time says when it was last used (prune_unused).
        std::fs::write(dir.join(stamp), format!("{hash}\n"))?;
        step(format!("{what} {} reused", dir.display()));
        return Ok(Cached::Reused(dir));
    }
    let tmp = paths.cache.join(format!("{prefix}{}.partial.{}", &hash[..16], std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    step(format!("{what}: making it in {}", tmp.display()));
    crate::env::run(Command::new("cp").arg("-a").arg(base).arg(&tmp))?;
    let _ = std::fs::remove_file(tmp.join(STAMP));
    Ok(Cached::Make(Partial { tmp, dir, hash, prefix, stamp }))
}

impl Partial {
    /// Marks the entry complete and moves it into place (unless another process made it
    /// meanwhile: the same contents), then prunes entries of its kind unused for a day.
    pub fn publish(self, paths: &Paths) -> Result<PathBuf> {
        std::fs::write(self.tmp.join(self.stamp), format!("{}\n", self.hash))?;
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.tmp)?;
        } else {
            std::fs::rename(&self.tmp, &self.dir)?;
        }
        prune_unused(paths, &self.dir, self.prefix, self.stamp);
        Ok(self.dir)
    }
}

/// Copies `files` of Debian's modules (paths relative to its modules directory) into `root`,
/// where linux-modules-<release> puts them.
pub fn copy_modules<'a>(m: &crate::kernel::GuestModules, files: impl Iterator<Item = &'a str>, root: &Path) -> Result<()> {
    let mdir = root.join(format!("usr/lib/modules/{}", m.release));
    for f in files {
        let to = mdir.join(f);
        std::fs::create_dir_all(to.parent().context("module path")?)?;
        std::fs::copy(m.dir.join(f), &to).with_context(|| format!("copying {f}"))?;
    }
    Ok(())
}

/// Runs a command in the image `root` (a chroot, with a clean environment).
pub fn in_image(root: &Path) -> Command {
    let mut c = Command::new("chroot");
    c.arg(root).args(["/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"]);
    c
}

/// `dpkg -i` of `debs` in the image `root`, whose postinst scripts and triggers run as on a
/// real system. The module package depends on exactly linux-image-<release>, which is not
/// installed (the kernel is booted from outside the image): that one dependency is
/// ignored, every other one is checked.
pub fn dpkg_install(root: &Path, debs: &[PathBuf], release: &str) -> Result<()> {
    let mut inside = Vec::new();
    for d in debs {
        let name = d.file_name().context("deb name")?.to_string_lossy().into_owned();
        std::fs::copy(d, root.join("tmp").join(&name))?;
        inside.push(format!("/tmp/{name}"));
    }
    crate::env::run(in_image(root).args(["dpkg", "-i", &format!("--ignore-depends=linux-image-{release}")]).args(&inside))?;
    for p in &inside {
        std::fs::remove_file(root.join(p.trim_start_matches('/')))?;
    }
    Ok(())
}

/// Removes the cache entries named `<prefix>...` (and half-made ones) other than `keep`
/// not used for a day: each package change makes a new one of about 140 MB. A day, not "all
/// but this one", because other worktrees share the cache and may be booting theirs. An
/// entry's last use is the time of its `stamp` file (rewritten at each use); a half-made one
/// has only the directory's.
fn prune_unused(paths: &Paths, keep: &Path, prefix: &str, stamp: &str) {
    let Ok(entries) = std::fs::read_dir(&paths.cache) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p == keep || !e.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let stamp = if p.join(stamp).exists() { p.join(stamp) } else { p.clone() };
        let age = std::fs::metadata(&stamp).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
        if age.is_some_and(|a| a.as_secs() > 86_400) {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// The guest's initramfs: the installed image root, plus the test's own files (tests/boot/)
/// and configuration (dmremaptab, fstab).
fn guest_cpio(paths: &Paths, root: &Path) -> Result<PathBuf> {
    let out = paths.target().join("boot");
    let mut cpio = Cpio::default();
    add_tree(&mut cpio, root, "")?;
    cpio.chardev("dev/console", 5, 1);
    let repo = &paths.repo;
    let host = |p: &str| repo.join(p);
    let files: Vec<(&str, PathBuf, u32)> = vec![
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
    std::fs::create_dir_all(&out)?;
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

/// Runs the three boots on `boot` (Debian's kernel) with `module` built for it, installed
/// with the `dmremap` package by dpkg.
pub fn run(paths: &Paths, boot: &Boot, module: &Path) -> Result<Vec<Phase>> {
    let base = image_root(paths)?;
    let out = paths.target().join("boot");
    step("boot test: building the packages");
    let (tool, modpkg) = crate::package::boot_debs(paths, module, &out.join("debs"))?;
    let root = installed_root(paths, &base, boot, &[tool.clone(), modpkg.clone()])?;
    let rootdisks = crate::rootboot::prepare(paths, &base, boot, &[tool, modpkg])?;
    step("boot test: building the guest root");
    let initrd = guest_cpio(paths, &root)?;
    let (main, spare) = (out.join("main.img"), out.join("spare.img"));
    // A small spare: its pool (about 2,000 blocks) is 2% used after some 40 remaps, which
    // drops the health score to 99 for the watch unit's alert (tests/boot/boottest).
    for (p, mib) in [(&main, 96u64), (&spare, 8)] {
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
        let mut these = disks.clone();
        if name == "setup" {
            // The root boot test's disks are prepared in the same boot.
            these.extend(rootdisks.setup_args());
        }
        let opts = VmOptions::new(boot.clone(), module.to_path_buf(), Vec::new(), Some(String::new()), 600)
            .initrd(initrd.clone())
            .label(Some("boot".into()))
            .append(append)
            .qemu_args(&these);
        let result = vm::run(paths, &opts)?;
        let failed_setup = name == "setup" && result.status != 0;
        phases.push(Phase { name, result });
        if failed_setup {
            bail!("the boot test's setup boot failed; console in target/vm/console.log");
        }
    }
    phases.extend(crate::rootboot::run(paths, boot, module, &rootdisks)?);
    Ok(phases)
}

/// What systemd-shutdown, the last stage, logs once no DM device is left (the guest shows
/// kernel-log info lines on the console from its exit marker on).
const ALL_DM_DETACHED: &str = "systemd-shutdown[1]: All DM devices detached.";

/// The shutdown of a boot, from its console after the exit marker: the LV on the remap
/// device went first, then the device (dmremap@r1.service), nothing failed to detach, and
/// systemd-shutdown found no DM device left. `None` if clean, else why not.
pub fn shutdown_problem(console: &str) -> Option<String> {
    let Some(at) = console.find(crate::protocol::EXIT) else { return Some("no exit marker on the console".into()) };
    let tail = &console[at..];
    let lv = tail.find("r1: deactivated /dev/mapper/vgr-data");
    let dev = tail.find("deactivated r1\n");
    let detached = tail.find(ALL_DM_DETACHED);
    for bad in [
        "Failed to detach",
        "Could not detach",
        "Not all DM devices detached",
        "Failed to deactivate",
        "Device or resource busy",
        "dmremap: ",
        "Failed with result",
    ] {
        if let Some(line) = tail.lines().find(|l| l.contains(bad)) {
            return Some(format!("the shutdown says: {line}"));
        }
    }
    match (lv, dev, detached) {
        (Some(a), Some(b), Some(c)) if a < b && b < c => None,
        (None, _, _) => Some("the LV on r1 was not deactivated by dmremap@r1.service".into()),
        (_, None, _) => Some("r1 was not deactivated by dmremap@r1.service".into()),
        (Some(a), Some(b), _) if a > b => Some("r1 was deactivated before the LV on it".into()),
        _ => Some(format!("no \"{ALL_DM_DETACHED}\" after r1 was deactivated")),
    }
}

#[cfg(test)]
mod tests {
    use super::shutdown_problem;

    #[test]
    fn judges_the_shutdown() {
        // As in a check boot's console (docs/boot.md).
        let ok = "--- PASS x\n@@DMREMAP-EXIT 0@@\n r1: deactivated /dev/mapper/vgr-data\ndeactivated r1\n\
                  [   43.715544] systemd-shutdown[1]: Detaching DM devices.\n\
                  [   43.719478] systemd-shutdown[1]: All DM devices detached.\n";
        assert_eq!(shutdown_problem(ok), None);
        assert_eq!(shutdown_problem("deactivated r1\n").as_deref(), Some("no exit marker on the console"));
        let swapped = "@@DMREMAP-EXIT 0@@\ndeactivated r1\nr1: deactivated /dev/mapper/vgr-data\nsystemd-shutdown[1]: All DM devices detached.\n";
        assert_eq!(shutdown_problem(swapped).as_deref(), Some("r1 was deactivated before the LV on it"));
        let early = "@@DMREMAP-EXIT 0@@\nsystemd-shutdown[1]: All DM devices detached.\nr1: deactivated /dev/mapper/vgr-data\ndeactivated r1\n";
        assert_eq!(
            shutdown_problem(early).as_deref(),
            Some("no \"systemd-shutdown[1]: All DM devices detached.\" after r1 was deactivated")
        );
        let none = "@@DMREMAP-EXIT 0@@\nr1: deactivated /dev/mapper/vgr-data\ndeactivated r1\n";
        assert_eq!(
            shutdown_problem(none).as_deref(),
            Some("no \"systemd-shutdown[1]: All DM devices detached.\" after r1 was deactivated")
        );
        let bad = ok.replace(
            "[   43.719478] systemd-shutdown[1]: All DM devices detached.",
            "[   43.7] systemd-shutdown[1]: Could not detach DM /dev/dm-0: Device or resource busy",
        );
        assert_eq!(
            shutdown_problem(&bad).as_deref(),
            Some("the shutdown says: [   43.7] systemd-shutdown[1]: Could not detach DM /dev/dm-0: Device or resource busy")
        );
    }
}
