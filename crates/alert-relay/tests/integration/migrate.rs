//! `alert-relay migrate-storage` through the binary: a relay runs on SQLite (incidents, one
//! acknowledged, deliveries delivered and one retrying against a provider that answers 503),
//! stops, its state is copied into PostgreSQL, and the relay started on PostgreSQL carries on:
//! the same incidents, the old ack link still acknowledges, the retrying delivery goes out (the
//! same delivery: its idempotency key), a new alert opens an incident above the copied ones. A
//! second copy into the now non-empty database is refused and changes nothing.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{FAST_DELIVERY, Fake, Relay, Reply, binary, client, tempdir, webhook};

const PUBLIC: &str = "http://relay.invalid";

fn config(storage: &str, up: &Fake, down: &Fake) -> String {
    format!(
        "public_url: {PUBLIC}\nauth: {{ bearer_token: s3cret }}\nstorage: {storage}\n{FAST_DELIVERY}\
         channels:\n  a: {{ type: webhook, url: '{}/a' }}\n  b: {{ type: webhook, url: '{}/b' }}\n\
         policies:\n  p: {{ steps: [ {{ notify: [a] }} ] }}\n  q: {{ steps: [ {{ notify: [b] }} ] }}\n\
         routes: [ {{ match: {{ team: down }}, policy: q }}, {{ policy: p }} ]\n",
        up.url(),
        down.url()
    )
}

/// A firing alert in a group of its own (one incident per group).
fn alert(fp: &str, group: &str, labels: &str) -> String {
    webhook(&[(fp, "firing")], labels).replace(
        r#"alertname=\"PiHot\"}""#,
        &format!(r#"alertname=\"PiHot\",g=\"{group}\"}}""#),
    )
}

/// (id, state) of every incident, newest first.
async fn incidents(relay: &Relay) -> Vec<(i64, String)> {
    let v: Value = client()
        .get(relay.url("/api/v1/incidents"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("api")
        .json()
        .await
        .expect("json");
    v["incidents"]
        .as_array()
        .expect("incidents")
        .iter()
        .map(|i| {
            (
                i["id"].as_i64().expect("id"),
                i["state"].as_str().expect("state").to_owned(),
            )
        })
        .collect()
}

async fn wait_incidents(relay: &Relay, want: &[(i64, &str)]) -> Vec<(i64, String)> {
    let want: Vec<(i64, String)> = want.iter().map(|(i, s)| (*i, (*s).to_owned())).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = incidents(relay).await;
        if got == want {
            return got;
        }
        assert!(Instant::now() < deadline, "incidents {got:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn migrate(dir: &std::path::Path) -> Output {
    Command::new(binary())
        .arg("migrate-storage")
        .arg("--from")
        .arg(dir.join("relay.yml"))
        .arg("--to")
        .arg(dir.join("pg.yml"))
        .output()
        .expect("run migrate-storage")
}

#[tokio::test]
async fn a_relay_moves_from_sqlite_to_postgres_and_carries_on() {
    let up = Fake::start(Reply::new(200, "")).await;
    let down = Fake::start(Reply::new(503, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config("{ sqlite: relay.db }", &up, &down));
    relay.fire(alert("0000000000000e01", "one", "")).await;
    up.wait_on("/a", 1, Duration::from_secs(5)).await;
    relay.fire(alert("0000000000000e02", "two", "")).await;
    up.wait_on("/a", 2, Duration::from_secs(5)).await;
    relay
        .fire(alert("0000000000000e03", "three", r#","team":"down""#))
        .await;
    // Incident #1's message carries its ack link.
    let link = up
        .received_on("/a")
        .iter()
        .flat_map(|r| r.json()["links"].as_array().cloned().unwrap_or_default())
        .find(|l| l["name"] == "Acknowledge #1")
        .and_then(|l| l["url"].as_str().map(str::to_owned))
        .expect("ack link of #1");
    let path = link.strip_prefix(PUBLIC).expect("public_url").to_owned();
    // #2 acknowledged through the API; #3's delivery keeps failing (503) and is retried.
    let r = client()
        .post(relay.url("/api/v1/incidents/2/ack"))
        .bearer_auth("s3cret")
        .json(&serde_json::json!({ "by": "bob" }))
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), 200);
    let failed = down.wait_on("/b", 2, Duration::from_secs(5)).await;
    let key = failed[0].header("idempotency-key");
    assert!(!key.is_empty());
    let before = wait_incidents(&relay, &[(3, "open"), (2, "acked"), (1, "open")]).await;
    assert!(relay.terminate().success());

    let pg = crate::support::postgres("migrate");
    let sqlite_config = std::fs::read_to_string(dir.path().join("relay.yml")).expect("config");
    std::fs::write(
        dir.path().join("pg.yml"),
        sqlite_config.replace("{ sqlite: relay.db }", &pg.storage),
    )
    .expect("pg config");
    let out = migrate(dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "incidents",
        "deliveries",
        "alert_events",
        "meta",
        "next: start the relay",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["incidents", "3", "rows"]),
        "{stdout}"
    );
    // The ack-link key is SQLite's, not the one the first connection made.
    let sqlite_key: Vec<u8> = rusqlite::Connection::open(dir.path().join("relay.db"))
        .and_then(|c| {
            c.query_row("SELECT value FROM meta WHERE key = 'ack_key'", [], |r| {
                r.get(0)
            })
        })
        .expect("SQLite key");
    let url = pg.url.clone();
    let pg_key: Vec<u8> = tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.query_one("SELECT value FROM meta WHERE key = 'ack_key'", &[])
            .expect("key")
            .get(0)
    })
    .await
    .expect("blocking");
    assert_eq!(pg_key, sqlite_key);

    // The provider is back; the relay runs on PostgreSQL now.
    down.on("/b", Reply::new(200, ""));
    let sent_before = down.received_on("/b").len();
    let relay = Relay::start_file(&dir.path().join("pg.yml"));
    assert_eq!(incidents(&relay).await, before);
    // The retrying delivery goes out: the same delivery, not a new one.
    let got = down
        .wait_on("/b", sent_before + 1, Duration::from_secs(10))
        .await;
    assert_eq!(got[sent_before].header("idempotency-key"), key);
    // The link sent before the move still acknowledges.
    let r = client()
        .post(relay.url(&path))
        .send()
        .await
        .expect("ack link");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    wait_incidents(&relay, &[(3, "open"), (2, "acked"), (1, "acked")]).await;
    // A new alert: a new incident above the copied ones.
    relay.fire(alert("0000000000000e04", "four", "")).await;
    let after = wait_incidents(
        &relay,
        &[(4, "open"), (3, "open"), (2, "acked"), (1, "acked")],
    )
    .await;

    // A second copy into the same (now non-empty) database: refused, nothing changed.
    let out = migrate(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert_eq!(incidents(&relay).await, after);
    drop(relay);
}

#[tokio::test]
async fn migrate_storage_needs_sqlite_to_postgres() {
    let up = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let sqlite = config("{ sqlite: relay.db }", &up, &up);
    std::fs::write(dir.path().join("relay.yml"), &sqlite).expect("config");
    std::fs::write(dir.path().join("pg.yml"), &sqlite).expect("config");
    let out = migrate(dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not storage.postgres"), "{stderr}");
}
