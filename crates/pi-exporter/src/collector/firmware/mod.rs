//! `firmware`: the SoC's own view of its health, read from the VideoCore firmware through the
//! property mailbox (`/dev/vcio`): temperature and its limit, the throttled word bit by bit,
//! set and measured clocks, voltages, board identity and firmware build, and on a Pi 5 the
//! PMIC's rails through GENCMD. The fan comes from hwmon.
//!
//! - **Start-up:** opens the device (or the simulator of `--simulate.board`) and probes, one tag
//!   per ioctl, which readings this firmware answers. A tag the firmware rejects makes the kernel
//!   log an error and hold its global mailbox lock, so it is never sent again.
//! - **Scrape:** every probed tag in one property buffer, one ioctl; GENCMD calls only for what
//!   has no property tag (`pmic_read_adc`) or where GET_THROTTLED is not answered. Readings are
//!   kept for [`CACHE_TTL`] and calls are serialised, so concurrent scrapes do not queue on the
//!   kernel's lock, which every firmware call of the system shares.
//! - **Fallbacks:** without a usable mailbox (a container with only `/sys`, a user outside the
//!   `video` group), whatever sysfs offers: the `cpu-thermal` zone, the `rpi_volt` alarm and the
//!   deprecated `get_throttled` attribute. `rpi_firmware_source` says which source served.

pub mod device;
mod fan;
pub mod gencmd;
pub mod mailbox;
pub mod pmic;
pub mod revision;
pub mod simulate;
pub(crate) mod sysfs;

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use self::device::{Mailbox, Vcio};
use self::mailbox::{Clock, Property, PropertyBatch, VOLTAGE_INVALID, VoltageRail};
use self::pmic::{Quantity, RailReading};
use self::simulate::SimulatedFirmware;
use super::parse::{Failures, if_present};
use super::{BuildContext, CollectError, Collector, read_trimmed};
use crate::metrics::MetricSet;
use crate::paths::Paths;

/// GET_VOLTAGE units per volt. Current firmware answers in µV (firmware-mailbox.md §4: the
/// kernel's hwmon driver converts "from microvolts"); BCM2835-era documentation describes an
/// offset from 1.2 V in 25 mV steps instead. [unverified] on every firmware generation: if a
/// board reports nonsense voltages, this is the one number to correct.
pub const VOLTAGE_UNITS_PER_VOLT: f64 = 1_000_000.0;

/// Temperatures come in milli-°C.
const MILLIDEGREES_PER_DEGREE: f64 = 1000.0;

/// How long one reading of the firmware serves scrapes.
pub const CACHE_TTL: Duration = Duration::from_secs(1);

/// How long before the cache expires scrapes stop serving it from the serving thread: more than
/// the time between the scraper's `may_block` check and the run (microseconds, unless the process
/// is descheduled for this long).
const INLINE_MARGIN: Duration = Duration::from_millis(250);

/// The conditions of the throttled word: bit of the live state (the sticky "has occurred" bit is
/// 16 higher) and the `condition` label (firmware-mailbox.md §6).
pub const THROTTLED_CONDITIONS: [(u32, &str); 4] = [
    (0, "under_voltage"),
    (1, "arm_frequency_capped"),
    (2, "throttled"),
    (3, "soft_temperature_limit"),
];
const STICKY_SHIFT: u32 = 16;

/// `rpi_firmware_source` values.
const SOURCE_MAILBOX: &str = "mailbox";
const SOURCE_SYSFS: &str = "sysfs";

/// The devices readings are sent to.
pub struct Devices {
    /// `/dev/vcio`, or the simulated firmware.
    pub property: Arc<dyn Mailbox>,
    /// `/dev/vcio_gencmd` where the kernel has it (only GENCMD is allowed there), else the same
    /// device as `property`.
    pub gencmd: Arc<dyn Mailbox>,
    /// For logs and errors, e.g. `/dev/vcio`.
    pub name: String,
}

impl fmt::Debug for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Devices")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Devices {
    /// The simulated firmware and its `/dev/vcio_gencmd` node.
    pub fn simulated(firmware: Arc<SimulatedFirmware>) -> Self {
        Self {
            gencmd: firmware.gencmd_node(),
            property: firmware,
            name: "simulated firmware".into(),
        }
    }

    /// Opens `<devfs>/vcio`, and `<devfs>/vcio_gencmd` when present. `None` (logged once) when
    /// the mailbox cannot be used.
    pub fn open(paths: &Paths) -> Option<Self> {
        let path = paths.dev("vcio");
        let property = match Vcio::open(&path) {
            Ok(vcio) => Arc::new(vcio),
            Err(error) => {
                let message = open_failure(&path, &error);
                if error.kind() == io::ErrorKind::NotFound {
                    tracing::info!("{message}");
                } else {
                    tracing::warn!("{message}");
                }
                return None;
            }
        };
        let gencmd_path = paths.dev("vcio_gencmd");
        let gencmd: Arc<dyn Mailbox> = match Vcio::open(&gencmd_path) {
            Ok(node) => Arc::new(node),
            Err(error) => {
                tracing::debug!(
                    "{}: {error}; sending GENCMD to {}",
                    gencmd_path.display(),
                    path.display()
                );
                property.clone()
            }
        };
        Some(Self {
            property,
            gencmd,
            name: path.display().to_string(),
        })
    }
}

/// The one log line for a mailbox that cannot be opened.
fn open_failure(path: &Path, error: &io::Error) -> String {
    let fallback = "firmware state from sysfs instead (temperature, under-voltage; no clocks, voltages, throttling history)";
    match error.kind() {
        io::ErrorKind::NotFound => format!(
            "no {} (not a Pi, or a container without it): {fallback}",
            path.display()
        ),
        io::ErrorKind::PermissionDenied => format!(
            "cannot open {}: permission denied. Add the exporter's user to the group owning it, `video` on Raspberry Pi OS (`usermod -aG video <user>`, or SupplementaryGroups=video in the systemd unit); {fallback}",
            path.display()
        ),
        _ => format!("cannot open {}: {error}; {fallback}", path.display()),
    }
}

/// What the start-up probe found the firmware answers.
#[derive(Debug)]
struct Probed {
    devices: Devices,
    /// Every answered property, sent together at each scrape.
    batch: PropertyBatch,
    /// GET_THROTTLED is not answered but GENCMD `get_throttled` is.
    throttled_by_gencmd: bool,
    /// GENCMD `pmic_read_adc` works (Pi 5).
    pmic: bool,
}

/// Properties worth probing, in the order they are sent.
fn candidates() -> Vec<Property> {
    let mut all = vec![
        Property::FirmwareRevision,
        Property::BoardRevision,
        Property::BoardSerial,
        Property::Temperature,
        Property::MaxTemperature,
        Property::Throttled,
    ];
    all.extend(Clock::ALL.map(Property::ClockRate));
    all.extend(Clock::ALL.map(Property::ClockMeasured));
    all.extend(VoltageRail::ALL.map(Property::Voltage));
    all
}

/// Whether an answered value means the board has the reading: the firmware answers 0 for a
/// clock it does not have and 0x80000000 for an unknown voltage id.
fn exists(property: Property, value: u64) -> bool {
    match property {
        Property::ClockRate(_) => value != 0,
        Property::Voltage(_) => value != u64::from(VOLTAGE_INVALID),
        _ => true,
    }
}

/// Sends `batch` in one ioctl and returns the reply buffer, its code checked. A firmware error
/// code comes back as `EINVAL` from the kernel, or as `InvalidData` from the check.
fn exchange(device: &dyn Mailbox, batch: &PropertyBatch) -> io::Result<Vec<u32>> {
    let mut buf = batch.request();
    device.property(&mut buf)?;
    mailbox::check_buffer(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(buf)
}

/// Sends one GENCMD command and returns the answer.
fn run_gencmd(devices: &Devices, command: &str) -> Result<String, String> {
    let mut buf = gencmd::request(command).map_err(|e| e.to_string())?;
    devices
        .gencmd
        .property(&mut buf)
        .map_err(|e| format!("{}: GENCMD {command}: {e}", devices.name))?;
    gencmd::decode(&buf).map_err(|e| format!("{}: GENCMD {command}: {e}", devices.name))
}

impl Probed {
    /// Probes one tag per ioctl. `None` when nothing at all is answered.
    fn probe(devices: Devices) -> Option<Self> {
        let mut accepted = Vec::new();
        let mut absent = Vec::new();
        let mut rejected_tags = HashSet::new();
        let mut rejected = Vec::new();
        let mut measured_candidates = HashSet::new();
        for property in candidates() {
            if rejected_tags.contains(&property.tag()) {
                continue;
            }
            // A clock the board does not have has no measured rate worth asking for.
            if let Property::ClockMeasured(clock) = property
                && !measured_candidates.contains(&clock)
            {
                continue;
            }
            let batch = PropertyBatch::new(vec![property]);
            let answer = match exchange(devices.property.as_ref(), &batch) {
                Ok(buf) => match batch.decode(&buf).next() {
                    Some((_, result)) => result.map_err(|e| e.to_string()),
                    None => Err("no reply".into()),
                },
                // The firmware rejected this tag; other tags may still work.
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        || e.kind() == io::ErrorKind::InvalidData =>
                {
                    Err(e.to_string())
                }
                Err(e) => {
                    tracing::warn!(
                        "{}: {e}; the firmware mailbox is unusable, reading sysfs instead",
                        devices.name
                    );
                    return None;
                }
            };
            match answer {
                Ok(value) if exists(property, value) => {
                    if let Property::ClockRate(clock) = property {
                        measured_candidates.insert(clock);
                    }
                    accepted.push(property);
                }
                Ok(_) => absent.push(property),
                Err(reason) => {
                    rejected_tags.insert(property.tag());
                    rejected.push(format!("{property:?} ({reason})"));
                }
            }
        }
        let throttled_by_gencmd = !accepted.contains(&Property::Throttled)
            && run_gencmd(&devices, "get_throttled")
                .is_ok_and(|text| gencmd::parse_throttled(&text).is_some());
        let pmic =
            run_gencmd(&devices, pmic::COMMAND).is_ok_and(|text| !pmic::parse(&text).0.is_empty());
        if accepted.is_empty() && !throttled_by_gencmd && !pmic {
            tracing::warn!(
                "{}: the firmware answered no reading ({}); reading sysfs instead",
                devices.name,
                rejected.join(", ")
            );
            return None;
        }
        // One short line at start-up; the lists (dozens of tags) only for a debugging session.
        tracing::info!(
            device = %devices.name,
            "firmware mailbox: {} readings, {} not answered, {} absent on this board; get_throttled by GENCMD: {}, pmic_read_adc: {}",
            accepted.len(),
            rejected.len(),
            absent.len(),
            yes_no(throttled_by_gencmd),
            yes_no(pmic),
        );
        tracing::debug!(
            device = %devices.name,
            "firmware mailbox readings: {accepted:?}; not answered: [{}]; absent: {absent:?}",
            rejected.join(", "),
        );
        Some(Self {
            devices,
            batch: PropertyBatch::new(accepted),
            throttled_by_gencmd,
            pmic,
        })
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// The throttled word and whether its sticky bits mean "since boot".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Throttled {
    word: u32,
    /// False for the sysfs attribute: the kernel clears the sticky bits at each of its reads.
    history: bool,
}

/// Each condition of a throttled word: label, active now, occurred since boot.
pub fn throttled_conditions(word: u32) -> [(&'static str, bool, bool); 4] {
    THROTTLED_CONDITIONS.map(|(bit, condition)| {
        let now = word >> bit & 1 == 1;
        let since_boot = word >> (bit + STICKY_SHIFT) & 1 == 1;
        (condition, now, since_boot)
    })
}

/// One reading of everything, from whichever source answered.
#[derive(Debug, Default)]
struct Readings {
    source: Option<&'static str>,
    temperature: Option<f64>,
    temperature_limit: Option<f64>,
    throttled: Option<Throttled>,
    under_voltage_alarm: Option<bool>,
    clocks: Vec<(Clock, f64)>,
    measured: Vec<(Clock, f64)>,
    voltages: Vec<(VoltageRail, f64)>,
    firmware_build: Option<f64>,
    revision: Option<u32>,
    serial: Option<String>,
    pmic: Vec<RailReading>,
    fan: Option<fan::Fan>,
}

impl Readings {
    fn apply(&mut self, property: Property, value: u64) {
        let number = value as f64;
        match property {
            Property::FirmwareRevision => self.firmware_build = Some(number),
            Property::BoardRevision => self.revision = u32::try_from(value).ok(),
            Property::BoardSerial => self.serial = Some(revision::format_serial(value)),
            Property::Temperature => self.temperature = Some(number / MILLIDEGREES_PER_DEGREE),
            Property::MaxTemperature => {
                self.temperature_limit = Some(number / MILLIDEGREES_PER_DEGREE)
            }
            Property::Throttled => {
                self.throttled = u32::try_from(value).ok().map(|word| Throttled {
                    word,
                    history: true,
                })
            }
            Property::ClockRate(clock) => self.clocks.push((clock, number)),
            Property::ClockMeasured(clock) => self.measured.push((clock, number)),
            Property::Voltage(rail) if exists(property, value) => {
                self.voltages.push((rail, number / VOLTAGE_UNITS_PER_VOLT))
            }
            Property::Voltage(_) => {}
        }
    }
}

/// A rendered reading, served to scrapes for [`CACHE_TTL`].
#[derive(Debug)]
struct Snapshot {
    taken: Instant,
    metrics: MetricSet,
    result: Result<(), String>,
}

#[derive(Debug)]
pub struct FirmwareCollector {
    paths: Paths,
    /// `None`: no usable mailbox, sysfs only.
    mailbox: Option<Probed>,
    cache_ttl: Duration,
    /// Held while reading, which also serialises the mailbox calls of this instance (the
    /// doctor's private instance makes its own).
    cache: Mutex<Option<Snapshot>>,
}

impl FirmwareCollector {
    pub fn new(ctx: &BuildContext) -> Self {
        let devices = match &ctx.board {
            Some(board) => match &board.firmware {
                Some(firmware) => Some(Devices::simulated(Arc::new(SimulatedFirmware::new(
                    firmware.clone(),
                )))),
                None => {
                    tracing::info!(
                        "the board file has no firmware section: no mailbox, reading sysfs"
                    );
                    None
                }
            },
            None => Devices::open(&ctx.paths),
        };
        Self::with_devices(ctx.paths.clone(), devices, CACHE_TTL)
    }

    /// Probes `devices` (if any) and builds the collector; `cache_ttl` zero reads at every call
    /// (for benchmarks).
    pub fn with_devices(paths: Paths, devices: Option<Devices>, cache_ttl: Duration) -> Self {
        Self {
            paths,
            mailbox: devices.and_then(Probed::probe),
            cache_ttl,
            cache: Mutex::new(None),
        }
    }

    /// Reads everything now.
    fn read(&self) -> Snapshot {
        let mut failures = Failures::default();
        let mut r = Readings::default();
        if let Some(probed) = &self.mailbox {
            match read_mailbox(probed, &mut r, &mut failures) {
                Ok(()) => r.source = Some(SOURCE_MAILBOX),
                Err(error) => failures.push(error),
            }
        }
        self.read_sysfs(&mut r, &mut failures);
        r.fan = fan::read(&self.paths, &mut failures);

        let mut metrics = MetricSet::new();
        render(&r, &mut metrics);
        Snapshot {
            taken: Instant::now(),
            metrics,
            result: failures.finish().map_err(|e| e.to_string()),
        }
    }

    /// Fills what the mailbox did not give from sysfs and procfs.
    fn read_sysfs(&self, r: &mut Readings, failures: &mut Failures) {
        if r.temperature.is_none() {
            r.temperature = sysfs::soc_temperature(&self.paths, failures);
        }
        if r.throttled.is_none() {
            r.throttled = sysfs::throttled_word(&self.paths, failures).map(|word| Throttled {
                word,
                history: false,
            });
            r.under_voltage_alarm = sysfs::under_voltage_alarm(&self.paths, failures);
        }
        if r.revision.is_none() || r.serial.is_none() {
            let path = self.paths.proc("cpuinfo");
            if let Some(text) = if_present(failures, read_trimmed(&path)) {
                let cpuinfo = revision::parse_cpuinfo(&text);
                r.revision = r.revision.or(cpuinfo.revision);
                r.serial = r.serial.take().or(cpuinfo.serial);
            }
        }
        let found =
            r.temperature.is_some() || r.throttled.is_some() || r.under_voltage_alarm.is_some();
        if r.source.is_none() {
            if found {
                r.source = Some(SOURCE_SYSFS);
            } else {
                failures.push(CollectError::Other(format!(
                    "no firmware source: no usable mailbox, and no cpu-thermal zone, rpi_volt hwmon or get_throttled attribute under {}",
                    self.paths.sysfs.display()
                )));
            }
        }
    }
}

/// One ioctl for every probed property, plus the GENCMD calls. An `Err` means the mailbox gave
/// nothing (the caller falls back to sysfs); a failed tag or command only costs its reading.
fn read_mailbox(p: &Probed, r: &mut Readings, failures: &mut Failures) -> Result<(), CollectError> {
    let name = &p.devices.name;
    if !p.batch.properties().is_empty() {
        let buf = exchange(p.devices.property.as_ref(), &p.batch)
            .map_err(|e| CollectError::Other(format!("{name}: {e}")))?;
        for (property, result) in p.batch.decode(&buf) {
            match result {
                Ok(value) => r.apply(property, value),
                Err(e) => failures.push(CollectError::Other(format!("{name}: {property:?}: {e}"))),
            }
        }
    }
    if p.throttled_by_gencmd {
        let word = run_gencmd(&p.devices, "get_throttled").and_then(|text| {
            gencmd::parse_throttled(&text).ok_or(format!("{name}: get_throttled answered {text:?}"))
        });
        if let Some(word) = failures.record(word.map_err(CollectError::Other)) {
            r.throttled = Some(Throttled {
                word,
                history: true,
            });
        }
    }
    if p.pmic {
        let text = run_gencmd(&p.devices, pmic::COMMAND).map_err(CollectError::Other);
        if let Some(text) = failures.record(text) {
            let (readings, malformed) = pmic::parse(&text);
            if malformed > 0 {
                failures.push(CollectError::Other(format!(
                    "{name}: {}: skipped {malformed} malformed line(s)",
                    pmic::COMMAND
                )));
            }
            r.pmic = readings;
        }
    }
    Ok(())
}

fn render(r: &Readings, out: &mut MetricSet) {
    if let Some(source) = r.source {
        out.gauge(
            "rpi_firmware_source",
            "Where the firmware readings of this scrape came from, always 1: mailbox (/dev/vcio) or sysfs (fallback without clocks, voltages or throttling history)",
        )
        .sample([("source", source)], 1.0);
    }
    if let Some(code) = r.revision {
        let info = revision::decode(code);
        out.gauge(
            "rpi_board_info",
            "Board identity decoded from the revision code, always 1",
        )
        .sample(
            [
                ("model", info.model),
                ("revision", &info.revision),
                ("memory", info.memory),
                ("manufacturer", info.manufacturer),
                ("processor", info.processor),
                ("serial", r.serial.as_deref().unwrap_or(revision::UNKNOWN)),
            ],
            1.0,
        );
    }
    if let Some(time) = r.firmware_build {
        out.gauge(
            "rpi_firmware_build_timestamp_seconds",
            "Build time of the running VideoCore firmware, in seconds since the Unix epoch",
        )
        .sample([], time);
    }
    if let Some(celsius) = r.temperature {
        out.gauge("rpi_soc_temperature_celsius", "SoC temperature")
            .sample([], celsius);
    }
    if let Some(celsius) = r.temperature_limit {
        out.gauge(
            "rpi_soc_temperature_limit_celsius",
            "The firmware's maximum safe SoC temperature, above which it throttles",
        )
        .sample([], celsius);
    }
    if let Some(throttled) = r.throttled {
        for (condition, now, since_boot) in throttled_conditions(throttled.word) {
            out.gauge(
                "rpi_throttled",
                "Whether the firmware reports the condition now (1) or not (0)",
            )
            .sample([("condition", condition)], f64::from(u8::from(now)));
            if throttled.history {
                out.gauge(
                    "rpi_throttled_since_boot",
                    "Whether the condition occurred since boot (1) or not (0), unless another reader cleared the firmware's sticky bits",
                )
                .sample([("condition", condition)], f64::from(u8::from(since_boot)));
            }
        }
    }
    if let Some(alarm) = r.under_voltage_alarm {
        out.gauge(
            "rpi_under_voltage_alarm",
            "The kernel's rpi_volt in0_lcrit_alarm: 1 when under-voltage occurred within its last 2-second poll period (sysfs fallback)",
        )
        .sample([], f64::from(u8::from(alarm)));
    }
    for (clock, hertz) in &r.clocks {
        out.gauge("rpi_clock_hertz", "Clock rate the firmware set")
            .sample([("clock", clock.label())], *hertz);
    }
    for (clock, hertz) in &r.measured {
        out.gauge(
            "rpi_clock_measured_hertz",
            "Clock rate the firmware measured: below the set rate while throttled",
        )
        .sample([("clock", clock.label())], *hertz);
    }
    for (rail, volts) in &r.voltages {
        out.gauge("rpi_voltage_volts", "Voltage the firmware reports")
            .sample([("rail", rail.label())], *volts);
    }
    for reading in &r.pmic {
        let (name, help) = match reading.quantity {
            Quantity::Volts => ("rpi_pmic_rail_volts", "Voltage of a PMIC rail (Pi 5)"),
            Quantity::Amperes => ("rpi_pmic_rail_amperes", "Current of a PMIC rail (Pi 5)"),
        };
        out.gauge(name, help)
            .sample([("rail", reading.rail.as_str())], reading.value);
    }
    if let Some(watts) = pmic::power_watts(&r.pmic) {
        out.gauge(
            "rpi_power_watts",
            "Sum of voltage times current over the PMIC rails that have both: SoC-side power, without USB, HATs, NVMe or the 5 V input's losses (Pi 5)",
        )
        .sample([], watts);
    }
    let input = r
        .pmic
        .iter()
        .find(|x| x.rail == pmic::INPUT_RAIL && x.quantity == Quantity::Volts);
    if let Some(input) = input {
        out.gauge(
            "rpi_input_voltage_volts",
            "The 5 V input (EXT5V) as the PMIC measures it: the margin to under-voltage (Pi 5)",
        )
        .sample([], input.value);
    }
    if let Some(fan) = r.fan {
        if let Some(rpm) = fan.rpm {
            out.gauge("rpi_fan_speed_rpm", "Fan speed from its tachometer")
                .sample([], rpm);
        }
        if let Some(ratio) = fan.pwm_ratio {
            out.gauge("rpi_fan_pwm_ratio", "Fan drive: PWM duty cycle, 0 to 1")
                .sample([], ratio);
        }
    }
}

impl Collector for FirmwareCollector {
    fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let snapshot = match cache.take() {
            Some(fresh) if fresh.taken.elapsed() < self.cache_ttl => cache.insert(fresh),
            _ => cache.insert(self.read()),
        };
        out.append(snapshot.metrics.clone());
        snapshot.result.clone().map_err(CollectError::Other)
    }

    /// Every source goes through the firmware (the mailbox, or the kernel drivers that ask it),
    /// except while the cached snapshot is fresh with [`INLINE_MARGIN`] to spare, so it is still
    /// fresh when the run this answer sent to the serving thread starts.
    fn may_block(&self) -> bool {
        let inline_window = self.cache_ttl.saturating_sub(INLINE_MARGIN);
        match self.cache.try_lock() {
            Ok(cache) => cache
                .as_ref()
                .is_none_or(|fresh| fresh.taken.elapsed() >= inline_window),
            Err(_) => true,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
