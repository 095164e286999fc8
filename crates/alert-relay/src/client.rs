//! The relay's HTTP clients (providers, pollers, re-sync): one set-up, no redirects.

use std::time::Duration;

use anyhow::Context as _;

/// The HTTP client for every provider: rustls with the process's crypto provider (ring,
/// installed by `main`), the OS trust store, and no redirects (see [`client_builder`]).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    client_builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .context("cannot build the HTTP client")
}

/// What every client of the relay shares. Redirects are never followed: a request carries a
/// provider's credentials (headers, basic auth, a signature, a token in the body), and a 3xx
/// from anything on the path would hand them to another host. A 3xx is a failed attempt
/// (`channels::execute`).
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("alert-relay/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
}
