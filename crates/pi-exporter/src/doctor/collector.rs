//! `doctor`: the field checklist of `pi-exporter doctor` as metrics, so a Pi that drifts from
//! it after deployment shows on the fleet dashboard and in an alert.
//!
//! The checks run on the `doctor` thread at start-up and then every `--collector.doctor.interval`
//! (they read a few dozen files and run the hardware collectors once, too much for every
//! scrape); a scrape only renders the last result. A result older than two intervals (the
//! thread is stuck in a source) is still rendered, but fails the collector.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Arg, ArgMatches};

use crate::collector::flags::{self, FlagError};
use crate::collector::periodic::{self, First, Periodic};
use crate::collector::{BuildContext, CollectError, Collector};
use crate::doctor::{self, Exposure, Finding, Inputs, Verdict, facts::Sources};
use crate::listen::ListenAddress;
use crate::metrics::MetricSet;

/// Default of `--collector.doctor.interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);
/// How long the first scrape (the start-up inventory) waits for the first run, so the checks
/// are there from the start; later scrapes never wait, even if that run hangs.
const FIRST_RUN_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub interval: Duration,
    /// The server's own listen addresses and web configuration, for the exposure check.
    pub listen: Vec<ListenAddress>,
    pub web_config_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            listen: Vec::new(),
            web_config_file: None,
        }
    }
}

/// The doctor collector's flags.
pub fn args() -> Vec<Arg> {
    vec![
        Arg::new("collector.doctor.interval")
            .long("collector.doctor.interval")
            .value_name("DURATION")
            .default_value("10m")
            .value_parser(parse_interval)
            .help("How often the doctor collector runs the field checklist in the background (scrapes serve the last result)"),
    ]
}

/// `--collector.doctor.*` into [`Options`]; the listen addresses and web configuration are the
/// server's own flags, filled in by `cli`.
pub fn options(m: &ArgMatches) -> Result<Options, FlagError> {
    Ok(Options {
        interval: flags::one(m, "collector.doctor.interval")?.unwrap_or(DEFAULT_INTERVAL),
        ..Options::default()
    })
}

/// `--collector.doctor.interval`: at least a minute, the checks are not cheap.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = serving::duration::parse(text)?;
    if interval < Duration::from_secs(60) {
        return Err("must be at least 1m".into());
    }
    Ok(interval)
}

#[derive(Debug)]
struct LastRun {
    at_unix_seconds: f64,
    /// When it finished, on the monotonic clock, for its age.
    at: Instant,
    findings: Vec<Finding>,
}

#[derive(Debug, Default)]
struct Shared {
    last: Mutex<Option<LastRun>>,
    ready: Condvar,
    /// Set by the first scrape, the only one that waits.
    waited: AtomicBool,
}

#[derive(Debug)]
pub struct DoctorCollector {
    shared: Arc<Shared>,
    interval: Duration,
    /// Dropping this stops the thread.
    _thread: Option<Periodic>,
}

impl DoctorCollector {
    pub fn new(ctx: &BuildContext, options: &Options) -> Self {
        let options = options.clone();
        let inputs = Inputs {
            context: ctx.clone(),
            exposure: Ok(Exposure {
                listen: options.listen.clone(),
                web_config: options.web_config_file.clone(),
                origin: "this server".to_owned(),
            }),
            ups_unknown: None,
        };
        let shared = Arc::new(Shared::default());
        let mut sources = None;
        let spawned = periodic::spawn("doctor", options.interval, First::Now, {
            let shared = Arc::clone(&shared);
            move || {
                let _span = tracing::info_span!("doctor").entered();
                // Built here, not in `new`: probing the sources must not delay start-up. They
                // probe what the exporter's own collectors probed a moment ago, and would log
                // each line a second time: built without logging (what they find shows in the
                // doctor's checks).
                let sources = sources.get_or_insert_with(|| {
                    tracing::subscriber::with_default(
                        tracing::subscriber::NoSubscriber::default(),
                        || Sources::build(&inputs.context, options.interval),
                    )
                });
                let findings = doctor::run(&inputs, sources);
                let at_unix_seconds = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                *shared.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(LastRun {
                    at_unix_seconds,
                    at: Instant::now(),
                    findings,
                });
                shared.ready.notify_all();
            }
        });
        let thread = match spawned {
            Ok(thread) => Some(thread),
            Err(e) => {
                tracing::error!("cannot start the doctor thread: {e}; no doctor checks");
                None
            }
        };
        Self {
            shared,
            interval: options.interval,
            _thread: thread,
        }
    }
}

/// The last run's metrics; older than two intervals (the doctor thread is stuck in a source),
/// they are still shown but the collector fails, so `rpi_exporter_collector_success` says so.
fn render(
    run: &LastRun,
    age: Duration,
    interval: Duration,
    out: &mut MetricSet,
) -> Result<(), CollectError> {
    write_metrics(run, out);
    if age > interval * 2 {
        return Err(CollectError::Other(format!(
            "the last doctor run finished {}s ago (interval {}s): the doctor thread is stuck",
            age.as_secs(),
            interval.as_secs()
        )));
    }
    Ok(())
}

/// Every verdict, in the order their series are written.
const VERDICTS: [Verdict; 4] = [Verdict::Pass, Verdict::Warn, Verdict::Fail, Verdict::Skip];

/// Writes the metrics of one run.
fn write_metrics(run: &LastRun, out: &mut MetricSet) {
    // A state set, as OpenMetrics and kube-state-metrics shape one: a series per status, 1 for
    // the check's verdict and 0 for the others, so `status="fail"` counts failures only and a
    // verdict that changes never leaves a stale series behind.
    let mut check = out.gauge(
        "rpi_doctor_check",
        "Field checklist (pi-exporter doctor): 1 for the check's status (pass, warn, fail or skip), 0 for the other three",
    );
    for f in &run.findings {
        for verdict in VERDICTS {
            check.sample(
                [
                    ("check", f.check),
                    ("category", f.category.label()),
                    ("status", verdict.status()),
                ],
                f64::from(u8::from(f.verdict == verdict)),
            );
        }
    }
    let mut counts = out.gauge(
        "rpi_doctor_checks",
        "Number of checklist checks with each verdict in the last doctor run",
    );
    for verdict in VERDICTS {
        let n = run.findings.iter().filter(|f| f.verdict == verdict).count();
        counts.sample([("verdict", verdict.status())], n as f64);
    }
    out.gauge(
        "rpi_doctor_last_run_timestamp_seconds",
        "When the checklist last ran, in seconds since the Unix epoch",
    )
    .sample([], run.at_unix_seconds);
}

impl Collector for DoctorCollector {
    fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
        let last = self
            .shared
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let wait = if self.shared.waited.swap(true, Ordering::AcqRel) {
            Duration::ZERO
        } else {
            FIRST_RUN_WAIT
        };
        let (last, _) = self
            .shared
            .ready
            .wait_timeout_while(last, wait, |last| last.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        match last.as_ref() {
            Some(run) => render(run, run.at.elapsed(), self.interval, out),
            None => Err(CollectError::Other(
                "the first doctor run has not finished".into(),
            )),
        }
    }

    /// Only the first scrape waits (for the first run); the others read the cached verdicts.
    fn may_block(&self) -> bool {
        !self.shared.waited.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Category;

    #[test]
    fn each_check_is_a_state_set_of_its_four_statuses() {
        let finding = |check, verdict| Finding {
            check,
            category: Category::Storage,
            verdict,
            reason: String::new(),
            found: String::new(),
            fix: String::new(),
        };
        let run = LastRun {
            at_unix_seconds: 1_700_000_000.0,
            at: Instant::now(),
            findings: vec![
                finding("noatime", Verdict::Pass),
                finding("logrotate", Verdict::Warn),
                finding("free_space", Verdict::Fail),
                finding("flash_wear", Verdict::Skip),
            ],
        };
        let mut out = MetricSet::new();
        write_metrics(&run, &mut out);
        let checks = &out.get("rpi_doctor_check").expect("checks").samples;
        let set: Vec<(&str, &str)> = checks
            .iter()
            .filter(|s| s.value == 1.0)
            .map(|s| {
                (
                    s.label("check").unwrap_or("?"),
                    s.label("status").unwrap_or("?"),
                )
            })
            .collect();
        assert_eq!(
            set,
            [
                ("noatime", "pass"),
                ("logrotate", "warn"),
                ("free_space", "fail"),
                ("flash_wear", "skip")
            ]
        );
        // Four series per check, exactly one of them 1.
        assert_eq!(checks.len(), 16);
        assert_eq!(checks.iter().filter(|s| s.value == 0.0).count(), 12);
        let counts = &out.get("rpi_doctor_checks").expect("counts").samples;
        assert!(counts.iter().all(|s| s.value == 1.0));
        assert_eq!(counts[3].labels[0].1, "skip");
    }

    #[test]
    fn verdicts_older_than_two_intervals_fail_the_collector_but_stay() {
        let run = LastRun {
            at_unix_seconds: 1_700_000_000.0,
            at: Instant::now(),
            findings: Vec::new(),
        };
        let interval = Duration::from_secs(600);
        let mut out = MetricSet::new();
        render(&run, Duration::from_secs(1100), interval, &mut out).expect("fresh enough");
        let mut out = MetricSet::new();
        let err = render(&run, Duration::from_secs(1300), interval, &mut out).expect_err("stale");
        assert!(err.to_string().contains("1300s ago"), "{err}");
        assert!(out.get("rpi_doctor_last_run_timestamp_seconds").is_some());
    }

    #[test]
    fn interval_is_at_least_a_minute() {
        assert_eq!(parse_interval("10m"), Ok(DEFAULT_INTERVAL));
        assert!(parse_interval("30s").is_err());
        assert!(parse_interval("soon").is_err());
    }
}
