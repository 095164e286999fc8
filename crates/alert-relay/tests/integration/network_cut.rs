//! The leader's network to PostgreSQL cut (issue 15): not a killed process but a pulled cable.
//! The leader reaches the database through an address of its own on `lo`; deleting that
//! address leaves both ends retransmitting into nothing. The cut-off leader must stop its
//! engines by itself (its liveness check), the server must end its session (the TCP user
//! timeout the session set), and the follower must take over within 15 s.
//!
//! Needs root (CAP_NET_ADMIN, as CI runs) and iproute2's `ip`.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Fake, Relay, Reply, tempdir, webhook};

const LEADER: &str = "alert_relay_leader";

/// TEST-NET-2 (RFC 5737): routed nowhere once it is gone from `lo`.
const LEADER_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);

/// An address added to `lo`, removed again on drop.
struct LoopbackAddress(Ipv4Addr);

impl LoopbackAddress {
    fn add(address: Ipv4Addr) -> Self {
        let a = LoopbackAddress(address);
        a.ip("del"); // A leftover of an aborted run.
        assert!(
            a.ip("add"),
            "cannot add {address}/32 to lo: this test cuts a network path and needs root \
             (CAP_NET_ADMIN) and iproute2's `ip` (apt-get install iproute2)"
        );
        a
    }

    fn ip(&self, verb: &str) -> bool {
        Command::new("ip")
            .args(["addr", verb, &format!("{}/32", self.0), "dev", "lo"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn cut(&self) {
        assert!(self.ip("del"), "cannot remove {} from lo", self.0);
    }

    fn restore(&self) {
        assert!(self.ip("add"), "cannot add {} to lo again", self.0);
    }
}

impl Drop for LoopbackAddress {
    fn drop(&mut self) {
        self.ip("del");
    }
}

fn config(url: &str, fake: &Fake) -> String {
    format!(
        "auth: {{ bearer_token: s3cret }}\n\
         storage: {{ postgres: {{ url: '{url}', pool: 2 }} }}\n\
         delivery: {{ initial_backoff: 50ms, max_backoff: 200ms }}\n\
         channels: {{ hook: {{ type: webhook, url: '{f}/hook' }} }}\n\
         policies: {{ p: {{ steps: [ {{ notify: [hook] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
        f = fake.url()
    )
}

/// Polls `relay`'s leader gauge until it is `want` or `deadline` passes; when it got there.
async fn leader_becomes(relay: &Relay, want: f64, deadline: Instant) -> Option<Instant> {
    while Instant::now() < deadline {
        if relay.metric(LEADER).await == want {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test]
async fn a_leader_cut_off_from_the_database_stops_and_the_follower_takes_over() {
    let address = LoopbackAddress::add(LEADER_ADDRESS);
    let pg = testpg::TestPg::start_with(testpg::Options {
        listen: vec![LEADER_ADDRESS],
        ..testpg::Options::default()
    })
    .unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
    pg.create_database("netcut").expect("createdb");
    let url = pg.url("netcut");
    let fake = Fake::start(Reply::new(200, "")).await;
    let dirs = (tempdir(), tempdir());
    let via_address = url.replace("127.0.0.1", &LEADER_ADDRESS.to_string());
    let a = Relay::start(dirs.0.path(), &config(&via_address, &fake));
    a.wait_metric(LEADER, 1.0).await;
    let b = Relay::start(dirs.1.path(), &config(&url, &fake));
    b.fire(webhook(&[("00000000000000c1", "firing")], "")).await;
    fake.wait_for(1, Duration::from_secs(5)).await;

    address.cut();
    let cut = Instant::now();
    let deadline = cut + Duration::from_secs(20);
    let a_stopped = leader_becomes(&a, 0.0, deadline).await;
    let b_leads = leader_becomes(&b, 1.0, deadline).await;
    let (Some(a_stopped), Some(b_leads)) = (a_stopped, b_leads) else {
        panic!(
            "after the cut: the old leader stopped {a_stopped:?}, the follower leads {b_leads:?}"
        );
    };
    eprintln!(
        "network cut: the old leader stopped after {:?}, the follower led after {:?}",
        a_stopped - cut,
        b_leads - cut
    );
    assert!(a_stopped <= b_leads, "two leaders at once");
    assert!(
        b_leads - cut < Duration::from_secs(15),
        "took over after {:?}",
        b_leads - cut
    );
    assert!(a.log_contains("leadership lost, stopping the engines"));

    // The new leader pages; the cut-off instance refuses webhooks it cannot store.
    b.fire(webhook(&[("00000000000000c2", "firing")], "")).await;
    fake.wait_for(2, Duration::from_secs(5)).await;
    let (status, _) = a
        .post("/webhook", webhook(&[("00000000000000c3", "firing")], ""))
        .await;
    assert_ne!(status, 200, "a webhook answered 2xx without a database");

    // The cable back: the old leader rejoins as a follower, its webhooks delivered by B.
    address.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = crate::support::client()
            .post(a.url("/webhook"))
            .bearer_auth("s3cret")
            .body(webhook(&[("00000000000000c3", "firing")], ""))
            .send()
            .await
            .expect("post");
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the old leader never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fake.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(a.metric(LEADER).await, 0.0);
    assert_eq!(b.metric(LEADER).await, 1.0);
    let fingerprints: std::collections::BTreeSet<String> = fake
        .received()
        .iter()
        .map(|r| {
            r.json()["alert"]["fingerprint"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(fingerprints.len(), 3, "{fingerprints:?}");
}
