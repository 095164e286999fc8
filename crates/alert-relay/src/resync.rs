//! Re-sync with Alertmanager: with `alertmanager.url` set, the relay polls
//! `GET /api/v2/alerts` at start-up and every `alertmanager.interval`, and resolves the open
//! or acknowledged incidents none of whose firing alerts (by fingerprint) Alertmanager still
//! has as active: a resolved notification lost while the relay was down, or an alert a human
//! silenced (state `suppressed` counts as gone, like inhibited ones).
//!
//! The race: an alert that reaches Alertmanager after its answer was built can reach the relay
//! before the answer is used. So the watermark (the newest stored event id, and the wall
//! clock) is taken before the request, and an incident whose group received any event after
//! it is left alone ([`Write::ResolveStale`](crate::store::Write::ResolveStale), checked in
//! the same transaction as the resolve). A failed poll changes nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;

use crate::Live;
use crate::config::{AlertmanagerApi, Auth};
use crate::escalation::Escalator;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, Transitioned};
use crate::time::now_millis;

/// Who resolved, as recorded and announced.
pub const RESOLVED_BY: &str = "re-sync (Alertmanager no longer has this alert)";
/// Largest answer accepted: thousands of alerts are a few MiB.
const MAX_BODY: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error("cannot reach Alertmanager: {0}")]
    Http(String),
    #[error("Alertmanager answered HTTP {0}")]
    Status(u16),
    #[error("Alertmanager's answer is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("Alertmanager's answer is not a list of alerts: {0}")]
    Malformed(String),
    #[error("cannot read {path}: {message}")]
    Ca { path: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One alert of `GET /api/v2/alerts` (`gettableAlert`): only what re-sync needs.
#[derive(Debug, Deserialize)]
struct ApiAlert {
    fingerprint: String,
    status: ApiStatus,
}

#[derive(Debug, Deserialize)]
struct ApiStatus {
    /// `unprocessed`, `active` or `suppressed`.
    state: String,
}

/// Fingerprints Alertmanager has as active (or not yet processed, so possibly active).
/// Silenced and inhibited alerts (`suppressed`) are left out: for the relay they are gone.
pub fn active_fingerprints(body: &[u8]) -> Result<HashSet<String>, ResyncError> {
    let alerts: Vec<ApiAlert> =
        serde_json::from_slice(body).map_err(|e| ResyncError::Malformed(e.to_string()))?;
    Ok(alerts
        .into_iter()
        .filter(|a| a.status.state != "suppressed")
        .map(|a| a.fingerprint)
        .collect())
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Synced {
    /// Alerts Alertmanager has as active.
    pub active: usize,
    /// Incidents resolved.
    pub resolved: Vec<i64>,
    /// Incidents left alone because their group received an alert during the poll.
    pub raced: Vec<i64>,
}

#[derive(Debug)]
pub struct Resync {
    store: Store,
    escalator: Arc<Escalator>,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    wake: Notify,
}

impl Resync {
    pub fn new(
        store: Store,
        escalator: Arc<Escalator>,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        http: reqwest::Client,
    ) -> Arc<Self> {
        Arc::new(Resync {
            store,
            escalator,
            live,
            metrics,
            http,
            wake: Notify::new(),
        })
    }

    /// A reload may have enabled re-sync.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Polls at once, then every interval, until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        loop {
            let Some(api) = self.live.config().alertmanager.clone() else {
                self.wake.notified().await;
                continue;
            };
            match self.poll(&api).await {
                Ok(s) => {
                    #[allow(clippy::cast_precision_loss)]
                    self.metrics
                        .resync_last_success
                        .set(now_millis() as f64 / 1000.0);
                    tracing::debug!(active = s.active, resolved = ?s.resolved, raced = ?s.raced, "re-synced with Alertmanager");
                }
                Err(e) => {
                    self.metrics.resync_errors.inc();
                    tracing::warn!("re-sync with Alertmanager failed, nothing changed: {e}");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(api.interval) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// One poll: fetches the active alerts and resolves the incidents Alertmanager no longer
    /// has. Any failure before the answer is complete changes nothing.
    pub async fn poll(&self, api: &AlertmanagerApi) -> Result<Synced, ResyncError> {
        let after_event = self.store.read(|b| b.last_event_id()).await?;
        let after_ms = now_millis();
        let active = active_fingerprints(&self.fetch(api).await?)?;
        let mut out = Synced {
            active: active.len(),
            ..Synced::default()
        };
        for inc in self.store.read(|b| b.open_incidents()).await? {
            let id = inc.id;
            let fingerprints = self
                .store
                .read(move |b| b.incident_fingerprints(id))
                .await?;
            // No known alert: nothing to compare, leave it to humans.
            if fingerprints.is_empty() || fingerprints.iter().any(|f| active.contains(f)) {
                continue;
            }
            match self
                .escalator
                .resolve_stale(id, RESOLVED_BY.into(), after_event, after_ms)
                .await?
            {
                Transitioned::Done { .. } => {
                    tracing::info!(
                        incident = id,
                        "resolved: Alertmanager no longer has its alerts (re-sync)"
                    );
                    out.resolved.push(id);
                }
                Transitioned::Unchanged(_) => out.raced.push(id),
                Transitioned::NotFound => {}
            }
        }
        Ok(out)
    }

    async fn fetch(&self, api: &AlertmanagerApi) -> Result<Vec<u8>, ResyncError> {
        let http = match &api.ca_file {
            None => self.http.clone(),
            Some(path) => client_with_ca(path)?,
        };
        let req = http
            .get(format!("{}/api/v2/alerts", api.url))
            .header(http::header::ACCEPT, "application/json")
            .timeout(api.timeout);
        let req = match &api.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t.expose()),
            Auth::Basic { username, password } => {
                req.basic_auth(username, Some(password.expose()))
            }
        };
        let err = |e: reqwest::Error| ResyncError::Http(e.without_url().to_string());
        let mut resp = req.send().await.map_err(err)?;
        if !resp.status().is_success() {
            return Err(ResyncError::Status(resp.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(err)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ResyncError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// A client that also trusts `alertmanager.tls.ca_file` (read at each poll, so a renewed CA
/// needs no restart).
fn client_with_ca(path: &std::path::Path) -> Result<reqwest::Client, ResyncError> {
    let ca = |message: String| ResyncError::Ca {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("alert-relay/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10));
    for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca(e.to_string()))? {
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| ca(e.to_string()))
}
