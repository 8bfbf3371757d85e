//! The Arrow Flight service (default 127.0.0.1:8815), started by
//! `aurum serve` beside the HTTP server.
//!
//! Commands are JSON documents in a `FlightDescriptor`'s `cmd` (or, for a
//! push, simply the feature view's name as its path). Served so far:
//!
//! - `DoPut` — push ingestion, the Arrow twin of `POST /push`: the
//!   descriptor is `{"command": "push", "feature_view": "...", "to":
//!   "online" | "offline" | "online_and_offline", "allow_partial": false}`
//!   and the stream carries record batches with the view's join keys, event
//!   timestamp, optional created timestamp and every feature. Each record
//!   batch is one push: validated against the view's schema and applied
//!   whole, or refused whole with the stream row and column named (with
//!   `allow_partial`, its good rows are applied and the bad ones reported).
//!   One `PutResult` per batch answers with the push's outcome as JSON in
//!   `app_metadata`.
//!
//! The service keeps no state between calls, so any replica can answer.

mod command;
mod decode;
mod encode;
mod feast;
mod server;
mod service;
mod status;
mod stream;

pub use command::Command;
pub use feast::FeastCommand;
pub use server::{CallLimits, FlightServer, VERSIONS_METADATA};

#[cfg(test)]
mod tests;
