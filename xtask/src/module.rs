//! `cargo xtask build`: dm-remap.ko, built out of tree with the root Makefile against the
//! project's test kernel, inside the build root (whose toolchain the kernel was built with).

use crate::env::{in_root, step, Paths};
use crate::kernel::{self, Flavor};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Builds the module for a kernel flavour and returns the path of `dm-remap.ko`.
pub fn build(paths: &Paths, flavor: Flavor) -> Result<PathBuf> {
    let kdir = kernel::built(paths, flavor)?;
    step("building dm-remap.ko");
    let kdir_arg = format!("KDIR={}", kdir.display());
    in_root(paths, &paths.repo, "make", &["-s", &kdir_arg]).context("module build failed")?;
    let ko = paths.repo.join("dm-remap.ko");
    anyhow::ensure!(ko.exists(), "make succeeded but {} is missing", ko.display());
    Ok(ko)
}
