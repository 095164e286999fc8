//! `cargo xtask relay-bench`: alert-relay under a burst of Alertmanager webhooks on loopback,
//! each answered only after its durable commit. Reports accepted webhooks/s, latency
//! percentiles, peak RSS once the store holds the burst's open alerts, the writes per group
//! commit, and beside them the raw fsync rate of the disk (the ceiling without group commit).
//!
//! The load generator is in-repo (std only): `--connections` keep-alive HTTP/1.1 connections,
//! each posting its share of `--webhooks` bodies of one new firing alert each, back to back.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

const USAGE: &str = "usage: cargo xtask relay-bench [--webhooks N] [--connections C] [--binary PATH (skip the release build)]";

struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut webhooks = 20_000usize;
    let mut connections = 16usize;
    let mut binary = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value =
            || -> Result<usize> { it.clone().next().context(USAGE)?.parse().context(USAGE) };
        match a.as_str() {
            "--webhooks" => webhooks = value()?,
            "--connections" => connections = value()?,
            "--binary" => binary = Some(PathBuf::from(it.clone().next().context(USAGE)?)),
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
        it.next();
    }
    if webhooks < connections || connections == 0 {
        bail!("--webhooks must be at least --connections\n{USAGE}");
    }
    let binary = match binary {
        Some(b) => b,
        None => {
            crate::cargo(&["build", "--release", "--locked", "-p", "alert-relay"])?;
            crate::root().join("target/release/alert-relay")
        }
    };
    let dir = std::env::temp_dir().join(format!("alert-relay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&binary, &dir, webhooks, connections);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(binary: &Path, dir: &Path, webhooks: usize, connections: usize) -> Result<()> {
    let fsyncs = fsync_rate(dir)?;
    let sink = start_sink()?;
    let config = dir.join("relay.yml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nstorage: {{ sqlite: {} }}\n\
             channels: {{ sink: {{ type: webhook, url: 'http://{sink}/sink', rate_limit: {{ per_second: 100000, burst: 1000 }} }} }}\n\
             policies: {{ p: {{ steps: [ {{ notify: [sink] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
            dir.join("relay.db").display()
        ),
    )?;
    let mut child = Command::new(binary)
        .args(["run", "--log.level", "warn", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stderr = child.stderr.take().context("no stderr")?;
    let relay = Relay(child);
    // At log level warn the relay does not log its address: find its listening socket.
    drop(stderr);
    let addr = wait_for_listener(relay.0.id())?;

    let per_connection = webhooks / connections;
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    for c in 0..connections {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(load(addr, c, per_connection));
        });
    }
    drop(tx);
    let mut latencies = Vec::with_capacity(webhooks);
    for r in rx {
        latencies.extend(r?);
    }
    let elapsed = start.elapsed();
    let (hwm, rss) = memory(relay.0.id())?;
    let metrics = get(addr, "/metrics")?;
    let (sum, count) = histogram(&metrics, "alert_relay_storage_commit_writes");
    latencies.sort();
    let n = latencies.len();
    let pct = |p: f64| latencies[((n as f64 * p) as usize).min(n - 1)];
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "alert-relay bench: {n} webhooks (one new firing alert each) over {connections} keep-alive connections"
    );
    println!("  accepted webhooks/s (durable)   {rate:>9.0}");
    println!(
        "  latency p50 / p99 / max         {:>6.2} / {:.2} / {:.2} ms",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(latencies[n - 1])
    );
    println!(
        "  writes per group commit (mean)  {:>9.1}",
        if count > 0.0 { sum / count } else { 0.0 }
    );
    println!(
        "  peak RSS / RSS after the burst  {:>6.1} / {:.1} MiB ({n} open alerts stored)",
        mib(hwm),
        mib(rss)
    );
    println!(
        "  raw fsync rate of this disk     {fsyncs:>9.0} /s (write + fdatasync, one at a time)"
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[allow(clippy::cast_precision_loss)]
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The disk's physical commit ceiling: 512-byte appends, each followed by fdatasync.
fn fsync_rate(dir: &Path) -> Result<f64> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(2) {
        f.write_all(&[0u8; 512])?;
        f.sync_data()?;
        n += 1;
    }
    let _ = std::fs::remove_file(&path);
    Ok(f64::from(n) / start.elapsed().as_secs_f64())
}

/// A provider that answers every request 200 at once (deliveries are not what is measured,
/// but they run, with their own commits, as in production).
fn start_sink() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(match stream.try_clone() {
                    Ok(s) => s,
                    Err(_) => return,
                });
                let mut stream = stream;
                while read_message(&mut reader).is_ok() {
                    if stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Reads one HTTP/1.1 message (request or response) with a `Content-Length` body; returns its
/// first line.
fn read_message(reader: &mut BufReader<TcpStream>) -> Result<String> {
    let mut first = String::new();
    if reader.read_line(&mut first)? == 0 {
        bail!("closed");
    }
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("closed");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(first)
}

fn load(addr: SocketAddr, connection: usize, count: usize) -> Result<Vec<Duration>> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let fp = format!("{:08x}{:08x}", connection, i);
        let body = format!(
            r#"{{"version":"4","groupKey":"{{}}:{{alertname=\"Bench\"}}","truncatedAlerts":0,"status":"firing","receiver":"relay","groupLabels":{{"alertname":"Bench"}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://alertmanager:9093","alerts":[{{"status":"firing","labels":{{"alertname":"Bench","instance":"pi-{fp}:9831","severity":"warning","site":"bench"}},"annotations":{{"summary":"benchmark alert {fp}"}},"startsAt":"2026-03-01T12:30:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph","fingerprint":"{fp}"}}]}}"#
        );
        let start = Instant::now();
        write!(
            stream,
            "POST /webhook HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nUser-Agent: Alertmanager/0.34.0\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let status: u16 = read_message(&mut reader)?
            .split_whitespace()
            .nth(1)
            .context("no status line")?
            .parse()?;
        latencies.push(start.elapsed());
        if status != 200 {
            bail!("webhook answered {status}");
        }
    }
    Ok(latencies)
}

fn get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}

/// `_sum` and `_count` of a histogram in OpenMetrics text.
fn histogram(text: &str, name: &str) -> (f64, f64) {
    let value = |suffix: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{suffix} ")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (value("_sum"), value("_count"))
}

/// (VmHWM, VmRSS) in KiB.
fn memory(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name}"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("malformed")?
            .parse()?)
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

/// The relay's listening port, found in /proc/net/tcp by its socket inodes.
fn wait_for_listener(pid: u32) -> Result<SocketAddr> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(port) = listening_port(pid)
            && get(SocketAddr::from(([127, 0, 0, 1], port)), "/healthz")
                .is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
        {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        if Instant::now() > until {
            bail!("alert-relay did not start listening");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|p: PathBuf| {
            p.to_str()
                .and_then(|s| s.strip_prefix("socket:["))
                .map(|s| s.trim_end_matches(']').to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // State 0A is LISTEN.
        (f.get(3) == Some(&"0A") && f.get(9).is_some_and(|i| inodes.iter().any(|x| x == i)))
            .then(|| {
                f.get(1)
                    .and_then(|a| a.split(':').nth(1))
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            })
            .flatten()
    })
}
