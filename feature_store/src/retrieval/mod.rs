//! Reading features as of a time: the point-in-time join of gold rows onto
//! a spine ([`point_in_time`], re-exported here) and training sets built
//! from gold tables at pinned versions ([`training_set`]), and a view's
//! rows pulled as they are ([`pull`]).

mod point_in_time;
pub mod pull;
pub mod training_set;

pub use point_in_time::*;
