//! `cargo xtask build`: dm-remap.ko, built out of tree with the root Makefile against one of
//! the project's kernels, inside the build root (whose toolchain the kernel was built with).

use crate::env::{in_root, step, Paths};
use crate::kernel::{self, Flavor};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Builds the module for a kernel and returns the path of `dm-remap.ko`.
pub fn build(paths: &Paths, flavor: Flavor) -> Result<PathBuf> {
    let kdir = kernel::built(paths, flavor)?;
    let kdir_arg = format!("KDIR={}", kdir.display());
    // The objects are built in the worktree: after a switch of kernels, start clean, so that
    // nothing built for one kernel (C compiled by clang or gcc, bindings) reaches the other.
    let last = paths.target().join("dm-remap-kernel.txt");
    let this = kdir.display().to_string();
    if std::fs::read_to_string(&last).ok().as_deref() != Some(this.as_str()) {
        in_root(paths, &paths.repo, "make", &["-s", &kdir_arg, "clean"]).context("make clean failed")?;
    }
    step(format!("building dm-remap.ko for {}", flavor.kernel_name()));
    let start = std::time::Instant::now();
    in_root(paths, &paths.repo, "make", &["-s", &kdir_arg]).context("module build failed")?;
    std::fs::create_dir_all(paths.target())?;
    std::fs::write(&last, &this)?;
    let ko = paths.repo.join("dm-remap.ko");
    anyhow::ensure!(ko.exists(), "make succeeded but {} is missing", ko.display());
    step(format!("dm-remap.ko built in {:.1} s", start.elapsed().as_secs_f64()));
    if flavor == Flavor::Debian72 {
        crate::debian::check_vermagic(paths, &ko)?;
    }
    Ok(ko)
}
