//! Storm control and budgets through the binary: 40 Pis of one site go on battery at once.

use std::time::Duration;

use crate::support::{FAST_DELIVERY, Fake, Relay, Reply, client, tempdir, twilio_reply, webhook};

fn config(fake: &Fake) -> String {
    format!(
        "public_url: http://relay.invalid\nauth: {{ bearer_token: s3cret }}\nstorage: {{ sqlite: relay.db }}\n{FAST_DELIVERY}\
         channels:\n  a: {{ type: webhook, url: '{u}/a' }}\n  ops: {{ type: webhook, url: '{u}/ops' }}\n\
         \x20 sms: {{ type: webhook, url: '{u}/sms', budget: {{ max: 3, per: 1h, overflow: [ops] }} }}\n\
         policies:\n  p:\n    steps: [ {{ notify: [a, sms] }} ]\n\
         \x20   storm: {{ window: 15s, threshold: 5, group_by: [site, alertname] }}\n\
         routes: [ {{ policy: p }} ]\n",
        u = fake.url()
    )
}

fn at(fake: &Fake, path: &str) -> Vec<serde_json::Value> {
    fake.received()
        .iter()
        .filter(|r| r.path == path)
        .map(crate::support::Received::json)
        .collect()
}

fn title(v: &serde_json::Value) -> String {
    v["title"].as_str().unwrap_or("").to_owned()
}

/// Pi `n`'s firing alert, in its own Alertmanager group (group_by: [alertname, instance]).
pub(crate) fn pi_alert(n: usize) -> String {
    webhook(&[(&format!("{n:016x}"), "firing")], "")
        .replace(r#""groupKey":"{}:"#, &format!(r#""groupKey":"{{}}/{n}:"#))
}

#[tokio::test]
async fn forty_pis_on_battery_make_one_storm_and_the_sms_budget_holds() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&fake));
    let http = client();
    // The window is long enough for all 40 (fsynced) POSTs to land inside it on a slow runner,
    // so the joiners are announced in one update, not split across two storm ticks.
    for n in 1..=40 {
        relay.fire(pi_alert(n)).await;
    }
    // a: five alerts one by one, the summary of the storm when the sixth came, then (a
    // window later) one update for the 34 that joined.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while at(&fake, "/a").len() < 7 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:#?}",
            at(&fake, "/a").iter().map(title).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = at(&fake, "/a");
    let titles: Vec<String> = a.iter().map(title).collect();
    assert!(
        titles[..5].iter().all(|t| t.starts_with("[FIRING] PiHot")),
        "{titles:#?}"
    );
    assert_eq!(
        titles[5],
        "Storm #1: 6 incidents at site=wh-2 alertname=PiHot: CPU at 85°C on 0000000000000001"
    );
    assert_eq!(
        titles[6],
        "Storm #1: 34 more at site=wh-2 alertname=PiHot, 40 incidents in all"
    );
    assert!(
        a[6]["text"].as_str().unwrap_or("").contains("and 29 more"),
        "{}",
        a[6]
    );
    // sms: three messages, then its budget holds the rest; ops hears it once.
    let ops = fake.wait_for(7 + 3 + 1, Duration::from_secs(5)).await;
    let sms = at(&fake, "/sms");
    assert_eq!(sms.len(), 3, "{sms:#?}");
    let ops: Vec<String> = ops
        .iter()
        .filter(|r| r.path == "/ops")
        .map(|r| title(&r.json()))
        .collect();
    assert_eq!(ops, ["Budget: sms reached its budget (3 per 1h)"]);
    // The storm link shows every incident; the API acknowledges them all, once per destination.
    let link = a[5]["links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["name"] == "Acknowledge storm #1")
        .and_then(|l| l["url"].as_str())
        .expect("storm ack link")
        .to_owned();
    let path = link
        .strip_prefix("http://relay.invalid")
        .expect("public_url");
    let page = http.get(relay.url(path)).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let page = page.text().await.expect("page");
    assert_eq!(page.matches("<li>").count(), 40, "{page}");
    assert!(page.contains("Acknowledge all"), "{page}");
    let forged = path.replacen("/ack/s1.", "/ack/s2.", 1);
    let r = http.post(relay.url(&forged)).send().await.expect("forged");
    assert_eq!(r.status(), 403);
    // No storm id at all is a 404, not a crash of the handler.
    for bare in ["/api/v1/storms/", "/api/v1/storms//"] {
        let r = http
            .get(relay.url(bare))
            .bearer_auth("s3cret")
            .send()
            .await
            .expect("bare storms path");
        assert_eq!(r.status(), 404, "{bare}");
    }
    let r = http
        .post(relay.url("/api/v1/storms/1/ack"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), 200);
    let j: serde_json::Value = r.json().await.expect("json");
    assert_eq!(j["incidents"].as_array().map(Vec::len), Some(40), "{j}");
    let got = fake.wait_for(12, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let notices: Vec<String> = fake
        .received()
        .iter()
        .filter(|r| r.path == "/a")
        .skip(7)
        .map(|r| title(&r.json()))
        .collect();
    assert_eq!(notices, ["Storm #1 acknowledged"], "{got:#?}");
    // Every incident is still its own incident in the API.
    let list: serde_json::Value = http
        .get(relay.url("/api/v1/incidents"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let list = list["incidents"].as_array().expect("incidents").clone();
    assert_eq!(list.len(), 40);
    assert!(
        list.iter()
            .all(|i| i["storm"] == 1 && i["state"] == "acked")
    );
    relay
        .wait_metric("alert_relay_storms_total{policy=\"p\"}", 1.0)
        .await;
    relay
        .wait_metric("alert_relay_storm_collapsed_total{policy=\"p\"}", 70.0)
        .await;
    relay
        .wait_metric(
            "alert_relay_budget_exhausted_total{channel=\"sms\",integration=\"webhook\",destination=\"sms\"}",
            1.0,
        )
        .await;
    // Held: individual 4 and 5, the summary, the update, the ack notice.
    relay
        .wait_metric(
            "alert_relay_budget_held_back_total{channel=\"sms\",integration=\"webhook\",destination=\"sms\"}",
            5.0,
        )
        .await;
}

/// A storm summary by SMS (Twilio) and its acknowledgement by a signed SMS reply `ACK S1`.
#[tokio::test]
async fn a_storm_is_acknowledged_by_sms_reply() {
    let fake = Fake::start(Reply::new(201, r#"{"sid":"SM1"}"#)).await;
    let dir = tempdir();
    let public = "https://relay.example.org";
    let relay = Relay::start(
        dir.path(),
        &format!(
            "public_url: {public}\nstorage: {{ sqlite: relay.db }}\n{FAST_DELIVERY}\
             channels:\n  sms: {{ type: twilio, account_sid: AC1, auth_token: tw-token, from: '+15005550006', to: ['+447700900123'], api_url: '{u}' }}\n\
             policies:\n  p:\n    steps: [ {{ notify: [sms] }} ]\n    storm: {{ window: 1m, threshold: 1 }}\n\
             routes: [ {{ policy: p }} ]\n",
            u = fake.url()
        ),
    );
    for n in 1..=3 {
        let fp = format!("{n:016x}");
        let body = webhook(&[(&fp, "firing")], "")
            .replace(r#""groupKey":"{}:"#, &format!(r#""groupKey":"{{}}/{n}:"#));
        assert_eq!(relay.post("/webhook", body).await.0, 200);
    }
    // One SMS alone, then the storm of the first two; the third joins it (announced a window
    // later, after this test).
    let got = fake.wait_for(2, Duration::from_secs(10)).await;
    let storm = got[1].form_value("Body");
    assert!(
        storm.contains("Storm #1: 2 incidents") && !storm.contains('?'),
        "{storm}"
    );
    let (status, twiml) = twilio_reply(
        &relay,
        public,
        "/inbound/twilio/sms",
        "tw-token",
        &[
            ("From", "+447700900123"),
            ("To", "+15005550006"),
            ("Body", "ACK S1"),
            ("MessageSid", "SM2"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        twiml.contains("Storm #1 acknowledged (3 incidents)."),
        "{twiml}"
    );
    // One notice to the number, not one per incident.
    let got = fake.wait_for(3, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.received().len(), 3);
    let notice = got[2].form_value("Body");
    assert!(
        notice.contains("Storm #1 acknowledged") && notice.contains("by SMS from +447700900123"),
        "{notice}"
    );
}

/// Deliveries left pending by the last run count against a budget configured now: the budget
/// is in force before the first worker picks up the backlog.
#[tokio::test]
async fn the_backlog_of_the_last_run_is_held_to_the_budget() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let cfg = |sms: &str, budget: &str| {
        format!(
            "auth: {{ bearer_token: s3cret }}\nstorage: {{ sqlite: relay.db }}\n{FAST_DELIVERY}\
             channels:\n  ops: {{ type: webhook, url: '{u}/ops' }}\n\
             \x20 sms: {{ type: webhook, url: '{sms}'{budget} }}\n\
             policies: {{ p: {{ steps: [ {{ notify: [sms] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
            u = fake.url()
        )
    };
    // First run: the SMS gateway is unreachable and rate limited: one alert is tried, three
    // wait untried (a delivery is counted against a budget before its first attempt).
    let relay = Relay::start(
        dir.path(),
        &cfg(
            "http://127.0.0.1:9/sms",
            ", rate_limit: { per_second: 0.001, burst: 1 }",
        ),
    );
    for n in 1..=4 {
        relay.fire(pi_alert(n)).await;
    }
    relay.kill9();
    // Second run: the gateway is back and has a budget of two: the tried one and two more go
    // out, the fourth is held.
    let relay = Relay::start(
        dir.path(),
        &cfg(
            &format!("{}/sms", fake.url()),
            ", budget: { max: 2, per: 1h, overflow: [ops] }",
        ),
    );
    fake.wait_on("/ops", 1, Duration::from_secs(10)).await;
    fake.wait_on("/sms", 3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sms: Vec<String> = fake
        .received_on("/sms")
        .iter()
        .map(|r| title(&r.json()))
        .collect();
    assert_eq!(sms.len(), 3, "{sms:?}");
    let ops: Vec<String> = fake
        .received_on("/ops")
        .iter()
        .map(|r| title(&r.json()))
        .collect();
    assert_eq!(ops, ["Budget: sms reached its budget (2 per 1h)"]);
    drop(relay);
}
