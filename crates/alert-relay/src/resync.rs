//! Re-sync with Alertmanager: with `alertmanager.url` set, the relay polls
//! `GET /api/v2/alerts` at start-up and every `alertmanager.interval`, and resolves the open
//! or acknowledged incidents none of whose firing alerts (by fingerprint) Alertmanager still
//! has as active: a resolved notification lost while the relay was down, or an alert a human
//! silenced (state `suppressed` counts as gone, like inhibited ones).
//!
//! The race: an alert that reaches Alertmanager after its answer was built can reach the relay
//! before the answer is used. So the watermark (the newest stored event id, and the wall
//! clock) is taken before the request, and an incident whose group received any event after
//! it is left alone ([`Write::ResolveStale`](crate::store::Write::ResolveStale), checked in
//! the same transaction as the resolve). One relay on SQLite commits in id order; with
//! several relays on one database, events commit out of id order and a webhook's transaction may have stamped its time before the
//! watermark and commit after it; the clock watermark is set [`IN_FLIGHT_MS`] back to cover
//! such a transaction (an incident that received an event within it is resolved one poll
//! later). A failed poll changes nothing.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::Notify;

use crate::config::{AlertmanagerApi, Auth};
use crate::escalation::Escalator;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::payload::{Labels, fingerprint_of};
use crate::store::{Store, StoreError, Transitioned};
use crate::time::now_millis;

/// Who resolved, as recorded and announced.
pub const RESOLVED_BY: &str = "re-sync (Alertmanager no longer has this alert)";
/// How long before the poll an event may have been stamped and still be committing (several
/// relays on one database): longer
/// than any transaction can stay open (a connection that stops answering ends after its
/// 10 s TCP user timeout).
const IN_FLIGHT_MS: i64 = 60_000;
/// Largest answer accepted: thousands of alerts are a few MiB.
const MAX_BODY: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error("cannot reach Alertmanager: {0}")]
    Http(String),
    #[error("Alertmanager answered HTTP {0}")]
    Status(u16),
    #[error("Alertmanager's answer is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("Alertmanager's answer is not a list of alerts: {0}")]
    Malformed(String),
    #[error("cannot read {path}: {message}")]
    Ca { path: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One alert of `GET /api/v2/alerts` (`gettableAlert`): only what re-sync needs.
#[derive(Debug, Deserialize)]
struct ApiAlert {
    fingerprint: String,
    status: ApiStatus,
    #[serde(default)]
    labels: Labels,
}

#[derive(Debug, Deserialize)]
struct ApiStatus {
    /// `unprocessed`, `active` or `suppressed`.
    state: String,
}

/// Fingerprints Alertmanager has as active (or not yet processed, so possibly active).
/// Silenced and inhibited alerts (`suppressed`) are left out: for the relay they are gone.
/// Each alert also counts under the relay's stand-in fingerprint of its labels, which the
/// relay stored for webhooks of an Alertmanager older than 0.19 (they carry none).
pub fn active_fingerprints(body: &[u8]) -> Result<HashSet<String>, ResyncError> {
    let alerts: Vec<ApiAlert> =
        serde_json::from_slice(body).map_err(|e| ResyncError::Malformed(e.to_string()))?;
    Ok(alerts
        .into_iter()
        .filter(|a| a.status.state != "suppressed")
        .flat_map(|a| [fingerprint_of(&a.labels), a.fingerprint])
        .collect())
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Synced {
    /// Alerts Alertmanager has as active.
    pub active: usize,
    /// Incidents resolved.
    pub resolved: Vec<i64>,
    /// Incidents left alone because their group received an alert during the poll.
    pub raced: Vec<i64>,
}

#[derive(Debug)]
pub struct Resync {
    store: Store,
    escalator: Arc<Escalator>,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    wake: Notify,
    /// The client for `tls.ca_file`, rebuilt only when the file changes.
    ca_client: std::sync::Mutex<Option<(CaStamp, reqwest::Client)>>,
}

/// Which CA file a client was built from, and its modification time and size then.
type CaStamp = (std::path::PathBuf, Option<std::time::SystemTime>, u64);

impl Resync {
    pub fn new(
        store: Store,
        escalator: Arc<Escalator>,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        http: reqwest::Client,
    ) -> Arc<Self> {
        Arc::new(Resync {
            store,
            escalator,
            live,
            metrics,
            http,
            wake: Notify::new(),
            ca_client: std::sync::Mutex::new(None),
        })
    }

    /// A reload may have enabled re-sync.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Polls at once, then every interval, until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        loop {
            let Some(api) = self.live.config().alertmanager.clone() else {
                self.wake.notified().await;
                continue;
            };
            match self.poll(&api).await {
                Ok(s) => {
                    #[allow(clippy::cast_precision_loss)]
                    self.metrics
                        .resync_last_success
                        .set(now_millis() as f64 / 1000.0);
                    tracing::debug!(active = s.active, resolved = ?s.resolved, raced = ?s.raced, "re-synced with Alertmanager");
                }
                Err(e) => {
                    self.metrics.resync_errors.inc();
                    tracing::warn!("re-sync with Alertmanager failed, nothing changed: {e}");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(api.interval) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// One poll: fetches the active alerts and resolves the incidents Alertmanager no longer
    /// has. Any failure before the answer is complete changes nothing.
    pub async fn poll(&self, api: &AlertmanagerApi) -> Result<Synced, ResyncError> {
        let after_event = self.store.read(|b| b.last_event_id()).await?;
        let in_flight = if self.store.is_shared() {
            IN_FLIGHT_MS
        } else {
            0
        };
        let after_ms = now_millis() - in_flight;
        let active = active_fingerprints(&self.fetch(api).await?)?;
        let mut out = Synced {
            active: active.len(),
            ..Synced::default()
        };
        for inc in self.store.read(|b| b.open_incidents()).await? {
            let id = inc.id;
            let fingerprints = self
                .store
                .read(move |b| b.incident_fingerprints(id))
                .await?;
            // No known alert: nothing to compare, leave it to humans.
            if fingerprints.is_empty() || fingerprints.iter().any(|f| active.contains(f)) {
                continue;
            }
            match self
                .escalator
                .resolve_stale(id, RESOLVED_BY.into(), after_event, after_ms)
                .await?
            {
                Transitioned::Done { .. } => {
                    tracing::info!(
                        incident = id,
                        "resolved: Alertmanager no longer has its alerts (re-sync)"
                    );
                    out.resolved.push(id);
                }
                Transitioned::Unchanged(_) => out.raced.push(id),
                Transitioned::NotFound => {}
            }
        }
        Ok(out)
    }

    async fn fetch(&self, api: &AlertmanagerApi) -> Result<Vec<u8>, ResyncError> {
        let http = match &api.ca_file {
            None => self.http.clone(),
            Some(path) => self.ca_client(path).await?,
        };
        let req = http
            .get(format!("{}/api/v2/alerts", api.url))
            .header(http::header::ACCEPT, "application/json")
            .timeout(api.timeout);
        let req = match &api.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t.expose()),
            Auth::Basic { username, password } => req.basic_auth(username, Some(password.expose())),
        };
        let err = |e: reqwest::Error| ResyncError::Http(e.without_url().to_string());
        let mut resp = req.send().await.map_err(err)?;
        if !resp.status().is_success() {
            return Err(ResyncError::Status(resp.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(err)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ResyncError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

impl Resync {
    /// The client for `ca_file`: looked at on each poll (a renewed CA needs no restart), read
    /// and built again only when its modification time or size changed, off the runtime's
    /// thread.
    async fn ca_client(&self, path: &std::path::Path) -> Result<reqwest::Client, ResyncError> {
        let ca = |message: String| ResyncError::Ca {
            path: path.display().to_string(),
            message,
        };
        let owned = path.to_owned();
        let meta = tokio::task::spawn_blocking(move || std::fs::metadata(owned))
            .await
            .map_err(|e| ca(e.to_string()))?
            .map_err(|e| ca(e.to_string()))?;
        let stamp: CaStamp = (path.to_owned(), meta.modified().ok(), meta.len());
        let cached = self
            .ca_client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .filter(|(s, _)| *s == stamp)
            .map(|(_, c)| c.clone());
        if let Some(c) = cached {
            return Ok(c);
        }
        let owned = path.to_owned();
        let client = tokio::task::spawn_blocking(move || client_with_ca(&owned))
            .await
            .map_err(|e| ca(e.to_string()))??;
        *self
            .ca_client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((stamp, client.clone()));
        Ok(client)
    }
}

/// A client that also trusts `alertmanager.tls.ca_file`.
fn client_with_ca(path: &std::path::Path) -> Result<reqwest::Client, ResyncError> {
    let ca = |message: String| ResyncError::Ca {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
    let mut b = crate::client::client_builder();
    for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca(e.to_string()))? {
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| ca(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use std::time::Duration;

    use super::*;
    use crate::config::{MapSecrets, parse};
    use crate::delivery::Engine;
    use crate::metrics::CommitMetrics;
    use crate::payload::{AlertEvent, Status};
    use crate::store::sqlite::Sqlite;
    use crate::store::{IncidentState, RouteRef, RoutedEvent};

    #[test]
    fn suppressed_alerts_count_as_gone_and_garbage_is_an_error() {
        let body = br#"[
            {"fingerprint":"a1","status":{"state":"active","silencedBy":[],"inhibitedBy":[]},"labels":{}},
            {"fingerprint":"b2","status":{"state":"suppressed","silencedBy":["s"],"inhibitedBy":[]}},
            {"fingerprint":"c3","status":{"state":"unprocessed"},"extra":1}
        ]"#;
        let got = active_fingerprints(body).expect("valid");
        assert!(got.contains("a1") && got.contains("c3") && !got.contains("b2"));
        // The stand-in fingerprint of an active alert's labels counts too.
        assert!(got.contains(&fingerprint_of(&Labels::new())));
        assert_eq!(got.len(), 3);
        assert!(active_fingerprints(b"[]").expect("empty").is_empty());
        for bad in [
            &b"{\"alerts\":[]}"[..],
            b"[{\"fingerprint\":1}]",
            b"[{",
            b"<html>",
        ] {
            assert!(matches!(
                active_fingerprints(bad),
                Err(ResyncError::Malformed(_))
            ));
        }
    }

    /// A loopback Alertmanager API answering every request with `status`, `body` after
    /// `delay`; it records each request's head.
    async fn fake_am(
        status: u16,
        body: &'static str,
        delay: Duration,
    ) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    log.lock()
                        .expect("log")
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    tokio::time::sleep(delay).await;
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        (url, seen)
    }

    struct Rig {
        resync: Arc<Resync>,
        store: Store,
        dir: tempfile::TempDir,
    }

    fn rig() -> Rig {
        rig_on(false)
    }

    /// `shared`: the store as several relays on one database see it (fenced).
    fn rig_on(shared: bool) -> Rig {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = parse(
            "storage: { sqlite: x }\nchannels: { a: { type: webhook, url: 'http://127.0.0.1:9/a' } }\n\
             policies: { p: { steps: [ { notify: [a] } ] } }\nroutes: [ { policy: p } ]\n",
            Path::new("/"),
            &MapSecrets::default(),
        )
        .expect("config");
        let (metrics, _) = Metrics::new();
        let (store, _thread) = Store::start(
            Sqlite::open(&dir.path().join("relay.db")).expect("db"),
            CommitMetrics(Arc::clone(&metrics)),
        )
        .expect("store");
        let store = if shared {
            store.fenced(Arc::new(std::sync::atomic::AtomicI64::new(1)))
        } else {
            store
        };
        let live = Arc::new(Live::new("relay.yml".into(), config));
        let engine = Engine::new(crate::delivery::EngineParts::for_tests(
            store.clone(),
            Arc::clone(&metrics),
            Arc::clone(&live),
        ));
        let escalator = Escalator::new(store.clone(), engine, Arc::clone(&live));
        let resync = Resync::new(
            store.clone(),
            escalator,
            live,
            metrics,
            reqwest::Client::new(),
        );
        Rig { resync, store, dir }
    }

    fn api(url: &str) -> AlertmanagerApi {
        AlertmanagerApi {
            url: url.to_owned(),
            interval: Duration::from_secs(60),
            timeout: Duration::from_millis(500),
            auth: Auth::Bearer(crate::secret::Secret::new("am-token".to_owned())),
            ca_file: None,
        }
    }

    impl Rig {
        /// A firing alert `fp` in group `group`: opens (or joins) that group's incident.
        async fn fire(&self, group: &str, fp: &str, starts_at: i64) -> Option<i64> {
            let o = self
                .store
                .ingest(vec![RoutedEvent {
                    event: AlertEvent {
                        status: Status::Firing,
                        fingerprint: fp.into(),
                        labels: Labels::from([("alertname".into(), group.to_owned())]),
                        annotations: Labels::new(),
                        starts_at,
                        ends_at: None,
                        generator_url: String::new(),
                        external_url: String::new(),
                        receiver: "relay".into(),
                        group_key: group.into(),
                    },
                    destinations: vec!["a".into()],
                    routes: vec![RouteRef {
                        route: "#1".into(),
                        policy: "p".into(),
                    }],
                    group_resolved: false,
                    on_call: std::collections::BTreeMap::new(),
                    no_resolved: Default::default(),
                    maintenance: None,
                }])
                .await
                .expect("ingest");
            o.opened.first().copied()
        }

        async fn state(&self, id: i64) -> (IncidentState, Option<String>) {
            let i = self
                .store
                .read(move |b| b.incident(id))
                .await
                .expect("read")
                .expect("exists");
            (i.state, i.resolved_by)
        }
    }

    #[tokio::test]
    async fn resolves_what_alertmanager_no_longer_has_and_announces_it() {
        let r = rig();
        let kept = r.fire("g1", "f1", 1).await.expect("opened");
        let silenced = r.fire("g2", "f2", 1).await.expect("opened");
        let lost = r.fire("g3", "f3", 1).await.expect("opened");
        // g1 has two alerts; Alertmanager still has one of them.
        assert_eq!(r.fire("g1", "f1b", 1).await, None);
        let (url, seen) = fake_am(
            200,
            r#"[{"fingerprint":"f1b","status":{"state":"active"}},
                {"fingerprint":"f2","status":{"state":"suppressed","silencedBy":["x"]}},
                {"fingerprint":"zz","status":{"state":"active"}}]"#,
            Duration::ZERO,
        )
        .await;
        let s = r.resync.poll(&api(&url)).await.expect("poll");
        assert_eq!(s.resolved, [silenced, lost]);
        assert!(s.raced.is_empty());
        assert_eq!(r.state(kept).await.0, IncidentState::Open);
        let (state, by) = r.state(lost).await;
        assert_eq!(state, IncidentState::Resolved);
        assert_eq!(by.as_deref(), Some(RESOLVED_BY));
        // The resolve is announced where the incident was sent.
        let d = r
            .store
            .read(move |b| b.incident_deliveries(lost))
            .await
            .expect("read");
        let notice = d.iter().find_map(|x| x.3.clone()).expect("a notice");
        assert!(notice.contains("resolved by re-sync (Alertmanager no longer has this alert)"));
        let head = seen.lock().expect("log")[0].clone();
        assert!(head.starts_with("GET /api/v2/alerts HTTP/1.1"));
        assert!(
            head.to_ascii_lowercase()
                .contains("authorization: bearer am-token")
        );
        // A second poll changes nothing more.
        let s = r.resync.poll(&api(&url)).await.expect("poll");
        assert!(s.resolved.is_empty());
    }

    /// Several relays on one database commit out of id order: an event stamped just before
    /// the poll may still have been committing at the watermark, so its incident waits.
    #[tokio::test]
    async fn with_several_relays_an_event_just_before_the_poll_keeps_its_incident() {
        let r = rig_on(true);
        let recent = r.fire("g1", "f1", 1).await.expect("opened");
        let (url, _) = fake_am(200, "[]", Duration::ZERO).await;
        let s = r.resync.poll(&api(&url)).await.expect("poll");
        assert!(s.resolved.is_empty(), "{s:?}");
        assert_eq!(r.state(recent).await.0, IncidentState::Open);
    }

    /// An `https://` Alertmanager with a private CA: trusted through `tls.ca_file` only.
    #[tokio::test]
    async fn tls_with_a_private_ca() {
        use rustls_pki_types::PrivateKeyDer;
        let r = rig();
        let id = r.fire("g1", "f1", 1).await.expect("opened");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(
            ca_params,
            rcgen::KeyPair::generate().expect("ca key"),
        )
        .expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("sign");
        let ca_file = r.dir.path().join("am-ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("ca file");
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
        )
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 8192];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]",
                        )
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
        let mut am = api(&format!("https://localhost:{port}"));
        assert!(
            matches!(r.resync.poll(&am).await, Err(ResyncError::Http(_))),
            "the OS trust store does not know the private CA"
        );
        assert_eq!(r.state(id).await.0, IncidentState::Open);
        am.ca_file = Some(ca_file);
        let s = r.resync.poll(&am).await.expect("poll over TLS");
        assert_eq!(s.resolved, [id]);
    }

    #[tokio::test]
    async fn a_failed_poll_resolves_nothing() {
        let r = rig();
        let id = r.fire("g1", "f1", 1).await.expect("opened");
        for (status, body, delay) in [
            (500, "[]", Duration::ZERO),
            (200, "[{\"fingerprint\":", Duration::ZERO),
            (200, "{\"error\":\"x\"}", Duration::ZERO),
            (200, "[]", Duration::from_secs(3)),
        ] {
            let (url, _) = fake_am(status, body, delay).await;
            let e = r.resync.poll(&api(&url)).await;
            assert!(e.is_err(), "{status} {body} {delay:?}: {e:?}");
            assert_eq!(r.state(id).await.0, IncidentState::Open);
        }
        // Nothing listening at all.
        let e = r.resync.poll(&api("http://127.0.0.1:9")).await;
        assert!(matches!(e, Err(ResyncError::Http(_))));
        assert_eq!(r.state(id).await.0, IncidentState::Open);
    }

    #[tokio::test]
    async fn an_alert_that_arrives_during_the_poll_keeps_its_incident() {
        let r = rig();
        let old = r.fire("g1", "f1", 1).await.expect("opened");
        let quiet = r.fire("g3", "f3", 1).await.expect("opened");
        // An Alertmanager that says when the request arrived (the watermark is taken before
        // it) and answers only when told, so the alerts below surely arrive during the poll.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (arrived, request_seen) = tokio::sync::oneshot::channel();
        let (answer, may_answer) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 8192];
            let _ = s.read(&mut buf).await;
            let _ = arrived.send(());
            let _ = may_answer.await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]")
                .await;
        });
        let poll = {
            let resync = Arc::clone(&r.resync);
            let api = api(&url);
            tokio::spawn(async move { resync.poll(&api).await })
        };
        request_seen.await.expect("the poll reached Alertmanager");
        // Alertmanager's answer was built before this alert: it is not in it.
        let new = r.fire("g2", "f2", 1).await.expect("opened");
        // And a second alert joins the old incident's group during the poll.
        assert_eq!(r.fire("g1", "f1c", 2).await, None);
        answer.send(()).expect("answer");
        let s = poll.await.expect("join").expect("poll");
        assert_eq!(s.resolved, [quiet], "{s:?}");
        assert_eq!(s.raced, [old, new]);
        assert_eq!(r.state(old).await.0, IncidentState::Open);
        assert_eq!(r.state(new).await.0, IncidentState::Open);
    }
}
