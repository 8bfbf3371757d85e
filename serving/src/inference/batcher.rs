//! Dynamic micro-batching: a bounded queue in front of a version's session
//! pool, served by one worker thread per session that gathers waiting
//! requests up to `max_rows` rows or `max_delay`, runs them as one
//! inference and answers each.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use super::error::{Error, Result};
use super::policy::BatchOptions;
use super::pool::{Outputs, SessionPool};
use crate::metrics::{Histogram, ROW_BUCKETS};

/// A request waiting to be batched.
struct Job {
    features: Vec<f32>,
    rows: usize,
    reply: tokio::sync::oneshot::Sender<Result<Outputs>>,
}

/// The queue in front of a model's batching workers. Dropping it closes the
/// queue, and the workers exit once it is empty.
pub(crate) struct Batcher {
    queue: mpsc::SyncSender<Job>,
    depth: Arc<AtomicUsize>,
    rows: Arc<Histogram>,
}

/// Requests a batcher queues before refusing more (per model).
const BATCH_QUEUE: usize = 4096;

impl Batcher {
    /// Starts one worker per session of `pool`, named after `label`.
    pub(crate) fn start(label: &str, pool: Arc<SessionPool>, options: BatchOptions) -> Self {
        let (queue, jobs) = mpsc::sync_channel::<Job>(BATCH_QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        let depth = Arc::new(AtomicUsize::new(0));
        let rows = Arc::new(Histogram::counts(ROW_BUCKETS));
        for worker in 0..pool.size() {
            let (jobs, pool, depth, rows) =
                (jobs.clone(), pool.clone(), depth.clone(), rows.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("batch-{label}-{worker}"))
                .spawn(move || batch_worker(&jobs, &pool, &depth, &rows, options));
            if let Err(e) = spawned {
                tracing::error!(model = label, error = %e, "starting a batching worker");
            }
        }
        Batcher { queue, depth, rows }
    }

    /// Queues `rows` rows of `features` and waits for their outputs.
    pub(crate) async fn submit(&self, features: Vec<f32>, rows: usize) -> Result<Outputs> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.depth.fetch_add(1, Ordering::Relaxed);
        if self
            .queue
            .try_send(Job {
                features,
                rows,
                reply,
            })
            .is_err()
        {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::QueueFull);
        }
        answer.await.unwrap_or(Err(Error::QueueClosed))
    }

    /// Rows per batched inference.
    pub(crate) fn rows(&self) -> &Histogram {
        &self.rows
    }

    /// Requests waiting in the queue.
    pub(crate) fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

/// Takes the first waiting job, then more until `max_rows` rows or
/// `max_delay` after the first, runs them as one inference and answers
/// each. Workers take turns collecting (the queue's lock), and run in
/// parallel.
fn batch_worker(
    jobs: &Mutex<mpsc::Receiver<Job>>,
    pool: &SessionPool,
    depth: &AtomicUsize,
    batch_rows: &Histogram,
    options: BatchOptions,
) {
    while let Some(batch) = collect(jobs, options) {
        depth.fetch_sub(batch.len(), Ordering::Relaxed);
        let rows: usize = batch.iter().map(|j| j.rows).sum();
        batch_rows.observe(rows as f64);
        let mut features = Vec::with_capacity(rows * pool.width());
        for job in &batch {
            features.extend_from_slice(&job.features);
        }
        deliver(batch, pool.run(&features, rows));
    }
}

/// The next batch: the first waiting job and those that arrive within
/// `max_delay` of it, up to `max_rows` rows; `None` once the queue is
/// closed.
fn collect(jobs: &Mutex<mpsc::Receiver<Job>>, options: BatchOptions) -> Option<Vec<Job>> {
    let queue = jobs.lock().unwrap_or_else(|e| e.into_inner());
    let first = queue.recv().ok()?;
    let deadline = Instant::now() + options.max_delay;
    let mut rows = first.rows;
    let mut batch = vec![first];
    while rows < options.max_rows {
        let left = deadline.saturating_duration_since(Instant::now());
        match queue.recv_timeout(left) {
            Ok(job) => {
                rows += job.rows;
                batch.push(job);
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Hands each job of `batch` its rows of `outputs` (or the error).
fn deliver(batch: Vec<Job>, outputs: Result<Outputs>) {
    match outputs {
        Ok(outputs) => {
            let mut outputs = outputs.into_iter();
            for job in batch {
                let mine: Outputs = outputs.by_ref().take(job.rows).collect();
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(e) => {
            for job in batch {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}
