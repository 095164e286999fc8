//! The on-call console's pages with 10,000 incidents and 100,000 deliveries stored (issue 16:
//! each page under 100 ms): the real relay binary on a seeded SQLite file, a signed-in user,
//! each page fetched over loopback HTTP as a browser fetches it.
//!
//! The same pages on SQLite and on PostgreSQL (a throwaway server from Debian's `postgresql`).
//!
//! Run: `cargo bench -p alert-relay --bench console` (results in docs/performance.md).

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alert_relay::store::postgres::{PgSettings, Postgres};
use alert_relay::store::seed_for_bench;
use alert_relay::store::sqlite::Sqlite;
use criterion::{Criterion, criterion_group, criterion_main};

const INCIDENTS: usize = 10_000;
const DESTINATIONS: usize = 10;
const PASSWORD: &str = "bench";

/// 10,000 incidents in every state, 100,000 deliveries (`store::seed_for_bench`) in a SQLite
/// file in `dir`; the configuration's `storage:`.
fn seed_sqlite(dir: &Path) -> String {
    let mut db = Sqlite::open(&dir.join("relay.db")).expect("open the bench database");
    seed_for_bench(&mut db, INCIDENTS, DESTINATIONS).expect("seed");
    "{ sqlite: relay.db }".to_owned()
}

/// The same on a throwaway PostgreSQL server (kept running by the returned handle), its
/// statistics gathered as autovacuum would have by then; the configuration's `storage:`.
fn seed_postgres() -> (testpg::TestPg, String) {
    let server = testpg::TestPg::start().expect("start PostgreSQL (Debian's postgresql)");
    server.create_database("console_bench").expect("database");
    let url = server.url("console_bench");
    let settings = PgSettings {
        url: url.clone(),
        ca_file: None,
    };
    let mut db = Postgres::connect(&settings).expect("connect");
    seed_for_bench(&mut db, INCIDENTS, DESTINATIONS).expect("seed");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("client");
    client.batch_execute("ANALYZE").expect("analyze");
    (server, format!("{{ postgres: {{ url: '{url}' }} }}"))
}

struct Relay {
    child: Child,
    base: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(dir: &Path, storage: &str) -> Relay {
    let hash = bcrypt::hash(PASSWORD, 4).expect("hash");
    let channels: String = (0..DESTINATIONS)
        .map(|d| format!("  chat-{d}: {{ type: webhook, url: 'http://127.0.0.1:9/' }}\n"))
        .collect();
    let notify: Vec<String> = (0..DESTINATIONS).map(|d| format!("chat-{d}")).collect();
    let config = format!(
        "listen: 127.0.0.1:0\nauth: none\nstorage: {storage}\nchannels:\n{channels}\
         policies: {{ primary: {{ steps: [ {{ notify: [{n}] }} ] }}, secondary: {{ steps: [ {{ notify: [{n}] }} ] }}, \
         night: {{ steps: [ {{ notify: [{n}] }} ] }} }}\nroutes: [ {{ policy: primary }} ]\n\
         console: {{ users: {{ bench: {{ password_hash: '{hash}', role: responder }} }} }}\n",
        n = notify.join(", ")
    );
    std::fs::write(dir.join("relay.yml"), config).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_alert-relay"))
        .args(["run", "--config", "relay.yml"])
        .current_dir(dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start alert-relay");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let address = loop {
        let line = lines.next().expect("the relay exited").expect("stderr");
        if let Some(a) = line.split("address=").nth(1) {
            break a.split_whitespace().next().expect("address").to_owned();
        }
    };
    // Keep reading so the relay never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Relay {
        child,
        base: format!("http://{address}"),
    }
}

/// Signs in; the session cookie.
async fn sign_in(http: &reqwest::Client, base: &str) -> String {
    let page = http
        .get(format!("{base}/ui/login"))
        .send()
        .await
        .expect("login page");
    let cookie = cookie_of(&page, "relay_login");
    let body = page.text().await.expect("body");
    let at = body.find("name=\"csrf\" value=\"").expect("csrf") + 19;
    let csrf = body[at..].split('"').next().expect("csrf").to_owned();
    let r = http
        .post(format!("{base}/ui/login"))
        .header("cookie", format!("relay_login={cookie}"))
        .form(&[("user", "bench"), ("password", PASSWORD), ("csrf", &csrf)])
        .send()
        .await
        .expect("login");
    format!("relay_session={}", cookie_of(&r, "relay_session"))
}

fn cookie_of(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .expect("cookie")
        .to_owned()
}

fn console_pages(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = seed_sqlite(dir.path());
    pages(c, "console-sqlite", &start_relay(dir.path(), &storage));
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, storage) = seed_postgres();
    pages(c, "console-postgres", &start_relay(dir.path(), &storage));
}

/// Times every page of `relay` as group `name`.
fn pages(c: &mut Criterion, name: &str, relay: &Relay) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let cookie = rt.block_on(sign_in(&http, &relay.base));
    let mut group = c.benchmark_group(name);
    group.sample_size(50);
    let pages = [
        ("incidents (open, newest 50)", "/ui/".to_owned()),
        (
            "incidents (all states, text filter)",
            "/ui/?state=all&q=pi-4242".to_owned(),
        ),
        (
            "incidents (all, site and severity)",
            "/ui/?state=all&site=site-7&severity=critical".to_owned(),
        ),
        (
            "incidents (page 100 of all)",
            "/ui/?state=all&before=5000".to_owned(),
        ),
        ("timeline", format!("/ui/incidents/{}", INCIDENTS / 2)),
        ("deliveries", "/ui/deliveries".to_owned()),
    ];
    for (name, path) in pages {
        let url = format!("{}{path}", relay.base);
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let r = http
                        .get(&url)
                        .header("cookie", &cookie)
                        .send()
                        .await
                        .expect("get");
                    assert_eq!(r.status(), 200, "{url}");
                    r.bytes().await.expect("body")
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, console_pages);
criterion_main!(benches);
