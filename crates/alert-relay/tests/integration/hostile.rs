//! Malformed and hostile input: wrong types, huge label sets, deep JSON (in fields the relay
//! ignores too), invalid UTF-8, slow bodies and slow headers. The relay answers each with a 4xx
//! (or closes the connection) and keeps serving.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{Fake, Relay, Reply, tempdir, webhook};

fn config(fake: &Fake) -> String {
    format!(
        "storage: {{ sqlite: relay.db }}\nlimits: {{ body_timeout: 1s, read_header_timeout: 1s }}\n\
         channels: {{ hook: {{ type: webhook, url: '{}/h' }} }}\n\
         policies: {{ p: {{ steps: [ {{ notify: [hook] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
        fake.url()
    )
}

#[tokio::test]
async fn hostile_payloads_are_refused_and_the_relay_keeps_serving() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&fake));
    let good = webhook(&[("00000000000000f1", "firing")], "");
    let wrong_type = good.replace(r#""severity":"critical""#, r#""severity":5"#);
    let deep = format!(
        r#"{{"version":"4","x":{}{}}}"#,
        "[".repeat(200_000),
        "]".repeat(200_000)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("wrong types", wrong_type.into_bytes(), 400),
        ("deep JSON", deep.into_bytes(), 400),
        (
            "invalid UTF-8",
            b"{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[\xff\xfe]}".to_vec(),
            400,
        ),
        (
            "alerts is an object",
            br#"{"version":"4","status":"firing","alerts":{}}"#.to_vec(),
            400,
        ),
        ("null", b"null".to_vec(), 400),
        ("empty", Vec::new(), 400),
    ];
    for (name, body, status) in cases {
        let (got, text) = relay.post("/webhook", body).await;
        assert_eq!(got, status, "{name}: {text}");
        let j: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {text}"));
        assert_eq!(j["status"], "error", "{name}");
    }
    // A huge label set within the body limit is stored and delivered.
    let many: String = (0..5000)
        .map(|i| format!(r#","l{i}":"{}""#, "v".repeat(100)))
        .collect();
    let huge = webhook(&[("00000000000000f2", "firing")], &many);
    assert!(huge.len() < 1024 * 1024);
    let start = Instant::now();
    let (got, text) = relay.post("/webhook", huge).await;
    assert_eq!(got, 200, "{text}");
    assert!(start.elapsed() < Duration::from_secs(5));
    fake.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(relay.post("/webhook", good).await.0, 200);
}

#[tokio::test]
async fn nesting_is_limited_over_the_whole_document() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&fake));
    let good = webhook(&[("00000000000000f4", "firing")], "");
    let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
    // The webhook's own object is the first level: 127 arrays in one of its fields make 128.
    let in_unknown = |levels| good.replacen('{', &format!(r#"{{"x":{},"#, nested(levels)), 1);
    let in_alerts = |levels| {
        good.replacen(
            r#""alerts":["#,
            &format!(r#""alerts":[{},"#, nested(levels)),
            1,
        )
    };
    let cases = [
        // serde_json skips a field it does not know without its depth limit: this was a 200.
        ("200,000 deep in an unknown field", in_unknown(200_000)),
        ("129 deep in an unknown field", in_unknown(128)),
        ("129 deep in a known field", in_alerts(127)),
    ];
    for (name, body) in cases {
        let (status, text) = relay.post("/webhook", body).await;
        assert_eq!(status, 400, "{name}: {text}");
        let j: serde_json::Value = serde_json::from_str(&text).expect("JSON error");
        assert_eq!(j["error"], "malformed", "{name}");
        let message = j["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("nested deeper than 128"),
            "{name}: {message}"
        );
    }
    relay
        .wait_metric(
            r#"alert_relay_webhooks_rejected_total{reason="malformed"}"#,
            3.0,
        )
        .await;
    let (status, text) = relay.post("/webhook", in_unknown(127)).await;
    assert_eq!(status, 200, "128 deep is within the limit: {text}");
}

#[tokio::test]
async fn slow_bodies_and_slow_headers_are_cut_off() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&fake));
    let addr = relay.addr;
    let (body_result, head_result) = tokio::task::spawn_blocking(move || {
        // A body that trickles in slower than body_timeout (1 s), for 8 s unless cut off. The
        // bounds below leave a loaded runner 5 s of slack and still fail an unenforced timeout
        // (the trickle, or the 10 s read timeout, would run out first).
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s.write_all(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{").expect("head");
        let start = Instant::now();
        let mut answer = String::new();
        for _ in 0..80 {
            std::thread::sleep(Duration::from_millis(100));
            if s.write_all(b" ").is_err() {
                break;
            }
        }
        let _ = s.read_to_string(&mut answer);
        let body_result = (start.elapsed(), answer);
        // Headers that never finish.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s.write_all(b"POST /webhook HTTP/1.1\r\nHost: x\r\n").expect("partial head");
        let start = Instant::now();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        (body_result, (start.elapsed(), buf))
    })
    .await
    .expect("join");
    assert!(
        body_result.1.starts_with("HTTP/1.1 408"),
        "slow body: {:?}",
        body_result.1
    );
    assert!(
        body_result.0 < Duration::from_secs(6),
        "{:?}",
        body_result.0
    );
    assert!(
        head_result.0 < Duration::from_secs(6),
        "slow head held for {:?}",
        head_result.0
    );
    assert_eq!(
        relay
            .post("/webhook", webhook(&[("00000000000000f3", "firing")], ""))
            .await
            .0,
        200
    );
}
