//! `POST /webhook[/{route}]`: Alertmanager's webhook (v4), with the relay's `auth:`.
//!
//! A webhook is answered 2xx only after the store committed it; 5xx only when the store failed;
//! 4xx with a JSON error for everything the sender got wrong.

use std::sync::Arc;

use http::header;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::{Bytes, Incoming};
use serving::Body;

use super::{App, Refusal, json, json_error};
use crate::config::Config;
use crate::deadman;
use crate::metrics::StatusLabel;
use crate::payload::{self, AlertEvent, Notification, Status};
use crate::routing;
use crate::store::{IngestOutcome, RoutedEvent, Write};

/// A notification's events once routed, and the heartbeats that were taken out of it.
struct Routed {
    events: Vec<RoutedEvent>,
    heartbeats: Vec<AlertEvent>,
    /// Alertmanager's group key, for the log.
    group_key: String,
}

impl App {
    /// Authenticates, reads and parses, routes, stores, answers; `pinned` is the `{route}` of
    /// `/webhook/{route}`.
    pub(super) async fn webhook(
        &self,
        req: Request<Incoming>,
        pinned: Option<String>,
    ) -> Response<Body> {
        let config = match self.authenticate(req.headers()) {
            Ok(config) => config,
            Err(refusal) => return *refusal,
        };
        let notification = match self.read_notification(req, &config).await {
            Ok(notification) => notification,
            Err(refusal) => return *refusal,
        };
        let routed = match self.route(&config, notification, pinned.as_deref()) {
            Ok(routed) => routed,
            Err(refusal) => return *refusal,
        };
        if let Err(refusal) = self.take_heartbeats(&routed.heartbeats).await {
            return *refusal;
        }
        self.store_and_answer(routed).await
    }

    /// The body, within the size limit and the body deadline, parsed.
    async fn read_notification(
        &self,
        req: Request<Incoming>,
        config: &Config,
    ) -> Result<Notification, Refusal> {
        let body = self.read_body(req, config).await?;
        let notification = match payload::parse(&body) {
            Ok(n) => n,
            Err(e) => {
                self.metrics.reject(e.reason());
                return Err(Box::new(json_error(
                    StatusCode::BAD_REQUEST,
                    e.reason(),
                    &e.to_string(),
                )));
            }
        };
        if notification.truncated_alerts > 0 {
            // Alertmanager's max_alerts cut the list: the alerts left out never reach us.
            tracing::warn!(
                group_key = %notification.group_key,
                truncated = notification.truncated_alerts,
                "Alertmanager truncated this notification (max_alerts); those alerts are not relayed"
            );
        }
        Ok(notification)
    }

    /// The whole body: refused before reading when its declared length is over the limit.
    async fn read_body(&self, req: Request<Incoming>, config: &Config) -> Result<Bytes, Refusal> {
        let limit = config.limits.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(Box::new(self.too_large(limit)));
        }
        match tokio::time::timeout(
            config.limits.body_timeout,
            Limited::new(req.into_body(), limit).collect(),
        )
        .await
        {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(Box::new(self.too_large(limit)))
            }
            Ok(Err(e)) => {
                self.metrics.reject("body");
                Err(Box::new(json_error(
                    StatusCode::BAD_REQUEST,
                    "body",
                    &format!("cannot read the body: {e}"),
                )))
            }
            Err(_) => {
                self.metrics.reject("timeout");
                Err(Box::new(json_error(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    "the body did not arrive in time",
                )))
            }
        }
    }

    /// A 413 for a body over `limit` bytes, counted.
    fn too_large(&self, limit: usize) -> Response<Body> {
        self.metrics.reject("too_large");
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("body over {limit} bytes"),
        )
    }

    /// Takes the heartbeats out and routes every other event; a pinned route that does not
    /// exist is a 404.
    fn route(
        &self,
        config: &Config,
        notification: Notification,
        pinned: Option<&str>,
    ) -> Result<Routed, Refusal> {
        let mut routed = Vec::with_capacity(notification.events.len());
        let group_key = notification.group_key.clone();
        let group_resolved = notification.status == Status::Resolved;
        let (heartbeats, events): (Vec<_>, Vec<_>) =
            notification.events.into_iter().partition(|e| {
                config
                    .deadman
                    .as_ref()
                    .is_some_and(|d| d.matches(&e.labels))
            });
        // Heartbeats are consumed: never stored as alerts, routed or delivered.
        let now = self.live.clock.now();
        let now_ms = self.live.clock.now_millis();
        let no_resolved = Arc::new(config.no_resolved());
        for event in events {
            let (targets, routes) = match (
                routing::destinations(config, &event.labels, pinned, now),
                routing::routes(config, &event.labels, pinned),
            ) {
                (Ok(d), Ok(r)) => (d, r),
                (Err(e), _) | (_, Err(e)) => {
                    self.metrics.reject("unknown_route");
                    return Err(Box::new(json_error(
                        StatusCode::NOT_FOUND,
                        "unknown_route",
                        &e.to_string(),
                    )));
                }
            };
            routed.push(RoutedEvent {
                destinations: targets.destinations,
                routes,
                group_resolved,
                on_call: targets.on_call,
                no_resolved: Arc::clone(&no_resolved),
                maintenance: self.maintenance.holding(&event.labels, now_ms),
                event,
            });
        }
        Ok(Routed {
            events: routed,
            heartbeats,
            group_key,
        })
    }

    /// Hands the heartbeats to the dead-man's switch: this instance's, or through the database
    /// to the instance running it (several relays on one PostgreSQL: Alertmanager may post
    /// the heartbeat to any of them). A 500 when the database cannot take it (Alertmanager
    /// retries), as for a webhook that cannot be stored.
    async fn take_heartbeats(&self, heartbeats: &[AlertEvent]) -> Result<(), Refusal> {
        for h in heartbeats.iter().filter_map(deadman::heartbeat_of) {
            if !self.store.is_shared() {
                self.deadman.beat(&h);
                continue;
            }
            if let Err(e) = self.store.write(Write::Heartbeat(h)).await {
                self.metrics.storage_errors.inc();
                tracing::error!("cannot pass a heartbeat on to the leader: {e}");
                return Err(Box::new(json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage",
                    "the relay could not pass this heartbeat on; retry",
                )));
            }
        }
        Ok(())
    }

    /// Stores the routed events in one commit and answers: 200 with what was accepted, or a 500
    /// when the commit failed (Alertmanager retries 5xx: exactly what a failed commit needs).
    async fn store_and_answer(&self, routed: Routed) -> Response<Body> {
        let Routed {
            events: routed,
            heartbeats,
            group_key,
        } = routed;
        let (firing, resolved) =
            routed
                .iter()
                .map(|r| &r.event)
                .chain(&heartbeats)
                .fold((0u64, 0u64), |(f, r), e| match e.status {
                    Status::Firing => (f + 1, r),
                    Status::Resolved => (f, r + 1),
                });
        let unrouted: Vec<String> = routed
            .iter()
            .filter(|r| r.destinations.is_empty() && r.event.status == Status::Firing)
            .map(|r| r.event.fingerprint.clone())
            .collect();
        match self.store.ingest(routed).await {
            Ok(outcome) => {
                self.count_accepted(&outcome, firing, resolved, &unrouted);
                log_accepted(&outcome, &group_key, (firing, resolved), heartbeats.len());
                self.deliver(&outcome).await;
                let body = serde_json::json!({
                    "status": "ok",
                    "accepted": outcome.accepted,
                    "duplicates": outcome.duplicates,
                    "deliveries": outcome.deliveries.len(),
                    "heartbeats": heartbeats.len(),
                });
                json(StatusCode::OK, &body)
            }
            Err(e) => {
                self.metrics.storage_errors.inc();
                self.metrics
                    .webhooks
                    .get_or_create(&StatusLabel {
                        status: "error".into(),
                    })
                    .inc();
                tracing::error!("cannot store a webhook: {e}");
                json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage",
                    "the relay could not store this notification; retry",
                )
            }
        }
    }

    /// The metrics of a stored webhook, and a warning for the firing alerts no route sends
    /// anywhere.
    fn count_accepted(
        &self,
        outcome: &IngestOutcome,
        firing: u64,
        resolved: u64,
        unrouted: &[String],
    ) {
        let m = &self.metrics;
        m.webhooks
            .get_or_create(&StatusLabel {
                status: "accepted".into(),
            })
            .inc();
        m.alerts_received
            .get_or_create(&StatusLabel {
                status: "firing".into(),
            })
            .inc_by(firing);
        m.alerts_received
            .get_or_create(&StatusLabel {
                status: "resolved".into(),
            })
            .inc_by(resolved);
        m.alerts_deduplicated.inc_by(outcome.duplicates as u64);
        if !unrouted.is_empty() && outcome.accepted > 0 {
            m.alerts_unrouted.inc_by(unrouted.len() as u64);
            tracing::warn!(fingerprints = %unrouted.join(","), "alerts matched no route; stored but sent nowhere");
        }
    }

    /// Hands the stored deliveries to the engine (but those storm control collapsed into a
    /// summary) and wakes the escalator when incidents opened or resolved.
    async fn deliver(&self, outcome: &IngestOutcome) {
        // Storm control replaces some first-step deliveries by summaries; if it fails,
        // every delivery goes out as it would without it.
        // Incidents a maintenance window holds page nobody yet: they count toward no storm.
        let paging: Vec<i64> = (outcome.opened.iter())
            .filter(|id| !outcome.held.contains(id))
            .copied()
            .collect();
        let collapsed = match self.storms.opened(&paging).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("storm control failed; sending every message: {e}");
                Vec::new()
            }
        };
        for (dest, id, created) in &outcome.deliveries {
            if !collapsed.contains(id) {
                self.engine.enqueue(dest, *id, *created);
            }
        }
        if !outcome.opened.is_empty() || outcome.resolved > 0 {
            self.escalator.wake();
        }
        // The windows' suppressed counts (metrics, pages) are the stored ones.
        if outcome.suppressed > 0
            && let Err(e) = self.maintenance.refresh().await
        {
            tracing::warn!("cannot read the maintenance windows: {e}");
        }
    }
}

/// The journal's line for an accepted webhook: how many alerts (firing, resolved, repeats
/// already stored), the group as labels, the incidents it opened, joined and closed (by
/// number), the messages it queued and the firing alerts a maintenance window held.
fn log_accepted(
    outcome: &IngestOutcome,
    group_key: &str,
    (firing, resolved): (u64, u64),
    heartbeats: usize,
) {
    let numbers = |ids: &[i64]| ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    tracing::info!(
        alerts = firing + resolved,
        firing,
        resolved,
        duplicates = outcome.duplicates,
        heartbeats,
        group = %crate::payload::readable_group(group_key),
        incidents_opened = %numbers(&outcome.opened),
        incidents_joined = %numbers(&outcome.joined),
        incidents_resolved = %numbers(&outcome.closed),
        deliveries = outcome.deliveries.len(),
        in_maintenance = outcome.suppressed,
        "webhook accepted"
    );
}
