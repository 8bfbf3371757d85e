//! The most recent live predictions, by request id and by entity, so that
//! outcomes sent later can be matched to them.
//!
//! At most `capacity` request ids are remembered (the oldest forgotten
//! first) and at most [`PER_ENTITY`] rows per model and entity. An entity
//! lookup takes the newest row at or before the time asked for whose
//! request is still remembered. A prediction takes at most one outcome:
//! [`Recent::claim`] marks it, and [`Recent::release`] undoes the mark when
//! the outcome could not be stored.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::outcome::OutcomeTarget;
use crate::record::{PredictionRecord, headline};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A prediction for an entity: when, the request, the row.
type EntityRow = (i64, Arc<str>, u32);

/// Entity rows remembered per model and entity key.
const PER_ENTITY: usize = 8;

/// A remembered prediction.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    /// The model.
    pub(crate) model: Arc<str>,
    /// The version that answered.
    pub(crate) version: u64,
    /// The arm that answered.
    pub(crate) arm: Arc<str>,
    /// The headline prediction (NaN without outputs).
    pub(crate) prediction: f32,
    /// When the request arrived, in microseconds since the epoch.
    pub(crate) time_micros: i64,
    labelled: bool,
}

/// The most recent predictions, by request id and by entity.
#[derive(Debug)]
pub(crate) struct Recent {
    capacity: usize,
    by_request: FastMap<Arc<str>, Vec<(u32, Served)>>,
    order: VecDeque<Arc<str>>,
    by_entity: FastMap<(Arc<str>, String), VecDeque<EntityRow>>,
}

impl Recent {
    /// Remembers up to `capacity` request ids (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Recent {
            capacity: capacity.max(1),
            by_request: FastMap::default(),
            order: VecDeque::new(),
            by_entity: FastMap::default(),
        }
    }

    /// Remembers `r`'s answer.
    pub(crate) fn insert(&mut self, r: &PredictionRecord) {
        let served = Served {
            model: r.model.clone(),
            version: r.version,
            arm: r.arm.clone(),
            prediction: if r.outputs.is_empty() {
                f32::NAN
            } else {
                headline(&r.outputs)
            },
            time_micros: r.time_micros,
            labelled: false,
        };
        // What is remembered for minutes is copied here, on the log's
        // thread, not kept from the record: the record's buffers were
        // allocated by a request thread among its short-lived allocations,
        // and long-lived survivors there keep the allocator from returning
        // the pages around them (BENCHMARKS.md, the soak).
        let known = self
            .by_request
            .get_key_value(&r.request_id)
            .map(|(id, _)| id.clone());
        let id = match known {
            Some(id) => {
                if let Some(rows) = self.by_request.get_mut(&id) {
                    rows.push((r.row, served));
                }
                id
            }
            None => {
                let id: Arc<str> = Arc::from(&*r.request_id);
                self.by_request.insert(id.clone(), vec![(r.row, served)]);
                self.order.push_back(id.clone());
                id
            }
        };
        if !r.entity.is_empty() {
            let rows = self
                .by_entity
                .entry((r.model.clone(), r.entity.as_str().to_owned()))
                .or_default();
            if rows.len() == PER_ENTITY {
                rows.pop_front();
            }
            rows.push_back((r.time_micros, id, r.row));
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.by_request.remove(&old);
            }
        }
        // Entity entries of forgotten requests fail their lookup and are
        // pruned when the index outgrows the requests remembered.
        if self.by_entity.len() > 2 * self.capacity {
            let requests = &self.by_request;
            self.by_entity.retain(|_, rows| {
                rows.retain(|(_, id, _)| requests.contains_key(id));
                !rows.is_empty()
            });
        }
    }

    /// Finds the prediction `target` names and marks it as labelled:
    /// its request id, row and what was served; or why it cannot take an
    /// outcome.
    pub(crate) fn claim(
        &mut self,
        target: &OutcomeTarget,
    ) -> Result<(Arc<str>, u32, Served), String> {
        let (id, row) = match target {
            OutcomeTarget::Request { request_id, row } => {
                (Arc::<str>::from(request_id.as_str()), *row)
            }
            OutcomeTarget::Entity {
                model,
                entity,
                at_micros,
            } => self.by_entity(model, entity, *at_micros).ok_or_else(|| {
                format!("no remembered prediction of {model} for {entity} at that time")
            })?,
        };
        match self.get_mut(&id, row) {
            None => Err(format!(
                "no remembered prediction for request {id} row {row}"
            )),
            Some(s) if s.labelled => Err(format!("request {id} row {row} already has an outcome")),
            Some(s) => {
                s.labelled = true;
                let served = s.clone();
                Ok((id, row, served))
            }
        }
    }

    /// Undoes the mark [`Recent::claim`] set on a request's row (when it is
    /// still remembered).
    pub(crate) fn release(&mut self, request_id: &str, row: u32) {
        if let Some(s) = self.get_mut(request_id, row) {
            s.labelled = false;
        }
    }

    fn by_entity(&self, model: &str, entity: &str, at: Option<i64>) -> Option<(Arc<str>, u32)> {
        let rows = self
            .by_entity
            .get(&(Arc::from(model), entity.to_string()))?;
        rows.iter()
            .rev()
            .find(|(t, id, _)| at.is_none_or(|at| *t <= at) && self.by_request.contains_key(id))
            .map(|(_, id, row)| (id.clone(), *row))
    }

    fn get_mut(&mut self, request_id: &str, row: u32) -> Option<&mut Served> {
        self.by_request
            .get_mut(request_id)?
            .iter_mut()
            .find(|(r, _)| *r == row)
            .map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, row: u32, time: i64, entity: &str) -> PredictionRecord {
        PredictionRecord {
            request_id: Arc::from(id),
            row,
            time_micros: time,
            model: Arc::from("m"),
            version: 1,
            arm: Arc::from("champion"),
            shadow: false,
            entity: entity.to_string(),
            feature_names: Arc::from(Vec::new()),
            features: Vec::new(),
            outputs: vec![0.2, 0.8],
            latency_micros: 0,
        }
    }

    fn by_request(id: &str, row: u32) -> OutcomeTarget {
        OutcomeTarget::Request {
            request_id: id.into(),
            row,
        }
    }

    #[test]
    fn an_outcome_is_claimed_once_and_a_release_allows_it_again() {
        let mut recent = Recent::new(10);
        recent.insert(&record("a", 0, 1, ""));
        let (id, row, served) = recent.claim(&by_request("a", 0)).unwrap();
        assert_eq!((&*id, row, served.prediction), ("a", 0, 0.8));
        assert_eq!(
            recent.claim(&by_request("a", 0)).unwrap_err(),
            "request a row 0 already has an outcome"
        );
        recent.release("a", 0);
        assert!(recent.claim(&by_request("a", 0)).is_ok());
        assert_eq!(
            recent.claim(&by_request("a", 1)).unwrap_err(),
            "no remembered prediction for request a row 1"
        );
    }

    #[test]
    fn the_oldest_requests_are_forgotten_first() {
        let mut recent = Recent::new(2);
        for id in ["a", "b", "c"] {
            recent.insert(&record(id, 0, 1, ""));
        }
        assert!(recent.claim(&by_request("a", 0)).is_err());
        assert!(recent.claim(&by_request("b", 0)).is_ok());
        assert!(recent.claim(&by_request("c", 0)).is_ok());
    }

    #[test]
    fn an_entity_finds_its_newest_prediction_at_or_before_a_time() {
        let mut recent = Recent::new(100);
        recent.insert(&record("a", 0, 10, "customer_id=1"));
        recent.insert(&record("b", 0, 20, "customer_id=1"));
        let at = |at_micros| OutcomeTarget::Entity {
            model: "m".into(),
            entity: "customer_id=1".into(),
            at_micros,
        };
        assert_eq!(&*recent.claim(&at(Some(15))).unwrap().0, "a");
        assert_eq!(&*recent.claim(&at(None)).unwrap().0, "b");
        assert_eq!(
            recent.claim(&at(Some(5))).unwrap_err(),
            "no remembered prediction of m for customer_id=1 at that time"
        );
        // At most PER_ENTITY rows per entity.
        for i in 0..PER_ENTITY {
            recent.insert(&record(&format!("n{i}"), 0, 30 + i as i64, "customer_id=1"));
        }
        assert!(recent.claim(&at(Some(25))).is_err());
    }
}
