//! `cargo xtask build`: dm-remap.ko, built out of tree with the root Makefile against one of
//! the project's kernels, inside the build root (whose toolchain the kernel was built with).
//!
//! Each kernel builds in its own copy of the sources, `target/kbuild/<kernel>/`, so that
//! `cargo xtask test` can keep modules for two kernels without rebuilding either from
//! scratch: kbuild writes its objects next to the sources (`M=`), and a switch of kernels in
//! one directory would need a `make clean`. Files are copied only when their content changed,
//! so make's timestamps still tell what to rebuild.

use crate::env::{in_root, step, Paths};
use crate::kernel::{self, Flavor};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The source files kbuild reads: the root Kbuild and Makefile and everything under `src/`
/// but build products.
fn is_source(rel: &Path) -> bool {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.starts_with('.') || name == "bindings_generated.rs" {
        return false;
    }
    matches!(rel.extension().and_then(|e| e.to_str()), Some("rs" | "c" | "h")) || name == "bindgen_parameters"
}

/// Relative paths of the module's sources under `repo`.
fn sources(repo: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![PathBuf::from("Kbuild"), PathBuf::from("Makefile")];
    let mut dirs = vec![PathBuf::from("src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(repo.join(&d)).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let rel = d.join(e.file_name());
            if e.file_type()?.is_dir() {
                dirs.push(rel);
            } else if is_source(&rel) {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Makes `dir` hold the same sources as the repository: changed files rewritten, new ones
/// added, removed ones deleted; unchanged files (and build products) left alone.
fn mirror(repo: &Path, dir: &Path) -> Result<()> {
    let want = sources(repo)?;
    for rel in &want {
        let data = std::fs::read(repo.join(rel))?;
        let dst = dir.join(rel);
        if std::fs::read(&dst).ok().as_deref() != Some(data.as_slice()) {
            if let Some(p) = dst.parent() {
                std::fs::create_dir_all(p)?;
            }
            std::fs::write(&dst, &data)?;
        }
    }
    if dir.join("src").exists() {
        for rel in sources(dir)? {
            if !want.contains(&rel) {
                std::fs::remove_file(dir.join(&rel))?;
            }
        }
    }
    Ok(())
}

/// Builds the module for a kernel and returns the path of its `dm-remap.ko`.
pub fn build(paths: &Paths, flavor: Flavor) -> Result<PathBuf> {
    let kdir = kernel::built(paths, flavor)?;
    let kdir_arg = format!("KDIR={}", kdir.display());
    let dir = paths.target().join("kbuild").join(flavor.kernel_name());
    std::fs::create_dir_all(&dir)?;
    mirror(&paths.repo, &dir)?;
    // A kernel rebuilt elsewhere (another cache key) invalidates everything built here.
    let last = dir.join("kdir.txt");
    let this = kdir.display().to_string();
    if std::fs::read_to_string(&last).ok().as_deref() != Some(this.as_str()) {
        in_root(paths, &dir, "make", &["-s", &kdir_arg, "clean"]).context("make clean failed")?;
    }
    step(format!("building dm-remap.ko for {}", flavor.kernel_name()));
    let start = std::time::Instant::now();
    in_root(paths, &dir, "make", &["-s", &kdir_arg]).context("module build failed")?;
    std::fs::write(&last, &this)?;
    let ko = dir.join("dm-remap.ko");
    anyhow::ensure!(ko.exists(), "make succeeded but {} is missing", ko.display());
    step(format!("dm-remap.ko built in {:.1} s: {}", start.elapsed().as_secs_f64(), ko.display()));
    if flavor == Flavor::Debian72 {
        crate::debian::check_vermagic(paths, &ko)?;
    }
    Ok(ko)
}

#[cfg(test)]
mod tests {
    use super::{is_source, mirror};
    use std::path::Path;

    #[test]
    fn sources_exclude_build_products() {
        assert!(is_source(Path::new("src/dm/helpers.c")));
        assert!(is_source(Path::new("src/dm/bindgen_parameters")));
        assert!(!is_source(Path::new("src/dm/bindings_generated.rs")));
        assert!(!is_source(Path::new("src/.dm_remap.o.cmd")));
        assert!(!is_source(Path::new("src/dm_remap.o")));
    }

    /// The mirror follows additions, changes and removals, and leaves unchanged files (their
    /// timestamps) alone.
    #[test]
    fn mirror_follows_the_repository() {
        let base = std::env::temp_dir().join(format!("xtask-mirror-{}", std::process::id()));
        let (repo, dir) = (base.join("repo"), base.join("dir"));
        std::fs::create_dir_all(repo.join("src/dm")).unwrap();
        for (p, t) in [("Kbuild", "k"), ("Makefile", "m"), ("src/a.rs", "a"), ("src/dm/b.c", "b"), ("src/a.o", "obj")] {
            std::fs::write(repo.join(p), t).unwrap();
        }
        mirror(&repo, &dir).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("src/dm/b.c")).unwrap(), "b");
        assert!(!dir.join("src/a.o").exists());
        let t0 = std::fs::metadata(dir.join("Kbuild")).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(repo.join("src/dm/b.c"), "b2").unwrap();
        std::fs::remove_file(repo.join("Kbuild")).ok();
        std::fs::write(repo.join("Kbuild"), "k").unwrap();
        std::fs::remove_file(repo.join("src/a.rs")).unwrap();
        std::fs::write(repo.join("src/c.rs"), "c").unwrap();
        std::fs::write(dir.join("src/x.o"), "product").unwrap();
        mirror(&repo, &dir).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("src/dm/b.c")).unwrap(), "b2");
        assert!(!dir.join("src/a.rs").exists());
        assert!(dir.join("src/c.rs").exists());
        assert!(dir.join("src/x.o").exists(), "build products stay");
        assert_eq!(std::fs::metadata(dir.join("Kbuild")).unwrap().modified().unwrap(), t0, "an unchanged file is not rewritten");
        std::fs::remove_dir_all(&base).unwrap();
    }
}

#[cfg(test)]
mod srcu_tests {
    use std::process::Command;

    /// `src/dm/srcu_check.h` compiled alone as the kernel's autoconf.h would leave it.
    fn compiles(defines: &[&str]) -> bool {
        let header = concat!(env!("CARGO_MANIFEST_DIR"), "/../src/dm/srcu_check.h");
        let mut c = Command::new("cc");
        c.args(["-fsyntax-only", "-x", "c"]).args(defines.iter().map(|d| format!("-D{d}"))).arg(header);
        c.output().expect("cc runs").status.success()
    }

    /// The module refuses to build for a kernel with Tiny SRCU, whose read unlock is not
    /// interrupt-safe (the write gate is left from end_io), and builds with Tree SRCU.
    #[test]
    fn build_refuses_tiny_srcu() {
        assert!(compiles(&["CONFIG_TREE_SRCU=1"]), "Tree SRCU (both supported kernels) must build");
        assert!(!compiles(&["CONFIG_TINY_SRCU=1"]), "Tiny SRCU must be refused");
        assert!(!compiles(&[]), "a kernel with neither symbol is not one we know: refused");
    }
}
