//! `cargo xtask bench --hostile`: pi-exporter, alert-relay and Debian's node_exporter, each
//! beside the same attack in the same run (half-open request heads and stalled TLS handshakes,
//! from one peer address and from thirty), timed with legitimate requests; reported side by
//! side as ratios to node_exporter, with pi-exporter's peak RSS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use hostile::{SelfSigned, Stall, TLS_WEB_CONFIG};

use crate::bench::{Running, find_node_exporter, free_port, mib, ms};

const TOKEN: &str = "bench-token";
const TIMEOUT: Duration = Duration::from_secs(10);

struct Scenario {
    name: &'static str,
    peers: u8,
    connections: usize,
    stall: Stall,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "1000 half-open, one peer",
        peers: 1,
        connections: 1000,
        stall: Stall::HalfHead,
    },
    Scenario {
        name: "300 half-open, 30 peers",
        peers: 30,
        connections: 300,
        stall: Stall::HalfHead,
    },
    Scenario {
        name: "1000 stalled TLS, one peer",
        peers: 1,
        connections: 1000,
        stall: Stall::TlsHello,
    },
    Scenario {
        name: "300 stalled TLS, 30 peers",
        peers: 30,
        connections: 300,
        stall: Stall::TlsHello,
    },
];

/// A server under attack and the legitimate request it is timed with.
struct Target {
    running: Running,
    request: Vec<u8>,
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut requests = 20_usize;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--requests" => requests = iter.next().context("--requests needs a number")?.parse()?,
            other => bail!("unknown bench --hostile option {other:?}"),
        }
    }
    let node = find_node_exporter()?;
    crate::cargo(&[
        "build",
        "--release",
        "--locked",
        "-p",
        "pi-exporter",
        "-p",
        "alert-relay",
    ])?;
    let dir = std::env::temp_dir().join(format!("pifleet-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&dir, &node, requests);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(dir: &Path, node: &Path, requests: usize) -> Result<()> {
    let cert = SelfSigned::write_into(dir)?;
    std::fs::write(dir.join("web.yml"), TLS_WEB_CONFIG)?;
    println!(
        "\n{requests} legitimate requests per server and attack, one at a time, Connection: close; \
         median and max (ms)\n"
    );
    println!(
        "| attack | pi-exporter | alert-relay | node_exporter | pi / node (median) | relay / node (median) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut pi_peak = 0;
    for tls in [false, true] {
        let der = tls.then_some(&cert.der[..]);
        let targets = start_targets(dir, node, der)?;
        for scenario in SCENARIOS
            .iter()
            .filter(|s| (s.stall == Stall::TlsHello) == tls)
        {
            let rows = targets
                .iter()
                .map(|t| time_under_attack(t, scenario, requests, der))
                .collect::<Result<Vec<_>>>()?;
            let ratio = |i: usize| ms(rows[i].0) / ms(rows[2].0).max(f64::MIN_POSITIVE);
            let cell = |i: usize| format!("{:.2} / {:.2}", ms(rows[i].0), ms(rows[i].1));
            println!(
                "| {}{} | {} | {} | {} | {:.2} | {:.2} |",
                scenario.name,
                if tls { " (TLS)" } else { "" },
                cell(0),
                cell(1),
                cell(2),
                ratio(0),
                ratio(1)
            );
        }
        pi_peak = pi_peak.max(targets[0].running.rss()?.0);
    }
    println!(
        "\npi-exporter peak RSS during the attacks: {:.2} MiB (target < 16 MiB)",
        mib(pi_peak)
    );
    Ok(())
}

/// Median and maximum latency of `requests` legitimate requests while `scenario` holds its
/// connections open against the target.
fn time_under_attack(
    target: &Target,
    scenario: &Scenario,
    requests: usize,
    tls_cert: Option<&[u8]>,
) -> Result<(Duration, Duration)> {
    let peers: Vec<_> = hostile::loopback_peers(scenario.peers.saturating_add(1))
        .into_iter()
        .skip(usize::from(scenario.peers > 1))
        .collect();
    let held = hostile::hold(
        target.running.addr,
        &peers,
        scenario.connections,
        scenario.stall,
    );
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..requests {
        let (took, status) = send(target.running.addr, &target.request, tls_cert)?;
        if status >= 300 {
            bail!(
                "{} answered {status} beside the attack",
                target.running.name
            );
        }
        samples.push(took);
    }
    drop(held);
    // Let the server notice the closed connections before the next one is attacked.
    std::thread::sleep(Duration::from_millis(300));
    samples.sort();
    Ok((samples[samples.len() / 2], samples[samples.len() - 1]))
}

fn send(addr: SocketAddr, request: &[u8], tls_cert: Option<&[u8]>) -> Result<(Duration, u16)> {
    Ok(match tls_cert {
        Some(cert) => hostile::timed_tls_request(addr, cert, request, TIMEOUT)?,
        None => hostile::timed_request(addr, request, TIMEOUT)?,
    })
}

/// pi-exporter and node_exporter on the same fixture tree, and alert-relay, each with the
/// shared web configuration serving the certificate `tls` (DER) when given.
fn start_targets(dir: &Path, node: &Path, tls: Option<&[u8]>) -> Result<Vec<Target>> {
    let root = crate::root();
    let tree = root.join("crates/pi-exporter/tests/fixtures/pi4-sd");
    let release = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("release");
    let web = format!("--web.config.file={}", dir.join("web.yml").display());
    let fixture_args = |addr: SocketAddr| {
        let mut args = vec![
            format!("--web.listen-address={addr}"),
            format!("--path.procfs={}", tree.join("proc").display()),
            format!("--path.sysfs={}", tree.join("sys").display()),
            format!("--path.rootfs={}", tree.join("rootfs").display()),
            "--log.level=error".to_owned(),
        ];
        if tls.is_some() {
            args.push(web.clone());
        }
        args
    };
    let scrape = hostile::get("/metrics", "");
    let (pi_addr, node_addr, relay_addr) = (free_port()?, free_port()?, free_port()?);
    let mut node_args = fixture_args(node_addr);
    node_args.extend(
        [
            "--collector.disable-defaults",
            "--collector.filesystem",
            "--collector.meminfo",
        ]
        .map(str::to_owned),
    );
    let suffix = if tls.is_some() { "tls" } else { "plain" };
    let relay_config = dir.join(format!("relay-{suffix}.yml"));
    let db = dir.join(format!("relay-{suffix}.db"));
    std::fs::write(&relay_config, relay_yaml(relay_addr, &db))?;
    let mut relay_args = vec![
        "--log.level=error".to_owned(),
        "run".to_owned(),
        "--config".to_owned(),
        relay_config.display().to_string(),
    ];
    if tls.is_some() {
        relay_args.push(web.clone());
    }
    let started = [
        (
            "pi-exporter",
            release.join("pi-exporter"),
            fixture_args(pi_addr),
            pi_addr,
            scrape.clone(),
        ),
        (
            "alert-relay",
            release.join("alert-relay"),
            relay_args,
            relay_addr,
            webhook_request(),
        ),
        (
            "node_exporter",
            node.to_owned(),
            node_args,
            node_addr,
            scrape,
        ),
    ];
    started
        .into_iter()
        .map(|(name, program, args, addr, request)| {
            let probe = hostile::get("/metrics", "");
            let running =
                Running::spawn(name, &program, &args, addr)?.ready(|a| send(a, &probe, tls))?;
            Ok(Target { running, request })
        })
        .collect()
}

fn relay_yaml(addr: SocketAddr, db: &Path) -> String {
    format!(
        "listen: {addr}\nauth: {{ bearer_token: {TOKEN} }}\nstorage: {{ sqlite: {} }}\n\
         channels: {{ sink: {{ type: webhook, url: 'http://127.0.0.1:9/closed' }} }}\n\
         policies: {{ p: {{ steps: [ {{ notify: [sink] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
        db.display()
    )
}

fn webhook_request() -> Vec<u8> {
    let body = r#"{"version":"4","status":"firing","receiver":"relay","groupKey":"{}:{}","alerts":[{"status":"firing","labels":{"alertname":"Bench","instance":"pi-1"},"annotations":{},"startsAt":"2026-01-01T00:00:00Z","fingerprint":"00000000000000be"}]}"#;
    format!(
        "POST /webhook HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
