//! `cargo xtask setup`: the Debian trixie build root with the kernel Rust toolchain.
//!
//! Debian 12's rustc is too old for the 6.12 kernel and the host's rustup toolchain has no
//! rust-src, so kernel Rust is built with trixie's packages inside a debootstrap root.

use crate::env::{self, in_root, in_root_output, step, Paths};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;

/// The Debian suite the build root follows.
pub const SUITE: &str = "trixie";

/// Packages installed in the build root: kernel toolchain, kernel build dependencies, and
/// the guest userland that goes into the VM's initramfs.
pub const PACKAGES: &[&str] = &[
    // Kernel Rust toolchain.
    "rustc", "rust-src", "bindgen", "libclang-dev", "clang", "lld", "llvm",
    // Kernel build.
    "make", "gcc", "libc6-dev", "bc", "flex", "bison", "libelf-dev", "libssl-dev", "cpio",
    "kmod", "python3", "xz-utils", "linux-source-6.12",
    // Guest userland and the VM.
    "busybox-static", "dmsetup", "fio", "util-linux", "e2fsprogs", "qemu-system-x86",
    // The font the benchmark chart is drawn with.
    "fonts-dejavu-core",
];

/// Versions the build depends on; setup fails if the suite ever moves past them, rather
/// than silently building with something else.
const REQUIRED: &[(&str, &str)] = &[("rustc", "1.85."), ("rust-src", "1.85."), ("linux-source-6.12", "6.12.")];

/// Minimum free space for the root, the kernel source and one kernel build.
const MIN_FREE_BYTES: u64 = 10 << 30;

const STAMP: &str = ".dm-remap-setup";

/// Host packages the workspace itself needs: the build-root tool, and what the `devicemapper`
/// crate of the `dmremap` tool builds against (libdevmapper headers, libclang for bindgen).
const HOST_PACKAGES: &[&str] = &["debootstrap", "pkg-config", "libdevmapper-dev", "libclang-dev"];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the missing [`HOST_PACKAGES`] with apt-get (the host's own Debian mirror).
pub fn host_packages() -> Result<()> {
    let missing: Vec<&str> = HOST_PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("the host packages {} are missing and installing them needs root.", missing.join(" "));
    }
    step(format!("installing host packages: {}", missing.join(" ")));
    let ok = Command::new("apt-get").args(["update", "-q"]).status().map(|s| s.success()).unwrap_or(false)
        && Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !ok || missing.iter().any(|p| !installed(p)) {
        bail!("`apt-get install {}` failed; install them and run again.", missing.join(" "));
    }
    Ok(())
}

pub fn setup(paths: &Paths) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("cargo xtask setup must run as root: it uses debootstrap, chroot and bind mounts.");
    }
    host_packages()?;
    std::fs::create_dir_all(&paths.cache)
        .with_context(|| format!("cannot create the cache directory {}", paths.cache.display()))?;
    let root = paths.root();
    let want = stamp_contents()?;
    if std::fs::read_to_string(root.join(STAMP)).ok().as_deref() == Some(want.as_str()) {
        step(format!("build root {} is up to date", root.display()));
        return Ok(());
    }
    check_free_space(&paths.cache)?;
    let mirror = debian_mirror()?;
    if !root.join("usr/bin/apt-get").exists() {
        let tmp = paths.cache.join("trixie.partial");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).context("removing a half-made build root")?;
        }
        step(format!("debootstrap {SUITE} into {} (about 30 s)", tmp.display()));
        env::run(
            Command::new("debootstrap")
                .args(["--variant=minbase", SUITE])
                .arg(&tmp)
                .arg(&mirror),
        )
        .context("debootstrap failed; see its output above")?;
        if root.exists() {
            std::fs::remove_dir_all(&root)?;
        }
        std::fs::rename(&tmp, &root)?;
    }
    std::fs::write(
        root.join("etc/apt/sources.list"),
        format!("deb {mirror} {SUITE} main\n"),
    )?;
    // The host's resolver, so apt inside the root reaches the mirror.
    std::fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf")).ok();
    step(format!("installing {} packages in the build root (about 1 min)", PACKAGES.len()));
    in_root(paths, Path::new("/"), "apt-get", &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(PACKAGES);
    in_root(paths, Path::new("/"), "apt-get", &args)?;
    in_root(paths, Path::new("/"), "apt-get", &["clean"])?;
    let versions = check_versions(paths)?;
    std::fs::write(paths.cache.join("versions.txt"), &versions)?;
    eprint!("{versions}");
    std::fs::write(root.join(STAMP), want)?;
    step("build root ready");
    Ok(())
}

/// What the stamp records: the suite and the package list. Changing either redoes setup.
fn stamp_contents() -> Result<String> {
    let mut h = Sha256::new();
    h.update(SUITE);
    for p in PACKAGES {
        h.update(p);
        h.update([0]);
    }
    Ok(format!("{:x}\n", h.finalize()))
}

/// Installs in the build root those of `pkgs` that are missing (once: later calls find them
/// installed). For what only some commands need (pahole, dkms, lintian), not the base set.
pub fn root_packages(paths: &Paths, pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| {
            in_root_output(paths, Path::new("/"), "dpkg-query", &["-W", "-f=${Status}", p])
                .map(|s| !s.contains("install ok installed"))
                .unwrap_or(true)
        })
        .collect();
    if !missing.is_empty() {
        step(format!("installing {} in the build root", missing.join(" ")));
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend_from_slice(&missing);
        in_root(paths, Path::new("/"), "apt-get", &args)?;
    }
    Ok(())
}

/// Checks the pinned versions and returns `name version` lines for the record.
fn check_versions(paths: &Paths) -> Result<String> {
    let mut lines = String::new();
    for p in PACKAGES {
        let v = in_root_output(paths, Path::new("/"), "dpkg-query", &["-W", "-f=${Version}", p])?;
        lines.push_str(&format!("{p} {v}\n"));
        if let Some((_, prefix)) = REQUIRED.iter().find(|(n, _)| n == p) {
            // Debian versions may carry an epoch or a +dfsg suffix: compare the upstream part.
            let upstream = v.split(':').last().unwrap_or(&v);
            if !upstream.starts_with(prefix) {
                bail!("{p} in {SUITE} is {v}, but the build is pinned to {prefix}x; update xtask/src/setup.rs deliberately");
            }
        }
    }
    Ok(lines)
}

/// The Debian mirror the host's apt already uses (the only network this machine has).
pub fn debian_mirror() -> Result<String> {
    if let Ok(m) = std::env::var("DM_REMAP_MIRROR") {
        return Ok(m);
    }
    let mut texts = Vec::new();
    for f in ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"] {
        if let Ok(t) = std::fs::read_to_string(f) {
            texts.push(t);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            if let Ok(t) = std::fs::read_to_string(e.path()) {
                texts.push(t);
            }
        }
    }
    for t in &texts {
        for line in t.lines() {
            let line = line.trim();
            let uri = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.starts_with("http"))
            } else {
                None
            };
            if let Some(u) = uri {
                let u = u.trim_end_matches('/');
                if u.starts_with("http") && u.ends_with("/debian") {
                    return Ok(u.to_string());
                }
            }
        }
    }
    bail!("no Debian mirror found in the host's apt sources; set DM_REMAP_MIRROR to one")
}

fn check_free_space(dir: &Path) -> Result<()> {
    let st = nix::sys::statvfs::statvfs(dir).context("statvfs on the cache directory")?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    if free < MIN_FREE_BYTES {
        bail!(
            "only {} MiB free under {}; the build root and kernel need {} GiB (set {} elsewhere).",
            free >> 20,
            dir.display(),
            MIN_FREE_BYTES >> 30,
            env::CACHE_ENV
        );
    }
    Ok(())
}
