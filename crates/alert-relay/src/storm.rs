//! Storm control: when more than `threshold` incidents of one policy open within `window` with
//! the same `group_by` label values (a site loses power and 40 Pis go on battery), their
//! messages collapse into one summary per destination.
//!
//! - The first `threshold` incidents are sent as usual (nobody can know yet that a storm is
//!   coming). The one that crosses the threshold creates the storm: every incident of the
//!   window joins it, its own first-step messages are replaced by one summary per destination
//!   listing all of them.
//! - Later incidents with the same values join the storm while the previous one joined less
//!   than `window` ago. Their first-step messages are collapsed too; one update summary lists
//!   them, at most once per `window` per storm (so a joiner is announced at most `window` late).
//! - Later steps collapse the same way: the first member whose step N is due sends one summary
//!   of step N covering every member still escalating; a member already covered by a step-N
//!   summary sends nothing; one that joined after it sends a new one.
//! - Every collapse is recorded (`storm_covered`, and the replaced deliveries are `skipped`
//!   with the reason), every incident stays an incident of its own in the API, and a storm
//!   closes with one resolved summary once all its incidents are resolved.
//!
//! Windows are measured on the [`RelayClock`](crate::relay_clock::RelayClock): monotonic, stored,
//! so a wall-clock jump neither starts nor ends a storm, and a restart resumes it.
//!
//! The rules and the store's storm writes are in `model::storm`, the summary texts in
//! `render::storm`, the SQL in `store/storm_sql.rs`; this module is the storm task and the
//! storm actions.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::delivery::Engine;
use crate::escalation::Escalator;
use crate::live::Live;
use crate::metrics::{Metrics, PolicyLabel};
use crate::model::storm::{RuleAt, StormView, StormWrite, StormWritten, key_line};
use crate::relay_clock::RelayClock;
use crate::routing;
use crate::store::{IncidentState, Store, StoreError, Transitioned, Write, Written};

/// How often the storm task looks for joiners to announce, closed storms and ended budget
/// windows (and, once a minute, stores the relay clock).
pub const TICK: Duration = Duration::from_secs(5);

/// What acknowledging a storm did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StormAcked {
    /// Incidents acknowledged, notices sent.
    Done {
        incidents: Vec<i64>,
        notices: usize,
    },
    /// Nothing left to acknowledge.
    Unchanged,
    NotFound,
}

/// The storm task and the storm actions; shared by the HTTP handlers.
#[derive(Debug)]
pub struct Storms {
    store: Store,
    engine: Arc<Engine>,
    escalator: Arc<Escalator>,
    live: Arc<Live>,
    clock: Arc<RelayClock>,
    metrics: Arc<Metrics>,
}

impl Storms {
    pub fn new(
        store: Store,
        engine: Arc<Engine>,
        escalator: Arc<Escalator>,
        live: Arc<Live>,
        clock: Arc<RelayClock>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Storms {
            store,
            engine,
            escalator,
            live,
            clock,
            metrics,
        })
    }

    fn rules(&self) -> Vec<RuleAt> {
        let config = self.live.config();
        // A first step that pages a rotation pages whoever is on call now.
        let now = self.live.clock.now();
        config
            .policies
            .values()
            .filter_map(|p| {
                let r = p.storm.as_ref()?;
                let first = routing::step_destinations(&config, &p.name, 0, now);
                Some(RuleAt {
                    policy: p.name.clone(),
                    window_ms: i64::try_from(r.window.as_millis()).unwrap_or(i64::MAX),
                    threshold: usize::try_from(r.threshold).unwrap_or(usize::MAX),
                    group_by: r.group_by.clone(),
                    matchers: r.matchers.clone(),
                    destinations: first.destinations,
                    on_call: first.on_call,
                })
            })
            .collect()
    }

    /// After an ingest that opened incidents, before its deliveries are queued: detects
    /// storms and collapses first steps. Returns the deliveries that must not be queued
    /// (replaced by summaries, which it queues).
    pub async fn opened(&self, opened: &[i64]) -> Result<Vec<i64>, StoreError> {
        let rules = self.rules();
        if rules.is_empty() || opened.is_empty() {
            return Ok(Vec::new());
        }
        let w = self
            .store
            .write(Write::Storm(StormWrite::Opened {
                opened: opened.to_vec(),
                rules,
                clock: self.clock.now_ms(),
            }))
            .await?;
        let Written::Storm(StormWritten::Opened {
            superseded,
            deliveries,
            detected,
        }) = w
        else {
            return Err(StoreError::Corrupt(
                "unexpected reply to a storm write".into(),
            ));
        };
        for (id, policy) in &detected {
            tracing::warn!(storm = id, policy = %policy, "storm detected: collapsing its messages");
            self.metrics
                .storms
                .get_or_create(&PolicyLabel {
                    policy: policy.clone(),
                })
                .inc();
        }
        for (_, policy) in &superseded {
            self.metrics
                .storm_collapsed
                .get_or_create(&PolicyLabel {
                    policy: policy.clone(),
                })
                .inc();
        }
        self.engine.enqueue_all(&deliveries);
        Ok(superseded.into_iter().map(|(id, _)| id).collect())
    }

    /// One periodic pass (see [`StormWrite::Tick`]).
    pub async fn tick(&self) -> Result<(), StoreError> {
        let config = self.live.config();
        let budgets = config.budgets();
        let w = self
            .store
            .write(Write::Storm(StormWrite::Tick {
                clock: self.clock.now_ms(),
                rules: self.rules(),
                budgets,
            }))
            .await?;
        if let Written::Storm(StormWritten::Deliveries(d)) = w {
            self.engine.enqueue_all(&d);
        }
        Ok(())
    }

    /// Stores the relay clock now (at shutdown; the periodic pass stores it once a minute).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        self.store
            .write(Write::Storm(StormWrite::Clock(self.clock.now_ms())))
            .await
            .map(|_| ())
    }

    /// Runs [`Storms::tick`] every [`TICK`] until aborted.
    pub async fn run(self: Arc<Self>) {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = self.tick().await {
                tracing::warn!("storm control: {e}");
            }
        }
    }

    pub async fn view(&self, id: i64) -> Result<Option<StormView>, StoreError> {
        self.store.read(move |b| b.storm(id)).await
    }

    /// Acknowledges every open incident of a storm through the escalator, announced once
    /// per destination the storm or its incidents reached.
    pub async fn ack(&self, id: i64, by: String) -> Result<StormAcked, StoreError> {
        let Some(view) = self.view(id).await? else {
            return Ok(StormAcked::NotFound);
        };
        let open: Vec<i64> = view
            .incidents
            .iter()
            .filter(|i| i.state == IncidentState::Open)
            .map(|i| i.id)
            .collect();
        let acked: Vec<i64> = self
            .escalator
            .ack_all(&open, by.clone())
            .await?
            .into_iter()
            .filter(|(_, t)| matches!(t, Transitioned::Done { .. }))
            .map(|(id, _)| id)
            .collect();
        if acked.is_empty() {
            return Ok(StormAcked::Unchanged);
        }
        let list: Vec<String> = acked.iter().map(|i| format!("#{i}")).collect();
        tracing::info!(
            storm = id,
            incidents = %list.join(" "),
            action = "acknowledged",
            by = %by,
            "storm acknowledged by hand"
        );
        let text = format!(
            "Storm #{id} acknowledged\n{} incidents ({}) acknowledged by {by} at {}",
            acked.len(),
            list.join(", "),
            crate::time::format_rfc3339(self.live.clock.now_millis().saturating_mul(1_000_000))
        );
        let w = self
            .store
            .write(Write::Storm(StormWrite::Announce { storm: id, text }))
            .await?;
        let notices = match w {
            Written::Storm(StormWritten::Deliveries(d)) => {
                self.engine.enqueue_all(&d);
                d.len()
            }
            _ => 0,
        };
        Ok(StormAcked::Done {
            incidents: acked,
            notices,
        })
    }
}

impl Storms {
    /// The ack page of a storm link: GET (`by` None) shows the storm and every incident of it
    /// with a confirm button; POST acknowledges them all. (status, title, body, form), HTML.
    pub async fn page(
        &self,
        signer: &crate::render::ack::Signer,
        token: &str,
        by: Option<&str>,
    ) -> (u16, String, String, String) {
        let esc = crate::render::text::escape_html;
        let id = match signer.verify_storm(token, self.live.clock.now_millis() / 1000) {
            Ok(id) => id,
            Err(e) => {
                self.metrics.reject("ack_token");
                return (
                    403,
                    "Cannot acknowledge".into(),
                    esc(&e.to_string()),
                    String::new(),
                );
            }
        };
        let title = format!("Storm #{id}");
        if let Some(peer) = by {
            return match self.ack(id, format!("ack link from {peer}")).await {
                Ok(StormAcked::Done { incidents, .. }) => (
                    200,
                    title,
                    format!(
                        "Acknowledged {} incidents. Pending escalation steps are cancelled.",
                        incidents.len()
                    ),
                    String::new(),
                ),
                Ok(StormAcked::Unchanged) => (
                    200,
                    title,
                    "Nothing to do: no incident of this storm is open.".into(),
                    String::new(),
                ),
                Ok(StormAcked::NotFound) => (
                    404,
                    "Not found".into(),
                    "No such storm.".into(),
                    String::new(),
                ),
                Err(e) => (
                    503,
                    "Storage error".into(),
                    esc(&e.to_string()),
                    String::new(),
                ),
            };
        }
        match self.view(id).await {
            Ok(Some(v)) => {
                let mut body = format!(
                    "<p>{} incidents of policy {}{}</p><ul>",
                    v.incidents.len(),
                    esc(&v.policy),
                    if v.key.is_empty() {
                        String::new()
                    } else {
                        format!(" at {}", esc(&key_line(&v.key)))
                    }
                );
                for i in &v.incidents {
                    let _ = write!(
                        body,
                        "<li>#{} {}: {} — {}{}</li>",
                        i.id,
                        esc(&i.alertname),
                        esc(&i.summary),
                        i.state.as_str(),
                        i.acked_by
                            .as_ref()
                            .map_or(String::new(), |b| format!(" by {}", esc(b)))
                    );
                }
                body.push_str("</ul>");
                let form = if v.incidents.iter().any(|i| i.state == IncidentState::Open) {
                    "<form method=\"post\"><button type=\"submit\">Acknowledge all</button></form>"
                        .to_owned()
                } else {
                    String::new()
                };
                (200, title, body, form)
            }
            Ok(None) => (
                404,
                "Not found".into(),
                "No such storm.".into(),
                String::new(),
            ),
            Err(e) => (
                503,
                "Storage error".into(),
                esc(&e.to_string()),
                String::new(),
            ),
        }
    }

    /// `GET /api/v1/storms/{id}`: (status, JSON).
    pub async fn api_view(&self, id: i64) -> (u16, serde_json::Value) {
        match self.view(id).await {
            Ok(Some(v)) => (200, serde_json::json!({ "storm": v })),
            Ok(None) => (
                404,
                serde_json::json!({"status": "error", "error": "not_found"}),
            ),
            Err(e) => (
                500,
                serde_json::json!({"status": "error", "error": "storage", "message": e.to_string()}),
            ),
        }
    }

    /// `POST /api/v1/storms/{id}/ack`: (status, JSON).
    pub async fn api_ack(&self, id: i64, by: String) -> (u16, serde_json::Value) {
        match self.ack(id, by).await {
            Ok(StormAcked::Done { incidents, notices }) => (
                200,
                serde_json::json!({"status": "ok", "incidents": incidents, "notices": notices}),
            ),
            Ok(StormAcked::Unchanged) => (200, serde_json::json!({"status": "unchanged"})),
            Ok(StormAcked::NotFound) => (
                404,
                serde_json::json!({"status": "error", "error": "not_found"}),
            ),
            Err(e) => (
                500,
                serde_json::json!({"status": "error", "error": "storage", "message": e.to_string()}),
            ),
        }
    }
}

#[cfg(test)]
mod tests;
