//! TLS and client certificates (mTLS) on the webhook listener.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{Fake, Relay, Reply, tempdir, webhook};

#[tokio::test]
async fn mtls_admits_only_clients_with_a_certificate_from_the_ca() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("ca key"))
            .expect("ca");
    let sign = |names: Vec<String>| {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &ca)
            .expect("sign");
        (cert, key)
    };
    let (server_cert, server_key) = sign(vec!["localhost".into()]);
    let (client_cert, client_key) = sign(vec!["alertmanager.example".into()]);
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("server.pem", server_cert.pem()),
        ("server.key", server_key.serialize_pem()),
    ] {
        std::fs::write(dir.path().join(name), pem).expect("write pem");
    }
    let relay = Relay::start_with_web_config(
        dir.path(),
        &format!(
            "storage: {{ sqlite: relay.db }}\n\
             channels: {{ hook: {{ type: webhook, url: '{}/h' }} }}\npolicies: {{ p: {{ steps: [ {{ notify: [hook] }} ] }} }}\n\
             routes: [ {{ policy: p }} ]\n",
            fake.url()
        ),
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
    );
    let addr = relay.addr;
    let ca_der = ca.der().clone();
    let body = webhook(&[("00000000000000c9", "firing")], "");
    let (with_cert, without_cert, plain) = tokio::task::spawn_blocking(move || {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der).expect("root");
        let post = |client: Option<(&rcgen::Certificate, &rcgen::KeyPair)>| -> Result<String, String> {
            let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots.clone());
            let config = match client {
                Some((cert, key)) => builder
                    .with_client_auth_cert(
                        vec![cert.der().clone()],
                        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
                    )
                    .expect("client auth"),
                None => builder.with_no_client_auth(),
            };
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
            let tcp = TcpStream::connect(addr).expect("connect");
            tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let request = format!(
                "POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            tls.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
            let mut response = String::new();
            tls.read_to_string(&mut response).map_err(|e| e.to_string())?;
            Ok(response)
        };
        let with_cert = post(Some((&client_cert, &client_key)));
        let without_cert = post(None);
        let mut plain = TcpStream::connect(addr).expect("connect");
        plain.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let _ = plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer);
        (with_cert, without_cert, answer)
    })
    .await
    .expect("join");
    let with_cert = with_cert.expect("mTLS request");
    assert!(with_cert.starts_with("HTTP/1.1 200"), "{with_cert}");
    assert!(
        without_cert.is_err(),
        "a client without a certificate must be refused: {without_cert:?}"
    );
    assert!(
        !plain.starts_with(b"HTTP/1.1 200"),
        "plain HTTP on the TLS port"
    );
    fake.wait_for(1, Duration::from_secs(5)).await;
}
