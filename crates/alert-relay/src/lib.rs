//! alert-relay: durable Alertmanager webhook intake and delivery to chat, push and SMS.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of this crate.
#![forbid(unsafe_code)]

pub mod config;
pub mod matcher;
pub mod metrics;
pub mod payload;
pub mod render;
pub mod secret;
pub mod store;
pub mod time;
