//! The relay binary as a child process, a loopback fake provider, and webhook payloads.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serving::logging::read::journal_stream;

pub(crate) mod browser;
pub(crate) mod twilio_calls;

pub(crate) fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_alert-relay")
}

pub(crate) fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// The relay running as a child process; killed on drop.
pub(crate) struct Relay {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    /// Writes `config` (with `listen: 127.0.0.1:0` added) into `dir` and starts the relay on it.
    pub(crate) fn start(dir: &Path, config: &str) -> Relay {
        Self::start_with(dir, config, &[], false)
    }

    pub(crate) fn start_file(path: &Path) -> Relay {
        Self::try_start_file(path)
            .unwrap_or_else(|log| panic!("alert-relay did not start; log:\n{log}"))
    }

    /// As [`Relay::start`], with the web configuration `web` (`--web.config.file`) beside it.
    pub(crate) fn start_with_web_config(dir: &Path, config: &str, web: &str) -> Relay {
        let path = dir.join("relay.yml");
        std::fs::write(&path, format!("listen: 127.0.0.1:0\n{config}")).expect("write config");
        let web_path = dir.join("web.yml");
        std::fs::write(&web_path, web).expect("write web config");
        let web_arg = format!("--web.config.file={}", web_path.display());
        Self::try_start_file_with(&path, &[&web_arg], None)
            .unwrap_or_else(|log| panic!("alert-relay did not start; log:\n{log}"))
    }

    /// Starts the relay on the config file `path`; `Err` (with its log) when it exits or does not
    /// say its address within 20 s. For a test that must fix the port in advance and retries
    /// with another one when something else took it meanwhile.
    pub(crate) fn try_start_file(path: &Path) -> Result<Relay, String> {
        Self::try_start_file_with(path, &[], None)
    }

    /// As [`Relay::start`], with extra arguments (`--log.format=json`) and, if `journal`, stderr
    /// a pipe that `JOURNAL_STREAM` names, as systemd starts a service logging to the journal.
    pub(crate) fn start_with(dir: &Path, config: &str, args: &[&str], journal: bool) -> Relay {
        let path = dir.join("relay.yml");
        std::fs::write(&path, format!("listen: 127.0.0.1:0\n{config}")).expect("write config");
        let journal = journal.then(|| std::io::pipe().expect("pipe"));
        Self::try_start_file_with(&path, args, journal)
            .unwrap_or_else(|log| panic!("alert-relay did not start; log:\n{log}"))
    }

    /// [`Relay::try_start_file`] with `configure` adding to the command (its environment).
    pub(crate) fn try_start_with(
        path: &Path,
        configure: impl FnOnce(&mut Command),
    ) -> Result<Relay, String> {
        Self::try_start_file_with_command(path, &[], None, configure)
    }

    fn try_start_file_with(
        path: &Path,
        args: &[&str],
        journal: Option<(std::io::PipeReader, std::io::PipeWriter)>,
    ) -> Result<Relay, String> {
        Self::try_start_file_with_command(path, args, journal, |_| {})
    }

    fn try_start_file_with_command(
        path: &Path,
        args: &[&str],
        journal: Option<(std::io::PipeReader, std::io::PipeWriter)>,
        configure: impl FnOnce(&mut Command),
    ) -> Result<Relay, String> {
        let mut command = Command::new(binary());
        command
            .args(["run", "--config"])
            .arg(path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        configure(&mut command);
        let journal = journal.map(|(reader, writer)| {
            let writer = std::fs::File::from(std::os::fd::OwnedFd::from(writer));
            command
                .env(
                    "JOURNAL_STREAM",
                    journal_stream(&writer).expect("fstat the pipe"),
                )
                .stderr(writer);
            reader
        });
        let mut child = command.spawn().expect("start alert-relay");
        // Our copy of a pipe's write end would keep its reader from ever seeing the end.
        drop(command);
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let outputs = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            journal.map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in outputs.into_iter().flatten() {
            let (tx, log) = (tx.clone(), Arc::clone(&log));
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("RELAY_TEST_LOG").is_some() {
                        eprintln!("relay: {line}");
                    }
                    log.lock().expect("log").push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        // Only the readers send: when the child exits, the channel closes at once.
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = listening_address(&line) {
                        return Ok(Relay { child, addr, log });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(log.lock().expect("log").join("\n"));
                }
            }
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn log_contains(&self, needle: &str) -> bool {
        self.log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Waits until a log line contains `needle`, or panics after 10 s.
    pub(crate) async fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log_contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} in 10 s; log:\n{}",
                self.log.lock().expect("log").join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "relay did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = client()
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        answer(r).await
    }

    /// Posts an Alertmanager webhook `body` with the bearer token the tests' configs set
    /// (`auth: { bearer_token: s3cret }`) and asserts it was accepted.
    pub(crate) async fn fire(&self, body: impl Into<reqwest::Body>) {
        let r = client()
            .post(self.url("/webhook"))
            .bearer_auth("s3cret")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 200);
    }

    /// Incident `id` as the API shows it (`GET /api/v1/incidents/{id}` with the tests' token).
    pub(crate) async fn incident(&self, id: i64) -> serde_json::Value {
        let v: serde_json::Value = client()
            .get(self.url(&format!("/api/v1/incidents/{id}")))
            .bearer_auth("s3cret")
            .send()
            .await
            .expect("api")
            .json()
            .await
            .expect("json");
        v["incident"].clone()
    }

    pub(crate) async fn metrics(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body")
    }

    /// Waits until the sample `series` of `/metrics` reads `value`, or panics after 10 s. The relay
    /// counts a delivery only after the provider's answer (and queue depth after the commit), so a
    /// fake that has recorded the request says nothing yet about the metric.
    pub(crate) async fn wait_metric(&self, series: &str, value: f64) {
        self.wait_metric_by(series, |v| v == value, &format!("{value}"))
            .await;
    }

    /// Waits until the sample `series` of `/metrics` reads at least `min`, or panics after 10 s.
    pub(crate) async fn wait_metric_above(&self, series: &str, min: f64) {
        self.wait_metric_by(series, |v| v >= min, &format!(">= {min}"))
            .await;
    }

    async fn wait_metric_by(&self, series: &str, ok: impl Fn(f64) -> bool, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.metric(series).await;
            if ok(got) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{series} is {got}, not {want}, after 10 s; metrics:\n{}",
                self.metrics().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of one sample line of `/metrics` (0 when absent).
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

/// The address of the `listening` log line, in either log format.
pub(crate) fn listening_address(line: &str) -> Option<SocketAddr> {
    serving::logging::read::field(line, "address")?.parse().ok()
}

/// One request the fake provider received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
}

impl Received {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub(crate) fn form(&self) -> Vec<(String, String)> {
        let decode = |s: &str| -> String {
            let b = s.replace('+', " ").into_bytes();
            let mut out = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' && i + 2 < b.len() {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                    if let Ok(v) = u8::from_str_radix(hex, 16) {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                }
                out.push(b[i]);
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        };
        String::from_utf8_lossy(&self.body)
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect()
    }

    pub(crate) fn form_value(&self, key: &str) -> String {
        self.form()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .unwrap_or_default()
    }

    pub(crate) fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
    pub(crate) delay: Duration,
}

impl Reply {
    pub(crate) fn new(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    pub(crate) fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }

    pub(crate) fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

#[derive(Default)]
struct FakeState {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    /// Per path suffix: scripted replies, then a default (for fakes serving several methods).
    paths: Vec<(String, VecDeque<Reply>, Option<Reply>)>,
    received: Vec<(Instant, Received)>,
}

impl FakeState {
    fn reply(&mut self, path: &str) -> Reply {
        if let Some((_, script, default)) = self
            .paths
            .iter_mut()
            .find(|(p, _, _)| path.ends_with(p.as_str()))
            && let Some(r) = script.pop_front().or_else(|| default.clone())
        {
            return r;
        }
        self.script
            .pop_front()
            .or_else(|| self.default.clone())
            .unwrap_or_else(|| Reply::new(200, ""))
    }
}

/// A loopback HTTP server standing in for a provider: records every request, answers from a
/// script, then with the default reply.
#[derive(Clone)]
pub(crate) struct Fake {
    pub(crate) addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    pub(crate) async fn start(default: Reply) -> Fake {
        Self::start_on([127, 0, 0, 1], default).await
    }

    /// A fake on another loopback address (Linux routes all of 127/8 to loopback): a second
    /// host, for tests of what must never reach another host.
    pub(crate) async fn start_on(ip: [u8; 4], default: Reply) -> Fake {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::from(ip), 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(FakeState {
            default: Some(default),
            ..FakeState::default()
        }));
        let s = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let s = Arc::clone(&s);
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|c| c.to_bytes())
                                    .unwrap_or_default();
                                let reply = {
                                    let mut st = s.lock().expect("state");
                                    let path = parts.uri.path().to_owned();
                                    let reply = st.reply(&path);
                                    st.received.push((
                                        Instant::now(),
                                        Received {
                                            method: parts.method.to_string(),
                                            path,
                                            query: parts.uri.query().unwrap_or_default().to_owned(),
                                            headers: parts.headers,
                                            body,
                                        },
                                    ));
                                    reply
                                };
                                if !reply.delay.is_zero() {
                                    tokio::time::sleep(reply.delay).await;
                                }
                                let mut resp =
                                    http::Response::new(Full::new(Bytes::from(reply.body)));
                                *resp.status_mut() =
                                    http::StatusCode::from_u16(reply.status).expect("status");
                                for (k, v) in reply.headers {
                                    resp.headers_mut().insert(
                                        http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                                        v.parse().expect("value"),
                                    );
                                }
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Fake { addr, state }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().expect("state").script.extend(replies);
    }

    /// Answers requests whose path ends with `suffix` with `default` (after any scripted ones).
    pub(crate) fn on(&self, suffix: &str, default: Reply) {
        let mut st = self.state.lock().expect("state");
        match st.paths.iter_mut().find(|(p, _, _)| p == suffix) {
            Some(entry) => entry.2 = Some(default),
            None => st
                .paths
                .push((suffix.to_owned(), VecDeque::new(), Some(default))),
        }
    }

    /// Queues replies for requests whose path ends with `suffix`.
    pub(crate) fn script_on(&self, suffix: &str, replies: impl IntoIterator<Item = Reply>) {
        let mut st = self.state.lock().expect("state");
        match st.paths.iter_mut().find(|(p, _, _)| p == suffix) {
            Some(entry) => entry.1.extend(replies),
            None => st
                .paths
                .push((suffix.to_owned(), replies.into_iter().collect(), None)),
        }
    }

    /// The requests whose path ends with `suffix`.
    pub(crate) fn received_on(&self, suffix: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix))
            .collect()
    }

    /// Waits until at least `n` requests on `suffix` arrived, or panics after `timeout`.
    pub(crate) async fn wait_on(&self, suffix: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received_on(suffix);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "fake provider got {} of {n} requests on {suffix} in {timeout:?}: {:#?}",
                got.len(),
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.state
            .lock()
            .expect("state")
            .received
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub(crate) fn received_at(&self) -> Vec<Instant> {
        self.state
            .lock()
            .expect("state")
            .received
            .iter()
            .map(|(t, _)| *t)
            .collect()
    }

    /// Waits until at least `n` requests arrived, or panics after `timeout`.
    pub(crate) async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "fake provider got {} of {n} requests in {timeout:?}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An Alertmanager v4 webhook body with one alert per `(fingerprint, status)`.
pub(crate) fn webhook(alerts: &[(&str, &str)], extra_labels: &str) -> String {
    let alerts: Vec<String> = alerts
        .iter()
        .map(|(fp, status)| {
            let ends = if *status == "resolved" { "2026-03-01T12:45:00Z" } else { "0001-01-01T00:00:00Z" };
            format!(
                r#"{{"status":"{status}","labels":{{"alertname":"PiHot","instance":"{fp}:9831","severity":"critical","site":"wh-2"{extra_labels}}},
                "annotations":{{"summary":"CPU at 85°C on {fp}"}},"startsAt":"2026-03-01T12:30:00Z","endsAt":"{ends}",
                "generatorURL":"http://prometheus:9090/graph","fingerprint":"{fp}"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"version":"4","groupKey":"{{}}:{{alertname=\"PiHot\"}}","truncatedAlerts":0,"status":"firing","receiver":"relay",
        "groupLabels":{{"alertname":"PiHot"}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://alertmanager:9093",
        "alerts":[{}]}}"#,
        alerts.join(",")
    )
}

/// Waits until `query` (one integer column) on the relay's SQLite file returns a non-zero value, or
/// panics after `timeout`. Read-only next to the running relay: WAL lets a reader in while it writes.
pub(crate) async fn wait_db(db: &Path, query: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| c.query_row(query, [], |r| r.get::<_, i64>(0)));
        if matches!(got, Ok(n) if n != 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{query} on {} gave {got:?} for {timeout:?}",
            db.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `start` with a port that was free a moment ago, for a child whose port must be written
/// into a config before it starts (a `public_url`, another program's webhook URL). Something else
/// may take the port in between: then `start` fails and it is tried again with another one.
pub(crate) async fn on_a_free_port<T>(mut start: impl AsyncFnMut(u16) -> Result<T, String>) -> T {
    let mut last = String::new();
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        match start(port).await {
            Ok(t) => return t,
            Err(e) => last = e,
        }
    }
    panic!("did not start on any of 3 free ports; the last log:\n{last}")
}

/// Posts an SMS reply to the relay's `path` the way Twilio does: `params` form-encoded, signed
/// with `token` over `public` (the relay's `public_url`) + `path`. (status, body)
pub(crate) async fn twilio_reply(
    relay: &Relay,
    public: &str,
    path: &str,
    token: &str,
    params: &[(&str, &str)],
) -> (u16, String) {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let form = params
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B").replace(' ', "+")))
        .collect::<Vec<_>>()
        .join("&");
    let sig = alert_relay::inbound::twilio_signature(token, &format!("{public}{path}"), &params);
    let r = client()
        .post(relay.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", sig)
        .body(form);
    answer(r).await
}

/// Sends `request`; (status, body).
async fn answer(request: reqwest::RequestBuilder) -> (u16, String) {
    let r = request.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

pub(crate) fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Fast retries for tests.
pub(crate) const FAST_DELIVERY: &str =
    "delivery: { initial_backoff: 50ms, max_backoff: 200ms, timeout: 2s }\n";

/// A configuration with one channel of every HTTP provider (named as in `providers.rs`), all
/// pointed at `f` (a fake's URL) through `api_url`, and one policy notifying them all.
pub(crate) fn every_provider(f: &str) -> String {
    format!(
        r#"storage: {{ sqlite: relay.db }}
{FAST_DELIVERY}channels:
  hook: {{ type: webhook, url: "{f}/hook/in", headers: {{ X-Team: pi }}, signing_secret: k }}
  sl-hook: {{ type: slack, webhook_url: "https://hooks.slack.com/services/T/B/X", api_url: "{f}/slackhook" }}
  sl-bot: {{ type: slack, bot_token: xoxb-1, channel: C1, api_url: "{f}/slackapi" }}
  disc: {{ type: discord, webhook_url: "https://discord.com/api/webhooks/1/tok", api_url: "{f}/discord" }}
  tg: {{ type: telegram, bot_token: "123:abc", chat_id: -100, api_url: "{f}/telegram" }}
  nt: {{ type: ntfy, topic: pi-alerts, token: tk_1, api_url: "{f}/ntfy" }}
  sms: {{ type: twilio, account_sid: AC1, auth_token: twtok, from: "+15005550006", to: ["+447700900123"], api_url: "{f}/twilio" }}
  tm: {{ type: teams, url: "https://x.logic.azure.com/workflows/1?sig=s", api_url: "{f}/teams" }}
  mx: {{ type: matrix, room_id: "!r:example.org", access_token: syt, api_url: "{f}/matrix" }}
  po: {{ type: pushover, token: app1, user_key: user1, api_url: "{f}/pushover" }}
policies:
  all: {{ steps: [ {{ notify: [hook, sl-hook, sl-bot, disc, tg, nt, sms, tm, mx, po] }} ] }}
routes: [ {{ policy: all }} ]
"#
    )
}

/// A database of its own on the PostgreSQL server this test process shares (started once,
/// stopped when the process ends), and the `storage:` section that points at it.
pub(crate) struct Pg {
    pub(crate) url: String,
    pub(crate) storage: String,
}

pub(crate) fn postgres(name: &str) -> Pg {
    static SERVER: std::sync::OnceLock<testpg::TestPg> = std::sync::OnceLock::new();
    let server = SERVER.get_or_init(|| {
        testpg::TestPg::start().unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"))
    });
    server
        .create_database(name)
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    let url = server.url(name);
    Pg {
        storage: format!("{{ postgres: {{ url: '{url}', pool: 4 }} }}"),
        url,
    }
}

/// Debian's Alertmanager (`prometheus-alertmanager`).
pub(crate) const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// Two real Alertmanagers clustered with each other (gossip on loopback), each posting every
/// alert group to every relay URL it was given, with the tests' bearer token (`s3cret`), as an
/// HA pair of Alertmanagers in front of HA relays does. Both killed on drop.
pub(crate) struct AlertmanagerCluster {
    children: Vec<Child>,
    /// The `/api/v2/alerts` URL of each Alertmanager, where Prometheus posts alerts.
    pub(crate) apis: Vec<String>,
}

impl Drop for AlertmanagerCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The configuration of the tests' Alertmanagers: every alert its own group, sent to each of
/// `webhooks` with the tests' bearer token.
fn alertmanager_config(dir: &Path, webhooks: &[String]) -> PathBuf {
    assert!(
        Path::new(ALERTMANAGER).exists(),
        "{ALERTMANAGER} not found: install Debian's prometheus-alertmanager (`apt-get install prometheus-alertmanager`; .ci/run does)"
    );
    let mut receivers = String::new();
    for url in webhooks {
        receivers.push_str(&format!(
            "      - url: {url}\n        send_resolved: false\n\
             \x20       http_config: {{ authorization: {{ credentials: s3cret }} }}\n"
        ));
    }
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: relays\n  group_by: ['...']\n  group_wait: 500ms\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: relays\n    webhook_configs:\n{receivers}"
        ),
    )
    .expect("alertmanager config");
    config
}

/// Two Alertmanagers as a network partition leaves them: not clustered, so each notifies
/// every group itself (Alertmanager's choice: duplicates rather than a lost notification),
/// configured as [`alertmanager_cluster`]'s.
pub(crate) async fn alertmanagers_partitioned(
    dir: &Path,
    webhooks: &[String],
) -> AlertmanagerCluster {
    let config = alertmanager_config(dir, webhooks);
    let mut cluster = AlertmanagerCluster {
        children: Vec::new(),
        apis: Vec::new(),
    };
    for i in 0..2 {
        let storage = dir.join(format!("am-alone-{i}"));
        let (child, base) = spawn_alertmanager(i, &config, &storage, None)
            .unwrap_or_else(|log| panic!("Alertmanager {i} did not start:\n{log}"));
        cluster.children.push(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client()
            .get(format!("{base}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "Alertmanager {i} not ready in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster.apis.push(format!("{base}/api/v2/alerts"));
    }
    cluster
}

/// Starts the cluster in `dir`, every alert its own group (`group_by: ['...']`, so a burst of
/// alerts is a burst of webhooks), sent to each of `webhooks` (one `webhook_config` per relay),
/// and returns it once both Alertmanagers see each other and are ready. Gossip is tuned to be
/// fast (50 ms gossip, 1 s peer timeout: the second Alertmanager sends a group itself when the
/// first has not logged it within 1 s).
pub(crate) async fn alertmanager_cluster(dir: &Path, webhooks: &[String]) -> AlertmanagerCluster {
    let config = alertmanager_config(dir, webhooks);
    let mut last = String::new();
    for attempt in 0..3 {
        // Two ports free a moment ago (held together so they differ); gossip is TCP and UDP.
        let ports: Vec<u16> = {
            let held: Vec<std::net::TcpListener> = (0..2)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free port"))
                .collect();
            held.iter()
                .map(|l| l.local_addr().expect("addr").port())
                .collect()
        };
        let mut children = Vec::new();
        let mut apis = Vec::new();
        for (i, (me, peer)) in [(ports[0], ports[1]), (ports[1], ports[0])]
            .into_iter()
            .enumerate()
        {
            let storage = dir.join(format!("am{attempt}-{i}"));
            match spawn_alertmanager(i, &config, &storage, Some((me, peer))) {
                Ok((child, base)) => {
                    children.push(child);
                    apis.push(base);
                }
                Err(log) => {
                    last = log;
                    break;
                }
            }
        }
        // Killed on drop, a failed attempt's too.
        let mut cluster = AlertmanagerCluster {
            children,
            apis: Vec::new(),
        };
        if apis.len() < 2 {
            continue;
        }
        if wait_clustered(&apis).await {
            cluster.apis = apis.iter().map(|b| format!("{b}/api/v2/alerts")).collect();
            return cluster;
        }
        last = format!("the Alertmanagers at {apis:?} did not form a ready cluster of 2 in 30 s");
    }
    panic!("no Alertmanager cluster in 3 attempts; the last:\n{last}")
}

/// Starts Alertmanager number `i`, gossiping on `me` with `peer` when `cluster` is
/// `Some((me, peer))`, alone (no cluster) when `None`; its `http://host:port` once it says
/// where it listens, or its log.
fn spawn_alertmanager(
    i: usize,
    config: &Path,
    storage: &Path,
    cluster: Option<(u16, u16)>,
) -> Result<(Child, String), String> {
    let mut command = Command::new(ALERTMANAGER);
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", storage.display()))
        .arg("--web.listen-address=127.0.0.1:0");
    match cluster {
        Some((me, peer)) => command
            .arg(format!("--cluster.listen-address=127.0.0.1:{me}"))
            .arg(format!("--cluster.advertise-address=127.0.0.1:{me}"))
            .arg(format!("--cluster.peer=127.0.0.1:{peer}"))
            .arg("--cluster.peer-timeout=1s")
            .arg("--cluster.gossip-interval=50ms")
            .arg("--cluster.pushpull-interval=1s")
            .arg("--cluster.settle-timeout=5s")
            .arg("--cluster.reconnect-interval=1s"),
        // An empty listen address turns clustering off.
        None => command.arg("--cluster.listen-address="),
    };
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start alertmanager");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    // Reads on after the address, so Alertmanager never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if std::env::var_os("RELAY_TEST_LOG").is_some() {
                eprintln!("am{i}: {line}");
            }
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(log.join("\n"));
        };
        if line.contains("msg=\"Listening on\"")
            && let Some(addr) = line
                .split("address=")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
        {
            return Ok((child, format!("http://{addr}")));
        }
        log.push(line);
    }
}

/// Whether both Alertmanagers at `bases` report a ready cluster of two within 30 s.
async fn wait_clustered(bases: &[String]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let mut ready = 0;
        for base in bases {
            let status = async {
                client()
                    .get(format!("{base}/api/v2/status"))
                    .send()
                    .await
                    .ok()?
                    .json::<serde_json::Value>()
                    .await
                    .ok()
            }
            .await;
            if let Some(s) = status
                && s["cluster"]["status"] == "ready"
                && s["cluster"]["peers"].as_array().map(Vec::len) == Some(2)
            {
                ready += 1;
            }
        }
        if ready == bases.len() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
