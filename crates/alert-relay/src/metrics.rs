//! The relay's own metrics (`GET /metrics`), with prometheus-client. Queue depth and age are
//! read from the delivery queues at scrape time, so they can never drift from the queues.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use serving::process::{Kind, Process};

use crate::channels::settings::Destination;
use crate::store::CommitObserver;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Where a notification goes, in every per-destination series: `channel` is the configured
/// channel's name, `integration` its type (`slack`, `twilio`, ..., as Alertmanager's notifier
/// metrics name it), `destination` the channel's name again, or `<channel>/<n>` for the n-th
/// number (from 1) of a Twilio (SMS or voice) channel's `to`: never a phone number or an
/// address.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: String,
    pub integration: String,
    pub destination: String,
}

impl ChannelLabels {
    pub fn of(destination: &Destination) -> Self {
        let channel = &destination.channel;
        let position = destination
            .recipient
            .as_deref()
            .and_then(|number| channel.recipients().iter().position(|n| *n == number));
        Self {
            channel: channel.name.clone(),
            integration: channel.kind.type_name().to_owned(),
            destination: match position {
                Some(i) => format!("{}/{}", channel.name, i + 1),
                // A recipient not (or no longer) in `to` keeps a label without its number.
                None if destination.recipient.is_some() => format!("{}/?", channel.name),
                None => channel.name.clone(),
            },
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct IncidentLabels {
    pub policy: String,
    /// `open` (escalating) or `acked`.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    #[prometheus(flatten)]
    pub to: ChannelLabels,
    pub reason: String,
}

impl FailureLabels {
    pub fn of(destination: &Destination, reason: &str) -> Self {
        Self {
            to: ChannelLabels::of(destination),
            reason: reason.to_owned(),
        }
    }
}

/// Acknowledgements polled from providers (Telegram updates, Pushover receipts).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    pub source: String,
    /// The outcome (`result`) or the failure (`reason`).
    pub result: String,
}

/// What the queues report at scrape time.
pub trait QueueStats: Send + Sync + std::fmt::Debug {
    /// (destination, depth, age of the oldest queued delivery).
    fn queues(&self) -> Vec<(ChannelLabels, usize, Duration)>;
}

/// What maintenance windows report at scrape time.
pub trait MaintenanceStats: Send + Sync + std::fmt::Debug {
    /// (windows in force now, (window id, firing alerts it suppressed) of every listed window).
    fn maintenance(&self) -> (usize, Vec<(i64, i64)>);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WindowLabel {
    window: String,
}

/// The maintenance service, once it exists (weak: it holds the store, whose DB thread holds
/// these metrics).
type MaintenanceSlot = Arc<Mutex<Option<std::sync::Weak<dyn MaintenanceStats>>>>;

/// Maintenance windows at scrape time: the suppressed counts are the stored ones (right across
/// restarts and instances); a window no longer listed has no series.
#[derive(Debug)]
struct MaintenanceCollector(MaintenanceSlot);

impl Collector for MaintenanceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = (self.0.lock().unwrap_or_else(PoisonError::into_inner))
            .as_ref()
            .and_then(std::sync::Weak::upgrade);
        let (active, windows) = stats.map(|s| s.maintenance()).unwrap_or_default();
        let gauge = encoder.encode_descriptor(
            "alert_relay_maintenance_windows_active",
            "Maintenance windows in force now",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(active).unwrap_or(i64::MAX)).encode(gauge)?;
        let mut suppressed = encoder.encode_descriptor(
            "alert_relay_maintenance_suppressed",
            "Firing alerts a maintenance window kept from paging, per window",
            None,
            MetricType::Counter,
        )?;
        for (id, n) in windows {
            let labels = WindowLabel {
                window: id.to_string(),
            };
            ConstCounter::new(u64::try_from(n).unwrap_or(0))
                .encode(suppressed.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct Metrics {
    pub webhooks: Family<StatusLabel, Counter>,
    pub alerts_received: Family<StatusLabel, Counter>,
    pub alerts_deduplicated: Counter,
    pub alerts_unrouted: Counter,
    pub rejected: Family<ReasonLabel, Counter>,
    pub delivered: Family<ChannelLabels, Counter>,
    pub failed: Family<FailureLabels, Counter>,
    pub dead_lettered: Family<FailureLabels, Counter>,
    pub fallbacks: Family<ChannelLabels, Counter>,
    pub commit_seconds: Histogram,
    pub commit_batch: Histogram,
    pub storage_errors: Counter,
    pub storage_operation_seconds: Family<OperationLabel, Histogram>,
    /// 1 while this instance runs the engines (always on SQLite).
    pub leader: Gauge,
    pub leader_changes: Counter,
    pub config_reload_success: Gauge,
    pub ack_polled: Family<PollLabels, Counter>,
    pub ack_poll_errors: Family<PollLabels, Counter>,
    pub deadman_last_heartbeat: Gauge<f64, AtomicU64>,
    pub deadman_tripped: Gauge,
    pub resync_errors: Counter,
    pub resync_last_success: Gauge<f64, AtomicU64>,
    /// Storm control and budgets (issue 7).
    pub storms: Family<PolicyLabel, Counter>,
    pub storm_collapsed: Family<PolicyLabel, Counter>,
    pub budget_exhausted: Family<ChannelLabels, Counter>,
    pub budget_held_back: Family<ChannelLabels, Counter>,
    /// Incidents not resolved, by policy and state, as the leader's last escalation pass saw
    /// them.
    pub incidents: Family<IncidentLabels, Gauge>,
    /// Escalation steps after the first sent (the first goes out when the incident opens).
    pub escalation_steps: Family<PolicyLabel, Counter>,
    /// Every (policy, state) `incidents` has shown, so one that empties reads 0, not absent.
    incidents_seen: Mutex<std::collections::BTreeSet<IncidentLabels>>,
    maintenance: MaintenanceSlot,
    registry: Mutex<Registry>,
}

#[derive(Debug)]
struct QueueCollector(Arc<Mutex<Option<Arc<dyn QueueStats>>>>);

impl Collector for QueueCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(stats) = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            return Ok(());
        };
        let queues = stats.queues();
        let mut depth = encoder.encode_descriptor(
            "alert_relay_queue_depth",
            "Deliveries waiting per destination",
            None,
            MetricType::Gauge,
        )?;
        for (labels, n, _) in &queues {
            ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX))
                .encode(depth.encode_family(labels)?)?;
        }
        let mut age = encoder.encode_descriptor(
            "alert_relay_queue_oldest_age_seconds",
            "Age of the oldest waiting delivery per destination, 0 when none waits",
            None,
            MetricType::Gauge,
        )?;
        for (labels, _, oldest) in &queues {
            ConstGauge::new(oldest.as_secs_f64()).encode(age.encode_family(labels)?)?;
        }
        Ok(())
    }
}

impl Metrics {
    pub fn new() -> (Arc<Self>, QueueSlot) {
        let m = Self::unregistered();
        m.config_reload_success.set(1);
        // Registered in this order, which is the order of `encode`'s output.
        let mut registry = Registry::default();
        m.register_intake(&mut registry);
        m.register_delivery(&mut registry);
        m.register_storage(&mut registry);
        m.register_watch(&mut registry);
        m.register_storms(&mut registry);
        register_build_info(&mut registry);
        let slot = QueueSlot(Arc::new(Mutex::new(None)));
        registry.register_collector(Box::new(QueueCollector(Arc::clone(&slot.0))));
        registry.register_collector(Box::new(MaintenanceCollector(Arc::clone(&m.maintenance))));
        registry.register_collector(Box::new(ProcessCollector));
        *m.registry.lock().unwrap_or_else(PoisonError::into_inner) = registry;
        (Arc::new(m), slot)
    }

    /// Every metric at zero, none registered yet (the registry is filled in by `new`).
    fn unregistered() -> Self {
        Metrics {
            webhooks: Family::default(),
            alerts_received: Family::default(),
            alerts_deduplicated: Counter::default(),
            alerts_unrouted: Counter::default(),
            rejected: Family::default(),
            delivered: Family::default(),
            failed: Family::default(),
            dead_lettered: Family::default(),
            fallbacks: Family::default(),
            commit_seconds: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            commit_batch: Histogram::new([
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
            ]),
            storage_errors: Counter::default(),
            storage_operation_seconds: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ])
            }),
            leader: Gauge::default(),
            leader_changes: Counter::default(),
            config_reload_success: Gauge::default(),
            ack_polled: Family::default(),
            ack_poll_errors: Family::default(),
            deadman_last_heartbeat: Gauge::default(),
            deadman_tripped: Gauge::default(),
            resync_errors: Counter::default(),
            resync_last_success: Gauge::default(),
            storms: Family::default(),
            storm_collapsed: Family::default(),
            budget_exhausted: Family::default(),
            budget_held_back: Family::default(),
            incidents: Family::default(),
            escalation_steps: Family::default(),
            incidents_seen: Mutex::default(),
            maintenance: Arc::default(),
            registry: Mutex::new(Registry::default()),
        }
    }

    /// Webhooks and the alerts in them.
    fn register_intake(&self, registry: &mut Registry) {
        registry.register(
            "alert_relay_webhooks",
            "Webhook requests by result (accepted, rejected, error)",
            self.webhooks.clone(),
        );
        registry.register(
            "alert_relay_alerts_received",
            "Alerts in accepted webhooks by status",
            self.alerts_received.clone(),
        );
        registry.register(
            "alert_relay_alerts_deduplicated",
            "Alerts already stored with the same fingerprint, status and startsAt",
            self.alerts_deduplicated.clone(),
        );
        registry.register(
            "alert_relay_alerts_unrouted",
            "New alerts that matched no route",
            self.alerts_unrouted.clone(),
        );
        registry.register(
            "alert_relay_webhooks_rejected",
            "Webhook requests answered 4xx by reason",
            self.rejected.clone(),
        );
    }

    /// Notifications, by channel and destination.
    fn register_delivery(&self, registry: &mut Registry) {
        registry.register(
            "alert_relay_notifications_delivered",
            "Notifications a provider accepted",
            self.delivered.clone(),
        );
        registry.register(
            "alert_relay_notifications_failed",
            "Failed delivery attempts by reason (retried unless dead-lettered)",
            self.failed.clone(),
        );
        registry.register(
            "alert_relay_notifications_dead_lettered",
            "Notifications given up on by reason",
            self.dead_lettered.clone(),
        );
        registry.register(
            "alert_relay_notifications_plain_fallback",
            "Notifications re-sent as plain text after the provider rejected the formatted one",
            self.fallbacks.clone(),
        );
    }

    /// Storage commits, and the configuration reload.
    fn register_storage(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "alert_relay_storage_commit_duration",
            "Duration of one group commit (fsync included)",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        registry.register(
            "alert_relay_storage_commit_writes",
            "Writes per group commit",
            self.commit_batch.clone(),
        );
        registry.register_with_unit(
            "alert_relay_storage_operation_duration",
            "Time a caller waited for one storage operation (queue, batch and commit), by kind: each write, or read",
            Unit::Seconds,
            self.storage_operation_seconds.clone(),
        );
        registry.register(
            "alert_relay_storage_errors",
            "Writes that failed in storage (answered 5xx)",
            self.storage_errors.clone(),
        );
        registry.register(
            "alert_relay_leader",
            "1 while this instance runs the engines (delivery, escalation, storms, pollers, dead-man, re-sync)",
            self.leader.clone(),
        );
        registry.register(
            "alert_relay_leader_changes",
            "Times this instance became or stopped being the leader",
            self.leader_changes.clone(),
        );
        registry.register(
            "alert_relay_config_last_reload_successful",
            "Whether the last configuration reload succeeded",
            self.config_reload_success.clone(),
        );
    }

    /// Acknowledgements polled from providers, the dead-man's switch and re-sync with
    /// Alertmanager: what watches the world outside the relay.
    fn register_watch(&self, registry: &mut Registry) {
        registry.register(
            "alert_relay_ack_polled",
            "Telegram updates and Pushover receipts by source and result",
            self.ack_polled.clone(),
        );
        registry.register(
            "alert_relay_ack_poll_errors",
            "Failed Telegram getUpdates and Pushover receipt requests by source and reason",
            self.ack_poll_errors.clone(),
        );
        registry.register_with_unit(
            "alert_relay_deadman_last_heartbeat_timestamp",
            "Wall-clock time of the last dead-man's switch heartbeat (Watchdog), 0 before the first",
            Unit::Seconds,
            self.deadman_last_heartbeat.clone(),
        );
        registry.register(
            "alert_relay_deadman_tripped",
            "1 while the dead-man's switch has tripped (no heartbeat for deadman.timeout)",
            self.deadman_tripped.clone(),
        );
        registry.register(
            "alert_relay_resync_errors",
            "Re-sync polls of Alertmanager's API that failed (nothing was changed)",
            self.resync_errors.clone(),
        );
        registry.register_with_unit(
            "alert_relay_resync_last_success_timestamp",
            "Wall-clock time of the last successful re-sync with Alertmanager, 0 before the first",
            Unit::Seconds,
            self.resync_last_success.clone(),
        );
    }

    /// Storm control and budgets (issue 7).
    fn register_storms(&self, registry: &mut Registry) {
        registry.register(
            "alert_relay_storms",
            "Storms detected by policy",
            self.storms.clone(),
        );
        registry.register(
            "alert_relay_storm_collapsed",
            "First-step messages replaced by a storm summary, by policy",
            self.storm_collapsed.clone(),
        );
        registry.register(
            "alert_relay_budget_exhausted",
            "Budget windows in which a destination's budget ran out",
            self.budget_exhausted.clone(),
        );
        registry.register(
            "alert_relay_budget_held_back",
            "Messages held back because a destination's budget ran out",
            self.budget_held_back.clone(),
        );
        registry.register(
            "alert_relay_incidents",
            "Incidents not resolved, by policy and state (open: escalating; acked), as the leader last saw them",
            self.incidents.clone(),
        );
        registry.register(
            "alert_relay_escalation_steps",
            "Escalation steps after the first sent to their destinations, by policy",
            self.escalation_steps.clone(),
        );
    }

    /// The incidents one escalation pass found unresolved: every (policy, state) counted, the
    /// ones seen before and now gone set to 0 (a series that disappears reads as no data).
    pub fn set_incidents(&self, unresolved: &[(String, &'static str)]) {
        let mut seen = self
            .incidents_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut counts: std::collections::BTreeMap<IncidentLabels, i64> =
            seen.iter().map(|l| (l.clone(), 0)).collect();
        for (policy, state) in unresolved {
            *counts
                .entry(IncidentLabels {
                    policy: policy.clone(),
                    state,
                })
                .or_insert(0) += 1;
        }
        for (labels, n) in counts {
            self.incidents.get_or_create(&labels).set(n);
            seen.insert(labels);
        }
    }

    /// Where the maintenance windows' gauge and counters are read from at scrape time.
    pub fn watch_maintenance(&self, stats: &Arc<dyn MaintenanceStats>) {
        *self
            .maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::downgrade(stats));
    }

    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts one polled item (`result`) or one failed poll (`error`) of an ack source.
    pub fn ack_poll(&self, source: &str, result: &str, error: bool) {
        let family = if error {
            &self.ack_poll_errors
        } else {
            &self.ack_polled
        };
        family
            .get_or_create(&PollLabels {
                source: source.into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
        self.webhooks
            .get_or_create(&StatusLabel {
                status: "rejected".into(),
            })
            .inc();
    }
}

/// `alert_relay_build_info`: a constant 1 labelled with what was built.
fn register_build_info(registry: &mut Registry) {
    let build = Family::<BuildLabels, Gauge>::default();
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").into(),
            revision: serving::build::REVISION.into(),
            rustc: serving::build::RUSTC.into(),
        })
        .set(1);
    registry.register(
        "alert_relay_build_info",
        "A metric with a constant value 1 labelled with the relay's version, revision and compiler",
        build,
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    revision: String,
    rustc: String,
}

/// The relay's own CPU, memory and descriptors, read from `/proc/self` at each scrape and named
/// as every Prometheus client names them.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for metric in Process::read().metrics() {
            match metric.kind {
                // OpenMetrics names the family without the `_total` its sample carries.
                Kind::Counter => {
                    let family = metric.name.strip_suffix("_total").unwrap_or(metric.name);
                    let encoder = encoder.encode_descriptor(
                        family,
                        metric.help,
                        None,
                        MetricType::Counter,
                    )?;
                    ConstCounter::new(metric.value).encode(encoder)?;
                }
                Kind::Gauge => {
                    let encoder = encoder.encode_descriptor(
                        metric.name,
                        metric.help,
                        None,
                        MetricType::Gauge,
                    )?;
                    ConstGauge::new(metric.value).encode(encoder)?;
                }
            }
        }
        Ok(())
    }
}

/// Where the delivery engine plugs its queue statistics in once it exists.
#[derive(Debug, Clone)]
pub struct QueueSlot(Arc<Mutex<Option<Arc<dyn QueueStats>>>>);

impl QueueSlot {
    pub fn set(&self, stats: Arc<dyn QueueStats>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(stats);
    }

    /// Drops the engine reference (it holds the store, which the DB thread's metrics hold:
    /// a cycle that would keep the DB thread alive at shutdown).
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Feeds the commit histograms from the DB thread.
#[derive(Debug)]
pub struct CommitMetrics(pub Arc<Metrics>);

impl CommitObserver for CommitMetrics {
    fn committed(&self, writes: usize, took: Duration) {
        self.0.commit_seconds.observe(took.as_secs_f64());
        #[allow(clippy::cast_precision_loss)]
        self.0.commit_batch.observe(writes as f64);
    }

    fn operation(&self, operation: &'static str, took: Duration) {
        self.0
            .storage_operation_seconds
            .get_or_create(&OperationLabel { operation })
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_labels_name_the_channel_its_type_and_never_a_number() {
        let mut secrets = crate::config::MapSecrets::default();
        secrets.files.insert("/t".into(), "tw-token".into());
        let yaml = r#"
storage: { sqlite: relay.db }
channels:
  ops: { type: webhook, url: "https://hooks.example.org/x" }
  oncall: { type: twilio, account_sid: AC1, auth_token_file: /t, from: "+15005550006", to: ["+447700900123", "+447700900124"] }
policies:
  p: { steps: [ { notify: [ops, oncall] } ] }
routes: [ { policy: p } ]
"#;
        let config = crate::config::parse(yaml, std::path::Path::new("/"), &secrets)
            .unwrap_or_else(|e| panic!("{e}"));
        let labels: Vec<(String, String, String)> = config
            .destinations()
            .values()
            .map(|d| {
                let l = ChannelLabels::of(d);
                (l.channel, l.integration, l.destination)
            })
            .collect();
        let owned = |c: &str, i: &str, d: &str| (c.to_owned(), i.to_owned(), d.to_owned());
        assert_eq!(
            labels,
            [
                owned("oncall", "twilio", "oncall/1"),
                owned("oncall", "twilio", "oncall/2"),
                owned("ops", "webhook", "ops"),
            ]
        );
        let (metrics, _slot) = Metrics::new();
        let sms = &config.destinations()["oncall/+447700900124"];
        metrics
            .failed
            .get_or_create(&FailureLabels::of(sms, "timeout"))
            .inc();
        let text = metrics.encode();
        assert!(
            text.contains(r#"alert_relay_notifications_failed_total{channel="oncall",integration="twilio",destination="oncall/2",reason="timeout"} 1"#),
            "{text}"
        );
        assert!(!text.contains("+44"), "{text}");
    }

    #[test]
    fn build_info_and_process_metrics_are_exposed() {
        let (metrics, _slot) = Metrics::new();
        let text = metrics.encode();
        let build = format!(
            "alert_relay_build_info{{version=\"{}\",revision=\"{}\",rustc=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            serving::build::REVISION,
            serving::build::RUSTC
        );
        assert!(text.contains(&build), "{text}");
        // OpenMetrics: a counter's family has no `_total`, its sample has.
        for d in serving::process::DESCRIPTORS {
            let family = d.name.strip_suffix("_total").unwrap_or(d.name);
            let kind = if d.kind == Kind::Counter {
                "counter"
            } else {
                "gauge"
            };
            let head = format!(
                "# HELP {family} {}\n# TYPE {family} {kind}\n{} ",
                d.help, d.name
            );
            assert!(text.contains(&head), "{head}: {text}");
        }
    }
}
