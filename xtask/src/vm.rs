//! `cargo xtask vm`: boots the test kernel in QEMU (TCG) with an initramfs that holds the
//! guest userland (from the build root), the module and the VM test runner.
//!
//! The guest's /init (tests/vm/init) loads dm-remap.ko, runs /cmd, and prints
//! `@@DMREMAP-EXIT <status>@@` before rebooting; with `-no-reboot` QEMU then exits. The
//! console is streamed and saved to target/vm/console.log (target/vm/<label>/ for a labelled
//! boot, whose console lines are also prefixed with `[label] `, so that boots on several
//! kernels can run side by side).

use crate::cpio::Cpio;
use crate::env::{chroot_cmd, in_root_output, step, Paths};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Guest binaries taken from the build root, besides busybox.
const GUEST_BINARIES: &[&str] = &[
    "/usr/sbin/dmsetup",
    "/usr/sbin/losetup",
    "/usr/sbin/blockdev",
    "/usr/sbin/blkdiscard",
    "/usr/bin/fio",
    "/usr/sbin/mkfs.ext4",
    "/usr/sbin/e2fsck",
];

const EXIT_MARKER: &str = crate::protocol::EXIT;

/// How to boot.
pub struct VmOptions {
    /// The kernel to boot (and a distro kernel's modules).
    pub kernel: crate::kernel::Boot,
    /// The module to load at boot.
    pub module: PathBuf,
    /// Extra host files to put in the guest root: (guest path, host path).
    pub extra: Vec<(String, PathBuf)>,
    /// Shell command line run by /init; `None` runs an interactive shell.
    pub cmd: Option<String>,
    /// Seconds before the VM is killed.
    pub timeout: u64,
    /// Deterministic instruction-counting mode for benchmarks.
    pub icount: bool,
    /// vCPUs in icount mode (1 unless set): QEMU then runs them round-robin on one thread,
    /// which stays deterministic.
    pub icount_vcpus: u32,
    /// Extra kernel command line.
    pub append: String,
    /// A raw disk image attached as /dev/vda (kept across boots).
    pub disk: Option<PathBuf>,
    /// Pull the plug: kill QEMU this long after the console first shows this text (the run
    /// then reports status [`KILLED`]).
    pub kill_on: Option<(String, Duration)>,
    /// A name for boots that run beside others: their files go to target/vm/<label>/ and
    /// their console lines are prefixed with `[label] `.
    pub label: Option<String>,
    /// An initramfs built elsewhere (the boot test's systemd root) instead of the test one.
    pub initrd: Option<PathBuf>,
    /// More QEMU arguments (the boot test's disks), after `disk`.
    pub qemu_args: Vec<String>,
}

impl VmOptions {
    /// A boot of `kernel` with `module` and the guest files `extra`, running `cmd` (`None`: a
    /// shell) for at most `timeout` seconds; no icount, no extra command line, no disk, no
    /// kill. The builder methods below change those.
    pub fn new(kernel: crate::kernel::Boot, module: PathBuf, extra: Vec<(String, PathBuf)>, cmd: Option<String>, timeout: u64) -> Self {
        Self {
            kernel,
            module,
            extra,
            cmd,
            timeout,
            icount: false,
            icount_vcpus: 1,
            append: String::new(),
            disk: None,
            kill_on: None,
            label: None,
            initrd: None,
            qemu_args: Vec::new(),
        }
    }

    /// Instruction counting (benchmarks).
    pub fn icount(self) -> Self {
        Self { icount: true, ..self }
    }

    /// Instruction counting with `n` vCPUs.
    pub fn icount_vcpus(self, n: u32) -> Self {
        Self { icount: true, icount_vcpus: n.max(1), ..self }
    }

    /// A disk image as /dev/vda, if any.
    pub fn disk(self, disk: Option<PathBuf>) -> Self {
        Self { disk, ..self }
    }

    /// Files in target/vm/<label>/, console lines prefixed with `[label] `.
    pub fn label(self, label: Option<String>) -> Self {
        Self { label, ..self }
    }

    /// Where this boot's files go.
    pub fn dir(&self, paths: &Paths) -> PathBuf {
        let d = paths.target().join("vm");
        match &self.label {
            Some(l) => d.join(l),
            None => d,
        }
    }

    /// Boot this initramfs instead of building the test one.
    pub fn initrd(self, initrd: PathBuf) -> Self {
        Self { initrd: Some(initrd), ..self }
    }

    /// Extra kernel command line.
    pub fn append(self, append: String) -> Self {
        Self { append, ..self }
    }

    /// More QEMU arguments (a disk image must be inside the repository or the cache).
    pub fn qemu_args(mut self, args: &[String]) -> Self {
        self.qemu_args.extend_from_slice(args);
        self
    }

    /// Kill QEMU this long after the console shows `text`, if any.
    pub fn kill_on(self, kill_on: Option<(String, Duration)>) -> Self {
        Self { kill_on, ..self }
    }
}

/// The status of a run whose QEMU was killed on purpose (`kill_on`).
pub const KILLED: i32 = -9;

/// The outcome of a boot.
pub struct VmResult {
    /// The guest command's exit status.
    pub status: i32,
    /// The whole console output.
    pub console: String,
}

/// The host's TSC rate in kHz, as /proc/cpuinfo's `cpu MHz` gives it (the TSC rate on
/// CPUs with a constant TSC, which is what virtual machines and recent x86 CPUs have).
fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info.lines().find(|l| l.starts_with("cpu MHz"))?.split(':').nth(1)?.trim().parse().ok()?;
    Some((mhz * 1000.0).round() as u64).filter(|&k| k > 0)
}

/// Quotes words for the guest's shell.
pub fn shell_join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=,+@%".contains(&b)) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds the initramfs for `opts` and returns its path.
fn initramfs(paths: &Paths, opts: &VmOptions) -> Result<PathBuf> {
    let root = paths.root();
    let out_dir = opts.dir(paths);
    std::fs::create_dir_all(&out_dir)?;
    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    for d in ["proc", "sys", "dev", "tmp", "run", "mnt", "root", "usr", "usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "etc"] {
        files.insert(d.into(), Entry::Dir);
    }
    // Merged /usr, as in Debian.
    for (l, t) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")] {
        files.insert(l.into(), Entry::Link(t.into()));
    }
    // Busybox applets first; the real binaries below replace the ones they overlap.
    let list = in_root_output(paths, Path::new("/"), "busybox", &["--list-full"])?;
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        files.insert(usr_path(applet), Entry::Link("/usr/bin/busybox".into()));
    }
    files.insert("usr/bin/busybox".into(), Entry::Host(root.join("usr/bin/busybox"), 0o755));
    let mut elfs: Vec<String> = GUEST_BINARIES.iter().map(|s| s.to_string()).collect();
    for (guest, host) in &opts.extra {
        files.insert(guest.trim_start_matches('/').into(), Entry::Host(host.clone(), 0o755));
        if is_dynamic_elf(host) {
            elfs.push(host.display().to_string());
        }
    }
    for b in GUEST_BINARIES {
        files.insert(usr_path(b), Entry::Host(root.join(b.trim_start_matches('/')), 0o755));
    }
    if let Some(m) = &opts.kernel.modules {
        // A distro kernel: its own modules (compressed .ko.xz, which busybox cannot load),
        // loaded by kmod's modprobe from the distro's modules.dep.
        files.insert("usr/bin/kmod".into(), Entry::Host(root.join("usr/bin/kmod"), 0o755));
        elfs.push("/usr/bin/kmod".into());
        for tool in ["modprobe", "insmod", "rmmod", "lsmod", "modinfo", "depmod"] {
            files.insert(format!("usr/sbin/{tool}"), Entry::Link("/usr/bin/kmod".into()));
            files.remove(&format!("usr/bin/{tool}"));
        }
        let dir = format!("usr/lib/modules/{}", m.release);
        for e in std::fs::read_dir(&m.dir).with_context(|| format!("reading {}", m.dir.display()))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("modules.") {
                files.insert(format!("{dir}/{name}"), Entry::Host(e.path(), 0o644));
            }
        }
        for f in &m.files {
            files.insert(format!("{dir}/{f}"), Entry::Host(m.dir.join(f), 0o644));
        }
        files.insert("modules.load".into(), Entry::Data(m.load.iter().flat_map(|n| [n.as_str(), "\n"]).collect::<String>().into_bytes()));
        for ko in &m.extra {
            let name = ko.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            files.insert(format!("extra/{name}"), Entry::Host(ko.clone(), 0o644));
        }
    }
    // Shared libraries, as the build root's ldd resolves them, with symlinks resolved.
    let args: Vec<&str> = elfs.iter().map(String::as_str).collect();
    let ldd = in_root_output(paths, Path::new("/"), "ldd", &args)?;
    let mut libs: Vec<String> = Vec::new();
    // With several files, ldd heads each list with "<file>:"; those lines are not libraries.
    for line in ldd.lines().filter(|l| !l.trim_end().ends_with(':')) {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            if !libs.iter().any(|l| l == p) {
                libs.push(p.to_string());
            }
        }
    }
    let mut rp_args = vec!["-e"];
    rp_args.extend(libs.iter().map(String::as_str));
    let real = in_root_output(paths, Path::new("/"), "realpath", &rp_args)?;
    for (lib, real) in libs.iter().zip(real.lines()) {
        files.insert(usr_path(lib), Entry::Host(root.join(real.trim_start_matches('/')), 0o755));
    }
    for ko in &opts.kernel.ondemand {
        let name = ko.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        files.insert(format!("ondemand/{name}"), Entry::Host(ko.clone(), 0o644));
    }
    files.insert("dm-remap.ko".into(), Entry::Host(opts.module.clone(), 0o644));
    files.insert("init".into(), Entry::Host(paths.repo.join("tests/vm/init"), 0o755));
    let cmd = opts.cmd.clone().unwrap_or_default();
    files.insert("cmd".into(), Entry::Data(format!("{cmd}\n").into_bytes()));
    files.insert("etc/passwd".into(), Entry::Data(b"root:x:0:0:root:/root:/bin/sh\n".to_vec()));

    // The kernel's unpacker does not create missing parent directories.
    let parents: Vec<String> = files
        .keys()
        .flat_map(|k| {
            let parts: Vec<&str> = k.split('/').collect();
            (1..parts.len()).map(move |i| parts[..i].join("/"))
        })
        .collect();
    for p in parents {
        files.entry(p).or_insert(Entry::Dir);
    }
    let mut cpio = Cpio::default();
    cpio.dir("dev");
    cpio.chardev("dev/console", 5, 1);
    // Parents first: BTreeMap order puts "usr" before "usr/bin/...".
    for (name, e) in &files {
        match e {
            Entry::Dir => cpio.dir(name),
            Entry::Link(t) => cpio.symlink(name, t),
            Entry::Data(d) => cpio.file(name, 0o755, d),
            Entry::Host(p, perm) => {
                let data = std::fs::read(p).with_context(|| format!("reading {} for the initramfs", p.display()))?;
                cpio.file(name, *perm, &data);
            }
        }
    }
    let path = out_dir.join("initramfs.cpio");
    let f = std::fs::File::create(&path)?;
    cpio.write_to(std::io::BufWriter::new(f))?;
    Ok(path)
}

enum Entry {
    Dir,
    Link(String),
    Data(Vec<u8>),
    Host(PathBuf, u32),
}

/// `/bin/x` -> `usr/bin/x` (merged /usr), without the leading slash.
fn usr_path(p: &str) -> String {
    let p = p.trim_start_matches('/');
    for (from, to) in [("bin/", "usr/bin/"), ("sbin/", "usr/sbin/"), ("lib/", "usr/lib/"), ("lib64/", "usr/lib64/")] {
        if let Some(rest) = p.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    p.to_string()
}

fn is_dynamic_elf(p: &Path) -> bool {
    std::fs::read(p).map(|d| d.starts_with(b"\x7fELF") && d.windows(8).any(|w| w == b"ld-linux")).unwrap_or(false)
}

/// Boots the VM and waits for the guest command.
///
/// A boot of the test initramfs whose kernel dies before /init prints its first line (seen
/// once under TCG with two vCPUs: an `int3` Oops in the kernel's own start-up while it
/// patched its code) is booted again, once, and says so: nothing of dm-remap had run, the
/// module is loaded by /init. Any later death is reported as it is.
pub fn run(paths: &Paths, opts: &VmOptions) -> Result<VmResult> {
    match run_once(paths, opts)? {
        r if r.status == NO_INIT => {
            step("the guest kernel died before /init started (dm-remap was not loaded yet); booting again, once");
            match run_once(paths, opts)? {
                r if r.status == NO_INIT => bail!(
                    "the VM died twice before /init started (kernel panic in start-up?); console in {}",
                    opts.dir(paths).join("console.log").display()
                ),
                r => Ok(r),
            }
        }
        r => Ok(r),
    }
}

/// `run_once`'s status for a test-initramfs boot that died before /init printed its marker.
const NO_INIT: i32 = i32::MIN;

fn run_once(paths: &Paths, opts: &VmOptions) -> Result<VmResult> {
    let initrd = match &opts.initrd {
        Some(p) => p.clone(),
        None => initramfs(paths, opts)?,
    };
    let bzimage = &opts.kernel.image;
    // A boot with its own initrd (the boot test) has not made its directory yet.
    std::fs::create_dir_all(opts.dir(paths))?;
    let log_path = opts.dir(paths).join("console.log");
    let prefix = opts.label.as_ref().map(|l| format!("[{l}] ")).unwrap_or_default();
    let interactive = opts.cmd.is_none();
    // tsc=reliable: the TSC clocksource from the start (no watchdog wait), so I/O latencies
    // measured early in a boot are not rounded to the jiffy of a coarse clock.
    // no_timer_check: the boot-time check that timer interrupts arrive through the IO-APIC
    // fails when the host is busy (two TCG guests side by side, other jobs) and panics the
    // guest ("IO-APIC + timer doesn't work!"); virtual machines commonly skip it.
    // log_buf_len: the tests judge every line the kernel logs during each test, and a test
    // that makes it log thousands (generated table lines, injected allocation failures)
    // overflowed the default 128 KiB ring buffer before the runner read it.
    let mut append = String::from("console=ttyS0 panic=-1 quiet tsc=reliable no_timer_check log_buf_len=4M");
    // Under TCG the guest's TSC is the host's, but the guest cannot calibrate it (no HPET or
    // PM timer without ACPI; the PIT check fails under load) and falls back to 4 ms jiffies.
    // Tell it the rate. (In icount mode the TSC counts virtual nanoseconds instead.)
    if !opts.icount {
        if let Some(khz) = host_tsc_khz() {
            append.push_str(&format!(" tsc_early_khz={khz}"));
        }
    }
    if !opts.append.is_empty() {
        append.push(' ');
        append.push_str(&opts.append);
    }
    let mut c = chroot_cmd(paths, &paths.repo, "qemu-system-x86_64")?;
    c.args(["-accel", "tcg", "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot"])
        .args(["-m", "2048"])
        .arg("-kernel")
        .arg(bzimage)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(&append);
    if let Some(d) = &opts.disk {
        // QEMU runs in the build root, which sees only the repository and the cache.
        let d = &crate::env::absolute(d)?;
        if !(d.starts_with(&paths.repo) || d.starts_with(&paths.cache)) {
            bail!("the disk image {} must be inside the repository or the cache, which the VM's root can see", d.display());
        }
        c.arg("-drive").arg(format!("file={},format=raw,if=virtio", d.display()));
    }
    c.args(&opts.qemu_args);
    if opts.icount {
        // Guest time counts instructions: fio's figures repeat to ~0.1% (needs one vCPU).
        c.args(["-smp", &opts.icount_vcpus.to_string(), "-icount", "shift=0,sleep=off", "-cpu", "max"]);
    } else {
        c.args(["-smp", "2", "-cpu", "max"]);
    }
    c.stdin(if interactive { Stdio::inherit() } else { Stdio::null() });
    c.stdout(Stdio::piped()).stderr(Stdio::inherit());
    // QEMU dies with xtask, whatever kills xtask, so no VM is ever left behind.
    // SAFETY: the closure only calls prctl(PR_SET_PDEATHSIG), which is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        c.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    step(format!("booting the VM (timeout {} s, console log {})", opts.timeout, log_path.display()));
    let mut child = c.spawn().context("cannot start QEMU")?;
    let stdout = child.stdout.take().context("no QEMU stdout")?;
    let console = Arc::new(Mutex::new(String::new()));
    let status: Arc<Mutex<Option<i32>>> = Arc::new(Mutex::new(None));
    let reader = {
        let console = console.clone();
        let status = status.clone();
        let mut log = std::fs::File::create(&log_path)?;
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line).map(|n| n > 0).unwrap_or(false) {
                let text = String::from_utf8_lossy(&line).replace('\r', "");
                let _ = log.write_all(text.as_bytes());
                if let Some(rest) = text.trim().strip_prefix(EXIT_MARKER) {
                    if let Ok(n) = rest.trim_end_matches('@').trim().parse() {
                        *status.lock().unwrap_or_else(|e| e.into_inner()) = Some(n);
                    }
                } else {
                    print!("{prefix}{text}");
                    let _ = std::io::stdout().flush();
                }
                console.lock().unwrap_or_else(|e| e.into_inner()).push_str(&text);
                line.clear();
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(opts.timeout);
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    let timed_out = loop {
        if child.try_wait()?.is_some() {
            break false;
        }
        if let Some((text, after)) = &opts.kill_on {
            if kill_at.is_none() && console.lock().unwrap_or_else(|e| e.into_inner()).contains(text.as_str()) {
                kill_at = Some(Instant::now() + *after);
            }
            if kill_at.is_some_and(|t| Instant::now() >= t) {
                let _ = child.kill();
                let _ = child.wait();
                killed = true;
                break false;
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    let console = std::mem::take(&mut *console.lock().unwrap_or_else(|e| e.into_inner()));
    if killed {
        return Ok(VmResult { status: KILLED, console });
    }
    if timed_out {
        bail!("the VM did not finish within {} s and was killed; console in {}", opts.timeout, log_path.display());
    }
    let status = *status.lock().unwrap_or_else(|e| e.into_inner());
    match status {
        Some(status) => Ok(VmResult { status, console }),
        None if opts.initrd.is_none() && !console.contains(crate::protocol::INIT) => Ok(VmResult { status: NO_INIT, console }),
        None => bail!(
            "the VM stopped without reporting the guest's exit status (kernel panic?); console in {}",
            log_path.display()
        ),
    }
}
