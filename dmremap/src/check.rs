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

/// One Nagios line for a device: `DMREMAP <CODE>: <name> ... | perfdata`.
fn line(name: &str, r: &Result<Status, Fail>) -> (Code, String) {
    match r {
        Ok(s) => {
            let (code, text) = judge(s);
            let perf = format!(
                "health={};{};;0;100 spare_free={};;;0;{} remaps={} pending={}",
                s.health, s.alert_threshold, s.spare_free, s.spare_blocks, s.remaps, s.pending
            );
            (code, format!("DMREMAP {}: {name} {text} | {perf}", code.word()))
        }
        Err(f) => (Code::Unknown, format!("DMREMAP UNKNOWN: {name}: {}", f.msg)),
    }
}

/// Checks the named device, or every dm-remap device; prints one line each and returns the
/// worst code. Nothing to check (`--all` with no device) is OK.
pub fn check(name: Option<&str>) -> i32 {
    let names = match name {
        Some(n) => vec![n.to_string()],
        None => match dm::list() {
            Ok(v) => v,
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
        let (code, text) = line(n, &r);
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
        let (c, t) = line("x", &Err(Fail::new(Kind::NotRemap, "no device-mapper device x")));
        assert_eq!((c, t.as_str()), (Code::Unknown, "DMREMAP UNKNOWN: x: no device-mapper device x"));
        let (_, t) = line("failing", &Ok(st("degraded", 100, 0, 100)));
        assert!(t.starts_with("DMREMAP CRITICAL: failing the spare failed"), "{t}");
        assert!(t.ends_with("| health=100;50;;0;100 spare_free=100;;;0;100 remaps=0 pending=0"), "{t}");
    }
}
