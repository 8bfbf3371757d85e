//! `aurum token new NAME --role ROLE [--file FILE]`: a new token for
//! `aurum serve --tokens FILE`, printed once and kept only as its hash.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// Options of `aurum token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TokenCommand {
    /// Make a token, append its hash to the token file and print the token
    /// (once: only its hash is kept).
    New(NewArgs),
}

#[derive(Debug, clap::Args)]
struct NewArgs {
    /// The token's name (recorded as who moved an alias, say).
    name: String,
    /// What it may do: read, write (and read) or admin (everything).
    #[arg(long)]
    role: auth::Role,
    /// The token file (`aurum serve --tokens FILE`), created if missing.
    #[arg(long, default_value = "tokens.toml")]
    file: PathBuf,
}

/// Runs `aurum token`.
pub fn run(args: TokenArgs) -> Result<()> {
    let TokenCommand::New(args) = args.command;
    let name = args.name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        bail!("invalid token name {name:?}: use 1-64 letters, digits, '-', '_', '.' or '@'");
    }
    // The file must stay valid, and a name must stay unique.
    if args.file.exists() && auth::Tokens::from_file(&args.file)?.has_name(name) {
        bail!("{} already has a token named {name:?}", args.file.display());
    }
    let (token, entry) = auth::new_token(name, args.role);
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Hashes, but still nobody else's business.
        options.mode(0o600);
    }
    let mut file = options
        .open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    file.write_all(entry.as_bytes())
        .with_context(|| format!("writing {}", args.file.display()))?;
    eprintln!(
        "token {name:?} ({}) added to {}; it is printed once, below, and kept only as its hash",
        args.role.as_str(),
        args.file.display()
    );
    println!("{token}");
    Ok(())
}
