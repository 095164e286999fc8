//! What pi-exporter and alert-relay share to serve HTTP on a network that is not friendly:
//! connection admission that half-open connections cannot starve ([`admission`]), the accept
//! loop with handshake and head deadlines and a graceful drain ([`server`]), the stop signal,
//! systemd notification, the exporter-toolkit web configuration ([`web_config`]: TLS, mTLS,
//! basic auth, headers, rate limit, reloaded when its files change), and the one duration
//! syntax of flags and files.
//!
//! This crate depends on neither binary; each binary keeps only its handlers.

pub mod admission;
pub mod duration;
pub mod server;
pub mod signal;
pub mod systemd;
pub mod web_config;

pub use admission::Limits;
pub use server::{Body, Handler, NoTls, Peer, Serving, TlsSource, bind, serve};
