//! Acknowledgement from providers through the binary: the Telegram button and `/ack` over
//! `getUpdates` long polling, Pushover emergency receipts, the ntfy `http` action performed
//! the way the ntfy app performs it, and SMS replies through Twilio's inbound webhook (bound to
//! what each number was sent, once per MessageSid, refusals that tell nothing).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    FAST_DELIVERY, Fake, Relay, Reply, client, on_a_free_port, tempdir, twilio_reply, webhook,
};

const AUTH: &str = "auth: { bearer_token: s3cret }\nstorage: { sqlite: relay.db }\n";

/// Waits until incident `id` is in `state`.
async fn wait_state(relay: &Relay, id: i64, state: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let i = relay.incident(id).await;
        if i["state"] == state {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "incident {id} is not {state}: {i}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ok(result: Value) -> Reply {
    Reply::new(200, &json!({ "ok": true, "result": result }).to_string())
}

async fn fake_telegram() -> Fake {
    let tg = Fake::start(Reply::new(404, r#"{"ok":false,"error_code":404}"#)).await;
    tg.on("/sendMessage", ok(json!({ "message_id": 77 })));
    tg.on(
        "/getMe",
        ok(json!({ "id": 123, "is_bot": true, "first_name": "Relay", "username": "relaybot" })),
    );
    // An idle long poll: Telegram holds the request, then answers with nothing.
    tg.on(
        "/getUpdates",
        ok(json!([])).delay(Duration::from_millis(200)),
    );
    tg.on("/answerCallbackQuery", ok(json!(true)));
    tg
}

fn telegram_config(tg: &Fake, later: &Fake) -> String {
    format!(
        "{AUTH}{FAST_DELIVERY}channels:\n  tg: {{ type: telegram, bot_token: '123:abc', chat_id: '-100123', ack: true, api_url: '{}' }}\n\
         \x20 later: {{ type: webhook, url: '{}/later' }}\n\
         policies:\n  p:\n    steps: [ {{ notify: [tg] }}, {{ after: 8s, notify: [later] }} ]\nroutes: [ {{ policy: p }} ]\n",
        tg.url(),
        later.url()
    )
}

#[tokio::test]
async fn telegram_button_acks_only_from_the_configured_chat_and_the_offset_survives_a_restart() {
    let tg = fake_telegram().await;
    let later = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &telegram_config(&tg, &later));
    let fired = Instant::now();
    relay
        .fire(webhook(&[("00000000000009a1", "firing")], ""))
        .await;
    let sent = tg.wait_on("/sendMessage", 1, Duration::from_secs(5)).await;
    let msg = sent[0].json();
    assert_eq!(msg["chat_id"], "-100123");
    assert_eq!(
        msg["reply_markup"]["inline_keyboard"][0][0],
        json!({ "text": "Acknowledge #1", "callback_data": "ack:1" })
    );
    // Polling started with the filter and a long-poll timeout, without an offset.
    let first = tg.wait_on("/getUpdates", 1, Duration::from_secs(5)).await;
    let body = first[0].json();
    assert_eq!(
        body["allowed_updates"],
        json!(["message", "callback_query"])
    );
    assert_eq!(body["timeout"], 30);
    assert!(body.get("offset").is_none(), "{body}");
    // A stranger's /ack, a malformed update, then the button pressed in the channel's chat.
    let polls_before = tg.received_on("/getUpdates").len();
    tg.script_on(
        "/getUpdates",
        [ok(json!([
            { "update_id": 40, "message": { "message_id": 5, "date": 1,
              "from": { "id": 9, "is_bot": false, "first_name": "Mallory", "username": "mallory" },
              "chat": { "id": 999, "type": "private" }, "text": "/ack 1" } },
            { "update_id": 41, "callback_query": { "id": 7 } },
            { "update_id": 42, "callback_query": { "id": "cq1", "chat_instance": "x", "data": "ack:1",
              "from": { "id": 5, "is_bot": false, "first_name": "Alice", "username": "alice" },
              "message": { "message_id": 77, "date": 1, "chat": { "id": -100123, "type": "supergroup" } } } }
        ]))],
    );
    let answered = tg
        .wait_on("/answerCallbackQuery", 1, Duration::from_secs(5))
        .await;
    let a = answered[0].json();
    assert_eq!(a["callback_query_id"], "cq1");
    assert_eq!(a["text"], "Incident #1 acknowledged by @alice.");
    let i = wait_state(&relay, 1, "acked", Duration::from_secs(5)).await;
    assert_eq!(i["acked_by"], "@alice via Telegram");
    // The reply in the chat, threaded to the pressed message; nothing to the stranger.
    tg.wait_on("/sendMessage", 2, Duration::from_secs(5)).await;
    let replies: Vec<Value> = tg
        .received_on("/sendMessage")
        .iter()
        .map(|r| r.json())
        .filter(|m| m.get("reply_markup").is_none())
        .collect();
    assert!(replies.iter().all(|m| m["chat_id"] != 999), "{replies:#?}");
    assert!(
        replies.iter().any(|m| m["chat_id"] == -100123
            && m["reply_parameters"]["message_id"] == 77
            && m["text"] == "Incident #1 acknowledged by @alice."),
        "{replies:#?}"
    );
    // The next poll confirms the batch.
    let polls = tg
        .wait_on("/getUpdates", polls_before + 2, Duration::from_secs(5))
        .await;
    assert_eq!(polls[polls_before + 1].json()["offset"], 43);
    relay
        .wait_metric(
            r#"alert_relay_ack_polled_total{source="telegram",result="malformed"}"#,
            1.0,
        )
        .await;
    relay
        .wait_metric(
            r#"alert_relay_ack_polled_total{source="telegram",result="refused"}"#,
            1.0,
        )
        .await;
    // Step 2 (8 s after the POST; the ack came well before) never comes.
    tokio::time::sleep_until((fired + Duration::from_secs(9)).into()).await;
    assert!(later.received().is_empty(), "{:?}", later.received());
    // After a restart polling resumes at the stored offset: nothing is replayed.
    assert!(relay.terminate().success());
    let seen = tg.received_on("/getUpdates").len();
    let relay = Relay::start_file(&dir.path().join("relay.yml"));
    let polls = tg
        .wait_on("/getUpdates", seen + 1, Duration::from_secs(5))
        .await;
    assert_eq!(polls[seen].json()["offset"], 43);
    drop(relay);
}

#[tokio::test]
async fn telegram_ack_command_and_a_409_conflict_backs_off() {
    let tg = fake_telegram().await;
    let later = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &telegram_config(&tg, &later));
    relay
        .fire(webhook(&[("00000000000009b1", "firing")], ""))
        .await;
    tg.wait_on("/sendMessage", 1, Duration::from_secs(5)).await;
    tg.wait_on("/getUpdates", 1, Duration::from_secs(5)).await;
    let conflict = Reply::new(
        409,
        r#"{"ok":false,"error_code":409,"description":"Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"}"#,
    );
    tg.script_on(
        "/getUpdates",
        [
            ok(json!([
                { "update_id": 7, "message": { "message_id": 90, "date": 1,
                  "from": { "id": 6, "is_bot": false, "first_name": "Bob" },
                  "chat": { "id": -100123, "type": "supergroup" }, "text": "/ack@relaybot 1" } }
            ])),
            conflict,
        ],
    );
    let i = wait_state(&relay, 1, "acked", Duration::from_secs(5)).await;
    assert_eq!(i["acked_by"], "Bob (Telegram id 6) via Telegram");
    // The 409 is logged clearly and not retried at once.
    relay.wait_log("409 Conflict").await;
    let polls = tg.received_on("/getUpdates").len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(tg.received_on("/getUpdates").len(), polls, "backed off");
    relay
        .wait_metric(
            r#"alert_relay_ack_poll_errors_total{source="telegram",result="conflict"}"#,
            1.0,
        )
        .await;
}

const RECEIPT_A: &str = "rA1rA1rA1rA1rA1rA1rA1rA1rA1rA1";
const RECEIPT_B: &str = "rB2rB2rB2rB2rB2rB2rB2rB2rB2rB2";

#[tokio::test]
async fn pushover_receipts_ack_cancel_and_survive_a_restart() {
    let po = Fake::start(Reply::new(404, r#"{"status":0,"errors":["not found"]}"#)).await;
    po.on(
        "/1/messages.json",
        Reply::new(200, r#"{"status":1,"request":"n"}"#),
    );
    po.script_on(
        "/1/messages.json",
        [RECEIPT_A, RECEIPT_B].map(|r| {
            Reply::new(
                200,
                &json!({ "status": 1, "request": "q", "receipt": r }).to_string(),
            )
        }),
    );
    let waiting = json!({ "status": 1, "acknowledged": 0, "acknowledged_at": 0, "expired": 0,
                          "expires_at": 2_000_000_000, "request": "w" });
    po.on(
        &format!("/1/receipts/{RECEIPT_A}.json"),
        Reply::new(200, &waiting.to_string()),
    );
    po.on(
        &format!("/1/receipts/{RECEIPT_B}.json"),
        Reply::new(200, &waiting.to_string()),
    );
    po.on("/cancel.json", Reply::new(200, r#"{"status":1}"#));
    let dir = tempdir();
    let cfg = format!(
        "{AUTH}{FAST_DELIVERY}channels:\n  po: {{ type: pushover, token: apptoken, user_key: ukey, priority: 2, retry: 30s, expire: 1h, receipt_poll_interval: 5s, api_url: '{}' }}\n\
         policies:\n  p:\n    steps: [ {{ notify: [po] }} ]\nroutes: [ {{ policy: p }} ]\n",
        po.url()
    );
    let relay = Relay::start(dir.path(), &cfg);
    relay
        .fire(webhook(&[("00000000000009c1", "firing")], ""))
        .await;
    let sent = po
        .wait_on("/1/messages.json", 1, Duration::from_secs(5))
        .await;
    assert_eq!(sent[0].form_value("priority"), "2");
    assert_eq!(sent[0].form_value("retry"), "30");
    assert_eq!(sent[0].form_value("expire"), "3600");
    // Another group: a second incident with its own receipt.
    let other = webhook(&[("00000000000009c2", "firing")], "").replace(
        r#""groupKey":"{}:{alertname=\"PiHot\"}""#,
        r#""groupKey":"{}:{alertname=\"Other\"}""#,
    );
    relay.fire(other).await;
    po.wait_on("/1/messages.json", 2, Duration::from_secs(5))
        .await;
    // Acknowledged through the API: its receipt is cancelled so the phones stop.
    let r = client()
        .post(relay.url("/api/v1/incidents/2/ack"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), 200);
    let cancels = po.wait_on("/cancel.json", 1, Duration::from_secs(5)).await;
    assert_eq!(
        cancels[0].path,
        format!("/1/receipts/{RECEIPT_B}/cancel.json")
    );
    assert_eq!(cancels[0].form_value("token"), "apptoken");
    // The ack notice to the Pushover channel does not alarm.
    let sent = po
        .wait_on("/1/messages.json", 3, Duration::from_secs(5))
        .await;
    assert_eq!(sent[2].form_value("priority"), "0");
    assert!(sent[2].form_value("message").contains("acknowledged"));
    // Once the cancel is stored (a SIGKILL before that cancels again after the restart:
    // at least once), a restart before anyone acknowledges in the app: the receipt is polled
    // after it.
    relay
        .wait_metric_above(
            r#"alert_relay_ack_polled_total{source="pushover",result="cancelled"}"#,
            1.0,
        )
        .await;
    relay.kill9();
    let relay = Relay::start_file(&dir.path().join("relay.yml"));
    po.script_on(
        &format!("/1/receipts/{RECEIPT_A}.json"),
        [Reply::new(
            200,
            &json!({ "status": 1, "acknowledged": 1, "acknowledged_at": 1_700_000_000,
                     "acknowledged_by": "uQiRzpo4DXghDmr9QzzfQu27cmVRsG",
                     "acknowledged_by_device": "pixel", "expired": 0, "expires_at": 2_000_000_000,
                     "request": "x" })
            .to_string(),
        )],
    );
    let i = wait_state(&relay, 1, "acked", Duration::from_secs(10)).await;
    assert_eq!(i["acked_by"], "uQiRzp… via Pushover (device pixel)");
    let polls = po.received_on(&format!("/1/receipts/{RECEIPT_A}.json"));
    assert_eq!(polls[0].method, "GET");
    assert_eq!(polls[0].query, "token=apptoken");
    // Finished receipts are neither polled nor cancelled again.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        po.received_on(&format!("/1/receipts/{RECEIPT_A}.json"))
            .len(),
        polls.len()
    );
    assert!(
        po.received_on(&format!("/1/receipts/{RECEIPT_B}.json"))
            .is_empty()
    );
    assert_eq!(po.received_on("/cancel.json").len(), 1);
    relay
        .wait_metric(
            r#"alert_relay_ack_polled_total{source="pushover",result="acked"}"#,
            1.0,
        )
        .await;
}

/// The ntfy app performs an `http` action with the action's method, URL, headers and body.
#[tokio::test]
async fn ntfy_http_action_acks_end_to_end() {
    let ntfy = Fake::start(Reply::new(200, r#"{"id":"m1"}"#)).await;
    let later = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let path = dir.path().join("relay.yml");
    // The action's URL is the public_url: the relay's own port, fixed in advance.
    let relay = on_a_free_port(async |port| {
        std::fs::write(
            &path,
            format!(
                "listen: 127.0.0.1:{port}\npublic_url: http://127.0.0.1:{port}\n{AUTH}{FAST_DELIVERY}\
                 channels:\n  nt: {{ type: ntfy, topic: pi-alerts, api_url: '{}' }}\n  later: {{ type: webhook, url: '{}/later' }}\n\
                 policies:\n  p:\n    steps: [ {{ notify: [nt] }}, {{ after: 8s, notify: [later] }} ]\nroutes: [ {{ policy: p }} ]\n",
                ntfy.url(),
                later.url()
            ),
        )
        .expect("config");
        Relay::try_start_file(&path)
    })
    .await;
    let fired = Instant::now();
    relay
        .fire(webhook(&[("00000000000009d1", "firing")], ""))
        .await;
    let got = ntfy.wait_for(1, Duration::from_secs(5)).await;
    let action = got[0].json()["actions"][0].clone();
    assert_eq!(action["action"], "http");
    assert_eq!(action["label"], "Acknowledge #1");
    // What the app sends: method (default POST), URL, headers and body of the action.
    let method = action["method"].as_str().unwrap_or("POST");
    let mut req = client().request(
        method.parse().expect("method"),
        action["url"].as_str().expect("url"),
    );
    if let Some(headers) = action["headers"].as_object() {
        for (k, v) in headers {
            req = req.header(k, v.as_str().unwrap_or_default());
        }
    }
    let req = req.body(action["body"].as_str().unwrap_or_default().to_owned());
    let r = req.send().await.expect("action");
    assert_eq!(r.status(), 200);
    let i = wait_state(&relay, 1, "acked", Duration::from_secs(5)).await;
    assert_eq!(i["acked_by"], "ack link from 127.0.0.1");
    // Step 2 (8 s after the POST; the ack came well before) never comes.
    tokio::time::sleep_until((fired + Duration::from_secs(9)).into()).await;
    assert!(later.received().is_empty(), "step 2 must not come");
}

/// A storm summary to a priority-2 Pushover channel is an emergency whose receipt is tracked:
/// acknowledging it in the app acknowledges the storm, and the receipts of the storm's
/// incidents are then cancelled.
#[tokio::test]
async fn a_storm_summary_receipt_acknowledges_the_storm() {
    let po = Fake::start(Reply::new(404, r#"{"status":0,"errors":["not found"]}"#)).await;
    po.on(
        "/1/messages.json",
        Reply::new(200, r#"{"status":1,"request":"n"}"#),
    );
    let receipts: Vec<String> = (1..=6).map(|n| format!("storm{n}receipt")).collect();
    po.script_on(
        "/1/messages.json",
        receipts.iter().map(|r| {
            Reply::new(
                200,
                &json!({ "status": 1, "request": "q", "receipt": r }).to_string(),
            )
        }),
    );
    let waiting = json!({ "status": 1, "acknowledged": 0, "acknowledged_at": 0, "expired": 0,
                          "expires_at": 2_000_000_000, "request": "w" });
    for r in &receipts {
        po.on(
            &format!("/1/receipts/{r}.json"),
            Reply::new(200, &waiting.to_string()),
        );
    }
    po.on("/cancel.json", Reply::new(200, r#"{"status":1}"#));
    let dir = tempdir();
    let cfg = format!(
        "{AUTH}{FAST_DELIVERY}channels:\n  po: {{ type: pushover, token: apptoken, user_key: ukey, priority: 2, retry: 30s, expire: 1h, receipt_poll_interval: 5s, api_url: '{}' }}\n\
         policies:\n  p:\n    steps: [ {{ notify: [po] }} ]\n    storm: {{ window: 30s, threshold: 5, group_by: [alertname] }}\n\
         routes: [ {{ policy: p }} ]\n",
        po.url()
    );
    let relay = Relay::start(dir.path(), &cfg);
    for n in 1..=6 {
        let body = webhook(&[(&format!("{n:016x}"), "firing")], "")
            .replace(r#""groupKey":"{}:"#, &format!(r#""groupKey":"{{}}/{n}:"#));
        relay.fire(body).await;
    }
    let sent = po
        .wait_on("/1/messages.json", 6, Duration::from_secs(10))
        .await;
    let summary = sent
        .iter()
        .position(|m| m.form_value("title").starts_with("Storm #1"))
        .expect("storm summary");
    assert_eq!(sent[summary].form_value("priority"), "2");
    assert_eq!(sent[summary].form_value("retry"), "30");
    po.script_on(
        &format!("/1/receipts/{}.json", receipts[summary]),
        [Reply::new(
            200,
            &json!({ "status": 1, "acknowledged": 1, "acknowledged_at": 1_700_000_000,
                     "acknowledged_by": "uQiRzpo4DXghDmr9QzzfQu27cmVRsG",
                     "acknowledged_by_device": "pixel", "expired": 0, "expires_at": 2_000_000_000,
                     "request": "x" })
            .to_string(),
        )],
    );
    for id in 1..=6 {
        let i = wait_state(&relay, id, "acked", Duration::from_secs(15)).await;
        assert_eq!(i["acked_by"], "uQiRzp… via Pushover (device pixel)");
    }
    // The five incidents sent one by one before the storm: their receipts are cancelled.
    let cancels = po.wait_on("/cancel.json", 5, Duration::from_secs(10)).await;
    assert!(
        cancels.iter().all(|c| !c.path.contains(&receipts[summary])),
        "{cancels:#?}"
    );
}

const PUBLIC: &str = "https://relay.example.org";
const ALICE: &str = "+447700900123";
const BOB: &str = "+447700900124";
/// What the relay answers an `ACK` for anything never sent to the number (`inbound::NOTHING_TO_ACK`).
const NOTHING: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>Nothing to acknowledge from this number.</Message></Response>";

/// Alice's SMS channel is paged at once, Bob's an hour later (so never in these tests); `hook`
/// is no Twilio channel. `storm` adds storm control with a threshold of 1.
fn sms_config(fake: &Fake, storm: &str) -> String {
    format!(
        "public_url: {PUBLIC}\n{AUTH}{FAST_DELIVERY}channels:\n\
         \x20 alice-sms: {{ type: twilio, account_sid: AC1, auth_token: tw-token, from: '+15005550006', to: ['{ALICE}'], api_url: '{u}' }}\n\
         \x20 bob-sms: {{ type: twilio, account_sid: AC1, auth_token: tw-token, from: '+15005550006', to: ['{BOB}'], api_url: '{u}' }}\n\
         \x20 hook: {{ type: webhook, url: '{u}/hook' }}\n\
         policies:\n  p:\n    steps: [ {{ notify: [alice-sms] }}, {{ after: 1h, notify: [bob-sms] }} ]\n{storm}\
         routes: [ {{ policy: p }} ]\n",
        u = fake.url()
    )
}

/// `number` texts `body` to `channel`'s number, signed as Twilio signs; (status, body).
async fn text(relay: &Relay, channel: &str, number: &str, body: &str, sid: &str) -> (u16, String) {
    let path = format!("/inbound/twilio/{channel}");
    let params = [
        ("From", number),
        ("To", "+15005550006"),
        ("Body", body),
        ("MessageSid", sid),
    ];
    twilio_reply(relay, PUBLIC, &path, "tw-token", &params).await
}

/// Waits until `n` messages reached Alice's number and their deliveries are being recorded
/// (the counter is bumped just before the record is queued to the store).
async fn wait_sent_to_alice(relay: &Relay, n: f64) {
    // Alice's number is the first (the only one) of the channel's `to`.
    let series = r#"alert_relay_notifications_delivered_total{channel="alice-sms",integration="twilio",destination="alice-sms/1"}"#;
    relay.wait_metric(series, n).await;
}

async fn unack(relay: &Relay, id: i64) {
    let r = client()
        .post(relay.url(&format!("/api/v1/incidents/{id}/unack")))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("unack");
    assert_eq!(r.status(), 200);
}

/// Bob is one of the relay's numbers but was never sent incident 1: his `ACK 1` changes nothing
/// and is answered exactly like an `ACK` for an id that does not exist. Alice's counts once:
/// the same signed request replayed after an un-ack acknowledges nothing.
#[tokio::test]
async fn an_sms_ack_counts_only_from_a_number_sent_the_incident_and_only_once() {
    let fake = Fake::start(Reply::new(201, r#"{"sid":"SM1"}"#)).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &sms_config(&fake, ""));
    relay
        .fire(webhook(&[("0000000000000ae1", "firing")], ""))
        .await;
    wait_sent_to_alice(&relay, 1.0).await;
    for (body, sid) in [("ACK 1", "SMb1"), ("ACK 999999", "SMb2")] {
        let answer = text(&relay, "bob-sms", BOB, body, sid).await;
        assert_eq!(answer, (200, NOTHING.to_owned()), "{body}");
    }
    assert_eq!(relay.incident(1).await["state"], "open");

    let (status, twiml) = text(&relay, "alice-sms", ALICE, "ACK 1", "SMa1").await;
    assert_eq!(status, 200);
    assert!(twiml.contains("Incident #1 acknowledged."), "{twiml}");
    assert_eq!(
        relay.incident(1).await["acked_by"],
        format!("SMS from {ALICE}")
    );
    unack(&relay, 1).await;
    let replayed = text(&relay, "alice-sms", ALICE, "ACK 1", "SMa1").await;
    let empty = r#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#;
    assert_eq!(replayed, (200, empty.to_owned()));
    relay
        .wait_metric(
            r#"alert_relay_webhooks_rejected_total{reason="twilio_replay"}"#,
            1.0,
        )
        .await;
    assert_eq!(relay.incident(1).await["state"], "open");
    // A new message from Alice (a new MessageSid) is acted on.
    let (_, twiml) = text(&relay, "alice-sms", ALICE, "ACK 1", "SMa2").await;
    assert!(twiml.contains("Incident #1 acknowledged."), "{twiml}");
}

/// An unknown channel, a channel that is not Twilio's, a wrong signature and a signed request
/// without a MessageSid all get one answer; only the relay's log and metrics tell them apart.
#[tokio::test]
async fn refused_sms_webhooks_cannot_be_told_apart() {
    let fake = Fake::start(Reply::new(201, r#"{"sid":"SM1"}"#)).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &sms_config(&fake, ""));
    let params = [("From", ALICE), ("Body", "ACK 1"), ("MessageSid", "SM1")];
    let post = async |channel: &str, token: &str, params: &[(&str, &str)]| {
        let path = format!("/inbound/twilio/{channel}");
        twilio_reply(&relay, PUBLIC, &path, token, params).await
    };
    let unknown = post("nope", "tw-token", &params).await;
    assert_eq!(unknown.0, 403);
    assert_eq!(post("hook", "tw-token", &params).await, unknown);
    assert_eq!(post("alice-sms", "not-the-token", &params).await, unknown);
    assert_eq!(post("alice-sms", "tw-token", &params[..2]).await, unknown);
    relay.wait_log("no channel of that name").await;
    relay.wait_log("not a twilio channel").await;
    for (reason, n) in [("twilio_channel", 2.0), ("twilio_signature", 2.0)] {
        let series = format!(r#"alert_relay_webhooks_rejected_total{{reason="{reason}"}}"#);
        relay.wait_metric(&series, n).await;
    }
}

/// `ACK S1` counts only from a number that was sent the storm's summary or one of its
/// incidents; from any other it is answered like a storm that does not exist.
#[tokio::test]
async fn a_storm_sms_ack_counts_only_from_a_number_sent_the_storm() {
    let fake = Fake::start(Reply::new(201, r#"{"sid":"SM1"}"#)).await;
    let dir = tempdir();
    let storm = "    storm: { window: 1m, threshold: 1 }\n";
    let relay = Relay::start(dir.path(), &sms_config(&fake, storm));
    for n in 1..=2 {
        let body = webhook(&[(&format!("{n:016x}"), "firing")], "")
            .replace(r#""groupKey":"{}:"#, &format!(r#""groupKey":"{{}}/{n}:"#));
        relay.fire(body).await;
    }
    // Incident 1 on its own, then the summary of storm 1 (incidents 1 and 2).
    wait_sent_to_alice(&relay, 2.0).await;
    for (body, sid) in [("ACK S1", "SMb1"), ("ACK S9", "SMb2"), ("ACK 2", "SMb3")] {
        let answer = text(&relay, "bob-sms", BOB, body, sid).await;
        assert_eq!(answer, (200, NOTHING.to_owned()), "{body}");
    }
    for id in 1..=2 {
        assert_eq!(relay.incident(id).await["state"], "open");
    }
    let (_, twiml) = text(&relay, "alice-sms", ALICE, "ACK S1", "SMa1").await;
    assert!(
        twiml.contains("Storm #1 acknowledged (2 incidents)."),
        "{twiml}"
    );
}
