//! `dmremap`: the dm-remap operator's tool.
//!
//! Every failure is one sentence on stderr and a distinct exit code (see `Kind`); nothing
//! panics on bad input.

mod activate;
mod check;
mod dm;
mod exitrd;
mod export;
mod ident;
mod msgs;
mod probe;
mod spare;
mod status;
mod systemd;
mod udev;
mod watch;

use clap::{CommandFactory, Parser, Subcommand};
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

/// `dmremap status` exit code when the spare is full (the status is printed).
pub const STATUS_SPARE_FULL: i32 = 8;
/// `dmremap status` exit code when the target is degraded (the status is printed).
pub const STATUS_DEGRADED: i32 = 9;
/// `dmremap status` exit code when the main device is lost (the status is printed).
pub const STATUS_MAIN_LOST: i32 = 10;
/// `dmremap status` exit code for the read-only stand-in a boot made because the spare was
/// missing (`spare_missing=readonly`; what it is is printed).
pub const STATUS_SPARE_MISSING: i32 = 11;

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
        /// Bind the spare to this main device id (default: the main device's WWN, else its
        /// serial; none for loop devices).
        #[arg(long)]
        main_id: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Rewrite a version 1 spare's superblocks as version 2 (the log and pool stay), and
    /// record a main device id if none is recorded.
    Upgrade {
        spare: PathBuf,
        /// The main device whose id to record (WWN, else serial).
        #[arg(long)]
        main: Option<PathBuf>,
        /// The id to record.
        #[arg(long, conflicts_with = "main")]
        main_id: Option<String>,
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
        /// The main device's id, checked against the one the spare records (default: the
        /// main device's WWN, else its serial).
        #[arg(long)]
        main_id: Option<String>,
    },
    /// Judge a device (or all) for a monitoring system: exit 0 OK, 1 WARNING, 2 CRITICAL,
    /// 3 UNKNOWN (Nagios plugin codes), one line each.
    Check {
        name: Option<String>,
        /// Every dm-remap device (the worst code wins).
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// Where the block holding SECTOR lives: main, pending, or spare (pool block).
    Query {
        name: String,
        sector: u64,
        #[arg(long)]
        json: bool,
    },
    /// Move the block holding SECTOR to the spare (maintenance mode only).
    Remap {
        name: String,
        sector: u64,
        #[arg(long)]
        json: bool,
    },
    /// Every remapped block: main block -> pool block.
    List {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The unreadable blocks not yet rewritten (status field 11), in 512-byte sectors of the
    /// device, from the spare's persistent bad-block list.
    Badblocks {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The clusters of media errors.
    Hotspots {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Maintenance mode on or off.
    Maintenance {
        name: String,
        #[arg(value_parser = ["on", "off"])]
        mode: String,
    },
    /// Start or stop the background scan.
    Scan {
        name: String,
        #[arg(value_parser = ["start", "stop"])]
        action: String,
    },
    /// Where the scan is: position, percent, rate, ETA, passes, on/off.
    ScanStatus {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The scan's floor (under foreground load) and ceiling (idle), MiB/s (not kept in the
    /// table line).
    ScrubSpeed { name: String, min: u32, max: u32 },
    /// Flush both devices' write caches.
    Sync { name: String },
    /// The health score below which an alert is raised (0 to 100; not kept in the table line).
    AlertThreshold { name: String, value: u8 },
    /// Zero the I/O and error counters.
    ClearStats { name: String },
    /// Bring up the devices of /etc/dmremaptab (all but `noauto` ones, or the one named).
    Activate {
        /// One device of the table (noauto included).
        #[arg(required_unless_present_any = ["all", "initramfs"])]
        name: Option<String>,
        /// Every line without `noauto` (what the boot unit runs).
        #[arg(long, conflicts_with = "name")]
        all: bool,
        /// Every line with `initramfs`, waiting up to each line's `spare_timeout` for its
        /// devices (what the initramfs runs before mounting the root; docs/boot.md).
        #[arg(long, conflicts_with_all = ["name", "all"])]
        initramfs: bool,
        /// Print the names of the lines that would be brought up; bring up nothing.
        #[arg(long)]
        list: bool,
        /// The table to read.
        #[arg(long, default_value = activate::TAB)]
        tab: PathBuf,
    },
    /// Take down a device of /etc/dmremaptab, or every one that is up.
    Deactivate {
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        all: bool,
        #[arg(long, default_value = activate::TAB)]
        tab: PathBuf,
        /// First deactivate the LVM volume groups whose PVs are on the device (what the
        /// shutdown unit does: the device cannot go while an LV holds it).
        #[arg(long)]
        lvm: bool,
    },
    /// For udev (61-dm-remap.rules): print DM_REMAP_MEMBER=main|spare (and DM_REMAP_NAME,
    /// DM_REMAP_SPARE_UUID) if DEVNODE is the main disk, a partition of it, or the spare of a
    /// dm-remap device; nothing otherwise.
    UdevMember {
        devnode: PathBuf,
        /// The device's links so far, relative to /dev (udev's $links).
        links: Vec<String>,
        #[arg(long, default_value = activate::TAB)]
        tab: PathBuf,
    },
    /// The systemd generator (dmremap-generator): one dmremap@<name>.service per
    /// /etc/dmremaptab line without noauto, wanted by local-fs-pre.target.
    Generator {
        /// The generator's output directory (systemd passes normal, early and late).
        dir: PathBuf,
        #[arg(hide = true)]
        more: Vec<PathBuf>,
        #[arg(long, default_value = activate::TAB)]
        tab: PathBuf,
    },
    /// Fill /run/initramfs with the shutdown ramfs that takes down a dm-remap device holding
    /// the root (dmremap-exitrd.service runs it at shutdown; docs/boot.md). Nothing is done
    /// when no dm-remap device is up or another tool's shutdown ramfs is there.
    ExitrdPrepare {
        #[arg(long, default_value = exitrd::DIR)]
        dir: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), generated from these same definitions; with --dir, write
    /// dmremap.1 and one dmremap-<command>.1 per command there.
    Manpage {
        #[arg(long)]
        dir: Option<PathBuf>,
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
        /// The device to watch (or --all).
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        /// Every dm-remap device, those created later too; a device in a state that is not OK
        /// (see `check`) is reported at start.
        #[arg(long, conflicts_with = "name")]
        all: bool,
        /// With --all: report every device once at start, whatever its state, and exit.
        #[arg(long, requires = "all")]
        test: bool,
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
        Cmd::Format { spare, main, block_size, main_id, force } => {
            let main_bytes = spare::size_of(&main)?;
            let id = ident::choose(main_id.as_deref(), &main)?;
            let sb = spare::format(&spare, main_bytes, block_size, id.unwrap_or_default(), force)?;
            println!(
                "formatted {}: {} pool blocks of {} bytes for a main device of {} sectors, main id {}",
                spare.display(),
                sb.geometry.pool_blocks,
                block_size,
                sb.main_sectors,
                id.map(|i| ident::text(&i)).unwrap_or_else(|| "none".into())
            );
            if id.is_none() {
                eprintln!(
                    "dmremap: warning: {} has no WWN or serial; the spare records no main id and only the length binds it (use --main-id)",
                    main.display()
                );
            }
            Ok(0)
        }
        Cmd::Upgrade { spare, main, main_id } => {
            let id = match (&main_id, &main) {
                (Some(_), _) => ident::choose(main_id.as_deref(), std::path::Path::new(""))?,
                (None, Some(m)) => Some(ident::detect(m).ok_or_else(|| Fail::new(Kind::Refused, format!("{} has no WWN or serial; use --main-id", m.display())))?),
                (None, None) => None,
            };
            match spare::upgrade(&spare, id)? {
                spare::Upgraded::FromV1(sb) => println!(
                    "upgraded {} to format v{}, main id {}",
                    spare.display(),
                    sb.version,
                    if sb.main_id.is_none() { "none".into() } else { ident::text(&sb.main_id) }
                ),
                spare::Upgraded::IdAdded(sb) => println!("{}: main id {} recorded", spare.display(), ident::text(&sb.main_id)),
                spare::Upgraded::Already(sb) => println!("{} is already format v{}; nothing written", spare.display(), sb.version),
            }
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
        Cmd::Create { name, main, spare, format, block_size, read_retries, cache_size, no_proactive, main_id } => {
            let (main_s, spare_s) = (main.display().to_string(), spare.display().to_string());
            if main_s.contains(char::is_whitespace) || spare_s.contains(char::is_whitespace) {
                return Err(Fail::new(Kind::Refused, "a device path with blanks cannot go in a table line"));
            }
            let mut spec = dm_remap_logic::args::LineSpec {
                main: &main_s,
                spare: &spare_s,
                format,
                block_size,
                read_retries,
                cache_size,
                no_proactive,
                main_id: None,
                alert_threshold: None,
                no_scan: false,
                scrub_speed_min: None,
                scrub_speed_max: None,
                main_lost_after: None,
            };
            // The id the kernel checks against the spare's record: the ctr refuses a spare
            // recorded for another main device.
            match ident::choose(main_id.as_deref(), &main)? {
                Some(id) => spec.main_id = Some(id),
                None => {
                    if let Some(rec) = spare::recorded_id(&spare) {
                        eprintln!(
                            "dmremap: warning: {} is bound to main id {} but {} has no WWN or serial: only the length is checked (use --main-id)",
                            spare.display(),
                            ident::text(&rec),
                            main.display()
                        );
                    }
                }
            }
            let sectors = spare::size_of(&main)? / 512;
            let bs = u64::from(block_size.unwrap_or(4096) / 512).max(1);
            // The whole main device, rounded down to whole blocks.
            let len = sectors / bs * bs;
            // Printed by the one table-line codec (dm_remap_logic::args), which the kernel's
            // parser reads back.
            let params = spec.to_string();
            let node = dm::create(&name, len, &params)?;
            println!("created {node}: 0 {len} remap {params}");
            Ok(0)
        }
        Cmd::Check { name, all } => {
            if name.is_none() && !all {
                println!("DMREMAP UNKNOWN: name a device or give --all");
                return Ok(check::Code::Unknown as i32);
            }
            Ok(check::check(name.as_deref()))
        }
        Cmd::Query { name, sector, json } => msgs::block(&name, "query", sector, json),
        Cmd::Remap { name, sector, json } => msgs::block(&name, "remap", sector, json),
        Cmd::List { name, json } => msgs::list(&name, json),
        Cmd::Hotspots { name, json } => msgs::hotspots(&name, json),
        Cmd::Badblocks { name, json } => msgs::bad_blocks(&name, json),
        Cmd::Maintenance { name, mode } => msgs::simple(&name, &format!("maintenance {mode}")),
        Cmd::Scan { name, action } => msgs::simple(&name, &format!("scan {action}")),
        Cmd::Sync { name } => msgs::simple(&name, "sync"),
        Cmd::ScanStatus { name, json } => msgs::scan_status(&name, json),
        Cmd::ScrubSpeed { name, min, max } => msgs::simple(&name, &format!("scrub_speed {min} {max}")),
        Cmd::AlertThreshold { name, value } => msgs::simple(&name, &format!("alert_threshold {value}")),
        Cmd::ClearStats { name } => msgs::simple(&name, "clear_stats"),
        Cmd::Activate { name, tab, initramfs, list, .. } => {
            let pick = match (&name, initramfs) {
                (Some(n), _) => activate::Pick::Name(n),
                (None, true) => activate::Pick::Initramfs,
                (None, false) => activate::Pick::All,
            };
            activate::activate(&tab, pick, list)
        }
        Cmd::Deactivate { name, tab, lvm, .. } => activate::deactivate(&tab, name.as_deref(), lvm),
        Cmd::UdevMember { devnode, links, tab } => Ok(udev::run(&devnode, &links, &tab)),
        Cmd::Generator { dir, tab, .. } => systemd::generate(&tab, &dir),
        Cmd::ExitrdPrepare { dir } => exitrd::prepare(&dir),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "dmremap", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::Manpage { dir } => {
            let io = |e: std::io::Error| Fail::new(Kind::Io, format!("cannot write the manual pages: {e}"));
            let cmd = Cli::command();
            match dir {
                None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout()).map_err(io)?,
                Some(d) => {
                    std::fs::create_dir_all(&d).map_err(io)?;
                    let mut pages = vec![("dmremap".to_string(), cmd.clone())];
                    for sub in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
                        let name = format!("dmremap-{}", sub.get_name());
                        pages.push((name.clone(), sub.clone().name(name)));
                    }
                    for (name, c) in pages {
                        let mut f = std::fs::File::create(d.join(format!("{name}.1"))).map_err(io)?;
                        clap_mangen::Man::new(c).render(&mut f).map_err(io)?;
                    }
                }
            }
            Ok(0)
        }
        Cmd::Remove { name } => {
            dm::remove(&name)?;
            println!("removed {name}");
            Ok(0)
        }
        Cmd::Status { name, json } => {
            if dm::is_standin(&name) {
                println!("{}", dm::standin_text(&name));
                return Ok(STATUS_SPARE_MISSING);
            }
            let s = status::parse(&dm::status_line(&name)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                print!("{}", status::render(&name, &s));
            }
            // The state in the exit code, like `mdadm --detail --test`: a script can tell a
            // full or failed spare without parsing the text.
            Ok(match s.state.as_str() {
                "spare_full" => STATUS_SPARE_FULL,
                "degraded" => STATUS_DEGRADED,
                "main_lost" => STATUS_MAIN_LOST,
                _ => 0,
            })
        }
        Cmd::Watch { name, all, test, exec, count } => match name {
            Some(n) if !all => dm::watch(&n, exec.as_deref(), count),
            _ => watch::watch_all(exec.as_deref(), count, test),
        },
        Cmd::Export { names, output } => export::export(&names, output.as_deref()),
    }
}

fn main() {
    // Run by systemd-shutdown as the shutdown ramfs's /shutdown (PID 1): see exitrd.rs.
    let mut args = std::env::args();
    if args.next().as_deref() == Some("/shutdown") && std::process::id() == 1 {
        exitrd::run(args.next().as_deref().unwrap_or("reboot"));
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(f) => {
            eprintln!("dmremap: {}", f.msg);
            std::process::exit(f.kind as i32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_consistent_and_documents_itself() {
        Cli::command().debug_assert();
        let dir = std::env::temp_dir().join(format!("dmremap-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cmd = Cli::command();
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page).unwrap();
        let page = String::from_utf8_lossy(&page);
        for sub in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
            assert!(page.contains(&format!("dmremap\\-{}", sub.get_name().replace('-', "\\-"))), "{} missing from dmremap.1", sub.get_name());
        }
        let mut bash = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "dmremap", &mut bash);
        let bash = String::from_utf8_lossy(&bash);
        assert!(bash.contains("watch") && bash.contains("--main-id") && bash.contains("check"));
    }
}
