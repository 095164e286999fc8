//! The HTTP face of the binary: routes, methods, limits, compression, health, auth, TLS,
//! reload and shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{Exporter, sample_value};

#[test]
fn routes_methods_and_bodies() {
    let exporter = Exporter::on_fixture("pi4-sd", &[]);
    let landing = exporter.get("/", &[]);
    assert_eq!(landing.status, 200);
    assert!(landing.text().contains("href=\"/metrics\""));
    assert_eq!(exporter.get("/healthz", &[]).status, 200);
    assert_eq!(exporter.get("/nope", &[]).status, 404);

    let post = exporter.raw(
        b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));

    let with_body = exporter.raw(
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(with_body.status, 413);

    let head = exporter.raw(b"HEAD /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    let garbage = exporter.raw(b"\x16\x03\x01\x02\x00garbage that is not http\r\n\r\n");
    assert_eq!(garbage.status, 400);
}

#[test]
fn gzip_is_served_when_accepted() {
    let exporter = Exporter::on_fixture("pi4-sd", &[]);
    let response = exporter.get("/metrics", &[("Accept-Encoding", "gzip")]);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(response.body.as_slice())
        .read_to_string(&mut text)
        .expect("valid gzip");
    assert!(text.contains("rpi_exporter_build_info"));
}

#[test]
fn health_summarises_the_fixture() {
    let exporter = Exporter::on_fixture("pi4-sd", &[]);
    let response = exporter.get("/health", &[]);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let health: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
    assert_eq!(health["status"], "warning");
    let root = health["filesystems"]
        .as_array()
        .and_then(|fss| fss.iter().find(|fs| fs["mountpoint"] == "/"))
        .expect("root filesystem in /health");
    assert_eq!(
        root["readonly"], true,
        "the pi4-sd fixture's root is mounted ro: {health}"
    );
    assert!(
        health["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w == "/ is mounted read-only"))
    );
    // From the thermal zone: the fixture has no /dev/vcio.
    assert_eq!(health["soc_temperature_celsius"], 52.582, "{health}");
}

#[test]
fn slow_clients_are_cut_off() {
    let exporter = Exporter::on_fixture("pi4-sd", &["--web.read-header-timeout=1s"]);
    let mut stream = TcpStream::connect(exporter.addr).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: slow")
        .expect("partial head");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "slowloris connection held {:?}",
        started.elapsed()
    );
    // The server still answers others.
    assert_eq!(exporter.get("/healthz", &[]).status, 200);
}

#[test]
fn systemd_hears_ready_then_watchdog_pings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let root = crate::support::fixture("pi4-sd");
    let procfs = format!("--path.procfs={}", root.join("proc").display());
    let sysfs = format!("--path.sysfs={}", root.join("sys").display());
    let rootfs = format!("--path.rootfs={}", root.join("rootfs").display());
    let devfs = format!("--path.devfs={}", root.join("dev").display());
    let notify_socket = socket_path.display().to_string();
    // A 1 s watchdog: the exporter must ping about every 0.5 s while its self-check passes.
    let _exporter = Exporter::start_with_env(
        &[&procfs, &sysfs, &rootfs, &devfs],
        &[
            ("NOTIFY_SOCKET", &notify_socket),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let mut messages = Vec::new();
    let mut buf = [0u8; 512];
    let started = Instant::now();
    while messages
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 2
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "notifications so far: {messages:?}"
        );
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        messages[0].contains("READY=1"),
        "READY=1 must come first: {messages:?}"
    );
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut exporter = Exporter::on_fixture("pi4-sd", &[]);
    assert_eq!(exporter.get("/healthz", &[]).status, 200);
    let status = exporter.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

fn write_web_config(dir: &std::path::Path, yaml: &str) -> std::path::PathBuf {
    let path = dir.join("web.yml");
    // Write then rename, as config management does, so the exporter never reads half a file.
    let tmp = dir.join("web.yml.tmp");
    std::fs::write(&tmp, yaml).expect("write web config");
    std::fs::rename(&tmp, &path).expect("rename web config");
    path
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn basic_auth_rate_limit_and_reload_without_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let config = write_web_config(
        dir.path(),
        &format!("basic_auth_users:\n  prometheus: {hash}\n"),
    );
    let arg = format!("--web.config.file={}", config.display());
    let exporter = Exporter::on_fixture("pi4-sd", &[&arg]);

    let anonymous = exporter.get("/metrics", &[]);
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header("www-authenticate"), Some("Basic"));
    assert_eq!(
        exporter
            .get(
                "/metrics",
                &[("Authorization", &basic("prometheus", "wrong"))]
            )
            .status,
        401
    );
    assert_eq!(
        exporter
            .get(
                "/metrics",
                &[("Authorization", &basic("mallory", "s3cret"))]
            )
            .status,
        401
    );
    assert_eq!(
        exporter
            .get("/metrics", &[("Authorization", "Basic !!!not-base64")])
            .status,
        401
    );
    let ok = exporter.get(
        "/metrics",
        &[("Authorization", &basic("prometheus", "s3cret"))],
    );
    assert_eq!(ok.status, 200);
    assert_eq!(
        sample_value(&ok.text(), "rpi_exporter_web_config_last_reload_successful"),
        Some(1.0)
    );

    // Swap auth for a rate limit and a security header; no restart.
    write_web_config(
        dir.path(),
        "rate_limit:\n  interval: 1m\n  burst: 2\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
    );
    let first = exporter.get("/healthz", &[]);
    assert_eq!(first.status, 200, "auth must be gone after reload");
    assert_eq!(first.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(exporter.get("/healthz", &[]).status, 200);
    assert_eq!(exporter.get("/healthz", &[]).status, 429);

    // A broken file keeps the last good configuration in force and says so.
    write_web_config(dir.path(), "rate_limit: [this is not a map\n");
    assert_eq!(exporter.get("/healthz", &[]).status, 429);
}

#[test]
fn broken_web_config_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_web_config(dir.path(), "basic_auth_user:\n  typo: x\n");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pi-exporter"))
        .args([
            "--web.listen-address=127.0.0.1:0",
            &format!("--web.config.file={}", config.display()),
        ])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr) + String::from_utf8_lossy(&output.stdout);
    assert!(
        stderr.contains("basic_auth_user"),
        "error must name the bad key: {stderr}"
    );
}

#[test]
fn tls_and_client_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("ca key"))
            .expect("ca cert");
    let sign = |names: Vec<String>| {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &ca)
            .expect("sign");
        (cert, key)
    };
    let (server_cert, server_key) = sign(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert, client_key) = sign(vec!["prometheus.example".into()]);
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("server.pem", server_cert.pem()),
        ("server.key", server_key.serialize_pem()),
    ] {
        std::fs::write(dir.path().join(name), pem).expect("write pem");
    }
    let config = write_web_config(
        dir.path(),
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
    );
    let arg = format!("--web.config.file={}", config.display());
    let exporter = Exporter::on_fixture("pi4-sd", &[&arg]);

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("root");
    let tls_get =
        |client_auth: Option<(&rcgen::Certificate, &rcgen::KeyPair)>| -> Result<String, String> {
            let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots.clone());
            let config = match client_auth {
                Some((cert, key)) => builder
                    .with_client_auth_cert(
                        vec![cert.der().clone()],
                        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
                            .expect("key der"),
                    )
                    .expect("client auth"),
                None => builder.with_no_client_auth(),
            };
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
            let tcp = TcpStream::connect(exporter.addr).expect("connect");
            tcp.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut response = String::new();
            tls.read_to_string(&mut response)
                .map_err(|e| e.to_string())?;
            Ok(response)
        };

    let with_cert = tls_get(Some((&client_cert, &client_key))).expect("mTLS request");
    assert!(with_cert.starts_with("HTTP/1.1 200"), "{with_cert}");
    assert!(
        tls_get(None).is_err(),
        "a client without a certificate must be refused"
    );
    // Plain HTTP to a TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(exporter.addr).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"));
}
