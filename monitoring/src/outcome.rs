//! Outcomes matched to remembered predictions: what an outcome names, and
//! what applying a batch of them gave.

use serde::Serialize;

/// The prediction an outcome is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeTarget {
    /// A row of a request, by the request's id.
    Request {
        /// The request's id.
        request_id: String,
        /// The row of the request (from 0).
        row: u32,
    },
    /// The newest prediction of a model for an entity, at or before a time.
    Entity {
        /// The model.
        model: String,
        /// The entity key, as `name=value` pairs joined by `,` in key order
        /// (as the prediction log writes it).
        entity: String,
        /// The latest prediction time considered, in microseconds since the
        /// epoch; `None` for the newest prediction.
        at_micros: Option<i64>,
    },
}

/// An outcome that was not applied, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotApplied {
    /// Its position in the batch (from 0).
    pub index: usize,
    /// Why it was not applied.
    pub reason: String,
}

/// What applying a batch of outcomes gave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// Outcomes applied.
    pub accepted: usize,
    /// Outcomes not applied (no remembered prediction, or one that already
    /// has an outcome).
    pub not_applied: Vec<NotApplied>,
}

/// Why no outcome of a batch was applied.
#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    /// No outcome matches a remembered prediction without an outcome.
    #[error(
        "none of the {} outcomes matches a remembered prediction ({})",
        .0.len(),
        first_reasons(.0)
    )]
    NoneMatched(Vec<NotApplied>),
    /// The feedback table could not be written; nothing was applied and the
    /// batch may be sent again.
    #[error("writing the feedback table: {0}")]
    Table(crate::Error),
}

/// The first three reasons, joined by `; `.
fn first_reasons(not_applied: &[NotApplied]) -> String {
    not_applied
        .iter()
        .take(3)
        .map(|u| u.reason.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}
