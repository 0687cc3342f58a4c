//! `dmremap watch --all`: every dm-remap device, those created later included, like
//! `mdadm --monitor --scan`.
//!
//! device-mapper wakes a poll on /dev/mapper/control whenever any device's event counter
//! moves and whenever a device is created or removed (its global event), so one poll loop
//! sees everything: after each wake the device list and event counters are compared with
//! the last ones.

use crate::check::{self, Code};
use crate::status;
use crate::{dm, Fail, Kind};
use std::collections::BTreeMap;
use std::os::fd::AsFd;

/// What happened to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    /// Seen at start in a state that is not OK (or every device, with `--test`).
    Start,
    /// Created (or first seen) after the watch started.
    Added,
    /// Its dm event counter moved (an alert, a state change, a table load).
    Event,
    /// Removed.
    Removed,
    /// `--test`.
    Test,
}

impl What {
    fn word(self) -> &'static str {
        match self {
            What::Start => "start",
            What::Added => "added",
            What::Event => "event",
            What::Removed => "removed",
            What::Test => "test",
        }
    }
}

/// Logs to syslog (the journal under systemd) as well as stdout.
fn log(msg: &str) {
    println!("{msg}");
    if let Ok(c) = std::ffi::CString::new(msg) {
        // SAFETY: a constant format with one NUL-terminated string argument; openlog is not needed (the default ident is the program name).
        unsafe { nix::libc::syslog(nix::libc::LOG_WARNING | nix::libc::LOG_DAEMON, c"%s".as_ptr(), c.as_ptr()) };
    }
}

fn report(name: &str, what: What, event_nr: u32, exec: Option<&str>) {
    let st = dm::status_line(name).and_then(|l| status::parse(&l));
    let (state, health, text) = match &st {
        Ok(s) => (s.state.clone(), s.health.to_string(), check::judge(s).1),
        Err(f) => ("gone".to_string(), String::new(), f.msg.clone()),
    };
    log(&format!("dmremap: {name}: {} (event {event_nr}): {text}", what.word()));
    if let Some(cmd) = exec {
        let r = std::process::Command::new("sh")
            .args(["-c", cmd])
            .env("DMREMAP_DEVICE", name)
            .env("DMREMAP_EVENT", what.word())
            .env("DMREMAP_EVENT_NR", event_nr.to_string())
            .env("DMREMAP_STATE", &state)
            .env("DMREMAP_HEALTH", health)
            .status();
        if let Err(e) = r {
            log(&format!("dmremap: cannot run {cmd:?}: {e}"));
        }
    }
}

/// dm-remap devices and their event counters.
fn snapshot(dmc: &devicemapper::DM) -> Result<BTreeMap<String, u32>, Fail> {
    let mut m = BTreeMap::new();
    for n in dm::list()? {
        // A device removed between the list and this lookup is simply not in the snapshot.
        if let Ok(ev) = dm::event_nr(dmc, &n) {
            m.insert(n, ev);
        }
    }
    Ok(m)
}

/// Watches every dm-remap device; returns after `count` reports (never if `None`), or at
/// once after `--test`.
pub fn watch_all(exec: Option<&str>, count: Option<u64>, test: bool) -> Result<i32, Fail> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let dmc = dm::dm()?;
    dmc.arm_poll().map_err(|e| Fail::new(Kind::Dm, format!("cannot arm device-mapper polling: {e}")))?;
    let mut last = snapshot(&dmc)?;
    let mut seen = 0u64;
    let done = |seen: u64| count.is_some_and(|c| seen >= c);
    log(&format!("dmremap: watching {} dm-remap device(s) and any created later", last.len()));
    for (n, &ev) in &last {
        let not_ok = dm::status_line(n).and_then(|l| status::parse(&l)).map(|s| check::judge(&s).0 != Code::Ok).unwrap_or(true);
        if test || not_ok {
            report(n, if test { What::Test } else { What::Start }, ev, exec);
            seen += 1;
            if done(seen) {
                return Ok(0);
            }
        }
    }
    if test {
        return Ok(0);
    }
    loop {
        let mut fds = [PollFd::new(dmc.file().as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::NONE).map_err(|e| Fail::new(Kind::Dm, format!("poll failed: {e}")))?;
        // Re-arm before looking, so an event between the look and the next poll still wakes it.
        dmc.arm_poll().map_err(|e| Fail::new(Kind::Dm, format!("cannot arm device-mapper polling: {e}")))?;
        let now = snapshot(&dmc)?;
        let mut events: Vec<(String, What, u32)> = Vec::new();
        for (n, &ev) in &now {
            match last.get(n) {
                None => events.push((n.clone(), What::Added, ev)),
                Some(&old) if old != ev => events.push((n.clone(), What::Event, ev)),
                _ => {}
            }
        }
        for (n, &ev) in &last {
            if !now.contains_key(n) {
                events.push((n.clone(), What::Removed, ev));
            }
        }
        last = now;
        for (n, what, ev) in events {
            report(&n, what, ev, exec);
            seen += 1;
            if done(seen) {
                return Ok(0);
            }
        }
    }
}
