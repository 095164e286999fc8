//! Fleet assets: `cargo xtask promtool` (static checks of `prometheus/`, `grafana/`, part of
//! `cargo xtask ci`) and `cargo xtask e2e` (the full chain on loopback).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::root;

pub(crate) fn tool(name: &str, package: &str) -> Result<PathBuf> {
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
    {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} not found: install the Debian package `{package}` \
         (apt-get install {package}; .ci/run does this)"
    )
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn yml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every `rpi_*` / `alert_relay_*` / `process_*` identifier in `text`.
pub(crate) fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    // ':' belongs to recording-rule names (`site:rpi_x:max`), which are not metrics.
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        if (i == 0 || !ident(bytes[i - 1]))
            && [&b"rpi_"[..], b"alert_relay_", b"process_"]
                .iter()
                .any(|prefix| bytes[i..].starts_with(prefix))
        {
            let end = (i..bytes.len())
                .find(|&j| !ident(bytes[j]))
                .unwrap_or(bytes.len());
            if !text[i..end].contains(':') {
                names.insert(text[i..end].to_string());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// The metric names the exporter and the relay document, plus issue 5's UPS names.
fn known_metrics() -> Result<BTreeSet<String>> {
    let mut known = BTreeSet::new();
    for doc in ["docs/metrics.md", "docs/alert-relay.md"] {
        let text = std::fs::read_to_string(root().join(doc)).with_context(|| doc.to_string())?;
        // The old names in a "Changes" section are no longer emitted.
        let current = text
            .split_once("\n## Changes\n")
            .map_or(text.as_str(), |(c, _)| c);
        known.extend(metric_names(current));
    }
    // Histograms expose _bucket/_sum/_count.
    let hist: Vec<String> = known
        .iter()
        .filter(|n| n.ends_with("_seconds") || n.ends_with("_writes"))
        .cloned()
        .collect();
    for h in hist {
        for s in ["_bucket", "_sum", "_count"] {
            known.insert(format!("{h}{s}"));
        }
    }
    Ok(known)
}

/// Fails when `text` (from `what`) uses a metric name nobody emits.
fn check_metric_names(what: &str, text: &str, known: &BTreeSet<String>) -> Result<()> {
    let unknown: Vec<String> = metric_names(text)
        .into_iter()
        .filter(|n| !known.contains(n) && !n.ends_with('_'))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "{what} uses metric names no exporter emits (docs/metrics.md, docs/alert-relay.md): {unknown:?}"
        );
    }
    Ok(())
}

/// `cargo xtask promtool`: promtool/amtool checks and unit tests of the shipped rules and
/// configs, metric names of rules and dashboards, runbook anchors.
pub(crate) fn check_assets() -> Result<()> {
    let promtool = tool("promtool", "prometheus")?;
    let prom = root().join("prometheus");
    let rules = yml_files(&prom.join("rules"))?;
    let tests = yml_files(&prom.join("tests"))?;
    if rules.is_empty() || tests.is_empty() {
        bail!("no rules or rule tests under {}", prom.display());
    }
    run(Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .args(&rules))?;
    run(Command::new(&promtool)
        .arg("test")
        .arg("rules")
        .args(&tests))?;
    run(Command::new(&promtool)
        .arg("check")
        .arg("config")
        .arg(prom.join("prometheus.yml")))?;
    let amtool = tool("amtool", "prometheus-alertmanager")?;
    run(Command::new(&amtool)
        .arg("check-config")
        .arg(prom.join("alertmanager.yml")))?;
    let known = known_metrics()?;
    for f in &rules {
        let text = std::fs::read_to_string(f)?;
        check_metric_names(&f.display().to_string(), &text, &known)?;
    }
    check_runbooks(&rules)?;
    check_alert_annotations(&rules, &tests)?;
    check_generated(&promtool)?;
    check_dashboards(&promtool, &known)?;
    verify_units()?;
    Ok(())
}

/// The `"expr"` strings of a Grafana dashboard (JSON string escapes decoded).
pub(crate) fn dashboard_exprs(json: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = json;
    while let Some(at) = rest.find("\"expr\":") {
        rest = rest[at + 7..].trim_start();
        let Some(body) = rest.strip_prefix('"') else {
            bail!("\"expr\" is not a string");
        };
        let mut s = String::new();
        let mut chars = body.char_indices();
        let end = loop {
            let Some((i, c)) = chars.next() else {
                bail!("unterminated \"expr\" string");
            };
            match c {
                '"' => break i,
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('u') => {
                        let hex: String = (0..4)
                            .filter_map(|_| chars.next().map(|(_, c)| c))
                            .collect();
                        let code = u32::from_str_radix(&hex, 16).context("bad \\u escape")?;
                        s.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                    }
                    Some(c) => s.push(c),
                    None => bail!("unterminated escape"),
                },
                c => s.push(c),
            }
        };
        out.push(s);
        rest = &body[end + 1..];
    }
    Ok(out)
}

/// A dashboard query with Grafana's variables replaced so Prometheus can run it.
pub(crate) fn expand_grafana_vars(expr: &str) -> String {
    expr.replace("$site", ".*")
        .replace("$instance", ".*")
        .replace("$relay", ".*")
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
}

/// Every dashboard's queries: metric names checked, syntax checked by `promtool check rules`
/// on a generated rule file with one recording rule per query.
fn check_dashboards(promtool: &Path, known: &BTreeSet<String>) -> Result<()> {
    let dir = root().join("grafana").join("dashboards");
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let mut n = 0;
    for f in yml_files(&dir)? {
        let text = std::fs::read_to_string(&f)?;
        let exprs = dashboard_exprs(&text).with_context(|| f.display().to_string())?;
        if exprs.is_empty() {
            bail!("{} has no queries", f.display());
        }
        for e in exprs {
            check_metric_names(&f.display().to_string(), &e, known)?;
            n += 1;
            rules.push_str(&format!(
                "      - record: dashboard_query_{n}\n        expr: {}\n",
                yaml_quote(&expand_grafana_vars(&e))
            ));
        }
    }
    let tmp = std::env::temp_dir().join(format!("pifleet-dashboards-{}.yml", std::process::id()));
    std::fs::write(&tmp, rules)?;
    let r = run(Command::new(promtool).arg("check").arg("rules").arg(&tmp));
    let _ = std::fs::remove_file(&tmp);
    r.context("a dashboard query does not parse")
}

/// A YAML double-quoted scalar.
pub(crate) fn yaml_quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// `systemd-analyze verify` on the shipped units (the binaries are not installed here, so "not
/// executable" findings are expected and ignored).
fn verify_units() -> Result<()> {
    let sa = tool("systemd-analyze", "systemd")?;
    let dir = root().join("deploy").join("systemd");
    let mut units: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "service" || e == "path"))
        .collect();
    units.sort();
    eprintln!("$ systemd-analyze verify {}", dir.display());
    let out = Command::new(sa).arg("verify").args(&units).output()?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("is not executable"))
        .collect();
    if !problems.is_empty() {
        bail!("systemd-analyze verify:\n{}", problems.join("\n"));
    }
    Ok(())
}

/// Every alert links its dashboard (a `dashboard_url` annotation) and has a rule test that checks
/// its rendered annotations (`exp_annotations`), so a description that names a value shows it.
fn check_alert_annotations(rules: &[PathBuf], tests: &[PathBuf]) -> Result<()> {
    // (alert, whether it has a dashboard link)
    let mut alerts: Vec<(String, bool)> = Vec::new();
    for f in rules {
        let text = std::fs::read_to_string(f)?;
        for t in text.lines().map(str::trim) {
            if let Some(name) = t.strip_prefix("- alert: ") {
                alerts.push((name.trim().to_owned(), false));
            } else if let Some(url) = t.strip_prefix("dashboard_url: ") {
                let Some((name, linked)) = alerts.last_mut().filter(|(_, linked)| !linked) else {
                    bail!("{}: dashboard {url} outside an alert", f.display());
                };
                if !url.contains("/d/pifleet-") {
                    bail!(
                        "{}: alert {name}: dashboard {url} is not a pifleet dashboard",
                        f.display()
                    );
                }
                *linked = true;
            }
        }
    }
    let unlinked: Vec<&str> = (alerts.iter())
        .filter(|(_, linked)| !linked)
        .map(|(a, _)| a.as_str())
        .collect();
    if !unlinked.is_empty() {
        bail!("alerts without a `dashboard_url` annotation: {unlinked:?}");
    }
    let mut checked = BTreeSet::new();
    for f in tests {
        let text = std::fs::read_to_string(f)?;
        let mut current: Option<&str> = None;
        for t in text.lines().map(str::trim) {
            if let Some(name) = t.strip_prefix("alertname: ") {
                current = Some(name.trim());
            } else if t.starts_with("exp_annotations:") {
                checked.extend(current.map(str::to_owned));
            }
        }
    }
    let unchecked: Vec<&str> = (alerts.iter())
        .map(|(a, _)| a.as_str())
        .filter(|a| !checked.contains(*a))
        .collect();
    if !unchecked.is_empty() {
        bail!(
            "alerts whose rendered annotations no rule test checks (add exp_annotations under prometheus/tests): {unchecked:?}"
        );
    }
    eprintln!(
        "{} alerts: dashboard links and annotation tests present",
        alerts.len()
    );
    Ok(())
}

/// The generated files (`prometheus/gen.py` writes the rules, `grafana/gen.py` the dashboards)
/// are what the generators write with their defaults; with other job selectors and another
/// Grafana URL, the rules still pass promtool and every selector is the one asked for.
fn check_generated(promtool: &Path) -> Result<()> {
    let python = tool("python3", "python3")?;
    let tmp = std::env::temp_dir().join(format!("pifleet-gen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = generated_in(&python, promtool, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn generated_in(python: &Path, promtool: &Path, tmp: &Path) -> Result<()> {
    let generators = [
        ("prometheus/gen.py", "prometheus/rules"),
        ("grafana/gen.py", "grafana/dashboards"),
    ];
    for (script, shipped) in generators {
        let out = tmp.join("default").join(shipped);
        run(Command::new(python)
            .arg(root().join(script))
            .arg("--out")
            .arg(&out))?;
        let written = yml_files(&out)?;
        let committed = yml_files(&root().join(shipped))?;
        let names = |files: &[PathBuf]| -> Vec<String> {
            files
                .iter()
                .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect()
        };
        if names(&written) != names(&committed) {
            bail!(
                "{shipped}: the files {:?} differ from what {script} writes, {:?}; rerun {script}",
                names(&committed),
                names(&written)
            );
        }
        for (w, c) in written.iter().zip(&committed) {
            if std::fs::read(w)? != std::fs::read(c)? {
                bail!(
                    "{} is not what {script} writes: rerun {script}",
                    c.display()
                );
            }
        }
    }
    let custom = tmp.join("custom");
    let params = [
        "--pi-selector",
        "job=\"pi\"",
        "--relay-selector",
        "job=\"relay\"",
    ];
    run(Command::new(python)
        .arg(root().join("prometheus/gen.py"))
        .args(params)
        .args(["--grafana-url", "https://grafana.example.org/"])
        .arg("--out")
        .arg(custom.join("rules")))?;
    run(Command::new(python)
        .arg(root().join("grafana/gen.py"))
        .args(params)
        .arg("--out")
        .arg(custom.join("dashboards")))?;
    let rules = yml_files(&custom.join("rules"))?;
    run(Command::new(promtool)
        .arg("check")
        .arg("rules")
        .args(&rules))?;
    let mut all = String::new();
    for f in rules.iter().chain(&yml_files(&custom.join("dashboards"))?) {
        all.push_str(&std::fs::read_to_string(f)?);
    }
    for needle in [
        "up{job=\"pi\"}",
        "up{job=\"relay\"}",
        "\"https://grafana.example.org/d/pifleet-device?var-instance=",
        "job=\\\"pi\\\", site=~",
        "job=\\\"relay\\\", instance=~",
    ] {
        if !all.contains(needle) {
            bail!("the generators with other selectors wrote no {needle}");
        }
    }
    for default in [
        "job=\"pi-exporter\"",
        "job=\\\"pi-exporter\\\"",
        "job=\\\"alert-relay\\\"",
        "job=\"alert-relay\"",
    ] {
        if all.contains(default) {
            bail!("the generators kept the default selector {default} when given another");
        }
    }
    eprintln!(
        "generated rules and dashboards: up to date; the job selectors and Grafana URL are parameters"
    );
    Ok(())
}

/// Every alert has a `runbook_url` whose anchor is a heading of docs/runbooks.md.
fn check_runbooks(rules: &[PathBuf]) -> Result<()> {
    let doc = std::fs::read_to_string(root().join("docs/runbooks.md"))?;
    let anchors: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    for f in rules {
        let text = std::fs::read_to_string(f)?;
        let mut alert: Option<&str> = None;
        let mut alerts_seen = 0;
        for line in text.lines() {
            let t = line.trim();
            if let Some(name) = t.strip_prefix("- alert: ") {
                if let Some(prev) = alert {
                    bail!("{}: alert {prev} has no runbook_url", f.display());
                }
                alert = Some(name.trim());
                alerts_seen += 1;
            } else if let Some(url) = t.strip_prefix("runbook_url: ") {
                let name = alert
                    .with_context(|| format!("{}: runbook_url outside an alert", f.display()))?;
                let anchor = url
                    .trim_matches('"')
                    .rsplit_once("docs/runbooks.md#")
                    .map(|(_, a)| a);
                match anchor {
                    Some(a) if a == name.to_lowercase() && anchors.contains(a) => {}
                    _ => bail!(
                        "{}: alert {name}: runbook_url {url} must point to docs/runbooks.md#{} (a `## {name}` heading)",
                        f.display(),
                        name.to_lowercase()
                    ),
                }
                alert = None;
            }
        }
        if let Some(prev) = alert {
            bail!("{}: alert {prev} has no runbook_url", f.display());
        }
        eprintln!("{}: {alerts_seen} alerts with runbooks", f.display());
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// `cargo xtask e2e`: the full chain on loopback.
//
// pi-exporter (simulated boards on fixture trees) -> Prometheus (the shipped rules with every
// `for:` shortened) -> Alertmanager (short group timers) -> alert-relay -> a fake Slack and a
// fake Twilio on loopback. One "subject" Pi goes healthy -> under-volted -> healthy -> on
// battery -> healthy -> read-only root -> healthy; each failure must reach the fake chat as
// the right FIRING alert, and its end as RESOLVED. Three more exporters (Pi 5, stopped DS3231,
// UPS on battery) stay up so every dashboard query and rule expression can be evaluated
// against live data at the end; the relay is given a rejected webhook and three alerts for a
// webhook that is gone and a Slack that refuses formatted messages (the plain-text fallback),
// under a budget and a storm threshold, so its dashboard has data too.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Metrics that exist only after an event the simulated boards do not produce (a failed
/// delivery, an eMMC that reports wear, the sysfs-only fallback, a synchronised RTC offset,
/// minutes of UPS discharge history). Queries that use them may return no data.
const EVENT_ONLY: &[&str] = &[
    "alert_relay_queue_oldest_age_seconds",
    "alert_relay_queue_depth",
    "rpi_mmc_life_time_used_ratio",
    "rpi_mmc_pre_eol_state",
    "rpi_under_voltage_alarm",
    "rpi_ext4_last_error_time_seconds",
    "rpi_ups_runtime_seconds",
    "rpi_rtc_offset_seconds",
    "rpi_rtc_oscillator_stopped",
    // Only from an exporter's second boot on (its state file needs a previous record).
    "rpi_last_shutdown_clean",
];

struct Proc {
    name: String,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first so the services shut down cleanly, then SIGKILL.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("e2e: {} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Result<Proc> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
    Ok(Proc {
        name: name.to_string(),
        child,
    })
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn pct_encode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// HTTP/1.0 GET: (status, body).
fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    http_request(port, "GET", path, "", None)
}

/// An HTTP/1.0 request with a JSON body (none when empty) and a bearer token if given:
/// (status, body).
fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    if body.is_empty() {
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n"
        )?;
    } else {
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
    }
    read_response(&mut s)
}

/// An HTTP/1.0 answer read to the end: (status, body).
pub(crate) fn read_response(s: &mut TcpStream) -> Result<(u16, String)> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The relay's dead-man's switch timeout in the chain: above Alertmanager's 2 s Watchdog
/// repeat and the start-up of Prometheus and Alertmanager after the relay.
const DEADMAN_TIMEOUT: Duration = Duration::from_secs(20);

/// One unlabelled sample of the relay's `/metrics`.
fn relay_metric(port: u16, name: &str) -> Option<f64> {
    let (status, body) = http_get(port, "/metrics").ok()?;
    if status != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ok() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// A fake chat (Slack), SMS and voice (Twilio) provider: records (path, body) of every
/// request; plays the calls back to the relay (`crate::e2e_voice`).
#[derive(Clone, Default)]
struct FakeProvider(Arc<Mutex<Vec<(String, String)>>>, crate::e2e_voice::Calls);

impl FakeProvider {
    fn start(&self) -> Result<u16> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        let seen = self.0.clone();
        let calls = self.1.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let (seen, calls) = (seen.clone(), calls.clone());
                std::thread::spawn(move || {
                    let _ = Self::serve(conn, &seen, &calls);
                });
            }
        });
        Ok(port)
    }

    fn serve(
        mut conn: TcpStream,
        seen: &Mutex<Vec<(String, String)>>,
        calls: &crate::e2e_voice::Calls,
    ) -> Result<()> {
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        loop {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if conn.read(&mut byte)? == 0 {
                    return Ok(());
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            conn.read_exact(&mut body)?;
            let body = String::from_utf8_lossy(&body).into_owned();
            let (status, reply) = if path.ends_with("/Calls.json") {
                ("201 Created", calls.create(&body))
            } else if path.contains("twilio") {
                (
                    "201 Created",
                    r#"{"sid":"SM00000000000000000000000000000000","status":"queued"}"#.to_owned(),
                )
            } else if path.starts_with("/strict-slack") && body.contains("\"blocks\"") {
                // A workspace that refuses the formatted message: the relay's plain-text
                // fallback (and the dashboard's fallback panel) is exercised.
                ("400 Bad Request", "invalid_blocks".to_owned())
            } else if path.starts_with("/gone") {
                // A webhook that no longer exists: the relay's failure and dead-letter series.
                ("410 Gone", "gone".to_owned())
            } else {
                ("200 OK", "ok".to_owned())
            };
            if let Ok(mut v) = seen.lock() {
                v.push((path, form_decode(&body)));
            }
            write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n{reply}",
                if reply.starts_with('{') {
                    "application/json"
                } else {
                    "text/plain"
                },
                reply.len()
            )?;
        }
    }

    /// Requests to `path_part` whose body mentions every needle as a whole word
    /// (`PiUnderVoltage` does not match `PiUnderVoltageSinceBoot`).
    fn count(&self, path_part: &str, needles: &[&str]) -> usize {
        self.0.lock().map_or(0, |v| {
            v.iter()
                .filter(|(p, b)| p.contains(path_part) && needles.iter().all(|n| has_word(b, n)))
                .count()
        })
    }

    fn dump(&self, to: &Path) {
        if let Ok(v) = self.0.lock() {
            let mut text: String = v
                .iter()
                .map(|(p, b)| format!("POST {p}\n{b}\n\n"))
                .collect();
            for call in self.1.log() {
                text.push_str(&format!("CALL {call}\n"));
            }
            let _ = std::fs::write(to, text);
        }
    }
}

fn has_word(hay: &str, word: &str) -> bool {
    hay.match_indices(word).any(|(i, _)| {
        !hay[i + word.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// `application/x-www-form-urlencoded` decoding (Twilio bodies), harmless on JSON.
pub(crate) fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !status.success() {
        bail!("cp -a {} {} failed", from.display(), to.display());
    }
    Ok(())
}

/// The `expr:` values of a rule file (inline or `|` block), each with whether it belongs to a
/// recording rule (`record:`) rather than an alert.
fn rule_exprs(text: &str) -> Vec<(bool, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut record = false;
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        if t.starts_with("- record:") {
            record = true;
        } else if t.starts_with("- alert:") {
            record = false;
        }
        if let Some(v) = t.strip_prefix("expr:") {
            let v = v.trim();
            if v == "|" || v == "|-" {
                let indent = lines[i].len() - t.len();
                let mut block = Vec::new();
                i += 1;
                while i < lines.len() {
                    let l = lines[i];
                    let li = l.len() - l.trim_start().len();
                    if !l.trim().is_empty() && li <= indent {
                        break;
                    }
                    block.push(l.trim());
                    i += 1;
                }
                out.push((record, block.join(" ")));
                continue;
            }
            out.push((record, v.to_string()));
        }
        i += 1;
    }
    out
}

struct Chain {
    dir: PathBuf,
    bin: PathBuf,
    fixture: PathBuf,
    subject_port: u16,
    subject: Option<Proc>,
}

impl Chain {
    fn start_subject(&mut self, board: &str, extra: &[&str]) -> Result<()> {
        self.subject = None; // stops the previous one
        let boards = root().join("crates/pi-exporter/boards");
        let mut cmd = Command::new(self.bin.join("pi-exporter"));
        cmd.arg(format!(
            "--web.listen-address=127.0.0.1:{}",
            self.subject_port
        ))
        .arg("--simulate.board")
        .arg(boards.join(board))
        .arg("--path.procfs")
        .arg(self.fixture.join("proc"))
        .arg("--path.sysfs")
        .arg(self.fixture.join("sys"))
        .arg("--path.rootfs")
        .arg(self.fixture.join("rootfs"))
        .arg("--collector.rtc.i2c-bus=none")
        .args(extra);
        let p = spawn(&format!("subject-{board}"), &self.dir, &mut cmd)?;
        self.subject = Some(p);
        let port = self.subject_port;
        wait_for("the subject exporter", Duration::from_secs(20), || {
            http_get(port, "/healthz").is_ok_and(|(s, _)| s == 200)
        })?;
        Ok(())
    }
}

fn prom_query(port: u16, q: &str) -> Result<String> {
    let (status, body) = http_get(port, &format!("/api/v1/query?query={}", pct_encode(q)))?;
    if status != 200 || !body.contains("\"status\":\"success\"") {
        bail!("query {q:?} failed ({status}): {body}");
    }
    Ok(body)
}

fn has_data(body: &str) -> bool {
    !body.contains("\"result\":[]")
}

pub(crate) fn e2e(args: &[String]) -> Result<()> {
    if let Some(a) = args.first() {
        bail!("usage: cargo xtask e2e (unknown {a:?})");
    }
    let started = Instant::now();
    let prometheus = tool("prometheus", "prometheus")?;
    let alertmanager = tool("prometheus-alertmanager", "prometheus-alertmanager")
        .or_else(|_| tool("alertmanager", "prometheus-alertmanager"))?;
    crate::cargo(&[
        "build",
        "--locked",
        "-p",
        "pi-exporter",
        "-p",
        "alert-relay",
    ])?;
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let bin = target_dir.join("debug");

    let tmp = std::env::temp_dir().join(format!("pifleet-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let fake = FakeProvider::default();
    let result = run_chain(&tmp, &bin, &prometheus, &alertmanager, &fake);
    fake.dump(&tmp.join("provider.log"));
    match &result {
        Ok(()) if std::env::var_os("E2E_KEEP").is_some() => {
            eprintln!(
                "e2e: passed in {:.0?}; E2E_KEEP: logs in {}",
                started.elapsed(),
                tmp.display()
            );
        }
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&tmp);
            eprintln!("e2e: passed in {:.0?}", started.elapsed());
        }
        Err(_) => eprintln!(
            "e2e: FAILED after {:.0?}; logs kept in {}",
            started.elapsed(),
            tmp.display()
        ),
    }
    result
}

/// The bearer token alert-relay demands and Alertmanager sends (from a credentials file).
const RELAY_TOKEN: &str = "e2e-token-0123456789";

/// The full chain, as a table of contents: every service started in dependency order, then
/// the induced faults, the live queries and the dead-man's switch. `procs` and `chain` stay
/// in this frame so that a failure anywhere stops the subject first, then the other services
/// (their `Drop`), as they always did.
fn run_chain(
    tmp: &Path,
    bin: &Path,
    prometheus: &Path,
    alertmanager: &Path,
    fake: &FakeProvider,
) -> Result<()> {
    let fixtures = root().join("crates/pi-exporter/tests/fixtures");
    let boards = root().join("crates/pi-exporter/boards");
    let mut procs: Vec<Proc> = Vec::new();

    // The fake providers.
    let fake_port = fake.start()?;

    // The subject's fixture tree: a Pi 4 on an SD card, root writable to start with.
    let fixture = tmp.join("subject");
    copy_tree(&fixtures.join("pi4-sd"), &fixture)?;
    let remount = root_remount(&fixture)?;

    let background = start_background_exporters(
        &Exporters {
            tmp,
            bin,
            fixtures: &fixtures,
            boards: &boards,
        },
        &mut procs,
    )?;

    let ports = ServicePorts {
        fake: fake_port,
        relay: free_port()?,
        alertmanager: free_port()?,
    };
    start_relay(tmp, bin, &ports, &mut procs)?;
    let alertmanager_proc = procs.len();
    start_alertmanager(tmp, alertmanager, &ports, &mut procs)?;

    let all_rule_exprs = write_fast_rules(tmp)?;
    let subject_port = free_port()?;
    let prom_port = start_prometheus(
        tmp,
        prometheus,
        &ports,
        subject_port,
        &background,
        &mut procs,
    )?;

    let mut chain = Chain {
        dir: tmp.to_path_buf(),
        bin: bin.to_path_buf(),
        fixture,
        subject_port,
        subject: None,
    };
    chain.start_subject("pi4-healthy.yaml", &[])?;
    wait_for_chain(&ports, prom_port)?;
    provoke_relay_failures(ports.relay)?;

    let faults = Faults {
        fake,
        subject: format!("127.0.0.1:{subject_port}"),
    };
    faults.expect_quiet_while_healthy(ports.relay)?;

    faults.phase(
        &mut chain,
        &Fault {
            name: "under-voltage",
            alert: "PiUnderVoltage",
            sms: true,
            call: true,
        },
        &mut |c| c.start_subject("pi4-throttled.yaml", &[]),
        &mut |c| c.start_subject("pi4-healthy.yaml", &[]),
    )?;
    faults.phase(
        &mut chain,
        &Fault {
            name: "on battery",
            alert: "PiUpsOnBattery",
            sms: false,
            call: false,
        },
        &mut |c| c.start_subject("ups-on-battery.yaml", &["--collector.ups"]),
        &mut |c| c.start_subject("pi4-healthy.yaml", &[]),
    )?;
    faults.phase(
        &mut chain,
        &Fault {
            name: "read-only root",
            alert: "PiFilesystemReadOnly",
            sms: true,
            call: false,
        },
        &mut |_| remount(true),
        &mut |_| remount(false),
    )?;

    check_live_queries(prom_port, all_rule_exprs)?;

    // The heartbeats kept the switch quiet all along; without Alertmanager it trips.
    for a in ["Watchdog", "MonitoringPipelineDown"] {
        if fake.count("/slack", &[a]) > 0 {
            bail!("{a} reached the chat while Alertmanager was running");
        }
    }
    drop(procs.remove(alertmanager_proc));
    let t = wait_for(
        "MonitoringPipelineDown at the fake chat after Alertmanager stopped",
        DEADMAN_TIMEOUT + Duration::from_secs(20),
        || fake.count("/slack", &["MonitoringPipelineDown"]) > 0,
    )?;
    eprintln!("e2e: Alertmanager stopped: the dead-man's switch reached the chat after {t:.1?}");

    // Stop the subject, then the rest from the last started (Prometheus) to the first, so
    // nothing sends to a service already gone.
    drop(chain);
    while let Some(p) = procs.pop() {
        drop(p);
    }
    Ok(())
}

/// Prepares the subject's mount tables for the read-only-root fault and returns the switch:
/// `true` shows the root remounted read-only, `false` read-write again. The kernel shows a
/// remount in both tables; the exporter reads mountinfo when it exists. In mountinfo both the
/// mount's and the superblock's options say it.
fn root_remount(fixture: &Path) -> Result<impl Fn(bool) -> Result<()> + use<>> {
    let mut tables = Vec::new();
    for (name, root_line) in [
        ("mounts", "/dev/mmcblk0p2 / ext4 "),
        ("mountinfo", " 179:2 / / "),
    ] {
        let path = fixture.join("proc/self").join(name);
        let original = std::fs::read_to_string(&path)?;
        let flip = |from: &str, to: &str| -> String {
            original
                .lines()
                .map(|l| {
                    if l.contains(root_line) {
                        l.replace(from, to)
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        };
        let (rw, ro) = (flip(" ro,", " rw,"), flip(" rw,", " ro,"));
        if rw == ro {
            bail!("{}: no root mount line to flip", path.display());
        }
        std::fs::write(&path, &rw)?;
        tables.push((path, rw, ro));
    }
    Ok(move |read_only: bool| -> Result<()> {
        for (path, rw, ro) in &tables {
            std::fs::write(path, if read_only { ro } else { rw })?;
        }
        Ok(())
    })
}

/// Where the exporters of the chain find their binary, fixture trees and board files.
struct Exporters<'a> {
    tmp: &'a Path,
    bin: &'a Path,
    fixtures: &'a Path,
    boards: &'a Path,
}

/// Starts the background exporters (every board the rules and dashboards need data from, so
/// the live queries cover them) and returns each one's name and port.
fn start_background_exporters(
    at: &Exporters<'_>,
    procs: &mut Vec<Proc>,
) -> Result<Vec<(&'static str, u16)>> {
    let mut background = Vec::new();
    for (name, board, tree, extra) in [
        ("pi5", "pi5.yaml", "pi5-nvme", vec![]),
        // Under-volted with a read-only SD root: the fleet counts of failures have data.
        // Its SD card's rated endurance declared: the flash-life projection has data.
        (
            "throttled",
            "pi4-throttled.yaml",
            "pi4-sd",
            vec!["--collector.storage.rated-endurance=mmcblk0=117TB"],
        ),
        (
            "rtc",
            "rtc-ds3231-stopped.yaml",
            "pi5-nvme",
            vec!["--collector.rtc.i2c-bus=1"],
        ),
        (
            "ups",
            "ups-on-battery.yaml",
            "pi5-nvme",
            vec!["--collector.ups"],
        ),
    ] {
        let port = free_port()?;
        let t = at.fixtures.join(tree);
        let mut cmd = Command::new(at.bin.join("pi-exporter"));
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--simulate.board")
            .arg(at.boards.join(board))
            .arg("--path.procfs")
            .arg(t.join("proc"))
            .arg("--path.sysfs")
            .arg(t.join("sys"))
            .arg("--path.rootfs")
            .arg(t.join("rootfs"))
            .arg(format!(
                "--collector.history.state-file={}",
                at.tmp.join(format!("history-{name}")).display()
            ))
            .args(&extra);
        if !extra.iter().any(|a| a.starts_with("--collector.rtc")) {
            cmd.arg("--collector.rtc.i2c-bus=none");
        }
        procs.push(spawn(&format!("exporter-{name}"), at.tmp, &mut cmd)?);
        background.push((name, port));
    }
    Ok(background)
}

/// The ports the services' configurations name each other by.
struct ServicePorts {
    /// The fake chat and SMS providers.
    fake: u16,
    relay: u16,
    alertmanager: u16,
}

/// Starts alert-relay with the fake chat (Slack) and SMS (Twilio), its dead-man's switch fed
/// by Alertmanager's Watchdog, and re-sync against that Alertmanager.
fn start_relay(tmp: &Path, bin: &Path, ports: &ServicePorts, procs: &mut Vec<Proc>) -> Result<()> {
    let relay_cfg = tmp.join("relay.yml");
    std::fs::write(
        &relay_cfg,
        format!(
            r#"listen: 127.0.0.1:{relay_port}
public_url: http://127.0.0.1:{relay_port}
auth: {{ bearer_token: {token} }}
storage: {{ sqlite: {db} }}
delivery: {{ initial_backoff: 50ms, max_backoff: 500ms, timeout: 5s }}
channels:
  chat: {{ type: slack, webhook_url: "https://hooks.slack.com/services/T/B/X", api_url: "http://127.0.0.1:{fake_port}/slack" }}
  sms: {{ type: twilio, account_sid: AC00000000000000000000000000000000, auth_token: tok, from: "+15005550006", to: ["+447700900123"], api_url: "http://127.0.0.1:{fake_port}/twilio" }}
  gone: {{ type: webhook, url: "http://127.0.0.1:{fake_port}/gone", budget: {{ max: 1, per: 1h, overflow: [chat] }} }}
  strict: {{ type: slack, webhook_url: "https://hooks.slack.com/services/T/B/Y", api_url: "http://127.0.0.1:{fake_port}/strict-slack" }}
  phone: {{ type: twilio_voice, account_sid: AC00000000000000000000000000000000, auth_token: {voice_token}, from: "+15005550006", to: ["+447700900199"], api_url: "http://127.0.0.1:{fake_port}/voice" }}
policies:
  chat: {{ steps: [ {{ notify: [chat] }} ] }}
  page: {{ steps: [ {{ notify: [chat, sms] }}, {{ after: 2s, notify: [phone] }} ] }}
  gone: {{ steps: [ {{ notify: [gone, strict] }} ], storm: {{ window: 10m, threshold: 2, group_by: [alertname] }} }}
routes:
  - match: {{ alertname: E2eUndeliverable }}
    policy: gone
  - match: {{ severity: critical }}
    policy: page
  - policy: chat
deadman: {{ timeout: {deadman_timeout}s, notify: [chat] }}
alertmanager: {{ url: "http://127.0.0.1:{am_port}", interval: 5s }}
"#,
            relay_port = ports.relay,
            token = RELAY_TOKEN,
            voice_token = crate::e2e_voice::TOKEN,
            fake_port = ports.fake,
            am_port = ports.alertmanager,
            deadman_timeout = DEADMAN_TIMEOUT.as_secs(),
            db = tmp.join("relay.db").display()
        ),
    )?;
    procs.push(spawn(
        "alert-relay",
        tmp,
        Command::new(bin.join("alert-relay"))
            .arg("run")
            .arg("--config")
            .arg(&relay_cfg),
    )?);
    Ok(())
}

/// Starts Alertmanager: the shipped grouping, short timers, the relay with its token; the
/// Watchdog every 2 s as the relay's heartbeat.
fn start_alertmanager(
    tmp: &Path,
    alertmanager: &Path,
    ports: &ServicePorts,
    procs: &mut Vec<Proc>,
) -> Result<()> {
    std::fs::write(tmp.join("relay.token"), RELAY_TOKEN)?;
    std::fs::write(
        tmp.join("alertmanager.yml"),
        format!(
            r#"route:
  receiver: relay
  group_by: [site, alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - matchers: ['alertname="Watchdog"']
      receiver: relay
      group_by: [alertname]
      group_wait: 0s
      repeat_interval: 2s
receivers:
  - name: relay
    webhook_configs:
      - url: http://127.0.0.1:{relay_port}/webhook
        send_resolved: true
        http_config:
          authorization: {{ credentials_file: {tok} }}
"#,
            relay_port = ports.relay,
            tok = tmp.join("relay.token").display()
        ),
    )?;
    procs.push(spawn(
        "alertmanager",
        tmp,
        Command::new(alertmanager)
            .arg(format!(
                "--config.file={}",
                tmp.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", tmp.join("am").display()))
            .arg(format!(
                "--web.listen-address=127.0.0.1:{}",
                ports.alertmanager
            ))
            .arg("--cluster.listen-address="),
    )?);
    Ok(())
}

/// Writes the shipped rules to `<tmp>/rules` with every `for:` and group `interval:` at 1s
/// (so faults fire within the test's timeouts) and returns every rule's expression.
fn write_fast_rules(tmp: &Path) -> Result<Vec<(bool, String)>> {
    let rules_dir = tmp.join("rules");
    std::fs::create_dir_all(&rules_dir)?;
    let mut all_rule_exprs = Vec::new();
    for f in yml_files(&root().join("prometheus/rules"))? {
        let text = std::fs::read_to_string(&f)?;
        all_rule_exprs.extend(rule_exprs(&text));
        let fast: String = text
            .lines()
            .map(|l| {
                let t = l.trim_start();
                if t.starts_with("for: ") {
                    format!("{}for: 1s\n", &l[..l.len() - t.len()])
                } else if t.starts_with("interval: ") {
                    format!("{}interval: 1s\n", &l[..l.len() - t.len()])
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(
            rules_dir.join(f.file_name().context("rule file name")?),
            fast,
        )?;
    }
    Ok(all_rule_exprs)
}

/// Starts Prometheus on the fast rules (`write_fast_rules`) with 1s scrapes and evaluations
/// of the subject, the background exporters and the relay; returns its port.
fn start_prometheus(
    tmp: &Path,
    prometheus: &Path,
    ports: &ServicePorts,
    subject_port: u16,
    background: &[(&str, u16)],
    procs: &mut Vec<Proc>,
) -> Result<u16> {
    let rules_dir = tmp.join("rules");
    let mut targets = format!(
        "- targets: [\"127.0.0.1:{subject_port}\"]\n  labels: {{ site: e2e-subject, role: subject }}\n"
    );
    for (name, port) in background {
        targets.push_str(&format!(
            "- targets: [\"127.0.0.1:{port}\"]\n  labels: {{ site: e2e-{name}, role: background }}\n"
        ));
    }
    std::fs::write(tmp.join("targets.yml"), targets)?;
    let prom_port = free_port()?;
    std::fs::write(
        tmp.join("prometheus.yml"),
        format!(
            r#"global: {{ scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s }}
rule_files: ["{rules}/*.yml"]
alerting:
  alertmanagers: [ {{ static_configs: [ {{ targets: ["127.0.0.1:{am_port}"] }} ] }} ]
scrape_configs:
  - job_name: pi-exporter
    file_sd_configs: [ {{ files: ["{targets}"], refresh_interval: 1s }} ]
  - job_name: alert-relay
    static_configs: [ {{ targets: ["127.0.0.1:{relay_port}"] }} ]
"#,
            am_port = ports.alertmanager,
            relay_port = ports.relay,
            rules = rules_dir.display(),
            targets = tmp.join("targets.yml").display()
        ),
    )?;
    procs.push(spawn(
        "prometheus",
        tmp,
        Command::new(prometheus)
            .arg(format!(
                "--config.file={}",
                tmp.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--rules.alert.resend-delay=1s"),
    )?);
    Ok(prom_port)
}

/// Waits until Prometheus, Alertmanager and the relay answer and Prometheus has scraped all
/// five exporters, so the faults start from a chain that is up.
fn wait_for_chain(ports: &ServicePorts, prom_port: u16) -> Result<()> {
    for (what, port) in [
        ("prometheus", prom_port),
        ("alertmanager", ports.alertmanager),
        ("alert-relay", ports.relay),
    ] {
        wait_for(what, Duration::from_secs(30), || {
            http_get(port, "/-/ready").is_ok_and(|(s, _)| s == 200)
                || (what == "alert-relay"
                    && http_get(port, "/healthz").is_ok_and(|(s, _)| s == 200))
        })?;
    }
    wait_for("every exporter scraped", Duration::from_secs(30), || {
        prom_query(prom_port, "count(up{job=\"pi-exporter\"} == 1) == 5")
            .is_ok_and(|b| has_data(&b))
    })?;
    eprintln!("e2e: chain up");
    Ok(())
}

/// What the relay dashboard shows that the faults do not provoke: one webhook without the
/// bearer token (answered 401, a rejection), and three alerts routed to a channel whose webhook
/// is gone (410: a failed attempt and a dead letter, which AlertRelayDeliveryFailing and
/// AlertRelayDeadLetters then report), with a budget of one message (the second is held back)
/// and a storm threshold of two (the third opens a storm).
fn provoke_relay_failures(relay_port: u16) -> Result<()> {
    let (status, body) = http_request(relay_port, "POST", "/webhook", "{}", None)?;
    if status != 401 {
        bail!("a webhook without the token was answered {status}, not 401: {body}");
    }
    // One group (so one incident) per alert: the third incident within the window is a storm.
    for n in 1..=3 {
        let webhook = format!(
            r#"{{"version":"4","groupKey":"{{}}:{{instance=\"gone-{n}\"}}","truncatedAlerts":0,"status":"firing","receiver":"relay","groupLabels":{{"instance":"gone-{n}"}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://127.0.0.1:9093","alerts":[{{"status":"firing","labels":{{"alertname":"E2eUndeliverable","instance":"gone-{n}","severity":"none"}},"annotations":{{"summary":"routed to a webhook that is gone"}},"startsAt":"2026-03-01T12:30:0{n}Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://127.0.0.1:9090/graph","fingerprint":"e2e000000000000{n}"}}]}}"#
        );
        let (status, body) =
            http_request(relay_port, "POST", "/webhook", &webhook, Some(RELAY_TOKEN))?;
        if status != 200 {
            bail!("undeliverable alert {n} was answered {status}: {body}");
        }
    }
    wait_for(
        "the undeliverable alerts dead-lettered, held back by the budget and a storm",
        Duration::from_secs(30),
        || {
            http_get(relay_port, "/metrics").is_ok_and(|(_, m)| {
                [
                    "alert_relay_notifications_dead_lettered_total{",
                    "alert_relay_budget_held_back_total{",
                    "alert_relay_storms_total{",
                ]
                .iter()
                .all(|series| m.contains(series))
            })
        },
    )?;
    Ok(())
}

/// The faults induced on the subject Pi, as seen at the fake providers.
struct Faults<'a> {
    fake: &'a FakeProvider,
    /// The subject's `instance`, which its alerts carry.
    subject: String,
}

/// One induced fault: a phase's name in the log, the alert it must fire, and whether the
/// alert pages (reaches the SMS provider too), and whether the phase waits for the page's
/// last step, a call, and acknowledges it by key press.
struct Fault<'a> {
    name: &'a str,
    alert: &'a str,
    sms: bool,
    call: bool,
}

impl Faults<'_> {
    /// Before any fault: the Watchdog reaches the relay as a heartbeat (never as a message),
    /// and nothing of what the phases induce has fired while the subject is healthy.
    fn expect_quiet_while_healthy(&self, relay_port: u16) -> Result<()> {
        // The Watchdog reaches the relay as a heartbeat (never as a message).
        wait_for(
            "a dead-man's switch heartbeat",
            Duration::from_secs(30),
            || {
                relay_metric(
                    relay_port,
                    "alert_relay_deadman_last_heartbeat_timestamp_seconds",
                )
                .is_some_and(|v| v > 0.0)
            },
        )?;

        // Healthy: nothing of what we induce later may have fired.
        std::thread::sleep(Duration::from_secs(3));
        for a in ["PiUnderVoltage", "PiUpsOnBattery", "PiFilesystemReadOnly"] {
            if self.fake.count("/slack", &[a, &self.subject]) > 0 {
                bail!("{a} reached the chat while the subject Pi was healthy");
            }
        }
        Ok(())
    }

    /// The page's last step: the relay calls, the fake answers and presses 1, and the
    /// acknowledgement by key press is announced in the chat.
    fn call_acknowledged(&self, alert: &str) -> Result<()> {
        let calls = &self.fake.1;
        let t = wait_for(
            &format!("{alert}: a call acknowledged by key press"),
            Duration::from_secs(30),
            || calls.acknowledged(alert, &self.subject) > 0,
        )?;
        eprintln!("e2e: {alert}: the call was acknowledged by key press after {t:.1?}");
        wait_for(
            &format!("{alert}: the acknowledgement by key press at the fake chat"),
            Duration::from_secs(20),
            || self.fake.count("/slack", &[alert, "key", "press"]) > 0,
        )?;
        if let Some(failed) = calls.log().iter().find(|l| l.contains("FAILED")) {
            bail!("a call failed: {failed}");
        }
        Ok(())
    }

    /// Induces the fault, waits for its alert to fire at the fake chat (and SMS), heals it
    /// and waits for the resolved message.
    fn phase(
        &self,
        chain: &mut Chain,
        fault: &Fault<'_>,
        induce: &mut dyn FnMut(&mut Chain) -> Result<()>,
        heal: &mut dyn FnMut(&mut Chain) -> Result<()>,
    ) -> Result<()> {
        let (fake, name, alert) = (self.fake, fault.name, fault.alert);
        let needles_fire = [alert, "FIRING", self.subject.as_str()];
        let before = fake.count("/slack", &[alert]);
        induce(chain)?;
        let t = wait_for(
            &format!("{alert} FIRING at the fake chat ({name})"),
            Duration::from_secs(45),
            || {
                fake.count("/slack", &needles_fire) > 0
                    || fake.count("/slack", &[alert, "firing"]) > before
            },
        )?;
        eprintln!("e2e: {name}: {alert} reached the chat after {t:.1?}");
        if fault.sms {
            wait_for(
                &format!("{alert} at the fake SMS provider"),
                Duration::from_secs(20),
                || fake.count("/twilio", &[alert]) > 0,
            )?;
            eprintln!("e2e: {name}: {alert} reached the SMS provider");
        }
        if fault.call {
            self.call_acknowledged(alert)?;
        }
        heal(chain)?;
        let t = wait_for(
            &format!("{alert} RESOLVED at the fake chat ({name})"),
            Duration::from_secs(45),
            || fake.count("/slack", &[alert, "RESOLVED"]) > 0,
        )?;
        eprintln!("e2e: {name}: {alert} resolved after {t:.1?}");
        Ok(())
    }
}

/// Every rule expression and dashboard query, as (origin, query): `alert` or `recording
/// rule`, or the dashboard's file name.
fn live_queries(all_rule_exprs: Vec<(bool, String)>) -> Result<Vec<(String, String)>> {
    let mut queries: Vec<(String, String)> = all_rule_exprs
        .into_iter()
        .map(|(record, e)| {
            (
                (if record { "recording rule" } else { "alert" }).to_string(),
                e,
            )
        })
        .collect();
    for f in yml_files(&root().join("grafana/dashboards"))? {
        for e in dashboard_exprs(&std::fs::read_to_string(&f)?)? {
            queries.push((
                format!(
                    "{}",
                    f.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                ),
                expand_grafana_vars(&e),
            ));
        }
    }
    Ok(queries)
}

/// Every rule expression and dashboard query against the live Prometheus, after the faults
/// gave the event metrics data.
fn check_live_queries(prom_port: u16, all_rule_exprs: Vec<(bool, String)>) -> Result<()> {
    let mut problems = Vec::new();
    let queries = live_queries(all_rule_exprs)?;
    // Data: recording rules and dashboard queries must return series; alert conditions are
    // empty while nothing fires, so for them every metric they read must have series.
    let mut excused = Vec::new();
    for (origin, q) in &queries {
        let body = match prom_query(prom_port, q) {
            Ok(b) => b,
            Err(e) => {
                problems.push(format!("{origin}: {e}"));
                continue;
            }
        };
        let names = metric_names(q);
        let event_only = names.iter().any(|n| EVENT_ONLY.contains(&n.as_str()));
        let is_alert_condition = origin == "alert";
        if event_only && !has_data(&body) {
            excused.push(format!("{origin}: {q}"));
        }
        if is_alert_condition || event_only {
            for n in &names {
                if EVENT_ONLY.contains(&n.as_str()) {
                    continue;
                }
                let b = prom_query(prom_port, &format!("count({n})"))?;
                if !has_data(&b) {
                    problems.push(format!(
                        "{origin}: {q:?}: metric {n} has no series from any simulated board"
                    ));
                }
            }
        } else if !has_data(&body)
            && !q.contains("== 0")
            && !q.contains("rpi_filesystem_readonly{mountpoint=\"__none__\"}")
        {
            problems.push(format!("{origin}: {q:?} returned no data"));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} queries failed against the live Prometheus:\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    eprintln!(
        "e2e: {} rule expressions and dashboard queries evaluated against live data; {} return \
         no data because they read only metrics of events the boards do not simulate:\n  {}",
        queries.len(),
        excused.len(),
        excused.join("\n  ")
    );
    Ok(())
}
