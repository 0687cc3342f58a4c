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
    ensure!(out.contains("1012 pool blocks"), "format said {out:?}");
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
    ensure!(human.contains("t-tool: operational") && human.contains("1 of 1012 blocks"), "status report: {human}");
    ok(&["remove", "t-tool"])?;
    std::mem::forget(made);
    ensure!(!dm_exists("t-tool"), "dmremap remove left the device");
    let (code, out, _) = dmremap(&["inspect", &spare.path, "--json"])?;
    expect_eq("inspect exit code (healthy)", code, 0)?;
    let r: serde_json::Value = serde_json::from_str(&out)?;
    expect_eq("inspect metadata", r["metadata"].as_str(), Some("valid"))?;
    expect_eq("inspect remaps", r["remaps"].clone(), serde_json::json!([[10, 0]]))?;
    expect_eq("inspect pool_free", r["pool_free"].as_u64(), Some(1011))?;
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
    let end = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(s) = w.try_wait()? {
            break s;
        }
        if Instant::now() > end {
            let _ = w.kill();
            bail!("dmremap watch was not woken by the alert");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
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
            ensure!(["counter", "gauge"].contains(&ty), "type {ty}");
            ensure!(types.insert(name.to_string(), ty.to_string()).is_none(), "family {name} twice");
            ensure!(name.ends_with("_total") == (ty == "counter"), "{name} is a {ty}");
        } else if line.starts_with("# HELP ") {
        } else {
            let (head, value) = line.rsplit_once(' ').context("sample")?;
            value.parse::<f64>().with_context(|| format!("value in {line:?}"))?;
            let name = head.split('{').next().unwrap_or("");
            ensure!(types.contains_key(name), "sample {name} before its TYPE");
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
        (vec!["format", &fs.path, "--main", &lin_lo.path], 6, "ext2/3/4"),
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
