//! The shutdown ramfs ("exitrd", docs/boot.md): what takes a dm-remap device down when it
//! holds the root filesystem, or an LV the root is on.
//!
//! systemd-shutdown cannot remove the device the root is on, nor anything below it: the
//! root is still mounted. If `/run/initramfs/shutdown` exists, it instead moves into
//! `/run/initramfs` (the old root at `/oldroot`) once it has unmounted and detached all it
//! can, and runs `/shutdown <verb>` as PID 1 (systemd's ROOT_STORAGE_DAEMONS interface; dracut's
//! `dracut-shutdown.service` fills the same directory). `dmremap exitrd-prepare`, the stop
//! action of `dmremap-exitrd.service`, fills it with this binary as `/shutdown` and the
//! libraries it links; run as `/shutdown` it unmounts `/oldroot`, removes every dm device top
//! down (a dm-remap device commits its metadata as it goes), and reboots or powers off.

use crate::{dm, Fail, Kind};
use std::path::{Path, PathBuf};

/// Where systemd-shutdown looks for the shutdown ramfs.
pub const DIR: &str = "/run/initramfs";

/// Fills `dir` (if no other tool did, and a dm-remap device is up): `shutdown` is this
/// binary, with the shared libraries `ldd` names at their own paths.
pub fn prepare(dir: &Path) -> Result<i32, Fail> {
    let io = |what: String| move |e: std::io::Error| Fail::new(Kind::Io, format!("{what}: {e}"));
    let shutdown = dir.join("shutdown");
    if shutdown.exists() && !is_ours(&shutdown) {
        println!("{} is another tool's shutdown ramfs: left alone", dir.display());
        return Ok(0);
    }
    let devices = remap_devices()?;
    if devices.is_empty() {
        return Ok(0);
    }
    let exe = std::fs::read_link("/proc/self/exe").map_err(io("cannot find this program".into()))?;
    for d in ["oldroot", "proc", "sys", "dev", "run"] {
        std::fs::create_dir_all(dir.join(d)).map_err(io(format!("cannot make {}", dir.join(d).display())))?;
    }
    exec_allowed(dir)?;
    let mut files = vec![(exe.clone(), shutdown.clone())];
    let out = std::process::Command::new("ldd").arg(&exe).output().map_err(io("cannot run ldd".into()))?;
    for lib in ldd_paths(&String::from_utf8_lossy(&out.stdout)) {
        let to = dir.join(lib.strip_prefix("/").unwrap_or(&lib));
        files.push((lib, to));
    }
    for (from, to) in &files {
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p).map_err(io(format!("cannot make {}", p.display())))?;
        }
        // Copied beside, then renamed: a half-copied /shutdown must never be run.
        let tmp = to.with_extension("dmremap-tmp");
        std::fs::copy(from, &tmp).and_then(|_| std::fs::rename(&tmp, to)).map_err(io(format!("cannot copy {} to {}", from.display(), to.display())))?;
    }
    println!("shutdown ramfs ready in {} for {}", dir.display(), devices.join(" "));
    Ok(0)
}

/// systemd-shutdown runs the ramfs only if `shutdown` is executable there (`access(X_OK)`),
/// which a `noexec` mount refuses: initramfs-tools mounts /run `noexec` and moves it into the
/// real root. So the mount holding `dir` is remounted `exec` (at shutdown, only when a
/// dm-remap device is up).
fn exec_allowed(dir: &Path) -> Result<(), Fail> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some((mp, noexec)) = holding_mount(&info, &dir.display().to_string()) else { return Ok(()) };
    if !noexec {
        return Ok(());
    }
    let ok = std::process::Command::new("mount").args(["-o", "remount,exec", &mp]).status().is_ok_and(|s| s.success());
    if !ok {
        return Err(Fail::new(Kind::Io, format!("{mp} is mounted noexec and could not be remounted exec: systemd-shutdown would not run the shutdown ramfs")));
    }
    println!("{mp} remounted exec for the shutdown ramfs");
    Ok(())
}

/// The mount point holding `path` (the longest mount point that is a prefix of it) and
/// whether that mount is `noexec`, from mountinfo text.
fn holding_mount(mountinfo: &str, path: &str) -> Option<(String, bool)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let mp = unescape(f.nth(4)?);
            let opts = f.next()?;
            let inside = path == mp || mp == "/" || path.starts_with(&format!("{mp}/"));
            inside.then(|| (mp, opts.split(',').any(|o| o == "noexec")))
        })
        .max_by_key(|(mp, _)| mp.len())
}

/// Whether `path` is a copy of this program (made by an earlier `prepare`).
fn is_ours(path: &Path) -> bool {
    let (Ok(a), Ok(b)) = (std::fs::metadata(path), std::fs::metadata("/proc/self/exe")) else { return false };
    a.len() == b.len() && std::fs::read(path).ok() == std::fs::read("/proc/self/exe").ok()
}

/// The dm-remap devices that are up (DM UUID `REMAP-`), by name.
fn remap_devices() -> Result<Vec<String>, Fail> {
    let mut out = Vec::new();
    for n in dm::list()? {
        let uuid = dm::devno(&n).ok().and_then(|d| dm::kernel_name(&d)).and_then(|k| std::fs::read_to_string(format!("/sys/block/{k}/dm/uuid")).ok());
        if uuid.is_some_and(|u| u.starts_with(crate::activate::UUID_PREFIX)) {
            out.push(n);
        }
    }
    Ok(out)
}

/// The absolute paths in `ldd`'s output: `libc.so.6 => /lib/.../libc.so.6 (0x...)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`.
fn ldd_paths(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let p = l.split_once("=>").map_or(l, |(_, r)| r.trim());
            let p = p.split_whitespace().next()?;
            p.starts_with('/').then(|| PathBuf::from(p))
        })
        .collect()
}

/// Mount points in `/proc/self/mountinfo` text at or under `/oldroot`, deepest (latest) first.
fn old_mounts(mountinfo: &str) -> Vec<String> {
    let mut v: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|m| m == "/oldroot" || m.starts_with("/oldroot/"))
        .collect();
    // Deepest first: every submount before the mount it is on.
    v.sort_by_key(|m| std::cmp::Reverse(m.matches('/').count()));
    v
}

/// mountinfo's octal escapes (`\040` for a blank).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(d) => {
                out.push(d.iter().fold(0u8, |a, c| a.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Run as `/shutdown <verb>` by systemd-shutdown (PID 1, in the ramfs): unmounts the old
/// root, removes every dm device, then does `verb` (reboot, poweroff, halt; kexec reboots).
/// Whatever fails is said and the machine still goes down: a shutdown must not hang.
pub fn run(verb: &str) -> ! {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let mode = reboot_mode(verb);
    watchdog(mode);
    println!("dmremap-exitrd: unmounting the old root, then removing the dm devices");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in old_mounts(&info) {
        if umount2(m.as_str(), MntFlags::empty()).is_ok() {
            println!("dmremap-exitrd: unmounted {m}");
        } else {
            // Still busy (a process systemd could not kill): read-only, then detached, so
            // the filesystem is clean and the device below can still go.
            let _ = mount(None::<&str>, m.as_str(), None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>);
            match umount2(m.as_str(), MntFlags::MNT_DETACH) {
                Ok(()) => println!("dmremap-exitrd: {m} busy: remounted read-only and detached"),
                Err(e) => println!("dmremap-exitrd: cannot unmount {m}: {e}"),
            }
        }
    }
    nix::unistd::sync();
    // udevd is gone (systemd-shutdown killed every process), but its socket file came along
    // with /run: the device-mapper library would take it for a running udevd and wait for
    // one to acknowledge each removal, forever (seen: the first root boots hung here).
    let _ = std::fs::remove_file("/run/udev/control");
    println!("dmremap-exitrd: synced; removing the dm devices");
    let left = remove_all();
    if left.is_empty() {
        println!("dmremap-exitrd: all DM devices removed");
    } else {
        println!("dmremap-exitrd: could not remove {}", left.join(" "));
    }
    nix::unistd::sync();
    finish(mode)
}

/// How long the shutdown ramfs may take before its watchdog ends it anyway.
const WATCHDOG_SECS: u64 = 90;

fn reboot_mode(verb: &str) -> nix::sys::reboot::RebootMode {
    use nix::sys::reboot::RebootMode;
    match verb {
        "poweroff" => RebootMode::RB_POWER_OFF,
        "halt" => RebootMode::RB_HALT_SYSTEM,
        _ => RebootMode::RB_AUTOBOOT,
    }
}

/// Reboots (or powers off); never returns: PID 1 must not exit.
fn finish(mode: nix::sys::reboot::RebootMode) -> ! {
    let e = nix::sys::reboot::reboot(mode);
    println!("dmremap-exitrd: {mode:?} failed: {e:?}");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// A shutdown must end: if the unmounts and removals are not done in [`WATCHDOG_SECS`]
/// (a device that no longer answers), the blocked tasks are dumped to the console (sysrq
/// `w`, for the bug report) and the machine goes down anyway, as systemd-shutdown's own
/// watchdog would. What was not committed is recovered from the log at the next activation.
fn watchdog(mode: nix::sys::reboot::RebootMode) {
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(WATCHDOG_SECS));
        println!("dmremap-exitrd: not done after {WATCHDOG_SECS} s; blocked tasks follow, then {mode:?} anyway");
        let _ = std::fs::write("/proc/sysrq-trigger", "w");
        std::thread::sleep(std::time::Duration::from_secs(2));
        finish(mode)
    });
}

/// Whether another block device is stacked on dm device `n` (sysfs `holders`).
fn held(n: &str) -> bool {
    let Some(k) = dm::devno(n).ok().and_then(|d| dm::kernel_name(&d)) else { return false };
    std::fs::read_dir(format!("/sys/block/{k}/holders")).is_ok_and(|mut d| d.next().is_some())
}

/// Removes dm devices until none is left or a round removes none (a device is removed only
/// once nothing holds it: the LVs on a remap device go in an earlier round). The names left.
fn remove_all() -> Vec<String> {
    for _ in 0..16 {
        let names = dm::list_all().unwrap_or_default();
        if names.is_empty() {
            return names;
        }
        let mut removed = 0;
        // Those nothing is stacked on first (an LV before the remap device under it).
        let free: Vec<&String> = names.iter().filter(|n| !held(n)).collect();
        let pick = if free.is_empty() { names.iter().collect() } else { free };
        for n in pick {
            match dm::remove_any(n) {
                Ok(()) => {
                    println!("dmremap-exitrd: removed {n}");
                    removed += 1;
                }
                Err(f) => println!("dmremap-exitrd: {}", f.msg),
            }
        }
        if removed == 0 {
            return names;
        }
    }
    dm::list_all().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ldd_and_mountinfo() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(ldd_paths(ldd), vec![PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"), PathBuf::from("/lib64/ld-linux-x86-64.so.2")]);
        let mi = "22 1 0:20 / / rw - tmpfs none rw\n30 22 254:1 / /oldroot ro - ext4 /dev/mapper/root0 ro\n31 30 0:5 / /oldroot/a\\040b rw - tmpfs t rw\n40 22 0:4 / /proc rw - proc p rw\n";
        assert_eq!(old_mounts(mi), vec!["/oldroot/a b".to_string(), "/oldroot".to_string()]);
        assert_eq!(unescape("x\\0"), "x\\0");
        let run = "22 1 254:0 / / rw,relatime - ext4 /dev/mapper/root0 rw\n25 22 0:23 / /run rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw\n";
        assert_eq!(holding_mount(run, "/run/initramfs"), Some(("/run".to_string(), true)));
        assert_eq!(holding_mount(run, "/var/x"), Some(("/".to_string(), false)));
        assert_eq!(holding_mount(run, "/runx"), Some(("/".to_string(), false)));
    }
}
