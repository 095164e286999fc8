//! Command-line flags in the Prometheus exporter convention (`--web.listen-address`,
//! `--path.sysfs`, `--[no-]collector.<name>`, ...), parsed into a [`Config`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::collector::CollectorOptions;
use crate::collector::flags::{self, FlagError};
use crate::doctor::render::Format;
use crate::listen::ListenAddress;
use crate::paths::Paths;
use crate::registry;

/// Default port: unallocated in the Prometheus default-port list when chosen (see README).
pub const DEFAULT_PORT: u16 = 9831;

/// Everything the exporter needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<ListenAddress>,
    pub telemetry_path: String,
    pub web_config_file: Option<PathBuf>,
    pub max_requests: usize,
    pub read_header_timeout: Duration,
    pub paths: Paths,
    /// Names of the enabled collectors, in [`registry::ALL`] order.
    pub collectors: Vec<&'static str>,
    pub collector_timeout: Duration,
    pub collector_options: CollectorOptions,
    /// The doctor collector's options (its interval, and this server's own listen addresses
    /// and web configuration for its exposure check).
    pub doctor_collector: crate::doctor::collector::Options,
    /// `--simulate.board`: replace hardware devices with the simulators described in this file.
    pub simulate_board: Option<PathBuf>,
    /// `--log.level` and `--log.format`.
    pub log: serving::logging::Options,
    /// `pi-exporter doctor`: run the checklist once instead of serving.
    pub doctor: Option<DoctorCommand>,
}

/// The `doctor` subcommand, and which of the settings it reads were given as flags (the others
/// are taken from the installed pi-exporter.service's command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoctorCommand {
    pub format: Format,
    pub listen_given: bool,
    pub web_config_given: bool,
    pub ups_given: bool,
}

/// Flags take durations in the syntax of the web configuration.
pub use serving::duration::parse as parse_duration;

/// The clap definition of every flag and subcommand (also the source of the packaged shell
/// completions and man pages).
pub fn command() -> Command {
    Command::new("pi-exporter")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Prometheus exporter for Raspberry Pi health: firmware, storage, clock and power")
        .args(web_args())
        .args(path_args())
        .args(collector_args())
        .arg(
            Arg::new("simulate.board")
                .long("simulate.board")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Simulate the hardware (firmware, RTC, UPS) described in this board file instead of using real devices"),
        )
        .args(serving::logging::args())
        // Every flag works after `doctor` too: the paths, the simulation, the listen address and
        // web configuration and the UPS it checks.
        .mut_args(|arg| arg.global(true))
        .subcommand(
            Command::new("doctor")
                .about("Run the field checklist once (storage, power, time, recovery, access) and print a verdict per check; exit status 1 if any check FAILs (docs/doctor.md)")
                .arg(
                    Arg::new("format")
                        .long("format")
                        .value_name("FORMAT")
                        .default_value("table")
                        .value_parser(["table", "json"])
                        .help("table for people, json for provisioning scripts"),
                ),
        )
}

/// `--web.*`: the server.
fn web_args() -> Vec<Arg> {
    vec![
        Arg::new("web.listen-address")
            .long("web.listen-address")
            .value_name("ADDRESS")
            .action(ArgAction::Append)
            .value_parser(ListenAddress::parse)
            .help(format!("Address to listen on, repeatable; :PORT means every interface [default: :{DEFAULT_PORT}]")),
        Arg::new("web.telemetry-path")
            .long("web.telemetry-path")
            .value_name("PATH")
            .default_value("/metrics")
            .help("Path under which to expose metrics"),
        Arg::new("web.config.file")
            .long("web.config.file")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("exporter-toolkit web configuration (TLS, basic auth, headers, rate limit); re-read when it changes"),
        Arg::new("web.max-requests")
            .long("web.max-requests")
            .value_name("N")
            .default_value("40")
            .value_parser(clap::value_parser!(usize))
            .help("Maximum number of scrapes served at once; more get 503 (0 = no limit)"),
        Arg::new("web.read-header-timeout")
            .long("web.read-header-timeout")
            .value_name("DURATION")
            .default_value("10s")
            .value_parser(parse_duration)
            .help("Close connections that have not sent a complete request head (and TLS handshake) within this time"),
    ]
}

/// `--path.*`: where the kernel's filesystems are mounted.
fn path_args() -> Vec<Arg> {
    [
        ("path.procfs", "/proc", "procfs mountpoint"),
        ("path.sysfs", "/sys", "sysfs mountpoint"),
        (
            "path.rootfs",
            "/",
            "Root filesystem mountpoint (for a containerised exporter: the host's / mounted inside)",
        ),
        (
            "path.devfs",
            "/dev",
            "devfs mountpoint (device nodes such as vcio, i2c-*, gpiochip*)",
        ),
    ]
    .into_iter()
    .map(|(name, default, help)| {
        Arg::new(name)
            .long(name)
            .value_name("PATH")
            .default_value(default)
            .value_parser(clap::value_parser!(PathBuf))
            .help(help)
    })
    .collect()
}

/// `--collector.*`: the framework's flags, `--[no-]collector.<name>` for each collector, then
/// each collector's own flags, as it declares them ([`registry::CollectorSpec::args`]).
fn collector_args() -> Vec<Arg> {
    let mut args = vec![
        Arg::new("collector.disable-defaults")
            .long("collector.disable-defaults")
            .action(ArgAction::SetTrue)
            .help("Start from no collectors; enable each with --collector.<name>"),
        Arg::new("collector.timeout")
            .long("collector.timeout")
            .value_name("DURATION")
            .default_value("5s")
            .value_parser(parse_duration)
            .help("Deadline of each collector per scrape (Prometheus' scrape timeout shortens it)"),
    ];
    for spec in registry::ALL {
        let on = format!("collector.{}", spec.name);
        let off = format!("no-collector.{}", spec.name);
        let state = if spec.enabled_by_default {
            "enabled"
        } else {
            "disabled"
        };
        args.push(
            Arg::new(on.clone())
                .long(on.clone())
                .action(ArgAction::SetTrue)
                .overrides_with(off.clone())
                .help(format!(
                    "Enable the {} collector: {} [default: {state}]",
                    spec.name, spec.help
                )),
        );
        args.push(
            Arg::new(off.clone())
                .long(off)
                .action(ArgAction::SetTrue)
                .overrides_with(on)
                .help(format!("Disable the {} collector", spec.name)),
        );
    }
    args.extend(registry::ALL.iter().flat_map(|spec| (spec.args)()));
    args
}

/// Parses the process arguments; prints help/version or an error and exits as clap does.
pub fn parse() -> Config {
    match try_parse(std::env::args_os()) {
        Ok(config) => config,
        Err(e) => e.exit(),
    }
}

/// Parses arguments (including the program name) without exiting.
pub fn try_parse<I, T>(args: I) -> Result<Config, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut command = command();
    let matches = command.try_get_matches_from_mut(args)?;
    from_matches(&matches).map_err(|e| command.error(ErrorKind::ValueValidation, e))
}

fn from_matches(m: &ArgMatches) -> Result<Config, FlagError> {
    let listen = flags::many::<ListenAddress>(m, "web.listen-address")?;
    let listen = if listen.is_empty() {
        vec![ListenAddress::AllInterfaces(DEFAULT_PORT)]
    } else {
        listen
    };
    let web_config_file = flags::one::<PathBuf>(m, "web.config.file")?;
    let mut options = registry::Options::default();
    for spec in registry::ALL {
        (spec.options)(m, &mut options)?;
    }
    // The doctor's exposure check looks at this server's own settings.
    options.doctor.listen = listen.clone();
    options.doctor.web_config_file = web_config_file.clone();
    let path = |id: &str| flags::one::<PathBuf>(m, id).map(Option::unwrap_or_default);
    Ok(Config {
        listen,
        telemetry_path: flags::one(m, "web.telemetry-path")?.unwrap_or_default(),
        web_config_file,
        max_requests: flags::one(m, "web.max-requests")?.unwrap_or(40),
        read_header_timeout: flags::one(m, "web.read-header-timeout")?
            .unwrap_or(Duration::from_secs(10)),
        paths: Paths {
            procfs: path("path.procfs")?,
            sysfs: path("path.sysfs")?,
            rootfs: path("path.rootfs")?,
            devfs: path("path.devfs")?,
        },
        collectors: enabled_collectors(m)?,
        collector_timeout: flags::one(m, "collector.timeout")?.unwrap_or(Duration::from_secs(5)),
        collector_options: options.collectors,
        doctor_collector: options.doctor,
        simulate_board: flags::one(m, "simulate.board")?,
        doctor: m.subcommand_matches("doctor").map(|d| doctor_command(m, d)),
        log: serving::logging::options(m),
    })
}

/// The collectors `--[no-]collector.<name>` and `--collector.disable-defaults` leave on, in
/// [`registry::ALL`] order; a collector's `enabled_by` flags ask for it too.
fn enabled_collectors(m: &ArgMatches) -> Result<Vec<&'static str>, FlagError> {
    let defaults_off = flags::switch(m, "collector.disable-defaults")?;
    let mut enabled = Vec::new();
    for spec in registry::ALL {
        let on = if flags::switch(m, &format!("no-collector.{}", spec.name))? {
            false
        } else {
            flags::switch(m, &format!("collector.{}", spec.name))?
                || (spec.enabled_by_default && !defaults_off)
                || spec.enabled_by.iter().any(|id| m.contains_id(id))
        };
        if on {
            enabled.push(spec.name);
        }
    }
    Ok(enabled)
}

/// `pi-exporter doctor`, and which of the settings it checks were given as flags.
fn doctor_command(m: &ArgMatches, d: &ArgMatches) -> DoctorCommand {
    let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
    DoctorCommand {
        format: match d.get_one::<String>("format").map(String::as_str) {
            Some("json") => Format::Json,
            _ => Format::Table,
        },
        listen_given: given("web.listen-address"),
        web_config_given: given("web.config.file"),
        ups_given: given("ups.board") || given("ups.config"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::ups;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        try_parse(std::iter::once("pi-exporter").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_follow_exporter_conventions() {
        let c = parse(&[]).expect("defaults parse");
        assert_eq!(c.listen, [ListenAddress::AllInterfaces(DEFAULT_PORT)]);
        assert_eq!(c.telemetry_path, "/metrics");
        assert_eq!(c.paths, Paths::default());
        assert_eq!(
            c.collectors,
            [
                "filesystem",
                "storage",
                "firmware",
                "system",
                "history",
                "rtc",
                "time",
                "doctor"
            ]
        );
        assert_eq!(c.max_requests, 40);
        assert!(c.doctor.is_none());
        assert!(c.collector_options.storage.device_exclude.is_some());
    }

    #[test]
    fn collectors_toggle_and_last_flag_wins() {
        let c = parse(&["--no-collector.storage"]).expect("parse");
        assert_eq!(
            c.collectors,
            [
                "filesystem",
                "firmware",
                "system",
                "history",
                "rtc",
                "time",
                "doctor"
            ]
        );
        let c = parse(&["--collector.disable-defaults", "--collector.system"]).expect("parse");
        assert_eq!(c.collectors, ["system"]);
        let c = parse(&["--no-collector.system", "--collector.system"]).expect("parse");
        assert!(c.collectors.contains(&"system"));
        assert!(parse(&["--collector.nonexistent"]).is_err());
    }

    #[test]
    fn listen_addresses_repeat_and_validate() {
        let c = parse(&[
            "--web.listen-address",
            "127.0.0.1:1234",
            "--web.listen-address=[::1]:99",
        ])
        .expect("parse");
        assert_eq!(c.listen.len(), 2);
        assert_eq!(
            ListenAddress::parse("localhost:80"),
            Ok(ListenAddress::Socket("127.0.0.1:80".parse().expect("addr")))
        );
        assert!(parse(&["--web.listen-address", "example.org:80"]).is_err());
        assert!(parse(&["--web.listen-address", ":99999"]).is_err());
    }

    #[test]
    fn durations_and_regexes_are_checked_at_start() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "5", "s", "1x", "-1s", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&["--collector.timeout", "soon"]).is_err());
        assert!(parse(&["--collector.filesystem.mount-points-exclude", "("]).is_err());
        let c = parse(&["--collector.storage.device-exclude", ""]).expect("parse");
        assert!(c.collector_options.storage.device_exclude.is_none());
        let c = parse(&[
            "--collector.storage.rated-endurance=mmcblk0=117TB",
            "--collector.storage.rated-endurance",
            "mmcblk1=702TB",
        ])
        .expect("parse");
        assert_eq!(
            c.collector_options.storage.rated_endurance,
            [("mmcblk0".into(), 117e12), ("mmcblk1".into(), 702e12)]
        );
        assert!(parse(&["--collector.storage.rated-endurance=mmcblk0"]).is_err());
    }

    #[test]
    fn rtc_flags_default_to_bus_1_address_0x68_and_no_raw_reads() {
        let c = parse(&[]).expect("defaults");
        let rtc = &c.collector_options.rtc;
        assert_eq!(rtc.i2c_bus, Some(1));
        assert_eq!(rtc.i2c_address, 0x68);
        assert!(!rtc.raw_registers);
        assert_eq!(rtc.offset_interval, Duration::from_secs(60));
        let c = parse(&[
            "--collector.rtc.i2c-bus=none",
            "--collector.rtc.i2c-address=105",
            "--collector.rtc.raw-registers",
            "--collector.rtc.offset-interval=0",
        ])
        .expect("parse");
        let rtc = &c.collector_options.rtc;
        assert_eq!(rtc.i2c_bus, None);
        assert_eq!(rtc.i2c_address, 0x69);
        assert!(rtc.raw_registers);
        assert!(rtc.offset_interval.is_zero());
        for bad in [
            ["--collector.rtc.i2c-bus", "-1"],
            ["--collector.rtc.i2c-address", "0x80"],
            ["--collector.rtc.i2c-address", "0x"],
            ["--collector.rtc.offset-interval", "1s"],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("ups.yaml");
        std::fs::write(&config, "ups:\n  - {name: rack, board: nut}\n").expect("write");
        let flag = format!("--ups.config={}", config.display());
        let c = parse(&[flag.as_str()]).expect("parse");
        assert_eq!(c.collector_options.ups.units[0].name, "rack");
        assert!(
            parse(&[flag.as_str(), "--ups.board=nut"]).is_err(),
            "one or the other"
        );
    }

    #[test]
    fn ups_flags_default_to_no_board_5s_and_guard_off() {
        let c = parse(&[]).expect("parse");
        assert_eq!(c.collector_options.ups, ups::Options::default());
        assert!(!c.collectors.contains(&"ups"));
        let c = parse(&[
            "--collector.ups",
            "--ups.board=nut",
            "--ups.nut.port=3494",
            "--ups.interval=10s",
            "--ups.shutdown.enable",
            "--ups.shutdown.charge-below=0.2",
            "--ups.shutdown.runtime-below=5m",
            "--ups.shutdown.hold=1m",
            "--ups.shutdown.command=/usr/sbin/shutdown -h now",
            "--ups.shutdown.dry-run",
        ])
        .expect("parse");
        let ups = &c.collector_options.ups;
        assert!(c.collectors.contains(&"ups"));
        assert_eq!(ups.board.as_deref(), Some("nut"));
        assert_eq!(ups.nut.port, 3494);
        assert_eq!(ups.interval, Duration::from_secs(10));
        assert!(ups.shutdown.enable && ups.shutdown.dry_run);
        assert!(
            parse(&["--ups.board=pisugar3"])
                .expect("parse")
                .collectors
                .contains(&"ups"),
            "a board enables the collector"
        );
        assert!(
            !parse(&["--ups.board=pisugar3", "--no-collector.ups"])
                .expect("parse")
                .collectors
                .contains(&"ups")
        );
        assert_eq!(ups.shutdown.charge_below, 0.2);
        assert_eq!(ups.shutdown.runtime_below, Some(Duration::from_secs(300)));
        assert_eq!(ups.shutdown.hold, Duration::from_secs(60));
        assert_eq!(ups.shutdown.command, ["/usr/sbin/shutdown", "-h", "now"]);
        for bad in [
            ["--ups.board", "apc"],
            ["--ups.shutdown.charge-below", "1.5"],
            ["--ups.interval", "100ms"],
            ["--ups.shutdown.command", " "],
            ["--ups.config", "/nonexistent/ups.yaml"],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
    }
}
