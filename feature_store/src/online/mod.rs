//! The online tier: the moka store ([`store`], re-exported here), loading
//! it from gold tables ([`materialize`]) and push ingestion shared by every
//! edge ([`push`]), and the shared tier on Redis the store can sit in front
//! of as an L1 cache ([`shared`]).

pub mod materialize;
pub mod push;
pub mod shared;
mod store;

pub use store::*;
