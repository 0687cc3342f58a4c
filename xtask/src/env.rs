//! Where things live and how commands run inside the trixie build root.
//!
//! The build root is a Debian trixie tree made by debootstrap. Commands run in it with
//! `chroot`, after this process has moved into a private mount namespace and bind-mounted
//! /proc, /sys, /dev, /dev/pts, the repository and the cache at their host paths. The mounts
//! belong to that namespace only, so they disappear when xtask exits, however it exits.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Environment variable that overrides the cache directory.
pub const CACHE_ENV: &str = "DM_REMAP_CACHE";

/// The project's paths.
pub struct Paths {
    /// Repository root (the workspace root).
    pub repo: PathBuf,
    /// Cache root, outside the repository.
    pub cache: PathBuf,
}

impl Paths {
    pub fn new() -> Result<Self> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has no parent directory")?
            .to_path_buf();
        let cache = match std::env::var_os(CACHE_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => {
                let home = std::env::var_os("HOME").context("HOME is not set; set DM_REMAP_CACHE")?;
                PathBuf::from(home).join(".cache/dm-remap")
            }
        };
        let cache = absolute(&cache)?;
        if cache.starts_with(&repo) {
            bail!("the cache {} must be outside the repository", cache.display());
        }
        Ok(Self { repo, cache })
    }

    /// The trixie build root.
    pub fn root(&self) -> PathBuf {
        self.cache.join("trixie")
    }

    /// Output directory under the repository's `target/`.
    pub fn target(&self) -> PathBuf {
        self.repo.join("target")
    }
}

pub fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

/// Runs a host command, failing with its name if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed ({status})", display_cmd(cmd));
    }
    Ok(())
}

/// Runs a host command and returns its standard output.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{:?} failed ({})", display_cmd(cmd), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn display_cmd(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

static MOUNTED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Builds a command that runs `prog` inside the build root, in `cwd` (a host path that is
/// bind-mounted at the same place), with a clean environment.
pub fn chroot_cmd(paths: &Paths, cwd: &Path, prog: &str) -> Result<Command> {
    enter_namespace(paths)?;
    let mut c = Command::new("chroot");
    c.arg(paths.root())
        .arg("/usr/bin/env")
        .arg("-i")
        .arg("-C")
        .arg(cwd)
        .arg("HOME=/root")
        .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .arg("LANG=C.UTF-8")
        .arg("DEBIAN_FRONTEND=noninteractive")
        .arg(prog);
    Ok(c)
}

/// Moves this process into a private mount namespace and bind-mounts what the build root
/// needs. Done once per process.
fn enter_namespace(paths: &Paths) -> Result<()> {
    let r = MOUNTED.get_or_init(|| mount_all(paths).map_err(|e| format!("{e:#}")));
    match r {
        Ok(()) => Ok(()),
        Err(e) => bail!("cannot prepare the build root mounts: {e}"),
    }
}

fn mount_all(paths: &Paths) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS) (are you root?)")?;
    // Keep our mounts from propagating back to the host's namespace.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .context("making / private")?;
    let root = paths.root();
    let binds: [(&Path, bool); 6] = [
        (Path::new("/proc"), false),
        (Path::new("/sys"), false),
        (Path::new("/dev"), false),
        (Path::new("/dev/pts"), false),
        (&paths.repo, true),
        (&paths.cache, true),
    ];
    for (src, _) in binds {
        let dst = root.join(src.strip_prefix("/").unwrap_or(src));
        std::fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
        mount(Some(src), &dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("bind-mounting {} on {}", src.display(), dst.display()))?;
    }
    Ok(())
}

/// Runs a command inside the build root.
pub fn in_root(paths: &Paths, cwd: &Path, prog: &str, args: &[&str]) -> Result<()> {
    let mut c = chroot_cmd(paths, cwd, prog)?;
    c.args(args);
    run(&mut c)
}

/// Runs a command inside the build root and returns its standard output.
pub fn in_root_output(paths: &Paths, cwd: &Path, prog: &str, args: &[&str]) -> Result<String> {
    let mut c = chroot_cmd(paths, cwd, prog)?;
    c.args(args);
    output(&mut c)
}

/// Prints a progress line for the user.
pub fn step(msg: impl std::fmt::Display) {
    eprintln!("==> {msg}");
}

/// Runs `cmd` with its output going to `log`, printing a progress line every 30 s and the
/// log's tail if it fails. For long builds whose full output would drown the console.
pub fn run_logged(cmd: &mut Command, log: &Path, label: &str) -> Result<()> {
    use std::time::{Duration, Instant};
    let f = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let f2 = f.try_clone()?;
    let mut child = cmd
        .stdout(Stdio::from(f))
        .stderr(Stdio::from(f2))
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let start = Instant::now();
    let mut next = Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
        if start.elapsed() >= next {
            next += Duration::from_secs(30);
            let last = last_lines(log, 1);
            eprintln!("    {label}: {:>4}s  {}", start.elapsed().as_secs(), last.trim());
        }
    };
    if !status.success() {
        eprintln!("---- last lines of {} ----\n{}", log.display(), last_lines(log, 40));
        bail!("{label} failed ({status}); full log in {}", log.display());
    }
    Ok(())
}

/// The last `n` lines of a text file (empty if unreadable).
pub fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
