//! The bench binaries' command line and log set-up (included with
//! `#[path]`; each bench uses some of it).
#![allow(dead_code)]

use anyhow::{Context, Result, bail};

/// Reads the command line: `flag(name, value)` handles each flag the bench
/// knows (taking its value with `value()`: the next argument, or an error
/// when there is none) and answers `false` for one it does not, which is
/// refused. Cargo's own `--bench` is skipped; every
/// other word is a flag.
pub fn flags(
    flag: impl FnMut(&str, &mut dyn FnMut() -> Result<String>) -> Result<bool>,
) -> Result<()> {
    read(None, flag)
}

/// [`flags`] for benches that run modes: words without a leading dash are
/// returned, in order, as the modes asked for.
pub fn flags_and_modes(
    flag: impl FnMut(&str, &mut dyn FnMut() -> Result<String>) -> Result<bool>,
) -> Result<Vec<String>> {
    let mut modes = Vec::new();
    read(Some(&mut modes), flag)?;
    Ok(modes)
}

fn read(
    mut modes: Option<&mut Vec<String>>,
    mut flag: impl FnMut(&str, &mut dyn FnMut() -> Result<String>) -> Result<bool>,
) -> Result<()> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context("a flag needs a value");
        match (arg.as_str(), modes.as_deref_mut()) {
            ("--bench", _) => {} // cargo passes it
            (mode, Some(modes)) if !mode.starts_with('-') => modes.push(mode.to_string()),
            (name, _) => {
                if !flag(name, &mut value)? {
                    bail!("unknown flag {name}");
                }
            }
        }
    }
    Ok(())
}

/// Logs to stderr what `AURUM_LOG` asks for (warnings when it is unset):
/// `AURUM_LOG=info` shows the time of each stage.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AURUM_LOG")
                // As `aurum` does: the kernel's ERROR for a table that
                // does not exist yet is a question aurum answers itself.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,buoyant_kernel::snapshot::builder=off")
                }),
        )
        .with_writer(std::io::stderr)
        .init();
}
