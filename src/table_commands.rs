//! `aurum table show`: what aurum sees in any Delta table, read through the
//! one protocol-complete read path ([`delta::read_table`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::io::Write;

use anyhow::{Context, Result};
use arrow_array::RecordBatch;

/// Options of `aurum table`.
#[derive(Debug, clap::Args)]
pub struct TableArgs {
    #[command(subcommand)]
    command: TableCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TableCommand {
    /// Print a Delta table's version, schema, row count and first rows, as
    /// aurum reads it (deletion vectors applied, column mapping resolved,
    /// partition values as columns).
    Show(ShowArgs),
}

/// Options of `aurum table show`.
#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// The table: a local path or a URI (file://, s3://, az://, abfss://,
    /// gs://); credentials come from the standard AWS_*, AZURE_* and
    /// GOOGLE_* environment variables.
    uri: String,
    /// The table version (default: the latest).
    #[arg(long)]
    version: Option<u64>,
    /// Rows to print (every row is still counted).
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// Print JSON (version, schema, row count, the rows) instead of a table.
    #[arg(long, conflicts_with = "out")]
    json: bool,
    /// Write every row of the version to this Parquet file instead of
    /// printing rows.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `aurum table`.
pub async fn run(args: TableArgs) -> Result<()> {
    match args.command {
        TableCommand::Show(args) => show(args).await,
    }
}

async fn show(args: ShowArgs) -> Result<()> {
    let location = delta::StorageLocation::parse(&args.uri, &BTreeMap::new())?;
    let keep_rows = if args.out.is_some() {
        None
    } else {
        Some(args.limit)
    };
    let read = delta::read_table(
        &location,
        delta::ReadOptions {
            version: args.version,
            keep_rows,
            ..delta::ReadOptions::default()
        },
    )
    .await?;
    if let Some(out) = &args.out {
        write_parquet(out, &read)?;
        println!(
            "{location} version {}: {} rows written to {}",
            read.version,
            read.rows,
            out.display()
        );
        return Ok(());
    }
    if args.json {
        let answer = serde_json::json!({
            "table": location.to_string(),
            "version": read.version,
            "rows": read.rows,
            "schema": read.schema.fields().iter().map(|f| serde_json::json!({
                "name": f.name(),
                "type": f.data_type().to_string(),
                "nullable": f.is_nullable(),
            })).collect::<Vec<_>>(),
            "data": json_rows(&read.batches)?,
        });
        let text = serde_json::to_string_pretty(&answer)?;
        return print_all(|out| writeln!(out, "{text}"));
    }
    let frame = delta::interop::batches_to_frame(&read.schema, &read.batches);
    // polars cannot hold every Delta type (nested maps, say): then the rows
    // are printed as JSON lines.
    let rows = match &frame {
        Ok(_) => Vec::new(),
        Err(_) => json_rows(&read.batches)?,
    };
    print_all(|out| {
        writeln!(out, "{location}")?;
        writeln!(out, "version {}, {} rows", read.version, read.rows)?;
        writeln!(out, "schema:")?;
        for field in read.schema.fields() {
            let null = if field.is_nullable() { "" } else { " not null" };
            writeln!(out, "  {}: {}{null}", field.name(), field.data_type())?;
        }
        match &frame {
            Ok(frame) => writeln!(out, "{frame}")?,
            Err(_) => {
                for row in &rows {
                    writeln!(out, "{row}")?;
                }
            }
        }
        Ok(())
    })
}

/// Writes to standard output; a reader that went away (`| head`) ends the
/// output quietly instead of failing the command.
fn print_all(write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// The rows of `batches` as JSON objects (timestamps as ISO 8601 text).
fn json_rows(batches: &[RecordBatch]) -> Result<Vec<serde_json::Value>> {
    let mut writer = arrow_json::ArrayWriter::new(Vec::new());
    for batch in batches {
        writer.write(batch).context("rendering rows as JSON")?;
    }
    writer.finish().context("rendering rows as JSON")?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// Writes every row of `read` to `out`, through a temporary file beside it
/// so that a failed write never leaves a partial file under that name.
fn write_parquet(out: &std::path::Path, read: &delta::TableRead) -> Result<()> {
    let partial = out.with_extension("parquet.partial");
    write_parquet_file(&partial, read).inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    std::fs::rename(&partial, out).with_context(|| format!("writing {}", out.display()))
}

fn write_parquet_file(out: &std::path::Path, read: &delta::TableRead) -> Result<()> {
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, read.schema.clone(), None)
        .with_context(|| format!("writing {}", out.display()))?;
    for batch in &read.batches {
        writer
            .write(batch)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    writer
        .close()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
