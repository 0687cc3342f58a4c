//! The console protocol between the VM test runner (this crate) and xtask, which reads the
//! guest's console: every marker is defined once, here. xtask includes this same file
//! (`#[path]` in xtask/src/main.rs).
#![allow(dead_code)] // each side uses its half

/// `=== RUN <name>`: a test starts.
pub const RUN: &str = "=== RUN ";
/// `--- PASS <name> (<secs>s)`.
pub const PASS: &str = "--- PASS ";
/// `--- FAIL <name>: <why>`.
pub const FAIL: &str = "--- FAIL ";
/// `--- SKIP <name>: <why>`.
pub const SKIP: &str = "--- SKIP ";
/// `ACK <block> <generation> .`: a power-cut storm's write was acknowledged (the trailing
/// `.` shows the line was not cut off by the kill).
pub const ACK: &str = "ACK";
/// `BENCH <config> <workload> <rep> <iops>`.
pub const BENCH: &str = "BENCH";
/// `BENCHINFO <key> <value...>`.
pub const BENCHINFO: &str = "BENCHINFO";
/// Printed once a power-cut storm runs: xtask kills QEMU a set time after it.
pub const POWERCUT_RUNNING: &str = "powercut: storm running";
/// `SCRUBCKPT <position> <seq> .`: the scrub checkpoint the power-cut boot found on its
/// spare before the storm (t_scrub::powercut_before_kill).
pub const SCRUB_CKPT: &str = "SCRUBCKPT";
/// `SCRUBPOS <position> .`: that boot's live scrub position, printed until the kill.
pub const SCRUB_POS: &str = "SCRUBPOS";
/// The first thing tests/vm/init prints: a boot that dies without it died in the kernel's
/// own start-up, before dm-remap was loaded (xtask boots it again, once).
pub const INIT: &str = "@@DMREMAP-INIT@@";
/// `@@DMREMAP-EXIT <status>@@`, printed by tests/vm/init (a shell script, which cannot use
/// this file; xtask's unit test checks that it prints this text).
pub const EXIT: &str = "@@DMREMAP-EXIT ";
/// `@@PROFILE@@ <config> ios=<n> iops=<x>`: a profiled fio run (`vmtest profile`).
pub const PROFILE: &str = "@@PROFILE@@ ";
/// `@@PROFSYM@@ <addr> <type> <name> [module]`: a line of the guest's /proc/kallsyms.
pub const PROFSYM: &str = "@@PROFSYM@@ ";
