//! aurum's own HTTP routes, one file per route group. Each handler parses
//! its request, calls the domain (the online store, the pusher, the
//! monitor, [`crate::inference`]) and shapes the answer; errors leave as
//! [`crate::error::AppError`]s. The routes are mounted by [`crate::app`].

pub mod admin;
pub mod drift;
pub mod feedback;
pub mod health;
pub mod metrics;
pub mod online_features;
pub mod predict;
pub mod push;
