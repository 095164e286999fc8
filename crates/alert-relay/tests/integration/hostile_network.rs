//! A hostile network: connections that never finish their request head or TLS handshake, from
//! one peer or thirty, must not keep Alertmanager's webhooks out; SIGTERM drains. Bounds are
//! generous (the target is 100 ms; a loaded CI machine must not flake): before admission
//! control the relay stopped accepting once 512 such connections were open.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hostile::{
    SelfSigned, Stall, TLS_WEB_CONFIG, hold, loopback_peers, malformed_requests, send_raw,
    timed_request, timed_tls_request,
};

use crate::support::{Fake, Relay, Reply, tempdir, webhook};

const BOUND: Duration = Duration::from_secs(1);

fn routing(fake: &Fake) -> String {
    format!(
        "auth: {{ bearer_token: s3cret }}\nstorage: {{ sqlite: relay.db }}\n\
         channels: {{ hook: {{ type: webhook, url: '{}/h' }} }}\n\
         policies: {{ p: {{ steps: [ {{ notify: [hook] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
        fake.url()
    )
}

fn post_webhook(body: &str) -> Vec<u8> {
    format!(
        "POST /webhook HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer s3cret\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Holds the attack open and times one webhook beside it, off the test's runtime.
async fn webhook_beside(relay: &Relay, peers: Vec<std::net::Ipv4Addr>, count: usize) -> Duration {
    let addr = relay.addr;
    let body = webhook(&[("00000000000000d1", "firing")], "");
    tokio::task::spawn_blocking(move || {
        let _held = hold(addr, &peers, count, Stall::HalfHead);
        let (took, status) =
            timed_request(addr, &post_webhook(&body), Duration::from_secs(10)).expect("webhook");
        assert_eq!(status, 200);
        took
    })
    .await
    .expect("attack")
}

#[tokio::test]
async fn webhooks_are_answered_beside_half_open_connections() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &routing(&fake));
    let one_peer = webhook_beside(&relay, loopback_peers(1), 1000).await;
    assert!(one_peer < BOUND, "beside 1000 from one peer: {one_peer:?}");
    let thirty: Vec<_> = loopback_peers(31).into_iter().skip(1).collect();
    let many = webhook_beside(&relay, thirty, 300).await;
    assert!(many < BOUND, "beside 300 from 30 peers: {many:?}");
}

#[tokio::test]
async fn stalled_tls_handshakes_do_not_keep_a_tls_webhook_out() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let cert = SelfSigned::write_into(dir.path()).expect("certificate");
    let relay = Relay::start_with_web_config(dir.path(), &routing(&fake), TLS_WEB_CONFIG);
    let addr = relay.addr;
    let body = webhook(&[("00000000000000d2", "firing")], "");
    let (took, status) = tokio::task::spawn_blocking(move || {
        let _one = hold(addr, &loopback_peers(1), 1000, Stall::TlsHello);
        let thirty: Vec<_> = loopback_peers(31).into_iter().skip(1).collect();
        let _many = hold(addr, &thirty, 300, Stall::TlsHello);
        timed_tls_request(
            addr,
            &cert.der,
            &post_webhook(&body),
            Duration::from_secs(10),
        )
        .expect("a TLS webhook")
    })
    .await
    .expect("attack");
    assert_eq!(status, 200);
    assert!(
        took < BOUND,
        "a TLS webhook took {took:?} beside stalled handshakes"
    );
}

#[tokio::test]
async fn sigterm_closes_idle_connections_and_finishes_a_webhook_in_flight() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let mut relay = Relay::start(dir.path(), &routing(&fake));
    let addr = relay.addr;
    let body = webhook(&[("00000000000000d3", "firing")], "");
    let request = post_webhook(&body);
    let keep_alive = String::from_utf8_lossy(&request).replace("Connection: close\r\n", "");
    let (mut idle, mut in_flight) = tokio::task::spawn_blocking(move || {
        // An idle keep-alive connection that has been served once.
        let mut idle = TcpStream::connect(addr).expect("connect");
        idle.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        idle.write_all(keep_alive.as_bytes()).expect("request");
        let mut buf = [0u8; 1024];
        assert!(idle.read(&mut buf).expect("answer") > 0);
        // A webhook whose head and half its body are sent: in flight.
        let mut in_flight = TcpStream::connect(addr).expect("connect");
        in_flight
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let half = request.len() - body.len() / 2;
        in_flight.write_all(&request[..half]).expect("half");
        (idle, (in_flight, request[half..].to_vec()))
    })
    .await
    .expect("setup");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &relay.child.id().to_string()])
        .status();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (answer, idle_eof) = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 64];
        let idle_eof = idle.read(&mut buf).map(|n| n == 0).unwrap_or(true);
        in_flight
            .0
            .write_all(&in_flight.1)
            .expect("rest of the body");
        let mut answer = Vec::new();
        let _ = in_flight.0.read_to_end(&mut answer);
        (String::from_utf8_lossy(&answer).to_lowercase(), idle_eof)
    })
    .await
    .expect("drain");
    assert!(
        idle_eof,
        "the idle keep-alive connection is closed at SIGTERM"
    );
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(status) = relay.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit within the grace period");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "exit took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn malformed_requests_get_a_4xx_or_a_closed_connection() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &routing(&fake));
    let addr = relay.addr;
    let body = webhook(&[("00000000000000d4", "firing")], "");
    tokio::task::spawn_blocking(move || {
        for (what, bytes) in malformed_requests() {
            if let Some(status) = send_raw(addr, &bytes).expect("connect") {
                assert!((400..500).contains(&status), "{what}: {status}");
            }
            let (_, status) = timed_request(addr, &post_webhook(&body), Duration::from_secs(10))
                .expect("the next webhook");
            assert_eq!(status, 200, "after {what}");
        }
    })
    .await
    .expect("inputs");
}
