//! pi-exporter: a Prometheus exporter for the health of Raspberry Pis that nobody can reach.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of this crate.

pub mod collector;
pub mod metrics;
pub mod paths;
