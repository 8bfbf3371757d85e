//! One arm's rows of a request, run: assemble → impute → infer → time →
//! record. The live path (`/predict`) and the shadow path take the same
//! steps; they differ only in what a missing feature means, which time is
//! the request's, and where the rows' prediction records go.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use feature_store::{FeatureStatus, OnlineStore};
use monitoring::{PredictionLog, PredictionRecord};

use super::assemble::{Assembled, assemble, impute, reject_missing};
use super::error::Result;
use super::model::LoadedModel;
use super::policy::MissingFeatures;
use super::pool::Outputs;
use super::request::PredictRequest;
use crate::metrics::{ArmMetrics, Metrics};
use telemetry::Trace;

/// What a run uses besides its model and rows: the online store it reads
/// and the metrics it is timed into.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// Where stored features are looked up.
    pub online: &'a OnlineStore,
    /// Where the per-arm timings go.
    pub metrics: &'a Metrics,
}

/// The request a run's rows belong to, as their prediction records name
/// it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The request.
    pub request: &'a PredictRequest,
    /// Its id.
    pub request_id: &'a Arc<str>,
    /// When it arrived, in microseconds since the epoch.
    pub time_micros: i64,
    /// Per request row, its entity label (empty when not computed).
    pub entities: &'a [String],
    /// The span the run's steps are children of (off when not traced).
    pub trace: &'a Trace,
}

/// One arm's share of a request: the rows the arm answers and the version
/// it serves.
#[derive(Debug, Clone, Copy)]
pub struct ArmRows<'a> {
    /// The arm (alias) that answers.
    pub arm: &'a str,
    /// The version at that arm.
    pub model: &'a LoadedModel,
    /// The request rows it answers, in request order.
    pub rows: &'a [usize],
}

/// How a run treats its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answering the caller: a missing feature is imputed or refused as
    /// the policy says, and the caller observes the request's time.
    Live(MissingFeatures),
    /// A copy run after the answer has gone: missing features are imputed,
    /// and the run's own time is the request's.
    Shadow,
}

/// Where a run's prediction records go.
#[derive(Debug)]
pub enum Records<'a> {
    /// Nowhere: no prediction log.
    Skip,
    /// Into the caller's list, to be logged once the request's latency is
    /// known (the live path).
    Collect(&'a mut Vec<PredictionRecord>),
    /// Straight to the log, with the run's own latency; the outputs go with
    /// them (the shadow path, whose answers are not returned).
    Log(&'a PredictionLog),
}

/// What a run answers.
#[derive(Debug)]
pub struct Ran {
    /// Each row's output values, in the order of the rows (empty when the
    /// records took them: [`Records::Log`]).
    pub outputs: Outputs,
    /// Per row, the features that were not present, with their status.
    pub statuses: Vec<BTreeMap<String, FeatureStatus>>,
    /// The Delta version of each view read.
    pub feature_versions: BTreeMap<String, u64>,
    /// The arm's metrics, for the caller's request time.
    pub metrics: Arc<ArmMetrics>,
}

/// Runs `arm`'s rows of `call`'s request on the arm's version: assembles
/// their input, refuses or imputes what is missing, runs the model (through
/// its micro-batcher when it has one), times the steps into the arm's
/// metrics and hands each row's record to `records`.
pub async fn run(
    env: Env<'_>,
    call: Call<'_>,
    arm: ArmRows<'_>,
    mode: Mode,
    records: Records<'_>,
) -> Result<Ran> {
    let started = Instant::now();
    let model = arm.model;
    let Assembled {
        matrix,
        statuses,
        feature_versions,
        ..
    } = assemble(env.online, model, call.request, arm.rows, call.trace).await?;
    if mode == Mode::Live(MissingFeatures::Reject) {
        reject_missing(model, arm.rows, &statuses)?;
    }
    // The log keeps the values as assembled (missing as NaN).
    let (mut input, raw) = if matches!(records, Records::Skip) {
        (matrix, Vec::new())
    } else {
        (matrix.clone(), matrix)
    };
    impute(model, &mut input);
    let fetched = started.elapsed();
    let span = call.trace.child("inference");
    if span.is_on() {
        span.set("aurum.model", model.version.name.clone());
        span.set("aurum.model.version", model.version.version as i64);
        span.set("aurum.arm", arm.arm.to_string());
        span.set("aurum.rows", arm.rows.len() as i64);
    }
    let outputs = model.infer(input, arm.rows.len()).await;
    if let Err(e) = &outputs {
        span.fail(e.to_string());
    }
    span.end();
    let outputs = outputs?;
    let inferred = started.elapsed() - fetched;
    let shadow = mode == Mode::Shadow;
    let metrics = model.metrics_for(env.metrics, arm.arm, shadow);
    metrics.feature_seconds.observe(fetched.as_secs_f64());
    metrics.inference_seconds.observe(inferred.as_secs_f64());
    metrics.batch_rows.observe(arm.rows.len() as f64);
    if shadow {
        metrics
            .request_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    let outputs = record(call, arm, shadow, raw, outputs, records, started);
    Ok(Ran {
        outputs,
        statuses,
        feature_versions,
        metrics,
    })
}

/// Microseconds in `elapsed`, saturating.
fn micros(elapsed: std::time::Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// Hands each row's record to `records`: its values as assembled (one
/// row: the whole buffer, without a copy), its outputs and, for records
/// that go straight to the log, the run's latency. Returns the outputs
/// unless the records took them.
fn record(
    call: Call<'_>,
    arm: ArmRows<'_>,
    shadow: bool,
    raw: Vec<f32>,
    outputs: Outputs,
    records: Records<'_>,
    started: Instant,
) -> Outputs {
    if matches!(records, Records::Skip) {
        return outputs;
    }
    let latency_micros = match records {
        Records::Log(_) => micros(started.elapsed()),
        Records::Skip | Records::Collect(_) => 0,
    };
    let model = arm.model;
    let width = model.version.features.len();
    let one_row = arm.rows.len() == 1;
    let model_name: Arc<str> = Arc::from(call.request.model.as_str());
    let arm_name: Arc<str> = Arc::from(arm.arm);
    let mut raw = Some(raw);
    let mut make = |k: usize, row: usize, output: Vec<f32>| PredictionRecord {
        request_id: call.request_id.clone(),
        row: u32::try_from(row).unwrap_or(u32::MAX),
        time_micros: call.time_micros,
        model: model_name.clone(),
        version: model.version.version,
        arm: arm_name.clone(),
        shadow,
        entity: call.entities.get(row).cloned().unwrap_or_default(),
        feature_names: model.feature_names.clone(),
        // One row: the record takes the assembled values.
        features: match (one_row, &mut raw) {
            (true, raw) => raw.take().unwrap_or_default(),
            (false, Some(raw)) => raw[k * width..(k + 1) * width].to_vec(),
            (false, None) => Vec::new(),
        },
        outputs: output,
        latency_micros,
    };
    match records {
        Records::Skip => outputs,
        Records::Collect(list) => {
            for (k, (&row, output)) in arm.rows.iter().zip(&outputs).enumerate() {
                list.push(make(k, row, output.clone()));
            }
            outputs
        }
        Records::Log(log) => {
            for (k, (&row, output)) in arm.rows.iter().zip(outputs).enumerate() {
                log.record(make(k, row, output));
            }
            Vec::new()
        }
    }
}

/// A challenger's run on a copy of a request, after its answer has gone.
#[derive(Debug)]
pub struct ShadowRun {
    /// The version at the shadow alias.
    pub model: Arc<LoadedModel>,
    /// The shadow alias.
    pub arm: String,
    /// The request.
    pub request: Arc<PredictRequest>,
    /// Per request row, its entity label.
    pub entities: Vec<String>,
    /// The request's id.
    pub request_id: Arc<str>,
    /// When the request arrived, in microseconds since the epoch.
    pub time_micros: i64,
    /// The request's rows (the shadow runs them all).
    pub rows: usize,
    /// The shadow run's span (a child of the request's; off when not
    /// traced).
    pub trace: Trace,
}

impl ShadowRun {
    /// Runs every row of the request on the shadow's version, logging the
    /// records to `log` when there is one. A failure is logged (never
    /// answered: the caller has its answer).
    pub async fn run(self, env: Env<'_>, log: Option<&PredictionLog>) {
        let row_ids: Vec<usize> = (0..self.rows).collect();
        let call = Call {
            request: &self.request,
            request_id: &self.request_id,
            time_micros: self.time_micros,
            entities: &self.entities,
            trace: &self.trace,
        };
        let arm = ArmRows {
            arm: &self.arm,
            model: &self.model,
            rows: &row_ids,
        };
        let records = log.map_or(Records::Skip, Records::Log);
        let ran = run(env, call, arm, Mode::Shadow, records).await;
        if let Err(e) = &ran {
            self.trace.fail(e.to_string());
        }
        self.trace.end();
        match ran {
            Ok(_) => {}
            Err(e) if e.is_input() => {
                tracing::debug!(request_id = %self.request_id, error = %e, "shadow input");
            }
            Err(e) => {
                tracing::warn!(request_id = %self.request_id, error = %e, "shadow inference failed");
            }
        }
    }
}
