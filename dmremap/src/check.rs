//! `dmremap check`: one device (or all) judged for a monitoring system, with the Nagios
//! plugin exit codes (docs/dmremap.md has the mapping).

use crate::status::{self, Status};
use crate::{dm, Fail};

/// Nagios plugin return codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl Code {
    fn word(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Warning => "WARNING",
            Code::Critical => "CRITICAL",
            Code::Unknown => "UNKNOWN",
        }
    }

    /// Rank for the worst of several: CRITICAL > WARNING > UNKNOWN > OK.
    fn rank(self) -> u8 {
        match self {
            Code::Ok => 0,
            Code::Unknown => 1,
            Code::Warning => 2,
            Code::Critical => 3,
        }
    }
}

/// Spare use at or above this percentage is a warning.
pub const SPARE_WARN_PERCENT: u64 = 90;

/// The verdict on one status, and why.
pub fn judge(s: &Status) -> (Code, String) {
    let used = s.spare_blocks.saturating_sub(s.spare_free);
    let pct = used.saturating_mul(100).checked_div(s.spare_blocks).unwrap_or(0);
    let mut why = Vec::new();
    let mut code = Code::Ok;
    let mut raise = |c: Code, w: String| {
        if c.rank() > code.rank() {
            code = c;
        }
        why.push(w);
    };
    match s.state.as_str() {
        "degraded" => raise(Code::Critical, "the spare failed: nothing more can be relocated".into()),
        "main_lost" => raise(Code::Critical, "the main device stopped answering: only blocks on the spare are served".into()),
        "spare_full" => raise(Code::Warning, "the spare is full: the next failing write returns an error".into()),
        _ => {}
    }
    if s.state != "spare_full" && pct >= SPARE_WARN_PERCENT {
        raise(Code::Warning, format!("spare {pct}% used"));
    }
    if s.health < s.alert_threshold {
        raise(Code::Warning, format!("health {} below the alert threshold {}", s.health, s.alert_threshold));
    }
    if s.pending > 0 {
        raise(Code::Warning, format!("{} unreadable blocks not yet rewritten", s.pending));
    }
    let summary = format!(
        "{}, health {}, spare {pct}% used ({} of {} free), {} remaps, {} pending",
        s.state, s.health, s.spare_free, s.spare_blocks, s.remaps, s.pending
    );
    let text = if why.is_empty() { summary } else { format!("{}; {summary}", why.join("; ")) };
    (code, text)
}

/// Device paths on which LVM found a PV, from `lvm pvs --noheadings -o pv_name`: the PVs it
/// lists (stdout) and the duplicates it read but set aside (stderr's `Not using device
/// <dev> for PV <uuid>`). A member among them is a copy LVM could use instead of the remap
/// device.
pub fn lvm_pv_devices(stdout: &str, stderr: &str) -> Vec<String> {
    let mut v: Vec<String> = stdout.lines().map(str::trim).filter(|l| l.starts_with('/')).map(str::to_string).collect();
    for l in stderr.lines() {
        if let Some(rest) = l.trim().strip_prefix("WARNING: Not using device ") {
            if let Some(dev) = rest.split_whitespace().next() {
                v.push(dev.to_string());
            }
        }
    }
    v
}

/// The warnings for `members` (role, kernel name) that LVM found PVs on: `pv_devices` from
/// [`lvm_pv_devices`]; `kname` gives a path's kernel name and `disk` a partition's disk (the
/// main disk's partitions are members too).
pub fn lvm_warnings(
    pv_devices: &[String],
    members: &[(&str, String)],
    kname: impl Fn(&str) -> Option<String>,
    disk: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for dev in pv_devices {
        let Some(k) = kname(dev) else { continue };
        let whole = disk(&k);
        for (role, m) in members {
            if (k == *m || whole.as_deref() == Some(m.as_str())) && !out.iter().any(|w: &String| w.contains(&format!(" {dev} "))) {
                out.push(format!(
                    "LVM can see member {dev} ({role} disk{}): it could use it instead of the remap device; isolate it with LVM's devices file or a filter (docs/boot.md)",
                    if k == *m { String::new() } else { format!(" {m}'s partition") }
                ));
            }
        }
    }
    out
}

/// Asks LVM (if installed) which devices hold PVs; the warnings for the members of `s`.
fn lvm_check(s: &Status) -> Vec<String> {
    let members: Vec<(&str, String)> = [("main", &s.main_device), ("spare", &s.spare_device)]
        .into_iter()
        .filter_map(|(role, devno)| dm::kernel_name(devno).map(|k| (role, k)))
        .collect();
    // No lvm: nothing can use the members through LVM.
    let Ok(o) = std::process::Command::new("lvm")
        .args(["pvs", "--noheadings", "-o", "pv_name"])
        // Descriptors inherited from a monitoring agent would make lvm warn on stderr.
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .stdin(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    let devs = lvm_pv_devices(&String::from_utf8_lossy(&o.stdout), &String::from_utf8_lossy(&o.stderr));
    let kname = |p: &str| std::fs::canonicalize(p).ok().and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()));
    let disk = |k: &str| {
        let sys = std::path::Path::new("/sys/class/block").join(k);
        if !sys.join("partition").exists() {
            return None;
        }
        let c = std::fs::canonicalize(&sys).ok()?;
        Some(c.parent()?.file_name()?.to_string_lossy().into_owned())
    };
    lvm_warnings(&devs, &members, kname, disk)
}

/// One Nagios line for a device: `DMREMAP <CODE>: <name> ... | perfdata`; `extra` are
/// warnings found outside the status (LVM seeing a member).
fn line(name: &str, r: &Result<Status, Fail>, extra: &[String]) -> (Code, String) {
    match r {
        Ok(s) => {
            let (mut code, mut text) = judge(s);
            if !extra.is_empty() {
                if Code::Warning.rank() > code.rank() {
                    code = Code::Warning;
                }
                text = format!("{}; {text}", extra.join("; "));
            }
            let perf = format!(
                "health={};{};;0;100 spare_free={};;;0;{} remaps={} pending={}",
                s.health, s.alert_threshold, s.spare_free, s.spare_blocks, s.remaps, s.pending
            );
            (code, format!("DMREMAP {}: {name} {text} | {perf}", code.word()))
        }
        // The boot's read-only stand-in for a device whose spare is missing: no protection.
        Err(_) if dm::is_standin(name) => (Code::Critical, format!("DMREMAP CRITICAL: {}", dm::standin_text(name))),
        Err(f) => (Code::Unknown, format!("DMREMAP UNKNOWN: {name}: {}", f.msg)),
    }
}

/// Checks the named device, or every dm-remap device; prints one line each and returns the
/// worst code. Nothing to check (`--all` with no device) is OK.
pub fn check(name: Option<&str>) -> i32 {
    let names = match name {
        Some(n) => vec![n.to_string()],
        None => match dm::list() {
            Ok(mut v) => {
                v.extend(dm::standins());
                v
            }
            Err(f) => {
                println!("DMREMAP UNKNOWN: {}", f.msg);
                return Code::Unknown as i32;
            }
        },
    };
    if names.is_empty() {
        println!("DMREMAP OK: no dm-remap devices");
        return Code::Ok as i32;
    }
    let mut worst = Code::Ok;
    for n in &names {
        let r = dm::status_line(n).and_then(|l| status::parse(&l));
        let extra = r.as_ref().map(lvm_check).unwrap_or_default();
        let (code, text) = line(n, &r, &extra);
        println!("{text}");
        if code.rank() > worst.rank() {
            worst = code;
        }
    }
    worst as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    fn st(state: &str, free: u64, pending: u64, health: u64) -> Status {
        let line = format!("0.1.0 252:0 7:1 1 1 0 0 0 100 {free} {pending} 0 0 0 0 0 0 0 0 {health} 0 0 0 50 - {state}");
        status::parse(&line).unwrap()
    }

    #[test]
    fn mapping() {
        assert_eq!(judge(&st("operational", 100, 0, 100)).0, Code::Ok);
        assert_eq!(judge(&st("maintenance", 100, 0, 100)).0, Code::Ok);
        assert_eq!(judge(&st("operational", 10, 0, 100)).0, Code::Warning, "90% used");
        assert_eq!(judge(&st("operational", 11, 0, 100)).0, Code::Ok, "89% used");
        assert_eq!(judge(&st("operational", 100, 1, 100)).0, Code::Warning, "pending");
        assert_eq!(judge(&st("operational", 100, 0, 49)).0, Code::Warning, "below threshold");
        assert_eq!(judge(&st("operational", 100, 0, 50)).0, Code::Ok, "at threshold");
        assert_eq!(judge(&st("spare_full", 0, 0, 100)).0, Code::Warning);
        assert_eq!(judge(&st("degraded", 100, 0, 100)).0, Code::Critical);
        let (c, t) = line("x", &Err(Fail::new(Kind::NotRemap, "no device-mapper device x")), &[]);
        assert_eq!((c, t.as_str()), (Code::Unknown, "DMREMAP UNKNOWN: x: no device-mapper device x"));
        let (_, t) = line("failing", &Ok(st("degraded", 100, 0, 100)), &[]);
        assert!(t.starts_with("DMREMAP CRITICAL: failing the spare failed"), "{t}");
        assert!(t.ends_with("| health=100;50;;0;100 spare_free=100;;;0;100 remaps=0 pending=0"), "{t}");
    }

    /// What `lvm pvs --noheadings -o pv_name` printed in the boot test with Debian's default
    /// lvm.conf (docs/boot.md), the raw main disk /dev/vda carrying the PV's copy.
    const PVS_OUT: &str = "  /dev/mapper/r1\n";
    const PVS_ERR: &str = "  WARNING: Not using device /dev/vda for PV St8lDf-kJXt-W97w-4NtC-U821-QwBN-bz9IWq.\n  \
         WARNING: PV St8lDf-kJXt-W97w-4NtC-U821-QwBN-bz9IWq prefers device /dev/mapper/r1 because device is used by LV.\n";

    #[test]
    fn lvm_pv_devices_from_pvs() {
        assert_eq!(lvm_pv_devices(PVS_OUT, PVS_ERR), ["/dev/mapper/r1", "/dev/vda"]);
        assert_eq!(lvm_pv_devices("", ""), Vec::<String>::new());
        // A PV on a partition of the main disk, listed as a PV (no remap device PV at all).
        assert_eq!(lvm_pv_devices("  /dev/vda1\n  /dev/sdz\n", "  WARNING: something else\n"), ["/dev/vda1", "/dev/sdz"]);
    }

    #[test]
    fn lvm_warnings_name_the_member() {
        let members = [("main", "vda".to_string()), ("spare", "vdb".to_string())];
        let kname = |p: &str| Some(p.rsplit('/').next().unwrap().replace("mapper/", "").replace("r1", "dm-0"));
        let disk = |k: &str| k.strip_suffix('1').filter(|d| d.starts_with("vd")).map(str::to_string);
        let devs = lvm_pv_devices(PVS_OUT, PVS_ERR);
        assert_eq!(
            lvm_warnings(&devs, &members, kname, disk),
            ["LVM can see member /dev/vda (main disk): it could use it instead of the remap device; isolate it with LVM's devices file or a filter (docs/boot.md)"]
        );
        // Isolated (devices file or filter): LVM lists the remap device only.
        assert_eq!(lvm_warnings(&lvm_pv_devices(PVS_OUT, ""), &members, kname, disk), Vec::<String>::new());
        let part = vec!["/dev/vda1".to_string(), "/dev/vda1".to_string()];
        assert_eq!(
            lvm_warnings(&part, &members, kname, disk),
            ["LVM can see member /dev/vda1 (main disk vda's partition): it could use it instead of the remap device; isolate it with LVM's devices file or a filter (docs/boot.md)"]
        );
        let (c, t) = line("r1", &Ok(st("operational", 100, 0, 100)), &lvm_warnings(&devs, &members, kname, disk));
        assert_eq!(c, Code::Warning);
        assert!(t.starts_with("DMREMAP WARNING: r1 LVM can see member /dev/vda (main disk): "), "{t}");
        assert!(t.contains("(docs/boot.md); operational, health 100,"), "{t}");
    }
}
