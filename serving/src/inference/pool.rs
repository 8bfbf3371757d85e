//! A loaded version's ONNX Runtime sessions. Running a [`Model`] needs
//! exclusive access, so concurrent inferences take different sessions.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use onnx::{Matrix, Model};

use super::error::{Error, Result};

/// Each row's output values.
pub type Outputs = Vec<Vec<f32>>;

/// A version's sessions, with what running one needs to know.
pub(crate) struct SessionPool {
    /// Input columns per row (the registered features).
    width: usize,
    /// The position of the first float output, found once at load.
    output: Option<usize>,
    sessions: Vec<Mutex<Model>>,
    next: AtomicUsize,
}

impl SessionPool {
    /// A pool over `sessions` for inputs of `width` columns, answering with
    /// output `output`.
    pub(crate) fn new(sessions: Vec<Mutex<Model>>, width: usize, output: Option<usize>) -> Self {
        SessionPool {
            width,
            output,
            sessions,
            next: AtomicUsize::new(0),
        }
    }

    /// Input columns per row.
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// Sessions in the pool.
    pub(crate) fn size(&self) -> usize {
        self.sessions.len()
    }

    /// Runs `f` with a session: the first free one from a rotating start,
    /// or waits on one when all are busy.
    pub(crate) fn with_session<T>(&self, f: impl FnOnce(&mut Model) -> T) -> T {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.sessions.len();
        let mut guard = (0..n)
            .find_map(|k| self.sessions[(start + k) % n].try_lock().ok())
            .unwrap_or_else(|| {
                self.sessions[start % n]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
            });
        f(&mut guard)
    }

    /// Runs `rows` rows of `features` (row-major) and returns each row's
    /// values of the float output.
    pub(crate) fn run(&self, features: &[f32], rows: usize) -> Result<Outputs> {
        let width = self.width;
        if features.len() != rows * width {
            return Err(Error::InputShape {
                values: features.len(),
                rows,
                width,
            });
        }
        // Built before a session is taken, so the lock covers only the run.
        let input = Matrix::new(features, rows, width)?;
        let output = self.output.ok_or(Error::NoFloatOutput)?;
        self.with_session(|session| -> Result<Outputs> {
            let outputs = session.run_matrix(input)?;
            let (shape, values) = outputs.f32(output)?;
            let per_row = values.len().checked_div(rows).unwrap_or(0);
            if per_row * rows != values.len() {
                return Err(Error::OutputShape {
                    shape: shape.to_vec(),
                    rows,
                });
            }
            Ok(values.chunks(per_row.max(1)).map(<[f32]>::to_vec).collect())
        })
    }
}
