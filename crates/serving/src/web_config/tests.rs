//! End-to-end tests: config files on disk, certificates made by rcgen, TLS over loopback.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::HeaderMap;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A certificate and its key, as DER for the test client and as PEM files for the config.
struct Identity {
    cert: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Identity {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key_der.clone()).into()
    }
}

/// Two CAs and certificates from them, written to a temporary directory:
/// `ca.crt`; `server.{crt,key}` (localhost, 127.0.0.1); `client.{crt,key}`
/// (prometheus.example, 127.0.0.9) and `intruder.{crt,key}` (intruder.example) from that CA;
/// `rogue.{crt,key}` (prometheus.example) from another CA.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertificateDer<'static>,
    client: Identity,
    intruder: Identity,
    rogue: Identity,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert")
}

fn issue(
    ca: &CertifiedIssuer<'static, KeyPair>,
    sans: &[&str],
    dir: &Path,
    name: &str,
) -> Identity {
    let key = KeyPair::generate().expect("key");
    let sans: Vec<String> = sans.iter().map(|san| (*san).to_owned()).collect();
    let cert = CertificateParams::new(sans)
        .expect("params")
        .signed_by(&key, &**ca)
        .expect("sign");
    write(&dir.join(format!("{name}.crt")), &cert.pem());
    write(&dir.join(format!("{name}.key")), &key.serialize_pem());
    Identity {
        cert: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let authority = ca("test CA");
        write(&dir.path().join("ca.crt"), &authority.pem());
        issue(
            &authority,
            &["localhost", "127.0.0.1"],
            dir.path(),
            "server",
        );
        let client = issue(
            &authority,
            &["prometheus.example", "127.0.0.9"],
            dir.path(),
            "client",
        );
        let intruder = issue(&authority, &["intruder.example"], dir.path(), "intruder");
        let rogue = issue(
            &ca("rogue CA"),
            &["prometheus.example"],
            dir.path(),
            "rogue",
        );
        Self {
            ca: authority.der().clone(),
            dir,
            client,
            intruder,
            rogue,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `web.yml` and loads it.
    fn load(&self, yaml: &str) -> Result<WebConfig, WebConfigError> {
        write(&self.path("web.yml"), yaml);
        WebConfig::load(&self.path("web.yml"))
    }
}

/// Writes as editors and config managers do: a new file renamed over the old one.
fn write(path: &Path, contents: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents).expect("write");
    std::fs::rename(&temporary, path).expect("rename");
}

const SERVER_TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

/// A TLS handshake over loopback; the server side's verdict (handshake, then
/// `check_client_cert`). The client offers h2 too, to see that only HTTP/1.1 is agreed.
async fn handshake(
    web: Arc<ActiveWebConfig>,
    ca: &CertificateDer<'static>,
    client: Option<&Identity>,
) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let acceptor = web.tls_acceptor().expect("TLS enabled").clone();

    let server = async {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        web.check_client_cert(conn)?;
        tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())
    };

    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("CA");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut config = match client {
        Some(identity) => builder
            .with_client_auth_cert(vec![identity.cert.clone()], identity.key())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let client = async {
        let tcp = TcpStream::connect(address).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        // The client's verdict is not asserted: with TLS 1.3 it only learns of a rejected
        // certificate on its first read. Reading just keeps the server's writes flowing.
        if let Ok(mut tls) = connector.connect(name, tcp).await {
            let mut answer = Vec::new();
            let _ = tls.read_to_end(&mut answer).await;
        }
    };

    let (verdict, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(server, client)
    })
    .await
    .expect("handshake timed out");
    verdict
}

fn basic(user: &str, password: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let value = format!("Basic {encoded}").parse().expect("header value");
    headers.insert(http::header::AUTHORIZATION, value);
    headers
}

fn users_yaml(users: &[(&str, &str)]) -> String {
    let mut yaml = "basic_auth_users:\n".to_owned();
    for (user, password) in users {
        let hash = bcrypt::hash(password, 4).expect("hash");
        yaml.push_str(&format!("  {user}: {hash}\n"));
    }
    yaml
}

#[test]
fn usable_from_spawned_tasks() {
    fn shared<T: Send + Sync>(_: &T) {}
    fn sent<T: Send>(_: T) {}
    let web = WebConfig::disabled();
    shared(&web);
    let headers = HeaderMap::new();
    // hyper runs the service on spawned tasks, so the future must not hold a std lock guard.
    sent(web.current().authorize(&headers));
}

#[tokio::test]
async fn disabled_is_plain_http_without_auth() {
    let web = WebConfig::disabled();
    let active = web.current();
    assert!(active.tls_acceptor().is_none());
    assert!(headers_set_by(&active).is_empty());
    assert_eq!(active.authorize(&HeaderMap::new()).await, Ok(()));
    assert!(web.last_reload_successful());
}

#[tokio::test]
async fn tls_handshake_with_files_relative_to_the_config() {
    let pki = Pki::new();
    // Loaded by absolute path while the tests run elsewhere: `server.crt` must be found next
    // to web.yml, not in the working directory.
    let web = pki.load(SERVER_TLS).expect("valid config");
    assert_eq!(handshake(web.current(), &pki.ca, None).await, Ok(()));
    // Without client auth, a client certificate is not asked for and not held against anyone.
    assert_eq!(
        handshake(web.current(), &pki.ca, Some(&pki.rogue)).await,
        Ok(())
    );
}

#[tokio::test]
async fn tls_handshake_with_inline_pem() {
    let pki = Pki::new();
    let indent = |path: &str| {
        let pem = std::fs::read_to_string(pki.path(path)).expect("PEM");
        pem.lines()
            .map(|line| format!("    {line}\n"))
            .collect::<String>()
    };
    let yaml = format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}",
        indent("server.crt"),
        indent("server.key")
    );
    let web = pki.load(&yaml).expect("valid config");
    assert_eq!(handshake(web.current(), &pki.ca, None).await, Ok(()));
}

#[tokio::test]
async fn require_and_verify_client_cert() {
    let pki = Pki::new();
    let web = pki
        .load(&format!(
            "{SERVER_TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
        ))
        .expect("valid config");
    assert!(
        handshake(web.current(), &pki.ca, None).await.is_err(),
        "no certificate"
    );
    assert!(
        handshake(web.current(), &pki.ca, Some(&pki.rogue))
            .await
            .is_err(),
        "other CA"
    );
    assert_eq!(
        handshake(web.current(), &pki.ca, Some(&pki.client)).await,
        Ok(())
    );
}

#[tokio::test]
async fn verify_client_cert_if_given() {
    let pki = Pki::new();
    let web = pki
        .load(&format!(
            "{SERVER_TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n"
        ))
        .expect("valid config");
    assert_eq!(handshake(web.current(), &pki.ca, None).await, Ok(()));
    assert!(
        handshake(web.current(), &pki.ca, Some(&pki.rogue))
            .await
            .is_err(),
        "other CA"
    );
    assert_eq!(
        handshake(web.current(), &pki.ca, Some(&pki.client)).await,
        Ok(())
    );
}

#[tokio::test]
async fn client_allowed_sans() {
    let pki = Pki::new();
    let mtls = format!(
        "{SERVER_TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
    );
    for allowed in [
        "[prometheus.example]",
        "[\"127.0.0.9\"]",
        "[PROMETHEUS.example, other]",
    ] {
        let web = pki
            .load(&format!("{mtls}  client_allowed_sans: {allowed}\n"))
            .expect("valid config");
        assert_eq!(
            handshake(web.current(), &pki.ca, Some(&pki.client)).await,
            Ok(()),
            "{allowed}"
        );
        let refused = handshake(web.current(), &pki.ca, Some(&pki.intruder)).await;
        let reason = refused.expect_err("intruder's certificate lacks the SAN");
        assert!(reason.contains("allowed SANs"), "{reason}");
    }
}

#[tokio::test]
async fn authorize_checks_rate_limit_then_basic_auth() {
    let pki = Pki::new();
    let yaml = format!(
        "{}rate_limit:\n  interval: 2s\n  burst: 3\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
        users_yaml(&[("alice", "wonderland")])
    );
    let web = pki.load(&yaml).expect("valid config");
    let active = web.current();
    assert!(active.tls_acceptor().is_none(), "no TLS keys: plain HTTP");
    assert_eq!(headers_set_by(&active).len(), 1);

    assert_eq!(
        active.authorize(&HeaderMap::new()).await,
        Err(Rejection::Unauthorized)
    );
    assert_eq!(
        active.authorize(&basic("alice", "wonderland")).await,
        Ok(())
    );
    assert_eq!(
        active.authorize(&basic("alice", "wonderland")).await,
        Ok(())
    );
    // Out of tokens: rejected before the credentials are even looked at.
    assert_eq!(
        active.authorize(&basic("alice", "wonderland")).await,
        Err(Rejection::RateLimited)
    );
    assert_eq!(
        active.authorize(&HeaderMap::new()).await,
        Err(Rejection::RateLimited)
    );
    // The interval is long enough that bcrypt in a debug build cannot refill a token early.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        active.authorize(&basic("alice", "wonderland")).await,
        Ok(())
    );
    assert_eq!(
        active.authorize(&basic("alice", "wonderland")).await,
        Err(Rejection::RateLimited)
    );
}

#[tokio::test]
async fn reload_follows_the_files_and_keeps_the_last_good_config() {
    let pki = Pki::new();
    let config = |users: &[(&str, &str)]| format!("{SERVER_TLS}{}", users_yaml(users));
    let web = pki.load(&config(&[("alice", "a")])).expect("valid config");
    assert_eq!(web.current().authorize(&basic("alice", "a")).await, Ok(()));
    assert!(
        Arc::ptr_eq(&web.current(), &web.current()),
        "unchanged: no reload"
    );

    write(&pki.path("web.yml"), &config(&[("bob", "b")]));
    let active = web.current();
    assert_eq!(
        active.authorize(&basic("alice", "a")).await,
        Err(Rejection::Unauthorized)
    );
    assert_eq!(active.authorize(&basic("bob", "b")).await, Ok(()));
    assert!(web.last_reload_successful());

    // Invalid: bob stays in, and the failure is visible.
    write(&pki.path("web.yml"), "basic_auth_users: [not, a, map]\n");
    let kept = web.current();
    assert!(Arc::ptr_eq(&kept, &active), "previous config kept");
    assert_eq!(kept.authorize(&basic("bob", "b")).await, Ok(()));
    assert!(!web.last_reload_successful());
    assert!(
        Arc::ptr_eq(&web.current(), &active),
        "not retried until the file changes"
    );
    assert!(!web.last_reload_successful());

    write(&pki.path("web.yml"), &config(&[("carol", "c")]));
    let fixed = web.current();
    assert_eq!(fixed.authorize(&basic("carol", "c")).await, Ok(()));
    assert_eq!(
        fixed.authorize(&basic("bob", "b")).await,
        Err(Rejection::Unauthorized)
    );
    assert!(web.last_reload_successful());

    // A file the config names counts too: a broken certificate is refused...
    let good_cert = std::fs::read_to_string(pki.path("server.crt")).expect("cert");
    write(&pki.path("server.crt"), "not a certificate\n");
    assert!(Arc::ptr_eq(&web.current(), &fixed));
    assert!(!web.last_reload_successful());
    // ...and a good one (here: the same again, as after a renewal) is taken.
    write(&pki.path("server.crt"), &good_cert);
    let renewed = web.current();
    assert!(!Arc::ptr_eq(&renewed, &fixed));
    assert!(web.last_reload_successful());
    assert_eq!(handshake(renewed, &pki.ca, None).await, Ok(()));
}

#[tokio::test]
async fn reload_notices_a_missing_file_appearing() {
    let pki = Pki::new();
    let web = pki.load(SERVER_TLS).expect("valid config");
    let before = web.current();
    write(
        &pki.path("web.yml"),
        &format!(
            "{SERVER_TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: new-ca.crt\n"
        ),
    );
    assert!(
        Arc::ptr_eq(&web.current(), &before),
        "new-ca.crt does not exist yet"
    );
    assert!(!web.last_reload_successful());

    std::fs::copy(pki.path("ca.crt"), pki.path("new-ca.crt")).expect("copy");
    let after = web.current();
    assert!(!Arc::ptr_eq(&after, &before));
    assert!(web.last_reload_successful());
    assert!(
        handshake(after, &pki.ca, None).await.is_err(),
        "client certificate now required"
    );
}

#[test]
fn config_errors_name_the_key() {
    let pki = Pki::new();
    for (yaml, expected) in [
        (
            "tls_server_config:\n  cert_fil: server.crt\n".to_owned(),
            "cert_fil",
        ),
        (
            "http_server_config:\n  headers:\n    Server: pi\n".to_owned(),
            "http_server_config.headers.Server",
        ),
        (
            format!("{SERVER_TLS}  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n"),
            "tls_server_config.cipher_suites",
        ),
        (
            format!("{SERVER_TLS}  client_auth_type: RequestClientCert\n"),
            "tls_server_config.client_auth_type",
        ),
        (
            "tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n".to_owned(),
            "tls_server_config.cert_file",
        ),
        (
            "tls_server_config:\n  key_file: server.key\n".to_owned(),
            "tls_server_config.cert_file",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n".to_owned(),
            "TLS: the private key (tls_server_config.key_file) does not belong",
        ),
        (
            "basic_auth_users:\n  alice: hunter2\n".to_owned(),
            "basic_auth_users.alice",
        ),
        (
            "rate_limit:\n  interval: 1s\n".to_owned(),
            "rate_limit.burst",
        ),
        ("basic_auth_users: [\n".to_owned(), "web.yml"),
    ] {
        let error = pki.load(&yaml).map(|_| ()).expect_err(&yaml).to_string();
        assert!(error.contains(expected), "{yaml}\n=> {error}");
    }
    let missing = WebConfig::load(&pki.path("absent.yml"))
        .map(|_| ())
        .expect_err("absent");
    assert!(missing.to_string().contains("absent.yml"), "{missing}");
}

#[test]
fn missing_cert_file_error_names_key_and_path() {
    let pki = Pki::new();
    let error = pki
        .load("tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n")
        .map(|_| ())
        .expect_err("missing file")
        .to_string();
    let path = pki.path("nope.crt");
    assert!(
        error.starts_with(&format!(
            "tls_server_config.cert_file: cannot read {}:",
            path.display()
        )),
        "{error}"
    );
}

/// The headers `active` sets on a response.
fn headers_set_by(active: &ActiveWebConfig) -> HeaderMap {
    let mut response = http::Response::new(());
    active.apply_headers(&mut response);
    response.headers().clone()
}
