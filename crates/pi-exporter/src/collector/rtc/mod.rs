//! `rtc`: the real-time clocks that keep time while a Pi is off, and how far they are from the
//! system clock.
//!
//! Three ways to read an RTC, chosen per chip (the reference notes in `docs/metrics.md` explain
//! the kernel behaviour behind each):
//!
//! 1. **Kernel driver bound** (any RTC in `<sysfs>/class/rtc`, e.g. the `i2c-rtc,ds3231` overlay
//!    or the Pi 5's `rpi-rtc`): `since_epoch`, `hctosys`, the DS3231's hwmon temperature, the Pi
//!    5's battery. A read failing with EINVAL means the kernel refused the time (OSF set).
//! 2. **No driver bound**: a DS3231 at `--collector.rtc.i2c-bus`/`--collector.rtc.i2c-address`
//!    read from userspace with `ds323x` on linux-embedded-hal: time, OSF, EOSC, temperature,
//!    aging offset.
//! 3. **Raw read alongside the driver** (`--collector.rtc.raw-registers`, off by default): the
//!    status and aging registers of a kernel-owned DS3231 through a combined `I2C_RDWR`
//!    transfer. Kernels that do not check OSF return a garbage time silently; this shows OSF.
//!
//! Nothing here writes to an RTC: [`crate::i2c`] refuses writes on the raw path, and only
//! `ds323x` getters are called.
//!
//! `--simulate.board` with an `rtc:` section replaces the I2C buses with simulated ones holding
//! the board's DS3231 register maps ([`simulated`]); sysfs still comes from `--path.sysfs`.

pub mod ds3231;
mod offset;
pub mod simulated;
mod sysfs;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, ArgMatches};

use self::offset::{Offset, Offsets, SystemClock};
use self::sysfs::{Kind, RealFiles, SysfsRead, SysfsRtc, TimeRead};
use super::flags::{self, FlagError};
use super::parse::Failures;
use super::{BuildContext, CollectError, Collector};
use crate::i2c::simulated::SimulatedBus;
use crate::i2c::{Access, Bus, BusError, Fault};
use crate::metrics::MetricSet;

pub use self::simulated::RtcBoard;

/// Before this time (2024-01-01 UTC, earlier than the exporter's first release) an RTC's time is
/// certainly wrong: a chip reset to its power-on 2000-01-01, or a Pi 5 RTC that lost power.
pub const EARLIEST_PLAUSIBLE_TIME: i64 = 1_704_067_200;

/// How often a DS3231 that did not answer is looked for again.
const PROBE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Options {
    /// Bus of the userspace DS3231 read (path 2); `None` turns that read off.
    pub i2c_bus: Option<u32>,
    pub i2c_address: u8,
    /// Read OSF, EOSC and the aging offset of kernel-owned DS3231s alongside their driver.
    pub raw_registers: bool,
    /// How often the RTC-minus-system offset is measured; zero turns the measurement off.
    pub offset_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            i2c_bus: Some(1),
            i2c_address: ds3231::DEFAULT_ADDRESS,
            raw_registers: false,
            offset_interval: Duration::from_secs(60),
        }
    }
}

/// The rtc collector's flags.
pub fn args() -> Vec<Arg> {
    vec![
        Arg::new("collector.rtc.i2c-bus")
            .long("collector.rtc.i2c-bus")
            .value_name("N|none")
            .default_value("1")
            .value_parser(parse_i2c_bus)
            .help("I2C bus of a DS3231 that no kernel driver owns, read from userspace (none: do not look for one)"),
        Arg::new("collector.rtc.i2c-address")
            .long("collector.rtc.i2c-address")
            .value_name("ADDRESS")
            .default_value("0x68")
            .value_parser(parse_i2c_address)
            .help("I2C address of that DS3231"),
        Arg::new("collector.rtc.raw-registers")
            .long("collector.rtc.raw-registers")
            .action(ArgAction::SetTrue)
            .help("Also read the oscillator-stop flag and aging offset of kernel-owned DS3231s with read-only combined I2C transfers alongside the driver"),
        Arg::new("collector.rtc.offset-interval")
            .long("collector.rtc.offset-interval")
            .value_name("DURATION")
            .default_value("60s")
            .value_parser(parse_offset_interval)
            .help("How often to measure RTC minus system clock in the background (0: never)"),
    ]
}

/// `--collector.rtc.*` into [`Options`].
pub fn options(m: &ArgMatches) -> Result<Options, FlagError> {
    let defaults = Options::default();
    Ok(Options {
        i2c_bus: flags::one(m, "collector.rtc.i2c-bus")?.unwrap_or(defaults.i2c_bus),
        i2c_address: flags::one(m, "collector.rtc.i2c-address")?.unwrap_or(defaults.i2c_address),
        raw_registers: flags::switch(m, "collector.rtc.raw-registers")?,
        offset_interval: flags::one(m, "collector.rtc.offset-interval")?
            .unwrap_or(defaults.offset_interval),
    })
}

/// Parses `--collector.rtc.i2c-bus`: a bus number, or `none`.
pub fn parse_i2c_bus(text: &str) -> Result<Option<u32>, String> {
    if text == "none" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("{text:?} is not an I2C bus number or none"))
}

/// Parses `--collector.rtc.i2c-address`: `0x68` or `104`, a 7-bit device address (0x03-0x77).
pub fn parse_i2c_address(text: &str) -> Result<u8, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u8::from_str_radix(hex, 16).ok()
        }
        Some(_) => None,
        None => text.parse().ok(),
    };
    parsed
        .filter(|a| (0x03..=0x77).contains(a))
        .ok_or_else(|| format!("{text:?} is not a 7-bit I2C device address (0x03-0x77)"))
}

/// Parses `--collector.rtc.offset-interval`: 0 (off) or at least 5 s, since one measurement
/// can take up to 1.5 s per RTC.
pub fn parse_offset_interval(text: &str) -> Result<Duration, String> {
    let interval = serving::duration::parse(text)?;
    if interval.is_zero() || interval >= Duration::from_secs(5) {
        Ok(interval)
    } else {
        Err(format!(
            "{text:?}: the offset interval is 0 (off) or at least 5s"
        ))
    }
}

/// The collector.
pub struct RtcCollector {
    shared: Arc<Shared>,
    _offset_worker: Option<super::periodic::Periodic>,
}

impl std::fmt::Debug for RtcCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcCollector")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

/// What the scrapes and the offset thread share.
#[derive(Debug)]
struct Shared {
    sysfs: PathBuf,
    devfs: PathBuf,
    files: Arc<dyn SysfsRead>,
    /// The simulated I2C bus of `--simulate.board`; when set, no real bus is ever opened.
    simulated: Option<SimulatedBus>,
    options: Options,
    userspace: Option<Userspace>,
    offsets: Offsets,
    notes: Notes,
    /// The last scrape found a chip to read (every read of one goes over I2C).
    found_chip: AtomicBool,
}

/// The DS3231 read from userspace (path 2).
#[derive(Debug)]
struct Userspace {
    /// `1-0068`: the kernel's name for the I2C device, used as the `device` label.
    device: String,
    bus_number: u32,
    address: u8,
    /// Open handle, shared by scrapes and the offset thread one transfer group at a time;
    /// dropped after a bus error so the next read reopens the device.
    bus: Mutex<Option<Bus>>,
    /// Whether the chip ever answered: until then a NACK means "no DS3231 here", not a fault.
    present: AtomicBool,
    next_probe: Mutex<Option<Instant>>,
}

/// Log lines for conditions that persist (an invalid time, an absent chip): one when a condition
/// starts or changes, one when it clears, never one per scrape.
#[derive(Debug, Default)]
struct Notes(Mutex<HashMap<String, String>>);

impl Notes {
    fn set(&self, key: &str, condition: Option<String>) {
        let mut notes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match condition {
            Some(message) => {
                if notes.get(key) != Some(&message) {
                    tracing::warn!("rtc {key}: {message}");
                    notes.insert(key.to_owned(), message);
                }
            }
            None => {
                if notes.remove(key).is_some() {
                    tracing::info!("rtc {key}: fine again");
                }
            }
        }
    }

    /// Like [`Notes::set`] but at info level: expected states such as "no chip fitted".
    fn inform(&self, key: &str, message: String) {
        let mut notes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if notes.get(key) != Some(&message) {
            tracing::info!("rtc {key}: {message}");
            notes.insert(key.to_owned(), message);
        }
    }
}

impl RtcCollector {
    pub fn new(ctx: &BuildContext) -> Self {
        Self::with_files(ctx, Arc::new(RealFiles))
    }

    /// With another sysfs reader (tests inject EINVAL).
    fn with_files(ctx: &BuildContext, files: Arc<dyn SysfsRead>) -> Self {
        let options = ctx.options.rtc.clone();
        let simulated = ctx
            .board
            .as_ref()
            .and_then(|board| board.rtc.as_ref())
            .map(RtcBoard::bus);
        let mut shared = Shared {
            sysfs: ctx.paths.sysfs.clone(),
            devfs: ctx.paths.devfs.clone(),
            files,
            simulated,
            options: options.clone(),
            userspace: None,
            offsets: Offsets::default(),
            notes: Notes::default(),
            found_chip: AtomicBool::new(true),
        };
        shared.userspace = shared.userspace_target();
        let shared = Arc::new(shared);
        let offset_worker = if options.offset_interval.is_zero() {
            None
        } else {
            let worker_shared = Arc::clone(&shared);
            let clock = SystemClock::new();
            offset::spawn(options.offset_interval, move || {
                worker_shared.measure_offsets(&clock);
            })
        };
        Self {
            shared,
            _offset_worker: offset_worker,
        }
    }
}

impl Shared {
    /// Opens a bus: the simulated one under `--simulate.board` (other numbers do not exist
    /// then, so a simulation never touches real hardware), else `<devfs>/i2c-<number>`.
    fn open_bus(&self, number: u32, access: Access) -> Result<Bus, BusError> {
        match &self.simulated {
            Some(bus) if bus.number() == number => Ok(Bus::simulated(bus, access)),
            Some(_) => Err(BusError::new(
                Fault::NoBus,
                &format!("i2c-{number}"),
                Some("not in the simulated board"),
            )),
            None => Bus::open(&self.devfs, number, access),
        }
    }

    /// Decides at start-up whether to read a DS3231 from userspace, and logs why not.
    fn userspace_target(&self) -> Option<Userspace> {
        let bus_number = self.options.i2c_bus?;
        let address = self.options.i2c_address;
        let device = format!("{bus_number}-{address:04x}");
        let bus_exists = match &self.simulated {
            Some(bus) => bus.number() == bus_number,
            None => self.devfs.join(format!("i2c-{bus_number}")).exists(),
        };
        if !bus_exists {
            tracing::debug!("no I2C bus {bus_number}: no userspace DS3231 read");
            return None;
        }
        // A bound driver makes I2C_SLAVE fail with EBUSY; say why instead of failing each scrape.
        let driver_link = self.sysfs.join(format!("bus/i2c/devices/{device}/driver"));
        if let Ok(target) = std::fs::read_link(&driver_link) {
            let driver = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if driver == "rtc-ds1307" {
                tracing::info!(
                    "I2C device {device} is owned by the kernel's rtc-ds1307 driver: reading it through sysfs"
                );
            } else {
                tracing::warn!(
                    "I2C device {device} is bound to the kernel driver {driver:?}, not an RTC this collector reads; leaving it alone"
                );
            }
            return None;
        }
        Some(Userspace {
            device,
            bus_number,
            address,
            bus: Mutex::new(None),
            present: AtomicBool::new(false),
            next_probe: Mutex::new(None),
        })
    }

    /// Runs `read` on the userspace DS3231's bus, opening it if needed and closing it after a
    /// bus error.
    fn with_userspace_bus<T>(
        &self,
        target: &Userspace,
        read: impl FnOnce(&mut Bus) -> Result<T, BusError>,
    ) -> Result<T, BusError> {
        let mut slot = target.bus.lock().unwrap_or_else(PoisonError::into_inner);
        let bus = match &mut *slot {
            Some(bus) => bus,
            none => none.insert(self.open_bus(target.bus_number, Access::Unbound)?),
        };
        let result = read(bus);
        if result.is_err() {
            *slot = None;
        }
        result
    }

    /// How old a cached offset may be before it is not shown: a few rounds.
    fn offset_max_age(&self) -> Duration {
        self.options.offset_interval * 3 + offset::MAX_WAIT * 4
    }

    fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
        let mut failures = Failures::default();
        // What `may_block` answered for this run: without a chip, this run is on the serving
        // thread, and a chip that appeared since waits for the next scrape (on the pool).
        let had_chip = self.found_chip.load(Ordering::Acquire);
        let found = sysfs::discover(self.files.as_ref(), &self.sysfs, &mut failures);
        self.found_chip.store(
            !found.is_empty() || self.userspace.is_some(),
            Ordering::Release,
        );
        if !had_chip && !found.is_empty() {
            let devices: Vec<&str> = found.iter().map(|rtc| rtc.device.as_str()).collect();
            failures.push(CollectError::Other(format!(
                "new RTC {}: read from the next scrape",
                devices.join(", ")
            )));
            return failures.finish();
        }
        for rtc in found {
            self.collect_sysfs(&rtc, out, &mut failures);
        }
        if let Some(target) = &self.userspace {
            self.collect_userspace(target, out, &mut failures);
        }
        failures.finish()
    }

    fn collect_sysfs(&self, rtc: &SysfsRtc, out: &mut MetricSet, failures: &mut Failures) {
        let files = self.files.as_ref();
        let device = rtc.device.as_str();
        let labels = [("device", device)];
        info(out, &rtc.name, device, "sysfs");

        let mut invalid = None;
        let time = match failures.record(sysfs::read_time(files, rtc)) {
            Some(TimeRead::Time(t)) => Some(t),
            Some(TimeRead::Refused) => {
                invalid = Some("the kernel refuses to read the time (EINVAL): the oscillator-stop flag is set, the time in the chip is not valid".to_owned());
                None
            }
            None => None,
        };
        if let Some(Some(hctosys)) = failures.record(sysfs::read_hctosys(files, rtc)) {
            out.gauge(
                "rpi_rtc_hctosys",
                "1 when this RTC set the system clock at boot; 0 on a Pi with an RTC means it was not valid at boot or is not the system's RTC",
            )
            .sample(labels, f64::from(u8::from(hctosys)));
        }

        match rtc.kind {
            Kind::Ds3231 { bus, address } => {
                let hwmon = failures
                    .record(sysfs::read_ds3231_temperature(files, rtc))
                    .flatten();
                let raw = if self.options.raw_registers {
                    let read = self
                        .open_bus(bus, Access::AlongsideDriver)
                        .and_then(|bus| ds3231::read_status(bus, address));
                    match read {
                        Ok(status) => Some(status),
                        Err(e) => {
                            failures.push(CollectError::Other(format!(
                                "{device}: raw register read: {e}"
                            )));
                            None
                        }
                    }
                } else {
                    None
                };
                let temperature = hwmon.or(raw.map(|s| s.temperature_celsius));
                if let Some(celsius) = temperature {
                    temperature_sample(out, device, celsius);
                }
                if let Some(status) = raw {
                    status_samples(out, device, &status);
                    if status.oscillator_stopped && invalid.is_none() {
                        invalid = Some("the oscillator-stop flag (OSF) is set although the kernel returns a time: the time is not valid".to_owned());
                    }
                }
            }
            Kind::RaspberryPi => {
                if let Some((battery, charging)) =
                    failures.record(sysfs::read_rpi_battery(files, rtc))
                {
                    if let Some(volts) = battery {
                        out.gauge(
                            "rpi_rtc_battery_volts",
                            "Voltage of the Pi 5 RTC's backup battery",
                        )
                        .sample(labels, volts);
                    }
                    if let Some(volts) = charging {
                        out.gauge(
                            "rpi_rtc_battery_charging_volts",
                            "Trickle-charging voltage of the Pi 5 RTC's backup battery; 0 when charging is off (the default, right for non-rechargeable cells)",
                        )
                        .sample(labels, volts);
                    }
                }
            }
            Kind::Other => {}
        }
        self.time_samples(out, device, time, invalid);
    }

    fn collect_userspace(&self, target: &Userspace, out: &mut MetricSet, failures: &mut Failures) {
        let device = target.device.as_str();
        if !target.present.load(Ordering::Acquire) {
            let next = *target
                .next_probe
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if next.is_some_and(|at| Instant::now() < at) {
                return;
            }
        }
        let read = self.with_userspace_bus(target, |bus| {
            let time = ds3231::read_time(bus, target.address)?;
            let status = ds3231::read_status(&mut *bus, target.address)?;
            Ok((time, status))
        });
        let (time, status) = match read {
            Ok(reading) => {
                if !target.present.swap(true, Ordering::AcqRel) {
                    tracing::info!("DS3231 found at I2C device {device}, read from userspace");
                }
                self.notes.set(&format!("{device} bus"), None);
                reading
            }
            Err(e)
                if !target.present.load(Ordering::Acquire) && e.fault == Fault::NoAcknowledge =>
            {
                // Nothing at the address: most Pis have no DS3231. Look again now and then
                // rather than on every scrape.
                *target
                    .next_probe
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) =
                    Some(Instant::now() + PROBE_INTERVAL);
                self.notes.inform(
                    &format!("{device} bus"),
                    format!(
                        "no DS3231 answers at I2C device {device}; looking again every {}s",
                        PROBE_INTERVAL.as_secs()
                    ),
                );
                return;
            }
            Err(e) => {
                info(out, &format!("ds3231 {device}"), device, "i2c");
                self.time_samples(out, device, None, None);
                failures.push(CollectError::Other(format!("DS3231 {device}: {e}")));
                return;
            }
        };
        info(out, &format!("ds3231 {device}"), device, "i2c");
        temperature_sample(out, device, status.temperature_celsius);
        status_samples(out, device, &status);
        let (time, invalid) = match time {
            Ok(t) if status.oscillator_stopped => (
                Some(t),
                Some(
                    "the oscillator-stop flag (OSF) is set: the time in the chip is not valid"
                        .to_owned(),
                ),
            ),
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(format!("the time registers are invalid: {e}"))),
        };
        self.time_samples(out, device, time, invalid);
    }

    /// Writes time, validity and offset. `invalid` says why the time is not to be trusted; a
    /// time before [`EARLIEST_PLAUSIBLE_TIME`] is not either. An invalid time is not exported.
    fn time_samples(
        &self,
        out: &mut MetricSet,
        device: &str,
        time: Option<i64>,
        invalid: Option<String>,
    ) {
        let invalid = invalid.or_else(|| {
            time.filter(|t| *t < EARLIEST_PLAUSIBLE_TIME).map(|t| {
                format!("its time {t} is before 2024, so the clock was reset or never set")
            })
        });
        let valid = time.is_some() && invalid.is_none();
        self.notes.set(&format!("{device} time"), invalid);
        let labels = [("device", device)];
        if let (true, Some(t)) = (valid, time) {
            out.gauge(
                "rpi_rtc_time_seconds",
                "The RTC's time as Unix seconds (only while it is valid)",
            )
            .sample(labels, t as f64);
        }
        out.gauge(
            "rpi_rtc_time_valid",
            "1 when the RTC's time can be trusted; 0 when its oscillator stopped (OSF), the kernel refused the read, the registers are invalid, the time predates 2024, or the read failed",
        )
        .sample(labels, f64::from(u8::from(valid)));
        if valid && let Some(offset) = self.offsets.get(device, self.offset_max_age()) {
            out.gauge(
                "rpi_rtc_offset_seconds",
                "RTC minus system clock, measured in the background at the RTC's second tick (meaningful while rpi_time_synchronized is 1)",
            )
            .sample(labels, offset.seconds);
        }
    }

    /// One round of the offset thread: every RTC whose time can be read.
    fn measure_offsets(&self, clock: &SystemClock) {
        let mut ignored = Failures::default();
        let mut devices = Vec::new();
        for rtc in sysfs::discover(self.files.as_ref(), &self.sysfs, &mut ignored) {
            let read = || match sysfs::read_time(self.files.as_ref(), &rtc) {
                Ok(TimeRead::Time(t)) => Ok(t),
                Ok(TimeRead::Refused) => Err("refused".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            self.record_offset(&rtc.device, offset::measure(read, clock));
            devices.push(rtc.device);
        }
        if let Some(target) = self
            .userspace
            .as_ref()
            .filter(|t| t.present.load(Ordering::Acquire))
        {
            let read = || {
                self.with_userspace_bus(target, |bus| ds3231::read_time(bus, target.address))
                    .map_err(|e| e.to_string())
                    .and_then(|time| time.map_err(|e| e.to_string()))
            };
            self.record_offset(&target.device, offset::measure(read, clock));
            devices.push(target.device.clone());
        }
        self.offsets.retain(&devices);
    }

    fn record_offset(&self, device: &str, measured: Result<Offset, String>) {
        match measured {
            Ok(offset) => {
                self.notes.set(
                    &format!("{device} offset"),
                    (!offset.ticked).then(|| {
                        format!("its second did not change within {:.1}s: the RTC seems stopped; offset known to ±0.5s only", offset::MAX_WAIT.as_secs_f64())
                    }),
                );
                self.offsets.set(device, offset);
            }
            Err(reason) => {
                tracing::debug!("rtc {device}: no offset measured: {reason}");
                self.offsets.clear(device);
            }
        }
    }
}

fn info(out: &mut MetricSet, name: &str, device: &str, source: &str) {
    out.gauge(
        "rpi_rtc_info",
        "An RTC: name as the kernel gives it (driver and parent device), device label used by the other rpi_rtc_ series, source of its time (sysfs: kernel driver; i2c: read from userspace)",
    )
    .sample([("name", name), ("device", device), ("source", source)], 1.0);
}

fn temperature_sample(out: &mut MetricSet, device: &str, celsius: f64) {
    out.gauge(
        "rpi_rtc_temperature_celsius",
        "Temperature of the RTC chip (DS3231: converted every 64 s, 0.25 °C steps); a proxy for the enclosure",
    )
    .sample([("device", device)], celsius);
}

fn status_samples(out: &mut MetricSet, device: &str, status: &ds3231::Status) {
    let labels = [("device", device)];
    out.gauge(
        "rpi_rtc_oscillator_stopped",
        "1 when the DS3231's oscillator-stop flag (OSF) is set: the oscillator stopped at some point (dead backup battery, first power-up), so its time is not valid",
    )
    .sample(labels, f64::from(u8::from(status.oscillator_stopped)));
    out.gauge(
        "rpi_rtc_oscillator_enabled",
        "0 when the DS3231's EOSC bit is set: its oscillator stops whenever it runs on the backup battery, so it loses time at every power cut",
    )
    .sample(labels, f64::from(u8::from(status.oscillator_enabled)));
    out.gauge(
        "rpi_rtc_aging_offset",
        "The DS3231's aging offset register (signed, about 0.1 ppm per step at 25 °C; positive slows the clock)",
    )
    .sample(labels, f64::from(status.aging_offset));
}

impl Collector for RtcCollector {
    fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
        self.shared.collect(out)
    }

    /// Reading a chip (through its kernel driver or from userspace) is an I2C transfer; a
    /// machine without one only lists a sysfs directory. A run on the serving thread that finds
    /// a new RTC does not read it; it turns this true, so the next scrape reads it on the pool.
    fn may_block(&self) -> bool {
        self.shared.found_chip.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::Path;

    use super::*;
    use crate::collector::CollectorOptions;
    use crate::collector::board::BoardFile;
    use crate::paths::Paths;

    fn fixture_sysfs() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pi5-ds3231/sys")
    }

    fn context(sysfs: &Path, rtc_section: Option<&str>, options: Options) -> BuildContext {
        let board = rtc_section.map(|yaml| {
            let rtc: RtcBoard = serde_saphyr::from_str(yaml).expect("valid rtc section");
            Arc::new(BoardFile {
                rtc: Some(rtc),
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
                rtc: options,
                ..CollectorOptions::default()
            },
            board,
        }
    }

    /// No background thread: tests drive the offset measurement themselves.
    fn options() -> Options {
        Options {
            offset_interval: Duration::ZERO,
            ..Options::default()
        }
    }

    fn value(set: &MetricSet, name: &str, device: &str) -> Option<f64> {
        set.get(name)?
            .samples
            .iter()
            .find(|s| s.labels.iter().any(|(k, v)| *k == "device" && v == device))
            .map(|s| s.value)
    }

    fn info_labels(set: &MetricSet) -> Vec<Vec<String>> {
        set.get("rpi_rtc_info")
            .map(|f| {
                f.samples
                    .iter()
                    .map(|s| s.labels.iter().map(|(_, v)| v.clone()).collect())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The simulated bus's write log, through the board the collector was built from.
    fn writes(collector: &RtcCollector) -> usize {
        collector
            .shared
            .simulated
            .as_ref()
            .map_or(0, |bus| bus.writes().len())
    }

    #[test]
    fn pi5_with_a_kernel_owned_ds3231_reads_both_through_sysfs() {
        let collector = RtcCollector::new(&context(&fixture_sysfs(), None, options()));
        assert!(collector.shared.userspace.is_none(), "1-0068 has a driver");
        let mut set = MetricSet::new();
        collector.collect(&mut set).expect("fixture is well formed");
        assert_eq!(
            info_labels(&set),
            [
                ["rpi-rtc soc@107c000000:rpi_rtc", "rtc0", "sysfs"],
                ["rtc-ds1307 1-0068", "rtc1", "sysfs"]
            ]
        );
        assert_eq!(
            value(&set, "rpi_rtc_time_seconds", "rtc0"),
            Some(1_718_214_012.0)
        );
        assert_eq!(
            value(&set, "rpi_rtc_time_seconds", "rtc1"),
            Some(1_718_214_013.0)
        );
        assert_eq!(value(&set, "rpi_rtc_time_valid", "rtc1"), Some(1.0));
        assert_eq!(value(&set, "rpi_rtc_hctosys", "rtc0"), Some(1.0));
        assert_eq!(value(&set, "rpi_rtc_hctosys", "rtc1"), Some(0.0));
        assert_eq!(
            value(&set, "rpi_rtc_temperature_celsius", "rtc1"),
            Some(27.25)
        );
        assert_eq!(value(&set, "rpi_rtc_temperature_celsius", "rtc0"), None);
        let volts = value(&set, "rpi_rtc_battery_volts", "rtc0").expect("battery");
        assert!((volts - 3.012_847).abs() < 1e-9);
        assert_eq!(
            value(&set, "rpi_rtc_battery_charging_volts", "rtc0"),
            Some(0.0)
        );
        // Without the raw read there is nothing about OSF or aging.
        assert!(set.get("rpi_rtc_oscillator_stopped").is_none());
        assert!(set.get("rpi_rtc_aging_offset").is_none());
    }

    /// Fails `since_epoch` of one RTC with an errno, as the kernel does; the rest is the fixture.
    #[derive(Debug)]
    struct FailingTime {
        device: &'static str,
        errno: i32,
    }

    impl SysfsRead for FailingTime {
        fn read_to_string(&self, path: &Path) -> io::Result<String> {
            if path.ends_with(format!("{}/since_epoch", self.device)) {
                return Err(io::Error::from_raw_os_error(self.errno));
            }
            RealFiles.read_to_string(path)
        }

        fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
            RealFiles.list_dir(path)
        }
    }

    /// The fixture's RTCs, hidden until `visible`; counts reads of their time.
    #[derive(Debug, Default)]
    struct Appears {
        visible: AtomicBool,
        time_reads: std::sync::atomic::AtomicUsize,
    }

    impl SysfsRead for Appears {
        fn read_to_string(&self, path: &Path) -> io::Result<String> {
            if path.ends_with("since_epoch") || path.ends_with("time") {
                self.time_reads.fetch_add(1, Ordering::AcqRel);
            }
            RealFiles.read_to_string(path)
        }

        fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
            if path.ends_with("class/rtc") && !self.visible.load(Ordering::Acquire) {
                return Ok(Vec::new());
            }
            RealFiles.list_dir(path)
        }
    }

    #[test]
    fn an_rtc_that_appears_is_not_read_by_a_run_on_the_serving_thread() {
        let files = Arc::new(Appears::default());
        let collector = RtcCollector::with_files(
            &context(&fixture_sysfs(), None, options()),
            Arc::clone(&files) as Arc<dyn SysfsRead>,
        );
        collector.collect(&mut MetricSet::new()).expect("no RTC");
        assert!(!collector.may_block(), "nothing to read: runs inline");

        files.visible.store(true, Ordering::Release);
        let err = collector
            .collect(&mut MetricSet::new())
            .expect_err("a new RTC is not read inline");
        assert!(err.to_string().contains("new RTC rtc0, rtc1"), "{err}");
        assert_eq!(files.time_reads.load(Ordering::Acquire), 0);
        assert!(
            collector.may_block(),
            "the next scrape reads it on the pool"
        );

        let mut set = MetricSet::new();
        collector.collect(&mut set).expect("read");
        assert!(files.time_reads.load(Ordering::Acquire) > 0);
        assert_eq!(value(&set, "rpi_rtc_time_valid", "rtc1"), Some(1.0));
    }

    #[test]
    fn einval_from_the_kernel_means_an_invalid_time_not_a_failure() {
        let files = Arc::new(FailingTime {
            device: "rtc1",
            errno: libc::EINVAL,
        });
        let collector =
            RtcCollector::with_files(&context(&fixture_sysfs(), None, options()), files);
        let mut set = MetricSet::new();
        collector
            .collect(&mut set)
            .expect("a refused read is a state, not an error");
        assert_eq!(value(&set, "rpi_rtc_time_valid", "rtc1"), Some(0.0));
        assert_eq!(value(&set, "rpi_rtc_time_seconds", "rtc1"), None);
        assert_eq!(value(&set, "rpi_rtc_time_valid", "rtc0"), Some(1.0));
        assert_eq!(
            value(&set, "rpi_rtc_temperature_celsius", "rtc1"),
            Some(27.25)
        );

        // Any other error fails the collector but keeps the rest.
        let files = Arc::new(FailingTime {
            device: "rtc1",
            errno: libc::EIO,
        });
        let collector =
            RtcCollector::with_files(&context(&fixture_sysfs(), None, options()), files);
        let mut set = MetricSet::new();
        let err = collector.collect(&mut set).expect_err("EIO is a failure");
        assert!(err.to_string().contains("rtc1/since_epoch"), "{err}");
        assert_eq!(value(&set, "rpi_rtc_time_valid", "rtc1"), Some(0.0));
        assert_eq!(value(&set, "rpi_rtc_time_valid", "rtc0"), Some(1.0));
    }

    const STOPPED_DS3231: &str = "i2c_bus: 1\nds3231:\n  - address: 0x68\n    behaviour: busy\n    registers: {0x0f: 0x88, 0x10: 0xfd, 0x11: 0x17, 0x12: 0xc0}\n";

    #[test]
    fn the_raw_read_shows_osf_that_an_older_kernel_hides_and_never_writes() {
        let collector = RtcCollector::new(&context(
            &fixture_sysfs(),
            Some(STOPPED_DS3231),
            Options {
                raw_registers: true,
                ..options()
            },
        ));
        let mut set = MetricSet::new();
        collector
            .collect(&mut set)
            .expect("raw read alongside the driver works");
        assert_eq!(value(&set, "rpi_rtc_oscillator_stopped", "rtc1"), Some(1.0));
        assert_eq!(value(&set, "rpi_rtc_oscillator_enabled", "rtc1"), Some(1.0));
        assert_eq!(value(&set, "rpi_rtc_aging_offset", "rtc1"), Some(-3.0));
        // The kernel returned a time, but OSF says it is garbage.
        assert_eq!(value(&set, "rpi_rtc_time_valid", "rtc1"), Some(0.0));
        assert_eq!(value(&set, "rpi_rtc_time_seconds", "rtc1"), None);
        // hwmon still gives the temperature.
        assert_eq!(
            value(&set, "rpi_rtc_temperature_celsius", "rtc1"),
            Some(27.25)
        );
        assert_eq!(value(&set, "rpi_rtc_oscillator_stopped", "rtc0"), None);
        assert_eq!(writes(&collector), 0);
    }

    fn empty_sysfs() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    /// A DS3231 holding 2025-03-01 12:00:00, OSF clear, ticking.
    const HEALTHY_DS3231: &str = "ds3231:\n  - registers: {0x00: 0x00, 0x01: 0x00, 0x02: 0x12, 0x04: 0x01, 0x05: 0x03, 0x06: 0x25, 0x0f: 0x08, 0x10: 0x02, 0x11: 0x1a, 0x12: 0x40}\n";

    #[test]
    fn a_ds3231_without_driver_is_read_from_userspace() {
        let dir = empty_sysfs();
        let collector = RtcCollector::new(&context(dir.path(), Some(HEALTHY_DS3231), options()));
        let mut set = MetricSet::new();
        collector.collect(&mut set).expect("healthy chip");
        assert_eq!(info_labels(&set), [["ds3231 1-0068", "1-0068", "i2c"]]);
        let time = value(&set, "rpi_rtc_time_seconds", "1-0068").expect("time");
        assert!((1_740_830_400.0..1_740_830_460.0).contains(&time), "{time}");
        assert_eq!(value(&set, "rpi_rtc_time_valid", "1-0068"), Some(1.0));
        assert_eq!(
            value(&set, "rpi_rtc_oscillator_stopped", "1-0068"),
            Some(0.0)
        );
        assert_eq!(
            value(&set, "rpi_rtc_temperature_celsius", "1-0068"),
            Some(26.25)
        );
        assert_eq!(value(&set, "rpi_rtc_aging_offset", "1-0068"), Some(2.0));
        assert_eq!(writes(&collector), 0);

        // The background measurement, run by hand: the simulated chip ticks with the host's
        // clock from a 2025 start, so the offset is large, negative and measured at a tick.
        collector.shared.measure_offsets(&SystemClock::new());
        let offset = collector
            .shared
            .offsets
            .get("1-0068", Duration::from_secs(60))
            .expect("measured");
        assert!(offset.ticked);
        let mut set = MetricSet::new();
        collector.collect(&mut set).expect("still healthy");
        assert_eq!(
            value(&set, "rpi_rtc_offset_seconds", "1-0068"),
            Some(offset.seconds)
        );
        assert_eq!(writes(&collector), 0);
    }

    #[test]
    fn a_stopped_oscillator_or_garbage_registers_make_the_time_invalid() {
        for (registers, osf) in [
            ("{0x0f: 0x88}", 1.0),             // OSF set, power-on time
            ("{0x01: 0x7a, 0x0f: 0x08}", 0.0), // invalid BCD minutes
            ("{0x05: 0x13, 0x0f: 0x08}", 0.0), // month 13
            (
                "{0x05: 0x81, 0x06: 0x99, 0x0f: 0x08, 0x04: 0x31, 0x02: 0x23}",
                0.0,
            ), // 2199, valid
        ] {
            let dir = empty_sysfs();
            let section = format!("ds3231:\n  - ticking: false\n    registers: {registers}\n");
            let collector = RtcCollector::new(&context(dir.path(), Some(&section), options()));
            let mut set = MetricSet::new();
            collector
                .collect(&mut set)
                .expect("readable registers are not a collector failure");
            let device = "1-0068";
            assert_eq!(value(&set, "rpi_rtc_oscillator_stopped", device), Some(osf));
            let far_future = registers.contains("0x99");
            assert_eq!(
                value(&set, "rpi_rtc_time_valid", device),
                Some(if far_future { 1.0 } else { 0.0 }),
                "{registers}"
            );
            assert_eq!(
                value(&set, "rpi_rtc_time_seconds", device).is_some(),
                far_future,
                "{registers}"
            );
            assert!(value(&set, "rpi_rtc_temperature_celsius", device).is_some());
        }
    }

    #[test]
    fn bus_faults_fail_the_collector_once_a_chip_was_seen_and_never_panic() {
        // Nothing ever answered: not a fault, just no DS3231 fitted; no series.
        let dir = empty_sysfs();
        let collector = RtcCollector::new(&context(
            dir.path(),
            Some("ds3231:\n  - behaviour: nack\n"),
            options(),
        ));
        let mut set = MetricSet::new();
        collector.collect(&mut set).expect("absent chip");
        assert!(set.families().is_empty());

        for (behaviour, message) in [("timeout", "timed out"), ("busy", "busy")] {
            let section = format!("ds3231:\n  - behaviour: {behaviour}\n");
            let collector = RtcCollector::new(&context(dir.path(), Some(&section), options()));
            let mut set = MetricSet::new();
            let err = collector.collect(&mut set).expect_err(behaviour);
            assert!(err.to_string().contains(message), "{err}");
            assert!(err.to_string().contains("1-0068"), "{err}");
            assert_eq!(value(&set, "rpi_rtc_time_valid", "1-0068"), Some(0.0));
            assert_eq!(value(&set, "rpi_rtc_time_seconds", "1-0068"), None);
        }

        // A chip that answered and then stops answering is a fault.
        let collector = RtcCollector::new(&context(dir.path(), Some(HEALTHY_DS3231), options()));
        collector
            .collect(&mut MetricSet::new())
            .expect("first read");
        if let Some(bus) = &collector.shared.simulated {
            bus.add_device(
                0x68,
                crate::i2c::simulated::Behaviour::Nack,
                crate::i2c::simulated::Memory::default(),
            );
        }
        let mut set = MetricSet::new();
        let err = collector.collect(&mut set).expect_err("vanished chip");
        assert!(err.to_string().contains("no acknowledgement"), "{err}");
        assert_eq!(value(&set, "rpi_rtc_time_valid", "1-0068"), Some(0.0));
    }

    #[test]
    fn a_read_only_chip_proves_nothing_is_written() {
        let dir = empty_sysfs();
        let section =
            HEALTHY_DS3231.replace("  - registers", "  - behaviour: read-only\n    registers");
        let collector = RtcCollector::new(&context(dir.path(), Some(&section), options()));
        let mut set = MetricSet::new();
        collector
            .collect(&mut set)
            .expect("reads succeed on a read-only chip");
        collector.shared.measure_offsets(&SystemClock::new());
        assert_eq!(writes(&collector), 0);
    }

    #[test]
    fn flags_parse_strictly() {
        assert_eq!(parse_i2c_bus("none"), Ok(None));
        assert_eq!(parse_i2c_bus("3"), Ok(Some(3)));
        assert!(parse_i2c_bus("i2c-1").is_err());
        assert_eq!(parse_i2c_address("0x68"), Ok(0x68));
        assert_eq!(parse_i2c_address("104"), Ok(0x68));
        for bad in ["0x", "0x+8", "0x78", "2", "-1", "68h"] {
            assert!(parse_i2c_address(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_offset_interval("0"), Ok(Duration::ZERO));
        assert_eq!(parse_offset_interval("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_offset_interval("2s").is_err());
    }
}
