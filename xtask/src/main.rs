//! `cargo xtask`: build automation for dm-remap, as plain Rust.

mod env;
mod kernel;
mod setup;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
        /// Build the sanitizer kernel (KASAN, lockdep, kmemleak) instead.
        #[arg(long)]
        debug: bool,
    },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let paths = env::Paths::new()?;
    match cli.cmd {
        Cmd::Setup => setup::setup(&paths),
        Cmd::Kernel { debug } => {
            setup::setup(&paths)?;
            kernel::kernel(&paths, if debug { kernel::Flavor::Debug } else { kernel::Flavor::Test }).map(|_| ())
        }
    }
}
