//! aurum's one Delta Lake layer: every table the product writes or reads
//! (bronze, silver, gold, quarantine, quality, predictions, feedback) goes
//! through [`DeltaStore`].
//!
//! - [`store`]: open, read (whole, by files, streamed as Arrow batches),
//!   write (append or overwrite in one commit, schema changes only when
//!   allowed), data files with their statistics, history;
//! - [`lineage`]: what each commit was produced from, recorded in the commit
//!   info under [`LINEAGE_KEY`];
//! - [`maintenance`]: compaction and vacuum;
//! - [`location`]: where a table lives (a local path or an object-store
//!   URI) and the object store that reaches it, credentials from the
//!   environment;
//! - [`reader`]: the one read path for tables aurum did not write, through
//!   the Delta kernel (deletion vectors, column mapping, partition values,
//!   v2 checkpoints), refusing reader features it cannot honour by name;
//! - [`interop`]: polars frames to and from arrow-rs batches, zero-copy
//!   through the Arrow C data interface.
//!
//! This crate knows nothing of feature views, models or HTTP: it deals in
//! table names, frames, batches and commits.

pub mod error;
mod files;
pub mod interop;
pub mod lineage;
pub mod location;
pub mod maintenance;
pub mod reader;
mod schema;
pub mod store;

pub use error::{Error, Result};
pub use lineage::{CommitLineage, LINEAGE_KEY};
pub use location::StorageLocation;
pub use reader::{
    FILE_COLUMN, FILE_COMMITTED_COLUMN, ROW_COLUMN, ReadOptions, Scope, TableRead, read_table,
};
pub use store::{
    Advance, Commit, DEFAULT_ROWS_PER_FILE, DataFile, DeltaStore, SchemaChange, Sequence,
    WriteMode, WriteOptions,
};
