//! `dmremap`, the operator's tool, against the real module.

use crate::harness::*;
use anyhow::{bail, ensure, Context, Result};
use std::process::Command;
use std::time::{Duration, Instant};

pub const TESTS: &[crate::Test] = &[
    ("tool_format_create_status_inspect", format_create_status_inspect),
    ("tool_watch_wakes_on_alert", watch_wakes),
    ("tool_export_is_valid_prometheus_text", export),
    ("tool_bad_input_exit_codes", bad_input),
    ("tool_check_nagios_codes_and_export_with_a_missing_device", check_codes),
    ("tool_watch_all_reports_degraded_at_start_and_new_devices", watch_all),
    ("tool_message_commands", message_commands),
    ("tool_activate_dmremaptab", activate_tab),
];

const MIB: u64 = 1 << 20;
const BS: u64 = 4096;

/// Runs dmremap; returns (exit code, stdout, stderr).
fn dmremap(args: &[&str]) -> Result<(i32, String, String)> {
    let out = Command::new("dmremap").args(args).output().context("cannot run dmremap")?;
    let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    ensure!(!e.contains("panicked") && !e.contains("RUST_BACKTRACE"), "dmremap panicked: {e}");
    Ok((out.status.code().unwrap_or(-1), o, e))
}

fn ok(args: &[&str]) -> Result<String> {
    let (code, o, e) = dmremap(args)?;
    ensure!(code == 0, "dmremap {args:?} exited {code}: {e}");
    Ok(o)
}

/// Removes a device made by `dmremap create` when the test ends.
struct Made(String);

impl Drop for Made {
    fn drop(&mut self) {
        let _ = dmsetup(&["remove", "--retry", &self.0]);
    }
}

/// format -> create -> I/O with an injected error -> status (readable and JSON) agrees with
/// dmsetup -> remove -> inspect decodes what the kernel wrote.
fn format_create_status_inspect() -> Result<()> {
    let bad = BadMain::new("tl", 16 * MIB, &[(10, 1)])?;
    let spare = LoopDev::new("tl-spare", 4 * MIB)?;
    let out = ok(&["format", &spare.path, "--main", bad.path()])?;
    ensure!(out.contains("1008 pool blocks"), "format said {out:?}");
    let out = ok(&["create", "t-tool", bad.path(), &spare.path])?;
    let made = Made("t-tool".into());
    ensure!(out.starts_with("created /dev/mapper/t-tool"), "create said {out:?}");
    write_at("/dev/mapper/t-tool", 10 * BS, &pattern(5, BS as usize))?;
    let json: serde_json::Value = serde_json::from_str(&ok(&["status", "t-tool", "--json"])?)?;
    let f = status_fields("t-tool")?; // the JSON against dmsetup's own words, field by field
    for (key, field) in [("writes", 5), ("media_errors", 7), ("remaps", 8), ("spare_blocks", 9), ("spare_free", 10), ("metadata_seq", 15), ("health", 20)] {
        expect_eq(&format!("JSON {key} vs dmsetup field {field}"), json[key].as_u64().map(|v| v.to_string()), Some(f[field - 1].clone()))?;
    }
    expect_eq("JSON state", json["state"].as_str().map(str::to_string), Some(f[25].clone()))?;
    let human = ok(&["status", "t-tool"])?;
    ensure!(human.contains("t-tool: operational") && human.contains("1 of 1008 blocks"), "status report: {human}");
    ok(&["remove", "t-tool"])?;
    std::mem::forget(made);
    ensure!(!dm_exists("t-tool"), "dmremap remove left the device");
    let (code, out, _) = dmremap(&["inspect", &spare.path, "--json"])?;
    expect_eq("inspect exit code (healthy)", code, 0)?;
    let r: serde_json::Value = serde_json::from_str(&out)?;
    expect_eq("inspect metadata", r["metadata"].as_str(), Some("valid"))?;
    expect_eq("inspect remaps", r["remaps"].clone(), serde_json::json!([[10, 0]]))?;
    expect_eq("inspect pool_free", r["pool_free"].as_u64(), Some(1007))?;
    expect_eq("inspect seq", r["metadata_seq"].as_u64().map(|v| v.to_string()), Some(f[14].clone()))?;
    Ok(())
}

/// `dmremap watch` returns on the event of an alert and runs its command with the details.
fn watch_wakes() -> Result<()> {
    let bad = BadMain::new("tw", 16 * MIB, &[(10, 1)])?;
    let spare = LoopDev::new("tw-spare", 4 * MIB)?;
    ok(&["create", "t-tw", bad.path(), &spare.path, "--format"])?;
    let _made = Made("t-tw".into());
    write_at("/dev/mapper/t-tw", 10 * BS, &pattern(6, BS as usize))?;
    let _ = std::fs::remove_file("/tmp/tw.out");
    let mut w = Command::new("dmremap")
        .args(["watch", "t-tw", "--count", "1", "--exec", "echo \"$DMREMAP_NAME $DMREMAP_STATE $DMREMAP_HEALTH\" > /tmp/tw.out"])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    ensure!(w.try_wait()?.is_none(), "watch returned before any event");
    dmsetup(&["message", "t-tw", "0", "alert_threshold", "100"])?;
    let st = wait_child(&mut w, 10, "dmremap watch was not woken by the alert")?;
    ensure!(st.success(), "watch exited {st}");
    let health = status_of("t-tw", |s| u64::from(s.health).to_string())?;
    expect_eq("--exec saw", std::fs::read_to_string("/tmp/tw.out")?.trim().to_string(), format!("t-tw operational {health}"))?;
    Ok(())
}

/// Every line of `dmremap export` is valid text exposition: families with HELP and TYPE
/// before their samples, `name{labels} value` samples, counters named `_total`.
fn export() -> Result<()> {
    let lo = LoopDev::new("te", 16 * MIB)?;
    let spare = LoopDev::new("te-spare", 4 * MIB)?;
    ok(&["create", "t-te", &lo.path, &spare.path, "--format"])?;
    let _made = Made("t-te".into());
    write_at("/dev/mapper/t-te", 0, &pattern(7, BS as usize))?;
    ok(&["export", "t-te", "--output", "/tmp/te.prom"])?;
    let text = std::fs::read_to_string("/tmp/te.prom")?;
    ensure!(!std::path::Path::new("/tmp/te.prom.tmp").exists(), "temporary file left");
    let mut types = std::collections::HashMap::new();
    let mut samples = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').context("TYPE line")?;
            ensure!(["counter", "gauge", "summary"].contains(&ty), "type {ty}");
            ensure!(types.insert(name.to_string(), ty.to_string()).is_none(), "family {name} twice");
            ensure!(name.ends_with("_total") == (ty == "counter"), "{name} is a {ty}");
        } else if line.starts_with("# HELP ") {
        } else {
            let (head, value) = line.rsplit_once(' ').context("sample")?;
            value.parse::<f64>().with_context(|| format!("value in {line:?}"))?;
            let name = head.split('{').next().unwrap_or("");
            // A summary's samples are <family>_sum and <family>_count.
            let family = [name.strip_suffix("_sum"), name.strip_suffix("_count")]
                .into_iter()
                .flatten()
                .find(|f| types.get(*f).is_some_and(|t| t == "summary"))
                .unwrap_or(name);
            ensure!(types.contains_key(family), "sample {name} before its TYPE");
            ensure!(head.contains("device=\"t-te\""), "label in {line:?}");
            samples += 1;
        }
    }
    ensure!(samples >= 20, "only {samples} samples");
    // And a real parser agrees.
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?;
    expect_eq("samples seen by prometheus-parse", scrape.samples.len(), samples)?;
    let w = scrape.samples.iter().find(|s| s.metric.starts_with("dmremap_writes")).context("no writes sample")?;
    match w.value {
        prometheus_parse::Value::Counter(v) => expect_eq("writes counter", v, 1.0)?,
        ref other => bail!("dmremap_writes_total parsed as {other:?}, not a counter"),
    }
    ensure!(text.contains("dmremap_writes_total{device=\"t-te\"} 1\n"), "writes sample:\n{text}");
    // Latency as _sum and _count, equal to what the `latency` message reports now (the
    // device is idle but for the scrub, whose reads are not counted).
    let reply = dmsetup(&["message", "t-te", "0", "latency"])?;
    let l = dm_remap_logic::message::LatencyReply::parse(reply.trim()).with_context(|| format!("latency reply {reply:?}"))?;
    ensure!(l.main_count >= 1, "latency count {} after a write", l.main_count);
    let count = scrape.samples.iter().find(|s| s.metric == "dmremap_main_latency_seconds_count").context("no latency count")?;
    let sum = scrape.samples.iter().find(|s| s.metric == "dmremap_main_latency_seconds_sum").context("no latency sum")?;
    let as_f64 = |v: &prometheus_parse::Value| match v {
        prometheus_parse::Value::Untyped(x) | prometheus_parse::Value::Gauge(x) | prometheus_parse::Value::Counter(x) => Some(*x),
        _ => None,
    };
    expect_eq("latency count exported", as_f64(&count.value), Some(l.main_count as f64))?;
    let exported_ns = as_f64(&sum.value).context("latency sum value")? * 1e9;
    ensure!((exported_ns - l.main_sum_ns as f64).abs() <= 1.0 + l.main_sum_ns as f64 * 1e-9, "latency sum exported {exported_ns} ns, message {} ns", l.main_sum_ns);
    for m in ["dmremap_scrub_running", "dmremap_scrub_progress_ratio", "dmremap_scrub_rate_bytes_per_second", "dmremap_scrub_passes", "dmremap_pending_blocks"] {
        ensure!(text.contains(&format!("{m}{{device=\"t-te\"}} ")), "no {m} sample:\n{text}");
    }
    Ok(())
}

/// Bad input: one sentence on stderr, a distinct exit code, no panic.
fn bad_input() -> Result<()> {
    let lin_lo = LoopDev::new("tb", 4 * MIB)?;
    let lin = DmDev::create("t-tb-linear", &format!("0 {} linear {} 0", 4 * MIB / 512, lin_lo.path))?;
    let spare = LoopDev::new("tb-spare", 4 * MIB)?;
    let fs = LoopDev::new("tb-fs", 4 * MIB)?;
    cmd("mkfs.ext4", &["-q", &fs.path])?;
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["status", "no-such-device"], 4, "no device-mapper device"),
        (vec!["status", &lin.name], 4, "not a dm-remap device"),
        (vec!["remove", &lin.name], 4, "not a dm-remap device"),
        (vec!["inspect", "/dev/no-such-disk"], 3, "cannot open"),
        (vec!["inspect", &spare.path], 4, ""),
        (vec!["format", &fs.path, "--main", &lin_lo.path], 6, "signature of type ext4 (libblkid)"),
        (vec!["create", "t-tb", &lin_lo.path, &spare.path], 7, "refused the table"),
        (vec!["create", "bad/name", &lin_lo.path, &spare.path], 6, "not a valid device-mapper name"),
    ];
    for (args, code, msg) in cases {
        let (c, _, err) = dmremap(&args)?;
        expect_eq(&format!("exit code of {args:?}"), c, code)?;
        ensure!(err.contains(msg), "{args:?} said {err:?}, expected {msg:?}");
        ensure!(err.lines().count() <= 1, "{args:?}: more than one line: {err:?}");
    }
    ensure!(!dm_exists("t-tb"), "a refused create left a device");
    // Corrupt metadata: inspect says so with exit 5.
    ok(&["format", &spare.path, "--main", &lin_lo.path])?;
    let mut sb = read_at(&spare.path, 0, 8192)?;
    sb[200] ^= 1;
    sb[4096 + 200] ^= 1;
    write_at(&spare.path, 0, &sb)?;
    let (c, out, _) = dmremap(&["inspect", &spare.path])?;
    expect_eq("inspect exit code (corrupt)", c, 5)?;
    ensure!(out.contains("metadata corrupt"), "inspect said {out}");
    Ok(())
}

/// `dmremap check` gives each of the four Nagios codes: an operational device 0, a full spare
/// 1, a degraded one (its spare failed) 2, a missing one 3; `--all` the worst. `export` of the
/// same devices plus a missing one marks that one `dmremap_up 0` and still exports the rest,
/// and prometheus-parse reads it.
fn check_codes() -> Result<()> {
    let code_of = |args: &[&str]| -> Result<(i32, String)> {
        let (c, out, err) = dmremap(args)?;
        ensure!(err.is_empty(), "{args:?}: stderr {err:?}");
        Ok((c, out))
    };
    // Operational.
    let lo = LoopDev::new("ck-ok", 16 * MIB)?;
    let spare = LoopDev::new("ck-ok-spare", 4 * MIB)?;
    let ok_dev = DmDev::create("t-ck-ok", &remap_table(16 * MIB / 512, LineSpec::new(&lo.path, &spare.path).format()))?;
    let (c, out) = code_of(&["check", &ok_dev.name])?;
    expect_eq(&format!("check operational ({out})"), c, 0)?;
    ensure!(out.starts_with("DMREMAP OK: t-ck-ok operational, health 100"), "{out}");
    expect_eq("dmremap status exit code when operational", dmremap(&["status", &ok_dev.name])?.0, 0)?;
    // A full spare: a pool of 2 blocks, 2 bad blocks written.
    let g = dm_remap_logic::format::Geometry::for_pool(2, 4096, u64::MAX).context("layout")?;
    let full_main = BadMain::new("ck-full", 16 * MIB, &[(10, 2)])?;
    let full_spare = LoopDev::new("ck-full-spare", g.end_bytes())?;
    let full = DmDev::create("t-ck-full", &remap_table(16 * MIB / 512, LineSpec::new(full_main.path(), &full_spare.path).format()))?;
    for b in 10..12 {
        write_at(&full.path, b * BS, &pattern(b, BS as usize))?;
    }
    expect_eq("state", status_of(&full.name, |s| s.state.name())?, "spare_full")?;
    expect_eq("dmremap status exit code with the spare full", dmremap(&["status", &full.name])?.0, 8)?;
    let (c, out) = code_of(&["check", &full.name])?;
    expect_eq(&format!("check spare_full ({out})"), c, 1)?;
    ensure!(out.starts_with("DMREMAP WARNING: t-ck-full the spare is full"), "{out}");
    // Degraded: the spare fails under the target.
    let dgd = degraded("ck-dg")?;
    let dg = &dgd.dev;
    expect_eq("dmremap status exit code when degraded", dmremap(&["status", &dg.name])?.0, 9)?;
    let (c, out) = code_of(&["check", &dg.name])?;
    expect_eq(&format!("check degraded ({out})"), c, 2)?;
    ensure!(out.starts_with("DMREMAP CRITICAL: t-ck-dg the spare failed"), "{out}");
    // Missing.
    let (c, out) = code_of(&["check", "t-ck-none"])?;
    expect_eq(&format!("check missing ({out})"), c, 3)?;
    ensure!(out.starts_with("DMREMAP UNKNOWN: t-ck-none"), "{out}");
    // All: the worst, one line each.
    let (c, out) = code_of(&["check", "--all"])?;
    expect_eq(&format!("check --all ({out})"), c, 2)?;
    expect_eq("check --all lines", out.lines().count(), 3)?;
    // Export with a missing device among them.
    let (c, text, _) = dmremap(&["export", &ok_dev.name, "t-ck-none", &full.name])?;
    expect_eq("export exit code", c, 0)?;
    ensure!(text.contains("dmremap_up{device=\"t-ck-none\"} 0\n"), "{text}");
    ensure!(text.contains("dmremap_up{device=\"t-ck-ok\"} 1\n") && text.contains("dmremap_reads_total{device=\"t-ck-ok\"}"), "{text}");
    ensure!(!text.contains("device=\"t-ck-none\",") && !text.contains("_total{device=\"t-ck-none\"}"), "{text}");
    let dmn = dm_blkdev(&ok_dev.name)?;
    ensure!(text.contains(&format!("dmremap_info{{device=\"t-ck-ok\",dm=\"{dmn}\",main=\"{}\"", lo.path.trim_start_matches("/dev/"))), "{text}");
    // A healthy device with no trend has no exhaustion sample; the full one has 0.
    ensure!(!text.contains("dmremap_spare_exhaustion_seconds{device=\"t-ck-ok\"}"), "{text}");
    ensure!(text.contains("dmremap_spare_exhaustion_seconds{device=\"t-ck-full\"} 0\n"), "{text}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?;
    let samples = text.lines().filter(|l| !l.starts_with('#')).count();
    expect_eq("samples seen by prometheus-parse", scrape.samples.len(), samples)?;
    Ok(())
}

/// A degraded device: its spare is dm-linear, swapped for dm-error after the format, and a
/// write to a bad block of the main device then fails to relocate.
struct Degraded {
    dev: DmDev,
    _spare: DmDev,
    _lo: LoopDev,
    _main: BadMain,
}

fn degraded(tag: &str) -> Result<Degraded> {
    let main = BadMain::new(tag, 16 * MIB, &[(20, 1)])?;
    let lo = LoopDev::new(&format!("{tag}-spare"), 4 * MIB)?;
    let spare = DmDev::create(&format!("t-{tag}-spare"), &format!("0 {} linear {} 0", 4 * MIB / 512, lo.path))?;
    let dev = DmDev::create(&format!("t-{tag}"), &remap_table(16 * MIB / 512, LineSpec::new(main.path(), &spare.path).format()))?;
    dmsetup(&["reload", &spare.name, "--table", &format!("0 {} error", 4 * MIB / 512)])?;
    dmsetup(&["resume", &spare.name])?;
    let _ = write_at(&dev.path, 20 * BS, &pattern(20, BS as usize));
    expect_eq("state", status_of(&dev.name, |s| s.state.name())?, "degraded")?;
    Ok(Degraded { dev, _spare: spare, _lo: lo, _main: main })
}

/// `watch --all` reports a device already degraded when it starts, and a device created
/// after it started; its hook sees DMREMAP_DEVICE, DMREMAP_EVENT and DMREMAP_STATE.
/// `--test` reports every device once and exits.
fn watch_all() -> Result<()> {
    let dg = degraded("wa-dg")?;
    let out = "/tmp/wa.out";
    let _ = std::fs::remove_file(out);
    let hook = format!("echo \"$DMREMAP_DEVICE $DMREMAP_EVENT $DMREMAP_STATE\" >> {out}");
    let mut w = Command::new("dmremap").args(["watch", "--all", "--count", "2", "--exec", &hook]).stdout(std::process::Stdio::null()).spawn()?;
    let wait_lines = |n: usize, what: &str| -> Result<Vec<String>> {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<String> = std::fs::read_to_string(out).unwrap_or_default().lines().map(str::to_string).collect();
            if lines.len() >= n {
                return Ok(lines);
            }
            ensure!(Instant::now() < end, "watch --all did not report {what}: {lines:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let lines = wait_lines(1, "the degraded device at start")?;
    expect_eq("first report", lines[0].clone(), format!("{} start degraded", dg.dev.name))?;
    let lo = LoopDev::new("wa-new", 16 * MIB)?;
    let spare = LoopDev::new("wa-new-spare", 4 * MIB)?;
    let new = DmDev::create("t-wa-new", &remap_table(16 * MIB / 512, LineSpec::new(&lo.path, &spare.path).format()))?;
    let lines = wait_lines(2, "the new device")?;
    expect_eq("second report", lines[1].clone(), format!("{} added operational", new.name))?;
    let st = wait_child(&mut w, 10, "watch --all --count 2 did not exit after two reports")?;
    ensure!(st.success(), "watch --all exited {st}");
    let (c, text, _) = dmremap(&["watch", "--all", "--test"])?;
    expect_eq("watch --all --test exit code", c, 0)?;
    for name in [&dg.dev.name, &new.name] {
        ensure!(text.contains(&format!("dmremap: {name}: test (event ")), "--test output: {text}");
    }
    Ok(())
}

/// Every message as a command, against the real target: query, list (paging past 64),
/// hotspots, remap (refused outside maintenance), maintenance, scan, sync, alert-threshold,
/// clear-stats; human and JSON output, exit codes.
fn message_commands() -> Result<()> {
    let bad = BadMain::new("tm", 16 * MIB, &[(10, 1)])?;
    let spare = LoopDev::new("tm-spare", 4 * MIB)?;
    let dev = DmDev::create("t-tm", &remap_table(16 * MIB / 512, LineSpec::new(bad.path(), &spare.path).format()))?;
    let n = dev.name.as_str();
    write_at(&dev.path, 10 * BS, &pattern(10, BS as usize))?;
    let ps = geometry(4 * MIB)?.pool_start;
    let j = |args: &[&str]| -> Result<serde_json::Value> { Ok(serde_json::from_str(&ok(args)?)?) };
    expect_eq("query remapped", j(&["query", n, "80", "--json"])?, serde_json::json!({"block": 10, "location": "spare", "pool_block": 0, "spare_sector": ps}))?;
    expect_eq("query main", j(&["query", n, "7", "--json"])?, serde_json::json!({"block": 0, "location": "main"}))?;
    expect_eq("query text", ok(&["query", n, "80"])?.trim_end().to_string(), format!("sector 80 is in block 10, on the spare: pool block 0 at spare sector {ps}"))?;
    expect_eq("list", j(&["list", n, "--json"])?, serde_json::json!([[10, 0]]))?;
    expect_eq("hotspots", j(&["hotspots", n, "--json"])?, serde_json::json!([{"first_block": 10, "last_block": 10, "errors": 1}]))?;
    let (c, _, err) = dmremap(&["remap", n, "160"])?;
    expect_eq(&format!("remap outside maintenance ({err})"), c, 7)?;
    ensure!(err.contains("Operation not permitted"), "{err}");
    ok(&["maintenance", n, "on"])?;
    expect_eq("state", status_of(n, |s| s.state.name())?, "maintenance")?;
    expect_eq("remap", j(&["remap", n, "160", "--json"])?, serde_json::json!({"block": 20, "location": "spare", "pool_block": 1, "spare_sector": null}))?;
    // Past one list_remaps page (64).
    for b in 100..170u64 {
        dmsetup(&["message", n, "0", "remap", &(b * 8).to_string()])?;
    }
    let all = j(&["list", n, "--json"])?;
    let all = all.as_array().context("list is an array")?;
    expect_eq("remaps listed", all.len(), 72)?;
    expect_eq("last listed", all[71].clone(), serde_json::json!([169, 71]))?;
    ok(&["maintenance", n, "off"])?;
    expect_eq("state", status_of(n, |s| s.state.name())?, "operational")?;
    ok(&["scan", n, "stop"])?;
    ok(&["scan", n, "start"])?;
    ok(&["sync", n])?;
    ok(&["alert-threshold", n, "70"])?;
    expect_eq("alert threshold", status_of(n, |s| s.alert_threshold)?, 70)?;
    ok(&["clear-stats", n])?;
    expect_eq("writes after clear-stats", status_of(n, |s| s.writes)?, 0)?;
    let (c, _, _) = dmremap(&["query", "t-tm-none", "0"])?;
    expect_eq("query on a missing device", c, 4)?;
    Ok(())
}

/// `activate --all` brings up every good line of a dmremaptab (the spare found by its metadata
/// UUID or by path), names each bad line, skips `noauto`, refuses a main device in use, sets
/// the DM UUID to REMAP-<spare uuid>; `deactivate --all` takes them down.
fn activate_tab() -> Result<()> {
    let mk = |tag: &str| -> Result<(LoopDev, LoopDev, String)> {
        let main = LoopDev::new(&format!("ta-{tag}"), 16 * MIB)?;
        let spare = LoopDev::new(&format!("ta-{tag}-spare"), 4 * MIB)?;
        ok(&["format", &spare.path, "--main", &main.path])?;
        let r: serde_json::Value = serde_json::from_str(&ok(&["inspect", &spare.path, "--json"])?)?;
        let uuid = r["uuid"].as_str().context("uuid")?.to_string();
        Ok((main, spare, uuid))
    };
    let (ma, _sa, ua) = mk("a")?;
    let (mb, sb, _) = mk("b")?;
    let (mc, sc, _) = mk("c")?;
    let (md, sd, _) = mk("d")?;
    let held = DmDev::create("t-ta-held", &format!("0 {} linear {} 0", 16 * MIB / 512, md.path))?;
    let tab = "/tmp/ta.tab";
    std::fs::write(
        tab,
        format!(
            "# dm-remap devices\n\
             ta-a {} UUID={ua} read_retries=4\n\
             ta-bad {} {} frobnicate\n\
             ta-b {} {} scrub_speed_min=2,scrub_speed_max=64\n\
             ta-missing /dev/nonexistent {}\n\
             ta-no {} {} noauto\n\
             ta-held {} {}\n",
            ma.path, mb.path, sb.path, mb.path, sb.path, sb.path, mc.path, sc.path, md.path, sd.path
        ),
    )?;
    let (c, out, err) = dmremap(&["activate", "--all", "--tab", tab])?;
    ensure!(c != 0, "activate --all with bad lines exited 0");
    for want in [
        format!("{tab} line 3: unknown option"),
        format!("{tab} line 5 (ta-missing): main device /dev/nonexistent: No such file or directory"),
        format!("{tab} line 7 (ta-held): main device {} is in use", md.path),
    ] {
        ensure!(err.contains(&want), "stderr lacks {want:?}: {err}");
    }
    expect_eq("stderr lines", err.lines().count(), 3)?;
    expect_eq("stdout", out, "activated ta-a\nactivated ta-b\n".to_string())?;
    ensure!(!dm_exists("ta-no") && !dm_exists("ta-held") && !dm_exists("ta-bad"), "a line that should not be up is");
    let uuid = dmsetup(&["info", "-c", "--noheadings", "-o", "uuid", "ta-a"])?;
    expect_eq("DM UUID", uuid.trim().to_string(), format!("REMAP-{ua}"))?;
    let table = dmsetup(&["table", "ta-a"])?;
    ensure!(table.contains(" 2 read_retries 4"), "table {table:?}");
    let table = dmsetup(&["table", "ta-b"])?;
    ensure!(table.trim_end().ends_with(" 4 scrub_speed_min 2 scrub_speed_max 64"), "table {table:?}");
    write_at("/dev/mapper/ta-a", 0, &pattern(1, BS as usize))?;
    expect_eq("data through ta-a", read_at("/dev/mapper/ta-a", 0, BS as usize)? == pattern(1, BS as usize), true)?;
    let (_, out, _) = dmremap(&["activate", "--all", "--tab", tab])?;
    ensure!(out.contains("ta-a is already active"), "{out}");
    ok(&["activate", "ta-no", "--tab", tab])?;
    ensure!(dm_exists("ta-no"), "noauto line not activated by name");
    let (c, _, err) = dmremap(&["activate", "ta-none", "--tab", tab])?;
    expect_eq(&format!("activate a name not in the table ({err})"), c, 4)?;
    drop(held);
    let (c, out, err) = dmremap(&["deactivate", "--all", "--tab", tab])?;
    expect_eq(&format!("deactivate --all ({err})"), c, 0)?;
    expect_eq("deactivated", out, "deactivated ta-no\ndeactivated ta-b\ndeactivated ta-a\n".to_string())?;
    for n in ["ta-a", "ta-b", "ta-no"] {
        ensure!(!dm_exists(n), "{n} still there");
    }
    Ok(())
}
