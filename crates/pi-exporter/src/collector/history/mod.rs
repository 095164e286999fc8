//! `history`: why the Pi last restarted, and what it has been through since.
//!
//! The reset cause is read once at start-up from the device tree (it describes this boot and
//! never changes); scrapes render what was read. `reset.rs` holds the bit tables. The state
//! file (`state.rs`) is read and written once at start-up and written once more at a clean
//! stop ([`Collector::stop`]).

pub mod power;
pub mod reset;
pub mod state;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Arg, ArgMatches};

use super::flags::{self, FlagError};
use super::parse::Failures;
use super::{BuildContext, CollectError, Collector};
use crate::metrics::MetricSet;
use crate::paths::Paths;
use reset::{Cause, Registers};
use state::{Loaded, Record};

/// Default of `--collector.history.state-file`: the unit's `StateDirectory=pi-exporter`.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/pi-exporter/history";

/// The metrics that need the state file, for the log line that says they are absent.
const NEEDS_STATE: &str =
    "rpi_last_shutdown_clean, rpi_unclean_shutdowns_total and rpi_boots_total are absent";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--collector.history.state-file`: the exporter's own file, not read through `--path.*`.
    pub state_file: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            state_file: DEFAULT_STATE_FILE.into(),
        }
    }
}

/// The history collector's flags.
pub fn args() -> Vec<Arg> {
    vec![
        Arg::new("collector.history.state-file")
            .long("collector.history.state-file")
            .value_name("FILE")
            .default_value(DEFAULT_STATE_FILE)
            .value_parser(clap::value_parser!(PathBuf))
            .help("The history collector's state file (boot id, clean stop, boot and unclean-shutdown counts), written at start and at a clean stop; its directory must exist and be writable"),
    ]
}

/// `--collector.history.*` into [`Options`].
pub fn options(m: &ArgMatches) -> Result<Options, FlagError> {
    Ok(Options {
        state_file: flags::one(m, "collector.history.state-file")?.unwrap_or_default(),
    })
}

/// The device tree's `chosen` node, where the firmware leaves its boot-time registers.
const CHOSEN: &str = "firmware/devicetree/base/chosen";

/// What the device tree said about this boot; `None` without a `chosen` node (not a Pi, or a
/// container without the device tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootReset {
    pub registers: Registers,
    pub cause: Cause,
    pub source: &'static str,
}

/// Reads one integer property; absent is `Ok(None)`, unreadable or of the wrong length an error
/// for the start-up log.
fn read_property(path: &Path) -> Result<Option<u32>, CollectError> {
    match std::fs::read(path) {
        Ok(bytes) => reset::parse_u32_property(&bytes).map(Some).ok_or_else(|| {
            CollectError::malformed(
                path,
                format!(
                    "expected a 4-byte big-endian u32, found {} bytes",
                    bytes.len()
                ),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CollectError::io(path, e)),
    }
}

/// Reads the reset registers below `chosen`: `None` without the node, else what was read and
/// the properties that could not be used.
pub fn boot_reset(paths: &Paths) -> Option<(BootReset, Vec<CollectError>)> {
    let chosen = paths.sys(CHOSEN);
    if !chosen.is_dir() {
        return None;
    }
    let mut problems = Vec::new();
    let mut read = |name: &str| -> Option<u32> {
        read_property(&chosen.join(name)).unwrap_or_else(|e| {
            problems.push(e);
            None
        })
    };
    let rsts = reset::RSTS_PROPERTIES
        .iter()
        .find_map(|&name| read(name).map(|value| (value, name)));
    let registers = Registers {
        rsts,
        power_reset: read(reset::POWER_RESET_PROPERTY),
    };
    let (cause, source) = reset::cause(&registers);
    let boot = BootReset {
        registers,
        cause,
        source,
    };
    Some((boot, problems))
}

/// [`boot_reset`], logging (once, at start-up) what it could not use.
pub fn read_boot_reset(paths: &Paths) -> Option<BootReset> {
    let Some((boot, problems)) = boot_reset(paths) else {
        tracing::info!(
            path = %paths.sys(CHOSEN).display(),
            "no device-tree chosen node (not a Raspberry Pi, or no device tree in this container): no reset cause"
        );
        return None;
    };
    for problem in problems {
        tracing::warn!("ignoring a device-tree property: {problem}");
    }
    Some(boot)
}

/// Writes the reset cause and the raw registers.
fn render_boot_reset(boot: &BootReset, out: &mut MetricSet) {
    out.gauge(
        "rpi_boot_reset_info",
        "Why this boot happened, from the device tree at start-up, always 1: cause and the property below chosen/ it came from",
    )
    .sample(
        [("cause", boot.cause.label()), ("source", boot.source)],
        1.0,
    );
    let registers = [
        ("rsts", boot.registers.rsts.map(|(value, _)| value)),
        ("power_reset", boot.registers.power_reset),
    ];
    for (register, value) in registers {
        if let Some(value) = value {
            out.gauge(
                "rpi_boot_reset_register",
                "Raw reset register of this boot from the device tree: rsts (PM_RSTS, every model) and power_reset (Pi 5 PMIC)",
            )
            .sample([("register", register)], f64::from(value));
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This boot's id, or why it cannot be had.
fn read_boot_id(paths: &Paths) -> Result<String, String> {
    let path = paths.proc("sys/kernel/random/boot_id");
    let id = super::read_trimmed(&path).map_err(|e| e.to_string())?;
    if state::valid_boot_id(&id) {
        Ok(id)
    } else {
        Err(format!("{}: not a boot id", path.display()))
    }
}

/// The state file of this run and the record written at start.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    record: Record,
}

/// The previous record, or why there is none to use; logs what it finds.
fn previous_record(file: &Path, now: u64) -> Result<Option<Record>, String> {
    match state::load(file, now) {
        Ok(Loaded::Absent) => Ok(None),
        Ok(Loaded::Valid(record)) => {
            if record.written_at > now {
                tracing::warn!(
                    file = %file.display(),
                    written_at = record.written_at,
                    now,
                    "the state file was written in the future (the clock stepped back?); keeping its counts"
                );
            }
            Ok(Some(record))
        }
        Ok(Loaded::MovedAside(aside, why)) => {
            tracing::warn!(
                file = %file.display(),
                kept_as = %aside.display(),
                "the state file is corrupt or foreign ({why}); kept aside, counting anew"
            );
            Ok(None)
        }
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

/// Reads the previous record and writes this start's. `None` (logged once) when the boot id or
/// the file cannot be used: the metrics that need it are then absent.
pub fn start_history(paths: &Paths, file: &Path, now: u64) -> Option<History> {
    let started = read_boot_id(paths).and_then(|boot_id| {
        let previous = previous_record(file, now)?;
        let record = state::next_start(previous.as_ref(), &boot_id, now);
        state::write_atomic(file, &state::render(&record)).map_err(|e| {
            format!(
                "cannot write {}: {e} (no writable state directory?)",
                file.display()
            )
        })?;
        Ok(record)
    });
    match started {
        Ok(record) => Some(History {
            path: file.to_owned(),
            record,
        }),
        Err(why) => {
            tracing::warn!("no shutdown history: {why}; {NEEDS_STATE}");
            None
        }
    }
}

impl History {
    /// Marks the clean stop on disk.
    pub fn stop(&self, now: u64) {
        let stopped = Record {
            clean_stop: true,
            written_at: now,
            ..self.record.clone()
        };
        if let Err(e) = state::write_atomic(&self.path, &state::render(&stopped)) {
            tracing::error!(file = %self.path.display(), "cannot record the clean stop: {e}; the next start will count an unclean shutdown");
        }
    }

    fn render(&self, out: &mut MetricSet) {
        let record = &self.record;
        if let Some(clean) = record.last_shutdown_clean {
            out.gauge(
                "rpi_last_shutdown_clean",
                "1 when the previous boot ended with a clean stop of the exporter, 0 when it ended without one (power loss, crash, hard reset)",
            )
            .sample([], f64::from(u8::from(clean)));
        }
        out.counter(
            "rpi_unclean_shutdowns_total",
            "Boots that ended without a clean stop of the exporter, kept in its state file across reboots",
        )
        .sample([], record.unclean_shutdowns as f64);
        out.counter(
            "rpi_boots_total",
            "Boots counted in the exporter's state file, this one included",
        )
        .sample([], record.boots as f64);
    }
}

#[derive(Debug)]
pub struct HistoryCollector {
    paths: Paths,
    boot: Option<BootReset>,
    history: Option<History>,
    under_voltage: Option<power::UnderVoltageEvents>,
}

impl HistoryCollector {
    pub fn new(ctx: &BuildContext) -> Self {
        let file = &ctx.options.history.state_file;
        // A simulated board's alarm replaces the real one, as its firmware replaces /dev/vcio.
        let source = match ctx.board.as_ref().and_then(|b| b.power.as_ref()) {
            Some(board) => power::AlarmSource::Simulated {
                pulse: board.under_voltage,
                started: std::time::Instant::now(),
            },
            None => power::AlarmSource::Sysfs(ctx.paths.clone()),
        };
        Self {
            paths: ctx.paths.clone(),
            boot: read_boot_reset(&ctx.paths),
            history: start_history(&ctx.paths, file, unix_now()),
            under_voltage: power::UnderVoltageEvents::start(source, power::POLL_INTERVAL),
        }
    }
}

impl Collector for HistoryCollector {
    fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
        if let Some(boot) = &self.boot {
            render_boot_reset(boot, out);
        }
        if let Some(history) = &self.history {
            history.render(out);
        }
        if let Some(events) = &self.under_voltage {
            events.render(out);
        }
        let mut failures = Failures::default();
        power::collect_over_current(&self.paths, out, &mut failures);
        failures.finish()
    }

    fn stop(&self) {
        if let Some(history) = &self.history {
            history.stop(unix_now());
        }
    }

    /// Renders what was read at start-up and the power-events thread's count; the USB port
    /// counters are kernel memory.
    fn may_block(&self) -> bool {
        false
    }
}

/// The directory holding a fixture's device tree, for tests that write their own properties.
#[cfg(test)]
pub(crate) fn chosen_dir(sysfs: &Path) -> std::path::PathBuf {
    sysfs.join(CHOSEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::fixture;

    fn paths_of(root: &Path) -> Paths {
        Paths {
            sysfs: root.join("sys"),
            ..Paths::default()
        }
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }

    #[test]
    fn fixtures_carry_the_firmware_s_big_endian_words() {
        let pi4 = read_boot_reset(&paths_of(&fixture("pi4-sd"))).expect("chosen");
        assert_eq!(pi4.cause, Cause::PowerOn);
        assert_eq!(pi4.registers.rsts, Some((0x1000, "bootloader/rsts")));
        let watchdog = read_boot_reset(&paths_of(&fixture("pi4-watchdog"))).expect("chosen");
        assert_eq!(watchdog.cause, Cause::WatchdogOrReboot);
        let pi5 = read_boot_reset(&paths_of(&fixture("pi5-nvme"))).expect("chosen");
        assert_eq!(pi5.cause, Cause::Brownout);
        assert_eq!(pi5.source, "power/power_reset");
        assert_eq!(pi5.registers.power_reset, Some(0x2));
    }

    #[test]
    fn bad_properties_leave_the_cause_unknown_and_no_chosen_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_boot_reset(&paths_of(dir.path())), None);
        let chosen = chosen_dir(&dir.path().join("sys"));
        write(&chosen, "bootloader/rsts", &[0x10, 0x00]);
        write(&chosen, "power/power_reset", &[0, 0, 0, 0, 2]);
        let boot = read_boot_reset(&paths_of(dir.path())).expect("chosen exists");
        assert_eq!((boot.cause, boot.source), (Cause::Unknown, "none"));
        assert_eq!(boot.registers, Registers::default());
        // A later spelling is still found when the first one is broken.
        write(&chosen, "pm_rsts", &[0, 0, 0, 0x20]);
        let boot = read_boot_reset(&paths_of(dir.path())).expect("chosen exists");
        assert_eq!(
            (boot.cause, boot.source),
            (Cause::WatchdogOrReboot, "pm_rsts")
        );
    }

    /// A state directory and a procfs whose boot id each simulated boot changes.
    struct Machine {
        dir: tempfile::TempDir,
    }

    impl Machine {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::create_dir_all(dir.path().join("state")).expect("mkdir");
            Machine { dir }
        }

        fn file(&self) -> PathBuf {
            self.dir.path().join("state/history")
        }

        /// Boots with boot id number `n` and starts the exporter.
        fn boot(&self, n: u8) -> Option<History> {
            let id = format!("00000000-0000-4000-8000-0000000000{n:02x}");
            write(
                self.dir.path(),
                "proc/sys/kernel/random/boot_id",
                id.as_bytes(),
            );
            self.start(1_718_000_000 + u64::from(n))
        }

        /// Starts the exporter (again) in the current boot.
        fn start(&self, now: u64) -> Option<History> {
            let paths = Paths {
                procfs: self.dir.path().join("proc"),
                ..Paths::default()
            };
            start_history(&paths, &self.file(), now)
        }
    }

    /// (last_shutdown_clean, unclean_shutdowns_total, boots_total) as scraped.
    fn scraped(history: &History) -> (Option<f64>, f64, f64) {
        let mut set = MetricSet::new();
        history.render(&mut set);
        let value = |name: &str| set.get(name).map(|f| f.samples[0].value);
        (
            value("rpi_last_shutdown_clean"),
            value("rpi_unclean_shutdowns_total").expect("counter"),
            value("rpi_boots_total").expect("counter"),
        )
    }

    #[test]
    fn state_file_follows_clean_stops_and_power_cuts_across_boots() {
        let pi = Machine::new();
        let first = pi.boot(1).expect("state dir is writable");
        assert_eq!(scraped(&first), (None, 0.0, 1.0), "no previous record");
        first.stop(1_718_000_001);

        let after_clean_stop = pi.boot(2).expect("history");
        assert_eq!(scraped(&after_clean_stop), (Some(1.0), 0.0, 2.0));
        // Power cut: no stop. A restart of the service in the same boot counts nothing.
        let restarted = pi.start(1_718_000_100).expect("history");
        assert_eq!(scraped(&restarted), (Some(1.0), 0.0, 2.0));

        let after_power_cut = pi.boot(3).expect("history");
        assert_eq!(scraped(&after_power_cut), (Some(0.0), 1.0, 3.0));
        // Two power cuts in a row.
        pi.boot(4).expect("history");
        let after_two = pi.boot(5).expect("history");
        assert_eq!(scraped(&after_two), (Some(0.0), 3.0, 5.0));
        after_two.stop(1_718_000_006);
        assert_eq!(
            scraped(&pi.boot(6).expect("history")),
            (Some(1.0), 3.0, 6.0)
        );
    }

    #[test]
    fn a_corrupt_file_is_kept_aside_and_counting_starts_anew() {
        let pi = Machine::new();
        pi.boot(1).expect("history");
        std::fs::write(pi.file(), b"\x00\xff garbage").expect("corrupt it");
        let after = pi.boot(2).expect("history");
        assert_eq!(scraped(&after), (None, 0.0, 1.0));
        let aside = pi.dir.path().join("state/history.corrupt-1718000002");
        assert_eq!(
            std::fs::read(aside).expect("kept aside"),
            b"\x00\xff garbage"
        );
    }

    #[test]
    fn a_file_from_the_future_keeps_its_counts() {
        let pi = Machine::new();
        pi.boot(5).expect("history");
        // The clock stepped back by a day before the next boot.
        write(
            pi.dir.path(),
            "proc/sys/kernel/random/boot_id",
            b"00000000-0000-4000-8000-000000000099\n",
        );
        let after = pi.start(1_717_900_000).expect("history");
        assert_eq!(scraped(&after), (Some(0.0), 1.0, 2.0));
    }

    #[test]
    fn no_state_directory_or_boot_id_means_no_history_and_no_write() {
        let pi = Machine::new();
        let missing_dir = pi.dir.path().join("nowhere/history");
        let paths = Paths {
            procfs: pi.dir.path().join("proc"),
            ..Paths::default()
        };
        write(
            pi.dir.path(),
            "proc/sys/kernel/random/boot_id",
            b"not-a-boot-id\n",
        );
        assert!(start_history(&paths, &pi.file(), 1).is_none());
        assert!(!pi.file().exists(), "nothing written without a boot id");
        pi.boot(1).expect("history");
        assert!(start_history(&paths, &missing_dir, 1).is_none());
        assert!(
            !missing_dir.parent().expect("parent").exists(),
            "never created"
        );
    }
}
