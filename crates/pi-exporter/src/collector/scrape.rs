//! Running the collectors for one scrape.
//!
//! Collectors whose source can wait (a device behind the firmware or I2C, a network mount: see
//! [`Collector::may_block`]) are queued and handed to one worker on the blocking pool, which
//! runs them one after another: one thread hand-off per scrape instead of one per collector. If
//! the worker stalls in a collector (a hung mount, a wedged bus), a further worker takes over
//! the rest of the queue, so a stuck source costs only its own collector. Every queued collector
//! is bounded by the scrape's deadline; one still stuck from an earlier scrape is not started
//! again until its call returns, so hung sources never pile up threads.
//!
//! Collectors whose next run only reads what the kernel holds in memory (`may_block() ==
//! false`) run on the serving thread while the worker runs the others: waking a parked thread
//! costs more than their whole work (on a VM, milliseconds at the 99th percentile). Such a run
//! takes the collector's run lock without waiting and asks `may_block` again under it; if the
//! lock is taken (a pool run of the same collector, from a concurrent scrape) or the answer
//! changed, the collector joins the queue instead. Under the lock only the collector's own runs
//! change what `may_block` answers, so the run starts in the state that answer described; each
//! collector makes such a run skip what appeared since (see `filesystem`, `rtc`) rather than
//! wait on it. Runs of one collector never overlap (two Prometheus servers scraping at once
//! take turns).

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Collector;
use crate::metrics::MetricSet;

/// How long a worker may stay in one collector before another worker takes over the queue.
const STALL: Duration = Duration::from_millis(25);

struct Slot {
    name: &'static str,
    collector: Arc<dyn Collector>,
    /// Held for the whole run, so runs of this collector never overlap.
    run_lock: Mutex<()>,
    state: Mutex<RunState>,
    /// Whether the previous run succeeded, so failures are logged once per change.
    last_ok: AtomicBool,
}

/// Whether a collector is running, and whether a scrape gave up waiting for that run.
#[derive(Default)]
struct RunState {
    since: Option<Instant>,
    /// A scrape's deadline passed while this run was still going: it is stuck in its source.
    /// Set and cleared under the same lock as `since`, so a run that ends just as the scrape
    /// gives up is never marked stuck.
    abandoned: bool,
}

/// What one collector produced in one scrape.
struct Outcome {
    ok: bool,
    duration: Duration,
    metrics: Option<MetricSet>,
}

/// The shared state of one scrape, between the async side and its workers.
struct Run {
    slots: Arc<[Slot]>,
    queue: Mutex<VecDeque<usize>>,
    outcomes: Mutex<Vec<Option<Outcome>>>,
    /// Collectors taken from the queue and finished.
    finished: AtomicUsize,
    /// Collectors still to finish; the worker that brings it to zero wakes the scrape.
    remaining: AtomicUsize,
    done: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Run {
    /// Takes collectors off the queue until it is empty.
    fn work(&self) {
        loop {
            let Some(index) = lock(&self.queue).pop_front() else {
                return;
            };
            let outcome = self.slots[index].run();
            // Empty once the scrape has returned without this (late) result.
            if let Some(entry) = lock(&self.outcomes).get_mut(index) {
                *entry = Some(outcome);
            }
            self.finished.fetch_add(1, Ordering::AcqRel);
            if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.done.notify_one();
            }
        }
    }
}

impl Slot {
    fn run(&self) -> Outcome {
        let _turn = lock(&self.run_lock);
        self.run_locked()
    }

    /// Runs the collector here only if that cannot wait: its run lock is free (a pool run of it
    /// may still be in its source) and, checked again under that lock, it still may not block.
    /// `None`: queue it instead.
    fn run_inline(&self) -> Option<Outcome> {
        let _turn = match self.run_lock.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        if self.collector.may_block() {
            return None;
        }
        Some(self.run_locked())
    }

    /// The run itself; the caller holds `run_lock`.
    fn run_locked(&self) -> Outcome {
        let started = Instant::now();
        lock(&self.state).since = Some(started);
        let mut metrics = MetricSet::new();
        let result = catch_unwind(AssertUnwindSafe(|| self.collector.collect(&mut metrics)));
        *lock(&self.state) = RunState::default();
        let ok = match result {
            Ok(Ok(())) => {
                self.note(true, "");
                true
            }
            Ok(Err(e)) => {
                self.note(false, &e.to_string());
                false
            }
            Err(_) => {
                // A bug, not bad input: contained here and reported as a failure.
                self.note(false, "collector panicked");
                metrics = MetricSet::new();
                false
            }
        };
        Outcome {
            ok,
            duration: started.elapsed(),
            metrics: Some(metrics),
        }
    }

    fn is_stuck(&self) -> bool {
        lock(&self.state).abandoned
    }

    /// Called when a scrape ends without this collector's result; returns how long it has run.
    fn give_up(&self) -> Duration {
        let mut state = lock(&self.state);
        match state.since {
            Some(since) => {
                state.abandoned = true;
                since.elapsed()
            }
            None => Duration::ZERO,
        }
    }

    fn note(&self, ok: bool, reason: &str) {
        let was_ok = self.last_ok.swap(ok, Ordering::AcqRel);
        match (was_ok, ok) {
            (true, false) => tracing::warn!(collector = self.name, "collector failed: {reason}"),
            (false, false) => {
                tracing::debug!(collector = self.name, "collector still failing: {reason}")
            }
            (false, true) => tracing::info!(collector = self.name, "collector recovered"),
            (true, true) => {}
        }
    }
}

/// At most this many characters of family names in a start-up inventory line.
const INVENTORY_NAMES_WIDTH: usize = 100;

/// `12 series: rpi_load1 rpi_load5 … and 3 more`: the count and as many family names as fit
/// in [`INVENTORY_NAMES_WIDTH`].
fn inventory_summary(families: &[(&str, usize)]) -> String {
    let series: usize = families.iter().map(|(_, n)| n).sum();
    let mut names = String::new();
    let mut shown = 0;
    for (family, _) in families {
        if shown > 0 && names.len() + 1 + family.len() > INVENTORY_NAMES_WIDTH {
            break;
        }
        if shown > 0 {
            names.push(' ');
        }
        names.push_str(family);
        shown += 1;
    }
    match families.len() - shown {
        0 => format!("{series} series: {names}"),
        more => format!("{series} series: {names} and {more} more"),
    }
}

/// Runs the enabled collectors for each scrape.
pub struct Scraper {
    slots: Arc<[Slot]>,
    timeout: Duration,
}

impl fmt::Debug for Scraper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.slots.iter().map(|s| s.name).collect();
        f.debug_struct("Scraper")
            .field("collectors", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Scraper {
    /// `timeout` bounds every collector of a scrape.
    pub fn new(collectors: Vec<(&'static str, Arc<dyn Collector>)>, timeout: Duration) -> Self {
        let slots = collectors
            .into_iter()
            .map(|(name, collector)| Slot {
                name,
                collector,
                run_lock: Mutex::new(()),
                state: Mutex::new(RunState::default()),
                last_ok: AtomicBool::new(true),
            })
            .collect();
        Self { slots, timeout }
    }

    /// Names of the collectors this scraper runs.
    pub fn collector_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.slots.iter().map(|s| s.name)
    }

    /// Runs every collector and returns their metrics followed by the exporter's own.
    /// `deadline` (for example from Prometheus' scrape-timeout header) shortens the timeout.
    pub async fn scrape(&self, deadline: Option<Duration>) -> MetricSet {
        assemble(self.run(deadline).await)
    }

    /// Runs every collector once and logs what each found, so the start-up log says which
    /// sources this machine has (and which it lacks) without repeating it on every scrape. One
    /// short line per collector; `--log.level=debug` adds every family's name.
    pub async fn log_inventory(&self) {
        for (name, outcome) in self.run(None).await {
            let families: Vec<(&str, usize)> = outcome
                .metrics
                .iter()
                .flat_map(MetricSet::families)
                .filter(|f| !f.samples.is_empty())
                .map(|f| (f.name, f.samples.len()))
                .collect();
            if families.is_empty() {
                // A failed run logged why already; nothing more to say.
                if outcome.ok {
                    tracing::info!(collector = name, "found nothing to report");
                }
                continue;
            }
            tracing::info!(
                collector = name,
                "found {}{}",
                inventory_summary(&families),
                if outcome.ok {
                    ""
                } else {
                    ", the rest missing (see above)"
                }
            );
            tracing::debug!(
                collector = name,
                "found {}",
                families
                    .iter()
                    .map(|(family, series)| format!("{family}({series})"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }

    /// Runs every collector under the deadline; the outcomes are in collector order.
    async fn run(&self, deadline: Option<Duration>) -> Vec<(&'static str, Outcome)> {
        let timeout = deadline.map_or(self.timeout, |d| d.min(self.timeout));
        let until = tokio::time::Instant::now() + timeout;

        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(self.slots.len());
        let mut queue = VecDeque::with_capacity(self.slots.len());
        let mut inline = Vec::with_capacity(self.slots.len());
        for (index, slot) in self.slots.iter().enumerate() {
            if slot.is_stuck() {
                slot.note(
                    false,
                    "previous run is still stuck in its source; not started",
                );
                outcomes.push(Some(Outcome {
                    ok: false,
                    duration: Duration::ZERO,
                    metrics: None,
                }));
            } else {
                outcomes.push(None);
                if slot.collector.may_block() {
                    queue.push_back(index);
                } else {
                    inline.push(index);
                }
            }
        }
        let run = Arc::new(Run {
            slots: Arc::clone(&self.slots),
            remaining: AtomicUsize::new(queue.len()),
            queue: Mutex::new(queue),
            outcomes: Mutex::new(outcomes),
            finished: AtomicUsize::new(0),
            done: Notify::new(),
        });

        let mut workers = 0;
        if run.remaining.load(Ordering::Acquire) > 0 {
            spawn_worker(&run);
            workers += 1;
        }
        // Meanwhile, the collectors that cannot hang run here; those that could by now (busy
        // in a pool run, or their state changed) join the queue.
        let mut deferred = Vec::new();
        for index in inline {
            match self.slots[index].run_inline() {
                Some(outcome) => lock(&run.outcomes)[index] = Some(outcome),
                None => deferred.push(index),
            }
        }
        if !deferred.is_empty() {
            run.remaining.fetch_add(deferred.len(), Ordering::AcqRel);
            lock(&run.queue).extend(deferred);
            // The first worker may have emptied the queue and left already.
            spawn_worker(&run);
            workers += 1;
        }
        if workers > 0 {
            let mut seen_finished = 0;
            loop {
                tokio::select! {
                    // A wake-up from before the deferred ones were queued is not the end.
                    () = run.done.notified() => if run.remaining.load(Ordering::Acquire) == 0 { break },
                    () = tokio::time::sleep_until(until) => break,
                    () = tokio::time::sleep(STALL) => {
                        let finished = run.finished.load(Ordering::Acquire);
                        // No progress and work left: the worker is stuck or starved; add one,
                        // at most one per collector.
                        if finished == seen_finished && !lock(&run.queue).is_empty() && workers < self.slots.len() {
                            spawn_worker(&run);
                            workers += 1;
                        }
                        seen_finished = finished;
                    }
                }
            }
            // Collectors not started by the deadline are not started late.
            lock(&run.queue).clear();
        }

        let outcomes = std::mem::take(&mut *lock(&run.outcomes));
        let mut report = Vec::with_capacity(outcomes.len());
        for (slot, outcome) in self.slots.iter().zip(outcomes) {
            let outcome = outcome.unwrap_or_else(|| {
                slot.note(false, &format!("did not finish within {timeout:?}"));
                Outcome {
                    ok: false,
                    duration: slot.give_up(),
                    metrics: None,
                }
            });
            report.push((slot.name, outcome));
        }
        report
    }
}

fn spawn_worker(run: &Arc<Run>) {
    let run = Arc::clone(run);
    // The handle is not awaited: the scrape waits on `done` or its deadline, never on a thread.
    drop(tokio::task::spawn_blocking(move || run.work()));
}

fn assemble(outcomes: Vec<(&'static str, Outcome)>) -> MetricSet {
    let mut out = MetricSet::new();
    let mut status = MetricSet::new();
    for (name, outcome) in outcomes {
        status
            .gauge(
                "rpi_exporter_collector_success",
                "Whether the collector read its source completely in this scrape (1) or not (0)",
            )
            .sample([("collector", name)], if outcome.ok { 1.0 } else { 0.0 });
        status
            .gauge(
                "rpi_exporter_collector_duration_seconds",
                "How long the collector took in this scrape",
            )
            .sample([("collector", name)], outcome.duration.as_secs_f64());
        if let Some(metrics) = outcome.metrics {
            out.append(metrics);
        }
    }
    out.append(status);
    out.gauge(
        "rpi_exporter_build_info",
        "A metric with a constant value 1 labelled with the exporter's version, revision and compiler",
    )
    .sample(
        [
            ("version", env!("CARGO_PKG_VERSION")),
            ("revision", serving::build::REVISION),
            ("rustc", serving::build::RUSTC),
        ],
        1.0,
    );
    append_process(&mut out);
    out
}

/// The exporter's own CPU, memory and descriptors, named as every Prometheus client names them.
/// Read from the exporter's `/proc/self`, not `--path.procfs`: they describe this process, not
/// the Pi.
fn append_process(out: &mut MetricSet) {
    use serving::process::{Kind, Process};
    for metric in Process::read().metrics() {
        match metric.kind {
            Kind::Counter => out.counter(metric.name, metric.help),
            Kind::Gauge => out.gauge(metric.name, metric.help),
        }
        .sample([], metric.value);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_inventory_line_names_what_fits_and_counts_the_rest() {
        let families = [
            ("rpi_filesystem_readonly", 5),
            ("rpi_filesystem_device_error", 5),
            ("rpi_filesystem_size_bytes", 5),
            ("rpi_filesystem_free_bytes", 5),
            ("rpi_filesystem_avail_bytes", 5),
        ];
        assert_eq!(
            super::inventory_summary(&families),
            "25 series: rpi_filesystem_readonly rpi_filesystem_device_error \
             rpi_filesystem_size_bytes and 2 more"
        );
        assert_eq!(
            super::inventory_summary(&[("rpi_load1", 1)]),
            "1 series: rpi_load1"
        );
    }

    use super::*;
    use crate::collector::CollectError;
    use std::sync::mpsc;

    struct Fixed(f64);
    impl Collector for Fixed {
        fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
            out.gauge("rpi_test_value", "test").sample([], self.0);
            Ok(())
        }
    }

    struct Partial;
    impl Collector for Partial {
        fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
            out.gauge("rpi_partial_value", "test").sample([], 7.0);
            Err(CollectError::Other("second source broken".into()))
        }
    }

    /// Blocks until released, like a statvfs on a dead NFS server.
    struct Hung(Mutex<mpsc::Receiver<()>>);
    impl Collector for Hung {
        fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
            let _ = lock(&self.0).recv();
            out.gauge("rpi_hung_value", "test").sample([], 1.0);
            Ok(())
        }
    }

    struct Panics;
    impl Collector for Panics {
        fn collect(&self, _: &mut MetricSet) -> Result<(), CollectError> {
            panic!("bug in a collector");
        }
    }

    /// Sleeps, to make two concurrent scrapes overlap.
    struct Slow;
    impl Collector for Slow {
        fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
            std::thread::sleep(Duration::from_millis(40));
            out.gauge("rpi_slow_value", "test").sample([], 1.0);
            Ok(())
        }
    }

    /// Cannot block: records the thread it ran on.
    struct Inline(Mutex<Option<std::thread::ThreadId>>);
    impl Collector for Inline {
        fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
            *lock(&self.0) = Some(std::thread::current().id());
            out.gauge("rpi_inline_value", "test").sample([], 2.0);
            Ok(())
        }

        fn may_block(&self) -> bool {
            false
        }
    }

    fn value(set: &MetricSet, name: &str, collector: &str) -> Option<f64> {
        set.get(name)?
            .samples
            .iter()
            .find(|s| {
                s.labels
                    .iter()
                    .any(|(k, v)| *k == "collector" && v == collector)
            })
            .map(|s| s.value)
    }

    fn single(set: &MetricSet, name: &str) -> Option<f64> {
        set.get(name)
            .and_then(|f| f.samples.first())
            .map(|s| s.value)
    }

    #[tokio::test]
    async fn a_scrape_ends_with_build_info_and_the_process_metrics() {
        let scraper = Scraper::new(
            vec![("fixed", Arc::new(Fixed(3.0)))],
            Duration::from_secs(2),
        );
        let set = scraper.scrape(None).await;
        let names: Vec<_> = set.families().iter().map(|f| f.name).collect();
        let build = names
            .iter()
            .position(|n| *n == "rpi_exporter_build_info")
            .expect("build info");
        let process = serving::process::DESCRIPTORS.map(|d| d.name);
        assert_eq!(names[build + 1..], process);
        let cpu = set.get("process_cpu_seconds_total").expect("cpu");
        assert_eq!(cpu.kind, crate::metrics::MetricKind::Counter);
        assert!(single(&set, "process_resident_memory_bytes") > Some(0.0));
    }

    #[tokio::test]
    async fn hung_collector_costs_only_itself_and_is_not_restarted_while_stuck() {
        let (release, rx) = mpsc::channel();
        // The hung collector comes first, so the collector after it needs the takeover worker.
        let scraper = Scraper::new(
            vec![
                ("hung", Arc::new(Hung(Mutex::new(rx)))),
                ("fixed", Arc::new(Fixed(3.0))),
            ],
            Duration::from_secs(2),
        );
        let first = scraper.scrape(None).await;
        assert_eq!(single(&first, "rpi_test_value"), Some(3.0));
        assert_eq!(
            value(&first, "rpi_exporter_collector_success", "fixed"),
            Some(1.0)
        );
        assert_eq!(
            value(&first, "rpi_exporter_collector_success", "hung"),
            Some(0.0)
        );
        assert!(first.get("rpi_hung_value").is_none());

        // Still stuck: the second scrape fails it at once instead of waiting or starting it.
        let started = Instant::now();
        let second = scraper.scrape(None).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            value(&second, "rpi_exporter_collector_success", "hung"),
            Some(0.0)
        );
        assert_eq!(
            value(&second, "rpi_exporter_collector_duration_seconds", "hung"),
            Some(0.0)
        );
        assert_eq!(
            value(&second, "rpi_exporter_collector_success", "fixed"),
            Some(1.0)
        );

        // Unstick it; the next scrape runs it again and succeeds (one more message unblocks it).
        release.send(()).expect("send");
        release.send(()).expect("send");
        let mut recovered = false;
        for _ in 0..50 {
            let scrape = scraper.scrape(None).await;
            if value(&scrape, "rpi_exporter_collector_success", "hung") == Some(1.0) {
                recovered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(recovered, "hung collector never recovered");
    }

    #[tokio::test]
    async fn collectors_that_cannot_block_run_on_the_serving_thread_beside_a_hung_one() {
        let (_release, rx) = mpsc::channel::<()>();
        let inline = Arc::new(Inline(Mutex::new(None)));
        let scraper = Scraper::new(
            vec![
                ("hung", Arc::new(Hung(Mutex::new(rx)))),
                ("inline", Arc::clone(&inline) as Arc<dyn Collector>),
            ],
            Duration::from_millis(200),
        );
        let set = scraper.scrape(None).await;
        assert_eq!(*lock(&inline.0), Some(std::thread::current().id()));
        assert_eq!(single(&set, "rpi_inline_value"), Some(2.0));
        assert_eq!(
            value(&set, "rpi_exporter_collector_success", "inline"),
            Some(1.0)
        );
        assert_eq!(
            value(&set, "rpi_exporter_collector_success", "hung"),
            Some(0.0)
        );
    }

    #[tokio::test]
    async fn partial_results_are_kept_and_panics_are_contained() {
        let scraper = Scraper::new(
            vec![
                ("partial", Arc::new(Partial)),
                ("panics", Arc::new(Panics)),
                ("fixed", Arc::new(Fixed(1.0))),
            ],
            Duration::from_secs(5),
        );
        let set = scraper.scrape(None).await;
        assert_eq!(single(&set, "rpi_partial_value"), Some(7.0));
        assert_eq!(
            value(&set, "rpi_exporter_collector_success", "partial"),
            Some(0.0)
        );
        assert_eq!(
            value(&set, "rpi_exporter_collector_success", "panics"),
            Some(0.0)
        );
        assert_eq!(
            value(&set, "rpi_exporter_collector_success", "fixed"),
            Some(1.0)
        );
        assert!(set.get("rpi_exporter_build_info").is_some());
    }

    #[tokio::test]
    async fn concurrent_scrapes_take_turns_and_both_succeed() {
        let scraper = Arc::new(Scraper::new(
            vec![("slow", Arc::new(Slow))],
            Duration::from_secs(5),
        ));
        let (a, b) = tokio::join!(scraper.scrape(None), scraper.scrape(None));
        for set in [a, b] {
            assert_eq!(
                value(&set, "rpi_exporter_collector_success", "slow"),
                Some(1.0)
            );
            assert_eq!(single(&set, "rpi_slow_value"), Some(1.0));
        }
    }

    /// Blocks at its first check and run (a slow device), not afterwards; records where it ran.
    #[derive(Default)]
    struct Settles {
        checks: AtomicUsize,
        started: AtomicBool,
        ran_on: Mutex<Vec<std::thread::ThreadId>>,
    }
    impl Collector for Settles {
        fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
            let first = {
                let mut ran_on = lock(&self.ran_on);
                ran_on.push(std::thread::current().id());
                ran_on.len() == 1
            };
            if first {
                self.started.store(true, Ordering::Release);
                // Long enough that the second scrape surely comes while this run holds the lock.
                std::thread::sleep(Duration::from_secs(1));
            }
            out.gauge("rpi_settles_value", "test").sample([], 1.0);
            Ok(())
        }

        fn may_block(&self) -> bool {
            self.checks.fetch_add(1, Ordering::AcqRel) == 0
        }
    }

    #[tokio::test]
    async fn an_inline_run_never_waits_for_a_pool_run_of_the_same_collector() {
        let settles = Arc::new(Settles::default());
        let scraper = Scraper::new(
            vec![("settles", Arc::clone(&settles) as Arc<dyn Collector>)],
            Duration::from_secs(5),
        );
        let first = scraper.scrape(None);
        let second = async {
            // Once the pool run is in the collector, a scrape that sees may_block() == false.
            while !settles.started.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            scraper.scrape(None).await
        };
        let (a, b) = tokio::join!(first, second);
        for set in [a, b] {
            assert_eq!(
                value(&set, "rpi_exporter_collector_success", "settles"),
                Some(1.0)
            );
        }
        let ran_on = lock(&settles.ran_on).clone();
        assert_eq!(ran_on.len(), 2);
        assert!(
            !ran_on.contains(&std::thread::current().id()),
            "the serving thread waited for the run lock and ran the collector itself"
        );
    }

    #[tokio::test]
    async fn the_scrape_deadline_shortens_the_timeout() {
        let (_release, rx) = mpsc::channel::<()>();
        let scraper = Scraper::new(
            vec![("hung", Arc::new(Hung(Mutex::new(rx))))],
            Duration::from_secs(60),
        );
        let started = Instant::now();
        let set = scraper.scrape(Some(Duration::from_millis(100))).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            value(&set, "rpi_exporter_collector_success", "hung"),
            Some(0.0)
        );
    }
}
