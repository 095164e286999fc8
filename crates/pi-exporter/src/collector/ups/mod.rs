//! `ups`: a UPS HAT read over I2C (read-only), its power-loss GPIO line, or any UPS served by
//! Network UPS Tools; and an opt-in shutdown guard.
//!
//! - [`profiles`]: `--ups.board NAME`, one entry per HAT (chip, address, cells, shunt, current
//!   sign, power-loss line and polarity).
//! - [`chips`]: the register maths and read-only reads of each chip family.
//! - [`power_supply`]: the kernel's view when a driver owns the gauge.
//! - [`gpio`]: the power-loss line through the GPIO character device, input only.
//! - [`nut`]: a small upsd client (`LIST VAR`).
//! - [`estimate`]: the runtime estimate from the recent discharge rate.
//! - [`guard`]: the shutdown guard.
//! - [`simulated`]: the board file's `ups:` section.
//!
//! Readings come from the `ups-reader` thread, every `--ups.interval` (5 s), so scrapes never
//! touch a bus or a socket, and the runtime estimate has a history. The first reading is taken
//! at start-up, before the first scrape.

pub mod chips;
pub mod estimate;
pub mod gpio;
pub mod guard;
pub mod nut;
pub mod power_supply;
pub mod profiles;
pub mod simulated;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::{Arg, ArgMatches};

use self::chips::{ChipReading, ReadError};
use self::estimate::History;
use self::gpio::{DevLines, LineSource, LineState};
use self::guard::{Decision, Guard, Observation, ShutdownOptions};
use self::nut::{NutOptions, STATUS_FLAGS};
use self::profiles::{Chip, Profile};
use super::flags::{self, FlagError};
use super::periodic::{self, First, Periodic};
use super::{BuildContext, CollectError, Collector};
use crate::i2c::simulated::SimulatedBus;
use crate::i2c::{Access, Bus, BusError, Fault};
use crate::metrics::MetricSet;

pub use self::simulated::UpsBoard;

/// `--ups.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// `--ups.board`; `None` takes the simulated board's `ups.board`, else nothing is read.
    pub board: Option<String>,
    pub i2c_bus: u32,
    pub nut: NutOptions,
    pub interval: Duration,
    pub shutdown: ShutdownOptions,
    /// `--ups.config`: several UPSes, each named; empty for the single `--ups.board` one.
    pub units: Vec<UnitConfig>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            board: None,
            i2c_bus: 1,
            nut: NutOptions::default(),
            interval: Duration::from_secs(5),
            shutdown: ShutdownOptions::default(),
            units: Vec::new(),
        }
    }
}

/// The ups collector's flags (`--ups.*`: the guard acts on the machine, beyond collecting).
pub fn args() -> Vec<Arg> {
    let mut args = vec![
        Arg::new("ups.board")
            .long("ups.board")
            .value_name("NAME")
            .value_parser(parse_board)
            .help("UPS board profile read by the ups collector: waveshare-ups-hat, waveshare-ups-hat-c, waveshare-ups-hat-e, geekworm-x728, geekworm-x120x, ups-lite, pisugar3, nut"),
        Arg::new("ups.config")
            .long("ups.config")
            .value_name("FILE")
            .conflicts_with("ups.board")
            .value_parser(parse_config_file)
            .help("YAML file listing several UPSes (ups: [{name, board, i2c_bus, nut: {host, port, ups, username, password_file}}]); their series carry an ups label"),
        Arg::new("ups.i2c-bus")
            .long("ups.i2c-bus")
            .value_name("N")
            .default_value("1")
            .value_parser(clap::value_parser!(u32))
            .help("I2C bus of the UPS HAT's chip"),
        Arg::new("ups.interval")
            .long("ups.interval")
            .value_name("DURATION")
            .default_value("5s")
            .value_parser(parse_interval)
            .help("How often the UPS is read in the background (scrapes serve the last reading)"),
    ];
    args.extend(nut::args());
    args.extend(guard::args());
    args
}

/// `--ups.*` into [`Options`].
pub fn options(m: &ArgMatches) -> Result<Options, FlagError> {
    let defaults = Options::default();
    Ok(Options {
        board: flags::one(m, "ups.board")?,
        i2c_bus: flags::one(m, "ups.i2c-bus")?.unwrap_or(defaults.i2c_bus),
        interval: flags::one(m, "ups.interval")?.unwrap_or(defaults.interval),
        nut: nut::options(m)?,
        shutdown: guard::options(m)?,
        units: flags::one(m, "ups.config")?.unwrap_or_default(),
    })
}

/// One UPS of a `--ups.config` file.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitConfig {
    /// The `ups` label of its series; unique in the file.
    pub name: String,
    pub board: String,
    #[serde(default = "default_i2c_bus")]
    pub i2c_bus: u32,
    #[serde(default)]
    pub nut: Option<NutConfig>,
}

/// The `nut:` of a `--ups.config` entry; unset keys take the `--ups.nut.*` values.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NutConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub ups: Option<String>,
    pub username: Option<String>,
    /// Read when the file is loaded; the password itself is never in the config file.
    pub password_file: Option<PathBuf>,
    #[serde(skip)]
    pub password: Option<String>,
}

fn default_i2c_bus() -> u32 {
    1
}

impl UnitConfig {
    fn nut_options(&self, defaults: &NutOptions) -> NutOptions {
        let nut = self.nut.clone().unwrap_or_default();
        NutOptions {
            host: nut.host.unwrap_or_else(|| defaults.host.clone()),
            port: nut.port.unwrap_or(defaults.port),
            ups: nut.ups.unwrap_or_else(|| defaults.ups.clone()),
            username: nut.username.or_else(|| defaults.username.clone()),
            password: nut.password.or_else(|| defaults.password.clone()),
            timeout: defaults.timeout,
        }
    }
}

/// `--ups.config FILE`: `ups: [{name, board, i2c_bus, nut: {host, port, ups, username,
/// password_file}}]`, checked at start-up (known boards, unique names, readable password files).
pub fn parse_config_file(path: &str) -> Result<Vec<UnitConfig>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        ups: Vec<UnitConfig>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let file: File = serde_saphyr::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let mut units = file.ups;
    if units.is_empty() {
        return Err(format!("{path}: no UPS listed"));
    }
    let mut names = std::collections::BTreeSet::new();
    for unit in &mut units {
        parse_board(&unit.board).map_err(|e| format!("{path}: {}: {e}", unit.name))?;
        if unit.name.is_empty() || !names.insert(unit.name.clone()) {
            return Err(format!(
                "{path}: UPS names must be unique and not empty: {:?}",
                unit.name
            ));
        }
        if let Some(nut) = &mut unit.nut
            && let Some(file) = &nut.password_file
        {
            let password = std::fs::read_to_string(file)
                .map_err(|e| format!("{path}: {}: {}: {e}", unit.name, file.display()))?;
            nut.password = Some(password.trim_end_matches(['\n', '\r']).to_owned());
        }
    }
    Ok(units)
}

/// Parses `--ups.board`.
pub fn parse_board(text: &str) -> Result<String, String> {
    if profiles::names().contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "unknown UPS board {text:?}; known: {}",
            profiles::names().join(", ")
        ))
    }
}

/// Parses `--ups.interval`: at least 1 s.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = serving::duration::parse(text)?;
    if interval >= Duration::from_secs(1) {
        Ok(interval)
    } else {
        Err(format!("{text:?}: the UPS interval is at least 1s"))
    }
}

/// Parses `--ups.shutdown.charge-below`: a ratio in 0-1.
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| format!("{text:?} is not a ratio between 0 and 1"))
}

/// One interpreted reading.
#[derive(Debug, Clone, Default, PartialEq)]
struct Reading {
    chip: ChipReading,
    input_voltage_volts: Option<f64>,
    load_ratio: Option<f64>,
    status: Option<Vec<String>>,
}

/// A round's reading, the power-loss line, and the NUT driver name.
type RoundResult = (
    Result<Reading, String>,
    Option<(&'static str, LineState)>,
    Option<String>,
);

/// What the reader thread leaves for scrapes.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    reading: Result<Reading, String>,
    line: Option<(&'static str, LineState)>,
    runtime_seconds: Option<f64>,
}

#[derive(Debug)]
enum Source {
    Chip {
        profile: &'static Profile,
        bus_number: u32,
        simulated: Option<SimulatedBus>,
        devfs: PathBuf,
        /// The gauge's power_supply directory when a kernel driver owns it; `Err` names a
        /// driver that owns the chip without one.
        kernel: Option<Result<PathBuf, String>>,
        lines: Box<dyn LineSource>,
    },
    Nut(NutOptions),
}

#[derive(Debug)]
struct State {
    snapshot: Option<Snapshot>,
    history: History,
    guard: Guard,
    last_problem: Option<String>,
    /// `driver.name` of the NUT UPS, the `chip` label.
    nut_driver: Option<String>,
}

#[derive(Debug)]
struct Shared {
    /// The name given in `--ups.config`; `None` for the single `--ups.board` UPS, whose series
    /// then carry no `ups` label.
    name: Option<String>,
    board: String,
    source: Source,
    interval: Duration,
    state: Mutex<State>,
}

/// The collector.
#[derive(Debug)]
pub struct UpsCollector {
    units: Vec<Arc<Shared>>,
    _workers: Vec<Periodic>,
}

impl UpsCollector {
    pub fn new(ctx: &BuildContext) -> Self {
        let options = ctx.options.ups.clone();
        let section = ctx.board.as_ref().and_then(|b| b.ups.as_ref());
        let units: Vec<(Option<String>, String, u32, NutOptions)> = if options.units.is_empty() {
            options
                .board
                .clone()
                .or_else(|| section.and_then(|s| s.board.clone()))
                .map(|board| (None, board, options.i2c_bus, options.nut.clone()))
                .into_iter()
                .collect()
        } else {
            options
                .units
                .iter()
                .map(|u| {
                    (
                        Some(u.name.clone()),
                        u.board.clone(),
                        u.i2c_bus,
                        u.nut_options(&options.nut),
                    )
                })
                .collect()
        };
        if units.is_empty() {
            tracing::warn!(
                "ups collector enabled without --ups.board, --ups.config or a board file's ups.board: nothing to read"
            );
        } else {
            if options.shutdown.enable {
                tracing::warn!(
                    "UPS shutdown guard enabled: on battery with charge below {:.0} %{} for {} s runs {:?}{}",
                    options.shutdown.charge_below * 100.0,
                    options
                        .shutdown
                        .runtime_below
                        .map(|r| format!(" or runtime below {} s", r.as_secs()))
                        .unwrap_or_default(),
                    options.shutdown.hold.as_secs(),
                    options.shutdown.command.join(" "),
                    if options.shutdown.dry_run {
                        " (dry run: logged, not run)"
                    } else {
                        ""
                    }
                );
            }
        }
        let mut built = Vec::new();
        let mut workers = Vec::new();
        for (name, board, i2c_bus, nut) in units {
            let who = name.clone().unwrap_or_else(|| board.clone());
            let Some(source) = build_source(ctx, section, &who, &board, i2c_bus, nut) else {
                continue;
            };
            let shared = Arc::new(Shared {
                name,
                board,
                source,
                interval: options.interval,
                state: Mutex::new(State {
                    snapshot: None,
                    history: History::default(),
                    guard: Guard::new(options.shutdown.clone()),
                    last_problem: None,
                    nut_driver: None,
                }),
            });
            shared.round();
            workers.extend(spawn(options.interval, {
                let shared = Arc::clone(&shared);
                move || shared.round()
            }));
            built.push(shared);
        }
        Self {
            units: built,
            _workers: workers,
        }
    }
}

/// The source of one UPS; `None` (logged) for an unknown board.
fn build_source(
    ctx: &BuildContext,
    section: Option<&UpsBoard>,
    who: &str,
    board: &str,
    i2c_bus: u32,
    nut: NutOptions,
) -> Option<Source> {
    let source = if board == "nut" {
        Source::Nut(nut)
    } else if let Some(profile) = profiles::find(board) {
        let simulated = section.map(UpsBoard::bus);
        let lines: Box<dyn LineSource> = match section {
            Some(s) => Box::new(s.lines()),
            None => Box::new(DevLines {
                devfs: ctx.paths.devfs.clone(),
            }),
        };
        let bus_number = i2c_bus;
        let kernel = profile.chip.kernel_driver().and_then(|_| {
                let driver = power_supply::bound_driver(&ctx.paths.sysfs, bus_number, profile.address)?;
                Some(
                    power_supply::find(&ctx.paths.sysfs, bus_number, profile.address).ok_or(
                        format!(
                            "I2C device {bus_number}-{:04x} is owned by the kernel driver {driver:?}, which exposes no power_supply device; not touching the chip",
                            profile.address
                        ),
                    ),
                )
            });
        match &kernel {
            Some(Ok(dir)) => tracing::info!(
                "UPS {who}: the gauge is owned by a kernel driver, reading {}",
                dir.display()
            ),
            Some(Err(e)) => tracing::warn!("UPS {who}: {e}"),
            None => tracing::info!(
                "UPS {who}: {} at i2c-{bus_number} {:#04x}, read-only{}",
                profile.chip.label(),
                profile.address,
                if profile.unverified.is_empty() {
                    String::new()
                } else {
                    format!(" (unverified on hardware: {})", profile.unverified)
                }
            ),
        }
        Source::Chip {
            profile,
            bus_number,
            simulated,
            devfs: ctx.paths.devfs.clone(),
            kernel,
            lines,
        }
    } else {
        // `parse_board` rejects these on the command line; a board file may still name one.
        tracing::warn!("UPS {who}: unknown board {board:?}: nothing to read");
        return None;
    };
    Some(source)
}

/// Runs `round` every `interval` on the `ups-reader` thread, until the collector is dropped
/// (the first reading is taken by the caller).
fn spawn(interval: Duration, round: impl FnMut() + Send + 'static) -> Option<Periodic> {
    match periodic::spawn("ups-reader", interval, First::AfterInterval, round) {
        Ok(worker) => Some(worker),
        Err(e) => {
            tracing::error!("cannot start the ups-reader thread: {e}; UPS readings stay stale");
            None
        }
    }
}

fn read_error(e: ReadError) -> String {
    e.to_string()
}

impl Shared {
    /// How logs name this UPS: its `--ups.config` name, else the board.
    fn who(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.board)
    }

    /// `labels`, after `ups="<name>"` when the UPS comes from `--ups.config`.
    fn labels(&self, labels: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        self.name
            .iter()
            .map(|n| ("ups", n.clone()))
            .chain(labels.iter().map(|&(k, v)| (k, v.to_owned())))
            .collect()
    }

    fn source_label(&self) -> &'static str {
        match &self.source {
            Source::Nut(_) => "nut",
            Source::Chip {
                kernel: Some(_), ..
            } => "power_supply",
            Source::Chip { .. } => "i2c",
        }
    }

    fn chip_label(&self, state: &State) -> String {
        match &self.source {
            Source::Nut(_) => state
                .nut_driver
                .clone()
                .unwrap_or_else(|| "unknown".to_owned()),
            Source::Chip { profile, .. } => profile.chip.label().to_owned(),
        }
    }

    /// Reads the source once.
    fn read(&self) -> RoundResult {
        match &self.source {
            Source::Nut(options) => {
                let result = nut::list_vars(options).and_then(|vars| {
                    let driver = vars.get("driver.name").cloned();
                    nut::interpret(&vars).map(|r| (r, driver))
                });
                match result {
                    Ok((r, driver)) => (
                        Ok(Reading {
                            chip: r.chip,
                            input_voltage_volts: r.input_voltage_volts,
                            load_ratio: r.load_ratio,
                            status: r.status,
                        }),
                        None,
                        driver,
                    ),
                    Err(e) => (Err(e.to_string()), None, None),
                }
            }
            Source::Chip {
                profile,
                bus_number,
                simulated,
                devfs,
                kernel,
                lines,
            } => {
                let chip = match kernel {
                    Some(Ok(dir)) => {
                        power_supply::read(dir, profile.cells).map_err(|e| e.to_string())
                    }
                    Some(Err(e)) => Err(e.clone()),
                    None => {
                        let bus = match simulated {
                            Some(bus) if bus.number() == *bus_number => {
                                Ok(Bus::simulated(bus, Access::Unbound))
                            }
                            Some(_) => Err(BusError::new(
                                Fault::NoBus,
                                &format!("i2c-{bus_number}"),
                                Some("not in the simulated board"),
                            )),
                            None => Bus::open(devfs, *bus_number, Access::Unbound),
                        };
                        bus.map_err(|e| e.to_string())
                            .and_then(|mut bus| read_chip(&mut bus, profile).map_err(read_error))
                    }
                };
                let line = profile.power_line.map(|l| (l.name, lines.read(l.name)));
                let chip = chip.map(|mut chip| {
                    if let (Some(power_line), Some((_, LineState::Level(high)))) =
                        (profile.power_line, &line)
                    {
                        chip.on_battery = Some(power_line.polarity.on_battery(*high));
                    }
                    Reading {
                        chip,
                        ..Reading::default()
                    }
                });
                (chip, line, None)
            }
        }
    }

    /// One round of the reader thread: read, update the history and the guard, act.
    fn round(&self) {
        let reading = self.read();
        self.update(Instant::now(), reading);
    }

    /// The bookkeeping of a round, with the time of the reading passed in (tests use a fake
    /// clock).
    fn update(&self, now: Instant, (reading, line, nut_driver): RoundResult) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if nut_driver.is_some() {
            state.nut_driver = nut_driver;
        }
        let discharging = match &reading {
            Ok(r) => r.chip.on_battery == Some(true) && r.chip.charging != Some(true),
            Err(_) => false,
        };
        match (&reading, discharging) {
            (Ok(r), true) => match r.chip.charge_ratio {
                Some(charge) => state.history.push(now, charge),
                None => state.history.clear(),
            },
            _ => state.history.clear(),
        }
        let runtime_seconds = match &reading {
            Ok(r) if discharging => r
                .chip
                .runtime_seconds
                .or_else(|| state.history.runtime_seconds()),
            _ => None,
        };
        let observation = Observation {
            plausible: reading.is_ok(),
            on_battery: reading.as_ref().ok().and_then(|r| r.chip.on_battery),
            charge_ratio: reading.as_ref().ok().and_then(|r| r.chip.charge_ratio),
            runtime_seconds,
        };
        let decision = state.guard.observe(now, &observation);
        let command = state.guard.options().command.clone();
        let dry_run = state.guard.options().dry_run;

        let problem = match (&reading, &line) {
            (Err(e), _) => Some(e.clone()),
            (Ok(_), Some((name, LineState::Busy { consumer }))) => Some(format!(
                "power-loss line {name} is held by {:?}; on-battery state unknown",
                if consumer.is_empty() {
                    "another process"
                } else {
                    consumer
                }
            )),
            (Ok(_), Some((name, LineState::Missing))) => Some(format!(
                "no GPIO chip has a line named {name}; on-battery state unknown"
            )),
            (Ok(_), Some((name, LineState::Error(e)))) => {
                Some(format!("power-loss line {name}: {e}"))
            }
            _ => None,
        };
        if problem != state.last_problem {
            match &problem {
                Some(p) => tracing::warn!("UPS {}: {p}", self.who()),
                None => tracing::info!("UPS {}: readings fine", self.who()),
            }
            state.last_problem = problem;
        }
        state.snapshot = Some(Snapshot {
            at: now,
            reading,
            line,
            runtime_seconds,
        });
        drop(state);

        match decision {
            Decision::Holding(held) if held.is_zero() => tracing::error!(
                "UPS {}: SHUTDOWN PENDING: on battery and below the threshold; shutting down after the hold unless power returns",
                self.who()
            ),
            Decision::Cancelled(why) => {
                tracing::warn!("UPS {}: pending shutdown cancelled: {why}", self.who());
            }
            Decision::Fire(reason) => {
                let shown = command.join(" ");
                if dry_run {
                    tracing::error!(
                        "UPS {}: SHUTDOWN ({reason}): dry run, not running {shown:?}",
                        self.who()
                    );
                } else {
                    tracing::error!("UPS {}: SHUTDOWN ({reason}): running {shown:?}", self.who());
                    match guard::run_once(&command) {
                        Some(Ok(())) => tracing::error!("UPS {}: {shown:?} succeeded", self.who()),
                        Some(Err(e)) => tracing::error!(
                            "UPS {}: shutdown command failed: {e}; it is not retried",
                            self.who()
                        ),
                        None => tracing::error!(
                            "UPS {}: the shutdown command already ran in this process; not again",
                            self.who()
                        ),
                    }
                }
            }
            Decision::Idle | Decision::Holding(_) | Decision::Fired => {}
        }
    }

    fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let chip = self.chip_label(&state);
        out.gauge(
            "rpi_ups_info",
            "The UPS read: board profile, chip, and source (i2c, power_supply when a kernel driver owns the gauge, nut)",
        )
        .sample_owned(
            self.labels(&[
                ("board", self.board.as_str()),
                ("chip", chip.as_str()),
                ("source", self.source_label()),
            ]),
            1.0,
        );
        out.gauge(
            "rpi_ups_shutdown_pending",
            "1 while the shutdown guard's conditions hold (hold running) or after it asked for the shutdown",
        )
        .sample_owned(self.labels(&[]), f64::from(u8::from(state.guard.pending())));
        let Some(snapshot) = &state.snapshot else {
            return Err(CollectError::Other("no UPS reading yet".to_owned()));
        };
        let age = snapshot.at.elapsed();
        let max_age = self.interval * 3 + Duration::from_secs(10);
        let mut error = None;
        if let Some((name, line)) = &snapshot.line {
            if let LineState::Busy { consumer } = line {
                out.gauge(
                    "rpi_ups_power_line_busy",
                    "1 when the power-loss GPIO line is held by another process (its consumer), so on-battery comes from the gauge alone or is absent",
                )
                .sample_owned(self.labels(&[("line", name), ("consumer", consumer.as_str())]), 1.0);
            }
            if let LineState::Error(e) = line {
                error = Some(format!("power-loss line {name}: {e}"));
            }
        }
        if age > max_age {
            return Err(CollectError::Other(format!(
                "no UPS reading for {} s (the reader is stuck on its source)",
                age.as_secs()
            )));
        }
        let reading = match &snapshot.reading {
            Ok(reading) => reading,
            Err(e) => return Err(CollectError::Other(format!("UPS {}: {e}", self.who()))),
        };
        let c = &reading.chip;
        let flag = |b: bool| f64::from(u8::from(b));
        if let Some(v) = c.on_battery {
            out.gauge(
                "rpi_ups_on_battery",
                "1 when the UPS runs on battery (external power lost)",
            )
            .sample_owned(self.labels(&[]), flag(v));
        }
        if let Some(v) = c.voltage_volts {
            out.gauge("rpi_ups_battery_voltage_volts", "Battery voltage")
                .sample_owned(self.labels(&[]), v);
        }
        if let Some(v) = c.current_amperes {
            out.gauge(
                "rpi_ups_battery_current_amperes",
                "Battery current, positive while charging, negative while discharging",
            )
            .sample_owned(self.labels(&[]), v);
        }
        if let Some(v) = c.charge_ratio {
            out.gauge(
                "rpi_ups_battery_charge_ratio",
                "Battery state of charge (0-1)",
            )
            .sample_owned(self.labels(&[]), v);
        }
        if let Some(v) = c.charging {
            out.gauge("rpi_ups_charging", "1 while the battery is charging")
                .sample_owned(self.labels(&[]), flag(v));
        }
        if let Some(v) = snapshot.runtime_seconds {
            out.gauge(
                "rpi_ups_runtime_seconds",
                "Estimated time left on battery (from the device, else the recent discharge rate); absent while not discharging",
            )
            .sample_owned(self.labels(&[]), v);
        }
        if let Some(v) = reading.input_voltage_volts {
            out.gauge("rpi_ups_input_voltage_volts", "UPS input (mains) voltage")
                .sample_owned(self.labels(&[]), v);
        }
        if let Some(status) = &reading.status {
            let mut family = out.gauge(
                "rpi_ups_status",
                "NUT ups.status flags: OL on line, OB on battery, LB low battery, RB replace battery, CHRG charging, DISCHRG discharging",
            );
            for f in STATUS_FLAGS {
                family.sample_owned(
                    self.labels(&[("flag", f)]),
                    flag(status.iter().any(|s| s == f)),
                );
            }
        }
        if let Some(v) = reading.load_ratio {
            out.gauge("rpi_ups_load_ratio", "UPS load (0-1 of its rating)")
                .sample_owned(self.labels(&[]), v);
        }
        match error {
            Some(e) => Err(CollectError::Other(e)),
            None => Ok(()),
        }
    }
}

/// Reads the profile's chip.
fn read_chip(bus: &mut Bus, profile: &Profile) -> Result<ChipReading, ReadError> {
    let (address, cells) = (profile.address, profile.cells);
    match profile.chip {
        Chip::Ina219 {
            shunt_ohms,
            current_sign,
        } => chips::read_ina219(
            bus,
            address,
            &chips::Ina219Settings {
                cells,
                shunt_ohms,
                current_sign,
            },
        ),
        Chip::Max17040 | Chip::Max17043 => chips::read_max1704x(bus, address, cells),
        Chip::Cw2015 => chips::read_cw2015(bus, address, cells),
        Chip::WaveshareE => chips::read_waveshare_e(bus, address, cells),
        Chip::PiSugar3 => chips::read_pisugar3(bus, address, cells),
    }
}

impl Collector for UpsCollector {
    fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
        if self.units.is_empty() {
            return Err(CollectError::Other(
                "no UPS configured (--ups.board or --ups.config)".to_owned(),
            ));
        }
        let errors: Vec<String> = self
            .units
            .iter()
            .filter_map(|unit| unit.collect(out).err())
            .map(|e| e.to_string())
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CollectError::Other(errors.join("; ")))
        }
    }

    /// Scrapes read what the `ups-reader` thread last stored; it alone touches buses and sockets.
    fn may_block(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::collector::CollectorOptions;
    use crate::collector::board::BoardFile;
    use crate::paths::Paths;

    const X728_ON_BATTERY: &str = "board: geekworm-x728\nchips:\n  - address: 0x36\n    behaviour: read-only\n    registers: {0x02: 0xb9, 0x03: 0x00, 0x04: 0x05, 0x05: 0x80}\ngpio:\n  GPIO6: high\n";

    fn context(sysfs: &Path, section: Option<&str>, options: Options) -> BuildContext {
        let board = section.map(|yaml| {
            Arc::new(BoardFile {
                ups: Some(serde_saphyr::from_str(yaml).expect("valid ups section")),
                ..BoardFile::default()
            })
        });
        BuildContext {
            paths: Paths {
                sysfs: sysfs.to_owned(),
                devfs: sysfs.join("no-dev"),
                ..Paths::default()
            },
            options: CollectorOptions {
                ups: options,
                ..CollectorOptions::default()
            },
            board,
        }
    }

    fn value(set: &MetricSet, name: &str) -> Option<f64> {
        set.get(name)
            .and_then(|f| f.samples.first())
            .map(|s| s.value)
    }

    fn simulated_writes(collector: &UpsCollector) -> usize {
        match &collector.units.first().expect("configured").source {
            Source::Chip {
                simulated: Some(bus),
                ..
            } => bus.writes().len(),
            _ => panic!("not a simulated chip"),
        }
    }

    #[test]
    fn a_simulated_x728_on_battery_is_read_without_a_single_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let collector = UpsCollector::new(&context(
            dir.path(),
            Some(X728_ON_BATTERY),
            Options::default(),
        ));
        let mut out = MetricSet::new();
        collector.collect(&mut out).expect("collect");
        let info = &out.get("rpi_ups_info").expect("info").samples[0];
        assert_eq!(
            info.labels,
            [
                ("board", "geekworm-x728".to_owned()),
                ("chip", "max17043".to_owned()),
                ("source", "i2c".to_owned())
            ]
        );
        assert_eq!(value(&out, "rpi_ups_on_battery"), Some(1.0));
        assert_eq!(value(&out, "rpi_ups_battery_voltage_volts"), Some(3.7));
        assert_eq!(value(&out, "rpi_ups_battery_charge_ratio"), Some(0.055));
        assert_eq!(value(&out, "rpi_ups_shutdown_pending"), Some(0.0));
        assert!(
            out.get("rpi_ups_runtime_seconds").is_none(),
            "no history yet"
        );
        assert!(
            out.get("rpi_ups_charging").is_none(),
            "the gauge cannot tell"
        );
        assert_eq!(simulated_writes(&collector), 0);
    }

    #[test]
    fn the_guard_fires_from_the_reader_in_dry_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = Options {
            shutdown: ShutdownOptions {
                enable: true,
                hold: Duration::ZERO,
                dry_run: true,
                // Would fail loudly if it ran: dry run only logs.
                command: vec!["/nonexistent/poweroff".to_owned()],
                ..ShutdownOptions::default()
            },
            ..Options::default()
        };
        let collector = UpsCollector::new(&context(dir.path(), Some(X728_ON_BATTERY), options));
        let mut out = MetricSet::new();
        collector.collect(&mut out).expect("collect");
        assert_eq!(value(&out, "rpi_ups_shutdown_pending"), Some(1.0));
        let shared = collector.units.first().expect("configured");
        shared.round();
        let state = shared.state.lock().expect("lock");
        assert!(state.guard.pending());
    }

    #[test]
    fn bad_input_is_reported_not_exported() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (section, expect) in [
            // All 0xFF.
            (
                "board: ups-lite\nchips:\n  - address: 0x62\n    registers: {0x02: 0xff, 0x03: 0xff, 0x04: 0xff, 0x05: 0xff}\ngpio: {GPIO4: low}\n",
                "all 0xFF",
            ),
            // 0 V.
            (
                "board: geekworm-x120x\nchips:\n  - address: 0x36\n    registers: {0x04: 0x32}\ngpio: {GPIO6: low}\n",
                "voltage",
            ),
            // Charge above 100 %.
            (
                "board: geekworm-x120x\nchips:\n  - address: 0x36\n    registers: {0x02: 0xb9, 0x04: 0x80}\ngpio: {GPIO6: low}\n",
                "state of charge",
            ),
            // A NACKing chip.
            (
                "board: waveshare-ups-hat\nchips:\n  - address: 0x42\n    behaviour: nack\n",
                "no acknowledgement",
            ),
            // No chip at all.
            ("board: pisugar3\n", "no acknowledgement"),
        ] {
            let collector =
                UpsCollector::new(&context(dir.path(), Some(section), Options::default()));
            let mut out = MetricSet::new();
            let err = collector.collect(&mut out).expect_err(section);
            assert!(err.to_string().contains(expect), "{section}: {err}");
            assert!(out.get("rpi_ups_info").is_some());
            for name in [
                "rpi_ups_on_battery",
                "rpi_ups_battery_voltage_volts",
                "rpi_ups_battery_charge_ratio",
            ] {
                assert!(out.get(name).is_none(), "{section}: {name}");
            }
            assert_eq!(value(&out, "rpi_ups_shutdown_pending"), Some(0.0));
        }
    }

    #[test]
    fn a_busy_or_missing_power_line_is_reported_and_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let busy = X728_ON_BATTERY.replace("GPIO6: high", "GPIO6: {busy: x728-pwr}");
        let collector = UpsCollector::new(&context(dir.path(), Some(&busy), Options::default()));
        let mut out = MetricSet::new();
        collector.collect(&mut out).expect("not fatal");
        let line = &out.get("rpi_ups_power_line_busy").expect("busy").samples[0];
        assert_eq!(
            line.labels,
            [
                ("line", "GPIO6".to_owned()),
                ("consumer", "x728-pwr".to_owned())
            ]
        );
        assert!(out.get("rpi_ups_on_battery").is_none(), "unknown");
        assert_eq!(value(&out, "rpi_ups_battery_voltage_volts"), Some(3.7));

        let missing = X728_ON_BATTERY.replace("gpio:\n  GPIO6: high\n", "");
        let collector = UpsCollector::new(&context(dir.path(), Some(&missing), Options::default()));
        let mut out = MetricSet::new();
        collector.collect(&mut out).expect("not fatal");
        assert!(out.get("rpi_ups_on_battery").is_none());
    }

    #[test]
    fn a_kernel_owned_gauge_is_read_from_sysfs() {
        let sysfs =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ups-x120x-kernel/sys");
        let collector = UpsCollector::new(&context(
            &sysfs,
            Some("board: geekworm-x120x\ngpio: {GPIO6: high}\n"),
            Options::default(),
        ));
        let mut out = MetricSet::new();
        collector.collect(&mut out).expect("collect");
        let info = &out.get("rpi_ups_info").expect("info").samples[0];
        assert_eq!(info.labels[2], ("source", "power_supply".to_owned()));
        assert_eq!(value(&out, "rpi_ups_battery_voltage_volts"), Some(4.1));
        assert_eq!(value(&out, "rpi_ups_battery_charge_ratio"), Some(0.93));
        assert_eq!(value(&out, "rpi_ups_on_battery"), Some(0.0));
        assert_eq!(value(&out, "rpi_ups_charging"), Some(1.0));
    }

    #[test]
    fn a_nut_ups_through_the_collector() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = nut::fake::spawn(nut::fake::Script::Reply(nut::fake::list(
            "ups",
            &[
                ("battery.charge", "80"),
                ("battery.runtime", "1200"),
                ("driver.name", "usbhid-ups"),
                ("input.voltage", "230.5"),
                ("ups.load", "15"),
                ("ups.status", "OL CHRG"),
            ],
        )));
        let options = Options {
            board: Some("nut".to_owned()),
            nut: NutOptions {
                port: fake.address.port(),
                ..NutOptions::default()
            },
            ..Options::default()
        };
        let collector = UpsCollector::new(&context(dir.path(), None, options));
        let mut out = MetricSet::new();
        collector.collect(&mut out).expect("collect");
        let info = &out.get("rpi_ups_info").expect("info").samples[0];
        assert_eq!(info.labels[1], ("chip", "usbhid-ups".to_owned()));
        assert_eq!(value(&out, "rpi_ups_on_battery"), Some(0.0));
        assert_eq!(value(&out, "rpi_ups_charging"), Some(1.0));
        assert_eq!(value(&out, "rpi_ups_load_ratio"), Some(0.15));
        assert_eq!(value(&out, "rpi_ups_input_voltage_volts"), Some(230.5));
        assert!(out.get("rpi_ups_runtime_seconds").is_none(), "charging");
        let status = out.get("rpi_ups_status").expect("status");
        let on: Vec<&str> = status
            .samples
            .iter()
            .filter(|s| s.value == 1.0)
            .map(|s| s.labels[0].1.as_str())
            .collect();
        assert_eq!(on, ["OL", "CHRG"]);
        assert_eq!(status.samples.len(), 6);
    }

    #[test]
    fn the_runtime_estimate_follows_the_discharge_and_restarts_after_a_failed_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let collector = UpsCollector::new(&context(
            dir.path(),
            Some(X728_ON_BATTERY),
            Options::default(),
        ));
        let shared = collector.units.first().expect("configured");
        let Source::Chip {
            simulated: Some(bus),
            lines,
            ..
        } = &shared.source
        else {
            panic!("simulated chip");
        };
        // Forget the start-up reading (5.5 %), taken at another time.
        shared.state.lock().expect("lock").history.clear();
        let t0 = Instant::now();
        // 50 % falling 1 % a minute: 45 % left after 5 minutes is 45 minutes.
        for minute in 0..=5u8 {
            let mut registers = crate::i2c::simulated::Memory::default();
            for (r, v) in [(0x02, 0xb9), (0x04, 50 - minute)] {
                registers.set(r, v);
            }
            bus.add_device(0x36, crate::i2c::simulated::Behaviour::ReadOnly, registers);
            let reading = shared.read();
            shared.update(t0 + Duration::from_secs(60 * u64::from(minute)), reading);
        }
        let mut out = MetricSet::new();
        collector.collect(&mut out).expect("collect");
        let runtime = value(&out, "rpi_ups_runtime_seconds").expect("estimate");
        assert!((runtime - 45.0 * 60.0).abs() < 1e-6, "{runtime}");
        assert_eq!(lines.read("GPIO6"), LineState::Level(true));

        // A failed read restarts the history: no estimate until it has built up again.
        bus.add_device(
            0x36,
            crate::i2c::simulated::Behaviour::Nack,
            crate::i2c::simulated::Memory::default(),
        );
        let reading = shared.read();
        shared.update(t0 + Duration::from_secs(360), reading);
        assert_eq!(simulated_writes(&collector), 0);
        let state = shared.state.lock().expect("lock");
        assert_eq!(state.history.runtime_seconds(), None);
    }

    #[test]
    fn a_config_file_with_several_upses_labels_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = nut::fake::spawn(nut::fake::Script::Reply(nut::fake::list(
            "rack",
            &[("battery.charge", "100"), ("ups.status", "OL")],
        )));
        std::fs::write(dir.path().join("pw"), "secret\n").expect("write");
        let config = dir.path().join("ups.yaml");
        std::fs::write(
            &config,
            format!(
                "ups:\n  - name: hat\n    board: geekworm-x728\n  - name: rack\n    board: nut\n    nut: {{port: {}, ups: rack, username: monitor, password_file: {}}}\n",
                fake.address.port(),
                dir.path().join("pw").display()
            ),
        )
        .expect("write");
        let units = parse_config_file(&config.display().to_string()).expect("valid");
        assert_eq!(units.len(), 2);
        assert_eq!(
            units[1].nut.as_ref().and_then(|n| n.password.as_deref()),
            Some("secret")
        );
        let options = Options {
            units,
            ..Options::default()
        };
        let collector = UpsCollector::new(&context(dir.path(), Some(X728_ON_BATTERY), options));
        let mut out = MetricSet::new();
        collector.collect(&mut out).expect("collect");
        let on_battery: Vec<(String, f64)> = out
            .get("rpi_ups_on_battery")
            .expect("on battery")
            .samples
            .iter()
            .map(|s| (s.labels[0].1.clone(), s.value))
            .collect();
        assert_eq!(
            on_battery,
            [("hat".to_owned(), 1.0), ("rack".to_owned(), 0.0)]
        );
        let info = out.get("rpi_ups_info").expect("info");
        assert_eq!(info.samples[1].labels[0], ("ups", "rack".to_owned()));
        assert_eq!(info.samples[1].labels[1], ("board", "nut".to_owned()));
        let commands = fake.commands.lock().expect("log").clone();
        assert_eq!(commands[1], "PASSWORD \"secret\"");

        for bad in [
            "ups: []\n",
            "ups:\n  - {name: a, board: apc}\n",
            "ups:\n  - {name: a, board: nut}\n  - {name: a, board: pisugar3}\n",
            "ups:\n  - {name: a, board: nut, nut: {password_file: /nonexistent}}\n",
            "ups:\n  - {name: a, board: nut, bus: 2}\n",
        ] {
            std::fs::write(&config, bad).expect("write");
            assert!(
                parse_config_file(&config.display().to_string()).is_err(),
                "{bad}"
            );
        }
    }
}
