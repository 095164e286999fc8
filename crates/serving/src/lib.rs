//! What pi-exporter and alert-relay share to serve HTTP on a network that is not friendly:
//! connection admission that half-open connections cannot starve ([`admission`]), the accept
//! loop with handshake and head deadlines and a graceful drain ([`server`]), the stop signal,
//! systemd notification, the exporter-toolkit web configuration ([`web_config`]: TLS, mTLS,
//! basic auth, headers, rate limit, reloaded when its files change), log lines in Prometheus'
//! shape and the journal's ([`logging`]), the process metrics every Prometheus client exports
//! ([`process`]), the build metadata of the `*_build_info` metrics ([`build`]), and the one
//! duration syntax of flags and files.
//!
//! This crate depends on neither binary; each binary keeps only its handlers.

pub mod admission;
#[cfg(feature = "cli-assets")]
pub mod cli_assets;
pub mod duration;
pub mod logging;
pub mod process;
pub mod server;
pub mod signal;
pub mod systemd;
pub mod web_config;

pub use admission::Limits;
pub use server::{Body, Handler, NoTls, Peer, Serving, TlsSource, bind, serve};

/// What the binaries' `*_build_info` metrics report besides their version; `build.rs` records
/// them.
pub mod build {
    /// The git revision built (`PIFLEET_REVISION` overrides it, `unknown` outside a checkout).
    pub const REVISION: &str = env!("PIFLEET_REVISION");
    /// The compiler's version, `1.95.0`.
    pub const RUSTC: &str = env!("PIFLEET_RUSTC");
}
