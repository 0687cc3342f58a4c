//! `cargo xtask kernel`: the Rust-enabled test kernel, built from Debian's linux-source-6.12.
//!
//! The build directory is named by a hash of everything that decides its contents (kernel
//! source version, toolchain versions, config fragments), so an unchanged input never
//! rebuilds and a changed one never reuses a stale tree.

use crate::env::{chroot_cmd, in_root, run_logged, step, Paths};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A kernel the module is built for and the VM boots (`--kernel NAME`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flavor {
    /// `6.12`: the project's test kernel, built from Debian's linux-source-6.12.
    Test,
    /// `6.12-debug`: the sanitizer kernel (KASAN, lockdep, kmemleak, ...).
    Debug,
    /// `debian-7.2`: Debian's own, unmodified 7.2 kernel from trixie-backports
    /// (xtask/src/debian.rs).
    Debian72,
    /// `6.12-slub`: the test kernel with the full SLUB allocator instead of SLUB_TINY (the
    /// profile experiment of docs/BENCHMARKS.md).
    Slub,
}

impl Flavor {
    /// Every kernel, by the name `--kernel` takes.
    pub const ALL: [Flavor; 4] = [Flavor::Test, Flavor::Debug, Flavor::Debian72, Flavor::Slub];

    /// The name `--kernel` takes.
    pub fn kernel_name(self) -> &'static str {
        match self {
            Flavor::Test => "6.12",
            Flavor::Debug => "6.12-debug",
            Flavor::Debian72 => "debian-7.2",
            Flavor::Slub => "6.12-slub",
        }
    }

    /// The kernel called `name`.
    pub fn parse(name: &str) -> Result<Self> {
        match Self::ALL.into_iter().find(|f| f.kernel_name() == name) {
            Some(f) => Ok(f),
            None => bail!(
                "unknown kernel {name}; the kernels are: {}",
                Self::ALL.map(Flavor::kernel_name).join(", ")
            ),
        }
    }

    /// The build directory prefix of the kernels xtask builds itself.
    fn name(self) -> &'static str {
        match self {
            Flavor::Test => "test",
            Flavor::Debug => "debug",
            Flavor::Debian72 => "debian",
            Flavor::Slub => "slub",
        }
    }

    fn fragments(self) -> &'static [&'static str] {
        match self {
            Flavor::Test => &["scripts/kernel.config"],
            Flavor::Debug => &["scripts/kernel.config", "scripts/kernel-debug.config"],
            Flavor::Debian72 => &[],
            Flavor::Slub => &["scripts/kernel.config", "scripts/kernel-slub.config"],
        }
    }
}

/// What the VM boots: a kernel image and, for a distro kernel, the distro's modules.
#[derive(Clone)]
pub struct Boot {
    /// The kernel image (bzImage / vmlinuz).
    pub image: PathBuf,
    /// The distro's modules to put in the initramfs and load, if the kernel is a distro's.
    pub modules: Option<GuestModules>,
    /// Modules of a kernel built here that the tests load themselves, with their own
    /// parameters (scsi_debug): /ondemand/<name>.ko in the guest.
    pub ondemand: Vec<PathBuf>,
}

/// A distro kernel's modules for the guest.
#[derive(Clone)]
pub struct GuestModules {
    /// The distro's `/usr/lib/modules/<release>` (unpacked on the host).
    pub dir: PathBuf,
    /// `uname -r`.
    pub release: String,
    /// Module files (relative to `dir`) the initramfs holds: those loaded and their
    /// dependencies.
    pub files: Vec<String>,
    /// Module names /init loads with modprobe, in order.
    pub load: Vec<String>,
    /// Modules built here for that kernel (dm-dust), loaded with insmod after dm-remap.
    pub extra: Vec<PathBuf>,
}

/// What the VM boots for `flavor`, whose module tree is `kdir` (from [`kernel`]).
pub fn boot(paths: &Paths, flavor: Flavor, kdir: &Path) -> Result<Boot> {
    if flavor != Flavor::Debian72 {
        // scsi_debug and the CRC modules it needs (tinyconfig leaves them modules).
        let ondemand = ["crypto/crct10dif_common.ko", "crypto/crct10dif_generic.ko", "lib/crc-t10dif.ko", "drivers/scsi/scsi_debug.ko"]
            .iter().map(|m| kdir.join(m)).filter(|p| p.exists()).collect();
        return Ok(Boot { image: kdir.join("arch/x86/boot/bzImage"), modules: None, ondemand });
    }
    crate::debian::check_vmlinuz(paths)?;
    let names = crate::debian::GUEST_MODULES;
    let extra = match crate::debian::build_dm_dust(paths, kdir) {
        Ok(ko) => vec![ko],
        Err(e) => {
            step(format!("dm-dust could not be built ({e:#}); the tests that use it will fail"));
            Vec::new()
        }
    };
    Ok(Boot {
        image: crate::debian::vmlinuz(paths),
        modules: Some(GuestModules {
            dir: crate::debian::modules_dir(paths),
            release: crate::debian::release(),
            // The modules the tests load themselves come along, unloaded.
            files: crate::debian::module_closure(paths, &[names, crate::debian::GUEST_MODULES_ON_DEMAND].concat())?,
            load: names.iter().map(|s| s.to_string()).collect(),
            extra,
        }),
        ondemand: Vec::new(),
    })
}

const SOURCE_PKG: &str = "linux-source-6.12";
const BUILT_STAMP: &str = ".dm-remap-built";

/// The versions setup recorded (package -> version).
fn recorded_version(paths: &Paths, pkg: &str) -> Result<String> {
    let text = std::fs::read_to_string(paths.cache.join("versions.txt"))
        .context("no versions.txt in the cache: run `cargo xtask setup` first")?;
    text.lines()
        .find_map(|l| l.strip_prefix(pkg).and_then(|r| r.strip_prefix(' ')))
        .map(str::to_string)
        .with_context(|| format!("versions.txt does not list {pkg}: run `cargo xtask setup`"))
}

/// The unpacked kernel source tree.
pub fn source_dir(paths: &Paths) -> Result<PathBuf> {
    let v = recorded_version(paths, SOURCE_PKG)?;
    Ok(paths.cache.join(format!("src/{SOURCE_PKG}_{v}")))
}

/// The build directory for a flavour, by content hash of its inputs.
pub fn build_dir(paths: &Paths, flavor: Flavor) -> Result<PathBuf> {
    let mut h = Sha256::new();
    for pkg in [SOURCE_PKG, "rustc", "rust-src", "bindgen", "clang", "lld"] {
        h.update(pkg);
        h.update(recorded_version(paths, pkg)?);
    }
    for f in flavor.fragments() {
        let text = std::fs::read_to_string(paths.repo.join(f)).with_context(|| format!("reading {f}"))?;
        h.update(f);
        h.update(settings(&text));
    }
    let hex = format!("{:x}", h.finalize());
    Ok(paths.cache.join(format!("kernel/{}-{}", flavor.name(), &hex[..16])))
}

/// A fragment's setting lines: `CONFIG_X=...` and `# CONFIG_X is not set`.
fn setting_lines(fragment: &str) -> impl Iterator<Item = &str> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_") || (l.starts_with("# CONFIG_") && l.ends_with(" is not set")))
}

/// A fragment's settings without its comments and blank lines, so that editing a comment
/// does not cost a kernel build.
fn settings(fragment: &str) -> String {
    setting_lines(fragment).flat_map(|l| [l, "\n"]).collect()
}

/// Returns the build directory of a built kernel, or an error telling how to build it.
pub fn built(paths: &Paths, flavor: Flavor) -> Result<PathBuf> {
    if flavor == Flavor::Debian72 {
        return crate::debian::built(paths);
    }
    let dir = build_dir(paths, flavor)?;
    if !dir.join(BUILT_STAMP).exists() {
        bail!("the {} kernel is not built: run `cargo xtask kernel --kernel {}`", flavor.kernel_name(), flavor.kernel_name());
    }
    Ok(dir)
}

/// Builds the kernel unless an identical build exists.
pub fn kernel(paths: &Paths, flavor: Flavor) -> Result<PathBuf> {
    if flavor == Flavor::Debian72 {
        return crate::debian::prepare(paths);
    }
    let src = unpack_source(paths)?;
    let out = build_dir(paths, flavor)?;
    if out.join(BUILT_STAMP).exists() {
        step(format!("{} kernel is up to date ({})", flavor.name(), out.display()));
        return Ok(out);
    }
    std::fs::create_dir_all(&out)?;
    let o = format!("O={}", out.display());
    let jobs = format!("-j{}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    step(format!("configuring the {} kernel in {}", flavor.name(), out.display()));
    in_root(paths, &src, "make", &[&o, "LLVM=1", "-s", "tinyconfig"])?;
    let mut merge: Vec<String> = vec![
        "-m".into(),
        "-O".into(),
        out.display().to_string(),
        out.join(".config").display().to_string(),
        src.join("kernel/configs/kvm_guest.config").display().to_string(),
    ];
    merge.extend(flavor.fragments().iter().map(|f| paths.repo.join(f).display().to_string()));
    let merge: Vec<&str> = merge.iter().map(String::as_str).collect();
    let mut c = chroot_cmd(paths, &src, "scripts/kconfig/merge_config.sh")?;
    run_logged(c.args(&merge), &out.join("merge_config.log"), "merge_config")?;
    in_root(paths, &src, "make", &[&o, "LLVM=1", "-s", "olddefconfig"])?;
    check_config(paths, flavor, &out)?;
    step(format!("building the {} kernel (about 7 min on 2 cores; log in {}/build.log)", flavor.name(), out.display()));
    let log = out.join("build.log");
    let mut c = chroot_cmd(paths, &src, "make")?;
    c.args([o.as_str(), "LLVM=1", jobs.as_str()]);
    if let Err(e) = run_logged(&mut c, &log, "kernel build") {
        // A fixdep race has been seen once on an incremental build here; a second make
        // finishes it. A real error fails again and is reported.
        step(format!("kernel build failed ({e:#}); retrying once"));
        let mut c = chroot_cmd(paths, &src, "make")?;
        c.args([o.as_str(), "LLVM=1", jobs.as_str()]);
        run_logged(&mut c, &log, "kernel build")?;
    }
    std::fs::write(out.join(BUILT_STAMP), "")?;
    remove_stale(paths, flavor, &out);
    step(format!("{} kernel built: {}", flavor.name(), out.join("arch/x86/boot/bzImage").display()));
    Ok(out)
}

/// Every `CONFIG_X=y` / `# CONFIG_X is not set` line of the fragments must hold in .config.
fn check_config(paths: &Paths, flavor: Flavor, out: &Path) -> Result<()> {
    let config = std::fs::read_to_string(out.join(".config"))?;
    let have: std::collections::HashSet<&str> = config.lines().collect();
    let mut lost = Vec::new();
    for f in flavor.fragments() {
        for line in setting_lines(&std::fs::read_to_string(paths.repo.join(f))?) {
            let wanted_off = line.starts_with('#');
            let sym = line.trim_start_matches("# ").split(['=', ' ']).next().unwrap_or("");
            let ok = if wanted_off {
                !config.lines().any(|l| l.starts_with(&format!("{sym}=")))
            } else {
                have.contains(line)
            };
            if !ok {
                lost.push(line.to_string());
            }
        }
    }
    if !lost.is_empty() {
        bail!("these kernel options did not survive olddefconfig (a dependency is missing): {}", lost.join(", "));
    }
    Ok(())
}

/// Removes older builds of the same flavour (they are 300+ MB each).
fn remove_stale(paths: &Paths, flavor: Flavor, keep: &Path) {
    let Ok(dir) = std::fs::read_dir(paths.cache.join("kernel")) else { return };
    let prefix = format!("{}-", flavor.name());
    for e in dir.flatten() {
        let p = e.path();
        if p != keep && e.file_name().to_string_lossy().starts_with(&prefix) {
            step(format!("removing stale kernel build {}", p.display()));
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// Unpacks Debian's kernel source tarball into the cache, once per version.
fn unpack_source(paths: &Paths) -> Result<PathBuf> {
    let dir = source_dir(paths)?;
    let stamp = dir.join(".dm-remap-unpacked");
    if stamp.exists() {
        return Ok(dir);
    }
    step(format!("unpacking {SOURCE_PKG} into {}", dir.display()));
    let tmp = dir.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    let tarball = format!("/usr/src/{SOURCE_PKG}.tar.xz");
    in_root(paths, &tmp, "tar", &["-xJf", &tarball, "--strip-components=1"])?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&tmp, &dir)?;
    std::fs::write(&stamp, "")?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::{settings, Flavor};

    #[test]
    fn kernel_names_round_trip() {
        for f in Flavor::ALL {
            assert_eq!(Flavor::parse(f.kernel_name()).ok(), Some(f));
        }
        assert!(Flavor::parse("debian-7.3").is_err());
    }

    #[test]
    fn comments_do_not_change_the_settings() {
        let a = "# why\nCONFIG_A=y\n\n# CONFIG_B is not set\n";
        assert_eq!(settings(a), settings("# other words\n  CONFIG_A=y\n# CONFIG_B is not set"));
        assert_ne!(settings(a), settings("CONFIG_A=y\n"));
        assert_ne!(settings(a), settings("CONFIG_A=m\n# CONFIG_B is not set\n"));
    }
}
