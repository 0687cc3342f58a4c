//! The `debian-7.2` kernel: Debian's own, unmodified amd64 kernel from trixie-backports.
//!
//! Nothing of the kernel is rebuilt for the VM: it boots the `vmlinuz` of the
//! `linux-binary` package and loads the `.ko.xz` modules of `linux-modules` with kmod. The
//! packages come from the Debian mirror through apt inside the build root, with
//! trixie-backports in its sources, so the signed release files vouch for them.
//!
//! Debian's headers carry no Rust metadata, so an out-of-tree Rust module cannot be built
//! against them alone. The kernel's `rust/` is built from the same version's
//! `linux-source-7.2` with the headers' `.config` and the kernel's own C compiler
//! (`modules_prepare`), and the headers' `Module.symvers` is put beside it: the module's
//! vermagic and symbol references are then Debian's (checked against dm-flakey.ko). That tree
//! is cached by a hash of its inputs.

use crate::env::{chroot_cmd, in_root, in_root_output, run_logged, step, Paths};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The pinned kernel: its ABI name and the Debian version of all its packages. Moving the
/// pin is this one line; the source must be the same version (never another one).
pub const PIN: Pin = Pin { abi: "7.2.11+deb13", version: "7.2.11-1~bpo13+1" };

/// A Debian kernel version.
pub struct Pin {
    /// The ABI name in the package names, e.g. `7.2.11+deb13`.
    pub abi: &'static str,
    /// The Debian version of every package of that kernel, source included.
    pub version: &'static str,
}

/// The flavour of the Debian kernel (the `-amd64` of `uname -r`).
const FLAVOUR: &str = "amd64";
/// The backports suite that has the kernel.
const BACKPORTS: &str = "trixie-backports";
/// The kernel's C compiler, exactly as its `CONFIG_CC_VERSION_TEXT` names it.
pub const CC: &str = "x86_64-linux-gnu-gcc-14";
/// Packages the Rust metadata build needs in the build root besides setup's (pahole: without
/// it olddefconfig drops DEBUG_INFO_BTF and the configuration differs from Debian's).
const BUILD_PACKAGES: &[&str] = &["dwarves"];

const FETCHED_STAMP: &str = ".dm-remap-fetched";
const BUILT_STAMP: &str = ".dm-remap-built";

/// `uname -r` of the pinned kernel.
pub fn release() -> String {
    format!("{}-{FLAVOUR}", PIN.abi)
}

pub fn source_pkg() -> String {
    // linux-source-7.2 for 7.2.x.
    let mut parts = PIN.abi.split('.');
    let major = parts.next().unwrap_or("");
    let minor = parts.next().unwrap_or("");
    format!("linux-source-{major}.{minor}")
}

/// The packages of the pinned kernel (name, what it is for).
fn packages() -> Vec<String> {
    let abi = PIN.abi;
    let rel = release();
    vec![
        format!("linux-binary-{rel}"),
        format!("linux-modules-{rel}"),
        format!("linux-headers-{rel}"),
        format!("linux-headers-{abi}-common"),
        format!("linux-kbuild-{abi}"),
        source_pkg(),
    ]
}

/// Where the pinned kernel's packages are downloaded and unpacked.
fn pkg_dir(paths: &Paths) -> PathBuf {
    paths.cache.join(format!("debian/{}", PIN.version.replace('~', "_")))
}

/// The unpacked binary, modules, headers and kbuild packages (one tree, like `/`).
pub fn unpacked(paths: &Paths) -> PathBuf {
    pkg_dir(paths).join("root")
}

/// The headers package's build directory.
pub fn headers(paths: &Paths) -> PathBuf {
    unpacked(paths).join(format!("usr/src/linux-headers-{}", release()))
}

/// The distro's module tree (`/usr/lib/modules/<release>`).
pub fn modules_dir(paths: &Paths) -> PathBuf {
    unpacked(paths).join(format!("usr/lib/modules/{}", release()))
}

/// The distro's kernel image.
pub fn vmlinuz(paths: &Paths) -> PathBuf {
    modules_dir(paths).join("vmlinuz")
}

pub fn deb_path(paths: &Paths, pkg: &str) -> Result<PathBuf> {
    let dir = pkg_dir(paths).join("debs");
    let prefix = format!("{pkg}_");
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(e.path());
        }
    }
    bail!("{pkg} is not in {}", dir.display())
}

/// Downloads and unpacks the pinned kernel's packages (once).
pub fn fetch(paths: &Paths) -> Result<()> {
    let dir = pkg_dir(paths);
    let stamp = dir.join(FETCHED_STAMP);
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(PIN.version) {
        return Ok(());
    }
    let start = std::time::Instant::now();
    add_backports(paths)?;
    check_available(paths)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs)?;
    step(format!("downloading Debian's kernel {} ({}) from {BACKPORTS}", release(), PIN.version));
    let mut args: Vec<String> = vec!["download".into(), "-q".into()];
    args.extend(packages().iter().map(|p| format!("{p}={}", PIN.version)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    in_root(paths, &debs, "apt-get", &args).context("apt-get download of the kernel packages failed")?;
    let root = unpacked(paths);
    std::fs::create_dir_all(&root)?;
    for p in packages().iter().filter(|p| **p != source_pkg()) {
        let deb = deb_path(paths, p)?;
        in_root(paths, &dir, "dpkg-deb", &["-x", &deb.display().to_string(), &root.display().to_string()])?;
    }
    // The package ships no modules.dep: its postinst runs depmod. depmod -b wants
    // <base>/lib/modules (merged /usr).
    std::os::unix::fs::symlink("usr/lib", root.join("lib"))?;
    in_root(paths, Path::new("/"), "depmod", &["-b", &root.display().to_string(), &release()])?;
    for f in [vmlinuz(paths), modules_dir(paths).join("modules.dep"), headers(paths).join(".config"), headers(paths).join("Module.symvers")] {
        if !f.exists() {
            bail!("the kernel packages do not contain {}", f.display());
        }
    }
    std::fs::write(&stamp, PIN.version)?;
    step(format!("kernel packages downloaded and unpacked in {:.0} s", start.elapsed().as_secs_f64()));
    Ok(())
}

/// Adds trixie-backports to the build root's apt sources and refreshes the index if needed.
pub fn add_backports(paths: &Paths) -> Result<()> {
    let list = paths.root().join("etc/apt/sources.list.d/dm-remap-backports.list");
    let line = format!("deb {} {BACKPORTS} main\n", crate::setup::debian_mirror()?);
    if std::fs::read_to_string(&list).ok().as_deref() != Some(line.as_str()) {
        std::fs::write(&list, &line)?;
    }
    std::fs::copy("/etc/resolv.conf", paths.root().join("etc/resolv.conf")).ok();
    step(format!("apt-get update (with {BACKPORTS})"));
    in_root(paths, Path::new("/"), "apt-get", &["update", "-q"])
}

/// Fails, naming what the mirror has, unless every package of the pin is there.
fn check_available(paths: &Paths) -> Result<()> {
    let mut missing = Vec::new();
    for p in packages() {
        let out = in_root_output(paths, Path::new("/"), "apt-cache", &["madison", &p]).unwrap_or_default();
        let versions: Vec<&str> = out.lines().filter_map(|l| l.split('|').nth(1)).map(str::trim).collect();
        if !versions.contains(&PIN.version) {
            missing.push(p);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let there = in_root_output(paths, Path::new("/"), "apt-cache", &["pkgnames", "linux-binary-"]).unwrap_or_default();
    // The ABIs of the same flavour (linux-binary-<abi>-amd64), not cloud, rt or unsigned.
    let mut binaries: Vec<&str> = there
        .lines()
        .filter_map(|l| l.trim().strip_prefix("linux-binary-")?.strip_suffix(&format!("-{FLAVOUR}")))
        .filter(|abi| !abi.contains('-') && !abi.starts_with("unsigned"))
        .collect();
    binaries.sort();
    let src = in_root_output(paths, Path::new("/"), "apt-cache", &["madison", &source_pkg()]).unwrap_or_default();
    let sources: Vec<&str> = src.lines().filter_map(|l| l.split('|').nth(1)).map(str::trim).collect();
    bail!(
        "the pinned kernel {} ({}) is no longer on the mirror: {} missing.\n  {FLAVOUR} kernels there (linux-binary-<abi>-{FLAVOUR}): {}\n  {} versions there: {}\n  Move the pin (debian::PIN in xtask/src/debian.rs) to a version whose binary, modules, headers and source all exist.",
        release(),
        PIN.version,
        missing.join(", "),
        binaries.join(" "),
        source_pkg(),
        sources.join(" ")
    )
}

fn version_of(paths: &Paths, pkg: &str) -> Result<String> {
    in_root_output(paths, Path::new("/"), "dpkg-query", &["-W", "-f=${Version}", pkg])
}

/// The build directory holding the kernel's Rust metadata, by a hash of its inputs.
fn build_dir(paths: &Paths) -> Result<PathBuf> {
    let mut h = Sha256::new();
    h.update(PIN.version);
    h.update(std::fs::read(headers(paths).join(".config"))?);
    // The steps themselves (shared with the DKMS build step).
    h.update(std::fs::read(paths.repo.join("scripts/kernel-rust-prepare"))?);
    for pkg in ["rustc", "rust-src", "bindgen", "libclang-dev", "gcc-14", "dwarves"] {
        h.update(pkg);
        h.update(version_of(paths, pkg)?);
    }
    let hex = format!("{:x}", h.finalize());
    Ok(paths.cache.join(format!("kernel/debian-{}-{}", PIN.abi, &hex[..16])))
}

/// Returns the prepared tree if it is built, or an error telling how to build it.
pub fn built(paths: &Paths) -> Result<PathBuf> {
    let dir = build_dir(paths)?;
    if !dir.join(BUILT_STAMP).exists() {
        bail!("the debian-7.2 kernel's Rust metadata is not built: run `cargo xtask kernel --kernel debian-7.2`");
    }
    Ok(dir)
}

/// Fetches the packages and builds the kernel's `rust/` metadata unless an identical build
/// exists; returns the tree to build modules against (`make KDIR=...`).
pub fn prepare(paths: &Paths) -> Result<PathBuf> {
    fetch(paths)?;
    crate::setup::root_packages(paths, BUILD_PACKAGES)?;
    let out = build_dir(paths)?;
    if out.join(BUILT_STAMP).exists() {
        step(format!("debian-7.2 kernel's Rust metadata is up to date ({})", out.display()));
        return Ok(out);
    }
    let src = unpack_source(paths)?;
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let start = std::time::Instant::now();
    step(format!(
        "building the kernel's Rust metadata with scripts/kernel-rust-prepare (olddefconfig, modules_prepare: about 1-5 min; log in {}/build.log)",
        out.display()
    ));
    // The same script dm-remap-dkms runs on an operator's machine (packaging/dkms/dkms-build).
    let script = paths.repo.join("scripts/kernel-rust-prepare").display().to_string();
    let mut c = chroot_cmd(paths, &src, "sh")?;
    c.arg(script)
        .arg(&src)
        .arg(headers(paths).join(".config"))
        .arg(headers(paths).join("Module.symvers"))
        .arg(release())
        .arg(&out);
    run_logged(&mut c, &out.join("build.log"), "kernel-rust-prepare")?;
    std::fs::write(out.join(BUILT_STAMP), "")?;
    step(format!("Rust metadata built in {:.0} s", start.elapsed().as_secs_f64()));
    remove_stale(paths, &out);
    Ok(out)
}

/// Unpacks the pinned linux-source tarball into the cache, once.
fn unpack_source(paths: &Paths) -> Result<PathBuf> {
    let dir = paths.cache.join(format!("src/{}_{}", source_pkg(), PIN.version.replace('~', "_")));
    let stamp = dir.join(".dm-remap-unpacked");
    if stamp.exists() {
        return Ok(dir);
    }
    step(format!("unpacking {} {} into {}", source_pkg(), PIN.version, dir.display()));
    let start = std::time::Instant::now();
    let tmp = dir.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    let deb = deb_path(paths, &source_pkg())?.display().to_string();
    let tarball = format!("usr/src/{}.tar.xz", source_pkg());
    // The tarball straight out of the package, without installing it in the root.
    let script = format!(
        "dpkg-deb --fsys-tarfile '{deb}' | tar -xO './{tarball}' | tar -xJ --strip-components=1"
    );
    in_root(paths, &tmp, "sh", &["-c", &script])?;
    if !tmp.join("Makefile").exists() {
        bail!("{deb} did not unpack to a kernel tree");
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&tmp, &dir)?;
    std::fs::write(&stamp, "")?;
    step(format!("unpacked in {:.0} s", start.elapsed().as_secs_f64()));
    Ok(dir)
}

/// Removes other Rust metadata builds of Debian kernels (a few hundred MB each).
fn remove_stale(paths: &Paths, keep: &Path) {
    let Ok(dir) = std::fs::read_dir(paths.cache.join("kernel")) else { return };
    for e in dir.flatten() {
        let p = e.path();
        if p != keep && e.file_name().to_string_lossy().starts_with("debian-") {
            step(format!("removing stale build {}", p.display()));
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// SHA-256 of the vmlinuz to boot, checked against the one inside the `linux-binary`
/// package (whose own hash apt checked against the signed index); returns it.
pub fn check_vmlinuz(paths: &Paths) -> Result<String> {
    let booted = sha256_hex(&std::fs::read(vmlinuz(paths))?);
    let deb = deb_path(paths, &format!("linux-binary-{}", release()))?.display().to_string();
    let member = format!("./usr/lib/modules/{}/vmlinuz", release());
    let mut c = chroot_cmd(paths, Path::new("/"), "sh")?;
    c.args(["-c", &format!("dpkg-deb --fsys-tarfile '{deb}' | tar -xO '{member}'")]);
    let out = c.stderr(std::process::Stdio::inherit()).output().context("reading vmlinuz out of the package")?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!("cannot read {member} out of {deb}");
    }
    let packaged = sha256_hex(&out.stdout);
    if packaged != booted {
        bail!("{} (sha256 {booted}) is not the vmlinuz of {deb} (sha256 {packaged})", vmlinuz(paths).display());
    }
    step(format!("booting Debian's own vmlinuz {}: sha256 {booted}, equal to the file in {}", release(), Path::new(&deb).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
    Ok(booted)
}

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// Distro modules the VM tests use, by module name, in load order: modprobe loads them with
/// their dependencies, from the distro's modules.dep (made by depmod at unpacking, as the
/// package's postinst would). What Debian builds in (virtio_pci, io_uring, debugfs) is not
/// listed.
pub const GUEST_MODULES: &[&str] = &[
    "configfs", "virtio_blk", "loop", "null_blk", "dm_mod", "dm_flakey", "dm_delay",
    "dm_log_writes", "dm_thin_pool",
    // The benchmark's filesystem runs (`vmtest bench-fs`).
    "ext4",
    // Real drivers' errors (tests/src/t_realfaults.rs): sd for scsi_debug's disks, nvme for
    // QEMU's emulated NVMe disk.
    "sd_mod", "nvme",
];

/// Modules in the initramfs that the tests load themselves, with their own parameters.
pub const GUEST_MODULES_ON_DEMAND: &[&str] = &["scsi_debug"];

/// The module files (relative to the modules directory) that `names` need, with their
/// dependencies, from modules.dep.
pub fn module_closure(paths: &Paths, names: &[&str]) -> Result<Vec<String>> {
    let dir = modules_dir(paths);
    let dep = std::fs::read_to_string(dir.join("modules.dep"))?;
    let norm = |s: &str| s.replace('-', "_");
    let modname = |path: &str| -> String {
        let base = path.rsplit('/').next().unwrap_or(path);
        norm(base.split('.').next().unwrap_or(base))
    };
    let mut deps: std::collections::HashMap<String, (String, Vec<String>)> = Default::default();
    for line in dep.lines() {
        if let Some((file, rest)) = line.split_once(':') {
            deps.insert(modname(file), (file.to_string(), rest.split_whitespace().map(str::to_string).collect()));
        }
    }
    let mut files: Vec<String> = Vec::new();
    for n in names {
        let n = norm(n);
        match deps.get(&n) {
            Some((file, more)) => {
                for f in std::iter::once(file).chain(more.iter()) {
                    if !files.contains(f) {
                        files.push(f.clone());
                    }
                }
            }
            None => bail!("{} has no module {n} (is it built in?)", release()),
        }
    }
    Ok(files)
}

/// The dm-dust module, which Debian does not build: built out of tree from the same
/// linux-source against the same prepared tree; returns the `.ko`.
pub fn build_dm_dust(paths: &Paths, kdir: &Path) -> Result<PathBuf> {
    let dir = kdir.join("dm-remap-extra/dm-dust");
    let ko = dir.join("dm-dust.ko");
    if ko.exists() {
        return Ok(ko);
    }
    std::fs::create_dir_all(&dir)?;
    let src = unpack_source(paths)?;
    std::fs::copy(src.join("drivers/md/dm-dust.c"), dir.join("dm-dust.c"))?;
    std::fs::write(dir.join("Kbuild"), "obj-m := dm-dust.o\n")?;
    step("building dm-dust.ko (Debian does not ship it) from the same source");
    let m = format!("M={}", dir.display());
    let cc = format!("CC={CC}");
    in_root(paths, kdir, "make", &["-s", &m, &cc, "modules"])?;
    if !ko.exists() {
        bail!("make succeeded but {} is missing", ko.display());
    }
    Ok(ko)
}

/// The vermagic of a module file, by the build root's modinfo.
pub fn vermagic(paths: &Paths, ko: &Path) -> Result<String> {
    Ok(in_root_output(paths, Path::new("/"), "modinfo", &["-F", "vermagic", &ko.display().to_string()])?.trim().to_string())
}

/// Checks that `ko` carries the same vermagic as Debian's own dm-flakey.ko.
pub fn check_vermagic(paths: &Paths, ko: &Path) -> Result<()> {
    let files = module_closure(paths, &["dm_flakey"])?;
    let flakey = modules_dir(paths).join(files.first().context("no dm-flakey module")?);
    let ours = vermagic(paths, ko)?;
    let theirs = vermagic(paths, &flakey)?;
    println!("vermagic of {}: {ours}", ko.display());
    println!("vermagic of Debian's {}: {theirs}", flakey.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    if ours != theirs {
        bail!("dm-remap.ko's vermagic ({ours}) differs from Debian's ({theirs})");
    }
    Ok(())
}
