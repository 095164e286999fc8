//! The shutdown guard (`--ups.shutdown.enable`, off by default): on battery with the charge or
//! the runtime estimate below its threshold, held with plausible readings throughout for the
//! hold time, it asks for the shutdown command, once in the life of the process. Power coming
//! back cancels a pending shutdown; an implausible or failed reading restarts the hold.
//!
//! Pure apart from its flags: the caller passes the time of each reading, so tests drive it with a fake clock.

use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, ArgMatches};

use crate::collector::flags::{self, FlagError};

#[derive(Debug, Clone, PartialEq)]
pub struct ShutdownOptions {
    pub enable: bool,
    /// Charge ratio (0-1) below which a shutdown is due.
    pub charge_below: f64,
    /// Runtime estimate below which a shutdown is due; `None` (the default) ignores runtime.
    pub runtime_below: Option<Duration>,
    pub hold: Duration,
    /// Program and arguments, run without a shell.
    pub command: Vec<String>,
    pub dry_run: bool,
}

impl Default for ShutdownOptions {
    fn default() -> Self {
        Self {
            enable: false,
            charge_below: 0.10,
            runtime_below: None,
            hold: Duration::from_secs(30),
            command: vec!["systemctl".to_owned(), "poweroff".to_owned()],
            dry_run: false,
        }
    }
}

/// The `--ups.shutdown.*` flags.
pub fn args() -> Vec<Arg> {
    vec![
        Arg::new("ups.shutdown.enable")
            .long("ups.shutdown.enable")
            .action(ArgAction::SetTrue)
            .help("Run the shutdown command when on battery and the charge or runtime stays below its threshold for the hold time (off by default)"),
        Arg::new("ups.shutdown.charge-below")
            .long("ups.shutdown.charge-below")
            .value_name("RATIO")
            .default_value("0.10")
            .value_parser(super::parse_ratio)
            .help("Charge ratio (0-1) below which the guard shuts down"),
        Arg::new("ups.shutdown.runtime-below")
            .long("ups.shutdown.runtime-below")
            .value_name("DURATION")
            .default_value("0s")
            .value_parser(serving::duration::parse)
            .help("Runtime estimate below which the guard shuts down (0: charge only)"),
        Arg::new("ups.shutdown.hold")
            .long("ups.shutdown.hold")
            .value_name("DURATION")
            .default_value("30s")
            .value_parser(serving::duration::parse)
            .help("How long the condition must hold, with plausible readings throughout, before the command runs"),
        Arg::new("ups.shutdown.command")
            .long("ups.shutdown.command")
            .value_name("COMMAND")
            .default_value("systemctl poweroff")
            .value_parser(parse_command)
            .help("Program and arguments (split at spaces, no shell) run once when the guard fires"),
        Arg::new("ups.shutdown.dry-run")
            .long("ups.shutdown.dry-run")
            .action(ArgAction::SetTrue)
            .help("Log the shutdown instead of running the command"),
    ]
}

/// `--ups.shutdown.*` into [`ShutdownOptions`].
pub fn options(m: &ArgMatches) -> Result<ShutdownOptions, FlagError> {
    let defaults = ShutdownOptions::default();
    Ok(ShutdownOptions {
        enable: flags::switch(m, "ups.shutdown.enable")?,
        charge_below: flags::one(m, "ups.shutdown.charge-below")?.unwrap_or(defaults.charge_below),
        runtime_below: flags::one::<Duration>(m, "ups.shutdown.runtime-below")?
            .filter(|d| !d.is_zero()),
        hold: flags::one(m, "ups.shutdown.hold")?.unwrap_or(defaults.hold),
        command: flags::one(m, "ups.shutdown.command")?.unwrap_or(defaults.command),
        dry_run: flags::switch(m, "ups.shutdown.dry-run")?,
    })
}

/// What one reading says, as far as the guard is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The reading succeeded and passed every plausibility check.
    pub plausible: bool,
    pub on_battery: Option<bool>,
    pub charge_ratio: Option<f64>,
    pub runtime_seconds: Option<f64>,
}

/// What the guard decided for one reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Idle,
    /// Conditions hold since this long; the command runs when it reaches the hold time.
    Holding(Duration),
    /// Run the command now. Returned at most once per guard.
    Fire(String),
    /// A pending shutdown was cancelled, and why.
    Cancelled(&'static str),
    /// The command was already asked for.
    Fired,
}

#[derive(Debug)]
pub struct Guard {
    options: ShutdownOptions,
    since: Option<Instant>,
    fired: bool,
}

impl Guard {
    pub fn new(options: ShutdownOptions) -> Self {
        Self {
            options,
            since: None,
            fired: false,
        }
    }

    pub fn options(&self) -> &ShutdownOptions {
        &self.options
    }

    /// 1 for `rpi_ups_shutdown_pending`: conditions hold (and the hold is running), or the
    /// command was asked for.
    pub fn pending(&self) -> bool {
        self.since.is_some() || self.fired
    }

    /// Why a shutdown is due, if the reading says so.
    fn due(&self, o: &Observation) -> Option<String> {
        let charge = o
            .charge_ratio
            .filter(|c| *c < self.options.charge_below)
            .map(|c| {
                format!(
                    "charge {:.0} % below {:.0} %",
                    c * 100.0,
                    self.options.charge_below * 100.0
                )
            });
        let runtime = match (o.runtime_seconds, self.options.runtime_below) {
            (Some(runtime), Some(below)) if runtime < below.as_secs_f64() => Some(format!(
                "runtime estimate {runtime:.0} s below {} s",
                below.as_secs()
            )),
            _ => None,
        };
        charge.or(runtime)
    }

    pub fn observe(&mut self, now: Instant, o: &Observation) -> Decision {
        if self.fired || !self.options.enable {
            return if self.fired {
                Decision::Fired
            } else {
                Decision::Idle
            };
        }
        let cancel = |since: &mut Option<Instant>, why| {
            if since.take().is_some() {
                Decision::Cancelled(why)
            } else {
                Decision::Idle
            }
        };
        if !o.plausible {
            return cancel(
                &mut self.since,
                "implausible or failed reading (the hold needs plausible readings throughout)",
            );
        }
        if o.on_battery != Some(true) {
            return cancel(&mut self.since, "external power is back");
        }
        let Some(reason) = self.due(o) else {
            return cancel(&mut self.since, "charge and runtime above the thresholds");
        };
        let since = *self.since.get_or_insert(now);
        let held = now.saturating_duration_since(since);
        if held >= self.options.hold {
            self.fired = true;
            Decision::Fire(format!("on battery, {reason}, for {} s", held.as_secs()))
        } else {
            Decision::Holding(held)
        }
    }
}

/// Set when a shutdown command was started by this process, whichever UPS's guard asked.
static COMMAND_STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs the shutdown command unless this process already ran one (several UPSes each have a
/// guard; the command still runs at most once). `None` when it had already run.
pub fn run_once(command: &[String]) -> Option<Result<(), String>> {
    if COMMAND_STARTED.swap(true, std::sync::atomic::Ordering::AcqRel) {
        None
    } else {
        Some(run_command(command))
    }
}

/// Runs the shutdown command: no shell, so nothing read from a chip or a NUT server can reach
/// a command line.
pub fn run_command(command: &[String]) -> Result<(), String> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| "empty shutdown command".to_owned())?;
    let status = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} exited with {status}"))
    }
}

/// Splits `--ups.shutdown.command` into program and arguments at whitespace (no quoting: the
/// command is a fixed program with fixed arguments).
pub fn parse_command(text: &str) -> Result<Vec<String>, String> {
    let argv: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    if argv.is_empty() {
        Err("the shutdown command is empty".to_owned())
    } else {
        Ok(argv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(hold_secs: u64) -> Guard {
        Guard::new(ShutdownOptions {
            enable: true,
            hold: Duration::from_secs(hold_secs),
            runtime_below: Some(Duration::from_secs(300)),
            ..ShutdownOptions::default()
        })
    }

    fn low(charge: f64) -> Observation {
        Observation {
            plausible: true,
            on_battery: Some(true),
            charge_ratio: Some(charge),
            runtime_seconds: None,
        }
    }

    /// A fake clock: the start plus whole seconds.
    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn fires_once_after_the_hold() {
        let t0 = Instant::now();
        let mut g = guard(30);
        assert_eq!(g.observe(at(t0, 0), &low(0.5)), Decision::Idle);
        assert!(!g.pending());
        assert_eq!(
            g.observe(at(t0, 5), &low(0.08)),
            Decision::Holding(Duration::ZERO)
        );
        assert!(g.pending());
        assert_eq!(
            g.observe(at(t0, 20), &low(0.07)),
            Decision::Holding(Duration::from_secs(15))
        );
        assert!(
            matches!(g.observe(at(t0, 35), &low(0.07)), Decision::Fire(r) if r.contains("charge 7 %"))
        );
        // Never twice, whatever follows.
        for s in [40, 45, 50] {
            assert_eq!(g.observe(at(t0, s), &low(0.05)), Decision::Fired);
        }
        let power_back = Observation {
            on_battery: Some(false),
            ..low(0.05)
        };
        assert_eq!(g.observe(at(t0, 55), &power_back), Decision::Fired);
        assert_eq!(g.observe(at(t0, 60), &low(0.01)), Decision::Fired);
        assert!(g.pending());
    }

    #[test]
    fn runtime_below_the_threshold_also_fires() {
        let t0 = Instant::now();
        let mut g = guard(10);
        let o = Observation {
            runtime_seconds: Some(120.0),
            ..low(0.5)
        };
        g.observe(at(t0, 0), &o);
        assert!(matches!(g.observe(at(t0, 10), &o), Decision::Fire(r) if r.contains("runtime")));
    }

    #[test]
    fn power_returning_cancels_and_the_hold_restarts() {
        let t0 = Instant::now();
        let mut g = guard(30);
        g.observe(at(t0, 0), &low(0.05));
        let back = Observation {
            on_battery: Some(false),
            ..low(0.05)
        };
        assert_eq!(
            g.observe(at(t0, 20), &back),
            Decision::Cancelled("external power is back")
        );
        assert!(!g.pending());
        // On battery again: the hold starts over (debounce), so 40 s is not enough.
        assert_eq!(
            g.observe(at(t0, 25), &low(0.05)),
            Decision::Holding(Duration::ZERO)
        );
        assert!(matches!(
            g.observe(at(t0, 40), &low(0.05)),
            Decision::Holding(_)
        ));
        assert!(matches!(
            g.observe(at(t0, 55), &low(0.05)),
            Decision::Fire(_)
        ));
    }

    #[test]
    fn never_on_implausible_or_unknown_data() {
        let t0 = Instant::now();
        let mut g = guard(30);
        g.observe(at(t0, 0), &low(0.05));
        let bad = Observation {
            plausible: false,
            ..low(0.0)
        };
        // One bad reading in the middle restarts the hold.
        assert!(matches!(
            g.observe(at(t0, 20), &bad),
            Decision::Cancelled(_)
        ));
        assert!(matches!(
            g.observe(at(t0, 25), &low(0.05)),
            Decision::Holding(_)
        ));
        assert!(matches!(
            g.observe(at(t0, 50), &low(0.05)),
            Decision::Holding(_)
        ));
        // Only implausible readings for a long time: never fires.
        let mut g = guard(30);
        for s in (0..600).step_by(5) {
            assert_eq!(g.observe(at(t0, s), &bad), Decision::Idle);
        }
        // Unknown power state: never fires.
        let unknown = Observation {
            on_battery: None,
            ..low(0.01)
        };
        for s in (0..600).step_by(5) {
            assert_eq!(g.observe(at(t0, s), &unknown), Decision::Idle);
        }
    }

    #[test]
    fn disabled_by_default() {
        let t0 = Instant::now();
        let mut g = Guard::new(ShutdownOptions::default());
        for s in (0..600).step_by(5) {
            assert_eq!(g.observe(at(t0, s), &low(0.01)), Decision::Idle);
        }
        assert!(!g.pending());
        assert_eq!(
            ShutdownOptions::default().command,
            ["systemctl", "poweroff"]
        );
    }

    #[test]
    fn the_command_runs_without_a_shell() {
        assert_eq!(
            parse_command(" systemctl  poweroff ").expect("argv"),
            ["systemctl", "poweroff"]
        );
        assert!(parse_command("  ").is_err());
        // `;` is an argument, not a command separator.
        assert!(run_command(&["true".to_owned(), ";".to_owned(), "false".to_owned()]).is_ok());
        assert!(run_command(&["false".to_owned()]).is_err());
        assert!(run_command(&["/nonexistent/shutdown".to_owned()]).is_err());
    }
}
