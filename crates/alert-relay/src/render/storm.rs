//! The wording of storm and budget summaries and the layout of messages that are not one
//! alert. The store freezes a summary's text into its delivery when the step fires, so a page
//! says what was true then.

use std::fmt::Write as _;

use crate::model::record::{DeliveryJob, IncidentState};
use crate::model::storm::{LIST_MAX, Listed, Part, key_line};
use crate::render::Message;

/// Title and body of a summary (title, newline, body: the form stored in `deliveries.notice`).
/// `listed` are the incidents this summary is about, `total` how many the storm has.
pub fn summary_text(
    storm: i64,
    part: Part,
    key: &[(String, String)],
    total: usize,
    listed: &[Listed],
) -> String {
    let at = if key.is_empty() {
        String::new()
    } else {
        format!(" at {}", key_line(key))
    };
    let headline = listed.first().map_or_else(String::new, |l| {
        format!(": {}", Message::new(&l.event).summary)
    });
    let n = listed.len();
    let incidents = |k: usize| {
        if k == 1 {
            "1 incident".to_owned()
        } else {
            format!("{k} incidents")
        }
    };
    let title = match part {
        Part::Detected => format!("Storm #{storm}: {}{at}{headline}", incidents(n)),
        Part::Joined => format!("Storm #{storm}: {n} more{at}, {} in all", incidents(total)),
        Part::Step(s) => format!(
            "Storm #{storm} step {}: {}{at} still unacknowledged",
            s + 1,
            incidents(n)
        ),
        Part::Resolved => format!("Storm #{storm} resolved: all {}{at}", incidents(total)),
    };
    let mut body = String::new();
    if part != Part::Resolved {
        for l in listed.iter().take(LIST_MAX) {
            let m = Message::new(&l.event);
            let what = m.instance.unwrap_or(m.alertname);
            let state = match l.state {
                IncidentState::Open => String::new(),
                s => format!(" ({})", s.as_str()),
            };
            let _ = writeln!(body, "#{} {what}: {}{state}", l.incident, m.summary);
        }
        if n > LIST_MAX {
            let _ = writeln!(body, "and {} more", n - LIST_MAX);
        }
    }
    let _ = write!(
        body,
        "All {total} incidents: the storm's ack page or GET /api/v1/storms/{storm}."
    );
    format!("{title}\n{body}")
}

/// Lays out what is not one alert: a storm summary or notice, a budget summary (text in
/// `notice`: title, newline, body), or a later step of an incident with several alerts firing
/// (count and list; the channel truncates to its limits).
pub fn shape(msg: &mut Message, job: &DeliveryJob) {
    if let Some(text) = job
        .notice
        .as_ref()
        .filter(|_| job.storm.is_some() || job.incident.is_none())
    {
        let (title, body) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        msg.title = title.to_owned();
        msg.summary = body.lines().next().unwrap_or(title).to_owned();
        msg.description = None;
        msg.body = Some(body.to_owned());
        msg.links.clear();
        msg.context.clear();
        msg.instance = None;
        return;
    }
    if job.alerts.len() > 1 && job.notice.is_none() {
        let n = job.alerts.len();
        msg.title = format!("[FIRING:{n}] {}", msg.alertname);
        let mut list = String::new();
        let mut names = Vec::new();
        for e in job.alerts.iter().take(LIST_MAX * 2) {
            let m = Message::new(e);
            let name = m.instance.unwrap_or(m.alertname);
            let _ = writeln!(list, "- {name}: {}", m.summary);
            names.push(name);
        }
        if n > LIST_MAX * 2 {
            let _ = writeln!(list, "and {} more", n - LIST_MAX * 2);
            names.push(format!("and {} more", n - LIST_MAX * 2));
        }
        // The summary carries the short list too: short layouts (SMS) show only it.
        msg.summary = format!("{} ({n} firing: {})", msg.summary, names.join(", "));
        msg.description = Some(format!("{n} alerts firing:\n{}", list.trim_end()));
    }
}
