//! `cargo xtask relay-bench`: alert-relay under a burst of Alertmanager webhooks on loopback,
//! each answered only after its durable commit. Reports accepted webhooks/s, latency
//! percentiles, peak RSS once the store holds the burst's open alerts, the writes per group
//! commit, and beside them the raw fsync rate of the disk (the ceiling without group commit).
//!
//! `--storage postgres` runs the relay on a throwaway PostgreSQL server (`testpg`, durable:
//! `fsync` and `synchronous_commit` on, checked), a fresh database per scenario, with
//! `--instances` relays (1 or 2) on the same database, the load spread over them;
//! `--storage both` runs SQLite (1 instance), PostgreSQL with 1 and with 2 instances in one go
//! and prints them side by side.
//!
//! The load generator is in-repo (std only): `--connections` keep-alive HTTP/1.1 connections,
//! each posting its share of `--webhooks` bodies of one new firing alert each, back to back;
//! connection `c` goes to instance `c % instances`.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

mod pg;

use pg::Server;

const USAGE: &str = "usage: cargo xtask relay-bench [--webhooks N] [--connections C] \
[--storage sqlite|postgres|both] [--instances 1|2 (postgres only)] [--pool P (postgres connections per instance, 8)] \
[--binary PATH (skip the release build)]";

struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    Sqlite,
    Postgres,
}

/// One measured configuration: a storage and how many relays share it.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    storage: Storage,
    instances: usize,
}

impl Scenario {
    fn label(self) -> String {
        match self.storage {
            Storage::Sqlite => "SQLite, 1 instance".into(),
            Storage::Postgres if self.instances == 1 => "PostgreSQL, 1 instance".into(),
            Storage::Postgres => format!("PostgreSQL, {} instances", self.instances),
        }
    }
}

struct Options {
    webhooks: usize,
    connections: usize,
    pool: usize,
    scenarios: Vec<Scenario>,
    binary: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut webhooks = 20_000usize;
    let mut connections = 16usize;
    let mut pool = 8usize;
    let mut storage = "sqlite".to_owned();
    let mut instances = None;
    let mut binary = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let text = || -> Result<String> { it.clone().next().cloned().context(USAGE) };
        let value = || -> Result<usize> { text()?.parse().context(USAGE) };
        match a.as_str() {
            "--webhooks" => webhooks = value()?,
            "--connections" => connections = value()?,
            "--pool" => pool = value()?,
            "--instances" => instances = Some(value()?),
            "--storage" => storage = text()?,
            "--binary" => binary = Some(PathBuf::from(text()?)),
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
        it.next();
    }
    if webhooks < connections || connections == 0 {
        bail!("--webhooks must be at least --connections\n{USAGE}");
    }
    if pool == 0 {
        bail!("--pool must be at least 1\n{USAGE}");
    }
    let scenario = |storage, instances| Scenario { storage, instances };
    let scenarios = match (storage.as_str(), instances) {
        ("sqlite", None | Some(1)) => vec![scenario(Storage::Sqlite, 1)],
        ("sqlite", Some(_)) => {
            bail!("SQLite has one writer: --instances is 1 with --storage sqlite\n{USAGE}")
        }
        ("postgres", Some(n @ (1 | 2))) => vec![scenario(Storage::Postgres, n)],
        ("postgres", None) => vec![scenario(Storage::Postgres, 1)],
        ("both", None) => vec![
            scenario(Storage::Sqlite, 1),
            scenario(Storage::Postgres, 1),
            scenario(Storage::Postgres, 2),
        ],
        ("both", Some(_)) => {
            bail!(
                "--storage both runs SQLite (1) and PostgreSQL (1 and 2): no --instances\n{USAGE}"
            )
        }
        ("postgres", Some(_)) => bail!("--instances is 1 or 2\n{USAGE}"),
        (other, _) => bail!("unknown storage {other:?}\n{USAGE}"),
    };
    Ok(Options {
        webhooks,
        connections,
        pool,
        scenarios,
        binary,
    })
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    let binary = match &options.binary {
        Some(b) => b.clone(),
        None => {
            crate::cargo(&["build", "--release", "--locked", "-p", "alert-relay"])?;
            target_dir().join("release/alert-relay")
        }
    };
    let dir = std::env::temp_dir().join(format!("alert-relay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&binary, &dir, &options);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Where cargo puts the release binary: `CARGO_TARGET_DIR` when set, else `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => crate::root().join(d),
        None => crate::root().join("target"),
    }
}

/// What one scenario measured.
struct Outcome {
    scenario: Scenario,
    webhooks: usize,
    rate: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// Sum and count of the relays' `alert_relay_storage_commit_writes`.
    commit_writes: (f64, f64),
    /// Sum of the relays' `alert_relay_storage_commit_duration_seconds` (same count).
    commit_seconds: f64,
    /// (VmHWM, VmRSS) in KiB, per instance.
    memory: Vec<(u64, u64)>,
    elapsed: Duration,
    /// CPU seconds of the relays (all instances) during the burst.
    relay_cpu: f64,
    /// CPU seconds of this process (load generator and sink) during the burst.
    bench_cpu: f64,
    /// PostgreSQL only: transaction ids taken (transactions and savepoints that wrote), WAL
    /// bytes, CPU seconds of the server.
    server: Option<(i64, i64, f64)>,
    /// (Deliveries, distinct alerts) the sink received by the end of the burst, the same once
    /// they stopped coming (or every alert had one), and when that was after the burst.
    deliveries: ((usize, usize), (usize, usize), Duration),
}

fn bench(binary: &Path, dir: &Path, options: &Options) -> Result<()> {
    let load_before = loadavg();
    let mut server = if options
        .scenarios
        .iter()
        .any(|s| s.storage == Storage::Postgres)
    {
        Some(Server::start()?)
    } else {
        None
    };
    let fsyncs = fsync_rate(dir)?;
    let (sink, delivered) = start_sink()?;
    let mut outcomes = Vec::new();
    for (i, &scenario) in options.scenarios.iter().enumerate() {
        let storage = match scenario.storage {
            Storage::Sqlite => {
                let db = dir.join(format!("relay-{i}.db"));
                (format!("{{ sqlite: {} }}", db.display()), None)
            }
            Storage::Postgres => {
                let server = server.as_mut().context("no PostgreSQL server")?;
                let (url, name) = server.fresh_database()?;
                (
                    format!("{{ postgres: {{ url: '{url}', pool: {} }} }}", options.pool),
                    Some(name),
                )
            }
        };
        let config = dir.join(format!("relay-{i}.yml"));
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:0\nstorage: {}\n\
                 channels: {{ sink: {{ type: webhook, url: 'http://{sink}/sink', rate_limit: {{ per_second: 100000, burst: 1000 }} }} }}\n\
                 policies: {{ p: {{ steps: [ {{ notify: [sink] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
                storage.0
            ),
        )?;
        let pg = match (&server, &storage.1) {
            (Some(s), Some(db)) => Some((s, db.as_str())),
            _ => None,
        };
        let outcome = measure(binary, dir, &config, scenario, options, pg, &delivered)?;
        print_outcome(&outcome, options.connections);
        outcomes.push(outcome);
    }
    println!(
        "  raw fsync rate of this disk     {fsyncs:>9.0} /s (write + fdatasync, one at a time; {})",
        filesystem(dir)
    );
    if let Some(s) = &server {
        println!("  {}", s.settings);
    }
    if outcomes.len() > 1 {
        print_table(&outcomes);
    }
    println!(
        "  load average (1, 5, 15 min): {load_before} before, {} after; {} CPUs",
        loadavg(),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    Ok(())
}

/// Starts the scenario's relays, posts the burst, reads what they and the server did.
fn measure(
    binary: &Path,
    dir: &Path,
    config: &Path,
    scenario: Scenario,
    options: &Options,
    pg: Option<(&Server, &str)>,
    delivered: &Sink,
) -> Result<Outcome> {
    let mut relays = Vec::new();
    let mut addrs = Vec::new();
    // One after the other: the second finds the schema migrated.
    for n in 0..scenario.instances {
        let (relay, addr) = start_relay(binary, dir, config, n)?;
        relays.push(relay);
        addrs.push(addr);
    }
    let pids: Vec<u32> = relays.iter().map(|r| r.0.id()).collect();
    let relay_cpu = || pids.iter().filter_map(|&p| cpu_ticks(p)).sum::<u64>();
    delivered.reset();
    let server_before = pg.map(|(s, db)| s.snapshot(db)).transpose()?;
    let cpu_before = relay_cpu();
    let own_before = cpu_ticks(std::process::id()).unwrap_or(0);

    let per_connection = options.webhooks / options.connections;
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    for c in 0..options.connections {
        let tx = tx.clone();
        let addr = addrs[c % addrs.len()];
        std::thread::spawn(move || {
            let _ = tx.send(load(addr, c, per_connection));
        });
    }
    drop(tx);
    let mut latencies = Vec::with_capacity(options.webhooks);
    for r in rx {
        latencies.extend(r?);
    }
    let elapsed = start.elapsed();
    let cpu_after = relay_cpu();
    let own_after = cpu_ticks(std::process::id()).unwrap_or(0);
    let server = match (pg, server_before) {
        (Some((s, db)), Some(before)) => {
            let (xacts, wal, ticks) = before.delta(s.snapshot(db)?);
            Some((xacts, wal, seconds(ticks)))
        }
        _ => None,
    };
    let at_end = delivered.counts();
    // Right after the burst, as before --storage existed: the deliveries still to come would
    // add their one-write commits.
    let mut memory = Vec::new();
    let mut commit_writes = (0.0, 0.0);
    let mut commit_seconds = 0.0;
    for (relay, addr) in relays.iter().zip(&addrs) {
        memory.push(self::memory(relay.0.id())?);
        let metrics = get(*addr, "/metrics")?;
        let (sum, count) = histogram(&metrics, "alert_relay_storage_commit_writes");
        commit_writes.0 += sum;
        commit_writes.1 += count;
        commit_seconds += histogram(&metrics, "alert_relay_storage_commit_duration_seconds").0;
    }
    let settled = settle(delivered, latencies.len());
    latencies.sort();
    let n = latencies.len();
    let pct = |p: f64| latencies[((n as f64 * p) as usize).min(n - 1)];
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / elapsed.as_secs_f64();
    Ok(Outcome {
        scenario,
        webhooks: n,
        rate,
        p50: pct(0.50),
        p99: pct(0.99),
        max: latencies[n - 1],
        commit_writes,
        commit_seconds,
        memory,
        elapsed,
        relay_cpu: seconds(cpu_after.saturating_sub(cpu_before)),
        bench_cpu: seconds(own_after.saturating_sub(own_before)),
        server,
        deliveries: (at_end, settled.0, settled.1),
    })
}

/// Waits until the sink has received nothing new for a second, or every alert of the burst
/// (at most 30 s): the counts once the relays' delivery engines are done, and how long after
/// the burst.
fn settle(delivered: &Sink, webhooks: usize) -> ((usize, usize), Duration) {
    let start = Instant::now();
    let mut last = delivered.counts();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = delivered.counts();
        if now == last || now.1 >= webhooks || start.elapsed() > Duration::from_secs(30) {
            return (now, start.elapsed());
        }
        last = now;
    }
}

fn start_relay(binary: &Path, dir: &Path, config: &Path, n: usize) -> Result<(Relay, SocketAddr)> {
    let log = dir.join(format!("relay-stderr-{n}.log"));
    let child = Command::new(binary)
        .args(["run", "--log.level", "warn", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let relay = Relay(child);
    // At log level warn the relay does not log its address: find its listening socket.
    match wait_for_listener(relay.0.id()) {
        Ok(addr) => Ok((relay, addr)),
        Err(e) => {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Err(e.context(format!("alert-relay instance {n}: {}", text.trim())))
        }
    }
}

fn print_outcome(o: &Outcome, connections: usize) {
    let n = o.webhooks;
    println!(
        "alert-relay bench ({}): {n} webhooks (one new firing alert each) over {connections} keep-alive connections",
        o.scenario.label()
    );
    println!("  accepted webhooks/s (durable)   {:>9.0}", o.rate);
    println!(
        "  latency p50 / p99 / max         {:>6.2} / {:.2} / {:.2} ms",
        ms(o.p50),
        ms(o.p99),
        ms(o.max)
    );
    let (sum, count) = o.commit_writes;
    println!(
        "  writes per group commit (mean)  {:>9.1} ({count:.0} commits, {:.2} ms each on average)",
        if count > 0.0 { sum / count } else { 0.0 },
        if count > 0.0 {
            o.commit_seconds / count * 1000.0
        } else {
            0.0
        }
    );
    for (i, &(hwm, rss)) in o.memory.iter().enumerate() {
        let who = if o.memory.len() > 1 {
            format!(" (instance {})", i + 1)
        } else {
            String::new()
        };
        println!(
            "  peak RSS / RSS after the burst  {:>6.1} / {:.1} MiB ({n} open alerts stored){who}",
            mib(hwm),
            mib(rss)
        );
    }
    let busy = o.elapsed.as_secs_f64();
    println!(
        "  CPU during the burst            relays {:.0} %, load generator and sink {:.0} % of a core",
        o.relay_cpu / busy * 100.0,
        o.bench_cpu / busy * 100.0
    );
    if let Some((xacts, wal, cpu)) = o.server {
        #[allow(clippy::cast_precision_loss)]
        let per = |x: i64| x as f64 / n as f64;
        println!(
            "  PostgreSQL during the burst     {:.0} % of a core, {xacts} transaction ids ({:.2} per webhook; a write transaction and each savepoint that wrote take one), {:.0} WAL bytes per webhook",
            cpu / busy * 100.0,
            per(xacts),
            per(wal)
        );
    }
    let ((d0, a0), (d1, a1), after) = o.deliveries;
    println!(
        "  deliveries at the sink          {d0} ({a0} distinct alerts) by the end of the burst, {d1} ({a1} distinct) {:.0} s later",
        after.as_secs_f64()
    );
}

fn print_table(outcomes: &[Outcome]) {
    let sqlite = outcomes
        .iter()
        .find(|o| o.scenario.storage == Storage::Sqlite)
        .map(|o| o.rate);
    println!();
    println!(
        "| | accepted webhooks/s | p50 / p99 (ms) | peak RSS per instance (MiB) | ratio to SQLite | writes per commit | CPU relays / PostgreSQL (% of a core) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for o in outcomes {
        let rss: Vec<String> = o
            .memory
            .iter()
            .map(|(h, _)| format!("{:.1}", mib(*h)))
            .collect();
        let busy = o.elapsed.as_secs_f64();
        let (sum, count) = o.commit_writes;
        println!(
            "| {} | {:.0} | {:.1} / {:.1} | {} | {} | {:.1} | {:.0} / {} |",
            o.scenario.label(),
            o.rate,
            ms(o.p50),
            ms(o.p99),
            rss.join(", "),
            sqlite.map_or_else(|| "-".into(), |s| format!("{:.2}", o.rate / s)),
            if count > 0.0 { sum / count } else { 0.0 },
            o.relay_cpu / busy * 100.0,
            o.server.map_or_else(
                || "-".into(),
                |(_, _, c)| format!("{:.0}", c / busy * 100.0)
            ),
        );
    }
}

/// utime + stime of a process, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[allow(clippy::cast_precision_loss)]
fn seconds(ticks: u64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The file system type under `path` (a tmpfs would make every fsync free).
pub(crate) fn filesystem(path: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "an unknown file system".into();
    };
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let best = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((*f.get(1)?, *f.get(2)?))
        })
        .filter(|(mount, _)| path.starts_with(mount))
        .max_by_key(|(mount, _)| mount.len());
    match best {
        Some((mount, "tmpfs" | "ramfs")) => format!("{mount} (tmpfs: NOT durable)"),
        Some((mount, fs)) => format!("{fs} at {mount}"),
        None => "an unknown file system".into(),
    }
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

/// What the sink received: deliveries, and the distinct alerts among them (a delivery names
/// its alert by the bench's fingerprint, 16 hex digits).
#[derive(Debug, Default)]
struct Sink {
    deliveries: AtomicUsize,
    alerts: Mutex<HashSet<String>>,
}

impl Sink {
    fn reset(&self) {
        self.deliveries.store(0, Ordering::SeqCst);
        self.alerts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// (deliveries, distinct alerts delivered).
    fn counts(&self) -> (usize, usize) {
        (
            self.deliveries.load(Ordering::SeqCst),
            self.alerts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
        )
    }

    fn received(&self, body: &[u8]) {
        self.deliveries.fetch_add(1, Ordering::SeqCst);
        if let Some(fp) = fingerprint(body) {
            self.alerts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(fp);
        }
    }
}

/// The bench's fingerprint in a delivered body: `"fingerprint":"<16 hex digits>"`.
fn fingerprint(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find("\"fingerprint\":\"")? + "\"fingerprint\":\"".len();
    let fp = text.get(at..at + 16)?;
    fp.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then(|| fp.to_owned())
}

/// A provider that answers every request 200 at once and counts what it receives (deliveries
/// are not what is measured, but they run, with their own commits, as in production).
fn start_sink() -> Result<(SocketAddr, Arc<Sink>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sink = Arc::new(Sink::default());
    let shared = Arc::clone(&sink);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let sink = Arc::clone(&shared);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(match stream.try_clone() {
                    Ok(s) => s,
                    Err(_) => return,
                });
                let mut stream = stream;
                while let Ok((_, body)) = read_message(&mut reader) {
                    sink.received(&body);
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
    Ok((addr, sink))
}

/// Reads one HTTP/1.1 message (request or response) with a `Content-Length` body; returns its
/// first line and its body.
fn read_message(reader: &mut BufReader<TcpStream>) -> Result<(String, Vec<u8>)> {
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
    Ok((first, body))
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
            .0
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn scenarios(s: &str) -> Vec<(Storage, usize)> {
        parse(&args(s))
            .expect("valid")
            .scenarios
            .iter()
            .map(|s| (s.storage, s.instances))
            .collect()
    }

    #[test]
    fn storage_and_instances_choose_the_scenarios() {
        assert_eq!(scenarios(""), [(Storage::Sqlite, 1)]);
        assert_eq!(
            scenarios("--storage sqlite --instances 1"),
            [(Storage::Sqlite, 1)]
        );
        assert_eq!(scenarios("--storage postgres"), [(Storage::Postgres, 1)]);
        assert_eq!(
            scenarios("--storage postgres --instances 2"),
            [(Storage::Postgres, 2)]
        );
        assert_eq!(
            scenarios("--storage both --webhooks 100"),
            [
                (Storage::Sqlite, 1),
                (Storage::Postgres, 1),
                (Storage::Postgres, 2)
            ]
        );
        let o = parse(&args("--webhooks 500 --connections 4 --pool 2")).expect("valid");
        assert_eq!((o.webhooks, o.connections, o.pool), (500, 4, 2));
    }

    #[test]
    fn impossible_combinations_are_refused() {
        for bad in [
            "--storage sqlite --instances 2",
            "--storage postgres --instances 3",
            "--storage both --instances 2",
            "--storage mysql",
            "--pool 0",
            "--webhooks 10 --connections 20",
            "--instances",
            "--frobnicate",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sink_counts_deliveries_and_distinct_alerts() {
        let sink = Sink::default();
        let body = |fp: &str| format!(r#"{{"labels":{{}},"fingerprint":"{fp}","x":1}}"#);
        sink.received(body("0000000100000002").as_bytes());
        sink.received(body("0000000100000002").as_bytes());
        sink.received(body("0000000100000003").as_bytes());
        sink.received(b"not json");
        assert_eq!(sink.counts(), (4, 2));
        sink.reset();
        assert_eq!(sink.counts(), (0, 0));
    }

    #[test]
    fn histogram_sum_and_count_are_read() {
        let text = "# TYPE x histogram\nx_bucket{le=\"1\"} 3\nx_sum 12\nx_count 4\n";
        assert_eq!(histogram(text, "x"), (12.0, 4.0));
        assert_eq!(histogram(text, "y"), (0.0, 0.0));
    }

    #[test]
    fn own_cpu_time_is_read_from_proc() {
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(!filesystem(Path::new("/")).is_empty());
    }
}
