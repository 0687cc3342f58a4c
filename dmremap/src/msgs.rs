//! The target's messages as commands (docs/messages.md): the words are sent with
//! `dm::message`, and the replies read with the parsers in `dm_remap_logic::message`.

use crate::{dm, Fail, Kind};
use dm_remap_logic::message::{parse_hotspot_line, parse_remap_line, BadBlocksReply, BlockReply, Location, ScanReply, ScrubState, MAX_LIST};
use serde_json::json;

fn bad_reply(what: &str, reply: &str) -> Fail {
    Fail::new(Kind::Dm, format!("unexpected reply to {what}: {reply:?}"))
}

fn block_json(r: &BlockReply) -> serde_json::Value {
    match r.location {
        Location::Main => json!({"block": r.block, "location": "main"}),
        Location::Pending => json!({"block": r.block, "location": "pending"}),
        Location::Spare { pool_block, spare_sector } => {
            json!({"block": r.block, "location": "spare", "pool_block": pool_block, "spare_sector": spare_sector})
        }
    }
}

fn block_text(sector: u64, r: &BlockReply) -> String {
    match r.location {
        Location::Main => format!("sector {sector} is in block {}, on the main device", r.block),
        Location::Pending => format!("sector {sector} is in block {}, pending: unreadable on the main device until written", r.block),
        Location::Spare { pool_block, spare_sector: Some(s) } => {
            format!("sector {sector} is in block {}, on the spare: pool block {pool_block} at spare sector {s}", r.block)
        }
        Location::Spare { pool_block, spare_sector: None } => format!("sector {sector} is in block {}, on the spare: pool block {pool_block}", r.block),
    }
}

fn print(json: bool, j: serde_json::Value, text: String) {
    if json {
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
    } else {
        println!("{text}");
    }
}

/// `query` and `remap`: where the block holding `sector` lives (after moving it, for remap).
pub fn block(name: &str, verb: &str, sector: u64, json: bool) -> Result<i32, Fail> {
    let reply = dm::message(name, &format!("{verb} {sector}"))?;
    let r = BlockReply::parse(&reply).ok_or_else(|| bad_reply(verb, &reply))?;
    print(json, block_json(&r), block_text(sector, &r));
    Ok(0)
}

/// Every remap, paging through `list_remaps` (64 per message).
pub fn list(name: &str, json: bool) -> Result<i32, Fail> {
    let mut all = Vec::new();
    loop {
        let reply = dm::message(name, &format!("list_remaps {} {MAX_LIST}", all.len()))?;
        let page: Vec<(u64, u64)> = reply
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| parse_remap_line(l).ok_or_else(|| bad_reply("list_remaps", &reply)))
            .collect::<Result<_, _>>()?;
        let n = page.len();
        all.extend(page);
        if n < MAX_LIST as usize {
            break;
        }
    }
    let text = if all.is_empty() {
        "no remapped blocks".to_string()
    } else {
        all.iter().map(|(m, p)| format!("main block {m} -> pool block {p}")).collect::<Vec<_>>().join("\n")
    };
    print(json, json!(all), text);
    Ok(0)
}

/// The unreadable blocks not yet rewritten, paging through `bad_blocks` (64 per message), in
/// sectors of the device: what `debugfs icheck` or `xfs_db` need to name the files that lost
/// data.
pub fn bad_blocks(name: &str, json: bool) -> Result<i32, Fail> {
    let mut all: Vec<(u64, u64)> = Vec::new();
    let head = loop {
        let reply = dm::message(name, &format!("bad_blocks {} {MAX_LIST}", all.len()))?;
        let mut lines = reply.lines().filter(|l| !l.trim().is_empty());
        let head = lines.next().and_then(BadBlocksReply::parse).ok_or_else(|| bad_reply("bad_blocks", &reply))?;
        let page: Vec<(u64, u64)> = lines.map(|l| parse_remap_line(l).ok_or_else(|| bad_reply("bad_blocks", &reply))).collect::<Result<_, _>>()?;
        let n = page.len();
        all.extend(page);
        // The list may change between pages: stop at a short page or at its current size.
        if n < MAX_LIST as usize || all.len() as u64 >= head.blocks {
            break head;
        }
    };
    let j = json!({
        "blocks": head.blocks, "on_spare": head.on_spare, "persistent": head.list, "overflow": head.overflow,
        "sectors": all.iter().map(|&(s, n)| json!({"sector": s, "sectors": n})).collect::<Vec<_>>(),
    });
    let mut text = if all.is_empty() {
        format!("{name}: no unreadable blocks waiting for a rewrite")
    } else {
        let mut t = format!("{name}: {} unreadable blocks waiting for a rewrite (sector, sectors):", head.blocks);
        for (s, n) in &all {
            t.push_str(&format!("\n{s} {n}"));
        }
        t
    };
    if !head.list {
        text.push_str("\nthe spare keeps no bad-block list: these are known in memory only (lost at a reload)");
    } else if head.overflow {
        text.push_str(&format!("\nthe list on the spare is full: {} of them survive a reload", head.on_spare));
    }
    print(json, j, text);
    Ok(0)
}

/// The clusters of media errors.
pub fn hotspots(name: &str, json: bool) -> Result<i32, Fail> {
    let reply = dm::message(name, "hotspots")?;
    let spots: Vec<(u64, u64, u64)> = reply
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_hotspot_line(l).ok_or_else(|| bad_reply("hotspots", &reply)))
        .collect::<Result<_, _>>()?;
    let j = json!(spots.iter().map(|&(f, l, e)| json!({"first_block": f, "last_block": l, "errors": e})).collect::<Vec<_>>());
    let text = if spots.is_empty() {
        "no hotspots".to_string()
    } else {
        spots.iter().map(|(f, l, e)| format!("blocks {f}-{l}: {e} errors")).collect::<Vec<_>>().join("\n")
    };
    print(json, j, text);
    Ok(0)
}

/// A message with no reply (`maintenance on`, `scan stop`, `sync`, ...).
pub fn simple(name: &str, words: &str) -> Result<i32, Fail> {
    dm::message(name, words)?;
    println!("{name}: {words}");
    Ok(0)
}

/// `scan_status`: the scan's progress, as text or JSON.
pub fn scan_status(name: &str, json: bool) -> Result<i32, Fail> {
    let reply = dm::message(name, "scan_status")?;
    let r = ScanReply::parse(&reply).ok_or_else(|| bad_reply("scan_status", &reply))?;
    let state = match r.state {
        ScrubState::On => "on",
        ScrubState::Off => "off",
        ScrubState::Paused => "paused",
        ScrubState::Resting => "resting",
    };
    let j = json!({
        "scan": state, "position": r.position, "blocks": r.blocks, "percent": r.permille as f64 / 10.0,
        "rate_kib": r.rate_kib, "eta_secs": r.eta_secs, "passes": r.passes, "busy": r.busy,
        "speed_min_mib": r.speed_min, "speed_max_mib": r.speed_max,
    });
    let eta = match r.eta_secs {
        Some(s) => format!(", {}h{:02}m left", s / 3600, s / 60 % 60),
        None => String::new(),
    };
    let text = format!(
        "{name}: scan {state}, block {} of {} ({}.{}%), {:.1} MiB/s{eta}{}; {} passes done; limits {}-{} MiB/s",
        r.position,
        r.blocks,
        r.permille / 10,
        r.permille % 10,
        r.rate_kib as f64 / 1024.0,
        if r.busy { " (foreground busy: at the floor)" } else { "" },
        r.passes,
        r.speed_min,
        r.speed_max
    );
    print(json, j, text);
    Ok(0)
}
