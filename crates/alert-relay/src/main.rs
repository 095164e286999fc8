use std::path::PathBuf;
use std::process::ExitCode;

use alert_relay::cli::Output;
use clap::{Arg, Command};

fn cli() -> Command {
    let config = || {
        Arg::new("config")
            .long("config")
            .value_name("FILE")
            .required(true)
            .help("YAML configuration file")
    };
    let web_config = || {
        Arg::new("web.config.file")
            .long("web.config.file")
            .value_name("FILE")
            .help(
                "exporter-toolkit web configuration of the listener: TLS, client certificates, \
                 basic-auth users (for /metrics, /healthz), headers, rate limit; reloaded when \
                 its files change (docs/web-config.md)",
            )
    };
    let output = || {
        Arg::new("output")
            .long("output")
            .value_name("FORMAT")
            .value_parser(["plain", "json"])
            .default_value("plain")
            .help("plain: lines for a human; json: one JSON document (docs/alert-relay.md)")
    };
    Command::new("alert-relay")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Durable Alertmanager webhook intake and delivery to chat, push and SMS")
        .subcommand_required(true)
        .args(serving::logging::args())
        .subcommand(Command::new("run").about("Run the relay").arg(config()).arg(web_config()))
        .subcommand(
            Command::new("check-config")
                .about("Validate a configuration and print the resolved routing")
                .arg(Arg::new("file").required(true).value_name("FILE"))
                .arg(web_config())
                .arg(
                    Arg::new("test")
                        .long("test")
                        .value_name("LABELS")
                        .help(
                            "Print where an alert with these labels goes \
                             ('severity=critical,site=lab-1' or '{a=\"b\"}'); exit 1 when no route matches",
                        ),
                ),
        )
        .subcommand(
            Command::new("incidents")
                .about("List the newest incidents (asks the running relay)")
                .arg(config())
                .arg(web_config())
                .arg(output()),
        )
        .subcommand(
            Command::new("ack")
                .about("Acknowledge an incident (or --unack, --escalate, --resolve) via the running relay")
                .arg(config())
                .arg(web_config())
                .arg(output())
                .arg(Arg::new("id").required(true).value_name("ID").value_parser(clap::value_parser!(i64)))
                .arg(Arg::new("by").long("by").value_name("NAME").help("who acknowledges (default: $USER)"))
                .arg(Arg::new("unack").long("unack").action(clap::ArgAction::SetTrue).conflicts_with_all(["escalate", "resolve"]))
                .arg(Arg::new("escalate").long("escalate").action(clap::ArgAction::SetTrue).conflicts_with("resolve"))
                .arg(Arg::new("resolve").long("resolve").action(clap::ArgAction::SetTrue)),
        )
        .subcommand(maintenance_command(config, web_config, output))
        .subcommand(
            Command::new("migrate-storage")
                .about(
                    "Copy a relay's whole state from SQLite into an empty PostgreSQL database \
                     (stop the relay first)",
                )
                .long_about(
                    "Copies a relay's whole state (incidents, alerts, deliveries in flight, storms, \
                     budgets, the ack-link key, Telegram offsets, the dead-man state, receipts, SMS \
                     ids, the relay clock) from the storage.sqlite file of --from into the \
                     storage.postgres database of --to, ids kept, in one transaction. Refuses a \
                     database that holds relay rows already, and a SQLite file of an older schema \
                     (start the relay on it once first). Stop the relay on the SQLite file first: \
                     the file is opened read-only, and writes made meanwhile are not copied.",
                )
                .arg(
                    Arg::new("from")
                        .long("from")
                        .value_name("CONFIG")
                        .required(true)
                        .help("configuration whose storage is storage.sqlite (the relay stopped)"),
                )
                .arg(
                    Arg::new("to")
                        .long("to")
                        .value_name("CONFIG")
                        .required(true)
                        .help("configuration whose storage is storage.postgres (an empty database)"),
                ),
        )
        .subcommand(
            Command::new("send-test")
                .about("Send a test message to every destination of one channel")
                .arg(config())
                .arg(
                    Arg::new("channel")
                        .long("channel")
                        .value_name("NAME")
                        .required(true),
                )
                .arg(output()),
        )
}

/// `maintenance add|list|end`, each with the relay's configuration (to reach its API).
fn maintenance_command(
    config: impl Fn() -> Arg,
    web_config: impl Fn() -> Arg,
    output: impl Fn() -> Arg,
) -> Command {
    let by = || {
        Arg::new("by")
            .long("by")
            .value_name("NAME")
            .help("who acts (default: $USER)")
    };
    let common = |c: Command| c.arg(config()).arg(web_config()).arg(output()).arg(by());
    Command::new("maintenance")
        .about("Maintenance windows: matching alerts are stored and shown but page nobody (via the running relay)")
        .subcommand_required(true)
        .subcommand(common(
            Command::new("add")
                .about("Create a window (longer than 24 h is fine; --weekly repeats it every 7 days)")
                .arg(Arg::new("matchers").long("matchers").value_name("MATCHERS").required(true)
                    .help("Alertmanager matchers: '{site=\"a\", severity=~\"warn.*\"}' or 'site=\"a\"'"))
                .arg(Arg::new("start").long("start").value_name("RFC3339").help("when it starts (default: now)"))
                .arg(Arg::new("end").long("end").value_name("RFC3339").help("when it ends (or --duration)"))
                .arg(Arg::new("duration").long("duration").value_name("DURATION")
                    .help("how long it lasts: 2h, 3d, 1h30m (or --end)")
                    .conflicts_with("end").required_unless_present("end"))
                .arg(Arg::new("weekly").long("weekly").action(clap::ArgAction::SetTrue)
                    .help("repeat every week at the same time"))
                .arg(Arg::new("reason").long("reason").value_name("TEXT").required(true)
                    .help("why (shown with the window, 500 characters at most)")),
        ))
        .subcommand(common(Command::new("list").about("Windows in force, to come, and over in the last 7 days")))
        .subcommand(common(
            Command::new("end")
                .about("End a window now (a weekly one for good): what it held pages as usual")
                .arg(Arg::new("id").required(true).value_name("ID").value_parser(clap::value_parser!(i64))),
        ))
}

/// The request of `maintenance SUBCOMMAND` from its arguments.
fn maintenance_request(sub: &str, m: &clap::ArgMatches) -> alert_relay::cli::MaintenanceCommand {
    use alert_relay::cli::MaintenanceCommand as C;
    let text = |k: &str| {
        m.try_get_one::<String>(k)
            .ok()
            .flatten()
            .cloned()
            .unwrap_or_default()
    };
    let by = m.get_one::<String>("by").cloned();
    match sub {
        "add" => C::Add {
            form: alert_relay::model::maintenance::WindowForm {
                matchers: text("matchers"),
                start: text("start"),
                end: text("end"),
                duration: text("duration"),
                weekly: m.get_flag("weekly"),
                reason: text("reason"),
            },
            by,
        },
        "end" => C::End {
            id: m.get_one::<i64>("id").copied().unwrap_or_default(),
            by,
        },
        _ => C::List,
    }
}

/// `check-config`: the resolved routing on stdout; or every error on stderr, one line each,
/// then the count (a linter's report, not log lines).
fn check_config(file: &std::path::Path, web_config: Option<&std::path::Path>) -> bool {
    match alert_relay::check_config(file, web_config) {
        Ok(routing) => {
            print!("{routing}");
            true
        }
        Err(e) => {
            let errors = alert_relay::cli::config_errors(&e);
            for line in &errors {
                eprintln!("error: {line}");
            }
            let n = errors.len();
            let s = if n == 1 { "" } else { "s" };
            eprintln!("{}: {n} error{s}", file.display());
            false
        }
    }
}

fn main() -> ExitCode {
    // Package builds only: shell completions and man pages (`cargo xtask dist`).
    #[cfg(feature = "cli-assets")]
    if let Some(status) =
        serving::cli_assets::run_if_asked(&std::env::args_os().collect::<Vec<_>>(), cli)
    {
        return status;
    }
    let matches = cli().get_matches();
    serving::logging::init(serving::logging::options(&matches));
    // The workspace's single TLS crypto provider; reqwest panics without one.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    let result: anyhow::Result<bool> = match matches.subcommand() {
        Some(("check-config", m)) if m.get_one::<String>("test").is_some() => {
            let labels = m.get_one::<String>("test").cloned().unwrap_or_default();
            alert_relay::check_config_test(&path(m, "file"), web(m).as_deref(), &labels).map(
                |(routes, matched)| {
                    print!("{routes}");
                    matched
                },
            )
        }
        Some(("check-config", m)) => Ok(check_config(&path(m, "file"), web(m).as_deref())),
        // Blocking, without a runtime: the PostgreSQL client runs its own.
        Some(("migrate-storage", m)) => {
            let to = path(m, "to");
            alert_relay::migrate_storage(&path(m, "from"), &to).map(|summary| {
                print!("{summary}");
                println!(
                    "next: start the relay with the configuration of {} (storage.postgres); do \
                     not start it on the SQLite file again",
                    to.display()
                );
                true
            })
        }
        // One thread runs HTTP and delivery; SQLite has its own thread.
        Some((cmd, m)) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Err(e) => Err(anyhow::Error::new(e).context("cannot start the async runtime")),
            Ok(rt) => rt.block_on(run_async(cmd, m)),
        },
        None => Ok(false),
    };
    // Plain lines for the commands a human types; log lines for the services.
    let plain = matches!(
        matches.subcommand_name(),
        Some("send-test" | "incidents" | "ack" | "maintenance")
    );
    exit_code(result, plain)
}

fn path(m: &clap::ArgMatches, key: &str) -> PathBuf {
    m.get_one::<String>(key)
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn web(m: &clap::ArgMatches) -> Option<PathBuf> {
    m.try_get_one::<String>("web.config.file")
        .ok()
        .flatten()
        .map(PathBuf::from)
}

fn output(m: &clap::ArgMatches) -> Output {
    m.try_get_one::<String>("output")
        .ok()
        .flatten()
        .and_then(|o| Output::parse(o))
        .unwrap_or_default()
}

/// The subcommands that need the async runtime: `run`, `incidents`, `ack`, `maintenance`,
/// `send-test`.
async fn run_async(cmd: &str, m: &clap::ArgMatches) -> anyhow::Result<bool> {
    match cmd {
        "run" => alert_relay::run(&path(m, "config"), web(m).as_deref())
            .await
            .map(|()| true),
        "incidents" => alert_relay::incident_cli(&path(m, "config"), web(m).as_deref(), None, None)
            .await
            .map(|v| {
                print!("{}", alert_relay::format_incidents(&v, output(m)));
                true
            }),
        "ack" => {
            let id = m.get_one::<i64>("id").copied().unwrap_or_default();
            let verb = ["unack", "escalate", "resolve"]
                .into_iter()
                .find(|v| m.get_flag(v))
                .unwrap_or("ack");
            let by = m.get_one::<String>("by").map(String::as_str);
            alert_relay::incident_cli(&path(m, "config"), web(m).as_deref(), Some((verb, id)), by)
                .await
                .map(|v| {
                    print!(
                        "{}",
                        alert_relay::cli::format_action(verb, id, &v, output(m))
                    );
                    true
                })
        }
        "maintenance" => {
            let Some((sub, m)) = m.subcommand() else {
                return Ok(false);
            };
            let command = maintenance_request(sub, m);
            alert_relay::cli::maintenance_cli(&path(m, "config"), web(m).as_deref(), &command)
                .await
                .map(|v| {
                    print!(
                        "{}",
                        alert_relay::cli::format_maintenance(&command, &v, output(m))
                    );
                    true
                })
        }
        _ => {
            let channel = m.get_one::<String>("channel").cloned().unwrap_or_default();
            alert_relay::send_test(&path(m, "config"), &channel)
                .await
                .map(|results| {
                    let (text, ok) = alert_relay::cli::format_send_test(&results, output(m));
                    print!("{text}");
                    ok
                })
        }
    }
}

/// The exit status, and each error once on stderr (every error of a configuration): as plain
/// `error: …` lines, or in the chosen log format (and priority under the journal).
fn exit_code(result: anyhow::Result<bool>, plain: bool) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            for line in alert_relay::cli::config_errors(&e) {
                if plain {
                    eprintln!("error: {line}");
                } else {
                    tracing::error!("{line}");
                }
            }
            ExitCode::FAILURE
        }
    }
}
