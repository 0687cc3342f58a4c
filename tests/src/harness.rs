//! What every VM test stands on: commands, loop and dm devices that clean up after
//! themselves (even when the test fails), direct I/O, and the kernel log.

use anyhow::{bail, ensure, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::Command;

/// Runs a program; returns its stdout, or fails with its stderr.
pub fn cmd(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog).args(args).output().with_context(|| format!("cannot run {prog}"))?;
    if !out.status.success() {
        bail!(
            "`{prog} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `dmsetup message <name> 0 <words...>`: the reply, without its trailing newline.
pub fn msg(name: &str, words: &[&str]) -> Result<String> {
    let mut args = vec!["message", name, "0"];
    args.extend_from_slice(words);
    Ok(dmsetup(&args)?.trim_end().to_string())
}

/// Runs a program that is expected to fail; returns its stderr, or fails if it succeeded.
pub fn cmd_fails(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog).args(args).output().with_context(|| format!("cannot run {prog}"))?;
    if out.status.success() {
        bail!("`{prog} {}` succeeded but should have failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `dmsetup ARGS...`.
pub fn dmsetup(args: &[&str]) -> Result<String> {
    cmd("dmsetup", args)
}

/// A loop device over a sparse file in /tmp; detached and deleted on drop.
pub struct LoopDev {
    /// `/dev/loopN`.
    pub path: String,
    file: String,
}

impl LoopDev {
    /// A new loop device of `bytes` bytes (zero-filled).
    pub fn new(tag: &str, bytes: u64) -> Result<Self> {
        let file = format!("/tmp/{tag}.img");
        File::create(&file)?.set_len(bytes)?;
        let path = match cmd("losetup", &["-f", "--show", &file]) {
            Ok(p) => p.trim().to_string(),
            Err(e) => {
                let _ = std::fs::remove_file(&file);
                return Err(e);
            }
        };
        Ok(Self { path, file })
    }

    /// `major:minor` of the loop device.
    pub fn devno(&self) -> Result<String> {
        let name = self.path.trim_start_matches("/dev/");
        Ok(std::fs::read_to_string(format!("/sys/block/{name}/dev"))?.trim().to_string())
    }

    /// Size in 512-byte sectors.
    pub fn sectors(&self) -> Result<u64> {
        Ok(cmd("blockdev", &["--getsz", &self.path])?.trim().parse()?)
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = cmd("losetup", &["-d", &self.path]);
        let _ = std::fs::remove_file(&self.file);
    }
}

/// A device-mapper device; removed on drop.
pub struct DmDev {
    /// The dm name.
    pub name: String,
    /// `/dev/mapper/<name>`.
    pub path: String,
}

impl DmDev {
    /// `dmsetup create NAME --table TABLE`.
    pub fn create(name: &str, table: &str) -> Result<Self> {
        dmsetup(&["create", name, "--table", table])?;
        Ok(Self { name: name.into(), path: format!("/dev/mapper/{name}") })
    }
}

impl Drop for DmDev {
    fn drop(&mut self) {
        if let Err(e) = dmsetup(&["remove", "--retry", &self.name]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// Whether a dm device of this name exists.
pub fn dm_exists(name: &str) -> bool {
    dmsetup(&["info", name]).is_ok()
}

/// A buffer aligned for O_DIRECT (4 KiB), without unsafe code: an over-sized vector and
/// the aligned window inside it.
pub struct Aligned {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    /// A zeroed aligned buffer of `len` bytes.
    pub fn new(len: usize) -> Self {
        let buf = vec![0u8; len + 4096];
        let off = buf.as_ptr().align_offset(4096);
        Self { buf, off, len }
    }

    /// An aligned copy of `data`.
    pub fn from(data: &[u8]) -> Self {
        let mut a = Self::new(data.len());
        a.as_mut().copy_from_slice(data);
        a
    }

    /// The bytes.
    pub fn as_ref(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.len]
    }

    /// The bytes, writable.
    pub fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

fn open_direct(path: &str, write: bool) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(write).custom_flags(libc::O_DIRECT).open(path)
}

/// Writes `data` at byte `offset` with O_DIRECT, then fsyncs.
pub fn write_at(path: &str, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let f = open_direct(path, true)?;
    f.write_all_at(Aligned::from(data).as_ref(), offset)?;
    f.sync_all()
}

/// Reads `len` bytes at byte `offset` with O_DIRECT (so the device is really read).
pub fn read_at(path: &str, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let f = open_direct(path, false)?;
    let mut buf = Aligned::new(len);
    f.read_exact_at(buf.as_mut(), offset)?;
    Ok(buf.as_ref().to_vec())
}

/// Deterministic test data: distinct for each seed and position.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A small deterministic generator (xorshift), so a generated test can be replayed.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A number below `n` (0 if `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// One of `v`.
    pub fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len())]
    }
}

/// Fails unless `a == b`, showing both.
pub fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, a: T, b: T) -> Result<()> {
    if a != b {
        bail!("{what}: got {a:?}, expected {b:?}");
    }
    Ok(())
}

/// What the log reader puts where /dev/kmsg said records were overwritten before they were
/// read: a log with a hole cannot be judged, so it fails the test like a bug report would.
pub const KLOG_LOST: &str = "LOST: kernel log records were overwritten before the runner read them";

/// The kernel log, read record by record from /dev/kmsg.
pub struct Kmsg {
    f: File,
}

impl Kmsg {
    /// Opens the log; the first `drain` returns everything logged since boot.
    pub fn open() -> Result<Self> {
        let f = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg")?;
        Ok(Self { f })
    }

    /// The messages logged since the last call.
    pub fn drain(&mut self) -> Vec<String> {
        drain_records(&mut self.f)
    }
}

/// Reads /dev/kmsg-style records until the reader has none (EAGAIN or end); each record's
/// first line. An EPIPE (the reader fell behind the ring buffer and the kernel skipped it
/// ahead) leaves [`KLOG_LOST`] in place of what was lost.
fn drain_records(r: &mut impl Read) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                // "prio,seq,time,flags;message\n[ continuation lines]"
                if let Some((_, msg)) = rec.split_once(';') {
                    out.push(msg.lines().next().unwrap_or("").to_string());
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                if out.last().map(String::as_str) != Some(KLOG_LOST) {
                    out.push(KLOG_LOST.to_string());
                }
            }
            Err(_) => break,
        }
    }
    out
}

/// The runner's kernel log: one reader for the whole run, into which a test that makes the
/// kernel log a lot (an injected failure's stack dump per iteration) drains as it goes, with
/// [`klog_poll`], so the ring buffer never wraps before the runner judges the test's log.
static KLOG: std::sync::Mutex<Option<(Kmsg, Vec<String>)>> = std::sync::Mutex::new(None);

/// Opens the runner's log reader (once, before the first test).
pub fn klog_open() -> Result<()> {
    let k = Kmsg::open()?;
    *KLOG.lock().unwrap_or_else(|e| e.into_inner()) = Some((k, Vec::new()));
    Ok(())
}

/// Moves what the kernel logged since the last poll into the runner's buffer; does nothing
/// before [`klog_open`].
pub fn klog_poll() {
    if let Some((k, lines)) = KLOG.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        lines.extend(k.drain());
    }
}

/// Everything logged since the last take (polling first), emptying the buffer.
pub fn klog_take() -> Vec<String> {
    klog_poll();
    KLOG.lock().unwrap_or_else(|e| e.into_inner()).as_mut().map(|(_, l)| std::mem::take(l)).unwrap_or_default()
}

/// Kernel log lines that fail any test: the kernel found a bug.
pub fn is_kernel_bug(line: &str) -> bool {
    const BAD: &[&str] = &[
        "BUG:", "BUG ", "WARNING:", "Oops", "UBSAN", "Call Trace",
        // KASAN reports are "BUG: KASAN: ..."; lockdep reports are WARNINGs or INFOs.
        "circular locking", "recursive locking", "inconsistent lock state", "INFO: ",
        // (kmemleak's "new suspected memory leaks" is judged by the kmemleak test, which
        // tells dm-remap's leaks from the rest of the kernel's.)
        "panicked", "general protection fault",
        "scheduling while atomic", "sleeping function called from invalid context",
        KLOG_LOST,
    ];
    BAD.iter().any(|b| line.contains(b))
}

/// The kernel-log lines that report a bug, each with the four lines before it (what the
/// kernel was saying when it happened); empty if none.
pub fn bug_reports(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut shown = 0;
    for (i, l) in lines.iter().enumerate() {
        // A failed cache creation dumps the stack: the slab allocator's report of an
        // allocation that failed (injected by the failslab test), not a bug.
        let expected = l.contains("Call Trace:")
            && lines[i.saturating_sub(4)..i].iter().any(|p| p.contains("__kmem_cache_create_args(") && p.contains("failed with error"));
        if is_kernel_bug(l) && !expected {
            for c in &lines[i.saturating_sub(4).max(shown)..=i] {
                out.push(c.clone());
            }
            shown = i + 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bug_reports_carry_context() {
        let l: Vec<String> = ["a", "b", "c", "WARNING: x", "Call Trace:", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(bug_reports(&l), vec!["a", "b", "c", "WARNING: x", "Call Trace:"]);
        assert!(bug_reports(&l[..3]).is_empty());
        let l: Vec<String> = ["__kmem_cache_create_args(bio-328) failed with error -12", "CPU: 0", "Call Trace:"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(bug_reports(&l).is_empty(), "an injected allocation failure's stack dump");
    }

    /// A reader that returns its records one per read, an EPIPE where `None` stands, then
    /// EAGAIN, as /dev/kmsg opened non-blocking does.
    struct FakeKmsg(std::collections::VecDeque<Option<&'static str>>);

    impl Read for FakeKmsg {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.pop_front() {
                Some(Some(r)) => {
                    buf[..r.len()].copy_from_slice(r.as_bytes());
                    Ok(r.len())
                }
                Some(None) => Err(std::io::Error::from_raw_os_error(libc::EPIPE)),
                None => Err(std::io::Error::from_raw_os_error(libc::EAGAIN)),
            }
        }
    }

    #[test]
    fn overwritten_records_fail_the_log() {
        let mut r = FakeKmsg([Some("6,1,0,-;a\n"), None, None, Some("6,9,0,-;Call Trace:\n SUBSYSTEM=x\n")].into());
        let l = drain_records(&mut r);
        assert_eq!(l, vec!["a", KLOG_LOST, "Call Trace:"]);
        // The lost records may have held the line that excused the stack dump: never excused.
        assert_eq!(bug_reports(&l), vec!["a", KLOG_LOST, "Call Trace:"]);
        let mut r = FakeKmsg([Some("6,1,0,-;a\n"), Some("6,2,0,-;b\n")].into());
        assert!(bug_reports(&drain_records(&mut r)).is_empty());
    }

    #[test]
    fn kernel_bug_lines() {
        assert!(is_kernel_bug("BUG: KASAN: slab-use-after-free in dm_remap_map+0x10"));
        assert!(is_kernel_bug("WARNING: CPU: 0 PID: 1 at drivers/md/dm.c:123 foo"));
        assert!(is_kernel_bug("Oops: general protection fault, probably for non-canonical address"));
        assert!(is_kernel_bug("WARNING: possible circular locking dependency detected"));
        assert!(!is_kernel_bug("device-mapper: table: 252:0: remap: Unknown feature argument (-22)"));
        assert!(!is_kernel_bug("EXT4-fs (dm-0): mounted filesystem with ordered data mode"));
        assert!(is_kernel_bug("INFO: task kworker/0:1:23 blocked for more than 120 seconds."));
        // What the debug kernel says at every boot.
        assert!(!is_kernel_bug("rcu: \tRCU lockdep checking is enabled."));
        assert!(!is_kernel_bug("kmemleak: Kernel memory leak detector initialized (mem pool available: 15153)"));
        assert!(!is_kernel_bug("kmemleak: Automatic memory scanning thread started"));
        assert!(!is_kernel_bug("KASAN: KernelAddressSanitizer initialized (generic)"));
    }

    #[test]
    fn pattern_is_deterministic_and_seeded() {
        assert_eq!(pattern(1, 64), pattern(1, 64));
        assert_ne!(pattern(1, 64), pattern(2, 64));
        assert!(pattern(1, 4096).iter().any(|&b| b != 0));
    }

    #[test]
    fn aligned_buffers_are_aligned() {
        for len in [512, 4096, 12345] {
            let a = Aligned::new(len);
            assert_eq!(a.as_ref().as_ptr() as usize % 4096, 0);
            assert_eq!(a.as_ref().len(), len);
        }
    }
}

/// dm devices and attached loop devices that exist now (a test must leave none).
pub fn leftover_devices() -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(ls) = dmsetup(&["ls"]) {
        v.extend(ls.lines().filter(|l| !l.contains("No devices found") && !l.trim().is_empty()).map(|l| {
            format!("dm {}", l.split_whitespace().next().unwrap_or(""))
        }));
    }
    if let Ok(lo) = cmd("losetup", &["-a"]) {
        v.extend(lo.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("loop {l}")));
    }
    v
}

/// The fields `dmsetup status` prints after `<start> <len> <target>`.
pub use dm_remap_logic::args::LineSpec;

/// Polls `cond` every 20 ms for up to `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if cond()? {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    anyhow::bail!("timed out after {secs} s waiting for {what}")
}

/// Waits up to `secs` for a child to exit; kills it and fails (`what` says what was awaited)
/// if it does not.
pub fn wait_child(child: &mut std::process::Child, secs: u64, what: &str) -> Result<std::process::ExitStatus> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `0 <len> remap <spec>`: a dm-remap table line, printed by the one codec
/// (`dm_remap_logic::args`).
pub fn remap_table(len: u64, spec: LineSpec<'_>) -> String {
    format!("0 {len} remap {spec}")
}

/// The device's status through the one parser (`dm_remap_logic::status`), e.g.
/// `status_of(name, |s| s.remaps)?`: fields by name, never by position.
pub fn status_of<T>(name: &str, f: impl FnOnce(&dm_remap_logic::status::Status<'_>) -> T) -> Result<T> {
    let out = dmsetup(&["status", name])?;
    let s = dm_remap_logic::status::Status::parse(&out).map_err(|e| anyhow::anyhow!("{name}: {e}: {out:?}"))?;
    Ok(f(&s))
}

/// The status fields as words, for comparing whole lines (`status_of` for single fields).
pub fn status_fields(name: &str) -> Result<Vec<String>> {
    let out = dmsetup(&["status", name])?;
    Ok(out.split_whitespace().skip(3).map(str::to_string).collect())
}

/// `/sys/block/dm-N` name of a dm device.
pub fn dm_blkdev(name: &str) -> Result<String> {
    Ok(dmsetup(&["info", "-c", "--noheadings", "-o", "blkdevname", name])?.trim().to_string())
}

/// (sectors read, sectors written) by a block device, from /sys/block/<dev>/stat. Data
/// only: empty flushes move neither.
pub fn io_counts(blkdev: &str) -> Result<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/sys/block/{blkdev}/stat"))?;
    let f: Vec<u64> = s.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    ensure_len(&f, 7)?;
    Ok((f[2], f[6]))
}

fn ensure_len<T>(v: &[T], n: usize) -> Result<()> {
    if v.len() < n {
        bail!("expected at least {n} fields");
    }
    Ok(())
}

/// dm's event counter of a device (what `dmsetup wait` waits on).
pub fn event_nr(name: &str) -> Result<u64> {
    Ok(dmsetup(&["info", "-c", "--noheadings", "-o", "events", name])?.trim().parse()?)
}

/// A main device whose listed 4 KiB blocks fail every read and write: dm-linear over a loop
/// device with dm-error over the bad ranges (as a disk with unreadable, unwritable sectors).
pub struct BadMain {
    /// The composite device (declared first: removed before the loop device goes).
    pub dm: DmDev,
    /// The loop device underneath (its data at the bad blocks is whatever was there).
    pub lo: LoopDev,
}

impl BadMain {
    /// `bytes` of device with the 4 KiB blocks in `bad` (sorted, each `(first, count)`) failing.
    pub fn new(tag: &str, bytes: u64, bad: &[(u64, u64)]) -> Result<Self> {
        let lo = LoopDev::new(tag, bytes)?;
        let dm = bad_device(&format!("{tag}-main"), &lo.path, bytes / 512, bad)?;
        Ok(Self { dm, lo })
    }

    /// `/dev/mapper/...` of the composite device.
    pub fn path(&self) -> &str {
        &self.dm.path
    }
}

/// The first `sectors` of `base`, with the 4 KiB blocks in `bad` failing every I/O.
pub fn bad_device(name: &str, base: &str, sectors: u64, bad: &[(u64, u64)]) -> Result<DmDev> {
    DmDev::create(name, &bad_table(base, sectors, bad))
}

/// The dm table of `bad_device`.
pub fn bad_table(base: &str, sectors: u64, bad: &[(u64, u64)]) -> String {
    {
        let mut lines = Vec::new();
        let mut at = 0u64;
        for &(first, count) in bad {
            let (s, n) = (first * 8, count * 8);
            if s > at {
                lines.push(format!("{at} {} linear {base} {at}", s - at));
            }
            lines.push(format!("{s} {n} error"));
            at = s + n;
        }
        if at < sectors {
            lines.push(format!("{at} {} linear {base} {at}", sectors - at));
        }
        lines.join("\n")
    }
}

/// The pool layout a spare of this many bytes gets with 4 KiB blocks.
pub fn geometry(spare_bytes: u64) -> Result<dm_remap_logic::format::Geometry> {
    dm_remap_logic::format::Geometry::compute(spare_bytes, 4096).context("spare too small")
}

/// A dm-log-writes entry: sector, sectors, flags (`LW_*`), mark text.
pub struct LwEntry {
    pub sector: u64,
    pub nr: u64,
    pub flags: u64,
    pub mark: String,
}

/// dm-log-writes entry flags.
pub const LW_DISCARD: u64 = 4;
pub const LW_MARK: u64 = 8;

/// The entries of a dm-log-writes log device, in log order.
pub fn log_writes_entries(log: &str) -> Result<Vec<LwEntry>> {
    let sup = read_at(log, 0, 512)?;
    let u64at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    ensure!(u64at(&sup, 0) == 0x6a736677736872, "no dm-log-writes superblock");
    let n = u64at(&sup, 16);
    let ss = u64::from(u32::from_le_bytes(sup[24..28].try_into()?));
    let mut at = ss;
    let mut out = Vec::new();
    for _ in 0..n {
        let e = read_at(log, at, ss as usize)?;
        let (sector, nr, flags, len) = (u64at(&e, 0), u64at(&e, 8), u64at(&e, 16), u64at(&e, 24) as usize);
        let mark = if flags & LW_MARK != 0 { String::from_utf8_lossy(&e[32..32 + len.min(ss as usize - 32)]).into_owned() } else { String::new() };
        out.push(LwEntry { sector, nr, flags, mark });
        at += ss;
        if flags & LW_DISCARD == 0 {
            at += nr * ss;
        }
    }
    Ok(out)
}

/// A kernel uevent listener (NETLINK_KOBJECT_UEVENT, the socket udev reads), opened before the
/// events it should see.
pub struct Uevents {
    fd: std::os::fd::OwnedFd,
}

impl Uevents {
    pub fn open() -> Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, libc::NETLINK_KOBJECT_UEVENT) };
        anyhow::ensure!(fd >= 0, "netlink socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a new descriptor nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_nl is valid; the fields are set below.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = 1; // the kernel's broadcast group
        let len = std::mem::size_of::<libc::sockaddr_nl>() as u32;
        // SAFETY: `sa` is a valid sockaddr_nl of `len` bytes.
        let r = unsafe { libc::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), (&sa as *const libc::sockaddr_nl).cast(), len) };
        anyhow::ensure!(r == 0, "netlink bind: {}", std::io::Error::last_os_error());
        Ok(Self { fd })
    }

    /// Every event received within `ms` milliseconds, each as its `KEY=value` fields (the
    /// first, `ACTION@devpath`, left out).
    pub fn drain(&self, ms: u64) -> Vec<Vec<String>> {
        let end = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        while std::time::Instant::now() < end {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(std::os::fd::AsRawFd::as_raw_fd(&self.fd), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
            let msg = &buf[..n as usize];
            let fields: Vec<String> = msg.split(|&b| b == 0).skip(1).filter(|f| !f.is_empty()).map(|f| String::from_utf8_lossy(f).into_owned()).collect();
            out.push(fields);
        }
        out
    }
}

/// A null_blk device made through configfs; removed on drop.
pub struct NullB {
    dir: String,
    pub path: String,
}

impl NullB {
    pub fn new(name: &str, size_mb: u64, memory_backed: bool) -> Result<Self> {
        let dir = format!("/sys/kernel/config/nullb/{name}");
        std::fs::create_dir(&dir)?;
        let me = Self { dir, path: format!("/dev/{name}") };
        for (attr, val) in [
            ("size", size_mb.to_string()),
            ("blocksize", "4096".into()),
            ("queue_mode", "2".into()),
            ("irqmode", "0".into()),
            ("hw_queue_depth", "128".into()),
            ("memory_backed", if memory_backed { "1" } else { "0" }.into()),
            ("power", "1".into()),
        ] {
            std::fs::write(format!("{}/{attr}", me.dir), val).with_context(|| format!("null_blk {attr}"))?;
        }
        Ok(me)
    }
}

impl Drop for NullB {
    fn drop(&mut self) {
        let _ = std::fs::write(format!("{}/power", self.dir), "0");
        let _ = std::fs::remove_dir(&self.dir);
    }
}
