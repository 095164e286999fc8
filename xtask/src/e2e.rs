//! Fleet assets: `cargo xtask promtool` (static checks of `prometheus/`, `grafana/`, part of
//! `cargo xtask ci`) and `cargo xtask e2e` (the full chain on loopback).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::root;

/// Metric names from issue 5 (the UPS collector), accepted before `docs/metrics.md` lists them.
const UPS_METRICS: &[&str] = &[
    "rpi_ups_info",
    "rpi_ups_on_battery",
    "rpi_ups_battery_voltage_volts",
    "rpi_ups_battery_current_amperes",
    "rpi_ups_battery_charge_ratio",
    "rpi_ups_charging",
    "rpi_ups_runtime_seconds",
    "rpi_ups_input_voltage_volts",
    "rpi_ups_status",
    "rpi_ups_load_ratio",
    "rpi_ups_shutdown_pending",
];

fn tool(name: &str, package: &str) -> Result<PathBuf> {
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

/// Every `rpi_*` / `alert_relay_*` identifier in `text`.
pub(crate) fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    // ':' belongs to recording-rule names (`site:rpi_x:max`), which are not metrics.
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        if (i == 0 || !ident(bytes[i - 1]))
            && (bytes[i..].starts_with(b"rpi_") || bytes[i..].starts_with(b"alert_relay_"))
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
    let mut known: BTreeSet<String> = UPS_METRICS.iter().map(|s| (*s).to_string()).collect();
    for doc in ["docs/metrics.md", "docs/alert-relay.md"] {
        let text = std::fs::read_to_string(root().join(doc)).with_context(|| doc.to_string())?;
        known.extend(metric_names(&text));
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

/// `cargo xtask dist [--target TRIPLE [--glibc 2.31]]`: release build of both binaries and
/// their Debian packages (cargo-deb, `--no-build`) under `target/[TRIPLE/]debian/`. With
/// `--glibc`, the build is `cargo zigbuild --target TRIPLE.GLIBC` (the glibc floor).
pub(crate) fn dist(args: &[String]) -> Result<()> {
    let mut target = None;
    let mut glibc = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--target" => target = Some(it.next().context("--target needs a triple")?.clone()),
            "--glibc" => glibc = Some(it.next().context("--glibc needs a version")?.clone()),
            other => bail!(
                "usage: cargo xtask dist [--target TRIPLE [--glibc 2.31]] (unknown {other:?})"
            ),
        }
    }
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_deb = Command::new(&cargo_bin)
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_deb {
        bail!(
            "cargo-deb is not installed: run `cargo install cargo-deb` (then `cargo xtask dist` again)"
        );
    }
    let zig_target = match (&target, &glibc) {
        (Some(t), Some(g)) => Some(format!("{t}.{g}")),
        (None, Some(_)) => bail!("--glibc needs --target"),
        _ => None,
    };
    let build_cmd = if zig_target.is_some() {
        "zigbuild"
    } else {
        "build"
    };
    let mut build = vec![
        build_cmd,
        "--release",
        "--locked",
        "-p",
        "pi-exporter",
        "-p",
        "alert-relay",
    ];
    if let Some(t) = zig_target.as_ref().or(target.as_ref()) {
        build.extend(["--target", t.as_str()]);
    }
    crate::cargo(&build)?;
    for pkg in ["pi-exporter", "alert-relay"] {
        let mut deb = vec!["deb", "--no-build", "--no-strip", "-p", pkg];
        if let Some(t) = &target {
            deb.extend(["--target", t.as_str()]);
        }
        crate::cargo(&deb)?;
    }
    Ok(())
}

/// `systemd-analyze verify` on the shipped units, when systemd-analyze exists (the binaries
/// are not installed here, so "not executable" findings are expected and ignored).
fn verify_units() -> Result<()> {
    let Ok(sa) = tool("systemd-analyze", "systemd") else {
        eprintln!("systemd-analyze not found: units not verified");
        return Ok(());
    };
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
