//! pi-exporter: a Prometheus exporter for the health of Raspberry Pis that nobody can reach.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of this crate.

pub mod cli;
pub mod collector;
pub mod doctor;
pub mod http;
pub mod i2c;
pub mod listen;
pub mod metrics;
pub mod paths;
pub mod registry;
pub mod simulate;
pub mod systemd;

use std::sync::Arc;

use anyhow::Context as _;
use serving::systemd::NotifyState;
use serving::web_config::WebConfig;

use crate::cli::{Config, DoctorCommand};
use crate::collector::{BuildContext, Scraper};
use crate::http::App;
use crate::listen::ListenAddress;

/// Runs the exporter until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let web = match &config.web_config_file {
        Some(path) => WebConfig::load(path)
            .with_context(|| format!("invalid --web.config.file {}", path.display()))?,
        None => WebConfig::disabled(),
    };
    let board = match &config.simulate_board {
        Some(path) => {
            let board = simulate::load(path)?;
            tracing::warn!(
                file = %path.display(),
                description = board.description.as_deref().unwrap_or(""),
                "simulating hardware from a board file: these metrics do not come from real devices"
            );
            Some(Arc::new(board))
        }
        None => None,
    };
    let context = registry::Context {
        collectors: BuildContext {
            paths: config.paths.clone(),
            options: config.collector_options.clone(),
            board,
        },
        doctor: config.doctor_collector.clone(),
    };
    tracing::info!(
        collectors = %config.collectors.join(","),
        "starting pi-exporter {}",
        env!("CARGO_PKG_VERSION")
    );
    // The paths only when they are not the machine's own (a container's mounts, a fixture).
    if let Some(paths) = config.paths.describe_non_default() {
        tracing::info!("reading {paths}");
    }
    let collectors = registry::build_enabled(&context, &config.collectors);
    // Kept to tell each collector of a clean stop once serving has ended.
    let stoppable: Vec<_> = collectors.iter().map(|(_, c)| Arc::clone(c)).collect();
    let scraper = Scraper::new(collectors, config.collector_timeout);
    scraper.log_inventory().await;
    let app = Arc::new(App::new(
        scraper,
        config.telemetry_path.clone(),
        web,
        config.max_requests,
        config.read_header_timeout,
    ));

    let listeners = http::bind(&config.listen).await?;
    let serving = Arc::new(http::serve(listeners, Arc::clone(&app)));
    for address in serving.addresses() {
        tracing::info!(%address, "listening");
    }
    serving::systemd::notify(&[NotifyState::Ready]);
    let watchdog = serving::systemd::watchdog_interval().map(|period| {
        let (app, serving) = (Arc::clone(&app), Arc::clone(&serving));
        tokio::spawn(async move {
            serving::systemd::run_watchdog(period, |budget| {
                let (app, serving) = (Arc::clone(&app), Arc::clone(&serving));
                async move { systemd::self_check(&app, &serving, budget).await }
            })
            .await;
        })
    });

    serving::signal::shutdown().await;
    tracing::info!("shutting down");
    serving::systemd::notify(&[NotifyState::Stopping]);
    if let Some(watchdog) = watchdog {
        watchdog.abort();
        let _ = watchdog.await;
    }
    match Arc::try_unwrap(serving) {
        Ok(serving) => serving.drain().await,
        Err(_) => tracing::warn!("server still shared at shutdown; not waiting for connections"),
    }
    for collector in &stoppable {
        collector.stop();
    }
    Ok(())
}

/// `pi-exporter doctor`: runs the checklist once; returns the rendered report and the exit
/// status (1 if any check FAILs). Listen addresses, web configuration and UPS not given as flags
/// are taken from the installed pi-exporter.service's command line.
pub fn run_doctor(config: &Config, command: DoctorCommand) -> anyhow::Result<(String, u8)> {
    let findings = doctor_findings(config, command)?;
    let problems = doctor::roots::problems(&config.paths);
    Ok((
        doctor::render::render(&findings, &problems, command.format),
        doctor::exit_status(&findings),
    ))
}

/// The checklist's findings for `pi-exporter doctor`.
pub fn doctor_findings(
    config: &Config,
    command: DoctorCommand,
) -> anyhow::Result<Vec<doctor::Finding>> {
    let board = match &config.simulate_board {
        Some(path) => Some(Arc::new(simulate::load(path)?)),
        None => None,
    };
    let paths = &config.paths;
    let mut options = config.collector_options.clone();
    let mut listen: Result<(Vec<ListenAddress>, String), String> =
        Ok((config.listen.clone(), "flags".to_owned()));
    // Paths in the flags name files of the checked system, as the unit's do.
    let mut web_config = config.web_config_file.as_deref().map(|p| match p.to_str() {
        Some(host) if p.is_absolute() => paths.rooted(host),
        _ => p.to_owned(),
    });
    let mut ups_unknown = None;
    if !(command.listen_given && command.web_config_given && command.ups_given) {
        match unit_config(paths) {
            Ok(Some(unit)) => {
                let origin = "pi-exporter.service ExecStart".to_owned();
                if !command.listen_given {
                    listen = Ok((unit.listen.clone(), origin));
                }
                if !command.web_config_given {
                    web_config = unit
                        .web_config_file
                        .as_deref()
                        .and_then(|p| p.to_str())
                        .map(|p| paths.rooted(p));
                }
                if !command.ups_given {
                    options.ups = unit.collector_options.ups.clone();
                }
                // The endurance the service declares, unless given here.
                if options.storage.rated_endurance.is_empty() {
                    options.storage.rated_endurance =
                        unit.collector_options.storage.rated_endurance.clone();
                }
            }
            Ok(None) if !command.listen_given => {
                listen = Ok((
                    config.listen.clone(),
                    "default, no pi-exporter.service".to_owned(),
                ));
            }
            Ok(None) => {}
            Err(reason) => {
                if !command.ups_given {
                    ups_unknown = Some(reason.clone());
                }
                if !command.listen_given {
                    listen = Err(reason);
                }
            }
        }
    }
    let context = BuildContext {
        paths: paths.clone(),
        options,
        board,
    };
    let inputs = doctor::Inputs {
        exposure: listen.map(|(listen, origin)| doctor::Exposure {
            listen,
            web_config,
            origin,
        }),
        context,
        ups_unknown,
    };
    let sources =
        doctor::facts::Sources::build(&inputs.context, doctor::collector::DEFAULT_INTERVAL);
    Ok(doctor::run(&inputs, &sources))
}

/// The flags in the installed pi-exporter.service's `ExecStart=`, parsed as the service would.
fn unit_config(paths: &paths::Paths) -> Result<Option<Config>, String> {
    let Some(unit) = doctor::config::load_unit(paths, "pi-exporter.service")? else {
        return Ok(None);
    };
    let mut words = doctor::config::unit_command(paths, &unit)?;
    // `--ups.config` is read while the flags are parsed: read it through the rootfs prefix.
    let mut next_is_ups_config = false;
    for word in &mut words {
        if next_is_ups_config && word.starts_with('/') {
            *word = paths.rooted(word).to_string_lossy().into_owned();
        } else if let Some(file) = word.strip_prefix("--ups.config=")
            && file.starts_with('/')
        {
            *word = format!("--ups.config={}", paths.rooted(file).display());
        }
        next_is_ups_config = word == "--ups.config";
    }
    cli::try_parse(words).map(Some).map_err(|e| {
        let message = e.to_string();
        format!(
            "cannot parse the ExecStart of {}: {}",
            unit.file,
            message.lines().next().unwrap_or_default()
        )
    })
}
