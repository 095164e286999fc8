//! Phone calls (`type: twilio_voice`) through the binary, against a loopback fake of Twilio's
//! Calls API that plays each call back to the relay as Twilio would, signed: answered and
//! acknowledged by key press (escalation stops), no answer, busy and voicemail (recorded on
//! the delivery, escalation goes on), and the callbacks the relay must refuse: forged,
//! replayed, for an unknown call.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::twilio_calls::{FakeCalls, Pickup, post_signed, send_as_signed};
use crate::support::{FAST_DELIVERY, Fake, Relay, Reply, client, on_a_free_port, tempdir, webhook};

const AUTH: &str = "auth: { bearer_token: s3cret }\nstorage: { sqlite: relay.db }\n";
const TOKEN: &str = "voice-token";
const ALICE: &str = "+447700900123";
const BOB: &str = "+447700900124";
const CAROL: &str = "+447700900125";

/// A relay whose policy calls `numbers` first and posts to `later`'s webhook 3 s after.
async fn relay_calling(
    dir: &std::path::Path,
    calls: &FakeCalls,
    later: &Fake,
    numbers: &[&str],
) -> Relay {
    let path = dir.join("relay.yml");
    let to = numbers
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    on_a_free_port(async |port| {
        std::fs::write(
            &path,
            format!(
                "listen: 127.0.0.1:{port}\npublic_url: http://127.0.0.1:{port}\n{AUTH}{FAST_DELIVERY}\
                 channels:\n  phone: {{ type: twilio_voice, account_sid: AC1, auth_token: {TOKEN}, from: '+15005550006', \
                 to: [{to}], voice: Polly.Amy, language: en-GB, api_url: '{}' }}\n\
                 \x20 later: {{ type: webhook, url: '{}/later' }}\n\
                 policies:\n  p:\n    steps: [ {{ notify: [phone] }}, {{ after: 3s, notify: [later] }} ]\nroutes: [ {{ policy: p }} ]\n",
                calls.url(),
                later.url()
            ),
        )
        .expect("config");
        Relay::try_start_file(&path)
    })
    .await
}

async fn incident(relay: &Relay, id: i64) -> Value {
    client()
        .get(relay.url(&format!("/api/v1/incidents/{id}")))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("api")
        .json()
        .await
        .expect("json")
}

/// Waits until every delivery to `destination` of incident 1 has a detail; the details.
async fn details(relay: &Relay, destination: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = incident(relay, 1).await;
        let mine: Vec<&Value> = v["deliveries"]
            .as_array()
            .expect("deliveries")
            .iter()
            .filter(|d| d["destination"] == destination)
            .collect();
        if !mine.is_empty() && mine.iter().all(|d| d["detail"].is_string()) {
            return mine
                .iter()
                .map(|d| d["detail"].as_str().unwrap_or_default().to_owned())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "no detail for {destination}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn with(params: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                if k == key {
                    value.to_owned()
                } else {
                    v.clone()
                },
            )
        })
        .collect()
}

#[tokio::test]
async fn a_call_answered_and_acknowledged_by_key_press_stops_the_escalation() {
    let calls = FakeCalls::start(TOKEN).await;
    // Hears the menu, presses 2 (again), 7 (no such key), then 1.
    calls.pickup(ALICE, [Pickup::Answer(vec!["2", "7", "1"])]);
    let later = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = relay_calling(dir.path(), &calls, &later, &[ALICE]).await;
    let label = r#","summary_x":"<b>&amp;""#;
    relay
        .fire(
            webhook(&[("00000000000000c1", "firing")], label)
                .replace("CPU at 85°C", "CPU <hot> & \\\"loud\\\""),
        )
        .await;
    let call = calls.wait_done(1, Duration::from_secs(10)).await.remove(0);
    assert_eq!(call.value("To"), ALICE);
    assert_eq!(call.value("From"), "+15005550006");
    assert_eq!(call.value("MachineDetection"), "Enable");
    let public = relay.url("");
    assert_eq!(
        call.value("Url"),
        format!("{public}/inbound/voice/phone/1/menu/0")
    );
    assert_eq!(
        call.value("StatusCallback"),
        format!("{public}/inbound/voice/phone/1/status")
    );
    // The menu, a repeat, a repeat with a word about the key, the acknowledgement, the end.
    let answers: Vec<(u16, &str)> = call
        .callbacks
        .iter()
        .map(|c| (c.status, c.body.as_str()))
        .collect();
    assert_eq!(answers.len(), 5, "{answers:#?}");
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:#?}");
    let menu = answers[0].1;
    assert!(menu.contains("<Gather numDigits=\"1\""), "{menu}");
    assert!(menu.contains("<Say voice=\"Polly.Amy\" language=\"en-GB\">Incident 1. critical alert PiHot on 00000000000000c1:9831."), "{menu}");
    assert!(
        menu.contains("CPU &lt;hot&gt; &amp; &quot;loud&quot;"),
        "the alert's text is escaped: {menu}"
    );
    assert!(
        menu.contains(
            "Site wh-2. Press 1 to acknowledge. Press 2 to hear it again.</Say></Gather>"
        ),
        "{menu}"
    );
    assert!(
        menu.contains(&format!(
            "<Redirect method=\"POST\">{public}/inbound/voice/phone/1/menu/1</Redirect>"
        )),
        "{menu}"
    );
    assert!(answers[1].1.contains("/key/1\""), "{}", answers[1].1);
    assert!(
        answers[2].1.contains("That key does nothing."),
        "{}",
        answers[2].1
    );
    assert!(
        answers[3]
            .1
            .contains("Incident 1 acknowledged. Goodbye.</Say><Hangup/>"),
        "{}",
        answers[3].1
    );
    let v = incident(&relay, 1).await;
    assert_eq!(v["incident"]["state"], "acked", "{v}");
    assert_eq!(
        v["incident"]["acked_by"],
        format!("key press on a call to {ALICE}"),
        "{v}"
    );
    assert_eq!(
        details(&relay, &format!("phone/{ALICE}")).await[0],
        "answered, key 1 pressed"
    );

    // The acknowledging key press, replayed as captured: refused, counted, nothing changes.
    let press = call.callbacks[3].clone();
    let replay = send_as_signed(&press.url, press.params.clone(), press.signature.clone()).await;
    assert_eq!((replay.status, replay.body.as_str()), (403, "Forbidden\n"));
    relay
        .wait_metric(
            "alert_relay_webhooks_rejected_total{reason=\"twilio_replay\"}",
            1.0,
        )
        .await;
    // Forged: signed with another token, or not signed at all.
    let forged = post_signed(
        &press.url,
        "not-the-token",
        with(&press.params, "Digits", "1"),
    )
    .await;
    assert_eq!(forged.status, 403);
    let unsigned = send_as_signed(&press.url, press.params.clone(), String::new()).await;
    assert_eq!(unsigned.status, 403);
    relay
        .wait_metric(
            "alert_relay_webhooks_rejected_total{reason=\"twilio_signature\"}",
            2.0,
        )
        .await;
    // Genuinely signed, but for a call the relay did not make for that delivery.
    let stranger = post_signed(
        &press.url,
        TOKEN,
        with(
            &press.params,
            "CallSid",
            "CA99999999999999999999999999999999",
        ),
    )
    .await;
    assert_eq!(stranger.status, 403);
    let other_number = post_signed(&press.url, TOKEN, with(&press.params, "To", BOB)).await;
    assert_eq!(other_number.status, 403);
    let no_delivery = post_signed(
        &press.url.replace("/phone/1/", "/phone/99/"),
        TOKEN,
        press.params.clone(),
    )
    .await;
    assert_eq!(no_delivery.status, 403);
    relay
        .wait_metric(
            "alert_relay_webhooks_rejected_total{reason=\"twilio_unknown_call\"}",
            3.0,
        )
        .await;

    // Acknowledged: step 2 never comes; the acknowledgement notice calls nobody.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        later.received_on("/later").is_empty(),
        "{:?}",
        later.received()
    );
    assert_eq!(calls.calls().len(), 1);
    let v = incident(&relay, 1).await;
    let notice = v["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .find(|d| d["notice"].is_string())
        .cloned()
        .expect("a notice");
    assert_eq!(notice["state"], "skipped", "{v}");

    // Un-acknowledged by hand: the captured key press replayed still acknowledges nothing.
    let r = client()
        .post(relay.url("/api/v1/incidents/1/unack"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("unack");
    assert_eq!(r.status(), 200);
    let replay = send_as_signed(&press.url, press.params.clone(), press.signature.clone()).await;
    assert_eq!(replay.status, 403);
    relay
        .wait_metric(
            "alert_relay_webhooks_rejected_total{reason=\"twilio_replay\"}",
            2.0,
        )
        .await;
    assert_eq!(incident(&relay, 1).await["incident"]["state"], "open");
}

#[tokio::test]
async fn no_answer_busy_and_voicemail_are_recorded_and_the_escalation_goes_on() {
    let calls = FakeCalls::start(TOKEN).await;
    calls.pickup(ALICE, [Pickup::NoAnswer]);
    calls.pickup(BOB, [Pickup::Busy]);
    calls.pickup(CAROL, [Pickup::Voicemail]);
    let later = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = relay_calling(dir.path(), &calls, &later, &[ALICE, BOB, CAROL]).await;
    let fired = Instant::now();
    relay
        .fire(webhook(&[("00000000000000c2", "firing")], ""))
        .await;
    let played = calls.wait_done(3, Duration::from_secs(10)).await;
    assert_eq!(
        details(&relay, &format!("phone/{ALICE}")).await,
        ["no-answer"]
    );
    assert_eq!(details(&relay, &format!("phone/{BOB}")).await, ["busy"]);
    assert_eq!(
        details(&relay, &format!("phone/{CAROL}")).await,
        ["voicemail (AnsweredBy=machine_end_beep)"]
    );
    // The voicemail got no menu: the relay hung up.
    let carol = played
        .iter()
        .find(|c| c.value("To") == CAROL)
        .expect("carol");
    assert!(
        carol.callbacks[0]
            .body
            .ends_with("<Response><Hangup/></Response>"),
        "{carol:#?}"
    );
    // Nobody acknowledged: the next step comes on time and the incident stays open.
    later.wait_on("/later", 1, Duration::from_secs(10)).await;
    assert!(fired.elapsed() >= Duration::from_secs(3));
    let v = incident(&relay, 1).await;
    assert_eq!(v["incident"]["state"], "open", "{v}");
    // A status callback replayed is refused and counted, and changes nothing.
    let alice = played
        .iter()
        .find(|c| c.value("To") == ALICE)
        .expect("alice");
    let status = alice.callbacks[0].clone();
    let replay = send_as_signed(&status.url, status.params.clone(), status.signature.clone()).await;
    assert_eq!(replay.status, 403);
    relay
        .wait_metric(
            "alert_relay_webhooks_rejected_total{reason=\"twilio_replay\"}",
            1.0,
        )
        .await;
}

#[tokio::test]
async fn a_voice_channel_without_public_url_is_refused_with_the_reason() {
    let dir = tempdir();
    let path = dir.path().join("relay.yml");
    std::fs::write(
        &path,
        format!(
            "{AUTH}channels:\n  phone: {{ type: twilio_voice, account_sid: AC1, auth_token: t, from: '+15005550006', to: ['{ALICE}'] }}\n\
             policies: {{ p: {{ steps: [ {{ notify: [phone] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n"
        ),
    )
    .expect("config");
    let out = std::process::Command::new(crate::support::binary())
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("channels.phone.type: a twilio_voice channel needs public_url"),
        "{stderr}"
    );
}

/// A storm summary calls too, and key 1 on that call acknowledges the whole storm.
#[tokio::test]
async fn a_storm_summary_call_is_acknowledged_for_the_whole_storm() {
    let calls = FakeCalls::start(TOKEN).await;
    // The first incident's own call is heard to its end; the storm's is acknowledged.
    calls.pickup(ALICE, [Pickup::Answer(vec![]), Pickup::Answer(vec!["1"])]);
    let dir = tempdir();
    let path = dir.path().join("relay.yml");
    let relay = on_a_free_port(async |port| {
        std::fs::write(
            &path,
            format!(
                "listen: 127.0.0.1:{port}\npublic_url: http://127.0.0.1:{port}\n{AUTH}{FAST_DELIVERY}\
                 channels:\n  phone: {{ type: twilio_voice, account_sid: AC1, auth_token: {TOKEN}, from: '+15005550006', \
                 to: ['{ALICE}'], api_url: '{}' }}\n\
                 policies:\n  p:\n    steps: [ {{ notify: [phone] }} ]\n    storm: {{ window: 1m, threshold: 1 }}\n\
                 routes: [ {{ policy: p }} ]\n",
                calls.url()
            ),
        )
        .expect("config");
        Relay::try_start_file(&path)
    })
    .await;
    for n in 1..=3 {
        let body = webhook(&[(&format!("{n:016x}"), "firing")], "")
            .replace(r#""groupKey":"{}:"#, &format!(r#""groupKey":"{{}}/{n}:"#));
        relay.fire(body).await;
    }
    let played = calls.wait_done(2, Duration::from_secs(15)).await;
    let storm = &played[1];
    let menu = &storm.callbacks[0].body;
    assert!(menu.contains("<Say>Alert storm 1. "), "{menu}");
    let said = &storm.callbacks[1].body;
    assert!(
        said.contains("Storm 1 acknowledged, 3 incidents. Goodbye.</Say><Hangup/>"),
        "{said}"
    );
    for id in 1..=3 {
        let v = incident(&relay, id).await;
        assert_eq!(v["incident"]["state"], "acked", "{v}");
        assert_eq!(
            v["incident"]["acked_by"],
            format!("key press on a call to {ALICE}")
        );
    }
    // The first call was answered and heard, without a key.
    assert_eq!(
        details(&relay, &format!("phone/{ALICE}")).await[0],
        "answered, no key 1"
    );
}
