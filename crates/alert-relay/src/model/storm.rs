//! Storm control's rules, the store's storm and budget writes, and storms as the API shows them
//! (the behaviour is described in `crate::storm`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::record::{Incident, IncidentState};
use crate::payload::{AlertEvent, Labels};

/// How many incidents a summary names; the rest are counted.
pub const LIST_MAX: usize = 5;

/// `policies.NAME.storm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StormRule {
    pub window: Duration,
    pub threshold: u32,
    /// Labels whose values must be equal; empty: every incident of the policy.
    pub group_by: Vec<String>,
    /// Which incidents count, by the labels of the alert that opened them (`matchers:` or
    /// `match:`); empty: every incident of the policy.
    pub matchers: Vec<crate::matcher::Matcher>,
}

impl StormRule {
    /// Validates `policies.NAME.storm`; an error names the key under `storm.`.
    pub fn new(
        window: &str,
        threshold: u32,
        group_by: &[String],
    ) -> Result<Self, (String, String)> {
        let window = crate::time::parse_duration(window).map_err(|e| ("window".to_owned(), e))?;
        if window.is_zero() {
            return Err(("window".into(), "must be above 0".into()));
        }
        if threshold == 0 {
            return Err((
                "threshold".into(),
                "must be at least 1 (a storm is more than threshold incidents)".into(),
            ));
        }
        Ok(StormRule {
            window,
            threshold,
            group_by: group_by.to_vec(),
            matchers: Vec::new(),
        })
    }
}

/// A storm rule with what the store needs to apply it.
#[derive(Debug, Clone)]
pub struct RuleAt {
    pub policy: String,
    pub window_ms: i64,
    pub threshold: usize,
    pub group_by: Vec<String>,
    /// Only incidents whose opening alert matches all of these count (empty: every one).
    pub matchers: Vec<crate::matcher::Matcher>,
    /// The policy's first-step destinations: where the summaries go.
    pub destinations: Vec<String>,
    /// Who of a rotation each of them pages (`deliveries.on_call`).
    pub on_call: BTreeMap<String, String>,
}

/// A budget with what the store needs to apply it.
#[derive(Debug, Clone)]
pub struct BudgetAt {
    pub destination: String,
    pub max: u32,
    pub per_ms: i64,
    /// Overflow destinations (every destination of the `overflow` channels).
    pub overflow: Vec<String>,
    /// "10 per 1h", for the texts.
    pub label: String,
}

#[derive(Debug, Clone)]
pub enum StormWrite {
    /// Incidents opened by an ingest: detect storms, collapse first steps.
    Opened {
        opened: Vec<i64>,
        rules: Vec<RuleAt>,
        clock: i64,
    },
    /// A later step of a storm member (same conditions as [`Write::FireStep`]).
    FireStep {
        id: i64,
        storm: i64,
        expected_step: i64,
        step: i64,
        elapsed_ms: i64,
        destinations: Vec<String>,
        on_call: BTreeMap<String, String>,
        allow_acked: bool,
    },
    /// The periodic pass: joiner updates, closed storms, ended budget windows, the clock.
    Tick {
        clock: i64,
        rules: Vec<RuleAt>,
        budgets: Vec<BudgetAt>,
    },
    /// Stores the relay clock (at shutdown).
    Clock(i64),
    /// One notice per destination the storm or its incidents reached.
    Announce { storm: i64, text: String },
    /// Counts a first attempt of `delivery` against its destination's budget.
    BudgetAdmit {
        delivery: i64,
        budget: BudgetAt,
        clock: i64,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum StormWritten {
    Opened {
        /// First-step deliveries replaced by a summary (now `skipped`), with their policy.
        superseded: Vec<(i64, String)>,
        /// Summaries to send.
        deliveries: Vec<(String, i64, i64)>,
        /// Storms detected by this write.
        detected: Vec<(i64, String)>,
    },
    Fired(Vec<(String, i64, i64)>),
    Deliveries(Vec<(String, i64, i64)>),
    /// Within budget: send it. `deliveries`: a tally of the window that just ended.
    Admitted {
        deliveries: Vec<(String, i64, i64)>,
    },
    /// Over budget: the delivery is skipped; `exhausted` on the first of the window.
    Held {
        deliveries: Vec<(String, i64, i64)>,
        exhausted: bool,
    },
}

/// A storm as the API and the ack page show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StormView {
    pub id: i64,
    pub policy: String,
    pub key: Vec<(String, String)>,
    pub opened_at_ms: i64,
    pub closed_at_ms: Option<i64>,
    pub incidents: Vec<Incident>,
}

/// The `group_by` values of an alert (a missing label is the empty string).
pub fn key_of(labels: &Labels, group_by: &[String]) -> Vec<(String, String)> {
    group_by
        .iter()
        .map(|k| (k.clone(), labels.get(k).cloned().unwrap_or_default()))
        .collect()
}

/// `site=warehouse-2 alertname=UpsOnBattery`.
pub fn key_line(key: &[(String, String)]) -> String {
    key.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One incident as a summary lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub incident: i64,
    pub state: IncidentState,
    pub event: AlertEvent,
}

/// What a summary is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The storm was just detected.
    Detected,
    /// Incidents joined since the last summary.
    Joined,
    /// Policy step `n` (0-based) of the listed incidents is due.
    Step(i64),
    /// Every incident of the storm is resolved.
    Resolved,
}
