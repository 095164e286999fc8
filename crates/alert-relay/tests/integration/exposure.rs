//! What the relay shows of itself to whoever can reach it or read its output: a listener
//! beyond loopback needs authentication, every 401 names its scheme, and no configuration
//! error, reload or `check-config` line prints a secret.

use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{Relay, binary, client, tempdir};

const ROUTING: &str = "storage: { sqlite: relay.db }\n\
    channels: { hook: { type: webhook, url: 'http://127.0.0.1:9/h' } }\n\
    policies: { p: { steps: [ { notify: [hook] } ] } }\nroutes: [ { policy: p } ]\n";

fn relay_cmd(args: &[&str], config: &str) -> Output {
    let dir = tempdir();
    let path = dir.path().join("relay.yml");
    std::fs::write(&path, config).expect("write");
    Command::new(binary())
        .args(args)
        .arg(&path)
        .output()
        .expect("run alert-relay")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_network_listener_without_auth_is_refused_unless_declared() {
    // The relay refuses before it binds: nothing listens beyond loopback in this test.
    let open = format!("listen: 0.0.0.0:0\n{ROUTING}");
    for args in [&["run", "--config"][..], &["check-config"][..]] {
        let out = relay_cmd(args, &open);
        assert!(
            !out.status.success(),
            "{args:?} accepted it: {}",
            text(&out)
        );
        assert!(
            text(&out).contains("auth: required: listen 0.0.0.0:0 is reachable"),
            "{}",
            text(&out)
        );
    }
    let dir = tempdir();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config: { cert_file: s.pem, key_file: s.key, client_auth_type: RequireAndVerifyClientCert, client_ca_file: ca.pem }\n",
    )
    .expect("web config");
    let path = dir.path().join("relay.yml");
    std::fs::write(&path, &open).expect("config");
    let certs = Command::new(binary())
        .arg("check-config")
        .arg(&path)
        .arg("--web.config.file")
        .arg(&web)
        .output()
        .expect("check-config");
    assert!(
        certs.status.success(),
        "client certificates authenticate: {}",
        text(&certs)
    );
    assert!(text(&certs).contains("(TLS with client certificates, no authentication)"));
    let declared = relay_cmd(
        &["check-config"],
        &format!("listen: 0.0.0.0:0\nauth: none\n{ROUTING}"),
    );
    assert!(declared.status.success(), "{}", text(&declared));
    assert!(
        text(&declared).contains(
            "listen: 0.0.0.0:0 (plain HTTP, auth: none)\nwarning: auth: none on 0.0.0.0:0"
        ),
        "{}",
        text(&declared)
    );
}

#[test]
fn configuration_errors_and_check_config_print_no_secret() {
    let typo = format!("auth:\n  bearer_token: tok-hunter2-xyz\n  bearer_tokn: x\n{ROUTING}");
    let syntax = format!("auth:\n  bearer_token: tok-hunter2-xyz\n   oops: [\n{ROUTING}");
    for config in [&typo, &syntax] {
        for args in [&["run", "--config"][..], &["check-config"][..]] {
            let out = relay_cmd(args, config);
            assert!(!out.status.success());
            let all = text(&out);
            assert!(
                !all.contains("hunter2"),
                "{args:?} printed the token:\n{all}"
            );
            assert!(all.contains("line 3") || all.contains("line 4"), "{all}");
        }
    }
    let urls = ROUTING.replace(
        "url: 'http://127.0.0.1:9/h' }",
        "url: 'http://127.0.0.1:9/h', api_url: 'https://relay:hunter2@proxy.example/p?sig=hunter2' }",
    );
    let out = relay_cmd(&["check-config"], &urls);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("hunter2"), "{}", text(&out));
    assert!(
        text(&out).contains("api_url https://relay:<redacted>@proxy.example/p?sig=<redacted>"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn a_broken_reload_prints_no_secret() {
    let dir = tempdir();
    let path = dir.path().join("relay.yml");
    let good = format!("listen: 127.0.0.1:0\nauth: {{ bearer_token: tok-hunter2-xyz }}\n{ROUTING}");
    std::fs::write(&path, &good).expect("write");
    let relay = Relay::start_file(&path);
    let broken = good.replace(
        "bearer_token: tok-hunter2-xyz }",
        "bearer_token: tok-hunter2-xyz, bearer_tokn: x }",
    );
    std::fs::write(&path, broken).expect("write");
    let _ = Command::new("kill")
        .args(["-HUP", &relay.child.id().to_string()])
        .status();
    relay
        .wait_log("invalid configuration, keeping the previous one")
        .await;
    let log = relay.log.lock().expect("log").join("\n");
    assert!(!log.contains("hunter2"), "{log}");
    assert!(log.contains("auth.bearer_tokn: unknown field"), "{log}");
}

#[tokio::test]
async fn every_401_names_its_scheme() {
    let cases = [
        ("auth: { bearer_token: s3cret }\n", "Bearer"),
        (
            "auth: { basic: { username: am, password: pw } }\n",
            "Basic realm=\"alert-relay\"",
        ),
    ];
    for (auth, challenge) in cases {
        let dir = tempdir();
        let relay = Relay::start(dir.path(), &format!("{auth}{ROUTING}"));
        for (method, path) in [
            ("POST", "/webhook"),
            ("GET", "/api/v1/incidents"),
            ("GET", "/api/v1/incidents/1"),
            ("POST", "/api/v1/incidents/1/resolve"),
            ("GET", "/api/v1/storms/1"),
            ("POST", "/api/v1/storms/1/ack"),
            ("GET", "/api/v1/rotations"),
            ("GET", "/api/v1/rotations/primary.ics"),
        ] {
            let r = client()
                .request(method.parse().expect("method"), relay.url(path))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .expect("request");
            assert_eq!(r.status(), 401, "{method} {path}");
            assert_eq!(
                r.headers()["www-authenticate"],
                challenge,
                "{method} {path}"
            );
        }
    }
}

#[test]
fn the_listeners_tls_lives_in_the_web_configuration() {
    let out = relay_cmd(
        &["check-config"],
        &format!("tls: {{ cert_file: c.pem, key_file: k.pem }}\n{ROUTING}"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("tls: moved: the listener's TLS is set in the web configuration file"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn web_config_users_guard_what_has_no_auth_of_its_own() {
    let dir = tempdir();
    let hash = bcrypt::hash("pw", 4).expect("hash");
    let web = format!(
        "basic_auth_users:\n  prom: {hash}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    );
    let relay = Relay::start_with_web_config(
        dir.path(),
        &format!("auth: {{ bearer_token: s3cret }}\n{ROUTING}"),
        &web,
    );
    let get = |path: &str, user: Option<&str>| {
        let mut r = client().get(relay.url(path));
        if let Some(u) = user {
            r = r.basic_auth(u, Some("pw"));
        }
        r.send()
    };
    for path in ["/metrics", "/healthz", "/"] {
        let anonymous = get(path, None).await.expect("get");
        assert_eq!(anonymous.status(), 401, "{path}");
        assert_eq!(anonymous.headers()["www-authenticate"], "Basic");
        assert_eq!(anonymous.headers()["x-frame-options"], "deny");
        assert_eq!(
            get(path, Some("prom")).await.expect("get").status(),
            200,
            "{path}"
        );
    }
    // The webhook keeps the relay's bearer token; ack links and Twilio carry their own proof.
    relay
        .fire(crate::support::webhook(
            &[("00000000000000e1", "firing")],
            "",
        ))
        .await;
    assert_eq!(get("/ack/1.2.x", None).await.expect("get").status(), 403);
    let twilio = client()
        .post(relay.url("/inbound/twilio/nope"))
        .send()
        .await
        .expect("post");
    assert_eq!(twilio.status(), 403);
}
