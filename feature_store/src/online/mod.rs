//! The online tier: the moka store ([`store`], re-exported here), loading
//! it from gold tables ([`materialize`]) and push ingestion shared by every
//! edge ([`push`]).

pub mod materialize;
pub mod push;
mod store;

pub use store::*;
