//! The most recent live predictions, by request id and row and by entity,
//! so that outcomes sent later can be matched to them.
//!
//! At most `capacity` predictions are remembered, the oldest forgotten
//! first. They live in a ring of fixed-size slots (56 bytes each) with two
//! hash tables over it: (request id, row) → slot, and (model, entity) → the
//! entity's newest slot, each older slot of the entity linking to the one
//! before it. A request id is stored once per request and an entity label
//! once per entity, and a slot's index entries leave with it, so the memory
//! is bounded by the count: about 130 bytes a prediction for one-row
//! requests with 36-character ids, plus the entity's label while it has a
//! remembered prediction. An entity lookup takes the newest of the
//! entity's last [`PER_ENTITY`] predictions at or before the time asked
//! for, if still remembered. A prediction takes at most one outcome:
//! [`Recent::claim`] marks it, and [`Recent::release`] undoes the mark when
//! the outcome could not be stored.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::outcome::OutcomeTarget;
use crate::record::{PredictionRecord, headline};

/// An entity's predictions an entity lookup considers, newest first.
const PER_ENTITY: usize = 8;

/// The ring is allocated up front up to this many slots (and grows past it
/// only when the bound asks for more).
const PREALLOCATED: usize = 1 << 20;

/// No slot (the end of an entity's chain).
const NO_SLOT: u64 = u64::MAX;

/// A remembered prediction, as a claim answers it.
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
}

/// A prediction marked as labelled by [`Recent::claim`].
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    /// Its slot, for [`Recent::release`].
    pub(crate) slot: u64,
    /// The request's id.
    pub(crate) request_id: Arc<str>,
    /// The request's row.
    pub(crate) row: u32,
    /// What was served.
    pub(crate) served: Served,
}

/// A model version and arm that answered; a handful per server, stored once
/// and named by their index in the slots.
#[derive(Debug)]
struct Answerer {
    model: Arc<str>,
    version: u64,
    arm: Arc<str>,
}

/// One remembered prediction. Slots are named by a sequence number that
/// counts every prediction ever inserted; the ring's front holds
/// `Recent::first`.
#[derive(Debug)]
struct Slot {
    /// Shared by the rows of a request inserted one after another.
    request_id: Arc<str>,
    time_micros: i64,
    /// The same entity's previous prediction, or [`NO_SLOT`].
    previous_of_entity: u64,
    /// The hash of (model, entity) in the entity table (with `has_entity`).
    entity_hash: u64,
    prediction: f32,
    row: u32,
    answerer: u32,
    has_entity: bool,
    labelled: bool,
}

/// An entity with a remembered prediction: its label and its newest slot.
#[derive(Debug)]
struct EntityEntry {
    model: Arc<str>,
    entity: Box<str>,
    newest: u64,
}

/// The most recent predictions, by request id and row and by entity.
#[derive(Debug)]
pub(crate) struct Recent {
    capacity: usize,
    slots: VecDeque<Slot>,
    /// The sequence number of `slots[0]`.
    first: u64,
    /// Sequence numbers by (request id, row); a row inserted again under the
    /// same id takes the entry over.
    by_row: HashTable<u64>,
    by_entity: HashTable<EntityEntry>,
    answerers: Vec<Answerer>,
    hasher: foldhash::fast::RandomState,
}

impl Recent {
    /// Remembers up to `capacity` predictions (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let preallocated = capacity.min(PREALLOCATED);
        Recent {
            capacity,
            slots: VecDeque::with_capacity(preallocated),
            first: 0,
            by_row: HashTable::with_capacity(preallocated),
            by_entity: HashTable::new(),
            answerers: Vec::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Remembers `r`'s answer, forgetting the oldest prediction when full.
    pub(crate) fn insert(&mut self, r: &PredictionRecord) {
        if self.slots.len() == self.capacity {
            self.forget_oldest();
        }
        let answerer = self.answerer(r);
        let seq = self.first + self.slots.len() as u64;
        // What is remembered for minutes is copied here, on the log's
        // thread, not kept from the record: the record's buffers were
        // allocated by a request thread among its short-lived allocations,
        // and long-lived survivors there keep the allocator from returning
        // the pages around them (BENCHMARKS.md, the soak). The rows of one
        // request arrive together and share one copy of its id.
        let request_id = match self.slots.back() {
            Some(last) if *last.request_id == *r.request_id => last.request_id.clone(),
            _ => Arc::from(&*r.request_id),
        };
        let Recent {
            slots,
            first,
            by_row,
            by_entity,
            answerers,
            hasher,
            ..
        } = self;
        let (previous_of_entity, entity_hash) = if r.entity.is_empty() {
            (NO_SLOT, 0)
        } else {
            let model = &answerers[answerer as usize].model;
            let hash = hasher.hash_one((&**model, r.entity.as_str()));
            let found = by_entity.find_mut(hash, |e| {
                *e.model == **model && *e.entity == *r.entity.as_str()
            });
            let previous = match found {
                Some(e) => std::mem::replace(&mut e.newest, seq),
                None => {
                    by_entity.insert_unique(
                        hash,
                        EntityEntry {
                            model: model.clone(),
                            entity: r.entity.as_str().into(),
                            newest: seq,
                        },
                        |e| hasher.hash_one((&*e.model, &*e.entity)),
                    );
                    NO_SLOT
                }
            };
            (previous, hash)
        };
        slots.push_back(Slot {
            request_id,
            time_micros: r.time_micros,
            previous_of_entity,
            entity_hash,
            prediction: if r.outputs.is_empty() {
                f32::NAN
            } else {
                headline(&r.outputs)
            },
            row: r.row,
            answerer,
            has_entity: !r.entity.is_empty(),
            labelled: false,
        });
        let hash = hasher.hash_one((&*r.request_id, r.row));
        let found = by_row.find_mut(hash, |&s| {
            let slot = &slots[(s - *first) as usize];
            slot.row == r.row && *slot.request_id == *r.request_id
        });
        match found {
            Some(s) => *s = seq,
            None => {
                by_row.insert_unique(hash, seq, |&s| {
                    let slot = &slots[(s - *first) as usize];
                    hasher.hash_one((&*slot.request_id, slot.row))
                });
            }
        }
    }

    /// Finds the prediction `target` names and marks it as labelled:
    /// the claim (its slot, request id, row and what was served); or why it
    /// cannot take an outcome.
    pub(crate) fn claim(&mut self, target: &OutcomeTarget) -> Result<Claim, String> {
        let seq = match target {
            OutcomeTarget::Request { request_id, row } => {
                self.find_row(request_id, *row).ok_or_else(|| {
                    format!("no remembered prediction for request {request_id} row {row}")
                })?
            }
            OutcomeTarget::Entity {
                model,
                entity,
                at_micros,
            } => self.find_entity(model, entity, *at_micros).ok_or_else(|| {
                format!("no remembered prediction of {model} for {entity} at that time")
            })?,
        };
        let slot = &mut self.slots[(seq - self.first) as usize];
        if slot.labelled {
            return Err(format!(
                "request {} row {} already has an outcome",
                slot.request_id, slot.row
            ));
        }
        slot.labelled = true;
        let answerer = &self.answerers[slot.answerer as usize];
        Ok(Claim {
            slot: seq,
            request_id: slot.request_id.clone(),
            row: slot.row,
            served: Served {
                model: answerer.model.clone(),
                version: answerer.version,
                arm: answerer.arm.clone(),
                prediction: slot.prediction,
                time_micros: slot.time_micros,
            },
        })
    }

    /// Undoes the mark a [`Recent::claim`] set on the slot it claimed (when
    /// that prediction is still remembered): the very slot, not whichever
    /// prediction now answers to its request id and row.
    pub(crate) fn release(&mut self, slot: u64) {
        if let Some(index) = slot.checked_sub(self.first)
            && let Some(s) = usize::try_from(index)
                .ok()
                .and_then(|i| self.slots.get_mut(i))
        {
            s.labelled = false;
        }
    }

    /// The slot of a request's row.
    fn find_row(&self, request_id: &str, row: u32) -> Option<u64> {
        let hash = self.hasher.hash_one((request_id, row));
        self.by_row
            .find(hash, |&s| {
                let slot = &self.slots[(s - self.first) as usize];
                slot.row == row && *slot.request_id == *request_id
            })
            .copied()
    }

    /// The slot of the newest of an entity's last [`PER_ENTITY`] predictions
    /// made at or before `at` (any time for `None`).
    fn find_entity(&self, model: &str, entity: &str, at: Option<i64>) -> Option<u64> {
        let hash = self.hasher.hash_one((model, entity));
        let mut seq = self
            .by_entity
            .find(hash, |e| *e.model == *model && *e.entity == *entity)?
            .newest;
        for _ in 0..PER_ENTITY {
            if seq == NO_SLOT || seq < self.first {
                return None;
            }
            let slot = &self.slots[(seq - self.first) as usize];
            if at.is_none_or(|at| slot.time_micros <= at) {
                return Some(seq);
            }
            seq = slot.previous_of_entity;
        }
        None
    }

    /// Drops the oldest slot and the index entries that still point at it.
    fn forget_oldest(&mut self) {
        let Some(slot) = self.slots.pop_front() else {
            return;
        };
        let seq = self.first;
        self.first += 1;
        let hash = self.hasher.hash_one((&*slot.request_id, slot.row));
        if let Ok(entry) = self.by_row.find_entry(hash, |&s| s == seq) {
            entry.remove();
        }
        // An entity whose newest prediction this was has no other left:
        // its older ones were forgotten before it.
        if slot.has_entity
            && let Ok(entry) = self
                .by_entity
                .find_entry(slot.entity_hash, |e| e.newest == seq)
        {
            entry.remove();
        }
    }

    /// The index of `r`'s model version and arm among the answerers,
    /// added when new. The newest are looked at first: they answer now.
    fn answerer(&mut self, r: &PredictionRecord) -> u32 {
        let known = self
            .answerers
            .iter()
            .rposition(|a| a.version == r.version && *a.model == *r.model && *a.arm == *r.arm);
        let index = known.unwrap_or_else(|| {
            self.answerers.push(Answerer {
                model: Arc::from(&*r.model),
                version: r.version,
                arm: Arc::from(&*r.arm),
            });
            self.answerers.len() - 1
        });
        u32::try_from(index).unwrap_or(u32::MAX)
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
        let claim = recent.claim(&by_request("a", 0)).unwrap();
        assert_eq!(
            (&*claim.request_id, claim.row, claim.served.prediction),
            ("a", 0, 0.8)
        );
        assert_eq!(
            recent.claim(&by_request("a", 0)).unwrap_err(),
            "request a row 0 already has an outcome"
        );
        recent.release(claim.slot);
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
        assert_eq!(&*recent.claim(&at(Some(15))).unwrap().request_id, "a");
        assert_eq!(&*recent.claim(&at(None)).unwrap().request_id, "b");
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

    #[test]
    fn the_bound_counts_predictions_and_the_indexes_leave_with_them() {
        assert_eq!(std::mem::size_of::<Slot>(), 56);
        let mut recent = Recent::new(4);
        // A request of three rows, then one more: four predictions.
        for row in 0..3 {
            recent.insert(&record("a", row, 1, "customer_id=1"));
        }
        recent.insert(&record("b", 0, 2, "customer_id=2"));
        assert!(recent.claim(&by_request("a", 0)).is_ok());
        // A fifth forgets a's row 0 (and nothing else).
        recent.insert(&record("c", 0, 3, "customer_id=3"));
        assert!(recent.claim(&by_request("a", 0)).is_err());
        assert!(recent.claim(&by_request("a", 2)).is_ok());
        // Many more entities than the bound: the tables stay within it.
        for i in 0..1_000 {
            recent.insert(&record(&format!("r{i}"), 0, 4, &format!("customer_id={i}")));
        }
        assert_eq!(recent.slots.len(), 4);
        assert_eq!(recent.by_row.len(), 4);
        assert_eq!(recent.by_entity.len(), 4);
        assert!(recent.claim(&by_request("r999", 0)).is_ok());
        assert!(recent.claim(&by_request("r995", 0)).is_err());
    }

    #[test]
    fn a_request_id_used_again_answers_its_newest_prediction() {
        let mut recent = Recent::new(10);
        recent.insert(&record("a", 0, 1, ""));
        let mut again = record("a", 0, 2, "");
        again.outputs = vec![0.6, 0.4];
        recent.insert(&again);
        let served = recent.claim(&by_request("a", 0)).unwrap().served;
        assert_eq!((served.prediction, served.time_micros), (0.4, 2));
    }

    #[test]
    fn a_release_unmarks_the_prediction_claimed_not_a_namesake() {
        let mut recent = Recent::new(10);
        // The same request id and row twice (a client reusing its id), the
        // older one for an entity.
        recent.insert(&record("a", 0, 1, "customer_id=1"));
        recent.insert(&record("a", 0, 2, ""));
        let entity = OutcomeTarget::Entity {
            model: "m".into(),
            entity: "customer_id=1".into(),
            at_micros: None,
        };
        let claim = recent.claim(&entity).unwrap();
        assert_eq!(claim.served.time_micros, 1);
        assert!(recent.claim(&entity).is_err());
        // The outcome could not be stored: the older prediction is free
        // again, and the newer one was never marked.
        recent.release(claim.slot);
        assert!(recent.claim(&entity).is_ok());
        assert_eq!(
            recent
                .claim(&by_request("a", 0))
                .unwrap()
                .served
                .time_micros,
            2
        );
    }

    /// Random inserts, claims and releases against a plain list of every
    /// prediction ever inserted, searched the slow way.
    #[test]
    fn it_answers_as_a_plain_list_of_the_newest_predictions_would() {
        struct Reference {
            rows: Vec<(String, u32, String, i64, bool)>,
            capacity: usize,
        }
        impl Reference {
            fn first(&self) -> usize {
                self.rows.len().saturating_sub(self.capacity)
            }
            fn find(&self, target: &OutcomeTarget) -> Option<usize> {
                match target {
                    OutcomeTarget::Request { request_id, row } => (self.first()..self.rows.len())
                        .rev()
                        .find(|&i| self.rows[i].0 == *request_id && self.rows[i].1 == *row),
                    OutcomeTarget::Entity {
                        entity, at_micros, ..
                    } => {
                        let newest: Vec<usize> = (0..self.rows.len())
                            .rev()
                            .filter(|&i| self.rows[i].2 == *entity)
                            .take(PER_ENTITY)
                            .collect();
                        newest.into_iter().find(|&i| {
                            i >= self.first() && at_micros.is_none_or(|at| self.rows[i].3 <= at)
                        })
                    }
                }
            }
        }
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut applied = 0;
        for capacity in [1, 3, 17, 64] {
            let mut recent = Recent::new(capacity);
            let mut claims: Vec<(u64, usize)> = Vec::new();
            let mut reference = Reference {
                rows: Vec::new(),
                capacity,
            };
            for _ in 0..5_000 {
                let id = format!("q{}", next(40));
                let row = next(3) as u32;
                let entity = match next(6) {
                    0 => String::new(),
                    e => format!("customer_id={e}"),
                };
                match next(4) {
                    0 | 1 => {
                        let time = next(100) as i64;
                        recent.insert(&record(&id, row, time, &entity));
                        reference.rows.push((id, row, entity, time, false));
                    }
                    2 => {
                        let target = if entity.is_empty() {
                            by_request(&id, row)
                        } else {
                            OutcomeTarget::Entity {
                                model: "m".into(),
                                entity,
                                at_micros: (next(3) > 0).then(|| next(100) as i64),
                            }
                        };
                        let expected = reference.find(&target);
                        let got = recent.claim(&target);
                        match expected {
                            None => assert!(got.is_err(), "{target:?}: {got:?}"),
                            Some(i) if reference.rows[i].4 => {
                                assert!(got.unwrap_err().contains("already has an outcome"));
                            }
                            Some(i) => {
                                let claim = got.unwrap();
                                let want = &reference.rows[i];
                                assert_eq!(
                                    (&*claim.request_id, claim.row),
                                    (want.0.as_str(), want.1)
                                );
                                assert_eq!(claim.served.time_micros, want.3);
                                reference.rows[i].4 = true;
                                claims.push((claim.slot, i));
                                applied += 1;
                            }
                        }
                    }
                    _ => {
                        // Undo a claim made earlier (its outcome not stored).
                        if !claims.is_empty() {
                            let pick = next(claims.len() as u64) as usize;
                            let (slot, i) = claims.swap_remove(pick);
                            recent.release(slot);
                            if i >= reference.first() {
                                reference.rows[i].4 = false;
                            }
                        }
                    }
                }
                assert!(recent.slots.len() <= capacity);
                assert!(recent.by_row.len() <= capacity);
                assert!(recent.by_entity.len() <= capacity);
            }
        }
        assert!(applied > 500, "only {applied} claims matched");
    }
}
