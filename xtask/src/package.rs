//! `cargo xtask package`: the Debian packages, in `target/packages/` (docs/install.md).
//!
//! - `dmremap`: the operator's tool, with its manual pages and shell completions generated
//!   from its own clap definitions (`dmremap manpage`, `dmremap completions`).
//! - `dm-remap-modules-<release>`: dm-remap.ko built for the pinned Debian kernel
//!   (xtask/src/debian.rs), depending on exactly that `linux-image` package.
//! - `dm-remap-dkms`: the module source, `dkms.conf` and the build step that prepares a
//!   Debian kernel's Rust metadata (packaging/dkms/dkms-build, scripts/kernel-rust-prepare).
//!
//! The packages are assembled with dpkg-deb and checked with lintian, both in the build root
//! (trixie's tools, for trixie). lintian's findings are explained in docs/install.md.

use crate::env::{chroot_cmd, in_root, in_root_output, step, Paths};
use crate::kernel::{self, Flavor};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The project's version (the workspace's), the version of all three packages.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The DKMS module name (`dkms.conf`'s PACKAGE_NAME, `/usr/src/<name>-<version>`).
pub const DKMS_NAME: &str = "dm-remap";
const MAINTAINER: &str = "dm-remap maintainers <maintainers@users.noreply.b-seed-dcb9fdc2.example>";
/// Build-root packages `package` and the boot test's packages need besides setup's.
const PACKAGE_TOOLS: &[&str] = &["lintian", "dpkg-dev"];

/// Toolchain and kernel-build packages dm-remap-dkms depends on: what dkms-build and
/// kernel-rust-prepare run (the Rust toolchain the kernel was built with, bindgen and
/// libclang for the bindings, the kernel's build dependencies, pahole for its BTF setting),
/// and openssl, with which DKMS makes its signing key (without it, modules go unsigned).
const DKMS_DEPENDS: &[&str] = &[
    "dkms", "rustc", "rust-src", "bindgen", "libclang-dev", "make", "bc", "flex", "bison",
    "libelf-dev", "libssl-dev", "dwarves", "xz-utils", "python3", "openssl",
];

/// The packages built.
pub struct Packages {
    pub module: PathBuf,
    pub dkms: PathBuf,
    /// lintian's output over the three.
    pub lintian: String,
}

/// The binary module package's name.
pub fn module_package() -> String {
    format!("dm-remap-modules-{}", crate::debian::release())
}

fn out_dir(paths: &Paths) -> PathBuf {
    paths.target().join("packages")
}

fn stage(paths: &Paths) -> PathBuf {
    paths.target().join("packages-stage")
}

/// Builds the three packages and runs lintian on them; fails if lintian reports an error.
pub fn package(paths: &Paths) -> Result<Packages> {
    let start = std::time::Instant::now();
    crate::setup::setup(paths)?;
    let kdir = kernel::kernel(paths, Flavor::Debian72)?;
    crate::setup::root_packages(paths, PACKAGE_TOOLS)?;
    let out = out_dir(paths);
    std::fs::create_dir_all(&out)?;
    let src = stage_source(paths)?;
    let ko = build_module(paths, &src, &kdir)?;
    let tool = tool_deb(paths, &out)?;
    let _ = TOOL_DEB.set(tool.clone());
    let module = module_deb(paths, &ko, &out)?;
    let dkms = dkms_deb(paths, &src, &out)?;
    let lintian = lintian(paths, &[&tool, &module, &dkms])?;
    for p in [&tool, &module, &dkms] {
        println!("{}", p.display());
    }
    step(format!("packages built in {:.0} s", start.elapsed().as_secs_f64()));
    Ok(Packages { module, dkms, lintian })
}

/// The `dmremap` package built by [`package`] in this process (the packaging test's), which
/// the boot test then installs rather than building it again.
static TOOL_DEB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The `dmremap` package and the module package (of `ko`, the module the VM tests load) for
/// the boot test, in `out`: built as `package` builds them (the `dmremap` package is the
/// packaging test's own if it ran in this process), without the DKMS package and lintian
/// (the packaging test runs those).
pub fn boot_debs(paths: &Paths, ko: &Path, out: &Path) -> Result<(PathBuf, PathBuf)> {
    // dpkg-shlibdeps: the boot test alone (`--filter boot_systemd`) runs before, or without,
    // the packaging test that would have installed it.
    crate::setup::root_packages(paths, PACKAGE_TOOLS)?;
    std::fs::create_dir_all(out)?;
    let tool = match TOOL_DEB.get() {
        Some(t) => t.clone(),
        None => tool_deb(paths, out)?,
    };
    Ok((tool, module_deb(paths, ko, out)?))
}

/// Writes `data` to `path` unless it already holds exactly that (so that make sees unchanged
/// sources as unchanged).
fn write_if_changed(path: &Path, data: &[u8]) -> Result<()> {
    if std::fs::read(path).ok().as_deref() == Some(data) {
        return Ok(());
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", path.display()))
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir)?.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The module's source as DKMS gets it, in `<stage>/src/dm-remap-<version>`: the Kbuild and
/// Makefile, `src/` (the crate, the dm abstraction, the C helpers, the logic), `dkms.conf`,
/// the build step and the Rust metadata recipe. Files no longer in the tree are removed.
fn stage_source(paths: &Paths) -> Result<PathBuf> {
    let dir = stage(paths).join(format!("src/{DKMS_NAME}-{VERSION}"));
    let mut want: Vec<(PathBuf, Vec<u8>, u32)> = Vec::new();
    for f in ["Kbuild", "Makefile"] {
        want.push((f.into(), std::fs::read(paths.repo.join(f))?, 0o644));
    }
    for f in files_under(&paths.repo.join("src"))? {
        // Build products of an in-tree build are not source.
        let name = f.to_string_lossy();
        if [".o", ".cmd", ".ko", "_generated.rs", ".mod", ".d"].iter().any(|s| name.ends_with(s)) {
            continue;
        }
        want.push((Path::new("src").join(&f), std::fs::read(paths.repo.join("src").join(&f))?, 0o644));
    }
    let conf = std::fs::read_to_string(paths.repo.join("packaging/dkms/dkms.conf"))?.replace("@VERSION@", VERSION);
    want.push(("dkms.conf".into(), conf.into_bytes(), 0o644));
    want.push(("dkms-build".into(), std::fs::read(paths.repo.join("packaging/dkms/dkms-build"))?, 0o755));
    want.push(("kernel-rust-prepare".into(), std::fs::read(paths.repo.join("scripts/kernel-rust-prepare"))?, 0o755));
    if dir.exists() {
        for f in files_under(&dir)? {
            if !want.iter().any(|(w, _, _)| *w == f) {
                std::fs::remove_file(dir.join(&f))?;
            }
        }
    }
    for (f, data, mode) in &want {
        write_if_changed(&dir.join(f), data)?;
        set_mode(&dir.join(f), *mode)?;
    }
    Ok(dir)
}

/// Builds dm-remap.ko for the pinned Debian kernel from a copy of the staged source (not in
/// the worktree, whose objects belong to the kernel the tests last used); strips its debug
/// information as Debian strips its own modules; checks its vermagic against Debian's.
fn build_module(paths: &Paths, src: &Path, kdir: &Path) -> Result<PathBuf> {
    let build = stage(paths).join("module-build");
    for f in files_under(src)? {
        write_if_changed(&build.join(&f), &std::fs::read(src.join(&f))?)?;
    }
    step(format!("building dm-remap.ko for {} from the staged source", crate::debian::release()));
    in_root(paths, &build, "make", &["-s", &format!("KDIR={}", kdir.display())]).context("module build failed")?;
    let ko = build.join("dm-remap.ko");
    crate::debian::check_vermagic(paths, &ko)?;
    let stripped = stage(paths).join("dm-remap.ko");
    in_root(paths, Path::new("/"), "strip", &["--strip-debug", "-o", &stripped.display().to_string(), &ko.display().to_string()])?;
    Ok(stripped)
}

/// A package tree under the stage: emptied, with `DEBIAN/`.
fn fresh_tree(paths: &Paths, pkg: &str) -> Result<PathBuf> {
    let dir = stage(paths).join(format!("deb/{pkg}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(dir.join("DEBIAN"))?;
    Ok(dir)
}

/// Puts a file into a package tree with the given mode.
fn put(tree: &Path, path: &str, data: &[u8], mode: u32) -> Result<()> {
    let p = tree.join(path.trim_start_matches('/'));
    write_if_changed(&p, data)?;
    set_mode(&p, mode)
}

/// `git log -1 --format=<fmt>` of the repository, if git answers with something.
fn last_commit(paths: &Paths, fmt: &str) -> Option<String> {
    let o = Command::new("git").current_dir(&paths.repo).args(["log", "-1", &format!("--format={fmt}")]).output().ok()?;
    Some(String::from_utf8_lossy(&o.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

/// The time the packages say they were made: the commit's, so that the same commit gives
/// the same changelog.
fn commit_date(paths: &Paths) -> String {
    last_commit(paths, "%aD").unwrap_or_else(|| "Thu, 01 Jan 2026 00:00:00 +0000".into())
}

/// The commit's time, seconds since the epoch.
fn commit_time(paths: &Paths) -> u64 {
    last_commit(paths, "%ct").and_then(|s| s.parse().ok()).unwrap_or(1_767_225_600)
}

/// gzip -9n, in the build root.
fn gzip(paths: &Paths, data: &[u8], out: &Path) -> Result<()> {
    let tmp = out.with_extension("");
    std::fs::write(&tmp, data)?;
    let _ = std::fs::remove_file(out);
    in_root(paths, Path::new("/"), "gzip", &["-9n", &tmp.display().to_string()])?;
    set_mode(out, 0o644)
}

/// `/usr/share/doc/<pkg>/copyright` and `changelog.gz` (a native package's).
fn docs(paths: &Paths, tree: &Path, pkg: &str, extra_license: &str) -> Result<()> {
    let copyright = format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: dm-remap\n\
         Comment: Built by `cargo xtask package` from the dm-remap repository.{extra_license}\n\
         \n\
         Files: *\n\
         Copyright: 2026 the dm-remap authors\n\
         License: GPL-2\n \
         On Debian systems, the full text of the GNU General Public License version 2\n \
         can be found in /usr/share/common-licenses/GPL-2.\n"
    );
    put(tree, &format!("usr/share/doc/{pkg}/copyright"), copyright.as_bytes(), 0o644)?;
    let changelog = format!(
        "dm-remap ({VERSION}) unstable; urgency=medium\n\n  * Built by cargo xtask package (docs/install.md).\n\n -- {MAINTAINER}  {}\n",
        commit_date(paths)
    );
    gzip(paths, changelog.as_bytes(), &tree.join(format!("usr/share/doc/{pkg}/changelog.gz")))
}

/// Writes DEBIAN/control (with Installed-Size) and DEBIAN/md5sums, then `dpkg-deb --build`;
/// returns the `.deb`.
fn build_deb(paths: &Paths, tree: &Path, pkg: &str, arch: &str, fields: &str, out: &Path) -> Result<PathBuf> {
    let mut size = 0u64;
    let mut files = Vec::new();
    for f in files_under(tree)? {
        if f.starts_with("DEBIAN") {
            continue;
        }
        size += std::fs::symlink_metadata(tree.join(&f))?.len().div_ceil(1024);
        files.push(f.display().to_string());
    }
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let sums = in_root_output(paths, tree, "md5sum", &args)?;
    let control = format!(
        "Package: {pkg}\nVersion: {VERSION}\nArchitecture: {arch}\nMaintainer: {MAINTAINER}\nInstalled-Size: {size}\n{fields}"
    );
    put(tree, "DEBIAN/control", control.as_bytes(), 0o644)?;
    put(tree, "DEBIAN/md5sums", sums.as_bytes(), 0o644)?;
    // Directories 0755 whatever the umask.
    let mut stack = vec![tree.to_path_buf()];
    while let Some(d) = stack.pop() {
        set_mode(&d, 0o755)?;
        for e in std::fs::read_dir(&d)?.flatten() {
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            }
        }
    }
    let deb = out.join(format!("{pkg}_{VERSION}_{arch}.deb"));
    // File times clamped to the commit's: the same files give the same .deb, so lintian and
    // the DKMS test can be skipped for an unchanged package.
    let epoch = format!("SOURCE_DATE_EPOCH={}", commit_time(paths));
    in_root(paths, Path::new("/"), "env", &[&epoch, "dpkg-deb", "--root-owner-group", "-Zxz", "--build", &tree.display().to_string(), &deb.display().to_string()])?;
    Ok(deb)
}

/// The `dmremap` package: the tool (built on the host, stripped) in /usr/sbin, where the udev
/// rules and the systemd units run it (docs/boot.md), its manual pages, its bash, zsh and
/// fish completions, the udev rules that guard member disks, and the systemd generator and
/// template unit that activate /etc/dmremaptab at boot.
fn tool_deb(paths: &Paths, out: &Path) -> Result<PathBuf> {
    let pkg = "dmremap";
    step("building dmremap (release)");
    crate::setup::host_packages()?;
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&paths.repo)
        .args(["build", "--release", "--quiet", "-p", "dmremap"])
        .status()?;
    anyhow::ensure!(status.success(), "building dmremap failed");
    let bin = paths.target().join("release/dmremap");
    let tree = fresh_tree(paths, pkg)?;
    let dst = tree.join("usr/sbin/dmremap");
    std::fs::create_dir_all(dst.parent().context("no parent")?)?;
    in_root(paths, Path::new("/"), "strip", &["--strip-unneeded", "--remove-section=.comment", "--remove-section=.note", "-o", &dst.display().to_string(), &bin.display().to_string()])?;
    set_mode(&dst, 0o755)?;
    // Manual pages and completions from the tool's own definitions.
    let man = stage(paths).join("man");
    if man.exists() {
        std::fs::remove_dir_all(&man)?;
    }
    crate::env::run(Command::new(&bin).arg("manpage").arg("--dir").arg(&man))?;
    for f in files_under(&man)? {
        let data = std::fs::read(man.join(&f))?;
        let name = f.display().to_string();
        let out = tree.join(format!("usr/share/man/man1/{name}.gz"));
        std::fs::create_dir_all(out.parent().context("no parent")?)?;
        gzip(paths, &data, &out)?;
    }
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/dmremap"),
        ("zsh", "usr/share/zsh/vendor-completions/_dmremap"),
        ("fish", "usr/share/fish/vendor_completions.d/dmremap.fish"),
    ] {
        let out = crate::env::output(Command::new(&bin).args(["completions", shell]))?;
        put(&tree, path, out.as_bytes(), 0o644)?;
    }
    for (src, path, mode) in [
        ("udev/61-dm-remap.rules", "usr/lib/udev/rules.d/61-dm-remap.rules", 0o644),
        ("systemd/dmremap@.service", "usr/lib/systemd/system/dmremap@.service", 0o644),
        ("systemd/dmremap-generator", "usr/lib/systemd/system-generators/dmremap-generator", 0o755),
        ("systemd/dmremap-watch.service", "usr/lib/systemd/system/dmremap-watch.service", 0o644),
        ("systemd/dmremap-exitrd.service", "usr/lib/systemd/system/dmremap-exitrd.service", 0o644),
        ("initramfs/hook", "usr/share/initramfs-tools/hooks/dmremap", 0o755),
        ("initramfs/local-top", "usr/share/initramfs-tools/scripts/local-top/dmremap", 0o755),
        ("systemd/dmremap-export.service", "usr/lib/systemd/system/dmremap-export.service", 0o644),
        ("systemd/dmremap-export.timer", "usr/lib/systemd/system/dmremap-export.timer", 0o644),
        // What the units' Documentation= lines point at.
        ("docs/boot.md", "usr/share/doc/dmremap/boot.md", 0o644),
        ("docs/install.md", "usr/share/doc/dmremap/install.md", 0o644),
    ] {
        put(&tree, path, &std::fs::read(paths.repo.join(src))?, mode)?;
    }
    // New rules and a new generator take effect without a reboot.
    let postinst = "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n\
                    \tif [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n\
                    \tif command -v udevadm >/dev/null; then udevadm control --reload-rules || true; fi\nfi\n";
    put(&tree, "DEBIAN/postinst", postinst.as_bytes(), 0o755)?;
    // The initramfs carries the tool, its hook and boot script: install, upgrade and removal
    // rebuild it (initramfs-tools' trigger runs `update-initramfs -u` once per dpkg run).
    put(&tree, "DEBIAN/triggers", INITRAMFS_TRIGGER, 0o644)?;
    docs(
        paths,
        &tree,
        pkg,
        "\n The dmremap binary links statically the Rust crates listed in the repository's\n Cargo.lock, each under its own (MIT and/or Apache-2.0) license.",
    )?;
    let depends = shlib_depends(paths, &dst)?;
    let fields = format!(
        "Section: admin\nPriority: optional\nDepends: {depends}, libblkid1\nRecommends: {} | dm-remap-dkms\nDescription: operator's tool for dm-remap, the remapping device-mapper target\n \
         dmremap formats and inspects dm-remap spares, creates dm-remap devices,\n \
         reports their status (also as Nagios checks and Prometheus metrics),\n \
         watches their alerts and activates the devices of /etc/dmremaptab.\n",
        module_package()
    );
    build_deb(paths, &tree, pkg, "amd64", &fields, out)
}

/// `DEBIAN/triggers` of a package whose files go into the initramfs: initramfs-tools runs
/// `update-initramfs -u` after the package is installed, upgraded or removed (deb-triggers(5)).
const INITRAMFS_TRIGGER: &[u8] = b"activate-noawait update-initramfs\n";

/// The shared-library Depends of an executable, by dpkg-shlibdeps in the build root.
fn shlib_depends(paths: &Paths, exe: &Path) -> Result<String> {
    let dir = stage(paths).join("shlibdeps");
    // dpkg-shlibdeps reads debian/control from its working directory.
    put(&dir, "debian/control", b"Source: dm-remap\n\nPackage: dmremap\nArchitecture: any\n", 0o644)?;
    let out = in_root_output(paths, &dir, "dpkg-shlibdeps", &["-O", &format!("-e{}", exe.display())])?;
    let deps = out
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .context("dpkg-shlibdeps printed no shlibs:Depends")?;
    Ok(deps.trim().to_string())
}

/// The binary module package for the pinned Debian kernel.
fn module_deb(paths: &Paths, ko: &Path, out: &Path) -> Result<PathBuf> {
    let pkg = module_package();
    let rel = crate::debian::release();
    let tree = fresh_tree(paths, &pkg)?;
    // /usr/lib/modules is /lib/modules on Debian's merged /usr, where trixie's own kernel
    // packages put their modules.
    put(&tree, &format!("usr/lib/modules/{rel}/updates/dm-remap.ko"), &std::fs::read(ko)?, 0o644)?;
    docs(paths, &tree, &pkg, "")?;
    // depmod on install and removal, so that modprobe finds the module (or forgets it).
    let postinst = format!("#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n\tdepmod -a {rel}\nfi\n");
    let postrm = format!(
        "#!/bin/sh\nset -e\nif [ \"$1\" = remove ] || [ \"$1\" = purge ]; then\n\tif [ -d /usr/lib/modules/{rel}/kernel ]; then\n\t\tdepmod -a {rel}\n\tfi\nfi\n"
    );
    put(&tree, "DEBIAN/postinst", postinst.as_bytes(), 0o755)?;
    put(&tree, "DEBIAN/postrm", postrm.as_bytes(), 0o755)?;
    // The module is in the initramfs of a root on dm-remap.
    put(&tree, "DEBIAN/triggers", INITRAMFS_TRIGGER, 0o644)?;
    let pin = crate::debian::PIN.version;
    let fields = format!(
        "Section: kernel\nPriority: optional\nDepends: linux-image-{rel} (= {pin})\nConflicts: dm-remap-dkms\nSuggests: dmremap\nDescription: dm-remap device-mapper target for Linux {rel}\n \
         The dm-remap kernel module (a device-mapper target written in Rust)\n \
         built for Debian's kernel {rel},\n \
         version {pin}. For other kernels use dm-remap-dkms.\n"
    );
    build_deb(paths, &tree, &pkg, "amd64", &fields, out)
}

/// The DKMS package: the staged source in /usr/src, registered with DKMS on configure the way
/// dh_dkms does it (/usr/lib/dkms/common.postinst builds it for the installed kernels).
fn dkms_deb(paths: &Paths, src: &Path, out: &Path) -> Result<PathBuf> {
    let pkg = "dm-remap-dkms";
    let tree = fresh_tree(paths, pkg)?;
    let dst = format!("usr/src/{DKMS_NAME}-{VERSION}");
    for f in files_under(src)? {
        let mode = if f.as_os_str() == "dkms-build" || f.as_os_str() == "kernel-rust-prepare" { 0o755 } else { 0o644 };
        put(&tree, &format!("{dst}/{}", f.display()), &std::fs::read(src.join(&f))?, mode)?;
    }
    // The prepared Rust metadata of a removed kernel is removed with it.
    put(
        &tree,
        "etc/kernel/postrm.d/dm-remap-dkms",
        b"#!/bin/sh\n# dm-remap-dkms: drop the Rust metadata prepared for a kernel that is being removed.\nset -e\nkrel=\"$1\"\n[ -n \"$krel\" ] || exit 0\nrm -rf \"/var/lib/dm-remap-dkms/$krel\" \"/var/lib/dm-remap-dkms/$krel.lock\"\n",
        0o755,
    )?;
    put(&tree, "DEBIAN/conffiles", b"/etc/kernel/postrm.d/dm-remap-dkms\n", 0o644)?;
    docs(paths, &tree, pkg, "")?;
    let postinst = format!(
        "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n\t/usr/lib/dkms/common.postinst {DKMS_NAME} {VERSION} /usr/share/{pkg} \"\" \"$2\"\nfi\n"
    );
    let prerm = format!(
        "#!/bin/sh\nset -e\nif [ \"$1\" = remove ] || [ \"$1\" = upgrade ] || [ \"$1\" = deconfigure ]; then\n\tif [ -n \"$(dkms status -m {DKMS_NAME} -v {VERSION})\" ]; then\n\t\tdkms remove -m {DKMS_NAME} -v {VERSION} --all\n\tfi\nfi\n"
    );
    let postrm = "#!/bin/sh\nset -e\nif [ \"$1\" = purge ]; then\n\trm -rf /var/lib/dm-remap-dkms\nfi\n";
    put(&tree, "DEBIAN/postinst", postinst.as_bytes(), 0o755)?;
    put(&tree, "DEBIAN/prerm", prerm.as_bytes(), 0o755)?;
    put(&tree, "DEBIAN/postrm", postrm.as_bytes(), 0o755)?;
    // The module DKMS builds goes into the initramfs of a root on dm-remap (a kernel
    // installed later gets it from /etc/kernel/postinst.d: dkms runs before initramfs-tools).
    put(&tree, "DEBIAN/triggers", INITRAMFS_TRIGGER, 0o644)?;
    let fields = format!(
        "Section: kernel\nPriority: optional\nDepends: {}, linux-source-{}\nRecommends: dmremap\nDescription: dm-remap device-mapper target, source for DKMS\n \
         The dm-remap kernel module (a device-mapper target written in Rust) as source,\n \
         built by DKMS for each installed Rust-enabled kernel. Debian's headers carry no\n \
         Rust metadata, so the build step prepares it once per kernel from linux-source\n \
         of exactly the kernel's version, with the rustc the kernel was built with.\n",
        DKMS_DEPENDS.join(", "),
        series()
    );
    build_deb(paths, &tree, pkg, "all", &fields, out)
}

/// `7.2` of the pinned kernel.
fn series() -> String {
    crate::debian::source_pkg().trim_start_matches("linux-source-").to_string()
}

/// lintian over the packages, in the build root; its output, printed and saved in
/// `target/packages/lintian.txt`. Fails on errors (E:). Cached by the packages' hash.
fn lintian(paths: &Paths, debs: &[&Path]) -> Result<String> {
    let mut h = Sha256::new();
    for d in debs {
        h.update(std::fs::read(d)?);
    }
    h.update(in_root_output(paths, Path::new("/"), "dpkg-query", &["-W", "-f=${Version}", "lintian"])?);
    let hash = format!("{:x}", h.finalize());
    let saved = out_dir(paths).join("lintian.txt");
    let stamp = out_dir(paths).join("lintian.hash");
    let text = if std::fs::read_to_string(&stamp).ok().as_deref() == Some(hash.as_str()) {
        step("lintian: packages unchanged since its last run, its output reused");
        std::fs::read_to_string(&saved)?
    } else {
        step("lintian (in the build root)");
        let mut c = chroot_cmd(paths, Path::new("/"), "lintian")?;
        c.args(["--display-info", "--tag-display-limit", "0", "--fail-on", "none"]);
        c.args(debs.iter().map(|d| d.as_os_str()));
        let out = c.output().context("cannot run lintian")?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            bail!("lintian failed ({}):\n{text}", out.status);
        }
        std::fs::write(&saved, &text)?;
        std::fs::write(&stamp, &hash)?;
        text
    };
    println!("---- lintian ----\n{}---- end of lintian ----", text);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ")).collect();
    if !errors.is_empty() {
        bail!("lintian reports {} error(s):\n{}", errors.len(), errors.join("\n"));
    }
    Ok(text)
}

/// One check of the packaging test: its name and, if it failed, why.
pub struct Check {
    pub name: &'static str,
    pub failure: Option<String>,
}

/// The names of the packaging test's checks (for `cargo xtask test --filter`).
pub const CHECKS: &[&str] = &[
    "package_lintian_no_errors",
    "dkms_refuses_mismatched_source",
    "dkms_refuses_other_rustc_skips_no_rust",
    "dkms_build_install_signed",
    "package_module_loads_on_stock_kernel",
    "dkms_module_loads_on_stock_kernel",
];

/// The sentence dkms-build refuses a linux-source of another version with (docs/install.md).
pub fn mismatch_sentence(release: &str, wanted: &str, installed: &str) -> String {
    format!(
        "dm-remap: kernel {release} needs linux-source-{} version {wanted} exactly, but {installed} is installed; install linux-source-{}={wanted}.",
        series(),
        series()
    )
}

/// The sentence dkms-build refuses another rustc with (docs/install.md).
pub fn rustc_sentence(release: &str, theirs: &str, ours: &str) -> String {
    format!("dm-remap: kernel {release} was built with {theirs}, but this system's rustc is {ours}; install the rustc the kernel was built with.")
}

/// A kernel release that is not the pinned one, for the mismatch check: its fake headers
/// package says version [`FAKE_VERSION`], while linux-source is the pinned version.
const FAKE_RELEASE: &str = "7.2.0+dmremaptest-amd64";
const FAKE_VERSION: &str = "7.2.0-0dmremaptest";
/// The subject DKMS gives the signing key it generates.
const DKMS_SIGNER: &str = "DKMS module signing key";

fn root_sh(paths: &Paths, script: &str) -> Result<String> {
    in_root_output(paths, Path::new("/"), "sh", &["-c", script])
}

/// Runs a shell script in the build root; its exit status and combined output.
fn root_sh_status(paths: &Paths, script: &str) -> Result<(bool, String)> {
    let mut c = chroot_cmd(paths, Path::new("/"), "sh")?;
    c.args(["-c", &format!("({script}) 2>&1")]);
    let out = c.output().context("running a shell in the build root")?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Installs in the build root the pinned kernel's headers and linux-source from the
/// packages xtask downloaded (apt fetches their small dependencies: linux-base-<release>,
/// gcc-14-for-host), so that DKMS builds against them as on an operator's machine. Once.
fn install_kernel_packages(paths: &Paths) -> Result<()> {
    let rel = crate::debian::release();
    let pin = crate::debian::PIN.version;
    let have = |p: &str| {
        in_root_output(paths, Path::new("/"), "dpkg-query", &["-W", "-f=${db:Status-Status} ${Version}", p])
            .map(|s| s == format!("installed {pin}"))
            .unwrap_or(false)
    };
    let pkgs = [
        format!("linux-headers-{rel}"),
        format!("linux-headers-{}-common", crate::debian::PIN.abi),
        format!("linux-kbuild-{}", crate::debian::PIN.abi),
        crate::debian::source_pkg(),
    ];
    if pkgs.iter().all(|p| have(p)) {
        return Ok(());
    }
    crate::debian::fetch(paths)?;
    crate::debian::add_backports(paths)?;
    step(format!("installing {} in the build root", pkgs.join(" ")));
    let debs: Vec<String> = pkgs.iter().map(|p| crate::debian::deb_path(paths, p).map(|d| d.display().to_string())).collect::<Result<_>>()?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(debs.iter().map(String::as_str));
    in_root(paths, Path::new("/"), "apt-get", &args)
}

/// A headers package `linux-headers-<release>` of version `version` holding `config` as its
/// `.config`, an `include/` and the `/usr/lib/modules/<release>/build` link DKMS looks for.
fn fake_headers_deb(paths: &Paths, release: &str, version: &str, config: &str) -> Result<PathBuf> {
    let pkg = format!("linux-headers-{release}");
    let tree = fresh_tree(paths, &pkg)?;
    let hdr = format!("usr/src/linux-headers-{release}");
    put(&tree, &format!("{hdr}/.config"), config.as_bytes(), 0o644)?;
    put(&tree, &format!("{hdr}/include/README"), b"Fake headers for dm-remap's DKMS refusal tests.\n", 0o644)?;
    let link = tree.join(format!("usr/lib/modules/{release}/build"));
    std::fs::create_dir_all(link.parent().context("no parent")?)?;
    std::os::unix::fs::symlink(format!("/{hdr}"), &link)?;
    put(&tree, "DEBIAN/control", format!("Package: {pkg}\nVersion: {version}\nArchitecture: amd64\nMaintainer: {MAINTAINER}\nDescription: fake headers for dm-remap's DKMS refusal tests\n").as_bytes(), 0o644)?;
    let deb = stage(paths).join(format!("{pkg}.deb"));
    in_root(paths, Path::new("/"), "dpkg-deb", &["--root-owner-group", "--build", &tree.display().to_string(), &deb.display().to_string()])?;
    Ok(deb)
}

/// What `dkms build` did for a fake kernel.
struct FakeBuild {
    status: i32,
    output: String,
    /// The last `dm-remap: ` line of make.log, if the build step ran.
    refusal: String,
}

/// Installs fake headers (`release`, `version`, `config`), runs `dkms build` for them, and
/// removes them again.
fn fake_kernel_build(paths: &Paths, release: &str, version: &str, config: &str) -> Result<FakeBuild> {
    let deb = fake_headers_deb(paths, release, version, config)?;
    let pkg = format!("linux-headers-{release}");
    let log = format!("/var/lib/dkms/{DKMS_NAME}/{VERSION}/build/make.log");
    root_sh(paths, &format!("rm -f {log}"))?;
    in_root(paths, Path::new("/"), "dpkg", &["-i", &deb.display().to_string()])?;
    let mut c = chroot_cmd(paths, Path::new("/"), "sh")?;
    c.args(["-c", &format!("dkms build -m {DKMS_NAME} -v {VERSION} -k {release} 2>&1")]);
    let out = c.output().context("running dkms build")?;
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    let log_text = root_sh(paths, &format!("cat {log} 2>/dev/null || true"))?;
    let cleanup = root_sh_status(paths, &format!("dkms remove -m {DKMS_NAME} -v {VERSION} -k {release} >/dev/null 2>&1; dpkg --purge {pkg}"));
    println!("dkms build -k {release} (fake headers, version {version}):\n{output}make.log:\n{log_text}");
    cleanup?;
    let refusal = log_text.lines().rev().find(|l| l.starts_with("dm-remap: ")).unwrap_or("").to_string();
    Ok(FakeBuild { status: out.status.code().unwrap_or(-1), output, refusal })
}

/// The pinned kernel's `.config` with one line replaced.
fn edited_config(paths: &Paths, prefix: &str, line: &str) -> Result<String> {
    let config = std::fs::read_to_string(crate::debian::headers(paths).join(".config"))?;
    anyhow::ensure!(config.lines().any(|l| l.starts_with(prefix)), "the kernel's .config has no {prefix}");
    Ok(config.lines().map(|l| if l.starts_with(prefix) { line } else { l }).flat_map(|l| [l, "\n"]).collect())
}

/// `dkms build` for a kernel whose headers are version [`FAKE_VERSION`] while linux-source is
/// the pinned version: it must fail, with make.log ending in the documented sentence.
fn check_mismatch(paths: &Paths) -> Result<Option<String>> {
    let config = std::fs::read_to_string(crate::debian::headers(paths).join(".config"))?;
    let b = fake_kernel_build(paths, FAKE_RELEASE, FAKE_VERSION, &config)?;
    let want = mismatch_sentence(FAKE_RELEASE, FAKE_VERSION, crate::debian::PIN.version);
    Ok(refused(&b, &want))
}

fn refused(b: &FakeBuild, want: &str) -> Option<String> {
    if b.status == 0 {
        Some("dkms build succeeded".into())
    } else if b.refusal != want {
        Some(format!("dkms build failed (status {}), but with {:?}, not {want:?}", b.status, b.refusal))
    } else {
        None
    }
}

/// A kernel of the pinned version whose .config names another rustc: refused with the
/// rustc sentence. A kernel without CONFIG_RUST: DKMS skips it (status 77,
/// BUILD_EXCLUSIVE_CONFIG) without running the build step.
fn check_rustc_and_no_rust(paths: &Paths) -> Result<Option<String>> {
    let other = "rustc 1.84.1 (e71f9a9a9 2025-01-27) (built from a source tarball)";
    let rel = "7.2.11+dmremaptestrustc-amd64";
    let config = edited_config(paths, "CONFIG_RUSTC_VERSION_TEXT=", &format!("CONFIG_RUSTC_VERSION_TEXT=\"{other}\""))?;
    let b = fake_kernel_build(paths, rel, crate::debian::PIN.version, &config)?;
    let ours = in_root_output(paths, Path::new("/"), "rustc", &["--version"])?.trim().to_string();
    let want = rustc_sentence(rel, other, &ours);
    if let Some(why) = refused(&b, &want) {
        return Ok(Some(why));
    }
    let rel = "7.2.11+dmremaptestnorust-amd64";
    let config = edited_config(paths, "CONFIG_RUST=", "# CONFIG_RUST is not set")?;
    let b = fake_kernel_build(paths, rel, crate::debian::PIN.version, &config)?;
    let skip = format!(
        "Warning: The /var/lib/dkms/{DKMS_NAME}/{VERSION}/{rel}/x86_64/dkms.conf\nfor module {DKMS_NAME}/{VERSION} includes a BUILD_EXCLUSIVE directive\nwhich does not match this kernel/arch/config.\nThis indicates that it should not be built.\n"
    );
    Ok(if b.status != 77 || b.output != skip || !b.refusal.is_empty() {
        Some(format!("dkms build for a kernel without CONFIG_RUST: status {}, output {:?}; expected status 77 and {skip:?}", b.status, b.output))
    } else {
        None
    })
}

/// Installs dm-remap-dkms (its postinst builds and installs the module for the installed
/// kernels, as dh_dkms packages do), then runs `dkms build` and `dkms install` for the pinned
/// kernel; returns the installed module and its signer. The build root keeps the prepared Rust
/// metadata (/var/lib/dm-remap-dkms) between runs.
fn dkms_build_install(paths: &Paths, deb: &Path) -> Result<(PathBuf, String)> {
    let rel = crate::debian::release();
    let t = std::time::Instant::now();
    // Skipped when a package with the same files was built, installed and checked before and
    // DKMS still has the module installed. (The files, not the .deb: its changelog's date and
    // file times follow the commit.)
    let tree = stage(paths).join("deb/dm-remap-dkms");
    let mut h = Sha256::new();
    for f in files_under(&tree)? {
        if f.file_name().is_some_and(|n| n == "changelog.gz") {
            continue;
        }
        h.update(f.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(std::fs::read(tree.join(&f))?);
    }
    let hash = format!("{:x}\n{rel}\n", h.finalize());
    let stamp = stage(paths).join("dkms-test.stamp");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(hash.as_str()) {
        let status = root_sh(paths, &format!("dkms status -m {DKMS_NAME} -v {VERSION} -k {rel}")).unwrap_or_default();
        let copies: Vec<PathBuf> = std::fs::read_dir(stage(paths))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("dkms-dm-remap.ko")))
            .collect();
        if status.trim() == format!("{DKMS_NAME}/{VERSION}, {rel}, x86_64: installed") && copies.len() == 1 {
            let copy = copies[0].clone();
            let signer = in_root_output(paths, Path::new("/"), "modinfo", &["-F", "signer", &copy.display().to_string()])?.trim().to_string();
            step(format!("dm-remap-dkms unchanged since its last DKMS build and install ({}): reusing them", status.trim()));
            return Ok((copy, signer));
        }
    }
    let _ = std::fs::remove_file(&stamp);
    for e in std::fs::read_dir(stage(paths))?.flatten() {
        if e.file_name().to_string_lossy().starts_with("dkms-dm-remap.ko") {
            std::fs::remove_file(e.path())?;
        }
    }
    step("installing dm-remap-dkms in the build root (its postinst builds the module with DKMS)");
    in_root(paths, Path::new("/"), "apt-get", &["install", "-y", "-q", "--no-install-recommends", "--reinstall", &deb.display().to_string()])?;
    step(format!("dkms build and dkms install for {rel}"));
    in_root(paths, Path::new("/"), "dkms", &["build", "--force", "-m", DKMS_NAME, "-v", VERSION, "-k", &rel])?;
    in_root(paths, Path::new("/"), "dkms", &["install", "--force", "-m", DKMS_NAME, "-v", VERSION, "-k", &rel])?;
    let status = root_sh(paths, &format!("dkms status -m {DKMS_NAME} -v {VERSION} -k {rel}"))?;
    println!("{}", status.trim());
    let want = format!("{DKMS_NAME}/{VERSION}, {rel}, x86_64: installed");
    if status.trim() != want {
        bail!("dkms status says {:?}, not {want:?}", status.trim());
    }
    let found = root_sh(paths, &format!("ls /usr/lib/modules/{rel}/updates/dkms/"))?;
    let name = found.lines().find(|l| l.starts_with("dm-remap.ko")).context("dkms install left no dm-remap.ko* in updates/dkms")?;
    let inside = format!("/usr/lib/modules/{rel}/updates/dkms/{name}");
    let signer = root_sh(paths, &format!("modinfo -F signer {inside}"))?.trim().to_string();
    let copy = stage(paths).join(format!("dkms-{name}"));
    std::fs::copy(paths.root().join(inside.trim_start_matches('/')), &copy)?;
    std::fs::write(&stamp, hash)?;
    step(format!("DKMS build and install in {:.0} s", t.elapsed().as_secs_f64()));
    Ok((copy, signer))
}

/// The packaging test of `cargo xtask test`: lintian reports no errors; dkms refuses a
/// mismatched linux-source with its sentence; `dkms build` + `dkms install` against Debian's
/// headers give a signed module; on Debian's unmodified kernel in the VM, the packaged module
/// (by modprobe from its package path) and the DKMS-built one each load and register `remap`.
pub fn test(paths: &Paths) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    let pk = package(paths)?;
    let errors: Vec<&str> = pk.lintian.lines().filter(|l| l.starts_with("E: ")).collect();
    checks.push(Check { name: CHECKS[0], failure: (!errors.is_empty()).then(|| errors.join("; ")) });
    crate::setup::root_packages(paths, &["dkms"])?;
    install_kernel_packages(paths)?;
    // The package first: its postinst must not meet the fake kernel.
    let built = dkms_build_install(paths, &pk.dkms);
    checks.push(Check { name: CHECKS[1], failure: check_mismatch(paths).unwrap_or_else(|e| Some(format!("{e:#}"))) });
    checks.push(Check { name: CHECKS[2], failure: check_rustc_and_no_rust(paths).unwrap_or_else(|e| Some(format!("{e:#}"))) });
    let (dkms_ko, signer) = match built {
        Ok(b) => b,
        Err(e) => {
            checks.push(Check { name: CHECKS[3], failure: Some(format!("{e:#}")) });
            return Ok(checks);
        }
    };
    checks.push(Check {
        name: CHECKS[3],
        failure: (signer != DKMS_SIGNER).then(|| format!("modinfo -F signer says {signer:?}, not {DKMS_SIGNER:?}")),
    });
    let (a, b) = vm_load(paths, &pk.module, &dkms_ko)?;
    checks.push(Check { name: CHECKS[4], failure: a });
    checks.push(Check { name: CHECKS[5], failure: b });
    Ok(checks)
}

/// Boots Debian's kernel with both modules: the packaged one, installed at its package path
/// and loaded by modprobe after depmod, then the DKMS-built one the same way from
/// `updates/dkms/`. Each must register the `remap` target and unload; the kernel log must have
/// no BUG, WARNING or Oops. Returns the failures of the two checks. (The signer is checked in
/// the build root: the guest's kmod cannot read signatures without libcrypto, which the
/// initramfs does not carry.)
fn vm_load(paths: &Paths, module_deb: &Path, dkms_ko: &Path) -> Result<(Option<String>, Option<String>)> {
    let rel = crate::debian::release();
    let x = stage(paths).join("check-module");
    if x.exists() {
        std::fs::remove_dir_all(&x)?;
    }
    in_root(paths, Path::new("/"), "dpkg-deb", &["-x", &module_deb.display().to_string(), &x.display().to_string()])?;
    let pkg_ko = x.join(format!("usr/lib/modules/{rel}/updates/dm-remap.ko"));
    let dkms_name = dkms_ko.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("dkms-")).context("odd DKMS module name")?.to_string();
    let kdir = kernel::kernel(paths, Flavor::Debian72)?;
    let boot = kernel::boot(paths, Flavor::Debian72, &kdir)?;
    let script = format!(
        "m=/lib/modules/{rel}/updates\n\
         rmmod dm_remap\n\
         mkdir -p $m/dkms\n\
         cp /pkg/dm-remap.ko $m/dm-remap.ko\n\
         depmod -a {rel}\n\
         modprobe dm_remap && echo \"packaged: loaded $(modinfo -n dm_remap)\"\n\
         dmsetup targets | grep '^remap ' | sed 's/^/packaged: /'\n\
         rmmod dm_remap && echo 'packaged: unloaded'\n\
         rm $m/dm-remap.ko\n\
         cp /pkg/{dkms_name} $m/dkms/{dkms_name}\n\
         depmod -a {rel}\n\
         modprobe dm_remap && echo \"dkms: loaded $(modinfo -n dm_remap)\"\n\
         dmsetup targets | grep '^remap ' | sed 's/^/dkms: /'\n\
         rmmod dm_remap && echo 'dkms: unloaded'\n\
         dmesg | grep -E 'BUG|WARNING|Oops' | sed 's/^/dmesg: /'\n\
         true\n"
    );
    let script_file = stage(paths).join("vm-load.sh");
    std::fs::write(&script_file, script)?;
    let extra = vec![
        ("pkg/dm-remap.ko".to_string(), pkg_ko.clone()),
        (format!("pkg/{dkms_name}"), dkms_ko.to_path_buf()),
        ("pkg/load.sh".to_string(), script_file),
    ];
    let opts = crate::vm::VmOptions::new(boot, pkg_ko, extra, Some("sh /pkg/load.sh".into()), 300);
    let res = crate::vm::run(paths, &opts)?;
    let lines: Vec<&str> = res.console.lines().map(str::trim_end).collect();
    let trouble: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("dmesg: ")).collect();
    let expect = |who: &str, want: &[String]| -> Option<String> {
        let got: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with(&format!("{who}: "))).collect();
        if got != want.iter().map(String::as_str).collect::<Vec<_>>() {
            return Some(format!("the VM printed {got:?}, expected {want:?}"));
        }
        (!trouble.is_empty()).then(|| format!("kernel log: {trouble:?}"))
    };
    let target = remap_target_line();
    let a = expect(
        "packaged",
        &[format!("packaged: loaded /lib/modules/{rel}/updates/dm-remap.ko"), format!("packaged: {target}"), "packaged: unloaded".into()],
    );
    let b = expect(
        "dkms",
        &[
            format!("dkms: loaded /lib/modules/{rel}/updates/dkms/{dkms_name}"),
            format!("dkms: {target}"),
            "dkms: unloaded".into(),
        ],
    );
    Ok((a, b))
}

/// `dmsetup targets`' line for dm-remap (`%-16s v%u.%u.%u`): the target's version is the
/// project's (src/logic VERSION).
fn remap_target_line() -> String {
    format!("{:<16} v{VERSION}", "remap")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/install.md shows the refusal the test expects, word for word, and dkms-build
    /// prints it from the same words.
    #[test]
    fn mismatch_sentence_is_documented_and_printed() {
        let want = mismatch_sentence(FAKE_RELEASE, FAKE_VERSION, crate::debian::PIN.version);
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/install.md")).unwrap();
        assert!(doc.lines().any(|l| l == want), "docs/install.md lacks {want:?}");
        let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/dkms/dkms-build")).unwrap();
        assert!(script.contains(
            "\"kernel $krel needs $srcpkg version $kver exactly, but ${sver:-no version} is installed; install $srcpkg=$kver.\""
        ));
        let rustc = rustc_sentence(
            "7.2.11+dmremaptestrustc-amd64",
            "rustc 1.84.1 (e71f9a9a9 2025-01-27) (built from a source tarball)",
            "rustc 1.85.1 (4eb161250 2025-03-15) (built from a source tarball)",
        );
        assert!(doc.lines().any(|l| l == rustc), "docs/install.md lacks {rustc:?}");
        assert!(script.contains(
            "\"kernel $krel was built with $want_rustc, but this system's rustc is $have_rustc; install the rustc the kernel was built with.\""
        ));
    }

    #[test]
    fn target_line_is_dmsetups_format() {
        assert_eq!(remap_target_line(), format!("remap            v{VERSION}"));
    }
}
