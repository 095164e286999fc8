//! The on-call console over HTTP, against the real binary: sign-in and its limit, sessions
//! that survive a restart and end at sign-out, roles, CSRF on every change, escaping of alert
//! text, the personal calendar feed, and no secret of the configuration on any page.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use crate::support::{FAST_DELIVERY, Fake, Relay, Reply, client, tempdir};

const PASSWORD: &str = "correct horse battery staple";

fn config(hook: &Fake) -> String {
    config_on(hook, "{ sqlite: relay.db }")
}

fn config_on(hook: &Fake, storage: &str) -> String {
    let hash = bcrypt::hash(PASSWORD, 4).expect("hash");
    format!(
        "auth: {{ bearer_token: s3cret }}\nstorage: {storage}\n{FAST_DELIVERY}\
         channels:\n  hook: {{ type: webhook, url: '{}/hook', signing_secret: hook-s3cret }}\n\
         policies:\n  p: {{ steps: [ {{ notify: [hook] }}, {{ after: 1h, notify: [hook] }} ] }}\n\
         routes: [ {{ policy: p }} ]\n\
         rotations:\n  primary: {{ time_zone: Europe/Berlin, handover: '09:00', shift: 1d, start: '2026-01-01', \
         people: [ {{ name: alice, notify: [hook] }}, {{ name: bob, notify: [hook] }} ] }}\n\
         console:\n  users:\n    alice: {{ password_hash: '{hash}', role: responder }}\n    \
         bob: {{ password_hash: '{hash}', role: viewer }}\n",
        hook.url()
    )
}

fn no_redirects() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A cookie's value from a response's `Set-Cookie` headers, with the whole header.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<(String, String)> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let value = v[name.len() + 1..]
                .split(';')
                .next()
                .unwrap_or("")
                .to_owned();
            (value, v.to_owned())
        })
}

/// A page's text with the escapes the console's HTML uses for `/` and `&` undone.
fn unescape(page: &str) -> String {
    page.replace("&#x2f;", "/").replace("&amp;", "&")
}

/// The value of hidden field `csrf` in a page.
fn csrf_in(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..].split('"').next().expect("value").to_owned()
}

struct Session {
    cookie: String,
    csrf: String,
}

async fn sign_in(
    relay: &Relay,
    user: &str,
    password: &str,
) -> Result<Session, (StatusCode, String)> {
    let (session, header) = sign_in_at(&no_redirects(), &relay.url(""), user, password).await?;
    assert!(
        !header.contains("Secure"),
        "plain HTTP: no Secure flag: {header}"
    );
    Ok(session)
}

/// Signs in at `base` (`http://…` or `https://…`): the session and its `Set-Cookie` header.
async fn sign_in_at(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> Result<(Session, String), (StatusCode, String)> {
    let page = http
        .get(format!("{base}/ui/login"))
        .send()
        .await
        .expect("login page");
    let (login_cookie, _) = set_cookie(&page, "relay_login").expect("login cookie");
    let form_csrf = csrf_in(&page.text().await.expect("body"));
    let r = http
        .post(format!("{base}/ui/login"))
        .header(COOKIE, format!("relay_login={login_cookie}"))
        .form(&[
            ("user", user),
            ("password", password),
            ("csrf", &form_csrf),
            ("next", "/ui/"),
        ])
        .send()
        .await
        .expect("login");
    if r.status() != StatusCode::SEE_OTHER {
        return Err((r.status(), r.text().await.unwrap_or_default()));
    }
    let (cookie, header) = set_cookie(&r, "relay_session").expect("session cookie");
    assert!(
        header.contains("HttpOnly") && header.contains("SameSite=Strict"),
        "{header}"
    );
    let cookie = format!("relay_session={cookie}");
    let page = http
        .get(format!("{base}/ui/"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(page.status(), StatusCode::OK);
    let csrf = csrf_in(&page.text().await.expect("body"));
    Ok((Session { cookie, csrf }, header))
}

async fn get(relay: &Relay, cookie: &str, path: &str) -> (StatusCode, String) {
    let r = no_redirects()
        .get(relay.url(path))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("get");
    (r.status(), r.text().await.expect("body"))
}

async fn post(
    relay: &Relay,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (StatusCode, String) {
    let r = no_redirects()
        .post(relay.url(path))
        .header(COOKIE, cookie)
        .form(form)
        .send()
        .await
        .expect("post");
    let status = r.status();
    let location = r
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned);
    (status, location.unwrap_or(r.text().await.expect("body")))
}

/// An alert whose labels and annotations carry markup and script.
const HOSTILE: &str = r#"{"version":"4","groupKey":"{}:{alertname=\"PiHot\"}","status":"firing","receiver":"relay",
"groupLabels":{},"commonLabels":{},"commonAnnotations":{},"externalURL":"javascript:alert(1)",
"alerts":[{"status":"firing","labels":{"alertname":"PiHot","severity":"critical","site":"<b>wh-2</b>","instance":"<script>alert('label')</script>"},
"annotations":{"summary":"<img src=x onerror=alert(1)> hot","runbook_url":"javascript:alert(2)"},"startsAt":"2026-03-01T12:30:00Z",
"generatorURL":"http://prometheus:9090/graph?g0.expr=up","fingerprint":"f1"}]}"#;

#[tokio::test]
async fn sign_in_roles_csrf_and_escaping() {
    let hook = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&hook));
    // Not signed in: pages lead to the sign-in form and back.
    let r = no_redirects()
        .get(relay.url("/ui/incidents/1"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[LOCATION],
        "/ui/login?next=%2Fui%2Fincidents%2F1"
    );
    assert!(
        matches!(sign_in(&relay, "alice", "wrong").await, Err((StatusCode::UNAUTHORIZED, t)) if t.contains("Wrong user name or password"))
    );
    assert!(matches!(
        sign_in(&relay, "mallory", PASSWORD).await,
        Err((StatusCode::UNAUTHORIZED, _))
    ));
    let alice = sign_in(&relay, "alice", PASSWORD).await.expect("alice");
    let bob = sign_in(&relay, "bob", PASSWORD).await.expect("bob");

    relay.fire(HOSTILE).await;
    hook.wait_for(1, Duration::from_secs(10)).await;
    for path in [
        "/ui/",
        "/ui/incidents/list?state=all",
        "/ui/incidents/1",
        "/ui/incidents/1/live",
    ] {
        let (status, page) = get(&relay, &alice.cookie, path).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{path}: {page}\n{:?}",
            relay.log.lock().map(|l| l.join("\n"))
        );
        assert!(page.contains("PiHot"), "{path}: {page}");
        for raw in [
            "<script>alert",
            "<img src=x",
            "<b>wh-2",
            "href=\"javascript",
        ] {
            assert!(
                !page.contains(raw),
                "{path} carries {raw} unescaped: {page}"
            );
        }
    }
    // No page shows a secret of the configuration: tokens, signing secrets, password hashes.
    for path in [
        "/ui/",
        "/ui/incidents/1",
        "/ui/oncall",
        "/ui/maintenance",
        "/ui/deliveries",
    ] {
        let (_, page) = get(&relay, &alice.cookie, path).await;
        for secret in ["s3cret", "$2b$04$"] {
            assert!(!page.contains(secret), "{path} leaks {secret}");
        }
    }
    let (_, timeline) = get(&relay, &alice.cookie, "/ui/incidents/1").await;
    let timeline = unescape(&timeline);
    assert!(
        timeline.contains("&lt;img src=x onerror=alert(1)&gt; hot"),
        "{timeline}"
    );
    assert!(timeline.contains("Step 1 sent to hook"), "{timeline}");
    assert!(
        timeline.contains("http://prometheus:9090/graph?g0.expr=up"),
        "the source link is kept: {timeline}"
    );

    // Every change needs the session's CSRF token; a viewer changes nothing.
    let ack = "/ui/incidents/1/ack";
    let (status, page) = post(&relay, &alice.cookie, ack, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("CSRF"), "{page}");
    let (status, _) = post(&relay, &alice.cookie, ack, &[("csrf", &bob.csrf)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another session's token");
    let (status, page) = post(&relay, &bob.cookie, ack, &[("csrf", &bob.csrf)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("viewer"), "{page}");
    assert_eq!(relay.incident(1).await["state"], "open");
    let (status, location) = post(&relay, &alice.cookie, ack, &[("csrf", &alice.csrf)]).await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/ui/incidents/1?done=ack")
    );
    let i = relay.incident(1).await;
    assert_eq!(
        (i["state"].as_str(), i["acked_by"].as_str()),
        (Some("acked"), Some("alice (console)"))
    );
    let (_, timeline) = get(&relay, &bob.cookie, "/ui/incidents/1?done=ack").await;
    assert!(
        timeline.contains("Acknowledged by alice (console)"),
        "{timeline}"
    );
    assert!(
        timeline.contains("Acknowledged. Escalation stopped."),
        "{timeline}"
    );
    assert!(
        timeline.contains("can see this incident but not act"),
        "{timeline}"
    );

    // Sign-out ends the session for good.
    let (status, _) = post(&relay, &bob.cookie, "/ui/logout", &[("csrf", &bob.csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        get(&relay, &bob.cookie, "/ui/").await.0,
        StatusCode::SEE_OTHER
    );
    let (status, page) = post(&relay, &bob.cookie, ack, &[("csrf", &bob.csrf)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("Sign in again"), "{page}");
    // A made-up cookie is no session.
    assert_eq!(
        get(&relay, "relay_session=forged", "/ui/").await.0,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn sessions_survive_a_restart_and_sign_in_failures_are_limited() {
    let hook = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&hook));
    let alice = sign_in(&relay, "alice", PASSWORD).await.expect("alice");
    drop(relay);
    let relay = restart(dir.path());
    assert_eq!(get(&relay, &alice.cookie, "/ui/").await.0, StatusCode::OK);

    for _ in 0..5 {
        assert!(matches!(
            sign_in(&relay, "bob", "guess").await,
            Err((StatusCode::UNAUTHORIZED, _))
        ));
    }
    // Now even the right password waits: the limit counts per address and per user.
    let refused = sign_in(&relay, "bob", PASSWORD).await;
    assert!(
        matches!(&refused, Err((StatusCode::TOO_MANY_REQUESTS, t)) if t.contains("Too many failed sign-ins")),
        "{refused:?}",
        refused = refused.as_ref().err()
    );
    assert!(
        relay
            .metrics()
            .await
            .contains(r#"alert_relay_webhooks_rejected_total{reason="console_login_limit"}"#)
    );
}

fn restart(dir: &Path) -> Relay {
    Relay::start_file(&dir.join("relay.yml"))
}

#[tokio::test]
async fn the_on_call_page_gives_each_user_a_private_calendar_address() {
    let hook = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&hook));
    let alice = sign_in(&relay, "alice", PASSWORD).await.expect("alice");
    let (status, page) = get(&relay, &alice.cookie, "/ui/oncall").await;
    assert_eq!(status, StatusCode::OK);
    let page = unescape(&page);
    assert!(
        page.contains("Europe/Berlin") && page.contains("primary"),
        "{page}"
    );
    let at = page.find("http://").expect("a calendar address");
    let url = page[at..].split('"').next().expect("address").to_owned();
    assert!(
        url.starts_with(&relay.url("/ui/rotations/primary.ics?user=alice&key=")),
        "{url}"
    );
    let path = url[relay.url("").len()..].to_owned();
    let feed = client().get(&url).send().await.expect("feed");
    assert_eq!(feed.status(), StatusCode::OK);
    let text = feed.text().await.expect("ics");
    assert!(
        text.starts_with("BEGIN:VCALENDAR") && text.contains("alice"),
        "{text}"
    );
    // Another user's name with alice's key, or a changed key, is no calendar.
    for bad in [
        path.replace("user=alice", "user=bob"),
        format!("{path}x"),
        "/ui/rotations/primary.ics".to_owned(),
    ] {
        let r = client().get(relay.url(&bad)).send().await.expect("feed");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{bad}");
    }
}

#[tokio::test]
async fn a_dead_letter_is_retried_from_the_deliveries_page() {
    let hook = Fake::start(Reply::new(200, "")).await;
    // The first attempt is refused for good (400): a dead letter.
    hook.script([Reply::new(400, "bad request")]);
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&hook));
    let alice = sign_in(&relay, "alice", PASSWORD).await.expect("alice");
    relay
        .fire(crate::support::webhook(&[("f1", "firing")], ""))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let page = loop {
        let (_, page) = get(&relay, &alice.cookie, "/ui/deliveries").await;
        if page.contains("Retry delivery") {
            break unescape(&page);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        page.contains("400"),
        "the provider's answer is shown: {page}"
    );
    let at = page.find("action=\"/ui/deliveries/").expect("a retry form") + 8;
    let action = page[at..].split('"').next().expect("action").to_owned();
    // A viewer may not, a responder may; a second retry finds nothing to retry.
    let bob = sign_in(&relay, "bob", PASSWORD).await.expect("bob");
    let (status, _) = post(&relay, &bob.cookie, &action, &[("csrf", &bob.csrf)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, location) = post(&relay, &alice.cookie, &action, &[("csrf", &alice.csrf)]).await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/ui/deliveries?done=retry")
    );
    hook.wait_for(2, Duration::from_secs(10)).await;
    let (status, page) = post(&relay, &alice.cookie, &action, &[("csrf", &alice.csrf)]).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(page.contains("no longer a dead letter"), "{page}");
    let (_, page) = get(&relay, &alice.cookie, "/ui/deliveries?done=retry").await;
    assert!(
        page.contains("No dead letters") && page.contains("queued again"),
        "{page}"
    );
}

#[tokio::test]
async fn the_maintenance_form_refuses_bad_input_and_keeps_what_was_typed() {
    let hook = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&hook));
    let alice = sign_in(&relay, "alice", PASSWORD).await.expect("alice");
    let form =
        |matchers: &'static str, start: &'static str, end: &'static str, duration: &'static str| {
            vec![
                ("matchers", matchers),
                ("start", start),
                ("end", end),
                ("duration", duration),
                ("reason", "switch swap"),
            ]
        };
    let site = "{site=\"a\"}";
    for (fields, says) in [
        (form("{site=", "", "", "2h"), "matchers"),
        (
            form(site, "2030-01-02T10:00", "2030-01-02T09:00", ""),
            "end",
        ),
        (form(site, "", "", ""), "duration"),
        (form("", "", "", "2h"), "matchers"),
    ] {
        let mut fields = fields;
        fields.push(("csrf", &alice.csrf));
        let (status, page) = post(&relay, &alice.cookie, "/ui/maintenance", &fields).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{fields:?}: {page}");
        assert!(
            page.contains("class=\"notice error\"") && page.to_lowercase().contains(says),
            "{fields:?}: {page}"
        );
        assert!(
            page.contains("switch swap"),
            "the form keeps what was typed"
        );
    }
    let mut ok = form(site, "", "", "26h");
    ok.push(("csrf", &alice.csrf));
    let (status, location) = post(&relay, &alice.cookie, "/ui/maintenance", &ok).await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/ui/maintenance?done=window")
    );
    let (_, page) = get(&relay, &alice.cookie, "/ui/maintenance").await;
    assert!(
        page.contains("active") && page.contains("alice (console)"),
        "{page}"
    );
}

#[tokio::test]
async fn an_expired_session_is_no_session() {
    let hook = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&hook));
    let alice = sign_in(&relay, "alice", PASSWORD).await.expect("alice");
    let db = rusqlite::Connection::open(dir.path().join("relay.db")).expect("open");
    db.busy_timeout(Duration::from_secs(5)).expect("timeout");
    db.execute("UPDATE console_sessions SET expires_at = 1", [])
        .expect("expire");
    assert_eq!(
        get(&relay, &alice.cookie, "/ui/").await.0,
        StatusCode::SEE_OTHER
    );
    let ack = "/ui/incidents/1/ack";
    let (status, page) = post(&relay, &alice.cookie, ack, &[("csrf", &alice.csrf)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("Session expired"), "{page}");
}

#[tokio::test]
async fn over_tls_the_session_cookie_is_secure() {
    let hook = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    std::fs::write(dir.path().join("server.pem"), cert.pem()).expect("cert");
    std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("key");
    let web = format!(
        "tls_server_config: {{ cert_file: '{}', key_file: '{}' }}\n",
        dir.path().join("server.pem").display(),
        dir.path().join("server.key").display()
    );
    let relay = Relay::start_with_web_config(dir.path(), &config(&hook), &web);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).expect("ca"))
        .resolve("localhost", relay.addr)
        .build()
        .expect("client");
    let base = format!("https://localhost:{}", relay.addr.port());
    let (_, header) = sign_in_at(&http, &base, "alice", PASSWORD)
        .await
        .expect("alice");
    assert!(header.contains("; Secure"), "{header}");
}

#[tokio::test]
async fn on_postgresql_a_session_works_on_every_instance() {
    let hook = Fake::start(Reply::new(200, "")).await;
    let pg = crate::support::postgres("console_sessions_shared");
    let config = config_on(&hook, &pg.storage);
    let dirs = (tempdir(), tempdir());
    let a = Relay::start(dirs.0.path(), &config);
    a.wait_metric("alert_relay_leader", 1.0).await;
    let b = Relay::start(dirs.1.path(), &config);
    let alice = sign_in(&a, "alice", PASSWORD).await.expect("alice");
    // Signed in on the leader, the follower knows the session; an alert taken by the
    // follower is listed by the leader and acknowledged through the follower.
    assert_eq!(get(&b, &alice.cookie, "/ui/").await.0, StatusCode::OK);
    b.fire(crate::support::webhook(&[("f1", "firing")], ""))
        .await;
    hook.wait_for(1, Duration::from_secs(10)).await;
    let (_, list) = get(&a, &alice.cookie, "/ui/incidents/list").await;
    assert!(list.contains("PiHot"), "{list}");
    let ack = "/ui/incidents/1/ack";
    let (status, _) = post(&b, &alice.cookie, ack, &[("csrf", &alice.csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(a.incident(1).await["acked_by"], "alice (console)");
    // Signed out on one, signed out on both.
    let (status, _) = post(&b, &alice.cookie, "/ui/logout", &[("csrf", &alice.csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        get(&a, &alice.cookie, "/ui/").await.0,
        StatusCode::SEE_OTHER
    );
}
