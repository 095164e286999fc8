use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    // Package builds only: shell completions and man pages (`cargo xtask dist`).
    #[cfg(feature = "cli-assets")]
    if let Some(status) = serving::cli_assets::run_if_asked(
        &std::env::args_os().collect::<Vec<_>>(),
        pi_exporter::cli::command,
    ) {
        return status;
    }
    let config = pi_exporter::cli::parse();
    if let Some(command) = config.doctor {
        // The report goes to stdout; logs (warnings only) to stderr, so JSON stays parseable.
        serving::logging::init(serving::logging::Options {
            level: config.log.level.min(tracing::Level::WARN),
            ..config.log
        });
        return match pi_exporter::run_doctor(&config, command) {
            Ok((report, status)) => {
                print!("{report}");
                ExitCode::from(status)
            }
            Err(e) => {
                eprintln!("pi-exporter doctor: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    serving::logging::init(config.log);
    // The workspace's single TLS crypto provider.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    // One thread serves HTTP; collectors run on a small pool of blocking threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .thread_keep_alive(Duration::from_secs(120))
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(pi_exporter::run(config)),
        Err(e) => Err(anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
