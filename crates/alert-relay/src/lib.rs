//! alert-relay: durable Alertmanager webhook intake and delivery to chat, push and SMS.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of this crate and
//! `docs/alert-relay.md` for its contract.
#![forbid(unsafe_code)]

pub mod ack;
pub mod ack_telegram;
pub mod channels;
pub mod cli;
pub mod client;
pub mod config;
pub mod deadman;
pub mod delivery;
pub mod escalation;
pub mod http;
pub mod inbound;
pub mod leader;
pub mod live;
pub mod maintenance;
pub mod matcher;
pub mod metrics;
pub mod model;
pub mod payload;
pub mod pushover_receipts;
pub mod relay_clock;
pub mod render;
pub mod resync;
pub mod rotation;
pub mod routing;
pub mod secret;
pub mod store;
pub mod storm;
pub mod time;
pub mod voice;
pub mod wiring;

pub use cli::{
    check_config, check_config_test, format_incidents, incident_cli, migrate_storage, send_test,
};
pub use wiring::{listener_security, run};
