//! The prediction log: every prediction (live and shadow) appended to the
//! [`crate::predictions`] Delta table, for drift analysis, feedback joins
//! and retraining, and handed to the [`Monitor`].
//!
//! Never on the request path: a handler hands its records to a bounded
//! queue with `try_send` (no waiting), and one writer task commits them in
//! batches (up to [`LogOptions::max_batch`] rows, or whatever arrived within
//! [`LogOptions::flush_interval`]). When the queue is full — the writer
//! cannot keep up, or the table cannot be written — records are dropped
//! and counted ([`LogStats::dropped`]), so overload never turns into memory
//! growth or latency. [`PredictionLog::close`] flushes what is queued
//! (graceful shutdown).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use delta::{CommitLineage, DeltaStore};
use tokio::sync::{Notify, mpsc};

use crate::monitor::Monitor;
use crate::predictions;
use crate::record::PredictionRecord;

/// How the log batches.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Records queued before new ones are dropped.
    pub capacity: usize,
    /// The most records one commit holds.
    pub max_batch: usize,
    /// The longest a record waits for its commit.
    pub flush_interval: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            capacity: 100_000,
            max_batch: 50_000,
            flush_interval: Duration::from_secs(5),
        }
    }
}

/// Counters of the log, for `/metrics`.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Records committed.
    pub written: AtomicU64,
    /// Records dropped: the queue was full, or their commit failed.
    pub dropped: AtomicU64,
    /// Commits that failed (their records are counted as dropped).
    pub failed_commits: AtomicU64,
}

/// The handle request handlers log through.
#[derive(Debug)]
pub struct PredictionLog {
    queue: mpsc::Sender<PredictionRecord>,
    capacity: usize,
    stats: Arc<LogStats>,
    stop: Arc<Notify>,
    closed: AtomicBool,
    writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PredictionLog {
    /// Starts the writer task (call inside a tokio runtime), appending to
    /// table `table` of `store`.
    pub fn start(store: DeltaStore, table: &str, options: LogOptions) -> Self {
        Self::start_with(Some((store, table.to_string())), None, options)
    }

    /// Starts the writer task (call inside a tokio runtime): records are
    /// appended to `table` (a store and a table name) when given, and then
    /// handed to `monitor` when given.
    pub fn start_with(
        table: Option<(DeltaStore, String)>,
        monitor: Option<Arc<Monitor>>,
        options: LogOptions,
    ) -> Self {
        let (queue, records) = mpsc::channel(options.capacity.max(1));
        let stats = Arc::new(LogStats::default());
        let stop = Arc::new(Notify::new());
        let writer = tokio::spawn(write_loop(
            table,
            monitor,
            options.clone(),
            records,
            stats.clone(),
            stop.clone(),
        ));
        PredictionLog {
            queue,
            capacity: options.capacity.max(1),
            stats,
            stop,
            closed: AtomicBool::new(false),
            writer: std::sync::Mutex::new(Some(writer)),
        }
    }

    /// Queues `record` without waiting; drops and counts it when the queue
    /// is full or the log is closed.
    #[inline]
    pub fn record(&self, record: PredictionRecord) {
        if self.queue.try_send(record).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records waiting to be written.
    pub fn queued(&self) -> usize {
        self.capacity - self.queue.capacity()
    }

    /// The log's counters.
    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    /// Writes what is queued and stops the writer. Records logged later are
    /// dropped (and counted).
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stop.notify_one();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer
            && let Err(e) = writer.await
        {
            tracing::error!(error = %e, "the prediction log writer failed");
        }
    }
}

async fn write_loop(
    table: Option<(DeltaStore, String)>,
    monitor: Option<Arc<Monitor>>,
    options: LogOptions,
    mut records: mpsc::Receiver<PredictionRecord>,
    stats: Arc<LogStats>,
    stop: Arc<Notify>,
) {
    // One thread writes every batch. Each batch allocates tens of MiB for a
    // moment (the frame, the Parquet pages, the monitor's rows); on
    // whichever thread of the blocking pool happened to be idle, every
    // thread's allocator kept its own high-water mark of those, and the
    // server's resident memory crept up for minutes (BENCHMARKS.md, the
    // soak). Without the thread (it could not be started), the blocking
    // pool does the work as before.
    let worker = match Worker::start() {
        Ok(worker) => Some(worker),
        Err(e) => {
            tracing::warn!(error = %e, "no prediction log thread; writing on the blocking pool");
            None
        }
    };
    let mut stopping = false;
    while !stopping {
        let mut batch = Vec::new();
        tokio::select! {
            n = records.recv_many(&mut batch, options.max_batch) => {
                if n == 0 {
                    return;
                }
            }
            () = stop.notified() => stopping = true,
        }
        let deadline = tokio::time::Instant::now() + options.flush_interval;
        while !stopping && batch.len() < options.max_batch {
            let room = options.max_batch - batch.len();
            tokio::select! {
                n = records.recv_many(&mut batch, room) => {
                    if n == 0 {
                        stopping = true;
                    }
                }
                () = tokio::time::sleep_until(deadline) => break,
                () = stop.notified() => stopping = true,
            }
        }
        if stopping {
            records.close();
            while let Ok(record) = records.try_recv() {
                batch.push(record);
            }
        }
        // Building the frame and encoding Parquet are CPU work: done off the
        // runtime's workers, so no request waits behind them.
        let job = Batch {
            records: batch,
            table: table.clone(),
            monitor: monitor.clone(),
            stats: stats.clone(),
            max_batch: options.max_batch.max(1),
            runtime: tokio::runtime::Handle::current(),
        };
        let done = match &worker {
            Some(worker) => worker.run(job).await,
            None => tokio::task::spawn_blocking(move || job.write())
                .await
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = done {
            tracing::error!(error = %e, "a prediction log commit stopped");
        }
    }
    drop(worker);
}

/// One batch of records to commit and hand to the monitor.
struct Batch {
    records: Vec<PredictionRecord>,
    table: Option<(DeltaStore, String)>,
    monitor: Option<Arc<Monitor>>,
    stats: Arc<LogStats>,
    max_batch: usize,
    runtime: tokio::runtime::Handle,
}

impl Batch {
    /// The batch with its Delta work done on `runtime`.
    fn on(self, runtime: tokio::runtime::Handle) -> Self {
        Batch { runtime, ..self }
    }

    /// Commits the records (in chunks of `max_batch`), then lets the
    /// monitor take them. Runs on a thread outside the runtime.
    fn write(self) {
        // Without a table only the monitor reads the records.
        if let Some((store, table)) = &self.table {
            for chunk in self.records.chunks(self.max_batch) {
                self.runtime
                    .block_on(commit(store, table, chunk, &self.stats));
            }
        }
        // The monitor takes the rows (their buffers move, no copies),
        // after they are committed.
        if let Some(monitor) = self.monitor {
            monitor.observe(self.records);
        }
    }
}

/// The thread that writes the log's batches, one at a time, with a runtime
/// of its own for their Delta work.
struct Worker {
    jobs: std::sync::mpsc::Sender<(Batch, tokio::sync::oneshot::Sender<Result<(), String>>)>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The commits' file reads and writes run here, not on the server's
    /// runtime. object_store's local files and the Delta kernel's log
    /// reads take a blocking-pool thread per file: on the server's pool
    /// that grew it from 16 threads to 40–60, and each new thread's
    /// allocator heap kept what it had touched (BENCHMARKS.md, the soak).
    /// Here the pool is at most [`LOG_BLOCKING_THREADS`]; the checkpoint
    /// every hundred commits, which reads a hundred commits at once, runs
    /// on threads of its own that end with it (`DeltaStore::append`, for
    /// local tables). Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

/// Blocking-pool threads of the log's own runtime.
const LOG_BLOCKING_THREADS: usize = 4;

impl Worker {
    fn start() -> std::io::Result<Self> {
        // Multi-threaded: the Delta kernel's executor calls
        // `block_in_place`, which a current-thread runtime refuses.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(LOG_BLOCKING_THREADS)
            .thread_name("aurum-log-io")
            .enable_all()
            .build()?;
        let (jobs, queue) =
            std::sync::mpsc::channel::<(Batch, tokio::sync::oneshot::Sender<Result<(), String>>)>();
        let thread = std::thread::Builder::new()
            .name("aurum-prediction-log".into())
            .spawn(move || {
                while let Ok((batch, done)) = queue.recv() {
                    // A panic in one batch is reported, as the blocking
                    // pool's join did, and the thread goes on.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        batch.write();
                    }))
                    .map_err(|panic| {
                        panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic".into())
                    });
                    let _ = done.send(result);
                }
            })?;
        Ok(Worker {
            jobs,
            thread: Some(thread),
            runtime: Some(runtime),
        })
    }

    /// Writes `batch` on the thread; waits for it without holding a worker
    /// of the runtime.
    async fn run(&self, batch: Batch) -> Result<(), String> {
        let batch = match &self.runtime {
            Some(runtime) => batch.on(runtime.handle().clone()),
            None => batch,
        };
        let (done, finished) = tokio::sync::oneshot::channel();
        if self.jobs.send((batch, done)).is_err() {
            return Err("the prediction log thread is gone".into());
        }
        finished
            .await
            .unwrap_or_else(|_| Err("the prediction log thread is gone".into()))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; it has no batch in
        // hand (each `run` waited for its own).
        let (closed, _) = std::sync::mpsc::channel();
        self.jobs = closed;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Dropped from the writer task: a runtime may not wait for its
        // threads inside another runtime. It has no work left.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn commit(store: &DeltaStore, table: &str, records: &[PredictionRecord], stats: &LogStats) {
    if records.is_empty() {
        return;
    }
    let n = records.len() as u64;
    let result = match predictions::to_frame(records) {
        Ok(df) => {
            let lineage = CommitLineage {
                operation: "prediction_log".into(),
                ..CommitLineage::default()
            };
            // A blind append: the table's state is not loaded for each
            // commit (see `DeltaStore::append`).
            store
                .append(table, &df, &lineage)
                .await
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(version) => {
            stats.written.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(records = n, version, "prediction log committed");
        }
        Err(e) => {
            stats.dropped.fetch_add(n, Ordering::Relaxed);
            stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            tracing::error!(records = n, error = %e, "a prediction log commit failed; its records are dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;
    use crate::predictions::TABLE;

    fn record(i: usize) -> PredictionRecord {
        PredictionRecord {
            row: 0,
            request_id: Arc::from(format!("r{i}")),
            time_micros: 1_700_000_000_000_000 + i as i64,
            model: Arc::from("m"),
            version: 3,
            arm: Arc::from("champion"),
            shadow: i % 2 == 1,
            entity: format!("customer_id={i}"),
            feature_names: Arc::from(vec!["v:a".to_string(), "v:b".to_string()]),
            features: vec![i as f32, f32::NAN],
            outputs: vec![0.25],
            latency_micros: 40,
        }
    }

    // A current-thread runtime: the writer cannot run until the test awaits,
    // so the queue fills deterministically.
    #[tokio::test(flavor = "current_thread")]
    async fn records_are_committed_in_batches_and_flushed_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeltaStore::new(dir.path());
        let log = PredictionLog::start(
            store.clone(),
            TABLE,
            LogOptions {
                capacity: 1_000,
                max_batch: 400,
                flush_interval: Duration::from_secs(60),
            },
        );
        for i in 0..1_000 {
            log.record(record(i));
        }
        assert_eq!(log.queued(), 1_000);
        // The queue holds 1,000: the rest are dropped and counted.
        for i in 1_000..1_010 {
            log.record(record(i));
        }
        log.close().await;
        assert_eq!(
            (
                log.stats().written.load(Ordering::Relaxed),
                log.stats().failed_commits.load(Ordering::Relaxed)
            ),
            (1_000, 0)
        );
        assert_eq!(log.stats().dropped.load(Ordering::Relaxed), 10);
        let (df, _) = store.read(TABLE, None).await.unwrap();
        assert_eq!(df.height(), 1_000);
        // Files are read in no particular order: find request r7.
        let ids = df.column("request_id").unwrap().str().unwrap();
        let at = ids.iter().position(|id| id == Some("r7")).unwrap();
        let features = df.column("features").unwrap().list().unwrap();
        let first = features.get_as_series(at).unwrap();
        assert_eq!(first.f32().unwrap().get(0), Some(7.0));
        assert_eq!(first.f32().unwrap().get(1), None, "NaN is logged as null");
        assert_eq!(
            df.column("arm").unwrap().str().unwrap().get(0),
            Some("champion")
        );
        // After close, records are dropped, not lost silently.
        log.record(record(0));
        assert_eq!(log.stats().dropped.load(Ordering::Relaxed), 11);
    }
}
