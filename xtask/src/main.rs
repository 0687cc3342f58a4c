//! `cargo xtask`: build automation for dm-remap, as plain Rust.

mod bench;
mod bench_more;
mod boottest;
mod chart;
mod cpio;
mod debian;
mod env;
mod fuzz;
mod kernel;
#[cfg(test)]
mod layers;
mod module;
mod package;
mod profile;
// The console protocol with the VM test runner, defined once in the tests crate.
#[path = "../../tests/src/protocol.rs"]
mod protocol;
mod rootboot;
mod setup;
mod test;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};
use kernel::Flavor;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, boot and test dm-remap")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create or reuse the Debian trixie build root with the kernel Rust toolchain.
    Setup,
    /// Build the Rust-enabled test kernel (cached by a hash of its inputs).
    Kernel {
        /// The kernel: 6.12 (default), 6.12-debug, debian-7.2 (fetches Debian's packages and
        /// builds its Rust metadata).
        #[arg(long, value_name = "NAME")]
        kernel: Option<String>,
        /// Build the sanitizer kernel (KASAN, lockdep, kmemleak): --kernel 6.12-debug.
        #[arg(long)]
        debug: bool,
    },
    /// Build dm-remap.ko against a kernel (setup and kernel first if needed).
    Build {
        /// The kernel: 6.12 (default), 6.12-debug, debian-7.2.
        #[arg(long, value_name = "NAME")]
        kernel: Option<String>,
        /// Build against the sanitizer kernel: --kernel 6.12-debug.
        #[arg(long)]
        debug: bool,
    },
    /// Boot the VM with the module loaded and run a command in it (a shell if none).
    Vm {
        /// The kernel: 6.12 (default), 6.12-debug, debian-7.2.
        #[arg(long, value_name = "NAME")]
        kernel: Option<String>,
        /// Use the sanitizer kernel: --kernel 6.12-debug.
        #[arg(long)]
        debug: bool,
        /// Seconds before the VM is killed.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Attach this raw image as /dev/vda.
        #[arg(long)]
        disk: Option<std::path::PathBuf>,
        /// The command to run in the guest.
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    /// Run every test: host tests, then the integration tests in the VM on 6.12 and on
    /// debian-7.2, side by side.
    Test {
        /// Run only tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Run the VM tests on this kernel only: 6.12, 6.12-debug, debian-7.2 (default: 6.12
        /// and debian-7.2).
        #[arg(long, value_name = "NAME")]
        kernel: Option<String>,
        /// Run the VM tests on the sanitizer kernel: --kernel 6.12-debug.
        #[arg(long)]
        debug_kernel: bool,
    },
    /// Build the Debian packages into target/packages/ (dmremap, the module for Debian's
    /// 7.2 kernel, dm-remap-dkms) and run lintian on them (docs/install.md).
    Package,
    /// Build everything, boot the VM and show the target at work.
    Demo {
        /// The kernel: debian-7.2 (default: Debian's own kernel, what users run), 6.12,
        /// 6.12-debug.
        #[arg(long, value_name = "NAME", default_value = "debian-7.2")]
        kernel: String,
    },
    /// Fuzz the metadata loader and decoder and the table-line and message parsers
    /// (cargo-fuzz).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (metadata, loader, table_line, message).
        #[arg(long)]
        only: Option<String>,
    },
    /// Where the guest kernel spends its instructions: a workload on dm-linear and on a
    /// dm-remap configuration, side by side, counted exactly in the benchmark's icount VM by
    /// a QEMU plugin (target/PROFILE-<kernel>-<config>-<workload>.md).
    Profile {
        /// The dm-remap configuration: remap-0 (no remaps), remap-1k, remap-allhit.
        #[arg(default_value = "remap-0")]
        config: String,
        /// The fio workload, as in the benchmark: randread-4k-qd32, randwrite-4k-qd32, ...
        #[arg(default_value = "randread-4k-qd32")]
        workload: String,
        /// fio runtime per run, seconds of virtual time.
        #[arg(long, default_value = "1")]
        runtime: String,
        /// Symbols listed.
        #[arg(long, default_value_t = 25)]
        top: usize,
        /// The kernel: 6.12 (default), debian-7.2, 6.12-slub (6.12 without SLUB_TINY).
        #[arg(long, value_name = "NAME", default_value = "6.12")]
        kernel: String,
    },
    /// Benchmark against dm-linear and null_blk in one instruction-counting VM boot;
    /// writes docs/BENCHMARKS.md.
    Bench {
        /// Interleaved repetitions.
        #[arg(long, default_value_t = 3)]
        reps: u32,
        /// fio runtime per run, seconds of virtual time.
        #[arg(long, default_value = "1")]
        runtime: String,
        /// Tabulate a saved console log (target/bench-console.log) instead of running.
        #[arg(long)]
        from_log: Option<std::path::PathBuf>,
        /// Run one part only and print its figures, writing no report: `ctr` (constructor
        /// time and kernel memory with 0 and 1M remaps, about 2 min).
        #[arg(long, value_name = "PART")]
        only: Option<String>,
        /// The kernel: 6.12 (default: the reference figures in docs/BENCHMARKS.md),
        /// debian-7.2 (to docs/BENCHMARKS-debian-7.2.md), 6.12-debug.
        #[arg(long, value_name = "NAME", default_value = "6.12")]
        kernel: String,
    },
}

fn main() {
    match real_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// The kernel picked by `--kernel NAME` or the older `--debug` flags (6.12 if neither).
fn flavor(name: Option<&str>, debug: bool) -> Result<Flavor> {
    match (name, debug) {
        (None, false) => Ok(Flavor::Test),
        (None, true) => Ok(Flavor::Debug),
        (Some(n), false) => Flavor::parse(n),
        (Some(n), true) => match Flavor::parse(n)? {
            Flavor::Debug => Ok(Flavor::Debug),
            _ => anyhow::bail!("--debug means --kernel 6.12-debug, not --kernel {n}"),
        },
    }
}

/// The module for a kernel, built or reused with everything before it: root, kernel.
fn build(paths: &env::Paths, flavor: Flavor) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    setup::setup(paths)?;
    let kdir = kernel::kernel(paths, flavor)?;
    let ko = module::build(paths, flavor)?;
    Ok((kdir, ko))
}

/// Everything a VM boot needs, built or reused: root, kernel, module.
fn prepare(paths: &env::Paths, flavor: Flavor) -> Result<(kernel::Boot, std::path::PathBuf)> {
    let (kdir, ko) = build(paths, flavor)?;
    Ok((kernel::boot(paths, flavor, &kdir)?, ko))
}

fn real_main() -> Result<i32> {
    let cli = Cli::parse();
    let paths = env::Paths::new()?;
    match cli.cmd {
        Cmd::Setup => setup::setup(&paths).map(|_| 0),
        Cmd::Kernel { kernel, debug } => {
            let flavor = flavor(kernel.as_deref(), debug)?;
            setup::setup(&paths)?;
            kernel::kernel(&paths, flavor).map(|_| 0)
        }
        Cmd::Build { kernel, debug } => build(&paths, flavor(kernel.as_deref(), debug)?).map(|_| 0),
        Cmd::Vm { kernel, debug, timeout, disk, cmd } => {
            let (kernel, module) = prepare(&paths, flavor(kernel.as_deref(), debug)?)?;
            // The test runner is there too, for running single tests by hand.
            let runner = test::build_vmtest(&paths)?;
            let cmd = if cmd.is_empty() { None } else { Some(vm::shell_join(&cmd)) };
            let opts = vm::VmOptions::new(kernel, module, runner, cmd, timeout).disk(disk);
            Ok(vm::run(&paths, &opts)?.status)
        }
        Cmd::Fuzz { seconds, only } => fuzz::fuzz(&paths, seconds, only.as_deref()),
        Cmd::Bench { reps, runtime, from_log, only, kernel } => match only.as_deref() {
            None => bench::bench(&paths, reps, &runtime, from_log.as_deref(), Flavor::parse(&kernel)?),
            Some("ctr") => bench::ctr_only(&paths, Flavor::parse(&kernel)?),
            Some(other) => anyhow::bail!("--only {other}: the only part that runs alone is `ctr`"),
        },
        Cmd::Package => package::package(&paths).map(|_| 0),
        Cmd::Profile { config, workload, runtime, top, kernel } => {
            profile::profile(&paths, &config, &workload, &runtime, top, Flavor::parse(&kernel)?)
        }
        Cmd::Test { filter, kernel, debug_kernel } => {
            let kernels = match (kernel, debug_kernel) {
                (None, false) => vec![Flavor::Test, Flavor::Debian72],
                (k, d) => vec![flavor(k.as_deref(), d)?],
            };
            test::test(&paths, filter.as_deref(), &kernels)
        }
        Cmd::Demo { kernel } => {
            let (kernel, module) = prepare(&paths, Flavor::parse(&kernel)?)?;
            let runner = test::build_vmtest(&paths)?;
            let opts = vm::VmOptions::new(kernel, module, runner, Some("vmtest demo".into()), 600);
            Ok(vm::run(&paths, &opts)?.status)
        }
    }
}
