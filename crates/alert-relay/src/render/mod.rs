//! The provider-independent message: what a human needs to know about one alert event,
//! derived from an [`AlertEvent`] alone. Channels lay it out for their provider. Pure.

pub mod ack;
pub mod budget;
pub mod console;
pub mod escape;
#[cfg(test)]
mod forgery_tests;
pub mod ical;
pub mod links;
pub mod storm;
pub mod template;
pub mod text;
#[cfg(test)]
mod wording_tests;

use std::time::Duration;

use serde::Serialize;

use crate::payload::{AlertEvent, Labels, Status};
use crate::time::{format_rfc3339, humanize};

/// Labels shown beside the summary, in this order, when present.
pub const CONTEXT_LABELS: &[&str] = &["site", "location", "region", "cluster", "job"];

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub status: Status,
    pub alertname: String,
    pub severity: Option<String>,
    /// "[FIRING] PiHot on pi-17:9831"; a user template may replace it.
    pub title: String,
    pub summary: String,
    pub description: Option<String>,
    pub instance: Option<String>,
    /// `CONTEXT_LABELS` that the alert has.
    pub context: Vec<(String, String)>,
    pub starts_at: String,
    pub ends_at: Option<String>,
    /// Resolved only: how long it fired.
    pub firing_for: Option<String>,
    pub links: Vec<Link>,
    pub labels: Labels,
    pub annotations: Labels,
    pub fingerprint: String,
    /// Set by a user template: replaces the default body layout.
    pub body: Option<String>,
    /// The incident this message belongs to (set by `ack::decorate`), for channels with their
    /// own acknowledgement (a Telegram button, Pushover emergency receipts).
    #[serde(skip)]
    pub incident: Option<i64>,
    /// The storm a summary covers (set by `ack::decorate`): its Pushover receipt is tracked
    /// like an incident's.
    #[serde(skip)]
    pub storm: Option<i64>,
    /// Set for a notice about an incident (acknowledged, resolved by hand, …) instead of the
    /// alert itself: its badge, e.g. `ACKNOWLEDGED`. Channels give notices a neutral look.
    pub notice: Option<String>,
}

/// How a message should look: alarming, all-clear, or informational.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Firing,
    Resolved,
    Notice,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub url: String,
}

impl Message {
    pub fn new(e: &AlertEvent) -> Self {
        let alertname = e
            .labels
            .get("alertname")
            .cloned()
            .unwrap_or_else(|| "alert".into());
        let instance = e.labels.get("instance").cloned();
        let summary = ["summary", "message", "description"]
            .iter()
            .find_map(|k| e.annotations.get(*k).filter(|v| !v.trim().is_empty()))
            .cloned()
            .unwrap_or_else(|| alertname.clone());
        let description = e
            .annotations
            .get("description")
            .filter(|d| **d != summary && !d.trim().is_empty())
            .cloned();
        let state = match e.status {
            Status::Firing => "FIRING",
            Status::Resolved => "RESOLVED",
        };
        let title = match &instance {
            Some(i) => format!("[{state}] {alertname} on {i}"),
            None => format!("[{state}] {alertname}"),
        };
        let firing_for = match (e.status, e.ends_at) {
            (Status::Resolved, Some(end)) if end >= e.starts_at => {
                let nanos = u64::try_from(end - e.starts_at).unwrap_or(0);
                Some(humanize(Duration::from_nanos(nanos)))
            }
            _ => None,
        };
        Message {
            status: e.status,
            severity: e.labels.get("severity").cloned(),
            title,
            summary,
            description,
            context: CONTEXT_LABELS
                .iter()
                .filter_map(|k| e.labels.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                .collect(),
            starts_at: format_rfc3339(e.starts_at),
            ends_at: e.ends_at.map(format_rfc3339),
            firing_for,
            links: links::for_event(e),
            labels: e.labels.clone(),
            annotations: e.annotations.clone(),
            fingerprint: e.fingerprint.clone(),
            instance,
            alertname,
            body: None,
            incident: None,
            storm: None,
            notice: None,
        }
    }

    /// A firing alert (not a notice about one).
    pub fn is_firing(&self) -> bool {
        self.tone() == Tone::Firing
    }

    pub fn tone(&self) -> Tone {
        match (self.status, &self.notice) {
            (_, Some(_)) => Tone::Notice,
            (Status::Firing, None) => Tone::Firing,
            (Status::Resolved, None) => Tone::Resolved,
        }
    }

    /// `FIRING CRITICAL`, `RESOLVED`, or a notice's badge (`ACKNOWLEDGED`): the word that
    /// leads short layouts.
    pub fn badge(&self) -> String {
        if let Some(n) = &self.notice {
            return n.clone();
        }
        match (self.status, &self.severity) {
            (Status::Resolved, _) => "RESOLVED".into(),
            (Status::Firing, Some(s)) => format!("FIRING {}", s.to_uppercase()),
            (Status::Firing, None) => "FIRING".into(),
        }
    }

    /// `site=wh-2 job=pi`.
    pub fn context_line(&self) -> String {
        self.context
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// "Firing since …", or "Resolved after firing for 45m (from … to …)".
    pub fn timing_line(&self) -> String {
        match (self.status, &self.firing_for, &self.ends_at) {
            (Status::Firing, _, _) => format!("Firing since {}", self.starts_at),
            (Status::Resolved, Some(d), Some(end)) => format!(
                "Resolved after firing for {d} (from {} to {end})",
                self.starts_at
            ),
            (Status::Resolved, _, _) => format!("Resolved (firing since {})", self.starts_at),
        }
    }

    /// The title without its leading `[FIRING] `, `[RESOLVED] `, `[ACKNOWLEDGED] `: for
    /// layouts that lead with [`Message::badge`] already. A count stays: `[FIRING:3] PiHot …`
    /// gives `3 alerts: PiHot …`. A user template's title stays whole.
    pub fn title_after_badge(&self) -> String {
        let Some((state, rest)) = self
            .title
            .strip_prefix('[')
            .and_then(|t| t.split_once("] "))
        else {
            return self.title.clone();
        };
        match state.split_once(':') {
            Some(("FIRING", n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                format!("{n} alerts: {rest}")
            }
            _ if matches!(state, "FIRING" | "RESOLVED")
                || self.notice.as_deref() == Some(state) =>
            {
                rest.to_owned()
            }
            _ => self.title.clone(),
        }
    }

    /// The plain-text body: a user template's body, or the default layout without the title.
    /// A resolved message says that it resolved and how long it fired, not the firing summary,
    /// which words the problem as current ("is under-volted now").
    pub fn plain_body(&self) -> String {
        if let Some(b) = &self.body {
            return b.clone();
        }
        let ctx = Some(self.context_line()).filter(|c| !c.is_empty());
        let lines: Vec<String> = match self.status {
            Status::Firing => [Some(self.summary.clone()), self.description.clone(), ctx]
                .into_iter()
                .flatten()
                .chain([self.timing_line()])
                .collect(),
            Status::Resolved => [Some(self.timing_line()), ctx]
                .into_iter()
                .flatten()
                .collect(),
        };
        lines.join("\n")
    }

    /// Title, body and links as plain text, as it came: the generic webhook's `text`.
    pub fn plain_text(&self) -> String {
        self.plain_layout(str::to_owned, |l| format!("{}: {}", l.name, l.url))
    }

    /// The plain layout (title, body, one line per link) with title and body escaped by `esc`
    /// and each link written by `link`: the layout of channels without formatting and the
    /// fallback of those with it. The body is escaped whole: the relay's own words in it
    /// ("Firing since …", `site=…`) are plain text too.
    pub fn plain_layout(
        &self,
        esc: impl Fn(&str) -> String,
        link: impl Fn(&Link) -> String,
    ) -> String {
        let mut out = format!("{}\n{}", esc(&self.title), esc(&self.plain_body()));
        for l in &self.links {
            out.push('\n');
            out.push_str(&link(l));
        }
        out
    }
}

/// A firing event for `send-test` and examples.
pub fn test_event() -> AlertEvent {
    let labels = [
        ("alertname", "AlertRelayTest"),
        ("severity", "info"),
        ("instance", "alert-relay"),
    ];
    AlertEvent {
        status: Status::Firing,
        fingerprint: "0000000000000000".into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        annotations: [(
            "summary".to_owned(),
            "Test message from alert-relay send-test: this channel works".to_owned(),
        )]
        .into(),
        starts_at: crate::time::now_millis() * 1_000_000,
        ends_at: None,
        generator_url: String::new(),
        external_url: String::new(),
        receiver: String::new(),
        group_key: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::parse;

    #[test]
    fn default_layout() {
        let n = parse(crate::payload::tests_example().as_bytes()).expect("valid");
        let m = Message::new(&n.events[0]);
        assert_eq!(m.title, "[FIRING] PiHot on pi-17:9831");
        assert_eq!(m.badge(), "FIRING CRITICAL");
        assert_eq!(m.summary, "CPU at 85°C");
        assert_eq!(m.context_line(), "site=wh-2");
        let names: Vec<&str> = m.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["Source", "Alertmanager", "Silence"]);
        assert!(
            m.links[1]
                .url
                .starts_with("http://alertmanager:9093/#/alerts?filter=%7Balertname%3D%22PiHot%22")
        );
        let r = Message::new(&n.events[1]);
        assert_eq!(r.firing_for.as_deref(), Some("45m"));
        assert!(r.plain_text().contains("Resolved after firing for 45m"));
    }

    #[test]
    fn the_title_after_the_badge_keeps_a_count() {
        let n = parse(crate::payload::tests_example().as_bytes()).expect("valid");
        let mut m = Message::new(&n.events[0]);
        assert_eq!(m.title_after_badge(), "PiHot on pi-17:9831");
        m.title = "[FIRING:3] PiHot (incident #4)".into();
        assert_eq!(m.title_after_badge(), "3 alerts: PiHot (incident #4)");
        m.title = "[site] custom".into();
        assert_eq!(m.title_after_badge(), "[site] custom");
        m.title = "custom [x] title".into();
        assert_eq!(m.title_after_badge(), "custom [x] title");
    }

    #[test]
    fn user_template() {
        let n = parse(crate::payload::tests_example().as_bytes()).expect("valid");
        let mut m = Message::new(&n.events[0]);
        let t = template::UserTemplate::new(
            Some("{{ labels.site }}: {{ alertname }} <{{ severity }}>".into()),
            Some("{{ summary }} ({{ labels.nope }})".into()),
        )
        .expect("compiles");
        t.apply(&mut m).expect("renders");
        assert_eq!(m.title, "wh-2: PiHot <critical>");
        assert_eq!(m.plain_body(), "CPU at 85°C ()");
        assert!(template::UserTemplate::new(Some("{{ oops".into()), None).is_err());
    }
}
