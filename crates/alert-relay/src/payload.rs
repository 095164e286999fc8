//! Alertmanager's webhook payload, version "4": parsing and the per-alert events the relay
//! stores. Pure: bytes in, values or a [`PayloadError`] out; never panics on any input
//! (proptest below, fuzz target in `fuzz/`).
//!
//! Parsing is tolerant where Alertmanager versions differ (`notification_reason` from v0.32,
//! `routeLabels` from v0.34, unknown future fields, missing `fingerprint` before v0.19) and
//! strict where a wrong value would corrupt routing or deduplication (types, times, statuses).
//! Nesting is limited to [`MAX_DEPTH`] over the whole document, fields it ignores included.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::matcher::unquote_meta;
use crate::time::{UnixNanos, is_go_zero, parse_rfc3339};

pub type Labels = BTreeMap<String, String>;

/// The deepest nesting of arrays and objects a webhook may have, over the whole document:
/// serde_json's own limit (128, shared by everything it deserializes) does not apply to fields
/// it skips, so an unknown field could otherwise nest without end.
pub const MAX_DEPTH: usize = 128;

/// Why a body is not an acceptable webhook (each maps to a 400 with a JSON error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// The version as sent, in JSON (`"3"`, `4`), quoted once.
    #[error(
        "unsupported payload version {0}; this relay speaks Alertmanager webhook version \"4\" (a string)"
    )]
    WrongVersion(String),
    #[error("alerts[{index}].{field}: {message}")]
    InvalidAlert {
        index: usize,
        field: &'static str,
        message: String,
    },
    #[error("malformed JSON: nested deeper than {MAX_DEPTH} levels at byte {at}")]
    TooDeep { at: usize },
}

impl PayloadError {
    /// Short reason for the `rejected` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            PayloadError::Malformed(_) | PayloadError::TooDeep { .. } => "malformed",
            PayloadError::WrongVersion(_) => "wrong_version",
            PayloadError::InvalidAlert { .. } => "invalid_alert",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One webhook call, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub group_key: String,
    /// Unescaped (Alertmanager `QuoteMeta`-escapes it).
    pub receiver: String,
    pub status: Status,
    pub truncated_alerts: u64,
    pub notification_reason: Option<String>,
    pub events: Vec<AlertEvent>,
}

/// One alert in one state: the unit that is deduplicated, stored and rendered. It carries the
/// group context a message needs, so rendering never looks at anything but this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub status: Status,
    pub fingerprint: String,
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    pub starts_at: UnixNanos,
    #[serde(default)]
    pub ends_at: Option<UnixNanos>,
    #[serde(default)]
    pub generator_url: String,
    #[serde(default)]
    pub external_url: String,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub group_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    version: String,
    #[serde(default)]
    group_key: Option<String>,
    #[serde(default)]
    truncated_alerts: Option<u64>,
    status: Status,
    #[serde(default)]
    receiver: Option<String>,
    #[serde(default, rename = "externalURL")]
    external_url: Option<String>,
    #[serde(default, rename = "notification_reason")]
    notification_reason: Option<String>,
    alerts: Vec<WireAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAlert {
    status: Status,
    labels: Labels,
    #[serde(default)]
    annotations: Option<Labels>,
    starts_at: String,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: serde_json::Value,
}

/// Parses a webhook body.
/// A version as the sender wrote it, JSON-escaped (so quoted once when a string) and cut at
/// 40 characters: it goes into an answer and a log line.
fn version_as_sent(v: &serde_json::Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

pub fn parse(body: &[u8]) -> Result<Notification, PayloadError> {
    if let Some(at) = too_deep(body, MAX_DEPTH) {
        return Err(PayloadError::TooDeep { at });
    }
    let wire: Wire = match serde_json::from_slice(body) {
        Ok(w) => w,
        Err(e) => {
            // A body of another shape that declares another version is a version error, so the
            // operator learns what to change rather than which field failed.
            if let Ok(v) = serde_json::from_slice::<VersionOnly>(body)
                && v.version != serde_json::Value::String("4".into())
            {
                return Err(PayloadError::WrongVersion(version_as_sent(&v.version)));
            }
            return Err(PayloadError::Malformed(e.to_string()));
        }
    };
    if wire.version != "4" {
        return Err(PayloadError::WrongVersion(version_as_sent(
            &serde_json::Value::String(wire.version),
        )));
    }
    let receiver = unquote_meta(wire.receiver.as_deref().unwrap_or_default());
    let external_url = wire.external_url.unwrap_or_default();
    let group_key = wire.group_key.unwrap_or_default();
    let mut events = Vec::with_capacity(wire.alerts.len());
    for (index, a) in wire.alerts.into_iter().enumerate() {
        let bad = |field, message: String| PayloadError::InvalidAlert {
            index,
            field,
            message,
        };
        let starts_at = parse_rfc3339(&a.starts_at).ok_or_else(|| {
            bad(
                "startsAt",
                format!("{:?} is not an RFC 3339 time", a.starts_at),
            )
        })?;
        let ends_at = match a.ends_at.as_deref() {
            None | Some("") => None,
            Some(s) if is_go_zero(s) => None,
            Some(s) => Some(
                parse_rfc3339(s)
                    .ok_or_else(|| bad("endsAt", format!("{s:?} is not an RFC 3339 time")))?,
            ),
        };
        let fingerprint = match a.fingerprint {
            Some(f) if !f.is_empty() => {
                if f.len() > 64 || !f.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(bad(
                        "fingerprint",
                        "must be up to 64 letters and digits".into(),
                    ));
                }
                f
            }
            _ => fingerprint_of(&a.labels),
        };
        events.push(AlertEvent {
            status: a.status,
            fingerprint,
            labels: a.labels,
            annotations: a.annotations.unwrap_or_default(),
            starts_at,
            ends_at,
            generator_url: a.generator_url.unwrap_or_default(),
            external_url: external_url.clone(),
            receiver: receiver.clone(),
            group_key: group_key.clone(),
        });
    }
    Ok(Notification {
        group_key,
        receiver,
        status: wire.status,
        truncated_alerts: wire.truncated_alerts.unwrap_or(0),
        notification_reason: wire.notification_reason,
        events,
    })
}

/// The offset of the first `[` or `{` that opens level `max + 1`, brackets inside strings not
/// counted. A scan of the bytes, not a parse: whatever else is wrong is serde_json's to find,
/// so this only has to count right on valid JSON and never panic on the rest.
fn too_deep(body: &[u8], max: usize) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (at, &b) in body.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(at);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// A stand-in for Alertmanager's fingerprint when an old version sends none: the same label
/// set always gives the same 16 hex digits (not Alertmanager's FNV value, only as stable).
pub fn fingerprint_of(labels: &Labels) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0xff]);
        h.update(v.as_bytes());
        h.update([0xff]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An Alertmanager group key as a human reads it: its group labels (`alertname=PiHot,
/// instance=pi-17:9831`), `every alert of its route` when the route groups by nothing, or the
/// key as it came when it is not Alertmanager's shape (`{}/{route matchers}:{group labels}`).
pub fn readable_group(key: &str) -> String {
    match group_labels(key) {
        Some(labels) if labels.is_empty() => "every alert of its route".to_owned(),
        Some(labels) => labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        None if key.is_empty() => "none".to_owned(),
        None => key.to_owned(),
    }
}

/// The group labels of a group key: after the route's path of `{…}` segments joined by `/`,
/// a `:` and `{name="value", …}` (Go-quoted values). `None` when the key has another shape.
fn group_labels(key: &str) -> Option<Vec<(String, String)>> {
    let mut rest = key;
    // The route's path: `{…}` segments (matchers, with quoted values) joined by `/`.
    loop {
        rest = skip_braced(rest)?;
        match rest.as_bytes().first() {
            Some(b'/') => rest = &rest[1..],
            Some(b':') => break,
            _ => return None,
        }
    }
    let inner = rest.strip_prefix(":{")?.strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let (value, after) = quoted_value(after)?;
        labels.push((name.trim().to_owned(), value));
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(labels)
}

/// `s` after one `{…}` (quotes inside honoured).
fn skip_braced(s: &str) -> Option<&str> {
    let mut rest = s.strip_prefix('{')?;
    loop {
        let at = rest.find(['"', '}'])?;
        if rest.as_bytes()[at] == b'}' {
            return Some(&rest[at + 1..]);
        }
        let (_, after) = quoted_value(&rest[at + 1..])?;
        rest = after;
    }
}

/// A Go-quoted value's text up to its closing quote (the opening one already taken), and what
/// follows it.
fn quoted_value(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// The example payload the tests share.
#[cfg(test)]
pub(crate) fn tests_example() -> &'static str {
    tests::EXAMPLE
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"{
      "receiver": "team\\.pi",
      "status": "firing",
      "alerts": [
        {
          "status": "firing",
          "labels": {"alertname": "PiHot", "instance": "pi-17:9831", "severity": "critical", "site": "wh-2"},
          "annotations": {"summary": "CPU at 85°C"},
          "startsAt": "2026-03-01T12:30:05.123Z",
          "endsAt": "0001-01-01T00:00:00Z",
          "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
          "fingerprint": "a1b2c3d4e5f60718"
        },
        {
          "status": "resolved",
          "labels": {"alertname": "PiHot", "instance": "pi-18:9831"},
          "annotations": {},
          "startsAt": "2026-03-01T12:00:00Z",
          "endsAt": "2026-03-01T12:45:00Z",
          "generatorURL": "",
          "fingerprint": "0000000000000001"
        }
      ],
      "groupLabels": {"alertname": "PiHot"},
      "commonLabels": {"alertname": "PiHot"},
      "commonAnnotations": {},
      "externalURL": "http://alertmanager:9093",
      "version": "4",
      "groupKey": "{}:{alertname=\"PiHot\"}",
      "truncatedAlerts": 0,
      "notification_reason": "first notification",
      "routeLabels": {"team": "pi"},
      "someFutureField": [1, 2, {"x": null}]
    }"#;

    #[test]
    fn parses_v4_with_new_and_unknown_fields() {
        let n = parse(EXAMPLE.as_bytes()).expect("valid");
        assert_eq!(n.receiver, "team.pi");
        assert_eq!(n.status, Status::Firing);
        assert_eq!(n.notification_reason.as_deref(), Some("first notification"));
        assert_eq!(n.events.len(), 2);
        let a = &n.events[0];
        assert_eq!(a.status, Status::Firing);
        assert_eq!(a.ends_at, None, "Go's zero time means unset");
        assert_eq!(a.fingerprint, "a1b2c3d4e5f60718");
        assert_eq!(a.external_url, "http://alertmanager:9093");
        let b = &n.events[1];
        assert_eq!(
            b.status,
            Status::Resolved,
            "per-alert status wins over the group's"
        );
        assert_eq!(
            b.ends_at.map(|e| e - b.starts_at),
            Some(45 * 60 * 1_000_000_000)
        );
    }

    #[test]
    fn old_alertmanager_without_optional_fields() {
        let body = r#"{"version":"4","status":"firing","receiver":"r","groupLabels":{},
            "commonLabels":{},"commonAnnotations":{},"externalURL":"http://am","groupKey":"k",
            "alerts":[{"status":"firing","labels":{"alertname":"A"},"annotations":null,
            "startsAt":"2020-01-01T00:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":""}]}"#;
        let n = parse(body.as_bytes()).expect("valid");
        assert_eq!(n.truncated_alerts, 0);
        assert_eq!(n.events[0].fingerprint.len(), 16);
        assert_eq!(n.events[0].fingerprint, fingerprint_of(&n.events[0].labels));
    }

    #[test]
    fn group_keys_read_as_their_labels() {
        assert_eq!(
            readable_group(
                r#"{}/{severity="critical"}:{alertname="PiHot", instance="pi-17:9831"}"#
            ),
            "alertname=PiHot, instance=pi-17:9831"
        );
        assert_eq!(
            readable_group(r#"{}:{alertname="PiHot"}"#),
            "alertname=PiHot"
        );
        assert_eq!(
            readable_group(r#"{}/{a=~"x}:{y"}:{q="say \"hi\", then go"}"#),
            r#"q=say "hi", then go"#
        );
        assert_eq!(readable_group("{}:{}"), "every alert of its route");
        assert_eq!(readable_group(""), "none");
        assert_eq!(readable_group("k"), "k");
        assert_eq!(
            readable_group(r#"{}:{a="unterminated}"#),
            r#"{}:{a="unterminated}"#
        );
    }

    #[test]
    fn a_wrong_version_is_quoted_once() {
        let said = |body: &str| match parse(body.as_bytes()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted {body}"),
        };
        let text = said(r#"{"version":"3","status":"firing","alerts":[]}"#);
        assert!(
            text.starts_with("unsupported payload version \"3\"; "),
            "{text}"
        );
        assert_eq!(text.matches("\"3\"").count(), 1, "{text}");
        let text = said(r#"{"version":"5"}"#);
        assert!(
            text.starts_with("unsupported payload version \"5\"; "),
            "{text}"
        );
        assert!(!text.contains("\\\""), "{text}");
        let text = said(r#"{"version":4,"status":"firing","alerts":[]}"#);
        assert!(
            text.starts_with("unsupported payload version 4; "),
            "{text}"
        );
    }

    #[test]
    fn rejects_what_it_cannot_trust() {
        let cases: &[(&str, &str)] = &[
            ("", "malformed"),
            ("{", "malformed"),
            ("[]", "malformed"),
            (
                r#"{"version":"3","status":"firing","alerts":[]}"#,
                "wrong_version",
            ),
            (
                r#"{"version":4,"status":"firing","alerts":[]}"#,
                "wrong_version",
            ),
            (r#"{"version":"5"}"#, "wrong_version"),
            (
                r#"{"version":"4","status":"exploded","alerts":[]}"#,
                "malformed",
            ),
            (
                r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"a":1},"startsAt":"2020-01-01T00:00:00Z"}]}"#,
                "malformed",
            ),
            (
                r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{},"startsAt":"yesterday"}]}"#,
                "invalid_alert",
            ),
            (
                r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{},"startsAt":"2020-01-01T00:00:00Z","fingerprint":"../../x"}]}"#,
                "invalid_alert",
            ),
        ];
        for (body, reason) in cases {
            let e = parse(body.as_bytes()).expect_err(body);
            assert_eq!(e.reason(), *reason, "{body}: {e}");
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            parse(deep.as_bytes()).map_err(|e| e.reason()),
            Err("malformed")
        );
        assert_eq!(
            parse(b"{\"version\":\"4\xff\"}").map_err(|e| e.reason()),
            Err("malformed")
        );
    }

    #[test]
    fn depth_counts_every_bracket_outside_strings() {
        let nested = |n: usize| [vec![b'['; n], vec![b']'; n]].concat();
        assert_eq!(too_deep(b"", 2), None);
        assert_eq!(too_deep(b"[{}]", 2), None);
        assert_eq!(too_deep(b"[{[]}]", 2), Some(2));
        assert_eq!(too_deep(&nested(128), 128), None);
        assert_eq!(too_deep(&nested(129), 128), Some(128));
        // Siblings do not add up; stray closers do not make room.
        assert_eq!(too_deep(b"[[],[],{}]", 2), None);
        assert_eq!(too_deep(b"]]]][[[", 2), Some(6));
        // Brackets in strings are text, an escaped quote does not end the string, and an
        // escaped backslash does not escape the quote after it.
        assert_eq!(too_deep(br#"["[[[{{{"]"#, 1), None);
        assert_eq!(too_deep(br#"["\"[[[", "\\"]"#, 1), None);
        assert_eq!(too_deep(br#"["\\", [[]]]"#, 2), Some(8));
        assert_eq!(
            too_deep(br"[\[", 1),
            Some(2),
            "a backslash outside a string is no escape"
        );
        // Not JSON at all: no panic, no answer that matters.
        assert_eq!(too_deep(b"\"\\", 1), None);
    }

    #[test]
    fn nesting_is_limited_in_ignored_fields_too() {
        let with = |field: &str, depth: usize| {
            let inner = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            EXAMPLE.replacen('{', &format!("{{\"{field}\":{inner},"), 1)
        };
        // The document's own object is the first level.
        assert!(parse(with("someFutureField", MAX_DEPTH - 1).as_bytes()).is_ok());
        let e = parse(with("someFutureField", MAX_DEPTH).as_bytes()).expect_err("129 deep");
        assert_eq!(
            (e.reason(), e.to_string().contains("nested deeper than 128")),
            ("malformed", true)
        );
        let e = parse(with("someFutureField", 200_000).as_bytes()).expect_err("200,000 deep");
        assert!(matches!(e, PayloadError::TooDeep { at: 146 }), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_bytes(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&body);
        }

        #[test]
        fn never_panics_on_mutated_json(cut in 0usize..2000, byte in proptest::num::u8::ANY) {
            let mut body = EXAMPLE.as_bytes().to_vec();
            let at = cut % body.len();
            body[at] = byte;
            let _ = parse(&body);
            body.truncate(at);
            let _ = parse(&body);
        }
    }
}
