//! Every provider against a loopback fake: exact request shape, auth and content; 429 with
//! Retry-After, 5xx, timeouts, permanent 4xx, plain-text fallback; resolved follow-ups.

use std::time::Duration;

use base64::Engine as _;

use crate::support::{
    FAST_DELIVERY, Fake, Received, Relay, Reply, every_provider, tempdir, webhook,
};

const ALL_OK: &str = r#"{"ok":true,"channel":"C1","ts":"111.222","id":"42","result":{"message_id":7},"event_id":"$ev1","sid":"SM1","status":1,"request":"req1"}"#;

fn by_prefix<'a>(got: &'a [Received], prefix: &str) -> Vec<&'a Received> {
    got.iter().filter(|r| r.path.starts_with(prefix)).collect()
}

#[tokio::test]
async fn every_provider_request_shape_and_resolved_follow_up() {
    let fake = Fake::start(Reply::new(200, ALL_OK)).await;
    let f = fake.url();
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &every_provider(&f));
    let (status, _) = relay
        .post("/webhook", webhook(&[("0123456789abcdef", "firing")], ""))
        .await;
    assert_eq!(status, 200);
    let got = fake.wait_for(10, Duration::from_secs(10)).await;

    let hook = by_prefix(&got, "/hook/in")[0];
    assert_eq!(hook.method, "POST");
    assert_eq!(hook.header("x-team"), "pi");
    assert!(hook.header("idempotency-key").starts_with("alert-relay-"));
    assert!(hook.header("x-alert-relay-signature").starts_with("v1="));
    assert_eq!(hook.json()["alert"]["labels"]["alertname"], "PiHot");

    let sl = by_prefix(&got, "/slackhook")[0];
    assert_eq!(sl.path, "/slackhook/services/T/B/X");
    assert!(
        sl.json()["blocks"][0]["text"]["text"]
            .as_str()
            .expect("mrkdwn")
            .contains("*[FIRING] PiHot on 0123456789abcdef:9831 (incident #1)*")
    );

    let bot = by_prefix(&got, "/slackapi")[0];
    assert_eq!(bot.path, "/slackapi/chat.postMessage");
    assert_eq!(bot.header("authorization"), "Bearer xoxb-1");
    assert_eq!(bot.json()["channel"], "C1");

    let disc = by_prefix(&got, "/discord")[0];
    assert_eq!(
        (disc.path.as_str(), disc.query.as_str()),
        ("/discord/api/webhooks/1/tok", "wait=true")
    );
    // Markdown escaped: Discord shows "[FIRING] PiHot on … (incident #1)".
    assert_eq!(
        disc.json()["embeds"][0]["title"],
        r"\[FIRING\] PiHot on 0123456789abcdef:9831 \(incident \#1\)"
    );

    let tg = by_prefix(&got, "/telegram")[0];
    assert_eq!(tg.path, "/telegram/bot123:abc/sendMessage");
    assert_eq!(
        (
            tg.json()["parse_mode"].as_str(),
            tg.json()["chat_id"].as_str()
        ),
        (Some("HTML"), Some("-100"))
    );

    let nt = by_prefix(&got, "/ntfy")[0];
    assert_eq!(nt.header("authorization"), "Bearer tk_1");
    assert_eq!(
        (nt.json()["topic"].as_str(), nt.json()["priority"].as_i64()),
        (Some("pi-alerts"), Some(5))
    );

    let sms = by_prefix(&got, "/twilio")[0];
    assert_eq!(sms.path, "/twilio/2010-04-01/Accounts/AC1/Messages.json");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("AC1:twtok")
    );
    assert_eq!(sms.header("authorization"), basic);
    assert_eq!(
        sms.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        (sms.form_value("To"), sms.form_value("From")),
        ("+447700900123".into(), "+15005550006".into())
    );
    assert!(
        sms.form_value("Body")
            .starts_with("FIRING CRITICAL - PiHot"),
        "{}",
        sms.form_value("Body")
    );

    let tm = by_prefix(&got, "/teams")[0];
    assert_eq!(
        (tm.path.as_str(), tm.query.as_str()),
        ("/teams/workflows/1", "sig=s")
    );
    assert_eq!(tm.header("content-type"), "application/json");
    assert_eq!(
        tm.json()["attachments"][0]["content"]["type"],
        "AdaptiveCard"
    );

    let mx = by_prefix(&got, "/matrix")[0];
    assert_eq!(mx.method, "PUT");
    assert!(
        mx.path.starts_with(
            "/matrix/_matrix/client/v3/rooms/%21r%3Aexample.org/send/m.room.message/alert-relay-"
        ),
        "{}",
        mx.path
    );
    assert_eq!(mx.header("authorization"), "Bearer syt");

    let po = by_prefix(&got, "/pushover")[0];
    assert_eq!(po.path, "/pushover/1/messages.json");
    assert_eq!(
        (po.form_value("token"), po.form_value("user")),
        ("app1".into(), "user1".into())
    );

    // Resolved: every destination again, threaded/edited where the provider allows.
    let (status, _) = relay
        .post("/webhook", webhook(&[("0123456789abcdef", "resolved")], ""))
        .await;
    assert_eq!(status, 200);
    let got = fake.wait_for(22, Duration::from_secs(10)).await;
    let bot: Vec<_> = by_prefix(&got, "/slackapi");
    assert_eq!(bot[1].json()["thread_ts"], "111.222");
    assert!(
        bot.iter()
            .any(|r| r.path == "/slackapi/chat.update" && r.json()["ts"] == "111.222")
    );
    let disc = by_prefix(&got, "/discord");
    assert!(
        disc.iter()
            .any(|r| r.method == "PATCH" && r.path == "/discord/api/webhooks/1/tok/messages/42")
    );
    let tg = by_prefix(&got, "/telegram");
    assert_eq!(tg[1].json()["reply_parameters"]["message_id"], 7);
    let mx = by_prefix(&got, "/matrix");
    assert_eq!(
        mx[1].json()["m.relates_to"]["m.in_reply_to"]["event_id"],
        "$ev1"
    );
    assert!(
        by_prefix(&got, "/twilio")[1]
            .form_value("Body")
            .starts_with("RESOLVED")
    );
    assert!(
        by_prefix(&got, "/slackhook")[1].json()["text"]
            .as_str()
            .expect("text")
            .contains("RESOLVED")
    );
    let text = by_prefix(&got, "/hook/in")[1].json()["text"]
        .as_str()
        .expect("text")
        .to_owned();
    assert!(text.contains("Resolved after firing for 15m"), "{text}");
    relay
        .wait_metric(
            "alert_relay_notifications_delivered_total{channel=\"mx\",integration=\"matrix\",destination=\"mx\"}",
            2.0,
        )
        .await;
}

fn single(fake: &Fake, channel: &str) -> String {
    format!(
        "storage: {{ sqlite: relay.db }}\n{FAST_DELIVERY}channels:\n  c: {channel}\n\
         policies: {{ p: {{ steps: [ {{ notify: [c] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n"
    )
    .replace("FAKE", &fake.url())
}

#[tokio::test]
async fn rate_limits_with_retry_after_then_server_errors_then_delivery() {
    let fake = Fake::start(Reply::new(200, "ok")).await;
    fake.script([
        Reply::new(
            429,
            r#"{"retry_after":1,"ok":false,"error":"rate_limited"}"#,
        )
        .header("retry-after", "1"),
        Reply::new(503, "rollup_error"),
    ]);
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &single(
            &fake,
            "{ type: slack, webhook_url: 'https://hooks.slack.com/services/T/B/X', api_url: 'FAKE' }",
        ),
    );
    assert_eq!(
        relay
            .post("/webhook", webhook(&[("00000000000000a1", "firing")], ""))
            .await
            .0,
        200
    );
    fake.wait_for(3, Duration::from_secs(10)).await;
    let at = fake.received_at();
    assert!(
        at[1] - at[0] >= Duration::from_millis(990),
        "Retry-After ignored: {:?}",
        at[1] - at[0]
    );
    relay
        .wait_metric(
            r#"alert_relay_notifications_delivered_total{channel="c",integration="slack",destination="c"}"#,
            1.0,
        )
        .await;
    let m = relay.metrics().await;
    assert!(m.contains(r#"alert_relay_notifications_failed_total{channel="c",integration="slack",destination="c",reason="rate_limited"} 1"#), "{m}");
    assert!(m.contains(r#"alert_relay_notifications_failed_total{channel="c",integration="slack",destination="c",reason="server_error"} 1"#), "{m}");
    assert!(
        m.contains(r#"alert_relay_notifications_delivered_total{channel="c",integration="slack",destination="c"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn formatting_rejected_falls_back_to_plain_text() {
    let fake = Fake::start(Reply::new(200, r#"{"id":"9"}"#)).await;
    fake.script([Reply::new(400, r#"{"embeds":["0"]}"#)]);
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &single(
            &fake,
            "{ type: discord, webhook_url: 'https://discord.com/api/webhooks/1/t', api_url: 'FAKE' }",
        ),
    );
    assert_eq!(
        relay
            .post("/webhook", webhook(&[("00000000000000b1", "firing")], ""))
            .await
            .0,
        200
    );
    let got = fake.wait_for(2, Duration::from_secs(5)).await;
    assert!(got[0].json().get("embeds").is_some());
    assert!(got[1].json().get("embeds").is_none());
    assert!(
        got[1].json()["content"]
            .as_str()
            .expect("content")
            .starts_with(r"\[FIRING\] PiHot")
    );
    relay
        .wait_metric(
            "alert_relay_notifications_plain_fallback_total{channel=\"c\",integration=\"discord\",destination=\"c\"}",
            1.0,
        )
        .await;
}

#[tokio::test]
async fn permanent_errors_dead_letter_and_skip_the_resolved_message() {
    let fake = Fake::start(Reply::new(
        401,
        r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#,
    ))
    .await;
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &single(
            &fake,
            "{ type: telegram, bot_token: 'x:y', chat_id: 1, api_url: 'FAKE' }",
        ),
    );
    assert_eq!(
        relay
            .post("/webhook", webhook(&[("00000000000000c1", "firing")], ""))
            .await
            .0,
        200
    );
    fake.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(
        relay
            .post("/webhook", webhook(&[("00000000000000c1", "resolved")], ""))
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fake.received().len(),
        1,
        "a permanent error is not retried, and the resolved message is skipped"
    );
    relay
        .wait_metric(
            r#"alert_relay_notifications_dead_lettered_total{channel="c",integration="telegram",destination="c",reason="auth"}"#,
            1.0,
        )
        .await;
    relay.wait_log("notification dead-lettered").await;
    assert!(!relay.log_contains("x:y"), "the bot token reached the log");
}

#[tokio::test]
async fn timeouts_retry_matrix_with_the_same_transaction_id() {
    let fake = Fake::start(Reply::new(200, r#"{"event_id":"$1"}"#)).await;
    fake.script([Reply::new(200, r#"{"event_id":"$1"}"#).delay(Duration::from_millis(1500))]);
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &single(
            &fake,
            "{ type: matrix, room_id: '!r:x', access_token: t, api_url: 'FAKE', timeout: 300ms }",
        ),
    );
    assert_eq!(
        relay
            .post("/webhook", webhook(&[("00000000000000d1", "firing")], ""))
            .await
            .0,
        200
    );
    let got = fake.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(
        got[0].path, got[1].path,
        "a retry reuses the txnId, so the homeserver sees one event"
    );
    relay
        .wait_metric(
            r#"alert_relay_notifications_failed_total{channel="c",integration="matrix",destination="c",reason="timeout"}"#,
            1.0,
        )
        .await;
}

#[tokio::test]
async fn each_sms_number_is_its_own_destination() {
    let fake = Fake::start(Reply::new(201, r#"{"sid":"SM1"}"#)).await;
    // The first number's first attempt fails: the second number must not be sent twice.
    fake.script([Reply::new(500, r#"{"code":20500}"#)]);
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &single(
            &fake,
            "{ type: twilio, account_sid: AC1, auth_token: t, from: '+15005550006', to: ['+447700900123', '+447700900124'], api_url: 'FAKE' }",
        ),
    );
    assert_eq!(
        relay
            .post("/webhook", webhook(&[("00000000000000e1", "firing")], ""))
            .await
            .0,
        200
    );
    fake.wait_for(3, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = fake.received();
    let mut to: Vec<String> = got.iter().map(|r| r.form_value("To")).collect();
    to.sort();
    assert_eq!(got.len(), 3, "{to:?}");
    assert_eq!(
        to.iter().filter(|t| *t == "+447700900124").count()
            + to.iter().filter(|t| *t == "+447700900123").count(),
        3
    );
    relay.wait_metric("alert_relay_notifications_delivered_total{channel=\"c\",integration=\"twilio\",destination=\"c/1\"}", 1.0).await;
    relay.wait_metric("alert_relay_notifications_delivered_total{channel=\"c\",integration=\"twilio\",destination=\"c/2\"}", 1.0).await;
}

/// A minimal SMTP server on loopback (no TLS): records each mail's envelope and data.
async fn fake_smtp(
    reject_first_rcpt_with: Option<&'static str>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<(Vec<String>, String)>>>,
) {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mails = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = std::sync::Arc::clone(&mails);
    tokio::spawn(async move {
        let mut reject = reject_first_rcpt_with;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            let _ = w.write_all(b"220 fake ESMTP\r\n").await;
            let mut rcpt = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let upper = line.to_ascii_uppercase();
                let reply: String = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                    "250-fake\r\n250 8BITMIME\r\n".into()
                } else if upper.starts_with("MAIL FROM") {
                    "250 ok\r\n".into()
                } else if upper.starts_with("RCPT TO") {
                    match reject.take() {
                        Some(r) => format!("{r}\r\n"),
                        None => {
                            rcpt.push(line[8..].trim().to_owned());
                            "250 ok\r\n".into()
                        }
                    }
                } else if upper.starts_with("DATA") {
                    let _ = w.write_all(b"354 go ahead\r\n").await;
                    let mut data = String::new();
                    while let Ok(Some(l)) = lines.next_line().await {
                        if l == "." {
                            break;
                        }
                        data.push_str(&l);
                        data.push('\n');
                    }
                    store
                        .lock()
                        .expect("mails")
                        .push((std::mem::take(&mut rcpt), data));
                    "250 queued\r\n".into()
                } else if upper.starts_with("QUIT") {
                    let _ = w.write_all(b"221 bye\r\n").await;
                    break;
                } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
                    "250 ok\r\n".into()
                } else {
                    "502 not implemented\r\n".into()
                };
                if w.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    });
    (addr, mails)
}

#[tokio::test]
async fn email_over_smtp_threads_the_resolved_mail_and_retries_4xx() {
    let (addr, mails) = fake_smtp(Some("451 4.3.0 try again later")).await;
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &single(
            &fake,
            &format!(
                "{{ type: email, smarthost: '{addr}', tls: none, from: 'Relay <relay@example.org>', to: ['ops@example.org', 'lead@example.org'] }}"
            ),
        ),
    );
    assert_eq!(
        relay
            .post("/webhook", webhook(&[("00000000000000e9", "firing")], ""))
            .await
            .0,
        200
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mails.lock().expect("mails").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no mail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        relay
            .post("/webhook", webhook(&[("00000000000000e9", "resolved")], ""))
            .await
            .0,
        200
    );
    while mails.lock().expect("mails").len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no resolved mail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mails = mails.lock().expect("mails").clone();
    assert_eq!(mails[0].0, ["<ops@example.org>", "<lead@example.org>"]);
    let (firing, resolved) = (&mails[0].1, &mails[1].1);
    assert!(
        firing.contains("Subject: [FIRING] PiHot on 00000000000000e9:9831 (incident #"),
        "{firing}"
    );
    let id = firing
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .expect("message id")
        .to_owned();
    assert!(
        resolved.contains(&format!("In-Reply-To: {id}")),
        "{resolved}"
    );
    assert!(
        resolved.contains("Resolved after firing for 15m"),
        "{resolved}"
    );
    relay
        .wait_metric(
            r#"alert_relay_notifications_failed_total{channel="c",integration="email",destination="c",reason="server_error"}"#,
            1.0,
        )
        .await;
}
