//! `cargo xtask bench`: pi-exporter and Debian's node_exporter on the same fixture tree, scraped
//! alternately on loopback with Prometheus' headers, reported side by side as ratios.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::scrape::Scraper;

/// Kills the child when the bench ends, however it ends.
pub(crate) struct Running {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    pub(crate) fn start(
        name: &'static str,
        program: &Path,
        args: &[String],
        addr: SocketAddr,
    ) -> Result<Self> {
        Self::spawn(name, program, args, addr)?
            .ready(|addr| Scraper::connect(addr, "/metrics").and_then(|mut s| s.scrape()))
    }

    /// Starts `program`; [`Running::ready`] waits for it to answer.
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        addr: SocketAddr,
    ) -> Result<Self> {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        Ok(Self { name, child, addr })
    }

    /// Waits (10 s at most) until `probe` succeeds against the server.
    pub(crate) fn ready<T>(self, probe: impl Fn(SocketAddr) -> Result<T>) -> Result<Self> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match probe(self.addr) {
                Ok(_) => return Ok(self),
                Err(e) if Instant::now() > until => {
                    bail!("{} did not answer on {}: {e}", self.name, self.addr)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// CPU time (user + system) the process has used so far, from /proc.
    fn cpu_time(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("malformed /proc/pid/stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11).context("no utime")?.parse::<u64>()?
            + fields.get(12).context("no stime")?.parse::<u64>()?;
        // SAFETY: sysconf has no preconditions.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
            .unwrap_or(100)
            .max(1);
        Ok(Duration::from_micros(ticks * 1_000_000 / hz))
    }

    /// Peak and current resident set size in bytes, from /proc.
    pub(crate) fn rss(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |key: &str| -> Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(key))
                .with_context(|| format!("no {key}"))?;
            let kib: u64 = line.split_whitespace().nth(1).unwrap_or("").parse()?;
            Ok(kib * 1024)
        };
        Ok((field("VmHWM:")?, field("VmRSS:")?))
    }
}

pub(crate) fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub(crate) fn find_node_exporter() -> Result<PathBuf> {
    for candidate in [
        "/usr/bin/prometheus-node-exporter",
        "/usr/local/bin/node_exporter",
    ] {
        if Path::new(candidate).exists() {
            return Ok(candidate.into());
        }
    }
    bail!("node_exporter not found: install it with `apt-get install prometheus-node-exporter`")
}

#[derive(Debug)]
struct Latencies {
    samples: Vec<Duration>,
    bytes: usize,
}

impl Latencies {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[allow(clippy::cast_precision_loss)]
pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `cargo xtask bench` (or `--hostile`): the options, the release build, both exporters on
/// the same fixture tree, the measurement and the table. The servers live here so both are
/// killed however the bench ends.
pub(crate) fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("--hostile") {
        return crate::hostile_bench::run(&args[1..]);
    }
    let options = Options::parse(args)?;
    let root = crate::root();
    let tree = root
        .join("crates/pi-exporter/tests/fixtures")
        .join(&options.fixture);
    if !tree.is_dir() {
        bail!("no fixture tree {}", tree.display());
    }
    let node = find_node_exporter()?;
    crate::cargo(&["build", "--release", "--locked", "-p", "pi-exporter"])?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let pi = target.join("release/pi-exporter");

    let servers = start_both(&tree, &pi, &node)?;
    let measured = measure(&servers, &options)?;
    let sizes = (
        std::fs::metadata(&pi)?.len(),
        std::fs::metadata(&node)?.len(),
    );
    print_table(&options, &measured, sizes);
    for server in &servers {
        eprintln!("{} ran as pid {}", server.name, server.child.id());
    }
    Ok(())
}

/// The bench's command-line options.
struct Options {
    scrapes: usize,
    /// A tree under `crates/pi-exporter/tests/fixtures`.
    fixture: String,
    /// Between scrapes, so neither exporter's scrape absorbs the other's leftover work (Go's
    /// GC, a worker parking) on a 2-core machine; Prometheus scrapes a Pi every 15 s.
    pause: Duration,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut scrapes = 2000_usize;
        let mut fixture = String::from("pi4-sd");
        let mut pause = Duration::from_millis(5);
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            match arg.as_str() {
                "--scrapes" => {
                    scrapes = iter.next().context("--scrapes needs a number")?.parse()?;
                }
                "--fixture" => fixture = iter.next().context("--fixture needs a name")?.clone(),
                "--pause-ms" => {
                    pause = Duration::from_millis(
                        iter.next().context("--pause-ms needs a number")?.parse()?,
                    );
                }
                other => bail!("unknown bench option {other:?}"),
            }
        }
        Ok(Self {
            scrapes,
            fixture,
            pause,
        })
    }
}

/// Starts pi-exporter and node_exporter (only its collectors that pi-exporter has a
/// counterpart of) on the fixture tree, each on a free loopback port.
fn start_both(tree: &Path, pi: &Path, node: &Path) -> Result<[Running; 2]> {
    let path = |sub: &str| tree.join(sub).display().to_string();
    let pi_addr = free_port()?;
    let pi_args: Vec<String> = vec![
        format!("--web.listen-address={pi_addr}"),
        format!("--path.procfs={}", path("proc")),
        format!("--path.sysfs={}", path("sys")),
        format!("--path.rootfs={}", path("rootfs")),
        "--log.level=error".into(),
    ];
    let node_addr = free_port()?;
    let node_args: Vec<String> = vec![
        format!("--web.listen-address={node_addr}"),
        format!("--path.procfs={}", path("proc")),
        format!("--path.sysfs={}", path("sys")),
        format!("--path.rootfs={}", path("rootfs")),
        "--collector.disable-defaults".into(),
        "--collector.filesystem".into(),
        "--collector.diskstats".into(),
        "--collector.meminfo".into(),
        "--collector.loadavg".into(),
        "--collector.time".into(),
        "--log.level=error".into(),
    ];
    Ok([
        Running::start("pi-exporter", pi, &pi_args, pi_addr)?,
        Running::start("node_exporter", node, &node_args, node_addr)?,
    ])
}

/// What the scrapes measured, per server in `start_both`'s order.
struct Measured {
    results: Vec<Latencies>,
    cpu_before: Vec<Duration>,
    cpu_after: Vec<Duration>,
    /// Peak and current RSS after the scrapes.
    rss: Vec<(u64, u64)>,
}

/// Scrapes both servers alternately after a warm-up, with their CPU time around the scrapes
/// and their RSS after.
fn measure(servers: &[Running], options: &Options) -> Result<Measured> {
    let (scrapes, pause) = (options.scrapes, options.pause);
    let mut clients = Vec::new();
    for server in servers {
        clients.push(Scraper::connect(server.addr, "/metrics")?);
    }
    // Warm up allocators, thread pools and page cache before measuring.
    for client in &mut clients {
        for _ in 0..50 {
            client.scrape()?;
        }
    }
    let cpu_before: Vec<Duration> = servers
        .iter()
        .map(Running::cpu_time)
        .collect::<Result<_>>()?;
    let mut results: Vec<Latencies> = servers
        .iter()
        .map(|_| Latencies {
            samples: Vec::with_capacity(scrapes),
            bytes: 0,
        })
        .collect();
    // Alternate so both see the same machine state.
    for _ in 0..scrapes {
        for (client, result) in clients.iter_mut().zip(&mut results) {
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
            let started = Instant::now();
            result.bytes = client.scrape()?;
            result.samples.push(started.elapsed());
        }
    }
    let cpu_after: Vec<Duration> = servers
        .iter()
        .map(Running::cpu_time)
        .collect::<Result<_>>()?;
    let rss: Vec<(u64, u64)> = servers.iter().map(Running::rss).collect::<Result<_>>()?;
    Ok(Measured {
        results,
        cpu_before,
        cpu_after,
        rss,
    })
}

/// The side-by-side Markdown table; `sizes`: the pi-exporter and node_exporter binaries'.
fn print_table(options: &Options, measured: &Measured, sizes: (u64, u64)) {
    let (scrapes, fixture) = (options.scrapes, &options.fixture);
    let Measured {
        results,
        cpu_before,
        cpu_after,
        rss,
    } = measured;
    let (pi_size, node_size) = sizes;
    println!(
        "\n{scrapes} scrapes each, alternating with {} ms pauses, keep-alive, gzip, Prometheus Accept header; fixture {fixture}\n",
        options.pause.as_millis()
    );
    println!("| | pi-exporter | node_exporter | ratio | target |");
    println!("|---|---:|---:|---:|---|");
    let (p, n) = (&results[0], &results[1]);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    for (label, q, target) in [
        ("median scrape (ms)", 0.5, "≤ 0.33"),
        ("p99 scrape (ms)", 0.99, "≤ 0.33"),
    ] {
        let (a, b) = (ms(p.percentile(q)), ms(n.percentile(q)));
        println!(
            "| {label} | {a:.3} | {b:.3} | {:.2} | {target} |",
            ratio(a, b)
        );
    }
    #[allow(clippy::cast_precision_loss)]
    let per_scrape = |i: usize| ms(cpu_after[i].saturating_sub(cpu_before[i])) / scrapes as f64;
    let (a, b) = (per_scrape(0), per_scrape(1));
    println!(
        "| CPU per scrape (ms, user+sys) | {a:.3} | {b:.3} | {:.2} | |",
        ratio(a, b)
    );
    let (a, b) = (mib(rss[0].0), mib(rss[1].0));
    println!(
        "| peak RSS (MiB) | {a:.2} | {b:.2} | {:.2} | < 8 MiB and ≤ 0.5 |",
        ratio(a, b)
    );
    let (a, b) = (mib(rss[0].1), mib(rss[1].1));
    println!(
        "| RSS after run (MiB) | {a:.2} | {b:.2} | {:.2} | |",
        ratio(a, b)
    );
    #[allow(clippy::cast_precision_loss)]
    let (a, b) = (p.bytes as f64 / 1024.0, n.bytes as f64 / 1024.0);
    println!("| gzip body (KiB) | {a:.1} | {b:.1} | | |");
    let (a, b) = (mib(pi_size), mib(node_size));
    println!(
        "| binary (MiB) | {a:.2} | {b:.2} | {:.2} | < 6 MiB stripped |",
        ratio(a, b)
    );
}
