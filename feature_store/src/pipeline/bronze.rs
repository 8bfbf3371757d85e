//! Bronze ingest: source files → the bronze Delta table, raw.
//!
//! Bronze keeps every declared column as the text the file held, so that
//! nothing is lost before silver decides what a value means, plus where each
//! row came from: `_source_file`, `_source_row` (1-based,
//! the header not counted) and `_ingested_at`. A file is identified by its
//! content hash (recorded with the file name in the commit's lineage): a file
//! whose bytes were ingested before (under any name) is
//! skipped, so re-running ingest never duplicates rows. All new files of one
//! run land in one commit; a file that cannot be parsed fails the run before
//! anything is committed.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use sha2::{Digest, Sha256};

use super::options::{plan_sequence, step_id};
use crate::error::{Error, Result};
use crate::project::{Format, Source};
use delta::{CommitLineage, DeltaStore, SchemaChange, WriteOptions};

/// Bronze metadata columns.
pub const SOURCE_FILE: &str = "_source_file";
/// The 1-based row within the source file.
pub const SOURCE_ROW: &str = "_source_row";
/// When the row was ingested (UTC).
pub const INGESTED_AT: &str = "_ingested_at";
/// Why a stream event could not be decoded into the declared columns
/// (null for events that were): only in a Kafka source's bronze, where a
/// malformed event is landed like any other, so that silver quarantines it
/// with its partition and offset instead of the stream stopping or
/// dropping it.
pub const STREAM_ERROR: &str = "_error";
/// The payload of an event that could not be decoded, as text (null for
/// events that were). Bytes that are not UTF-8 are replaced by U+FFFD, so
/// a binary payload is kept readable but not byte for byte; its partition
/// and offset (`_source_file`, `_source_row`) find the original.
pub const STREAM_RAW: &str = "_raw";

/// What one ingest run did for one source.
#[derive(Debug, Clone, Default)]
pub struct IngestReport {
    /// Files matching the source's path.
    pub files_found: usize,
    /// Files ingested in this run, with their row counts.
    pub files_ingested: Vec<(String, usize)>,
    /// Files skipped because their content was ingested before.
    pub files_skipped: usize,
    /// Rows added.
    pub rows: usize,
    /// The bronze version after the run (`None` when the table does not
    /// exist because no file was ever found).
    pub version: Option<u64>,
    /// The bronze version before the run.
    pub previous_version: Option<u64>,
    /// The rows added, when any (handed to silver to avoid a re-read).
    pub frame: Option<DataFrame>,
    /// The run replaced bronze (a Delta source that removed or rewrote
    /// rows): silver recomputes in full.
    pub rewritten: bool,
}

/// The files a source's path or glob matches, sorted by name.
pub fn matching_files(root: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    let full = root.join(pattern);
    let dir = full.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(if full.is_file() { vec![full] } else { vec![] });
    }
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => return Err(Error::Io { path: dir, source }),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.path().is_file())
        .filter(|e| glob_match(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// Ingests the new files of `source` into its bronze table.
pub async fn ingest(
    store: &DeltaStore,
    root: &Path,
    source: &Source,
    run_id: &str,
    ingested_at_micros: i64,
) -> Result<IngestReport> {
    if source.format == Format::Delta {
        // A Delta source's rows carry the time the source wrote them.
        return super::delta_source::ingest(store, root, source, run_id).await;
    }
    if source.format == Format::Kafka {
        // `aurum stream` lands a Kafka source's events in bronze; a run
        // processes what it has landed so far.
        let version = store.latest_version(&source.bronze_table()).await?;
        return Ok(IngestReport {
            version,
            previous_version: version,
            ..IngestReport::default()
        });
    }
    let table = source.bronze_table();
    // Read first: a run that commits after this point makes ours conflict.
    let sequence = plan_sequence(store, &table, step_id(&table)).await?;
    let files = matching_files(root, &source.path)?;
    let previous_version = store.latest_version(&table).await?;
    let mut report = IngestReport {
        files_found: files.len(),
        version: previous_version,
        previous_version,
        ..IngestReport::default()
    };
    let (seen, seen_fingerprints) = if previous_version.is_some() {
        ingested_before(store, &table).await?
    } else {
        Default::default()
    };
    let mut input_fingerprints = BTreeMap::new();

    let mut frames = Vec::new();
    let mut input_files = BTreeMap::new();
    for file in files {
        let shown = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        // A file seen before with the same size and modification time is
        // not read again; any other file is identified by its content.
        let fingerprint = fingerprint(&file)?;
        if seen_fingerprints.contains(&(shown.clone(), fingerprint.clone())) {
            report.files_skipped += 1;
            continue;
        }
        let clock = std::time::Instant::now();
        let (sha, raw) = hash_and_parse(&file, source);
        let sha = sha?;
        if seen.contains(&sha) || input_files.values().any(|s| s == &sha) {
            report.files_skipped += 1;
            continue;
        }
        let raw = raw?;
        tracing::info!(file = %file.display(), rows = raw.height(), elapsed = ?clock.elapsed(), "bronze file parsed");
        let rows = raw.height();
        let frame = add_metadata(raw, &shown, ingested_at_micros)
            .map_err(Error::polars(format!("ingesting {}", file.display())))?;
        report.files_ingested.push((shown.clone(), rows));
        report.rows += rows;
        input_fingerprints.insert(shown.clone(), fingerprint);
        input_files.insert(shown, sha);
        frames.push(frame);
    }
    if frames.is_empty() {
        return Ok(report);
    }
    let all = stack(frames, source)?;
    let version = store
        .write(
            &table,
            &all,
            &WriteOptions {
                // New declared columns evolve the table; old rows read null.
                schema_change: SchemaChange::AddColumns,
                sequence: Some(sequence),
                ..WriteOptions::append()
            },
            &CommitLineage {
                operation: "bronze".into(),
                input_files,
                input_fingerprints,
                definition_hash: crate::project::hash_json("aurum-bronze-v1", &source.columns),
                run_id: run_id.to_string(),
                ..CommitLineage::default()
            },
        )
        .await?;
    report.version = Some(version);
    report.frame = Some(all);
    Ok(report)
}

/// The content hashes and the fingerprints (shown path, [`fingerprint`])
/// of the files committed to bronze `table` before.
async fn ingested_before(
    store: &DeltaStore,
    table: &str,
) -> Result<(HashSet<String>, HashSet<(String, String)>)> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut seen_fingerprints: HashSet<(String, String)> = HashSet::new();
    for lineage in store
        .history(table)
        .await?
        .into_iter()
        .filter_map(|c| c.lineage)
    {
        seen.extend(lineage.input_files.into_values());
        seen_fingerprints.extend(lineage.input_fingerprints);
    }
    Ok((seen, seen_fingerprints))
}

/// The file's sha256 and its rows. Hashed and parsed at once: the hash
/// decides whether the parse is used, and both read the whole file.
fn hash_and_parse(file: &Path, source: &Source) -> (Result<String>, Result<DataFrame>) {
    std::thread::scope(|scope| {
        let hashing = scope.spawn(|| file_sha256(file));
        let raw = read_raw(file, source);
        let sha = hashing
            .join()
            .unwrap_or_else(|_| Err(Error::Internal("the hashing thread panicked".into())));
        (sha, raw)
    })
}

/// The ingested files' frames as one, in order.
fn stack(frames: Vec<DataFrame>, source: &Source) -> Result<DataFrame> {
    let mut iter = frames.into_iter();
    let mut all = iter.next().unwrap_or_default();
    for f in iter {
        all.vstack_mut(&f).map_err(Error::polars(format!(
            "stacking bronze files of {}",
            source.name
        )))?;
    }
    all.rechunk_mut();
    Ok(all)
}

/// A file's `size:modified-nanoseconds`.
fn fingerprint(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(format!("{}:{modified}", meta.len()))
}

/// The sha256 of a file, streamed.
pub fn file_sha256(path: &Path) -> Result<String> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Reads a file's declared columns as text.
fn read_raw(file: &Path, source: &Source) -> Result<DataFrame> {
    let declared: Vec<&str> = source.columns.iter().map(|c| c.name.as_str()).collect();
    let frame = match source.format {
        Format::Csv => read_csv(file, &declared)?,
        Format::Jsonl => read_jsonl(file, &declared)?,
        Format::Parquet => read_parquet(file, &declared)?,
        Format::Delta | Format::Kafka => {
            return Err(Error::Internal(format!(
                "{} is a {:?} source, not a file",
                source.name, source.format
            )));
        }
    };
    Ok(frame)
}

fn read_csv(file: &Path, declared: &[&str]) -> Result<DataFrame> {
    let header = csv_header(file)?;
    if let Some(missing) = declared.iter().find(|c| !header.iter().any(|h| h == *c)) {
        return Err(Error::Parse {
            file: file.to_path_buf(),
            row: Some(0),
            message: format!(
                "the header has no column {missing:?} (header: {})",
                header.join(",")
            ),
        });
    }
    // Every column as text: silver, not the reader, decides what a value
    // means, and a value that does not fit goes to quarantine.
    let df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .with_columns(Some(declared.iter().map(|c| (*c).into()).collect()))
        .try_into_reader_with_file_path(Some(file.to_path_buf()))
        .and_then(|reader| reader.finish());
    match df {
        // Files may list the columns in any order; bronze keeps the declared one.
        Ok(df) => df
            .select(declared.iter().copied())
            .map_err(|e| Error::Parse {
                file: file.to_path_buf(),
                row: Some(0),
                message: e.to_string(),
            }),
        Err(e) => Err(Error::Parse {
            file: file.to_path_buf(),
            row: locate_bad_csv_row(file, header.len()),
            message: e.to_string(),
        }),
    }
}

fn csv_header(file: &Path) -> Result<Vec<String>> {
    use std::io::BufRead;
    let handle = std::fs::File::open(file).map_err(|source| Error::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let mut line = String::new();
    std::io::BufReader::new(handle)
        .read_line(&mut line)
        .map_err(|source| Error::Io {
            path: file.to_path_buf(),
            source,
        })?;
    if line.trim().is_empty() {
        return Err(Error::Parse {
            file: file.to_path_buf(),
            row: Some(0),
            message: "the file is empty or has no header".into(),
        });
    }
    Ok(split_record(line.trim_end_matches(['\r', '\n'])))
}

/// Splits one CSV record (RFC 4180 quoting) into fields.
fn split_record(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// Finds the first data row whose field count differs from the header's,
/// to name it when the reader fails. Only runs on the error path.
fn locate_bad_csv_row(file: &Path, fields: usize) -> Option<usize> {
    let bytes = std::fs::read(file).ok()?;
    let mut row = 0usize;
    let mut count = 1usize;
    let mut quoted = false;
    let mut empty_line = true;
    for &b in &bytes {
        match b {
            b'"' => {
                quoted = !quoted;
                empty_line = false;
            }
            b',' if !quoted => {
                count += 1;
                empty_line = false;
            }
            b'\n' if !quoted => {
                if row > 0 && !empty_line && count != fields {
                    return Some(row);
                }
                row += 1;
                count = 1;
                empty_line = true;
            }
            b'\r' => {}
            _ => empty_line = false,
        }
    }
    (quoted || (!empty_line && count != fields)).then_some(row)
}

fn read_jsonl(file: &Path, declared: &[&str]) -> Result<DataFrame> {
    let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::new(); declared.len()];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Parse {
            file: file.to_path_buf(),
            row: Some(i + 1),
            message: format!("invalid JSON: {e}"),
        })?;
        let Some(object) = value.as_object() else {
            return Err(Error::Parse {
                file: file.to_path_buf(),
                row: Some(i + 1),
                message: "expected a JSON object".into(),
            });
        };
        for (j, name) in declared.iter().enumerate() {
            let text = match object.get(*name) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            };
            columns[j].push(text);
        }
    }
    let columns: Vec<Column> = declared
        .iter()
        .zip(columns)
        .map(|(name, values)| Column::new((*name).into(), values))
        .collect();
    DataFrame::new_infer_height(columns)
        .map_err(Error::polars(format!("reading {}", file.display())))
}

fn read_parquet(file: &Path, declared: &[&str]) -> Result<DataFrame> {
    let handle = std::fs::File::open(file).map_err(|source| Error::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let parse = |e: PolarsError| Error::Parse {
        file: file.to_path_buf(),
        row: None,
        message: e.to_string(),
    };
    let mut reader = ParquetReader::new(handle);
    let schema = reader.schema().map_err(parse)?;
    if let Some(missing) = declared.iter().find(|c| !schema.contains(c)) {
        return Err(Error::Parse {
            file: file.to_path_buf(),
            row: None,
            message: format!("the file has no column {missing:?}"),
        });
    }
    let df = reader
        .with_columns(Some(declared.iter().map(|c| c.to_string()).collect()))
        .finish()
        .map_err(parse)?;
    let exprs: Vec<Expr> = declared
        .iter()
        .map(|c| col(*c).cast(DataType::String))
        .collect();
    df.lazy().select(exprs).collect().map_err(parse)
}

pub(super) fn add_metadata(
    raw: DataFrame,
    file: &str,
    ingested_at: i64,
) -> PolarsResult<DataFrame> {
    let rows = raw.height() as i64;
    let mut raw = raw;
    raw.with_column(Column::new(
        SOURCE_ROW.into(),
        (1..=rows).collect::<Vec<i64>>(),
    ))?;
    raw.lazy()
        .with_columns([
            lit(file.to_string()).alias(SOURCE_FILE),
            lit(ingested_at)
                .cast(DataType::Datetime(
                    TimeUnit::Microseconds,
                    Some(TimeZone::UTC),
                ))
                .alias(INGESTED_AT),
        ])
        .collect()
}

/// `*` matches any run of characters, `?` one character.
fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.csv", "part-1.csv"));
        assert!(glob_match("part-?.csv", "part-1.csv"));
        assert!(!glob_match("*.csv", "part-1.json"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn records_split_with_quotes() {
        assert_eq!(
            split_record("a,\"b,c\",\"d\"\"e\""),
            vec!["a", "b,c", "d\"e"]
        );
    }

    #[test]
    fn a_ragged_csv_row_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.csv");
        std::fs::write(&file, "a,b\n1,2\n3,4\n5,6,7\n8,9\n").unwrap();
        assert_eq!(locate_bad_csv_row(&file, 2), Some(3));
        let err = read_csv(&file, &["a", "b"]).unwrap_err().to_string();
        assert!(err.contains("x.csv at row 3"), "{err}");
    }

    #[test]
    fn parquet_columns_arrive_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.parquet");
        let mut df =
            df!("a" => [1i64, 2], "b" => [Some(0.5f64), None], "extra" => ["x", "y"]).unwrap();
        ParquetWriter::new(std::fs::File::create(&file).unwrap())
            .finish(&mut df)
            .unwrap();
        let raw = read_parquet(&file, &["b", "a"]).unwrap();
        assert_eq!(raw.get_column_names(), ["b", "a"]);
        assert_eq!(raw.column("a").unwrap().dtype(), &DataType::String);
        assert_eq!(raw.column("b").unwrap().null_count(), 1);
        let err = read_parquet(&file, &["c"]).unwrap_err().to_string();
        assert!(
            err.contains("x.parquet") && err.contains("no column \"c\""),
            "{err}"
        );
    }

    #[test]
    fn bad_json_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.jsonl");
        std::fs::write(&file, "{\"a\": 1}\n{\"a\": \n").unwrap();
        let err = read_jsonl(&file, &["a"]).unwrap_err().to_string();
        assert!(err.contains("x.jsonl at row 2"), "{err}");
        std::fs::write(&file, "{\"a\": 1, \"b\": \"x\"}\n{\"a\": null}\n").unwrap();
        let df = read_jsonl(&file, &["a", "b"]).unwrap();
        assert_eq!(df.height(), 2);
        assert_eq!(df.column("b").unwrap().null_count(), 1);
    }
}
