//! The server with a handler that takes its time: deadlines that apply to request heads must
//! never cut off a request being answered, and a drain lets it finish with `Connection: close`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use serving::{Body, Handler, Limits, NoTls};

/// Answers every request after `0` and says which peer asked.
struct Slow(Duration);

impl Handler for Slow {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        tokio::time::sleep(self.0).await;
        let peer = req.extensions().get::<serving::Peer>().map(|p| p.0.ip());
        Response::new(Body::from(format!("{peer:?}")))
    }
}

async fn start(handler_takes: Duration, limits: Limits) -> (serving::Serving, SocketAddr) {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let listeners = serving::bind(&[addr]).await.expect("bind");
    let serving = serving::serve(
        listeners,
        Arc::new(Slow(handler_takes)),
        Arc::new(NoTls),
        limits,
    );
    let addr = serving.addresses()[0];
    (serving, addr)
}

/// A blocking client on the blocking pool, so the server keeps running on the test's thread.
fn exchange(addr: SocketAddr, request: &'static [u8]) -> tokio::task::JoinHandle<String> {
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(request).expect("request");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    })
}

#[tokio::test]
async fn a_request_slower_than_the_head_deadline_is_answered() {
    let limits = Limits {
        head_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let (_serving, addr) = start(Duration::from_millis(600), limits).await;
    let answer = exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("client");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("Some(127.0.0.1)"),
        "the peer reaches the handler: {answer}"
    );
}

#[tokio::test]
async fn a_drain_finishes_the_request_in_flight_with_connection_close() {
    let (serving, addr) = start(Duration::from_millis(500), Limits::default()).await;
    // Keep-alive: without the drain the server would keep the connection open.
    let client = exchange(addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    serving.drain().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let answer = client.await.expect("client").to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
}

#[tokio::test]
async fn a_drain_gives_up_on_a_request_after_the_grace_period() {
    let limits = Limits {
        grace: Duration::from_millis(300),
        ..Limits::default()
    };
    let (serving, addr) = start(Duration::from_secs(30), limits).await;
    let client = exchange(addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    serving.drain().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        client.await.expect("client"),
        "",
        "closed without an answer"
    );
}
