//! Command-line flags in the Prometheus exporter convention (`--web.listen-address`,
//! `--path.sysfs`, `--[no-]collector.<name>`, ...), parsed into a [`Config`].

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use regex_lite::Regex;

use crate::collector::{self, CollectorOptions, doctor, filesystem, history, rtc, storage, ups};
use crate::doctor::render::Format;
use crate::paths::Paths;

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
    /// Names of the enabled collectors, in [`collector::ALL`] order.
    pub collectors: Vec<&'static str>,
    pub collector_timeout: Duration,
    pub collector_options: CollectorOptions,
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

/// A `--web.listen-address` value. `:9831` (no host) means every interface, as in Go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddress {
    AllInterfaces(u16),
    Socket(SocketAddr),
}

impl ListenAddress {
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(port) = text.strip_prefix(':') {
            return port
                .parse()
                .map(Self::AllInterfaces)
                .map_err(|_| format!("invalid port in {text:?}"));
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self::Socket(addr));
        }
        // `localhost:9831`: the only host name worth resolving without DNS.
        if let Some(port) = text.strip_prefix("localhost:") {
            let port = port
                .parse()
                .map_err(|_| format!("invalid port in {text:?}"))?;
            return Ok(Self::Socket(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
            )));
        }
        Err(format!(
            "{text:?} is not HOST:PORT or :PORT (host must be an IP address or localhost)"
        ))
    }

    /// Addresses to try, in order: all interfaces is IPv6 dual-stack, else IPv4 where IPv6 is off.
    pub fn candidates(self) -> Vec<SocketAddr> {
        match self {
            Self::AllInterfaces(port) => vec![
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            ],
            Self::Socket(addr) => vec![addr],
        }
    }
}

/// Flags take durations in the syntax of the web configuration.
pub use serving::duration::parse as parse_duration;

fn regex(text: &str) -> Result<Regex, String> {
    Regex::new(text).map_err(|e| e.to_string())
}

fn command() -> Command {
    let mut cmd = Command::new("pi-exporter")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Prometheus exporter for Raspberry Pi health: firmware, storage, clock and power")
        .arg(
            Arg::new("web.listen-address")
                .long("web.listen-address")
                .value_name("ADDRESS")
                .action(ArgAction::Append)
                .value_parser(ListenAddress::parse)
                .help(format!("Address to listen on, repeatable; :PORT means every interface [default: :{DEFAULT_PORT}]")),
        )
        .arg(
            Arg::new("web.telemetry-path")
                .long("web.telemetry-path")
                .value_name("PATH")
                .default_value("/metrics")
                .help("Path under which to expose metrics"),
        )
        .arg(
            Arg::new("web.config.file")
                .long("web.config.file")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("exporter-toolkit web configuration (TLS, basic auth, headers, rate limit); re-read when it changes"),
        )
        .arg(
            Arg::new("web.max-requests")
                .long("web.max-requests")
                .value_name("N")
                .default_value("40")
                .value_parser(clap::value_parser!(usize))
                .help("Maximum number of scrapes served at once; more get 503 (0 = no limit)"),
        )
        .arg(
            Arg::new("web.read-header-timeout")
                .long("web.read-header-timeout")
                .value_name("DURATION")
                .default_value("10s")
                .value_parser(parse_duration)
                .help("Close connections that have not sent a complete request head (and TLS handshake) within this time"),
        );
    for (name, default, help) in [
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
    ] {
        cmd = cmd.arg(
            Arg::new(name)
                .long(name)
                .value_name("PATH")
                .default_value(default)
                .value_parser(clap::value_parser!(PathBuf))
                .help(help),
        );
    }
    cmd = cmd
        .arg(
            Arg::new("collector.disable-defaults")
                .long("collector.disable-defaults")
                .action(ArgAction::SetTrue)
                .help("Start from no collectors; enable each with --collector.<name>"),
        )
        .arg(
            Arg::new("collector.timeout")
                .long("collector.timeout")
                .value_name("DURATION")
                .default_value("5s")
                .value_parser(parse_duration)
                .help("Deadline of each collector per scrape (Prometheus' scrape timeout shortens it)"),
        );
    for spec in collector::ALL {
        let on = format!("collector.{}", spec.name);
        let off = format!("no-collector.{}", spec.name);
        let state = if spec.enabled_by_default {
            "enabled"
        } else {
            "disabled"
        };
        cmd = cmd
            .arg(
                Arg::new(on.clone())
                    .long(on.clone())
                    .action(ArgAction::SetTrue)
                    .overrides_with(off.clone())
                    .help(format!(
                        "Enable the {} collector: {} [default: {state}]",
                        spec.name, spec.help
                    )),
            )
            .arg(
                Arg::new(off.clone())
                    .long(off)
                    .action(ArgAction::SetTrue)
                    .overrides_with(on)
                    .help(format!("Disable the {} collector", spec.name)),
            );
    }
    cmd.arg(
        Arg::new("collector.filesystem.mount-points-exclude")
            .long("collector.filesystem.mount-points-exclude")
            .value_name("REGEX")
            .default_value(filesystem::DEFAULT_MOUNT_POINTS_EXCLUDE)
            .value_parser(regex)
            .help("Mount points to leave out"),
    )
    .arg(
        Arg::new("collector.filesystem.mount-points-include")
            .long("collector.filesystem.mount-points-include")
            .value_name("REGEX")
            .value_parser(regex)
            .help("Only these mount points (applied before the exclude)"),
    )
    .arg(
        Arg::new("collector.filesystem.fs-types-exclude")
            .long("collector.filesystem.fs-types-exclude")
            .value_name("REGEX")
            .default_value(filesystem::DEFAULT_FS_TYPES_EXCLUDE)
            .value_parser(regex)
            .help("Filesystem types to leave out"),
    )
    .arg(
        Arg::new("collector.filesystem.fs-types-include")
            .long("collector.filesystem.fs-types-include")
            .value_name("REGEX")
            .value_parser(regex)
            .help("Only these filesystem types (applied before the exclude)"),
    )
    .arg(
        Arg::new("collector.filesystem.mount-timeout")
            .long("collector.filesystem.mount-timeout")
            .value_name("DURATION")
            .default_value("2s")
            .value_parser(parse_duration)
            .help("How long to wait for statvfs on one mount before marking it stuck"),
    )
    .arg(
        Arg::new("collector.storage.device-exclude")
            .long("collector.storage.device-exclude")
            .value_name("REGEX")
            .default_value(storage::DEFAULT_DEVICE_EXCLUDE)
            .value_parser(regex)
            .help("Block devices to leave out of the I/O metrics (empty: keep all)"),
    )
    .arg(
        Arg::new("collector.storage.rated-endurance")
            .long("collector.storage.rated-endurance")
            .value_name("DEVICE=SIZE")
            .action(ArgAction::Append)
            .value_parser(storage::parse_rated_endurance)
            .help("Repeatable: the bytes a flash device is rated to accept, e.g. mmcblk0=117TB (decimal units as vendors quote them, or KiB..PiB), exported as rpi_flash_rated_endurance_bytes"),
    )
    .arg(
        Arg::new("collector.history.state-file")
            .long("collector.history.state-file")
            .value_name("FILE")
            .default_value(history::DEFAULT_STATE_FILE)
            .value_parser(clap::value_parser!(PathBuf))
            .help("The history collector's state file (boot id, clean stop, boot and unclean-shutdown counts), written at start and at a clean stop; its directory must exist and be writable"),
    )
    .arg(
        Arg::new("collector.rtc.i2c-bus")
            .long("collector.rtc.i2c-bus")
            .value_name("N|none")
            .default_value("1")
            .value_parser(rtc::parse_i2c_bus)
            .help("I2C bus of a DS3231 that no kernel driver owns, read from userspace (none: do not look for one)"),
    )
    .arg(
        Arg::new("collector.rtc.i2c-address")
            .long("collector.rtc.i2c-address")
            .value_name("ADDRESS")
            .default_value("0x68")
            .value_parser(rtc::parse_i2c_address)
            .help("I2C address of that DS3231"),
    )
    .arg(
        Arg::new("collector.rtc.raw-registers")
            .long("collector.rtc.raw-registers")
            .action(ArgAction::SetTrue)
            .help("Also read the oscillator-stop flag and aging offset of kernel-owned DS3231s with read-only combined I2C transfers alongside the driver"),
    )
    .arg(
        Arg::new("collector.rtc.offset-interval")
            .long("collector.rtc.offset-interval")
            .value_name("DURATION")
            .default_value("60s")
            .value_parser(rtc::parse_offset_interval)
            .help("How often to measure RTC minus system clock in the background (0: never)"),
    )
    .arg(
        Arg::new("ups.board")
            .long("ups.board")
            .value_name("NAME")
            .value_parser(ups::parse_board)
            .help("UPS board profile read by the ups collector: waveshare-ups-hat, waveshare-ups-hat-c, waveshare-ups-hat-e, geekworm-x728, geekworm-x120x, ups-lite, pisugar3, nut"),
    )
    .arg(
        Arg::new("ups.config")
            .long("ups.config")
            .value_name("FILE")
            .conflicts_with("ups.board")
            .value_parser(ups::parse_config_file)
            .help("YAML file listing several UPSes (ups: [{name, board, i2c_bus, nut: {host, port, ups, username, password_file}}]); their series carry an ups label"),
    )
    .arg(
        Arg::new("ups.i2c-bus")
            .long("ups.i2c-bus")
            .value_name("N")
            .default_value("1")
            .value_parser(clap::value_parser!(u32))
            .help("I2C bus of the UPS HAT's chip"),
    )
    .arg(
        Arg::new("ups.interval")
            .long("ups.interval")
            .value_name("DURATION")
            .default_value("5s")
            .value_parser(ups::parse_interval)
            .help("How often the UPS is read in the background (scrapes serve the last reading)"),
    )
    .arg(
        Arg::new("ups.nut.host")
            .long("ups.nut.host")
            .value_name("HOST")
            .default_value("127.0.0.1")
            .help("upsd host (--ups.board=nut)"),
    )
    .arg(
        Arg::new("ups.nut.port")
            .long("ups.nut.port")
            .value_name("PORT")
            .default_value("3493")
            .value_parser(clap::value_parser!(u16))
            .help("upsd port"),
    )
    .arg(
        Arg::new("ups.nut.ups")
            .long("ups.nut.ups")
            .value_name("NAME")
            .default_value("ups")
            .help("UPS name on the upsd server"),
    )
    .arg(
        Arg::new("ups.nut.username")
            .long("ups.nut.username")
            .value_name("USER")
            .help("upsd user (USERNAME), if the server wants one"),
    )
    .arg(
        Arg::new("ups.nut.password-file")
            .long("ups.nut.password-file")
            .value_name("FILE")
            .value_parser(|path: &str| {
                std::fs::read_to_string(path)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                    .map_err(|e| format!("{path}: {e}"))
            })
            .help("File holding the upsd password (PASSWORD); never given on the command line"),
    )
    .arg(
        Arg::new("ups.nut.timeout")
            .long("ups.nut.timeout")
            .value_name("DURATION")
            .default_value("2s")
            .value_parser(parse_duration)
            .help("Timeout of each upsd connect, read and write"),
    )
    .arg(
        Arg::new("ups.shutdown.enable")
            .long("ups.shutdown.enable")
            .action(ArgAction::SetTrue)
            .help("Run the shutdown command when on battery and the charge or runtime stays below its threshold for the hold time (off by default)"),
    )
    .arg(
        Arg::new("ups.shutdown.charge-below")
            .long("ups.shutdown.charge-below")
            .value_name("RATIO")
            .default_value("0.10")
            .value_parser(ups::parse_ratio)
            .help("Charge ratio (0-1) below which the guard shuts down"),
    )
    .arg(
        Arg::new("ups.shutdown.runtime-below")
            .long("ups.shutdown.runtime-below")
            .value_name("DURATION")
            .default_value("0s")
            .value_parser(parse_duration)
            .help("Runtime estimate below which the guard shuts down (0: charge only)"),
    )
    .arg(
        Arg::new("ups.shutdown.hold")
            .long("ups.shutdown.hold")
            .value_name("DURATION")
            .default_value("30s")
            .value_parser(parse_duration)
            .help("How long the condition must hold, with plausible readings throughout, before the command runs"),
    )
    .arg(
        Arg::new("ups.shutdown.command")
            .long("ups.shutdown.command")
            .value_name("COMMAND")
            .default_value("systemctl poweroff")
            .value_parser(ups::guard::parse_command)
            .help("Program and arguments (split at spaces, no shell) run once when the guard fires"),
    )
    .arg(
        Arg::new("ups.shutdown.dry-run")
            .long("ups.shutdown.dry-run")
            .action(ArgAction::SetTrue)
            .help("Log the shutdown instead of running the command"),
    )
    .arg(
        Arg::new("collector.doctor.interval")
            .long("collector.doctor.interval")
            .value_name("DURATION")
            .default_value("10m")
            .value_parser(doctor::parse_interval)
            .help("How often the doctor collector runs the field checklist in the background (scrapes serve the last result)"),
    )
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
    let matches = command().try_get_matches_from(args)?;
    Ok(from_matches(&matches))
}

fn from_matches(m: &ArgMatches) -> Config {
    let path = |id: &str| m.get_one::<PathBuf>(id).cloned().unwrap_or_default();
    let string = |id: &str| m.get_one::<String>(id).cloned().unwrap_or_default();
    let defaults_off = m.get_flag("collector.disable-defaults");
    let collectors = collector::ALL
        .iter()
        .filter(|spec| {
            if m.get_flag(&format!("no-collector.{}", spec.name)) {
                false
            } else {
                m.get_flag(&format!("collector.{}", spec.name))
                    || (spec.enabled_by_default && !defaults_off)
                    // Choosing a UPS is asking for the ups collector.
                    || (spec.name == "ups"
                        && (m.contains_id("ups.board") || m.contains_id("ups.config")))
            }
        })
        .map(|spec| spec.name)
        .collect();
    let listen = m
        .get_many::<ListenAddress>("web.listen-address")
        .map(|v| v.copied().collect())
        .unwrap_or_else(|| vec![ListenAddress::AllInterfaces(DEFAULT_PORT)]);
    let empty_is_none = |id: &str| {
        m.get_one::<Regex>(id)
            .filter(|re| !re.as_str().is_empty())
            .cloned()
    };
    let defaults = filesystem::Options::default();
    let rtc_defaults = rtc::Options::default();
    Config {
        listen: listen.clone(),
        telemetry_path: string("web.telemetry-path"),
        web_config_file: m.get_one::<PathBuf>("web.config.file").cloned(),
        max_requests: m
            .get_one::<usize>("web.max-requests")
            .copied()
            .unwrap_or(40),
        read_header_timeout: m
            .get_one::<Duration>("web.read-header-timeout")
            .copied()
            .unwrap_or(Duration::from_secs(10)),
        paths: Paths {
            procfs: path("path.procfs"),
            sysfs: path("path.sysfs"),
            rootfs: path("path.rootfs"),
            devfs: path("path.devfs"),
        },
        collectors,
        collector_timeout: m
            .get_one::<Duration>("collector.timeout")
            .copied()
            .unwrap_or(Duration::from_secs(5)),
        collector_options: CollectorOptions {
            filesystem: filesystem::Options {
                mount_points_exclude: m
                    .get_one::<Regex>("collector.filesystem.mount-points-exclude")
                    .cloned()
                    .unwrap_or(defaults.mount_points_exclude),
                mount_points_include: empty_is_none("collector.filesystem.mount-points-include"),
                fs_types_exclude: m
                    .get_one::<Regex>("collector.filesystem.fs-types-exclude")
                    .cloned()
                    .unwrap_or(defaults.fs_types_exclude),
                fs_types_include: empty_is_none("collector.filesystem.fs-types-include"),
                mount_timeout: m
                    .get_one::<Duration>("collector.filesystem.mount-timeout")
                    .copied()
                    .unwrap_or(defaults.mount_timeout),
            },
            storage: storage::Options {
                device_exclude: empty_is_none("collector.storage.device-exclude"),
                rated_endurance: m
                    .get_many::<(String, f64)>("collector.storage.rated-endurance")
                    .map(|values| values.cloned().collect())
                    .unwrap_or_default(),
            },
            history: history::Options {
                state_file: path("collector.history.state-file"),
            },
            rtc: rtc::Options {
                i2c_bus: m
                    .get_one::<Option<u32>>("collector.rtc.i2c-bus")
                    .copied()
                    .unwrap_or(rtc_defaults.i2c_bus),
                i2c_address: m
                    .get_one::<u8>("collector.rtc.i2c-address")
                    .copied()
                    .unwrap_or(rtc_defaults.i2c_address),
                raw_registers: m.get_flag("collector.rtc.raw-registers"),
                offset_interval: m
                    .get_one::<Duration>("collector.rtc.offset-interval")
                    .copied()
                    .unwrap_or(rtc_defaults.offset_interval),
            },
            ups: ups_options(m),
            doctor: doctor::Options {
                interval: m
                    .get_one::<Duration>("collector.doctor.interval")
                    .copied()
                    .unwrap_or(doctor::DEFAULT_INTERVAL),
                listen: listen.clone(),
                web_config_file: m.get_one::<PathBuf>("web.config.file").cloned(),
            },
        },
        simulate_board: m.get_one::<PathBuf>("simulate.board").cloned(),
        doctor: m.subcommand_matches("doctor").map(|d| {
            let given =
                |id: &str| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
            DoctorCommand {
                format: match d.get_one::<String>("format").map(String::as_str) {
                    Some("json") => Format::Json,
                    _ => Format::Table,
                },
                listen_given: given("web.listen-address"),
                web_config_given: given("web.config.file"),
                ups_given: given("ups.board") || given("ups.config"),
            }
        }),
        log: serving::logging::options(m),
    }
}

/// `--ups.*` into the ups collector's options.
fn ups_options(m: &clap::ArgMatches) -> ups::Options {
    let defaults = ups::Options::default();
    let duration = |id: &str| m.get_one::<Duration>(id).copied();
    let text = |id: &str| m.get_one::<String>(id).cloned();
    ups::Options {
        board: text("ups.board"),
        i2c_bus: m
            .get_one::<u32>("ups.i2c-bus")
            .copied()
            .unwrap_or(defaults.i2c_bus),
        interval: duration("ups.interval").unwrap_or(defaults.interval),
        nut: ups::nut::NutOptions {
            host: text("ups.nut.host").unwrap_or(defaults.nut.host),
            port: m
                .get_one::<u16>("ups.nut.port")
                .copied()
                .unwrap_or(defaults.nut.port),
            ups: text("ups.nut.ups").unwrap_or(defaults.nut.ups),
            username: text("ups.nut.username"),
            password: text("ups.nut.password-file"),
            timeout: duration("ups.nut.timeout").unwrap_or(defaults.nut.timeout),
        },
        shutdown: ups::guard::ShutdownOptions {
            enable: m.get_flag("ups.shutdown.enable"),
            charge_below: m
                .get_one::<f64>("ups.shutdown.charge-below")
                .copied()
                .unwrap_or(defaults.shutdown.charge_below),
            runtime_below: duration("ups.shutdown.runtime-below").filter(|d| !d.is_zero()),
            hold: duration("ups.shutdown.hold").unwrap_or(defaults.shutdown.hold),
            command: m
                .get_one::<Vec<String>>("ups.shutdown.command")
                .cloned()
                .unwrap_or(defaults.shutdown.command),
            dry_run: m.get_flag("ups.shutdown.dry-run"),
        },
        units: m
            .get_one::<Vec<ups::UnitConfig>>("ups.config")
            .cloned()
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
