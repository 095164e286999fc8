//! Escalation through the binary: steps on real (short) time, the incident API, the CLI and
//! signed acknowledgement links.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    FAST_DELIVERY, Fake, Relay, Reply, binary, client, tempdir, twilio_reply, wait_db, webhook,
};

fn config(fake: &Fake) -> String {
    format!(
        "public_url: http://relay.invalid\nauth: {{ bearer_token: s3cret }}\nstorage: {{ sqlite: relay.db }}\n{FAST_DELIVERY}\
         channels:\n  a: {{ type: webhook, url: '{u}/a' }}\n  b: {{ type: webhook, url: '{u}/b' }}\n  c: {{ type: webhook, url: '{u}/c' }}\n\
         policies:\n  p:\n    steps: [ {{ notify: [a] }}, {{ after: 1s, notify: [b] }}, {{ after: 6s, notify: [c] }} ]\n\
         routes: [ {{ policy: p }} ]\n",
        u = fake.url()
    )
}

fn paths(fake: &Fake) -> Vec<String> {
    fake.received().iter().map(|r| r.path.clone()).collect()
}

#[tokio::test]
async fn steps_ack_link_cli_and_resolve_through_the_binary() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&fake));
    let http = client();
    let firing = webhook(&[("00000000000007a1", "firing")], "");
    let posted = Instant::now();
    relay.fire(firing.clone()).await;
    // Step 1 at once, step 2 after a second.
    let got = fake.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(paths(&fake), ["/a", "/b"]);
    let msg = got[1].json();
    assert!(
        msg["title"]
            .as_str()
            .expect("title")
            .ends_with("(incident #1)"),
        "{msg}"
    );
    let link = msg["links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["name"] == "Acknowledge #1")
        .and_then(|l| l["url"].as_str())
        .expect("ack link")
        .to_owned();
    let path = link
        .strip_prefix("http://relay.invalid")
        .expect("public_url");
    // The API needs the relay's auth.
    let r = http
        .get(relay.url("/api/v1/incidents/1"))
        .send()
        .await
        .expect("api");
    assert_eq!(r.status(), 401);
    // GET shows a confirm page and changes nothing.
    let page = http.get(relay.url(path)).send().await.expect("get");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let page = page.text().await.expect("page");
    assert!(page.contains("<form method=\"post\">"), "{page}");
    assert!(page.contains("PiHot"), "{page}");
    let state = |v: serde_json::Value| v["incident"]["state"].as_str().unwrap_or("").to_owned();
    let get = || async {
        http.get(relay.url("/api/v1/incidents/1"))
            .bearer_auth("s3cret")
            .send()
            .await
            .expect("api")
            .json::<serde_json::Value>()
            .await
            .expect("json")
    };
    assert_eq!(state(get().await), "open");
    // A forged token is refused.
    let forged = path.replacen("/ack/1.", "/ack/2.", 1);
    let r = http.post(relay.url(&forged)).send().await.expect("post");
    assert_eq!(r.status(), 403);
    // POST acknowledges; both notified destinations hear about it.
    let r = http.post(relay.url(path)).send().await.expect("post");
    assert_eq!(r.status(), 200);
    assert!(
        posted.elapsed() < Duration::from_secs(6),
        "the ack came {:?} after the alert: too late to come before step 3",
        posted.elapsed()
    );
    assert_eq!(state(get().await), "acked");
    let got = fake.wait_for(4, Duration::from_secs(5)).await;
    for notice in &got[2..] {
        let text = notice.json()["text"].as_str().unwrap_or("").to_owned();
        assert!(
            text.contains("Incident #1 acknowledged by ack link from 127.0.0.1"),
            "{text}"
        );
    }
    // The CLI sees it.
    let cfg = dir.path().join("relay.yml");
    let cli = std::fs::read_to_string(&cfg)
        .expect("config")
        .replace("127.0.0.1:0", &relay.url("").replace("http://", ""));
    let cli_cfg = dir.path().join("cli.yml");
    std::fs::write(&cli_cfg, cli).expect("cli config");
    let out = Command::new(binary())
        .args(["incidents", "--config"])
        .arg(&cli_cfg)
        .output()
        .expect("cli");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}");
    assert!(
        listing.starts_with("#1      acknowledged PiHot ")
            && listing.contains("(acknowledged by ack link from 127.0.0.1)"),
        "{listing}"
    );
    // Step 3 (6 s after the POST; the ack came well before) never comes.
    tokio::time::sleep_until((posted + Duration::from_secs(7)).into()).await;
    assert!(
        !paths(&fake).contains(&"/c".to_owned()),
        "{:?}",
        paths(&fake)
    );
    // Alertmanager's resolve closes the acked incident: resolved messages to a and b.
    let resolved = webhook(&[("00000000000007a1", "resolved")], "").replace(
        r#""status":"firing","receiver""#,
        r#""status":"resolved","receiver""#,
    );
    relay.fire(resolved).await;
    let got = fake.wait_for(6, Duration::from_secs(5)).await;
    let mut tail: Vec<String> = got[4..].iter().map(|r| r.path.clone()).collect();
    tail.sort();
    assert_eq!(tail, ["/a", "/b"]);
    assert!(got[4..].iter().all(|r| r.json()["status"] == "resolved"));
    let v = get().await;
    assert_eq!(state(v.clone()), "resolved");
    assert_eq!(v["incident"]["resolved_by"], "Alertmanager");
}

#[tokio::test]
async fn api_ack_before_step_two_and_cli_ack() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &config(&fake)
            .replace("after: 1s, notify: [b]", "after: 8s, notify: [b]")
            .replace("after: 6s, notify: [c]", "after: 60s, notify: [c]"),
    );
    let http = client();
    let posted = Instant::now();
    relay
        .fire(webhook(&[("00000000000007b1", "firing")], ""))
        .await;
    fake.wait_for(1, Duration::from_secs(5)).await;
    let cfg = dir.path().join("relay.yml");
    let cli = std::fs::read_to_string(&cfg)
        .expect("config")
        .replace("127.0.0.1:0", &relay.url("").replace("http://", ""));
    let cli_cfg = dir.path().join("cli.yml");
    std::fs::write(&cli_cfg, cli).expect("cli config");
    let out = Command::new(binary())
        .args(["ack", "1", "--by", "alice", "--config"])
        .arg(&cli_cfg)
        .output()
        .expect("cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second ack through the API is a no-op.
    let r: serde_json::Value = http
        .post(relay.url("/api/v1/incidents/1/ack"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("ack")
        .json()
        .await
        .expect("json");
    assert_eq!(r["status"], "unchanged");
    assert!(
        posted.elapsed() < Duration::from_secs(8),
        "the acks took {:?}: too slow to come before step 2",
        posted.elapsed()
    );
    tokio::time::sleep_until((posted + Duration::from_secs(9)).into()).await;
    let got = fake.received();
    assert_eq!(paths(&fake), ["/a", "/a"], "step 2 must not come");
    let text = got[1].json()["text"].as_str().unwrap_or("").to_owned();
    assert!(
        text.contains("acknowledged by alice via API from 127.0.0.1"),
        "{text}"
    );
}

/// SIGKILL mid-escalation: after a restart the next step comes with the time already elapsed
/// (not from zero), and exactly once.
#[tokio::test]
async fn sigkill_mid_escalation_resumes_with_the_elapsed_time() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let cfg = config(&fake)
        .replace("after: 1s, notify: [b]", "after: 16s, notify: [b]")
        .replace("after: 6s, notify: [c]", "after: 60s, notify: [c]");
    let relay = Relay::start(dir.path(), &cfg);
    relay
        .fire(webhook(&[("00000000000007c1", "firing")], ""))
        .await;
    fake.wait_for(1, Duration::from_secs(5)).await;
    // A checkpoint (every 5 s) has stored at least 4 s of escalation time, then a hard kill:
    // at most ~10 s into the 16 s, so step 2 is still ahead.
    wait_db(
        &dir.path().join("relay.db"),
        "SELECT COUNT(*) FROM incidents WHERE elapsed_ms >= 4000",
        Duration::from_secs(15),
    )
    .await;
    relay.kill9();
    let restarted = Instant::now();
    let relay = Relay::start_file(&dir.path().join("relay.yml"));
    let got = fake.wait_for(2, Duration::from_secs(16)).await;
    let took = restarted.elapsed();
    assert_eq!(got[1].path, "/b");
    // Resumed: at most 12 s (16 s less the stored >= 4 s) after the restart. From zero: 16 s
    // at the earliest, as the clock cannot start before the restart.
    assert!(
        took < Duration::from_millis(15_500),
        "step 2 came {took:?} after the restart: the elapsed time was not resumed"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(paths(&fake), ["/a", "/b"], "each step exactly once");
    drop(relay);
}

#[tokio::test]
async fn rotation_steps_page_whoever_is_on_call_and_the_api_names_them() {
    use jiff::{SignedDuration, Timestamp, tz::TimeZone};
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    // carol covers alice from yesterday to tomorrow (UTC, the relay's real wall clock).
    let local = |d: SignedDuration| {
        (Timestamp::now() + d)
            .to_zoned(TimeZone::UTC)
            .strftime("%Y-%m-%dT%H:%M")
            .to_string()
    };
    let (from, to) = (
        local(SignedDuration::from_hours(-24)),
        local(SignedDuration::from_hours(24)),
    );
    let yaml = format!(
        "public_url: http://relay.invalid\nauth: {{ bearer_token: s3cret }}\nstorage: {{ sqlite: relay.db }}\n{FAST_DELIVERY}\
         channels:\n  a: {{ type: webhook, url: '{u}/a' }}\n  alice: {{ type: webhook, url: '{u}/alice' }}\n  carol: {{ type: webhook, url: '{u}/carol' }}\n\
         \x20 carol-sms: {{ type: twilio, account_sid: AC1, auth_token: tw-token, from: '+15005550006', to: ['+447700900125'], api_url: '{u}' }}\n\
         rotations:\n  primary:\n    time_zone: UTC\n    handover: '09:00'\n    shift: 1d\n    start: 2026-01-05\n    people: [ {{ name: alice, notify: [alice] }} ]\n\
         \x20   overrides: [ {{ from: '{from}', to: '{to}', name: carol, notify: [carol, carol-sms] }} ]\n\
         policies:\n  p:\n    steps: [ {{ notify: ['rotation:primary', a] }}, {{ after: 1s, notify: ['rotation:primary'] }} ]\n\
         routes: [ {{ policy: p }} ]\n",
        u = fake.url()
    );
    let out = Command::new(binary())
        .arg("check-config")
        .arg({
            let p = dir.path().join("check.yml");
            std::fs::write(&p, &yaml).expect("write");
            p
        })
        .output()
        .expect("check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("  primary (UTC): on call now carol -> carol, carol-sms\n")
            && stdout.contains(&format!("    from {} UTC: alice\n", to.replace('T', " "))),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let relay = Relay::start(dir.path(), &yaml);
    let http = client();
    relay
        .fire(webhook(&[("00000000000007a2", "firing")], ""))
        .await;
    let received = fake.wait_for(5, Duration::from_secs(5)).await;
    let sms = "/2010-04-01/Accounts/AC1/Messages.json";
    let mut got = paths(&fake);
    got[..3].sort();
    got[3..].sort();
    assert_eq!(got, [sms, "/a", "/carol", sms, "/carol"]);

    let r = http
        .get(relay.url("/api/v1/rotations"))
        .send()
        .await
        .expect("api");
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = http
        .get(relay.url("/api/v1/rotations"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("api")
        .json()
        .await
        .expect("json");
    let primary = &v["rotations"][0];
    assert_eq!(primary["name"], "primary");
    assert_eq!(primary["on_call"]["name"], "carol", "{v}");
    assert_eq!(primary["next"][0]["person"]["name"], "alice", "{v}");
    assert_eq!(
        primary["next"][0]["local"],
        format!("{} UTC", to.replace('T', " "))
    );
    // The rotation's calendar: carol's override, then alice's daily shifts, in UTC.
    let r = http
        .get(relay.url("/api/v1/rotations/primary.ics"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("calendar");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/calendar; charset=utf-8");
    let feed = r.text().await.expect("feed");
    let handover = format!("DTSTART:{}00Z\r\n", to.replace(['-', ':'], ""));
    assert!(feed.starts_with("BEGIN:VCALENDAR\r\n"), "{feed}");
    assert!(
        feed.contains("SUMMARY:carol on call (primary)\r\n"),
        "{feed}"
    );
    assert!(feed.contains(&handover), "no shift from {to}: {feed}");
    assert!(
        feed.contains("SUMMARY:alice on call (primary)\r\n"),
        "{feed}"
    );
    let missing = http
        .get(relay.url("/api/v1/rotations/nobody.ics"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("calendar");
    assert_eq!(missing.status(), 404);

    let v: serde_json::Value = http
        .get(relay.url("/api/v1/incidents/1"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("api")
        .json()
        .await
        .expect("json");
    let paged: Vec<(String, i64)> = v["on_call"]
        .as_array()
        .expect("on_call")
        .iter()
        .map(|p| {
            assert_eq!(p["person"], "carol (rotation primary)");
            (
                p["destination"].as_str().unwrap_or("").to_owned(),
                p["step"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let carol_sms = "carol-sms/+447700900125".to_owned();
    assert_eq!(
        paged,
        [
            ("carol".to_owned(), 0),
            (carol_sms.clone(), 0),
            ("carol".to_owned(), 1),
            (carol_sms, 1)
        ]
    );
    // The ack page names who was paged.
    let link = received
        .iter()
        .find(|r| r.path == "/carol")
        .expect("carol's message")
        .json()["links"]
        .as_array()
        .expect("links")
        .iter()
        .find_map(|l| l["url"].as_str()?.strip_prefix("http://relay.invalid"))
        .expect("ack link")
        .to_owned();
    let page = http
        .get(relay.url(&link))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("page");
    assert!(
        page.contains("<li>carol (rotation primary) — carol (step 2)</li>")
            && page
                .contains("<li>carol (rotation primary) — carol-sms/+447700900125 (step 1)</li>"),
        "{page}"
    );
    // carol acknowledges by SMS reply: the notice names her as the rotation's person.
    let (status, _) = twilio_reply(
        &relay,
        "http://relay.invalid",
        "/inbound/twilio/carol-sms",
        "tw-token",
        &[
            ("From", "+447700900125"),
            ("Body", "ACK 1"),
            ("MessageSid", "SM1"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let got = fake.wait_for(8, Duration::from_secs(5)).await;
    for notice in &got[5..] {
        let text = if notice.path == sms {
            notice.form_value("Body")
        } else {
            notice.json()["text"].as_str().unwrap_or("").to_owned()
        };
        assert!(
            text.contains("acknowledged by carol (rotation primary) via SMS from +447700900125")
                && text.contains("; on call: carol (rotation primary)"),
            "{text}"
        );
    }
}
