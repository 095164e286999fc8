//! Many incidents and deliveries stored through the ordinary writes, for the console's
//! benchmark (issue 16: 10,000 incidents and 100,000 deliveries) and the tests that load it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Action, Attempt, Backend, RouteRef, RoutedEvent, StoreError, Write, Written};
use crate::payload::{AlertEvent, Labels, Status};

/// Writes per transaction while seeding.
const BATCH: usize = 500;

/// Stores `incidents` incidents, each opened by one alert (labels `severity`, `site`,
/// `instance`, a summary; three policies) sent to `deliveries_per_incident` destinations, so
/// exactly `incidents × deliveries_per_incident` deliveries. Most deliveries are delivered;
/// every 50th incident's first is dead and every 100th's last still pending. Every third
/// incident is acknowledged (quietly, as a storm's ack) and every other one resolved by
/// Alertmanager (without RESOLVED messages), so every state is listed.
#[doc(hidden)]
pub fn seed_for_bench(
    backend: &mut dyn Backend,
    incidents: usize,
    deliveries_per_incident: usize,
) -> Result<(), StoreError> {
    let destinations: Vec<String> = (0..deliveries_per_incident)
        .map(|d| format!("chat-{d}"))
        .collect();
    let mut opened: Vec<(usize, i64, Vec<i64>)> = Vec::with_capacity(incidents);
    let ingests: Vec<Write> = (0..incidents)
        .map(|n| Write::Ingest(vec![firing(n, &destinations)]))
        .collect();
    for (n, written) in apply(backend, ingests)?.into_iter().enumerate() {
        let Written::Ingested(o) = written else {
            return Err(StoreError::Corrupt("seeding: not an ingest".into()));
        };
        let id =
            o.opened.first().copied().ok_or_else(|| {
                StoreError::Corrupt(format!("seeding: alert {n} opened no incident"))
            })?;
        opened.push((n, id, o.deliveries.iter().map(|d| d.1).collect()));
    }
    let mut outcomes = Vec::with_capacity(incidents * deliveries_per_incident);
    for (n, _, deliveries) in &opened {
        for (i, &id) in deliveries.iter().enumerate() {
            let attempt = if n % 50 == 0 && i == 0 {
                Attempt::Dead {
                    error: format!("400 Bad Request: channel chat-{i} not found"),
                }
            } else if n % 100 == 1 && i + 1 == deliveries.len() {
                continue;
            } else {
                Attempt::Delivered {
                    provider_ref: Some(format!("ts-{id}")),
                }
            };
            outcomes.push(Write::Record {
                id,
                attempts: 1,
                attempt,
            });
        }
    }
    apply(backend, outcomes)?;
    let acks: Vec<(i64, i64)> = opened
        .iter()
        .filter(|(n, _, _)| n % 3 == 0)
        .map(|(_, id, _)| (*id, 60_000))
        .collect();
    let mut changes: Vec<Write> = acks
        .chunks(BATCH)
        .map(|c| Write::AckAll {
            incidents: c.to_vec(),
            by: "alice via console".into(),
        })
        .collect();
    let quiet: Arc<std::collections::BTreeSet<String>> =
        Arc::new(destinations.iter().cloned().collect());
    for (n, _, _) in opened.iter().filter(|(n, _, _)| n % 2 == 0) {
        let mut resolved = routed(alert(*n, Status::Resolved), &destinations);
        resolved.group_resolved = true;
        resolved.no_resolved = Arc::clone(&quiet);
        changes.push(Write::Ingest(vec![resolved]));
    }
    apply(backend, changes)?;
    // One human transition, so that a timeline shows notices too.
    if let Some((_, id, _)) = opened.last() {
        apply(
            backend,
            vec![Write::Transition {
                id: *id,
                action: Action::Ack,
                by: "bob via console".into(),
                elapsed_ms: 0,
            }],
        )?;
    }
    Ok(())
}

/// Applies `writes` in transactions of [`BATCH`]; the first failure ends the seeding.
fn apply(backend: &mut dyn Backend, writes: Vec<Write>) -> Result<Vec<Written>, StoreError> {
    let mut out = Vec::with_capacity(writes.len());
    let mut writes = writes.into_iter().peekable();
    while writes.peek().is_some() {
        let batch: Vec<Write> = writes.by_ref().take(BATCH).collect();
        for r in backend.write_batch(batch) {
            out.push(r?);
        }
    }
    Ok(out)
}

fn alert(n: usize, status: Status) -> AlertEvent {
    let severity = ["critical", "warning", "info"][n % 3];
    let labels = Labels::from([
        (
            "alertname".into(),
            ["NodeDown", "PiHot", "DiskFull"][n % 3].into(),
        ),
        ("severity".into(), severity.into()),
        ("site".into(), format!("site-{}", n % 10)),
        ("instance".into(), format!("pi-{n}.fleet:9100")),
    ]);
    let annotations = Labels::from([(
        "summary".into(),
        format!("pi-{n} needs attention ({severity})"),
    )]);
    AlertEvent {
        status,
        fingerprint: format!("fp-{n}"),
        labels,
        annotations,
        starts_at: 1_700_000_000_000_000_000 + i64::try_from(n).unwrap_or(0),
        ends_at: None,
        generator_url: format!(
            "http://prometheus:9090/graph?g0.expr=up%7Binstance%3D%22pi-{n}%22%7D"
        ),
        external_url: "http://alertmanager:9093".into(),
        receiver: "relay".into(),
        group_key: format!("{{}}:{{alertname=\"seed\", n=\"{n}\"}}"),
    }
}

fn routed(event: AlertEvent, destinations: &[String]) -> RoutedEvent {
    RoutedEvent {
        event,
        destinations: destinations.to_vec(),
        routes: Vec::new(),
        group_resolved: false,
        on_call: BTreeMap::new(),
        no_resolved: Arc::default(),
        maintenance: None,
    }
}

fn firing(n: usize, destinations: &[String]) -> RoutedEvent {
    let mut e = routed(alert(n, Status::Firing), destinations);
    e.routes = vec![RouteRef {
        route: "#1".into(),
        policy: ["primary", "secondary", "night"][n % 3].into(),
    }];
    e
}
