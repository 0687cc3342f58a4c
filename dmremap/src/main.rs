//! `dmremap`: the dm-remap operator's tool.
//!
//! Every failure is one sentence on stderr and a distinct exit code (see `Kind`); nothing
//! panics on bad input.

mod dm;
mod export;
mod spare;
mod status;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// What went wrong, as an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 3: a device or file could not be opened, read or written.
    Io = 3,
    /// 4: no such dm device, or it is not a dm-remap target.
    NotRemap = 4,
    /// 5: the spare's metadata is corrupt or inconsistent (inspect).
    Corrupt = 5,
    /// 6: refused to overwrite data, or an impossible request.
    Refused = 6,
    /// 7: device-mapper refused an operation.
    Dm = 7,
}

/// A failure: its kind and the sentence to print.
#[derive(Debug)]
pub struct Fail {
    pub kind: Kind,
    pub msg: String,
}

impl Fail {
    pub fn new(kind: Kind, msg: impl Into<String>) -> Self {
        Self { kind, msg: msg.into() }
    }
}

#[derive(Parser)]
#[command(name = "dmremap", version, about = "Operate dm-remap targets: format and inspect spares, create, status, watch, export")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write fresh metadata on a spare for a main device (refuses existing data unless --force).
    Format {
        spare: PathBuf,
        /// The main device (its size is recorded).
        #[arg(long)]
        main: PathBuf,
        #[arg(long, default_value_t = 4096)]
        block_size: u32,
        #[arg(long)]
        force: bool,
    },
    /// Create a dm-remap device over MAIN with SPARE (whole main device).
    Create {
        name: String,
        main: PathBuf,
        spare: PathBuf,
        /// Initialise a blank spare.
        #[arg(long)]
        format: bool,
        #[arg(long)]
        block_size: Option<u32>,
        #[arg(long)]
        read_retries: Option<u32>,
        #[arg(long)]
        cache_size: Option<u32>,
        #[arg(long)]
        no_proactive: bool,
    },
    /// Remove a dm-remap device.
    Remove { name: String },
    /// Show a device's status as a report (or JSON).
    Status {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Check every metadata copy of a spare, offline. Exit 0 if healthy, 5 if damaged or
    /// corrupt, 4 if it holds no dm-remap metadata.
    Inspect {
        spare: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Wait for dm events on a device and report each alert; optionally run a command.
    Watch {
        name: String,
        /// Run through `sh -c` with DMREMAP_* variables set, for each event.
        #[arg(long)]
        exec: Option<String>,
        /// Stop after this many events (default: never).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Prometheus text exposition of dm-remap devices (all if none named).
    Export {
        names: Vec<String>,
        /// Write atomically to this file (for node_exporter's textfile collector).
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

fn run(cli: Cli) -> Result<i32, Fail> {
    match cli.cmd {
        Cmd::Format { spare, main, block_size, force } => {
            let main_bytes = spare::size_of(&main)?;
            let sb = spare::format(&spare, main_bytes, block_size, force)?;
            println!(
                "formatted {}: {} pool blocks of {} bytes for a main device of {} sectors",
                spare.display(),
                sb.geometry.pool_blocks,
                block_size,
                sb.main_sectors
            );
            Ok(0)
        }
        Cmd::Inspect { spare, json } => {
            let r = spare::inspect(&spare)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print!("{}", spare::render(&r));
            }
            Ok(match r.metadata {
                "valid" => 0,
                "blank" => Kind::NotRemap as i32,
                _ => Kind::Corrupt as i32,
            })
        }
        Cmd::Create { name, main, spare, format, block_size, read_retries, cache_size, no_proactive } => {
            let mut feats: Vec<String> = Vec::new();
            if format {
                feats.push("format".into());
            }
            for (k, v) in [("block_size", block_size), ("read_retries", read_retries), ("cache_size", cache_size)] {
                if let Some(v) = v {
                    feats.extend([k.to_string(), v.to_string()]);
                }
            }
            if no_proactive {
                feats.push("no_proactive".into());
            }
            let sectors = spare::size_of(&main)? / 512;
            let bs = u64::from(block_size.unwrap_or(4096) / 512).max(1);
            // The whole main device, rounded down to whole blocks.
            let len = sectors / bs * bs;
            let mut params = format!("{} {}", main.display(), spare.display());
            if !feats.is_empty() {
                params += &format!(" {} {}", feats.len(), feats.join(" "));
            }
            let node = dm::create(&name, len, &params)?;
            println!("created {node}: 0 {len} remap {params}");
            Ok(0)
        }
        Cmd::Remove { name } => {
            dm::remove(&name)?;
            println!("removed {name}");
            Ok(0)
        }
        Cmd::Status { name, json } => {
            let s = status::parse(&dm::status_line(&name)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                print!("{}", status::render(&name, &s));
            }
            Ok(0)
        }
        Cmd::Watch { name, exec, count } => dm::watch(&name, exec.as_deref(), count),
        Cmd::Export { names, output } => export::export(&names, output.as_deref()),
    }
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(f) => {
            eprintln!("dmremap: {}", f.msg);
            std::process::exit(f.kind as i32);
        }
    }
}
