//! The words each channel sends for one alert firing and then resolving, as golden texts: a
//! firing message says what is wrong now; the resolved one says that it resolved, carries the
//! incident number and how long it fired, and never repeats the firing summary as if current.

use crate::channels::{self, RequestBody};
use crate::model::record::{DeliveryJob, DeliveryState, FiringRef};
use crate::render::Message;
use crate::render::ack::decorate;

const FIRING: &str = r#"{"version":"4","status":"firing","receiver":"r","groupKey":"{}:{alertname=\"PiUnderVoltage\"}",
  "externalURL":"http://alertmanager:9093","alerts":[{"status":"firing",
  "labels":{"alertname":"PiUnderVoltage","instance":"pi-17:9831","severity":"critical","site":"wh-2"},
  "annotations":{"summary":"pi-17 is under-volted now","description":"The supply sags below 4.63 V."},
  "startsAt":"2026-03-01T12:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"a1b2c3d4e5f60718"}]}"#;

/// The firing message of incident #12, and the resolved one 45 minutes later.
fn messages() -> (Message, Message) {
    let firing = crate::payload::parse(FIRING.as_bytes()).expect("firing payload");
    let resolved_body = FIRING
        .replace(r#""status":"firing""#, r#""status":"resolved""#)
        .replace("0001-01-01T00:00:00Z", "2026-03-01T12:45:00Z");
    let resolved = crate::payload::parse(resolved_body.as_bytes()).expect("resolved payload");
    let job = |event, incident, firing| DeliveryJob {
        id: 1,
        destination: "d".into(),
        state: DeliveryState::Pending,
        attempts: 0,
        created_at_ms: 0,
        next_attempt_at_ms: 0,
        event,
        firing,
        incident,
        step: 0,
        notice: None,
        storm: None,
        alerts: Vec::new(),
        provider_ref: None,
    };
    let firing_job = job(firing.events[0].clone(), Some(12), None);
    // A resolved delivery opens no incident: it names its firing message's.
    let resolved_job = job(
        resolved.events[0].clone(),
        None,
        Some(FiringRef {
            state: DeliveryState::Delivered,
            provider_ref: None,
            incident: Some(12),
        }),
    );
    let mut f = Message::new(&firing_job.event);
    decorate(&mut f, &firing_job, None, 0);
    let mut r = Message::new(&resolved_job.event);
    decorate(&mut r, &resolved_job, None, 0);
    (f, r)
}

fn json_body(r: &channels::Request) -> serde_json::Value {
    match &r.body {
        RequestBody::Json(v) => v.clone(),
        other => panic!("not JSON: {other:?}"),
    }
}

fn form_field(r: &channels::Request, key: &str) -> String {
    match &r.body {
        RequestBody::Form(f) => f
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        other => panic!("not a form: {other:?}"),
    }
}

const FIRING_BODY: &str = "pi-17 is under-volted now\nThe supply sags below 4.63 V.\nsite=wh-2\nFiring since 2026-03-01T12:00:00Z";
const RESOLVED_BODY: &str =
    "Resolved after firing for 45m (from 2026-03-01T12:00:00Z to 2026-03-01T12:45:00Z)\nsite=wh-2";

/// Every text a channel sends for `m`, as one string: the resolved message's words are
/// checked against all of it.
fn everything(m: &Message) -> String {
    let n = channels::ntfy::request("t", &channels::ntfy::NtfyAuth::None, None, None, m);
    let p = channels::pushover::request("t", "u", 0, None, None, m, true);
    let x = channels::matrix::request("!r:x", "t", "https://m", m, 1, None, true);
    [
        channels::twilio::text(m),
        channels::slack::payload(m, true).to_string(),
        channels::slack::payload(m, false).to_string(),
        channels::telegram::text(m, true),
        channels::telegram::text(m, false),
        channels::discord::payload(m, true).to_string(),
        channels::teams::card(m, true).to_string(),
        channels::email::bodies(m).0,
        channels::email::bodies(m).1,
        json_body(&n).to_string(),
        format!("{:?}", p.body),
        json_body(&x).to_string(),
    ]
    .join("\n")
}

#[test]
fn sms() {
    let (f, r) = messages();
    assert_eq!(
        channels::twilio::text(&f),
        "FIRING CRITICAL - PiUnderVoltage on pi-17:9831 (incident #12) - pi-17 is under-volted now - site=wh-2"
    );
    assert_eq!(
        channels::twilio::text(&r),
        "RESOLVED - PiUnderVoltage on pi-17:9831 (incident #12) - lasted 45m - site=wh-2"
    );
}

#[test]
fn slack_says_its_state_once() {
    let (f, r) = messages();
    let firing = channels::slack::payload(&f, true);
    assert_eq!(
        firing["text"],
        "FIRING CRITICAL: PiUnderVoltage on pi-17:9831 (incident #12)"
    );
    assert_eq!(
        firing["blocks"][0]["text"]["text"],
        format!(
            ":red_circle: *[FIRING] PiUnderVoltage on pi-17:9831 (incident #12)*\n{FIRING_BODY}\n*Severity:* critical"
        )
    );
    let resolved = channels::slack::payload(&r, true);
    assert_eq!(
        resolved["text"],
        "RESOLVED: PiUnderVoltage on pi-17:9831 (incident #12)"
    );
    assert_eq!(
        resolved["blocks"][0]["text"]["text"],
        format!(
            ":large_green_circle: *[RESOLVED] PiUnderVoltage on pi-17:9831 (incident #12)*\n{RESOLVED_BODY}\n*Severity:* critical"
        )
    );
    let plain = channels::slack::payload(&r, false);
    assert!(
        plain["text"].as_str().is_some_and(|t| t.starts_with(&format!(
            "[RESOLVED] PiUnderVoltage on pi-17:9831 (incident #12)\n{RESOLVED_BODY}\nAlertmanager: "
        ))),
        "{plain}"
    );
}

#[test]
fn telegram() {
    let (f, r) = messages();
    assert!(channels::telegram::text(&f, true).starts_with(&format!(
        "🔴 <b>[FIRING] PiUnderVoltage on pi-17:9831 (incident #12)</b>\n{FIRING_BODY}\n<a href="
    )));
    assert!(channels::telegram::text(&r, true).starts_with(&format!(
        "✅ <b>[RESOLVED] PiUnderVoltage on pi-17:9831 (incident #12)</b>\n{RESOLVED_BODY}\n<a href="
    )));
}

#[test]
fn discord_and_teams() {
    let (f, r) = messages();
    let embed = |m: &Message| channels::discord::payload(m, true)["embeds"][0].clone();
    assert_eq!(
        embed(&f)["title"],
        "\\[FIRING\\] PiUnderVoltage on pi-17:9831 \\(incident \\#12\\)"
    );
    assert!(
        embed(&f)["description"]
            .as_str()
            .is_some_and(|d| d.starts_with(FIRING_BODY))
    );
    assert_eq!(
        embed(&r)["title"],
        "\\[RESOLVED\\] PiUnderVoltage on pi-17:9831 \\(incident \\#12\\)"
    );
    assert!(embed(&r)["description"].as_str().is_some_and(|d| d.starts_with(
        "Resolved after firing for 45m \\(from 2026-03-01T12:00:00Z to 2026-03-01T12:45:00Z\\)\nsite=wh-2\n"
    )));
    let card =
        |m: &Message| channels::teams::card(m, true)["attachments"][0]["content"]["body"].clone();
    assert_eq!(card(&f)[1]["text"], FIRING_BODY);
    assert_eq!(
        card(&r)[1]["text"],
        "Resolved after firing for 45m \\(from 2026-03-01T12:00:00Z to 2026-03-01T12:45:00Z\\)\nsite=wh-2"
    );
}

#[test]
fn email_ntfy_pushover_matrix() {
    let (f, r) = messages();
    for (m, title, body) in [
        (
            &f,
            "[FIRING] PiUnderVoltage on pi-17:9831 (incident #12)",
            FIRING_BODY,
        ),
        (
            &r,
            "[RESOLVED] PiUnderVoltage on pi-17:9831 (incident #12)",
            RESOLVED_BODY,
        ),
    ] {
        assert!(
            channels::email::bodies(m)
                .0
                .starts_with(&format!("{title}\n{body}\n"))
        );
        let n = json_body(&channels::ntfy::request(
            "t",
            &channels::ntfy::NtfyAuth::None,
            None,
            None,
            m,
        ));
        assert_eq!(
            (n["title"].as_str(), n["message"].as_str()),
            (Some(title), Some(body))
        );
        let p = channels::pushover::request("t", "u", 0, None, None, m, true);
        assert_eq!(
            (form_field(&p, "title"), form_field(&p, "message")),
            (title.to_owned(), body.to_owned())
        );
        let x = json_body(&channels::matrix::request(
            "!r:x",
            "t",
            "https://m",
            m,
            1,
            None,
            true,
        ));
        // `#` gets a word joiner in Matrix so it never becomes a room link.
        let matrix_title = title.replace('#', "#\u{2060}");
        assert!(
            x["body"]
                .as_str()
                .is_some_and(|b| b.starts_with(&format!("{matrix_title}\n{body}\n"))),
            "{x}"
        );
    }
}

#[test]
fn a_resolved_message_never_repeats_the_firing_summary() {
    let (f, r) = messages();
    assert!(everything(&f).contains("under-volted now"));
    let resolved = everything(&r);
    assert!(!resolved.contains("under-volted now"), "{resolved}");
    assert!(!resolved.contains("sags below"), "{resolved}");
    assert!(!resolved.contains("FIRING"), "{resolved}");
    // Every channel's text says it resolved, with the incident and how long it fired.
    for text in resolved.split('\n').filter(|l| l.contains("RESOLVED")) {
        assert!(text.contains("12"), "{text}");
    }
    assert!(resolved.matches("45m").count() >= 10, "{resolved}");
}
